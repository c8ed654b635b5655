//! Intel Caffe's net compilation before it runs INT8 (spec/intel-calibrator.md §4.1, 1.1.1+ rules,
//! in order): Convolution + BatchNorm (+ Scale) folding, BatchNorm + Scale merge, Convolution +
//! ReLU, BatchNorm + ReLU, Convolution + Eltwise SUM (+ ReLU), InnerProduct + ReLU. Rules look at
//! the *first consumer* of a layer's current output, as Intel's do by top name. The result says,
//! per layer, whether it runs as written, was absorbed, or is a fused layer (and what it absorbed);
//! execution and statistics follow it, while the exported file stays the user's own net.

use crate::model::layer::{Activation, EltwiseOp, LayerKind};
use crate::model::{Layer, LayerId, Net, ValueId};

/// What a layer is in the compiled net.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// Runs as written.
    Own,
    /// Computed as part of the given layer.
    Absorbed(LayerId),
    /// A Convolution, InnerProduct or (unfolded) BatchNorm with the layers it absorbed.
    Fused(Fusion),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fusion {
    /// BatchNorm and Scale layers folded into a convolution's weights, in order; for a BatchNorm,
    /// the Scale merged into it (applied after it).
    pub folded: Vec<LayerId>,
    /// A ReLU applied as the output is stored, with its negative slope.
    pub relu: Option<(LayerId, f32)>,
    /// An Eltwise SUM computed into the residual's buffer.
    pub sum: Option<Sum>,
    /// The value the fused output stands for (the top of the last layer absorbed).
    pub output: ValueId,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sum {
    pub eltwise: LayerId,
    /// The Eltwise's other input: the fused layer adds into its buffer and takes its data type.
    pub residual: ValueId,
    pub coeff: Vec<f32>,
}

/// The compiled view of a net.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub roles: Vec<Role>,
}

impl Compiled {
    /// Applies Intel's rules to a TEST net.
    pub fn new(net: &Net) -> Self {
        let mut c = Self {
            roles: vec![Role::Own; net.layers.len()],
        };
        c.fold_batch_norm(net);
        c.merge_scale(net);
        c.fuse_relu(net, |k, _| matches!(k, LayerKind::Convolution(_)));
        // MKL-DNN's BatchNorm only takes a plain ReLU.
        c.fuse_relu(net, |k, slope| {
            matches!(k, LayerKind::BatchNorm(_)) && slope == 0.0
        });
        c.fuse_sum(net);
        c.fuse_relu(net, |k, _| matches!(k, LayerKind::InnerProduct(_)));
        c
    }

    /// The fusion of a layer, if it is a fused layer.
    pub fn fusion(&self, id: LayerId) -> Option<&Fusion> {
        match &self.roles[id] {
            Role::Fused(f) => Some(f),
            _ => None,
        }
    }

