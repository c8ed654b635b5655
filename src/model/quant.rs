//! A layer's `quantization_param` read into what Intel Caffe 1.1.6 executes (spec/intel-calibrator.md
//! §3, §4.2-§4.3): the precision of its input and output, the scales it uses (only `scale_in[0]` and
//! `scale_out[0]`; weight scales per output channel or one for all), and the flags. Checked here, so
//! the engine never sees a zero, negative or NaN scale, a bit width other than 8 or 32, or a weight scale
//! count that fits neither one nor the layer's outputs.

use crate::caffe::QuantizationParameter;
use crate::model::layer::LayerKind;

/// Whether an INT8 layer stores INT8 or dequantizes to FP32 (`bw_layer_out` 8 or 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputPrecision {
    Int8,
    F32,
}

/// A checked `quantization_param` of a layer Intel Caffe runs in INT8.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerQuant {
    /// `bw_layer_in` 8: the input is quantized (required by InnerProduct; convolutions always are).
    pub int8_input: bool,
    pub output: OutputPrecision,
    pub scale_in: f32,
    /// 1.0 when the output is FP32 (the calibrator writes 1; the runtime then dequantizes).
    pub scale_out: f32,
    /// One per output channel (a single scale repeated).
    pub scale_params: Vec<f32>,
    /// `is_negative_input`: s8 input instead of u8.
    pub negative_input: bool,
    /// `force_u8_input`: the data layer already shifted and scaled the input (factor 1.0).
    pub force_u8_input: bool,
}

/// What a layer's `quantization_param` means for execution.
#[derive(Debug, Clone, PartialEq)]
pub enum Quantized {
    /// No `quantization_param`: FP32.
    No,
    /// Present on a layer type Intel Caffe has no INT8 kernel for (or an InnerProduct whose input is
    /// not 8-bit): the layer runs FP32, as Intel's does; the reason is for the user.
    Ignored(String),
    Int8(LayerQuant),
}

/// Reads and checks the `quantization_param` of a layer with `outputs` output channels.
pub fn layer_quant(
    kind: &LayerKind,
    q: Option<&QuantizationParameter>,
    outputs: usize,
) -> Result<Quantized, String> {
    let Some(q) = q else {
        return Ok(Quantized::No);
    };
    let is_ip = match kind {
        LayerKind::Convolution(_) => false,
        LayerKind::InnerProduct(_) => true,
        _ => {
            return Ok(Quantized::Ignored(
                "Intel Caffe runs only Convolution and InnerProduct in INT8; this layer runs FP32"
                    .into(),
            ));
        }
    };
    for (name, bw) in [
        ("bw_layer_in", q.bw_layer_in()),
        ("bw_layer_out", q.bw_layer_out()),
        ("bw_params", q.bw_params()),
    ] {
        if bw != 8 && bw != 32 {
            return Err(format!(
                "{name}: {bw} is not a bit width Intel Caffe runs (8 or 32)"
            ));
        }
    }
    if is_ip && q.bw_layer_in() != 8 {
        return Ok(Quantized::Ignored(
            "an InnerProduct runs INT8 only with bw_layer_in: 8; this one runs FP32".into(),
        ));
    }
    let output = if q.bw_layer_out() == 8 {
        OutputPrecision::Int8
    } else {
        OutputPrecision::F32
    };
    let first = |name: &str, v: &[f32]| -> Result<f32, String> {
        let s = *v
            .first()
            .ok_or_else(|| format!("{name} is missing (an INT8 layer needs it)"))?;
        if !(s.is_finite() && s > 0.0) {
            return Err(format!("{name}: {s} is not a positive scale"));
        }
        Ok(s)
    };
    // With force_u8_input the data layer already made u8 codes at this scale; the input reorder
    // factor is 1.0 (the plan's input spec) but the bias and output factor still use it (§4.2).
    let scale_in = first("scale_in", &q.scale_in)?;
    let scale_out = match output {
        OutputPrecision::Int8 => first("scale_out", &q.scale_out)?,
        OutputPrecision::F32 => 1.0,
    };
    let scale_params = weight_scales(&q.scale_params, outputs)?;
    Ok(Quantized::Int8(LayerQuant {
        int8_input: true,
        output,
        scale_in,
        scale_out,
        scale_params,
        negative_input: q.is_negative_input(),
        force_u8_input: q.force_u8_input(),
    }))
}

