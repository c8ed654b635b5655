//! FP32 engine speed: the convolution kernels on typical shapes (3×3, 1×1, depthwise, 7×7/2 stem) and
//! a whole-model forward of each fixture at batch 8, on the current rayon pool (set RAYON_NUM_THREADS).
//! Run with `cargo bench --bench engine`; each line is the median of 20 runs after 3 warm-up runs.

use std::path::Path;
use std::time::Instant;

use int8cal::data::shapes::data_tops;
use int8cal::engine::feed::ArrayFeed;
use int8cal::engine::ops::conv::{Filter, Geometry, convolution, pack_weights};
use int8cal::engine::session::NoObserver;
use int8cal::engine::{Plan, Session};
use int8cal::model::{LayerKind, Model};
use ndarray::{ArrayD, IxDyn};

fn median_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut t: Vec<f64> = (0..20)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn conv_case(name: &str, [n, c, h, w]: [usize; 4], m: usize, g: Geometry) {
    let k = c / g.group * g.kernel[0] * g.kernel[1];
    let x: Vec<f32> = (0..n * c * h * w)
        .map(|i| (i % 251) as f32 * 0.01)
        .collect();
    let wt: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let oh = (h + 2 * g.pad[0] - g.kernel[0]) / g.stride[0] + 1;
    let ow = (w + 2 * g.pad[1] - g.kernel[1]) / g.stride[1] + 1;
    let mut out = vec![0.0f32; n * m * oh * ow];
    let packed = pack_weights(&wt, None, &g, m, c);
    let filter = Filter {
        weights: &wt,
        packed: &packed,
        bias: None,
        outputs: m,
    };
    let ms = median_ms(|| {
        let _ = convolution(&x, [n, c, h, w], &filter, &g, &[], &mut out);
    });
    let gflops = 2.0 * (n * m * oh * ow * k) as f64 / (ms * 1e6);
    println!("conv {name:<34} {ms:8.3} ms {gflops:7.1} GFLOP/s");
}

fn model_case(dir: &Path) {
    let Ok(model) = Model::load(
        &dir.join("deploy.prototxt"),
        Some(&dir.join("weights.caffemodel")),
        &data_tops,
    ) else {
        return;
    };
    let Ok(plan) = Plan::new(&model.net, Some(8)) else {
        return;
    };
    let mut feed = ArrayFeed::default();
    for l in model
        .net
        .layers
        .iter()
        .filter(|l| matches!(l.kind, LayerKind::Input { .. }))
    {
        for &t in &l.tops {
            feed.arrays
                .insert(t, ArrayD::from_elem(IxDyn(&plan.shapes[t]), 0.5));
        }
    }
    let mut session = Session::new(&plan);
    let ms = median_ms(|| {
        if let Err(e) = session.forward(&mut feed, &mut NoObserver) {
            eprintln!("{e}");
        }
    });
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("forward {name:<31} {ms:8.3} ms per batch of 8");
}

fn main() {
    let g = |k: usize, s: usize, p: usize, group: usize| Geometry {
        kernel: [k, k],
        stride: [s, s],
        pad: [p, p],
        dilation: [1, 1],
        group,
    };
    println!("threads: {}", rayon::current_num_threads());
    conv_case(
        "3x3 64->64 56x56 batch 8",
        [8, 64, 56, 56],
        64,
        g(3, 1, 1, 1),
    );
    conv_case(
        "3x3 32->128 55x55 batch 8",
        [8, 32, 55, 55],
        128,
        g(3, 1, 1, 1),
    );
    conv_case(
        "1x1 64->256 56x56 batch 8",
        [8, 64, 56, 56],
        256,
        g(1, 1, 0, 1),
    );
    conv_case(
        "depthwise 3x3 128 32x32 batch 8",
        [8, 128, 32, 32],
        128,
        g(3, 1, 1, 128),
    );
    conv_case(
        "7x7/2 3->96 227x227 batch 8",
        [8, 3, 227, 227],
        96,
        g(7, 2, 0, 1),
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    let mut dirs: Vec<_> = std::fs::read_dir(&fixtures)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    if dirs.is_empty() {
        println!("(../shared/fixtures is absent: no whole-model benchmarks)");
    }
    for d in dirs {
        model_case(&d);
    }
}
