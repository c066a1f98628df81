//! The conformance suite and SQLite specifics (files, reopening, migrations) on temp files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use salesync_core::Error;
use salesync_core::ports::store::{NewOutboxItem, OutboxPayload, Recording, Store, Target};
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

/// A store written before migration 0003 kept "outcome unknown" as a mark in `last_error`; the
/// migration turns the mark into the `outcome_unknown` column, for those items only.
#[tokio::test]
async fn upgrading_to_migration_0003_turns_the_error_text_mark_into_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&url(&dir)).await.unwrap();
    let item = |key: &str| NewOutboxItem {
        key: key.into(),
        target: Target::Marketo,
        payload: OutboxPayload::Unsubscribe { marketo_id: 1 },
        not_before: conformance::t(0),
    };
    let outbox = vec![item("marked"), item("plain")];
    let ids = store.record(Recording { outbox, ..Default::default() }).await.unwrap();
    drop(store);
    // Back to the schema of migration 0002, as an older salesync left it.
    let conn = sqlx::SqlitePool::connect(&url(&dir)).await.unwrap();
    for (id, error) in ids.iter().zip(["send: outcome unknown: read timed out", "HTTP 503 from Marketo"]) {
        sqlx::query("UPDATE outbox SET last_error = ?1 WHERE id = ?2")
            .bind(error)
            .bind(id)
            .execute(&conn)
            .await
            .unwrap();
    }
    sqlx::query("ALTER TABLE outbox DROP COLUMN outcome_unknown").execute(&conn).await.unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 3").execute(&conn).await.unwrap();
    conn.close().await;

    let store = open(&url(&dir)).await.unwrap();
    let marked = store.outbox_item(ids[0]).await.unwrap().unwrap();
    let plain = store.outbox_item(ids[1]).await.unwrap().unwrap();
    assert!(marked.outcome_unknown, "{marked:?}");
    assert!(!plain.outcome_unknown, "{plain:?}");
    assert_eq!(plain.last_error.as_deref(), Some("HTTP 503 from Marketo"));
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
