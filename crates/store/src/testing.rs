//! Store decorators for tests (feature `testing`): wrap any store (`S: Store`, a
//! [`MemoryStore`](crate::MemoryStore) most often) to make it fail, lose a lease or tell what it
//! was asked, without writing a fake store.
//!
//! - [`FaultyStore`] fails the n-th call of a chosen method with a backend error.
//! - [`LeaseThief`] lets another holder take a named lease after the n-th applied page.
//! - [`RecordingStore`] counts the calls of each method, keeps the applied pages and the leases
//!   granted through it.
//!
//! They stack (`RecordingStore<LeaseThief<FaultyStore<MemoryStore>>>`), and since an
//! `Arc<S>` is a store too, a test can keep an `Arc` of each layer it needs to reach. With no
//! fault armed they forward every method unchanged (the conformance suite runs through them).
//! [`MirrorStore::shadow`] is forwarded as is: calls on the shadow are not decorated.
//!
//! **Unstable**, like [`conformance`](crate::conformance): for tests only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use salesync_core::activity::{AdminSettings, ReminderTask, UnsubscribeState};
use salesync_core::person::Person;
use salesync_core::ports::store::{
    ApplyCounts, Checkpoint, CheckpointStore, Finished, InboundBatch, InboundStore, InstanceBinding, LeaseStore,
    MirrorPage, MirrorStore, OutboxCounts, OutboxItem, OutboxState, OutboxStore, Recording, ReminderStore,
    SettingsStore, ShadowStore, Store, StreamId, Target, Tombstone,
};
use salesync_core::sfid::SalesforceId;
use salesync_core::{Error, Result};

/// A method of the store traits, to count its calls or to make one fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each variant is the method of the same name
pub enum Method {
    BindInstance,
    ApplyPage,
    Person,
    PeopleByIds,
    PeopleByEmail,
    PeopleBySalesforceId,
    PeopleByOwner,
    ListPeople,
    CountPeople,
    Tombstone,
    Shadow,
    Checkpoint,
    PutCheckpoint,
    Record,
    Claim,
    Finish,
    OutboxItem,
    OutboxItems,
    OutboxCounts,
    Requeue,
    Reminder,
    ReminderBySalesforceId,
    RemindersFor,
    PutReminder,
    SetReminderTaskId,
    Unsubscribe,
    ApplyInbound,
    Settings,
    PutSettings,
    TryLease,
    ReleaseLease,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The decorators' own books stay consistent whatever panicked while one was held.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a decorator does around the calls it forwards (each default does nothing).
#[async_trait]
trait Hooks: Send + Sync {
    /// Before a call: an error is the call's answer, and the inner store is not called.
    fn enter(&self, _method: Method) -> Result<()> {
        Ok(())
    }

    /// Whether [`page_applied`](Self::page_applied) is given the page (cloned before the inner
    /// store takes it).
    fn keeps_pages(&self) -> bool {
        false
    }

    /// After the inner store applied a page stamped `at`.
    async fn page_applied(&self, _page: Option<MirrorPage>, _at: DateTime<Utc>) -> Result<()> {
        Ok(())
    }

    /// The book of the leases granted and released through this decorator, if it keeps one.
    fn lease_book(&self) -> Option<&LeaseBook> {
        None
    }

