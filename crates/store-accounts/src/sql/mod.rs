//! The SQL backend: one implementation for SQLite and PostgreSQL.
//!
//! Every statement is built with sea-query here and run through a
//! [`sqldb::Tx`]; the only backend difference left is `FOR UPDATE`, which
//! PostgreSQL uses to serialise writers of one account and SQLite ignores
//! (its writers are serialised by `BEGIN IMMEDIATE`).
//!
//! Balance changes that need no read (credit, debit) are one conditional
//! `UPDATE` each, so they are atomic on both engines and never round-trip
//! twice in the common case.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqldb::sea_query::{
    Expr, ExprTrait, LockType, OnConflict, Order, Query, SelectStatement, Value,
};
use sqldb::{Db, Row, Tx, TxExt};

use crate::types::{
    Account, AccountId, AccountPayment, AccountType, AccountUpdate, Hash, LastIndexes,
    PaymentEntry, PaymentStatus, UpsertOptions,
};
use crate::{
    Error, Result, Store, amount_i64, check_new_account, check_update, invalid,
    normalise_expiration,
};

pub mod schema;

use schema::{AccountIndices, AccountInvoices, AccountPayments, Accounts};

/// The accounts store on a SQL database (SQLite or PostgreSQL).
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: Db,
}

impl SqlStore {
    /// The store on `db`, whose schema must be applied
    /// ([`sqldb::migrate::Migrator`]).
    pub fn new(db: Db) -> SqlStore {
        SqlStore { db }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

fn hash_of(record: &str, bytes: Vec<u8>) -> Result<Hash> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| invalid(record, "hash", format!("{} bytes, expected 32", b.len())))?;
    Ok(Hash(arr))
}

store_support::migration_api! {
    /// The `accounts` columns, `id` first: what a read selects and what the
    /// migration's bulk append fills.
    const ACCOUNT_COLUMNS: [Accounts; 8] = [
        Accounts::Id,
        Accounts::Alias,
        Accounts::Label,
        Accounts::Type,
        Accounts::InitialBalanceMsat,
        Accounts::CurrentBalanceMsat,
        Accounts::LastUpdated,
        Accounts::Expiration,
    ];
}

fn account_columns(select: &mut SelectStatement) -> &mut SelectStatement {
    select.columns(ACCOUNT_COLUMNS)
}

/// An account row (without invoices and payments) and its SQL id.
fn account_from_row(r: &Row) -> Result<(i64, Account)> {
    let id = AccountId::from_alias(r.i64(1)?);
    let rec = || format!("account {id}");
    let type_code = r.i64(3)?;
    let initial = r.i64(4)?;
    Ok((
        r.i64(0)?,
        Account {
            id,
            account_type: AccountType::from_code(type_code)
                .ok_or_else(|| invalid(rec(), "type", format!("unknown type {type_code}")))?,
            initial_balance_msat: u64::try_from(initial).map_err(|_| {
                invalid(
                    rec(),
                    "initial_balance_msat",
                    format!("negative: {initial}"),
                )
            })?,
            current_balance_msat: r.i64(5)?,
            last_update: r.time(6)?,
            expiration: normalise_expiration(Some(r.time(7)?)),
            label: r.opt_text(2)?.unwrap_or_default(),
            invoices: Default::default(),
            payments: Default::default(),
        },
    ))
}

/// Which accounts a load reads.
#[derive(Debug, Clone, Copy)]
enum Which<'a> {
    All,
    /// SQL ids in an inclusive range.
    SqlIds(i64, i64),
    /// These SQL ids.
    SqlIdSet(&'a [i64]),
    /// One account, by its alias.
    Alias(i64),
}

