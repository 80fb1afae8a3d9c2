//! `nodestore migrate`: a key-value database into SQL, then its tombstone;
//! and how an outcome is told, in words or as JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use nodestore::{Error, Location};

use super::progress::Bars;

/// Exit code when the data is safe in SQL but something is left to finish
/// (a pending tombstone, a later schema step), which the next run or open
/// finishes.
pub(crate) const EXIT_UNFINISHED: u8 = 3;

/// What `migrate` was asked to do.
pub(crate) struct Args {
    pub(crate) kv: PathBuf,
    pub(crate) to: Location,
    pub(crate) dry_run: bool,
    pub(crate) force: bool,
    pub(crate) accept_damaged: bool,
    pub(crate) json: bool,
}

pub(crate) async fn run(a: Args) -> Result<ExitCode, Error> {
    // The source first: a bad --kv creates nothing.
    tombstone::status(&a.kv)?.ok_or_else(|| tombstone::Error::Missing(a.kv.clone()))?;
    let db = sql_db(&a.to, false).await?;
    let bars = Bars::new(a.json);
    let started = Instant::now();
    let opts = migrator::Options {
        dry_run: a.dry_run,
        force: a.force,
        accept_damaged: a.accept_damaged,
        ..migrator::Options::default()
    };
    let result = migrator::migrate(&a.kv, &db, &opts, Some(&bars)).await;
    drop(bars);
    let outcome = match result {
        Ok(o) => o,
        Err(failure) => {
            if a.json {
                say!("{}", failure_json(&a.kv, &db.describe(), &failure));
            }
            return Err(Error::Migration {
                kv: a.kv.display().to_string(),
                target: db.describe(),
                failure: Box::new(failure),
                during_open: false,
            });
        }
    };
    if a.json {
        say!("{}", outcome_json(&db.describe(), &outcome));
    } else {
        print_outcome(&db.describe(), &outcome, started.elapsed().as_secs_f64());
    }
    Ok(outcome_code(&outcome))
}

/// A SQL database to work on (`read_only`: never created nor written).
pub(crate) async fn sql_db(location: &Location, read_only: bool) -> Result<sqldb::Db, Error> {
    let not_sql = || Error::NotSql {
        location: location.to_string(),
    };
    if matches!(location, Location::Kv(_)) {
        return Err(not_sql());
    }
    let backend = location.backend();
    let db = if read_only {
        nodestore::connect_read_only(&backend).await?
    } else {
        nodestore::connect(&backend).await?
    };
    db.ok_or_else(not_sql)
}

/// 0 when the outcome is complete, [`EXIT_UNFINISHED`] otherwise.
pub(crate) fn outcome_code(o: &migrator::Outcome) -> ExitCode {
    if o.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_UNFINISHED)
    }
}

/// `--json`'s shapes (docs/cli.md). Fields in name order: the output is
/// the same bytes as a JSON object with sorted keys.
mod shape {
    use serde::Serialize;

    #[derive(Serialize)]
    pub(super) struct Outcome<'a> {
        pub(super) accepted_damage: &'a [migrator::Problem],
        pub(super) applied_steps: &'a [i64],
        pub(super) complete: bool,
        pub(super) data_in_sql: bool,
        pub(super) dry_run: bool,
        pub(super) kept_nothing: bool,
        pub(super) migrated: bool,
        pub(super) outcome: migrator::OutcomeKind,
        pub(super) report: Report,
        pub(super) target: &'a str,
        pub(super) tombstone: Option<Mark<'a>>,
        pub(super) tombstone_pending: Option<String>,
        pub(super) sled_cannot_open: Option<&'a str>,
        pub(super) unfinished_steps: Option<&'a str>,
    }

    #[derive(Serialize)]
    pub(super) struct Mark<'a> {
        pub(super) marked_at: String,
        pub(super) target: &'a str,
        pub(super) target_identity: Option<String>,
    }

    #[derive(Serialize)]
    pub(super) struct Report {
        pub(super) accounts: Accounts,
        pub(super) actions: Actions,
        pub(super) firewall: Firewall,
        pub(super) seconds: f64,
        pub(super) sessions: Sessions,
    }

    #[derive(Serialize)]
    pub(super) struct Accounts {
        pub(super) accounts: u64,
        pub(super) invoices: u64,
        pub(super) last_indexes: bool,
        pub(super) payments: u64,
    }

    #[derive(Serialize)]
    pub(super) struct Actions {
        pub(super) account_links_dropped: u64,
        pub(super) actions: u64,
        pub(super) session_links_dropped: u64,
    }

    #[derive(Serialize)]
    pub(super) struct Firewall {
        pub(super) kv_entries: u64,
        pub(super) kv_entries_skipped: u64,
        pub(super) privacy_pairs: u64,
        pub(super) privacy_pairs_skipped: u64,
    }

    #[derive(Serialize)]
    pub(super) struct Sessions {
        pub(super) account_links_dropped: u64,
        pub(super) duplicates_dropped: u64,
        pub(super) sessions: u64,
    }

    #[derive(Serialize)]
    pub(super) struct Failure<'a> {
        pub(super) complete: bool,
        pub(super) data: migrator::DataState,
        pub(super) data_in_sql: bool,
        pub(super) error: String,
        pub(super) kv: String,
        pub(super) outcome: &'static str,
        pub(super) problems: &'a [migrator::Problem],
        pub(super) schema_steps_applied: &'a [i64],
        pub(super) target: &'a str,
    }
}

