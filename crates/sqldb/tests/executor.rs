//! The executors: transactions, parameter binding, timestamps, error
//! classification and connection settings, on SQLite and PostgreSQL; and
//! the proof that both backends end up with the same schema.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use chrono::{DateTime, Duration, TimeZone, Utc};
use sqldb::sea_query::{Alias, Expr, ExprTrait, Order, Query, Value};
use sqldb::time::zero_time;
use sqldb::{Db, DbError, ErrorKind, TxExt, TxMode, introspect};
use testkit::sql::{SqlFixture, postgres, sqlite};

/// The columns of an account row without its id and label, in the order
/// the tests' rows give them.
const ACCOUNT_COLUMNS: [&str; 6] = [
    "alias",
    "type",
    "initial_balance_msat",
    "current_balance_msat",
    "last_updated",
    "expiration",
];

fn a(name: &str) -> Alias {
    Alias::new(name)
}

/// Inserts an account row with the given alias and timestamps.
async fn insert_account(
    db: &Db,
    alias: i64,
    last_updated: DateTime<Utc>,
    expiration: DateTime<Utc>,
) -> Result<(), DbError> {
    db.write(|tx| Box::pin(insert_in(tx, alias, last_updated, expiration)))
        .await
        .map(|_| ())
}

/// Inserts an account row in `tx`; returns the rows written.
async fn insert_in(
    tx: &mut dyn sqldb::Tx,
    alias: i64,
    last_updated: DateTime<Utc>,
    expiration: DateTime<Utc>,
) -> Result<u64, DbError> {
    let stmt = Query::insert()
        .into_table(a("accounts"))
        .columns(ACCOUNT_COLUMNS.map(a))
        .values_panic([
            alias.into(),
            1i64.into(),
            1000i64.into(),
            (-5i64).into(),
            last_updated.into(),
            expiration.into(),
        ])
        .to_owned();
    tx.exec(&stmt).await
}

async fn aliases(db: &Db) -> Vec<i64> {
    account_column(db, "alias").await
}

