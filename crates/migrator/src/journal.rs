//! What an online migration's writes touched (docs/design.md §7.2): the
//! keys the node's routed stores journal, and the journal that holds them
//! until the replay takes them. A leaf: it knows the stores' key types and
//! the migration's error, nothing else of the crate.

use std::collections::HashSet;
use std::sync::Mutex;

use store_accounts::AccountId;
use store_sessions::SessionId;

use crate::Error;

/// A record (or set of records) a write touched.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Touched {
    /// An account, by id.
    Account(AccountId),
    /// The last invoice indexes.
    LastIndexes,
    /// A session, by id.
    Session(SessionId),
    /// A kv-store entry.
    Entry(TouchedEntry),
    /// Every temporary kv-store entry (they were wiped).
    TempEntries,
    /// A session group's privacy map, whole (the copy read it while it
    /// was written).
    Privacy(SessionId),
    /// One privacy pair, by the id it was written under and its real
    /// value: pairs are only ever added, so a replay writes just this one.
    Pair(SessionId, String),
    /// An action, by locator index.
    Action(u64),
    /// Every reserved session (they were deleted together, and which ones
    /// is known only to the store).
    ReservedSessions,
}

/// The keys touched since the journal was last taken: a set, so its memory
/// is bounded by the distinct keys touched, whatever the write rate.
///
/// A write whose outcome is unknown (it failed in a way that may have left
/// it applied, and its key is not known: a new record whose id the failed
/// call never returned) cannot be replayed; [`Journal::uncertain`] says
/// so, and from then on [`Journal::take`] fails, which fails the migration
/// before its last commit (docs/design.md §7.4). A poisoned lock keeps its
/// data: a set of keys is never half-updated, and dropping a key would lose
/// a write.
#[derive(Debug, Default)]
pub struct Journal {
    state: Mutex<JournalState>,
}

#[derive(Debug, Default)]
struct JournalState {
    keys: HashSet<Touched>,
    peak: usize,
    /// A write that may have landed with no key to replay it by.
    uncertain: Option<String>,
}

impl Journal {
    fn state(&self) -> std::sync::MutexGuard<'_, JournalState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that a write touched `key`.
    pub fn record(&self, key: Touched) {
        let mut s = self.state();
        s.keys.insert(key);
        s.peak = s.peak.max(s.keys.len());
    }

    /// Records that a write of `what` failed in a way that may have left it
    /// applied, with no key to replay it by: the migration cannot prove it
    /// and must not finish.
    pub fn uncertain(&self, what: String) {
        let mut s = self.state();
        if s.uncertain.is_none() {
            s.uncertain = Some(what);
        }
    }

    /// The keys touched so far, leaving the journal empty.
    ///
    /// # Errors
    /// [`Error::UncertainWrite`] once a write's outcome was unknown.
    pub fn take(&self) -> Result<Vec<Touched>, Error> {
        let mut s = self.state();
        if let Some(what) = &s.uncertain {
            return Err(Error::UncertainWrite { what: what.clone() });
        }
        Ok(std::mem::take(&mut s.keys).into_iter().collect())
    }

    /// Drops every key (the migration ended).
    pub fn clear(&self) {
        self.state().keys.clear();
    }

    /// Keys waiting to be replayed.
    pub fn pending(&self) -> usize {
        self.state().keys.len()
    }

    /// The most keys the journal held at once.
    pub fn peak(&self) -> usize {
        self.state().peak
    }
}

/// A kv-store entry an online migration saw written: its namespace as the
/// write named it, its scope and key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TouchedEntry {
    /// The namespace of the transaction that wrote it.
    pub ns: store_firewall::Namespace,
    /// The scope it was written in.
    pub scope: store_firewall::Scope,
    /// The key.
    pub key: String,
}
