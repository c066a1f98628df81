//! The client: session cache, the one request loop (re-auth, retries, limits), paging.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::Method;
use salesync_core::ports::Page;
use salesync_core::ports::salesforce::ApiUsage;
use salesync_core::{Error, error::Service};
use salesync_http::{ReadError, TokenCache, TransportError, html_instead_of, looks_like_html, read_capped};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use crate::classify::{Failure, Verdict, classify};
use crate::config::{ConfigKey, SalesforceClientBuilder, Settings};
use crate::error::{ApiError, protocol, to_core};
use crate::limits::{LIMIT_INFO_HEADER, LimitInfo, parse_limit_info};
use crate::soql::Soql;

/// One OAuth session: the access token and the instance it is valid for (made in `token`).
pub(crate) struct Session {
    pub(crate) token: SecretString,
    /// `instance_url` without a trailing slash.
    pub(crate) base: String,
}

pub(crate) struct Inner {
    pub(crate) s: Settings,
    /// The session, shared by the clones; replaced when Salesforce refuses it.
    pub(crate) session: TokenCache<Session>,
    /// A rotated refresh token, when the org returned one.
    pub(crate) rotated_refresh: std::sync::Mutex<Option<SecretString>>,
    limits: std::sync::Mutex<Option<LimitInfo>>,
    calls: AtomicU64,
}

/// A Salesforce REST client. Cheap to clone: clones share one session, one usage record and one
/// HTTP connection pool. `Send + Sync`.
///
/// Build it with [`SalesforceClient::builder`] or [`SalesforceClient::from_env`]; it implements
/// [`salesync_core::ports::salesforce::SalesforceApi`].
#[derive(Clone)]
pub struct SalesforceClient {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SalesforceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.inner.s;
        f.debug_struct("SalesforceClient")
            .field("login_url", &s.login_url.as_str())
            .field("client_id", &s.client_id)
            .field("grant", &if s.refresh_token.is_some() { "refresh_token" } else { "client_credentials" })
            .field("api_version", &s.api_version)
            .field("task_external_id_field", &s.task_external_id_field)
            .field("retry", &s.retry)
            .finish_non_exhaustive()
    }
}

impl SalesforceClientBuilder {
    /// Validates the settings and builds the client (no network call is made).
    pub fn build(self) -> salesync_core::Result<SalesforceClient> {
        Ok(SalesforceClient::new(self.settings()?))
    }
}

/// A successful answer.
pub(crate) struct Answer {
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// The body as JSON.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, Error> {
        from_json(&self.body).map_err(|e| protocol(format!("{what}: malformed JSON body: {e}")))
    }
}

/// Deserializes a JSON body; one that fails only on lone UTF-16 surrogate escapes (a string cut
/// inside an emoji) is read again with them as U+FFFD, so one such value does not fail its page on
/// every retry.
fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(body).or_else(|e| match salesync_core::mapping::repair_lone_surrogates(body) {
        Some(fixed) => {
            let v = serde_json::from_slice(&fixed).map_err(|_| e)?;
            tracing::warn!("salesforce: response holds lone UTF-16 surrogate escapes; read them as U+FFFD");
            Ok(v)
        }
        None => Err(e),
    })
}

/// A failed data call, before conversion into the port error.
pub(crate) enum CallError {
    /// Salesforce answered with an error body.
    Api {
        status: u16,
        error: ApiError,
        verdict: Verdict<Failure>,
        /// The call was repeated as often as the retry settings allow.
        spent: bool,
    },
    /// Anything else, already typed.
    Other(Error),
}

impl From<CallError> for Error {
    fn from(f: CallError) -> Self {
        match f {
            CallError::Api { status, error, verdict, spent } => to_core(status, &error, verdict, spent),
            CallError::Other(e) => e,
        }
    }
}

/// The first error of an error body (`[{message, errorCode, fields}]`, or one object, or anything).
pub(crate) fn parse_error_body(body: &[u8]) -> ApiError {
    if let Ok(mut v) = serde_json::from_slice::<Vec<ApiError>>(body)
        && !v.is_empty()
    {
        return v.swap_remove(0);
    }
    if let Ok(e) = serde_json::from_slice::<ApiError>(body)
        && !e.error_code.is_empty()
    {
        return e;
    }
    let text: String = String::from_utf8_lossy(body).chars().take(300).collect();
    ApiError::new("", text)
}

/// One page of a SOQL query, as Salesforce sends it. `done` and `records` are required: an answer
/// without them (a proxy's `{}`, an error object sent with 200) is not an empty last page.
#[derive(Deserialize)]
pub(crate) struct QueryPage {
    pub(crate) done: bool,
    #[serde(rename = "nextRecordsUrl", default)]
    pub(crate) next_records_url: Option<String>,
    pub(crate) records: Vec<Value>,
}

