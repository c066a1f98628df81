//! salesync's Marketo Engage connector.
//!
//! [`MarketoClient`] implements [`salesync_core::ports::marketo::MarketoApi`] over Marketo's REST
//! and Bulk APIs:
//!
//! - **Auth**: a cached access token refreshed ahead of expiry, sent only as a Bearer header; on
//!   601/602 the token is refreshed once and the request repeated once. Secrets never appear in
//!   `Debug` output, errors or logs.
//! - **Limits**, shared by every clone: a sliding-window limiter (default 100 calls per 20 s, a hard
//!   bound on any window), an in-flight semaphore (default 10) and an optional daily budget.
//! - **Retries** with exponential backoff and jitter on transient answers only ([`classify`]); a
//!   606 pauses the whole client for one window. Writes that may have been applied are never
//!   repeated blindly: `add_custom_activities` then fails with `Error::Unavailable` and code
//!   [`OUTCOME_UNKNOWN`].
//! - **Paging**: every listing has a one-page method (the trait) and a stream of pages
//!   ([`MarketoClient::lead_changes_stream`] …), each page carrying its continuation token.
//! - **Bulk**: export files stream chunk by chunk and resume with `Range` after a broken
//!   connection; [`bulk_csv_leads`] parses them incrementally.
//!
//! Decorator order inside one call: token → in-flight permit → rate slot → daily budget → send →
//! classify → (re-auth | backoff and repeat | typed error).
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod bulk_csv;
mod classify;
mod client;
mod config;
mod envelope;
mod error;
mod limiter;
mod ops;
mod token;
mod wire;

pub use bulk_csv::{CsvLeadParser, bulk_csv_leads, bulk_csv_leads_from_reader};
pub use classify::{Action, Backoff, Failure, classify};
pub use client::MarketoClient;
pub use config::{
    ConfigKey, DEFAULT_MAX_CONCURRENT, DEFAULT_RATE_CALLS, DEFAULT_RATE_WINDOW, DEFAULT_TIMEOUT, MarketoClientBuilder,
    RetryConfig,
};
pub use error::{FILE_NOT_READY, OUTCOME_UNKNOWN};
pub use ops::{
    BATCH_SIZE, MAX_ACTIVITY_LEAD_IDS, MAX_ACTIVITY_TYPE_IDS, MAX_CUSTOM_ACTIVITIES, MAX_CUSTOM_ATTRIBUTES,
    MAX_CUSTOM_TYPES, MAX_EMPTY_PAGES_FOLLOWED, MAX_EXPORT_WINDOW_DAYS, MAX_FILTER_VALUES,
};
