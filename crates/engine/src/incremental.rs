//! The incremental pass: lead changes, deleted leads and merges, each paged by a Marketo paging
//! token that is advanced only together with the data of its page.

use std::collections::HashSet;

use salesync_core::mirror::Incoming;
use salesync_core::ports::marketo::Activity;
use salesync_core::ports::store::StreamId;

use crate::checkpoint::{self, InitialState, LeadChangesPos, TokenPos};
use crate::engine::Pass;
use crate::events::Phase;
use crate::{Error, Result};
use chrono::{DateTime, Utc};

/// Activity type of Merge Leads.
pub(crate) const MERGE_LEADS: i64 = 32;

/// How the incremental pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Done,
    /// A position is too old: a reconciling resync must run.
    Reconcile,
}

/// True when Marketo refused a paging token because it is too old or unknown.
pub(crate) fn token_rejected(e: &Error) -> bool {
    matches!(e, Error::Port(salesync_core::Error::CursorExpired { .. }))
}

/// The Marketo ids a Merge Leads activity names as losers (attribute "Merge IDs"; a JSON array,
/// a number, or a string such as `"[12, 13]"` or `"12,13"`).
pub(crate) fn merge_losers(a: &Activity) -> Vec<i64> {
    let mut out = Vec::new();
    let mut push = |id: i64| {
        if id != a.lead_id && id > 0 && !out.contains(&id) {
            out.push(id);
        }
    };
    let from_str = |s: &str, push: &mut dyn FnMut(i64)| {
        s.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).filter_map(|p| p.parse().ok()).for_each(push);
    };
    match a.attribute("Merge IDs").or_else(|| a.attribute("Merge Ids")) {
        Some(serde_json::Value::Array(items)) => {
            for v in items {
                match v {
                    serde_json::Value::Number(n) => {
                        if let Some(i) = n.as_i64() {
                            push(i)
                        }
                    }
                    serde_json::Value::String(s) => from_str(s, &mut push),
                    _ => {}
                }
            }
        }
        Some(serde_json::Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                push(i)
            }
        }
        Some(serde_json::Value::String(s)) => from_str(s, &mut push),
        _ => {}
    }
    out
}

/// How many minutes before the initial sync's start (host clock) the incremental streams begin,
/// so a host clock running ahead of Marketo's loses no change.
pub(crate) const CLOCK_SKEW_MARGIN_MINUTES: i64 = 15;

/// The incremental streams of one pass.
pub(crate) struct Incremental<'p, 'a> {
    pass: &'p mut Pass<'a>,
}

impl<'p, 'a> Incremental<'p, 'a> {
    pub(crate) fn new(pass: &'p mut Pass<'a>) -> Self {
        Self { pass }
    }
}

