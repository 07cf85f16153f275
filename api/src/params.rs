//! Extractors that turn every malformed path or query into a 400 with a
//! JSON body naming the parameter, and validators for each parameter kind.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// Path parameters; a bad path is a JSON 400.
pub struct P<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| P(t))
            .map_err(|e| ApiError::bad_request("path", &e.body_text()))
    }
}

/// Query parameters (all optional strings, validated by the handler); a
/// bad query string is a JSON 400.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Q(t))
            .map_err(|e| ApiError::bad_request("query", &e.body_text()))
    }
}

/// A tenant id: 1..=128 characters.
pub fn tenant(t: &str) -> Result<&str, ApiError> {
    let n = t.chars().count();
    if n == 0 || n > 128 {
        return Err(ApiError::bad_request("tenant", "1 to 128 characters"));
    }
    Ok(t)
}

/// An entity id (subject, conversation, experiment): 1..=1024 characters.
pub fn id<'a>(name: &str, v: &'a str) -> Result<&'a str, ApiError> {
    let n = v.chars().count();
    if n == 0 || n > 1024 {
        return Err(ApiError::bad_request(name, "1 to 1024 characters"));
    }
    Ok(v)
}

/// An optional bounded integer with a default.
pub fn int(name: &str, v: Option<&str>, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
    let Some(v) = v else { return Ok(default) };
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(name, &format!("an integer from {min} to {max}"))),
    }
}

/// An optional bounded number.
pub fn number(name: &str, v: Option<&str>, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() && (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::bad_request(name, &format!("a number from {min} to {max}"))),
    }
}

/// An optional `min_score` (0..100) as the literal a query binds: fixed
/// point, since ClickHouse 18.16 cannot parse every float literal (e.g.
/// `5e-324`), rounded up to millionths so that `score >= min` stays exact
/// for scores of 2 decimals. Absent: 0.
pub fn min_score(v: Option<&str>) -> Result<String, ApiError> {
    let min = number("min_score", v, 0.0, 100.0)?.unwrap_or(0.0);
    Ok(format!("{:.6}", (min * 1e6).ceil() / 1e6))
}

/// `limit` and `offset` of a list.
pub fn page(limit: Option<&str>, offset: Option<&str>) -> Result<(u64, u64), ApiError> {
    Ok((int("limit", limit, 100, 1, 1_000)?, int("offset", offset, 0, 0, 1_000_000)?))
}
