//! What a successful run did: its [`Outcome`] and the [`Report`] of what
//! it moved.

use std::time::Duration;

use serde::{Deserialize, Serialize};
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
    Pending(String),
    /// A dry run marks nothing.
    NotWritten,
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
    /// database is tombstoned and every schema step is applied (a dry run
    /// is complete too: it was asked to keep nothing).
    pub fn is_complete(&self) -> bool {
        match self.kind {
            OutcomeKind::Rehearsed => true,
            _ => {
                matches!(self.tombstone, TombstoneState::Written(_))
                    && self.unfinished_steps.is_none()
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
