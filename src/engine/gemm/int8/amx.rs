//! The product on channel quads (`Quads`) with Intel AMX, where the CPU has it and Linux lets the
//! process use it: `tdpbsud` multiplies a 16-row tile of s8 weights (16 output channels × up to 16
//! depth groups of 4) by a tile of u8 activations whose rows are depth groups of 16 columns (one
//! channel quad's 64 bytes, the very rows `Quads` holds, a quad apart), into a 16 × 16 tile of exact
//! int32 sums: up to 16 384 products an instruction, against 64 for a `vpdpbusd` (measured here: 18 ns
//! for a tile of 16 quads, 6 ns for one of 4). The sums are then requantized and stored by the VNNI
//! kernel's epilogue, so the outputs are the same integers; the epilogue of one block runs while
//! the tile unit computes the next.
//!
//! The tile registers are not known to the compiler; they are used only inside `kernel`, which
//! configures them on entry and releases them on return.
#![allow(unsafe_code)]

use std::sync::LazyLock;

use super::{GridRows, Quads, Requantized, StripRuns};
use crate::engine::gemm::requant::RowParams;

/// Output channels and columns of a tile of sums.
const TILE: usize = 16;

/// Whether AMX runs here: the CPU has AMX-TILE and AMX-INT8, and the kernel granted the process the
/// tile data state (Linux asks each process to request it). `INT8CAL_NO_AMX` set to anything but
/// empty keeps the VNNI kernel (to compare the two).
pub static AVAILABLE: LazyLock<bool> = LazyLock::new(|| {
    let off = std::env::var_os("INT8CAL_NO_AMX").is_some_and(|v| !v.is_empty());
    !off && cpu_has_amx_int8() && x86::request_tile_data()
});

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn cpu_has_amx_int8() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // Leaf 7 only where the CPU has it (an older one reports its highest leaf in leaf 0).
    let edx = if __cpuid_count(0, 0).eax >= 7 {
        __cpuid_count(7, 0).edx
    } else {
        0
    };
    // AMX-TILE (bit 24) and AMX-INT8 (bit 25), with AVX-512 for the epilogue.
    edx >> 24 & 3 == 3 && super::Isa8::Vnni.available()
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn cpu_has_amx_int8() -> bool {
    false
}

/// A group's weights as AMX tiles: per block of 16 output channels, per tap, per block of `kq` channel
/// quads, a tile of 16 rows (the channels, zero past the last) × `kq`·4 bytes (the block's quads of
/// that tap, in `quad_weights` order), each row in a 64-byte line of its own, so that no row of a
/// tile load straddles two cache lines (rows packed at the allocator's 16-byte alignment straddled:
/// a 64-channel 8×8 layer's tile product took 5.2 rather than 3.5 µs per image, SqueezeNet's
/// `fire8/conv3x3_2` 0.91 rather than 0.64 ms).
#[derive(Debug, Clone, PartialEq)]
pub struct AmxWeights {
    rows: usize,
    taps: usize,
    /// Channel quads per tap, and per tile (a divisor of `quads`, at most 16).
    quads: usize,
    kq: usize,
    lines: Vec<Line>,
}

/// One row of a weight tile.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(64))]
struct Line([i8; 64]);

impl AmxWeights {
    /// `a`: `rows` × (taps · quads · 4) weights with the depth in (tap, quad, channel in the quad)
    /// order (`quad_weights`).
    pub fn new(a: &[i8], rows: usize, taps: usize, quads: usize) -> Self {
        let kq = (1..=TILE.min(quads))
            .rev()
            .find(|&d| quads.is_multiple_of(d))
            .unwrap_or(1);
        let (depth, blocks) = (taps * quads * 4, rows.div_ceil(TILE));
        let mut lines = vec![Line([0; 64]); blocks * taps * (quads / kq.max(1)) * TILE];
        for (r, row) in a.chunks(depth.max(1)).enumerate().take(rows) {
            for t in 0..taps {
                for q in 0..quads {
                    let line = ((r / TILE * taps + t) * (quads / kq) + q / kq) * TILE + r % TILE;
                    let (at, from) = ((q % kq) * 4, (t * quads + q) * 4);
                    lines[line].0[at..at + 4].copy_from_slice(&row[from..from + 4]);
                }
            }
        }
        Self {
            rows,
            taps,
            quads,
            kq,
            lines,
        }
    }

