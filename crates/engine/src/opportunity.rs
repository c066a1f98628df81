//! Opportunity fill: Marketo rarely returns `sfdcOpptyId`, so the engine asks Salesforce for the
//! opportunity of people whose link is unresolved: contacts through their opportunity contact
//! roles, leads through their conversion.
//!
//! # Off the Marketo pull's critical path
//!
//! - **Initial sync.** The pull never waits for Salesforce. People it writes unresolved are
//!   remembered (by Marketo id); once [`PRELOAD_AFTER`] of them are waiting, the engine reads the
//!   whole org's links once ([`SalesforceApi::opportunity_links`]: open opportunities, contact
//!   roles and converted leads in pages of 2,000), concurrently with the pull on the same task.
//!   From then on every page is written once, with its opportunities joined from that read; the
//!   people written before it are filled from it when the pull ends, before the initial sync is
//!   marked done. A small org (fewer waiting people) is filled by batched lookups of 200 ids
//!   after the pull instead. A failed org read falls back to the batched lookups.
//! - **Incremental passes and repairs** look up the people of each applied page in batches of
//!   200 ids.
//!
//! - **Salesforce changes** that Marketo never reports (a contact role created, changed or
//!   deleted; an opportunity closed, reopened or re-dated; a lead converted in Salesforce first)
//!   are followed by their own stream after the Marketo streams of every pass (checkpoint
//!   `SalesforceOpportunities`, a SystemModstamp mark read with a five-minute overlap): the
//!   people it names are looked up again with the same rule and written when their opportunity
//!   differs. Salesforce failing pauses only this stream, until the next pass.
//!
//! Until it is filled, a person's link stays `Unresolved` in the mirror (never shown as "no
//! opportunity"). A failed lookup is a warning; the people stay unresolved and
//! `SyncEngine::resolve_opportunities` (or a resumed initial sync) fills them later.
//!
//! [`SalesforceApi::opportunity_links`]: salesync_core::ports::salesforce::SalesforceApi::opportunity_links

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use salesync_core::mapping::LeadField;
use salesync_core::mirror::Decision;
use salesync_core::ports::salesforce::OpportunityLinks;
use salesync_core::{
    person::{OpportunityRef, Person, SalesforceType},
    sfid::SalesforceId,
};
use tokio::sync::mpsc;

use chrono::{DateTime, Utc};
use salesync_core::ports::store::StreamId;

use crate::checkpoint::{self, SalesforcePos};
use crate::engine::{ApplyKind, PageBuilder, Pass};
use crate::events::Phase;
use crate::{Error, Result};

/// How far before its mark each read of the Salesforce stream reaches: SystemModstamp is taken
/// when a transaction starts, so a record can commit with a stamp older than one already read.
const SALESFORCE_OVERLAP_MINUTES: i64 = 5;
/// The Salesforce stream reads nothing once the org has used this share of its daily API
/// allocation (as last reported by `Sforce-Limit-Info`); it resumes from its mark later.
const SALESFORCE_STREAM_SHARE: f64 = 0.9;
/// People the Salesforce stream looks up one by one at most; beyond, it compares everyone with an
/// org-wide read (a few hundred query pages at 1,000,000 people, fewer than the lookups).
const STREAM_LOOKUP_LIMIT: usize = 20_000;
/// Salesforce ids per lookup call.
const SALESFORCE_BATCH: usize = 200;
/// People read back from the store per fill page.
const FILL_PAGE: usize = 1000;
/// Unresolved people of an initial sync after which the whole org's links are read at once.
pub(crate) const PRELOAD_AFTER: usize = 2000;

/// The initial sync's deferred opportunity fill.
#[derive(Debug)]
pub(crate) struct Deferral {
    /// Starts the org-wide read (dropped: it is not needed).
    start: Option<mpsc::Sender<()>>,
    /// The org's links, once read.
    links: Arc<OnceLock<Arc<OpportunityLinks>>>,
    /// People written unresolved, by Marketo id.
    waiting: Vec<i64>,
}

/// The org-wide read run beside the pull: waits to be started, then reads the links.
pub(crate) struct Preload {
    start: mpsc::Receiver<()>,
    links: Arc<OnceLock<Arc<OpportunityLinks>>>,
}

