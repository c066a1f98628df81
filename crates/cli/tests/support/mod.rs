//! Shared fixtures of the process-level tests (`crash.rs`, `multi_process.rs`): both emulators
//! in-process, `salesync sync` children on one store, outbound items recorded through the
//! library, the oracle computed from the Marketo emulator's own data, and the exactly-once and
//! rate-limit checks.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use salesync::core::activity::{
    AdminSettings, CallDetails, CallStatus, ReminderPriority, SalesActivity, SalesActivityKind,
};
use salesync::core::mapping::{LEAD_FIELDS, LeadField};
use salesync::core::ports::store::{OutboxPayload, OutboxState, Store, Target};
use salesync::core::{person::Person, sfid::SalesforceId};
use salesync::delivery::{DeliverySettings, Dispatcher, NewReminder};
use salesync::emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoLimits};
use salesync::emulator::salesforce::{SalesforceConfig, SalesforceEmulator};
use salesync::emulator::seed::SeedWorld;
use serde_json::{Map, Value, json};

/// The Salesforce Task field holding salesync's activity / reminder id.
pub const EXT: &str = "Salesync_Activity_Id__c";

/// Paths only the engine's Marketo pull calls (delivery never reads leads or lead changes).
pub const PULL_PATHS: [&str; 4] = [
    "/rest/v1/leads.json",
    "/rest/v1/activities/leadchanges.json",
    "/rest/v1/activities/deletedleads.json",
    "/bulk/v1/leads/export",
];

/// True for a call of the Marketo pull.
pub fn is_pull(path: &str) -> bool {
    PULL_PATHS.iter().any(|p| path.starts_with(p))
}

/// A deterministic generator (SplitMix64) for seeded kill points and choices.
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Both emulators seeded with one world, with scaled-down Marketo rate limits.
pub struct World {
    pub marketo: MarketoEmulator,
    pub salesforce: SalesforceEmulator,
    pub seed: SeedWorld,
    pub limits: MarketoLimits,
    pub clients: Vec<(String, String)>,
    /// Opportunities given in Salesforce only by [`mutate`](Self::mutate): (Marketo id, contact
    /// id, opportunity id), checked by [`mirror_diff`](Self::mirror_diff) while the person is
    /// still that contact.
    pub salesforce_only: std::sync::Mutex<Vec<(i64, String, String)>>,
}

impl World {
    /// `people` seeded with `seed`; Marketo allows `calls_per_window` counted calls per one-second
    /// window and 10 in flight; `extra_clients` more API clients (one per process).
    pub async fn start(people: usize, seed: u64, calls_per_window: u32, extra_clients: &[(&str, &str)]) -> World {
        let limits = MarketoLimits { calls_per_window, window: Duration::from_secs(1), ..MarketoLimits::default() };
        let config = MarketoConfig {
            limits: limits.clone(),
            additional_clients: extra_clients.iter().map(|(i, s)| (i.to_string(), s.to_string())).collect(),
            ..MarketoConfig::default()
        };
        let marketo = MarketoEmulator::start(config).await.unwrap();
        let salesforce = SalesforceEmulator::start(SalesforceConfig::default()).await.unwrap();
        let seed = salesync::emulator::seed::generate(people, seed);
        marketo.seed_world(&seed);
        salesforce.seed_world(&seed);
        let mut clients = vec![(marketo.client_id().to_string(), marketo.client_secret().to_string())];
        clients.extend(extra_clients.iter().map(|(i, s)| (i.to_string(), s.to_string())));
        World { marketo, salesforce, seed, limits, clients, salesforce_only: Default::default() }
    }

    /// Requests both emulators have seen so far (the progress meter kill points count).
    pub fn calls(&self) -> usize {
        self.marketo.call_log().len() + self.salesforce.call_log().len()
    }

