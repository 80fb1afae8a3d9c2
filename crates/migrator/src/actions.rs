//! Actions: the audit log into `actions` (data-model.md 4.9 step 3, with
//! the session and account links our key-value records keep explicitly).
//!
//! Streamed in the order of the key-value global index, each action keeps
//! its locator as its SQL id, so SQL ids follow that order and locators
//! handed out before the migration stay valid. Memory is bounded by the
//! chunk size however many actions there are. A link to a session or an
//! account that is not in SQL is dropped, the action kept, and both counted.
//! Every action is read back and compared; empty and absent RPC params are
//! equal.

use std::collections::{HashMap, HashSet};

use sea_query::{Expr, ExprTrait, Query};
use sqldb::{Dialect, Sql, Tx, TxExt};
use store_accounts::AccountId;
use store_accounts::sql::schema::Accounts;
use store_actions::Action;
use store_actions::kv::{ACTIONS_TREE, INDEX_TREE, decode_action, decode_locator, index_seq};
use store_actions::sql::schema::Actions;
use store_actions::sql::{ACTION_COLUMNS, action_values, load_range};
use store_sessions::SessionId;
use store_sessions::sql::schema::Sessions;
use tombstone::{MigrationSource, ReadTree};

use crate::diff::{Diff, read_back};
use crate::feed::{Feed, Sink};
use crate::{Error, Options, Progress, ProgressEvent};

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

fn decode_error(tree: &'static str, key: &[u8], e: impl std::fmt::Display) -> Error {
    Error::Decode {
        tree,
        key: hex::encode(key),
        reason: e.to_string(),
    }
}

/// Reads the global index in order and loads each action.
fn read_actions(
    index: ReadTree,
    actions: Option<ReadTree>,
    chunk_size: usize,
    out: Sink<Vec<Action>>,
) {
    let loaded = index.iter().map(|item| {
        let (key, value) = item?;
        let seq = index_seq(&key).map_err(|e| decode_error(INDEX_TREE, &key, e))?;
        let loc = decode_locator(INDEX_TREE, &key, &value)
            .map_err(|e| decode_error(INDEX_TREE, &key, e))?;
        let mut akey = loc.session.to_vec();
        akey.extend_from_slice(&key);
        let raw = actions
            .as_ref()
            .map(|t| t.get(&akey))
            .transpose()?
            .flatten()
            .ok_or_else(|| {
                decode_error(
                    ACTIONS_TREE,
                    &akey,
                    format!("action {seq} of the index is missing"),
                )
            })?;
        let a = decode_action(&akey, &raw).map_err(|e| decode_error(ACTIONS_TREE, &akey, e))?;
        if a.locator.index() != seq {
            return Err(decode_error(
                ACTIONS_TREE,
                &akey,
                format!("holds action {}, the index says {seq}", a.locator),
            ));
        }
        Ok(Some(a))
    });
    out.send_chunks(loaded, chunk_size);
}

