//! Salesforce REST API emulator.
//!
//! A stateful axum server written from `shared/reference/salesforce-and-actions.md` Part 1. Start it
//! with [`SalesforceEmulator::start`]; [`SalesforceEmulator::base_url`] serves the token endpoint
//! and is also the `instance_url` the token response points to. Tests seed and change the org
//! through the Rust API ([`SalesforceEmulator::seed_world`], [`SalesforceEmulator::insert`],
//! [`SalesforceEmulator::convert_lead`], …), which applies the same validation and derived fields
//! as the REST API but is not counted against the API allocation.
//!
//! # Emulated
//! - OAuth 2.0 `POST /services/oauth2/token` (form body; client id/secret in the body or HTTP
//!   Basic): `client_credentials`, `password` ([`SalesforceConfig::username`] /
//!   [`SalesforceConfig::password`]), `refresh_token` ([`SalesforceConfig::refresh_token`], optional
//!   rotation) and JWT bearer. The JWT assertion must be three base64url parts whose payload has
//!   `iss` = client id and, if present, an `exp` in the future; **the signature is not verified**.
//!   Responses carry `access_token`, `instance_url`, `id`, `token_type`, `issued_at`, `signature`
//!   (base64 HMAC-SHA256 of `id + issued_at` keyed with the client secret) and `scope`, never
//!   `expires_in`. Errors: HTTP 400 `invalid_grant`/`authentication failure` (or
//!   `expired access/refresh token`), `invalid_client`/`invalid client credentials`,
//!   `unsupported_grant_type`.
//! - Sessions last [`SalesforceConfig::session_lifetime`] from issue (on the emulator clock);
//!   afterwards, or after [`SalesforceEmulator::expire_sessions`], data calls get 401
//!   `[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`.
//! - Objects User (005), Group/Queue (00G), Account (001), Contact (003), Lead (00Q), Opportunity
//!   (006), OpportunityContactRole (00K) and Task (00T), 18-char ids with the case-safe suffix
//!   (15-char ids accepted on input). Writes validate unknown fields (INVALID_FIELD), read-only and
//!   create-only fields (INVALID_FIELD_FOR_INSERT_UPDATE), types (JSON_PARSER_ERROR), lengths
//!   (STRING_TOO_LONG), emails (INVALID_EMAIL_ADDRESS), restricted picklists (Task Status,
//!   Priority, TaskSubtype, CallType and Type from [`SalesforceConfig::task_type_values`]:
//!   INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST), required fields (REQUIRED_FIELD_MISSING), reference
//!   types (FIELD_INTEGRITY_EXCEPTION for a wrong key prefix, INVALID_CROSS_REFERENCE_KEY for a
//!   missing record, ENTITY_IS_DELETED, CANNOT_UPDATE_CONVERTED_LEAD for a converted lead as
//!   WhoId), unique external ids (DUPLICATE_VALUE) and writes to deleted records
//!   (ENTITY_IS_DELETED, 404 on single-record resources).
//! - Derived fields: Name (User/Contact/Lead); Task IsClosed + CompletedDateTime (Status
//!   `Completed`), IsHighPriority (Priority `High`), AccountId (WhatId Account/Opportunity, else a
//!   Contact WhoId); Opportunity IsClosed/IsWon; CreatedDate, LastModifiedDate, SystemModstamp,
//!   CreatedById, LastModifiedById on every write, from the injected clock.
//! - Defaults like a fresh org: Task Status `Not Started`, Priority `Normal`, TaskSubtype `Task`;
//!   Lead Status `Open - Not Contacted`; OwnerId = the integration (run-as) user. So only an
//!   explicit `null` makes those REQUIRED_FIELD_MISSING; Lead LastName/Company, Contact LastName,
//!   Account Name, Opportunity Name/StageName/CloseDate and OCR ids have no default.
//! - Lead conversion ([`SalesforceEmulator::convert_lead`]): creates or merges (fills empty fields)
//!   the Contact and Account, optionally an Opportunity with a primary contact role, moves the lead's
//!   Tasks to the contact, sets IsConverted/ConvertedDate/Converted*Id; any later write to the lead
//!   fails with CANNOT_UPDATE_CONVERTED_LEAD.
//! - Soft deletes: IsDeleted, visible to `queryAll` and `/deleted` for 15 days.
//! - REST under `/services/data/vNN.N/` (any version): `query`/`queryAll` with paging
//!   (`Sforce-Query-Options: batchSize`, 200–2000, default 2000; `nextRecordsUrl`
//!   `…/query/01g…-<offset>`; the result ids are selected once per query and each page renders
//!   its own rows; cursors expire after 15 minutes idle → INVALID_QUERY_LOCATOR),
//!   `sobjects` (describeGlobal), `sobjects/{T}` (POST create), `sobjects/{T}/describe` (fields with
//!   picklist values), `sobjects/{T}/{id}` (GET `?fields=`, PATCH, DELETE),
//!   `sobjects/{T}/{ExtField}/{value}` (GET; PATCH upsert 201/204/300),
//!   `composite/sobjects/{T}?ids=&fields=` (GET retrieve, `null` for missing ids),
//!   `composite/sobjects` (POST create, PATCH update, DELETE `?ids=`, ≤200, `allOrNone` with
//!   ALL_OR_NONE_OPERATION_ROLLED_BACK), `composite/sobjects/{T}/{ExtField}` (PATCH upsert with
//!   `created`), `sobjects/{T}/updated/` and `/deleted/`, `limits`.
//! - Composite: `POST composite` (`allOrNone`, `collateSubrequests` accepted, ≤25
//!   `compositeRequest` entries of `method`/`url`/`referenceId`/`body`/`httpHeaders`, each run
//!   through the ordinary dispatch; `@{ref.path}` references such as `@{NewAccount.id}` or
//!   `@{Q.records[0].Id}` resolved in URLs and bodies from earlier successful results, else 400
//!   PROCESSING_HALTED `Invalid reference specified…`; results
//!   `{"compositeResponse":[{"body","httpHeaders","httpStatusCode","referenceId"}]}` with a
//!   `Location` header for creates). With `allOrNone` the first failure (a collection subrequest
//!   with a failed record included) rolls every write back and every other entry answers 400
//!   PROCESSING_HALTED `The transaction was rolled back since another operation in the same
//!   transaction failed.`; collections inside run all-or-none. More than 25 subrequests answer
//!   one entry with a null `referenceId` and LIMIT_EXCEEDED (`The request can’t contain more than
//!   25 operations.`, as observed from the real API); a missing, duplicate (case-insensitive) or
//!   malformed `referenceId` the same way with INVALID_INPUT. The series counts one API call.
//!   `POST composite/batch` (≤25 `batchRequests` of `method`/`url` (`vNN.N/…`)/`richInput`,
//!   `haltOnError` → 412 BATCH_PROCESSING_HALTED for the rest; `{"hasErrors","results":
//!   [{"statusCode","result"}]}`) counts one call per subrequest. `POST composite/tree/{T}`
//!   (records with `attributes.referenceId` and child relationship lists, ≤200 records) creates
//!   all in one transaction: 201 `{"hasErrors":false,"results":[{"referenceId","id"}]}` or 400
//!   with the failing record's errors and nothing kept. Subrequests may not be composite
//!   requests or Bulk API jobs (INVALID_INPUT).
//! - Bulk API 2.0 query jobs under `/services/data/vNN.N/jobs/query`: `POST` (JSON
//!   `{"operation":"query"|"queryAll","query":…}`, optional `contentType` CSV, `columnDelimiter`
//!   COMMA/TAB/PIPE/SEMICOLON/CARET/BACKQUOTE, `lineEnding` LF/CRLF) answers the job info (id
//!   `750…`, state `UploadComplete`); `GET` lists jobs; `GET …/{id}` answers the info and advances
//!   the state, `InProgress` for [`SalesforceConfig::bulk_query_polls`] requests, then
//!   `JobComplete` with `numberRecordsProcessed`; `PATCH …/{id}` `{"state":"Aborted"}`; `DELETE
//!   …/{id}` (204); `GET …/{id}/results?locator=&maxRecords=` answers `text/csv` (a header row on
//!   every set, every value double-quoted, null as `""`) with `Sforce-NumberOfRecords` and
//!   `Sforce-Locator` (base64 of the next offset, `null` after the last set; `maxRecords` default
//!   and cap 50,000). Rows are selected when the job is created; results render the current field
//!   values. Errors: INVALIDJOB (bad body), FEATURENOTENABLED (COUNT(), subqueries, OFFSET),
//!   INVALIDJOBSTATE (results before JobComplete, aborting a finished job, deleting one in
//!   progress; 409 for results asked with another API version), INVALID_LOCATOR, NOT_FOUND. Each
//!   request is one API call; `/limits` counts `DailyBulkV2QueryJobs`. Jobs are kept 7 days.
//! - Bulk API 2.0 ingest jobs under `/services/data/vNN.N/jobs/ingest` (insert, update, upsert by
//!   `externalIdFieldName`, delete, hardDelete): `POST` (state `Open`), `PUT …/{id}/batches`
//!   (`text/csv`, 201), `PATCH …/{id}` `{"state":"UploadComplete"}` applies the rows one by one
//!   (each fails alone; empty = unset, `#N/A` = null) or `Aborted`; `GET …/{id}` (`InProgress`,
//!   then `JobComplete` with `numberRecordsProcessed` / `numberRecordsFailed`),
//!   `successfulResults` (`sf__Id`, `sf__Created`), `failedResults` (`sf__Id`, `sf__Error` as
//!   `CODE:message:fields --`), `unprocessedrecords`.
//! - Query planning: `WHERE` clauses with `=` or `IN (…)` on `Id`, reference fields (`ContactId`,
//!   `OpportunityId`, `WhoId`, `ConvertedContactId`, …; not owner/audit users), `Email`,
//!   `IsConverted` or external ids, alone or combined with `AND`/`OR`, take their candidate rows
//!   from value indexes kept on every write; the full `WHERE`, ORDER BY, OFFSET and LIMIT then
//!   apply as for a scan, so results are the same
//!   ([`SalesforceEmulator::set_indexed_queries`], [`SalesforceEmulator::query_stats`]).
//! - SOQL subset: field lists with one-level parent paths (`Who.Email`, `Owner.Name`), parent-child
//!   subqueries (`(SELECT Id FROM Tasks)`), `COUNT()`, `WHERE` with `= != <> < > <= >= IN NOT IN
//!   LIKE AND OR NOT ()`, `null`/`true`/`false`, string escapes (`\' \" \\ \n \r \t \b \f \% \_
//!   \uXXXX`), date and datetime literals, relative date literals (`TODAY`, `YESTERDAY`,
//!   `TOMORROW`, `THIS_`/`LAST_`/`NEXT_` + `WEEK`/`MONTH`/`QUARTER`/`YEAR`, `LAST_90_DAYS`,
//!   `NEXT_90_DAYS`, `LAST_N_`/`NEXT_N_` + `DAYS`/`WEEKS`/`MONTHS`/`QUARTERS`/`YEARS` `:n`,
//!   `N_DAYS_AGO:n` … `N_YEARS_AGO:n`, and the `…_FISCAL_…` forms; the org time zone is UTC,
//!   weeks start on Sunday and the fiscal year is the calendar year), `ORDER BY` (several keys, ASC/DESC, NULLS FIRST/LAST), `LIMIT`, `OFFSET`
//!   (≤2000). Text comparisons are case-insensitive. Errors: MALFORMED_QUERY, INVALID_FIELD,
//!   INVALID_TYPE.
//! - SOQL aggregates: `COUNT(f)`, `COUNT_DISTINCT(f)`, `MIN`, `MAX`, `SUM`, `AVG` (with optional
//!   aliases), `GROUP BY` one or more fields or parent paths, `HAVING` (aggregates and grouped
//!   fields, `AND`/`OR`/`NOT`/`IN`), `ORDER BY` grouped fields or aggregates, `LIMIT`/`OFFSET` over
//!   groups. Rows are `{"attributes":{"type":"AggregateResult"}, …}`: grouped fields under their
//!   alias or last field name (`Owner.Name` → `Name`), unaliased aggregates `expr0`, `expr1`, … in
//!   order; COUNT integers, AVG floats, SUM integers over integer fields, MIN/MAX the field's
//!   type. All groups come in one batch (`totalSize` = groups, `done`, never `nextRecordsUrl`);
//!   more than 2,000 → MALFORMED_QUERY `Aggregate query does not support queryMore(), …`. Misuse →
//!   MALFORMED_QUERY (`Field must be grouped or aggregated: X`, `Ordered field must be grouped or
//!   aggregated: X`, `field X does not support aggregate operator SUM`, `field 'X' can not be
//!   grouped in a query call` for datetime, double and long text fields — describe reports
//!   `groupable` — and `duplicate alias: x`). Bulk API 2.0 query jobs refuse aggregates and
//!   `GROUP BY` (FEATURENOTENABLED).
//! - Limits: a rolling 24-hour allocation ([`SalesforceConfig::daily_api_limit`]) of data calls;
//!   past it 403 REQUEST_LIMIT_EXCEEDED (`TotalRequests Limit exceeded.`). While
//!   [`SalesforceConfig::long_running_limit`] data requests have been running for at least
//!   [`SalesforceConfig::long_running_threshold`] (only possible with latency or delay faults), new
//!   ones get 403 REQUEST_LIMIT_EXCEEDED (`ConcurrentPerOrgLongTxn Limit exceeded.`). Every `/services/data` response carries
//!   `Sforce-Limit-Info: api-usage=N/M`; `/limits` reports `DailyApiRequests` consistently.
//! - Bad input: a request URI (path and query) longer than 16,384 bytes — the limit the REST API
//!   error-code page gives for 414 — answers 414 `URI_TOO_LONG` before authentication and is not
//!   counted (past ~64 KB the HTTP layer answers the 414 itself, with no body); a `POST`/`PATCH`/
//!   `PUT` body whose `Content-Type` is not JSON (`application/json`, `…+json`; a missing one is
//!   read as JSON; Bulk API 2.0 CSV uploads excepted) answers 415 `UNSUPPORTED_MEDIA_TYPE`;
//!   malformed JSON answers 400 JSON_PARSER_ERROR on every resource.
//! - Faults ([`SalesforceFault`] in a [`FaultPlan`]), consulted for every request (token endpoint
//!   included) after authentication and the limit check: protocol errors, dropped connections
//!   (headers, then a body stream that errors), delays, malformed bodies, apply-then-drop.
//!
//! # Deliberate deviations
//! - Session lifetime is absolute from issue, not an inactivity timeout.
//! - Polymorphic parents (`Who`, `What`, `Owner`) render with the concrete type in `attributes`
//!   (real orgs say `Name`); any field of any possible target may be selected.
//! - No Bulk API 1.0, no `/composite/graph`, no Events, no sharing/permissions, no cascade
//!   deletes, no undelete, no per-app usage in `Sforce-Limit-Info`.
//! - SOQL has no `GROUP BY ROLLUP`/`CUBE`, date functions (`CALENDAR_YEAR()`), `TYPEOF`,
//!   `FIELDS()`, `WITH`/`FOR` clauses, and parent paths of at most five hops (`Account.Owner.Email`) (→ MALFORMED_QUERY or
//!   INVALID_FIELD). Date literals against datetime fields are accepted (midnight UTC).
//! - XML request bodies are refused with 415 (the real API accepts XML). The 414/415 error codes
//!   (`URI_TOO_LONG`, `UNSUPPORTED_MEDIA_TYPE`) and the composite INVALID_INPUT refusals are
//!   the emulator's choice where no source gives the real body.
//! - Restricted picklists: Task Status, Priority, TaskSubtype, CallType and Type are validated
//!   exactly (case-sensitive); Lead Status and Opportunity StageName are free text.
//! - Collection-level request errors: more than 200 records → 400 EXCEEDED_ID_LIMIT; a record
//!   without `attributes.type` → 400 INVALID_INPUT. Per-record: missing `id` on update →
//!   MISSING_ARGUMENT; an external id repeated within one upsert request → DUPLICATE_EXTERNAL_ID
//!   for each copy; several existing matches → DUPLICATE_EXTERNAL_ID. The chunk limit (10 type
//!   switches) is not enforced.
//! - Malformed `start`/`end` on `/updated` and `/deleted` → INVALID_REPLICATION_DATE, missing →
//!   MISSING_ARGUMENT.
//! - Calls rejected for an invalid session or the daily limit are not counted; every other data call
//!   (including errors and injected faults) counts one. Token requests never count.
//! - `/updated` and `/deleted` reject a start older than 30 days or not before end
//!   (INVALID_REPLICATION_DATE); `/deleted` reports `earliestDateAvailable` = now − 15 days
//!   (truncated to the minute) and only lists deletions since then.

