//! The ops, one family per file: FP32, INT8 codes as bytes (`codes`) and the INT8 convolution
//! (`conv_int8`).

pub mod activation;
pub mod codes;
pub mod conv;
pub mod conv_int8;
pub mod detection;
pub mod detection_eval;
pub mod inner_product;
pub mod layout;
pub mod max_pool;
pub mod norm;
pub mod phases;
pub mod pool;
pub mod post;
pub mod prior_box;
pub mod softmax;
pub mod tensor;
