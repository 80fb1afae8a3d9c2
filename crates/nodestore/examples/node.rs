//! A small node built on nodestore: it loads its configuration, opens its
//! stores with logging and migration progress, serves a few calls of each
//! store, and shuts down cleanly.
//!
//! ```sh
//! # SQLite, configured by variables (a TOML file works too: see config.rs)
//! NODESTORE_BACKEND=sqlite NODESTORE_SQLITE_FILE=/tmp/node.db \
//!     cargo run -p nodestore --example node
//! # PostgreSQL, with a legacy key-value database migrated on the way
//! NODESTORE_BACKEND=postgres NODESTORE_POSTGRES_URL=postgres://… NODESTORE_KV_DIR=/tmp/kv \
//!     cargo run -p nodestore --example node
//! # or: cargo run -p nodestore --example node -- node.toml
//! ```
//!
//! `RUST_LOG` sets what is logged (default `info`).
#![allow(clippy::print_stdout, reason = "an example program shows what it does")]

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{Duration, Utc};
use nodestore::actions::{ActionFilter, ActionQuery, AddAction};
use nodestore::firewall::{Mode, Namespace, Scope};
use nodestore::sessions::{NewSession, SessionType};
use nodestore::{Config, OpenOptions, Progress, ProgressEvent, Stores};

/// Logs a migration's progress, as a node would show it.
struct LogProgress;

impl Progress for LogProgress {
    fn progress(&self, e: ProgressEvent) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        tracing::info!(store = e.store, done = e.done, total = e.total, "migrating");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the node stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The configuration: a file if one is given, NODESTORE_* variables over it.
    let file = std::env::args().nth(1).map(PathBuf::from);
    let config = Config::load(file.as_deref())?;

    // 2. The stores, migrating a legacy key-value database on the way.
    let stores = Stores::open_with(
        &config,
        &OpenOptions {
            progress: Some(&LogProgress),
        },
    )
    .await?;
    let started = stores.start().await?;
    println!(
        "stores open on {} ({} reserved sessions cleared)",
        stores.backend.describe(),
        started.reserved_sessions_deleted
    );

    // 3. A few calls of each store.
    let label = format!("example-{}", Utc::now().timestamp_micros());
    let account = stores.accounts.new_account(50_000, None, &label).await?;
    stores.accounts.credit_account(account.id, 1_000).await?;
    let account = stores.accounts.account(account.id).await?;
    println!(
        "accounts: {} holds {} msat ({} accounts in all)",
        account.id,
        account.current_balance_msat,
        stores.accounts.accounts().await?.len()
    );

    let mut new = NewSession::new(
        "example session",
        SessionType::MacaroonReadonly,
        Utc::now() + Duration::days(30),
        "mailbox.example:443",
    );
    new.account = Some(account.id);
    let session = stores.sessions.new_session(new).await?;
    println!(
        "sessions: {} is {:?} ({} sessions in all)",
        session.id,
        session.state,
        stores.sessions.list_sessions().await?.len()
    );

    let ns = Namespace::new("example-rule", session.group_id, "");
    let mut kv = stores.firewall.begin_kv(ns.clone(), Mode::Update).await?;
    kv.set(Scope::Local, "calls", b"1").await?;
    kv.commit().await?;
    let mut kv = stores.firewall.begin_kv(ns, Mode::View).await?;
    let value = kv.get(Scope::Local, "calls").await?;
    kv.commit().await?;
    println!(
        "firewall: the rule's store holds calls = {}",
        String::from_utf8_lossy(&value.unwrap_or_default())
    );

    let locator = stores
        .actions
        .add_action(AddAction {
            session_id: Some(session.id),
            account_id: Some(account.id),
            actor_name: "example".into(),
            feature_name: "demo".into(),
            rpc_method: "/lnrpc.Lightning/GetInfo".into(),
            ..AddAction::default()
        })
        .await?;
    let page = stores
        .actions
        .list_actions(&ActionQuery {
            filter: ActionFilter {
                session_id: Some(session.id),
                ..ActionFilter::default()
            },
            count_all: true,
            ..ActionQuery::default()
        })
        .await?;
    println!(
        "actions: recorded {locator:?}; the session has {} action(s)",
        page.total_count
    );

    // 4. A clean shutdown: flushed, checkpointed, pools closed.
    stores.close().await?;
    println!("closed cleanly");
    Ok(())
}
