//! A host service that embeds salesync next to its own HTTP API.
//!
//! One process runs both API emulators (seeded with 2,000 people), a `SyncEngine` and a
//! `Dispatcher` on an SQLite mirror, each in its own task, and an axum server with the host's
//! routes:
//!
//! - `GET /people/{id}`: one mirrored person by Marketo id (404 when not in the mirror);
//! - `GET /people?email=…`: every mirrored person with that email (duplicates included);
//! - `POST /activities` with `{"person": 1002, "subject": "Hi", "sender": "rep@example.com"}`:
//!   records a sales email; the dispatcher delivers it to Marketo and Salesforce.
//!
//! The routes only read the mirror (through `engine.mirror()`) and record through the dispatcher:
//! the host never writes people. Ctrl-C cancels one token that stops the engine, the dispatcher
//! and (gracefully) the HTTP server.
//!
//! Run it and try it:
//!
//! ```text
//! cargo run --example embed_in_axum                # serves on 127.0.0.1:3000 (SALESYNC_EXAMPLE_ADDR)
//! curl -s 'http://127.0.0.1:3000/people?email=grace.obrien2@wayne.example.com'
//! curl -s http://127.0.0.1:3000/people/1003
//! curl -s -XPOST http://127.0.0.1:3000/activities -H 'content-type: application/json' \
//!      -d '{"person":1003,"subject":"Hi","sender":"rep@example.com"}'
//! ```
//!
//! Or check it in one go: `cargo run --example embed_in_axum -- --smoke` (or set
//! `SALESYNC_EXAMPLE_SMOKE=1`) serves on a free port, waits for the initial sync, calls the three
//! routes on itself, waits for the delivery, prints what it saw and exits (about 20 s, most of it
//! the initial bulk sync).
#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use salesync::core::activity::{SalesActivity, SalesActivityKind};
use salesync::core::ports::store::Store;
use salesync::delivery::{DeliverySettings, Dispatcher};
use salesync::engine::{EngineSettings, MirrorReader, SyncEngine, SyncEvent};
use salesync::marketo::MarketoClient;
use salesync::salesforce::SalesforceClient;
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoLimits};
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the handlers share: a read-only view of the mirror and the outbound dispatcher.
#[derive(Clone)]
struct AppState {
    mirror: MirrorReader,
    dispatcher: Dispatcher,
}

/// An error as a JSON body with a status.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn person(State(app): State<AppState>, Path(id): Path<i64>) -> Result<axum::Json<Value>, ApiError> {
    match app.mirror.get(id).await.map_err(internal)? {
        Some(p) => Ok(axum::Json(serde_json::to_value(p).map_err(internal)?)),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("person {id} is not in the mirror"))),
    }
}

#[derive(Deserialize)]
struct EmailQuery {
    email: String,
}

async fn people_by_email(
    State(app): State<AppState>,
    Query(q): Query<EmailQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let people = app.mirror.by_email(&q.email).await.map_err(internal)?;
    Ok(axum::Json(serde_json::to_value(people).map_err(internal)?))
}

#[derive(Deserialize)]
struct NewEmail {
    person: i64,
    subject: String,
    sender: String,
}

