//! Configuration: the keys read from the environment, the builder and its validated settings,
//! retry settings. The client is made from the settings in `client` (`MarketoClientBuilder::build`).

use std::str::FromStr;
use std::time::Duration;

use salesync_http::{Checked, Connection, ConnectionRules, EnvKey, parse_flag, parse_key, parse_number};
use secrecy::SecretString;
use url::Url;

use crate::error::MkError;

/// Default calls per rate window. Marketo allows 100 per 20 s per instance, *shared by every
/// integration*; Adobe recommends at most 50 per integration, so hosts that share an instance
/// should set [`MarketoClientBuilder::rate_limit`] lower.
pub const DEFAULT_RATE_CALLS: usize = 100;
/// Default rate window.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(20);
/// Default in-flight calls (Marketo allows 10 per instance, shared; Adobe recommends ≤ 5).
pub const DEFAULT_MAX_CONCURRENT: usize = 10;
/// Default per-request timeout (Get Paging Token always gets at least 300 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Retry settings for transient failures (exponential backoff with jitter): attempts per request
/// (a re-authentication after 601/602 is not counted), the delay before the second attempt
/// (doubled for each further one) and the upper bound of one delay. The default is 5 attempts,
/// 500 ms doubling up to 30 s. The type is [`salesync_http::RetryConfig`], shared with the
/// Salesforce connector, with Marketo's defaults.
pub type RetryConfig = salesync_http::RetryConfig<500, 30_000>;

/// A configuration key, as used by `MarketoClient::from_env` and [`MarketoClientBuilder::with_config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigKey {
    /// `SALESYNC_MARKETO_URL`: the instance base URL (`/identity`, `/rest` and `/bulk` live under it).
    Url,
    /// `SALESYNC_MARKETO_CLIENT_ID`.
    ClientId,
    /// `SALESYNC_MARKETO_CLIENT_SECRET`.
    ClientSecret,
    /// `SALESYNC_MARKETO_RATE_CALLS`: calls per rate window.
    RateCalls,
    /// `SALESYNC_MARKETO_RATE_WINDOW_SECS`: the rate window in seconds.
    RateWindowSecs,
    /// `SALESYNC_MARKETO_MAX_CONCURRENT`: in-flight calls.
    MaxConcurrent,
    /// `SALESYNC_MARKETO_DAILY_BUDGET`: client-side daily call budget.
    DailyBudget,
    /// `SALESYNC_MARKETO_ALLOW_INSECURE_HTTP` (`true`/`false`; falls back to
    /// `SALESYNC_ALLOW_INSECURE_HTTP`): allow plain `http://` to a host that is not loopback.
    AllowInsecureHttp,
}

impl ConfigKey {
    /// Every key.
    pub const ALL: [ConfigKey; 8] = [
        ConfigKey::Url,
        ConfigKey::ClientId,
        ConfigKey::ClientSecret,
        ConfigKey::RateCalls,
        ConfigKey::RateWindowSecs,
        ConfigKey::MaxConcurrent,
        ConfigKey::DailyBudget,
        ConfigKey::AllowInsecureHttp,
    ];
}

impl EnvKey for ConfigKey {
    const ALL: &'static [ConfigKey] = &ConfigKey::ALL;
    const PREFIX: &'static str = "SALESYNC_MARKETO_";
    const ALLOW_INSECURE_HTTP: ConfigKey = ConfigKey::AllowInsecureHttp;

    fn env_var(self) -> &'static str {
        match self {
            ConfigKey::Url => "SALESYNC_MARKETO_URL",
            ConfigKey::ClientId => "SALESYNC_MARKETO_CLIENT_ID",
            ConfigKey::ClientSecret => "SALESYNC_MARKETO_CLIENT_SECRET",
            ConfigKey::RateCalls => "SALESYNC_MARKETO_RATE_CALLS",
            ConfigKey::RateWindowSecs => "SALESYNC_MARKETO_RATE_WINDOW_SECS",
            ConfigKey::MaxConcurrent => "SALESYNC_MARKETO_MAX_CONCURRENT",
            ConfigKey::DailyBudget => "SALESYNC_MARKETO_DAILY_BUDGET",
            ConfigKey::AllowInsecureHttp => "SALESYNC_MARKETO_ALLOW_INSECURE_HTTP",
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
        Ok(parse_key(s, "Marketo")?)
    }
}

