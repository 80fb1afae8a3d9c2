//! Retiring a nodestore key-value database after its data moved to SQL.
//!
//! A node keeps all its key-value data in one sled database (a directory),
//! one tree per store, plus the meta tree [`META_TREE`] that holds the
//! database's format version, its identity (16 random bytes written at
//! creation, so the SQL side can tell which database it migrated) and,
//! once retired, its tombstone.
//!
//! # The contract
//! - **Who may open a database for use**: [`KvDb::open`] only. It creates a
//!   new database at [`FORMAT_VERSION`], opens an existing one of that
//!   format, and refuses a tombstoned one with [`Error::Tombstoned`], which
//!   names the database, when it was migrated, by which nodestore version,
//!   and into which SQL target. Every KV store constructor also calls
//!   [`KvDb::check`], so a handle cannot be smuggled past it.
//! - **The mark** ([`mark`]): written only after the SQL transaction that
//!   holds the migrated data has committed. It records when, by which
//!   nodestore version, and into which SQL target (never with a password),
//!   and it sets the format version to [`TOMBSTONED_FORMAT`], which no
//!   nodestore binary opens for use. A binary from before tombstones existed
//!   knows only format 1 and refuses the database as an unknown format, so a
//!   downgrade cannot reopen it either. Marking twice is harmless: the latest
//!   mark is kept and the database stays retired.
//! - **Who may still read a retired database**: the migrator, through
//!   [`MigrationSource`], which skips the tombstone check and hands out
//!   read-only trees. If the SQL database is ever lost, the data can be
//!   migrated again from the retired KV database.
//! - **When the mark cannot be written**, the SQL data is already
//!   authoritative; the caller records the mark as pending on the SQL side
//!   and retries it on the next start (the `nodestore` facade does this).
//! - Nothing here ever deletes data.
#![warn(
    clippy::unwrap_used,
    reason = "a panic in a storage library is a bug; errors are values"
)]

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// The tree holding the format version and the tombstone.
pub const META_TREE: &str = "nodestore.meta";
/// The format of a live nodestore key-value database.
pub const FORMAT_VERSION: u32 = 1;
/// The format of a retired database: no binary opens it for use.
pub const TOMBSTONED_FORMAT: u32 = 0x7001_0000;

const FORMAT_KEY: &[u8] = b"format";
const IDENTITY_KEY: &[u8] = b"identity";
const TOMBSTONE_KEY: &[u8] = b"tombstone";
const MARK_RECORD_V1: u8 = 1;

/// Everything that can go wrong opening, checking or marking a database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database was migrated to SQL and may no longer be used.
    #[error(
        "the key-value database {path} was migrated to SQL on {when} (by nodestore {version}) into {target} \
         and can no longer be used; run on the SQL backend",
        when = .mark.marked_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        version = .mark.nodestore_version,
        target = .mark.target
    )]
    Tombstoned {
        /// The database directory.
        path: PathBuf,
        /// The tombstone.
        mark: Mark,
    },
    /// The database has a format this binary does not know.
    #[error(
        "the key-value database {path} has format version {found}; this nodestore reads version {FORMAT_VERSION}"
    )]
    UnsupportedFormat {
        /// The database directory.
        path: PathBuf,
        /// The format version found.
        found: u32,
    },
    /// There is no database at the path (for paths that must exist).
    #[error("no key-value database at {0}")]
    Missing(PathBuf),
    /// A meta value could not be read.
    #[error("the key-value database {path} has a corrupt {what}: {reason}")]
    Corrupt {
        /// The database directory.
        path: PathBuf,
        /// Which meta value.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// sled failed.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The tombstone of a retired database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// When the data's migration committed (UTC).
    pub marked_at: DateTime<Utc>,
    /// The nodestore version that migrated it.
    pub nodestore_version: String,
    /// The SQL target, as `sqlite:<path>` or a PostgreSQL URL without password.
    pub target: String,
}

#[derive(Serialize, Deserialize)]
struct MarkRecordV1 {
    marked_at_unix_micros: i64,
    nodestore_version: String,
    target: String,
}

/// What a database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// A new database: nothing written yet.
    Empty,
    /// In use, at this format version.
    Live(u32),
    /// Retired.
    Tombstoned(Mark),
}

/// sled settings for opening a database.
#[derive(Debug, Clone)]
pub struct KvOptions {
    /// sled's page cache, in bytes (64 MiB by default, sled's own default is 1 GiB).
    pub cache_capacity: u64,
}

impl Default for KvOptions {
    fn default() -> Self {
        KvOptions {
            cache_capacity: 64 << 20,
        }
    }
}

