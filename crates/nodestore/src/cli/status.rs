//! `nodestore status`: a node's databases and what opening them would do.

use std::path::PathBuf;
use std::process::ExitCode;

use nodestore::{BackendConfig, Config, Error};

pub(crate) async fn run(
    config: Option<PathBuf>,
    dir: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode, Error> {
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
        print(&s);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print(s: &nodestore::status::NodeStatus) {
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
            if k.migration_running {
                say!(
                    "  a migration of it is running now (an online migration in the node, or \
                     `nodestore migrate`); its progress is in that process's log"
                );
            }
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
                    joined(&q.steps_applied)
                }
            );
            if !q.steps_pending.is_empty() {
                say!("  schema steps pending: {}", joined(&q.steps_pending));
            }
            for m in &q.migrations {
                say!("  migrated {m}");
            }
            if let (Some(from), Some(at)) = (&q.staged_from, &q.staged_at) {
                say!(
                    "  holds the staged copy of an online migration of {from} that did not \
                     finish (committed {at}); the key-value database is still the truth"
                );
            }
        }
    }
    say!("opening would: {}", s.open_would);
}

fn joined(steps: &[nodestore::status::StepStatus]) -> String {
    steps
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
