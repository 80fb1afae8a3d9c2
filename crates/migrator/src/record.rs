//! The migration record: what the SQL side knows about the key-value
//! database it was filled from.
//!
//! The code step writes one row in its own transaction, with the tombstone
//! marked as pending; the row flips to done once the key-value database is
//! marked after the commit. If marking fails, the row stays pending and
//! [`retry_pending_tombstone`](crate::retry_pending_tombstone) tries again
//! (the `nodestore` facade does, on every open). The table is created by
//! the code step itself, on every node, because it must exist inside the
//! step's transaction.

use chrono::{DateTime, Utc};
use sea_query::{Expr, ExprTrait, Iden, Order, Query};
use sqldb::{Db, Dialect, Sql, Tx, TxExt};

use crate::Error;

const DDL: &str = "CREATE TABLE IF NOT EXISTS nodestore_kv_migration (
    id INTEGER PRIMARY KEY,
    source_path TEXT NOT NULL,
    source_identity BLOB,
    migrated_at TIMESTAMP NOT NULL,
    nodestore_version TEXT NOT NULL,
    tombstone_pending BOOLEAN NOT NULL,
    summary TEXT NOT NULL
)";

#[derive(Iden)]
#[iden = "nodestore_kv_migration"]
struct Table;

#[derive(Iden)]
enum Col {
    Id,
    SourcePath,
    SourceIdentity,
    MigratedAt,
    NodestoreVersion,
    TombstonePending,
    Summary,
}

/// A row of the migration record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRecord {
    /// The key-value database directory.
    pub source_path: String,
    /// Its identity, when it had one.
    pub source_identity: Option<[u8; 16]>,
    /// When the data was committed.
    pub migrated_at: DateTime<Utc>,
    /// The nodestore version that migrated it.
    pub nodestore_version: String,
    /// True until the key-value database is tombstoned.
    pub tombstone_pending: bool,
    /// Counts, one `store kind=count` per line.
    pub summary: String,
}

pub(crate) async fn create(tx: &mut dyn Tx) -> Result<(), Error> {
    tx.execute_script(&sqldb::schema::adapt(DDL, tx.dialect()))
        .await?;
    Ok(())
}

pub(crate) async fn insert(tx: &mut dyn Tx, r: &MigrationRecord) -> Result<(), Error> {
    tx.exec(
        &Query::insert()
            .into_table(Table)
            .columns([
                Col::SourcePath,
                Col::SourceIdentity,
                Col::MigratedAt,
                Col::NodestoreVersion,
                Col::TombstonePending,
                Col::Summary,
            ])
            .values_panic([
                r.source_path.clone().into(),
                sea_query::Value::Bytes(r.source_identity.map(|i| i.to_vec())).into(),
                r.migrated_at.into(),
                r.nodestore_version.clone().into(),
                r.tombstone_pending.into(),
                r.summary.clone().into(),
            ])
            .to_owned(),
    )
    .await?;
    Ok(())
}

async fn table_exists(tx: &mut dyn Tx) -> Result<bool, Error> {
    let sql = match tx.dialect() {
        Dialect::Sqlite => Sql::fixed(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'nodestore_kv_migration'",
            vec![],
        ),
        Dialect::Postgres => Sql::fixed(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = 'nodestore_kv_migration'",
            vec![],
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

/// Every migration record, oldest first (more than one after a database was
/// rebuilt from a tombstoned source and migrated again).
pub async fn records(db: &Db) -> Result<Vec<MigrationRecord>, Error> {
    db.read(|tx| {
        Box::pin(async move {
            if !table_exists(tx).await? {
                return Ok(Vec::new());
            }
            let rows = tx
                .query(
                    &Query::select()
                        .columns([
                            Col::SourcePath,
                            Col::SourceIdentity,
                            Col::MigratedAt,
                            Col::NodestoreVersion,
                            Col::TombstonePending,
                            Col::Summary,
                        ])
                        .from(Table)
                        .order_by(Col::Id, Order::Asc)
                        .to_owned(),
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(MigrationRecord {
                        source_path: r.text(0)?,
                        source_identity: r
                            .opt_bytes(1)?
                            .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok()),
                        migrated_at: r.time(2)?,
                        nodestore_version: r.text(3)?,
                        tombstone_pending: r.bool(4)?,
                        summary: r.text(5)?,
                    })
                })
                .collect()
        })
    })
    .await
}

/// Marks every pending record of `source_path` as done.
pub(crate) async fn clear_pending(db: &Db, source_path: &str) -> Result<(), Error> {
    let path = source_path.to_owned();
    db.write(|tx| {
        Box::pin(async move {
            tx.exec(
                &Query::update()
                    .table(Table)
                    .value(Col::TombstonePending, false)
                    .and_where(Expr::col(Col::SourcePath).eq(path))
                    .and_where(Expr::col(Col::TombstonePending).eq(true))
                    .to_owned(),
            )
            .await?;
            Ok::<_, Error>(())
        })
    })
    .await
}
