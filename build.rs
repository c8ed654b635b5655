//! Compiles `proto/caffe.proto` into prost types (`$OUT_DIR/caffe.rs`) and a descriptor set
//! (`$OUT_DIR/caffe_fds.bin`) that the prototxt reader uses to resolve field names. Pure Rust (protox):
//! no `protoc` is needed on any machine.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/caffe.proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(["caffe.proto"], ["proto"])?;
    std::fs::write(
        out.join("caffe_fds.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
