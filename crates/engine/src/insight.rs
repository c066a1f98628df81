//! Host calls that read live from Marketo: the insight panel's activities and the unsubscribe
//! check before a send.

use chrono::{DateTime, Utc};
use salesync_core::activity::SalesActivityKind;
use salesync_core::outbound::custom_type_api_name;
use salesync_core::ports::marketo::{Activity, ActivityType};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::engine::SyncEngine;

/// Activity type ids per activities call (Marketo's limit).
const TYPES_PER_CALL: usize = 10;
/// Pages read per type group before giving up (a safety net against endless paging).
const MAX_PAGES: usize = 200;

/// A group of activities the insight panel shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsightKind {
    /// Marketing and sales emails (sent, delivered, opened, clicked, bounced, replied, unsubscribed).
    Email,
    /// Sales calls.
    Call,
    /// Interesting moments.
    InterestingMoment,
    /// Web activity (page visits, form fills, link clicks).
    Web,
}

impl InsightKind {
    /// Every kind.
    pub const ALL: [InsightKind; 4] =
        [InsightKind::Email, InsightKind::Call, InsightKind::InterestingMoment, InsightKind::Web];

    /// The Marketo activity type names (as `activities/types.json` lists them) of this kind.
    pub fn type_names(self) -> &'static [&'static str] {
        match self {
            InsightKind::Email => &[
                "Send Email",
                "Email Delivered",
                "Open Email",
                "Click Email",
                "Email Bounced",
                "Email Bounced Soft",
                "Unsubscribe Email",
                "Send Sales Email",
                "Open Sales Email",
                "Click Sales Email",
                "Clicked Sales Email",
                "Receive Sales Email",
                "Replied to Sales Email",
                "Sales Email Bounced",
            ],
            InsightKind::Call => &["Received Sales Call", "Sales Call Received", "Had Sales Call"],
            InsightKind::InterestingMoment => &["Interesting Moment"],
            InsightKind::Web => &["Visit Webpage", "Fill Out Form", "Click Link"],
        }
    }

    /// salesync's own custom activity types (by apiName) that belong to this kind.
    fn custom_types(self) -> Vec<String> {
        use SalesActivityKind as K;
        let kinds: &[K] = match self {
            InsightKind::Email => {
                &[K::SendSalesEmail, K::OpenSalesEmail, K::ClickSalesEmail, K::RepliedSalesEmail, K::SalesEmailBounced]
            }
            InsightKind::Call => &[K::SalesCall],
            InsightKind::InterestingMoment | InsightKind::Web => &[],
        };
        kinds.iter().map(|k| custom_type_api_name(*k)).collect()
    }

    fn matches(self, t: &ActivityType, custom: &[String]) -> bool {
        self.type_names().contains(&t.name.as_str()) || t.api_name.as_ref().is_some_and(|a| custom.contains(a))
    }
}

impl SyncEngine {
    /// The person's Marketo activities of the given kinds since `since`, newest first, read live
    /// from Marketo on every call (as the Sales Insight panel does). Activity types are resolved
    /// by name once and cached; kinds the instance has no type for return nothing.
    pub async fn insight_activities(
        &self,
        marketo_id: i64,
        since: DateTime<Utc>,
        kinds: &[InsightKind],
    ) -> Result<Vec<Activity>> {
        let types = self.activity_types().await?;
        let mut ids: Vec<i64> = Vec::new();
        for kind in kinds {
            let custom = kind.custom_types();
            for t in types.iter().filter(|t| kind.matches(t, &custom)) {
                if !ids.contains(&t.id) {
                    ids.push(t.id);
                }
            }
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let m = &self.inner.marketo;
        let start = m.paging_token(since).await?;
        let mut out: Vec<Activity> = Vec::new();
        for group in ids.chunks(TYPES_PER_CALL) {
            let mut token = start.clone();
            for _ in 0..MAX_PAGES {
                let page = m.activities(&token, group, &[marketo_id]).await?;
                out.extend(page.items.into_iter().filter(|a| a.lead_id == marketo_id));
                match page.next_token {
                    Some(next) if page.more => token = next,
                    _ => break,
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|a| seen.insert(a.guid.clone()));
        out.sort_by(|a, b| b.activity_date.cmp(&a.activity_date).then_with(|| b.id.cmp(&a.id)));
        Ok(out)
    }

    /// The instance's activity types, fetched once and cached.
    async fn activity_types(&self) -> Result<Vec<ActivityType>> {
        let mut cached = self.inner.activity_types.lock().await;
        if let Some(types) = cached.as_ref() {
            return Ok(types.clone());
        }
        let types = self.inner.marketo.activity_types().await?;
        *cached = Some(types.clone());
        Ok(types)
    }
}
