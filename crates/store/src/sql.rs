//! Row decoding shared by the SQL backends.
//!
//! Both backends select the same columns in the same order; they differ only in how a few
//! values are encoded (timestamps, dates, counters). [`Dialect`] names those encodings, and its
//! provided methods turn rows into domain values once for both.

use chrono::{DateTime, NaiveDate, Utc};
use salesync_core::Result;
use salesync_core::activity::{ReminderTask, UnsubscribeState};
use salesync_core::person::Person;
use salesync_core::ports::store::{Checkpoint, InboundBatch, OutboxItem, Recording, StreamId, Tombstone};
use salesync_core::sfid::SalesforceId;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

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

/// A SQL backend's upsert statements for the small tables, with how it encodes times and dates.
///
/// The statements bind, in order: checkpoint `(stream, position JSON, updated_at)` (live and
/// shadow); reminder
/// `(id, marketo_id, subject, status, priority, due_date, details, salesforce_task_id, deleted,
/// updated_at)`; unsubscribe `(marketo_id, unsubscribed, origin, at)`.
pub(crate) trait Writes: Dialect
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
}
