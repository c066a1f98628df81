//! Opportunity fill: Marketo rarely returns `sfdcOpptyId`, so after each applied page the engine
//! asks Salesforce for the opportunity of people whose link is unresolved: contacts through
//! their opportunity contact roles, leads through their conversion. Failures are reported as
//! warnings and the people stay unresolved (they are looked up again when next written).

use std::collections::HashMap;

use salesync_core::mapping::LeadField;
use salesync_core::mirror::Decision;
use salesync_core::{OpportunityRef, Person, SalesforceId, SalesforceType};

use crate::engine::{ApplyKind, PageBuilder, Pass};
use crate::{Error, Result};

/// Salesforce ids per lookup call.
const SALESFORCE_BATCH: usize = 200;

impl Pass<'_> {
    pub(crate) async fn fill_opportunities(&mut self, people: Vec<Person>) -> Result<()> {
        let s = self.eng.salesforce.as_ref();
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
            match self.salesforce("opportunities for contacts", || s.opportunities_for_contacts(&ids)).await {
                Ok(found) => {
                    let found: HashMap<SalesforceId, Option<SalesforceId>> = found.into_iter().collect();
                    for (id, p) in chunk {
                        if let Some(opp) = found.get(id) {
                            resolved.push((p.clone(), opp.clone()));
                        }
                    }
                }
                Err(Error::Cancelled) => return Err(Error::Cancelled),
                Err(e) => self
                    .report
                    .warnings
                    .push(format!("opportunity lookup for contacts failed (resolve_opportunities retries): {e}")),
            }
        }
        for chunk in leads.chunks(SALESFORCE_BATCH) {
            let ids: Vec<SalesforceId> = chunk.iter().map(|(id, _)| id.clone()).collect();
            match self.salesforce("lead conversions", || s.lead_conversions(&ids)).await {
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
                Err(Error::Cancelled) => return Err(Error::Cancelled),
                Err(e) => self
                    .report
                    .warnings
                    .push(format!("lead conversion lookup failed (resolve_opportunities retries): {e}")),
            }
        }
        if resolved.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let mut page = PageBuilder::new(Vec::new(), now);
        for (mut person, opp) in resolved {
            person.salesforce_opportunity = OpportunityRef::Salesforce(opp);
            person.mirror_updated_at = now;
            page.push_decision(Decision::Update { person, changed: vec![LeadField::SalesforceOpportunityId] });
        }
        self.commit(page, None, ApplyKind::OpportunityFill).await?;
        Ok(())
    }
}
