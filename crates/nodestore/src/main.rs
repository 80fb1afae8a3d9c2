//! The `nodestore` command: try the migration on a demo node, migrate,
//! verify, inspect, dump and restore a node's stores.
//!
//! This file holds the command line and the dispatch; each command lives in
//! its own module under `cli/`, with what they share (printing, progress
//! bars, typed targets).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool"
)]

#[macro_use]
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use nodestore::{Error, Location};

use cli::logging::LogFormat;
use cli::target::{Accepts, LocationParser};

#[derive(Parser)]
#[command(
    name = "nodestore",
    version = version(),
    after_help = "Exit codes: 0 done; 1 failed (the message says what was kept), or the command \
                  line is wrong; 2 verify found differences; 3 the data is safe in SQL but \
                  something is left to finish (a pending tombstone, a later schema step), which \
                  the next run finishes; 141 standard output was closed early (a reader such as \
                  `head` stopped reading).",
    about = "Storage for the daemon beside a Lightning node: migrate its key-value data to SQL, verify, inspect, dump and restore."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log lines on standard error: -v info, -vv debug, -vvv trace
    /// (RUST_LOG, when set, decides instead).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Fewer log lines: -q errors only, -qq none.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
    /// How log lines are written.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
}

/// `0.1.0 (commit 0123456789ab, writes schema version 10)`.
fn version() -> String {
    format!(
        "{} (commit {}, writes schema version {})",
        env!("CARGO_PKG_VERSION"),
        env!("NODESTORE_COMMIT"),
        migrator::schema::STEPS.last().map_or(0, |s| s.version)
    )
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
        /// The SQL target: sqlite:PATH or postgres://… [default: NODESTORE_POSTGRES_URL or
        /// NODESTORE_SQLITE_FILE]
        #[arg(long, value_parser = LocationParser(Accepts::Sql))]
        to: Option<Location>,
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
        /// The SQL database: sqlite:PATH or postgres://… [default: NODESTORE_POSTGRES_URL or
        /// NODESTORE_SQLITE_FILE]
        #[arg(long, value_parser = LocationParser(Accepts::Sql))]
        sql: Option<Location>,
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
        #[arg(long, value_parser = LocationParser(Accepts::Any))]
        from: Location,
        /// The file (mode 0600: it holds secrets); standard output if absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a dump into a new key-value database, as it is.
    Import {
        /// kv:DIR, a directory that holds no database yet.
        #[arg(long, value_parser = LocationParser(Accepts::Kv))]
        to: Location,
        /// The dump file.
        file: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages into a directory (used by `cargo xtask man`).
    #[command(hide = true)]
    Man {
        /// The directory (created when missing).
        dir: PathBuf,
    },
}

/// A migration allocates and frees a few values per record on several
/// threads (the reader's, the executor's, the proofs' workers); with the
/// system allocator about a third of its CPU time went to `malloc` and
/// `free` (docs/design.md §5.7). The libraries leave the choice to their binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // A wrong command line did nothing: exit 1, never 2 (which
            // says verify found differences).
            let _ = e.print();
            return ExitCode::FAILURE;
        }
    };
    cli::logging::install(cli.verbose, cli.quiet, cli.log_format);
    // A command is one flow of work on one connection (a migration, one
    // transaction): its future and the connection's task wake each other
    // for every page of rows. Run on the runtime's one worker thread, not
    // on this thread, neither wake crosses threads; reading, checking and
    // decoding run on the blocking pool (docs/design.md §5.7).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn_line!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = rt.spawn(run(cli.command));
    match rt.block_on(command) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            cli::output::report_error(&e);
            ExitCode::FAILURE
        }
        // A panic ends the process as it would have on this thread.
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => {
                warn_line!("error: the command stopped: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Demo {
            dir,
            postgres,
            scale,
        } => cli::demo::run(&dir, postgres, scale.parse()?).await,
        Command::Migrate {
            kv,
            to,
            dry_run,
            force,
            accept_damaged,
            json,
        } => {
            cli::migrate::run(cli::migrate::Args {
                kv,
                to: cli::target::sql_or_environment(to, "--to")?,
                dry_run,
                force,
                accept_damaged,
                json,
            })
            .await
        }
        Command::Verify { kv, sql, json } => {
            let sql = cli::target::sql_or_environment(sql, "--sql")?;
            cli::verify::run(&kv, &sql, json).await
        }
        Command::Status { config, dir, json } => cli::status::run(config, dir, json).await,
        Command::Dump { from, out } => cli::dump::dump(&from, out.as_deref()).await,
        Command::Import { to, file } => cli::dump::import(&to, &file).await,
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "nodestore", &mut out);
            say_raw!("{}", String::from_utf8_lossy(&out));
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => {
            write_man_pages(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `nodestore.1` and one page per command (`nodestore-migrate.1`, …).
fn write_man_pages(dir: &std::path::Path) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, dir).map_err(io)?;
    Ok(())
}
