//! Credentials: the OAuth session from the token endpoint (`POST /services/oauth2/token`, client
//! credentials or refresh token, a rotated refresh token kept), cached in the shared
//! [`TokenCache`](salesync_http::TokenCache) until Salesforce refuses it.

use salesync_core::Error;
use salesync_http::{Fresh, Token};
use salesync_http::{ReadError, TransportError, read_capped};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::classify::{Verdict, classify, final_failure};
use crate::client::{SalesforceClient, Session, parse_error_body, transport};
use crate::config::check_url;
use crate::error::{protocol, to_core, token_error};

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    instance_url: String,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize, Default)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl SalesforceClient {
    /// The cached session, or a new one from the token endpoint (kept until Salesforce refuses it).
    pub(crate) async fn session(&self) -> Result<Token<Session>, Error> {
        self.inner.session.get(|| async { Ok(Fresh { value: self.fetch_token().await?, refresh_in: None }) }).await
    }

    /// Forgets the session `stale` (refused with `INVALID_SESSION_ID`) unless another task
    /// already replaced it; the next [`session`](Self::session) obtains a new one.
    pub(crate) async fn forget_session(&self, stale: &Token<Session>) {
        self.inner.session.invalidate(stale, |_, _| false).await;
    }

    async fn fetch_token(&self) -> Result<Session, Error> {
        let s = &self.inner.s;
        let url = format!("{}/services/oauth2/token", s.login_url.as_str().trim_end_matches('/'));
        let rotated = self.inner.rotated_refresh.lock().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone());
        let refresh = rotated.or_else(|| s.refresh_token.clone());
        let grant = if refresh.is_some() { "refresh_token" } else { "client_credentials" };
        let mut failures = 0u32;
        loop {
            let mut form: Vec<(&str, &str)> = vec![
                ("grant_type", grant),
                ("client_id", &s.client_id),
                ("client_secret", s.client_secret.expose_secret()),
                ("format", "json"),
            ];
            if let Some(r) = &refresh {
                form.push(("refresh_token", r.expose_secret()));
            }
            tracing::debug!(grant, "salesforce: requesting an access token");
            let sent = s.http.post(&url).header("Accept", "application/json").form(&form).send().await;
            let (status, body) = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match read_capped(resp, 1024 * 1024).await {
                        Ok(b) => (status, b),
                        Err(ReadError::TooLarge { .. }) => return Err(protocol("token response too large")),
                        Err(ReadError::Transport(e)) => {
                            let e = TransportError::new("salesforce token request", e);
                            if failures + 1 < s.retry.max_attempts {
                                failures += 1;
                                tokio::time::sleep(s.retry.delay(failures)).await;
                                continue;
                            }
                            return Err(transport(e));
                        }
                    }
                }
                Err(e) => {
                    let e = TransportError::new("salesforce token request", e);
                    if failures + 1 < s.retry.max_attempts {
                        failures += 1;
                        tracing::warn!(attempt = failures, error = %e, "salesforce: token request failed; retrying");
                        tokio::time::sleep(s.retry.delay(failures)).await;
                        continue;
                    }
                    return Err(transport(e));
                }
            };
            if (200..300).contains(&status) {
                let t: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|e| protocol(format!("token response is not the expected JSON: {e}")))?;
                let instance = check_url("instance_url", &t.instance_url, s.allow_http)?;
                if let Some(r) = t.refresh_token
                    && grant == "refresh_token"
                {
                    match self.inner.rotated_refresh.lock() {
                        Ok(mut g) => *g = Some(SecretString::from(r)),
                        Err(p) => *p.into_inner() = Some(SecretString::from(r)),
                    }
                }
                tracing::debug!("salesforce: new session");
                return Ok(Session {
                    token: SecretString::from(t.access_token),
                    base: instance.as_str().trim_end_matches('/').to_string(),
                });
            }
            // OAuth errors are `{"error","error_description"}`; a gateway or the platform may also
            // answer with a REST error array (`SERVER_UNAVAILABLE`, `REQUEST_LIMIT_EXCEEDED`, …).
            let oauth: TokenError = serde_json::from_slice(&body).unwrap_or_default();
            if !oauth.error.is_empty() {
                tracing::warn!(status, error = %oauth.error, "salesforce: token request refused");
                return Err(token_error(status, &oauth.error, &oauth.error_description));
            }
            let error = parse_error_body(&body);
            let verdict = match classify(status, &error.error_code, &error.message) {
                // A 401 from the token endpoint itself cannot be cured by another token.
                Verdict::Reauthenticate => Verdict::Fail(final_failure(status, &error.error_code, &error.message)),
                v => v,
            };
            if verdict.is_retry() && failures + 1 < s.retry.max_attempts {
                failures += 1;
                tracing::warn!(attempt = failures, status, code = %error.error_code, "salesforce: token request failed; retrying");
                tokio::time::sleep(s.retry.delay(failures)).await;
                continue;
            }
            tracing::warn!(status, code = %error.error_code, "salesforce: token request failed");
            if status == 401 || (status == 400 && error.error_code.is_empty()) {
                return Err(token_error(status, "invalid_grant", &error.message));
            }
            let spent = verdict.is_retry();
            return Err(to_core(status, &error, verdict, spent));
        }
    }
}
