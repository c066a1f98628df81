//! Hostile responses: a tiny axum server on loopback serves a good OAuth token and bad data, and
//! the real connector must turn each into a typed error, without panicking, hanging, or reading an
//! unbounded body into memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Method, Response, StatusCode, header};
use chrono::{TimeZone, Utc};
use salesync_core::Error;
use salesync_core::ports::salesforce::{SalesforceApi, TaskWrite};
use salesync_http::testing::{self, chain, json, streamed as body_of};
use salesync_salesforce::{RetryConfig, SalesforceClient};

const ATTEMPTS: u32 = 3;

/// A server answering every data call with `respond()`; the token endpoint works.
struct Hostile(testing::Hostile);

impl Hostile {
    async fn start(respond: impl Fn() -> Response<Body> + Send + Sync + 'static) -> Hostile {
        let token = |base: &str| {
            serde_json::json!({
                "access_token": "00Dxx!tok", "instance_url": base, "id": "https://login/id/00D/005",
                "token_type": "Bearer", "issued_at": "1700000000000", "signature": "x"
            })
            .to_string()
        };
        Hostile(testing::Hostile::start(Method::POST, "/services/oauth2/token", token, respond).await.unwrap())
    }

    fn client(&self, timeout: Duration) -> SalesforceClient {
        SalesforceClient::builder()
            .login_url(self.0.base())
            .client_id("id")
            .client_secret("secret")
            .retry(RetryConfig {
                max_attempts: ATTEMPTS,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
            })
            .timeout(timeout)
            .max_body_bytes(1024 * 1024)
            .build()
            .unwrap()
    }

    fn hits(&self) -> usize {
        self.0.hits()
    }
}

fn html(status: StatusCode) -> Response<Body> {
    testing::html(
        status,
        format!(
            "<!DOCTYPE html><html><head><title>{status}</title></head><body><h1>{status}</h1><p>upstream connect error</p></body></html>"
        ),
    )
}

async fn tasks(c: &SalesforceClient) -> salesync_core::Result<usize> {
    let since = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    c.tasks_modified_since(since, None).await.map(|p| p.items.len())
}

fn task() -> TaskWrite {
    TaskWrite {
        external_id: "act-1".into(),
        who_id: None,
        what_id: None,
        owner_id: None,
        subject: "Email: Hi".into(),
        status: "Completed".into(),
        priority: "Normal".into(),
        activity_date: None,
        description: None,
        task_subtype: Some("Email".into()),
        task_type: None,
        call_duration_secs: None,
        call_disposition: None,
        custom_fields: Vec::new(),
    }
}

