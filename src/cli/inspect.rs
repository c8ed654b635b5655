//! `int8cal inspect`: the TEST net as a readable table, or as one stable JSON document with `--json`.

use std::process::ExitCode;

use serde::Serialize;

use super::ModelArgs;
use crate::data::shapes::data_tops;
use crate::model::{Model, Net};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub files: ModelArgs,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Doc {
    name: String,
    batch_size: Option<usize>,
    layers: Vec<LayerDoc>,
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct LayerDoc {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    bottoms: Vec<String>,
    tops: Vec<String>,
    /// Known top shapes, in top order (JSON objects keep insertion order here).
    top_shapes: serde_json::Map<String, serde_json::Value>,
    /// Tops whose shape depends on the data: Caffe's initial shape is given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dynamic_tops: Vec<String>,
    /// Tops whose shape could not be inferred.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unknown_tops: Vec<String>,
    /// Number of weights: bound from the caffemodel, or expected from the parameters without one.
    params: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blobs: Vec<BlobDoc>,
}

#[derive(Debug, Serialize)]
struct BlobDoc {
    shape: Vec<usize>,
    min: f32,
    max: f32,
    mean: f32,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let model = Model::load(&args.files.model, args.files.weights.as_deref(), &data_tops)?;
    let doc = document(&model.net, model.weights.is_some());
    if args.json {
        super::emit(&(serde_json::to_string_pretty(&doc)? + "\n"))?;
    } else {
        super::emit(&table(&doc))?;
    }
    for w in &doc.warnings {
        eprintln!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

fn document(net: &Net, with_weights: bool) -> Doc {
    let layers = net
        .layers
        .iter()
        .enumerate()
        .map(|(id, l)| {
            let mut doc = LayerDoc {
                name: l.name.clone(),
                type_name: l.type_name.clone(),
                bottoms: l
                    .bottoms
                    .iter()
                    .map(|&v| net.values[v].name.clone())
                    .collect(),
                tops: l.tops.iter().map(|&v| net.values[v].name.clone()).collect(),
                top_shapes: serde_json::Map::new(),
                dynamic_tops: Vec::new(),
                unknown_tops: Vec::new(),
                params: 0,
                blobs: Vec::new(),
            };
            for &t in &l.tops {
                let v = &net.values[t];
                match &v.shape {
                    Some(s) => {
                        doc.top_shapes.insert(v.name.clone(), serde_json::json!(s));
                        if v.dynamic {
                            doc.dynamic_tops.push(v.name.clone());
                        }
                    }
                    None => doc.unknown_tops.push(v.name.clone()),
                }
            }
            if with_weights {
                doc.params = l.blobs.iter().map(|b| b.data.len()).sum();
                doc.blobs = l
                    .blobs
                    .iter()
                    .map(|b| {
                        let (min, max, mean) = b.stats();
                        BlobDoc {
                            shape: b.shape().to_vec(),
                            min,
                            max,
                            mean,
                        }
                    })
                    .collect();
            } else if let Ok(Some(expected)) = net.expected_blobs(id) {
                doc.params = expected
                    .required
                    .iter()
                    .map(|s| s.iter().product::<usize>())
                    .sum();
            }
            doc
        })
        .collect();
    Doc {
        name: net.name.clone(),
        batch_size: net.batch_size(),
        layers,
        warnings: net.warnings.clone(),
    }
}

fn dims(v: &serde_json::Value) -> String {
    match v.as_array() {
        Some(a) if a.is_empty() => "scalar".into(),
        Some(a) => a
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("x"),
        None => "?".into(),
    }
}

fn table(doc: &Doc) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "net: {}  ({} layers, batch {})",
        doc.name,
        doc.layers.len(),
        doc.batch_size.map_or("?".into(), |b| b.to_string())
    );
    let rows: Vec<[String; 4]> = doc
        .layers
        .iter()
        .map(|l| {
            let flow = format!("{} -> {}", l.bottoms.join(", "), l.tops.join(", "));
            let mut shapes: Vec<String> = l
                .tops
                .iter()
                .map(|t| match l.top_shapes.get(t) {
                    Some(s) if l.dynamic_tops.contains(t) => {
                        format!("{} (initial; set by the data)", dims(s))
                    }
                    Some(s) => dims(s),
                    None => "?".into(),
                })
                .collect();
            shapes.dedup();
            [l.name.clone(), l.type_name.clone(), flow, shapes.join(", ")]
        })
        .collect();
    let width = |i: usize, title: &str| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
            .max(title.len())
    };
    let w = [
        width(0, "layer"),
        width(1, "type"),
        width(2, "bottoms -> tops"),
        width(3, "top shapes"),
    ];
    let _ = writeln!(
        out,
        "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>10}",
        "layer",
        "type",
        "bottoms -> tops",
        "top shapes",
        "params",
        w0 = w[0],
        w1 = w[1],
        w2 = w[2],
        w3 = w[3]
    );
    for (r, l) in rows.iter().zip(&doc.layers) {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>10}",
            r[0],
            r[1],
            r[2],
            r[3],
            l.params,
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        );
        for (i, b) in l.blobs.iter().enumerate() {
            let shape = b
                .shape
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("x");
            let _ = writeln!(
                out,
                "{:w0$}    blob {i}: {shape:<16} min {:<12} max {:<12} mean {}",
                "",
                b.min,
                b.max,
                b.mean,
                w0 = w[0]
            );
        }
    }
    let total: usize = doc.layers.iter().map(|l| l.params).sum();
    let _ = writeln!(out, "total parameters: {total}");
    out
}
