//! Writing a dump into a new key-value database, all or nothing.

use std::collections::BTreeMap;
use std::path::Path;

use store_accounts::LastIndexes;
use store_firewall::PrivacyPair;
use store_sessions::SessionId;
use tombstone::KvOptions;

use super::{Dump, DumpError, Parts, unhex};
use crate::{Error, ImportRefusal, Result};

/// Writes `dump` into a new key-value database at `dir`, record by record
/// as it is: formats and the data contract are checked, business rules are
/// not, so any state a node had (legacy shapes included) can be reproduced.
///
/// All or nothing: every record is parsed and checked, and duplicates of
/// every keyed record are refused (naming both), before anything is
/// written; the database is then written into a hidden sibling directory
/// that is renamed to `dir` only when complete, so a refused or interrupted
/// import leaves nothing at `dir`.
///
/// Errors: `dir` already holds a database or other files; a record does not
/// parse, breaks the contract, or appears twice (the error names it).
pub async fn import(dump: &Dump, dir: &Path) -> Result<()> {
    if tombstone::holds_database(dir) {
        return Err(Error::ImportRefused {
            dir: dir.to_path_buf(),
            reason: ImportRefusal::HoldsDatabase,
        });
    }
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::ImportRefused {
            dir: dir.to_path_buf(),
            reason: ImportRefusal::NotEmpty,
        });
    }
    let parsed = parse_for_import(dump)?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dir.file_name().ok_or_else(|| Error::ImportRefused {
        dir: dir.to_path_buf(),
        reason: ImportRefusal::NotADirectoryName,
    })?;
    let partial = parent.join(format!(
        ".{}.importing-{:016x}",
        name.to_string_lossy(),
        rand::random::<u64>()
    ));
    let written = write_import(parsed, &partial).await;
    let result = written.and_then(|()| {
        std::fs::rename(&partial, dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

/// The first key that appears twice, with the positions of both.
fn duplicate<K: Ord + Clone>(keys: impl Iterator<Item = K>) -> Option<(K, usize, usize)> {
    let mut seen = BTreeMap::new();
    for (i, k) in keys.enumerate() {
        if let Some(first) = seen.insert(k.clone(), i) {
            return Some((k, first, i));
        }
    }
    None
}

/// Refuses a list in which a key appears twice; keys are compared whole,
/// and shown shortened.
fn refuse_duplicate<K: Ord + Clone + std::fmt::Display>(
    what: &str,
    keys: impl Iterator<Item = K>,
) -> Result<()> {
    match duplicate(keys) {
        None => Ok(()),
        Some((k, first, second)) => Err(DumpError::Duplicate {
            what: what.to_owned(),
            key: store_contract::shown(&k.to_string()).to_string(),
            first: first + 1,
            second: second + 1,
        }
        .into()),
    }
}

fn parse_for_import(dump: &Dump) -> Result<Parts> {
    for a in &dump.accounts {
        let rec = format!("account {}", a.id);
        refuse_duplicate(&format!("{rec}: invoice"), a.invoices.iter())?;
        refuse_duplicate(
            &format!("{rec}: payment"),
            a.payments.iter().map(|p| &p.hash),
        )?;
    }
    refuse_duplicate("account", dump.accounts.iter().map(|a| &a.id))?;
    refuse_duplicate(
        "session with local key",
        dump.sessions.iter().map(|s| &s.local_public_key),
    )?;
    refuse_duplicate(
        "kv-store entry",
        dump.kv_entries.iter().map(|e| {
            format!(
                "{}/{:?}/{}/{:?}/{:?}",
                if e.perm { "perm" } else { "temp" },
                e.rule,
                e.group.as_deref().unwrap_or("global"),
                e.feature,
                e.key
            )
        }),
    )?;
    refuse_duplicate(
        "privacy pair (group/real value)",
        dump.privacy_pairs
            .iter()
            .map(|p| format!("{}/{:?}", p.group, p.real)),
    )?;
    refuse_duplicate(
        "privacy pair (group/pseudo value)",
        dump.privacy_pairs
            .iter()
            .map(|p| format!("{}/{:?}", p.group, p.pseudo)),
    )?;
    refuse_duplicate(
        "action with locator",
        dump.actions.iter().map(|a| a.locator),
    )?;
    let accounts = dump
        .accounts
        .iter()
        .map(|a| {
            let a = a.to_account()?;
            a.check()?;
            Ok(a)
        })
        .collect::<Result<Vec<_>>>()?;
    let last_indexes = match dump.last_indexes {
        None => None,
        Some(i) => {
            store_contract::number(i.add_index)
                .and(store_contract::number(i.settle_index))
                .map_err(|violation| DumpError::Contract {
                    record: "last indexes".into(),
                    violation,
                })?;
            Some(LastIndexes {
                add_index: i.add_index,
                settle_index: i.settle_index,
            })
        }
    };
    let sessions = dump
        .sessions
        .iter()
        .map(|s| {
            let s = s.to_session()?;
            s.check()?;
            Ok(s)
        })
        .collect::<Result<Vec<_>>>()?;
    let entries = dump
        .kv_entries
        .iter()
        .map(|e| {
            let e = e.to_entry()?;
            e.check()?;
            Ok(e)
        })
        .collect::<Result<Vec<_>>>()?;
    let pairs = dump
        .privacy_pairs
        .iter()
        .map(|p| {
            let p = PrivacyPair {
                group: SessionId(unhex("privacy pair", "group", &p.group)?),
                real: p.real.clone(),
                pseudo: p.pseudo.clone(),
            };
            p.check()?;
            Ok(p)
        })
        .collect::<Result<Vec<_>>>()?;
    let actions = dump
        .actions
        .iter()
        .map(|a| {
            let a = a.to_action()?;
            a.check()?;
            Ok(a)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Parts {
        accounts,
        last_indexes,
        sessions,
        entries,
        pairs,
        actions,
    })
}

async fn write_import(p: Parts, dir: &Path) -> Result<()> {
    let kv = tombstone::KvDb::open(dir, &KvOptions::default())?;
    let accounts = store_accounts::KvStore::open(&kv)?;
    accounts.import_accounts(p.accounts).await?;
    if let Some(i) = p.last_indexes {
        store_accounts::Store::store_last_indexes(&accounts, i).await?;
    }
    store_sessions::KvStore::open(&kv)?
        .import_sessions(p.sessions)
        .await?;
    let firewall = store_firewall::KvStore::open(&kv)?;
    firewall.import_entries(p.entries).await?;
    firewall.import_pairs(p.pairs).await?;
    store_actions::KvStore::open(&kv)?
        .import_actions(p.actions)
        .await?;
    kv.flush()?;
    Ok(())
}
