//! SQLite: connections on worker threads, one writer and a few readers.
//!
//! rusqlite is a blocking API, so each connection lives on its own OS thread
//! and the async side sends it closures over a channel. Writes go through
//! the single writer connection and start with `BEGIN IMMEDIATE`, which takes
//! SQLite's write lock up front: writers queue on the writer's async mutex
//! inside the process and on SQLite's busy timeout across processes, and a
//! read-then-write transaction can never fail half-way on a lock upgrade.
//! Reads use reader connections, which WAL mode lets run beside the writer.
//!
//! Connection settings, applied to every connection:
//! - `foreign_keys = ON`: the schema's `ON DELETE CASCADE` rules depend on it.
//! - `journal_mode = WAL`: readers do not block the writer.
//! - `busy_timeout`: how long to wait for another process's lock (5 s by default).
//! - `synchronous = FULL` by default: a committed transaction survives a power
//!   loss, as in LiT. Accounts hold balances; losing the last commits
//!   after a crash would let a spent balance be spent again. `NORMAL` is
//!   available for throw-away databases (benchmarks of the raw load limit).
//! - `temp_store = FILE`: the bundled SQLite is built to keep temporary
//!   tables and sorts in memory; a large sort (building an index over a
//!   million actions during the migration, an ORDER BY no index serves)
//!   would then grow the process by its whole size. On file it spills past
//!   the page cache instead.
//! - The database file is created with mode 0600 before SQLite opens it; the
//!   `-wal` and `-shm` files inherit that mode from it.

use std::fmt;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, params_from_iter};
use sea_query::Value;
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

use crate::error::{DbError, DbResult, ErrorKind};
use crate::row::{Cell, Data, Row};
use crate::tx::{Dialect, Sql, Tx, TxMode};

const BACKEND: &str = "sqlite";

/// How durable a commit is (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// A commit is durable across power loss (the default).
    Full,
    /// A commit survives a process crash, not necessarily a power loss.
    Normal,
}

/// Settings for [`SqliteDb::open`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a statement waits for another process's lock.
    pub busy_timeout: Duration,
    /// Number of read-only connections (at least 1).
    pub readers: usize,
    /// Commit durability.
    pub synchronous: Synchronous,
    /// Page cache size per connection in KiB (`PRAGMA cache_size = -N`);
    /// `None` keeps SQLite's default of about 2 MiB.
    pub cache_size_kib: Option<u32>,
    /// Open for reading only: no writer, no file created (see
    /// [`SqliteDb::open_read_only`]).
    pub read_only: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            busy_timeout: Duration::from_secs(5),
            readers: 2,
            synchronous: Synchronous::Full,
            cache_size_kib: None,
            read_only: false,
        }
    }
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// One connection and the thread that owns it.
struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    async fn spawn(
        path: PathBuf,
        opts: SqliteOptions,
        reader: bool,
        name: String,
    ) -> DbResult<Worker> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel::<DbResult<()>>();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let mut conn = match open_retrying(&path, &opts, reader) {
                    Ok(conn) => {
                        let _ = ready_tx.send(Ok(()));
                        conn
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                // Ends when every sender (the Worker) is dropped.
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| DbError::new(BACKEND, ErrorKind::Connection, e))?;
        ready_rx.await.map_err(|_| worker_gone())??;
        Ok(Worker { jobs })
    }

    /// Runs `f` on the connection's thread and waits for its result.
    async fn call<R, F>(&self, f: F) -> DbResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> R + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            }))
            .map_err(|_| worker_gone())?;
        result.await.map_err(|_| worker_gone())
    }

    /// Queues `f` without waiting for it.
    fn detach<F>(&self, f: F)
    where
        F: FnOnce(&mut Connection) + Send + 'static,
    {
        let _ = self.jobs.send(Box::new(f));
    }
}

fn worker_gone() -> DbError {
    DbError::new(
        BACKEND,
        ErrorKind::Connection,
        "the connection's worker thread has stopped",
    )
}

