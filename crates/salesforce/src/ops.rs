//! The `SalesforceApi` operations.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::Method;
use salesync_core::ports::Page;
use salesync_core::ports::marketo::RecordOutcome;
use salesync_core::ports::salesforce::{
    ApiUsage, DeletedRecord, DeletedSince, LeadConversion, OpportunityChanges, OpportunityLinks, OptOutRecord,
    PersonRef, RoleCandidate, SalesforceApi, TaskRecord, TaskWrite, User, choose_opportunity,
};
use salesync_core::{
    Error,
    sfid::{SalesforceId, SalesforceObject},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::classify::record_error_is_intermittent;
use crate::client::{CallError, Cursor, SalesforceClient};
use crate::error::{ApiError, protocol};
use crate::soql::{Condition, Soql, is_identifier};

/// At most this many records per sObject Collections call, and ids per `IN` list.
pub const MAX_BATCH: usize = 200;

/// The Task fields read by [`SalesforceApi::tasks_modified_since`] (plus the external-id field).
pub const TASK_FIELDS: [&str; 11] = [
    "Id",
    "WhoId",
    "Subject",
    "Status",
    "Priority",
    "ActivityDate",
    "Description",
    "TaskSubtype",
    "CreatedDate",
    "SystemModstamp",
    "IsDeleted",
];

/// One result of an sObject Collections call.
#[derive(Debug, Deserialize)]
pub(crate) struct CollectionResult {
    #[serde(default)]
    id: Option<String>,
    /// Required: a result without it says nothing about the record.
    success: bool,
    #[serde(default)]
    errors: Vec<ApiError>,
}

/// Reads an sObject Collections answer: one result per record sent, in order.
pub(crate) fn parse_collection_results(body: &[u8]) -> Result<Vec<CollectionResult>, Error> {
    serde_json::from_slice(body).map_err(|e| protocol(format!("sObject Collections result: malformed JSON body: {e}")))
}

fn rejected(errors: &[ApiError]) -> RecordOutcome {
    let code = errors.first().map(|e| e.error_code.clone()).unwrap_or_else(|| "UNKNOWN".into());
    let message = if errors.is_empty() {
        "Salesforce reported a failure without an error".to_string()
    } else {
        errors.iter().map(ApiError::message_with_fields).collect::<Vec<_>>().join("; ")
    };
    RecordOutcome::Rejected { code, message }
}

/// Fields Salesforce accepts on create but refuses on update.
pub const CREATE_ONLY_FIELDS: [&str; 1] = ["TaskSubtype"];

/// Removes the create-only fields an `INVALID_FIELD_FOR_INSERT_UPDATE` names from `record`;
/// true when something was removed (so the record is worth sending again).
fn strip_create_only(record: &mut Value, errors: &[ApiError]) -> bool {
    let Some(e) = errors.first().filter(|e| e.error_code == "INVALID_FIELD_FOR_INSERT_UPDATE") else {
        return false;
    };
    let Some(m) = record.as_object_mut() else { return false };
    let mut removed = false;
    for f in CREATE_ONLY_FIELDS {
        let named = e.fields.iter().any(|x| x == f) || e.message.contains(f);
        if named && m.remove(f).is_some() {
            removed = true;
        }
    }
    removed
}

/// Parses a Salesforce datetime (`2025-06-03T21:20:00.000+0000` or RFC 3339).
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Renders a datetime as the replication endpoints want it.
fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// Typed access to one query record, with errors that name the record and field.
struct Rec<'a> {
    v: &'a Value,
    what: &'static str,
}

impl<'a> Rec<'a> {
    fn new(v: &'a Value, what: &'static str) -> Self {
        Self { v, what }
    }
    fn raw(&self, field: &str) -> Option<&'a Value> {
        self.v.get(field).filter(|v| !v.is_null())
    }
    fn err(&self, field: &str, why: &str) -> Error {
        let id = self.v.get("Id").and_then(Value::as_str).unwrap_or("?");
        protocol(format!("{} {id}: field {field} {why}", self.what))
    }
    fn text(&self, field: &str) -> Result<Option<String>, Error> {
        match self.raw(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(field, "is not a string")),
        }
    }
    fn id(&self, field: &str) -> Result<Option<SalesforceId>, Error> {
        match self.text(field)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => SalesforceId::parse(&s).map(Some).map_err(|e| self.err(field, &e.to_string())),
        }
    }
    fn req_id(&self, field: &str) -> Result<SalesforceId, Error> {
        self.id(field)?.ok_or_else(|| self.err(field, "is missing"))
    }
    fn boolean(&self, field: &str) -> Result<bool, Error> {
        match self.raw(field) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
            Some(_) => Err(self.err(field, "is not a boolean")),
        }
    }
    fn datetime(&self, field: &str) -> Result<Option<DateTime<Utc>>, Error> {
        match self.text(field)? {
            None => Ok(None),
            Some(s) => parse_datetime(&s).map(Some).ok_or_else(|| self.err(field, "is not a datetime")),
        }
    }
    fn req_datetime(&self, field: &str) -> Result<DateTime<Utc>, Error> {
        self.datetime(field)?.ok_or_else(|| self.err(field, "is missing"))
    }
    fn date(&self, field: &str) -> Result<Option<NaiveDate>, Error> {
        match self.text(field)? {
            None => Ok(None),
            Some(s) => {
                let day = s.get(..10).unwrap_or(&s);
                NaiveDate::parse_from_str(day, "%Y-%m-%d").map(Some).map_err(|_| self.err(field, "is not a date"))
            }
        }
    }
}

