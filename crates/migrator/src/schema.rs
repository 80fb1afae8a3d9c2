//! nodestore's SQL schema: the one ordered list of steps the runner
//! ([`sqldb::migrate::Migrator`]) applies, composed here from the steps each
//! crate declares beside the tables it owns (docs/design.md §3.1).
//!
//! | version | step | declared in |
//! |---|---|---|
//! | 1 | `nodestore` | `sqldb::schema::NODESTORE` |
//! | 2 | `accounts` | `store_accounts::sql::schema::STEP` |
//! | 3 | `sessions` | `store_sessions::sql::schema::STEP` |
//! | 4, 5 | `kvstores`, `privacy_pairs` | `store_firewall::sql::schema` |
//! | 6 | `actions` | `store_actions::sql::schema::STEP` |
//! | 7 | `kvdb_to_sql` (code) | `sqldb::schema::KV_TO_SQL`; this crate's [`KvToSql`](crate::KvToSql) runs it |
//! | 8, 9 | the actions listing indexes | `store_actions::sql::schema` |
//! | 10 | `online_staging` | [`crate::staging::STEP`] |
//! | 11 | `sqlite_go_time_text` (builtin) | `sqldb::schema::SQLITE_GO_TIME_TEXT` |
//!
//! The migrator composes them because it is the crate that depends on
//! every store; a store's own tests get the same list through `testkit`.
//! A step's version and name never change once released, and the files
//! stay in `migrations/` (see its README).

use sqldb::migrate::Migrator;
use sqldb::schema::{KV_TO_SQL, NODESTORE, SQLITE_GO_TIME_TEXT, Step};

/// Every step of nodestore's schema, in order.
pub static STEPS: &[Step] = &[
    NODESTORE,
    store_accounts::sql::schema::STEP,
    store_sessions::sql::schema::STEP,
    store_firewall::sql::schema::KVSTORES_STEP,
    store_firewall::sql::schema::PRIVACY_PAIRS_STEP,
    store_actions::sql::schema::STEP,
    KV_TO_SQL,
    store_actions::sql::schema::LIST_INDEXES_STEP,
    store_actions::sql::schema::ACTOR_METHOD_INDEXES_STEP,
    crate::staging::STEP,
    SQLITE_GO_TIME_TEXT,
];

/// A runner for nodestore's schema, with no code step supplied yet (add
/// one with [`Migrator::code_step`]; [`KvToSql`](crate::KvToSql) is the
/// migration's).
pub fn runner() -> Migrator<'static> {
    Migrator::with_steps(STEPS)
}

/// Every table nodestore's steps create, with the runner's tracking
/// tables.
pub fn known_tables() -> Vec<String> {
    sqldb::schema::known_tables_of(STEPS)
}

#[cfg(test)]
mod tests {
    use sqldb::schema::{EARLIER_CHECKSUMS, KV_TO_SQL_VERSION, StepKind, tables_of_steps};

    use super::*;