/// An integer column of every account, in alias order.
async fn account_column(db: &Db, column: &'static str) -> Vec<i64> {
    db.read(|tx| {
        Box::pin(async move {
            let rows = tx
                .query(
                    &Query::select()
                        .column(a(column))
                        .from(a("accounts"))
                        .order_by(a("alias"), Order::Asc)
                        .to_owned(),
                )
                .await?;
            rows.iter()
                .map(|r| r.i64(0))
                .collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
    .unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 6, 0, 0).unwrap()
}

async fn write_commits_on_ok_and_rolls_back_on_err(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    insert_account(&db, 1, t0(), zero_time()).await.unwrap();
    let result: Result<(), DbError> = db
        .write(|tx| {
            Box::pin(async move {
                let stmt = Query::insert()
                    .into_table(a("account_indices"))
                    .columns([a("name"), a("value")])
                    .values_panic(["last_add_index".into(), 1i64.into()])
                    .to_owned();
                tx.exec(&stmt).await?;
                Err(DbError::new("test", ErrorKind::Other, "closure failed"))
            })
        })
        .await;
    assert!(result.is_err());
    let count = db
        .read(|tx| {
            Box::pin(async move {
                tx.query_one(
                    &Query::select()
                        .expr(Expr::col(a("name")).count())
                        .from(a("account_indices"))
                        .to_owned(),
                )
                .await?
                .i64(0)
            })
        })
        .await
        .unwrap();
    assert_eq!(count, 0, "the failed closure's insert was rolled back");
    assert_eq!(aliases(&db).await, vec![1]);
}

async fn dropped_transaction_rolls_back_and_frees_the_connection(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    {
        let mut tx = db.begin(TxMode::Write).await.unwrap();
        let stmt = Query::insert()
            .into_table(a("account_indices"))
            .columns([a("name"), a("value")])
            .values_panic(["last_add_index".into(), 1i64.into()])
            .to_owned();
        tx.exec(&stmt).await.unwrap();
        // Dropped without commit.
    }
    // The writer is free again, and the insert is gone.
    insert_account(&db, 2, t0(), zero_time()).await.unwrap();
    assert_eq!(aliases(&db).await, vec![2]);
    let rows = db
        .read(|tx| {
            Box::pin(async move {
                tx.query(
                    &Query::select()
                        .column(a("name"))
                        .from(a("account_indices"))
                        .to_owned(),
                )
                .await
            })
        })
        .await
        .unwrap();
    assert!(rows.is_empty());
}

async fn read_transactions_refuse_writes(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    let err = db
        .read(|tx| {
            Box::pin(async move {
                let stmt = Query::insert()
                    .into_table(a("account_indices"))
                    .columns([a("name"), a("value")])
                    .values_panic(["x".into(), 1i64.into()])
                    .to_owned();
                tx.exec(&stmt).await
            })
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Other, "{err}");
}

async fn errors_are_classified(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    insert_account(&db, 7, t0(), zero_time()).await.unwrap();
    let dup = insert_account(&db, 7, t0(), zero_time()).await.unwrap_err();
    assert!(dup.is_unique_violation(), "{dup}");

    let fk = db
        .write(|tx| {
            Box::pin(async move {
                let stmt = Query::insert()
                    .into_table(a("account_invoices"))
                    .columns([a("account_id"), a("hash")])
                    .values_panic([999_999i64.into(), vec![1u8; 32].into()])
                    .to_owned();
                tx.exec(&stmt).await
            })
        })
        .await
        .unwrap_err();
    assert!(fk.is_foreign_key_violation(), "{fk}");

    let check = db
        .write(|tx| {
            Box::pin(async move {
                for (table, name) in [("rules", "r"), ("features", "f")] {
                    tx.exec(
                        &Query::insert()
                            .into_table(a(table))
                            .columns([a("name")])
                            .values_panic([name.into()])
                            .to_owned(),
                    )
                    .await?;
                }
                // A feature-scoped entry without a group breaks the CHECK.
                let stmt = Query::insert()
                    .into_table(a("kvstores"))
                    .columns(["perm", "rule_id", "feature_id", "entry_key", "value"].map(a))
                    .values_panic([
                        true.into(),
                        1i64.into(),
                        1i64.into(),
                        "k".into(),
                        vec![1u8].into(),
                    ])
                    .to_owned();
                tx.exec(&stmt).await
            })
        })
        .await
        .unwrap_err();
    assert_eq!(check.kind, ErrorKind::CheckViolation, "{check}");

    let not_null = db
        .write(|tx| {
            Box::pin(async move {
                let stmt = Query::insert()
                    .into_table(a("account_indices"))
                    .columns([a("name"), a("value")])
                    .values_panic(["x".into(), Value::BigInt(None).into()])
                    .to_owned();
                tx.exec(&stmt).await
            })
        })
        .await
        .unwrap_err();
    assert_eq!(not_null.kind, ErrorKind::CheckViolation, "{not_null}");
}

async fn timestamps_round_trip_in_microseconds_and_sort_in_time_order(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    let times = [
        t0() + Duration::nanoseconds(123_456_789),
        Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap()
            + Duration::nanoseconds(999_999_999),
        zero_time(),
        t0() + Duration::microseconds(1),
        Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
        t0(),
    ];
    for (i, t) in times.iter().enumerate() {
        insert_account(&db, i as i64, *t, *t).await.unwrap();
    }
    let rows = db
        .read(|tx| {
            Box::pin(async move {
                tx.query(
                    &Query::select()
                        .columns([a("alias"), a("last_updated"), a("expiration")])
                        .from(a("accounts"))
                        .and_where(Expr::col(a("last_updated")).gt(zero_time()))
                        .order_by(a("last_updated"), Order::Asc)
                        .to_owned(),
                )
                .await
            })
        })
        .await
        .unwrap();
    let read: Vec<(i64, DateTime<Utc>)> = rows
        .iter()
        .map(|r| (r.i64(0).unwrap(), r.time(1).unwrap()))
        .collect();
    let mut expected: Vec<(i64, DateTime<Utc>)> = times
        .iter()
        .enumerate()
        .filter(|(_, t)| **t > zero_time())
        .map(|(i, t)| (i as i64, sqldb::time::truncate_micros(*t)))
        .collect();
    expected.sort_by_key(|(_, t)| *t);
    assert_eq!(
        read, expected,
        "truncated to microseconds, ordered by time, compared by time"
    );
    assert_eq!(
        read[1].1.timestamp_subsec_nanos(),
        0,
        "1969 value truncated, not rounded"
    );

    let too_late = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
    let err = insert_account(&db, 99, too_late, too_late)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Encode, "{err}");
}

async fn integers_bind_to_every_column_width(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    insert_account(&db, i64::MIN, t0(), zero_time())
        .await
        .unwrap();
    insert_account(&db, i64::MAX, t0(), zero_time())
        .await
        .unwrap();
    assert_eq!(aliases(&db).await, vec![i64::MIN, i64::MAX]);
    // SMALLINT (`type`) and INTEGER (`position`) columns take i64 values.
    db.write(|tx| {
        Box::pin(async move {
            tx.exec(
                &Query::update()
                    .table(a("accounts"))
                    .value(a("type"), 300i64)
                    .to_owned(),
            )
            .await
        })
    })
    .await
    .unwrap();
    let types = db
        .read(|tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        &Query::select()
                            .column(a("type"))
                            .from(a("accounts"))
                            .to_owned(),
                    )
                    .await?;
                rows.iter()
                    .map(|r| r.i64(0))
                    .collect::<Result<Vec<_>, DbError>>()
            })
        })
        .await
        .unwrap();
    assert_eq!(types, vec![300, 300]);
}

async fn empty_and_null_blobs_are_told_apart(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    let rows = db
        .write(|tx| {
            Box::pin(async move {
                for (key, value) in [("a", Some(vec![])), ("b", None), ("c", Some(vec![0u8, 1]))] {
                    tx.exec(
                        &Query::insert()
                            .into_table(a("actions"))
                            .columns(
                                [
                                    "rpc_method",
                                    "rpc_params_json",
                                    "created_at",
                                    "action_state",
                                ]
                                .map(a),
                            )
                            .values_panic([
                                key.into(),
                                Value::Bytes(value).into(),
                                t0().into(),
                                0i64.into(),
                            ])
                            .to_owned(),
                    )
                    .await?;
                }
                tx.query(
                    &Query::select()
                        .column(a("rpc_params_json"))
                        .from(a("actions"))
                        .order_by(a("rpc_method"), Order::Asc)
                        .to_owned(),
                )
                .await
            })
        })
        .await
        .unwrap();
    let got: Vec<Option<Vec<u8>>> = rows.iter().map(|r| r.opt_bytes(0).unwrap()).collect();
    assert_eq!(got, vec![Some(vec![]), None, Some(vec![0, 1])]);
    assert_eq!(rows[1].bytes_or_empty(0).unwrap(), Vec::<u8>::new());
}

