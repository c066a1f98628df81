//! The ports the engine talks to: Marketo, Salesforce and the store.
//!
//! All are object-safe `async_trait` traits held as `Arc<dyn …>`. With the `mock` feature,
//! mockall generates `MockMarketoApi`, `MockSalesforceApi` and `MockStore` for other crates' tests.

pub mod marketo;
pub mod salesforce;
pub mod store;

use serde::{Deserialize, Serialize};

/// One page of a paged listing, with the token that resumes after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items of this page (may be empty even when `more` is true, as Marketo does).
    pub items: Vec<T>,
    /// The token to fetch the next page, or to resume later (Marketo always returns one).
    pub next_token: Option<String>,
    /// True when more pages follow.
    pub more: bool,
}

impl<T> Page<T> {
    /// A final page.
    pub fn last(items: Vec<T>, next_token: Option<String>) -> Self {
        Self { items, next_token, more: false }
    }
}
