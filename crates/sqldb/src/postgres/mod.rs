//! PostgreSQL: a deadpool pool for store work, dedicated connections for
//! work that holds session state (the migration runner's advisory lock).
//!
//! Transactions are plain `BEGIN` / `COMMIT` on a pooled client. A read
//! transaction is one snapshot (`REPEATABLE READ READ ONLY`), and its
//! `BEGIN` goes out with its first queries in one round trip; queries
//! given together ([`Tx::query_batch`]) are pipelined (docs/design.md §4.3).
//! A transaction dropped before it finished (a cancelled future, a panic) takes
//! its connection out of the pool and closes it, and the server rolls it
//! back; the pool therefore never hands out a connection inside a
//! transaction, and can recycle with the cheap `Fast` method.
//!
//! Parameters are bound by the types PostgreSQL infers for the prepared
//! statement, so store code can pass any integer where the column is
//! `SMALLINT`, `INTEGER` or `BIGINT` (out-of-range values are an encode
//! error, never a silent wrap).

use std::collections::HashMap;
use std::error::Error as _;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use sea_query::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Config, NoTls, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{DbError, DbResult, ErrorKind};
use crate::row::{Cell, Data, Row};
use crate::tx::{Dialect, Sql, Tx, TxMode};

const BACKEND: &str = "postgres";

/// Settings for [`PostgresDb::connect`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The most pooled connections open at once.
    pub pool_size: usize,
}

impl PostgresOptions {
    /// The options with a pool of `pool_size`.
    pub fn with_pool_size(pool_size: usize) -> PostgresOptions {
        PostgresOptions { pool_size }
    }
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions { pool_size: 8 }
    }
}

/// A PostgreSQL database reached through a connection pool.
pub struct PostgresDb {
    pool: Pool,
    config: Config,
    tls: Option<MakeRustlsConnect>,
    opts: PostgresOptions,
}

