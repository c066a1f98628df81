//! The PostgreSQL backend (`postgres://…`).
//!
//! A connection pool; mirror pages are upserted with `UNNEST` arrays (one statement per page),
//! outbox claims use `FOR UPDATE SKIP LOCKED`, leases an atomic `INSERT … ON CONFLICT … WHERE`.
//! [`PostgresStore::open_in_schema`] keeps all tables in one schema (created if missing), which
//! lets several salesync instances, or tests, share a database. The shadow copy of a rebuild
//! lives in `shadow_people` and `shadow_checkpoints` of the same schema; id lists of any length
//! are bound as one array.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use salesync_core::activity::{AdminSettings, ReminderTask, UnsubscribeState};
use salesync_core::mirror::RemovalReason;
use salesync_core::person::Person;
use salesync_core::ports::store::{
    ApplyCounts, Checkpoint, CheckpointStore, Finished, InboundBatch, InboundStore, InstanceBinding, LeaseStore,
    MirrorPage, MirrorStore, OutboxCounts, OutboxItem, OutboxState, OutboxStore, Promotion, Recording, ReminderStore,
    SettingsStore, ShadowStore, StreamId, Target, Tombstone,
};
use salesync_core::sfid::SalesforceId;
use salesync_core::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgConnection, PgPool, Postgres, Transaction};

use crate::codec::{self, lease_end, micros, reduce};
use crate::error::{self, instance_conflict, redact_url, scrub};
use crate::sql::{Dialect, Mirror, PEOPLE_COLS, PEOPLE_DATA_COLS, PEOPLE_ON_CONFLICT, Writes};

const BACKEND: &str = "postgres";
const POOL_SIZE: u32 = 8;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    schema: Option<String>,
}

/// Shows the schema and the pool's state only: the pool's connect options hold the password.
impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .field("closed", &self.pool.is_closed())
            .finish_non_exhaustive()
    }
}

fn db(context: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| error::sql::map(BACKEND, context, e)
}

const OUTBOX_COLS: &str = "id, key, target, payload::text, state, attempts, next_attempt_at, last_error, result, \
    lease_owner, lease_until, created_at, outcome_unknown";

const OUTBOX_COLS_O: &str = "o.id, o.key, o.target, o.payload::text, o.state, o.attempts, o.next_attempt_at, \
    o.last_error, o.result, o.lease_owner, o.lease_until, o.created_at, o.outcome_unknown";

const REMINDER_COLS: &str =
    "id, marketo_id, subject, status, priority, due_date, details, salesforce_task_id, deleted, updated_at";

impl Dialect for Postgres {
    const BACKEND: &'static str = BACKEND;
    type Time = DateTime<Utc>;
    type Day = NaiveDate;
    type Count = i32;

    fn time(v: DateTime<Utc>) -> Result<DateTime<Utc>> {
        Ok(v)
    }

    fn day(v: NaiveDate) -> Result<NaiveDate> {
        Ok(v)
    }

    fn count(v: i32) -> u32 {
        u32::try_from(v).unwrap_or(0)
    }
}

