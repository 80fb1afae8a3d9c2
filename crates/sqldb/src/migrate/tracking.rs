//! The runner's tables: the tracking table of applied steps, the database
//! identity, and the catalogue queries the runner asks of either backend.

use std::time::Duration;

use sea_query::{Alias, Iden, Order, PostgresQueryBuilder, Query, SqliteQueryBuilder, Table};

use super::AppliedStep;
use crate::error::DbError;
use crate::schema::{Step, adapt};
use crate::tx::{Dialect, Sql, Tx, TxExt};

/// The tracking table's name.
pub const TRACKING_TABLE: &str = "nodestore_schema_steps";

const TRACKING_DDL: &str = "CREATE TABLE IF NOT EXISTS nodestore_schema_steps (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    checksum BLOB NOT NULL,
    applied_at TIMESTAMP NOT NULL,
    duration_us BIGINT NOT NULL,
    note TEXT
)";

/// The column that tracking tables made before 2026-11-30 have: a
/// `complete` flag, always written true, that could never be false (a step
/// and its row commit together, so a recorded step is complete).
const LEGACY_COMPLETE: &str = "complete";

/// Makes the tracking table in `tx` if the database has none, and brings
/// an older one to today's shape: its `complete` column, which nothing
/// reads and which would make every insert name it, is dropped. Only for a
/// runner that is about to write (never for a read-only look).
pub(super) async fn ensure_tracking_table(
    tx: &mut dyn Tx,
    dialect: Dialect,
) -> Result<(), DbError> {
    tx.execute_script(&adapt(TRACKING_DDL, dialect)).await?;
    if has_column(tx, dialect, LEGACY_COMPLETE).await? {
        tracing::info!(
            table = TRACKING_TABLE,
            column = LEGACY_COMPLETE,
            "dropping the tracking table's unused legacy column"
        );
        let drop = Table::alter()
            .table(Tracking)
            .drop_column(Alias::new(LEGACY_COMPLETE))
            .to_owned();
        let sql = match dialect {
            Dialect::Sqlite => drop.to_string(SqliteQueryBuilder),
            Dialect::Postgres => drop.to_string(PostgresQueryBuilder),
        };
        tx.execute_script(&sql).await?;
    }
    Ok(())
}

/// Whether the tracking table has the column `name` (it exists).
pub(super) async fn has_column(
    tx: &mut dyn Tx,
    dialect: Dialect,
    name: &str,
) -> Result<bool, DbError> {
    const SQLITE: &str =
        "SELECT count(*) FROM pragma_table_info('nodestore_schema_steps') WHERE name = ?";
    const POSTGRES: &str = "SELECT count(*) FROM information_schema.columns \
         WHERE table_schema = current_schema() \
         AND table_name = 'nodestore_schema_steps' AND column_name = $1";
    catalogue_counts(tx, dialect, [SQLITE, POSTGRES], name).await
}

/// Whether a catalogue query (its SQLite and its PostgreSQL text, each
/// taking `name` as its one parameter) counts any row.
async fn catalogue_counts(
    tx: &mut dyn Tx,
    dialect: Dialect,
    [sqlite, postgres]: [&'static str; 2],
    name: &str,
) -> Result<bool, DbError> {
    let text = match dialect {
        Dialect::Sqlite => sqlite,
        Dialect::Postgres => postgres,
    };
    let rows = tx.query_sql(Sql::fixed(text, vec![name.into()])).await?;
    Ok(rows.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0) > 0)
}

#[derive(Iden)]
#[iden = "nodestore_schema_steps"]
pub(super) struct Tracking;

#[derive(Iden)]
pub(super) enum TrackingCol {
    Version,
    Name,
    Checksum,
    AppliedAt,
    DurationUs,
    Note,
}

/// The table step 1 creates to hold the database's identity.
pub const IDENTITY_TABLE: &str = "nodestore_database";

#[derive(Iden)]
#[iden = "nodestore_database"]
struct IdentityTable;

#[derive(Iden)]
enum IdentityCol {
    Identity,
}

/// The database's identity, as step 1 wrote it (`None` before step 1, or
/// when the row does not hold 16 bytes).
pub async fn read_identity(tx: &mut dyn Tx) -> Result<Option<[u8; 16]>, DbError> {
    let rows = tx
        .query(
            &Query::select()
                .column(IdentityCol::Identity)
                .from(IdentityTable)
                .to_owned(),
        )
        .await?;
    Ok(match rows.first() {
        Some(r) => <[u8; 16]>::try_from(r.bytes(0)?.as_slice()).ok(),
        None => None,
    })
}

