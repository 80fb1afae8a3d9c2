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

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};

mod source;
mod stats;

pub use sled_reader::holds_database;
pub use source::{Entry, MigrationSource, ReadTree};
pub use stats::{Digest, SIDECAR, TreeStats, Writes, read_sidecar};

/// The tree holding the format version, the identity, the statistics of
/// every tree, the write sequence and the tombstone.
pub const META_TREE: &str = "nodestore.meta";
/// The format of a live nodestore key-value database: 2 keeps per-tree
/// statistics and the write sequence (`stats`); a format 1 database is
/// upgraded to 2 when opened for use.
pub const FORMAT_VERSION: u32 = 2;
/// The first format, without statistics: still opened (and upgraded).
pub const FORMAT_V1: u32 = 1;
/// sled's own default tree, present in every database.
pub const SLED_DEFAULT_TREE: &str = "__sled__default";
/// The format of a retired database: no binary opens it for use.
pub const TOMBSTONED_FORMAT: u32 = 0x7001_0000;

const FORMAT_KEY: &[u8] = b"format";
const IDENTITY_KEY: &[u8] = b"identity";
const TOMBSTONE_KEY: &[u8] = b"tombstone";
const MARK_RECORD_V1: u8 = 1;
const MARK_RECORD_V2: u8 = 2;

/// Everything that can go wrong opening, checking or marking a database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database was migrated to SQL and may no longer be used.
    #[error(
        "the key-value database {path} was migrated to SQL on {when} (by nodestore {version}) into {target} \
         and can no longer be used; run on the SQL backend",
        when = .mark.marked_at.to_rfc3339_opts(SecondsFormat::Micros, true),
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
    /// The directory holds sled files but no nodestore metadata: it was
    /// never a nodestore database, or it lost its data (a truncated or
    /// missing log recovers as an empty database).
    #[error(
        "{0} holds no nodestore metadata: it is not a nodestore key-value database, or it is \
         damaged (an emptied, truncated or missing data file db opens as an empty database)"
    )]
    Uninitialised(PathBuf),
    /// Another process holds the database open.
    #[error(
        "the key-value database {0} is in use by another process (a running node?); \
         stop it and try again"
    )]
    InUse(PathBuf),
    /// Another migration of this database is running and did not finish in time.
    #[error("another migration of the key-value database {path} held it for more than {waited:?}")]
    MigrationLockTimeout {
        /// The database directory.
        path: PathBuf,
        /// How long this one waited.
        waited: std::time::Duration,
    },
    /// A file of the database could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
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
    /// sled panicked opening or reading the database: sled 0.34.7 does so,
    /// instead of failing, on a log damaged where its recovery cannot go on
    /// (docs/sled-format.md §5). The panic is caught and returned as this.
    #[error(
        "sled cannot read the key-value database {path}: it stopped with \"{message}\", as sled \
         0.34.7 does on a log damaged where its recovery cannot go on"
    )]
    SledPanicked {
        /// The database directory.
        path: PathBuf,
        /// sled's panic message.
        message: String,
    },
    /// The database's files could not be read (sled-reader, which reads a
    /// database no process holds; docs/sled-format.md).
    #[error("{0}")]
    Read(#[from] sled_reader::Error),
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
    /// The SQL target for people: `sqlite:<path>`, or a PostgreSQL target
    /// with every connection-relevant part (hosts, sockets, ports, database,
    /// user) and never a password.
    pub target: String,
    /// The identity of the SQL database the data went to (written by its
    /// first schema step); `None` in marks from before identities.
    pub target_identity: Option<[u8; 16]>,
}

#[derive(Serialize, Deserialize)]
struct MarkRecordV1 {
    marked_at_unix_micros: i64,
    nodestore_version: String,
    target: String,
}

#[derive(Serialize, Deserialize)]
struct MarkRecordV2 {
    marked_at_unix_micros: i64,
    nodestore_version: String,
    target: String,
    target_identity: Option<[u8; 16]>,
}

/// The error of a [`KvDb::write`] transaction as the closure's own error
/// type: an abort is the closure's error, a storage failure sled's.
pub fn transaction_error<E: From<sled::Error>>(e: TransactionError<E>) -> E {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
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
    /// For [`MigrationSource::open`]: read past pages that cannot be read
    /// and list them ([`MigrationSource::salvaged`]) instead of failing.
    pub salvage: bool,
}

impl Default for KvOptions {
    fn default() -> Self {
        KvOptions {
            cache_capacity: 64 << 20,
            salvage: false,
        }
    }
}

