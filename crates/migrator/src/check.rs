//! Proving the source whole before its data is committed (docs/design.md
//! §5.3).
//!
//! sled recovers a damaged log silently, to an earlier consistent state, so
//! a damaged database opens and reads without an error. This pass reads
//! every tree once, on the blocking pool beside the data step, and finds:
//! - trees nodestore does not know (their data would be left behind);
//! - lost writes: the meta tree's write sequence below the one the sidecar
//!   file recorded as durable;
//! - lost or altered entries: a tree whose count or digest differs from the
//!   statistics the stores kept in the same transactions as their writes;
//! - indexes that disagree with their records: the sessions' id and group
//!   indexes, the actions' global and time indexes.
//!
//! References to records that are gone (a session's removed account, the
//! kv-store entries of a deleted session group, …) are known legacy shapes
//! that the store migrations handle, not damage.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use store_sessions::SessionId;
use tombstone::{MigrationSource, TreeStats};

use crate::Error;

/// The trees a nodestore key-value database may hold.
pub const KNOWN_TREES: [&str; 11] = [
    tombstone::SLED_DEFAULT_TREE,
    tombstone::META_TREE,
    store_accounts::kv::TREE,
    store_sessions::kv::SESSIONS_TREE,
    store_sessions::kv::ID_INDEX_TREE,
    store_sessions::kv::GROUP_INDEX_TREE,
    store_firewall::kv::RULES_TREE,
    store_firewall::kv::PRIVACY_TREE,
    store_actions::kv::ACTIONS_TREE,
    store_actions::kv::INDEX_TREE,
    store_actions::kv::TIME_TREE,
];

/// The write sequence the database ends at and the higher one its
/// sidecar recorded as durable, when writes were lost (docs/design.md
/// §2.3); `None` when none were, or there is no sidecar to tell.
pub(crate) fn lost_writes(source: &MigrationSource) -> Result<Option<(u64, u64)>, Error> {
    Ok(match (source.write_seq()?, source.sidecar_seq()) {
        (Some(seq), Some(durable)) if durable > seq => Some((seq, durable)),
        _ => None,
    })
}

/// One thing wrong with a source database.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Problem {
    /// The tree (or `nodestore.meta` for the database as a whole); empty
    /// for damage outside any tree (a log range, a snapshot file).
    pub tree: String,
    /// What is wrong, in words.
    pub what: String,
}

