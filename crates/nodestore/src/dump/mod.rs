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
use store_actions::{Action, ActionLocator, ActionState, AddAction};
use store_firewall::{KvEntry, PrivacyPair};
use store_sessions::{
    Caveat, MacaroonRecipe, Permission, PrivacyFlags, Secret, Session, SessionId, SessionState,
    SessionType,
};

use crate::{Error, Result};

mod import;
mod read;

pub use import::import;
pub use read::{
    Observer, Unreadable, dump, dump_kv, dump_kv_observed, dump_kv_salvaged, dump_observed,
    dump_sql, dump_sql_observed,
};

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

/// Why a dump could not be read, parsed or imported. A field is named, its
/// value shown shortened or not at all: a dump holds secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DumpError {
    /// Not JSON of the dump's layout.
    #[error("{0}")]
    Json(#[source] serde_json::Error),
    /// Another format, or a version this nodestore does not read.
    #[error(
        "format {format:?} version {version}: this nodestore reads {FORMAT:?} version {VERSION}"
    )]
    Version { format: String, version: u32 },
    /// A time that does not parse.
    #[error("{record}: time {shown}: {source}")]
    Time {
        record: String,
        shown: String,
        #[source]
        source: chrono::ParseError,
    },
    /// A time not in the dump's form: it would not survive a round trip
    /// unchanged, so it is refused rather than altered.
    #[error(
        "{record}: time {shown} is not in the dump's form (UTC, six fraction digits, no leap \
         second); write it as {canonical}"
    )]
    NotCanonical {
        record: String,
        shown: String,
        canonical: String,
    },
    /// Bytes of a fixed length that are not as many hex digits.
    #[error(
        "{record}: {field} must be {bytes} bytes as {} hex digits; it has {chars} characters{}",
        2 * .bytes,
        if *.hex_digits { "" } else { ", not all hex digits" }
    )]
    FixedHex {
        record: String,
        field: String,
        bytes: usize,
        chars: usize,
        hex_digits: bool,
    },
    /// Bytes that are not hex digits.
    #[error(
        "{record}: {field} must be hex digits (an even number of them); it has {chars} characters"
    )]
    Hex {
        record: String,
        field: String,
        chars: usize,
    },
    /// A code (a state, a type, a status) no store knows.
    #[error("{record}: unknown {what} {code}")]
    UnknownCode {
        record: String,
        what: &'static str,
        code: i64,
    },
    /// A value a store refuses.
    #[error("{record}: {source}")]
    Field {
        record: String,
        #[source]
        source: crate::sessions::Error,
    },
    /// A value that breaks the data contract.
    #[error("{record}: {violation}")]
    Contract {
        record: String,
        #[source]
        violation: store_contract::Violation,
    },
    /// A keyed record that appears twice.
    #[error(
        "{what} {key} appears twice (entries {first} and {second} of its list); a dump holds each \
         once"
    )]
    Duplicate {
        what: String,
        key: String,
        first: usize,
        second: usize,
    },
    /// Reading a key-value database did not finish.
    #[error("reading {}: {source}", .dir.display())]
    Read {
        dir: std::path::PathBuf,
        #[source]
        source: tokio::task::JoinError,
    },
}

fn parse_time(record: &str, s: &str) -> Result<DateTime<Utc>> {
    let shown = || store_contract::shown(s).to_string();
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|source| DumpError::Time {
            record: record.to_owned(),
            shown: shown(),
            source,
        })?;
    if time_text(t) != s {
        return Err(DumpError::NotCanonical {
            record: record.to_owned(),
            shown: shown(),
            canonical: time_text(t),
        }
        .into());
    }
    Ok(t)
}

/// Parses `N` bytes of hex. The error never repeats the value: a field may
/// hold a secret (a private key, a pairing secret).
fn unhex<const N: usize>(record: &str, field: &str, s: &str) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| DumpError::FixedHex {
        record: record.to_owned(),
        field: field.to_owned(),
        bytes: N,
        chars: s.chars().count(),
        hex_digits: s.chars().all(|c| c.is_ascii_hexdigit()),
    })?;
    Ok(out)
}

/// A code no store knows, in a dump's record.
fn unknown(record: &str, what: &'static str, code: impl Into<i64>) -> DumpError {
    DumpError::UnknownCode {
        record: record.to_owned(),
        what,
        code: code.into(),
    }
}

fn unhex_vec(record: &str, field: &str, s: &str) -> Result<Vec<u8>> {
    hex::decode(s).map_err(|_| {
        DumpError::Hex {
            record: record.to_owned(),
            field: field.to_owned(),
            chars: s.chars().count(),
        }
        .into()
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
                DumpError::UnknownCode {
                    record: format!("{rec}: payment {}", p.hash),
                    what: "status",
                    code: i64::from(p.status),
                }
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
                .ok_or_else(|| unknown(&rec, "type", self.account_type))?,
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
                .ok_or_else(|| unknown(&rec, "state", self.state))?,
            session_type: SessionType::from_code(i64::from(self.session_type))
                .ok_or_else(|| unknown(&rec, "type", self.session_type))?,
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
            privacy_flags: PrivacyFlags::from_bits(self.privacy_flags).map_err(|source| {
                DumpError::Field {
                    record: rec.clone(),
                    source,
                }
            })?,
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
                .ok_or_else(|| unknown(&rec, "state", self.state))?,
            error_reason: self.error_reason.clone(),
        })
    }
}

/// The parts a dump is made of, in domain types: what a dump is made from
/// and what an import writes.
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
        let d: Dump = serde_json::from_str(text).map_err(DumpError::Json)?;
        if d.format != FORMAT || d.version != VERSION {
            return Err(DumpError::Version {
                format: d.format,
                version: d.version,
            }
            .into());
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
    // Entries and pairs stored under any session's id belong to its group
    // (`rules::firewall_group`).
    let group_of: BTreeMap<String, String> = d
        .sessions
        .iter()
        .map(|s| (s.id.clone(), s.group_id.clone()))
        .collect();
    d.kv_entries = std::mem::take(&mut d.kv_entries)
        .into_iter()
        .filter_map(|mut e| {
            if let Some(g) = &e.group {
                e.group = Some(rules::firewall_group(g, |g| group_of.get(g).cloned())?);
            }
            Some(e)
        })
        .collect();
    d.privacy_pairs = std::mem::take(&mut d.privacy_pairs)
        .into_iter()
        .filter_map(|mut p| {
            p.group = rules::firewall_group(&p.group, |g| group_of.get(g).cloned())?;
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