/// How long an open waits for sled's file lock, as LiT's bbolt
/// opens do: sled releases the lock shortly after the last handle is dropped
/// (its background writers finish first), so a close followed by an open in
/// the same process would otherwise fail now and then.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn is_lock_conflict(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// The mode of every file of a key-value database: it holds private keys.
pub const FILE_MODE: u32 = 0o600;
/// The mode of its directories.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with [`DIR_MODE`].
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Sets [`DIR_MODE`] on `dir` and its subdirectories and [`FILE_MODE`] on
/// every file in them, wherever they allow more; returns the paths that did.
pub fn tighten(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut looser = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let meta = std::fs::metadata(&d)?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(DIR_MODE))?;
            looser.push(d.clone());
        }
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() && entry.metadata()?.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(FILE_MODE))?;
                looser.push(entry.path());
            }
        }
    }
    Ok(looser)
}

fn open_sled(path: &Path, opts: &KvOptions) -> Result<sled::Db> {
    // A snapshot sled stopped writing (killed between writing
    // `snap.*.generating` and renaming it) would make sled refuse the
    // database: it is not a snapshot, and the one before it with the log is
    // the state (docs/sled-format.md §3). This is a writer's open, and the
    // file is removed only while no process holds the database (one that
    // does may be writing that very file).
    remove_unfinished_snapshot(path)?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = catch_sled_panic(path, || {
            sled::Config::new()
                .path(path)
                .cache_capacity(opts.cache_capacity)
                .open()
        })?;
        match opened {
            Ok(db) => return Ok(db),
            Err(e) if is_lock_conflict(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) if is_lock_conflict(&e) => return Err(Error::InUse(path.to_path_buf())),
            // sled's I/O errors do not say which file: this one does.
            Err(sled::Error::Io(source)) => {
                return Err(Error::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs `f`, which calls sled on the database at `path`, and returns sled's
/// panic as [`Error::SledPanicked`]: sled 0.34.7 panics on some damaged logs
/// (docs/sled-format.md §5), and a damaged database is bad input, which
/// gets an error, not a crashed node. sled's state from the failed call is
/// dropped with the unwinding; nothing of it is used again.
pub(crate) fn catch_sled_panic<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|m| (*m).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Error::SledPanicked {
            path: path.to_path_buf(),
            message,
        }
    })
}

/// Held by a migration while it reads a key-value database: a second
/// migration of the same database waits for the first instead of failing on
/// sled's lock, and then finds the work done. Released when dropped.
///
/// The lock is an advisory lock on the database directory itself, so taking
/// it writes nothing: a migration that is refused or fails leaves every byte
/// of the directory as it was (docs/sled-format.md §1).
#[derive(Debug)]
pub struct MigrationLock {
    _file: std::fs::File,
}

/// Whether a migration of the database at `path` holds its migration lock
/// now (an online migration in a running node, or `nodestore migrate`).
/// Reads only: the probe takes a shared lock that it releases at once.
pub fn migration_running(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// Takes the migration lock of the database at `path`, waiting up to
/// `wait` for another migration to finish.
///
/// Errors: [`Error::Missing`] when there is no database at `path`,
/// [`Error::MigrationLockTimeout`] after `wait`.
pub fn lock_for_migration(path: &Path, wait: std::time::Duration) -> Result<MigrationLock> {
    if !sled_reader::holds_database(path) {
        return Err(Error::Missing(path.to_path_buf()));
    }
    let lock_path = path.to_path_buf();
    let file = std::fs::File::open(&lock_path).map_err(|source| Error::Io {
        path: lock_path.clone(),
        source,
    })?;
    match lock_within(&file, false, wait) {
        Ok(true) => Ok(MigrationLock { _file: file }),
        Ok(false) => Err(Error::MigrationLockTimeout {
            path: path.to_path_buf(),
            waited: wait,
        }),
        Err(source) => Err(Error::Io {
            path: lock_path,
            source,
        }),
    }
}

/// Takes an advisory lock on `file`, shared or exclusive, retrying until
/// `wait` has passed; `Ok(false)` when another holder kept it that long.
fn lock_within(
    file: &std::fs::File,
    shared: bool,
    wait: std::time::Duration,
) -> std::io::Result<bool> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let tried = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match tried {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

fn decode_mark(raw: &[u8], path: &Path) -> Result<Mark> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        what: "tombstone",
        reason,
    };
    let rec = match kvcodec::version_of(raw).map_err(|e| corrupt(e.to_string()))? {
        MARK_RECORD_V1 => {
            let r: MarkRecordV1 =
                kvcodec::decode(raw, MARK_RECORD_V1).map_err(|e| corrupt(e.to_string()))?;
            MarkRecordV2 {
                marked_at_unix_micros: r.marked_at_unix_micros,
                nodestore_version: r.nodestore_version,
                target: r.target,
                target_identity: None,
            }
        }
        _ => kvcodec::decode(raw, MARK_RECORD_V2).map_err(|e| corrupt(e.to_string()))?,
    };
    let marked_at = Utc
        .timestamp_micros(rec.marked_at_unix_micros)
        .single()
        .ok_or_else(|| corrupt("time out of range".into()))?;
    Ok(Mark {
        marked_at,
        nodestore_version: rec.nodestore_version,
        target: rec.target,
        target_identity: rec.target_identity,
    })
}

fn read_status(db: &sled::Db, path: &Path) -> Result<Status> {
    let meta = db.open_tree(META_TREE)?;
    status_from(
        meta.get(TOMBSTONE_KEY)?.map(|v| v.to_vec()),
        meta.get(FORMAT_KEY)?.map(|v| v.to_vec()),
        path,
    )
}

fn status_from(tombstone: Option<Vec<u8>>, format: Option<Vec<u8>>, path: &Path) -> Result<Status> {
    if let Some(raw) = tombstone {
        return Ok(Status::Tombstoned(decode_mark(&raw, path)?));
    }
    match format {
        None => Ok(Status::Empty),
        Some(raw) => {
            let bytes: [u8; 4] = raw.as_slice().try_into().map_err(|_| Error::Corrupt {
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
    if !sled_reader::holds_database(path) {
        return Ok(None);
    }
    refuse_in_use(path)?;
    let db = sled_reader::Db::open(path)?;
    Ok(reader_get(&db, META_TREE, IDENTITY_KEY)?
        .and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok()))
}

/// One value of one tree, through the reader.
fn reader_get(db: &sled_reader::Db, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
    match db.tree(tree.as_bytes()) {
        Some(t) => Ok(t.get(key)?),
        None => Ok(None),
    }
}

/// A key-value database open for use: checked, at the current format.
#[derive(Clone)]
pub struct KvDb {
    db: sled::Db,
    path: PathBuf,
    meta: sled::Tree,
    sidecar: Arc<stats::Sidecar>,
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
    /// [`Error::UnsupportedFormat`] for one of another format,
    /// [`Error::Sled`] when sled cannot open it (for example because another
    /// process holds it open for longer than [`LOCK_WAIT`]), and
    /// [`Error::SledPanicked`] when sled panics on its damaged log.
    pub fn open(path: impl AsRef<Path>, opts: &KvOptions) -> Result<KvDb> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        // The directory exists with its mode before sled writes a byte.
        create_private_dir(&path).map_err(io)?;
        let db = open_sled(&path, opts)?;
        let looser = tighten(&path).map_err(io)?;
        if !looser.is_empty() {
            tracing::warn!(
                path = %path.display(),
                files = looser.len(),
                "the key-value database allowed other users to read it (it holds private keys); \
                 its directories are now 0700 and its files 0600"
            );
        }
        let meta = db.open_tree(META_TREE)?;
        let kv = KvDb {
            sidecar: Arc::new(stats::Sidecar::new(&path)),
            db,
            path,
            meta,
        };
        match read_status(&kv.db, &kv.path)? {
            Status::Empty => {
                if let Some(seq) = writes_of_an_emptied(&kv.path) {
                    return Err(Error::Corrupt {
                        path: kv.path.clone(),
                        what: "data file",
                        reason: format!(
                            "it opens empty, but {seq} write transactions were recorded: \
                             the data file was emptied or truncated"
                        ),
                    });
                }
                let mut batch = sled::Batch::default();
                batch.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes());
                batch.insert(IDENTITY_KEY, &rand::random::<[u8; 16]>());
                batch.insert(stats::SEQ_KEY, &0u64.to_be_bytes());
                kv.meta.apply_batch(batch)?;
                kv.db.flush()?;
            }
            Status::Live(FORMAT_V1) => kv.upgrade_from_v1()?,
            _ => {}
        }
        kv.check()?;
        Ok(kv)
    }

    /// Format 1 kept no statistics: count and digest every tree once, in
    /// one batch with the new format number.
    fn upgrade_from_v1(&self) -> Result<()> {
        let mut batch = sled::Batch::default();
        for name in self.db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if name == META_TREE || name == SLED_DEFAULT_TREE {
                continue;
            }
            let tree = self.db.open_tree(&name)?;
            let mut s = TreeStats::default();
            for item in tree.iter() {
                let (k, v) = item?;
                s.add(&k, &v);
            }
            batch.insert(stats::stats_key(&name), stats::encode_stats(&s));
        }
        batch.insert(stats::SEQ_KEY, &0u64.to_be_bytes());
        batch.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes());
        self.meta.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Runs `f` as one sled transaction over `trees` (and the meta tree):
    /// every insert and remove goes through [`Writes`], which keeps each
    /// tree's statistics and bumps the write sequence in the same
    /// transaction. `f` may run more than once (sled retries on conflict),
    /// so it must have no other side effects. Call [`KvDb::flush`] after it
    /// to make the writes durable.
    ///
    /// A retired database takes no write, through any handle: the
    /// transaction reads the tombstone itself, so a write and
    /// [`KvDb::mark`] are ordered by sled, and a write that would land after
    /// the mark fails with [`Error::Tombstoned`] instead (an online
    /// migration's switch relies on it, docs/design.md §7.4).
    pub fn write<T, E: From<Error>>(
        &self,
        trees: &[&sled::Tree],
        f: impl Fn(&mut Writes<'_>) -> std::result::Result<T, ConflictableTransactionError<E>>,
    ) -> std::result::Result<T, TransactionError<E>> {
        use sled::Transactional as _;
        let names: Vec<String> = trees
            .iter()
            .map(|t| String::from_utf8_lossy(&t.name()).into_owned())
            .collect();
        let mut all: Vec<&sled::Tree> = trees.to_vec();
        all.push(&self.meta);
        all.as_slice()
            .transaction(|views: &Vec<sled::transaction::TransactionalTree>| {
                let (meta, data) = views.split_last().ok_or_else(|| {
                    ConflictableTransactionError::Storage(sled::Error::Unsupported(
                        "a write without trees".into(),
                    ))
                })?;
                if let Some(raw) = meta.get(TOMBSTONE_KEY)? {
                    let refused = match decode_mark(&raw, &self.path) {
                        Ok(mark) => Error::Tombstoned {
                            path: self.path.clone(),
                            mark,
                        },
                        Err(e) => e,
                    };
                    return Err(ConflictableTransactionError::Abort(E::from(refused)));
                }
                let mut w = Writes {
                    trees: data,
                    deltas: vec![(0, Digest::default()); data.len()],
                };
                let out = f(&mut w)?;
                stats::apply_deltas(meta, &names, &w.deltas)?;
                Ok(out)
            })
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

    /// Flushes every write to disk, then records the write sequence that is
    /// now durable in the sidecar file (see `stats`).
    pub fn flush(&self) -> Result<()> {
        // Read before the flush: everything up to it is durable after it.
        let seq = self
            .meta
            .get(stats::SEQ_KEY)?
            .and_then(|r| stats::decode_seq(&r))
            .unwrap_or(0);
        self.db.flush()?;
        self.sidecar.record(seq).map_err(|source| Error::Io {
            path: self.path.join(SIDECAR),
            source,
        })?;
        // sled writes new files (snapshots) as it goes, with the process's
        // umask: keep them private too.
        tighten(&self.path).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(())
    }
}

/// What the database at `path` is, without changing it; `None` when there is
/// no database there. On a damaged database, what its files still say past
/// the damage (a salvaging read, docs/sled-format.md §6): one that sled
/// itself cannot open may hold a migrated node's data, or its tombstone.
pub fn status(path: impl AsRef<Path>) -> Result<Option<Status>> {
    let path = path.as_ref();
    if !sled_reader::holds_database(path) {
        return Ok(None);
    }
    refuse_in_use(path)?;
    let db = match sled_reader::Db::open(path) {
        Ok(db) => db,
        Err(sled_reader::Error::Damaged(_)) => sled_reader::Db::open_salvaging(path)?,
        Err(e) => return Err(e.into()),
    };
    reader_status(&db, path).map(Some)
}

/// Refuses a database that a process holds open through sled (sled keeps
/// an exclusive advisory lock on its log file while open): its files change
/// under a reader. The probe only takes a shared lock and releases it; it
/// waits up to [`LOCK_WAIT`], as sled's own open does, because sled lets go
/// of the lock a moment after its last handle is dropped.
/// Removes a snapshot sled did not finish writing
/// ([`sled_reader::unfinished_snapshot`]), holding a shared lock on `db`
/// so that no sled process has the database open meanwhile; nothing when
/// one has.
fn remove_unfinished_snapshot(path: &Path) -> Result<()> {
    let Ok(file) = std::fs::File::open(path.join("db")) else {
        return Ok(());
    };
    if !matches!(
        lock_within(&file, true, std::time::Duration::ZERO),
        Ok(true)
    ) {
        return Ok(());
    }
    let result = match sled_reader::unfinished_snapshot(path) {
        Ok(Some(stale)) => {
            tracing::warn!(file = %stale.display(), "removing a snapshot sled did not finish writing");
            std::fs::remove_file(&stale).map_err(|source| Error::Io {
                path: stale.clone(),
                source,
            })
        }
        _ => Ok(()),
    };
    let _ = file.unlock();
    result
}

fn refuse_in_use(path: &Path) -> Result<()> {
    let Ok(file) = std::fs::File::open(path.join("db")) else {
        return Ok(());
    };
    match lock_within(&file, true, LOCK_WAIT) {
        Ok(true) => {
            let _ = file.unlock();
            Ok(())
        }
        Ok(false) => Err(Error::InUse(path.to_path_buf())),
        Err(source) => Err(Error::Io {
            path: path.join("db"),
            source,
        }),
    }
}

/// For a database at `path` whose metadata is gone (it opens empty): the
/// write transactions its sidecar recorded, when there were any. The data
/// is then gone, not never written, and [`KvDb::open`] refuses the
/// database rather than start it anew.
fn writes_of_an_emptied(path: &Path) -> Option<u64> {
    read_sidecar(path).filter(|s| *s > 0)
}

fn reader_status(db: &sled_reader::Db, path: &Path) -> Result<Status> {
    status_from(
        reader_get(db, META_TREE, TOMBSTONE_KEY)?,
        reader_get(db, META_TREE, FORMAT_KEY)?,
        path,
    )
}

/// Retires the database at `path`. See the crate docs for when to call it.
///
/// Idempotent: marking a retired database again replaces the mark and
/// changes nothing else.
///
/// # Errors
/// [`Error::Missing`] where `path` holds no database, [`Error::InUse`] while
/// another process holds it, [`Error::Uninitialised`] or
/// [`Error::UnsupportedFormat`] for what is not a nodestore database,
/// [`Error::SledPanicked`] when sled panics on its damaged log, and
/// [`Error::Sled`] or [`Error::Io`] when sled fails.
pub fn mark(path: impl AsRef<Path>, mark: &Mark) -> Result<()> {
    let path = path.as_ref();
    if !sled_reader::holds_database(path) {
        return Err(Error::Missing(path.to_path_buf()));
    }
    // Only the meta tree is touched: no cache to speak of, so marking right
    // after a migration does not add a second large cache to the process.
    let db = open_sled(
        path,
        &KvOptions {
            cache_capacity: 1 << 20,
            ..KvOptions::default()
        },
    )?;
    mark_db(&db, path, mark)
}

/// Writes `mark` into the open database `db` at `path`.
fn mark_db(db: &sled::Db, path: &Path, mark: &Mark) -> Result<()> {
    match read_status(db, path)? {
        Status::Live(FORMAT_VERSION | FORMAT_V1) | Status::Tombstoned(_) => {}
        Status::Empty => return Err(Error::Uninitialised(path.to_path_buf())),
        Status::Live(found) => {
            return Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                found,
            });
        }
    }
    let rec = MarkRecordV2 {
        marked_at_unix_micros: mark.marked_at.timestamp_micros(),
        nodestore_version: mark.nodestore_version.clone(),
        target: mark.target.clone(),
        target_identity: mark.target_identity,
    };
    let value = kvcodec::encode(MARK_RECORD_V2, &rec).map_err(|e| Error::Corrupt {
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

impl KvDb {
    /// Retires this open database with `mark`, as [`mark`] does by path:
    /// for an online migration, whose node holds the database open
    /// (docs/design.md §7). Handles already open keep working; opening it
    /// again is refused.
    pub fn mark(&self, mark: &Mark) -> Result<()> {
        mark_db(&self.db, &self.path, mark)
    }

    /// The database as a migration source, read through this handle while
    /// the node keeps writing to it (docs/design.md §7.2): sled's own
    /// iterators, since sled holds the files.
    pub fn as_source(&self) -> Result<MigrationSource> {
        let status = read_status(&self.db, &self.path)?;
        Ok(MigrationSource::through_sled(
            self.db.clone(),
            self.path.clone(),
            status,
        ))
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// Copies a database directory (files and `blobs/`), with private modes.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    create_private_dir(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}
