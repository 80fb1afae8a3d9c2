//! Replaying the firewall data an online migration's writes touched
//! (docs/design.md §7.2), through the copy's own writers.

use std::collections::{BTreeMap, HashMap, HashSet};

use sea_query::{Expr, ExprTrait, Query};
use sqldb::{Tx, TxExt};
use store_firewall::sql::lookup_name;
use store_firewall::sql::schema::{Kvstores, PrivacyPairs};
use store_firewall::{KvEntry, Mode, Scope};
use store_sessions::SessionId;
use store_sessions::sql::schema::Sessions;

use super::{FirewallReport, GroupPairs, Writer, group_ids, write_pairs};

use crate::Error;
use crate::copy::WriteChunk as _;
use crate::shared::{delete_where, rows};

/// Replays firewall data changed while an online migration copied it
/// (docs/design.md §7.2): the temporary stores when they were wiped, then
/// each touched entry, then each touched group's privacy map, read again
/// from the live store and written through the copy's own writers and
/// read-back comparisons.
pub(crate) async fn replay(
    tx: &mut dyn Tx,
    live: &dyn store_firewall::Store,
    temp_wiped: bool,
    entries: &[crate::journal::TouchedEntry],
    (privacy_groups, pairs): (&[SessionId], &[(SessionId, String)]),
    deltas: &mut crate::shared::Deltas,
) -> Result<(), Error> {
    let next_id = crate::shared::next_id(tx, crate::shared::IdTable::Kvstores).await?;
    let mut writer = Writer::replay(next_id);
    if temp_wiped {
        deltas.kv_entries -=
            delete_where(tx, Kvstores::Table, Expr::col(Kvstores::Perm).eq(false)).await?;
        let temp: Vec<KvEntry> = live
            .kv_entries()
            .await
            .map_err(|e| crate::shared::live_error("kv-store entries", e))?
            .into_iter()
            .filter(|e| !e.perm)
            .collect();
        writer.write(tx, temp).await?;
    }
    for chunk in entries.chunks(REPLAY_CHUNK) {
        replay_entries(tx, live, chunk, &mut writer, deltas).await?;
    }
    crate::shared::advance_sequence(tx, crate::shared::IdTable::Kvstores, writer.next_id - 1)
        .await?;
    let report = &mut writer.report;
    deltas.kv_entries += rows(report.kv_entries);
    report.privacy_pairs = 0;
    let done = replay_groups(tx, live, privacy_groups, report, deltas).await?;
    replay_pairs(tx, live, pairs, &done, report).await?;
    deltas.privacy_pairs += rows(report.privacy_pairs);
    Ok(())
}

/// Replays a chunk of touched entries: their rows deleted, then each read
/// again from the live store and written.
async fn replay_entries(
    tx: &mut dyn Tx,
    live: &dyn store_firewall::Store,
    chunk: &[crate::journal::TouchedEntry],
    writer: &mut Writer,
    deltas: &mut crate::shared::Deltas,
) -> Result<(), Error> {
    let wanted: Vec<KvEntry> = chunk
        .iter()
        .map(|t| {
            let global = matches!(t.scope, Scope::Global | Scope::GlobalTemp);
            KvEntry {
                perm: t.scope.is_perm(),
                rule: t.ns.rule.clone(),
                group: (!global).then_some(t.ns.group),
                feature: (!global && !t.ns.feature.is_empty()).then(|| t.ns.feature.clone()),
                key: t.key.clone(),
                value: Vec::new(),
            }
        })
        .collect();
    deltas.kv_entries -= delete_entries(tx, &wanted).await?;
    // The row of a group-scoped entry is whatever the key-value store
    // holds under the id of any session of the group, as the copy reads
    // it (docs/design.md §4.2): each of them is read again.
    let groups = GroupAliases::load(tx, chunk.iter().map(|t| t.ns.group)).await?;
    let mut present = Vec::with_capacity(wanted.len());
    for (t, entry) in chunk.iter().zip(wanted) {
        let aliases = match entry.group {
            Some(g) => groups.of(g),
            None => vec![t.ns.group],
        };
        for alias in aliases {
            let ns = store_firewall::Namespace {
                group: alias,
                ..t.ns.clone()
            };
            if let Some(value) = live_entry(live, ns, t.scope, &t.key).await? {
                present.push(KvEntry {
                    value,
                    group: entry.group.map(|_| alias),
                    ..entry.clone()
                });
            }
        }
    }
    writer.write(tx, present).await?;
    Ok(())
}

