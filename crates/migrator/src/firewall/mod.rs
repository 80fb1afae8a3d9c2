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
//! Offline, the entries are proved whole (a digest of what was written
//! against the table read back after the load) and the pairs are read back
//! several chunks at a time, then counted; online, each chunk is read back
//! as it is written (docs/design.md §5.7).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use sea_query::{Alias, Expr, ExprTrait, IntoIden, JoinType, Query};
use sqldb::{Tx, TxExt};
use store_firewall::KvEntry;
use store_firewall::kv::{PRIVACY_TREE, RULES_TREE, parse_entry, parse_pair};
use store_firewall::sql::schema::{Kvstores, PrivacyPairs};
use store_firewall::sql::{entries_of, fetch_entries, load_entries, load_pairs_stored, name_id};
use store_sessions::SessionId;
use store_sessions::sql::schema::Sessions;
use tombstone::ReadTree;

use crate::Error;

mod replay;

use crate::copy::{CopyCtx, TreeCopy, WriteChunk, copy_tree};
use crate::diff::{Difference, Differences, diff_fields, verify_written};
use crate::digest::{Proof, ReadRange, WholeTable, prove_whole};
use crate::feed::Sink;
use crate::shared::sequence_past;
pub(crate) use replay::{delete_group, replay};

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
            source: Box::new(e),
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
                    // A group whose two maps disagree is damaged as a
                    // whole: counted, and left out when damage is accepted.
                    Ok(None) => {}
                    Err(e) if out.skip(&e) => {}
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
            Err(e) if out.skip(&e) => {}
            Err(e) => return out.fail(e),
        }
    }
    if !chunk.is_empty() {
        out.send(chunk);
    }
}

/// Each session's group, by the session's id: the SQL id and the id of the
/// group's first session.
type GroupMap = HashMap<SessionId, (i64, SessionId)>;

/// The group of each given session id that is in SQL: the SQL id and the
/// id of its first session. A group's entries and pairs may be stored
/// under the id of any of its sessions; they belong to the session's group,
/// as LiT resolves them (docs/design.md §4.2).
async fn group_ids(
    tx: &mut dyn Tx,
    ids: impl Iterator<Item = SessionId>,
) -> Result<GroupMap, Error> {
    let mut aliases: Vec<Vec<u8>> = ids.map(|g| g.0.to_vec()).collect();
    aliases.sort();
    aliases.dedup();
    if aliases.is_empty() {
        return Ok(HashMap::new());
    }
    let select = groups_select()
        .and_where(Expr::col((Alias::new("s"), Sessions::Alias)).is_in(aliases))
        .to_owned();
    read_groups(tx, &select).await
}

/// [`group_ids`] of every session in SQL.
async fn all_groups(tx: &mut dyn Tx) -> Result<GroupMap, Error> {
    read_groups(tx, &groups_select()).await
}

/// Each session (`s`) with its group's first session (`g`): the alias, the
/// group's SQL id and the group's alias.
fn groups_select() -> sea_query::SelectStatement {
    let (s, g) = (Alias::new("s"), Alias::new("g"));
    Query::select()
        .column((s.clone(), Sessions::Alias))
        .column((g.clone(), Sessions::Id))
        .column((g.clone(), Sessions::Alias))
        .from_as(Sessions::Table, s.clone())
        .join_as(
            JoinType::InnerJoin,
            Sessions::Table,
            g.clone(),
            Expr::col((g, Sessions::Id)).equals((s, Sessions::GroupId)),
        )
        .to_owned()
}

async fn read_groups(
    tx: &mut dyn Tx,
    select: &sea_query::SelectStatement,
) -> Result<GroupMap, Error> {
    let rows = tx.query(select).await?;
    let alias = crate::shared::session_alias;
    rows.iter()
        .map(|r| Ok((alias(r.bytes(0)?)?, (r.i64(1)?, alias(r.bytes(2)?)?))))
        .collect()
}

/// The groups of the sessions `ids` names: from `all` when the copy read
/// every group once, else looked up.
async fn resolve_groups<'g>(
    all: &'g Option<GroupMap>,
    tx: &mut dyn Tx,
    ids: impl Iterator<Item = SessionId>,
) -> Result<Cow<'g, GroupMap>, Error> {
    Ok(match all {
        Some(all) => Cow::Borrowed(all),
        None => Cow::Owned(group_ids(tx, ids).await?),
    })
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

