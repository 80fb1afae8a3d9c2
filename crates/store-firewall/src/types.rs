//! The firewall store's values: scopes, namespaces, entries, privacy
//! pairs and transaction modes, and their checks against the data contract.

use store_sessions::SessionId;

use crate::{Error, Result};

/// Which of the four stores of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The rule's permanent store, shared by all groups and features.
    Global,
    /// The rule's temporary store, shared by all groups and features.
    GlobalTemp,
    /// The group's (or group-and-feature's) permanent store.
    Local,
    /// The group's (or group-and-feature's) temporary store.
    LocalTemp,
}

impl Scope {
    /// True for the permanent scopes.
    pub fn is_perm(self) -> bool {
        matches!(self, Scope::Global | Scope::Local)
    }

    /// True for the group scopes.
    pub fn is_local(self) -> bool {
        matches!(self, Scope::Local | Scope::LocalTemp)
    }
}

/// Whose kv-stores a transaction opens: a rule, a session group and a
/// feature (empty for the group-level store).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace {
    /// The rule's name.
    pub rule: String,
    /// The session group.
    pub group: SessionId,
    /// The feature's name; empty for the group-level store.
    pub feature: String,
}

impl Namespace {
    /// The namespace of `rule` for `group` and `feature`.
    pub fn new(rule: impl Into<String>, group: SessionId, feature: impl Into<String>) -> Namespace {
        Namespace {
            rule: rule.into(),
            group,
            feature: feature.into(),
        }
    }
}

/// One kv-store entry with its whole namespace, as listings, dumps and the
/// migration see it. Ordered by permanence, rule, group, feature, key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KvEntry {
    /// False for a temporary store.
    pub perm: bool,
    /// The rule.
    pub rule: String,
    /// The group; `None` for the rule's global store.
    pub group: Option<SessionId>,
    /// The feature; `None` for a group-level or global store.
    pub feature: Option<String>,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
}

/// One privacy pair with its group. Ordered by group, then real value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PrivacyPair {
    /// The session group.
    pub group: SessionId,
    /// The real value.
    pub real: String,
    /// The pseudo value.
    pub pseudo: String,
}

/// Whether a transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read-only.
    View,
    /// Read-write.
    Update,
}

pub(crate) fn invalid(
    record: impl Into<String>,
    field: &'static str,
    reason: impl Into<String>,
) -> Error {
    Error::InvalidInput {
        record: record.into(),
        field,
        reason: reason.into(),
    }
}

/// A value of `record`'s `field` checked against the data contract
/// (`store_contract`), refused as [`Error::InvalidInput`] naming the field.
fn contract<T>(
    record: impl Into<String>,
    field: &'static str,
    checked: std::result::Result<T, store_contract::Violation>,
) -> Result<T> {
    checked.map_err(|v| invalid(record, field, v.to_string()))
}

/// A namespace against the contract: the rule names something; the feature
/// is a key (empty means the group's own store).
pub(crate) fn check_namespace(ns: &Namespace) -> Result<()> {
    let rec = || {
        format!(
            "kv-store namespace of rule {}",
            store_contract::shown(&ns.rule)
        )
    };
    contract(rec(), "rule", store_contract::name(&ns.rule))?;
    contract(rec(), "feature", store_contract::key(&ns.feature))
}

/// A kv-store key against the contract.
pub(crate) fn check_key(key: &str) -> Result<()> {
    contract("a kv-store entry", "key", store_contract::key(key))
}

/// A kv-store value against the contract.
pub(crate) fn check_value(key: &str, value: &[u8]) -> Result<()> {
    contract(
        format!("kv-store entry {}", store_contract::shown(key)),
        "value",
        store_contract::bytes(value),
    )
}

/// A privacy value being looked up.
pub(crate) fn check_privacy_value(field: &'static str, value: &str) -> Result<()> {
    contract("a privacy pair", field, store_contract::key(value))
}

/// A new privacy pair: both values name something.
pub(crate) fn check_pair(real: &str, pseudo: &str) -> Result<()> {
    let rec = || {
        format!(
            "privacy pair {} -> {}",
            store_contract::shown(real),
            store_contract::shown(pseudo)
        )
    };
    contract(rec(), "real", store_contract::name(real))?;
    contract(rec(), "pseudo", store_contract::name(pseudo))
}

impl KvEntry {
    /// The entry against the contract, as a whole: a feature store is a
    /// group's, and a feature, when present, is not empty (an empty one
    /// would silently be the group's own store).
    pub fn check(&self) -> Result<()> {
        let rec = || {
            format!(
                "kv-store entry {} of rule {}",
                store_contract::shown(&self.key),
                store_contract::shown(&self.rule)
            )
        };
        contract(rec(), "rule", store_contract::name(&self.rule))?;
        if let Some(f) = &self.feature {
            contract(rec(), "feature", store_contract::name(f))?;
            if self.group.is_none() {
                return Err(invalid(rec(), "feature", "a feature store needs a group"));
            }
        }
        check_key(&self.key)?;
        check_value(&self.key, &self.value)
    }
}

impl PrivacyPair {
    /// The pair against the contract.
    pub fn check(&self) -> Result<()> {
        check_pair(&self.real, &self.pseudo)
    }
}