/// Replays touched groups' privacy maps whole. A group's map is the pairs
/// stored under the id of any of its sessions (docs/design.md §4.2): the
/// whole group is read again, once however many of its ids were touched.
/// Returns the SQL ids of the groups replayed.
async fn replay_groups(
    tx: &mut dyn Tx,
    live: &dyn store_firewall::Store,
    privacy_groups: &[SessionId],
    report: &mut FirewallReport,
    deltas: &mut crate::shared::Deltas,
) -> Result<HashSet<i64>, Error> {
    let groups = GroupAliases::load(tx, privacy_groups.iter().copied()).await?;
    let mut done = HashSet::new();
    for group in privacy_groups {
        let Some(gid) = groups.gid(*group) else {
            continue; // the group is gone; so are its pairs
        };
        if !done.insert(gid) {
            continue;
        }
        deltas.privacy_pairs -= delete_where(
            tx,
            PrivacyPairs::Table,
            Expr::col(PrivacyPairs::GroupId).eq(gid),
        )
        .await?;
        let mut maps = Vec::new();
        for alias in groups.of(*group) {
            let pairs = match live.begin_privacy(alias, Mode::View).await {
                Ok(mut p) => {
                    let all = p.fetch_all_pairs().await;
                    let _ = p.commit().await;
                    match all {
                        Ok(all) => all,
                        // Nothing stored under this id.
                        Err(store_firewall::Error::UnknownGroup { .. }) => continue,
                        Err(e) => return Err(crate::shared::live_error("privacy pairs", e)),
                    }
                }
                Err(store_firewall::Error::UnknownGroup { .. }) => continue,
                Err(e) => return Err(crate::shared::live_error("privacy pairs", e)),
            };
            if !pairs.is_empty() {
                maps.push(GroupPairs {
                    group: alias,
                    pairs,
                });
            }
        }
        write_pairs(tx, maps, &None, report).await?;
    }
    Ok(done)
}

