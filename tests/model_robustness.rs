//! Thousands of seeded random mutations (byte flips, truncations, duplicated and deleted lines or chunks)
//! of every fixture's prototxts and caffemodel go through the readers, the net builder, shape inference
//! and weight binding without a panic. The counts are fixed, so the run time is bounded.

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use int8cal::data::shapes::data_tops;
use int8cal::model::{Net, Prototxt, caffemodel};

/// xorshift64*: a tiny deterministic generator, so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random mutation of a byte string; `lines` mutates whole lines (text), otherwise chunks (binary).
fn mutate(rng: &mut Rng, src: &[u8], lines: bool) -> Vec<u8> {
    let mut out = src.to_vec();
    match rng.below(4) {
        0 => {
            for _ in 0..=rng.below(8) {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
        }
        1 => out.truncate(rng.below(out.len())),
        kind => {
            // A line (text) or a chunk of up to 64 bytes (binary), duplicated or deleted.
            let start = rng.below(out.len());
            let end = if lines {
                let s = out[..start]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let e = out[start..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(out.len(), |i| start + i + 1);
                return splice(out, s, e, kind == 2);
            } else {
                (start + 1 + rng.below(64)).min(out.len())
            };
            return splice(out, start, end, kind == 2);
        }
    }
    out
}

fn splice(mut v: Vec<u8>, s: usize, e: usize, duplicate: bool) -> Vec<u8> {
    let piece: Vec<u8> = v[s..e].to_vec();
    if duplicate {
        v.splice(e..e, piece);
    } else {
        v.drain(s..e);
    }
    v
}

/// Reads a mutated prototxt all the way to shapes; errors are fine, panics are not.
fn load_text(bytes: Vec<u8>, path: &Path) {
    let Ok(proto) = Prototxt::from_bytes(bytes, path) else {
        return;
    };
    let (param, locations) = proto.upgraded();
    let Ok(mut net) = Net::build(&param, &locations, "mutated") else {
        return;
    };
    let base = path.parent().unwrap();
    let _ = net.infer_shapes(&|l| data_tops(l, base));
}

#[test]
fn mutated_prototxts_never_panic() {
    let mut total = 0;
    for dir in common::fixture_dirs() {
        for name in ["deploy.prototxt", "test.prototxt"] {
            let path = dir.join(name);
            let src = std::fs::read(&path).unwrap();
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ src.len() as u64);
            for _ in 0..300 {
                load_text(mutate(&mut rng, &src, true), &path);
                total += 1;
            }
        }
    }
    // The project's own nets too, so a clone without fixtures still runs this.
    let own = [
        common::SMALL_NET.as_bytes().to_vec(),
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lenet_v1.prototxt"))
            .unwrap(),
    ];
    for src in own {
        let mut rng = Rng(42);
        for _ in 0..1000 {
            load_text(mutate(&mut rng, &src, true), Path::new("own.prototxt"));
            total += 1;
        }
    }
    eprintln!("{total} mutated prototxts read without a panic");
}

#[test]
fn mutated_caffemodels_never_panic() {
    let mut total = 0;
    for dir in common::fixture_dirs() {
        let src = std::fs::read(dir.join("weights.caffemodel")).unwrap();
        let proto = Prototxt::read(&dir.join("deploy.prototxt")).unwrap();
        let (param, locations) = proto.upgraded();
        let mut net = Net::build(&param, &locations, "deploy").unwrap();
        net.infer_shapes(&|l| data_tops(l, &dir)).unwrap();
        let mut rng = Rng(0x5851_f42d_4c95_7f2d ^ src.len() as u64);
        // Large models get fewer mutations: each one copies and decodes megabytes.
        let n = if src.len() > 4 << 20 { 60 } else { 400 };
        for _ in 0..n {
            let bytes = mutate(&mut rng, &src, false);
            if let Ok(w) = caffemodel::decode(&bytes, Path::new("mutated.caffemodel")) {
                let _ = net.clone().bind_weights(&w);
            }
            total += 1;
        }
    }
    eprintln!("{total} mutated caffemodels read without a panic");
}
