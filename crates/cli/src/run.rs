//! Subcommand implementations.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use salesync::core::activity::{
    CallDetails, CallStatus, CampaignRef, ReminderPriority, SalesActivity, SalesActivityKind,
};
use salesync::core::ports::marketo::MarketoApi;
use salesync::core::ports::salesforce::SalesforceApi;
use salesync::core::ports::store::{MirrorStoreExt, OutboxState, PEOPLE_PAGE, Store, StreamId};
use salesync::core::sfid::SalesforceId;
use salesync::delivery::{DeliverySettings, Dispatcher, NewReminder};
use salesync::engine::{EngineSettings, InitialMode, SyncEngine, SyncEvent};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, InitialModeSetting, redact_url};
use crate::{ActivityCommand, Cli, CliError, Command, EmulateArgs, RecordArgs, ReminderCommand, output};

type Res<T> = Result<T, CliError>;

/// Runs one command.
pub async fn run(cli: Cli) -> Res<()> {
    if let Command::Emulate(args) = &cli.command {
        return emulate(args).await;
    }
    let env = |k: &str| std::env::var(k).ok();
    let config = Config::load(cli.config.as_deref(), &env)?;
    match cli.command {
        Command::Emulate(_) => Ok(()),
        Command::Sync { once } => sync(&config, once).await,
        Command::People { email, owner, format } => people(&config, email, owner, format).await,
        Command::Activity(ActivityCommand::Record(args)) => record_activity(&config, args).await,
        Command::Unsubscribe { person } => {
            let d = dispatcher(&config).await?;
            let r = d.record_unsubscribe(person).await.map_err(|e| CliError::Runtime(e.to_string()))?;
            println!("{}", r.id);
            Ok(())
        }
        Command::Reminder(cmd) => reminder(&config, cmd).await,
        Command::Resync { person } => resync(&config, person).await,
        Command::Rebuild { discard } => rebuild(&config, discard).await,
        Command::Status => status(&config).await,
        Command::Doctor => doctor(&config).await,
    }
}

async fn emulate(args: &EmulateArgs) -> Res<()> {
    use salesync::emulator::marketo::{BusyModel, CoTenant, MarketoConfig, MarketoEmulator, MarketoLimits};
    use salesync::emulator::salesforce::{SalesforceConfig, SalesforceEmulator};
    let world = salesync::emulator::seed::generate(args.people, args.seed);
    let ms = |ms: u64| Duration::from_millis(ms);
    let chrono_ms = |ms: u64| chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 1000));
    let marketo_latency = args.latency_ms.map(ms);
    let salesforce_latency = args.salesforce_latency_ms.or(args.latency_ms).map(ms);
    let mut mc = MarketoConfig {
        bind: (args.bind, args.marketo_port).into(),
        co_tenant: CoTenant { calls_per_window: args.co_tenant_calls, in_flight: args.co_tenant_in_flight },
        busy: BusyModel { rate_606_fraction: args.busy_606, rate_615_fraction: args.busy_615, seed: args.seed },
        latency: marketo_latency,
        bulk_processing_time: chrono_ms(args.bulk_processing_ms),
        bulk_processing_per_1000_rows: chrono_ms(args.bulk_ms_per_1000_rows),
        ..MarketoConfig::default()
    };
    if args.no_limits {
        mc.limits = MarketoLimits::unlimited();
    }
    let settings = serde_json::json!({
        "limits": !args.no_limits,
        "marketo_co_tenant_calls": args.co_tenant_calls,
        "marketo_co_tenant_in_flight": args.co_tenant_in_flight,
        "marketo_busy_606": args.busy_606,
        "marketo_busy_615": args.busy_615,
        "marketo_latency_ms": args.latency_ms.unwrap_or(0),
        "salesforce_latency_ms": args.salesforce_latency_ms.or(args.latency_ms).unwrap_or(0),
        "marketo_bulk_processing_ms": args.bulk_processing_ms,
        "marketo_bulk_ms_per_1000_rows": args.bulk_ms_per_1000_rows,
    });
    let sc = SalesforceConfig {
        bind: (args.bind, args.salesforce_port).into(),
        latency: salesforce_latency,
        ..SalesforceConfig::default()
    };
    let mkto = MarketoEmulator::start(mc).await.map_err(|e| CliError::Runtime(format!("Marketo emulator: {e}")))?;
    let sf = SalesforceEmulator::start(sc).await.map_err(|e| CliError::Runtime(format!("Salesforce emulator: {e}")))?;
    mkto.seed_world(&world);
    sf.seed_world(&world);
    let line = serde_json::json!({
        "marketo_url": mkto.base_url(),
        "marketo_client_id": mkto.client_id(),
        "marketo_client_secret": mkto.client_secret(),
        "salesforce_url": sf.base_url(),
        "salesforce_client_id": sf.client_id(),
        "salesforce_client_secret": sf.client_secret(),
        "settings": settings,
    });
    println!("{line}");
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    mkto.shutdown().await;
    sf.shutdown().await;
    Ok(())
}

