//! Credentials: the access token from Marketo's identity service (`GET /identity/oauth/token`,
//! client credentials), cached in the shared [`TokenCache`](salesync_http::TokenCache) with
//! Marketo's refresh rule.

use std::time::Duration;

use salesync_http::Fresh;
use salesync_http::{ReadError, read_capped};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::client::{MAX_SMALL_BODY, MarketoClient, snippet};
use crate::envelope::probe_error;
use crate::error::MkError;

/// A token as handed to a request: its value and the generation to invalidate on 601/602.
pub(crate) type Token = salesync_http::Token<SecretString>;

/// How long a token just fetched is used, given its `expires_in`.
///
/// Normally until `early` before expiry. Marketo hands out the *same* token with its remaining
/// lifetime until it expires, so a token that already has less than twice `early` left is kept
/// until it actually expires (a 602 then triggers the refresh) instead of being re-fetched on
/// every call.
pub(crate) fn refresh_after(expires_in: Duration, early: Duration) -> Duration {
    if expires_in > early * 2 { expires_in - early } else { expires_in }
}

/// Whether two tokens hold the same value (Marketo re-issues a token until it expires: a
/// rejected value is forgotten under whichever generation it came back).
pub(crate) fn same_secret(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
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
    /// The cached access token, or a fresh one from the identity service.
    pub(crate) async fn token(&self) -> Result<Token, MkError> {
        let early = self.inner.token_refresh_early;
        self.inner
            .tokens
            .get(|| async {
                let (value, expires_in) = self.fetch_token().await?;
                Ok(Fresh { value, refresh_in: Some(refresh_after(expires_in, early)) })
            })
            .await
    }

    /// Forgets a token Marketo rejected (601/602), under its generation or its value.
    pub(crate) async fn forget_token(&self, rejected: &Token) {
        self.inner.tokens.invalidate(rejected, same_secret).await;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines() {
        let early = Duration::from_secs(60);
        assert_eq!(refresh_after(Duration::from_secs(3599), early), Duration::from_secs(3539));
        assert_eq!(refresh_after(Duration::from_secs(100), early), Duration::from_secs(100));
    }

    #[test]
    fn the_same_value_is_the_same_token() {
        let s = |v: &str| SecretString::from(v.to_string());
        assert!(same_secret(&s("tok"), &s("tok")) && !same_secret(&s("tok"), &s("other")));
    }
}
