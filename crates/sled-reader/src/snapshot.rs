//! sled's snapshot file (`snap.<lsn>`): the page table as of a stable
//! point of the log, which recovery then brings up to date
//! (docs/sled-format.md §3).

use std::path::{Path, PathBuf};

use crate::Error;
use crate::codec::{Cursor, Short};
use crate::log::{Loc, Log, PageState, PageTable, read_small};

/// A page table as of a snapshot (sled's `Snapshot`).
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) stable_lsn: Option<i64>,
    pub(crate) pages: PageTable,
}

/// The `snap.*` files sled would consider, newest name last.
fn snapshot_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("snap.") && !name.ends_with(".in___motion")
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// A snapshot file's body, checked: its length and crc.
fn snapshot_body(path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    let mut buf = read_small(path, max)?;
    let damaged = |reason: &str| Error::damaged_file(path, reason);
    if buf.len() <= 12 {
        return Err(damaged("the snapshot file is empty or cut short"));
    }
    let n = buf.len();
    let crc = u32::from_le_bytes([buf[n - 4], buf[n - 3], buf[n - 2], buf[n - 1]]);
    buf.truncate(n - 12);
    if crc32fast::hash(&buf) != crc {
        return Err(damaged("the snapshot's checksum does not match its bytes"));
    }
    Ok(buf)
}

/// A snapshot sled was writing when it stopped: named `snap.*.generating`
/// (sled writes it under that name, then renames it), sorted last, and not
/// whole. sled 0.34.7 picks it and fails to open the database; it is not a
/// snapshot, and the one before it with the log after it is the state
/// (docs/sled-format.md §3). Returns its path.
pub(crate) fn unfinished_snapshot(dir: &Path) -> Result<Option<PathBuf>, Error> {
    let Some(last) = snapshot_files(dir)?.pop() else {
        return Ok(None);
    };
    let generating = last
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(".generating"));
    // As large as `read_snapshot` allows: about twice the log.
    let max = std::fs::metadata(dir.join("db"))
        .map(|m| m.len())
        .unwrap_or(0)
        .saturating_mul(2)
        .max(1 << 20);
    Ok((generating && snapshot_body(&last, max).is_err()).then_some(last))
}

/// Reads the snapshot sled would read: the `snap.*` file whose name sorts
/// last, except one sled stopped writing ([`unfinished_snapshot`]), which
/// is passed over for the one before it. A damaged one is an error, as in
/// sled.
pub(crate) fn read_snapshot(log: &Log) -> Result<(Option<PathBuf>, Snapshot), Error> {
    let dir = &log.dir;
    let mut files = snapshot_files(dir)?;
    if unfinished_snapshot(dir)?.is_some() {
        files.pop();
    }
    let Some(path) = files.pop() else {
        return Ok((None, Snapshot::default()));
    };
    // A snapshot holds one entry per page: far smaller than the log.
    let body = snapshot_body(&path, log.len.saturating_mul(2).max(1 << 20))?;
    let snap = decode_snapshot(&body)
        .map_err(|e| Error::damaged_file(&path, format!("the snapshot does not decode: {e}")))?;
    Ok((Some(path), snap))
}

fn decode_ptr(c: &mut Cursor<'_>) -> Result<(u64, Option<i64>), Short> {
    if c.remaining() < 2 {
        return Err(Short::Truncated);
    }
    match c.u8()? {
        0 => Ok((c.varint()?, None)),
        1 => {
            let lid = c.varint()?;
            Ok((lid, Some(c.i64_le()?)))
        }
        t => Err(Short::BadTag(t)),
    }
}

fn decode_loc(c: &mut Cursor<'_>) -> Result<Loc, Short> {
    let lsn = c.i64_le()?;
    let (lid, blob) = decode_ptr(c)?;
    let size = c.varint()?;
    Ok(Loc {
        lsn,
        lid,
        blob,
        size,
    })
}

fn decode_snapshot(body: &[u8]) -> Result<Snapshot, Short> {
    let mut c = Cursor::new(body);
    let stable_lsn = c.opt_i64()?;
    let _active_segment = c.opt_varint()?;
    let mut pages = PageTable::default();
    while !c.is_empty() {
        let tag = c.u8()?;
        let state = if tag == 0 {
            let _lsn = c.i64_le()?;
            let _ = decode_ptr(&mut c)?;
            PageState::Free
        } else {
            let base = decode_loc(&mut c)?;
            let mut frags = Vec::new();
            for _ in 1..tag {
                if c.is_empty() {
                    break;
                }
                frags.push(decode_loc(&mut c)?);
            }
            PageState::Present { base, frags }
        };
        pages.push(state);
    }
    Ok(Snapshot { stable_lsn, pages })
}
