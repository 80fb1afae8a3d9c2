//! Reads a database's schema back into a backend-neutral [`Shape`], so the
//! SQLite and PostgreSQL results of the same steps can be compared.
//!
//! Types are reduced to families that mean the same on both engines
//! (`int2`, `int4`, `int8`, `text`, `bytes`, `timestamp`, `bool`), applying
//! the dialect rule of [`crate::schema`] to SQLite's declared types.
//! Indexes made by an explicit `CREATE INDEX` are compared by name; those
//! behind a `UNIQUE` column constraint by their columns only, because each
//! engine names them its own way. Partial-index predicates are compared
//! with parentheses, white space and case removed.
//!
//! The queries here read the engines' catalogs, which sea-query does not
//! model; they are fixed text with bound parameters ([`Sql::fixed`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::error::DbResult;
use crate::tx::{Db, Dialect, Sql, Tx};

/// A column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type family.
    pub ty: String,
    /// True when NULL is refused (primary key columns included).
    pub not_null: bool,
}

/// A foreign key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForeignKey {
    /// The referencing columns.
    pub columns: Vec<String>,
    /// The referenced table.
    pub ref_table: String,
    /// The referenced columns.
    pub ref_columns: Vec<String>,
    /// `CASCADE`, `NO ACTION`, `RESTRICT`, `SET NULL` or `SET DEFAULT`.
    pub on_delete: String,
}

/// An index other than the primary key's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Index {
    /// The name of an explicitly created index; `None` for one behind a
    /// `UNIQUE` constraint.
    pub name: Option<String>,
    /// The indexed columns, in order.
    pub columns: Vec<String>,
    /// True for a unique index.
    pub unique: bool,
    /// The normalised `WHERE` predicate of a partial index.
    pub predicate: Option<String>,
}

/// A table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Columns in declaration order.
    pub columns: Vec<Column>,
    /// The primary key's columns (empty when there is none).
    pub primary_key: Vec<String>,
    /// Foreign keys.
    pub foreign_keys: BTreeSet<ForeignKey>,
    /// Indexes.
    pub indexes: BTreeSet<Index>,
    /// True when the table has a CHECK constraint.
    pub has_check: bool,
}

/// Every table of a database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    /// Tables by name.
    pub tables: BTreeMap<String, Table>,
}

/// Reads the schema of `db`.
pub async fn describe(db: &Db) -> DbResult<Shape> {
    let dialect = db.dialect();
    db.read(|tx| {
        Box::pin(async move {
            match dialect {
                Dialect::Sqlite => describe_sqlite(tx).await,
                Dialect::Postgres => describe_postgres(tx).await,
            }
        })
    })
    .await
}

fn normalise_predicate(p: &str) -> String {
    p.chars()
        .filter(|c| !c.is_whitespace() && *c != '(' && *c != ')')
        .flat_map(char::to_lowercase)
        .collect()
}

fn split_list(s: Option<String>) -> Vec<String> {
    s.map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

async fn describe_sqlite(tx: &mut dyn Tx) -> DbResult<Shape> {
    let mut shape = Shape::default();
    let tables = tx
        .query_sql(Sql::fixed(
            "SELECT name, sql FROM sqlite_master \
             WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            vec![],
        ))
        .await?;
    for t in tables {
        let name = t.text(0)?;
        let create_sql = t.text(1)?;
        let mut table = Table {
            has_check: create_sql
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .any(|w| w.eq_ignore_ascii_case("CHECK")),
            ..Table::default()
        };
        sqlite_columns(tx, &name, &mut table).await?;
        sqlite_foreign_keys(tx, &name, &mut table).await?;
        sqlite_indexes(tx, &name, &mut table).await?;
        shape.tables.insert(name, table);
    }
    Ok(shape)
}

/// A SQLite table's columns and primary key.
async fn sqlite_columns(tx: &mut dyn Tx, name: &str, table: &mut Table) -> DbResult<()> {
    let cols = tx
        .query_sql(Sql::fixed(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?) ORDER BY cid",
            vec![name.into()],
        ))
        .await?;
    let pk_count = cols.iter().filter(|c| c.i64(3).unwrap_or(0) > 0).count();
    let mut pk: Vec<(i64, String)> = Vec::new();
    for c in &cols {
        let col = c.text(0)?;
        let declared = c.text(1)?.to_ascii_uppercase();
        let pk_pos = c.i64(3)?;
        if pk_pos > 0 {
            pk.push((pk_pos, col.clone()));
        }
        let ty = match declared.as_str() {
            // Only a lone INTEGER PRIMARY KEY is the 64-bit rowid.
            "INTEGER" if pk_pos > 0 && pk_count == 1 => "int8",
            "INTEGER" => "int4",
            "BIGINT" => "int8",
            "SMALLINT" => "int2",
            "TEXT" => "text",
            "BLOB" => "bytes",
            "TIMESTAMP" => "timestamp",
            "BOOLEAN" => "bool",
            other => other,
        };
        table.columns.push(Column {
            name: col,
            ty: ty.to_ascii_lowercase(),
            not_null: c.bool(2)? || pk_pos > 0,
        });
    }
    pk.sort();
    table.primary_key = pk.into_iter().map(|(_, c)| c).collect();
    Ok(())
}

