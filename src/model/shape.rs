//! Shape inference for one layer from its bottoms' shapes, with Caffe's rules: convolution rounds down,
//! pooling rounds up and clips the last window to start inside the padded input, negative axes count from
//! the end, `Reshape` copies (0) and infers (-1) dimensions. Shapes that depend on the data (the tops of
//! DetectionOutput and DetectionEvaluate) get Caffe's initial shapes.

use super::layer::{Conv, LayerKind, Pool};

pub type Shape = Vec<usize>;

/// The largest element count Caffe accepts in one blob (`INT_MAX`).
pub const MAX_COUNT: usize = i32::MAX as usize;

/// Caffe's `CanonicalAxisIndex`: a negative axis counts from the end.
pub fn canonical_axis(axis: i32, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = i64::from(axis);
    if a < -r || a >= r {
        return Err(format!("axis {axis} is out of range for a {rank}-D blob"));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// Element count, refusing products that overflow or exceed `MAX_COUNT`.
pub fn count(shape: &[usize]) -> Result<usize, String> {
    let n = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match n {
        Some(n) if n <= MAX_COUNT => Ok(n),
        _ => Err(format!(
            "shape {shape:?} has more than {MAX_COUNT} elements (Caffe's limit for one blob)"
        )),
    }
}

/// A fixed shape from the file (Input, Parameter, DummyData): every dimension must be positive.
pub fn declared(dims: &[i64]) -> Result<Shape, String> {
    if dims.is_empty() {
        return Err("the shape has no dimensions".into());
    }
    let shape = dims
        .iter()
        .map(|&d| {
            if d > 0 {
                usize::try_from(d).map_err(|_| format!("dimension {d} is too large"))
            } else {
                Err(format!("dimension {d} in {dims:?} is not positive"))
            }
        })
        .collect::<Result<Shape, _>>()?;
    count(&shape)?;
    Ok(shape)
}

/// A checked product, so absurd parameters give an error instead of a wrapped size.
fn mul(dims: &[usize]) -> Result<usize, String> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("the size {dims:?} overflows"))
}

fn one<'a>(bottoms: &[&'a [usize]]) -> Result<&'a [usize], String> {
    bottoms
        .first()
        .copied()
        .ok_or_else(|| "needs a bottom".to_string())
}

fn need_bottoms(bottoms: &[&[usize]], n: usize) -> Result<(), String> {
    if bottoms.len() < n {
        return Err(format!("needs {n} bottoms, has {}", bottoms.len()));
    }
    Ok(())
}

