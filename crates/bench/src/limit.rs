//! The bulk-load limits: the same rows the migration writes, read from the
//! same key-value database, written into a fresh database of the same
//! schema without validation, in one transaction, by two loaders:
//!
//! - [`Loader::Honest`], the fastest a specialist would write: the tables
//!   hold only their primary keys while they load (every other index, the
//!   `UNIQUE` constraints PostgreSQL can drop and its foreign keys are set
//!   aside and built afterwards); SQLite: prepared inserts, foreign keys
//!   off and proved afterwards with `PRAGMA foreign_key_check`, a large
//!   page cache, rows keyed by an integer id inserted in id order (the
//!   actions come from the key-value database in another);
//!   PostgreSQL: binary COPY (`Tx::copy_in`).
//! - [`Loader::Simplest`]: the same writes into the full schema, indexes
//!   maintained row by row.
//!
//! Both then build the indexes of the steps after the key-value step. They
//! collect every row before writing (a limit does not care for memory; the
//! migration streams), so read and write times are reported apart.

use std::collections::HashMap;
use std::path::Path;

use migrator::schema::STEPS;
use sea_query::{SimpleExpr, Value};
use sqldb::{Db, Dialect};
use store_accounts::kv::{Entry, decode_entry};
use store_sessions::kv::{SESSIONS_TREE, decode_session};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tombstone::{KvOptions, MigrationSource};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One table's rows.
struct Table {
    name: &'static str,
    columns: Vec<&'static str>,
    rows: Vec<Vec<Value>>,
}

impl Table {
    fn new(name: &'static str, columns: &[&'static str]) -> Table {
        Table {
            name,
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }
}

fn values(exprs: Vec<SimpleExpr>) -> Vec<Value> {
    exprs
        .into_iter()
        .map(|e| match e {
            SimpleExpr::Value(v) => v,
            _ => Value::String(None),
        })
        .collect()
}

