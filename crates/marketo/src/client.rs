//! The client and its one request loop: token, limits, send, classify, retry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT_ENCODING, CONTENT_TYPE, HeaderValue, RANGE};
use reqwest::{Method, Response};
use salesync_http::{ReadError, html_instead_of, read_capped};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::classify::{Action, Backoff, Failure, classify, proves_not_applied};
use crate::config::RetryConfig;
use crate::envelope::{Envelope, Parsed, parse_body, probe_error};
use crate::error::MkError;
use crate::limiter::{Admission, Answer, Limits};
use crate::token::{Token, TokenCache};

/// Longest URI sent as is; longer GETs go as `POST …?_method=GET` with a form body (Marketo answers
/// 414 beyond 8 KB).
pub(crate) const MAX_URI: usize = 8 * 1024;
/// Largest JSON response body read into memory.
pub(crate) const MAX_JSON_BODY: usize = 64 * 1024 * 1024;
/// 606 and 615 answers one request may get before it fails as rate limited (the waits grow with
/// each; see the `limiter` module).
const LIMIT_ANSWERS: u32 = 10;
/// Largest error body read (identity, 404 texts).
const MAX_SMALL_BODY: usize = 1024 * 1024;

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
    pub tokens: TokenCache,
    pub limits: Limits,
    pub retry: RetryConfig,
    pub timeout: Duration,
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
        action: Action,
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

/// The typed error of a final failure.
fn failure_error(f: Failure, code: String, message: String) -> MkError {
    match f {
        Failure::QuotaExhausted => MkError::Quota { detail: format!("{code}: {message}") },
        Failure::Unauthenticated => MkError::Unauthenticated { detail: format!("{code}: {message}") },
        Failure::AccessDenied => MkError::AccessDenied { code, message },
        Failure::Rejected | Failure::NotFound => MkError::Rejected { code, message },
        Failure::BulkQueue if message.to_ascii_lowercase().contains("quota") => {
            MkError::Quota { detail: format!("{code}: {message}") }
        }
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

#[derive(Deserialize)]
struct IdentityBody {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

impl MarketoClient {
    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url, MkError> {
        let mut url = self.inner.base.clone();
        {
            let mut p = url.path_segments_mut().map_err(|()| MkError::config("base_url", "cannot be a base URL"))?;
            p.pop_if_empty();
            p.extend(segments);
        }
        Ok(url)
    }

    async fn token(&self) -> Result<Token, MkError> {
        self.inner.tokens.get(|| self.fetch_token()).await
    }

    /// `GET /identity/oauth/token` with retries on transient failures. Not rate limited (identity
    /// calls do not count against Marketo's limits). The URL carries the secret: never logged.
    async fn fetch_token(&self) -> Result<(SecretString, Duration), MkError> {
        let mut url = self.url(&["identity", "oauth", "token"])?;
        url.query_pairs_mut()
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.inner.client_id)
            .append_pair("client_secret", self.inner.client_secret.expose_secret());
        let retry = self.inner.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            tracing::debug!(attempt, "fetching Marketo access token");
            let sent = self.inner.http.get(url.clone()).timeout(self.inner.timeout).send().await;
            let (status, body) = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match read_capped(resp, MAX_SMALL_BODY).await {
                        Ok(b) => (status, b),
                        Err(ReadError::TooLarge { .. }) => {
                            return Err(MkError::protocol("identity response too large"));
                        }
                        Err(ReadError::Transport(e)) if attempt < retry.max_attempts => {
                            tracing::warn!(error = %e.without_url(), attempt, "identity response failed; retrying");
                            tokio::time::sleep(retry.delay(attempt)).await;
                            continue;
                        }
                        Err(ReadError::Transport(e)) => {
                            return Err(MkError::Transport { operation: "identity", source: e.without_url() });
                        }
                    }
                }
                Err(e) if attempt < retry.max_attempts => {
                    tracing::warn!(error = %e.without_url(), attempt, "identity call failed; retrying");
                    tokio::time::sleep(retry.delay(attempt)).await;
                    continue;
                }
                Err(e) => return Err(MkError::Transport { operation: "identity", source: e.without_url() }),
            };
            match status {
                200..=299 => {
                    let parsed: IdentityBody = serde_json::from_slice(&body)
                        .map_err(|e| MkError::protocol(format!("identity response is not JSON: {e}")))?;
                    let Some(token) = parsed.access_token.filter(|t| !t.is_empty()) else {
                        if let Some(e) = probe_error(&body) {
                            return Err(MkError::Unauthenticated {
                                detail: format!("identity {}: {}", e.code, e.message),
                            });
                        }
                        return Err(MkError::protocol("identity response has no access_token"));
                    };
                    let expires_in = match parsed.expires_in {
                        Some(serde_json::Value::Number(n)) => n.as_f64(),
                        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
                        _ => None,
                    }
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| MkError::protocol("identity response has no usable expires_in"))?;
                    return Ok((SecretString::from(token), Duration::from_secs_f64(expires_in)));
                }
                400 | 401 | 403 => {
                    let detail = serde_json::from_slice::<IdentityBody>(&body)
                        .ok()
                        .map(|b| format!("{} {}", b.error.unwrap_or_default(), b.error_description.unwrap_or_default()))
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| format!("HTTP {status}"));
                    return Err(MkError::Unauthenticated {
                        detail: format!("identity rejected the credentials: {detail}"),
                    });
                }
                s if (s >= 500 || s == 429 || s == 408) && attempt < retry.max_attempts => {
                    tracing::warn!(status = s, attempt, "identity unavailable; retrying");
                    tokio::time::sleep(retry.delay(attempt)).await;
                }
                s if s >= 500 || s == 429 || s == 408 => {
                    return Err(MkError::Unavailable { code: s.to_string(), message: snippet(&body) });
                }
                s => {
                    return Err(MkError::Unauthenticated {
                        detail: format!("identity answered HTTP {s}: {}", snippet(&body)),
                    });
                }
            }
        }
    }

    async fn send(&self, req: &Req, token: &Token) -> reqwest::Result<Response> {
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
        rb = rb.bearer_auth(token.value.expose_secret());
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
                Interp::Act { action: Action::Retry(Backoff::RateWindow), .. } => Answer::RateFull,
                Interp::Act { action: Action::Retry(Backoff::Concurrency), .. } => Answer::ConcurrencyFull,
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
                Action::Proceed => return Err(MkError::protocol(format!("{}: response without a value", req.op))),
                Action::Reauth => {
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
                    self.inner.tokens.invalidate(&token).await;
                    attempt -= 1;
                }
                Action::Retry(kind) => {
                    if req.safety == Safety::Unsafe && !proves_not_applied(action) {
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
                Action::Fail(f) => return Err(failure_error(f, code, message)),
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
        assert_eq!(action, Action::Fail(Failure::Rejected));
        assert_eq!(code, "413");
        let Interp::Act { action, code, .. } = interpret_error_status::<()>(503, b"") else { panic!() };
        assert_eq!(action, Action::Retry(Backoff::Exponential));
        assert_eq!(code, "503");
    }
}
