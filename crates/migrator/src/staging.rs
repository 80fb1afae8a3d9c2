//! The staged copy of an online migration (docs/design.md §7.3), table
//! `nodestore_online_staging`, made by schema step 10 ([`STEP`]).
//!
//! An online migration commits its bulk copy in a first transaction, with
//! a row here naming the source, while the node keeps writing to the
//! key-value database; a second, short transaction replays the last writes,
//! deletes the row and writes the migration record. Between the two the
//! copy is not data anyone may serve: the key-value database is the truth.
//! So [`TargetFacts::migrated`](crate::TargetFacts) is false while a row is
//! here, an open without the key-value database refuses, and the next
//! migration of the same source drops the copy (`discard`) and starts
//! again from an empty database.

use chrono::{DateTime, Utc};
use sea_query::{ExprTrait, Iden, Query};
use sqldb::{Db, Tx, TxExt};

use crate::Error;
use crate::record::table_exists;

/// The table's name.
const TABLE: &str = "nodestore_online_staging";

/// The step that makes the table (nodestore's step 10, the file
/// `migrations/0010_online_staging.sql`), in [`crate::schema::STEPS`].
pub const STEP: sqldb::schema::Step = sqldb::schema::Step {
    version: 10,
    name: "online_staging",
    kind: sqldb::schema::StepKind::Sql(include_str!("../../../migrations/0010_online_staging.sql")),
};

#[derive(Iden)]
#[iden = "nodestore_online_staging"]
struct Table;

#[derive(Iden)]
enum Col {
    Singleton,
    SourcePath,
    SourceIdentity,
    StagedAt,
}

/// The source of a staged copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedCopy {
    /// The key-value database directory being migrated, for people.
    pub source_path: String,
    /// Its identity: only a migration of this source discards the copy
    /// without `force`.
    pub source_identity: [u8; 16],
    /// When the copy was committed.
    pub staged_at: DateTime<Utc>,
}

/// Marks the copy in `tx` as staged (in the copy's transaction).
pub(crate) async fn insert(tx: &mut dyn Tx, staged: &StagedCopy) -> Result<(), Error> {
    tx.exec(
        &Query::insert()
            .into_table(Table)
            .columns([
                Col::Singleton,
                Col::SourcePath,
                Col::SourceIdentity,
                Col::StagedAt,
            ])
            .values_panic([
                1i16.into(),
                staged.source_path.clone().into(),
                staged.source_identity.to_vec().into(),
                staged.staged_at.into(),
            ])
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// Ends the staging of the copy of `identity` (in the transaction that
/// writes the migration record). Fails when that copy is no longer staged:
/// another migration discarded it meanwhile, and this one's data is gone.
pub(crate) async fn clear(tx: &mut dyn Tx, identity: [u8; 16]) -> Result<(), Error> {
    let n = tx
        .exec(
            &Query::delete()
                .from_table(Table)
                .and_where(sea_query::Expr::col(Col::SourceIdentity).eq(identity.to_vec()))
                .to_owned(),
        )
        .await?;
    if n == 0 {
        return Err(Error::Invalid {
            record: "the staged online migration".into(),
            reason: "its staged copy is gone: another migration discarded it while this one \
                     caught up; nothing was switched, the key-value database stays live"
                .into(),
        });
    }
    Ok(())
}

/// The staged copy `tx` sees, if any (none before schema step 10).
pub(crate) async fn read(tx: &mut dyn Tx) -> Result<Option<StagedCopy>, Error> {
    read_locked(tx, false).await
}

/// As [`read`]; with `lock`, on PostgreSQL the row is locked for the rest
/// of the (write) transaction `tx`, so a discard and the migration that
/// finishes the copy cannot both go ahead.
async fn read_locked(tx: &mut dyn Tx, lock: bool) -> Result<Option<StagedCopy>, Error> {
    if !table_exists(tx, TABLE).await? {
        return Ok(None);
    }
    let mut select = Query::select()
        .columns([Col::SourcePath, Col::SourceIdentity, Col::StagedAt])
        .from(Table)
        .to_owned();
    if lock && tx.dialect() == sqldb::Dialect::Postgres {
        select.lock(sea_query::LockType::Update);
    }
    let row = tx.query_opt(&select).await?;
    let Some(r) = row else {
        return Ok(None);
    };
    Ok(Some(StagedCopy {
        source_path: r.text(0)?,
        source_identity: <[u8; 16]>::try_from(r.bytes(1)?.as_slice()).map_err(|_| {
            Error::Invalid {
                record: "the staged online migration".into(),
                reason: "the source identity is not 16 bytes".into(),
            }
        })?,
        staged_at: r.time(2)?,
    }))
}

/// The staged copy of `db`, if any.
pub async fn staged(db: &Db) -> Result<Option<StagedCopy>, Error> {
    db.read(|tx| Box::pin(read(tx))).await
}

/// Drops a staged copy: every nodestore table goes, so the next schema run
/// builds the database from nothing, as before the copy. Decided again
/// inside the dropping transaction, with the staging row locked: a copy
/// still staged, of the source `identity` (any source when `force`), and
/// no migration record (which would mean a finished migration's data).
/// Returns false when there was nothing to drop.
pub(crate) async fn discard(db: &Db, identity: [u8; 16], force: bool) -> Result<bool, Error> {
    db.write(|tx| {
        Box::pin(async move {
            let Some(staged) = read_locked(tx, true).await? else {
                return Ok(false);
            };
            if staged.source_identity != identity && !force {
                return Err(Error::Invalid {
                    record: "the staged online migration".into(),
                    reason: format!(
                        "the staged copy is of another key-value database ({}); \
                         only a migration of that database, or a forced one, discards it",
                        staged.source_path
                    ),
                });
            }
            if !crate::record::read_all(tx).await?.is_empty() {
                return Err(Error::Invalid {
                    record: "the staged online migration".into(),
                    reason: "the database also holds a finished migration's record; \
                             the staged copy is left for an operator to look at"
                        .into(),
                });
            }
            sqldb::migrate::drop_known_tables(tx, crate::schema::STEPS).await?;
            tracing::warn!(
                source = %staged.source_path,
                staged_at = %staged
                    .staged_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "discarded the staged copy of an online migration that did not finish; \
                 migrating again from the key-value database"
            );
            Ok(true)
        })
    })
    .await
}
