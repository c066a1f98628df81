//! OAuth 2.0 token endpoint and access-token bookkeeping.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use data_encoding::{BASE64, BASE64URL_NOPAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::config::SalesforceConfig;

/// Issued access tokens.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    issued: HashMap<String, DateTime<Utc>>,
    /// The refresh token currently accepted (rotates when configured).
    pub(crate) refresh: Option<String>,
    counter: u64,
    /// Every access and refresh token handed out, in order (never forgotten).
    handed_out: Vec<String>,
}

impl Tokens {
    /// Whether a token is known and younger than the session lifetime.
    pub(crate) fn valid(&self, token: &str, now: DateTime<Utc>, cfg: &SalesforceConfig) -> bool {
        self.issued.get(token).is_some_and(|t| now < *t + cfg.session_lifetime)
    }

    /// Every access and refresh token handed out so far, expired ones included.
    pub(crate) fn handed_out(&self) -> Vec<String> {
        self.handed_out.clone()
    }

    /// Forgets every token.
    pub(crate) fn expire_all(&mut self) {
        self.issued.clear();
    }
}

/// HMAC-SHA256 (RFC 2104).
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let ih = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(ih);
    outer.finalize().into()
}

/// The outcome of a token request: HTTP status and JSON body.
pub(crate) type TokenReply = (u16, Value);

fn oauth_err(error: &str, desc: &str) -> TokenReply {
    (400, json!({"error": error, "error_description": desc}))
}

/// Identity of the emulated org.
pub(crate) struct Identity<'a> {
    pub(crate) base_url: &'a str,
    pub(crate) org_id: &'a str,
    pub(crate) user_id: &'a str,
}

/// Handles `POST /services/oauth2/token`.
pub(crate) fn token(
    tokens: &mut Tokens,
    cfg: &SalesforceConfig,
    who: &Identity<'_>,
    form: &HashMap<String, String>,
    basic: Option<(String, String)>,
    now: DateTime<Utc>,
) -> TokenReply {
    let (mut cid, mut secret) = (form.get("client_id").cloned(), form.get("client_secret").cloned());
    if let Some((u, p)) = basic {
        cid = cid.or(Some(u));
        secret = secret.or(Some(p));
    }
    let Some(grant) = form.get("grant_type").filter(|g| !g.is_empty()) else {
        return oauth_err("unsupported_grant_type", "grant type not supported");
    };
    let bad_client = || oauth_err("invalid_client", "invalid client credentials");
    let client_ok = cid.as_deref() == Some(cfg.client_id.as_str());
    let secret_ok = secret.as_deref() == Some(cfg.client_secret.as_str());
    let mut new_refresh = None;
    match grant.as_str() {
        "client_credentials" => {
            if !client_ok || !secret_ok {
                return bad_client();
            }
        }
        "password" => {
            if !client_ok || !secret_ok {
                return bad_client();
            }
            if form.get("username") != Some(&cfg.username) || form.get("password") != Some(&cfg.password) {
                return oauth_err("invalid_grant", "authentication failure");
            }
        }
        "refresh_token" => {
            if !client_ok || (secret.is_some() && !secret_ok) {
                return bad_client();
            }
            let presented = form.get("refresh_token");
            if presented.is_none() || presented != tokens.refresh.as_ref() {
                return oauth_err("invalid_grant", "expired access/refresh token");
            }
            if cfg.rotate_refresh_token {
                tokens.counter += 1;
                let r = format!("5Aep861{}", BASE64URL_NOPAD.encode(uuid::Uuid::new_v4().as_bytes()));
                tokens.refresh = Some(r.clone());
                tokens.handed_out.push(r.clone());
                new_refresh = Some(r);
            }
        }
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            let Some(assertion) = form.get("assertion") else {
                return oauth_err("invalid_grant", "invalid assertion");
            };
            let parts: Vec<&str> = assertion.split('.').collect();
            let payload = match parts.as_slice() {
                [h, p, s] if !h.is_empty() && !s.is_empty() => BASE64URL_NOPAD
                    .decode(p.trim_end_matches('=').as_bytes())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok()),
                _ => None,
            };
            let Some(payload) = payload else {
                return oauth_err("invalid_grant", "invalid assertion");
            };
            if payload.get("iss").and_then(Value::as_str) != Some(cfg.client_id.as_str()) {
                return oauth_err("invalid_client_id", "client identifier invalid");
            }
            if let Some(exp) = payload.get("exp").and_then(Value::as_i64)
                && exp < now.timestamp()
            {
                return oauth_err("invalid_grant", "expired authorization code");
            }
        }
        _ => return oauth_err("unsupported_grant_type", "grant type not supported"),
    }
    tokens.counter += 1;
    let access = format!(
        "{}!AQ0A{}",
        &who.org_id[..15],
        BASE64URL_NOPAD.encode(uuid::Uuid::new_v4().as_bytes()).replace(['-', '_'], "x")
    );
    tokens.issued.insert(access.clone(), now);
    tokens.handed_out.push(access.clone());
    let id = format!("{}/id/{}/{}", who.base_url, who.org_id, who.user_id);
    let issued_at = now.timestamp_millis().to_string();
    let signature = BASE64.encode(&hmac_sha256(cfg.client_secret.as_bytes(), format!("{id}{issued_at}").as_bytes()));
    let mut body = json!({
        "access_token": access,
        "instance_url": who.base_url,
        "id": id,
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": signature,
        "scope": "api refresh_token",
    });
    if let (Some(r), Value::Object(m)) = (new_refresh, &mut body) {
        m.insert("refresh_token".into(), Value::String(r));
    }
    (200, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            data_encoding::HEXLOWER.encode(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
