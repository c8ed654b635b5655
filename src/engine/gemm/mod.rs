//! The matrix products. Convolutions and Deconvolutions multiply f32 weights packed once per plan
//! (`PackedA`, 8-row panels) by columns read in place (`Rows`) with our own micro-kernels (`kernels`):
//! with a few dozen output channels and a few hundred columns per image, packing both sides per call (as
//! a general GEMM does) cost as much as the products. InnerProduct takes row dot products (`row_dots`,
//! no packing) on AVX-512 and ndarray's `general_mat_mul` (matrixmultiply) elsewhere; the `gemm` and
//! `rten-gemm` crates were measured and were no faster on the fixtures. `int8` holds the u8 × s8 product,
//! `requant` the vectorized requantization of its sums.

pub mod int8;
mod kernels;
pub mod requant;

use std::sync::LazyLock;

use ndarray::{ArrayView2, ArrayViewMut2};

pub use kernels::Isa;
use kernels::{DOT, Finish, MR};
use ndarray::Axis;
use rayon::prelude::*;

/// Depth per block: a strip of b (KC × 32 floats, 16 KB) and a weight panel (KC × 8) fit in L1.
const KC: usize = 128;

/// The instruction set of this CPU, detected once.
static ISA: LazyLock<Isa> = LazyLock::new(Isa::detect);

/// An m×k row-major matrix in panels of `MR` rows (the last one zero-padded): panel r holds, for each
/// depth p, the MR values a[r·MR + i][p] side by side, so a kernel reads them as one contiguous run.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedA {
    rows: usize,
    depth: usize,
    data: Vec<f32>,
    /// A bias per row, zero-padded to whole panels, added as the products are stored.
    bias: Option<Vec<f32>>,
}

impl PackedA {
    pub fn new(a: &[f32], rows: usize, depth: usize) -> Self {
        let panels = rows.div_ceil(MR);
        let mut data = vec![0.0; panels * depth * MR];
        for (r, panel) in data.chunks_mut((depth * MR).max(1)).enumerate() {
            for i in 0..MR.min(rows - r * MR) {
                let row = &a[(r * MR + i) * depth..(r * MR + i + 1) * depth];
                for (p, &v) in row.iter().enumerate() {
                    panel[p * MR + i] = v;
                }
            }
        }
        Self {
            rows,
            depth,
            data,
            bias: None,
        }
    }

    /// The same matrix with a bias per row, which the product adds before storing.
    pub fn with_bias(mut self, bias: &[f32]) -> Self {
        let mut padded = bias[..self.rows].to_vec();
        padded.resize(self.rows.div_ceil(MR) * MR, 0.0);
        self.bias = Some(padded);
        self
    }

    pub fn has_bias(&self) -> bool {
        self.bias.is_some()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn depth(&self) -> usize {
        self.depth
    }
}

/// The rows of a k×n right-hand matrix, row p starting at `data[starts[p]]` with its n columns
/// contiguous. Rows a fixed stride apart are an unrolled-columns matrix; rows at shifted offsets of a
/// padded image are the same matrix without unrolling it (a stride-1 convolution).
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    data: &'a [f32],
    starts: &'a [usize],
    /// The largest start, so a kernel checks its bounds once per call.
    max_start: usize,
}

impl<'a> Rows<'a> {
    pub fn new(data: &'a [f32], starts: &'a [usize]) -> Self {
        let max_start = starts.iter().copied().max().unwrap_or(0);
        Self {
            data,
            starts,
            max_start,
        }
    }

    pub fn depth(&self) -> usize {
        self.starts.len()
    }
}

/// Reused buffers: row starts of a strided matrix, and for the ragged edges the last columns copied
/// to a full strip and one full output block.
#[derive(Debug, Default)]
pub struct Scratch {
    starts: Vec<usize>,
    edge: Edge,
}

#[derive(Debug, Default)]
struct Edge {
    b: Vec<f32>,
    starts: Vec<usize>,
    c: Vec<f32>,
}

/// `c = a × b` (+ the bias of `a`, then ReLU when `relu`) with `b` k×n (row stride `ldb`) and `c` m×n
/// (row stride `ldc`), overwritten.
pub fn gemm_strided(
    a: &PackedA,
    b: &[f32],
    (n, ldb): (usize, usize),
    (c, ldc): (&mut [f32], usize),
    relu: bool,
    scratch: &mut Scratch,
) {
    scratch.starts.clear();
    scratch.starts.extend((0..a.depth).map(|p| p * ldb));
    let rows = Rows::new(b, &scratch.starts);
    gemm_packed_with(*ISA, a, &rows, n, (c, ldc), relu, &mut scratch.edge);
}

/// `gemm_strided` for `b` given by its rows.
pub fn gemm_rows(
    a: &PackedA,
    b: &Rows,
    n: usize,
    (c, ldc): (&mut [f32], usize),
    relu: bool,
    scratch: &mut Scratch,
) {
    gemm_packed_with(*ISA, a, b, n, (c, ldc), relu, &mut scratch.edge);
}

