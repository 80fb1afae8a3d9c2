//! The SQL backend: one implementation for SQLite and PostgreSQL.
//!
//! A session is a `sessions` row plus rows in four child tables (recipe
//! permissions and caveats with their positions, feature configs, privacy
//! flags). Reading any set of sessions takes five queries whatever its size:
//! the rows (joined to their group's and account's aliases), then each child
//! table for the same set, grouped in memory.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use sea_query::{
    Alias, Condition, Expr, ExprTrait, JoinType, LockType, Order, Query, SelectStatement, Value,
};
use sqldb::{Db, Row, Tx, TxExt};
use store_accounts::AccountId;
use store_accounts::sql::schema::Accounts;

use crate::types::{
    Caveat, MacaroonRecipe, NewSession, Permission, PrivacyFlag, PrivacyFlags, PublicKey, Secret,
    Session, SessionId, SessionState, SessionType,
};
use crate::{
    Error, Result, Store, build_session, generate_keys, invalid, not_found_id, not_found_key,
    revoked_at_for,
};

pub mod schema;

use schema::{
    SessionFeatureConfigs, SessionMacaroonCaveats, SessionMacaroonPermissions, SessionPrivacyFlags,
    Sessions,
};

/// The sessions store on a SQL database (SQLite or PostgreSQL).
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

fn fixed<const N: usize>(record: &str, field: &'static str, bytes: Vec<u8>) -> Result<[u8; N]> {
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| invalid(record, field, format!("{len} bytes, expected {N}")))
}

fn s(col: Sessions) -> (Alias, Sessions) {
    (Alias::new("s"), col)
}

/// The session columns in the order [`session_from_row`] reads them,
/// followed by the group's and the account's aliases.
fn select_sessions() -> SelectStatement {
    // The group's and the account's aliases are scalar subqueries on their
    // primary keys rather than joins: a read of a range of sessions (the
    // migration reads them back a chunk at a time, before the tables have
    // statistics) then costs a key lookup per session, where PostgreSQL
    // planned the joins as a hash of every account or a merge along every
    // session, per range (17 ms a range of 512 at scale L, against 3).
    let group = Query::select()
        .column((Alias::new("g"), Sessions::Alias))
        .from_as(Sessions::Table, Alias::new("g"))
        .and_where(
            Expr::col((Alias::new("g"), Sessions::Id)).equals((Alias::new("s"), Sessions::GroupId)),
        )
        .to_owned();
    let account = Query::select()
        .column((Alias::new("a"), Accounts::Alias))
        .from_as(Accounts::Table, Alias::new("a"))
        .and_where(
            Expr::col((Alias::new("a"), Accounts::Id))
                .equals((Alias::new("s"), Sessions::AccountId)),
        )
        .to_owned();
    Query::select()
        .columns([
            s(Sessions::Id),
            s(Sessions::Alias),
            s(Sessions::Label),
            s(Sessions::State),
            s(Sessions::Type),
            s(Sessions::Expiry),
            s(Sessions::CreatedAt),
            s(Sessions::RevokedAt),
            s(Sessions::ServerAddress),
            s(Sessions::DevServer),
            s(Sessions::MacaroonRootKey),
            s(Sessions::PairingSecret),
            s(Sessions::LocalPrivateKey),
            s(Sessions::LocalPublicKey),
            s(Sessions::RemotePublicKey),
            s(Sessions::Privacy),
        ])
        .expr(Expr::from(group))
        .expr(Expr::from(account))
        .from_as(Sessions::Table, Alias::new("s"))
        .to_owned()
}

