//! Caffe's upgrade rules for old formats, applied to the decoded `NetParameter`: V1 `layers` (enum types,
//! per-layer V1 parameters, `blobs_lr`/`weight_decay`/`param` names) to V2 `layer`, V0 layers nested in V1
//! ones, and the deprecated net inputs (`input` + `input_shape`/`input_dim`) to an `Input` layer.

use crate::caffe::{
    self, BlobShape, InputParameter, LayerParameter, NetParameter, ParamSpec, V1LayerParameter,
    v1_layer_parameter::LayerType,
};

/// The V2 type string of a V1 layer type, as Caffe's upgrader maps it.
pub fn v1_type_name(t: LayerType) -> &'static str {
    use LayerType::*;
    match t {
        None => "",
        Absval => "AbsVal",
        Accuracy => "Accuracy",
        Argmax => "ArgMax",
        Bnll => "BNLL",
        Concat => "Concat",
        ContrastiveLoss => "ContrastiveLoss",
        Convolution => "Convolution",
        Deconvolution => "Deconvolution",
        Data => "Data",
        Dropout => "Dropout",
        DummyData => "DummyData",
        EuclideanLoss => "EuclideanLoss",
        Eltwise => "Eltwise",
        Exp => "Exp",
        Flatten => "Flatten",
        Hdf5Data => "HDF5Data",
        Hdf5Output => "HDF5Output",
        HingeLoss => "HingeLoss",
        Im2col => "Im2col",
        ImageData => "ImageData",
        InfogainLoss => "InfogainLoss",
        InnerProduct => "InnerProduct",
        Lrn => "LRN",
        MemoryData => "MemoryData",
        MultinomialLogisticLoss => "MultinomialLogisticLoss",
        Mvn => "MVN",
        Pooling => "Pooling",
        Power => "Power",
        Relu => "ReLU",
        Sigmoid => "Sigmoid",
        SigmoidCrossEntropyLoss => "SigmoidCrossEntropyLoss",
        Silence => "Silence",
        Softmax => "Softmax",
        SoftmaxLoss => "SoftmaxWithLoss",
        Split => "Split",
        Slice => "Slice",
        Tanh => "TanH",
        WindowData => "WindowData",
        Threshold => "Threshold",
    }
}

/// The V2 type string of a V0 (lower-case) layer type.
fn v0_type_name(t: &str) -> String {
    let v2 = match t {
        "accuracy" => "Accuracy",
        "bnll" => "BNLL",
        "concat" => "Concat",
        "conv" => "Convolution",
        "data" => "Data",
        "dropout" => "Dropout",
        "euclidean_loss" => "EuclideanLoss",
        "flatten" => "Flatten",
        "hdf5_data" => "HDF5Data",
        "hdf5_output" => "HDF5Output",
        "im2col" => "Im2col",
        "images" => "ImageData",
        "infogain_loss" => "InfogainLoss",
        "innerproduct" => "InnerProduct",
        "lrn" => "LRN",
        "multinomial_logistic_loss" => "MultinomialLogisticLoss",
        "pool" => "Pooling",
        "relu" => "ReLU",
        "sigmoid" => "Sigmoid",
        "softmax" => "Softmax",
        "softmax_loss" => "SoftmaxWithLoss",
        "split" => "Split",
        "tanh" => "TanH",
        "window_data" => "WindowData",
        other => return other.to_string(),
    };
    v2.to_string()
}

/// True when the net uses the V1 `layers` list.
pub fn is_v1(net: &NetParameter) -> bool {
    !net.layers.is_empty()
}

/// Upgrades a net in place: V1/V0 layers become V2 layers (appended after any V2 ones, which Caffe
/// refuses to mix anyway) and deprecated inputs become a leading `Input` layer named "input".
pub fn upgrade(net: &mut NetParameter) {
    let v1 = std::mem::take(&mut net.layers);
    net.layer.extend(v1.iter().map(upgrade_v1_layer));
    if let Some(input) = input_layer(net) {
        net.layer.insert(0, input);
        net.input.clear();
        net.input_dim.clear();
        net.input_shape.clear();
    }
}

/// The `Input` layer equivalent to the deprecated `input`/`input_shape`/`input_dim` fields.
fn input_layer(net: &NetParameter) -> Option<LayerParameter> {
    if net.input.is_empty() {
        return None;
    }
    let shape = if !net.input_shape.is_empty() {
        net.input_shape.clone()
    } else {
        net.input_dim
            .chunks(4)
            .map(|dims| BlobShape {
                dim: dims.iter().map(|&d| i64::from(d)).collect(),
            })
            .collect()
    };
    Some(LayerParameter {
        name: Some("input".into()),
        r#type: Some("Input".into()),
        top: net.input.clone(),
        input_param: Some(InputParameter { shape }),
        ..Default::default()
    })
}