    /// Whether [`MirrorStore::shadow`] answers `None` whatever the inner store keeps.
    fn hides_shadow(&self) -> bool {
        false
    }
}

fn until(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

/// Implements every store trait for a decorator `$ty<S>` (field `inner: S`) by forwarding each
/// call to `inner` between its [`Hooks`].
macro_rules! decorate {
    ($ty:ident) => {
        #[async_trait]
        impl<S: Store> InstanceBinding for $ty<S> {
            async fn bind_instance(&self, instance: &str) -> Result<()> {
                self.enter(Method::BindInstance)?;
                self.inner.bind_instance(instance).await
            }
        }

        #[async_trait]
        impl<S: Store> MirrorStore for $ty<S> {
            async fn apply_page(&self, page: MirrorPage) -> Result<ApplyCounts> {
                self.enter(Method::ApplyPage)?;
                let at = page.at;
                let kept = self.keeps_pages().then(|| page.clone());
                let counts = self.inner.apply_page(page).await?;
                self.page_applied(kept, at).await?;
                Ok(counts)
            }
            async fn person(&self, marketo_id: i64) -> Result<Option<Person>> {
                self.enter(Method::Person)?;
                self.inner.person(marketo_id).await
            }
            async fn people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>> {
                self.enter(Method::PeopleByIds)?;
                self.inner.people_by_ids(ids).await
            }
            async fn people_by_email(&self, email: &str) -> Result<Vec<Person>> {
                self.enter(Method::PeopleByEmail)?;
                self.inner.people_by_email(email).await
            }
            async fn people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
                self.enter(Method::PeopleBySalesforceId)?;
                self.inner.people_by_salesforce_id(id).await
            }
            async fn people_by_owner(
                &self,
                owner: &SalesforceId,
                after: Option<i64>,
                limit: u32,
            ) -> Result<Vec<Person>> {
                self.enter(Method::PeopleByOwner)?;
                self.inner.people_by_owner(owner, after, limit).await
            }
            async fn list_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
                self.enter(Method::ListPeople)?;
                self.inner.list_people(after, limit).await
            }
            async fn count_people(&self) -> Result<u64> {
                self.enter(Method::CountPeople)?;
                self.inner.count_people().await
            }
            async fn tombstone(&self, marketo_id: i64) -> Result<Option<Tombstone>> {
                self.enter(Method::Tombstone)?;
                self.inner.tombstone(marketo_id).await
            }
            fn shadow(&self) -> Option<Arc<dyn ShadowStore>> {
                // Not fallible: a fault armed on `Shadow` answers `None` (no shadow copy).
                if self.enter(Method::Shadow).is_err() || self.hides_shadow() {
                    return None;
                }
                self.inner.shadow()
            }
        }

        #[async_trait]
        impl<S: Store> CheckpointStore for $ty<S> {
            async fn checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>> {
                self.enter(Method::Checkpoint)?;
                self.inner.checkpoint(stream).await
            }
            async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
                self.enter(Method::PutCheckpoint)?;
                self.inner.put_checkpoint(checkpoint).await
            }
        }

        #[async_trait]
        impl<S: Store> OutboxStore for $ty<S> {
            async fn record(&self, recording: Recording) -> Result<Vec<i64>> {
                self.enter(Method::Record)?;
                self.inner.record(recording).await
            }
            async fn claim(
                &self,
                target: Target,
                limit: u32,
                worker: &str,
                lease: Duration,
                now: DateTime<Utc>,
            ) -> Result<Vec<OutboxItem>> {
                self.enter(Method::Claim)?;
                self.inner.claim(target, limit, worker, lease, now).await
            }
            async fn finish(&self, finished: Vec<Finished>, now: DateTime<Utc>) -> Result<()> {
                self.enter(Method::Finish)?;
                self.inner.finish(finished, now).await
            }
            async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>> {
                self.enter(Method::OutboxItem)?;
                self.inner.outbox_item(id).await
            }
            async fn outbox_items(&self, state: OutboxState, limit: u32) -> Result<Vec<OutboxItem>> {
                self.enter(Method::OutboxItems)?;
                self.inner.outbox_items(state, limit).await
            }
            async fn outbox_counts(&self) -> Result<OutboxCounts> {
                self.enter(Method::OutboxCounts)?;
                self.inner.outbox_counts().await
            }
            async fn requeue(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64> {
                self.enter(Method::Requeue)?;
                self.inner.requeue(ids, now).await
            }
        }

        #[async_trait]
        impl<S: Store> ReminderStore for $ty<S> {
            async fn reminder(&self, id: &str) -> Result<Option<ReminderTask>> {
                self.enter(Method::Reminder)?;
                self.inner.reminder(id).await
            }
            async fn reminder_by_salesforce_id(&self, task_id: &SalesforceId) -> Result<Option<ReminderTask>> {
                self.enter(Method::ReminderBySalesforceId)?;
                self.inner.reminder_by_salesforce_id(task_id).await
            }
            async fn reminders_for(&self, marketo_id: i64) -> Result<Vec<ReminderTask>> {
                self.enter(Method::RemindersFor)?;
                self.inner.reminders_for(marketo_id).await
            }
            async fn put_reminder(&self, task: ReminderTask) -> Result<()> {
                self.enter(Method::PutReminder)?;
                self.inner.put_reminder(task).await
            }
            async fn set_reminder_task_id(&self, id: &str, task_id: &SalesforceId) -> Result<bool> {
                self.enter(Method::SetReminderTaskId)?;
                self.inner.set_reminder_task_id(id, task_id).await
            }
        }