pub(crate) async fn migrate(
    source: &MigrationSource,
    tx: &mut dyn Tx,
    opts: &Options,
    progress: Option<&dyn Progress>,
    damage: &std::sync::Arc<crate::Damage>,
) -> Result<ActionsReport, Error> {
    let mut report = ActionsReport::default();
    let any = tx
        .query_opt(
            &Query::select()
                .column(Actions::Id)
                .from(Actions::Table)
                .limit(1)
                .to_owned(),
        )
        .await?;
    if any.is_some() {
        return Err(Error::TargetNotEmpty { table: "actions" });
    }
    let Some(index) = source.tree(INDEX_TREE)? else {
        return Ok(report);
    };
    let actions = source.tree(ACTIONS_TREE)?;
    // Locators are handed out in sequence, so the last one is the count,
    // found with one seek; sled's `len` would walk the whole index and keep
    // what it read in memory (136 MiB for a million actions).
    let total = match index.iter().next_back() {
        Some(Ok((key, _))) => index_seq(&key).unwrap_or(0),
        _ => 0,
    };
    let chunk_size = opts.chunk_size.max(1);
    let mut feed = Feed::spawn(INDEX_TREE, damage, move |sink| {
        read_actions(index, actions, chunk_size, sink)
    });
    let mut last_id = 0i64;
    let result = async {
        while let Some(chunk) = feed.next().await {
            let chunk = chunk?;
            last_id = write_chunk(tx, &chunk, &mut report).await?;
            if let Some(p) = progress {
                p.progress(ProgressEvent {
                    store: "actions",
                    done: report.actions,
                    total: Ord::max(total, report.actions),
                })
                .map_err(Error::Aborted)?;
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    feed.finish().await;
    result?;
    if tx.dialect() == Dialect::Postgres && last_id > 0 {
        // Explicit ids do not advance the BIGSERIAL sequence.
        tx.query_sql(Sql::fixed(
            "SELECT setval(pg_get_serial_sequence('actions', 'id'), $1)",
            vec![last_id.into()],
        ))
        .await?;
    }
    Ok(report)
}

/// SQL ids of the sessions and accounts the chunk links to.
async fn link_ids(
    tx: &mut dyn Tx,
    chunk: &[Action],
) -> Result<(HashMap<SessionId, i64>, HashMap<AccountId, i64>), Error> {
    let sessions: HashSet<Vec<u8>> = chunk
        .iter()
        .filter_map(|a| a.request.session_id)
        .map(|s| s.0.to_vec())
        .collect();
    let accounts: HashSet<i64> = chunk
        .iter()
        .filter_map(|a| a.request.account_id)
        .map(AccountId::to_alias)
        .collect();
    let mut s_ids = HashMap::new();
    if !sessions.is_empty() {
        let rows = tx
            .query(
                &Query::select()
                    .columns([Sessions::Id, Sessions::Alias])
                    .from(Sessions::Table)
                    .and_where(Expr::col(Sessions::Alias).is_in(sessions))
                    .to_owned(),
            )
            .await?;
        for r in &rows {
            let alias: [u8; 4] = r
                .bytes(1)?
                .as_slice()
                .try_into()
                .map_err(|_| Error::Invalid {
                    record: "a session".into(),
                    reason: "alias is not 4 bytes".into(),
                })?;
            s_ids.insert(SessionId(alias), r.i64(0)?);
        }
    }
    let mut a_ids = HashMap::new();
    if !accounts.is_empty() {
        let rows = tx
            .query(
                &Query::select()
                    .columns([Accounts::Id, Accounts::Alias])
                    .from(Accounts::Table)
                    .and_where(Expr::col(Accounts::Alias).is_in(accounts))
                    .to_owned(),
            )
            .await?;
        for r in &rows {
            a_ids.insert(AccountId::from_alias(r.i64(1)?), r.i64(0)?);
        }
    }
    Ok((s_ids, a_ids))
}

/// Writes and verifies one chunk; returns the last SQL id written.
async fn write_chunk(
    tx: &mut dyn Tx,
    chunk: &[Action],
    report: &mut ActionsReport,
) -> Result<i64, Error> {
    let (sessions, accounts) = link_ids(tx, chunk).await?;
    let mut insert = Query::insert();
    insert.into_table(Actions::Table).columns(ACTION_COLUMNS);
    let mut expected = Vec::with_capacity(chunk.len());
    for a in chunk {
        a.check().map_err(|e| Error::Contract(e.to_string()))?;
        if a.locator.index() > i64::MAX as u64 {
            return Err(Error::Invalid {
                record: format!("action {}", a.locator),
                reason: "locator beyond the largest SQL id".into(),
            });
        }
        let mut want = a.clone();
        want.attempted_at = sqldb::time::truncate_micros(a.attempted_at);
        let session = match a.request.session_id {
            None => None,
            Some(s) => match sessions.get(&s) {
                Some(id) => Some(*id),
                None => {
                    report.session_links_dropped += 1;
                    want.request.session_id = None;
                    None
                }
            },
        };
        let account = match a.request.account_id {
            None => None,
            Some(id) => match accounts.get(&id) {
                Some(sql) => Some(*sql),
                None => {
                    report.account_links_dropped += 1;
                    want.request.account_id = None;
                    None
                }
            },
        };
        insert.values_panic(action_values(a, session, account));
        expected.push(want);
    }
    tx.exec(&insert).await?;
    let (first, last) = match (expected.first(), expected.last()) {
        (Some(f), Some(l)) => (f.locator.index() as i64, l.locator.index() as i64),
        _ => return Ok(0),
    };
    let read = read_back(
        "actions",
        first,
        last,
        expected.len(),
        load_range(tx, first, last),
    )
    .await?;
    for (kv, sql) in expected.iter().zip(&read) {
        if kv != sql {
            let mut d = Diff::default();
            d.field("locator", &kv.locator, &sql.locator);
            d.field("request", &kv.request, &sql.request);
            d.field("attempted_at", &kv.attempted_at, &sql.attempted_at);
            d.field("state", &kv.state, &sql.state);
            d.field("error_reason", &kv.error_reason, &sql.error_reason);
            return Err(Error::Mismatch {
                record: format!("action {}", kv.locator),
                diff: d.finish().unwrap_or_default(),
            });
        }
    }
    report.actions += expected.len() as u64;
    Ok(last)
}