impl fmt::Debug for PostgresDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("PostgresDb")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("pool_size", &self.pool.status().max_size)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl PostgresDb {
    /// Builds the pool from a standard connection URL
    /// (`postgres://user:password@host:port/dbname?host=/socket/dir`) and
    /// checks that one connection can be opened. TLS follows the URL's
    /// `sslmode`, `sslrootcert`, `sslcert` and `sslkey` with libpq's
    /// meanings ([`crate::pg_tls`]); the default is `prefer`.
    pub async fn connect(url: &str, opts: PostgresOptions) -> DbResult<PostgresDb> {
        let (config, settings) = crate::pg_tls::parse_url(url)?;
        let tls = crate::pg_tls::connector(&settings)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(config.clone(), tls.clone(), manager_config),
            None => Manager::from_config(config.clone(), NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .build()
            .map_err(|e| DbError::new(BACKEND, ErrorKind::Connection, e))?;
        drop(pool.get().await.map_err(pool_error)?);
        tracing::info!(
            backend = BACKEND,
            target = %describe_config(&config),
            sslmode = settings.mode.as_str(),
            pool_size = opts.pool_size,
            "PostgreSQL connected"
        );
        Ok(PostgresDb {
            pool,
            config,
            tls,
            opts,
        })
    }

    /// A new pool to the same database, with the same options.
    pub async fn reopen(&self) -> DbResult<PostgresDb> {
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &self.tls {
            Some(tls) => Manager::from_config(self.config.clone(), tls.clone(), manager_config),
            None => Manager::from_config(self.config.clone(), NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(self.opts.pool_size.max(1))
            .build()
            .map_err(|e| DbError::new(BACKEND, ErrorKind::Connection, e))?;
        drop(pool.get().await.map_err(pool_error)?);
        Ok(PostgresDb {
            pool,
            config: self.config.clone(),
            tls: self.tls.clone(),
            opts: self.opts.clone(),
        })
    }

    /// The database for people, with every part that decides which database
    /// it is (hosts or socket directories, ports, user, database name,
    /// server options) and never the password: `postgres://user@host:port/db`
    /// for one TCP host, `postgres://user@/db?host=…&port=…` otherwise.
    /// Two descriptions are equal exactly when those parts are.
    pub fn describe(&self) -> String {
        describe_config(&self.config)
    }

    /// Closes the pool: connections in it are closed now, those in use when
    /// they come back; later calls fail with a connection error.
    pub fn close(&self) {
        self.pool.close();
        tracing::info!(target = %self.describe(), "PostgreSQL pool closed");
    }

    /// The database name from the URL, if it named one.
    pub fn dbname(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    pub(crate) async fn begin(&self, mode: TxMode) -> DbResult<Box<dyn Tx>> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        let mut tx = PgTx {
            conn: PgConn::Pooled(Some(obj)),
            done: false,
            read_only: mode == TxMode::Read,
            pending_begin: Some(begin_sql(mode)),
        };
        // A write's BEGIN is confirmed before any statement runs, so no
        // statement of a write can ever run outside its transaction.
        if mode == TxMode::Write {
            tx.send_begin().await?;
        }
        Ok(Box::new(tx))
    }

    /// Opens a connection outside the pool, for session-level state such as
    /// an advisory lock that a pooled connection could lose on recycling.
    pub async fn dedicated(&self) -> DbResult<DedicatedConn> {
        // The connection task ends when the client is dropped or the server
        // goes away; the client's next call reports the error.
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) =
                    self.config.connect(tls.clone()).await.map_err(classify)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(classify)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                client
            }
        };
        Ok(DedicatedConn {
            inner: Arc::new(Dedicated {
                client,
                statements: Mutex::new(HashMap::new()),
                rollback_owed: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }
}

/// See [`PostgresDb::describe`].
pub fn describe_config(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<(bool, String)> = match config.get_hosts() {
        [] => vec![(true, "localhost".to_owned())],
        hs => hs
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => (true, name.clone()),
                Host::Unix(dir) => (false, dir.display().to_string()),
            })
            .collect(),
    };
    let ports: Vec<u16> = match config.get_ports() {
        [] => vec![5432],
        ps => ps.to_vec(),
    };
    let port_of = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let dbname = config.get_dbname().unwrap_or(user);
    let mut out = if hosts.len() == 1 && hosts[0].0 {
        format!("postgres://{user}@{}:{}/{dbname}", hosts[0].1, port_of(0))
    } else {
        let hs: Vec<&str> = hosts.iter().map(|(_, h)| h.as_str()).collect();
        let ps: Vec<String> = (0..hosts.len()).map(|i| port_of(i).to_string()).collect();
        format!(
            "postgres://{user}@/{dbname}?host={}&port={}",
            hs.join(","),
            ps.join(",")
        )
    };
    if let Some(options) = config.get_options() {
        out.push_str(if out.contains('?') { "&" } else { "?" });
        out.push_str("options=");
        out.push_str(options);
    }
    out
}

fn begin_sql(mode: TxMode) -> &'static str {
    match mode {
        TxMode::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        TxMode::Write => "BEGIN",
    }
}

/// A connection outside the pool; closed when dropped.
pub struct DedicatedConn {
    inner: Arc<Dedicated>,
}

struct Dedicated {
    client: Client,
    statements: Mutex<HashMap<String, Statement>>,
    /// A transaction on this connection was dropped unfinished: its
    /// `ROLLBACK` is sent before anything else uses the connection. (Sent
    /// from `Drop` instead, by a spawned task, it could reach the server
    /// after the next `BEGIN` and roll back the wrong transaction.)
    rollback_owed: std::sync::atomic::AtomicBool,
}

impl Dedicated {
    /// Sends the `ROLLBACK` a dropped transaction owes, if any.
    async fn settle(&self) -> DbResult<()> {
        use std::sync::atomic::Ordering;
        if self.rollback_owed.swap(false, Ordering::AcqRel)
            && let Err(e) = self.client.batch_execute("ROLLBACK").await
        {
            self.rollback_owed.store(true, Ordering::Release);
            return Err(classify(e));
        }
        Ok(())
    }
}

impl fmt::Debug for DedicatedConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DedicatedConn")
    }
}

impl DedicatedConn {
    /// Opens a transaction on this connection. Finish it before opening another.
    pub async fn begin(&self, mode: TxMode) -> DbResult<Box<dyn Tx>> {
        self.inner.settle().await?;
        self.inner
            .client
            .batch_execute(begin_sql(mode))
            .await
            .map_err(classify)?;
        Ok(Box::new(PgTx {
            conn: PgConn::Dedicated(self.inner.clone()),
            done: false,
            read_only: false,
            pending_begin: None,
        }))
    }