/// [`open_connection`], retried while another process holds a lock: setting
/// up a connection (switching to WAL, the first read of the schema) can
/// report "database is locked" at once instead of waiting in the busy
/// handler, so it waits here, as long as the busy timeout allows.
fn open_retrying(path: &Path, opts: &SqliteOptions, reader: bool) -> DbResult<Connection> {
    let deadline = std::time::Instant::now() + opts.busy_timeout;
    loop {
        match open_connection(path, opts, reader) {
            Err(e) if e.kind == ErrorKind::Retryable && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn open_connection(path: &Path, opts: &SqliteOptions, reader: bool) -> DbResult<Connection> {
    if !reader {
        // Create the file ourselves so it never exists with a wider mode.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(DbError::new(
                    BACKEND,
                    ErrorKind::Connection,
                    format!("cannot create {}: {e}", path.display()),
                ));
            }
        }
    }
    let flags = if reader {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = if opts.read_only {
        // Reading only must create nothing: with no -wal file, no process
        // has the database open and all of it is in the main file, which is
        // then read as immutable (SQLite would otherwise create -wal and
        // -shm); with one, the connection shares it read-only.
        let immutable = !wal_path(path, "-wal").exists();
        let uri = format!(
            "file:{}?mode=ro{}",
            uri_path(path),
            if immutable { "&immutable=1" } else { "" }
        );
        Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(|e| with_path(classify(e), path))?;
    conn.busy_timeout(opts.busy_timeout).map_err(classify)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(classify)?;
    conn.pragma_update(None, "temp_store", "FILE")
        .map_err(classify)?;
    if !reader {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(classify)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::new(
                BACKEND,
                ErrorKind::Connection,
                format!("{}: cannot enable WAL mode (got {mode})", path.display()),
            ));
        }
    } else {
        conn.pragma_update(None, "query_only", "ON")
            .map_err(classify)?;
    }
    let sync = match opts.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(classify)?;
    if let Some(kib) = opts.cache_size_kib {
        conn.pragma_update(None, "cache_size", -i64::from(kib))
            .map_err(classify)?;
    }
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// `path` with `suffix` appended to its file name (`-wal`, `-shm`).
fn wal_path(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// A path for a `file:` URI: the characters a URI gives meaning to escaped.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'%' | b'?' | b'#' | b'&' | b'=' | b' ' => out.push_str(&format!("%{b:02X}")),
            _ => out.push(*b as char),
        }
    }
    out
}

/// A driver error with the file it concerns, when its message lacks it.
fn with_path(mut e: DbError, path: &Path) -> DbError {
    let text = e.source.to_string();
    if !text.contains(&path.display().to_string()) {
        e.source = format!("{}: {text}", path.display()).into();
    }
    e
}

/// Sets mode 0600 on the database file and its `-wal` and `-shm` files
/// wherever they allow more, with a warning (they hold private keys).
fn tighten(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    for p in [
        path.to_path_buf(),
        wal_path(path, "-wal"),
        wal_path(path, "-shm"),
    ] {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => tracing::warn!(
                    path = %p.display(),
                    "the SQLite file allowed other users to read it (it holds private keys); it is now 0600"
                ),
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "cannot make the SQLite file private")
                }
            }
        }
    }
}

/// A SQLite database file with one writer and a few reader connections.
pub struct SqliteDb {
    path: PathBuf,
    opts: SqliteOptions,
    writer: Option<Arc<Mutex<Worker>>>,
    readers: Vec<Arc<Mutex<Worker>>>,
    next_reader: AtomicUsize,
}

impl fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDb")
            .field("path", &self.path)
            .field("readers", &self.readers.len())
            .finish()
    }
}

