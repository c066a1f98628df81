//! Identity endpoint and access-token validation.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::envelope::Reply;

#[derive(Debug, Clone)]
struct TokenInfo {
    client_id: String,
    expires_at: DateTime<Utc>,
    expiry_reported: bool,
}

/// Issued tokens.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    by_token: HashMap<String, TokenInfo>,
    current: HashMap<String, String>,
}

/// Outcome of checking a bearer token.
pub(crate) enum TokenCheck {
    /// Valid; the owning client id.
    Valid(String),
    /// 601 or 602.
    Invalid(&'static str, &'static str),
}

impl Tokens {
    /// Every token issued so far, expired ones included (for tests that grep logs for them).
    pub(crate) fn issued(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_token.keys().cloned().collect();
        v.sort();
        v
    }

    /// Issues (or re-returns) the token of `client_id`; returns (token, seconds left).
    pub(crate) fn issue(&mut self, client_id: &str, now: DateTime<Utc>, ttl: Duration) -> (String, i64) {
        if let Some(tok) = self.current.get(client_id)
            && let Some(info) = self.by_token.get(tok)
            && info.expires_at > now
        {
            return (tok.clone(), (info.expires_at - now).num_seconds());
        }
        let tok = format!("{}:emu", uuid::Uuid::new_v4());
        self.by_token.insert(
            tok.clone(),
            TokenInfo { client_id: client_id.to_string(), expires_at: now + ttl, expiry_reported: false },
        );
        self.current.insert(client_id.to_string(), tok.clone());
        // A fresh token reports ttl − 1 like the real service ("expires_in": 3599).
        (tok, (ttl.num_seconds() - 1).max(0))
    }

    /// Checks a token: first use after expiry → 602, later uses and unknown tokens → 601.
    pub(crate) fn check(&mut self, token: Option<&str>, now: DateTime<Utc>) -> TokenCheck {
        let Some(token) = token else {
            return TokenCheck::Invalid("601", "Access token invalid");
        };
        match self.by_token.get_mut(token) {
            None => TokenCheck::Invalid("601", "Access token invalid"),
            Some(info) if info.expires_at <= now => {
                if info.expiry_reported {
                    TokenCheck::Invalid("601", "Access token invalid")
                } else {
                    info.expiry_reported = true;
                    TokenCheck::Invalid("602", "Access token expired")
                }
            }
            Some(info) => TokenCheck::Valid(info.client_id.clone()),
        }
    }
}

/// Handles `/identity/oauth/token`.
pub(crate) fn identity(
    tokens: &mut Tokens,
    params: &HashMap<String, String>,
    clients: &[(String, String)],
    scope: &str,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Reply {
    let bad = |desc: &str| Reply::Json {
        status: 401,
        body: json!({"error": "invalid_client", "error_description": desc}),
        outcome: Some("401".into()),
    };
    if params.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Reply::Json {
            status: 400,
            body: json!({"error": "unsupported_grant_type", "error_description": "Unsupported grant type"}),
            outcome: Some("400".into()),
        };
    }
    let (Some(id), Some(secret)) = (params.get("client_id"), params.get("client_secret")) else {
        return bad("Bad client credentials");
    };
    if !clients.iter().any(|(c, s)| c == id && s == secret) {
        return bad("Bad client credentials");
    }
    let (tok, left) = tokens.issue(id, now, ttl);
    Reply::Json {
        status: 200,
        body: json!({"access_token": tok, "token_type": "bearer", "expires_in": left, "scope": scope}),
        outcome: None,
    }
}
