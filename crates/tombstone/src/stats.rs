//! What a key-value database records about itself so damage can be seen.
//!
//! sled recovers a damaged log by stopping at the first torn or corrupt
//! message: the database then opens as it was at some earlier point, with
//! no error, internally consistent. Two records make that visible:
//!
//! - **Per-tree statistics** in the meta tree: for every tree, the number
//!   of entries and a digest (the XOR of a hash of each key and value),
//!   updated in the same sled transaction as every write ([`Writes`]). A
//!   scan that finds other counts or another digest found lost or altered
//!   entries.
//! - **The write sequence**: a number the meta tree increments with every
//!   write transaction, copied after each flush into the sidecar file
//!   [`SIDECAR`] next to sled's files, outside sled's log. The sidecar is
//!   only ever written after the writes it counts are durable, so in an
//!   intact database the meta tree's sequence is never below the sidecar's;
//!   a recovered database that lost its last writes has a lower one.
//!
//! See docs/design.md §5.3.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sled::transaction::{TransactionalTree, UnabortableTransactionError};

/// The file, inside the database directory, holding the last write
/// sequence known to be durable.
pub const SIDECAR: &str = "nodestore.seq";

pub(crate) const SEQ_KEY: &[u8] = b"write-seq";
pub(crate) const STATS_PREFIX: &[u8] = b"stats/";
const STATS_V1: u8 = 1;

/// The digest of a set of entries: the XOR of [`Digest::of`] each entry,
/// so adding and removing entries in any order gives the same value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 16]);

impl Digest {
    /// The digest of one entry: SHA-256 over the key's length, the key and
    /// the value, cut to 16 bytes.
    pub fn of(key: &[u8], value: &[u8]) -> Digest {
        let mut h = Sha256::new();
        h.update((key.len() as u64).to_be_bytes());
        h.update(key);
        h.update(value);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize()[..16]);
        Digest(out)
    }

    /// Adds or removes `other` (the same operation).
    pub fn toggle(&mut self, other: Digest) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a ^= b;
        }
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// A tree's entry count and digest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeStats {
    /// Entries.
    pub count: u64,
    /// The digest of every entry.
    pub digest: Digest,
}

impl TreeStats {
    /// Counts an entry in.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.count += 1;
        self.digest.toggle(Digest::of(key, value));
    }

    /// The statistics of every entry `entries` yields.
    pub fn of<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> TreeStats {
        let mut s = TreeStats::default();
        for (k, v) in entries {
            s.add(k.as_ref(), v.as_ref());
        }
        s
    }
}

pub(crate) fn stats_key(tree: &str) -> Vec<u8> {
    let mut k = STATS_PREFIX.to_vec();
    k.extend_from_slice(tree.as_bytes());
    k
}

pub(crate) fn encode_stats(s: &TreeStats) -> Vec<u8> {
    // A fixed record of a u64 and 16 bytes cannot fail to encode.
    kvcodec::encode(STATS_V1, s).unwrap_or_default()
}

pub(crate) fn decode_stats(raw: &[u8]) -> Result<TreeStats, kvcodec::CodecError> {
    kvcodec::decode(raw, STATS_V1)
}

pub(crate) fn decode_seq(raw: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(raw).ok().map(u64::from_be_bytes)
}

/// Every tree's statistics from the meta tree's `stats/` entries, by tree
/// name.
pub(crate) fn read_all(
    entries: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<BTreeMap<String, TreeStats>, String> {
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let name = String::from_utf8_lossy(&k[STATS_PREFIX.len().min(k.len())..]).into_owned();
        let s = decode_stats(&v).map_err(|e| format!("statistics of tree {name}: {e}"))?;
        out.insert(name, s);
    }
    Ok(out)
}

/// Tree position `t` is not one of the `n` trees of the write.
fn no_tree(t: usize, n: usize) -> UnabortableTransactionError {
    UnabortableTransactionError::Storage(sled::Error::Unsupported(format!(
        "no tree at position {t} of a write over {n} trees"
    )))
}

/// The open write transaction of [`crate::KvDb::write`]: every insert and
/// remove goes through it, so the tree's statistics follow each change.
pub struct Writes<'a> {
    pub(crate) trees: &'a [TransactionalTree],
    pub(crate) deltas: Vec<(i64, Digest)>,
}

