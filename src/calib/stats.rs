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
    wants: Gather,
}

/// What a tensor's statistics gather beyond the maxima: the histogram (KL, MSE) and the per-batch
/// percentile (MAXP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gather {
    pub histogram: bool,
    pub percentile: bool,
}

impl Gather {
    pub const ALL: Self = Self {
        histogram: true,
        percentile: true,
    };
}

/// An f32 ordered by `total_cmp` (the values are never NaN here).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ordered(f32);

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
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
            wants: Gather::ALL,
        }
    }
}

impl TensorStats {
    /// Statistics that gather only what `wants` says beyond the maxima (which every method uses).
    pub fn gathering(wants: Gather) -> Self {
        Self {
            wants,
            ..Self::default()
        }
    }

    /// Adds one batch of the tensor.
    pub fn add_batch(&mut self, x: &[f32]) {
        // Comparisons with NaN are false, so NaNs drop out of the extremes; the loop vectorizes.
        let (mut mn, mut mx, mut nans) = (f32::INFINITY, f32::NEG_INFINITY, 0u64);
        for c in x.chunks(4096) {
            let (a, b, n) = c.iter().fold((mn, mx, 0u32), |(a, b, n), &v| {
                (
                    if v < a { v } else { a },
                    if v > b { v } else { b },
                    n + u32::from(v.is_nan()),
                )
            });
            (mn, mx, nans) = (a, b, nans + u64::from(n));
        }
        self.nans += nans;
        let n = x.len() - nans as usize;
        if n == 0 {
            return;
        }
        let batch_abs = mn.abs().max(mx.abs());
        self.min = self.min.min(mn);
        self.max = self.max.max(mx);
        self.max_abs = self.max_abs.max(batch_abs);
        self.batch_max_abs.push(batch_abs);
        self.count += n as u64;
        if self.wants.histogram {
            self.grow_to(batch_abs);
            self.bin(x, n);
        }
        if self.wants.percentile {
            self.batch_percentile.push(percentile(x, n));
        }
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

    fn bin(&mut self, x: &[f32], n: usize) {
        if self.bins.is_empty() {
            self.early_zeros += n as u64;
            return;
        }
        let scale = FINE_BINS as f64 / (2.0 * f64::from(self.range));
        let range = f64::from(self.range);
        let index = |v: f32| (((f64::from(v) + range) * scale) as usize).min(FINE_BINS - 1);
        if n == x.len() {
            x.iter().for_each(|&v| self.bins[index(v)] += 1);
        } else {
            x.iter()
                .filter(|v| !v.is_nan())
                .for_each(|&v| self.bins[index(v)] += 1);
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

/// The signed values' element at index floor(n·p) in ascending order (n values besides NaNs): the
/// smallest of the n − floor(n·p) largest, kept in a small heap (a few hundred of millions of values).
fn percentile(x: &[f32], n: usize) -> f32 {
    use std::cmp::Reverse;
    let k = ((n as f64 * MAXP_PERCENTILE) as usize).min(n - 1);
    let keep = n - k;
    let mut top: std::collections::BinaryHeap<Reverse<Ordered>> =
        std::collections::BinaryHeap::with_capacity(keep + 1);
    for &v in x.iter().filter(|v| !v.is_nan()) {
        if top.len() < keep {
            top.push(Reverse(Ordered(v)));
        } else if top
            .peek()
            .is_some_and(|Reverse(m)| v.total_cmp(&m.0).is_gt())
        {
            top.pop();
            top.push(Reverse(Ordered(v)));
        }
    }
    top.peek().map_or(0.0, |Reverse(m)| m.0)
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
    fn the_percentile_is_the_sorted_element() {
        for n in [1usize, 7, 20_001, 100_000] {
            let mut x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 % 10007) as f32 - 5000.0) * 0.01)
                .collect();
            x.push(f32::NAN);
            let mut sorted: Vec<f32> = x.iter().copied().filter(|v| !v.is_nan()).collect();
            sorted.sort_by(f32::total_cmp);
            let k = ((n as f64 * MAXP_PERCENTILE) as usize).min(n - 1);
            assert_eq!(percentile(&x, n), sorted[k], "{n}");
        }
    }

    #[test]
    fn weights_per_channel_or_per_tensor() {
        let w = [1.0, -3.0, 0.5, 0.0, -0.25, 0.1];
        assert_eq!(weight_maxima(&w, 3, true), [3.0, 0.5, 0.25]);
        assert_eq!(weight_maxima(&w, 3, false), [3.0]);
    }
}
