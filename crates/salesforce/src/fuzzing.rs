//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, not a stable API): the
//! connector's response decoding, run on bytes without any HTTP.

use salesync_core::Error;
use salesync_core::ports::Page;
use salesync_core::ports::salesforce::TaskRecord;
use serde_json::Value;

use crate::classify::{Failure, Verdict, classify};
use crate::client::{QueryPage, parse_error_body};
use crate::error::ApiError;

/// A 2xx query answer as a page of raw records.
pub fn decode_query_page(body: &[u8]) -> Result<Page<Value>, Error> {
    QueryPage::parse(body)?.into_page(|v| Ok(v.clone()))
}

/// A 2xx query answer as a page of Tasks (the records mapped as `tasks_modified_since` maps them).
pub fn decode_task_page(body: &[u8], external_id_field: &str) -> Result<Page<TaskRecord>, Error> {
    QueryPage::parse(body)?.into_page(|v| crate::ops::task_record(v, external_id_field))
}

/// A non-2xx body: its first error and how the request loop would treat it.
pub fn decode_error(status: u16, body: &[u8]) -> (ApiError, Verdict<Failure>) {
    let e = parse_error_body(body);
    let d = classify(status, &e.error_code, &e.message);
    (e, d)
}

/// An sObject Collections answer: the number of per-record results.
pub fn decode_collection_results(body: &[u8]) -> Result<usize, Error> {
    crate::ops::parse_collection_results(body).map(|r| r.len())
}