impl<'a> Incremental<'_, 'a> {
    /// Writes the lead-changes and deleted-leads positions as of `since`.
    pub(crate) async fn position_streams(&mut self, since: DateTime<Utc>) -> Result<()> {
        let m = self.pass.eng.marketo.as_ref();
        // `since` is the host's clock; Marketo dates activities by its own. A host clock ahead
        // of Marketo's would skip the changes in between, so the token starts a margin earlier
        // (reading a few minutes of activities twice only yields unchanged decisions).
        let from = since - chrono::Duration::minutes(CLOCK_SKEW_MARGIN_MINUTES);
        let token = self.pass.marketo("paging token", || m.paging_token(from)).await?;
        self.pass
            .put(
                StreamId::LeadChanges,
                &LeadChangesPos { token: token.clone(), merges_token: token.clone(), as_of: since },
            )
            .await?;
        self.pass.put(StreamId::DeletedLeads, &TokenPos { token, as_of: since }).await?;
        Ok(())
    }

    pub(crate) async fn run(&mut self, initial: &InitialState) -> Result<Flow> {
        let streams = self.pass.eng.settings.streams;
        let (mut lc, mut del) = self.load_positions().await?;
        if lc.is_none() || del.is_none() {
            // Positions lost (or never written): restart them at the initial sync's start.
            self.position_streams(initial.started_at).await?;
            (lc, del) = self.load_positions().await?;
        }
        let (Some(lc), Some(del)) = (lc.as_mut(), del.as_mut()) else {
            return Err(Error::Checkpoint {
                stream: StreamId::LeadChanges,
                detail: "the store did not keep the incremental positions".into(),
            });
        };
        let retention = chrono::Duration::from_std(self.pass.eng.settings.deleted_leads_retention)
            .unwrap_or(chrono::Duration::days(14));
        if streams.deleted_leads && self.pass.now() - del.as_of > retention {
            tracing::warn!(as_of = %del.as_of, "deleted leads not read within retention; reconciling");
            return Ok(Flow::Reconcile);
        }
        if streams.lead_changes {
            match self.lead_changes(lc).await {
                Err(e) if token_rejected(&e) => {
                    tracing::warn!(error = %e, "lead changes token rejected; reconciling");
                    return Ok(Flow::Reconcile);
                }
                other => other?,
            }
        }
        if streams.deleted_leads {
            match self.deleted_leads(del).await {
                Err(e) if token_rejected(&e) => return Ok(Flow::Reconcile),
                other => other?,
            }
        }
        if streams.merges {
            match self.merges(lc).await {
                Err(e) if token_rejected(&e) => return Ok(Flow::Reconcile),
                other => other?,
            }
        }
        Ok(Flow::Done)
    }

    async fn load_positions(&self) -> Result<(Option<LeadChangesPos>, Option<TokenPos>)> {
        let lc = match self.pass.checkpoint(StreamId::LeadChanges).await? {
            Some(cp) => Some(checkpoint::decode::<LeadChangesPos>(&cp)?),
            None => None,
        };
        let del = match self.pass.checkpoint(StreamId::DeletedLeads).await? {
            Some(cp) => Some(checkpoint::decode::<TokenPos>(&cp)?),
            None => None,
        };
        Ok((lc, del))
    }

    /// Fetches the current records of `ids` (≤`page_size` per call) into `page`. Ids Marketo no
    /// longer returns are left to the deleted-leads stream.
    async fn refetch(&mut self, ids: &[i64], page: &mut crate::engine::PageBuilder) -> Result<()> {
        let fields = self.pass.fields().await?;
        let m = self.pass.eng.marketo.as_ref();
        let now = self.pass.now();
        for chunk in ids.chunks(self.pass.eng.settings.page_size as usize) {
            let records = self.pass.marketo("leads by id", || m.leads_by_ids(chunk, &fields)).await?;
            for r in records {
                match r.0 {
                    Ok(lead) => page.push(Incoming::Lead(lead.qualify(now))),
                    Err(e) => page.error(e),
                }
            }
        }
        Ok(())
    }

    async fn lead_changes(&mut self, pos: &mut LeadChangesPos) -> Result<()> {
        self.pass.set_phase(Phase::LeadChanges);
        let fields: Vec<String> =
            self.pass.fields().await?.into_iter().filter(|f| f != "id" && f != "updatedAt").collect();
        let m = self.pass.eng.marketo.as_ref();
        let pass_start = self.pass.now();
        loop {
            self.pass.check_cancel()?;
            let token = pos.token.clone();
            let page = self.pass.marketo("lead changes", || m.lead_changes(&token, &fields)).await?;
            let ids = unique_lead_ids(&page.items);
            let mut builder = self.pass.page_for(&ids).await?;
            self.refetch(&ids, &mut builder).await?;
            let done = !page.more || page.next_token.is_none();
            let mut next = pos.clone();
            if let Some(t) = page.next_token {
                next.token = t;
            }
            if done {
                next.as_of = pass_start;
            }
            let cp = checkpoint::encode(StreamId::LeadChanges, &next, self.pass.now())?;
            self.pass.apply(builder, Some(cp)).await?;
            *pos = next;
            if done {
                return Ok(());
            }
        }
    }

    async fn deleted_leads(&mut self, pos: &mut TokenPos) -> Result<()> {
        self.pass.set_phase(Phase::DeletedLeads);
        let m = self.pass.eng.marketo.as_ref();
        let pass_start = self.pass.now();
        loop {
            self.pass.check_cancel()?;
            let token = pos.token.clone();
            let page = self.pass.marketo("deleted leads", || m.deleted_leads(&token)).await?;
            let ids = unique_lead_ids(&page.items);
            let mut builder = self.pass.page_for(&ids).await?;
            for id in ids {
                builder.push(Incoming::Deleted { marketo_id: id });
            }
            let done = !page.more || page.next_token.is_none();
            let mut next = pos.clone();
            if let Some(t) = page.next_token {
                next.token = t;
            }
            if done {
                next.as_of = pass_start;
            }
            let cp = checkpoint::encode(StreamId::DeletedLeads, &next, self.pass.now())?;
            self.pass.apply(builder, Some(cp)).await?;
            *pos = next;
            if done {
                return Ok(());
            }
        }
    }

    async fn merges(&mut self, pos: &mut LeadChangesPos) -> Result<()> {
        self.pass.set_phase(Phase::Merges);
        let m = self.pass.eng.marketo.as_ref();
        loop {
            self.pass.check_cancel()?;
            let token = pos.merges_token.clone();
            let page = self.pass.marketo("merges", || m.activities(&token, &[MERGE_LEADS], &[])).await?;
            let mut pairs = Vec::new();
            let mut winners = Vec::new();
            for a in &page.items {
                if a.activity_type_id != MERGE_LEADS {
                    continue;
                }
                for loser in merge_losers(a) {
                    pairs.push((loser, a.lead_id));
                }
                if !winners.contains(&a.lead_id) {
                    winners.push(a.lead_id);
                }
            }
            let mut ids: Vec<i64> = pairs.iter().map(|(l, _)| *l).collect();
            ids.extend(&winners);
            let mut builder = self.pass.page_for(&ids).await?;
            for (loser, winner) in pairs {
                builder.push(Incoming::Merged { marketo_id: loser, winner });
            }
            self.refetch(&winners, &mut builder).await?;
            let done = !page.more || page.next_token.is_none();
            let mut next = pos.clone();
            if let Some(t) = page.next_token {
                next.merges_token = t;
            }
            let cp = checkpoint::encode(StreamId::LeadChanges, &next, self.pass.now())?;
            self.pass.apply(builder, Some(cp)).await?;
            *pos = next;
            if done {
                return Ok(());
            }
        }
    }
}

fn unique_lead_ids(items: &[Activity]) -> Vec<i64> {
    let mut seen = HashSet::new();
    items.iter().map(|a| a.lead_id).filter(|id| seen.insert(*id)).collect()
}
