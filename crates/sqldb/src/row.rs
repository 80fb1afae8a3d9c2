//! Rows read back from either backend, with typed getters.
//!
//! Each executor turns its driver's row into a [`Row`] of backend-neutral
//! [`Cell`]s. The getters absorb the dialect differences that remain: SQLite
//! returns booleans as integers and timestamps as text, PostgreSQL returns
//! native types; SQLite may return NULL where PostgreSQL returns an empty
//! blob, which callers handle with [`Row::bytes_or_empty`].

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
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub(crate) backend: &'static str,
    pub(crate) columns: Arc<[String]>,
    pub(crate) cells: Vec<Cell>,
}

impl Row {
    /// The number of columns.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// True for a row without columns.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The raw cell at `idx`.
    pub fn cell(&self, idx: usize) -> DbResult<&Cell> {
        self.cells.get(idx).ok_or_else(|| {
            DbError::new(
                self.backend,
                ErrorKind::Decode,
                format!(
                    "column index {idx} out of range ({} columns)",
                    self.cells.len()
                ),
            )
        })
    }

    fn mismatch(&self, idx: usize, want: &str) -> DbError {
        let name = self.columns.get(idx).map(String::as_str).unwrap_or("?");
        let found = match self.cells.get(idx) {
            Some(Cell::Null) => "NULL",
            Some(Cell::Int(_)) => "an integer",
            Some(Cell::Real(_)) => "a real",
            Some(Cell::Text(_)) => "text",
            Some(Cell::Blob(_)) => "a blob",
            Some(Cell::Bool(_)) => "a boolean",
            Some(Cell::Time(_)) => "a timestamp",
            None => "no column",
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
        match self.cell(idx)? {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(*v)),
            _ => Err(self.mismatch(idx, "an integer")),
        }
    }

    /// A non-NULL boolean (SQLite: an integer, non-zero is true).
    pub fn bool(&self, idx: usize) -> DbResult<bool> {
        match self.cell(idx)? {
            Cell::Bool(b) => Ok(*b),
            Cell::Int(v) => Ok(*v != 0),
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
            Cell::Null => Ok(None),
            Cell::Text(s) => Ok(Some(s.clone())),
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
            Cell::Null => Ok(None),
            Cell::Blob(b) => Ok(Some(b.clone())),
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
        match self.cell(idx)? {
            Cell::Null => Ok(None),
            Cell::Time(t) => Ok(Some(*t)),
            Cell::Text(s) => crate::time::parse_sqlite_text(s)
                .map(Some)
                .ok_or_else(|| self.mismatch(idx, "a timestamp text")),
            _ => Err(self.mismatch(idx, "a timestamp")),
        }
    }
}
