//! The sled backend and its on-disk layout.
//!
//! LiT's buckets, as [`crate::path`]-encoded keys in two trees:
//!
//! ```text
//! rules:    perm|temp / <rule> / global / <key>                                   -> value
//!           perm|temp / <rule> / session-kv-store / <group> / <key>               -> value
//!           perm|temp / <rule> / session-kv-store / <group> / feature-kv-store / <feature> / <key> -> value
//! privacy:  <group> / real-to-pseudo / <real>   -> pseudo
//!           <group> / pseudo-to-real / <pseudo> -> real
//! ```
//!
//! Values go through [`kvcodec`] ([`record`]). A transaction keeps its writes
//! in memory and applies them as one sled batch per tree at commit; writers
//! hold the store's write lock from begin to commit, so a read-then-write
//! closure is never interleaved with another writer. A group exists when the
//! sessions store's group index has members for it. sled calls run on
//! tokio's blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use store_support::off_executor;

use async_trait::async_trait;
use store_sessions::SessionId;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tombstone::KvDb;

use crate::{
    Error, KvEntry, KvTx, Mode, Namespace, PrivacyPair, PrivacyTx, Result, Scope, Store, check_key,
    check_namespace, check_pair, check_privacy_value, check_value, invalid, path,
};

/// The rule kv-stores tree.
pub const RULES_TREE: &str = "rules";
/// The privacy map tree.
pub const PRIVACY_TREE: &str = "privacy";
/// Bucket of permanent stores.
pub const PERM: &[u8] = b"perm";
/// Bucket of temporary stores.
pub const TEMP: &[u8] = b"temp";
/// Bucket of a rule's global store.
pub const GLOBAL: &[u8] = b"global";
/// Bucket of a rule's group stores.
pub const SESSION_KV_STORE: &[u8] = b"session-kv-store";
/// Bucket of a group's feature stores.
pub const FEATURE_KV_STORE: &[u8] = b"feature-kv-store";
/// Bucket of a group's real → pseudo map.
pub const REAL_TO_PSEUDO: &[u8] = b"real-to-pseudo";
/// Bucket of a group's pseudo → real map.
pub const PSEUDO_TO_REAL: &[u8] = b"pseudo-to-real";

/// The records stored in the trees. Released versions are never edited.
pub mod record {
    use serde::{Deserialize, Serialize};

    /// Version of [`ValueRecordV1`].
    pub const VALUE_V1: u8 = 1;
    /// Version of [`PrivacyValueRecordV1`].
    pub const PRIVACY_V1: u8 = 1;

    /// A kv-store value.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ValueRecordV1 {
        /// The opaque value.
        #[serde(with = "serde_bytes")]
        pub value: Vec<u8>,
    }

    /// The other side of a privacy pair.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PrivacyValueRecordV1 {
        /// The real or pseudo value.
        pub value: String,
    }
}

/// The bucket path of a namespace's scope.
pub fn scope_buckets(ns: &Namespace, scope: Scope) -> Vec<&[u8]> {
    let persistence = if scope.is_perm() { PERM } else { TEMP };
    let mut buckets = vec![persistence, ns.rule.as_bytes()];
    if scope.is_local() {
        buckets.extend([SESSION_KV_STORE, &ns.group.0[..]]);
        if !ns.feature.is_empty() {
            buckets.extend([FEATURE_KV_STORE, ns.feature.as_bytes()]);
        }
    } else {
        buckets.push(GLOBAL);
    }
    buckets
}

fn entry_key(ns: &Namespace, scope: Scope, key: &str) -> Result<Vec<u8>> {
    path::encode(&scope_buckets(ns, scope), key.as_bytes()).ok_or_else(|| {
        invalid(
            format!("rule {:?}", ns.rule),
            "name",
            "longer than 65535 bytes",
        )
    })
}

fn privacy_key(group: SessionId, direction: &[u8], value: &str) -> Vec<u8> {
    path::key_in(path::prefix(&[&group.0[..], direction]), value.as_bytes())
}

/// Decodes a kv-store value; the error names the tree and key.
pub fn decode_value(key: &[u8], raw: &[u8]) -> Result<Vec<u8>> {
    kvcodec::decode::<record::ValueRecordV1>(raw, record::VALUE_V1)
        .map(|r| r.value)
        .map_err(|e| {
            invalid(
                format!("tree {RULES_TREE}, key {}", hex::encode(key)),
                "value",
                e.to_string(),
            )
        })
}