/// Replays single privacy pairs written during the migration (those of a
/// group replayed whole are already there): each is read from the live
/// store under the id it was written under and written if SQL lacks it.
/// Pairs are only ever added (a group's go with its first session), so a
/// pair SQL holds is the live one, and a busy group costs its new pairs,
/// not its whole map, in every round.
async fn replay_pairs(
    tx: &mut dyn Tx,
    live: &dyn store_firewall::Store,
    pairs: &[(SessionId, String)],
    replayed_whole: &std::collections::HashSet<i64>,
    report: &mut FirewallReport,
) -> Result<(), Error> {
    use store_firewall::Mode;
    if pairs.is_empty() {
        return Ok(());
    }
    let groups = GroupAliases::load(tx, pairs.iter().map(|(g, _)| *g)).await?;
    let wanted: Vec<&(SessionId, String)> = pairs
        .iter()
        .filter(|(g, _)| {
            groups
                .gid(*g)
                .is_some_and(|gid| !replayed_whole.contains(&gid))
        })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let gids: Vec<i64> = wanted.iter().filter_map(|(g, _)| groups.gid(*g)).collect();
    let present: std::collections::HashSet<(i64, String)> = tx
        .query(
            &Query::select()
                .columns([PrivacyPairs::GroupId, PrivacyPairs::RealVal])
                .from(PrivacyPairs::Table)
                .and_where(Expr::col(PrivacyPairs::GroupId).is_in(gids))
                .and_where(
                    Expr::col(PrivacyPairs::RealVal).is_in(wanted.iter().map(|(_, r)| r.clone())),
                )
                .to_owned(),
        )
        .await?
        .iter()
        .map(|r| Ok((r.i64(0)?, r.text(1)?)))
        .collect::<Result<_, Error>>()?;
    let mut maps: BTreeMap<SessionId, BTreeMap<String, String>> = BTreeMap::new();
    for (alias, real) in wanted {
        let Some(gid) = groups.gid(*alias) else {
            continue;
        };
        if present.contains(&(gid, real.clone())) {
            continue;
        }
        let pseudo = match live.begin_privacy(*alias, Mode::View).await {
            Ok(mut p) => {
                let v = p.real_to_pseudo(real).await;
                let _ = p.commit().await;
                match v {
                    Ok(v) => v,
                    Err(
                        store_firewall::Error::NoSuchKey { .. }
                        | store_firewall::Error::UnknownGroup { .. },
                    ) => continue,
                    Err(e) => return Err(crate::shared::live_error("privacy pair", e)),
                }
            }
            Err(store_firewall::Error::UnknownGroup { .. }) => continue,
            Err(e) => return Err(crate::shared::live_error("privacy pair", e)),
        };
        maps.entry(*alias).or_default().insert(real.clone(), pseudo);
    }
    let chunk = maps
        .into_iter()
        .map(|(group, pairs)| GroupPairs { group, pairs })
        .collect();
    write_pairs(tx, chunk, &None, report).await
}

/// One kv-store entry as the live store holds it now (`None`: absent).
async fn live_entry(
    live: &dyn store_firewall::Store,
    ns: store_firewall::Namespace,
    scope: store_firewall::Scope,
    key: &str,
) -> Result<Option<Vec<u8>>, Error> {
    match live.begin_kv(ns, store_firewall::Mode::View).await {
        Ok(mut kv) => {
            let v = kv.get(scope, key).await;
            let _ = kv.commit().await;
            match v {
                Ok(v) => Ok(v),
                Err(store_firewall::Error::UnknownGroup { .. }) => Ok(None),
                Err(e) => Err(crate::shared::live_error("kv-store entry", e)),
            }
        }
        Err(store_firewall::Error::UnknownGroup { .. }) => Ok(None),
        Err(e) => Err(crate::shared::live_error("kv-store entry", e)),
    }
}

/// The session groups of some session ids, as SQL holds them: for each
/// id, its group's SQL id and the ids of every session of that group,
/// under any of which the key-value store may keep the group's data.
struct GroupAliases {
    gid: HashMap<SessionId, i64>,
    members: HashMap<i64, Vec<SessionId>>,
}

impl GroupAliases {
    async fn load(
        tx: &mut dyn Tx,
        ids: impl Iterator<Item = SessionId>,
    ) -> Result<GroupAliases, Error> {
        let gid: HashMap<SessionId, i64> = group_ids(tx, ids)
            .await?
            .into_iter()
            .map(|(id, (gid, _))| (id, gid))
            .collect();
        let mut gids: Vec<i64> = gid.values().copied().collect();
        gids.sort_unstable();
        gids.dedup();
        let mut members: HashMap<i64, Vec<SessionId>> = HashMap::new();
        if !gids.is_empty() {
            let rows = tx
                .query(
                    &Query::select()
                        .columns([Sessions::GroupId, Sessions::Alias])
                        .from(Sessions::Table)
                        .and_where(Expr::col(Sessions::GroupId).is_in(gids))
                        .to_owned(),
                )
                .await?;
            for r in &rows {
                let alias = crate::shared::session_alias(r.bytes(1)?)?;
                members.entry(r.i64(0)?).or_default().push(alias);
            }
        }
        Ok(GroupAliases { gid, members })
    }

