//! Test support for nodestore.
//!
//! - [`files`]: copy a database directory, read every byte of one.
//! - [`cluster`]: start and stop a throwaway PostgreSQL cluster from the
//!   local server binaries (`initdb`, `pg_ctl`), also used by `cargo xtask pg`.
//! - [`pg`] (feature `client`): a fresh, isolated database per test, dropped
//!   afterwards, so tests run in parallel.
//! - [`backend_tests!`]: one test per backend and behaviour, named
//!   `<backend>::<behaviour>` so `cargo xtask ci` can count them per backend.
//!
//! # Where the PostgreSQL server comes from
//! In order: the URL in `NODESTORE_TEST_POSTGRES_URL`; else a cluster
//! started from the local binaries, once per test process (`cargo xtask`
//! starts one for the whole run and passes its URL, so a run starts one
//! cluster, not one per test); else a testcontainers PostgreSQL where a Docker
//! engine answers; else the PostgreSQL tests skip with a loud message on
//! stderr. With `NODESTORE_REQUIRE_POSTGRES=1` (CI sets it) a missing server
//! fails the test instead of skipping it.

pub mod cluster;
pub mod files;
#[cfg(feature = "client")]
pub mod pg;
#[cfg(feature = "sql")]
pub mod sql;
pub mod suite;

/// The environment variable naming an existing PostgreSQL server for tests.
pub const URL_ENV: &str = "NODESTORE_TEST_POSTGRES_URL";
/// Set to `1` to make a missing PostgreSQL server a test failure.
pub const REQUIRE_ENV: &str = "NODESTORE_REQUIRE_POSTGRES";
/// The prefix of the line a skipped test writes to stderr; `cargo xtask`
/// counts these lines so a skipped backend never looks like a passing one.
pub const SKIP_MARKER: &str = "nodestore-testkit: SKIPPED";

/// Generates one test per behaviour for one backend, in a module named after
/// the backend.
///
/// `fixture` is an async function taking the test's name and returning
/// `Option<F>`; `None` means the backend is unavailable and the test has
/// already reported its skip. Each behaviour is an async function in the
/// calling module taking `&F`; or, with `suite = path::to::module`, a
/// function of that module taking `&*fixture` (`F` derefs to, say, `dyn Store`).
///
/// ```text
/// testkit::backend_tests!(sqlite => sqlite_fixture; applies_every_step, second_run_is_a_no_op);
/// testkit::backend_tests!(kv => kv_store, suite = store_accounts::conformance; new_account_starts_empty);
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($backend:ident => $fixture:path; $($test:ident),+ $(,)?) => {
        mod $backend {
            #[allow(unused_imports, reason = "a suite may use none of the file's imports")]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let name = concat!(module_path!(), "::", stringify!($test));
                    let Some(fixture) = $fixture(name).await else { return };
                    super::$test(&fixture).await;
                }
            )+
        }
    };
    ($backend:ident => $fixture:path, suite = $suite:path; $($test:ident),+ $(,)?) => {
        mod $backend {
            #[allow(unused_imports, reason = "a suite may use none of the file's imports")]
            use super::*;
            use $suite as suite;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let name = concat!(module_path!(), "::", stringify!($test));
                    let Some(fixture) = $fixture(name).await else { return };
                    suite::$test(&*fixture).await;
                }
            )+
        }
    };
}
