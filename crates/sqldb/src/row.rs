//! Rows read back from either backend, with typed getters.
//!
//! Each executor turns its driver's row into a [`Row`] of backend-neutral
//! [`Cell`]s: SQLite's as it steps through them (its row lives only until
//! the next step), PostgreSQL's one column at a time when a getter reads
//! it, so that a text or blob is copied once, into the value the caller
//! keeps, and the copy runs where the caller reads the row (the migrator's
//! read-back decodes pages of thousands of rows on the blocking pool while
//! the executor fetches the next). The getters absorb the dialect
//! differences that remain: SQLite
//! returns booleans as integers and timestamps as text, PostgreSQL returns
//! native types; SQLite may return NULL where PostgreSQL returns an empty
//! blob, which callers handle with [`Row::bytes_or_empty`].

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::error::{DbError, DbResult, ErrorKind};

/// One column value as read from the database.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Any integer column (SMALLINT, INTEGER, BIGINT) and SQLite booleans.
    Int(i64),
    /// A floating-point column.
    Real(f64),
    /// A text column (and SQLite timestamps).
    Text(String),
    /// A blob / bytea column.
    Blob(Vec<u8>),
    /// A PostgreSQL boolean.
    Bool(bool),
    /// A PostgreSQL timestamp, read as UTC.
    Time(DateTime<Utc>),
}

/// One row: cells in select order, with the column names for error messages.
pub struct Row {
    pub(crate) backend: &'static str,
    pub(crate) columns: Arc<[String]>,
    pub(crate) data: Data,
}

/// A row's values, as its executor made them.
pub(crate) enum Data {
    /// Decoded (SQLite).
    #[cfg_attr(
        not(feature = "sqlite"),
        expect(dead_code, reason = "only the SQLite executor decodes rows whole")
    )]
    Cells(Vec<Cell>),
    /// As received; each column decoded when read (`postgres::cell_at`).
    #[cfg(feature = "postgres")]
    Pg(tokio_postgres::Row),
}

impl Row {
    /// The number of columns.
    pub fn len(&self) -> usize {
        match &self.data {
            Data::Cells(cells) => cells.len(),
            #[cfg(feature = "postgres")]
            Data::Pg(row) => row.len(),
        }
    }

