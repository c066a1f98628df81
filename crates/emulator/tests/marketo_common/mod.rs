//! Helpers shared by the Marketo emulator integration tests (included with `mod`).
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use chrono::{TimeZone, Utc};
use salesync_emulator::clock::Clock;
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator};
use serde_json::{Map, Value};

pub fn manual_clock() -> Clock {
    Clock::manual(Utc.with_ymd_and_hms(2026, 6, 15, 15, 0, 0).single().unwrap())
}

pub fn config() -> MarketoConfig {
    MarketoConfig { clock: manual_clock(), ..MarketoConfig::default() }
}

pub struct Harness {
    pub emu: MarketoEmulator,
    pub http: reqwest::Client,
    pub token: String,
}

impl Harness {
    pub async fn start(cfg: MarketoConfig) -> Harness {
        let emu = MarketoEmulator::start(cfg).await.unwrap();
        let http = reqwest::Client::new();
        let token = fetch_token(&emu, &http, emu.client_id(), emu.client_secret()).await;
        Harness { emu, http, token }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.emu.base_url(), path)
    }

    pub async fn get(&self, path_and_query: &str) -> Value {
        json_of(self.http.get(self.url(path_and_query)).bearer_auth(&self.token)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        json_of(self.http.post(self.url(path)).bearer_auth(&self.token).json(&body)).await
    }

    pub async fn post_empty(&self, path: &str) -> Value {
        json_of(self.http.post(self.url(path)).bearer_auth(&self.token)).await
    }
}

pub fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// Sends a request and reads its answer as JSON.
pub async fn json_of(rb: reqwest::RequestBuilder) -> Value {
    rb.send().await.unwrap().json().await.unwrap()
}

pub async fn fetch_token(emu: &MarketoEmulator, http: &reqwest::Client, id: &str, secret: &str) -> String {
    let url = format!("{}/identity/oauth/token", emu.base_url());
    let query = [("grant_type", "client_credentials"), ("client_id", id), ("client_secret", secret)];
    let v = json_of(http.get(url).query(&query)).await;
    v["access_token"].as_str().unwrap().to_string()
}

pub fn error_code(v: &Value) -> Option<&str> {
    v["errors"][0]["code"].as_str()
}

pub fn assert_ok(v: &Value) {
    assert_eq!(v["success"], true, "expected success: {v}");
    assert!(v.get("errors").is_none(), "successful envelope carries no errors: {v}");
}

/// A multipart/form-data body: text fields, then the `file` part.
pub fn multipart_body(boundary: &str, fields: &[(&str, &str)], filename: &str, file: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
        );
    }
    out.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: text/csv\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(file);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

impl Harness {
    /// POSTs `body` with `content_type`; the HTTP status and the body as JSON (Null when not JSON).
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Uploads a bulk lead import file (`format` etc. in the query string of `path`).
    pub async fn upload(&self, path: &str, fields: &[(&str, &str)], file: &[u8]) -> Value {
        let body = multipart_body("salesyncBoundary42", fields, "leads.csv", file);
        let (status, v) = self.post_raw(path, "multipart/form-data; boundary=salesyncBoundary42", body).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// GETs a non-JSON body: HTTP status, content type, text.
    pub async fn get_text(&self, path: &str) -> (u16, String, String) {
        let r = self.http.get(self.url(path)).bearer_auth(&self.token).send().await.unwrap();
        let status = r.status().as_u16();
        let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        (status, ct, r.text().await.unwrap())
    }

    /// POSTs a form body (`application/x-www-form-urlencoded`).
    pub async fn post_form(&self, path: &str, form: &str) -> Value {
        self.post_raw(path, "application/x-www-form-urlencoded", form.as_bytes().to_vec()).await.1
    }

    /// Every activity of `type_ids` for `lead_ids` since 2000 (following pages).
    pub async fn activities_of(&self, type_ids: &str, lead_ids: &str) -> Vec<Value> {
        let t = self.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=2000-01-01T00:00:00Z").await;
        let mut token = t["nextPageToken"].as_str().unwrap().to_string();
        let mut out = Vec::new();
        loop {
            let page = self
                .get(&format!(
                    "/rest/v1/activities.json?nextPageToken={token}&activityTypeIds={type_ids}&leadIds={lead_ids}"
                ))
                .await;
            assert_eq!(page["success"], true, "{page}");
            out.extend(page["result"].as_array().cloned().unwrap_or_default());
            if page["moreResult"] != true {
                return out;
            }
            token = page["nextPageToken"].as_str().unwrap().to_string();
        }
    }
}