/// How long an open waits for sled's file lock, as the reference's bbolt
/// opens do: sled releases the lock shortly after the last handle is dropped
/// (its background writers finish first), so a close followed by an open in
/// the same process would otherwise fail now and then.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn is_lock_conflict(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn open_sled(path: &Path, opts: &KvOptions) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(opts.cache_capacity)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(e) if is_lock_conflict(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn read_status(db: &sled::Db, path: &Path) -> Result<Status> {
    let meta = db.open_tree(META_TREE)?;
    if let Some(raw) = meta.get(TOMBSTONE_KEY)? {
        let rec: MarkRecordV1 =
            kvcodec::decode(&raw, MARK_RECORD_V1).map_err(|e| Error::Corrupt {
                path: path.to_path_buf(),
                what: "tombstone",
                reason: e.to_string(),
            })?;
        let marked_at = Utc
            .timestamp_micros(rec.marked_at_unix_micros)
            .single()
            .ok_or_else(|| Error::Corrupt {
                path: path.to_path_buf(),
                what: "tombstone",
                reason: "time out of range".into(),
            })?;
        return Ok(Status::Tombstoned(Mark {
            marked_at,
            nodestore_version: rec.nodestore_version,
            target: rec.target,
        }));
    }
    match meta.get(FORMAT_KEY)? {
        None => Ok(Status::Empty),
        Some(raw) => {
            let bytes: [u8; 4] = raw.as_ref().try_into().map_err(|_| Error::Corrupt {
                path: path.to_path_buf(),
                what: "format version",
                reason: format!("{} bytes, expected 4", raw.len()),
            })?;
            Ok(Status::Live(u32::from_be_bytes(bytes)))
        }
    }
}

fn read_identity(db: &sled::Db) -> Result<Option<[u8; 16]>> {
    Ok(db
        .open_tree(META_TREE)?
        .get(IDENTITY_KEY)?
        .and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok()))
}

/// The identity of the database at `path`, without changing it; `None`
/// when there is no database (or it has no identity).
pub fn identity(path: impl AsRef<Path>) -> Result<Option<[u8; 16]>> {
    let path = path.as_ref();
    if !path.join("conf").is_file() {
        return Ok(None);
    }
    read_identity(&open_sled(path, &KvOptions::default())?)
}

/// A key-value database open for use: checked, at the current format.
#[derive(Clone)]
pub struct KvDb {
    db: sled::Db,
    path: PathBuf,
}

impl fmt::Debug for KvDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvDb").field("path", &self.path).finish()
    }
}

impl KvDb {
    /// Opens the database at `path` for use, creating it if missing.
    ///
    /// # Errors
    /// [`Error::Tombstoned`] for a retired database,
    /// [`Error::UnsupportedFormat`] for one of another format, and
    /// [`Error::Sled`] when sled cannot open it (for example because another
    /// process holds it open for longer than [`LOCK_WAIT`]).
    pub fn open(path: impl AsRef<Path>, opts: &KvOptions) -> Result<KvDb> {
        let path = path.as_ref().to_path_buf();
        let db = open_sled(&path, opts)?;
        let kv = KvDb { db, path };
        if read_status(&kv.db, &kv.path)? == Status::Empty {
            let meta = kv.db.open_tree(META_TREE)?;
            let mut batch = sled::Batch::default();
            batch.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes());
            batch.insert(IDENTITY_KEY, &rand::random::<[u8; 16]>());
            meta.apply_batch(batch)?;
            kv.db.flush()?;
        }
        kv.check()?;
        Ok(kv)
    }

    /// The check every KV store runs in its constructor.
    pub fn check(&self) -> Result<()> {
        match read_status(&self.db, &self.path)? {
            Status::Live(FORMAT_VERSION) => Ok(()),
            Status::Tombstoned(mark) => Err(Error::Tombstoned {
                path: self.path.clone(),
                mark,
            }),
            Status::Live(found) => Err(Error::UnsupportedFormat {
                path: self.path.clone(),
                found,
            }),
            Status::Empty => Err(Error::Corrupt {
                path: self.path.clone(),
                what: "format version",
                reason: "missing".into(),
            }),
        }
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The random identity written when the database was created.
    pub fn identity(&self) -> Result<Option<[u8; 16]>> {
        read_identity(&self.db)
    }

    /// Opens (creating if needed) a store's tree.
    pub fn tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.db.open_tree(name)?)
    }

    /// Flushes every write to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

/// What the database at `path` is, without changing it; `None` when there is
/// no database there.
pub fn status(path: impl AsRef<Path>) -> Result<Option<Status>> {
    let path = path.as_ref();
    if !path.join("conf").is_file() {
        return Ok(None);
    }
    let db = open_sled(path, &KvOptions::default())?;
    read_status(&db, path).map(Some)
}

