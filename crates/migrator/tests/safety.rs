//! A migration that cannot lie (docs/design.md §5): it never
//! reports success it did not achieve, never forks a node's data, never
//! retires what it did not prove it moved. On SQLite and PostgreSQL, with
//! damaged sources, wrong targets, concurrent runs and a server that dies.
//!
//! Every case asserts the same invariants: success only with the data in
//! SQL; a refusal leaves 0 migrated rows and the key-value database live
//! and unchanged; once the data committed, the source ends tombstoned.
#![allow(
    clippy::print_stderr,
    reason = "a test reports the figures it measured"
)]
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use testkit::files::copy_dir;

use chrono::{Duration, Utc};
use common::{Kv, is_live};
use migrator::{DataState, Error, Options, OutcomeKind, TombstoneState};
use sqldb::migrate::MigrateError;
use sqldb::{Db, Sql};
use store_accounts::{Hash, Store as _};
use store_actions::{AddAction, Store as _};
use store_firewall::{Namespace, Scope, update_kv, update_privacy};
use store_sessions::{NewSession, SessionId, SessionState, SessionType, Store as _};
use testkit::sql::{SqlFixture, postgres, sqlite};
use tombstone::{KvDb, KvOptions, MigrationSource};

/// A small node: an account with an invoice, a revoked session and a linked
/// one in its group, a kv-store entry, a privacy pair and some actions.
/// Returns the group.
async fn populate(path: &Path) -> SessionId {
    let kv = KvDb::open(path, &KvOptions::default()).unwrap();
    let accounts = store_accounts::KvStore::open(&kv).unwrap();
    let a = accounts.new_account(1_000, None, "alice").await.unwrap();
    accounts
        .add_account_invoice(a.id, Hash([1; 32]))
        .await
        .unwrap();
    let sessions = store_sessions::KvStore::open(&kv).unwrap();
    let new = |label: &str| {
        NewSession::new(
            label,
            SessionType::MacaroonAdmin,
            Utc::now() + Duration::days(1),
            "mailbox:443",
        )
    };
    let first = sessions.new_session(new("first")).await.unwrap();
    sessions
        .shift_state(first.id, SessionState::Created)
        .await
        .unwrap();
    sessions
        .shift_state(first.id, SessionState::Revoked)
        .await
        .unwrap();
    sessions
        .new_session(NewSession {
            linked_group: Some(first.id),
            account: Some(a.id),
            ..new("second")
        })
        .await
        .unwrap();
    let firewall = store_firewall::KvStore::open(&kv).unwrap();
    update_kv(&firewall, Namespace::new("rule", first.id, ""), |tx| {
        Box::pin(async move { tx.set(Scope::Local, "k", b"v").await })
    })
    .await
    .unwrap();
    update_privacy(&firewall, first.id, |tx| {
        Box::pin(async move { tx.new_pair("real", "pseudo").await })
    })
    .await
    .unwrap();
    let actions = store_actions::KvStore::open(&kv).unwrap();
    for i in 0..20 {
        actions
            .add_action(AddAction {
                session_id: Some(first.id),
                rpc_method: format!("/m/{i}"),
                ..AddAction::default()
            })
            .await
            .unwrap();
    }
    first.id
}

async fn populated() -> Kv {
    let kv = Kv::new();
    populate(&kv.path).await;
    kv
}

/// The rows of a data table (0 when the table does not exist yet).
async fn rows(db: &Db, table: &'static str) -> i64 {
    let sql = match table {
        "accounts" => "SELECT COUNT(*) FROM accounts",
        "sessions" => "SELECT COUNT(*) FROM sessions",
        "actions" => "SELECT COUNT(*) FROM actions",
        _ => "SELECT COUNT(*) FROM kvstores",
    };
    db.read(|tx| Box::pin(async move { tx.query_sql(Sql::fixed(sql, vec![])).await }))
        .await
        .map(|r| r[0].i64(0).unwrap())
        .unwrap_or(0)
}

/// The source's write sequence: unchanged means untouched.
fn write_seq(path: &Path) -> u64 {
    MigrationSource::open(path, &KvOptions::default())
        .unwrap()
        .write_seq()
        .unwrap()
        .unwrap()
}

/// Nothing of the data is in SQL and the source is live and unchanged.
async fn nothing_kept(db: &Db, kv: &Kv, seq_before: u64) {
    for t in ["accounts", "sessions", "actions", "kvstores"] {
        assert_eq!(rows(db, t).await, 0, "{t} after a refusal");
    }
    assert!(is_live(&kv.path), "the source stays live");
    assert_eq!(write_seq(&kv.path), seq_before, "the source is unchanged");
}

async fn migrate(kv: &Kv, db: &Db, opts: &Options) -> Result<migrator::Outcome, migrator::Failure> {
    migrator::migrate(&kv.path, db, opts, None).await
}