impl Which<'_> {
    /// The condition on `accounts` itself.
    fn on_accounts(self) -> Option<sea_query::SimpleExpr> {
        match self {
            Which::All => None,
            Which::SqlIds(lo, hi) => Some(Expr::col(Accounts::Id).between(lo, hi)),
            Which::SqlIdSet(ids) => Some(Expr::col(Accounts::Id).is_in(ids.iter().copied())),
            Which::Alias(alias) => Some(Expr::col(Accounts::Alias).eq(alias)),
        }
    }

    /// The condition on a child table's `account_id` column.
    fn on_children<C: sea_query::IntoColumnRef>(self, col: C) -> Option<sea_query::SimpleExpr> {
        match self {
            Which::All => None,
            Which::SqlIds(lo, hi) => Some(Expr::col(col).between(lo, hi)),
            Which::SqlIdSet(ids) => Some(Expr::col(col).is_in(ids.iter().copied())),
            Which::Alias(alias) => Some(
                Expr::col(col).in_subquery(
                    Query::select()
                        .column(Accounts::Id)
                        .from(Accounts::Table)
                        .and_where(Expr::col(Accounts::Alias).eq(alias))
                        .to_owned(),
                ),
            ),
        }
    }
}

store_support::migration_api! {
    /// Loads accounts with their invoices and payments in three queries sent as
    /// one batch (one round trip on PostgreSQL), ordered by SQL id; `ids` limits
    /// it to SQL ids in that inclusive range.
    ///
    /// Shared by [`Store::accounts`] and the migrator's read-back.
    async fn load_accounts(tx: &mut dyn Tx, ids: Option<(i64, i64)>) -> Result<Vec<Account>> {
        let which = ids.map_or(Which::All, |(lo, hi)| Which::SqlIds(lo, hi));
        load_which(tx, which).await
    }
}

store_support::migration_api! {
    /// [`load_accounts`] of the SQL ids in `first..=last` in two halves: the
    /// rows fetched here, the accounts made from them by
    /// [`accounts_of`], which the migrator's read-back runs off the
    /// executor while it fetches the next range.
    async fn fetch_accounts(tx: &mut dyn Tx, first: i64, last: i64) -> Result<AccountRows> {
        fetch_which(tx, Which::SqlIds(first, last)).await
    }
}

store_support::migration_api! {
    /// The rows of some accounts, their invoices and their payments, as
    /// fetched ([`fetch_accounts`]).
    struct AccountRows {
        accounts: Vec<Row>,
        invoices: Vec<Row>,
        payments: Vec<Row>,
    }
}

store_support::migration_api! {
    /// The accounts `rows` hold, ordered by SQL id, as [`load_accounts`]
    /// returns them.
    fn accounts_of(rows: AccountRows) -> Result<Vec<Account>> {
        let AccountRows {
            accounts: rows,
            invoices,
            payments,
        } = rows;
        let mut accounts = Vec::with_capacity(rows.len());
        // Each account's name for errors, written once per account rather
        // than once per invoice and payment.
        let mut names = Vec::with_capacity(rows.len());
        let mut by_sql_id = HashMap::with_capacity(rows.len());
        for r in &rows {
            let (sql_id, account) = account_from_row(r)?;
            by_sql_id.insert(sql_id, accounts.len());
            names.push(format!("account {}", account.id));
            accounts.push(account);
        }
        for r in &invoices {
            let sql_id = r.i64(0)?;
            let Some(&i) = by_sql_id.get(&sql_id) else {
                continue;
            };
            let hash = hash_of(&names[i], r.bytes(1)?)?;
            accounts[i].invoices.insert(hash);
        }
        for r in &payments {
            let sql_id = r.i64(0)?;
            let Some(&i) = by_sql_id.get(&sql_id) else {
                continue;
            };
            let (hash, entry) = payment_from_row(&names[i], r, 1)?;
            accounts[i].payments.insert(hash, entry);
        }
        Ok(accounts)
    }
}

store_support::migration_api! {
    /// [`load_accounts`] of the accounts with these SQL ids (the online
    /// migration's read-back of the accounts it replayed), ordered by SQL id.
    async fn load_accounts_by_sql_ids(tx: &mut dyn Tx, ids: &[i64]) -> Result<Vec<Account>> {
        load_which(tx, Which::SqlIdSet(ids)).await
    }
}

store_support::migration_api! {
    /// The SQL ids of the accounts with these ids that SQL holds, by account.
    async fn sql_ids(tx: &mut dyn Tx, ids: &[AccountId]) -> Result<HashMap<AccountId, i64>> {
        let rows = tx
            .query(
                &Query::select()
                    .columns([Accounts::Id, Accounts::Alias])
                    .from(Accounts::Table)
                    .and_where(Expr::col(Accounts::Alias).is_in(ids.iter().map(|id| id.to_alias())))
                    .to_owned(),
            )
            .await?;
        rows.iter()
            .map(|r| Ok((AccountId::from_alias(r.i64(1)?), r.i64(0)?)))
            .collect()
    }
}