pub(crate) async fn migrate(tx: &mut dyn Tx, ctx: CopyCtx<'_>) -> Result<FirewallReport, Error> {
    let source = ctx.source;
    let proof = Proof::for_copy(ctx.live.is_some());
    let mut writer = Writer::new(tx, ctx, proof).await?;
    if let Some(tree) = source.tree(RULES_TREE)? {
        copy_entries(tx, ctx, tree, &mut writer).await?;
        let whole = WholeTable {
            what: "kv-store entry",
            table: Kvstores::Table.into_iden(),
            read: ReadRange {
                fetch: |tx, first, last| Box::pin(fetch_entries(tx, first, last)),
                decode: entries_of,
            },
            diagnose: |tx, ctx| Box::pin(diagnose_entries(tx, ctx)),
        };
        prove_whole(tx, ctx, &writer.proof, whole).await?;
        sequence_past(tx, crate::shared::IdTable::Kvstores, writer.next_id - 1).await?;
    }
    if let Some(tree) = source.tree(PRIVACY_TREE)? {
        let what = TreeCopy {
            tree: PRIVACY_TREE,
            store: "privacy pairs",
            total: (tree.len() / 2) as u64,
        };
        let defer = ctx.live.map(|l| l.journal.clone());
        let chunk_size = ctx.chunk_size;
        let read = move |sink| read_privacy(tree, chunk_size, defer, sink);
        copy_tree(tx, ctx, what, read, &mut writer).await?;
        writer.flush_pairs(tx).await?;
        if ctx.live.is_none() {
            pairs_all_written(tx, writer.report.privacy_pairs).await?;
        }
    }
    Ok(writer.report)
}

/// After an offline copy of the privacy pairs, each chunk read back by its
/// groups: the table holds no pair the copy did not write. A chunk's
/// read-back compares only the pairs it wrote (a group may hold pairs of
/// earlier chunks), so a row written beside them would otherwise be seen
/// only after the commit, by the proof that guards the tombstone. An
/// online copy's table also holds what the replay wrote.
async fn pairs_all_written(tx: &mut dyn Tx, written: u64) -> Result<(), Error> {
    let rows = crate::shared::count_rows(tx, PrivacyPairs::Table).await?;
    if rows == written {
        return Ok(());
    }
    Err(Error::Mismatch {
        record: "privacy pairs".into(),
        diff: Differences::one(Difference::Count {
            written: usize::try_from(written).unwrap_or(usize::MAX),
            read: usize::try_from(rows).unwrap_or(usize::MAX),
        }),
    })
}

/// The kv-store entries of the rules tree, each chunk written and proved
/// as `writer.proof` says; the last pending rows appended.
async fn copy_entries(
    tx: &mut dyn Tx,
    ctx: CopyCtx<'_>,
    tree: ReadTree,
    writer: &mut Writer,
) -> Result<(), Error> {
    let what = TreeCopy {
        tree: RULES_TREE,
        store: "kv-stores",
        total: tree.len() as u64,
    };
    let chunk_size = ctx.chunk_size;
    let read = move |sink| read_entries(tree, chunk_size, sink);
    copy_tree(tx, ctx, what, read, writer).await?;
    writer.flush_entries(tx).await
}

/// After a failed proof of the entries: the copy of the rules tree again,
/// writing nothing, each chunk read back by its SQL ids and compared, so
/// the first entry that differs is named (`digest::prove_whole`).
async fn diagnose_entries(tx: &mut dyn Tx, ctx: CopyCtx<'_>) -> Result<(), Error> {
    let Some(tree) = ctx.source.tree(RULES_TREE)? else {
        return Ok(());
    };
    let mut writer = Writer::new(tx, ctx, Proof::Diagnose).await?;
    copy_entries(tx, ctx, tree, &mut writer).await
}

/// Writes the kv-store entries (with the SQL ids from 1 in key order, and
/// rule and feature names as they come) and the privacy pairs.
struct Writer {
    report: FirewallReport,
    names: Names,
    next_id: i64,
    /// Every session's group, read once before an offline copy: its
    /// sessions are all in SQL and nothing changes them. An online copy's
    /// sessions may be replayed between chunks, so it looks up each
    /// chunk's (`None`).
    groups: Option<GroupMap>,
    /// How the entries are proved (docs/design.md §5.7): offline, added to
    /// a digest and read back whole after the copy; online, each chunk
    /// read back. The privacy pairs are read back as they are written
    /// either way (`pairs_at`).
    proof: Proof,
    /// Entries' rows not yet appended (a copy proved whole appends
    /// `append_at` at a time, `digest::append_at`), with the SQL ids up to
    /// `next_id - 1`.
    pending: Vec<Vec<sea_query::Value>>,
    append_at: usize,
    /// Privacy groups not yet written: an offline copy writes and reads
    /// back `pairs_at` pairs at a time (`digest::append_at`), an online
    /// one each chunk as it comes (its piece boundaries come between
    /// chunks).
    pending_pairs: Vec<GroupPairs>,
    pairs_at: usize,
}

