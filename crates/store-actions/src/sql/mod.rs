//! The SQL backend: one implementation for SQLite and PostgreSQL.
//!
//! The list query is built once from the filters with sea-query: one AND-ed
//! condition per filter that is set, `ORDER BY created_at, id` in the
//! chosen direction, and `LIMIT`/`OFFSET` for the page; the count runs the
//! same conditions without the page. Each filter is followed by the listing
//! order in an index of schema step 7, so a page is read from an index in
//! order (see `tests/query_plans.rs`).

use async_trait::async_trait;
use std::sync::Arc;

use sea_query::{
    Alias, Condition, Expr, ExprTrait, JoinType, Order, Query, SelectStatement, Value,
};
use sqldb::{Db, Dialect, Row, Sql, Tx, TxExt};
use store_accounts::AccountId;
use store_accounts::sql::schema::Accounts;
use store_sessions::SessionId;
use store_sessions::sql::schema::Sessions;

use crate::{
    Action, ActionLocator, ActionPage, ActionQuery, ActionState, AddAction, Clock, Error, Result,
    Store, SystemClock, check_state,
};

pub mod schema;

use schema::Actions;

/// The actions store on a SQL database (SQLite or PostgreSQL).
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: Db,
    clock: Arc<dyn Clock>,
}

impl SqlStore {
    /// The store on `db`, whose schema must be applied.
    pub fn new(db: Db) -> SqlStore {
        SqlStore {
            db,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same store, recording actions at `clock`'s time.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> SqlStore {
        self.clock = clock;
        self
    }

    /// The database's plan for `query`'s page, one line per plan row
    /// (SQLite `EXPLAIN QUERY PLAN`, PostgreSQL `EXPLAIN`): to check which
    /// index serves a filter. A deep page's plan holds both its statements'
    /// (the seek to its first row, then the page).
    ///
    /// PostgreSQL's planner picks plans from table statistics, and scans a
    /// small table whatever indexes it has; so there the plan is taken with
    /// sequential scans and sorts priced out (`enable_seqscan`,
    /// `enable_sort` off, for this transaction only), which shows whether
    /// an index can serve the page in order. A plan that still scans or
    /// sorts has no such index.
    pub async fn query_plan(&self, query: &ActionQuery) -> Result<Vec<String>> {
        let query = query.clone();
        self.db
            .read(|tx| {
                let query = query.clone();
                Box::pin(async move {
                    if tx.dialect() == Dialect::Postgres {
                        tx.execute_script(
                            "SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off",
                        )
                        .await?;
                    }
                    let ids = resolve_filter(tx, &query).await?;
                    // The statements `list` runs for this page.
                    let statements = if query.offset >= SEEK_FROM_OFFSET {
                        let any_position = (chrono::Utc::now(), 0);
                        vec![
                            offset_select(&query, ids),
                            page_from(&query, ids, any_position),
                        ]
                    } else {
                        vec![page_select(&query, ids)]
                    };
                    let (prefix, column) = match tx.dialect() {
                        Dialect::Sqlite => ("EXPLAIN QUERY PLAN ", 3),
                        Dialect::Postgres => ("EXPLAIN ", 0),
                    };
                    let mut lines = Vec::new();
                    for statement in statements {
                        let sql = tx.dialect().build(&statement);
                        let explain = Sql {
                            text: format!("{prefix}{}", sql.text),
                            values: sql.values,
                        };
                        for r in tx.query_sql(explain).await? {
                            lines.push(r.text(column)?);
                        }
                    }
                    Ok(lines)
                })
            })
            .await
    }
}

fn a(col: Actions) -> (Alias, Actions) {
    (Alias::new("a"), col)
}

fn empty_as_null(s: &str) -> Value {
    Value::String((!s.is_empty()).then(|| s.to_owned()))
}

/// The columns [`action_from_row`] reads, joined to the session's and the
/// account's aliases.
fn select_actions() -> SelectStatement {
    action_columns()
        .expr(Expr::col((Alias::new("s"), Sessions::Alias)))
        .expr(Expr::col((Alias::new("ac"), Accounts::Alias)))
        .join_as(
            JoinType::LeftJoin,
            Sessions::Table,
            Alias::new("s"),
            Expr::col((Alias::new("s"), Sessions::Id)).equals(a(Actions::SessionId)),
        )
        .join_as(
            JoinType::LeftJoin,
            Accounts::Table,
            Alias::new("ac"),
            Expr::col((Alias::new("ac"), Accounts::Id)).equals(a(Actions::AccountId)),
        )
        .to_owned()
}

/// The action's own columns (0 to 11) from `actions a`, without its links.
fn action_columns() -> SelectStatement {
    Query::select()
        .columns([
            a(Actions::Id),
            a(Actions::MacaroonIdentifier),
            a(Actions::ActorName),
            a(Actions::FeatureName),
            a(Actions::ActionTrigger),
            a(Actions::Intent),
            a(Actions::StructuredJsonData),
            a(Actions::RpcMethod),
            a(Actions::RpcParamsJson),
            a(Actions::CreatedAt),
            a(Actions::ActionState),
            a(Actions::ErrorReason),
        ])
        .from_as(Actions::Table, Alias::new("a"))
        .to_owned()
}

/// An action from a row of `select_actions`.
pub fn action_from_row(r: &Row) -> Result<Action> {
    let locator = ActionLocator::from_index(r.i64(0)? as u64);
    let session = match r.opt_bytes(12)? {
        None => None,
        Some(b) => Some(SessionId(b.as_slice().try_into().map_err(|_| {
            Error::InvalidInput {
                record: format!("action {locator}"),
                field: "session_id",
                reason: "alias is not 4 bytes".into(),
            }
        })?)),
    };
    let account = r.opt_i64(13)?.map(AccountId::from_alias);
    action_with_links(r, session, account)
}

/// An action from columns 0 to 11 of a row ([`action_columns`]), with
/// these links.
fn action_with_links(
    r: &Row,
    session: Option<SessionId>,
    account: Option<AccountId>,
) -> Result<Action> {
    let locator = ActionLocator::from_index(r.i64(0)? as u64);
    let rec = || format!("action {locator}");
    let root = match r.opt_bytes(1)? {
        None => None,
        Some(b) if b.len() == 8 => Some(u64::from_be_bytes(
            b.as_slice().try_into().unwrap_or_default(),
        )),
        Some(b) if b.len() == 4 => Some(u64::from(u32::from_be_bytes(
            b.as_slice().try_into().unwrap_or_default(),
        ))),
        Some(b) => {
            return Err(Error::InvalidInput {
                record: rec(),
                field: "macaroon_identifier",
                reason: format!("{} bytes", b.len()),
            });
        }
    };
    let json = String::from_utf8(r.bytes_or_empty(6)?).map_err(|_| Error::InvalidInput {
        record: rec(),
        field: "structured_json_data",
        reason: "not UTF-8".into(),
    })?;
    let code = r.i64(10)?;
    Ok(Action {
        locator,
        request: AddAction {
            macaroon_root_key_id: root,
            session_id: session,
            account_id: account,
            actor_name: r.opt_text(2)?.unwrap_or_default(),
            feature_name: r.opt_text(3)?.unwrap_or_default(),
            trigger: r.opt_text(4)?.unwrap_or_default(),
            intent: r.opt_text(5)?.unwrap_or_default(),
            structured_json_data: json,
            rpc_method: r.text(7)?,
            rpc_params_json: r.bytes_or_empty(8)?,
        },
        attempted_at: r.time(9)?,
        state: ActionState::from_code(code).ok_or_else(|| Error::InvalidInput {
            record: rec(),
            field: "action_state",
            reason: format!("unknown state {code}"),
        })?,
        error_reason: r.opt_text(11)?.unwrap_or_default(),
    })
}

store_support::migration_api! {
    /// The `actions` columns [`action_values`] fills, `id` first.
    const ACTION_COLUMNS: [Actions; 14] = [
        Actions::Id,
        Actions::SessionId,
        Actions::AccountId,
        Actions::MacaroonIdentifier,
        Actions::ActorName,
        Actions::FeatureName,
        Actions::ActionTrigger,
        Actions::Intent,
        Actions::StructuredJsonData,
        Actions::RpcMethod,
        Actions::RpcParamsJson,
        Actions::CreatedAt,
        Actions::ActionState,
        Actions::ErrorReason,
    ];
}

store_support::migration_api! {
    /// The column values of an action for [`ACTION_COLUMNS`], given the SQL ids
    /// of its session and account: the one rule for how an action becomes a
    /// row, used by [`action_values`] and by the migration's bulk load.
    fn action_row(x: &Action, session: Option<i64>, account: Option<i64>) -> Vec<Value> {
        let r = &x.request;
        vec![
            (x.locator.index() as i64).into(),
            Value::BigInt(session),
            Value::BigInt(account),
            Value::Bytes(r.macaroon_root_key_id.map(|k| k.to_be_bytes().to_vec())),
            empty_as_null(&r.actor_name),
            empty_as_null(&r.feature_name),
            empty_as_null(&r.trigger),
            empty_as_null(&r.intent),
            r.structured_json_data.as_bytes().to_vec().into(),
            r.rpc_method.clone().into(),
            r.rpc_params_json.clone().into(),
            x.attempted_at.into(),
            i64::from(x.state.code()).into(),
            empty_as_null(&x.error_reason),
        ]
    }
}

store_support::migration_api! {
    /// [`action_row`] as expressions for an `INSERT`.
    fn action_values(
        x: &Action,
        session: Option<i64>,
        account: Option<i64>,
    ) -> Vec<sea_query::SimpleExpr> {
        action_row(x, session, account)
            .into_iter()
            .map(Into::into)
            .collect()
    }
}

/// The SQL ids the session and group filters name.
#[derive(Debug, Clone, Copy, Default)]
struct FilterIds {
    session: Option<i64>,
    group: Option<i64>,
}

async fn resolve_filter(tx: &mut dyn Tx, q: &ActionQuery) -> Result<FilterIds> {
    let mut ids = FilterIds::default();
    if let Some(s) = q.filter.session_id {
        let row = tx
            .query_opt(
                &Query::select()
                    .column(Sessions::Id)
                    .from(Sessions::Table)
                    .and_where(Expr::col(Sessions::Alias).eq(s.0.to_vec()))
                    .to_owned(),
            )
            .await?
            .ok_or(Error::SessionNotFound { id: s })?;
        ids.session = Some(row.i64(0)?);
    }
    if let Some(g) = q.filter.group_id {
        let row = tx
            .query_opt(
                &Query::select()
                    .column(Sessions::Id)
                    .from(Sessions::Table)
                    .and_where(Expr::col(Sessions::Alias).eq(g.0.to_vec()))
                    .and_where(Expr::col(Sessions::GroupId).equals(Sessions::Id))
                    .to_owned(),
            )
            .await?
            .ok_or(Error::UnknownGroup { group: g })?;
        ids.group = Some(row.i64(0)?);
    }
    Ok(ids)
}

/// One AND-ed condition per filter that is set (an empty string does not
/// filter). Times are bound as UTC.
fn condition(q: &ActionQuery, ids: FilterIds) -> Condition {
    let f = &q.filter;
    let mut c = Condition::all();
    if let Some(id) = ids.session {
        c = c.add(Expr::col(a(Actions::SessionId)).eq(id));
    }
    if let Some(g) = ids.group {
        c = c.add(
            Expr::col(a(Actions::SessionId)).in_subquery(
                Query::select()
                    .column(Sessions::Id)
                    .from(Sessions::Table)
                    .and_where(Expr::col(Sessions::GroupId).eq(g))
                    .to_owned(),
            ),
        );
    }
    for (col, want) in [
        (Actions::FeatureName, &f.feature_name),
        (Actions::ActorName, &f.actor_name),
        (Actions::RpcMethod, &f.rpc_method),
    ] {
        if let Some(v) = want.as_deref().filter(|v| !v.is_empty()) {
            c = c.add(Expr::col(a(col)).eq(v));
        }
    }
    if let Some(s) = f.state {
        c = c.add(Expr::col(a(Actions::ActionState)).eq(i64::from(s.code())));
    }
    if let Some(t) = f.start_time {
        c = c.add(Expr::col(a(Actions::CreatedAt)).gte(t));
    }
    if let Some(t) = f.end_time {
        c = c.add(Expr::col(a(Actions::CreatedAt)).lte(t));
    }
    c
}

fn page_select(q: &ActionQuery, ids: FilterIds) -> SelectStatement {
    let order = if q.reversed { Order::Desc } else { Order::Asc };
    let mut select = select_actions();
    select
        .cond_where(condition(q, ids))
        .order_by(a(Actions::CreatedAt), order.clone())
        .order_by(a(Actions::Id), order);
    if q.max > 0 {
        select.limit(q.max);
    } else if q.offset > 0 {
        // SQLite accepts OFFSET only after a LIMIT.
        select.limit(i64::MAX as u64);
    }
    if q.offset > 0 {
        select.offset(q.offset);
    }
    select
}

/// Offsets from which a page seeks to its first row (docs/design.md §4.3).
const SEEK_FROM_OFFSET: u64 = 1_000;

/// The select of the listing position (time, locator) of the match at
/// `q.offset`: the ordering columns only, so the filter's index serves it.
fn offset_select(q: &ActionQuery, ids: FilterIds) -> SelectStatement {
    let order = if q.reversed { Order::Desc } else { Order::Asc };
    Query::select()
        .columns([a(Actions::CreatedAt), a(Actions::Id)])
        .from_as(Actions::Table, Alias::new("a"))
        .cond_where(condition(q, ids))
        .order_by(a(Actions::CreatedAt), order.clone())
        .order_by(a(Actions::Id), order)
        .limit(1)
        .offset(q.offset)
        .to_owned()
}

/// The listing position of the match at `q.offset`; `None` when there are
/// fewer matches.
async fn offset_row(
    tx: &mut dyn Tx,
    q: &ActionQuery,
    ids: FilterIds,
) -> Result<Option<(chrono::DateTime<chrono::Utc>, i64)>> {
    match tx.query_opt(&offset_select(q, ids)).await? {
        Some(r) => Ok(Some((r.time(0)?, r.i64(1)?))),
        None => Ok(None),
    }
}

/// The page that starts at listing position `from` (inclusive).
fn page_from(
    q: &ActionQuery,
    ids: FilterIds,
    from: (chrono::DateTime<chrono::Utc>, i64),
) -> SelectStatement {
    let order = if q.reversed { Order::Desc } else { Order::Asc };
    let position = Expr::tuple([Expr::col(a(Actions::CreatedAt)), Expr::col(a(Actions::Id))]);
    let start = Expr::tuple([Expr::val(from.0), Expr::val(from.1)]);
    let after = if q.reversed {
        position.lte(start)
    } else {
        position.gte(start)
    };
    let mut select = select_actions();
    select
        .cond_where(condition(q, ids).add(after))
        .order_by(a(Actions::CreatedAt), order.clone())
        .order_by(a(Actions::Id), order);
    if q.max > 0 {
        select.limit(q.max);
    }
    select
}

async fn list(tx: &mut dyn Tx, q: &ActionQuery) -> Result<ActionPage> {
    let ids = resolve_filter(tx, q).await?;
    // A deep page steps over its offset in the filter's index, reading only
    // the two ordering columns, then reads its rows from there: stepping
    // over full rows (their session and account joined) cost about 2 µs a
    // row on SQLite and 4 on PostgreSQL.
    let rows = if q.offset >= SEEK_FROM_OFFSET {
        match offset_row(tx, q, ids).await? {
            Some(from) => tx.query(&page_from(q, ids, from)).await?,
            None => Vec::new(),
        }
    } else {
        tx.query(&page_select(q, ids)).await?
    };
    let actions = rows
        .iter()
        .map(action_from_row)
        .collect::<Result<Vec<_>>>()?;
    let total_count = if q.count_all {
        let n = tx
            .query_one(
                &Query::select()
                    .expr(Expr::col(a(Actions::Id)).count())
                    .from_as(Actions::Table, Alias::new("a"))
                    .cond_where(condition(q, ids))
                    .to_owned(),
            )
            .await?
            .i64(0)?;
        n as u64
    } else {
        0
    };
    Ok(ActionPage {
        last_index: actions.last().map_or(0, |x| x.locator.index()),
        actions,
        total_count,
    })
}

async fn load(tx: &mut dyn Tx, locator: ActionLocator) -> Result<Action> {
    let row = tx
        .query_opt(
            &select_actions()
                .and_where(Expr::col(a(Actions::Id)).eq(locator.index() as i64))
                .to_owned(),
        )
        .await?
        .ok_or(Error::NotFound { locator })?;
    action_from_row(&row)
}

#[async_trait]
impl Store for SqlStore {
    async fn add_action(&self, request: AddAction) -> Result<ActionLocator> {
        request.check()?;
        let now = sqldb::time::truncate_micros(self.clock.now());
        self.db
            .write(|tx| {
                let request = request.clone();
                Box::pin(async move {
                    // The linked rows are read locked against deletion (on
                    // PostgreSQL, `FOR KEY SHARE`; SQLite's write
                    // transaction is exclusive): a session or account
                    // deleted meanwhile is then not found, never a foreign
                    // key error at the insert.
                    let session = match request.session_id {
                        None => None,
                        Some(s) => Some(
                            tx.query_opt(
                                &Query::select()
                                    .column(Sessions::Id)
                                    .from(Sessions::Table)
                                    .and_where(Expr::col(Sessions::Alias).eq(s.0.to_vec()))
                                    .lock(sea_query::LockType::KeyShare)
                                    .to_owned(),
                            )
                            .await?
                            .ok_or(Error::SessionNotFound { id: s })?
                            .i64(0)?,
                        ),
                    };
                    let account = match request.account_id {
                        None => None,
                        Some(id) => Some(
                            tx.query_opt(
                                &Query::select()
                                    .column(Accounts::Id)
                                    .from(Accounts::Table)
                                    .and_where(Expr::col(Accounts::Alias).eq(id.to_alias()))
                                    .lock(sea_query::LockType::KeyShare)
                                    .to_owned(),
                            )
                            .await?
                            .ok_or(Error::AccountNotFound { id })?
                            .i64(0)?,
                        ),
                    };
                    let action = Action {
                        locator: ActionLocator::from_index(0),
                        request,
                        attempted_at: now,
                        state: ActionState::Init,
                        error_reason: String::new(),
                    };
                    // Every column but the id, which the database assigns.
                    let insert = Query::insert()
                        .into_table(Actions::Table)
                        .columns(ACTION_COLUMNS[1..].iter().copied())
                        .values_panic(action_values(&action, session, account).into_iter().skip(1))
                        .returning_col(Actions::Id)
                        .to_owned();
                    let id = tx.query_one(&insert).await?.i64(0)?;
                    Ok(ActionLocator::from_index(id as u64))
                })
            })
            .await
    }

