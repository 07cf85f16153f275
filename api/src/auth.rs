//! Tenant-scoped API keys (SPEC §5): a missing or unknown key is 401, a key
//! for another tenant is 403. Keys are compared in constant time and never
//! logged.

use axum::extract::{RawPathParams, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::{ApiError, AppState};

/// One API key and the tenant it may read (`"*"`: every tenant).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The bearer token.
    pub key: String,
    /// Tenant id the key is scoped to, or `*`.
    pub tenant: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey").field("key", &"<redacted>").field("tenant", &self.tenant).finish()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Length is not secret (keys are fixed-format); contents are.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The tenant scope of a presented bearer token, if it is a known key.
fn scope_of<'a>(keys: &'a [ApiKey], token: &str) -> Option<&'a str> {
    // Check every key so timing does not reveal which one matched.
    let mut found = None;
    for k in keys {
        if constant_time_eq(k.key.as_bytes(), token.as_bytes()) {
            found = Some(k.tenant.as_str());
        }
    }
    found
}

pub async fn require_key(State(s): State<AppState>, params: RawPathParams, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(scope) = token.and_then(|t| scope_of(&s.keys, t)) else {
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
    fn scopes() {
        let keys =
            vec![ApiKey { key: "a".into(), tenant: "t1".into() }, ApiKey { key: "b".into(), tenant: "*".into() }];
        assert_eq!(scope_of(&keys, "a"), Some("t1"));
        assert_eq!(scope_of(&keys, "b"), Some("*"));
        assert_eq!(scope_of(&keys, "c"), None);
        assert_eq!(scope_of(&keys, ""), None);
        assert!(!format!("{:?}", keys[0]).contains("\"a\""));
    }
}
