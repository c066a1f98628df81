//! Helpers shared by the Marketo emulator integration tests (included with `mod`).
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use chrono::{TimeZone, Utc};
use salesync_emulator::clock::Clock;
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator};
use serde_json::Value;

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
        self.http.get(self.url(path_and_query)).bearer_auth(&self.token).send().await.unwrap().json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.http.post(self.url(path)).bearer_auth(&self.token).json(&body).send().await.unwrap().json().await.unwrap()
    }

    pub async fn post_empty(&self, path: &str) -> Value {
        self.http.post(self.url(path)).bearer_auth(&self.token).send().await.unwrap().json().await.unwrap()
    }
}

pub async fn fetch_token(emu: &MarketoEmulator, http: &reqwest::Client, id: &str, secret: &str) -> String {
    let v: Value = http
        .get(format!("{}/identity/oauth/token", emu.base_url()))
        .query(&[("grant_type", "client_credentials"), ("client_id", id), ("client_secret", secret)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

pub fn error_code(v: &Value) -> Option<&str> {
    v["errors"][0]["code"].as_str()
}

pub fn assert_ok(v: &Value) {
    assert_eq!(v["success"], true, "expected success: {v}");
    assert!(v.get("errors").is_none(), "successful envelope carries no errors: {v}");
}
