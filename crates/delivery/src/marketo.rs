//! Delivery to Marketo: custom activities, exactly once.

use std::collections::{BTreeMap, HashMap, HashSet};

use salesync_core::Result;
use salesync_core::activity::SalesActivity;
use salesync_core::outbound::{custom_activity_types, custom_type_api_name, marketo_activity};
use salesync_core::ports::marketo::{Activity, NewCustomActivity, RecordOutcome};
use salesync_core::ports::store::{OutboxItem, OutboxPayload, Target};

use crate::dispatcher::Inner;
use crate::events::TargetReport;
use crate::finish::{Finisher, outcome_unknown};

/// Marketo's "Lead not found" per-record code.
pub const LEAD_NOT_FOUND: &str = "1004";
/// Most lead ids one Get Lead Activities call takes.
const LOOKUP_LEADS_PER_CALL: usize = 30;

/// The salesync activity id an activity read back from Marketo carries, if any: the
/// `salesyncActivityId` attribute (matched leniently by apiName or display name, ignoring case,
/// spaces and punctuation), else the `(SIA-<id>)` suffix of the primary attribute.
pub fn salesync_activity_id(activity: &Activity) -> Option<String> {
    let norm = |s: &str| s.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    for (name, value) in &activity.attributes {
        if norm(name) == "salesyncactivityid" {
            return match value {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                other => Some(other.to_string()),
            };
        }
    }
    let primary = activity.primary_attribute_value.as_deref()?.trim_end();
    let start = primary.rfind("(SIA-")?;
    let rest = primary[start + 5..].strip_suffix(')')?;
    Some(rest.to_string())
}

struct Ready<'a> {
    item: &'a OutboxItem,
    activity: &'a SalesActivity,
    type_id: i64,
}

impl Inner {
    /// Provisioned type ids by apiName, provisioning on first use.
    async fn marketo_type_ids(&self) -> Result<&HashMap<String, i64>> {
        self.type_ids
            .get_or_try_init(|| async {
                let provisioned = self.marketo.ensure_custom_activity_types(&custom_activity_types()).await?;
                for p in provisioned.iter().filter(|p| p.created) {
                    tracing::info!(api_name = %p.api_name, id = p.id, "provisioned Marketo custom activity type");
                }
                Ok(provisioned.into_iter().map(|p| (p.api_name, p.id)).collect())
            })
            .await
    }

    /// Claims and delivers one batch of Marketo items.
    pub(crate) async fn deliver_marketo(&self, errors: &mut Vec<String>) -> Result<TargetReport> {
        if let Some(status) = self.gate(Target::Marketo) {
            return Ok(TargetReport { status, ..TargetReport::default() });
        }
        if self.cooling_down(Target::Marketo) {
            return Ok(TargetReport::default());
        }
        let types = match self.marketo_type_ids().await {
            Ok(t) => t,
            Err(e) => {
                self.target_error(Target::Marketo, &e, errors);
                self.cool_down(Target::Marketo);
                return Ok(TargetReport { status: self.status_of(Target::Marketo), ..TargetReport::default() });
            }
        };
        let now = self.now();
        let s = &self.settings;
        let claimed = self.store.claim(Target::Marketo, s.marketo_batch, &s.worker_id, s.lease, now).await?;
        if claimed.is_empty() {
            return Ok(TargetReport { status: self.status_of(Target::Marketo), ..TargetReport::default() });
        }
        let mut fin = Finisher::new(s, Target::Marketo, now, claimed.len() as u32);
        let mut send: Vec<Ready<'_>> = Vec::new();
        let mut lookup: Vec<Ready<'_>> = Vec::new();
        for item in &claimed {
            let OutboxPayload::Activity { activity } = &item.payload else {
                fin.skip(item, "only sales activities are delivered to Marketo");
                continue;
            };
            let api_name = custom_type_api_name(activity.kind);
            let Some(&type_id) = types.get(&api_name) else {
                fin.park(item, format!("Marketo custom activity type {api_name} is not provisioned"));
                continue;
            };
            let ready = Ready { item, activity, type_id };
            if outcome_unknown(item) { lookup.push(ready) } else { send.push(ready) }
        }
        self.resolve_unknown(&mut fin, lookup, &mut send).await;
        if !send.is_empty() && self.gate(Target::Marketo).is_some() {
            for r in send.drain(..) {
                fin.release(r.item, "Marketo delivery is stopped", now, false);
            }
        }
        if !send.is_empty() {
            let batch: Vec<NewCustomActivity> = send.iter().map(|r| marketo_activity(r.activity, r.type_id)).collect();
            match self.marketo.add_custom_activities(&batch).await {
                Ok(outcomes) => {
                    for (i, r) in send.iter().enumerate() {
                        match outcomes.get(i) {
                            Some(RecordOutcome::Written { id }) => fin.delivered(r.item, id.clone()),
                            Some(RecordOutcome::Rejected { code, message }) if code == LEAD_NOT_FOUND => fin.park(
                                r.item,
                                format!("{code}: {message} (lead {} not in Marketo)", r.activity.marketo_id),
                            ),
                            Some(RecordOutcome::Rejected { code, message }) => {
                                fin.park(r.item, format!("{code}: {message}"))
                            }
                            None => fin.backoff(r.item, "Marketo returned no result for this activity", true),
                        }
                    }
                }
                Err(e) => {
                    let items: Vec<&OutboxItem> = send.iter().map(|r| r.item).collect();
                    self.fail_items(&mut fin, &items, &e, false);
                }
            }
        }
        self.commit(fin, &claimed).await
    }

