//! # salesync
//!
//! An embeddable Rust library that runs the sales-data sync of Marketo Sales Insight Actions:
//! it mirrors qualified people (Salesforce leads and contacts with a sales owner) from Marketo
//! Engage into the host's own database, keeps the mirror current, and logs sales activity back
//! to Marketo (as activities) and Salesforce (as Tasks).
//!
//! This crate is a thin facade over the workspace crates:
//!
//! - [`core`] (`salesync-core`): the domain model, the fixed 13-field mapping, owner
//!   qualification, mirror rules and the ports (traits) the engine talks to.
//!
//! See the README for the architecture and the two commands.
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub use salesync_core as core;