    /// The driver's client, for what the [`Tx`] interface does not offer
    /// (binary COPY in the benchmark's bulk-load limit). Use it inside a
    /// transaction from [`DedicatedConn::begin`], which settles any
    /// transaction dropped before.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Runs a query outside any transaction (for session-level commands).
    pub async fn query_sql(&self, sql: Sql) -> DbResult<Vec<Row>> {
        self.inner.settle().await?;
        let mut tx = PgTx {
            conn: PgConn::Dedicated(self.inner.clone()),
            // Not a transaction: nothing to roll back on drop.
            done: true,
            read_only: false,
            pending_begin: None,
        };
        tx.query_sql(sql).await
    }
}

#[allow(
    clippy::large_enum_variant,
    reason = "one per open transaction, moved once; boxing would only add an allocation"
)]
enum PgConn {
    Pooled(Option<Object>),
    Dedicated(Arc<Dedicated>),
}

struct PgTx {
    conn: PgConn,
    done: bool,
    /// A read transaction on a pooled connection (see `commit`).
    read_only: bool,
    /// A read transaction's `BEGIN`, not sent yet: it goes out ahead of the
    /// first queries, in their round trip. `None` once sent.
    pending_begin: Option<&'static str>,
}

impl PgTx {
    /// Sends a pending `BEGIN` on its own, before a statement that cannot
    /// share its round trip.
    async fn send_begin(&mut self) -> DbResult<()> {
        if let Some(begin) = self.pending_begin.take() {
            self.client().batch_execute(begin).await.map_err(classify)?;
        }
        Ok(())
    }

    fn client(&self) -> &Client {
        match &self.conn {
            PgConn::Pooled(Some(obj)) => obj,
            PgConn::Dedicated(d) => &d.client,
            PgConn::Pooled(None) => unreachable_client(),
        }
    }

    async fn prepare(&self, text: &str) -> DbResult<Statement> {
        match &self.conn {
            PgConn::Pooled(Some(obj)) => obj.prepare_cached(text).await.map_err(classify),
            PgConn::Dedicated(d) => {
                let cached = d
                    .statements
                    .lock()
                    .map_err(|_| poisoned())?
                    .get(text)
                    .cloned();
                if let Some(stmt) = cached {
                    return Ok(stmt);
                }
                let stmt = d.client.prepare(text).await.map_err(classify)?;
                d.statements
                    .lock()
                    .map_err(|_| poisoned())?
                    .insert(text.to_owned(), stmt.clone());
                Ok(stmt)
            }
            PgConn::Pooled(None) => unreachable_client(),
        }
    }
}

fn poisoned() -> DbError {
    DbError::new(BACKEND, ErrorKind::Other, "statement cache lock poisoned")
}

#[allow(
    clippy::panic,
    reason = "a transaction used after Drop released its connection is a bug in this module"
)]
fn unreachable_client() -> ! {
    // The pooled object is only taken out in Drop.
    panic!("postgres transaction used after its connection was released")
}

