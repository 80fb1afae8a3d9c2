//! Replaying what changed in the key-value stores while an online
//! migration copied them (docs/design.md §7.2).
//!
//! A write through the stores during an online migration records what it
//! touched ([`Touched`]) in a [`Journal`]. Replaying a set of touched keys
//! reads each record again from the live stores and makes SQL hold it as
//! the migration's rules say, store by store in the migration's order, with
//! the copy's own writers and read-back comparisons: an existing row is
//! updated in place, a new one inserted, a record gone from the key-value
//! store deleted (after the links to it are dropped, as the migration drops
//! links to what is gone). Replay reads current values, so it is
//! idempotent, and a key replayed twice costs only time.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use sqldb::Tx;
use store_accounts::AccountId;
use store_sessions::SessionId;

use crate::Error;
pub use crate::journal::{Journal, Touched, TouchedEntry};
pub use crate::shared::Deltas;
use crate::shared::{Linked, Replay};

/// The live key-value stores a replay reads from.
#[derive(Clone)]
pub struct LiveStores {
    /// Accounts.
    pub accounts: Arc<dyn store_accounts::Store>,
    /// Sessions.
    pub sessions: Arc<dyn store_sessions::Store>,
    /// Firewall.
    pub firewall: Arc<dyn store_firewall::Store>,
    /// Actions.
    pub actions: Arc<dyn store_actions::Store>,
}

impl std::fmt::Debug for LiveStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStores").finish_non_exhaustive()
    }
}

/// Makes SQL hold what the live stores hold for every key in `keys`, in
/// the migration's store order, adding the rows it changed to `deltas`.
pub async fn replay(
    tx: &mut dyn Tx,
    live: &LiveStores,
    keys: Vec<Touched>,
    deltas: &mut Deltas,
) -> Result<(), Error> {
    let keys: BTreeSet<Touched> = keys.into_iter().collect();
    let mut accounts = Vec::new();
    let mut last_indexes = false;
    let mut sessions = Vec::new();
    let mut entries = Vec::new();
    let mut temp = false;
    let mut privacy = Vec::new();
    let mut pairs = Vec::new();
    let mut actions = Vec::new();
    let mut reserved = false;
    for k in keys {
        match k {
            Touched::Account(id) => accounts.push(id),
            Touched::LastIndexes => last_indexes = true,
            Touched::Session(id) => sessions.push(id),
            Touched::Entry(e) => entries.push(e),
            Touched::TempEntries => temp = true,
            Touched::Privacy(g) => privacy.push(g),
            Touched::Pair(g, real) => pairs.push((g, real)),
            Touched::Action(l) => actions.push(l),
            Touched::ReservedSessions => reserved = true,
        }
    }
    if reserved {
        // Which reserved sessions went is the store's to know: every one
        // SQL holds is read again, and those gone are deleted.
        sessions.extend(crate::sessions::reserved_in_sql(tx).await?);
        sessions.sort();
        sessions.dedup();
    }
    let links = Links(live);
    let mut cx = Replay {
        tx,
        links: &links,
        deltas,
    };
    let t = std::time::Instant::now();
    crate::accounts::replay(cx.tx, &*live.accounts, &accounts, last_indexes, cx.deltas).await?;
    let accounts_ms = t.elapsed().as_millis();
    let t = std::time::Instant::now();
    crate::sessions::replay(&mut cx, &*live.sessions, &sessions).await?;
    let sessions_ms = t.elapsed().as_millis();
    let t = std::time::Instant::now();
    crate::firewall::replay(
        cx.tx,
        &*live.firewall,
        temp,
        &entries,
        (&privacy, &pairs),
        cx.deltas,
    )
    .await?;
    let firewall_ms = t.elapsed().as_millis();
    let t = std::time::Instant::now();
    crate::actions::replay(&mut cx, &*live.actions, &actions).await?;
    tracing::debug!(
        accounts = accounts.len(),
        accounts_ms,
        sessions = sessions.len(),
        sessions_ms,
        entries = entries.len(),
        privacy_groups = privacy.len(),
        firewall_ms,
        actions = actions.len(),
        actions_ms = t.elapsed().as_millis(),
        "replayed"
    );
    Ok(())
}

/// The stores' answers to each other's replay ([`crate::shared::Linked`]).
struct Links<'a>(&'a LiveStores);

#[async_trait]
impl Linked for Links<'_> {
    async fn accounts(
        &self,
        tx: &mut dyn Tx,
        ids: &[AccountId],
        deltas: &mut Deltas,
    ) -> Result<(), Error> {
        crate::accounts::replay(tx, &*self.0.accounts, ids, false, deltas).await
    }

    async fn sessions(
        &self,
        tx: &mut dyn Tx,
        ids: &[SessionId],
        deltas: &mut Deltas,
    ) -> Result<(), Error> {
        let mut cx = Replay {
            tx,
            links: self,
            deltas,
        };
        crate::sessions::replay(&mut cx, &*self.0.sessions, ids).await
    }

    async fn drop_group(
        &self,
        tx: &mut dyn Tx,
        group: i64,
        deltas: &mut Deltas,
    ) -> Result<(), Error> {
        let (entries, pairs) = crate::firewall::delete_group(tx, group).await?;
        deltas.kv_entries -= entries;
        deltas.privacy_pairs -= pairs;
        Ok(())
    }
}