async fn store(config: &Config) -> Res<Arc<dyn Store>> {
    salesync::store::open(&config.store)
        .await
        .map_err(|e| CliError::Runtime(format!("store {}: {e}", redact_url(&config.store))))
}

fn marketo(config: &Config) -> Res<Arc<dyn MarketoApi>> {
    let ep = config.require_marketo()?;
    let client = salesync::marketo::MarketoClient::builder()
        .base_url(ep.url.clone())
        .client_id(ep.client_id.clone())
        .client_secret(ep.client_secret.clone())
        .allow_insecure_http(ep.allow_insecure_http)
        .rate_limit(config.marketo_rate_calls as usize, config.marketo_rate_window)
        .max_concurrent(config.marketo_max_concurrent as usize)
        .build()?;
    Ok(Arc::new(client))
}

fn salesforce(config: &Config) -> Res<Arc<dyn SalesforceApi>> {
    let ep = config.require_salesforce()?;
    let mut b = salesync::salesforce::SalesforceClient::builder()
        .login_url(ep.url.clone())
        .client_id(ep.client_id.clone())
        .client_secret(ep.client_secret.clone())
        .allow_insecure_http(ep.allow_insecure_http)
        .api_version(config.salesforce_api_version.clone());
    if let Some(t) = &config.salesforce_refresh_token {
        b = b.refresh_token(t.clone());
    }
    Ok(Arc::new(b.build()?))
}

/// The Marketo instance the store is bound to: the configured base URL's host.
///
/// Normalised so that one instance always gets one id: the host in lower case (Marketo's
/// `123-ABC-456.mktorest.com` and `123-abc-456.mktorest.com` are the same instance), the port only
/// when it is not the scheme's default, no credentials or path.
fn instance_id(config: &Config) -> Res<String> {
    let ep = config.require_marketo()?;
    instance_id_of(&ep.url)
}

fn instance_id_of(base_url: &str) -> Res<String> {
    let url = url::Url::parse(base_url)
        .map_err(|e| CliError::Config(format!("SALESYNC_MARKETO_URL: not a URL ({e}): {}", redact_url(base_url))))?;
    let host = url
        .host_str()
        .ok_or_else(|| CliError::Config(format!("SALESYNC_MARKETO_URL: no host in {}", redact_url(base_url))))?
        .to_ascii_lowercase();
    Ok(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

async fn dispatcher(config: &Config) -> Res<Dispatcher> {
    Dispatcher::builder()
        .marketo(marketo(config)?)
        .salesforce(salesforce(config)?)
        .store(store(config).await?)
        .settings(DeliverySettings::default())
        .instance_id(instance_id(config)?)
        .build()
        .map_err(|e| CliError::Runtime(e.to_string()))
}

/// The engine's settings from the configuration.
fn engine_settings(config: &Config) -> Res<EngineSettings> {
    let settings = EngineSettings {
        instance_id: instance_id(config)?,
        poll_interval: config.poll_interval,
        initial_mode: match config.initial_mode {
            InitialModeSetting::Auto => InitialMode::Auto,
            InitialModeSetting::Bulk => InitialMode::Bulk,
            InitialModeSetting::Rest => InitialMode::Rest,
        },
        // A waited-for export is polled after 1, 2, 4, 5, 5 … s: at most 12 of the 300 calls a
        // minute allows, and a finished job is seen within 5 s.
        export_poll: Duration::from_secs(1),
        export_poll_max: Duration::from_secs(5),
        rest_reads_in_flight: config.rest_reads_in_flight,
        leader_lease_ttl: config.lease_ttl,
        leader_poll: (config.lease_ttl / 4).min(Duration::from_secs(5)),
        reconcile_every: config.reconcile_every,
        ..EngineSettings::default()
    };
    Ok(match &config.worker_id {
        Some(worker_id) => EngineSettings { worker_id: worker_id.clone(), ..settings },
        None => settings,
    })
}

/// An engine on the configured connectors and store (for the one-shot commands).
async fn engine(config: &Config) -> Res<SyncEngine> {
    SyncEngine::builder()
        .marketo(marketo(config)?)
        .salesforce(salesforce(config)?)
        .store(store(config).await?)
        .settings(engine_settings(config)?)
        .build()
        .map_err(|e| CliError::Runtime(e.to_string()))
}

async fn rebuild(config: &Config, discard: bool) -> Res<()> {
    let engine = engine(config).await?;
    let rt = |e: salesync::engine::Error| CliError::Runtime(e.to_string());
    if discard {
        let since = engine.rebuild_started_at().await.map_err(rt)?;
        match (engine.discard_rebuild().await.map_err(rt)?, since) {
            (true, Some(at)) => println!("rebuild: discarded the rebuild started at {}", at.to_rfc3339()),
            _ => println!("rebuild: none in progress"),
        }
        return Ok(());
    }
    if let Some(at) = engine.rebuild_started_at().await.map_err(rt)? {
        println!("rebuild: resuming the rebuild started at {}", at.to_rfc3339());
    }
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        c2.cancel();
    });
    let progress = tokio::spawn(show_progress(engine.subscribe()));
    let result = engine.rebuild_with(&cancel).await;
    progress.abort();
    match result {
        Ok(report) => {
            print_sync_report(&report);
            Ok(())
        }
        Err(salesync::engine::Error::Cancelled) => {
            println!(
                "rebuild: interrupted; the mirror is as it was. Run `salesync rebuild` to resume, or `salesync rebuild --discard`"
            );
            Ok(())
        }
        Err(e) => Err(rt(e)),
    }
}

