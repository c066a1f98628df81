//! # salesync
//!
//! An embeddable Rust library that runs the sales-data sync of Marketo Sales Insight Actions:
//! it mirrors qualified people (Salesforce leads and contacts with a sales owner) from Marketo
//! Engage into the host's own database, keeps the mirror current, and logs sales activity back
//! to Marketo (as activities) and Salesforce (as Tasks).
//!
//! This crate is a thin facade over the workspace crates, each behind a cargo feature:
//!
//! | module | crate | feature |
//! |---|---|---|
//! | [`core`] | `salesync-core`: domain model, 13-field mapping, qualification, mirror rules, ports | always |
//! | `store` | `salesync-store`: memory, SQLite, PostgreSQL stores opened from a URL | `store`, `sqlite` (default), `postgres` |
//! | `marketo` | `salesync-marketo`: the Marketo REST/Bulk connector | `marketo` (default) |
//! | `salesforce` | `salesync-salesforce`: the Salesforce REST connector | `salesforce` (default) |
//! | `engine` | `salesync-engine`: the inbound people sync | `engine` (default) |
//! | `delivery` | `salesync-delivery`: outbound activities, unsubscribes, reminder tasks | `delivery` (default) |
//! | `emulator` | `salesync-emulator`: Marketo and Salesforce API emulators | `emulator` |
//!
//! The README follows.
//!
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub use salesync_core as core;
#[cfg(feature = "delivery")]
pub use salesync_delivery as delivery;
#[cfg(feature = "emulator")]
pub use salesync_emulator as emulator;
#[cfg(feature = "engine")]
pub use salesync_engine as engine;
#[cfg(feature = "marketo")]
pub use salesync_marketo as marketo;
#[cfg(feature = "salesforce")]
pub use salesync_salesforce as salesforce;
#[cfg(feature = "store")]
pub use salesync_store as store;
