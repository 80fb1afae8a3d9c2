//! The canonical JSON dump of every store (documented in
//! `docs/dump-format.md`).
//!
//! Records are in a fixed order (accounts by id, sessions by id then local
//! key, entries and pairs by their natural order, actions by locator),
//! bytes are lowercase hex, times are RFC 3339 in UTC with exactly six
//! fraction digits: the same data dumped from any backend is the same bytes.
//! A key-value database is read through the migrator's read-only path, so a
//! tombstoned one can be dumped too. The dump holds private keys and pairing
//! secrets: it is written with mode 0600.
#![allow(
    missing_docs,
    reason = "the record fields are documented in docs/dump-format.md"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use store_accounts::{
    Account, AccountId, AccountType, Hash, LastIndexes, PaymentEntry, PaymentStatus,
};
use store_actions::{Action, ActionLocator, ActionQuery, ActionState, AddAction};
use store_firewall::{KvEntry, PrivacyPair};
use store_sessions::{
    Caveat, MacaroonRecipe, Permission, PrivacyFlags, Secret, Session, SessionId, SessionState,
    SessionType,
};
use tombstone::{KvOptions, MigrationSource};

use crate::{Error, Location, Result};

/// The `format` field of every dump.
pub const FORMAT: &str = "nodestore-dump";
/// The version of the layout described in `docs/dump-format.md`.
pub const VERSION: u32 = 1;

/// A whole node's stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dump {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// Accounts by id.
    pub accounts: Vec<DumpAccount>,
    /// The last invoice indexes, when stored.
    pub last_indexes: Option<DumpIndexes>,
    /// Sessions by id, then local key.
    pub sessions: Vec<DumpSession>,
    /// Kv-store entries.
    pub kv_entries: Vec<DumpEntry>,
    /// Privacy pairs.
    pub privacy_pairs: Vec<DumpPair>,
    /// Actions by locator.
    pub actions: Vec<DumpAction>,
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpAccount {
    pub id: String,
    #[serde(rename = "type")]
    pub account_type: u8,
    pub initial_balance_msat: u64,
    pub current_balance_msat: i64,
    pub last_update: String,
    pub expiration: Option<String>,
    pub label: String,
    pub invoices: Vec<String>,
    pub payments: Vec<DumpPayment>,
}

/// A payment of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpPayment {
    pub hash: String,
    pub status: u8,
    pub full_amount_msat: u64,
}

/// The last invoice indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpIndexes {
    pub add_index: u64,
    pub settle_index: u64,
}

/// A session, secrets included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpSession {
    pub id: String,
    pub label: String,
    pub state: u8,
    #[serde(rename = "type")]
    pub session_type: u8,
    pub expiry: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub server_addr: String,
    pub dev_server: bool,
    pub macaroon_root_key: u64,
    pub macaroon_recipe: Option<DumpRecipe>,
    pub pairing_secret: String,
    pub local_private_key: String,
    pub local_public_key: String,
    pub remote_public_key: Option<String>,
    pub feature_config: Option<BTreeMap<String, String>>,
    pub with_privacy_mapper: bool,
    pub privacy_flags: u64,
    pub group_id: String,
    pub account_id: Option<String>,
}

/// A macaroon recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpRecipe {
    pub permissions: Vec<[String; 2]>,
    pub caveats: Vec<DumpCaveat>,
}

/// A caveat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpCaveat {
    pub id: String,
    pub verification_id: Option<String>,
    pub location: String,
}

/// A kv-store entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpEntry {
    pub perm: bool,
    pub rule: String,
    pub group: Option<String>,
    pub feature: Option<String>,
    pub key: String,
    pub value: String,
}

/// A privacy pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpPair {
    pub group: String,
    pub real: String,
    pub pseudo: String,
}

