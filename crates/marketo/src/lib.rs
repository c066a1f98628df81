#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod bulk_csv;
mod classify;
mod client;
mod config;
mod envelope;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod limits;
mod ops;
mod token;
mod wire;

pub use bulk_csv::{CsvLeadParser, bulk_csv_leads, bulk_csv_leads_from_reader};
pub use classify::{Backoff, Failure, Verdict, classify};
pub use client::MarketoClient;
pub use config::{
    ConfigKey, DEFAULT_MAX_CONCURRENT, DEFAULT_RATE_CALLS, DEFAULT_RATE_WINDOW, DEFAULT_TIMEOUT, MarketoClientBuilder,
    RetryConfig,
};
pub use error::FILE_NOT_READY;
pub use ops::{
    BATCH_SIZE, MAX_ACTIVITY_LEAD_IDS, MAX_ACTIVITY_TYPE_IDS, MAX_CUSTOM_ACTIVITIES, MAX_CUSTOM_ATTRIBUTES,
    MAX_CUSTOM_TYPES, MAX_EMPTY_PAGES_FOLLOWED, MAX_EXPORT_WINDOW_DAYS, MAX_FILTER_VALUES,
};
/// The trait of [`ConfigKey`] (its environment variable: `ConfigKey::Url.env_var()`).
pub use salesync_http::EnvKey;
