//! `nodestore status` says what `Stores::open` then does: for each policy
//! and each state of a node's databases, the sentence status gives is the
//! plan open carries out (both come from `nodestore::decide`), checked by
//! opening right after.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::path::{Path, PathBuf};

use nodestore::status::status;
use nodestore::{Backend, BackendConfig, Config, Error, MigrationPolicy, Stores};

/// A node's directory: a key-value database with an account in it, and
/// where its SQLite database goes.
struct Node {
    _dir: tempfile::TempDir,
    kv: PathBuf,
    sqlite: PathBuf,
}

async fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    let stores = Stores::open(&Config::new(BackendConfig::Kv { dir: kv.clone() }))
        .await
        .unwrap();
    stores
        .accounts
        .new_account(1_000, None, "one")
        .await
        .unwrap();
    stores.close().await.unwrap();
    let sqlite = dir.path().join("node.db");
    Node {
        _dir: dir,
        kv,
        sqlite,
    }
}

fn config(kv: Option<&Path>, sqlite: &Path, migration: MigrationPolicy) -> Config {
    Config {
        kv_dir: kv.map(Path::to_path_buf),
        migration,
        ..Config::new(BackendConfig::Sqlite {
            file: sqlite.to_path_buf(),
        })
    }
}

/// What status says now, then what open does.
async fn says_then_opens(c: &Config) -> (String, Result<Stores, Error>) {
    let said = status(c).await.unwrap().open_would;
    (said, Stores::open(c).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_migrates_a_live_database_and_then_opens_on_sql() {
    let n = node().await;
    let c = config(Some(&n.kv), &n.sqlite, MigrationPolicy::Auto);
    let (said, opened) = says_then_opens(&c).await;
    assert!(
        said.starts_with("migrate the key-value database into SQL"),
        "{said}"
    );
    let stores = opened.unwrap();
    let outcome = stores.report.migration.clone().unwrap();
    assert_eq!(outcome.kind, migrator::OutcomeKind::Migrated);
    stores.close().await.unwrap();
    // Migrated and tombstoned: open on SQL, nothing left to do.
    let (said, opened) = says_then_opens(&c).await;
    assert_eq!(said, "open the stores on SQL");
    let stores = opened.unwrap();
    assert!(matches!(stores.backend, Backend::Sql(_)));
    assert_eq!(
        stores.report.migration.as_ref().map(|o| o.kind),
        Some(migrator::OutcomeKind::AlreadyMigrated)
    );
    stores.close().await.unwrap();
    // Deferred now: the database is retired, so there is nothing to defer to.
    let deferred = config(Some(&n.kv), &n.sqlite, MigrationPolicy::Defer);
    let (said, opened) = says_then_opens(&deferred).await;
    assert_eq!(
        said, "open the stores on SQL",
        "SQL holds this database's data: it is the truth even when deferring"
    );
    opened.unwrap().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defer_runs_on_the_live_database_and_refuses_a_retired_one() {
    let n = node().await;
    let c = config(Some(&n.kv), &n.sqlite, MigrationPolicy::Defer);
    let (said, opened) = says_then_opens(&c).await;
    assert_eq!(
        said,
        "open the stores on the key-value database (migration deferred)"
    );
    let stores = opened.unwrap();
    assert!(matches!(stores.backend, Backend::Kv(_)));
    stores.close().await.unwrap();
    // Retired into another database, then deferred: refused by both.
    let elsewhere = n.sqlite.with_file_name("other.db");
    let into = config(Some(&n.kv), &elsewhere, MigrationPolicy::Auto);
    Stores::open(&into).await.unwrap().close().await.unwrap();
    let (said, opened) = says_then_opens(&c).await;
    assert_eq!(
        said,
        "refuse: the key-value database is tombstoned and migration is deferred"
    );
    assert!(
        matches!(opened, Err(Error::RetiredAndDeferred { .. })),
        "{:?}",
        opened.map(|_| ())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_retired_elsewhere_is_refused_by_both() {
    let n = node().await;
    let elsewhere = n.sqlite.with_file_name("other.db");
    Stores::open(&config(Some(&n.kv), &elsewhere, MigrationPolicy::Auto))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    for policy in [MigrationPolicy::Auto, MigrationPolicy::Online] {
        let c = config(Some(&n.kv), &n.sqlite, policy);
        let (said, opened) = says_then_opens(&c).await;
        assert!(said.starts_with("refuse: "), "{policy:?}: {said}");
        let Err(Error::Migration { failure, .. }) = opened else {
            panic!("{policy:?}: opened");
        };
        assert!(
            matches!(failure.error, migrator::Error::MigratedElsewhere { .. }),
            "{failure}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_says_and_starts_an_online_migration() {
    let n = node().await;
    let c = config(Some(&n.kv), &n.sqlite, MigrationPolicy::Online);
    let (said, opened) = says_then_opens(&c).await;
    assert!(said.contains("(online migration)"), "{said}");
    let stores = opened.unwrap();
    assert!(stores.online.is_some(), "an online migration runs");
    stores.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_value_database_the_schema_is_made() {
    let n = node().await;
    let c = config(None, &n.sqlite, MigrationPolicy::Auto);
    let (said, opened) = says_then_opens(&c).await;
    assert_eq!(
        said,
        "create the SQLite database and open the stores on SQL"
    );
    let stores = opened.unwrap();
    assert_eq!(
        stores.report.applied_steps.len(),
        migrator::schema::STEPS.len()
    );
    stores.close().await.unwrap();
    let (said, opened) = says_then_opens(&c).await;
    assert_eq!(said, "open the stores on SQL");
    let stores = opened.unwrap();
    assert!(stores.report.applied_steps.is_empty());
    stores.close().await.unwrap();
}
