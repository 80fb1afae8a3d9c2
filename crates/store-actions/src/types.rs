//! The actions store's values: locators, states, requests, actions,
//! filters, queries and pages, the clock actions are stamped with, and
//! their checks against the data contract.

use std::fmt;

use chrono::{DateTime, Utc};
use store_accounts::AccountId;
use store_sessions::SessionId;

use crate::{Error, Result};

/// Where "now" comes from when an action is recorded. Stores use
/// [`SystemClock`]; tests use [`ManualClock`] to record actions at chosen
/// times (several at one time, for example).
pub trait Clock: fmt::Debug + Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that shows the time it was last set to.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock showing `t`.
    pub fn new(t: DateTime<Utc>) -> ManualClock {
        ManualClock(std::sync::Mutex::new(t))
    }

    /// Sets the time.
    pub fn set(&self, t: DateTime<Utc>) {
        if let Ok(mut now) = self.0.lock() {
            *now = t;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().map(|t| *t).unwrap_or_else(|_| Utc::now())
    }
}

/// Where an action is: its position in the global order of actions.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActionLocator(u64);

impl ActionLocator {
    /// The locator with this index (as `last_index` reports it).
    pub fn from_index(index: u64) -> ActionLocator {
        ActionLocator(index)
    }

    /// The index of the locator.
    pub fn index(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ActionLocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActionLocator({})", self.0)
    }
}

impl fmt::Display for ActionLocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The state of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionState {
    /// Not known.
    Unknown,
    /// Recorded, not finished.
    Init,
    /// Performed.
    Done,
    /// Failed; the action has an error reason.
    Error,
}

impl ActionState {
    /// Every state.
    pub const ALL: [ActionState; 4] = [
        ActionState::Unknown,
        ActionState::Init,
        ActionState::Done,
        ActionState::Error,
    ];

    /// The stored number.
    pub fn code(self) -> u8 {
        match self {
            ActionState::Unknown => 0,
            ActionState::Init => 1,
            ActionState::Done => 2,
            ActionState::Error => 3,
        }
    }

    /// The state of a stored number.
    pub fn from_code(code: i64) -> Option<ActionState> {
        ActionState::ALL
            .into_iter()
            .find(|s| i64::from(s.code()) == code)
    }
}

/// What [`Store::add_action`](crate::Store::add_action) records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AddAction {
    /// The full root key id of the macaroon used.
    pub macaroon_root_key_id: Option<u64>,
    /// The session the call came through; it must exist.
    pub session_id: Option<SessionId>,
    /// The account the call was made for; it must exist.
    pub account_id: Option<AccountId>,
    /// Who acted, e.g. `Autopilot`; empty for direct calls.
    pub actor_name: String,
    /// The feature that acted.
    pub feature_name: String,
    /// What triggered it.
    pub trigger: String,
    /// What it meant to do.
    pub intent: String,
    /// Structured details as JSON.
    pub structured_json_data: String,
    /// The full gRPC method URI.
    pub rpc_method: String,
    /// The request parameters as JSON.
    pub rpc_params_json: Vec<u8>,
}

/// A recorded action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Action {
    /// Where it is.
    pub locator: ActionLocator,
    /// What was recorded.
    pub request: AddAction,
    /// When it was attempted (UTC, microseconds).
    pub attempted_at: DateTime<Utc>,
    /// Its state.
    pub state: ActionState,
    /// Why it failed (Error state only); empty otherwise.
    pub error_reason: String,
}

/// Which actions to list; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionFilter {
    /// Actions of this session.
    pub session_id: Option<SessionId>,
    /// Actions of any session of this group.
    pub group_id: Option<SessionId>,
    /// Actions of this feature.
    pub feature_name: Option<String>,
    /// Actions of this actor.
    pub actor_name: Option<String>,
    /// Actions of this RPC method.
    pub rpc_method: Option<String>,
    /// Actions in this state.
    pub state: Option<ActionState>,
    /// Actions attempted at or after this time.
    pub start_time: Option<DateTime<Utc>>,
    /// Actions attempted at or before this time.
    pub end_time: Option<DateTime<Utc>>,
}

/// A listing: filters and pagination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionQuery {
    /// Which actions.
    pub filter: ActionFilter,
    /// Matches to skip.
    pub offset: u64,
    /// Matches to return at most; 0 for all.
    pub max: u64,
    /// Newest first.
    pub reversed: bool,
    /// Also count every match.
    pub count_all: bool,
}

/// The result of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionPage {
    /// The actions, in listing order.
    pub actions: Vec<Action>,
    /// The locator index of the last action returned; 0 when none.
    pub last_index: u64,
    /// Every match, when counting was asked for; 0 otherwise.
    pub total_count: u64,
}

/// What history rules see of a done action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleAction {
    /// The RPC method.
    pub method: String,
    /// When it was performed.
    pub performed_at: DateTime<Utc>,
}

fn contract<T>(
    record: &str,
    field: &'static str,
    checked: std::result::Result<T, store_contract::Violation>,
) -> Result<T> {
    checked.map_err(|v| Error::InvalidInput {
        record: record.to_owned(),
        field,
        reason: v.to_string(),
    })
}

impl AddAction {
    /// The request against the data contract (docs/design.md §4.1), the
    /// same on every backend: the feature name, the actor name and the RPC
    /// method sit in indexes (schema steps 8 and 9), so each is a key; the
    /// rest is text or bytes.
    pub fn check(&self) -> Result<()> {
        let rec = "a new action";
        contract(rec, "actor_name", store_contract::key(&self.actor_name))?;
        contract(rec, "feature_name", store_contract::key(&self.feature_name))?;
        contract(rec, "trigger", store_contract::text(&self.trigger))?;
        contract(rec, "intent", store_contract::text(&self.intent))?;
        contract(
            rec,
            "structured_json_data",
            store_contract::text(&self.structured_json_data),
        )?;
        contract(rec, "rpc_method", store_contract::key(&self.rpc_method))?;
        contract(
            rec,
            "rpc_params_json",
            store_contract::bytes(&self.rpc_params_json),
        )?;
        Ok(())
    }
}

impl Action {
    /// A stored action against the data contract (imports and the migration
    /// check what they write with it).
    pub fn check(&self) -> Result<()> {
        self.request.check()?;
        let rec = format!("action {}", self.locator);
        contract(
            &rec,
            "error_reason",
            store_contract::text(&self.error_reason),
        )?;
        contract(
            &rec,
            "attempted_at",
            store_contract::time(self.attempted_at),
        )?;
        contract(
            &rec,
            "locator",
            store_contract::number(self.locator.index()),
        )?;
        Ok(())
    }
}

impl ActionFilter {
    /// The filter's text against the data contract.
    pub fn check(&self) -> Result<()> {
        let rec = "an action filter";
        for (field, v) in [
            ("feature_name", &self.feature_name),
            ("actor_name", &self.actor_name),
            ("rpc_method", &self.rpc_method),
        ] {
            if let Some(v) = v {
                contract(rec, field, store_contract::text(v))?;
            }
        }
        Ok(())
    }
}

pub(crate) fn check_state(locator: ActionLocator, state: ActionState, reason: &str) -> Result<()> {
    contract(
        &format!("action {locator}"),
        "error_reason",
        store_contract::text(reason),
    )?;
    if !reason.is_empty() && state != ActionState::Error {
        return Err(Error::InvalidInput {
            record: format!("action {locator}"),
            field: "error_reason",
            reason: "an error reason may only be set with the Error state".into(),
        });
    }
    Ok(())
}