impl SqliteDb {
    /// Opens (creating if needed, with mode 0600) the database at `path`.
    pub async fn open(path: impl AsRef<Path>, opts: SqliteOptions) -> DbResult<SqliteDb> {
        let path = path.as_ref().to_path_buf();
        if opts.read_only && !path.is_file() {
            return Err(DbError::new(
                BACKEND,
                ErrorKind::Connection,
                format!("no SQLite database at {}", path.display()),
            ));
        }
        let writer = if opts.read_only {
            None
        } else {
            let w =
                Worker::spawn(path.clone(), opts.clone(), false, "sqlite-writer".into()).await?;
            tighten(&path);
            Some(Arc::new(Mutex::new(w)))
        };
        let mut readers = Vec::new();
        for i in 0..opts.readers.max(1) {
            let w = Worker::spawn(
                path.clone(),
                opts.clone(),
                true,
                format!("sqlite-reader-{i}"),
            )
            .await?;
            readers.push(Arc::new(Mutex::new(w)));
        }
        tracing::info!(
            backend = BACKEND,
            path = %path.display(),
            read_only = opts.read_only,
            readers = readers.len(),
            "SQLite database opened"
        );
        Ok(SqliteDb {
            path,
            opts,
            writer,
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Finishes with the database: waits for the write in progress, then
    /// checkpoints the write-ahead log into the database file and truncates
    /// it, so the file alone holds everything (for a backup or a copy). A
    /// reader still holding a snapshot can keep part of the log; that is
    /// logged, not an error. Later calls still work.
    pub async fn close(&self) -> DbResult<()> {
        if self.checkpoint_truncate().await? {
            tracing::info!(path = %self.path.display(), "SQLite checkpointed and closed");
        }
        Ok(())
    }

    /// Waits for the write in progress, then checkpoints the write-ahead
    /// log into the database file and truncates it (`TRUNCATE`), holding
    /// the write lock meanwhile. Returns false (and logs why) when a reader
    /// still holding a snapshot kept part of the log; true when the log is
    /// empty, or there is no writer (read-only: nothing to checkpoint).
    pub async fn checkpoint_truncate(&self) -> DbResult<bool> {
        let Some(writer) = &self.writer else {
            return Ok(true);
        };
        let worker = writer.clone().lock_owned().await;
        let (busy, log, moved) = worker
            .call(|conn| {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(classify)
            })
            .await??;
        if busy != 0 {
            tracing::warn!(path = %self.path.display(), log_pages = log, checkpointed = moved,
                "SQLite checkpoint incomplete: a reader still holds a snapshot");
        }
        Ok(busy == 0)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens an existing database for reading only: no writer connection,
    /// and no file or directory is created (not even SQLite's `-wal` and
    /// `-shm`). Errors when there is no database at `path`.
    pub async fn open_read_only(path: impl AsRef<Path>) -> DbResult<SqliteDb> {
        SqliteDb::open(
            path,
            SqliteOptions {
                read_only: true,
                readers: 1,
                ..SqliteOptions::default()
            },
        )
        .await
    }

    /// Opens the same file again, with the same options.
    pub async fn reopen(&self) -> DbResult<SqliteDb> {
        SqliteDb::open(&self.path, self.opts.clone()).await
    }

    pub(crate) async fn begin(&self, mode: TxMode) -> DbResult<Box<dyn Tx>> {
        let (worker, begin) = match mode {
            TxMode::Write => match &self.writer {
                Some(w) => (w.clone().lock_owned().await, "BEGIN IMMEDIATE"),
                None => {
                    return Err(DbError::new(
                        BACKEND,
                        ErrorKind::Other,
                        format!("{} is open for reading only", self.path.display()),
                    ));
                }
            },
            TxMode::Read => (self.reader().await, "BEGIN"),
        };
        let mut tx = SqliteTx {
            worker,
            done: false,
            begin: Some(begin),
        };
        // A write takes the write lock now; a read's BEGIN goes with its
        // first statement, in the same call on the connection's thread.
        if mode == TxMode::Write {
            tx.run(|_| Ok(())).await?;
        }
        Ok(Box::new(tx))
    }

    /// Copies what the write-ahead log holds into the database file without
    /// blocking writers (a `PASSIVE` checkpoint), on a connection of its
    /// own: the writer stays free, and the readers are opened read-only, so
    /// they cannot write the database file. For after a transaction too
    /// large for the committing writer to checkpoint in its own call.
    /// Returns the log's pages and those copied.
    pub async fn checkpoint_passive(&self) -> DbResult<(i64, i64)> {
        if self.writer.is_none() {
            // Opened for reading only: nothing of ours is in the log.
            return Ok((0, 0));
        }
        let (path, opts) = (self.path.clone(), self.opts.clone());
        tokio::task::spawn_blocking(move || {
            let conn = open_connection(&path, &opts, false)?;
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
            .map_err(classify)
        })
        .await
        .map_err(|e| DbError::new(BACKEND, ErrorKind::Other, e.to_string()))?
    }

    async fn reader(&self) -> OwnedMutexGuard<Worker> {
        for r in &self.readers {
            if let Ok(guard) = r.clone().try_lock_owned() {
                return guard;
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[i].clone().lock_owned().await
    }
}

struct SqliteTx {
    worker: OwnedMutexGuard<Worker>,
    done: bool,
    /// The transaction's `BEGIN` while it has not been sent.
    begin: Option<&'static str>,
}

impl SqliteTx {
    /// Runs `f` on the connection's thread, after the transaction's `BEGIN`
    /// when that is still pending: one hop between threads, not two.
    async fn run<R, F>(&mut self, f: F) -> DbResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> DbResult<R> + Send + 'static,
    {
        let begin = self.begin.take();
        self.worker
            .call(move |c| {
                if let Some(begin) = begin {
                    c.execute_batch(begin).map_err(classify)?;
                }
                f(c)
            })
            .await?
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        // A transaction whose BEGIN was never sent holds nothing.
        if !self.done && self.begin.is_none() {
            // Queued before the guard is released, so the next user of this
            // connection finds it outside any transaction.
            self.worker.detach(|c| {
                let _ = c.execute_batch("ROLLBACK");
            });
        }
    }
}

#[async_trait]
impl Tx for SqliteTx {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn execute_sql(&mut self, sql: Sql) -> DbResult<u64> {
        let params = bind(sql.values)?;
        let text = sql.text;
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&text).map_err(classify)?;
            let n = stmt.execute(params_from_iter(params)).map_err(classify)?;
            Ok(n as u64)
        })
        .await
    }

    async fn query_sql(&mut self, sql: Sql) -> DbResult<Vec<Row>> {
        let params = bind(sql.values)?;
        let text = sql.text;
        self.run(move |c| query(c, &text, params)).await
    }

    async fn query_batch(&mut self, batch: Vec<Sql>) -> DbResult<Vec<Vec<Row>>> {
        let batch = batch
            .into_iter()
            .map(|sql| Ok((sql.text, bind(sql.values)?)))
            .collect::<DbResult<Vec<_>>>()?;
        self.run(move |c| {
            batch
                .into_iter()
                .map(|(text, params)| query(c, &text, params))
                .collect()
        })
        .await
    }

    async fn execute_script(&mut self, script: &str) -> DbResult<()> {
        let script = script.to_owned();
        self.run(move |c| c.execute_batch(&script).map_err(classify))
            .await
    }

    async fn copy_in(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: Vec<Vec<Value>>,
    ) -> DbResult<u64> {
        crate::tx::plain_identifiers(BACKEND, &[table])?;
        crate::tx::plain_identifiers(BACKEND, columns)?;
        let text = crate::tx::insert_text(Dialect::Sqlite, table, columns);
        let width = columns.len();
        let rows: Vec<Vec<SqlValue>> = rows
            .into_iter()
            .map(|r| {
                if r.len() != width {
                    return Err(DbError::new(
                        BACKEND,
                        ErrorKind::Encode,
                        format!("a row of {} values for {width} columns of {table}", r.len()),
                    ));
                }
                r.into_iter().map(bind_one).collect()
            })
            .collect::<DbResult<_>>()?;
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&text).map_err(classify)?;
            for row in &rows {
                stmt.execute(params_from_iter(row)).map_err(classify)?;
            }
            Ok(rows.len() as u64)
        })
        .await
    }

