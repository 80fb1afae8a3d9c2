//! Reading a dump out of a SQL or key-value database, read-only.

use std::path::Path;

use store_accounts::LastIndexes;
use store_actions::ActionQuery;
use store_firewall::PrivacyPair;
use tombstone::{KvOptions, MigrationSource};

use serde::Serialize;

use super::{Dump, DumpError, Parts};
use crate::{Error, Location, Result};

/// Told how far a dump has come, store by store (the migration's
/// [`migrator::Progress`]); `None` reports nothing.
pub type Observer = Option<std::sync::Arc<dyn migrator::Progress>>;

/// Tells `observer` that `store` is at `done` of `total`. A dump cannot be
/// stopped half way by its observer: what it returns is ignored.
fn report(observer: &Observer, store: &'static str, done: u64, total: u64) {
    if let Some(o) = observer {
        let _ = o.progress(migrator::ProgressEvent { store, done, total });
    }
}

/// Dumps the stores at `location`.
pub async fn dump(location: &Location) -> Result<Dump> {
    dump_observed(location, None).await
}

/// [`dump`], telling `observer` how far it has come.
pub async fn dump_observed(location: &Location, observer: Observer) -> Result<Dump> {
    match location {
        Location::Kv(dir) => dump_kv_observed(dir, observer).await,
        sql => {
            let db = crate::connect_read_only(&sql.backend())
                .await?
                .ok_or_else(|| Error::NotSql {
                    location: location.to_string(),
                })?;
            dump_sql_observed(&db, observer).await
        }
    }
}

/// Dumps a SQL database through its stores.
pub async fn dump_sql(db: &sqldb::Db) -> Result<Dump> {
    dump_sql_observed(db, None).await
}

/// [`dump_sql`], telling `observer` as each store is read.
pub async fn dump_sql_observed(db: &sqldb::Db, observer: Observer) -> Result<Dump> {
    // What the stores' tables are: nodestore's schema, or litd's (read as
    // it is, docs/design.md §3.6); a database with neither is named.
    let found = migrator::schema::runner().preflight(db).await?;
    if found.applied.is_empty() && found.litd.is_none() {
        return Err(Error::NoSchema {
            database: db.describe(),
        });
    }
    let s = crate::Stores::on_sql(db, crate::OpenReport::default());
    let last_indexes = match s.accounts.last_indexes().await {
        Ok(i) => Some(i),
        Err(store_accounts::Error::NoInvoiceIndexKnown) => None,
        Err(e) => return Err(e.into()),
    };
    let whole = |store, n: usize| report(&observer, store, n as u64, n as u64);
    let accounts = s.accounts.accounts().await?;
    whole("sql accounts", accounts.len());
    let sessions = s.sessions.list_sessions().await?;
    whole("sql sessions", sessions.len());
    let entries = s.firewall.kv_entries().await?;
    let pairs = s.firewall.privacy_pairs().await?;
    whole("sql firewall", entries.len() + pairs.len());
    let actions = s
        .actions
        .list_actions(&ActionQuery::default())
        .await?
        .actions;
    whole("sql actions", actions.len());
    Ok(Dump::from_parts(Parts {
        accounts,
        last_indexes,
        sessions,
        entries,
        pairs,
        actions,
    }))
}

/// Dumps a key-value database, live or tombstoned, read-only.
pub async fn dump_kv(dir: &Path) -> Result<Dump> {
    dump_kv_observed(dir, None).await
}

/// [`dump_kv`], telling `observer` how many records of each store it read.
pub async fn dump_kv_observed(dir: &Path, observer: Observer) -> Result<Dump> {
    let dir = dir.to_path_buf();
    let dir_for_error = dir.clone();
    tokio::task::spawn_blocking(move || read_kv(&dir, &observer, false).map(|(d, _)| d))
        .await
        .map_err(|source| DumpError::Read {
            dir: dir_for_error,
            source,
        })?
}

/// Counts records read from one tree, reporting every few thousand and at
/// the end.
struct Counter<'a> {
    observer: &'a Observer,
    store: &'static str,
    done: u64,
    total: u64,
}

impl Counter<'_> {
    fn tick(&mut self) {
        self.done += 1;
        if self.done.is_multiple_of(4096) {
            report(
                self.observer,
                self.store,
                self.done,
                self.total.max(self.done),
            );
        }
    }
}

impl Drop for Counter<'_> {
    fn drop(&mut self) {
        report(self.observer, self.store, self.done, self.done);
    }
}

/// What a dump of a damaged key-value database left out: a record that
/// does not decode, or a range of keys the reader could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    /// The tree; empty for damage outside any tree (a log range, a
    /// snapshot file).
    pub tree: String,
    /// What was left out and why, in words.
    pub what: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Damage outside any tree (a log range, a snapshot) names its
        // place in `what`.
        if self.tree.is_empty() {
            write!(f, "{}", self.what)
        } else {
            write!(f, "tree {}: {}", self.tree, self.what)
        }
    }
}

