//! The schema runner on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use migrator::schema::STEPS;
use sqldb::migrate::{CodeStep, MigrateError, Migrator, NoLegacyData};
use sqldb::schema::{KV_TO_SQL_VERSION, Step, StepKind};
use sqldb::sea_query::{Alias, Expr, ExprTrait, Query};
use sqldb::{BoxError, Db, Tx, TxExt, introspect};
use testkit::sql::{SqlFixture, postgres, sqlite};

fn nodestore() -> Migrator<'static> {
    migrator::schema::runner().code_step(KV_TO_SQL_VERSION, &NoLegacyData)
}

async fn table_names(db: &Db) -> Vec<String> {
    introspect::describe(db)
        .await
        .unwrap()
        .tables
        .into_keys()
        .collect()
}

async fn fresh_database_gets_every_step(fx: &SqlFixture) {
    let db = fx.open().await;
    let report = nodestore().run(&db).await.unwrap();
    let versions: Vec<i64> = report.applied.iter().map(|s| s.version).collect();
    assert_eq!(versions, (1..=STEPS.len() as i64).collect::<Vec<_>>());

    let applied = nodestore().applied(&db).await.unwrap();
    assert_eq!(
        applied, report.applied,
        "the tracking table records what was applied"
    );
    for (row, step) in applied.iter().zip(STEPS) {
        assert_eq!(row.name, step.name);
        assert_eq!(row.checksum, step.checksum());
    }
    let tables = table_names(&db).await;
    for t in [
        "accounts",
        "account_payments",
        "account_invoices",
        "account_indices",
        "sessions",
        "session_macaroon_permissions",
        "session_macaroon_caveats",
        "session_feature_configs",
        "session_privacy_flags",
        "rules",
        "features",
        "kvstores",
        "privacy_pairs",
        "actions",
        "nodestore_schema_steps",
    ] {
        assert!(
            tables.contains(&t.to_owned()),
            "missing table {t}: {tables:?}"
        );
    }
}

/// A rehearsal runs every pending step (the code step included) and keeps
/// nothing; a later real run applies them all.
async fn rehearsal_runs_every_step_and_keeps_nothing(fx: &SqlFixture) {
    let db = fx.open().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let step = SlowCounter(runs.clone());
    let rehearsal = migrator::schema::runner()
        .code_step(KV_TO_SQL_VERSION, &step)
        .rehearse(&db)
        .await
        .unwrap();
    assert_eq!(rehearsal.applied.len(), STEPS.len());
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the code step ran");
    assert!(
        table_names(&db).await.is_empty(),
        "nothing kept, not even the tracking table"
    );
    let failing = migrator::schema::runner()
        .code_step(KV_TO_SQL_VERSION, &WritesThenFails)
        .rehearse(&db)
        .await;
    assert!(
        matches!(failing, Err(MigrateError::StepFailed { .. })),
        "{failing:?}"
    );
    assert!(table_names(&db).await.is_empty());
    assert_eq!(
        nodestore().run(&db).await.unwrap().applied.len(),
        STEPS.len()
    );
    let again = nodestore().rehearse(&db).await.unwrap();
    assert!(
        again.applied.is_empty(),
        "a current database has nothing to rehearse"
    );
}

async fn second_run_applies_nothing(fx: &SqlFixture) {
    let db = fx.open().await;
    nodestore().run(&db).await.unwrap();
    let before = nodestore().applied(&db).await.unwrap();
    let again = nodestore().run(&db).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(nodestore().applied(&db).await.unwrap(), before);
}

async fn update_tracking_row(
    db: &Db,
    version: i64,
    column: &'static str,
    value: sqldb::sea_query::Value,
) {
    db.write(|tx| {
        let value = value.clone();
        Box::pin(async move {
            let stmt = Query::update()
                .table(Alias::new("nodestore_schema_steps"))
                .value(Alias::new(column), value)
                .and_where(Expr::col(Alias::new("version")).eq(version))
                .to_owned();
            tx.exec(&stmt).await
        })
    })
    .await
    .unwrap();
}

