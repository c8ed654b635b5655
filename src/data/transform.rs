//! Caffe's TEST-phase `transform_param`: centre crop, then (pixel − mean) × scale, with the mean from a
//! `.binaryproto` mean file (cropped at the same offsets) or per-channel mean values (one value for all
//! channels). TEST never mirrors. Intel's `pad` (written by its calibrator's `-fu`, spec §4.6) is
//! applied as Intel Caffe applies it, border quirk included.

use std::path::Path;

use ndarray::{Array3, ArrayView3, s};
use prost::Message;

use super::pixels::ColorMode;
use crate::caffe::{BlobProto, TransformationParameter};

#[derive(Debug, Clone)]
pub enum Mean {
    None,
    Values(Vec<f32>),
    /// C×H×W, the size of the records.
    File(Array3<f32>),
}

/// A transform ready to apply.
#[derive(Debug, Clone)]
pub struct Transform {
    pub scale: f32,
    pub crop: Option<(usize, usize)>,
    /// Intel's `pad`: zero pixels around the crop, for images decoded through OpenCV only.
    pub pad: usize,
    pub mean: Mean,
    pub color: ColorMode,
}

impl Transform {
    /// Reads the parameters (and the mean file, resolved against `base`).
    pub fn new(p: &TransformationParameter, base: &Path) -> Result<Self, String> {
        let mean = if p.mean_file.is_some() {
            if !p.mean_value.is_empty() {
                return Err(
                    "both mean_file and mean_value are given; Caffe accepts only one".into(),
                );
            }
            let path = super::resolve(base, p.mean_file());
            Mean::File(read_mean_file(&path, base, p.mean_file())?)
        } else if !p.mean_value.is_empty() {
            Mean::Values(p.mean_value.clone())
        } else {
            Mean::None
        };
        let crop = match (p.crop_size(), p.crop_h(), p.crop_w()) {
            (c, _, _) if c > 0 => Some((c as usize, c as usize)),
            (_, h, w) if h > 0 && w > 0 => Some((h as usize, w as usize)),
            _ => None,
        };
        let color = match (p.force_color(), p.force_gray()) {
            (true, true) => return Err("force_color and force_gray are both set".into()),
            (true, false) => ColorMode::Color,
            (false, true) => ColorMode::Gray,
            _ => ColorMode::Native,
        };
        if p.pad() > 0 && matches!(mean, Mean::File(_)) {
            return Err("pad with a mean_file: Intel Caffe pads only with mean values".into());
        }
        Ok(Self {
            scale: p.scale(),
            crop,
            pad: p.pad() as usize,
            mean,
            color,
        })
    }

    /// Applies the transform to one image (C×H×W), writing into `out` (C×H'×W').
    /// `through_opencv`: the image was decoded (an encoded datum or an image file), so `pad` applies.
    pub fn apply(
        &self,
        img: ArrayView3<f32>,
        out: &mut ndarray::ArrayViewMut3<f32>,
        through_opencv: bool,
    ) -> Result<(), String> {
        if self.pad > 0 && through_opencv {
            return self.apply_padded(img, out);
        }
        let (c, h, w) = img.dim();
        let (oh, ow) = self.crop.unwrap_or((h, w));
        if oh > h || ow > w {
            return Err(format!("crop {oh}×{ow} is larger than the image {h}×{w}"));
        }
        if out.dim() != (c, oh, ow) {
            return Err(format!(
                "the image is {c}×{oh}×{ow} after cropping, the net expects {:?}",
                out.dim()
            ));
        }
        let (y0, x0) = ((h - oh) / 2, (w - ow) / 2);
        let view = img.slice(s![.., y0..y0 + oh, x0..x0 + ow]);
        match &self.mean {
            Mean::None => out.zip_mut_with(&view, |o, &v| *o = v * self.scale),
            Mean::Values(m) => {
                if m.len() != 1 && m.len() != c {
                    return Err(format!("{} mean values for {c} channels", m.len()));
                }
                for ch in 0..c {
                    let mv = if m.len() == 1 { m[0] } else { m[ch] };
                    out.slice_mut(s![ch, .., ..])
                        .zip_mut_with(&view.slice(s![ch, .., ..]), |o, &v| {
                            *o = (v - mv) * self.scale
                        });
                }
            }
            Mean::File(mean) => {
                if mean.dim() != (c, h, w) {
                    return Err(format!(
                        "the mean file is {:?}, the records are {c}×{h}×{w}",
                        mean.dim()
                    ));
                }
                let mv = mean.slice(s![.., y0..y0 + oh, x0..x0 + ow]);
                ndarray::Zip::from(out)
                    .and(&view)
                    .and(&mv)
                    .for_each(|o, &v, &m| *o = (v - m) * self.scale);
            }
        }
        Ok(())
    }
}