/// Dumps what is readable of a key-value database, live, tombstoned or
/// damaged, read-only: records that do not decode and pages that cannot be
/// read are left out and listed, every one (docs/sled-format.md §6).
pub async fn dump_kv_salvaged(dir: &Path, observer: Observer) -> Result<(Dump, Vec<Unreadable>)> {
    let dir = dir.to_path_buf();
    let dir_for_error = dir.clone();
    tokio::task::spawn_blocking(move || read_kv(&dir, &observer, true))
        .await
        .map_err(|source| DumpError::Read {
            dir: dir_for_error,
            source,
        })?
}

fn read_kv(dir: &Path, observer: &Observer, salvage: bool) -> Result<(Dump, Vec<Unreadable>)> {
    let counter = |store, total: usize| Counter {
        observer,
        store,
        done: 0,
        total: total as u64,
    };
    let src = MigrationSource::open(
        dir,
        &KvOptions {
            salvage,
            ..KvOptions::default()
        },
    )?;
    let layout = |tree: &str, e: store_firewall::kv::ParseError| {
        Error::Firewall(store_firewall::Error::InvalidInput {
            record: format!("tree {tree} at {}", e.path),
            field: "entry",
            reason: e.reason,
        })
    };
    let mut unreadable: Vec<Unreadable> = Vec::new();
    // A record that does not decode: left out and listed when salvaging,
    // else the dump's error.
    let mut skip = |tree: &str, key: &[u8], e: Error| -> Result<()> {
        if !salvage {
            return Err(e);
        }
        unreadable.push(Unreadable {
            tree: tree.to_owned(),
            what: format!("record {} does not decode: {e}", hex::encode(key)),
        });
        Ok(())
    };
    let mut parts = Parts {
        accounts: vec![],
        last_indexes: None,
        sessions: vec![],
        entries: vec![],
        pairs: vec![],
        actions: vec![],
    };
    if let Some(t) = src.tree(store_accounts::kv::TREE)? {
        let (mut add, mut settle) = (None, None);
        let mut n = counter("kv accounts", t.len());
        for item in t.iter() {
            n.tick();
            let (k, v) = item?;
            match store_accounts::kv::decode_entry(&k, &v) {
                Ok(store_accounts::kv::Entry::Account(a)) => parts.accounts.push(a),
                Ok(store_accounts::kv::Entry::LastAddIndex(i)) => add = Some(i),
                Ok(store_accounts::kv::Entry::LastSettleIndex(i)) => settle = Some(i),
                Err(e) => skip(store_accounts::kv::TREE, &k, e.into())?,
            }
        }
        if let (Some(add_index), Some(settle_index)) = (add, settle) {
            parts.last_indexes = Some(LastIndexes {
                add_index,
                settle_index,
            });
        }
    }
    if let Some(t) = src.tree(store_sessions::kv::SESSIONS_TREE)? {
        let mut n = counter("kv sessions", t.len());
        for item in t.iter() {
            n.tick();
            let (k, v) = item?;
            match store_sessions::kv::decode_session(&k, &v) {
                Ok(s) => parts.sessions.push(s),
                Err(e) => skip(store_sessions::kv::SESSIONS_TREE, &k, e.into())?,
            }
        }
    }
    if let Some(t) = src.tree(store_firewall::kv::RULES_TREE)? {
        let mut n = counter("kv kv-stores", t.len());
        for item in t.iter() {
            n.tick();
            let (k, v) = item?;
            match store_firewall::kv::parse_entry(&k, &v) {
                Ok(e) => parts.entries.push(e),
                Err(e) => skip(store_firewall::kv::RULES_TREE, &k, layout("rules", e))?,
            }
        }
    }
    if let Some(t) = src.tree(store_firewall::kv::PRIVACY_TREE)? {
        let mut n = counter("kv privacy", t.len());
        for item in t.iter() {
            n.tick();
            let (k, v) = item?;
            match store_firewall::kv::parse_pair(&k, &v) {
                Ok((group, true, from, to)) => parts.pairs.push(PrivacyPair {
                    group,
                    real: from,
                    pseudo: to,
                }),
                Ok(_) => {}
                Err(e) => skip(store_firewall::kv::PRIVACY_TREE, &k, layout("privacy", e))?,
            }
        }
    }
    if let Some(t) = src.tree(store_actions::kv::ACTIONS_TREE)? {
        let mut n = counter("kv actions", t.len());
        for item in t.iter() {
            n.tick();
            let (k, v) = item?;
            match store_actions::kv::decode_action(&k, &v) {
                Ok(a) => parts.actions.push(a),
                Err(e) => skip(store_actions::kv::ACTIONS_TREE, &k, e.into())?,
            }
        }
    }
    unreadable.extend(src.salvaged().into_iter().map(|d| Unreadable {
        tree: d.tree.clone().unwrap_or_default(),
        what: d.what(),
    }));
    Ok((Dump::from_parts(parts), unreadable))
}
