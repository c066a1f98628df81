//! Configuration: the keys read from the environment, the builder and its validated settings,
//! retry settings. The client is made from the settings in `client` (`SalesforceClientBuilder::build`).

use std::str::FromStr;
use std::time::Duration;

use salesync_http::{Checked, Connection, ConnectionRules, EnvKey, parse_flag, parse_key, redacted_secret};
use secrecy::SecretString;
use url::Url;

use crate::error::config;
use crate::soql::is_identifier;

/// The default REST API version.
pub const DEFAULT_API_VERSION: &str = "v60.0";
/// The default Task external-id field salesync upserts by.
pub const DEFAULT_TASK_EXTERNAL_ID_FIELD: &str = "Salesync_Activity_Id__c";
/// The default per-request timeout (Salesforce itself times REST calls out after 10 minutes).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The default query batch size hint (`Sforce-Query-Options: batchSize`), 200–2,000.
pub const DEFAULT_QUERY_BATCH_SIZE: u32 = 2000;
/// The default cap on one response body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Retry settings for intermittent failures (exponential backoff with jitter): attempts per
/// request (the one repeat after a re-authentication is not counted), the delay before the second
/// attempt (doubled for each further one) and the upper bound of one delay. The default is 5
/// attempts, 250 ms doubling up to 20 s; [`none`](salesync_http::RetryConfig::none) is a single
/// attempt. The type is [`salesync_http::RetryConfig`], shared with the Marketo connector, with
/// Salesforce's defaults.
pub type RetryConfig = salesync_http::RetryConfig<250, 20_000>;

/// A configuration key, as used by `SalesforceClient::from_env` and
/// [`SalesforceClientBuilder::with_config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigKey {
    /// `SALESYNC_SALESFORCE_URL`: the login or My Domain URL serving `/services/oauth2/token`
    /// (client credentials need the org's My Domain URL).
    Url,
    /// `SALESYNC_SALESFORCE_CLIENT_ID`: the connected app's consumer key.
    ClientId,
    /// `SALESYNC_SALESFORCE_CLIENT_SECRET`: the consumer secret.
    ClientSecret,
    /// `SALESYNC_SALESFORCE_REFRESH_TOKEN` (optional): use the refresh-token grant instead of client credentials.
    RefreshToken,
    /// `SALESYNC_SALESFORCE_API_VERSION` (optional, default [`DEFAULT_API_VERSION`]).
    ApiVersion,
    /// `SALESYNC_SALESFORCE_TASK_EXTERNAL_ID_FIELD` (optional, default [`DEFAULT_TASK_EXTERNAL_ID_FIELD`]).
    TaskExternalIdField,
    /// `SALESYNC_SALESFORCE_ALLOW_INSECURE_HTTP` (optional, `true`/`false`; falls back to
    /// `SALESYNC_ALLOW_INSECURE_HTTP`): allow plain `http://` to hosts that are not loopback.
    AllowInsecureHttp,
}

impl ConfigKey {
    /// Every key.
    pub const ALL: [ConfigKey; 7] = [
        ConfigKey::Url,
        ConfigKey::ClientId,
        ConfigKey::ClientSecret,
        ConfigKey::RefreshToken,
        ConfigKey::ApiVersion,
        ConfigKey::TaskExternalIdField,
        ConfigKey::AllowInsecureHttp,
    ];
}

impl EnvKey for ConfigKey {
    const ALL: &'static [ConfigKey] = &ConfigKey::ALL;
    const PREFIX: &'static str = "SALESYNC_SALESFORCE_";
    const ALLOW_INSECURE_HTTP: ConfigKey = ConfigKey::AllowInsecureHttp;

