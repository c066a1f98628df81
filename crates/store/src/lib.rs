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
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// Opens the store a URL names, running migrations: `memory:`, `sqlite://path` (or
/// `sqlite::memory:`), `postgres://…` (or `postgresql://…`).
///
/// Unknown schemes, and schemes whose backend feature is not compiled in, are `Error::Config`
/// errors naming the scheme. Credentials never appear in error messages.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
    match scheme.as_str() {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        "sqlite" => open_sqlite(url).await,
        "postgres" | "postgresql" => open_postgres(url).await,
        _ => Err(Error::Config {
            key: "store url".into(),
            reason: format!(
                "unknown store URL scheme {scheme:?} in {}; expected memory:, sqlite://path or postgres://…",
                error::redact_url(url)
            ),
        }),
    }
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
}
