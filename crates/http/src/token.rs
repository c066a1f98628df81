//! The access-token cache mechanics both connectors share: one token per client (and its
//! clones), fetched by one caller at a time, kept until its refresh time or until a request
//! reports it rejected. How a token is obtained (the OAuth wire exchange) and when it is due for
//! a refresh stay with each connector.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// A token as handed to a request: its value (a secret, or a session holding one) and the
/// generation to name when the service rejects it ([`TokenCache::invalidate`]). `Debug` never
/// shows the value.
pub struct Token<T> {
    value: Arc<T>,
    generation: u64,
}

impl<T> Token<T> {
    /// The value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The generation: 1 for the first token a cache fetched, one more for each further one.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl<T> Clone for Token<T> {
    fn clone(&self) -> Self {
        Self { value: Arc::clone(&self.value), generation: self.generation }
    }
}

impl<T> std::fmt::Debug for Token<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("value", &"[redacted]").field("generation", &self.generation).finish()
    }
}

/// A token just fetched: its value and how long it may be used before a fresh one is fetched
/// (`None`: until a request reports it rejected).
#[derive(Debug)]
pub struct Fresh<T> {
    /// The value.
    pub value: T,
    /// How long from now it is handed out before it is fetched again.
    pub refresh_in: Option<Duration>,
}

struct Cached<T> {
    token: Token<T>,
    refresh_at: Option<Instant>,
}

/// The cache. Its lock is held while a token is fetched, so concurrent callers share one token
/// request.
pub struct TokenCache<T> {
    state: Mutex<Option<Cached<T>>>,
    next_generation: AtomicU64,
}

impl<T> Default for TokenCache<T> {
    fn default() -> Self {
        Self { state: Mutex::new(None), next_generation: AtomicU64::new(1) }
    }
}

impl<T> std::fmt::Debug for TokenCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

impl<T> TokenCache<T> {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached token while it is not due for a refresh, else a fresh one from `fetch` (whose
    /// error is handed back as is, and nothing is cached).
    pub async fn get<E, Fut>(&self, fetch: impl FnOnce() -> Fut) -> Result<Token<T>, E>
    where
        Fut: Future<Output = Result<Fresh<T>, E>>,
    {
        let mut st = self.state.lock().await;
        if let Some(c) = st.as_ref()
            && c.refresh_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(c.token.clone());
        }
        let fresh = fetch().await?;
        let refresh_at = fresh.refresh_in.map(|d| Instant::now() + d);
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let token = Token { value: Arc::new(fresh.value), generation };
        *st = Some(Cached { token: token.clone(), refresh_at });
        Ok(token)
    }

    /// Forgets the rejected token: the cached one if it is that generation, or if `same` says
    /// it holds the same value (a service that hands a token out again until it expires). A newer
    /// token fetched meanwhile stays otherwise.
    pub async fn invalidate(&self, rejected: &Token<T>, same: impl Fn(&T, &T) -> bool) {
        let mut st = self.state.lock().await;
        if st
            .as_ref()
            .is_some_and(|c| c.token.generation == rejected.generation || same(c.token.value(), rejected.value()))
        {
            *st = None;
        }
    }

    /// Forgets the cached token, whichever it is: the next [`get`](Self::get) fetches one.
    pub async fn clear(&self) {
        *self.state.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    type Result<T> = std::result::Result<T, &'static str>;
    type Fetched = std::future::Ready<Result<Fresh<String>>>;

    fn fetcher(calls: Arc<AtomicUsize>, secs: u64) -> impl Fn() -> Fetched {
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Fresh { value: format!("tok-{n}"), refresh_in: Some(Duration::from_secs(secs)) }))
        }
    }

    fn never_same(_: &String, _: &String) -> bool {
        false
    }

    /// A cache and a fetcher counting its calls, each token due for a refresh after 3540 s.
    fn counted() -> (Arc<AtomicUsize>, TokenCache<String>, impl Fn() -> Fetched) {
        let calls = Arc::new(AtomicUsize::new(0));
        (calls.clone(), TokenCache::new(), fetcher(calls, 3540))
    }

    #[tokio::test(start_paused = true)]
    async fn cached_until_the_refresh_time() {
        let (calls, cache, f) = counted();
        let a = cache.get(&f).await.unwrap();
        let b = cache.get(&f).await.unwrap();
        assert_eq!((a.value(), a.generation()), (b.value(), b.generation()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(3541)).await;
        let c = cache.get(&f).await.unwrap();
        assert_eq!(c.value(), "tok-1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_refresh_time_kept_until_cleared_and_errors_are_not_cached() {
        let cache = TokenCache::new();
        let e = cache.get(|| std::future::ready(Result::<Fresh<String>>::Err("down"))).await.unwrap_err();
        assert_eq!(e, "down");
        let forever = || std::future::ready(Result::Ok(Fresh { value: "s".to_string(), refresh_in: None }));
        let a = cache.get(forever).await.unwrap();
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert_eq!(cache.get(forever).await.unwrap().generation(), a.generation());
        cache.clear().await;
        assert_ne!(cache.get(forever).await.unwrap().generation(), a.generation());
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_only_the_stale_generation() {
        let (calls, cache, f) = counted();
        let a = cache.get(&f).await.unwrap();
        cache.invalidate(&a, never_same).await;
        let b = cache.get(&f).await.unwrap();
        assert_ne!(a.generation(), b.generation());
        // A late invalidation of the old generation keeps the new token.
        cache.invalidate(&a, never_same).await;
        let c = cache.get(&f).await.unwrap();
        assert_eq!(b.generation(), c.generation());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A token re-fetched in its last second can come back as the same value under a new
    /// generation: a request rejected with the older one forgets it too.
    #[tokio::test(start_paused = true)]
    async fn invalidate_the_same_value_under_a_newer_generation() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = TokenCache::new();
        let same = || {
            std::future::ready(Result::Ok(Fresh {
                value: "tok-same".to_string(),
                refresh_in: Some(Duration::from_secs(1)),
            }))
        };
        let a = cache.get(same).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let b = cache.get(same).await.unwrap();
        assert_ne!(a.generation(), b.generation());
        cache.invalidate(&a, |x, y| x == y).await;
        let f = fetcher(calls.clone(), 3540);
        let c = cache.get(&f).await.unwrap();
        assert_eq!(c.value(), "tok-0", "the rejected value is not handed out again");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = Token { value: Arc::new("s3cret".to_string()), generation: 1 };
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
