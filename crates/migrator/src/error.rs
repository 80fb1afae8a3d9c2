//! Why a migration failed ([`Error`]), and what a failed run left behind
//! ([`Failure`], [`DataState`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sqldb::migrate::MigrateError;
use sqldb::schema::KV_TO_SQL_VERSION;
use sqldb::{BoxError, DbError, ErrorKind};
use tombstone::Mark;

use crate::check::Problem;
use crate::diff::Differences;

/// Why a migration failed or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key-value database could not be opened or read.
    #[error("key-value database: {0}")]
    Kv(#[from] tombstone::Error),
    /// A key-value record did not decode.
    #[error("cannot decode tree {tree}, key {key}: {source}")]
    Decode {
        /// The tree.
        tree: &'static str,
        /// The key, in hex.
        key: String,
        /// Why: the codec's or the store's parser's error (a
        /// `kvcodec::CodecError`, say, for a caller to downcast), or a
        /// sentence where the record is unusable for a reason of the
        /// migration's own.
        #[source]
        source: BoxError,
    },
    /// The key-value layout has a bucket or value where none may be.
    #[error("unexpected layout in tree {tree} at {path}: {reason}")]
    Layout {
        /// The tree.
        tree: &'static str,
        /// Where: the bucket path and key.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A record is valid in the key-value store but cannot be stored in SQL.
    #[error("cannot migrate {record}: {reason}")]
    Invalid {
        /// The record.
        record: String,
        /// Why.
        reason: String,
    },
    /// A record breaks the data contract every backend enforces
    /// (docs/design.md §4.1): refused on every target alike.
    #[error("cannot migrate it (the same on every SQL backend): {0}")]
    Contract(#[source] Contract),
    /// A migrated record read back different from the original.
    #[error("migrated {record} does not match the key-value original:\n{diff}")]
    Mismatch {
        /// The record.
        record: String,
        /// The differing fields.
        diff: Differences,
    },
    /// Records just written could not be read back (the database failed).
    #[error("cannot migrate {records} read back: {source}")]
    ReadBack {
        /// The records, by SQL ids.
        records: String,
        /// The database's (or the store's) error.
        #[source]
        source: BoxError,
    },
    /// An online migration's replay could not read a record from the live
    /// key-value stores.
    #[error("cannot migrate {record}: reading it from the live key-value store: {source}")]
    LiveRead {
        /// The record.
        record: String,
        /// The store's error.
        #[source]
        source: BoxError,
    },
    /// A store's SQL writer or reader failed on a record.
    #[error("cannot migrate {record}: {source}")]
    Store {
        /// The record.
        record: String,
        /// The store's error.
        #[source]
        source: BoxError,
    },
    /// The SQL target already holds data in a table the migration fills.
    #[error(
        "the SQL table {table} already holds rows; the migration only writes into an empty database"
    )]
    TargetNotEmpty {
        /// The table.
        table: String,
    },
    /// The source is damaged or inconsistent; nothing was written.
    #[error(
        "the key-value database {path} is damaged or inconsistent, so it was not migrated:\n{}\n\
         `nodestore dump --from kv:{path}` writes out what is readable; \
         `nodestore migrate --accept-damaged` migrates what is readable and records what is missing",
        summarise(.problems),
        path = .path.display()
    )]
    DamagedSource {
        /// The key-value database.
        path: PathBuf,
        /// What is wrong with it.
        problems: Vec<Problem>,
    },
    /// The source has no identity (it was never opened by a nodestore that
    /// writes one).
    #[error("the key-value database {0} has no identity; open it once with this nodestore first")]
    NoIdentity(PathBuf),
    /// The SQL database holds the staged copy of an online migration that
    /// did not finish (docs/design.md §7.3): not data anyone may serve, the
    /// key-value database is still the truth. A migration of that database
    /// discards the copy and starts again; a dry run, which writes nothing,
    /// cannot.
    #[error(
        "{target} holds the staged copy of an online migration of {source_path} that did not finish \
         (the key-value database is still the truth); {what}"
    )]
    UnfinishedOnlineMigration {
        /// The SQL database.
        target: String,
        /// The key-value database the copy is of.
        source_path: String,
        /// What to do, in words.
        what: &'static str,
    },
    /// The SQL database already holds the data of another key-value
    /// database (or of a node that started without one).
    #[error(
        "{target} already holds migrated data from {others}; {path} (identity {identity}) \
         is a different key-value database, so it was not migrated (migrate it into an empty database)",
        path = .path.display(),
        identity = hex::encode(.identity),
        others = if .others.is_empty() {
            "a node that started without a key-value database".to_owned()
        } else {
            .others.iter().map(|(p, i)| format!("{p} (identity {})", hex::encode(i))).collect::<Vec<_>>().join(", ")
        }
    )]
    TargetHoldsOtherData {
        /// The SQL database.
        target: String,
        /// The key-value database this run was asked to migrate.
        path: PathBuf,
        /// Its identity.
        identity: [u8; 16],
        /// The sources the target holds data from: path and identity.
        others: Vec<(String, [u8; 16])>,
    },
    /// The target was made by Lightning Terminal (litd) and holds its data:
    /// a key-value database is migrated only into an empty database or
    /// one nodestore made (docs/design.md §3.6).
    #[error(
        "{target} was made by Lightning Terminal (litd) at schema version {version} and holds \
         litd's data; {path} was not migrated into it (migrate it into an empty database; \
         a node opens litd's database as it is, adopting it)",
        path = .path.display()
    )]
    TargetMadeByLitd {
        /// The SQL database.
        target: String,
        /// litd's schema version there.
        version: i64,
        /// The key-value database this run was asked to migrate.
        path: PathBuf,
    },
    /// The source was migrated into this SQL database, and written to
    /// afterwards: those writes are not in SQL.
    #[error(
        "{path} was migrated into {target} at its write {migrated}, but it is now at write {now}: \
         it was written to after the migration (or is a copy that was), and those writes are not in SQL"
    )]
    SourceChangedSinceMigration {
        /// The key-value database.
        path: PathBuf,
        /// The SQL database.
        target: String,
        /// Its write sequence when migrated.
        migrated: u64,
        /// Its write sequence now.
        now: u64,
    },
    /// The progress callback asked to stop.
    #[error("stopped by the progress callback: {0}")]
    Aborted(BoxError),
    /// A reader of the source stopped without finishing (sled panicked on a
    /// damaged file, say).
    #[error("reading tree {tree} stopped unexpectedly: {reason}")]
    ReaderStopped {
        /// The tree.
        tree: &'static str,
        /// Why, as far as known.
        reason: String,
    },
    /// An online migration: a write of the node's failed in a way that may
    /// have left it applied, and nothing names the record to replay, so the
    /// migration cannot prove SQL holds it (docs/design.md §7.4). The node
    /// stays on the key-value database; the next open migrates again.
    #[error(
        "a write of {what} failed during the online migration and may have been applied;          the migration cannot account for it and stops (the next open migrates again)"
    )]
    UncertainWrite {
        /// The record, as far as known.
        what: String,
    },
    /// An online migration: no cutover attempt fit the pause budget.
    #[error(
        "the online migration gave up its cutover after {attempts} attempts: writes kept          coming faster than they could be replayed within the pause budget of {budget_ms} ms          (a larger online_pause_budget_ms, or a quieter moment, lets it finish)"
    )]
    CutoverGaveUp {
        /// Attempts made.
        attempts: u32,
        /// The budget each had.
        budget_ms: u64,
    },
    /// An online migration was stopped (the stores were closed) before its
    /// last commit: rolled back, nothing served from SQL.
    #[error("the online migration was stopped before its last commit (the stores were closed)")]
    Stopped,
    /// A SQL call failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The schema runner refused or failed outside the code step.
    #[error(transparent)]
    Schema(MigrateError),
    /// The key-value database was already migrated into another SQL
    /// database; migrating it again would fork the node's data.
    #[error(
        "the key-value database {path} was already migrated into {target} on {when}; \
         migrating it into {here} as well would fork the data (force it only if {target} is lost)",
        path = .path.display(),
        target = .mark.target,
        when = .mark.marked_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )]
    MigratedElsewhere {
        /// The key-value database.
        path: PathBuf,
        /// Its tombstone.
        mark: Box<Mark>,
        /// The SQL database this run was asked to fill.
        here: String,
    },
}

