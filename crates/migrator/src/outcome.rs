//! What a successful run did: its [`Outcome`] and the [`Report`] of what
//! it moved.

use std::time::Duration;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqldb::DbError;
use sqldb::migrate::MigrateError;
use tombstone::Mark;

use crate::{AccountsReport, ActionsReport, FirewallReport, Problem, SessionsReport};

/// What a migration moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The accounts store.
    pub accounts: AccountsReport,
    /// The sessions store.
    pub sessions: SessionsReport,
    /// The firewall's kv-stores and privacy pairs.
    pub firewall: FirewallReport,
    /// The actions store.
    pub actions: ActionsReport,
    /// Time from the start of the code step to its end (before commit).
    pub duration: Duration,
}

impl Report {
    /// The row counts a migrated target must hold, by table.
    pub fn table_counts(&self) -> [(&'static str, u64); 7] {
        [
            ("accounts", self.accounts.accounts),
            ("account_invoices", self.accounts.invoices),
            ("account_payments", self.accounts.payments),
            ("sessions", self.sessions.sessions),
            ("kvstores", self.firewall.kv_entries),
            ("privacy_pairs", self.firewall.privacy_pairs),
            ("actions", self.actions.actions),
        ]
    }
}

/// What became of the tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TombstoneState {
    /// The key-value database is retired with this mark.
    Written(Mark),
    /// The data is committed, but the mark could not be written (why); the
    /// migration record keeps it pending and every run or open retries it.
    Pending(PendingTombstone),
    /// A dry run marks nothing.
    NotWritten,
    /// sled itself cannot open the key-value database (why): it would
    /// panic, after writing to the log, so no node can run on it. The data
    /// is proved in SQL; the database is left exactly as it was, for a
    /// run again from it, and nothing is pending (docs/design.md §5.6).
    SledCannotOpen(String),
}

/// What kind of success a run was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A dry run: everything migrated and verified, then rolled back.
    Rehearsed,
    /// This run migrated the data.
    Migrated,
    /// The target already held this source's data; this run only finished
    /// what was left (the tombstone, later schema steps).
    AlreadyMigrated,
}

/// What [`migrate`](crate::migrate) did. Only returned when the data is in SQL and
/// verified (or, for a dry run, was verified and rolled back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What kind of run it was.
    pub kind: OutcomeKind,
    /// What was migrated (by this run, or by the run the record is of).
    pub report: Report,
    /// The schema steps this run applied; for a dry run, the steps it
    /// would apply.
    pub applied_steps: Vec<i64>,
    /// The tombstone.
    pub tombstone: TombstoneState,
    /// Schema steps after the key-value step that could not be applied
    /// (why); the data is safe in SQL and the next run or open applies them.
    pub unfinished_steps: Option<String>,
    /// With [`Options::accept_damaged`](crate::Options::accept_damaged): what the source was missing.
    pub accepted_damage: Vec<Problem>,
}

impl Outcome {
    /// True when nothing is left to do: the data is in SQL, the key-value
    /// database is tombstoned (or no node can open it) and every schema
    /// step is applied (a dry run is complete too: it was asked to keep
    /// nothing).
    pub fn is_complete(&self) -> bool {
        match self.kind {
            OutcomeKind::Rehearsed => true,
            _ => {
                matches!(
                    self.tombstone,
                    TombstoneState::Written(_) | TombstoneState::SledCannotOpen(_)
                ) && self.unfinished_steps.is_none()
            }
        }
    }
}

pub(crate) fn outcome_name(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Rehearsed => "rehearsed",
        OutcomeKind::Migrated => "migrated",
        OutcomeKind::AlreadyMigrated => "already_migrated",
    }
}

/// Why a tombstone is still to be written after the data was committed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PendingTombstone {
    /// The committed data could not be proved from a fresh connection.
    #[error(
        "the migrated data could not be confirmed from a fresh connection ({0}); \
         the tombstone is written once it is"
    )]
    Unproved(#[source] Arc<ProofError>),
    /// Writing the mark failed.
    #[error("{0}")]
    MarkFailed(#[source] Arc<tombstone::Error>),
    /// The writer of the mark did not finish (it panicked).
    #[error("{0}")]
    MarkStopped(#[source] Arc<tokio::task::JoinError>),
}

/// Equal when of the same kind and saying the same: the causes are not
/// comparable values.
impl PartialEq for PendingTombstone {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl Eq for PendingTombstone {}

/// Why the committed data could not be proved from a fresh connection
/// (docs/design.md §5.1, step 5).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The fresh connection failed.
    #[error(transparent)]
    Connect(DbError),
    /// The schema runner's preflight refused or failed.
    #[error(transparent)]
    Preflight(MigrateError),
    /// The target has no identity.
    #[error("the target has no identity (schema step 1 is missing)")]
    NoIdentity,
    /// The migration records could not be read.
    #[error(transparent)]
    Records(Box<crate::Error>),
    /// No record of this source.
    #[error("the target holds no migration record of this key-value database")]
    NoRecord,
    /// The record is of another write of the source.
    #[error("the target's record is of write {found}, not {expected}")]
    OtherWrite {
        /// The record's write sequence.
        found: u64,
        /// This run's.
        expected: u64,
    },
    /// Counting a table failed.
    #[error(transparent)]
    Count(DbError),
    /// A table holds another number of rows than the migration wrote.
    #[error("table {table} holds {got} rows, the migration wrote {want}")]
    RowCount {
        /// The table.
        table: &'static str,
        /// Rows found.
        got: u64,
        /// Rows written.
        want: u64,
    },
}