impl Drop for PgTx {
    fn drop(&mut self) {
        // A transaction that never began holds nothing on the server.
        if self.done || self.pending_begin.is_some() {
            return;
        }
        match &mut self.conn {
            PgConn::Pooled(obj) => {
                if let Some(obj) = obj.take() {
                    // Detach from the pool and close: the server rolls back.
                    drop(Object::take(obj));
                }
            }
            PgConn::Dedicated(d) => {
                // The connection's next user sends the ROLLBACK first; if
                // there is none, closing the connection rolls back.
                d.rollback_owed
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
    }
}

#[async_trait]
impl Tx for PgTx {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn execute_sql(&mut self, sql: Sql) -> DbResult<u64> {
        self.send_begin().await?;
        let stmt = self.prepare(&sql.text).await?;
        let params = bind(sql.values, stmt.params())?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.client().execute(&stmt, &refs).await.map_err(classify)
    }

    async fn query_sql(&mut self, sql: Sql) -> DbResult<Vec<Row>> {
        let mut all = self.query_batch(vec![sql]).await?;
        Ok(all.pop().unwrap_or_default())
    }

    async fn query_batch(&mut self, batch: Vec<Sql>) -> DbResult<Vec<Vec<Row>>> {
        use futures::future::{join, try_join_all};
        // tokio-postgres sends a request when its future is first polled and
        // reads answers in order, so futures polled together share one round
        // trip; joins poll in argument order, so a pending BEGIN goes first.
        let mut begin = self.pending_begin.take();
        let client = self.client();
        // Cached statements are ready at the first poll; only new ones cost
        // a round trip, which then carries the BEGIN.
        let statements = {
            let prepares = try_join_all(batch.iter().map(|sql| self.prepare(&sql.text)));
            futures::pin_mut!(prepares);
            match futures::poll!(prepares.as_mut()) {
                std::task::Poll::Ready(done) => done?,
                std::task::Poll::Pending => match begin.take() {
                    Some(b) => {
                        let (began, prepared) = join(client.batch_execute(b), prepares).await;
                        began.map_err(classify)?;
                        prepared?
                    }
                    None => prepares.await?,
                },
            }
        };
        let params = batch
            .into_iter()
            .zip(&statements)
            .map(|(sql, stmt)| bind(sql.values, stmt.params()))
            .collect::<DbResult<Vec<_>>>()?;
        let refs: Vec<Vec<&(dyn ToSql + Sync)>> = params
            .iter()
            .map(|p| p.iter().map(|v| v as _).collect())
            .collect();
        // Each row is taken as it arrives, while the server produces the
        // next ones, rather than after the last, and kept as received: its
        // columns are decoded when they are read (`Row`), which for a page
        // read back is on the blocking pool, beside the next fetch.
        let queries = try_join_all(statements.iter().zip(&refs).map(|(stmt, refs)| async move {
            let columns: Arc<[String]> =
                stmt.columns().iter().map(|c| c.name().to_owned()).collect();
            let stream = client
                .query_raw(stmt, refs.iter().copied())
                .await
                .map_err(classify)?;
            futures::pin_mut!(stream);
            let mut rows = Vec::new();
            while let Some(row) = futures::StreamExt::next(&mut stream).await {
                rows.push(Row {
                    backend: BACKEND,
                    columns: columns.clone(),
                    data: Data::Pg(row.map_err(classify)?),
                });
            }
            Ok::<_, DbError>(rows)
        }));
        match begin {
            Some(b) => {
                let (began, answers) = join(client.batch_execute(b), queries).await;
                began.map_err(classify)?;
                answers
            }
            None => queries.await,
        }
    }

    async fn execute_script(&mut self, script: &str) -> DbResult<()> {
        self.send_begin().await?;
        self.client().batch_execute(script).await.map_err(classify)
    }

    async fn copy_in(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: Vec<Vec<Value>>,
    ) -> DbResult<u64> {
        use futures::pin_mut;
        use tokio_postgres::binary_copy::BinaryCopyInWriter;
        crate::tx::plain_identifiers(BACKEND, &[table])?;
        crate::tx::plain_identifiers(BACKEND, columns)?;
        if rows.is_empty() {
            return Ok(0);
        }
        self.send_begin().await?;
        let list = columns
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        // The column types, from the statement's description (cached).
        let probe = self
            .prepare(&format!("SELECT {list} FROM \"{table}\" LIMIT 0"))
            .await?;
        let types: Vec<Type> = probe.columns().iter().map(|c| c.type_().clone()).collect();
        let copy = self
            .prepare(&format!(
                "COPY \"{table}\" ({list}) FROM STDIN (FORMAT binary)"
            ))
            .await?;
        let sink = self
            .client()
            .copy_in::<_, bytes::Bytes>(&copy)
            .await
            .map_err(classify)?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        for row in rows {
            if row.len() != types.len() {
                return Err(encode_err(format!(
                    "a row of {} values for {} columns of {table}",
                    row.len(),
                    types.len()
                )));
            }
            let values = row
                .into_iter()
                .zip(&types)
                .map(|(v, ty)| bind_one(v, ty))
                .collect::<Result<Vec<PgValue>, String>>()
                .map_err(encode_err)?;
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(as_sql).collect();
            writer.as_mut().write(&refs).await.map_err(classify)?;
        }
        writer.finish().await.map_err(classify)
    }

    async fn commit(mut self: Box<Self>) -> DbResult<()> {
        if self.pending_begin.is_some() {
            // Nothing ran: there is no transaction to end.
            return Ok(());
        }
        if self.read_only {
            // A read has nothing to commit: its COMMIT is sent, not waited
            // for. The connection answers requests in order, so whoever
            // uses it next is served after the COMMIT is done.
            let sent = {
                let commit = self.client().batch_execute("COMMIT");
                futures::pin_mut!(commit);
                match futures::poll!(commit.as_mut()) {
                    std::task::Poll::Ready(Err(e)) => Err(classify(e)),
                    _ => Ok(()),
                }
            };
            // A COMMIT that could not even be sent leaves `done` false, so
            // Drop discards the connection.
            self.done = sent.is_ok();
            return sent;
        }
        let result = self
            .client()
            .batch_execute("COMMIT")
            .await
            .map_err(classify);
        // A failed COMMIT leaves `done` false, so Drop discards the connection.
        self.done = result.is_ok();
        result
    }

    async fn rollback(mut self: Box<Self>) -> DbResult<()> {
        if self.pending_begin.is_some() {
            return Ok(());
        }
        let result = self
            .client()
            .batch_execute("ROLLBACK")
            .await
            .map_err(classify);
        self.done = result.is_ok();
        result
    }
}

/// A parameter converted to the type PostgreSQL expects for it (see
/// [`pg_value`]).
#[derive(Debug)]
#[allow(
    missing_docs,
    reason = "one variant per PostgreSQL parameter type, named after it"
)]
pub enum PgValue {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F64(f64),
    Text(String),
    Bytes(Vec<u8>),
    Timestamp(NaiveDateTime),
    TimestampTz(DateTime<Utc>),
}