/// An action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpAction {
    pub locator: u64,
    pub macaroon_root_key_id: Option<u64>,
    pub session_id: Option<String>,
    pub account_id: Option<String>,
    pub actor_name: String,
    pub feature_name: String,
    pub trigger: String,
    pub intent: String,
    pub structured_json_data: String,
    pub rpc_method: String,
    pub rpc_params_json: String,
    pub attempted_at: String,
    pub state: u8,
    pub error_reason: String,
}

/// A time as the dump writes it: UTC, six fraction digits.
pub fn time_text(t: DateTime<Utc>) -> String {
    sqldb::time::truncate_micros(t)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn parse_time(record: &str, s: &str) -> Result<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Dump(format!("{record}: time {}: {e}", store_contract::shown(s))))?;
    // A dump is written in canonical form; any other form would not survive
    // a round trip unchanged, so it is refused rather than altered.
    if time_text(t) != s {
        return Err(Error::Dump(format!(
            "{record}: time {} is not in the dump's form (UTC, six fraction digits, no leap \
             second); write it as {}",
            store_contract::shown(s),
            time_text(t)
        )));
    }
    Ok(t)
}

/// Parses `N` bytes of hex. The error never repeats the value: a field may
/// hold a secret (a private key, a pairing secret).
fn unhex<const N: usize>(record: &str, field: &str, s: &str) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| {
        Error::Dump(format!(
            "{record}: {field} must be {N} bytes as {} hex digits; it has {} characters{}",
            2 * N,
            s.chars().count(),
            if s.chars().all(|c| c.is_ascii_hexdigit()) {
                ""
            } else {
                ", not all hex digits"
            }
        ))
    })?;
    Ok(out)
}

fn unhex_vec(record: &str, field: &str, s: &str) -> Result<Vec<u8>> {
    hex::decode(s).map_err(|_| {
        Error::Dump(format!(
            "{record}: {field} must be hex digits (an even number of them); it has {} characters",
            s.chars().count()
        ))
    })
}

impl DumpAccount {
    fn from(a: &Account) -> DumpAccount {
        DumpAccount {
            id: a.id.to_string(),
            account_type: a.account_type.code(),
            initial_balance_msat: a.initial_balance_msat,
            current_balance_msat: a.current_balance_msat,
            last_update: time_text(a.last_update),
            expiration: a.expiration.map(time_text),
            label: a.label.clone(),
            invoices: a.invoices.iter().map(Hash::to_string).collect(),
            payments: a
                .payments
                .iter()
                .map(|(h, p)| DumpPayment {
                    hash: h.to_string(),
                    status: p.status.code(),
                    full_amount_msat: p.full_amount_msat,
                })
                .collect(),
        }
    }

    fn to_account(&self) -> Result<Account> {
        let rec = format!("account {}", store_contract::shown(&self.id));
        let mut payments = BTreeMap::new();
        for p in &self.payments {
            let status = PaymentStatus::from_code(i64::from(p.status)).ok_or_else(|| {
                Error::Dump(format!(
                    "{rec}: payment {}: unknown status {}",
                    p.hash, p.status
                ))
            })?;
            payments.insert(
                Hash(unhex(&rec, "payment hash", &p.hash)?),
                PaymentEntry {
                    status,
                    full_amount_msat: p.full_amount_msat,
                },
            );
        }
        Ok(Account {
            id: AccountId(unhex(&rec, "id", &self.id)?),
            account_type: AccountType::from_code(i64::from(self.account_type))
                .ok_or_else(|| Error::Dump(format!("{rec}: unknown type {}", self.account_type)))?,
            initial_balance_msat: self.initial_balance_msat,
            current_balance_msat: self.current_balance_msat,
            last_update: parse_time(&rec, &self.last_update)?,
            expiration: self
                .expiration
                .as_deref()
                .map(|t| parse_time(&rec, t))
                .transpose()?,
            label: self.label.clone(),
            invoices: self
                .invoices
                .iter()
                .map(|h| unhex(&rec, "invoice", h).map(Hash))
                .collect::<Result<BTreeSet<_>>>()?,
            payments,
        })
    }
}