/// Top shapes of a non-data layer. `n_tops` is the number of tops the layer declares.
pub fn infer(kind: &LayerKind, bottoms: &[&[usize]], n_tops: usize) -> Result<Vec<Shape>, String> {
    use LayerKind as K;
    let same = |b: &[usize]| vec![b.to_vec(); n_tops.max(1)];
    let shapes = match kind {
        K::Input { .. } | K::Data { .. } => {
            return Err("data layers are shaped by their source".into());
        }
        K::Convolution(c) => vec![conv_out(c, one(bottoms)?, false)?],
        K::Deconvolution(c) => vec![conv_out(c, one(bottoms)?, true)?],
        K::Im2col(c) => {
            let b = one(bottoms)?;
            let out = conv_out(
                &Conv {
                    num_output: 1,
                    group: 1,
                    ..c.clone()
                },
                b,
                false,
            )?;
            let k = mul(&c
                .kernel
                .resolve(b.len().saturating_sub(2), None, "kernel_size")?)?;
            let mut s = out;
            s[1] = mul(&[b[1], k])?;
            vec![s]
        }
        K::Pooling(p) => vec![pool_out(p, one(bottoms)?)?],
        K::Spp { pyramid_height, .. } => {
            let b = rank(one(bottoms)?, 4)?;
            if *pyramid_height > 16 {
                return Err(format!("pyramid_height {pyramid_height} is too large"));
            }
            let bins: usize = (0..*pyramid_height).map(|l| 1usize << (2 * l)).sum();
            vec![vec![b[0], mul(&[b[1], bins])?]]
        }
        K::InnerProduct(ip) => {
            let b = one(bottoms)?;
            let axis = canonical_axis(ip.axis, b.len())?;
            let mut s = b[..axis].to_vec();
            s.push(ip.num_output);
            vec![s]
        }
        K::Embed { num_output, .. } => {
            let mut s = one(bottoms)?.to_vec();
            s.push(*num_output);
            vec![s]
        }
        K::Lrn(_)
        | K::Activation(_)
        | K::PReLU { .. }
        | K::Identity(_)
        | K::BatchNorm(_)
        | K::Scale(_)
        | K::Bias(_) => same(one(bottoms)?),
        K::Mvn { .. } | K::Normalize { .. } | K::Softmax { .. } | K::Split | K::Filter => {
            same(one(bottoms)?)
        }
        K::Eltwise { .. } => {
            need_bottoms(bottoms, 2)?;
            if let Some(b) = bottoms.iter().find(|b| **b != bottoms[0]) {
                return Err(format!(
                    "bottoms differ in shape: {:?} and {b:?}",
                    bottoms[0]
                ));
            }
            vec![bottoms[0].to_vec()]
        }
        K::Concat { axis } => vec![concat(bottoms, *axis)?],
        K::Slice { axis, points } => slice(one(bottoms)?, *axis, points, n_tops)?,
        K::Flatten { axis, end_axis } => {
            let b = one(bottoms)?;
            let (s, e) = (
                canonical_axis(*axis, b.len())?,
                canonical_axis(*end_axis, b.len())?,
            );
            if e < s {
                return Err(format!("end_axis {end_axis} is before axis {axis}"));
            }
            let mut out = b[..s].to_vec();
            out.push(mul(&b[s..=e])?);
            out.extend_from_slice(&b[e + 1..]);
            vec![out]
        }
        K::Reshape {
            dims,
            axis,
            num_axes,
        } => vec![reshape(one(bottoms)?, dims, *axis, *num_axes)?],
        K::Crop { axis, offsets } => {
            need_bottoms(bottoms, 2)?;
            vec![crop(bottoms[0], bottoms[1], *axis, offsets)?]
        }
        K::Tile { axis, tiles } => {
            let mut s = one(bottoms)?.to_vec();
            let a = canonical_axis(*axis, s.len())?;
            if *tiles == 0 {
                return Err("tiles must be positive".into());
            }
            s[a] = mul(&[s[a], *tiles])?;
            vec![s]
        }
        K::Reduction { axis, .. } => {
            let b = one(bottoms)?;
            vec![b[..canonical_axis(*axis, b.len())?].to_vec()]
        }
        K::Permute { order } => vec![permute(one(bottoms)?, order)?],
        K::Reorg { stride, reverse } => {
            let b = rank(one(bottoms)?, 4)?;
            let s = *stride;
            if s == 0 {
                return Err("stride must be positive".into());
            }
            if *reverse {
                if s > 1 << 15 || b[1] % (s * s) != 0 {
                    return Err(format!(
                        "channels {} are not divisible by stride² = {}",
                        b[1],
                        s * s
                    ));
                }
                vec![vec![
                    b[0],
                    b[1] / (s * s),
                    mul(&[b[2], s])?,
                    mul(&[b[3], s])?,
                ]]
            } else {
                if b[2] % s != 0 || b[3] % s != 0 {
                    return Err(format!(
                        "spatial size {}x{} is not divisible by stride {s}",
                        b[2], b[3]
                    ));
                }
                vec![vec![b[0], mul(&[b[1], s, s])?, b[2] / s, b[3] / s]]
            }
        }
        K::Axpy => {
            need_bottoms(bottoms, 3)?;
            vec![bottoms[1].to_vec()]
        }
        K::BatchReindex => {
            need_bottoms(bottoms, 2)?;
            let mut s = bottoms[0].to_vec();
            s[0] = bottoms[1].first().copied().unwrap_or(0);
            vec![s]
        }
        K::Silence | K::Hdf5Output => vec![],
        K::Parameter { shape } => vec![declared(shape)?],
        K::ArgMax {
            out_max_val,
            top_k,
            axis,
        } => {
            let b = one(bottoms)?;
            match axis {
                Some(a) => {
                    let mut s = b.to_vec();
                    s[canonical_axis(*a, b.len())?] = *top_k;
                    vec![s]
                }
                None => {
                    let mut s = vec![1; b.len().max(3)];
                    s[0] = b[0];
                    s[1] = if *out_max_val { 2 } else { 1 };
                    s[2] = *top_k;
                    vec![s]
                }
            }
        }
        K::Accuracy { axis, .. } => {
            need_bottoms(bottoms, 2)?;
            let b = bottoms[0];
            let classes = b[canonical_axis(*axis, b.len())?];
            let mut tops = vec![vec![]];
            if n_tops > 1 {
                tops.push(vec![classes]);
            }
            tops
        }
        K::Loss(_) => {
            let mut tops = vec![vec![]];
            if n_tops > 1 {
                tops.push(one(bottoms)?.to_vec());
            }
            tops
        }
        K::PriorBox(p) => vec![prior_box(one(bottoms)?, p)?],
        K::DetectionOutput(_) => vec![vec![1, 1, 1, 7]],
        K::DetectionEvaluate(p) => {
            let classes = p.num_classes() as usize;
            let positive = if classes > 0 { classes - 1 } else { 0 };
            let detections = bottoms.first().and_then(|b| b.get(2)).copied().unwrap_or(1);
            vec![vec![1, 1, positive + detections, 5]]
        }
        K::RoiPooling {
            pooled_h, pooled_w, ..
        } => {
            need_bottoms(bottoms, 2)?;
            vec![vec![
                rois(bottoms[1])?,
                rank(bottoms[0], 4)?[1],
                *pooled_h,
                *pooled_w,
            ]]
        }
        K::PsRoiPooling {
            output_dim,
            group_size,
            ..
        } => {
            need_bottoms(bottoms, 2)?;
            vec![vec![
                rois(bottoms[1])?,
                *output_dim,
                *group_size,
                *group_size,
            ]]
        }
        K::Recurrent { num_output, .. } => {
            let b = one(bottoms)?;
            if b.len() < 2 {
                return Err(format!("input {b:?} needs at least 2 axes (T, N)"));
            }
            vec![vec![b[0], b[1], *num_output]]
        }
        K::LstmUnit => {
            need_bottoms(bottoms, 2)?;
            vec![bottoms[0].to_vec(), bottoms[0].to_vec()]
        }
        K::EvalDetection(_) | K::Python { .. } | K::BoxAnnotatorOhem | K::Unsupported(_) => {
            return Err("no shape rule".into());
        }
    };
    for s in &shapes {
        count(s)?;
    }
    Ok(shapes)
}

