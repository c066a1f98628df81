//! The URL policy of a service endpoint: `https://`, plain `http://` only to loopback or when
//! allowed explicitly, no credentials; and the environment switch that allows plain http.

use salesync_core::endpoint::{is_loopback, redacted};
use url::Url;

/// The variable that allows plain http for every connector at once (`true`/`false`); a
/// connector's own variable (e.g. `SALESYNC_MARKETO_ALLOW_INSECURE_HTTP`) wins when both are set.
pub const ALLOW_INSECURE_HTTP_VAR: &str = "SALESYNC_ALLOW_INSECURE_HTTP";

/// Why [`check_url`] refused a URL. Messages name the URL without userinfo, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The text does not parse as a URL.
    #[error("is not a URL: {0}")]
    NotAUrl(#[from] url::ParseError),
    /// Plain `http://` to a host that is not loopback, without the setting that allows it.
    #[error(
        "{url} is plain http:// to a host that is not loopback; use https://, or allow it explicitly with \
         allow_insecure_http(true) (environment: {own_var}=true or {ALLOW_INSECURE_HTTP_VAR}=true)"
    )]
    InsecureHttp {
        /// The URL, redacted.
        url: String,
        /// The connector's own variable that allows plain http.
        own_var: &'static str,
    },
    /// A scheme other than `http` or `https`.
    #[error("{url} has unsupported scheme {scheme:?} (use https://)")]
    UnsupportedScheme {
        /// The URL, redacted.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// No host (or an empty one).
    #[error("must be an absolute http(s) URL with a host")]
    NoHost,
    /// The URL carries a user name or a password.
    #[error("{url} must not carry credentials (use client_id/client_secret)")]
    Credentials {
        /// The URL, redacted.
        url: String,
    },
}

/// Parses a service URL and enforces the policy: `https://` always; `http://` only when
/// `allow_insecure_http` or to loopback (`127.0.0.0/8`, `::1`, `localhost`); a host; no
/// userinfo. `own_var` is the connector's variable named in the plain-http refusal. The query and
/// fragment are dropped from the URL returned (paths are appended to it, and they may hold
/// anything).
pub fn check_url(raw: &str, allow_insecure_http: bool, own_var: &'static str) -> Result<Url, UrlError> {
    let mut url = Url::parse(raw.trim())?;
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure_http || is_loopback(&url) => {}
        "http" => return Err(UrlError::InsecureHttp { url: redacted(&url), own_var }),
        other => return Err(UrlError::UnsupportedScheme { url: redacted(&url), scheme: other.to_string() }),
    }
    if url.cannot_be_a_base() || url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials { url: redacted(&url) });
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`; any case, surrounding space ignored).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A variable whose value is not a boolean (see [`parse_bool`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not true or false")]
pub struct BoolVarError {
    /// The variable.
    pub var: &'static str,
    /// Its value.
    pub value: String,
}

/// Whether plain http is allowed according to a variable lookup (the environment): the
/// connector's own variable `own_var` when it is set and not blank, else
/// [`ALLOW_INSECURE_HTTP_VAR`], else `None` (not configured).
pub fn allow_insecure_http_from(
    lookup: impl Fn(&str) -> Option<String>,
    own_var: &'static str,
) -> Result<Option<bool>, BoolVarError> {
    let get = |var: &'static str| lookup(var).filter(|v| !v.trim().is_empty()).map(|v| (var, v));
    match get(own_var).or_else(|| get(ALLOW_INSECURE_HTTP_VAR)) {
        Some((var, value)) => parse_bool(&value).map(Some).ok_or(BoolVarError { var, value }),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "SALESYNC_TEST_ALLOW_INSECURE_HTTP";

    #[test]
    fn https_and_loopback_http_pass() {
        for u in ["https://x.example.com", "http://127.0.0.1:8080", "http://localhost:8080/", "http://[::1]:8080"] {
            assert!(check_url(u, false, OWN).is_ok(), "{u}");
        }
        assert!(check_url("http://127.1.2.3:8080", false, OWN).is_ok(), "all of 127.0.0.0/8 is loopback");
        assert!(check_url("http://LOCALHOST:8080", false, OWN).is_ok());
        assert!(check_url("http://example.com", true, OWN).is_ok());
        let u = check_url(" https://x.example.com/a?sig=s3cret#f ", false, OWN).unwrap();
        assert_eq!(u.as_str(), "https://x.example.com/a");
    }

    #[test]
    fn refusals_name_the_url_and_the_setting_without_secrets() {
        for u in ["http://example.com/?token=q5ecret", "http://10.0.0.8:8080", "http://localhost.evil.example"] {
            let e = check_url(u, false, OWN).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, UrlError::InsecureHttp { .. }), "{msg}");
            assert!(msg.contains(Url::parse(u).unwrap().host_str().unwrap()), "{msg}");
            assert!(msg.contains("allow_insecure_http") && msg.contains(OWN) && msg.contains(ALLOW_INSECURE_HTTP_VAR));
            assert!(!msg.contains("q5ecret"), "{msg}");
        }
        assert!(matches!(check_url("ftp://example.com", false, OWN), Err(UrlError::UnsupportedScheme { .. })));
        assert!(matches!(check_url("not a url", false, OWN), Err(UrlError::NotAUrl(_))));
        let e = check_url("https://u:pa55w0rd@x.example.com", false, OWN).unwrap_err();
        assert!(matches!(e, UrlError::Credentials { .. }) && !format!("{e} {e:?}").contains("pa55w0rd"), "{e:?}");
    }

    #[test]
    fn booleans_parse() {
        for t in ["1", "true", " TRUE ", "yes", "on"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "false", "No", "off"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn the_own_variable_wins_over_the_global_one() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(allow_insecure_http_from(vars(&[]), OWN), Ok(None));
        assert_eq!(allow_insecure_http_from(vars(&[(OWN, "true")]), OWN), Ok(Some(true)));
        assert_eq!(allow_insecure_http_from(vars(&[(ALLOW_INSECURE_HTTP_VAR, "1")]), OWN), Ok(Some(true)));
        let both = vars(&[(ALLOW_INSECURE_HTTP_VAR, "true"), (OWN, "false")]);
        assert_eq!(allow_insecure_http_from(both, OWN), Ok(Some(false)));
        let blank_own = vars(&[(ALLOW_INSECURE_HTTP_VAR, "yes"), (OWN, "  ")]);
        assert_eq!(allow_insecure_http_from(blank_own, OWN), Ok(Some(true)));
        let e = allow_insecure_http_from(vars(&[(ALLOW_INSECURE_HTTP_VAR, "maybe")]), OWN).unwrap_err();
        assert_eq!(e.var, ALLOW_INSECURE_HTTP_VAR);
        assert_eq!(e.to_string(), "\"maybe\" is not true or false");
    }
}
