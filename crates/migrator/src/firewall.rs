//! The firewall: rule kv-store entries into `rules`, `features` and
//! `kvstores`; privacy maps into `privacy_pairs` (docs/design.md §5.4).
//!
//! The key-value layout is checked strictly, as LiT does: under
//! `perm`/`temp` only rule buckets; under a rule only `global` and
//! `session-kv-store`; under a group only entries and `feature-kv-store`;
//! under that only feature buckets of entries. In the privacy tree only
//! `<group>/real-to-pseudo` and `<group>/pseudo-to-real`, with non-empty
//! values, the two maps exact inverses of each other. Anything else fails the
//! migration with an error naming the path.
//!
//! Entries and pairs of a group that is not in SQL (its sessions were
//! deleted, the firewall data kept) are skipped and counted. Every entry and
//! pair is read back and compared; an empty value equals an absent one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use sea_query::{Alias, Expr, ExprTrait, JoinType, Query};
use sqldb::{Tx, TxExt};
use store_firewall::KvEntry;
use store_firewall::kv::{PRIVACY_TREE, RULES_TREE, parse_entry, parse_pair};
use store_firewall::sql::schema::{Kvstores, PrivacyPairs};
use store_firewall::sql::{load_entries, load_pairs, lookup_name, name_id};
use store_sessions::SessionId;
use store_sessions::sql::schema::Sessions;
use tombstone::{MigrationSource, ReadTree};

use crate::Error;
use crate::copy::{CopyCtx, TreeCopy, WriteChunk, copy_tree, ensure_empty};
use crate::diff::read_back;
use crate::feed::Sink;
use crate::shared::sequence_past;

/// What the firewall migration moved, and what it skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FirewallReport {
    /// Kv-store entries migrated (permanent and temporary).
    pub kv_entries: u64,
    /// Entries skipped because their session group no longer exists.
    pub kv_entries_skipped: u64,
    /// Privacy pairs migrated.
    pub privacy_pairs: u64,
    /// Pairs skipped because their session group no longer exists.
    pub privacy_pairs_skipped: u64,
}

fn parse_error(tree: &'static str, key: &[u8], e: store_firewall::kv::ParseError) -> Error {
    if e.decode {
        Error::Decode {
            tree,
            key: hex::encode(key),
            reason: e.to_string(),
        }
    } else {
        Error::Layout {
            tree,
            path: e.path,
            reason: e.reason,
        }
    }
}

fn read_entries(tree: ReadTree, chunk_size: usize, out: Sink<Vec<KvEntry>>) {
    let entries = tree.iter().map(|item| {
        let (key, value) = item?;
        parse_entry(&key, &value)
            .map(Some)
            .map_err(|e| parse_error(RULES_TREE, &key, e))
    });
    out.send_chunks(entries, chunk_size);
}

/// One group's privacy map, checked.
struct GroupPairs {
    group: SessionId,
    pairs: BTreeMap<String, String>,
}

/// The group being read: both directions of its map so far.
struct OpenGroup {
    group: SessionId,
    real_to_pseudo: BTreeMap<String, String>,
    pseudo_to_real: BTreeMap<String, String>,
}

impl OpenGroup {
    /// Checks the two maps are exact inverses and hands out the pairs.
    fn finish(self) -> Result<GroupPairs, Error> {
        let at = || format!("{}/…", hex::encode(self.group.0));
        if self.real_to_pseudo.len() != self.pseudo_to_real.len() {
            return Err(Error::Layout {
                tree: PRIVACY_TREE,
                path: at(),
                reason: format!(
                    "real-to-pseudo has {} pairs, pseudo-to-real {}",
                    self.real_to_pseudo.len(),
                    self.pseudo_to_real.len()
                ),
            });
        }
        for (real, pseudo) in &self.real_to_pseudo {
            if self.pseudo_to_real.get(pseudo) != Some(real) {
                return Err(Error::Layout {
                    tree: PRIVACY_TREE,
                    path: at(),
                    reason: format!(
                        "the maps are not inverses: {real:?} -> {pseudo:?} has no matching pseudo-to-real entry"
                    ),
                });
            }
        }
        Ok(GroupPairs {
            group: self.group,
            pairs: self.real_to_pseudo,
        })
    }
}