/// `T` holds the data of `A`; migrating `B` into it is refused, naming
/// both, and `B` stays live: never "already migrated".
async fn a_second_source_into_a_migrated_target_is_refused_naming_both(fx: &SqlFixture) {
    let (a, b) = (populated().await, populated().await);
    let db = fx.open().await;
    let done = migrate(&a, &db, &Options::default()).await.unwrap();
    assert!(done.is_complete());
    let seq = write_seq(&b.path);
    let accounts = rows(&db, "accounts").await;
    let err = migrate(&b, &db, &Options::default()).await.unwrap_err();
    assert!(
        matches!(&err.error, Error::TargetHoldsOtherData { others, .. } if others.len() == 1),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(&a.path.display().to_string()), "{text}");
    assert!(text.contains(&b.path.display().to_string()), "{text}");
    assert_eq!(err.data, DataState::NotWritten);
    assert!(is_live(&b.path));
    assert_eq!(write_seq(&b.path), seq);
    assert_eq!(rows(&db, "accounts").await, accounts, "A's data only");
}

/// A byte-for-byte copy of a migrated source finds the work done (and is
/// retired too); a copy written to after the migration is refused, since
/// its later writes are not in SQL.
async fn a_copy_is_already_migrated_unless_it_was_written_after(fx: &SqlFixture) {
    let a = populated().await;
    let copy = Kv::new();
    let diverged = Kv::new();
    copy_dir(&a.path, &copy.path);
    copy_dir(&a.path, &diverged.path);
    let db = fx.open().await;
    migrate(&a, &db, &Options::default()).await.unwrap();

    let again = migrate(&copy, &db, &Options::default()).await.unwrap();
    assert_eq!(again.kind, OutcomeKind::AlreadyMigrated);
    assert!(again.is_complete(), "{again:?}");
    assert!(!is_live(&copy.path), "the copy is retired too");

    {
        let kv = KvDb::open(&diverged.path, &KvOptions::default()).unwrap();
        store_accounts::KvStore::open(&kv)
            .unwrap()
            .new_account(5, None, "written later")
            .await
            .unwrap();
    }
    let seq = write_seq(&diverged.path);
    let err = migrate(&diverged, &db, &Options::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err.error, Error::SourceChangedSinceMigration { .. }),
        "{err}"
    );
    assert!(is_live(&diverged.path));
    assert_eq!(write_seq(&diverged.path), seq);
}

/// A target holding tables nodestore did not create, or tables named like
/// ours without a schema record, is refused before anything is written.
async fn foreign_or_unrecorded_tables_are_refused_before_any_write(fx: &SqlFixture) {
    for (table, want_foreign) in [("invoices_of_another_app", true), ("accounts", false)] {
        let kv = populated().await;
        let seq = write_seq(&kv.path);
        let other = common::another(fx, "foreign").await;
        let db = other.open().await;
        let ddl: &'static str = if want_foreign {
            "CREATE TABLE invoices_of_another_app (id BIGINT)"
        } else {
            "CREATE TABLE accounts (id BIGINT)"
        };
        db.write(|tx| Box::pin(async move { tx.execute_script(ddl).await }))
            .await
            .unwrap();
        let err = migrate(&kv, &db, &Options::default()).await.unwrap_err();
        match &err.error {
            Error::Schema(MigrateError::ForeignTables { tables }) if want_foreign => {
                assert_eq!(tables, &vec![table.to_owned()])
            }
            Error::Schema(MigrateError::UnrecordedTables { tables }) if !want_foreign => {
                assert_eq!(tables, &vec![table.to_owned()])
            }
            other => panic!("{table}: {other}"),
        }
        assert!(err.schema_steps.is_empty());
        assert!(
            migrator::schema::runner()
                .applied(&db)
                .await
                .unwrap()
                .is_empty(),
            "no tracking table was created"
        );
        assert!(is_live(&kv.path));
        assert_eq!(write_seq(&kv.path), seq);
    }
}

/// A later schema step that cannot be applied over the migrated data fails
/// the run inside the data step's transaction: nothing is committed, the
/// source stays live and unchanged, and once the obstacle is gone the
/// next run migrates with every step applied. (Before, the data committed,
/// the source was retired, and the step failed at every later open.)
async fn a_later_step_that_fails_fails_the_run_before_the_tombstone(fx: &SqlFixture) {
    let kv = populated().await;
    let seq = write_seq(&kv.path);
    // Steps before the key-value step, then an index in the way of step 8.
    let db = fx.open_before_data().await;
    db.write(|tx| {
        Box::pin(async move {
            tx.execute_script("CREATE INDEX actions_session_created_idx ON actions (id)")
                .await
        })
    })
    .await
    .unwrap();
    let err = migrate(&kv, &db, &Options::default()).await.unwrap_err();
    assert!(err.to_string().contains("step 8"), "{err}");
    assert!(is_live(&kv.path), "the source stays live");
    assert_eq!(write_seq(&kv.path), seq);
    assert_eq!(rows(&db, "actions").await, 0, "nothing committed");
    let applied: Vec<i64> = migrator::schema::runner()
        .applied(&db)
        .await
        .unwrap()
        .iter()
        .map(|s| s.version)
        .collect();
    assert!(
        applied
            .iter()
            .all(|v| *v < sqldb::schema::KV_TO_SQL_VERSION),
        "{applied:?}"
    );

    db.write(|tx| {
        Box::pin(async move {
            tx.execute_script("DROP INDEX actions_session_created_idx")
                .await
        })
    })
    .await
    .unwrap();
    let done = migrate(&kv, &db, &Options::default()).await.unwrap();
    assert_eq!(done.kind, OutcomeKind::Migrated);
    assert!(done.is_complete(), "{done:?}");
    assert!(!is_live(&kv.path));
    let after: Vec<i64> = migrator::schema::STEPS
        .iter()
        .map(|s| s.version)
        .filter(|v| *v >= sqldb::schema::KV_TO_SQL_VERSION)
        .collect();
    assert_eq!(
        done.applied_steps, after,
        "the data step and every later step, in one run"
    );
}

