//! A ResNet-50 deploy prototxt in Caffe's style (Convolution + BatchNorm + Scale + ReLU, bottleneck blocks
//! with projection shortcuts, Eltwise SUM): about 230 layers, for layout and view tests on a large net.

use std::fmt::Write;

fn conv(out: &mut String, name: &str, bottom: &str, n: usize, k: usize, s: usize, relu: bool) {
    let pad = k / 2;
    let _ = write!(
        out,
        "layer {{ name: \"{name}\" type: \"Convolution\" bottom: \"{bottom}\" top: \"{name}\" \
         convolution_param {{ num_output: {n} kernel_size: {k} pad: {pad} stride: {s} bias_term: false }} }}\n\
         layer {{ name: \"bn_{name}\" type: \"BatchNorm\" bottom: \"{name}\" top: \"{name}\" batch_norm_param {{ use_global_stats: true }} }}\n\
         layer {{ name: \"scale_{name}\" type: \"Scale\" bottom: \"{name}\" top: \"{name}\" scale_param {{ bias_term: true }} }}\n"
    );
    if relu {
        let _ = writeln!(
            out,
            "layer {{ name: \"{name}_relu\" type: \"ReLU\" bottom: \"{name}\" top: \"{name}\" }}"
        );
    }
}

pub fn resnet50_prototxt() -> String {
    let mut p = String::from(
        "name: \"ResNet-50\"\n\
         layer { name: \"data\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 3 dim: 224 dim: 224 } } }\n",
    );
    conv(&mut p, "conv1", "data", 64, 7, 2, true);
    p.push_str("layer { name: \"pool1\" type: \"Pooling\" bottom: \"conv1\" top: \"pool1\" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n");
    let mut bottom = "pool1".to_string();
    for (stage, (blocks, width)) in [(3usize, 64usize), (4, 128), (6, 256), (3, 512)]
        .into_iter()
        .enumerate()
    {
        for b in 0..blocks {
            let name = format!("res{}{}", stage + 2, (b'a' + b as u8) as char);
            let stride = if b == 0 && stage > 0 { 2 } else { 1 };
            let shortcut = if b == 0 {
                let s = format!("{name}_branch1");
                conv(&mut p, &s, &bottom, width * 4, 1, stride, false);
                s
            } else {
                bottom.clone()
            };
            conv(
                &mut p,
                &format!("{name}_branch2a"),
                &bottom,
                width,
                1,
                stride,
                true,
            );
            conv(
                &mut p,
                &format!("{name}_branch2b"),
                &format!("{name}_branch2a"),
                width,
                3,
                1,
                true,
            );
            conv(
                &mut p,
                &format!("{name}_branch2c"),
                &format!("{name}_branch2b"),
                width * 4,
                1,
                1,
                false,
            );
            let _ = writeln!(
                p,
                "layer {{ name: \"{name}\" type: \"Eltwise\" bottom: \"{shortcut}\" bottom: \"{name}_branch2c\" top: \"{name}\" }}\n\
                 layer {{ name: \"{name}_relu\" type: \"ReLU\" bottom: \"{name}\" top: \"{name}\" }}"
            );
            bottom = name;
        }
    }
    let _ = writeln!(
        p,
        "layer {{ name: \"pool5\" type: \"Pooling\" bottom: \"{bottom}\" top: \"pool5\" pooling_param {{ pool: AVE global_pooling: true }} }}\n\
         layer {{ name: \"fc1000\" type: \"InnerProduct\" bottom: \"pool5\" top: \"fc1000\" inner_product_param {{ num_output: 1000 }} }}\n\
         layer {{ name: \"prob\" type: \"Softmax\" bottom: \"fc1000\" top: \"prob\" }}"
    );
    p
}