fn session_from_row(r: &Row) -> Result<(i64, Session)> {
    let id = SessionId(fixed::<4>("a session", "alias", r.bytes(1)?)?);
    let rec = format!("session {id}");
    let state = r.i64(3)?;
    let kind = r.i64(4)?;
    let remote = r.opt_bytes(14)?.filter(|b| !b.is_empty());
    let group = r
        .opt_bytes(16)?
        .ok_or_else(|| invalid(&rec, "group_id", "no group"))?;
    Ok((
        r.i64(0)?,
        Session {
            id,
            label: r.text(2)?,
            state: SessionState::from_code(state)
                .ok_or_else(|| invalid(&rec, "state", format!("unknown state {state}")))?,
            session_type: SessionType::from_code(kind)
                .ok_or_else(|| invalid(&rec, "type", format!("unknown type {kind}")))?,
            expiry: r.time(5)?,
            created_at: r.time(6)?,
            revoked_at: r.opt_time(7)?,
            server_addr: r.text(8)?,
            dev_server: r.bool(9)?,
            macaroon_root_key: r.i64(10)? as u64,
            macaroon_recipe: None,
            pairing_secret: Secret(fixed::<14>(&rec, "pairing_secret", r.bytes(11)?)?),
            local_private_key: Secret(fixed::<32>(&rec, "local_private_key", r.bytes(12)?)?),
            local_public_key: fixed::<33>(&rec, "local_public_key", r.bytes(13)?)?,
            remote_public_key: remote
                .map(|k| fixed::<33>(&rec, "remote_public_key", k))
                .transpose()?,
            feature_config: None,
            with_privacy_mapper: r.bool(15)?,
            privacy_flags: PrivacyFlags::EMPTY,
            group_id: SessionId(fixed::<4>(&rec, "group_id", group)?),
            account_id: r.opt_i64(17)?.map(AccountId::from_alias),
        },
    ))
}

/// Loads the sessions matching `filter` (a condition on the `s` alias of
/// `sessions`, or all), with every child row, in five queries sent as one
/// batch (one round trip on PostgreSQL); ordered by creation time, then
/// SQL id.
///
/// Shared by the store's reads.
pub async fn load_sessions(tx: &mut dyn Tx, filter: Option<Condition>) -> Result<Vec<Session>> {
    load(tx, filter.map_or(Scope::All, Scope::Matching)).await
}

store_support::migration_api! {
    /// Loads the sessions with SQL ids in `first..=last`, as [`load_sessions`]
    /// does: the migrator's read-back. The child rows are selected by the same
    /// id range, an index range on `(session_id, …)` whatever the tables'
    /// statistics say (during a load they are an empty table's).
    async fn load_session_ids(tx: &mut dyn Tx, first: i64, last: i64) -> Result<Vec<Session>> {
        load(tx, Scope::Ids(first, last)).await
    }
}

store_support::migration_api! {
    /// [`load_session_ids`] in two halves: the rows fetched here, the
    /// sessions made from them by [`sessions_of`], which the migrator's
    /// read-back runs off the executor while it fetches the next range.
    async fn fetch_session_ids(tx: &mut dyn Tx, first: i64, last: i64) -> Result<SessionRows> {
        fetch(tx, Scope::Ids(first, last)).await
    }
}

store_support::migration_api! {
    /// The rows of some sessions and of their permissions, caveats, feature
    /// configs and privacy flags, as fetched ([`fetch_session_ids`]).
    struct SessionRows {
        sessions: Vec<Row>,
        perms: Vec<Row>,
        caveats: Vec<Row>,
        configs: Vec<Row>,
        flags: Vec<Row>,
    }
}

/// Which sessions a load reads.
enum Scope {
    All,
    /// A condition on the `s` alias of `sessions`.
    Matching(Condition),
    /// SQL ids in an inclusive range.
    Ids(i64, i64),
}

impl Scope {
    fn on_sessions(&self) -> Option<Condition> {
        match self {
            Scope::All => None,
            Scope::Matching(c) => Some(c.clone()),
            Scope::Ids(lo, hi) => {
                Some(Condition::all().add(Expr::col(s(Sessions::Id)).between(*lo, *hi)))
            }
        }
    }

    /// The condition on a child table's `session_id`: the children of
    /// exactly the sessions the load reads.
    fn on_children(&self) -> Option<sea_query::SimpleExpr> {
        let col = Alias::new("session_id");
        match self {
            Scope::All => None,
            Scope::Matching(c) => Some(
                Expr::col(col).in_subquery(
                    Query::select()
                        .column(s(Sessions::Id))
                        .from_as(Sessions::Table, Alias::new("s"))
                        .cond_where(c.clone())
                        .to_owned(),
                ),
            ),
            Scope::Ids(lo, hi) => Some(Expr::col(col).between(*lo, *hi)),
        }
    }
}

async fn load(tx: &mut dyn Tx, scope: Scope) -> Result<Vec<Session>> {
    sessions_of(fetch(tx, scope).await?)
}

