//! What a node and an operator see of nodestore's work: `tracing` events
//! for opening, each schema step, each store migrated and the tombstone,
//! never a password; progress told to the node's observer; a clean close;
//! the command's JSON log lines.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use nodestore::generate::{Scale, generate};
use nodestore::{BackendConfig, Config, OpenOptions, Progress, ProgressEvent, Stores};
use testkit::sql::{SqlFixture, postgres, sqlite};
use tracing::instrument::WithSubscriber as _;

/// Log lines written into memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let sink = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish()
    }
}

/// Every progress event a node would get.
#[derive(Default)]
struct Events(Mutex<Vec<ProgressEvent>>);

impl Progress for Events {
    fn progress(&self, e: ProgressEvent) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().unwrap().push(e);
        Ok(())
    }
}

/// The fixture as a backend; PostgreSQL with a password in its URL (the
/// test server trusts local connections, so any password is accepted).
fn backend(fx: &SqlFixture) -> BackendConfig {
    match fx {
        SqlFixture::Sqlite(dir) => BackendConfig::Sqlite {
            file: dir.path().join("node.db"),
        },
        SqlFixture::Postgres(db) => BackendConfig::Postgres {
            url: db.url().replacen("postgres@", "postgres:Secret-Pw-42@", 1),
            pool_size: 2,
        },
    }
}

async fn kv_node(dir: &Path) -> std::path::PathBuf {
    let kv = dir.join("kv");
    generate(&kv, Scale::S.shape(), 5, &|_, _, _| {})
        .await
        .unwrap();
    kv
}

async fn opening_logs_every_stage_and_tells_progress(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        kv_dir: Some(kv_node(dir.path()).await),
        ..Config::new(backend(fx))
    };
    let log = Captured::default();
    let events = Events::default();
    let stores = Stores::open_with(
        &config,
        &OpenOptions {
            progress: Some(&events),
        },
    )
    .with_subscriber(log.subscriber())
    .await
    .unwrap();
    let text = log.text();
    for needle in [
        "open{backend=",
        "migration{kv=",
        "schema step applied version=1",
        "store migrated store=\"accounts\"",
        "store migrated store=\"sessions\"",
        "store migrated store=\"firewall\"",
        "store migrated store=\"actions\"",
        "records_per_s=",
        "data step committed",
        "the key-value database is tombstoned",
        "stores open",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(
        !text.contains("Secret-Pw-42"),
        "a password in the log:\n{text}"
    );

    // Progress: every store, each ending at its total.
    let events = events.0.lock().unwrap().clone();
    for store in ["accounts", "sessions", "actions"] {
        let last = events
            .iter()
            .rfind(|e| e.store == store)
            .unwrap_or_else(|| panic!("no progress for {store}: {events:?}"));
        assert_eq!(last.done, last.total, "{store}");
    }

    // A clean close, logged.
    let close_log = Captured::default();
    let accounts = stores.accounts.clone();
    stores
        .close()
        .with_subscriber(close_log.subscriber())
        .await
        .unwrap();
    match fx {
        SqlFixture::Sqlite(d) => {
            let wal = d.path().join("node.db-wal");
            let len = std::fs::metadata(&wal).map_or(0, |m| m.len());
            assert_eq!(len, 0, "the write-ahead log is checkpointed into the file");
            assert!(close_log.text().contains("SQLite checkpointed"));
            // SQLite keeps working for handles still held.
            accounts.accounts().await.unwrap();
        }
        SqlFixture::Postgres(_) => {
            assert!(close_log.text().contains("PostgreSQL pool closed"));
            assert!(!close_log.text().contains("Secret-Pw-42"));
            assert!(
                accounts.accounts().await.is_err(),
                "a closed pool refuses further calls"
            );
        }
    }
}

/// The key-value backend closes by flushing sled.
#[tokio::test]
async fn a_key_value_node_closes_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv");
    let stores = Stores::open(&Config::new(BackendConfig::Kv { dir: kv.clone() }))
        .await
        .unwrap();
    stores
        .accounts
        .new_account(1, None, "flushed")
        .await
        .unwrap();
    stores.close().await.unwrap();
    // Opened again (the lock released), the account is there.
    let stores = Stores::open(&Config::new(BackendConfig::Kv { dir: kv }))
        .await
        .unwrap();
    assert_eq!(stores.accounts.accounts().await.unwrap().len(), 1);
}

/// `--log-format json`: one JSON object per line of standard error.
async fn the_command_writes_json_log_lines(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let kv = kv_node(dir.path()).await;
    let target = match fx {
        SqlFixture::Sqlite(d) => format!("sqlite:{}", d.path().join("node.db").display()),
        SqlFixture::Postgres(db) => db.url().replacen("postgres@", "postgres:Secret-Pw-42@", 1),
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodestore"))
        .args(["-v", "--log-format", "json", "migrate", "--kv"])
        .arg(&kv)
        .args(["--to", &target])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Secret-Pw-42"), "{stderr}");
    let mut messages = Vec::new();
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(v["level"].is_string(), "{line}");
        messages.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert!(messages.iter().any(|m| m == "store migrated"), "{stderr}");
    assert!(
        messages.iter().any(|m| m == "migration finished"),
        "{stderr}"
    );

    // -q: nothing but errors; the default: no info lines.
    let quiet = std::process::Command::new(env!("CARGO_BIN_EXE_nodestore"))
        .args(["-q", "status", "--dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("INFO"));
}

testkit::backend_tests!(sqlite => sqlite;
    opening_logs_every_stage_and_tells_progress,
    the_command_writes_json_log_lines,
);
testkit::backend_tests!(postgres => postgres;
    opening_logs_every_stage_and_tells_progress,
    the_command_writes_json_log_lines,
);