/// Streams whole groups (the tree's key order keeps a group together),
/// about `chunk_size` pairs per chunk.
///
/// `defer`: an online migration's journal. A live tree is not read at one
/// instant, so a group whose pair was being written while it was read may
/// show one direction of that pair and not the other; such a group is left
/// to the replay, which reads it in one transaction of the store
/// (docs/design.md §7.4), instead of failing the migration.
fn read_privacy(
    tree: ReadTree,
    chunk_size: usize,
    defer: Option<Arc<crate::journal::Journal>>,
    out: Sink<Vec<GroupPairs>>,
) {
    let finish = |g: OpenGroup| -> Result<Option<GroupPairs>, Error> {
        let group = g.group;
        match (g.finish(), &defer) {
            (Ok(done), _) => Ok(Some(done)),
            (Err(e), Some(journal)) => {
                tracing::debug!(group = %group, error = %e, "privacy group read while written; left to the replay");
                journal.record(crate::journal::Touched::Privacy(group));
                Ok(None)
            }
            (Err(e), None) => Err(e),
        }
    };
    let mut chunk: Vec<GroupPairs> = Vec::new();
    let mut in_chunk = 0usize;
    let mut open: Option<OpenGroup> = None;
    for item in tree.iter() {
        let (key, raw) = match item {
            Ok(kv) => kv,
            Err(e) => return out.fail(e.into()),
        };
        let (group, forward, from, to) = match parse_pair(&key, &raw) {
            Ok(p) => p,
            Err(e) => {
                let e = parse_error(PRIVACY_TREE, &key, e);
                if out.skip(&e) {
                    continue;
                }
                return out.fail(e);
            }
        };
        if open.as_ref().is_none_or(|g| g.group != group) {
            if let Some(done) = open.take() {
                match finish(done) {
                    Ok(Some(g)) => {
                        in_chunk += g.pairs.len();
                        chunk.push(g);
                    }
                    Ok(None) => {}
                    Err(e) => return out.fail(e),
                }
            }
            if in_chunk >= chunk_size {
                in_chunk = 0;
                if !out.send(std::mem::take(&mut chunk)) {
                    return;
                }
            }
            open = Some(OpenGroup {
                group,
                real_to_pseudo: BTreeMap::new(),
                pseudo_to_real: BTreeMap::new(),
            });
        }
        if let Some(g) = open.as_mut() {
            let map = if forward {
                &mut g.real_to_pseudo
            } else {
                &mut g.pseudo_to_real
            };
            map.insert(from, to);
        }
    }
    if let Some(done) = open.take() {
        match finish(done) {
            Ok(Some(g)) => chunk.push(g),
            Ok(None) => {}
            Err(e) => return out.fail(e),
        }
    }
    if !chunk.is_empty() {
        out.send(chunk);
    }
}

/// The group of each given session id that is in SQL: the SQL id and the
/// id of its first session. A group's entries and pairs may be stored under
/// the id of any of its sessions; they belong to the session's group, as
/// LiT resolves them (docs/design.md §4.2).
async fn group_ids(
    tx: &mut dyn Tx,
    ids: impl Iterator<Item = SessionId>,
) -> Result<HashMap<SessionId, (i64, SessionId)>, Error> {
    let mut aliases: Vec<Vec<u8>> = ids.map(|g| g.0.to_vec()).collect();
    aliases.sort();
    aliases.dedup();
    if aliases.is_empty() {
        return Ok(HashMap::new());
    }
    let (s, g) = (Alias::new("s"), Alias::new("g"));
    let rows = tx
        .query(
            &Query::select()
                .column((s.clone(), Sessions::Alias))
                .column((g.clone(), Sessions::Id))
                .column((g.clone(), Sessions::Alias))
                .from_as(Sessions::Table, s.clone())
                .join_as(
                    JoinType::InnerJoin,
                    Sessions::Table,
                    g.clone(),
                    Expr::col((g, Sessions::Id)).equals((s.clone(), Sessions::GroupId)),
                )
                .and_where(Expr::col((s, Sessions::Alias)).is_in(aliases))
                .to_owned(),
        )
        .await?;
    let alias = crate::shared::session_alias;
    rows.iter()
        .map(|r| Ok((alias(r.bytes(0)?)?, (r.i64(1)?, alias(r.bytes(2)?)?))))
        .collect()
}