/// The rows of the sessions `scope` selects and of their children, in
/// five queries sent as one batch.
async fn fetch(tx: &mut dyn Tx, scope: Scope) -> Result<SessionRows> {
    let mut select = select_sessions();
    if let Some(c) = scope.on_sessions() {
        select.cond_where(c);
    }
    select
        .order_by(s(Sessions::CreatedAt), Order::Asc)
        .order_by(s(Sessions::Id), Order::Asc);
    let mut perms = Query::select();
    perms
        .columns([
            SessionMacaroonPermissions::SessionId,
            SessionMacaroonPermissions::Entity,
            SessionMacaroonPermissions::Action,
        ])
        .from(SessionMacaroonPermissions::Table)
        .order_by(SessionMacaroonPermissions::SessionId, Order::Asc)
        .order_by(SessionMacaroonPermissions::Position, Order::Asc);
    let mut caveats = Query::select();
    caveats
        .columns([
            SessionMacaroonCaveats::SessionId,
            SessionMacaroonCaveats::CaveatId,
            SessionMacaroonCaveats::VerificationId,
            SessionMacaroonCaveats::Location,
        ])
        .from(SessionMacaroonCaveats::Table)
        .order_by(SessionMacaroonCaveats::SessionId, Order::Asc)
        .order_by(SessionMacaroonCaveats::Position, Order::Asc);
    let mut configs = Query::select();
    configs
        .columns([
            SessionFeatureConfigs::SessionId,
            SessionFeatureConfigs::FeatureName,
            SessionFeatureConfigs::Config,
        ])
        .from(SessionFeatureConfigs::Table);
    let mut flags = Query::select();
    flags
        .columns([SessionPrivacyFlags::SessionId, SessionPrivacyFlags::Flag])
        .from(SessionPrivacyFlags::Table);
    for child in [&mut perms, &mut caveats, &mut configs, &mut flags] {
        if let Some(e) = scope.on_children() {
            child.and_where(e);
        }
    }
    let d = tx.dialect();
    let batch = vec![
        d.build(&select),
        d.build(&perms),
        d.build(&caveats),
        d.build(&configs),
        d.build(&flags),
    ];
    let Ok([rows, perms, caveats, configs, flags]) =
        <[Vec<sqldb::Row>; 5]>::try_from(tx.query_batch(batch).await?)
    else {
        return Err(sqldb::DbError::new(
            d.name(),
            sqldb::ErrorKind::Decode,
            "a batch of five queries did not return five answers",
        )
        .into());
    };
    Ok(SessionRows {
        sessions: rows,
        perms,
        caveats,
        configs,
        flags,
    })
}

store_support::migration_api! {
    /// The sessions `rows` hold, in the order they were selected, as
    /// [`load_session_ids`] returns them.
    fn sessions_of(rows: SessionRows) -> Result<Vec<Session>> {
        let SessionRows {
            sessions: rows,
            perms,
            caveats,
            configs,
            flags,
        } = rows;
        let mut sessions = Vec::with_capacity(rows.len());
        let mut by_sql_id: HashMap<i64, usize> = HashMap::with_capacity(rows.len());
        for r in &rows {
            let (sql_id, session) = session_from_row(r)?;
            by_sql_id.insert(sql_id, sessions.len());
            sessions.push(session);
        }
        for r in &perms {
            let Some(&i) = by_sql_id.get(&r.i64(0)?) else {
                continue;
            };
            let recipe = sessions[i]
                .macaroon_recipe
                .get_or_insert_with(MacaroonRecipe::default);
            recipe.permissions.push(Permission {
                entity: r.text(1)?,
                action: r.text(2)?,
            });
        }
        for r in &caveats {
            let Some(&i) = by_sql_id.get(&r.i64(0)?) else {
                continue;
            };
            let recipe = sessions[i]
                .macaroon_recipe
                .get_or_insert_with(MacaroonRecipe::default);
            recipe.caveats.push(Caveat {
                id: r.bytes(1)?,
                verification_id: r.opt_bytes(2)?,
                location: r.opt_text(3)?.unwrap_or_default(),
            });
        }
        for r in &configs {
            let Some(&i) = by_sql_id.get(&r.i64(0)?) else {
                continue;
            };
            sessions[i]
                .feature_config
                .get_or_insert_with(BTreeMap::new)
                .insert(r.text(1)?, r.bytes_or_empty(2)?);
        }
        for r in &flags {
            let Some(&i) = by_sql_id.get(&r.i64(0)?) else {
                continue;
            };
            let bit = r.i64(1)?;
            let flag = u8::try_from(bit)
                .ok()
                .and_then(|b| PrivacyFlag::ALL.get(usize::from(b)).copied())
                .ok_or(Error::UnknownPrivacyFlag { bits: bit as u64 })?;
            let cur = sessions[i].privacy_flags;
            sessions[i].privacy_flags = PrivacyFlags::of(cur.iter().chain([flag]));
        }
        Ok(sessions)
    }
}

