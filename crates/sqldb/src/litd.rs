//! Lightning Terminal's (litd's) view of the schema: the tracking tables
//! litd reads when it opens a SQL database, kept by nodestore so that litd
//! opens a nodestore database as one of its own (docs/design.md §3.6).
//!
//! litd applies its schema with golang-migrate, which keeps the table
//! `schema_migrations` (one row: the version, and whether a step was left
//! half done, `dirty`), and through lnd's `sqldb` it also creates
//! `migration_tracker` (one row per version, with when it was applied). A
//! database without `schema_migrations` makes litd replay its steps from
//! the first, which fails at the first table that exists.
//!
//! nodestore's steps 2 to 7 are litd's 1 to 6 (litd's version 6 is the
//! step at which its key-value data moves to SQL, nodestore's data step).
//! The runner writes both tables in the transaction of each of those
//! steps ([`crate::migrate`]), so `schema_migrations` always names litd's
//! version of the schema the database holds, clean. nodestore's other
//! steps (1, its bookkeeping; 8 and 9, extra indexes; 10, the staged copy)
//! add tables and indexes litd does not know and ignores.

use chrono::Utc;
use sea_query::{Expr, Iden, OnConflict, Query};

use crate::error::DbError;
use crate::tx::{Dialect, Tx, TxExt};

/// golang-migrate's table.
pub const SCHEMA_MIGRATIONS: &str = "schema_migrations";

/// lnd's table of applied versions.
pub const MIGRATION_TRACKER: &str = "migration_tracker";

/// litd's latest schema version, the one nodestore's schema matches once
/// its data step (step 7) is applied.
pub const LATEST: i64 = 6;

/// The nodestore step whose schema is litd's version 1; litd's version `v`
/// is nodestore's step `v + 1`, up to [`LATEST`].
const FIRST_STEP: i64 = 2;

/// litd's version for nodestore's step `step`, if litd has that step.
pub fn version_of_step(step: i64) -> Option<i64> {
    (FIRST_STEP..=FIRST_STEP + LATEST - 1)
        .contains(&step)
        .then_some(step - FIRST_STEP + 1)
}

/// nodestore's step for litd's version `version`.
pub fn step_of_version(version: i64) -> Option<i64> {
    (1..=LATEST)
        .contains(&version)
        .then_some(version + FIRST_STEP - 1)
}

#[derive(Iden)]
#[iden = "schema_migrations"]
struct SchemaMigrations;

#[derive(Iden)]
enum SchemaMigrationsCol {
    Version,
    Dirty,
}

#[derive(Iden)]
#[iden = "migration_tracker"]
struct MigrationTracker;

#[derive(Iden)]
enum MigrationTrackerCol {
    Version,
    MigrationTime,
}

/// The two tables as litd creates them, in `dialect`: golang-migrate's
/// SQLite driver declares `version uint64, dirty bool` with a unique index
/// `version_unique`, its PostgreSQL driver `version bigint not null primary
/// key, dirty boolean not null`; lnd declares `migration_tracker` the same
/// on both.
pub fn ddl(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "CREATE TABLE IF NOT EXISTS schema_migrations (version uint64, dirty bool);
             CREATE UNIQUE INDEX IF NOT EXISTS version_unique ON schema_migrations (version);
             CREATE TABLE IF NOT EXISTS migration_tracker (
                 version INTEGER UNIQUE NOT NULL,
                 migration_time TIMESTAMP NOT NULL
             );"
        }
        Dialect::Postgres => {
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version bigint NOT NULL PRIMARY KEY,
                 dirty boolean NOT NULL
             );
             CREATE TABLE IF NOT EXISTS migration_tracker (
                 version INTEGER UNIQUE NOT NULL,
                 migration_time TIMESTAMP WITHOUT TIME ZONE NOT NULL
             );"
        }
    }
}

/// Records, in `tx`, that the database holds litd's schema at `version`:
/// `schema_migrations` holds that one version, clean, and
/// `migration_tracker` a row for it (and for every earlier version it
/// lacks, so a database whose steps were applied before nodestore kept
/// these tables gets litd's full history).
pub async fn record(tx: &mut dyn Tx, version: i64) -> Result<(), DbError> {
    let dialect = tx.dialect();
    tx.execute_script(ddl(dialect)).await?;
    tx.exec(&Query::delete().from_table(SchemaMigrations).to_owned())
        .await?;
    tx.exec(
        &Query::insert()
            .into_table(SchemaMigrations)
            .columns([SchemaMigrationsCol::Version, SchemaMigrationsCol::Dirty])
            .values_panic([version.into(), false.into()])
            .to_owned(),
    )
    .await?;
    let now = crate::time::truncate_micros(Utc::now());
    let mut insert = Query::insert();
    insert
        .into_table(MigrationTracker)
        .columns([
            MigrationTrackerCol::Version,
            MigrationTrackerCol::MigrationTime,
        ])
        .on_conflict(
            OnConflict::column(MigrationTrackerCol::Version)
                .do_nothing()
                .to_owned(),
        );
    for v in 1..=version {
        insert.values_panic([v.into(), now.into()]);
    }
    tx.exec(&insert).await?;
    Ok(())
}