/// A unique violation while writing a group's entries or pairs: two of them
/// collide once the ones stored under a linked session's id join the group.
fn collision(e: sqldb::DbError, what: &str) -> Error {
    if e.is_unique_violation() {
        Error::Invalid {
            record: what.to_owned(),
            reason: "two of them collide in one session group: the same key (or value) is stored \
                     both under the group's id and under the id of one of its linked sessions, \
                     and only one can be kept; resolve it in the key-value database first"
                .into(),
        }
    } else {
        e.into()
    }
}

pub(crate) async fn migrate(
    source: &MigrationSource,
    tx: &mut dyn Tx,
    ctx: CopyCtx<'_>,
) -> Result<FirewallReport, Error> {
    ensure_empty(tx, &["kvstores", "privacy_pairs", "rules"]).await?;
    let mut writer = Writer {
        report: FirewallReport::default(),
        names: Names::default(),
        next_id: 1,
    };
    let chunk_size = ctx.chunk_size;
    if let Some(tree) = source.tree(RULES_TREE)? {
        let what = TreeCopy {
            tree: RULES_TREE,
            store: "kv-stores",
            total: tree.len() as u64,
        };
        let read = move |sink| read_entries(tree, chunk_size, sink);
        copy_tree(tx, ctx, what, read, &mut writer).await?;
        sequence_past(tx, "kvstores", writer.next_id - 1).await?;
    }
    if let Some(tree) = source.tree(PRIVACY_TREE)? {
        let what = TreeCopy {
            tree: PRIVACY_TREE,
            store: "privacy pairs",
            total: (tree.len() / 2) as u64,
        };
        let defer = ctx.live.map(|l| l.journal.clone());
        let read = move |sink| read_privacy(tree, chunk_size, defer, sink);
        copy_tree(tx, ctx, what, read, &mut writer).await?;
    }
    Ok(writer.report)
}

/// Writes the kv-store entries (with the SQL ids from 1 in key order, and
/// rule and feature names as they come) and the privacy pairs.
struct Writer {
    report: FirewallReport,
    names: Names,
    next_id: i64,
}

#[async_trait]
impl WriteChunk<Vec<KvEntry>> for Writer {
    async fn write(&mut self, tx: &mut dyn Tx, chunk: Vec<KvEntry>) -> Result<Option<u64>, Error> {
        let r = &mut self.report;
        write_entries(tx, &chunk, &mut self.names, &mut self.next_id, r).await?;
        Ok(Some(r.kv_entries + r.kv_entries_skipped))
    }
}

