//! The client and its one request loop: token, limits, send, classify, retry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT_ENCODING, CONTENT_TYPE, HeaderValue, RANGE};
use reqwest::{Method, Response};
use salesync_http::{ReadError, html_instead_of, read_capped};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use url::Url;

use crate::classify::{Backoff, Failure, Verdict, classify};
use crate::config::{ConfigKey, MarketoClientBuilder, RetryConfig, Settings};
use crate::envelope::{Envelope, Parsed, parse_body, probe_error};
use crate::error::MkError;
use crate::limits::{Admission, Answer, DailyBudget, Limits, Shared, next_central_midnight};

/// Longest URI sent as is; longer GETs go as `POST …?_method=GET` with a form body (Marketo answers
/// 414 beyond 8 KB).
pub(crate) const MAX_URI: usize = 8 * 1024;
/// Largest JSON response body read into memory.
pub(crate) const MAX_JSON_BODY: usize = 64 * 1024 * 1024;
/// 606 and 615 answers one request may get before it fails as rate limited (the waits grow with
/// each; see the `limits` module).
const LIMIT_ANSWERS: u32 = 10;
/// Largest error body read (identity, 404 texts).
pub(crate) const MAX_SMALL_BODY: usize = 1024 * 1024;

/// A Marketo Engage client for one instance: `Send + Sync`, cheap to clone; clones share the
/// token cache, the rate and concurrency limiters and the daily budget.
///
/// ```no_run
/// use std::time::Duration;
/// use salesync_marketo::{MarketoClient, RetryConfig};
/// use salesync_core::ports::marketo::MarketoApi;
///
/// # async fn demo() -> salesync_core::Result<()> {
/// let client = MarketoClient::builder()
///     .base_url("https://123-ABC-456.mktorest.com")
///     .client_id("3f2…")
///     .client_secret("s3cret")
///     // Share the instance politely with other integrations.
///     .rate_limit(50, Duration::from_secs(20))
///     .max_concurrent(5)
///     .daily_budget(20_000)
///     .retry(RetryConfig { max_attempts: 5, base_delay: Duration::from_millis(500), max_delay: Duration::from_secs(30) })
///     .timeout(Duration::from_secs(120))
///     .build()?;
/// let schema = client.lead_schema().await?;
/// println!("{} lead fields", schema.fields.len());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MarketoClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub http: reqwest::Client,
    pub base: Url,
    pub client_id: String,
    pub client_secret: SecretString,
    pub tokens: salesync_http::TokenCache<SecretString>,
    pub limits: Limits,
    pub retry: RetryConfig,
    pub timeout: Duration,
    /// How long before expiry the access token is refreshed.
    pub token_refresh_early: Duration,
}

impl std::fmt::Debug for MarketoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.inner;
        f.debug_struct("MarketoClient")
            .field("base_url", &i.base.as_str())
            .field("client_id", &i.client_id)
            .field("client_secret", &"[redacted]")
            .field("max_concurrent", &i.limits.shared.max_concurrent())
            .field("rate_window", &i.limits.shared.window())
            .field("retry", &i.retry)
            .field("timeout", &i.timeout)
            .finish_non_exhaustive()
    }
}

impl MarketoClientBuilder {
    /// Validates the settings and builds the client (no network call is made).
    pub fn build(self) -> Result<MarketoClient, salesync_core::Error> {
        Ok(MarketoClient::new(self.settings()?))
    }
}

/// Whether a request may be repeated after it may have reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Safety {
    /// Reads, and writes whose repetition is harmless.
    Idempotent,
    /// Repeated only when the failure proves nothing was applied.
    Unsafe,
}

/// One request, reusable across attempts.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub op: &'static str,
    pub method: Method,
    pub url: Url,
    pub query: Vec<(&'static str, String)>,
    pub json: Option<Bytes>,
    pub safety: Safety,
    pub timeout: Option<Duration>,
    /// A bulk file download from this byte offset (no total timeout, no compression).
    pub file_from: Option<u64>,
}