// The layers, each importing only those below it: `errors`, `envelope`, `config`, `schema`,
// `limits`, `auth`, `store`, `soql` (the vocabulary and the org); `jobs`, `state`, `context` (what a
// request works on); the operation families `rest`, `composite`, `bulk` (query jobs) and
// `ingest`; `server` (admission and routing) at the top, under this handle.
mod auth;
mod bulk;
mod composite;
mod config;
mod context;
mod envelope;
mod errors;
mod ingest;
mod jobs;
mod limits;
mod rest;
mod schema;
mod server;
mod soql;
mod state;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Duration;
use serde_json::{Map, Value};

pub use config::{SalesforceCall, SalesforceConfig, SalesforceFault};
pub use errors::SalesforceApiError;
pub use store::ConvertResult;

use crate::clock::Clock;
use crate::faults::FaultPlan;
use crate::seed::{SeedSfType, SeedWorld};
use context::Shared;

/// How the emulator's SOQL queries found their rows, cumulative since start (see
/// [`SalesforceEmulator::query_stats`]). REST `query`/`queryAll`, Bulk API 2.0 query jobs and
/// [`SalesforceEmulator::query`] all count; parent-child subqueries do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SalesforceQueryStats {
    /// Queries run.
    pub queries: u64,
    /// Queries whose candidate rows came from an index instead of a scan of the type.
    pub indexed: u64,
    /// Records the queries examined (index candidates, or every record of the type for a scan).
    pub rows_examined: u64,
}

