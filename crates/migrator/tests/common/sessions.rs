//! Shared helpers of the sessions migration tests.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use store_accounts::AccountId;
use store_sessions::{
    Caveat, MacaroonRecipe, Permission, PrivacyFlags, Secret, Session, SessionId, SessionState,
    SessionType, Store,
};
use testkit::sql::SqlFixture;
use tombstone::{KvDb, KvOptions};

use super::{Kv, Lcg};

/// The sessions a migration must produce from what the key-value store
/// holds, by LiT's rules: the newest session per id, links to
/// removed accounts dropped, nil-versus-empty normalised, times in µs.
pub(crate) fn expected(all: Vec<Session>, live_accounts: &[AccountId]) -> (Vec<Session>, u64, u64) {
    let mut best: BTreeMap<SessionId, Session> = BTreeMap::new();
    let mut duplicates = 0;
    for s in all {
        match best.get(&s.id) {
            Some(cur) => {
                duplicates += 1;
                if s.created_at > cur.created_at {
                    best.insert(s.id, s);
                }
            }
            None => {
                best.insert(s.id, s);
            }
        }
    }
    let mut dropped = 0;
    let out = best
        .into_values()
        .map(|mut s| {
            s.expiry = sqldb::time::truncate_micros(s.expiry);
            s.created_at = sqldb::time::truncate_micros(s.created_at);
            s.revoked_at = s.revoked_at.map(sqldb::time::truncate_micros);
            if s.macaroon_recipe
                .as_ref()
                .is_some_and(MacaroonRecipe::is_empty)
            {
                s.macaroon_recipe = None;
            }
            if s.account_id.is_some_and(|a| !live_accounts.contains(&a)) {
                s.account_id = None;
                dropped += 1;
            }
            s
        })
        .collect();
    (out, duplicates, dropped)
}

/// Fills the key-value database, migrates it, and checks every session.
pub(crate) async fn run_case<F, Fut>(fx: &SqlFixture, fill: F) -> migrator::SessionsReport
where
    F: FnOnce(store_sessions::KvStore, store_accounts::KvStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let kv = Kv::new();
    let (all, accounts) = {
        let db = KvDb::open(&kv.path, &KvOptions::default()).unwrap();
        let sessions = store_sessions::KvStore::open(&db).unwrap();
        let accounts = store_accounts::KvStore::open(&db).unwrap();
        fill(sessions.clone(), accounts.clone()).await;
        let ids: Vec<AccountId> = store_accounts::Store::accounts(&accounts)
            .await
            .unwrap()
            .iter()
            .map(|a| a.id)
            .collect();
        (all_sessions(&db), ids)
    };
    let (want, duplicates, dropped) = expected(all, &accounts);
    let db = fx.open().await;
    let outcome = migrator::migrate(
        &kv.path,
        &db,
        &migrator::Options {
            chunk_size: 7,
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    let report = outcome.report.sessions;
    assert_eq!(report.sessions, want.len() as u64);
    assert_eq!(report.duplicates_dropped, duplicates);
    assert_eq!(report.account_links_dropped, dropped);
    let sql = store_sessions::SqlStore::new(db);
    for s in &want {
        assert_eq!(&sql.session(s.id).await.unwrap(), s, "session {}", s.id);
    }
    assert_eq!(sql.list_sessions().await.unwrap().len(), want.len());
    report
}

/// Every session in the tree, duplicates included (the store's listing
/// shows them all; its id lookups only the newest).
fn all_sessions(db: &KvDb) -> Vec<Session> {
    db.tree(store_sessions::kv::SESSIONS_TREE)
        .unwrap()
        .iter()
        .map(|r| {
            let (k, v) = r.unwrap();
            store_sessions::kv::decode_session(&k, &v).unwrap()
        })
        .collect()
}

/// A session like `base` but under `id`, created `later` after it, with a
/// key of its own.
pub(crate) fn clone_with_id(base: &Session, id: SessionId, later: Duration, salt: u8) -> Session {
    let mut key = base.local_public_key;
    key[1..5].copy_from_slice(&id.0);
    key[32] ^= salt;
    Session {
        id,
        group_id: id,
        macaroon_root_key: id.macaroon_root_key(),
        local_public_key: key,
        created_at: base.created_at + later,
        label: format!("{} as {id}", base.label),
        ..base.clone()
    }
}

pub(crate) fn random_session(rng: &mut Lcg, i: u64, created: DateTime<Utc>) -> Session {
    let mut key = [0u8; 33];
    key[0] = 2 + (rng.next() % 2) as u8;
    for b in key.iter_mut().skip(1) {
        *b = rng.next() as u8;
    }
    let id = SessionId::from_public_key(&key);
    let options = !i.is_multiple_of(10);
    let coin = |rng: &mut Lcg| options && rng.next().is_multiple_of(2);
    let recipe = coin(rng).then(|| MacaroonRecipe {
        permissions: (0..rng.range(1, 4))
            .map(|j| Permission {
                entity: format!("e{j}"),
                action: "read".into(),
            })
            .collect(),
        caveats: (0..rng.range(0, 4))
            .map(|j| Caveat {
                id: format!("c{j}").into_bytes(),
                verification_id: (j % 2 == 0).then(|| vec![j as u8; 3]),
                location: if j % 3 == 0 {
                    String::new()
                } else {
                    "loc".into()
                },
            })
            .collect(),
    });
    let config = coin(rng).then(|| {
        (0..rng.range(1, 10))
            .map(|j| {
                (
                    format!("feature{j}"),
                    if j % 5 == 0 { vec![] } else { vec![j as u8; 4] },
                )
            })
            .collect()
    });
    let privacy = coin(rng);
    Session {
        id,
        label: format!("session{i}"),
        state: SessionState::ALL[(i % 5) as usize],
        session_type: SessionType::ALL[(i % 6) as usize],
        expiry: created + Duration::seconds(rng.range(1, 1_000_000) as i64),
        created_at: created,
        revoked_at: (i % 5 == 2 || i % 5 == 3).then(|| created + Duration::seconds(5)),
        server_addr: if rng.next().is_multiple_of(2) {
            "mailbox:443".into()
        } else {
            String::new()
        },
        dev_server: coin(rng),
        macaroon_root_key: id.macaroon_root_key(),
        macaroon_recipe: recipe,
        pairing_secret: Secret([i as u8; 14]),
        local_private_key: Secret([i as u8 ^ 0x55; 32]),
        local_public_key: key,
        remote_public_key: rng.next().is_multiple_of(3).then_some([4; 33]),
        feature_config: config,
        with_privacy_mapper: privacy,
        privacy_flags: if privacy {
            PrivacyFlags::from_bits(rng.next() % 256).unwrap()
        } else {
            PrivacyFlags::EMPTY
        },
        group_id: id,
        account_id: None,
    }
}
