//! Statistics of one tensor over the sampled batches (spec §2.3-§2.4), in fixed memory: the maximum
//! |x|, the signed extremes, each batch's maximum |x| (moving average) and percentile (MAXP), and a
//! histogram of the signed values whose range doubles when a batch exceeds it (bins merged pairwise,
//! exactly), read back at the end on the exact range Intel's KL uses.

/// Histogram bins kept while sampling, over [−R, R]: eight times the 2048 of the final histogram on
/// each side, so that re-binning onto the exact range moves counts by at most a sixteenth of a bin.
const FINE_BINS: usize = 2048 * 16;

/// The percentile of Intel's MAXP.
pub const MAXP_PERCENTILE: f64 = 0.99995;

/// Statistics of one activation tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorStats {
    /// max |x| over every batch (0 before any value).
    pub max_abs: f32,
    pub min: f32,
    pub max: f32,
    /// Per batch: max |x|.
    pub batch_max_abs: Vec<f32>,
    /// Per batch: the signed values' MAXP percentile (1.1.6 sorts signed values).
    pub batch_percentile: Vec<f32>,
    /// Values that were NaN (skipped).
    pub nans: u64,
    /// Values counted.
    pub count: u64,
    /// Histogram counts over [−range, range] (`FINE_BINS`), empty while every value was 0.
    bins: Vec<u64>,
    range: f32,
    /// Zeros seen before the range was known.
    early_zeros: u64,
    /// A batch's values, reused for its percentile.
    scratch: Vec<f32>,
}

impl Default for TensorStats {
    fn default() -> Self {
        Self {
            max_abs: 0.0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            batch_max_abs: Vec::new(),
            batch_percentile: Vec::new(),
            nans: 0,
            count: 0,
            bins: Vec::new(),
            range: 0.0,
            early_zeros: 0,
            scratch: Vec::new(),
        }
    }
}

impl TensorStats {
    /// Adds one batch of the tensor.
    pub fn add_batch(&mut self, x: &[f32]) {
        self.scratch.clear();
        self.scratch
            .extend(x.iter().copied().filter(|v| !v.is_nan()));
        self.nans += (x.len() - self.scratch.len()) as u64;
        if self.scratch.is_empty() {
            return;
        }
        let (mn, mx) = self
            .scratch
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let batch_abs = mn.abs().max(mx.abs());
        self.min = self.min.min(mn);
        self.max = self.max.max(mx);
        self.max_abs = self.max_abs.max(batch_abs);
        self.batch_max_abs.push(batch_abs);
        self.count += self.scratch.len() as u64;
        self.grow_to(batch_abs);
        self.bin_scratch();
        let k =
            ((self.scratch.len() as f64 * MAXP_PERCENTILE) as usize).min(self.scratch.len() - 1);
        let (_, &mut p, _) = self.scratch.select_nth_unstable_by(k, f32::total_cmp);
        self.batch_percentile.push(p);
    }

    /// Doubles the histogram's range until it covers `m`, merging bins pairwise.
    fn grow_to(&mut self, m: f32) {
        if m == 0.0 {
            return;
        }
        if self.bins.is_empty() {
            // The first non-zero batch: a power of two above its maximum (so that the maximum is
            // not clamped into the last bin).
            self.range = 2f32.powi(m.log2().floor() as i32 + 1);
            while self.range <= m {
                self.range *= 2.0;
            }
            self.bins = vec![0; FINE_BINS];
            self.bins[FINE_BINS / 2] += self.early_zeros;
            return;
        }
        while self.range <= m {
            // Old bin j of [−R, R] is new bin N/4 + j/2 of [−2R, 2R].
            let mut merged = vec![0u64; FINE_BINS];
            for (j, &c) in self.bins.iter().enumerate() {
                merged[FINE_BINS / 4 + j / 2] += c;
            }
            self.bins = merged;
            self.range *= 2.0;
        }
    }

    fn bin_scratch(&mut self) {
        if self.bins.is_empty() {
            self.early_zeros += self.scratch.len() as u64;
            return;
        }
        let scale = FINE_BINS as f64 / (2.0 * f64::from(self.range));
        for &v in &self.scratch {
            let i = ((f64::from(v) + f64::from(self.range)) * scale) as usize;
            self.bins[i.min(FINE_BINS - 1)] += 1;
        }
    }

