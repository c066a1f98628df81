//! Hostile responses: a tiny axum server on loopback serves a good token and bad data, and the
//! real connector must turn each into a typed error, without panicking, hanging, or reading an
//! unbounded body into memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Method, Response, StatusCode, header};
use futures::StreamExt;
use salesync_core::Error;
use salesync_core::ports::marketo::MarketoApi;
use salesync_http::testing::{self, chain, json, streamed as body_of};
use salesync_marketo::{MarketoClient, RetryConfig};

const ATTEMPTS: u32 = 3;

/// A server answering every data call with `respond()`; the token endpoint works.
struct Hostile(testing::Hostile);

impl Hostile {
    async fn start(respond: impl Fn() -> Response<Body> + Send + Sync + 'static) -> Hostile {
        let token =
            |_: &str| r#"{"access_token":"tok","token_type":"bearer","expires_in":3599,"scope":"api@x"}"#.into();
        Hostile(testing::Hostile::start(Method::GET, "/identity/oauth/token", token, respond).await.unwrap())
    }

    fn client(&self, timeout: Duration) -> MarketoClient {
        MarketoClient::builder()
            .base_url(self.0.base())
            .client_id("id")
            .client_secret("secret")
            .retry(RetryConfig {
                max_attempts: ATTEMPTS,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
            })
            .timeout(timeout)
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
            "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center><hr><center>nginx</center></body></html>"
        ),
    )
}

/// One byte every 100 ms, forever.
fn drip() -> Body {
    testing::drip(Duration::from_millis(100))
}

async fn leads(
    c: &MarketoClient,
) -> salesync_core::Result<salesync_core::ports::Page<salesync_core::mapping::LeadRecord>> {
    c.leads_by_filter("id", &["1".to_string()], &["id".to_string()], None).await
}

