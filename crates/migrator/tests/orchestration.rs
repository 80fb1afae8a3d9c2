//! Dry runs, the migration record, and the pending tombstone, on SQLite and
//! PostgreSQL.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Kv, is_live};
use migrator::{MarkWriter, Options, Retry, TombstoneMark};
use store_accounts::Store as _;
use testkit::sql::{SqlFixture, postgres, sqlite};
use tombstone::{KvDb, KvOptions, Mark};

/// A tombstone writer that always fails, as a full disk would.
#[derive(Debug)]
struct FailingMark;

impl MarkWriter for FailingMark {
    fn mark(&self, _path: &Path, _mark: &Mark) -> Result<(), tombstone::Error> {
        Err(tombstone::Error::Missing("/injected/failure".into()))
    }
}

async fn some_accounts(kv: &Kv) {
    kv.accounts(|s| async move {
        for i in 0..3 {
            s.new_account(i, None, "").await.unwrap();
        }
    })
    .await;
}

async fn dry_run_migrates_and_verifies_then_keeps_nothing(fx: &SqlFixture) {
    let kv = Kv::new();
    some_accounts(&kv).await;
    let db = fx.open().await;
    let outcome = migrator::migrate(
        &kv.path,
        &db,
        &Options {
            dry_run: true,
            ..Options::default()
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(outcome.kind, migrator::OutcomeKind::Rehearsed);
    assert_eq!(outcome.report.accounts.accounts, 3);
    assert_eq!(
        outcome.applied_steps.len(),
        migrator::schema::STEPS.len(),
        "what a real run would apply"
    );
    assert_eq!(outcome.tombstone, migrator::TombstoneState::NotWritten);
    assert!(
        migrator::schema::runner()
            .applied(&db)
            .await
            .unwrap()
            .is_empty(),
        "no step kept"
    );
    assert!(migrator::records(&db).await.unwrap().is_empty());
    assert!(is_live(&kv.path));
    // A dry run that fails says why, and keeps nothing either.
    {
        let kvdb = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
        kvdb.tree("accounts")
            .unwrap()
            .insert([0xff; 8], &b"\x01junk"[..])
            .unwrap();
        kvdb.flush().unwrap();
    }
    let err = migrator::migrate(
        &kv.path,
        &db,
        &Options {
            dry_run: true,
            ..Options::default()
        },
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err.error, migrator::Error::DamagedSource { .. }),
        "{err}"
    );
    assert_eq!(err.data, migrator::DataState::NotWritten);
    assert!(
        migrator::schema::runner()
            .applied(&db)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn the_record_names_the_source_and_what_moved(fx: &SqlFixture) {
    let kv = Kv::new();
    some_accounts(&kv).await;
    let identity = tombstone::identity(&kv.path).unwrap();
    let db = fx.open().await;
    let outcome = migrator::migrate(&kv.path, &db, &Options::default(), None)
        .await
        .unwrap();
    let records = migrator::records(&db).await.unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.source_path, kv.path.display().to_string());
    assert_eq!(Some(r.source_identity), identity);
    assert!(!r.tombstone_pending, "marked after the commit");
    assert_eq!(r.report.accounts.accounts, 3);
    assert_eq!(r.report, outcome.report);
    assert!(r.accepted_damage.is_empty());
}

async fn a_tombstone_that_cannot_be_written_stays_pending_and_is_retried(fx: &SqlFixture) {
    let kv = Kv::new();
    some_accounts(&kv).await;
    let db = fx.open().await;
    let failing = Options {
        marker: Arc::new(FailingMark),
        ..Options::default()
    };
    let outcome = migrator::migrate(&kv.path, &db, &failing, None)
        .await
        .unwrap();
    assert!(
        matches!(
            &outcome.tombstone,
            migrator::TombstoneState::Pending(migrator::PendingTombstone::MarkFailed(e))
                if e.to_string().contains("injected")
        ),
        "{outcome:?}"
    );
    assert!(!outcome.is_complete());
    assert!(is_live(&kv.path), "the mark failed");
    assert!(migrator::records(&db).await.unwrap()[0].tombstone_pending);
    // The data is committed and served from SQL regardless.
    assert_eq!(
        store_accounts::SqlStore::new(db.clone())
            .accounts()
            .await
            .unwrap()
            .len(),
        3
    );

    assert_eq!(
        migrator::retry_pending_tombstone(&db, &FailingMark)
            .await
            .unwrap(),
        vec![Retry::Failed {
            path: kv.path.display().to_string(),
            reason: "no key-value database at /injected/failure".into()
        }]
    );
    assert!(migrator::records(&db).await.unwrap()[0].tombstone_pending);
    assert_eq!(
        migrator::retry_pending_tombstone(&db, &TombstoneMark)
            .await
            .unwrap(),
        vec![Retry::Marked {
            path: kv.path.display().to_string()
        }]
    );
    assert!(!is_live(&kv.path));
    assert!(!migrator::records(&db).await.unwrap()[0].tombstone_pending);
    assert!(
        migrator::retry_pending_tombstone(&db, &TombstoneMark)
            .await
            .unwrap()
            .is_empty(),
        "idempotent"
    );
}

async fn a_retry_leaves_another_database_at_the_path_alone(fx: &SqlFixture) {
    let kv = Kv::new();
    some_accounts(&kv).await;
    let db = fx.open().await;
    migrator::migrate(
        &kv.path,
        &db,
        &Options {
            marker: Arc::new(FailingMark),
            ..Options::default()
        },
        None,
    )
    .await
    .unwrap();
    std::fs::remove_dir_all(&kv.path).unwrap();
    some_accounts(&kv).await;
    assert_eq!(
        migrator::retry_pending_tombstone(&db, &TombstoneMark)
            .await
            .unwrap(),
        vec![Retry::NotTheSource {
            path: kv.path.display().to_string()
        }]
    );
    assert!(is_live(&kv.path));
}

/// What an observer was told, in order.
#[derive(Default)]
struct Told(std::sync::Mutex<Vec<String>>);

impl migrator::Progress for Told {
    fn progress(&self, e: migrator::ProgressEvent) -> Result<(), sqldb::BoxError> {
        let told = format!("{} {}", e.store, e.done);
        self.0.lock().unwrap().push(told);
        Ok(())
    }

    fn store_done(&self, store: &'static str) {
        self.0.lock().unwrap().push(format!("{store} done"));
    }
}

/// Each store is told done once, in the order the stores are migrated,
/// after the last event of its chunks (its proof follows them), empty
/// stores too.
async fn each_store_is_told_done_after_its_chunks(fx: &SqlFixture) {
    let kv = Kv::new();
    some_accounts(&kv).await;
    let db = fx.open().await;
    let told = Told::default();
    migrator::migrate(&kv.path, &db, &Options::default(), Some(&told))
        .await
        .unwrap();
    let told = told.0.into_inner().unwrap();
    let done: Vec<&str> = told
        .iter()
        .filter(|t| t.ends_with(" done"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        done,
        [
            "accounts done",
            "sessions done",
            "firewall done",
            "actions done"
        ]
    );
    let last_chunk = told.iter().rposition(|t| t == "accounts 3");
    let accounts_done = told.iter().position(|t| t == "accounts done");
    assert!(
        last_chunk.is_some() && last_chunk < accounts_done,
        "after the accounts' chunks: {told:?}"
    );
}

testkit::backend_tests!(sqlite => sqlite;
    each_store_is_told_done_after_its_chunks,
    dry_run_migrates_and_verifies_then_keeps_nothing,
    the_record_names_the_source_and_what_moved,
    a_tombstone_that_cannot_be_written_stays_pending_and_is_retried,
    a_retry_leaves_another_database_at_the_path_alone,
);

testkit::backend_tests!(postgres => postgres;
    each_store_is_told_done_after_its_chunks,
    dry_run_migrates_and_verifies_then_keeps_nothing,
    the_record_names_the_source_and_what_moved,
    a_tombstone_that_cannot_be_written_stays_pending_and_is_retried,
    a_retry_leaves_another_database_at_the_path_alone,
);
