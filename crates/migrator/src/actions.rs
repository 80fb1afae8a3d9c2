//! Actions: the audit log into `actions`, with the session and account
//! links the key-value records keep (docs/design.md §5.4, §5.7).
//!
//! Read in the actions tree's own order (session, then sequence), one
//! sequential pass; each action keeps its locator as its SQL id, so
//! locators handed out before the migration stay valid. Offline, the rows
//! are appended 8,192 at a time in key order (`sqldb::ordered`) and the
//! table is proved whole after the load against a count and digest of
//! what was written ([`verify_table`]); online, each chunk is one bulk
//! append (`Tx::copy_in`) and one read-back. Links resolve through
//! maps of every session's and account's SQL id read once beforehand; a
//! link to a session or an account that is not in SQL is dropped, the
//! action kept, and both counted. Memory is bounded by the chunk size and
//! the number of sessions and accounts. Empty and absent RPC params are
//! equal.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use sea_query::{Expr, ExprTrait, IntoIden, Query};
use sqldb::ordered::OrderedAppend;
use sqldb::scan::Scan;
use sqldb::{Tx, TxExt};
use store_accounts::AccountId;
use store_actions::Action;
use store_actions::kv::{ACTIONS_TREE, INDEX_TREE, decode_action, index_seq};
use store_actions::sql::schema::Actions;
use store_actions::sql::{
    ACTION_COLUMNS, action_row, load_ids_stored, stored_from_row, stored_select,
};
use store_sessions::SessionId;
use store_sessions::sql::schema::Sessions;
use tombstone::ReadTree;

use crate::Error;
use crate::copy::{CopyCtx, TreeCopy, WriteChunk, copy_tree};
use crate::diff::{Diff, diff_fields, verify_written};
use crate::digest::{PageDigest, SetDigest, differs};
use crate::feed::{Damage, Feed, Sink};
use crate::shared::{delete_where, sequence_past};

/// What the actions migration moved, and what it dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ActionsReport {
    /// Actions migrated.
    pub actions: u64,
    /// Actions migrated without their session link (session gone).
    pub session_links_dropped: u64,
    /// Actions migrated without their account link (account gone).
    pub account_links_dropped: u64,
}

fn decode_error(tree: &'static str, key: &[u8], e: impl Into<sqldb::BoxError>) -> Error {
    Error::Decode {
        tree,
        key: hex::encode(key),
        source: e.into(),
    }
}

/// Splits an actions-tree key into its session prefix and sequence.
fn split_action_key(key: &[u8]) -> Result<(&[u8], u64), Error> {
    if key.len() != 12 {
        return Err(decode_error(ACTIONS_TREE, key, "key is not 12 bytes"));
    }
    let seq = index_seq(&key[4..]).map_err(|e| decode_error(ACTIONS_TREE, key, e))?;
    Ok((&key[..4], seq))
}

/// Reads the actions tree in its own key order (session, then sequence):
/// one sequential pass instead of a lookup per action through the global
/// index. That the index names exactly these actions is proved by the
/// source check running beside the migration (`check.rs`, design §5.3),
/// which refuses the run before anything commits when it does not.
fn read_actions(actions: ReadTree, chunk_size: usize, out: Sink<Vec<Action>>) {
    let loaded = actions.iter().map(|item| {
        let (key, raw) = item?;
        let (_, seq) = split_action_key(&key)?;
        let a = decode_action(&key, &raw).map_err(|e| decode_error(ACTIONS_TREE, &key, e))?;
        if a.locator.index() != seq {
            return Err(decode_error(
                ACTIONS_TREE,
                &key,
                format!("holds action {}, its key says {seq}", a.locator),
            ));
        }
        Ok(Some(a))
    });
    out.send_chunks(loaded, chunk_size);
}

