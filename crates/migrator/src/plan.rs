//! The decision (docs/design.md §3.2): what a run, an open and `nodestore
//! status` do with a source and a target, from the facts of both sides.

use std::path::{Path, PathBuf};

use sqldb::Db;
use sqldb::migrate::Preflight;
use sqldb::schema::KV_TO_SQL_VERSION;
use tombstone::{KvOptions, MigrationSource, Status};

use crate::run::blocking;
use crate::staging::{self, StagedCopy};
use crate::{Error, Failure, MigrationRecord, records};

/// What the decision rule knows of the source.
#[derive(Debug, Clone)]
pub struct SourceFacts {
    /// Its directory.
    pub path: PathBuf,
    /// Its identity.
    pub identity: [u8; 16],
    /// Its write sequence (0 for a format 1 database).
    pub write_seq: u64,
    /// Live or retired.
    pub status: Status,
    /// Why no node can open the source, when reading it found that sled
    /// would panic on it (docs/sled-format.md §5) or that sled's view of it
    /// lost its metadata: the migration then leaves it as it is rather than
    /// write a mark through sled (docs/design.md §5.6).
    pub sled_cannot_open: Option<String>,
    /// Writes its sidecar recorded as durable are missing (lost at the
    /// log's end, docs/design.md §2.3): damage that no read meets.
    pub writes_lost: bool,
}

impl SourceFacts {
    /// The facts of an open source: the one place they are read.
    ///
    /// Errors: the source has no identity, or its metadata cannot be read.
    pub fn of(source: &MigrationSource) -> Result<SourceFacts, Error> {
        Ok(SourceFacts {
            path: source.path().to_path_buf(),
            identity: source
                .identity()?
                .ok_or_else(|| Error::NoIdentity(source.path().to_path_buf()))?,
            write_seq: source.write_seq()?.unwrap_or(0),
            status: source.status().clone(),
            sled_cannot_open: source.sled_cannot_open(),
            writes_lost: crate::check::lost_writes(source)?.is_some(),
        })
    }
}

/// What the decision rule knows of the target.
#[derive(Debug, Clone)]
pub struct TargetFacts {
    /// Its description (see [`sqldb::Db::describe`]).
    pub description: String,
    /// Its identity, once schema step 1 ran.
    pub identity: Option<[u8; 16]>,
    /// True when the key-value step is applied and no online migration's
    /// copy is staged: the target's data is the truth.
    pub migrated: bool,
    /// Its migration records.
    pub records: Vec<MigrationRecord>,
    /// The copy of an online migration that did not finish, which the
    /// next migration discards (docs/design.md §7.3).
    pub staged: Option<StagedCopy>,
    /// Made by Lightning Terminal (litd) at this schema version, and
    /// adopted by the next schema run (`sqldb::litd`).
    pub litd: Option<i64>,
    /// Neither nodestore nor litd made it: no schema at all yet.
    pub empty: bool,
}

/// What to do with a source and a target.
#[derive(Debug)]
pub enum Plan {
    /// Migrate the source into the target.
    Migrate,
    /// The target holds this source's data already (this record).
    AlreadyMigrated(Box<MigrationRecord>),
    /// Refuse, for this reason.
    Refuse(Error),
}

