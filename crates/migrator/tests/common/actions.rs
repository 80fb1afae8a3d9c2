//! Shared helpers of the actions migration tests.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use store_actions::{Action, ActionQuery, AddAction, ManualClock, Store as _};
use store_sessions::{NewSession, SessionId, SessionType, Store as _};
use testkit::sql::SqlFixture;
use tombstone::{KvDb, KvOptions};

use super::Kv;

/// The key-value stores a case fills, the actions store on a manual clock.
pub(crate) struct Fill {
    pub(crate) actions: store_actions::KvStore,
    pub(crate) sessions: store_sessions::KvStore,
    pub(crate) accounts: store_accounts::KvStore,
    pub(crate) clock: Arc<ManualClock>,
}

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

impl Fill {
    pub(crate) async fn session(&self) -> SessionId {
        let n = NewSession::new(
            "s",
            SessionType::MacaroonAdmin,
            Utc::now() + Duration::days(1),
            "foo.bar.baz:1234",
        );
        self.sessions.new_session(n).await.unwrap().id
    }

    /// Adds an action one second after the last (unless `same_time`).
    pub(crate) async fn add(
        &self,
        req: AddAction,
        same_time: bool,
    ) -> store_actions::ActionLocator {
        if !same_time {
            self.clock
                .set(store_actions::Clock::now(&*self.clock) + Duration::seconds(1));
        }
        self.actions.add_action(req).await.unwrap()
    }
}

pub(crate) fn request(feature: &str) -> AddAction {
    AddAction {
        feature_name: feature.into(),
        trigger: "test-trigger".into(),
        intent: "test-intent".into(),
        structured_json_data: r#"{"test":"data"}"#.into(),
        rpc_method: "Test.Method".into(),
        rpc_params_json: br#"{"test":"data"}"#.to_vec(),
        ..AddAction::default()
    }
}

/// Fills, migrates, and checks that SQL lists exactly the key-value
/// actions, with links to records that are gone dropped.
pub(crate) async fn run_case<F, Fut>(fx: &SqlFixture, fill: F) -> migrator::ActionsReport
where
    F: FnOnce(Fill) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let kv = Kv::new();
    let (expected, dropped_sessions, dropped_accounts) = {
        let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
        let clock = Arc::new(ManualClock::new(t0()));
        let f = Fill {
            actions: store_actions::KvStore::open(&db)
                .unwrap()
                .with_clock(clock.clone()),
            sessions: store_sessions::KvStore::open(&db).unwrap(),
            accounts: store_accounts::KvStore::open(&db).unwrap(),
            clock,
        };
        let (actions, sessions, accounts) =
            (f.actions.clone(), f.sessions.clone(), f.accounts.clone());
        fill(f).await;
        let all = actions
            .list_actions(&ActionQuery::default())
            .await
            .unwrap()
            .actions;
        let (mut ds, mut da) = (0, 0);
        let mut expected: Vec<Action> = Vec::new();
        for mut a in all {
            if let Some(s) = a.request.session_id
                && sessions.session(s).await.is_err()
            {
                a.request.session_id = None;
                ds += 1;
            }
            if let Some(acct) = a.request.account_id
                && store_accounts::Store::account(&accounts, acct)
                    .await
                    .is_err()
            {
                a.request.account_id = None;
                da += 1;
            }
            expected.push(a);
        }
        (expected, ds, da)
    };
    let db = fx.open().await;
    let outcome = migrator::migrate(
        &kv.path,
        &db,
        &migrator::Options {
            chunk_size: 6,
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    let report = outcome.report.actions;
    assert_eq!(report.actions, expected.len() as u64);
    assert_eq!(
        (report.session_links_dropped, report.account_links_dropped),
        (dropped_sessions, dropped_accounts)
    );
    let sql = store_actions::SqlStore::new(db);
    assert_eq!(
        sql.list_actions(&ActionQuery::default())
            .await
            .unwrap()
            .actions,
        expected
    );
    for a in &expected {
        assert_eq!(
            &sql.action(a.locator).await.unwrap(),
            a,
            "locators survive the migration"
        );
    }
    report
}
