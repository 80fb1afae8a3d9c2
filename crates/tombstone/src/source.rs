//! Reading a database for a migration, live or retired, without writing
//! to it: [`MigrationSource`] and its trees ([`ReadTree`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{
    Error, FORMAT_V1, FORMAT_VERSION, IDENTITY_KEY, KvOptions, META_TREE, Result, Status,
    TreeStats, copy_tree, rand_suffix, read_sidecar, reader_get, reader_status, refuse_in_use,
    stats, writes_of_an_emptied,
};

/// A database opened by the migrator: live or retired, read-only.
///
/// Opened by path ([`MigrationSource::open`]), it is read by
/// [`sled_reader`], which never writes a byte of the directory, never
/// panics on damage and streams in bounded memory (docs/sled-format.md).
/// Taken from a node's open handle ([`KvDb::as_source`](crate::KvDb::as_source)), it reads through
/// sled, which holds the files.
pub struct MigrationSource {
    files: Files,
    path: PathBuf,
    status: Status,
    /// What salvaging reads skipped ([`KvOptions::salvage`]).
    salvaged: Arc<std::sync::Mutex<Vec<sled_reader::Damage>>>,
}

#[derive(Clone)]
enum Files {
    Sled(sled::Db),
    Reader { db: sled_reader::Db, salvage: bool },
}

impl fmt::Debug for MigrationSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigrationSource")
            .field("path", &self.path)
            .field("status", &self.status)
            .finish()
    }
}

impl MigrationSource {
    /// A source read through a node's open sled handle.
    pub(crate) fn through_sled(db: sled::Db, path: PathBuf, status: Status) -> MigrationSource {
        MigrationSource {
            files: Files::Sled(db),
            path,
            status,
            salvaged: Arc::default(),
        }
    }

    /// Opens the database at `path` for reading, whether live or retired,
    /// without writing to it. With [`KvOptions::salvage`], the log is read
    /// past damage ([`sled_reader::Db::open_salvaging`]), trees read past
    /// pages that cannot be read, and [`MigrationSource::salvaged`] lists
    /// what was skipped.
    ///
    /// # Errors
    /// [`Error::Missing`] when there is no database,
    /// [`Error::UnsupportedFormat`] for a format this binary cannot read,
    /// and [`Error::Read`] when its files cannot be read.
    pub fn open(path: impl AsRef<Path>, opts: &KvOptions) -> Result<MigrationSource> {
        let path = path.as_ref().to_path_buf();
        if !sled_reader::holds_database(&path) {
            return Err(Error::Missing(path));
        }
        refuse_in_use(&path)?;
        // A salvage also reads past damage in the log, where sled's own
        // recovery stops (docs/sled-format.md §6).
        let db = if opts.salvage {
            sled_reader::Db::open_salvaging(&path)?
        } else {
            sled_reader::Db::open(&path)?
        };
        if db.report().conf_missing {
            tracing::warn!(
                kv = %path.display(),
                "sled's configuration file conf is missing or empty: the log is read with \
                 sled's defaults, as a node's sled opens it"
            );
        }
        let status = reader_status(&db, &path)?;
        match status {
            Status::Live(FORMAT_VERSION | FORMAT_V1) | Status::Tombstoned(_) => {}
            Status::Empty => return Err(Error::Uninitialised(path)),
            Status::Live(found) => return Err(Error::UnsupportedFormat { path, found }),
        }
        Ok(MigrationSource {
            files: Files::Reader {
                db,
                salvage: opts.salvage,
            },
            path,
            status,
            salvaged: Arc::default(),
        })
    }

    /// What the reader found when it opened the files (`None` when read
    /// through a node's sled handle).
    pub fn read_report(&self) -> Option<&sled_reader::OpenReport> {
        match &self.files {
            Files::Reader { db, .. } => Some(db.report()),
            Files::Sled(_) => None,
        }
    }

