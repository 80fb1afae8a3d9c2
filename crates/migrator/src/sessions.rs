//! Sessions: the `session` tree into `sessions` and its four child tables.
//!
//! Three passes over the tree, each in key order on the blocking pool:
//! 1. a plan: which session wins for each id (legacy databases may hold
//!    several sessions with one id; the newest by creation time is kept, the
//!    first in key order on a tie, and the others are dropped and counted);
//! 2. the group founders (sessions whose group is their own id), so every
//!    group id resolves;
//! 3. the linked sessions.
//!
//! The plan keeps one small entry per session id (not the sessions), so
//! memory stays bounded by the chunk size plus that index.
//!
//! Each session is written as `crate::rules::session` says SQL holds it
//! (times to the microsecond, an empty recipe or feature config as none, a
//! link to an account that is not in SQL dropped and counted), and read
//! back compared with exactly that (docs/design.md §5.4): chunk by chunk
//! online, the whole table by a count and digest offline (§5.7).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_query::{Expr, ExprTrait, IntoIden, Query};
use sqldb::{Tx, TxExt};
use store_accounts::AccountId;
use store_sessions::kv::{SESSIONS_TREE, decode_session};
use store_sessions::sql::schema::{
    SessionFeatureConfigs, SessionMacaroonCaveats, SessionMacaroonPermissions, SessionPrivacyFlags,
    Sessions,
};
use store_sessions::sql::{
    SESSION_COLUMNS, fetch_session_ids, insert_children, load_session_ids, session_row, sessions_of,
};
use store_sessions::{Session, SessionId};
use tombstone::ReadTree;

use crate::Error;
use crate::copy::{CopyCtx, TreeCopy, WriteChunk, copy_tree};
use crate::diff::{Diff, Difference, Differences, diff_fields};
use crate::digest::{Proof, ReadRange, WholeTable, prove_whole, set_aside_for_load};
use crate::feed::Sink;
use crate::shared::{delete_where, sequence_past};

/// What the sessions migration moved, and what it dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionsReport {
    /// Sessions migrated.
    pub sessions: u64,
    /// Sessions dropped because a newer session had the same id.
    pub duplicates_dropped: u64,
    /// Sessions migrated without their account link, because the account
    /// no longer exists.
    pub account_links_dropped: u64,
}

fn decode_error(key: &[u8], e: impl Into<sqldb::BoxError>) -> Error {
    Error::Decode {
        tree: SESSIONS_TREE,
        key: hex::encode(key),
        source: e.into(),
    }
}

/// The sessions that survive deduplication, by key.
struct Plan {
    winners: HashSet<Vec<u8>>,
    duplicates: u64,
}

fn plan(tree: &ReadTree, damage: &crate::feed::Damage) -> Result<Plan, Error> {
    let mut best: HashMap<SessionId, (DateTime<Utc>, Vec<u8>)> = HashMap::new();
    let mut duplicates = 0;
    for item in tree.iter() {
        let (key, value) = item?;
        let s = match decode_session(&key, &value) {
            Ok(s) => s,
            Err(e) => {
                let e = decode_error(&key, e);
                if damage.skip(&e) {
                    continue;
                }
                return Err(e);
            }
        };
        match best.get_mut(&s.id) {
            None => {
                best.insert(s.id, (s.created_at, key.to_vec()));
            }
            Some(cur) => {
                duplicates += 1;
                if crate::rules::session_replaces(cur.0, s.created_at) {
                    *cur = (s.created_at, key.to_vec());
                }
            }
        }
    }
    Ok(Plan {
        winners: best.into_values().map(|(_, k)| k).collect(),
        duplicates,
    })
}

/// Streams the winning sessions of one class (founders or linked) in chunks.
fn read_class(
    tree: ReadTree,
    winners: Arc<HashSet<Vec<u8>>>,
    founders: bool,
    chunk_size: usize,
    out: Sink<Vec<Session>>,
) {
    let sessions = tree.iter().map(|item| {
        let (key, value) = item?;
        if !winners.contains(key.as_slice()) {
            return Ok(None);
        }
        let s = decode_session(&key, &value).map_err(|e| decode_error(&key, e))?;
        Ok(((s.group_id == s.id) == founders).then_some(s))
    });
    out.send_chunks(sessions, chunk_size);
}