    fn env_var(self) -> &'static str {
        match self {
            ConfigKey::Url => "SALESYNC_SALESFORCE_URL",
            ConfigKey::ClientId => "SALESYNC_SALESFORCE_CLIENT_ID",
            ConfigKey::ClientSecret => "SALESYNC_SALESFORCE_CLIENT_SECRET",
            ConfigKey::RefreshToken => "SALESYNC_SALESFORCE_REFRESH_TOKEN",
            ConfigKey::ApiVersion => "SALESYNC_SALESFORCE_API_VERSION",
            ConfigKey::TaskExternalIdField => "SALESYNC_SALESFORCE_TASK_EXTERNAL_ID_FIELD",
            ConfigKey::AllowInsecureHttp => "SALESYNC_SALESFORCE_ALLOW_INSECURE_HTTP",
        }
    }

    fn required(self) -> bool {
        matches!(self, ConfigKey::Url | ConfigKey::ClientId | ConfigKey::ClientSecret)
    }
}

impl FromStr for ConfigKey {
    type Err = salesync_core::Error;

    /// Accepts the environment variable name or its lower-case suffix (`url`, `client_id`, …).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(parse_key(s, "Salesforce")?)
    }
}

/// Builds a `SalesforceClient` (from [`SalesforceClient::builder`](crate::SalesforceClient::builder),
/// or filled from the environment by `SalesforceClient::builder_from_lookup`); every setting is
/// validated once, in `build`.
///
/// ```no_run
/// # async fn demo() -> salesync_core::Result<()> {
/// use salesync_salesforce::{RetryConfig, SalesforceClient};
///
/// let client = SalesforceClient::builder()
///     .login_url("https://acme.my.salesforce.com")
///     .client_id("3MVG9…")
///     .client_secret("…")
///     .api_version("v60.0")
///     .task_external_id_field("Salesync_Activity_Id__c")
///     .retry(RetryConfig::default())
///     .timeout(std::time::Duration::from_secs(60))
///     .build()?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct SalesforceClientBuilder {
    connection: Connection,
    pub(crate) refresh_token: Option<SecretString>,
    pub(crate) api_version: Option<String>,
    pub(crate) task_external_id_field: Option<String>,
    pub(crate) retry: RetryConfig,
    pub(crate) query_batch_size: Option<u32>,
    pub(crate) max_body_bytes: Option<usize>,
}