/// Retires the database at `path`. See the crate docs for when to call it.
///
/// Idempotent: marking a retired database again replaces the mark and
/// changes nothing else.
pub fn mark(path: impl AsRef<Path>, mark: &Mark) -> Result<()> {
    let path = path.as_ref();
    if !path.join("conf").is_file() {
        return Err(Error::Missing(path.to_path_buf()));
    }
    // Only the meta tree is touched: no cache to speak of, so marking right
    // after a migration does not add a second large cache to the process.
    let db = open_sled(
        path,
        &KvOptions {
            cache_capacity: 1 << 20,
        },
    )?;
    match read_status(&db, path)? {
        Status::Live(FORMAT_VERSION) | Status::Tombstoned(_) | Status::Empty => {}
        Status::Live(found) => {
            return Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                found,
            });
        }
    }
    let rec = MarkRecordV1 {
        marked_at_unix_micros: mark.marked_at.timestamp_micros(),
        nodestore_version: mark.nodestore_version.clone(),
        target: mark.target.clone(),
    };
    let value = kvcodec::encode(MARK_RECORD_V1, &rec).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        what: "tombstone",
        reason: e.to_string(),
    })?;
    let meta = db.open_tree(META_TREE)?;
    // One batch: the format and the tombstone change together.
    let mut batch = sled::Batch::default();
    batch.insert(TOMBSTONE_KEY, value);
    batch.insert(FORMAT_KEY, &TOMBSTONED_FORMAT.to_be_bytes());
    meta.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

/// A database opened by the migrator: live or retired, read-only.
pub struct MigrationSource {
    db: sled::Db,
    path: PathBuf,
    status: Status,
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
    /// Opens the database at `path` for reading, whether live or retired.
    ///
    /// # Errors
    /// [`Error::Missing`] when there is no database, and
    /// [`Error::UnsupportedFormat`] for a format this binary cannot read.
    pub fn open(path: impl AsRef<Path>, opts: &KvOptions) -> Result<MigrationSource> {
        let path = path.as_ref().to_path_buf();
        if !path.join("conf").is_file() {
            return Err(Error::Missing(path));
        }
        let db = open_sled(&path, opts)?;
        let status = read_status(&db, &path)?;
        match status {
            Status::Live(FORMAT_VERSION) | Status::Tombstoned(_) | Status::Empty => {}
            Status::Live(found) => return Err(Error::UnsupportedFormat { path, found }),
        }
        Ok(MigrationSource { db, path, status })
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
        read_identity(&self.db)
    }

    /// A store's tree for reading; `None` when the store has no tree (it
    /// never wrote anything), so reading never creates one.
    pub fn tree(&self, name: &str) -> Result<Option<ReadTree>> {
        let exists = self
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == name.as_bytes());
        if !exists {
            return Ok(None);
        }
        Ok(Some(ReadTree {
            tree: self.db.open_tree(name)?,
            name: name.to_owned(),
        }))
    }
}

/// A tree that can only be read.
#[derive(Debug, Clone)]
pub struct ReadTree {
    tree: sled::Tree,
    name: String,
}

impl ReadTree {
    /// The tree's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<sled::IVec>> {
        Ok(self.tree.get(key)?)
    }

    /// Every entry in key order.
    pub fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = Result<(sled::IVec, sled::IVec)>> + use<> {
        self.tree.iter().map(|r| r.map_err(Error::from))
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(sled::IVec, sled::IVec)>> + use<> {
        self.tree
            .scan_prefix(prefix)
            .map(|r| r.map_err(Error::from))
    }

    /// The number of entries (walks the tree).
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

/// The conversions every store crate's error enum needs, written once. The
/// enum must have a `Tombstoned(tombstone::Error)` variant and a
/// `Backend { backend: &'static str, source: Box<dyn Error + Send + Sync> }`
/// one, and the crate must depend on `sqldb`, `tombstone` and `sled`:
/// - a `sqldb::DbError` becomes `Backend`, named after its backend;
/// - a tombstone error becomes `Tombstoned` when the database is retired,
///   `Backend` (`"kv"`) otherwise, so callers can match a retired database;
/// - a `sled::Error` becomes `Backend` (`"kv"`).
#[macro_export]
macro_rules! store_error_conversions {
    ($error:ident) => {
        impl ::core::convert::From<::sqldb::DbError> for $error {
            fn from(e: ::sqldb::DbError) -> Self {
                $error::Backend {
                    backend: e.backend,
                    source: ::std::boxed::Box::new(e),
                }
            }
        }

        impl ::core::convert::From<::tombstone::Error> for $error {
            fn from(e: ::tombstone::Error) -> Self {
                match e {
                    ::tombstone::Error::Tombstoned { .. } => $error::Tombstoned(e),
                    other => $error::Backend {
                        backend: "kv",
                        source: ::std::boxed::Box::new(other),
                    },
                }
            }
        }

        impl ::core::convert::From<::sled::Error> for $error {
            fn from(e: ::sled::Error) -> Self {
                $error::Backend {
                    backend: "kv",
                    source: ::std::boxed::Box::new(e),
                }
            }
        }
    };
}