/// The getters read each column as the type asked for, and a column of
/// another type, or past the last, is a decode error naming the column and
/// what it holds; rows moved to another thread read the same. A row's
/// `Debug` shows no value (a row can hold a secret).
async fn getters_name_the_column_and_what_it_holds(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    insert_account(&db, 7, t0(), t0()).await.unwrap();
    let rows = db
        .read(|tx| {
            Box::pin(async move {
                tx.query(
                    &Query::select()
                        .columns(["alias", "label", "last_updated"].map(a))
                        .expr(Expr::val("text"))
                        .from(a("accounts"))
                        .to_owned(),
                )
                .await
            })
        })
        .await
        .unwrap();
    // Read where the migrator reads pages back: off the executor.
    let row = tokio::task::spawn_blocking(move || rows.into_iter().next().unwrap())
        .await
        .unwrap();
    assert_eq!(row.len(), 4);
    assert_eq!(row.i64(0).unwrap(), 7);
    assert_eq!(row.opt_text(1).unwrap(), None);
    assert_eq!(row.time(2).unwrap(), t0());
    assert_eq!(row.text(3).unwrap(), "text");
    let wrong = row.i64(3).unwrap_err();
    assert_eq!(wrong.kind, ErrorKind::Decode);
    assert!(
        wrong
            .to_string()
            .contains("expected an integer, found text"),
        "{wrong}"
    );
    let null = row.text(1).unwrap_err().to_string();
    assert!(
        null.contains("column 1 (label): expected text, found NULL"),
        "{null}"
    );
    let past = row.bytes(4).unwrap_err().to_string();
    assert!(past.contains("out of range (4 columns)"), "{past}");
    // Its Debug names what each column holds, never a value.
    let debug = format!("{row:?}");
    assert!(
        debug.contains("label: NULL") && debug.contains("alias: an integer"),
        "{debug}"
    );
    assert!(
        !debug.contains("\"text\"") && !debug.contains('7'),
        "{debug}"
    );
}

async fn sqlite_file_is_private_and_durable(fx: &SqlFixture) {
    use std::os::unix::fs::PermissionsExt;
    let db = fx.open_migrated().await;
    let path = db.as_sqlite().unwrap().path().to_path_buf();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
    let mut tx = db.begin(TxMode::Write).await.unwrap();
    let fk = tx
        .query_sql(sqldb::Sql::fixed("PRAGMA foreign_keys", vec![]))
        .await
        .unwrap();
    let journal = tx
        .query_sql(sqldb::Sql::fixed("PRAGMA journal_mode", vec![]))
        .await
        .unwrap();
    let sync = tx
        .query_sql(sqldb::Sql::fixed("PRAGMA synchronous", vec![]))
        .await
        .unwrap();
    assert_eq!(fk[0].i64(0).unwrap(), 1);
    assert_eq!(journal[0].text(0).unwrap(), "wal");
    assert_eq!(sync[0].i64(0).unwrap(), 2, "synchronous = FULL");
    let temp = tx
        .query_sql(sqldb::Sql::fixed("PRAGMA temp_store", vec![]))
        .await
        .unwrap();
    assert_eq!(temp[0].i64(0).unwrap(), 1, "temp_store = FILE");
    tx.rollback().await.unwrap();
}

/// A passive checkpoint copies the whole log into the database file while
/// nothing else runs, without the writer connection (which stays free for
/// writes), and the writer can then truncate the log. Its first version ran
/// on a read-only reader connection and failed with an I/O error every time.
async fn sqlite_checkpoints_copy_the_log_into_the_file(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    let sqlite = db.as_sqlite().unwrap();
    let wal = {
        let mut p = sqlite.path().as_os_str().to_owned();
        p.push("-wal");
        std::path::PathBuf::from(p)
    };
    db.write(|tx| {
        Box::pin(async move {
            tx.execute_script("PRAGMA wal_autocheckpoint = 0").await?;
            for i in 0..200 {
                insert_in(tx, i, t0(), t0()).await?;
            }
            Ok::<_, DbError>(())
        })
    })
    .await
    .unwrap();
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    let (log, moved) = sqlite.checkpoint_passive().await.unwrap();
    assert!(log > 0, "the log held the writes");
    assert_eq!(moved, log, "every page copied");
    assert!(sqlite.checkpoint_truncate().await.unwrap());
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0, "log truncated");
    assert_eq!(aliases(&db).await.len(), 200, "and the data is all there");
}

