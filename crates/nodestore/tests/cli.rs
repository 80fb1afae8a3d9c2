//! The `nodestore` command end to end, every subcommand, on SQLite and
//! PostgreSQL.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::path::{Path, PathBuf};

use nodestore::generate::{Scale, generate};
use store_accounts::Store as _;
use testkit::sql::{SqlFixture, postgres, sqlite};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn nodestore(args: &[&str]) -> Out {
    nodestore_with(args, &[]).await
}

/// The command with only `env` of the `NODESTORE_*` variables set.
async fn nodestore_with(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_nodestore"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("NODESTORE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.envs(env.iter().copied()).output().await.unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The fixture's database as a command-line target.
fn target(fx: &SqlFixture) -> String {
    match fx {
        SqlFixture::Sqlite(dir) => format!("sqlite:{}", dir.path().join("test.db").display()),
        SqlFixture::Postgres(db) => db.url().to_owned(),
    }
}

async fn small_kv(dir: &Path) -> PathBuf {
    let kv = dir.join("kv");
    generate(&kv, Scale::S.shape(), 7, &|_, _, _| {})
        .await
        .unwrap();
    kv
}

async fn demo_migrates_verifies_and_reports(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let mut args = vec!["demo", "--dir", demo.to_str().unwrap()];
    let url = target(fx);
    if let SqlFixture::Postgres(_) = fx {
        args.extend(["--postgres", &url]);
    }
    let out = nodestore(&args).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("no differences"), "{}", out.stdout);
    assert!(out.stdout.contains("3000 actions"), "{}", out.stdout);
    assert!(
        out.stdout.contains("can no longer be used"),
        "{}",
        out.stdout
    );
    // Running it again starts over.
    if let SqlFixture::Sqlite(_) = fx {
        let again = nodestore(&args).await;
        assert_eq!(again.code, 0, "{}", again.stderr);
    }
}

