//! What a key-value record becomes in SQL (docs/design.md §5.4), written
//! once.
//!
//! The migration applies these rules to what it writes and compares each
//! record read back with their result; `nodestore verify` (through
//! `nodestore::dump::as_migrated`) applies the same functions to predict
//! what SQL holds. Neither has rules of its own, so they cannot disagree.
//!
//! Every function is pure: it takes the record and what the caller knows
//! about the rest of the data (which accounts and sessions made it into
//! SQL) and returns the record as SQL holds it, with what was dropped.

use store_accounts::{Account, AccountId};
use store_actions::Action;
use store_sessions::{Session, SessionId};

/// A time as SQL keeps it: whole microseconds.
pub fn sql_time(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    sqldb::time::truncate_micros(t)
}

/// An account as SQL holds it: its times to the microsecond.
pub fn account(kv: &Account) -> Account {
    let mut a = kv.clone();
    a.last_update = sql_time(a.last_update);
    a.expiration = a.expiration.map(sql_time);
    a
}

/// Of two key-value sessions with one id (legacy databases hold several),
/// whether the one created at `candidate` replaces the one created at
/// `kept`: only when strictly later, so on a tie the session met first in
/// key order stays.
pub fn session_replaces(
    kept: chrono::DateTime<chrono::Utc>,
    candidate: chrono::DateTime<chrono::Utc>,
) -> bool {
    candidate > kept
}

/// A key-value session as SQL holds it, and whether its account link was
/// dropped: times to the microsecond; a macaroon recipe with neither
/// permissions nor caveats, and an empty feature config, stored as none;
/// the link to an account that is not in SQL (`account_in_sql` is false)
/// dropped, the session kept.
pub fn session(kv: &Session, account_in_sql: impl Fn(AccountId) -> bool) -> (Session, bool) {
    let mut s = kv.clone();
    s.expiry = sql_time(s.expiry);
    s.created_at = sql_time(s.created_at);
    s.revoked_at = s.revoked_at.map(sql_time);
    if s.macaroon_recipe.as_ref().is_some_and(|r| r.is_empty()) {
        s.macaroon_recipe = None;
    }
    if s.feature_config.as_ref().is_some_and(|m| m.is_empty()) {
        s.feature_config = None;
    }
    let dropped = s.account_id.is_some_and(|a| !account_in_sql(a));
    if dropped {
        s.account_id = None;
    }
    (s, dropped)
}

/// What the migration dropped from an action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DroppedLinks {
    /// The link to a session that is not in SQL.
    pub session: bool,
    /// The link to an account that is not in SQL.
    pub account: bool,
}

/// A key-value action as SQL holds it: its locator kept, its time to the
/// microsecond, links to a session or an account that is not in SQL
/// dropped (the action kept). Empty and absent RPC params are already one
/// value in the store's types.
pub fn action(
    kv: &Action,
    session_in_sql: impl Fn(SessionId) -> bool,
    account_in_sql: impl Fn(AccountId) -> bool,
) -> (Action, DroppedLinks) {
    let mut a = kv.clone();
    a.attempted_at = sql_time(a.attempted_at);
    let mut dropped = DroppedLinks::default();
    if a.request.session_id.is_some_and(|s| !session_in_sql(s)) {
        a.request.session_id = None;
        dropped.session = true;
    }
    if a.request.account_id.is_some_and(|x| !account_in_sql(x)) {
        a.request.account_id = None;
        dropped.account = true;
    }
    (a, dropped)
}

/// The session group that firewall data (a kv-store entry, a privacy pair)
/// stored under the session id `stored_under` belongs to in SQL: a group's
/// data may be stored under the id of any of its sessions, and belongs to
/// that session's group, as LiT resolves it (docs/design.md §4.2); data
/// under an id no migrated session has is skipped (`None`). `group_of`
/// gives a migrated session's group, in whatever form the caller keeps it
/// (SQL ids, dump text).
pub fn firewall_group<S, G>(stored_under: S, group_of: impl FnOnce(S) -> Option<G>) -> Option<G> {
    group_of(stored_under)
}
