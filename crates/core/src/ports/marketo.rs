//! The Marketo port.

use async_trait::async_trait;
use bytes_stream::ByteStream;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use super::Page;
use crate::error::Result;
use crate::mapping::LeadRecord;

/// Byte streams for bulk files.
pub mod bytes_stream {
    use futures::stream::BoxStream;

    /// A stream of file chunks.
    pub type ByteStream = BoxStream<'static, crate::error::Result<Vec<u8>>>;
}

/// A Marketo activity, as read for the insight panel and the incremental sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// `marketoGUID`: the stable key.
    pub guid: String,
    /// Numeric `id` when present (may exceed i32).
    pub id: Option<i64>,
    /// The lead.
    pub lead_id: i64,
    /// When it happened.
    pub activity_date: DateTime<Utc>,
    /// Activity type id.
    pub activity_type_id: i64,
    /// `primaryAttributeValue`.
    pub primary_attribute_value: Option<String>,
    /// `attributes` as `(name, value)`; values are JSON of any type.
    pub attributes: Vec<(String, serde_json::Value)>,
    /// For lead changes (13): `fields[{name, newValue, oldValue}]`.
    pub changed_fields: Vec<ChangedField>,
}

impl Activity {
    /// An attribute's value by name.
    pub fn attribute(&self, name: &str) -> Option<&serde_json::Value> {
        self.attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// One changed field of a Change Data Value activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangedField {
    /// REST field name.
    pub name: String,
    /// New value.
    pub new_value: Option<serde_json::Value>,
    /// Old value.
    pub old_value: Option<serde_json::Value>,
}

/// A Marketo activity type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityType {
    /// Type id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// `apiName` of custom types.
    pub api_name: Option<String>,
}

/// What the instance's lead describe says salesync can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LeadSchema {
    /// REST names of every lead field.
    pub fields: Vec<String>,
    /// Fields usable as `filterType`.
    pub searchable: Vec<String>,
}

impl LeadSchema {
    /// True when the instance has this REST field.
    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f == name)
    }
}

/// Filter of a bulk lead export (exactly one per job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportFilter {
    /// `createdAt` window (≤ 31 days, no milliseconds).
    CreatedAt {
        /// Inclusive start.
        start: DateTime<Utc>,
        /// Inclusive end.
        end: DateTime<Utc>,
    },
    /// `updatedAt` window (may be unsupported: 1035).
    UpdatedAt {
        /// Inclusive start.
        start: DateTime<Utc>,
        /// Inclusive end.
        end: DateTime<Utc>,
    },
}

/// Status of a bulk export job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportState {
    /// Created, not queued.
    Created,
    /// Queued.
    Queued,
    /// Processing.
    Processing,
    /// Completed: the file can be downloaded.
    Completed,
    /// Failed.
    Failed,
    /// Cancelled (Marketo spells it both ways).
    Cancelled,
}

/// A bulk export job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportJob {
    /// `exportId`.
    pub id: String,
    /// State.
    pub state: ExportState,
    /// Records in the file, once completed.
    pub records: Option<u64>,
    /// File size in bytes, once completed.
    pub file_size: Option<u64>,
    /// `sha256:<hex>` checksum, once completed.
    pub checksum: Option<String>,
    /// Error message when failed.
    pub error: Option<String>,
}

/// A custom activity type salesync provisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomActivityTypeDef {
    /// Namespaced apiName.
    pub api_name: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Trigger name.
    pub trigger_name: String,
    /// Filter name.
    pub filter_name: String,
    /// Primary attribute `(apiName, name)`.
    pub primary_attribute: (String, String),
    /// Secondary attributes `(apiName, name, dataType)`.
    pub attributes: Vec<(String, String, String)>,
}

/// A provisioned (approved) custom activity type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionedType {
    /// apiName.
    pub api_name: String,
    /// Numeric type id to log activities with.
    pub id: i64,
    /// True when salesync created it in this call (false: it already existed).
    pub created: bool,
}

/// One custom activity to add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCustomActivity {
    /// The lead.
    pub lead_id: i64,
    /// When.
    pub activity_date: DateTime<Utc>,
    /// Type id.
    pub activity_type_id: i64,
    /// Primary attribute value.
    pub primary_attribute_value: String,
    /// Secondary attributes `(apiName, value)`.
    pub attributes: Vec<(String, String)>,
}