async fn record_email(
    State(app): State<AppState>,
    axum::Json(body): axum::Json<NewEmail>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let activity = SalesActivity {
        actor_email: Some(body.sender),
        subject: Some(body.subject),
        ..SalesActivity::new("", body.person, SalesActivityKind::SendSalesEmail, Utc::now())
    };
    match app.dispatcher.record_activity(activity).await {
        Ok(r) => Ok((StatusCode::ACCEPTED, axum::Json(json!({ "id": r.id, "outbox_ids": r.outbox_ids })))),
        Err(e @ salesync::core::Error::NotFound { .. }) => Err(ApiError(StatusCode::NOT_FOUND, e.to_string())),
        Err(e @ (salesync::core::Error::InvalidInput { .. } | salesync::core::Error::InvalidRecord(_))) => {
            Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
        }
        Err(e) => Err(internal(e)),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let smoke = std::env::args().any(|a| a == "--smoke") || std::env::var_os("SALESYNC_EXAMPLE_SMOKE").is_some();

    // The two systems salesync talks to (here: emulators on loopback).
    let world = salesync_emulator::seed::generate(2_000, 7);
    let marketo_emu =
        MarketoEmulator::start(MarketoConfig { limits: MarketoLimits::unlimited(), ..MarketoConfig::default() })
            .await?;
    let salesforce_emu = SalesforceEmulator::start(SalesforceConfig::default()).await?;
    marketo_emu.seed_world(&world);
    salesforce_emu.seed_world(&world);

    // salesync: connectors, the host's database, the engine and the dispatcher.
    let marketo = Arc::new(
        MarketoClient::builder()
            .base_url(marketo_emu.base_url())
            .client_id(marketo_emu.client_id())
            .client_secret(marketo_emu.client_secret())
            .build()?,
    );
    let salesforce = Arc::new(
        SalesforceClient::builder()
            .login_url(salesforce_emu.base_url())
            .client_id(salesforce_emu.client_id())
            .client_secret(salesforce_emu.client_secret())
            .build()?,
    );
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> =
        salesync::store::open(&format!("sqlite://{}", dir.path().join("mirror.db").display())).await?;
    let engine = SyncEngine::builder()
        .marketo(marketo.clone())
        .salesforce(salesforce.clone())
        .store(store.clone())
        .settings(EngineSettings {
            instance_id: marketo_emu.base_url(),
            poll_interval: Duration::from_secs(5),
            export_poll: Duration::from_millis(200),
            export_poll_max: Duration::from_secs(1),
            ..EngineSettings::default()
        })
        .build()?;
    let dispatcher = Dispatcher::builder()
        .marketo(marketo)
        .salesforce(salesforce)
        .store(store)
        .settings(DeliverySettings::default())
        .build()?;

    // Background tasks, all stopped by one token.
    let cancel = CancellationToken::new();
    let mut events = engine.subscribe();
    let engine_task = tokio::spawn({
        let (engine, cancel) = (engine.clone(), cancel.clone());
        async move { engine.run(cancel).await }
    });
    let dispatcher_task = tokio::spawn({
        let (dispatcher, cancel) = (dispatcher.clone(), cancel.clone());
        async move { dispatcher.run(cancel).await }
    });
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("shutting down");
            }
            cancel.cancel();
        }
    });

    // The host's own HTTP API.
    let app = Router::new()
        .route("/people/{id}", get(person))
        .route("/people", get(people_by_email))
        .route("/activities", post(record_email))
        .with_state(AppState { mirror: engine.mirror(), dispatcher: dispatcher.clone() });
    let addr: SocketAddr = if smoke {
        ([127, 0, 0, 1], 0).into()
    } else {
        std::env::var("SALESYNC_EXAMPLE_ADDR").ok().as_deref().unwrap_or("127.0.0.1:3000").parse()?
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let server =
        tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(cancel.clone().cancelled_owned()).into_future());
    println!(
        "host API on http://{addr} (Marketo emulator {}, Salesforce emulator {})",
        marketo_emu.base_url(),
        salesforce_emu.base_url()
    );

    // Report the first pass when it lands.
    let started = Instant::now();
    let first_pass = loop {
        match events.recv().await {
            Ok(SyncEvent::Finished { report }) => break report,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(e) => return Err(e.into()),
        }
    };
    println!(
        "initial sync: {} people mirrored ({} unqualified skipped) in {:.1} s",
        first_pass.inserted,
        first_pass.skipped_unqualified,
        started.elapsed().as_secs_f64()
    );

    if smoke {
        let outcome = smoke_test(addr, &engine, &dispatcher).await;
        cancel.cancel();
        if let Err(e) = &outcome {
            eprintln!("smoke test failed: {e}");
        }
        outcome?;
    } else {
        println!("serving until Ctrl-C");
    }

    // Graceful shutdown: the token stops all three tasks.
    cancel.cancelled().await;
    server.await??;
    engine_task.await??;
    dispatcher_task.await?;
    marketo_emu.shutdown().await;
    salesforce_emu.shutdown().await;
    println!("stopped cleanly");
    Ok(())
}

/// Calls the three routes over HTTP and waits for the recorded email to be delivered.
async fn smoke_test(addr: SocketAddr, engine: &SyncEngine, dispatcher: &Dispatcher) -> Result<(), BoxError> {
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");

    // A mirrored person with a duplicated email, to show both lookups.
    let mut page = engine.mirror().list(salesync::engine::PageRequest::first(500)).await?;
    let mut picked = None;
    'search: loop {
        for p in &page.people {
            if let Some(email) = &p.email
                && engine.mirror().by_email(email).await?.len() > 1
            {
                picked = Some((p.marketo_id, email.clone()));
                break 'search;
            }
        }
        match page.next {
            Some(next) => page = engine.mirror().list(next).await?,
            None => break,
        }
    }
    let (id, email) = picked.ok_or("no duplicated email in the mirror")?;

    let r = http.get(format!("{base}/people")).query(&[("email", &email)]).send().await?;
    let status = r.status();
    let people: Vec<Value> = r.json().await?;
    let ids: Vec<i64> = people.iter().filter_map(|p| p["marketo_id"].as_i64()).collect();
    println!("GET /people?email={email} -> {status}, {} people: {ids:?}", people.len());

    let r = http.get(format!("{base}/people/{id}")).send().await?;
    let status = r.status();
    let p: Value = r.json().await?;
    println!(
        "GET /people/{id} -> {status}: {} {} ({}, {}), owner {}",
        p["first_name"].as_str().unwrap_or(""),
        p["last_name"].as_str().unwrap_or(""),
        p["company"].as_str().unwrap_or(""),
        p["salesforce_type"].as_str().unwrap_or("?"),
        p["owner_id"].as_str().unwrap_or("?"),
    );

    let r = http.get(format!("{base}/people/1")).send().await?;
    println!("GET /people/1 -> {}", r.status());

    let r = http
        .post(format!("{base}/activities"))
        .json(&json!({ "person": id, "subject": "Hi from the host", "sender": "rep@example.com" }))
        .send()
        .await?;
    let status = r.status();
    let recorded: Value = r.json().await?;
    println!("POST /activities -> {status}: {recorded}");
    if !status.is_success() {
        return Err(format!("POST /activities answered {status}").into());
    }

    // The dispatcher task delivers it in the background.
    let outbox_ids: Vec<i64> =
        recorded["outbox_ids"].as_array().map(|a| a.iter().filter_map(Value::as_i64).collect()).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut done = Vec::new();
        for oid in &outbox_ids {
            if let Some(item) = dispatcher.item(*oid).await?
                && item.state == salesync::core::ports::store::OutboxState::Delivered
            {
                done.push(format!("{:?} {}", item.target, item.result.unwrap_or_default()));
            }
        }
        if done.len() == outbox_ids.len() {
            println!("delivered: {}", done.join(", "));
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {} of {} outbox items delivered in 20 s", done.len(), outbox_ids.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