/// Decodes a privacy value; the error names the tree and key.
pub fn decode_privacy(key: &[u8], raw: &[u8]) -> Result<String> {
    kvcodec::decode::<record::PrivacyValueRecordV1>(raw, record::PRIVACY_V1)
        .map(|r| r.value)
        .map_err(|e| {
            invalid(
                format!("tree {PRIVACY_TREE}, key {}", hex::encode(key)),
                "value",
                e.to_string(),
            )
        })
}

fn encode_value(value: &[u8]) -> Result<Vec<u8>> {
    kvcodec::encode(
        record::VALUE_V1,
        &record::ValueRecordV1 {
            value: value.to_vec(),
        },
    )
    .map_err(|e| invalid("kv-store value", "value", e.to_string()))
}

fn encode_privacy(value: &str) -> Result<Vec<u8>> {
    kvcodec::encode(
        record::PRIVACY_V1,
        &record::PrivacyValueRecordV1 {
            value: value.to_owned(),
        },
    )
    .map_err(|e| invalid("privacy value", "value", e.to_string()))
}

/// Why a key of the firewall trees could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where: the bucket path and key (see [`path::Path::display`]).
    pub path: String,
    /// What is wrong.
    pub reason: String,
    /// True when the layout is fine but the value did not decode.
    pub decode: bool,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for ParseError {}

fn layout(key: &[u8], reason: impl Into<String>) -> ParseError {
    ParseError {
        path: path::decode(key).map_or_else(|_| format!("0x{}", hex::encode(key)), |p| p.display()),
        reason: reason.into(),
        decode: false,
    }
}

fn utf8(key: &[u8], what: &str, bytes: Vec<u8>) -> std::result::Result<String, ParseError> {
    String::from_utf8(bytes).map_err(|_| layout(key, format!("the {what} is not UTF-8")))
}

/// Reads one entry of the rules tree, checking LiT's layout
/// strictly: under `perm`/`temp` only rule buckets; under a rule only
/// `global` and `session-kv-store`; under a group only entries and
/// `feature-kv-store`; under that only feature buckets of entries.
pub fn parse_entry(key: &[u8], raw: &[u8]) -> std::result::Result<KvEntry, ParseError> {
    let p = path::decode(key).map_err(|e| layout(key, e))?;
    let b = &p.buckets;
    let perm = match b.first().map(Vec::as_slice) {
        Some(PERM) => true,
        Some(TEMP) => false,
        _ => return Err(layout(key, "expected a perm or temp bucket at the top")),
    };
    if b.len() < 3 {
        return Err(layout(key, "a value where only buckets are allowed"));
    }
    let rule = utf8(key, "rule name", b[1].clone())?;
    let (group, feature) = match (b[2].as_slice(), b.len()) {
        (GLOBAL, 3) => (None, None),
        (GLOBAL, _) => return Err(layout(key, "a nested bucket inside a global store")),
        (SESSION_KV_STORE, 4) | (SESSION_KV_STORE, 6) => {
            let group: [u8; 4] = b[3]
                .as_slice()
                .try_into()
                .map_err(|_| layout(key, "a group bucket whose name is not a 4-byte id"))?;
            if b.len() == 4 {
                (Some(SessionId(group)), None)
            } else if b[4] == FEATURE_KV_STORE {
                (
                    Some(SessionId(group)),
                    Some(utf8(key, "feature name", b[5].clone())?),
                )
            } else {
                return Err(layout(key, "an unexpected bucket inside a group store"));
            }
        }
        (SESSION_KV_STORE, _) => {
            return Err(layout(
                key,
                "an unexpected bucket depth under session-kv-store",
            ));
        }
        _ => {
            return Err(layout(
                key,
                "an unexpected bucket under a rule (only global and session-kv-store)",
            ));
        }
    };
    let entry_key = utf8(key, "entry key", p.key)?;
    let value = decode_value(key, raw).map_err(|e| ParseError {
        decode: true,
        ..layout(key, e.to_string())
    })?;
    Ok(KvEntry {
        perm,
        rule,
        group,
        feature,
        key: entry_key,
        value,
    })
}

