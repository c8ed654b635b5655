//! Read-only access to Caffe's LMDB databases (`data.mdb` in a folder), opened without the lock file so
//! that read-only checkouts open (nothing writes while we read). Each folder is opened once per process
//! and shared (heed refuses a second open); `with_records` takes a read transaction, visits, and ends it.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, PoisonError};

use heed::types::Bytes;
use heed::{CommitOrAbort, Env, EnvFlags, EnvOpenOptions};

/// Environments this process opened, by canonical folder. heed refuses a second open of an
/// environment while the first is alive, and two readers at once are normal (the app reading a data
/// layer's shapes while a calibration feeds batches; tests in parallel), so every reader shares one,
/// kept open for the life of the process (the data is read-only; a file rewritten meanwhile keeps its
/// first size).
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Env>>> = LazyLock::new(Default::default);

fn shared_env(dir: &Path, size: u64) -> Result<Env, heed::Error> {
    let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(env) = open.get(&key) {
        return Ok(env.clone());
    }
    let mut opts = EnvOpenOptions::new();
    opts.map_size(
        usize::try_from(size)
            .unwrap_or(usize::MAX)
            .max(1 << 20)
            .next_multiple_of(4096),
    );
    #[allow(unsafe_code)]
    // SAFETY: heed marks opening unsafe because an environment must not be opened twice in one process
    // (every open goes through this cache) nor modified while mapped; we open read-only and nothing
    // writes to calibration data while the tool reads it.
    let env = unsafe {
        opts.flags(EnvFlags::READ_ONLY | EnvFlags::NO_LOCK)
            .open(dir)
    }?;
    open.insert(key, env.clone());
    Ok(env)
}

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
    let env = shared_env(dir, size).map_err(fail)?;
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

/// The key and value of the first record in key order.
pub fn first(dir: &Path) -> Result<(String, Vec<u8>), String> {
    let mut out = None;
    with_records(dir, |k, v| {
        out = Some((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
        ControlFlow::Break(())
    })?;
    out.ok_or_else(|| format!("{}: the database is empty", dir.display()))
}

/// Writes the first `n` records of the LMDB in `src` (key order, keys and values unchanged) into a new
/// LMDB in `dst`, which must not exist yet. Used to make the bundled example's data.
pub fn write_subset(src: &Path, dst: &Path, n: usize) -> Result<usize, String> {
    if dst.exists() {
        return Err(format!(
            "{}: already exists; choose a new folder",
            dst.display()
        ));
    }
    let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(n);
    with_records(src, |k, v| {
        records.push((k.to_vec(), v.to_vec()));
        if records.len() >= n {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    std::fs::create_dir_all(dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    let fail = |e: heed::Error| format!("{}: {e}", dst.display());
    let bytes: usize = records.iter().map(|(k, v)| k.len() + v.len() + 64).sum();
    let mut opts = EnvOpenOptions::new();
    opts.map_size((bytes * 2 + (1 << 20)).next_multiple_of(4096));
    #[allow(unsafe_code)]
    // SAFETY: a new environment in a folder we just created; nothing else opens it while we write.
    let env = unsafe { opts.open(dst) }.map_err(fail)?;
    let db = env
        .create_databases_and_commit(
            env.write_txn().map_err(fail)?,
            |dbo, wtxn| -> Result<_, heed::Error> {
                Ok(CommitOrAbort::<_, ()>::Commit(
                    dbo.create_database::<Bytes, Bytes>(wtxn, None)?,
                ))
            },
        )
        .map_err(fail)?
        .commit()
        .ok_or_else(|| format!("{}: could not create the database", dst.display()))?;
    let mut wtxn = env.write_txn().map_err(fail)?;
    for (k, v) in &records {
        db.put(&mut wtxn, k, v).map_err(fail)?;
    }
    wtxn.commit().map_err(fail)?;
    Ok(records.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_readers_of_one_folder_at_once() {
        // The bundled example's LMDB, read from inside a visit of itself (heed refuses a second open
        // of a live environment; the shared one serves both).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/example/data/test_lmdb");
        let mut inner = 0;
        let outer = with_records(&dir, |_, _| {
            inner = with_records(&dir, |_, _| ControlFlow::Break(())).unwrap_or(0);
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!((outer, inner), (1, 1));
    }

    #[test]
    fn subset_keeps_the_first_records_in_order() {
        let Some(src) = ["../shared/fixtures/lenet_mnist/data/test_lmdb"]
            .iter()
            .map(Path::new)
            .find(|p| p.is_dir())
        else {
            eprintln!("SKIPPED: ../shared/fixtures is absent");
            return;
        };
        let dst = std::env::temp_dir().join(format!("int8cal-lmdb-subset-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dst);
        assert_eq!(write_subset(src, &dst, 25).unwrap(), 25);
        let collect = |dir: &Path, n: usize| {
            let mut v = Vec::new();
            with_records(dir, |k, val| {
                v.push((k.to_vec(), val.to_vec()));
                if v.len() >= n {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
            v
        };
        assert_eq!(collect(&dst, usize::MAX), collect(src, 25));
        assert!(
            write_subset(src, &dst, 5)
                .unwrap_err()
                .contains("already exists")
        );
    }
}
