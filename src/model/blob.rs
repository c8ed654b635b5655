//! Weight blobs: a `BlobProto` as an `ndarray` array with its shape, whether the file gave the shape as
//! `shape` or as the legacy num/channels/height/width, in `data` or `double_data`.

use ndarray::{ArrayD, IxDyn};

use crate::caffe::BlobProto;

/// A weight blob of a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Blob {
    pub data: ArrayD<f32>,
    /// True when the file gave the legacy 4-D num/channels/height/width instead of `shape`.
    pub legacy_shape: bool,
}

impl Blob {
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// (min, max, mean) of the values; zeros for an empty blob.
    pub fn stats(&self) -> (f32, f32, f32) {
        let n = self.data.len();
        if n == 0 {
            return (0.0, 0.0, 0.0);
        }
        let (mut lo, mut hi, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0f64);
        for &v in &self.data {
            lo = lo.min(v);
            hi = hi.max(v);
            sum += f64::from(v);
        }
        (lo, hi, (sum / n as f64) as f32)
    }
}

/// The shape a `BlobProto` declares, and whether it was the legacy 4-D form.
pub fn declared_shape(p: &BlobProto) -> Result<(Vec<usize>, bool), String> {
    let (dims, legacy): (Vec<i64>, bool) = match &p.shape {
        Some(s) => (s.dim.clone(), false),
        None => {
            let d = [p.num(), p.channels(), p.height(), p.width()];
            (d.iter().map(|&x| i64::from(x)).collect(), true)
        }
    };
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d} in {dims:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((shape, legacy))
}

/// Converts a `BlobProto` (taking its data without copying when it is `float`).
pub fn from_proto(mut p: BlobProto) -> Result<Blob, String> {
    let (shape, legacy) = declared_shape(&p)?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("dimension product overflows")?;
    let data = if !p.data.is_empty() || p.double_data.is_empty() {
        std::mem::take(&mut p.data)
    } else {
        p.double_data.iter().map(|&v| v as f32).collect()
    };
    if data.len() != count {
        return Err(format!(
            "blob of shape {shape:?} holds {} values, expected {count}",
            data.len()
        ));
    }
    let data = ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| e.to_string())?;
    Ok(Blob {
        data,
        legacy_shape: legacy,
    })
}

/// Caffe's shape check: equal shapes, or a legacy 4-D blob equal to the expected shape padded on the left
/// with ones (a V1 InnerProduct weight `1×1×N×K` fits `[N, K]`).
pub fn shape_fits(blob: &Blob, expected: &[usize]) -> bool {
    if blob.shape() == expected {
        return true;
    }
    if !blob.legacy_shape || expected.len() > 4 {
        return false;
    }
    let mut padded = vec![1usize; 4 - expected.len()];
    padded.extend_from_slice(expected);
    blob.shape() == padded.as_slice()
}

/// The blob reshaped to the expected shape (same element count), for legacy blobs that fit.
pub fn reshaped(blob: Blob, expected: &[usize]) -> Result<Blob, String> {
    if blob.shape() == expected {
        return Ok(blob);
    }
    let data = blob
        .data
        .into_shape_with_order(IxDyn(expected))
        .map_err(|e| e.to_string())?;
    Ok(Blob {
        data,
        legacy_shape: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caffe::BlobShape;

    #[test]
    fn legacy_and_double_data() {
        let p = BlobProto {
            num: Some(1),
            channels: Some(1),
            height: Some(2),
            width: Some(3),
            double_data: vec![1.0; 6],
            ..Default::default()
        };
        let b = from_proto(p).unwrap();
        assert_eq!(b.shape(), &[1, 1, 2, 3]);
        assert!(shape_fits(&b, &[2, 3]));
        assert!(!shape_fits(&b, &[3, 2]));
        assert_eq!(reshaped(b, &[2, 3]).unwrap().shape(), &[2, 3]);
    }

    #[test]
    fn count_mismatch_and_negative_dims() {
        let p = BlobProto {
            shape: Some(BlobShape { dim: vec![2, 2] }),
            data: vec![0.0; 3],
            ..Default::default()
        };
        assert!(from_proto(p).unwrap_err().contains("holds 3 values"));
        let p = BlobProto {
            shape: Some(BlobShape { dim: vec![-2] }),
            ..Default::default()
        };
        assert!(from_proto(p).is_err());
    }
}