/// A bulk load's page cache is set on the connection and put back exactly;
/// PostgreSQL has nothing to set and says so.
async fn bulk_load_cache_is_set_and_restored(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    let mut tx = db.begin(TxMode::Write).await.unwrap();
    let cache = |rows: Vec<sqldb::Row>| rows[0].i64(0).unwrap();
    let previous = tx.set_cache_size_kib(8192).await.unwrap();
    if db.dialect() == sqldb::Dialect::Postgres {
        assert_eq!(previous, None);
        return;
    }
    let previous = previous.expect("SQLite reports its setting");
    let now = tx
        .query_sql(sqldb::Sql::fixed("PRAGMA cache_size", vec![]))
        .await
        .unwrap();
    assert_eq!(cache(now), -8192);
    assert_ne!(previous, -8192);
    tx.restore_cache_size(previous).await.unwrap();
    let back = tx
        .query_sql(sqldb::Sql::fixed("PRAGMA cache_size", vec![]))
        .await
        .unwrap();
    assert_eq!(cache(back), previous);
    tx.rollback().await.unwrap();
}

/// `sslmode=require` makes the pool use TLS: the test server has none, so
/// connecting fails saying so; without it the same server connects.
async fn tls_is_used_exactly_when_the_url_requires_it(fx: &SqlFixture) {
    let SqlFixture::Postgres(db) = fx else {
        unreachable!()
    };
    let sep = if db.url().contains('?') { '&' } else { '?' };
    let err = sqldb::PostgresDb::connect(
        &format!("{}{sep}sslmode=require", db.url()),
        Default::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connection, "{err}");
    let text = format!("{err:?}").to_lowercase();
    assert!(text.contains("tls") || text.contains("ssl"), "{err:?}");
    sqldb::PostgresDb::connect(
        &format!("{}{sep}sslmode=prefer", db.url()),
        Default::default(),
    )
    .await
    .unwrap();
}

/// The same steps give the same tables, columns, types, nullability, keys,
/// checks and indexes on both engines.
async fn sqlite_and_postgres_schemas_match(fx: &SqlFixture) {
    let pg = fx.open_migrated().await;
    let lite_fx = SqlFixture::sqlite();
    let lite = lite_fx.open_migrated().await;
    let (pg_shape, lite_shape) = (
        introspect::describe(&pg).await.unwrap(),
        introspect::describe(&lite).await.unwrap(),
    );
    assert_eq!(
        pg_shape.tables.keys().collect::<Vec<_>>(),
        lite_shape.tables.keys().collect::<Vec<_>>()
    );
    for (name, pg_table) in &pg_shape.tables {
        // litd's tracking table is declared as golang-migrate's drivers
        // declare it, which differs by engine (sqldb::litd::ddl).
        if name == sqldb::litd::SCHEMA_MIGRATIONS {
            continue;
        }
        assert_eq!(
            Some(pg_table),
            lite_shape.tables.get(name),
            "table {name} differs"
        );
    }
    // The comparison is not vacuous.
    let kv = &pg_shape.tables["kvstores"];
    assert!(kv.has_check);
    assert_eq!(
        kv.indexes.iter().filter(|i| i.predicate.is_some()).count(),
        3
    );
    let sessions = &pg_shape.tables["sessions"];
    assert!(
        sessions
            .foreign_keys
            .iter()
            .any(|f| f.ref_table == "sessions" && f.on_delete == "CASCADE")
    );
    assert_eq!(
        sessions
            .columns
            .iter()
            .find(|c| c.name == "revoked_at")
            .map(|c| c.not_null),
        Some(false)
    );
}

