//! The open decision (docs/design.md §3.2, §7): one pure function from the
//! configuration and what both databases hold to what opening the stores
//! does. [`Stores::open`](crate::Stores::open) carries the plan out and
//! `nodestore status` tells it (`open_would`, the plan's `Display`), so the
//! two cannot drift apart.
//!
//! The migration's own rule ([`migrator::plan`]) decides between a source
//! and a target; this adds what only a node's open knows: the policy
//! (`auto`, `defer`, `online`), a SQL database with no key-value database
//! named, and the schema work a database needs before it is served.

use std::fmt;
use std::time::Duration;

use migrator::schema::STEPS;
use migrator::{Plan, SourceFacts, TargetFacts};
use sqldb::schema::KV_TO_SQL_VERSION;
use tombstone::Status;

use crate::{Config, MigrationPolicy};

/// The SQL side, as far as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub enum SqlSide<'a> {
    /// A SQL database, and what it holds.
    Present(&'a TargetFacts),
    /// A SQLite file that does not exist yet: opening creates it (empty).
    NotCreated(&'a TargetFacts),
}

impl<'a> SqlSide<'a> {
    fn facts(self) -> &'a TargetFacts {
        match self {
            SqlSide::Present(t) | SqlSide::NotCreated(t) => t,
        }
    }
}

/// What opening the stores on a SQL backend does.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenPlan {
    /// No key-value database to migrate: apply what the schema lacks, then
    /// open on SQL.
    OnSql(SchemaWork),
    /// Migration deferred: open on the live key-value database.
    Deferred,
    /// Migrate the key-value database (offline, in one transaction), then
    /// open on SQL.
    Migrate {
        /// From a tombstoned database: its SQL database was lost.
        again: bool,
        /// A staged copy of an online migration that did not finish is
        /// discarded first.
        discard_staged: bool,
        /// The SQLite file does not exist yet and is created.
        create: bool,
    },
    /// Open on the live key-value database and migrate it online, then
    /// switch to SQL (docs/design.md §7).
    MigrateOnline {
        /// A staged copy is discarded first.
        discard_staged: bool,
        /// The longest pause of writers.
        pause_budget: Duration,
    },
    /// The SQL database already holds this key-value database's data:
    /// finish what is left (the tombstone, later steps), open on SQL.
    Finish {
        /// The tombstone is still to be written.
        tombstone_pending: bool,
    },
    /// Refuse to open.
    Refuse(Refusal),
}

/// The schema work before a SQL database is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaWork {
    /// It holds nodestore's data: later steps only, if any.
    UpToDate,
    /// A SQLite file that does not exist yet: created, every step applied.
    Create,
    /// No schema at all yet: every step applied.
    Fresh,
    /// Made by Lightning Terminal (litd) at this schema version: adopted.
    AdoptLitd(i64),
    /// Some steps applied, not the key-value step (no data yet).
    Apply,
}

/// Why opening refuses.
#[derive(Debug)]
#[non_exhaustive]
pub enum Refusal {
    /// The migration's rule refuses this source and target.
    Migration(Box<migrator::Error>),
    /// The SQL database holds an online migration's staged copy, and no
    /// key-value database is named to migrate again.
    StagedWithoutKv {
        /// The key-value database the copy is of.
        kv: String,
    },
    /// The key-value database is tombstoned and migration is deferred.
    RetiredAndDeferred,
}

/// What opening does with `config`, the key-value database it names (its
/// facts; `None` when none is named or none is at the path) and the SQL
/// database. Pure: it reads nothing.
pub fn decide(config: &Config, kv: Option<&SourceFacts>, sql: SqlSide<'_>) -> OpenPlan {
    let target = sql.facts();
    let Some(source) = kv else {
        return if let Some(staged) = &target.staged {
            OpenPlan::Refuse(Refusal::StagedWithoutKv {
                kv: staged.source_path.clone(),
            })
        } else {
            OpenPlan::OnSql(match (sql, target.litd) {
                (SqlSide::NotCreated(_), _) => SchemaWork::Create,
                (_, Some(version)) => SchemaWork::AdoptLitd(version),
                _ if target.migrated => SchemaWork::UpToDate,
                _ if target.empty => SchemaWork::Fresh,
                _ => SchemaWork::Apply,
            })
        };
    };
    let tombstoned = matches!(source.status, Status::Tombstoned(_));
    let defer = config.migration == MigrationPolicy::Defer;
    match migrator::plan(source, target, config.force_migration) {
        Plan::AlreadyMigrated(r) => OpenPlan::Finish {
            tombstone_pending: r.tombstone_pending,
        },
        _ if defer && tombstoned => OpenPlan::Refuse(Refusal::RetiredAndDeferred),
        _ if defer => OpenPlan::Deferred,
        Plan::Refuse(e) => OpenPlan::Refuse(Refusal::Migration(Box::new(e))),
        Plan::Migrate if config.migration == MigrationPolicy::Online && !tombstoned => {
            OpenPlan::MigrateOnline {
                discard_staged: target.staged.is_some(),
                pause_budget: config.online_pause_budget,
            }
        }
        Plan::Migrate => OpenPlan::Migrate {
            again: tombstoned,
            discard_staged: target.staged.is_some(),
            create: matches!(sql, SqlSide::NotCreated(_)),
        },
    }
}