/// A running emulator. Cheap to clone; all clones share the org.
#[derive(Clone)]
pub struct SalesforceEmulator {
    shared: Arc<Shared>,
    task: Arc<tokio::sync::Mutex<Option<crate::http::ServerTask>>>,
}

impl std::fmt::Debug for SalesforceEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceEmulator").field("base_url", &self.shared.base_url).finish()
    }
}

impl SalesforceEmulator {
    /// Binds [`SalesforceConfig::bind`] and starts serving.
    pub async fn start(config: SalesforceConfig) -> std::io::Result<SalesforceEmulator> {
        let (shared, task) = server::serve(config).await?;
        Ok(SalesforceEmulator { shared, task: Arc::new(tokio::sync::Mutex::new(Some(task))) })
    }

    /// `http://127.0.0.1:PORT`: the token endpoint host and the `instance_url`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The accepted client id.
    pub fn client_id(&self) -> &str {
        &self.shared.config.client_id
    }

    /// The accepted client secret.
    pub fn client_secret(&self) -> &str {
        &self.shared.config.client_secret
    }

    /// The emulator clock.
    pub fn clock(&self) -> &Clock {
        &self.shared.config.clock
    }

    /// The configuration the emulator runs with.
    pub fn config(&self) -> &SalesforceConfig {
        &self.shared.config
    }