/// Rows per multi-row INSERT: well under both engines' parameter limits.
const ROWS_PER_INSERT: usize = 1000;

/// Rows at which a bulk append beats a multi-row `INSERT`: below it one
/// statement is one round trip, above it `COPY` (PostgreSQL) or a prepared
/// insert per row (SQLite) wins.
const BULK_ROWS: usize = 64;

/// Inserts `rows` into `columns` of `table`: with one bulk append from
/// [`BULK_ROWS`] rows, otherwise in multi-row `INSERT`s of at most
/// [`ROWS_PER_INSERT`] rows.
async fn insert_rows<I: sea_query::Iden + Copy>(
    tx: &mut dyn Tx,
    table: impl sea_query::Iden + Copy,
    columns: &[I],
    rows: Vec<Vec<Value>>,
) -> Result<()> {
    if rows.len() >= BULK_ROWS {
        sqldb::append(tx, table, columns.iter().copied(), rows).await?;
        return Ok(());
    }
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut insert = Query::insert();
        insert.into_table(table).columns(columns.iter().copied());
        for r in chunk {
            insert.values_panic(r.iter().cloned().map(Into::<sea_query::SimpleExpr>::into));
        }
        tx.exec(&insert).await?;
    }
    Ok(())
}

store_support::migration_api! {
    /// Inserts the child rows (recipe, feature configs, privacy flags) of the
    /// given sessions, each paired with its SQL id: a few multi-row statements
    /// per table, however many sessions.
    async fn insert_children(tx: &mut dyn Tx, sessions: &[(i64, &Session)]) -> Result<()> {
        let (mut perms, mut caveats, mut configs, mut flags) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (sql_id, s) in sessions {
            let sql_id = *sql_id;
            if let Some(recipe) = &s.macaroon_recipe {
                for (pos, p) in recipe.permissions.iter().enumerate() {
                    perms.push(vec![
                        sql_id.into(),
                        p.entity.clone().into(),
                        p.action.clone().into(),
                        (pos as i64).into(),
                    ]);
                }
                for (pos, c) in recipe.caveats.iter().enumerate() {
                    let location = (!c.location.is_empty()).then(|| c.location.clone());
                    caveats.push(vec![
                        sql_id.into(),
                        c.id.clone().into(),
                        Value::Bytes(c.verification_id.clone()),
                        Value::String(location),
                        (pos as i64).into(),
                    ]);
                }
            }
            for (name, bytes) in s.feature_config.iter().flatten() {
                configs.push(vec![
                    sql_id.into(),
                    name.clone().into(),
                    bytes.clone().into(),
                ]);
            }
            for f in s.privacy_flags.iter() {
                flags.push(vec![sql_id.into(), i64::from(f.bit()).into()]);
            }
        }
        insert_rows(
            tx,
            SessionMacaroonPermissions::Table,
            &[
                SessionMacaroonPermissions::SessionId,
                SessionMacaroonPermissions::Entity,
                SessionMacaroonPermissions::Action,
                SessionMacaroonPermissions::Position,
            ],
            perms,
        )
        .await?;
        insert_rows(
            tx,
            SessionMacaroonCaveats::Table,
            &[
                SessionMacaroonCaveats::SessionId,
                SessionMacaroonCaveats::CaveatId,
                SessionMacaroonCaveats::VerificationId,
                SessionMacaroonCaveats::Location,
                SessionMacaroonCaveats::Position,
            ],
            caveats,
        )
        .await?;
        insert_rows(
            tx,
            SessionFeatureConfigs::Table,
            &[
                SessionFeatureConfigs::SessionId,
                SessionFeatureConfigs::FeatureName,
                SessionFeatureConfigs::Config,
            ],
            configs,
        )
        .await?;
        insert_rows(
            tx,
            SessionPrivacyFlags::Table,
            &[SessionPrivacyFlags::SessionId, SessionPrivacyFlags::Flag],
            flags,
        )
        .await
    }
}