/// One V1 (or V0-in-V1) layer as a V2 layer.
pub fn upgrade_v1_layer(v1: &V1LayerParameter) -> LayerParameter {
    let mut l = LayerParameter {
        name: v1.name.clone(),
        r#type: Some(v1_type_name(v1.r#type()).to_string()),
        bottom: v1.bottom.clone(),
        top: v1.top.clone(),
        include: v1.include.clone(),
        exclude: v1.exclude.clone(),
        blobs: v1.blobs.clone(),
        loss_weight: v1.loss_weight.clone(),
        accuracy_param: v1.accuracy_param,
        argmax_param: v1.argmax_param,
        concat_param: v1.concat_param,
        contrastive_loss_param: v1.contrastive_loss_param,
        convolution_param: v1.convolution_param.clone(),
        data_param: v1.data_param.clone(),
        dropout_param: v1.dropout_param,
        dummy_data_param: v1.dummy_data_param.clone(),
        eltwise_param: v1.eltwise_param.clone(),
        exp_param: v1.exp_param,
        hdf5_data_param: v1.hdf5_data_param.clone(),
        hdf5_output_param: v1.hdf5_output_param.clone(),
        hinge_loss_param: v1.hinge_loss_param,
        image_data_param: v1.image_data_param.clone(),
        infogain_loss_param: v1.infogain_loss_param.clone(),
        inner_product_param: v1.inner_product_param.clone(),
        lrn_param: v1.lrn_param,
        memory_data_param: v1.memory_data_param,
        mvn_param: v1.mvn_param,
        pooling_param: v1.pooling_param.clone(),
        power_param: v1.power_param,
        relu_param: v1.relu_param,
        sigmoid_param: v1.sigmoid_param,
        softmax_param: v1.softmax_param,
        slice_param: v1.slice_param.clone(),
        tanh_param: v1.tanh_param,
        threshold_param: v1.threshold_param,
        window_data_param: v1.window_data_param.clone(),
        transform_param: v1.transform_param.clone(),
        loss_param: v1.loss_param,
        ..Default::default()
    };
    l.param = param_specs(v1);
    if let Some(v0) = &v1.layer {
        upgrade_v0_into(v0, &mut l);
    }
    l
}

/// `param` names, `blob_share_mode`, `blobs_lr` and `weight_decay` become one `ParamSpec` per blob.
fn param_specs(v1: &V1LayerParameter) -> Vec<ParamSpec> {
    let n = v1
        .param
        .len()
        .max(v1.blob_share_mode.len())
        .max(v1.blobs_lr.len())
        .max(v1.weight_decay.len());
    (0..n)
        .map(|i| ParamSpec {
            name: v1.param.get(i).cloned(),
            share_mode: v1.blob_share_mode.get(i).copied(),
            lr_mult: v1.blobs_lr.get(i).copied(),
            decay_mult: v1.weight_decay.get(i).copied(),
        })
        .collect()
}

/// The parameters of a V0 layer, as far as inference needs them (geometry, pooling, LRN, data source).
fn upgrade_v0_into(v0: &caffe::V0LayerParameter, l: &mut LayerParameter) {
    if l.name.is_none() {
        l.name = v0.name.clone();
    }
    let ty = v0_type_name(v0.r#type());
    if l.blobs.is_empty() {
        l.blobs = v0.blobs.clone();
    }
    match ty.as_str() {
        "Convolution" => {
            l.convolution_param = Some(caffe::ConvolutionParameter {
                num_output: v0.num_output,
                bias_term: v0.biasterm,
                pad: v0.pad.into_iter().collect(),
                kernel_size: v0.kernelsize.into_iter().collect(),
                stride: v0.stride.into_iter().collect(),
                group: v0.group,
                ..Default::default()
            })
        }
        "InnerProduct" => {
            l.inner_product_param = Some(caffe::InnerProductParameter {
                num_output: v0.num_output,
                bias_term: v0.biasterm,
                ..Default::default()
            })
        }
        "Pooling" => {
            l.pooling_param = Some(caffe::PoolingParameter {
                pool: v0.pool,
                pad: v0.pad,
                kernel_size: v0.kernelsize,
                stride: v0.stride,
                ..Default::default()
            })
        }
        "LRN" => {
            l.lrn_param = Some(caffe::LrnParameter {
                local_size: v0.local_size,
                alpha: v0.alpha,
                beta: v0.beta,
                k: v0.k,
                ..Default::default()
            })
        }
        "Dropout" => {
            l.dropout_param = Some(caffe::DropoutParameter {
                dropout_ratio: v0.dropout_ratio,
            })
        }
        "Data" => {
            l.data_param = Some(caffe::DataParameter {
                source: v0.source.clone(),
                batch_size: v0.batchsize,
                rand_skip: v0.rand_skip,
                ..Default::default()
            });
            l.transform_param = Some(caffe::TransformationParameter {
                scale: v0.scale,
                mean_file: v0.meanfile.clone(),
                crop_size: v0.cropsize,
                mirror: v0.mirror,
                ..Default::default()
            });
        }
        _ => {}
    }
    l.r#type = Some(ty);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_layer_and_inputs_upgrade() {
        let mut net = NetParameter {
            input: vec!["data".into()],
            input_dim: vec![1, 3, 8, 8],
            layers: vec![V1LayerParameter {
                name: Some("c".into()),
                r#type: Some(LayerType::Convolution as i32),
                blobs_lr: vec![1.0, 2.0],
                ..Default::default()
            }],
            ..Default::default()
        };
        upgrade(&mut net);
        assert_eq!(net.layer.len(), 2);
        assert_eq!(net.layer[0].r#type(), "Input");
        assert_eq!(
            net.layer[0].input_param.as_ref().unwrap().shape[0].dim,
            vec![1, 3, 8, 8]
        );
        assert_eq!(net.layer[1].r#type(), "Convolution");
        assert_eq!(net.layer[1].param[1].lr_mult, Some(2.0));
        assert!(net.layers.is_empty());
    }
}
