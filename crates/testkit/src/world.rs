//! Both emulators seeded with one world, and what the tests do with it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use salesync_core::ports::store::Store;
use salesync_core::sfid::SalesforceId;
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoLimits};
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator};
use salesync_emulator::seed::SeedWorld;
use serde_json::{Value, json};

use crate::builders::{Rng, obj};
use crate::mirror::{MirrorDiff, Oracle, mirror, mirror_diff, oracle};

/// Both emulators seeded with one world ([`salesync_emulator::seed::generate`]).
pub struct World {
    /// The Marketo emulator.
    pub marketo: MarketoEmulator,
    /// The Salesforce emulator.
    pub salesforce: SalesforceEmulator,
    /// The seeded world both hold.
    pub seed: SeedWorld,
    /// The Marketo emulator's limits (what [`check_rate_limits`](crate::check_rate_limits)
    /// holds the calls to).
    pub limits: MarketoLimits,
    /// The Marketo API clients (id, secret): the emulator's own first, then the additional ones.
    pub clients: Vec<(String, String)>,
    /// Opportunities given in Salesforce only by [`mutate`](Self::mutate): (Marketo id, contact
    /// id, opportunity id), checked by [`mirror_diff`](Self::mirror_diff) while the person is
    /// still that contact.
    pub salesforce_only: Mutex<Vec<(i64, String, String)>>,
}

impl World {
    /// `people` seeded with `seed` in a Marketo emulator configured by `marketo` and a Salesforce
    /// emulator configured by `salesforce`.
    pub async fn start(people: usize, seed: u64, marketo: MarketoConfig, salesforce: SalesforceConfig) -> World {
        let limits = marketo.limits.clone();
        let extra = marketo.additional_clients.clone();
        let marketo = MarketoEmulator::start(marketo).await.expect("the Marketo emulator starts");
        let salesforce = SalesforceEmulator::start(salesforce).await.expect("the Salesforce emulator starts");
        let seed = salesync_emulator::seed::generate(people, seed);
        marketo.seed_world(&seed);
        salesforce.seed_world(&seed);
        let mut clients = vec![(marketo.client_id().to_string(), marketo.client_secret().to_string())];
        clients.extend(extra);
        World { marketo, salesforce, seed, limits, clients, salesforce_only: Mutex::default() }
    }

    /// Marketo without limits (so salesync itself is measured), Salesforce as by default.
    pub async fn unlimited(people: usize, seed: u64) -> World {
        let marketo = MarketoConfig { limits: MarketoLimits::unlimited(), ..MarketoConfig::default() };
        Self::start(people, seed, marketo, SalesforceConfig::default()).await
    }

    /// Marketo allowing `calls_per_window` counted calls per one-second window (10 in flight),
    /// with `extra_clients` more API clients (one per process).
    pub async fn scaled(people: usize, seed: u64, calls_per_window: u32, extra_clients: &[(&str, &str)]) -> World {
        let limits = MarketoLimits { calls_per_window, window: Duration::from_secs(1), ..MarketoLimits::default() };
        let marketo = MarketoConfig {
            limits,
            additional_clients: extra_clients.iter().map(|(i, s)| (i.to_string(), s.to_string())).collect(),
            ..MarketoConfig::default()
        };
        Self::start(people, seed, marketo, SalesforceConfig::default()).await
    }

    /// Requests both emulators have seen so far.
    pub fn calls(&self) -> usize {
        self.marketo.call_log().len() + self.salesforce.call_log().len()
    }

    /// What the mirror must hold ([`crate::oracle`]).
    pub fn oracle(&self) -> Oracle {
        oracle(&self.marketo)
    }