impl QueryPage {
    /// Reads a 2xx query answer.
    pub(crate) fn parse(body: &[u8]) -> Result<QueryPage, Error> {
        // serde would also read a struct from a JSON array; a query result is always an object.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(protocol(format!("query: expected a JSON object, got {:?}", snippet(body))));
        }
        from_json(body).map_err(|e| protocol(format!("query: not a query result: {e}")))
    }

    /// The port's [`Page`], mapping each record; the token is `nextRecordsUrl`.
    pub(crate) fn into_page<T>(self, map: impl Fn(&Value) -> Result<T, Error>) -> Result<Page<T>, Error> {
        let items = self.records.iter().map(map).collect::<Result<Vec<_>, _>>()?;
        let more = !self.done && self.next_records_url.is_some();
        Ok(Page { items, next_token: if more { self.next_records_url } else { None }, more })
    }
}

/// The start of a body, for messages.
fn snippet(body: &[u8]) -> String {
    salesync_http::snippet(body, 120, 120)
}

/// Where a query page comes from.
pub(crate) enum Cursor {
    /// The first page of this SOQL.
    Start(String),
    /// The first page of this SOQL through `queryAll` (soft-deleted records included).
    StartAll(String),
    /// A `nextRecordsUrl`.
    Next(String),
}

/// Checks that a page token is a `nextRecordsUrl` of this API (a path on the instance), so a
/// tampered checkpoint cannot send the bearer token elsewhere.
pub(crate) fn check_next_url(token: &str) -> Result<(), Error> {
    let ok = token.starts_with("/services/data/")
        && !token.contains("..")
        && token.chars().all(|c| c.is_ascii_graphic() && c != '#' && c != '\\');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput { field: "page_token".into(), reason: "not a Salesforce nextRecordsUrl".into() })
    }
}

impl SalesforceClient {
    /// A builder.
    pub fn builder() -> SalesforceClientBuilder {
        SalesforceClientBuilder::default()
    }

    /// A client from `SALESYNC_SALESFORCE_URL`, `SALESYNC_SALESFORCE_CLIENT_ID`,
    /// `SALESYNC_SALESFORCE_CLIENT_SECRET` and optionally `SALESYNC_SALESFORCE_REFRESH_TOKEN`,
    /// `SALESYNC_SALESFORCE_API_VERSION`, `SALESYNC_SALESFORCE_TASK_EXTERNAL_ID_FIELD` and
    /// `SALESYNC_SALESFORCE_ALLOW_INSECURE_HTTP` (or `SALESYNC_ALLOW_INSECURE_HTTP`); see
    /// [`ConfigKey`]. A missing required variable is an `Error::Config` naming it.
    pub fn from_env() -> salesync_core::Result<Self> {
        Self::builder_from_lookup(|k| std::env::var(k).ok())?.build()
    }

    /// A builder filled from a variable lookup (the environment in [`from_env`](Self::from_env)),
    /// one [`SalesforceClientBuilder::with_config`] per variable set; further settings (an
    /// injected [`http_client`](SalesforceClientBuilder::http_client), …) can follow before `build`.
    pub fn builder_from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> salesync_core::Result<SalesforceClientBuilder> {
        salesync_http::builder_from_lookup(lookup, Self::builder(), |b, key: ConfigKey, value| {
            b.with_config(key, value)
        })
    }

