//! The sled backend and its on-disk records.
//!
//! Layout (LiT's `session` bucket with its two indexes, as trees):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `session` | 33-byte local public key | [`record::SessionRecordV1`] |
//! | `session-id-index` | 4-byte session id | [`record::IdIndexRecordV1`]: the key of the session with that id, and its group |
//! | `session-group-index` | 4-byte group id ‖ 8-byte big-endian sequence | [`record::GroupMemberRecordV1`]: a member's id |
//!
//! Legacy databases may hold several sessions with one id; the id index
//! then points at the newest. Writes are serialised by one mutex per store
//! and applied to the three trees in one sled transaction, then flushed.
//! All sled calls run on tokio's blocking pool.

use std::sync::{Arc, Mutex};
use store_support::off_executor;

use async_trait::async_trait;
use sled::transaction::ConflictableTransactionError;
use tombstone::KvDb;

use crate::types::{NewSession, PublicKey, Session, SessionId, SessionState, SessionType};
use crate::{
    Error, Result, Store, build_session, generate_keys, invalid, not_found_id, not_found_key,
    revoked_at_for,
};

/// The sessions tree.
pub const SESSIONS_TREE: &str = "session";
/// The id index tree.
pub const ID_INDEX_TREE: &str = "session-id-index";
/// The group index tree.
pub const GROUP_INDEX_TREE: &str = "session-group-index";

const BACKEND: &str = "kv";

/// The records stored in the trees. Released versions are never edited.
pub mod record {
    use std::collections::BTreeMap;

    use kvcodec::TimeV1;
    use serde::{Deserialize, Serialize};
    use store_accounts::AccountId;

    use crate::types::{
        Caveat, MacaroonRecipe, Permission, PrivacyFlags, Secret, Session, SessionId, SessionState,
        SessionType,
    };
    use crate::{Result, invalid};

    /// Version of [`SessionRecordV1`].
    pub const SESSION_V1: u8 = 1;
    /// Version of [`IdIndexRecordV1`].
    pub const ID_INDEX_V1: u8 = 1;
    /// Version of [`GroupMemberRecordV1`].
    pub const GROUP_MEMBER_V1: u8 = 1;