async fn tampered_checksum_is_refused_naming_the_step(fx: &SqlFixture) {
    let db = fx.open().await;
    nodestore().run(&db).await.unwrap();
    update_tracking_row(&db, 4, "checksum", vec![0u8; 32].into()).await;
    let err = nodestore().run(&db).await.unwrap_err();
    match &err {
        MigrateError::Mismatch {
            version: 4,
            name,
            what: "checksum",
        } => assert_eq!(name, "kvstores"),
        other => panic!("expected a checksum mismatch on step 4, got {other:?}"),
    }
    assert!(err.to_string().contains("step 4 (kvstores)"), "{err}");
}

async fn edited_step_in_the_binary_is_refused(fx: &SqlFixture) {
    let db = fx.open().await;
    let original = [Step {
        version: 1,
        name: "t",
        kind: StepKind::Sql("CREATE TABLE t (a TEXT);"),
    }];
    Migrator::with_steps(&original).run(&db).await.unwrap();
    let edited = [Step {
        version: 1,
        name: "t",
        kind: StepKind::Sql("CREATE TABLE t (b TEXT);"),
    }];
    let err = Migrator::with_steps(&edited).run(&db).await.unwrap_err();
    assert!(
        matches!(
            err,
            MigrateError::Mismatch {
                version: 1,
                what: "checksum",
                ..
            }
        ),
        "{err:?}"
    );
    let renamed = [Step {
        version: 1,
        name: "u",
        kind: StepKind::Sql("CREATE TABLE t (a TEXT);"),
    }];
    let err = Migrator::with_steps(&renamed).run(&db).await.unwrap_err();
    assert!(
        matches!(
            err,
            MigrateError::Mismatch {
                version: 1,
                what: "name",
                ..
            }
        ),
        "{err:?}"
    );
}

async fn newer_database_is_refused(fx: &SqlFixture) {
    let db = fx.open().await;
    nodestore().run(&db).await.unwrap();
    let next = STEPS.len() as i64 + 1;
    db.write(|tx| {
        Box::pin(async move {
            let stmt = Query::insert()
                .into_table(Alias::new("nodestore_schema_steps"))
                .columns(
                    ["version", "name", "checksum", "applied_at", "duration_us"].map(Alias::new),
                )
                .values_panic([
                    next.into(),
                    "from_the_future".into(),
                    vec![1u8; 32].into(),
                    chrono::Utc::now().into(),
                    0i64.into(),
                ])
                .to_owned();
            tx.exec(&stmt).await
        })
    })
    .await
    .unwrap();
    let err = nodestore().run(&db).await.unwrap_err();
    match &err {
        MigrateError::NewerDatabase {
            version,
            name,
            latest,
        } => {
            assert_eq!(
                (*version, name.as_str(), *latest),
                (next, "from_the_future", next - 1)
            );
        }
        other => panic!("expected NewerDatabase, got {other:?}"),
    }
}

/// A step commits with its tracking row, so a recorded step is complete:
/// the legacy `complete` column is written true and never consulted.
async fn tracking_columns(db: &Db) -> Vec<String> {
    introspect::describe(db).await.unwrap().tables["nodestore_schema_steps"]
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect()
}

