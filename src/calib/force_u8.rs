//! `-fu` / `--first_conv_force_u8` (spec §2.12, §4.6): the first convolution reads u8 codes the data
//! layer prepares, (pixel − mean)·scale·s + 128 rounded, so no signed reorder is needed. Its
//! preconditions are checked before any work. The 128/s shift every input tap now carries is taken
//! out of the convolution's bias — or, when it has none, out of the BatchNorm that follows it (its mean
//! grows by the same amount), so that the prototxt keeps its layers and Intel Caffe folds the new
//! weights exactly as it folds the old ones. Writes `<weights stem>_new.caffemodel` and
//! `<quantized stem>_force_u8.prototxt` beside the quantized prototxt.

use std::path::{Path, PathBuf};

use super::tune::Table;
use crate::model::caffemodel::{BlobEdit, write_edited};
use crate::model::export::{FieldEdit, QuantTable, edited_text, same_file, write_atomic};
use crate::model::layer::LayerKind;
use crate::model::prototxt::print::format_f32;
use crate::model::{LayerId, Net, Prototxt};

/// Where the u8 shift is taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    /// The convolution's own bias (blob 1).
    Bias,
    /// The mean of this BatchNorm reading the convolution's output.
    BatchNorm(LayerId),
}

/// The layers `-fu` rewrites, checked.
#[derive(Debug, Clone)]
pub struct ForceU8 {
    pub conv: LayerId,
    pub data: LayerId,
    carrier: Carrier,
}

/// The two files written.
#[derive(Debug, Clone)]
pub struct ForceU8Files {
    pub prototxt: PathBuf,
    pub weights: PathBuf,
}

impl ForceU8 {
    /// Finds the first Convolution and the last `Data` layer before it, and checks what Intel's
    /// tool needs (three mean values and no mean file, an explicit `pad`, a bias or a BatchNorm).
    pub fn check(net: &Net) -> Result<Self, String> {
        let conv = (0..net.layers.len())
            .find(|&id| matches!(net.layers[id].kind, LayerKind::Convolution(_)))
            .ok_or("-fu: the net has no Convolution")?;
        let c = &net.layers[conv];
        let data = (0..conv)
            .rev()
            .find(|&id| net.layers[id].type_name == "Data")
            .ok_or_else(|| {
                format!(
                    "-fu: no layer of type Data before the first convolution '{}' (Intel's tool needs one that decodes images)",
                    c.name
                )
            })?;
        let d = &net.layers[data];
        let t = d.proto.transform_param.clone().unwrap_or_default();
        if t.mean_file.is_some() || t.mean_value.len() < 3 {
            return Err(format!(
                "-fu: data layer '{}' needs three mean_value entries (it has {}{}); Intel's tool shifts each channel's mean",
                d.name,
                t.mean_value.len(),
                if t.mean_file.is_some() {
                    " and a mean_file"
                } else {
                    ""
                }
            ));
        }
        let explicit_pad = c
            .proto
            .convolution_param
            .as_ref()
            .is_some_and(|p| !p.pad.is_empty());
        if !explicit_pad {
            return Err(format!(
                "-fu: the first convolution '{}' needs an explicit pad (it moves to the data layer)",
                c.name
            ));
        }
        let carrier = if c.blobs.len() >= 2 {
            Carrier::Bias
        } else {
            let top = c.tops.first().copied();
            let bn = (conv + 1..net.layers.len()).find(|&id| {
                net.layers[id].type_name == "BatchNorm"
                    && net.layers[id].bottoms.first().copied() == top
            });
            match bn {
                Some(bn) if net.layers[bn].blobs.len() >= 3 => Carrier::BatchNorm(bn),
                _ => {
                    return Err(format!(
                        "-fu: the first convolution '{}' has no bias and no BatchNorm after it to take the u8 shift",
                        c.name
                    ));
                }
            }
        };
        Ok(Self {
            conv,
            data,
            carrier,
        })
    }