pub(crate) async fn migrate(tx: &mut dyn Tx, ctx: CopyCtx<'_>) -> Result<ActionsReport, Error> {
    let source = ctx.source;
    let Some(actions) = source.tree(ACTIONS_TREE)? else {
        return Ok(ActionsReport::default());
    };
    // Locators are handed out in sequence, so the index's last key is the
    // count, found with one seek; sled's `len` would walk the whole tree and
    // keep what it read in memory (136 MiB for a million actions).
    let total = match source.tree(INDEX_TREE)?.map(|i| i.last()) {
        Some(Ok(Some((key, _)))) => index_seq(&key).unwrap_or(0),
        _ => 0,
    };
    let mut writer = Writer {
        links: Links::load(tx).await?,
        report: ActionsReport::default(),
        last_id: 0,
        // An online copy commits pieces and replays actions between chunks,
        // so it proves each chunk as it goes; see `verify_table`.
        written: ctx.live.is_none().then(SetDigest::default),
        pending: Vec::new(),
        load: None,
        damage: ctx.damage.clone(),
    };
    // Every action index and foreign key is built once after the load
    // (design §5.7). Neither can fail then: the indexes are not unique and
    // every link was resolved through `links` above.
    let table = Actions::Table.into_iden().to_string();
    let aside = sqldb::deferred::set_aside(tx, &[table.as_str()]).await?;
    let what = TreeCopy {
        tree: ACTIONS_TREE,
        store: "actions",
        total,
    };
    let chunk_size = ctx.chunk_size;
    let read = move |sink| read_actions(actions, chunk_size, sink);
    if ctx.live.is_none() {
        let load = OrderedAppend::begin(tx, Actions::Table, ACTION_COLUMNS, Actions::Id).await?;
        writer.load = Some(load);
    }
    copy_tree(tx, ctx, what, read, &mut writer).await?;
    writer.flush(tx).await?;
    if let Some(load) = writer.load.take() {
        load.finish(tx).await?;
    }
    if let Some(written) = writer.written {
        verify_table(tx, ctx, &writer.links, written).await?;
    }
    // One index at a time: an online copy may commit between them.
    let started = std::time::Instant::now();
    for sql in aside.into_statements() {
        tx.execute_script(&sql).await?;
        if let Some(live) = ctx.live {
            live.boundary(tx).await?;
        }
    }
    tracing::debug!(
        duration_ms = crate::shared::millis(started),
        "actions' indexes built"
    );
    sequence_past(tx, crate::shared::IdTable::Actions, writer.last_id).await?;
    Ok(writer.report)
}

/// Writes the actions' chunks with their locators as SQL ids.
struct Writer {
    /// The SQL ids of every session and account.
    links: Links,
    report: ActionsReport,
    /// The largest id written.
    last_id: i64,
    /// The digest of every action written, when the table is proved whole
    /// after the copy ([`verify_table`]) rather than chunk by chunk.
    written: Option<SetDigest>,
    /// Rows not yet appended: with no read-back per chunk, the offline copy
    /// appends [`APPEND`] rows at a time.
    pending: Vec<Vec<sea_query::Value>>,
    /// The offline copy's load: the actions come in the tree's order, not
    /// in id order, which SQLite stores them in (`sqldb::ordered`).
    load: Option<OrderedAppend>,
    /// The run's damage: an action whose link damage may have taken is
    /// skipped as damage (`Damage::skip_lost_link`).
    damage: Arc<Damage>,
}

/// Rows per append when the table is proved whole after the copy: a bulk
/// append has a fixed cost (on PostgreSQL a `COPY` and its round trips)
/// that chunks of a few hundred rows pay thousands of times.
const APPEND: usize = 8192;

impl Writer {
    /// Appends the pending rows.
    async fn flush(&mut self, tx: &mut dyn Tx) -> Result<(), Error> {
        let rows = std::mem::take(&mut self.pending);
        match &self.load {
            Some(load) => load.append(tx, rows).await?,
            None => sqldb::append(tx, Actions::Table, ACTION_COLUMNS, rows).await?,
        }
        Ok(())
    }
}

#[async_trait]
impl WriteChunk<Vec<Action>> for Writer {
    async fn write(&mut self, tx: &mut dyn Tx, chunk: Vec<Action>) -> Result<Option<u64>, Error> {
        let Some(digest) = &mut self.written else {
            let last = write_chunk(tx, &self.links, &chunk, &mut self.report, &self.damage).await?;
            self.last_id = Ord::max(self.last_id, last);
            return Ok(Some(self.report.actions));
        };
        let (rows, expected) = prepare(&self.links, &chunk, &mut self.report, &self.damage)?;
        for e in &expected {
            digest.add(e);
            self.last_id = Ord::max(self.last_id, e.0.locator.index() as i64);
        }
        self.report.actions += expected.len() as u64;
        self.pending.extend(rows);
        if self.pending.len() >= APPEND {
            self.flush(tx).await?;
        }
        Ok(Some(self.report.actions))
    }
}