/// One key of the privacy tree: the group, the direction (true: real to
/// pseudo), and the two values; empty values are refused.
pub fn parse_pair(
    key: &[u8],
    raw: &[u8],
) -> std::result::Result<(SessionId, bool, String, String), ParseError> {
    let p = path::decode(key).map_err(|e| layout(key, e))?;
    if p.buckets.len() != 2 {
        return Err(layout(key, "expected <group>/<direction>/<value>"));
    }
    let group: [u8; 4] = p.buckets[0]
        .as_slice()
        .try_into()
        .map_err(|_| layout(key, "a group bucket whose name is not a 4-byte id"))?;
    let forward = match p.buckets[1].as_slice() {
        REAL_TO_PSEUDO => true,
        PSEUDO_TO_REAL => false,
        _ => {
            return Err(layout(
                key,
                "an unexpected bucket (only real-to-pseudo and pseudo-to-real)",
            ));
        }
    };
    let from = utf8(key, "value", p.key)?;
    let to = decode_privacy(key, raw).map_err(|e| ParseError {
        decode: true,
        ..layout(key, e.to_string())
    })?;
    if from.is_empty() || to.is_empty() {
        return Err(layout(key, "an empty privacy value"));
    }
    Ok((SessionId(group), forward, from, to))
}

/// The sled key of an entry.
pub fn entry_sled_key(e: &KvEntry) -> Result<Vec<u8>> {
    let ns = Namespace::new(
        e.rule.clone(),
        e.group.unwrap_or(SessionId([0; 4])),
        e.feature.clone().unwrap_or_default(),
    );
    let scope = match (e.perm, e.group.is_some()) {
        (true, false) => Scope::Global,
        (false, false) => Scope::GlobalTemp,
        (true, true) => Scope::Local,
        (false, true) => Scope::LocalTemp,
    };
    if e.group.is_none() && e.feature.is_some() {
        return Err(invalid(
            format!("kv entry {:?} of rule {:?}", e.key, e.rule),
            "feature",
            "a feature store needs a group",
        ));
    }
    entry_key(&ns, scope, &e.key)
}

/// The firewall store on sled.
#[derive(Clone)]
pub struct KvStore {
    kv: KvDb,
    rules: sled::Tree,
    privacy: sled::Tree,
    groups: sled::Tree,
    write: Arc<Mutex<()>>,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("path", &self.kv.path())
            .finish()
    }
}

impl KvStore {
    /// The firewall store of an open key-value database (the sessions
    /// store's group index of the same database says which groups exist).
    ///
    /// Errors: [`Error::Tombstoned`] when the database was retired.
    pub fn open(kv: &KvDb) -> Result<KvStore> {
        kv.check()?;
        Ok(KvStore {
            kv: kv.clone(),
            rules: kv.tree(RULES_TREE)?,
            privacy: kv.tree(PRIVACY_TREE)?,
            groups: kv.tree(store_sessions::kv::GROUP_INDEX_TREE)?,
            write: Arc::new(Mutex::new(())),
        })
    }

    async fn group_exists(&self, group: SessionId) -> Result<bool> {
        let groups = self.groups.clone();
        off_executor(move || Ok(groups.scan_prefix(group.0).next().transpose()?.is_some())).await
    }

    async fn read(&self, tree: &sled::Tree, key: Vec<u8>) -> Result<Option<sled::IVec>> {
        let tree = tree.clone();
        off_executor(move || Ok(tree.get(key)?)).await
    }

