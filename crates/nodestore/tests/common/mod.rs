//! What the nodestore test binaries that open stores on a SQL fixture
//! share (each file under `tests/` is a crate of its own).

use nodestore::BackendConfig;
use testkit::sql::SqlFixture;

/// The backend configuration of a SQL test fixture.
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
