//! The FP32 inference engine: a `Plan` (the net's shapes for a batch and its weights prepared once) and a
//! `Session` (buffers reused across batches, one exhaustive match over layer kinds, an observer called on
//! every output value). Ops live one family per file in `ops/`; the GEMM in `gemm.rs`.

pub mod compile;
pub mod error;
pub mod feed;
pub mod gemm;
pub mod int8_plan;
pub mod ops;
pub mod plan;
pub mod precision;
pub mod quant;
pub mod session;
pub mod sqnr;

pub use error::EngineError;
pub use plan::Plan;
pub use session::{Feed, Observer, Session};