async fn load_which(tx: &mut dyn Tx, which: Which<'_>) -> Result<Vec<Account>> {
    accounts_of(fetch_which(tx, which).await?)
}

/// The rows of the accounts `which` selects, with their invoices and
/// payments, in three queries sent as one batch.
async fn fetch_which(tx: &mut dyn Tx, which: Which<'_>) -> Result<AccountRows> {
    let mut select = Query::select();
    account_columns(&mut select)
        .from(Accounts::Table)
        .order_by(Accounts::Id, Order::Asc);
    let mut invoices = Query::select();
    invoices
        .columns([AccountInvoices::AccountId, AccountInvoices::Hash])
        .from(AccountInvoices::Table);
    let mut payments = Query::select();
    payments
        .columns([
            AccountPayments::AccountId,
            AccountPayments::Hash,
            AccountPayments::Status,
            AccountPayments::FullAmountMsat,
        ])
        .from(AccountPayments::Table);
    if let Some(c) = which.on_accounts() {
        select.and_where(c);
    }
    if let Some(c) = which.on_children(AccountInvoices::AccountId) {
        invoices.and_where(c);
    }
    if let Some(c) = which.on_children(AccountPayments::AccountId) {
        payments.and_where(c);
    }
    let d = tx.dialect();
    let answers = tx
        .query_batch(vec![
            d.build(&select),
            d.build(&invoices),
            d.build(&payments),
        ])
        .await?;
    let Ok([rows, invoices, payments]) = <[Vec<Row>; 3]>::try_from(answers) else {
        return Err(sqldb::DbError::new(
            d.name(),
            sqldb::ErrorKind::Decode,
            "a batch of three queries did not return three answers",
        )
        .into());
    };
    Ok(AccountRows {
        accounts: rows,
        invoices,
        payments,
    })
}

/// A payment from columns `at..at+3` (hash, status, full amount).
fn payment_from_row(rec: &str, r: &Row, at: usize) -> Result<(Hash, PaymentEntry)> {
    let hash = hash_of(rec, r.bytes(at)?)?;
    let code = r.i64(at + 1)?;
    let amount = r.i64(at + 2)?;
    Ok((
        hash,
        PaymentEntry {
            status: PaymentStatus::from_code(code).ok_or_else(|| {
                invalid(
                    rec,
                    "status",
                    format!("payment {hash} has unknown status {code}"),
                )
            })?,
            full_amount_msat: u64::try_from(amount).map_err(|_| {
                invalid(
                    rec,
                    "full_amount_msat",
                    format!("payment {hash}: negative {amount}"),
                )
            })?,
        },
    ))
}

/// The SQL id of account `id`, locking its row on PostgreSQL when `lock`.
async fn resolve(tx: &mut dyn Tx, id: AccountId, lock: bool) -> Result<i64> {
    sql_id(tx, id, lock).await?.ok_or(Error::NotFound { id })
}

/// The SQL id of account `id`, if it is in SQL; `lock` takes the row for
/// update (on PostgreSQL) until the transaction ends.
pub async fn sql_id(tx: &mut dyn Tx, id: AccountId, lock: bool) -> Result<Option<i64>> {
    let mut select = Query::select();
    select
        .column(Accounts::Id)
        .from(Accounts::Table)
        .and_where(Expr::col(Accounts::Alias).eq(id.to_alias()));
    if lock {
        select.lock(LockType::Update);
    }
    Ok(tx.query_opt(&select).await?.map(|r| r.i64(0)).transpose()?)
}

async fn load_one(tx: &mut dyn Tx, id: AccountId) -> Result<Account> {
    load_which(tx, Which::Alias(id.to_alias()))
        .await?
        .pop()
        .ok_or(Error::NotFound { id })
}