impl Deferral {
    pub(crate) fn new() -> (Self, Preload) {
        let (tx, rx) = mpsc::channel(1);
        let links = Arc::new(OnceLock::new());
        (Self { start: Some(tx), links: Arc::clone(&links), waiting: Vec::new() }, Preload { start: rx, links })
    }

    /// The org's links, when read.
    pub(crate) fn links(&self) -> Option<Arc<OpportunityLinks>> {
        self.links.get().cloned()
    }

    /// Remembers people written unresolved; starts the org-wide read once enough wait.
    fn defer(&mut self, ids: impl IntoIterator<Item = i64>) {
        self.waiting.extend(ids);
        if self.waiting.len() >= PRELOAD_AFTER
            && let Some(tx) = self.start.take()
        {
            // The preload waits for exactly this message; a full or closed channel means it
            // already started or ended.
            let _ = tx.try_send(());
        }
    }

    /// Starts the org-wide read now, whatever waits (a reconcile compares everyone with it).
    pub(crate) fn start_now(&mut self) {
        if let Some(tx) = self.start.take() {
            let _ = tx.try_send(());
        }
    }

    /// The pull is over: an org-wide read not started by now is not needed.
    pub(crate) fn pull_done(&mut self) {
        self.start = None;
    }

    /// The people waiting for their opportunity.
    pub(crate) fn into_waiting(self) -> Vec<i64> {
        self.waiting
    }
}

impl Preload {
    /// Waits for the start signal, then reads the links (`None`: never started). Runs beside
    /// the pull on the pass's own task; its calls are counted in `calls`.
    pub(crate) async fn run(mut self, pass: &mut Pass<'_>) -> Option<Result<()>> {
        self.start.recv().await?;
        tracing::debug!("reading the org's opportunity links");
        let s = pass.eng.salesforce.as_ref();
        Some(match pass.salesforce("opportunity links", || s.opportunity_links()).await {
            Ok(links) => {
                tracing::debug!(
                    contacts = links.contacts.len(),
                    converted_leads = links.converted_leads.len(),
                    "opportunity links read"
                );
                let _ = self.links.set(Arc::new(links));
                Ok(())
            }
            Err(e) => Err(e),
        })
    }
}

/// The opportunity the links give a person whose link is unresolved (`None` when the person is
/// neither a contact nor a lead with a Salesforce id, which no lookup can resolve either).
fn joined(links: &OpportunityLinks, p: &Person) -> Option<Option<SalesforceId>> {
    match (p.salesforce_type, &p.salesforce_contact_id, &p.salesforce_lead_id) {
        (SalesforceType::Contact, Some(c), _) => Some(links.contact(c)),
        (SalesforceType::Lead, _, Some(l)) => Some(links.lead(l)),
        _ => None,
    }
}

impl PageBuilder {
    /// Sets the opportunity of every inserted or updated person whose link is unresolved from
    /// the org's links, so the row is written once, complete.
    pub(crate) fn join_opportunities(&mut self, links: &OpportunityLinks) {
        self.resolve_opportunities(|p| joined(links, p));
    }
}

/// The opportunity fill of one pass.
pub(crate) struct OpportunityFill<'p, 'a> {
    pass: &'p mut Pass<'a>,
}

impl<'p, 'a> OpportunityFill<'p, 'a> {
    pub(crate) fn new(pass: &'p mut Pass<'a>) -> Self {
        Self { pass }
    }
}