store_support::migration_api! {
    /// The `sessions` column values of a session, in [`SESSION_COLUMNS`] order,
    /// given its account's and group's SQL ids: the one rule for how a session
    /// becomes a row.
    fn session_row(s: &Session, account: Option<i64>, group: Option<i64>) -> Vec<Value> {
        vec![
            s.id.0.to_vec().into(),
            s.label.clone().into(),
            i64::from(s.state.code()).into(),
            i64::from(s.session_type.code()).into(),
            s.expiry.into(),
            s.created_at.into(),
            Value::ChronoDateTimeUtc(s.revoked_at),
            s.server_addr.clone().into(),
            s.dev_server.into(),
            (s.macaroon_root_key as i64).into(),
            s.pairing_secret.0.to_vec().into(),
            s.local_private_key.0.to_vec().into(),
            s.local_public_key.to_vec().into(),
            Value::Bytes(s.remote_public_key.map(|k| k.to_vec())),
            s.with_privacy_mapper.into(),
            Value::BigInt(account),
            Value::BigInt(group),
        ]
    }
}

store_support::migration_api! {
    /// [`session_row`] as expressions for an `INSERT`.
    fn session_values(
        s: &Session,
        account: Option<i64>,
        group: Option<i64>,
    ) -> Vec<sea_query::SimpleExpr> {
        session_row(s, account, group)
            .into_iter()
            .map(Into::into)
            .collect()
    }
}

store_support::migration_api! {
    /// The `sessions` columns [`session_values`] fills (all but `id`).
    const SESSION_COLUMNS: [Sessions; 17] = [
        Sessions::Alias,
        Sessions::Label,
        Sessions::State,
        Sessions::Type,
        Sessions::Expiry,
        Sessions::CreatedAt,
        Sessions::RevokedAt,
        Sessions::ServerAddress,
        Sessions::DevServer,
        Sessions::MacaroonRootKey,
        Sessions::PairingSecret,
        Sessions::LocalPrivateKey,
        Sessions::LocalPublicKey,
        Sessions::RemotePublicKey,
        Sessions::Privacy,
        Sessions::AccountId,
        Sessions::GroupId,
    ];
}

/// The SQL id and state of the session `id`, locking its row on PostgreSQL.
async fn resolve(tx: &mut dyn Tx, id: SessionId, lock: bool) -> Result<(i64, SessionState)> {
    let mut select = Query::select();
    select
        .columns([Sessions::Id, Sessions::State])
        .from(Sessions::Table)
        .and_where(Expr::col(Sessions::Alias).eq(id.0.to_vec()));
    if lock {
        select.lock(LockType::Update);
    }
    let row = tx
        .query_opt(&select)
        .await?
        .ok_or_else(|| not_found_id(id))?;
    let code = row.i64(1)?;
    let state = SessionState::from_code(code).ok_or_else(|| {
        invalid(
            format!("session {id}"),
            "state",
            format!("unknown state {code}"),
        )
    })?;
    Ok((row.i64(0)?, state))
}

fn by_alias(id: SessionId) -> Condition {
    Condition::all().add(Expr::col((Alias::new("s"), Sessions::Alias)).eq(id.0.to_vec()))
}

async fn load_one(tx: &mut dyn Tx, filter: Condition, missing: Error) -> Result<Session> {
    load_sessions(tx, Some(filter)).await?.pop().ok_or(missing)
}