impl Req {
    pub(crate) fn get(op: &'static str, url: Url, query: Vec<(&'static str, String)>) -> Self {
        Req {
            op,
            method: Method::GET,
            url,
            query,
            json: None,
            safety: Safety::Idempotent,
            timeout: None,
            file_from: None,
        }
    }

    pub(crate) fn post(op: &'static str, url: Url, json: Option<Bytes>, safety: Safety) -> Self {
        Req { op, method: Method::POST, url, query: Vec::new(), json, safety, timeout: None, file_from: None }
    }
}

/// What came back from one attempt.
pub(crate) enum Received {
    /// A body read into memory.
    Body { status: u16, body: Vec<u8> },
    /// A streaming response (bulk file) holding its in-flight place.
    Stream { resp: Response, permit: Admission },
}

/// How a received response is to be treated.
pub(crate) enum Interp<T> {
    Done(T),
    Act {
        action: Verdict<Failure>,
        code: String,
        message: String,
    },
    Fail(MkError),
    /// A 2xx body that is not the JSON it should be (cut short, garbled). A read asks again
    /// within its retry budget, as for a broken connection; a write's outcome stays unknown.
    Unreadable(MkError),
}

pub(crate) use salesync_http::looks_like_html;

/// At most 200 characters of a body, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    salesync_http::snippet(body, 400, 200)
}

/// Marketo's daily quota (607, the bulk export quota) is used up: it resets at midnight US Central.
fn quota(detail: String) -> MkError {
    MkError::Quota { detail, resets_at: next_central_midnight(chrono::Utc::now()) }
}

/// The typed error of a final failure.
fn failure_error(f: Failure, code: String, message: String) -> MkError {
    match f {
        Failure::QuotaExhausted => quota(format!("{code}: {message}")),
        Failure::Unauthenticated => MkError::Unauthenticated { detail: format!("{code}: {message}") },
        Failure::AccessDenied => MkError::AccessDenied { code, message },
        Failure::Rejected | Failure::NotFound => MkError::Rejected { code, message },
        Failure::BulkQueue if message.to_ascii_lowercase().contains("quota") => quota(format!("{code}: {message}")),
        Failure::BulkQueue => MkError::RateLimited { code, retry_after: None },
    }
}

/// The JSON interpretation of a response.
pub(crate) fn interpret_json<T: DeserializeOwned>(status: u16, body: &[u8]) -> Interp<Envelope<T>> {
    if (200..300).contains(&status) {
        match parse_body::<T>(status, body) {
            Parsed::Ok(env) => Interp::Done(env),
            Parsed::Failed { action, code, message } => Interp::Act { action, code, message },
            Parsed::Malformed(_) if looks_like_html(body) => {
                Interp::Fail(MkError::protocol(html_instead_of(status, "JSON", &snippet(body))))
            }
            Parsed::Malformed(d) => Interp::Unreadable(MkError::protocol(format!("HTTP {status}: {d}"))),
        }
    } else {
        interpret_error_status(status, body)
    }
}

/// A non-2xx response: the envelope code when the body has one, else the HTTP status.
pub(crate) fn interpret_error_status<T>(status: u16, body: &[u8]) -> Interp<T> {
    let (code, message) = match probe_error(body) {
        Some(e) => (Some(e.code), e.message),
        None => (None, snippet(body)),
    };
    let action = classify(status, code.as_deref());
    Interp::Act { action, code: code.unwrap_or_else(|| status.to_string()), message }
}

impl MarketoClient {
    /// A builder with the defaults (100 calls per 20 s, 10 in flight, 5 attempts).
    pub fn builder() -> MarketoClientBuilder {
        MarketoClientBuilder::default()
    }