impl ToSql for PgValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            PgValue::Null => Ok(IsNull::Yes),
            PgValue::Bool(v) => v.to_sql(ty, out),
            PgValue::I16(v) => v.to_sql(ty, out),
            PgValue::I32(v) => v.to_sql(ty, out),
            PgValue::I64(v) => v.to_sql(ty, out),
            PgValue::F64(v) => v.to_sql(ty, out),
            PgValue::Text(v) => v.to_sql(ty, out),
            PgValue::Bytes(v) => v.to_sql(ty, out),
            PgValue::Timestamp(v) => v.to_sql(ty, out),
            PgValue::TimestampTz(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        // `bind` already converted the value to the statement's type.
        true
    }

    to_sql_checked!();
}

fn as_sql(v: &PgValue) -> &(dyn ToSql + Sync) {
    v
}

fn encode_err(msg: String) -> DbError {
    DbError::new(BACKEND, ErrorKind::Encode, msg)
}

fn bind(values: sea_query::Values, types: &[Type]) -> DbResult<Vec<PgValue>> {
    if values.0.len() != types.len() {
        return Err(encode_err(format!(
            "statement has {} parameters, {} values given",
            types.len(),
            values.0.len()
        )));
    }
    values
        .0
        .into_iter()
        .zip(types)
        .enumerate()
        .map(|(i, (v, ty))| {
            bind_one(v, ty).map_err(|e| encode_err(format!("parameter ${}: {e}", i + 1)))
        })
        .collect()
}

fn int_of(v: &Value) -> Option<Option<i64>> {
    Some(match v {
        Value::TinyInt(v) => v.map(i64::from),
        Value::SmallInt(v) => v.map(i64::from),
        Value::Int(v) => v.map(i64::from),
        Value::BigInt(v) => *v,
        Value::TinyUnsigned(v) => v.map(i64::from),
        Value::SmallUnsigned(v) => v.map(i64::from),
        Value::Unsigned(v) => v.map(i64::from),
        Value::BigUnsigned(v) => match v {
            None => None,
            Some(u) => Some(i64::try_from(*u).ok()?),
        },
        _ => return None,
    })
}

/// Converts one sea-query value to the parameter this crate binds for a
/// column of type `ty` (integers to the column's width, timestamps as UTC
/// microseconds). For loaders that drive tokio-postgres directly, such as the
/// benchmark's binary COPY.
pub fn pg_value(v: Value, ty: &Type) -> Result<PgValue, String> {
    bind_one(v, ty)
}

fn bind_one(v: Value, ty: &Type) -> Result<PgValue, String> {
    if let Some(i) = int_of(&v) {
        let Some(i) = i else { return Ok(PgValue::Null) };
        return Ok(match *ty {
            Type::INT2 => {
                PgValue::I16(i16::try_from(i).map_err(|_| format!("{i} does not fit in SMALLINT"))?)
            }
            Type::INT4 => {
                PgValue::I32(i32::try_from(i).map_err(|_| format!("{i} does not fit in INTEGER"))?)
            }
            Type::INT8 => PgValue::I64(i),
            Type::FLOAT8 => PgValue::F64(i as f64),
            _ => return Err(format!("an integer cannot bind to type {ty}")),
        });
    }
    Ok(match v {
        Value::Bool(b) => b.map_or(PgValue::Null, PgValue::Bool),
        Value::Float(f) => f.map_or(PgValue::Null, |f| PgValue::F64(f64::from(f))),
        Value::Double(f) => f.map_or(PgValue::Null, PgValue::F64),
        Value::String(s) => s.map_or(PgValue::Null, PgValue::Text),
        Value::Char(c) => c.map_or(PgValue::Null, |c| PgValue::Text(c.to_string())),
        Value::Bytes(b) => b.map_or(PgValue::Null, PgValue::Bytes),
        Value::ChronoDateTimeUtc(t) => match t {
            None => PgValue::Null,
            Some(t) => {
                let naive = crate::time::for_storage(t)?;
                if *ty == Type::TIMESTAMPTZ {
                    PgValue::TimestampTz(naive.and_utc())
                } else {
                    PgValue::Timestamp(naive)
                }
            }
        },
        other => return Err(format!("unsupported parameter type: {other:?}")),
    })
}

