//! The activation thresholds of the scale methods (`-a`, spec §2.4): the value M whose scale is
//! 255/M or 127/M. DIRECT, MAXP, MA and KL as Intel's tool computes them, and MSE (ours): the
//! threshold whose quantization of the histogram has the smallest mean squared error.

use super::config::ScaleMethod;
use super::stats::{Gather, TensorStats};

/// What `method` reads beyond the maxima.
pub fn gather_for(method: ScaleMethod) -> Gather {
    Gather {
        histogram: matches!(method, ScaleMethod::Kl | ScaleMethod::Mse),
        percentile: method == ScaleMethod::Percentile,
    }
}

/// Bins of the histogram KL and MSE read, and KL's target bins (TensorRT's).
const BINS: usize = 2048;
const TARGET_BINS: usize = 255;

/// The threshold of `method` for a tensor (0 when it held no non-zero value). `unsigned`: the tensor
/// is stored as u8 (MSE quantizes [0, M] to 255 levels, else [−M, M] to 127 per side).
pub fn threshold(method: ScaleMethod, s: &TensorStats, unsigned: bool) -> f32 {
    match method {
        ScaleMethod::Direct => s.max_abs,
        ScaleMethod::Percentile => mean(&s.batch_percentile),
        ScaleMethod::MovingAverage => moving_average(&s.batch_max_abs),
        ScaleMethod::Kl => s.histogram(BINS).map_or(0.0, |(h, lo, w)| {
            kl(&h, (lo, w), (f64::from(s.min), f64::from(s.max))) as f32
        }),
        ScaleMethod::Mse => s
            .histogram(BINS)
            .map_or(0.0, |(h, lo, w)| mse(&h, lo, w, unsigned) as f32),
    }
}

