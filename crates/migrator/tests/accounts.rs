//! The accounts migration on SQLite and PostgreSQL: LiT's named cases for
//! it (docs/design.md §5.4, accounts) and the all-or-nothing, tombstone and
//! validation behaviour.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Duration, TimeZone, Utc};
use common::proof::{refused, with_trigger};
use common::{Kv, Lcg, Snapshot, another, is_live, migrate_and_compare};
use migrator::{Error, Options, Progress, ProgressEvent};
use sqldb::schema::KV_TO_SQL_VERSION;
use sqldb::sea_query::{Alias, Expr, ExprTrait, Query};
use sqldb::{BoxError, TxExt};
use store_accounts::{
    Account, AccountId, AccountType, AccountUpdate, Hash, LastIndexes, PaymentEntry, PaymentStatus,
    SqlStore, Store, UpsertOptions,
};
use testkit::sql::{SqlFixture, postgres, sqlite};
use tombstone::{KvDb, KvOptions};

fn h(n: u8) -> Hash {
    Hash([n; 32])
}

fn h4(n: u8) -> Hash {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&[n; 4]);
    Hash(b)
}

async fn empty(fx: &SqlFixture) {
    let kv = Kv::new();
    kv.accounts(|_| async {}).await;
    let (_, outcome) = migrate_and_compare(fx, &kv).await;
    let report = outcome.report;
    assert_eq!(report.accounts, Default::default());
    assert_eq!(
        report.accounts.last_indexes, None,
        "no index known in an empty store"
    );
}

async fn account_no_expiry(fx: &SqlFixture) {
    let kv = Kv::new();
    kv.accounts(|s| async move {
        s.new_account(0, None, "foo").await.unwrap();
    })
    .await;
    migrate_and_compare(fx, &kv).await;
}

async fn account_with_expiry(fx: &SqlFixture) {
    let kv = Kv::new();
    kv.accounts(|s| async move {
        s.new_account(0, Some(Utc::now() + Duration::hours(1)), "foo")
            .await
            .unwrap();
    })
    .await;
    migrate_and_compare(fx, &kv).await;
}

async fn account_with_set_updated_at(fx: &SqlFixture) {
    let kv = Kv::new();
    kv.accounts(|s| async move {
        let a = s
            .new_account(0, Some(Utc::now() + Duration::hours(1)), "foo")
            .await
            .unwrap();
        let update = AccountUpdate {
            expiration: Some(Some(Utc::now() + Duration::minutes(1))),
            ..Default::default()
        };
        s.update_account(a.id, update).await.unwrap();
    })
    .await;
    migrate_and_compare(fx, &kv).await;
}

async fn account_with_balance(fx: &SqlFixture) {
    let kv = Kv::new();
    kv.accounts(|s| async move {
        s.new_account(100_000, None, "foo").await.unwrap();
    })
    .await;
    migrate_and_compare(fx, &kv).await;
}

async fn account_with_invoices(fx: &SqlFixture) {
    let kv = Kv::new();
    kv.accounts(|s| async move {
        let a = s.new_account(0, None, "foo").await.unwrap();
        s.add_account_invoice(a.id, h4(1)).await.unwrap();
        s.store_last_indexes(LastIndexes {
            add_index: 1,
            settle_index: 0,
        })
        .await
        .unwrap();
        s.add_account_invoice(a.id, h4(5)).await.unwrap();
        s.store_last_indexes(LastIndexes {
            add_index: 2,
            settle_index: 1,
        })
        .await
        .unwrap();
    })
    .await;
    let (_, outcome) = migrate_and_compare(fx, &kv).await;
    let report = outcome.report.accounts;
    assert_eq!((report.accounts, report.invoices), (1, 2));
    assert_eq!(
        report.last_indexes,
        Some(LastIndexes {
            add_index: 2,
            settle_index: 1
        })
    );
}

async fn account_with_payments(fx: &SqlFixture) {
    let kv = Kv::new();
    kv.accounts(|s| async move {
        let a = s.new_account(0, None, "foo").await.unwrap();
        let o = UpsertOptions::default();
        for (n, amount, status) in [
            (1, 100, PaymentStatus::Unknown),
            (2, 200, PaymentStatus::InFlight),
            (3, 200, PaymentStatus::Succeeded),
            (4, 200, PaymentStatus::Failed),
            (5, 300, PaymentStatus::Initiated),
        ] {
            assert!(
                !s.upsert_account_payment(a.id, h4(n), amount, status, o)
                    .await
                    .unwrap()
            );
        }
    })
    .await;
    let (_, outcome) = migrate_and_compare(fx, &kv).await;
    assert_eq!(outcome.report.accounts.payments, 5);
}

