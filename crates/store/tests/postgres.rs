//! The conformance suite and PostgreSQL specifics, each test in its own fresh schema (dropped at
//! the end), so tests run in parallel and leave nothing behind.
//!
//! Needs a server: `SALESYNC_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! When it is unreachable the tests fail, saying how to start it; they never skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use salesync_core::Error;
use salesync_core::ports::store::{NewOutboxItem, OutboxPayload, OutboxStore, Recording, Store, Target};
use salesync_store::conformance::{self, Check};
use salesync_store::{PostgresStore, open};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("SALESYNC_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

fn fresh_schema() -> String {
    format!("salesync_test_{:016x}", rand::random::<u64>())
}

async fn open_schema(schema: &str) -> PostgresStore {
    match PostgresStore::open_in_schema(&url(), schema).await {
        Ok(store) => store,
        Err(e) => panic!(
            "cannot open the test PostgreSQL database ({e}).\n\
             Start the server with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
             or set SALESYNC_TEST_POSTGRES_URL (default {DEFAULT_URL})."
        ),
    }
}

async fn drop_schema(schema: &str) {
    let pool = sqlx::PgPool::connect(&url()).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&pool).await.unwrap();
    pool.close().await;
}

/// Runs `f` with a fresh schema name and drops the schema afterwards, even when `f` panics.
async fn in_schema<F, Fut>(f: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let schema = fresh_schema();
    let outcome = AssertUnwindSafe(f(schema.clone())).catch_unwind().await;
    drop_schema(&schema).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn run(check: Check) {
    in_schema(|schema| async move {
        let store = open_schema(&schema).await;
        check(Arc::new(store)).await;
    })
    .await;
}

salesync_store::conformance_tests!(run);

#[tokio::test]
async fn reopening_the_schema_keeps_everything_and_migrations_are_idempotent() {
    in_schema(|schema| async move {
        let store = open_schema(&schema).await;
        assert_eq!(store.schema(), Some(schema.as_str()));
        conformance::populate(&store).await;
        store.pool().close().await;
        for _ in 0..2 {
            let store = open_schema(&schema).await;
            conformance::verify_populated(&store).await;
        }
        // The tables live in the schema, not in public.
        let store = open_schema(&schema).await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'people'",
        )
        .bind(&schema)
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(n, 1);
    })
    .await;
}

/// A store written before migration 0003 kept "outcome unknown" as a mark in `last_error`; the
/// migration turns the mark into the `outcome_unknown` column, for those items only.
#[tokio::test]
async fn upgrading_to_migration_0003_turns_the_error_text_mark_into_the_flag() {
    in_schema(|schema| async move {
        let store = open_schema(&schema).await;
        let item = |key: &str| NewOutboxItem {
            key: key.into(),
            target: Target::Marketo,
            payload: OutboxPayload::Unsubscribe { marketo_id: 1 },
            not_before: conformance::t(0),
        };
        let outbox = vec![item("marked"), item("plain")];
        let ids = store.record(Recording { outbox, ..Default::default() }).await.unwrap();
        // Back to the schema of migration 0002, as an older salesync left it.
        let pool = store.pool();
        for (id, error) in ids.iter().zip(["send: outcome unknown: read timed out", "HTTP 503 from Marketo"]) {
            sqlx::query("UPDATE outbox SET last_error = $1 WHERE id = $2")
                .bind(error)
                .bind(id)
                .execute(pool)
                .await
                .unwrap();
        }
        sqlx::query("ALTER TABLE outbox DROP COLUMN outcome_unknown").execute(pool).await.unwrap();
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 3").execute(pool).await.unwrap();
        pool.close().await;

        let store = open_schema(&schema).await;
        let marked = store.outbox_item(ids[0]).await.unwrap().unwrap();
        let plain = store.outbox_item(ids[1]).await.unwrap().unwrap();
        assert!(marked.outcome_unknown, "{marked:?}");
        assert!(!plain.outcome_unknown, "{plain:?}");
        assert_eq!(plain.last_error.as_deref(), Some("HTTP 503 from Marketo"));
    })
    .await;
}

#[tokio::test]
async fn two_stores_on_one_schema_share_claims_and_leases() {
    in_schema(|schema| async move {
        let a: Arc<dyn Store> = Arc::new(open_schema(&schema).await);
        let b: Arc<dyn Store> = Arc::new(open_schema(&schema).await);
        conformance::leases(&*a).await;
        assert!(!b.try_lease("leader", "z", std::time::Duration::from_secs(5), conformance::t(114)).await.unwrap());
        // Claimers on two pools (like two processes) never share an item.
        let items = (0..40)
            .map(|i| NewOutboxItem {
                key: format!("k{i}"),
                target: Target::Marketo,
                payload: OutboxPayload::Unsubscribe { marketo_id: 1 },
                not_before: conformance::t(0),
            })
            .collect();
        let ids = a.record(Recording { outbox: items, ..Default::default() }).await.unwrap();
        let lease = std::time::Duration::from_secs(60);
        let target = Target::Marketo;
        let (x, y) = tokio::join!(
            a.claim(target, 25, "a", lease, conformance::t(1)),
            b.claim(target, 25, "b", lease, conformance::t(1))
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.len() + y.len(), ids.len());
        assert!(x.iter().all(|i| !y.iter().any(|j| j.id == i.id)));
    })
    .await;
}

#[tokio::test]
async fn open_by_url_migrates_the_connection_search_path_idempotently() {
    in_schema(|schema| async move {
        drop(open_schema(&schema).await);
        let sep = if url().contains('?') { '&' } else { '?' };
        let with_path = format!("{}{sep}options=-c%20search_path%3D{schema}", url());
        let a = open(&with_path).await.unwrap();
        conformance::populate(&*a).await;
        let b = open(&with_path).await.unwrap();
        conformance::verify_populated(&*b).await;
    })
    .await;
}

#[tokio::test]
async fn a_newer_schema_is_refused_clearly() {
    in_schema(|schema| async move {
        let store = open_schema(&schema).await;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'from the future', true, '\\x00', 0)",
        )
        .execute(store.pool())
        .await
        .unwrap();
        store.pool().close().await;
        let err = PostgresStore::open_in_schema(&url(), &schema).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        assert!(msg.contains("99990101000000") && msg.contains("newer"), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error_without_the_password() {
    let err = open("postgres://someone:s3cr3t-pw@127.0.0.1:1/nodb").await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("cannot connect to PostgreSQL") && msg.contains("127.0.0.1:1"), "{msg}");
    assert!(!msg.contains("s3cr3t-pw"), "{msg}");
    let err = PostgresStore::open_in_schema(&url(), "bad-name").await.unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
}

#[tokio::test]
#[ignore = "slow (a million people): cargo test -p salesync-store --features postgres --test postgres -- --ignored"]
async fn promotion_of_a_million_people() {
    in_schema(|schema| async move {
        let store = open_schema(&schema).await;
        conformance::promote_at_scale(&store, 1_000_000).await;
    })
    .await;
}
