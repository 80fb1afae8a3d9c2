//! Secondary indexes and constraints set aside for a bulk load and built
//! again afterwards, inside the same transaction (docs/design.md §5.7).
//!
//! Appending rows to a table that carries only its primary key, then
//! building each index once from sorted data, is the fastest way to load a
//! table on both backends: each index is written once instead of being
//! updated row by row in random order. Nothing is lost on failure: the
//! drop and the rebuild are in the caller's transaction, so a rollback
//! brings every index back.
//!
//! What is set aside, per backend:
//! - SQLite: every `CREATE INDEX` of the tables (foreign keys and inline
//!   `UNIQUE` constraints are part of the table and stay);
//! - PostgreSQL: every index that is not a constraint's, every `UNIQUE`
//!   constraint and every foreign key on or into the tables.
//!
//! The statements that rebuild them are the database's own definitions
//! (`sqlite_master.sql`, `pg_get_indexdef`, `pg_get_constraintdef`): names
//! come from the catalog, quoted, never from data.

use sea_query::{Alias, Expr, ExprTrait, Query};

use crate::Dialect;
use crate::error::DbResult;
use crate::tx::{Sql, Tx, TxExt};

/// What [`set_aside`] removed, and how to build it again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "indexes set aside stay gone until rebuilt"]
pub struct SetAside {
    drops: Vec<String>,
    rebuilds: Vec<String>,
}

impl SetAside {
    /// How many indexes and constraints were set aside.
    pub fn len(&self) -> usize {
        self.rebuilds.len()
    }

    /// True when the tables had nothing beyond their primary keys.
    pub fn is_empty(&self) -> bool {
        self.rebuilds.is_empty()
    }

    /// Builds everything set aside again, in the caller's transaction.
    /// Fails as the database fails it: a `UNIQUE` constraint or foreign
    /// key the loaded rows break is a constraint error naming it, and the
    /// caller's rollback restores the state before [`set_aside`].
    pub async fn rebuild(self, tx: &mut dyn Tx) -> DbResult<()> {
        for sql in &self.rebuilds {
            tx.execute_script(sql).await?;
        }
        Ok(())
    }

    /// The statements that build everything set aside again, one index or
    /// constraint each, for a caller that runs them one at a time (and may
    /// commit between them, as an online copy does); each must run.
    pub fn into_statements(self) -> Vec<String> {
        self.rebuilds
    }
}

/// Double-quotes an identifier read from the catalog.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Removes the secondary indexes and constraints of `tables` (see the
/// module documentation) in the caller's transaction, and returns how to
/// build them again. Call it on tables about to be filled in bulk; rebuild
/// before the transaction commits.
pub async fn set_aside(tx: &mut dyn Tx, tables: &[&str]) -> DbResult<SetAside> {
    let mut out = SetAside::default();
    match tx.dialect() {
        Dialect::Sqlite => {
            let rows = tx
                .query(
                    &Query::select()
                        .columns([Alias::new("name"), Alias::new("sql")])
                        .from(Alias::new("sqlite_master"))
                        .and_where(Expr::col(Alias::new("type")).eq("index"))
                        .and_where(Expr::col(Alias::new("sql")).is_not_null())
                        .and_where(Expr::col(Alias::new("tbl_name")).is_in(tables.iter().copied()))
                        .order_by(Alias::new("name"), sea_query::Order::Asc)
                        .to_owned(),
                )
                .await?;
            for r in &rows {
                out.drops
                    .push(format!("DROP INDEX {}", quoted(&r.text(0)?)));
                out.rebuilds.push(r.text(1)?);
            }
        }
        Dialect::Postgres => {
            // Foreign keys first (a UNIQUE constraint cannot go while a
            // foreign key leans on it), built again last.
            let mut fks = Vec::new();
            let mut uniques = Vec::new();
            for c in pg_constraints(tx).await? {
                let on = tables.contains(&c.table.as_str());
                let into = c.into.as_deref().is_some_and(|f| tables.contains(&f));
                match c.kind.as_str() {
                    "f" if on || into => fks.push(c.drop_and_add()),
                    "u" if on => uniques.push(c.drop_and_add()),
                    _ => {}
                }
            }
            let idx = tx
                .query_sql(Sql::fixed(
                    "SELECT i.relname, t.relname, pg_get_indexdef(i.oid) \
                     FROM pg_index x \
                     JOIN pg_class i ON i.oid = x.indexrelid \
                     JOIN pg_class t ON t.oid = x.indrelid \
                     WHERE t.relnamespace = current_schema()::regnamespace \
                       AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid) \
                     ORDER BY i.relname",
                    vec![],
                ))
                .await?;
            let mut plain = Vec::new();
            for r in &idx {
                let (name, table, def) = (r.text(0)?, r.text(1)?, r.text(2)?);
                if tables.contains(&table.as_str()) {
                    plain.push((format!("DROP INDEX {}", quoted(&name)), def));
                }
            }
            for (drop, _) in fks.iter().chain(&uniques).chain(&plain) {
                out.drops.push(drop.clone());
            }
            for (_, add) in uniques.into_iter().chain(plain).chain(fks) {
                out.rebuilds.push(add);
            }
        }
    }
    for sql in &out.drops {
        tx.execute_script(sql).await?;
    }
    Ok(out)
}

