//! Row decoding shared by the SQL backends.
//!
//! Both backends select the same columns in the same order; they differ only in how a few
//! values are encoded (timestamps, dates, counters). [`Dialect`] names those encodings, and its
//! provided methods turn rows into domain values once for both.

use chrono::{DateTime, NaiveDate, Utc};
use salesync_core::Result;
use salesync_core::activity::{ReminderTask, UnsubscribeState};
use salesync_core::person::Person;
use salesync_core::ports::store::{Checkpoint, OutboxItem, StreamId, Tombstone};
use sqlx::{ColumnIndex, Database, Decode, Row, Type};

use crate::codec;
use crate::error;

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

    /// A row of `PEOPLE_COLS` as a person.
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
