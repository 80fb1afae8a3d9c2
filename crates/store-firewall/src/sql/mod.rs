//! The SQL backend: one implementation for SQLite and PostgreSQL.
//!
//! Rule and feature names are resolved to ids inside the transaction: read
//! paths look them up and treat a missing name as a missing value; write
//! paths insert-or-get them with `INSERT … ON CONFLICT (name) DO UPDATE …
//! RETURNING id`, which also locks the rule's row until the transaction
//! ends, so two writers of one rule cannot both insert the same key. A
//! session group is resolved to the SQL id of its first session (the
//! session whose group is itself).

use std::collections::BTreeMap;

use async_trait::async_trait;
use sea_query::{
    Alias, ConditionalStatement, Expr, ExprTrait, JoinType, LockType, OnConflict, Order, Query,
    SelectStatement, SimpleExpr,
};
use sqldb::{Db, Tx, TxExt, TxMode};
use store_sessions::SessionId;
use store_sessions::sql::schema::Sessions;

use crate::{
    Error, KvEntry, KvTx, Mode, Namespace, PrivacyPair, PrivacyTx, Result, Scope, Store, check_key,
    check_namespace, check_pair, check_privacy_value, check_value, invalid,
};

pub mod schema;

use schema::{Features, Kvstores, PrivacyPairs, Rules};

/// The firewall store on a SQL database (SQLite or PostgreSQL).
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: Db,
}

impl SqlStore {
    /// The store on `db`, whose schema must be applied.
    pub fn new(db: Db) -> SqlStore {
        SqlStore { db }
    }
}

fn tx_mode(mode: Mode) -> TxMode {
    match mode {
        Mode::View => TxMode::Read,
        Mode::Update => TxMode::Write,
    }
}

/// The select of a session group's SQL id: its first session, whose group
/// is itself.
fn group_select(group: SessionId) -> SelectStatement {
    Query::select()
        .column(Sessions::Id)
        .from(Sessions::Table)
        .and_where(Expr::col(Sessions::Alias).eq(group.0.to_vec()))
        .and_where(Expr::col(Sessions::GroupId).equals(Sessions::Id))
        .to_owned()
}

/// The SQL id of a session group: its first session, whose group is itself.
///
/// With `for_write`, the session's row is locked against deletion until the
/// transaction ends (`FOR KEY SHARE` on PostgreSQL; SQLite's one writer
/// already excludes it), so a group deleted at the same moment is either
/// found here and deleted after the write, or not found: an unknown group,
/// never a foreign key violation.
pub async fn group_sql_id(
    tx: &mut dyn Tx,
    group: SessionId,
    for_write: bool,
) -> Result<Option<i64>> {
    let mut select = group_select(group);
    if for_write {
        select.lock(LockType::KeyShare);
    }
    let row = tx.query_opt(&select).await?;
    Ok(row.map(|r| r.i64(0)).transpose()?)
}

store_support::migration_api! {
    /// The id of a rule (`rule`) or feature name, if the name is known.
    async fn lookup_name(tx: &mut dyn Tx, rule: bool, name: &str) -> Result<Option<i64>> {
        let select = if rule {
            Query::select()
                .column(Rules::Id)
                .from(Rules::Table)
                .and_where(Expr::col(Rules::Name).eq(name))
                .to_owned()
        } else {
            Query::select()
                .column(Features::Id)
                .from(Features::Table)
                .and_where(Expr::col(Features::Name).eq(name))
                .to_owned()
        };
        Ok(tx.query_opt(&select).await?.map(|r| r.i64(0)).transpose()?)
    }
}

store_support::migration_api! {
    /// The id of a rule (or feature) name, inserting the name when new.
    async fn name_id(tx: &mut dyn Tx, rule: bool, name: &str) -> Result<i64> {
        let insert = if rule {
            Query::insert()
                .into_table(Rules::Table)
                .columns([Rules::Name])
                .values_panic([name.into()])
                .on_conflict(
                    OnConflict::column(Rules::Name)
                        .update_column(Rules::Name)
                        .to_owned(),
                )
                .returning_col(Rules::Id)
                .to_owned()
        } else {
            Query::insert()
                .into_table(Features::Table)
                .columns([Features::Name])
                .values_panic([name.into()])
                .on_conflict(
                    OnConflict::column(Features::Name)
                        .update_column(Features::Name)
                        .to_owned(),
                )
                .returning_col(Features::Id)
                .to_owned()
        };
        Ok(tx.query_one(&insert).await?.i64(0)?)
    }
}

