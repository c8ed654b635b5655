//! AnnotatedData from a list of images and box files (SSD's `create_annoset` input) instead of an
//! LMDB: ssd_face_res10's own records written out as JPEG files and pixel boxes give the same data,
//! the same ground-truth rows (to float rounding) and the same mAP as the LMDB; bad box files name
//! the file and line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ops::ControlFlow;
use std::path::Path;

use int8cal::caffe::AnnotatedDatum;
use int8cal::engine::feed::DataFeed;
use int8cal::engine::session::NoObserver;
use int8cal::engine::{Plan, Session};
use prost::Message;

/// Writes every record of an AnnotatedDatum LMDB as `imgNN.jpg` + `imgNN.txt` and returns the list.
fn export_records(lmdb: &Path, dir: &Path) -> String {
    let mut list = String::new();
    let mut i = 0;
    int8cal::data::lmdb::with_records(lmdb, |_, value| {
        let a = AnnotatedDatum::decode(value).unwrap();
        let datum = a.datum.unwrap();
        assert!(datum.encoded(), "the fixture's records are JPEG-encoded");
        let (h, w, _) = int8cal::data::image::header_size(datum.data()).unwrap();
        let (h, w) = (h as f32, w as f32);
        let mut boxes = String::new();
        for g in &a.annotation_group {
            for an in &g.annotation {
                let b = an.bbox.unwrap();
                boxes += &format!(
                    "{} {:?} {:?} {:?} {:?} {}\n",
                    g.group_label(),
                    b.xmin() * w,
                    b.ymin() * h,
                    b.xmax() * w,
                    b.ymax() * h,
                    u8::from(b.difficult())
                );
            }
        }
        std::fs::write(dir.join(format!("img{i:02}.jpg")), datum.data()).unwrap();
        std::fs::write(dir.join(format!("img{i:02}.txt")), boxes).unwrap();
        list += &format!("img{i:02}.jpg img{i:02}.txt\n");
        i += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    list
}

/// Each pass's data and label tops.
type Tops = Vec<(Vec<f32>, Vec<f32>)>;

/// The data and label tops of each pass, and the mAP over `passes` images.
fn run(prototxt: &Path, passes: usize) -> (Tops, f64) {
    let model = common::load(prototxt, Some(&weights())).unwrap();
    let plan = Plan::new(&model.net, None).unwrap();
    let base = prototxt.parent().unwrap();
    let mut feed = DataFeed::start(&plan, base).unwrap();
    let mut session = Session::new(&plan);
    let tops = (0..passes)
        .map(|_| {
            session.forward(&mut feed, &mut NoObserver).unwrap();
            let data = session.blob("data").unwrap().iter().copied().collect();
            let label = session.blob("label").unwrap().iter().copied().collect();
            (data, label)
        })
        .collect();
    (tops, common::detection_map(&plan, base, passes))
}

fn weights() -> std::path::PathBuf {
    common::fixtures()
        .unwrap()
        .join("ssd_face_res10/weights.caffemodel")
}

#[test]
fn a_list_of_images_and_box_files_reads_as_the_lmdb_does() {
    let Some(fixtures) = common::fixtures() else {
        return;
    };
    let fx = fixtures.join("ssd_face_res10");
    let dir = common::scratch("annotated_list");
    let list = export_records(&fx.join("data/test_lmdb"), &dir);
    assert_eq!(list.lines().count(), 9);
    common::write(&dir, "list.txt", list);
    let text = std::fs::read_to_string(fx.join("test.prototxt")).unwrap();
    let lmdb = fx.join("data/test_lmdb");
    let from_db = text.replace(
        "\"data/test_lmdb\"",
        &format!("{:?}", lmdb.display().to_string()),
    );
    let from_list = text.replace("\"data/test_lmdb\"", "\"list.txt\"");
    assert_ne!(from_list, text);
    let db_net = common::write(&dir, "db.prototxt", from_db);
    let list_net = common::write(&dir, "list.prototxt", from_list);
    let (a, map_db) = run(&db_net, 9);
    let (b, map_list) = run(&list_net, 9);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(x.0 == y.0, "pixels of image {i} differ");
        assert_eq!(x.1.len(), y.1.len(), "label rows of image {i}");
        let worst =
            x.1.iter()
                .zip(&y.1)
                .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(worst <= 1e-6, "image {i}: label rows differ by {worst}");
    }
    assert_eq!(map_db, map_list);
    assert!((map_db - 1.0).abs() < 1e-6, "{map_db}");
}

#[test]
fn a_box_outside_its_image_names_the_box_file_and_line() {
    let Some(fixtures) = common::fixtures() else {
        return;
    };
    let fx = fixtures.join("ssd_face_res10");
    let dir = common::scratch("annotated_list_bad");
    let list = export_records(&fx.join("data/test_lmdb"), &dir);
    common::write(&dir, "list.txt", list);
    // The first image's box file gets a box running past the right edge on its second line.
    let first = dir.join("img00.txt");
    let mut boxes = std::fs::read_to_string(&first).unwrap();
    boxes += "1 10 10 100000 20\n";
    std::fs::write(&first, boxes.clone()).unwrap();
    let line = boxes.lines().count();
    let text = std::fs::read_to_string(fx.join("test.prototxt")).unwrap();
    let net = common::write(
        &dir,
        "list.prototxt",
        text.replace("\"data/test_lmdb\"", "\"list.txt\""),
    );
    let model = common::load(&net, Some(&weights())).unwrap();
    let plan = Plan::new(&model.net, None).unwrap();
    let mut feed = DataFeed::start(&plan, &dir).unwrap();
    let e = Session::new(&plan)
        .forward(&mut feed, &mut NoObserver)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("img00.txt:{line}: box")) && e.contains("not inside"),
        "{e}"
    );
}
