//! nodestore's sessions store: the remote-access sessions a node hands out
//! (Lightning Node Connect), each with its keys, macaroon recipe, feature
//! configs, privacy flags, state and group.
//!
//! # What it is
//! One async [`Store`] trait and three interchangeable backends:
//! - [`KvStore`] on sled, with LiT's layout: sessions keyed by
//!   local public key, the id index and the group index (see [`kv`]).
//! - [`SqlStore`] on SQLite or PostgreSQL: the `sessions` table and its four
//!   child tables, with one implementation of the logic for both.
//!
//! # Contract (every backend)
//! - A new session starts [`SessionState::Reserved`] with fresh keys; its id
//!   is bytes 1..5 of its compressed local public key, and ids and local
//!   public keys are unique.
//! - States move only along [`SessionState::can_shift_to`]; shifting to the
//!   current state is a no-op; entering Revoked or Expired sets `revoked_at`.
//! - A session joins a group (`linked_group`) only if the group exists and
//!   every session in it is revoked or expired; a linked account must exist.
//! - Listings are ordered by creation time (microseconds; sessions created in
//!   the same microsecond come in an unspecified order); group members in
//!   creation order.
//! - A recipe with neither permissions nor caveats, and an empty feature
//!   config map, are stored as none. Caveat order and permission order are
//!   kept; an empty but present verification id stays empty, not absent.
//! - Times are kept to the microsecond on every backend.
//! - Private keys and pairing secrets never appear in `Debug` output.
//!
//! # Features
//! `kv` (`KvStore`), `sqlite` and `postgres` (`SqlStore` on each), all on by
//! default; a build with only the backends it uses compiles only their
//! drivers (docs/design.md §4.4).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[cfg(feature = "testing")]
pub mod conformance;
mod error;
#[cfg(feature = "kv")]
pub mod kv;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
mod types;

pub use error::{Error, Result};
#[cfg(feature = "kv")]
pub use kv::KvStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::SqlStore;
pub use types::{
    Caveat, MacaroonRecipe, NewSession, Permission, PrivacyFlag, PrivacyFlags, PublicKey, Secret,
    Session, SessionId, SessionState, SessionType,
};

/// The sessions store. See the crate docs for the contract every backend
/// keeps.
#[async_trait]
pub trait Store: std::fmt::Debug + Send + Sync {
    /// Creates a Reserved session with fresh keys.
    ///
    /// Errors: [`Error::AccountNotFound`] for a linked account that does not
    /// exist, [`Error::UnknownGroup`] and [`Error::GroupStillActive`] for a
    /// group that cannot be joined, [`Error::InvalidInput`] for a time out of
    /// range. Not idempotent.
    async fn new_session(&self, new: NewSession) -> Result<Session>;

    /// The session with this id.
    ///
    /// Errors: [`Error::NotFound`].
    async fn session(&self, id: SessionId) -> Result<Session>;

    /// The session with this local public key.
    ///
    /// Errors: [`Error::NotFound`].
    async fn session_by_local_key(&self, key: &PublicKey) -> Result<Session>;

    /// Every session, by creation time.
    async fn list_sessions(&self) -> Result<Vec<Session>>;

    /// Sessions of one type, by creation time.
    async fn list_sessions_by_type(&self, session_type: SessionType) -> Result<Vec<Session>>;

    /// Sessions in one state, by creation time.
    async fn list_sessions_by_state(&self, state: SessionState) -> Result<Vec<Session>>;

    /// Sets (or replaces) the remote public key. Idempotent.
    ///
    /// Errors: [`Error::NotFound`].
    async fn update_remote_public_key(&self, id: SessionId, key: PublicKey) -> Result<()>;

    /// Moves the session to `to`; staying in the current state is a no-op
    /// (idempotent, `revoked_at` untouched).
    ///
    /// Errors: [`Error::NotFound`], [`Error::IllegalStateShift`].
    async fn shift_state(&self, id: SessionId, to: SessionState) -> Result<()>;

    /// Deletes the session if it is Reserved.
    ///
    /// Errors: [`Error::NotFound`], [`Error::NotReserved`].
    async fn delete_reserved_session(&self, id: SessionId) -> Result<()>;