    /// The histogram Intel's KL builds over all sampled values: `bins` bins on [min, max] when no
    /// value is negative, else on [−t, t] with t = max(|min|, |max|); with the lower edge and the
    /// width of a bin. Each kept bin's count goes to the bin holding its centre. None before any
    /// non-zero value.
    pub fn histogram(&self, bins: usize) -> Option<(Vec<f64>, f64, f64)> {
        if self.bins.is_empty() || bins == 0 {
            return None;
        }
        let (lo, hi) = if self.min >= 0.0 {
            (f64::from(self.min), f64::from(self.max))
        } else {
            let t = f64::from(self.min.abs().max(self.max.abs()));
            (-t, t)
        };
        let width = (hi - lo) / bins as f64;
        let fine = 2.0 * f64::from(self.range) / FINE_BINS as f64;
        let mut out = vec![0.0; bins];
        for (j, &c) in self.bins.iter().enumerate().filter(|(_, c)| **c > 0) {
            let centre = -f64::from(self.range) + (j as f64 + 0.5) * fine;
            let i = if width > 0.0 {
                ((centre - lo) / width)
                    .floor()
                    .clamp(0.0, (bins - 1) as f64) as usize
            } else {
                0
            };
            out[i] += c as f64;
        }
        Some((out, lo, width))
    }
}

/// max |w| per output channel (index 0 of the weight shape: `channels` equal runs), or one over the
/// whole tensor (`-c single`).
pub fn weight_maxima(w: &[f32], channels: usize, per_channel: bool) -> Vec<f32> {
    let max_abs = |s: &[f32]| s.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if !per_channel || channels == 0 {
        return vec![max_abs(w)];
    }
    w.chunks(w.len().div_ceil(channels).max(1))
        .map(max_abs)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_give_maxima_percentiles_and_a_histogram() {
        let mut s = TensorStats::default();
        s.add_batch(&[0.0, 0.0]);
        assert!(s.histogram(2048).is_none(), "all zero so far");
        s.add_batch(&[1.0, -0.5, 0.25, f32::NAN]);
        s.add_batch(&[3.0, 2.0]);
        assert_eq!(s.max_abs, 3.0);
        assert_eq!((s.min, s.max), (-0.5, 3.0));
        assert_eq!(s.batch_max_abs, [0.0, 1.0, 3.0]);
        assert_eq!(s.nans, 1);
        assert_eq!(s.count, 7);
        // The top element of each batch (floor(n·0.99995) = n − 1 for small n).
        assert_eq!(s.batch_percentile, [0.0, 1.0, 3.0]);
        // On [−3, 3] with 6 bins of width 1: −0.5 in bin 2, the zeros and 0.25 in bin 3, 1 in bin 4,
        // 2 in bin 5 and 3 (the upper edge) in bin 5.
        let (h, lo, w) = s.histogram(6).unwrap();
        assert_eq!((lo, w), (-3.0, 1.0));
        assert_eq!(h, [0.0, 0.0, 1.0, 3.0, 1.0, 2.0]);
    }

    #[test]
    fn growing_the_range_keeps_every_count_in_place() {
        let mut grown = TensorStats::default();
        grown.add_batch(&[0.1, 0.2, -0.3]);
        grown.add_batch(&[7.5, -6.0, 0.7]);
        let mut once = TensorStats::default();
        once.add_batch(&[0.1, 0.2, -0.3, 7.5, -6.0, 0.7]);
        assert_eq!(grown.histogram(2048), once.histogram(2048));
        let (h, _, _) = grown.histogram(2048).unwrap();
        assert_eq!(h.iter().sum::<f64>(), 6.0);
    }

    #[test]
    fn non_negative_tensors_use_their_own_range() {
        let mut s = TensorStats::default();
        s.add_batch(&[2.0, 4.0, 3.0, 3.5]);
        let (h, lo, w) = s.histogram(4).unwrap();
        assert_eq!((lo, w), (2.0, 0.5));
        assert_eq!(h, [1.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn weights_per_channel_or_per_tensor() {
        let w = [1.0, -3.0, 0.5, 0.0, -0.25, 0.1];
        assert_eq!(weight_maxima(&w, 3, true), [3.0, 0.5, 0.25]);
        assert_eq!(weight_maxima(&w, 3, false), [3.0]);
    }
}