/// The one rule deciding what a run (and `Stores::open`, and `nodestore
/// status`) does with a source and a target (docs/design.md §3.2).
pub fn plan(source: &SourceFacts, target: &TargetFacts, force: bool) -> Plan {
    if let Some(version) = target.litd {
        return Plan::Refuse(Error::TargetMadeByLitd {
            target: target.description.clone(),
            version,
            path: source.path.clone(),
        });
    }
    if target.migrated {
        return match target
            .records
            .iter()
            .rev()
            .find(|r| r.source_identity == source.identity)
        {
            Some(r) if r.source_write_seq == source.write_seq => {
                Plan::AlreadyMigrated(Box::new(r.clone()))
            }
            Some(r) => Plan::Refuse(Error::SourceChangedSinceMigration {
                path: source.path.clone(),
                target: target.description.clone(),
                migrated: r.source_write_seq,
                now: source.write_seq,
            }),
            None => Plan::Refuse(Error::TargetHoldsOtherData {
                target: target.description.clone(),
                path: source.path.clone(),
                identity: source.identity,
                others: target
                    .records
                    .iter()
                    .map(|r| (r.source_path.clone(), r.source_identity))
                    .collect(),
            }),
        };
    }
    if let Some(staged) = &target.staged {
        // Not data yet, but another node's migration on its way: only this
        // source's next migration (or a forced one) discards it.
        if staged.source_identity != source.identity && !force {
            return Plan::Refuse(Error::TargetHoldsOtherData {
                target: target.description.clone(),
                path: source.path.clone(),
                identity: source.identity,
                others: vec![(staged.source_path.clone(), staged.source_identity)],
            });
        }
    }
    if let Status::Tombstoned(mark) = &source.status {
        let same_database =
            mark.target_identity.is_some() && mark.target_identity == target.identity;
        // The database the tombstone names was lost and made again at the
        // same place: a re-run from the retired source is the way back.
        let same_place = mark.target == target.description;
        if !(same_database || same_place || force) {
            return Plan::Refuse(Error::MigratedElsewhere {
                path: source.path.clone(),
                mark: Box::new(mark.clone()),
                here: target.description.clone(),
            });
        }
    }
    Plan::Migrate
}

/// What the decision rule needs of the key-value database at `path`, read
/// without changing it, past damage (a salvaging read, as the migration's
/// own): a source a migration with `--accept-damaged` moved is known as
/// that source afterwards, whatever sled would make of it.
///
/// Errors: the database is missing, in use, or unreadable.
pub async fn inspect_source(path: &Path) -> Result<SourceFacts, Error> {
    let p = path.to_path_buf();
    let opts = KvOptions {
        salvage: true,
        ..KvOptions::default()
    };
    blocking(move || SourceFacts::of(&MigrationSource::open(&p, &opts)?)).await
}

/// What the decision rule needs of a SQL database, read without changing
/// it.
///
/// Errors: the database refuses the preflight (foreign or newer), or cannot
/// be read.
pub async fn inspect_target(db: &Db) -> Result<TargetFacts, Error> {
    target_facts(db).await.map(|(t, _)| t).map_err(|f| f.error)
}