    /// Looks for items whose earlier attempt may have been written: found ones are finished as
    /// delivered with the GUID found; the rest move to `send`. A failed lookup leaves its items
    /// unknown, to look up again next time.
    async fn resolve_unknown<'a>(&self, fin: &mut Finisher<'_>, lookup: Vec<Ready<'a>>, send: &mut Vec<Ready<'a>>) {
        // Group by type, then chunks of ≤30 distinct leads.
        let mut by_type: BTreeMap<i64, Vec<Ready<'a>>> = BTreeMap::new();
        for r in lookup {
            by_type.entry(r.type_id).or_default().push(r);
        }
        for (type_id, mut group) in by_type {
            group.sort_by_key(|r| r.activity.marketo_id);
            while !group.is_empty() {
                let mut leads: Vec<i64> = Vec::new();
                let mut take = 0;
                for r in &group {
                    if !leads.contains(&r.activity.marketo_id) {
                        if leads.len() == LOOKUP_LEADS_PER_CALL {
                            break;
                        }
                        leads.push(r.activity.marketo_id);
                    }
                    take += 1;
                }
                let chunk: Vec<Ready<'a>> = group.drain(..take).collect();
                if self.gate(Target::Marketo).is_some() {
                    for r in chunk {
                        fin.release(r.item, "Marketo delivery is stopped", fin.now, true);
                    }
                    continue;
                }
                let wanted: HashSet<&str> = chunk.iter().map(|r| r.activity.id.as_str()).collect();
                let since =
                    chunk.iter().map(|r| r.activity.occurred_at).min().unwrap_or(fin.now) - chrono::Duration::days(1);
                match self.find_activities(since, type_id, &leads, &wanted).await {
                    Ok(found) => {
                        for r in chunk {
                            match found.get(r.activity.id.as_str()) {
                                Some(guid) => {
                                    tracing::info!(item = r.item.id, guid, "activity already in Marketo; not re-sent");
                                    fin.recovered(r.item, guid.clone());
                                }
                                None => send.push(r),
                            }
                        }
                    }
                    Err(e) => {
                        let items: Vec<&OutboxItem> = chunk.iter().map(|r| r.item).collect();
                        self.fail_items(fin, &items, &e, true);
                    }
                }
            }
        }
    }

    /// Pages Get Lead Activities for one type and ≤30 leads since `since`, returning the GUIDs of
    /// wanted salesync activity ids.
    async fn find_activities(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        type_id: i64,
        leads: &[i64],
        wanted: &HashSet<&str>,
    ) -> Result<HashMap<String, String>> {
        let mut found = HashMap::new();
        let mut token = self.marketo.paging_token(since).await?;
        for _ in 0..self.settings.lookup_max_pages.max(1) {
            let page = self.marketo.activities(&token, &[type_id], leads).await?;
            for a in &page.items {
                if let Some(id) = salesync_activity_id(a)
                    && wanted.contains(id.as_str())
                {
                    found.insert(id, a.guid.clone());
                }
            }
            if found.len() == wanted.len() || !page.more {
                return Ok(found);
            }
            match page.next_token {
                Some(t) => token = t,
                None => return Ok(found),
            }
        }
        Err(salesync_core::Error::Unavailable {
            service: salesync_core::error::Service::Marketo,
            code: "lookup".into(),
            message: format!(
                "looked through {} pages of activities without reaching the end; will look again",
                self.settings.lookup_max_pages
            ),
            persistent: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn act(attrs: Vec<(&str, serde_json::Value)>, primary: Option<&str>) -> Activity {
        Activity {
            guid: "g1".into(),
            id: None,
            lead_id: 1,
            activity_date: Utc::now(),
            activity_type_id: 100001,
            primary_attribute_value: primary.map(str::to_string),
            attributes: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            changed_fields: vec![],
        }
    }

    #[test]
    fn activity_id_is_read_leniently() {
        assert_eq!(salesync_activity_id(&act(vec![("salesyncActivityId", "a1".into())], None)), Some("a1".into()));
        assert_eq!(salesync_activity_id(&act(vec![("Salesync Activity ID", "a2".into())], None)), Some("a2".into()));
        assert_eq!(salesync_activity_id(&act(vec![("salesync_activity_id", 42.into())], None)), Some("42".into()));
        assert_eq!(salesync_activity_id(&act(vec![], Some("Intro (SIA-a3)"))), Some("a3".into()));
        assert_eq!(salesync_activity_id(&act(vec![("Source", "Sales App".into())], Some("Intro"))), None);
    }
}