    /// A client from `SALESYNC_MARKETO_URL`, `SALESYNC_MARKETO_CLIENT_ID`,
    /// `SALESYNC_MARKETO_CLIENT_SECRET` and optionally `SALESYNC_MARKETO_RATE_CALLS`,
    /// `SALESYNC_MARKETO_RATE_WINDOW_SECS`, `SALESYNC_MARKETO_MAX_CONCURRENT` and
    /// `SALESYNC_MARKETO_DAILY_BUDGET` and `SALESYNC_MARKETO_ALLOW_INSECURE_HTTP` (or
    /// `SALESYNC_ALLOW_INSECURE_HTTP`); see [`ConfigKey`]. A missing required variable is an
    /// `Error::Config` naming it.
    pub fn from_env() -> Result<MarketoClient, salesync_core::Error> {
        Self::builder_from_lookup(|name| std::env::var(name).ok())?.build()
    }

    /// A builder filled from a variable lookup (the environment in [`from_env`](Self::from_env)),
    /// one [`MarketoClientBuilder::with_config`] per variable set; further settings (an injected
    /// [`http_client`](MarketoClientBuilder::http_client), …) can follow before `build`.
    pub fn builder_from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<MarketoClientBuilder, salesync_core::Error> {
        salesync_http::builder_from_lookup(lookup, Self::builder(), |b, key: ConfigKey, value| {
            b.with_config(key, value)
        })
    }

