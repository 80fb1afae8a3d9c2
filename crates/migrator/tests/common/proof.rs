//! What the tests of a copy's proof share (docs/design.md §5.7): a trigger
//! on the target that makes the database store something other than what
//! the copy wrote, and the refusal that must follow.

use testkit::sql::SqlFixture;

use super::Kv;

/// Installs `trigger` (SQLite's, or PostgreSQL's function and trigger) on
/// the target, its schema applied up to the migration's own step.
pub(crate) async fn with_trigger(fx: &SqlFixture, sqlite: String, postgres: String) -> sqldb::Db {
    let db = fx.open_before_data().await;
    let script = match fx.backend() {
        "sqlite" => sqlite,
        _ => postgres,
    };
    db.write(|tx| {
        let script = script.clone();
        Box::pin(async move {
            tx.execute_script(&script).await?;
            Ok::<_, sqldb::DbError>(())
        })
    })
    .await
    .unwrap();
    db
}

/// Migrates in chunks of `chunk_size` and returns the refusal, after
/// checking that nothing was kept (no account, session or action) and the
/// key-value database was not tombstoned.
pub(crate) async fn refused(kv: &Kv, db: &sqldb::Db, chunk_size: usize) -> String {
    let err = migrator::migrate(
        &kv.path,
        db,
        &migrator::Options {
            chunk_size,
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap_err();
    assert!(
        !matches!(
            tombstone::status(&kv.path),
            Ok(Some(tombstone::Status::Tombstoned(_)))
        ),
        "never tombstoned"
    );
    for table in ["accounts", "sessions", "actions"] {
        let rows = super::count(db, table).await;
        assert_eq!(rows, 0, "nothing kept in {table}: {err}");
    }
    err.to_string()
}
