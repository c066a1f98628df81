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
use crate::sql::{Dialect, Mirror, PEOPLE_COLS, PEOPLE_DATA_COLS, PEOPLE_ON_CONFLICT, Statements};

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

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

impl Statements for Postgres {
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
    type IdsArg = Vec<i64>;
    const JSON_TEXT: &'static str = "::text";
    const OUTBOX_COLS: &'static str = OUTBOX_COLS;

    fn ids_arg(ids: &[i64]) -> Vec<i64> {
        ids.to_vec()
    }

    fn in_ids(column: &str, param: &str) -> String {
        format!("{column} = ANY({param})")
    }

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
}

// The store traits, written once for both SQL backends (see `sql_store_impls!`).
crate::sql::sql_store_impls!(PostgresStore, Postgres, reader: pool, writer: pool);

impl PostgresStore {
    /// Claims due items of `target` for `worker` (see `OutboxStore::claim`).
    async fn claim_due(
        &self,
        target: Target,
        limit: u32,
        worker: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxItem>> {
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

    /// Applies delivery outcomes (see `OutboxStore::finish`).
    async fn finish_claimed(&self, finished: Vec<Finished>, _now: DateTime<Utc>) -> Result<()> {
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

    /// Promotes the shadow (see `ShadowStore::promote_shadow`).
    async fn promote(&self, promotion: Promotion) -> Result<ApplyCounts> {
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
        Postgres::clear_shadow_in(&mut tx).await?;
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