/// Per-record outcome of a write (same order as the input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordOutcome {
    /// Written; the new record's id.
    Written {
        /// Id (Marketo GUID / Salesforce id).
        id: String,
    },
    /// Skipped or failed, with the raw code and message.
    Rejected {
        /// Raw error code (e.g. "1004").
        code: String,
        /// Raw message.
        message: String,
    },
}

/// Everything salesync needs from Marketo. Implemented by `salesync-marketo`.
///
/// Listing operations return one page per call and take the previous page's token, so the
/// engine can checkpoint after each page; connectors also offer these as streams.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait MarketoApi: Send + Sync + std::fmt::Debug {
    /// The instance's lead field names and searchable fields (`describe2`).
    async fn lead_schema(&self) -> Result<LeadSchema>;

    /// Current records of up to 300 leads by id, with the given fields.
    async fn leads_by_ids(&self, ids: &[i64], fields: &[String]) -> Result<Vec<LeadRecord>>;

    /// One page of leads by filter (`filterType`, ≤300 `filterValues`).
    async fn leads_by_filter(
        &self,
        filter_type: &str,
        values: &[String],
        fields: &[String],
        page_token: Option<String>,
    ) -> Result<Page<LeadRecord>>;

    /// A paging token for activities since `since`.
    async fn paging_token(&self, since: DateTime<Utc>) -> Result<String>;

    /// One page of lead changes (New Lead 12, Change Data Value 13) restricted to `fields`.
    async fn lead_changes(&self, token: &str, fields: &[String]) -> Result<Page<Activity>>;

    /// One page of Delete Lead (37) activities.
    async fn deleted_leads(&self, token: &str) -> Result<Page<Activity>>;

    /// One page of activities of the given types (≤10), optionally for some leads (≤30).
    async fn activities(&self, token: &str, type_ids: &[i64], lead_ids: &[i64]) -> Result<Page<Activity>>;

    /// All activity types of the instance.
    async fn activity_types(&self) -> Result<Vec<ActivityType>>;

    /// Creates and enqueues a bulk lead export.
    async fn start_lead_export(&self, fields: &[String], filter: ExportFilter) -> Result<ExportJob>;

    /// Status of a bulk export.
    async fn lead_export_status(&self, export_id: &str) -> Result<ExportJob>;

    /// The export file from byte `offset` on, streamed.
    async fn lead_export_file(&self, export_id: &str, offset: u64) -> Result<ByteStream>;

    /// Cancels a bulk export.
    async fn cancel_lead_export(&self, export_id: &str) -> Result<()>;

    /// Finds or creates and approves the given custom activity types (idempotent).
    async fn ensure_custom_activity_types(&self, defs: &[CustomActivityTypeDef]) -> Result<Vec<ProvisionedType>>;

    /// Adds up to 300 custom activities; one outcome per input, in order.
    async fn add_custom_activities(&self, items: &[NewCustomActivity]) -> Result<Vec<RecordOutcome>>;

    /// Marketo's live `unsubscribed` flag for a lead (`None`: lead not found).
    async fn lead_unsubscribed(&self, lead_id: i64) -> Result<Option<bool>>;

    /// Calls the whole instance (every integration) has made today by Marketo's count
    /// (`GET /rest/v1/stats/usage.json`), `None` when the implementation cannot tell. The call
    /// itself counts against the quota.
    async fn usage_today(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// The client's current share of the instance's shared limits, when it adapts them
    /// (`None` for implementations without a client-side limiter).
    fn rate_budget(&self) -> Option<RateBudget> {
        None
    }
}

/// A Marketo client's adaptive share of its instance's limits (100 calls / 20 s and 10 calls in
/// flight, shared by every integration of the instance), as it stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateBudget {
    /// Calls the client lets into one rate window now.
    pub calls_per_window: u32,
    /// The configured ceiling of `calls_per_window`.
    pub ceiling: u32,
    /// The rate window, in milliseconds.
    pub window_ms: u64,
    /// Calls the client lets be in flight at once now.
    pub in_flight_limit: u32,
    /// The configured ceiling of `in_flight_limit`.
    pub in_flight_ceiling: u32,
    /// Calls sent since the client was built.
    pub calls: u64,
    /// Of those, answered 606 (the shared rate window was full).
    pub rate_limited: u64,
    /// Of those, answered 615 (the shared in-flight limit was reached).
    pub concurrency_limited: u64,
    /// Times the budget was cut because the shared window or in-flight limit was full.
    pub decreases: u64,
}

/// A stream of pages, for hosts that prefer streams over tokens.
pub type PageStream<T> = BoxStream<'static, Result<Page<T>>>;
