//! The SQLite backend (`sqlite://path`, `sqlite::memory:`).
//!
//! One writer connection (every write is serialized through it, transactions start with
//! `BEGIN IMMEDIATE`) and a small pool of reader connections, in WAL mode so readers never wait
//! for the writer. Timestamps are stored as integer microseconds, JSON as text.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use salesync_core::activity::{AdminSettings, ReminderTask, UnsubscribeState};
use salesync_core::mirror::RemovalReason;
use salesync_core::person::Person;
use salesync_core::ports::store::{
    ApplyCounts, Checkpoint, Finished, InboundBatch, MirrorPage, OutboxCounts, OutboxItem, OutboxState, Recording,
    Store, StreamId, Target, Tombstone,
};
use salesync_core::sfid::SalesforceId;
use salesync_core::{Error, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::codec::{self, reduce};
use crate::error::{self, backend_msg, instance_conflict, redact_url, scrub};
use crate::sql::{Dialect, Writes};

const BACKEND: &str = "sqlite";
/// Rows per multi-row statement (18 parameters each; SQLite allows 32,766 per statement).
const UPSERT_CHUNK: usize = 1000;
/// Page cache of the writer connection (negative: KiB), so index upkeep stays in memory.
const WRITER_CACHE_KIB: &str = "-65536";
/// WAL size (pages) that triggers a checkpoint: fewer, larger checkpoints (and fsyncs) while a
/// sync writes pages of people.
const WAL_AUTOCHECKPOINT_PAGES: &str = "10000";
/// Reader connections of a file database.
const READERS: u32 = 4;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

fn db(context: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| error::sql::map(BACKEND, context, e)
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_us(v: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| backend_msg(BACKEND, format!("timestamp {v} out of range")))
}

fn lease_end(now: DateTime<Utc>, d: Duration) -> i64 {
    us(now).saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn json_ids(ids: impl IntoIterator<Item = i64>) -> String {
    let ids: Vec<i64> = ids.into_iter().collect();
    serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into())
}

const PEOPLE_COLS: &str = "marketo_id, first_name, last_name, salesforce_contact_id, salesforce_lead_id, \
    salesforce_account_id, opportunity_source, opportunity_id, company, title, email, phone, linkedin_url, source, \
    salesforce_type, owner_id, marketo_updated_at, mirror_updated_at";

const OUTBOX_COLS: &str = "id, key, target, payload, state, attempts, next_attempt_at, last_error, result, \
    lease_owner, lease_until, created_at";

const REMINDER_COLS: &str =
    "id, marketo_id, subject, status, priority, due_date, details, salesforce_task_id, deleted, updated_at";

impl Writes for Sqlite {
    const PUT_CHECKPOINT: &'static str = "INSERT INTO checkpoints (stream, position, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (stream) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at";
    const PUT_REMINDER: &'static str = "INSERT INTO reminders (id, marketo_id, subject, status, priority, due_date, \
         details, salesforce_task_id, deleted, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (id) DO UPDATE SET marketo_id = excluded.marketo_id, subject = excluded.subject, \
         status = excluded.status, priority = excluded.priority, due_date = excluded.due_date, \
         details = excluded.details, salesforce_task_id = excluded.salesforce_task_id, deleted = excluded.deleted, \
         updated_at = excluded.updated_at";
    const PUT_UNSUBSCRIBE: &'static str = "INSERT INTO unsubscribes (marketo_id, unsubscribed, origin, at) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (marketo_id) DO UPDATE SET unsubscribed = excluded.unsubscribed, \
         origin = excluded.origin, at = excluded.at";
    const INSERT_OUTBOX: &'static str = "INSERT INTO outbox (key, target, payload, state, attempts, \
         next_attempt_at, created_at) VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?5) \
         ON CONFLICT (key) DO NOTHING RETURNING id";
    const OUTBOX_ID_BY_KEY: &'static str = "SELECT id FROM outbox WHERE key = ?1";
    type TimeArg = i64;
    type DayArg = Option<String>;

    fn time_arg(t: DateTime<Utc>) -> i64 {
        us(t)
    }

    fn day_arg(d: Option<NaiveDate>) -> Option<String> {
        d.map(|d| d.format("%Y-%m-%d").to_string())
    }
}

impl Dialect for Sqlite {
    const BACKEND: &'static str = BACKEND;
    type Time = i64;
    type Day = String;
    type Count = i64;

    fn time(v: i64) -> Result<DateTime<Utc>> {
        from_us(v)
    }

    fn day(d: String) -> Result<NaiveDate> {
        NaiveDate::from_str(&d).map_err(|e| crate::error::backend(BACKEND, format!("reminder due date {d:?}"), e))
    }

    fn count(v: i64) -> u32 {
        u32::try_from(v).unwrap_or(u32::MAX)
    }
}

async fn upsert_people(conn: &mut SqliteConnection, people: &[Person]) -> Result<()> {
    for chunk in people.chunks(UPSERT_CHUNK) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!("INSERT INTO people ({PEOPLE_COLS}) "));
        qb.push_values(chunk, |mut b, p| {
            let (opp_source, opp_id) = codec::opportunity_cols(&p.salesforce_opportunity);
            b.push_bind(p.marketo_id)
                .push_bind(p.first_name.as_deref())
                .push_bind(p.last_name.as_deref())
                .push_bind(p.salesforce_contact_id.as_ref().map(SalesforceId::as_str))
                .push_bind(p.salesforce_lead_id.as_ref().map(SalesforceId::as_str))
                .push_bind(p.salesforce_account_id.as_ref().map(SalesforceId::as_str))
                .push_bind(opp_source)
                .push_bind(opp_id)
                .push_bind(p.company.as_deref())
                .push_bind(p.title.as_deref())
                .push_bind(p.email.as_deref())
                .push_bind(p.phone.as_deref())
                .push_bind(p.linkedin_url.as_deref())
                .push_bind(p.source.as_deref())
                .push_bind(codec::sf_type_str(p.salesforce_type))
                .push_bind(p.owner_id.as_str())
                .push_bind(p.marketo_updated_at.map(us))
                .push_bind(us(p.mirror_updated_at));
        });
        qb.push(
            " ON CONFLICT (marketo_id) DO UPDATE SET first_name = excluded.first_name, \
             last_name = excluded.last_name, salesforce_contact_id = excluded.salesforce_contact_id, \
             salesforce_lead_id = excluded.salesforce_lead_id, salesforce_account_id = excluded.salesforce_account_id, \
             opportunity_source = excluded.opportunity_source, opportunity_id = excluded.opportunity_id, \
             company = excluded.company, title = excluded.title, email = excluded.email, phone = excluded.phone, \
             linkedin_url = excluded.linkedin_url, source = excluded.source, \
             salesforce_type = excluded.salesforce_type, owner_id = excluded.owner_id, \
             marketo_updated_at = excluded.marketo_updated_at, mirror_updated_at = excluded.mirror_updated_at",
        );
        qb.build().persistent(true).execute(&mut *conn).await.map_err(db("upserting people"))?;
    }
    Ok(())
}

