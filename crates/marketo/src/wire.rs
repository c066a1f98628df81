//! Wire shapes of Marketo records and their mapping to core types.

use chrono::{DateTime, SecondsFormat, Utc};
use salesync_core::mapping::parse_datetime;
use salesync_core::ports::marketo::{Activity, ActivityType, ChangedField, ExportJob, ExportState, RecordOutcome};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::envelope::{ApiError, lenient_i64};
use crate::error::MkError;

/// A string given as a string or a number.
fn lenient_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(match v {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// A Marketo datetime as sent: seconds precision, UTC `Z`.
pub(crate) fn format_datetime(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireActivity {
    #[serde(default, deserialize_with = "lenient_i64")]
    id: Option<i64>,
    #[serde(default, rename = "marketoGUID", deserialize_with = "lenient_opt_string")]
    marketo_guid: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    lead_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    activity_date: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    activity_type_id: Option<i64>,
    #[serde(default)]
    primary_attribute_value: Option<Value>,
    #[serde(default)]
    attributes: Option<Vec<WireAttribute>>,
    #[serde(default)]
    fields: Option<Vec<WireChangedField>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAttribute {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    api_name: Option<String>,
    #[serde(default)]
    value: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireChangedField {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    new_value: Option<Value>,
    #[serde(default)]
    old_value: Option<Value>,
}

fn value_text(v: Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

impl WireActivity {
    /// Maps to the core activity; `marketoGUID` is the key (falling back to `id`).
    pub(crate) fn into_activity(self) -> Result<Activity, MkError> {
        let guid = self
            .marketo_guid
            .filter(|g| !g.is_empty())
            .or_else(|| self.id.map(|i| i.to_string()))
            .ok_or_else(|| MkError::protocol("activity without marketoGUID or id"))?;
        let bad = |what: &str| MkError::protocol(format!("activity {guid}: {what}"));
        let lead_id = self.lead_id.ok_or_else(|| bad("missing leadId"))?;
        let date = self.activity_date.as_deref().ok_or_else(|| bad("missing activityDate"))?;
        let activity_date = parse_datetime(date).ok_or_else(|| bad(&format!("unreadable activityDate {date:?}")))?;
        let activity_type_id = self.activity_type_id.ok_or_else(|| bad("missing activityTypeId"))?;
        let attributes = self
            .attributes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| a.name.or(a.api_name).map(|n| (n, a.value)))
            .collect();
        let changed_fields = self
            .fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|f| {
                f.name.map(|name| ChangedField {
                    name,
                    new_value: f.new_value.filter(|v| !v.is_null()),
                    old_value: f.old_value.filter(|v| !v.is_null()),
                })
            })
            .collect();
        Ok(Activity {
            guid,
            id: self.id,
            lead_id,
            activity_date,
            activity_type_id,
            primary_attribute_value: self.primary_attribute_value.and_then(value_text),
            attributes,
            changed_fields,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireActivityType {
    #[serde(default, deserialize_with = "lenient_i64")]
    pub id: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub api_name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub attributes: Option<Vec<WireTypeAttribute>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireTypeAttribute {
    #[serde(default)]
    pub api_name: Option<String>,
}

impl WireActivityType {
    pub(crate) fn into_type(self) -> Result<ActivityType, MkError> {
        let id = self.id.ok_or_else(|| MkError::protocol("activity type without id"))?;
        Ok(ActivityType { id, name: self.name.unwrap_or_default(), api_name: self.api_name })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireExport {
    #[serde(default)]
    export_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    number_of_records: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    file_size: Option<i64>,
    #[serde(default)]
    file_checksum: Option<String>,
    #[serde(default)]
    error_msg: Option<String>,
}

/// Parses a bulk job status; both "Canceled" and "Cancelled" mean cancelled.
pub(crate) fn export_state(s: &str) -> Option<ExportState> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "created" => ExportState::Created,
        "queued" => ExportState::Queued,
        "processing" => ExportState::Processing,
        "completed" => ExportState::Completed,
        "failed" => ExportState::Failed,
        "cancelled" | "canceled" => ExportState::Cancelled,
        _ => return None,
    })
}

impl WireExport {
    pub(crate) fn into_job(self, fallback_id: Option<&str>) -> Result<ExportJob, MkError> {
        let id = self
            .export_id
            .or_else(|| fallback_id.map(str::to_string))
            .ok_or_else(|| MkError::protocol("export job without exportId"))?;
        let raw = self.status.unwrap_or_default();
        let state =
            export_state(&raw).ok_or_else(|| MkError::protocol(format!("export {id}: unknown status {raw:?}")))?;
        Ok(ExportJob {
            id,
            state,
            records: self.number_of_records.and_then(|n| u64::try_from(n).ok()),
            file_size: self.file_size.and_then(|n| u64::try_from(n).ok()),
            checksum: self.file_checksum,
            error: self.error_msg,
        })
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireNewActivity<'a> {
    pub lead_id: i64,
    pub activity_date: String,
    pub activity_type_id: i64,
    pub primary_attribute_value: &'a str,
    pub attributes: Vec<WireAttributeOut<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireAttributeOut<'a> {
    pub api_name: &'a str,
    pub value: &'a str,
}

/// One per-record result of a write.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireWriteResult {
    #[serde(default, deserialize_with = "lenient_i64")]
    id: Option<i64>,
    #[serde(default, rename = "marketoGUID", deserialize_with = "lenient_opt_string")]
    marketo_guid: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    errors: Option<Vec<ApiError>>,
    #[serde(default)]
    reasons: Option<Vec<ApiError>>,
    #[serde(default)]
    reason: Option<Value>,
}

impl WireWriteResult {
    /// `added`/`created`/`updated` → written; `skipped` (with `errors`, `reasons` or `reason`) → rejected.
    pub(crate) fn into_outcome(self) -> RecordOutcome {
        let status = self.status.unwrap_or_default();
        match status.as_str() {
            "added" | "created" | "updated" => {
                match self.marketo_guid.filter(|g| !g.is_empty()).or_else(|| self.id.map(|i| i.to_string())) {
                    Some(id) => RecordOutcome::Written { id },
                    None => RecordOutcome::Rejected {
                        code: "no_id".into(),
                        message: format!("Marketo reported {status:?} without an id"),
                    },
                }
            }
            _ => {
                let first = self
                    .errors
                    .and_then(|e| e.into_iter().next())
                    .or_else(|| self.reasons.and_then(|e| e.into_iter().next()))
                    .or_else(|| {
                        let r = self.reason?;
                        let r = match r {
                            Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
                            other => other,
                        };
                        serde_json::from_value::<ApiError>(r).ok()
                    });
                match first {
                    Some(e) => RecordOutcome::Rejected { code: e.code, message: e.message },
                    None => RecordOutcome::Rejected {
                        code: if status.is_empty() { "unknown".into() } else { status.clone() },
                        message: format!("record {status:?} without a reason"),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_activity_maps() {
        let j = serde_json::json!({
            "id": 102988, "marketoGUID": "102988", "leadId": 1001,
            "activityDate": "2026-01-16T23:32:19Z", "activityTypeId": 1, "campaignId": 3746,
            "primaryAttributeValueId": 71, "primaryAttributeValue": "example.com/pricing.html",
            "attributes": [{"name": "Client IP Address", "value": "10.0.0.1"}, {"name": "Query Parameters", "value": ""}]
        });
        let a = serde_json::from_value::<WireActivity>(j).unwrap().into_activity().unwrap();
        assert_eq!(a.guid, "102988");
        assert_eq!(a.id, Some(102988));
        assert_eq!(a.lead_id, 1001);
        assert_eq!(a.primary_attribute_value.as_deref(), Some("example.com/pricing.html"));
        assert_eq!(a.attribute("Client IP Address"), Some(&serde_json::json!("10.0.0.1")));
    }

    #[test]
    fn lead_change_maps_changed_fields() {
        let j = serde_json::json!({
            "id": 1078, "marketoGUID": "1078", "leadId": 775, "activityDate": "2026-02-17T22:31:49+0000",
            "activityTypeId": 13,
            "fields": [{"id": 48, "name": "firstName", "newValue": "Adah", "oldValue": "Ada"},
                       {"id": 49, "name": "title", "newValue": "CTO", "oldValue": null}],
            "attributes": [{"name": "Reason", "value": "Web service API"}]
        });
        let a = serde_json::from_value::<WireActivity>(j).unwrap().into_activity().unwrap();
        assert_eq!(a.changed_fields.len(), 2);
        assert_eq!(a.changed_fields[0].name, "firstName");
        assert_eq!(a.changed_fields[0].new_value, Some(serde_json::json!("Adah")));
        assert_eq!(a.changed_fields[1].old_value, None);
    }

    #[test]
    fn activity_without_id_uses_guid_and_big_ids_fit() {
        let j = serde_json::json!({"marketoGUID": "abc-1", "leadId": 1, "activityDate": "2026-02-17T22:31:49Z", "activityTypeId": 37});
        let a = serde_json::from_value::<WireActivity>(j).unwrap().into_activity().unwrap();
        assert_eq!(a.guid, "abc-1");
        assert_eq!(a.id, None);
        let j = serde_json::json!({"id": 9_000_000_000i64, "leadId": 1, "activityDate": "2026-02-17T22:31:49Z", "activityTypeId": 37});
        let a = serde_json::from_value::<WireActivity>(j).unwrap().into_activity().unwrap();
        assert_eq!(a.guid, "9000000000");
        let j = serde_json::json!({"leadId": 1, "activityDate": "2026-02-17T22:31:49Z", "activityTypeId": 37});
        assert!(serde_json::from_value::<WireActivity>(j).unwrap().into_activity().is_err());
    }

    #[test]
    fn export_states_accept_both_spellings() {
        assert_eq!(export_state("Canceled"), Some(ExportState::Cancelled));
        assert_eq!(export_state("Cancelled"), Some(ExportState::Cancelled));
        assert_eq!(export_state("Completed"), Some(ExportState::Completed));
        assert_eq!(export_state("Bogus"), None);
        let j = serde_json::json!({"exportId": "fad2", "format": "CSV", "status": "Completed", "numberOfRecords": 1776,
            "fileSize": 400785, "fileChecksum": "sha256:83ac"});
        let job = serde_json::from_value::<WireExport>(j).unwrap().into_job(None).unwrap();
        assert_eq!(job.records, Some(1776));
        assert_eq!(job.file_size, Some(400785));
        assert_eq!(job.checksum.as_deref(), Some("sha256:83ac"));
    }

    #[test]
    fn write_results_in_both_shapes() {
        let j = serde_json::json!([
            {"id": 50, "marketoGUID": "50", "status": "added"},
            {"status": "skipped", "errors": [{"code": "1004", "message": "Lead not found"}]},
            {"status": "skipped", "reasons": [{"code": 1049, "message": "Attributes too large"}]},
            {"status": "skipped", "reason": {"code": "1003", "message": "Invalid"}},
            {"status": "skipped"}
        ]);
        let out: Vec<RecordOutcome> = serde_json::from_value::<Vec<WireWriteResult>>(j)
            .unwrap()
            .into_iter()
            .map(WireWriteResult::into_outcome)
            .collect();
        assert_eq!(out[0], RecordOutcome::Written { id: "50".into() });
        assert_eq!(out[1], RecordOutcome::Rejected { code: "1004".into(), message: "Lead not found".into() });
        assert_eq!(out[2], RecordOutcome::Rejected { code: "1049".into(), message: "Attributes too large".into() });
        assert_eq!(out[3], RecordOutcome::Rejected { code: "1003".into(), message: "Invalid".into() });
        assert!(matches!(out[4], RecordOutcome::Rejected { .. }));
    }
}
