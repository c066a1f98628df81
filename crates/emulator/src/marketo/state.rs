//! The in-memory lead database and activity log, the mutations that emit activities, and how an
//! activity is rendered.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::envelope::{fmt_ts, value_string};
use super::fields::FieldDef;
use super::jobs::{ExportJob, ImportJob};
use super::records::{CustomType, Form, Partition, Program, seed_forms, seed_partitions, seed_programs};

/// A lead record: REST field name → value (absent = null).
pub(crate) type Lead = Map<String, Value>;

/// One activity attribute.
#[derive(Debug, Clone)]
pub(crate) struct Attr {
    pub(crate) name: String,
    pub(crate) api_name: Option<String>,
    pub(crate) value: Value,
}

impl Attr {
    pub(crate) fn new(name: &str, value: Value) -> Self {
        Attr { name: name.to_string(), api_name: None, value }
    }
}

/// A changed field on a Change Data Value activity.
#[derive(Debug, Clone)]
pub(crate) struct ChangeField {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) display: String,
    pub(crate) new: Value,
    pub(crate) old: Value,
}

/// One activity.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    pub(crate) id: i64,
    pub(crate) lead_id: i64,
    pub(crate) date: DateTime<Utc>,
    pub(crate) type_id: i64,
    pub(crate) campaign_id: Option<i64>,
    pub(crate) primary_value_id: Option<i64>,
    pub(crate) primary_value: Option<String>,
    pub(crate) attributes: Vec<Attr>,
    pub(crate) change: Option<ChangeField>,
}

/// Activity type ids used by the lead-database mutations.
pub(crate) const NEW_LEAD: i64 = 12;
/// Change Data Value.
pub(crate) const CHANGE_DATA_VALUE: i64 = 13;
/// Merge Leads.
pub(crate) const MERGE_LEADS: i64 = 32;
/// Delete Lead.
pub(crate) const DELETE_LEAD: i64 = 37;

/// The whole mutable database.
#[derive(Debug)]
pub(crate) struct Db {
    pub(crate) leads: BTreeMap<i64, Lead>,
    pub(crate) next_lead_id: i64,
    /// Activities ordered by (activity date in ms, id): the paging-token order.
    pub(crate) activities: BTreeMap<(i64, i64), Activity>,
    pub(crate) next_activity_id: i64,
    pub(crate) custom_types: Vec<CustomType>,
    pub(crate) next_custom_type_id: i64,
    pub(crate) custom_added: Vec<Value>,
    pub(crate) jobs: Vec<ExportJob>,
    /// (US-Central day, bytes exported that day).
    pub(crate) export_bytes: (chrono::NaiveDate, u64),
    pub(crate) fields: Vec<FieldDef>,
    /// Programs with their status lists and members.
    pub(crate) programs: Vec<Program>,
    /// Forms `submitForm.json` accepts.
    pub(crate) forms: Vec<Form>,
    /// Lead partitions.
    pub(crate) partitions: Vec<Partition>,
    /// Bulk lead import batches.
    pub(crate) imports: Vec<ImportJob>,
    pub(crate) next_import_id: i64,
}

impl Db {
    pub(crate) fn new(fields: Vec<FieldDef>) -> Self {
        Db {
            leads: BTreeMap::new(),
            next_lead_id: 1001,
            activities: BTreeMap::new(),
            next_activity_id: 1,
            custom_types: Vec::new(),
            next_custom_type_id: 100_001,
            custom_added: Vec::new(),
            jobs: Vec::new(),
            export_bytes: (chrono::NaiveDate::MIN, 0),
            fields,
            programs: seed_programs(),
            forms: seed_forms(),
            partitions: seed_partitions(),
            imports: Vec::new(),
            next_import_id: 1001,
        }
    }