/// What a damaged source is refused for; `f` damages it.
async fn refused_as_damaged(
    fx: &SqlFixture,
    damage: impl FnOnce(&Path),
    expect: &str,
) -> migrator::Failure {
    let kv = populated().await;
    damage(&kv.path);
    let seq = MigrationSource::open(&kv.path, &KvOptions::default())
        .ok()
        .and_then(|s| s.write_seq().ok().flatten());
    let db = fx.open().await;
    let err = migrate(&kv, &db, &Options::default()).await.unwrap_err();
    assert!(
        err.to_string().contains(expect),
        "want {expect:?} in: {err}"
    );
    assert_eq!(err.data, DataState::NotWritten);
    if let Some(seq) = seq {
        nothing_kept(&db, &kv, seq).await;
    }
    assert!(
        !matches!(
            tombstone::status(&kv.path),
            Ok(Some(tombstone::Status::Tombstoned(_)))
        ),
        "never tombstoned"
    );
    err
}

/// A tree nodestore does not know would be left behind: refused.
async fn an_unknown_tree_is_refused(fx: &SqlFixture) {
    let err = refused_as_damaged(
        fx,
        |p| {
            let kv = KvDb::open(p, &KvOptions::default()).unwrap();
            kv.tree("mystery").unwrap().insert(b"k", b"v").unwrap();
            kv.flush().unwrap();
        },
        "tree mystery: a tree nodestore does not know",
    )
    .await;
    assert!(matches!(err.error, Error::DamagedSource { .. }), "{err}");
}

/// sled recovered a shorter log: the sidecar says later writes were
/// durable. Refused, saying how many were lost.
async fn lost_writes_are_refused(fx: &SqlFixture) {
    refused_as_damaged(
        fx,
        |p| {
            let seq = write_seq(p);
            std::fs::write(p.join(tombstone::SIDECAR), (seq + 3).to_be_bytes()).unwrap();
        },
        "the last 3 write transactions were lost",
    )
    .await;
}

/// An entry that appeared behind the stores' back (or the loss of one)
/// shows in the counts and digests, and in the index invariants.
async fn an_index_out_of_step_with_its_records_is_refused(fx: &SqlFixture) {
    refused_as_damaged(
        fx,
        |p| {
            let kv = KvDb::open(p, &KvOptions::default()).unwrap();
            let index = kv.tree(store_actions::kv::INDEX_TREE).unwrap();
            let (k, _) = index.last().unwrap().unwrap();
            index.remove(k).unwrap();
            kv.flush().unwrap();
        },
        "actions-index: disagrees with the actions tree",
    )
    .await;
}

/// A value altered in place (same count, other bytes) shows in the digest.
async fn an_altered_value_is_refused(fx: &SqlFixture) {
    refused_as_damaged(
        fx,
        |p| {
            let kv = KvDb::open(p, &KvOptions::default()).unwrap();
            let t = kv.tree(store_firewall::kv::RULES_TREE).unwrap();
            let (k, _) = t.first().unwrap().unwrap();
            let other = kvcodec::encode(
                store_firewall::kv::record::VALUE_V1,
                &store_firewall::kv::record::ValueRecordV1 {
                    value: b"altered".to_vec(),
                },
            )
            .unwrap();
            t.insert(k, other).unwrap();
            kv.flush().unwrap();
        },
        "tree rules: its entries differ from what the store recorded",
    )
    .await;
}

/// A truncated data file opens as an empty database: refused, never
/// migrated as an empty node and tombstoned.
async fn a_truncated_data_file_is_refused(fx: &SqlFixture) {
    refused_as_damaged(
        fx,
        |p| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(p.join("db"))
                .unwrap();
            f.set_len(0).unwrap();
            for e in std::fs::read_dir(p).unwrap() {
                let e = e.unwrap();
                if e.file_name().to_string_lossy().starts_with("snap.") {
                    std::fs::remove_file(e.path()).unwrap();
                }
            }
        },
        "no nodestore metadata",
    )
    .await;
}

