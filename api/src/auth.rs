//! Tenant-scoped API keys (SPEC §5): a missing or unknown key is 401, a key
//! for another tenant is 403. Keys may be stored hashed (SHA-256), are
//! compared by digest in constant time, and are never logged.

use axum::extract::{RawPathParams, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ApiError, AppState};

/// One API key and the tenant it may read (`"*"`: every tenant). Give
/// exactly one of `key` (the token itself) or `key_sha256` (its SHA-256 in
/// hex, as `revpulse hash-key` prints; preferred, so the file holds no
/// secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The bearer token in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// SHA-256 of the bearer token, lower-case hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
    /// Tenant id the key is scoped to, or `*`.
    pub tenant: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey").field("key", &"<redacted>").field("tenant", &self.tenant).finish()
    }
}

impl ApiKey {
    /// A key given in clear (tests, demo).
    pub fn clear(key: &str, tenant: &str) -> ApiKey {
        ApiKey { key: Some(key.into()), key_sha256: None, tenant: tenant.into() }
    }
}

/// The SHA-256 of a token, lower-case hex.
pub fn hash_key(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The configured keys as digests, ready for lookups.
#[derive(Clone, Default)]
pub struct Keys(Vec<([u8; 32], String)>);

impl Keys {
    /// Checks and digests the configured keys.
    pub fn new(keys: &[ApiKey]) -> Result<Keys, String> {
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let digest = match (&k.key, &k.key_sha256) {
                (Some(clear), None) if !clear.is_empty() => Sha256::digest(clear.as_bytes()).into(),
                (None, Some(hex)) => parse_hex(&hex.to_ascii_lowercase())
                    .ok_or_else(|| format!("api.keys[{i}].key_sha256 is not 64 hex digits"))?,
                _ => return Err(format!("api.keys[{i}] needs exactly one of `key` or `key_sha256`")),
            };
            if k.tenant.is_empty() {
                return Err(format!("api.keys[{i}].tenant is empty (use \"*\" for all tenants)"));
            }
            out.push((digest, k.tenant.clone()));
        }
        Ok(Keys(out))
    }

    /// The tenant scope of a presented bearer token, if it is a known key.
    pub fn scope_of(&self, token: &str) -> Option<&str> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every key, in constant time each, so timing tells
        // nothing about which key (if any) matched.
        let mut found = None;
        for (digest, tenant) in &self.0 {
            let diff = digest.iter().zip(&presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(tenant.as_str());
            }
        }
        found
    }
}

pub async fn require_key(State(s): State<AppState>, params: RawPathParams, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(scope) = token.and_then(|t| s.keys.scope_of(t)) else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "missing or unknown API key").into_response();
    };
    let tenant = params.iter().find(|(name, _)| *name == "tenant").map(|(_, v)| v);
    match tenant {
        Some(t) if scope != "*" && scope != t => {
            ApiError::new(StatusCode::FORBIDDEN, "this API key may not read that tenant").into_response()
        }
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_clear_and_hashed_keys() {
        let keys = Keys::new(&[
            ApiKey::clear("a", "t1"),
            ApiKey { key: None, key_sha256: Some(hash_key("b").to_uppercase()), tenant: "*".into() },
        ])
        .unwrap_or_default();
        assert_eq!(keys.scope_of("a"), Some("t1"));
        assert_eq!(keys.scope_of("b"), Some("*"));
        assert_eq!(keys.scope_of("c"), None);
        assert_eq!(keys.scope_of(""), None);
        assert!(!format!("{:?}", ApiKey::clear("secret", "t")).contains("secret"));
        assert!(Keys::new(&[ApiKey { key: None, key_sha256: None, tenant: "t".into() }]).is_err());
        assert!(Keys::new(&[ApiKey { key: None, key_sha256: Some("xyz".into()), tenant: "t".into() }]).is_err());
        assert_eq!(hash_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
