//! The emulator's configuration, the faults it can inject, its call log entries and the causes of
//! its refusals: the public vocabulary every other module of the emulator reads.

use std::net::SocketAddr;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::envelope;
use super::limits::{BusyModel, CoTenant, MarketoLimits};
use crate::clock::Clock;

/// Emulator configuration. `Default` gives Marketo's documented behaviour on an ephemeral port.
#[derive(Debug, Clone)]
pub struct MarketoConfig {
    /// Client id accepted by identity.
    pub client_id: String,
    /// Client secret accepted by identity.
    pub client_secret: String,
    /// More (client id, secret) pairs, e.g. to test that bulk jobs are private to their creator.
    pub additional_clients: Vec<(String, String)>,
    /// Identity `scope` (the API-only user).
    pub api_user: String,
    /// Access-token lifetime (3600 s).
    pub token_ttl: chrono::Duration,
    /// Rate, concurrency, quota and size limits.
    pub limits: MarketoLimits,
    /// Time source for tokens, windows, activity dates and retention.
    pub clock: Clock,
    /// Address to bind (`127.0.0.1:0` by default).
    pub bind: SocketAddr,
    /// Artificial delay of every admitted API call, spent while counted as in flight.
    pub latency: Option<std::time::Duration>,
    /// Whether `sfdcOpptyId` is a returnable lead field (default false).
    pub expose_oppty_id: bool,
    /// Whether the instance has `linkedInProfileURL` (default true).
    pub linkedin_field: bool,
    /// Whether the bulk lead `updatedAt` filter is available (false → 1035).
    pub bulk_updated_at_filter: bool,
    /// Seed for request ids.
    pub fault_seed: u64,
    /// Activities scanned per activities/leadchanges/deletedleads call (0 = unlimited). A small value
    /// produces short or empty pages with `moreResult: true`, as the real service does.
    pub scan_block: usize,
    /// Fixed clock time a bulk job spends in Processing (default 0).
    pub bulk_processing_time: chrono::Duration,
    /// Further clock time a bulk job spends in Processing per 1,000 exported rows, on top of
    /// [`MarketoConfig::bulk_processing_time`] (default 0, for tests; benches that want realistic
    /// timing use [`REALISTIC_BULK_PROCESSING_PER_1000_ROWS_MS`]).
    pub bulk_processing_per_1000_rows: chrono::Duration,
    /// Other integrations sharing the instance's rate window and in-flight limit (default none).
    pub co_tenant: CoTenant,
    /// Random 606/615 "instance busy" answers (default none).
    pub busy: BusyModel,
    /// Answer 601 when the token is passed as an `access_token` query parameter (default true).
    pub reject_query_access_token: bool,
    /// How long Delete Lead activities stay visible through deletedleads.json (14 days).
    pub deleted_lead_retention: chrono::Duration,
    /// Max custom activity types (10).
    pub max_custom_activity_types: usize,
}

impl Default for MarketoConfig {
    fn default() -> Self {
        Self {
            client_id: "salesync-emulator-client".into(),
            client_secret: "salesync-emulator-secret".into(),
            additional_clients: Vec::new(),
            api_user: "salesync-api@example.com".into(),
            token_ttl: chrono::Duration::seconds(3600),
            limits: MarketoLimits::default(),
            clock: Clock::System,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            latency: None,
            expose_oppty_id: false,
            linkedin_field: true,
            bulk_updated_at_filter: true,
            fault_seed: 0,
            scan_block: 0,
            bulk_processing_time: chrono::Duration::zero(),
            bulk_processing_per_1000_rows: chrono::Duration::zero(),
            co_tenant: CoTenant::default(),
            busy: BusyModel::default(),
            reject_query_access_token: true,
            deleted_lead_retention: chrono::Duration::days(14),
            max_custom_activity_types: 10,
        }
    }
}

/// A realistic [`MarketoConfig::bulk_processing_per_1000_rows`] for benches, in milliseconds:
/// 200 ms per 1,000 rows, i.e. a 1,000,000-row export spends about 3 min 20 s in Processing (real
/// bulk extracts take in the order of minutes per million rows; the emulator's default is 0).
pub const REALISTIC_BULK_PROCESSING_PER_1000_ROWS_MS: i64 = 200;

/// An injected Marketo error: the code to answer with (HTTP 502 for `"502"`, else an HTTP 200 envelope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketoFault {
    /// Error code, e.g. `"606"`.
    pub code: String,
    /// Error message (a documented default when built with [`MarketoFault::code`]).
    pub message: String,
}

impl MarketoFault {
    /// A fault with the documented message for `code` (502, 601…615, 713, 1029, …).
    pub fn code(code: &str) -> Self {
        Self { code: code.to_string(), message: envelope::default_message(code).to_string() }
    }
}

/// One request as the emulator saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketoCall {
    /// Monotonic arrival time.
    pub at: Instant,
    /// Emulator-clock arrival time.
    pub clock_at: DateTime<Utc>,
    /// Effective method (`GET` for `POST …?_method=GET`).
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Whether it counted against the rate window and daily quota.
    pub counted: bool,
    /// `None` on success, else the error code (`"606"`, `"1003"`, `"401"`, `"414"`) or `"dropped"`
    /// / `"dropped-partial"` / `"malformed"` for injected transport faults.
    pub outcome: Option<String>,
    /// HTTP status sent (0 when the connection was dropped).
    pub http_status: u16,
    /// The client whose access token authenticated the call (`None` for identity calls and
    /// calls without a valid token): tells apart processes sharing one instance.
    pub client_id: Option<String>,
    /// Why the call was answered 606, 615 or 607 by the emulator's limits, its busy model or a
    /// fault-plan 606/615 (`None` for every other call).
    pub refusal: Option<Refusal>,
}

/// Who caused a 606 / 615 / 607 (see [`MarketoCall::refusal`] and [`LimitRejections`](super::LimitRejections)).
///
/// "Own" calls are the real calls that reached this emulator, whichever client made them; the
/// co-tenant ([`CoTenant`]) is the synthetic load of the instance's other integrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// 606 because the window was full of our own calls: it would have been full without the
    /// co-tenant too (the client overflowed the window itself).
    RateOwn,
    /// 606 because the window was full only counting the co-tenant's calls.
    RateShared,
    /// 606 injected: a random busy answer ([`BusyModel::rate_606_fraction`]) or a fault-plan 606.
    RateInjected,
    /// 615 because our own calls in flight exceeded the limit.
    ConcurrencyOwn,
    /// 615 because our calls in flight plus the co-tenant's exceeded the limit.
    ConcurrencyShared,
    /// 615 injected: a random busy answer ([`BusyModel::rate_615_fraction`]) or a fault-plan 615.
    ConcurrencyInjected,
    /// 607: the daily quota was used up.
    Quota,
}

impl Refusal {
    /// How many variants (the size of the counter array).
    pub(crate) const COUNT: usize = 7;

    /// Index of the variant's counter (`0..COUNT`).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The Marketo error code answered (`"606"`, `"615"` or `"607"`).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::RateOwn | Refusal::RateShared | Refusal::RateInjected => "606",
            Refusal::ConcurrencyOwn | Refusal::ConcurrencyShared | Refusal::ConcurrencyInjected => "615",
            Refusal::Quota => "607",
        }
    }
}