impl Writes for Postgres {
    const PUT_CHECKPOINT: &'static str = "INSERT INTO checkpoints (stream, position, updated_at) VALUES ($1, $2::jsonb, $3) \
         ON CONFLICT (stream) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at";
    const PUT_SHADOW_CHECKPOINT: &'static str = "INSERT INTO shadow_checkpoints (stream, position, updated_at) \
         VALUES ($1, $2::jsonb, $3) \
         ON CONFLICT (stream) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at";
    const PUT_REMINDER: &'static str = "INSERT INTO reminders (id, marketo_id, subject, status, priority, due_date, \
         details, salesforce_task_id, deleted, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET marketo_id = EXCLUDED.marketo_id, subject = EXCLUDED.subject, \
         status = EXCLUDED.status, priority = EXCLUDED.priority, due_date = EXCLUDED.due_date, \
         details = EXCLUDED.details, salesforce_task_id = EXCLUDED.salesforce_task_id, deleted = EXCLUDED.deleted, \
         updated_at = EXCLUDED.updated_at";
    const PUT_UNSUBSCRIBE: &'static str = "INSERT INTO unsubscribes (marketo_id, unsubscribed, origin, at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (marketo_id) DO UPDATE SET unsubscribed = EXCLUDED.unsubscribed, \
         origin = EXCLUDED.origin, at = EXCLUDED.at";
    const INSERT_OUTBOX: &'static str = "INSERT INTO outbox (key, target, payload, state, attempts, \
         next_attempt_at, created_at) VALUES ($1, $2, $3::jsonb, 'pending', 0, $4, $5) \
         ON CONFLICT (key) DO NOTHING RETURNING id";
    const OUTBOX_ID_BY_KEY: &'static str = "SELECT id FROM outbox WHERE key = $1";
    type TimeArg = DateTime<Utc>;
    type DayArg = Option<NaiveDate>;

    fn time_arg(t: DateTime<Utc>) -> DateTime<Utc> {
        micros(t)
    }

    fn day_arg(d: Option<NaiveDate>) -> Option<NaiveDate> {
        d
    }
}

fn opt_id(id: &Option<SalesforceId>) -> Option<&str> {
    id.as_ref().map(SalesforceId::as_str)
}

/// The statement inserting the `PEOPLE_COLS` rows `source` selects into the people table of
/// `mirror`, replacing existing rows; on the live mirror it clears their tombstones too.
fn upsert_sql(mirror: Mirror, source: &str) -> String {
    let insert = format!("INSERT INTO {} ({PEOPLE_COLS}) {source} {PEOPLE_ON_CONFLICT}", mirror.people());
    match mirror {
        Mirror::Live => format!(
            "WITH up AS ({insert} RETURNING marketo_id) DELETE FROM tombstones WHERE marketo_id IN (SELECT marketo_id FROM up)"
        ),
        Mirror::Shadow => insert,
    }
}

/// Inserts or replaces `people` in the people table of `mirror` in one statement (clearing their
/// tombstones when live).
async fn upsert_people(conn: &mut PgConnection, mirror: Mirror, people: &[Person]) -> Result<()> {
    let n = people.len();
    let mut ids = Vec::with_capacity(n);
    let mut first = Vec::with_capacity(n);
    let mut last = Vec::with_capacity(n);
    let mut contact = Vec::with_capacity(n);
    let mut lead = Vec::with_capacity(n);
    let mut account = Vec::with_capacity(n);
    let mut opp_source = Vec::with_capacity(n);
    let mut opp_id = Vec::with_capacity(n);
    let mut company = Vec::with_capacity(n);
    let mut title = Vec::with_capacity(n);
    let mut email = Vec::with_capacity(n);
    let mut phone = Vec::with_capacity(n);
    let mut linkedin = Vec::with_capacity(n);
    let mut source = Vec::with_capacity(n);
    let mut sf_type = Vec::with_capacity(n);
    let mut owner = Vec::with_capacity(n);
    let mut marketo_at = Vec::with_capacity(n);
    let mut mirror_at = Vec::with_capacity(n);
    for p in people {
        let (os, oid) = codec::opportunity_cols(&p.salesforce_opportunity);
        ids.push(p.marketo_id);
        first.push(p.first_name.as_deref());
        last.push(p.last_name.as_deref());
        contact.push(opt_id(&p.salesforce_contact_id));
        lead.push(opt_id(&p.salesforce_lead_id));
        account.push(opt_id(&p.salesforce_account_id));
        opp_source.push(os);
        opp_id.push(oid);
        company.push(p.company.as_deref());
        title.push(p.title.as_deref());
        email.push(p.email.as_deref());
        phone.push(p.phone.as_deref());
        linkedin.push(p.linkedin_url.as_deref());
        source.push(p.source.as_deref());
        sf_type.push(codec::sf_type_str(p.salesforce_type));
        owner.push(p.owner_id.as_str());
        marketo_at.push(p.marketo_updated_at);
        mirror_at.push(p.mirror_updated_at);
    }
    sqlx::query(&upsert_sql(
        mirror,
        "SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], \
         $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
         $13::text[], $14::text[], $15::text[], $16::text[], $17::timestamptz[], $18::timestamptz[])",
    ))
    .bind(ids)
    .bind(first)
    .bind(last)
    .bind(contact)
    .bind(lead)
    .bind(account)
    .bind(opp_source)
    .bind(opp_id)
    .bind(company)
    .bind(title)
    .bind(email)
    .bind(phone)
    .bind(linkedin)
    .bind(source)
    .bind(sf_type)
    .bind(owner)
    .bind(marketo_at)
    .bind(mirror_at)
    .execute(&mut *conn)
    .await
    .map_err(db("upserting people"))?;
    Ok(())
}

