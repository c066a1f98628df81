//! The soak run (issue #9): salesync under churn, faults and crashes for N minutes, then a check
//! that nothing was lost or duplicated.
//!
//! ```text
//! cargo run --release --features postgres --example soak -- --minutes 10 [--seed 42] [--people 3000] [--store sqlite|postgres]
//! cargo run --release --features postgres --example soak -- --smoke          # about a minute, to iterate
//! ```
//!
//! One process runs both API emulators (Marketo with its **real** limits: 100 calls per 20 s,
//! 10 concurrent, 50,000 a day), seeded with a world of `--people` people, and a mirror in SQLite
//! (a temp dir) or PostgreSQL (`--postgres-url`, a fresh schema dropped afterwards). A
//! `SyncEngine` and a `Dispatcher` run in their own tasks, sharing one connector per service.
//! For `--minutes`:
//!
//! - **mutations** in the emulators: synced field changes, owner loss and gain, deletes, merges,
//!   new leads (with their Salesforce lead) and lead conversions in Salesforce;
//! - **outbound recording** through a separate recording `Dispatcher` (as a host's request
//!   handlers would): all 8 activity kinds, unsubscribes, reminder create / edit / complete /
//!   reopen / delete;
//! - **fault windows**: now and then both emulators get a random fault plan for a while (Marketo
//!   502/602/604/606/611/615, Salesforce 5xx, UNABLE_TO_LOCK_ROW, QUERY_TIMEOUT, expired
//!   sessions, dropped connections, apply-then-drop on writes, delays past the client timeout,
//!   malformed bodies);
//! - **kills**: the engine and dispatcher tasks are aborted mid-work (`JoinHandle::abort`, no
//!   graceful stop), sometimes cancelled gracefully instead, and restarted from the store with a
//!   new worker id (their leases expire; the outbox re-delivers).
//!
//! Then faults stop, the system is left to converge (bounded by `--converge-secs`), and the
//! checks run: the mirror equals the oracle computed from the Marketo emulator's data; every
//! recorded activity is in Marketo exactly once (by `salesyncActivityId`) and, when logged to
//! Salesforce, exactly one Task carries its id; every delivered unsubscribe set the opt-out flag;
//! every reminder's Task matches the last change made to it (status, priority, due date, details,
//! deleted); Marketo's limits never turned a call away (606/615/607) and no 20 s window held more
//! than 100 calls. Items that were not delivered by design (a lead deleted in Marketo, a person
//! without a Salesforce record) are counted apart, with their reasons. Exit code 1 when a check
//! fails.
//!
//! Logs: `RUST_LOG=salesync_delivery=info,salesync_engine=info` (default: errors only).
#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use clap::{Parser, ValueEnum};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use salesync::core::activity::{
    AdminSettings, CallDetails, CallStatus, CampaignRef, ReminderPriority, ReminderStatus, SalesActivity,
    SalesActivityKind as K, TemplateRef,
};
use salesync::core::ports::store::{OutboxItem, OutboxPayload, OutboxState, Store};
use salesync::delivery::{DeliveryEvent, DeliverySettings, Dispatcher, NewReminder, ReminderChanges};
use salesync::engine::{EngineSettings, MirrorChange, RetrySettings, SyncEngine, SyncEvent};
use salesync::marketo::MarketoClient;
use salesync::salesforce::SalesforceClient;
use salesync_emulator::faults::{FaultAction, FaultRule, Trigger};
use salesync_emulator::marketo::{MarketoConfig, MarketoFault, MarketoLimits};
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceFault};
use salesync_testkit::faults::{SALESFORCE_DATA, clear_faults, marketo_code, salesforce_error, set_faults};
use salesync_testkit::{
    TestStore, World, all_people, check_rate_limits, marketo_activity_counts, obj, tasks_by_external_id,
};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const INSTANCE: &str = "soak-emulated-marketo";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Sqlite,
    Postgres,
}

/// The soak run of issue #9.
#[derive(Debug, Parser)]
#[command(about = "salesync soak run: churn, faults and kills against the emulators, then exactly-once checks")]
struct Args {
    /// Minutes of churn before convergence (default 10, or 1 with --smoke).
    #[arg(long)]
    minutes: Option<f64>,
    /// Seed of the world, the mutations, the recordings, the faults and the kills.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// People in the seeded world (default 3000, or 800 with --smoke).
    #[arg(long)]
    people: Option<usize>,
    /// Where the mirror lives.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// PostgreSQL URL for --store postgres (a fresh schema is created and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres_url: String,
    /// A short run (about a minute of churn, faster schedules) to iterate.
    #[arg(long)]
    smoke: bool,
    /// Longest wait for convergence after the churn, in seconds.
    #[arg(long, default_value_t = 240)]
    converge_secs: u64,
}

/// How often things happen.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    mutation_every: Duration,
    record_every: Duration,
    calm: (u64, u64),
    faulty: (u64, u64),
    kill_every: (u64, u64),
    progress_every: Duration,
}

impl Schedule {
    fn new(smoke: bool) -> Self {
        if smoke {
            Schedule {
                mutation_every: Duration::from_millis(120),
                record_every: Duration::from_millis(80),
                calm: (4, 8),
                faulty: (6, 10),
                kill_every: (10, 20),
                progress_every: Duration::from_secs(10),
            }
        } else {
            Schedule {
                mutation_every: Duration::from_millis(200),
                record_every: Duration::from_millis(120),
                calm: (10, 25),
                faulty: (15, 30),
                kill_every: (15, 45),
                progress_every: Duration::from_secs(30),
            }
        }
    }
}

/// Named counters.
#[derive(Default)]
struct Counters(Mutex<BTreeMap<String, u64>>);

impl Counters {
    fn bump(&self, key: &str) {
        self.add(key, 1);
    }
    fn add(&self, key: &str, n: u64) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *g.entry(key.to_string()).or_default() += n;
    }
    fn get(&self, key: &str) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(key).copied().unwrap_or(0)
    }
    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn total_with_prefix(&self, prefix: &str) -> u64 {
        self.snapshot().iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
    }
}

/// What the soak asked for, reminder by reminder.
#[derive(Debug, Clone)]
struct ReminderModel {
    marketo_id: i64,
    status: ReminderStatus,
    priority: ReminderPriority,
    due_date: Option<NaiveDate>,
    details: Option<String>,
    deleted: bool,
}

/// Everything recorded, as the host knows it.
#[derive(Default)]
struct Recorded {
    activities: Vec<(String, K, i64)>,
    unsubscribes: Vec<(String, i64)>,
    reminders: BTreeMap<String, ReminderModel>,
}

struct Ctx {
    world: World,
    store: Arc<dyn Store>,
    marketo: Arc<MarketoClient>,
    salesforce: Arc<SalesforceClient>,
    users: Vec<String>,
    counters: Counters,
    recorded: Mutex<Recorded>,
    mirror_inserted: AtomicU64,
    mirror_updated: AtomicU64,
    mirror_removed: AtomicU64,
    smoke: bool,
}

