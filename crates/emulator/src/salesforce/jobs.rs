//! The Bulk API 2.0 job records the state keeps (query jobs and ingest jobs), with what both kinds
//! share: the CSV dialect, the version number and the INVALIDJOBSTATE error.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::errors::SalesforceApiError as E;
use super::soql::Query;
use super::store::{Id18, fmt_dt};

/// A job's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    UploadComplete,
    InProgress,
    JobComplete,
    Aborted,
}

impl JobState {
    /// The state as the API spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            JobState::UploadComplete => "UploadComplete",
            JobState::InProgress => "InProgress",
            JobState::JobComplete => "JobComplete",
            JobState::Aborted => "Aborted",
        }
    }
}

/// What every Bulk API 2.0 job has, whatever its kind.
pub(crate) struct JobHead {
    pub(crate) id: String,
    pub(crate) operation: &'static str,
    pub(crate) object: String,
    /// Status requests answered so far (the state advances with them).
    pub(crate) polls: u32,
    pub(crate) created: DateTime<Utc>,
    pub(crate) modstamp: DateTime<Utc>,
    /// The API version the job was created with (`vNN.N`).
    pub(crate) version: String,
    pub(crate) delimiter: Delimiter,
    pub(crate) line_ending: LineEnding,
}

impl JobHead {
    /// A job created at `now` through API `version`, not yet polled.
    pub(crate) fn new(
        id: String,
        operation: &'static str,
        object: String,
        now: DateTime<Utc>,
        version: &str,
        (delimiter, line_ending): (Delimiter, LineEnding),
    ) -> Self {
        JobHead {
            id,
            operation,
            object,
            polls: 0,
            created: now,
            modstamp: now,
            version: version.to_string(),
            delimiter,
            line_ending,
        }
    }

    /// The job info members every kind reports, with its `state` and `jobType`.
    pub(crate) fn info(&self, created_by: &str, state: &str, job_type: &str) -> Map<String, Value> {
        let v = json!({
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": created_by,
            "createdDate": fmt_dt(self.created),
            "systemModstamp": fmt_dt(self.modstamp),
            "state": state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": version_number(&self.version),
            "jobType": job_type,
            "lineEnding": self.line_ending.0,
            "columnDelimiter": self.delimiter.0,
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// 409 INVALIDJOBSTATE unless results are asked for through the version the job was created with.
    pub(crate) fn check_results_version(&self, version: &str) -> Result<(), E> {
        if self.version == version {
            return Ok(());
        }
        Err(E::new(
            409,
            "INVALIDJOBSTATE",
            format!("Results must be retrieved with the API version the job was created with ({})", self.version),
        ))
    }
}

/// One Bulk API 2.0 query job.
pub(crate) struct BulkJob {
    pub(crate) head: JobHead,
    pub(crate) query: Query,
    pub(crate) ids: Vec<Id18>,
    pub(crate) state: JobState,
}

/// An ingest job's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IngestState {
    Open,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
}

impl IngestState {
    /// The state as the API spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            IngestState::Open => "Open",
            IngestState::InProgress => "InProgress",
            IngestState::JobComplete => "JobComplete",
            IngestState::Failed => "Failed",
            IngestState::Aborted => "Aborted",
        }
    }
}

/// One row's outcome.
pub(crate) enum Outcome {
    Ok { id: String, created: bool },
    Failed { id: String, error: String },
}

/// One Bulk API 2.0 ingest job.
pub(crate) struct IngestJob {
    pub(crate) head: JobHead,
    pub(crate) external_id: Option<String>,
    pub(crate) state: IngestState,
    /// The uploaded header and rows (as strings, in upload order).
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    /// Per row, once processed.
    pub(crate) outcomes: Vec<Outcome>,
    pub(crate) error_message: Option<String>,
}

/// `apiVersion` of a job: the number of `vNN.N`.
pub(crate) fn version_number(v: &str) -> Value {
    v.trim_start_matches('v').parse::<f64>().map_or(Value::Null, Value::from)
}

/// The error for an operation the job's state does not allow.
pub(crate) fn invalid_state(msg: impl Into<String>) -> E {
    E::bad("INVALIDJOBSTATE", msg)
}

/// A column delimiter: its name and its character.
pub(crate) type Delimiter = (&'static str, char);
/// A line ending: its name and its text.
pub(crate) type LineEnding = (&'static str, &'static str);

/// The CSV dialect a job is created with (`columnDelimiter` default COMMA, `lineEnding` default LF).
pub(crate) fn csv_dialect(delimiter: Option<&str>, line_ending: Option<&str>) -> Result<(Delimiter, LineEnding), E> {
    let delimiter = match delimiter.unwrap_or("COMMA") {
        "COMMA" => ("COMMA", ','),
        "TAB" => ("TAB", '\t'),
        "PIPE" => ("PIPE", '|'),
        "SEMICOLON" => ("SEMICOLON", ';'),
        "CARET" => ("CARET", '^'),
        "BACKQUOTE" => ("BACKQUOTE", '`'),
        other => return Err(E::bad("INVALIDJOB", format!("InvalidJob : Invalid columnDelimiter: {other}"))),
    };
    let line_ending = match line_ending.unwrap_or("LF") {
        "LF" => ("LF", "\n"),
        "CRLF" => ("CRLF", "\r\n"),
        other => return Err(E::bad("INVALIDJOB", format!("InvalidJob : Invalid lineEnding: {other}"))),
    };
    Ok((delimiter, line_ending))
}
