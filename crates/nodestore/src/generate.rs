//! Realistic key-value databases, for `nodestore demo` and the benchmark.
//!
//! Accounts with invoices and payments; sessions with recipes (3 caveats,
//! 3 permissions), 2 feature configs and 2 privacy flags each, some linked
//! into groups and some to accounts; kv-store entries in every namespace;
//! privacy pairs; actions linked to sessions and accounts. Deterministic for
//! a seed. Keys are random bytes shaped like compressed public keys (the
//! stores do not check curve points), so large sets generate quickly.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use store_accounts::{
    Account, AccountId, AccountType, Hash, LastIndexes, PaymentEntry, PaymentStatus,
};
use store_actions::{Action, ActionLocator, ActionState, AddAction};
use store_firewall::{KvEntry, PrivacyPair};
use store_sessions::{
    Caveat, MacaroonRecipe, Permission, PrivacyFlag, PrivacyFlags, Secret, Session, SessionId,
    SessionState, SessionType,
};
use tombstone::{KvDb, KvOptions};

use crate::{Error, Result};

/// How much data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// A few thousand rows (CI, the demo).
    S,
    /// About 300,000 rows.
    M,
    /// About 3.3 million rows.
    L,
    /// Three times L, about 9.8 million rows: shows whether cost stays
    /// linear and memory flat beyond L.
    XL,
}

impl std::str::FromStr for Scale {
    type Err = Error;
    fn from_str(s: &str) -> Result<Scale> {
        match s {
            "S" | "s" => Ok(Scale::S),
            "M" | "m" => Ok(Scale::M),
            "L" | "l" => Ok(Scale::L),
            "XL" | "xl" => Ok(Scale::XL),
            _ => Err(Error::Config(format!(
                "scale {s:?}: expected S, M, L or XL"
            ))),
        }
    }
}

/// The counts of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Accounts.
    pub accounts: u64,
    /// Invoices of each account.
    pub invoices_per_account: u64,
    /// Payments of each account.
    pub payments_per_account: u64,
    /// Sessions.
    pub sessions: u64,
    /// Kv-store entries.
    pub kv_entries: u64,
    /// Privacy pairs.
    pub privacy_pairs: u64,
    /// Actions.
    pub actions: u64,
}

impl Scale {
    /// The shape of this scale.
    pub fn shape(self) -> Shape {
        match self {
            Scale::S => Shape {
                accounts: 20,
                invoices_per_account: 10,
                payments_per_account: 10,
                sessions: 100,
                kv_entries: 300,
                privacy_pairs: 200,
                actions: 3_000,
            },
            Scale::M => Shape {
                accounts: 1_000,
                invoices_per_account: 20,
                payments_per_account: 20,
                sessions: 10_000,
                kv_entries: 20_000,
                privacy_pairs: 10_000,
                actions: 120_000,
            },
            Scale::L => Shape {
                accounts: 10_000,
                invoices_per_account: 50,
                payments_per_account: 50,
                sessions: 100_000,
                kv_entries: 100_000,
                privacy_pairs: 50_000,
                actions: 1_000_000,
            },
            Scale::XL => {
                let l = Scale::L.shape();
                Shape {
                    accounts: 3 * l.accounts,
                    sessions: 3 * l.sessions,
                    kv_entries: 3 * l.kv_entries,
                    privacy_pairs: 3 * l.privacy_pairs,
                    actions: 3 * l.actions,
                    ..l
                }
            }
        }
    }
}

/// Rows each session has in SQL: itself, 3 permissions, 3 caveats, 2
/// feature configs, 2 privacy flags.
pub const ROWS_PER_SESSION: u64 = 11;