/// The ids a scope's rows carry.
#[derive(Debug, Clone, Copy)]
struct ScopeIds {
    perm: bool,
    rule: i64,
    group: Option<i64>,
    feature: Option<i64>,
}

impl ScopeIds {
    /// Restricts `stmt` to this scope's rows with `key`, with explicit
    /// `IS NULL` for the unused scope columns so the matching partial
    /// unique index serves it.
    fn filter<S: ConditionalStatement>(&self, stmt: &mut S, key: &str) {
        stmt.and_where(Expr::col(Kvstores::EntryKey).eq(key))
            .and_where(Expr::col(Kvstores::RuleId).eq(self.rule))
            .and_where(Expr::col(Kvstores::Perm).eq(self.perm));
        let opt = |col: Kvstores, v: Option<i64>| -> SimpleExpr {
            match v {
                Some(id) => Expr::col(col).eq(id),
                None => Expr::col(col).is_null(),
            }
        };
        stmt.and_where(opt(Kvstores::GroupId, self.group));
        stmt.and_where(opt(Kvstores::FeatureId, self.feature));
    }
}

/// A get as one statement: the rule, feature and group are resolved by
/// subqueries inside it (one round trip, docs/design.md §4.3). An unknown
/// name or group makes its subquery NULL, which matches no row: the value
/// is absent, as `KvTx::get` says.
fn get_select(ns: &Namespace, scope: Scope, key: &str) -> SelectStatement {
    let rule = Query::select()
        .column(Rules::Id)
        .from(Rules::Table)
        .and_where(Expr::col(Rules::Name).eq(ns.rule.as_str()))
        .to_owned();
    let feature = Query::select()
        .column(Features::Id)
        .from(Features::Table)
        .and_where(Expr::col(Features::Name).eq(ns.feature.as_str()))
        .to_owned();
    let mut select = Query::select();
    select
        .column(Kvstores::Value)
        .from(Kvstores::Table)
        .and_where(Expr::col(Kvstores::EntryKey).eq(key))
        .and_where(Expr::col(Kvstores::Perm).eq(scope.is_perm()))
        .and_where(Expr::col(Kvstores::RuleId).eq(Expr::SubQuery(None, Box::new(rule.into()))));
    if scope.is_local() {
        let group = group_select(ns.group);
        select.and_where(
            Expr::col(Kvstores::GroupId).eq(Expr::SubQuery(None, Box::new(group.into()))),
        );
    } else {
        select.and_where(Expr::col(Kvstores::GroupId).is_null());
    }
    if scope.is_local() && !ns.feature.is_empty() {
        select.and_where(
            Expr::col(Kvstores::FeatureId).eq(Expr::SubQuery(None, Box::new(feature.into()))),
        );
    } else {
        select.and_where(Expr::col(Kvstores::FeatureId).is_null());
    }
    select
}

struct SqlKvTx {
    tx: Box<dyn Tx>,
    ns: Namespace,
    mode: Mode,
}