async fn remove_people(conn: &mut SqliteConnection, removes: &[(i64, RemovalReason)], at: i64) -> Result<()> {
    sqlx::query("DELETE FROM people WHERE marketo_id IN (SELECT value FROM json_each(?1))")
        .bind(json_ids(removes.iter().map(|(id, _)| *id)))
        .execute(&mut *conn)
        .await
        .map_err(db("removing people"))?;
    for chunk in removes.chunks(UPSERT_CHUNK) {
        let reasons = codec::removal_reasons(BACKEND, chunk)?;
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO tombstones (marketo_id, reason, removed_at) ");
        qb.push_values(chunk.iter().zip(reasons), |mut b, ((id, _), reason)| {
            b.push_bind(*id).push_bind(reason).push_bind(at);
        });
        qb.push(" ON CONFLICT (marketo_id) DO UPDATE SET reason = excluded.reason, removed_at = excluded.removed_at");
        qb.build().execute(&mut *conn).await.map_err(db("writing tombstones"))?;
    }
    Ok(())
}

/// Parses a SQLite store URL into connection options, without touching the file system.
pub(crate) fn options(url: &str) -> Result<SqliteConnectOptions> {
    SqliteConnectOptions::from_str(url).map_err(|e| Error::Config {
        key: "store url".into(),
        reason: format!("invalid SQLite URL {}: {}", redact_url(url), scrub(e.to_string(), url)),
    })
}