/// One weight scale per output channel: a single scale applies to all; 0 is allowed (a channel of
/// zero weights, which Intel handles in real units).
fn weight_scales(v: &[f32], outputs: usize) -> Result<Vec<f32>, String> {
    if let Some(bad) = v.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
        return Err(format!("scale_params: {bad} is not a valid weight scale"));
    }
    match v.len() {
        0 => Err("scale_params is missing (an INT8 layer needs it)".into()),
        1 => Ok(vec![v[0]; outputs]),
        n if n == outputs => Ok(v.to_vec()),
        n => Err(format!(
            "scale_params has {n} values for {outputs} output channels (give 1 or {outputs})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layer::Identity;

    fn q(bw_out: u32) -> QuantizationParameter {
        QuantizationParameter {
            bw_layer_in: Some(8),
            bw_layer_out: Some(bw_out),
            bw_params: Some(8),
            scale_in: vec![15.136_828],
            scale_out: vec![19.023_706],
            scale_params: vec![388.338_17],
            ..Default::default()
        }
    }

    fn ip() -> LayerKind {
        LayerKind::InnerProduct(crate::model::layer::InnerProduct {
            num_output: 3,
            bias_term: true,
            axis: 1,
            transpose: false,
            relu: None,
        })
    }

    #[test]
    fn a_checked_parameter_reads_as_intel_uses_it() {
        let Ok(Quantized::Int8(l)) = layer_quant(&ip(), Some(&q(8)), 3) else {
            panic!("not INT8");
        };
        assert_eq!(l.output, OutputPrecision::Int8);
        assert_eq!((l.scale_in, l.scale_out), (15.136_828, 19.023_706));
        assert_eq!(l.scale_params, vec![388.338_17; 3]);
        // bw_layer_out 32: FP32 output at scale 1, whatever scale_out says.
        let Ok(Quantized::Int8(f)) = layer_quant(&ip(), Some(&q(32)), 3) else {
            panic!("not INT8");
        };
        assert_eq!((f.output, f.scale_out), (OutputPrecision::F32, 1.0));
        assert_eq!(layer_quant(&ip(), None, 3), Ok(Quantized::No));
    }

    #[test]
    fn bad_parameters_are_errors_or_intels_fp32() {
        let with = |f: &dyn Fn(&mut QuantizationParameter)| {
            let mut p = q(8);
            f(&mut p);
            layer_quant(&ip(), Some(&p), 2)
        };
        for (what, result) in [
            ("zero", with(&|p| p.scale_in = vec![0.0])),
            ("negative", with(&|p| p.scale_out = vec![-1.0])),
            ("NaN", with(&|p| p.scale_params = vec![f32::NAN])),
            ("count", with(&|p| p.scale_params = vec![1.0, 2.0, 3.0])),
            ("missing", with(&|p| p.scale_in.clear())),
            ("width", with(&|p| p.bw_layer_out = Some(16))),
        ] {
            assert!(result.is_err(), "{what}: {result:?}");
        }
        assert!(matches!(
            with(&|p| p.bw_layer_in = Some(32)),
            Ok(Quantized::Ignored(_))
        ));
        let dropout = LayerKind::Identity(Identity::Dropout);
        assert!(matches!(
            layer_quant(&dropout, Some(&q(8)), 1),
            Ok(Quantized::Ignored(_))
        ));
        // A zero weight scale is a channel of zero weights: allowed.
        assert!(with(&|p| p.scale_params = vec![0.0, 5.0]).is_ok());
    }
}
