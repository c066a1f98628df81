//! Connector configuration plumbing, written once for both connectors: the keys a connector
//! reads from the environment, their textual values, the required credentials and the HTTP
//! client (injected, or built with the connector's timeouts).

use std::str::FromStr;
use std::time::Duration;

use salesync_core::endpoint::redacted_text;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::endpoint::{allow_insecure_http_from, check_url, parse_bool};

/// A setting that is missing or has a value that cannot be used. `key` names the environment
/// variable (for a textual value) or the builder setting (`base_url`, `retry.max_attempts`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration {key}: {reason}")]
pub struct SettingError {
    /// The variable or builder setting.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl SettingError {
    /// An error naming `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { key: key.into(), reason: reason.into() }
    }
}

impl From<SettingError> for salesync_core::Error {
    fn from(e: SettingError) -> Self {
        salesync_core::Error::Config { key: e.key, reason: e.reason }
    }
}

/// The configuration keys of one connector (its `ConfigKey` enum): each is one environment
/// variable under the connector's prefix.
pub trait EnvKey: Copy + Eq + 'static {
    /// Every key, in the order [`builder_from_lookup`] reads them.
    const ALL: &'static [Self];
    /// The prefix of every variable, e.g. `SALESYNC_MARKETO_`.
    const PREFIX: &'static str;
    /// The key that allows plain http (read with the fallback to
    /// [`ALLOW_INSECURE_HTTP_VAR`](crate::ALLOW_INSECURE_HTTP_VAR)).
    const ALLOW_INSECURE_HTTP: Self;

    /// The environment variable of this key.
    fn env_var(self) -> &'static str;

    /// Whether [`builder_from_lookup`] refuses a lookup without this variable.
    fn required(self) -> bool;
}

/// Parses a key from its variable name or its suffix after [`EnvKey::PREFIX`] (`url`,
/// `client_id`, …; any case). The error names the text and `service` (e.g. `Marketo`).
pub fn parse_key<K: EnvKey>(text: &str, service: &str) -> Result<K, SettingError> {
    let norm = text.trim().to_ascii_uppercase();
    let norm = norm.strip_prefix(K::PREFIX).unwrap_or(&norm);
    K::ALL
        .iter()
        .copied()
        .find(|k| k.env_var().strip_prefix(K::PREFIX) == Some(norm))
        .ok_or_else(|| SettingError::new(text, format!("unknown {service} configuration key")))
}

/// Fills a builder from a variable lookup (the environment): for every key of `K` whose variable
/// is set and not blank, `set(builder, key, value)` (the builder's `with_config`). The plain-http
/// key is read with [`allow_insecure_http_from`] (the connector's variable, else the global one)
/// and handed to `set` as `true` or `false`. A required key without a value is a
/// [`SettingError`] naming its variable (`is not set`).
pub fn builder_from_lookup<K: EnvKey, B, E: From<SettingError>>(
    lookup: impl Fn(&str) -> Option<String>,
    mut builder: B,
    set: impl Fn(B, K, &str) -> Result<B, E>,
) -> Result<B, E> {
    for &key in K::ALL {
        let value = if key == K::ALLOW_INSECURE_HTTP {
            allow_insecure_http_from(&lookup, key.env_var())
                .map_err(|e| SettingError::new(e.var, e.to_string()))?
                .map(|allow| allow.to_string())
        } else {
            lookup(key.env_var()).filter(|v| !v.trim().is_empty())
        };
        match value {
            Some(v) => builder = set(builder, key, &v)?,
            None if key.required() => return Err(SettingError::new(key.env_var(), "is not set").into()),
            None => {}
        }
    }
    Ok(builder)
}

/// A variable lookup over fixed pairs, for [`builder_from_lookup`] without touching the process
/// environment (tests, hosts that keep their settings elsewhere).
pub fn lookup_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// A number from its textual value (surrounding space ignored).
pub fn parse_number<T: FromStr>(key: &str, value: &str) -> Result<T, SettingError> {
    value.trim().parse().map_err(|_| SettingError::new(key, format!("{value:?} is not a positive number")))
}

/// A boolean from its textual value (see [`parse_bool`]).
pub fn parse_flag(key: &str, value: &str) -> Result<bool, SettingError> {
    parse_bool(value).ok_or_else(|| SettingError::new(key, format!("{value:?} is not true or false")))
}

/// A required text setting (a client id): present and not blank.
pub fn required_text(key: &str, value: Option<String>) -> Result<String, SettingError> {
    value.filter(|v| !v.trim().is_empty()).ok_or_else(|| SettingError::new(key, "is required"))
}

