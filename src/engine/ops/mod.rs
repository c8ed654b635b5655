//! FP32 ops, one family per file.

pub mod activation;
pub mod conv;
pub mod inner_product;
pub mod norm;
pub mod pool;
pub mod post;
pub mod prior_box;
pub mod softmax;
pub mod tensor;