fn protocol_detail(e: &Error) -> &str {
    match e {
        Error::Protocol { detail, .. } => detail,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn truncated_query_page_is_a_protocol_error_and_not_retried() {
    let h = Hostile::start(|| json(StatusCode::OK, r#"{"totalSize":2,"done":true,"records":[{"attributes":{"#)).await;
    let e = tasks(&h.client(Duration::from_secs(5))).await.unwrap_err();
    assert!(protocol_detail(&e).contains("query"), "{e}");
    assert!(!e.is_retryable());
    assert_eq!(h.hits(), 1);
}

#[tokio::test]
async fn a_200_without_done_and_records_is_not_an_empty_last_page() {
    for body in ["{}", "[]", r#"{"records":[]}"#, r#"[{"message":"x","errorCode":"UNKNOWN_EXCEPTION"}]"#, "null"] {
        let h = Hostile::start(move || json(StatusCode::OK, body)).await;
        let e = tasks(&h.client(Duration::from_secs(5))).await.unwrap_err();
        assert!(protocol_detail(&e).contains("query"), "{body}: {e}");
    }
}

#[tokio::test]
async fn wrong_record_types_are_protocol_errors_naming_the_field() {
    let h = Hostile::start(|| {
        json(
            StatusCode::OK,
            r#"{"totalSize":1,"done":true,"records":[{"Id":"00T5g00000XyZ12EAF","CreatedDate":17,"SystemModstamp":"2026-01-01T00:00:00.000+0000","IsDeleted":false}]}"#,
        )
    })
    .await;
    let e = tasks(&h.client(Duration::from_secs(5))).await.unwrap_err();
    assert!(protocol_detail(&e).contains("CreatedDate"), "{e}");
}

#[tokio::test]
async fn proxy_html_503_is_retried_then_unavailable() {
    let h = Hostile::start(|| html(StatusCode::SERVICE_UNAVAILABLE)).await;
    let e = tasks(&h.client(Duration::from_secs(5))).await.unwrap_err();
    match &e {
        Error::Unavailable { code, message, .. } => {
            assert_eq!(code, "HTTP 503");
            assert!(message.contains("503 Service Unavailable"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_retryable());
    assert_eq!(h.hits(), ATTEMPTS as usize);
}

#[tokio::test]
async fn html_page_with_200_is_a_protocol_error_naming_html() {
    let h = Hostile::start(|| html(StatusCode::OK)).await;
    let e = tasks(&h.client(Duration::from_secs(5))).await.unwrap_err();
    assert!(protocol_detail(&e).contains("HTML"), "{e}");
    assert_eq!(h.hits(), 1);
    let e = h.client(Duration::from_secs(5)).upsert_tasks(&[task()]).await.unwrap_err();
    assert!(protocol_detail(&e).contains("HTML"), "{e}");
    assert_eq!(h.hits(), 2);
}

#[tokio::test]
async fn gzip_lie_is_a_transport_error() {
    let h = Hostile::start(|| {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_ENCODING, "gzip")
            .body(Body::from(r#"{"totalSize":0,"done":true,"records":[]}"#))
            .unwrap()
    })
    .await;
    let e = tasks(&h.client(Duration::from_secs(5))).await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(chain(&e).contains("gzip"), "{}", chain(&e));
    assert_eq!(h.hits(), ATTEMPTS as usize, "a broken read is retried a bounded number of times");
}

#[tokio::test]
async fn endless_body_is_cut_at_the_cap() {
    let h = Hostile::start(|| {
        let chunk = Bytes::from(vec![b' '; 64 * 1024]);
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(body_of(futures::stream::repeat(Ok(chunk))))
            .unwrap()
    })
    .await;
    let e = tasks(&h.client(Duration::from_secs(30))).await.unwrap_err();
    assert!(protocol_detail(&e).contains("exceeds 1048576 bytes"), "{e}");
    assert_eq!(h.hits(), 1);
}

#[tokio::test]
async fn slow_drip_is_cut_by_the_timeout() {
    let h = Hostile::start(|| {
        let drip = testing::drip(Duration::from_millis(100));
        Response::builder().header(header::CONTENT_TYPE, "application/json").body(drip).unwrap()
    })
    .await;
    let started = Instant::now();
    let e = tasks(&h.client(Duration::from_millis(400))).await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(chain(&e).contains("timed out"), "{}", chain(&e));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(h.hits(), ATTEMPTS as usize);
}

#[tokio::test]
async fn composite_answers_that_do_not_match_the_records_are_protocol_errors() {
    for body in [
        r#"[{"id":"00T5g00000XyZ12EAF","success":true,"errors":[]"#,
        r#"[{"id":"00T5g00000XyZ12EAF"}]"#,
        r#"[{"id":"00T5g00000XyZ12EAF","success":true,"errors":[]},{"id":"00T5g00000XyZ13EAF","success":true,"errors":[]}]"#,
        r#"{"success":true}"#,
    ] {
        let h = Hostile::start(move || json(StatusCode::OK, body)).await;
        let e = h.client(Duration::from_secs(5)).upsert_tasks(&[task()]).await.unwrap_err();
        assert!(protocol_detail(&e).contains("sObject Collections"), "{body}: {e}");
        assert_eq!(h.hits(), 1, "{body}");
    }
}