    /// A caveat.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CaveatRecordV1 {
        /// Caveat id.
        #[serde(with = "serde_bytes")]
        pub id: Vec<u8>,
        /// Verification id; absent for first-party caveats.
        pub verification_id: Option<serde_bytes::ByteBuf>,
        /// Location; empty for none.
        pub location: String,
    }

    /// A macaroon recipe.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RecipeRecordV1 {
        /// (entity, action) pairs in order.
        pub permissions: Vec<(String, String)>,
        /// Caveats in order.
        pub caveats: Vec<CaveatRecordV1>,
    }

    /// A feature config entry.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct FeatureConfigRecordV1 {
        /// The feature.
        pub name: String,
        /// Its opaque config.
        #[serde(with = "serde_bytes")]
        pub config: Vec<u8>,
    }

    /// One session.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SessionRecordV1 {
        /// Session id.
        pub id: [u8; 4],
        /// Label.
        pub label: String,
        /// State number.
        pub state: u8,
        /// Type number.
        pub session_type: u8,
        /// Expiry.
        pub expiry: TimeV1,
        /// Creation time.
        pub created_at: TimeV1,
        /// Revocation time.
        pub revoked_at: Option<TimeV1>,
        /// Mailbox server address.
        pub server_addr: String,
        /// Dev server flag.
        pub dev_server: bool,
        /// Macaroon root key id.
        pub macaroon_root_key: u64,
        /// Recipe.
        pub recipe: Option<RecipeRecordV1>,
        /// Pairing secret (14 bytes).
        #[serde(with = "serde_bytes")]
        pub pairing_secret: Vec<u8>,
        /// Local private key (32 bytes).
        #[serde(with = "serde_bytes")]
        pub local_private_key: Vec<u8>,
        /// Local public key (33 bytes); must equal the tree key.
        #[serde(with = "serde_bytes")]
        pub local_public_key: Vec<u8>,
        /// Remote public key (33 bytes).
        pub remote_public_key: Option<serde_bytes::ByteBuf>,
        /// Feature configs, by name.
        pub feature_config: Option<Vec<FeatureConfigRecordV1>>,
        /// Privacy mapper flag.
        pub with_privacy_mapper: bool,
        /// Privacy flag bitmask.
        pub privacy_flags: u64,
        /// Group id.
        pub group_id: [u8; 4],
        /// Linked account.
        pub account_id: Option<[u8; 8]>,
    }

    /// The id index entry of a session id.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct IdIndexRecordV1 {
        /// The session's local public key (33 bytes).
        #[serde(with = "serde_bytes")]
        pub key: Vec<u8>,
        /// Its group.
        pub group: [u8; 4],
    }

    /// A group index entry.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct GroupMemberRecordV1 {
        /// The member's id.
        pub session: [u8; 4],
    }

    fn fixed<const N: usize>(record: &str, field: &'static str, bytes: &[u8]) -> Result<[u8; N]> {
        bytes.try_into().map_err(|_| {
            invalid(
                record,
                field,
                format!("{} bytes, expected {N}", bytes.len()),
            )
        })
    }

    impl SessionRecordV1 {
        /// The record of a session.
        pub fn from_session(s: &Session) -> SessionRecordV1 {
            SessionRecordV1 {
                id: s.id.0,
                label: s.label.clone(),
                state: s.state.code(),
                session_type: s.session_type.code(),
                expiry: TimeV1::from_time(s.expiry),
                created_at: TimeV1::from_time(s.created_at),
                revoked_at: s.revoked_at.map(TimeV1::from_time),
                server_addr: s.server_addr.clone(),
                dev_server: s.dev_server,
                macaroon_root_key: s.macaroon_root_key,
                recipe: s.macaroon_recipe.as_ref().map(|r| RecipeRecordV1 {
                    permissions: r
                        .permissions
                        .iter()
                        .map(|p| (p.entity.clone(), p.action.clone()))
                        .collect(),
                    caveats: r
                        .caveats
                        .iter()
                        .map(|c| CaveatRecordV1 {
                            id: c.id.clone(),
                            verification_id: c
                                .verification_id
                                .clone()
                                .map(serde_bytes::ByteBuf::from),
                            location: c.location.clone(),
                        })
                        .collect(),
                }),
                pairing_secret: s.pairing_secret.0.to_vec(),
                local_private_key: s.local_private_key.0.to_vec(),
                local_public_key: s.local_public_key.to_vec(),
                remote_public_key: s
                    .remote_public_key
                    .map(|k| serde_bytes::ByteBuf::from(k.to_vec())),
                feature_config: s.feature_config.as_ref().map(|m| {
                    m.iter()
                        .map(|(name, config)| FeatureConfigRecordV1 {
                            name: name.clone(),
                            config: config.clone(),
                        })
                        .collect()
                }),
                with_privacy_mapper: s.with_privacy_mapper,
                privacy_flags: s.privacy_flags.bits(),
                group_id: s.group_id.0,
                account_id: s.account_id.map(|a| a.0),
            }
        }

        /// The session of a record, checking every field. A recipe or
        /// feature map stored empty is returned as stored: normalising it is
        /// the migration's business (docs/design.md §5.4), not the decoder's.
        pub fn to_session(&self) -> Result<Session> {
            let id = SessionId(self.id);
            let rec = format!("session {id}");
            let time = |t: TimeV1, field| {
                t.to_time()
                    .ok_or_else(|| invalid(&rec, field, "not a valid time"))
            };
            let revoked_at = match self.revoked_at {
                None => None,
                Some(t) => Some(time(t, "revoked_at")?),
            };
            let remote_public_key = match &self.remote_public_key {
                None => None,
                Some(k) => Some(fixed::<33>(&rec, "remote_public_key", k)?),
            };
            let feature_config = self.feature_config.as_ref().map(|entries| {
                entries
                    .iter()
                    .map(|e| (e.name.clone(), e.config.clone()))
                    .collect::<BTreeMap<_, _>>()
            });
            Ok(Session {
                id,
                label: self.label.clone(),
                state: SessionState::from_code(i64::from(self.state)).ok_or_else(|| {
                    invalid(&rec, "state", format!("unknown state {}", self.state))
                })?,
                session_type: SessionType::from_code(i64::from(self.session_type)).ok_or_else(
                    || {
                        invalid(
                            &rec,
                            "session_type",
                            format!("unknown type {}", self.session_type),
                        )
                    },
                )?,
                expiry: time(self.expiry, "expiry")?,
                created_at: time(self.created_at, "created_at")?,
                revoked_at,
                server_addr: self.server_addr.clone(),
                dev_server: self.dev_server,
                macaroon_root_key: self.macaroon_root_key,
                macaroon_recipe: self.recipe.as_ref().map(|r| MacaroonRecipe {
                    permissions: r
                        .permissions
                        .iter()
                        .map(|(entity, action)| Permission {
                            entity: entity.clone(),
                            action: action.clone(),
                        })
                        .collect(),
                    caveats: r
                        .caveats
                        .iter()
                        .map(|c| Caveat {
                            id: c.id.clone(),
                            verification_id: c.verification_id.clone().map(|b| b.into_vec()),
                            location: c.location.clone(),
                        })
                        .collect(),
                }),
                pairing_secret: Secret(fixed::<14>(&rec, "pairing_secret", &self.pairing_secret)?),
                local_private_key: Secret(fixed::<32>(
                    &rec,
                    "local_private_key",
                    &self.local_private_key,
                )?),
                local_public_key: fixed::<33>(&rec, "local_public_key", &self.local_public_key)?,
                remote_public_key,
                feature_config,
                with_privacy_mapper: self.with_privacy_mapper,
                privacy_flags: PrivacyFlags::from_bits(self.privacy_flags)?,
                group_id: SessionId(self.group_id),
                account_id: self.account_id.map(AccountId),
            })
        }
    }
}