        #[async_trait]
        impl<S: Store> InboundStore for $ty<S> {
            async fn unsubscribe(&self, marketo_id: i64) -> Result<Option<UnsubscribeState>> {
                self.enter(Method::Unsubscribe)?;
                self.inner.unsubscribe(marketo_id).await
            }
            async fn apply_inbound(&self, batch: InboundBatch) -> Result<()> {
                self.enter(Method::ApplyInbound)?;
                self.inner.apply_inbound(batch).await
            }
        }

        #[async_trait]
        impl<S: Store> SettingsStore for $ty<S> {
            async fn settings(&self) -> Result<AdminSettings> {
                self.enter(Method::Settings)?;
                self.inner.settings().await
            }
            async fn put_settings(&self, settings: AdminSettings) -> Result<()> {
                self.enter(Method::PutSettings)?;
                self.inner.put_settings(settings).await
            }
        }

        #[async_trait]
        impl<S: Store> LeaseStore for $ty<S> {
            async fn try_lease(&self, name: &str, holder: &str, ttl: Duration, now: DateTime<Utc>) -> Result<bool> {
                self.enter(Method::TryLease)?;
                let granted = self.inner.try_lease(name, holder, ttl, now).await?;
                if let Some(book) = self.lease_book() {
                    book.answered(name, holder, until(now, ttl), granted);
                }
                Ok(granted)
            }
            async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
                self.enter(Method::ReleaseLease)?;
                self.inner.release_lease(name, holder).await?;
                if let Some(book) = self.lease_book() {
                    book.released(name, holder);
                }
                Ok(())
            }
        }

        impl<S> $ty<S> {
            /// The decorated store.
            pub fn inner(&self) -> &S {
                &self.inner
            }
        }
    };
}

/// The leases granted and released through a decorator: holder and expiry by name, as the
/// store's `try_lease` / `release_lease` answered them.
#[derive(Debug, Default)]
struct LeaseBook(Mutex<HashMap<String, (String, DateTime<Utc>)>>);

impl LeaseBook {
    fn answered(&self, name: &str, holder: &str, until: DateTime<Utc>, granted: bool) {
        if granted {
            lock(&self.0).insert(name.to_string(), (holder.to_string(), until));
        }
    }

    fn released(&self, name: &str, holder: &str) {
        let mut book = lock(&self.0);
        if book.get(name).is_some_and(|(h, _)| h == holder) {
            book.remove(name);
        }
    }

    fn get(&self, name: &str) -> Option<(String, DateTime<Utc>)> {
        lock(&self.0).get(name).cloned()
    }
}

// ------------------------------------------------------------------------------------ faults

/// Fails chosen calls with `Error::Backend { backend: "faulty", .. }`, without calling the
/// inner store (so a failed write writes nothing), and can hide the inner store's shadow copy;
/// every other call is forwarded.
#[derive(Debug, Default)]
pub struct FaultyStore<S> {
    inner: S,
    /// Armed faults: calls of the method still to let through before the failing one.
    armed: Mutex<HashMap<Method, usize>>,
    /// `shadow()` answers `None`.
    no_shadow: AtomicBool,
}

impl<S> FaultyStore<S> {
    /// Wraps `inner` with no fault armed.
    pub fn new(inner: S) -> Self {
        Self { inner, armed: Mutex::default(), no_shadow: AtomicBool::new(false) }
    }

    /// Makes [`MirrorStore::shadow`] answer `None` from now on (`hide` true), as a store that
    /// keeps no shadow copy, or the inner store's shadow again (`hide` false).
    pub fn hide_shadow(&self, hide: bool) {
        self.no_shadow.store(hide, Ordering::SeqCst);
    }

    /// Makes the `nth` call of `method` from now (1 = the next one) fail, once; the calls
    /// before and after it are forwarded. Arming a method again replaces its fault; `nth` 0
    /// disarms it.
    pub fn fail_nth(&self, method: Method, nth: usize) {
        let mut armed = lock(&self.armed);
        match nth {
            0 => armed.remove(&method),
            n => armed.insert(method, n - 1),
        };
    }
}

