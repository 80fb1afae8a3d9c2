//! What a node's databases are, and what [`Stores::open`](crate::Stores::open)
//! would do with them.

use std::path::PathBuf;

use serde::Serialize;
use sqldb::migrate::Migrator;
use sqldb::schema::{KV_TO_SQL_VERSION, STEPS};
use tombstone::Status;

use crate::{BackendConfig, Config, MigrationPolicy, Result};

/// The key-value database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvStatus {
    /// Its directory.
    pub path: PathBuf,
    /// `missing`, `empty`, `live`, `tombstoned`, or `in_use` (a running
    /// node has it open).
    pub state: String,
    /// The format version, when live.
    pub format: Option<u32>,
    /// When it was tombstoned (RFC 3339, UTC, microseconds).
    pub tombstoned_at: Option<String>,
    /// Into which SQL target.
    pub tombstone_target: Option<String>,
    /// True while a migration of it runs (an online migration in a
    /// running node, or `nodestore migrate`): it holds the migration lock.
    pub migration_running: bool,
}

/// The SQL database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SqlStatus {
    /// The target, without password.
    pub target: String,
    /// The schema steps applied, in order.
    pub steps_applied: Vec<StepStatus>,
    /// The schema steps this binary has that are not applied yet.
    pub steps_pending: Vec<StepStatus>,
    /// The migrations recorded in the database.
    pub migrations: Vec<MigrationStatus>,
    /// The key-value database of which the SQL database holds a staged
    /// copy: an online migration that did not finish (docs/design.md §7.3).
    pub staged_from: Option<String>,
    /// When that copy was committed (RFC 3339, UTC, microseconds).
    pub staged_at: Option<String>,
}

/// A schema step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepStatus {
    /// Its number.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// What the step table notes about it: for a database Lightning
    /// Terminal made, that the step was adopted rather than applied.
    pub note: Option<String>,
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.version, self.name)?;
        match &self.note {
            Some(note) => write!(f, " ({note})"),
            None => Ok(()),
        }
    }
}

/// A migration the SQL database records (docs/design.md §5.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationStatus {
    /// The key-value database it came from.
    pub source_path: String,
    /// That database's identity (32 hex digits).
    pub source_identity: String,
    /// Its write sequence when it was migrated.
    pub source_write_seq: u64,
    /// When (RFC 3339, UTC, microseconds).
    pub migrated_at: String,
    /// The nodestore version that migrated it.
    pub nodestore_version: String,
    /// True while its tombstone is still to be written.
    pub tombstone_pending: bool,
    /// Problems of a damaged source that were accepted (`--accept-damaged`).
    pub accepted_damage: Vec<migrator::Problem>,
}

impl std::fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "from {} (identity {}, write {}) on {}{}",
            self.source_path,
            self.source_identity,
            self.source_write_seq,
            self.migrated_at,
            if self.tombstone_pending {
                " (tombstone pending)"
            } else {
                ""
            }
        )
    }
}

fn step_status(version: i64, name: &str) -> StepStatus {
    StepStatus {
        note: None,
        version,
        name: name.to_owned(),
    }
}

/// Both, and what opening would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// The key-value database, if configured.
    pub kv: Option<KvStatus>,
    /// The SQL database, if the backend is SQL.
    pub sql: Option<SqlStatus>,
    /// What `Stores::open` would do, in a sentence.
    pub open_would: String,
}

