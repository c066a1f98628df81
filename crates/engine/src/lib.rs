#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod checkpoint;
mod csv_stream;
mod engine;
mod error;
mod events;
mod incremental;
mod initial;
mod insight;
mod mirror_reader;
mod opportunity;
mod rebuild;
mod report;
mod resync;
mod settings;
mod store;

pub use csv_stream::{CsvError, CsvExportParser, CsvRow, CsvRows, ExportParser, RowError, RowStream, lead_from_row};
pub use engine::{MARKETO_PULL_LEASE, SyncEngine, SyncEngineBuilder};
pub use error::{Error, Result};
pub use events::{MirrorChange, Phase, SyncEvent};
pub use insight::InsightKind;
pub use mirror_reader::{MirrorReader, PageRequest, PersonPage};
pub use report::{ApiCalls, BulkQuotaAction, DriftCounts, InitialPath, RebuildReport, RemovedCounts, SyncReport};
pub use settings::{
    BulkQuotaPolicy, Clock, EngineSettings, InitialMode, RetrySettings, StreamSettings, SystemClock, random_worker_id,
};
pub use store::EngineStore;

/// Compile-time check: the engine can be shared across tasks.
#[allow(dead_code)]
fn _assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<SyncEngine>();
    check::<MirrorReader>();
}

#[cfg(test)]
mod tests;
