//! The tuning loop (spec §2.13, §5.6 improved): while FP32 − INT8 exceeds the tolerance, the layer
//! whose INT8 output is noisiest (isolated SQNR on a calibration batch) first gets the scale method or
//! per-channel weight scales that make it least noisy, then, if it is still the noisiest, goes back to
//! FP32; each change is confirmed with the real metric and undone when it does not help; a round
//! over every layer that raised the metric is followed by another that retries the undone
//! reversions (a layer's effect depends on the others). The loop
//! keeps the best configuration, stops when within tolerance, out of steps or out of time, and says
//! which. Measurements come through `Measure`, so the loop itself is tested on made-up nets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::{ScaleMethod, TuningStrategy};
use super::rules::Choices;
use crate::caffe::QuantizationParameter;

/// Quantization blocks by layer name.
pub type Table = BTreeMap<String, QuantizationParameter>;

/// What the loop measures.
pub trait Measure {
    /// The table of a configuration.
    fn table(&mut self, choices: &Choices) -> Result<Table, String>;
    /// The metric of the INT8 net with this table over the `-i` batches.
    fn accuracy(&mut self, table: &Table) -> Result<f64, String>;
    /// The SQNR (dB) of a layer's output with only it quantized, by its block.
    fn isolated_sqnr(&mut self, layer: &str, q: &QuantizationParameter) -> Result<f64, String>;
    /// The blob whose threshold sets a layer's input scale.
    fn input_blob(&self, layer: &str) -> Option<String>;
}

/// One change the loop tried.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// The first measurement, of the configuration as calibrated.
    Calibrate,
    /// A layer's input threshold by another method, and/or its weights scaled per channel.
    Rescale {
        method: ScaleMethod,
        per_channel: bool,
    },
    /// A layer back to FP32.
    Revert,
}

/// One tuning step as the report and the app show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub step: usize,
    #[serde(flatten)]
    pub action: Action,
    pub layer: Option<String>,
    /// The layer's isolated SQNR before and after the change (dB).
    pub sqnr_db: Option<(f64, f64)>,
    pub accuracy: f64,
    /// Whether the change was kept (undone when it did not help).
    pub kept: bool,
    pub seconds: f64,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    WithinTolerance,
    /// `--tuning none`: measured once.
    NotTuned,
    /// Every candidate was tried.
    NothingLeft,
    MaxSteps,
    TimeBudget,
}

/// The loop's limits and target.
#[derive(Debug, Clone)]
pub struct Limits {
    pub strategy: TuningStrategy,
    pub fp32: f64,
    pub tolerance: f64,
    pub max_steps: usize,
    pub time_budget: Option<Duration>,
}

/// What the loop ends with: the best configuration found and every step.
#[derive(Debug, Clone)]
pub struct Tuned {
    pub choices: Choices,
    pub table: Table,
    pub accuracy: f64,
    pub steps: Vec<Step>,
    pub stop: Stop,
    /// Isolated SQNR of each layer's final block (dB), where it was measured.
    pub isolated: BTreeMap<String, f64>,
}

impl Tuned {
    /// A configuration taken as it is, never measured (Intel's `-q`).
    pub fn untested(table: Table, choices: Choices) -> Self {
        Self {
            choices,
            table,
            accuracy: f64::NAN,
            steps: Vec::new(),
            stop: Stop::NotTuned,
            isolated: BTreeMap::new(),
        }
    }
}

/// Methods a layer's input threshold may take.
const METHODS: [ScaleMethod; 5] = ScaleMethod::ALL;

/// An SQNR gain (dB) below which a rescale is not worth a metric run.
const MIN_GAIN_DB: f64 = 0.5;

/// Metrics closer than this are equal: means of per-batch f32 values over different nets can differ
/// in the last bits for the same count of correct images.
const SAME: f64 = 1e-6;