fn secs(rng: &mut SmallRng, (lo, hi): (u64, u64)) -> Duration {
    Duration::from_secs(rng.gen_range(lo..=hi))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<ExitCode, BoxError> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let minutes = args.minutes.unwrap_or(if args.smoke { 1.0 } else { 10.0 });
    let people = args.people.unwrap_or(if args.smoke { 800 } else { 3000 });
    let schedule = Schedule::new(args.smoke);

    // The world, in both emulators.
    let world = World::start(
        people,
        args.seed,
        MarketoConfig { limits: MarketoLimits::default(), ..MarketoConfig::default() },
        SalesforceConfig::default(),
    )
    .await;
    let limits = world.limits.clone();
    let (mkto, sf) = (&world.marketo, &world.salesforce);
    println!(
        "salesync soak: {minutes} min, seed {}, {people} people ({} qualified), store {:?}",
        args.seed,
        world.seed.people.iter().filter(|p| p.has_owner()).count(),
        args.store
    );
    println!(
        "  Marketo emulator {} with real limits ({} calls / {} s, {} concurrent, {} a day); Salesforce emulator {}",
        mkto.base_url(),
        limits.calls_per_window,
        limits.window.as_secs(),
        limits.max_concurrent,
        limits.daily_quota,
        sf.base_url()
    );

    // The store.
    let test_store = match args.store {
        StoreKind::Sqlite => {
            let t = TestStore::sqlite().await;
            println!("  mirror {}", t.url);
            t
        }
        StoreKind::Postgres => {
            let t = TestStore::postgres_at(&args.postgres_url, "salesync_soak").await;
            let schema = t.schema().unwrap_or_default();
            println!("  mirror PostgreSQL {} schema {schema} (dropped at the end)", args.postgres_url);
            t
        }
    };
    let store = test_store.store.clone();
    store.bind_instance(INSTANCE).await?;
    store.put_settings(AdminSettings { reminder_task_sync: true, ..AdminSettings::default() }).await?;

    // One connector per service, shared by every engine and dispatcher (so one rate limiter).
    let marketo = Arc::new(
        world
            .marketo_builder()
            .timeout(Duration::from_secs(10))
            .retry(salesync::marketo::RetryConfig {
                max_attempts: 4,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(5),
            })
            .build()?,
    );
    let salesforce = Arc::new(
        world
            .salesforce_builder()
            .timeout(Duration::from_secs(10))
            .retry(salesync::salesforce::RetryConfig {
                max_attempts: 4,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(3),
            })
            .build()?,
    );
    let users = world.seed.users.iter().map(|u| u.id.clone()).collect();
    let ctx = Arc::new(Ctx {
        world,
        store: store.clone(),
        marketo,
        salesforce,
        users,
        counters: Counters::default(),
        recorded: Mutex::new(Recorded::default()),
        mirror_inserted: AtomicU64::new(0),
        mirror_updated: AtomicU64::new(0),
        mirror_removed: AtomicU64::new(0),
        smoke: args.smoke,
    });

    let outcome = soak(ctx.clone(), minutes, args.seed, schedule, args.converge_secs).await;

    test_store.cleanup().await;
    ctx.world.shutdown().await;
    match outcome {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::FAILURE),
        Err(e) => {
            eprintln!("soak run failed: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The churn, the convergence and the checks; `Ok(true)` when every check passed.
async fn soak(
    ctx: Arc<Ctx>,
    minutes: f64,
    seed: u64,
    schedule: Schedule,
    converge_secs: u64,
) -> Result<bool, BoxError> {
    let started = Instant::now();
    let churn = Duration::from_secs_f64(minutes * 60.0);
    let stop = CancellationToken::new();
    let live: Vec<i64> = ctx.world.seed.people.iter().map(|p| p.marketo_id).collect();
    let mutator = tokio::spawn(mutate(ctx.clone(), live, seed ^ 0x6d75_7461, schedule.mutation_every, stop.clone()));
    let recorder = tokio::spawn(record(ctx.clone(), seed ^ 0x7265_636f, schedule.record_every, stop.clone()));

    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6b69_6c6c);
    let mut workers = Workers::start(&ctx)?;
    let mut next_kill = Instant::now() + secs(&mut rng, schedule.kill_every);
    let mut faults_on = false;
    let mut next_fault_toggle = Instant::now() + secs(&mut rng, schedule.calm);
    let mut next_progress = Instant::now() + schedule.progress_every;
    let end = started + churn;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        workers.supervise(&ctx)?;
        let now = Instant::now();
        if now >= next_fault_toggle {
            if faults_on {
                clear_faults(&ctx.world);
                next_fault_toggle = now + secs(&mut rng, schedule.calm);
            } else {
                arm_faults(&ctx, &mut rng);
                next_fault_toggle = now + secs(&mut rng, schedule.faulty);
            }
            faults_on = !faults_on;
        }
        if now >= next_kill {
            workers = kill_and_restart(&ctx, workers, &mut rng).await?;
            next_kill = Instant::now() + secs(&mut rng, schedule.kill_every);
        }
        if now >= next_progress {
            progress(&ctx, started, faults_on).await;
            next_progress = now + schedule.progress_every;
        }
    }

    // Quiet: no more churn, no more faults; let it converge.
    stop.cancel();
    let _ = mutator.await;
    let _ = recorder.await;
    clear_faults(&ctx.world);
    let churn_took = started.elapsed();
    println!(
        "\nChurn over after {:.0} s; no more faults; converging (at most {converge_secs} s)…",
        churn_took.as_secs_f64()
    );
    let converge_started = Instant::now();
    let deadline = converge_started + Duration::from_secs(converge_secs);
    let mut converged = false;
    let mut quiet_since: Option<Instant> = None;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        workers.supervise(&ctx)?;
        let counts = ctx.store.outbox_counts().await?;
        let mirror_ok = ctx.world.mirror_diff(ctx.store.as_ref()).await.is_empty();
        if counts.pending == 0 && counts.in_flight == 0 && mirror_ok {
            // Stay quiet across a couple of reminder polls before calling it done.
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(6) {
                converged = true;
                break;
            }
        } else {
            quiet_since = None;
        }
    }
    let converge_took = converge_started.elapsed();
    workers.stop_gracefully(&ctx).await;

    report(&ctx, Timing { started, churn_took, converge_took }, converged).await
}

/// The running engine and dispatcher, with their side tasks.
struct Workers {
    cancel: CancellationToken,
    engine: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
    side: Vec<JoinHandle<()>>,
    engine_events: tokio::sync::broadcast::Receiver<SyncEvent>,
    delivery_events: tokio::sync::broadcast::Receiver<DeliveryEvent>,
}

fn build_engine(ctx: &Ctx) -> Result<SyncEngine, BoxError> {
    Ok(SyncEngine::builder()
        .marketo(ctx.marketo.clone())
        .salesforce(ctx.salesforce.clone())
        .store(ctx.store.clone())
        .settings(EngineSettings {
            instance_id: INSTANCE.into(),
            poll_interval: Duration::from_secs(if ctx.smoke { 2 } else { 3 }),
            export_poll: Duration::from_millis(200),
            export_poll_max: Duration::from_secs(2),
            retry: RetrySettings {
                max_attempts: 4,
                base_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(5),
            },
            // One node restarted in place: the new engine takes the killed one's leader lease back
            // at once instead of waiting out its TTL.
            worker_id: "soak-node".into(),
            ..EngineSettings::default()
        })
        .build()?)
}

fn build_dispatcher(ctx: &Ctx) -> Result<Dispatcher, BoxError> {
    Ok(Dispatcher::builder()
        .marketo(ctx.marketo.clone())
        .salesforce(ctx.salesforce.clone())
        .store(ctx.store.clone())
        .settings(DeliverySettings {
            lease: Duration::from_secs(30),
            max_attempts: 1000,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            reminder_poll_interval: Duration::from_secs(2),
            ..DeliverySettings::default()
        })
        .build()?)
}