/// Deletes the people of `ids` from the people table of `mirror`; returns how many rows went.
async fn delete_people(conn: &mut PgConnection, mirror: Mirror, ids: &[i64]) -> Result<u64> {
    let sql = format!("DELETE FROM {} WHERE marketo_id = ANY($1)", mirror.people());
    let done = sqlx::query(&sql).bind(ids).execute(&mut *conn).await.map_err(db("removing people"))?;
    Ok(done.rows_affected())
}

/// Removes people from the live mirror, writing a tombstone for each (present or not); returns
/// how many live rows went.
async fn remove_people(conn: &mut PgConnection, removes: &[(i64, RemovalReason)], at: DateTime<Utc>) -> Result<u64> {
    let ids: Vec<i64> = removes.iter().map(|(id, _)| *id).collect();
    let reasons = codec::removal_reasons(BACKEND, removes)?;
    let removed = delete_people(conn, Mirror::Live, &ids).await?;
    sqlx::query(
        "INSERT INTO tombstones (marketo_id, reason, removed_at) \
         SELECT u.id, u.reason::jsonb, $3 FROM UNNEST($1::bigint[], $2::text[]) AS u(id, reason) \
         ON CONFLICT (marketo_id) DO UPDATE SET reason = EXCLUDED.reason, removed_at = EXCLUDED.removed_at",
    )
    .bind(&ids)
    .bind(reasons)
    .bind(micros(at))
    .execute(&mut *conn)
    .await
    .map_err(db("writing tombstones"))?;
    Ok(removed)
}

/// Deletes every shadow row and shadow checkpoint (inside the caller's transaction).
async fn clear_shadow_in(conn: &mut PgConnection) -> Result<()> {
    for table in [Mirror::Shadow.people(), Mirror::Shadow.checkpoints()] {
        sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *conn).await.map_err(db("clearing the shadow"))?;
    }
    Ok(())
}

/// True for a plain SQL identifier (letters, digits, underscores; not starting with a digit).
fn valid_schema_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