impl DumpSession {
    fn from(s: &Session) -> DumpSession {
        DumpSession {
            id: s.id.to_string(),
            label: s.label.clone(),
            state: s.state.code(),
            session_type: s.session_type.code(),
            expiry: time_text(s.expiry),
            created_at: time_text(s.created_at),
            revoked_at: s.revoked_at.map(time_text),
            server_addr: s.server_addr.clone(),
            dev_server: s.dev_server,
            macaroon_root_key: s.macaroon_root_key,
            macaroon_recipe: s.macaroon_recipe.as_ref().map(|r| DumpRecipe {
                permissions: r
                    .permissions
                    .iter()
                    .map(|p| [p.entity.clone(), p.action.clone()])
                    .collect(),
                caveats: r
                    .caveats
                    .iter()
                    .map(|c| DumpCaveat {
                        id: hex::encode(&c.id),
                        verification_id: c.verification_id.as_ref().map(hex::encode),
                        location: c.location.clone(),
                    })
                    .collect(),
            }),
            pairing_secret: hex::encode(s.pairing_secret.0),
            local_private_key: hex::encode(s.local_private_key.0),
            local_public_key: hex::encode(s.local_public_key),
            remote_public_key: s.remote_public_key.map(hex::encode),
            feature_config: s
                .feature_config
                .as_ref()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), hex::encode(v))).collect()),
            with_privacy_mapper: s.with_privacy_mapper,
            privacy_flags: s.privacy_flags.bits(),
            group_id: s.group_id.to_string(),
            account_id: s.account_id.map(|a| a.to_string()),
        }
    }

    fn to_session(&self) -> Result<Session> {
        let rec = format!("session {}", store_contract::shown(&self.id));
        let recipe = match &self.macaroon_recipe {
            None => None,
            Some(r) => Some(MacaroonRecipe {
                permissions: r
                    .permissions
                    .iter()
                    .map(|[e, a]| Permission {
                        entity: e.clone(),
                        action: a.clone(),
                    })
                    .collect(),
                caveats: r
                    .caveats
                    .iter()
                    .map(|c| {
                        Ok(Caveat {
                            id: unhex_vec(&rec, "caveat id", &c.id)?,
                            verification_id: c
                                .verification_id
                                .as_deref()
                                .map(|v| unhex_vec(&rec, "verification id", v))
                                .transpose()?,
                            location: c.location.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            }),
        };
        let feature_config = match &self.feature_config {
            None => None,
            Some(m) => Some(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), unhex_vec(&rec, "feature config", v)?)))
                    .collect::<Result<BTreeMap<_, _>>>()?,
            ),
        };
        Ok(Session {
            id: SessionId(unhex(&rec, "id", &self.id)?),
            label: self.label.clone(),
            state: SessionState::from_code(i64::from(self.state))
                .ok_or_else(|| Error::Dump(format!("{rec}: unknown state {}", self.state)))?,
            session_type: SessionType::from_code(i64::from(self.session_type))
                .ok_or_else(|| Error::Dump(format!("{rec}: unknown type {}", self.session_type)))?,
            expiry: parse_time(&rec, &self.expiry)?,
            created_at: parse_time(&rec, &self.created_at)?,
            revoked_at: self
                .revoked_at
                .as_deref()
                .map(|t| parse_time(&rec, t))
                .transpose()?,
            server_addr: self.server_addr.clone(),
            dev_server: self.dev_server,
            macaroon_root_key: self.macaroon_root_key,
            macaroon_recipe: recipe,
            pairing_secret: Secret(unhex(&rec, "pairing secret", &self.pairing_secret)?),
            local_private_key: Secret(unhex(&rec, "local private key", &self.local_private_key)?),
            local_public_key: unhex(&rec, "local public key", &self.local_public_key)?,
            remote_public_key: self
                .remote_public_key
                .as_deref()
                .map(|k| unhex(&rec, "remote public key", k))
                .transpose()?,
            feature_config,
            with_privacy_mapper: self.with_privacy_mapper,
            privacy_flags: PrivacyFlags::from_bits(self.privacy_flags)
                .map_err(|e| Error::Dump(format!("{rec}: {e}")))?,
            group_id: SessionId(unhex(&rec, "group id", &self.group_id)?),
            account_id: self
                .account_id
                .as_deref()
                .map(|a| unhex(&rec, "account id", a).map(AccountId))
                .transpose()?,
        })
    }
}

