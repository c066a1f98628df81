//! What the SQL backends share: row decoding, the statements both run alike, and the store
//! traits themselves.
//!
//! Both backends select the same columns in the same order; they differ only in how a few
//! values are encoded (timestamps, dates, counters, id lists, JSON columns). [`Dialect`] names
//! those encodings, and its provided methods turn rows into domain values once for both;
//! [`Statements`] holds the statements both run alike (`$n` parameters, which SQLite reads too);
//! [`sql_store_impls!`] writes every store trait once for both, on top of those statements and
//! the few inherent methods where the backends really differ (page upserts, claims, outcomes,
//! shadow promotion).

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use salesync_core::Result;
use salesync_core::activity::{AdminSettings, ReminderTask, UnsubscribeState};
use salesync_core::person::Person;
use salesync_core::ports::store::{
    Checkpoint, InboundBatch, OutboxCounts, OutboxItem, OutboxState, Recording, StreamId, Tombstone,
};
use salesync_core::sfid::SalesforceId;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use crate::codec;
use crate::error;

/// Which copy of the mirror a statement works on: the live one hosts read, or the shadow a
/// rebuild fills (see `ShadowStore`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mirror {
    /// `people` and `checkpoints`.
    Live,
    /// `shadow_people` and `shadow_checkpoints`.
    Shadow,
}

impl Mirror {
    /// The table of its people.
    pub(crate) fn people(self) -> &'static str {
        match self {
            Mirror::Live => "people",
            Mirror::Shadow => "shadow_people",
        }
    }

    /// The table of its checkpoints.
    pub(crate) fn checkpoints(self) -> &'static str {
        match self {
            Mirror::Live => "checkpoints",
            Mirror::Shadow => "shadow_checkpoints",
        }
    }
}

/// The people columns but `mirror_updated_at`, in `PEOPLE_COLS` order.
macro_rules! people_data_cols {
    () => {
        "marketo_id, first_name, last_name, salesforce_contact_id, salesforce_lead_id, salesforce_account_id, \
         opportunity_source, opportunity_id, company, title, email, phone, linkedin_url, source, salesforce_type, \
         owner_id, marketo_updated_at"
    };
}

/// The people columns but `mirror_updated_at` (to copy rows with a new stamp).
pub(crate) const PEOPLE_DATA_COLS: &str = people_data_cols!();

/// The columns of `people` and `shadow_people`, in the order [`Dialect::person`] decodes.
pub(crate) const PEOPLE_COLS: &str = concat!(people_data_cols!(), ", mirror_updated_at");

/// The columns of `reminders`, in the order [`Dialect::reminder`] decodes.
pub(crate) const REMINDER_COLS: &str =
    "id, marketo_id, subject, status, priority, due_date, details, salesforce_task_id, deleted, updated_at";

/// The conflict clause that makes an insert of `PEOPLE_COLS` rows replace existing people.
pub(crate) const PEOPLE_ON_CONFLICT: &str = "ON CONFLICT (marketo_id) DO UPDATE SET first_name = excluded.first_name, \
     last_name = excluded.last_name, salesforce_contact_id = excluded.salesforce_contact_id, \
     salesforce_lead_id = excluded.salesforce_lead_id, salesforce_account_id = excluded.salesforce_account_id, \
     opportunity_source = excluded.opportunity_source, opportunity_id = excluded.opportunity_id, \
     company = excluded.company, title = excluded.title, email = excluded.email, phone = excluded.phone, \
     linkedin_url = excluded.linkedin_url, source = excluded.source, \
     salesforce_type = excluded.salesforce_type, owner_id = excluded.owner_id, \
     marketo_updated_at = excluded.marketo_updated_at, mirror_updated_at = excluded.mirror_updated_at";

/// The `WHERE` condition (after `WHERE`) selecting the people of `mirror` whose Salesforce lead
/// or contact id is the statement's first parameter (`p1`: `?1` or `$1`), by id.
pub(crate) fn by_salesforce_id(mirror: Mirror, p1: &str) -> String {
    let table = mirror.people();
    format!(
        "marketo_id IN (SELECT marketo_id FROM {table} WHERE salesforce_lead_id = {p1} \
         UNION SELECT marketo_id FROM {table} WHERE salesforce_contact_id = {p1}) ORDER BY marketo_id"
    )
}