/// What opening does, in a sentence (`nodestore status`'s `open_would`).
impl fmt::Display for OpenPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DISCARD: &str =
            "discard the staged copy of an online migration that did not finish, then ";
        match self {
            OpenPlan::OnSql(work) => work.fmt(f),
            OpenPlan::Deferred => {
                f.write_str("open the stores on the key-value database (migration deferred)")
            }
            OpenPlan::Migrate { again: true, .. } => f.write_str(
                "migrate again from the tombstoned key-value database (the SQL database was \
                 lost), then open on SQL",
            ),
            OpenPlan::Migrate {
                discard_staged,
                create,
                ..
            } => write!(
                f,
                "{}migrate the key-value database into SQL{}, tombstone it, and open the stores \
                 on SQL",
                if *discard_staged { DISCARD } else { "" },
                if *create {
                    " (the SQLite file is created then)"
                } else {
                    ""
                }
            ),
            OpenPlan::MigrateOnline {
                discard_staged,
                pause_budget,
            } => write!(
                f,
                "{}open the stores on the key-value database and migrate it into SQL in the \
                 background, then switch the stores to SQL after a pause of writers of at most \
                 {} ms and tombstone it (online migration)",
                if *discard_staged { DISCARD } else { "" },
                pause_budget.as_millis()
            ),
            OpenPlan::Finish {
                tombstone_pending: true,
            } => f.write_str("retry the pending tombstone, then open the stores on SQL"),
            OpenPlan::Finish { .. } => f.write_str("open the stores on SQL"),
            OpenPlan::Refuse(r) => write!(f, "refuse: {r}"),
        }
    }
}