/// A tracking table made before its `complete` column was understood to be
/// meaningless (a step commits with its row) loses the column on the next
/// run that writes, keeps its rows, and works as a new one does; a
/// read-only look leaves it as it is.
async fn an_older_tracking_table_loses_its_complete_column(fx: &SqlFixture) {
    let db = fx.open().await;
    let first = [Step {
        version: 1,
        name: "nodestore",
        kind: STEPS[0].kind,
    }];
    Migrator::with_steps(&first).run(&db).await.unwrap();
    // Back to the older shape, as a database made then has it: on
    // PostgreSQL the column is NOT NULL without a default, so an insert
    // that leaves it out fails (SQLite cannot add such a column to a table
    // that has rows; there it is nullable).
    db.write(|tx| {
        Box::pin(async move {
            tx.execute_script("ALTER TABLE nodestore_schema_steps ADD COLUMN complete BOOLEAN")
                .await?;
            tx.execute_script("UPDATE nodestore_schema_steps SET complete = TRUE")
                .await?;
            if tx.dialect() == sqldb::Dialect::Postgres {
                tx.execute_script(
                    "ALTER TABLE nodestore_schema_steps ALTER COLUMN complete SET NOT NULL",
                )
                .await?;
            }
            Ok::<(), sqldb::DbError>(())
        })
    })
    .await
    .unwrap();
    assert!(tracking_columns(&db).await.contains(&"complete".to_owned()));
    let before = nodestore().applied(&db).await.unwrap();
    assert_eq!(before.len(), 1);
    assert!(
        tracking_columns(&db).await.contains(&"complete".to_owned()),
        "a read-only look must not change the table"
    );

    let report = nodestore().run(&db).await.unwrap();
    assert_eq!(report.applied.len(), STEPS.len() - 1, "{report:?}");
    let columns = tracking_columns(&db).await;
    assert!(!columns.contains(&"complete".to_owned()), "{columns:?}");
    let after = nodestore().applied(&db).await.unwrap();
    assert_eq!(after[0], before[0], "the older row is kept as it was");
    assert_eq!(after.len(), STEPS.len());
    assert!(nodestore().run(&db).await.unwrap().applied.is_empty());
}

async fn failing_sql_step_records_nothing_and_changes_nothing(fx: &SqlFixture) {
    let db = fx.open().await;
    let steps = [
        Step {
            version: 1,
            name: "one",
            kind: StepKind::Sql("CREATE TABLE one (a TEXT NOT NULL);"),
        },
        Step {
            version: 2,
            name: "two",
            kind: StepKind::Sql(
                "CREATE TABLE two (a TEXT NOT NULL);\nINSERT INTO two (a) VALUES ('x');\nINSERT INTO missing_table VALUES (1);",
            ),
        },
    ];
    let err = Migrator::with_steps(&steps).run(&db).await.unwrap_err();
    assert!(
        matches!(err, MigrateError::StepFailed { version: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("step 2 (two)"), "{err}");
    let applied = Migrator::with_steps(&steps).applied(&db).await.unwrap();
    assert_eq!(
        applied.iter().map(|a| a.version).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(
        table_names(&db).await,
        vec!["nodestore_schema_steps".to_owned(), "one".to_owned()]
    );
}

async fn failing_first_step_leaves_the_database_as_it_was(fx: &SqlFixture) {
    let db = fx.open().await;
    let bad_first = [Step {
        version: 1,
        name: "bad",
        kind: StepKind::Sql("CREATE TABLE x (a TEXT); SELEC 1;"),
    }];
    let err = Migrator::with_steps(&bad_first).run(&db).await.unwrap_err();
    assert!(
        matches!(err, MigrateError::StepFailed { version: 1, .. }),
        "{err:?}"
    );
    assert!(
        Migrator::with_steps(&bad_first)
            .applied(&db)
            .await
            .unwrap()
            .is_empty()
    );
    // Nothing but the (empty) tracking table.
    assert_eq!(
        table_names(&db).await,
        vec!["nodestore_schema_steps".to_owned()]
    );
}

struct WritesThenFails;

#[async_trait]
impl CodeStep for WritesThenFails {
    async fn run(&self, tx: &mut dyn Tx) -> Result<(), BoxError> {
        let stmt = Query::insert()
            .into_table(Alias::new("account_indices"))
            .columns([Alias::new("name"), Alias::new("value")])
            .values_panic(["last_add_index".into(), 7i64.into()])
            .to_owned();
        tx.exec(&stmt).await?;
        Err("injected failure after one write".into())
    }
}

async fn failing_code_step_keeps_none_of_its_writes(fx: &SqlFixture) {
    let db = fx.open().await;
    let err = migrator::schema::runner()
        .code_step(KV_TO_SQL_VERSION, &WritesThenFails)
        .run(&db)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MigrateError::StepFailed { version: KV_TO_SQL_VERSION, name, .. } if name == "kvdb_to_sql"),
        "{err:?}"
    );
    assert!(err.to_string().contains("injected failure"), "{err}");
    let applied = nodestore().applied(&db).await.unwrap();
    assert_eq!(
        applied.iter().map(|s| s.version).collect::<Vec<_>>(),
        (1..KV_TO_SQL_VERSION).collect::<Vec<_>>(),
        "every step before the code step stays, none after it runs"
    );
    let rows = db
        .read(|tx| {
            Box::pin(async move {
                tx.query(
                    &Query::select()
                        .column(Alias::new("name"))
                        .from(Alias::new("account_indices"))
                        .to_owned(),
                )
                .await
            })
        })
        .await
        .unwrap();
    assert!(rows.is_empty(), "the failed step's write was rolled back");
    // The next run, with a working step, completes.
    nodestore().run(&db).await.unwrap();
    assert_eq!(nodestore().applied(&db).await.unwrap().len(), STEPS.len());
}

async fn missing_code_step_is_an_error_and_never_recorded(fx: &SqlFixture) {
    let db = fx.open().await;
    let err = migrator::schema::runner().run(&db).await.unwrap_err();
    assert!(
        matches!(
            err,
            MigrateError::MissingCodeStep {
                version: KV_TO_SQL_VERSION,
                ..
            }
        ),
        "{err:?}"
    );
    let applied = migrator::schema::runner().applied(&db).await.unwrap();
    assert!(applied.iter().all(|a| a.version != KV_TO_SQL_VERSION));
}

/// Counts its runs and holds its transaction open a while, so two runners
/// started together overlap.
struct SlowCounter(Arc<AtomicUsize>);

#[async_trait]
impl CodeStep for SlowCounter {
    async fn run(&self, _tx: &mut dyn Tx) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }
}