/// A SQL backend's column encodings, and the row decoders built on them.
///
/// Rows must carry the backends' `PEOPLE_COLS`, `OUTBOX_COLS` and `REMINDER_COLS` in order.
pub(crate) trait Dialect: Database
where
    usize: ColumnIndex<Self::Row>,
    for<'r> String: Decode<'r, Self> + Type<Self>,
    for<'r> i64: Decode<'r, Self> + Type<Self>,
    for<'r> bool: Decode<'r, Self> + Type<Self>,
{
    /// The backend's name in errors.
    const BACKEND: &'static str;
    /// How a timestamp column decodes.
    type Time: for<'r> Decode<'r, Self> + Type<Self>;
    /// How a date column decodes.
    type Day: for<'r> Decode<'r, Self> + Type<Self>;
    /// How the outbox `attempts` counter decodes.
    type Count: for<'r> Decode<'r, Self> + Type<Self>;

    /// A decoded timestamp column as a time.
    fn time(v: Self::Time) -> Result<DateTime<Utc>>;
    /// A decoded date column as a date.
    fn day(v: Self::Day) -> Result<NaiveDate>;
    /// A decoded `attempts` column as a count.
    fn count(v: Self::Count) -> u32;
    /// How many rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Maps a sqlx error of `context` to core's error.
    fn db(context: &str) -> impl FnOnce(sqlx::Error) -> salesync_core::Error + '_ {
        move |e| error::sql::map(Self::BACKEND, context, e)
    }

    /// A row of [`PEOPLE_COLS`] as a person.
    fn person(r: &Self::Row) -> Result<Person> {
        let get = |e: sqlx::Error| error::sql::map(Self::BACKEND, "reading a person", e);
        let opp_source: String = r.try_get(6).map_err(get)?;
        let opp_id: Option<String> = r.try_get(7).map_err(get)?;
        let sf_type: String = r.try_get(14).map_err(get)?;
        let owner: String = r.try_get(15).map_err(get)?;
        Ok(Person {
            marketo_id: r.try_get(0).map_err(get)?,
            first_name: r.try_get(1).map_err(get)?,
            last_name: r.try_get(2).map_err(get)?,
            salesforce_contact_id: codec::opt_sfid(Self::BACKEND, "salesforce_contact_id", r.try_get(3).map_err(get)?)?,
            salesforce_lead_id: codec::opt_sfid(Self::BACKEND, "salesforce_lead_id", r.try_get(4).map_err(get)?)?,
            salesforce_account_id: codec::opt_sfid(Self::BACKEND, "salesforce_account_id", r.try_get(5).map_err(get)?)?,
            salesforce_opportunity: codec::parse_opportunity(Self::BACKEND, &opp_source, opp_id.as_deref())?,
            company: r.try_get(8).map_err(get)?,
            title: r.try_get(9).map_err(get)?,
            email: r.try_get(10).map_err(get)?,
            phone: r.try_get(11).map_err(get)?,
            linkedin_url: r.try_get(12).map_err(get)?,
            source: r.try_get(13).map_err(get)?,
            salesforce_type: codec::parse_sf_type(Self::BACKEND, &sf_type)?,
            owner_id: codec::parse_sfid(Self::BACKEND, "owner_id", &owner)?,
            marketo_updated_at: r.try_get::<Option<Self::Time>, _>(16).map_err(get)?.map(Self::time).transpose()?,
            mirror_updated_at: Self::time(r.try_get(17).map_err(get)?)?,
        })
    }

    /// A row of `OUTBOX_COLS` as an outbox item.
    fn outbox_item(r: &Self::Row) -> Result<OutboxItem> {
        let get = |e: sqlx::Error| error::sql::map(Self::BACKEND, "reading an outbox item", e);
        let target: String = r.try_get(2).map_err(get)?;
        let payload: String = r.try_get(3).map_err(get)?;
        let state: String = r.try_get(4).map_err(get)?;
        Ok(OutboxItem {
            id: r.try_get(0).map_err(get)?,
            key: r.try_get(1).map_err(get)?,
            target: codec::parse_target(Self::BACKEND, &target)?,
            payload: codec::from_json(Self::BACKEND, "outbox payload", &payload)?,
            state: codec::parse_state(Self::BACKEND, &state)?,
            attempts: Self::count(r.try_get(5).map_err(get)?),
            next_attempt_at: Self::time(r.try_get(6).map_err(get)?)?,
            last_error: r.try_get(7).map_err(get)?,
            result: r.try_get(8).map_err(get)?,
            lease_owner: r.try_get(9).map_err(get)?,
            lease_until: r.try_get::<Option<Self::Time>, _>(10).map_err(get)?.map(Self::time).transpose()?,
            created_at: Self::time(r.try_get(11).map_err(get)?)?,
            outcome_unknown: r.try_get(12).map_err(get)?,
        })
    }

    /// A row of `REMINDER_COLS` as a reminder task.
    fn reminder(r: &Self::Row) -> Result<ReminderTask> {
        let get = |e: sqlx::Error| error::sql::map(Self::BACKEND, "reading a reminder", e);
        let status: String = r.try_get(3).map_err(get)?;
        let priority: String = r.try_get(4).map_err(get)?;
        Ok(ReminderTask {
            id: r.try_get(0).map_err(get)?,
            marketo_id: r.try_get(1).map_err(get)?,
            subject: r.try_get(2).map_err(get)?,
            status: codec::parse_status(Self::BACKEND, &status)?,
            priority: codec::parse_priority(Self::BACKEND, &priority)?,
            due_date: r.try_get::<Option<Self::Day>, _>(5).map_err(get)?.map(Self::day).transpose()?,
            details: r.try_get(6).map_err(get)?,
            salesforce_task_id: codec::opt_sfid(Self::BACKEND, "salesforce_task_id", r.try_get(7).map_err(get)?)?,
            deleted: r.try_get(8).map_err(get)?,
            updated_at: Self::time(r.try_get(9).map_err(get)?)?,
        })
    }

    /// A `(reason, removed_at)` tombstone row.
    fn tombstone(marketo_id: i64, (reason, removed_at): (String, Self::Time)) -> Result<Tombstone> {
        Ok(Tombstone {
            marketo_id,
            reason: codec::from_json(Self::BACKEND, "removal reason", &reason)?,
            removed_at: Self::time(removed_at)?,
        })
    }

    /// A `(position, updated_at)` checkpoint row.
    fn checkpoint(stream: StreamId, (position, updated_at): (String, Self::Time)) -> Result<Checkpoint> {
        Ok(Checkpoint {
            stream,
            position: codec::from_json(Self::BACKEND, "checkpoint", &position)?,
            updated_at: Self::time(updated_at)?,
        })
    }

    /// An `(unsubscribed, origin, at)` unsubscribe row.
    fn unsubscribe(
        marketo_id: i64,
        (unsubscribed, origin, at): (bool, String, Self::Time),
    ) -> Result<UnsubscribeState> {
        Ok(UnsubscribeState {
            marketo_id,
            unsubscribed,
            origin: codec::parse_origin(Self::BACKEND, &origin)?,
            at: Self::time(at)?,
        })
    }
}

