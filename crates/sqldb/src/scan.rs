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
//! database keeps them: 3.8 s, against well under a second in order). So
//! on PostgreSQL [`scan`] declares a cursor over the query, which reads the
//! heap sequentially, and fetches from it a page at a time.

use sea_query::{Expr, ExprTrait, IntoColumnRef, Order, SelectStatement};

use crate::{DbResult, Dialect, Row, Sql, Tx, TxExt};

/// Rows per page.
pub const PAGE: u64 = 8192;

/// Calls `f` with every row `select` returns, [`PAGE`] rows at a time, in
/// no particular order. `select`'s first column must be `key`, a column of
/// unique integers (a primary key): SQLite pages along it. `select` must
/// have no `ORDER BY` and no `LIMIT`.
///
/// Runs inside the transaction, so it sees its uncommitted rows. On
/// PostgreSQL the cursor is closed before it returns, also when `f` fails.
/// Errors: the database's, or the first `f` returns (the scan stops there).
pub async fn scan<E: From<crate::DbError>>(
    tx: &mut dyn Tx,
    select: &SelectStatement,
    key: impl IntoColumnRef + Clone,
    mut f: impl FnMut(Vec<Row>) -> Result<(), E> + Send,
) -> Result<(), E> {
    match tx.dialect() {
        Dialect::Sqlite => {
            let mut after = i64::MIN;
            loop {
                let page = select
                    .clone()
                    .and_where(Expr::col(key.clone()).gt(after))
                    .order_by(key.clone(), Order::Asc)
                    .limit(PAGE)
                    .to_owned();
                let rows = tx.query(&page).await?;
                let last = match rows.last() {
                    Some(r) if rows.len() as u64 == PAGE => Some(r.i64(0)?),
                    _ => None,
                };
                f(rows)?;
                match last {
                    Some(last) => after = last,
                    None => return Ok(()),
                }
            }
        }
        Dialect::Postgres => {
            let query = Dialect::Postgres.build(select);
            // One cursor name and one FETCH text per query: a pooled
            // connection caches prepared statements by their text, and a
            // FETCH's row shape is its cursor's.
            let name = cursor_name(&query.text);
            tx.execute_sql(Sql {
                text: format!("DECLARE {name} NO SCROLL CURSOR FOR {}", query.text),
                values: query.values,
            })
            .await?;
            let fetch = format!("FETCH FORWARD {PAGE} FROM {name}");
            let result = async {
                loop {
                    let rows = tx
                        .query_sql(Sql {
                            text: fetch.clone(),
                            values: sea_query::Values(Vec::new()),
                        })
                        .await?;
                    let full = rows.len() as u64 == PAGE;
                    f(rows)?;
                    if !full {
                        return Ok::<_, E>(());
                    }
                }
            }
            .await;
            let closed = close(tx, &name).await;
            result?;
            Ok(closed?)
        }
    }
}

async fn close(tx: &mut dyn Tx, name: &str) -> DbResult<()> {
    tx.execute_script(&format!("CLOSE {name}")).await
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
