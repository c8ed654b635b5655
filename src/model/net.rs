//! The TEST-phase net: layers filtered by include/exclude rules on phase, stage and level, in file order;
//! every write of a blob is a distinct value (so in-place layers read one value and produce another, and a
//! value read by several layers is shared read-only, as Caffe's inserted Split layers make it); top shapes;
//! weights bound by layer name with Caffe's count and shape checks.

use std::collections::HashMap;

use super::blob::{self, Blob};
use super::caffemodel::Weights;
use super::error::ModelError;
use super::layer::{Affine, LayerKind};
use super::shape::{self, Shape, canonical_axis};
use crate::caffe::{self, LayerParameter, NetState, NetStateRule, Phase};

pub type LayerId = usize;
pub type ValueId = usize;

#[derive(Debug, Clone)]
pub struct Layer {
    pub name: String,
    /// The type string as written (after V1 upgrade).
    pub type_name: String,
    pub kind: LayerKind,
    pub bottoms: Vec<ValueId>,
    pub tops: Vec<ValueId>,
    /// The layer's proto without its blobs (parameters for display and export).
    pub proto: LayerParameter,
    /// Index of the layer among the file's layers (after upgrade), for editing the file.
    pub file_index: usize,
    /// "file:line:col" of the layer's definition.
    pub location: String,
    /// Weights bound from a caffemodel.
    pub blobs: Vec<Blob>,
    /// Why this data layer's top shapes could not be read from its source (they stay unknown).
    pub shape_error: Option<String>,
}

impl Layer {
    /// True when top `i` reuses the name of bottom `i` (Caffe's in-place computation).
    pub fn in_place(&self, net: &Net, i: usize) -> bool {
        match (self.tops.get(i), self.bottoms.get(i)) {
            (Some(&t), Some(&b)) => net.values[t].name == net.values[b].name,
            _ => false,
        }
    }

    fn error(&self, message: impl Into<String>) -> ModelError {
        ModelError::Layer {
            at: self.location.clone(),
            layer: self.name.clone(),
            kind: self.type_name.clone(),
            message: message.into(),
        }
    }
}

