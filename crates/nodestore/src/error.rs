//! Everything opening, migrating or inspecting can fail with, and how the
//! errors of the layers below reach the caller (a database error one way,
//! as [`Error::Db`]).

use std::path::PathBuf;

use crate::{Result, dump};

/// Everything opening, migrating or inspecting can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The key-value database cannot be used (for example, it is tombstoned).
    #[error(transparent)]
    Kv(#[from] tombstone::Error),
    /// A SQL database call failed.
    #[error(transparent)]
    Db(#[from] sqldb::DbError),
    /// The schema steps could not be applied.
    #[error(transparent)]
    Schema(#[from] sqldb::migrate::MigrateError),
    /// The SQL database holds the staged copy of an online migration that
    /// did not finish (docs/design.md §7.3), and the configuration names no
    /// key-value database: the copy is not data to serve.
    #[error(
        "{target} holds the staged copy of an online migration of {kv} that did not finish, \
         and the key-value database is still the truth: open with kv_dir = {kv} \
         (migration \"online\" or \"auto\"), which discards the copy and migrates again"
    )]
    UnfinishedOnlineMigration {
        /// The SQL database.
        target: String,
        /// The key-value database the copy is of.
        kv: String,
    },
    /// A migration did not happen; the failure says whether any data may
    /// have been written.
    #[error("{}", migration_message(kv, target, failure, *during_open))]
    Migration {
        /// The key-value database.
        kv: String,
        /// The SQL target.
        target: String,
        /// Why, and what was left behind.
        #[source]
        failure: Box<migrator::Failure>,
        /// True when `Stores::open` ran it (a node can then defer).
        during_open: bool,
    },
    /// Reading the migration record or retrying a tombstone failed (a
    /// database error of the migrator's comes as [`Error::Db`]).
    #[error(transparent)]
    Migrator(migrator::Error),
    /// The key-value database is retired and the policy forbids migrating.
    #[error(
        "the key-value database {kv} is tombstoned and migration is deferred: nothing can be opened"
    )]
    RetiredAndDeferred {
        /// The key-value database.
        kv: String,
    },
    /// An accounts store call failed (a SQL database's error comes as
    /// [`Error::Db`]).
    #[error(transparent)]
    Accounts(store_accounts::Error),
    /// A sessions store call failed (likewise).
    #[error(transparent)]
    Sessions(store_sessions::Error),
    /// A firewall store call failed (likewise).
    #[error(transparent)]
    Firewall(store_firewall::Error),
    /// An actions store call failed (likewise).
    #[error(transparent)]
    Actions(store_actions::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A dump could not be read, parsed or imported.
    #[error("dump: {0}")]
    Dump(#[source] Box<dump::DumpError>),
    /// A location names a key-value database where a SQL one is needed.
    #[error("{location}: expected a SQL database")]
    NotSql {
        /// The location, without password.
        location: String,
    },
    /// A blocking call did not finish (it panicked, or the runtime shut
    /// down under it).
    #[error("{what} did not finish: {source}")]
    Interrupted {
        /// What it was doing.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// An import was refused before anything was written.
    #[error("{}: {reason}", dir.display())]
    ImportRefused {
        /// The directory it was to write.
        dir: PathBuf,
        /// Why.
        reason: ImportRefusal,
    },
    /// A SQL database with no schema nodestore or Lightning Terminal (litd)
    /// made: empty, or another application's.
    #[error(
        "{database} holds no nodestore (or litd) schema: it is empty; name the database \
         a node or litd wrote, or open it with nodestore to create the schema"
    )]
    NoSchema {
        /// The database, without password.
        database: String,
    },
    /// A report or dump could not be written as JSON.
    #[error("{what} could not be written as JSON: {reason}")]
    Json {
        /// What was being written.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// A store's error, with a SQL database's failure taken out of it: every
/// database error reaches the caller one way, as [`Error::Db`].
macro_rules! from_store_error {
    ($store:ident, $variant:ident) => {
        impl From<$store::Error> for Error {
            fn from(e: $store::Error) -> Error {
                match e {
                    $store::Error::Backend { backend, source } => {
                        match source.downcast::<sqldb::DbError>() {
                            Ok(db) => Error::Db(*db),
                            Err(source) => {
                                Error::$variant($store::Error::Backend { backend, source })
                            }
                        }
                    }
                    other => Error::$variant(other),
                }
            }
        }
    };
}

from_store_error!(store_accounts, Accounts);
from_store_error!(store_sessions, Sessions);
from_store_error!(store_firewall, Firewall);
from_store_error!(store_actions, Actions);

impl From<dump::DumpError> for Error {
    fn from(e: dump::DumpError) -> Error {
        Error::Dump(Box::new(e))
    }
}

impl From<migrator::Error> for Error {
    fn from(e: migrator::Error) -> Error {
        match e {
            migrator::Error::Db(e) => Error::Db(e),
            migrator::Error::Schema(e) => Error::Schema(e),
            other => Error::Migrator(other),
        }
    }
}

impl Error {
    /// True when running the call again may succeed: a SQL database was
    /// busy, or a transaction hit a serialization failure or a deadlock,
    /// in a store's call, the migration's or the schema runner's. Never for
    /// a refusal or invalid input.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Db(e) => e.is_retryable(),
            Error::Migrator(e) => e.is_retryable(),
            Error::Migration { failure, .. } => failure.error.is_retryable(),
            Error::Accounts(e) => e.is_retryable(),
            Error::Sessions(e) => e.is_retryable(),
            Error::Firewall(e) => e.is_retryable(),
            Error::Actions(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Why an import refused its target directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportRefusal {
    /// A key-value database is there already.
    #[error("it already holds a database; import writes a new one")]
    HoldsDatabase,
    /// Other files are there.
    #[error("it is not empty; import writes a new database into a new or empty directory")]
    NotEmpty,
    /// The path has no directory name (`/`, `..`).
    #[error("not a directory name")]
    NotADirectoryName,
}

/// `value` as compact JSON (`pretty`: indented), or [`Error::Json`] naming
/// `what`: an output that cannot be written is an error, never an empty
/// text.
pub fn json_text<T: serde::Serialize>(
    what: &'static str,
    value: &T,
    pretty: bool,
) -> Result<String> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    text.map_err(|e| Error::Json {
        what,
        reason: e.to_string(),
    })
}

/// What a failed migration says: what failed, and exactly what was kept.
fn migration_message(kv: &str, target: &str, f: &migrator::Failure, during_open: bool) -> String {
    use migrator::DataState;
    let mut out = format!(
        "the migration of {kv} into {target} did not happen: {}\n",
        f.error
    );
    match f.data {
        DataState::NotWritten => {
            out.push_str(&format!(
                "no key-value data was written to SQL, and {kv} is unchanged (not tombstoned by this run)"
            ));
            if !f.schema_steps.is_empty() {
                out.push_str(&format!(
                    " (schema steps {:?} were applied to {target}; they hold no data)",
                    f.schema_steps
                ));
            }
            if during_open {
                out.push_str(
                    "\nto keep the node running on the key-value database until this is fixed, \
                     set migration = \"defer\" (NODESTORE_MIGRATION=defer)",
                );
            }
        }
        DataState::MaybeCommitted => out.push_str(&format!(
            "the connection was lost while the data was committed, so it may or may not be in SQL; \
             {kv} is unchanged and not tombstoned. Run the migration again (or open the node): \
             it finds out which, and finishes"
        )),
    }
    out
}