    async fn apply(
        &self,
        tree: &sled::Tree,
        writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let (tree, kv) = (tree.clone(), self.kv.clone());
        off_executor(move || {
            kv.write(&[&tree], |w| {
                for (k, v) in &writes {
                    match v {
                        Some(v) => w.insert(0, k, v)?,
                        None => w.remove(0, k)?,
                    };
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<Error>>(())
            })
            .map_err(tombstone::transaction_error)?;
            kv.flush()?;
            Ok(())
        })
        .await
    }

    /// Writes entries as they are, without checking their groups, as one
    /// batch. For restoring a dump and for building databases.
    pub async fn import_entries(&self, entries: Vec<KvEntry>) -> Result<()> {
        let _guard = self.write.lock().await;
        let mut writes = BTreeMap::new();
        for entry in &entries {
            entry.check()?;
            writes.insert(entry_sled_key(entry)?, Some(encode_value(&entry.value)?));
        }
        self.apply(&self.rules, writes).await
    }

    /// Writes pairs (both directions) as they are, without checking their
    /// groups or uniqueness, as one batch. For restoring a dump and for
    /// building databases.
    pub async fn import_pairs(&self, pairs: Vec<PrivacyPair>) -> Result<()> {
        let _guard = self.write.lock().await;
        let mut writes = BTreeMap::new();
        for pair in &pairs {
            pair.check()?;
            writes.insert(
                privacy_key(pair.group, REAL_TO_PSEUDO, &pair.real),
                Some(encode_privacy(&pair.pseudo)?),
            );
            writes.insert(
                privacy_key(pair.group, PSEUDO_TO_REAL, &pair.pseudo),
                Some(encode_privacy(&pair.real)?),
            );
        }
        self.apply(&self.privacy, writes).await
    }

    async fn guard(&self, mode: Mode) -> Option<OwnedMutexGuard<()>> {
        match mode {
            Mode::Update => Some(self.write.clone().lock_owned().await),
            Mode::View => None,
        }
    }
}

struct KvKvTx {
    store: KvStore,
    ns: Namespace,
    mode: Mode,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    _guard: Option<OwnedMutexGuard<()>>,
}

#[async_trait]
impl KvTx for KvKvTx {
    async fn get(&mut self, scope: Scope, key: &str) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        let k = entry_key(&self.ns, scope, key)?;
        if let Some(pending) = self.writes.get(&k) {
            return pending
                .as_deref()
                .map(|raw| decode_value(&k, raw))
                .transpose();
        }
        match self.store.read(&self.store.rules, k.clone()).await? {
            None => Ok(None),
            Some(raw) => decode_value(&k, &raw).map(Some),
        }
    }

    async fn set(&mut self, scope: Scope, key: &str, value: &[u8]) -> Result<()> {
        check_key(key)?;
        check_value(key, value)?;
        if self.mode == Mode::View {
            return Err(Error::ReadOnly);
        }
        if scope.is_local() && !self.store.group_exists(self.ns.group).await? {
            return Err(Error::UnknownGroup {
                group: self.ns.group,
            });
        }
        self.writes
            .insert(entry_key(&self.ns, scope, key)?, Some(encode_value(value)?));
        Ok(())
    }

    async fn del(&mut self, scope: Scope, key: &str) -> Result<()> {
        check_key(key)?;
        if self.mode == Mode::View {
            return Err(Error::ReadOnly);
        }
        self.writes.insert(entry_key(&self.ns, scope, key)?, None);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let this = *self;
        this.store.apply(&this.store.rules, this.writes).await
    }
}

struct KvPrivacyTx {
    store: KvStore,
    group: SessionId,
    mode: Mode,
    known: bool,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    _guard: Option<OwnedMutexGuard<()>>,
}

impl KvPrivacyTx {
    async fn check_group(&mut self) -> Result<()> {
        if !self.known {
            if !self.store.group_exists(self.group).await? {
                return Err(Error::UnknownGroup { group: self.group });
            }
            self.known = true;
        }
        Ok(())
    }

    async fn lookup(&mut self, direction: &[u8], value: &str) -> Result<Option<String>> {
        let k = privacy_key(self.group, direction, value);
        if let Some(pending) = self.writes.get(&k) {
            return pending
                .as_deref()
                .map(|raw| decode_privacy(&k, raw))
                .transpose();
        }
        match self.store.read(&self.store.privacy, k.clone()).await? {
            None => Ok(None),
            Some(raw) => decode_privacy(&k, &raw).map(Some),
        }
    }
}

#[async_trait]
impl PrivacyTx for KvPrivacyTx {
    async fn new_pair(&mut self, real: &str, pseudo: &str) -> Result<()> {
        if self.mode == Mode::View {
            return Err(Error::ReadOnly);
        }
        check_pair(real, pseudo)?;
        self.check_group().await?;
        if self.lookup(REAL_TO_PSEUDO, real).await?.is_some() {
            return Err(Error::DuplicateRealValue {
                group: self.group,
                real: real.to_owned(),
            });
        }
        if self.lookup(PSEUDO_TO_REAL, pseudo).await?.is_some() {
            return Err(Error::DuplicatePseudoValue {
                group: self.group,
                pseudo: pseudo.to_owned(),
            });
        }
        self.writes.insert(
            privacy_key(self.group, REAL_TO_PSEUDO, real),
            Some(encode_privacy(pseudo)?),
        );
        self.writes.insert(
            privacy_key(self.group, PSEUDO_TO_REAL, pseudo),
            Some(encode_privacy(real)?),
        );
        Ok(())
    }

    async fn pseudo_to_real(&mut self, pseudo: &str) -> Result<String> {
        check_privacy_value("pseudo", pseudo)?;
        self.check_group().await?;
        self.lookup(PSEUDO_TO_REAL, pseudo)
            .await?
            .ok_or_else(|| Error::NoSuchKey {
                group: self.group,
                key: pseudo.to_owned(),
            })
    }