/// `copy_in` appends rows of every column type, NULLs included, and reads
/// back what plain statements would have written; a row of the wrong width
/// or a name that is not a plain identifier is refused, nothing written.
async fn copy_in_appends_every_value_type(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    let t = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap() + Duration::microseconds(7);
    let n = 2_500i64;
    let rows: Vec<Vec<Value>> = (0..n)
        .map(|i| {
            vec![
                i.into(),
                Value::String((i % 2 == 0).then(|| format!("label {i} 'q' 🦀"))),
                0i64.into(),
                (i * 1000).into(),
                (-i).into(),
                t.into(),
                zero_time().into(),
            ]
        })
        .collect();
    let cols = [
        "alias",
        "label",
        "type",
        "initial_balance_msat",
        "current_balance_msat",
        "last_updated",
        "expiration",
    ];
    let written = db
        .write_once(|tx| Box::pin(async move { tx.copy_in("accounts", &cols, rows).await }))
        .await
        .unwrap();
    assert_eq!(written, n as u64);
    let back = db
        .read(|tx| {
            Box::pin(async move {
                tx.query(
                    &Query::select()
                        .columns(["alias", "label", "current_balance_msat", "last_updated"].map(a))
                        .from(a("accounts"))
                        .order_by(a("alias"), Order::Asc)
                        .to_owned(),
                )
                .await
            })
        })
        .await
        .unwrap();
    assert_eq!(back.len(), n as usize);
    for (i, r) in back.iter().enumerate() {
        let i = i as i64;
        assert_eq!(r.i64(0).unwrap(), i);
        assert_eq!(
            r.opt_text(1).unwrap(),
            (i % 2 == 0).then(|| format!("label {i} 'q' 🦀"))
        );
        assert_eq!(r.i64(2).unwrap(), -i);
        assert_eq!(r.time(3).unwrap(), t);
    }
    let short = vec![vec![Value::BigInt(Some(1))]];
    assert!(
        db.write_once(|tx| Box::pin(async move { tx.copy_in("accounts", &cols, short).await }))
            .await
            .is_err()
    );
    let bad_name = vec![vec![Value::BigInt(Some(1))]];
    let err = db
        .write(|tx| {
            let bad_name = bad_name.clone();
            Box::pin(async move {
                tx.copy_in("accounts; DROP TABLE x", &["alias"], bad_name)
                    .await
            })
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Encode);
    assert_eq!(aliases(&db).await.len(), n as usize, "nothing more written");
}

/// Indexes and constraints set aside for a bulk load come back as they
/// were; rows that break a unique constraint fail the load (at the append
/// or at the rebuild) as a unique violation, and the rollback restores the
/// schema untouched.
async fn indexes_set_aside_come_back_or_roll_back(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    let before = introspect::describe(&db).await.unwrap();
    let tables = ["accounts", "actions", "sessions"];
    let n = db
        .write(|tx| {
            Box::pin(async move {
                let s = sqldb::deferred::set_aside(tx, &tables).await?;
                let n = s.len();
                s.rebuild(tx).await?;
                Ok::<_, DbError>(n)
            })
        })
        .await
        .unwrap();
    assert!(n >= 4, "only {n} set aside");
    assert_eq!(introspect::describe(&db).await.unwrap(), before);
    let row = |alias: i64| -> Vec<Value> {
        vec![
            alias.into(),
            0i64.into(),
            1i64.into(),
            1i64.into(),
            zero_time().into(),
            zero_time().into(),
        ]
    };
    let cols = ACCOUNT_COLUMNS;
    let rows = vec![row(7), row(8), row(7)];
    let err = db
        .write(|tx| {
            let rows = rows.clone();
            Box::pin(async move {
                let s = sqldb::deferred::set_aside(tx, &tables).await?;
                tx.copy_in("accounts", &cols, rows).await?;
                s.rebuild(tx).await
            })
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UniqueViolation, "{err}");
    assert_eq!(introspect::describe(&db).await.unwrap(), before);
    assert!(aliases(&db).await.is_empty(), "nothing written");
}

fn alias_query(tx: &dyn sqldb::Tx, min: i64) -> sqldb::Sql {
    tx.dialect().build(
        &Query::select()
            .column(a("alias"))
            .from(a("accounts"))
            .and_where(Expr::col(a("alias")).gte(min))
            .order_by(a("alias"), Order::Asc)
            .to_owned(),
    )
}

async fn query_batches_answer_each_query_in_order(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    for alias in [1, 2, 3] {
        insert_account(&db, alias, t0(), zero_time()).await.unwrap();
    }
    let answers = db
        .read(|tx| {
            Box::pin(async move {
                let batch = vec![alias_query(tx, 3), alias_query(tx, 1), alias_query(tx, 9)];
                tx.query_batch(batch).await
            })
        })
        .await
        .unwrap();
    let got: Vec<Vec<i64>> = answers
        .iter()
        .map(|rows| rows.iter().map(|r| r.i64(0).unwrap()).collect())
        .collect();
    assert_eq!(got, vec![vec![3], vec![1, 2, 3], vec![]]);

    // A failing query fails the batch with its own error, in a write as in
    // a read, and the write keeps nothing.
    let err = db
        .write(|tx| {
            Box::pin(async move {
                insert_sql(tx, 4).await?;
                let bad = sqldb::Sql::fixed("SELECT no_such_column FROM accounts", vec![]);
                tx.query_batch(vec![alias_query(tx, 1), bad]).await
            })
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no_such_column"), "{err}");
    assert_eq!(
        aliases(&db).await,
        vec![1, 2, 3],
        "the write was rolled back"
    );
}

async fn insert_sql(tx: &mut dyn sqldb::Tx, alias: i64) -> Result<u64, DbError> {
    insert_in(tx, alias, t0(), zero_time()).await
}

async fn a_read_sees_one_snapshot(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    insert_account(&db, 1, t0(), zero_time()).await.unwrap();
    let writer = db.clone();
    let (first, second) = db
        .read(|tx| {
            let writer = writer.clone();
            Box::pin(async move {
                let q = alias_query(tx, 0);
                let first = tx.query_sql(q.clone()).await?.len();
                // A write commits between the read's two queries.
                insert_account(&writer, 2, t0(), zero_time()).await?;
                let second = tx.query_sql(q).await?.len();
                Ok::<_, DbError>((first, second))
            })
        })
        .await
        .unwrap();
    assert_eq!((first, second), (1, 1), "both queries read one snapshot");
    assert_eq!(aliases(&db).await, vec![1, 2], "the write committed");
}

async fn a_read_that_runs_nothing_ends_cleanly(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    for _ in 0..20 {
        db.read(|_tx| Box::pin(async move { Ok::<_, DbError>(()) }))
            .await
            .unwrap();
        let tx = db.begin(TxMode::Read).await.unwrap();
        drop(tx);
        let tx = db.begin(TxMode::Read).await.unwrap();
        tx.rollback().await.unwrap();
    }
    // Every connection went back to the pool outside a transaction: a
    // write on any of them works.
    for alias in 1..=10 {
        insert_account(&db, alias, t0(), zero_time()).await.unwrap();
    }
    assert_eq!(aliases(&db).await.len(), 10);
}

async fn foreign_keys_set_aside_come_back_and_check_every_row(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    let before = introspect::describe(&db).await.unwrap();
    let tables = ["account_payments", "account_invoices"];
    let n = db
        .write(|tx| {
            Box::pin(async move {
                let s = sqldb::deferred::set_aside_foreign_keys(tx, &tables).await?;
                let n = s.len();
                s.rebuild(tx).await?;
                Ok::<_, DbError>(n)
            })
        })
        .await
        .unwrap();
    let expected = match fx {
        SqlFixture::Sqlite(_) => 0,
        SqlFixture::Postgres(_) => 2,
    };
    assert_eq!(n, expected, "foreign keys set aside");
    assert_eq!(introspect::describe(&db).await.unwrap(), before);

    // A child row whose parent does not exist: refused when the keys come
    // back (PostgreSQL) or at once (SQLite), and nothing is kept.
    let err = db
        .write(|tx| {
            Box::pin(async move {
                let s = sqldb::deferred::set_aside_foreign_keys(tx, &tables).await?;
                tx.copy_in(
                    "account_invoices",
                    &["account_id", "hash"],
                    vec![vec![999i64.into(), vec![7u8; 32].into()]],
                )
                .await?;
                s.rebuild(tx).await
            })
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ForeignKeyViolation, "{err}");
    assert_eq!(introspect::describe(&db).await.unwrap(), before);
}

/// A read's COMMIT is sent without waiting for its answer (PostgreSQL):
/// the next transaction on the same pooled connection is served after it,
/// so reads and writes alternating on few connections see every write.
async fn reads_and_writes_alternate_on_pooled_connections(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    for alias in 1..=40i64 {
        insert_account(&db, alias, t0(), zero_time()).await.unwrap();
        let seen = aliases(&db).await;
        assert_eq!(seen.len() as i64, alias, "every committed write is seen");
        // Several reads at once, then a write: connections come back to the
        // pool straight after a read.
        let (a, b) = futures::join!(aliases(&db), aliases(&db));
        assert_eq!(a, b);
    }
}

/// A scan sees every row the transaction wrote exactly once, over pages
/// (more rows than a page, written out of key order); an error from its
/// callback stops it, and the same scan runs again after it (on
/// PostgreSQL, the cursor was closed).
async fn a_scan_reads_every_row_once_in_pages(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    let n = sqldb::scan::PAGE as i64 * 2 + 7;
    let t = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap();
    let seen = db
        .write(|tx| {
            Box::pin(async move {
                // Aliases 0, 2, 4, … then 1, 3, 5, …: not in key order.
                let rows: Vec<Vec<Value>> = (0..n)
                    .map(|i| {
                        let alias = if i < (n + 1) / 2 {
                            i * 2
                        } else {
                            (i - (n + 1) / 2) * 2 + 1
                        };
                        vec![
                            alias.into(),
                            0i64.into(),
                            1i64.into(),
                            1i64.into(),
                            t.into(),
                            t.into(),
                        ]
                    })
                    .collect();
                let cols = ACCOUNT_COLUMNS;
                tx.copy_in("accounts", &cols, rows).await?;
                let select = Query::select()
                    .columns(["id", "alias"].map(a))
                    .from(a("accounts"))
                    .to_owned();
                let mut pages = 0;
                let stopped = sqldb::scan::scan(tx, &select, a("id"), |_| {
                    pages += 1;
                    Err(DbError::new("test", ErrorKind::Other, "stop"))
                })
                .await;
                assert!(stopped.is_err() && pages == 1, "stops at the first error");
                let mut seen = Vec::new();
                sqldb::scan::scan(tx, &select, a("id"), |rows| {
                    for r in rows {
                        seen.push(r.i64(1)?);
                    }
                    Ok::<_, DbError>(())
                })
                .await?;
                Ok::<_, DbError>(seen)
            })
        })
        .await
        .unwrap();
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "every row once");
}

/// An ordered append lands every row whatever order they come in, leaves
/// no staging table behind, and a key already present fails its finish.
async fn an_ordered_append_lands_rows_out_of_key_order(fx: &SqlFixture) {
    let db = fx.open_migrated().await;
    let t = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap();
    let cols = [
        "id",
        "alias",
        "type",
        "initial_balance_msat",
        "current_balance_msat",
        "last_updated",
        "expiration",
    ];
    let row = move |id: i64| -> Vec<Value> {
        vec![
            id.into(),
            (id * 10).into(),
            0i64.into(),
            1i64.into(),
            1i64.into(),
            t.into(),
            t.into(),
        ]
    };
    let ids = [7i64, 3, 9, 1, 5, 2, 8, 4, 6];
    db.write(|tx| {
        Box::pin(async move {
            let load =
                sqldb::ordered::OrderedAppend::begin(tx, a("accounts"), cols.map(a), a("id"))
                    .await?;
            load.append(tx, ids[..4].iter().map(|i| row(*i)).collect())
                .await?;
            load.append(tx, Vec::new()).await?;
            load.append(tx, ids[4..].iter().map(|i| row(*i)).collect())
                .await?;
            load.finish(tx).await
        })
    })
    .await
    .unwrap();
    assert_eq!(
        aliases(&db).await,
        (1..=9).map(|i| i * 10).collect::<Vec<_>>()
    );
    // A second load with a key already there fails, and rolls back whole.
    let err = db
        .write(|tx| {
            Box::pin(async move {
                let load =
                    sqldb::ordered::OrderedAppend::begin(tx, a("accounts"), cols.map(a), a("id"))
                        .await?;
                load.append(tx, vec![row(10), row(3)]).await?;
                load.finish(tx).await
            })
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UniqueViolation, "{err}");
    assert_eq!(
        aliases(&db).await.len(),
        9,
        "nothing of the failed load kept"
    );
    // No staging table is left on the connection: a new load begins.
    db.write(|tx| {
        Box::pin(async move {
            let load =
                sqldb::ordered::OrderedAppend::begin(tx, a("accounts"), cols.map(a), a("id"))
                    .await?;
            load.append(tx, vec![row(11)]).await?;
            load.finish(tx).await
        })
    })
    .await
    .unwrap();
    assert_eq!(aliases(&db).await.len(), 10);
}

testkit::backend_tests!(sqlite => sqlite;
    getters_name_the_column_and_what_it_holds,
    an_ordered_append_lands_rows_out_of_key_order,
    a_scan_reads_every_row_once_in_pages,
    reads_and_writes_alternate_on_pooled_connections,
    foreign_keys_set_aside_come_back_and_check_every_row,
    query_batches_answer_each_query_in_order,
    a_read_sees_one_snapshot,
    a_read_that_runs_nothing_ends_cleanly,
    indexes_set_aside_come_back_or_roll_back,
    copy_in_appends_every_value_type,
    write_commits_on_ok_and_rolls_back_on_err,
    dropped_transaction_rolls_back_and_frees_the_connection,
    read_transactions_refuse_writes,
    errors_are_classified,
    timestamps_round_trip_in_microseconds_and_sort_in_time_order,
    integers_bind_to_every_column_width,
    empty_and_null_blobs_are_told_apart,
    sqlite_file_is_private_and_durable,
    sqlite_checkpoints_copy_the_log_into_the_file,
    bulk_load_cache_is_set_and_restored,
);

testkit::backend_tests!(postgres => postgres;
    getters_name_the_column_and_what_it_holds,
    an_ordered_append_lands_rows_out_of_key_order,
    a_scan_reads_every_row_once_in_pages,
    reads_and_writes_alternate_on_pooled_connections,
    foreign_keys_set_aside_come_back_and_check_every_row,
    query_batches_answer_each_query_in_order,
    a_read_sees_one_snapshot,
    a_read_that_runs_nothing_ends_cleanly,
    indexes_set_aside_come_back_or_roll_back,
    copy_in_appends_every_value_type,
    write_commits_on_ok_and_rolls_back_on_err,
    dropped_transaction_rolls_back_and_frees_the_connection,
    read_transactions_refuse_writes,
    errors_are_classified,
    timestamps_round_trip_in_microseconds_and_sort_in_time_order,
    integers_bind_to_every_column_width,
    empty_and_null_blobs_are_told_apart,
    sqlite_and_postgres_schemas_match,
    tls_is_used_exactly_when_the_url_requires_it,
    bulk_load_cache_is_set_and_restored,
);

/// A transaction dropped unfinished on a dedicated connection is rolled back
/// before the connection's next transaction begins, never after it. The
/// runtime has one thread, so a rollback sent from a spawned task would
/// reach the server after the next `BEGIN`.
#[tokio::test]
async fn postgres_dedicated_dropped_transaction_rolls_back_before_the_next_begins() {
    let name = concat!(module_path!(), "::postgres_dedicated_dropped");
    let Some(fx) = postgres(name).await else {
        return;
    };
    let db = fx.open_migrated().await;
    let pg = db.as_postgres().expect("a PostgreSQL database");
    let conn = pg.dedicated().await.unwrap();
    for _ in 0..3 {
        let mut tx = conn.begin(TxMode::Write).await.unwrap();
        insert_sql(&mut *tx, 1).await.unwrap();
        drop(tx);
        // The next transaction is a transaction: rolled back, it keeps
        // nothing (a late ROLLBACK would have ended it early, leaving its
        // insert to commit on its own).
        let mut tx = conn.begin(TxMode::Write).await.unwrap();
        insert_sql(&mut *tx, 2).await.unwrap();
        tx.rollback().await.unwrap();
        assert!(aliases(&db).await.is_empty(), "nothing kept");
        let mut tx = conn.begin(TxMode::Write).await.unwrap();
        insert_sql(&mut *tx, 3).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(aliases(&db).await, vec![3], "only the committed row");
        let mut tx = conn.begin(TxMode::Write).await.unwrap();
        tx.execute_script("DELETE FROM accounts").await.unwrap();
        tx.commit().await.unwrap();
    }
}

/// Adds `by` to the balance of the account with `alias`.
async fn add_to_balance(tx: &mut dyn sqldb::Tx, alias: i64, by: i64) -> Result<u64, DbError> {
    tx.exec(
        &Query::update()
            .table(a("accounts"))
            .value(
                a("current_balance_msat"),
                Expr::col(a("current_balance_msat")).add(by),
            )
            .and_where(Expr::col(a("alias")).eq(alias))
            .to_owned(),
    )
    .await
}

/// A write the server ends as a deadlock's victim is run again, whole, and
/// its caller sees it succeed: a deadlock says nothing about the call, only
/// about its timing (a remove of an account beside writes of the sessions
/// it cascades to failed this way in the online migration's concurrent
/// test). The other transaction, which the server let go on, keeps its
/// change too.
#[tokio::test]
async fn postgres_a_write_ended_by_a_deadlock_is_run_again() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let name = concat!(module_path!(), "::postgres_deadlock_retried");
    let Some(fx) = postgres(name).await else {
        return;
    };
    let db = fx.open_migrated().await;
    insert_account(&db, 1, t0(), zero_time()).await.unwrap();
    insert_account(&db, 2, t0(), zero_time()).await.unwrap();
    // One transaction holds account 1...
    let mut first = db.begin(TxMode::Write).await.unwrap();
    add_to_balance(&mut *first, 1, 10).await.unwrap();
    // ...while a write takes account 2 and then waits for account 1.
    let runs = Arc::new(AtomicUsize::new(0));
    let (took, mut taken) = tokio::sync::mpsc::unbounded_channel();
    let second = {
        let (db, runs) = (db.clone(), runs.clone());
        tokio::spawn(async move {
            db.write(|tx| {
                let (runs, took) = (runs.clone(), took.clone());
                Box::pin(async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    add_to_balance(tx, 2, 1).await?;
                    let _ = took.send(());
                    add_to_balance(tx, 1, 1).await
                })
            })
            .await
        })
    };
    taken.recv().await.unwrap();
    testkit::sql::until_a_session_waits_for_a_lock(&db).await;
    // The first now asks for account 2: a cycle. The write has waited
    // longer, so its deadlock check runs first and the server ends it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    add_to_balance(&mut *first, 2, 10).await.unwrap();
    first.commit().await.unwrap();
    let rows = second.await.unwrap();
    assert_eq!(rows.unwrap(), 1, "the write succeeded when run again");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "run twice, once ended");
    let balances = account_column(&db, "current_balance_msat").await;
    // Each started at -5: the first added 10 to both, the write 1 to both
    // (its ended run's change rolled back).
    assert_eq!(balances, vec![6, 6]);
}

/// A write the server keeps ending for its timing is run [`TX_ATTEMPTS`]
/// times in all, no more, and its caller then gets the retryable error
/// (here a lock another transaction holds throughout, asked for with
/// `NOWAIT`: "lock not available").
#[tokio::test]
async fn postgres_a_write_is_run_again_at_most_ten_times() {
    use sqldb::sea_query::{LockBehavior, LockType};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let name = concat!(module_path!(), "::postgres_retry_bound");
    let Some(fx) = postgres(name).await else {
        return;
    };
    let db = fx.open_migrated().await;
    insert_account(&db, 1, t0(), zero_time()).await.unwrap();
    let mut holder = db.begin(TxMode::Write).await.unwrap();
    add_to_balance(&mut *holder, 1, 10).await.unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let err = db
        .write(|tx| {
            let runs = runs.clone();
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tx.query(
                    &Query::select()
                        .column(a("alias"))
                        .from(a("accounts"))
                        .lock_with_behavior(LockType::Update, LockBehavior::Nowait)
                        .to_owned(),
                )
                .await
            })
        })
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(runs.load(Ordering::SeqCst), sqldb::TX_ATTEMPTS);
    holder.rollback().await.unwrap();
}