impl DumpEntry {
    fn from(e: &KvEntry) -> DumpEntry {
        DumpEntry {
            perm: e.perm,
            rule: e.rule.clone(),
            group: e.group.map(|g| g.to_string()),
            feature: e.feature.clone(),
            key: e.key.clone(),
            value: hex::encode(&e.value),
        }
    }

    fn to_entry(&self) -> Result<KvEntry> {
        let rec = format!("kv entry {:?} of rule {:?}", self.key, self.rule);
        Ok(KvEntry {
            perm: self.perm,
            rule: self.rule.clone(),
            group: self
                .group
                .as_deref()
                .map(|g| unhex(&rec, "group", g).map(SessionId))
                .transpose()?,
            feature: self.feature.clone(),
            key: self.key.clone(),
            value: unhex_vec(&rec, "value", &self.value)?,
        })
    }
}

impl DumpAction {
    fn from(a: &Action) -> DumpAction {
        let r = &a.request;
        DumpAction {
            locator: a.locator.index(),
            macaroon_root_key_id: r.macaroon_root_key_id,
            session_id: r.session_id.map(|s| s.to_string()),
            account_id: r.account_id.map(|a| a.to_string()),
            actor_name: r.actor_name.clone(),
            feature_name: r.feature_name.clone(),
            trigger: r.trigger.clone(),
            intent: r.intent.clone(),
            structured_json_data: r.structured_json_data.clone(),
            rpc_method: r.rpc_method.clone(),
            rpc_params_json: hex::encode(&r.rpc_params_json),
            attempted_at: time_text(a.attempted_at),
            state: a.state.code(),
            error_reason: a.error_reason.clone(),
        }
    }

    fn to_action(&self) -> Result<Action> {
        let rec = format!("action {}", self.locator);
        Ok(Action {
            locator: ActionLocator::from_index(self.locator),
            request: AddAction {
                macaroon_root_key_id: self.macaroon_root_key_id,
                session_id: self
                    .session_id
                    .as_deref()
                    .map(|s| unhex(&rec, "session id", s).map(SessionId))
                    .transpose()?,
                account_id: self
                    .account_id
                    .as_deref()
                    .map(|a| unhex(&rec, "account id", a).map(AccountId))
                    .transpose()?,
                actor_name: self.actor_name.clone(),
                feature_name: self.feature_name.clone(),
                trigger: self.trigger.clone(),
                intent: self.intent.clone(),
                structured_json_data: self.structured_json_data.clone(),
                rpc_method: self.rpc_method.clone(),
                rpc_params_json: unhex_vec(&rec, "rpc params", &self.rpc_params_json)?,
            },
            attempted_at: parse_time(&rec, &self.attempted_at)?,
            state: ActionState::from_code(i64::from(self.state))
                .ok_or_else(|| Error::Dump(format!("{rec}: unknown state {}", self.state)))?,
            error_reason: self.error_reason.clone(),
        })
    }
}

/// The parts a dump is made of, in domain types.
struct Parts {
    accounts: Vec<Account>,
    last_indexes: Option<LastIndexes>,
    sessions: Vec<Session>,
    entries: Vec<KvEntry>,
    pairs: Vec<PrivacyPair>,
    actions: Vec<Action>,
}

