//! A deterministic generator of realistic people, shared by both emulators so that the Marketo lead
//! database and the Salesforce org describe the same world.
//!
//! Proportions (over many people): ~15% have no Salesforce owner (Marketo-only leads that never
//! synced to Salesforce), ~3% share an email with another record, ~40% are Salesforce Leads and the
//! rest Contacts; contacts have an Account and about half an Opportunity (with a contact role);
//! some people miss phone, title or LinkedIn URL; names include non-ASCII letters.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::sfid;

/// Salesforce object type of a seeded person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedSfType {
    /// A Salesforce Lead.
    Lead,
    /// A Salesforce Contact.
    Contact,
}

/// A seeded Salesforce user (a sales owner).
#[derive(Debug, Clone, PartialEq)]
pub struct SeedUser {
    /// 18-char User id (005…).
    pub id: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Email / username.
    pub email: String,
}

/// One seeded person, as both systems know it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedPerson {
    /// Marketo lead id.
    pub marketo_id: i64,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Email (may be shared with another person).
    pub email: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Job title.
    pub title: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// LinkedIn profile URL.
    pub linkedin_url: Option<String>,
    /// Marketo lead source ("Person Source").
    pub lead_source: Option<String>,
    /// Salesforce type, `None` for Marketo-only people.
    pub sf_type: Option<SeedSfType>,
    /// Salesforce Lead id (18 chars) when a Lead.
    pub sf_lead_id: Option<String>,
    /// Salesforce Contact id when a Contact.
    pub sf_contact_id: Option<String>,
    /// Salesforce Account id (contacts).
    pub sf_account_id: Option<String>,
    /// Salesforce Opportunity id (some contacts, through an OpportunityContactRole).
    pub sf_opportunity_id: Option<String>,
    /// Salesforce owner (User id), `None` for people without a sales owner.
    pub owner_id: Option<String>,
    /// Whether the person opted out of email.
    pub unsubscribed: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update time.
    pub updated_at: DateTime<Utc>,
}

impl SeedPerson {
    /// True when the person qualifies for salesync's mirror (a Lead or Contact with an owner).
    pub fn has_owner(&self) -> bool {
        self.sf_type.is_some() && self.owner_id.as_deref().is_some_and(|o| !o.is_empty())
    }
}

/// The seeded world.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedWorld {
    /// Sales users (owners).
    pub users: Vec<SeedUser>,
    /// People, Marketo ids ascending from 1001.
    pub people: Vec<SeedPerson>,
}

const FIRST: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Zoë",
    "José",
    "Søren",
    "Łukasz",
    "Chloé",
    "Björn",
    "Anaïs",
    "Jürgen",
    "Renée",
    "Nuño",
    "美咲",
    "Олег",
    "Αλέξης",
    "Ines",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Dijkstra",
    "Müller",
    "García",
    "Ødegaard",
    "Kowalski",
    "Dubois",
    "Nyström",
    "Le Guin",
    "Schäfer",
    "O'Brien",
    "Núñez",
    "山田",
    "Иванов",
    "Παπαδόπουλος",
    "de la Cruz",
];
const COMPANIES: &[&str] = &[
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark Industries",
    "Wayne Enterprises",
    "Hooli",
    "Vandelay Import/Export",
    "Société Générale d'Exemple",
    "Müller & Söhne GmbH",
    "Tyrell",
    "Cyberdyne",
];
const TITLES: &[&str] = &["CTO", "VP Sales", "Head of Marketing", "Engineer", "Procurement Manager", "CEO", "Analyst"];
const SOURCES: &[&str] = &["Web", "Trade Show", "Webinar", "Partner", "Salesforce", "List Import"];