/// A SQL backend's statements: the upserts of the small tables with how it encodes times, dates
/// and id lists, and (as provided methods) every statement both backends run alike.
///
/// The statements bind, in order: checkpoint `(stream, position JSON, updated_at)` (live and
/// shadow); reminder
/// `(id, marketo_id, subject, status, priority, due_date, details, salesforce_task_id, deleted,
/// updated_at)`; unsubscribe `(marketo_id, unsubscribed, origin, at)`.
pub(crate) trait Statements: Dialect
where
    usize: ColumnIndex<Self::Row>,
    for<'r> String: Decode<'r, Self> + Type<Self>,
    for<'r> i64: Decode<'r, Self> + Type<Self>,
    for<'r> bool: Decode<'r, Self> + Type<Self>,
    for<'c> &'c mut Self::Connection: Executor<'c, Database = Self>,
    for<'q> Self::Arguments<'q>: IntoArguments<'q, Self>,
    for<'q> String: Encode<'q, Self>,
    for<'q> &'q str: Encode<'q, Self> + Type<Self>,
    for<'q> Option<&'q str>: Encode<'q, Self>,
    for<'q> i64: Encode<'q, Self>,
    for<'q> bool: Encode<'q, Self>,
{
    /// Upserts a checkpoint.
    const PUT_CHECKPOINT: &'static str;
    /// Upserts a shadow checkpoint.
    const PUT_SHADOW_CHECKPOINT: &'static str;
    /// Upserts a reminder.
    const PUT_REMINDER: &'static str;
    /// Upserts an unsubscribe state.
    const PUT_UNSUBSCRIBE: &'static str;
    /// Inserts a pending outbox item `(key, target, payload JSON, next_attempt_at, created_at)`
    /// unless its key exists, returning its id.
    const INSERT_OUTBOX: &'static str;
    /// The id of the outbox item with key `$1`.
    const OUTBOX_ID_BY_KEY: &'static str;
    /// A time as its column value.
    type TimeArg: for<'q> Encode<'q, Self> + Type<Self> + Clone + Send + 'static;
    /// An optional date as its column value.
    type DayArg: for<'q> Encode<'q, Self> + Type<Self> + Send + 'static;
    /// A list of marketo ids as one parameter (see [`in_ids`](Self::in_ids)).
    type IdsArg: for<'q> Encode<'q, Self> + Type<Self> + Send + 'static;
    /// The cast that reads a JSON column as text (`""` where JSON is stored as text).
    const JSON_TEXT: &'static str;
    /// The outbox columns in the order [`Dialect::outbox_item`] decodes.
    const OUTBOX_COLS: &'static str;

    /// A list of ids as its parameter value.
    fn ids_arg(ids: &[i64]) -> Self::IdsArg;
    /// The condition "`column` is one of the ids bound at `param`".
    fn in_ids(column: &str, param: &str) -> String;

    /// A time as its column value (whole microseconds).
    fn time_arg(t: DateTime<Utc>) -> Self::TimeArg;
    /// An optional date as its column value.
    fn day_arg(d: Option<NaiveDate>) -> Self::DayArg;

    /// Writes a checkpoint of `mirror` on `conn`.
    async fn put_checkpoint_in(conn: &mut Self::Connection, mirror: Mirror, c: &Checkpoint) -> Result<()> {
        let position = codec::to_json(Self::BACKEND, "checkpoint", &c.position)?;
        let sql = match mirror {
            Mirror::Live => Self::PUT_CHECKPOINT,
            Mirror::Shadow => Self::PUT_SHADOW_CHECKPOINT,
        };
        sqlx::query(sql)
            .bind(c.stream.as_str())
            .bind(position)
            .bind(Self::time_arg(c.updated_at))
            .execute(&mut *conn)
            .await
            .map_err(|e| error::sql::map(Self::BACKEND, "writing a checkpoint", e))?;
        Ok(())
    }

    /// Writes a reminder on `conn`.
    async fn put_reminder_in(conn: &mut Self::Connection, r: &ReminderTask) -> Result<()> {
        sqlx::query(Self::PUT_REMINDER)
            .bind(r.id.as_str())
            .bind(r.marketo_id)
            .bind(r.subject.as_str())
            .bind(codec::status_str(r.status))
            .bind(codec::priority_str(r.priority))
            .bind(Self::day_arg(r.due_date))
            .bind(r.details.as_deref())
            .bind(r.salesforce_task_id.as_ref().map(SalesforceId::as_str))
            .bind(r.deleted)
            .bind(Self::time_arg(r.updated_at))
            .execute(&mut *conn)
            .await
            .map_err(|e| error::sql::map(Self::BACKEND, "writing a reminder", e))?;
        Ok(())
    }

    /// Writes an unsubscribe state on `conn`.
    async fn put_unsubscribe_in(conn: &mut Self::Connection, u: &UnsubscribeState) -> Result<()> {
        sqlx::query(Self::PUT_UNSUBSCRIBE)
            .bind(u.marketo_id)
            .bind(u.unsubscribed)
            .bind(codec::origin_str(u.origin))
            .bind(Self::time_arg(u.at))
            .execute(&mut *conn)
            .await
            .map_err(|e| error::sql::map(Self::BACKEND, "writing an unsubscribe state", e))?;
        Ok(())
    }

    /// Writes a recording on `conn` (inside the caller's transaction): its unsubscribe state and
    /// reminder, then its outbox items, returning their ids (existing ids for keys already recorded).
    async fn record_in(conn: &mut Self::Connection, recording: &Recording) -> Result<Vec<i64>> {
        let now = Self::time_arg(Utc::now());
        let payloads = codec::payloads(Self::BACKEND, recording)?;
        if let Some(u) = &recording.unsubscribe {
            Self::put_unsubscribe_in(conn, u).await?;
        }
        if let Some(r) = &recording.reminder {
            Self::put_reminder_in(conn, r).await?;
        }
        let db = |context| move |e| error::sql::map(Self::BACKEND, context, e);
        let mut ids = Vec::with_capacity(recording.outbox.len());
        for (item, payload) in recording.outbox.iter().zip(payloads) {
            let inserted: Option<i64> = sqlx::query_scalar(Self::INSERT_OUTBOX)
                .bind(item.key.as_str())
                .bind(codec::target_str(item.target))
                .bind(payload)
                .bind(Self::time_arg(item.not_before))
                .bind(now.clone())
                .fetch_optional(&mut *conn)
                .await
                .map_err(db("recording an outbox item"))?;
            let id = match inserted {
                Some(id) => id,
                None => sqlx::query_scalar(Self::OUTBOX_ID_BY_KEY)
                    .bind(item.key.as_str())
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db("reading an existing outbox item"))?,
            };
            ids.push(id);
        }
        Ok(ids)
    }

    /// Writes an inbound batch on `conn` (inside the caller's transaction).
    async fn apply_inbound_in(conn: &mut Self::Connection, batch: &InboundBatch) -> Result<()> {
        for u in &batch.unsubscribes {
            Self::put_unsubscribe_in(conn, u).await?;
        }
        for r in &batch.reminders {
            Self::put_reminder_in(conn, r).await?;
        }
        if let Some(c) = &batch.checkpoint {
            Self::put_checkpoint_in(conn, Mirror::Live, c).await?;
        }
        Ok(())
    }

    /// Deletes every shadow row and shadow checkpoint on `conn` (inside the caller's transaction).
    async fn clear_shadow_in(conn: &mut Self::Connection) -> Result<()> {
        for table in [Mirror::Shadow.people(), Mirror::Shadow.checkpoints()] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *conn)
                .await
                .map_err(Self::db("clearing the shadow"))?;
        }
        Ok(())
    }

    // Statements both backends run alike (`$n` parameters: SQLite reads them too).

    /// The people of `mirror` matching `condition` (the SQL after `WHERE`, with parameters
    /// `$1`… that `bind` binds).
    async fn fetch_people_where(
        pool: &Pool<Self>,
        mirror: Mirror,
        condition: &str,
        bind: impl for<'q> FnOnce(Query<'q, Self, Self::Arguments<'q>>) -> Query<'q, Self, Self::Arguments<'q>> + Send,
    ) -> Result<Vec<Person>> {
        let sql = format!("SELECT {PEOPLE_COLS} FROM {} WHERE {condition}", mirror.people());
        let rows = bind(sqlx::query(&sql)).fetch_all(pool).await.map_err(Self::db("reading people"))?;
        rows.iter().map(Self::person).collect()
    }

    /// One person of the live mirror.
    async fn fetch_person(pool: &Pool<Self>, marketo_id: i64) -> Result<Option<Person>> {
        Ok(Self::fetch_people_where(pool, Mirror::Live, "marketo_id = $1", |q| q.bind(marketo_id)).await?.pop())
    }

    /// The people of `mirror` with these ids, by id.
    async fn fetch_people_by_ids(pool: &Pool<Self>, mirror: Mirror, ids: &[i64]) -> Result<Vec<Person>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = Self::ids_arg(ids);
        let condition = format!("{} ORDER BY marketo_id", Self::in_ids("marketo_id", "$1"));
        Self::fetch_people_where(pool, mirror, &condition, |q| q.bind(ids)).await
    }

    /// The live people with this email (any case), by id.
    async fn fetch_people_by_email(pool: &Pool<Self>, email: &str) -> Result<Vec<Person>> {
        let email = email.to_string();
        Self::fetch_people_where(pool, Mirror::Live, "lower(email) = lower($1) ORDER BY marketo_id", |q| q.bind(email))
            .await
    }

    /// The people of `mirror` with this Salesforce lead or contact id, by id.
    async fn fetch_people_by_salesforce_id(
        pool: &Pool<Self>,
        mirror: Mirror,
        id: &SalesforceId,
    ) -> Result<Vec<Person>> {
        let id = id.as_str().to_string();
        Self::fetch_people_where(pool, mirror, &by_salesforce_id(mirror, "$1"), |q| q.bind(id)).await
    }

    /// A page of the live people this owner owns, by id.
    async fn fetch_people_by_owner(
        pool: &Pool<Self>,
        owner: &SalesforceId,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Person>> {
        let owner = owner.as_str().to_string();
        let condition = "owner_id = $1 AND marketo_id > $2 ORDER BY marketo_id LIMIT $3";
        Self::fetch_people_where(pool, Mirror::Live, condition, |q| {
            q.bind(owner).bind(after.unwrap_or(i64::MIN)).bind(i64::from(limit))
        })
        .await
    }

    /// A page of the people of `mirror`, by id.
    async fn fetch_people_page(
        pool: &Pool<Self>,
        mirror: Mirror,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Person>> {
        Self::fetch_people_where(pool, mirror, "marketo_id > $1 ORDER BY marketo_id LIMIT $2", |q| {
            q.bind(after.unwrap_or(i64::MIN)).bind(i64::from(limit))
        })
        .await
    }

    /// How many people the live mirror holds.
    async fn count_people(pool: &Pool<Self>) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM people")
            .fetch_one(pool)
            .await
            .map_err(Self::db("counting people"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The tombstone of a removed person.
    async fn fetch_tombstone(pool: &Pool<Self>, marketo_id: i64) -> Result<Option<Tombstone>> {
        let sql = format!("SELECT reason{}, removed_at FROM tombstones WHERE marketo_id = $1", Self::JSON_TEXT);
        let row =
            sqlx::query(&sql).bind(marketo_id).fetch_optional(pool).await.map_err(Self::db("reading a tombstone"))?;
        row.map(|r| {
            let get = |e| error::sql::map(Self::BACKEND, "reading a tombstone", e);
            Self::tombstone(marketo_id, (r.try_get(0).map_err(get)?, r.try_get(1).map_err(get)?))
        })
        .transpose()
    }

    /// A checkpoint of `mirror`.
    async fn fetch_checkpoint(pool: &Pool<Self>, mirror: Mirror, stream: StreamId) -> Result<Option<Checkpoint>> {
        let sql =
            format!("SELECT position{}, updated_at FROM {} WHERE stream = $1", Self::JSON_TEXT, mirror.checkpoints());
        let row = sqlx::query(&sql)
            .bind(stream.as_str())
            .fetch_optional(pool)
            .await
            .map_err(Self::db("reading a checkpoint"))?;
        row.map(|r| {
            let get = |e| error::sql::map(Self::BACKEND, "reading a checkpoint", e);
            Self::checkpoint(stream, (r.try_get(0).map_err(get)?, r.try_get(1).map_err(get)?))
        })
        .transpose()
    }

    /// One outbox item.
    async fn fetch_outbox_item(pool: &Pool<Self>, id: i64) -> Result<Option<OutboxItem>> {
        let sql = format!("SELECT {} FROM outbox WHERE id = $1", Self::OUTBOX_COLS);
        let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await.map_err(Self::db("reading an outbox item"))?;
        row.as_ref().map(Self::outbox_item).transpose()
    }

    /// The first outbox items in `state`, by id.
    async fn fetch_outbox_items(pool: &Pool<Self>, state: OutboxState, limit: u32) -> Result<Vec<OutboxItem>> {
        let sql = format!("SELECT {} FROM outbox WHERE state = $1 ORDER BY id LIMIT $2", Self::OUTBOX_COLS);
        let rows = sqlx::query(&sql)
            .bind(codec::state_str(state))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(Self::db("listing outbox items"))?;
        rows.iter().map(Self::outbox_item).collect()
    }

    /// The outbox items by state.
    async fn count_outbox(pool: &Pool<Self>) -> Result<OutboxCounts> {
        let rows = sqlx::query("SELECT state, count(*) FROM outbox GROUP BY state")
            .fetch_all(pool)
            .await
            .map_err(Self::db("counting outbox items"))?;
        let get = |e| error::sql::map(Self::BACKEND, "counting outbox items", e);
        let rows =
            rows.iter().map(|r| Ok((r.try_get(0).map_err(get)?, r.try_get(1).map_err(get)?))).collect::<Result<_>>()?;
        codec::outbox_counts(Self::BACKEND, rows)
    }

    /// Puts parked items back to pending, due at `now`; returns how many moved.
    async fn requeue_parked(pool: &Pool<Self>, ids: &[i64], now: DateTime<Utc>) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE outbox SET state = 'pending', next_attempt_at = $1, attempts = 0 WHERE state = 'parked' AND {}",
            Self::in_ids("id", "$2")
        );
        let done = sqlx::query(&sql)
            .bind(Self::time_arg(now))
            .bind(Self::ids_arg(ids))
            .execute(pool)
            .await
            .map_err(Self::db("requeueing outbox items"))?;
        Ok(Self::rows_affected(&done))
    }

    /// The reminders matching `condition` (after `WHERE`, one parameter `$1` bound by `bind`).
    async fn fetch_reminders_where(
        pool: &Pool<Self>,
        condition: &str,
        bind: impl for<'q> FnOnce(Query<'q, Self, Self::Arguments<'q>>) -> Query<'q, Self, Self::Arguments<'q>> + Send,
    ) -> Result<Vec<ReminderTask>> {
        let sql = format!("SELECT {REMINDER_COLS} FROM reminders WHERE {condition}");
        let rows = bind(sqlx::query(&sql)).fetch_all(pool).await.map_err(Self::db("reading reminders"))?;
        rows.iter().map(Self::reminder).collect()
    }

    /// A reminder by its id.
    async fn fetch_reminder(pool: &Pool<Self>, id: &str) -> Result<Option<ReminderTask>> {
        let id = id.to_string();
        Ok(Self::fetch_reminders_where(pool, "id = $1", |q| q.bind(id)).await?.pop())
    }

    /// The first reminder (by id) linked to this Salesforce Task.
    async fn fetch_reminder_by_task(pool: &Pool<Self>, task_id: &SalesforceId) -> Result<Option<ReminderTask>> {
        let task_id = task_id.as_str().to_string();
        let condition = "salesforce_task_id = $1 ORDER BY id LIMIT 1";
        Ok(Self::fetch_reminders_where(pool, condition, |q| q.bind(task_id)).await?.pop())
    }

    /// The reminders of a person, by id.
    async fn fetch_reminders_for(pool: &Pool<Self>, marketo_id: i64) -> Result<Vec<ReminderTask>> {
        Self::fetch_reminders_where(pool, "marketo_id = $1 ORDER BY id", |q| q.bind(marketo_id)).await
    }

    /// Links a reminder to its Salesforce Task; false when there is no such reminder.
    async fn set_reminder_task(pool: &Pool<Self>, id: &str, task_id: &SalesforceId) -> Result<bool> {
        let done = sqlx::query("UPDATE reminders SET salesforce_task_id = $1 WHERE id = $2")
            .bind(task_id.as_str())
            .bind(id)
            .execute(pool)
            .await
            .map_err(Self::db("setting a reminder's Task id"))?;
        Ok(Self::rows_affected(&done) > 0)
    }

    /// A person's unsubscribe state.
    async fn fetch_unsubscribe(pool: &Pool<Self>, marketo_id: i64) -> Result<Option<UnsubscribeState>> {
        let row = sqlx::query("SELECT unsubscribed, origin, at FROM unsubscribes WHERE marketo_id = $1")
            .bind(marketo_id)
            .fetch_optional(pool)
            .await
            .map_err(Self::db("reading an unsubscribe state"))?;
        row.map(|r| {
            let get = |e| error::sql::map(Self::BACKEND, "reading an unsubscribe state", e);
            Self::unsubscribe(
                marketo_id,
                (r.try_get(0).map_err(get)?, r.try_get(1).map_err(get)?, r.try_get(2).map_err(get)?),
            )
        })
        .transpose()
    }

    /// A value of `salesync_meta`.
    async fn fetch_meta(pool: &Pool<Self>, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM salesync_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(pool)
            .await
            .map_err(Self::db("reading salesync_meta"))
    }

    /// The admin settings (defaults until written).
    async fn fetch_settings(pool: &Pool<Self>) -> Result<AdminSettings> {
        match Self::fetch_meta(pool, "settings").await? {
            Some(json) => codec::from_json(Self::BACKEND, "admin settings", &json),
            None => Ok(AdminSettings::default()),
        }
    }

    /// Statements the admin settings.
    async fn store_settings(pool: &Pool<Self>, settings: &AdminSettings) -> Result<()> {
        let json = codec::to_json(Self::BACKEND, "admin settings", settings)?;
        sqlx::query(
            "INSERT INTO salesync_meta (key, value) VALUES ('settings', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(json)
        .execute(pool)
        .await
        .map_err(Self::db("writing admin settings"))?;
        Ok(())
    }

    /// Binds the store to `instance` on `conn` (inside the caller's transaction) unless bound
    /// already; returns the instance it is bound to.
    async fn bind_instance_in(conn: &mut Self::Connection, instance: &str) -> Result<String> {
        sqlx::query("INSERT INTO salesync_meta (key, value) VALUES ('instance', $1) ON CONFLICT (key) DO NOTHING")
            .bind(instance)
            .execute(&mut *conn)
            .await
            .map_err(Self::db("binding the instance"))?;
        sqlx::query_scalar("SELECT value FROM salesync_meta WHERE key = 'instance'")
            .fetch_one(&mut *conn)
            .await
            .map_err(Self::db("reading the bound instance"))
    }

    /// Takes or renews a named lease for `holder` until `now + ttl`, unless another holder's
    /// lease is still running.
    async fn take_lease(
        pool: &Pool<Self>,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let got: Option<String> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4 RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(Self::time_arg(codec::lease_end(now, ttl)))
        .bind(Self::time_arg(now))
        .fetch_optional(pool)
        .await
        .map_err(Self::db("taking a lease"))?;
        Ok(got.is_some())
    }

    /// Gives up a named lease if `holder` holds it.
    async fn drop_lease(pool: &Pool<Self>, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(pool)
            .await
            .map_err(Self::db("releasing a lease"))?;
        Ok(())
    }
}

/// The store traits for a SQL backend `$store` on the database `$db`, written once: every method
/// is one of the shared statements above (on the `$reader` or `$writer` pool of the store) or
/// one of the backend's own inherent methods (`begin`, `apply_page_to`, `put_checkpoint_to`,
/// `claim_due`, `finish_claimed`, `promote`), which are where the two backends really differ.
macro_rules! sql_store_impls {
    ($store:ty, $db:ty, reader: $reader:ident, writer: $writer:ident) => {
        #[async_trait]
        impl InstanceBinding for $store {
            async fn bind_instance(&self, instance: &str) -> Result<()> {
                let mut tx = self.begin().await?;
                let bound = <$db>::bind_instance_in(&mut tx, instance).await?;
                tx.commit().await.map_err(<$db as $crate::sql::Dialect>::db("binding the instance"))?;
                if bound == instance { Ok(()) } else { Err(instance_conflict(&bound, instance)) }
            }
        }

        #[async_trait]
        impl MirrorStore for $store {
            async fn apply_page(&self, page: MirrorPage) -> Result<ApplyCounts> {
                self.apply_page_to(Mirror::Live, page).await
            }

            async fn person(&self, marketo_id: i64) -> Result<Option<Person>> {
                <$db>::fetch_person(&self.$reader, marketo_id).await
            }

            async fn people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>> {
                <$db>::fetch_people_by_ids(&self.$reader, Mirror::Live, ids).await
            }

            async fn people_by_email(&self, email: &str) -> Result<Vec<Person>> {
                <$db>::fetch_people_by_email(&self.$reader, email).await
            }

            async fn people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
                <$db>::fetch_people_by_salesforce_id(&self.$reader, Mirror::Live, id).await
            }

            async fn people_by_owner(
                &self,
                owner: &SalesforceId,
                after: Option<i64>,
                limit: u32,
            ) -> Result<Vec<Person>> {
                <$db>::fetch_people_by_owner(&self.$reader, owner, after, limit).await
            }

            async fn list_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
                <$db>::fetch_people_page(&self.$reader, Mirror::Live, after, limit).await
            }

            async fn count_people(&self) -> Result<u64> {
                <$db>::count_people(&self.$reader).await
            }

            async fn tombstone(&self, marketo_id: i64) -> Result<Option<Tombstone>> {
                <$db>::fetch_tombstone(&self.$reader, marketo_id).await
            }

            fn shadow(&self) -> Option<Arc<dyn ShadowStore>> {
                Some(Arc::new(self.clone()))
            }
        }

        #[async_trait]
        impl CheckpointStore for $store {
            async fn checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>> {
                <$db>::fetch_checkpoint(&self.$reader, Mirror::Live, stream).await
            }

            async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
                self.put_checkpoint_to(Mirror::Live, &checkpoint).await
            }
        }

        #[async_trait]
        impl OutboxStore for $store {
            async fn record(&self, recording: Recording) -> Result<Vec<i64>> {
                let mut tx = self.begin().await?;
                let ids = <$db>::record_in(&mut tx, &recording).await?;
                tx.commit().await.map_err(<$db as $crate::sql::Dialect>::db("committing a recording"))?;
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
                self.claim_due(target, limit, worker, lease, now).await
            }

            async fn finish(&self, finished: Vec<Finished>, now: DateTime<Utc>) -> Result<()> {
                if finished.is_empty() {
                    return Ok(());
                }
                self.finish_claimed(finished, now).await
            }

            async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>> {
                <$db>::fetch_outbox_item(&self.$reader, id).await
            }

            async fn outbox_items(&self, state: OutboxState, limit: u32) -> Result<Vec<OutboxItem>> {
                <$db>::fetch_outbox_items(&self.$reader, state, limit).await
            }

            async fn outbox_counts(&self) -> Result<OutboxCounts> {
                <$db>::count_outbox(&self.$reader).await
            }

            async fn requeue(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64> {
                <$db>::requeue_parked(&self.$writer, ids, now).await
            }
        }

        #[async_trait]
        impl ReminderStore for $store {
            async fn reminder(&self, id: &str) -> Result<Option<ReminderTask>> {
                <$db>::fetch_reminder(&self.$reader, id).await
            }

            async fn reminder_by_salesforce_id(&self, task_id: &SalesforceId) -> Result<Option<ReminderTask>> {
                <$db>::fetch_reminder_by_task(&self.$reader, task_id).await
            }

            async fn reminders_for(&self, marketo_id: i64) -> Result<Vec<ReminderTask>> {
                <$db>::fetch_reminders_for(&self.$reader, marketo_id).await
            }

            async fn put_reminder(&self, task: ReminderTask) -> Result<()> {
                let mut tx = self.begin().await?;
                <$db>::put_reminder_in(&mut tx, &task).await?;
                tx.commit().await.map_err(<$db as $crate::sql::Dialect>::db("writing a reminder"))
            }

            async fn set_reminder_task_id(&self, id: &str, task_id: &SalesforceId) -> Result<bool> {
                <$db>::set_reminder_task(&self.$writer, id, task_id).await
            }
        }

        #[async_trait]
        impl InboundStore for $store {
            async fn unsubscribe(&self, marketo_id: i64) -> Result<Option<UnsubscribeState>> {
                <$db>::fetch_unsubscribe(&self.$reader, marketo_id).await
            }

            async fn apply_inbound(&self, batch: InboundBatch) -> Result<()> {
                let mut tx = self.begin().await?;
                <$db>::apply_inbound_in(&mut tx, &batch).await?;
                tx.commit().await.map_err(<$db as $crate::sql::Dialect>::db("committing an inbound batch"))
            }
        }

        #[async_trait]
        impl SettingsStore for $store {
            async fn settings(&self) -> Result<AdminSettings> {
                <$db>::fetch_settings(&self.$reader).await
            }

            async fn put_settings(&self, settings: AdminSettings) -> Result<()> {
                <$db>::store_settings(&self.$writer, &settings).await
            }
        }

        #[async_trait]
        impl LeaseStore for $store {
            async fn try_lease(&self, name: &str, holder: &str, ttl: Duration, now: DateTime<Utc>) -> Result<bool> {
                <$db>::take_lease(&self.$writer, name, holder, ttl, now).await
            }

            async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
                <$db>::drop_lease(&self.$writer, name, holder).await
            }
        }

        #[async_trait]
        impl ShadowStore for $store {
            async fn apply_shadow_page(&self, page: MirrorPage) -> Result<ApplyCounts> {
                self.apply_page_to(Mirror::Shadow, page).await
            }

            async fn shadow_people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>> {
                <$db>::fetch_people_by_ids(&self.$reader, Mirror::Shadow, ids).await
            }

            async fn shadow_people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
                <$db>::fetch_people_by_salesforce_id(&self.$reader, Mirror::Shadow, id).await
            }

            async fn list_shadow_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
                <$db>::fetch_people_page(&self.$reader, Mirror::Shadow, after, limit).await
            }

            async fn shadow_checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>> {
                <$db>::fetch_checkpoint(&self.$reader, Mirror::Shadow, stream).await
            }

            async fn put_shadow_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
                self.put_checkpoint_to(Mirror::Shadow, &checkpoint).await
            }

            async fn clear_shadow(&self) -> Result<()> {
                let mut tx = self.begin().await?;
                <$db>::clear_shadow_in(&mut tx).await?;
                tx.commit().await.map_err(<$db as $crate::sql::Dialect>::db("clearing the shadow"))
            }

            async fn promote_shadow(&self, promotion: Promotion) -> Result<ApplyCounts> {
                self.promote(promotion).await
            }
        }
    };
}
pub(crate) use sql_store_impls;