/// Bytes overwritten at several places in sled's data file: whatever sled
/// recovers, the migration never reports success with less than was there.
async fn overwritten_bytes_never_migrate_as_whole(fx: &SqlFixture) {
    let mut refused = 0;
    for (i, at) in [0.2f64, 0.5, 0.8].into_iter().enumerate() {
        let kv = populated().await;
        let before = {
            let src = MigrationSource::open(&kv.path, &KvOptions::default()).unwrap();
            src.recorded_stats().unwrap().unwrap()
        };
        let db_file = kv.path.join("db");
        let len = std::fs::metadata(&db_file).unwrap().len();
        let offset = ((len as f64) * at) as u64;
        {
            use std::os::unix::fs::FileExt as _;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&db_file)
                .unwrap();
            f.write_all_at(&vec![0xA5; 4096], offset).unwrap();
        }
        let target = common::another(fx, &format!("overwritten-{i}")).await;
        let db = target.open().await;
        match migrate(&kv, &db, &Options::default()).await {
            Ok(outcome) => {
                // Only when everything the stores recorded arrived.
                let r = &outcome.report;
                assert_eq!(
                    r.actions.actions,
                    before[store_actions::kv::ACTIONS_TREE].count,
                    "a success with lost actions"
                );
                assert_eq!(
                    r.accounts.accounts,
                    before[store_accounts::kv::TREE].count,
                    "a success with lost accounts"
                );
            }
            Err(e) => {
                refused += 1;
                assert_ne!(e.data, DataState::MaybeCommitted, "{e}");
                assert!(
                    !matches!(
                        tombstone::status(&kv.path),
                        Ok(Some(tombstone::Status::Tombstoned(_)))
                    ),
                    "never tombstoned after a refusal"
                );
            }
        }
    }
    eprintln!("overwritten sled files: {refused} of 3 refused, the rest intact where read");
}

/// `--accept-damaged` migrates what is readable and records exactly what
/// was missing in the migration record.
async fn accepted_damage_is_migrated_and_recorded(fx: &SqlFixture) {
    let kv = populated().await;
    {
        let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
        db.tree("mystery").unwrap().insert(b"k", b"v").unwrap();
        db.flush().unwrap();
    }
    let db = fx.open().await;
    let opts = Options {
        accept_damaged: true,
        ..Options::default()
    };
    let outcome = migrate(&kv, &db, &opts).await.unwrap();
    assert_eq!(outcome.accepted_damage.len(), 1, "{outcome:?}");
    assert_eq!(outcome.accepted_damage[0].tree, "mystery");
    let records = migrator::records(&db).await.unwrap();
    assert_eq!(records[0].accepted_damage, outcome.accepted_damage);
    assert_eq!(rows(&db, "actions").await, 20);
}