impl Error {
    /// True when running the migration again may succeed as it is: a SQL
    /// call failed because the database was busy, or hit a serialization
    /// failure or a deadlock (`sqldb::DbError::is_retryable`), whether it
    /// was the migration's own call or a store's. Never for a refusal, a
    /// damaged source or a record that cannot be migrated.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Db(e) => e.is_retryable(),
            Error::ReadBack { source, .. }
            | Error::Store { source, .. }
            | Error::LiveRead { source, .. } => retryable(source.as_ref()),
            _ => false,
        }
    }

    /// True for errors that say the source is damaged (and that
    /// [`Options::accept_damaged`] may skip).
    pub(crate) fn is_damage(&self) -> bool {
        matches!(self, Error::Decode { .. } | Error::Layout { .. })
    }

    /// The error as one entry of a list of problems, which names the tree
    /// beside it (so `what` does not name it again).
    pub(crate) fn as_problem(&self) -> Problem {
        match self {
            Error::Decode { tree, key, source } => Problem {
                tree: (*tree).to_owned(),
                what: format!("cannot decode key {key}: {source}"),
            },
            Error::Layout { tree, path, reason } => Problem {
                tree: (*tree).to_owned(),
                what: format!("unexpected layout at {path}: {reason}"),
            },
            _ => Problem {
                tree: String::new(),
                what: self.to_string(),
            },
        }
    }
}

