//! What every store crate needs around its backends, written once.
//!
//! - [`off_executor`]: sled calls block, so the key-value stores run them on
//!   tokio's blocking pool, never on the executor's threads. A call that
//!   panicked comes back as [`TaskFailed`], never as a panic in the caller.
//! - [`store_error_conversions!`]: the `From` conversions a store's error
//!   enum needs from its backends' errors (`sqldb`, `tombstone`, `sled`) and
//!   from [`TaskFailed`], so every store reports a backend failure, and a
//!   retired key-value database, the same way; and `backend_kind` and
//!   `is_retryable`, so a caller can ask whether a failure is worth a retry.
//! - [`migration_api!`]: an item a store exports for the migrator only,
//!   public behind the store's `migration` feature.

/// A blocking backend call that did not return: it panicked, or the runtime
/// shut down under it.
#[derive(Debug, thiserror::Error)]
#[error("a blocking backend call did not finish: {0}")]
pub struct TaskFailed(#[from] tokio::task::JoinError);

/// Runs `f` on tokio's blocking pool and returns what it returns; a call
/// that did not finish is `E::from(TaskFailed)`.
pub async fn off_executor<T, E, F>(f: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<TaskFailed> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(TaskFailed(e)))?
}

/// The conversions every store crate's error enum needs. The enum must have
/// a `Backend { backend: &'static str, source: Box<dyn Error + Send + Sync> }`
/// variant and, with the crate's `kv` feature, a `Tombstoned(tombstone::Error)`
/// one. The conversions follow the calling crate's backend features (see
/// docs/design.md §4.4): with `kv` it must depend on `tombstone` and `sled`,
/// with `sqlite` or `postgres` on `sqldb`:
/// - a `sqldb::DbError` becomes `Backend`, named after its backend;
/// - a tombstone error becomes `Tombstoned` when the database is retired,
///   `Backend` (`"kv"`) otherwise, so callers can match a retired database;
/// - a `sled::Error` and a [`TaskFailed`] become `Backend` (`"kv"`: only the
///   key-value stores run calls on the blocking pool);
/// - `backend_error()` and `backend_kind()` (with a SQL feature) and
///   `is_retryable()` say what kind of backend failure an error is.
#[macro_export]
macro_rules! store_error_conversions {
    ($error:ident) => {
        impl $error {
            /// The SQL backend's failure this error is (`None` for every
            /// other error, a key-value one included).
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            pub fn backend_error(&self) -> ::core::option::Option<&::sqldb::DbError> {
                match self {
                    $error::Backend { source, .. } => source.downcast_ref::<::sqldb::DbError>(),
                    _ => ::core::option::Option::None,
                }
            }

            /// The kind of a SQL backend's failure, as the backend classified
            /// it (`None` for every other error, a key-value one included).
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            pub fn backend_kind(&self) -> ::core::option::Option<::sqldb::ErrorKind> {
                self.backend_error().map(|e| e.kind)
            }

            /// True when running the call again may succeed: the SQL backend
            /// was busy, or the transaction hit a serialization failure or a
            /// deadlock (`sqldb::DbError::is_retryable`). Never for a
            /// refusal of the call's input or state.
            pub fn is_retryable(&self) -> bool {
                #[cfg(any(feature = "sqlite", feature = "postgres"))]
                {
                    self.backend_kind()
                        == ::core::option::Option::Some(::sqldb::ErrorKind::Retryable)
                }
                #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
                {
                    false
                }
            }
        }
        #[cfg(any(feature = "sqlite", feature = "postgres"))]
        impl ::core::convert::From<::sqldb::DbError> for $error {
            fn from(e: ::sqldb::DbError) -> Self {
                $error::Backend {
                    backend: e.backend,
                    source: ::std::boxed::Box::new(e),
                }
            }
        }

        #[cfg(feature = "kv")]
        impl ::core::convert::From<::tombstone::Error> for $error {
            fn from(e: ::tombstone::Error) -> Self {
                match e {
                    ::tombstone::Error::Tombstoned { .. } => $error::Tombstoned(e),
                    other => $error::Backend {
                        backend: "kv",
                        source: ::std::boxed::Box::new(other),
                    },
                }
            }
        }

        #[cfg(feature = "kv")]
        impl ::core::convert::From<::sled::Error> for $error {
            fn from(e: ::sled::Error) -> Self {
                $error::Backend {
                    backend: "kv",
                    source: ::std::boxed::Box::new(e),
                }
            }
        }

        #[cfg(feature = "kv")]
        impl ::core::convert::From<$crate::TaskFailed> for $error {
            fn from(e: $crate::TaskFailed) -> Self {
                $error::Backend {
                    backend: "kv",
                    source: ::std::boxed::Box::new(e),
                }
            }
        }
    };
}

/// Declares one item a store exports for the migrator only (its bulk row
/// builders, loaders and id lookups, docs/design.md §4.4): public with the
/// store's `migration` feature, which the migrator turns on, and visible
/// to the store itself otherwise. The item is written once, without a
/// visibility.
#[macro_export]
macro_rules! migration_api {
    ($(#[$meta:meta])* $kw:ident $($item:tt)*) => {
        $(#[$meta])*
        #[cfg(feature = "migration")]
        pub $kw $($item)*

        $(#[$meta])*
        #[cfg(not(feature = "migration"))]
        #[allow(dead_code, reason = "the migrator's, public with the `migration` feature")]
        pub(crate) $kw $($item)*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum E {
        #[error("{0}")]
        Task(#[from] TaskFailed),
        #[error("refused")]
        Refused,
    }

    #[tokio::test]
    async fn results_errors_and_panics_come_back_as_values() {
        assert_eq!(off_executor(|| Ok::<_, E>(7)).await.unwrap(), 7);
        assert!(matches!(
            off_executor(|| Err::<u8, _>(E::Refused)).await,
            Err(E::Refused)
        ));
        #[allow(clippy::panic)]
        let panicked = off_executor(|| -> Result<u8, E> { panic!("boom") }).await;
        let err = panicked.unwrap_err();
        assert!(matches!(err, E::Task(_)));
        assert!(
            err.to_string()
                .starts_with("a blocking backend call did not finish")
        );
    }
}