impl Writer {
    /// The writer of an online replay: every chunk read back, its groups
    /// looked up, the entries' SQL ids from `next_id`.
    fn replay(next_id: i64) -> Writer {
        Writer {
            report: FirewallReport::default(),
            names: Names::default(),
            next_id,
            groups: None,
            proof: Proof::EachChunk,
            pending: Vec::new(),
            append_at: 1,
            pending_pairs: Vec::new(),
            pairs_at: 1,
        }
    }

    /// The writer of a copy proved as `proof` says (online: `EachChunk`).
    async fn new(tx: &mut dyn Tx, ctx: CopyCtx<'_>, proof: Proof) -> Result<Writer, Error> {
        Ok(Writer {
            report: FirewallReport::default(),
            names: Names::default(),
            next_id: 1,
            groups: match ctx.live {
                None => Some(all_groups(tx).await?),
                Some(_) => None,
            },
            proof,
            pending: Vec::new(),
            append_at: crate::digest::append_at(tx.dialect(), ctx.chunk_size),
            pending_pairs: Vec::new(),
            pairs_at: match ctx.live {
                None => crate::digest::append_at(tx.dialect(), ctx.chunk_size),
                Some(_) => 1,
            },
        })
    }

    /// Writes the pending privacy groups and reads them back.
    async fn flush_pairs(&mut self, tx: &mut dyn Tx) -> Result<(), Error> {
        if self.pending_pairs.is_empty() {
            return Ok(());
        }
        let groups = std::mem::take(&mut self.pending_pairs);
        write_pairs(tx, groups, &self.groups, &mut self.report).await
    }

    /// Appends the pending entries, and records their SQL ids as a range
    /// the proof reads back.
    async fn flush_entries(&mut self, tx: &mut dyn Tx) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        if let Proof::Whole(_, ranges) = &mut self.proof {
            ranges.push((self.next_id - rows.len() as i64, self.next_id - 1));
        }
        append_entries(tx, rows).await
    }
}

#[async_trait]
impl WriteChunk<Vec<KvEntry>> for Writer {
    async fn write(&mut self, tx: &mut dyn Tx, chunk: Vec<KvEntry>) -> Result<Option<u64>, Error> {
        self.write_entries(tx, &chunk).await?;
        let r = &self.report;
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
        self.pending_pairs.extend(chunk);
        let buffered: usize = self.pending_pairs.iter().map(|g| g.pairs.len()).sum();
        if buffered >= self.pairs_at {
            self.flush_pairs(tx).await?;
        }
        let r = &self.report;
        Ok(Some(r.privacy_pairs + r.privacy_pairs_skipped))
    }
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
        let id = name_id(tx, rule, name).await.map_err(|e| Error::Store {
            record: format!("{} {name:?}", if rule { "rule" } else { "feature" }),
            source: Box::new(e),
        })?;
        map.insert(name.to_owned(), id);
        Ok(id)
    }
}

impl Writer {
    /// One chunk of entries: each given the next SQL id and its group's
    /// (or skipped when its group is not in SQL), then written and proved
    /// as `self.proof` says.
    async fn write_entries(&mut self, tx: &mut dyn Tx, chunk: &[KvEntry]) -> Result<(), Error> {
        let groups = resolve_groups(&self.groups, tx, chunk.iter().filter_map(|e| e.group)).await?;
        let mut rows: Vec<Vec<sea_query::Value>> = Vec::with_capacity(chunk.len());
        let first = self.next_id;
        let mut written = Vec::new();
        for e in chunk {
            e.check().map_err(Error::contract)?;
            let (group, entry) = match e.group {
                None => (None, e.clone()),
                Some(g) => match crate::rules::firewall_group(g, |g| groups.get(&g)) {
                    Some((id, founder)) => (
                        Some(*id),
                        KvEntry {
                            group: Some(*founder),
                            ..e.clone()
                        },
                    ),
                    None => {
                        self.report.kv_entries_skipped += 1;
                        continue;
                    }
                },
            };
            let rule = self.names.id(tx, true, &e.rule).await?;
            let feature = match &e.feature {
                None => None,
                Some(f) => Some(self.names.id(tx, false, f).await?),
            };
            rows.push(vec![
                self.next_id.into(),
                e.perm.into(),
                rule.into(),
                sea_query::Value::BigInt(group),
                sea_query::Value::BigInt(feature),
                e.key.clone().into(),
                e.value.clone().into(),
            ]);
            self.next_id += 1;
            written.push(entry);
        }
        drop(groups);
        if written.is_empty() {
            return Ok(());
        }
        self.report.kv_entries += written.len() as u64;
        if let Proof::Whole(digest, _) = &mut self.proof {
            for e in &written {
                digest.add(e);
            }
            self.pending.extend(rows);
            if self.pending.len() >= self.append_at {
                self.flush_entries(tx).await?;
            }
            return Ok(());
        }
        if self.proof.writes() {
            append_entries(tx, rows).await?;
        }
        let ids = (first, self.next_id - 1);
        let load = load_entries(tx, Some(ids));
        verify_written("kv-store entries", written.iter(), ids, load, check_entry).await
    }
}