async fn multiple_accounts(fx: &SqlFixture) {
    let kv = Kv::new();
    kv.accounts(|s| async move {
        let exp = Some(Utc::now() + Duration::hours(1));
        let first = s.new_account(100_000, exp, "foo").await.unwrap();
        let second = s.new_account(200_000, exp, "bar").await.unwrap();
        s.add_account_invoice(first.id, h4(1)).await.unwrap();
        s.store_last_indexes(LastIndexes {
            add_index: 1,
            settle_index: 0,
        })
        .await
        .unwrap();
        s.add_account_invoice(second.id, h4(2)).await.unwrap();
        s.store_last_indexes(LastIndexes {
            add_index: 2,
            settle_index: 0,
        })
        .await
        .unwrap();
        let o = UpsertOptions::default();
        s.upsert_account_payment(first.id, h4(3), 100, PaymentStatus::Succeeded, o)
            .await
            .unwrap();
        s.upsert_account_payment(second.id, h4(4), 200, PaymentStatus::InFlight, o)
            .await
            .unwrap();
    })
    .await;
    migrate_and_compare(fx, &kv).await;
}

/// Ten accounts with 50 to 1000 invoices and payments each, statuses cycling.
async fn randomized_accounts(fx: &SqlFixture) {
    let kv = Kv::new();
    kv.accounts(|s| async move {
        let mut rng = Lcg(2026);
        let now = Utc::now();
        let mut counter = 0;
        for i in 0..10 {
            let mut id = [0u8; 8];
            id.copy_from_slice(&rng.next().to_be_bytes());
            let balance = rng.range(1_000, 100_000_000);
            let statuses = [
                PaymentStatus::Succeeded,
                PaymentStatus::InFlight,
                PaymentStatus::Unknown,
                PaymentStatus::Failed,
            ];
            let invoices: BTreeSet<Hash> = (0..rng.range(50, 1000)).map(|_| rng.hash()).collect();
            let payments: BTreeMap<Hash, PaymentEntry> = (0..rng.range(50, 1000))
                .map(|j| {
                    (
                        rng.hash(),
                        PaymentEntry {
                            status: statuses[j as usize % 4],
                            full_amount_msat: rng.range(1, 1_000_000),
                        },
                    )
                })
                .collect();
            counter += invoices.len() as u64;
            s.import_accounts(vec![Account {
                id: AccountId(id),
                account_type: AccountType::InitialBalance,
                initial_balance_msat: balance,
                current_balance_msat: balance as i64,
                last_update: now + Duration::nanoseconds(rng.range(0, 1_000_000_000) as i64),
                expiration: Some(now + Duration::minutes(rng.range(10, 10_000) as i64)),
                label: format!("account{i}"),
                invoices,
                payments,
            }])
            .await
            .unwrap();
        }
        s.store_last_indexes(LastIndexes {
            add_index: counter,
            settle_index: 0,
        })
        .await
        .unwrap();
    })
    .await;
    let (_, outcome) = migrate_and_compare(fx, &kv).await;
    let report = outcome.report.accounts;
    assert_eq!(report.accounts, 10);
    assert!(
        report.invoices >= 500 && report.payments >= 500,
        "{report:?}"
    );
}

async fn ten_accounts(kv: &Kv) {
    kv.accounts(|s| async move {
        for i in 0..10u8 {
            let a = s
                .new_account(u64::from(i) * 1000, None, &format!("a{i}"))
                .await
                .unwrap();
            s.add_account_invoice(a.id, h(i)).await.unwrap();
        }
    })
    .await;
}

async fn count_accounts(db: &sqldb::Db) -> i64 {
    db.read(|tx| {
        Box::pin(async move {
            tx.query_one(
                &Query::select()
                    .expr(Expr::col(Alias::new("id")).count())
                    .from(Alias::new("accounts"))
                    .to_owned(),
            )
            .await?
            .i64(0)
        })
    })
    .await
    .unwrap()
}

/// Fails once `done` reaches a threshold.
struct FailAfter(u64, AtomicU64);

impl Progress for FailAfter {
    fn progress(&self, e: ProgressEvent) -> Result<(), BoxError> {
        self.1.store(e.done, Ordering::SeqCst);
        if e.done >= self.0 {
            Err(format!("injected failure after {} accounts", e.done).into())
        } else {
            Ok(())
        }
    }
}