fn report_json(r: &migrator::Report) -> shape::Report {
    shape::Report {
        accounts: shape::Accounts {
            accounts: r.accounts.accounts,
            invoices: r.accounts.invoices,
            last_indexes: r.accounts.last_indexes.is_some(),
            payments: r.accounts.payments,
        },
        actions: shape::Actions {
            account_links_dropped: r.actions.account_links_dropped,
            actions: r.actions.actions,
            session_links_dropped: r.actions.session_links_dropped,
        },
        firewall: shape::Firewall {
            kv_entries: r.firewall.kv_entries,
            kv_entries_skipped: r.firewall.kv_entries_skipped,
            privacy_pairs: r.firewall.privacy_pairs,
            privacy_pairs_skipped: r.firewall.privacy_pairs_skipped,
        },
        seconds: r.duration.as_secs_f64(),
        sessions: shape::Sessions {
            account_links_dropped: r.sessions.account_links_dropped,
            duplicates_dropped: r.sessions.duplicates_dropped,
            sessions: r.sessions.sessions,
        },
    }
}

fn outcome_json(target: &str, o: &migrator::Outcome) -> String {
    let (tombstone, pending) = match &o.tombstone {
        migrator::TombstoneState::Written(m) => (
            Some(shape::Mark {
                marked_at: nodestore::dump::time_text(m.marked_at),
                target: &m.target,
                target_identity: m.target_identity.map(hex::encode),
            }),
            None,
        ),
        migrator::TombstoneState::Pending(reason) => (None, Some(reason.to_string())),
        migrator::TombstoneState::NotWritten | migrator::TombstoneState::SledCannotOpen(_) => {
            (None, None)
        }
    };
    let rehearsed = o.kind == migrator::OutcomeKind::Rehearsed;
    to_json(&shape::Outcome {
        accepted_damage: &o.accepted_damage,
        applied_steps: &o.applied_steps,
        complete: o.is_complete(),
        data_in_sql: !rehearsed,
        dry_run: rehearsed,
        kept_nothing: rehearsed,
        migrated: o.kind == migrator::OutcomeKind::Migrated,
        outcome: o.kind,
        report: report_json(&o.report),
        target,
        tombstone,
        tombstone_pending: pending,
        sled_cannot_open: match &o.tombstone {
            migrator::TombstoneState::SledCannotOpen(why) => Some(why),
            _ => None,
        },
        unfinished_steps: o.unfinished_steps.as_deref(),
    })
}

fn failure_json(kv: &Path, target: &str, f: &migrator::Failure) -> String {
    to_json(&shape::Failure {
        complete: false,
        data: f.data,
        data_in_sql: false,
        error: f.error.to_string(),
        kv: kv.display().to_string(),
        outcome: "failed",
        // Every problem of a damaged source, where the message names a few.
        problems: match &f.error {
            migrator::Error::DamagedSource { problems, .. } => problems,
            _ => &[],
        },
        schema_steps_applied: &f.schema_steps,
        target,
    })
}

/// A shape as one line of JSON. Its fields are strings, numbers and lists
/// of them, which always serialise.
fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

/// The outcome in words, store by store.
pub(crate) fn print_outcome(target: &str, o: &migrator::Outcome, elapsed: f64) {
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
        migrator::TombstoneState::SledCannotOpen(why) => say!(
            "  the key-value database is not tombstoned and was left as it was, for a migration to \
             read again: {why}"
        ),
    }
    if let Some(reason) = &o.unfinished_steps {
        say!(
            "  the data is safe in SQL, but a later schema step failed ({reason}); run the migration \
             again (or open the node) to apply it"
        );
    }
}
