//! The online migration's protocol state, in one place (docs/design.md
//! §7.4): the write gate, the journal, whether writes are still journaled,
//! the epoch the switch bumps, the migration's state, the stop request and
//! the longest pause. The node's routed stores and the migration both hold
//! one [`Protocol`]; nothing else holds any of these.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock, watch};

use crate::Error;
use crate::journal::{Journal, Touched};
use crate::online::OnlineState;

/// See the module docs.
#[derive(Debug)]
pub struct Protocol {
    /// Writers hold it shared for their call; the cutover exclusively.
    gate: Arc<RwLock<()>>,
    journal: Arc<Journal>,
    /// False once the migration switched or ended: writes are no longer
    /// journaled.
    recording: AtomicBool,
    /// Bumped at the switch.
    epoch: AtomicU64,
    state: watch::Sender<OnlineState>,
    end: Mutex<EndPhase>,
    longest_pause: Mutex<Duration>,
}

/// See [`Protocol::request_stop`].
#[derive(Debug, Default)]
struct EndPhase {
    stop_requested: bool,
    committing: bool,
}

impl Protocol {
    /// A protocol before its migration starts: writes are journaled from
    /// now on.
    pub fn new() -> Arc<Protocol> {
        Arc::new(Protocol {
            gate: Arc::new(RwLock::new(())),
            journal: Arc::new(Journal::default()),
            recording: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
            state: watch::channel(OnlineState::Starting).0,
            end: Mutex::new(EndPhase::default()),
            longest_pause: Mutex::new(Duration::ZERO),
        })
    }

    /// A writer's entry: the gate, shared, held until its write landed and
    /// was journaled (waits while a cutover holds the gate).
    pub async fn enter(&self) -> OwnedRwLockReadGuard<()> {
        self.gate.clone().read_owned().await
    }

    /// The cutover's pause: the gate, exclusively. Dropping the future
    /// before it resolves gives up the request (queued writers go on).
    pub(crate) async fn pause(&self) -> OwnedRwLockWriteGuard<()> {
        self.gate.clone().write_owned().await
    }

    /// Journals what a write touched (while the migration records).
    pub fn record(&self, keys: impl IntoIterator<Item = Touched>) {
        if self.recording.load(Ordering::Acquire) {
            keys.into_iter().for_each(|k| self.journal.record(k));
        }
    }

    /// Journals a write that may have landed with no key to replay it by:
    /// the migration then fails before its last commit.
    pub fn uncertain(&self, what: String) {
        if self.recording.load(Ordering::Acquire) {
            self.journal.uncertain(what);
        }
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Keys waiting to be replayed.
    pub fn pending(&self) -> usize {
        self.journal.pending()
    }

    /// The switch: from now on the stores run on SQL; nothing more is
    /// journaled.
    pub fn switch(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.stop_recording();
    }

    /// True from the switch on (before the state says so).
    pub fn switched(&self) -> bool {
        self.epoch.load(Ordering::Acquire) > 0
    }

    /// The migration ended without a switch: nothing more is journaled.
    pub fn stop_recording(&self) {
        self.recording.store(false, Ordering::Release);
        self.journal.clear();
    }

    /// Where the migration is.
    pub fn state(&self) -> OnlineState {
        self.state.borrow().clone()
    }

    /// The migration's states as they change.
    pub fn subscribe(&self) -> watch::Receiver<OnlineState> {
        self.state.subscribe()
    }

    pub(crate) fn set(&self, state: OnlineState) {
        self.state.send_replace(state);
    }

    /// The node is closing: true when the migration may be dropped where it
    /// is (its last commit not sent, so dropping it rolls back and leaves
    /// the key-value database the truth); false once the last commit was
    /// sent, when it must run to its end (proof, tombstone, switch) or the
    /// node would write to a database whose data SQL already holds.
    pub fn request_stop(&self) -> bool {
        let mut end = self.end.lock().unwrap_or_else(|p| p.into_inner());
        end.stop_requested = true;
        !end.committing
    }

    /// Called right before the last commit is sent: false when the node
    /// asked to stop first (the migration then rolls back), true when the
    /// commit may go, after which no stop request drops the migration.
    pub(crate) fn begin_last_commit(&self) -> bool {
        let mut end = self.end.lock().unwrap_or_else(|p| p.into_inner());
        if end.stop_requested {
            return false;
        }
        end.committing = true;
        true
    }

    /// The migration was dropped before its last commit: nothing more is
    /// journaled, and the state says why.
    pub fn stopped(&self) {
        self.stop_recording();
        if !self.state().is_final() {
            self.set(OnlineState::Failed {
                error: Arc::new(Error::Stopped.into()),
            });
        }
    }

    pub(crate) fn paused_for(&self, d: Duration) {
        let mut l = self.longest_pause.lock().unwrap_or_else(|p| p.into_inner());
        *l = (*l).max(d);
    }

    /// The longest time writers waited at a cutover attempt so far.
    pub fn longest_pause(&self) -> Duration {
        *self.longest_pause.lock().unwrap_or_else(|p| p.into_inner())
    }
}