/// Proves, after the offline copy, that `actions` holds exactly the actions
/// written: the whole table is read back in one sequential pass and its
/// count and digest compared with those of what was written (design §5.7).
/// The pass costs a fraction of a read-back query per chunk, which looks
/// up every id through the index. When they differ, a second read of the
/// source, compared chunk by chunk, names the action.
async fn verify_table(
    tx: &mut dyn Tx,
    ctx: CopyCtx<'_>,
    links: &Links,
    written: SetDigest,
) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let read = read_digest(tx).await?;
    tracing::debug!(
        records = read.count,
        duration_ms = crate::shared::millis(started),
        "actions read back whole"
    );
    if read == written {
        return Ok(());
    }
    Err(find_difference(tx, ctx, links, written, read).await)
}

/// The count and digest of every action in the table. Pages are fetched
/// here and decoded and hashed on the blocking pool, one page waiting
/// ([`PageDigest`]): decoding a page of 4,096 rows as the store does takes
/// about ten milliseconds, which would stall the executor.
async fn read_digest(tx: &mut dyn Tx) -> Result<SetDigest, Error> {
    let digest = PageDigest::spawn("actions", |page: Vec<sqldb::Row>| {
        page.iter()
            .map(stored_from_row)
            .collect::<Result<Vec<_>, _>>()
    });
    let fetched = async {
        let mut scan = Scan::open(tx, &stored_select(), Actions::Id).await?;
        while let Some(rows) = scan.next(tx).await? {
            if !digest.add("actions".into(), rows).await {
                // The worker stopped at a row that does not decode: its
                // error is the one to report.
                return scan.close(tx).await;
            }
        }
        Ok(())
    }
    .await;
    let read = digest.finish().await;
    fetched.map_err(|e| Error::ReadBack {
        records: "actions".into(),
        source: Box::new(e),
    })?;
    read
}

/// The error naming what differs between the actions written and the
/// table: each chunk of a second read of the source is prepared as the
/// copy prepared it and read back by its ids. When every action compares
/// equal, the table holds rows the copy did not write, or as many rows
/// with another digest; that is the error.
async fn find_difference(
    tx: &mut dyn Tx,
    ctx: CopyCtx<'_>,
    links: &Links,
    written: SetDigest,
    read: SetDigest,
) -> Error {
    let found = match ctx.source.tree(ACTIONS_TREE) {
        Ok(Some(actions)) => {
            // The copy skipped the damaged records; this read skips the
            // same ones without recording them twice.
            let damage = crate::feed::Damage::second_read(ctx.damage);
            let chunk_size = ctx.chunk_size;
            let mut feed = Feed::spawn(ACTIONS_TREE, &damage, move |sink| {
                read_actions(actions, chunk_size, sink)
            });
            let found = async {
                while let Some(chunk) = feed.next().await {
                    let (_, mut expected) =
                        prepare(links, &chunk?, &mut ActionsReport::default(), &damage)?;
                    if !expected.is_empty() {
                        verify_chunk(tx, &mut expected).await?;
                    }
                }
                Ok::<_, Error>(())
            }
            .await;
            feed.finish().await;
            found
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e.into()),
    };
    // The scan reads the whole table: its count is the table's.
    let no_record = || differs("action", &written, &read, read.count);
    match found {
        Err(e) => e,
        Ok(()) => no_record().unwrap_or_else(|| Error::Invalid {
            record: "actions".into(),
            reason: "the proof found a difference a second look did not".into(),
        }),
    }
}

/// Replays actions added or changed while an online migration copied them
/// (docs/design.md §7.2): nothing references an action, so each is deleted
/// and written again from the live store with the same locator, through
/// the copy's own writer and read-back comparison.
///
/// A session or account an action links to that SQL does not hold yet
/// (created a moment before, journaled later) is replayed first, so the
/// link is kept (docs/design.md §7.4).
pub(crate) async fn replay(
    cx: &mut crate::shared::Replay<'_>,
    live: &dyn store_actions::Store,
    locators: &[u64],
) -> Result<(), Error> {
    if locators.is_empty() {
        return Ok(());
    }
    let (tx, linked, deltas) = (&mut *cx.tx, cx.links, &mut *cx.deltas);
    let mut current = Vec::with_capacity(locators.len());
    for l in locators {
        match live
            .action(store_actions::ActionLocator::from_index(*l))
            .await
        {
            Ok(a) => current.push(a),
            Err(e) => return Err(crate::shared::live_error("action", e)),
        }
    }
    let ids: Vec<i64> = locators.iter().map(|l| *l as i64).collect();
    deltas.actions -= delete_where(tx, Actions::Table, Expr::col(Actions::Id).is_in(ids)).await?;
    deltas.actions += crate::shared::rows(current.len());
    let mut links = Links::load_for(tx, &current).await?;
    let (sessions, accounts) = links.missing(&current);
    if !sessions.is_empty() || !accounts.is_empty() {
        linked.accounts(tx, &accounts, deltas).await?;
        linked.sessions(tx, &sessions, deltas).await?;
        links = Links::load_for(tx, &current).await?;
    }
    // A live store has no damage to skip: every link was just resolved.
    let no_damage = Damage::new(false);
    let last = write_chunk(
        tx,
        &links,
        &current,
        &mut ActionsReport::default(),
        &no_damage,
    )
    .await?;
    crate::shared::advance_sequence(tx, crate::shared::IdTable::Actions, last).await?;
    Ok(())
}