#[async_trait]
impl WriteChunk<Vec<GroupPairs>> for Writer {
    async fn write(
        &mut self,
        tx: &mut dyn Tx,
        chunk: Vec<GroupPairs>,
    ) -> Result<Option<u64>, Error> {
        let r = &mut self.report;
        write_pairs(tx, chunk, r).await?;
        Ok(Some(r.privacy_pairs + r.privacy_pairs_skipped))
    }
}

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
    use crate::shared::rows;
    use store_firewall::{Mode, Scope};
    let mut names = Names::default();
    let mut report = FirewallReport::default();
    let mut next_id = crate::shared::next_id(tx, "kvstores").await?;
    if temp_wiped {
        deltas.kv_entries -= rows(
            tx.exec(
                &Query::delete()
                    .from_table(Kvstores::Table)
                    .and_where(Expr::col(Kvstores::Perm).eq(false))
                    .to_owned(),
            )
            .await?,
        );
        let temp: Vec<KvEntry> = live
            .kv_entries()
            .await
            .map_err(|e| crate::shared::live_error("kv-store entries", e))?
            .into_iter()
            .filter(|e| !e.perm)
            .collect();
        write_entries(tx, &temp, &mut names, &mut next_id, &mut report).await?;
    }
    for chunk in entries.chunks(REPLAY_CHUNK) {
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
        write_entries(tx, &present, &mut names, &mut next_id, &mut report).await?;
    }
    crate::shared::advance_sequence(tx, "kvstores", next_id - 1).await?;
    deltas.kv_entries += rows(report.kv_entries);
    report.privacy_pairs = 0;
    // A group's map is the pairs stored under the id of any of its
    // sessions (docs/design.md §4.2): the whole group is read again, once
    // however many of its ids were touched.
    let groups = GroupAliases::load(tx, privacy_groups.iter().copied()).await?;
    let mut done = std::collections::HashSet::new();
    for group in privacy_groups {
        let Some(gid) = groups.gid(*group) else {
            continue; // the group is gone; so are its pairs
        };
        if !done.insert(gid) {
            continue;
        }
        deltas.privacy_pairs -= rows(
            tx.exec(
                &Query::delete()
                    .from_table(PrivacyPairs::Table)
                    .and_where(Expr::col(PrivacyPairs::GroupId).eq(gid))
                    .to_owned(),
            )
            .await?,
        );
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
        write_pairs(tx, maps, &mut report).await?;
    }
    replay_pairs(tx, live, pairs, &done, &mut report).await?;
    deltas.privacy_pairs += rows(report.privacy_pairs);
    Ok(())
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
    write_pairs(tx, chunk, report).await
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
    use crate::shared::rows;
    let entries = tx
        .exec(
            &Query::delete()
                .from_table(Kvstores::Table)
                .and_where(Expr::col(Kvstores::GroupId).eq(gid))
                .to_owned(),
        )
        .await?;
    let pairs = tx
        .exec(
            &Query::delete()
                .from_table(PrivacyPairs::Table)
                .and_where(Expr::col(PrivacyPairs::GroupId).eq(gid))
                .to_owned(),
        )
        .await?;
    Ok((rows(entries), rows(pairs)))
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

/// Rule and feature ids assigned so far.
#[derive(Default)]
struct Names {
    rules: HashMap<String, i64>,
    features: HashMap<String, i64>,
}

impl Names {
    async fn id(&mut self, tx: &mut dyn Tx, rule: bool, name: &str) -> Result<i64, Error> {
        let map = if rule {
            &mut self.rules
        } else {
            &mut self.features
        };
        if let Some(id) = map.get(name) {
            return Ok(*id);
        }
        let id = name_id(tx, rule, name).await.map_err(|e| Error::Invalid {
            record: format!("{} {name:?}", if rule { "rule" } else { "feature" }),
            reason: e.to_string(),
        })?;
        map.insert(name.to_owned(), id);
        Ok(id)
    }
}

async fn write_entries(
    tx: &mut dyn Tx,
    chunk: &[KvEntry],
    names: &mut Names,
    next_id: &mut i64,
    report: &mut FirewallReport,
) -> Result<(), Error> {
    let groups = group_ids(tx, chunk.iter().filter_map(|e| e.group)).await?;
    let mut rows: Vec<Vec<sea_query::Value>> = Vec::with_capacity(chunk.len());
    let first = *next_id;
    let mut written = Vec::new();
    for e in chunk {
        e.check().map_err(|e| Error::Contract(e.to_string()))?;
        let (group, entry) = match e.group {
            None => (None, e.clone()),
            Some(g) => match groups.get(&g) {
                Some((id, founder)) => (
                    Some(*id),
                    KvEntry {
                        group: Some(*founder),
                        ..e.clone()
                    },
                ),
                None => {
                    report.kv_entries_skipped += 1;
                    continue;
                }
            },
        };
        let rule = names.id(tx, true, &e.rule).await?;
        let feature = match &e.feature {
            None => None,
            Some(f) => Some(names.id(tx, false, f).await?),
        };
        rows.push(vec![
            (*next_id).into(),
            e.perm.into(),
            rule.into(),
            sea_query::Value::BigInt(group),
            sea_query::Value::BigInt(feature),
            e.key.clone().into(),
            e.value.clone().into(),
        ]);
        *next_id += 1;
        written.push(entry);
    }
    if written.is_empty() {
        return Ok(());
    }
    sqldb::append(
        tx,
        Kvstores::Table,
        [
            Kvstores::Id,
            Kvstores::Perm,
            Kvstores::RuleId,
            Kvstores::GroupId,
            Kvstores::FeatureId,
            Kvstores::EntryKey,
            Kvstores::Value,
        ],
        rows,
    )
    .await
    .map_err(|e| collision(e, "kv-store entries"))?;
    verify_entries(tx, &written, first, *next_id - 1).await?;
    report.kv_entries += written.len() as u64;
    Ok(())
}

