//! Shared helpers of the migrator tests.
#![allow(dead_code, reason = "each test file uses a different part")]

pub(crate) mod actions;
pub(crate) mod firewall;
pub(crate) mod proof;
pub(crate) mod sessions;

use std::path::{Path, PathBuf};

use sqldb::Db;
use store_accounts::{Account, Hash, KvStore, LastIndexes, SqlStore, Store};
use testkit::sql::SqlFixture;
use tombstone::{KvDb, KvOptions};

/// A key-value database in a temporary directory.
pub(crate) struct Kv {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
}

impl Kv {
    pub(crate) fn new() -> Kv {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv");
        Kv { _dir: dir, path }
    }

    /// Opens the accounts store, lets `f` fill it, and closes it again.
    pub(crate) async fn accounts<F, Fut>(&self, f: F)
    where
        F: FnOnce(KvStore) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let db = KvDb::open(&self.path, &KvOptions::default()).unwrap();
        f(KvStore::open(&db).unwrap()).await;
    }

    /// What the key-value accounts store holds.
    pub(crate) async fn snapshot(&self) -> Snapshot {
        let db = KvDb::open(&self.path, &KvOptions::default()).unwrap();
        Snapshot::of(&KvStore::open(&db).unwrap()).await
    }
}

/// Everything the accounts store serves.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) accounts: Vec<Account>,
    pub(crate) last_indexes: Option<LastIndexes>,
}

impl Snapshot {
    pub(crate) async fn of(store: &dyn Store) -> Snapshot {
        Snapshot {
            accounts: store.accounts().await.unwrap(),
            last_indexes: match store.last_indexes().await {
                Ok(i) => Some(i),
                Err(store_accounts::Error::NoInvoiceIndexKnown) => None,
                Err(e) => panic!("{e}"),
            },
        }
    }

    /// As a SQL store keeps it: times to the microsecond.
    pub(crate) fn normalised(mut self) -> Snapshot {
        for a in &mut self.accounts {
            a.last_update = sqldb::time::truncate_micros(a.last_update);
            a.expiration = a.expiration.map(sqldb::time::truncate_micros);
        }
        self
    }
}

/// Migrates `kv` into the fixture's database and checks that the SQL store
/// serves what the key-value store did.
pub(crate) async fn migrate_and_compare(fx: &SqlFixture, kv: &Kv) -> (Db, migrator::Outcome) {
    let expected = kv.snapshot().await.normalised();
    let db = fx.open().await;
    let outcome = migrator::migrate(&kv.path, &db, &migrator::Options::default(), None)
        .await
        .unwrap();
    let got = Snapshot::of(&SqlStore::new(db.clone())).await;
    assert_eq!(got, expected);
    (db, outcome)
}

/// Another empty database of the fixture's backend.
pub(crate) async fn another(fx: &SqlFixture, name: &str) -> SqlFixture {
    match fx.backend() {
        "sqlite" => SqlFixture::sqlite(),
        _ => testkit::sql::postgres(name).await.unwrap(),
    }
}

/// True when the path holds a live (not tombstoned) key-value database.
pub(crate) fn is_live(path: &Path) -> bool {
    matches!(
        tombstone::status(path).unwrap(),
        Some(tombstone::Status::Live(_))
    )
}

/// A small deterministic generator, so the case is the same on every run.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
    pub(crate) fn hash(&mut self) -> Hash {
        let mut b = [0u8; 32];
        for chunk in b.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_be_bytes());
        }
        Hash(b)
    }
}

/// Runs a migration property on `backend`: `cases` values drawn from
/// `strategy`, each checked on a fresh database of its own, shrinking on a
/// failure. Without a PostgreSQL server the postgres variant skips, loudly,
/// as every other PostgreSQL test does. Each run draws a seed, printed at
/// its start and in a failure; `PROPTEST_RNG_SEED=N` repeats that run.
#[allow(clippy::print_stderr, reason = "a run names its seed")]
pub(crate) fn run_property<S, F, Fut>(
    backend: &'static str,
    test: &str,
    cases: u32,
    strategy: S,
    check: F,
) where
    S: proptest::strategy::Strategy,
    F: Fn(SqlFixture, S::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), proptest::test_runner::TestCaseError>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let test_name = format!("migrator::{backend}::{test}");
    if backend == "postgres" && rt.block_on(testkit::sql::postgres(&test_name)).is_none() {
        return;
    }
    let seed: u64 = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            use std::hash::{BuildHasher as _, Hasher as _};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        });
    eprintln!("{test} on {backend}: PROPTEST_RNG_SEED={seed}");
    let config = proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        ..proptest::test_runner::Config::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&strategy, |value| {
        rt.block_on(async {
            let fx = match backend {
                "sqlite" => SqlFixture::sqlite(),
                _ => testkit::sql::postgres(&test_name).await.unwrap(),
            };
            check(fx, value).await
        })
    });
    if let Err(e) = result {
        panic!("{test} on {backend} (PROPTEST_RNG_SEED={seed}): {e}");
    }
}

/// How many rows `table` of the target holds.
pub(crate) async fn count(db: &Db, table: &'static str) -> i64 {
    use sqldb::TxExt as _;
    use sqldb::sea_query::{Alias, Expr, Query};
    db.read(|tx| {
        Box::pin(async move {
            tx.query_one(
                &Query::select()
                    .expr(Expr::cust("COUNT(*)"))
                    .from(Alias::new(table))
                    .to_owned(),
            )
            .await?
            .i64(0)
        })
    })
    .await
    .unwrap()
}
