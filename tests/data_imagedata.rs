//! ImageData layers: a list of the SqueezeNet fixture's own JPEG records gives the same batches (pixels
//! and labels, wrapping around) as the Data layer over the LMDB; bad lists and images get errors that
//! name the list line and the file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ops::ControlFlow;
use std::path::Path;

use int8cal::caffe::Datum;
use int8cal::engine::feed::DataFeed;
use int8cal::engine::session::NoObserver;
use int8cal::engine::{Plan, Session};
use prost::Message;

const TRANSFORM: &str =
    "transform_param { crop_size: 227 mean_value: 104 mean_value: 117 mean_value: 123 }";

/// A net of one data layer (given as text) and a layer that reads its tops.
fn net(data_layer: &str) -> String {
    format!(
        r#"name: "images"
{data_layer}
layer {{ name: "p" type: "Power" bottom: "data" top: "p" }}
layer {{ name: "s" type: "Silence" bottom: "label" }}
"#
    )
}

/// Writes the first `n` records of an LMDB of encoded Datum as JPEG files, with a list `name label`.
fn export_records(lmdb: &Path, dir: &Path, n: usize) -> String {
    let mut list = String::new();
    let mut i = 0;
    int8cal::data::lmdb::with_records(lmdb, |_, value| {
        let datum = Datum::decode(value).unwrap();
        assert!(datum.encoded(), "the fixture's records are JPEG-encoded");
        let name = format!("img{i:02}.jpg");
        std::fs::write(dir.join("images").join(&name), datum.data()).unwrap();
        list += &format!("images/{name} {}\n", datum.label());
        i += 1;
        if i == n {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    list
}

/// The data and label tops of `passes` forward passes of a net file.
fn batches(prototxt: &Path, passes: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    let model = common::load(prototxt, None).unwrap();
    let plan = Plan::new(&model.net, None).unwrap();
    let mut feed = DataFeed::start(&plan, prototxt.parent().unwrap()).unwrap();
    let mut session = Session::new(&plan);
    (0..passes)
        .map(|_| {
            session.forward(&mut feed, &mut NoObserver).unwrap();
            let data = session.blob("data").unwrap().iter().copied().collect();
            let label = session.blob("label").unwrap().iter().copied().collect();
            (data, label)
        })
        .collect()
}

#[test]
fn an_image_list_reads_the_same_pixels_as_the_lmdb_of_those_images() {
    let Some(fixtures) = common::fixtures() else {
        return;
    };
    let lmdb = fixtures.join("squeezenet_v1.0_dc/data/test_lmdb");
    let dir = common::scratch("imagedata_same");
    std::fs::create_dir_all(dir.join("images")).unwrap();
    // 10 images in batches of 4: the third batch wraps around to the first two.
    let list = export_records(&lmdb, &dir, 10);
    common::write(&dir, "list.txt", list);
    let list_net = common::write(
        &dir,
        "list.prototxt",
        net(&format!(
            r#"layer {{ name: "data" type: "ImageData" top: "data" top: "label"
  {TRANSFORM}
  image_data_param {{ source: "list.txt" batch_size: 4 }} }}"#
        )),
    );
    // The same 10 records as an LMDB, so both readers wrap at the same place.
    let subset = dir.join("subset_lmdb");
    int8cal::data::lmdb::write_subset(&lmdb, &subset, 10).unwrap();
    let db_net = common::write(
        &dir,
        "db.prototxt",
        net(&format!(
            r#"layer {{ name: "data" type: "Data" top: "data" top: "label"
  {TRANSFORM}
  data_param {{ source: "subset_lmdb" batch_size: 4 backend: LMDB }} }}"#
        )),
    );
    let from_list = batches(&list_net, 3);
    let from_db = batches(&db_net, 3);
    assert_eq!(from_list.len(), 3);
    for (i, (a, b)) in from_list.iter().zip(&from_db).enumerate() {
        assert_eq!(a.1, b.1, "labels of batch {i}");
        assert!(a.0 == b.0, "pixels of batch {i} differ");
    }
    // The wrap: the third batch starts with images 8, 9 and goes on with 0, 1.
    assert_eq!(from_list[2].1[2..], from_list[0].1[..2]);
}

#[test]
fn bad_lists_and_images_name_the_line_and_the_file() {
    let dir = common::scratch("imagedata_bad");
    std::fs::create_dir_all(dir.join("images")).unwrap();
    // A valid PNG for the shape, then an image that is not one.
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, 4, 3);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[7u8; 36]).unwrap();
    }
    common::write(&dir.join("images"), "ok.png", &png_bytes);
    common::write(&dir.join("images"), "broken.jpg", b"\xff\xd8 not a jpeg");
    let layer = |source: &str| {
        net(&format!(
            r#"layer {{ name: "data" type: "ImageData" top: "data" top: "label"
  image_data_param {{ source: "{source}" batch_size: 2 root_folder: "images/" new_height: 6 new_width: 5 }} }}"#
        ))
    };
    let first_error = |list: &str, name: &str| -> String {
        common::write(&dir, &format!("{name}.txt"), list);
        let prototxt = common::write(
            &dir,
            &format!("{name}.prototxt"),
            layer(&format!("{name}.txt")),
        );
        let model = common::load(&prototxt, None).unwrap();
        let plan = match Plan::new(&model.net, None) {
            Ok(p) => p,
            Err(e) => return e.to_string(),
        };
        let mut feed = match DataFeed::start(&plan, &dir) {
            Ok(f) => f,
            Err(e) => return e,
        };
        let mut session = Session::new(&plan);
        match session.forward(&mut feed, &mut NoObserver) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    // A good list runs, with the resize to 6×5 applied.
    assert_eq!(first_error("ok.png 1\nok.png 2\n", "good"), "");
    let no_label = first_error("ok.png 1\nok.png\n", "no_label");
    assert!(
        no_label.contains("no_label.txt:2") && no_label.contains("no label"),
        "{no_label}"
    );
    let missing = first_error("ok.png 1\nmissing.png 0\n", "missing");
    assert!(
        missing.contains("missing.txt:2") && missing.contains("missing.png"),
        "{missing}"
    );
    let broken = first_error("ok.png 1\nbroken.jpg 0\n", "broken");
    assert!(
        broken.contains("broken.txt:2") && broken.contains("broken.jpg"),
        "{broken}"
    );
    let no_list = first_error("", "empty");
    assert!(no_list.contains("empty"), "{no_list}");
}
