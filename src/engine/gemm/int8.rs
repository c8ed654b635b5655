//! The u8 × s8 → s32 matrix product of INT8 convolutions and InnerProducts: s8 weights packed once per
//! plan (`PackedS8`), u8 activations given by their rows (as `Rows` for f32), exact 32-bit integer sums.
//! AVX-512 VNNI (`vpdpbusd`, four products per lane and step), AVX2 (operands widened to i16 and
//! `vpmaddwd`, which cannot saturate, unlike `vpmaddubsw`), and a portable loop, chosen at run time;
//! all three give the same integers.
//!
//! Weights are packed in 8-row panels; within a panel the depth runs in groups of `Isa8::group()`
//! (4 for VNNI, 2 for AVX2, 1 portable), each group's values of the 8 rows side by side, so a kernel
//! broadcasts one row's group as one 32-bit value. The activations of a strip of columns are packed the
//! same way per call (interleaved by depth group), zero-padded past the depth, and reused by every panel.
#![allow(unsafe_code)]

use std::sync::LazyLock;

use super::requant::RowParams;

pub mod amx;

/// Rows of a weight panel.
pub const MR: usize = 8;

/// The instruction set of the integer kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa8 {
    Vnni,
    Avx2,
    Portable,
}

static ISA8: LazyLock<Isa8> = LazyLock::new(Isa8::detect);

impl Isa8 {
    pub fn detect() -> Self {
        [Self::Vnni, Self::Avx2]
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Self::Portable)
    }

    pub fn available(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Depth values per 32-bit lane.
    fn group(self) -> usize {
        match self {
            Self::Vnni => 4,
            Self::Avx2 => 2,
            Self::Portable => 1,
        }
    }

    /// Columns per kernel call.
    fn nr(self) -> usize {
        match self {
            Self::Vnni => 32,
            Self::Avx2 | Self::Portable => 8,
        }
    }
}

/// An m×k matrix of s8 weights packed for one instruction set, with each row's sum (the correction
/// for s8 activations shifted to u8).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedS8 {
    rows: usize,
    depth: usize,
    isa: Isa8,
    /// Panels of MR rows; depth padded to whole groups. VNNI: bytes; AVX2 and portable: i16.
    bytes: Vec<i8>,
    wide: Vec<i16>,
    row_sums: Vec<i32>,
}

impl PackedS8 {
    pub fn new(a: &[i8], rows: usize, depth: usize) -> Self {
        Self::with_isa(*ISA8, a, rows, depth)
    }