/// Builds a `MarketoClient` (from [`MarketoClient::builder`](crate::MarketoClient::builder),
/// or filled from the environment by `MarketoClient::builder_from_lookup`); every setting is
/// validated once, in `build`.
#[derive(Clone, Default)]
pub struct MarketoClientBuilder {
    connection: Connection,
    rate: Option<(usize, Duration)>,
    max_concurrent: Option<usize>,
    daily_budget: Option<u64>,
    retry: Option<RetryConfig>,
    token_refresh_early: Option<Duration>,
}

impl std::fmt::Debug for MarketoClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarketoClientBuilder")
            .field("connection", &self.connection)
            .field("rate", &self.rate)
            .field("max_concurrent", &self.max_concurrent)
            .field("daily_budget", &self.daily_budget)
            .field("retry", &self.retry)
            .field("token_refresh_early", &self.token_refresh_early)
            .finish()
    }
}

impl MarketoClientBuilder {
    /// The instance base URL, e.g. `https://123-ABC-456.mktorest.com` (no `/rest` suffix).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.connection.url = Some(url.into());
        self
    }

    /// The LaunchPoint custom service's client id.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.connection.client_id = Some(id.into());
        self
    }

    /// The LaunchPoint custom service's client secret.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.connection.client_secret = Some(SecretString::from(secret.into()));
        self
    }

    /// At most `calls` calls in any `window` (default 100 per 20 s, Marketo's whole-instance
    /// limit). This is a ceiling: the client adapts its share below it when other integrations
    /// fill the shared window (606), so it need not be set lower to share an instance; set it
    /// lower to reserve room for others.
    pub fn rate_limit(mut self, calls: usize, window: Duration) -> Self {
        self.rate = Some((calls, window));
        self
    }

    /// At most `n` calls in flight (default 10, Marketo's whole-instance limit). A ceiling: the
    /// client lowers its in-flight limit when the instance answers 615.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    /// A client-side daily call budget (reset at midnight US Central); calls beyond it fail with
    /// `QuotaExhausted` without reaching Marketo. Default: none.
    pub fn daily_budget(mut self, calls: u64) -> Self {
        self.daily_budget = Some(calls);
        self
    }

    /// Retry settings for transient failures.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Per-request timeout (default 120 s; Get Paging Token always gets at least 300 s; bulk file
    /// downloads use it as a read timeout between chunks).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.connection.timeout = Some(timeout);
        self
    }

    /// How long before expiry the access token is refreshed (default 60 s).
    pub fn token_refresh_early(mut self, early: Duration) -> Self {
        self.token_refresh_early = Some(early);
        self
    }

    /// Allows plain `http://` base URLs to hosts that are not loopback (default false; loopback
    /// — `127.0.0.0/8`, `::1`, `localhost` — is always allowed, for emulators). Without it such a
    /// URL is refused by `build` with an `Error::Config` naming the URL. TLS
    /// (rustls, certificates verified) is used for every `https://` URL either way.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.connection.allow_insecure_http = allow;
        self
    }

    /// Uses this `reqwest::Client` (proxies, custom TLS roots) instead of one built with
    /// [`timeout`](Self::timeout); its timeouts are then its own.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.connection.http = Some(client);
        self
    }

    /// Sets one setting from its textual form (as in the environment); the error names the
    /// key's variable.
    pub fn with_config(mut self, key: ConfigKey, value: &str) -> Result<Self, salesync_core::Error> {
        match key {
            ConfigKey::Url => self = self.base_url(value.trim()),
            ConfigKey::ClientId => self = self.client_id(value.trim()),
            ConfigKey::ClientSecret => self = self.client_secret(value.trim()),
            ConfigKey::RateCalls => {
                let calls = parse_number(key.env_var(), value)?;
                self.rate = Some((calls, self.rate.map_or(DEFAULT_RATE_WINDOW, |r| r.1)));
            }
            ConfigKey::RateWindowSecs => {
                let secs: f64 = parse_number(key.env_var(), value)?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(MkError::config(key.env_var(), "must be a positive number of seconds").into());
                }
                self.rate = Some((self.rate.map_or(DEFAULT_RATE_CALLS, |r| r.0), Duration::from_secs_f64(secs)));
            }
            ConfigKey::MaxConcurrent => self.max_concurrent = Some(parse_number(key.env_var(), value)?),
            ConfigKey::DailyBudget => self.daily_budget = Some(parse_number(key.env_var(), value)?),
            ConfigKey::AllowInsecureHttp => self = self.allow_insecure_http(parse_flag(key.env_var(), value)?),
        }
        Ok(self)
    }

    /// Validates every setting (the client is made from them by `build`).
    pub(crate) fn settings(self) -> Result<Settings, MkError> {
        let rules = ConnectionRules {
            url_key: "base_url",
            insecure_http_var: ConfigKey::AllowInsecureHttp.env_var(),
            default_timeout: DEFAULT_TIMEOUT,
            allow_blank_secret: false,
        };
        let Checked { url: mut base, client_id, client_secret, timeout, http } =
            self.connection.check(rules, |timeout| {
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(10).min(timeout))
                    .read_timeout(timeout)
                    .user_agent(concat!("salesync-marketo/", env!("CARGO_PKG_VERSION")))
            })?;
        let path = base.path().trim_end_matches('/').to_string();
        base.set_path(&format!("{path}/"));
        let (calls, window) = self.rate.unwrap_or((DEFAULT_RATE_CALLS, DEFAULT_RATE_WINDOW));
        if calls == 0 || window.is_zero() {
            return Err(MkError::config("rate_limit", "calls and window must be positive"));
        }
        let max_concurrent = self.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT);
        if max_concurrent == 0 {
            return Err(MkError::config("max_concurrent", "must be at least 1"));
        }
        let retry = self.retry.unwrap_or_default();
        retry.check()?;
        if self.daily_budget == Some(0) {
            return Err(MkError::config("daily_budget", "must be at least 1"));
        }
        Ok(Settings {
            http,
            base,
            client_id,
            client_secret,
            rate: (calls, window),
            max_concurrent,
            daily_budget: self.daily_budget,
            retry,
            timeout,
            token_refresh_early: self.token_refresh_early.unwrap_or(Duration::from_secs(60)),
        })
    }
}

