//! A small HTTP harness for the Salesforce emulator tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use chrono::{TimeZone, Utc};
use reqwest::Method;
use salesync_emulator::clock::Clock;
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator};
use serde_json::{Map, Value};

pub fn clock() -> Clock {
    Clock::manual(Utc.with_ymd_and_hms(2026, 6, 15, 15, 0, 0).single().unwrap())
}

pub struct H {
    pub emu: SalesforceEmulator,
    pub http: reqwest::Client,
    pub token: String,
}

/// A raw answer: status, headers and body text.
pub struct Raw {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        if self.text.is_empty() { Value::Null } else { serde_json::from_str(&self.text).unwrap() }
    }
}

impl H {
    pub async fn start(cfg: SalesforceConfig) -> H {
        let emu = SalesforceEmulator::start(cfg).await.unwrap();
        let http = reqwest::Client::new();
        let token = token(&emu, &http).await;
        H { emu, http, token }
    }

    pub async fn default() -> H {
        H::start(SalesforceConfig { clock: clock(), daily_api_limit: 10_000_000, ..Default::default() }).await
    }

    pub fn api(&self, p: &str) -> String {
        if p.starts_with("/services") {
            format!("{}{p}", self.emu.base_url())
        } else {
            format!("{}/services/data/v60.0{p}", self.emu.base_url())
        }
    }

    pub async fn raw(&self, method: Method, p: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Raw {
        let mut rb = self.http.request(method, self.api(p)).bearer_auth(&self.token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        Raw { status, headers, text }
    }

    pub async fn call(&self, method: Method, p: &str, body: Option<Value>) -> (u16, Value) {
        let r = self.raw(method, p, body, &[]).await;
        (r.status, r.json())
    }

    pub async fn get(&self, p: &str) -> (u16, Value) {
        self.call(Method::GET, p, None).await
    }

    /// `query`, first page only.
    pub async fn query(&self, q: &str) -> (u16, Value) {
        self.get(&format!("/query?q={}", urlencode(q))).await
    }

    /// `query` that must succeed, first page only.
    pub async fn query_ok(&self, q: &str) -> Value {
        let (s, b) = self.query(q).await;
        assert_eq!(s, 200, "{q}: {b}");
        b
    }

    /// `DELETE` answered 204, after which `GET` answers 404 NOT_FOUND.
    pub async fn delete_gone(&self, p: &str) {
        let (s, _) = self.call(Method::DELETE, p, None).await;
        assert_eq!(s, 204);
        let (s, v) = self.get(p).await;
        assert_eq!((s, code(&v)), (404, "NOT_FOUND"));
    }

    /// `query` (or `queryAll`), first page only.
    pub async fn query_page(&self, q: &str, all: bool, batch: Option<usize>) -> (u16, Value) {
        let path = format!("/{}?q={}", if all { "queryAll" } else { "query" }, urlencode(q));
        let opt = batch.map(|b| format!("batchSize={b}"));
        let headers: Vec<(&str, &str)> = opt.as_deref().map(|o| vec![("Sforce-Query-Options", o)]).unwrap_or_default();
        let r = self.raw(Method::GET, &path, None, &headers).await;
        (r.status, r.json())
    }

    /// Every record of a query, following `nextRecordsUrl`; also the number of pages.
    pub async fn query_all_pages(&self, q: &str, all: bool, batch: Option<usize>) -> (Value, Vec<Value>, usize) {
        let (s, mut page) = self.query_page(q, all, batch).await;
        assert_eq!(s, 200, "{q}: {page}");
        let first = page.clone();
        let mut records = Vec::new();
        let mut pages = 1;
        loop {
            records.extend(page["records"].as_array().unwrap().iter().cloned());
            if page["done"] == true {
                assert!(page.get("nextRecordsUrl").is_none());
                break;
            }
            let next = page["nextRecordsUrl"].as_str().unwrap().to_string();
            let (s, p) = self.get(&next).await;
            assert_eq!(s, 200, "{next}: {p}");
            page = p;
            pages += 1;
        }
        (first, records, pages)
    }
}

/// A client-credentials access token (the grant must succeed).
pub async fn token(emu: &SalesforceEmulator, http: &reqwest::Client) -> String {
    let r = http
        .post(format!("{}/services/oauth2/token", emu.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", emu.client_id()),
            ("client_secret", emu.client_secret()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string()
}

/// Parses CSV with double-quoted fields (doubled quotes inside), `delim` and LF or CRLF.
pub fn parse_csv(text: &str, delim: char) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
        } else if c == '"' {
            quoted = true;
        } else if c == delim {
            row.push(std::mem::take(&mut field));
        } else if c == '\r' {
        } else if c == '\n' {
            row.push(std::mem::take(&mut field));
            rows.push(std::mem::take(&mut row));
        } else {
            field.push(c);
        }
    }
    assert!(field.is_empty() && row.is_empty(), "CSV must end with a line ending");
    rows
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

pub fn code(b: &Value) -> &str {
    b[0]["errorCode"].as_str().unwrap_or("")
}

/// `('a','b')` for an IN list.
pub fn in_list<S: AsRef<str>>(ids: &[S]) -> String {
    let quoted: Vec<String> = ids.iter().map(|i| format!("'{}'", i.as_ref())).collect();
    format!("({})", quoted.join(","))
}
