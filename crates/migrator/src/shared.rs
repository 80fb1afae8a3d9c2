//! What the stores' parts of the migration share: row counts, SQL ids and
//! sequences, the links dropped to a record that is gone, how a session id
//! is kept. A leaf: it imports nothing of the crate but its error type, so
//! the store modules depend on it and never on each other.

use std::time::Instant;

use async_trait::async_trait;
use sea_query::{DynIden, Expr, ExprTrait, Func, IntoIden, Query};
use sqldb::{Dialect, Sql, Tx, TxExt};
use store_accounts::AccountId;
use store_accounts::sql::schema::Accounts;
use store_actions::sql::schema::Actions;
use store_firewall::sql::schema::Kvstores;
use store_sessions::SessionId;
use store_sessions::sql::schema::Sessions;

use crate::Error;

/// The SQL id of every account, by account id, or of those in `only`:
/// read once by a copy that links to accounts, which then costs a map
/// lookup per link rather than a query per chunk (accounts are few next to
/// the sessions and actions that link to them).
pub(crate) async fn account_ids(
    tx: &mut dyn Tx,
    only: Option<&std::collections::BTreeSet<AccountId>>,
) -> Result<std::collections::HashMap<AccountId, i64>, Error> {
    let mut select = Query::select();
    select
        .columns([Accounts::Id, Accounts::Alias])
        .from(Accounts::Table);
    if let Some(only) = only {
        if only.is_empty() {
            return Ok(Default::default());
        }
        select.and_where(Expr::col(Accounts::Alias).is_in(only.iter().map(|id| id.to_alias())));
    }
    let mut ids = std::collections::HashMap::new();
    for r in &tx.query(&select).await? {
        ids.insert(AccountId::from_alias(r.i64(1)?), r.i64(0)?);
    }
    Ok(ids)
}

pub(crate) fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A read of the live key-value stores (an online migration's replay)
/// that failed.
pub(crate) fn live_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::LiveRead {
        record: what.to_owned(),
        source: Box::new(e),
    }
}

/// Rows a replay added to (or, negative, removed from) each table the
/// migration record counts: the copy's counts plus these are the table
/// counts, with no `COUNT(*)` of a large table in the cutover's pause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deltas {
    /// `accounts`.
    pub accounts: i64,
    /// `account_invoices`.
    pub invoices: i64,
    /// `account_payments`.
    pub payments: i64,
    /// `sessions`.
    pub sessions: i64,
    /// `kvstores`.
    pub kv_entries: i64,
    /// `privacy_pairs`.
    pub privacy_pairs: i64,
    /// `actions`.
    pub actions: i64,
}

