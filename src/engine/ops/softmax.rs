//! Softmax over an axis, and the TEST-time outputs that read scores: Accuracy (top-k, ignore_label,
//! axis), SoftmaxWithLoss (with Caffe's normalization modes) and ArgMax.

/// Splits `dims` at `axis`: (outer, channels, inner).
pub fn split_at_axis(dims: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        dims[..axis].iter().product(),
        dims[axis],
        dims[axis + 1..].iter().product(),
    )
}

pub fn softmax(x: &[f32], (outer, ch, inner): (usize, usize, usize), out: &mut [f32]) {
    for o in 0..outer {
        for i in 0..inner {
            let at = |c: usize| (o * ch + c) * inner + i;
            let max = (0..ch).map(|c| x[at(c)]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for c in 0..ch {
                let e = (x[at(c)] - max).exp();
                out[at(c)] = e;
                sum += e;
            }
            for c in 0..ch {
                out[at(c)] /= sum;
            }
        }
    }
}

/// The class index of a label, None when it is the ignored label; an error outside 0..classes.
fn class_of(label: f32, classes: usize, ignore: Option<i32>) -> Result<Option<usize>, String> {
    let label = label as i32;
    if Some(label) == ignore {
        return Ok(None);
    }
    usize::try_from(label)
        .ok()
        .filter(|&l| l < classes)
        .map(Some)
        .ok_or_else(|| format!("label {label} is outside 0..{classes}"))
}

/// Top-k accuracy as Caffe counts it: the label's score is beaten by fewer than k scores (ties count
/// against). Returns (accuracy, per-class accuracies).
pub fn accuracy(
    scores: &[f32],
    labels: &[f32],
    (outer, ch, inner): (usize, usize, usize),
    top_k: usize,
    ignore: Option<i32>,
) -> Result<(f32, Vec<f32>), String> {
    let (mut correct, mut count) = (0usize, 0usize);
    let (mut per_class, mut per_count) = (vec![0usize; ch], vec![0usize; ch]);
    for o in 0..outer {
        for i in 0..inner {
            let Some(l) = class_of(labels[o * inner + i], ch, ignore)? else {
                continue;
            };
            let at = |c: usize| (o * ch + c) * inner + i;
            let truth = scores[at(l)];
            let better = (0..ch).filter(|&c| scores[at(c)] >= truth).count() - 1;
            per_count[l] += 1;
            if better < top_k {
                correct += 1;
                per_class[l] += 1;
            }
            count += 1;
        }
    }
    let acc = if count == 0 {
        0.0
    } else {
        correct as f32 / count as f32
    };
    let classes = per_class
        .iter()
        .zip(&per_count)
        .map(|(&a, &n)| if n == 0 { 0.0 } else { a as f32 / n as f32 })
        .collect();
    Ok((acc, classes))
}

/// How SoftmaxWithLoss divides the summed loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    Full,
    Valid,
    BatchSize,
    None,
}

/// The mean negative log-likelihood of the labels, as `caffe test` reports the loss.
pub fn softmax_loss(
    prob: &[f32],
    labels: &[f32],
    (outer, ch, inner): (usize, usize, usize),
    ignore: Option<i32>,
    norm: Normalization,
) -> Result<f32, String> {
    let (mut loss, mut valid) = (0.0f32, 0usize);
    for o in 0..outer {
        for i in 0..inner {
            let Some(l) = class_of(labels[o * inner + i], ch, ignore)? else {
                continue;
            };
            loss -= prob[(o * ch + l) * inner + i].max(f32::MIN_POSITIVE).ln();
            valid += 1;
        }
    }
    let divisor = match norm {
        Normalization::Full => (outer * inner) as f32,
        Normalization::Valid => valid as f32,
        Normalization::BatchSize => outer as f32,
        Normalization::None => 1.0,
    };
    Ok(loss / divisor.max(1.0))
}

/// ArgMax over the channel axis (no `axis` given): per item the top-k indices (and values).
pub fn argmax(
    x: &[f32],
    (outer, ch, inner): (usize, usize, usize),
    top_k: usize,
    out_max_val: bool,
    out: &mut [f32],
) {
    let inner = inner.max(1);
    let dim = ch * inner;
    for o in 0..outer {
        let mut idx: Vec<usize> = (0..dim).collect();
        let row = &x[o * dim..(o + 1) * dim];
        // Caffe sorts (value, index) pairs in descending order: equal values, larger index first.
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(b.cmp(&a)));
        for k in 0..top_k.min(dim) {
            if out_max_val {
                out[o * 2 * top_k + k] = idx[k] as f32;
                out[o * 2 * top_k + top_k + k] = row[idx[k]];
            } else {
                out[o * top_k + k] = idx[k] as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_accuracy_and_loss() {
        let x = [1.0, 2.0, 3.0, 0.0, 0.0, 5.0];
        let mut p = [0.0; 6];
        softmax(&x, (2, 3, 1), &mut p);
        assert!((p[..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let (acc, per) = accuracy(&p, &[2.0, 0.0], (2, 3, 1), 1, None).unwrap();
        assert_eq!(acc, 0.5);
        assert_eq!(per, vec![0.0, 0.0, 1.0]);
        assert_eq!(
            accuracy(&p, &[2.0, 0.0], (2, 3, 1), 3, None).unwrap().0,
            1.0
        );
        assert_eq!(
            accuracy(&p, &[2.0, 0.0], (2, 3, 1), 1, Some(0)).unwrap().0,
            1.0
        );
        let l = softmax_loss(&p, &[2.0, 2.0], (2, 3, 1), None, Normalization::Valid).unwrap();
        let want = -(p[2].ln() + p[5].ln()) / 2.0;
        assert!((l - want).abs() < 1e-6);
        assert!(accuracy(&p, &[7.0, 0.0], (2, 3, 1), 1, None).is_err());
    }

    #[test]
    fn argmax_gives_caffes_indices_values_and_tie_order() {
        // Two items of four classes; the second has a tie between classes 0 and 2.
        let x = [0.1, 0.7, 0.2, 0.0, 0.5, 0.1, 0.5, 0.3];
        let mut idx = [0.0; 4];
        argmax(&x, (2, 4, 1), 2, false, &mut idx);
        assert_eq!(idx, [1.0, 2.0, 2.0, 0.0]);
        let mut both = [0.0; 8];
        argmax(&x, (2, 4, 1), 2, true, &mut both);
        assert_eq!(both, [1.0, 2.0, 0.7, 0.2, 2.0, 0.0, 0.5, 0.5]);
    }
}
