//! Accounts: the `accounts` tree into `accounts`, `account_invoices`,
//! `account_payments` and `account_indices`.
//!
//! Records are decoded with the store crate's versioned record types, which
//! golden files pin (`testdata/accounts/`); the statements here are the
//! migrator's own, written against schema version 6, and never call the live
//! `Store` implementation. Reading back uses the store's range loader, so
//! what is compared is exactly what the SQL store will serve: chunk by
//! chunk online, the whole table by a count and digest offline
//! (docs/design.md §5.7).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_query::{Expr, ExprTrait, IntoIden, Query};
use sqldb::{Tx, TxExt};
use store_accounts::kv::{self, Entry};
use store_accounts::sql::schema::{
    AccountIndices, AccountInvoices, AccountPayments, Accounts, LAST_ADD_INDEX,
};
use store_accounts::sql::{accounts_of, fetch_accounts, load_accounts, upsert_indexes};
use store_accounts::{Account, Hash, LastIndexes, PaymentEntry};

use crate::Error;
use crate::copy::{CopyCtx, TreeCopy, WriteChunk, copy_tree};
use crate::diff::{Diff, Differences, diff_fields, verify_written};
use crate::digest::{Proof, ReadRange, WholeTable, prove_whole, set_aside_for_load};
use crate::feed::Sink;
use crate::shared::{delete_where, sequence_past};

/// What the accounts migration moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountsReport {
    /// Accounts.
    pub accounts: u64,
    /// Invoice hashes.
    pub invoices: u64,
    /// Payments.
    pub payments: u64,
    /// The last invoice indexes, when both were present.
    pub last_indexes: Option<LastIndexes>,
}

/// Invoice and payment rows a chunk may hold per account of the chunk size
/// before it is sent early.
const CHILD_ROWS_PER_ACCOUNT: usize = 16;

/// What the reading side hands the writing side.
enum Item {
    Accounts(Vec<Account>),
    Indexes {
        add: Option<u64>,
        settle: Option<u64>,
    },
}

/// Reads the tree on the blocking pool, in key order, in chunks.
fn read_tree(tree: tombstone::ReadTree, chunk_size: usize, out: Sink<Item>) {
    let mut chunk = Vec::with_capacity(chunk_size);
    // Invoices and payments in the chunk: an account can carry thousands,
    // so a chunk also ends at a row budget, which bounds memory.
    let mut rows = 0;
    let (mut add, mut settle) = (None, None);
    for item in tree.iter() {
        let (key, value) = match item {
            Ok(kv) => kv,
            Err(e) => return out.fail(e.into()),
        };
        match kv::decode_entry(&key, &value) {
            Ok(Entry::Account(a)) => {
                rows += a.invoices.len() + a.payments.len();
                chunk.push(a);
            }
            Ok(Entry::LastAddIndex(i)) => add = Some(i),
            Ok(Entry::LastSettleIndex(i)) => settle = Some(i),
            Err(e) => {
                let e = Error::Decode {
                    tree: kv::TREE,
                    key: hex::encode(&key),
                    source: e.into(),
                };
                if out.skip(&e) {
                    continue;
                }
                return out.fail(e);
            }
        }
        if chunk.len() == chunk_size || rows >= chunk_size * CHILD_ROWS_PER_ACCOUNT {
            rows = 0;
            if !out.send(Item::Accounts(std::mem::take(&mut chunk))) {
                return;
            }
        }
    }
    if !chunk.is_empty() && !out.send(Item::Accounts(chunk)) {
        return;
    }
    out.send(Item::Indexes { add, settle });
}

/// Copies the accounts tree. On a live source (an online migration) the
/// labels may move between accounts while the tree is read (see
/// [`free_labels`]).
///
/// Offline, the invoices' and payments' indexes are set aside for the load
/// and built once after it, and the copy is proved whole: every account
/// read back through the store's loader, chunk by chunk, against a count
/// and digest of what was written (docs/design.md §5.7).
pub(crate) async fn migrate(tx: &mut dyn Tx, ctx: CopyCtx<'_>) -> Result<AccountsReport, Error> {
    let proof = Proof::for_copy(ctx.live.is_some());
    let children = [
        AccountInvoices::Table.into_iden(),
        AccountPayments::Table.into_iden(),
    ];
    let aside = set_aside_for_load(tx, &proof, &children).await?;
    let writer = copy(tx, ctx, proof).await?;
    if let Some(aside) = aside {
        aside.rebuild(tx).await?;
    }
    // Invoices and payments are part of each account read back.
    let whole = WholeTable {
        what: "account",
        table: Accounts::Table.into_iden(),
        read: ReadRange {
            fetch: |tx, first, last| Box::pin(fetch_accounts(tx, first, last)),
            decode: accounts_of,
        },
        diagnose: |tx, ctx| Box::pin(async move { copy(tx, ctx, Proof::Diagnose).await.map(drop) }),
    };
    prove_whole(tx, ctx, &writer.proof, whole).await?;
    let last = writer.next_id - 1;
    sequence_past(tx, crate::shared::IdTable::Accounts, last).await?;
    Ok(writer.report)
}