    /// Deletes every Reserved session; returns how many. Idempotent.
    async fn delete_reserved_sessions(&self) -> Result<u64>;

    /// The group of a session.
    ///
    /// Errors: [`Error::NotFound`].
    async fn group_id(&self, id: SessionId) -> Result<SessionId>;

    /// The ids of a group's sessions, in creation order.
    ///
    /// Errors: [`Error::UnknownGroup`].
    async fn session_ids_in_group(&self, group: SessionId) -> Result<Vec<SessionId>>;
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

pub(crate) fn not_found_id(id: SessionId) -> Error {
    Error::NotFound {
        what: format!("id {id}"),
    }
}

pub(crate) fn not_found_key(key: &PublicKey) -> Error {
    Error::NotFound {
        what: format!("local key {}", hex::encode(key)),
    }
}

/// A value of `record`'s `field` checked against the data contract
/// (`store_contract`), refused as [`Error::InvalidInput`] naming the field.
pub(crate) fn contract<T>(
    record: &str,
    field: &'static str,
    checked: std::result::Result<T, store_contract::Violation>,
) -> Result<T> {
    checked.map_err(|v| invalid(record, field, v.to_string()))
}

/// Every text, binary and time field of a new session against the data
/// contract, the same on every backend; returns the expiry as stored.
fn check_new_session(new: &NewSession) -> Result<DateTime<Utc>> {
    check_fields(
        "new session",
        &new.label,
        &new.server_addr,
        new.macaroon_recipe.as_ref(),
        new.feature_config.as_ref(),
    )?;
    contract("new session", "expiry", store_contract::time(new.expiry))
}

impl Session {
    /// A stored session against the data contract (imports and the
    /// migration check what they write with it).
    pub fn check(&self) -> Result<()> {
        let rec = format!("session {}", self.id);
        check_fields(
            &rec,
            &self.label,
            &self.server_addr,
            self.macaroon_recipe.as_ref(),
            self.feature_config.as_ref(),
        )?;
        for (field, t) in [
            ("expiry", Some(self.expiry)),
            ("created_at", Some(self.created_at)),
            ("revoked_at", self.revoked_at),
        ] {
            if let Some(t) = t {
                contract(&rec, field, store_contract::time(t))?;
            }
        }
        Ok(())
    }
}

fn check_fields(
    rec: &str,
    label: &str,
    server_addr: &str,
    recipe: Option<&MacaroonRecipe>,
    feature_config: Option<&std::collections::BTreeMap<String, Vec<u8>>>,
) -> Result<()> {
    contract(rec, "label", store_contract::text(label))?;
    contract(rec, "server_addr", store_contract::text(server_addr))?;
    if let Some(r) = recipe {
        for p in &r.permissions {
            contract(rec, "permission entity", store_contract::text(&p.entity))?;
            contract(rec, "permission action", store_contract::text(&p.action))?;
        }
        for c in &r.caveats {
            contract(rec, "caveat id", store_contract::bytes(&c.id))?;
            if let Some(v) = &c.verification_id {
                contract(rec, "caveat verification id", store_contract::bytes(v))?;
            }
            contract(rec, "caveat location", store_contract::text(&c.location))?;
        }
    }
    for (name, config) in feature_config.into_iter().flatten() {
        contract(rec, "feature config name", store_contract::key(name))?;
        contract(rec, "feature config", store_contract::bytes(config))?;
    }
    Ok(())
}

/// Fresh keys: a random secp256k1 key pair whose id is not `taken`.
pub(crate) fn generate_keys(
    mut taken: impl FnMut(SessionId) -> Result<bool>,
) -> Result<(Secret<32>, PublicKey, SessionId)> {
    use k256::elliptic_curve::sec1::ToEncodedPoint;
    for _ in 0..100 {
        let bytes: [u8; 32] = rand::random();
        let Ok(secret) = k256::SecretKey::from_slice(&bytes) else {
            continue;
        };
        let point = secret.public_key().to_encoded_point(true);
        let public: PublicKey = point
            .as_bytes()
            .try_into()
            .map_err(|_| invalid("new session", "local_public_key", "not 33 bytes"))?;
        let id = SessionId::from_public_key(&public);
        if !taken(id)? {
            return Ok((Secret(bytes), public, id));
        }
    }
    Err(invalid(
        "new session",
        "id",
        "no unused session id in 100 attempts",
    ))
}

/// Builds the session `new` describes (keys aside), with the store-wide
/// normalisations: times to the microsecond, an empty recipe or feature map
/// stored as none.
pub(crate) fn build_session(
    new: NewSession,
    keys: (Secret<32>, PublicKey, SessionId),
) -> Result<Session> {
    let expiry = check_new_session(&new)?;
    let (local_private_key, local_public_key, id) = keys;
    Ok(Session {
        id,
        label: new.label,
        state: SessionState::Reserved,
        session_type: new.session_type,
        expiry,
        created_at: store_contract::normalise_time(Utc::now()),
        revoked_at: None,
        server_addr: new.server_addr,
        dev_server: new.dev_server,
        macaroon_root_key: id.macaroon_root_key(),
        macaroon_recipe: new.macaroon_recipe.filter(|r| !r.is_empty()),
        pairing_secret: Secret(rand::random()),
        local_private_key,
        local_public_key,
        remote_public_key: None,
        feature_config: new.feature_config.filter(|m| !m.is_empty()),
        with_privacy_mapper: new.privacy.is_some(),
        privacy_flags: new.privacy.unwrap_or_default(),
        group_id: new.linked_group.unwrap_or(id),
        account_id: new.account,
    })
}

/// The time a shift to `to` stamps into `revoked_at`, if any.
pub(crate) fn revoked_at_for(to: SessionState) -> Option<DateTime<Utc>> {
    to.is_terminal()
        .then(|| store_contract::normalise_time(Utc::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privacy_flags_round_trip_and_refuse_unknown_bits() {
        let flags = PrivacyFlags::of([PrivacyFlag::ClearHtlcs, PrivacyFlag::ClearPubkeys]);
        assert_eq!(flags.bits(), 0b10_0001);
        assert_eq!(PrivacyFlags::from_bits(flags.bits()).unwrap(), flags);
        assert_eq!(flags.to_string(), "ClearHTLCs|ClearPubkeys");
        assert_eq!(
            "ClearHTLCs|ClearPubkeys".parse::<PrivacyFlags>().unwrap(),
            flags
        );
        assert_eq!("".parse::<PrivacyFlags>().unwrap(), PrivacyFlags::EMPTY);
        assert!(matches!(
            PrivacyFlags::from_bits(1 << 8),
            Err(Error::UnknownPrivacyFlag { bits: 256 })
        ));
        assert_eq!(PrivacyFlags::from_bits(0xff).unwrap().iter().count(), 8);
    }

    #[test]
    fn state_shifts_follow_lits_table() {
        use SessionState::*;
        let legal: Vec<(SessionState, SessionState)> = SessionState::ALL
            .into_iter()
            .flat_map(|a| SessionState::ALL.into_iter().map(move |b| (a, b)))
            .filter(|(a, b)| a.can_shift_to(*b))
            .collect();
        assert_eq!(
            legal,
            vec![
                (Created, Revoked),
                (Created, Expired),
                (InUse, Revoked),
                (InUse, Expired),
                (Reserved, Created)
            ]
        );
    }

    #[test]
    fn keys_are_valid_and_the_id_is_the_key_prefix() {
        let (secret, public, id) = generate_keys(|_| Ok(false)).unwrap();
        assert!(public[0] == 2 || public[0] == 3);
        assert_eq!(id.0, public[1..5]);
        assert!(k256::SecretKey::from_slice(&secret.0).is_ok());
        assert_eq!(format!("{secret:?}"), "Secret<32>(…)");
        assert_eq!(
            SessionId::from_macaroon_root_key(id.macaroon_root_key()),
            id
        );
        assert_eq!(id.macaroon_root_key() >> 32, 0xFFEE_DDCC);
    }
}

#[cfg(test)]
testkit::suite_lists_every_function!(include_str!("conformance.rs"));