async fn resync(config: &Config, person: i64) -> Res<()> {
    let engine = engine(config).await?;
    let mut changes = engine.subscribe_changes();
    let report = engine.resync_person(person).await.map_err(|e| CliError::Runtime(e.to_string()))?;
    match changes.try_recv() {
        Ok(salesync::engine::MirrorChange::Inserted { id }) => println!("resync: person {id} inserted"),
        Ok(salesync::engine::MirrorChange::Updated { id, changed }) => {
            let names: Vec<&str> = changed.iter().map(|f| f.rest_name()).collect();
            println!("resync: person {id} updated ({})", names.join(", "));
        }
        Ok(salesync::engine::MirrorChange::Removed { id, reason }) => {
            println!("resync: person {id} removed ({})", reason.label())
        }
        _ if report.skipped_unqualified > 0 => println!("resync: person {person} does not qualify; not in the mirror"),
        _ if report.unchanged > 0 => println!("resync: person {person} is right already"),
        _ if report.record_errors.is_empty() => {
            println!("resync: person {person} is neither in Marketo nor in the mirror")
        }
        _ => {}
    }
    for e in &report.record_errors {
        println!("  record error: {e}");
    }
    Ok(())
}

async fn sync(config: &Config, once: bool) -> Res<()> {
    let store = store(config).await?;
    let (mk, sf) = (marketo(config)?, salesforce(config)?);
    let settings = engine_settings(config)?;
    let delivery = DeliverySettings {
        // One name for this process as a worker: the pull lease's holder and the outbox claims'.
        worker_id: settings.worker_id.clone(),
        lease: config.lease_ttl,
        poll_interval: config.poll_interval.min(DeliverySettings::default().poll_interval),
        ..DeliverySettings::default()
    };
    let engine = SyncEngine::builder()
        .marketo(mk.clone())
        .salesforce(sf.clone())
        .store(store.clone())
        .settings(settings)
        .build()
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    let dispatcher = Dispatcher::builder()
        .marketo(mk)
        .salesforce(sf)
        .store(store)
        .settings(delivery)
        .instance_id(instance_id(config)?)
        .build()
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    let progress = tokio::spawn(show_progress(engine.subscribe()));
    if once {
        // Another process leading the Marketo pull is not a failure: this one still delivers.
        let report = match engine.sync_once().await {
            Ok(report) => Some(report),
            Err(e @ salesync::engine::Error::NotLeader { .. }) => {
                println!("sync: skipped ({e})");
                None
            }
            Err(e) => return Err(CliError::Runtime(e.to_string())),
        };
        let delivered = dispatcher.deliver_once().await.map_err(|e| CliError::Runtime(e.to_string()))?;
        progress.abort();
        if let Some(report) = report {
            print_sync_report(&report);
        }
        print_delivery_report(&delivered);
        Ok(())
    } else {
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            c2.cancel();
        });
        let (a, ()) = tokio::join!(engine.run(cancel.clone()), dispatcher.run(cancel.clone()));
        progress.abort();
        a.map_err(|e| CliError::Runtime(e.to_string()))
    }
}