/// The validated settings of one client, made by [`MarketoClientBuilder::settings`].
pub(crate) struct Settings {
    pub(crate) http: reqwest::Client,
    /// The base URL, ending in `/`.
    pub(crate) base: Url,
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretString,
    pub(crate) rate: (usize, Duration),
    pub(crate) max_concurrent: usize,
    pub(crate) daily_budget: Option<u64>,
    pub(crate) retry: RetryConfig,
    pub(crate) timeout: Duration,
    pub(crate) token_refresh_early: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MarketoClient;

    fn ok_builder() -> MarketoClientBuilder {
        MarketoClient::builder().base_url("https://123-ABC-456.mktorest.com").client_id("id").client_secret("s3cret")
    }

    #[test]
    fn validates_urls() {
        assert!(ok_builder().build().is_ok());
        assert!(ok_builder().base_url("http://127.0.0.1:8080").build().is_ok());
        assert!(ok_builder().base_url("http://localhost:8080/").build().is_ok());
        assert!(ok_builder().base_url("http://[::1]:8080").build().is_ok());
        let e = ok_builder().base_url("http://example.com").build().unwrap_err();
        assert!(matches!(e, salesync_core::Error::Config { ref key, .. } if key == "base_url"), "{e}");
        assert!(ok_builder().base_url("http://example.com").allow_insecure_http(true).build().is_ok());
        assert!(ok_builder().base_url("http://127.1.2.3:8080").build().is_ok(), "all of 127.0.0.0/8 is loopback");
        assert!(ok_builder().base_url("http://LOCALHOST:8080").build().is_ok());
        assert!(ok_builder().base_url("ftp://example.com").build().is_err());
        assert!(ok_builder().base_url("not a url").build().is_err());
    }

    #[test]
    fn plain_http_refusal_names_the_url_and_the_setting_without_credentials() {
        for url in [
            "http://123-abc-456.mktorest.com/?token=q5ecret",
            "http://10.0.0.8:8080",
            "http://[2001:db8::1]/",
            "http://localhost.evil.example",
            "http://128.0.0.1",
        ] {
            let e = ok_builder().base_url(url).build().unwrap_err();
            let msg = e.to_string();
            let salesync_core::Error::Config { key, reason } = &e else { panic!("{e:?}") };
            assert_eq!(key, "base_url");
            let host = Url::parse(url).unwrap().host_str().unwrap().to_string();
            assert!(reason.contains(&host), "{msg}");
            assert!(
                msg.contains("allow_insecure_http") && msg.contains("SALESYNC_MARKETO_ALLOW_INSECURE_HTTP"),
                "{msg}"
            );
            assert!(!msg.contains("q5ecret"), "{msg}");
        }
        let e = ok_builder().base_url("https://user:pa55w0rd@x.mktorest.com").build().unwrap_err();
        assert!(
            matches!(e, salesync_core::Error::Config { .. }) && !format!("{e} {e:?}").contains("pa55w0rd"),
            "{e:?}"
        );
    }

