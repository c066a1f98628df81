//! The SQLite backend (`sqlite://path`, `sqlite::memory:`).
//!
//! One writer connection (every write is serialized through it, transactions start with
//! `BEGIN IMMEDIATE`) and a small pool of reader connections, in WAL mode so readers never wait
//! for the writer. Timestamps are stored as integer microseconds, JSON as text. The shadow copy
//! of a rebuild lives in `shadow_people` and `shadow_checkpoints` of the same database; id lists
//! of any length are bound as one JSON array and read with `json_each`.

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
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::codec::{self, reduce};
use crate::error::{self, backend_msg, instance_conflict, redact_url, scrub};
use crate::sql::{Dialect, Mirror, PEOPLE_COLS, PEOPLE_DATA_COLS, PEOPLE_ON_CONFLICT, Statements};

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

const OUTBOX_COLS: &str = "id, key, target, payload, state, attempts, next_attempt_at, last_error, result, \
    lease_owner, lease_until, created_at, outcome_unknown";

impl Statements for Sqlite {
    const PUT_CHECKPOINT: &'static str = "INSERT INTO checkpoints (stream, position, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (stream) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at";
    const PUT_SHADOW_CHECKPOINT: &'static str = "INSERT INTO shadow_checkpoints (stream, position, updated_at) \
         VALUES (?1, ?2, ?3) \
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
    type IdsArg = String;
    const JSON_TEXT: &'static str = "";
    const OUTBOX_COLS: &'static str = OUTBOX_COLS;

    fn ids_arg(ids: &[i64]) -> String {
        json_ids(ids.iter().copied())
    }

    fn in_ids(column: &str, param: &str) -> String {
        format!("{column} IN (SELECT value FROM json_each({param}))")
    }

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

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// Inserts or replaces `people` in the people table of `mirror` (tombstones are the caller's).
async fn upsert_people(conn: &mut SqliteConnection, mirror: Mirror, people: &[Person]) -> Result<()> {
    let table = mirror.people();
    for chunk in people.chunks(UPSERT_CHUNK) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!("INSERT INTO {table} ({PEOPLE_COLS}) "));
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
        qb.push(" ").push(PEOPLE_ON_CONFLICT);
        qb.build().persistent(true).execute(&mut *conn).await.map_err(db("upserting people"))?;
    }
    Ok(())
}

/// Deletes the people of `ids` (a JSON array) from the people table of `mirror`; returns how many
/// rows went.
async fn delete_people(conn: &mut SqliteConnection, mirror: Mirror, ids: String) -> Result<u64> {
    let sql = format!("DELETE FROM {} WHERE marketo_id IN (SELECT value FROM json_each(?1))", mirror.people());
    let done = sqlx::query(&sql).bind(ids).execute(&mut *conn).await.map_err(db("removing people"))?;
    Ok(done.rows_affected())
}

/// Deletes the tombstones of `ids` (a JSON array): those people are back in the live mirror.
async fn clear_tombstones(conn: &mut SqliteConnection, ids: String) -> Result<()> {
    sqlx::query("DELETE FROM tombstones WHERE marketo_id IN (SELECT value FROM json_each(?1))")
        .bind(ids)
        .execute(&mut *conn)
        .await
        .map_err(db("clearing tombstones"))?;
    Ok(())
}

/// Removes people from the live mirror, writing a tombstone for each (present or not); returns
/// how many live rows went.
async fn remove_people(conn: &mut SqliteConnection, removes: &[(i64, RemovalReason)], at: i64) -> Result<u64> {
    let removed = delete_people(conn, Mirror::Live, json_ids(removes.iter().map(|(id, _)| *id))).await?;
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
    Ok(removed)
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

    async fn put_checkpoint_to(&self, mirror: Mirror, checkpoint: &Checkpoint) -> Result<()> {
        let mut tx = self.begin().await?;
        Sqlite::put_checkpoint_in(&mut tx, mirror, checkpoint).await?;
        tx.commit().await.map_err(db("writing a checkpoint"))
    }

    /// A page and its checkpoint on `mirror`, in one transaction: live removals leave
    /// tombstones (and live upserts clear them), shadow ones do not.
    async fn apply_page_to(&self, mirror: Mirror, page: MirrorPage) -> Result<ApplyCounts> {
        let (reduced, counts) = reduce(page.decisions);
        if mirror == Mirror::Shadow {
            // Without a tombstone to write, the schema would not see a bad removal id.
            codec::check_removal_ids(&reduced.removes)?;
        }
        let mut tx = self.begin().await?;
        if let Some(c) = &page.checkpoint {
            Sqlite::put_checkpoint_in(&mut tx, mirror, c).await?;
        }
        if !reduced.upserts.is_empty() {
            upsert_people(&mut tx, mirror, &reduced.upserts).await?;
            if mirror == Mirror::Live {
                clear_tombstones(&mut tx, json_ids(reduced.upserts.iter().map(|p| p.marketo_id))).await?;
            }
        }
        if !reduced.removes.is_empty() {
            match mirror {
                Mirror::Live => remove_people(&mut tx, &reduced.removes, us(page.at)).await?,
                Mirror::Shadow => {
                    delete_people(&mut tx, mirror, json_ids(reduced.removes.iter().map(|(id, _)| *id))).await?
                }
            };
        }
        tx.commit().await.map_err(db("committing a mirror page"))?;
        Ok(counts)
    }
}

