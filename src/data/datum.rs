//! Decoding a `Datum` record to an image in Caffe's layout (channels × height × width, BGR for colour):
//! raw bytes or `float_data` as stored, or an encoded JPEG/PNG decoded as OpenCV does (`pixels`).

use ndarray::Array3;

use super::pixels::{ColorMode, Pixels};
use crate::caffe::Datum;

/// The pixels of a datum as f32 in C×H×W order.
pub fn decode(datum: &Datum, mode: ColorMode) -> Result<Array3<f32>, String> {
    if datum.encoded() {
        return Pixels::decode(datum.data(), mode).map(|p| p.to_chw());
    }
    let dims = [datum.channels(), datum.height(), datum.width()];
    if dims.iter().any(|&d| d <= 0) {
        return Err(format!("raw datum has channels/height/width {dims:?}"));
    }
    let [c, h, w] = dims.map(|d| d as usize);
    let n = c * h * w;
    let values: Vec<f32> = if !datum.data().is_empty() {
        if datum.data().len() != n {
            return Err(format!(
                "raw datum holds {} bytes for {c}×{h}×{w}",
                datum.data().len()
            ));
        }
        datum.data().iter().map(|&b| f32::from(b)).collect()
    } else {
        if datum.float_data.len() != n {
            return Err(format!(
                "raw datum holds {} floats for {c}×{h}×{w}",
                datum.float_data.len()
            ));
        }
        datum.float_data.clone()
    };
    Array3::from_shape_vec((c, h, w), values).map_err(|e| e.to_string())
}
