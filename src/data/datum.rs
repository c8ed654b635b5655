//! Decoding a `Datum` record to an image in Caffe's layout (channels × height × width, BGR for colour):
//! raw bytes or `float_data` as stored, or an encoded JPEG/PNG decoded by libjpeg-turbo, which gives the
//! same pixels as OpenCV's decoder (the one Caffe and the references used).

use ndarray::Array3;

use crate::caffe::Datum;

/// Colour handling of encoded images (`force_color` / `force_gray` of the transform).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMode {
    /// As stored: grey JPEGs stay one channel, colour ones are BGR.
    Native,
    Color,
    Gray,
}

/// The pixels of a datum as f32 in C×H×W order.
pub fn decode(datum: &Datum, mode: ColorMode) -> Result<Array3<f32>, String> {
    if datum.encoded() {
        return decode_image(datum.data(), mode);
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

/// Decodes JPEG (libjpeg-turbo) into C×H×W f32, BGR for colour.
pub fn decode_image(bytes: &[u8], mode: ColorMode) -> Result<Array3<f32>, String> {
    let (_, _, native_channels) = super::image::header_size(bytes)?;
    let gray = match mode {
        ColorMode::Gray => true,
        ColorMode::Color => false,
        ColorMode::Native => native_channels == 1,
    };
    if !bytes.starts_with(&[0xff, 0xd8]) {
        return Err("only JPEG-encoded records are supported".into());
    }
    let format = if gray {
        turbojpeg::PixelFormat::GRAY
    } else {
        turbojpeg::PixelFormat::BGR
    };
    let img: turbojpeg::Image<Vec<u8>> =
        turbojpeg::decompress(bytes, format).map_err(|e| format!("JPEG decoding failed: {e}"))?;
    let (h, w, c) = (img.height, img.width, if gray { 1 } else { 3 });
    let mut out = Array3::<f32>::zeros((c, h, w));
    for y in 0..h {
        let row = &img.pixels[y * img.pitch..y * img.pitch + w * c];
        for x in 0..w {
            for ch in 0..c {
                out[[ch, y, x]] = f32::from(row[x * c + ch]);
            }
        }
    }
    Ok(out)
}