impl SqliteStore {
    /// Opens (creating the file on first use) and migrates the database at `url`
    /// (`sqlite://path`, `sqlite:path`, `sqlite::memory:`).
    pub async fn open(url: &str) -> Result<Self> {
        let redacted = redact_url(url);
        let opts = options(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let connect_err =
            |e: sqlx::Error| crate::error::backend(BACKEND, format!("cannot open SQLite database {redacted}"), e);
        let (writer, reader) = if in_memory {
            // One connection holds the whole database: never let it go.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(opts)
                .await
                .map_err(connect_err)?;
            (pool.clone(), pool)
        } else {
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(
                    opts.clone()
                        .pragma("cache_size", WRITER_CACHE_KIB)
                        .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES),
                )
                .await
                .map_err(connect_err)?;
            let reader = SqlitePoolOptions::new()
                .max_connections(READERS)
                .connect_with(opts.read_only(true))
                .await
                .map_err(connect_err)?;
            (writer, reader)
        };
        migrate(&writer, &redacted).await?;
        tracing::debug!(url = %redacted, "opened SQLite store");
        Ok(Self { writer, reader })
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db("starting a write transaction"))
    }

    async fn people_where(&self, sql: &str, bind: impl FnOnce(SqlQuery<'_>) -> SqlQuery<'_>) -> Result<Vec<Person>> {
        let sql = format!("SELECT {PEOPLE_COLS} FROM people WHERE {sql}");
        let rows = bind(sqlx::query(&sql)).fetch_all(&self.reader).await.map_err(db("reading people"))?;
        rows.iter().map(Sqlite::person).collect()
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM salesync_meta WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(db("reading salesync_meta"))
    }
}

type SqlQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

async fn migrate(pool: &SqlitePool, redacted: &str) -> Result<()> {
    MIGRATOR.run(pool).await.map_err(|e| error::sql::migrate_error(BACKEND, &MIGRATOR, redacted, e))
}

#[async_trait]
impl Store for SqliteStore {
    async fn bind_instance(&self, instance: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO salesync_meta (key, value) VALUES ('instance', ?1) ON CONFLICT (key) DO NOTHING")
            .bind(instance)
            .execute(&mut *tx)
            .await
            .map_err(db("binding the instance"))?;
        let bound: String = sqlx::query_scalar("SELECT value FROM salesync_meta WHERE key = 'instance'")
            .fetch_one(&mut *tx)
            .await
            .map_err(db("reading the bound instance"))?;
        tx.commit().await.map_err(db("binding the instance"))?;
        if bound == instance { Ok(()) } else { Err(instance_conflict(&bound, instance)) }
    }

    async fn apply_page(&self, page: MirrorPage) -> Result<ApplyCounts> {
        let (reduced, counts) = reduce(page.decisions);
        let at = us(page.at);
        let mut tx = self.begin().await?;
        if let Some(c) = &page.checkpoint {
            Sqlite::put_checkpoint_in(&mut tx, c).await?;
        }
        if !reduced.upserts.is_empty() {
            upsert_people(&mut tx, &reduced.upserts).await?;
            sqlx::query("DELETE FROM tombstones WHERE marketo_id IN (SELECT value FROM json_each(?1))")
                .bind(json_ids(reduced.upserts.iter().map(|p| p.marketo_id)))
                .execute(&mut *tx)
                .await
                .map_err(db("clearing tombstones"))?;
        }
        if !reduced.removes.is_empty() {
            remove_people(&mut tx, &reduced.removes, at).await?;
        }
        tx.commit().await.map_err(db("committing a mirror page"))?;
        Ok(counts)
    }

    async fn person(&self, marketo_id: i64) -> Result<Option<Person>> {
        Ok(self.people_where("marketo_id = ?1", |q| q.bind(marketo_id)).await?.pop())
    }