fn mean(v: &[f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    (v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64) as f32
}

/// M = m₁, then M ← 0.5·M + 0.5·mₜ.
fn moving_average(maxima: &[f32]) -> f32 {
    let mut it = maxima.iter().map(|&m| f64::from(m));
    let first = it.next().unwrap_or(0.0);
    it.fold(first, |m, x| 0.5 * m + 0.5 * x) as f32
}

/// Intel 1.1.6's KL threshold over a histogram with lower edge `lo` and bin width `w` of values
/// between `mn` and `mx` (§2.4).
pub fn kl(hist: &[f64], (lo, w): (f64, f64), (mn, mx): (f64, f64)) -> f64 {
    let n = hist.len();
    if n < 2 {
        return lo + w;
    }
    let last = n - 1;
    let (start, end) = if lo >= 0.0 {
        ((last as f64 * 0.7) as usize, last)
    } else {
        // Signed: [−t, t]; the side with the larger extreme decides where the search runs.
        let first_nz = hist.iter().position(|&c| c > 0.0).unwrap_or(0);
        let last_nz = hist.iter().rposition(|&c| c > 0.0).unwrap_or(last);
        if mx.abs() > mn.abs() {
            (first_nz + ((last - first_nz) as f64 * 0.6) as usize, last)
        } else {
            ((0.6 * last_nz as f64) as usize, last_nz)
        }
    };
    let mut best: Option<(f64, usize)> = None;
    for i in start.max(1)..=end {
        if hist[i - 1] == 0.0 {
            continue;
        }
        let d = divergence(hist, i);
        if best.is_none_or(|(b, _)| d < b) {
            best = Some((d, i));
        }
    }
    let i = best.map_or_else(
        || (0..=start).rev().find(|&j| hist[j] > 0.0).unwrap_or(start),
        |(_, i)| i,
    );
    (i as f64 + 0.5) * w + lo
}

/// KL(P‖Q) for a cut at bin i: P = hist[..i] with the tail added to its last bin, Q = hist[..i]
/// merged into 255 bins and spread back evenly over P's non-empty bins.
fn divergence(hist: &[f64], i: usize) -> f64 {
    let mut p = hist[..i].to_vec();
    p[i - 1] += hist[i..].iter().sum::<f64>();
    let m = (i / TARGET_BINS).max(1);
    let mut q = vec![0.0; i];
    let groups = TARGET_BINS.min(i);
    for g in 0..groups {
        let (a, b) = (g * m, if g + 1 == groups { i } else { (g + 1) * m });
        let sum: f64 = hist[a..b].iter().sum();
        let nz = p[a..b].iter().filter(|&&v| v != 0.0).count();
        if nz > 0 {
            for j in (a..b).filter(|&j| p[j] != 0.0) {
                q[j] = sum / nz as f64;
            }
        }
    }
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    p.iter()
        .zip(&q)
        .filter(|(pv, _)| **pv != 0.0)
        .map(|(&pv, &qv)| {
            let (pn, qn) = (pv / sp, qv / sq);
            if qn == 0.0 {
                f64::INFINITY
            } else {
                pn * (pn / qn).ln()
            }
        })
        .sum()
}

/// The threshold among the histogram's bin edges whose quantization (255 levels on [0, M], or 127 per
/// side on [−M, M]) of the bin centres has the smallest mean squared error, clipping included.
pub fn mse(hist: &[f64], lo: f64, w: f64, unsigned: bool) -> f64 {
    let centres = centres(hist, lo, w);
    let top = centres.iter().fold(0.0f64, |m, (x, _)| m.max(x.abs()));
    if top == 0.0 {
        return 0.0;
    }
    // Candidates: 1/2048 .. 2048/2048 of the largest |centre| (the top one is DIRECT's).
    (1..=BINS)
        .map(|k| top * k as f64 / BINS as f64)
        .map(|t| (quantization_error(&centres, t, unsigned), t))
        .fold((f64::INFINITY, top), |b, c| if c.0 < b.0 { c } else { b })
        .1
}

/// The SQNR (dB) of quantizing a histogram's values (at their bin centres) with threshold `t`, as
/// `mse` quantizes them: what each method's threshold would give, for the app.
pub fn histogram_sqnr(hist: &[f64], lo: f64, w: f64, t: f64, unsigned: bool) -> f64 {
    let centres = centres(hist, lo, w);
    let signal: f64 = centres.iter().map(|(x, c)| c * x * x).sum();
    let noise = if t > 0.0 {
        quantization_error(&centres, t, unsigned)
    } else {
        signal
    };
    crate::engine::sqnr::sqnr_db(signal, noise)
}

/// The centres and counts of a histogram's non-empty bins.
fn centres(hist: &[f64], lo: f64, w: f64) -> Vec<(f64, f64)> {
    hist.iter()
        .enumerate()
        .filter(|(_, c)| **c > 0.0)
        .map(|(i, &c)| (lo + (i as f64 + 0.5) * w, c))
        .collect()
}

/// Σ count·(x − q(x))² with threshold `t` (> 0): 255 levels on [0, t] or 127 per side.
fn quantization_error(centres: &[(f64, f64)], t: f64, unsigned: bool) -> f64 {
    let levels = if unsigned { 255.0 } else { 127.0 };
    let step = t / levels;
    centres
        .iter()
        .map(|&(x, c)| {
            let q = (x / step)
                .round()
                .clamp(if unsigned { 0.0 } else { -levels }, levels);
            c * (x - q * step).powi(2)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(batches: &[&[f32]]) -> TensorStats {
        let mut s = TensorStats::default();
        batches.iter().for_each(|b| s.add_batch(b));
        s
    }

    #[test]
    fn histogram_sqnr_rewards_a_threshold_that_fits() {
        // Values 0.5 (×100) and 100 (×1): a threshold at 100 leaves 0.5 a coarse step; the outlier
        // dominates the signal, so clipping it to 1 costs far more.
        let mut hist = vec![0.0; 201];
        hist[1] = 100.0;
        hist[200] = 1.0;
        let (lo, w) = (0.0, 0.5);
        let fits = histogram_sqnr(&hist, lo, w, 100.25, true);
        let clips = histogram_sqnr(&hist, lo, w, 1.0, true);
        assert!(fits > 40.0 && clips < 1.0, "{fits} {clips}");
        assert_eq!(histogram_sqnr(&hist, lo, w, 0.0, true), 0.0);
    }

    #[test]
    fn direct_percentile_and_moving_average() {
        let s = stats(&[&[1.0, -4.0], &[2.0, 0.5], &[8.0, 1.0]]);
        assert_eq!(threshold(ScaleMethod::Direct, &s, false), 8.0);
        // Per batch maxima 4, 2, 8: M = 4, then 3, then 5.5.
        assert_eq!(threshold(ScaleMethod::MovingAverage, &s, false), 5.5);
        // Signed percentiles (the largest of two values): 1, 2, 8.
        assert!((threshold(ScaleMethod::Percentile, &s, false) - 11.0 / 3.0).abs() < 1e-6);
        let empty = TensorStats::default();
        for m in [ScaleMethod::Direct, ScaleMethod::Kl, ScaleMethod::Mse] {
            assert_eq!(threshold(m, &empty, true), 0.0);
        }
    }

    #[test]
    fn kl_searches_the_top_of_the_range_only() {
        // Non-negative data: Intel's search starts at 70% of the range, so a dense body on [0, 1)
        // with outliers at 9.5 and 10 is cut at the first outlier's bin, never inside the body.
        let mut body: Vec<f32> = (0..20000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        body.extend([10.0, 9.5]);
        let t = threshold(ScaleMethod::Kl, &stats(&[&body]), true);
        let w: f64 = 10.0 / 2048.0;
        let want = ((9.5 / w).floor() + 1.5) * w;
        assert!((f64::from(t) - want).abs() < 2.0 * w, "{t} against {want}");
        // Uniform data up to its maximum: the cut is in the search window [0.7·2047, 2047].
        let uniform: Vec<f32> = (0..50000).map(|i| (i % 2048) as f32 / 2047.0).collect();
        let t = threshold(ScaleMethod::Kl, &stats(&[&uniform]), true);
        assert!((0.69..=1.0).contains(&t), "{t}");
    }

    #[test]
    fn kl_divergence_is_zero_when_nothing_is_merged_or_clipped() {
        // 255 bins with a cut at 255: Q is P itself.
        let h: Vec<f64> = (0..255).map(|i| (i % 7 + 1) as f64).collect();
        assert!(divergence(&h, 255).abs() < 1e-12);
        // Clipping a heavy tail into the last bin costs divergence once merging starts.
        let mut h: Vec<f64> = (0..600).map(|i| (600 - i) as f64).collect();
        h.extend([0.0; 100]);
        assert!(divergence(&h, 600) > 0.0);
    }

    #[test]
    fn mse_clips_a_light_tail_and_keeps_a_heavy_one() {
        // A million values on [0, 1) and one at 3: clipping it (error 4) beats 255 levels over
        // [0, 3] (about 1e6 · step²/12 ≈ 11.5).
        let mut h = vec![0.0; BINS];
        h[..682].iter_mut().for_each(|c| *c = 1e6 / 682.0);
        h[BINS - 1] = 1.0;
        let t = mse(&h, 0.0, 3.0 / BINS as f64, true);
        assert!(t < 2.0, "{t}");
        // A hundred values at 3: clipping them costs more than the coarser steps.
        h[BINS - 1] = 100.0;
        let t = mse(&h, 0.0, 3.0 / BINS as f64, true);
        assert!(t > 2.9, "{t}");
        // Without outliers the whole range is kept (to within a bin).
        let y: Vec<f32> = (0..10000).map(|i| (i % 100) as f32 / 100.0).collect();
        let t = threshold(ScaleMethod::Mse, &stats(&[&y]), true);
        assert!(t > 0.9, "{t}");
    }
}
