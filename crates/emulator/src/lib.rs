//! In-process, stateful emulators of the Marketo Engage and Salesforce REST APIs.
//!
//! Each emulator is an axum server that binds an ephemeral loopback port (for tests, examples and
//! benches) or a fixed one (the `salesync emulate` command). Both are written from
//! `shared/reference/` on their own and share no wire types with the salesync connectors, so a
//! misreading of the APIs shows up as a failing test instead of cancelling out.
//!
//! Shared pieces: [`clock`] (injectable time), [`faults`] (fault injection plans), [`seed`]
//! (a deterministic generator of one consistent world for both systems) and [`sfid`] (Salesforce ids).
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod clock;
pub mod faults;
#[cfg(any(feature = "marketo", feature = "salesforce"))]
pub(crate) mod http;
pub mod seed;
pub mod sfid;

#[cfg(feature = "marketo")]
pub mod marketo;
#[cfg(feature = "salesforce")]
pub mod salesforce;