    /// The `SALESYNC_*` variables of a `salesync sync` child: this world, `store_url`, the
    /// Marketo API client `client` (index into `clients`), `rate_calls` per one-second window,
    /// fast polls and short leases.
    pub fn env(&self, store_url: &str, client: usize, rate_calls: u32, holder: &str) -> Vec<(String, String)> {
        let (id, secret) = &self.clients[client];
        [
            ("SALESYNC_STORE", store_url.to_string()),
            ("SALESYNC_MARKETO_URL", self.marketo.base_url()),
            ("SALESYNC_MARKETO_CLIENT_ID", id.clone()),
            ("SALESYNC_MARKETO_CLIENT_SECRET", secret.clone()),
            ("SALESYNC_MARKETO_RATE_CALLS", rate_calls.to_string()),
            ("SALESYNC_MARKETO_RATE_WINDOW_SECS", "1".into()),
            ("SALESYNC_MARKETO_MAX_CONCURRENT", "4".into()),
            ("SALESYNC_SALESFORCE_URL", self.salesforce.base_url()),
            ("SALESYNC_SALESFORCE_CLIENT_ID", self.salesforce.client_id().to_string()),
            ("SALESYNC_SALESFORCE_CLIENT_SECRET", self.salesforce.client_secret().to_string()),
            ("SALESYNC_POLL_INTERVAL_MS", "150".into()),
            ("SALESYNC_WORKER_ID", holder.to_string()),
            ("SALESYNC_LOG", "warn,salesync_engine=info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// A dispatcher on `store` for recording outbound items from the test (its connectors point
    /// at the emulators but recording never calls them).
    pub fn dispatcher(&self, store: Arc<dyn Store>) -> Dispatcher {
        let marketo = salesync::marketo::MarketoClient::builder()
            .base_url(self.marketo.base_url())
            .client_id(self.marketo.client_id())
            .client_secret(self.marketo.client_secret())
            .build()
            .unwrap();
        let salesforce = salesync::salesforce::SalesforceClient::builder()
            .login_url(self.salesforce.base_url())
            .client_id(self.salesforce.client_id())
            .client_secret(self.salesforce.client_secret())
            .build()
            .unwrap();
        Dispatcher::builder()
            .marketo(Arc::new(marketo))
            .salesforce(Arc::new(salesforce))
            .store(store)
            .settings(DeliverySettings::default())
            .build()
            .unwrap()
    }

    /// What the mirror must hold: every Marketo lead that is a Salesforce Lead or Contact with a
    /// non-empty owner, with its synced fields as text (by REST name).
    pub fn oracle(&self) -> BTreeMap<i64, BTreeMap<&'static str, Option<String>>> {
        let mut out = BTreeMap::new();
        for lead in self.marketo.leads() {
            let text = |k: &str| match lead.get(k) {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let ty = text("sfdcType");
            let owner = text("sfdcLeadOwnerId");
            if !matches!(ty.as_deref(), Some("Lead") | Some("Contact")) || owner.is_none() {
                continue;
            }
            let id = lead.get("id").and_then(Value::as_i64).unwrap();
            let mut fields = BTreeMap::new();
            for spec in LEAD_FIELDS.iter() {
                if matches!(spec.field, LeadField::UpdatedAt | LeadField::SalesforceOpportunityId) {
                    continue;
                }
                let v = text(spec.rest_name).map(|v| match SalesforceId::parse(&v) {
                    Ok(sf) if spec.rest_name.starts_with("sfdc") && spec.rest_name != "sfdcType" => {
                        sf.as_str().to_string()
                    }
                    _ => v,
                });
                fields.insert(spec.rest_name, v);
            }
            out.insert(id, fields);
        }
        out
    }

    /// Differences between the mirror and the oracle (empty when they agree), at most 10.
    pub async fn mirror_diff(&self, store: &dyn Store) -> Vec<String> {
        let oracle = self.oracle();
        let mirror = mirror(store).await;
        let mut diff = Vec::new();
        diff.extend(oracle.keys().filter(|k| !mirror.contains_key(k)).map(|k| format!("missing {k}")));
        diff.extend(mirror.keys().filter(|k| !oracle.contains_key(k)).map(|k| format!("extra {k}")));
        for (id, fields) in &oracle {
            let Some(p) = mirror.get(id) else { continue };
            for (rest, want) in fields {
                let f = LeadField::from_rest_name(rest).unwrap();
                if &p.field_text(f) != want {
                    diff.push(format!("lead {id} field {rest}: {:?} != {want:?}", p.field_text(f)));
                }
            }
        }
        for (id, contact, opp) in self.salesforce_only.lock().unwrap().iter() {
            let still = oracle.get(id).is_some_and(|f| f.get("sfdcContactId") == Some(&Some(contact.clone())));
            let got = mirror.get(id).and_then(|p| p.salesforce_opportunity_id()).map(|o| o.as_str().to_string());
            if still && got.as_deref() != Some(opp.as_str()) {
                diff.push(format!("lead {id} opportunity (given in Salesforce only): {got:?} != {opp}"));
            }
        }
        diff.truncate(10);
        diff
    }

    /// Changes every kind of thing about a few people in Marketo (seeded): renames, a
    /// disqualification, a qualification, a deletion, a merge, a conversion, a new person; and
    /// in Salesforce only, a new open opportunity on a contact that had none.
    pub fn mutate(&self, rng: &mut Rng, round: u32) {
        let without: Vec<(i64, String)> = self
            .seed
            .people
            .iter()
            .filter(|p| p.has_owner() && p.sf_opportunity_id.is_none() && self.marketo.lead(p.marketo_id).is_some())
            .filter_map(|p| p.sf_contact_id.clone().map(|c| (p.marketo_id, c)))
            .filter(|(id, _)| self.salesforce_only.lock().unwrap().iter().all(|(o, _, _)| o != id))
            .collect();
        if !without.is_empty() {
            // Picked by round, not from `rng`: the other tests' seeded choices stay as they were.
            let (id, contact) = without[round as usize % without.len()].clone();
            let opp = self
                .salesforce
                .insert(
                    "Opportunity",
                    obj(json!({"Name": format!("Crash deal {round}"), "StageName": "Prospecting", "CloseDate": "2027-06-01"})),
                )
                .unwrap();
            self.salesforce
                .insert(
                    "OpportunityContactRole",
                    obj(json!({"OpportunityId": opp, "ContactId": contact, "IsPrimary": true})),
                )
                .unwrap();
            self.salesforce_only.lock().unwrap().push((
                id,
                SalesforceId::parse(&contact).unwrap().as_str().to_string(),
                opp,
            ));
        }
        let leads = self.marketo.leads();
        let qualified: Vec<i64> = self.oracle().keys().copied().collect();
        let pick = |rng: &mut Rng, from: &[i64]| from[rng.range(0, from.len() as u64 - 1) as usize];
        let owner = self.seed.users[0].id.clone();
        for _ in 0..4 {
            let id = pick(rng, &qualified);
            self.marketo.update_lead(id, obj(json!({"firstName": format!("Renamed {round}-{id}")})));
        }
        self.marketo.update_lead(pick(rng, &qualified), obj(json!({"sfdcLeadOwnerId": null})));
        let unqualified: Vec<i64> = leads
            .iter()
            .filter_map(|l| l.get("id").and_then(Value::as_i64))
            .filter(|id| !qualified.contains(id))
            .collect();
        if !unqualified.is_empty() {
            // Marketo learns of a new Salesforce lead: it exists in Salesforce too.
            let id = pick(rng, &unqualified);
            let lead = self
                .salesforce
                .insert(
                    "Lead",
                    obj(json!({"LastName": format!("Qualified {round}"), "Company": "Acme", "OwnerId": owner})),
                )
                .unwrap();
            self.marketo
                .update_lead(id, obj(json!({"sfdcType": "Lead", "sfdcLeadId": lead, "sfdcLeadOwnerId": owner})));
        }
        self.marketo.delete_lead(pick(rng, &qualified));
        let (winner, loser) = (pick(rng, &qualified), pick(rng, &qualified));
        if winner != loser && self.marketo.lead(winner).is_some() && self.marketo.lead(loser).is_some() {
            self.marketo.merge_leads(winner, &[loser]);
        }
        let email = format!("new{round}@example.com");
        let contact = self
            .salesforce
            .insert("Contact", obj(json!({"LastName": format!("Person {round}"), "Email": email, "OwnerId": owner})))
            .unwrap();
        self.marketo.create_lead(obj(json!({
            "firstName": "New", "lastName": format!("Person {round}"), "email": email,
            "sfdcType": "Contact", "sfdcContactId": contact, "sfdcLeadOwnerId": owner
        })));
    }
}

pub fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// Every person of a store, by Marketo id.
pub async fn mirror(store: &dyn Store) -> BTreeMap<i64, Person> {
    let mut out = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store.list_people(after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.marketo_id);
        for p in page {
            out.insert(p.marketo_id, p);
        }
    }
    out
}

/// A store shared by the test and its children.
pub struct SharedStore {
    /// What the children are given as `SALESYNC_STORE`.
    pub url: String,
    /// The test's own handle.
    pub store: Arc<dyn Store>,
    /// Working directory of the children (logs, SQLite file).
    pub dir: tempfile::TempDir,
    pg: Option<(sqlx::PgPool, String)>,
}

impl SharedStore {
    /// A SQLite file in a fresh directory.
    pub async fn sqlite() -> SharedStore {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("salesync.db").display());
        let store = salesync::store::open(&url).await.unwrap();
        sync_reminders(store.as_ref()).await;
        SharedStore { url, store, dir, pg: None }
    }

    /// A fresh schema of the test PostgreSQL database (`SALESYNC_TEST_POSTGRES_URL`, default
    /// `postgres://postgres@127.0.0.1:5432/test`); children reach it through `search_path`.
    pub async fn postgres(tag: &str) -> SharedStore {
        let base = std::env::var("SALESYNC_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let schema = format!("cli_{tag}_{}_{}", std::process::id(), nanos % 1_000_000_000);
        let store = salesync::store::PostgresStore::open_in_schema(&base, &schema).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {base} is needed: {e}. Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
            )
        });
        let pool = store.pool().clone();
        sync_reminders(&store).await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        SharedStore { url, store: Arc::new(store), dir: tempfile::tempdir().unwrap(), pg: Some((pool, schema)) }
    }

    /// Drops a PostgreSQL schema (call at the end, after every child is gone).
    pub async fn cleanup(&self) {
        self.dropper().run().await;
    }

    /// What drops the PostgreSQL schema, kept apart so a failed test can still drop it.
    pub fn dropper(&self) -> SchemaDropper {
        SchemaDropper(self.pg.clone())
    }
}