    #[test]
    fn insecure_http_can_be_allowed_from_the_environment() {
        let vars = |extra: &'static [(&'static str, &'static str)]| {
            move |k: &str| match k {
                "SALESYNC_MARKETO_URL" => Some("http://mkto.internal:8080".to_string()),
                "SALESYNC_MARKETO_CLIENT_ID" => Some("id".into()),
                "SALESYNC_MARKETO_CLIENT_SECRET" => Some("s3cret".into()),
                _ => extra.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()),
            }
        };
        let refused = MarketoClient::builder_from_lookup(vars(&[])).unwrap().build().unwrap_err();
        assert!(matches!(refused, salesync_core::Error::Config { ref key, .. } if key == "base_url"), "{refused}");
        let own = vars(&[("SALESYNC_MARKETO_ALLOW_INSECURE_HTTP", "true")]);
        assert!(MarketoClient::builder_from_lookup(own).unwrap().build().is_ok());
        let global = vars(&[("SALESYNC_ALLOW_INSECURE_HTTP", "1")]);
        assert!(MarketoClient::builder_from_lookup(global).unwrap().build().is_ok());
        let own_wins =
            vars(&[("SALESYNC_ALLOW_INSECURE_HTTP", "true"), ("SALESYNC_MARKETO_ALLOW_INSECURE_HTTP", "false")]);
        assert!(MarketoClient::builder_from_lookup(own_wins).unwrap().build().is_err());
        let bad = MarketoClient::builder_from_lookup(vars(&[("SALESYNC_ALLOW_INSECURE_HTTP", "maybe")])).unwrap_err();
        assert!(
            matches!(bad, salesync_core::Error::Config { ref key, .. } if key == "SALESYNC_ALLOW_INSECURE_HTTP"),
            "{bad}"
        );
    }

    #[test]
    fn validates_numbers() {
        assert!(ok_builder().rate_limit(0, Duration::from_secs(1)).build().is_err());
        assert!(ok_builder().max_concurrent(0).build().is_err());
        assert!(ok_builder().retry(RetryConfig { max_attempts: 0, ..Default::default() }).build().is_err());
        assert!(ok_builder().client_secret("").build().is_err());
    }

    #[test]
    fn env_lookup_names_the_missing_variable() {
        let e = MarketoClient::builder_from_lookup(|k| match k {
            "SALESYNC_MARKETO_URL" => Some("https://x.mktorest.com".into()),
            "SALESYNC_MARKETO_CLIENT_ID" => Some("id".into()),
            _ => None,
        })
        .unwrap_err();
        assert!(matches!(e, salesync_core::Error::Config { ref key, .. } if key == "SALESYNC_MARKETO_CLIENT_SECRET"));
        let b = MarketoClient::builder_from_lookup(|k| match k {
            "SALESYNC_MARKETO_URL" => Some("https://x.mktorest.com".into()),
            "SALESYNC_MARKETO_CLIENT_ID" => Some("id".into()),
            "SALESYNC_MARKETO_CLIENT_SECRET" => Some("s3cret".into()),
            "SALESYNC_MARKETO_RATE_CALLS" => Some("50".into()),
            "SALESYNC_MARKETO_RATE_WINDOW_SECS" => Some("20".into()),
            "SALESYNC_MARKETO_MAX_CONCURRENT" => Some("5".into()),
            _ => None,
        })
        .unwrap();
        assert!(!format!("{b:?}").contains("s3cret"));
        let c = b.build().unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        let b = ok_builder().base_url("https://u:pa55@x.mktorest.com/?k=v4lue");
        assert!(!format!("{b:?}").contains("pa55") && !format!("{b:?}").contains("v4lue"), "{b:?}");
        let bad = MarketoClient::builder_from_lookup(|k| match k {
            "SALESYNC_MARKETO_RATE_CALLS" => Some("many".into()),
            _ => Some("x".into()),
        })
        .unwrap_err();
        assert!(matches!(bad, salesync_core::Error::Config { ref key, .. } if key == "SALESYNC_MARKETO_RATE_CALLS"));
    }

    #[test]
    fn config_keys_parse() {
        assert_eq!("client_id".parse::<ConfigKey>().unwrap(), ConfigKey::ClientId);
        assert_eq!("SALESYNC_MARKETO_RATE_WINDOW_SECS".parse::<ConfigKey>().unwrap(), ConfigKey::RateWindowSecs);
        assert!("nope".parse::<ConfigKey>().is_err());
    }

    #[test]
    fn retry_defaults_are_marketos() {
        let r = RetryConfig::default();
        assert_eq!(
            (r.max_attempts, r.base_delay, r.max_delay),
            (5, Duration::from_millis(500), Duration::from_secs(30))
        );
    }
}