/// The product with a given instruction set (tests compare every set the CPU has).
fn gemm_packed_with(
    isa: Isa,
    a: &PackedA,
    b: &Rows,
    n: usize,
    (c, ldc): (&mut [f32], usize),
    relu: bool,
    edge: &mut Edge,
) {
    let (m, k) = (a.rows, a.depth);
    if b.depth() != k {
        unreachable!("gemm: {k} rows of weights against {} rows", b.depth());
    }
    if k == 0 {
        for i in 0..m {
            let v = a.bias.as_ref().map_or(0.0, |b| b[i]);
            c[i * ldc..i * ldc + n].fill(if relu && v < 0.0 { 0.0 } else { v });
        }
        return;
    }
    // Blocks of depth, so that one strip of b (KC rows) and one weight panel stay in L1 together.
    for p0 in (0..k).step_by(KC) {
        let depth = KC.min(k - p0);
        let block = Rows::new(b.data, &b.starts[p0..p0 + depth]);
        let panels = a.data.chunks(k * MR).enumerate().map(|(r, panel)| {
            let last = p0 + depth == k;
            let finish = Finish {
                add: p0 > 0,
                bias: a.bias.as_ref().filter(|_| last).map(|b| &b[r * MR..]),
                relu: relu && last,
            };
            (&panel[p0 * MR..(p0 + depth) * MR], finish)
        });
        multiply_block(isa, (m, panels), &block, n, (c, ldc), edge);
    }
}

/// One block of depth of the product (`m` rows of weights in panels, each with what to do when
/// storing), written to `c` or added to it.
fn multiply_block<'p>(
    isa: Isa,
    (m, panels): (usize, impl Iterator<Item = (&'p [f32], Finish<'p>)> + Clone),
    b: &Rows,
    n: usize,
    (c, ldc): (&mut [f32], usize),
    edge: &mut Edge,
) {
    let (k, nr) = (b.depth(), isa.nr());
    edge.c.resize(MR * nr, 0.0);
    if edge.starts.len() != k {
        edge.starts.clear();
        edge.starts.extend((0..k).map(|p| p * nr));
    }
    // Strips of nr columns outermost: one strip of b stays in L1 while every weight panel passes over it.
    for j0 in (0..n).step_by(nr) {
        let cols = nr.min(n - j0);
        let (strip, col0) = if cols == nr {
            (*b, j0)
        } else {
            edge.b.clear();
            for &s in b.starts {
                edge.b.extend_from_slice(&b.data[s + j0..s + j0 + cols]);
                edge.b.resize(edge.b.len() + nr - cols, 0.0);
            }
            (Rows::new(&edge.b, &edge.starts), 0)
        };
        for (r, (panel, finish)) in panels.clone().enumerate() {
            let i0 = r * MR;
            let rows = MR.min(m - i0);
            if rows == MR && cols == nr {
                kernels::run(
                    isa,
                    panel,
                    &strip,
                    col0,
                    &mut c[i0 * ldc + j0..],
                    ldc,
                    finish,
                );
                continue;
            }
            // A ragged block goes through a full one.
            for i in (0..rows).filter(|_| finish.add) {
                let src = &c[(i0 + i) * ldc + j0..(i0 + i) * ldc + j0 + cols];
                edge.c[i * nr..i * nr + cols].copy_from_slice(src);
            }
            kernels::run(isa, panel, &strip, col0, &mut edge.c, nr, finish);
            for i in 0..rows {
                let dst = &mut c[(i0 + i) * ldc + j0..(i0 + i) * ldc + j0 + cols];
                dst.copy_from_slice(&edge.c[i * nr..i * nr + cols]);
            }
        }
    }
}

/// Whether `row_dots` runs its vector kernel on this CPU (otherwise a general GEMM is faster).
pub fn has_dot_kernel() -> bool {
    *ISA == Isa::Avx512
}

/// `out[i][j] = x[i] · w[j]` for the m rows of `x` and the n rows of `w` (each of length k), `out` m×n:
/// InnerProduct without packing its weights. Blocks of weight rows run in parallel.
pub fn row_dots(x: &[f32], [m, k]: [usize; 2], w: &[f32], n: usize, out: &mut [f32]) {
    if x.len() != m * k || w.len() < n * k || out.len() != m * n {
        unreachable!("row_dots called with slices that do not match {m}x{k}x{n}");
    }
    let Ok(mut ov) = ArrayViewMut2::from_shape((m, n), out) else {
        return;
    };
    let block = n.div_ceil(rayon::current_num_threads() * 4).max(DOT);
    let block = block.next_multiple_of(DOT);
    ov.axis_chunks_iter_mut(Axis(1), block)
        .into_par_iter()
        .enumerate()
        .for_each(|(b, mut o)| {
            let mut tile = [[0.0f32; DOT]; DOT];
            let cols = o.ncols();
            for j0 in (0..cols).step_by(DOT) {
                // Rows past the end repeat the last one; their products are not stored.
                let wr = std::array::from_fn(|t| {
                    let j = b * block + (j0 + t).min(cols - 1);
                    &w[j * k..(j + 1) * k]
                });
                for i0 in (0..m).step_by(DOT) {
                    let xr = std::array::from_fn(|t| {
                        let i = (i0 + t).min(m - 1);
                        &x[i * k..(i + 1) * k]
                    });
                    kernels::dots(*ISA, xr, wr, &mut tile);
                    for (i, row) in tile.iter().enumerate().take(m - i0) {
                        for (j, &v) in row.iter().enumerate().take(cols - j0) {
                            o[[i0 + i, j0 + j]] = v;
                        }
                    }
                }
            }
        });
}

