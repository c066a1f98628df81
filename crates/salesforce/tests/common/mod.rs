//! Shared setup: an in-process Salesforce emulator and a client pointed at it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use salesync_emulator::salesforce::{SalesforceCall, SalesforceConfig, SalesforceEmulator};
use salesync_salesforce::{RetryConfig, SalesforceClient, SalesforceClientBuilder};
use serde_json::{Map, Value, json};

/// Fast retries for tests.
pub fn fast_retry() -> RetryConfig {
    RetryConfig { max_attempts: 4, base_delay: Duration::from_millis(2), max_delay: Duration::from_millis(20) }
}

pub async fn emulator() -> SalesforceEmulator {
    SalesforceEmulator::start(SalesforceConfig::default()).await.expect("emulator starts")
}

pub async fn emulator_with(config: SalesforceConfig) -> SalesforceEmulator {
    SalesforceEmulator::start(config).await.expect("emulator starts")
}

pub fn builder(emu: &SalesforceEmulator) -> SalesforceClientBuilder {
    SalesforceClient::builder()
        .login_url(emu.base_url())
        .client_id(emu.client_id())
        .client_secret(emu.client_secret())
        .retry(fast_retry())
        .query_batch_size(200)
}

pub fn client(emu: &SalesforceEmulator) -> SalesforceClient {
    builder(emu).build().expect("client builds")
}

pub async fn setup() -> (SalesforceEmulator, SalesforceClient) {
    let emu = emulator().await;
    let c = client(&emu);
    (emu, c)
}

pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

pub fn lead(emu: &SalesforceEmulator, email: &str) -> String {
    emu.insert(
        "Lead",
        obj(json!({"LastName": "Lovelace", "FirstName": "Ada", "Company": "Analytical", "Status": "Open - Not Contacted", "Email": email})),
    )
    .expect("lead inserted")
}

pub fn account(emu: &SalesforceEmulator, name: &str) -> String {
    emu.insert("Account", obj(json!({"Name": name}))).expect("account inserted")
}

pub fn contact(emu: &SalesforceEmulator, email: &str, account_id: Option<&str>) -> String {
    let mut m = obj(json!({"LastName": "Hopper", "FirstName": "Grace", "Email": email}));
    if let Some(a) = account_id {
        m.insert("AccountId".into(), json!(a));
    }
    emu.insert("Contact", m).expect("contact inserted")
}

/// Calls whose path contains `fragment` (and, when given, have this method).
pub fn calls(emu: &SalesforceEmulator, method: Option<&str>, fragment: &str) -> Vec<SalesforceCall> {
    emu.call_log()
        .into_iter()
        .filter(|c| c.path.contains(fragment) && method.is_none_or(|m| c.method.eq_ignore_ascii_case(m)))
        .collect()
}

pub fn token_calls(emu: &SalesforceEmulator) -> usize {
    calls(emu, Some("POST"), "/services/oauth2/token").len()
}