async fn concurrent_runners_apply_each_step_once(fx: &SqlFixture) {
    let (a, b) = (fx.open().await, fx.open().await);
    let runs = Arc::new(AtomicUsize::new(0));
    let step = SlowCounter(runs.clone());
    let (first, second) = (
        migrator::schema::runner().code_step(KV_TO_SQL_VERSION, &step),
        migrator::schema::runner().code_step(KV_TO_SQL_VERSION, &step),
    );
    let (ra, rb) = tokio::join!(first.run(&a), second.run(&b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the code step ran exactly once"
    );
    assert_eq!(
        ra.applied.len() + rb.applied.len(),
        STEPS.len(),
        "every step applied by exactly one runner: {ra:?} {rb:?}"
    );
    let applied = nodestore().applied(&a).await.unwrap();
    assert_eq!(
        applied.iter().map(|s| s.version).collect::<Vec<_>>(),
        (1..=STEPS.len() as i64).collect::<Vec<_>>()
    );
}

/// litd's view of the database: `schema_migrations` and the versions in
/// `migration_tracker`.
async fn litd_view(db: &Db) -> (Option<(i64, bool)>, Vec<i64>) {
    db.read(|tx| {
        Box::pin(async move {
            let version = sqldb::litd::read(tx).await?;
            let tracked = if version.is_some() {
                tx.query(
                    &Query::select()
                        .column(Alias::new("version"))
                        .from(Alias::new(sqldb::litd::MIGRATION_TRACKER))
                        .to_owned(),
                )
                .await?
                .iter()
                .map(|r| r.i64(0))
                .collect::<Result<Vec<_>, _>>()?
            } else {
                Vec::new()
            };
            Ok::<_, sqldb::DbError>((version, tracked))
        })
    })
    .await
    .unwrap()
}

/// Each step that is one of litd's writes litd's tracking tables in its
/// own transaction: litd's version of the schema the database holds,
/// clean; a failed data step leaves them at the version before it.
async fn litd_tracking_follows_the_steps(fx: &SqlFixture) {
    let db = fx.open().await;
    nodestore().through(1).run(&db).await.unwrap();
    assert_eq!(litd_view(&db).await.0, None, "step 1 is nodestore's own");
    nodestore().through(4).run(&db).await.unwrap();
    assert_eq!(litd_view(&db).await, (Some((3, false)), vec![1, 2, 3]));
    let err = migrator::schema::runner()
        .code_step(KV_TO_SQL_VERSION, &WritesThenFails)
        .run(&db)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::StepFailed { .. }), "{err}");
    assert_eq!(
        litd_view(&db).await,
        (Some((5, false)), vec![1, 2, 3, 4, 5]),
        "the failed data step wrote nothing of litd's"
    );
    nodestore().run(&db).await.unwrap();
    assert_eq!(
        litd_view(&db).await,
        (
            Some((sqldb::litd::LATEST, false)),
            (1..=sqldb::litd::LATEST).collect()
        )
    );
}