impl fmt::Display for SchemaWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaWork::UpToDate => f.write_str("open the stores on SQL"),
            SchemaWork::Create => {
                f.write_str("create the SQLite database and open the stores on SQL")
            }
            SchemaWork::Fresh => f.write_str(
                "the database holds no nodestore (or litd) schema: apply every schema step, \
                 then open the stores on SQL",
            ),
            SchemaWork::AdoptLitd(version) => {
                let later: Vec<String> = STEPS
                    .iter()
                    .filter(|s| s.version > KV_TO_SQL_VERSION)
                    .map(|s| s.version.to_string())
                    .collect();
                write!(
                    f,
                    "adopt the database made by Lightning Terminal (litd) at schema version \
                     {version}: apply step 1 (nodestore's bookkeeping), record steps \
                     2-{KV_TO_SQL_VERSION} as adopted (litd's schema holds them; litd's data is \
                     not rewritten), apply steps {}, then open the stores on SQL",
                    later.join(", ")
                )
            }
            SchemaWork::Apply => f.write_str("apply the schema steps, then open the stores on SQL"),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Migration(e) => e.fmt(f),
            Refusal::StagedWithoutKv { kv } => write!(
                f,
                "the SQL database holds the staged copy of an online migration of {kv} that did \
                 not finish; open with that key-value database to migrate again"
            ),
            Refusal::RetiredAndDeferred => {
                f.write_str("the key-value database is tombstoned and migration is deferred")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! One case per configuration and state of both sides: what open does,
    //! and the sentence status says for it.
    use std::path::PathBuf;

    use chrono::Utc;
    use migrator::{MigrationRecord, Report, StagedCopy};
    use tombstone::Mark;

    use super::*;
    use crate::BackendConfig;

    const SOURCE: [u8; 16] = [1; 16];
    const OTHER: [u8; 16] = [2; 16];
    const TARGET: [u8; 16] = [9; 16];
    const HERE: &str = "sqlite:/n/node.db";

    fn config(migration: MigrationPolicy, force: bool) -> Config {
        Config {
            kv_dir: Some(PathBuf::from("/n/kv")),
            migration,
            force_migration: force,
            ..Config::new(BackendConfig::Sqlite {
                file: PathBuf::from("/n/node.db"),
            })
        }
    }

    fn live() -> SourceFacts {
        SourceFacts {
            path: PathBuf::from("/n/kv"),
            identity: SOURCE,
            write_seq: 7,
            status: Status::Live(tombstone::FORMAT_VERSION),
            sled_cannot_open: None,
            writes_lost: false,
        }
    }

    fn tombstoned(into: &str, identity: Option<[u8; 16]>) -> SourceFacts {
        SourceFacts {
            status: Status::Tombstoned(Mark {
                marked_at: Utc::now(),
                nodestore_version: "0".into(),
                target: into.into(),
                target_identity: identity,
            }),
            ..live()
        }
    }

    fn empty() -> TargetFacts {
        TargetFacts {
            description: HERE.into(),
            identity: Some(TARGET),
            migrated: false,
            records: Vec::new(),
            staged: None,
            litd: None,
            empty: false,
        }
    }

    fn migrated(from: [u8; 16], pending: bool) -> TargetFacts {
        TargetFacts {
            migrated: true,
            records: vec![MigrationRecord {
                source_path: "/n/kv".into(),
                source_identity: from,
                source_write_seq: 7,
                migrated_at: Utc::now(),
                nodestore_version: "0".into(),
                tombstone_pending: pending,
                report: Report::default(),
                accepted_damage: Vec::new(),
            }],
            ..empty()
        }
    }

    fn staged(of: [u8; 16]) -> TargetFacts {
        TargetFacts {
            staged: Some(StagedCopy {
                source_path: "/n/kv".into(),
                source_identity: of,
                staged_at: Utc::now(),
            }),
            ..empty()
        }
    }

    fn plan(c: &Config, kv: Option<&SourceFacts>, t: &TargetFacts) -> OpenPlan {
        decide(c, kv, SqlSide::Present(t))
    }

    use MigrationPolicy::{Auto, Defer, Online};

    #[test]
    fn a_live_database_migrates_by_the_policy() {
        let t = empty();
        let auto = plan(&config(Auto, false), Some(&live()), &t);
        assert!(
            matches!(auto, OpenPlan::Migrate { again: false, .. }),
            "{auto:?}"
        );
        assert_eq!(
            auto.to_string(),
            "migrate the key-value database into SQL, tombstone it, and open the stores on SQL"
        );
        let defer = plan(&config(Defer, false), Some(&live()), &t);
        assert!(matches!(defer, OpenPlan::Deferred), "{defer:?}");
        let online = plan(&config(Online, false), Some(&live()), &t);
        assert!(
            matches!(
                online,
                OpenPlan::MigrateOnline {
                    discard_staged: false,
                    ..
                }
            ),
            "{online:?}"
        );
        assert!(online.to_string().contains("at most 1000 ms"), "{online}");
    }

    #[test]
    fn a_migrated_target_is_finished_whatever_the_policy() {
        for policy in [Auto, Defer, Online] {
            let c = config(policy, false);
            let done = plan(
                &c,
                Some(&tombstoned(HERE, Some(TARGET))),
                &migrated(SOURCE, false),
            );
            assert!(
                matches!(
                    done,
                    OpenPlan::Finish {
                        tombstone_pending: false
                    }
                ),
                "{done:?}"
            );
            assert_eq!(done.to_string(), "open the stores on SQL");
            let pending = plan(&c, Some(&live()), &migrated(SOURCE, true));
            assert!(
                matches!(
                    pending,
                    OpenPlan::Finish {
                        tombstone_pending: true
                    }
                ),
                "{pending:?}"
            );
        }
    }

    #[test]
    fn a_tombstoned_database_goes_back_only_to_its_own_target() {
        // Its target lost and made again at the same place: migrate again,
        // offline even under `online` (nothing writes a retired database).
        for policy in [Auto, Online] {
            let again = plan(
                &config(policy, false),
                Some(&tombstoned(HERE, Some(OTHER))),
                &empty(),
            );
            assert!(
                matches!(again, OpenPlan::Migrate { again: true, .. }),
                "{again:?}"
            );
        }
        let elsewhere = plan(
            &config(Auto, false),
            Some(&tombstoned("postgres://db/node", Some(OTHER))),
            &empty(),
        );
        assert!(
            matches!(&elsewhere, OpenPlan::Refuse(Refusal::Migration(e))
                if matches!(**e, migrator::Error::MigratedElsewhere { .. })),
            "{elsewhere:?}"
        );
        assert!(elsewhere.to_string().starts_with("refuse: "), "{elsewhere}");
        let forced = plan(
            &config(Auto, true),
            Some(&tombstoned("postgres://db/node", Some(OTHER))),
            &empty(),
        );
        assert!(
            matches!(forced, OpenPlan::Migrate { again: true, .. }),
            "{forced:?}"
        );
        let deferred = plan(
            &config(Defer, false),
            Some(&tombstoned(HERE, None)),
            &empty(),
        );
        assert!(
            matches!(deferred, OpenPlan::Refuse(Refusal::RetiredAndDeferred)),
            "{deferred:?}"
        );
    }

    #[test]
    fn another_sources_data_is_refused() {
        let other = plan(&config(Auto, false), Some(&live()), &migrated(OTHER, false));
        assert!(
            matches!(&other, OpenPlan::Refuse(Refusal::Migration(e))
                if matches!(**e, migrator::Error::TargetHoldsOtherData { .. })),
            "{other:?}"
        );
    }

    #[test]
    fn a_staged_copy_is_discarded_by_its_own_source_and_refused_without_one() {
        let auto = plan(&config(Auto, false), Some(&live()), &staged(SOURCE));
        assert!(
            matches!(
                auto,
                OpenPlan::Migrate {
                    discard_staged: true,
                    ..
                }
            ),
            "{auto:?}"
        );
        assert!(
            auto.to_string().starts_with("discard the staged copy"),
            "{auto}"
        );
        let online = plan(&config(Online, false), Some(&live()), &staged(SOURCE));
        assert!(
            matches!(
                online,
                OpenPlan::MigrateOnline {
                    discard_staged: true,
                    ..
                }
            ),
            "{online:?}"
        );
        let theirs = plan(&config(Auto, false), Some(&live()), &staged(OTHER));
        assert!(
            matches!(theirs, OpenPlan::Refuse(Refusal::Migration(_))),
            "{theirs:?}"
        );
        let alone = plan(&config(Auto, false), None, &staged(SOURCE));
        assert!(
            matches!(alone, OpenPlan::Refuse(Refusal::StagedWithoutKv { .. })),
            "{alone:?}"
        );
    }

    #[test]
    fn without_a_key_value_database_the_schema_work_is_said() {
        let c = config(Auto, false);
        let fresh = TargetFacts {
            identity: None,
            empty: true,
            ..empty()
        };
        assert!(matches!(
            plan(&c, None, &fresh),
            OpenPlan::OnSql(SchemaWork::Fresh)
        ));
        assert!(matches!(
            plan(&c, None, &migrated(SOURCE, false)),
            OpenPlan::OnSql(SchemaWork::UpToDate)
        ));
        assert!(matches!(
            plan(&c, None, &empty()),
            OpenPlan::OnSql(SchemaWork::Apply)
        ));
        let created = decide(&c, None, SqlSide::NotCreated(&fresh));
        assert!(
            matches!(created, OpenPlan::OnSql(SchemaWork::Create)),
            "{created:?}"
        );
        let with_kv = decide(&c, Some(&live()), SqlSide::NotCreated(&fresh));
        assert!(
            with_kv
                .to_string()
                .contains("(the SQLite file is created then)"),
            "{with_kv}"
        );
    }

    #[test]
    fn a_database_litd_made_is_adopted_without_a_source_and_refused_as_a_target() {
        let litd = TargetFacts {
            identity: None,
            litd: Some(5),
            ..empty()
        };
        let adopt = plan(&config(Auto, false), None, &litd);
        assert!(
            matches!(adopt, OpenPlan::OnSql(SchemaWork::AdoptLitd(5))),
            "{adopt:?}"
        );
        assert!(
            adopt
                .to_string()
                .starts_with("adopt the database made by Lightning Terminal")
        );
        let into = plan(&config(Auto, false), Some(&live()), &litd);
        assert!(
            matches!(&into, OpenPlan::Refuse(Refusal::Migration(e))
                if matches!(**e, migrator::Error::TargetMadeByLitd { .. })),
            "{into:?}"
        );
    }
}