impl Shape {
    /// SQL rows per store: accounts (with invoices, payments and the two
    /// index rows), sessions (with child rows), firewall, actions.
    pub fn rows(&self) -> [(&'static str, u64); 4] {
        [
            (
                "accounts",
                self.accounts * (1 + self.invoices_per_account + self.payments_per_account) + 2,
            ),
            ("sessions", self.sessions * ROWS_PER_SESSION),
            ("firewall", self.kv_entries + self.privacy_pairs),
            ("actions", self.actions),
        ]
    }

    /// All SQL rows.
    pub fn total_rows(&self) -> u64 {
        self.rows().iter().map(|(_, n)| n).sum()
    }
}

const BATCH: u64 = 10_000;
const FEATURES: [&str; 5] = ["AutoFees", "Rebalancer", "OkxChannelOpen", "Loop", "Pool"];
const METHODS: [&str; 8] = [
    "/lnrpc.Lightning/UpdateChannelPolicy",
    "/lnrpc.Lightning/SendPaymentSync",
    "/routerrpc.Router/SendPaymentV2",
    "/lnrpc.Lightning/AddInvoice",
    "/lnrpc.Lightning/ListChannels",
    "/lnrpc.Lightning/GetInfo",
    "/litrpc.Autopilot/ListAutopilotFeatures",
    "/looprpc.SwapClient/LoopOut",
];

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Writes a data set of `shape` into a new key-value database at `dir`.
/// `progress` is told `(store, done, total)` after each batch.
pub async fn generate(
    dir: &Path,
    shape: Shape,
    seed: u64,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<()> {
    if tombstone::holds_database(dir) {
        return Err(Error::Config(format!(
            "{} already holds a database",
            dir.display()
        )));
    }
    let kv = KvDb::open(dir, &KvOptions::default())?;
    let mut rng = StdRng::seed_from_u64(seed);

    let accounts = accounts(&kv, shape, &mut rng, progress).await?;
    let (sessions, groups) = sessions(&kv, shape, &accounts, &mut rng, progress).await?;
    let firewall = store_firewall::KvStore::open(&kv)?;
    kv_entries(&firewall, shape, &groups, &mut rng, progress).await?;
    privacy_pairs(&firewall, shape, &groups, progress).await?;
    actions(&kv, shape, &sessions, &accounts, &mut rng, progress).await?;
    kv.flush()?;
    Ok(())
}

/// Accounts, with invoices and payments; returns their ids.
async fn accounts(
    kv: &KvDb,
    shape: Shape,
    rng: &mut StdRng,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<Vec<AccountId>> {
    let accounts_store = store_accounts::KvStore::open(kv)?;
    let mut account_ids = Vec::with_capacity(shape.accounts as usize);
    let mut used = HashSet::new();
    let mut done = 0;
    while done < shape.accounts {
        let n = BATCH.min(shape.accounts - done);
        let mut batch = Vec::with_capacity(n as usize);
        for i in done..done + n {
            let mut id = AccountId(rng.random());
            while !used.insert(id) {
                id = AccountId(rng.random());
            }
            account_ids.push(id);
            let balance = rng.random_range(10_000..100_000_000u64);
            let invoices: BTreeSet<Hash> = (0..shape.invoices_per_account)
                .map(|_| Hash(rng.random()))
                .collect();
            let payments: BTreeMap<Hash, PaymentEntry> = (0..shape.payments_per_account)
                .map(|j| {
                    let status = [
                        PaymentStatus::Succeeded,
                        PaymentStatus::Succeeded,
                        PaymentStatus::Failed,
                        PaymentStatus::InFlight,
                    ][(j % 4) as usize];
                    (
                        Hash(rng.random()),
                        PaymentEntry {
                            status,
                            full_amount_msat: rng.random_range(1_000..1_000_000),
                        },
                    )
                })
                .collect();
            batch.push(Account {
                id,
                account_type: AccountType::InitialBalance,
                initial_balance_msat: balance,
                current_balance_msat: balance as i64 - rng.random_range(0..balance as i64),
                last_update: start()
                    + Duration::seconds(i as i64)
                    + Duration::nanoseconds(rng.random_range(0..1_000_000_000)),
                expiration: (i % 3 != 0).then(|| start() + Duration::days(365)),
                label: if i % 2 == 0 {
                    format!("account-{i}")
                } else {
                    String::new()
                },
                invoices,
                payments,
            });
        }
        accounts_store.import_accounts(batch).await?;
        done += n;
        progress("accounts", done, shape.accounts);
    }
    if shape.accounts > 0 {
        store_accounts::Store::store_last_indexes(
            &accounts_store,
            LastIndexes {
                add_index: shape.accounts * shape.invoices_per_account,
                settle_index: shape.accounts,
            },
        )
        .await?;
    }

    Ok(account_ids)
}

/// Sessions: every fourth starts a group that the next ones join. Returns
/// their ids and the groups'.
async fn sessions(
    kv: &KvDb,
    shape: Shape,
    account_ids: &[AccountId],
    rng: &mut StdRng,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<(Vec<SessionId>, Vec<SessionId>)> {
    let sessions_store = store_sessions::KvStore::open(kv)?;
    let mut session_ids = Vec::with_capacity(shape.sessions as usize);
    let mut groups = Vec::new();
    let mut ids = HashSet::new();
    let mut done = 0;
    let mut group = SessionId([0; 4]);
    while done < shape.sessions {
        let n = BATCH.min(shape.sessions - done);
        let mut batch = Vec::with_capacity(n as usize);
        for i in done..done + n {
            let mut key = [0u8; 33];
            loop {
                key[0] = 2 + rng.random_range(0..2u8);
                rng.fill(&mut key[1..]);
                if ids.insert(SessionId::from_public_key(&key)) {
                    break;
                }
            }
            let id = SessionId::from_public_key(&key);
            let founder = i % 4 == 0;
            if founder {
                group = id;
                groups.push(id);
            }
            let account = (i % 5 == 0 && !account_ids.is_empty())
                .then(|| account_ids[rng.random_range(0..account_ids.len())]);
            let created = start() + Duration::seconds(i as i64 * 7);
            // Only the newest of a group may still be live.
            let state = if founder || i % 4 == 3 {
                [SessionState::Created, SessionState::Revoked][(i % 2) as usize]
            } else {
                SessionState::Revoked
            };
            let mut caveats: Vec<Caveat> = (0..3)
                .map(|c| Caveat {
                    id: format!("caveat-{i}-{c}").into_bytes(),
                    verification_id: (c == 2).then(|| vec![c as u8; 16]),
                    location: if c == 2 {
                        "third-party".into()
                    } else {
                        String::new()
                    },
                })
                .collect();
            if let Some(a) = account {
                caveats[0].id = format!("lnd-custom account {a}").into_bytes();
            }
            batch.push(Session {
                id,
                label: format!("session-{i}"),
                state,
                session_type: if account.is_some() {
                    SessionType::MacaroonAccount
                } else {
                    SessionType::ALL[(i % 5) as usize]
                },
                expiry: created + Duration::days(90),
                created_at: created,
                revoked_at: (state == SessionState::Revoked).then(|| created + Duration::days(1)),
                server_addr: "mailbox.terminal.lightning.today:443".into(),
                dev_server: false,
                macaroon_root_key: id.macaroon_root_key(),
                macaroon_recipe: Some(MacaroonRecipe {
                    permissions: ["info:read", "offchain:read", "offchain:write"]
                        .iter()
                        .map(|p| {
                            let (e, a) = p.split_once(':').unwrap_or((p, ""));
                            Permission {
                                entity: e.into(),
                                action: a.into(),
                            }
                        })
                        .collect(),
                    caveats,
                }),
                pairing_secret: Secret(rng.random()),
                local_private_key: Secret(rng.random()),
                local_public_key: key,
                remote_public_key: (i % 2 == 0).then(|| {
                    let mut k = [0u8; 33];
                    k[0] = 3;
                    rng.fill(&mut k[1..]);
                    k
                }),
                feature_config: Some(
                    FEATURES[..2]
                        .iter()
                        .map(|f| ((*f).to_owned(), format!("{{\"session\":{i}}}").into_bytes()))
                        .collect(),
                ),
                with_privacy_mapper: true,
                privacy_flags: PrivacyFlags::of([
                    PrivacyFlag::ClearPubkeys,
                    PrivacyFlag::ClearAmounts,
                ]),
                group_id: group,
                account_id: account,
            });
            session_ids.push(id);
        }
        sessions_store.import_sessions(batch).await?;
        done += n;
        progress("sessions", done, shape.sessions);
    }

    Ok((session_ids, groups))
}

/// Kv-store entries in every namespace.
async fn kv_entries(
    firewall: &store_firewall::KvStore,
    shape: Shape,
    groups: &[SessionId],
    rng: &mut StdRng,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<()> {
    let mut done = 0;
    while done < shape.kv_entries {
        let n = BATCH.min(shape.kv_entries - done);
        let mut batch = Vec::with_capacity(n as usize);
        for i in done..done + n {
            let (group, feature) = match i % 3 {
                _ if groups.is_empty() => (None, None),
                0 => (None, None),
                1 => (Some(groups[rng.random_range(0..groups.len())]), None),
                _ => (
                    Some(groups[rng.random_range(0..groups.len())]),
                    Some(FEATURES[(i % 5) as usize].to_owned()),
                ),
            };
            batch.push(KvEntry {
                perm: i % 4 != 0,
                rule: format!("rule-{}", i % 20),
                group,
                feature,
                key: format!("entry-{i}"),
                value: format!("{{\"value\":{}}}", rng.random_range(0..1_000_000)).into_bytes(),
            });
        }
        firewall.import_entries(batch).await?;
        done += n;
        progress("kv-stores", done, shape.kv_entries);
    }

    Ok(())
}

/// Privacy pairs, spread over the groups.
async fn privacy_pairs(
    firewall: &store_firewall::KvStore,
    shape: Shape,
    groups: &[SessionId],
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<()> {
    let mut done = 0;
    while done < shape.privacy_pairs && !groups.is_empty() {
        let n = BATCH.min(shape.privacy_pairs - done);
        let batch = (done..done + n)
            .map(|i| PrivacyPair {
                group: groups[(i % groups.len() as u64) as usize],
                real: format!("02{:064x}", i),
                pseudo: format!("pseudo-{i:016x}"),
            })
            .collect();
        firewall.import_pairs(batch).await?;
        done += n;
        progress("privacy pairs", done, shape.privacy_pairs);
    }

    Ok(())
}

/// Actions: most through sessions, some for accounts.
async fn actions(
    kv: &KvDb,
    shape: Shape,
    session_ids: &[SessionId],
    account_ids: &[AccountId],
    rng: &mut StdRng,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<()> {
    let actions = store_actions::KvStore::open(kv)?;
    let mut done = 0;
    while done < shape.actions {
        let n = BATCH.min(shape.actions - done);
        let mut batch = Vec::with_capacity(n as usize);
        for i in done..done + n {
            let roll = rng.random_range(0..10u8);
            let session = (roll < 7 && !session_ids.is_empty())
                .then(|| session_ids[rng.random_range(0..session_ids.len())]);
            let account = (roll >= 8 && !account_ids.is_empty())
                .then(|| account_ids[rng.random_range(0..account_ids.len())]);
            let state = if i % 10 == 0 {
                ActionState::Error
            } else {
                ActionState::Done
            };
            batch.push(Action {
                locator: ActionLocator::from_index(i + 1),
                request: AddAction {
                    macaroon_root_key_id: session.map(SessionId::macaroon_root_key),
                    session_id: session,
                    account_id: account,
                    actor_name: if roll < 3 {
                        "Autopilot".into()
                    } else {
                        String::new()
                    },
                    feature_name: FEATURES[(i % 5) as usize].into(),
                    trigger: "schedule".into(),
                    intent: "keep fees competitive".into(),
                    structured_json_data: format!("{{\"run\":{i}}}"),
                    rpc_method: METHODS[(i % 8) as usize].into(),
                    rpc_params_json: format!("{{\"n\":{i}}}").into_bytes(),
                },
                attempted_at: start() + Duration::milliseconds(i as i64 * 250),
                state,
                error_reason: if state == ActionState::Error {
                    "peer offline".into()
                } else {
                    String::new()
                },
            });
        }
        actions.import_actions(batch).await?;
        done += n;
        progress("actions", done, shape.actions);
    }
    Ok(())
}