/// Records every `done` the migration reports for accounts.
struct Steps(std::sync::Mutex<Vec<u64>>);

impl Progress for Steps {
    fn progress(&self, e: ProgressEvent) -> Result<(), BoxError> {
        if e.store == "accounts" {
            self.0.lock().unwrap().push(e.done);
        }
        Ok(())
    }
}

/// Accounts heavy with invoices end a chunk early (at the row budget of 16
/// per account of the chunk size), so a chunk's memory stays bounded; every
/// account and invoice still arrives.
async fn heavy_accounts_are_chunked_by_rows(fx: &SqlFixture) {
    let kv = Kv::new();
    kv.accounts(|s| async move {
        for i in 0..6u8 {
            let a = s.new_account(0, None, &format!("heavy{i}")).await.unwrap();
            for j in 0..40u8 {
                s.add_account_invoice(a.id, h4(i * 40 + j)).await.unwrap();
            }
        }
    })
    .await;
    let expected = kv.snapshot().await.normalised();
    let db = fx.open().await;
    let opts = Options {
        chunk_size: 4,
        ..Options::default()
    };
    let steps = Steps(std::sync::Mutex::new(Vec::new()));
    let outcome = migrator::migrate(&kv.path, &db, &opts, Some(&steps))
        .await
        .unwrap();
    // 4 x 16 = 64 rows: two accounts of 40 invoices fill a chunk.
    assert_eq!(*steps.0.lock().unwrap(), vec![2, 4, 6]);
    let report = outcome.report.accounts;
    assert_eq!((report.accounts, report.invoices), (6, 240));
    let got = Snapshot::of(&SqlStore::new(db.clone())).await;
    assert_eq!(got, expected);
}

/// A failure part-way leaves SQL without accounts and the KV database live;
/// the next run succeeds.
async fn failure_after_n_accounts_leaves_nothing_behind(fx: &SqlFixture) {
    let kv = Kv::new();
    ten_accounts(&kv).await;
    let db = fx.open().await;
    let opts = Options {
        chunk_size: 3,
        ..Options::default()
    };
    let fail = FailAfter(6, AtomicU64::new(0));
    let err = migrator::migrate(&kv.path, &db, &opts, Some(&fail))
        .await
        .unwrap_err();
    assert!(matches!(err.error, Error::Aborted(_)), "{err}");
    assert_eq!(
        fail.1.load(Ordering::SeqCst),
        6,
        "two chunks were written before the failure"
    );
    assert_eq!(count_accounts(&db).await, 0, "no migrated rows survive");
    let applied = migrator::schema::runner().applied(&db).await.unwrap();
    assert!(
        applied.iter().all(|s| s.version != KV_TO_SQL_VERSION),
        "the code step is not recorded"
    );
    assert!(is_live(&kv.path), "the KV database is untouched");
    KvDb::open(&kv.path, &KvOptions::default()).unwrap();

    let (_, outcome) = migrate_and_compare(fx, &kv).await;
    let after: Vec<i64> = migrator::schema::STEPS
        .iter()
        .map(|s| s.version)
        .filter(|v| *v >= KV_TO_SQL_VERSION)
        .collect();
    assert_eq!(
        outcome.applied_steps, after,
        "the retry applies the code step and the steps after it"
    );
    assert_eq!(outcome.report.accounts.accounts, 10);
}

