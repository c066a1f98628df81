//! The access-token cache: one token per client (and its clones), refreshed ahead of expiry,
//! fetched by one caller at a time.

use std::future::Future;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::MkError;

/// A token as handed to a request: its value and the generation to invalidate on 601/602.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: SecretString,
    pub generation: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("value", &"[redacted]").field("generation", &self.generation).finish()
    }
}

struct Cached {
    token: Token,
    refresh_at: Instant,
}

/// When to fetch a fresh token, given the `expires_in` of the one just fetched.
///
/// Normally `early` before expiry. Marketo hands out the *same* token with its remaining lifetime
/// until it expires, so a token that already has less than twice `early` left is kept until it
/// actually expires (a 602 then triggers the refresh) instead of being re-fetched on every call.
pub(crate) fn refresh_deadline(fetched_at: Instant, expires_in: Duration, early: Duration) -> Instant {
    if expires_in > early * 2 { fetched_at + (expires_in - early) } else { fetched_at + expires_in }
}

/// The cache. Holding its lock while fetching makes concurrent callers share one identity call.
pub(crate) struct TokenCache {
    state: Mutex<Option<Cached>>,
    early: Duration,
    next_generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").field("early", &self.early).finish_non_exhaustive()
    }
}

impl TokenCache {
    pub(crate) fn new(early: Duration) -> Self {
        Self { state: Mutex::new(None), early, next_generation: std::sync::atomic::AtomicU64::new(1) }
    }

    /// The cached token, or a fresh one from `fetch` (which returns the token and its `expires_in`).
    pub(crate) async fn get<F, Fut>(&self, fetch: F) -> Result<Token, MkError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(SecretString, Duration), MkError>>,
    {
        let mut st = self.state.lock().await;
        if let Some(c) = st.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let (value, expires_in) = fetch().await?;
        let now = Instant::now();
        let generation = self.next_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = Token { value, generation };
        *st = Some(Cached { token: token.clone(), refresh_at: refresh_deadline(now, expires_in, self.early) });
        Ok(token)
    }

    /// Forgets the rejected token: the cached one if it is that generation or the same value.
    ///
    /// A newer token fetched meanwhile stays, unless Marketo handed the rejected value back
    /// (it re-issues a token until it expires): retrying with it would only be rejected again.
    pub(crate) async fn invalidate(&self, rejected: &Token) {
        let mut st = self.state.lock().await;
        if st.as_ref().is_some_and(|c| {
            c.token.generation == rejected.generation || c.token.value.expose_secret() == rejected.value.expose_secret()
        }) {
            *st = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn fetcher(
        calls: Arc<AtomicUsize>,
        ttl: u64,
    ) -> impl Fn() -> std::future::Ready<Result<(SecretString, Duration), MkError>> {
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok((SecretString::from(format!("tok-{n}")), Duration::from_secs(ttl))))
        }
    }

    #[test]
    fn deadlines() {
        let t0 = Instant::now();
        let early = Duration::from_secs(60);
        assert_eq!(refresh_deadline(t0, Duration::from_secs(3599), early), t0 + Duration::from_secs(3539));
        assert_eq!(refresh_deadline(t0, Duration::from_secs(100), early), t0 + Duration::from_secs(100));
    }

    #[tokio::test(start_paused = true)]
    async fn cached_then_refreshed_early() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = TokenCache::new(Duration::from_secs(60));
        let f = fetcher(calls.clone(), 3600);
        let a = cache.get(&f).await.unwrap();
        let b = cache.get(&f).await.unwrap();
        assert_eq!(a.value.expose_secret(), b.value.expose_secret());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(3541)).await;
        let c = cache.get(&f).await.unwrap();
        assert_eq!(c.value.expose_secret(), "tok-1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_only_the_stale_generation() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = TokenCache::new(Duration::from_secs(60));
        let f = fetcher(calls.clone(), 3600);
        let a = cache.get(&f).await.unwrap();
        cache.invalidate(&a).await;
        let b = cache.get(&f).await.unwrap();
        assert_ne!(a.generation, b.generation);
        // A late invalidation of the old generation keeps the new token.
        cache.invalidate(&a).await;
        let c = cache.get(&f).await.unwrap();
        assert_eq!(b.generation, c.generation);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// Regression (chaos, short tokens): a token re-fetched in its last second came back as the
    /// same value under a new generation; a request rejected with it (601) invalidated only its
    /// own generation, retried with the very same value and failed as "reconnect required".
    #[tokio::test(start_paused = true)]
    async fn invalidate_the_same_value_under_a_newer_generation() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = TokenCache::new(Duration::from_secs(60));
        let same = || std::future::ready(Ok((SecretString::from("tok-same".to_string()), Duration::from_secs(1))));
        let a = cache.get(same).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let b = cache.get(same).await.unwrap();
        assert_ne!(a.generation, b.generation);
        cache.invalidate(&a).await;
        let f = fetcher(calls.clone(), 3600);
        let c = cache.get(&f).await.unwrap();
        assert_eq!(c.value.expose_secret(), "tok-0", "the rejected value is not handed out again");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = Token { value: SecretString::from("s3cret".to_string()), generation: 1 };
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