/// Copies the sessions tree (the module documentation says how).
///
/// Offline, the indexes of the sessions and their child tables are set
/// aside for the load and built once after it, the rows are appended
/// several chunks at a time on PostgreSQL (`digest::append_at`), and the copy is
/// proved whole: every session read back through the store's loader,
/// chunk by chunk, against a count and digest of what was written
/// (docs/design.md §5.7).
pub(crate) async fn migrate(tx: &mut dyn Tx, ctx: CopyCtx<'_>) -> Result<SessionsReport, Error> {
    let proof = Proof::for_copy(ctx.live.is_some());
    // The sessions' own unique indexes cannot fail either: the plan keeps
    // one session per id, and a session's public key is its key in the
    // tree (`decode_session` refuses one stored under another key).
    let loaded = [
        Sessions::Table.into_iden(),
        SessionMacaroonPermissions::Table.into_iden(),
        SessionMacaroonCaveats::Table.into_iden(),
        SessionFeatureConfigs::Table.into_iden(),
        SessionPrivacyFlags::Table.into_iden(),
    ];
    let aside = set_aside_for_load(tx, &proof, &loaded).await?;
    let state = copy(tx, ctx, proof).await?;
    if let Some(aside) = aside {
        aside.rebuild(tx).await?;
    }
    // Permissions, caveats, feature configs and privacy flags are part of
    // each session read back.
    let whole = WholeTable {
        what: "session",
        table: Sessions::Table.into_iden(),
        read: ReadRange {
            fetch: |tx, first, last| Box::pin(fetch_session_ids(tx, first, last)),
            decode: sessions_of,
        },
        diagnose: |tx, ctx| Box::pin(async move { copy(tx, ctx, Proof::Diagnose).await.map(drop) }),
    };
    prove_whole(tx, ctx, &state.proof, whole).await?;
    sequence_past(tx, crate::shared::IdTable::Sessions, state.next_id - 1).await?;
    Ok(state.report)
}

/// One copy of the tree (the plan, then the founders, then the linked
/// sessions), each chunk written and proved as `proof` says.
async fn copy(tx: &mut dyn Tx, ctx: CopyCtx<'_>, proof: Proof) -> Result<Migration, Error> {
    let mut state = Migration {
        next_id: 1,
        groups: HashMap::new(),
        report: SessionsReport::default(),
        defer: ctx.live.map(|l| l.journal.clone()),
        damage: ctx.damage.clone(),
        // The accounts are all in SQL before the sessions are copied; a
        // live copy's may be replayed between chunks, so it looks up each
        // chunk's.
        accounts: match ctx.live {
            None => Some(crate::shared::account_ids(tx, None).await?),
            Some(_) => None,
        },
        proof,
        pending: Pending::default(),
        // 4,096 sessions, about 45,000 rows with their children, at the
        // default chunk size and scale L on PostgreSQL.
        append_at: crate::digest::append_at(tx.dialect(), ctx.chunk_size),
    };
    let Some(tree) = ctx.source.tree(SESSIONS_TREE)? else {
        return Ok(state);
    };
    let started = std::time::Instant::now();
    let planned = {
        let (tree, damage) = (tree.clone(), ctx.damage.clone());
        tokio::task::spawn_blocking(move || plan(&tree, &damage))
            .await
            .map_err(|e| Error::Store {
                record: "sessions".into(),
                source: Box::new(e),
            })??
    };
    tracing::debug!(
        sessions = planned.winners.len(),
        duration_ms = crate::shared::millis(started),
        "sessions planned"
    );
    state.report.duplicates_dropped = planned.duplicates;
    let what = TreeCopy {
        tree: SESSIONS_TREE,
        store: "sessions",
        total: planned.winners.len() as u64,
    };
    let winners = Arc::new(planned.winners);
    for founders in [true, false] {
        let (tree, winners) = (tree.clone(), winners.clone());
        let size = ctx.chunk_size;
        let read = move |sink| read_class(tree, winners, founders, size, sink);
        copy_tree(tx, ctx, what, read, &mut state).await?;
    }
    state.flush(tx).await?;
    Ok(state)
}