/// One read of the tree, each chunk written and proved as `proof` says.
async fn copy(tx: &mut dyn Tx, ctx: CopyCtx<'_>, proof: Proof) -> Result<Writer, Error> {
    let mut writer = Writer {
        report: AccountsReport::default(),
        next_id: 1,
        live: ctx.live.is_some(),
        proof,
    };
    let Some(tree) = ctx.source.tree(kv::TREE)? else {
        return Ok(writer);
    };
    let what = TreeCopy {
        tree: kv::TREE,
        store: "accounts",
        total: tree.len() as u64,
    };
    let chunk_size = ctx.chunk_size;
    let read = move |sink| read_tree(tree, chunk_size, sink);
    copy_tree(tx, ctx, what, read, &mut writer).await?;
    Ok(writer)
}

/// Writes the accounts' chunks with the SQL ids from 1 in key order.
struct Writer {
    report: AccountsReport,
    next_id: i64,
    live: bool,
    proof: Proof,
}

#[async_trait]
impl WriteChunk<Item> for Writer {
    async fn write(&mut self, tx: &mut dyn Tx, item: Item) -> Result<Option<u64>, Error> {
        match item {
            Item::Accounts(mut chunk) => {
                if self.live {
                    free_labels(tx, chunk.iter_mut().map(|a| &mut a.label).collect()).await?;
                }
                let first = self.next_id;
                if self.proof.writes() {
                    write_chunk(tx, &chunk, first).await?;
                }
                self.next_id += chunk.len() as i64;
                let ids = (first, self.next_id - 1);
                match &mut self.proof {
                    Proof::Whole(written, ranges) => {
                        for a in &chunk {
                            written.add(&crate::rules::account(a));
                        }
                        ranges.push(ids);
                    }
                    Proof::EachChunk | Proof::Diagnose => {
                        let load = load_accounts(tx, Some(ids));
                        verify_written("accounts", chunk.iter(), ids, load, check).await?;
                    }
                }
                let report = &mut self.report;
                report.accounts += chunk.len() as u64;
                report.invoices += chunk.iter().map(|a| a.invoices.len() as u64).sum::<u64>();
                report.payments += chunk.iter().map(|a| a.payments.len() as u64).sum::<u64>();
                Ok(Some(report.accounts))
            }
            // Written and read back compared in the first read.
            Item::Indexes { .. } if !self.proof.writes() => Ok(None),
            Item::Indexes { add, settle } => {
                self.report.last_indexes = migrate_indexes(tx, add, settle).await?;
                Ok(None)
            }
        }
    }
}

/// `v` as SQL stores it. `field` is formatted only for the error: a
/// payment's names its hash, which would cost a hex encoding per payment.
fn i64_of(record: &Account, field: std::fmt::Arguments<'_>, v: u64) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| Error::Invalid {
        record: format!("account {}", record.id),
        reason: format!("{field} {v} exceeds the largest storable amount"),
    })
}

fn expiration_value(a: &Account) -> DateTime<Utc> {
    a.expiration.unwrap_or_else(sqldb::time::zero_time)
}

/// An account's row with SQL id `id`, in [`store_accounts::sql::ACCOUNT_COLUMNS`] order.
fn account_row(a: &Account, id: i64) -> Result<Vec<sea_query::Value>, Error> {
    let label: Option<String> = (!a.label.is_empty()).then(|| a.label.clone());
    Ok(vec![
        id.into(),
        a.id.to_alias().into(),
        label.into(),
        i64::from(a.account_type.code()).into(),
        i64_of(
            a,
            format_args!("initial_balance_msat"),
            a.initial_balance_msat,
        )?
        .into(),
        a.current_balance_msat.into(),
        a.last_update.into(),
        expiration_value(a).into(),
    ])
}

type Rows = Vec<Vec<sea_query::Value>>;