/// The number of regions of interest: the first axis of the rois bottom.
fn rois(b: &[usize]) -> Result<usize, String> {
    b.first()
        .copied()
        .ok_or_else(|| "the rois bottom has no axes".to_string())
}

fn rank(b: &[usize], n: usize) -> Result<&[usize], String> {
    if b.len() != n {
        return Err(format!("expects a {n}-D input, got {b:?}"));
    }
    Ok(b)
}

/// Convolution (and transposed convolution) output shape.
fn conv_out(c: &Conv, b: &[usize], transposed: bool) -> Result<Shape, String> {
    let axis = canonical_axis(c.axis, b.len())?;
    let n = b.len() - axis - 1;
    let kernel = c.kernel.resolve(n, None, "kernel_size")?;
    let stride = c.stride.resolve(n, Some(1), "stride")?;
    let pad = c.pad.resolve(n, Some(0), "pad")?;
    let dilation = c.dilation.resolve(n, Some(1), "dilation")?;
    let channels = b[axis];
    if c.group == 0 || !channels.is_multiple_of(c.group) || !c.num_output.is_multiple_of(c.group) {
        return Err(format!(
            "group {} must divide input channels {channels} and num_output {}",
            c.group, c.num_output
        ));
    }
    if c.num_output == 0 {
        return Err("num_output must be positive".into());
    }
    let mut out = b[..axis].to_vec();
    out.push(c.num_output);
    for i in 0..n {
        let (k, s, p, d, x) = (kernel[i], stride[i], pad[i], dilation[i], b[axis + 1 + i]);
        if k == 0 || s == 0 || d == 0 {
            return Err(format!(
                "kernel {k}, stride {s} and dilation {d} must be positive"
            ));
        }
        let extent = mul(&[d, k - 1])? + 1;
        let o = if transposed {
            (mul(&[s, x.saturating_sub(1)])? + extent).checked_sub(2 * p)
        } else {
            (x + 2 * p).checked_sub(extent).map(|v| v / s + 1)
        };
        match o {
            Some(o) if o > 0 => out.push(o),
            _ => {
                return Err(format!(
                    "kernel extent {extent} (pad {p}, stride {s}) does not fit input size {x} of {b:?}"
                ));
            }
        }
    }
    Ok(out)
}

/// Pooling output shape: Caffe rounds up, then drops a last window that would start in the padding.
fn pool_out(p: &Pool, b: &[usize]) -> Result<Shape, String> {
    let b = rank(b, 4)?;
    if p.global {
        return Ok(vec![b[0], b[1], 1, 1]);
    }
    let (kh, kw) = p
        .kernel
        .ok_or("kernel_size (or kernel_h/kernel_w, or global_pooling) is required")?;
    let dims = [
        (b[2], kh, p.stride.0, p.pad.0),
        (b[3], kw, p.stride.1, p.pad.1),
    ];
    let mut out = vec![b[0], b[1]];
    for (x, k, s, pad) in dims {
        if k == 0 || s == 0 {
            return Err(format!("kernel {k} and stride {s} must be positive"));
        }
        if pad >= k {
            return Err(format!("pad {pad} must be smaller than kernel {k}"));
        }
        let span = (x + 2 * pad)
            .checked_sub(k)
            .ok_or_else(|| format!("kernel {k} is larger than padded input {}", x + 2 * pad))?;
        let mut o = span.div_ceil(s) + 1;
        if pad > 0 && (o - 1) * s >= x + pad {
            o -= 1;
        }
        out.push(o);
    }
    Ok(out)
}