/// One write of a blob.
#[derive(Debug, Clone)]
pub struct Value {
    pub name: String,
    pub producer: LayerId,
    pub consumers: Vec<LayerId>,
    /// None until shapes are inferred, or when they cannot be (unreadable data source, unsupported layer).
    pub shape: Option<Shape>,
    /// True for shapes known only after a forward pass (Caffe's initial shape is given).
    pub dynamic: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Net {
    pub name: String,
    pub layers: Vec<Layer>,
    pub values: Vec<Value>,
    /// Things the user should know that do not stop loading.
    pub warnings: Vec<String>,
}

/// The TEST state of a net: its own `state` with the phase forced to TEST, as `caffe test` runs it.
pub fn test_state(net: &caffe::NetParameter) -> NetState {
    let mut state = net.state.clone().unwrap_or_default();
    state.set_phase(Phase::Test);
    state
}

/// Caffe's `StateMeetsRule`.
fn meets(state: &NetState, rule: &NetStateRule) -> bool {
    if rule.phase.is_some() && rule.phase() != state.phase() {
        return false;
    }
    if rule.min_level.is_some_and(|m| state.level() < m)
        || rule.max_level.is_some_and(|m| state.level() > m)
    {
        return false;
    }
    rule.stage.iter().all(|s| state.stage.contains(s))
        && !rule.not_stage.iter().any(|s| state.stage.contains(s))
}

/// Whether a layer is part of the net in this state (Caffe's `FilterNet`).
pub fn included(layer: &LayerParameter, state: &NetState) -> Result<bool, String> {
    if !layer.include.is_empty() && !layer.exclude.is_empty() {
        return Err("has both include and exclude rules; Caffe allows only one kind".into());
    }
    if layer.include.is_empty() {
        return Ok(!layer.exclude.iter().any(|r| meets(state, r)));
    }
    Ok(layer.include.iter().any(|r| meets(state, r)))
}

impl Net {
    /// Builds the TEST-phase net from an upgraded `NetParameter` (V2 layers only). `locations[i]` is the
    /// "file:line:col" of file layer `i`.
    pub fn build(
        param: &caffe::NetParameter,
        locations: &[String],
        file: &str,
    ) -> Result<Net, ModelError> {
        let state = test_state(param);
        let mut net = Net {
            name: param.name().to_string(),
            ..Default::default()
        };
        let mut current: HashMap<String, ValueId> = HashMap::new();
        let loc = |i: usize| {
            locations
                .get(i)
                .cloned()
                .unwrap_or_else(|| file.to_string())
        };
        let active: Vec<(usize, &LayerParameter)> = param
            .layer
            .iter()
            .enumerate()
            .map(|(i, l)| included(l, &state).map(|inc| (i, l, inc)))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|m| ModelError::Net {
                at: file.to_string(),
                message: m,
            })?
            .into_iter()
            .filter_map(|(i, l, inc)| inc.then_some((i, l)))
            .collect();
        if active.is_empty() {
            return Err(ModelError::Net {
                at: file.to_string(),
                message: "the net has no layers in the TEST phase".into(),
            });
        }
        for &(file_index, p) in &active {
            let id = net.layers.len();
            let mut layer = Layer {
                name: p.name().to_string(),
                type_name: p.r#type().to_string(),
                kind: LayerKind::from_proto(p),
                bottoms: Vec::new(),
                tops: Vec::new(),
                proto: LayerParameter {
                    blobs: Vec::new(),
                    ..p.clone()
                },
                file_index,
                location: loc(file_index),
                blobs: Vec::new(),
                shape_error: None,
            };
            if layer.name.is_empty() {
                return Err(layer.error("has no name"));
            }
            if net.layers.iter().any(|l| l.name == layer.name) {
                return Err(layer
                    .error("the name is used by an earlier layer; Caffe binds weights by name"));
            }
            for b in &p.bottom {
                let Some(&v) = current.get(b) else {
                    return Err(layer.error(missing_bottom(b, p, &param.layer, &active, &state)));
                };
                net.values[v].consumers.push(id);
                layer.bottoms.push(v);
            }
            for (i, t) in p.top.iter().enumerate() {
                let in_place = p.bottom.get(i) == Some(t);
                if !in_place && current.contains_key(t) {
                    return Err(layer.error(format!("top '{t}' is already produced by an earlier layer (Caffe: produced by multiple sources)")));
                }
                let v = net.values.len();
                net.values.push(Value {
                    name: t.clone(),
                    producer: id,
                    consumers: Vec::new(),
                    shape: None,
                    dynamic: false,
                });
                current.insert(t.clone(), v);
                layer.tops.push(v);
            }
            if let LayerKind::DetectionOutput(d) = &layer.kind
                && d.clip.is_some()
            {
                net.warnings.push(format!(
                    "{}: layer '{}': detection_output_param.clip is OpenCV's extension (field 1000); Intel Caffe rejects it, and the exported prototxt leaves it out",
                    layer.location, layer.name
                ));
            }
            if let LayerKind::Unsupported(t) = &layer.kind {
                net.warnings.push(format!(
                    "{}: layer '{}' has type '{t}', which int8cal cannot run",
                    layer.location, layer.name
                ));
            }
            net.layers.push(layer);
        }
        Ok(net)
    }

    pub fn layer(&self, name: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// The last value written under a blob name (what Caffe's blob holds after the forward pass).
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.values.iter().rev().find(|v| v.name == name)
    }

    /// Number of images per batch: the first dimension of the first data layer's first top.
    pub fn batch_size(&self) -> Option<usize> {
        let l = self.layers.iter().find(|l| l.kind.is_data())?;
        self.values[*l.tops.first()?]
            .shape
            .as_ref()?
            .first()
            .copied()
    }

