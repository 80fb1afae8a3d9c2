//! The `nodestore` command: try the migration on a demo node, migrate,
//! verify, inspect, dump and restore a node's stores.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool"
)]

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use nodestore::dump::Dump;
use nodestore::generate::{Scale, generate};
use nodestore::verify::{VerifyReport, verify};
use nodestore::{BackendConfig, Config, Error, Location};
use serde_json::json;

/// Exit code when standard output is closed early (a reader such as `head`
/// stopped reading): 128 + SIGPIPE, what a shell shows for it.
const EXIT_CLOSED_STDOUT: i32 = 141;

/// `println!` that never panics: a closed standard output ends the command
/// quietly with [`EXIT_CLOSED_STDOUT`].
macro_rules! say {
    ($($arg:tt)*) => {
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(EXIT_CLOSED_STDOUT);
        }
    };
}

/// `print!` that never panics (see [`say!`]).
macro_rules! say_raw {
    ($($arg:tt)*) => {
        if write!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(EXIT_CLOSED_STDOUT);
        }
    };
}

/// `eprintln!` that never panics: a closed standard error loses the line.
macro_rules! warn_line {
    ($($arg:tt)*) => {
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    };
}

#[derive(Parser)]
#[command(
    name = "nodestore",
    version,
    after_help = "Exit codes: 0 done; 1 failed (the message says what was kept); 2 verify found \
                  differences; 3 the data is safe in SQL but something is left to finish (a \
                  pending tombstone, a later schema step), which the next run finishes; 141 \
                  standard output was closed early (a reader such as `head` stopped reading).",
    about = "Storage for the daemon beside a Lightning node: migrate its key-value data to SQL, verify, inspect, dump and restore."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a realistic key-value database, migrate it into SQLite (or
    /// PostgreSQL) with progress, verify it, and show the status.
    Demo {
        /// Where the demo's databases go (recreated on every run).
        #[arg(long, default_value = "nodestore-demo")]
        dir: PathBuf,
        /// Migrate into this (empty) PostgreSQL database instead of SQLite.
        #[arg(long)]
        postgres: Option<String>,
        /// How much data: S, M or L.
        #[arg(long, default_value = "S")]
        scale: String,
    },
    /// Migrate a key-value database into SQL, then tombstone it.
    Migrate {
        /// The key-value database directory.
        #[arg(long)]
        kv: PathBuf,
        /// The SQL target: sqlite:PATH or postgres://…
        #[arg(long)]
        to: String,
        /// Migrate and verify inside a transaction, then roll back.
        #[arg(long)]
        dry_run: bool,
        /// Migrate a tombstoned database into another target than the one it went to.
        #[arg(long)]
        force: bool,
        /// Migrate a damaged database: what is readable moves, what is
        /// missing is recorded in the migration record.
        #[arg(long)]
        accept_damaged: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare every record of a key-value database with a SQL database.
    Verify {
        /// The key-value database directory (live or tombstoned).
        #[arg(long)]
        kv: PathBuf,
        /// The SQL database: sqlite:PATH or postgres://…
        #[arg(long)]
        sql: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the databases of a node and what opening them would do.
    Status {
        /// A configuration file (TOML); NODESTORE_* variables apply too.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A data directory holding `kv/` and `node.db` (as `demo` makes).
        #[arg(long, conflicts_with = "config")]
        dir: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write every store as one canonical JSON document.
    Dump {
        /// kv:DIR, sqlite:PATH or postgres://…
        #[arg(long)]
        from: String,
        /// The file (mode 0600: it holds secrets); standard output if absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a dump into a new key-value database, as it is.
    Import {
        /// kv:DIR, a directory that holds no database yet.
        #[arg(long)]
        to: String,
        /// The dump file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn_line!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            report_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// One line per cause.
fn report_error(e: &(dyn std::error::Error + 'static)) {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !lines.iter().any(|l| l.contains(&text)) {
            lines.push(text);
        }
        cur = err.source();
    }
    for (i, l) in lines.iter().enumerate() {
        for (j, part) in l.lines().enumerate() {
            let lead = if i == 0 && j == 0 {
                "error: "
            } else if j == 0 {
                "caused by: "
            } else {
                "  "
            };
            warn_line!("{lead}{part}");
        }
    }
}

/// A progress bar per store, fed by the migrator.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<&'static str, ProgressBar>>,
}

impl Bars {
    fn new(hidden: bool) -> Bars {
        let multi = MultiProgress::new();
        if hidden {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Bars {
            multi,
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn update(&self, store: &'static str, done: u64, total: u64) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let bar = bars.entry(store).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>14} [{bar:30}] {pos:>9}/{len:<9} {per_sec:>12} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(store);
            bar
        });
        bar.set_length(total.max(done));
        bar.set_position(done);
        if done >= total {
            bar.finish();
        }
    }
}

impl migrator::Progress for Bars {
    fn progress(&self, e: migrator::ProgressEvent) -> Result<(), sqldb::BoxError> {
        self.update(e.store, e.done, e.total);
        Ok(())
    }
}

async fn sql_db(target: &str) -> Result<sqldb::Db, Error> {
    let location: Location = target.parse()?;
    let not_sql = || Error::Config(format!("{location}: expected a SQL database"));
    if matches!(location, Location::Kv(_)) {
        return Err(not_sql());
    }
    nodestore::connect(&location.backend())
        .await?
        .ok_or_else(not_sql)
}

/// Exit codes (docs in `nodestore help`): 0 done, 1 failed (nothing of the
/// data kept, or whether it was is unknown), 2 verify found differences, 3
/// the data is safe in SQL but something is left to finish (a pending
/// tombstone, a later schema step), which the next run or open finishes.
const EXIT_UNFINISHED: u8 = 3;

async fn sql_db_read_only(target: &str) -> Result<sqldb::Db, Error> {
    let location: Location = target.parse()?;
    let not_sql = || Error::Config(format!("{location}: expected a SQL database"));
    if matches!(location, Location::Kv(_)) {
        return Err(not_sql());
    }
    nodestore::connect_read_only(&location.backend())
        .await?
        .ok_or_else(not_sql)
}

fn outcome_code(o: &migrator::Outcome) -> ExitCode {
    if o.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_UNFINISHED)
    }
}

fn report_json(r: &migrator::Report) -> serde_json::Value {
    json!({
        "accounts": { "accounts": r.accounts.accounts, "invoices": r.accounts.invoices, "payments": r.accounts.payments, "last_indexes": r.accounts.last_indexes.is_some() },
        "sessions": { "sessions": r.sessions.sessions, "duplicates_dropped": r.sessions.duplicates_dropped, "account_links_dropped": r.sessions.account_links_dropped },
        "firewall": { "kv_entries": r.firewall.kv_entries, "kv_entries_skipped": r.firewall.kv_entries_skipped, "privacy_pairs": r.firewall.privacy_pairs, "privacy_pairs_skipped": r.firewall.privacy_pairs_skipped },
        "actions": { "actions": r.actions.actions, "session_links_dropped": r.actions.session_links_dropped, "account_links_dropped": r.actions.account_links_dropped },
        "seconds": r.duration.as_secs_f64(),
    })
}

fn outcome_json(target: &str, o: &migrator::Outcome) -> serde_json::Value {
    let (tombstone, pending) = match &o.tombstone {
        migrator::TombstoneState::Written(m) => (
            json!({ "target": m.target, "marked_at": m.marked_at.to_rfc3339(), "target_identity": m.target_identity.map(hex::encode) }),
            None,
        ),
        migrator::TombstoneState::Pending(reason) => {
            (serde_json::Value::Null, Some(reason.clone()))
        }
        migrator::TombstoneState::NotWritten => (serde_json::Value::Null, None),
    };
    json!({
        "target": target,
        "outcome": o.kind,
        "complete": o.is_complete(),
        "dry_run": o.kind == migrator::OutcomeKind::Rehearsed,
        "data_in_sql": o.kind != migrator::OutcomeKind::Rehearsed,
        "migrated": o.kind == migrator::OutcomeKind::Migrated,
        "applied_steps": o.applied_steps,
        "report": report_json(&o.report),
        "tombstone": tombstone,
        "tombstone_pending": pending,
        "unfinished_steps": o.unfinished_steps,
        "accepted_damage": o.accepted_damage,
    })
}

fn failure_json(kv: &Path, target: &str, f: &migrator::Failure) -> serde_json::Value {
    json!({
        "kv": kv.display().to_string(),
        "target": target,
        "outcome": "failed",
        "complete": false,
        "data": f.data,
        "data_in_sql": false,
        "schema_steps_applied": f.schema_steps,
        "error": f.error.to_string(),
    })
}

fn print_outcome(target: &str, o: &migrator::Outcome, elapsed: f64) {
    let r = &o.report;
    match o.kind {
        migrator::OutcomeKind::Rehearsed => say!(
            "dry run: migrated into {target} and verified every record in {elapsed:.2}s, then rolled \
             everything back: nothing was kept, and the key-value database is unchanged"
        ),
        migrator::OutcomeKind::AlreadyMigrated => say!(
            "{target} already holds this key-value database's data (migrated earlier); nothing to migrate"
        ),
        migrator::OutcomeKind::Migrated => {
            say!("migrated into {target} in {elapsed:.2}s, every record read back and compared:")
        }
    }
    say!(
        "  accounts  {:>9} accounts, {} invoices, {} payments",
        r.accounts.accounts,
        r.accounts.invoices,
        r.accounts.payments
    );
    say!(
        "  sessions  {:>9} sessions; dropped {} older duplicates of an id, {} links to removed accounts",
        r.sessions.sessions,
        r.sessions.duplicates_dropped,
        r.sessions.account_links_dropped
    );
    say!(
        "  firewall  {:>9} kv-store entries, {} privacy pairs; skipped {} entries and {} pairs of deleted session groups",
        r.firewall.kv_entries,
        r.firewall.privacy_pairs,
        r.firewall.kv_entries_skipped,
        r.firewall.privacy_pairs_skipped
    );
    say!(
        "  actions   {:>9} actions; dropped {} links to deleted sessions, {} to removed accounts",
        r.actions.actions,
        r.actions.session_links_dropped,
        r.actions.account_links_dropped
    );
    for p in &o.accepted_damage {
        say!("  accepted damage: {p}");
    }
    match &o.tombstone {
        migrator::TombstoneState::Written(m) => {
            say!("  the key-value database is tombstoned (into {})", m.target)
        }
        migrator::TombstoneState::Pending(p) => say!(
            "  the data is safe in SQL, but the key-value database is not tombstoned yet ({p}); \
             run the migration again (or open the node) to finish, and do not run a node on the \
             key-value database"
        ),
        migrator::TombstoneState::NotWritten => {}
    }
    if let Some(reason) = &o.unfinished_steps {
        say!(
            "  the data is safe in SQL, but a later schema step failed ({reason}); run the migration \
             again (or open the node) to apply it"
        );
    }
}

fn print_verify(r: &VerifyReport) {
    if r.is_clean() {
        say!("verified: {} records, no differences", r.records);
    } else {
        say!(
            "{} differences in {} records:",
            r.differences.len(),
            r.records
        );
        for d in &r.differences {
            say!("  {}: {}", d.record, d.detail);
        }
    }
}

fn print_status(s: &nodestore::status::NodeStatus) {
    match &s.kv {
        None => say!("key-value database: none configured"),
        Some(k) => {
            say_raw!("key-value database: {} ({}", k.path.display(), k.state);
            if let Some(f) = k.format {
                say_raw!(", format {f}");
            }
            if let (Some(at), Some(t)) = (&k.tombstoned_at, &k.tombstone_target) {
                say_raw!(", migrated on {at} into {t}");
            }
            say!(")");
        }
    }
    match &s.sql {
        None => say!("SQL database: none (kv backend)"),
        Some(q) => {
            say!("SQL database: {}", q.target);
            say!(
                "  schema steps applied: {}",
                if q.steps_applied.is_empty() {
                    "none".into()
                } else {
                    q.steps_applied.join(", ")
                }
            );
            if !q.steps_pending.is_empty() {
                say!("  schema steps pending: {}", q.steps_pending.join(", "));
            }
            for m in &q.migrations {
                say!("  migrated {m}");
            }
        }
    }
    say!("opening would: {}", s.open_would);
}

async fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Demo {
            dir,
            postgres,
            scale,
        } => demo(&dir, postgres, scale.parse()?).await,
        Command::Migrate {
            kv,
            to,
            dry_run,
            force,
            accept_damaged,
            json,
        } => {
            // The source first: a bad --kv creates nothing.
            tombstone::status(&kv)?.ok_or_else(|| tombstone::Error::Missing(kv.clone()))?;
            let db = sql_db(&to).await?;
            let bars = Bars::new(json);
            let started = Instant::now();
            let opts = migrator::Options {
                dry_run,
                force,
                accept_damaged,
                ..migrator::Options::default()
            };
            let result = migrator::migrate(&kv, &db, &opts, Some(&bars)).await;
            drop(bars);
            let outcome = match result {
                Ok(o) => o,
                Err(failure) => {
                    if json {
                        say!("{}", failure_json(&kv, &db.describe(), &failure));
                    }
                    return Err(Error::Migration {
                        kv: kv.display().to_string(),
                        target: db.describe(),
                        failure: Box::new(failure),
                        during_open: false,
                    });
                }
            };
            if json {
                say!("{}", outcome_json(&db.describe(), &outcome));
            } else {
                print_outcome(&db.describe(), &outcome, started.elapsed().as_secs_f64());
            }
            Ok(outcome_code(&outcome))
        }
        Command::Verify { kv, sql, json } => {
            let db = sql_db_read_only(&sql).await?;
            let report = verify(&kv, &db).await?;
            if json {
                say!(
                    "{}",
                    nodestore::json_text("the verify report", &report, false)?
                );
            } else {
                print_verify(&report);
            }
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Status { config, dir, json } => {
            if let Some(d) = dir.as_ref().filter(|d| !d.is_dir()) {
                return Err(Error::Io {
                    path: d.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
                });
            }
            let config = match dir {
                Some(d) => Config {
                    kv_dir: Some(d.join("kv")),
                    ..Config::new(BackendConfig::Sqlite {
                        file: d.join("node.db"),
                    })
                },
                None => Config::load(config.as_deref())?,
            };
            let s = nodestore::status::status(&config).await?;
            if json {
                say!("{}", nodestore::json_text("the status", &s, false)?);
            } else {
                print_status(&s);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump { from, out } => {
            let d = nodestore::dump::dump(&from.parse()?).await?;
            match out {
                Some(path) => d.write(&path)?,
                None => say_raw!("{}", d.to_json()?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { to, file } => {
            let Location::Kv(dir) = to.parse()? else {
                return Err(Error::Config(format!(
                    "{to}: import writes a key-value database (kv:DIR)"
                )));
            };
            let text = std::fs::read_to_string(&file).map_err(|source| Error::Io {
                path: file.clone(),
                source,
            })?;
            let d = Dump::from_json(&text)?;
            nodestore::dump::import(&d, &dir).await?;
            say!(
                "imported {} accounts, {} sessions, {} kv-store entries, {} privacy pairs, {} actions into {}",
                d.accounts.len(),
                d.sessions.len(),
                d.kv_entries.len(),
                d.privacy_pairs.len(),
                d.actions.len(),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

const DEMO_MARKER: &str = ".nodestore-demo";

async fn demo(dir: &Path, postgres: Option<String>, scale: Scale) -> Result<ExitCode, Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    if dir.exists() {
        if !dir.join(DEMO_MARKER).exists() {
            return Err(Error::Config(format!(
                "{} exists and is not a demo directory; choose another --dir",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    tombstone::create_private_dir(dir).map_err(io(dir))?;
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut marker = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(DEMO_MARKER))
            .map_err(io(dir))?;
        marker
            .write_all(b"made by nodestore demo; removed by the next run\n")
            .map_err(io(dir))?;
    }
    let kv = dir.join("kv");
    let shape = scale.shape();
    say!(
        "1. building a key-value node database in {} ({} SQL rows' worth)",
        kv.display(),
        shape.total_rows()
    );
    let bars = Bars::new(false);
    let started = Instant::now();
    generate(&kv, shape, 2026, &|store, done, total| {
        // The generator's store names are static strings of its own.
        let name: &'static str = match store {
            "accounts" => "accounts",
            "sessions" => "sessions",
            "kv-stores" => "kv-stores",
            "privacy pairs" => "privacy pairs",
            _ => "actions",
        };
        bars.update(name, done, total)
    })
    .await?;
    drop(bars);
    say!("   built in {:.2}s", started.elapsed().as_secs_f64());

    let location = match &postgres {
        Some(url) => Location::Postgres(url.clone()),
        None => Location::Sqlite(dir.join("node.db")),
    };
    let config = Config {
        kv_dir: Some(kv.clone()),
        ..Config::new(location.backend())
    };
    say!("2. migrating it into {location}");
    let db = nodestore::connect(&config.backend)
        .await?
        .ok_or_else(|| Error::Config("not SQL".into()))?;
    let bars = Bars::new(false);
    let started = Instant::now();
    let outcome = migrator::migrate(&kv, &db, &migrator::Options::default(), Some(&bars))
        .await
        .map_err(|failure| Error::Migration {
            kv: kv.display().to_string(),
            target: db.describe(),
            failure: Box::new(failure),
            during_open: false,
        })?;
    drop(bars);
    print_outcome(&db.describe(), &outcome, started.elapsed().as_secs_f64());
    if !outcome.is_complete() {
        return Ok(outcome_code(&outcome));
    }

    say!("3. verifying every record of the (now tombstoned) key-value database against SQL");
    let report = verify(&kv, &db).await?;
    print_verify(&report);

    say!("4. status");
    print_status(&nodestore::status::status(&config).await?);
    say!("5. a node opening the key-value database now is refused:");
    match tombstone::KvDb::open(&kv, &tombstone::KvOptions::default()) {
        Err(e) => say!("   {e}"),
        Ok(_) => say!("   (unexpectedly opened)"),
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
