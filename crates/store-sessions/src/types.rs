//! The sessions store's domain types.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use store_accounts::AccountId;

use crate::error::Error;

/// A session's identifier: 4 bytes (bytes 1..5 of its local public key),
/// shown as 8 hex characters. A group is named by its first session's id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub [u8; 4]);

impl SessionId {
    /// The id of a compressed public key.
    pub fn from_public_key(key: &[u8; 33]) -> SessionId {
        SessionId([key[1], key[2], key[3], key[4]])
    }

    /// The macaroon root key id of the session: `0xFFEEDDCC ‖ id`, big-endian.
    pub fn macaroon_root_key(self) -> u64 {
        let mut b = [0xFF, 0xEE, 0xDD, 0xCC, 0, 0, 0, 0];
        b[4..].copy_from_slice(&self.0);
        u64::from_be_bytes(b)
    }

    /// The id of a macaroon root key id: its lower four bytes.
    pub fn from_macaroon_root_key(root: u64) -> SessionId {
        let b = root.to_be_bytes();
        SessionId([b[4], b[5], b[6], b[7]])
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl FromStr for SessionId {
    type Err = Error;

    /// Parses exactly 8 hex characters.
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut id = [0u8; 4];
        hex::decode_to_slice(s, &mut id).map_err(|_| Error::InvalidInput {
            record: format!("session id {s:?}"),
            field: "id",
            reason: "must be exactly 8 hex characters".into(),
        })?;
        Ok(SessionId(id))
    }
}

/// What a session grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionType {
    /// A read-only macaroon.
    MacaroonReadonly,
    /// An admin macaroon.
    MacaroonAdmin,
    /// A macaroon from a custom recipe.
    MacaroonCustom,
    /// The UI password.
    UiPassword,
    /// An autopilot session.
    Autopilot,
    /// A macaroon bound to an account.
    MacaroonAccount,
}

impl SessionType {
    /// Every type.
    pub const ALL: [SessionType; 6] = [
        SessionType::MacaroonReadonly,
        SessionType::MacaroonAdmin,
        SessionType::MacaroonCustom,
        SessionType::UiPassword,
        SessionType::Autopilot,
        SessionType::MacaroonAccount,
    ];

    /// The stored number.
    pub fn code(self) -> u8 {
        match self {
            SessionType::MacaroonReadonly => 0,
            SessionType::MacaroonAdmin => 1,
            SessionType::MacaroonCustom => 2,
            SessionType::UiPassword => 3,
            SessionType::Autopilot => 4,
            SessionType::MacaroonAccount => 5,
        }
    }

    /// The type of a stored number.
    pub fn from_code(code: i64) -> Option<SessionType> {
        SessionType::ALL
            .into_iter()
            .find(|t| i64::from(t.code()) == code)
    }
}

/// A session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Usable.
    Created,
    /// Legacy: no longer set, but may exist in old databases.
    InUse,
    /// Revoked (terminal).
    Revoked,
    /// Expired (terminal).
    Expired,
    /// Created but not yet handed out; deleted at start-up.
    Reserved,
}

impl SessionState {
    /// Every state.
    pub const ALL: [SessionState; 5] = [
        SessionState::Created,
        SessionState::InUse,
        SessionState::Revoked,
        SessionState::Expired,
        SessionState::Reserved,
    ];

    /// The stored number.
    pub fn code(self) -> u8 {
        match self {
            SessionState::Created => 0,
            SessionState::InUse => 1,
            SessionState::Revoked => 2,
            SessionState::Expired => 3,
            SessionState::Reserved => 4,
        }
    }

    /// The state of a stored number.
    pub fn from_code(code: i64) -> Option<SessionState> {
        SessionState::ALL
            .into_iter()
            .find(|s| i64::from(s.code()) == code)
    }

    /// Revoked and Expired are terminal: no state follows them.
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionState::Revoked | SessionState::Expired)
    }

    /// Whether a session may move from `self` to `to` (staying put is not a
    /// move; [`crate::Store::shift_state`] treats it as a no-op).
    ///
    /// | from | to |
    /// |---|---|
    /// | Reserved | Created |
    /// | Created | Expired, Revoked |
    /// | InUse | Revoked, Expired |
    /// | Revoked, Expired | nothing |
    pub fn can_shift_to(self, to: SessionState) -> bool {
        use SessionState::*;
        matches!(
            (self, to),
            (Reserved, Created)
                | (Created, Expired)
                | (Created, Revoked)
                | (InUse, Revoked)
                | (InUse, Expired)
        )
    }
}