impl Dump {
    fn from_parts(mut p: Parts) -> Dump {
        p.accounts.sort_by_key(|a| a.id);
        p.sessions.sort_by_key(|s| (s.id, s.local_public_key));
        p.entries.sort();
        p.pairs.sort();
        p.actions.sort_by_key(|a| a.locator);
        Dump {
            format: FORMAT.into(),
            version: VERSION,
            accounts: p.accounts.iter().map(DumpAccount::from).collect(),
            last_indexes: p.last_indexes.map(|i| DumpIndexes {
                add_index: i.add_index,
                settle_index: i.settle_index,
            }),
            sessions: p.sessions.iter().map(DumpSession::from).collect(),
            kv_entries: p.entries.iter().map(DumpEntry::from).collect(),
            privacy_pairs: p
                .pairs
                .iter()
                .map(|x| DumpPair {
                    group: x.group.to_string(),
                    real: x.real.clone(),
                    pseudo: x.pseudo.clone(),
                })
                .collect(),
            actions: p.actions.iter().map(DumpAction::from).collect(),
        }
    }

    /// The canonical text: pretty JSON and a final newline.
    ///
    /// Errors: [`Error::Json`] when a value cannot be written as JSON.
    pub fn to_json(&self) -> Result<String> {
        let mut s = crate::json_text("the dump", self, true)?;
        s.push('\n');
        Ok(s)
    }

    /// Parses and checks a dump's text.
    pub fn from_json(text: &str) -> Result<Dump> {
        let d: Dump = serde_json::from_str(text).map_err(|e| Error::Dump(e.to_string()))?;
        if d.format != FORMAT || d.version != VERSION {
            return Err(Error::Dump(format!(
                "format {:?} version {}: this nodestore reads {FORMAT:?} version {VERSION}",
                d.format, d.version
            )));
        }
        Ok(d)
    }

    /// Writes the canonical text to `path` with mode 0600 (it holds secrets).
    pub fn write(&self, path: &Path) -> Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        // An existing file keeps its mode when opened: make it private.
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        f.write_all(self.to_json()?.as_bytes()).map_err(io)
    }
}

/// Told how far a dump has come, store by store (the migration's
/// [`migrator::Progress`]); `None` reports nothing.
pub type Observer = Option<std::sync::Arc<dyn migrator::Progress>>;

/// Tells `observer` that `store` is at `done` of `total`. A dump cannot be
/// stopped half way by its observer: what it returns is ignored.
fn report(observer: &Observer, store: &'static str, done: u64, total: u64) {
    if let Some(o) = observer {
        let _ = o.progress(migrator::ProgressEvent { store, done, total });
    }
}

/// Dumps the stores at `location`.
pub async fn dump(location: &Location) -> Result<Dump> {
    dump_observed(location, None).await
}

/// [`dump`], telling `observer` how far it has come.
pub async fn dump_observed(location: &Location, observer: Observer) -> Result<Dump> {
    match location {
        Location::Kv(dir) => dump_kv_observed(dir, observer).await,
        sql => {
            let db = crate::connect_read_only(&sql.backend())
                .await?
                .ok_or_else(|| Error::Config("not a SQL location".into()))?;
            dump_sql_observed(&db, observer).await
        }
    }
}

/// Dumps a SQL database through its stores.
pub async fn dump_sql(db: &sqldb::Db) -> Result<Dump> {
    dump_sql_observed(db, None).await
}

