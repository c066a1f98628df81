//! The conformance suite and SQLite specifics (files, reopening, migrations) on temp files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use salesync_core::Error;
use salesync_core::ports::store::Store;
use salesync_store::conformance::{self, Check};
use salesync_store::{SqliteStore, open};

fn url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("salesync.db").display())
}

async fn run(check: Check) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&url(&dir)).await.unwrap();
    check(Arc::new(store)).await;
}

salesync_store::conformance_tests!(run);

#[tokio::test]
async fn conformance_on_sqlite_memory() {
    conformance::run_all(|| async { open("sqlite::memory:").await.unwrap() }).await;
}

#[tokio::test]
async fn reopening_a_file_keeps_everything_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&url(&dir)).await.unwrap();
    conformance::populate(&*store).await;
    drop(store);
    for _ in 0..2 {
        let store = open(&url(&dir)).await.unwrap();
        conformance::verify_populated(&*store).await;
    }
    // WAL mode is on.
    let conn = sqlx::SqlitePool::connect(&url(&dir)).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&conn).await.unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_newer_schema_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&url(&dir)).await.unwrap());
    let conn = sqlx::SqlitePool::connect(&url(&dir)).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', 1, x'00', 0)",
    )
    .execute(&conn)
    .await
    .unwrap();
    conn.close().await;
    let err = open(&url(&dir)).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert!(msg.contains("99990101000000") && msg.contains("newer"), "{msg}");
}

#[tokio::test]
async fn bad_paths_are_clear_errors() {
    let err = open("sqlite:///nonexistent-dir/x/y/salesync.db").await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent-dir/x/y/salesync.db"), "{err}");
}

#[tokio::test]
async fn two_handles_on_one_file_share_claims() {
    // Two processes are approximated by two independently opened stores on the same file.
    let dir = tempfile::tempdir().unwrap();
    let a: Arc<dyn Store> = open(&url(&dir)).await.unwrap();
    let b: Arc<dyn Store> = open(&url(&dir)).await.unwrap();
    conformance::leases(&*a).await;
    assert!(!b.try_lease("leader", "z", std::time::Duration::from_secs(5), conformance::t(114)).await.unwrap());
}

#[tokio::test]
#[ignore = "slow (a million people): cargo test -p salesync-store --test sqlite -- --ignored"]
async fn promotion_of_a_million_people() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&url(&dir)).await.unwrap();
    conformance::promote_at_scale(&store, 1_000_000).await;
}
