//! Configuration: a TOML file (`--config`, default `salesync.toml` when present) whose every key
//! can be overridden by an environment variable; secrets come from the environment only.

use std::path::Path;
use std::time::Duration;

use salesync_http::parse_flag;
use serde::Deserialize;

/// A configuration problem: names the key or variable and what is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// The key or environment variable.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

fn err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { key: key.to_string(), reason: reason.into() }
}

/// How the initial sync reads Marketo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitialModeSetting {
    /// Bulk extract when the instance allows it, REST otherwise.
    #[default]
    Auto,
    /// Always bulk extract.
    Bulk,
    /// Always REST.
    Rest,
}

/// The whole configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Store URL (`sqlite://salesync.db` by default).
    pub store: String,
    /// Marketo connection.
    pub marketo: Option<Endpoint>,
    /// Salesforce connection.
    pub salesforce: Option<Endpoint>,
    /// Salesforce refresh token (environment only).
    pub salesforce_refresh_token: Option<Secret>,
    /// Salesforce API version.
    pub salesforce_api_version: String,
    /// Marketo calls allowed per window (shared with other integrations).
    pub marketo_rate_calls: u32,
    /// Marketo rate window.
    pub marketo_rate_window: Duration,
    /// Marketo calls in flight.
    pub marketo_max_concurrent: u32,
    /// Incremental poll interval.
    pub poll_interval: Duration,
    /// Initial sync mode.
    pub initial_mode: InitialModeSetting,
    /// REST sweep: id chunks read at once (1..=10, default 4).
    pub rest_reads_in_flight: u32,
    /// This process's id in the Marketo pull's leader lease (default: random per process).
    pub worker_id: Option<String>,
    /// How long the leader lease and outbox claims last without renewal (default 60 s).
    pub lease_ttl: Duration,
    /// Drift repair: a pass reconciles when the last full read is this old (default weekly;
    /// `None`: off, from `0`).
    pub reconcile_every: Option<Duration>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("store", &redact_url(&self.store))
            .field("marketo", &self.marketo)
            .field("salesforce", &self.salesforce)
            .field("salesforce_api_version", &self.salesforce_api_version)
            .field("poll_interval", &self.poll_interval)
            .field("initial_mode", &self.initial_mode)
            .field("worker_id", &self.worker_id)
            .field("lease_ttl", &self.lease_ttl)
            .field("reconcile_every", &self.reconcile_every)
            .finish_non_exhaustive()
    }
}

/// A base URL with client credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL.
    pub url: String,
    /// Client id.
    pub client_id: String,
    /// Client secret (environment only; never printed).
    pub client_secret: Secret,
    /// Allow a plain `http://` URL to a host that is not loopback (default false; loopback is
    /// always allowed). From `SALESYNC_MARKETO_ALLOW_INSECURE_HTTP` /
    /// `SALESYNC_SALESFORCE_ALLOW_INSECURE_HTTP`, else `SALESYNC_ALLOW_INSECURE_HTTP`, else the
    /// file's `[marketo]`/`[salesforce]` then top-level `allow_insecure_http`.
    pub allow_insecure_http: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &redact_url(&self.url))
            .field("client_id", &self.client_id)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish_non_exhaustive()
    }
}

/// A secret from the environment: no `Display`, a redacted `Debug`; handed to the connectors
/// (which keep it in a `SecretString`) through `Into<String>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<Secret> for String {
    fn from(s: Secret) -> String {
        s.0
    }
}

