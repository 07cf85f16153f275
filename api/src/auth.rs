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

/// What a key may do (SPEC §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The metric routes (`GET /v1/tenants/…`).
    Read,
    /// `POST /v1/ingest/{topic}`.
    Ingest,
}

fn read_only() -> Vec<Scope> {
    vec![Scope::Read]
}

/// One API key and the tenant it may read or publish for (`"*"`: every
/// tenant). Give exactly one of `key` (the token itself) or `key_sha256`
/// (its SHA-256 in hex, as `revpulse hash-key` prints; preferred, so the
/// file holds no secret).
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
    /// What the key may do: `read` (the metric routes) and/or `ingest`
    /// (`POST /v1/ingest/{topic}`). Default `["read"]`, so keys configured
    /// before ingest existed stay read keys.
    #[serde(default = "read_only")]
    pub scopes: Vec<Scope>,
    /// When set, every ingest request with this key must carry a
    /// `Revpulse-Signature` made with this secret (HMAC-SHA256, see
    /// docs/ingest.md); unsigned, wrongly signed or stale requests are 401.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("key", &"<redacted>")
            .field("tenant", &self.tenant)
            .field("scopes", &self.scopes)
            .field("signing_secret", &self.signing_secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ApiKey {
    /// A read key given in clear (tests, demo).
    pub fn clear(key: &str, tenant: &str) -> ApiKey {
        ApiKey {
            key: Some(key.into()),
            key_sha256: None,
            tenant: tenant.into(),
            scopes: read_only(),
            signing_secret: None,
        }
    }

    /// The same key with other scopes.
    pub fn with_scopes(self, scopes: &[Scope]) -> ApiKey {
        ApiKey { scopes: scopes.to_vec(), ..self }
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

/// What a presented key may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// A tenant id, or `*`.
    pub tenant: String,
    pub read: bool,
    pub ingest: bool,
    pub signing_secret: Option<String>,
}

impl Grant {
    /// Whether the key covers `tenant`.
    pub fn covers(&self, tenant: &str) -> bool {
        self.tenant == "*" || self.tenant == tenant
    }
}

/// The configured keys as digests, ready for lookups.
#[derive(Clone, Default)]
pub struct Keys(Vec<([u8; 32], Grant)>);

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
            if k.scopes.is_empty() {
                return Err(format!("api.keys[{i}].scopes is empty (use [\"read\"], [\"ingest\"] or both)"));
            }
            if k.signing_secret.as_ref().is_some_and(|s| s.is_empty()) {
                return Err(format!("api.keys[{i}].signing_secret is empty"));
            }
            let grant = Grant {
                tenant: k.tenant.clone(),
                read: k.scopes.contains(&Scope::Read),
                ingest: k.scopes.contains(&Scope::Ingest),
                signing_secret: k.signing_secret.clone(),
            };
            out.push((digest, grant));
        }
        Ok(Keys(out))
    }

    /// What a presented bearer token may do, if it is a known key.
    pub fn grant_of(&self, token: &str) -> Option<&Grant> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every key, in constant time each, so timing tells
        // nothing about which key (if any) matched.
        let mut found = None;
        for (digest, grant) in &self.0 {
            let diff = digest.iter().zip(&presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(grant);
            }
        }
        found
    }

    /// The grant of a request's `Authorization: Bearer` key, if known.
    pub fn of_request(&self, headers: &axum::http::HeaderMap) -> Option<&Grant> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)?;
        self.grant_of(token)
    }
}

/// The metric routes: a known key with the `read` scope, for the tenant in
/// the path.
pub async fn require_key(State(s): State<AppState>, params: RawPathParams, req: Request, next: Next) -> Response {
    let Some(grant) = s.keys.of_request(req.headers()) else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "missing or unknown API key").into_response();
    };
    if !grant.read {
        return ApiError::new(StatusCode::FORBIDDEN, "this API key may not read (its scopes lack `read`)")
            .into_response();
    }
    let tenant = params.iter().find(|(name, _)| *name == "tenant").map(|(_, v)| v);
    match tenant {
        Some(t) if !grant.covers(t) => {
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
            ApiKey { key: None, key_sha256: Some(hash_key("b").to_uppercase()), ..ApiKey::clear("b", "*") },
        ])
        .unwrap_or_default();
        let tenant = |token: &str| keys.grant_of(token).map(|g| g.tenant.clone());
        assert_eq!(tenant("a").as_deref(), Some("t1"));
        assert_eq!(tenant("b").as_deref(), Some("*"));
        assert_eq!(tenant("c"), None);
        assert_eq!(tenant(""), None);
        assert!(keys.grant_of("a").is_some_and(|g| g.read && !g.ingest));
        let mut signed = ApiKey::clear("secret", "t").with_scopes(&[Scope::Ingest]);
        signed.signing_secret = Some("whsec".into());
        assert!(!format!("{signed:?}").contains("secret\"") && !format!("{signed:?}").contains("whsec"));
        let none = ApiKey { key: None, ..ApiKey::clear("x", "t") };
        assert!(Keys::new(std::slice::from_ref(&none)).is_err());
        assert!(Keys::new(&[ApiKey { key_sha256: Some("xyz".into()), ..none }]).is_err());
        assert!(Keys::new(&[ApiKey::clear("x", "t").with_scopes(&[])]).is_err());
        // A configuration written before scopes existed is a read key.
        let old: ApiKey = serde_json::from_str(r#"{"key":"k","tenant":"t"}"#).expect("parses");
        assert_eq!(old.scopes, [Scope::Read]);
        assert_eq!(hash_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