/// `c = a × b` (row-major slices), with `a` m×k, `b` k×n, `c` m×n; `accumulate` adds to `c`.
pub fn sgemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool) {
    let (Ok(a), Ok(b), Ok(mut c)) = (
        ArrayView2::from_shape((m, k), a),
        ArrayView2::from_shape((k, n), b),
        ArrayViewMut2::from_shape((m, n), c),
    ) else {
        unreachable!("sgemm called with slices that do not match {m}x{k}x{n}");
    };
    ndarray::linalg::general_mat_mul(1.0, &a, &b, if accumulate { 1.0 } else { 0.0 }, &mut c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_a_naive_loop() {
        let (m, k, n) = (3, 4, 5);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32).sin()).collect();
        let mut c = vec![0.0; m * n];
        sgemm(m, k, n, &a, &b, &mut c, false);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert!((c[i * n + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn packed_products_match_a_naive_loop_on_every_instruction_set() {
        let isas = [Isa::Avx512, Isa::Avx2Fma, Isa::Portable];
        // Awkward sizes: rows not a multiple of 8, columns not a multiple of any strip width, a row
        // stride wider than the columns used, a depth of one, depths over one block (KC) with ragged
        // edges in the later blocks.
        for (m, k, n, ldb) in [
            (1, 1, 1, 1),
            (17, 300, 70, 71),
            (8, 2 * KC, 64, 64),
            (8, 9, 32, 32),
            (13, 27, 45, 50),
            (20, 25, 576, 576),
            (3, 300, 7, 9),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.0)
                .collect();
            let b: Vec<f32> = (0..k * ldb)
                .map(|i| ((i * 104729) % 97) as f32 / 40.0 - 1.2)
                .collect();
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.7 - 3.0).collect();
            // Plain products, then with the bias and ReLU applied as the blocks are stored.
            for (packed, relu) in [
                (PackedA::new(&a, m, k), false),
                (PackedA::new(&a, m, k).with_bias(&bias), true),
            ] {
                for isa in isas.into_iter().filter(|i| i.available()) {
                    let ldc = n + 3;
                    let mut c = vec![f32::NAN; m * ldc];
                    let starts: Vec<usize> = (0..k).map(|p| p * ldb).collect();
                    let rows = Rows::new(&b, &starts);
                    let out = (&mut c[..], ldc);
                    gemm_packed_with(isa, &packed, &rows, n, out, relu, &mut Edge::default());
                    check(&c, ldc, isa, (m, k, n), |i, j| {
                        let sum: f32 = (0..k).map(|p| a[i * k + p] * b[p * ldb + j]).sum();
                        if relu { (sum + bias[i]).max(0.0) } else { sum }
                    });
                }
            }
        }
    }

    #[test]
    fn dot_tiles_match_a_naive_loop_on_every_instruction_set() {
        // Lengths below, at and past one vector of 16, with a ragged end.
        for k in [1, 15, 16, 33, 800] {
            let row = |seed: usize| -> Vec<f32> {
                (0..k)
                    .map(|i| ((i * 31 + seed * 17) % 23) as f32 / 7.0 - 1.5)
                    .collect()
            };
            let xs: Vec<Vec<f32>> = (0..DOT).map(row).collect();
            let ws: Vec<Vec<f32>> = (DOT..2 * DOT).map(row).collect();
            for isa in [Isa::Avx512, Isa::Portable]
                .into_iter()
                .filter(|i| i.available())
            {
                let mut out = [[f32::NAN; DOT]; DOT];
                let x = std::array::from_fn(|i| &xs[i][..]);
                let w = std::array::from_fn(|j| &ws[j][..]);
                kernels::dots(isa, x, w, &mut out);
                for i in 0..DOT {
                    for j in 0..DOT {
                        let want: f32 = xs[i].iter().zip(&ws[j]).map(|(a, b)| a * b).sum();
                        let got = out[i][j];
                        assert!(
                            (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                            "{isa:?} k {k}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// Compares an m×n result (row stride `ldc`) with `want`, and checks the gap between rows is untouched.
    fn check(
        c: &[f32],
        ldc: usize,
        isa: Isa,
        (m, k, n): (usize, usize, usize),
        want: impl Fn(usize, usize) -> f32,
    ) {
        for i in 0..m {
            for j in 0..n {
                let want = want(i, j);
                let got = c[i * ldc + j];
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "{isa:?} {m}x{k}x{n} at {i},{j}: {got} vs {want}"
                );
            }
            // The gap between rows is left alone.
            assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|v| v.is_nan()));
        }
    }
}