/// Column `i` of `row` (which the caller checked is in range) as a
/// [`Cell`]. Errors: a type this crate does not read, or bytes that do not
/// decode as the column's type.
pub(crate) fn cell_at(row: &tokio_postgres::Row, i: usize) -> DbResult<Cell> {
    let col = &row.columns()[i];
    let ty = col.type_();
    let cell = match *ty {
        Type::BOOL => row.try_get::<_, Option<bool>>(i).map(|v| v.map(Cell::Bool)),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map(|v| v.map(|v| Cell::Int(v.into()))),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map(|v| v.map(|v| Cell::Int(v.into()))),
        Type::INT8 => row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int)),
        Type::OID => row
            .try_get::<_, Option<u32>>(i)
            .map(|v| v.map(|v| Cell::Int(v.into()))),
        Type::CHAR => row
            .try_get::<_, Option<i8>>(i)
            .map(|v| v.map(|v| Cell::Int(v.into()))),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map(|v| v.map(|v| Cell::Real(v.into()))),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map(|v| v.map(Cell::Real)),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
            .try_get::<_, Option<String>>(i)
            .map(|v| v.map(Cell::Text)),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map(|v| v.map(Cell::Blob)),
        Type::TIMESTAMP => row
            .try_get::<_, Option<NaiveDateTime>>(i)
            .map(|v| v.map(|t| Cell::Time(t.and_utc()))),
        Type::TIMESTAMPTZ => row
            .try_get::<_, Option<DateTime<Utc>>>(i)
            .map(|v| v.map(Cell::Time)),
        _ => {
            return Err(DbError::new(
                BACKEND,
                ErrorKind::Decode,
                format!("column {i} ({}): unsupported type {ty}", col.name()),
            ));
        }
    }
    .map_err(|e| DbError::new(BACKEND, ErrorKind::Decode, e))?;
    Ok(cell.unwrap_or(Cell::Null))
}

fn pool_error(err: PoolError) -> DbError {
    match err {
        PoolError::Backend(e) => {
            let mut e = classify(e);
            if e.kind == ErrorKind::Other {
                e.kind = ErrorKind::Connection;
            }
            e
        }
        other => DbError::new(BACKEND, ErrorKind::Connection, other),
    }
}

/// The one place PostgreSQL errors are classified.
///
/// The message keeps the server's SQLSTATE and message and drops its
/// detail, hint and context: a constraint error's detail quotes the failing
/// row (`Failing row contains …`), secrets included.
pub(crate) fn classify(err: tokio_postgres::Error) -> DbError {
    let kind = if let Some(code) = err.code() {
        if *code == SqlState::UNIQUE_VIOLATION {
            ErrorKind::UniqueViolation
        } else if *code == SqlState::FOREIGN_KEY_VIOLATION {
            ErrorKind::ForeignKeyViolation
        } else if *code == SqlState::CHECK_VIOLATION || *code == SqlState::NOT_NULL_VIOLATION {
            ErrorKind::CheckViolation
        } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE
        {
            ErrorKind::Retryable
        } else if code.code().starts_with("08") || code.code().starts_with("57P") {
            ErrorKind::Connection
        } else {
            ErrorKind::Other
        }
    } else if err.is_closed()
        || err
            .source()
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
    {
        ErrorKind::Connection
    } else {
        ErrorKind::Other
    };
    let message = match err.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        // The driver's own text ("error connecting to server", "db error")
        // says little alone; its cause says what happened.
        None => match err.source() {
            Some(cause) => format!("{err}: {cause}"),
            None => err.to_string(),
        },
    };
    DbError::new(BACKEND, kind, message)
}

#[cfg(test)]
mod tests;