/// Waits for Ctrl-C, or SIGTERM on Unix (a container stop): both shut down cleanly, releasing
/// the leader lease.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_sync_report(report: &salesync::engine::SyncReport) {
    {
        println!(
            "sync: {} inserted, {} updated, {} unchanged, {} removed, {} unqualified skipped, {} record errors, {} pages, {} Marketo + {} Salesforce calls in {:.1}s{}",
            report.inserted,
            report.updated,
            report.unchanged,
            report.removed.total(),
            report.skipped_unqualified,
            report.record_errors.len(),
            report.pages,
            report.api_calls.marketo,
            report.api_calls.salesforce,
            report.duration.as_secs_f64(),
            report.initial_path.map(|p| format!(" (initial sync via {p:?})")).unwrap_or_default(),
        );
        if report.reconciled {
            let d = &report.drift;
            let stale: Vec<String> = d.stale.iter().map(|(f, n)| format!("{n} {f}")).collect();
            println!(
                "  reconciled: {} missing, {} extra, stale fields: {}",
                d.missing,
                d.extra,
                if stale.is_empty() { "none".to_string() } else { stale.join(", ") }
            );
        }
        if let Some(r) = &report.rebuild {
            match (r.promoted, r.requested_at) {
                (true, _) => println!(
                    "  rebuild: done; the shadow copy replaced the mirror ({} inserted, {} updated, {} removed)",
                    r.inserted, r.updated, r.removed
                ),
                (false, Some(at)) => println!(
                    "  rebuild: in progress since {} ({} people written to the shadow copy in this pass)",
                    at.to_rfc3339(),
                    r.shadow_written
                ),
                (false, None) => {}
            }
        }
        if let Some(reason) = &report.initial_path_reason {
            println!("  initial path: {reason}");
        }
        if let Some(b) = &report.rate_budget {
            println!(
                "  Marketo share: {}/{} calls per {:.0} s, {}/{} in flight; of {} calls sent, {} answered 606 and {} answered 615 ({} cuts)",
                b.calls_per_window,
                b.ceiling,
                b.window_ms as f64 / 1000.0,
                b.in_flight_limit,
                b.in_flight_ceiling,
                b.calls,
                b.rate_limited,
                b.concurrency_limited,
                b.decreases,
            );
        }
        for e in report.record_errors.iter().take(10) {
            println!("  record error: {e}");
        }
    }
}

fn print_delivery_report(delivered: &salesync::delivery::DeliveryReport) {
    {
        let (m, f) = (&delivered.marketo, &delivered.salesforce);
        println!(
            "delivery: {} to Marketo, {} to Salesforce ({} retrying, {} parked, {} skipped){}",
            m.delivered,
            f.delivered,
            m.retried + f.retried,
            m.parked + f.parked,
            m.skipped + f.skipped,
            if delivered.errors.is_empty() {
                String::new()
            } else {
                format!("; errors: {}", delivered.errors.join("; "))
            }
        );
    }
}