/// A required secret setting (a client secret): present; `allow_blank` decides whether a blank
/// one passes.
pub fn required_secret(
    key: &str,
    value: Option<SecretString>,
    allow_blank: bool,
) -> Result<SecretString, SettingError> {
    let secret = value.ok_or_else(|| SettingError::new(key, "is required"))?;
    if !allow_blank && secret.expose_secret().trim().is_empty() {
        return Err(SettingError::new(key, "is empty"));
    }
    Ok(secret)
}

/// A duration setting that must be positive (a timeout).
pub fn positive(key: &str, value: Duration) -> Result<Duration, SettingError> {
    if value.is_zero() { Err(SettingError::new(key, "must be positive")) } else { Ok(value) }
}

/// The `Debug` text of an optional secret: `Some("[redacted]")` or `None`, never the value.
pub fn redacted_secret(secret: &Option<SecretString>) -> Option<&'static str> {
    secret.as_ref().map(|_| "[redacted]")
}

/// The connector's HTTP client: the one the host injected (proxies, custom TLS roots; its
/// timeouts are then its own), else `make` built (rustls, certificates verified; the
/// connector's timeouts and user agent). A build failure is a [`SettingError`] on
/// `http_client`, without any URL.
pub fn http_client(
    injected: Option<reqwest::Client>,
    make: impl FnOnce() -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, SettingError> {
    match injected {
        Some(client) => Ok(client),
        None => make().build().map_err(|e| SettingError::new("http_client", e.without_url().to_string())),
    }
}

/// The settings every connector's builder holds the same way: where the service is, the client
/// credentials, the timeout, the plain-http switch and an injected HTTP client. `Debug` redacts
/// the URL and never shows the secret.
#[derive(Clone, Default)]
pub struct Connection {
    /// The service URL as given (checked by [`check`](Self::check)).
    pub url: Option<String>,
    /// The client id.
    pub client_id: Option<String>,
    /// The client secret.
    pub client_secret: Option<SecretString>,
    /// The timeout (`None`: the connector's default).
    pub timeout: Option<Duration>,
    /// Plain `http://` to a host that is not loopback is allowed.
    pub allow_insecure_http: bool,
    /// The host's own HTTP client, used instead of one built with the timeout.
    pub http: Option<reqwest::Client>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url.as_deref().map(redacted_text))
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted_secret(&self.client_secret))
            .field("timeout", &self.timeout)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("http_client", &self.http.as_ref().map(|_| "injected"))
            .finish()
    }
}

/// A [`Connection`] whose every setting passed [`Connection::check`].
#[derive(Debug)]
pub struct Checked {
    /// The service URL (the policy of [`check_url`] enforced; no query or fragment).
    pub url: Url,
    /// The client id, not blank.
    pub client_id: String,
    /// The client secret.
    pub client_secret: SecretString,
    /// The timeout, positive.
    pub timeout: Duration,
    /// The HTTP client: the injected one, or one built with the timeout.
    pub http: reqwest::Client,
}

/// How a connector checks its [`Connection`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectionRules {
    /// The setting the URL errors name (`base_url`, `login_url`).
    pub url_key: &'static str,
    /// The connector's variable that allows plain http, named in the refusal.
    pub insecure_http_var: &'static str,
    /// The timeout when none is set.
    pub default_timeout: Duration,
    /// Whether a blank client secret passes.
    pub allow_blank_secret: bool,
}

impl Connection {
    /// Checks the settings: the URL ([`check_url`]), a client id that is not blank, a client
    /// secret, a positive timeout; and builds the HTTP client with `make(timeout)` unless one was
    /// injected ([`http_client`]). The error names the setting.
    pub fn check(
        self,
        rules: ConnectionRules,
        make: impl FnOnce(Duration) -> reqwest::ClientBuilder,
    ) -> Result<Checked, SettingError> {
        let raw = required_text(rules.url_key, self.url)?;
        let url = check_url(&raw, self.allow_insecure_http, rules.insecure_http_var)
            .map_err(|e| SettingError::new(rules.url_key, e.to_string()))?;
        let client_id = required_text("client_id", self.client_id)?;
        let client_secret = required_secret("client_secret", self.client_secret, rules.allow_blank_secret)?;
        let timeout = positive("timeout", self.timeout.unwrap_or(rules.default_timeout))?;
        let http = http_client(self.http, || make(timeout))?;
        Ok(Checked { url, client_id, client_secret, timeout, http })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Key {
        Url,
        Calls,
        Allow,
    }

    impl EnvKey for Key {
        const ALL: &'static [Key] = &[Key::Url, Key::Calls, Key::Allow];
        const PREFIX: &'static str = "SALESYNC_TEST_";
        const ALLOW_INSECURE_HTTP: Key = Key::Allow;

        fn env_var(self) -> &'static str {
            ["SALESYNC_TEST_URL", "SALESYNC_TEST_RATE_CALLS", "SALESYNC_TEST_ALLOW_INSECURE_HTTP"][self as usize]
        }

        fn required(self) -> bool {
            self == Key::Url
        }
    }