/// After a migration the KV store refuses to open; a second migration from
/// the tombstoned database into an empty SQL database rebuilds the data.
async fn tombstoned_kv_is_refused_and_rebuilds_a_lost_sql_database(fx: &SqlFixture) {
    let kv = Kv::new();
    ten_accounts(&kv).await;
    let expected = kv.snapshot().await.normalised();
    let db = fx.open().await;
    let outcome = migrator::migrate(&kv.path, &db, &Options::default(), None)
        .await
        .unwrap();
    let migrator::TombstoneState::Written(mark) = outcome.tombstone else {
        panic!("not tombstoned: {outcome:?}")
    };
    assert_eq!(mark.target, db.describe());

    let err = KvDb::open(&kv.path, &KvOptions::default()).unwrap_err();
    assert!(matches!(err, tombstone::Error::Tombstoned { .. }), "{err}");
    assert!(err.to_string().contains(&mark.target), "{err}");

    // Another database is refused: the data would fork...
    let second = another(fx, "rebuild").await;
    let db2 = second.open().await;
    let refused = migrator::migrate(&kv.path, &db2, &Options::default(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused.error, Error::MigratedElsewhere { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains(&mark.target), "{refused}");
    // ...unless the operator says the first one is lost.
    let force = Options {
        force: true,
        ..Options::default()
    };
    let again = migrator::migrate(&kv.path, &db2, &force, None)
        .await
        .unwrap();
    assert_eq!(again.report.accounts.accounts, 10);
    assert_eq!(
        common::Snapshot::of(&SqlStore::new(db2.clone())).await,
        expected
    );
    assert_eq!(common::Snapshot::of(&SqlStore::new(db)).await, expected);
}

/// Running again on a database that already has the step migrates nothing
/// and marks nothing.
async fn a_second_run_on_the_same_database_does_nothing(fx: &SqlFixture) {
    let kv = Kv::new();
    ten_accounts(&kv).await;
    let (db, _) = migrate_and_compare(fx, &kv).await;
    let before = tombstone::status(&kv.path).unwrap();
    let outcome = migrator::migrate(&kv.path, &db, &Options::default(), None)
        .await
        .unwrap();
    assert_eq!(outcome.kind, migrator::OutcomeKind::AlreadyMigrated);
    assert_eq!(outcome.report.accounts.accounts, 10, "the record's report");
    assert!(matches!(
        outcome.tombstone,
        migrator::TombstoneState::Written(_)
    ));
    assert!(outcome.is_complete());
    assert!(outcome.applied_steps.is_empty());
    assert_eq!(tombstone::status(&kv.path).unwrap(), before);
    assert_eq!(count_accounts(&db).await, 10);
}

/// A record that does not decode fails the migration, naming tree and key,
/// before anything is committed.
async fn an_undecodable_record_fails_naming_tree_and_key(fx: &SqlFixture) {
    let kv = Kv::new();
    ten_accounts(&kv).await;
    {
        let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
        db.tree("accounts")
            .unwrap()
            .insert([0xff; 8], &b"\x01not an account"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let db = fx.open().await;
    let err = migrator::migrate(
        &kv.path,
        &db,
        &Options {
            chunk_size: 4,
            ..Options::default()
        },
        None,
    )
    .await
    .unwrap_err();
    // Every record that does not decode is listed in one refusal.
    match &err.error {
        Error::DamagedSource { problems, .. } => assert!(
            problems
                .iter()
                .any(|p| p.tree == "accounts" && p.what.contains("key ffffffffffffffff")),
            "{err}"
        ),
        other => panic!("expected a refusal of the damaged source, got {other}"),
    }
    assert!(
        err.to_string()
            .contains("tree accounts, key ffffffffffffffff"),
        "{err}"
    );
    assert_eq!(count_accounts(&db).await, 0);
    assert!(is_live(&kv.path));
}

/// The migration writes only into an empty database.
async fn a_target_with_accounts_is_refused(fx: &SqlFixture) {
    let kv = Kv::new();
    ten_accounts(&kv).await;
    let db = fx.open().await;
    // Apply the SQL steps only (the code step has no implementation here),
    // then put an account in by hand.
    assert!(migrator::schema::runner().run(&db).await.is_err());
    SqlStore::new(db.clone())
        .new_account(1, None, "already here")
        .await
        .unwrap();
    let err = migrator::migrate(&kv.path, &db, &Options::default(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err.error, Error::TargetNotEmpty { table } if table == "accounts"),
        "{err}"
    );
    assert!(is_live(&kv.path));
    assert_eq!(count_accounts(&db).await, 1);
}

/// An amount the KV store holds but SQL cannot (above i64::MAX) fails the
/// migration naming the account, instead of wrapping.
async fn an_unstorable_amount_fails_naming_the_account(fx: &SqlFixture) {
    let kv = Kv::new();
    let id = AccountId([1; 8]);
    kv.accounts(|s| async move {
        s.import_accounts(vec![Account {
            id,
            account_type: AccountType::InitialBalance,
            initial_balance_msat: u64::MAX,
            current_balance_msat: 0,
            last_update: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            expiration: None,
            label: String::new(),
            invoices: BTreeSet::new(),
            payments: BTreeMap::new(),
        }])
        .await
        .unwrap();
    })
    .await;
    let db = fx.open().await;
    let err = migrator::migrate(&kv.path, &db, &Options::default(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err.error, Error::Contract(migrator::Contract::Account(
                store_accounts::Error::InvalidInput { record, field, .. }))
            if *record == format!("account {id}") && *field == "initial_balance_msat"),
        "{err}"
    );
    assert!(is_live(&kv.path));
}

/// The id of the account labelled `label` in the key-value database.
async fn id_of(kv: &Kv, label: &str) -> AccountId {
    let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
    let all = store_accounts::KvStore::open(&db)
        .unwrap()
        .accounts()
        .await
        .unwrap();
    all.into_iter().find(|a| a.label == label).unwrap().id
}

/// A target whose trigger stores `value` in `column` of the account
/// labelled `label`, whatever the copy wrote.
async fn with_account_stored_as(
    fx: &SqlFixture,
    label: &str,
    column: &str,
    value: i64,
) -> sqldb::Db {
    with_trigger(
        fx,
        format!(
            "CREATE TRIGGER store_as AFTER INSERT ON accounts WHEN NEW.label = '{label}' \
             BEGIN UPDATE accounts SET {column} = {value} WHERE id = NEW.id; END;"
        ),
        format!(
            "CREATE FUNCTION store_as() RETURNS trigger AS $$ BEGIN \
             NEW.{column} := {value}; RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER store_as BEFORE INSERT ON accounts FOR EACH ROW \
             WHEN (NEW.label = '{label}') EXECUTE FUNCTION store_as();"
        ),
    )
    .await
}

/// An account the database stores other than it was written (a trigger
/// changes its balance) is refused, naming the account and the field,
/// however the copy proves the table (docs/design.md §5.7).
async fn an_account_stored_altered_is_refused_and_named(fx: &SqlFixture) {
    let kv = Kv::new();
    ten_accounts(&kv).await;
    let id = id_of(&kv, "a4").await;
    let db = with_account_stored_as(fx, "a4", "current_balance_msat", 7).await;
    let err = refused(&kv, &db, 4).await;
    assert!(
        err.contains(&format!("account {id}")),
        "names the account: {err}"
    );
    assert!(
        err.contains("current_balance_msat"),
        "names the field: {err}"
    );
}

/// An invoice the copy did not write (a trigger adds one to an account) is
/// refused, naming the account and its invoices.
async fn an_invoice_the_copy_did_not_write_is_refused_and_named(fx: &SqlFixture) {
    let kv = Kv::new();
    ten_accounts(&kv).await;
    let id = id_of(&kv, "a3").await;
    let extra = "INSERT INTO account_invoices (account_id, hash) VALUES (NEW.account_id, \
                 X'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee');";
    let hash = "X'0303030303030303030303030303030303030303030303030303030303030303'";
    let db = with_trigger(
        fx,
        format!(
            "CREATE TRIGGER add_one AFTER INSERT ON account_invoices WHEN NEW.hash = {hash} \
             BEGIN {extra} END;"
        ),
        format!(
            "CREATE FUNCTION add_one() RETURNS trigger AS $$ BEGIN \
             {} RETURN NULL; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER add_one AFTER INSERT ON account_invoices FOR EACH ROW \
             WHEN (NEW.hash = '\\x{}'::bytea) EXECUTE FUNCTION add_one();",
            extra.replace("X'", "'\\x").replace("');", "'::bytea);"),
            "03".repeat(32)
        ),
    )
    .await;
    let err = refused(&kv, &db, 4).await;
    assert!(
        err.contains(&format!("account {id}")),
        "names the account: {err}"
    );
    assert!(err.contains("invoices"), "names the field: {err}");
}

/// An account stored so that the store cannot read it back (a trigger sets
/// an unknown type) is refused, naming the account, the field and the SQL
/// ids of the page it was read back in: the proof's pages are decoded off
/// the executor, and that decode's error is the refusal.
async fn an_account_that_does_not_read_back_is_refused_and_named(fx: &SqlFixture) {
    let kv = Kv::new();
    ten_accounts(&kv).await;
    let id = id_of(&kv, "a6").await;
    let db = with_account_stored_as(fx, "a6", "type", 99).await;
    let err = refused(&kv, &db, 4).await;
    assert!(
        err.contains(&format!("account {id}")),
        "names the account: {err}"
    );
    assert!(err.contains("unknown type 99"), "says why: {err}");
    assert!(
        err.contains("accounts ") && err.contains("..="),
        "names the page: {err}"
    );
}

/// An account the database does not keep (a trigger drops it) is refused,
/// naming the chunk it was written in. The account has no invoice, whose
/// row would fail its foreign key first on SQLite.
async fn an_account_not_kept_is_refused(fx: &SqlFixture) {
    let kv = Kv::new();
    ten_accounts(&kv).await;
    kv.accounts(|s| async move {
        s.new_account(5, None, "lonely").await.unwrap();
    })
    .await;
    let db = with_trigger(
        fx,
        "CREATE TRIGGER drop_one AFTER INSERT ON accounts WHEN NEW.label = 'lonely' \
         BEGIN DELETE FROM accounts WHERE id = NEW.id; END;"
            .into(),
        "CREATE FUNCTION drop_one() RETURNS trigger AS $$ BEGIN RETURN NULL; END $$ \
         LANGUAGE plpgsql; \
         CREATE TRIGGER drop_one BEFORE INSERT ON accounts FOR EACH ROW \
         WHEN (NEW.label = 'lonely') EXECUTE FUNCTION drop_one();"
            .into(),
    )
    .await;
    let err = refused(&kv, &db, 4).await;
    let counts = ["4 written, 3 read back", "3 written, 2 read back"];
    assert!(
        err.contains("migrated accounts") && counts.iter().any(|c| err.contains(c)),
        "names the chunk: {err}"
    );
}

/// An account row the copy did not write (a trigger adds one) is refused:
/// the table must hold exactly what was written.
async fn an_account_the_copy_did_not_write_is_refused(fx: &SqlFixture) {
    let kv = Kv::new();
    ten_accounts(&kv).await;
    let copy = "INSERT INTO accounts (id, alias, label, type, initial_balance_msat, \
                current_balance_msat, last_updated, expiration) SELECT 1000000, 1, NULL, type, \
                initial_balance_msat, current_balance_msat, last_updated, expiration \
                FROM accounts WHERE id = NEW.id;";
    let db = with_trigger(
        fx,
        format!(
            "CREATE TRIGGER add_one AFTER INSERT ON accounts WHEN NEW.label = 'a2' \
             BEGIN {copy} END;"
        ),
        format!(
            "CREATE FUNCTION add_one() RETURNS trigger AS $$ BEGIN \
             {copy} RETURN NULL; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER add_one AFTER INSERT ON accounts FOR EACH ROW \
             WHEN (NEW.label = 'a2') EXECUTE FUNCTION add_one();"
        ),
    )
    .await;
    let err = refused(&kv, &db, 4).await;
    assert!(err.contains("10 written, 11 read back"), "{err}");
}

testkit::backend_tests!(sqlite => sqlite;
    empty,
    an_account_stored_altered_is_refused_and_named,
    an_invoice_the_copy_did_not_write_is_refused_and_named,
    an_account_that_does_not_read_back_is_refused_and_named,
    an_account_not_kept_is_refused,
    an_account_the_copy_did_not_write_is_refused,
    heavy_accounts_are_chunked_by_rows,
    account_no_expiry,
    account_with_expiry,
    account_with_set_updated_at,
    account_with_balance,
    account_with_invoices,
    account_with_payments,
    multiple_accounts,
    randomized_accounts,
    failure_after_n_accounts_leaves_nothing_behind,
    tombstoned_kv_is_refused_and_rebuilds_a_lost_sql_database,
    a_second_run_on_the_same_database_does_nothing,
    an_undecodable_record_fails_naming_tree_and_key,
    a_target_with_accounts_is_refused,
    an_unstorable_amount_fails_naming_the_account,
);

testkit::backend_tests!(postgres => postgres;
    empty,
    an_account_stored_altered_is_refused_and_named,
    an_invoice_the_copy_did_not_write_is_refused_and_named,
    an_account_that_does_not_read_back_is_refused_and_named,
    an_account_not_kept_is_refused,
    an_account_the_copy_did_not_write_is_refused,
    heavy_accounts_are_chunked_by_rows,
    account_no_expiry,
    account_with_expiry,
    account_with_set_updated_at,
    account_with_balance,
    account_with_invoices,
    account_with_payments,
    multiple_accounts,
    randomized_accounts,
    failure_after_n_accounts_leaves_nothing_behind,
    tombstoned_kv_is_refused_and_rebuilds_a_lost_sql_database,
    a_second_run_on_the_same_database_does_nothing,
    an_undecodable_record_fails_naming_tree_and_key,
    a_target_with_accounts_is_refused,
    an_unstorable_amount_fails_naming_the_account,
);