/// Every table in the database's current schema (SQLite's own `sqlite_*`
/// tables aside), lower case.
pub(super) async fn list_tables(tx: &mut dyn Tx, dialect: Dialect) -> Result<Vec<String>, DbError> {
    let sql = match dialect {
        Dialect::Sqlite => Sql::fixed(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') \
             AND name NOT LIKE 'sqlite_%'",
            vec![],
        ),
        Dialect::Postgres => Sql::fixed(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema()",
            vec![],
        ),
    };
    tx.query_sql(sql)
        .await?
        .iter()
        .map(|r| Ok(r.text(0)?.to_ascii_lowercase()))
        .collect()
}

/// Writes a step's tracking row, with its note, if any (only a database
/// whose tracking table has the column gets one: see [`Migrator::notes`]).
pub(super) async fn insert_tracking_row(
    tx: &mut dyn Tx,
    record: &AppliedStep,
    note: Option<String>,
) -> Result<(), DbError> {
    let mut columns = vec![
        TrackingCol::Version,
        TrackingCol::Name,
        TrackingCol::Checksum,
        TrackingCol::AppliedAt,
        TrackingCol::DurationUs,
    ];
    let mut values: Vec<sea_query::SimpleExpr> = vec![
        record.version.into(),
        record.name.clone().into(),
        record.checksum.clone().into(),
        record.applied_at.into(),
        i64::try_from(record.duration.as_micros())
            .unwrap_or(i64::MAX)
            .into(),
    ];
    if let Some(note) = note {
        columns.push(TrackingCol::Note);
        values.push(note.into());
    }
    tx.exec(
        &Query::insert()
            .into_table(Tracking)
            .columns(columns)
            .values_panic(values)
            .to_owned(),
    )
    .await?;
    Ok(())
}

pub(super) async fn tracking_table_exists(
    tx: &mut dyn Tx,
    dialect: Dialect,
) -> Result<bool, DbError> {
    table_exists(tx, dialect, TRACKING_TABLE).await
}

/// Whether the table `name` exists (in PostgreSQL's current schema).
pub(crate) async fn table_exists(
    tx: &mut dyn Tx,
    dialect: Dialect,
    name: &str,
) -> Result<bool, DbError> {
    const SQLITE: &str = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?";
    const POSTGRES: &str = "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = $1";
    catalogue_counts(tx, dialect, [SQLITE, POSTGRES], name).await
}

pub(super) async fn read_applied(tx: &mut dyn Tx) -> Result<Vec<AppliedStep>, DbError> {
    let select = Query::select()
        .columns([
            TrackingCol::Version,
            TrackingCol::Name,
            TrackingCol::Checksum,
            TrackingCol::AppliedAt,
            TrackingCol::DurationUs,
        ])
        .from(Tracking)
        .order_by(TrackingCol::Version, Order::Asc)
        .to_owned();
    tx.query(&select)
        .await?
        .iter()
        .map(|r| {
            Ok(AppliedStep {
                version: r.i64(0)?,
                name: r.text(1)?,
                checksum: r.bytes(2)?,
                applied_at: r.time(3)?,
                duration: Duration::from_micros(u64::try_from(r.i64(4)?).unwrap_or(0)),
            })
        })
        .collect()
}

/// Drops every table `steps` create, and the tracking tables, in
/// `tx`: the database is empty again, as before the first step. Only for a
/// database whose data is known to be disposable (an online migration's
/// staged copy, docs/design.md §7.3); the caller decides that, in the same
/// transaction. Children go before their parents, so no foreign key is
/// checked against a dropped table; a table not there is skipped.
pub async fn drop_known_tables(tx: &mut dyn Tx, steps: &[Step]) -> Result<(), DbError> {
    let dialect = tx.dialect();
    for table in crate::schema::known_tables_of(steps).into_iter().rev() {
        let mut stmt = Table::drop();
        stmt.table(Alias::new(table)).if_exists();
        let sql = match dialect {
            Dialect::Sqlite => stmt.to_string(SqliteQueryBuilder),
            Dialect::Postgres => stmt.cascade().to_string(PostgresQueryBuilder),
        };
        tx.execute_script(&sql).await?;
    }
    Ok(())
}