    async fn people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = json_ids(ids.iter().copied());
        self.people_where("marketo_id IN (SELECT value FROM json_each(?1)) ORDER BY marketo_id", |q| q.bind(ids)).await
    }

    async fn people_by_email(&self, email: &str) -> Result<Vec<Person>> {
        self.people_where("lower(email) = lower(?1) ORDER BY marketo_id", |q| q.bind(email.to_string())).await
    }

    async fn people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
        let id = id.as_str().to_string();
        self.people_where(
            "marketo_id IN (SELECT marketo_id FROM people WHERE salesforce_lead_id = ?1 \
             UNION SELECT marketo_id FROM people WHERE salesforce_contact_id = ?1) ORDER BY marketo_id",
            |q| q.bind(id),
        )
        .await
    }

    async fn people_by_owner(&self, owner: &SalesforceId, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        let owner = owner.as_str().to_string();
        self.people_where("owner_id = ?1 AND marketo_id > ?2 ORDER BY marketo_id LIMIT ?3", |q| {
            q.bind(owner).bind(after.unwrap_or(i64::MIN)).bind(i64::from(limit))
        })
        .await
    }

    async fn list_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        self.people_where("marketo_id > ?1 ORDER BY marketo_id LIMIT ?2", |q| {
            q.bind(after.unwrap_or(i64::MIN)).bind(i64::from(limit))
        })
        .await
    }

    async fn count_people(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM people")
            .fetch_one(&self.reader)
            .await
            .map_err(db("counting people"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn tombstone(&self, marketo_id: i64) -> Result<Option<Tombstone>> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT reason, removed_at FROM tombstones WHERE marketo_id = ?1")
                .bind(marketo_id)
                .fetch_optional(&self.reader)
                .await
                .map_err(db("reading a tombstone"))?;
        row.map(|r| Sqlite::tombstone(marketo_id, r)).transpose()
    }

    async fn checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT position, updated_at FROM checkpoints WHERE stream = ?1")
                .bind(stream.as_str())
                .fetch_optional(&self.reader)
                .await
                .map_err(db("reading a checkpoint"))?;
        row.map(|r| Sqlite::checkpoint(stream, r)).transpose()
    }

    async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        let mut tx = self.begin().await?;
        Sqlite::put_checkpoint_in(&mut tx, &checkpoint).await?;
        tx.commit().await.map_err(db("writing a checkpoint"))
    }

    async fn record(&self, recording: Recording) -> Result<Vec<i64>> {
        let mut tx = self.begin().await?;
        let ids = Sqlite::record_in(&mut tx, &recording).await?;
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
        // One UPDATE statement is one write transaction: SQLite takes the write lock before the
        // subquery reads, so two claimers can never pick the same rows.
        let sql = format!(
            "UPDATE outbox SET state = 'in_flight', lease_owner = ?1, lease_until = ?2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM outbox WHERE target = ?3 AND state IN ('pending', 'in_flight') AND \
             ((state = 'pending' AND next_attempt_at <= ?4) OR (state = 'in_flight' AND lease_until <= ?4)) \
             ORDER BY id LIMIT ?5) RETURNING {OUTBOX_COLS}"
        );
        let rows = sqlx::query(&sql)
            .bind(worker)
            .bind(lease_end(now, lease))
            .bind(codec::target_str(target))
            .bind(us(now))
            .bind(i64::from(limit))
            .fetch_all(&self.writer)
            .await
            .map_err(db("claiming outbox items"))?;
        let mut items = rows.iter().map(Sqlite::outbox_item).collect::<Result<Vec<_>>>()?;
        items.sort_by_key(|i| i.id);
        Ok(items)
    }

    async fn finish(&self, finished: Vec<Finished>, _now: DateTime<Utc>) -> Result<()> {
        if finished.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for f in &finished {
            let cols = codec::outcome_cols(&f.outcome);
            sqlx::query(
                "UPDATE outbox SET state = ?1, result = coalesce(?2, result), last_error = coalesce(?3, last_error), \
                 next_attempt_at = coalesce(?4, next_attempt_at), lease_owner = NULL, lease_until = NULL \
                 WHERE id = ?5 AND state = 'in_flight' AND lease_owner = ?6",
            )
            .bind(codec::state_str(cols.state))
            .bind(cols.result)
            .bind(cols.error)
            .bind(cols.next_attempt_at.map(us))
            .bind(f.id)
            .bind(&f.worker)
            .execute(&mut *tx)
            .await
            .map_err(db("finishing an outbox item"))?;
        }
        tx.commit().await.map_err(db("committing outbox outcomes"))
    }

    async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>> {
        let sql = format!("SELECT {OUTBOX_COLS} FROM outbox WHERE id = ?1");
        let row =
            sqlx::query(&sql).bind(id).fetch_optional(&self.reader).await.map_err(db("reading an outbox item"))?;
        row.as_ref().map(Sqlite::outbox_item).transpose()
    }

    async fn outbox_items(&self, state: OutboxState, limit: u32) -> Result<Vec<OutboxItem>> {
        let sql = format!("SELECT {OUTBOX_COLS} FROM outbox WHERE state = ?1 ORDER BY id LIMIT ?2");
        let rows = sqlx::query(&sql)
            .bind(codec::state_str(state))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(db("listing outbox items"))?;
        rows.iter().map(Sqlite::outbox_item).collect()
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT state, count(*) FROM outbox GROUP BY state")
            .fetch_all(&self.reader)
            .await
            .map_err(db("counting outbox items"))?;
        codec::outbox_counts(BACKEND, rows)
    }

    async fn requeue(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "UPDATE outbox SET state = 'pending', next_attempt_at = ?1, attempts = 0 \
             WHERE state = 'parked' AND id IN (SELECT value FROM json_each(?2))",
        )
        .bind(us(now))
        .bind(json_ids(ids.iter().copied()))
        .execute(&self.writer)
        .await
        .map_err(db("requeueing outbox items"))?;
        Ok(done.rows_affected())
    }

    async fn reminder(&self, id: &str) -> Result<Option<ReminderTask>> {
        let sql = format!("SELECT {REMINDER_COLS} FROM reminders WHERE id = ?1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.reader).await.map_err(db("reading a reminder"))?;
        row.as_ref().map(Sqlite::reminder).transpose()
    }

    async fn reminder_by_salesforce_id(&self, task_id: &SalesforceId) -> Result<Option<ReminderTask>> {
        let sql = format!("SELECT {REMINDER_COLS} FROM reminders WHERE salesforce_task_id = ?1 ORDER BY id LIMIT 1");
        let row = sqlx::query(&sql)
            .bind(task_id.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(db("reading a reminder"))?;
        row.as_ref().map(Sqlite::reminder).transpose()
    }

    async fn reminders_for(&self, marketo_id: i64) -> Result<Vec<ReminderTask>> {
        let sql = format!("SELECT {REMINDER_COLS} FROM reminders WHERE marketo_id = ?1 ORDER BY id");
        let rows = sqlx::query(&sql).bind(marketo_id).fetch_all(&self.reader).await.map_err(db("reading reminders"))?;
        rows.iter().map(Sqlite::reminder).collect()
    }

    async fn put_reminder(&self, task: ReminderTask) -> Result<()> {
        let mut tx = self.begin().await?;
        Sqlite::put_reminder_in(&mut tx, &task).await?;
        tx.commit().await.map_err(db("writing a reminder"))
    }

    async fn set_reminder_task_id(&self, id: &str, task_id: &SalesforceId) -> Result<bool> {
        let done = sqlx::query("UPDATE reminders SET salesforce_task_id = ?1 WHERE id = ?2")
            .bind(task_id.as_str())
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(db("setting a reminder's Task id"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn unsubscribe(&self, marketo_id: i64) -> Result<Option<UnsubscribeState>> {
        let row: Option<(bool, String, i64)> =
            sqlx::query_as("SELECT unsubscribed, origin, at FROM unsubscribes WHERE marketo_id = ?1")
                .bind(marketo_id)
                .fetch_optional(&self.reader)
                .await
                .map_err(db("reading an unsubscribe state"))?;
        row.map(|r| Sqlite::unsubscribe(marketo_id, r)).transpose()
    }

    async fn apply_inbound(&self, batch: InboundBatch) -> Result<()> {
        let mut tx = self.begin().await?;
        Sqlite::apply_inbound_in(&mut tx, &batch).await?;
        tx.commit().await.map_err(db("committing an inbound batch"))
    }

    async fn settings(&self) -> Result<AdminSettings> {
        match self.meta("settings").await? {
            Some(json) => codec::from_json(BACKEND, "admin settings", &json),
            None => Ok(AdminSettings::default()),
        }
    }

    async fn put_settings(&self, settings: AdminSettings) -> Result<()> {
        let json = codec::to_json(BACKEND, "admin settings", &settings)?;
        sqlx::query(
            "INSERT INTO salesync_meta (key, value) VALUES ('settings', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(json)
        .execute(&self.writer)
        .await
        .map_err(db("writing admin settings"))?;
        Ok(())
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration, now: DateTime<Utc>) -> Result<bool> {
        let got: Option<String> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4 RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(lease_end(now, ttl))
        .bind(us(now))
        .fetch_optional(&self.writer)
        .await
        .map_err(db("taking a lease"))?;
        Ok(got.is_some())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = ?1 AND holder = ?2")
            .bind(name)
            .bind(holder)
            .execute(&self.writer)
            .await
            .map_err(db("releasing a lease"))?;
        Ok(())
    }
}
