//! Property: any key-value sessions database (every type, state and option,
//! linked groups, duplicate ids, accounts removed after linking) migrates
//! so that every session reads back as LiT's rules say, on both
//! SQL backends.
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::Lcg;
use common::sessions::{clone_with_id, random_session, run_case};
use proptest::prelude::*;
use testkit::sql::SqlFixture;

/// The shape of one random database; the contents come from `seed`.
#[derive(Debug, Clone)]
struct Shape {
    seed: u64,
    sessions: u64,
    groups_every: u64,
    accounts_every: u64,
    duplicates: u64,
}

fn shape() -> impl Strategy<Value = Shape> {
    (any::<u64>(), 0u64..25, 1u64..6, 1u64..6, 0u64..4).prop_map(
        |(seed, sessions, groups_every, accounts_every, duplicates)| Shape {
            seed,
            sessions,
            groups_every,
            accounts_every,
            duplicates,
        },
    )
}

async fn check(fx: SqlFixture, shape: Shape) {
    run_case(&fx, |s, a| async move {
        let mut rng = Lcg(shape.seed);
        let start = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap()
            + Duration::nanoseconds((shape.seed % 1_000_000_000) as i64);
        let mut accounts = Vec::new();
        let mut made = Vec::new();
        for i in 0..shape.sessions {
            let mut session = random_session(&mut rng, i, start + Duration::seconds(i as i64 * 10));
            if i % shape.accounts_every == 0 {
                let acct = store_accounts::Store::new_account(&a, 1 + i, None, "")
                    .await
                    .unwrap();
                session.account_id = Some(acct.id);
                accounts.push(acct.id);
            }
            if i % shape.groups_every == 1
                && let Some(founder) = made.last().cloned()
            {
                let founder: store_sessions::Session = founder;
                session.group_id = founder.group_id;
            }
            s.import_sessions(vec![session.clone()]).await.unwrap();
            made.push(session);
        }
        for d in 0..shape.duplicates.min(made.len() as u64) {
            let base = &made[(rng.next() % made.len() as u64) as usize];
            let dup = clone_with_id(
                base,
                base.id,
                Duration::seconds(rng.range(0, 3) as i64 - 1),
                0x80 | d as u8,
            );
            s.import_sessions(vec![store_sessions::Session {
                group_id: base.group_id,
                ..dup
            }])
            .await
            .unwrap();
        }
        for id in accounts.iter().step_by(2) {
            store_accounts::Store::remove_account(&a, *id)
                .await
                .unwrap();
        }
    })
    .await;
}

fn run(backend: &'static str, cases: u32) {
    common::run_property(
        backend,
        "random_session_stores_read_back_equal",
        cases,
        shape(),
        |fx, shape| async move {
            check(fx, shape).await;
            Ok(())
        },
    );
}

mod sqlite {
    #[test]
    fn random_session_stores_read_back_equal() {
        super::run("sqlite", 24);
    }
}

mod postgres {
    #[test]
    fn random_session_stores_read_back_equal() {
        super::run("postgres", 16);
    }
}