    /// The client of validated settings: one session, usage record and pool for it and its clones.
    fn new(s: Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                s,
                session: TokenCache::new(),
                rotated_refresh: std::sync::Mutex::new(None),
                limits: std::sync::Mutex::new(None),
                calls: AtomicU64::new(0),
            }),
        }
    }

    /// The configured API version (`v60.0`).
    pub fn api_version(&self) -> &str {
        &self.inner.s.api_version
    }

    /// The Task external-id field Tasks are upserted by.
    pub fn task_external_id_field(&self) -> &str {
        &self.inner.s.task_external_id_field
    }

    /// The latest `Sforce-Limit-Info`, including the per-app part when the org sends it.
    pub fn limit_info(&self) -> Option<LimitInfo> {
        self.inner.limits.lock().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The latest daily API usage (`api-usage=N/M`), if any call was answered.
    pub fn latest_api_usage(&self) -> Option<ApiUsage> {
        self.limit_info().map(|l| l.api_usage)
    }

    /// HTTP requests sent to the data API so far by this client and its clones (retries and
    /// repeats after re-authentication included; token requests not).
    pub fn requests_sent(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Forgets the cached session, so the next call obtains a new token.
    pub async fn clear_session(&self) {
        self.inner.session.clear().await;
    }

    /// `/services/data/vNN.N/{rest}`.
    pub(crate) fn data_path(&self, rest: &str) -> String {
        format!("/services/data/{}/{}", self.inner.s.api_version, rest.trim_start_matches('/'))
    }

    fn note_limits(&self, headers: &reqwest::header::HeaderMap) {
        if let Some(info) = headers.get(LIMIT_INFO_HEADER).and_then(|v| v.to_str().ok()).and_then(parse_limit_info) {
            match self.inner.limits.lock() {
                Ok(mut g) => *g = Some(info),
                Err(p) => *p.into_inner() = Some(info),
            }
        }
    }

    // ---------------------------------------------------------------- requests

    /// Sends one data request (path starting with `/services/data/`), re-authenticating once on
    /// `INVALID_SESSION_ID` and retrying intermittent failures when `idempotent`.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Answer, CallError> {
        let s = &self.inner.s;
        let mut failures = 0u32;
        let mut reauthed = false;
        loop {
            let session = self.session().await.map_err(CallError::Other)?;
            let url = format!("{}{}", session.value().base, path);
            let mut rb = s.http.request(method.clone(), &url).bearer_auth(session.value().token.expose_secret());
            if !query.is_empty() {
                rb = rb.query(query);
            }
            if let Some(b) = body {
                rb = rb.json(b);
            }
            if method == Method::GET && path.contains("/query") {
                rb = rb.header("Sforce-Query-Options", format!("batchSize={}", s.query_batch_size));
            }
            self.inner.calls.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(method = %method, path, "salesforce: request");
            let read = match rb.send().await {
                Ok(resp) => {
                    self.note_limits(resp.headers());
                    let status = resp.status().as_u16();
                    read_capped(resp, s.max_body_bytes).await.map(|b| (status, b))
                }
                Err(e) => Err(ReadError::Transport(e)),
            };
            let (status, bytes) = match read {
                Ok(x) => x,
                Err(ReadError::TooLarge { .. }) => {
                    return Err(CallError::Other(protocol(format!(
                        "response body exceeds {} bytes",
                        s.max_body_bytes
                    ))));
                }
                Err(ReadError::Transport(e)) => {
                    let e = TransportError::new("salesforce request", e);
                    if idempotent && failures + 1 < s.retry.max_attempts {
                        failures += 1;
                        tracing::warn!(attempt = failures, path, error = %e, "salesforce: transport error; retrying");
                        tokio::time::sleep(s.retry.delay(failures)).await;
                        continue;
                    }
                    return Err(CallError::Other(transport(e)));
                }
            };
            if (200..300).contains(&status) {
                if looks_like_html(&bytes) {
                    // A proxy's error page or a login wall sent with 200: not retried, named.
                    return Err(CallError::Other(protocol(html_instead_of(status, "JSON", &snippet(&bytes)))));
                }
                return Ok(Answer { body: bytes });
            }
            let error = parse_error_body(&bytes);
            let verdict = classify(status, &error.error_code, &error.message);
            match verdict {
                Verdict::Reauthenticate if !reauthed => {
                    reauthed = true;
                    tracing::info!(path, "salesforce: session expired; obtaining a new token");
                    self.forget_session(&session).await;
                    continue;
                }
                Verdict::Retry(_) if idempotent && failures + 1 < s.retry.max_attempts => {
                    failures += 1;
                    tracing::warn!(attempt = failures, status, code = %error.error_code, path, "salesforce: intermittent error; retrying");
                    tokio::time::sleep(s.retry.delay(failures)).await;
                    continue;
                }
                _ => {
                    tracing::debug!(status, code = %error.error_code, path, "salesforce: request failed");
                    // A retryable answer gets here on an idempotent call only once attempts ran out.
                    let spent = idempotent && verdict.is_retry();
                    return Err(CallError::Api { status, error, verdict, spent });
                }
            }
        }
    }

    /// GETs a JSON document.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, Error> {
        let answer = self.call(Method::GET, path, query, None, true).await?;
        answer.json(path)
    }

    // ---------------------------------------------------------------- queries

    /// Fetches one query page.
    pub(crate) async fn query_page(&self, cursor: &Cursor) -> Result<QueryPage, Error> {
        let answer = match cursor {
            Cursor::Start(soql) => {
                self.call(Method::GET, &self.data_path("query"), &[("q", soql.as_str())], None, true).await?
            }
            Cursor::StartAll(soql) => {
                self.call(Method::GET, &self.data_path("queryAll"), &[("q", soql.as_str())], None, true).await?
            }
            Cursor::Next(url) => {
                check_next_url(url)?;
                self.call(Method::GET, url, &[], None, true).await?
            }
        };
        QueryPage::parse(&answer.body)
    }

    /// One page as the port's [`Page`], mapping each record; the token is `nextRecordsUrl`.
    pub(crate) async fn page_of<T>(
        &self,
        cursor: &Cursor,
        map: impl Fn(&Value) -> Result<T, Error>,
    ) -> Result<Page<T>, Error> {
        self.query_page(cursor).await?.into_page(map)
    }

    /// The pages of a query as a stream, following `nextRecordsUrl` until `done`. Each page's
    /// `next_token` is the `nextRecordsUrl` that continues after it.
    pub fn query_stream(&self, soql: &Soql) -> BoxStream<'static, salesync_core::Result<Page<Value>>> {
        match soql.build() {
            Ok(q) => self.paginate(Cursor::Start(q), |v| Ok(v.clone())),
            Err(e) => futures::stream::once(async move { Err(Error::from(e)) }).boxed(),
        }
    }

    /// The pages of a constant SOQL statement. It takes `&'static str` on purpose: only text
    /// written into the program can reach Salesforce this way; anything with data in it must go
    /// through [`Soql`].
    pub fn query_stream_static(&self, soql: &'static str) -> BoxStream<'static, salesync_core::Result<Page<Value>>> {
        self.paginate(Cursor::Start(soql.to_string()), |v| Ok(v.clone()))
    }

    /// Resumes a query from a page token (a `nextRecordsUrl`) as a stream of pages.
    pub fn query_stream_from(&self, page_token: &str) -> BoxStream<'static, salesync_core::Result<Page<Value>>> {
        self.paginate(Cursor::Next(page_token.to_string()), |v| Ok(v.clone()))
    }

    /// Every record of a query, all pages read.
    pub async fn query_all(&self, soql: &Soql) -> salesync_core::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut pages = self.query_stream(soql);
        while let Some(page) = pages.next().await {
            out.extend(page?.items);
        }
        Ok(out)
    }

    /// The one paging helper: a stream of mapped pages starting at `cursor`.
    pub(crate) fn paginate<T: Send + 'static>(
        &self,
        cursor: Cursor,
        map: impl Fn(&Value) -> Result<T, Error> + Send + Sync + Clone + 'static,
    ) -> BoxStream<'static, salesync_core::Result<Page<T>>> {
        let client = self.clone();
        salesync_http::page_stream("salesforce", cursor, Cursor::Next, move |cursor| {
            let client = client.clone();
            let map = map.clone();
            async move { client.page_of(&cursor, map).await }
        })
    }
}

