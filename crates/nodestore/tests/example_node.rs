//! The example node (`examples/node.rs`) runs against SQLite and
//! PostgreSQL: it opens its stores (migrating a legacy key-value database
//! with progress on the way), serves calls of each store, and shuts down
//! cleanly. `cargo test` builds the example beside the test binaries.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::path::PathBuf;

use nodestore::generate::{Scale, generate};
use testkit::sql::{SqlFixture, postgres, sqlite};

fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/examples/node
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let node = dir.join("examples").join("node");
    assert!(
        node.is_file(),
        "{} is missing: build it with `cargo test -p nodestore` or `cargo build --example node`",
        node.display()
    );
    node
}

async fn the_example_node_migrates_serves_and_closes(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    generate(&kv, Scale::S.shape(), 11, &|_, _, _| {})
        .await
        .unwrap();
    let mut cmd = std::process::Command::new(example_binary());
    for (k, _) in std::env::vars() {
        if k.starts_with("NODESTORE_") {
            cmd.env_remove(k);
        }
    }
    match fx {
        SqlFixture::Sqlite(d) => cmd
            .env("NODESTORE_BACKEND", "sqlite")
            .env("NODESTORE_SQLITE_FILE", d.path().join("test.db")),
        SqlFixture::Postgres(db) => cmd
            .env("NODESTORE_BACKEND", "postgres")
            .env("NODESTORE_POSTGRES_URL", db.url()),
    };
    let out = cmd
        .env("NODESTORE_KV_DIR", &kv)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "stores open on ",
        "accounts: ",
        "sessions: ",
        "firewall: the rule's store holds calls = 1",
        "actions: recorded ",
        "closed cleanly",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    for event in [
        "migrating",
        "store migrated",
        "the key-value database is tombstoned",
        "stores open",
    ] {
        assert!(
            stderr.contains(event),
            "{event:?} missing from the log:\n{stderr}"
        );
    }
    if let SqlFixture::Postgres(db) = fx {
        let password_free = !stderr.contains(":password@");
        assert!(password_free, "{stderr}");
        assert!(stderr.contains(&sqldb::redact::target(db.url())));
    }
    // The key-value database is retired now: a second run opens SQL only.
    let again = cmd.output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(!String::from_utf8_lossy(&again.stderr).contains("store migrated"));
}

testkit::backend_tests!(sqlite => sqlite; the_example_node_migrates_serves_and_closes);
testkit::backend_tests!(postgres => postgres; the_example_node_migrates_serves_and_closes);