    fn with_isa(isa: Isa8, a: &[i8], rows: usize, depth: usize) -> Self {
        let g = isa.group();
        let groups = depth.div_ceil(g);
        let panels = rows.div_ceil(MR);
        // Panel r, group q, row i, element e of the group: index ((r·groups + q)·MR + i)·g + e.
        let at = |r: usize, q: usize, i: usize, e: usize| ((r * groups + q) * MR + i) * g + e;
        let mut packed = vec![0i8; panels * groups * MR * g];
        for row in 0..rows {
            for p in 0..depth {
                packed[at(row / MR, p / g, row % MR, p % g)] = a[row * depth + p];
            }
        }
        let row_sums = (0..rows)
            .map(|r| {
                a[r * depth..(r + 1) * depth]
                    .iter()
                    .map(|&v| i32::from(v))
                    .sum()
            })
            .collect();
        let (bytes, wide) = match isa {
            Isa8::Vnni => (packed, Vec::new()),
            _ => (Vec::new(), packed.into_iter().map(i16::from).collect()),
        };
        Self {
            rows,
            depth,
            isa,
            bytes,
            wide,
            row_sums,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Σ_k w[row][k], which an s8 activation shifted by +128 to u8 must subtract 128 times.
    pub fn row_sums(&self) -> &[i32] {
        &self.row_sums
    }

    fn groups(&self) -> usize {
        self.depth.div_ceil(self.isa.group())
    }
}

/// The rows of a k×n u8 matrix: row p starts at `data[starts[p]]`, its n columns contiguous.
#[derive(Debug, Clone, Copy)]
pub struct RowsU8<'a> {
    pub data: &'a [u8],
    pub starts: &'a [usize],
}

/// Reused buffers: one packed strip of activations and one output block.
#[derive(Debug, Default)]
pub struct Scratch8 {
    bytes: Vec<u8>,
    wide: Vec<i16>,
    block: Vec<i32>,
}

/// `c = a × b` in exact 32-bit integers: `a` m×k s8 (packed), `b` k×n u8, `c` m×n with row stride `ldc`.
pub fn gemm_u8s8(
    a: &PackedS8,
    b: RowsU8,
    n: usize,
    (c, ldc): (&mut [i32], usize),
    s: &mut Scratch8,
) {
    let (k, isa) = (a.depth, a.isa);
    let fits = a.rows == 0 || (ldc >= n && c.len() >= (a.rows - 1) * ldc + n);
    if b.starts.len() != k || !isa.available() || !fits {
        unreachable!(
            "gemm_u8s8: {k} rows of weights against {} rows, {} outputs for {n} columns",
            b.starts.len(),
            c.len()
        );
    }
    let (nr, g, groups) = (isa.nr(), isa.group(), a.groups());
    s.block.resize(MR * nr, 0);
    for j0 in (0..n).step_by(nr) {
        let cols = nr.min(n - j0);
        pack_strip(isa, b, j0, cols, groups, s);
        let panel_len = groups * MR * g;
        for r in 0..a.rows.div_ceil(MR) {
            let rows = MR.min(a.rows - r * MR);
            match isa {
                // SAFETY: the CPU has the features (checked above); the panel holds groups·MR·4 bytes,
                // the strip groups·32·4 bytes, the block MR·32 values (sized above), and `c` rows
                // r·MR..r·MR + 8 at columns j0..j0 + 32 when written directly (`fits` above).
                #[cfg(target_arch = "x86_64")]
                Isa8::Vnni => unsafe {
                    let panel = &a.bytes[r * panel_len..(r + 1) * panel_len];
                    // A whole 8 × 32 block goes straight to `c`; others through `block`.
                    let (dst, ld) = if rows == MR && cols == nr {
                        (c[(r * MR) * ldc + j0..].as_mut_ptr(), ldc)
                    } else {
                        (s.block.as_mut_ptr(), nr)
                    };
                    x86::vnni(groups, panel.as_ptr(), s.bytes.as_ptr(), dst, ld);
                    if ld == ldc {
                        continue;
                    }
                },
                // SAFETY: as above with groups·MR·2 weights, groups·8·2 activations, MR·8 results.
                #[cfg(target_arch = "x86_64")]
                Isa8::Avx2 => unsafe {
                    let panel = &a.wide[r * panel_len..(r + 1) * panel_len];
                    x86::avx2(
                        groups,
                        panel.as_ptr(),
                        s.wide.as_ptr(),
                        s.block.as_mut_ptr(),
                    );
                },
                _ => portable(
                    &a.wide[r * panel_len..(r + 1) * panel_len],
                    &s.wide,
                    &mut s.block,
                ),
            }
            for i in 0..rows {
                let dst = &mut c[(r * MR + i) * ldc + j0..(r * MR + i) * ldc + j0 + cols];
                dst.copy_from_slice(&s.block[i * nr..i * nr + cols]);
            }
        }
    }
}

/// What the VNNI kernel requantizes sums into: codes (bytes of `RowParams::ty`) or FP32 values.
#[cfg(target_arch = "x86_64")]
pub trait Requantized: x86::Lanes16 {}
/// What the VNNI kernel requantizes sums into: codes (bytes of `RowParams::ty`) or FP32 values.
#[cfg(not(target_arch = "x86_64"))]
pub trait Requantized: Copy {}

impl Requantized for u8 {}
impl Requantized for f32 {}

/// How the n columns of a product land in an output row: column j of a phase grid `wq` wide is
/// output position (j / wq)·`ow` + j % wq when j % wq < `ow`, and dropped otherwise (the grid's extra
/// columns); `wq == ow` is a plain row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridRows {
    pub wq: usize,
    pub ow: usize,
}

impl GridRows {
    /// The output row's length the first n columns reach.
    fn span(self, n: usize) -> usize {
        match n.checked_sub(1) {
            Some(last) if self.wq > 0 => {
                last / self.wq * self.ow + (last % self.wq).min(self.ow - 1) + 1
            }
            _ => 0,
        }
    }

    /// Whether `out` holds `rows` rows `ldo` apart of the positions n columns reach.
    fn fits<T>(self, n: usize, rows: usize, (out, ldo): (&[T], usize)) -> bool {
        let span = self.span(n);
        self.ow >= 1
            && self.wq >= self.ow
            && (rows == 0 || (ldo >= span && out.len() >= (rows - 1) * ldo + span))
    }
}

/// The most runs 16 columns of a grid fall into: one per grid row they touch, 16 on a grid one
/// column wide.
const MAX_RUNS: usize = 16;

/// Where the two halves of a strip's 32 columns go in an output row: per half, runs of lanes (the
/// output position of lane 0, the mask of the lanes) as `GridRows` places them.
#[derive(Debug, Clone, Copy)]
struct StripRuns {
    halves: [([(isize, u16); MAX_RUNS], usize); 2],
}