/// Only PostgreSQL's failures for timing are run again: SQLite's writes
/// never deadlock (one write lock, taken at `BEGIN IMMEDIATE`), and its
/// "database is locked" comes after the busy handler has waited out the
/// busy timeout, so ten runs would wait ten timeouts.
#[test]
fn only_postgres_timing_failures_are_run_again() {
    let pg = |kind| DbError::new("postgres", kind, "x");
    assert!(sqldb::run_again(&pg(ErrorKind::Retryable)));
    assert!(!sqldb::run_again(&pg(ErrorKind::UniqueViolation)));
    assert!(!sqldb::run_again(&pg(ErrorKind::Connection)));
    assert!(!sqldb::run_again(&DbError::new(
        "sqlite",
        ErrorKind::Retryable,
        "database is locked"
    )));
    // The pauses grow, stay random within their bounds, and add up to
    // about two seconds at most.
    let mut total = std::time::Duration::ZERO;
    for attempt in 1..sqldb::TX_ATTEMPTS {
        let p = sqldb::retry_pause(attempt);
        let ceiling = std::cmp::min(10u64 << std::cmp::min(attempt - 1, 6), 500);
        assert!(p.as_millis() as u64 >= ceiling / 2, "{attempt}: {p:?}");
        assert!(p.as_millis() as u64 <= ceiling, "{attempt}: {p:?}");
        total += p;
    }
    assert!(total <= std::time::Duration::from_millis(2130), "{total:?}");
}
