#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Secrets never leave salesync: client secrets, the Salesforce refresh token (and the ones it
//! rotates to), every access token the emulators issued and the password inside a PostgreSQL
//! store URL never appear in logs (TRACE, every target: salesync, reqwest, hyper, h2, sqlx…),
//! in any error's `Display` or `Debug`, in the `Debug` of configs, clients, builders, settings,
//! engines, dispatchers, stores, reports and events, or in panic messages.
//!
//! Each test runs a full pass against both emulators (initial sync, incremental sync after a
//! Marketo token expired and the Salesforce session was revoked, delivery of activities, an
//! unsubscribe and a reminder) plus the error paths (bad credentials, unreachable services and
//! stores, malformed URLs), with distinctive secrets, then greps everything it captured.
//!
//! Capture: log records are written from every thread — the SQLite driver's worker threads and
//! the blocking pool included — so one subscriber is installed for this whole test binary (a
//! thread-local `set_default` would miss those threads). It cannot leak into other tests: this
//! file is its own process, and its tests run one at a time ([`SERIAL`]), each starting from
//! an empty buffer.

use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex, Once};
use std::time::Duration;

use chrono::Utc;
use salesync::core::activity::{AdminSettings, ReminderPriority, SalesActivity, SalesActivityKind};
use salesync::core::ports::marketo::MarketoApi;
use salesync::core::ports::salesforce::SalesforceApi;
use salesync::core::ports::store::{OutboxState, Store};
use salesync::delivery::{DeliverySettings, Dispatcher, NewReminder};
use salesync::engine::{EngineSettings, InitialMode, SyncEngine};
use salesync::marketo::MarketoClient;
use salesync::salesforce::SalesforceClient;
use salesync_emulator::clock::Clock;
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoLimits};
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator};
use salesync_testkit::{completed_call, postgres_url};
use serde_json::{Map, Value};

const MKTO_SECRET: &str = "mkto-S3CRET-7f3a9c1e55d04b2a";
const SF_SECRET: &str = "sfdc-S3CRET-0b8e6d2f94a1c7e3";
const SF_REFRESH: &str = "sfdc-REFRESH-5c2e8a1f0d9b4e67";
const PG_PASSWORD: &str = "S3cretPgPass";
const WRONG_MKTO_SECRET: &str = "mkto-WRONG-2d6f1a9e8c3b";
const WRONG_SF_SECRET: &str = "sfdc-WRONG-4e1b7c3a9d6f";
const WRONG_SF_REFRESH: &str = "sfdc-WRONG-REFRESH-8a7c6e5d";

/// Everything every thread logged, and panic messages.
static CAPTURED: LazyLock<Arc<Mutex<Vec<u8>>>> = LazyLock::new(|| Arc::new(Mutex::new(Vec::new())));
/// The tests of this file run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the TRACE subscriber (and the `log` bridge, for reqwest) and a panic hook that
/// records panic messages, once per process; then empties the buffer.
fn start_capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| Sink)
            .try_init()
            .expect("the only subscriber of this test binary");
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = writeln!(Sink, "PANIC: {info}");
            previous(info);
        }));
    });
    CAPTURED.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

