//! The one-way migration of a node's key-value (sled) data into SQL.
//!
//! # What it does
//! [`migrate`] moves every store of a key-value database into a SQL
//! database, proves it arrived, and only then retires (tombstones) the
//! key-value database. It never reports success it did not achieve, never
//! forks a node's data into two SQL databases, and never retires data it
//! did not prove it moved (docs/design.md §5).
//!
//! # The steps of a run
//! 1. **The source**: the migration lock in the key-value directory is
//!    taken (a second migration of the same database waits for the first,
//!    then finds the work done), and the database is opened read-only
//!    ([`tombstone::MigrationSource`]); one held by a running node is
//!    reported as such.
//! 2. **The target, before any write**: [`Migrator::preflight`](sqldb::migrate::Migrator::preflight) refuses a
//!    database holding tables nodestore did not create, or one written by a
//!    newer nodestore.
//! 3. **The decision** ([`plan`]), by identity: every SQL database has one
//!    (schema step 1), every key-value database too. A target that already
//!    holds this source's data at the same write sequence is *already
//!    migrated*; one that holds other data refuses, naming both; a source
//!    tombstoned into another SQL database refuses unless forced.
//! 4. **The data step**: schema steps up to the key-value step
//!    ([`KV_TO_SQL_VERSION`](sqldb::schema::KV_TO_SQL_VERSION)), the data in that step's one transaction,
//!    every record read back and compared (per chunk, or for the offline
//!    copy of the actions by one pass over the whole table against a count
//!    and digest of what was written), while the whole source is proved
//!    consistent ([`check`]); then every later schema step over that data,
//!    in the same transaction. Any failure rolls everything back.
//! 5. **Proving the target**: after the commit the target is opened afresh,
//!    as a node opens it, and the migration record and per-store counts are
//!    read back.
//! 6. **The tombstone**, naming the target's identity; a mark that cannot be
//!    written stays pending in the migration record and is retried.
//! 7. **Steps a later nodestore adds** (a database migrated before they
//!    existed); one that fails leaves the data safe in SQL and is applied
//!    by the next run or open.
//!
//! An online migration ([`online`]) runs the same steps while the node
//! keeps writing, the data in two transactions: a copy committed as staged
//! ([`staging`]), then the writes made since; a staged copy left by a run
//! that died is discarded by the next run of the same source, before
//! step 4.
//!
//! The result is typed: a [`Failure`] says whether any data may have been
//! written ([`DataState`]), an [`Outcome`] what was done and what is left.

mod accounts;
mod actions;
pub mod check;
mod copy;
mod diff;
mod digest;
mod error;
mod feed;
mod firewall;
pub mod hooks;
mod journal;
mod live;
pub mod online;
mod options;
mod outcome;
mod plan;
mod progress;
mod protocol;
mod record;
pub mod replay;
mod retire;
pub mod rules;
mod run;
pub mod schema;
mod sessions;
mod shared;
pub mod staging;
mod step;

pub use accounts::AccountsReport;
pub use actions::ActionsReport;
pub use check::Problem;
pub use diff::{Difference, Differences};
pub use error::{Contract, DataState, Error, Failure};
pub use firewall::FirewallReport;
pub use live::PieceStats;
pub use options::{MarkWriter, Options, TombstoneMark};
pub use outcome::{Outcome, OutcomeKind, PendingTombstone, ProofError, Report, TombstoneState};
pub use plan::{Plan, SourceFacts, TargetFacts, inspect_source, inspect_target, plan};
pub use progress::{Progress, ProgressEvent};
pub use record::{MigrationRecord, records};
pub use retire::{Retry, retry_pending_tombstone};
pub use run::migrate;
pub use sessions::SessionsReport;
pub use staging::StagedCopy;
pub use step::KvToSql;