/// The SQL ids of every session and account, by alias: read once before
/// the actions, so linking an action costs a map lookup rather than a query
/// per chunk. Sessions and accounts are few next to actions.
pub(crate) struct Links {
    sessions: HashMap<SessionId, i64>,
    accounts: HashMap<AccountId, i64>,
}

impl Links {
    /// The sessions and accounts `actions` link to that are not here.
    fn missing(&self, actions: &[Action]) -> (Vec<SessionId>, Vec<AccountId>) {
        let sessions: BTreeSet<SessionId> = actions
            .iter()
            .filter_map(|a| a.request.session_id)
            .filter(|s| !self.sessions.contains_key(s))
            .collect();
        let accounts: BTreeSet<AccountId> = actions
            .iter()
            .filter_map(|a| a.request.account_id)
            .filter(|a| !self.accounts.contains_key(a))
            .collect();
        (
            sessions.into_iter().collect(),
            accounts.into_iter().collect(),
        )
    }

    /// Every session's and account's SQL id (the copy links every action).
    async fn load(tx: &mut dyn Tx) -> Result<Links, Error> {
        Links::load_which(tx, None).await
    }

    /// The SQL ids of the sessions and accounts `actions` link to: a replay
    /// of a few actions reads a few rows, not every session.
    async fn load_for(tx: &mut dyn Tx, actions: &[Action]) -> Result<Links, Error> {
        let sessions: BTreeSet<SessionId> = actions
            .iter()
            .filter_map(|a| a.request.session_id)
            .collect();
        let accounts: BTreeSet<AccountId> = actions
            .iter()
            .filter_map(|a| a.request.account_id)
            .collect();
        Links::load_which(tx, Some((sessions, accounts))).await
    }

    async fn load_which(
        tx: &mut dyn Tx,
        only: Option<(BTreeSet<SessionId>, BTreeSet<AccountId>)>,
    ) -> Result<Links, Error> {
        let mut sessions = HashMap::new();
        let mut select_sessions = Query::select();
        select_sessions
            .columns([Sessions::Id, Sessions::Alias])
            .from(Sessions::Table);
        if let Some((s, _)) = &only {
            select_sessions
                .and_where(Expr::col(Sessions::Alias).is_in(s.iter().map(|id| id.0.to_vec())));
        }
        if only.as_ref().is_none_or(|(s, _)| !s.is_empty()) {
            for r in &tx.query(&select_sessions).await? {
                sessions.insert(crate::shared::session_alias(r.bytes(1)?)?, r.i64(0)?);
            }
        }
        let accounts = crate::shared::account_ids(tx, only.as_ref().map(|(_, a)| a)).await?;
        Ok(Links { sessions, accounts })
    }
}

/// An action as a chunk stores it: the action without its links, and the
/// SQL ids of the session and account it links to.
type Stored = (Action, Option<i64>, Option<i64>);

/// Writes one chunk with one bulk append, reads it back with one query and
/// compares; returns the largest SQL id written.
async fn write_chunk(
    tx: &mut dyn Tx,
    links: &Links,
    chunk: &[Action],
    report: &mut ActionsReport,
    damage: &Damage,
) -> Result<i64, Error> {
    let (rows, mut expected) = prepare(links, chunk, report, damage)?;
    if expected.is_empty() {
        return Ok(0);
    }
    sqldb::append(tx, Actions::Table, ACTION_COLUMNS, rows).await?;
    let last = verify_chunk(tx, &mut expected).await?;
    report.actions += expected.len() as u64;
    Ok(last)
}