    pub(crate) fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Adds an activity; returns its id.
    pub(crate) fn push_activity(&mut self, mut a: Activity) -> i64 {
        let id = self.next_activity_id;
        self.next_activity_id += 1;
        a.id = id;
        self.activities.insert((a.date.timestamp_millis(), id), a);
        id
    }

    /// A new activity record (id assigned by [`Db::push_activity`]).
    pub(crate) fn activity(lead_id: i64, date: DateTime<Utc>, type_id: i64) -> Activity {
        Activity {
            id: 0,
            lead_id,
            date,
            type_id,
            campaign_id: None,
            primary_value_id: None,
            primary_value: None,
            attributes: Vec::new(),
            change: None,
        }
    }

    /// A lead's name as activities show it (first and last name, else email).
    pub(crate) fn display_name(lead: &Lead) -> String {
        let part = |k: &str| lead.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let name = format!("{} {}", part("firstName"), part("lastName")).trim().to_string();
        if name.is_empty() { part("email") } else { name }
    }

    /// Inserts a lead with a fixed id (seeding) or the next id; emits New Lead (12) dated `created`.
    pub(crate) fn insert_lead(
        &mut self,
        id: Option<i64>,
        fields: Map<String, Value>,
        created: DateTime<Utc>,
        updated: DateTime<Utc>,
        source: &str,
    ) -> i64 {
        let id = id.unwrap_or(self.next_lead_id);
        self.next_lead_id = self.next_lead_id.max(id + 1);
        let mut lead = Lead::new();
        for (k, v) in fields {
            if matches!(k.as_str(), "id" | "createdAt" | "updatedAt") || v.is_null() {
                continue;
            }
            if self.field(&k).is_none() && k != "sfdcOpptyId" {
                tracing::debug!(field = %k, "marketo emulator: ignoring unknown lead field");
                continue;
            }
            lead.insert(k, v);
        }
        lead.insert("id".into(), json!(id));
        lead.insert("createdAt".into(), json!(fmt_ts(created)));
        lead.insert("updatedAt".into(), json!(fmt_ts(updated)));
        let mut a = Self::activity(id, created, NEW_LEAD);
        a.primary_value = Some(Self::display_name(&lead));
        a.attributes = vec![
            Attr::new("Created Date", json!(created.date_naive().to_string())),
            Attr::new("Source Type", json!(source)),
        ];
        self.leads.insert(id, lead);
        self.push_activity(a);
        id
    }

    /// Applies changes (null clears); emits one Change Data Value (13) per changed field.
    pub(crate) fn update_lead(
        &mut self,
        id: i64,
        changes: Map<String, Value>,
        now: DateTime<Utc>,
        reason: &str,
    ) -> bool {
        let Some(lead) = self.leads.get(&id) else {
            return false;
        };
        let mut lead = lead.clone();
        let mut emitted = Vec::new();
        for (k, v) in changes {
            if matches!(k.as_str(), "id" | "createdAt" | "updatedAt") {
                continue;
            }
            let def = self.field(&k).map(|f| (f.id, f.display.to_string()));
            let (fid, display) = match def {
                Some(d) => d,
                None if k == "sfdcOpptyId" => {
                    // Stored but not part of this instance's schema: no Change Data Value activity.
                    if v.is_null() {
                        lead.remove(&k);
                    } else {
                        lead.insert(k, v);
                    }
                    continue;
                }
                None => {
                    tracing::debug!(field = %k, "marketo emulator: ignoring unknown lead field");
                    continue;
                }
            };
            let old = lead.get(&k).cloned().unwrap_or(Value::Null);
            if old == v {
                continue;
            }
            if v.is_null() {
                lead.remove(&k);
            } else {
                lead.insert(k.clone(), v.clone());
            }
            emitted.push(ChangeField { id: fid, name: k, display, new: v, old });
        }
        if !emitted.is_empty() {
            lead.insert("updatedAt".into(), json!(fmt_ts(now)));
        }
        self.leads.insert(id, lead);
        for c in emitted {
            let mut a = Self::activity(id, now, CHANGE_DATA_VALUE);
            a.primary_value_id = Some(c.id);
            a.primary_value = Some(c.display.clone());
            a.attributes = vec![Attr::new("Reason", json!(reason)), Attr::new("Source", json!(reason))];
            a.change = Some(c);
            self.push_activity(a);
        }
        true
    }