    /// Reads the database with sled as well, on a copy (sled writes to what
    /// it opens), and compares the two readers tree by tree: for a format 1
    /// database, which kept no statistics to check the reader against
    /// (docs/sled-format.md §6). Returns each disagreement in words (empty
    /// when they agree); `Ok` with nothing to compare when this source is
    /// read through sled already.
    ///
    /// # Errors
    /// [`Error::Io`] when the copy cannot be made, [`Error::Sled`] when
    /// sled cannot open it, [`Error::SledPanicked`] when it panics on it
    /// (the migration compares only a source it read without damage).
    pub fn cross_check_with_sled(&self) -> Result<Vec<String>> {
        let Files::Reader { db, .. } = &self.files else {
            return Ok(Vec::new());
        };
        let copy = std::env::temp_dir().join(format!(
            "nodestore-cross-check-{}-{:016x}",
            std::process::id(),
            rand_suffix()
        ));
        // sled panics on some damaged logs: its panic is an error here too.
        let result = crate::catch_sled_panic(&self.path, || {
            copy_tree(&self.path, &copy).map_err(|source| Error::Io {
                path: copy.clone(),
                source,
            })?;
            let sled_db = sled::Config::new()
                .path(&copy)
                .cache_capacity(16 << 20)
                .open()?;
            let mut out = Vec::new();
            let mut names: Vec<Vec<u8>> = sled_db.tree_names().iter().map(|n| n.to_vec()).collect();
            names.sort();
            let mine: Vec<Vec<u8>> = db.tree_names().map(<[u8]>::to_vec).collect();
            for name in names.iter().filter(|n| !mine.contains(n)) {
                if !sled_db.open_tree(name)?.is_empty() {
                    out.push(format!(
                        "tree {}: only sled reads it",
                        String::from_utf8_lossy(name)
                    ));
                }
            }
            for name in &mine {
                let shown = String::from_utf8_lossy(name).into_owned();
                let Some(tree) = db.tree(name) else { continue };
                let theirs = sled_db.open_tree(name)?;
                let mut a = tree.iter();
                let mut b = theirs.iter();
                let mut n = 0u64;
                loop {
                    match (a.next(), b.next()) {
                        (None, None) => break,
                        (Some(Ok(x)), Some(Ok((k, v))))
                            if x.0 == k.as_ref() && x.1 == v.as_ref() =>
                        {
                            n += 1
                        }
                        (x, y) => {
                            out.push(format!(
                                "tree {shown}: the readers disagree at entry {n} ({} against sled's {})",
                                describe(x.map(|r| r.map_err(|e| e.to_string()))),
                                describe(y.map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(|e| e.to_string())))
                            ));
                            break;
                        }
                    }
                }
            }
            Ok(out)
        })
        .and_then(|r| r);
        let _ = std::fs::remove_dir_all(&copy);
        result
    }

    /// What a salvaging source skipped: the log ranges its open could not
    /// read, then the pages its reads skipped so far, in the order met.
    pub fn salvaged(&self) -> Vec<sled_reader::Damage> {
        let mut out = match &self.files {
            Files::Reader { db, salvage: true } => db.report().skipped.clone(),
            _ => Vec::new(),
        };
        out.extend(self.salvaged.lock().map(|d| d.clone()).unwrap_or_default());
        out
    }

    /// Why no node can open this database through sled, when reading it
    /// found out: sled would panic on it
    /// ([`sled_reader::OpenReport::sled_cannot_open`]), so writing a mark
    /// through sled is bound to fail after sled wrote to the log.
    /// Also when sled's own view of it holds no nodestore metadata though
    /// the sidecar recorded writes: [`crate::KvDb::open`] refuses it then.
    pub fn sled_cannot_open(&self) -> Option<String> {
        let Files::Reader { db, .. } = &self.files else {
            return None;
        };
        if let Some(d) = &db.report().sled_cannot_open {
            return Some(d.to_string());
        }
        let view = db.sled_view()?;
        let seq = writes_of_an_emptied(&self.path)?;
        matches!(reader_status(&view, &self.path), Ok(Status::Empty)).then(|| {
            format!(
                "sled's own view of {} holds no nodestore metadata, though {seq} write \
                 transactions were recorded: damage took them, and a node refuses to open it",
                self.path.display()
            )
        })
    }

    /// The names of every tree in the database (sled's default tree and the
    /// meta tree included), sorted.
    pub fn tree_names(&self) -> Vec<String> {
        let mut names: Vec<String> = match &self.files {
            Files::Sled(db) => db
                .tree_names()
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect(),
            Files::Reader { db, .. } => db
                .tree_names()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect(),
        };
        names.sort();
        names
    }

    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match &self.files {
            Files::Sled(db) => Ok(db.open_tree(META_TREE)?.get(key)?.map(|v| v.to_vec())),
            Files::Reader { db, .. } => reader_get(db, META_TREE, key),
        }
    }

    /// The statistics the stores recorded for each tree; `None` for a format
    /// 1 database, which kept none.
    pub fn recorded_stats(&self) -> Result<Option<BTreeMap<String, TreeStats>>> {
        if self.meta_get(stats::SEQ_KEY)?.is_none() {
            return Ok(None);
        }
        let Some(meta) = self.tree(META_TREE)? else {
            return Ok(None);
        };
        let mut entries = Vec::new();
        for item in meta.iter() {
            let (k, v) = item?;
            if k.starts_with(stats::STATS_PREFIX) {
                entries.push((k, v));
            }
        }
        stats::read_all(entries)
            .map(Some)
            .map_err(|reason| Error::Corrupt {
                path: self.path.clone(),
                what: "tree statistics",
                reason,
            })
    }

    /// The write sequence the meta tree records (`None` for format 1).
    pub fn write_seq(&self) -> Result<Option<u64>> {
        Ok(self
            .meta_get(stats::SEQ_KEY)?
            .and_then(|r| stats::decode_seq(&r)))
    }

    /// The write sequence the sidecar file records as durable, if any.
    pub fn sidecar_seq(&self) -> Option<u64> {
        read_sidecar(&self.path)
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the database was live or retired when opened.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The random identity written when the database was created.
    pub fn identity(&self) -> Result<Option<[u8; 16]>> {
        Ok(self
            .meta_get(IDENTITY_KEY)?
            .and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok()))
    }

    /// A store's tree for reading; `None` when the store has no tree (it
    /// never wrote anything), so reading never creates one.
    pub fn tree(&self, name: &str) -> Result<Option<ReadTree>> {
        let inner = match &self.files {
            Files::Sled(db) => {
                let exists = db
                    .tree_names()
                    .iter()
                    .any(|n| n.as_ref() == name.as_bytes());
                if !exists {
                    return Ok(None);
                }
                TreeFiles::Sled(db.open_tree(name)?)
            }
            Files::Reader { db, salvage } => match db.tree(name.as_bytes()) {
                Some(t) => TreeFiles::Reader {
                    tree: t,
                    salvage: *salvage,
                    salvaged: Arc::clone(&self.salvaged),
                },
                None => return Ok(None),
            },
        };
        Ok(Some(ReadTree {
            inner,
            name: name.to_owned(),
        }))
    }
}