/// The loop's state: the configuration being improved and what was measured of it.
struct Loop<'a, M: Measure> {
    m: &'a mut M,
    lim: &'a Limits,
    start: Instant,
    steps: Vec<Step>,
    /// Isolated SQNR by (layer, its block as text): a layer's SQNR depends only on its own block.
    sqnr: BTreeMap<(String, String), f64>,
    on_step: &'a mut dyn FnMut(&Step),
}

impl<M: Measure> Loop<'_, M> {
    fn meets(&self, accuracy: f64) -> bool {
        self.lim.fp32 - accuracy <= self.lim.tolerance
    }

    /// Why the loop must stop now, if it must.
    fn out_of_budget(&self) -> Option<Stop> {
        if self.steps.len() > self.lim.max_steps {
            return Some(Stop::MaxSteps);
        }
        self.lim
            .time_budget
            .filter(|b| self.start.elapsed() >= *b)
            .map(|_| Stop::TimeBudget)
    }

    fn isolated(&mut self, layer: &str, q: &QuantizationParameter) -> Result<f64, String> {
        let key = (layer.to_string(), format!("{q:?}"));
        if let Some(&s) = self.sqnr.get(&key) {
            return Ok(s);
        }
        let s = self.m.isolated_sqnr(layer, q)?;
        self.sqnr.insert(key, s);
        Ok(s)
    }

    /// Measures a configuration and records the step.
    fn measure(
        &mut self,
        choices: &Choices,
        action: Action,
        layer: Option<&str>,
        sqnr_db: Option<(f64, f64)>,
    ) -> Result<(Table, f64), String> {
        let t = Instant::now();
        let table = self.m.table(choices)?;
        let accuracy = self.m.accuracy(&table)?;
        self.steps.push(Step {
            step: self.steps.len(),
            action,
            layer: layer.map(str::to_string),
            sqnr_db,
            accuracy,
            kept: true,
            seconds: t.elapsed().as_secs_f64(),
        });
        Ok((table, accuracy))
    }

    /// Marks the last step undone and reports it.
    fn conclude(&mut self, kept: bool) {
        if let Some(s) = self.steps.last_mut() {
            s.kept = kept;
            (self.on_step)(s);
        }
    }

    /// Quantized layers by isolated SQNR, noisiest first (ties in file order).
    fn ranked(&mut self, table: &Table, order: &[String]) -> Result<Vec<(String, f64)>, String> {
        let mut r = Vec::new();
        for name in order.iter().filter(|n| table.contains_key(*n)) {
            let s = self.isolated(name, &table[name])?;
            r.push((name.clone(), s));
        }
        r.sort_by(|a, b| a.1.total_cmp(&b.1));
        Ok(r)
    }

    /// The layer's best rescale by isolated SQNR: each method on its input blob, then per-channel
    /// weights on top of the best.
    fn best_rescale(
        &mut self,
        layer: &str,
        cur: &Choices,
    ) -> Result<Option<(Choices, Action, f64)>, String> {
        let Some(blob) = self.m.input_blob(layer) else {
            return Ok(None);
        };
        let mut best: Option<(Choices, Action, f64)> = None;
        // Per-tensor variants first, so that per-channel wins only when it measures better.
        let per_channel_now = cur.per_channel.contains(layer);
        let variants = [per_channel_now, true]
            .into_iter()
            .take(if per_channel_now { 1 } else { 2 })
            .flat_map(|pc| METHODS.iter().map(move |&m| (m, pc)));
        for (method, per_channel) in variants {
            let mut c = cur.clone();
            c.methods.insert(blob.clone(), method);
            if per_channel {
                c.per_channel.insert(layer.to_string());
            }
            let table = self.m.table(&c)?;
            let Some(q) = table.get(layer) else {
                continue;
            };
            let s = self.isolated(layer, q)?;
            if best.as_ref().is_none_or(|b| s > b.2) {
                best = Some((
                    c,
                    Action::Rescale {
                        method,
                        per_channel,
                    },
                    s,
                ));
            }
        }
        Ok(best)
    }
}

