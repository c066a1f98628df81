//! Test stores: the PostgreSQL URL of the tests, a SQLite file in a temp dir, a fresh PostgreSQL
//! schema dropped afterwards.

use salesync_core::activity::AdminSettings;
use salesync_core::ports::store::Store;

/// The test PostgreSQL database: `SALESYNC_TEST_POSTGRES_URL`, default
/// `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_url() -> String {
    std::env::var("SALESYNC_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Turns reminder Task sync on (off by default), so reminders are outbound items too.
pub async fn enable_reminder_sync(store: &dyn Store) {
    let admin = AdminSettings { reminder_task_sync: true, ..store.settings().await.expect("admin settings") };
    store.put_settings(admin).await.expect("admin settings stored");
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use with_backends::*;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod with_backends {
    use std::sync::Arc;

    use salesync_core::ports::store::Store;

    /// A store for one test: its URL (another process opens the same store with it), the test's
    /// own handle, and a working directory (the SQLite file, child processes' logs).
    pub struct TestStore {
        /// Opens this same store (for PostgreSQL, with the schema in `search_path`).
        pub url: String,
        /// The test's own handle.
        pub store: Arc<dyn Store>,
        /// The working directory (removed when dropped).
        pub dir: tempfile::TempDir,
        #[cfg(feature = "postgres")]
        pg: Option<(sqlx::PgPool, String)>,
    }

    impl TestStore {
        /// A SQLite file in a fresh temp dir.
        #[cfg(feature = "sqlite")]
        pub async fn sqlite() -> TestStore {
            let dir = tempfile::tempdir().expect("a temp dir");
            let url = format!("sqlite://{}", dir.path().join("mirror.db").display());
            let store = salesync_store::open(&url).await.unwrap_or_else(|e| panic!("opening {url}: {e}"));
            TestStore {
                url,
                store,
                dir,
                #[cfg(feature = "postgres")]
                pg: None,
            }
        }

        /// A fresh schema `<tag>_<random>` of the test PostgreSQL database ([`postgres_url`]);
        /// drop it at the end with [`cleanup`](Self::cleanup) or [`SchemaDropper::around`].
        ///
        /// [`postgres_url`]: crate::postgres_url
        #[cfg(feature = "postgres")]
        pub async fn postgres(tag: &str) -> TestStore {
            Self::postgres_at(&crate::postgres_url(), tag).await
        }

        /// Like [`postgres`](Self::postgres), in the database at `base`.
        #[cfg(feature = "postgres")]
        pub async fn postgres_at(base: &str, tag: &str) -> TestStore {
            let schema = format!("{tag}_{}", uuid::Uuid::new_v4().simple());
            let store = salesync_store::PostgresStore::open_in_schema(base, &schema).await.unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {base} is needed: {e}. Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
                )
            });
            let pool = store.pool().clone();
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
            TestStore {
                url,
                store: Arc::new(store),
                dir: tempfile::tempdir().expect("a temp dir"),
                pg: Some((pool, schema)),
            }
        }

        /// The PostgreSQL schema (`None` for SQLite).
        pub fn schema(&self) -> Option<&str> {
            #[cfg(feature = "postgres")]
            if let Some((_, schema)) = &self.pg {
                return Some(schema);
            }
            None
        }

        /// Drops a PostgreSQL schema (call at the end, after every other user is gone).
        pub async fn cleanup(&self) {
            self.dropper().run().await;
        }

        /// What drops the PostgreSQL schema, kept apart so a failed test can still drop it.
        pub fn dropper(&self) -> SchemaDropper {
            SchemaDropper {
                #[cfg(feature = "postgres")]
                pg: self.pg.clone(),
            }
        }
    }

    /// Drops a test's PostgreSQL schema (nothing for SQLite).
    pub struct SchemaDropper {
        #[cfg(feature = "postgres")]
        pg: Option<(sqlx::PgPool, String)>,
    }

    impl SchemaDropper {
        /// Drops it.
        pub async fn run(&self) {
            #[cfg(feature = "postgres")]
            if let Some((pool, schema)) = &self.pg {
                sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .execute(pool)
                    .await
                    .unwrap_or_else(|e| panic!("dropping schema {schema}: {e}"));
            }
        }

        /// Runs `test` (a spawned task, so a panic is caught), drops the schema, then re-raises a
        /// panic.
        pub async fn around<F>(self, test: F)
        where
            F: std::future::Future<Output = ()> + Send + 'static,
        {
            let outcome = tokio::spawn(test).await;
            self.run().await;
            if let Err(e) = outcome {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}