impl std::fmt::Debug for SalesforceClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceClientBuilder")
            .field("connection", &self.connection)
            .field("refresh_token", &redacted_secret(&self.refresh_token))
            .field("api_version", &self.api_version)
            .field("task_external_id_field", &self.task_external_id_field)
            .field("retry", &self.retry)
            .field("query_batch_size", &self.query_batch_size)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl SalesforceClientBuilder {
    /// The login or My Domain URL serving `/services/oauth2/token`. Client credentials need the
    /// org's My Domain URL (`https://<domain>.my.salesforce.com`), not `login.salesforce.com`.
    pub fn login_url(mut self, url: impl Into<String>) -> Self {
        self.connection.url = Some(url.into());
        self
    }

    /// The connected app's consumer key.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.connection.client_id = Some(id.into());
        self
    }

    /// The connected app's consumer secret.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.connection.client_secret = Some(SecretString::from(secret.into()));
        self
    }

    /// A refresh token: sessions then come from the `refresh_token` grant instead of client credentials.
    pub fn refresh_token(mut self, token: impl Into<String>) -> Self {
        self.refresh_token = Some(SecretString::from(token.into()));
        self
    }

    /// The REST API version, e.g. `v60.0` (a bare `60.0` is accepted too).
    pub fn api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = Some(version.into());
        self
    }

    /// The Task external-id field Tasks are upserted by (default [`DEFAULT_TASK_EXTERNAL_ID_FIELD`]).
    pub fn task_external_id_field(mut self, field: impl Into<String>) -> Self {
        self.task_external_id_field = Some(field.into());
        self
    }

    /// Retry settings for intermittent failures.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Per-request timeout (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.connection.timeout = Some(timeout);
        self
    }

    /// The `Sforce-Query-Options: batchSize` hint (200–2,000; default [`DEFAULT_QUERY_BATCH_SIZE`]).
    pub fn query_batch_size(mut self, n: u32) -> Self {
        self.query_batch_size = Some(n);
        self
    }

    /// The largest response body accepted (default [`DEFAULT_MAX_BODY_BYTES`]); larger ones are a
    /// protocol error.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = Some(n);
        self
    }

    /// Allows plain `http://` to hosts that are not loopback (default false; never do this in
    /// production). Loopback — `127.0.0.0/8`, `::1`, `localhost` — is always allowed, for
    /// emulators. Without it, a login URL or a token response's `instance_url` that is plain http
    /// to another host is refused with an `Error::Config` naming the URL. Every `https://` URL is
    /// verified with rustls either way.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.connection.allow_insecure_http = allow;
        self
    }

    /// The same as [`allow_insecure_http`](Self::allow_insecure_http).
    pub fn allow_http(self, allow: bool) -> Self {
        self.allow_insecure_http(allow)
    }

    /// Uses this `reqwest::Client` (proxies, custom TLS roots) instead of one built with
    /// [`timeout`](Self::timeout); its timeouts are then its own.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.connection.http = Some(client);
        self
    }

    /// Sets one setting from its textual form (as in the environment); the error names the
    /// key's variable.
    pub fn with_config(self, key: ConfigKey, value: &str) -> salesync_core::Result<Self> {
        let value = value.trim();
        Ok(match key {
            ConfigKey::Url => self.login_url(value),
            ConfigKey::ClientId => self.client_id(value),
            ConfigKey::ClientSecret => self.client_secret(value),
            ConfigKey::RefreshToken => self.refresh_token(value),
            ConfigKey::ApiVersion => self.api_version(value),
            ConfigKey::TaskExternalIdField => self.task_external_id_field(value),
            ConfigKey::AllowInsecureHttp => self.allow_insecure_http(parse_flag(key.env_var(), value)?),
        })
    }

    /// Validates every setting (the client is made from them by `build`; no network call).
    pub(crate) fn settings(self) -> salesync_core::Result<Settings> {
        let allow_http = self.connection.allow_insecure_http;
        let rules = ConnectionRules {
            url_key: "login_url",
            insecure_http_var: ConfigKey::AllowInsecureHttp.env_var(),
            default_timeout: DEFAULT_TIMEOUT,
            allow_blank_secret: true,
        };
        let Checked { url: login_url, client_id, client_secret, timeout: _, http } =
            self.connection.check(rules, |timeout| {
                reqwest::Client::builder().timeout(timeout).connect_timeout(Duration::from_secs(30))
            })?;
        let version = self.api_version.unwrap_or_else(|| DEFAULT_API_VERSION.to_string());
        let version = normalize_version(&version).ok_or_else(|| config("api_version", "must look like v60.0"))?;
        let ext = self.task_external_id_field.unwrap_or_else(|| DEFAULT_TASK_EXTERNAL_ID_FIELD.to_string());
        if !is_identifier(&ext) || ext.contains('.') {
            return Err(config("task_external_id_field", "must be a field API name"));
        }
        self.retry.check()?;
        let batch = self.query_batch_size.unwrap_or(DEFAULT_QUERY_BATCH_SIZE);
        if !(200..=2000).contains(&batch) {
            return Err(config("query_batch_size", "must be between 200 and 2000"));
        }
        Ok(Settings {
            http,
            login_url,
            client_id,
            client_secret,
            refresh_token: self.refresh_token,
            api_version: version,
            task_external_id_field: ext,
            retry: self.retry,
            query_batch_size: batch,
            max_body_bytes: self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            allow_http,
        })
    }
}

/// The validated settings of one client, made by [`SalesforceClientBuilder::settings`].
pub(crate) struct Settings {
    pub(crate) http: reqwest::Client,
    pub(crate) login_url: Url,
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretString,
    pub(crate) refresh_token: Option<SecretString>,
    pub(crate) api_version: String,
    pub(crate) task_external_id_field: String,
    pub(crate) retry: RetryConfig,
    pub(crate) query_batch_size: u32,
    pub(crate) max_body_bytes: usize,
    pub(crate) allow_http: bool,
}

/// `60.0` or `v60.0` → `v60.0`.
fn normalize_version(v: &str) -> Option<String> {
    let v = v.trim();
    let digits = v.strip_prefix('v').unwrap_or(v);
    let (major, minor) = digits.split_once('.')?;
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    (ok(major) && ok(minor)).then(|| format!("v{digits}"))
}