async fn migrate(pool: &SqlitePool, redacted: &str) -> Result<()> {
    MIGRATOR.run(pool).await.map_err(|e| error::sql::migrate_error(BACKEND, &MIGRATOR, redacted, e))
}

// The store traits, written once for both SQL backends (see `sql_store_impls!`).
crate::sql::sql_store_impls!(SqliteStore, Sqlite, reader: reader, writer: writer);

impl SqliteStore {
    /// Claims due items of `target` for `worker` (see `OutboxStore::claim`).
    async fn claim_due(
        &self,
        target: Target,
        limit: u32,
        worker: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxItem>> {
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

    /// Applies delivery outcomes (see `OutboxStore::finish`).
    async fn finish_claimed(&self, finished: Vec<Finished>, _now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin().await?;
        for f in &finished {
            let cols = codec::outcome_cols(&f.outcome);
            sqlx::query(
                "UPDATE outbox SET state = ?1, result = coalesce(?2, result), last_error = coalesce(?3, last_error), \
                 next_attempt_at = coalesce(?4, next_attempt_at), lease_owner = NULL, lease_until = NULL, \
                 outcome_unknown = ?7 \
                 WHERE id = ?5 AND state = 'in_flight' AND lease_owner = ?6",
            )
            .bind(codec::state_str(cols.state))
            .bind(cols.result)
            .bind(cols.error)
            .bind(cols.next_attempt_at.map(us))
            .bind(f.id)
            .bind(&f.worker)
            .bind(cols.outcome_unknown)
            .execute(&mut *tx)
            .await
            .map_err(db("finishing an outbox item"))?;
        }
        tx.commit().await.map_err(db("committing outbox outcomes"))
    }

    /// Promotes the shadow (see `ShadowStore::promote_shadow`).
    async fn promote(&self, promotion: Promotion) -> Result<ApplyCounts> {
        let plan = codec::plan_promotion(&promotion)?;
        let at = us(promotion.at);
        let mut counts = ApplyCounts::default();
        let mut tx = self.begin().await?;
        if !plan.upserts.is_empty() {
            let n = plan.upserts.len();
            let ids = json_ids(plan.upserts.iter().copied());
            let in_ids = "marketo_id IN (SELECT value FROM json_each(?1))";
            let count = |table: &str| format!("SELECT count(*) FROM {table} WHERE {in_ids}");
            let found: i64 = sqlx::query_scalar(&count("shadow_people"))
                .bind(&ids)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("counting shadow people"))?;
            let missing = n.saturating_sub(usize::try_from(found).unwrap_or(0));
            if missing > 0 {
                let first: Vec<i64> = sqlx::query_scalar(
                    "SELECT value FROM json_each(?1) WHERE value NOT IN (SELECT marketo_id FROM shadow_people) \
                     ORDER BY value LIMIT ?2",
                )
                .bind(&ids)
                .bind(i64::try_from(codec::MISSING_SHOWN).unwrap_or(i64::MAX))
                .fetch_all(&mut *tx)
                .await
                .map_err(db("finding shadow people"))?;
                tx.rollback().await.map_err(db("rolling back a shadow promotion"))?;
                return Err(codec::missing_shadow_rows(missing, n, &first));
            }
            let live: i64 = sqlx::query_scalar(&count("people"))
                .bind(&ids)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("counting people"))?;
            let live = u64::try_from(live).unwrap_or(0);
            counts.updated = live;
            counts.inserted = (n as u64).saturating_sub(live);
            sqlx::query(&format!(
                "INSERT INTO people ({PEOPLE_COLS}) SELECT {PEOPLE_DATA_COLS}, ?2 FROM shadow_people \
                 WHERE {in_ids} {PEOPLE_ON_CONFLICT}"
            ))
            .bind(&ids)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(db("promoting shadow people"))?;
            clear_tombstones(&mut tx, ids).await?;
        }
        if !plan.removes.is_empty() {
            counts.removed = remove_people(&mut tx, &plan.removes, at).await?;
        }
        for c in &promotion.checkpoints {
            Sqlite::put_checkpoint_in(&mut tx, Mirror::Live, c).await?;
        }
        Sqlite::clear_shadow_in(&mut tx).await?;
        tx.commit().await.map_err(db("committing a shadow promotion"))?;
        Ok(counts)
    }
}
