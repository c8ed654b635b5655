//! Caffemodel decoding speed: a generated 180 MB caffemodel (VGG-like layer sizes) read from disk and
//! decoded into bound-ready blobs, best of five. Run with `cargo bench --bench load`.

use std::time::Instant;

use int8cal::caffe::{BlobProto, BlobShape, LayerParameter, NetParameter};
use int8cal::model::caffemodel;
use prost::Message;

fn blob(dims: &[i64]) -> BlobProto {
    let n: i64 = dims.iter().product();
    BlobProto {
        shape: Some(BlobShape { dim: dims.to_vec() }),
        data: (0..n).map(|i| (i as f32 * 0.001).sin()).collect(),
        ..Default::default()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 12 x [512, 512, 3, 3] + 2 x [4096, 2048] + biases: about 45 M floats, 180 MB.
    let mut layers = Vec::new();
    for i in 0..12 {
        layers.push(LayerParameter {
            name: Some(format!("conv{i}")),
            r#type: Some("Convolution".into()),
            blobs: vec![blob(&[512, 512, 3, 3]), blob(&[512])],
            ..Default::default()
        });
    }
    for i in 0..2 {
        layers.push(LayerParameter {
            name: Some(format!("fc{i}")),
            r#type: Some("InnerProduct".into()),
            blobs: vec![blob(&[4096, 2048]), blob(&[4096])],
            ..Default::default()
        });
    }
    let bytes = NetParameter {
        name: Some("bench".into()),
        layer: layers,
        ..Default::default()
    }
    .encode_to_vec();
    let dir = std::env::temp_dir().join(format!("int8cal-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("big.caffemodel");
    std::fs::write(&path, &bytes)?;
    let mb = bytes.len() as f64 / 1e6;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let w = caffemodel::read(&path)?;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(w.layers.len(), 14);
        best = best.min(secs);
    }
    std::fs::remove_dir_all(&dir)?;
    println!(
        "caffemodel read+decode: {mb:.1} MB in {:.3} s (best of 5) = {:.0} MB/s",
        best,
        mb / best
    );
    Ok(())
}