    async fn real_to_pseudo(&mut self, real: &str) -> Result<String> {
        check_privacy_value("real", real)?;
        self.check_group().await?;
        self.lookup(REAL_TO_PSEUDO, real)
            .await?
            .ok_or_else(|| Error::NoSuchKey {
                group: self.group,
                key: real.to_owned(),
            })
    }

    async fn fetch_all_pairs(&mut self) -> Result<BTreeMap<String, String>> {
        self.check_group().await?;
        let prefix = path::prefix(&[&self.group.0[..], REAL_TO_PSEUDO]);
        let tree = self.store.privacy.clone();
        let scan_prefix = prefix.clone();
        let mut raw: BTreeMap<Vec<u8>, Vec<u8>> = off_executor(move || {
            let mut out = BTreeMap::new();
            for item in tree.scan_prefix(scan_prefix) {
                let (k, v) = item?;
                out.insert(k.to_vec(), v.to_vec());
            }
            Ok::<_, Error>(out)
        })
        .await?;
        for (k, v) in self.writes.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            match v {
                Some(v) => raw.insert(k.clone(), v.clone()),
                None => raw.remove(k),
            };
        }
        let mut pairs = BTreeMap::new();
        for (k, v) in raw {
            let real = path::decode(&k)
                .map_err(|e| {
                    invalid(
                        format!("tree {PRIVACY_TREE}, key {}", hex::encode(&k)),
                        "key",
                        e,
                    )
                })?
                .key;
            let real = String::from_utf8(real).map_err(|_| {
                invalid(
                    format!("tree {PRIVACY_TREE}, key {}", hex::encode(&k)),
                    "key",
                    "not UTF-8",
                )
            })?;
            pairs.insert(real, decode_privacy(&k, &v)?);
        }
        Ok(pairs)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let this = *self;
        this.store.apply(&this.store.privacy, this.writes).await
    }
}

#[async_trait]
impl Store for KvStore {
    async fn begin_kv(&self, ns: Namespace, mode: Mode) -> Result<Box<dyn KvTx>> {
        check_namespace(&ns)?;
        Ok(Box::new(KvKvTx {
            _guard: self.guard(mode).await,
            store: self.clone(),
            ns,
            mode,
            writes: BTreeMap::new(),
        }))
    }

    async fn begin_privacy(&self, group: SessionId, mode: Mode) -> Result<Box<dyn PrivacyTx>> {
        Ok(Box::new(KvPrivacyTx {
            _guard: self.guard(mode).await,
            store: self.clone(),
            group,
            mode,
            known: false,
            writes: BTreeMap::new(),
        }))
    }

    async fn kv_entries(&self) -> Result<Vec<KvEntry>> {
        let rules = self.rules.clone();
        off_executor(move || {
            let mut out = Vec::new();
            for item in rules.iter() {
                let (k, v) = item?;
                out.push(parse_entry(&k, &v).map_err(|e| {
                    invalid(
                        format!("tree {RULES_TREE} at {}", e.path),
                        "entry",
                        e.reason,
                    )
                })?);
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn privacy_pairs(&self) -> Result<Vec<PrivacyPair>> {
        let privacy = self.privacy.clone();
        off_executor(move || {
            let mut out = Vec::new();
            for item in privacy.iter() {
                let (k, v) = item?;
                let (group, forward, from, to) = parse_pair(&k, &v).map_err(|e| {
                    invalid(
                        format!("tree {PRIVACY_TREE} at {}", e.path),
                        "pair",
                        e.reason,
                    )
                })?;
                if forward {
                    out.push(PrivacyPair {
                        group,
                        real: from,
                        pseudo: to,
                    });
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn delete_temp_kv_stores(&self) -> Result<()> {
        let _guard = self.write.lock().await;
        let (rules, kv) = (self.rules.clone(), self.kv.clone());
        off_executor(move || {
            let doomed = rules
                .scan_prefix(path::prefix(&[TEMP]))
                .keys()
                .collect::<std::result::Result<Vec<_>, _>>()?;
            kv.write(&[&rules], |w| {
                for k in &doomed {
                    w.remove(0, k)?;
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<Error>>(())
            })
            .map_err(tombstone::transaction_error)?;
            kv.flush()?;
            Ok(())
        })
        .await
    }
}