    /// Infers every top shape in order. `data_tops` gives the tops of data layers (reading their source);
    /// when it fails, the failure is a warning and the shapes that depend on it stay unknown.
    pub fn infer_shapes(
        &mut self,
        data_tops: &dyn Fn(&Layer) -> Result<Vec<Shape>, String>,
    ) -> Result<(), ModelError> {
        let mut source_errors: Vec<(LayerId, String)> = Vec::new();
        for id in 0..self.layers.len() {
            let layer = &self.layers[id];
            let bottoms: Option<Vec<&[usize]>> = layer
                .bottoms
                .iter()
                .map(|&b| self.values[b].shape.as_deref())
                .collect();
            let result = match (&layer.kind, bottoms) {
                (LayerKind::Input { shapes }, _) => input_shapes(shapes, layer.tops.len()),
                (LayerKind::Data { .. }, _) => match data_tops(layer) {
                    Ok(s) => Ok(s),
                    Err(e) => {
                        let w = format!(
                            "{}: layer '{}': {e}; shapes that depend on it are unknown",
                            layer.location, layer.name
                        );
                        self.warnings.push(w);
                        source_errors.push((id, e));
                        continue;
                    }
                },
                (
                    LayerKind::Python { .. }
                    | LayerKind::Unsupported(_)
                    | LayerKind::EvalDetection(_),
                    _,
                )
                | (_, None) => {
                    continue;
                }
                (kind, Some(b)) => shape::infer(kind, &b, layer.tops.len()),
            };
            let shapes = result.map_err(|m| layer.error(m))?;
            if shapes.len() < layer.tops.len() {
                return Err(layer.error(format!(
                    "declares {} tops, but produces {}",
                    layer.tops.len(),
                    shapes.len()
                )));
            }
            let dynamic = matches!(
                layer.kind,
                LayerKind::DetectionOutput(_) | LayerKind::DetectionEvaluate(_)
            );
            let annotated = matches!(
                &layer.kind,
                LayerKind::Data {
                    source: super::layer::DataSource::Annotated(..),
                    ..
                }
            );
            let tops = layer.tops.clone();
            for (i, (&t, s)) in tops.iter().zip(shapes).enumerate() {
                self.values[t].shape = Some(s);
                self.values[t].dynamic = dynamic || (annotated && i > 0);
            }
        }
        for (id, e) in source_errors {
            self.layers[id].shape_error = Some(e);
        }
        Ok(())
    }

    /// Binds the weights of every layer that has parameters, with Caffe's checks: the blob count and each
    /// blob's shape (a legacy 4-D blob fits a shape padded with leading ones).
    pub fn bind_weights(&mut self, weights: &Weights) -> Result<(), ModelError> {
        let path = weights.path.clone();
        let err = |layer: &str, message: String| ModelError::Weights {
            path: path.clone(),
            layer: layer.to_string(),
            message,
        };
        for id in 0..self.layers.len() {
            let expected = self
                .expected_blobs(id)
                .map_err(|m| err(&self.layers[id].name, m))?;
            let layer = &self.layers[id];
            let Some(expected) = expected else {
                // No rule for this layer: take whatever the file holds.
                let blobs = weights
                    .get(&layer.name)
                    .map(|w| w.blobs.clone())
                    .unwrap_or_default();
                self.layers[id].blobs = blobs;
                continue;
            };
            let found = weights.get(&layer.name);
            let (required, optional) = (&expected.required, &expected.optional);
            if required.is_empty() && found.is_none_or(|w| w.blobs.is_empty()) {
                continue;
            }
            let Some(found) = found else {
                let names: Vec<&str> = weights
                    .layers
                    .iter()
                    .take(6)
                    .map(|l| l.name.as_str())
                    .collect();
                return Err(err(
                    &layer.name,
                    format!(
                        "has no weights in this caffemodel (is it the model's own? its first layers are {names:?})"
                    ),
                ));
            };
            let n = found.blobs.len();
            if n < required.len() || n > required.len() + optional.len() {
                let want = if optional.is_empty() {
                    required.len().to_string()
                } else {
                    format!("{} or {}", required.len(), required.len() + optional.len())
                };
                return Err(err(
                    &layer.name,
                    format!("the caffemodel holds {n} blobs, the layer expects {want}"),
                ));
            }
            let mut bound = Vec::with_capacity(n);
            for (i, (b, want)) in found
                .blobs
                .iter()
                .zip(required.iter().chain(optional.iter()))
                .enumerate()
            {
                if !blob::shape_fits(b, want) {
                    return Err(err(
                        &layer.name,
                        format!(
                            "blob {i} has shape {:?} in the caffemodel, the net expects {want:?}",
                            b.shape()
                        ),
                    ));
                }
                bound.push(blob::reshaped(b.clone(), want).map_err(|m| err(&layer.name, m))?);
            }
            self.layers[id].blobs = bound;
        }
        Ok(())
    }