/// Parses a Task query record.
pub(crate) fn task_record(v: &Value, ext_field: &str) -> Result<TaskRecord, Error> {
    let r = Rec::new(v, "Task");
    Ok(TaskRecord {
        id: r.req_id("Id")?,
        external_id: r.text(ext_field)?,
        who_id: r.id("WhoId")?,
        subject: r.text("Subject")?,
        status: r.text("Status")?,
        priority: r.text("Priority")?,
        activity_date: r.date("ActivityDate")?,
        description: r.text("Description")?,
        task_subtype: r.text("TaskSubtype")?,
        created_at: r.req_datetime("CreatedDate")?,
        modified_at: r.req_datetime("SystemModstamp")?,
        deleted: r.boolean("IsDeleted")?,
    })
}

fn opt_out_record(v: &Value, field: &str) -> Result<OptOutRecord, Error> {
    let r = Rec::new(v, "Lead/Contact");
    Ok(OptOutRecord {
        id: r.req_id("Id")?,
        email: r.text("Email")?,
        opted_out: r.boolean(field)?,
        modified_at: r.req_datetime("SystemModstamp")?,
    })
}

/// The JSON record of one Task upsert (without `attributes`' URL; omitted options are left untouched).
pub(crate) fn task_json(t: &TaskWrite, ext_field: &str) -> Result<Value, Error> {
    let mut m = Map::new();
    m.insert("attributes".into(), json!({"type": "Task"}));
    m.insert(ext_field.into(), Value::String(t.external_id.clone()));
    m.insert("Subject".into(), Value::String(t.subject.clone()));
    m.insert("Status".into(), Value::String(t.status.clone()));
    m.insert("Priority".into(), Value::String(t.priority.clone()));
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    put("WhoId", t.who_id.as_ref().map(|i| Value::String(i.to_string())));
    put("WhatId", t.what_id.as_ref().map(|i| Value::String(i.to_string())));
    put("OwnerId", t.owner_id.as_ref().map(|i| Value::String(i.to_string())));
    put("ActivityDate", t.activity_date.map(|d| Value::String(d.format("%Y-%m-%d").to_string())));
    put("Description", t.description.clone().map(Value::String));
    put("TaskSubtype", t.task_subtype.clone().map(Value::String));
    put("Type", t.task_type.clone().map(Value::String));
    put("CallDurationInSeconds", t.call_duration_secs.map(Value::from));
    put("CallDisposition", t.call_disposition.clone().map(Value::String));
    for (k, v) in &t.custom_fields {
        check_field(k)?;
        m.insert(k.clone(), v.clone());
    }
    Ok(Value::Object(m))
}

fn check_field(name: &str) -> Result<(), Error> {
    if is_identifier(name) && !name.contains('.') && name != "attributes" {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            field: "field".into(),
            reason: format!("{name:?} is not a Salesforce field API name"),
        })
    }
}

/// The opt-out listing's page token: which object, and where in its cursor.
fn opt_out_cursor(token: Option<&str>) -> Result<(&'static str, Option<String>), Error> {
    let bad = || Error::InvalidInput { field: "page_token".into(), reason: "not an opted_out_since token".into() };
    match token {
        None => Ok(("Lead", None)),
        Some(t) => {
            let (obj, rest) = t.split_once(':').ok_or_else(bad)?;
            let obj = match obj {
                "Lead" => "Lead",
                "Contact" => "Contact",
                _ => return Err(bad()),
            };
            Ok((obj, (!rest.is_empty()).then(|| rest.to_string())))
        }
    }
}