/// An account's invoice and payment rows under SQL id `id`.
fn child_rows(a: &Account, id: i64) -> Result<(Rows, Rows), Error> {
    child_rows_of(a, id, &a.invoices, &a.payments)
}

/// Rows of some of `a`'s invoices and payments under SQL id `id`.
fn child_rows_of<'a>(
    a: &Account,
    id: i64,
    invoices: impl IntoIterator<Item = &'a Hash>,
    payments: impl IntoIterator<Item = (&'a Hash, &'a PaymentEntry)>,
) -> Result<(Rows, Rows), Error> {
    let invoices = invoices
        .into_iter()
        .map(|h| vec![id.into(), h.0.to_vec().into()])
        .collect();
    let mut payments_rows = Vec::new();
    for (h, p) in payments {
        payments_rows.push(vec![
            id.into(),
            h.0.to_vec().into(),
            i64::from(p.status.code()).into(),
            i64_of(
                a,
                format_args!("payment {h} full_amount_msat"),
                p.full_amount_msat,
            )?
            .into(),
        ]);
    }
    Ok((invoices, payments_rows))
}

pub(crate) async fn write_chunk(
    tx: &mut dyn Tx,
    chunk: &[Account],
    first_id: i64,
) -> Result<(), Error> {
    let mut accounts: Rows = Vec::with_capacity(chunk.len());
    let mut invoices: Rows = Vec::new();
    let mut payments: Rows = Vec::new();
    for (i, a) in chunk.iter().enumerate() {
        a.check().map_err(Error::contract)?;
        let id = first_id + i as i64;
        accounts.push(account_row(a, id)?);
        let (inv, pay) = child_rows(a, id)?;
        invoices.extend(inv);
        payments.extend(pay);
    }
    write_rows(tx, accounts, invoices, payments).await
}

async fn write_rows(
    tx: &mut dyn Tx,
    accounts: Rows,
    invoices: Rows,
    payments: Rows,
) -> Result<(), Error> {
    sqldb::append(
        tx,
        Accounts::Table,
        store_accounts::sql::ACCOUNT_COLUMNS,
        accounts,
    )
    .await?;
    sqldb::append(
        tx,
        AccountInvoices::Table,
        [AccountInvoices::AccountId, AccountInvoices::Hash],
        invoices,
    )
    .await?;
    sqldb::append(
        tx,
        AccountPayments::Table,
        [
            AccountPayments::AccountId,
            AccountPayments::Hash,
            AccountPayments::Status,
            AccountPayments::FullAmountMsat,
        ],
        payments,
    )
    .await?;
    Ok(())
}

fn compare(kv: &Account, sql: &Account) -> Option<Differences> {
    let kv = crate::rules::account(kv);
    let mut d = Diff::default();
    diff_fields!(
        d,
        kv,
        sql,
        [
            id,
            account_type,
            initial_balance_msat,
            current_balance_msat,
            last_update,
            expiration,
            label,
        ]
    );
    d.set("invoices", &kv.invoices, &sql.invoices);
    d.map("payments", &kv.payments, &sql.payments);
    d.finish()
}

/// Refuses an account read back unlike the one written.
fn check(kv: &Account, sql: &Account) -> Result<(), Error> {
    match compare(kv, sql) {
        Some(diff) => Err(Error::Mismatch {
            record: format!("account {}", kv.id),
            diff,
        }),
        None => Ok(()),
    }
}

pub(crate) async fn migrate_indexes(
    tx: &mut dyn Tx,
    add: Option<u64>,
    settle: Option<u64>,
) -> Result<Option<LastIndexes>, Error> {
    // LiT skips the indexes unless both are present (docs/design.md §5.4).
    let (Some(add), Some(settle)) = (add, settle) else {
        return Ok(None);
    };
    let as_i64 = |name: &str, v: u64| {
        i64::try_from(v).map_err(|_| Error::Invalid {
            record: format!("account index {name}"),
            reason: format!("{v} exceeds the largest storable index"),
        })
    };
    tx.exec(&upsert_indexes(
        as_i64("last-add-index", add)?,
        as_i64("last-settle-index", settle)?,
    ))
    .await?;
    let rows = tx
        .query(
            &Query::select()
                .columns([AccountIndices::Name, AccountIndices::Value])
                .from(AccountIndices::Table)
                .to_owned(),
        )
        .await?;
    let mut d = Diff::default();
    d.field("rows", &rows.len(), &2);
    for r in &rows {
        let name = r.text(0)?;
        let value = r.i64(1)?;
        let want = if name == LAST_ADD_INDEX { add } else { settle };
        d.field(&name, &i64::try_from(want).unwrap_or(-1), &value);
    }
    if let Some(diff) = d.finish() {
        return Err(Error::Mismatch {
            record: "account indexes".into(),
            diff,
        });
    }
    Ok(Some(LastIndexes {
        add_index: add,
        settle_index: settle,
    }))
}