/// A database whose steps were applied before the runner kept litd's
/// tables gets them at its next run.
async fn litd_tracking_is_added_to_an_older_database(fx: &SqlFixture) {
    let db = fx.open().await;
    nodestore().run(&db).await.unwrap();
    db.write(|tx| {
        Box::pin(async move {
            tx.execute_script("DROP TABLE schema_migrations; DROP TABLE migration_tracker")
                .await
        })
    })
    .await
    .unwrap();
    assert_eq!(litd_view(&db).await.0, None);
    let report = nodestore().run(&db).await.unwrap();
    assert!(report.applied.is_empty());
    assert_eq!(
        litd_view(&db).await,
        (
            Some((sqldb::litd::LATEST, false)),
            (1..=sqldb::litd::LATEST).collect()
        )
    );
}

/// The accounts' two timestamps as text (SQLite) and as times.
async fn account_times(db: &Db) -> Vec<(String, String)> {
    db.read(|tx| {
        Box::pin(async move {
            tx.query_sql(sqldb::Sql::fixed(
                "SELECT CAST(last_updated AS TEXT), CAST(expiration AS TEXT) FROM accounts ORDER BY id",
                vec![],
            ))
            .await?
            .iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?)))
            .collect::<Result<Vec<_>, sqldb::DbError>>()
        })
    })
    .await
    .unwrap()
}

/// Step 11 rewrites SQLite timestamps in nodestore's earlier text form into
/// Go's, in one transaction with a count per form before and after; every
/// value reads back as the same time. On PostgreSQL it changes nothing.
async fn step_11_rewrites_earlier_time_text_in_gos_form(fx: &SqlFixture) {
    let db = fx.open().await;
    nodestore().through(10).run(&db).await.unwrap();
    let sqlite = db.dialect() == sqldb::Dialect::Sqlite;
    // Rows as nodestore wrote them before: fixed-width text on SQLite.
    let script = if sqlite {
        "INSERT INTO accounts (alias, type, initial_balance_msat, current_balance_msat, last_updated, expiration) \
         VALUES (1, 0, 5, 5, '2025-01-01 00:06:15.000000', '0001-01-01 00:00:00.000000'), \
                (2, 0, 5, 5, '2025-01-01 00:06:15.500000', '2026-02-03 04:05:06.123456'); \
         UPDATE nodestore_schema_steps SET applied_at = '2024-12-31 23:59:59.000001'"
    } else {
        "INSERT INTO accounts (alias, type, initial_balance_msat, current_balance_msat, last_updated, expiration) \
         VALUES (1, 0, 5, 5, '2025-01-01 00:06:15', '0001-01-01 00:00:00'), \
                (2, 0, 5, 5, '2025-01-01 00:06:15.5', '2026-02-03 04:05:06.123456')"
    };
    db.write(|tx| Box::pin(async move { tx.execute_script(script).await }))
        .await
        .unwrap();
    let before = account_times(&db).await;
    let report = nodestore().run(&db).await.unwrap();
    assert_eq!(
        report.applied.iter().map(|s| s.version).collect::<Vec<_>>(),
        vec![11]
    );
    let after = account_times(&db).await;
    if sqlite {
        assert_eq!(
            after,
            vec![
                (
                    "2025-01-01 00:06:15 +0000 UTC".to_owned(),
                    "0001-01-01 00:00:00 +0000 UTC".to_owned()
                ),
                (
                    "2025-01-01 00:06:15.5 +0000 UTC".to_owned(),
                    "2026-02-03 04:05:06.123456 +0000 UTC".to_owned()
                ),
            ]
        );
        let stamps = db
            .read(|tx| {
                Box::pin(async move {
                    tx.query_sql(sqldb::Sql::fixed(
                        "SELECT count(*) FROM nodestore_schema_steps WHERE applied_at NOT LIKE '% UTC'",
                        vec![],
                    ))
                    .await?[0]
                        .i64(0)
                })
            })
            .await
            .unwrap();
        assert_eq!(stamps, 0, "every step's time is in Go's form");
    } else {
        assert_eq!(after, before, "PostgreSQL's typed timestamps are untouched");
    }
}