impl SalesforceClient {
    /// Sends records through sObject Collections in chunks of [`MAX_BATCH`] (`allOrNone=false`),
    /// re-sending records that failed with an intermittent per-record error (the calls used are
    /// idempotent: upsert by external id, update by id). One outcome per record, in order.
    ///
    /// A record refused with `INVALID_FIELD_FOR_INSERT_UPDATE` on a create-only field (Task
    /// `TaskSubtype`) is re-sent once without that field: the upsert found an existing Task, whose
    /// subtype was set when it was created.
    pub(crate) async fn collection_write(
        &self,
        path: &str,
        mut records: Vec<Value>,
    ) -> Result<Vec<RecordOutcome>, Error> {
        let max_rounds = self.inner.s.retry.max_attempts;
        let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; records.len()];
        for start in (0..records.len()).step_by(MAX_BATCH) {
            let end = (start + MAX_BATCH).min(records.len());
            let mut pending: Vec<usize> = (start..end).collect();
            let mut round = 0u32;
            while !pending.is_empty() {
                round += 1;
                let batch: Vec<&Value> = pending.iter().map(|&i| &records[i]).collect();
                let body = json!({"allOrNone": false, "records": batch});
                let answer = self.call(Method::PATCH, path, &[], Some(&body), true).await?;
                let results = parse_collection_results(&answer.body)?;
                if results.len() != pending.len() {
                    return Err(protocol(format!(
                        "sObject Collections returned {} results for {} records",
                        results.len(),
                        pending.len()
                    )));
                }
                let mut again = Vec::new();
                for (&i, r) in pending.iter().zip(results) {
                    if r.success {
                        outcomes[i] = Some(RecordOutcome::Written { id: r.id.unwrap_or_default() });
                    } else if strip_create_only(&mut records[i], &r.errors)
                        || (round < max_rounds
                            && r.errors.first().is_some_and(|e| record_error_is_intermittent(&e.error_code)))
                    {
                        again.push(i);
                    } else {
                        outcomes[i] = Some(rejected(&r.errors));
                    }
                }
                if !again.is_empty() {
                    tracing::warn!(records = again.len(), round, "salesforce: intermittent record errors; re-sending");
                    tokio::time::sleep(self.inner.s.retry.delay(round)).await;
                }
                pending = again;
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| protocol("a record got no outcome")))
            .collect::<Result<Vec<_>, _>>()
    }

    /// A stream of pages of Tasks modified after `since` (oldest first), as
    /// [`SalesforceApi::tasks_modified_since`] pages them.
    pub fn tasks_modified_stream(
        &self,
        since: DateTime<Utc>,
    ) -> BoxStream<'static, salesync_core::Result<Page<TaskRecord>>> {
        match self.tasks_query(since).build() {
            Ok(q) => {
                let ext = self.inner.s.task_external_id_field.clone();
                self.paginate(Cursor::Start(q), move |v| task_record(v, &ext))
            }
            Err(e) => futures::stream::once(async move { Err(Error::from(e)) }).boxed(),
        }
    }

    fn tasks_query(&self, since: DateTime<Utc>) -> Soql {
        Soql::new()
            .select(&TASK_FIELDS)
            .select_field(&self.inner.s.task_external_id_field)
            .from("Task")
            .where_gt("SystemModstamp", since)
            .order_by("SystemModstamp")
            .order_by("Id")
    }

    /// The mapped pages of a query.
    fn paginate_query<T: Send + 'static>(
        &self,
        soql: Soql,
        map: impl Fn(&Value) -> Result<T, Error> + Send + Sync + Clone + 'static,
    ) -> BoxStream<'static, salesync_core::Result<Page<T>>> {
        match soql.build() {
            Ok(q) => self.paginate(Cursor::Start(q), map),
            Err(e) => futures::stream::once(async move { Err(Error::from(e)) }).boxed(),
        }
    }

    /// Every record of a query, mapped.
    async fn collect<T>(&self, soql: Soql, map: impl Fn(&Value) -> Result<T, Error>) -> Result<Vec<T>, Error> {
        self.query_all(&soql).await?.iter().map(map).collect()
    }
}