impl std::fmt::Display for Problem {
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

fn problem(tree: &str, what: impl Into<String>) -> Problem {
    Problem {
        tree: tree.to_owned(),
        what: what.into(),
    }
}

/// Reads the whole source and returns what is wrong with it (empty when it
/// is whole). Stops early, returning what it found so far, when `cancel` is
/// set. Errors only when the database cannot be read at all.
pub fn check_source(source: &MigrationSource, cancel: &AtomicBool) -> Result<Vec<Problem>, Error> {
    let mut problems = Vec::new();
    let names = source.tree_names();
    for n in &names {
        if !KNOWN_TREES.contains(&n.as_str()) {
            problems.push(problem(
                n,
                "a tree nodestore does not know; its data would not be migrated",
            ));
        }
    }
    if let Some((seq, durable)) = lost_writes(source)? {
        problems.push(problem(
            tombstone::META_TREE,
            format!(
                "the database ends at write {seq}, but write {durable} was recorded as durable: \
                 the last {} write transactions were lost (sled recovered a damaged log)",
                durable - seq
            ),
        ));
    }
    let recorded = source.recorded_stats()?;
    let mut found: BTreeMap<String, TreeStats> = BTreeMap::new();
    let mut sessions = SessionIndexes::default();
    let mut actions = ActionIndexes::default();
    for name in KNOWN_TREES.iter().skip(2) {
        let Some(tree) = source.tree(name)? else {
            continue;
        };
        let mut stats = TreeStats::default();
        for item in tree.iter() {
            if cancel.load(Ordering::Relaxed) {
                return Ok(problems);
            }
            let (k, v) = item?;
            stats.add(&k, &v);
            match *name {
                store_sessions::kv::SESSIONS_TREE => sessions.session(&k, &v),
                store_sessions::kv::ID_INDEX_TREE => sessions.id_entry(&k, &v),
                store_sessions::kv::GROUP_INDEX_TREE => sessions.member(&k, &v),
                store_actions::kv::ACTIONS_TREE => actions.record(&k, &v),
                store_actions::kv::INDEX_TREE => actions.index_entry(&k, &v),
                store_actions::kv::TIME_TREE => actions.time_entry(&k, &v),
                _ => {}
            }
        }
        found.insert((*name).to_owned(), stats);
    }
    if let Some(recorded) = &recorded {
        for name in KNOWN_TREES.iter().skip(2) {
            let want = recorded.get(*name).copied().unwrap_or_default();
            let got = found.get(*name).copied().unwrap_or_default();
            if want.count != got.count {
                problems.push(problem(
                    name,
                    format!(
                        "holds {} entries; the store recorded {} (entries were lost or never written)",
                        got.count, want.count
                    ),
                ));
            } else if want.digest != got.digest {
                problems.push(problem(
                    name,
                    format!(
                        "its entries differ from what the store recorded (digest {}, recorded {}): \
                         some were lost, altered, or reverted to older values",
                        got.digest, want.digest
                    ),
                ));
            }
        }
    }
    problems.extend(sessions.problems());
    problems.extend(actions.problems());
    if recorded.is_none() {
        problems.extend(cross_check(source)?);
    }
    Ok(problems)
}

/// A format 1 database kept no statistics to check the reader against:
/// sled reads a copy of it too, and the two must agree (docs/sled-format.md
/// §6). Only on a source the reader found no damage in (nothing
/// salvaged): on damage sled may panic, or loop for ever over a page it
/// cannot read, and a salvage reads more than sled by design; that the
/// comparison was not made is then a problem of its own.
fn cross_check(source: &MigrationSource) -> Result<Vec<Problem>, Error> {
    let damaged = source.sled_cannot_open().is_some() || !source.salvaged().is_empty();
    Ok(if damaged {
        vec![problem(
            tombstone::META_TREE,
            "a format 1 database keeps no statistics to check this read against, and this one \
             is damaged: its read was not compared with sled's (sled may panic or loop on damage)",
        )]
    } else {
        source
            .cross_check_with_sled()?
            .into_iter()
            .map(|what| problem(tombstone::META_TREE, what))
            .collect()
    })
}

/// The newest sessions of one id: their creation time, and the key and
/// group of each session created then.
type Newest = (chrono::DateTime<chrono::Utc>, Vec<(Vec<u8>, SessionId)>);

/// The sessions tree against its id and group indexes.
#[derive(Default)]
struct SessionIndexes {
    /// Session id → (newest creation time, the keys and groups of the
    /// sessions created then), from the sessions tree: legacy databases may
    /// hold several sessions of one id, and the id index names a newest one.
    newest: HashMap<SessionId, Newest>,
    /// Id index entries: id → (key, group).
    ids: HashMap<SessionId, (Vec<u8>, SessionId)>,
    /// Group index members: (group, member id).
    members: Vec<(SessionId, SessionId)>,
    unreadable: Vec<Problem>,
}

impl SessionIndexes {
    fn session(&mut self, k: &[u8], v: &[u8]) {
        // Undecodable sessions are the migration's to report, with the key.
        let Ok(s) = store_sessions::kv::decode_session(k, v) else {
            return;
        };
        match self.newest.get_mut(&s.id) {
            Some((t, _)) if *t > s.created_at => {}
            Some((t, tied)) if *t == s.created_at => tied.push((k.to_vec(), s.group_id)),
            _ => {
                self.newest
                    .insert(s.id, (s.created_at, vec![(k.to_vec(), s.group_id)]));
            }
        }
    }

    fn id_entry(&mut self, k: &[u8], v: &[u8]) {
        let tree = store_sessions::kv::ID_INDEX_TREE;
        let rec = kvcodec::decode::<store_sessions::kv::record::IdIndexRecordV1>(
            v,
            store_sessions::kv::record::ID_INDEX_V1,
        );
        match (<[u8; 4]>::try_from(k), rec) {
            (Ok(id), Ok(r)) => {
                self.ids.insert(SessionId(id), (r.key, SessionId(r.group)));
            }
            _ => self.unreadable.push(problem(
                tree,
                format!("entry {} does not decode", hex::encode(k)),
            )),
        }
    }

    fn member(&mut self, k: &[u8], v: &[u8]) {
        let tree = store_sessions::kv::GROUP_INDEX_TREE;
        let rec = kvcodec::decode::<store_sessions::kv::record::GroupMemberRecordV1>(
            v,
            store_sessions::kv::record::GROUP_MEMBER_V1,
        );
        match (k.get(..4).map(<[u8; 4]>::try_from), rec) {
            (Some(Ok(g)), Ok(r)) if k.len() == 12 => {
                self.members.push((SessionId(g), SessionId(r.session)))
            }
            _ => self.unreadable.push(problem(
                tree,
                format!("entry {} does not decode", hex::encode(k)),
            )),
        }
    }

