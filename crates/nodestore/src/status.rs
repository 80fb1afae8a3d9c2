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
    /// `missing`, `empty`, `live` or `tombstoned`.
    pub state: String,
    /// The format version, when live.
    pub format: Option<u32>,
    /// When it was tombstoned (RFC 3339).
    pub tombstoned_at: Option<String>,
    /// Into which SQL target.
    pub tombstone_target: Option<String>,
}

/// The SQL database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SqlStatus {
    /// The target, without password.
    pub target: String,
    /// The schema steps applied, as `version name`.
    pub steps_applied: Vec<String>,
    /// The schema steps this binary has that are not applied yet.
    pub steps_pending: Vec<String>,
    /// The migration records, one line each.
    pub migrations: Vec<String>,
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
        Some(dir) => Some((dir.clone(), tombstone::status(dir)?)),
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
                Some(
                    m.marked_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ),
                Some(m.target.clone()),
            ),
        };
        KvStatus {
            path: path.clone(),
            state: state.into(),
            format,
            tombstoned_at: at,
            tombstone_target: target,
        }
    });
    let Some(db) = crate::connect(&config.backend).await? else {
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
    let records = migrator::records(&db)
        .await
        .map_err(|e| crate::Error::Store(e.to_string()))?;
    let sql = SqlStatus {
        target: db.describe(),
        steps_applied: applied
            .iter()
            .map(|s| format!("{} {}", s.version, s.name))
            .collect(),
        steps_pending: STEPS
            .iter()
            .filter(|s| !applied.iter().any(|a| a.version == s.version))
            .map(|s| format!("{} {}", s.version, s.name))
            .collect(),
        migrations: records
            .iter()
            .map(|r| {
                format!(
                    "from {} on {}{}",
                    r.source_path,
                    r.migrated_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    if r.tombstone_pending {
                        " (tombstone pending)"
                    } else {
                        ""
                    }
                )
            })
            .collect(),
    };
    let migrated = applied.iter().any(|s| s.version == KV_TO_SQL_VERSION);
    let pending = records.iter().any(|r| r.tombstone_pending);
    let defer = config.migration == MigrationPolicy::Defer;
    let open_would = match (kv.as_ref().map(|k| k.state.as_str()), migrated) {
        (Some("live" | "empty"), true) if pending => {
            "retry the pending tombstone, then open the stores on SQL".into()
        }
        (Some("live" | "empty"), true) if defer => {
            "open the stores on the key-value database (migration deferred)".into()
        }
        (Some("live" | "empty"), true) => {
            "refuse: a live key-value database beside a migrated SQL database".into()
        }
        (Some("live" | "empty"), false) if defer => {
            "open the stores on the key-value database (migration deferred)".into()
        }
        (Some("live" | "empty"), false) => {
            "migrate the key-value database into SQL, tombstone it, and open the stores on SQL"
                .into()
        }
        (Some("tombstoned"), false) if defer => {
            "refuse: the key-value database is tombstoned and migration is deferred".into()
        }
        (Some("tombstoned"), false) => {
            let target = kv
                .as_ref()
                .and_then(|k| k.tombstone_target.clone())
                .unwrap_or_default();
            if target == sql.target || config.force_migration {
                "migrate again from the tombstoned key-value database (the SQL database was lost), then open on SQL".into()
            } else {
                format!(
                    "refuse: the key-value database was migrated into {target}, not {}",
                    sql.target
                )
            }
        }
        _ if sql.steps_pending.is_empty() => "open the stores on SQL".into(),
        _ => "apply the pending schema steps, then open the stores on SQL".into(),
    };
    Ok(NodeStatus {
        kv,
        sql: Some(sql),
        open_would,
    })
}