/// Reads the key-value database into rows, table by table, in an order
/// that satisfies every foreign key (group founders before members).
fn rows(kv: &Path) -> Result<Vec<Table>, BoxError> {
    let src = MigrationSource::open(kv, &KvOptions::default())?;
    let mut accounts = Table::new(
        "accounts",
        &[
            "id",
            "alias",
            "label",
            "type",
            "initial_balance_msat",
            "current_balance_msat",
            "last_updated",
            "expiration",
        ],
    );
    let mut invoices = Table::new("account_invoices", &["account_id", "hash"]);
    let mut payments = Table::new(
        "account_payments",
        &["account_id", "hash", "status", "full_amount_msat"],
    );
    let mut indices = Table::new("account_indices", &["name", "value"]);
    let mut account_ids = HashMap::new();
    if let Some(t) = src.tree(store_accounts::kv::TREE)? {
        for item in t.iter() {
            let (k, v) = item?;
            match decode_entry(&k, &v)? {
                Entry::Account(a) => {
                    let id = account_ids.len() as i64 + 1;
                    account_ids.insert(a.id, id);
                    accounts.rows.push(vec![
                        id.into(),
                        a.id.to_alias().into(),
                        Value::String((!a.label.is_empty()).then(|| a.label.clone())),
                        i64::from(a.account_type.code()).into(),
                        (a.initial_balance_msat as i64).into(),
                        a.current_balance_msat.into(),
                        a.last_update.into(),
                        a.expiration.unwrap_or_else(sqldb::time::zero_time).into(),
                    ]);
                    for h in &a.invoices {
                        invoices.rows.push(vec![id.into(), h.0.to_vec().into()]);
                    }
                    for (h, p) in &a.payments {
                        payments.rows.push(vec![
                            id.into(),
                            h.0.to_vec().into(),
                            i64::from(p.status.code()).into(),
                            (p.full_amount_msat as i64).into(),
                        ]);
                    }
                }
                Entry::LastAddIndex(i) => indices
                    .rows
                    .push(vec!["last_add_index".into(), (i as i64).into()]),
                Entry::LastSettleIndex(i) => indices
                    .rows
                    .push(vec!["last_settle_index".into(), (i as i64).into()]),
            }
        }
    }

    let mut session_cols = vec!["id"];
    session_cols.extend([
        "alias",
        "label",
        "state",
        "type",
        "expiry",
        "created_at",
        "revoked_at",
        "server_address",
        "dev_server",
        "macaroon_root_key",
        "pairing_secret",
        "local_private_key",
        "local_public_key",
        "remote_public_key",
        "privacy",
        "account_id",
        "group_id",
    ]);
    let mut sessions = Table::new("sessions", &session_cols);
    let mut perms = Table::new(
        "session_macaroon_permissions",
        &["session_id", "entity", "action", "position"],
    );
    let mut caveats = Table::new(
        "session_macaroon_caveats",
        &[
            "session_id",
            "caveat_id",
            "verification_id",
            "location",
            "position",
        ],
    );
    let mut configs = Table::new(
        "session_feature_configs",
        &["session_id", "feature_name", "config"],
    );
    let mut flags = Table::new("session_privacy_flags", &["session_id", "flag"]);
    let mut session_ids = HashMap::new();
    if let Some(t) = src.tree(SESSIONS_TREE)? {
        for founders in [true, false] {
            for item in t.iter() {
                let (k, v) = item?;
                let s = decode_session(&k, &v)?;
                if (s.group_id == s.id) != founders {
                    continue;
                }
                let id = session_ids.len() as i64 + 1;
                session_ids.insert(s.id, id);
                let group = session_ids.get(&s.group_id).copied();
                let account = s.account_id.and_then(|a| account_ids.get(&a).copied());
                let mut row = vec![Value::BigInt(Some(id))];
                row.extend(values(store_sessions::sql::session_values(
                    &s, account, group,
                )));
                sessions.rows.push(row);
                if let Some(r) = &s.macaroon_recipe {
                    for (i, p) in r.permissions.iter().enumerate() {
                        perms.rows.push(vec![
                            id.into(),
                            p.entity.clone().into(),
                            p.action.clone().into(),
                            (i as i64).into(),
                        ]);
                    }
                    for (i, c) in r.caveats.iter().enumerate() {
                        caveats.rows.push(vec![
                            id.into(),
                            c.id.clone().into(),
                            Value::Bytes(c.verification_id.clone()),
                            Value::String((!c.location.is_empty()).then(|| c.location.clone())),
                            (i as i64).into(),
                        ]);
                    }
                }
                for (name, bytes) in s.feature_config.iter().flatten() {
                    configs
                        .rows
                        .push(vec![id.into(), name.clone().into(), bytes.clone().into()]);
                }
                for f in s.privacy_flags.iter() {
                    flags.rows.push(vec![id.into(), i64::from(f.bit()).into()]);
                }
            }
        }
    }

    let mut rules = Table::new("rules", &["id", "name"]);
    let mut features = Table::new("features", &["id", "name"]);
    let mut kvstores = Table::new(
        "kvstores",
        &[
            "perm",
            "rule_id",
            "group_id",
            "feature_id",
            "entry_key",
            "value",
        ],
    );
    let (mut rule_ids, mut feature_ids) = (HashMap::new(), HashMap::new());
    if let Some(t) = src.tree(store_firewall::kv::RULES_TREE)? {
        for item in t.iter() {
            let (k, v) = item?;
            let e = store_firewall::kv::parse_entry(&k, &v).map_err(|e| e.to_string())?;
            let next = rule_ids.len() as i64 + 1;
            let rule = *rule_ids.entry(e.rule.clone()).or_insert_with(|| {
                rules.rows.push(vec![next.into(), e.rule.clone().into()]);
                next
            });
            let feature = e.feature.as_ref().map(|f| {
                let next = feature_ids.len() as i64 + 1;
                *feature_ids.entry(f.clone()).or_insert_with(|| {
                    features.rows.push(vec![next.into(), f.clone().into()]);
                    next
                })
            });
            let group = e.group.and_then(|g| session_ids.get(&g).copied());
            kvstores.rows.push(vec![
                e.perm.into(),
                rule.into(),
                Value::BigInt(group),
                Value::BigInt(feature),
                e.key.into(),
                e.value.into(),
            ]);
        }
    }
    let mut pairs = Table::new("privacy_pairs", &["group_id", "real_val", "pseudo_val"]);
    if let Some(t) = src.tree(store_firewall::kv::PRIVACY_TREE)? {
        for item in t.iter() {
            let (k, v) = item?;
            let (group, forward, from, to) =
                store_firewall::kv::parse_pair(&k, &v).map_err(|e| e.to_string())?;
            if let (true, Some(g)) = (forward, session_ids.get(&group)) {
                pairs.rows.push(vec![(*g).into(), from.into(), to.into()]);
            }
        }
    }

    let mut action_table = Table::new(
        "actions",
        &[
            "id",
            "session_id",
            "account_id",
            "macaroon_identifier",
            "actor_name",
            "feature_name",
            "action_trigger",
            "intent",
            "structured_json_data",
            "rpc_method",
            "rpc_params_json",
            "created_at",
            "action_state",
            "error_reason",
        ],
    );
    // One sequential pass over the actions tree, as the migration reads it
    // (a lookup per action through the global index is a second read of
    // every action's path in the tree).
    if let Some(actions) = src.tree(store_actions::kv::ACTIONS_TREE)? {
        for item in actions.iter() {
            let (akey, raw) = item?;
            let a = store_actions::kv::decode_action(&akey, &raw)?;
            let session = a
                .request
                .session_id
                .and_then(|s| session_ids.get(&s).copied());
            let account = a
                .request
                .account_id
                .and_then(|x| account_ids.get(&x).copied());
            action_table
                .rows
                .push(values(store_actions::sql::action_values(
                    &a, session, account,
                )));
        }
    }
    Ok(vec![
        accounts,
        invoices,
        payments,
        indices,
        sessions,
        perms,
        caveats,
        configs,
        flags,
        rules,
        features,
        kvstores,
        pairs,
        action_table,
    ])
}