/// Makes room for the labels of `chunk`, accounts read from a live
/// database, in that order (docs/design.md §7.2). Labels are unique, but a
/// live tree is not read at one instant: an account read earlier may have
/// given its label to one read later. Two accounts holding one label at
/// different times means both changed during the migration, so both are
/// in the journal and will be replayed with their current labels: the
/// earlier-read holder lets the label go (in SQL, or in the chunk when it
/// is in the same chunk), and the replay sets every label right.
async fn free_labels(tx: &mut dyn Tx, mut labels: Vec<&mut String>) -> Result<(), Error> {
    let mut last_holder: std::collections::HashMap<String, usize> =
        std::collections::HashMap::new();
    for i in 0..labels.len() {
        if labels[i].is_empty() {
            continue;
        }
        if let Some(earlier) = last_holder.insert(labels[i].clone(), i) {
            labels[earlier].clear();
        }
    }
    if last_holder.is_empty() {
        return Ok(());
    }
    tx.exec(
        &Query::update()
            .table(Accounts::Table)
            .value(Accounts::Label, Option::<String>::None)
            .and_where(Expr::col(Accounts::Label).is_in(last_holder.into_keys()))
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// Accounts a replay handles per batch of statements.
const REPLAY_CHUNK: usize = 256;

/// Replays accounts an online migration's journal names (docs/design.md
/// §7.2), in batches: the SQL ids of a batch in one query, the rows of
/// accounts still there updated in place (the statements sent together)
/// and their invoices and payments written again, new accounts appended
/// after the largest id, accounts gone deleted after the links to them
/// are dropped; then every replayed account is read back in one load and
/// compared. With `last_indexes`, the invoice indexes too.
pub(crate) async fn replay(
    tx: &mut dyn Tx,
    live: &dyn store_accounts::Store,
    ids: &[store_accounts::AccountId],
    last_indexes: bool,
    deltas: &mut crate::shared::Deltas,
) -> Result<(), Error> {
    for chunk in ids.chunks(REPLAY_CHUNK) {
        replay_chunk(tx, live, chunk, deltas).await?;
    }
    if last_indexes {
        match live.last_indexes().await {
            Ok(i) => {
                migrate_indexes(tx, Some(i.add_index), Some(i.settle_index)).await?;
            }
            Err(store_accounts::Error::NoInvoiceIndexKnown) => {}
            Err(e) => return Err(crate::shared::live_error("account indexes", e)),
        }
    }
    Ok(())
}

async fn replay_chunk(
    tx: &mut dyn Tx,
    live: &dyn store_accounts::Store,
    ids: &[store_accounts::AccountId],
    deltas: &mut crate::shared::Deltas,
) -> Result<(), Error> {
    let in_sql = store_accounts::sql::sql_ids(tx, ids)
        .await
        .map_err(|e| Error::Store {
            record: "the replayed accounts".into(),
            source: Box::new(e),
        })?;
    let mut updated: Vec<(Account, i64)> = Vec::new();
    let mut added: Vec<Account> = Vec::new();
    let mut gone: Vec<i64> = Vec::new();
    for id in ids {
        let current = match live.account(*id).await {
            Ok(a) => Some(a),
            Err(store_accounts::Error::NotFound { .. }) => None,
            Err(e) => return Err(crate::shared::live_error("account", e)),
        };
        match (current, in_sql.get(id)) {
            (Some(a), Some(&sid)) => updated.push((a, sid)),
            (Some(a), None) => added.push(a),
            (None, Some(&sid)) => gone.push(sid),
            (None, None) => {}
        }
    }
    // Labels move between accounts: whoever holds one of these in SQL now,
    // or in this batch too, lets it go first. Two holders read at different
    // times both changed after the journal was last taken, so both are
    // replayed again; the pause's last round reads a still database.
    free_labels(
        tx,
        updated
            .iter_mut()
            .map(|(a, _)| &mut a.label)
            .chain(added.iter_mut().map(|a| &mut a.label))
            .collect(),
    )
    .await?;
    let before = sql_state(tx, &updated).await?;
    delete_gone(tx, &gone, deltas).await?;
    update_in_place(tx, &updated, &before, deltas).await?;
    if !added.is_empty() {
        let first = crate::shared::next_id(tx, crate::shared::IdTable::Accounts).await?;
        write_chunk(tx, &added, first).await?;
        let rows = crate::shared::rows;
        deltas.accounts += rows(added.len());
        deltas.invoices += rows(added.iter().map(|a| a.invoices.len()).sum::<usize>());
        deltas.payments += rows(added.iter().map(|a| a.payments.len()).sum::<usize>());
        let last = first + rows(added.len()) - 1;
        crate::shared::advance_sequence(tx, crate::shared::IdTable::Accounts, last).await?;
        updated.extend(added.into_iter().zip(first..));
    }
    verify_replayed(tx, updated).await
}

/// What SQL holds of the changed accounts, by id: their invoices and
/// payments change far less often than their balances, so only the child
/// rows that differ are deleted and written.
async fn sql_state(
    tx: &mut dyn Tx,
    updated: &[(Account, i64)],
) -> Result<HashMap<store_accounts::AccountId, Account>, Error> {
    let sids: Vec<i64> = updated.iter().map(|(_, sid)| *sid).collect();
    if sids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(store_accounts::sql::load_accounts_by_sql_ids(tx, &sids)
        .await
        .map_err(|e| Error::Store {
            record: "the replayed accounts".into(),
            source: Box::new(e),
        })?
        .into_iter()
        .map(|a| (a.id, a))
        .collect())
}

/// Deletes the accounts (by SQL id) gone from the key-value store, after
/// their invoices, payments and the links to them.
async fn delete_gone(
    tx: &mut dyn Tx,
    gone: &[i64],
    deltas: &mut crate::shared::Deltas,
) -> Result<(), Error> {
    if gone.is_empty() {
        return Ok(());
    }
    delete_children(tx, gone, deltas).await?;
    crate::shared::drop_links(tx, crate::shared::Link::Account, gone).await?;
    deltas.accounts -= delete_where(
        tx,
        Accounts::Table,
        Expr::col(Accounts::Id).is_in(gone.iter().copied()),
    )
    .await?;
    Ok(())
}

/// Rows updated in place (a delete would cascade to the sessions and
/// actions that link to the account), the statements sent together; of
/// the invoices and payments, only those that differ from `before` are
/// deleted and written.
async fn update_in_place(
    tx: &mut dyn Tx,
    updated: &[(Account, i64)],
    before: &HashMap<store_accounts::AccountId, Account>,
    deltas: &mut crate::shared::Deltas,
) -> Result<(), Error> {
    use crate::shared::rows;
    let d = tx.dialect();
    let mut statements = Vec::with_capacity(updated.len());
    let (mut invoices, mut payments): (Rows, Rows) = (Vec::new(), Vec::new());
    for (a, sid) in updated {
        a.check().map_err(Error::contract)?;
        let row = account_row(a, *sid)?;
        let values = store_accounts::sql::ACCOUNT_COLUMNS[1..]
            .iter()
            .copied()
            .zip(row.into_iter().skip(1).map(Expr::val));
        statements.push(
            d.build(
                &Query::update()
                    .table(Accounts::Table)
                    .values(values)
                    .and_where(Expr::col(Accounts::Id).eq(*sid))
                    .to_owned(),
            ),
        );
        let (no_invoices, no_payments) = (Default::default(), Default::default());
        let (was_invoices, was_payments) = before
            .get(&a.id)
            .map_or((&no_invoices, &no_payments), |w| (&w.invoices, &w.payments));
        let stale_invoices: Vec<Vec<u8>> = was_invoices
            .difference(&a.invoices)
            .map(|h| h.0.to_vec())
            .collect();
        let stale_payments: Vec<Vec<u8>> = was_payments
            .iter()
            .filter(|(h, p)| a.payments.get(h) != Some(p))
            .map(|(h, _)| h.0.to_vec())
            .collect();
        deltas.invoices -= rows(stale_invoices.len());
        deltas.payments -= rows(stale_payments.len());
        if !stale_invoices.is_empty() {
            statements.push(
                d.build(
                    &Query::delete()
                        .from_table(AccountInvoices::Table)
                        .and_where(Expr::col(AccountInvoices::AccountId).eq(*sid))
                        .and_where(Expr::col(AccountInvoices::Hash).is_in(stale_invoices))
                        .to_owned(),
                ),
            );
        }
        if !stale_payments.is_empty() {
            statements.push(
                d.build(
                    &Query::delete()
                        .from_table(AccountPayments::Table)
                        .and_where(Expr::col(AccountPayments::AccountId).eq(*sid))
                        .and_where(Expr::col(AccountPayments::Hash).is_in(stale_payments))
                        .to_owned(),
                ),
            );
        }
        let (inv, pay) = child_rows_of(
            a,
            *sid,
            a.invoices.difference(was_invoices),
            a.payments
                .iter()
                .filter(|(h, p)| was_payments.get(h) != Some(p)),
        )?;
        invoices.extend(inv);
        payments.extend(pay);
    }
    if !statements.is_empty() {
        tx.query_batch(statements).await?;
    }
    deltas.invoices += rows(invoices.len());
    deltas.payments += rows(payments.len());
    write_rows(tx, Vec::new(), invoices, payments).await
}

/// Reads back the replayed accounts (with their SQL ids) in one load and
/// compares each with its key-value record.
async fn verify_replayed(tx: &mut dyn Tx, mut replayed: Vec<(Account, i64)>) -> Result<(), Error> {
    if replayed.is_empty() {
        return Ok(());
    }
    replayed.sort_by_key(|(_, sid)| *sid);
    let sids: Vec<i64> = replayed.iter().map(|(_, sid)| *sid).collect();
    let (first, last) = (sids[0], sids[sids.len() - 1]);
    let load = store_accounts::sql::load_accounts_by_sql_ids(tx, &sids);
    let written = replayed.iter().map(|(a, _)| a);
    verify_written("replayed accounts", written, (first, last), load, check).await
}

/// Deletes the invoices and payments of the accounts with these SQL ids.
async fn delete_children(
    tx: &mut dyn Tx,
    sids: &[i64],
    deltas: &mut crate::shared::Deltas,
) -> Result<(), Error> {
    deltas.invoices -= delete_where(
        tx,
        AccountInvoices::Table,
        Expr::col(AccountInvoices::AccountId).is_in(sids.iter().copied()),
    )
    .await?;
    deltas.payments -= delete_where(
        tx,
        AccountPayments::Table,
        Expr::col(AccountPayments::AccountId).is_in(sids.iter().copied()),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use chrono::TimeZone;
    use store_accounts::{AccountId, AccountType, Hash, PaymentEntry, PaymentStatus};

    use super::*;

    fn account() -> Account {
        Account {
            id: AccountId([7; 8]),
            account_type: AccountType::InitialBalance,
            initial_balance_msat: 10,
            current_balance_msat: -3,
            last_update: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
                + chrono::Duration::nanoseconds(1_999),
            expiration: None,
            label: "x".into(),
            invoices: BTreeSet::from([Hash([1; 32])]),
            payments: BTreeMap::from([(
                Hash([2; 32]),
                PaymentEntry {
                    status: PaymentStatus::InFlight,
                    full_amount_msat: 5,
                },
            )]),
        }
    }

    #[test]
    fn equal_after_microsecond_truncation() {
        let kv = account();
        assert_eq!(compare(&kv, &crate::rules::account(&kv)), None);
    }

    #[test]
    fn every_differing_field_is_named() {
        let kv = account();
        let mut sql = crate::rules::account(&kv);
        sql.current_balance_msat = 3;
        sql.invoices.clear();
        sql.payments.get_mut(&Hash([2; 32])).unwrap().status = PaymentStatus::Succeeded;
        sql.payments.insert(
            Hash([9; 32]),
            PaymentEntry {
                status: PaymentStatus::Failed,
                full_amount_msat: 1,
            },
        );
        let typed = compare(&kv, &sql).unwrap();
        assert!(
            typed.all().iter().any(|d| matches!(d,
                crate::Difference::Field { field, kv, sql }
                    if field == "current_balance_msat" && kv == "-3" && sql == "3")),
            "{typed}"
        );
        // As the operator reads it: one field a line.
        let diff = typed.to_string();
        assert!(
            diff.contains("current_balance_msat: kv -3, sql 3"),
            "{diff}"
        );
        assert!(diff.contains("invoices: missing in sql"), "{diff}");
        assert!(
            diff.contains("InFlight") && diff.contains("Succeeded"),
            "{diff}"
        );
        assert!(diff.contains("only in sql"), "{diff}");
        assert!(!diff.contains("label"), "{diff}");
    }
}