impl StripRuns {
    /// Columns j0..j0 + cols (at most 32).
    fn new(j0: usize, cols: usize, grid: GridRows) -> Self {
        let mut halves = [([(0isize, 0u16); MAX_RUNS], 0usize); 2];
        let GridRows { wq, ow } = grid;
        for (h, (runs, count)) in halves.iter_mut().enumerate() {
            let (c0, end) = (j0 + 16 * h, j0 + cols.min(32));
            if c0 >= end {
                continue;
            }
            let lanes = |from: usize, to: usize| -> u16 {
                ((1u32 << (to - c0)) - (1u32 << (from - c0))) as u16
            };
            if wq == ow {
                runs[0] = (c0 as isize, lanes(c0, end.min(c0 + 16)));
                *count = 1;
                continue;
            }
            let last = end.min(c0 + 16);
            let mut y = c0 / wq;
            while y * wq < last && *count < MAX_RUNS {
                let (from, to) = ((y * wq).max(c0), (y * wq + ow).min(last));
                if from < to {
                    runs[*count] = (c0 as isize - (y * (wq - ow)) as isize, lanes(from, to));
                    *count += 1;
                }
                y += 1;
            }
        }
        Self { halves }
    }

    fn half(&self, h: usize) -> &[(isize, u16)] {
        let (runs, count) = &self.halves[h];
        &runs[..*count]
    }
}

/// `gemm_u8s8` with each row's sums requantized by `params[row]` straight from the VNNI kernel's
/// registers into codes or values: row i's columns at `out[i·ldo..]`, placed as `grid` says (which
/// hold the residual when there is a sum). False, touching nothing, without VNNI (the caller then
/// requantizes the sums).
pub fn gemm_u8s8_requant<T: Requantized>(
    a: &PackedS8,
    b: RowsU8,
    (n, grid): (usize, GridRows),
    params: &[RowParams],
    (out, ldo): (&mut [T], usize),
    s: &mut Scratch8,
) -> bool {
    let fits = grid.fits(n, a.rows, (out, ldo));
    if a.isa != Isa8::Vnni || !a.isa.available() || b.starts.len() != a.depth || !fits {
        return false;
    }
    if params.len() != a.rows {
        return false;
    }
    let (nr, groups) = (a.isa.nr(), a.groups());
    let panel_len = groups * MR * 4;
    for j0 in (0..n).step_by(nr) {
        let cols = nr.min(n - j0);
        pack_strip(a.isa, b, j0, cols, groups, s);
        let runs = StripRuns::new(j0, cols, grid);
        for r in 0..a.rows.div_ceil(MR) {
            let rows = MR.min(a.rows - r * MR);
            let panel = &a.bytes[r * panel_len..(r + 1) * panel_len];
            // SAFETY: the CPU has VNNI (checked above); the panel holds groups·MR·4 bytes, the strip
            // groups·32·4 bytes; `out` holds rows r·MR..r·MR + rows at the positions of columns
            // j0..j0 + cols (`fits` above), and the kernel writes only those (`runs`).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                let strip = s.bytes.as_ptr();
                x86::vnni_requant(
                    groups,
                    (panel.as_ptr(), |q| strip.add(q * 128)),
                    &params[r * MR..r * MR + rows],
                    &runs,
                    (out[(r * MR) * ldo..].as_mut_ptr(), ldo),
                );
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (panel, rows);
        }
    }
    true
}

/// Codes with four channels interleaved: byte 4p + e of a quad is channel 4·quad + e at position p
/// (`interleave_quads`), so one depth group of four channels at a position is one 32-bit value and
/// a run of positions is the VNNI kernel's packed strip as it stands: group q of the product reads
/// `data[starts[q] + 4·column..]` (a quad shifted by a kernel tap), nothing is packed per strip.
#[derive(Debug, Clone, Copy)]
pub struct Quads<'a> {
    pub data: &'a [u8],
    pub starts: &'a [usize],
}

impl Quads<'_> {
    /// Whether every group's strips of 32 columns over the first n columns (128 bytes each, the
    /// last one whole) lie in `data`.
    fn holds(&self, n: usize) -> bool {
        let reach = self
            .starts
            .iter()
            .max()
            .map_or(0, |&m| m + n.div_ceil(32) * 128);
        reach <= self.data.len()
    }
}