    async fn set_cache_size_kib(&mut self, kib: i64) -> DbResult<Option<i64>> {
        self.run(move |c| {
            let old: i64 = c
                .pragma_query_value(None, "cache_size", |r| r.get(0))
                .map_err(classify)?;
            c.pragma_update(None, "cache_size", -kib.abs())
                .map_err(classify)?;
            Ok(Some(old))
        })
        .await
    }

    async fn restore_cache_size(&mut self, previous: i64) -> DbResult<()> {
        self.run(move |c| {
            c.pragma_update(None, "cache_size", previous)
                .map_err(classify)
        })
        .await
    }

    async fn commit(mut self: Box<Self>) -> DbResult<()> {
        if self.begin.is_some() {
            // Nothing ran: there is no transaction to end.
            self.done = true;
            return Ok(());
        }
        let result = self
            .worker
            .call(|c| c.execute_batch("COMMIT").map_err(classify))
            .await
            .and_then(|r| r);
        // On a failed COMMIT the transaction is still open; Drop rolls it back.
        self.done = result.is_ok();
        result
    }

    async fn rollback(mut self: Box<Self>) -> DbResult<()> {
        self.done = true;
        if self.begin.is_some() {
            return Ok(());
        }
        self.worker
            .call(|c| c.execute_batch("ROLLBACK").map_err(classify))
            .await?
    }
}

fn query(conn: &mut Connection, text: &str, params: Vec<SqlValue>) -> DbResult<Vec<Row>> {
    let mut stmt = conn.prepare_cached(text).map_err(classify)?;
    let columns: Arc<[String]> = stmt.column_names().map(str::to_owned).collect();
    let n = columns.len();
    let mut rows = stmt.query(params_from_iter(params)).map_err(classify)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(classify)? {
        let mut cells = Vec::with_capacity(n);
        for i in 0..n {
            cells.push(match row.get_ref(i).map_err(classify)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Real(v) => Cell::Real(v),
                ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
            });
        }
        out.push(Row {
            backend: BACKEND,
            columns: columns.clone(),
            data: Data::Cells(cells),
        });
    }
    Ok(out)
}