/// What the decision needs of the target, and its preflight.
pub(crate) async fn target_facts(db: &Db) -> Result<(TargetFacts, Preflight), Failure> {
    let pre = crate::schema::runner()
        .preflight(db)
        .await
        .map_err(|e| Failure::before_any_write(Error::Schema(e)))?;
    let records = if pre.has(KV_TO_SQL_VERSION) {
        records(db).await.map_err(Failure::before_any_write)?
    } else {
        Vec::new()
    };
    // An online copy is staged from its first committed piece, before the
    // key-value step is recorded (docs/design.md §7.4).
    let staged = staging::staged(db)
        .await
        .map_err(Failure::before_any_write)?;
    Ok((
        TargetFacts {
            description: db.describe(),
            identity: pre.identity,
            migrated: pre.has(KV_TO_SQL_VERSION) && staged.is_none(),
            records,
            staged,
            litd: pre.litd,
            empty: pre.applied.is_empty() && pre.litd.is_none(),
        },
        pre,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Report;
    use chrono::Utc;
    use tombstone::Mark;

    fn source(status: Status) -> SourceFacts {
        SourceFacts {
            path: PathBuf::from("/kv"),
            identity: [1; 16],
            write_seq: 40,
            status,
            sled_cannot_open: None,
            writes_lost: false,
        }
    }

    fn mark(target: &str, identity: Option<[u8; 16]>) -> Status {
        Status::Tombstoned(Mark {
            marked_at: Utc::now(),
            nodestore_version: "0".into(),
            target: target.into(),
            target_identity: identity,
        })
    }

    fn target(description: &str, identity: [u8; 16], records: Vec<MigrationRecord>) -> TargetFacts {
        TargetFacts {
            description: description.into(),
            identity: Some(identity),
            migrated: !records.is_empty(),
            records,
            staged: None,
            litd: None,
            empty: false,
        }
    }

    fn record(identity: [u8; 16], seq: u64) -> MigrationRecord {
        MigrationRecord {
            source_path: "/kv".into(),
            source_identity: identity,
            source_write_seq: seq,
            migrated_at: Utc::now(),
            nodestore_version: "0".into(),
            tombstone_pending: false,
            report: Report::default(),
            accepted_damage: Vec::new(),
        }
    }

    const HERE: &str = "postgres://u@/db?host=/run/pg&port=5433";
    const ELSEWHERE: &str = "postgres://u@localhost:5432/db";

    #[test]
    fn a_live_source_into_an_empty_target_migrates() {
        let p = plan(
            &source(Status::Live(2)),
            &target(HERE, [9; 16], vec![]),
            false,
        );
        assert!(matches!(p, Plan::Migrate), "{p:?}");
    }

    #[test]
    fn already_migrated_needs_the_same_identity_and_write_sequence() {
        let t = target(HERE, [9; 16], vec![record([1; 16], 40)]);
        assert!(matches!(
            plan(&source(Status::Live(2)), &t, false),
            Plan::AlreadyMigrated(_)
        ));
        let later = SourceFacts {
            write_seq: 41,
            ..source(Status::Live(2))
        };
        assert!(matches!(
            plan(&later, &t, false),
            Plan::Refuse(Error::SourceChangedSinceMigration {
                migrated: 40,
                now: 41,
                ..
            })
        ));
        let other = target(HERE, [9; 16], vec![record([2; 16], 40)]);
        assert!(
            matches!(
                plan(&source(Status::Live(2)), &other, true),
                Plan::Refuse(Error::TargetHoldsOtherData { .. })
            ),
            "force never mixes two sources"
        );
    }

    #[test]
    fn a_staged_copy_is_discarded_only_for_its_own_source_unless_forced() {
        let staged = TargetFacts {
            migrated: false,
            staged: Some(StagedCopy {
                source_path: "/node/kv".into(),
                source_identity: [1; 16],
                staged_at: Utc::now(),
            }),
            ..target(HERE, [9; 16], vec![])
        };
        assert!(matches!(
            plan(&source(Status::Live(2)), &staged, false),
            Plan::Migrate
        ));
        let other = SourceFacts {
            identity: [2; 16],
            ..source(Status::Live(2))
        };
        assert!(matches!(
            plan(&other, &staged, false),
            Plan::Refuse(Error::TargetHoldsOtherData { .. })
        ));
        assert!(matches!(plan(&other, &staged, true), Plan::Migrate));
    }

    #[test]
    fn a_retired_source_goes_back_only_to_its_own_target_unless_forced() {
        let empty_here = TargetFacts {
            migrated: false,
            ..target(HERE, [9; 16], vec![])
        };
        // The same database (by identity), whatever its address now.
        let moved = TargetFacts {
            description: ELSEWHERE.into(),
            ..empty_here.clone()
        };
        assert!(matches!(
            plan(&source(mark(HERE, Some([9; 16]))), &moved, false),
            Plan::Migrate
        ));
        // A new database at the address the tombstone names: the old one was lost.
        assert!(matches!(
            plan(&source(mark(HERE, Some([8; 16]))), &empty_here, false),
            Plan::Migrate
        ));
        // Another database at another address (another socket and port): a fork.
        let elsewhere = TargetFacts {
            identity: Some([7; 16]),
            ..moved.clone()
        };
        assert!(matches!(
            plan(&source(mark(HERE, Some([8; 16]))), &elsewhere, false),
            Plan::Refuse(Error::MigratedElsewhere { .. })
        ));
        assert!(matches!(
            plan(&source(mark(HERE, Some([8; 16]))), &elsewhere, true),
            Plan::Migrate
        ));
    }
}