async fn migrate_then_verify_then_dump_identically(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let kv = small_kv(dir.path()).await;
    let to = target(fx);
    let out = nodestore(&[
        "migrate",
        "--kv",
        kv.to_str().unwrap(),
        "--to",
        &to,
        "--json",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["migrated"], true);
    assert_eq!(json["report"]["actions"]["actions"], 3000);
    assert_eq!(json["report"]["sessions"]["sessions"], 100);
    assert!(json["tombstone"]["target"].is_string());

    let out = nodestore(&["verify", "--kv", kv.to_str().unwrap(), "--sql", &to]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("no differences"), "{}", out.stdout);

    let kv_dump = nodestore(&["dump", "--from", &format!("kv:{}", kv.display())]).await;
    let sql_dump = nodestore(&["dump", "--from", &to]).await;
    assert_eq!(kv_dump.code, 0, "{}", kv_dump.stderr);
    assert_eq!(sql_dump.code, 0, "{}", sql_dump.stderr);
    assert!(kv_dump.stdout.len() > 100_000);
    assert!(
        kv_dump.stdout == sql_dump.stdout,
        "the same data dumps to the same bytes from kv and sql"
    );

    // Migrating again finds the work done, and says so.
    let out = nodestore(&["migrate", "--kv", kv.to_str().unwrap(), "--to", &to]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("already holds this key-value database's data"),
        "{}",
        out.stdout
    );
}

/// Without --to / --sql the target comes from NODESTORE_POSTGRES_URL or
/// NODESTORE_SQLITE_FILE, as sqlx's commands take DATABASE_URL.
async fn the_sql_target_comes_from_the_environment_when_omitted(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let kv = small_kv(dir.path()).await;
    let env: Vec<(&str, String)> = match fx {
        SqlFixture::Sqlite(d) => vec![(
            "NODESTORE_SQLITE_FILE",
            d.path().join("test.db").display().to_string(),
        )],
        SqlFixture::Postgres(db) => vec![("NODESTORE_POSTGRES_URL", db.url().to_owned())],
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let kv_arg = kv.to_str().unwrap();
    let out = nodestore_with(&["migrate", "--kv", kv_arg, "--json"], &env).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = nodestore_with(&["verify", "--kv", kv_arg], &env).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("no differences"), "{}", out.stdout);
    // Neither given nor set: a usage error that says how to name one.
    let out = nodestore_with(&["verify", "--kv", kv_arg], &[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("NODESTORE_POSTGRES_URL"),
        "{}",
        out.stderr
    );
    // Both set: NODESTORE_BACKEND decides, or the command refuses.
    let both = [
        ("NODESTORE_SQLITE_FILE", "/nonexistent/x.db"),
        ("NODESTORE_POSTGRES_URL", "postgres://u@h/d"),
    ];
    let out = nodestore_with(&["verify", "--kv", kv_arg], &both).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("NODESTORE_BACKEND"), "{}", out.stderr);
}

async fn a_dry_run_keeps_nothing(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let kv = small_kv(dir.path()).await;
    let to = target(fx);
    let out = nodestore(&[
        "migrate",
        "--kv",
        kv.to_str().unwrap(),
        "--to",
        &to,
        "--dry-run",
        "--json",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (
            json["dry_run"].clone(),
            json["report"]["accounts"]["accounts"].clone()
        ),
        (true.into(), 20.into())
    );
    assert_eq!(json["migrated"], false, "a dry run migrates nothing");
    assert_eq!(json["data_in_sql"], false);
    assert_eq!(json["outcome"], "rehearsed");
    assert!(json["tombstone"].is_null());
    assert!(matches!(
        tombstone::status(&kv).unwrap(),
        Some(tombstone::Status::Live(_))
    ));
    let db = fx.open().await;
    assert!(
        migrator::schema::runner()
            .applied(&db)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn verify_lists_every_difference(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let kv = small_kv(dir.path()).await;
    let to = target(fx);
    assert_eq!(
        nodestore(&["migrate", "--kv", kv.to_str().unwrap(), "--to", &to])
            .await
            .code,
        0
    );
    let db = fx.open().await;
    let accounts = store_accounts::SqlStore::new(db.clone());
    let first = accounts.accounts().await.unwrap()[0].clone();
    accounts
        .update_account(
            first.id,
            store_accounts::AccountUpdate {
                balance_msat: Some(-1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let out = nodestore(&[
        "verify",
        "--kv",
        kv.to_str().unwrap(),
        "--sql",
        &to,
        "--json",
    ])
    .await;
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let diffs = json["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(diffs[0]["record"], format!("account {}", first.id));
    let detail = diffs[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("current_balance_msat") && detail.contains("last_update"),
        "{detail}"
    );
}

async fn status_reports_both_databases_and_the_plan(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let kv = small_kv(dir.path()).await;
    let config = dir.path().join("node.toml");
    let backend = match fx {
        SqlFixture::Sqlite(d) => format!(
            "type = \"sqlite\"\nfile = \"{}\"\n",
            d.path().join("test.db").display()
        ),
        SqlFixture::Postgres(db) => format!("type = \"postgres\"\nurl = \"{}\"\n", db.url()),
    };
    std::fs::write(
        &config,
        format!("kv_dir = \"{}\"\n[backend]\n{backend}", kv.display()),
    )
    .unwrap();
    let out = nodestore(&["status", "--config", config.to_str().unwrap(), "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["kv"]["state"], "live");
    assert!(
        json["open_would"].as_str().unwrap().starts_with("migrate"),
        "{json}"
    );
    assert_eq!(
        nodestore(&["migrate", "--kv", kv.to_str().unwrap(), "--to", &target(fx)])
            .await
            .code,
        0
    );
    let out = nodestore(&["status", "--config", config.to_str().unwrap()]).await;
    assert!(out.stdout.contains("tombstoned"), "{}", out.stdout);
    assert!(out.stdout.contains("7 kvdb_to_sql"), "{}", out.stdout);
    assert!(
        out.stdout.contains("opening would: open the stores on SQL"),
        "{}",
        out.stdout
    );
}

/// A dump imports into a new KV database as it is, legacy shapes included;
/// the dump of the result equals the input, and it migrates by the rules.
async fn import_reproduces_a_dump_verbatim(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let kv = small_kv(dir.path()).await;
    let mut dump = nodestore::dump::dump_kv(&kv).await.unwrap();
    // A legacy shape: a second, older session with the first one's id.
    let mut twin = dump.sessions[0].clone();
    // Same id (key bytes 1..5), another key: flip the last byte.
    let last = u8::from_str_radix(&twin.local_public_key[64..66], 16).unwrap() ^ 0xff;
    twin.local_public_key = format!("{}{last:02x}", &twin.local_public_key[..64]);
    twin.created_at = "2024-01-01T00:00:00.000000Z".into();
    twin.label = "older twin".into();
    dump.sessions.insert(1, twin);
    dump.sessions
        .sort_by(|a, b| (&a.id, &a.local_public_key).cmp(&(&b.id, &b.local_public_key)));
    let file = dir.path().join("node.json");
    dump.write(&file).unwrap();
    let restored = dir.path().join("restored");
    let out = nodestore(&[
        "import",
        "--to",
        &format!("kv:{}", restored.display()),
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let again = nodestore(&["dump", "--from", &format!("kv:{}", restored.display())]).await;
    assert_eq!(
        again.stdout,
        std::fs::read_to_string(&file).unwrap(),
        "dump of the import equals the input"
    );

    let to = target(fx);
    let out = nodestore(&[
        "migrate",
        "--kv",
        restored.to_str().unwrap(),
        "--to",
        &to,
        "--json",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["report"]["sessions"]["duplicates_dropped"], 1);
    let sql = nodestore(&["dump", "--from", &to]).await;
    assert_eq!(
        sql.stdout,
        nodestore::dump::as_migrated(&dump)
            .unwrap()
            .to_json()
            .unwrap()
    );
    // Importing over an existing database is refused.
    let out = nodestore(&[
        "import",
        "--to",
        &format!("kv:{}", restored.display()),
        file.to_str().unwrap(),
    ])
    .await;
    assert_ne!(out.code, 0);
}

async fn errors_print_one_line_per_cause_and_fail(fx: &SqlFixture) {
    let out = nodestore(&["migrate", "--kv", "/nonexistent/kv", "--to", &target(fx)]).await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("no key-value database at /nonexistent/kv"),
        "{}",
        out.stderr
    );
    let out = nodestore(&["dump", "--from", "mysql://x"]).await;
    assert_ne!(out.code, 0);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    // A broken record fails the migration naming it, with the way out.
    let dir = tempfile::tempdir().unwrap();
    let kv = small_kv(dir.path()).await;
    {
        let db = tombstone::KvDb::open(&kv, &tombstone::KvOptions::default()).unwrap();
        db.tree("session")
            .unwrap()
            .insert(vec![2u8; 33], &b"\x01bad"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let out = nodestore(&["migrate", "--kv", kv.to_str().unwrap(), "--to", &target(fx)]).await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("tree session, key 02020202"),
        "{}",
        out.stderr
    );
    // What was kept, exactly; no advice about a setting the command does
    // not read.
    assert!(
        out.stderr.contains("no key-value data was written to SQL"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("defer"), "{}", out.stderr);
}

/// A second node's key-value database into a target holding the first's
/// data: refused naming both, exit 1, the second stays live; `status`
/// says the same; `demo --postgres` into a database holding data refuses too.
async fn a_second_source_is_refused_and_status_agrees(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let a = small_kv(&dir.path().join("a")).await;
    let b = small_kv(&dir.path().join("b")).await;
    let to = target(fx);
    let first = nodestore(&["migrate", "--kv", a.to_str().unwrap(), "--to", &to]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let second = nodestore(&[
        "migrate",
        "--kv",
        b.to_str().unwrap(),
        "--to",
        &to,
        "--json",
    ])
    .await;
    assert_eq!(second.code, 1, "{}{}", second.stdout, second.stderr);
    assert!(
        second.stderr.contains("already holds migrated data from"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains(a.to_str().unwrap()),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains(b.to_str().unwrap()),
        "{}",
        second.stderr
    );
    let json: serde_json::Value = serde_json::from_str(&second.stdout).unwrap();
    assert_eq!(
        (json["outcome"].as_str(), json["data"].as_str()),
        (Some("failed"), Some("not_written"))
    );
    assert!(matches!(
        tombstone::status(&b).unwrap(),
        Some(tombstone::Status::Live(_))
    ));
    let config = dir.path().join("node.toml");
    let backend = match fx {
        SqlFixture::Sqlite(d) => format!(
            "[backend]\ntype = \"sqlite\"\nfile = \"{}\"\n",
            d.path().join("test.db").display()
        ),
        SqlFixture::Postgres(db) => {
            format!("[backend]\ntype = \"postgres\"\nurl = \"{}\"\n", db.url())
        }
    };
    std::fs::write(&config, format!("kv_dir = \"{}\"\n{backend}", b.display())).unwrap();
    let status = nodestore(&["status", "--config", config.to_str().unwrap()]).await;
    assert!(
        status.stdout.contains("opening would: refuse:")
            && status.stdout.contains("already holds migrated data from"),
        "{}",
        status.stdout
    );
    if let SqlFixture::Postgres(_) = fx {
        let demo = dir.path().join("demo");
        let out = nodestore(&["demo", "--dir", demo.to_str().unwrap(), "--postgres", &to]).await;
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("already holds migrated data"),
            "{}",
            out.stderr
        );
    }
}

/// A later schema step that cannot be applied over the migrated data fails
/// the migration inside its transaction: exit 1, nothing written to SQL,
/// the key-value database left live and unchanged (before, the data
/// committed, the source was tombstoned and the step failed at every open);
/// after the obstacle is gone, exit 0.
async fn a_later_step_failing_fails_the_migration_and_keeps_the_source(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let kv = small_kv(dir.path()).await;
    let to = target(fx);
    let db = fx.open_before_data().await;
    db.write(|tx| {
        Box::pin(async move {
            tx.execute_script("CREATE INDEX actions_feature_created_idx ON actions (id)")
                .await
        })
    })
    .await
    .unwrap();
    let out = nodestore(&["migrate", "--kv", kv.to_str().unwrap(), "--to", &to]).await;
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("schema step 8")
            && out.stderr.contains("no key-value data was written to SQL"),
        "{}",
        out.stderr
    );
    assert!(matches!(
        tombstone::status(&kv).unwrap(),
        Some(tombstone::Status::Live(_))
    ));
    db.write(|tx| {
        Box::pin(async move {
            tx.execute_script("DROP INDEX actions_feature_created_idx")
                .await
        })
    })
    .await
    .unwrap();
    let out = nodestore(&["migrate", "--kv", kv.to_str().unwrap(), "--to", &to]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

/// A target of the wrong kind, or one that is no target at all, is refused
/// by the command line before anything runs: one line naming the argument,
/// exit 1 (never 2, which says verify found differences), nothing created.
#[tokio::test]
async fn wrong_targets_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "migrate".into(),
                "--kv".into(),
                format!("{d}/kv"),
                "--to".into(),
                format!("kv:{d}/x"),
            ],
            "--to: kv:",
        ),
        (
            vec![
                "verify".into(),
                "--kv".into(),
                format!("{d}/kv"),
                "--sql".into(),
                format!("kv:{d}/x"),
            ],
            "--sql: kv:",
        ),
        (
            vec![
                "import".into(),
                "--to".into(),
                format!("sqlite:{d}/x.db"),
                format!("{d}/dump.json"),
            ],
            "--to: sqlite:",
        ),
        (
            vec![
                "dump".into(),
                "--from".into(),
                "mysql://u:Secret-Pw@h/db".into(),
            ],
            "--from: ",
        ),
        (vec!["migrate".into(), "--kv".into()], "--kv"),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = nodestore(&args).await;
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("Secret-Pw"), "{}", out.stderr);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
}

testkit::backend_tests!(sqlite => sqlite;
    a_second_source_is_refused_and_status_agrees,
    a_later_step_failing_fails_the_migration_and_keeps_the_source,
    demo_migrates_verifies_and_reports,
    migrate_then_verify_then_dump_identically,
    the_sql_target_comes_from_the_environment_when_omitted,
    a_dry_run_keeps_nothing,
    verify_lists_every_difference,
    status_reports_both_databases_and_the_plan,
    import_reproduces_a_dump_verbatim,
    errors_print_one_line_per_cause_and_fail,
);

testkit::backend_tests!(postgres => postgres;
    a_second_source_is_refused_and_status_agrees,
    a_later_step_failing_fails_the_migration_and_keeps_the_source,
    demo_migrates_verifies_and_reports,
    migrate_then_verify_then_dump_identically,
    the_sql_target_comes_from_the_environment_when_omitted,
    a_dry_run_keeps_nothing,
    verify_lists_every_difference,
    status_reports_both_databases_and_the_plan,
    import_reproduces_a_dump_verbatim,
    errors_print_one_line_per_cause_and_fail,
);

/// `--version` names the commit and the schema version this binary writes.
#[tokio::test]
async fn the_version_names_the_commit_and_the_schema() {
    let out = nodestore(&["--version"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let last = migrator::schema::STEPS.last().unwrap().version;
    assert!(
        out.stdout
            .starts_with(&format!("nodestore {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .trim_end()
            .ends_with(&format!("writes schema version {last})")),
        "{}",
        out.stdout
    );
}

/// Completion scripts for the usual shells, and man pages for every command.
#[tokio::test]
async fn completions_and_man_pages_cover_every_command() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = nodestore(&["completions", shell]).await;
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        for command in ["migrate", "verify", "status", "dump", "import", "demo"] {
            assert!(out.stdout.contains(command), "{shell}: no {command}");
        }
    }
    let out = nodestore(&["completions", "tcsh"]).await;
    assert_eq!(out.code, 1, "an unknown shell is a usage error");

    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    let out = nodestore(&["man", man.to_str().unwrap()]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for page in [
        "nodestore.1",
        "nodestore-migrate.1",
        "nodestore-verify.1",
        "nodestore-status.1",
    ] {
        let text = std::fs::read_to_string(man.join(page)).unwrap();
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
    let top = std::fs::read_to_string(man.join("nodestore.1")).unwrap();
    assert!(
        top.contains("Exit codes"),
        "the exit codes are in the man page"
    );
}