impl SqlKvTx {
    /// The scope's ids; `None` when a name or the group is unknown, so the
    /// scope holds nothing. With `create`, names are inserted and an unknown
    /// group is an error.
    async fn ids(&mut self, scope: Scope, create: bool) -> Result<Option<ScopeIds>> {
        let tx = &mut *self.tx;
        let group = if scope.is_local() {
            match group_sql_id(tx, self.ns.group, create).await? {
                Some(g) => Some(g),
                None if create => {
                    return Err(Error::UnknownGroup {
                        group: self.ns.group,
                    });
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        let rule = if create {
            name_id(tx, true, &self.ns.rule).await?
        } else {
            match lookup_name(tx, true, &self.ns.rule).await? {
                Some(id) => id,
                None => return Ok(None),
            }
        };
        let feature = if scope.is_local() && !self.ns.feature.is_empty() {
            if create {
                Some(name_id(tx, false, &self.ns.feature).await?)
            } else {
                match lookup_name(tx, false, &self.ns.feature).await? {
                    Some(id) => Some(id),
                    None => return Ok(None),
                }
            }
        } else {
            None
        };
        Ok(Some(ScopeIds {
            perm: scope.is_perm(),
            rule,
            group,
            feature,
        }))
    }
}

#[async_trait]
impl KvTx for SqlKvTx {
    async fn get(&mut self, scope: Scope, key: &str) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        let select = get_select(&self.ns, scope, key);
        Ok(self
            .tx
            .query_opt(&select)
            .await?
            .map(|r| r.bytes_or_empty(0))
            .transpose()?)
    }

    async fn set(&mut self, scope: Scope, key: &str, value: &[u8]) -> Result<()> {
        check_key(key)?;
        check_value(key, value)?;
        if self.mode == Mode::View {
            return Err(Error::ReadOnly);
        }
        let Some(ids) = self.ids(scope, true).await? else {
            return Err(Error::UnknownGroup {
                group: self.ns.group,
            });
        };
        let mut update = Query::update();
        update
            .table(Kvstores::Table)
            .value(Kvstores::Value, value.to_vec());
        ids.filter(&mut update, key);
        if self.tx.exec(&update).await? == 0 {
            let insert = Query::insert()
                .into_table(Kvstores::Table)
                .columns([
                    Kvstores::Perm,
                    Kvstores::RuleId,
                    Kvstores::GroupId,
                    Kvstores::FeatureId,
                    Kvstores::EntryKey,
                    Kvstores::Value,
                ])
                .values_panic([
                    ids.perm.into(),
                    ids.rule.into(),
                    sea_query::Value::BigInt(ids.group).into(),
                    sea_query::Value::BigInt(ids.feature).into(),
                    key.into(),
                    value.to_vec().into(),
                ])
                .to_owned();
            self.tx.exec(&insert).await?;
        }
        Ok(())
    }

    async fn del(&mut self, scope: Scope, key: &str) -> Result<()> {
        check_key(key)?;
        if self.mode == Mode::View {
            return Err(Error::ReadOnly);
        }
        let Some(ids) = self.ids(scope, false).await? else {
            return Ok(());
        };
        let mut delete = Query::delete();
        delete.from_table(Kvstores::Table);
        ids.filter(&mut delete, key);
        self.tx.exec(&delete).await?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}

struct SqlPrivacyTx {
    tx: Box<dyn Tx>,
    group: SessionId,
    mode: Mode,
    gid: Option<i64>,
}

impl SqlPrivacyTx {
    async fn gid(&mut self) -> Result<i64> {
        if let Some(g) = self.gid {
            return Ok(g);
        }
        let g = group_sql_id(&mut *self.tx, self.group, self.mode == Mode::Update)
            .await?
            .ok_or(Error::UnknownGroup { group: self.group })?;
        self.gid = Some(g);
        Ok(g)
    }

    async fn lookup(
        &mut self,
        want: PrivacyPairs,
        by: PrivacyPairs,
        value: &str,
    ) -> Result<String> {
        let pair = |group: SimpleExpr| {
            Query::select()
                .column(want)
                .from(PrivacyPairs::Table)
                .and_where(Expr::col(PrivacyPairs::GroupId).eq(group))
                .and_where(Expr::col(by).eq(value))
                .to_owned()
        };
        let rows = match self.gid {
            Some(gid) => self.tx.query(&pair(gid.into())).await?,
            // A transaction that may write locks its group first (`gid`).
            None if self.mode == Mode::Update => {
                let gid = self.gid().await?;
                self.tx.query(&pair(gid.into())).await?
            }
            None => {
                // The group and the pair in one round trip.
                let d = self.tx.dialect();
                let group = group_select(self.group);
                let by_group = pair(Expr::SubQuery(None, Box::new(group.clone().into())));
                let mut answers = self
                    .tx
                    .query_batch(vec![d.build(&group), d.build(&by_group)])
                    .await?;
                let rows = answers.pop().unwrap_or_default();
                let gid = answers
                    .pop()
                    .unwrap_or_default()
                    .first()
                    .map(|r| r.i64(0))
                    .transpose()?
                    .ok_or(Error::UnknownGroup { group: self.group })?;
                self.gid = Some(gid);
                rows
            }
        };
        let row = rows.first().ok_or_else(|| Error::NoSuchKey {
            group: self.group,
            key: value.to_owned(),
        })?;
        Ok(row.text(0)?)
    }
}

#[async_trait]
impl PrivacyTx for SqlPrivacyTx {
    async fn new_pair(&mut self, real: &str, pseudo: &str) -> Result<()> {
        if self.mode == Mode::View {
            return Err(Error::ReadOnly);
        }
        check_pair(real, pseudo)?;
        let gid = self.gid().await?;
        let clashes = self
            .tx
            .query(
                &Query::select()
                    .columns([PrivacyPairs::RealVal, PrivacyPairs::PseudoVal])
                    .from(PrivacyPairs::Table)
                    .and_where(Expr::col(PrivacyPairs::GroupId).eq(gid))
                    .and_where(
                        Expr::col(PrivacyPairs::RealVal)
                            .eq(real)
                            .or(Expr::col(PrivacyPairs::PseudoVal).eq(pseudo)),
                    )
                    .to_owned(),
            )
            .await?;
        for r in &clashes {
            if r.text(0)? == real {
                return Err(Error::DuplicateRealValue {
                    group: self.group,
                    real: real.to_owned(),
                });
            }
        }
        if !clashes.is_empty() {
            return Err(Error::DuplicatePseudoValue {
                group: self.group,
                pseudo: pseudo.to_owned(),
            });
        }
        self.tx
            .exec(
                &Query::insert()
                    .into_table(PrivacyPairs::Table)
                    .columns([
                        PrivacyPairs::GroupId,
                        PrivacyPairs::RealVal,
                        PrivacyPairs::PseudoVal,
                    ])
                    .values_panic([gid.into(), real.into(), pseudo.into()])
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn pseudo_to_real(&mut self, pseudo: &str) -> Result<String> {
        check_privacy_value("pseudo", pseudo)?;
        self.lookup(PrivacyPairs::RealVal, PrivacyPairs::PseudoVal, pseudo)
            .await
    }

    async fn real_to_pseudo(&mut self, real: &str) -> Result<String> {
        check_privacy_value("real", real)?;
        self.lookup(PrivacyPairs::PseudoVal, PrivacyPairs::RealVal, real)
            .await
    }

    async fn fetch_all_pairs(&mut self) -> Result<BTreeMap<String, String>> {
        let gid = self.gid().await?;
        let rows = self
            .tx
            .query(
                &Query::select()
                    .columns([PrivacyPairs::RealVal, PrivacyPairs::PseudoVal])
                    .from(PrivacyPairs::Table)
                    .and_where(Expr::col(PrivacyPairs::GroupId).eq(gid))
                    .to_owned(),
            )
            .await?;
        rows.iter().map(|r| Ok((r.text(0)?, r.text(1)?))).collect()
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}

fn alias_of(record: &str, bytes: Vec<u8>) -> Result<SessionId> {
    let b: [u8; 4] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| invalid(record, "group", "alias is not 4 bytes"))?;
    Ok(SessionId(b))
}

store_support::migration_api! {
    /// Loads kv-store entries with their names resolved, in SQL id order;
    /// `ids` limits it to SQL ids in that inclusive range. An empty value and
    /// an absent one read the same. Shared by the listing and the migrator's
    /// read-back.
    async fn load_entries(tx: &mut dyn Tx, ids: Option<(i64, i64)>) -> Result<Vec<KvEntry>> {
        let rows = tx.query(&entries_select(ids)).await?;
        entries_of(rows)
    }
}

store_support::migration_api! {
    /// [`load_entries`] of the SQL ids in `first..=last` in two halves: the
    /// rows fetched here, the entries made from them by [`entries_of`],
    /// which the migrator's read-back runs off the executor while it
    /// fetches the next range.
    async fn fetch_entries(tx: &mut dyn Tx, first: i64, last: i64) -> Result<Vec<sqldb::Row>> {
        Ok(tx.query(&entries_select(Some((first, last)))).await?)
    }
}

store_support::migration_api! {
    /// The entries `rows` ([`fetch_entries`]) hold, in their order.
    fn entries_of(rows: Vec<sqldb::Row>) -> Result<Vec<KvEntry>> {
        rows.iter()
            .map(|row| {
                Ok(KvEntry {
                    perm: row.bool(0)?,
                    rule: row.text(1)?,
                    group: row
                        .opt_bytes(2)?
                        .map(|b| alias_of("a kv-store entry", b))
                        .transpose()?,
                    feature: row.opt_text(3)?,
                    key: row.text(4)?,
                    value: row.bytes_or_empty(5)?,
                })
            })
            .collect()
    }
}

/// The entries with SQL ids in `ids` (all without), their names resolved,
/// in SQL id order: the columns [`entries_of`] reads.
fn entries_select(ids: Option<(i64, i64)>) -> SelectStatement {
    let (k, r, g, f) = (
        Alias::new("k"),
        Alias::new("r"),
        Alias::new("g"),
        Alias::new("f"),
    );
    let mut select = Query::select();
    select
        .column((k.clone(), Kvstores::Perm))
        .column((r.clone(), Rules::Name))
        .column((g.clone(), Sessions::Alias))
        .column((f.clone(), Features::Name))
        .column((k.clone(), Kvstores::EntryKey))
        .column((k.clone(), Kvstores::Value))
        .from_as(Kvstores::Table, k.clone())
        .join_as(
            JoinType::InnerJoin,
            Rules::Table,
            r.clone(),
            Expr::col((r.clone(), Rules::Id)).equals((k.clone(), Kvstores::RuleId)),
        )
        .join_as(
            JoinType::LeftJoin,
            Sessions::Table,
            g.clone(),
            Expr::col((g.clone(), Sessions::Id)).equals((k.clone(), Kvstores::GroupId)),
        )
        .join_as(
            JoinType::LeftJoin,
            Features::Table,
            f.clone(),
            Expr::col((f.clone(), Features::Id)).equals((k.clone(), Kvstores::FeatureId)),
        )
        .order_by((k.clone(), Kvstores::Id), Order::Asc);
    if let Some((lo, hi)) = ids {
        select.and_where(Expr::col((k, Kvstores::Id)).between(lo, hi));
    }
    select
}

/// Loads every privacy pair, with its group's id.
async fn load_pairs(tx: &mut dyn Tx) -> Result<Vec<PrivacyPair>> {
    let (p, g) = (Alias::new("p"), Alias::new("g"));
    let select = Query::select()
        .column((g.clone(), Sessions::Alias))
        .column((p.clone(), PrivacyPairs::RealVal))
        .column((p.clone(), PrivacyPairs::PseudoVal))
        .from_as(PrivacyPairs::Table, p.clone())
        .join_as(
            JoinType::InnerJoin,
            Sessions::Table,
            g.clone(),
            Expr::col((g, Sessions::Id)).equals((p, PrivacyPairs::GroupId)),
        )
        .to_owned();
    let rows = tx.query(&select).await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(PrivacyPair {
                group: alias_of("a privacy pair", r.bytes(0)?)?,
                real: r.text(1)?,
                pseudo: r.text(2)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    out.sort();
    Ok(out)
}

store_support::migration_api! {
    /// The migrator's read-back of the privacy pairs it wrote: the pairs of
    /// the groups with these SQL ids, each as `(group's SQL id, real,
    /// pseudo)` as stored, ordered by group.
    ///
    /// No join with `sessions`: the migrator compares the group ids with
    /// those it resolved itself, as it does for actions. Joining made
    /// PostgreSQL hash every session for each chunk on tables loaded in the
    /// same transaction, which have no statistics yet; the range beside the
    /// list lets it use the `(group_id, …)` index instead of scanning the
    /// whole table, a scan that grew with every chunk (docs/design.md §5.7).
    async fn load_pairs_stored(
        tx: &mut dyn Tx,
        groups: &[i64],
    ) -> Result<Vec<(i64, String, String)>> {
        let (Some(lo), Some(hi)) = (groups.iter().min(), groups.iter().max()) else {
            return Ok(Vec::new());
        };
        let rows = tx
            .query(
                &Query::select()
                    .columns([
                        PrivacyPairs::GroupId,
                        PrivacyPairs::RealVal,
                        PrivacyPairs::PseudoVal,
                    ])
                    .from(PrivacyPairs::Table)
                    .and_where(Expr::col(PrivacyPairs::GroupId).between(*lo, *hi))
                    .and_where(Expr::col(PrivacyPairs::GroupId).is_in(groups.iter().copied()))
                    .order_by(PrivacyPairs::GroupId, Order::Asc)
                    .to_owned(),
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.i64(0)?, r.text(1)?, r.text(2)?)))
            .collect()
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn kv_entries(&self) -> Result<Vec<KvEntry>> {
        let mut all = self.db.read(|tx| Box::pin(load_entries(tx, None))).await?;
        all.sort();
        Ok(all)
    }

    async fn privacy_pairs(&self) -> Result<Vec<PrivacyPair>> {
        self.db.read(|tx| Box::pin(load_pairs(tx))).await
    }

    async fn begin_kv(&self, ns: Namespace, mode: Mode) -> Result<Box<dyn KvTx>> {
        check_namespace(&ns)?;
        let tx = self.db.begin(tx_mode(mode)).await?;
        Ok(Box::new(SqlKvTx { tx, ns, mode }))
    }

    async fn begin_privacy(&self, group: SessionId, mode: Mode) -> Result<Box<dyn PrivacyTx>> {
        let tx = self.db.begin(tx_mode(mode)).await?;
        Ok(Box::new(SqlPrivacyTx {
            tx,
            group,
            mode,
            gid: None,
        }))
    }

    async fn delete_temp_kv_stores(&self) -> Result<()> {
        self.db
            .write(|tx| {
                Box::pin(async move {
                    tx.exec(
                        &Query::delete()
                            .from_table(Kvstores::Table)
                            .and_where(Expr::col(Kvstores::Perm).eq(false))
                            .to_owned(),
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
    }
}