async fn verify_entries(
    tx: &mut dyn Tx,
    written: &[KvEntry],
    first: i64,
    last: i64,
) -> Result<(), Error> {
    let read = read_back(
        "kv-store entries",
        first,
        last,
        written.len(),
        load_entries(tx, Some((first, last))),
    )
    .await?;
    // An empty value equals an absent one: the loader reads both as empty.
    for (kv, sql) in written.iter().zip(&read) {
        if kv != sql {
            let mut d = crate::diff::Diff::default();
            d.field("perm", &kv.perm, &sql.perm);
            d.field("rule", &kv.rule, &sql.rule);
            d.field("group", &kv.group, &sql.group);
            d.field("feature", &kv.feature, &sql.feature);
            d.field("key", &kv.key, &sql.key);
            d.field("value", &kv.value, &sql.value);
            return Err(Error::Mismatch {
                record: format!("kv-store entry {:?} of rule {:?}", kv.key, kv.rule),
                diff: d.finish().unwrap_or_default(),
            });
        }
    }
    Ok(())
}

async fn write_pairs(
    tx: &mut dyn Tx,
    chunk: Vec<GroupPairs>,
    report: &mut FirewallReport,
) -> Result<(), Error> {
    let ids = group_ids(tx, chunk.iter().map(|g| g.group)).await?;
    let mut rows = Vec::new();
    // What this chunk writes, by SQL group (pairs stored under a linked
    // session's id join its group).
    let mut expected: BTreeMap<i64, (SessionId, BTreeMap<String, String>)> = BTreeMap::new();
    for g in chunk {
        let Some(&(gid, founder)) = ids.get(&g.group) else {
            report.privacy_pairs_skipped += g.pairs.len() as u64;
            continue;
        };
        for (real, pseudo) in &g.pairs {
            store_firewall::PrivacyPair {
                group: g.group,
                real: real.clone(),
                pseudo: pseudo.clone(),
            }
            .check()
            .map_err(|e| Error::Contract(e.to_string()))?;
            rows.push(vec![gid.into(), real.clone().into(), pseudo.clone().into()]);
        }
        expected
            .entry(gid)
            .or_insert_with(|| (founder, BTreeMap::new()))
            .1
            .extend(g.pairs);
    }
    sqldb::append(
        tx,
        PrivacyPairs::Table,
        [
            PrivacyPairs::GroupId,
            PrivacyPairs::RealVal,
            PrivacyPairs::PseudoVal,
        ],
        rows,
    )
    .await
    .map_err(|e| collision(e, "privacy pairs"))?;
    if expected.is_empty() {
        return Ok(());
    }
    // Read back every group the chunk wrote to in one query; compare each
    // pair written (earlier chunks may have written other pairs of a group).
    let read = load_pairs(tx, Some(expected.keys().copied().collect()))
        .await
        .map_err(|e| Error::Invalid {
            record: "privacy pairs read back".into(),
            reason: e.to_string(),
        })?;
    let mut by_group: HashMap<SessionId, BTreeMap<String, String>> = HashMap::new();
    for p in read {
        by_group
            .entry(p.group)
            .or_default()
            .insert(p.real, p.pseudo);
    }
    for (founder, pairs) in expected.values() {
        let sql = by_group.remove(founder).unwrap_or_default();
        let got: BTreeMap<String, String> = pairs
            .keys()
            .filter_map(|real| sql.get(real).map(|p| (real.clone(), p.clone())))
            .collect();
        if &got != pairs {
            let mut d = crate::diff::Diff::default();
            d.map("pairs", pairs, &got);
            return Err(Error::Mismatch {
                record: format!("privacy pairs of group {founder}"),
                diff: d.finish().unwrap_or_default(),
            });
        }
        report.privacy_pairs += pairs.len() as u64;
    }
    Ok(())
}