/// Whether a failed migration may have written data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataState {
    /// No key-value data was written: the transaction rolled back (or never
    /// began). Schema steps before the data step may have been applied;
    /// they hold no data.
    NotWritten,
    /// The connection was lost while committing the data step: the data
    /// may or may not be in SQL. The key-value database is untouched and
    /// live; the next run finds out which and finishes.
    MaybeCommitted,
}

/// A migration that did not happen: why, and what it left behind.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failure {
    /// Why.
    #[source]
    pub error: Error,
    /// Whether data may have been written.
    pub data: DataState,
    /// Schema steps this run applied before it stopped (none hold data).
    pub schema_steps: Vec<i64>,
}

impl Failure {
    pub(crate) fn before_any_write(error: Error) -> Failure {
        Failure {
            error,
            data: DataState::NotWritten,
            schema_steps: Vec::new(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::before_any_write(e)
    }
}

/// How many problems a refusal names one by one; the rest are counted per
/// tree (and all listed by `--json`).
const NAMED_PROBLEMS: usize = 5;

/// The problems of a damaged source in words: the count per tree, then the
/// first few, so a thousand damaged records are one screen, not a thousand
/// runs (each repaired to find the next).
pub(crate) fn summarise(problems: &[Problem]) -> String {
    let mut per_tree: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for p in problems {
        *per_tree.entry(p.tree.as_str()).or_default() += 1;
    }
    let mut out: Vec<String> = Vec::new();
    if problems.len() > NAMED_PROBLEMS {
        for (tree, n) in &per_tree {
            let tree = if tree.is_empty() {
                "(the database)"
            } else {
                tree
            };
            out.push(format!("  tree {tree}: {n} damaged or inconsistent"));
        }
    }
    out.extend(
        problems
            .iter()
            .take(NAMED_PROBLEMS)
            .map(|p| format!("  {p}")),
    );
    if problems.len() > NAMED_PROBLEMS {
        out.push(format!(
            "  … and {} more (`--json` lists them all)",
            problems.len() - NAMED_PROBLEMS
        ));
    }
    out.join("\n")
}

/// The typed error of a failed schema run: the code step's own error when
/// it failed, the runner's otherwise; and whether the data step's commit
/// may have gone through.
pub(crate) fn schema_failure(e: MigrateError) -> (Error, DataState) {
    match e {
        MigrateError::StepFailed {
            version, source, ..
        } if version == KV_TO_SQL_VERSION => match source.downcast::<Error>() {
            Ok(typed) => (*typed, DataState::NotWritten),
            Err(other) => (
                Error::Schema(MigrateError::StepFailed {
                    version,
                    name: "kvdb_to_sql".into(),
                    source: other,
                }),
                DataState::NotWritten,
            ),
        },
        MigrateError::CommitFailed {
            version, source, ..
        } if version == KV_TO_SQL_VERSION && source.kind == ErrorKind::Connection => {
            (Error::Db(source), DataState::MaybeCommitted)
        }
        other => (Error::Schema(other), DataState::NotWritten),
    }
}

/// The store's refusal of a record that breaks the data contract, kept
/// whole (its `InvalidInput` names the record, the field and why).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Contract {
    /// An account.
    #[error(transparent)]
    Account(#[from] store_accounts::Error),
    /// A session.
    #[error(transparent)]
    Session(#[from] store_sessions::Error),
    /// A kv-store entry or privacy pair.
    #[error(transparent)]
    Firewall(#[from] store_firewall::Error),
    /// An action.
    #[error(transparent)]
    Action(#[from] store_actions::Error),
}

impl Error {
    /// A record's contract check failed.
    pub(crate) fn contract(e: impl Into<Contract>) -> Error {
        Error::Contract(e.into())
    }
}

/// Whether a kept cause is a retryable database failure, reported by the
/// database directly or by a store.
fn retryable(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    if let Some(db) = e.downcast_ref::<DbError>() {
        return db.is_retryable();
    }
    e.downcast_ref::<store_accounts::Error>()
        .map(store_accounts::Error::is_retryable)
        .or_else(|| {
            e.downcast_ref::<store_sessions::Error>()
                .map(store_sessions::Error::is_retryable)
        })
        .or_else(|| {
            e.downcast_ref::<store_firewall::Error>()
                .map(store_firewall::Error::is_retryable)
        })
        .or_else(|| {
            e.downcast_ref::<store_actions::Error>()
                .map(store_actions::Error::is_retryable)
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use sqldb::{DbError, ErrorKind};

    use super::*;

    /// A record that does not decode keeps the codec's error as its
    /// source, for a caller to match, and says it once in the message.
    #[test]
    fn a_decode_error_keeps_the_codecs_error() {
        let e = Error::Decode {
            tree: "accounts",
            key: "ff".into(),
            source: Box::new(kvcodec::CodecError::TrailingBytes(3)),
        };
        assert_eq!(
            e.to_string(),
            "cannot decode tree accounts, key ff: 3 trailing bytes after the record"
        );
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(
            source.downcast_ref::<kvcodec::CodecError>(),
            Some(&kvcodec::CodecError::TrailingBytes(3))
        );
        assert!(e.is_damage());
        assert_eq!(
            e.as_problem().to_string(),
            "tree accounts: cannot decode key ff: 3 trailing bytes after the record",
            "a problem names its tree once"
        );
    }

    #[test]
    fn a_failure_behind_a_read_back_or_a_store_says_whether_a_retry_may_succeed() {
        let busy = || DbError::new("postgres", ErrorKind::Retryable, "serialization failure");
        let lost = || DbError::new("postgres", ErrorKind::Connection, "connection lost");
        assert!(Error::Db(busy()).is_retryable());
        let read_back = Error::ReadBack {
            records: "accounts 1..=5".into(),
            source: Box::new(busy()),
        };
        assert!(read_back.is_retryable());
        // The cause is kept, not folded into a message.
        assert_eq!(
            read_back.to_string(),
            "cannot migrate accounts 1..=5 read back: postgres: busy or serialization failure \
             (retryable): serialization failure"
        );
        let through_a_store = Error::Store {
            record: "session 01020304".into(),
            source: Box::new(store_sessions::Error::from(busy())),
        };
        assert!(through_a_store.is_retryable());
        assert!(!Error::Db(lost()).is_retryable());
        assert!(
            !Error::TargetNotEmpty {
                table: "accounts".into()
            }
            .is_retryable(),
            "a refusal is never retried"
        );
    }
}
