//! What a node's databases are, and what [`Stores::open`](crate::Stores::open)
//! would do with them.

use std::path::PathBuf;

use serde::Serialize;

use migrator::schema::STEPS;
use tombstone::Status;

use crate::decide::{SqlSide, decide};
use crate::{BackendConfig, Config, Result};

/// The key-value database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvStatus {
    /// Its directory.
    pub path: PathBuf,
    /// What it is.
    pub state: KvState,
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

/// What a key-value database is (`--json` writes the snake-case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvState {
    /// No database at the path.
    Missing,
    /// A directory sled made, holding nothing nodestore wrote.
    Empty,
    /// A database a node runs on.
    Live,
    /// Retired: migrated into SQL.
    Tombstoned,
    /// A running node has it open.
    InUse,
}

impl std::fmt::Display for KvState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvState::Missing => "missing",
            KvState::Empty => "empty",
            KvState::Live => "live",
            KvState::Tombstoned => "tombstoned",
            KvState::InUse => "in_use",
        })
    }
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
    let kv = kv_state
        .as_ref()
        .map(|(path, s)| kv_status(path, s.as_ref()));
    if let BackendConfig::Sqlite { file } = &config.backend
        && !file.exists()
    {
        // Reading only: report a database that does not exist yet without
        // creating it.
        return Ok(not_created(config, kv_state.as_ref(), kv, file).await);
    }
    let Some(db) = crate::connect_read_only(&config.backend).await? else {
        let open_would = match kv.as_ref().map(|k| k.state) {
            Some(KvState::Tombstoned) => {
                "refuse: the key-value database was migrated to SQL".to_owned()
            }
            _ => "open the stores on the key-value database".to_owned(),
        };
        return Ok(NodeStatus {
            kv,
            sql: None,
            open_would,
        });
    };
    let applied = migrator::schema::runner().applied(&db).await?;
    let notes = migrator::schema::runner().notes(&db).await?;
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
    let open_would = match migrator::inspect_target(&db).await {
        Ok(target) => would(config, kv_state.as_ref(), SqlSide::Present(&target)).await,
        Err(e) => format!("refuse: {e}"),
    };
    Ok(NodeStatus {
        kv,
        sql: Some(sql),
        open_would,
    })
}

/// A key-value database's status from what `tombstone::status` read.
fn kv_status(path: &std::path::Path, s: Option<&Status>) -> KvStatus {
    let (state, format, at, target) = match s {
        None => (KvState::Missing, None, None, None),
        Some(Status::Empty) => (KvState::Empty, None, None, None),
        Some(Status::Live(f)) => (KvState::Live, Some(*f), None, None),
        Some(Status::Tombstoned(m)) => (
            KvState::Tombstoned,
            None,
            Some(crate::dump::time_text(m.marked_at)),
            Some(m.target.clone()),
        ),
    };
    KvStatus {
        path: path.to_path_buf(),
        state,
        format,
        tombstoned_at: at,
        tombstone_target: target,
        migration_running: tombstone::migration_running(path),
    }
}

/// The status of a node whose SQLite file does not exist yet: every step
/// pending, and what opening would do with it as it would find it (an
/// empty database at this path).
async fn not_created(
    config: &Config,
    kv_state: Option<&(PathBuf, Option<Status>)>,
    kv: Option<KvStatus>,
    file: &std::path::Path,
) -> NodeStatus {
    let target = migrator::TargetFacts {
        description: format!("sqlite:{}", file.display()),
        identity: None,
        migrated: false,
        records: Vec::new(),
        staged: None,
        litd: None,
        empty: true,
    };
    let open_would = would(config, kv_state, SqlSide::NotCreated(&target)).await;
    NodeStatus {
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
    }
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
        state: KvState::InUse,
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

/// What `Stores::open` would do ([`crate::decide`]) with the key-value
/// database (read now) and the SQL database: the plan's sentence, or the
/// refusal to read either.
async fn would(
    config: &Config,
    kv: Option<&(PathBuf, Option<Status>)>,
    sql: SqlSide<'_>,
) -> String {
    let source = match kv {
        Some((dir, Some(_))) => match migrator::inspect_source(dir).await {
            Ok(s) => Some(s),
            Err(e) => return format!("refuse: {e}"),
        },
        _ => None,
    };
    decide(config, source.as_ref(), sql).to_string()
}
