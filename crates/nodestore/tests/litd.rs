//! Lightning Terminal (litd) compatibility, on SQLite and PostgreSQL
//! (docs/design.md §3.6): a database litd made is adopted by nodestore's
//! open and served, dumped and verified as the same records; one litd left
//! dirty, at another version or with a table that differs is refused,
//! naming why, and nothing is written to it; `status` says what opening
//! would do before it happens; a database neither made is named as such.
//!
//! "A database litd made" is built from what litd's schema is: nodestore's
//! steps 2 to 7 (litd's versions 1 to 6), golang-migrate's
//! `schema_migrations` at version 6 and clean, lnd's `migration_tracker`,
//! Go's text form of timestamps on SQLite, and nothing of nodestore's own
//! (its bookkeeping tables, its extra indexes). The data is written by
//! nodestore's stores first, so the records expected back are known.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

mod common;

use std::path::Path;

use nodestore::dump::dump_sql;
use nodestore::generate::{Shape, generate};
use nodestore::{Config, Stores};
use sqldb::{Db, TxExt};
use testkit::sql::{SqlFixture, postgres, sqlite};

use common::backend;

/// A small data set with a row in every table.
const SHAPE: Shape = Shape {
    accounts: 3,
    invoices_per_account: 2,
    payments_per_account: 2,
    sessions: 6,
    kv_entries: 12,
    privacy_pairs: 8,
    actions: 20,
};

/// What nodestore adds to litd's schema, dropped to make litd's database.
const NODESTORE_ONLY: &str = "DROP INDEX actions_session_created_idx;
    DROP INDEX actions_feature_created_idx;
    DROP INDEX actions_state_created_idx;
    DROP INDEX actions_actor_created_idx;
    DROP INDEX actions_method_created_idx;
    DROP TABLE nodestore_online_staging;
    DROP TABLE nodestore_kv_migrations;
    DROP TABLE nodestore_database;
    DROP TABLE nodestore_schema_steps;";

/// Writes the data set through nodestore, then turns the database into one
/// litd made. Returns the records it holds.
async fn litd_made(fx: &SqlFixture, dir: &Path) -> nodestore::dump::Dump {
    let kv = dir.join("kv");
    generate(&kv, SHAPE, 7, &|_, _, _| {}).await.unwrap();
    let config = Config {
        kv_dir: Some(kv),
        ..Config::new(backend(fx))
    };
    let stores = Stores::open(&config).await.unwrap();
    let db = sql_db(&stores);
    let want = dump_sql(&db).await.unwrap();
    assert!(
        !want.accounts.is_empty()
            && !want.sessions.is_empty()
            && !want.kv_entries.is_empty()
            && !want.privacy_pairs.is_empty()
            && !want.actions.is_empty(),
        "every store holds data"
    );
    drop(stores);
    for table in sqldb::schema::tables_of_steps(migrator::schema::STEPS, 2..=6).into_keys() {
        let rows = db
            .read(|tx| {
                let table = table.clone();
                Box::pin(async move {
                    tx.query(
                        &sqldb::sea_query::Query::select()
                            .expr(sqldb::sea_query::Expr::cust("count(*)"))
                            .from(sqldb::sea_query::Alias::new(table))
                            .to_owned(),
                    )
                    .await?[0]
                        .i64(0)
                })
            })
            .await
            .unwrap();
        assert!(rows > 0, "table {table} is populated");
    }
    script(&db, NODESTORE_ONLY).await;
    assert_eq!(litd_version(&db).await, Some((6, false)));
    want
}

fn sql_db(stores: &Stores) -> Db {
    match &stores.backend {
        nodestore::Backend::Sql(db) => db.clone(),
        nodestore::Backend::Kv(_) => panic!("expected SQL"),
    }
}

async fn script(db: &Db, sql: &'static str) {
    db.write(|tx| Box::pin(async move { tx.execute_script(sql).await }))
        .await
        .unwrap();
}

async fn litd_version(db: &Db) -> Option<(i64, bool)> {
    db.read(|tx| Box::pin(async move { sqldb::litd::read(tx).await }))
        .await
        .unwrap()
}