impl Writes<'_> {
    /// Tree `t` of the transaction, or an error naming the position (a
    /// store asking for a tree it did not open is a bug, not a panic).
    fn tree(&self, t: usize) -> Result<&TransactionalTree, UnabortableTransactionError> {
        self.trees
            .get(t)
            .ok_or_else(|| no_tree(t, self.trees.len()))
    }

    /// The statistics change of tree `t` (kept beside each tree).
    fn delta(&mut self, t: usize) -> Result<&mut (i64, Digest), UnabortableTransactionError> {
        let n = self.deltas.len();
        self.deltas.get_mut(t).ok_or_else(|| no_tree(t, n))
    }

    /// The value of `key` in tree `t` (as the transaction sees it).
    pub fn get(
        &self,
        t: usize,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<sled::IVec>, UnabortableTransactionError> {
        self.tree(t)?.get(key)
    }

    /// Inserts or replaces `key` in tree `t`; returns the old value.
    pub fn insert(
        &mut self,
        t: usize,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Option<sled::IVec>, UnabortableTransactionError> {
        let (key, value) = (key.as_ref(), value.as_ref());
        let old = self.tree(t)?.insert(key, value)?;
        let d = self.delta(t)?;
        match &old {
            Some(o) => d.1.toggle(Digest::of(key, o)),
            None => d.0 += 1,
        }
        d.1.toggle(Digest::of(key, value));
        Ok(old)
    }

    /// Removes `key` from tree `t`; returns the old value.
    pub fn remove(
        &mut self,
        t: usize,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<sled::IVec>, UnabortableTransactionError> {
        let key = key.as_ref();
        let old = self.tree(t)?.remove(key)?;
        if let Some(o) = &old {
            let d = self.delta(t)?;
            d.0 -= 1;
            d.1.toggle(Digest::of(key, o));
        }
        Ok(old)
    }
}

/// Applies a transaction's deltas to the stored statistics and bumps the
/// write sequence, inside the same transaction.
pub(crate) fn apply_deltas(
    meta: &TransactionalTree,
    names: &[String],
    deltas: &[(i64, Digest)],
) -> Result<(), UnabortableTransactionError> {
    for (name, (count, digest)) in names.iter().zip(deltas) {
        if *count == 0 && *digest == Digest::default() {
            continue;
        }
        let key = stats_key(name);
        let mut s = meta
            .get(&key)?
            .and_then(|raw| decode_stats(&raw).ok())
            .unwrap_or_default();
        s.count = s.count.saturating_add_signed(*count);
        s.digest.toggle(*digest);
        meta.insert(key, encode_stats(&s))?;
    }
    let seq = meta.get(SEQ_KEY)?.and_then(|r| decode_seq(&r)).unwrap_or(0);
    meta.insert(SEQ_KEY, &(seq + 1).to_be_bytes())?;
    Ok(())
}

/// The sidecar file of a database directory.
pub(crate) struct Sidecar {
    file: std::sync::Mutex<Option<File>>,
    path: std::path::PathBuf,
}

impl Sidecar {
    pub(crate) fn new(dir: &Path) -> Sidecar {
        Sidecar {
            file: std::sync::Mutex::new(None),
            path: dir.join(SIDECAR),
        }
    }

    /// Records `seq` as durable (never lowering what is recorded).
    pub(crate) fn record(&self, seq: u64) -> std::io::Result<()> {
        let Ok(mut guard) = self.file.lock() else {
            return Ok(());
        };
        if guard.is_none() {
            use std::os::unix::fs::OpenOptionsExt as _;
            *guard = Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&self.path)?,
            );
        }
        if let Some(f) = guard.as_ref() {
            let mut cur = [0u8; 8];
            let known = f
                .read_exact_at(&mut cur, 0)
                .map_or(0, |_| u64::from_be_bytes(cur));
            if seq > known {
                // Eight bytes at offset 0: one sector, written whole.
                f.write_all_at(&seq.to_be_bytes(), 0)?;
            }
        }
        Ok(())
    }
}

/// The sequence recorded in the sidecar of `dir`; `None` when there is no
/// readable sidecar (a database from before sidecars, or a lost file).
pub fn read_sidecar(dir: &Path) -> Option<u64> {
    let mut buf = Vec::new();
    File::open(dir.join(SIDECAR))
        .ok()?
        .read_to_end(&mut buf)
        .ok()?;
    decode_seq(buf.get(..8)?)
}