impl<S: Send + Sync> Hooks for FaultyStore<S> {
    fn enter(&self, method: Method) -> Result<()> {
        let mut armed = lock(&self.armed);
        match armed.get_mut(&method) {
            Some(0) => {
                armed.remove(&method);
                Err(Error::Backend { backend: "faulty", source: format!("injected failure of {method:?}").into() })
            }
            Some(before) => {
                *before -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn hides_shadow(&self) -> bool {
        self.no_shadow.load(Ordering::SeqCst)
    }
}

decorate!(FaultyStore);

// ------------------------------------------------------------------------------- lease thief

/// A lease theft armed on a [`LeaseThief`].
#[derive(Debug)]
struct Theft {
    name: String,
    thief: String,
    ttl: Duration,
    /// Applied pages still to let through before the theft.
    pages_left: usize,
}

/// Plays another process that takes a named lease: after the n-th page applied through it, the
/// lease's holder (as granted through this decorator) loses it and `thief` holds it for `ttl`
/// from the page's time. Every call is forwarded.
#[derive(Debug, Default)]
pub struct LeaseThief<S> {
    inner: S,
    theft: Mutex<Option<Theft>>,
    stolen: Mutex<bool>,
    book: LeaseBook,
}

impl<S> LeaseThief<S> {
    /// Wraps `inner` with no theft armed.
    pub fn new(inner: S) -> Self {
        Self { inner, theft: Mutex::default(), stolen: Mutex::default(), book: LeaseBook::default() }
    }

    /// After the `pages`-th page applied from now (1 = the next one), `thief` takes the lease
    /// `name` for `ttl`. Replaces a theft armed before.
    pub fn steal_after(&self, name: &str, pages: usize, thief: &str, ttl: Duration) {
        *lock(&self.theft) =
            Some(Theft { name: name.to_string(), thief: thief.to_string(), ttl, pages_left: pages.saturating_sub(1) });
    }

    /// True once an armed theft took its lease.
    pub fn stolen(&self) -> bool {
        *lock(&self.stolen)
    }
}

#[async_trait]
impl<S: Store> Hooks for LeaseThief<S> {
    async fn page_applied(&self, _page: Option<MirrorPage>, at: DateTime<Utc>) -> Result<()> {
        let theft = {
            let mut armed = lock(&self.theft);
            match armed.as_mut() {
                Some(t) if t.pages_left > 0 => {
                    t.pages_left -= 1;
                    None
                }
                Some(_) => armed.take(),
                None => None,
            }
        };
        let Some(theft) = theft else { return Ok(()) };
        if let Some((holder, _)) = self.book.get(&theft.name) {
            self.inner.release_lease(&theft.name, &holder).await?;
            self.book.released(&theft.name, &holder);
        }
        let granted = self.inner.try_lease(&theft.name, &theft.thief, theft.ttl, at).await?;
        self.book.answered(&theft.name, &theft.thief, until(at, theft.ttl), granted);
        *lock(&self.stolen) = granted;
        Ok(())
    }

    fn lease_book(&self) -> Option<&LeaseBook> {
        Some(&self.book)
    }
}

decorate!(LeaseThief);

// --------------------------------------------------------------------------------- recording

/// Counts the calls of each method (every call, whatever it answered), keeps the pages the
/// inner store applied, in order, and the leases granted through it. Every call is forwarded.
#[derive(Debug, Default)]
pub struct RecordingStore<S> {
    inner: S,
    calls: Mutex<HashMap<Method, usize>>,
    pages: Mutex<Vec<MirrorPage>>,
    book: LeaseBook,
}

impl<S> RecordingStore<S> {
    /// Wraps `inner` with nothing recorded.
    pub fn new(inner: S) -> Self {
        Self { inner, calls: Mutex::default(), pages: Mutex::default(), book: LeaseBook::default() }
    }

    /// How many times `method` was called.
    pub fn calls(&self, method: Method) -> usize {
        lock(&self.calls).get(&method).copied().unwrap_or(0)
    }

    /// The pages applied, in order (pages that failed are left out).
    pub fn pages(&self) -> Vec<MirrorPage> {
        lock(&self.pages).clone()
    }

    /// The holder of a lease and its expiry (`now + ttl` of the `try_lease` that granted it), as
    /// granted and released through this decorator; `None` when it was released or never
    /// granted here. An expired lease stays until another holder takes it.
    pub fn lease(&self, name: &str) -> Option<(String, DateTime<Utc>)> {
        self.book.get(name)
    }
}

#[async_trait]
impl<S: Send + Sync> Hooks for RecordingStore<S> {
    fn enter(&self, method: Method) -> Result<()> {
        *lock(&self.calls).entry(method).or_default() += 1;
        Ok(())
    }

    fn keeps_pages(&self) -> bool {
        true
    }

    async fn page_applied(&self, page: Option<MirrorPage>, _at: DateTime<Utc>) -> Result<()> {
        lock(&self.pages).extend(page);
        Ok(())
    }

    fn lease_book(&self) -> Option<&LeaseBook> {
        Some(&self.book)
    }
}

decorate!(RecordingStore);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::MemoryStore;
    use crate::conformance::{self, person, t};
    use salesync_core::mirror::Decision;

    type Stack = RecordingStore<LeaseThief<FaultyStore<MemoryStore>>>;

    fn stack() -> Stack {
        RecordingStore::new(LeaseThief::new(FaultyStore::new(MemoryStore::new())))
    }

    async fn run(check: conformance::Check) {
        check(Arc::new(stack())).await;
    }

    // The whole suite through the three decorators, no fault armed: they forward faithfully.
    crate::conformance_tests!(run);

    fn page_of(id: i64) -> MirrorPage {
        MirrorPage {
            decisions: vec![Decision::Insert { person: person(id, "a@x.com", 1) }],
            checkpoint: None,
            at: t(0),
        }
    }

    #[tokio::test]
    async fn a_fault_fails_the_nth_call_once_and_writes_nothing() {
        let store = stack();
        let faults = store.inner().inner();
        faults.fail_nth(Method::ApplyPage, 2);
        store.apply_page(page_of(1)).await.unwrap();
        let err = store.apply_page(page_of(2)).await.unwrap_err();
        assert!(matches!(err, Error::Backend { backend: "faulty", .. }), "{err}");
        store.apply_page(page_of(3)).await.unwrap();
        assert_eq!(store.count_people().await.unwrap(), 2);
        assert!(store.person(2).await.unwrap().is_none());
        assert_eq!(store.calls(Method::ApplyPage), 3);
        assert_eq!(store.pages().iter().map(|p| p.decisions[0].marketo_id()).collect::<Vec<_>>(), vec![1, 3]);
        faults.fail_nth(Method::Record, 1);
        faults.fail_nth(Method::Record, 0);
        store.record(Recording::default()).await.unwrap();
        assert!(store.shadow().is_some());
        faults.hide_shadow(true);
        assert!(store.shadow().is_none());
        faults.hide_shadow(false);
        faults.fail_nth(Method::Shadow, 1);
        assert!(store.shadow().is_none(), "a fault on shadow() is no shadow");
        assert!(store.shadow().is_some());
    }

    #[tokio::test]
    async fn a_thief_takes_the_lease_after_the_nth_page() {
        let store = stack();
        let ttl = Duration::from_secs(60);
        store.inner().steal_after("pull", 2, "thief", Duration::from_secs(3600));
        assert!(store.try_lease("pull", "me", ttl, t(0)).await.unwrap());
        store.apply_page(page_of(1)).await.unwrap();
        assert!(!store.inner().stolen());
        assert!(store.try_lease("pull", "me", ttl, t(1)).await.unwrap(), "still mine after one page");
        store.apply_page(page_of(2)).await.unwrap();
        assert!(store.inner().stolen());
        assert!(!store.try_lease("pull", "me", ttl, t(2)).await.unwrap(), "taken");
        assert_eq!(store.inner().book.get("pull"), Some(("thief".to_string(), t(3600))));
        assert_eq!(store.lease("pull"), Some(("me".to_string(), t(61))), "the recorder sees only its own calls");
        assert_eq!(store.calls(Method::TryLease), 3);
        store.release_lease("pull", "me").await.unwrap();
        assert!(store.lease("pull").is_none());
    }
}