#[async_trait]
impl Store for SqlStore {
    async fn new_session(&self, new: NewSession) -> Result<Session> {
        self.db
            .write(|tx| {
                let new = new.clone();
                Box::pin(async move {
                    let account = match new.account {
                        None => None,
                        // Locked, so an account removed meanwhile is not
                        // found rather than a foreign key error.
                        Some(id) => Some(
                            store_accounts::sql::sql_id(tx, id, true)
                                .await
                                .map_err(|e| match e {
                                    store_accounts::Error::Backend { backend, source } => {
                                        Error::Backend { backend, source }
                                    }
                                    other => Error::Backend {
                                        backend: "sql",
                                        source: Box::new(other),
                                    },
                                })?
                                .ok_or(Error::AccountNotFound { id })?,
                        ),
                    };
                    let group = match new.linked_group {
                        None => None,
                        Some(group) => {
                            let (gid, _) = resolve(tx, group, true).await.map_err(|e| match e {
                                Error::NotFound { .. } => Error::UnknownGroup { group },
                                other => other,
                            })?;
                            // A group exists when sessions belong to it (its
                            // first session belongs to itself).
                            let states = tx
                                .query(
                                    &Query::select()
                                        .column(Sessions::State)
                                        .from(Sessions::Table)
                                        .and_where(Expr::col(Sessions::GroupId).eq(gid))
                                        .to_owned(),
                                )
                                .await?;
                            if states.is_empty() {
                                return Err(Error::UnknownGroup { group });
                            }
                            for r in &states {
                                let terminal = SessionState::from_code(r.i64(0)?)
                                    .is_some_and(SessionState::is_terminal);
                                if !terminal {
                                    return Err(Error::GroupStillActive { group });
                                }
                            }
                            Some(gid)
                        }
                    };
                    // Ids are checked inside this write transaction, so the
                    // generated key cannot collide with a concurrent one.
                    let mut taken = Vec::new();
                    let keys = loop {
                        let candidate = generate_keys(|id| Ok(taken.contains(&id)))?;
                        let exists = tx
                            .query_opt(
                                &Query::select()
                                    .column(Sessions::Id)
                                    .from(Sessions::Table)
                                    .and_where(
                                        Expr::col(Sessions::Alias).eq(candidate.2.0.to_vec()),
                                    )
                                    .to_owned(),
                            )
                            .await?;
                        if exists.is_none() {
                            break candidate;
                        }
                        taken.push(candidate.2);
                    };
                    let session = build_session(new, keys)?;
                    let insert = Query::insert()
                        .into_table(Sessions::Table)
                        .columns(SESSION_COLUMNS)
                        .values_panic(session_values(&session, account, None))
                        .returning_col(Sessions::Id)
                        .to_owned();
                    let sql_id = tx.query_one(&insert).await?.i64(0)?;
                    tx.exec(
                        &Query::update()
                            .table(Sessions::Table)
                            .value(Sessions::GroupId, group.unwrap_or(sql_id))
                            .and_where(Expr::col(Sessions::Id).eq(sql_id))
                            .to_owned(),
                    )
                    .await?;
                    insert_children(tx, &[(sql_id, &session)]).await?;
                    load_one(tx, by_alias(session.id), not_found_id(session.id)).await
                })
            })
            .await
    }

    async fn session(&self, id: SessionId) -> Result<Session> {
        self.db
            .read(|tx| Box::pin(load_one(tx, by_alias(id), not_found_id(id))))
            .await
    }

    async fn session_by_local_key(&self, key: &PublicKey) -> Result<Session> {
        let key = *key;
        self.db
            .read(|tx| {
                Box::pin(async move {
                    let filter = Condition::all().add(
                        Expr::col((Alias::new("s"), Sessions::LocalPublicKey)).eq(key.to_vec()),
                    );
                    load_one(tx, filter, not_found_key(&key)).await
                })
            })
            .await
    }

    async fn list_sessions(&self) -> Result<Vec<Session>> {
        self.db.read(|tx| Box::pin(load_sessions(tx, None))).await
    }

    async fn list_sessions_by_type(&self, session_type: SessionType) -> Result<Vec<Session>> {
        let filter = Condition::all()
            .add(Expr::col((Alias::new("s"), Sessions::Type)).eq(i64::from(session_type.code())));
        self.db
            .read(|tx| Box::pin(load_sessions(tx, Some(filter.clone()))))
            .await
    }

    async fn list_sessions_by_state(&self, state: SessionState) -> Result<Vec<Session>> {
        let filter = Condition::all()
            .add(Expr::col((Alias::new("s"), Sessions::State)).eq(i64::from(state.code())));
        self.db
            .read(|tx| Box::pin(load_sessions(tx, Some(filter.clone()))))
            .await
    }