/// A network failure as the port error (no URL in it).
pub(crate) fn transport(e: TransportError) -> Error {
    Error::Transport { service: Service::Salesforce, source: Box::new(e) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_url_tokens_are_checked() {
        assert!(check_next_url("/services/data/v60.0/query/01gRO0000016PIAYA2-2000").is_ok());
        for bad in [
            "https://evil.example/services/data/",
            "//evil.example/services/data/v60.0/query/x",
            "/services/data/../../x",
            "/services/data/v60.0/query/x y",
            "/other",
            "",
        ] {
            assert!(check_next_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_bodies_parse_leniently() {
        let e = parse_error_body(br#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#);
        assert_eq!(e.error_code, "INVALID_SESSION_ID");
        let e = parse_error_body(br#"{"errorCode":"NOT_FOUND","message":"nope"}"#);
        assert_eq!(e.error_code, "NOT_FOUND");
        let e = parse_error_body(b"<html>Bad gateway</html>");
        assert_eq!(e.error_code, "");
        assert_eq!(e.message, "<html>Bad gateway</html>");
    }

    #[test]
    fn lone_surrogates_do_not_fail_a_query_page() {
        let body = br#"{"totalSize":1,"done":true,"records":[{"Id":"00T5g00000XyZ12EAF","Subject":"Hi \ud83d"}]}"#;
        let page = QueryPage::parse(body).unwrap();
        assert_eq!(page.records[0]["Subject"], "Hi \u{fffd}");
        assert!(QueryPage::parse(br#"{"done":true,"records":["\ud83d"#).is_err());
    }

    #[test]
    fn query_page_parses_reference_example() {
        let body = r#"{
          "totalSize": 3, "done": false,
          "nextRecordsUrl": "/services/data/v62.0/query/01gRO0000016PIAYA2-2",
          "records": [
            {"attributes": {"type": "Lead", "url": "/services/data/v62.0/sobjects/Lead/00Q5g00000AbCdEEAV"},
             "Id": "00Q5g00000AbCdEEAV", "Email": "a@example.com", "OwnerId": "0055g00000AAAAAAA2",
             "Tasks": {"totalSize": 1, "done": true, "records": [{"attributes": {"type": "Task"}, "Id": "00T5g00000XyZ12EAF"}]}}
          ]
        }"#;
        let p: QueryPage = serde_json::from_str(body).unwrap();
        assert!(!p.done);
        assert_eq!(p.next_records_url.as_deref(), Some("/services/data/v62.0/query/01gRO0000016PIAYA2-2"));
        assert_eq!(p.records.len(), 1);
    }
}