impl Workers {
    fn start(ctx: &Arc<Ctx>) -> Result<Workers, BoxError> {
        let cancel = CancellationToken::new();
        let mut side = Vec::new();
        let (engine, engine_events, counter) = spawn_engine(ctx, &cancel)?;
        side.push(counter);
        let dispatcher = build_dispatcher(ctx)?;
        let delivery_events = dispatcher.subscribe();
        let mut watch = dispatcher.subscribe();
        let (d, c, ctx2) = (dispatcher.clone(), cancel.clone(), ctx.clone());
        side.push(tokio::spawn(async move {
            // The host's operator: reconnects a target stopped for authentication.
            loop {
                match watch.recv().await {
                    Ok(DeliveryEvent::Reconnect { target, .. }) => {
                        ctx2.counters.bump("reconnects");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        d.reconnected(target);
                    }
                    Ok(DeliveryEvent::QuotaExhausted { .. }) => ctx2.counters.bump("quota pauses"),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        }));
        let dispatcher = tokio::spawn(async move { dispatcher.run(c).await });
        Ok(Workers { cancel, engine, dispatcher, side, engine_events, delivery_events })
    }

    /// Restarts an engine whose run loop ended on its own (e.g. credentials it could not renew).
    fn supervise(&mut self, ctx: &Arc<Ctx>) -> Result<(), BoxError> {
        if self.engine.is_finished() && !self.cancel.is_cancelled() {
            ctx.counters.bump("engine restarts after an error");
            let (engine, events, counter) = spawn_engine(ctx, &self.cancel)?;
            self.engine = engine;
            self.engine_events = events;
            self.side.push(counter);
        }
        Ok(())
    }

    fn abort(self) {
        self.engine.abort();
        self.dispatcher.abort();
        for s in self.side {
            s.abort();
        }
    }

    async fn stop_gracefully(self, ctx: &Ctx) {
        self.cancel.cancel();
        let joined = tokio::time::timeout(Duration::from_secs(30), async {
            let _ = (&mut { self.engine }).await;
            let _ = (&mut { self.dispatcher }).await;
        })
        .await;
        if joined.is_err() {
            ctx.counters.bump("graceful stops that timed out");
        }
        for s in self.side {
            s.abort();
        }
    }
}

type EngineParts = (JoinHandle<()>, tokio::sync::broadcast::Receiver<SyncEvent>, JoinHandle<()>);

fn spawn_engine(ctx: &Arc<Ctx>, cancel: &CancellationToken) -> Result<EngineParts, BoxError> {
    let engine = build_engine(ctx)?;
    let events = engine.subscribe();
    let mut changes = engine.subscribe_changes();
    let mut passes = engine.subscribe();
    let ctx2 = ctx.clone();
    let counter = tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(MirrorChange::Inserted { .. }) => _ = ctx2.mirror_inserted.fetch_add(1, Ordering::Relaxed),
                    Ok(MirrorChange::Updated { .. }) => _ = ctx2.mirror_updated.fetch_add(1, Ordering::Relaxed),
                    Ok(MirrorChange::Removed { .. }) => _ = ctx2.mirror_removed.fetch_add(1, Ordering::Relaxed),
                    Err(RecvError::Lagged(n)) => ctx2.counters.add("mirror change notices lagged", n),
                    Err(RecvError::Closed) => return,
                },
                event = passes.recv() => match event {
                    Ok(SyncEvent::Finished { report }) => {
                        ctx2.counters.bump("engine passes finished");
                        if report.initial_path.is_some() {
                            ctx2.counters.bump("engine initial syncs finished");
                        }
                    }
                    Ok(SyncEvent::Backoff { .. }) => ctx2.counters.bump("engine backoffs"),
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    let (c, ctx3) = (cancel.clone(), ctx.clone());
    let handle = tokio::spawn(async move {
        if let Err(e) = engine.run(c).await {
            tracing::warn!(error = %e, "engine run loop ended");
            ctx3.counters.bump(&format!("engine stopped: {}", short(&e.to_string())));
        }
    });
    Ok((handle, events, counter))
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Kills (or, one time in four, cancels) the running engine and dispatcher, then starts new ones.
async fn kill_and_restart(ctx: &Arc<Ctx>, mut workers: Workers, rng: &mut SmallRng) -> Result<Workers, BoxError> {
    if rng.gen_bool(0.25) {
        ctx.counters.bump("graceful stops");
        workers.stop_gracefully(ctx).await;
    } else {
        // Aim at work in progress: wait (briefly) for the engine to start a phase or the
        // dispatcher to finish an item, then strike a few milliseconds later.
        let wait_for_engine = rng.gen_bool(0.5);
        let lag = Duration::from_millis(rng.gen_range(0..150));
        let _ = tokio::time::timeout(Duration::from_secs(4), async {
            loop {
                if wait_for_engine {
                    match workers.engine_events.recv().await {
                        Ok(SyncEvent::PhaseChanged { phase }) if phase != salesync::engine::Phase::Idle => return,
                        Ok(SyncEvent::PageApplied { .. }) => return,
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    }
                } else {
                    match workers.delivery_events.recv().await {
                        Ok(DeliveryEvent::Delivered { .. } | DeliveryEvent::Retrying { .. }) => return,
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    }
                }
            }
        })
        .await;
        tokio::time::sleep(lag).await;
        ctx.counters.bump("kills");
        workers.abort();
    }
    Workers::start(ctx)
}

// ---------------------------------------------------------------------------------------------
// Mutations in the emulators.

const TITLES: &[&str] = &["CTO", "VP Sales", "Head of Growth", "Ingénieure", "Procurement Lead", "CEO", "Analyst"];
const NAMES: &[&str] = &["Zoë", "José", "Łukasz", "Björn", "Renée", "美咲", "Олег", "Ada", "Grace", "Alan"];
const LAST: &[&str] = &["Müller", "García", "Ødegaard", "O'Brien", "山田", "Иванов", "Hopper", "Lovelace"];
const COMPANIES: &[&str] = &["Acme Corp", "Globex", "Initech", "Müller & Söhne GmbH", "Hooli", "Tyrell"];
const SOURCES: &[&str] = &["Web", "Trade Show", "Webinar", "Partner"];

fn text(m: &Map<String, Value>, k: &str) -> Option<String> {
    match m.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    }
}

async fn mutate(ctx: Arc<Ctx>, mut live: Vec<i64>, seed: u64, every: Duration, stop: CancellationToken) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        n += 1;
        if live.len() < 10 {
            continue;
        }
        let i = rng.gen_range(0..live.len());
        let id = live[i];
        let Some(lead) = ctx.world.marketo.lead(id) else {
            live.swap_remove(i);
            continue;
        };
        let roll = rng.gen_range(0..100);
        let kind = match roll {
            0..=49 => {
                let mut changes = Map::new();
                for _ in 0..rng.gen_range(1..=3) {
                    let (k, v) = match rng.gen_range(0..7) {
                        0 => ("title", json!(TITLES.choose(&mut rng))),
                        1 => ("phone", json!(format!("+1 415 555 {:04}", rng.gen_range(0..10_000)))),
                        2 => ("firstName", json!(NAMES.choose(&mut rng))),
                        3 => ("lastName", json!(LAST.choose(&mut rng))),
                        4 => ("company", json!(COMPANIES.choose(&mut rng))),
                        5 => ("leadSource", json!(SOURCES.choose(&mut rng))),
                        _ => ("title", Value::Null),
                    };
                    changes.insert(k.into(), v);
                }
                ctx.world.marketo.update_lead(id, changes);
                "field change"
            }
            50..=59 => {
                if text(&lead, "sfdcLeadOwnerId").is_some() {
                    ctx.world.marketo.update_lead(id, obj(json!({"sfdcLeadOwnerId": null})));
                    "owner lost"
                } else {
                    owner_gain(&ctx, id, &lead, &mut rng, n);
                    "owner gained"
                }
            }
            60..=64 => {
                ctx.world.marketo.delete_lead(id);
                live.swap_remove(i);
                "delete"
            }
            65..=69 => {
                let j = rng.gen_range(0..live.len());
                if j == i {
                    continue;
                }
                let loser = live[j];
                if !ctx.world.marketo.merge_leads(id, &[loser]) {
                    continue;
                }
                live.swap_remove(j);
                "merge"
            }
            70..=84 => {
                let new = new_lead(&ctx, &mut rng, n);
                live.push(new);
                "new lead"
            }
            85..=92 => {
                if rng.gen_bool(0.5) {
                    // An unowned person gains an owner (and a Salesforce lead) or an owned one
                    // changes owner.
                    if text(&lead, "sfdcLeadOwnerId").is_some() {
                        let owner = ctx.users.choose(&mut rng).cloned().unwrap_or_default();
                        ctx.world.marketo.update_lead(id, obj(json!({"sfdcLeadOwnerId": owner})));
                        "owner changed"
                    } else {
                        owner_gain(&ctx, id, &lead, &mut rng, n);
                        "owner gained"
                    }
                } else {
                    ctx.world.marketo.update_lead(id, obj(json!({"email": format!("soak.{n}@churn.example.com")})));
                    "email change"
                }
            }
            _ => {
                // A lead converted in Salesforce; Marketo's CRM sync follows.
                let Some(lead_id) = text(&lead, "sfdcLeadId") else { continue };
                match ctx.world.salesforce.convert_lead(&lead_id, None, None, rng.gen_bool(0.3)) {
                    Ok(c) => {
                        ctx.world.marketo.update_lead(
                            id,
                            obj(json!({"sfdcType": "Contact", "sfdcLeadId": null,
                                "sfdcContactId": c.contact_id, "sfdcAccountId": c.account_id})),
                        );
                        "lead converted"
                    }
                    Err(_) => continue,
                }
            }
        };
        ctx.counters.bump(&format!("mutation: {kind}"));
    }
}

