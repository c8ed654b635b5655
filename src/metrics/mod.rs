//! Metrics computed from a net's outputs, independent of how the net ran: detection average
//! precision per class and mAP as SSD Caffe's `caffe test` computes them (`ap`).

pub mod ap;