/// Tunes from `start`: `order` lists the quantizable layers in file order. `on_step` sees each step
/// once it is concluded.
pub fn tune<M: Measure>(
    m: &mut M,
    lim: &Limits,
    start: Choices,
    order: &[String],
    on_step: &mut dyn FnMut(&Step),
) -> Result<Tuned, String> {
    let mut lp = Loop {
        m,
        lim,
        start: Instant::now(),
        steps: Vec::new(),
        sqnr: BTreeMap::new(),
        on_step,
    };
    let (table, accuracy) = lp.measure(&start, Action::Calibrate, None, None)?;
    lp.conclude(true);
    let mut cur = Current {
        choices: start,
        table,
        accuracy,
    };
    let stop = if lim.strategy == TuningStrategy::None {
        Stop::NotTuned
    } else if lp.meets(cur.accuracy) {
        Stop::WithinTolerance
    } else if lim.strategy == TuningStrategy::Positional {
        positional(&mut lp, &mut cur, order)?
    } else {
        ranked(&mut lp, &mut cur, order)?
    };
    let mut isolated = BTreeMap::new();
    for (name, q) in &cur.table {
        let key = (name.clone(), format!("{q:?}"));
        if let Some(&s) = lp.sqnr.get(&key) {
            isolated.insert(name.clone(), s);
        }
    }
    Ok(Tuned {
        choices: cur.choices,
        table: cur.table,
        accuracy: cur.accuracy,
        steps: lp.steps,
        stop,
        isolated,
    })
}

/// The configuration being improved and what was measured of it.
struct Current {
    choices: Choices,
    table: Table,
    accuracy: f64,
}

/// Intel 1.1.0's order, one-sided: revert quantized layers in file order until within tolerance.
fn positional<M: Measure>(
    lp: &mut Loop<'_, M>,
    cur: &mut Current,
    order: &[String],
) -> Result<Stop, String> {
    for name in order {
        if !cur.table.contains_key(name) {
            continue;
        }
        if let Some(stop) = lp.out_of_budget() {
            return Ok(stop);
        }
        cur.choices.fp32.insert(name.clone());
        (cur.table, cur.accuracy) = lp.measure(&cur.choices, Action::Revert, Some(name), None)?;
        lp.conclude(true);
        if lp.meets(cur.accuracy) {
            return Ok(Stop::WithinTolerance);
        }
    }
    Ok(Stop::NothingLeft)
}