/// Interleaves four rows of equal length into `dst` (4 × their length): `dst[4p + e] = rows[e][p]`.
pub fn interleave_quads(rows: [&[u8]; 4], dst: &mut [u8]) {
    let n = rows
        .iter()
        .map(|r| r.len())
        .min()
        .unwrap_or(0)
        .min(dst.len() / 4);
    // 16 columns at a time, then 8 (the rows of small maps).
    let whole = n / 8 * 8;
    #[cfg(target_arch = "x86_64")]
    for p in (0..whole).step_by(16) {
        let (at, to) = (rows.map(|r| r[p..].as_ptr()), dst[4 * p..].as_mut_ptr());
        // SAFETY: each row holds p + 16 (or p + 8, the last step) bytes and `dst` 4 times as many
        // (SSE2 is part of x86_64).
        unsafe {
            if p + 16 <= whole {
                x86::interleave4(at, to);
            } else {
                x86::interleave4_8(at, to);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let whole = 0;
    for p in whole..n {
        for (e, r) in rows.iter().enumerate() {
            dst[4 * p + e] = r[p];
        }
    }
}

/// Interleaves the even columns of four rows of equal length into `even` and their odd columns into
/// `odd` (`interleave_quads` of each half): `even[4i + e] = rows[e][2i]`, `odd[4i + e] =
/// rows[e][2i + 1]`, for the ⌈n/2⌉ and ⌊n/2⌋ columns there are (a row at a column stride of 2,
/// placed in its two column phases at once).
pub fn interleave_quads_split(rows: [&[u8]; 4], even: &mut [u8], odd: &mut [u8]) {
    let n = rows.iter().map(|r| r.len()).min().unwrap_or(0);
    let n = n.min(2 * (even.len() / 4)).min(2 * (odd.len() / 4) + 1);
    // 32 columns at a time, then 16 (the rows of small maps).
    let whole = n / 16 * 16;
    #[cfg(target_arch = "x86_64")]
    for p in (0..whole).step_by(32) {
        let at = rows.map(|r| r[p..].as_ptr());
        let (e, o) = (even[2 * p..].as_mut_ptr(), odd[2 * p..].as_mut_ptr());
        // SAFETY: each row holds p + 32 (or p + 16, the last step) bytes, `even` and `odd` twice
        // as many from 2p (n above).
        unsafe {
            if p + 32 <= whole {
                x86::interleave4_split(at, e, o);
            } else {
                x86::interleave4_split_16(at, e, o);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let whole = 0;
    for c in whole..n {
        let dst = if c % 2 == 0 { &mut *even } else { &mut *odd };
        for (e, r) in rows.iter().enumerate() {
            dst[4 * (c / 2) + e] = r[c];
        }
    }
}

/// `gemm_u8s8_requant` with the activations as channel quads (`Quads`) in place of packed strips:
/// `a`'s depth runs in the groups' order (its depth is 4 × the number of groups). False, touching
/// nothing, without VNNI or when a group would read past `b.data`.
pub fn gemm_u8s8_quads<T: Requantized>(
    a: &PackedS8,
    b: Quads,
    (n, grid): (usize, GridRows),
    params: &[RowParams],
    (out, ldo): (&mut [T], usize),
) -> bool {
    let fits = grid.fits(n, a.rows, (out, ldo));
    let groups = a.groups();
    let ok = a.isa == Isa8::Vnni && a.isa.available() && a.depth == 4 * b.starts.len();
    if !ok || !fits || !b.holds(n) || params.len() != a.rows {
        return false;
    }
    let panel_len = groups * MR * 4;
    for j0 in (0..n).step_by(32) {
        let runs = StripRuns::new(j0, 32.min(n - j0), grid);
        for r in 0..a.rows.div_ceil(MR) {
            let rows = MR.min(a.rows - r * MR);
            let panel = &a.bytes[r * panel_len..(r + 1) * panel_len];
            // SAFETY: the CPU has VNNI (checked above); the panel holds groups·MR·4 bytes; group q
            // reads 128 bytes at starts[q] + 4·j0, inside `b.data` (`holds` above); `out` holds rows
            // r·MR..r·MR + rows at the positions of columns j0..j0 + 32 (`fits` above), and the
            // kernel writes only those (`runs`).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                let (base, starts) = (b.data.as_ptr(), b.starts.as_ptr());
                x86::vnni_requant(
                    groups,
                    (panel.as_ptr(), |q| base.add(*starts.add(q) + 4 * j0)),
                    &params[r * MR..r * MR + rows],
                    &runs,
                    (out[(r * MR) * ldo..].as_mut_ptr(), ldo),
                );
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (panel, rows, &runs);
        }
    }
    true
}

/// Packs columns j0..j0+cols of `b` by depth group: group q, column j, element e at (q·nr + j)·g + e;
/// padding (past the depth, past the columns) is zero.
fn pack_strip(isa: Isa8, b: RowsU8, j0: usize, cols: usize, groups: usize, s: &mut Scratch8) {
    let (nr, g) = (isa.nr(), isa.group());
    let len = groups * nr * g;
    // Row p goes to group p / g, element p % g: every g-th value from (p / g)·nr·g + p % g.
    let at = |p: usize| (p / g) * nr * g + p % g;
    if isa == Isa8::Vnni {
        // Every byte is written below (the columns past `cols` zeroed), so no clearing.
        s.bytes.resize(len, 0);
        // Four rows at a time: column j's four bytes are one little-endian u32.
        let zeros = [0u8; 32];
        for (q, quad) in b.starts.chunks(4).enumerate() {
            let row = |e: usize| {
                quad.get(e)
                    .map_or(&zeros[..cols], |&st| &b.data[st + j0..st + j0 + cols])
            };
            let rows = [row(0), row(1), row(2), row(3)];
            let dst = &mut s.bytes[q * nr * 4..(q + 1) * nr * 4];
            if cols == nr {
                interleave_quads(rows, dst);
                continue;
            }
            for (j, d) in dst[..cols * 4].chunks_exact_mut(4).enumerate() {
                d.copy_from_slice(&rows.map(|r| r[j]));
            }
            dst[cols * 4..].fill(0);
        }
    } else {
        s.wide.clear();
        s.wide.resize(len, 0);
        for (p, &start) in b.starts.iter().enumerate() {
            let row = &b.data[start + j0..start + j0 + cols];
            let dst = s.wide[at(p)..].iter_mut().step_by(g);
            dst.zip(row).for_each(|(d, &v)| *d = i16::from(v));
        }
    }
}

/// Whether the CPU has AVX-512 F, for `multiply_add_u8`.
static AVX512F: LazyLock<bool> = LazyLock::new(|| {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
});

/// `acc[j] += w · x[j]` over the shorter of the two: one tap of a depthwise convolution over all its
/// outputs. The portable loop, compiled for AVX-512 when the CPU has it (16 lanes; the baseline
/// target has no 32-bit vector multiply, so the loop otherwise runs a value at a time).
pub fn multiply_add_u8(acc: &mut [i32], x: &[u8], w: i8) {
    #[cfg(target_arch = "x86_64")]
    if *AVX512F {
        // SAFETY: the CPU has AVX-512 F (checked above).
        unsafe { x86::multiply_add_u8(acc, x, w) };
        return;
    }
    multiply_add_portable(acc, x, w);
}

#[inline(always)]
fn multiply_add_portable(acc: &mut [i32], x: &[u8], w: i8) {
    let w = i32::from(w);
    acc.iter_mut()
        .zip(x)
        .for_each(|(a, &v)| *a += w * i32::from(v));
}

/// Portable kernel (group 1, 8 columns): `block[i][j] = Σ_q a[q][i] · b[q][j]`.
fn portable(a: &[i16], b: &[i16], block: &mut [i32]) {
    const NR: usize = 8;
    let mut acc = [[0i32; NR]; MR];
    for (aq, bq) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (row, &av) in acc.iter_mut().zip(aq) {
            for (o, &bv) in row.iter_mut().zip(bq) {
                *o += i32::from(av) * i32::from(bv);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        block[i * NR..(i + 1) * NR].copy_from_slice(row);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{MR, StripRuns};
    use crate::engine::gemm::requant::RowParams;
    use crate::engine::gemm::requant::x86::{
        codes_from_sums_in_runs, plain_codes_in_runs, values_from_sums_in_runs,
    };

    /// 32 bytes of four rows: their even bytes interleaved into 64 bytes at `even`, their odd bytes
    /// into 64 at `odd` (each row split as `phases::Element::deinterleave` does, then `interleave4`).
    #[inline]
    pub unsafe fn interleave4_split(rows: [*const u8; 4], even: *mut u8, odd: *mut u8) {
        // SAFETY: the caller gives 32 readable bytes per row and 64 writable at each destination.
        unsafe {
            let low = _mm_set1_epi16(0xff);
            let halves = rows.map(|p| {
                let (a, b) = (_mm_loadu_si128(p.cast()), _mm_loadu_si128(p.add(16).cast()));
                let e = _mm_packus_epi16(_mm_and_si128(a, low), _mm_and_si128(b, low));
                let o = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
                (e, o)
            });
            interleave4_registers(halves.map(|h| h.0), even);
            interleave4_registers(halves.map(|h| h.1), odd);
        }
    }

    /// 16 bytes of four rows: as `interleave4_split`, 32 bytes to each destination.
    #[inline]
    pub unsafe fn interleave4_split_16(rows: [*const u8; 4], even: *mut u8, odd: *mut u8) {
        // SAFETY: the caller gives 16 readable bytes per row and 32 writable at each destination.
        unsafe {
            let (low, zero) = (_mm_set1_epi16(0xff), _mm_setzero_si128());
            let halves = rows.map(|p| {
                let a = _mm_loadu_si128(p.cast());
                let e = _mm_packus_epi16(_mm_and_si128(a, low), zero);
                (e, _mm_packus_epi16(_mm_srli_epi16(a, 8), zero))
            });
            interleave4_low8(halves.map(|h| h.0), even);
            interleave4_low8(halves.map(|h| h.1), odd);
        }
    }

    /// 8 bytes of four rows interleaved into 32 bytes at `dst`.
    #[inline]
    pub unsafe fn interleave4_8(rows: [*const u8; 4], dst: *mut u8) {
        // SAFETY: the caller gives 8 readable bytes per row and 32 writable at dst.
        unsafe { interleave4_low8(rows.map(|p| _mm_loadl_epi64(p.cast())), dst) }
    }

    /// The low 8 bytes of four registers interleaved into 32 bytes at `dst`.
    #[inline]
    unsafe fn interleave4_low8(r: [__m128i; 4], dst: *mut u8) {
        // SAFETY: the caller gives 32 writable bytes at dst.
        unsafe {
            let (a, b) = (_mm_unpacklo_epi8(r[0], r[1]), _mm_unpacklo_epi8(r[2], r[3]));
            let out = dst.cast::<__m128i>();
            _mm_storeu_si128(out, _mm_unpacklo_epi16(a, b));
            _mm_storeu_si128(out.add(1), _mm_unpackhi_epi16(a, b));
        }
    }

    /// Four rows of 16 bytes in registers interleaved into 64 bytes at `dst`.
    #[inline]
    unsafe fn interleave4_registers(r: [__m128i; 4], dst: *mut u8) {
        // SAFETY: the caller gives 64 writable bytes at dst.
        unsafe {
            let (a_lo, a_hi) = (_mm_unpacklo_epi8(r[0], r[1]), _mm_unpackhi_epi8(r[0], r[1]));
            let (b_lo, b_hi) = (_mm_unpacklo_epi8(r[2], r[3]), _mm_unpackhi_epi8(r[2], r[3]));
            let out = dst.cast::<__m128i>();
            _mm_storeu_si128(out, _mm_unpacklo_epi16(a_lo, b_lo));
            _mm_storeu_si128(out.add(1), _mm_unpackhi_epi16(a_lo, b_lo));
            _mm_storeu_si128(out.add(2), _mm_unpacklo_epi16(a_hi, b_hi));
            _mm_storeu_si128(out.add(3), _mm_unpackhi_epi16(a_hi, b_hi));
        }
    }

    /// `super::multiply_add_portable` compiled for AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn multiply_add_u8(acc: &mut [i32], x: &[u8], w: i8) {
        super::multiply_add_portable(acc, x, w);
    }

    /// Interleaves 16 bytes of four rows: column j's bytes go to dst[4j..4j + 4], in row order.
    #[inline]
    pub unsafe fn interleave4(rows: [*const u8; 4], dst: *mut u8) {
        // SAFETY: the caller gives 16 readable bytes per row and 64 writable at dst.
        unsafe { interleave4_registers(rows.map(|p| _mm_loadu_si128(p.cast())), dst) }
    }

    /// 8 × 32 with VNNI: per group of 4 depths, two 64-byte loads of activations (16 columns × 4
    /// bytes each) and eight 4-byte weight broadcasts, sixteen `vpdpbusd`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn vnni(groups: usize, a: *const i8, b: *const u8, c: *mut i32, ldc: usize) {
        // SAFETY: as the caller's.
        let (lo, hi) = unsafe { sums::<true>(groups, a, |q| b.add(q * 128)) };
        for i in 0..MR {
            unsafe {
                _mm512_storeu_si512(c.add(i * ldc).cast(), lo[i]);
                _mm512_storeu_si512(c.add(i * ldc + 16).cast(), hi[i]);
            }
        }
    }

    /// A requantized store of 16 sums of one row, in runs (`codes_from_sums_in_runs`).
    pub trait Lanes16: Copy {
        /// # Safety
        /// The CPU has AVX-512 F/BW/VL; each run's mask covers only lanes inside the output.
        unsafe fn store_sums(p: &RowParams, sums: __m512i, base: *mut Self, runs: &[(isize, u16)]);

        /// Whether every row takes `store_plain`.
        fn plain(_: &[RowParams]) -> bool {
            false
        }

        /// `store_sums` for the rows `plain` admits.
        /// # Safety
        /// As `store_sums`.
        unsafe fn store_plain(
            p: &RowParams,
            sums: __m512i,
            base: *mut Self,
            runs: &[(isize, u16)],
        ) {
            // SAFETY: as the caller's.
            unsafe { Self::store_sums(p, sums, base, runs) }
        }
    }

    impl Lanes16 for u8 {
        #[inline]
        unsafe fn store_sums(p: &RowParams, sums: __m512i, base: *mut Self, runs: &[(isize, u16)]) {
            // SAFETY: as the caller's.
            unsafe { codes_from_sums_in_runs(p, sums, base, runs) }
        }

        fn plain(params: &[RowParams]) -> bool {
            params.iter().all(RowParams::plain_u8)
        }

        #[inline]
        unsafe fn store_plain(
            p: &RowParams,
            sums: __m512i,
            base: *mut Self,
            runs: &[(isize, u16)],
        ) {
            // SAFETY: as the caller's.
            unsafe { plain_codes_in_runs(p, sums, base, runs) }
        }
    }

    impl Lanes16 for f32 {
        #[inline]
        unsafe fn store_sums(p: &RowParams, sums: __m512i, base: *mut Self, runs: &[(isize, u16)]) {
            // SAFETY: as the caller's.
            unsafe { values_from_sums_in_runs(p, sums, base, runs) }
        }
    }

    /// As `vnni`, with row i's 32 sums requantized by `params[i]` into codes or values in the row
    /// at `out + i·ldo`, where `runs` places them (the rows past `params.len()` dropped).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn vnni_requant<T: Lanes16>(
        groups: usize,
        (a, b): (*const i8, impl Fn(usize) -> *const u8),
        params: &[RowParams],
        runs: &StripRuns,
        (out, ldo): (*mut T, usize),
    ) {
        // SAFETY: as the caller's. A strip of at most 16 columns (the tail of a small map's grid)
        // computes only its first half.
        let (lo, hi) = unsafe {
            if runs.half(1).is_empty() {
                sums::<false>(groups, a, b)
            } else {
                sums::<true>(groups, a, b)
            }
        };
        let params = &params[..params.len().min(MR)];
        // SAFETY: the caller gives `params.len()` rows at `out`, holding the positions `runs`
        // writes.
        unsafe { store_rows(params, |i| [lo[i], hi[i]], runs, (out, ldo)) };
    }

    /// Row i's two halves of 16 sums (`sums(i)`) requantized by `params[i]` and stored in the row
    /// at `out + i·ldo` where `runs` places them (the VNNI kernel's registers, the AMX tiles).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn store_rows<T: Lanes16>(
        params: &[RowParams],
        sums: impl Fn(usize) -> [__m512i; 2],
        runs: &StripRuns,
        (out, ldo): (*mut T, usize),
    ) {
        if T::plain(params) {
            // SAFETY: as the caller's.
            unsafe { each_half(params, sums, runs, (out, ldo), T::store_plain) };
        } else {
            unsafe { each_half(params, sums, runs, (out, ldo), T::store_sums) };
        }
    }

    /// `store` of each row's halves that the runs place.
    #[inline(always)]
    unsafe fn each_half<T>(
        params: &[RowParams],
        sums: impl Fn(usize) -> [__m512i; 2],
        runs: &StripRuns,
        (out, ldo): (*mut T, usize),
        store: unsafe fn(&RowParams, __m512i, *mut T, &[(isize, u16)]),
    ) {
        for (i, p) in params.iter().enumerate() {
            let row = out.wrapping_add(i * ldo);
            for (h, v) in sums(i).into_iter().enumerate() {
                if !runs.half(h).is_empty() {
                    // SAFETY: the caller's rows hold the positions the runs place.
                    unsafe { store(p, v, row, runs.half(h)) };
                }
            }
        }
    }

    /// The 8 × 32 sums of a panel and a strip, as two halves of 16 columns per row (the second
    /// left zero, its activations not read, unless `BOTH`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn sums<const BOTH: bool>(
        groups: usize,
        a: *const i8,
        b: impl Fn(usize) -> *const u8,
    ) -> ([__m512i; MR], [__m512i; MR]) {
        let mut lo = [_mm512_setzero_si512(); MR];
        let mut hi = [_mm512_setzero_si512(); MR];
        for q in 0..groups {
            // SAFETY (all blocks): the caller sized a, b and c for `groups` groups.
            let row = b(q);
            let b0 = unsafe { _mm512_loadu_si512(row.cast()) };
            let b1 = if BOTH {
                unsafe { _mm512_loadu_si512(row.add(64).cast()) }
            } else {
                _mm512_setzero_si512()
            };
            for i in 0..MR {
                let w = unsafe { a.add((q * MR + i) * 4).cast::<i32>().read_unaligned() };
                let av = _mm512_set1_epi32(w);
                lo[i] = _mm512_dpbusd_epi32(lo[i], b0, av);
                if BOTH {
                    hi[i] = _mm512_dpbusd_epi32(hi[i], b1, av);
                }
            }
        }
        (lo, hi)
    }

    /// 8 × 8 with AVX2: per pair of depths, one load of 8 columns × 2 i16 activations and eight
    /// broadcasts of a row's two i16 weights, `vpmaddwd` (exact: |255·127·2| < 2^31) then `vpaddd`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn avx2(groups: usize, a: *const i16, b: *const i16, c: *mut i32) {
        let mut acc = [_mm256_setzero_si256(); MR];
        for q in 0..groups {
            // SAFETY (all blocks): the caller sized a, b and c for `groups` groups.
            let bv = unsafe { _mm256_loadu_si256(b.add(q * 16).cast()) };
            for (i, o) in acc.iter_mut().enumerate() {
                let w = unsafe { a.add((q * MR + i) * 2).cast::<i32>().read_unaligned() };
                let prod = _mm256_madd_epi16(bv, _mm256_set1_epi32(w));
                *o = _mm256_add_epi32(*o, prod);
            }
        }
        for (i, o) in acc.iter().enumerate() {
            unsafe { _mm256_storeu_si256(c.add(i * 8).cast(), *o) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded xorshift, so the shapes and values are the same on every run.
    pub(super) fn values(n: usize, seed: u64) -> Vec<u64> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s
            })
            .collect()
    }

    #[test]
    fn strip_runs_place_each_grid_column_once_and_drop_the_extra_ones() {
        for (wq, ow) in [(8, 8), (10, 8), (34, 32), (3, 1), (1, 1), (7, 2), (17, 16)] {
            let grid = GridRows { wq, ow };
            let n = 5 * wq + ow - wq.min(2);
            for j0 in (0..n).step_by(32) {
                let cols = 32.min(n - j0);
                let runs = StripRuns::new(j0, cols, grid);
                for j in j0..j0 + cols {
                    let (h, lane) = ((j - j0) / 16, (j - j0) % 16);
                    let at: Vec<isize> = runs
                        .half(h)
                        .iter()
                        .filter(|(_, m)| m >> lane & 1 == 1)
                        .map(|&(d, _)| d + lane as isize)
                        .collect();
                    let want = (j % wq < ow).then(|| (j / wq * ow + j % wq) as isize);
                    assert_eq!(
                        at,
                        want.into_iter().collect::<Vec<_>>(),
                        "{wq} {ow} column {j}"
                    );
                }
                let last = (j0 + cols - 1) % wq < ow;
                if last {
                    assert_eq!(
                        grid.span(j0 + cols),
                        (j0 + cols - 1) / wq * ow + (j0 + cols - 1) % wq + 1
                    );
                }
            }
        }
    }

    #[test]
    fn interleaves_place_each_column_of_each_row() {
        for n in [
            0usize, 1, 2, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 64, 70, 97,
        ] {
            let rows: Vec<Vec<u8>> = (0..4)
                .map(|e| (0..n).map(|c| (c * 7 + e * 61) as u8).collect())
                .collect();
            let (mut even, mut odd) = (vec![0u8; 4 * n.div_ceil(2)], vec![0u8; 4 * (n / 2)]);
            let r = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
            interleave_quads_split(r, &mut even, &mut odd);
            for c in 0..n {
                for e in 0..4 {
                    let got = if c % 2 == 0 {
                        even[4 * (c / 2) + e]
                    } else {
                        odd[4 * (c / 2) + e]
                    };
                    assert_eq!(got, rows[e][c], "{n} columns: row {e}, column {c}");
                }
            }
            let mut all = vec![0u8; 4 * n];
            interleave_quads(r, &mut all);
            for c in 0..n {
                for e in 0..4 {
                    assert_eq!(
                        all[4 * c + e],
                        rows[e][c],
                        "{n} columns: row {e}, column {c}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_instruction_set_equals_the_naive_loop_exactly() {
        // Awkward sizes: depths not a multiple of 4 or 2, ragged rows and columns, a row stride wider
        // than the columns, extreme values (255 × −128) in every case.
        for (case, (m, k, n, ldb)) in [
            (1, 1, 1, 1),
            (8, 4, 32, 32),
            (13, 27, 45, 50),
            (20, 147, 70, 70),
            (3, 577, 7, 9),
            (64, 288, 100, 101),
        ]
        .into_iter()
        .enumerate()
        {
            let a: Vec<i8> = values(m * k, 11 + case as u64)
                .iter()
                .map(|&v| v as i8)
                .collect();
            let mut b: Vec<u8> = values(k * ldb, 97 + case as u64)
                .iter()
                .map(|&v| v as u8)
                .collect();
            let mut a = a;
            a[0] = -128;
            b[0] = 255;
            let starts: Vec<usize> = (0..k).map(|p| p * ldb).collect();
            let want: Vec<i32> = (0..m * n)
                .map(|idx| {
                    let (i, j) = (idx / n, idx % n);
                    (0..k)
                        .map(|p| i32::from(a[i * k + p]) * i32::from(b[p * ldb + j]))
                        .sum()
                })
                .collect();
            for isa in [Isa8::Vnni, Isa8::Avx2, Isa8::Portable]
                .into_iter()
                .filter(|i| i.available())
            {
                let packed = PackedS8::with_isa(isa, &a, m, k);
                let mut c = vec![i32::MIN; m * (n + 2)];
                let rows = RowsU8 {
                    data: &b,
                    starts: &starts,
                };
                gemm_u8s8(&packed, rows, n, (&mut c, n + 2), &mut Scratch8::default());
                for (idx, &w) in want.iter().enumerate() {
                    let (i, j) = (idx / n, idx % n);
                    assert_eq!(c[i * (n + 2) + j], w, "{isa:?} {m}x{k}x{n} at {i},{j}");
                }
                assert_eq!(
                    packed.row_sums()[0],
                    a[..k].iter().map(|&v| i32::from(v)).sum::<i32>()
                );
            }
        }
    }
}