/// Which reference loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loader {
    /// Primary keys only during the load, everything else built after.
    Honest,
    /// Every index maintained during the load.
    Simplest,
}

/// Loads the rows of `kv` into the empty database `db` (its schema steps
/// before the key-value step applied), then builds the later steps'
/// indexes. Returns the rows written and the seconds spent reading the
/// key-value database.
pub(crate) async fn load(kv: &Path, db: &Db, loader: Loader) -> Result<(u64, f64), BoxError> {
    let started = std::time::Instant::now();
    let tables = {
        let kv = kv.to_path_buf();
        tokio::task::spawn_blocking(move || rows(&kv)).await??
    };
    let read_seconds = started.elapsed().as_secs_f64();
    let total = tables.iter().map(|t| t.rows.len() as u64).sum();
    let after = STEPS
        .iter()
        .filter(|s| s.version > sqldb::schema::KV_TO_SQL_VERSION)
        .filter_map(|s| s.sql_for(db.dialect()))
        .collect::<Vec<_>>();
    match db.dialect() {
        Dialect::Sqlite => {
            let path = db.as_sqlite().ok_or("not sqlite")?.path().to_path_buf();
            tokio::task::spawn_blocking(move || load_sqlite(&path, tables, after, loader))
                .await??;
        }
        Dialect::Postgres if loader == Loader::Honest => {
            load_postgres_honest(db, tables, after).await?
        }
        Dialect::Postgres => load_postgres(db, tables, after).await?,
    }
    Ok((total, read_seconds))
}

fn load_sqlite(
    path: &Path,
    tables: Vec<Table>,
    after: Vec<String>,
    loader: Loader,
) -> Result<(), BoxError> {
    // The migration's page cache (migrator::Options::sqlite_cache_mib), but
    // no foreign-key checks: the simplest loader trusts its ids, which makes
    // the limit higher than the migration can reach with them on.
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.pragma_update(
        None,
        "cache_size",
        -i64::from(migrator::Options::default().sqlite_cache_mib) * 1024,
    )?;
    let tx = conn.transaction()?;
    let mut rebuild = Vec::new();
    if loader == Loader::Honest {
        let mut q = tx.prepare(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
        )?;
        let found = q
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        drop(q);
        for (name, sql) in found {
            // The name is the catalog's, quoted; never data.
            tx.execute_batch(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))?;
            rebuild.push(sql);
        }
    }
    for mut t in tables {
        if loader == Loader::Honest && t.columns.first() == Some(&"id") {
            // A table keyed by an integer is a B-tree on it: rows appended
            // in key order fill it page by page, in random order they
            // thrash the page cache (sqldb::ordered; the migration stages
            // its actions for this). The limit holds every row, so it sorts.
            t.rows.sort_by_key(|r| match r.first() {
                Some(Value::BigInt(Some(id))) => *id,
                Some(Value::Int(Some(id))) => i64::from(*id),
                _ => i64::MIN,
            });
        }
        let placeholders = vec!["?"; t.columns.len()].join(", ");
        // Table and column names are this file's constants, never data.
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({placeholders})",
            t.name,
            t.columns.join(", ")
        );
        let mut stmt = tx.prepare(&sql)?;
        for row in t.rows {
            let params = row
                .into_iter()
                .map(sqldb::sqlite::bind_one)
                .collect::<Result<Vec<_>, _>>()?;
            stmt.execute(rusqlite::params_from_iter(params))?;
        }
    }
    for sql in rebuild.iter().chain(&after) {
        tx.execute_batch(sql)?;
    }
    if loader == Loader::Honest {
        let broken: i64 =
            tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })?;
        if broken != 0 {
            return Err(format!("{broken} rows break a foreign key").into());
        }
    }
    tx.commit()?;
    Ok(())
}

