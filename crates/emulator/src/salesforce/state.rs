//! The mutable state behind the server's one lock: the org, the sessions, the API usage, query
//! cursors and Bulk API 2.0 jobs.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};

use super::auth::Tokens;
use super::jobs::{BulkJob, IngestJob};
use super::limits::RollingDay;
use super::soql::Query;
use super::store::{Id18, Org};

/// How long a query job is kept after creation (Salesforce deletes query jobs after 7 days).
const QUERY_JOB_RETENTION_DAYS: i64 = 7;

/// A query cursor kept for `nextRecordsUrl`: the query and the ids of its result rows, selected
/// once; each page renders its own rows.
pub(crate) struct Cursor {
    pub(crate) query: Query,
    pub(crate) ids: Vec<Id18>,
    pub(crate) all_rows: bool,
    pub(crate) batch: usize,
    pub(crate) last_used: DateTime<Utc>,
}

/// Mutable state behind one lock.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) org: Org,
    pub(crate) tokens: Tokens,
    /// API requests of the rolling 24 hours (`DailyApiRequests`).
    usage: RollingDay,
    pub(crate) cursors: HashMap<String, Cursor>,
    pub(crate) cursor_seq: u64,
    /// Bulk API 2.0 query jobs by id.
    pub(crate) bulk_jobs: BTreeMap<String, BulkJob>,
    pub(crate) bulk_seq: u64,
    /// Creation times of the query jobs of the rolling 24 hours (`DailyBulkV2QueryJobs`).
    pub(crate) bulk_created: RollingDay,
    /// Bulk API 2.0 ingest jobs by id (ids from the same sequence as the query jobs).
    pub(crate) ingest_jobs: BTreeMap<String, IngestJob>,
}

impl State {
    /// Counts `n` more API calls at `now` (a composite batch counts each subrequest).
    pub(crate) fn count_calls(&mut self, now: DateTime<Utc>, n: usize) {
        self.usage.add(now, n);
    }

    /// Calls in the rolling window.
    pub(crate) fn used(&mut self, now: DateTime<Utc>) -> u64 {
        self.usage.count(now)
    }

    /// Drops the query jobs past their retention.
    pub(crate) fn prune_query_jobs(&mut self, now: DateTime<Utc>) {
        self.bulk_jobs.retain(|_, j| j.head.created + Duration::days(QUERY_JOB_RETENTION_DAYS) > now);
    }

    /// Query jobs created in the rolling 24 hours.
    pub(crate) fn query_jobs_today(&mut self, now: DateTime<Utc>) -> u64 {
        self.prune_query_jobs(now);
        self.bulk_created.count(now)
    }
}