/// Parses a URL and enforces https (http only for loopback unless `allow_http`; see
/// [`salesync_http::check_url`]). Errors are `Error::Config` under `key`.
pub(crate) fn check_url(key: &str, raw: &str, allow_http: bool) -> salesync_core::Result<Url> {
    salesync_http::check_url(raw, allow_http, ConfigKey::AllowInsecureHttp.env_var())
        .map_err(|e| config(key, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SalesforceClient;
    use salesync_http::lookup_from as env;

    #[test]
    fn missing_variables_are_named() {
        let e = SalesforceClient::builder_from_lookup(env(&[])).unwrap_err();
        assert!(matches!(e, salesync_core::Error::Config { ref key, .. } if key == "SALESYNC_SALESFORCE_URL"));
        let e = SalesforceClient::builder_from_lookup(env(&[
            ("SALESYNC_SALESFORCE_URL", "https://acme.my.salesforce.com"),
            ("SALESYNC_SALESFORCE_CLIENT_ID", "id"),
        ]))
        .unwrap_err();
        assert!(
            matches!(e, salesync_core::Error::Config { ref key, .. } if key == "SALESYNC_SALESFORCE_CLIENT_SECRET")
        );
    }

    #[test]
    fn from_lookup_reads_optional_keys_and_hides_secrets() {
        let b = SalesforceClient::builder_from_lookup(env(&[
            ("SALESYNC_SALESFORCE_URL", "https://acme.my.salesforce.com"),
            ("SALESYNC_SALESFORCE_CLIENT_ID", "the-id"),
            ("SALESYNC_SALESFORCE_CLIENT_SECRET", "s3cr3t-value"),
            ("SALESYNC_SALESFORCE_REFRESH_TOKEN", "r3fr3sh-value"),
            ("SALESYNC_SALESFORCE_API_VERSION", "61.0"),
        ]))
        .unwrap();
        let dbg = format!("{b:?}");
        assert!(!dbg.contains("s3cr3t") && !dbg.contains("r3fr3sh"), "{dbg}");
        let c = b.build().unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t") && !dbg.contains("r3fr3sh"), "{dbg}");
        assert!(dbg.contains("v61.0"), "{dbg}");
    }

    #[test]
    fn urls_and_settings_are_validated() {
        let base = || SalesforceClient::builder().client_id("id").client_secret("s");
        assert!(base().login_url("http://127.0.0.1:8080").build().is_ok());
        assert!(base().login_url("http://localhost:8080").build().is_ok());
        assert!(base().login_url("http://[::1]:8080").build().is_ok());
        assert!(base().login_url("http://acme.example").build().is_err());
        assert!(base().login_url("http://acme.example").allow_http(true).build().is_ok());
        assert!(base().login_url("ftp://acme.example").build().is_err());
        assert!(base().login_url("https://u:p@acme.example").build().is_err());
        assert!(base().login_url("not a url").build().is_err());
        let ok = || base().login_url("https://acme.my.salesforce.com");
        assert!(ok().api_version("v60").build().is_err());
        assert!(ok().task_external_id_field("Bad Field").build().is_err());
        assert!(ok().query_batch_size(100).build().is_err());
        assert!(ok().retry(RetryConfig { max_attempts: 0, ..RetryConfig::default() }).build().is_err());
        assert!(SalesforceClient::builder().login_url("https://x.example").client_secret("s").build().is_err());
    }

    #[test]
    fn plain_http_refusal_names_the_url_and_the_setting_without_credentials() {
        let base = || SalesforceClient::builder().client_id("id").client_secret("s");
        for url in ["http://acme.my.salesforce.com/?x=q5ecret", "http://10.1.2.3:80", "http://127.0.0.1.nip.io"] {
            let e = base().login_url(url).build().unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, salesync_core::Error::Config { ref key, .. } if key == "login_url"), "{e:?}");
            let host = Url::parse(url).unwrap().host_str().unwrap().to_string();
            assert!(msg.contains(&host), "{msg}");
            assert!(
                msg.contains("allow_insecure_http") && msg.contains("SALESYNC_SALESFORCE_ALLOW_INSECURE_HTTP"),
                "{msg}"
            );
            assert!(!msg.contains("q5ecret"), "{msg}");
            assert!(base().login_url(url).allow_insecure_http(true).build().is_ok());
        }
        assert!(base().login_url("http://127.8.9.10:1").build().is_ok(), "all of 127.0.0.0/8 is loopback");
        let c = base().login_url("https://acme.my.salesforce.com/?sig=q5ecret#f").build().unwrap();
        assert!(!format!("{c:?}").contains("q5ecret"), "{c:?}");
        let b = base().login_url("https://u:pa55w0rd@acme.example/?k=v4lue");
        assert!(!format!("{b:?}").contains("pa55w0rd") && !format!("{b:?}").contains("v4lue"), "{b:?}");
        let e = base().login_url("https://u:pa55w0rd@acme.example").build().unwrap_err();
        assert!(!format!("{e} {e:?}").contains("pa55w0rd"), "{e:?}");
    }

    #[test]
    fn insecure_http_from_the_environment() {
        fn from(extra: &[(&'static str, &'static str)]) -> salesync_core::Result<SalesforceClientBuilder> {
            let mut v = vec![
                ("SALESYNC_SALESFORCE_URL", "http://sf.internal:8080"),
                ("SALESYNC_SALESFORCE_CLIENT_ID", "id"),
                ("SALESYNC_SALESFORCE_CLIENT_SECRET", "s"),
            ];
            v.extend_from_slice(extra);
            SalesforceClient::builder_from_lookup(env(&v))
        }
        assert!(from(&[]).unwrap().build().is_err());
        assert!(from(&[("SALESYNC_SALESFORCE_ALLOW_INSECURE_HTTP", "true")]).unwrap().build().is_ok());
        assert!(from(&[("SALESYNC_ALLOW_INSECURE_HTTP", "yes")]).unwrap().build().is_ok());
        let own_wins = [("SALESYNC_ALLOW_INSECURE_HTTP", "true"), ("SALESYNC_SALESFORCE_ALLOW_INSECURE_HTTP", "false")];
        assert!(from(&own_wins).unwrap().build().is_err());
        let e = from(&[("SALESYNC_ALLOW_INSECURE_HTTP", "perhaps")]).unwrap_err();
        assert!(matches!(e, salesync_core::Error::Config { ref key, .. } if key == "SALESYNC_ALLOW_INSECURE_HTTP"));
    }

    /// A one-shot token endpoint on loopback answering every request with `body`.
    async fn token_endpoint(body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = Vec::new();
                // Read the head and the (small, form) body.
                loop {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    let done = text.find("\r\n\r\n").is_some_and(|head| {
                        let len = text[..head]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        got.len() >= head + 4 + len
                    });
                    if n == 0 || done {
                        break;
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn plain_http_instance_url_from_the_token_endpoint_is_refused() {
        use salesync_core::ports::salesforce::SalesforceApi;
        let login = token_endpoint(
            r#"{"access_token":"00Dx!AQ0Atok3n-never-shown","instance_url":"http://na1.example.invalid","token_type":"Bearer"}"#,
        )
        .await;
        let client = SalesforceClient::builder()
            .login_url(login)
            .client_id("id")
            .client_secret("s")
            .retry(RetryConfig::none())
            .build()
            .unwrap();
        let e = client.task_type_values().await.unwrap_err();
        let msg = format!("{e} / {e:?}");
        assert!(matches!(e, salesync_core::Error::Config { ref key, .. } if key == "instance_url"), "{msg}");
        assert!(msg.contains("na1.example.invalid") && msg.contains("allow_insecure_http"), "{msg}");
        assert!(!msg.contains("tok3n"), "{msg}");
        assert_eq!(client.requests_sent(), 0, "nothing may be sent to the refused instance");
    }

    #[test]
    fn retry_defaults_are_salesforces() {
        let r = RetryConfig::default();
        assert_eq!(
            (r.max_attempts, r.base_delay, r.max_delay),
            (5, Duration::from_millis(250), Duration::from_secs(20))
        );
        assert_eq!(RetryConfig::none().max_attempts, 1);
    }
}
