//! The operations: one-page fetches, the streams built on them, and the `MarketoApi` impl.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Timelike, Utc};
use futures::StreamExt;
use futures::stream;
use salesync_core::mapping::LeadRecord;
use salesync_core::ports::Page;
use salesync_core::ports::marketo::bytes_stream::ByteStream;
use salesync_core::ports::marketo::{
    Activity, ActivityType, CustomActivityTypeDef, ExportFilter, ExportJob, ExportState, LeadSchema, MarketoApi,
    NewCustomActivity, PageStream, ProvisionedType, RecordOutcome,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client::{Interp, MarketoClient, Received, Req, Safety, interpret_error_status, looks_like_html, snippet};
use crate::envelope::{Envelope, probe_error};
use crate::error::MkError;
use crate::wire::{
    WireActivity, WireActivityType, WireAttributeOut, WireExport, WireNewActivity, WireWriteResult, format_datetime,
};

/// Records per page (Marketo's maximum `batchSize`).
pub const BATCH_SIZE: usize = 300;
/// Most ids or `filterValues` per lead query.
pub const MAX_FILTER_VALUES: usize = 300;
/// Most activity type ids per activities call.
pub const MAX_ACTIVITY_TYPE_IDS: usize = 10;
/// Most lead ids per activities call.
pub const MAX_ACTIVITY_LEAD_IDS: usize = 30;
/// Most custom activities per add call.
pub const MAX_CUSTOM_ACTIVITIES: usize = 300;
/// Most custom activity types per instance (1027).
pub const MAX_CUSTOM_TYPES: usize = 10;
/// Most secondary attributes per custom activity type (1028).
pub const MAX_CUSTOM_ATTRIBUTES: usize = 20;
/// Longest bulk export window.
pub const MAX_EXPORT_WINDOW_DAYS: i64 = 31;
/// Consecutive empty activity pages with `moreResult:true` followed inside one page fetch.
pub const MAX_EMPTY_PAGES_FOLLOWED: usize = 50;

/// Filter types to assume when only the legacy `describe.json` is available.
/// Looks at the instance's custom activity types per provisioning, when the previous look was
/// overtaken by an unknown outcome or by another process provisioning at the same time.
const ENSURE_TYPES_ATTEMPTS: u32 = 4;

const LEGACY_SEARCHABLE: &[&str] =
    &["id", "email", "sfdcAccountId", "sfdcContactId", "sfdcLeadId", "sfdcLeadOwnerId", "sfdcOpptyId"];

fn csv_of<T: ToString>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn json_body<T: Serialize>(v: &T) -> Result<Bytes, MkError> {
    serde_json::to_vec(v).map(Bytes::from).map_err(|e| MkError::protocol(format!("cannot encode request: {e}")))
}

fn check_list<T>(field: &str, items: &[T], max: usize, allow_empty: bool) -> Result<(), MkError> {
    if items.len() > max {
        return Err(MkError::invalid(field, format!("{} given; Marketo accepts at most {max} per call", items.len())));
    }
    if !allow_empty && items.is_empty() {
        return Err(MkError::invalid(field, "at least one is required"));
    }
    Ok(())
}

fn check_csv_values(field: &str, values: &[String]) -> Result<(), MkError> {
    if let Some(v) = values.iter().find(|v| v.contains(',')) {
        return Err(MkError::invalid(
            field,
            format!("value {v:?} contains a comma, which Marketo's CSV lists cannot carry"),
        ));
    }
    Ok(())
}

/// Builds a page stream from a "fetch one page" function: pages are yielded as fetched (empty ones
/// included, so every continuation token is seen) until a page says no more follow.
pub(crate) fn paginate<T, F, Fut>(first: Option<String>, fetch: F) -> PageStream<T>
where
    T: Send + 'static,
    F: FnMut(Option<String>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>, MkError>> + Send + 'static,
{
    salesync_http::page_stream("marketo", first, Some, fetch)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDescribe2 {
    #[serde(default)]
    fields: Vec<WireName>,
    #[serde(default)]
    searchable_fields: Vec<Vec<String>>,
}

#[derive(Deserialize)]
struct WireName {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct WireDescribe {
    #[serde(default)]
    rest: Option<WireName>,
}

/// Opens a bulk export file.
pub(crate) enum FileOpen {
    Body {
        resp: reqwest::Response,
        skip: u64,
    },
    /// The offset is at or past the end (416).
    Empty,
}

struct FileState {
    client: MarketoClient,
    export_id: String,
    offset: u64,
    body: Option<reqwest::Response>,
    skip: u64,
    resumes: u32,
}

impl MarketoClient {
    // ----- leads -----

    /// The instance's lead fields and searchable fields: `describe2`, falling back to `describe`.
    pub(crate) async fn get_lead_schema(&self) -> Result<LeadSchema, MkError> {
        let req = Req::get("describe2", self.url(&["rest", "v1", "leads", "describe2.json"])?, Vec::new());
        match self.call::<WireDescribe2>(req).await {
            Ok(env) => {
                let d = env
                    .records()
                    .into_iter()
                    .next()
                    .ok_or_else(|| MkError::protocol("describe2 returned no result"))?;
                let fields = d.fields.into_iter().filter_map(|f| f.name).collect();
                let searchable = d.searchable_fields.into_iter().filter(|k| k.len() == 1).flatten().collect();
                Ok(LeadSchema { fields, searchable })
            }
            Err(MkError::Rejected { code, message }) if code == "610" || code == "404" => {
                tracing::info!(%code, %message, "describe2 unavailable; falling back to describe.json");
                let req = Req::get("describe", self.url(&["rest", "v1", "leads", "describe.json"])?, Vec::new());
                let env = self.call::<WireDescribe>(req).await?;
                let fields: Vec<String> =
                    env.records().into_iter().filter_map(|d| d.rest.and_then(|r| r.name)).collect();
                let searchable = LEGACY_SEARCHABLE
                    .iter()
                    .filter(|s| fields.iter().any(|f| f == *s))
                    .map(|s| s.to_string())
                    .collect();
                Ok(LeadSchema { fields, searchable })
            }
            Err(e) => Err(e),
        }
    }

    /// One page of `GET /rest/v1/leads.json`.
    pub(crate) async fn leads_page(
        &self,
        filter_type: &str,
        values: &[String],
        fields: &[String],
        page_token: Option<String>,
    ) -> Result<Page<LeadRecord>, MkError> {
        if filter_type.trim().is_empty() {
            return Err(MkError::invalid("filterType", "empty"));
        }
        check_list("filterValues", values, MAX_FILTER_VALUES, false)?;
        check_csv_values("filterValues", values)?;
        let mut query = vec![("filterType", filter_type.to_string()), ("filterValues", values.join(","))];
        if !fields.is_empty() {
            query.push(("fields", fields.join(",")));
        }
        query.push(("batchSize", BATCH_SIZE.to_string()));
        if let Some(t) = page_token {
            query.push(("nextPageToken", t));
        }
        let env = self.call::<LeadRecord>(Req::get("leads", self.url(&["rest", "v1", "leads.json"])?, query)).await?;
        let more = env.more_result.unwrap_or(false);
        let next_token = env.next_page_token.clone();
        Ok(Page { items: env.records(), next_token, more })
    }

    pub(crate) async fn get_leads_by_ids(&self, ids: &[i64], fields: &[String]) -> Result<Vec<LeadRecord>, MkError> {
        check_list("ids", ids, MAX_FILTER_VALUES, true)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<String> = ids.iter().map(i64::to_string).collect();
        let mut out = Vec::with_capacity(ids.len());
        let mut token = None;
        loop {
            let page = self.leads_page("id", &values, fields, token).await?;
            out.extend(page.items);
            match (page.more, page.next_token) {
                (true, Some(t)) => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// Leads by filter as a stream of pages.
    pub fn leads_by_filter_stream(
        &self,
        filter_type: String,
        values: Vec<String>,
        fields: Vec<String>,
    ) -> PageStream<LeadRecord> {
        let client = self.clone();
        paginate(None, move |token| {
            let (client, filter_type, values, fields) =
                (client.clone(), filter_type.clone(), values.clone(), fields.clone());
            async move { client.leads_page(&filter_type, &values, &fields, token).await }
        })
    }

    pub(crate) async fn get_lead_unsubscribed(&self, lead_id: i64) -> Result<Option<bool>, MkError> {
        let id = lead_id.to_string();
        let req = Req::get(
            "lead",
            self.url(&["rest", "v1", "lead", &format!("{id}.json")])?,
            vec![("fields", "unsubscribed".to_string())],
        );
        let env = match self.call::<serde_json::Map<String, Value>>(req).await {
            Ok(env) => env,
            Err(MkError::Rejected { code, .. }) if code == "1004" => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(rec) = env.records().into_iter().next() else { return Ok(None) };
        Ok(Some(match rec.get("unsubscribed") {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n != 0),
            Some(Value::String(s)) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
            _ => false,
        }))
    }

    /// The instance's calls today: `total` of today's entry of `stats/usage.json` (0 when
    /// Marketo lists no entry yet).
    pub(crate) async fn get_usage_today(&self) -> Result<u64, MkError> {
        let req = Req::get("usage", self.url(&["rest", "v1", "stats", "usage.json"])?, Vec::new());
        let env = self.call::<serde_json::Map<String, Value>>(req).await?;
        Ok(env.records().iter().filter_map(|r| r.get("total").and_then(Value::as_u64)).max().unwrap_or(0))
    }

    // ----- activities -----

    pub(crate) async fn get_paging_token(&self, since: DateTime<Utc>) -> Result<String, MkError> {
        let mut req = Req::get(
            "pagingtoken",
            self.url(&["rest", "v1", "activities", "pagingtoken.json"])?,
            vec![("sinceDatetime", format_datetime(since))],
        );
        req.timeout = Some(self.inner.timeout.max(Duration::from_secs(300)));
        let env = self.call::<serde::de::IgnoredAny>(req).await?;
        env.next_page_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| MkError::protocol("pagingtoken response without nextPageToken"))
    }

    /// One page of an activities-style endpoint, following empty pages with `moreResult:true`
    /// (up to [`MAX_EMPTY_PAGES_FOLLOWED`]) and always carrying the newest token.
    async fn activity_page(
        &self,
        op: &'static str,
        segments: &[&str],
        token: &str,
        extra: &[(&'static str, String)],
    ) -> Result<Page<Activity>, MkError> {
        if token.is_empty() {
            return Err(MkError::invalid("nextPageToken", "empty"));
        }
        let url = self.url(segments)?;
        let mut token = token.to_string();
        let mut followed = 0;
        loop {
            let mut query = vec![("nextPageToken", token.clone())];
            query.extend(extra.iter().cloned());
            query.push(("batchSize", BATCH_SIZE.to_string()));
            let env: Envelope<WireActivity> =
                self.call(Req::get(op, url.clone(), query)).await.map_err(cursor_expired)?;
            let more = env.more_result.unwrap_or(false);
            let next = env.next_page_token.clone().filter(|t| !t.is_empty());
            // An activity Marketo sent without its lead, date or type cannot be applied to
            // anyone; failing the page for it would fail it on every retry and stall the stream
            // at this token forever, so it is skipped and named in the log.
            let items = env
                .records()
                .into_iter()
                .filter_map(|w| match w.into_activity() {
                    Ok(a) => Some(a),
                    Err(e) => {
                        tracing::warn!(op, error = %e, "skipping an incomplete activity record");
                        None
                    }
                })
                .collect::<Vec<_>>();
            let page = Page { items, next_token: Some(next.clone().unwrap_or_else(|| token.clone())), more };
            if !page.items.is_empty() || !more || followed >= MAX_EMPTY_PAGES_FOLLOWED {
                return Ok(page);
            }
            match next {
                Some(n) if n != token => {
                    tracing::debug!(op, followed, "empty page with moreResult; following");
                    token = n;
                    followed += 1;
                }
                _ => return Ok(page),
            }
        }
    }

    pub(crate) async fn lead_changes_page(&self, token: &str, fields: &[String]) -> Result<Page<Activity>, MkError> {
        check_list("fields", fields, usize::MAX, false)?;
        self.activity_page(
            "leadchanges",
            &["rest", "v1", "activities", "leadchanges.json"],
            token,
            &[("fields", fields.join(","))],
        )
        .await
    }

    pub(crate) async fn deleted_leads_page(&self, token: &str) -> Result<Page<Activity>, MkError> {
        self.activity_page("deletedleads", &["rest", "v1", "activities", "deletedleads.json"], token, &[]).await
    }

    pub(crate) async fn activities_page(
        &self,
        token: &str,
        type_ids: &[i64],
        lead_ids: &[i64],
    ) -> Result<Page<Activity>, MkError> {
        check_list("activityTypeIds", type_ids, MAX_ACTIVITY_TYPE_IDS, false)?;
        check_list("leadIds", lead_ids, MAX_ACTIVITY_LEAD_IDS, true)?;
        let mut extra = vec![("activityTypeIds", csv_of(type_ids))];
        if !lead_ids.is_empty() {
            extra.push(("leadIds", csv_of(lead_ids)));
        }
        self.activity_page("activities", &["rest", "v1", "activities.json"], token, &extra).await
    }

    /// Lead changes (New Lead 12, Change Data Value 13) from `token` on, as a stream of pages.
    pub fn lead_changes_stream(&self, token: String, fields: Vec<String>) -> PageStream<Activity> {
        let client = self.clone();
        paginate(Some(token), move |t| {
            let (client, fields) = (client.clone(), fields.clone());
            async move { client.lead_changes_page(t.as_deref().unwrap_or_default(), &fields).await }
        })
    }

    /// Delete Lead (37) activities from `token` on, as a stream of pages.
    pub fn deleted_leads_stream(&self, token: String) -> PageStream<Activity> {
        let client = self.clone();
        paginate(Some(token), move |t| {
            let client = client.clone();
            async move { client.deleted_leads_page(t.as_deref().unwrap_or_default()).await }
        })
    }

    /// Activities of the given types (≤10), optionally for some leads (≤30), as a stream of pages.
    pub fn activities_stream(&self, token: String, type_ids: Vec<i64>, lead_ids: Vec<i64>) -> PageStream<Activity> {
        let client = self.clone();
        paginate(Some(token), move |t| {
            let (client, type_ids, lead_ids) = (client.clone(), type_ids.clone(), lead_ids.clone());
            async move { client.activities_page(t.as_deref().unwrap_or_default(), &type_ids, &lead_ids).await }
        })
    }

    pub(crate) async fn get_activity_types(&self) -> Result<Vec<ActivityType>, MkError> {
        let req = Req::get("activitytypes", self.url(&["rest", "v1", "activities", "types.json"])?, Vec::new());
        let env = self.call::<WireActivityType>(req).await?;
        env.records().into_iter().map(WireActivityType::into_type).collect()
    }

    // ----- custom activities -----

    async fn custom_types(&self) -> Result<Vec<WireActivityType>, MkError> {
        let req =
            Req::get("customtypes", self.url(&["rest", "v1", "activities", "external", "types.json"])?, Vec::new());
        Ok(self.call::<WireActivityType>(req).await?.records())
    }

    async fn describe_custom_type(&self, api_name: &str, draft: bool) -> Result<Option<WireActivityType>, MkError> {
        let query = if draft { vec![("draft", "true".to_string())] } else { Vec::new() };
        let req = Req::get(
            "customtype.describe",
            self.url(&["rest", "v1", "activities", "external", "type", api_name, "describe.json"])?,
            query,
        );
        Ok(self.call::<WireActivityType>(req).await?.records().into_iter().next())
    }

    async fn add_type_attributes(&self, api_name: &str, attrs: &[&(String, String, String)]) -> Result<(), MkError> {
        if attrs.is_empty() {
            return Ok(());
        }
        let body = json!({"attributes": attrs.iter().map(|(a, n, t)| json!({"apiName": a, "name": n, "dataType": t})).collect::<Vec<_>>()});
        let req = Req::post(
            "customtype.attributes",
            self.url(&["rest", "v1", "activities", "external", "type", api_name, "attributes", "create.json"])?,
            Some(json_body(&body)?),
            Safety::Unsafe,
        );
        self.call::<serde::de::IgnoredAny>(req).await?;
        Ok(())
    }

    async fn approve_type(&self, api_name: &str) -> Result<Option<i64>, MkError> {
        let req = Req::post(
            "customtype.approve",
            self.url(&["rest", "v1", "activities", "external", "type", api_name, "approve.json"])?,
            None,
            Safety::Idempotent,
        );
        Ok(self.call::<WireActivityType>(req).await?.records().into_iter().next().and_then(|t| t.id))
    }

    async fn ensure_types_once(&self, defs: &[CustomActivityTypeDef]) -> Result<Vec<ProvisionedType>, MkError> {
        for d in defs {
            if d.api_name.is_empty() || !d.api_name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(MkError::invalid(
                    "apiName",
                    format!("{:?} must be non-empty and alphanumeric", d.api_name),
                ));
            }
            if d.attributes.len() > MAX_CUSTOM_ATTRIBUTES {
                return Err(MkError::Rejected {
                    code: "1028".into(),
                    message: format!(
                        "custom activity type {} has {} secondary attributes; Marketo allows {MAX_CUSTOM_ATTRIBUTES}",
                        d.api_name,
                        d.attributes.len()
                    ),
                });
            }
        }
        let existing: Vec<WireActivityType> = self
            .custom_types()
            .await?
            .into_iter()
            .filter(|t| t.status.as_deref().is_none_or(|s| !s.eq_ignore_ascii_case("deleted")))
            .collect();
        let find = |api: &str| existing.iter().find(|t| t.api_name.as_deref() == Some(api));
        let missing = defs.iter().filter(|d| find(&d.api_name).is_none()).count();
        if existing.len() + missing > MAX_CUSTOM_TYPES {
            return Err(MkError::Rejected {
                code: "1027".into(),
                message: format!(
                    "the instance has {} custom activity types and {missing} more are needed; Marketo allows {MAX_CUSTOM_TYPES}",
                    existing.len()
                ),
            });
        }
        let mut out = Vec::with_capacity(defs.len());
        for d in defs {
            match find(&d.api_name) {
                Some(t) => {
                    let status = t.status.clone().unwrap_or_default().to_ascii_lowercase();
                    let has_draft = status.contains("draft");
                    let described = self.describe_custom_type(&d.api_name, has_draft).await?;
                    let have: Vec<String> = described
                        .as_ref()
                        .and_then(|x| x.attributes.as_ref())
                        .map(|a| a.iter().filter_map(|x| x.api_name.clone()).collect())
                        .unwrap_or_default();
                    let need: Vec<&(String, String, String)> =
                        d.attributes.iter().filter(|(a, _, _)| !have.iter().any(|h| h == a)).collect();
                    self.add_type_attributes(&d.api_name, &need).await?;
                    let mut id = t.id.or(described.and_then(|x| x.id));
                    if has_draft || !need.is_empty() {
                        tracing::info!(api_name = %d.api_name, added = need.len(), "approving custom activity type");
                        id = self.approve_type(&d.api_name).await?.or(id);
                    }
                    let id =
                        id.ok_or_else(|| MkError::protocol(format!("custom activity type {} has no id", d.api_name)))?;
                    out.push(ProvisionedType { api_name: d.api_name.clone(), id, created: false });
                }
                None => {
                    tracing::info!(api_name = %d.api_name, "creating custom activity type");
                    let body = json!({
                        "apiName": d.api_name,
                        "name": d.name,
                        "description": d.description,
                        "triggerName": d.trigger_name,
                        "filterName": d.filter_name,
                        "primaryAttribute": {"apiName": d.primary_attribute.0, "name": d.primary_attribute.1, "dataType": "string"},
                    });
                    let req = Req::post(
                        "customtype.create",
                        self.url(&["rest", "v1", "activities", "external", "type.json"])?,
                        Some(json_body(&body)?),
                        Safety::Unsafe,
                    );
                    let created = self.call::<WireActivityType>(req).await?.records().into_iter().next();
                    let all: Vec<&(String, String, String)> = d.attributes.iter().collect();
                    self.add_type_attributes(&d.api_name, &all).await?;
                    let id = self.approve_type(&d.api_name).await?.or(created.and_then(|c| c.id));
                    let id =
                        id.ok_or_else(|| MkError::protocol(format!("custom activity type {} has no id", d.api_name)))?;
                    out.push(ProvisionedType { api_name: d.api_name.clone(), id, created: true });
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn ensure_types(&self, defs: &[CustomActivityTypeDef]) -> Result<Vec<ProvisionedType>, MkError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            match self.ensure_types_once(defs).await {
                // A create may have been applied: look again, which finds it if so.
                Err(MkError::OutcomeUnknown { operation, cause }) if attempt < ENSURE_TYPES_ATTEMPTS => {
                    tracing::warn!(operation, %cause, "custom activity type provisioning interrupted; re-checking");
                }
                // Another process provisioning the same instance at the same time (replicas
                // starting together) created a type or attribute, or approved a draft, between
                // our look and our write: 1003 "already exists" / "No draft to approve". Look
                // again after a moment, which finds its work.
                Err(MkError::Rejected { code, message }) if code == "1003" && attempt < ENSURE_TYPES_ATTEMPTS => {
                    tracing::info!(%message, attempt, "custom activity type changed meanwhile (concurrent provisioning?); re-checking");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
                r => return r,
            }
        }
    }

    pub(crate) async fn add_activities(&self, items: &[NewCustomActivity]) -> Result<Vec<RecordOutcome>, MkError> {
        check_list("activities", items, MAX_CUSTOM_ACTIVITIES, true)?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let input: Vec<WireNewActivity<'_>> = items
            .iter()
            .map(|i| WireNewActivity {
                lead_id: i.lead_id,
                activity_date: format_datetime(i.activity_date),
                activity_type_id: i.activity_type_id,
                primary_attribute_value: &i.primary_attribute_value,
                attributes: i.attributes.iter().map(|(a, v)| WireAttributeOut { api_name: a, value: v }).collect(),
            })
            .collect();
        let mut req = Req::post(
            "activities.add",
            self.url(&["rest", "v1", "activities", "external.json"])?,
            Some(json_body(&json!({ "input": input }))?),
            Safety::Unsafe,
        );
        req.timeout = Some(self.inner.timeout.max(Duration::from_secs(90)));
        let results = self.call::<WireWriteResult>(req).await?.records();
        if results.len() != items.len() {
            return Err(MkError::protocol(format!(
                "add custom activities returned {} results for {} inputs",
                results.len(),
                items.len()
            )));
        }
        Ok(results.into_iter().map(WireWriteResult::into_outcome).collect())
    }

    // ----- bulk lead export -----

    pub(crate) async fn start_export(&self, fields: &[String], filter: ExportFilter) -> Result<ExportJob, MkError> {
        check_list("fields", fields, usize::MAX, false)?;
        let (name, start, end) = match filter {
            ExportFilter::CreatedAt { start, end } => ("createdAt", start, end),
            ExportFilter::UpdatedAt { start, end } => ("updatedAt", start, end),
        };
        if start > end {
            return Err(MkError::invalid("filter", "start is after end"));
        }
        if end - start > chrono::Duration::days(MAX_EXPORT_WINDOW_DAYS) {
            return Err(MkError::invalid("filter", format!("window exceeds {MAX_EXPORT_WINDOW_DAYS} days")));
        }
        if start.nanosecond() != 0 || end.nanosecond() != 0 {
            return Err(MkError::invalid("filter", "bulk export dates must not carry fractional seconds"));
        }
        let body = json!({
            "fields": fields,
            "format": "CSV",
            "filter": { name: {"startAt": format_datetime(start), "endAt": format_datetime(end)} },
        });
        let req = Req::post(
            "export.create",
            self.url(&["bulk", "v1", "leads", "export", "create.json"])?,
            Some(json_body(&body)?),
            // A duplicate job that is never enqueued costs nothing and expires.
            Safety::Idempotent,
        );
        let created = self
            .call::<WireExport>(req)
            .await?
            .records()
            .into_iter()
            .next()
            .ok_or_else(|| MkError::protocol("export create returned no job"))?
            .into_job(None)?;
        let req = Req::post(
            "export.enqueue",
            self.url(&["bulk", "v1", "leads", "export", &created.id, "enqueue.json"])?,
            None,
            Safety::Idempotent,
        );
        match self.call::<WireExport>(req).await {
            Ok(env) => match env.records().into_iter().next() {
                Some(j) => j.into_job(Some(&created.id)),
                None => self.export_status(&created.id).await,
            },
            Err(e) => {
                // An enqueue applied with its response lost is refused when repeated (already
                // queued, or even completed): the job's own state says whether it took effect.
                // When even that cannot be read, whether it was enqueued is unknown: the answer is
                // the (transient) status failure, not the refusal, so the caller tries again.
                let e = match self.export_status(&created.id).await {
                    Ok(job) if !matches!(job.state, ExportState::Created | ExportState::Cancelled) => {
                        tracing::info!(export_id = %created.id, error = %e, state = ?job.state, "export enqueue failed but the job is enqueued");
                        return Ok(job);
                    }
                    Ok(_) => e,
                    Err(
                        status
                        @ (MkError::RateLimited { .. } | MkError::Unavailable { .. } | MkError::Transport { .. }),
                    ) => status,
                    Err(_) => e,
                };
                // Don't leave a created job behind.
                if let Err(c) = self.cancel_export(&created.id).await {
                    tracing::warn!(export_id = %created.id, error = %c, "could not cancel an export that failed to enqueue");
                }
                Err(e)
            }
        }
    }

    pub(crate) async fn export_status(&self, export_id: &str) -> Result<ExportJob, MkError> {
        check_export_id(export_id)?;
        let req = Req::get(
            "export.status",
            self.url(&["bulk", "v1", "leads", "export", export_id, "status.json"])?,
            Vec::new(),
        );
        self.call::<WireExport>(req)
            .await?
            .records()
            .into_iter()
            .next()
            .ok_or_else(|| MkError::protocol("export status returned no job"))?
            .into_job(Some(export_id))
    }

    pub(crate) async fn cancel_export(&self, export_id: &str) -> Result<(), MkError> {
        check_export_id(export_id)?;
        let req = Req::post(
            "export.cancel",
            self.url(&["bulk", "v1", "leads", "export", export_id, "cancel.json"])?,
            None,
            Safety::Idempotent,
        );
        self.call::<serde::de::IgnoredAny>(req).await?;
        Ok(())
    }

    pub(crate) async fn open_export_file(&self, export_id: &str, offset: u64) -> Result<FileOpen, MkError> {
        check_export_id(export_id)?;
        let mut req =
            Req::get("export.file", self.url(&["bulk", "v1", "leads", "export", export_id, "file.json"])?, Vec::new());
        req.file_from = Some(offset);
        let content_type_has = |r: &reqwest::Response, what: &str| {
            r.headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains(what))
        };
        // A JSON error envelope, or an HTML page (a proxy's or a login wall's) sent with 200, is read
        // as a body and reported; anything else is the file.
        let is_json = |r: &reqwest::Response| content_type_has(r, "json") || content_type_has(r, "html");
        let export = export_id.to_string();
        self.run(
            &req,
            |r| matches!(r.status().as_u16(), 200 | 206) && !is_json(r),
            |rec| match rec {
                Received::Stream { resp, permit } => {
                    // The body may be read slowly, interleaved with other calls of the same host:
                    // holding the in-flight permit for it could starve (or, at 1, deadlock) them.
                    drop(permit);
                    let skip = if resp.status().as_u16() == 206 { 0 } else { offset };
                    if skip > 0 {
                        tracing::warn!(export_id = %export, offset, "server ignored Range; skipping bytes client-side");
                    }
                    Interp::Done(FileOpen::Body { resp, skip })
                }
                Received::Body { status: 416, .. } => Interp::Done(FileOpen::Empty),
                Received::Body { status: 404, body } if probe_error(&body).is_none() => {
                    Interp::Fail(MkError::FileNotReady { export_id: export.clone(), message: snippet(&body) })
                }
                Received::Body { status, body } if (200..300).contains(&status) && looks_like_html(&body) => {
                    let page = salesync_http::html_instead_of(status, "the CSV file", &snippet(&body));
                    Interp::Fail(MkError::protocol(format!("export {export} file: {page}")))
                }
                Received::Body { status, body } if (200..300).contains(&status) => {
                    match crate::envelope::parse_body::<serde::de::IgnoredAny>(status, &body) {
                        crate::envelope::Parsed::Failed { action, code, message } => {
                            Interp::Act { action, code, message }
                        }
                        _ => Interp::Fail(MkError::protocol(format!(
                            "export {export} file: HTTP {status} answered with a JSON or HTML body instead of the \
                             CSV file: {}",
                            snippet(&body)
                        ))),
                    }
                }
                Received::Body { status, body } => interpret_error_status(status, &body),
            },
        )
        .await
    }

    /// The export file from `offset` on. Chunks are passed through as they arrive; a connection that
    /// breaks mid-file is re-opened with `Range: bytes=N-` from the next undelivered byte.
    pub(crate) async fn export_file(&self, export_id: &str, offset: u64) -> Result<ByteStream, MkError> {
        let first = self.open_export_file(export_id, offset).await?;
        let (body, skip) = match first {
            FileOpen::Body { resp, skip } => (Some(resp), skip),
            FileOpen::Empty => return Ok(stream::empty().boxed()),
        };
        let state =
            FileState { client: self.clone(), export_id: export_id.to_string(), offset, body, skip, resumes: 0 };
        Ok(stream::try_unfold(state, file_step).boxed())
    }
}

async fn file_step(mut st: FileState) -> salesync_core::Result<Option<(Vec<u8>, FileState)>> {
    loop {
        if st.body.is_none() {
            match st.client.open_export_file(&st.export_id, st.offset).await? {
                FileOpen::Body { resp, skip } => {
                    st.body = Some(resp);
                    st.skip = skip;
                }
                FileOpen::Empty => return Ok(None),
            }
        }
        let Some(resp) = st.body.as_mut() else { continue };
        match resp.chunk().await {
            Ok(Some(bytes)) => {
                let mut chunk: &[u8] = &bytes;
                if st.skip > 0 {
                    let k = usize::try_from(st.skip).unwrap_or(usize::MAX).min(chunk.len());
                    chunk = &chunk[k..];
                    st.skip -= k as u64;
                }
                if chunk.is_empty() {
                    continue;
                }
                st.offset += chunk.len() as u64;
                return Ok(Some((chunk.to_vec(), st)));
            }
            Ok(None) => return Ok(None),
            Err(e) => {
                st.body = None;
                let retry = st.client.inner.retry;
                if st.resumes + 1 >= retry.max_attempts {
                    return Err(MkError::Stream {
                        operation: "export.file",
                        detail: format!("download broke off at byte {}: {}", st.offset, e.without_url()),
                    }
                    .into());
                }
                st.resumes += 1;
                tracing::warn!(export_id = %st.export_id, offset = st.offset, error = %e.without_url(), "export download broke off; resuming with Range");
                tokio::time::sleep(retry.delay(st.resumes)).await;
            }
        }
    }
}

fn check_export_id(id: &str) -> Result<(), MkError> {
    if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(MkError::invalid("exportId", format!("{id:?} is not an export id")));
    }
    Ok(())
}

#[async_trait]
impl MarketoApi for MarketoClient {
    async fn lead_schema(&self) -> salesync_core::Result<LeadSchema> {
        Ok(self.get_lead_schema().await?)
    }

    async fn leads_by_ids(&self, ids: &[i64], fields: &[String]) -> salesync_core::Result<Vec<LeadRecord>> {
        Ok(self.get_leads_by_ids(ids, fields).await?)
    }

    async fn leads_by_filter(
        &self,
        filter_type: &str,
        values: &[String],
        fields: &[String],
        page_token: Option<String>,
    ) -> salesync_core::Result<Page<LeadRecord>> {
        Ok(self.leads_page(filter_type, values, fields, page_token).await?)
    }

    async fn paging_token(&self, since: DateTime<Utc>) -> salesync_core::Result<String> {
        Ok(self.get_paging_token(since).await?)
    }

    async fn lead_changes(&self, token: &str, fields: &[String]) -> salesync_core::Result<Page<Activity>> {
        Ok(self.lead_changes_page(token, fields).await?)
    }

    async fn deleted_leads(&self, token: &str) -> salesync_core::Result<Page<Activity>> {
        Ok(self.deleted_leads_page(token).await?)
    }

    async fn activities(
        &self,
        token: &str,
        type_ids: &[i64],
        lead_ids: &[i64],
    ) -> salesync_core::Result<Page<Activity>> {
        Ok(self.activities_page(token, type_ids, lead_ids).await?)
    }

    async fn activity_types(&self) -> salesync_core::Result<Vec<ActivityType>> {
        Ok(self.get_activity_types().await?)
    }

    async fn start_lead_export(&self, fields: &[String], filter: ExportFilter) -> salesync_core::Result<ExportJob> {
        Ok(self.start_export(fields, filter).await?)
    }

    async fn lead_export_status(&self, export_id: &str) -> salesync_core::Result<ExportJob> {
        Ok(self.export_status(export_id).await?)
    }

    async fn lead_export_file(&self, export_id: &str, offset: u64) -> salesync_core::Result<ByteStream> {
        Ok(self.export_file(export_id, offset).await?)
    }

    async fn cancel_lead_export(&self, export_id: &str) -> salesync_core::Result<()> {
        Ok(self.cancel_export(export_id).await?)
    }

    async fn ensure_custom_activity_types(
        &self,
        defs: &[CustomActivityTypeDef],
    ) -> salesync_core::Result<Vec<ProvisionedType>> {
        Ok(self.ensure_types(defs).await?)
    }

    async fn add_custom_activities(&self, items: &[NewCustomActivity]) -> salesync_core::Result<Vec<RecordOutcome>> {
        Ok(self.add_activities(items).await?)
    }

    fn rate_budget(&self) -> Option<salesync_core::ports::marketo::RateBudget> {
        Some(self.inner.limits.shared.budget())
    }

    async fn lead_unsubscribed(&self, lead_id: i64) -> salesync_core::Result<Option<bool>> {
        Ok(self.get_lead_unsubscribed(lead_id).await?)
    }

    async fn usage_today(&self) -> salesync_core::Result<Option<u64>> {
        Ok(Some(self.get_usage_today().await?))
    }
}

/// A 1003 on a call that sent a paging token and whose message names it ("Invalid
/// nextPageToken", "… token expired", "too old") is the token refused, not the request.
fn cursor_expired(e: MkError) -> MkError {
    match e {
        MkError::Rejected { code, message } if code.trim() == "1003" => {
            let m = message.to_ascii_lowercase();
            if (m.contains("token") && !m.contains("access token")) || m.contains("too old") || m.contains("expired") {
                MkError::CursorExpired { detail: format!("{code}: {message}") }
            } else {
                MkError::Rejected { code, message }
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_ids_are_checked() {
        assert!(check_export_id("fad2cd1b-e822-4025-be1e-9caa9cf1d4b8").is_ok());
        assert!(check_export_id("../x").is_err());
        assert!(check_export_id("").is_err());
    }

    #[tokio::test]
    async fn paginate_follows_tokens_until_no_more() {
        use futures::TryStreamExt;
        let pages = paginate::<u32, _, _>(None, |t| async move {
            Ok(match t.as_deref() {
                None => Page { items: vec![1], next_token: Some("a".into()), more: true },
                Some("a") => Page { items: vec![], next_token: Some("b".into()), more: true },
                Some("b") => Page { items: vec![2], next_token: Some("c".into()), more: false },
                Some(other) => panic!("unexpected token {other}"),
            })
        });
        let got: Vec<Page<u32>> = pages.try_collect().await.unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].next_token.as_deref(), Some("c"));
    }
}