/// Drops a test's PostgreSQL schema (nothing for SQLite).
pub struct SchemaDropper(Option<(sqlx::PgPool, String)>);

impl SchemaDropper {
    /// Drops it.
    pub async fn run(&self) {
        if let Some((pool, schema)) = &self.0 {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(pool).await.unwrap();
        }
    }

    /// Runs `test` (a spawned task, so a panic is caught), drops the schema, then re-raises a
    /// panic.
    pub async fn around<F>(self, test: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let outcome = tokio::spawn(test).await;
        self.run().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// Turns reminder Task sync on (off by default), so reminders are outbound items too.
async fn sync_reminders(store: &dyn Store) {
    let admin = AdminSettings { reminder_task_sync: true, ..store.settings().await.unwrap() };
    store.put_settings(admin).await.unwrap();
}

/// A `salesync sync` child; SIGKILLed when dropped.
pub struct SyncChild {
    pub child: Child,
    pub name: String,
    pub err_log: PathBuf,
}

impl SyncChild {
    /// Starts `salesync sync [args]` in `dir` with exactly `env` (no inherited `SALESYNC_*`);
    /// stdout and stderr go to `<dir>/<name>.out|err`.
    pub fn spawn(dir: &Path, name: &str, env: &[(String, String)], args: &[&str]) -> SyncChild {
        let command: Vec<&str> = std::iter::once("sync").chain(args.iter().copied()).collect();
        Self::spawn_command(dir, name, env, &command)
    }

    /// Starts `salesync <command…>` like [`spawn`](Self::spawn).
    pub fn spawn_command(dir: &Path, name: &str, env: &[(String, String)], command: &[&str]) -> SyncChild {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_salesync"));
        cmd.current_dir(dir);
        for (k, _) in std::env::vars() {
            if k.starts_with("SALESYNC_") {
                cmd.env_remove(k);
            }
        }
        let out = std::fs::File::create(dir.join(format!("{name}.out"))).unwrap();
        let err_log = dir.join(format!("{name}.err"));
        let err = std::fs::File::create(&err_log).unwrap();
        let child = cmd
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(command)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        SyncChild { child, name: name.to_string(), err_log }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM (a clean shutdown), then the exit code once it exits (within 10 s).
    pub async fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("{} did not stop on SIGTERM; stderr:\n{}", self.name, self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err_log).unwrap_or_default()
    }
}

impl Drop for SyncChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Outbound items recorded by the test.
#[derive(Debug, Default)]
pub struct Outbound {
    /// Activity ids.
    pub activities: Vec<String>,
    /// Reminder ids.
    pub reminders: Vec<String>,
    /// Unsubscribed people.
    pub unsubscribed: Vec<i64>,
}

/// Records `n` activities (emails and calls), and a few unsubscribes and reminders, for people
/// of the mirror picked with `rng`.
pub async fn record_round(
    world: &World,
    d: &Dispatcher,
    store: &dyn Store,
    rng: &mut Rng,
    n: usize,
    out: &mut Outbound,
) {
    // People of the mirror still in Marketo (an activity for a person deleted in Marketo but not
    // yet removed from the mirror is parked by design: "1004 Lead not found").
    let oracle = world.oracle();
    let people: Vec<i64> = mirror(store).await.keys().copied().filter(|id| oracle.contains_key(id)).collect();
    assert!(!people.is_empty(), "nobody in the mirror to record for");
    let pick = |rng: &mut Rng| people[rng.range(0, people.len() as u64 - 1) as usize];
    for i in 0..n {
        let call = i % 3 == 2;
        let activity = SalesActivity {
            id: String::new(),
            marketo_id: pick(rng),
            kind: if call { SalesActivityKind::SalesCall } else { SalesActivityKind::SendSalesEmail },
            occurred_at: chrono::Utc::now(),
            actor_email: Some("seller@example.com".into()),
            actor_salesforce_user: None,
            subject: Some(format!("Round item {i}")),
            link: None,
            template: None,
            campaign: None,
            call: call.then_some(CallDetails {
                status: CallStatus::Completed,
                duration_secs: Some(60),
                phone_number: None,
                recording_url: None,
                answered_by: None,
                outcome: None,
                reason: None,
            }),
            bounce_details: None,
            body: None,
            sales_person_id: None,
        };
        out.activities.push(d.record_activity(activity).await.unwrap().id);
    }
    for _ in 0..2 {
        let p = pick(rng);
        d.record_unsubscribe(p).await.unwrap();
        out.unsubscribed.push(p);
    }
    for i in 0..2 {
        let r = d
            .create_reminder(NewReminder {
                id: None,
                marketo_id: pick(rng),
                subject: format!("Follow up {i}"),
                priority: ReminderPriority::Normal,
                due_date: None,
                details: None,
            })
            .await
            .unwrap();
        out.reminders.push(r.id);
    }
}

/// Whether every outbox item reached a final state (nothing pending or in flight).
pub async fn outbox_drained(store: &dyn Store) -> bool {
    let c = store.outbox_counts().await.unwrap();
    c.pending == 0 && c.in_flight == 0
}

/// Every recorded item was delivered exactly once to each target it was meant for: one Marketo
/// custom activity per activity, one Salesforce Task per delivered activity and per reminder, no
/// stray ones, nothing parked, every unsubscribe pushed.
pub async fn assert_delivered_exactly_once(world: &World, store: &dyn Store, out: &Outbound) {
    let c = store.outbox_counts().await.unwrap();
    let parked: Vec<_> = store
        .outbox_items(OutboxState::Parked, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.key, i.attempts, i.last_error))
        .collect();
    assert_eq!((c.pending, c.in_flight, c.parked), (0, 0, 0), "outbox not drained: {c:?}, parked {parked:?}");
    let mut items = store.outbox_items(OutboxState::Delivered, 100_000).await.unwrap();
    let skipped = store.outbox_items(OutboxState::Skipped, 100_000).await.unwrap();

    let marketo = world.marketo.custom_activity_counts("salesyncActivityId");
    let mut tasks: HashMap<String, usize> = HashMap::new();
    for t in world.salesforce.records("Task") {
        if let Some(ext) = t.get(EXT).and_then(Value::as_str) {
            *tasks.entry(ext.to_string()).or_default() += 1;
        }
    }
    let dup_m: Vec<_> = marketo.iter().filter(|(_, n)| **n > 1).collect();
    let dup_s: Vec<_> = tasks.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup_m.is_empty(), "activities doubled in Marketo: {dup_m:?}");
    assert!(dup_s.is_empty(), "Tasks doubled in Salesforce: {dup_s:?}");