    /// The blob shapes a layer expects: (required, optional extra), or None when this tool has no rule
    /// (the blobs of the file are taken as they are). Needs the bottom shapes.
    pub fn expected_blobs(&self, id: LayerId) -> Result<Option<ExpectedBlobs>, String> {
        let layer = &self.layers[id];
        let bottom = |i: usize| {
            layer
                .bottoms
                .get(i)
                .and_then(|&b| self.values[b].shape.clone())
        };
        let Some(b) = bottom(0).or_else(|| layer.bottoms.is_empty().then(Vec::new)) else {
            return Ok(None);
        };
        let with_bias =
            |w: Shape, bias: bool, n: usize| if bias { vec![w, vec![n]] } else { vec![w] };
        let channels =
            |axis: i32| -> Result<usize, String> { Ok(b[canonical_axis(axis, b.len())?]) };
        let k = |kernel: &super::layer::SpatialSpec, axis: i32| -> Result<Vec<usize>, String> {
            let n = b.len() - canonical_axis(axis, b.len())? - 1;
            kernel.resolve(n, None, "kernel_size")
        };
        let req = |required: Vec<Shape>| {
            Ok(Some(ExpectedBlobs {
                required,
                optional: vec![],
            }))
        };
        match &layer.kind {
            LayerKind::Convolution(c) => {
                let mut w = vec![c.num_output, channels(c.axis)? / c.group.max(1)];
                w.extend(k(&c.kernel, c.axis)?);
                req(with_bias(w, c.bias_term, c.num_output))
            }
            LayerKind::Deconvolution(c) => {
                let mut w = vec![channels(c.axis)?, c.num_output / c.group.max(1)];
                w.extend(k(&c.kernel, c.axis)?);
                req(with_bias(w, c.bias_term, c.num_output))
            }
            LayerKind::InnerProduct(ip) => {
                let inner: usize = b[canonical_axis(ip.axis, b.len())?..].iter().product();
                let w = if ip.transpose {
                    vec![inner, ip.num_output]
                } else {
                    vec![ip.num_output, inner]
                };
                req(with_bias(w, ip.bias_term, ip.num_output))
            }
            LayerKind::Embed {
                num_output,
                input_dim,
                bias_term,
            } => req(with_bias(
                vec![*input_dim, *num_output],
                *bias_term,
                *num_output,
            )),
            LayerKind::BatchNorm(_) => {
                let c = *b
                    .get(1)
                    .ok_or("BatchNorm needs an input with a channel axis")?;
                // Intel's compiler may append Scale's gamma and beta (caffe-format §6.1 item 5).
                Ok(Some(ExpectedBlobs {
                    required: vec![vec![c], vec![c], vec![1]],
                    optional: vec![vec![c], vec![c]],
                }))
            }
            LayerKind::Scale(a) => {
                let param = affine_shape(a, &b, bottom(1).as_deref())?;
                let mut v = Vec::new();
                if layer.bottoms.len() < 2 {
                    v.push(param.clone());
                }
                if a.bias_term {
                    v.push(param);
                }
                req(v)
            }
            LayerKind::Bias(a) => {
                if layer.bottoms.len() >= 2 {
                    return req(vec![]);
                }
                req(vec![affine_shape(a, &b, None)?])
            }
            LayerKind::PReLU { channel_shared } | LayerKind::Normalize { channel_shared, .. } => {
                let c = if *channel_shared {
                    1
                } else {
                    *b.get(1).ok_or("needs a channel axis")?
                };
                req(vec![vec![c]])
            }
            LayerKind::Parameter { shape } => req(vec![shape::declared(shape)?]),
            LayerKind::Recurrent { .. } | LayerKind::Python { .. } | LayerKind::Unsupported(_) => {
                Ok(None)
            }
            _ => req(vec![]),
        }
    }
}

/// The weight blobs a layer expects, in order: those it must have and those it may have after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedBlobs {
    pub required: Vec<Shape>,
    pub optional: Vec<Shape>,
}

/// The shape of Scale's gamma (or Bias's bias): the bottom's axes `[axis, axis + num_axes)`.
fn affine_shape(a: &Affine, b: &[usize], second: Option<&[usize]>) -> Result<Shape, String> {
    if let Some(s) = second {
        return Ok(s.to_vec());
    }
    let start = canonical_axis(a.axis, b.len().max(1))?;
    let end = if a.num_axes < 0 {
        b.len()
    } else {
        start + a.num_axes as usize
    };
    b.get(start..end).map(<[usize]>::to_vec).ok_or_else(|| {
        format!(
            "axis {} with num_axes {} exceeds input {b:?}",
            a.axis, a.num_axes
        )
    })
}

fn input_shapes(shapes: &[Vec<i64>], n_tops: usize) -> Result<Vec<Shape>, String> {
    match shapes.len() {
        0 => Err("input_param has no shape".into()),
        1 => Ok(vec![shape::declared(&shapes[0])?; n_tops]),
        n if n == n_tops => shapes.iter().map(|s| shape::declared(s)).collect(),
        n => Err(format!("{n} shapes for {n_tops} tops")),
    }
}