/// Converts sea-query values to SQLite values. Timestamps become the
/// fixed-width text of [`crate::time`]; booleans become 0 and 1.
fn bind(values: sea_query::Values) -> DbResult<Vec<SqlValue>> {
    values.0.into_iter().map(bind_one).collect()
}

/// Converts one sea-query value to the SQLite value this crate binds for it
/// (timestamps as fixed-width text, booleans as 0 and 1). For loaders that
/// drive rusqlite directly, such as the benchmark's bulk-load limit.
pub fn bind_one(v: Value) -> DbResult<SqlValue> {
    fn int(v: Option<i64>) -> SqlValue {
        v.map_or(SqlValue::Null, SqlValue::Integer)
    }
    Ok(match v {
        Value::Bool(b) => int(b.map(i64::from)),
        Value::TinyInt(v) => int(v.map(i64::from)),
        Value::SmallInt(v) => int(v.map(i64::from)),
        Value::Int(v) => int(v.map(i64::from)),
        Value::BigInt(v) => int(v),
        Value::TinyUnsigned(v) => int(v.map(i64::from)),
        Value::SmallUnsigned(v) => int(v.map(i64::from)),
        Value::Unsigned(v) => int(v.map(i64::from)),
        Value::BigUnsigned(v) => match v {
            None => SqlValue::Null,
            Some(u) => SqlValue::Integer(i64::try_from(u).map_err(|_| {
                DbError::new(
                    BACKEND,
                    ErrorKind::Encode,
                    format!("{u} does not fit in i64"),
                )
            })?),
        },
        Value::Float(v) => v.map_or(SqlValue::Null, |f| SqlValue::Real(f64::from(f))),
        Value::Double(v) => v.map_or(SqlValue::Null, SqlValue::Real),
        Value::String(v) => v.map_or(SqlValue::Null, SqlValue::Text),
        Value::Char(v) => v.map_or(SqlValue::Null, |c| SqlValue::Text(c.to_string())),
        Value::Bytes(v) => v.map_or(SqlValue::Null, SqlValue::Blob),
        Value::ChronoDateTimeUtc(v) => match v {
            None => SqlValue::Null,
            Some(t) => SqlValue::Text(crate::time::to_sqlite_text(
                crate::time::for_storage(t)
                    .map_err(|e| DbError::new(BACKEND, ErrorKind::Encode, e))?,
            )),
        },
        other => {
            return Err(DbError::new(
                BACKEND,
                ErrorKind::Encode,
                format!("unsupported parameter type: {other:?}"),
            ));
        }
    })
}

/// The one place SQLite errors are classified.
pub(crate) fn classify(err: rusqlite::Error) -> DbError {
    use rusqlite::ErrorCode;
    use rusqlite::ffi;
    let kind = match &err {
        rusqlite::Error::SqliteFailure(e, _) => match e.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_CHECK | ffi::SQLITE_CONSTRAINT_NOTNULL => {
                ErrorKind::CheckViolation
            }
            _ => match e.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => ErrorKind::Retryable,
                ErrorCode::CannotOpen | ErrorCode::NotADatabase => ErrorKind::Connection,
                _ => ErrorKind::Other,
            },
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => ErrorKind::Decode,
        rusqlite::Error::ToSqlConversionFailure(_) => ErrorKind::Encode,
        _ => ErrorKind::Other,
    };
    // The driver's own text for an error in SQL text quotes the whole
    // input (a schema step's file, say); the message and offset suffice.
    let message = match &err {
        rusqlite::Error::SqlInputError { msg, offset, .. } => {
            format!("{msg} (at byte {offset} of the statement)")
        }
        rusqlite::Error::SqliteFailure(e, Some(msg)) => format!("{msg} ({:?})", e.code),
        other => other.to_string(),
    };
    DbError::new(BACKEND, kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_in_sql_text_does_not_quote_the_text() {
        let conn = Connection::open_in_memory().unwrap();
        let script = format!(
            "CREATE TABLE t (a TEXT);\n{}\nCREATE TABLE oops (",
            "-- filler\n".repeat(200)
        );
        let err = classify(conn.execute_batch(&script).unwrap_err());
        let text = err.to_string();
        assert!(!text.contains("filler"), "{text}");
        assert!(text.len() < 200, "{text}");
    }
}