/// A format 1 database (from before the statistics) of a few segments, as
/// sled leaves it when no snapshot was written: every open recovers the
/// whole log.
async fn format_1_without_snapshot() -> Kv {
    let kv = populated().await;
    {
        let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
        let actions = store_actions::KvStore::open(&db).unwrap();
        for i in 0..2500u32 {
            actions
                .add_action(AddAction {
                    rpc_method: format!("/m/{i}"),
                    rpc_params_json: vec![b'x'; 400 + (i % 200) as usize],
                    ..AddAction::default()
                })
                .await
                .unwrap();
        }
        let meta = db.tree(tombstone::META_TREE).unwrap();
        for key in meta.iter().keys() {
            let key = key.unwrap();
            if key.as_ref() != b"format" && key.as_ref() != b"identity" {
                meta.remove(key).unwrap();
            }
        }
        meta.insert(b"format", &tombstone::FORMAT_V1.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    testkit::files::wait_released(&kv.path);
    for e in std::fs::read_dir(&kv.path).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("snap.") || name == tombstone::SIDECAR {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    kv
}

/// A format 1 database kept no statistics, so its read is compared with
/// sled's; on a damaged one sled may panic or loop, and keeps nothing
/// where it panics. With `--accept-damaged` the readable records of such
/// a database migrate, the comparison with sled is not made (and says
/// so), and where sled cannot open it the source is left as it was.
async fn a_damaged_format_1_database_is_salvaged_without_sled(fx: &SqlFixture) {
    let base = format_1_without_snapshot().await;
    {
        // Undamaged, it is read by both readers and migrates whole.
        let kv = Kv::new();
        copy_dir(&base.path, &kv.path);
        let target = common::another(fx, "format-1-whole").await;
        let db = target.open().await;
        let outcome = migrate(&kv, &db, &Options::default()).await.unwrap();
        assert_eq!(outcome.report.actions.actions, 2520);
        assert!(outcome.accepted_damage.is_empty());
    }
    let len = std::fs::metadata(base.path.join("db")).unwrap().len();
    let (mut migrated_where_sled_panics, mut cases) = (0, 0);
    for (i, tenth) in (1..10u32).enumerate() {
        let kv = Kv::new();
        copy_dir(&base.path, &kv.path);
        {
            use std::os::unix::fs::FileExt as _;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(kv.path.join("db"))
                .unwrap();
            f.write_all_at(&[0; 4096], len * u64::from(tenth) / 10)
                .unwrap();
        }
        let salvage = KvOptions {
            salvage: true,
            ..KvOptions::default()
        };
        let Ok(src) = MigrationSource::open(&kv.path, &salvage) else {
            continue;
        };
        let sled_cannot_open = src.sled_cannot_open().is_some();
        drop(src);
        let before = testkit::files::contents(&kv.path);
        let target = common::another(fx, &format!("format-1-{i}")).await;
        let db = target.open().await;
        let opts = Options {
            accept_damaged: true,
            ..Options::default()
        };
        cases += 1;
        match migrate(&kv, &db, &opts).await {
            Ok(outcome) => {
                assert!(
                    outcome.report.actions.actions > 0,
                    "at {tenth}/10: {outcome:?}"
                );
                if sled_cannot_open {
                    migrated_where_sled_panics += 1;
                    assert!(
                        matches!(outcome.tombstone, TombstoneState::SledCannotOpen(_)),
                        "at {tenth}/10: {:?}",
                        outcome.tombstone
                    );
                    assert!(
                        testkit::files::contents(&kv.path) == before,
                        "at {tenth}/10: the source was written"
                    );
                }
                for p in &outcome.accepted_damage {
                    assert!(
                        p.tree.is_empty() || !p.what.contains(&format!("tree {}", p.tree)),
                        "at {tenth}/10: names its tree twice: {p}"
                    );
                }
                if !outcome.accepted_damage.is_empty() {
                    assert!(
                        outcome
                            .accepted_damage
                            .iter()
                            .any(|p| p.what.contains("not compared with sled")),
                        "at {tenth}/10: {:?}",
                        outcome.accepted_damage
                    );
                }
            }
            Err(e) => {
                let e = e.to_string();
                assert!(!e.contains("panicked"), "at {tenth}/10: {e}");
                assert!(
                    testkit::files::contents(&kv.path) == before,
                    "at {tenth}/10: a refused migration wrote the source"
                );
            }
        }
    }
    eprintln!(
        "format 1, damaged: {cases} cases, {migrated_where_sled_panics} migrated where sled panics"
    );
    assert!(
        migrated_where_sled_panics > 0,
        "no case of {cases} was one sled panics on"
    );
}

/// Three migrators at once, two from one source and one from a copy, into
/// one target: one migrates, the others wait and find the work done; the
/// data is there once and every source ends retired.
async fn three_migrators_at_once_migrate_once(fx: &SqlFixture) {
    let a = populated().await;
    let copy = Kv::new();
    copy_dir(&a.path, &copy.path);
    let db = fx.open().await;
    let (db1, db2, db3) = (fx.open().await, fx.open().await, db.clone());
    let opts = Options::default();
    let (r1, r2, r3) = tokio::join!(
        migrator::migrate(&a.path, &db1, &opts, None),
        migrator::migrate(&a.path, &db2, &opts, None),
        migrator::migrate(&copy.path, &db3, &opts, None),
    );
    let kinds: Vec<OutcomeKind> = [r1, r2, r3]
        .into_iter()
        .map(|r| {
            let o = r.unwrap();
            assert!(o.is_complete(), "{o:?}");
            o.kind
        })
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == OutcomeKind::Migrated)
            .count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(rows(&db, "actions").await, 20);
    assert_eq!(migrator::records(&db).await.unwrap().len(), 1);
    assert!(!is_live(&a.path) && !is_live(&copy.path));
}

/// Kv-store entries and privacy pairs stored under a linked session's id
/// belong to its group: they are migrated there, not skipped.
async fn entries_under_a_linked_sessions_id_join_its_group(fx: &SqlFixture) {
    let kv = Kv::new();
    let group = populate(&kv.path).await;
    let member = {
        let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
        let ids = store_sessions::KvStore::open(&db)
            .unwrap()
            .session_ids_in_group(group)
            .await
            .unwrap();
        let member = ids[1];
        let fw = store_firewall::KvStore::open(&db).unwrap();
        fw.import_entries(vec![store_firewall::KvEntry {
            perm: true,
            rule: "rule".into(),
            group: Some(member),
            feature: Some("f".into()),
            key: "under-member".into(),
            value: b"x".to_vec(),
        }])
        .await
        .unwrap();
        fw.import_pairs(vec![store_firewall::PrivacyPair {
            group: member,
            real: "real-2".into(),
            pseudo: "pseudo-2".into(),
        }])
        .await
        .unwrap();
        member
    };
    assert_ne!(member, group);
    let db = fx.open().await;
    let outcome = migrate(&kv, &db, &Options::default()).await.unwrap();
    let f = &outcome.report.firewall;
    assert_eq!((f.kv_entries_skipped, f.privacy_pairs_skipped), (0, 0));
    assert_eq!((f.kv_entries, f.privacy_pairs), (2, 2));
    let sql = store_firewall::SqlStore::new(db.clone());
    use store_firewall::Store as _;
    let entries = store_firewall::Store::kv_entries(&sql).await.unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.key == "under-member" && e.group == Some(group)),
        "{entries:?}"
    );
    let pairs = sql.privacy_pairs().await.unwrap();
    assert!(pairs.iter().all(|p| p.group == group), "{pairs:?}");
}