struct Migration {
    next_id: i64,
    /// Group id → SQL id of the group's first session.
    groups: HashMap<SessionId, i64>,
    report: SessionsReport,
    /// An online migration's journal: the copy reads a live tree, not one
    /// instant of it, so a session linked to a group whose first session
    /// it did not see (both created while it read) is left to the replay,
    /// which reads them together (docs/design.md §7.4).
    defer: Option<Arc<crate::journal::Journal>>,
    /// The run's damage: a session whose group's first session was damaged
    /// (and skipped) is damage too, not an inconsistency.
    damage: Arc<crate::feed::Damage>,
    /// Every account's SQL id, read once before an offline copy.
    accounts: Option<HashMap<AccountId, i64>>,
    proof: Proof,
    /// Sessions written but not yet appended: a copy proved whole appends
    /// `append_at` sessions at a time (`digest::append_at`: 8 chunks on
    /// PostgreSQL).
    pending: Pending,
    append_at: usize,
}

/// The sessions rows and the sessions (for their child rows) of appends
/// not yet made.
#[derive(Default)]
struct Pending {
    rows: Vec<Vec<sea_query::Value>>,
    sessions: Vec<(i64, Session)>,
}

#[async_trait]
impl WriteChunk<Vec<Session>> for Migration {
    async fn write(&mut self, tx: &mut dyn Tx, chunk: Vec<Session>) -> Result<Option<u64>, Error> {
        let looked_up;
        let accounts = match &self.accounts {
            Some(all) => all,
            None => {
                looked_up = account_ids(tx, &chunk).await?;
                &looked_up
            }
        };
        let first = self.next_id;
        let mut rows = Vec::with_capacity(chunk.len());
        let mut dropped_links = 0;
        let mut expected = Vec::with_capacity(chunk.len());
        for kv in &chunk {
            kv.check().map_err(Error::contract)?;
            let (s, dropped) = crate::rules::session(kv, |a| accounts.contains_key(&a));
            if let Some(a) = kv.account_id.filter(|_| dropped)
                && self
                    .damage
                    .skip_lost_link(SESSIONS_TREE, &s.id.0, &format!("account {a}"))
            {
                continue;
            }
            if s.group_id != s.id
                && !self.groups.contains_key(&s.group_id)
                && let Some(journal) = &self.defer
            {
                journal.record(crate::journal::Touched::Session(s.id));
                continue;
            }
            if s.group_id != s.id
                && !self.groups.contains_key(&s.group_id)
                && self.damage.found_any()
            {
                let e = Error::Decode {
                    tree: SESSIONS_TREE,
                    key: hex::encode(s.id.0),
                    source: format!(
                        "its group's first session {} could not be read, so it cannot be migrated",
                        s.group_id
                    )
                    .into(),
                };
                if self.damage.skip(&e) {
                    continue;
                }
            }
            dropped_links += u64::from(dropped);
            let sql_id = self.next_id;
            self.next_id += 1;
            if s.group_id == s.id {
                self.groups.insert(s.id, sql_id);
            }
            let group = *self.groups.get(&s.group_id).ok_or_else(|| Error::Invalid {
                record: format!("session {}", s.id),
                reason: format!("its group {} has no first session", s.group_id),
            })?;
            let account = s.account_id.and_then(|a| accounts.get(&a).copied());
            let mut row = vec![sql_id.into()];
            row.extend(session_row(&s, account, Some(group)));
            rows.push(row);
            expected.push((sql_id, s));
        }
        self.report.sessions += expected.len() as u64;
        self.report.account_links_dropped += dropped_links;
        match &mut self.proof {
            Proof::Whole(written, ranges) => {
                for (_, s) in &expected {
                    written.add(s);
                }
                ranges.push((first, self.next_id - 1));
                self.pending.rows.extend(rows);
                self.pending.sessions.extend(expected);
                if self.pending.sessions.len() >= self.append_at {
                    self.flush(tx).await?;
                }
            }
            Proof::EachChunk => {
                append(tx, rows, &expected).await?;
                self.verify(tx, &expected, first).await?;
            }
            Proof::Diagnose => self.verify(tx, &expected, first).await?,
        }
        Ok(Some(self.report.sessions))
    }
}