    /// The organization id (00D…).
    pub fn org_id(&self) -> &str {
        &self.shared.org_id
    }

    /// The integration (run-as) user every token acts as.
    pub fn integration_user_id(&self) -> &str {
        &self.shared.user_id
    }

    /// The advertised API base path, e.g. `/services/data/v60.0`.
    pub fn api_path(&self) -> String {
        format!("/services/data/{}", self.shared.config.api_version)
    }

    /// Loads a seeded world: users, and for every person with a Salesforce type their Lead or
    /// Contact (with Account, Opportunity and primary contact role), using the seeded ids.
    /// Leads, Contacts, their Opportunities and contact roles get the person's
    /// `created_at`/`updated_at` as CreatedDate and LastModifiedDate/SystemModstamp; other records
    /// (Users, Accounts) are stamped with the clock. People without a
    /// Salesforce type are skipped, and records that already exist are left alone.
    pub fn seed_world(&self, world: &SeedWorld) {
        self.shared.seed(world);
    }

    /// Creates a record with REST validation; returns its 18-char id.
    pub fn insert(&self, sobject: &str, fields: Map<String, Value>) -> Result<String, SalesforceApiError> {
        self.shared.with_org(|org, cx| org.create(cx, sobject, &fields, None))
    }

    /// Creates a record with a given id (15 or 18 chars, prefix must match the type).
    pub fn insert_with_id(
        &self,
        sobject: &str,
        id: &str,
        fields: Map<String, Value>,
    ) -> Result<String, SalesforceApiError> {
        self.shared.with_org(|org, cx| {
            let ok = cx.schema.obj(sobject).is_some_and(|o| id.starts_with(o.prefix));
            if !ok || org.find(cx.schema, id).is_some() {
                return Err(SalesforceApiError::bad("INVALID_ID_FIELD", format!("invalid or existing id: {id}")));
            }
            org.create(cx, sobject, &fields, Some(id))
        })
    }

