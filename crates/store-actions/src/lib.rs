//! nodestore's actions store: the audit log of the RPC calls that remote
//! apps, autopilot features and account holders make through the daemon.
//!
//! # What it is
//! One async [`Store`] trait and three interchangeable backends:
//! - [`KvStore`] on sled: the actions of each session under that session's
//!   prefix, plus the global index (see [`kv`]).
//! - [`SqlStore`] on SQLite or PostgreSQL: the `actions` table, with the
//!   list query built once from the filters with sea-query.
//!
//! # Contract (every backend; LiT's SQL semantics)
//! - [`Store::add_action`] records an action in state Init, attempted now
//!   (UTC, microseconds), and returns its [`ActionLocator`]: its position in
//!   the global order. Locators grow with every action and survive the
//!   migration to SQL unchanged.
//! - Listings are ordered by attempted time, then by locator (so actions
//!   with the same time keep their insertion order), ascending or reversed.
//!   Filters are ANDed; times are compared in UTC, both bounds inclusive.
//!   The offset counts rows after filtering; `max` 0 means no limit.
//!   `last_index` is the locator of the last action returned (0 for none);
//!   `total_count` counts every match, ignoring pagination, and is only
//!   computed when asked for.
//! - Filtering by a session that does not exist fails with
//!   [`Error::SessionNotFound`], by a group that does not exist with
//!   [`Error::UnknownGroup`].
//! - An error reason may only be set together with the Error state.
//! - Empty strings and an empty RPC params document are stored as absent
//!   and read back empty.
//!
//! # Features
//! `kv` (`KvStore`), `sqlite` and `postgres` (`SqlStore` on each), all on by
//! default; a build with only the backends it uses compiles only their
//! drivers (docs/design.md §4.4).

use async_trait::async_trait;
use store_sessions::SessionId;

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
pub(crate) use types::check_state;
pub use types::{
    Action, ActionFilter, ActionLocator, ActionPage, ActionQuery, ActionState, AddAction, Clock,
    ManualClock, RuleAction, SystemClock,
};

/// The actions store. See the crate docs for the contract every backend
/// keeps.
#[async_trait]
pub trait Store: std::fmt::Debug + Send + Sync {
    /// Records an action in state Init, attempted now.
    ///
    /// Errors: [`Error::SessionNotFound`], [`Error::AccountNotFound`] for
    /// links to records that do not exist; [`Error::InvalidInput`] for a
    /// request outside the data contract ([`AddAction::check`]: the feature
    /// name, actor name and RPC method are indexed, so at most
    /// `store_contract::MAX_KEY_BYTES` bytes each). Not idempotent.
    async fn add_action(&self, request: AddAction) -> Result<ActionLocator>;

    /// The action at `locator`.
    ///
    /// Errors: [`Error::NotFound`].
    async fn action(&self, locator: ActionLocator) -> Result<Action>;

    /// Sets the state (and, for Error only, the reason). Idempotent.
    ///
    /// Errors: [`Error::NotFound`], [`Error::InvalidInput`] for a reason
    /// with another state than Error.
    async fn set_action_state(
        &self,
        locator: ActionLocator,
        state: ActionState,
        error_reason: &str,
    ) -> Result<()>;

    /// A page of actions; see the crate docs for order and pagination.
    ///
    /// Errors: [`Error::SessionNotFound`], [`Error::UnknownGroup`] for
    /// filters naming records that do not exist.
    async fn list_actions(&self, query: &ActionQuery) -> Result<ActionPage>;
}

/// Conveniences over [`Store`], written once for every backend: the views a
/// firewall rule takes of its group's history. Implemented for every
/// `Store`, `dyn Store` included; do not implement it.
#[async_trait]
pub trait StoreExt: Store {
    /// The Done actions of a group's sessions, oldest first.
    ///
    /// Errors: [`Error::UnknownGroup`].
    async fn group_actions(&self, group: SessionId) -> Result<Vec<RuleAction>> {
        Ok(to_rule_actions(
            self.list_actions(&done_in_group(group, None)).await?,
        ))
    }

    /// The Done actions of a group's sessions for one feature, oldest first.
    ///
    /// Errors: [`Error::UnknownGroup`].
    async fn group_feature_actions(
        &self,
        group: SessionId,
        feature: &str,
    ) -> Result<Vec<RuleAction>> {
        Ok(to_rule_actions(
            self.list_actions(&done_in_group(group, Some(feature)))
                .await?,
        ))
    }
}

impl<T: Store + ?Sized> StoreExt for T {}

/// The query of a rule's history view: Done actions of a group (and feature).
pub(crate) fn done_in_group(group: SessionId, feature: Option<&str>) -> ActionQuery {
    ActionQuery {
        filter: ActionFilter {
            group_id: Some(group),
            feature_name: feature.map(str::to_owned),
            state: Some(ActionState::Done),
            ..ActionFilter::default()
        },
        ..ActionQuery::default()
    }
}

pub(crate) fn to_rule_actions(page: ActionPage) -> Vec<RuleAction> {
    page.actions
        .into_iter()
        .map(|a| RuleAction {
            method: a.request.rpc_method,
            performed_at: a.attempted_at,
        })
        .collect()
}

#[cfg(test)]
testkit::suite_lists_every_function!(include_str!("conformance.rs"));
