//! salesync's test kit: one copy of what the end-to-end tests (`tests/`), the process-level CLI
//! tests (`crates/cli/tests`) and the soak run (`examples/soak.rs`) share.
//!
//! - [`World`]: both API emulators started and seeded with one world ([`world`]);
//! - the mirror oracle (what the mirror must hold, computed from the Marketo emulator's own
//!   data), paging the whole mirror, and a mirror diff with a readable message ([`mod@mirror`]);
//! - the exactly-once delivery check and the rate-limit check ([`delivery`], [`limits`]);
//! - fault-plan presets ([`faults`]);
//! - builders (a sample [`SalesActivity`](salesync_core::activity::SalesActivity), a sample
//!   [`Person`](salesync_core::person::Person), JSON objects, a seeded generator) ([`builders`]);
//! - test stores and [`postgres_url`] ([`stores`]), and polling helpers ([`wait`]).
//!
//! Checks come in two forms: `check_*` returns `Err(message)` (for the soak run's report),
//! `assert_*` panics with that message (for tests). The kit is for tests: its other helpers
//! panic on failure too.
//!
//! Features: `sqlite`, `postgres` (test stores), `connectors` (clients on the world's
//! emulators), `delivery` (a recording dispatcher and seeded rounds of outbound items). The kit
//! proper needs none of them.
#![allow(clippy::expect_used, clippy::unwrap_used)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod builders;
pub mod delivery;
pub mod faults;
pub mod limits;
pub mod mirror;
pub mod stores;
pub mod wait;
pub mod world;

pub use builders::{Rng, activity, completed_call, obj, person};
pub use delivery::{
    EXT, Outbound, RecordedActivity, RecordedReminder, assert_delivered_exactly_once, check_delivered_exactly_once,
    marketo_activity_counts, outbox_drained, tasks_by_external_id,
};
#[cfg(feature = "delivery")]
pub use delivery::{record_every_kind, record_round};
pub use limits::{assert_rate_limits_kept, check_rate_limits};
pub use mirror::{Difference, MirrorDiff, Oracle, all_people, mirror, mirror_diff, oracle};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use stores::{SchemaDropper, TestStore};
pub use stores::{enable_reminder_sync, postgres_url};
pub use wait::wait_for;
pub use world::World;
pub use world::assert_mirror_matches;