#[async_trait]
impl SalesforceApi for SalesforceClient {
    async fn upsert_tasks(&self, tasks: &[TaskWrite]) -> salesync_core::Result<Vec<RecordOutcome>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let ext = &self.inner.s.task_external_id_field;
        let records = tasks.iter().map(|t| task_json(t, ext)).collect::<Result<Vec<_>, _>>()?;
        let path = self.data_path(&format!("composite/sobjects/Task/{ext}"));
        self.collection_write(&path, records).await
    }

    async fn update_tasks(
        &self,
        updates: &[(SalesforceId, Vec<(String, Value)>)],
    ) -> salesync_core::Result<Vec<RecordOutcome>> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let mut records = Vec::with_capacity(updates.len());
        for (id, fields) in updates {
            let mut m = Map::new();
            m.insert("attributes".into(), json!({"type": "Task"}));
            for (k, v) in fields {
                check_field(k)?;
                if k.eq_ignore_ascii_case("Id") {
                    continue;
                }
                m.insert(k.clone(), v.clone());
            }
            m.insert("id".into(), Value::String(id.to_string()));
            records.push(Value::Object(m));
        }
        let path = self.data_path("composite/sobjects");
        self.collection_write(&path, records).await
    }

    async fn delete_task(&self, id: &SalesforceId) -> salesync_core::Result<()> {
        let path = self.data_path(&format!("sobjects/Task/{id}"));
        match self.call(Method::DELETE, &path, &[], None, true).await {
            // Salesforce answers a done DELETE with 204 and no body. A 2xx with a body (a proxy's
            // page, a cut-off response) does not say the Task was deleted: outcome unknown.
            Ok(answer) if answer.body.iter().all(u8::is_ascii_whitespace) => Ok(()),
            Ok(answer) => Err(protocol(format!(
                "DELETE of Task {id} answered 2xx with a {}-byte body instead of 204 No Content",
                answer.body.len()
            ))),
            // A repeated delete (e.g. after a lost response) finds the Task already deleted.
            Err(CallError::Api { error, .. }) if error.error_code == "ENTITY_IS_DELETED" => Ok(()),
            Err(CallError::Api { status: 404, error, .. })
                if error.error_code == "NOT_FOUND" || error.error_code.is_empty() =>
            {
                Err(Error::NotFound { what: "Task", id: id.to_string() })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn tasks_modified_since(
        &self,
        since: DateTime<Utc>,
        page_token: Option<String>,
    ) -> salesync_core::Result<Page<TaskRecord>> {
        let cursor = match page_token {
            Some(t) => Cursor::Next(t),
            None => Cursor::Start(self.tasks_query(since).build()?),
        };
        let ext = &self.inner.s.task_external_id_field;
        self.page_of(&cursor, |v| task_record(v, ext)).await
    }

    async fn tasks_deleted_between(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> salesync_core::Result<DeletedSince> {
        #[derive(Deserialize)]
        struct Deleted {
            id: String,
            #[serde(rename = "deletedDate")]
            deleted_date: String,
        }
        #[derive(Deserialize)]
        struct Body {
            #[serde(rename = "deletedRecords", default)]
            deleted_records: Vec<Deleted>,
            #[serde(rename = "earliestDateAvailable", default)]
            earliest_date_available: Option<String>,
            #[serde(rename = "latestDateCovered", default)]
            latest_date_covered: Option<String>,
        }
        let path = self.data_path("sobjects/Task/deleted/");
        let (s, e) = (iso(start), iso(end));
        let body: Body = self.get_json(&path, &[("start", s.as_str()), ("end", e.as_str())]).await?;
        let when = |field: &str, v: Option<String>| -> Result<Option<DateTime<Utc>>, Error> {
            v.map(|s| parse_datetime(&s).ok_or_else(|| protocol(format!("getDeleted {field} {s:?} is not a datetime"))))
                .transpose()
        };
        let mut records = Vec::with_capacity(body.deleted_records.len());
        for d in body.deleted_records {
            let id = SalesforceId::parse(&d.id).map_err(|e| protocol(format!("getDeleted id: {e}")))?;
            let deleted_at =
                when("deletedDate", Some(d.deleted_date))?.ok_or_else(|| protocol("deletedDate missing"))?;
            records.push(DeletedRecord { id, deleted_at });
        }
        Ok(DeletedSince {
            records,
            earliest_available: when("earliestDateAvailable", body.earliest_date_available)?,
            latest_covered: when("latestDateCovered", body.latest_date_covered)?,
        })
    }

    async fn set_opted_out(&self, ids: &[SalesforceId], field: &str) -> salesync_core::Result<Vec<RecordOutcome>> {
        check_field(field)?;
        // Leads first, then contacts (two chunks per call at most), outcomes mapped back to input order.
        let mut order: Vec<usize> = Vec::with_capacity(ids.len());
        let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; ids.len()];
        for kind in [SalesforceObject::Lead, SalesforceObject::Contact] {
            order.extend(ids.iter().enumerate().filter(|(_, id)| id.object() == kind).map(|(i, _)| i));
        }
        for (i, id) in ids.iter().enumerate() {
            if !matches!(id.object(), SalesforceObject::Lead | SalesforceObject::Contact) {
                outcomes[i] = Some(RecordOutcome::Rejected {
                    code: "INVALID_ID_FIELD".into(),
                    message: format!("{id} is neither a Lead nor a Contact id"),
                });
            }
        }
        let records: Vec<Value> = order
            .iter()
            .map(|&i| {
                let ty = if ids[i].object() == SalesforceObject::Lead { "Lead" } else { "Contact" };
                let mut m = Map::new();
                m.insert("attributes".into(), json!({"type": ty}));
                m.insert("id".into(), Value::String(ids[i].to_string()));
                m.insert(field.to_string(), Value::Bool(true));
                Value::Object(m)
            })
            .collect();
        if !records.is_empty() {
            let path = self.data_path("composite/sobjects");
            let written = self.collection_write(&path, records).await?;
            for (&i, o) in order.iter().zip(written) {
                outcomes[i] = Some(o);
            }
        }
        outcomes.into_iter().map(|o| o.ok_or_else(|| protocol("an id got no outcome"))).collect()
    }

    async fn opted_out_since(
        &self,
        field: &str,
        since: DateTime<Utc>,
        page_token: Option<String>,
    ) -> salesync_core::Result<Page<OptOutRecord>> {
        check_field(field)?;
        let (object, next) = opt_out_cursor(page_token.as_deref())?;
        let cursor = match next {
            Some(url) => Cursor::Next(url),
            None => Cursor::Start(
                Soql::new()
                    .select(&["Id", "Email", "SystemModstamp"])
                    .select_field(field)
                    .from(object)
                    .where_eq(field, true)
                    .where_gt("SystemModstamp", since)
                    .order_by("SystemModstamp")
                    .order_by("Id")
                    .build()?,
            ),
        };
        let page = self.page_of(&cursor, |v| opt_out_record(v, field)).await?;
        Ok(match (page.more, page.next_token, object) {
            (true, Some(url), obj) => Page { items: page.items, next_token: Some(format!("{obj}:{url}")), more: true },
            (_, _, "Lead") => Page { items: page.items, next_token: Some("Contact:".into()), more: true },
            _ => Page::last(page.items, None),
        })
    }

    async fn opportunities_for_contacts(
        &self,
        contact_ids: &[SalesforceId],
    ) -> salesync_core::Result<Vec<(SalesforceId, Option<SalesforceId>)>> {
        struct Role {
            contact: SalesforceId,
            opportunity: SalesforceId,
            primary: bool,
        }
        let mut roles = Vec::new();
        for chunk in contact_ids.chunks(MAX_BATCH) {
            let q = Soql::new()
                .select(&["Id", "ContactId", "OpportunityId", "IsPrimary"])
                .from("OpportunityContactRole")
                .where_in("ContactId", chunk.iter())
                .order_by("Id");
            roles.extend(
                self.collect(q, |v| {
                    let r = Rec::new(v, "OpportunityContactRole");
                    Ok(Role {
                        contact: r.req_id("ContactId")?,
                        opportunity: r.req_id("OpportunityId")?,
                        primary: r.boolean("IsPrimary")?,
                    })
                })
                .await?,
            );
        }
        let mut opp_ids: Vec<SalesforceId> = roles.iter().map(|r| r.opportunity.clone()).collect();
        opp_ids.sort();
        opp_ids.dedup();
        // Open opportunities with their last modification.
        let mut open: HashMap<SalesforceId, DateTime<Utc>> = HashMap::new();
        for chunk in opp_ids.chunks(MAX_BATCH) {
            let q = Soql::new()
                .select(&["Id", "LastModifiedDate", "SystemModstamp"])
                .from("Opportunity")
                .where_in("Id", chunk.iter())
                .and(Condition::eq("IsClosed", false));
            for (id, at) in self
                .collect(q, |v| {
                    let r = Rec::new(v, "Opportunity");
                    let at = match r.datetime("LastModifiedDate")? {
                        Some(t) => t,
                        None => r.req_datetime("SystemModstamp")?,
                    };
                    Ok((r.req_id("Id")?, at))
                })
                .await?
            {
                open.insert(id, at);
            }
        }
        Ok(contact_ids
            .iter()
            .map(|c| {
                let best = choose_opportunity(roles.iter().filter(|r| &r.contact == c).filter_map(|r| {
                    open.get(&r.opportunity).map(|at| RoleCandidate {
                        primary: r.primary,
                        modified_at: *at,
                        opportunity: &r.opportunity,
                    })
                }));
                (c.clone(), best.cloned())
            })
            .collect())
    }

    async fn opportunity_links(&self) -> salesync_core::Result<OpportunityLinks> {
        // Open opportunities with their last modification, then every contact role (kept only
        // for open ones), then the converted leads: three queries read in pages of the batch
        // size (2,000 by default), whatever the org's size.
        let open_q = Soql::new()
            .select(&["Id", "LastModifiedDate", "SystemModstamp"])
            .from("Opportunity")
            .where_eq("IsClosed", false)
            .order_by("Id");
        let mut open: HashMap<SalesforceId, DateTime<Utc>> = HashMap::new();
        let mut pages = self.paginate_query(open_q, |v| {
            let r = Rec::new(v, "Opportunity");
            let at = match r.datetime("LastModifiedDate")? {
                Some(t) => t,
                None => r.req_datetime("SystemModstamp")?,
            };
            Ok((r.req_id("Id")?, at))
        });
        while let Some(page) = pages.next().await {
            open.extend(page?.items);
        }
        let roles_q = Soql::new()
            .select(&["Id", "ContactId", "OpportunityId", "IsPrimary"])
            .from("OpportunityContactRole")
            .order_by("Id");
        // Per contact: the best role so far (primary, modified, opportunity).
        let mut best: HashMap<SalesforceId, (bool, DateTime<Utc>, SalesforceId)> = HashMap::new();
        let mut pages = self.paginate_query(roles_q, |v| {
            let r = Rec::new(v, "OpportunityContactRole");
            Ok((r.id("ContactId")?, r.req_id("OpportunityId")?, r.boolean("IsPrimary")?))
        });
        while let Some(page) = pages.next().await {
            for (contact, opportunity, primary) in page?.items {
                let (Some(contact), Some(at)) = (contact, open.get(&opportunity).copied()) else { continue };
                let candidate = (primary, at, opportunity);
                match best.get(&contact) {
                    Some(cur) => {
                        let pick = choose_opportunity([
                            RoleCandidate { primary: cur.0, modified_at: cur.1, opportunity: &cur.2 },
                            RoleCandidate { primary: candidate.0, modified_at: candidate.1, opportunity: &candidate.2 },
                        ]);
                        if pick == Some(&candidate.2) && pick != Some(&cur.2) {
                            best.insert(contact, candidate);
                        }
                    }
                    None => {
                        best.insert(contact, candidate);
                    }
                }
            }
        }
        drop(open);
        let leads_q = Soql::new()
            .select(&["Id", "ConvertedOpportunityId"])
            .from("Lead")
            .where_eq("IsConverted", true)
            .order_by("Id");
        let mut converted_leads = HashMap::new();
        let mut pages = self.paginate_query(leads_q, |v| {
            let r = Rec::new(v, "Lead");
            Ok((r.req_id("Id")?, r.id("ConvertedOpportunityId")?))
        });
        while let Some(page) = pages.next().await {
            converted_leads.extend(page?.items);
        }
        Ok(OpportunityLinks { contacts: best.into_iter().map(|(c, (_, _, o))| (c, o)).collect(), converted_leads })
    }

    async fn opportunity_changes(
        &self,
        since: DateTime<Utc>,
        limit: usize,
    ) -> salesync_core::Result<OpportunityChanges> {
        let mut contacts = std::collections::BTreeSet::new();
        let mut converted_leads = std::collections::BTreeSet::new();
        let mut newest: Option<DateTime<Utc>> = None;
        let mut seen = |at: DateTime<Utc>| newest = Some(newest.map_or(at, |n| n.max(at)));
        // Contact roles created, changed or deleted (queryAll: deleted ones are in the bin).
        let roles = Soql::new()
            .select(&["ContactId", "SystemModstamp"])
            .from("OpportunityContactRole")
            .where_gt("SystemModstamp", since)
            .order_by("SystemModstamp");
        let mut pages = match roles.build() {
            Ok(q) => self.paginate(Cursor::StartAll(q), |v| {
                let r = Rec::new(v, "OpportunityContactRole");
                Ok((r.id("ContactId")?, r.req_datetime("SystemModstamp")?))
            }),
            Err(e) => return Err(Error::from(e)),
        };
        let full = |c: &std::collections::BTreeSet<SalesforceId>, l: &std::collections::BTreeSet<SalesforceId>| {
            c.len() + l.len() > limit
        };
        let truncated = |contacts, converted_leads, newest| {
            Ok(OpportunityChanges { contacts, converted_leads, newest, truncated: true })
        };
        while let Some(page) = pages.next().await {
            for (contact, at) in page?.items {
                seen(at);
                contacts.extend(contact);
            }
            if full(&contacts, &converted_leads) {
                return truncated(contacts.into_iter().collect(), Vec::new(), newest);
            }
        }
        // Opportunities that changed (closed, reopened, re-dated): their roles' contacts.
        let opps = Soql::new()
            .select(&["Id", "SystemModstamp"])
            .from("Opportunity")
            .where_gt("SystemModstamp", since)
            .order_by("SystemModstamp");
        let mut changed_opps = Vec::new();
        let mut pages = self.paginate_query(opps, |v| {
            let r = Rec::new(v, "Opportunity");
            Ok((r.req_id("Id")?, r.req_datetime("SystemModstamp")?))
        });
        while let Some(page) = pages.next().await {
            for (id, at) in page?.items {
                seen(at);
                changed_opps.push(id);
            }
        }
        for chunk in changed_opps.chunks(MAX_BATCH) {
            let q = Soql::new()
                .select(&["ContactId"])
                .from("OpportunityContactRole")
                .where_in("OpportunityId", chunk.iter());
            for contact in self.collect(q, |v| Rec::new(v, "OpportunityContactRole").id("ContactId")).await? {
                contacts.extend(contact);
            }
        }
        // Converted leads that changed (the conversion stamps the lead).
        let leads = Soql::new()
            .select(&["Id", "SystemModstamp"])
            .from("Lead")
            .where_eq("IsConverted", true)
            .and(Condition::gt("SystemModstamp", since))
            .order_by("SystemModstamp");
        let mut pages = self.paginate_query(leads, |v| {
            let r = Rec::new(v, "Lead");
            Ok((r.req_id("Id")?, r.req_datetime("SystemModstamp")?))
        });
        while let Some(page) = pages.next().await {
            for (id, at) in page?.items {
                seen(at);
                converted_leads.insert(id);
            }
            if full(&contacts, &converted_leads) {
                return truncated(contacts.into_iter().collect(), converted_leads.into_iter().collect(), newest);
            }
        }
        Ok(OpportunityChanges {
            contacts: contacts.into_iter().collect(),
            converted_leads: converted_leads.into_iter().collect(),
            newest,
            truncated: false,
        })
    }

    async fn lead_conversions(&self, lead_ids: &[SalesforceId]) -> salesync_core::Result<Vec<LeadConversion>> {
        let mut out = Vec::with_capacity(lead_ids.len());
        for chunk in lead_ids.chunks(MAX_BATCH) {
            let q = Soql::new()
                .select(&["Id", "IsConverted", "ConvertedContactId", "ConvertedAccountId", "ConvertedOpportunityId"])
                .from("Lead")
                .where_in("Id", chunk.iter())
                .order_by("Id");
            out.extend(
                self.collect(q, |v| {
                    let r = Rec::new(v, "Lead");
                    Ok(LeadConversion {
                        lead_id: r.req_id("Id")?,
                        converted: r.boolean("IsConverted")?,
                        contact_id: r.id("ConvertedContactId")?,
                        account_id: r.id("ConvertedAccountId")?,
                        opportunity_id: r.id("ConvertedOpportunityId")?,
                    })
                })
                .await?,
            );
        }
        Ok(out)
    }

    async fn find_by_email(&self, email: &str) -> salesync_core::Result<Vec<PersonRef>> {
        let leads = Soql::new()
            .select(&["Id", "IsConverted", "ConvertedContactId", "ConvertedAccountId"])
            .from("Lead")
            .where_eq("Email", email)
            .order_by("Id");
        let mut out = self
            .collect(leads, |v| {
                let r = Rec::new(v, "Lead");
                Ok(PersonRef {
                    id: r.req_id("Id")?,
                    converted_contact_id: r.id("ConvertedContactId")?,
                    account_id: r.id("ConvertedAccountId")?,
                })
            })
            .await?;
        let contacts = Soql::new().select(&["Id", "AccountId"]).from("Contact").where_eq("Email", email).order_by("Id");
        out.extend(
            self.collect(contacts, |v| {
                let r = Rec::new(v, "Contact");
                Ok(PersonRef { id: r.req_id("Id")?, converted_contact_id: None, account_id: r.id("AccountId")? })
            })
            .await?,
        );
        Ok(out)
    }

    async fn active_users(&self) -> salesync_core::Result<Vec<User>> {
        let q = Soql::new().select(&["Id", "Email", "Name"]).from("User").where_eq("IsActive", true).order_by("Id");
        self.collect(q, |v| {
            let r = Rec::new(v, "User");
            Ok(User { id: r.req_id("Id")?, email: r.text("Email")?, name: r.text("Name")? })
        })
        .await
    }

    async fn task_type_values(&self) -> salesync_core::Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Pick {
            #[serde(default)]
            active: bool,
            value: String,
        }
        #[derive(Deserialize)]
        struct Field {
            name: String,
            #[serde(rename = "picklistValues", default)]
            picklist_values: Vec<Pick>,
        }
        #[derive(Deserialize)]
        struct Describe {
            fields: Vec<Field>,
        }
        let d: Describe = self.get_json(&self.data_path("sobjects/Task/describe"), &[]).await?;
        Ok(d.fields
            .into_iter()
            .find(|f| f.name == "Type")
            .map(|f| f.picklist_values.into_iter().filter(|p| p.active).map(|p| p.value).collect())
            .unwrap_or_default())
    }

    fn api_usage(&self) -> Option<ApiUsage> {
        self.latest_api_usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskWrite {
        TaskWrite {
            external_id: "act-1".into(),
            who_id: Some(SalesforceId::parse("00Q5g00000AbCdE").unwrap()),
            what_id: None,
            owner_id: None,
            subject: "Email: Hi".into(),
            status: "Completed".into(),
            priority: "Normal".into(),
            activity_date: NaiveDate::from_ymd_opt(2025, 6, 3),
            description: None,
            task_subtype: Some("Email".into()),
            task_type: None,
            call_duration_secs: None,
            call_disposition: None,
            custom_fields: vec![("MSE_Viewed__c".into(), json!(true))],
        }
    }

    #[test]
    fn task_json_carries_external_id_and_omits_absent_fields() {
        let v = task_json(&task(), "Salesync_Activity_Id__c").unwrap();
        assert_eq!(
            v,
            json!({"attributes": {"type": "Task"}, "Salesync_Activity_Id__c": "act-1", "Subject": "Email: Hi",
                   "Status": "Completed", "Priority": "Normal", "WhoId": "00Q5g00000AbCdEEAV",
                   "ActivityDate": "2025-06-03", "TaskSubtype": "Email", "MSE_Viewed__c": true})
        );
        let mut t = task();
        t.custom_fields = vec![("Bad Field".into(), json!(1))];
        assert!(matches!(task_json(&t, "X__c"), Err(Error::InvalidInput { .. })));
    }

    #[test]
    fn collection_results_parse_reference_example() {
        let body = r#"[
          {"id": "00T5g00000XyZ12EAF", "success": true, "errors": []},
          {"success": false, "errors": [{"statusCode": "FIELD_INTEGRITY_EXCEPTION", "message": "Name ID: id value of incorrect type: 001XXXXXXXXXXXXXXX", "fields": ["WhoId"]}]}
        ]"#;
        let r: Vec<CollectionResult> = serde_json::from_str(body).unwrap();
        assert!(r[0].success);
        let o = rejected(&r[1].errors);
        assert_eq!(
            o,
            RecordOutcome::Rejected {
                code: "FIELD_INTEGRITY_EXCEPTION".into(),
                message: "Name ID: id value of incorrect type: 001XXXXXXXXXXXXXXX [fields: WhoId]".into()
            }
        );
    }

    #[test]
    fn task_record_parses_salesforce_shapes() {
        let v = json!({"attributes": {"type": "Task", "url": "/services/data/v60.0/sobjects/Task/00T5g00000XyZ12EAF"},
            "Id": "00T5g00000XyZ12EAF", "Salesync_Activity_Id__c": "act-1", "WhoId": null, "Subject": "Call",
            "Status": "Not Started", "Priority": "Normal", "ActivityDate": "2025-06-03", "Description": null,
            "TaskSubtype": "Call", "CreatedDate": "2025-06-02T22:07:19.000+0000",
            "SystemModstamp": "2025-06-03T21:20:00.000+0000", "IsDeleted": false});
        let t = task_record(&v, "Salesync_Activity_Id__c").unwrap();
        assert_eq!(t.external_id.as_deref(), Some("act-1"));
        assert_eq!(t.activity_date, NaiveDate::from_ymd_opt(2025, 6, 3));
        assert_eq!(t.modified_at.to_rfc3339(), "2025-06-03T21:20:00+00:00");
        let bad = json!({"Id": "00T5g00000XyZ12EAF", "CreatedDate": "yesterday", "SystemModstamp": "x"});
        let e = task_record(&bad, "X__c").unwrap_err();
        assert!(e.to_string().contains("CreatedDate"), "{e}");
    }

    #[test]
    fn datetimes_in_both_formats() {
        for s in ["2025-06-02T22:07:19.000+0000", "2025-06-02T22:07:19Z", "2025-06-02T22:07:19.000+00:00"] {
            assert_eq!(parse_datetime(s).unwrap().to_rfc3339(), "2025-06-02T22:07:19+00:00", "{s}");
        }
        assert_eq!(parse_datetime("2025-06-02"), None);
    }

    #[test]
    fn client_is_a_shareable_port() {
        fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync_clone::<SalesforceClient>();
        let c = SalesforceClient::builder()
            .login_url("https://acme.my.salesforce.com")
            .client_id("id")
            .client_secret("s")
            .build()
            .unwrap();
        let port: std::sync::Arc<dyn SalesforceApi> = std::sync::Arc::new(c);
        assert_eq!(port.api_usage(), None);
    }

    #[test]
    fn opt_out_tokens() {
        assert_eq!(opt_out_cursor(None).unwrap(), ("Lead", None));
        assert_eq!(opt_out_cursor(Some("Contact:")).unwrap(), ("Contact", None));
        assert_eq!(
            opt_out_cursor(Some("Lead:/services/data/v60.0/query/01g-200")).unwrap(),
            ("Lead", Some("/services/data/v60.0/query/01g-200".into()))
        );
        assert!(opt_out_cursor(Some("Account:")).is_err());
        assert!(opt_out_cursor(Some("garbage")).is_err());
    }
}