/// The same key under the group's id and under a member's id cannot both
/// be kept: refused, saying so, nothing written.
async fn colliding_entries_of_one_group_are_refused(fx: &SqlFixture) {
    let kv = Kv::new();
    let group = populate(&kv.path).await;
    {
        let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
        let ids = store_sessions::KvStore::open(&db)
            .unwrap()
            .session_ids_in_group(group)
            .await
            .unwrap();
        store_firewall::KvStore::open(&db)
            .unwrap()
            .import_entries(vec![store_firewall::KvEntry {
                perm: true,
                rule: "rule".into(),
                group: Some(ids[1]),
                feature: None,
                key: "k".into(),
                value: b"other".to_vec(),
            }])
            .await
            .unwrap();
    }
    let seq = write_seq(&kv.path);
    let db = fx.open().await;
    let err = migrate(&kv, &db, &Options::default()).await.unwrap_err();
    assert!(
        err.to_string().contains("collide in one session group"),
        "{err}"
    );
    nothing_kept(&db, &kv, seq).await;
}

/// A source a running node holds open is reported as such, with its path,
/// and nothing is written.
async fn a_source_held_by_a_running_node_is_reported_with_its_path(fx: &SqlFixture) {
    let kv = populated().await;
    let node = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
    let db = fx.open().await;
    let err = migrate(&kv, &db, &Options::default()).await.unwrap_err();
    assert!(
        matches!(&err.error, Error::Kv(tombstone::Error::InUse(p)) if p == &kv.path),
        "{err}"
    );
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    assert!(
        err.to_string().contains(&kv.path.display().to_string()),
        "{err}"
    );
    drop(node);
    assert!(
        migrator::schema::runner()
            .applied(&db)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A dry run keeps nothing, and its outcome never claims a migration.
async fn a_dry_run_is_never_a_migration(fx: &SqlFixture) {
    let kv = populated().await;
    let seq = write_seq(&kv.path);
    let db = fx.open().await;
    let opts = Options {
        dry_run: true,
        ..Options::default()
    };
    let outcome = migrate(&kv, &db, &opts).await.unwrap();
    assert_eq!(outcome.kind, OutcomeKind::Rehearsed);
    assert_eq!(outcome.tombstone, TombstoneState::NotWritten);
    nothing_kept(&db, &kv, seq).await;
}

/// A PRAGMA's value on the connection that writes.
async fn writer_pragma(db: &Db, pragma: &'static str) -> i64 {
    db.write(|tx| Box::pin(async move { tx.query_sql(Sql::fixed(pragma, vec![])).await }))
        .await
        .unwrap()[0]
        .i64(0)
        .unwrap()
}

/// SQLite's automatic checkpoints are off for the migration's connection
/// while it loads (docs/design.md §5.7). After a dry run, a refusal and a
/// migration they are on again for the node's writes, and a migration
/// returns with its log copied into the database file.
async fn automatic_checkpoints_are_on_again_after_every_run(fx: &SqlFixture) {
    let db = fx.open().await;
    let rehearsed = populated().await;
    let dry = Options {
        dry_run: true,
        ..Options::default()
    };
    migrate(&rehearsed, &db, &dry).await.unwrap();
    assert_eq!(
        writer_pragma(&db, "PRAGMA wal_autocheckpoint").await,
        1000,
        "after a dry run"
    );

    let damaged = populated().await;
    let seq = write_seq(&damaged.path);
    std::fs::write(
        damaged.path.join(tombstone::SIDECAR),
        (seq + 3).to_be_bytes(),
    )
    .unwrap();
    migrate(&damaged, &db, &Options::default())
        .await
        .unwrap_err();
    assert_eq!(
        writer_pragma(&db, "PRAGMA wal_autocheckpoint").await,
        1000,
        "after a refusal"
    );

    let kv = populated().await;
    assert!(
        migrate(&kv, &db, &Options::default())
            .await
            .unwrap()
            .is_complete()
    );
    assert_eq!(
        writer_pragma(&db, "PRAGMA wal_autocheckpoint").await,
        1000,
        "after a migration"
    );
    let pages = writer_pragma(&db, "PRAGMA page_count").await;
    let page_size = writer_pragma(&db, "PRAGMA page_size").await;
    let path = db.as_sqlite().unwrap().path().to_path_buf();
    let file = std::fs::metadata(&path).unwrap().len();
    assert_eq!(
        file,
        u64::try_from(pages * page_size).unwrap(),
        "{}: the database file holds {file} bytes of {pages} pages of {page_size}: the log was not checkpointed",
        path.display()
    );
}

testkit::backend_tests!(sqlite => sqlite;
    automatic_checkpoints_are_on_again_after_every_run,
    a_source_held_by_a_running_node_is_reported_with_its_path,
    a_second_source_into_a_migrated_target_is_refused_naming_both,
    a_copy_is_already_migrated_unless_it_was_written_after,
    foreign_or_unrecorded_tables_are_refused_before_any_write,
    a_later_step_that_fails_fails_the_run_before_the_tombstone,
    an_unknown_tree_is_refused,
    lost_writes_are_refused,
    an_index_out_of_step_with_its_records_is_refused,
    an_altered_value_is_refused,
    a_truncated_data_file_is_refused,
    overwritten_bytes_never_migrate_as_whole,
    accepted_damage_is_migrated_and_recorded,
    a_damaged_format_1_database_is_salvaged_without_sled,
    three_migrators_at_once_migrate_once,
    entries_under_a_linked_sessions_id_join_its_group,
    colliding_entries_of_one_group_are_refused,
    a_dry_run_is_never_a_migration,
);

/// A migrated PostgreSQL database has planner statistics for what it
/// loaded before the first read (a freshly loaded table has none until
/// autovacuum runs, and a listing could then walk a whole index).
async fn migrated_tables_have_planner_statistics(fx: &SqlFixture) {
    let kv = populated().await;
    let db = fx.open().await;
    migrate(&kv, &db, &Options::default()).await.unwrap();
    let analysed = db
        .read(|tx| {
            Box::pin(async move {
                tx.query_sql(Sql::fixed(
                    "SELECT DISTINCT tablename::text FROM pg_stats \
                     WHERE schemaname = current_schema() ORDER BY 1",
                    vec![],
                ))
                .await
            })
        })
        .await
        .unwrap()
        .iter()
        .map(|r| r.text(0).unwrap())
        .collect::<Vec<_>>();
    for table in ["accounts", "sessions", "kvstores", "actions"] {
        assert!(
            analysed.iter().any(|t| t == table),
            "{table} has no statistics: {analysed:?}"
        );
    }
}

testkit::backend_tests!(postgres => postgres;
    migrated_tables_have_planner_statistics,
    a_source_held_by_a_running_node_is_reported_with_its_path,
    a_second_source_into_a_migrated_target_is_refused_naming_both,
    a_copy_is_already_migrated_unless_it_was_written_after,
    foreign_or_unrecorded_tables_are_refused_before_any_write,
    a_later_step_that_fails_fails_the_run_before_the_tombstone,
    an_unknown_tree_is_refused,
    lost_writes_are_refused,
    an_index_out_of_step_with_its_records_is_refused,
    an_altered_value_is_refused,
    a_truncated_data_file_is_refused,
    overwritten_bytes_never_migrate_as_whole,
    accepted_damage_is_migrated_and_recorded,
    a_damaged_format_1_database_is_salvaged_without_sled,
    three_migrators_at_once_migrate_once,
    entries_under_a_linked_sessions_id_join_its_group,
    colliding_entries_of_one_group_are_refused,
    a_dry_run_is_never_a_migration,
);

/// A PostgreSQL server of the test's own, to stop and start again.
mod server {
    use testkit::cluster::LocalCluster;

    pub(super) struct Server {
        pub(super) cluster: LocalCluster,
    }

    impl Server {
        /// `None` (after a loud skip) when no local server binaries exist
        /// and PostgreSQL is not required.
        pub(super) fn start(test: &str) -> Option<Server> {
            match LocalCluster::start_with(Some(std::process::id()), true) {
                Ok(cluster) => Some(Server { cluster }),
                Err(e) if !testkit::pg::required() => {
                    testkit::pg::report_skip(test, &e.to_string());
                    None
                }
                Err(e) => panic!("{}=1 but no local PostgreSQL: {e}", testkit::REQUIRE_ENV),
            }
        }

        pub(super) fn url(&self) -> String {
            self.cluster.url("postgres")
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.cluster.stop_now();
        }
    }
}

async fn connect(url: &str) -> Db {
    sqldb::PostgresDb::connect(url, sqldb::PostgresOptions::with_pool_size(2))
        .await
        .unwrap()
        .into()
}

/// Stops the server after `n` progress reports, as a crash would.
struct StopAfter<'a>(&'a server::Server, u64, std::sync::atomic::AtomicU64);

impl migrator::Progress for StopAfter<'_> {
    fn progress(&self, _: migrator::ProgressEvent) -> Result<(), sqldb::BoxError> {
        if self.2.fetch_add(1, Ordering::SeqCst) + 1 == self.1 {
            self.0.cluster.stop_now()?;
        }
        Ok(())
    }
}