/// The error of a value that did not decode. The record's name is written
/// only when one fails: the migration decodes every session of a database.
fn codec_err(tree: &str, key: &[u8]) -> impl Fn(kvcodec::CodecError) -> Error {
    move |e| {
        invalid(
            format!("tree {tree}, key {}", hex::encode(key)),
            "value",
            e.to_string(),
        )
    }
}

/// Decodes one entry of the sessions tree; the error names the tree and key.
pub fn decode_session(key: &[u8], value: &[u8]) -> Result<Session> {
    let rec: record::SessionRecordV1 =
        kvcodec::decode(value, record::SESSION_V1).map_err(codec_err(SESSIONS_TREE, key))?;
    if rec.local_public_key != key {
        return Err(invalid(
            format!("tree {SESSIONS_TREE}, key {}", hex::encode(key)),
            "local_public_key",
            "differs from the key it is stored under",
        ));
    }
    rec.to_session()
}

fn encode_session(s: &Session) -> Result<Vec<u8>> {
    kvcodec::encode(
        record::SESSION_V1,
        &record::SessionRecordV1::from_session(s),
    )
    .map_err(|e| invalid(format!("session {}", s.id), "value", e.to_string()))
}

fn encode_index(s: &Session) -> Result<Vec<u8>> {
    let rec = record::IdIndexRecordV1 {
        key: s.local_public_key.to_vec(),
        group: s.group_id.0,
    };
    kvcodec::encode(record::ID_INDEX_V1, &rec)
        .map_err(|e| invalid(format!("session {}", s.id), "id index", e.to_string()))
}

fn encode_member(id: SessionId) -> Result<Vec<u8>> {
    kvcodec::encode(
        record::GROUP_MEMBER_V1,
        &record::GroupMemberRecordV1 { session: id.0 },
    )
    .map_err(|e| invalid(format!("session {id}"), "group index", e.to_string()))
}

/// The members of `group` in creation order, with their keys in the group
/// index tree; empty for an unknown group. Other stores of the same
/// database use it to resolve groups.
pub fn group_index(groups: &sled::Tree, group: SessionId) -> Result<Vec<(sled::IVec, SessionId)>> {
    let mut out = Vec::new();
    for item in groups.scan_prefix(group.0) {
        let (k, v) = item?;
        let m: record::GroupMemberRecordV1 = kvcodec::decode(&v, record::GROUP_MEMBER_V1)
            .map_err(codec_err(GROUP_INDEX_TREE, &k))?;
        out.push((k, SessionId(m.session)));
    }
    Ok(out)
}