    /// True for a row without columns.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cell at `idx`: borrowed from a row already decoded, made from
    /// the received bytes otherwise. Errors: no such column, or (on
    /// PostgreSQL) a column of a type this crate does not read.
    pub fn cell(&self, idx: usize) -> DbResult<Cow<'_, Cell>> {
        if idx >= self.len() {
            return Err(DbError::new(
                self.backend,
                ErrorKind::Decode,
                format!("column index {idx} out of range ({} columns)", self.len()),
            ));
        }
        match &self.data {
            Data::Cells(cells) => Ok(Cow::Borrowed(&cells[idx])),
            #[cfg(feature = "postgres")]
            Data::Pg(row) => crate::postgres::cell_at(row, idx).map(Cow::Owned),
        }
    }

    /// What the cell at `idx` holds, in words ("an integer", "NULL").
    fn kind(&self, idx: usize) -> &'static str {
        match self.cell(idx).as_deref() {
            Ok(Cell::Null) => "NULL",
            Ok(Cell::Int(_)) => "an integer",
            Ok(Cell::Real(_)) => "a real",
            Ok(Cell::Text(_)) => "text",
            Ok(Cell::Blob(_)) => "a blob",
            Ok(Cell::Bool(_)) => "a boolean",
            Ok(Cell::Time(_)) => "a timestamp",
            Err(_) => "a value of a type it cannot read",
        }
    }

    fn mismatch(&self, idx: usize, want: &str) -> DbError {
        let name = self.columns.get(idx).map(String::as_str).unwrap_or("?");
        let found = if idx >= self.len() {
            "no column"
        } else {
            self.kind(idx)
        };
        DbError::new(
            self.backend,
            ErrorKind::Decode,
            format!("column {idx} ({name}): expected {want}, found {found}"),
        )
    }

    /// A non-NULL integer.
    pub fn i64(&self, idx: usize) -> DbResult<i64> {
        self.opt_i64(idx)?
            .ok_or_else(|| self.mismatch(idx, "an integer"))
    }

    /// An integer or NULL.
    pub fn opt_i64(&self, idx: usize) -> DbResult<Option<i64>> {
        match *self.cell(idx)? {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(v)),
            _ => Err(self.mismatch(idx, "an integer")),
        }
    }

    /// A non-NULL boolean (SQLite: an integer, non-zero is true).
    pub fn bool(&self, idx: usize) -> DbResult<bool> {
        match *self.cell(idx)? {
            Cell::Bool(b) => Ok(b),
            Cell::Int(v) => Ok(v != 0),
            _ => Err(self.mismatch(idx, "a boolean")),
        }
    }

    /// A non-NULL text value.
    pub fn text(&self, idx: usize) -> DbResult<String> {
        self.opt_text(idx)?
            .ok_or_else(|| self.mismatch(idx, "text"))
    }

    /// A text value or NULL.
    pub fn opt_text(&self, idx: usize) -> DbResult<Option<String>> {
        match self.cell(idx)? {
            Cow::Owned(Cell::Text(s)) => Ok(Some(s)),
            Cow::Borrowed(Cell::Text(s)) => Ok(Some(s.clone())),
            c if matches!(*c, Cell::Null) => Ok(None),
            _ => Err(self.mismatch(idx, "text")),
        }
    }

    /// A non-NULL blob.
    pub fn bytes(&self, idx: usize) -> DbResult<Vec<u8>> {
        self.opt_bytes(idx)?
            .ok_or_else(|| self.mismatch(idx, "a blob"))
    }

    /// A blob or NULL.
    pub fn opt_bytes(&self, idx: usize) -> DbResult<Option<Vec<u8>>> {
        match self.cell(idx)? {
            Cow::Owned(Cell::Blob(b)) => Ok(Some(b)),
            Cow::Borrowed(Cell::Blob(b)) => Ok(Some(b.clone())),
            c if matches!(*c, Cell::Null) => Ok(None),
            _ => Err(self.mismatch(idx, "a blob")),
        }
    }

    /// A blob, with NULL read as empty: SQLite may store an empty blob as
    /// NULL where PostgreSQL keeps it empty.
    pub fn bytes_or_empty(&self, idx: usize) -> DbResult<Vec<u8>> {
        Ok(self.opt_bytes(idx)?.unwrap_or_default())
    }

    /// A non-NULL timestamp.
    pub fn time(&self, idx: usize) -> DbResult<DateTime<Utc>> {
        self.opt_time(idx)?
            .ok_or_else(|| self.mismatch(idx, "a timestamp"))
    }

    /// A timestamp or NULL (SQLite: the text form of [`crate::time`]).
    pub fn opt_time(&self, idx: usize) -> DbResult<Option<DateTime<Utc>>> {
        match &*self.cell(idx)? {
            Cell::Null => Ok(None),
            Cell::Time(t) => Ok(Some(*t)),
            Cell::Text(s) => crate::time::parse_sqlite_text(s)
                .map(Some)
                .ok_or_else(|| self.mismatch(idx, "a timestamp text")),
            _ => Err(self.mismatch(idx, "a timestamp")),
        }
    }
}

/// Names the columns and the kind of value each holds, never a value: a
/// row can hold a secret (a session's keys), and a `Debug` of it can end
/// up in a log or a test's failure.
impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut row = f.debug_struct("Row");
        row.field("backend", &self.backend);
        for i in 0..self.len() {
            let name = self.columns.get(i).map(String::as_str).unwrap_or("?");
            row.field(name, &format_args!("{}", self.kind(i)));
        }
        row.finish()
    }
}
