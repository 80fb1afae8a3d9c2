//! A bulk load whose rows arrive out of key order, into a table stored in
//! key order.
//!
//! A SQLite table whose key is an `INTEGER PRIMARY KEY` is a B-tree on
//! that key. Appending rows in random key order touches a random leaf page
//! per row; once the table outgrows the page cache, nearly every row
//! spills a dirty page to the log and reads another back. At scale L, 1M
//! actions read in the key-value database's order (session, then sequence)
//! took 10.6 s to append; the same rows appended to a staging table in
//! the order they come and then moved with one `INSERT … SELECT … ORDER BY`
//! key took 4.1 + 3.2 s. SQLite sorts with bounded memory, spilling to
//! temporary files. So [`OrderedAppend`] stages on SQLite. A PostgreSQL
//! heap is stored in arrival order whatever the key, so there it appends
//! to the table directly.

use sea_query::{Alias, Order, Query};

use crate::tx::plain_identifiers;
use crate::{DbResult, Dialect, Tx};

/// A load into `table` that [`OrderedAppend::finish`] must end, inside the
/// transaction that began it; a rollback undoes the staging too.
#[derive(Debug)]
pub struct OrderedAppend {
    table: String,
    columns: Vec<String>,
    key: String,
    /// SQLite's staging table, in the connection's temporary schema.
    staging: Option<String>,
}

impl OrderedAppend {
    /// Starts a load of `columns` (which include `key`, an integer column
    /// the table is stored in the order of) into `table`. Errors: a name
    /// that is not a plain identifier, or the database's.
    pub async fn begin(
        tx: &mut dyn Tx,
        table: impl sea_query::Iden,
        columns: impl IntoIterator<Item = impl sea_query::Iden>,
        key: impl sea_query::Iden,
    ) -> DbResult<OrderedAppend> {
        let table = table.to_string();
        let columns: Vec<String> = columns.into_iter().map(|c| c.to_string()).collect();
        let key = key.to_string();
        let backend = tx.dialect().name();
        plain_identifiers(backend, &[table.as_str(), key.as_str()])?;
        plain_identifiers(
            backend,
            &columns.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let staging = match tx.dialect() {
            Dialect::Postgres => None,
            Dialect::Sqlite => {
                let staging = format!("nodestore_load_{table}");
                // Names checked above to be plain identifiers; no data.
                tx.execute_script(&format!(
                    "CREATE TEMP TABLE \"{staging}\" AS SELECT {} FROM main.\"{table}\" LIMIT 0",
                    quoted(&columns)
                ))
                .await?;
                Some(staging)
            }
        };
        Ok(OrderedAppend {
            table,
            columns,
            key,
            staging,
        })
    }

    /// Appends `rows` (one value per column, in order) with one
    /// [`Tx::copy_in`]: to the staging table on SQLite, to the table on
    /// PostgreSQL. Nothing to do for no rows.
    pub async fn append(&self, tx: &mut dyn Tx, rows: Vec<Vec<sea_query::Value>>) -> DbResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let into = self.staging.as_ref().unwrap_or(&self.table);
        let columns: Vec<&str> = self.columns.iter().map(String::as_str).collect();
        tx.copy_in(into, &columns, rows).await?;
        Ok(())
    }

    /// Ends the load: on SQLite every staged row moves into the table in
    /// key order, with one statement, and the staging table is dropped.
    /// Errors: the database's (a key already in the table, say).
    pub async fn finish(self, tx: &mut dyn Tx) -> DbResult<()> {
        let Some(staging) = self.staging else {
            return Ok(());
        };
        let columns: Vec<Alias> = self.columns.iter().map(Alias::new).collect();
        let insert = Query::insert()
            .into_table(Alias::new(&self.table))
            .columns(columns.clone())
            .select_from(
                Query::select()
                    .columns(columns)
                    .from(Alias::new(&staging))
                    .order_by(Alias::new(&self.key), Order::Asc)
                    .to_owned(),
            )
            .map_err(|e| crate::DbError::new("sqlite", crate::ErrorKind::Encode, e.to_string()))?
            .to_owned();
        tx.execute_sql(Dialect::Sqlite.build(&insert)).await?;
        tx.execute_script(&format!("DROP TABLE temp.\"{staging}\""))
            .await
    }
}

fn quoted(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}
