//! What the nodestore test binaries that open stores on a SQL fixture
//! share (each file under `tests/` is a crate of its own).

use nodestore::BackendConfig;
use testkit::sql::SqlFixture;

/// The backend configuration of a SQL test fixture.
#[allow(
    dead_code,
    reason = "the binaries that only copy databases do not open stores"
)]
pub(crate) fn backend(fx: &SqlFixture) -> BackendConfig {
    match fx {
        SqlFixture::Sqlite(dir) => BackendConfig::Sqlite {
            file: dir.path().join("node.db"),
        },
        SqlFixture::Postgres(db) => BackendConfig::Postgres {
            url: db.url().to_owned(),
            pool_size: 4,
        },
    }
}

/// Checks that the migration record's counts (the copy's plus the
/// replays' deltas) are what `want` holds: the tables at the commit, the
/// key-value database at the switch. `what` names the case in a failure.
#[allow(
    dead_code,
    reason = "only the online migration's test binaries check a record"
)]
pub(crate) async fn assert_record_counts(db: &sqldb::Db, want: &nodestore::dump::Dump, what: &str) {
    let record = migrator::records(db).await.unwrap().pop().unwrap();
    assert_eq!(
        (
            record.report.accounts.accounts,
            record.report.sessions.sessions,
            record.report.firewall.kv_entries,
            record.report.firewall.privacy_pairs,
            record.report.actions.actions
        ),
        (
            want.accounts.len() as u64,
            want.sessions.len() as u64,
            want.kv_entries.len() as u64,
            want.privacy_pairs.len() as u64,
            want.actions.len() as u64
        ),
        "{what}: the migration record's counts"
    );
}