/// Why a bottom is unknown: produced by no layer, by a layer outside the TEST phase, by a later layer, or
/// through a cycle.
fn missing_bottom(
    blob: &str,
    layer: &LayerParameter,
    all: &[LayerParameter],
    active: &[(usize, &LayerParameter)],
    state: &NetState,
) -> String {
    let later: Vec<&LayerParameter> = active
        .iter()
        .map(|(_, l)| *l)
        .filter(|l| l.top.iter().any(|t| t == blob))
        .collect();
    if let Some(producer) = later.first() {
        if let Some(path) = cycle_through(layer, active) {
            return format!("bottom '{blob}' closes a cycle: {}", path.join(" -> "));
        }
        return format!(
            "bottom '{blob}' is produced only by the later layer '{}'; Caffe needs layers in order",
            producer.name()
        );
    }
    if let Some(other) = all.iter().find(|l| l.top.iter().any(|t| t == blob)) {
        let phase = if state.phase() == Phase::Test {
            "TEST"
        } else {
            "TRAIN"
        };
        return format!(
            "bottom '{blob}' is produced only by layer '{}', which is not in the {phase} phase",
            other.name()
        );
    }
    format!("bottom '{blob}' is not produced by any layer")
}

/// A cycle of layers through `start` (following bottoms to producers by name), as layer names.
fn cycle_through(
    start: &LayerParameter,
    active: &[(usize, &LayerParameter)],
) -> Option<Vec<String>> {
    let producers = |blob: &str| -> Vec<&LayerParameter> {
        active
            .iter()
            .map(|(_, l)| *l)
            .filter(|l| l.top.iter().any(|t| t == blob) && !l.bottom.iter().any(|b| b == blob))
            .collect()
    };
    // Depth-first search over "depends on" edges, with an explicit stack (no recursion on user data).
    let mut stack: Vec<(Vec<String>, &LayerParameter)> =
        vec![(vec![start.name().to_string()], start)];
    let mut seen = std::collections::HashSet::new();
    while let Some((path, l)) = stack.pop() {
        for b in &l.bottom {
            for p in producers(b) {
                if p.name() == start.name() {
                    let mut cycle = path.clone();
                    cycle.push(start.name().to_string());
                    cycle.reverse();
                    return Some(cycle);
                }
                if seen.insert(p.name().to_string()) {
                    let mut next = path.clone();
                    next.push(p.name().to_string());
                    stack.push((next, p));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        phase: Option<Phase>,
        stages: &[&str],
        not: &[&str],
        min: Option<i32>,
        max: Option<i32>,
    ) -> NetStateRule {
        NetStateRule {
            phase: phase.map(|p| p as i32),
            stage: stages.iter().map(|s| s.to_string()).collect(),
            not_stage: not.iter().map(|s| s.to_string()).collect(),
            min_level: min,
            max_level: max,
        }
    }

    fn state(stages: &[&str], level: i32) -> NetState {
        NetState {
            phase: Some(Phase::Test as i32),
            level: Some(level),
            stage: stages.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn include_and_exclude_follow_caffes_filter_net() {
        let include = |r| LayerParameter {
            include: vec![r],
            ..Default::default()
        };
        let exclude = |r| LayerParameter {
            exclude: vec![r],
            ..Default::default()
        };
        let s = state(&["deploy"], 1);
        assert!(included(&LayerParameter::default(), &s).unwrap());
        assert!(included(&include(rule(Some(Phase::Test), &[], &[], None, None)), &s).unwrap());
        assert!(!included(&include(rule(Some(Phase::Train), &[], &[], None, None)), &s).unwrap());
        assert!(!included(&exclude(rule(Some(Phase::Test), &[], &[], None, None)), &s).unwrap());
        // Stages: all listed stages must be set, no not_stage may be set.
        assert!(included(&include(rule(None, &["deploy"], &[], None, None)), &s).unwrap());
        assert!(!included(&include(rule(None, &["deploy", "x"], &[], None, None)), &s).unwrap());
        assert!(!included(&include(rule(None, &[], &["deploy"], None, None)), &s).unwrap());
        // Levels are inclusive bounds.
        assert!(included(&include(rule(None, &[], &[], Some(1), Some(1))), &s).unwrap());
        assert!(!included(&include(rule(None, &[], &[], Some(2), None)), &s).unwrap());
        assert!(!included(&include(rule(None, &[], &[], None, Some(0))), &s).unwrap());
        let both = LayerParameter {
            include: vec![rule(None, &[], &[], None, None)],
            exclude: vec![rule(None, &[], &[], None, None)],
            ..Default::default()
        };
        assert!(included(&both, &s).is_err());
    }
}