    fn problems(self) -> Vec<Problem> {
        let mut out = self.unreadable;
        let ids_tree = store_sessions::kv::ID_INDEX_TREE;
        let mut missing = 0usize;
        let mut first = None;
        for (id, (_, newest)) in &self.newest {
            match self.ids.get(id) {
                None => {
                    missing += 1;
                    first.get_or_insert(*id);
                }
                Some((k, g)) if !newest.iter().any(|(key, group)| key == k && group == g) => out.push(problem(
                    ids_tree,
                    format!("the entry of session {id} points at another session or group than the newest session with that id"),
                )),
                Some(_) => {}
            }
        }
        if let Some(id) = first {
            out.push(problem(
                ids_tree,
                format!("{missing} sessions have no id index entry (the first: {id})"),
            ));
        }
        let orphans: Vec<&SessionId> = self
            .ids
            .keys()
            .filter(|id| !self.newest.contains_key(id))
            .collect();
        if let Some(id) = orphans.first() {
            out.push(problem(
                ids_tree,
                format!(
                    "{} entries name sessions that are not in the sessions tree (the first: {id})",
                    orphans.len()
                ),
            ));
        }
        let groups_tree = store_sessions::kv::GROUP_INDEX_TREE;
        let bad: Vec<&(SessionId, SessionId)> = self
            .members
            .iter()
            .filter(|(g, m)| self.ids.get(m).is_none_or(|(_, ig)| ig != g))
            .collect();
        if let Some((g, m)) = bad.first() {
            out.push(problem(
                groups_tree,
                format!(
                    "{} members are not sessions of their group (the first: {m} in group {g})",
                    bad.len()
                ),
            ));
        }
        let mut listed: std::collections::HashSet<SessionId> = std::collections::HashSet::new();
        for (_, m) in &self.members {
            listed.insert(*m);
        }
        let unlisted = self.ids.keys().filter(|id| !listed.contains(id)).count();
        if unlisted > 0 {
            out.push(problem(
                groups_tree,
                format!("{unlisted} sessions of the id index are in no group"),
            ));
        }
        out
    }
}

/// The actions tree against its global and time indexes, compared by count
/// and digest, so memory stays flat however many actions there are.
#[derive(Default)]
struct ActionIndexes {
    /// (seq, bucket) of each record, and of each global index entry.
    records: TreeStats,
    index: TreeStats,
    /// The time key of each record, and each time index entry.
    record_times: TreeStats,
    times: TreeStats,
    unreadable: Vec<Problem>,
}

impl ActionIndexes {
    fn record(&mut self, k: &[u8], v: &[u8]) {
        if k.len() != 12 {
            self.unreadable.push(problem(
                store_actions::kv::ACTIONS_TREE,
                format!("key {} is not a session and a sequence", hex::encode(k)),
            ));
            return;
        }
        let (bucket, seq) = k.split_at(4);
        self.records.add(seq, bucket);
        // Undecodable actions are the migration's to report, with the key.
        if let Ok(a) = store_actions::kv::decode_action(k, v) {
            self.record_times.add(
                &store_actions::kv::time_key(a.attempted_at, a.locator.index()),
                &[],
            );
        }
    }

    fn index_entry(&mut self, k: &[u8], v: &[u8]) {
        match store_actions::kv::decode_locator(store_actions::kv::INDEX_TREE, k, v) {
            Ok(loc) => self.index.add(k, &loc.session),
            Err(e) => self
                .unreadable
                .push(problem(store_actions::kv::INDEX_TREE, e.to_string())),
        }
    }

    fn time_entry(&mut self, k: &[u8], _v: &[u8]) {
        self.times.add(k, &[]);
    }

    fn problems(self) -> Vec<Problem> {
        let mut out = self.unreadable;
        let cmp = |a: &TreeStats, b: &TreeStats| a.count == b.count && a.digest == b.digest;
        if !cmp(&self.records, &self.index) {
            out.push(problem(
                store_actions::kv::INDEX_TREE,
                format!(
                    "disagrees with the actions tree: {} index entries for {} actions \
                     (an index entry without its action, or an action without its entry)",
                    self.index.count, self.records.count
                ),
            ));
        }
        if !cmp(&self.record_times, &self.times) {
            out.push(problem(
                store_actions::kv::TIME_TREE,
                format!(
                    "disagrees with the actions tree: {} time index entries for {} actions",
                    self.times.count, self.record_times.count
                ),
            ));
        }
        out
    }
}