/// Removes the foreign keys declared on `tables` (not those into them) in
/// the caller's transaction, and returns how to add them again; their
/// indexes stay, so the loaded rows can be read back by key meanwhile.
///
/// PostgreSQL only, where checking a foreign key row by row locks the
/// parent row for every child row (`FOR KEY SHARE`) and dominates loading
/// child tables, while adding the constraint afterwards checks every row
/// in one join. SQLite's row-by-row check is a plain index probe: there
/// nothing is set aside.
pub async fn set_aside_foreign_keys(tx: &mut dyn Tx, tables: &[&str]) -> DbResult<SetAside> {
    let mut out = SetAside::default();
    if tx.dialect() == Dialect::Postgres {
        for c in pg_constraints(tx).await? {
            if c.kind == "f" && tables.contains(&c.table.as_str()) {
                let (drop, add) = c.drop_and_add();
                out.drops.push(drop);
                out.rebuilds.push(add);
            }
        }
    }
    for sql in &out.drops {
        tx.execute_script(sql).await?;
    }
    Ok(out)
}

/// A `UNIQUE` constraint or foreign key of the current schema, as
/// PostgreSQL's catalog defines it.
struct PgConstraint {
    name: String,
    table: String,
    definition: String,
    /// `u` or `f`.
    kind: String,
    /// The table a foreign key points into.
    into: Option<String>,
}

impl PgConstraint {
    fn drop_and_add(&self) -> (String, String) {
        let (table, name) = (quoted(&self.table), quoted(&self.name));
        (
            format!("ALTER TABLE {table} DROP CONSTRAINT {name}"),
            format!(
                "ALTER TABLE {table} ADD CONSTRAINT {name} {}",
                self.definition
            ),
        )
    }
}

async fn pg_constraints(tx: &mut dyn Tx) -> DbResult<Vec<PgConstraint>> {
    let rows = tx
        .query_sql(Sql::fixed(
            "SELECT c.conname, t.relname, pg_get_constraintdef(c.oid), c.contype::text, \
                    f.relname \
             FROM pg_constraint c \
             JOIN pg_class t ON t.oid = c.conrelid \
             LEFT JOIN pg_class f ON f.oid = c.confrelid \
             WHERE c.contype IN ('f', 'u') \
               AND t.relnamespace = current_schema()::regnamespace \
             ORDER BY c.contype = 'u' DESC, c.conname",
            vec![],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(PgConstraint {
                name: r.text(0)?,
                table: r.text(1)?,
                definition: r.text(2)?,
                kind: r.text(3)?,
                into: r.opt_text(4)?,
            })
        })
        .collect()
}