    type Seen = Vec<(Key, String)>;

    fn read(pairs: &[(&str, &str)]) -> Result<Seen, SettingError> {
        builder_from_lookup(lookup_from(pairs), Vec::new(), |mut seen: Seen, k: Key, v: &str| {
            if k == Key::Calls {
                parse_number::<u32>(k.env_var(), v)?;
            }
            seen.push((k, v.to_string()));
            Ok::<_, SettingError>(seen)
        })
    }

    #[test]
    fn keys_parse_by_variable_or_suffix() {
        assert_eq!(parse_key::<Key>("url", "Test"), Ok(Key::Url));
        assert_eq!(parse_key::<Key>(" SALESYNC_TEST_RATE_CALLS ", "Test"), Ok(Key::Calls));
        let e = parse_key::<Key>("nope", "Test").unwrap_err();
        assert_eq!((e.key.as_str(), e.reason.as_str()), ("nope", "unknown Test configuration key"));
    }

    #[test]
    fn lookups_fill_set_keys_and_name_missing_ones() {
        let e = read(&[]).unwrap_err();
        assert_eq!((e.key.as_str(), e.reason.as_str()), ("SALESYNC_TEST_URL", "is not set"));
        assert_eq!(
            read(&[("SALESYNC_TEST_URL", "u"), ("SALESYNC_TEST_RATE_CALLS", " ")]),
            Ok(vec![(Key::Url, "u".into())])
        );
        let e = read(&[("SALESYNC_TEST_URL", "u"), ("SALESYNC_TEST_RATE_CALLS", "many")]).unwrap_err();
        assert_eq!(e.key, "SALESYNC_TEST_RATE_CALLS");
        let global = read(&[("SALESYNC_TEST_URL", "u"), (crate::ALLOW_INSECURE_HTTP_VAR, "yes")]).unwrap();
        assert_eq!(global[1], (Key::Allow, "true".into()));
        let e = read(&[("SALESYNC_TEST_URL", "u"), (crate::ALLOW_INSECURE_HTTP_VAR, "maybe")]).unwrap_err();
        assert_eq!(e.key, crate::ALLOW_INSECURE_HTTP_VAR);
    }

    #[test]
    fn values_and_credentials_are_checked() {
        assert_eq!(parse_flag("k", " On "), Ok(true));
        assert_eq!(parse_flag("k", "2").unwrap_err().reason, "\"2\" is not true or false");
        assert_eq!(parse_number::<f64>("k", " 2.5 "), Ok(2.5));
        assert_eq!(required_text("client_id", Some(" ".into())).unwrap_err().reason, "is required");
        assert!(required_secret("client_secret", Some(SecretString::from(String::new())), false).is_err());
        assert!(required_secret("client_secret", Some(SecretString::from(String::new())), true).is_ok());
        assert!(required_secret("client_secret", None, true).is_err());
        assert!(positive("timeout", Duration::ZERO).is_err());
        assert_eq!(redacted_secret(&Some(SecretString::from("s3cret".to_string()))), Some("[redacted]"));
        let rules = ConnectionRules {
            url_key: "base_url",
            insecure_http_var: "SALESYNC_TEST_ALLOW_INSECURE_HTTP",
            default_timeout: Duration::from_secs(5),
            allow_blank_secret: false,
        };
        let conn = Connection {
            url: Some("https://u:pa55@x.example.com/?k=v4lue".into()),
            client_id: Some("id".into()),
            client_secret: Some(SecretString::from("s3cret".to_string())),
            ..Connection::default()
        };
        let shown = format!("{conn:?}");
        assert!(!shown.contains("pa55") && !shown.contains("v4lue") && !shown.contains("s3cret"), "{shown}");
        assert_eq!(conn.clone().check(rules, |_| reqwest::Client::builder()).unwrap_err().key, "base_url");
        let ok = Connection { url: Some("https://x.example.com/a?q=1".into()), ..conn };
        let checked = ok.clone().check(rules, |_| reqwest::Client::builder()).unwrap();
        assert_eq!((checked.url.as_str(), checked.timeout), ("https://x.example.com/a", Duration::from_secs(5)));
        let zero = Connection { timeout: Some(Duration::ZERO), ..ok };
        assert_eq!(zero.check(rules, |_| reqwest::Client::builder()).unwrap_err().key, "timeout");
        let e: salesync_core::Error = SettingError::new("k", "r").into();
        assert!(matches!(e, salesync_core::Error::Config { ref key, ref reason } if key == "k" && reason == "r"));
    }
}
