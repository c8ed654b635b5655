//! SSD's PriorBox: for each feature-map position, boxes of each min size (aspect ratio 1), of
//! sqrt(min × max) when max sizes are given, and of each other aspect ratio, in image-relative
//! coordinates; channel 1 holds the variances.

use crate::caffe::PriorBoxParameter;

/// Writes the priors for a feature map of `layer` (h, w) and an image of `img` (h, w) into `out`
/// (2 × h·w·priors·4).
pub fn prior_box(
    p: &PriorBoxParameter,
    layer: [usize; 2],
    img: [usize; 2],
    out: &mut [f32],
) -> Result<(), String> {
    let ratios = crate::model::shape::prior_aspect_ratios(p);
    if !p.max_size.is_empty() && p.max_size.len() != p.min_size.len() {
        return Err(format!(
            "{} max sizes for {} min sizes",
            p.max_size.len(),
            p.min_size.len()
        ));
    }
    let (img_h, img_w) = match (p.img_size, p.img_h, p.img_w) {
        (Some(s), _, _) => (s as f32, s as f32),
        (_, Some(h), Some(w)) => (h as f32, w as f32),
        _ => (img[0] as f32, img[1] as f32),
    };
    let (step_h, step_w) = match (p.step, p.step_h, p.step_w) {
        (Some(s), _, _) => (s, s),
        (_, Some(h), Some(w)) => (h, w),
        _ => (img_h / layer[0] as f32, img_w / layer[1] as f32),
    };
    let offset = p.offset();
    let half = out.len() / 2;
    let (boxes, variances) = out.split_at_mut(half);
    let mut i = 0;
    let mut push = |cx: f32, cy: f32, bw: f32, bh: f32| {
        boxes[i] = (cx - bw / 2.0) / img_w;
        boxes[i + 1] = (cy - bh / 2.0) / img_h;
        boxes[i + 2] = (cx + bw / 2.0) / img_w;
        boxes[i + 3] = (cy + bh / 2.0) / img_h;
        i += 4;
    };
    for h in 0..layer[0] {
        for w in 0..layer[1] {
            let cx = (w as f32 + offset) * step_w;
            let cy = (h as f32 + offset) * step_h;
            for (s, &min) in p.min_size.iter().enumerate() {
                push(cx, cy, min, min);
                if let Some(&max) = p.max_size.get(s) {
                    let size = (min * max).sqrt();
                    push(cx, cy, size, size);
                }
                for &ar in &ratios[1..] {
                    push(cx, cy, min * ar.sqrt(), min / ar.sqrt());
                }
            }
        }
    }
    if i != half {
        return Err(format!("wrote {i} prior coordinates into a top of {half}"));
    }
    if p.clip() {
        boxes.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
    }
    match p.variance.len() {
        0 => variances.fill(0.1),
        1 => variances.fill(p.variance[0]),
        4 => variances
            .chunks_mut(4)
            .for_each(|c| c.copy_from_slice(&p.variance)),
        n => return Err(format!("{n} variances: give 1 or 4")),
    }
    Ok(())
}
