//! Read-only access to Caffe's LMDB databases (`data.mdb` in a folder), opened without the lock file so
//! that read-only checkouts open (nothing writes while we read). heed ties a database handle to its
//! environment's lifetime, so access is scoped: `with_records` opens, visits and closes.

use std::ops::ControlFlow;
use std::path::Path;

use heed::types::Bytes;
use heed::{CommitOrAbort, EnvFlags, EnvOpenOptions};

/// Visits the records in key order until `visit` breaks; returns how many were visited.
pub fn with_records(
    dir: &Path,
    mut visit: impl FnMut(&[u8], &[u8]) -> ControlFlow<()>,
) -> Result<u64, String> {
    let data = dir.join("data.mdb");
    let size = std::fs::metadata(&data)
        .map_err(|e| format!("{}: no LMDB here ({e})", data.display()))?
        .len();
    let fail = |e: heed::Error| format!("{}: {e}", dir.display());
    let mut opts = EnvOpenOptions::new();
    opts.map_size(
        usize::try_from(size)
            .unwrap_or(usize::MAX)
            .max(1 << 20)
            .next_multiple_of(4096),
    );
    #[allow(unsafe_code)]
    // SAFETY: heed marks opening unsafe because an environment must not be opened twice in one process with
    // conflicting flags nor modified while mapped; we open read-only and nothing writes to calibration data
    // while the tool reads it.
    let env = unsafe {
        opts.flags(EnvFlags::READ_ONLY | EnvFlags::NO_LOCK)
            .open(dir)
    }
    .map_err(fail)?;
    let rtxn = env.read_txn().map_err(fail)?;
    let db = env
        .open_databases_and_commit(rtxn, |dbo, rtxn| -> Result<_, heed::Error> {
            Ok(match dbo.open_database::<Bytes, Bytes>(rtxn, None)? {
                Some(db) => CommitOrAbort::Commit(db),
                None => CommitOrAbort::Abort(()),
            })
        })
        .map_err(fail)?
        .commit()
        .ok_or_else(|| format!("{}: the LMDB has no main database", dir.display()))?;
    let rtxn = env.read_txn().map_err(fail)?;
    let mut n = 0;
    for item in db.iter(&rtxn).map_err(fail)? {
        let (k, v) = item.map_err(fail)?;
        n += 1;
        if visit(k, v).is_break() {
            break;
        }
    }
    Ok(n)
}

/// The value of the first record in key order.
pub fn first(dir: &Path) -> Result<Vec<u8>, String> {
    let mut out = None;
    with_records(dir, |_, v| {
        out = Some(v.to_vec());
        ControlFlow::Break(())
    })?;
    out.ok_or_else(|| format!("{}: the database is empty", dir.display()))
}