/// A macaroon permission: an entity and an action on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Permission {
    /// The entity, e.g. `lnd`.
    pub entity: String,
    /// The action, e.g. `read`.
    pub action: String,
}

/// A macaroon caveat.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caveat {
    /// The caveat id.
    pub id: Vec<u8>,
    /// The verification id; `None` for a first-party caveat. An empty but
    /// present verification id is kept as `Some(vec![])`.
    pub verification_id: Option<Vec<u8>>,
    /// The location; empty when none.
    pub location: String,
}

/// How a session's macaroon is baked: permissions and caveats, both in
/// order (caveat order matters: they are added and signed in order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MacaroonRecipe {
    /// The permissions.
    pub permissions: Vec<Permission>,
    /// The caveats.
    pub caveats: Vec<Caveat>,
}

impl MacaroonRecipe {
    /// True with neither permissions nor caveats.
    pub fn is_empty(&self) -> bool {
        self.permissions.is_empty() && self.caveats.is_empty()
    }
}

/// One privacy flag: what the privacy mapper leaves in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PrivacyFlag {
    /// Public keys.
    ClearPubkeys,
    /// Amounts.
    ClearAmounts,
    /// Channel ids.
    ClearChanIds,
    /// Time stamps.
    ClearTimeStamps,
    /// Channel initiator.
    ClearChanInitiator,
    /// HTLCs.
    ClearHtlcs,
    /// Closing transaction ids.
    ClearClosingTxIds,
    /// Network addresses.
    ClearNetworkAddresses,
}

impl PrivacyFlag {
    /// Every flag, by bit.
    pub const ALL: [PrivacyFlag; 8] = [
        PrivacyFlag::ClearPubkeys,
        PrivacyFlag::ClearAmounts,
        PrivacyFlag::ClearChanIds,
        PrivacyFlag::ClearTimeStamps,
        PrivacyFlag::ClearChanInitiator,
        PrivacyFlag::ClearHtlcs,
        PrivacyFlag::ClearClosingTxIds,
        PrivacyFlag::ClearNetworkAddresses,
    ];

    /// The flag's bit number (its stored number).
    pub fn bit(self) -> u8 {
        PrivacyFlag::ALL
            .iter()
            .position(|f| *f == self)
            .unwrap_or(0) as u8
    }

    /// LiT's name of the flag.
    pub fn name(self) -> &'static str {
        match self {
            PrivacyFlag::ClearPubkeys => "ClearPubkeys",
            PrivacyFlag::ClearAmounts => "ClearAmounts",
            PrivacyFlag::ClearChanIds => "ClearChanIDs",
            PrivacyFlag::ClearTimeStamps => "ClearTimeStamps",
            PrivacyFlag::ClearChanInitiator => "ClearChanInitiator",
            PrivacyFlag::ClearHtlcs => "ClearHTLCs",
            PrivacyFlag::ClearClosingTxIds => "ClearClosingTxIds",
            PrivacyFlag::ClearNetworkAddresses => "ClearNetworkAddresses",
        }
    }
}

/// A set of privacy flags, stored as a bitmask of eight known bits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PrivacyFlags(u8);

impl PrivacyFlags {
    /// No flags.
    pub const EMPTY: PrivacyFlags = PrivacyFlags(0);

    /// The set of the given flags.
    pub fn of(flags: impl IntoIterator<Item = PrivacyFlag>) -> PrivacyFlags {
        PrivacyFlags(flags.into_iter().fold(0, |m, f| m | (1 << f.bit())))
    }

    /// The set of a bitmask.
    ///
    /// Errors: [`Error::UnknownPrivacyFlag`] for any bit above the eight known.
    pub fn from_bits(bits: u64) -> Result<PrivacyFlags, Error> {
        if bits >> 8 != 0 {
            return Err(Error::UnknownPrivacyFlag { bits });
        }
        Ok(PrivacyFlags(bits as u8))
    }

    /// The bitmask.
    pub fn bits(self) -> u64 {
        u64::from(self.0)
    }

    /// True when `flag` is in the set.
    pub fn contains(self, flag: PrivacyFlag) -> bool {
        self.0 & (1 << flag.bit()) != 0
    }