/// Appends sessions rows `rows` and the child rows of `sessions` (the same
/// sessions, with their SQL ids).
async fn append(
    tx: &mut dyn Tx,
    rows: Vec<Vec<sea_query::Value>>,
    sessions: &[(i64, Session)],
) -> Result<(), Error> {
    let (Some((first, _)), Some((last, _))) = (sessions.first(), sessions.last()) else {
        return Ok(());
    };
    sqldb::append(
        tx,
        Sessions::Table,
        std::iter::once(Sessions::Id).chain(SESSION_COLUMNS),
        rows,
    )
    .await?;
    let with_ids: Vec<(i64, &Session)> = sessions.iter().map(|(id, s)| (*id, s)).collect();
    insert_children(tx, &with_ids)
        .await
        .map_err(|e| Error::Store {
            record: format!("sessions {first}..{last}"),
            source: Box::new(e),
        })
}

impl Migration {
    /// Appends the pending sessions.
    async fn flush(&mut self, tx: &mut dyn Tx) -> Result<(), Error> {
        let Pending { rows, sessions } = std::mem::take(&mut self.pending);
        append(tx, rows, &sessions).await
    }

    /// Reads the chunk back and compares each session with what the rules
    /// say SQL holds (`expected`).
    async fn verify(
        &self,
        tx: &mut dyn Tx,
        expected: &[(i64, Session)],
        first: i64,
    ) -> Result<(), Error> {
        let last = self.next_id - 1;
        let read = load_session_ids(tx, first, last)
            .await
            .map_err(|e| Error::ReadBack {
                records: format!("sessions {first}..={last}"),
                source: Box::new(e),
            })?;
        let mut by_id: HashMap<SessionId, Session> = read.into_iter().map(|s| (s.id, s)).collect();
        for (_, want) in expected {
            let sql = by_id.remove(&want.id).ok_or_else(|| Error::Mismatch {
                record: format!("session {}", want.id),
                diff: Differences::one(Difference::MissingInSql {
                    field: None,
                    what: None,
                }),
            })?;
            if let Some(diff) = compare(want, &sql) {
                return Err(Error::Mismatch {
                    record: format!("session {}", want.id),
                    diff,
                });
            }
        }
        if let Some(extra) = by_id.keys().next() {
            return Err(Error::Mismatch {
                record: format!("session {extra}"),
                diff: Differences::one(Difference::OnlyInSql {
                    field: None,
                    what: None,
                }),
            });
        }
        Ok(())
    }
}

/// Replays sessions changed while an online migration copied them
/// (docs/design.md §7.2): each is read again from the live store, written
/// as the rules say SQL holds it (its row updated in place, so what
/// references it stays), and read back compared; a session gone from the
/// key-value store (a deleted reserved session) is deleted after the links
/// of actions to it are dropped.
///
/// What a session links to comes first (docs/design.md §7.4): a group's
/// first session before the sessions linked to it, and an account a
/// session links to that SQL does not hold yet (created a moment before,
/// journaled later or in the same round) is replayed before the session,
/// so no link the key-value store holds is dropped as dangling.
pub(crate) async fn replay(
    cx: &mut crate::shared::Replay<'_>,
    live: &dyn store_sessions::Store,
    ids: &[SessionId],
) -> Result<(), Error> {
    let (tx, links, deltas) = (&mut *cx.tx, cx.links, &mut *cx.deltas);
    let batch = read_with_founders(tx, live, ids).await?;
    let present: Vec<Session> = batch.iter().filter_map(|(_, s)| s.clone()).collect();
    let linked = account_ids(tx, &present).await?;
    let missing: Vec<AccountId> = present
        .iter()
        .filter_map(|s| s.account_id)
        .filter(|a| !linked.contains_key(a))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        links.accounts(tx, &missing, deltas).await?;
    }
    for (id, current) in batch {
        let sql_id = sql_id_of(tx, id).await?;
        match (current, sql_id) {
            (Some(kv), sql_id) => replay_one(tx, &kv, sql_id, deltas).await?,
            (None, Some(sid)) => delete_one(tx, links, sid, deltas).await?,
            (None, None) => {}
        }
    }
    Ok(())
}