/// Gives an owner to a person: a new Salesforce lead when it has no Salesforce record yet.
fn owner_gain(ctx: &Ctx, id: i64, lead: &Map<String, Value>, rng: &mut SmallRng, n: u64) {
    let owner = ctx.users.choose(rng).cloned().unwrap_or_default();
    if text(lead, "sfdcType").is_some() {
        ctx.world.marketo.update_lead(id, obj(json!({"sfdcLeadOwnerId": owner})));
        return;
    }
    let last = text(lead, "lastName").unwrap_or_else(|| "Unknown".into());
    let company = text(lead, "company").unwrap_or_else(|| "Unknown".into());
    let mut fields = obj(json!({"LastName": last, "Company": company, "OwnerId": owner}));
    if let Some(e) = text(lead, "email") {
        fields.insert("Email".into(), json!(e));
    }
    match ctx.world.salesforce.insert("Lead", fields) {
        Ok(sf_id) => {
            ctx.world
                .marketo
                .update_lead(id, obj(json!({"sfdcType": "Lead", "sfdcLeadId": sf_id, "sfdcLeadOwnerId": owner})));
        }
        Err(e) => tracing::warn!(error = %e, n, "could not create the Salesforce lead"),
    }
}

/// A new Marketo lead: usually with a Salesforce lead and an owner, sometimes Marketo-only.
fn new_lead(ctx: &Ctx, rng: &mut SmallRng, n: u64) -> i64 {
    let first = NAMES.choose(rng).copied().unwrap_or("Ada");
    let last = LAST.choose(rng).copied().unwrap_or("Lovelace");
    let company = COMPANIES.choose(rng).copied().unwrap_or("Acme Corp");
    let email = format!("new.{n}@soak.example.com");
    let mut fields = obj(json!({
        "firstName": first, "lastName": last, "email": email, "company": company,
        "title": TITLES.choose(rng), "leadSource": "Web"
    }));
    if rng.gen_bool(0.8) {
        let owner = ctx.users.choose(rng).cloned().unwrap_or_default();
        let sf_fields =
            obj(json!({"LastName": last, "FirstName": first, "Company": company, "Email": email, "OwnerId": owner}));
        if let Ok(sf_id) = ctx.world.salesforce.insert("Lead", sf_fields) {
            fields.insert("sfdcType".into(), json!("Lead"));
            fields.insert("sfdcLeadId".into(), json!(sf_id));
            fields.insert("sfdcLeadOwnerId".into(), json!(owner));
        }
    }
    ctx.world.marketo.create_lead(fields)
}

// ---------------------------------------------------------------------------------------------
// Outbound recording, as a host would.

