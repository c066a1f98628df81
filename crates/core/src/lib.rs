//! salesync's domain: the fixed Marketo → mirror people mapping, owner qualification, mirror
//! rules, the sales activity model, and the ports (traits) the engine talks to.
//!
//! No I/O, no HTTP, no SQL lives here.
//!
//! - [`mapping`]: the one table from Marketo REST lead fields to [`person::Person`] (13 synced fields;
//!   the original document's heading says 11 but lists 13), the lenient per-record parser, and
//!   owner qualification.
//! - [`mirror`]: pure decisions (insert, update with changed fields, unchanged, remove with a
//!   reason). Duplicates by email are two people; nothing dedups.
//! - [`activity`]: the eight sales activity kinds, Salesforce task kinds, reminder tasks,
//!   unsubscribes, admin settings.
//! - [`outbound`]: pure outbound rules (custom activity types, Task plans, subject templates,
//!   reminder conflict resolution).
//! - [`ports`]: `MarketoApi`, `SalesforceApi`, `Store` (mockable with the `mock` feature).
//! - [`salesforce_codes`]: the one table of Salesforce error codes (diagnostics category and
//!   remedy) that the Salesforce connector and delivery both decide by.
//! - [`bulk_csv`]: the one bulk export CSV record reader (incremental, fed byte chunks), which
//!   the Marketo connector and the engine both read export files with.
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod activity;
pub mod bulk_csv;
pub mod clock;
pub mod endpoint;
pub mod error;
pub mod mapping;
pub mod mirror;
pub mod outbound;
pub mod person;
pub mod ports;
pub mod salesforce_codes;
pub mod sfid;

pub use error::{Error, Result};