    /// The flags, in bit order.
    pub fn iter(self) -> impl Iterator<Item = PrivacyFlag> {
        PrivacyFlag::ALL
            .into_iter()
            .filter(move |f| self.contains(*f))
    }

    /// True with no flags.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for PrivacyFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivacyFlags({self})")
    }
}

impl fmt::Display for PrivacyFlags {
    /// Flag names in alphabetical order, joined by `|`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.iter().map(PrivacyFlag::name).collect();
        names.sort_unstable();
        f.write_str(&names.join("|"))
    }
}

impl FromStr for PrivacyFlags {
    type Err = Error;

    /// The inverse of `Display`; the empty string is the empty set.
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.is_empty() {
            return Ok(PrivacyFlags::EMPTY);
        }
        let mut flags = Vec::new();
        for name in s.split('|') {
            let flag = PrivacyFlag::ALL
                .into_iter()
                .find(|f| f.name() == name)
                .ok_or_else(|| Error::InvalidInput {
                    record: format!("privacy flags {s:?}"),
                    field: "flag",
                    reason: format!("unknown flag {name:?}"),
                })?;
            flags.push(flag);
        }
        Ok(PrivacyFlags::of(flags))
    }
}

/// Bytes that must never be printed: private keys, pairing secrets.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret<const N: usize>(pub [u8; N]);

impl<const N: usize> fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret<{N}>(…)")
    }
}

/// A compressed secp256k1 public key.
pub type PublicKey = [u8; 33];

/// A remote-access session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// A label; not unique.
    pub label: String,
    /// Its state.
    pub state: SessionState,
    /// Its type.
    pub session_type: SessionType,
    /// When it expires.
    pub expiry: DateTime<Utc>,
    /// When it was created (to the microsecond).
    pub created_at: DateTime<Utc>,
    /// When it entered a terminal state.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The mailbox server address.
    pub server_addr: String,
    /// Skip TLS verification towards the mailbox server.
    pub dev_server: bool,
    /// The macaroon root key id (`0xFFEEDDCC ‖ id`).
    pub macaroon_root_key: u64,
    /// How its macaroon is baked; `None` when it has no recipe.
    pub macaroon_recipe: Option<MacaroonRecipe>,
    /// The mailbox pairing secret (14 bytes).
    pub pairing_secret: Secret<14>,
    /// The local private key (32 bytes).
    pub local_private_key: Secret<32>,
    /// The local public key, compressed; unique among sessions.
    pub local_public_key: PublicKey,
    /// The remote public key, once known.
    pub remote_public_key: Option<PublicKey>,
    /// Feature configurations by feature name; `None` when there are none.
    pub feature_config: Option<BTreeMap<String, Vec<u8>>>,
    /// Whether the privacy mapper applies.
    pub with_privacy_mapper: bool,
    /// What the privacy mapper leaves in clear.
    pub privacy_flags: PrivacyFlags,
    /// The group: its first session's id (its own id when not linked).
    pub group_id: SessionId,
    /// The linked account.
    pub account_id: Option<AccountId>,
}

/// What [`crate::Store::new_session`] creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// A label.
    pub label: String,
    /// Its type.
    pub session_type: SessionType,
    /// When it expires.
    pub expiry: DateTime<Utc>,
    /// The mailbox server address.
    pub server_addr: String,
    /// Skip TLS verification towards the mailbox server.
    pub dev_server: bool,
    /// The macaroon recipe; an empty one is stored as none.
    pub macaroon_recipe: Option<MacaroonRecipe>,
    /// Feature configurations; an empty map is stored as none.
    pub feature_config: Option<BTreeMap<String, Vec<u8>>>,
    /// `Some(flags)` turns the privacy mapper on with these flags.
    pub privacy: Option<PrivacyFlags>,
    /// The group to join (an earlier session's id); `None` starts a group.
    pub linked_group: Option<SessionId>,
    /// The account to link; it must exist.
    pub account: Option<AccountId>,
}

impl NewSession {
    /// A session of `session_type` with every option off.
    pub fn new(
        label: impl Into<String>,
        session_type: SessionType,
        expiry: DateTime<Utc>,
        server_addr: impl Into<String>,
    ) -> NewSession {
        NewSession {
            label: label.into(),
            session_type,
            expiry,
            server_addr: server_addr.into(),
            dev_server: false,
            macaroon_recipe: None,
            feature_config: None,
            privacy: None,
            linked_group: None,
            account: None,
        }
    }
}
