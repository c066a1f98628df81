//! Bad input on the Salesforce REST surface over real HTTP: over-long URIs (414), bodies that
//! are not JSON (415), malformed JSON (JSON_PARSER_ERROR). Never a 500 or a dropped connection.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod salesforce_common;

use reqwest::Method;
use salesforce_common::{H, Raw, code, obj, urlencode};
use serde_json::json;

async fn send(h: &H, method: Method, path: &str, content_type: Option<&str>, body: &[u8]) -> Raw {
    let mut rb = h.http.request(method, h.api(path)).bearer_auth(&h.token).body(body.to_vec());
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    let r = rb.send().await.expect("an answer, not a dropped connection");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Raw { status, headers, text }
}

/// A query whose request URI (path and query string) is exactly `len` bytes long.
fn query_path_of_len(len: usize) -> String {
    let head = "/services/data/v60.0/query?q=";
    let soql = urlencode("SELECT Id FROM Lead WHERE LastName != '");
    let tail = urlencode("'");
    let pad = len - head.len() - soql.len() - tail.len();
    format!("{head}{soql}{}{tail}", "x".repeat(pad))
}

#[tokio::test]
async fn request_uris_past_16384_bytes_get_414() {
    let h = H::default().await;
    let at_limit = query_path_of_len(16_384);
    assert_eq!(at_limit.len(), 16_384);
    let (s, b) = h.get(&at_limit).await;
    assert_eq!(s, 200, "{b}");

    let before = h.emu.api_usage();
    let over = query_path_of_len(16_385);
    let r = h.raw(Method::GET, &over, None, &[]).await;
    assert_eq!(r.status, 414, "{}", r.text);
    assert_eq!(code(&r.json()), "URI_TOO_LONG");
    assert!(r.json()[0]["message"].as_str().unwrap().contains("16384"));
    assert_eq!(h.emu.api_usage(), before, "a refused URI is not an API call");

    // Far past the limit (beyond what HTTP client libraries build, so sent by hand) the answer is
    // still a 414, not a dropped connection.
    let huge = query_path_of_len(80_000);
    let addr = h.emu.base_url().trim_start_matches("http://").to_string();
    let token = h.token.clone();
    let status_line = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {huge} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).lines().next().unwrap_or("").to_string()
    })
    .await
    .unwrap();
    assert!(status_line.starts_with("HTTP/1.1 414"), "{status_line}");
}

#[tokio::test]
async fn bodies_that_are_not_json_get_415() {
    let h = H::default().await;
    let body = br#"{"Name": "Acme"}"#;
    for ct in ["text/plain", "application/x-www-form-urlencoded", "application/xml", "text/csv"] {
        let r = send(&h, Method::POST, "/sobjects/Account", Some(ct), body).await;
        assert_eq!(r.status, 415, "{ct}: {}", r.text);
        assert_eq!(code(&r.json()), "UNSUPPORTED_MEDIA_TYPE", "{ct}");
        assert!(r.json()[0]["message"].as_str().unwrap().contains(ct), "{}", r.text);
    }
    assert!(h.emu.records("Account").is_empty());
    for ct in ["application/json", "application/json; charset=UTF-8", "APPLICATION/JSON"] {
        let r = send(&h, Method::POST, "/sobjects/Account", Some(ct), body).await;
        assert_eq!(r.status, 201, "{ct}: {}", r.text);
    }
    // A PATCH and a composite request are checked the same way.
    let id = h.emu.insert("Account", obj(json!({"Name": "Other"}))).unwrap();
    let r = send(&h, Method::PATCH, &format!("/sobjects/Account/{id}"), Some("text/plain"), body).await;
    assert_eq!(r.status, 415);
    let r = send(&h, Method::POST, "/composite", Some("text/plain"), br#"{"compositeRequest": []}"#).await;
    assert_eq!(r.status, 415);
    // Bulk API 2.0 CSV uploads keep their own content type.
    let (s, job) =
        h.call(Method::POST, "/jobs/ingest", Some(json!({"object": "Account", "operation": "insert"}))).await;
    assert_eq!(s, 200, "{job}");
    let r = send(
        &h,
        Method::PUT,
        &format!("/jobs/ingest/{}/batches", job["id"].as_str().unwrap()),
        Some("text/csv"),
        b"Name\nCsv Co\n",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn malformed_json_is_a_json_parser_error() {
    let h = H::default().await;
    let id = h.emu.insert("Account", obj(json!({"Name": "Acme"}))).unwrap();
    let patch = format!("/sobjects/Account/{id}");
    let cases: Vec<(Method, &str)> = vec![
        (Method::POST, "/sobjects/Account"),
        (Method::PATCH, &patch),
        (Method::POST, "/composite/sobjects"),
        (Method::POST, "/composite"),
        (Method::POST, "/composite/batch"),
        (Method::POST, "/composite/tree/Account"),
        (Method::POST, "/jobs/query"),
        (Method::POST, "/jobs/ingest"),
    ];
    for (m, path) in cases {
        for bad in [&b"{\"Name\": "[..], b"{not json}", b"\xff\xfe", b"[1,"] {
            let r = send(&h, m.clone(), path, Some("application/json"), bad).await;
            assert_eq!(r.status, 400, "{m} {path} {bad:?}: {}", r.text);
            assert_eq!(code(&r.json()), "JSON_PARSER_ERROR", "{m} {path}: {}", r.text);
        }
    }
    // The account is untouched.
    assert_eq!(h.emu.get("Account", &id).unwrap()["Name"], "Acme");
}
