//! One executor interface over both backends.
//!
//! Store logic is written once against [`Tx`]: it builds sea-query
//! statements, and the transaction renders them in its own dialect, binds the
//! values and returns neutral [`Row`]s. The SQLite and PostgreSQL
//! implementations (`sqlite.rs`, `postgres.rs`) are the only code that
//! differs between the backends.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use sea_query::{PostgresQueryBuilder, QueryStatementWriter, SqliteQueryBuilder, Values};

use crate::error::{DbError, DbResult, ErrorKind};
#[cfg(feature = "postgres")]
use crate::postgres::PostgresDb;
use crate::row::Row;
#[cfg(feature = "sqlite")]
use crate::sqlite::SqliteDb;

/// The SQL dialect of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// SQLite 3 (bundled with rusqlite).
    Sqlite,
    /// PostgreSQL 13 or newer.
    Postgres,
}

impl Dialect {
    /// `"sqlite"` or `"postgres"`: the backend label used in errors and test names.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// Renders a sea-query statement in this dialect, values kept apart.
    pub fn build<S: QueryStatementWriter>(self, stmt: &S) -> Sql {
        let (text, values) = match self {
            Dialect::Sqlite => stmt.build(SqliteQueryBuilder),
            Dialect::Postgres => stmt.build(PostgresQueryBuilder),
        };
        Sql { text, values }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A statement rendered for one dialect, with its parameters still unbound.
#[derive(Debug, Clone)]
pub struct Sql {
    /// The statement text, with `?` (SQLite) or `$n` (PostgreSQL) placeholders.
    pub text: String,
    /// The parameter values, in placeholder order.
    pub values: Values,
}

impl Sql {
    /// A fixed statement with bound parameters. Only for catalog queries that
    /// sea-query cannot express (schema introspection); the text must be a
    /// literal, never assembled from values.
    pub fn fixed(text: &'static str, values: Vec<sea_query::Value>) -> Sql {
        Sql {
            text: text.to_owned(),
            values: Values(values),
        }
    }
}

/// Whether a transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxMode {
    /// Read-only: SQLite uses a reader connection, PostgreSQL `READ ONLY`.
    Read,
    /// Read-write: SQLite takes the write lock at `BEGIN IMMEDIATE`.
    Write,
}

/// An open transaction on either backend.
///
/// Dropping a transaction without [`Tx::commit`] rolls it back. Every method
/// runs off the async executor's threads for SQLite (on the connection's
/// worker thread) and as async I/O for PostgreSQL.
#[async_trait]
pub trait Tx: Send {
    /// The dialect statements must be rendered in.
    fn dialect(&self) -> Dialect;

    /// Runs one statement that returns no rows; returns the rows affected.
    async fn execute_sql(&mut self, sql: Sql) -> DbResult<u64>;

    /// Runs one statement and returns all its rows.
    async fn query_sql(&mut self, sql: Sql) -> DbResult<Vec<Row>>;

    /// Runs several queries and returns each one's rows, in order, as
    /// [`Tx::query_sql`] would one after another. PostgreSQL sends them all
    /// before reading any answer (one round trip instead of one per query,
    /// docs/design.md §4.3); SQLite runs them in one call on its thread.
    /// The first failing query's error is returned.
    async fn query_batch(&mut self, batch: Vec<Sql>) -> DbResult<Vec<Vec<Row>>> {
        let mut out = Vec::with_capacity(batch.len());
        for sql in batch {
            out.push(self.query_sql(sql).await?);
        }
        Ok(out)
    }

    /// Runs a script of statements without parameters, such as a schema step.
    async fn execute_script(&mut self, script: &str) -> DbResult<()>;

    /// Appends `rows` to `table` as fast as the backend can: PostgreSQL's
    /// binary `COPY`, SQLite's prepared insert run for every row in one call
    /// on the connection's thread. `table` and `columns` are identifiers of
    /// the schema (checked to be plain identifiers), never values; each row
    /// holds one value per column. Returns the rows written. For bulk loads
    /// (the migration); one-row writes are cheaper as statements.
    async fn copy_in(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: Vec<Vec<sea_query::Value>>,
    ) -> DbResult<u64>;

    /// Sets the page cache of the connection under this transaction, in
    /// KiB, and returns the previous setting (in SQLite's `cache_size`
    /// form: negative KiB or positive pages) so a bulk load can restore it.
    /// SQLite only: it is the connection's, not the transaction's, so it
    /// outlives a rollback. PostgreSQL has no per-connection page cache;
    /// there it does nothing and returns `None`.
    async fn set_cache_size_kib(&mut self, kib: i64) -> DbResult<Option<i64>> {
        let _ = kib;
        Ok(None)
    }