async fn load_postgres(db: &Db, tables: Vec<Table>, after: Vec<String>) -> Result<(), BoxError> {
    let pg = db.as_postgres().ok_or("not postgres")?;
    let conn = pg.dedicated().await?;
    let client = conn.client();
    client.batch_execute("BEGIN").await?;
    for t in tables {
        let types: Vec<Type> = t.columns.iter().map(|c| column_type(t.name, c)).collect();
        // Table and column names are this file's constants, never data.
        let copy = format!(
            "COPY {} ({}) FROM STDIN BINARY",
            t.name,
            t.columns.join(", ")
        );
        let sink = client.copy_in(&copy).await?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        futures::pin_mut!(writer);
        for row in t.rows {
            let params = row
                .into_iter()
                .zip(&types)
                .map(|(v, ty)| sqldb::postgres::pg_value(v, ty))
                .collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            writer.as_mut().write(&refs).await?;
        }
        writer.finish().await?;
    }
    for sql in after {
        client.batch_execute(&sql).await?;
    }
    client.batch_execute("COMMIT").await?;
    Ok(())
}

/// PostgreSQL, primary keys only during the load: everything else set
/// aside and built again inside the same transaction, rows appended with
/// binary COPY.
async fn load_postgres_honest(
    db: &Db,
    tables: Vec<Table>,
    after: Vec<String>,
) -> Result<(), BoxError> {
    let names: Vec<&'static str> = tables.iter().map(|t| t.name).collect();
    // Once: the load consumes its rows, and nothing writes beside it.
    db.write_once(|tx| {
        Box::pin(async move {
            let aside = sqldb::deferred::set_aside(tx, &names).await?;
            for t in tables {
                tx.copy_in(t.name, &t.columns, t.rows).await?;
            }
            aside.rebuild(tx).await?;
            for sql in &after {
                tx.execute_script(sql).await?;
            }
            Ok::<_, sqldb::DbError>(())
        })
    })
    .await?;
    Ok(())
}

/// The PostgreSQL type of a column of the schema (as `adapt` makes it).
fn column_type(table: &str, column: &str) -> Type {
    match (table, column) {
        (_, "perm" | "dev_server" | "privacy") => Type::BOOL,
        (_, "type" | "status" | "state" | "action_state") => Type::INT2,
        (_, "position" | "flag") => Type::INT4,
        (
            _,
            "hash"
            | "pairing_secret"
            | "local_private_key"
            | "local_public_key"
            | "remote_public_key"
            | "caveat_id"
            | "verification_id"
            | "config"
            | "value"
            | "macaroon_identifier"
            | "structured_json_data"
            | "rpc_params_json",
        ) if !(table == "account_indices" && column == "value") => Type::BYTEA,
        ("sessions", "alias") => Type::BYTEA,
        (_, "last_updated" | "expiration" | "expiry" | "created_at" | "revoked_at") => {
            Type::TIMESTAMP
        }
        (
            _,
            "label" | "name" | "server_address" | "entity" | "action" | "location" | "feature_name"
            | "entry_key" | "real_val" | "pseudo_val" | "actor_name" | "action_trigger" | "intent"
            | "rpc_method" | "error_reason",
        ) => Type::TEXT,
        _ => Type::INT8,
    }
}
