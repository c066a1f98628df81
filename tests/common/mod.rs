//! Shared fixtures of the end-to-end tests: both emulators, the connectors, a store, and the
//! oracle computed from the Marketo emulator's own data.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use salesync::core::activity::{SalesActivity, SalesActivityKind};
use salesync::core::mapping::{LEAD_FIELDS, LeadField};
use salesync::core::ports::marketo::MarketoApi;
use salesync::core::ports::salesforce::SalesforceApi;
use salesync::core::ports::store::Store;
use salesync::core::{person::Person, sfid::SalesforceId};
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoLimits};
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator};
use salesync_emulator::seed::SeedWorld;
use serde_json::Value;

/// Both emulators seeded with one world.
pub struct World {
    pub marketo: MarketoEmulator,
    pub salesforce: SalesforceEmulator,
    pub seed: SeedWorld,
}

impl World {
    pub async fn start(people: usize, seed: u64, limits: bool) -> World {
        let mut mc = MarketoConfig::default();
        if !limits {
            mc.limits = MarketoLimits::unlimited();
        }
        Self::start_with(people, seed, mc).await
    }

    /// Like [`World::start`], with the Marketo emulator configured by `mc`.
    pub async fn start_with(people: usize, seed: u64, mc: MarketoConfig) -> World {
        let marketo = MarketoEmulator::start(mc).await.unwrap();
        let salesforce = SalesforceEmulator::start(SalesforceConfig::default()).await.unwrap();
        let seed = salesync_emulator::seed::generate(people, seed);
        marketo.seed_world(&seed);
        salesforce.seed_world(&seed);
        World { marketo, salesforce, seed }
    }

    pub fn marketo_client(&self) -> Arc<dyn MarketoApi> {
        Arc::new(
            salesync::marketo::MarketoClient::builder()
                .base_url(self.marketo.base_url())
                .client_id(self.marketo.client_id())
                .client_secret(self.marketo.client_secret())
                .build()
                .unwrap(),
        )
    }

    pub fn salesforce_client(&self) -> Arc<dyn SalesforceApi> {
        Arc::new(
            salesync::salesforce::SalesforceClient::builder()
                .login_url(self.salesforce.base_url())
                .client_id(self.salesforce.client_id())
                .client_secret(self.salesforce.client_secret())
                .build()
                .unwrap(),
        )
    }

    /// What the mirror must hold: every Marketo lead that is a Salesforce Lead or Contact with a
    /// non-empty owner, with its synced fields as text (by REST name).
    pub fn oracle(&self) -> BTreeMap<i64, BTreeMap<&'static str, Option<String>>> {
        let mut out = BTreeMap::new();
        for lead in self.marketo.leads() {
            let text = |k: &str| match lead.get(k) {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let ty = text("sfdcType");
            let owner = text("sfdcLeadOwnerId");
            if !matches!(ty.as_deref(), Some("Lead") | Some("Contact")) || owner.is_none() {
                continue;
            }
            let id = lead.get("id").and_then(Value::as_i64).unwrap();
            let mut fields = BTreeMap::new();
            for spec in LEAD_FIELDS.iter() {
                if matches!(spec.field, LeadField::UpdatedAt | LeadField::SalesforceOpportunityId) {
                    continue;
                }
                let v = text(spec.rest_name).map(|v| match SalesforceId::parse(&v) {
                    Ok(sf) if spec.rest_name.starts_with("sfdc") && spec.rest_name != "sfdcType" => {
                        sf.as_str().to_string()
                    }
                    _ => v,
                });
                fields.insert(spec.rest_name, v);
            }
            out.insert(id, fields);
        }
        out
    }
}

/// Every person of a store, by Marketo id.
pub async fn mirror(store: &dyn Store) -> BTreeMap<i64, Person> {
    let mut out = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store.list_people(after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.marketo_id);
        for p in page {
            out.insert(p.marketo_id, p);
        }
    }
    out
}

/// Asserts the mirror equals the oracle field by field (opportunity ids checked separately).
pub async fn assert_mirror_matches(world: &World, store: &dyn Store) {
    let oracle = world.oracle();
    let mirror = mirror(store).await;
    let missing: Vec<_> = oracle.keys().filter(|k| !mirror.contains_key(k)).take(10).collect();
    let extra: Vec<_> = mirror.keys().filter(|k| !oracle.contains_key(k)).take(10).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    for (id, fields) in &oracle {
        let p = &mirror[id];
        for (rest, want) in fields {
            let f = LeadField::from_rest_name(rest).unwrap();
            assert_eq!(&p.field_text(f), want, "lead {id} field {rest}");
        }
    }
}

/// A fresh PostgreSQL schema name for one test.
pub fn postgres_url() -> String {
    std::env::var("SALESYNC_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A sales activity of `kind` with every attribute any kind needs (subject, link, campaign, call,
/// bounce), occurred five minutes ago.
pub fn activity(id: String, marketo_id: i64, kind: SalesActivityKind) -> SalesActivity {
    SalesActivity {
        id,
        marketo_id,
        kind,
        occurred_at: chrono::Utc::now() - chrono::Duration::minutes(5),
        actor_email: Some("rep@example.com".into()),
        actor_salesforce_user: None,
        subject: Some(format!("About {}", kind.slug())),
        link: Some("https://example.com/pricing".into()),
        template: None,
        campaign: Some(salesync::core::activity::CampaignRef {
            name: Some("Q4 outreach".into()),
            ..salesync::core::activity::CampaignRef::default()
        }),
        call: Some(salesync::core::activity::CallDetails {
            status: salesync::core::activity::CallStatus::Completed,
            duration_secs: Some(90),
            phone_number: None,
            recording_url: None,
            answered_by: None,
            outcome: None,
            reason: None,
        }),
        bounce_details: Some("mailbox full".into()),
        body: None,
        sales_person_id: None,
    }
}