/// [`dump_sql`], telling `observer` as each store is read.
pub async fn dump_sql_observed(db: &sqldb::Db, observer: Observer) -> Result<Dump> {
    // What the stores' tables are: nodestore's schema, or litd's (read as
    // it is, docs/design.md §3.6); a database with neither is named.
    let found = sqldb::migrate::Migrator::new().preflight(db).await?;
    if found.applied.is_empty() && found.litd.is_none() {
        return Err(Error::NoSchema {
            database: db.describe(),
        });
    }
    let s = crate::Stores::on_sql(db, crate::OpenReport::default());
    let last_indexes = match s.accounts.last_indexes().await {
        Ok(i) => Some(i),
        Err(store_accounts::Error::NoInvoiceIndexKnown) => None,
        Err(e) => return Err(e.into()),
    };
    let whole = |store, n: usize| report(&observer, store, n as u64, n as u64);
    let accounts = s.accounts.accounts().await?;
    whole("sql accounts", accounts.len());
    let sessions = s.sessions.list_sessions().await?;
    whole("sql sessions", sessions.len());
    let entries = s.firewall.kv_entries().await?;
    let pairs = s.firewall.privacy_pairs().await?;
    whole("sql firewall", entries.len() + pairs.len());
    let actions = s
        .actions
        .list_actions(&ActionQuery::default())
        .await?
        .actions;
    whole("sql actions", actions.len());
    Ok(Dump::from_parts(Parts {
        accounts,
        last_indexes,
        sessions,
        entries,
        pairs,
        actions,
    }))
}

/// Dumps a key-value database, live or tombstoned, read-only.
pub async fn dump_kv(dir: &Path) -> Result<Dump> {
    dump_kv_observed(dir, None).await
}

/// [`dump_kv`], telling `observer` how many records of each store it read.
pub async fn dump_kv_observed(dir: &Path, observer: Observer) -> Result<Dump> {
    let dir = dir.to_path_buf();
    let dir_for_error = dir.clone();
    tokio::task::spawn_blocking(move || read_kv(&dir, &observer, false).map(|(d, _)| d))
        .await
        .map_err(|e| Error::Dump(format!("reading {}: {e}", dir_for_error.display())))?
}

/// Counts records read from one tree, reporting every few thousand and at
/// the end.
struct Counter<'a> {
    observer: &'a Observer,
    store: &'static str,
    done: u64,
    total: u64,
}

impl Counter<'_> {
    fn tick(&mut self) {
        self.done += 1;
        if self.done.is_multiple_of(4096) {
            report(
                self.observer,
                self.store,
                self.done,
                self.total.max(self.done),
            );
        }
    }
}

impl Drop for Counter<'_> {
    fn drop(&mut self) {
        report(self.observer, self.store, self.done, self.done);
    }
}

/// What a dump of a damaged key-value database left out: a record that
/// does not decode, or a range of keys the reader could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    /// The tree.
    pub tree: String,
    /// What was left out and why, in words.
    pub what: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tree {}: {}", self.tree, self.what)
    }
}

/// Dumps what is readable of a key-value database, live, tombstoned or
/// damaged, read-only: records that do not decode and pages that cannot be
/// read are left out and listed, every one (docs/sled-format.md §6).
pub async fn dump_kv_salvaged(dir: &Path, observer: Observer) -> Result<(Dump, Vec<Unreadable>)> {
    let dir = dir.to_path_buf();
    let dir_for_error = dir.clone();
    tokio::task::spawn_blocking(move || read_kv(&dir, &observer, true))
        .await
        .map_err(|e| Error::Dump(format!("reading {}: {e}", dir_for_error.display())))?
}