/// Draws progress from engine events: a spinner with running counts on a terminal, otherwise a
/// plain line per phase change and at most one progress line per second.
async fn show_progress(mut events: tokio::sync::broadcast::Receiver<SyncEvent>) {
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    let (mut ins, mut upd, mut rem) = (0u64, 0u64, 0u64);
    let mut last_line = std::time::Instant::now();
    loop {
        match events.recv().await {
            Ok(SyncEvent::PageApplied { counts, phase }) => {
                ins += counts.inserted;
                upd += counts.updated;
                rem += counts.removed;
                let msg = format!("{phase:?}: {ins} inserted, {upd} updated, {rem} removed so far");
                match &bar {
                    Some(b) => b.set_message(msg),
                    None if last_line.elapsed() >= Duration::from_secs(1) => {
                        last_line = std::time::Instant::now();
                        eprintln!("{msg}");
                    }
                    None => {}
                }
            }
            Ok(SyncEvent::PhaseChanged { phase }) => match &bar {
                Some(b) => b.set_message(format!("{phase:?}")),
                None => eprintln!("phase: {phase:?}"),
            },
            Ok(SyncEvent::LeaderAcquired { holder }) => match &bar {
                Some(b) => b.set_message(format!("leading the Marketo pull as {holder}")),
                None => eprintln!("leader: acquired as {holder}"),
            },
            Ok(SyncEvent::LeaderLost { holder, reason }) => match &bar {
                Some(b) => b.set_message(format!("not leading the Marketo pull ({reason})")),
                None => eprintln!("leader: lost as {holder} ({reason})"),
            },
            Ok(SyncEvent::Backoff { reason, delay }) => match &bar {
                Some(b) => b.set_message(format!("waiting {delay:?}: {reason}")),
                None => eprintln!("waiting {delay:?}: {reason}"),
            },
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

async fn people(config: &Config, email: Option<String>, owner: Option<String>, format: crate::Format) -> Res<()> {
    let store = store(config).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let io = |e: std::io::Error| CliError::Output(e);
    output::header(&mut out, format).map_err(io)?;
    if let Some(email) = email {
        let people = store.people_by_email(&email).await?;
        return output::write_people(&mut out, &people, format).map_err(io);
    }
    let owner = match owner {
        Some(o) => Some(SalesforceId::parse(&o).map_err(|e| CliError::Config(format!("--owner: {e}")))?),
        None => None,
    };
    let mut pages = store.people_pages(owner.as_ref(), PEOPLE_PAGE);
    while let Some(page) = pages.next_page().await? {
        output::write_people(&mut out, &page, format).map_err(io)?;
    }
    Ok(())
}

async fn record_activity(config: &Config, args: RecordArgs) -> Res<()> {
    let kind = SalesActivityKind::from_slug(&args.kind).ok_or_else(|| {
        CliError::Config(format!(
            "--kind {:?} is not one of {}",
            args.kind,
            SalesActivityKind::ALL.iter().map(|k| k.slug()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let occurred_at: DateTime<Utc> = match &args.at {
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map_err(|e| CliError::Config(format!("--at {t:?}: {e}")))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let call = match (&args.call_status, kind) {
        (Some(s), _) => Some(call_details(s, args.duration_secs)?),
        (None, SalesActivityKind::SalesCall) => Some(call_details("completed", args.duration_secs)?),
        (None, _) => None,
    };
    let activity = SalesActivity {
        id: String::new(),
        marketo_id: args.person,
        kind,
        occurred_at,
        actor_email: args.sender,
        actor_salesforce_user: None,
        subject: args.subject,
        link: args.link,
        template: None,
        campaign: args.campaign.map(|name| CampaignRef { name: Some(name), ..CampaignRef::default() }),
        call,
        bounce_details: None,
        body: None,
        sales_person_id: None,
    };
    let d = dispatcher(config).await?;
    let r = d.record_activity(activity).await.map_err(|e| CliError::Runtime(e.to_string()))?;
    println!("{}", r.id);
    Ok(())
}

fn call_details(status: &str, duration: Option<u32>) -> Res<CallDetails> {
    let status = match status {
        "completed" => CallStatus::Completed,
        "no-answer" | "no answer" => CallStatus::NoAnswer,
        "cancelled" => CallStatus::Cancelled,
        "failed" => CallStatus::Failed,
        other => {
            return Err(CliError::Config(format!(
                "--call-status {other:?} is not one of completed, no-answer, cancelled, failed"
            )));
        }
    };
    Ok(CallDetails {
        status,
        duration_secs: duration,
        phone_number: None,
        recording_url: None,
        answered_by: None,
        outcome: None,
        reason: None,
    })
}

async fn reminder(config: &Config, cmd: ReminderCommand) -> Res<()> {
    let d = dispatcher(config).await?;
    let rt = |e: salesync::delivery::Error| CliError::Runtime(e.to_string());
    let r = match cmd {
        ReminderCommand::Create { person, subject, due, high, details } => {
            let due_date = match due {
                Some(s) => Some(
                    NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                        .map_err(|e| CliError::Config(format!("--due {s:?}: {e}")))?,
                ),
                None => None,
            };
            d.create_reminder(NewReminder {
                id: None,
                marketo_id: person,
                subject,
                priority: if high { ReminderPriority::High } else { ReminderPriority::Normal },
                due_date,
                details,
            })
            .await
            .map_err(rt)?
        }
        ReminderCommand::Complete { id } => d.complete_reminder(&id).await.map_err(rt)?,
        ReminderCommand::Reopen { id } => d.reopen_reminder(&id).await.map_err(rt)?,
        ReminderCommand::Delete { id } => d.delete_reminder(&id).await.map_err(rt)?,
    };
    println!("{}", r.id);
    Ok(())
}

async fn status(config: &Config) -> Res<()> {
    let store = store(config).await?;
    println!("store: {}", redact_url(&config.store));
    println!("people in mirror: {}", store.count_people().await?);
    // The rebuild's checkpoint lives among the shadow's, not the live mirror's.
    for stream in StreamId::ALL.into_iter().filter(|s| *s != StreamId::Rebuild) {
        match store.checkpoint(stream).await? {
            Some(cp) => println!("checkpoint {}: {} (at {})", stream.as_str(), cp.position, cp.updated_at.to_rfc3339()),
            None => println!("checkpoint {}: none", stream.as_str()),
        }
    }
    if let Some(shadow) = store.shadow()
        && let Some(cp) = shadow.shadow_checkpoint(StreamId::Rebuild).await?
    {
        println!("rebuild: in progress ({}, at {})", cp.position, cp.updated_at.to_rfc3339());
        for stream in [StreamId::InitialSync, StreamId::LeadChanges] {
            if let Some(cp) = shadow.shadow_checkpoint(stream).await? {
                println!("  shadow checkpoint {}: {}", stream.as_str(), cp.position);
            }
        }
    }
    let c = store.outbox_counts().await?;
    println!(
        "outbox: {} pending, {} in flight, {} delivered, {} parked, {} skipped",
        c.pending, c.in_flight, c.delivered, c.parked, c.skipped
    );
    for item in store.outbox_items(OutboxState::Parked, 10).await? {
        println!(
            "  parked #{} ({:?}, {} attempts): {}",
            item.id,
            item.target,
            item.attempts,
            item.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

async fn doctor(config: &Config) -> Res<()> {
    let mut failed = 0;
    let mut check = |name: &str, r: Result<String, String>| match r {
        Ok(detail) => println!("ok    {name}: {detail}"),
        Err(e) => {
            failed += 1;
            println!("FAIL  {name}: {e}");
        }
    };
    check("configuration", Ok(format!("store {}", redact_url(&config.store))));
    match store(config).await {
        Ok(s) => {
            check("store", s.count_people().await.map(|n| format!("reachable, {n} people")).map_err(|e| e.to_string()))
        }
        Err(e) => check("store", Err(e.to_string())),
    }
    match marketo(config) {
        Ok(m) => {
            match m.lead_schema().await {
                Ok(schema) => {
                    check("Marketo credentials", Ok("token issued, lead describe readable".into()));
                    for f in ["linkedInProfileURL", "sfdcOpptyId"] {
                        let have = schema.has(f);
                        check(
                            &format!("Marketo field {f}"),
                            Ok(if have {
                                "available".into()
                            } else {
                                "not on this instance (left empty / filled from Salesforce)".into()
                            }),
                        );
                    }
                }
                Err(e) => check("Marketo credentials", Err(e.to_string())),
            }
            match m.activity_types().await {
                Ok(types) => {
                    let wanted = salesync::core::outbound::custom_activity_types();
                    let have = wanted
                        .iter()
                        .filter(|w| types.iter().any(|t| t.api_name.as_deref() == Some(w.api_name.as_str())))
                        .count();
                    check(
                        "Marketo custom activity types",
                        Ok(format!("{have} of {} provisioned (sync provisions the rest)", wanted.len())),
                    );
                }
                Err(e) => check("Marketo activity types", Err(e.to_string())),
            }
        }
        Err(e) => check("Marketo configuration", Err(e.to_string())),
    }
    match salesforce(config) {
        Ok(s) => check(
            "Salesforce credentials",
            s.task_type_values()
                .await
                .map(|v| format!("session ok, Task types: {}", v.join(", ")))
                .map_err(|e| e.to_string()),
        ),
        Err(e) => check("Salesforce configuration", Err(e.to_string())),
    }
    if failed > 0 { Err(CliError::Runtime(format!("doctor: {failed} check(s) failed"))) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_marketo_instance_has_one_id_however_its_url_is_written() {
        let id = |u: &str| instance_id_of(u).unwrap();
        assert_eq!(id("https://123-ABC-456.mktorest.com"), "123-abc-456.mktorest.com");
        assert_eq!(id("https://123-abc-456.mktorest.com:443/"), "123-abc-456.mktorest.com");
        assert_eq!(id("https://user:pw@123-abc-456.mktorest.com/rest"), "123-abc-456.mktorest.com");
        assert_eq!(id("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_ne!(id("http://127.0.0.1:8080"), id("http://127.0.0.1:8081"));
        assert!(matches!(instance_id_of("not a url"), Err(CliError::Config(_))));
    }
}