/// Ours: rescale, then revert, the noisiest layer not yet settled; keep what helps.
fn ranked<M: Measure>(
    lp: &mut Loop<'_, M>,
    cur: &mut Current,
    order: &[String],
) -> Result<Stop, String> {
    let mut rescaled = BTreeSet::new();
    let mut settled = BTreeSet::new();
    // Whether this round over the layers raised the metric: then the reversions it undid are tried
    // again, since a layer's effect on the metric depends on the others.
    let mut improved = false;
    loop {
        if let Some(stop) = lp.out_of_budget() {
            return Ok(stop);
        }
        let ranking = lp.ranked(&cur.table, order)?;
        let next = ranking.iter().find(|(n, _)| !settled.contains(n)).cloned();
        let Some((layer, sqnr)) = next else {
            if !std::mem::take(&mut improved) || ranking.is_empty() {
                return Ok(Stop::NothingLeft);
            }
            settled.clear();
            continue;
        };
        let mut candidate = None;
        if rescaled.insert(layer.clone())
            && let Some((c, action, s)) = lp.best_rescale(&layer, &cur.choices)?
            && s > sqnr + MIN_GAIN_DB
        {
            candidate = Some((c, action, Some((sqnr, s))));
        }
        let (c, action, sqnr_db) = match candidate {
            Some(c) => c,
            None => {
                settled.insert(layer.clone());
                let mut c = cur.choices.clone();
                c.fp32.insert(layer.clone());
                (c, Action::Revert, None)
            }
        };
        let reverting = action == Action::Revert;
        let (t, a) = lp.measure(&c, action, Some(&layer), sqnr_db)?;
        // A rescale that costs nothing is kept (it made the layer less noisy); a reversion only
        // when it helps, since it gives up INT8 speed.
        let keep = if reverting {
            a > cur.accuracy + SAME
        } else {
            a >= cur.accuracy - SAME
        };
        lp.conclude(keep);
        improved |= a > cur.accuracy + SAME;
        if keep {
            *cur = Current {
                choices: c,
                table: t,
                accuracy: a,
            };
        }
        if lp.meets(cur.accuracy) {
            return Ok(Stop::WithinTolerance);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer of the made-up net: name, (SQNR, accuracy cost) as calibrated, the same with KL.
    type FakeLayer = (&'static str, (f64, f64), (f64, f64));

    /// A made-up net: each layer's SQNR and accuracy damage depend on its choices.
    struct Fake {
        layers: Vec<FakeLayer>,
        runs: usize,
        /// An extra cost of a table (layers interacting).
        extra: fn(&Table) -> f64,
    }

    fn no_extra(_: &Table) -> f64 {
        0.0
    }

    impl Measure for Fake {
        fn table(&mut self, c: &Choices) -> Result<Table, String> {
            Ok(self
                .layers
                .iter()
                .filter(|l| !c.fp32.contains(l.0))
                .map(|l| {
                    let kl = c.methods.get(&format!("{}_in", l.0)) == Some(&ScaleMethod::Kl);
                    let q = QuantizationParameter {
                        scale_in: vec![if kl { 2.0 } else { 1.0 }],
                        ..Default::default()
                    };
                    (l.0.to_string(), q)
                })
                .collect())
        }
        fn accuracy(&mut self, t: &Table) -> Result<f64, String> {
            self.runs += 1;
            Ok(0.9
                - t.iter()
                    .map(|(n, q)| {
                        let l = self
                            .layers
                            .iter()
                            .find(|l| l.0 == n)
                            .map_or((0.0, 0.0), |l| if q.scale_in[0] == 2.0 { l.2 } else { l.1 });
                        l.1
                    })
                    .sum::<f64>()
                - (self.extra)(t))
        }
        fn isolated_sqnr(&mut self, layer: &str, q: &QuantizationParameter) -> Result<f64, String> {
            let l = self
                .layers
                .iter()
                .find(|l| l.0 == layer)
                .ok_or("no layer")?;
            Ok(if q.scale_in[0] == 2.0 { l.2.0 } else { l.1.0 })
        }
        fn input_blob(&self, layer: &str) -> Option<String> {
            Some(format!("{layer}_in"))
        }
    }

    fn limits(strategy: TuningStrategy) -> Limits {
        Limits {
            strategy,
            fp32: 0.9,
            tolerance: 0.01,
            max_steps: 50,
            time_budget: None,
        }
    }

    fn fake(layers: Vec<FakeLayer>) -> Fake {
        Fake {
            layers,
            runs: 0,
            extra: no_extra,
        }
    }

    /// Tunes a fake net from the calibrated configuration.
    fn run(f: &mut Fake, lim: &Limits) -> Tuned {
        let order: Vec<String> = f.layers.iter().map(|l| l.0.to_string()).collect();
        tune(f, lim, Choices::default(), &order, &mut |_| {}).unwrap()
    }

    #[test]
    fn rescales_the_noisiest_layer_first_and_reverts_only_what_helps() {
        // b is noisiest and KL fixes it; c is next and only reverting fixes it.
        let mut f = fake(vec![
            ("a", (30.0, 0.002), (30.0, 0.002)),
            ("b", (10.0, 0.05), (25.0, 0.001)),
            ("c", (15.0, 0.02), (12.0, 0.03)),
        ]);
        let o = ["a", "b", "c"].map(String::from);
        let mut seen = Vec::new();
        let t = tune(
            &mut f,
            &limits(TuningStrategy::Ranked),
            Choices::default(),
            &o,
            &mut |s| seen.push(s.clone()),
        )
        .unwrap();
        assert_eq!(t.stop, Stop::WithinTolerance);
        assert_eq!(t.choices.methods.get("b_in"), Some(&ScaleMethod::Kl));
        assert!(t.choices.fp32.contains("c") && !t.choices.fp32.contains("a"));
        assert!((t.accuracy - (0.9 - 0.003)).abs() < 1e-12);
        let actions: Vec<_> = t.steps.iter().map(|s| (s.layer.clone(), s.kept)).collect();
        assert_eq!(
            actions,
            [
                (None, true),
                (Some("b".into()), true),
                (Some("c".into()), true)
            ]
        );
        assert_eq!(seen, t.steps);
        assert_eq!(f.runs, 3);
    }

    #[test]
    fn a_change_that_hurts_is_undone() {
        // KL makes a's SQNR better yet costs accuracy: undone; its reversion helps and is kept.
        let mut f = fake(vec![
            ("a", (10.0, 0.05), (20.0, 0.08)),
            ("b", (30.0, 0.0), (30.0, 0.0)),
        ]);
        let t = run(&mut f, &limits(TuningStrategy::Ranked));
        assert!(!t.steps[1].kept && t.steps[2].kept);
        assert!(t.choices.methods.is_empty() && t.choices.fp32.contains("a"));
        assert_eq!(t.stop, Stop::WithinTolerance);
    }

    #[test]
    fn positional_reverts_in_file_order_and_none_measures_once() {
        let layers = vec![
            ("a", (30.0, 0.0), (30.0, 0.0)),
            ("b", (10.0, 0.05), (10.0, 0.05)),
        ];
        let mut f = fake(layers.clone());
        let t = run(&mut f, &limits(TuningStrategy::Positional));
        let reverted: Vec<_> = t.steps.iter().filter_map(|s| s.layer.clone()).collect();
        assert_eq!(reverted, ["a", "b"]);
        let mut f = fake(layers);
        let t = run(&mut f, &limits(TuningStrategy::None));
        assert_eq!((t.stop, t.steps.len(), f.runs), (Stop::NotTuned, 1, 1));
    }

    #[test]
    fn a_reversion_undone_early_is_retried_after_the_round_improved() {
        // b's error only shows once a is FP32: reverting b helps only after a was reverted.
        fn extra(t: &Table) -> f64 {
            match (t.contains_key("a"), t.contains_key("b")) {
                (true, _) => 0.02,
                (false, true) => 0.015,
                (false, false) => 0.0,
            }
        }
        let mut f = Fake {
            extra,
            ..fake(vec![
                ("a", (20.0, 0.0), (20.0, 0.0)),
                ("b", (10.0, 0.0), (10.0, 0.0)),
            ])
        };
        let t = run(&mut f, &limits(TuningStrategy::Ranked));
        let reverts: Vec<_> = t.steps[1..]
            .iter()
            .map(|s| (s.layer.clone().unwrap(), s.kept))
            .collect();
        assert_eq!(
            reverts,
            [("b".into(), false), ("a".into(), true), ("b".into(), true)]
        );
        assert_eq!(t.stop, Stop::WithinTolerance);
    }

    #[test]
    fn stops_at_max_steps_keeping_the_best() {
        let mut f = fake(vec![
            ("a", (10.0, 0.05), (10.0, 0.05)),
            ("b", (11.0, 0.05), (11.0, 0.05)),
        ]);
        let mut lim = limits(TuningStrategy::Ranked);
        lim.max_steps = 1;
        let t = run(&mut f, &lim);
        assert_eq!(t.stop, Stop::MaxSteps);
        assert_eq!(t.steps.len(), 2);
        assert!((t.accuracy - 0.85).abs() < 1e-12);
    }
}