/// `n` rows as a signed count.
pub(crate) fn rows(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// How many rows `table` holds.
pub(crate) async fn count_rows(
    tx: &mut dyn Tx,
    table: impl sea_query::IntoIden,
) -> Result<u64, sqldb::DbError> {
    let n = tx
        .query_one(
            &Query::select()
                .expr(sea_query::Expr::cust("COUNT(*)"))
                .from(table)
                .to_owned(),
        )
        .await?
        .i64(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// On PostgreSQL, moves `table`'s id sequence to `last` after a copy that
/// wrote explicit ids up to it (they do not advance a BIGSERIAL sequence);
/// nothing on SQLite or when nothing was written.
pub(crate) async fn sequence_past(tx: &mut dyn Tx, table: IdTable, last: i64) -> Result<(), Error> {
    if tx.dialect() != Dialect::Postgres || last < 1 {
        return Ok(());
    }
    tx.query_sql(Sql::fixed(
        "SELECT setval(pg_get_serial_sequence($1, 'id'), $2)",
        vec![table.iden().to_string().into(), last.into()],
    ))
    .await?;
    Ok(())
}

/// Deletes the rows of `table` that `condition` selects; returns how
/// many went (for the replay's row counts).
pub(crate) async fn delete_where(
    tx: &mut dyn Tx,
    table: impl sea_query::IntoIden,
    condition: sea_query::SimpleExpr,
) -> Result<i64, Error> {
    let deleted = tx
        .exec(
            &Query::delete()
                .from_table(table)
                .and_where(condition)
                .to_owned(),
        )
        .await?;
    Ok(rows(deleted))
}

/// A table whose rows have a serial `id` the migration assigns itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdTable {
    /// `accounts`.
    Accounts,
    /// `sessions`.
    Sessions,
    /// `kvstores`.
    Kvstores,
    /// `actions`.
    Actions,
}

impl IdTable {
    /// The table, as its store names it.
    fn iden(self) -> DynIden {
        match self {
            IdTable::Accounts => Accounts::Table.into_iden(),
            IdTable::Sessions => Sessions::Table.into_iden(),
            IdTable::Kvstores => Kvstores::Table.into_iden(),
            IdTable::Actions => Actions::Table.into_iden(),
        }
    }

    /// Its `id` column.
    fn id(self) -> DynIden {
        match self {
            IdTable::Accounts => Accounts::Id.into_iden(),
            IdTable::Sessions => Sessions::Id.into_iden(),
            IdTable::Kvstores => Kvstores::Id.into_iden(),
            IdTable::Actions => Actions::Id.into_iden(),
        }
    }
}

/// The next free SQL id of `table` (one past the largest).
pub(crate) async fn next_id(tx: &mut dyn Tx, table: IdTable) -> Result<i64, Error> {
    let row = tx
        .query_opt(
            &Query::select()
                .expr(Func::coalesce([
                    sea_query::Expr::from(Func::max(Expr::col(table.id()))),
                    Expr::val(0i64),
                ]))
                .from(table.iden())
                .to_owned(),
        )
        .await?;
    Ok(row.map(|r| r.i64(0)).transpose()?.unwrap_or(0) + 1)
}

/// On PostgreSQL, moves `table`'s id sequence past `last` (explicit ids do
/// not advance it); nothing on SQLite.
pub(crate) async fn advance_sequence(
    tx: &mut dyn Tx,
    table: IdTable,
    last: i64,
) -> Result<(), Error> {
    if tx.dialect() != Dialect::Postgres {
        return Ok(());
    }
    let max = next_id(tx, table).await? - 1;
    sequence_past(tx, table, Ord::max(max, last)).await
}

/// What records that are gone were linked from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Accounts: sessions and actions link to them.
    Account,
    /// Sessions: actions link to them.
    Session,
}

/// Drops the links to the accounts or sessions with these SQL ids from
/// sessions and actions, as the migration drops links to records that are
/// gone.
pub(crate) async fn drop_links(tx: &mut dyn Tx, link: Link, ids: &[i64]) -> Result<(), Error> {
    let columns: &[(DynIden, DynIden)] = &match link {
        Link::Account => vec![
            (Sessions::Table.into_iden(), Sessions::AccountId.into_iden()),
            (Actions::Table.into_iden(), Actions::AccountId.into_iden()),
        ],
        Link::Session => vec![(Actions::Table.into_iden(), Actions::SessionId.into_iden())],
    };
    for (table, column) in columns {
        tx.exec(
            &Query::update()
                .table(table.clone())
                .value(column.clone(), Expr::val(Option::<i64>::None))
                .and_where(Expr::col(column.clone()).is_in(ids.iter().copied()))
                .to_owned(),
        )
        .await?;
    }
    Ok(())
}

/// A session id as SQL keeps it (`sessions.alias`, 4 bytes).
pub(crate) fn session_alias(bytes: Vec<u8>) -> Result<SessionId, Error> {
    let alias: [u8; 4] = bytes.as_slice().try_into().map_err(|_| Error::Invalid {
        record: "a session".into(),
        reason: "alias is not 4 bytes".into(),
    })?;
    Ok(SessionId(alias))
}

/// What a store's replay works in besides its live store and its keys:
/// the open transaction, the other stores' answers ([`Linked`]) and the
/// count of rows it changes.
pub(crate) struct Replay<'a> {
    /// The migration's transaction.
    pub(crate) tx: &'a mut dyn Tx,
    /// The replays of the stores this one links to.
    pub(crate) links: &'a dyn Linked,
    /// Rows changed, by table.
    pub(crate) deltas: &'a mut Deltas,
}

/// What one store's replay asks of the stores it links to (docs/design.md
/// §7.4): a record it links to that SQL does not hold yet (created a moment
/// before, journaled later or in the same round) is replayed first, so no
/// link the key-value store holds is dropped as dangling; and a session
/// that is gone takes its group's firewall data with it. The replay
/// (`replay.rs`) answers, so that the store modules never call each other.
#[async_trait]
pub(crate) trait Linked: Send + Sync {
    /// Makes SQL hold these accounts as the live store does.
    async fn accounts(
        &self,
        tx: &mut dyn Tx,
        ids: &[AccountId],
        deltas: &mut Deltas,
    ) -> Result<(), Error>;

    /// Makes SQL hold these sessions as the live store does.
    async fn sessions(
        &self,
        tx: &mut dyn Tx,
        ids: &[SessionId],
        deltas: &mut Deltas,
    ) -> Result<(), Error>;

    /// Deletes the kv-store entries and privacy pairs of the group whose
    /// first session has SQL id `group` (as a fresh migration skips them),
    /// counted in `deltas`.
    async fn drop_group(
        &self,
        tx: &mut dyn Tx,
        group: i64,
        deltas: &mut Deltas,
    ) -> Result<(), Error>;
}