    /// Every value a fused layer stands for: its own tops and those of the layers it absorbed.
    pub fn values_of<'a>(
        &'a self,
        net: &'a Net,
        id: LayerId,
    ) -> impl Iterator<Item = ValueId> + 'a {
        let absorbed = self
            .roles
            .iter()
            .enumerate()
            .filter(move |(_, r)| **r == Role::Absorbed(id))
            .flat_map(move |(other, _)| net.layers[other].tops.iter().copied());
        net.layers[id].tops.iter().copied().chain(absorbed)
    }

    /// The current output of a layer that runs (its fused output, or its first top).
    fn output(&self, net: &Net, id: LayerId) -> Option<ValueId> {
        match &self.roles[id] {
            Role::Fused(f) => Some(f.output),
            Role::Own => net.layers[id].tops.first().copied(),
            Role::Absorbed(_) => None,
        }
    }

    /// Takes `fusion` (new or extended) for layer `id`.
    fn fusion_mut(&mut self, net: &Net, id: LayerId) -> Option<&mut Fusion> {
        if self.roles[id] == Role::Own {
            let output = *net.layers[id].tops.first()?;
            self.roles[id] = Role::Fused(Fusion {
                folded: Vec::new(),
                relu: None,
                sum: None,
                output,
            });
        }
        match &mut self.roles[id] {
            Role::Fused(f) => Some(f),
            _ => None,
        }
    }

    /// Rule 1: a Convolution whose first consumer is BatchNorm (global statistics) absorbs it, and the
    /// BatchNorm's first consumer if that is a one-input Scale.
    fn fold_batch_norm(&mut self, net: &Net) {
        for id in 0..net.layers.len() {
            if !matches!(net.layers[id].kind, LayerKind::Convolution(_)) {
                continue;
            }
            let Some(bn) = self.first_consumer(net, id).filter(|&b| {
                matches!(&net.layers[b].kind, LayerKind::BatchNorm(p) if p.use_global_stats != Some(false))
            }) else {
                continue;
            };
            self.absorb(net, id, bn, |f| f.folded.push(bn));
            let scale = self.first_consumer(net, id).filter(|&s| {
                matches!(net.layers[s].kind, LayerKind::Scale(_))
                    && net.layers[s].bottoms.len() == 1
            });
            if let Some(s) = scale {
                self.absorb(net, id, s, |f| f.folded.push(s));
            }
        }
    }

    /// Rule 2: a BatchNorm left unfolded whose first consumer is a one-input Scale takes the Scale in
    /// (Intel appends the Scale's blobs to the BatchNorm and drops the Scale).
    fn merge_scale(&mut self, net: &Net) {
        for id in 0..net.layers.len() {
            if !matches!(net.layers[id].kind, LayerKind::BatchNorm(_))
                || self.roles[id] != Role::Own
            {
                continue;
            }
            // MKL-DNN's scale and shift are per channel.
            let scale = self.first_consumer(net, id).filter(|&s| {
                matches!(&net.layers[s].kind, LayerKind::Scale(a) if a.axis == 1 && a.num_axes == 1)
                    && net.layers[s].bottoms.len() == 1
            });
            if let Some(s) = scale {
                self.absorb(net, id, s, |f| f.folded.push(s));
            }
        }
    }

    /// Rules 3, 4 and 6: a layer the test accepts (by its kind and the ReLU's negative slope) whose
    /// first consumer is a ReLU absorbs it.
    fn fuse_relu(&mut self, net: &Net, accepts: impl Fn(&LayerKind, f32) -> bool) {
        for id in 0..net.layers.len() {
            if matches!(self.roles[id], Role::Absorbed(_)) {
                continue;
            }
            if let Some((relu, slope)) = self.first_relu(net, id)
                && accepts(&net.layers[id].kind, slope)
            {
                self.absorb(net, id, relu, |f| f.relu = Some((relu, slope)));
            }
        }
    }

    /// Rule 5: the Convolution that immediately precedes an Eltwise SUM (among the layers that still
    /// run) and whose first consumer is that Eltwise absorbs it, then the Eltwise's ReLU. Intel's flag
    /// for "a ReLU follows" is never reset: after the first fused Eltwise without a ReLU, later ones
    /// leave their ReLU standalone.
    fn fuse_sum(&mut self, net: &Net) {
        let mut relu_allowed = true;
        let running: Vec<LayerId> = (0..net.layers.len())
            .filter(|&i| !matches!(self.roles[i], Role::Absorbed(_)))
            .collect();
        for pair in running.windows(2) {
            let [conv, elt] = [pair[0], pair[1]];
            let l = &net.layers[elt];
            let LayerKind::Eltwise {
                op: EltwiseOp::Sum,
                coeff,
            } = &l.kind
            else {
                continue;
            };
            let is_conv = matches!(net.layers[conv].kind, LayerKind::Convolution(_));
            if !is_conv || l.bottoms.len() != 2 || self.first_consumer(net, conv) != Some(elt) {
                continue;
            }
            // A bottom that is a non-last branch of an implicit Split with more than two branches.
            let split_branch = l.bottoms.iter().any(|&b| {
                let users = &net.values[b].consumers;
                users.len() > 2 && users.iter().max() != Some(&elt)
            });
            let Some(out) = self.output(net, conv) else {
                continue;
            };
            if split_branch {
                continue;
            }
            let Some(&residual) = l.bottoms.iter().find(|&&b| b != out) else {
                continue;
            };
            let sum = Sum {
                eltwise: elt,
                residual,
                coeff: coeff.clone(),
            };
            self.absorb(net, conv, elt, |f| f.sum = Some(sum));
            match self.first_relu(net, conv) {
                Some((relu, slope)) if relu_allowed => {
                    self.absorb(net, conv, relu, |f| f.relu = Some((relu, slope)));
                }
                Some(_) => {}
                None => relu_allowed = false,
            }
        }
    }

    /// The first layer (in net order) that reads a running layer's current output.
    fn first_consumer(&self, net: &Net, id: LayerId) -> Option<LayerId> {
        let out = self.output(net, id)?;
        net.values[out].consumers.iter().copied().min()
    }

    /// The first consumer, if it is a ReLU, with its slope.
    fn first_relu(&self, net: &Net, id: LayerId) -> Option<(LayerId, f32)> {
        let c = self.first_consumer(net, id)?;
        match net.layers[c].kind {
            LayerKind::Activation(Activation::ReLU { negative_slope }) => Some((c, negative_slope)),
            _ => None,
        }
    }

    /// `into` absorbs layer `absorbed`: its output becomes the absorbed layer's top.
    fn absorb(
        &mut self,
        net: &Net,
        into: LayerId,
        absorbed: LayerId,
        record: impl FnOnce(&mut Fusion),
    ) {
        let Some(&top) = net.layers[absorbed].tops.first() else {
            return;
        };
        if let Some(f) = self.fusion_mut(net, into) {
            record(f);
            f.output = top;
        }
        self.roles[absorbed] = Role::Absorbed(into);
    }
}