fn read_kv(dir: &Path, observer: &Observer, salvage: bool) -> Result<(Dump, Vec<Unreadable>)> {
    let counter = |store, total: usize| Counter {
        observer,
        store,
        done: 0,
        total: total as u64,
    };
    let src = MigrationSource::open(
        dir,
        &KvOptions {
            salvage,
            ..KvOptions::default()
        },
    )?;
    let layout = |tree: &str, e: store_firewall::kv::ParseError| {
        Error::Firewall(store_firewall::Error::InvalidInput {
            record: format!("tree {tree} at {}", e.path),
            field: "entry",
            reason: e.reason,
        })
    };
    let mut unreadable: Vec<Unreadable> = Vec::new();
    // A record that does not decode: left out and listed when salvaging,
    // else the dump's error.
    let mut skip = |tree: &str, key: &[u8], e: Error| -> Result<()> {
        if !salvage {
            return Err(e);
        }
        unreadable.push(Unreadable {
            tree: tree.to_owned(),
            what: format!("record {} does not decode: {e}", hex::encode(key)),
        });
        Ok(())
    };
    let mut parts = Parts {
        accounts: vec![],
        last_indexes: None,
        sessions: vec![],
        entries: vec![],
        pairs: vec![],
        actions: vec![],
    };
    if let Some(t) = src.tree(store_accounts::kv::TREE)? {
        let (mut add, mut settle) = (None, None);
        let mut n = counter("kv accounts", t.len());
        for item in t.iter() {
            n.tick();
            let (k, v) = item?;
            match store_accounts::kv::decode_entry(&k, &v) {
                Ok(store_accounts::kv::Entry::Account(a)) => parts.accounts.push(a),
                Ok(store_accounts::kv::Entry::LastAddIndex(i)) => add = Some(i),
                Ok(store_accounts::kv::Entry::LastSettleIndex(i)) => settle = Some(i),
                Err(e) => skip(store_accounts::kv::TREE, &k, e.into())?,
            }
        }
        if let (Some(add_index), Some(settle_index)) = (add, settle) {
            parts.last_indexes = Some(LastIndexes {
                add_index,
                settle_index,
            });
        }
    }
    if let Some(t) = src.tree(store_sessions::kv::SESSIONS_TREE)? {
        let mut n = counter("kv sessions", t.len());
        for item in t.iter() {
            n.tick();
            let (k, v) = item?;
            match store_sessions::kv::decode_session(&k, &v) {
                Ok(s) => parts.sessions.push(s),
                Err(e) => skip(store_sessions::kv::SESSIONS_TREE, &k, e.into())?,
            }
        }
    }
    if let Some(t) = src.tree(store_firewall::kv::RULES_TREE)? {
        let mut n = counter("kv kv-stores", t.len());
        for item in t.iter() {
            n.tick();
            let (k, v) = item?;
            match store_firewall::kv::parse_entry(&k, &v) {
                Ok(e) => parts.entries.push(e),
                Err(e) => skip(store_firewall::kv::RULES_TREE, &k, layout("rules", e))?,
            }
        }
    }
    if let Some(t) = src.tree(store_firewall::kv::PRIVACY_TREE)? {
        let mut n = counter("kv privacy", t.len());
        for item in t.iter() {
            n.tick();
            let (k, v) = item?;
            match store_firewall::kv::parse_pair(&k, &v) {
                Ok((group, true, from, to)) => parts.pairs.push(PrivacyPair {
                    group,
                    real: from,
                    pseudo: to,
                }),
                Ok(_) => {}
                Err(e) => skip(store_firewall::kv::PRIVACY_TREE, &k, layout("privacy", e))?,
            }
        }
    }
    if let Some(t) = src.tree(store_actions::kv::ACTIONS_TREE)? {
        let mut n = counter("kv actions", t.len());
        for item in t.iter() {
            n.tick();
            let (k, v) = item?;
            match store_actions::kv::decode_action(&k, &v) {
                Ok(a) => parts.actions.push(a),
                Err(e) => skip(store_actions::kv::ACTIONS_TREE, &k, e.into())?,
            }
        }
    }
    unreadable.extend(src.salvaged().into_iter().map(|d| Unreadable {
        tree: d.tree.clone().unwrap_or_default(),
        what: d.to_string(),
    }));
    Ok((Dump::from_parts(parts), unreadable))
}

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
    if dir.join("conf").exists() {
        return Err(Error::Config(format!(
            "{} already holds a database; import writes a new one",
            dir.display()
        )));
    }
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::Config(format!(
            "{} is not empty; import writes a new database into a new or empty directory",
            dir.display()
        )));
    }
    let parsed = parse_for_import(dump)?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .ok_or_else(|| Error::Config(format!("{}: not a directory name", dir.display())))?;
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