/// The sessions store on sled.
#[derive(Clone)]
pub struct KvStore {
    kv: KvDb,
    sessions: sled::Tree,
    ids: sled::Tree,
    groups: sled::Tree,
    accounts: sled::Tree,
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
    /// The sessions store of an open key-value database (the accounts store
    /// of the same database is consulted for linked accounts).
    ///
    /// Errors: [`Error::Tombstoned`] when the database was retired.
    pub fn open(kv: &KvDb) -> Result<KvStore> {
        kv.check()?;
        Ok(KvStore {
            kv: kv.clone(),
            sessions: kv.tree(SESSIONS_TREE)?,
            ids: kv.tree(ID_INDEX_TREE)?,
            groups: kv.tree(GROUP_INDEX_TREE)?,
            accounts: kv.tree(store_accounts::kv::TREE)?,
            write: Arc::new(Mutex::new(())),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.write.lock().map_err(|_| Error::Backend {
            backend: BACKEND,
            source: "write lock poisoned".into(),
        })
    }

    fn by_key(&self, key: &PublicKey) -> Result<Option<Session>> {
        match self.sessions.get(key)? {
            None => Ok(None),
            Some(v) => decode_session(key, &v).map(Some),
        }
    }

    fn index(&self, id: SessionId) -> Result<Option<record::IdIndexRecordV1>> {
        match self.ids.get(id.0)? {
            None => Ok(None),
            Some(v) => kvcodec::decode(&v, record::ID_INDEX_V1)
                .map(Some)
                .map_err(codec_err(ID_INDEX_TREE, &id.0)),
        }
    }

    fn by_id(&self, id: SessionId) -> Result<Session> {
        let idx = self.index(id)?.ok_or_else(|| not_found_id(id))?;
        let key: PublicKey = idx.key.as_slice().try_into().map_err(|_| {
            invalid(
                format!("tree {ID_INDEX_TREE}, key {id}"),
                "key",
                "not 33 bytes",
            )
        })?;
        self.by_key(&key)?.ok_or_else(|| not_found_id(id))
    }

    fn members(&self, group: SessionId) -> Result<Vec<(sled::IVec, SessionId)>> {
        let mut out = Vec::new();
        for item in self.groups.scan_prefix(group.0) {
            let (k, v) = item?;
            let m: record::GroupMemberRecordV1 = kvcodec::decode(&v, record::GROUP_MEMBER_V1)
                .map_err(codec_err(GROUP_INDEX_TREE, &k))?;
            out.push((k, SessionId(m.session)));
        }
        Ok(out)
    }

    fn next_member_key(&self, group: SessionId) -> Result<Vec<u8>> {
        let next = match self.groups.scan_prefix(group.0).next_back() {
            None => 0,
            Some(item) => {
                let (k, _) = item?;
                let seq: [u8; 8] = k[4..].try_into().map_err(|_| {
                    invalid(format!("tree {GROUP_INDEX_TREE}"), "key", "not 12 bytes")
                })?;
                u64::from_be_bytes(seq) + 1
            }
        };
        let mut key = group.0.to_vec();
        key.extend_from_slice(&next.to_be_bytes());
        Ok(key)
    }

    fn all(&self) -> Result<Vec<Session>> {
        let mut out = Vec::new();
        for item in self.sessions.iter() {
            let (k, v) = item?;
            out.push(decode_session(&k, &v)?);
        }
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    fn put(&self, s: &Session) -> Result<()> {
        let value = encode_session(s)?;
        self.write(|w| {
            w.insert(0, &s.local_public_key[..], &value)?;
            Ok(())
        })?;
        self.kv.flush()?;
        Ok(())
    }

    /// One tracked transaction over the sessions (0), id index (1) and group
    /// index (2) trees.
    fn write<T>(
        &self,
        f: impl Fn(
            &mut tombstone::Writes<'_>,
        ) -> std::result::Result<T, ConflictableTransactionError<Error>>,
    ) -> Result<T> {
        self.kv
            .write(&[&self.sessions, &self.ids, &self.groups], f)
            .map_err(tombstone::transaction_error)
    }

    /// Writes the session and its index entries in one transaction, and
    /// flushes.
    fn insert_new(&self, s: &Session, index_it: bool) -> Result<()> {
        self.insert_unflushed(s, index_it)?;
        self.kv.flush()?;
        Ok(())
    }

    fn insert_unflushed(&self, s: &Session, index_it: bool) -> Result<()> {
        let value = encode_session(s)?;
        let index = encode_index(s)?;
        let member_key = self.next_member_key(s.group_id)?;
        let member = encode_member(s.id)?;
        self.write(|w| {
            w.insert(0, &s.local_public_key[..], &value)?;
            if index_it {
                w.insert(1, &s.id.0[..], &index)?;
            }
            w.insert(2, &member_key, &member)?;
            Ok(())
        })
    }

    /// Removes a session and its index entries in one transaction.
    fn remove(&self, doomed: &[Session]) -> Result<()> {
        let mut member_keys = Vec::new();
        for s in doomed {
            for (k, id) in self.members(s.group_id)? {
                if id == s.id {
                    member_keys.push(k);
                }
            }
        }
        self.write(|w| {
            for s in doomed {
                w.remove(0, &s.local_public_key[..])?;
                w.remove(1, &s.id.0[..])?;
            }
            for k in &member_keys {
                w.remove(2, k)?;
            }
            Ok(())
        })?;
        self.kv.flush()?;
        Ok(())
    }

    /// Writes `sessions` as they are, in order, without the business rules,
    /// keeping the id index on the newest session of an id (as legacy
    /// databases do), with one flush at the end. For restoring a dump and
    /// for building databases, including legacy shapes such as sessions
    /// sharing an id.
    pub async fn import_sessions(&self, sessions: Vec<Session>) -> Result<()> {
        let this = self.clone();
        off_executor(move || {
            let _guard = this.lock()?;
            for session in &sessions {
                let newest = match this.index(session.id)? {
                    None => true,
                    Some(_) => this
                        .by_id(session.id)
                        .map_or(true, |cur| cur.created_at <= session.created_at),
                };
                this.insert_unflushed(session, newest)?;
            }
            this.kv.flush()?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Store for KvStore {
    async fn new_session(&self, new: NewSession) -> Result<Session> {
        let this = self.clone();
        off_executor(move || {
            let _guard = this.lock()?;
            if let Some(account) = new.account
                && this.accounts.get(account.0)?.is_none()
            {
                return Err(Error::AccountNotFound { id: account });
            }
            if let Some(group) = new.linked_group {
                let members = this.members(group)?;
                if members.is_empty() {
                    return Err(Error::UnknownGroup { group });
                }
                for (_, id) in members {
                    if !this.by_id(id)?.state.is_terminal() {
                        return Err(Error::GroupStillActive { group });
                    }
                }
            }
            let keys = generate_keys(|id| Ok(this.ids.contains_key(id.0)?))?;
            let session = build_session(new, keys)?;
            this.insert_new(&session, true)?;
            Ok(session)
        })
        .await
    }

    async fn session(&self, id: SessionId) -> Result<Session> {
        let this = self.clone();
        off_executor(move || this.by_id(id)).await
    }

    async fn session_by_local_key(&self, key: &PublicKey) -> Result<Session> {
        let this = self.clone();
        let key = *key;
        off_executor(move || this.by_key(&key)?.ok_or_else(|| not_found_key(&key))).await
    }

    async fn list_sessions(&self) -> Result<Vec<Session>> {
        let this = self.clone();
        off_executor(move || this.all()).await
    }

    async fn list_sessions_by_type(&self, session_type: SessionType) -> Result<Vec<Session>> {
        let mut all = self.list_sessions().await?;
        all.retain(|s| s.session_type == session_type);
        Ok(all)
    }

    async fn list_sessions_by_state(&self, state: SessionState) -> Result<Vec<Session>> {
        let mut all = self.list_sessions().await?;
        all.retain(|s| s.state == state);
        Ok(all)
    }

    async fn update_remote_public_key(&self, id: SessionId, key: PublicKey) -> Result<()> {
        let this = self.clone();
        off_executor(move || {
            let _guard = this.lock()?;
            let mut s = this.by_id(id)?;
            s.remote_public_key = Some(key);
            this.put(&s)
        })
        .await
    }

    async fn shift_state(&self, id: SessionId, to: SessionState) -> Result<()> {
        let this = self.clone();
        off_executor(move || {
            let _guard = this.lock()?;
            let mut s = this.by_id(id)?;
            if s.state == to {
                return Ok(());
            }
            if !s.state.can_shift_to(to) {
                return Err(Error::IllegalStateShift {
                    id,
                    from: s.state,
                    to,
                });
            }
            if let Some(t) = revoked_at_for(to) {
                s.revoked_at = Some(t);
            }
            s.state = to;
            this.put(&s)
        })
        .await
    }

    async fn delete_reserved_session(&self, id: SessionId) -> Result<()> {
        let this = self.clone();
        off_executor(move || {
            let _guard = this.lock()?;
            let s = this.by_id(id)?;
            if s.state != SessionState::Reserved {
                return Err(Error::NotReserved { id, state: s.state });
            }
            this.remove(&[s])
        })
        .await
    }

    async fn delete_reserved_sessions(&self) -> Result<u64> {
        let this = self.clone();
        off_executor(move || {
            let _guard = this.lock()?;
            let doomed: Vec<Session> = this
                .all()?
                .into_iter()
                .filter(|s| s.state == SessionState::Reserved)
                .collect();
            this.remove(&doomed)?;
            Ok(doomed.len() as u64)
        })
        .await
    }

    async fn group_id(&self, id: SessionId) -> Result<SessionId> {
        let this = self.clone();
        off_executor(move || {
            let idx = this.index(id)?.ok_or_else(|| not_found_id(id))?;
            Ok(SessionId(idx.group))
        })
        .await
    }

    async fn session_ids_in_group(&self, group: SessionId) -> Result<Vec<SessionId>> {
        let this = self.clone();
        off_executor(move || {
            let ids: Vec<SessionId> = this.members(group)?.into_iter().map(|(_, id)| id).collect();
            if ids.is_empty() {
                return Err(Error::UnknownGroup { group });
            }
            Ok(ids)
        })
        .await
    }
}