    /// Restores a page cache setting [`Tx::set_cache_size_kib`] returned.
    async fn restore_cache_size(&mut self, previous: i64) -> DbResult<()> {
        let _ = previous;
        Ok(())
    }

    /// Commits the transaction.
    async fn commit(self: Box<Self>) -> DbResult<()>;

    /// Rolls the transaction back.
    async fn rollback(self: Box<Self>) -> DbResult<()>;
}

/// Conveniences over [`Tx`] that take sea-query statements directly.
///
/// Implemented for every `Tx`, including `dyn Tx`; do not implement it.
pub trait TxExt: Tx {
    /// Renders and runs a statement that returns no rows.
    fn exec<'a, S: QueryStatementWriter>(&'a mut self, stmt: &S) -> BoxFuture<'a, DbResult<u64>> {
        let sql = self.dialect().build(stmt);
        self.execute_sql(sql)
    }

    /// Renders and runs a query, returning every row.
    fn query<'a, S: QueryStatementWriter>(
        &'a mut self,
        stmt: &S,
    ) -> BoxFuture<'a, DbResult<Vec<Row>>> {
        let sql = self.dialect().build(stmt);
        self.query_sql(sql)
    }

    /// Renders and runs a query expected to return at most one row.
    fn query_opt<'a, S: QueryStatementWriter>(
        &'a mut self,
        stmt: &S,
    ) -> BoxFuture<'a, DbResult<Option<Row>>>
    where
        Self: Send,
    {
        let sql = self.dialect().build(stmt);
        let backend = self.dialect().name();
        Box::pin(async move {
            let mut rows = self.query_sql(sql).await?;
            match rows.len() {
                0 => Ok(None),
                1 => Ok(rows.pop()),
                n => Err(DbError::new(
                    backend,
                    ErrorKind::Decode,
                    format!("expected at most one row, got {n}"),
                )),
            }
        })
    }

    /// Renders and runs a query expected to return exactly one row.
    fn query_one<'a, S: QueryStatementWriter>(
        &'a mut self,
        stmt: &S,
    ) -> BoxFuture<'a, DbResult<Row>>
    where
        Self: Send,
    {
        let backend = self.dialect().name();
        let fut = self.query_opt(stmt);
        Box::pin(async move {
            fut.await?.ok_or_else(|| {
                DbError::new(backend, ErrorKind::Decode, "expected one row, got none")
            })
        })
    }
}

impl<T: Tx + ?Sized> TxExt for T {}

/// Checks that `names` are plain identifiers (`[a-z_][a-z0-9_]*`), so they
/// can stand in statement text that sea-query cannot build (`COPY`).
pub(crate) fn plain_identifiers(backend: &'static str, names: &[&str]) -> DbResult<()> {
    for n in names {
        let ok = n
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(DbError::new(
                backend,
                ErrorKind::Encode,
                format!("{n:?} is not a plain identifier"),
            ));
        }
    }
    Ok(())
}

/// Appends `rows` (one value per column of `columns`, in order) to
/// `table` with one [`Tx::copy_in`]: the bulk path for schema identifiers
/// given as sea-query idens. Nothing to do for no rows.
pub async fn append<I: sea_query::Iden>(
    tx: &mut dyn Tx,
    table: impl sea_query::Iden,
    columns: impl IntoIterator<Item = I>,
    rows: Vec<Vec<sea_query::Value>>,
) -> DbResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = columns.into_iter().map(|c| c.to_string()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    tx.copy_in(&table.to_string(), &names, rows).await?;
    Ok(())
}

/// `INSERT INTO "table" ("a", "b") VALUES (?, ?)` in `dialect`: the text
/// of a prepared one-row insert.
#[cfg(feature = "sqlite")]
pub(crate) fn insert_text(dialect: Dialect, table: &str, columns: &[&str]) -> String {
    use sea_query::{Alias, Query};
    let mut insert = Query::insert();
    insert
        .into_table(Alias::new(table))
        .columns(columns.iter().map(|c| Alias::new(*c)))
        .values_panic(columns.iter().map(|_| sea_query::Value::Int(None).into()));
    dialect.build(&insert).text
}

/// A handle to a database of either backend; cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Backend>,
}

#[allow(clippy::large_enum_variant, reason = "lives once behind the Db's Arc")]
enum Backend {
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteDb),
    #[cfg(feature = "postgres")]
    Postgres(PostgresDb),
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(db) => f.debug_tuple("Db").field(db).finish(),
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => f.debug_tuple("Db").field(db).finish(),
        }
    }
}

#[cfg(feature = "sqlite")]
impl From<SqliteDb> for Db {
    fn from(db: SqliteDb) -> Self {
        Db {
            inner: Arc::new(Backend::Sqlite(db)),
        }
    }
}