    let (mut want_m, mut want_s) = (Vec::new(), Vec::new());
    items.sort_by_key(|i| i.id);
    for item in &items {
        match (&item.payload, item.target) {
            (OutboxPayload::Activity { activity }, Target::Marketo) => want_m.push(activity.id.clone()),
            (OutboxPayload::Activity { activity }, Target::Salesforce) => want_s.push(activity.id.clone()),
            (OutboxPayload::Reminder { task }, Target::Salesforce) => want_s.push(task.id.clone()),
            _ => {}
        }
    }
    for id in &out.activities {
        assert!(want_m.contains(id), "activity {id} not delivered to Marketo");
        let to_sf = items.iter().chain(&skipped).any(|i| {
            i.target == Target::Salesforce
                && matches!(&i.payload, OutboxPayload::Activity { activity } if &activity.id == id)
        });
        assert!(to_sf, "activity {id} has no Salesforce outcome");
    }
    for id in &out.reminders {
        assert!(want_s.contains(id), "reminder {id} not delivered to Salesforce");
    }
    for id in &want_m {
        assert_eq!(marketo.get(id), Some(&1), "activity {id} in Marketo");
    }
    for id in &want_s {
        assert_eq!(tasks.get(id), Some(&1), "{id} in Salesforce");
    }
    assert_eq!(marketo.len(), want_m.len(), "stray Marketo activities");
    assert_eq!(tasks.len(), want_s.len(), "stray Salesforce Tasks");
    for item in &skipped {
        if let OutboxPayload::Activity { activity } = &item.payload {
            assert!(item.target != Target::Marketo, "activity {} skipped for Marketo", activity.id);
            assert!(!tasks.contains_key(&activity.id), "skipped activity {} has a Task", activity.id);
        }
    }
    // Unsubscribes: the person's Salesforce record opted out.
    let m = mirror(store).await;
    for id in &out.unsubscribed {
        let Some(p) = m.get(id) else { continue };
        let (object, sf) = match (&p.salesforce_contact_id, &p.salesforce_lead_id) {
            (Some(c), _) => ("Contact", c.as_str().to_string()),
            (None, Some(l)) => ("Lead", l.as_str().to_string()),
            _ => continue,
        };
        if let Some(rec) = world.salesforce.get(object, &sf) {
            assert_eq!(rec.get("HasOptedOutOfEmail"), Some(&json!(true)), "{object} {sf} of person {id}");
        }
    }
}

/// The Marketo rate limits were never exceeded: no call was refused for rate (606) or
/// concurrency (615), and no window held more counted calls than allowed.
pub fn assert_rate_limits_kept(world: &World) {
    let log = world.marketo.call_log();
    let refused: Vec<_> =
        log.iter().filter(|c| matches!(c.outcome.as_deref(), Some("606" | "615" | "607"))).take(5).collect();
    assert!(refused.is_empty(), "Marketo refused calls over its limits: {refused:?}");
    let max = world.marketo.max_calls_in_any_window();
    assert!(max <= world.limits.calls_per_window, "{max} calls in one window");
    let sf_limit = world.salesforce.config().daily_api_limit;
    assert!(world.salesforce.api_usage() <= sf_limit, "Salesforce daily API limit exceeded");
}

/// Polls `done` every 50 ms for up to `within`; panics with `what` and `detail()` on timeout.
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match done().await {
            Ok(()) => return,
            Err(detail) if Instant::now() > deadline => panic!("{what}: not within {within:?}: {detail}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