/// A chunk's rows to append, and each action as it must read back: checked,
/// normalised (`rules::action`), its links resolved to SQL ids or dropped
/// (counted in `report`).
fn prepare(
    links: &Links,
    chunk: &[Action],
    report: &mut ActionsReport,
    damage: &Damage,
) -> Result<(Vec<Vec<sea_query::Value>>, Vec<Stored>), Error> {
    let mut rows = Vec::with_capacity(chunk.len());
    let mut expected: Vec<Stored> = Vec::with_capacity(chunk.len());
    for a in chunk {
        a.check().map_err(Error::contract)?;
        if a.locator.index() > i64::MAX as u64 {
            return Err(Error::Invalid {
                record: format!("action {}", a.locator),
                reason: "locator beyond the largest SQL id".into(),
            });
        }
        let (mut want, dropped) = crate::rules::action(
            a,
            |s| links.sessions.contains_key(&s),
            |x| links.accounts.contains_key(&x),
        );
        let key = a.locator.index().to_be_bytes();
        let lost = |linked: String| damage.skip_lost_link(ACTIONS_TREE, &key, &linked);
        if let Some(s) = a.request.session_id.filter(|_| dropped.session)
            && lost(format!("session {s}"))
        {
            continue;
        }
        if let Some(x) = a.request.account_id.filter(|_| dropped.account)
            && lost(format!("account {x}"))
        {
            continue;
        }
        report.session_links_dropped += u64::from(dropped.session);
        report.account_links_dropped += u64::from(dropped.account);
        let session = want
            .request
            .session_id
            .take()
            .and_then(|s| links.sessions.get(&s).copied());
        let account = want
            .request
            .account_id
            .take()
            .and_then(|x| links.accounts.get(&x).copied());
        rows.push(action_row(a, session, account));
        expected.push((want, session, account));
    }
    Ok((rows, expected))
}

/// Reads back the actions of one chunk (not empty) with one query and
/// compares them with `expected`; returns the largest SQL id.
async fn verify_chunk(tx: &mut dyn Tx, expected: &mut [Stored]) -> Result<i64, Error> {
    // Read in storage order, a chunk's ids ascend within each session only.
    expected.sort_by_key(|(a, ..)| a.locator.index());
    let ids: Vec<i64> = expected
        .iter()
        .map(|(a, ..)| a.locator.index() as i64)
        .collect();
    let (first, last) = (ids[0], ids[ids.len() - 1]);
    let load = load_ids_stored(tx, &ids);
    verify_written("actions", expected.iter(), (first, last), load, check).await?;
    Ok(last)
}

/// Refuses an action read back unlike the one written: its own fields, or
/// the SQL ids of its links.
fn check(kv: &Stored, sql: &Stored) -> Result<(), Error> {
    if kv == sql {
        return Ok(());
    }
    let ((k, k_session, k_account), (s, s_session, s_account)) = (kv, sql);
    let mut d = Diff::default();
    diff_fields!(
        d,
        k,
        s,
        [locator, request, attempted_at, state, error_reason]
    );
    d.field("session (SQL id)", k_session, s_session);
    d.field("account (SQL id)", k_account, s_account);
    Err(Error::Mismatch {
        record: format!("action {}", k.locator),
        diff: d.finish().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use store_actions::{ActionLocator, ActionState, AddAction};

    use super::*;

    fn stored(session: Option<i64>, method: &str) -> Stored {
        let action = Action {
            locator: ActionLocator::from_index(42),
            request: AddAction {
                rpc_method: method.into(),
                ..AddAction::default()
            },
            attempted_at: chrono::DateTime::UNIX_EPOCH,
            state: ActionState::Done,
            error_reason: String::new(),
        };
        (action, session, None)
    }

    /// The read-back compares the links as the SQL ids written, so a link
    /// stored to another row is a mismatch naming it, as a changed field is.
    #[test]
    fn a_link_stored_to_another_row_is_a_mismatch() {
        assert!(check(&stored(Some(7), "/m"), &stored(Some(7), "/m")).is_ok());
        for (sql, field) in [
            (stored(Some(8), "/m"), "session (SQL id)"),
            (stored(None, "/m"), "session (SQL id)"),
            (stored(Some(7), "/n"), "request"),
        ] {
            let err = check(&stored(Some(7), "/m"), &sql).unwrap_err();
            assert!(
                matches!(&err, Error::Mismatch { record, .. } if record == "action 42"),
                "{err}"
            );
            assert!(err.to_string().contains(field), "{err}");
        }
    }
}