/// A tree that can only be read.
#[derive(Debug, Clone)]
pub struct ReadTree {
    inner: TreeFiles,
    name: String,
}

#[derive(Debug, Clone)]
enum TreeFiles {
    Sled(sled::Tree),
    Reader {
        tree: sled_reader::Tree,
        salvage: bool,
        salvaged: Arc<std::sync::Mutex<Vec<sled_reader::Damage>>>,
    },
}

/// One entry of a tree: its key and value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A salvaging read: yields what it can read and, at its end, adds what it
/// skipped to the source's list.
struct Salvaging {
    iter: sled_reader::Iter,
    salvaged: Arc<std::sync::Mutex<Vec<sled_reader::Damage>>>,
}

impl Iterator for Salvaging {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.iter.next();
        if item.is_none() {
            let found = self.iter.take_damage();
            if !found.is_empty()
                && let Ok(mut s) = self.salvaged.lock()
            {
                s.extend(found);
            }
        }
        item.map(|r| r.map_err(Error::from))
    }
}

impl ReadTree {
    /// The tree's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        match &self.inner {
            TreeFiles::Sled(t) => Ok(t.get(key)?.map(|v| v.to_vec())),
            TreeFiles::Reader { tree, .. } => Ok(tree.get(key.as_ref())?),
        }
    }

    /// Every entry in key order. A salvaging source skips what it cannot
    /// read (see [`MigrationSource::salvaged`]).
    pub fn iter(&self) -> Box<dyn Iterator<Item = Result<Entry>> + Send> {
        match &self.inner {
            TreeFiles::Sled(t) => Box::new(t.iter().map(|r| {
                r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(Error::from)
            })),
            TreeFiles::Reader {
                tree,
                salvage: false,
                ..
            } => Box::new(tree.iter().map(|r| r.map_err(Error::from))),
            TreeFiles::Reader {
                tree,
                salvage: true,
                salvaged,
            } => Box::new(Salvaging {
                iter: tree.salvage(),
                salvaged: Arc::clone(salvaged),
            }),
        }
    }

    /// The last entry, found without reading the whole tree.
    pub fn last(&self) -> Result<Option<Entry>> {
        match &self.inner {
            TreeFiles::Sled(t) => Ok(t.last()?.map(|(k, v)| (k.to_vec(), v.to_vec()))),
            TreeFiles::Reader { tree, .. } => Ok(tree.last()?),
        }
    }

    /// The number of entries (walks the tree).
    pub fn len(&self) -> usize {
        match &self.inner {
            TreeFiles::Sled(t) => t.len(),
            TreeFiles::Reader { tree, .. } => tree.iter().take_while(|r| r.is_ok()).count(),
        }
    }

    /// True when the tree has no entries.
    pub fn is_empty(&self) -> bool {
        match &self.inner {
            TreeFiles::Sled(t) => t.is_empty(),
            TreeFiles::Reader { tree, .. } => tree.iter().next().is_none(),
        }
    }
}

fn describe(x: Option<std::result::Result<Entry, String>>) -> String {
    match x {
        None => "the end of the tree".into(),
        Some(Ok((k, _))) => format!("key {}", hex_short(&k)),
        Some(Err(e)) => format!("an error: {e}"),
    }
}

fn hex_short(b: &[u8]) -> String {
    let mut s: String = b.iter().take(24).map(|x| format!("{x:02x}")).collect();
    if b.len() > 24 {
        s.push('…');
    }
    s
}