    #[test]
    fn steps_are_contiguous_and_named_once() {
        for (i, step) in STEPS.iter().enumerate() {
            assert_eq!(
                step.version,
                i as i64 + 1,
                "step {} out of order",
                step.name
            );
        }
        let mut names: Vec<_> = STEPS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), STEPS.len(), "step names must be unique");
        assert_eq!(STEPS[KV_TO_SQL_VERSION as usize - 1].kind, StepKind::Code);
    }

    /// Each step's checksum, as every database nodestore made records it:
    /// a change here is an edit of an applied step, which the runner
    /// refuses on every existing database. Add a step instead.
    #[test]
    fn checksums_are_the_recorded_ones() {
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let found: Vec<(i64, &str, String)> = STEPS
            .iter()
            .map(|s| (s.version, s.name, hex(s.checksum())))
            .collect();
        let expected: Vec<(i64, &str, &str)> = vec![
            (
                1,
                "nodestore",
                "47631681e1631bc6dab3d50a428586ed2a763862411ba0d1ae4581f3df546cbf",
            ),
            (
                2,
                "accounts",
                "5e95c7facf1dd469fc257ccae7b788c1e017a21e40a36d9c21c87ad65d9f3b6e",
            ),
            (
                3,
                "sessions",
                "02073561e5fe00bc921816fcb44d7d4ce1ed268f62705407b89f98a686d4d651",
            ),
            (
                4,
                "kvstores",
                "9e58c687fc02ff647da97db0e15adaccca2106e0d15d1dac176f84cd145e3145",
            ),
            (
                5,
                "privacy_pairs",
                "0ea48b208fdb3cb17bb945f8f4719ffe999d03a84b2e235af615d7b71b188dde",
            ),
            (
                6,
                "actions",
                "fce29b35615ada1168b682a422a813204fae980298bbdb5f4b8d5e23811b5261",
            ),
            (
                7,
                "kvdb_to_sql",
                "1734444dd15fd1c0e23ae705a9999532f49a7f8c5bba7439ea43d0b0b088b6e3",
            ),
            (
                8,
                "actions_list_indexes",
                "c6ea6ed6c9ded9a2105843eddc24c56a9106ecce7960a72f1712718c7078ed3a",
            ),
            (
                9,
                "actions_actor_method_indexes",
                "11b63ef7f3e29679335f66a65affedf641b1b49ae93a1c18ae54188c3a129ace",
            ),
            (
                10,
                "online_staging",
                "8d48e6e347ea2fc5310daa5bf3a0ee7ecd784a1e90221589796f5d5bb7938594",
            ),
            (
                11,
                "sqlite_go_time_text",
                "c6e3042bd2298620ea2432223c01e9dd849e831fb45ef2542dee3a6d576a93a3",
            ),
        ];
        let expected: Vec<(i64, &str, String)> = expected
            .into_iter()
            .map(|(v, n, h)| (v, n, h.to_owned()))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn known_tables_are_every_created_table() {
        let t = known_tables();
        for name in [
            "nodestore_schema_steps",
            "nodestore_database",
            "nodestore_kv_migrations",
            "nodestore_online_staging",
            "accounts",
            "kvstores",
            "actions",
            "session_privacy_flags",
        ] {
            assert!(t.iter().any(|x| x == name), "{name} in {t:?}");
        }
        assert!(!t.iter().any(|x| x == "if"), "{t:?}");
    }

    /// Every file in `migrations/` is one step, under its version and name,
    /// and every SQL step is a file: a file no crate declares fails here
    /// instead of being skipped silently.
    #[test]
    fn every_migration_file_is_exactly_one_step() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let mut files: Vec<(i64, String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".sql"))
            .map(|f| {
                let (num, rest) = f.split_once('_').expect("NNNN_name.sql");
                let name = rest.trim_end_matches(".sql").to_owned();
                let body = std::fs::read_to_string(dir.join(&f)).unwrap();
                (num.parse().expect("numeric prefix"), name, body)
            })
            .collect();
        files.sort();
        let sql_steps: Vec<(i64, String, String)> = STEPS
            .iter()
            .filter_map(|s| match s.kind {
                StepKind::Sql(sql) => Some((s.version, s.name.to_owned(), sql.to_owned())),
                StepKind::Code | StepKind::Builtin(_) => None,
            })
            .collect();
        assert_eq!(files, sql_steps);
    }

    #[test]
    fn litd_tables_and_columns_are_read_from_the_steps() {
        let t = tables_of_steps(STEPS, 2..=6);
        assert_eq!(
            t.get("account_indices"),
            Some(&vec!["name".to_owned(), "value".to_owned()])
        );
        let actions = &t["actions"];
        assert_eq!(actions.first().map(String::as_str), Some("id"));
        assert!(actions.iter().any(|c| c == "error_reason"), "{actions:?}");
        assert!(t.contains_key("kvstores") && t.contains_key("privacy_pairs"));
        assert!(!t.contains_key("nodestore_database"));
    }

    /// The checksums databases recorded before the steps moved to the
    /// crates that own them are still this list's: moving a declaration
    /// is not an edit.
    #[test]
    fn earlier_whole_file_checksums_are_accepted_for_their_steps_only() {
        for (version, name, hex) in EARLIER_CHECKSUMS {
            let step = STEPS
                .iter()
                .find(|s| s.version == *version && s.name == *name)
                .expect("an earlier checksum names a step");
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            assert!(step.accepts(&bytes));
            assert!(step.accepts(&step.checksum()));
            let other = STEPS.iter().find(|s| s.version != *version).unwrap();
            assert!(!other.accepts(&bytes), "accepted for another step");
        }
        assert!(!STEPS[0].accepts(&[0u8; 32]));
    }
}