/// Everything an import writes, parsed and checked.
struct Parsed {
    accounts: Vec<Account>,
    last_indexes: Option<LastIndexes>,
    sessions: Vec<Session>,
    entries: Vec<KvEntry>,
    pairs: Vec<PrivacyPair>,
    actions: Vec<Action>,
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
        Some((k, first, second)) => Err(Error::Dump(format!(
            "{what} {} appears twice (entries {} and {} of its list); a dump holds each once",
            store_contract::shown(&k.to_string()),
            first + 1,
            second + 1
        ))),
    }
}

fn parse_for_import(dump: &Dump) -> Result<Parsed> {
    let contract = |r: std::result::Result<(), String>| r.map_err(Error::Dump);
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
            contract(
                store_contract::number(i.add_index)
                    .and(store_contract::number(i.settle_index))
                    .map(drop)
                    .map_err(|v| format!("last indexes: {v}")),
            )?;
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
    Ok(Parsed {
        accounts,
        last_indexes,
        sessions,
        entries,
        pairs,
        actions,
    })
}

async fn write_import(p: Parsed, dir: &Path) -> Result<()> {
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

/// What SQL holds once the key-value data in `kv` is migrated, by the
/// migration's own rules (`migrator::rules`, docs/design.md §5.4): the
/// newest session of each id, times to the microsecond, empty recipes and
/// feature configs as none, links to accounts or sessions that did not
/// make it dropped, firewall data moved to its session's group or skipped.
/// `nodestore verify` compares a SQL database's dump with this.
///
/// Errors: [`Error::Dump`] when a record does not read as a store record.
pub fn as_migrated(kv: &Dump) -> Result<Dump> {
    use migrator::rules;
    let mut d = kv.clone();
    d.accounts = kv
        .accounts
        .iter()
        .map(|a| Ok(DumpAccount::from(&rules::account(&a.to_account()?))))
        .collect::<Result<_>>()?;
    let accounts: BTreeSet<AccountId> = d
        .accounts
        .iter()
        .map(|a| a.to_account().map(|a| a.id))
        .collect::<Result<_>>()?;
    // Keyed by the id's text, so the dump lists sessions as a SQL dump does.
    let mut newest: BTreeMap<String, Session> = BTreeMap::new();
    for ds in &kv.sessions {
        let s = ds.to_session()?;
        match newest.get(&ds.id) {
            Some(kept) if !rules::session_replaces(kept.created_at, s.created_at) => {}
            _ => {
                newest.insert(ds.id.clone(), s);
            }
        }
    }
    d.sessions = newest
        .values()
        .map(|s| DumpSession::from(&rules::session(s, |a| accounts.contains(&a)).0))
        .collect();
    let sessions: BTreeSet<SessionId> = newest.values().map(|s| s.id).collect();
    // Entries and pairs stored under any session's id belong to its group.
    let group_of: BTreeMap<String, String> = d
        .sessions
        .iter()
        .map(|s| (s.id.clone(), s.group_id.clone()))
        .collect();
    d.kv_entries = std::mem::take(&mut d.kv_entries)
        .into_iter()
        .filter_map(|mut e| {
            if let Some(g) = &e.group {
                e.group = Some(group_of.get(g)?.clone());
            }
            Some(e)
        })
        .collect();
    d.privacy_pairs = std::mem::take(&mut d.privacy_pairs)
        .into_iter()
        .filter_map(|mut p| {
            p.group = group_of.get(&p.group)?.clone();
            Some(p)
        })
        .collect();
    d.actions = kv
        .actions
        .iter()
        .map(|x| {
            let (a, _) = rules::action(
                &x.to_action()?,
                |s| sessions.contains(&s),
                |a| accounts.contains(&a),
            );
            Ok(DumpAction::from(&a))
        })
        .collect::<Result<_>>()?;
    Ok(d)
}
