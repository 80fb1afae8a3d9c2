//! The migration record: what a SQL database knows about the key-value
//! databases it was filled from (table `nodestore_kv_migrations`, created
//! by schema step 1).
//!
//! The key-value step writes one row in its own transaction, so the row and
//! the data commit together, with the tombstone marked as pending; the row
//! flips to done once the key-value database is tombstoned after the commit.
//! If marking fails, the row stays pending and
//! [`retry_pending_tombstone`](crate::retry_pending_tombstone) tries again
//! (the `nodestore` facade does, on every open). Decisions use the source's
//! identity and write sequence; the path is for people.

use chrono::{DateTime, Utc};
use sea_query::{Expr, ExprTrait, Iden, Order, Query};
use sqldb::{Db, Dialect, Sql, Tx, TxExt};

use crate::check::Problem;
use crate::{Error, Report, SourceFacts};

/// The table's name.
pub(crate) const TABLE: &str = "nodestore_kv_migrations";

#[derive(Iden)]
#[iden = "nodestore_kv_migrations"]
struct Table;

#[derive(Iden)]
enum Col {
    Id,
    SourcePath,
    SourceIdentity,
    SourceWriteSeq,
    MigratedAt,
    NodestoreVersion,
    TombstonePending,
    Report,
    AcceptedDamage,
}

/// The columns a record is written to and read from, in one order.
const COLUMNS: [Col; 8] = [
    Col::SourcePath,
    Col::SourceIdentity,
    Col::SourceWriteSeq,
    Col::MigratedAt,
    Col::NodestoreVersion,
    Col::TombstonePending,
    Col::Report,
    Col::AcceptedDamage,
];

/// A row of the migration record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRecord {
    /// The key-value database directory when it was migrated.
    pub source_path: String,
    /// Its identity.
    pub source_identity: [u8; 16],
    /// Its write sequence when it was read.
    pub source_write_seq: u64,
    /// When the data was committed.
    pub migrated_at: DateTime<Utc>,
    /// The nodestore version that migrated it.
    pub nodestore_version: String,
    /// True until the key-value database is tombstoned.
    pub tombstone_pending: bool,
    /// What was migrated.
    pub report: Report,
    /// With `--accept-damaged`: what the source was missing.
    pub accepted_damage: Vec<Problem>,
}

impl MigrationRecord {
    /// The record of a migration of `source` at its write `write_seq`, made
    /// now, its tombstone pending until written: the one place a record is
    /// made.
    pub fn new(
        source: &SourceFacts,
        write_seq: u64,
        report: Report,
        accepted_damage: Vec<Problem>,
    ) -> MigrationRecord {
        MigrationRecord {
            source_path: source.path.display().to_string(),
            source_identity: source.identity,
            source_write_seq: write_seq,
            // As stored: a record read back compares equal.
            migrated_at: sqldb::time::truncate_micros(Utc::now()),
            nodestore_version: env!("CARGO_PKG_VERSION").to_owned(),
            tombstone_pending: true,
            report,
            accepted_damage,
        }
    }
}

pub(crate) async fn insert(tx: &mut dyn Tx, r: &MigrationRecord) -> Result<(), Error> {
    let report = serde_json::to_string(&r.report).map_err(|e| Error::Store {
        record: "the migration record".into(),
        source: Box::new(e),
    })?;
    let damage = if r.accepted_damage.is_empty() {
        None
    } else {
        Some(
            serde_json::to_string(&r.accepted_damage).map_err(|e| Error::Store {
                record: "the migration record".into(),
                source: Box::new(e),
            })?,
        )
    };
    tx.exec(
        &Query::insert()
            .into_table(Table)
            .columns(COLUMNS)
            .values_panic([
                r.source_path.clone().into(),
                r.source_identity.to_vec().into(),
                i64::try_from(r.source_write_seq).unwrap_or(i64::MAX).into(),
                r.migrated_at.into(),
                r.nodestore_version.clone().into(),
                r.tombstone_pending.into(),
                report.into(),
                sea_query::Value::String(damage).into(),
            ])
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// True when `table` exists (schema steps create the bookkeeping tables;
/// an older or empty database lacks them).
pub(crate) async fn table_exists(tx: &mut dyn Tx, table: &str) -> Result<bool, Error> {
    let sql = match tx.dialect() {
        Dialect::Sqlite => Sql::fixed(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
            vec![table.into()],
        ),
        Dialect::Postgres => Sql::fixed(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = $1",
            vec![table.into()],
        ),
    };
    Ok(tx
        .query_sql(sql)
        .await?
        .first()
        .map(|r| r.i64(0))
        .transpose()?
        .unwrap_or(0)
        > 0)
}

/// Every migration record, oldest first (more than one after a database
/// was rebuilt from a tombstoned source and migrated again); empty before
/// schema step 1.
pub async fn records(db: &Db) -> Result<Vec<MigrationRecord>, Error> {
    db.read(|tx| Box::pin(read_all(tx))).await
}

pub(crate) async fn read_all(tx: &mut dyn Tx) -> Result<Vec<MigrationRecord>, Error> {
    if !table_exists(tx, TABLE).await? {
        return Ok(Vec::new());
    }
    let rows = tx
        .query(
            &Query::select()
                .columns(COLUMNS)
                .from(Table)
                .order_by(Col::Id, Order::Asc)
                .to_owned(),
        )
        .await?;
    rows.iter()
        .map(|r| {
            let bad = |what: &str| Error::Invalid {
                record: "a migration record".into(),
                reason: what.to_owned(),
            };
            Ok(MigrationRecord {
                source_path: r.text(0)?,
                source_identity: <[u8; 16]>::try_from(r.bytes(1)?.as_slice())
                    .map_err(|_| bad("the source identity is not 16 bytes"))?,
                source_write_seq: u64::try_from(r.i64(2)?).unwrap_or(0),
                migrated_at: r.time(3)?,
                nodestore_version: r.text(4)?,
                tombstone_pending: r.bool(5)?,
                report: serde_json::from_str(&r.text(6)?)
                    .map_err(|e| bad(&format!("the report: {e}")))?,
                accepted_damage: match r.opt_text(7)? {
                    None => Vec::new(),
                    Some(t) => serde_json::from_str(&t)
                        .map_err(|e| bad(&format!("the accepted damage: {e}")))?,
                },
            })
        })
        .collect()
}

/// Marks the pending record of the source with this identity as done.
pub(crate) async fn clear_pending(db: &Db, identity: [u8; 16]) -> Result<(), Error> {
    db.write(|tx| {
        Box::pin(async move {
            tx.exec(
                &Query::update()
                    .table(Table)
                    .value(Col::TombstonePending, false)
                    .and_where(Expr::col(Col::SourceIdentity).eq(identity.to_vec()))
                    .and_where(Expr::col(Col::TombstonePending).eq(true))
                    .to_owned(),
            )
            .await?;
            Ok::<_, Error>(())
        })
    })
    .await
}