/// Appends entries' rows; two that collide in one group are refused.
async fn append_entries(tx: &mut dyn Tx, rows: Vec<Vec<sea_query::Value>>) -> Result<(), Error> {
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
    .map_err(|e| collision(e, "kv-store entries"))
}

/// Refuses an entry read back unlike the one written. An empty value
/// equals an absent one: the loader reads both as empty.
fn check_entry(kv: &KvEntry, sql: &KvEntry) -> Result<(), Error> {
    if kv == sql {
        return Ok(());
    }
    let mut d = crate::diff::Diff::default();
    diff_fields!(d, kv, sql, [perm, rule, group, feature, key, value]);
    Err(Error::Mismatch {
        record: format!("kv-store entry {:?} of rule {:?}", kv.key, kv.rule),
        diff: d.finish().unwrap_or_default(),
    })
}

/// One chunk of privacy pairs, their groups from `groups` when the copy
/// read every group once (else looked up), written and read back.
async fn write_pairs(
    tx: &mut dyn Tx,
    chunk: Vec<GroupPairs>,
    groups: &Option<GroupMap>,
    report: &mut FirewallReport,
) -> Result<(), Error> {
    let ids = resolve_groups(groups, tx, chunk.iter().map(|g| g.group)).await?;
    let mut rows = Vec::new();
    // What this chunk writes, by SQL group (pairs stored under a linked
    // session's id join its group).
    let mut expected = WrittenPairs::new();
    for g in chunk {
        let Some(&(gid, founder)) = crate::rules::firewall_group(g.group, |g| ids.get(&g)) else {
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
            .map_err(Error::contract)?;
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
    // Read back every group the chunk wrote to in one query, by the SQL ids
    // resolved above; compare each pair written (earlier chunks may have
    // written other pairs of a group).
    let groups: Vec<i64> = expected.keys().copied().collect();
    let read = load_pairs_stored(tx, &groups)
        .await
        .map_err(|e| Error::ReadBack {
            records: "privacy pairs".into(),
            source: Box::new(e),
        })?;
    report.privacy_pairs += check_pairs(&expected, read)?;
    Ok(())
}

/// The pairs a chunk wrote, by the SQL id of their group: the group's first
/// session and the pairs.
type WrittenPairs = BTreeMap<i64, (SessionId, BTreeMap<String, String>)>;

/// Compares the pairs a chunk wrote with those read back by group SQL id
/// (`read`: group id, real, pseudo), and returns how many were compared.
/// A group may hold pairs of earlier chunks too: only those written are
/// compared. A pair read back under another group is missing from its own.
fn check_pairs(written: &WrittenPairs, read: Vec<(i64, String, String)>) -> Result<u64, Error> {
    let mut by_group: HashMap<i64, BTreeMap<String, String>> = HashMap::new();
    for (gid, real, pseudo) in read {
        by_group.entry(gid).or_default().insert(real, pseudo);
    }
    let mut compared = 0;
    for (gid, (founder, pairs)) in written {
        let sql = by_group.remove(gid).unwrap_or_default();
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
        compared += pairs.len() as u64;
    }
    Ok(compared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(real: &str, pseudo: &str) -> (String, String) {
        (real.to_owned(), pseudo.to_owned())
    }

    fn written() -> WrittenPairs {
        let founder = SessionId([1, 2, 3, 4]);
        let pairs = BTreeMap::from([pair("alice", "p1"), pair("bob", "p2")]);
        BTreeMap::from([(7, (founder, pairs))])
    }

    fn read(rows: &[(i64, &str, &str)]) -> Vec<(i64, String, String)> {
        rows.iter()
            .map(|(g, r, p)| (*g, (*r).to_owned(), (*p).to_owned()))
            .collect()
    }

    #[test]
    fn pairs_read_back_as_written_pass_beside_earlier_ones() {
        // "carol" was written to group 7 by an earlier chunk.
        let rows = read(&[(7, "alice", "p1"), (7, "bob", "p2"), (7, "carol", "p3")]);
        assert_eq!(check_pairs(&written(), rows).unwrap(), 2);
    }

    #[test]
    fn a_pair_stored_under_another_group_or_changed_is_a_mismatch() {
        for rows in [
            read(&[(7, "alice", "p1"), (8, "bob", "p2")]),
            read(&[(7, "alice", "p1"), (7, "bob", "other")]),
            read(&[(7, "alice", "p1")]),
        ] {
            let err = check_pairs(&written(), rows).unwrap_err();
            assert!(
                matches!(&err, Error::Mismatch { record, .. } if record.starts_with("privacy pairs of group")),
                "{err}"
            );
            assert!(err.to_string().contains("bob"), "{err}");
        }
    }
}