impl<'a> OpportunityFill<'_, 'a> {
    /// After a page was written: fills its unresolved people now (incremental passes), or
    /// remembers them for the initial sync's deferred fill.
    pub(crate) async fn after_write(&mut self, mut written: Vec<Person>) -> Result<()> {
        written.retain(|p| p.salesforce_opportunity.needs_lookup());
        if written.is_empty() {
            return Ok(());
        }
        match self.pass.deferral.as_mut() {
            Some(d) => {
                d.defer(written.iter().map(|p| p.marketo_id));
                Ok(())
            }
            None => self.fill_opportunities(written, None).await,
        }
    }

    /// Looks up the opportunity of the page's unresolved people before it is written (so each
    /// row is written once, complete); returns the ids looked up, found or not, which the fill
    /// after the write leaves alone. A failed lookup is a warning: those people are written
    /// unresolved, for `resolve_opportunities` to retry.
    pub(crate) async fn resolve_before_write(&mut self, page: &mut PageBuilder) -> Result<HashSet<i64>> {
        let people = page.unresolved();
        if people.is_empty() {
            return Ok(HashSet::new());
        }
        let tried: HashSet<i64> = people.iter().map(|p| p.marketo_id).collect();
        let found: HashMap<i64, Option<SalesforceId>> =
            self.look_up(people, false).await?.into_iter().map(|(p, opp)| (p.marketo_id, opp)).collect();
        page.resolve_opportunities(|p| found.get(&p.marketo_id).cloned());
        Ok(tried)
    }

    /// Fills the people the initial sync wrote unresolved, re-read from the store, from the
    /// org's links when they were read, else by batched lookups.
    pub(crate) async fn fill_deferred(
        &mut self,
        waiting: Vec<i64>,
        links: Option<Arc<OpportunityLinks>>,
    ) -> Result<()> {
        for ids in waiting.chunks(FILL_PAGE) {
            self.pass.check_cancel()?;
            let people: Vec<Person> = self
                .pass
                .people_by_ids(ids)
                .await?
                .into_iter()
                .filter(|p| p.salesforce_opportunity.needs_lookup())
                .collect();
            if !people.is_empty() {
                self.fill_opportunities(people, links.as_deref()).await?;
            }
        }
        Ok(())
    }

    /// The next page of the whole mirror after `after` (advanced), `None` at its end.
    async fn mirror_page(&self, after: &mut Option<i64>) -> Result<Option<Vec<Person>>> {
        self.pass.check_cancel()?;
        let people = self.pass.list_people(*after, FILL_PAGE as u32).await?;
        let Some(last) = people.last() else { return Ok(None) };
        *after = Some(last.marketo_id);
        Ok(Some(people))
    }

    /// Sweeps the whole mirror for unresolved people and fills them.
    pub(crate) async fn fill_unresolved(&mut self, links: Option<&OpportunityLinks>) -> Result<()> {
        let mut after = None;
        while let Some(people) = self.mirror_page(&mut after).await? {
            let need: Vec<Person> = people.into_iter().filter(|p| p.salesforce_opportunity.needs_lookup()).collect();
            if !need.is_empty() {
                self.fill_opportunities(need, links).await?;
            }
        }
        Ok(())
    }

    /// Resolves and writes the opportunity of `people` (whose links are unresolved): from
    /// `links` when given, else by lookups of 200 ids.
    pub(crate) async fn fill_opportunities(
        &mut self,
        people: Vec<Person>,
        links: Option<&OpportunityLinks>,
    ) -> Result<()> {
        let resolved = match links {
            Some(links) => people.into_iter().filter_map(|p| joined(links, &p).map(|opp| (p, opp))).collect::<Vec<_>>(),
            None => self.look_up(people, false).await?,
        };
        if resolved.is_empty() {
            return Ok(());
        }
        let now = self.pass.now();
        let mut page = PageBuilder::new(Vec::new(), now);
        for (mut person, opp) in resolved {
            person.salesforce_opportunity = OpportunityRef::Salesforce(opp);
            person.mirror_updated_at = now;
            page.push_decision(Decision::Update { person, changed: vec![LeadField::SalesforceOpportunityId] });
        }
        self.pass.commit(page, None, ApplyKind::OpportunityFill).await?;
        Ok(())
    }

    /// The Salesforce stream: the people whose opportunity may have changed in Salesforce since
    /// the stream's mark (contact roles, opportunities, conversions: see
    /// [`SalesforceApi::opportunity_changes`]) are looked up again with the initial sync's rule;
    /// those whose opportunity differs are written and published, with the new mark, in one page.
    /// A person whose opportunity came from Marketo (`sfdcOpptyId`) keeps it. Without a mark
    /// the stream starts at the initial sync's start, less the clock margin.
    ///
    /// [`SalesforceApi::opportunity_changes`]: salesync_core::ports::salesforce::SalesforceApi::opportunity_changes
    pub(crate) async fn follow_salesforce(&mut self, initial_started_at: DateTime<Utc>) -> Result<()> {
        self.pass.set_phase(Phase::Opportunities);
        let pos = match self.pass.checkpoint(StreamId::SalesforceOpportunities).await? {
            Some(cp) => checkpoint::decode::<SalesforcePos>(&cp)?,
            None => SalesforcePos {
                since: initial_started_at - chrono::Duration::minutes(crate::incremental::CLOCK_SKEW_MARGIN_MINUTES),
            },
        };
        let from = pos.since - chrono::Duration::minutes(SALESFORCE_OVERLAP_MINUTES);
        let s = self.pass.eng.salesforce.as_ref();
        if let Some(usage) = s.api_usage()
            && usage.used as f64 >= usage.max as f64 * SALESFORCE_STREAM_SHARE
        {
            // Leave the rest of the org's daily allocation to delivery and the other integrations.
            self.pass.report.warnings.push(format!(
                "Salesforce opportunity stream waits: {} of the org's {} daily API calls used",
                usage.used, usage.max
            ));
            return Ok(());
        }
        let changes = self
            .pass
            .salesforce_long("opportunity changes", || s.opportunity_changes(from, STREAM_LOOKUP_LIMIT))
            .await?;
        if changes.truncated {
            // A mass change: one org-wide read compared with everyone costs less than lookups,
            // and keeps memory bounded. The stream then resumes from the read.
            tracing::info!("many Salesforce opportunity changes: comparing the mirror with an org-wide read");
            let read_at = self.pass.now();
            let links = self.pass.salesforce_long("opportunity links", || s.opportunity_links()).await?;
            return self.verify_all(&links, read_at - chrono::Duration::minutes(SALESFORCE_OVERLAP_MINUTES)).await;
        }
        let mut people: HashMap<i64, Person> = HashMap::new();
        for id in changes.contacts.iter().chain(&changes.converted_leads) {
            for p in self.pass.people_by_salesforce_id(id).await? {
                if !matches!(p.salesforce_opportunity, OpportunityRef::Marketo(_)) {
                    people.insert(p.marketo_id, p);
                }
            }
        }
        let resolved = self.look_up(people.into_values().collect(), true).await?;
        let now = self.pass.now();
        let mut page = PageBuilder::new(Vec::new(), now);
        for (mut person, opp) in resolved {
            let next = OpportunityRef::Salesforce(opp);
            if person.salesforce_opportunity == next {
                continue;
            }
            person.salesforce_opportunity = next;
            person.mirror_updated_at = now;
            page.push_decision(Decision::Update { person, changed: vec![LeadField::SalesforceOpportunityId] });
        }
        let next = SalesforcePos { since: changes.newest.map_or(pos.since, |n| n.max(pos.since)) };
        let cp = checkpoint::encode(StreamId::SalesforceOpportunities, &next, now)?;
        self.pass.commit(page, Some(cp), ApplyKind::Sync).await?;
        Ok(())
    }

    /// Compares every mirror person's opportunity (unless Marketo gave it) with the org's links
    /// and writes those that differ (drift repair, and the Salesforce stream after a mass
    /// change). The Salesforce stream then restarts at `mark`, from before the links were read,
    /// so a change made while the mirror was compared is applied again over what they said.
    pub(crate) async fn verify_all(&mut self, links: &OpportunityLinks, mark: DateTime<Utc>) -> Result<()> {
        let mut after = None;
        while let Some(people) = self.mirror_page(&mut after).await? {
            let now = self.pass.now();
            let mut page = PageBuilder::new(Vec::new(), now);
            let mut stale = 0;
            for mut person in people {
                if matches!(person.salesforce_opportunity, OpportunityRef::Marketo(_)) {
                    continue;
                }
                let Some(opp) = joined(links, &person) else { continue };
                let next = OpportunityRef::Salesforce(opp);
                if person.salesforce_opportunity != next {
                    person.salesforce_opportunity = next;
                    person.mirror_updated_at = now;
                    page.push_decision(Decision::Update { person, changed: vec![LeadField::SalesforceOpportunityId] });
                    stale += 1;
                }
            }
            if stale > 0 {
                self.pass.commit(page, None, ApplyKind::Sync).await?;
            }
        }
        self.pass.put(StreamId::SalesforceOpportunities, &SalesforcePos { since: mark }).await
    }

    /// Looks the opportunity of the page's person up again, whatever the mirror holds, and sets
    /// it on the decision (an unchanged row whose opportunity differs becomes an update).
    /// `current` is the mirror's row. A Marketo-given opportunity is kept.
    pub(crate) async fn refresh(&mut self, page: &mut PageBuilder, current: Option<&Person>) -> Result<()> {
        for (d, _) in page.entries_mut() {
            let person = match d {
                Decision::Insert { person } | Decision::Update { person, .. } => person.clone(),
                Decision::Unchanged { .. } => match current {
                    Some(c) => c.clone(),
                    None => continue,
                },
                Decision::Remove { .. } | Decision::Skip { .. } => continue,
            };
            if matches!(person.salesforce_opportunity, OpportunityRef::Marketo(_)) {
                continue;
            }
            let Some((_, opp)) = self.look_up(vec![person.clone()], true).await?.into_iter().next() else { continue };
            let next = OpportunityRef::Salesforce(opp);
            let differs = current.is_none_or(|c| c.salesforce_opportunity != next);
            match d {
                Decision::Insert { person } => person.salesforce_opportunity = next,
                Decision::Update { person, changed } => {
                    person.salesforce_opportunity = next;
                    if differs && !changed.contains(&LeadField::SalesforceOpportunityId) {
                        changed.push(LeadField::SalesforceOpportunityId);
                    }
                }
                Decision::Unchanged { .. } if differs => {
                    let mut person = person;
                    person.salesforce_opportunity = next;
                    person.mirror_updated_at = self.pass.now();
                    *d = Decision::Update { person, changed: vec![LeadField::SalesforceOpportunityId] };
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Looks the opportunities up in batches of 200 ids. A failed batch is a warning (its
    /// people are left out) unless `strict`, where it fails the call.
    async fn look_up(&mut self, people: Vec<Person>, strict: bool) -> Result<Vec<(Person, Option<SalesforceId>)>> {
        let s = self.pass.eng.salesforce.as_ref();
        let mut contacts: Vec<(SalesforceId, Person)> = Vec::new();
        let mut leads: Vec<(SalesforceId, Person)> = Vec::new();
        for p in people {
            match (p.salesforce_type, &p.salesforce_contact_id, &p.salesforce_lead_id) {
                (SalesforceType::Contact, Some(c), _) => contacts.push((c.clone(), p)),
                (SalesforceType::Lead, _, Some(l)) => leads.push((l.clone(), p)),
                _ => {}
            }
        }
        let mut resolved: Vec<(Person, Option<SalesforceId>)> = Vec::new();
        for chunk in contacts.chunks(SALESFORCE_BATCH) {
            let ids: Vec<SalesforceId> = chunk.iter().map(|(id, _)| id.clone()).collect();
            match self.pass.salesforce("opportunities for contacts", || s.opportunities_for_contacts(&ids)).await {
                Ok(found) => {
                    let found: HashMap<SalesforceId, Option<SalesforceId>> = found.into_iter().collect();
                    for (id, p) in chunk {
                        if let Some(opp) = found.get(id) {
                            resolved.push((p.clone(), opp.clone()));
                        }
                    }
                }
                Err(e) if strict || matches!(e, Error::Cancelled) => return Err(e),
                Err(e) => self
                    .pass
                    .report
                    .warnings
                    .push(format!("opportunity lookup for contacts failed (resolve_opportunities retries): {e}")),
            }
        }
        for chunk in leads.chunks(SALESFORCE_BATCH) {
            let ids: Vec<SalesforceId> = chunk.iter().map(|(id, _)| id.clone()).collect();
            match self.pass.salesforce("lead conversions", || s.lead_conversions(&ids)).await {
                Ok(found) => {
                    let found: HashMap<SalesforceId, Option<SalesforceId>> = found
                        .into_iter()
                        .map(|c| (c.lead_id, if c.converted { c.opportunity_id } else { None }))
                        .collect();
                    for (id, p) in chunk {
                        if let Some(opp) = found.get(id) {
                            resolved.push((p.clone(), opp.clone()));
                        }
                    }
                }
                Err(e) if strict || matches!(e, Error::Cancelled) => return Err(e),
                Err(e) => self
                    .pass
                    .report
                    .warnings
                    .push(format!("lead conversion lookup failed (resolve_opportunities retries): {e}")),
            }
        }
        Ok(resolved)
    }
}