/// Generates `n` people and their owners from `seed`. Same inputs, same world.
pub fn generate(n: usize, seed: u64) -> SeedWorld {
    let mut rng = SmallRng::seed_from_u64(seed);
    let user_count = (n / 200).clamp(3, 50);
    let users: Vec<SeedUser> = (0..user_count)
        .map(|i| {
            let first = FIRST[i % FIRST.len()].to_string();
            let last = LAST[(i * 7) % LAST.len()].to_string();
            SeedUser {
                id: sfid::mint("005", i as u64 + 1),
                email: format!("rep{i}@sales.example.com"),
                first_name: first,
                last_name: last,
            }
        })
        .collect();
    let base = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single().unwrap_or_default();
    let mut people: Vec<SeedPerson> = Vec::with_capacity(n);
    for i in 0..n {
        let marketo_id = 1001 + i as i64;
        let first = FIRST[rng.gen_range(0..FIRST.len())].to_string();
        let last = LAST[rng.gen_range(0..LAST.len())].to_string();
        let company = COMPANIES[rng.gen_range(0..COMPANIES.len())].to_string();
        let slug: String = format!("{first}.{last}")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect::<String>()
            .to_ascii_lowercase();
        let mut email = Some(format!(
            "{}{}@{}.example.com",
            if slug.len() > 1 { slug.clone() } else { "person".into() },
            i,
            company
                .split_whitespace()
                .next()
                .unwrap_or("co")
                .to_ascii_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "")
        ));
        // ~3% share an email with an earlier record.
        if i > 0 && rng.gen_bool(0.03) {
            let j = rng.gen_range(0..people.len());
            email = people[j].email.clone();
        }
        // Marketo ids grow with creation time: spread creations over ~600 days in id order.
        let step = (60 * 24 * 600 / n.max(1) as i64).max(1);
        let created_at = base + Duration::minutes(i as i64 * step + rng.gen_range(0..step));
        let updated_at = created_at + Duration::minutes(rng.gen_range(0..60 * 24 * 30));
        let has_owner = !rng.gen_bool(0.15);
        let (sf_type, lead_id, contact_id, account_id, opp_id, owner) = if has_owner {
            let owner = users[rng.gen_range(0..users.len())].id.clone();
            if rng.gen_bool(0.4) {
                (Some(SeedSfType::Lead), Some(sfid::mint("00Q", i as u64 + 1)), None, None, None, Some(owner))
            } else {
                let acct = sfid::mint("001", (i as u64) / 3 + 1);
                let opp = rng.gen_bool(0.5).then(|| sfid::mint("006", i as u64 + 1));
                (Some(SeedSfType::Contact), None, Some(sfid::mint("003", i as u64 + 1)), Some(acct), opp, Some(owner))
            }
        } else {
            (None, None, None, None, None, None)
        };
        people.push(SeedPerson {
            marketo_id,
            first_name: (!rng.gen_bool(0.01)).then_some(first.clone()),
            last_name: Some(last.clone()),
            email,
            company: Some(company),
            title: (!rng.gen_bool(0.2)).then(|| TITLES[rng.gen_range(0..TITLES.len())].to_string()),
            phone: (!rng.gen_bool(0.25)).then(|| format!("+1 415 555 {:04}", rng.gen_range(0..10_000))),
            linkedin_url: (!rng.gen_bool(0.3))
                .then(|| format!("https://www.linkedin.com/in/{}-{}", slug.replace('.', "-"), i)),
            lead_source: Some(SOURCES[rng.gen_range(0..SOURCES.len())].to_string()),
            sf_type,
            sf_lead_id: lead_id,
            sf_contact_id: contact_id,
            sf_account_id: account_id,
            sf_opportunity_id: opp_id,
            owner_id: owner,
            unsubscribed: rng.gen_bool(0.02),
            created_at,
            updated_at,
        });
    }
    SeedWorld { users, people }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_proportioned() {
        let a = generate(5_000, 7);
        assert_eq!(a, generate(5_000, 7));
        assert_ne!(a.people, generate(5_000, 8).people);
        let unowned = a.people.iter().filter(|p| !p.has_owner()).count() as f64 / 5_000.0;
        assert!((0.12..0.18).contains(&unowned), "unowned share {unowned}");
        let mut emails = std::collections::HashMap::new();
        for p in &a.people {
            if let Some(e) = &p.email {
                *emails.entry(e.clone()).or_insert(0) += 1;
            }
        }
        let shared = emails.values().filter(|c| **c > 1).count();
        assert!(shared > 50, "only {shared} shared emails");
        assert!(a.people.iter().any(|p| p.first_name.as_deref().is_some_and(|f| !f.is_ascii())));
        assert!(a.people.windows(2).all(|w| w[0].created_at <= w[1].created_at), "ids follow creation time");
        for p in &a.people {
            assert_eq!(p.sf_lead_id.is_some(), p.sf_type == Some(SeedSfType::Lead));
            assert_eq!(p.sf_contact_id.is_some(), p.sf_type == Some(SeedSfType::Contact));
        }
    }
}