    /// Deletes a lead; emits Delete Lead (37).
    pub(crate) fn delete_lead(&mut self, id: i64, now: DateTime<Utc>) -> bool {
        let Some(lead) = self.leads.remove(&id) else {
            return false;
        };
        let mut a = Self::activity(id, now, DELETE_LEAD);
        a.primary_value = Some(Self::display_name(&lead));
        self.push_activity(a);
        true
    }

    /// Merges losers into the winner: losers vanish (no Delete Lead), the winner keeps its values, fills
    /// its empty fields from the losers, and gets one Merge Leads (32) activity with `Merge IDs`.
    pub(crate) fn merge_leads(&mut self, winner: i64, losers: &[i64], now: DateTime<Utc>) -> bool {
        if !self.leads.contains_key(&winner) || losers.is_empty() {
            return false;
        }
        if losers.iter().any(|l| *l == winner || !self.leads.contains_key(l)) {
            return false;
        }
        let mut fill = Map::new();
        let mut merged_fields = Vec::new();
        for l in losers {
            if let Some(lead) = self.leads.remove(l) {
                for (k, v) in lead {
                    if matches!(k.as_str(), "id" | "createdAt" | "updatedAt") {
                        continue;
                    }
                    let has = self.leads.get(&winner).is_some_and(|w| w.contains_key(&k)) || fill.contains_key(&k);
                    if !has {
                        merged_fields.push(k.clone());
                        fill.insert(k, v);
                    }
                }
            }
        }
        if !fill.is_empty() {
            self.update_lead(winner, fill, now, "Merge leads");
        }
        let ids: Vec<String> = losers.iter().map(i64::to_string).collect();
        let mut a = Self::activity(winner, now, MERGE_LEADS);
        a.primary_value = self.leads.get(&winner).map(Self::display_name);
        a.attributes = vec![
            Attr::new("Merge IDs", json!(ids.join(","))),
            Attr::new("Merge Fields", json!(merged_fields.join(","))),
            Attr::new("Merge Source", json!("Web service API")),
        ];
        self.push_activity(a);
        true
    }
}

/// An activity attribute as activities.json renders it.
pub(crate) fn attr_json(a: &Attr) -> Value {
    let mut v = json!({"name": a.name, "value": a.value});
    if let (Some(api), Some(o)) = (&a.api_name, v.as_object_mut()) {
        o.insert("apiName".into(), json!(api));
    }
    v
}

/// An activity as activities.json renders it.
pub(crate) fn activity_json(a: &Activity) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("id".into(), json!(a.id));
    o.insert("marketoGUID".into(), json!(a.id.to_string()));
    o.insert("leadId".into(), json!(a.lead_id));
    o.insert("activityDate".into(), json!(fmt_ts(a.date)));
    o.insert("activityTypeId".into(), json!(a.type_id));
    if let Some(c) = a.campaign_id {
        o.insert("campaignId".into(), json!(c));
    }
    if let Some(p) = a.primary_value_id {
        o.insert("primaryAttributeValueId".into(), json!(p));
    }
    if let Some(p) = &a.primary_value {
        o.insert("primaryAttributeValue".into(), json!(p));
    }
    let mut attrs: Vec<Value> = Vec::new();
    if let Some(c) = &a.change {
        attrs.push(json!({"name": "New Value", "value": value_string(&c.new)}));
        attrs.push(json!({"name": "Old Value", "value": value_string(&c.old)}));
    }
    attrs.extend(a.attributes.iter().map(attr_json));
    o.insert("attributes".into(), Value::Array(attrs));
    Value::Object(o)
}