fn protocol_detail(e: &Error) -> &str {
    match e {
        Error::Protocol { detail, .. } => detail,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn truncated_json_page_is_asked_again_then_a_protocol_error() {
    let h =
        Hostile::start(|| json(StatusCode::OK, r#"{"requestId":"a#b","success":true,"result":[{"id":1,"email":"a@"#))
            .await;
    let e = leads(&h.client(Duration::from_secs(5))).await.unwrap_err();
    assert!(protocol_detail(&e).contains("malformed JSON"), "{e}");
    assert!(!e.is_retryable(), "after the retry budget the page fails for good");
    assert_eq!(
        h.hits(),
        ATTEMPTS as usize,
        "a read whose answer was cut short is asked again, a bounded number of times"
    );
}

#[tokio::test]
async fn wrong_types_are_protocol_errors_or_record_errors() {
    // `result` must be an array.
    let h = Hostile::start(|| json(StatusCode::OK, r#"{"requestId":"a#b","success":true,"result":{"id":1}}"#)).await;
    let e = leads(&h.client(Duration::from_secs(5))).await.unwrap_err();
    assert!(protocol_detail(&e).contains("result"), "{e}");
    // `success` must be a boolean.
    let h = Hostile::start(|| json(StatusCode::OK, r#"{"success":"yes","result":[]}"#)).await;
    let e = leads(&h.client(Duration::from_secs(5))).await.unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    // A bad field is one bad record, not a failed page.
    let h = Hostile::start(|| json(StatusCode::OK, r#"{"success":true,"result":[{"id":"x"},{"id":2,"firstName":7}]}"#))
        .await;
    let page = leads(&h.client(Duration::from_secs(5))).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let e = page.items[1].0.as_ref().unwrap_err();
    assert_eq!((e.record_id, e.field.as_str()), (Some(2), "firstName"));
}

#[tokio::test]
async fn proxy_html_502_is_retried_then_unavailable() {
    let h = Hostile::start(|| html(StatusCode::BAD_GATEWAY)).await;
    let e = leads(&h.client(Duration::from_secs(5))).await.unwrap_err();
    match &e {
        Error::Unavailable { code, message, .. } => {
            assert_eq!(code, "502");
            assert!(message.contains("502 Bad Gateway"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_retryable(), "the caller may try again later");
    assert_eq!(h.hits(), ATTEMPTS as usize);
}

#[tokio::test]
async fn html_page_with_200_is_a_protocol_error_naming_html() {
    let h = Hostile::start(|| html(StatusCode::OK)).await;
    let e = leads(&h.client(Duration::from_secs(5))).await.unwrap_err();
    assert!(protocol_detail(&e).contains("HTML"), "{e}");
    assert!(!e.is_retryable());
    assert_eq!(h.hits(), 1);
}

#[tokio::test]
async fn gzip_lie_is_a_transport_error() {
    let h = Hostile::start(|| {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_ENCODING, "gzip")
            .body(Body::from(r#"{"success":true,"result":[]}"#))
            .unwrap()
    })
    .await;
    let e = leads(&h.client(Duration::from_secs(5))).await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(chain(&e).contains("decod"), "{}", chain(&e));
    assert_eq!(h.hits(), ATTEMPTS as usize, "a broken read is retried a bounded number of times");
}

#[tokio::test]
async fn declared_enormous_body_is_refused_unread() {
    let h = Hostile::start(|| {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, (1u64 << 40).to_string())
            .body(drip())
            .unwrap()
    })
    .await;
    let started = Instant::now();
    let e = leads(&h.client(Duration::from_secs(30))).await.unwrap_err();
    assert!(protocol_detail(&e).contains("exceeds"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(h.hits(), 1);
}

#[tokio::test]
async fn endless_body_is_cut_at_the_cap() {
    let h = Hostile::start(|| {
        let chunk = Bytes::from(vec![b' '; 256 * 1024]);
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(body_of(futures::stream::repeat(Ok(chunk))))
            .unwrap()
    })
    .await;
    let e = leads(&h.client(Duration::from_secs(60))).await.unwrap_err();
    assert!(protocol_detail(&e).contains("exceeds 67108864 bytes"), "{e}");
    assert_eq!(h.hits(), 1, "an oversized answer is not fetched again");
}

#[tokio::test]
async fn slow_drip_is_cut_by_the_timeout() {
    let h =
        Hostile::start(|| Response::builder().header(header::CONTENT_TYPE, "application/json").body(drip()).unwrap())
            .await;
    let started = Instant::now();
    let e = leads(&h.client(Duration::from_millis(400))).await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(chain(&e).contains("timed out") || chain(&e).contains("timeout"), "{}", chain(&e));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(h.hits(), ATTEMPTS as usize);
}

#[tokio::test]
async fn export_file_html_200_is_a_protocol_error() {
    let h = Hostile::start(|| html(StatusCode::OK)).await;
    let e = h.client(Duration::from_secs(5)).lead_export_file("ce45a7a1-f19d-4ce2-882c-a3c795940a1f", 0).await;
    let e = e.err().expect("an HTML page is not the export file");
    assert!(protocol_detail(&e).contains("HTML"), "{e}");
    assert_eq!(h.hits(), 1);
}

#[tokio::test]
async fn export_file_proxy_502_is_retried_then_unavailable() {
    let h = Hostile::start(|| html(StatusCode::BAD_GATEWAY)).await;
    let e = h.client(Duration::from_secs(5)).lead_export_file("ce45a7a1", 0).await.err().unwrap();
    assert!(matches!(&e, Error::Unavailable { code, .. } if code == "502"), "{e:?}");
    assert_eq!(h.hits(), ATTEMPTS as usize);
}

/// Collects a file stream: the bytes before the error, and the error.
async fn drain(c: &MarketoClient) -> (Vec<u8>, Option<Error>) {
    let mut s = c.lead_export_file("ce45a7a1", 0).await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = s.next().await {
        match chunk {
            Ok(b) => got.extend(b),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

#[tokio::test]
async fn stalled_export_download_is_cut_by_the_read_timeout_and_resumed() {
    let h = Hostile::start(|| {
        let head = futures::stream::once(async { Ok(Bytes::from_static(b"id,email\n1,a@example.com\n")) });
        Response::builder()
            .header(header::CONTENT_TYPE, "text/csv")
            .body(body_of(head.chain(futures::stream::pending())))
            .unwrap()
    })
    .await;
    let started = Instant::now();
    let (got, e) = drain(&h.client(Duration::from_millis(300))).await;
    let e = e.expect("the download breaks off");
    assert_eq!(got, b"id,email\n1,a@example.com\n", "bytes are delivered once, resumed downloads skip them");
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(e.to_string().contains("broke off at byte 25"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(h.hits(), ATTEMPTS as usize, "the stalled download is resumed, a bounded number of times");
}

#[tokio::test]
async fn export_file_gzip_lie_is_a_stream_error() {
    let h = Hostile::start(|| {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/csv")
            .header(header::CONTENT_ENCODING, "gzip")
            .body(Body::from("id,email\n1,a@example.com\n"))
            .unwrap()
    })
    .await;
    let (got, e) = drain(&h.client(Duration::from_secs(5))).await;
    assert!(got.is_empty());
    let e = e.expect("undecodable file");
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(chain(&e).contains("decod"), "{}", chain(&e));
}

#[tokio::test]
async fn an_incomplete_activity_is_skipped_and_the_rest_of_its_page_read() {
    // The middle record has no leadId, the fourth no activityDate: neither can be applied to
    // anyone, and failing the page would fail it again on every retry, stalling the stream.
    let server = Hostile::start(|| {
        json(
            StatusCode::OK,
            r#"{"requestId":"a#1","success":true,"nextPageToken":"NEXT","moreResult":false,"result":[
              {"id":1,"marketoGUID":"1","leadId":11,"activityDate":"2026-01-02T03:04:05Z","activityTypeId":13,"fields":[{"id":1,"name":"email","newValue":"a@x.com","oldValue":null}]},
              {"id":2,"marketoGUID":"2","activityDate":"2026-01-02T03:04:06Z","activityTypeId":13},
              {"id":3,"marketoGUID":"3","leadId":"13","activityDate":"2026-01-02T03:04:07Z","activityTypeId":"13"},
              {"id":4,"marketoGUID":"4","leadId":14,"activityDate":20260102,"activityTypeId":13}
            ]}"#,
        )
    })
    .await;
    let page = server.client(Duration::from_secs(5)).lead_changes("TOKEN", &["email".to_string()]).await.unwrap();
    let leads: Vec<i64> = page.items.iter().map(|a| a.lead_id).collect();
    assert_eq!(leads, vec![11, 13], "the complete records, in order");
    assert_eq!(page.items[0].changed_fields[0].name, "email");
    assert_eq!(page.next_token.as_deref(), Some("NEXT"), "the stream moves past the bad records");
    assert_eq!(server.hits(), 1);
}