/// A SQLite table's foreign keys.
async fn sqlite_foreign_keys(tx: &mut dyn Tx, name: &str, table: &mut Table) -> DbResult<()> {
    let fks = tx
        .query_sql(Sql::fixed(
            "SELECT id, \"table\", \"from\", \"to\", on_delete \
             FROM pragma_foreign_key_list(?) ORDER BY id, seq",
            vec![name.into()],
        ))
        .await?;
    let mut by_id: BTreeMap<i64, ForeignKey> = BTreeMap::new();
    for f in &fks {
        let fk = by_id.entry(f.i64(0)?).or_insert_with(|| ForeignKey {
            columns: Vec::new(),
            ref_table: String::new(),
            ref_columns: Vec::new(),
            on_delete: String::new(),
        });
        fk.ref_table = f.text(1)?;
        fk.columns.push(f.text(2)?);
        fk.ref_columns.push(f.text(3)?);
        fk.on_delete = f.text(4)?.to_ascii_uppercase();
    }
    table.foreign_keys = by_id.into_values().collect();
    Ok(())
}

/// A SQLite table's indexes, but its primary key's.
async fn sqlite_indexes(tx: &mut dyn Tx, name: &str, table: &mut Table) -> DbResult<()> {
    let indexes = tx
        .query_sql(Sql::fixed(
            "SELECT name, \"unique\", origin FROM pragma_index_list(?)",
            vec![name.into()],
        ))
        .await?;
    for i in &indexes {
        let index_name = i.text(0)?;
        let origin = i.text(2)?;
        if origin == "pk" {
            continue;
        }
        let columns = tx
            .query_sql(Sql::fixed(
                "SELECT name FROM pragma_index_info(?) ORDER BY seqno",
                vec![index_name.clone().into()],
            ))
            .await?
            .iter()
            .map(|r| r.text(0))
            .collect::<DbResult<Vec<_>>>()?;
        let sql = tx
            .query_sql(Sql::fixed(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
                vec![index_name.clone().into()],
            ))
            .await?
            .first()
            .map(|r| r.opt_text(0))
            .transpose()?
            .flatten();
        let predicate = sql.and_then(|s| {
            let upper = s.to_ascii_uppercase();
            upper
                .rfind(" WHERE ")
                .map(|at| normalise_predicate(&s[at + 7..]))
        });
        table.indexes.insert(Index {
            name: (origin == "c").then_some(index_name),
            columns,
            unique: i.bool(1)?,
            predicate,
        });
    }
    Ok(())
}

async fn describe_postgres(tx: &mut dyn Tx) -> DbResult<Shape> {
    let mut shape = Shape::default();
    let tables = tx
        .query_sql(Sql::fixed(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
             ORDER BY table_name",
            vec![],
        ))
        .await?;
    for t in tables {
        let name = t.text(0)?;
        let primary_key = tx
            .query_sql(Sql::fixed(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
                 ORDER BY array_position(i.indkey::int2[], a.attnum)",
                vec![name.clone().into()],
            ))
            .await?
            .iter()
            .map(|r| r.text(0))
            .collect::<DbResult<Vec<_>>>()?;
        let mut table = Table {
            primary_key,
            ..Table::default()
        };
        let cols = tx
            .query_sql(Sql::fixed(
                "SELECT column_name::text, udt_name::text, is_nullable::text \
                 FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 \
                 ORDER BY ordinal_position",
                vec![name.clone().into()],
            ))
            .await?;
        for c in &cols {
            let ty = match c.text(1)?.as_str() {
                "bytea" => "bytes".to_owned(),
                other => other.to_owned(),
            };
            table.columns.push(Column {
                name: c.text(0)?,
                ty,
                not_null: c.text(2)? == "NO",
            });
        }
        let fks = tx
            .query_sql(Sql::fixed(
                "SELECT \
                   (SELECT string_agg(a.attname::text, ',' ORDER BY k.ord) \
                      FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) \
                      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum), \
                   c.confrelid::regclass::text, \
                   (SELECT string_agg(a.attname::text, ',' ORDER BY k.ord) \
                      FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, ord) \
                      JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum), \
                   c.confdeltype::text \
                 FROM pg_constraint c WHERE c.conrelid = to_regclass($1) AND c.contype = 'f'",
                vec![name.clone().into()],
            ))
            .await?;
        for f in &fks {
            table.foreign_keys.insert(ForeignKey {
                columns: split_list(f.opt_text(0)?),
                ref_table: f.text(1)?,
                ref_columns: split_list(f.opt_text(2)?),
                on_delete: match f.text(3)?.as_str() {
                    "c" => "CASCADE",
                    "r" => "RESTRICT",
                    "n" => "SET NULL",
                    "d" => "SET DEFAULT",
                    _ => "NO ACTION",
                }
                .to_owned(),
            });
        }
        let indexes = tx
            .query_sql(Sql::fixed(
                "SELECT ic.relname::text, ix.indisunique, ix.indisprimary, \
                   pg_get_expr(ix.indpred, ix.indrelid), \
                   EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid), \
                   (SELECT string_agg(a.attname::text, ',' ORDER BY k.ord) \
                      FROM unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                      JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum) \
                 FROM pg_index ix JOIN pg_class ic ON ic.oid = ix.indexrelid \
                 WHERE ix.indrelid = to_regclass($1)",
                vec![name.clone().into()],
            ))
            .await?;
        for i in &indexes {
            if i.bool(2)? {
                continue;
            }
            table.indexes.insert(Index {
                name: if i.bool(4)? { None } else { Some(i.text(0)?) },
                columns: split_list(i.opt_text(5)?),
                unique: i.bool(1)?,
                predicate: i.opt_text(3)?.map(|p| normalise_predicate(&p)),
            });
        }
        let checks = tx
            .query_sql(Sql::fixed(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'c'",
                vec![name.clone().into()],
            ))
            .await?;
        table.has_check = checks.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0) > 0;
        shape.tables.insert(name, table);
    }
    Ok(shape)
}