/// Stops the server, then writes the tombstone: the data committed, the
/// steps after it cannot run.
#[derive(Debug)]
struct StopThenMark(Arc<AtomicBool>, std::path::PathBuf, u16);

impl migrator::MarkWriter for StopThenMark {
    fn mark(&self, path: &Path, mark: &tombstone::Mark) -> Result<(), tombstone::Error> {
        let cluster = testkit::cluster::LocalCluster::attach_durable(self.1.clone(), self.2)
            .map_err(|e| tombstone::Error::Io {
                path: self.1.clone(),
                source: e,
            })?;
        cluster.stop_now().map_err(|e| tombstone::Error::Io {
            path: self.1.clone(),
            source: e,
        })?;
        self.0.store(true, Ordering::SeqCst);
        tombstone::mark(path, mark)
    }
}

/// Tests that stop a PostgreSQL server of their own (named under
/// `postgres::` so the CI table counts them there).
mod stopped_server {
    mod postgres {
        use super::super::*;

        /// The server stops before each schema step in turn (steps before it
        /// applied): the migration fails with nothing of the data written, the
        /// source live; with the server back, the next run completes.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn stopped_before_each_schema_step_keeps_no_data_and_recovers() {
            let Some(server) = server::Server::start(concat!(
                module_path!(),
                "::stopped_before_each_schema_step_keeps_no_data_and_recovers"
            )) else {
                return;
            };
            for step in 1..=sqldb::schema::KV_TO_SQL_VERSION {
                let kv = populated().await;
                let seq = write_seq(&kv.path);
                let dbname = format!("before_step_{step}");
                let admin = connect(&server.url()).await;
                let create = format!("CREATE DATABASE {dbname}");
                admin
                    .as_postgres()
                    .unwrap()
                    .dedicated()
                    .await
                    .unwrap()
                    .client()
                    .batch_execute(&create)
                    .await
                    .unwrap();
                let url = testkit::pg::with_dbname(&server.url(), &dbname);
                let db = connect(&url).await;
                if step > 1 {
                    migrator::schema::runner()
                        .through(step - 1)
                        .run(&db)
                        .await
                        .unwrap();
                }
                server.cluster.stop_now().unwrap();
                let err = migrate(&kv, &db, &Options::default()).await.unwrap_err();
                assert_eq!(err.data, DataState::NotWritten, "before step {step}: {err}");
                assert!(is_live(&kv.path));
                assert_eq!(write_seq(&kv.path), seq);
                server.cluster.start_again().unwrap();
                let db = connect(&url).await;
                nothing_kept(&db, &kv, seq).await;
                let done = migrate(&kv, &db, &Options::default()).await.unwrap();
                assert!(done.is_complete(), "after step {step}: {done:?}");
                assert_eq!(rows(&db, "actions").await, 20);
            }
        }