/// Deletes a session gone from the key-value store (SQL id `sid`), after
/// the links of actions to it and what its group takes with it (the
/// group's entries and pairs, as a fresh migration skips them, deleted
/// here to be counted).
async fn delete_one(
    tx: &mut dyn Tx,
    links: &dyn crate::shared::Linked,
    sid: i64,
    deltas: &mut crate::shared::Deltas,
) -> Result<(), Error> {
    crate::shared::drop_links(tx, crate::shared::Link::Session, &[sid]).await?;
    links.drop_group(tx, sid, deltas).await?;
    deltas.sessions -= delete_where(tx, Sessions::Table, Expr::col(Sessions::Id).eq(sid)).await?;
    Ok(())
}

/// Makes SQL hold session `kv` as the rules say: its row updated in place
/// (its SQL id `sql_id`) and its children written again, or appended; then
/// read back and compared.
async fn replay_one(
    tx: &mut dyn Tx,
    kv: &Session,
    sql_id: Option<i64>,
    deltas: &mut crate::shared::Deltas,
) -> Result<(), Error> {
    kv.check().map_err(Error::contract)?;
    let accounts = account_ids(tx, std::slice::from_ref(kv)).await?;
    let (s, _) = crate::rules::session(kv, |a| accounts.contains_key(&a));
    let account = s.account_id.and_then(|a| accounts.get(&a).copied());
    let sid = match sql_id {
        Some(sid) => sid,
        None => crate::shared::next_id(tx, crate::shared::IdTable::Sessions).await?,
    };
    let group = if s.group_id == s.id {
        sid
    } else {
        sql_id_of(tx, s.group_id)
            .await?
            .ok_or_else(|| Error::Invalid {
                record: format!("session {}", s.id),
                reason: format!("its group {} has no first session", s.group_id),
            })?
    };
    let row = session_row(&s, account, Some(group));
    if sql_id.is_some() {
        tx.exec(
            &Query::update()
                .table(Sessions::Table)
                .values(
                    SESSION_COLUMNS
                        .iter()
                        .copied()
                        .zip(row.into_iter().map(Expr::val)),
                )
                .and_where(Expr::col(Sessions::Id).eq(sid))
                .to_owned(),
        )
        .await?;
        delete_children(tx, sid).await?;
    } else {
        let mut full = vec![sid.into()];
        full.extend(row);
        sqldb::append(
            tx,
            Sessions::Table,
            std::iter::once(Sessions::Id).chain(SESSION_COLUMNS),
            vec![full],
        )
        .await?;
        crate::shared::advance_sequence(tx, crate::shared::IdTable::Sessions, sid).await?;
        deltas.sessions += 1;
    }
    insert_children(tx, &[(sid, &s)])
        .await
        .map_err(|e| Error::Store {
            record: format!("session {}", s.id),
            source: Box::new(e),
        })?;
    let read = load_session_ids(tx, sid, sid)
        .await
        .map_err(|e| Error::ReadBack {
            records: format!("session {}", s.id),
            source: Box::new(e),
        })?;
    let diff = match read.first() {
        None => Some(Differences::one(Difference::MissingInSql {
            field: None,
            what: None,
        })),
        Some(sql) => compare(&s, sql),
    };
    match diff {
        Some(diff) => Err(Error::Mismatch {
            record: format!("session {}", s.id),
            diff,
        }),
        None => Ok(()),
    }
}

/// Deletes the child rows (permissions, caveats, feature configs, privacy
/// flags) of the session with SQL id `sid`, to be written again.
async fn delete_children(tx: &mut dyn Tx, sid: i64) -> Result<(), Error> {
    use store_sessions::sql::schema::{
        SessionFeatureConfigs, SessionMacaroonCaveats, SessionMacaroonPermissions,
        SessionPrivacyFlags,
    };
    for table in [
        SessionMacaroonPermissions::Table.into_iden(),
        SessionMacaroonCaveats::Table.into_iden(),
        SessionFeatureConfigs::Table.into_iden(),
        SessionPrivacyFlags::Table.into_iden(),
    ] {
        tx.exec(
            &Query::delete()
                .from_table(table)
                .and_where(Expr::col(SessionMacaroonPermissions::SessionId).eq(sid))
                .to_owned(),
        )
        .await?;
    }
    Ok(())
}