    /// Updates a record with REST validation.
    pub fn update(&self, sobject: &str, id: &str, fields: Map<String, Value>) -> Result<(), SalesforceApiError> {
        self.shared.with_org(|org, cx| org.update(cx, sobject, id, &fields))
    }

    /// Soft-deletes a record.
    pub fn delete(&self, sobject: &str, id: &str) -> Result<(), SalesforceApiError> {
        self.shared.with_org(|org, cx| org.delete(cx, sobject, id))
    }

    /// Converts a lead like `convertLead()`.
    pub fn convert_lead(
        &self,
        lead_id: &str,
        contact_id: Option<&str>,
        account_id: Option<&str>,
        create_opportunity: bool,
    ) -> Result<ConvertResult, SalesforceApiError> {
        self.shared.with_org(|org, cx| org.convert_lead(cx, lead_id, contact_id, account_id, create_opportunity))
    }

    /// A record by id (deleted ones included, with IsDeleted true).
    pub fn get(&self, sobject: &str, id: &str) -> Option<Map<String, Value>> {
        self.shared.read_org(|org, schema| {
            let obj = schema.obj(sobject)?;
            org.get(obj.name, id).map(|r| r.fields.clone())
        })
    }

    /// All non-deleted records of a type, in id order.
    pub fn records(&self, sobject: &str) -> Vec<Map<String, Value>> {
        self.shared.read_org(|org, schema| match schema.obj(sobject) {
            Some(obj) => org.all(obj.name).filter(|r| r.deleted_at.is_none()).map(|r| r.fields.clone()).collect(),
            None => Vec::new(),
        })
    }