    fn blocks(&self) -> usize {
        self.quads / self.kq.max(1)
    }

    /// The first row of a tile (its rows 64 bytes apart).
    fn tile(&self, ob: usize, t: usize, cb: usize) -> *const i8 {
        let at = ((ob * self.taps + t) * self.blocks() + cb) * TILE;
        self.lines[at..].as_ptr().cast()
    }
}

/// `gemm_u8s8_quads` with AMX: the activations' groups are (tap, quad) in that order, `b.starts[t ·
/// quads + q]` = `b.starts[t · quads] + q · (a quad's length)`. False, touching nothing, when AMX is
/// not available, the layout is not that one, a group would read past `b.data`, or `out` is short.
pub fn gemm_quads<T: Requantized>(
    w: &AmxWeights,
    b: Quads,
    (n, grid): (usize, GridRows),
    params: &[RowParams],
    (out, ldo): (&mut [T], usize),
) -> bool {
    let groups = w.taps * w.quads;
    if !*AVAILABLE || b.starts.len() != groups || params.len() != w.rows || groups == 0 {
        return false;
    }
    // A quad's length in bytes: the step between the rows of an activation tile.
    let step = if w.quads > 1 {
        b.starts[1].wrapping_sub(b.starts[0])
    } else {
        64
    };
    let regular = b.starts.chunks(w.quads).all(|tap| {
        tap.iter()
            .enumerate()
            .all(|(q, &s)| s == tap[0].wrapping_add(q.wrapping_mul(step)))
    });
    if !regular || !b.holds(n) || !grid.fits(n, w.rows, (&*out, ldo)) {
        return false;
    }
    // SAFETY: AMX (and AVX-512 for the epilogue) is available and granted (`AVAILABLE`); every tile
    // read lies in `b.data` (`holds`, `regular`) or in `w.lines` (sized by `AmxWeights::new`), and
    // `out` holds the rows at the positions of the n columns (`fits`), the only ones written.
    unsafe { x86::kernel(w, (b, step), (n, grid), params, (out.as_mut_ptr(), ldo)) };
    true
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;

    use super::{AmxWeights, GridRows, Quads, RowParams, StripRuns, TILE};
    use crate::engine::gemm::int8::x86::{Lanes16, store_rows};

    /// Asks Linux for the AMX tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`),
    /// which a process must hold before its first tile instruction; true when granted.
    #[cfg(target_os = "linux")]
    pub fn request_tile_data() -> bool {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: the arch_prctl system call reads its two integer arguments and changes only the
        // process's permitted state; rcx and r11 are clobbered by `syscall`.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret == 0
    }

    #[cfg(not(target_os = "linux"))]
    pub fn request_tile_data() -> bool {
        false
    }

    /// The tile configuration: palette 1; tiles 0-3 sums (16 × 64 bytes), 4-5 weights (16 rows ×
    /// kq·4 bytes), 6-7 activations (kq rows × 64 bytes).
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    impl Config {
        fn new(kq: usize) -> Self {
            let mut c = [0u8; 64];
            c[0] = 1;
            let mut tile = |t: usize, rows: usize, bytes: usize| {
                c[16 + 2 * t..18 + 2 * t].copy_from_slice(&(bytes as u16).to_le_bytes());
                c[48 + t] = rows as u8;
            };
            (0..4).for_each(|t| tile(t, TILE, 64));
            (4..6).for_each(|t| tile(t, TILE, kq * 4));
            (6..8).for_each(|t| tile(t, kq, 64));
            Self(c)
        }
    }

    /// Four tiles of sums (two 16-channel blocks × the two halves of a 32-column strip), with where
    /// they go.
    struct Block {
        sums: [[i32; TILE * TILE]; 4],
        runs: StripRuns,
        ob: usize,
    }

    /// Per pair of 16-channel blocks and strip of 32 columns (the strips inner: a pair's weight
    /// tiles stay in L1 over the strips, where 64 channels' tiles of every tap did not, a 64-channel
    /// 8×8 layer shaped as ResNet-8's `res3_branch2b`, batch 8, one thread: 0.049 → 0.043 ms;
    /// SqueezeNet's `fire4/conv3x3_2`, two threads: 1.6 → 1.1 ms): four
    /// tiles of sums over every (tap, quad block), stored, then each channel's two halves
    /// requantized and stored where the strip's runs place them. The requantization of one block is
    /// done while the tile unit computes the next one (issued first): the two then run side by side.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn kernel<T: Lanes16>(
        w: &AmxWeights,
        (b, step): (Quads, usize),
        (n, grid): (usize, GridRows),
        params: &[RowParams],
        (out, ldo): (*mut T, usize),
    ) {
        let config = Config::new(w.kq);
        let empty = || Block {
            sums: [[0; TILE * TILE]; 4],
            runs: StripRuns::new(0, 0, grid),
            ob: 0,
        };
        let mut blocks = [empty(), empty()];
        let mut pending = None;
        let oblocks = w.rows.div_ceil(TILE);
        // SAFETY (all blocks): as `gemm_quads` checked; the configuration is valid for palette 1.
        unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack)) };
        let steps = (0..oblocks)
            .step_by(2)
            .flat_map(|ob| (0..n).step_by(32).map(move |j0| (j0, ob)));
        for (i, (j0, ob)) in steps.enumerate() {
            // A strip of at most 16 columns (the tail of a small map's grid) computes one half.
            let both = n - j0 > 16;
            unsafe { products(w, (b, step), (j0, both), ob) };
            if let Some(done) = pending {
                unsafe { requantize(&blocks[done], w.rows, params, (out, ldo)) };
            }
            let next = &mut blocks[i % 2];
            next.runs = StripRuns::new(j0, 32.min(n - j0), grid);
            next.ob = ob;
            unsafe { store_tiles(&mut next.sums, ob + 1 < oblocks) };
            pending = Some(i % 2);
        }
        if let Some(done) = pending {
            unsafe { requantize(&blocks[done], w.rows, params, (out, ldo)) };
        }
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// Tiles 0-3: the sums of channel blocks ob, ob + 1 (when there is one) × columns j0..j0 + 32.
    #[inline]
    unsafe fn products(
        w: &AmxWeights,
        (b, step): (Quads, usize),
        (j0, both): (usize, bool),
        ob: usize,
    ) {
        let pair = ob + 1 < w.rows.div_ceil(TILE);
        let (ws, base) = (64usize, b.data.as_ptr());
        // SAFETY (all blocks): as `gemm_quads` checked, with the tiles configured by `kernel`.
        unsafe { asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem)) };
        if pair {
            unsafe { asm!("tilezero tmm2", "tilezero tmm3", options(nostack, nomem)) };
        }
        for t in 0..w.taps {
            for cb in 0..w.blocks() {
                let x0 = unsafe { base.add(b.starts[t * w.quads + cb * w.kq] + 4 * j0) };
                let x1 = x0.wrapping_add(64);
                let a0 = w.tile(ob, t, cb);
                if !both {
                    // The first half only: tile 0, and tile 2 for a pair.
                    unsafe {
                        asm!(
                            "tileloadd tmm4, [{a0} + {ws}*1]",
                            "tileloadd tmm6, [{x0} + {bs}*1]",
                            "tdpbsud tmm0, tmm4, tmm6",
                            a0 = in(reg) a0, ws = in(reg) ws, x0 = in(reg) x0, bs = in(reg) step,
                            options(nostack, readonly)
                        )
                    };
                    if pair {
                        let a1 = w.tile(ob + 1, t, cb);
                        unsafe {
                            asm!(
                                "tileloadd tmm5, [{a1} + {ws}*1]",
                                "tdpbsud tmm2, tmm5, tmm6",
                                a1 = in(reg) a1, ws = in(reg) ws,
                                options(nostack, readonly)
                            )
                        };
                    }
                } else if pair {
                    let a1 = w.tile(ob + 1, t, cb);
                    unsafe {
                        asm!(
                            "tileloadd tmm4, [{a0} + {ws}*1]",
                            "tileloadd tmm5, [{a1} + {ws}*1]",
                            "tileloadd tmm6, [{x0} + {bs}*1]",
                            "tileloadd tmm7, [{x1} + {bs}*1]",
                            "tdpbsud tmm0, tmm4, tmm6",
                            "tdpbsud tmm1, tmm4, tmm7",
                            "tdpbsud tmm2, tmm5, tmm6",
                            "tdpbsud tmm3, tmm5, tmm7",
                            a0 = in(reg) a0, a1 = in(reg) a1, ws = in(reg) ws,
                            x0 = in(reg) x0, x1 = in(reg) x1, bs = in(reg) step,
                            options(nostack, readonly)
                        )
                    };
                } else {
                    unsafe {
                        asm!(
                            "tileloadd tmm4, [{a0} + {ws}*1]",
                            "tileloadd tmm6, [{x0} + {bs}*1]",
                            "tileloadd tmm7, [{x1} + {bs}*1]",
                            "tdpbsud tmm0, tmm4, tmm6",
                            "tdpbsud tmm1, tmm4, tmm7",
                            a0 = in(reg) a0, ws = in(reg) ws,
                            x0 = in(reg) x0, x1 = in(reg) x1, bs = in(reg) step,
                            options(nostack, readonly)
                        )
                    };
                }
            }
        }
    }

    /// Tiles 0-1, and 2-3 for a pair of channel blocks, into `sums` (rows of 16 int32).
    #[inline]
    unsafe fn store_tiles(sums: &mut [[i32; TILE * TILE]; 4], pair: bool) {
        let [s0, s1, s2, s3] = sums.each_mut().map(|s| s.as_mut_ptr());
        // SAFETY: each tile is 16 rows × 64 bytes, the size of one `sums` entry.
        unsafe {
            asm!(
                "tilestored [{s0} + {st}*1], tmm0",
                "tilestored [{s1} + {st}*1], tmm1",
                s0 = in(reg) s0, s1 = in(reg) s1, st = in(reg) 64usize,
                options(nostack)
            );
            if pair {
                asm!(
                    "tilestored [{s2} + {st}*1], tmm2",
                    "tilestored [{s3} + {st}*1], tmm3",
                    s2 = in(reg) s2, s3 = in(reg) s3, st = in(reg) 64usize,
                    options(nostack)
                );
            }
        }
    }

    /// A block's channels requantized and stored in their rows of `out` (`rows` in all).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn requantize<T: Lanes16>(
        block: &Block,
        rows: usize,
        params: &[RowParams],
        (out, ldo): (*mut T, usize),
    ) {
        let first = block.ob * TILE;
        let rows = first.min(params.len())..rows.min(first + 2 * TILE).min(params.len());
        // Row i of the block: tile 2·(i / 16) + the half, row i % 16 of it.
        let sums = |i: usize| {
            let (tile, r) = (2 * (i / TILE), i % TILE);
            // SAFETY: each tile holds 16 rows of 16 sums.
            [0, 1].map(|h| unsafe {
                _mm512_loadu_si512(block.sums[tile + h][r * TILE..].as_ptr().cast())
            })
        };
        let out = (out.wrapping_add(first * ldo), ldo);
        // SAFETY: the caller's `out` holds the positions the runs place (`gemm_quads`).
        unsafe { store_rows(&params[rows], sums, &block.runs, out) };
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub fn request_tile_data() -> bool {
        false
    }

    pub(super) unsafe fn kernel<T>(
        _: &super::AmxWeights,
        _: (super::Quads, usize),
        _: (usize, super::GridRows),
        _: &[super::RowParams],
        _: (*mut T, usize),
    ) {
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quant::IntType;

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        super::super::tests::values(n, seed)
            .into_iter()
            .map(|v| (v >> 24) as u8)
            .collect()
    }

    /// Rows that store each sum as it is: an FP32 value with a factor of 1.
    fn identity(rows: usize) -> Vec<RowParams> {
        vec![RowParams::unit(IntType::S8); rows]
    }

    /// The tile product's sums, stored as FP32 values with a factor of 1 (the integer itself), equal
    /// the sums written out, at the grid's positions only: channel counts around the 16-row blocks
    /// and their pairs, quads per tile that divide the quads (1, 3, 8, 12, 16, two tiles of 12 and
    /// of 16), ragged strips, grids wider than the output rows.
    #[test]
    fn tile_products_equal_the_sums_written_out() {
        if !*AVAILABLE {
            eprintln!(
                "SKIPPED: no AMX-INT8 on this CPU (or not granted): the tile product is not run"
            );
            return;
        }
        let cases = [
            // (rows, taps, quads, columns, grid width, output row width)
            (16, 9, 8, 100, 10, 8),
            (5, 1, 3, 33, 33, 33),
            (17, 3, 1, 64, 16, 16),
            (32, 9, 12, 31, 7, 5),
            (40, 4, 16, 70, 35, 34),
            (64, 2, 24, 96, 32, 32),
            (33, 9, 32, 45, 9, 7),
        ];
        for (case, (rows, taps, quads, n, wq, ow)) in cases.into_iter().enumerate() {
            let len = n + taps + 40;
            let data = bytes(quads * len * 4 + 256, 5 + case as u64);
            let starts: Vec<usize> = (0..taps)
                .flat_map(|t| (0..quads).map(move |q| (q * len + t) * 4))
                .collect();
            let depth = taps * quads * 4;
            let mut a: Vec<i8> = bytes(rows * depth, 71 + case as u64)
                .into_iter()
                .map(|v| v as i8)
                .collect();
            a[0] = -128;
            let w = AmxWeights::new(&a, rows, taps, quads);
            let params = identity(rows);
            let grid = GridRows { wq, ow };
            let plane = grid.span(n);
            let mut out = vec![f32::NAN; rows * plane];
            let b = Quads {
                data: &data,
                starts: &starts,
            };
            assert!(gemm_quads(&w, b, (n, grid), &params, (&mut out, plane)));
            for r in 0..rows {
                for j in (0..n).filter(|j| j % wq < ow) {
                    let sum: i32 = (0..depth)
                        .map(|p| {
                            let (g, e) = (p / 4, p % 4);
                            let x = data[starts[g] + 4 * j + e];
                            i32::from(a[r * depth + p]) * i32::from(x)
                        })
                        .sum();
                    let at = r * plane + j / wq * ow + j % wq;
                    assert_eq!(out[at], sum as f32, "case {case}: row {r}, column {j}");
                }
            }
            let written = out.iter().filter(|v| !v.is_nan()).count();
            let positions = (0..n).filter(|j| j % wq < ow).count();
            assert_eq!(
                written,
                rows * positions,
                "case {case}: only the grid's positions"
            );
        }
    }

    #[test]
    fn irregular_activation_rows_are_refused() {
        // Three quads whose rows are not equally far apart: no tile can load them.
        let w = AmxWeights::new(&[1; 2 * 3 * 4], 2, 1, 3);
        let params = identity(2);
        let data = vec![1u8; 1024];
        let b = Quads {
            data: &data,
            starts: &[0, 100, 150],
        };
        let grid = GridRows { wq: 4, ow: 4 };
        let mut out = vec![0.0f32; 8];
        assert!(!gemm_quads(&w, b, (4, grid), &params, (&mut out, 4)));
    }
}