/// What `schema_migrations` says, if the table exists: the version and
/// whether it is dirty. `Ok(None)` for a database without the table; an
/// error when it does not hold exactly one row.
pub async fn read(tx: &mut dyn Tx) -> Result<Option<(i64, bool)>, DbError> {
    let dialect = tx.dialect();
    if !crate::migrate::table_exists(tx, dialect, SCHEMA_MIGRATIONS).await? {
        return Ok(None);
    }
    let rows = tx
        .query(
            &Query::select()
                .column(SchemaMigrationsCol::Version)
                .expr(Expr::col(SchemaMigrationsCol::Dirty))
                .from(SchemaMigrations)
                .to_owned(),
        )
        .await?;
    match rows.as_slice() {
        [row] => Ok(Some((row.i64(0)?, row.bool(1)?))),
        _ => Err(DbError::new(
            dialect.name(),
            crate::error::ErrorKind::Other,
            format!(
                "{SCHEMA_MIGRATIONS} holds {} rows; golang-migrate keeps exactly one",
                rows.len()
            ),
        )),
    }
}

/// Why a database litd made is not adopted. Nothing is written to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// golang-migrate's `dirty` flag: litd stopped inside a step.
    #[error(
        "litd left its schema at version {version} dirty (it stopped inside that step); \
         let litd finish or repair it before nodestore opens it"
    )]
    Dirty {
        /// The version recorded.
        version: i64,
    },
    /// A version whose schema nodestore does not know as litd's latest.
    #[error(
        "litd's schema is at version {version}, and nodestore adopts only litd's version {LATEST} \
         (the schema it shares); open the database with a litd whose schema is at version \
         {LATEST} first"
    )]
    Version {
        /// The version recorded.
        version: i64,
    },
    /// A table that is not as litd's schema makes it.
    #[error("table {table} is not as litd's schema version {LATEST} makes it: {what}")]
    Differs {
        /// The table.
        table: String,
        /// What differs, in words (a column missing or extra, the table
        /// missing or not litd's).
        what: String,
    },
    /// `schema_migrations` does not hold the one row golang-migrate keeps.
    #[error("{SCHEMA_MIGRATIONS} is not as golang-migrate keeps it: {0}")]
    Tracking(String),
}

/// Checks that `shape` is litd's schema at [`LATEST`], as `steps` (the
/// runner's) make it: exactly its tables,
/// each with exactly its columns (the tracking tables apart). The first
/// difference is the refusal, naming the table and the column.
pub fn check_shape(
    shape: &crate::introspect::Shape,
    steps: &[crate::schema::Step],
) -> Result<(), Refusal> {
    let expected = crate::schema::tables_of_steps(steps, FIRST_STEP..=FIRST_STEP + LATEST - 2);
    for (table, columns) in &expected {
        let Some(found) = shape.tables.get(table) else {
            return Err(Refusal::Differs {
                table: table.clone(),
                what: "the table is missing".into(),
            });
        };
        let found: Vec<&str> = found.columns.iter().map(|c| c.name.as_str()).collect();
        if let Some(c) = columns.iter().find(|c| !found.contains(&c.as_str())) {
            return Err(Refusal::Differs {
                table: table.clone(),
                what: format!("column {c} is missing"),
            });
        }
        if let Some(c) = found.iter().find(|c| !columns.iter().any(|e| e == *c)) {
            return Err(Refusal::Differs {
                table: table.clone(),
                what: format!("column {c} is not litd's"),
            });
        }
    }
    if let Some(extra) = shape
        .tables
        .keys()
        .find(|t| !expected.contains_key(*t) && *t != SCHEMA_MIGRATIONS && *t != MIGRATION_TRACKER)
    {
        return Err(Refusal::Differs {
            table: extra.clone(),
            what: "litd's schema has no such table".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn litd_versions_are_nodestore_steps_2_to_7() {
        assert_eq!(version_of_step(1), None);
        assert_eq!(version_of_step(2), Some(1));
        assert_eq!(version_of_step(7), Some(LATEST));
        assert_eq!(version_of_step(8), None);
        for v in 1..=LATEST {
            assert_eq!(step_of_version(v).and_then(version_of_step), Some(v));
        }
        assert_eq!(
            step_of_version(LATEST),
            Some(crate::schema::KV_TO_SQL_VERSION)
        );
    }
}