    /// Runs a SOQL query against the org (no API usage, no paging); records are rendered as the
    /// REST API would, `attributes` included. `include_deleted` behaves like `queryAll`.
    pub fn query(&self, soql: &str, include_deleted: bool) -> Result<Vec<Value>, SalesforceApiError> {
        let now = self.shared.now();
        let version = self.shared.config.api_version.clone();
        self.shared.read_org(|org, schema| {
            let q = soql::parse(schema, soql, now)?;
            let env = soql::Env {
                org,
                schema,
                version: &version,
                all_rows: include_deleted,
                purge_before: now - Duration::days(15),
            };
            Ok(soql::run(&env, &q).0)
        })
    }

    /// Query counters: how many queries ran, how many used an index and how many records they
    /// examined.
    pub fn query_stats(&self) -> SalesforceQueryStats {
        let (queries, indexed, rows_examined) = self.shared.read_org(|org, _| org.query_counts());
        SalesforceQueryStats { queries, indexed, rows_examined }
    }

    /// Turns index lookups for SOQL `WHERE` clauses on (the default) or off. With them off every
    /// query scans all records of its type; results are identical either way, which tests check.
    pub fn set_indexed_queries(&self, enabled: bool) {
        self.shared.read_org(|org, _| org.scan_only.store(!enabled, std::sync::atomic::Ordering::SeqCst));
    }

    /// Replaces the fault plan.
    pub fn set_faults(&self, plan: FaultPlan<SalesforceFault>) {
        *crate::http::lock(&self.shared.faults) = Arc::new(plan);
    }

    /// The fault plan in force (e.g. to read [`FaultPlan::applied`]).
    pub fn faults(&self) -> Arc<FaultPlan<SalesforceFault>> {
        Arc::clone(&crate::http::lock(&self.shared.faults))
    }

    /// Every request answered so far.
    pub fn call_log(&self) -> Vec<SalesforceCall> {
        crate::http::lock(&self.shared.log).clone()
    }

    /// API calls counted in the current rolling 24-hour window.
    pub fn api_usage(&self) -> u64 {
        self.shared.usage()
    }

    /// Changes the rolling 24-hour API limit from now on (calls already made still count).
    pub fn set_daily_api_limit(&self, limit: u64) {
        self.shared.limit_override.store(limit, std::sync::atomic::Ordering::SeqCst);
    }

    /// Invalidates every access token issued so far.
    pub fn expire_sessions(&self) {
        self.shared.expire_sessions();
    }

    /// Every access token (and rotated refresh token) the token endpoint has handed out so far,
    /// expired ones included: tests use them to check that no token ever shows up in logs or
    /// error messages.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.issued_tokens()
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        if let Some(t) = self.task.lock().await.take() {
            t.stop().await;
        }
    }
}