async fn record(ctx: Arc<Ctx>, seed: u64, every: Duration, stop: CancellationToken) {
    let mut rng = SmallRng::seed_from_u64(seed);
    // The host records through its own dispatcher handle (never run): only the store is written.
    let recorder = match build_dispatcher(&ctx) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("could not build the recording dispatcher: {e}");
            return;
        }
    };
    let mut people: Vec<i64> = Vec::new();
    let mut refreshed = Instant::now() - Duration::from_secs(60);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if refreshed.elapsed() > Duration::from_secs(5) {
            if let Ok(mirror) = all_people(ctx.store.as_ref()).await {
                people = mirror.into_keys().collect();
            }
            refreshed = Instant::now();
        }
        if people.is_empty() {
            continue;
        }
        n += 1;
        let person = people.choose(&mut rng).copied().unwrap_or_default();
        let roll = rng.gen_range(0..100);
        let (label, result) = match roll {
            0..=59 => {
                let kind = K::ALL.choose(&mut rng).copied().unwrap_or(K::SendSalesEmail);
                let id = format!("soak-{seed:x}-{n}");
                let r = recorder.record_activity(activity(&id, person, kind, &mut rng)).await;
                if r.is_ok() {
                    lock(&ctx.recorded).activities.push((id, kind, person));
                }
                (format!("activity {}", kind.slug()), r.map(|_| ()))
            }
            60..=65 => {
                let r = recorder.record_unsubscribe(person).await;
                if let Ok(rec) = &r {
                    lock(&ctx.recorded).unsubscribes.push((rec.id.clone(), person));
                }
                ("unsubscribe".to_string(), r.map(|_| ()))
            }
            66..=77 => {
                let id = format!("rem-{seed:x}-{n}");
                let model = ReminderModel {
                    marketo_id: person,
                    status: ReminderStatus::Open,
                    priority: if rng.gen_bool(0.5) { ReminderPriority::High } else { ReminderPriority::Normal },
                    due_date: rng.gen_bool(0.7).then(|| due(&mut rng)),
                    details: rng.gen_bool(0.5).then(|| format!("details {n} ✓")),
                    deleted: false,
                };
                let r = recorder
                    .create_reminder(NewReminder {
                        id: Some(id.clone()),
                        marketo_id: person,
                        subject: format!("Follow up {n}"),
                        priority: model.priority,
                        due_date: model.due_date,
                        details: model.details.clone(),
                    })
                    .await;
                if r.is_ok() {
                    lock(&ctx.recorded).reminders.insert(id, model);
                }
                ("reminder create".to_string(), r.map(|_| ()))
            }
            _ => {
                // A change to an existing reminder that is not deleted.
                let pick = {
                    let rec = lock(&ctx.recorded);
                    let open: Vec<(&String, &ReminderModel)> =
                        rec.reminders.iter().filter(|(_, m)| !m.deleted).collect();
                    open.choose(&mut rng).map(|(id, m)| ((*id).clone(), (*m).clone()))
                };
                let Some((id, mut model)) = pick else { continue };
                let (label, r) = match roll {
                    78..=87 => {
                        let changes = ReminderChanges {
                            subject: rng.gen_bool(0.3).then(|| format!("Renamed {n}")),
                            priority: Some(if rng.gen_bool(0.5) {
                                ReminderPriority::High
                            } else {
                                ReminderPriority::Normal
                            }),
                            due_date: Some(rng.gen_bool(0.8).then(|| due(&mut rng))),
                            details: Some(rng.gen_bool(0.7).then(|| format!("edited {n}"))),
                        };
                        if let Some(p) = changes.priority {
                            model.priority = p;
                        }
                        if let Some(d) = changes.due_date {
                            model.due_date = d;
                        }
                        if let Some(d) = changes.details.clone() {
                            model.details = d;
                        }
                        ("reminder edit", recorder.edit_reminder(&id, changes).await)
                    }
                    88..=93 if model.status == ReminderStatus::Open => {
                        model.status = ReminderStatus::Complete;
                        ("reminder complete", recorder.complete_reminder(&id).await)
                    }
                    88..=93 => {
                        model.status = ReminderStatus::Open;
                        ("reminder reopen", recorder.reopen_reminder(&id).await)
                    }
                    _ => {
                        model.deleted = true;
                        ("reminder delete", recorder.delete_reminder(&id).await)
                    }
                };
                if r.is_ok() {
                    lock(&ctx.recorded).reminders.insert(id, model);
                }
                (label.to_string(), r.map(|_| ()))
            }
        };
        match result {
            Ok(()) => ctx.counters.bump(&format!("recorded: {label}")),
            Err(e) => {
                tracing::debug!(error = %e, "recording refused");
                ctx.counters.bump("recording refused (person left the mirror, …)");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn due(rng: &mut SmallRng) -> NaiveDate {
    Utc::now().date_naive() + chrono::Days::new(rng.gen_range(0..60))
}

fn activity(id: &str, marketo_id: i64, kind: K, rng: &mut SmallRng) -> SalesActivity {
    let rep = format!("rep{}@sales.example.com", rng.gen_range(0..5));
    let campaign = CampaignRef {
        id: Some(format!("c{}", rng.gen_range(1..20))),
        name: Some(format!("Campaign {}", rng.gen_range(1..20))),
        url: None,
        day: Some(rng.gen_range(1..10)),
        step: Some(rng.gen_range(1..5)),
    };
    SalesActivity {
        id: id.to_string(),
        marketo_id,
        kind,
        occurred_at: Utc::now(),
        actor_email: Some(rep),
        actor_salesforce_user: None,
        subject: Some(format!("Soak {} {id}", kind.display_name())),
        link: (kind == K::ClickSalesEmail).then(|| "https://example.com/pricing".into()),
        template: rng.gen_bool(0.3).then(|| TemplateRef {
            id: Some("t1".into()),
            name: Some("Intro".into()),
            url: None,
        }),
        campaign: matches!(kind, K::AddedToSalesCampaign | K::RemovedFromSalesCampaign).then_some(campaign),
        call: (kind == K::SalesCall).then(|| CallDetails {
            status: [CallStatus::Completed, CallStatus::NoAnswer, CallStatus::Failed][rng.gen_range(0..3)],
            duration_secs: Some(rng.gen_range(10..900)),
            phone_number: Some("+1 415 555 0100".into()),
            recording_url: None,
            answered_by: None,
            outcome: Some("Interested".into()),
            reason: None,
        }),
        bounce_details: (kind == K::SalesEmailBounced).then(|| "550 mailbox unavailable".into()),
        body: Some("Recorded by the soak run".into()),
        sales_person_id: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Faults.

fn arm_faults(ctx: &Ctx, rng: &mut SmallRng) {
    let mut mk: Vec<FaultRule<MarketoFault>> = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..rng.gen_range(1..=3) {
        let r: f64 = rng.gen_range(0.05..0.25);
        let (rule, label) = match rng.gen_range(0..9) {
            0 => (marketo_code("502", r), "502"),
            1 => (marketo_code("604", r), "604"),
            2 => (marketo_code("606", r), "606"),
            3 => (marketo_code("615", r), "615"),
            4 => (marketo_code("602", r / 2.0), "602"),
            5 => (FaultRule::new(Trigger::Ratio(r), FaultAction::DropConnection), "drop"),
            6 => (
                FaultRule::new(Trigger::Ratio(0.3), FaultAction::ApplyThenDrop)
                    .on_path("/activities/external.json")
                    .on_method("POST"),
                "apply-then-drop",
            ),
            7 => {
                let d = Duration::from_millis(rng.gen_range(2_000..14_000));
                (FaultRule::new(Trigger::Ratio(r / 2.0), FaultAction::Delay(d)), "delay")
            }
            _ => (FaultRule::new(Trigger::Ratio(r / 2.0), FaultAction::MalformedBody), "malformed"),
        };
        mk.push(rule.on_path("/"));
        labels.push(format!("marketo {label}"));
    }
    let mut sf: Vec<FaultRule<SalesforceFault>> = Vec::new();
    for _ in 0..rng.gen_range(1..=3) {
        let r: f64 = rng.gen_range(0.05..0.25);
        let (rule, label) = match rng.gen_range(0..10) {
            0 => (salesforce_error(SalesforceFault::ServerUnavailable, r), "503"),
            1 => (salesforce_error(SalesforceFault::UnknownException, r), "500"),
            2 => (salesforce_error(SalesforceFault::UnableToLockRow, r), "UNABLE_TO_LOCK_ROW"),
            3 => (salesforce_error(SalesforceFault::InvalidSessionId, r / 2.0), "INVALID_SESSION_ID"),
            4 => (salesforce_error(SalesforceFault::QueryTimeout, r).on_path("/query"), "QUERY_TIMEOUT"),
            5 => (FaultRule::new(Trigger::Ratio(r), FaultAction::DropConnection), "drop"),
            6 => (
                FaultRule::new(Trigger::Ratio(0.3), FaultAction::ApplyThenDrop).on_path("/composite/sobjects"),
                "apply-then-drop",
            ),
            7 => {
                let d = Duration::from_millis(rng.gen_range(2_000..14_000));
                (FaultRule::new(Trigger::Ratio(r / 2.0), FaultAction::Delay(d)), "delay")
            }
            8 => (salesforce_error(SalesforceFault::RequestLimitExceeded, r), "REQUEST_LIMIT_EXCEEDED"),
            _ => (FaultRule::new(Trigger::Ratio(r / 2.0), FaultAction::MalformedBody), "malformed"),
        };
        let rule = if rule.path_contains.is_none() { rule.on_path(SALESFORCE_DATA) } else { rule };
        sf.push(rule);
        labels.push(format!("salesforce {label}"));
    }
    for l in &labels {
        ctx.counters.bump(&format!("fault rule armed: {l}"));
    }
    ctx.counters.bump("fault windows");
    tracing::info!(?labels, "fault window opens");
    set_faults(&ctx.world, mk, rng.r#gen(), sf, rng.r#gen());
}

// ---------------------------------------------------------------------------------------------
// Progress and checks.

async fn progress(ctx: &Ctx, started: Instant, faults_on: bool) {
    let counts = ctx.store.outbox_counts().await.ok();
    let in_mirror = ctx.store.count_people().await.unwrap_or(0);
    let c = &ctx.counters;
    println!(
        "[{:>4.0} s] mutations {:>5}  recorded {:>5}  outbox {}  mirror {} people (+{} ~{} -{}, {} passes)  kills {} graceful {}  faults {}",
        started.elapsed().as_secs_f64(),
        c.total_with_prefix("mutation: "),
        c.total_with_prefix("recorded: "),
        counts.map_or("?".into(), |c| format!(
            "pending {} in flight {} delivered {} skipped {} parked {}",
            c.pending, c.in_flight, c.delivered, c.skipped, c.parked
        )),
        in_mirror,
        ctx.mirror_inserted.load(Ordering::Relaxed),
        ctx.mirror_updated.load(Ordering::Relaxed),
        ctx.mirror_removed.load(Ordering::Relaxed),
        c.get("engine passes finished"),
        c.get("kills"),
        c.get("graceful stops"),
        if faults_on { "ON" } else { "off" },
    );
}

async fn all_outbox(store: &dyn Store) -> Result<Vec<OutboxItem>, BoxError> {
    let mut all = Vec::new();
    for state in
        [OutboxState::Pending, OutboxState::InFlight, OutboxState::Delivered, OutboxState::Skipped, OutboxState::Parked]
    {
        all.extend(store.outbox_items(state, 10_000_000).await?);
    }
    Ok(all)
}

/// Tallies of one kind of outbound item in one target.
#[derive(Default, Debug)]
struct Tally {
    recorded: u64,
    delivered: u64,
    skipped: u64,
    not_deliverable: u64,
    duplicates: u64,
    lost: u64,
}

/// What the checks read: the whole outbox, what the host recorded, and what the emulators hold.
struct Evidence {
    items: Vec<OutboxItem>,
    recorded: Recorded,
    /// Marketo custom activities by salesync activity id.
    in_marketo: HashMap<String, usize>,
    /// Live Salesforce Tasks by external id.
    tasks: HashMap<String, Vec<Map<String, Value>>>,
}

impl Evidence {
    async fn gather(ctx: &Ctx) -> Result<Evidence, BoxError> {
        let items = all_outbox(ctx.store.as_ref()).await?;
        let recorded = {
            let rec = lock(&ctx.recorded);
            Recorded {
                activities: rec.activities.clone(),
                unsubscribes: rec.unsubscribes.clone(),
                reminders: rec.reminders.clone(),
            }
        };
        Ok(Evidence {
            items,
            recorded,
            in_marketo: marketo_activity_counts(&ctx.world),
            tasks: tasks_by_external_id(&ctx.world),
        })
    }

    fn by_key(&self) -> HashMap<&str, &OutboxItem> {
        self.items.iter().map(|i| (i.key.as_str(), i)).collect()
    }
}

/// What the tallies found besides their counts: reasons for items not delivered by design,
/// examples of failures, notes.
#[derive(Default)]
struct Findings {
    reasons: BTreeMap<String, u64>,
    examples: Vec<String>,
    notes: Vec<String>,
}

impl Findings {
    fn example(&mut self, s: String) {
        if self.examples.len() < 15 {
            self.examples.push(s);
        }
    }

    fn reason(&mut self, s: String) {
        *self.reasons.entry(s).or_default() += 1;
    }
}

/// Every recorded activity, in Marketo (by `salesyncActivityId`) and, for the kinds logged as
/// Tasks, in Salesforce (by external id): (Marketo tally, Salesforce Task tally).
fn tally_activities(ctx: &Ctx, ev: &Evidence, found: &mut Findings) -> (Tally, Tally) {
    let by_key = ev.by_key();
    let mut mk = Tally::default();
    let mut sf_tasks = Tally::default();
    for (id, kind, person) in &ev.recorded.activities {
        // Marketo.
        mk.recorded += 1;
        let n = ev.in_marketo.get(id).copied().unwrap_or(0);
        if n > 1 {
            mk.duplicates += 1;
            found.example(format!("activity {id} is {n} times in Marketo"));
        }
        match by_key.get(format!("{id}:marketo").as_str()) {
            None => {
                mk.lost += 1;
                found.example(format!("activity {id}: no Marketo outbox item"));
            }
            Some(item) => match item.state {
                OutboxState::Delivered if n >= 1 => mk.delivered += 1,
                OutboxState::Delivered => {
                    mk.lost += 1;
                    found.example(format!("activity {id} marked delivered to Marketo but absent"));
                }
                OutboxState::Parked
                    if item.last_error.as_deref().is_some_and(|e| e.contains("1004"))
                        && ctx.world.marketo.lead(*person).is_none() =>
                {
                    mk.not_deliverable += 1;
                    found.reason("Marketo: lead deleted or merged away before delivery (1004)".into());
                }
                OutboxState::Skipped => {
                    mk.skipped += 1;
                    found.reason(format!("Marketo skipped: {}", item.result.clone().unwrap_or_default()));
                }
                state => {
                    mk.lost += 1;
                    found.example(format!("activity {id} Marketo item {state:?}: {:?}", item.last_error));
                }
            },
        }
        // Salesforce (emails, replies, calls).
        if kind.task_kind().is_none() {
            continue;
        }
        sf_tasks.recorded += 1;
        let n = ev.tasks.get(id).map_or(0, Vec::len);
        if n > 1 {
            sf_tasks.duplicates += 1;
            found.example(format!("activity {id} has {n} Salesforce Tasks"));
        }
        match by_key.get(format!("{id}:salesforce").as_str()) {
            None => {
                sf_tasks.lost += 1;
                found.example(format!("activity {id}: no Salesforce outbox item"));
            }
            Some(item) => match item.state {
                OutboxState::Delivered if n >= 1 => sf_tasks.delivered += 1,
                OutboxState::Delivered => {
                    sf_tasks.lost += 1;
                    found.example(format!("activity {id} marked delivered to Salesforce but no Task"));
                }
                OutboxState::Skipped => {
                    sf_tasks.skipped += 1;
                    let why = item.result.clone().unwrap_or_default();
                    found.reason(format!("Salesforce Task skipped: {}", generic(&why)));
                    if n > 0 {
                        found.notes.push(format!(
                            "activity {id}: skipped ({why}) yet a Task exists (an earlier attempt wrote it)"
                        ));
                    }
                }
                state => {
                    sf_tasks.lost += 1;
                    found.example(format!("activity {id} Salesforce item {state:?}: {:?}", item.last_error));
                }
            },
        }
    }
    (mk, sf_tasks)
}

/// Every recorded unsubscribe: the opt-out flag on the record it was delivered to.
fn tally_unsubscribes(ctx: &Ctx, ev: &Evidence, found: &mut Findings) -> Tally {
    let by_key = ev.by_key();
    let mut unsub = Tally::default();
    for (key, _person) in &ev.recorded.unsubscribes {
        unsub.recorded += 1;
        match by_key.get(key.as_str()) {
            Some(item) if item.state == OutboxState::Delivered => {
                let who = item.result.clone().unwrap_or_default();
                let object = if who.starts_with("003") { "Contact" } else { "Lead" };
                let flag = ctx
                    .world
                    .salesforce
                    .get(object, &who)
                    .and_then(|r| r.get("HasOptedOutOfEmail").and_then(Value::as_bool));
                if flag == Some(true) {
                    unsub.delivered += 1;
                } else {
                    unsub.lost += 1;
                    found.example(format!("unsubscribe {key} delivered to {who} but the flag is {flag:?}"));
                }
            }
            Some(item) if item.state == OutboxState::Skipped => {
                unsub.skipped += 1;
                found.reason(format!("unsubscribe skipped: {}", generic(&item.result.clone().unwrap_or_default())));
            }
            Some(item) => {
                unsub.lost += 1;
                found.example(format!("unsubscribe {key} {:?}: {:?}", item.state, item.last_error));
            }
            None => {
                unsub.lost += 1;
                found.example(format!("unsubscribe {key}: no outbox item"));
            }
        }
    }
    unsub
}

/// Every recorded reminder: salesync's copy and its Task match the last change the host made
/// (a deleted one has no Task). Also the number of reminder changes in the outbox.
async fn tally_reminders(ctx: &Ctx, ev: &Evidence, found: &mut Findings) -> Result<(Tally, u64), BoxError> {
    let sf_log = ctx.world.salesforce.call_log();
    let mut rem = Tally::default();
    let mut reminder_items: HashMap<&str, Vec<&OutboxItem>> = HashMap::new();
    for i in &ev.items {
        if let OutboxPayload::Reminder { task } = &i.payload {
            reminder_items.entry(task.id.as_str()).or_default().push(i);
        }
    }
    let mut reminder_changes = 0u64;
    for (id, model) in &ev.recorded.reminders {
        rem.recorded += 1;
        let its = reminder_items.get(id.as_str()).cloned().unwrap_or_default();
        reminder_changes += its.len() as u64;
        let tasks = ev.tasks.get(id).cloned().unwrap_or_default();
        if tasks.len() > 1 {
            rem.duplicates += 1;
            found.example(format!("reminder {id} has {} Tasks", tasks.len()));
            continue;
        }
        let unfinished =
            its.iter().filter(|i| !matches!(i.state, OutboxState::Delivered | OutboxState::Skipped)).count();
        if unfinished > 0 {
            rem.lost += 1;
            found.example(format!("reminder {id}: {unfinished} changes not delivered"));
            continue;
        }
        let ever_delivered = its.iter().any(|i| i.state == OutboxState::Delivered);
        let mut history: Vec<&&OutboxItem> = its.iter().collect();
        history.sort_by_key(|i| i.id);
        let history: Vec<String> = history
            .iter()
            .map(|i| {
                let what = match &i.payload {
                    OutboxPayload::Reminder { task } if task.deleted => "delete",
                    OutboxPayload::Reminder { task } if task.salesforce_task_id.is_some() => "update",
                    _ => "change",
                };
                format!(
                    "#{} {what} {:?} after {} attempts: {}",
                    i.id,
                    i.state,
                    i.attempts,
                    i.result.clone().or_else(|| i.last_error.clone()).unwrap_or_default()
                )
            })
            .collect();
        // salesync's own copy must hold the host's last change too.
        let local = ctx.store.reminder(id).await?;
        let local_state = local.as_ref().map(|l| (l.status, l.priority, l.due_date, l.details.clone(), l.deleted));
        let want_state = (model.status, model.priority, model.due_date, model.details.clone(), model.deleted);
        if local_state.as_ref() != Some(&want_state) {
            rem.lost += 1;
            found.example(format!(
                "reminder {id} (person {}): salesync holds {local_state:?}, the host last set {want_state:?}; Salesforce has {:?}; its changes: {}",
                model.marketo_id,
                tasks.first().map(|t| (
                    t.get("Status").cloned(),
                    t.get("Priority").cloned(),
                    t.get("ActivityDate").cloned(),
                    t.get("Description").cloned()
                )),
                history.join(" | ")
            ));
            continue;
        }
        match tasks.first() {
            None if model.deleted || !ever_delivered => {
                if ever_delivered {
                    rem.delivered += 1;
                } else {
                    rem.skipped += 1;
                    let why = its.iter().max_by_key(|i| i.id).and_then(|i| i.result.clone()).unwrap_or_default();
                    found.reason(format!("reminder not synced: {}", generic(&why)));
                }
            }
            None => {
                rem.lost += 1;
                found.example(format!("reminder {id}: delivered before but no Task in Salesforce"));
            }
            Some(t) if model.deleted => {
                rem.lost += 1;
                let task_id = t.get("Id").and_then(Value::as_str).unwrap_or_default().to_string();
                let calls: Vec<String> = sf_log
                    .iter()
                    .filter(|c| c.path.contains(&task_id))
                    .map(|c| format!("{} {} {}", c.method, c.status, c.fault.as_deref().unwrap_or("")))
                    .collect();
                found.example(format!(
                    "reminder {id}: deleted in salesync, Task {task_id} still in Salesforce; its changes: {}; calls on the Task: {}",
                    history.join(" | "),
                    calls.join(", ")
                ));
            }
            Some(t) => {
                let s = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_string);
                let want = (
                    Some(model.status.salesforce_status().to_string()),
                    Some(model.priority.salesforce_priority().to_string()),
                    model.due_date.map(|d| d.format("%Y-%m-%d").to_string()),
                    model.details.clone(),
                );
                let got = (s("Status"), s("Priority"), s("ActivityDate"), s("Description"));
                if want == got {
                    rem.delivered += 1;
                } else {
                    rem.lost += 1;
                    let local = ctx.store.reminder(id).await.ok().flatten();
                    found.example(format!(
                        "reminder {id} (person {}): Salesforce has {got:?}, the host last set {want:?}; salesync holds {:?}; its changes: {}",
                        model.marketo_id,
                        local.map(|l| (l.status, l.priority, l.due_date, l.details, l.updated_at)),
                        history.join(" | ")
                    ));
                }
            }
        }
    }
    Ok((rem, reminder_changes))
}

/// Faults that fired, from the emulators' call logs (limit rejections are not injected faults).
fn faults_fired(ctx: &Ctx) -> BTreeMap<String, u64> {
    let rejected = ctx.world.marketo.limit_rejections();
    let mut fired: BTreeMap<String, u64> = BTreeMap::new();
    for c in &ctx.world.marketo.call_log() {
        if let Some(o) = c.outcome.as_deref() {
            let label = match o {
                "dropped" | "dropped-partial" => Some("Marketo dropped connection (incl. apply-then-drop)".to_string()),
                "malformed" => Some("Marketo malformed body".to_string()),
                "502" | "602" | "604" | "606" | "611" | "615" => Some(format!("Marketo error {o}")),
                _ => None,
            };
            if let Some(l) = label {
                *fired.entry(l).or_default() += 1;
            }
        }
    }
    for (code, n) in [("606", rejected.rate), ("615", rejected.concurrency)] {
        if let Some(v) = fired.get_mut(&format!("Marketo error {code}")) {
            *v = v.saturating_sub(n);
        }
    }
    for c in &ctx.world.salesforce.call_log() {
        if let Some(f) = c.fault.as_deref() {
            let label = match f {
                "error" => format!("Salesforce error {}", c.error_code.clone().unwrap_or_default()),
                other => format!("Salesforce {other}"),
            };
            *fired.entry(label).or_default() += 1;
        }
    }
    fired
}

/// One named check of the report: `Err` says what failed.
type Check = Result<(), String>;

/// The mirror equals the oracle computed from the Marketo emulator's data.
async fn check_mirror(ctx: &Ctx) -> Check {
    ctx.world.mirror_diff(ctx.store.as_ref()).await.into_result()
}

/// Marketo's and Salesforce's limits were kept (the test kit's rate-limit check).
fn check_limits(ctx: &Ctx) -> Check {
    check_rate_limits(&ctx.world)
}

/// Nothing was delivered twice.
fn check_no_duplicates(tallies: &[&Tally]) -> Check {
    let duplicates: u64 = tallies.iter().map(|t| t.duplicates).sum();
    if duplicates > 0 { Err(format!("{duplicates} duplicates")) } else { Ok(()) }
}

/// Nothing was lost: every item was delivered, skipped or not deliverable by design.
fn check_nothing_lost(tallies: &[&Tally]) -> Check {
    let lost: u64 = tallies.iter().map(|t| t.lost).sum();
    if lost > 0 { Err(format!("{lost} lost")) } else { Ok(()) }
}

/// The system converged once the churn and the faults stopped.
fn check_converged(converged: bool, converge_took: Duration) -> Check {
    if converged { Ok(()) } else { Err(format!("did not converge within {} s", converge_took.as_secs())) }
}

/// Every graceful stop finished within 30 s.
fn check_graceful_stops(ctx: &Ctx) -> Check {
    if ctx.counters.get("graceful stops that timed out") > 0 {
        Err("a graceful stop took longer than 30 s".into())
    } else {
        Ok(())
    }
}

/// How long each part of the run took.
struct Timing {
    started: Instant,
    churn_took: Duration,
    converge_took: Duration,
}

/// The outbound tallies, by kind.
struct Tallies {
    marketo: Tally,
    salesforce_tasks: Tally,
    unsubscribes: Tally,
    reminders: Tally,
    reminder_changes: u64,
}

/// Prints the figures of the run.
async fn print_figures(ctx: &Ctx, timing: &Timing, t: &Tallies, found: &Findings) {
    let c = ctx.counters.snapshot();
    println!("\n=== salesync soak: figures ===");
    println!(
        "duration            {:.0} s of churn + {:.0} s to converge ({:.0} s in all)",
        timing.churn_took.as_secs_f64(),
        timing.converge_took.as_secs_f64(),
        timing.started.elapsed().as_secs_f64()
    );
    let mutations: u64 = c.iter().filter(|(k, _)| k.starts_with("mutation: ")).map(|(_, v)| v).sum();
    println!("mutations applied   {mutations}");
    for (k, v) in c.iter().filter(|(k, _)| k.starts_with("mutation: ")) {
        println!("  {:<34}{v}", k.trim_start_matches("mutation: "));
    }
    println!(
        "mirror changes      {} inserted, {} updated, {} removed (final mirror {} people)",
        ctx.mirror_inserted.load(Ordering::Relaxed),
        ctx.mirror_updated.load(Ordering::Relaxed),
        ctx.mirror_removed.load(Ordering::Relaxed),
        ctx.store.count_people().await.unwrap_or(0)
    );
    println!(
        "recorded            {}",
        c.iter().filter(|(k, _)| k.starts_with("recorded: ")).map(|(_, v)| v).sum::<u64>()
    );
    for (k, v) in c.iter().filter(|(k, _)| k.starts_with("recorded: ")) {
        println!("  {:<34}{v}", k.trim_start_matches("recorded: "));
    }
    println!("  {:<34}{}", "refused at recording", ctx.counters.get("recording refused (person left the mirror, …)"));
    println!("outbound            recorded  delivered  skipped  not deliverable  duplicates  lost");
    for (name, t) in [
        ("Marketo activities", &t.marketo),
        ("Salesforce Tasks", &t.salesforce_tasks),
        ("unsubscribes", &t.unsubscribes),
        ("reminders", &t.reminders),
    ] {
        println!(
            "  {name:<18}{:>8} {:>10} {:>8} {:>16} {:>11} {:>5}",
            t.recorded, t.delivered, t.skipped, t.not_deliverable, t.duplicates, t.lost
        );
    }
    println!(
        "  ({} reminder changes; a reminder counts as delivered when its Task matches its last change)",
        t.reminder_changes
    );
    if !found.reasons.is_empty() {
        println!("not delivered, by design:");
        for (k, v) in &found.reasons {
            println!("  {v:>6}  {k}");
        }
    }
    let fired = faults_fired(ctx);
    let faults_total: u64 = fired.values().sum();
    println!(
        "faults injected     {faults_total} in {} fault windows (all survived if the checks pass)",
        ctx.counters.get("fault windows")
    );
    for (k, v) in &fired {
        println!("  {k:<52}{v}");
    }
    let delays: u64 = c.iter().filter(|(k, _)| k.ends_with(" delay")).map(|(_, v)| v).sum();
    println!("  {:<52}{delays} (windows)", "Marketo/Salesforce delay rules armed");
    println!(
        "kills               {} aborted mid-work, {} graceful stops, {} engine restarts after an error, {} reconnects",
        ctx.counters.get("kills"),
        ctx.counters.get("graceful stops"),
        ctx.counters.get("engine restarts after an error"),
        ctx.counters.get("reconnects")
    );
    for (k, v) in c.iter().filter(|(k, _)| k.starts_with("engine stopped: ")) {
        println!("  {v:>4} × {k}");
    }
    println!(
        "engine              {} passes finished ({} initial syncs), {} backoffs",
        ctx.counters.get("engine passes finished"),
        ctx.counters.get("engine initial syncs finished"),
        ctx.counters.get("engine backoffs")
    );
    let mk_log = ctx.world.marketo.call_log();
    let mut by_path: BTreeMap<String, u64> = BTreeMap::new();
    for call in &mk_log {
        let path = call.path.trim_start_matches("/rest/v1/").trim_start_matches("/bulk/v1/");
        let path: String = path
            .split('/')
            .map(|seg| if seg.chars().any(|c| c.is_ascii_digit()) { "{id}" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        *by_path.entry(format!("{} {path}", call.method)).or_default() += 1;
    }
    let mut by_path: Vec<_> = by_path.into_iter().collect();
    by_path.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    println!(
        "Marketo calls       {}",
        by_path.iter().take(8).map(|(p, n)| format!("{p} {n}")).collect::<Vec<_>>().join(", ")
    );
    let limits = &ctx.world.limits;
    let rejected = ctx.world.marketo.limit_rejections();
    println!(
        "Marketo limits      max {} calls in any {} s window (limit {}), max {} in flight (limit {}), {} calls in all; turned away: {} × 606, {} × 615, {} × 607",
        ctx.world.marketo.max_calls_in_any_window(),
        limits.window.as_secs(),
        limits.calls_per_window,
        ctx.world.marketo.max_concurrent_seen(),
        limits.max_concurrent,
        mk_log.len(),
        rejected.rate,
        rejected.concurrency,
        rejected.quota
    );
    println!(
        "Salesforce          {} API calls counted ({} requests)",
        ctx.world.salesforce.api_usage(),
        ctx.world.salesforce.call_log().len()
    );
    let all = [&t.marketo, &t.salesforce_tasks, &t.unsubscribes, &t.reminders];
    println!("duplicates          {}", all.iter().map(|t| t.duplicates).sum::<u64>());
    println!("lost                {}", all.iter().map(|t| t.lost).sum::<u64>());
    for e in &found.examples {
        println!("  ! {e}");
    }
    for n in found.notes.iter().take(10) {
        println!("  note: {n}");
    }
}

/// The figures, then the named checks; `Ok(true)` when every check passed.
async fn report(ctx: &Ctx, timing: Timing, converged: bool) -> Result<bool, BoxError> {
    let ev = Evidence::gather(ctx).await?;
    let mut found = Findings::default();
    let (marketo, salesforce_tasks) = tally_activities(ctx, &ev, &mut found);
    let unsubscribes = tally_unsubscribes(ctx, &ev, &mut found);
    let (reminders, reminder_changes) = tally_reminders(ctx, &ev, &mut found).await?;
    let t = Tallies { marketo, salesforce_tasks, unsubscribes, reminders, reminder_changes };
    let all = [&t.marketo, &t.salesforce_tasks, &t.unsubscribes, &t.reminders];
    let checks: Vec<(&str, Check)> = vec![
        ("mirror equals the oracle", check_mirror(ctx).await),
        ("limits kept", check_limits(ctx)),
        ("no duplicates", check_no_duplicates(&all)),
        ("nothing lost", check_nothing_lost(&all)),
        ("converged", check_converged(converged, timing.converge_took)),
        ("graceful stops in time", check_graceful_stops(ctx)),
    ];
    print_figures(ctx, &timing, &t, &found).await;
    let failures: Vec<_> = checks.iter().filter_map(|(name, c)| c.as_ref().err().map(|e| (name, e))).collect();
    if failures.is_empty() {
        println!(
            "\nPASS: mirror == oracle, every item delivered exactly once or not deliverable by design, limits kept."
        );
        Ok(true)
    } else {
        println!("\nFAIL:");
        for (name, f) in &failures {
            println!("  - {name}: {f}");
        }
        Ok(false)
    }
}

/// A skip reason without the ids in it, to group by.
fn generic(reason: &str) -> String {
    reason.split(|c: char| c.is_ascii_digit()).collect::<Vec<_>>().join("#").replace("##", "#")
}
