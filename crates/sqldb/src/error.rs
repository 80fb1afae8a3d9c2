//! The error type of every database call, classified once per backend.

use std::fmt;

/// A boxed error source, kept so the driver's own message is never lost.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure a database error is, as far as callers can act on it.
///
/// Each backend maps its driver errors to these kinds in exactly one function
/// (`sqlite::classify` and `postgres::classify`), so store crates branch on
/// the kind and never on driver codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A UNIQUE or PRIMARY KEY constraint rejected the write.
    UniqueViolation,
    /// A FOREIGN KEY constraint rejected the write.
    ForeignKeyViolation,
    /// A CHECK or NOT NULL constraint rejected the write.
    CheckViolation,
    /// The database was busy, or the transaction hit a serialization failure
    /// or deadlock: running the whole transaction again may succeed.
    Retryable,
    /// A value read from the database did not have the expected type or form.
    Decode,
    /// A value could not be bound as a statement parameter.
    Encode,
    /// The connection or pool failed (could not connect, connection lost,
    /// worker thread gone).
    Connection,
    /// Anything else the driver reported.
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::UniqueViolation => "unique constraint violated",
            ErrorKind::ForeignKeyViolation => "foreign key constraint violated",
            ErrorKind::CheckViolation => "check constraint violated",
            ErrorKind::Retryable => "busy or serialization failure (retryable)",
            ErrorKind::Decode => "cannot decode a column value",
            ErrorKind::Encode => "cannot encode a parameter",
            ErrorKind::Connection => "connection failure",
            ErrorKind::Other => "database error",
        })
    }
}

/// A failed database call: which backend, what kind, and the driver's error.
#[derive(Debug, thiserror::Error)]
#[error("{backend}: {kind}: {source}")]
pub struct DbError {
    /// `"sqlite"` or `"postgres"`.
    pub backend: &'static str,
    /// The classified kind.
    pub kind: ErrorKind,
    /// The underlying error.
    #[source]
    pub source: BoxError,
}

impl DbError {
    /// Builds an error of `kind` from any error or message.
    pub fn new(backend: &'static str, kind: ErrorKind, source: impl Into<BoxError>) -> Self {
        DbError {
            backend,
            kind,
            source: source.into(),
        }
    }

    /// True when the write broke a UNIQUE or PRIMARY KEY constraint.
    pub fn is_unique_violation(&self) -> bool {
        self.kind == ErrorKind::UniqueViolation
    }

    /// True when the write broke a FOREIGN KEY constraint.
    pub fn is_foreign_key_violation(&self) -> bool {
        self.kind == ErrorKind::ForeignKeyViolation
    }

    /// True when running the whole transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }
}

/// Shorthand for results of database calls.
pub type DbResult<T> = Result<T, DbError>;
