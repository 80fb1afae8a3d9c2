//! Fault injection against the `nodestore migrate` command: the process
//! killed with SIGKILL at points spread over its run (the tombstone write
//! included), and the PostgreSQL server stopped under it. After every
//! trial:
//! - the key-value database is never tombstoned unless SQL holds its data
//!   (a migration record of it, with the row counts it names);
//! - SQL holds either all of the data (with its record) or none of it;
//! - what the command said (exit code, message) matches what is in SQL;
//! - a plain rerun finishes: exit 0, `verify` finds no difference, and the
//!   key-value database is tombstoned.
//!
//! Each test prints its tally of where the faults landed.
#![allow(
    clippy::print_stderr,
    reason = "a test reports the figures it measured"
)]
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testkit::files::copy_dir;

use nodestore::generate::{Scale, generate};
use testkit::sql::{SqlFixture, postgres, sqlite};
use tombstone::Status;

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn command(args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_nodestore"));
    c.args(args)
        .env_remove("NODESTORE_BACKEND")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn run(args: &[&str]) -> Out {
    let out = command(args).output().await.unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the command and kills it after `after` (if it is still running).
async fn run_killed_after(args: &[&str], after: Duration) -> Out {
    let mut child = command(args).spawn().unwrap();
    let killed = tokio::select! {
        status = child.wait() => { status.unwrap(); false }
        _ = tokio::time::sleep(after) => { child.start_kill().unwrap(); true }
    };
    let out = child.wait_with_output().await.unwrap();
    Out {
        code: if killed { None } else { out.status.code() },
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A pristine scale-S node, generated once per test.
async fn pristine(dir: &Path) -> PathBuf {
    let kv = dir.join("pristine");
    generate(&kv, Scale::S.shape(), 11, &|_, _, _| {})
        .await
        .unwrap();
    kv
}

/// What SQL holds of the source, read afresh: its migration record's
/// report and whether the tables hold exactly that many rows, or `None`
/// when it holds no record and no rows.
async fn what_sql_holds(target: &str, kv: &Path) -> Option<u64> {
    let location: nodestore::Location = target.parse().unwrap();
    if let nodestore::Location::Sqlite(p) = &location
        && !p.exists()
    {
        return None;
    }
    let db = nodestore::connect(&location.backend())
        .await
        .unwrap()
        .unwrap();
    let identity = tombstone::identity(kv).unwrap().unwrap();
    let records = migrator::records(&db).await.unwrap();
    let record = records.iter().find(|r| r.source_identity == identity);
    let actions = db
        .read(|tx| {
            Box::pin(async move {
                match tx
                    .query_sql(sqldb::Sql::fixed("SELECT COUNT(*) FROM actions", vec![]))
                    .await
                {
                    Ok(rows) => Ok::<_, sqldb::DbError>(rows[0].i64(0)? as u64),
                    // No table yet: nothing there.
                    Err(_) => Ok(0),
                }
            })
        })
        .await
        .unwrap_or(0);
    match record {
        Some(r) => {
            assert_eq!(
                actions, r.report.actions.actions,
                "the record's counts are what SQL holds"
            );
            Some(actions)
        }
        None => {
            assert_eq!(actions, 0, "no record, so no data");
            None
        }
    }
}

fn tombstoned(kv: &Path) -> bool {
    matches!(tombstone::status(kv).unwrap(), Some(Status::Tombstoned(_)))
}

/// Where a fault landed, by what it left.
#[derive(Debug, Default)]
struct Tally {
    nothing_kept: u32,
    data_kept_tombstone_pending: u32,
    data_kept_and_tombstoned: u32,
    completed: u32,
}

/// After a fault: the invariants, then a rerun that finishes.
async fn check_and_finish(target: &str, kv: &Path, tally: &mut Tally) {
    let held = what_sql_holds(target, kv).await;
    let retired = tombstoned(kv);
    assert!(
        held.is_some() || !retired,
        "tombstoned without its data in SQL"
    );
    match (held, retired) {
        (None, _) => tally.nothing_kept += 1,
        (Some(_), false) => tally.data_kept_tombstone_pending += 1,
        (Some(_), true) => tally.data_kept_and_tombstoned += 1,
    }
    let again = run(&["migrate", "--kv", kv.to_str().unwrap(), "--to", target]).await;
    assert_eq!(again.code, Some(0), "{}{}", again.stdout, again.stderr);
    assert!(tombstoned(kv));
    let verify = run(&["verify", "--kv", kv.to_str().unwrap(), "--sql", target]).await;
    assert_eq!(verify.code, Some(0), "{}{}", verify.stdout, verify.stderr);
}

/// SIGKILL at points spread over a whole run.
async fn killed_at_any_point_never_lies(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let pristine = pristine(dir.path()).await;
    // How long an undisturbed run takes, to spread the kills over it.
    let full = {
        let kv = dir.path().join("timing");
        copy_dir(&pristine, &kv);
        let other = match fx {
            SqlFixture::Sqlite(_) => SqlFixture::sqlite(),
            SqlFixture::Postgres(_) => postgres("faults-timing").await.unwrap(),
        };
        let started = Instant::now();
        let out = run(&[
            "migrate",
            "--kv",
            kv.to_str().unwrap(),
            "--to",
            &target(&other),
        ])
        .await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        started.elapsed()
    };
    let mut tally = Tally::default();
    let fractions = [
        0.02, 0.1, 0.25, 0.4, 0.55, 0.7, 0.8, 0.88, 0.94, 0.98, 1.02, 1.1,
    ];
    for (i, f) in fractions.into_iter().enumerate() {
        let kv = dir.path().join(format!("kv-{i}"));
        copy_dir(&pristine, &kv);
        let fx = match fx {
            SqlFixture::Sqlite(_) => SqlFixture::sqlite(),
            SqlFixture::Postgres(_) => postgres(&format!("faults-kill-{i}")).await.unwrap(),
        };
        let to = target(&fx);
        let out = run_killed_after(
            &["migrate", "--kv", kv.to_str().unwrap(), "--to", &to],
            full.mul_f64(f),
        )
        .await;
        match out.code {
            None => check_and_finish(&to, &kv, &mut tally).await,
            Some(0) => {
                tally.completed += 1;
                assert!(tombstoned(&kv));
                assert!(what_sql_holds(&to, &kv).await.is_some());
            }
            Some(c) => panic!("exit {c} without a fault: {}", out.stderr),
        }
    }
    eprintln!("kill -9 over {} trials: {tally:?}", fractions.len());
    assert!(
        tally.nothing_kept > 0,
        "{tally:?}: no kill landed before the commit"
    );
}

/// Three `migrate` processes at once, two from one source and one from a
/// copy, into a target that does not exist yet: none fails on a lock, one
/// migrates, the others wait and find the work done, every source ends
/// retired, and the data is there once.
async fn three_processes_at_once_into_a_new_target(fx: &SqlFixture) {
    let dir = tempfile::tempdir().unwrap();
    let a = pristine(dir.path()).await;
    let copy = dir.path().join("copy");
    copy_dir(&a, &copy);
    let to = match fx {
        // A file that does not exist yet: the processes race to create it.
        SqlFixture::Sqlite(_) => format!("sqlite:{}", dir.path().join("new.db").display()),
        SqlFixture::Postgres(db) => db.url().to_owned(),
    };
    let (a_s, c_s) = (a.to_str().unwrap(), copy.to_str().unwrap());
    let (from_a, from_copy) = (
        ["migrate", "--kv", a_s, "--to", &to],
        ["migrate", "--kv", c_s, "--to", &to],
    );
    let (o1, o2, o3) = tokio::join!(run(&from_a), run(&from_a), run(&from_copy));
    let mut migrated = 0;
    for o in [&o1, &o2, &o3] {
        assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
        if o.stdout.starts_with("migrated into") {
            migrated += 1;
        } else {
            assert!(
                o.stdout
                    .contains("already holds this key-value database's data"),
                "{}",
                o.stdout
            );
        }
    }
    assert_eq!(migrated, 1);
    assert!(tombstoned(&a) && tombstoned(&copy));
    assert!(what_sql_holds(&to, &a).await.is_some());
}

fn target(fx: &SqlFixture) -> String {
    match fx {
        SqlFixture::Sqlite(dir) => format!("sqlite:{}", dir.path().join("test.db").display()),
        SqlFixture::Postgres(db) => db.url().to_owned(),
    }
}

testkit::backend_tests!(sqlite => sqlite;
    killed_at_any_point_never_lies,
    three_processes_at_once_into_a_new_target,
);
testkit::backend_tests!(postgres => postgres;
    killed_at_any_point_never_lies,
    three_processes_at_once_into_a_new_target,
);

/// Tests that stop a PostgreSQL server of their own (named under
/// `postgres::` so the CI table counts them there).
mod stopped_server {
    mod postgres {
        use super::super::*;
        use testkit::cluster::LocalCluster;

        /// The server stopped at points spread over a run: the exit code and
        /// the message say what SQL holds; nothing is retired without its data;
        /// with the server back, a rerun finishes.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn server_stopped_at_any_point_never_lies() {
            let cluster = match LocalCluster::start_with(Some(std::process::id()), true) {
                Ok(c) => c,
                Err(e) if !testkit::pg::required() => {
                    testkit::pg::report_skip(
                        concat!(module_path!(), "::server_stopped_at_any_point_never_lies"),
                        &e.to_string(),
                    );
                    return;
                }
                Err(e) => panic!("no local PostgreSQL: {e}"),
            };
            let dir = tempfile::tempdir().unwrap();
            let pristine = pristine(dir.path()).await;
            let admin = cluster.url("postgres");
            let create = |name: String| {
                let admin = admin.clone();
                async move {
                    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    let task = tokio::spawn(conn);
                    client
                        .batch_execute(&format!("CREATE DATABASE {name}"))
                        .await
                        .unwrap();
                    drop(client);
                    let _ = task.await;
                    testkit::pg::with_dbname(&admin, &name)
                }
            };
            let full = {
                let kv = dir.path().join("timing");
                copy_dir(&pristine, &kv);
                let to = create("timing".into()).await;
                let started = Instant::now();
                let out = run(&["migrate", "--kv", kv.to_str().unwrap(), "--to", &to]).await;
                assert_eq!(out.code, Some(0), "{}", out.stderr);
                started.elapsed()
            };
            let mut tally = Tally::default();
            let (mut exits, mut said_safe, mut said_nothing) = (Vec::new(), 0, 0);
            let fractions = [0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.86, 0.9, 0.93, 0.96, 0.98];
            for (i, f) in fractions.into_iter().enumerate() {
                let kv = dir.path().join(format!("kv-{i}"));
                copy_dir(&pristine, &kv);
                let to = create(format!("stopped_{i}")).await;
                let mut child = command(&["migrate", "--kv", kv.to_str().unwrap(), "--to", &to])
                    .spawn()
                    .unwrap();
                tokio::select! {
                    status = child.wait() => { status.unwrap(); }
                    _ = tokio::time::sleep(full.mul_f64(f)) => { cluster.stop_now().unwrap(); }
                }
                let out = child.wait_with_output().await.unwrap();
                let (code, stdout, stderr) = (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                );
                let _ = cluster.start_again();
                exits.push(code);
                let held = what_sql_holds(&to, &kv).await;
                match code {
                    Some(0) => assert!(held.is_some() && tombstoned(&kv), "{stdout}"),
                    Some(3) => {
                        said_safe += 1;
                        assert!(stdout.contains("the data is safe in SQL"), "{stdout}");
                        assert!(held.is_some(), "exit 3 says the data is in SQL");
                    }
                    Some(1) if stderr.contains("may or may not be in SQL") => {
                        assert!(!tombstoned(&kv));
                    }
                    // The server was gone before the migration began.
                    Some(1) if !stderr.contains("did not happen") => {
                        said_nothing += 1;
                        assert!(stderr.contains("connection failure"), "{stderr}");
                        assert!(held.is_none());
                        assert!(!tombstoned(&kv));
                    }
                    Some(1) => {
                        said_nothing += 1;
                        assert!(
                            stderr.contains("no key-value data was written to SQL"),
                            "{stderr}"
                        );
                        assert!(held.is_none(), "said nothing was written: {stderr}");
                        assert!(!tombstoned(&kv));
                    }
                    other => panic!("exit {other:?}: {stdout}{stderr}"),
                }
                assert!(
                    held.is_some() || !tombstoned(&kv),
                    "tombstoned without its data"
                );
                check_and_finish(&to, &kv, &mut tally).await;
            }
            eprintln!(
                "server stopped over {} trials: exits {exits:?}; said nothing kept {said_nothing}, \
             said data safe {said_safe}; {tally:?}",
                fractions.len()
            );
            let _ = cluster.stop_now();
        }
    }
}