    async fn update_remote_public_key(&self, id: SessionId, key: PublicKey) -> Result<()> {
        self.db
            .write(|tx| {
                Box::pin(async move {
                    let updated = tx
                        .exec(
                            &Query::update()
                                .table(Sessions::Table)
                                .value(Sessions::RemotePublicKey, key.to_vec())
                                .and_where(Expr::col(Sessions::Alias).eq(id.0.to_vec()))
                                .to_owned(),
                        )
                        .await?;
                    if updated == 0 {
                        return Err(not_found_id(id));
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn shift_state(&self, id: SessionId, to: SessionState) -> Result<()> {
        self.db
            .write(|tx| {
                Box::pin(async move {
                    let (sql_id, from) = resolve(tx, id, true).await?;
                    if from == to {
                        return Ok(());
                    }
                    if !from.can_shift_to(to) {
                        return Err(Error::IllegalStateShift { id, from, to });
                    }
                    let mut update = Query::update();
                    update
                        .table(Sessions::Table)
                        .value(Sessions::State, i64::from(to.code()))
                        .and_where(Expr::col(Sessions::Id).eq(sql_id));
                    if let Some(t) = revoked_at_for(to) {
                        update.value(Sessions::RevokedAt, t);
                    }
                    tx.exec(&update).await?;
                    Ok(())
                })
            })
            .await
    }

    async fn delete_reserved_session(&self, id: SessionId) -> Result<()> {
        self.db
            .write(|tx| {
                Box::pin(async move {
                    let (sql_id, state) = resolve(tx, id, true).await?;
                    if state != SessionState::Reserved {
                        return Err(Error::NotReserved { id, state });
                    }
                    tx.exec(
                        &Query::delete()
                            .from_table(Sessions::Table)
                            .and_where(Expr::col(Sessions::Id).eq(sql_id))
                            .to_owned(),
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn delete_reserved_sessions(&self) -> Result<u64> {
        self.db
            .write(|tx| {
                Box::pin(async move {
                    Ok(tx
                        .exec(
                            &Query::delete()
                                .from_table(Sessions::Table)
                                .and_where(
                                    Expr::col(Sessions::State)
                                        .eq(i64::from(SessionState::Reserved.code())),
                                )
                                .to_owned(),
                        )
                        .await?)
                })
            })
            .await
    }

    async fn group_id(&self, id: SessionId) -> Result<SessionId> {
        self.db
            .read(|tx| {
                Box::pin(async move {
                    let row = tx
                        .query_opt(
                            &Query::select()
                                .expr(Expr::col((Alias::new("g"), Sessions::Alias)))
                                .from_as(Sessions::Table, Alias::new("s"))
                                .join_as(
                                    JoinType::InnerJoin,
                                    Sessions::Table,
                                    Alias::new("g"),
                                    Expr::col((Alias::new("g"), Sessions::Id))
                                        .equals((Alias::new("s"), Sessions::GroupId)),
                                )
                                .and_where(
                                    Expr::col((Alias::new("s"), Sessions::Alias)).eq(id.0.to_vec()),
                                )
                                .to_owned(),
                        )
                        .await?
                        .ok_or_else(|| not_found_id(id))?;
                    Ok(SessionId(fixed::<4>(
                        &format!("session {id}"),
                        "group",
                        row.bytes(0)?,
                    )?))
                })
            })
            .await
    }

    async fn session_ids_in_group(&self, group: SessionId) -> Result<Vec<SessionId>> {
        self.db
            .read(|tx| {
                Box::pin(async move {
                    let (gid, _) = resolve(tx, group, false).await.map_err(|e| match e {
                        Error::NotFound { .. } => Error::UnknownGroup { group },
                        other => other,
                    })?;
                    let rows = tx
                        .query(
                            &Query::select()
                                .column(Sessions::Alias)
                                .from(Sessions::Table)
                                .and_where(Expr::col(Sessions::GroupId).eq(gid))
                                .order_by(Sessions::Id, Order::Asc)
                                .to_owned(),
                        )
                        .await?;
                    if rows.is_empty() {
                        return Err(Error::UnknownGroup { group });
                    }
                    rows.iter()
                        .map(|r| {
                            Ok(SessionId(fixed::<4>(
                                &format!("group {group}"),
                                "alias",
                                r.bytes(0)?,
                            )?))
                        })
                        .collect()
                })
            })
            .await
    }
}