fn captured() -> String {
    String::from_utf8_lossy(&CAPTURED.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// What must never show up, by name.
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn new() -> Self {
        Secrets(
            [
                ("Marketo client secret", MKTO_SECRET),
                ("Salesforce client secret", SF_SECRET),
                ("Salesforce refresh token", SF_REFRESH),
                ("PostgreSQL password", PG_PASSWORD),
                ("wrong Marketo client secret", WRONG_MKTO_SECRET),
                ("wrong Salesforce client secret", WRONG_SF_SECRET),
                ("wrong Salesforce refresh token", WRONG_SF_REFRESH),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        )
    }

    /// Adds every token the emulators handed out.
    fn add_issued(&mut self, mkto: &MarketoEmulator, sf: &SalesforceEmulator) -> (usize, usize) {
        let (m, s) = (mkto.issued_tokens(), sf.issued_tokens());
        let counts = (m.len(), s.len());
        self.0.extend(m.into_iter().map(|t| ("Marketo access token".to_string(), t)));
        self.0.extend(s.into_iter().map(|t| ("Salesforce access/refresh token".to_string(), t)));
        counts
    }

    /// Fails naming the secret and the place, with the surrounding text.
    fn assert_absent(&self, place: &str, text: &str) {
        for (name, value) in &self.0 {
            // Also the form-encoded spelling (Salesforce tokens contain '!').
            let encoded = value.replace('!', "%21");
            for needle in [value.as_str(), encoded.as_str()] {
                if let Some(at) = text.find(needle) {
                    let from = text[..at].char_indices().rev().nth(300).map_or(0, |(i, _)| i);
                    let to = (at + needle.len() + 300).min(text.len());
                    let to = (to..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
                    panic!("{name} leaked into {place}:\n…{}…", &text[from..to]);
                }
            }
        }
    }
}

/// Errors' and values' text, as collected along the way.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn debug(&mut self, place: &str, v: &impl std::fmt::Debug) {
        self.0.push((format!("Debug of {place}"), format!("{v:?}")));
        self.0.push((format!("pretty Debug of {place}"), format!("{v:#?}")));
    }

    fn error(&mut self, place: &str, e: &(impl std::fmt::Display + std::fmt::Debug)) {
        self.0.push((format!("Display of {place}"), e.to_string()));
        self.debug(place, e);
    }

    fn err<T: std::fmt::Debug, E: std::fmt::Display + std::fmt::Debug>(&mut self, place: &str, r: Result<T, E>) {
        match r {
            Ok(v) => panic!("{place} should have failed, got {v:?}"),
            Err(e) => self.error(place, &e),
        }
    }
}

struct Emulators {
    mkto: MarketoEmulator,
    sf: SalesforceEmulator,
}

async fn emulators() -> Emulators {
    let mkto = MarketoEmulator::start(MarketoConfig {
        client_secret: MKTO_SECRET.into(),
        limits: MarketoLimits::unlimited(),
        // A manual clock lets the token expire on the server while the client still trusts it.
        clock: Clock::manual(Utc::now()),
        ..MarketoConfig::default()
    })
    .await
    .unwrap();
    let sf = SalesforceEmulator::start(SalesforceConfig {
        client_secret: SF_SECRET.into(),
        refresh_token: Some(SF_REFRESH.into()),
        rotate_refresh_token: true,
        ..SalesforceConfig::default()
    })
    .await
    .unwrap();
    let world = salesync_emulator::seed::generate(40, 7);
    mkto.seed_world(&world);
    sf.seed_world(&world);
    Emulators { mkto, sf }
}

fn marketo_builder(base_url: &str, secret: &str) -> salesync::marketo::MarketoClientBuilder {
    MarketoClient::builder().base_url(base_url).client_id("salesync-emulator-client").client_secret(secret).retry(
        salesync::marketo::RetryConfig {
            max_attempts: 2,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(10),
        },
    )
}

fn salesforce_builder(
    login_url: &str,
    secret: &str,
    refresh: Option<&str>,
) -> salesync::salesforce::SalesforceClientBuilder {
    let b = SalesforceClient::builder()
        .login_url(login_url)
        .client_id("salesync-emulator-client")
        .client_secret(secret)
        .retry(salesync::salesforce::RetryConfig {
            max_attempts: 2,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(10),
        });
    match refresh {
        Some(r) => b.refresh_token(r),
        None => b,
    }
}

fn activity(marketo_id: i64, kind: SalesActivityKind, n: usize) -> SalesActivity {
    SalesActivity {
        subject: Some(format!("Follow-up {n}")),
        link: None,
        campaign: None,
        call: (kind == SalesActivityKind::SalesCall).then(|| completed_call(90)),
        bounce_details: None,
        ..salesync_testkit::activity(format!("secrets-{n}"), marketo_id, kind)
    }
}

/// The full pass on `store`, collecting every value and error on the way.
async fn full_pass(emu: &Emulators, store: Arc<dyn Store>, seen: &mut Seen) {
    let mkto_builder = marketo_builder(&emu.mkto.base_url(), MKTO_SECRET);
    seen.debug("MarketoClientBuilder", &mkto_builder);
    let mkto = mkto_builder.build().unwrap();
    let sf_builder = salesforce_builder(&emu.sf.base_url(), SF_SECRET, Some(SF_REFRESH));
    seen.debug("SalesforceClientBuilder", &sf_builder);
    let sf = sf_builder.build().unwrap();
    let (mk_port, sf_port): (Arc<dyn MarketoApi>, Arc<dyn SalesforceApi>) =
        (Arc::new(mkto.clone()), Arc::new(sf.clone()));

    store.put_settings(AdminSettings { reminder_task_sync: true, ..AdminSettings::default() }).await.unwrap();
    let settings = EngineSettings {
        instance_id: emu.mkto.addr().to_string(),
        initial_mode: InitialMode::Rest,
        ..EngineSettings::default()
    };
    seen.debug("EngineSettings", &settings);
    let builder = SyncEngine::builder().marketo(mk_port.clone()).salesforce(sf_port.clone()).store(store.clone());
    seen.debug("SyncEngineBuilder", &builder);
    let engine = builder.settings(settings).build().unwrap();
    let mut engine_events = engine.subscribe();
    let delivery = DeliverySettings {
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ..DeliverySettings::default()
    };
    seen.debug("DeliverySettings", &delivery);
    let dispatcher = Dispatcher::builder()
        .marketo(mk_port.clone())
        .salesforce(sf_port.clone())
        .store(store.clone())
        .settings(delivery)
        .instance_id(emu.mkto.addr().to_string())
        .build()
        .unwrap();
    let mut delivery_events = dispatcher.subscribe();

    // Initial sync.
    let report = engine.sync_once().await.unwrap();
    assert!(report.inserted > 0, "{report:?}");
    seen.debug("initial SyncReport", &report);

    // Activities, an unsubscribe and a reminder, delivered.
    let people = store.list_people(None, 10).await.unwrap();
    assert!(people.len() >= 3, "{people:?}");
    let kinds = [SalesActivityKind::SendSalesEmail, SalesActivityKind::SalesCall, SalesActivityKind::OpenSalesEmail];
    for (n, (p, kind)) in people.iter().zip(kinds).enumerate() {
        seen.debug("Recorded", &dispatcher.record_activity(activity(p.marketo_id, kind, n)).await.unwrap());
    }
    seen.debug("Recorded unsubscribe", &dispatcher.record_unsubscribe(people[0].marketo_id).await.unwrap());
    let reminder = dispatcher
        .create_reminder(NewReminder {
            id: None,
            marketo_id: people[1].marketo_id,
            subject: "Call back about pricing".into(),
            priority: ReminderPriority::High,
            due_date: None,
            details: Some("asked for a quote".into()),
        })
        .await
        .unwrap();
    let report = dispatcher.deliver_once().await.unwrap();
    assert!(report.marketo.delivered >= 3 && report.salesforce.delivered >= 3, "{report:?}");
    seen.debug("DeliveryReport", &report);

    // The Marketo token expires on the server while the client still trusts it (→ 602, a new
    // token), and the Salesforce session is revoked (→ INVALID_SESSION_ID, a rotated refresh).
    let issued_before = (emu.mkto.issued_tokens().len(), emu.sf.issued_tokens().len());
    emu.mkto.clock().advance(chrono::Duration::hours(2));
    emu.sf.expire_sessions();
    let mut change = Map::new();
    change.insert("title".into(), Value::String("Chief Secret Keeper".into()));
    assert!(emu.mkto.update_lead(people[2].marketo_id, change));
    let report = engine.sync_once().await.unwrap();
    assert!(report.updated >= 1, "{report:?}");
    seen.debug("incremental SyncReport", &report);
    seen.debug(
        "Recorded",
        &dispatcher.record_activity(activity(people[2].marketo_id, SalesActivityKind::SalesCall, 9)).await.unwrap(),
    );
    seen.debug("Recorded", &dispatcher.complete_reminder(&reminder.id).await.unwrap());
    let report = dispatcher.deliver_once().await.unwrap();
    assert!(report.marketo.delivered >= 1 && report.salesforce.delivered >= 1, "{report:?}");
    seen.debug("DeliveryReport", &report);
    let issued_after = (emu.mkto.issued_tokens().len(), emu.sf.issued_tokens().len());
    assert!(issued_after.0 > issued_before.0, "Marketo issued no new token after expiry: {issued_after:?}");
    assert!(
        issued_after.1 > issued_before.1 + 1,
        "Salesforce: no new session and rotated refresh token: {issued_after:?}"
    );
    let log = emu.mkto.call_log();
    assert!(log.iter().any(|c| c.outcome.as_deref() == Some("602")), "the expired token was never used");

    // Errors of one pass with bad credentials, through the engine and the dispatcher.
    let bad_mk: Arc<dyn MarketoApi> =
        Arc::new(marketo_builder(&emu.mkto.base_url(), WRONG_MKTO_SECRET).build().unwrap());
    let bad_sf: Arc<dyn SalesforceApi> =
        Arc::new(salesforce_builder(&emu.sf.base_url(), WRONG_SF_SECRET, Some(WRONG_SF_REFRESH)).build().unwrap());
    emu.mkto.update_lead(people[0].marketo_id, {
        let mut m = Map::new();
        m.insert("title".into(), Value::String("Changed again".into()));
        m
    });
    let bad_engine = SyncEngine::builder()
        .marketo(bad_mk.clone())
        .salesforce(bad_sf.clone())
        .store(store.clone())
        .settings(EngineSettings { instance_id: emu.mkto.addr().to_string(), ..EngineSettings::default() })
        .build()
        .unwrap();
    seen.err("engine pass with a wrong Marketo secret", bad_engine.sync_once().await);
    let bad_dispatcher = Dispatcher::builder()
        .marketo(bad_mk)
        .salesforce(bad_sf)
        .store(store.clone())
        .settings(DeliverySettings {
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(2),
            max_attempts: 2,
            ..DeliverySettings::default()
        })
        .build()
        .unwrap();
    bad_dispatcher.record_activity(activity(people[1].marketo_id, SalesActivityKind::SalesCall, 20)).await.unwrap();
    for _ in 0..3 {
        let report = bad_dispatcher.deliver_once().await.unwrap();
        seen.debug("DeliveryReport with wrong secrets", &report);
        seen.0.push(("DeliveryReport errors".into(), report.errors.join("\n")));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for state in [OutboxState::Pending, OutboxState::Parked, OutboxState::Delivered, OutboxState::Skipped] {
        for item in store.outbox_items(state, 100).await.unwrap() {
            seen.debug("OutboxItem", &item);
        }
    }

    seen.debug("MarketoClient", &mkto);
    seen.debug("SalesforceClient", &sf);
    seen.debug("SyncEngine", &engine);
    seen.debug("Dispatcher", &dispatcher);
    seen.debug("store", &store);
    while let Ok(e) = engine_events.try_recv() {
        seen.debug("SyncEvent", &e);
    }
    while let Ok(e) = delivery_events.try_recv() {
        seen.debug("DeliveryEvent", &e);
    }
}

/// Connector error paths: wrong secrets and refresh tokens, unreachable services, bad URLs.
async fn connector_errors(emu: &Emulators, seen: &mut Seen) {
    let wrong = marketo_builder(&emu.mkto.base_url(), WRONG_MKTO_SECRET).build().unwrap();
    seen.err("Marketo call with a wrong client secret", wrong.lead_schema().await);
    // The identity URL carries the secret in its query: a transport error must not show it.
    let unreachable = marketo_builder("http://127.0.0.1:9", MKTO_SECRET).build().unwrap();
    seen.err("Marketo call to an unreachable instance", unreachable.lead_schema().await);
    seen.debug("unreachable MarketoClient", &unreachable);
    let with_credentials = marketo_builder(&format!("https://user:{MKTO_SECRET}@x.mktorest.com"), MKTO_SECRET);
    seen.debug("MarketoClientBuilder with credentials in the URL", &with_credentials);
    seen.err("Marketo builder with credentials in the URL", with_credentials.build());
    seen.err(
        "Marketo builder with plain http to another host",
        marketo_builder(&format!("http://x.mktorest.example/?secret={MKTO_SECRET}"), MKTO_SECRET).build(),
    );

    let sf = &emu.sf.base_url();
    let wrong = salesforce_builder(sf, WRONG_SF_SECRET, None).build().unwrap();
    seen.err("Salesforce call with a wrong client secret", wrong.task_type_values().await);
    let wrong = salesforce_builder(sf, SF_SECRET, Some(WRONG_SF_REFRESH)).build().unwrap();
    seen.err("Salesforce call with a wrong refresh token", wrong.task_type_values().await);
    let unreachable = salesforce_builder("http://127.0.0.1:9", SF_SECRET, Some(SF_REFRESH)).build().unwrap();
    seen.err("Salesforce call to an unreachable org", unreachable.task_type_values().await);
    seen.debug("unreachable SalesforceClient", &unreachable);
    let with_credentials =
        salesforce_builder(&format!("https://u:{SF_SECRET}@acme.my.salesforce.com/?r={SF_REFRESH}"), SF_SECRET, None);
    seen.debug("SalesforceClientBuilder with credentials in the URL", &with_credentials);
    seen.err("Salesforce builder with credentials in the URL", with_credentials.build());
}

/// Store error paths: unreachable server, unknown database, malformed URLs.
async fn store_errors(emu: &Emulators, seen: &mut Seen) {
    let not_postgres = emu.sf.addr();
    let urls = [
        format!("postgres://postgres:{PG_PASSWORD}@{not_postgres}/test"),
        format!("postgres://postgres:{PG_PASSWORD}@127.0.0.1:5432/salesync_no_such_database"),
        format!("postgres://postgres:{PG_PASSWORD}@127.0.0.1:notaport/test"),
        format!("postgresql://{not_postgres}/test?user=postgres&password={PG_PASSWORD}"),
        format!("mysql://root:{PG_PASSWORD}@127.0.0.1/test"),
        "sqlite:///salesync-no-such-dir/nested/mirror.db".to_string(),
    ];
    for (n, url) in urls.iter().enumerate() {
        seen.err(&format!("opening store URL #{n}"), salesync::store::open(url).await.map(|_| ()));
        if let Err(e) = salesync::store::check_url(url) {
            seen.error("store::check_url", &e);
        }
    }
    seen.err(
        "opening a PostgreSQL schema with a bad name",
        salesync::store::PostgresStore::open_in_schema(&urls[0], "bad name; drop").await.map(|_| ()),
    );
}

/// The test's PostgreSQL URL with [`PG_PASSWORD`] in it (trust auth ignores it).
fn postgres_url_with_password() -> String {
    let base = postgres_url();
    let (scheme, rest) = base.split_once("://").unwrap();
    let (userinfo, host) = match rest.split_once('@') {
        Some((u, h)) => (u.split(':').next().unwrap_or("postgres").to_string(), h.to_string()),
        None => ("postgres".to_string(), rest.to_string()),
    };
    format!("{scheme}://{userinfo}:{PG_PASSWORD}@{host}")
}

/// Greps everything captured for every secret and token; also proves the capture worked.
fn check(emu: &Emulators, seen: &Seen) {
    let mut secrets = Secrets::new();
    let (m, s) = secrets.add_issued(&emu.mkto, &emu.sf);
    assert!(m >= 2 && s >= 3, "too few tokens issued to mean anything: {m} Marketo, {s} Salesforce");
    let log = captured();
    // The capture saw salesync, the HTTP client stack and the SQL driver at TRACE.
    for target in ["salesync_marketo", "salesync_salesforce", "salesync_engine", "sqlx::query", "hyper"] {
        assert!(log.contains(target), "nothing logged by {target}: the capture is not working");
    }
    assert!(log.contains("TRACE"), "no TRACE records captured");
    assert!(!log.contains("PANIC:"), "a panic happened:\n{log}");
    secrets.assert_absent("the TRACE logs", &log);
    for (place, text) in &seen.0 {
        secrets.assert_absent(place, text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaks_with_sqlite() {
    let _serial = SERIAL.lock().await;
    start_capture();
    let emu = emulators().await;
    let mut seen = Seen::default();
    let dir = tempfile::tempdir().unwrap();
    let store = salesync::store::open(&format!("sqlite://{}", dir.path().join("mirror.db").display())).await.unwrap();
    full_pass(&emu, store, &mut seen).await;
    connector_errors(&emu, &mut seen).await;
    store_errors(&emu, &mut seen).await;
    check(&emu, &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaks_with_postgres_and_a_password_in_the_url() {
    let _serial = SERIAL.lock().await;
    start_capture();
    let emu = emulators().await;
    let mut seen = Seen::default();
    let url = postgres_url_with_password();
    let schema = format!("secrets_{}", uuid::Uuid::new_v4().simple());
    let pg = salesync::store::PostgresStore::open_in_schema(&url, &schema)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is needed at {}: {e}", postgres_url()));
    seen.debug("PostgresStore", &pg);
    let pool = pg.pool().clone();
    let store: Arc<dyn Store> = Arc::new(pg);
    // A server that refuses connections: the driver retries until its acquire timeout (10 s),
    // so this runs beside the full pass.
    let refused = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let r = salesync::store::open(&format!("postgres://postgres:{PG_PASSWORD}@127.0.0.1:9/test")).await;
        (r.map(|_| ()), started.elapsed())
    });
    let outcome = {
        let store = store.clone();
        let emu = Emulators { mkto: emu.mkto.clone(), sf: emu.sf.clone() };
        tokio::spawn(async move {
            let mut seen = Seen::default();
            full_pass(&emu, store, &mut seen).await;
            seen
        })
        .await
    };
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&pool).await.unwrap();
    seen.0.extend(outcome.unwrap().0);
    let (refused, took) = refused.await.unwrap();
    seen.err("opening a PostgreSQL store on a port nobody listens on", refused);
    assert!(took < Duration::from_secs(30), "an unreachable store took {took:?} to fail");
    store_errors(&emu, &mut seen).await;
    check(&emu, &seen);
    // And the URL's password really was in play.
    assert!(url.contains(PG_PASSWORD));
}

/// The emulators accept their fixed test credentials from loopback only, unless a test binds
/// another address on purpose.
#[tokio::test]
async fn emulators_listen_on_loopback_by_default() {
    let _serial = SERIAL.lock().await;
    assert!(MarketoConfig::default().bind.ip().is_loopback());
    assert!(SalesforceConfig::default().bind.ip().is_loopback());
    let mkto = MarketoEmulator::start(MarketoConfig::default()).await.unwrap();
    let sf = SalesforceEmulator::start(SalesforceConfig::default()).await.unwrap();
    assert!(mkto.addr().ip().is_loopback() && sf.addr().ip().is_loopback());
    assert!(mkto.base_url().starts_with("http://127.0.0.1:") && sf.base_url().starts_with("http://127.0.0.1:"));
    mkto.shutdown().await;
    sf.shutdown().await;
}