impl Shared {
    fn seed(&self, world: &SeedWorld) {
        let _ = self.with_org(|org, cx| {
            let put = |org: &mut store::Org, ty: &str, id: &str, m: Map<String, Value>| -> bool {
                if org.find(cx.schema, id).is_some() {
                    return false;
                }
                match org.create(cx, ty, &m, Some(id)) {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(%ty, %id, error = %e, "seed record rejected");
                        false
                    }
                }
            };
            let obj = |pairs: Vec<(&str, Value)>| -> Map<String, Value> {
                pairs.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.to_string(), v)).collect()
            };
            let opt = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
            for u in &world.users {
                let m = obj(vec![
                    ("FirstName", Value::String(u.first_name.clone())),
                    ("LastName", Value::String(u.last_name.clone())),
                    ("Email", Value::String(u.email.clone())),
                    ("Username", Value::String(u.email.clone())),
                ]);
                put(org, "User", &u.id, m);
            }
            for p in &world.people {
                let owner = opt(&p.owner_id);
                let last = p.last_name.clone().unwrap_or_else(|| "[not provided]".into());
                let common = |extra: Vec<(&str, Value)>| {
                    let mut v = vec![
                        ("FirstName", opt(&p.first_name)),
                        ("LastName", Value::String(last.clone())),
                        ("Email", opt(&p.email)),
                        ("Title", opt(&p.title)),
                        ("Phone", opt(&p.phone)),
                        ("LeadSource", opt(&p.lead_source)),
                        ("HasOptedOutOfEmail", Value::Bool(p.unsubscribed)),
                        ("OwnerId", owner.clone()),
                    ];
                    v.extend(extra);
                    obj(v)
                };
                match p.sf_type {
                    Some(SeedSfType::Lead) => {
                        if let Some(id) = &p.sf_lead_id {
                            let m = common(vec![
                                (
                                    "Company",
                                    Value::String(p.company.clone().unwrap_or_else(|| "[not provided]".into())),
                                ),
                                ("Status", Value::String("Open - Not Contacted".into())),
                            ]);
                            if put(org, "Lead", id, m) {
                                org.set_times("Lead", id, p.created_at, p.updated_at.max(p.created_at));
                            }
                        }
                    }
                    Some(SeedSfType::Contact) => {
                        if let Some(acct) = &p.sf_account_id {
                            let m = obj(vec![
                                ("Name", Value::String(p.company.clone().unwrap_or_else(|| "Account".into()))),
                                ("OwnerId", owner.clone()),
                            ]);
                            put(org, "Account", acct, m);
                        }
                        if let Some(id) = &p.sf_contact_id {
                            if put(org, "Contact", id, common(vec![("AccountId", opt(&p.sf_account_id))])) {
                                org.set_times("Contact", id, p.created_at, p.updated_at.max(p.created_at));
                            }
                            if let Some(opp) = &p.sf_opportunity_id {
                                let close = (p.created_at + Duration::days(90)).format("%Y-%m-%d").to_string();
                                let m = obj(vec![
                                    (
                                        "Name",
                                        Value::String(format!("{} opportunity", p.company.as_deref().unwrap_or("New"))),
                                    ),
                                    ("StageName", Value::String("Prospecting".into())),
                                    ("CloseDate", Value::String(close)),
                                    ("AccountId", opt(&p.sf_account_id)),
                                    ("OwnerId", owner.clone()),
                                ]);
                                if put(org, "Opportunity", opp, m) {
                                    // A seeded org has history: its records are not all new.
                                    org.set_times("Opportunity", opp, p.created_at, p.updated_at.max(p.created_at));
                                }
                                let already = !org.find_by("OpportunityContactRole", "OpportunityId", opp).is_empty();
                                if !already {
                                    let r = obj(vec![
                                        ("OpportunityId", Value::String(opp.clone())),
                                        ("ContactId", Value::String(id.clone())),
                                        ("IsPrimary", Value::Bool(true)),
                                        ("Role", Value::String("Decision Maker".into())),
                                    ]);
                                    match org.create(cx, "OpportunityContactRole", &r, None) {
                                        Ok(role) => org.set_times(
                                            "OpportunityContactRole",
                                            &role,
                                            p.created_at,
                                            p.updated_at.max(p.created_at),
                                        ),
                                        Err(e) => tracing::warn!(error = %e, "seed contact role rejected"),
                                    }
                                }
                            }
                        }
                    }
                    None => {}
                }
            }
            Ok::<(), SalesforceApiError>(())
        });
    }
}
