//! Read-only access to the mirror for hosts.

use std::sync::Arc;

use salesync_core::ports::store::Tombstone;
use salesync_core::{person::Person, sfid::SalesforceId};

use crate::Result;
use crate::store::EngineStore;

/// Where a page of people starts and how long it is (people are ordered by Marketo id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Return people with a Marketo id above this one (`None`: from the start).
    pub after: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

impl PageRequest {
    /// The first page of `limit` people.
    pub fn first(limit: u32) -> Self {
        Self { after: None, limit }
    }
}

/// A page of people and the request for the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonPage {
    /// The people, by Marketo id ascending.
    pub people: Vec<Person>,
    /// The next page, or `None` when this one was the last.
    pub next: Option<PageRequest>,
}

impl PersonPage {
    fn new(people: Vec<Person>, req: PageRequest) -> Self {
        let next = match people.last() {
            Some(last) if req.limit > 0 && people.len() as u64 >= u64::from(req.limit) => {
                Some(PageRequest { after: Some(last.marketo_id), limit: req.limit })
            }
            _ => None,
        };
        Self { people, next }
    }
}

/// Read-only view of the mirror: thin wrappers over the store's reads. Hosts never write
/// people; only the sync does.
#[derive(Debug, Clone)]
pub struct MirrorReader {
    store: Arc<dyn EngineStore>,
}

impl MirrorReader {
    pub(crate) fn new(store: Arc<dyn EngineStore>) -> Self {
        Self { store }
    }

    /// One person by Marketo id.
    pub async fn get(&self, marketo_id: i64) -> Result<Option<Person>> {
        Ok(self.store.person(marketo_id).await?)
    }

    /// Every person with this email (case-insensitive); duplicates are all returned.
    pub async fn by_email(&self, email: &str) -> Result<Vec<Person>> {
        Ok(self.store.people_by_email(email).await?)
    }

    /// People whose Salesforce lead or contact id is `id`.
    pub async fn by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
        Ok(self.store.people_by_salesforce_id(id).await?)
    }

    /// A page of the people a sales owner owns.
    pub async fn by_owner(&self, owner: &SalesforceId, page: PageRequest) -> Result<PersonPage> {
        let people = self.store.people_by_owner(owner, page.after, page.limit).await?;
        Ok(PersonPage::new(people, page))
    }

    /// A page of all people.
    pub async fn list(&self, page: PageRequest) -> Result<PersonPage> {
        let people = self.store.list_people(page.after, page.limit).await?;
        Ok(PersonPage::new(people, page))
    }

    /// Number of people in the mirror.
    pub async fn count(&self) -> Result<u64> {
        Ok(self.store.count_people().await?)
    }

    /// Why and when a person left the mirror.
    pub async fn tombstone(&self, marketo_id: i64) -> Result<Option<Tombstone>> {
        Ok(self.store.tombstone(marketo_id).await?)
    }
}