/// Replaces a password in a URL's userinfo, and the value of a `password`/`secret`/`token`
/// query parameter, with `***`.
pub fn redact_url(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (url, None),
    };
    // The authority ends at the first '/' after "://"; a '@' in the path is not userinfo.
    let mut out = match url.find("://") {
        Some(s) => {
            let rest = &url[s + 3..];
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            match authority.rfind('@') {
                Some(at) => match authority[..at].find(':') {
                    Some(colon) => format!("{}{}:***{}", &url[..s + 3], &authority[..colon], &rest[at..]),
                    None => url.to_string(),
                },
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    if let Some(q) = query {
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

fn is_secret_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "passwd", "pwd", "secret", "token"].iter().any(|s| k.contains(s))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    store: Option<String>,
    allow_insecure_http: Option<bool>,
    #[serde(default)]
    marketo: FileEndpoint,
    #[serde(default)]
    salesforce: FileEndpoint,
    #[serde(default)]
    sync: FileSync,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEndpoint {
    url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    api_version: Option<String>,
    rate_calls: Option<u32>,
    rate_window_secs: Option<u64>,
    max_concurrent: Option<u32>,
    allow_insecure_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSync {
    poll_interval_secs: Option<u64>,
    poll_interval_ms: Option<u64>,
    initial_mode: Option<InitialModeSetting>,
    rest_reads_in_flight: Option<u32>,
    worker_id: Option<String>,
    lease_ttl_ms: Option<u64>,
    reconcile_every_secs: Option<u64>,
}

/// Environment variables, by name.
pub mod vars {
    /// Store URL.
    pub const STORE: &str = "SALESYNC_STORE";
    /// Marketo base URL.
    pub const MARKETO_URL: &str = "SALESYNC_MARKETO_URL";
    /// Marketo client id.
    pub const MARKETO_CLIENT_ID: &str = "SALESYNC_MARKETO_CLIENT_ID";
    /// Marketo client secret.
    pub const MARKETO_CLIENT_SECRET: &str = "SALESYNC_MARKETO_CLIENT_SECRET";
    /// Marketo calls per window.
    pub const MARKETO_RATE_CALLS: &str = "SALESYNC_MARKETO_RATE_CALLS";
    /// Marketo rate window in seconds.
    pub const MARKETO_RATE_WINDOW_SECS: &str = "SALESYNC_MARKETO_RATE_WINDOW_SECS";
    /// Marketo concurrent calls.
    pub const MARKETO_MAX_CONCURRENT: &str = "SALESYNC_MARKETO_MAX_CONCURRENT";
    /// Salesforce login URL.
    pub const SALESFORCE_URL: &str = "SALESYNC_SALESFORCE_URL";
    /// Salesforce client id.
    pub const SALESFORCE_CLIENT_ID: &str = "SALESYNC_SALESFORCE_CLIENT_ID";
    /// Salesforce client secret.
    pub const SALESFORCE_CLIENT_SECRET: &str = "SALESYNC_SALESFORCE_CLIENT_SECRET";
    /// Salesforce refresh token.
    pub const SALESFORCE_REFRESH_TOKEN: &str = "SALESYNC_SALESFORCE_REFRESH_TOKEN";
    /// Salesforce API version.
    pub const SALESFORCE_API_VERSION: &str = "SALESYNC_SALESFORCE_API_VERSION";
    /// Poll interval in seconds.
    pub const POLL_INTERVAL_SECS: &str = "SALESYNC_POLL_INTERVAL_SECS";
    /// Initial sync mode.
    pub const INITIAL_MODE: &str = "SALESYNC_INITIAL_MODE";
    /// REST sweep: id chunks read at once.
    pub const REST_READS_IN_FLIGHT: &str = "SALESYNC_REST_READS_IN_FLIGHT";
    /// Poll interval in milliseconds (overrides the seconds when set).
    pub const POLL_INTERVAL_MS: &str = "SALESYNC_POLL_INTERVAL_MS";
    /// This process's leader lease holder id.
    pub const WORKER_ID: &str = "SALESYNC_WORKER_ID";
    /// Leader lease and outbox claim TTL in milliseconds.
    pub const LEASE_TTL_MS: &str = "SALESYNC_LEASE_TTL_MS";
    /// Drift repair interval in seconds (`0`: off).
    pub const RECONCILE_EVERY_SECS: &str = "SALESYNC_RECONCILE_EVERY_SECS";
    /// `true` allows plain `http://` Marketo and Salesforce URLs to hosts that are not loopback.
    pub const ALLOW_INSECURE_HTTP: &str = salesync_http::ALLOW_INSECURE_HTTP_VAR;
    /// `true` allows a plain `http://` Marketo URL to a host that is not loopback.
    pub const MARKETO_ALLOW_INSECURE_HTTP: &str = "SALESYNC_MARKETO_ALLOW_INSECURE_HTTP";
    /// `true` allows a plain `http://` Salesforce URL to a host that is not loopback.
    pub const SALESFORCE_ALLOW_INSECURE_HTTP: &str = "SALESYNC_SALESFORCE_ALLOW_INSECURE_HTTP";
}

impl Config {
    /// Loads `file` (if given; else `salesync.toml` when it exists) and applies `env` overrides.
    pub fn load(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let default = Path::new("salesync.toml");
        let path = match file {
            Some(p) => Some(p),
            None if default.exists() => Some(default),
            None => None,
        };
        let fc: FileConfig = match path {
            Some(p) => {
                let key = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|e| err(&key, format!("cannot read: {e}")))?;
                toml::from_str(&text).map_err(|e| err(&key, e.message().to_string()))?
            }
            None => FileConfig::default(),
        };
        if fc.marketo.client_secret.is_some() {
            return Err(err(
                "marketo.client_secret",
                format!("secrets come from the environment only; set {}", vars::MARKETO_CLIENT_SECRET),
            ));
        }
        if fc.salesforce.client_secret.is_some() || fc.salesforce.refresh_token.is_some() {
            return Err(err(
                "salesforce.client_secret",
                format!("secrets come from the environment only; set {}", vars::SALESFORCE_CLIENT_SECRET),
            ));
        }
        let get = |var: &str, file: Option<String>| env(var).filter(|v| !v.is_empty()).or(file);
        let num = |var: &str, file: Option<u64>| -> Result<Option<u64>, ConfigError> {
            match env(var).filter(|v| !v.is_empty()) {
                Some(v) => v.trim().parse().map(Some).map_err(|_| err(var, format!("{v:?} is not a whole number"))),
                None => Ok(file),
            }
        };
        let flag = |var: &str| -> Result<Option<bool>, ConfigError> {
            match env(var).filter(|v| !v.trim().is_empty()) {
                Some(v) => parse_flag(var, &v).map(Some).map_err(|e| err(var, e.reason)),
                None => Ok(None),
            }
        };
        let allow_all = flag(vars::ALLOW_INSECURE_HTTP)?;
        let endpoint = |url_var: &str,
                        id_var: &str,
                        secret_var: &str,
                        allow_var: &str,
                        f: &FileEndpoint|
         -> Result<Option<Endpoint>, ConfigError> {
            let url = get(url_var, f.url.clone());
            let id = get(id_var, f.client_id.clone());
            let secret = env(secret_var).filter(|v| !v.is_empty());
            let allow_insecure_http =
                flag(allow_var)?.or(allow_all).or(f.allow_insecure_http).or(fc.allow_insecure_http).unwrap_or(false);
            match (url, id, secret) {
                (None, None, None) => Ok(None),
                (Some(url), Some(client_id), Some(client_secret)) => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(err(url_var, format!("{:?} is not an http(s) URL", redact_url(&url))));
                    }
                    Ok(Some(Endpoint { url, client_id, client_secret: Secret(client_secret), allow_insecure_http }))
                }
                (None, _, _) => Err(err(url_var, "is not set")),
                (_, None, _) => Err(err(id_var, "is not set")),
                (_, _, None) => Err(err(secret_var, "is not set")),
            }
        };
        let initial_mode = match env(vars::INITIAL_MODE).filter(|v| !v.is_empty()) {
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "auto" => InitialModeSetting::Auto,
                "bulk" => InitialModeSetting::Bulk,
                "rest" => InitialModeSetting::Rest,
                _ => return Err(err(vars::INITIAL_MODE, format!("{v:?} is not one of auto, bulk, rest"))),
            },
            None => fc.sync.initial_mode.unwrap_or_default(),
        };
        let store = get(vars::STORE, fc.store).unwrap_or_else(|| "sqlite://salesync.db".to_string());
        let poll_interval = match num(vars::POLL_INTERVAL_MS, fc.sync.poll_interval_ms)? {
            Some(ms) => Duration::from_millis(ms.max(1)),
            None => {
                Duration::from_secs(num(vars::POLL_INTERVAL_SECS, fc.sync.poll_interval_secs)?.unwrap_or(60).max(1))
            }
        };
        let lease_ttl = Duration::from_millis(num(vars::LEASE_TTL_MS, fc.sync.lease_ttl_ms)?.unwrap_or(60_000));
        if lease_ttl < Duration::from_millis(100) {
            return Err(err(vars::LEASE_TTL_MS, "must be at least 100 ms"));
        }
        let rest_reads_in_flight = match num(vars::REST_READS_IN_FLIGHT, fc.sync.rest_reads_in_flight.map(u64::from))? {
            Some(n @ 1..=10) => n as u32,
            Some(n) => return Err(err(vars::REST_READS_IN_FLIGHT, format!("{n} is not between 1 and 10"))),
            None => 4,
        };
        let reconcile_every =
            match num(vars::RECONCILE_EVERY_SECS, fc.sync.reconcile_every_secs)?.unwrap_or(7 * 24 * 3600) {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            };
        let worker_id = get(vars::WORKER_ID, fc.sync.worker_id).map(|h| h.trim().to_string()).filter(|h| !h.is_empty());
        Ok(Config {
            marketo: endpoint(
                vars::MARKETO_URL,
                vars::MARKETO_CLIENT_ID,
                vars::MARKETO_CLIENT_SECRET,
                vars::MARKETO_ALLOW_INSECURE_HTTP,
                &fc.marketo,
            )?,
            salesforce: endpoint(
                vars::SALESFORCE_URL,
                vars::SALESFORCE_CLIENT_ID,
                vars::SALESFORCE_CLIENT_SECRET,
                vars::SALESFORCE_ALLOW_INSECURE_HTTP,
                &fc.salesforce,
            )?,
            salesforce_refresh_token: env(vars::SALESFORCE_REFRESH_TOKEN).filter(|v| !v.is_empty()).map(Secret),
            salesforce_api_version: get(vars::SALESFORCE_API_VERSION, fc.salesforce.api_version)
                .unwrap_or_else(|| "v60.0".into()),
            marketo_rate_calls: num(vars::MARKETO_RATE_CALLS, fc.marketo.rate_calls.map(u64::from))?
                .unwrap_or(100)
                .clamp(1, 100) as u32,
            marketo_rate_window: Duration::from_secs(
                num(vars::MARKETO_RATE_WINDOW_SECS, fc.marketo.rate_window_secs)?.unwrap_or(20).max(1),
            ),
            marketo_max_concurrent: num(vars::MARKETO_MAX_CONCURRENT, fc.marketo.max_concurrent.map(u64::from))?
                .unwrap_or(10)
                .clamp(1, 10) as u32,
            poll_interval,
            initial_mode,
            rest_reads_in_flight,
            worker_id,
            lease_ttl,
            reconcile_every,
            store,
        })
    }

    /// The Marketo endpoint, or a configuration error naming the missing variable.
    pub fn require_marketo(&self) -> Result<&Endpoint, ConfigError> {
        self.marketo.as_ref().ok_or_else(|| err(vars::MARKETO_URL, "is not set (Marketo is not configured)"))
    }

    /// The Salesforce endpoint, or a configuration error naming the missing variable.
    pub fn require_salesforce(&self) -> Result<&Endpoint, ConfigError> {
        self.salesforce.as_ref().ok_or_else(|| err(vars::SALESFORCE_URL, "is not set (Salesforce is not configured)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salesync_http::lookup_from as env;

    #[test]
    fn defaults_without_file_or_env() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.store, "sqlite://salesync.db");
        assert!(c.marketo.is_none());
        assert_eq!(c.poll_interval, Duration::from_secs(60));
        assert_eq!(c.rest_reads_in_flight, 4);
        assert_eq!(
            Config::load(None, &env(&[(vars::REST_READS_IN_FLIGHT, "11")])).unwrap_err().key,
            vars::REST_READS_IN_FLIGHT
        );
        assert_eq!(c.require_marketo().unwrap_err().key, vars::MARKETO_URL);
    }

    #[test]
    fn env_overrides_file_and_secrets_come_from_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "store = \"sqlite://a.db\"\n[marketo]\nurl = \"http://127.0.0.1:1\"\nclient_id = \"file-id\"\n[sync]\npoll_interval_secs = 5\n").unwrap();
        let c = Config::load(
            Some(&path),
            &env(&[(vars::MARKETO_CLIENT_ID, "env-id"), (vars::MARKETO_CLIENT_SECRET, "s3cret")]),
        )
        .unwrap();
        assert_eq!(c.store, "sqlite://a.db");
        let m = c.marketo.clone().unwrap();
        assert_eq!((m.client_id.as_str(), m.client_secret.expose()), ("env-id", "s3cret"));
        assert_eq!(c.poll_interval, Duration::from_secs(5));
        assert!(!format!("{c:?} {c:#?} {m:?}").contains("s3cret"));
        let c = Config::load(
            None,
            &env(&[
                (vars::SALESFORCE_URL, "https://acme.my.salesforce.com"),
                (vars::SALESFORCE_CLIENT_ID, "id"),
                (vars::SALESFORCE_CLIENT_SECRET, "sf-s3cret"),
                (vars::SALESFORCE_REFRESH_TOKEN, "r3fresh"),
            ]),
        )
        .unwrap();
        assert_eq!(c.salesforce_refresh_token.as_ref().map(Secret::expose), Some("r3fresh"));
        let shown = format!("{c:?} {c:#?} {:?} {:?}", c.salesforce, c.salesforce_refresh_token);
        assert!(!shown.contains("s3cret") && !shown.contains("r3fresh"), "{shown}");
    }

    #[test]
    fn errors_name_the_variable() {
        let e = Config::load(None, &env(&[(vars::MARKETO_URL, "http://x")])).unwrap_err();
        assert_eq!(e.key, vars::MARKETO_CLIENT_ID);
        let e = Config::load(None, &env(&[(vars::POLL_INTERVAL_SECS, "soon")])).unwrap_err();
        assert_eq!(e.key, vars::POLL_INTERVAL_SECS);
        let e = Config::load(None, &env(&[(vars::INITIAL_MODE, "fast")])).unwrap_err();
        assert_eq!(e.key, vars::INITIAL_MODE);
        let e = Config::load(None, &env(&[(vars::LEASE_TTL_MS, "5")])).unwrap_err();
        assert_eq!(e.key, vars::LEASE_TTL_MS);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[marketo]\nclient_secret = \"x\"\n").unwrap();
        assert_eq!(Config::load(Some(&path), &env(&[])).unwrap_err().key, "marketo.client_secret");
        std::fs::write(&path, "unknown_key = 1\n").unwrap();
        assert!(Config::load(Some(&path), &env(&[])).unwrap_err().reason.contains("unknown"));
    }

    #[test]
    fn lease_and_fast_poll_settings() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!((c.worker_id.as_deref(), c.lease_ttl), (None, Duration::from_secs(60)));
        let c = Config::load(
            None,
            &env(&[
                (vars::POLL_INTERVAL_SECS, "5"),
                (vars::POLL_INTERVAL_MS, "150"),
                (vars::WORKER_ID, " node-a "),
                (vars::LEASE_TTL_MS, "2000"),
            ]),
        )
        .unwrap();
        assert_eq!(c.poll_interval, Duration::from_millis(150));
        assert_eq!((c.worker_id.as_deref(), c.lease_ttl), (Some("node-a"), Duration::from_secs(2)));
    }

    #[test]
    fn reconcile_interval_defaults_to_weekly_and_zero_turns_it_off() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.reconcile_every, Some(Duration::from_secs(7 * 24 * 3600)));
        let c = Config::load(None, &env(&[(vars::RECONCILE_EVERY_SECS, "3600")])).unwrap();
        assert_eq!(c.reconcile_every, Some(Duration::from_secs(3600)));
        let c = Config::load(None, &env(&[(vars::RECONCILE_EVERY_SECS, "0")])).unwrap();
        assert_eq!(c.reconcile_every, None);
        let e = Config::load(None, &env(&[(vars::RECONCILE_EVERY_SECS, "weekly")])).unwrap_err();
        assert_eq!(e.key, vars::RECONCILE_EVERY_SECS);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[sync]\nreconcile_every_secs = 86400\n").unwrap();
        let c = Config::load(Some(&path), &env(&[])).unwrap();
        assert_eq!(c.reconcile_every, Some(Duration::from_secs(86400)));
    }

    #[test]
    fn insecure_http_is_off_unless_asked_for() {
        let both = [
            (vars::MARKETO_URL, "http://mkto.internal"),
            (vars::MARKETO_CLIENT_ID, "id"),
            (vars::MARKETO_CLIENT_SECRET, "s"),
            (vars::SALESFORCE_URL, "http://sf.internal"),
            (vars::SALESFORCE_CLIENT_ID, "id"),
            (vars::SALESFORCE_CLIENT_SECRET, "s"),
        ];
        let load = |extra: &[(&str, &str)], file: Option<&Path>| {
            let mut v = both.to_vec();
            v.extend_from_slice(extra);
            let c = Config::load(file, &env(&v))?;
            Ok::<_, ConfigError>((c.marketo.unwrap().allow_insecure_http, c.salesforce.unwrap().allow_insecure_http))
        };
        assert_eq!(load(&[], None).unwrap(), (false, false));
        assert_eq!(load(&[(vars::ALLOW_INSECURE_HTTP, "true")], None).unwrap(), (true, true));
        assert_eq!(load(&[(vars::MARKETO_ALLOW_INSECURE_HTTP, "true")], None).unwrap(), (true, false));
        let own_wins = [(vars::ALLOW_INSECURE_HTTP, "true"), (vars::SALESFORCE_ALLOW_INSECURE_HTTP, "false")];
        assert_eq!(load(&own_wins, None).unwrap(), (true, false));
        assert_eq!(load(&[(vars::ALLOW_INSECURE_HTTP, "sure")], None).unwrap_err().key, vars::ALLOW_INSECURE_HTTP);
        let e = load(&[(vars::SALESFORCE_ALLOW_INSECURE_HTTP, "2")], None).unwrap_err();
        assert_eq!(e.key, vars::SALESFORCE_ALLOW_INSECURE_HTTP);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "allow_insecure_http = true\n[salesforce]\nallow_insecure_http = false\n").unwrap();
        assert_eq!(load(&[], Some(&path)).unwrap(), (true, false));
        assert_eq!(load(&[(vars::ALLOW_INSECURE_HTTP, "false")], Some(&path)).unwrap(), (false, false));
    }

    #[test]
    fn bad_url_errors_do_not_echo_passwords() {
        let e = Config::load(
            None,
            &env(&[
                (vars::MARKETO_URL, "ftp://u:hunter2@x"),
                (vars::MARKETO_CLIENT_ID, "id"),
                (vars::MARKETO_CLIENT_SECRET, "s"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.key, vars::MARKETO_URL);
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("postgres://user:pw@host/db"), "postgres://user:***@host/db");
        assert_eq!(redact_url("postgres://user:p@ss@host/db"), "postgres://user:***@host/db");
        assert_eq!(
            redact_url("postgres://host/db?sslmode=require&password=pw"),
            "postgres://host/db?sslmode=require&password=***"
        );
        assert_eq!(redact_url("https://x.example/a@b?access_token=t0k"), "https://x.example/a@b?access_token=***");
        assert_eq!(redact_url("postgres://user@host/db"), "postgres://user@host/db");
        assert_eq!(redact_url("sqlite://salesync.db"), "sqlite://salesync.db");
    }
}