#[cfg(feature = "postgres")]
impl From<PostgresDb> for Db {
    fn from(db: PostgresDb) -> Self {
        Db {
            inner: Arc::new(Backend::Postgres(db)),
        }
    }
}

impl Db {
    /// The dialect of this database.
    pub fn dialect(&self) -> Dialect {
        match &*self.inner {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => Dialect::Sqlite,
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The SQLite database, if this is one.
    #[cfg(feature = "sqlite")]
    pub fn as_sqlite(&self) -> Option<&SqliteDb> {
        match &*self.inner {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(db) => Some(db),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => None,
        }
    }

    /// The PostgreSQL database, if this is one.
    #[cfg(feature = "postgres")]
    pub fn as_postgres(&self) -> Option<&PostgresDb> {
        match &*self.inner {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => None,
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => Some(db),
        }
    }

    /// A description of the database without secrets: `sqlite:<path>` or
    /// `postgres://user@host:port/dbname` (never the password).
    pub fn describe(&self) -> String {
        match &*self.inner {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(db) => format!("sqlite:{}", db.path().display()),
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => db.describe(),
        }
    }

    /// A new handle to the same database, with connections of its own, as
    /// a second process opening it would have: to prove that committed data
    /// is there for anyone who opens the database.
    pub async fn reopen(&self) -> DbResult<Db> {
        Ok(match &*self.inner {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(db) => db.reopen().await?.into(),
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => db.reopen().await?.into(),
        })
    }

    /// Finishes with the database for a clean shutdown: SQLite checkpoints
    /// its write-ahead log into the file; PostgreSQL closes its pool.
    /// Idempotent. After it, SQLite keeps working and PostgreSQL refuses.
    pub async fn close(&self) -> DbResult<()> {
        match &*self.inner {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(db) => db.close().await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => {
                db.close();
                Ok(())
            }
        }
    }

    /// Opens a transaction. Prefer [`Db::write`] and [`Db::read`], which
    /// cannot forget to finish it.
    pub async fn begin(&self, mode: TxMode) -> DbResult<Box<dyn Tx>> {
        match &*self.inner {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(db) => db.begin(mode).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => db.begin(mode).await,
        }
    }

    /// Runs `f` in a read-write transaction: commits when it returns `Ok`,
    /// rolls back when it returns `Err` (and returns that error).
    ///
    /// When the database ends the transaction for its timing alone (on
    /// PostgreSQL a deadlock, a serialization failure or a lock not
    /// available; docs/design.md §4.5), the whole transaction is run again,
    /// `f` included, after a short random pause, up to [`TX_ATTEMPTS`]
    /// times in all; the last attempt's error is returned. So `f` may run
    /// more than once and must do nothing outside the transaction that a
    /// second run would repeat. A failure `f` makes up itself is never
    /// retried, nor is any failure on SQLite, whose busy handler has
    /// already waited out the busy timeout.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: for<'t> Fn(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + Sync,
        E: From<DbError>,
        T: Send,
    {
        self.run(TxMode::Write, f).await
    }

    /// Runs `f` in a read-only transaction, run again as [`Db::write`]
    /// says.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: for<'t> Fn(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + Sync,
        E: From<DbError>,
        T: Send,
    {
        self.run(TxMode::Read, f).await
    }

    /// Runs `f` in a read-write transaction once, never again: for work
    /// that consumes its input (a bulk load's rows), whose caller decides
    /// what a retryable failure means ([`DbError::is_retryable`]).
    pub async fn write_once<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send,
        E: From<DbError>,
        T: Send,
    {
        let mut tx = Watched::new(self.begin(TxMode::Write).await?);
        let outcome = f(&mut tx).await;
        tx.finish(outcome).await.map_err(Failure::into_error)
    }

    async fn run<T, E, F>(&self, mode: TxMode, f: F) -> Result<T, E>
    where
        F: for<'t> Fn(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + Sync,
        E: From<DbError>,
        T: Send,
    {
        let mut attempt = 1;
        loop {
            let mut tx = Watched::new(self.begin(mode).await?);
            let outcome = f(&mut tx).await;
            match tx.finish(outcome).await {
                Ok(value) => return Ok(value),
                Err(Failure::Timing(_, cause)) if attempt < TX_ATTEMPTS => {
                    let pause = retry_pause(attempt);
                    tracing::debug!(
                        database = %self.describe(),
                        attempt,
                        pause_ms = pause.as_millis() as u64,
                        "the database ended a transaction ({cause}); running it again"
                    );
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(failure) => return Err(failure.into_error()),
            }
        }
    }
}

/// How many times [`Db::write`] and [`Db::read`] run a PostgreSQL
/// transaction the server keeps ending for its timing (a deadlock, a
/// serialization failure), before they return the last failure.
pub const TX_ATTEMPTS: u32 = 10;

/// Whether a transaction that failed with `err` is worth running again,
/// whole, at once: PostgreSQL ended it for its timing (a deadlock, a
/// serialization failure, a lock not available). Never on SQLite, whose
/// busy handler has already waited (docs/design.md §4.5). What
/// [`Db::write`] decides by, for callers that drive a transaction
/// themselves.
pub fn run_again(err: &DbError) -> bool {
    err.is_retryable() && err.backend == Dialect::Postgres.name()
}

/// The pause before attempt `attempt + 1` (counting from 1): random, so
/// that two transactions that deadlocked do not meet again in step, and
/// doubling from 10 ms up to 500 ms (the pauses of all [`TX_ATTEMPTS`] add
/// up to at most about 2.1 s).
pub fn retry_pause(attempt: u32) -> std::time::Duration {
    use std::hash::BuildHasher;
    let ceiling_ms = (10u64 << attempt.saturating_sub(1).min(6)).min(500);
    // A fresh `RandomState` is randomly keyed: its hash of anything is a
    // random number without a generator to carry.
    let random = std::collections::hash_map::RandomState::new().hash_one(attempt);
    std::time::Duration::from_millis(ceiling_ms / 2 + random % (ceiling_ms / 2 + 1))
}

/// How a transaction run by [`Db`] ended without committing.
enum Failure<E> {
    /// The database ended it for its timing (`cause`): running it again
    /// may succeed.
    Timing(E, String),
    /// Anything else.
    Other(E),
}

impl<E> Failure<E> {
    fn into_error(self) -> E {
        match self {
            Failure::Timing(e, _) | Failure::Other(e) => e,
        }
    }
}

/// A transaction that remembers the first failure worth running it again
/// for ([`run_again`]): after it, the transaction is over on the server,
/// whatever the closure made of the error (docs/design.md §4.5).
struct Watched {
    inner: Box<dyn Tx>,
    retryable: Option<String>,
}

impl Watched {
    fn new(inner: Box<dyn Tx>) -> Self {
        Watched {
            inner,
            retryable: None,
        }
    }

    fn note<T>(&mut self, result: DbResult<T>) -> DbResult<T> {
        if let Err(e) = &result
            && run_again(e)
            && self.retryable.is_none()
        {
            self.retryable = Some(e.to_string());
        }
        result
    }

    /// Commits after `Ok`, rolls back after `Err`.
    async fn finish<T, E: From<DbError>>(self, outcome: Result<T, E>) -> Result<T, Failure<E>> {
        match outcome {
            Ok(value) => match self.inner.commit().await {
                Ok(()) => Ok(value),
                Err(e) if run_again(&e) => {
                    let cause = e.to_string();
                    Err(Failure::Timing(e.into(), cause))
                }
                Err(e) => Err(Failure::Other(e.into())),
            },
            Err(err) => {
                // The closure's error is the one worth reporting; a failed
                // rollback also ends the transaction (the connection is
                // discarded), so nothing is left half-done.
                let _ = self.inner.rollback().await;
                Err(match self.retryable {
                    Some(cause) => Failure::Timing(err, cause),
                    None => Failure::Other(err),
                })
            }
        }
    }
}

#[async_trait]
impl Tx for Watched {
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }

    async fn execute_sql(&mut self, sql: Sql) -> DbResult<u64> {
        let r = self.inner.execute_sql(sql).await;
        self.note(r)
    }

    async fn query_sql(&mut self, sql: Sql) -> DbResult<Vec<Row>> {
        let r = self.inner.query_sql(sql).await;
        self.note(r)
    }

    async fn query_batch(&mut self, batch: Vec<Sql>) -> DbResult<Vec<Vec<Row>>> {
        let r = self.inner.query_batch(batch).await;
        self.note(r)
    }

    async fn execute_script(&mut self, script: &str) -> DbResult<()> {
        let r = self.inner.execute_script(script).await;
        self.note(r)
    }

    async fn copy_in(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: Vec<Vec<sea_query::Value>>,
    ) -> DbResult<u64> {
        let r = self.inner.copy_in(table, columns, rows).await;
        self.note(r)
    }

    async fn set_cache_size_kib(&mut self, kib: i64) -> DbResult<Option<i64>> {
        let r = self.inner.set_cache_size_kib(kib).await;
        self.note(r)
    }

    async fn restore_cache_size(&mut self, previous: i64) -> DbResult<()> {
        let r = self.inner.restore_cache_size(previous).await;
        self.note(r)
    }

    async fn commit(self: Box<Self>) -> DbResult<()> {
        self.inner.commit().await
    }

    async fn rollback(self: Box<Self>) -> DbResult<()> {
        self.inner.rollback().await
    }
}
