//! The prost types generated from `proto/caffe.proto` by `build.rs`, and the descriptor pool that names
//! their fields for the text-format reader.

#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]

include!(concat!(env!("OUT_DIR"), "/caffe.rs"));

/// The serialized `FileDescriptorSet` of `caffe.proto`.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/caffe_fds.bin"));