async fn touch(tx: &mut dyn Tx, sql_id: i64) -> Result<()> {
    tx.exec(
        &Query::update()
            .table(Accounts::Table)
            .value(Accounts::LastUpdated, Utc::now())
            .and_where(Expr::col(Accounts::Id).eq(sql_id))
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// True when another account than `except` has `label`.
async fn label_taken(tx: &mut dyn Tx, label: &str, except: Option<i64>) -> Result<bool> {
    let mut select = Query::select();
    select
        .column(Accounts::Id)
        .from(Accounts::Table)
        .and_where(Expr::col(Accounts::Label).eq(label));
    if let Some(id) = except {
        select.and_where(Expr::col(Accounts::Id).ne(id));
    }
    Ok(tx.query_opt(&select).await?.is_some())
}

fn expiration_value(exp: Option<DateTime<Utc>>) -> DateTime<Utc> {
    normalise_expiration(exp).unwrap_or_else(sqldb::time::zero_time)
}

fn label_value(label: &str) -> Value {
    if label.is_empty() {
        Value::String(None)
    } else {
        Value::String(Some(label.to_owned()))
    }
}

/// A UNIQUE violation on `accounts.label` that a concurrent writer caused
/// between our check and our write.
fn label_conflict(e: sqldb::DbError, label: &str) -> Error {
    if e.is_unique_violation() {
        Error::LabelAlreadyExists {
            label: label.to_owned(),
        }
    } else {
        e.into()
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn new_account(
        &self,
        balance_msat: u64,
        expiration: Option<DateTime<Utc>>,
        label: &str,
    ) -> Result<Account> {
        let (balance, expiration) = check_new_account(balance_msat, expiration, label)?;
        let label = label.to_owned();
        self.db
            .write(|tx| {
                let label = label.clone();
                Box::pin(async move {
                    if !label.is_empty() && label_taken(tx, &label, None).await? {
                        return Err(Error::LabelAlreadyExists { label });
                    }
                    let mut id = None;
                    for _ in 0..10 {
                        let candidate = AccountId(rand::random());
                        match resolve(tx, candidate, false).await {
                            Err(Error::NotFound { .. }) => {
                                id = Some(candidate);
                                break;
                            }
                            Ok(_) => {}
                            // A failed lookup says nothing about the id.
                            Err(e) => return Err(e),
                        }
                    }
                    let id = id.ok_or_else(|| {
                        invalid("new account", "id", "no unused random id in 10 attempts")
                    })?;
                    let insert = Query::insert()
                        .into_table(Accounts::Table)
                        .columns([
                            Accounts::Alias,
                            Accounts::Label,
                            Accounts::Type,
                            Accounts::InitialBalanceMsat,
                            Accounts::CurrentBalanceMsat,
                            Accounts::LastUpdated,
                            Accounts::Expiration,
                        ])
                        .values_panic([
                            id.to_alias().into(),
                            label_value(&label).into(),
                            i64::from(AccountType::InitialBalance.code()).into(),
                            balance.into(),
                            balance.into(),
                            Utc::now().into(),
                            expiration_value(expiration).into(),
                        ])
                        .to_owned();
                    tx.exec(&insert)
                        .await
                        .map_err(|e| label_conflict(e, &label))?;
                    load_one(tx, id).await
                })
            })
            .await
    }

    async fn account(&self, id: AccountId) -> Result<Account> {
        self.db.read(|tx| Box::pin(load_one(tx, id))).await
    }

    async fn accounts(&self) -> Result<Vec<Account>> {
        let mut all = self.db.read(|tx| Box::pin(load_accounts(tx, None))).await?;
        all.sort_by_key(|a| a.id);
        Ok(all)
    }

    async fn update_account(&self, id: AccountId, update: AccountUpdate) -> Result<()> {
        let update = check_update(id, update)?;
        self.db
            .write(|tx| {
                let update = update.clone();
                Box::pin(async move {
                    let sql_id = resolve(tx, id, true).await?;
                    let mut stmt = Query::update();
                    stmt.table(Accounts::Table)
                        .value(Accounts::LastUpdated, Utc::now())
                        .and_where(Expr::col(Accounts::Id).eq(sql_id));
                    if let Some(label) = &update.label {
                        if !label.is_empty() && label_taken(tx, label, Some(sql_id)).await? {
                            return Err(Error::LabelAlreadyExists {
                                label: label.clone(),
                            });
                        }
                        stmt.value(Accounts::Label, label_value(label));
                    }
                    if let Some(balance) = update.balance_msat {
                        stmt.value(Accounts::CurrentBalanceMsat, balance);
                    }
                    if let Some(exp) = update.expiration {
                        stmt.value(Accounts::Expiration, expiration_value(exp));
                    }
                    let label = update.label.clone().unwrap_or_default();
                    tx.exec(&stmt)
                        .await
                        .map_err(|e| label_conflict(e, &label))?;
                    Ok(())
                })
            })
            .await
    }

    async fn add_account_invoice(&self, id: AccountId, hash: Hash) -> Result<()> {
        self.db
            .write(|tx| {
                Box::pin(async move {
                    let sql_id = resolve(tx, id, true).await?;
                    let inserted = tx
                        .exec(
                            &Query::insert()
                                .into_table(AccountInvoices::Table)
                                .columns([AccountInvoices::AccountId, AccountInvoices::Hash])
                                .values_panic([sql_id.into(), hash.0.to_vec().into()])
                                .on_conflict(
                                    OnConflict::columns([
                                        AccountInvoices::AccountId,
                                        AccountInvoices::Hash,
                                    ])
                                    .do_nothing()
                                    .to_owned(),
                                )
                                .to_owned(),
                        )
                        .await?;
                    // A known invoice changes nothing, not even last_updated.
                    if inserted > 0 {
                        touch(tx, sql_id).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn credit_account(&self, id: AccountId, amount_msat: u64) -> Result<()> {
        let rec = format!("account {id}");
        let amount = amount_i64(rec.clone(), "amount_msat", amount_msat)?;
        self.db
            .write(|tx| {
                let rec = rec.clone();
                Box::pin(async move {
                    // Conditional on the sum fitting: SQLite would turn an
                    // overflowing integer into a float, PostgreSQL would fail.
                    let updated = tx
                        .exec(
                            &Query::update()
                                .table(Accounts::Table)
                                .value(
                                    Accounts::CurrentBalanceMsat,
                                    Expr::col(Accounts::CurrentBalanceMsat).add(amount),
                                )
                                .value(Accounts::LastUpdated, Utc::now())
                                .and_where(Expr::col(Accounts::Alias).eq(id.to_alias()))
                                .and_where(
                                    Expr::col(Accounts::CurrentBalanceMsat).lte(i64::MAX - amount),
                                )
                                .to_owned(),
                        )
                        .await?;
                    if updated == 0 {
                        resolve(tx, id, false).await?;
                        return Err(invalid(
                            rec,
                            "current_balance_msat",
                            "the credit would overflow the balance",
                        ));
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn debit_account(&self, id: AccountId, amount_msat: u64) -> Result<()> {
        self.db
            .write(|tx| {
                Box::pin(async move {
                    let balance_of = |r: Row| r.i64(0);
                    let amount = i64::try_from(amount_msat).ok();
                    let updated = match amount {
                        None => 0,
                        Some(amount) => {
                            tx.exec(
                                &Query::update()
                                    .table(Accounts::Table)
                                    .value(
                                        Accounts::CurrentBalanceMsat,
                                        Expr::col(Accounts::CurrentBalanceMsat).sub(amount),
                                    )
                                    .value(Accounts::LastUpdated, Utc::now())
                                    .and_where(Expr::col(Accounts::Alias).eq(id.to_alias()))
                                    .and_where(Expr::col(Accounts::CurrentBalanceMsat).gte(amount))
                                    .to_owned(),
                            )
                            .await?
                        }
                    };
                    if updated == 0 {
                        let row = tx
                            .query_opt(
                                &Query::select()
                                    .column(Accounts::CurrentBalanceMsat)
                                    .from(Accounts::Table)
                                    .and_where(Expr::col(Accounts::Alias).eq(id.to_alias()))
                                    .to_owned(),
                            )
                            .await?
                            .ok_or(Error::NotFound { id })?;
                        return Err(Error::WouldGoBelowZero {
                            id,
                            balance_msat: balance_of(row)?,
                            amount_msat,
                        });
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn upsert_account_payment(
        &self,
        id: AccountId,
        hash: Hash,
        full_amount_msat: u64,
        status: PaymentStatus,
        opts: UpsertOptions,
    ) -> Result<bool> {
        let rec = format!("account {id}");
        amount_i64(rec.clone(), "full_amount_msat", full_amount_msat)?;
        self.db
            .write(|tx| {
                let rec = rec.clone();
                Box::pin(async move {
                    let sql_id = resolve(tx, id, true).await?;
                    let existing = tx
                        .query_opt(
                            &Query::select()
                                .columns([
                                    AccountPayments::Hash,
                                    AccountPayments::Status,
                                    AccountPayments::FullAmountMsat,
                                ])
                                .from(AccountPayments::Table)
                                .and_where(Expr::col(AccountPayments::AccountId).eq(sql_id))
                                .and_where(Expr::col(AccountPayments::Hash).eq(hash.0.to_vec()))
                                .to_owned(),
                        )
                        .await?
                        .map(|r| payment_from_row(&rec, &r, 0).map(|(_, e)| e))
                        .transpose()?;
                    let amount = opts.decide(id, hash, existing, full_amount_msat)?;
                    let amount = amount_i64(rec.clone(), "full_amount_msat", amount)?;
                    tx.exec(
                        &Query::insert()
                            .into_table(AccountPayments::Table)
                            .columns([
                                AccountPayments::AccountId,
                                AccountPayments::Hash,
                                AccountPayments::Status,
                                AccountPayments::FullAmountMsat,
                            ])
                            .values_panic([
                                sql_id.into(),
                                hash.0.to_vec().into(),
                                i64::from(status.code()).into(),
                                amount.into(),
                            ])
                            .on_conflict(
                                OnConflict::columns([
                                    AccountPayments::AccountId,
                                    AccountPayments::Hash,
                                ])
                                .update_columns([
                                    AccountPayments::Status,
                                    AccountPayments::FullAmountMsat,
                                ])
                                .to_owned(),
                            )
                            .to_owned(),
                    )
                    .await?;
                    let mut update = Query::update();
                    update
                        .table(Accounts::Table)
                        .value(Accounts::LastUpdated, Utc::now())
                        .and_where(Expr::col(Accounts::Id).eq(sql_id));
                    if opts.debit_account {
                        // No check against going negative (fees may exceed
                        // the estimate), only against overflowing.
                        update
                            .value(
                                Accounts::CurrentBalanceMsat,
                                Expr::col(Accounts::CurrentBalanceMsat).sub(amount),
                            )
                            .and_where(
                                Expr::col(Accounts::CurrentBalanceMsat).gte(i64::MIN + amount),
                            );
                    }
                    if tx.exec(&update).await? == 0 {
                        return Err(invalid(
                            rec,
                            "current_balance_msat",
                            "the debit would overflow the balance",
                        ));
                    }
                    Ok(existing.is_some())
                })
            })
            .await
    }

    async fn delete_account_payment(&self, id: AccountId, hash: Hash) -> Result<()> {
        self.db
            .write(|tx| {
                Box::pin(async move {
                    let sql_id = resolve(tx, id, true).await?;
                    let deleted = tx
                        .exec(
                            &Query::delete()
                                .from_table(AccountPayments::Table)
                                .and_where(Expr::col(AccountPayments::AccountId).eq(sql_id))
                                .and_where(Expr::col(AccountPayments::Hash).eq(hash.0.to_vec()))
                                .to_owned(),
                        )
                        .await?;
                    if deleted == 0 {
                        return Err(Error::PaymentNotAssociated { id, hash });
                    }
                    touch(tx, sql_id).await
                })
            })
            .await
    }

    async fn list_account_payments(
        &self,
        id: AccountId,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<AccountPayment>> {
        self.db
            .read(|tx| {
                Box::pin(async move {
                    if limit == 0 {
                        resolve(tx, id, false).await?;
                        return Ok(Vec::new());
                    }
                    // The account's existence and its page, in one batch.
                    let d = tx.dialect();
                    let exists = Query::select()
                        .column(Accounts::Id)
                        .from(Accounts::Table)
                        .and_where(Expr::col(Accounts::Alias).eq(id.to_alias()))
                        .to_owned();
                    let page = Query::select()
                        .columns([
                            AccountPayments::Hash,
                            AccountPayments::Status,
                            AccountPayments::FullAmountMsat,
                        ])
                        .from(AccountPayments::Table)
                        .and_where(
                            Expr::col(AccountPayments::AccountId).in_subquery(exists.clone()),
                        )
                        .order_by(AccountPayments::Hash, Order::Asc)
                        .limit(u64::from(limit))
                        .offset(u64::from(offset))
                        .to_owned();
                    let mut answers = tx
                        .query_batch(vec![d.build(&exists), d.build(&page)])
                        .await?;
                    let rows = answers.pop().unwrap_or_default();
                    if answers.pop().unwrap_or_default().is_empty() {
                        return Err(Error::NotFound { id });
                    }
                    let rec = format!("account {id}");
                    rows.iter()
                        .map(|r| {
                            payment_from_row(&rec, r, 0)
                                .map(|(hash, entry)| AccountPayment { hash, entry })
                        })
                        .collect()
                })
            })
            .await
    }

    async fn count_account_payments(&self, id: AccountId) -> Result<u64> {
        self.db
            .read(|tx| {
                Box::pin(async move {
                    let sql_id = resolve(tx, id, false).await?;
                    let n = tx
                        .query_one(
                            &Query::select()
                                .expr(Expr::col(AccountPayments::Hash).count())
                                .from(AccountPayments::Table)
                                .and_where(Expr::col(AccountPayments::AccountId).eq(sql_id))
                                .to_owned(),
                        )
                        .await?
                        .i64(0)?;
                    Ok(u64::try_from(n).unwrap_or(0))
                })
            })
            .await
    }

    async fn remove_account(&self, id: AccountId) -> Result<()> {
        self.db
            .write(|tx| {
                Box::pin(async move {
                    let deleted = tx
                        .exec(
                            &Query::delete()
                                .from_table(Accounts::Table)
                                .and_where(Expr::col(Accounts::Alias).eq(id.to_alias()))
                                .to_owned(),
                        )
                        .await?;
                    if deleted == 0 {
                        return Err(Error::NotFound { id });
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn last_indexes(&self) -> Result<LastIndexes> {
        self.db
            .read(|tx| {
                Box::pin(async move {
                    let rows = tx
                        .query(
                            &Query::select()
                                .columns([AccountIndices::Name, AccountIndices::Value])
                                .from(AccountIndices::Table)
                                .and_where(
                                    Expr::col(AccountIndices::Name)
                                        .is_in([schema::LAST_ADD_INDEX, schema::LAST_SETTLE_INDEX]),
                                )
                                .to_owned(),
                        )
                        .await?;
                    let (mut add, mut settle) = (None, None);
                    for r in &rows {
                        let value = u64::try_from(r.i64(1)?)
                            .map_err(|_| invalid("account indices", "value", "negative index"))?;
                        match r.text(0)?.as_str() {
                            schema::LAST_ADD_INDEX => add = Some(value),
                            _ => settle = Some(value),
                        }
                    }
                    match (add, settle) {
                        (Some(add_index), Some(settle_index)) => Ok(LastIndexes {
                            add_index,
                            settle_index,
                        }),
                        _ => Err(Error::NoInvoiceIndexKnown),
                    }
                })
            })
            .await
    }

    async fn store_last_indexes(&self, indexes: LastIndexes) -> Result<()> {
        let add = amount_i64("last indexes", "add_index", indexes.add_index)?;
        let settle = amount_i64("last indexes", "settle_index", indexes.settle_index)?;
        self.db
            .write(|tx| {
                Box::pin(async move {
                    tx.exec(&upsert_indexes(add, settle)).await?;
                    Ok(())
                })
            })
            .await
    }
}

store_support::migration_api! {
    /// Inserts or replaces both index rows in one statement.
    fn upsert_indexes(add: i64, settle: i64) -> sqldb::sea_query::InsertStatement {
        Query::insert()
            .into_table(AccountIndices::Table)
            .columns([AccountIndices::Name, AccountIndices::Value])
            .values_panic([schema::LAST_ADD_INDEX.into(), add.into()])
            .values_panic([schema::LAST_SETTLE_INDEX.into(), settle.into()])
            .on_conflict(
                OnConflict::column(AccountIndices::Name)
                    .update_column(AccountIndices::Value)
                    .to_owned(),
            )
            .to_owned()
    }
}
