#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

use std::sync::Arc;

use salesync_core::ports::store::Store;
use salesync_core::{Error, Result};

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
mod codec;
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
mod error;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// The backend a store URL names (see [`check_url`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// `memory:`.
    Memory,
    /// `sqlite://path`, `sqlite:path`, `sqlite::memory:`.
    Sqlite,
    /// `postgres://…`, `postgresql://…`.
    Postgres,
}

/// Reads a store URL without opening anything (no file, no connection): the backend it names,
/// with the URL parsed as that backend's connection options when the backend is compiled in.
///
/// Errors are the `Error::Config` errors [`open`] returns for the same URL; credentials never
/// appear in them.
pub fn check_url(url: &str) -> Result<Backend> {
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
    match scheme.as_str() {
        "memory" => Ok(Backend::Memory),
        "sqlite" => check_sqlite(url).map(|()| Backend::Sqlite),
        "postgres" | "postgresql" => check_postgres(url).map(|()| Backend::Postgres),
        _ => Err(Error::Config {
            key: "store url".into(),
            reason: format!(
                "unknown store URL scheme {scheme:?} in {}; expected memory:, sqlite://path or postgres://…",
                error::redact_url(url)
            ),
        }),
    }
}

/// Opens the store a URL names, running migrations: `memory:`, `sqlite://path` (or
/// `sqlite::memory:`), `postgres://…` (or `postgresql://…`).
///
/// Unknown schemes, and schemes whose backend feature is not compiled in, are `Error::Config`
/// errors naming the scheme (see [`check_url`]). Credentials never appear in error messages.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    match check_url(url)? {
        Backend::Memory => Ok(Arc::new(MemoryStore::new())),
        Backend::Sqlite => open_sqlite(url).await,
        Backend::Postgres => open_postgres(url).await,
    }
}

#[cfg(feature = "sqlite")]
fn check_sqlite(url: &str) -> Result<()> {
    sqlite::options(url).map(drop)
}

#[cfg(not(feature = "sqlite"))]
fn check_sqlite(url: &str) -> Result<()> {
    Err(not_compiled("sqlite", url))
}

#[cfg(feature = "postgres")]
fn check_postgres(url: &str) -> Result<()> {
    postgres::options(url).map(drop)
}

#[cfg(not(feature = "postgres"))]
fn check_postgres(url: &str) -> Result<()> {
    Err(not_compiled("postgres", url))
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(SqliteStore::open(url).await?))
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(url: &str) -> Result<Arc<dyn Store>> {
    Err(not_compiled("sqlite", url))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(PostgresStore::open(url).await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(url: &str) -> Result<Arc<dyn Store>> {
    Err(not_compiled("postgres", url))
}

#[cfg(not(all(feature = "sqlite", feature = "postgres")))]
fn not_compiled(feature: &str, url: &str) -> Error {
    Error::Config {
        key: "store url".into(),
        reason: format!(
            "{} needs the {feature:?} store backend, which is not compiled into this salesync \
             (enable the salesync-store feature {feature:?})",
            error::redact_url(url)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_scheme_is_a_config_error_without_password() {
        let err = open("mysql://root:hunter2@db/x").await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        assert!(msg.contains("\"mysql\"") && !msg.contains("hunter2"), "{msg}");
        let err = open("no-scheme-here").await.unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
    }

    #[test]
    fn check_url_names_the_backend_without_opening_anything() {
        assert_eq!(check_url("memory:").unwrap(), Backend::Memory);
        assert!(matches!(check_url("mysql://root:hunter2@db/x"), Err(Error::Config { .. })));
        assert!(matches!(check_url(""), Err(Error::Config { .. })));
        #[cfg(feature = "sqlite")]
        assert_eq!(check_url("sqlite:///nonexistent-dir/x.db").unwrap(), Backend::Sqlite);
        #[cfg(feature = "postgres")]
        {
            assert_eq!(check_url("postgres://u:pw@localhost:5432/db").unwrap(), Backend::Postgres);
            let err = check_url("postgres://u:hunter2@localhost:notaport/db").unwrap_err();
            assert!(matches!(err, Error::Config { .. }) && !err.to_string().contains("hunter2"), "{err}");
        }
    }
}
