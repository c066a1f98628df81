#![doc = include_str!("../README.md")]
//!
//! Decorator order inside one call: session (cached, or a token request) → send → record
//! `Sforce-Limit-Info` → read the body (capped) → classify → (new session and one repeat |
//! backoff and repeat | typed error).
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod classify;
mod client;
mod config;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod limits;
mod ops;
mod soql;
mod token;

pub use classify::{Backoff, Failure, Verdict, classify};
pub use client::SalesforceClient;
pub use config::{
    ConfigKey, DEFAULT_API_VERSION, DEFAULT_MAX_BODY_BYTES, DEFAULT_QUERY_BATCH_SIZE, DEFAULT_TASK_EXTERNAL_ID_FIELD,
    DEFAULT_TIMEOUT, RetryConfig, SalesforceClientBuilder,
};
pub use error::ApiError;
pub use limits::{LIMIT_INFO_HEADER, LimitInfo, PerAppUsage, parse_limit_info};
pub use ops::{CREATE_ONLY_FIELDS, MAX_BATCH, TASK_FIELDS, parse_datetime};
/// The trait of [`ConfigKey`] (its environment variable: `ConfigKey::Url.env_var()`).
pub use salesync_http::EnvKey;
pub use soql::{Condition, LikeMatch, Literal, Soql, SoqlError};
