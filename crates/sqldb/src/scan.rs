//! Reading every row a query returns, a page at a time, in the table's
//! physical order: how a check reads back a whole table it just loaded
//! without holding it in memory and without a lookup per row.
//!
//! Paging along the primary key (`WHERE id > last ORDER BY id LIMIT n`) is
//! the portable way, and on SQLite it is also the physical order: a table
//! whose key is an `INTEGER PRIMARY KEY` is stored in key order. A
//! PostgreSQL heap is stored in the order rows were inserted; when that is
//! not key order, every row of a page along the key is a visit to another
//! heap page (at scale L, 1M actions loaded in the order the key-value
//! database keeps them: 28 ms a page of 8,192 along the key, 1 ms from a
//! cursor). So on PostgreSQL a [`Scan`] declares a cursor over the query,
//! which reads the heap sequentially, and fetches from it a page at a
//! time.

use sea_query::{Expr, ExprTrait, Order, SelectStatement};

use crate::{DbResult, Dialect, Row, Sql, Tx, TxExt};

/// Rows per page.
pub const PAGE: u64 = 4096;

/// A read of every row a query returns, a page at a time ([`Scan::next`]),
/// in no particular order, inside one transaction (it sees the
/// transaction's uncommitted rows).
#[derive(Debug)]
pub struct Scan {
    how: How,
    done: bool,
}

#[derive(Debug)]
enum How {
    /// SQLite: pages along `key`, after the last key read.
    Keyset {
        select: Box<SelectStatement>,
        key: sea_query::DynIden,
        after: i64,
    },
    /// PostgreSQL: the cursor's name and its FETCH statement.
    Cursor { name: String, fetch: String },
}

impl Scan {
    /// Starts reading `select`'s rows. Its first column must be `key`, a
    /// column of unique integers (a primary key): SQLite pages along it.
    /// `select` must have no `ORDER BY` and no `LIMIT`. On PostgreSQL this
    /// declares a cursor, which [`Scan::next`] closes at the end and
    /// [`Scan::close`] before it; one left open ends with the transaction.
    pub async fn open(
        tx: &mut dyn Tx,
        select: &SelectStatement,
        key: impl sea_query::IntoIden,
    ) -> DbResult<Scan> {
        let how = match tx.dialect() {
            Dialect::Sqlite => How::Keyset {
                select: Box::new(select.clone()),
                key: key.into_iden(),
                after: i64::MIN,
            },
            Dialect::Postgres => {
                let query = Dialect::Postgres.build(select);
                // One cursor name and one FETCH text per query: a pooled
                // connection caches prepared statements by their text, and
                // a FETCH's row shape is its cursor's.
                let name = cursor_name(&query.text);
                tx.execute_sql(Sql {
                    text: format!("DECLARE {name} NO SCROLL CURSOR FOR {}", query.text),
                    values: query.values,
                })
                .await?;
                let fetch = format!("FETCH FORWARD {PAGE} FROM {name}");
                How::Cursor { name, fetch }
            }
        };
        Ok(Scan { how, done: false })
    }

    /// The next page of at most [`PAGE`] rows, or `None` once every row
    /// was read. Errors: the database's.
    pub async fn next(&mut self, tx: &mut dyn Tx) -> DbResult<Option<Vec<Row>>> {
        if self.done {
            return Ok(None);
        }
        let rows = match &mut self.how {
            How::Keyset { select, key, after } => {
                let page = select
                    .clone()
                    .and_where(Expr::col(key.clone()).gt(*after))
                    .order_by(key.clone(), Order::Asc)
                    .limit(PAGE)
                    .to_owned();
                let rows = tx.query(&page).await?;
                if let Some(last) = rows.last() {
                    *after = last.i64(0)?;
                }
                rows
            }
            How::Cursor { fetch, .. } => {
                tx.query_sql(Sql {
                    text: fetch.clone(),
                    values: sea_query::Values(Vec::new()),
                })
                .await?
            }
        };
        if (rows.len() as u64) < PAGE {
            self.done = true;
            self.close_cursor(tx).await?;
        }
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows))
    }

    /// Stops reading: on PostgreSQL the cursor is closed.
    pub async fn close(mut self, tx: &mut dyn Tx) -> DbResult<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        self.close_cursor(tx).await
    }

    async fn close_cursor(&mut self, tx: &mut dyn Tx) -> DbResult<()> {
        match &self.how {
            How::Cursor { name, .. } => tx.execute_script(&format!("CLOSE {name}")).await,
            How::Keyset { .. } => Ok(()),
        }
    }
}

/// Calls `f` with every row `select` returns, a page at a time, as
/// [`Scan`] reads them. Errors: the database's, or the first `f` returns;
/// the scan stops there, its cursor closed.
pub async fn scan<E: From<crate::DbError>>(
    tx: &mut dyn Tx,
    select: &SelectStatement,
    key: impl sea_query::IntoIden,
    mut f: impl FnMut(Vec<Row>) -> Result<(), E> + Send,
) -> Result<(), E> {
    let mut scan = Scan::open(tx, select, key).await?;
    while let Some(rows) = scan.next(tx).await? {
        if let Err(e) = f(rows) {
            // The callback's error is the one to report.
            let _ = scan.close(tx).await;
            return Err(e);
        }
    }
    Ok(())
}

/// `nodestore_scan_` and a hash of the query's text: an identifier that
/// needs no quoting, the same for the same query.
fn cursor_name(text: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let hash = Sha256::digest(text.as_bytes());
    let mut name = String::from("nodestore_scan_");
    for b in &hash[..8] {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_names_are_plain_identifiers_per_query() {
        let a = cursor_name("SELECT 1");
        assert_eq!(a, cursor_name("SELECT 1"));
        assert_ne!(a, cursor_name("SELECT 2"));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
        assert!(a.len() < 63, "within PostgreSQL's identifier length");
    }
}