    /// The SQL id of `id`'s group, if SQL holds it.
    fn gid(&self, id: SessionId) -> Option<i64> {
        self.gid.get(&id).copied()
    }

    /// Every id the data of `id`'s group may be stored under (`id` alone
    /// when SQL does not know its group).
    fn of(&self, id: SessionId) -> Vec<SessionId> {
        match self.gid(id).and_then(|g| self.members.get(&g)) {
            Some(m) => {
                let mut m = m.clone();
                m.sort();
                m
            }
            None => vec![id],
        }
    }
}

/// Deletes every kv-store entry and privacy pair of the group whose first
/// session has SQL id `gid`; returns how many of each.
pub(crate) async fn delete_group(tx: &mut dyn Tx, gid: i64) -> Result<(i64, i64), Error> {
    let entries = delete_where(tx, Kvstores::Table, Expr::col(Kvstores::GroupId).eq(gid)).await?;
    let pairs = delete_where(
        tx,
        PrivacyPairs::Table,
        Expr::col(PrivacyPairs::GroupId).eq(gid),
    );
    let pairs = pairs.await?;
    Ok((entries, pairs))
}

/// Kv-store entries a replay handles per batch of statements.
const REPLAY_CHUNK: usize = 256;

/// Deletes the SQL rows of `entries` (each matched by permanence, rule,
/// group, feature and key), if there are any: the names and groups
/// resolved once, the deletes sent together. Returns how many rows went.
async fn delete_entries(tx: &mut dyn Tx, entries: &[KvEntry]) -> Result<i64, Error> {
    let id_of = |name: &str| Error::Invalid {
        record: format!("name {name:?}"),
        reason: "its id could not be read".into(),
    };
    let mut rules: HashMap<&str, Option<i64>> = HashMap::new();
    let mut features: HashMap<&str, Option<i64>> = HashMap::new();
    for e in entries {
        if !rules.contains_key(e.rule.as_str()) {
            let id = lookup_name(tx, true, &e.rule)
                .await
                .map_err(|_| id_of(&e.rule))?;
            rules.insert(&e.rule, id);
        }
        if let Some(f) = &e.feature
            && !features.contains_key(f.as_str())
        {
            let id = lookup_name(tx, false, f).await.map_err(|_| id_of(f))?;
            features.insert(f, id);
        }
    }
    let groups = group_ids(tx, entries.iter().filter_map(|e| e.group)).await?;
    let d = tx.dialect();
    let mut deletes = Vec::with_capacity(entries.len());
    for e in entries {
        // A name or group SQL does not know has no rows to delete.
        let Some(Some(rule)) = rules.get(e.rule.as_str()) else {
            continue;
        };
        let mut q = Query::delete()
            .from_table(Kvstores::Table)
            .and_where(Expr::col(Kvstores::Perm).eq(e.perm))
            .and_where(Expr::col(Kvstores::RuleId).eq(*rule))
            .and_where(Expr::col(Kvstores::EntryKey).eq(e.key.clone()))
            .returning_col(Kvstores::Id)
            .to_owned();
        match e.group {
            None => {
                q.and_where(Expr::col(Kvstores::GroupId).is_null());
            }
            Some(g) => {
                let Some(&(gid, _)) = groups.get(&g) else {
                    continue;
                };
                q.and_where(Expr::col(Kvstores::GroupId).eq(gid));
            }
        }
        match &e.feature {
            None => {
                q.and_where(Expr::col(Kvstores::FeatureId).is_null());
            }
            Some(f) => {
                let Some(Some(feature)) = features.get(f.as_str()) else {
                    continue;
                };
                q.and_where(Expr::col(Kvstores::FeatureId).eq(*feature));
            }
        }
        deletes.push(d.build(&q));
    }
    if deletes.is_empty() {
        return Ok(0);
    }
    let gone: usize = tx.query_batch(deletes).await?.iter().map(Vec::len).sum();
    Ok(crate::shared::rows(gone))
}