/// The SQL id of session `id`, if it is in SQL.
pub(crate) async fn sql_id_of(tx: &mut dyn Tx, id: SessionId) -> Result<Option<i64>, Error> {
    Ok(tx
        .query_opt(
            &Query::select()
                .column(Sessions::Id)
                .from(Sessions::Table)
                .and_where(Expr::col(Sessions::Alias).eq(id.0.to_vec()))
                .to_owned(),
        )
        .await?
        .map(|r| r.i64(0))
        .transpose()?)
}

/// The sessions `ids` as the live store holds them now (`None`: gone),
/// with the first session of every group one of them links to that SQL
/// does not hold yet, in the order a replay writes them: first sessions,
/// then linked ones, then the ones gone.
async fn read_with_founders(
    tx: &mut dyn Tx,
    live: &dyn store_sessions::Store,
    ids: &[SessionId],
) -> Result<Vec<(SessionId, Option<Session>)>, Error> {
    async fn read(
        live: &dyn store_sessions::Store,
        id: SessionId,
    ) -> Result<Option<Session>, Error> {
        match live.session(id).await {
            Ok(s) => Ok(Some(s)),
            Err(store_sessions::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(crate::shared::live_error("session", e)),
        }
    }
    let mut batch = Vec::with_capacity(ids.len());
    let mut seen: std::collections::HashSet<SessionId> = ids.iter().copied().collect();
    for id in ids {
        batch.push((*id, read(live, *id).await?));
    }
    let founders: std::collections::BTreeSet<SessionId> = batch
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .filter(|s| s.group_id != s.id)
        .map(|s| s.group_id)
        .filter(|g| !seen.contains(g))
        .collect();
    for g in founders {
        if sql_id_of(tx, g).await?.is_none() {
            seen.insert(g);
            batch.push((g, read(live, g).await?));
        }
    }
    // Stable: first sessions, then linked sessions, then those gone.
    batch.sort_by_key(|(_, s)| match s {
        Some(s) if s.group_id == s.id => 0,
        Some(_) => 1,
        None => 2,
    });
    Ok(batch)
}

/// SQL ids of the accounts the chunk links to, by account id.
async fn account_ids(tx: &mut dyn Tx, chunk: &[Session]) -> Result<HashMap<AccountId, i64>, Error> {
    let ids: Vec<AccountId> = chunk.iter().filter_map(|s| s.account_id).collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    store_accounts::sql::sql_ids(tx, &ids)
        .await
        .map_err(|e| Error::Store {
            record: "the accounts of the sessions".into(),
            source: Box::new(e),
        })
}

/// The differences between the session the rules expect and the one read
/// back, field by field; secrets compared but never shown.
fn compare(kv: &Session, sql: &Session) -> Option<Differences> {
    let mut d = Diff::default();
    diff_fields!(
        d,
        kv,
        sql,
        [
            label,
            state,
            session_type,
            expiry,
            created_at,
            revoked_at,
            server_addr,
            dev_server,
            macaroon_root_key,
            macaroon_recipe,
        ]
    );
    // Secrets are compared but never printed.
    if kv.pairing_secret != sql.pairing_secret {
        d.field("pairing_secret", &"(differs)", &"(secret)");
    }
    if kv.local_private_key != sql.local_private_key {
        d.field("local_private_key", &"(differs)", &"(secret)");
    }
    d.field(
        "local_public_key",
        &hex::encode(kv.local_public_key),
        &hex::encode(sql.local_public_key),
    );
    d.field(
        "remote_public_key",
        &kv.remote_public_key.map(hex::encode),
        &sql.remote_public_key.map(hex::encode),
    );
    diff_fields!(
        d,
        kv,
        sql,
        [
            feature_config,
            with_privacy_mapper,
            privacy_flags,
            group_id,
            account_id,
        ]
    );
    d.finish()
}

/// Every reserved session SQL holds, by id: a replay of a wipe of reserved
/// sessions reads each again from the live store.
pub(crate) async fn reserved_in_sql(tx: &mut dyn Tx) -> Result<Vec<SessionId>, Error> {
    let rows = tx
        .query(
            &Query::select()
                .column(Sessions::Alias)
                .from(Sessions::Table)
                .and_where(
                    Expr::col(Sessions::State)
                        .eq(i64::from(store_sessions::SessionState::Reserved.code())),
                )
                .to_owned(),
        )
        .await?;
    rows.iter()
        .map(|r| crate::shared::session_alias(r.bytes(0)?))
        .collect()
}