    async fn action(&self, locator: ActionLocator) -> Result<Action> {
        self.db.read(|tx| Box::pin(load(tx, locator))).await
    }

    async fn set_action_state(
        &self,
        locator: ActionLocator,
        state: ActionState,
        error_reason: &str,
    ) -> Result<()> {
        check_state(locator, state, error_reason)?;
        let reason = empty_as_null(error_reason);
        self.db
            .write(|tx| {
                let reason = reason.clone();
                Box::pin(async move {
                    let n = tx
                        .exec(
                            &Query::update()
                                .table(Actions::Table)
                                .value(Actions::ActionState, i64::from(state.code()))
                                .value(Actions::ErrorReason, reason)
                                .and_where(Expr::col(Actions::Id).eq(locator.index() as i64))
                                .to_owned(),
                        )
                        .await?;
                    if n == 0 {
                        return Err(Error::NotFound { locator });
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn list_actions(&self, query: &ActionQuery) -> Result<ActionPage> {
        query.filter.check()?;
        let query = query.clone();
        self.db
            .read(|tx| {
                let query = query.clone();
                Box::pin(async move { list(tx, &query).await })
            })
            .await
    }
}

store_support::migration_api! {
    /// The migrator's read-back of a chunk it wrote: the actions with these
    /// SQL ids, in id order, each without its links but with the SQL ids of
    /// its session and account as stored. No join: the migrator compares
    /// the ids with those it wrote (it resolved them itself), which spares
    /// the two lookups per row that turning ids into aliases costs.
    async fn load_ids_stored(
        tx: &mut dyn Tx,
        ids: &[i64],
    ) -> Result<Vec<(Action, Option<i64>, Option<i64>)>> {
        load_stored(
            tx,
            stored_select()
                .and_where(Expr::col(a(Actions::Id)).is_in(ids.iter().copied()))
                .order_by(a(Actions::Id), Order::Asc),
        )
        .await
    }
}

store_support::migration_api! {
    /// The migrator's read of the whole table after a copy, with
    /// [`sqldb::scan::Scan`] (its first column is `id`, the key it pages
    /// along on SQLite): each row as [`load_ids_stored`] reads it, decoded
    /// by [`stored_from_row`].
    fn stored_select() -> SelectStatement {
        action_columns()
            .column(a(Actions::SessionId))
            .column(a(Actions::AccountId))
            .to_owned()
    }
}

store_support::migration_api! {
    /// An action of a [`stored_select`] row, without its links, and the
    /// SQL ids of its session and account as stored. Errors: a row that
    /// does not decode, naming the action and the field.
    fn stored_from_row(r: &Row) -> Result<(Action, Option<i64>, Option<i64>)> {
        Ok((action_with_links(r, None, None)?, r.opt_i64(12)?, r.opt_i64(13)?))
    }
}

async fn load_stored(
    tx: &mut dyn Tx,
    select: &SelectStatement,
) -> Result<Vec<(Action, Option<i64>, Option<i64>)>> {
    let rows = tx.query(select).await?;
    rows.iter().map(stored_from_row).collect()
}

/// Loads the actions with SQL ids in `first..=last`, in id order.
pub async fn load_range(tx: &mut dyn Tx, first: i64, last: i64) -> Result<Vec<Action>> {
    let rows = tx
        .query(
            &select_actions()
                .and_where(Expr::col(a(Actions::Id)).between(first, last))
                .order_by(a(Actions::Id), Order::Asc)
                .to_owned(),
        )
        .await?;
    rows.iter().map(action_from_row).collect()
}