fn concat(bottoms: &[&[usize]], axis: i32) -> Result<Shape, String> {
    let first = one(bottoms)?;
    let a = canonical_axis(axis, first.len())?;
    let mut out = first.to_vec();
    out[a] = 0;
    for b in bottoms {
        if b.len() != first.len()
            || b.iter()
                .zip(first)
                .enumerate()
                .any(|(i, (x, y))| i != a && x != y)
        {
            return Err(format!(
                "bottoms {first:?} and {b:?} differ outside the concat axis {a}"
            ));
        }
        out[a] += b[a];
    }
    Ok(out)
}

fn slice(b: &[usize], axis: i32, points: &[usize], n_tops: usize) -> Result<Vec<Shape>, String> {
    let a = canonical_axis(axis, b.len())?;
    let dim = b[a];
    let bounds: Vec<usize> = if points.is_empty() {
        if n_tops == 0 || !dim.is_multiple_of(n_tops) {
            return Err(format!(
                "axis {a} of size {dim} does not split evenly into {n_tops} tops"
            ));
        }
        (0..=n_tops).map(|i| i * dim / n_tops).collect()
    } else {
        if points.len() + 1 != n_tops {
            return Err(format!(
                "{} slice points need {} tops, the layer has {n_tops}",
                points.len(),
                points.len() + 1
            ));
        }
        let mut v = vec![0];
        v.extend_from_slice(points);
        v.push(dim);
        v
    };
    bounds
        .windows(2)
        .map(|w| {
            if w[1] <= w[0] || w[1] > dim {
                return Err(format!(
                    "slice points {points:?} are not increasing within axis size {dim}"
                ));
            }
            let mut s = b.to_vec();
            s[a] = w[1] - w[0];
            Ok(s)
        })
        .collect()
}

fn reshape(b: &[usize], dims: &[i64], axis: i32, num_axes: i32) -> Result<Shape, String> {
    let rank = b.len() as i64;
    let start = if axis < 0 {
        i64::from(axis) + rank + 1
    } else {
        i64::from(axis)
    };
    if start < 0 || start > rank {
        return Err(format!("axis {axis} is out of range for a {rank}-D blob"));
    }
    let end = if num_axes == -1 {
        rank
    } else {
        start + i64::from(num_axes)
    };
    if num_axes < -1 || end > rank {
        return Err(format!(
            "num_axes {num_axes} from axis {axis} exceeds the {rank}-D input"
        ));
    }
    let (start, end) = (start as usize, end as usize);
    let mut out = b[..start].to_vec();
    let mut infer = None;
    for (i, &d) in dims.iter().enumerate() {
        match d {
            0 => out.push(*b.get(start + i).ok_or_else(|| {
                format!(
                    "dim {i} is 0 (copy) but the input has no axis {}",
                    start + i
                )
            })?),
            -1 if infer.is_none() => {
                infer = Some(out.len());
                out.push(1);
            }
            -1 => return Err("more than one -1 in the reshape".into()),
            d if d > 0 => out.push(d as usize),
            d => return Err(format!("dimension {d} is not allowed in a reshape")),
        }
    }
    out.extend_from_slice(&b[end..]);
    let total = count(b)?;
    if let Some(i) = infer {
        let known = mul(&out)?;
        if known == 0 || total % known != 0 {
            return Err(format!("cannot infer -1: {total} elements into {out:?}"));
        }
        out[i] = total / known;
    }
    if count(&out)? != total {
        return Err(format!(
            "reshape of {b:?} to {out:?} changes the element count"
        ));
    }
    Ok(out)
}

fn crop(b: &[usize], reference: &[usize], axis: i32, offsets: &[usize]) -> Result<Shape, String> {
    let a = canonical_axis(axis, b.len())?;
    if reference.len() != b.len() {
        return Err(format!(
            "the reference {reference:?} and input {b:?} differ in rank"
        ));
    }
    let n = b.len() - a;
    if offsets.len() > 1 && offsets.len() != n {
        return Err(format!(
            "{} offsets given for {n} cropped axes",
            offsets.len()
        ));
    }
    let mut out = b.to_vec();
    for i in a..b.len() {
        let off = match offsets.len() {
            0 => 0,
            1 => offsets[0],
            _ => offsets[i - a],
        };
        if off + reference[i] > b[i] {
            return Err(format!(
                "crop of axis {i} (offset {off}, size {}) exceeds input size {}",
                reference[i], b[i]
            ));
        }
        out[i] = reference[i];
    }
    Ok(out)
}