    /// The client of validated settings: one token cache, limiter and budget for it and its clones.
    fn new(s: Settings) -> Self {
        let (calls, window) = s.rate;
        let limits = Limits {
            shared: Shared::new(calls, window, s.max_concurrent),
            budget: s.daily_budget.map(DailyBudget::new),
        };
        MarketoClient {
            inner: Arc::new(Inner {
                http: s.http,
                base: s.base,
                client_id: s.client_id,
                client_secret: s.client_secret,
                tokens: salesync_http::TokenCache::new(),
                token_refresh_early: s.token_refresh_early,
                limits,
                retry: s.retry,
                timeout: s.timeout,
            }),
        }
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url, MkError> {
        let mut url = self.inner.base.clone();
        {
            let mut p = url.path_segments_mut().map_err(|()| MkError::config("base_url", "cannot be a base URL"))?;
            p.pop_if_empty();
            p.extend(segments);
        }
        Ok(url)
    }

    async fn send(&self, req: &Req, token: &salesync_http::Token<SecretString>) -> reqwest::Result<Response> {
        let qs = if req.query.is_empty() {
            String::new()
        } else {
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(req.query.iter().map(|(k, v)| (*k, v.as_str())))
                .finish()
        };
        let mut url = req.url.clone();
        let mut rb = if req.method == Method::GET && url.as_str().len() + 1 + qs.len() > MAX_URI {
            url.set_query(Some("_method=GET"));
            self.inner.http.post(url).header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(qs)
        } else {
            if !qs.is_empty() {
                url.set_query(Some(&qs));
            }
            let mut rb = self.inner.http.request(req.method.clone(), url);
            if let Some(body) = &req.json {
                rb = rb.header(CONTENT_TYPE, "application/json").body(body.clone());
            }
            rb
        };
        rb = rb.bearer_auth(token.value().expose_secret());
        match req.file_from {
            Some(offset) => {
                rb = rb.header(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
                if offset > 0 {
                    rb = rb.header(RANGE, format!("bytes={offset}-"));
                }
            }
            None => rb = rb.timeout(req.timeout.unwrap_or(self.inner.timeout)),
        }
        rb.send().await
    }

    /// The request loop. `stream_ok` picks responses handed over unread (bulk files);
    /// `interp` turns a response into a value, a retry decision or an error.
    pub(crate) async fn run<T>(
        &self,
        req: &Req,
        stream_ok: impl Fn(&Response) -> bool,
        interp: impl Fn(Received) -> Interp<T>,
    ) -> Result<T, MkError> {
        let retry = self.inner.retry;
        let limits = &self.inner.limits;
        let mut attempt: u32 = 0;
        // Answers of the shared limits (606/615) have their own, larger allowance: they prove
        // nothing was done and the wait grows with each one.
        let mut limit_answers: u32 = 0;
        let mut reauths = 0u32;
        loop {
            attempt += 1;
            let token = self.token().await?;
            if let Some(budget) = &limits.budget {
                budget.charge(chrono::Utc::now())?;
            }
            let mut admission = limits.shared.acquire().await;
            tracing::debug!(op = req.op, method = %req.method, path = req.url.path(), attempt, "Marketo call");
            let resp = match self.send(req, &token).await {
                Ok(r) => r,
                Err(e) => {
                    drop(admission);
                    let e = e.without_url();
                    // A connect error proves nothing was sent.
                    if !e.is_connect() && req.safety == Safety::Unsafe {
                        return Err(MkError::OutcomeUnknown { operation: req.op, cause: e.to_string() });
                    }
                    if attempt >= retry.max_attempts {
                        return Err(MkError::Transport { operation: req.op, source: e });
                    }
                    let delay = retry.delay(attempt);
                    tracing::warn!(op = req.op, error = %e, attempt, delay_ms = delay.as_millis() as u64, "Marketo call failed; retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            // The server has seen the call: the slot's cool-down starts now.
            admission.sent();
            if stream_ok(&resp) {
                admission.answered(Answer::Through);
                match interp(Received::Stream { resp, permit: admission }) {
                    Interp::Done(v) => return Ok(v),
                    Interp::Fail(e) | Interp::Unreadable(e) => return Err(e),
                    Interp::Act { code, message, .. } => {
                        return Err(MkError::protocol(format!("{}: streamed answer {code}: {message}", req.op)));
                    }
                }
            }
            let status = resp.status().as_u16();
            let received = match read_capped(resp, MAX_JSON_BODY).await {
                Ok(body) => Received::Body { status, body },
                Err(ReadError::TooLarge { cap }) => {
                    return Err(MkError::protocol(format!("{} response body exceeds {cap} bytes", req.op)));
                }
                Err(ReadError::Transport(e)) => {
                    drop(admission);
                    let e = e.without_url();
                    if req.safety == Safety::Unsafe {
                        return Err(MkError::OutcomeUnknown { operation: req.op, cause: e.to_string() });
                    }
                    if attempt >= retry.max_attempts {
                        return Err(MkError::Transport { operation: req.op, source: e });
                    }
                    let delay = retry.delay(attempt);
                    tracing::warn!(op = req.op, error = %e, attempt, "Marketo response broke off; retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let interpreted = interp(received);
            admission.answered(match &interpreted {
                Interp::Act { action: Verdict::Retry(Backoff::RateWindow), .. } => Answer::RateFull,
                Interp::Act { action: Verdict::Retry(Backoff::Concurrency), .. } => Answer::ConcurrencyFull,
                _ => Answer::Through,
            });
            drop(admission);
            let (action, code, message) = match interpreted {
                Interp::Done(v) => return Ok(v),
                Interp::Fail(e) => return Err(e),
                Interp::Unreadable(e) if req.safety == Safety::Idempotent && attempt < retry.max_attempts => {
                    let delay = retry.delay(attempt);
                    tracing::warn!(op = req.op, error = %e, attempt, "Marketo answer unreadable; asking again");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Interp::Unreadable(e) => return Err(e),
                Interp::Act { action, code, message } => (action, code, message),
            };
            match action {
                Verdict::Proceed => return Err(MkError::protocol(format!("{}: response without a value", req.op))),
                Verdict::Reauthenticate => {
                    // 602 again with a fresh token is the same token handed back with a second
                    // left (Marketo reuses it until expiry): transient, not a reconnect.
                    let expired = code.trim() == "602";
                    if reauths >= if expired { 2 } else { 1 } {
                        let detail = format!("{code} {message} (again, with a freshly fetched token)");
                        return Err(if expired {
                            MkError::Unavailable { code, message: detail }
                        } else {
                            MkError::Unauthenticated { detail }
                        });
                    }
                    tracing::info!(op = req.op, code = %code, "Marketo access token rejected; re-authenticating");
                    reauths += 1;
                    self.forget_token(&token).await;
                    attempt -= 1;
                }
                Verdict::Retry(kind) => {
                    if req.safety == Safety::Unsafe && !action.proves_not_applied() {
                        return Err(MkError::OutcomeUnknown { operation: req.op, cause: format!("{code}: {message}") });
                    }
                    let exhausted = match kind {
                        Backoff::RateWindow | Backoff::Concurrency => {
                            // The attempt is the limits' allowance's, not the request's.
                            attempt -= 1;
                            limit_answers += 1;
                            limit_answers >= LIMIT_ANSWERS
                        }
                        Backoff::Exponential => attempt >= retry.max_attempts,
                    };
                    if exhausted {
                        return Err(match kind {
                            Backoff::RateWindow => {
                                MkError::RateLimited { code, retry_after: Some(limits.shared.window()) }
                            }
                            Backoff::Concurrency => MkError::RateLimited { code, retry_after: Some(retry.base_delay) },
                            Backoff::Exponential => MkError::Unavailable { code, message },
                        });
                    }
                    let delay = match kind {
                        // The limiter pauses every caller briefly, longer while 606s continue.
                        Backoff::RateWindow => Duration::ZERO,
                        Backoff::Concurrency => retry.delay(limit_answers),
                        Backoff::Exponential => retry.delay(attempt),
                    };
                    tracing::debug!(op = req.op, code = %code, attempt, delay_ms = delay.as_millis() as u64, "Marketo asked to retry");
                    tokio::time::sleep(delay).await;
                }
                Verdict::Fail(f) => return Err(failure_error(f, code, message)),
            }
        }
    }

    /// One JSON call: the parsed successful envelope, or a typed error.
    pub(crate) async fn call<T: DeserializeOwned>(&self, req: Req) -> Result<Envelope<T>, MkError> {
        let env = self
            .run(
                &req,
                |_| false,
                |rec| match rec {
                    Received::Body { status, body } => interpret_json::<T>(status, &body),
                    Received::Stream { .. } => Interp::Fail(MkError::protocol("unexpected streaming response")),
                },
            )
            .await?;
        match &env.warnings {
            Some(serde_json::Value::Array(w)) if !w.is_empty() => {
                tracing::debug!(op = req.op, request_id = ?env.request_id, warnings = ?w, "Marketo warnings");
            }
            _ => tracing::trace!(op = req.op, request_id = ?env.request_id, "Marketo call succeeded"),
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_typed_errors() {
        assert!(matches!(
            failure_error(Failure::QuotaExhausted, "607".into(), "Daily quota reached".into()),
            MkError::Quota { .. }
        ));
        assert!(matches!(
            failure_error(Failure::BulkQueue, "1029".into(), "Export daily quota exceeded".into()),
            MkError::Quota { .. }
        ));
        assert!(matches!(
            failure_error(Failure::BulkQueue, "1029".into(), "Too many jobs in queue".into()),
            MkError::RateLimited { .. }
        ));
        assert!(matches!(failure_error(Failure::AccessDenied, "603".into(), "".into()), MkError::AccessDenied { .. }));
        let e: salesync_core::Error =
            failure_error(Failure::Rejected, "1035".into(), "Unsupported filter type".into()).into();
        assert!(matches!(e, salesync_core::Error::Rejected { ref code, .. } if code == "1035"));
    }

    #[test]
    fn non_2xx_bodies() {
        let Interp::Act { action, code, .. } = interpret_error_status::<()>(413, b"Request Entity Too Large") else {
            panic!()
        };
        assert_eq!(action, Verdict::Fail(Failure::Rejected));
        assert_eq!(code, "413");
        let Interp::Act { action, code, .. } = interpret_error_status::<()>(503, b"") else { panic!() };
        assert_eq!(action, Verdict::Retry(Backoff::Exponential));
        assert_eq!(code, "503");
    }
}