    /// The opportunities given in Salesforce only whose person is still the contact they were
    /// given to (so the mirror must have them).
    fn expected_opportunities(&self, oracle: &Oracle) -> Vec<(i64, String)> {
        self.salesforce_only
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(id, contact, _)| {
                oracle.get(id).is_some_and(|f| f.get("sfdcContactId") == Some(&Some(contact.clone())))
            })
            .map(|(id, _, opp)| (*id, opp.clone()))
            .collect()
    }

    /// Every difference between the store's mirror and the oracle, the opportunities given in
    /// Salesforce only included.
    pub async fn mirror_diff(&self, store: &dyn Store) -> MirrorDiff {
        let oracle = self.oracle();
        let mirror = mirror(store).await;
        mirror_diff(&oracle, &mirror, &self.expected_opportunities(&oracle))
    }

    /// Changes every kind of thing about a few people in Marketo (seeded): renames, a
    /// disqualification, a qualification, a deletion, a merge, a conversion, a new person; and
    /// in Salesforce only, a new open opportunity on a contact that had none.
    pub fn mutate(&self, rng: &mut Rng, round: u32) {
        let taken = |id: &i64| {
            self.salesforce_only.lock().unwrap_or_else(PoisonError::into_inner).iter().any(|(o, _, _)| o == id)
        };
        let without: Vec<(i64, String)> = self
            .seed
            .people
            .iter()
            .filter(|p| p.has_owner() && p.sf_opportunity_id.is_none() && self.marketo.lead(p.marketo_id).is_some())
            .filter_map(|p| p.sf_contact_id.clone().map(|c| (p.marketo_id, c)))
            .filter(|(id, _)| !taken(id))
            .collect();
        if !without.is_empty() {
            // Picked by round, not from `rng`: the other seeded choices stay as they were.
            let (id, contact) = without[round as usize % without.len()].clone();
            let opp = self
                .salesforce
                .insert(
                    "Opportunity",
                    obj(json!({"Name": format!("Crash deal {round}"), "StageName": "Prospecting", "CloseDate": "2027-06-01"})),
                )
                .unwrap();
            self.salesforce
                .insert(
                    "OpportunityContactRole",
                    obj(json!({"OpportunityId": opp, "ContactId": contact, "IsPrimary": true})),
                )
                .unwrap();
            self.salesforce_only.lock().unwrap_or_else(PoisonError::into_inner).push((
                id,
                SalesforceId::parse(&contact).unwrap().as_str().to_string(),
                opp,
            ));
        }
        let leads = self.marketo.leads();
        let qualified: Vec<i64> = self.oracle().keys().copied().collect();
        let owner = self.seed.users[0].id.clone();
        for _ in 0..4 {
            let id = rng.pick(&qualified);
            self.marketo.update_lead(id, obj(json!({"firstName": format!("Renamed {round}-{id}")})));
        }
        self.marketo.update_lead(rng.pick(&qualified), obj(json!({"sfdcLeadOwnerId": null})));
        let unqualified: Vec<i64> = leads
            .iter()
            .filter_map(|l| l.get("id").and_then(Value::as_i64))
            .filter(|id| !qualified.contains(id))
            .collect();
        if !unqualified.is_empty() {
            // Marketo learns of a new Salesforce lead: it exists in Salesforce too.
            let id = rng.pick(&unqualified);
            let lead = self
                .salesforce
                .insert(
                    "Lead",
                    obj(json!({"LastName": format!("Qualified {round}"), "Company": "Acme", "OwnerId": owner})),
                )
                .unwrap();
            self.marketo
                .update_lead(id, obj(json!({"sfdcType": "Lead", "sfdcLeadId": lead, "sfdcLeadOwnerId": owner})));
        }
        self.marketo.delete_lead(rng.pick(&qualified));
        let (winner, loser) = (rng.pick(&qualified), rng.pick(&qualified));
        if winner != loser && self.marketo.lead(winner).is_some() && self.marketo.lead(loser).is_some() {
            self.marketo.merge_leads(winner, &[loser]);
        }
        let email = format!("new{round}@example.com");
        let contact = self
            .salesforce
            .insert("Contact", obj(json!({"LastName": format!("Person {round}"), "Email": email, "OwnerId": owner})))
            .unwrap();
        self.marketo.create_lead(obj(json!({
            "firstName": "New", "lastName": format!("Person {round}"), "email": email,
            "sfdcType": "Contact", "sfdcContactId": contact, "sfdcLeadOwnerId": owner
        })));
    }

    /// Stops both emulators.
    pub async fn shutdown(&self) {
        self.marketo.clone().shutdown().await;
        self.salesforce.clone().shutdown().await;
    }
}

#[cfg(feature = "connectors")]
impl World {
    /// A Marketo connector builder pointed at the emulator with its credentials (the test adds
    /// limits, timeouts, retries).
    pub fn marketo_builder(&self) -> salesync_marketo::MarketoClientBuilder {
        salesync_marketo::MarketoClient::builder()
            .base_url(self.marketo.base_url())
            .client_id(self.marketo.client_id())
            .client_secret(self.marketo.client_secret())
    }

    /// A Salesforce connector builder pointed at the emulator with its credentials.
    pub fn salesforce_builder(&self) -> salesync_salesforce::SalesforceClientBuilder {
        salesync_salesforce::SalesforceClient::builder()
            .login_url(self.salesforce.base_url())
            .client_id(self.salesforce.client_id())
            .client_secret(self.salesforce.client_secret())
    }

    /// A Marketo connector on the emulator, with the connector's defaults.
    pub fn marketo_client(&self) -> std::sync::Arc<dyn salesync_core::ports::marketo::MarketoApi> {
        std::sync::Arc::new(self.marketo_builder().build().expect("a Marketo client"))
    }

    /// A Salesforce connector on the emulator, with the connector's defaults.
    pub fn salesforce_client(&self) -> std::sync::Arc<dyn salesync_core::ports::salesforce::SalesforceApi> {
        std::sync::Arc::new(self.salesforce_builder().build().expect("a Salesforce client"))
    }
}

#[cfg(feature = "delivery")]
impl World {
    /// A dispatcher on `store` for recording outbound items from the test (its connectors point
    /// at the emulators; recording never calls them).
    pub fn dispatcher(&self, store: std::sync::Arc<dyn Store>) -> salesync_delivery::Dispatcher {
        salesync_delivery::Dispatcher::builder()
            .marketo(self.marketo_client())
            .salesforce(self.salesforce_client())
            .store(store)
            .settings(salesync_delivery::DeliverySettings::default())
            .build()
            .expect("a dispatcher")
    }
}

/// Asserts the store's mirror equals the world's oracle field by field (and holds the
/// opportunities given in Salesforce only by [`World::mutate`]).
pub async fn assert_mirror_matches(world: &World, store: &dyn Store) {
    let diff = world.mirror_diff(store).await;
    assert!(diff.is_empty(), "{diff}");
}