    /// Writes the two files for the final table and the quantized prototxt at `quantized`.
    pub fn write(
        &self,
        net: &Net,
        table: &Table,
        quantized: &Path,
        weights: &Path,
        clx: bool,
    ) -> Result<ForceU8Files, String> {
        let c = &net.layers[self.conv];
        let q = table
            .get(&c.name)
            .ok_or_else(|| format!("-fu: the first convolution '{}' is not quantized", c.name))?;
        let s = f64::from(q.scale_in.first().copied().unwrap_or(0.0));
        if !(s.is_finite() && s > 0.0) {
            return Err(format!("-fu: '{}' has input scale {s}", c.name));
        }
        let folder = quantized
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let stem = |p: &Path| {
            p.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        };
        let files = ForceU8Files {
            prototxt: folder.join(format!("{}_force_u8.prototxt", stem(quantized))),
            weights: folder.join(format!("{}_new.caffemodel", stem(weights))),
        };
        for f in [&files.prototxt, &files.weights] {
            if same_file(f, weights) || same_file(f, quantized) {
                return Err(format!("-fu: {} would overwrite an input", f.display()));
            }
        }
        write_edited(weights, &files.weights, &[self.shift(net, s)?]).map_err(|e| e.to_string())?;
        let proto = Prototxt::read(quantized).map_err(|e| e.to_string())?;
        let mut block = q.clone();
        block.is_negative_input = Some(false);
        block.force_u8_input = Some(true);
        if !clx {
            // Intel halves the first convolution's weight scales (7-bit weights) unless -clx.
            block.scale_params.iter_mut().for_each(|w| *w *= 0.5);
        }
        let blocks = QuantTable::from([(c.name.clone(), Some(block))]);
        let text =
            edited_text(&proto, &blocks, &self.field_edits(net, s)).map_err(|e| e.to_string())?;
        write_atomic(&files.prototxt, text.as_bytes()).map_err(|e| e.to_string())?;
        Ok(files)
    }

    /// The blob edit taking (128/s)·Σ W[o] out of each output channel o.
    fn shift(&self, net: &Net, s: f64) -> Result<BlobEdit, String> {
        let c = &net.layers[self.conv];
        let w = c
            .blobs
            .first()
            .ok_or("-fu: the first convolution has no weights")?;
        let outputs = w.data.shape().first().copied().unwrap_or(0).max(1);
        let per = w.data.len() / outputs;
        let flat: Vec<f32> = w.data.iter().copied().collect();
        let delta: Vec<f64> = flat
            .chunks(per.max(1))
            .map(|ch| 128.0 / s * ch.iter().map(|&x| f64::from(x)).sum::<f64>())
            .collect();
        Ok(match self.carrier {
            Carrier::Bias => BlobEdit {
                layer: c.name.clone(),
                blob: 1,
                values: c.blobs[1]
                    .data
                    .iter()
                    .zip(&delta)
                    .map(|(&b, d)| (f64::from(b) - d) as f32)
                    .collect(),
            },
            Carrier::BatchNorm(bn) => {
                let l = &net.layers[bn];
                // Caffe's BatchNorm mean is blob 0 divided by the moving-average factor (blob 2).
                let factor = f64::from(l.blobs[2].data.iter().next().copied().unwrap_or(0.0));
                if factor == 0.0 {
                    return Err(format!(
                        "-fu: BatchNorm '{}' has a zero moving-average factor, its mean cannot move",
                        l.name
                    ));
                }
                BlobEdit {
                    layer: l.name.clone(),
                    blob: 0,
                    values: l.blobs[0]
                        .data
                        .iter()
                        .zip(&delta)
                        .map(|(&m, d)| ((f64::from(m) / factor + d) * factor) as f32)
                        .collect(),
                }
            }
        })
    }

    /// The conv's pad moves to the data layer, whose transform now yields u8 codes.
    fn field_edits(&self, net: &Net, s: f64) -> Vec<FieldEdit> {
        let c = &net.layers[self.conv];
        let d = &net.layers[self.data];
        let pads = c
            .proto
            .convolution_param
            .as_ref()
            .map(|p| p.pad.clone())
            .unwrap_or_default();
        let t = d.proto.transform_param.clone().unwrap_or_default();
        let scale = s * f64::from(t.scale());
        let f = |x: f64| format_f32(x as f32);
        let mut conv_pads: Vec<String> = pads.iter().map(u32::to_string).collect();
        conv_pads[0] = "0".into();
        let edit = |layer: &str, param, key, values| FieldEdit {
            layer: layer.to_string(),
            param,
            key,
            values,
        };
        vec![
            edit(&c.name, "convolution_param", "pad", conv_pads),
            edit(&d.name, "transform_param", "scale", vec![f(scale)]),
            edit(
                &d.name,
                "transform_param",
                "mean_value",
                t.mean_value
                    .iter()
                    .map(|&m| f(f64::from(m) - 128.0 / scale))
                    .collect(),
            ),
            edit(&d.name, "transform_param", "pad", vec![pads[0].to_string()]),
        ]
    }
}