impl Transform {
    /// Intel's padded transform (§4.6): the crop surrounded by `pad` zero pixels; a border position
    /// stores 0, any other nearbyint((pixel − mean)·scale). Intel's border test is `y > H − pad`
    /// (H the padded height), so the first padded row and column past the crop are not border: they
    /// store the transformed 0 pixel.
    fn apply_padded(
        &self,
        img: ArrayView3<f32>,
        out: &mut ndarray::ArrayViewMut3<f32>,
    ) -> Result<(), String> {
        let (c, h, w) = img.dim();
        let (ch, cw) = self.crop.unwrap_or((h, w));
        if ch > h || cw > w {
            return Err(format!("crop {ch}×{cw} is larger than the image {h}×{w}"));
        }
        let p = self.pad;
        let (ph, pw) = (ch + 2 * p, cw + 2 * p);
        if out.dim() != (c, ph, pw) {
            return Err(format!(
                "the image is {c}×{ph}×{pw} after cropping and padding, the net expects {:?}",
                out.dim()
            ));
        }
        let means: Vec<f32> = match &self.mean {
            Mean::None => vec![0.0; c],
            Mean::Values(m) if m.len() == 1 => vec![m[0]; c],
            Mean::Values(m) if m.len() == c => m.clone(),
            Mean::Values(m) => return Err(format!("{} mean values for {c} channels", m.len())),
            Mean::File(_) => return Err("pad with a mean_file".into()),
        };
        let (y0, x0) = ((h - ch) / 2, (w - cw) / 2);
        let border = |y: usize, x: usize| y < p || x < p || y > ph - p || x > pw - p;
        for (k, &mean) in means.iter().enumerate() {
            for y in 0..ph {
                for x in 0..pw {
                    // The zero-padded crop's pixel.
                    let inside = (p..p + ch).contains(&y) && (p..p + cw).contains(&x);
                    let pixel = if inside {
                        img[[k, y0 + y - p, x0 + x - p]]
                    } else {
                        0.0
                    };
                    out[[k, y, x]] = if border(y, x) {
                        0.0
                    } else {
                        ((pixel - mean) * self.scale).round_ties_even()
                    };
                }
            }
        }
        Ok(())
    }
}

/// A mean `.binaryproto` (a BlobProto 1×C×H×W) as C×H×W.
fn read_mean_file(path: &Path, base: &Path, given: &str) -> Result<Array3<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "mean file '{given}': {e} (looked in {} and the working directory)",
            base.display()
        )
    })?;
    let blob = BlobProto::decode(bytes.as_slice())
        .map_err(|e| format!("{}: not a BlobProto: {e}", path.display()))?;
    let b = crate::model::blob::from_proto(blob).map_err(|e| format!("{}: {e}", path.display()))?;
    let shape = b.shape().to_vec();
    let chw = match shape.as_slice() {
        [1, c, h, w] | [c, h, w] => (*c, *h, *w),
        other => {
            return Err(format!(
                "{}: mean blob of shape {other:?}, expected 1×C×H×W",
                path.display()
            ));
        }
    };
    Array3::from_shape_vec(chw, b.data.into_raw_vec_and_offset().0).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, arr2};

    #[test]
    fn intel_pad_rounds_inside_and_misses_the_last_border_row_and_column() {
        let t = Transform {
            scale: 0.5,
            crop: None,
            pad: 1,
            mean: Mean::Values(vec![10.0]),
            color: ColorMode::Native,
        };
        let img = Array3::from_shape_vec((1, 2, 2), vec![20.0, 13.0, 11.0, 255.0]).unwrap();
        let mut out = Array3::<f32>::zeros((1, 4, 4));
        t.apply(img.view(), &mut out.view_mut(), true).unwrap();
        // (v − 10)·0.5 rounded half to even: 20 → 5, 13 → 2, 11 → 0, 255 → 122, a 0 pixel → −5.
        let want = arr2(&[
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 5.0, 2.0, -5.0],
            [0.0, 0.0, 122.0, -5.0],
            [0.0, -5.0, -5.0, -5.0],
        ]);
        assert_eq!(out.index_axis(ndarray::Axis(0), 0), want);
        // A raw datum ignores pad, and is not rounded.
        let mut raw = Array3::<f32>::zeros((1, 2, 2));
        t.apply(img.view(), &mut raw.view_mut(), false).unwrap();
        assert_eq!(raw.into_raw_vec_and_offset().0, [5.0, 1.5, 0.5, 122.5]);
    }
}