async fn tables(db: &Db) -> Vec<String> {
    sqldb::introspect::describe(db)
        .await
        .unwrap()
        .tables
        .into_keys()
        .collect()
}

/// The fixture's database, as the node's configuration names it.
async fn open(fx: &SqlFixture) -> Db {
    nodestore::connect(&backend(fx)).await.unwrap().unwrap()
}

/// Opens the SQL database alone, as a node built on nodestore would.
fn sql_only(fx: &SqlFixture) -> Config {
    Config::new(backend(fx))
}

/// Status names the database as litd's and what opening will do; opening
/// adopts it (steps 1 to 7 recorded, the later ones applied, litd's
/// tracking left at its version), and the records read back are the ones
/// written; a second open changes nothing.
async fn a_database_litd_made_is_adopted_and_serves_the_same_records(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let want = litd_made(fx, dir.path()).await;
    let db = open(fx).await;

    let status = nodestore::status::status(&sql_only(fx)).await.unwrap();
    assert!(
        status
            .open_would
            .contains("made by Lightning Terminal (litd)")
            && status.open_would.contains("adopt"),
        "{}",
        status.open_would
    );
    assert!(
        !tables(&db)
            .await
            .iter()
            .any(|t| t.starts_with("nodestore_")),
        "status wrote nothing"
    );
    // Reading only: dump serves litd's database as it is.
    assert_eq!(dump_sql(&db).await.unwrap(), want, "dump before adoption");

    let stores = Stores::open(&sql_only(fx)).await.unwrap();
    let applied = stores.report.applied_steps.clone();
    assert_eq!(
        applied,
        migrator::schema::STEPS
            .iter()
            .map(|s| s.version)
            .collect::<Vec<_>>(),
        "step 1 applied, 2-7 adopted, the later ones applied"
    );
    assert_eq!(dump_sql(&sql_db(&stores)).await.unwrap(), want);
    drop(stores);
    assert_eq!(
        litd_version(&db).await,
        Some((6, false)),
        "litd's view kept"
    );
    let status = nodestore::status::status(&sql_only(fx)).await.unwrap();
    let sql = status.sql.unwrap();
    let noted: Vec<i64> = sql
        .steps_applied
        .iter()
        .filter(|s| s.note.as_deref().is_some_and(|n| n.contains("litd")))
        .map(|s| s.version)
        .collect();
    assert_eq!(
        noted,
        (2..=7).collect::<Vec<_>>(),
        "{:?}",
        sql.steps_applied
    );
    let again = Stores::open(&sql_only(fx)).await.unwrap();
    assert!(again.report.applied_steps.is_empty());
    bounds_in_gos_form_find_the_action(&db).await;
}

/// litd binds a listing's time bounds in Go's text form on SQLite: a bound
/// exactly on an action's time finds it (with nodestore's earlier form it
/// did not). On PostgreSQL the bound is a timestamp.
async fn bounds_in_gos_form_find_the_action(db: &Db) {
    let found = db
        .read(|tx| {
            Box::pin(async move {
                let sqlite = tx.dialect() == sqldb::Dialect::Sqlite;
                let first = tx
                    .query_sql(sqldb::Sql::fixed(
                        "SELECT CAST(created_at AS TEXT) FROM actions ORDER BY id LIMIT 1",
                        vec![],
                    ))
                    .await?[0]
                    .text(0)?;
                if sqlite {
                    assert!(first.ends_with(" +0000 UTC"), "{first}");
                }
                let sql = if sqlite {
                    "SELECT count(*) FROM actions WHERE created_at >= ? AND created_at <= ?"
                } else {
                    "SELECT count(*) FROM actions \
                     WHERE created_at >= CAST($1::text AS TIMESTAMP) AND created_at <= CAST($2::text AS TIMESTAMP)"
                };
                tx.query_sql(sqldb::Sql::fixed(
                    sql,
                    vec![first.clone().into(), first.into()],
                ))
                .await?[0]
                    .i64(0)
            })
        })
        .await
        .unwrap();
    assert!(found >= 1, "a bound on an action's own time finds it");
}

