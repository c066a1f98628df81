//! Rebuild without downtime: a full initial sync into the store's shadow copy while hosts keep
//! reading the live mirror, then one transaction that makes the live mirror equal the shadow.
//!
//! A rebuild is marked by the shadow's [`StreamId::Rebuild`] checkpoint. While it is there, every
//! pass ends with a *slice* of shadow work ([`EngineSettings::rebuild_slice`] at most): the same
//! stages as a live pass (initial sync, then the Marketo streams and the Salesforce opportunity
//! stream from the shadow's own positions), on a [`Pass`] over [`Mirror::Shadow`]. So the live
//! streams keep the live mirror current in between, and a crash or a cancel leaves the live
//! mirror as it was and the shadow resumable from its checkpoints.
//!
//! When a slice finishes a whole shadow pass (its initial sync done and its streams read to
//! the end after the live pass of the same call), the shadow holds everything the live mirror
//! knows and is at least as recent. The engine then compares the two copies person by person
//! ([`changed_fields`], the rule every page uses), and [`ShadowStore::promote_shadow`] writes
//! the difference, the shadow's stream positions (the live streams carry on from them, so
//! nothing that happened during the rebuild is lost) and empties the shadow, in one
//! transaction. The difference is published as mirror changes, live people the rebuild did
//! not find leave as [`RemovalReason::Vanished`].
//!
//! [`EngineSettings::rebuild_slice`]: crate::EngineSettings::rebuild_slice

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use salesync_core::mirror::{RemovalReason, changed_fields};
use salesync_core::person::Person;
use salesync_core::ports::store::{ApplyCounts, Promotion, ShadowStore, StreamId};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::engine::{Mirror, Pass};
use crate::events::{MirrorChange, Phase, SyncEvent};
use crate::report::RebuildReport;
use crate::{Error, Result};

/// The shadow's streams whose positions the live mirror takes over at the promotion.
const CARRIED_OVER: [StreamId; 4] =
    [StreamId::InitialSync, StreamId::LeadChanges, StreamId::DeletedLeads, StreamId::SalesforceOpportunities];

/// People read per page from each copy while they are compared.
const COMPARE_PAGE: u32 = 5_000;

/// The rebuild's own checkpoint (among the shadow's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RebuildPos {
    /// When the rebuild was started.
    pub requested_at: DateTime<Utc>,
}

/// The store's shadow copy, or a configuration error naming why a rebuild is impossible.
pub(crate) fn shadow_of(pass_store: &dyn salesync_core::ports::store::MirrorStore) -> Result<Arc<dyn ShadowStore>> {
    pass_store.shadow().ok_or_else(|| Error::Config {
        field: "store",
        reason: "this store keeps no shadow copy, so it cannot rebuild the mirror without downtime".into(),
    })
}

/// When a rebuild is in progress, the time it was started.
pub(crate) async fn in_progress(shadow: &dyn ShadowStore) -> Result<Option<DateTime<Utc>>> {
    match shadow.shadow_checkpoint(StreamId::Rebuild).await? {
        Some(cp) => Ok(Some(checkpoint::decode::<RebuildPos>(&cp)?.requested_at)),
        None => Ok(None),
    }
}

/// Starts a rebuild unless one is in progress: empties the shadow and marks it. True when
/// started.
pub(crate) async fn start(pass: &Pass<'_>) -> Result<bool> {
    let shadow = shadow_of(pass.eng.store.as_ref())?;
    if in_progress(shadow.as_ref()).await?.is_some() {
        return Ok(false);
    }
    pass.eng.keep_lead(false).await?;
    shadow.clear_shadow().await?;
    let now = pass.now();
    shadow
        .put_shadow_checkpoint(checkpoint::encode(StreamId::Rebuild, &RebuildPos { requested_at: now }, now)?)
        .await?;
    tracing::info!("rebuild started: the shadow copy fills beside the live mirror");
    Ok(true)
}

/// Drops a rebuild in progress (its shadow copy); true when there was one.
pub(crate) async fn discard(pass: &Pass<'_>) -> Result<bool> {
    let shadow = shadow_of(pass.eng.store.as_ref())?;
    let was = in_progress(shadow.as_ref()).await?.is_some();
    pass.eng.keep_lead(false).await?;
    shadow.clear_shadow().await?;
    if was {
        tracing::info!("rebuild discarded: the live mirror stays as it is");
    }
    Ok(was)
}