/// Parses a PostgreSQL store URL into connection options, without connecting.
pub(crate) fn options(url: &str) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).map_err(|e| Error::Config {
        key: "store url".into(),
        reason: format!("invalid PostgreSQL URL {}: {}", redact_url(url), scrub(e.to_string(), url)),
    })
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and migrates the
    /// default schema (the connection's `search_path`, normally `public`).
    pub async fn open(url: &str) -> Result<Self> {
        Self::connect(url, None).await
    }

    /// Like [`open`](Self::open), but keeps every table in `schema` (created if missing; a plain
    /// identifier of letters, digits and underscores). Every pooled connection gets
    /// `search_path = schema`.
    pub async fn open_in_schema(url: &str, schema: &str) -> Result<Self> {
        if !valid_schema_name(schema) {
            return Err(Error::Config {
                key: "store schema".into(),
                reason: format!(
                    "{schema:?} is not a plain PostgreSQL identifier (letters, digits, underscores; at most 63)"
                ),
            });
        }
        Self::connect(url, Some(schema.to_string())).await
    }

    /// The schema this store keeps its tables in, when opened with [`open_in_schema`](Self::open_in_schema).
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The connection pool (for hosts that want to inspect the tables).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn connect(url: &str, schema: Option<String>) -> Result<Self> {
        let redacted = redact_url(url);
        let opts = options(url)?;
        let unreachable = |e: sqlx::Error| {
            error::backend_msg(
                BACKEND,
                format!(
                    "cannot connect to PostgreSQL at {redacted}: {}; is the server running and the URL right?",
                    scrub(e.to_string(), url)
                ),
            )
        };
        let set_path = schema.as_ref().map(|s| format!("SET search_path TO \"{s}\""));
        if let Some(s) = &schema {
            // Create the schema once with a plain connection, before the pool sets search_path to it.
            let mut conn: PgConnection = sqlx::Connection::connect_with(&opts).await.map_err(unreachable)?;
            conn.execute(format!("CREATE SCHEMA IF NOT EXISTS \"{s}\"").as_str())
                .await
                .map_err(db("creating the schema"))?;
            sqlx::Connection::close(conn).await.map_err(db("closing the setup connection"))?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                let set_path = set_path.clone();
                Box::pin(async move {
                    if let Some(sql) = set_path {
                        conn.execute(sql.as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(unreachable)?;
        MIGRATOR.run(&pool).await.map_err(|e| error::sql::migrate_error(BACKEND, &MIGRATOR, &redacted, e))?;
        tracing::debug!(url = %redacted, schema = ?schema, "opened PostgreSQL store");
        Ok(Self { pool, schema })
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db("starting a transaction"))
    }

    async fn people_query(
        &self,
        mirror: Mirror,
        sql: &str,
        bind: impl FnOnce(PgQuery<'_>) -> PgQuery<'_>,
    ) -> Result<Vec<Person>> {
        let sql = format!("SELECT {PEOPLE_COLS} FROM {} WHERE {sql}", mirror.people());
        let rows = bind(sqlx::query(&sql)).fetch_all(&self.pool).await.map_err(db("reading people"))?;
        rows.iter().map(Postgres::person).collect()
    }

    async fn people_by_ids_in(&self, mirror: Mirror, ids: &[i64]) -> Result<Vec<Person>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids.to_vec();
        self.people_query(mirror, "marketo_id = ANY($1) ORDER BY marketo_id", |q| q.bind(ids)).await
    }

    async fn people_by_salesforce_id_in(&self, mirror: Mirror, id: &SalesforceId) -> Result<Vec<Person>> {
        let id = id.as_str().to_string();
        self.people_query(mirror, &crate::sql::by_salesforce_id(mirror, "$1"), |q| q.bind(id)).await
    }

    async fn list_people_in(&self, mirror: Mirror, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        self.people_query(mirror, "marketo_id > $1 ORDER BY marketo_id LIMIT $2", |q| {
            q.bind(after.unwrap_or(i64::MIN)).bind(i64::from(limit))
        })
        .await
    }

    async fn checkpoint_in(&self, mirror: Mirror, stream: StreamId) -> Result<Option<Checkpoint>> {
        let sql = format!("SELECT position::text, updated_at FROM {} WHERE stream = $1", mirror.checkpoints());
        let row: Option<(String, DateTime<Utc>)> = sqlx::query_as(&sql)
            .bind(stream.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a checkpoint"))?;
        row.map(|r| Postgres::checkpoint(stream, r)).transpose()
    }

    async fn put_checkpoint_to(&self, mirror: Mirror, checkpoint: &Checkpoint) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(db("acquiring a connection"))?;
        Postgres::put_checkpoint_in(&mut conn, mirror, checkpoint).await
    }

    /// A page and its checkpoint on `mirror`, in one transaction: live removals leave
    /// tombstones (and live upserts clear them), shadow ones do not.
    async fn apply_page_to(&self, mirror: Mirror, page: MirrorPage) -> Result<ApplyCounts> {
        let (reduced, counts) = reduce(page.decisions);
        if mirror == Mirror::Shadow {
            // Without a tombstone to write, the schema would not see a bad removal id.
            codec::check_removal_ids(&reduced.removes)?;
        }
        // A page and its checkpoint commit or vanish together, so a crash that loses the last few
        // pages only makes the sync fetch them again: no need to wait for the WAL flush.
        let mut tx = self
            .pool
            .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
            .await
            .map_err(db("starting a page transaction"))?;
        if let Some(c) = &page.checkpoint {
            Postgres::put_checkpoint_in(&mut tx, mirror, c).await?;
        }
        if !reduced.upserts.is_empty() {
            // Upserts people (and clears live tombstones) in one statement.
            upsert_people(&mut tx, mirror, &reduced.upserts).await?;
        }
        if !reduced.removes.is_empty() {
            match mirror {
                Mirror::Live => remove_people(&mut tx, &reduced.removes, page.at).await?,
                Mirror::Shadow => {
                    let ids: Vec<i64> = reduced.removes.iter().map(|(id, _)| *id).collect();
                    delete_people(&mut tx, mirror, &ids).await?
                }
            };
        }
        tx.commit().await.map_err(db("committing a mirror page"))?;
        Ok(counts)
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM salesync_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading salesync_meta"))
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

#[async_trait]
impl InstanceBinding for PostgresStore {
    async fn bind_instance(&self, instance: &str) -> Result<()> {
        sqlx::query("INSERT INTO salesync_meta (key, value) VALUES ('instance', $1) ON CONFLICT (key) DO NOTHING")
            .bind(instance)
            .execute(&self.pool)
            .await
            .map_err(db("binding the instance"))?;
        let bound = self.meta("instance").await?.unwrap_or_default();
        if bound == instance { Ok(()) } else { Err(instance_conflict(&bound, instance)) }
    }
}

#[async_trait]
impl MirrorStore for PostgresStore {
    async fn apply_page(&self, page: MirrorPage) -> Result<ApplyCounts> {
        self.apply_page_to(Mirror::Live, page).await
    }

    async fn person(&self, marketo_id: i64) -> Result<Option<Person>> {
        Ok(self.people_query(Mirror::Live, "marketo_id = $1", |q| q.bind(marketo_id)).await?.pop())
    }

    async fn people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>> {
        self.people_by_ids_in(Mirror::Live, ids).await
    }

    async fn people_by_email(&self, email: &str) -> Result<Vec<Person>> {
        let email = email.to_string();
        self.people_query(Mirror::Live, "lower(email) = lower($1) ORDER BY marketo_id", |q| q.bind(email)).await
    }

    async fn people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
        self.people_by_salesforce_id_in(Mirror::Live, id).await
    }

    async fn people_by_owner(&self, owner: &SalesforceId, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        let owner = owner.as_str().to_string();
        self.people_query(Mirror::Live, "owner_id = $1 AND marketo_id > $2 ORDER BY marketo_id LIMIT $3", |q| {
            q.bind(owner).bind(after.unwrap_or(i64::MIN)).bind(i64::from(limit))
        })
        .await
    }

    async fn list_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        self.list_people_in(Mirror::Live, after, limit).await
    }

    async fn count_people(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM people")
            .fetch_one(&self.pool)
            .await
            .map_err(db("counting people"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn tombstone(&self, marketo_id: i64) -> Result<Option<Tombstone>> {
        let row: Option<(String, DateTime<Utc>)> =
            sqlx::query_as("SELECT reason::text, removed_at FROM tombstones WHERE marketo_id = $1")
                .bind(marketo_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db("reading a tombstone"))?;
        row.map(|r| Postgres::tombstone(marketo_id, r)).transpose()
    }

    fn shadow(&self) -> Option<Arc<dyn ShadowStore>> {
        Some(Arc::new(self.clone()))
    }
}

#[async_trait]
impl CheckpointStore for PostgresStore {
    async fn checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>> {
        self.checkpoint_in(Mirror::Live, stream).await
    }

    async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        self.put_checkpoint_to(Mirror::Live, &checkpoint).await
    }
}

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn record(&self, recording: Recording) -> Result<Vec<i64>> {
        let mut tx = self.begin().await?;
        let ids = Postgres::record_in(&mut tx, &recording).await?;
        tx.commit().await.map_err(db("committing a recording"))?;
        Ok(ids)
    }

    async fn claim(
        &self,
        target: Target,
        limit: u32,
        worker: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxItem>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "WITH due AS (SELECT id FROM outbox WHERE target = $3 AND state IN ('pending', 'in_flight') AND \
             ((state = 'pending' AND next_attempt_at <= $4) OR (state = 'in_flight' AND lease_until <= $4)) \
             ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED) \
             UPDATE outbox o SET state = 'in_flight', lease_owner = $1, lease_until = $2, attempts = o.attempts + 1 \
             FROM due WHERE o.id = due.id RETURNING {OUTBOX_COLS_O}"
        );
        // A claim lost in a crash only puts its items back to pending, exactly as an expired lease
        // would, and any later durable commit (a finish) flushes it: no need to wait for the WAL.
        let mut tx = self
            .pool
            .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
            .await
            .map_err(db("starting a claim transaction"))?;
        let rows = sqlx::query(&sql)
            .bind(worker)
            .bind(lease_end(now, lease))
            .bind(codec::target_str(target))
            .bind(micros(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("claiming outbox items"))?;
        tx.commit().await.map_err(db("committing a claim"))?;
        let mut items = rows.iter().map(Postgres::outbox_item).collect::<Result<Vec<_>>>()?;
        items.sort_by_key(|i| i.id);
        Ok(items)
    }

    async fn finish(&self, finished: Vec<Finished>, _now: DateTime<Utc>) -> Result<()> {
        if finished.is_empty() {
            return Ok(());
        }
        let n = finished.len();
        let (mut ids, mut workers, mut states) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut results, mut errors, mut nexts, mut unknowns) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for f in &finished {
            let cols = codec::outcome_cols(&f.outcome);
            ids.push(f.id);
            workers.push(f.worker.as_str());
            states.push(codec::state_str(cols.state));
            results.push(cols.result);
            errors.push(cols.error);
            nexts.push(cols.next_attempt_at);
            unknowns.push(cols.outcome_unknown);
        }
        sqlx::query(
            "UPDATE outbox o SET state = u.state, result = coalesce(u.result, o.result), \
             last_error = coalesce(u.error, o.last_error), next_attempt_at = coalesce(u.next, o.next_attempt_at), \
             lease_owner = NULL, lease_until = NULL, outcome_unknown = u.unknown \
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], \
             $7::boolean[]) AS u(id, worker, state, result, error, next, unknown) \
             WHERE o.id = u.id AND o.state = 'in_flight' AND o.lease_owner = u.worker",
        )
        .bind(ids)
        .bind(workers)
        .bind(states)
        .bind(results)
        .bind(errors)
        .bind(nexts)
        .bind(unknowns)
        .execute(&self.pool)
        .await
        .map_err(db("finishing outbox items"))?;
        Ok(())
    }

    async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>> {
        let sql = format!("SELECT {OUTBOX_COLS} FROM outbox WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(db("reading an outbox item"))?;
        row.as_ref().map(Postgres::outbox_item).transpose()
    }

    async fn outbox_items(&self, state: OutboxState, limit: u32) -> Result<Vec<OutboxItem>> {
        let sql = format!("SELECT {OUTBOX_COLS} FROM outbox WHERE state = $1 ORDER BY id LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(codec::state_str(state))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing outbox items"))?;
        rows.iter().map(Postgres::outbox_item).collect()
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT state, count(*) FROM outbox GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(db("counting outbox items"))?;
        codec::outbox_counts(BACKEND, rows)
    }

    async fn requeue(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "UPDATE outbox SET state = 'pending', next_attempt_at = $1, attempts = 0 \
             WHERE state = 'parked' AND id = ANY($2)",
        )
        .bind(micros(now))
        .bind(ids.to_vec())
        .execute(&self.pool)
        .await
        .map_err(db("requeueing outbox items"))?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl ReminderStore for PostgresStore {
    async fn reminder(&self, id: &str) -> Result<Option<ReminderTask>> {
        let sql = format!("SELECT {REMINDER_COLS} FROM reminders WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(db("reading a reminder"))?;
        row.as_ref().map(Postgres::reminder).transpose()
    }

    async fn reminder_by_salesforce_id(&self, task_id: &SalesforceId) -> Result<Option<ReminderTask>> {
        let sql = format!("SELECT {REMINDER_COLS} FROM reminders WHERE salesforce_task_id = $1 ORDER BY id LIMIT 1");
        let row = sqlx::query(&sql)
            .bind(task_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a reminder"))?;
        row.as_ref().map(Postgres::reminder).transpose()
    }

    async fn reminders_for(&self, marketo_id: i64) -> Result<Vec<ReminderTask>> {
        let sql = format!("SELECT {REMINDER_COLS} FROM reminders WHERE marketo_id = $1 ORDER BY id");
        let rows = sqlx::query(&sql).bind(marketo_id).fetch_all(&self.pool).await.map_err(db("reading reminders"))?;
        rows.iter().map(Postgres::reminder).collect()
    }

    async fn put_reminder(&self, task: ReminderTask) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(db("acquiring a connection"))?;
        Postgres::put_reminder_in(&mut conn, &task).await
    }

    async fn set_reminder_task_id(&self, id: &str, task_id: &SalesforceId) -> Result<bool> {
        let done = sqlx::query("UPDATE reminders SET salesforce_task_id = $1 WHERE id = $2")
            .bind(task_id.as_str())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("setting a reminder's Task id"))?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl InboundStore for PostgresStore {
    async fn unsubscribe(&self, marketo_id: i64) -> Result<Option<UnsubscribeState>> {
        let row: Option<(bool, String, DateTime<Utc>)> =
            sqlx::query_as("SELECT unsubscribed, origin, at FROM unsubscribes WHERE marketo_id = $1")
                .bind(marketo_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db("reading an unsubscribe state"))?;
        row.map(|r| Postgres::unsubscribe(marketo_id, r)).transpose()
    }

    async fn apply_inbound(&self, batch: InboundBatch) -> Result<()> {
        let mut tx = self.begin().await?;
        Postgres::apply_inbound_in(&mut tx, &batch).await?;
        tx.commit().await.map_err(db("committing an inbound batch"))
    }
}

#[async_trait]
impl SettingsStore for PostgresStore {
    async fn settings(&self) -> Result<AdminSettings> {
        match self.meta("settings").await? {
            Some(json) => codec::from_json(BACKEND, "admin settings", &json),
            None => Ok(AdminSettings::default()),
        }
    }

    async fn put_settings(&self, settings: AdminSettings) -> Result<()> {
        let json = codec::to_json(BACKEND, "admin settings", &settings)?;
        sqlx::query(
            "INSERT INTO salesync_meta (key, value) VALUES ('settings', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(json)
        .execute(&self.pool)
        .await
        .map_err(db("writing admin settings"))?;
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for PostgresStore {
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration, now: DateTime<Utc>) -> Result<bool> {
        let got: Option<String> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= $4 RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(lease_end(now, ttl))
        .bind(micros(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db("taking a lease"))?;
        Ok(got.is_some())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(db("releasing a lease"))?;
        Ok(())
    }
}

#[async_trait]
impl ShadowStore for PostgresStore {
    async fn apply_shadow_page(&self, page: MirrorPage) -> Result<ApplyCounts> {
        self.apply_page_to(Mirror::Shadow, page).await
    }

    async fn shadow_people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>> {
        self.people_by_ids_in(Mirror::Shadow, ids).await
    }

    async fn shadow_people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
        self.people_by_salesforce_id_in(Mirror::Shadow, id).await
    }

    async fn list_shadow_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        self.list_people_in(Mirror::Shadow, after, limit).await
    }

    async fn shadow_checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>> {
        self.checkpoint_in(Mirror::Shadow, stream).await
    }

    async fn put_shadow_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        self.put_checkpoint_to(Mirror::Shadow, &checkpoint).await
    }

    async fn clear_shadow(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        clear_shadow_in(&mut tx).await?;
        tx.commit().await.map_err(db("clearing the shadow"))
    }

    async fn promote_shadow(&self, promotion: Promotion) -> Result<ApplyCounts> {
        let plan = codec::plan_promotion(&promotion)?;
        let mut counts = ApplyCounts::default();
        let mut tx = self.begin().await?;
        if !plan.upserts.is_empty() {
            let n = plan.upserts.len();
            let ids = &plan.upserts;
            let count = |table: &str| format!("SELECT count(*) FROM {table} WHERE marketo_id = ANY($1)");
            let found: i64 = sqlx::query_scalar(&count("shadow_people"))
                .bind(ids)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("counting shadow people"))?;
            let missing = n.saturating_sub(usize::try_from(found).unwrap_or(0));
            if missing > 0 {
                let first: Vec<i64> = sqlx::query_scalar(
                    "SELECT u.id FROM UNNEST($1::bigint[]) AS u(id) \
                     WHERE NOT EXISTS (SELECT 1 FROM shadow_people s WHERE s.marketo_id = u.id) ORDER BY u.id LIMIT $2",
                )
                .bind(ids)
                .bind(i64::try_from(codec::MISSING_SHOWN).unwrap_or(i64::MAX))
                .fetch_all(&mut *tx)
                .await
                .map_err(db("finding shadow people"))?;
                tx.rollback().await.map_err(db("rolling back a shadow promotion"))?;
                return Err(codec::missing_shadow_rows(missing, n, &first));
            }
            let live: i64 = sqlx::query_scalar(&count("people"))
                .bind(ids)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("counting people"))?;
            let live = u64::try_from(live).unwrap_or(0);
            counts.updated = live;
            counts.inserted = (n as u64).saturating_sub(live);
            let source =
                format!("SELECT {PEOPLE_DATA_COLS}, $2::timestamptz FROM shadow_people WHERE marketo_id = ANY($1)");
            sqlx::query(&upsert_sql(Mirror::Live, &source))
                .bind(ids)
                .bind(micros(promotion.at))
                .execute(&mut *tx)
                .await
                .map_err(db("promoting shadow people"))?;
        }
        if !plan.removes.is_empty() {
            counts.removed = remove_people(&mut tx, &plan.removes, promotion.at).await?;
        }
        for c in &promotion.checkpoints {
            Postgres::put_checkpoint_in(&mut tx, Mirror::Live, c).await?;
        }
        clear_shadow_in(&mut tx).await?;
        tx.commit().await.map_err(db("committing a shadow promotion"))?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::valid_schema_name;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema_name("salesync_test_1a2b"));
        assert!(valid_schema_name("_x"));
        assert!(!valid_schema_name(""));
        assert!(!valid_schema_name("1abc"));
        assert!(!valid_schema_name("a\"; DROP TABLE x; --"));
        assert!(!valid_schema_name(&"a".repeat(64)));
    }
}