fn permute(b: &[usize], order: &[usize]) -> Result<Shape, String> {
    let mut full: Vec<usize> = Vec::with_capacity(b.len());
    for &o in order {
        if o >= b.len() || full.contains(&o) {
            return Err(format!(
                "order {order:?} is not a permutation of the {} axes",
                b.len()
            ));
        }
        full.push(o);
    }
    full.extend((0..b.len()).filter(|i| !order.contains(i)));
    Ok(full.iter().map(|&i| b[i]).collect())
}

/// PriorBox's aspect ratios as SSD expands them: 1 first, then each given ratio once (within 1e-6),
/// followed by its inverse when `flip`.
pub fn prior_aspect_ratios(p: &crate::caffe::PriorBoxParameter) -> Vec<f32> {
    let mut ratios = vec![1.0f32];
    for &ar in &p.aspect_ratio {
        if ratios.iter().any(|r| (r - ar).abs() < 1e-6) {
            continue;
        }
        ratios.push(ar);
        if p.flip() {
            ratios.push(1.0 / ar);
        }
    }
    ratios
}

/// Number of priors per location: every aspect ratio per min size, one more per max size.
pub fn priors_per_location(p: &crate::caffe::PriorBoxParameter) -> usize {
    prior_aspect_ratios(p).len() * p.min_size.len() + p.max_size.len()
}

fn prior_box(b: &[usize], p: &crate::caffe::PriorBoxParameter) -> Result<Shape, String> {
    let b = rank(b, 4)?;
    if p.min_size.is_empty() {
        return Err("min_size is required".into());
    }
    Ok(vec![1, 2, mul(&[b[2], b[3], priors_per_location(p), 4])?])
}

#[cfg(test)]
mod tests {
    use super::super::layer::{PoolMethod, SpatialSpec};
    use super::*;

    fn spec(v: usize) -> SpatialSpec {
        SpatialSpec {
            list: vec![v],
            hw: None,
        }
    }

    #[test]
    fn conv_rounds_down_pool_rounds_up() {
        let c = Conv {
            num_output: 8,
            bias_term: true,
            kernel: spec(3),
            stride: spec(2),
            pad: spec(0),
            dilation: SpatialSpec::default(),
            group: 1,
            axis: 1,
            relu: None,
            fusion: super::super::layer::Fusion::None,
        };
        assert_eq!(
            conv_out(&c, &[1, 3, 8, 8], false).unwrap(),
            vec![1, 8, 3, 3]
        );
        let p = Pool {
            method: PoolMethod::Max,
            global: false,
            kernel: Some((3, 3)),
            stride: (2, 2),
            pad: (0, 0),
            avg_include_pad: true,
        };
        assert_eq!(pool_out(&p, &[1, 3, 8, 8]).unwrap(), vec![1, 3, 4, 4]);
        // SqueezeNet: 111 -> 55 with 3x3/2; padded pooling clips the last window.
        assert_eq!(pool_out(&p, &[1, 96, 111, 111]).unwrap()[2], 55);
        // Rounding up gives 4 windows; the last would start in the padding, so Caffe drops it.
        let padded = Pool {
            kernel: Some((2, 2)),
            pad: (1, 1),
            ..p
        };
        assert_eq!(pool_out(&padded, &[1, 1, 5, 5]).unwrap()[2], 3);
        assert_eq!(pool_out(&padded, &[1, 1, 4, 4]).unwrap()[2], 3);
    }

    #[test]
    fn reshape_flatten_permute_slice() {
        assert_eq!(reshape(&[2, 3, 4], &[0, -1], 0, -1).unwrap(), vec![2, 12]);
        assert!(reshape(&[2, 3], &[-1, -1], 0, -1).is_err());
        assert_eq!(
            permute(&[1, 2, 3, 4], &[0, 2, 3, 1]).unwrap(),
            vec![1, 3, 4, 2]
        );
        assert_eq!(
            slice(&[1, 6], 1, &[2], 2).unwrap(),
            vec![vec![1, 2], vec![1, 4]]
        );
        assert!(count(&[65536, 65536]).is_err());
        assert!(declared(&[1, 0, 3]).is_err());
        assert!(declared(&[1, -3]).is_err());
    }
}