        /// The server stops in the middle of the data step: nothing kept, the
        /// source live; the next run migrates.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn stopped_during_the_data_step_keeps_nothing() {
            let Some(server) = server::Server::start(concat!(
                module_path!(),
                "::stopped_during_the_data_step_keeps_nothing"
            )) else {
                return;
            };
            for n in 1..=3u64 {
                let kv = populated().await;
                let seq = write_seq(&kv.path);
                let db = connect(&server.url()).await;
                let stop = StopAfter(&server, n, Default::default());
                let err = migrator::migrate(&kv.path, &db, &Options::default(), Some(&stop))
                    .await
                    .unwrap_err();
                assert!(is_live(&kv.path), "{err}");
                server.cluster.start_again().unwrap();
                let db = connect(&server.url()).await;
                match err.data {
                    DataState::NotWritten => nothing_kept(&db, &kv, seq).await,
                    DataState::MaybeCommitted => {}
                }
                let done = migrate(&kv, &db, &Options::default()).await.unwrap();
                assert!(done.is_complete(), "{done:?}");
                // Start the next trial on an empty database.
                drop(db);
                let admin = connect(&server.url()).await;
                let conn = admin.as_postgres().unwrap().dedicated().await.unwrap();
                conn.client()
                    .batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
                    .await
                    .unwrap();
            }
        }

        /// The server stops after the data committed, before the steps after
        /// it: the outcome says the data is safe and what is left; the source
        /// is retired; the next run, with the server back, finishes.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn stopped_after_the_commit_keeps_the_data_and_finishes_on_the_next_run() {
            let Some(server) = server::Server::start(concat!(
                module_path!(),
                "::stopped_after_the_commit_keeps_the_data_and_finishes_on_the_next_run"
            )) else {
                return;
            };
            let kv = populated().await;
            let db = connect(&server.url()).await;
            let stopped = Arc::new(AtomicBool::new(false));
            let opts = Options {
                marker: Arc::new(StopThenMark(
                    stopped.clone(),
                    server.cluster.dir().to_path_buf(),
                    server.cluster.port(),
                )),
                ..Options::default()
            };
            let outcome = migrate(&kv, &db, &opts).await.unwrap();
            assert!(stopped.load(Ordering::SeqCst));
            assert_eq!(outcome.kind, OutcomeKind::Migrated);
            assert!(matches!(outcome.tombstone, TombstoneState::Written(_)));
            assert!(outcome.unfinished_steps.is_some(), "{outcome:?}");
            assert!(!is_live(&kv.path));
            server.cluster.start_again().unwrap();
            let db = connect(&server.url()).await;
            let done = migrate(&kv, &db, &Options::default()).await.unwrap();
            assert_eq!(done.kind, OutcomeKind::AlreadyMigrated);
            assert!(done.is_complete(), "{done:?}");
            assert!(
                migrator::records(&db)
                    .await
                    .unwrap()
                    .iter()
                    .all(|r| !r.tombstone_pending)
            );
        }
    }
}
