//! FP32 engine speed with divan: the convolution kernels on typical shapes (3×3, SqueezeNet's expand,
//! 1×1, depthwise, strided depthwise, the 7×7/2 stem) and a whole-model forward of each fixture at
//! batch 8, on the current rayon pool. Run with `RAYON_NUM_THREADS=2 cargo bench --bench engine`;
//! for side-by-side ratios against OpenCV, `bash ../shared/checks/speed_fp32.sh`.

use std::path::{Path, PathBuf};

use divan::Bencher;
use int8cal::data::shapes::data_tops;
use int8cal::engine::feed::ArrayFeed;
use int8cal::engine::ops::conv::{Filter, Geometry, SumOrder, convolution, pack_weights};
use int8cal::engine::session::NoObserver;
use int8cal::engine::{Plan, Session};
use int8cal::model::{LayerKind, Model};
use ndarray::{ArrayD, IxDyn};

fn main() {
    divan::main();
}

/// A convolution case: input N×C×H×W, output channels, kernel, stride, pad, group.
struct ConvCase {
    input: [usize; 4],
    outputs: usize,
    geometry: Geometry,
}

fn case(name: &str) -> ConvCase {
    let g = |k: usize, s: usize, p: usize, group: usize| Geometry {
        kernel: [k, k],
        stride: [s, s],
        pad: [p, p],
        dilation: [1, 1],
        group,
    };
    let (input, outputs, geometry) = match name {
        "3x3 64->64 56x56" => ([8, 64, 56, 56], 64, g(3, 1, 1, 1)),
        "3x3 32->128 55x55" => ([8, 32, 55, 55], 128, g(3, 1, 1, 1)),
        "1x1 64->256 56x56" => ([8, 64, 56, 56], 256, g(1, 1, 0, 1)),
        "depthwise 3x3 128 32x32" => ([8, 128, 32, 32], 128, g(3, 1, 1, 128)),
        "depthwise 3x3/2 64 32x32" => ([8, 64, 32, 32], 64, g(3, 2, 1, 64)),
        _ => ([8, 3, 227, 227], 96, g(7, 2, 0, 1)),
    };
    ConvCase {
        input,
        outputs,
        geometry,
    }
}

const CONVS: [&str; 6] = [
    "3x3 64->64 56x56",
    "3x3 32->128 55x55",
    "1x1 64->256 56x56",
    "depthwise 3x3 128 32x32",
    "depthwise 3x3/2 64 32x32",
    "7x7/2 3->96 227x227",
];

/// One convolution at batch 8; the counter reports multiply-adds per second.
#[divan::bench(args = CONVS, sample_count = 20)]
fn conv(bencher: Bencher, name: &str) {
    let ConvCase {
        input: [n, c, h, w],
        outputs: m,
        geometry: g,
    } = case(name);
    let k = c / g.group * g.kernel[0] * g.kernel[1];
    let x: Vec<f32> = (0..n * c * h * w)
        .map(|i| (i % 251) as f32 * 0.01)
        .collect();
    let wt: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let oh = (h + 2 * g.pad[0] - g.kernel[0]) / g.stride[0] + 1;
    let ow = (w + 2 * g.pad[1] - g.kernel[1]) / g.stride[1] + 1;
    let mut out = vec![0.0f32; n * m * oh * ow];
    let packed = pack_weights(&wt, None, &g, (m, c), SumOrder::Caffe);
    let filter = Filter {
        weights: &wt,
        packed: &packed,
        bias: None,
        outputs: m,
        order: SumOrder::Caffe,
    };
    bencher
        .counter(divan::counter::ItemsCount::new(n * m * oh * ow * k))
        .bench_local(|| convolution(&x, [n, c, h, w], &filter, &g, &[], &mut out));
}

/// The fixtures with a deploy net the engine runs (none when ../shared/fixtures is absent; detection
/// nets join when the engine has DetectionOutput).
fn fixtures() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    let runs = |deploy: PathBuf| {
        std::fs::read_to_string(deploy).is_ok_and(|t| !t.contains("\"DetectionOutput\""))
    };
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .map(|r| {
            r.flatten()
                .filter(|e| runs(e.path().join("deploy.prototxt")))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A whole forward pass of a fixture's deploy net at batch 8 (inputs 0.5).
#[divan::bench(args = fixtures(), sample_count = 10)]
fn forward(bencher: Bencher, name: &str) {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(name);
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
            let zeros = ArrayD::from_elem(IxDyn(&plan.shapes[t]), 0.5);
            feed.arrays.insert(t, zeros);
        }
    }
    let mut session = Session::new(&plan);
    bencher.bench_local(|| session.forward(&mut feed, &mut NoObserver));
}
