//! The client secret and the access token never show up in the connector's logs, errors or Debug.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use salesync_core::ports::marketo::MarketoApi;
use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use salesync_emulator::marketo::{MarketoConfig, MarketoFault};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_stay_out_of_logs_errors_and_debug() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("salesync_marketo=trace"))
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let secret = "the-client-secret-4711";
    let emu = common::start(MarketoConfig { client_secret: secret.into(), ..MarketoConfig::default() }).await;
    emu.set_identity_faults(FaultPlan::new(
        vec![FaultRule::new(Trigger::Nth(1), FaultAction::Error(MarketoFault::code("502")))],
        0,
    ));
    emu.set_faults(FaultPlan::new(
        vec![
            FaultRule::new(Trigger::Nth(1), FaultAction::Error(MarketoFault::code("602"))),
            FaultRule::new(Trigger::Nth(2), FaultAction::DropConnection),
        ],
        0,
    ));
    let c = common::client(&emu);
    c.activity_types().await.unwrap();
    // Read the live token straight from identity to look for it.
    let url = format!(
        "{}/identity/oauth/token?grant_type=client_credentials&client_id={}&client_secret={secret}",
        emu.base_url(),
        emu.client_id()
    );
    let body: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_string();
    let bad = common::builder(&emu).client_secret("another-wrong-secret-99").build().unwrap();
    let e = bad.lead_schema().await.unwrap_err();

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("re-authenticating"), "the test exercised the logged paths: {logs}");
    let everything = format!("{logs}\n{e}\n{e:?}\n{c:?}\n{bad:?}");
    for s in [secret, token.as_str(), "another-wrong-secret-99"] {
        assert!(!everything.contains(s), "{s} leaked");
    }
    emu.shutdown().await;
}