/// A SQLite timestamp in neither form stops step 11, naming the table and
/// column, and the step's transaction changes nothing.
async fn step_11_refuses_time_text_in_neither_form(fx: &SqlFixture) {
    let db = fx.open().await;
    if db.dialect() != sqldb::Dialect::Sqlite {
        return;
    }
    nodestore().through(10).run(&db).await.unwrap();
    db.write(|tx| {
        Box::pin(async move {
            tx.execute_script(
                "INSERT INTO accounts (alias, type, initial_balance_msat, current_balance_msat, last_updated, expiration) \
                 VALUES (1, 0, 5, 5, '2025-01-01 00:06:15.000000', 'next tuesday')",
            )
            .await
        })
    })
    .await
    .unwrap();
    let before = account_times(&db).await;
    let err = nodestore().run(&db).await.unwrap_err();
    assert!(
        err.to_string().contains("accounts.expiration") && err.to_string().contains("step 11"),
        "{err}"
    );
    assert_eq!(account_times(&db).await, before);
}

testkit::backend_tests!(sqlite => sqlite;
    fresh_database_gets_every_step,
    rehearsal_runs_every_step_and_keeps_nothing,
    second_run_applies_nothing,
    tampered_checksum_is_refused_naming_the_step,
    edited_step_in_the_binary_is_refused,
    newer_database_is_refused,
    an_older_tracking_table_loses_its_complete_column,
    failing_sql_step_records_nothing_and_changes_nothing,
    failing_first_step_leaves_the_database_as_it_was,
    failing_code_step_keeps_none_of_its_writes,
    missing_code_step_is_an_error_and_never_recorded,
    concurrent_runners_apply_each_step_once,
    litd_tracking_follows_the_steps,
    litd_tracking_is_added_to_an_older_database,
    step_11_rewrites_earlier_time_text_in_gos_form,
    step_11_refuses_time_text_in_neither_form,
);

testkit::backend_tests!(postgres => postgres;
    fresh_database_gets_every_step,
    rehearsal_runs_every_step_and_keeps_nothing,
    second_run_applies_nothing,
    tampered_checksum_is_refused_naming_the_step,
    edited_step_in_the_binary_is_refused,
    newer_database_is_refused,
    an_older_tracking_table_loses_its_complete_column,
    failing_sql_step_records_nothing_and_changes_nothing,
    failing_first_step_leaves_the_database_as_it_was,
    failing_code_step_keeps_none_of_its_writes,
    missing_code_step_is_an_error_and_never_recorded,
    concurrent_runners_apply_each_step_once,
    litd_tracking_follows_the_steps,
    litd_tracking_is_added_to_an_older_database,
    step_11_rewrites_earlier_time_text_in_gos_form,
    step_11_refuses_time_text_in_neither_form,
);