/// The rebuild's share of a live pass: a slice of shadow work, and the promotion once the
/// shadow has caught up. Does nothing when no rebuild is in progress.
pub(crate) async fn step(pass: &mut Pass<'_>) -> Result<()> {
    let Some(shadow) = pass.eng.store.shadow() else { return Ok(()) };
    let Some(requested_at) = in_progress(shadow.as_ref()).await? else { return Ok(()) };
    let mut report = RebuildReport { requested_at: Some(requested_at), ..Default::default() };
    pass.set_phase(Phase::Rebuild);
    let (result, shadow_report) = {
        let mut sp = Pass::on(pass.eng, pass.cancel, Mirror::Shadow(shadow.clone()));
        sp.deadline = Some(tokio::time::Instant::now() + pass.eng.settings.rebuild_slice);
        let result = sp.run_stages().await;
        (result, sp.report)
    };
    report.shadow_written = shadow_report.inserted + shadow_report.updated + shadow_report.opportunities_resolved;
    pass.absorb(shadow_report);
    match result {
        Ok(()) => promote(pass, shadow.as_ref(), &mut report).await?,
        // The slice is over, not the pass: the shadow resumes from its checkpoints next time.
        Err(Error::Cancelled) if !pass.cancel.is_cancelled() => {
            tracing::debug!("rebuild slice over; the shadow copy resumes at the next pass");
        }
        Err(e) => {
            pass.report.rebuild = Some(report);
            return Err(e);
        }
    }
    pass.report.rebuild = Some(report);
    Ok(())
}

/// Compares the copies, then swaps the difference in with the shadow's positions.
async fn promote(pass: &mut Pass<'_>, shadow: &dyn ShadowStore, report: &mut RebuildReport) -> Result<()> {
    let mut live = Cursor::new(Side::Live);
    let mut copy = Cursor::new(Side::Shadow);
    let mut promotion = Promotion { at: pass.now(), ..Default::default() };
    let mut changes = Vec::new();
    loop {
        pass.check_cancel()?;
        let l = live.peek(pass, shadow).await?;
        let s = copy.peek(pass, shadow).await?;
        match (l, s) {
            (None, None) => break,
            (Some(l), s) if s.is_none_or(|s| l < s) => {
                live.pop();
                promotion.removes.push((l, RemovalReason::Vanished));
                changes.push(MirrorChange::Removed { id: l, reason: RemovalReason::Vanished });
            }
            (l, Some(s)) if l.is_none_or(|l| s < l) => {
                copy.pop();
                promotion.upserts.push(s);
                changes.push(MirrorChange::Inserted { id: s });
            }
            _ => {
                let (Some(old), Some(new)) = (live.pop(), copy.pop()) else { break };
                let changed = changed_fields(&old, &new);
                if !changed.is_empty() {
                    promotion.upserts.push(new.marketo_id);
                    changes.push(MirrorChange::Updated { id: new.marketo_id, changed });
                }
            }
        }
    }
    for stream in CARRIED_OVER {
        if let Some(cp) = shadow.shadow_checkpoint(stream).await? {
            promotion.checkpoints.push(cp);
        }
    }
    pass.eng.keep_lead(false).await?;
    let counts: ApplyCounts = shadow.promote_shadow(promotion).await?;
    report.promoted = true;
    report.inserted = counts.inserted;
    report.updated = counts.updated;
    report.removed = counts.removed;
    pass.report.inserted += counts.inserted;
    pass.report.updated += counts.updated;
    pass.report.removed.vanished += counts.removed;
    pass.report.pages += 1;
    tracing::info!(
        inserted = counts.inserted,
        updated = counts.updated,
        removed = counts.removed,
        "rebuild promoted: the shadow copy replaced the live mirror"
    );
    pass.eng.emit(SyncEvent::PageApplied { counts, phase: Phase::Rebuild });
    for c in changes {
        // No subscriber is fine; laggards see `Lagged`.
        let _ = pass.eng.changes.send(c);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Live,
    Shadow,
}

/// One copy of the mirror read in id order, a page at a time.
struct Cursor {
    side: Side,
    buf: VecDeque<Person>,
    after: Option<i64>,
    end: bool,
}

impl Cursor {
    fn new(side: Side) -> Self {
        Self { side, buf: VecDeque::new(), after: None, end: false }
    }

    /// The next person's id, reading a page when needed (the leader lease renewed when due).
    async fn peek(&mut self, pass: &Pass<'_>, shadow: &dyn ShadowStore) -> Result<Option<i64>> {
        if self.buf.is_empty() && !self.end {
            pass.eng.keep_lead(false).await?;
            let page = match self.side {
                Side::Live => pass.eng.store.list_people(self.after, COMPARE_PAGE).await?,
                Side::Shadow => shadow.list_shadow_people(self.after, COMPARE_PAGE).await?,
            };
            match page.last() {
                Some(p) => self.after = Some(p.marketo_id),
                None => self.end = true,
            }
            self.buf.extend(page);
        }
        Ok(self.buf.front().map(|p| p.marketo_id))
    }

    fn pop(&mut self) -> Option<Person> {
        self.buf.pop_front()
    }
}