/// Each refusal names its reason, and nothing is written.
async fn a_litd_database_that_cannot_be_adopted_is_refused_untouched(fx: &SqlFixture) {
    let cases: [(&'static str, &str); 4] = [
        (
            "UPDATE schema_migrations SET dirty = TRUE",
            "litd left its schema at version 6 dirty",
        ),
        (
            "UPDATE schema_migrations SET version = 5",
            "litd's schema is at version 5",
        ),
        (
            "ALTER TABLE accounts ADD COLUMN nickname TEXT",
            "table accounts is not as litd's schema version 6 makes it: column nickname",
        ),
        (
            "ALTER TABLE account_indices DROP COLUMN value",
            "table account_indices is not as litd's schema version 6 makes it: column value is missing",
        ),
    ];
    for (change, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        litd_made(fx, dir.path()).await;
        let db = open(fx).await;
        script(&db, change).await;
        let before = tables(&db).await;
        let err = match Stores::open(&sql_only(fx)).await {
            Ok(_) => panic!("{change}: adopted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("made by Lightning Terminal (litd)") && err.contains(reason),
            "{change}: {err}"
        );
        assert_eq!(tables(&db).await, before, "{change}: nothing written");
        let status = nodestore::status::status(&sql_only(fx)).await.unwrap();
        assert!(
            status.open_would.contains(reason),
            "{change}: {}",
            status.open_would
        );
        lose(fx).await;
    }
}

/// A key-value database is never migrated into litd's database, dry run
/// or not: refused, naming it, with nothing written to either side.
async fn a_key_value_database_is_not_migrated_into_litds(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    litd_made(fx, dir.path()).await;
    let db = open(fx).await;
    let other = dir.path().join("other-kv");
    generate(&other, SHAPE, 8, &|_, _, _| {}).await.unwrap();
    let before = tables(&db).await;
    for dry_run in [true, false] {
        let opts = migrator::Options {
            dry_run,
            ..migrator::Options::default()
        };
        let err = migrator::migrate(&other, &db, &opts, None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.error,
                migrator::Error::TargetMadeByLitd { version: 6, .. }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("made by Lightning Terminal (litd)"),
            "{err}"
        );
        assert_eq!(tables(&db).await, before, "nothing written");
        assert!(matches!(
            tombstone::status(&other).unwrap(),
            Some(tombstone::Status::Live(_))
        ));
    }
}

/// Empties the fixture's database for the next case.
async fn lose(fx: &SqlFixture) {
    match fx {
        SqlFixture::Sqlite(dir) => {
            for f in ["node.db", "node.db-wal", "node.db-shm"] {
                let _ = std::fs::remove_file(dir.path().join(f));
            }
        }
        SqlFixture::Postgres(_) => {
            let db = open(fx).await;
            script(&db, "DROP SCHEMA public CASCADE; CREATE SCHEMA public;").await;
        }
    }
}

/// A database neither nodestore nor litd made is named as such by `dump`,
/// `verify` and `status`, with the database it is.
async fn an_empty_database_is_named_as_holding_no_schema(fx: &SqlFixture) {
    let db = open(fx).await;
    let described = db.describe();
    let err = dump_sql(&db).await.unwrap_err().to_string();
    assert!(
        err.contains("holds no nodestore (or litd) schema") && err.contains(&described),
        "{err}"
    );
    let status = nodestore::status::status(&sql_only(fx)).await.unwrap();
    assert!(
        status
            .open_would
            .contains("holds no nodestore (or litd) schema"),
        "{}",
        status.open_would
    );
}

testkit::backend_tests!(sqlite => sqlite;
    a_database_litd_made_is_adopted_and_serves_the_same_records,
    a_litd_database_that_cannot_be_adopted_is_refused_untouched,
    a_key_value_database_is_not_migrated_into_litds,
    an_empty_database_is_named_as_holding_no_schema,
);

testkit::backend_tests!(postgres => postgres;
    a_database_litd_made_is_adopted_and_serves_the_same_records,
    a_litd_database_that_cannot_be_adopted_is_refused_untouched,
    a_key_value_database_is_not_migrated_into_litds,
    an_empty_database_is_named_as_holding_no_schema,
);