/// A convolution's weights and bias after folding its BatchNorm (and Scale) as Intel Caffe does
/// (§4.1 rule 1): with mean μ, variance σ², factor f = 1/blob2[0] (1 when that is 0), ε, and the Scale's
/// γ, β (1, 0 without a Scale), α_c = γ_c / √(σ²_c·f + ε), W′[c] = α_c·W[c] and b′_c = α_c·b_c + β_c −
/// α_c·f·μ_c (b = 0 for a convolution without a bias).
pub fn folded_weights(
    net: &Net,
    conv: LayerId,
    folded: &[LayerId],
) -> Result<(Vec<f32>, Vec<f32>), String> {
    let l = &net.layers[conv];
    let data = |layer: &Layer, i: usize| -> Result<Vec<f32>, String> {
        layer
            .blobs
            .get(i)
            .map(|b| b.data.iter().copied().collect())
            .ok_or_else(|| {
                format!(
                    "layer '{}': weight blob {i} is missing (were weights given?)",
                    layer.name
                )
            })
    };
    let mut w = data(l, 0)?;
    let outputs = match &l.kind {
        LayerKind::Convolution(c) => c.num_output,
        _ => return Err(format!("layer '{}' is not a convolution", l.name)),
    };
    let mut b = if l.blobs.len() > 1 {
        data(l, 1)?
    } else {
        vec![0.0; outputs]
    };
    for &id in folded {
        let f = &net.layers[id];
        let (alpha, shift) = match &f.kind {
            LayerKind::BatchNorm(p) => {
                let (mean, var) = (data(f, 0)?, data(f, 1)?);
                let stored = data(f, 2)?.first().copied().unwrap_or(1.0);
                let factor = if stored == 0.0 { 1.0 } else { 1.0 / stored };
                let alpha: Vec<f32> = var
                    .iter()
                    .map(|v| 1.0 / (v * factor + p.eps).sqrt())
                    .collect();
                let shift = mean
                    .iter()
                    .zip(&alpha)
                    .map(|(m, a)| -a * factor * m)
                    .collect();
                (alpha, shift)
            }
            LayerKind::Scale(a) => {
                let gamma = data(f, 0)?;
                let beta = if a.bias_term {
                    data(f, 1)?
                } else {
                    vec![0.0; gamma.len()]
                };
                (gamma, beta)
            }
            _ => {
                return Err(format!(
                    "layer '{}' cannot be folded into a convolution",
                    f.name
                ));
            }
        };
        if alpha.len() != outputs || shift.len() != outputs {
            return Err(format!(
                "layer '{}' has {} channels for {outputs} outputs",
                f.name,
                alpha.len()
            ));
        }
        let per = w.len() / outputs.max(1);
        for (c, ws) in w.chunks_mut(per.max(1)).enumerate() {
            ws.iter_mut().for_each(|v| *v *= alpha[c]);
            b[c] = alpha[c] * b[c] + shift[c];
        }
    }
    Ok((w, b))
}
