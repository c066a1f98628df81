//! Repairing one person from a live read ([`SyncEngine::resync_person`](crate::SyncEngine::resync_person)).

use salesync_core::mapping::LeadRecord;
use salesync_core::mirror::{Decision, Incoming, RemovalReason};

use crate::Result;
use crate::engine::{ApplyKind, PageBuilder, Pass};
use crate::opportunity::OpportunityFill;

/// Reads the person live from Marketo (and its opportunity from Salesforce) and writes what the
/// mirror must hold: inserted, updated, removed as `Vanished` when Marketo no longer has the id,
/// or nothing when the row is right. One page, no checkpoint: the streams are not touched. A
/// record Marketo answers with but that cannot be read is reported and leaves the row as it is.
pub(crate) async fn resync_person(pass: &mut Pass<'_>, marketo_id: i64) -> Result<()> {
    let fields = pass.fields().await?;
    let m = pass.eng.marketo.as_ref();
    let values = vec![marketo_id.to_string()];
    let page = pass.marketo("lead by id", || m.leads_by_filter("id", &values, &fields, None)).await?;
    let record = page.items.into_iter().find(|r| match &r.0 {
        Ok(lead) => lead.id == marketo_id,
        Err(e) => e.record_id == Some(marketo_id),
    });
    let current = pass.eng.store.person(marketo_id).await?;
    let now = pass.now();
    let mut builder = PageBuilder::new(current.iter().cloned().collect(), now);
    match record {
        Some(LeadRecord(Ok(lead))) => builder.push(Incoming::Lead(lead.qualify(now))),
        Some(LeadRecord(Err(e))) => builder.error(e),
        None if current.is_some() => {
            builder.push_decision(Decision::Remove { marketo_id, reason: RemovalReason::Vanished })
        }
        None => {}
    }
    if pass.eng.settings.opportunity_lookup {
        OpportunityFill::new(pass).refresh(&mut builder, current.as_ref()).await?;
    }
    pass.commit(builder, None, ApplyKind::Sync).await?;
    Ok(())
}