/// The status of the databases `config` names. Reads only (it does create
/// an empty SQLite file if none exists, as connecting does).
pub async fn status(config: &Config) -> Result<NodeStatus> {
    let kv_dir = match &config.backend {
        BackendConfig::Kv { dir } => Some(dir.clone()),
        _ => config.kv_dir.clone(),
    };
    let kv_state = match &kv_dir {
        Some(dir) => match tombstone::status(dir) {
            Ok(s) => Some((dir.clone(), s)),
            // A node has it open: say so, and what SQL holds.
            Err(tombstone::Error::InUse(_)) => return in_use(config, dir).await,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let kv = kv_state.as_ref().map(|(path, s)| {
        let (state, format, at, target) = match s {
            None => ("missing", None, None, None),
            Some(Status::Empty) => ("empty", None, None, None),
            Some(Status::Live(f)) => ("live", Some(*f), None, None),
            Some(Status::Tombstoned(m)) => (
                "tombstoned",
                None,
                Some(crate::dump::time_text(m.marked_at)),
                Some(m.target.clone()),
            ),
        };
        KvStatus {
            path: path.clone(),
            state: state.into(),
            format,
            tombstoned_at: at,
            tombstone_target: target,
            migration_running: tombstone::migration_running(path),
        }
    });
    if let BackendConfig::Sqlite { file } = &config.backend
        && !file.exists()
    {
        // Reading only: report a database that does not exist yet without
        // creating it.
        let open_would = match kv.as_ref().map(|k| k.state.as_str()) {
            Some("live") if config.migration == MigrationPolicy::Defer => {
                "open the stores on the key-value database (migration deferred)".to_owned()
            }
            Some("live") => "migrate the key-value database into SQL (the SQLite file is created then), tombstone it, and open the stores on SQL".to_owned(),
            _ => "create the SQLite database and open the stores on SQL".to_owned(),
        };
        return Ok(NodeStatus {
            kv,
            sql: Some(SqlStatus {
                target: format!("sqlite:{} (does not exist yet)", file.display()),
                steps_applied: Vec::new(),
                steps_pending: STEPS
                    .iter()
                    .map(|s| step_status(s.version, s.name))
                    .collect(),
                migrations: Vec::new(),
                staged_from: None,
                staged_at: None,
            }),
            open_would,
        });
    }
    let Some(db) = crate::connect_read_only(&config.backend).await? else {
        let open_would = match kv.as_ref().map(|k| k.state.as_str()) {
            Some("tombstoned") => "refuse: the key-value database was migrated to SQL".to_owned(),
            _ => "open the stores on the key-value database".to_owned(),
        };
        return Ok(NodeStatus {
            kv,
            sql: None,
            open_would,
        });
    };
    let applied = Migrator::new().applied(&db).await?;
    let notes = Migrator::new().notes(&db).await?;
    let records = migrator::records(&db).await?;
    let staged = migrator::staging::staged(&db).await?;
    let sql = SqlStatus {
        target: db.describe(),
        steps_applied: applied
            .iter()
            .map(|s| StepStatus {
                note: notes.get(&s.version).cloned(),
                ..step_status(s.version, &s.name)
            })
            .collect(),
        steps_pending: STEPS
            .iter()
            .filter(|s| !applied.iter().any(|a| a.version == s.version))
            .map(|s| step_status(s.version, s.name))
            .collect(),
        migrations: records
            .iter()
            .map(|r| MigrationStatus {
                source_path: r.source_path.clone(),
                source_identity: hex::encode(r.source_identity),
                source_write_seq: r.source_write_seq,
                migrated_at: crate::dump::time_text(r.migrated_at),
                nodestore_version: r.nodestore_version.clone(),
                tombstone_pending: r.tombstone_pending,
                accepted_damage: r.accepted_damage.clone(),
            })
            .collect(),
        staged_from: staged.as_ref().map(|c| c.source_path.clone()),
        staged_at: staged.as_ref().map(|c| crate::dump::time_text(c.staged_at)),
    };
    let open_would = open_would(config, kv_state.as_ref(), &db).await;
    Ok(NodeStatus {
        kv,
        sql: Some(sql),
        open_would,
    })
}

/// The status of a node whose key-value database is open in a running
/// node: what SQL holds, and whether a migration (an online one, in that
/// node) is running.
async fn in_use(config: &Config, dir: &std::path::Path) -> Result<NodeStatus> {
    let running = tombstone::migration_running(dir);
    let sql_only = Config {
        kv_dir: None,
        ..config.clone()
    };
    let mut s = match &config.backend {
        BackendConfig::Kv { .. } => NodeStatus {
            kv: None,
            sql: None,
            open_would: String::new(),
        },
        _ => Box::pin(status(&sql_only)).await?,
    };
    s.kv = Some(KvStatus {
        path: dir.to_path_buf(),
        state: "in_use".into(),
        format: None,
        tombstoned_at: None,
        tombstone_target: None,
        migration_running: running,
    });
    s.open_would = if running {
        "wait: a node has the key-value database open and is migrating it online".into()
    } else {
        "refuse: a node has the key-value database open".into()
    };
    Ok(s)
}

/// What `Stores::open` would do, decided by the migration's own rule
/// ([`migrator::plan`]) on what both databases hold now.
async fn open_would(
    config: &Config,
    kv: Option<&(PathBuf, Option<Status>)>,
    db: &sqldb::Db,
) -> String {
    let target = match migrator::inspect_target(db).await {
        Ok(t) => t,
        Err(e) => return format!("refuse: {e}"),
    };
    let defer = config.migration == MigrationPolicy::Defer;
    let Some((dir, Some(status))) = kv else {
        return if let Some(staged) = &target.staged {
            format!(
                "refuse: the SQL database holds the staged copy of an online migration of {} \
                 that did not finish; open with that key-value database to migrate again",
                staged.source_path
            )
        } else if let Some(version) = target.litd {
            let later: Vec<String> = STEPS
                .iter()
                .filter(|s| s.version > KV_TO_SQL_VERSION)
                .map(|s| s.version.to_string())
                .collect();
            format!(
                "adopt the database made by Lightning Terminal (litd) at schema version \
                 {version}: apply step 1 (nodestore's bookkeeping), record steps 2-{KV_TO_SQL_VERSION} \
                 as adopted (litd's schema holds them; litd's data is not rewritten), apply steps {}, \
                 then open the stores on SQL",
                later.join(", ")
            )
        } else if target.migrated {
            "open the stores on SQL".into()
        } else if target.empty {
            "the database holds no nodestore (or litd) schema: apply every schema step, then \
             open the stores on SQL"
                .into()
        } else {
            "apply the schema steps, then open the stores on SQL".into()
        };
    };
    let source = match migrator::inspect_source(dir).await {
        Ok(s) => s,
        Err(e) => return format!("refuse: {e}"),
    };
    match migrator::plan(&source, &target, config.force_migration) {
        migrator::Plan::AlreadyMigrated(r) if r.tombstone_pending => {
            "retry the pending tombstone, then open the stores on SQL".into()
        }
        migrator::Plan::AlreadyMigrated(_) => "open the stores on SQL".into(),
        _ if defer && matches!(status, Status::Tombstoned(_)) => {
            "refuse: the key-value database is tombstoned and migration is deferred".into()
        }
        _ if defer => "open the stores on the key-value database (migration deferred)".into(),
        migrator::Plan::Refuse(e) => format!("refuse: {e}"),
        migrator::Plan::Migrate if matches!(status, Status::Tombstoned(_)) => {
            "migrate again from the tombstoned key-value database (the SQL database was lost), then open on SQL".into()
        }
        // As `Stores::open` does with `migration = "online"`: a live
        // key-value database moves in the background.
        migrator::Plan::Migrate
            if config.migration == MigrationPolicy::Online && matches!(status, Status::Live(_)) =>
        {
            format!(
                "{}open the stores on the key-value database and migrate it into SQL in the \
                 background, then switch the stores to SQL after a pause of writers of at most \
                 {} ms and tombstone it (online migration)",
                if target.staged.is_some() {
                    "discard the staged copy of an online migration that did not finish, then "
                } else {
                    ""
                },
                config.online_pause_budget.as_millis()
            )
        }
        migrator::Plan::Migrate if target.staged.is_some() => {
            "discard the staged copy of an online migration that did not finish, then migrate the \
             key-value database into SQL, tombstone it, and open the stores on SQL"
                .into()
        }
        migrator::Plan::Migrate => {
            "migrate the key-value database into SQL, tombstone it, and open the stores on SQL".into()
        }
    }
}
