//! Small builders the tests share: a sample sales activity, a sample person, JSON objects, and a
//! seeded generator.

use salesync_core::activity::{CallDetails, CallStatus, CampaignRef, SalesActivity, SalesActivityKind};
use salesync_core::person::{OpportunityRef, Person, SalesforceType};
use salesync_core::sfid::SalesforceId;
use serde_json::{Map, Value};

/// A sales activity of `kind` with every attribute any kind needs (subject, link, campaign, call,
/// bounce), occurred five minutes ago, by `rep@example.com`. Tests override what they care about
/// with `SalesActivity { subject: …, ..activity(…) }`.
pub fn activity(id: impl Into<String>, marketo_id: i64, kind: SalesActivityKind) -> SalesActivity {
    SalesActivity {
        actor_email: Some("rep@example.com".into()),
        subject: Some(format!("About {}", kind.slug())),
        link: Some("https://example.com/pricing".into()),
        campaign: Some(CampaignRef { name: Some("Q4 outreach".into()), ..CampaignRef::default() }),
        call: Some(completed_call(90)),
        bounce_details: Some("mailbox full".into()),
        ..SalesActivity::new(id, marketo_id, kind, chrono::Utc::now() - chrono::Duration::minutes(5))
    }
}

/// A completed call of `duration_secs`, nothing else known.
pub fn completed_call(duration_secs: u32) -> CallDetails {
    CallDetails {
        status: CallStatus::Completed,
        duration_secs: Some(duration_secs),
        phone_number: None,
        recording_url: None,
        answered_by: None,
        outcome: None,
        reason: None,
    }
}

/// A qualified Salesforce contact without Salesforce record ids (owner `0055g00000AbCdE`), with
/// a name, a company, an email and a phone; its opportunity is unresolved. Tests override fields
/// with `Person { first_name: …, ..person(…) }`.
pub fn person(marketo_id: i64, email: &str) -> Person {
    Person {
        marketo_id,
        first_name: Some("Ada".into()),
        last_name: Some(format!("Lovelace {marketo_id}")),
        salesforce_contact_id: None,
        salesforce_lead_id: None,
        salesforce_account_id: None,
        salesforce_opportunity: OpportunityRef::Unresolved,
        company: Some("Acme Corp".into()),
        title: None,
        email: Some(email.into()),
        phone: Some("+1 415 555 0100".into()),
        linkedin_url: None,
        source: None,
        salesforce_type: SalesforceType::Contact,
        owner_id: SalesforceId::parse("0055g00000AbCdE").expect("a valid user id"),
        marketo_updated_at: None,
        mirror_updated_at: chrono::DateTime::from_timestamp(1_760_000_000, 0).expect("a valid timestamp"),
    }
}

/// The JSON object `v` (as the emulators take fields); panics when `v` is not an object.
pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not a JSON object: {other}"),
    }
}

/// A deterministic generator (SplitMix64) for seeded kill points and choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// One of `from` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.range(0, from.len() as u64 - 1) as usize]
    }
}
