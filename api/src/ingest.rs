//! HTTP ingest (SPEC §5.1): `POST /v1/ingest/{topic}` for producers that
//! cannot speak Kafka — payment and messaging webhooks above all.
//!
//! The format side lives here: the body is split into events (NDJSON, a
//! JSON array, or one JSON object), each is validated exactly as the Kafka
//! path validates a message ([`decode_value`], SPEC §2.6), and the
//! request's key is checked against what it publishes. The transport side
//! is [`Publisher`]: valid events are produced keyed by their upsert key,
//! rejected ones dead-lettered, all with `acks=all`, and the answer waits
//! for every acknowledgement. Kafka failing any of them is a 503 for the
//! whole request: the client retries it whole, which is harmless (upserts).
//!
//! Limits: 10 MiB per body (413 beyond) and 10,000 events (413 beyond).
//! NDJSON lines are trimmed of surrounding whitespace (what is produced is
//! the trimmed event); blank lines are skipped.
//! A key with a `signing_secret` must sign the raw body:
//! `Revpulse-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! within 300 s of the server's clock (401 otherwise); several `v1` values
//! may be given (secret rotation), one must match. A tenant-scoped key may
//! publish only its tenant's events and no tombstones: a request that
//! breaks either is refused whole (403), nothing produced.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use hmac::{Hmac, KeyInit, Mac};
use revpulse_connectors::kafka::{Outgoing, Publisher, Rejected, TopicNames};
use revpulse_connectors::schema_registry::{AvroCodec, ValueFormat, ValueFormats};
use revpulse_pipelines::event::{decode_value, Event, Reason, Reject, Topic};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use crate::auth::Grant;
use crate::params::P;
use crate::{ApiError, AppState, ErrorBody};

/// Largest body accepted.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Most events per request.
pub const MAX_EVENTS: usize = 10_000;
/// How far a signature's `t` may be from the server's clock, in seconds.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;
/// The signature header.
pub const SIGNATURE_HEADER: &str = "Revpulse-Signature";

/// What the ingest route publishes with.
pub struct Ingest {
    pub publisher: Publisher,
    /// Kafka topic names of the inputs.
    pub topics: TopicNames,
    /// Value formats: Avro topics get their events encoded (Confluent
    /// wire format) before they are produced.
    pub formats: ValueFormats,
    /// The Avro encoder, when a topic is Avro (registry calls block, so it
    /// runs on the blocking pool).
    pub avro: Option<Arc<Mutex<AvroCodec>>>,
}

/// One rejected event of a request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RejectedEvent {
    /// Its position in the request, from 0 (NDJSON: among non-blank lines).
    pub index: usize,
    /// The SPEC §2.6 reason, as in `revpulse_rejected_total`.
    pub reason: String,
    pub detail: String,
}

/// The answer once Kafka acknowledged every produced event and dead letter.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IngestResult {
    /// Events produced to the topic.
    pub accepted: usize,
    /// Events dead-lettered instead, with why.
    pub rejected: Vec<RejectedEvent>,
}

/// The topic names the route accepts.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum TopicParam {
    Impressions,
    Conversations,
    Messages,
    Payments,
    RoUpdates,
    Deals,
}

/// A tombstone in a request: `{"_key": K, "_tombstone": true}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tombstone {
    #[serde(rename = "_key")]
    key: String,
    #[serde(rename = "_tombstone")]
    tombstone: bool,
}

/// One item of a request after validation.
// Nearly every item is an event; boxing it would allocate per event.
#[allow(clippy::large_enum_variant)]
enum Item<'a> {
    Event(Event, &'a [u8]),
    Tombstone(String),
    Bad(&'a [u8], Reject),
}

fn too_large(what: &str) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request too large: {what}"))
}

/// Splits a body into its events' raw bytes.
fn split<'a>(body: &'a [u8], content_type: Option<&str>) -> Result<Vec<&'a [u8]>, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let ndjson = content_type.is_some_and(|c| c.starts_with("application/x-ndjson"));
    let items: Vec<&[u8]> = match first {
        None => return Err(ApiError::new(StatusCode::BAD_REQUEST, "the body has no events")),
        Some(b'[') if !ndjson => serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("body is not a JSON array of events: {e}")))?
            .into_iter()
            .map(|raw| raw.get().as_bytes())
            .collect(),
        _ => body.split(|b| *b == b'\n').map(<[u8]>::trim_ascii).filter(|line| !line.is_empty()).collect(),
    };
    if items.len() > MAX_EVENTS {
        return Err(too_large(&format!("{} events, at most {MAX_EVENTS}", items.len())));
    }
    Ok(items)
}

/// Validates one event as the Kafka path would (SPEC §2.6).
fn validate(topic: Topic, raw: &[u8]) -> Item<'_> {
    if let Ok(t) = serde_json::from_slice::<Tombstone>(raw) {
        return match (t.tombstone, t.key.chars().count()) {
            (false, _) => Item::Bad(raw, Reject::new(Reason::WrongType, "`_tombstone` must be true")),
            (true, 0) => Item::Bad(raw, Reject::new(Reason::MissingKey, "tombstone with an empty `_key`")),
            (true, n) if n > 1024 => Item::Bad(raw, Reject::new(Reason::StringTooLong, "`_key` over 1024 chars")),
            (true, _) => Item::Tombstone(t.key),
        };
    }
    match decode_value(topic, raw) {
        Ok(e) => Item::Event(e, raw),
        Err(r) => Item::Bad(raw, r),
    }
}

/// Checks `Revpulse-Signature` against `secret` at time `now` (seconds).
pub fn verify_signature(secret: &str, header: Option<&str>, body: &[u8], now: i64) -> Result<(), &'static str> {
    let header = header.ok_or("missing Revpulse-Signature header")?;
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let t = t.ok_or("Revpulse-Signature has no valid `t=<unix seconds>`")?;
    if (now - t).abs() > SIGNATURE_TOLERANCE_SECS {
        return Err("Revpulse-Signature is stale (more than 300 s from the server's clock)");
    }
    let prefix = format!("{t}.");
    for hex in signatures {
        let Some(bytes) = decode_hex(hex) else { continue };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { continue };
        mac.update(prefix.as_bytes());
        mac.update(body);
        // Constant time.
        if mac.verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err("Revpulse-Signature does not match")
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The signature a client sends for `body` at time `t` (docs, tests, bench).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// The key's grant, if it may ingest this body.
fn authorize<'k>(s: &'k AppState, headers: &HeaderMap, body: &[u8]) -> Result<&'k Grant, ApiError> {
    let grant = s
        .keys
        .of_request(headers)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "missing or unknown API key"))?;
    if !grant.ingest {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this API key may not ingest (its scopes lack `ingest`)"));
    }
    if let Some(secret) = &grant.signing_secret {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
        verify_signature(secret, header, body, now).map_err(|why| ApiError::new(StatusCode::UNAUTHORIZED, why))?;
    }
    Ok(grant)
}

/// Refuses a request a tenant-scoped key may not publish.
fn check_tenants(grant: &Grant, items: &[Item<'_>]) -> Result<(), ApiError> {
    if grant.tenant == "*" {
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        let refused = match item {
            Item::Tombstone(_) => Some("a tenant-scoped key may not publish tombstones".to_owned()),
            Item::Event(e, _) if !grant.covers(e.tenant()) => {
                Some(format!("event {i} is for another tenant than this API key's"))
            }
            _ => None,
        };
        if let Some(why) = refused {
            return Err(ApiError::new(StatusCode::FORBIDDEN, format!("{why}; nothing was published")));
        }
    }
    Ok(())
}

/// The Confluent-framed Avro of each event, for an Avro topic.
async fn encode_avro(ingest: &Ingest, topic: Topic, items: &[Item<'_>]) -> Result<Vec<Option<Vec<u8>>>, ApiError> {
    let unavailable = |e: String| {
        tracing::warn!(error = %e, "schema registry unavailable for HTTP ingest");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "schema registry unavailable; retry the whole request")
    };
    let codec =
        ingest.avro.clone().ok_or_else(|| unavailable(format!("{} is avro without a registry", topic.name())))?;
    let values: Vec<Option<serde_json::Value>> = items
        .iter()
        .map(|i| match i {
            Item::Event(_, raw) => serde_json::from_slice(raw).ok(),
            _ => None,
        })
        .collect();
    let kafka_topic = ingest.topics.get(topic).to_owned();
    let encoded = tokio::task::spawn_blocking(move || {
        let mut codec = codec.lock().map_err(|_| "Avro encoder poisoned".to_owned())?;
        values
            .iter()
            .map(|v| v.as_ref().map(|v| codec.encode(topic, &kafka_topic, v)).transpose())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| unavailable(e.to_string()))?
    .map_err(unavailable)?;
    Ok(encoded)
}

#[utoipa::path(
    post,
    path = "/v1/ingest/{topic}",
    tag = "ingest",
    params(
        ("topic" = TopicParam, Path, description = "Input topic (SPEC §2)"),
        ("Revpulse-Signature" = Option<String>, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>`; required for keys with a signing_secret"),
    ),
    request_body(
        description = "Events: NDJSON (`application/x-ndjson`), a JSON array, or one JSON object; `{\"_key\": K, \"_tombstone\": true}` deletes K (`*` keys only). At most 10 MiB and 10,000 events.",
        content(
            (String = "application/x-ndjson"),
            (serde_json::Value = "application/json"),
        ),
    ),
    responses(
        (status = 200, description = "Kafka acknowledged every valid event and every dead letter", body = IngestResult),
        (status = 400, description = "The body is empty or not JSON events", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key, or a missing, wrong or stale signature", body = ErrorBody),
        (status = 403, description = "Key without the ingest scope, or a tenant-scoped key publishing another tenant's event or a tombstone", body = ErrorBody),
        (status = 404, description = "No such topic", body = ErrorBody),
        (status = 413, description = "Over 10 MiB or 10,000 events", body = ErrorBody),
        (status = 503, description = "Kafka (or the schema registry) did not take every event; retry the whole request", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn ingest(
    State(s): State<AppState>,
    P(topic_name): P<String>,
    req: Request,
) -> Result<Json<IngestResult>, ApiError> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large(&format!("the body is over {MAX_BODY_BYTES} bytes")))?;
    let grant = authorize(&s, &parts.headers, &body)?;
    let topic = Topic::from_name(&topic_name).ok_or_else(|| ApiError::not_found("topic"))?;
    let ingest = s.ingest.clone().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ingest is not configured on this server (no Kafka)")
    })?;
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let items: Vec<Item<'_>> = split(&body, content_type)?.into_iter().map(|raw| validate(topic, raw)).collect();
    check_tenants(grant, &items)?;
    let avro = match ingest.formats.get(topic) {
        ValueFormat::Avro => Some(encode_avro(&ingest, topic, &items).await?),
        ValueFormat::Json => None,
    };
    let kafka_topic = ingest.topics.get(topic);
    let mut messages = Vec::new();
    let mut rejected = Vec::new();
    let mut answer = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match item {
            Item::Event(e, raw) => {
                let payload = avro.as_ref().and_then(|a| a[index].as_deref()).unwrap_or(raw);
                messages.push(Outgoing { topic: kafka_topic, key: e.upsert_key().as_bytes(), payload: Some(payload) });
            }
            Item::Tombstone(key) => messages.push(Outgoing { topic: kafka_topic, key: key.as_bytes(), payload: None }),
            Item::Bad(raw, reject) => {
                tracing::info!(topic = topic.name(), index, reason = reject.reason.as_str(), detail = %reject.detail, "rejected an ingested event");
                rejected.push(Rejected { topic: kafka_topic, index, payload: raw, reject });
                answer.push(RejectedEvent {
                    index,
                    reason: reject.reason.as_str().to_owned(),
                    detail: reject.detail.clone(),
                });
            }
        }
    }
    let counter =
        |outcome: &str, n: usize| s.metrics.ingest_events.with_label_values(&[topic.name(), outcome]).inc_by(n as u64);
    match ingest.publisher.publish(&messages, &rejected).await {
        Ok(()) => {
            counter("accepted", messages.len());
            counter("rejected", rejected.len());
            Ok(Json(IngestResult { accepted: messages.len(), rejected: answer }))
        }
        Err(e) => {
            counter("failed", items.len());
            tracing::warn!(topic = topic.name(), error = %e, "HTTP ingest not acknowledged by Kafka; answered 503");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Kafka did not acknowledge every event ({e}); retry the whole request"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_in_their_window_only() {
        let body = br#"{"a":1}"#;
        let header = sign("whsec", 1_000, body);
        assert_eq!(verify_signature("whsec", Some(&header), body, 1_000), Ok(()));
        assert_eq!(verify_signature("whsec", Some(&header), body, 1_300), Ok(()));
        assert!(verify_signature("whsec", Some(&header), body, 1_301).is_err(), "stale");
        assert!(verify_signature("whsec", Some(&header), body, 699).is_err(), "from the future");
        assert!(verify_signature("other", Some(&header), body, 1_000).is_err(), "wrong secret");
        assert!(verify_signature("whsec", Some(&header), b"{\"a\":2}", 1_000).is_err(), "other body");
        assert!(verify_signature("whsec", None, body, 1_000).is_err(), "missing");
        assert!(verify_signature("whsec", Some("t=1000"), body, 1_000).is_err(), "no v1");
        // Rotation: any one of several v1 values may match.
        let rotated = format!("t=1000,v1=00ff,{}", header.split_once(',').map_or("", |(_, v)| v));
        assert_eq!(verify_signature("whsec", Some(&rotated), body, 1_000), Ok(()));
    }

    #[test]
    fn bodies_split_into_events() {
        let ndjson = b"{\"a\":1}\r\n\n  {\"a\":2}\n";
        assert_eq!(split(ndjson, Some("application/x-ndjson")).map(|v| v.len()).ok(), Some(2));
        assert_eq!(split(b"[{\"a\":1}, {\"a\":2}, 3]", Some("application/json")).map(|v| v.len()).ok(), Some(3));
        assert_eq!(split(b"{\"a\":1}", Some("application/json")).map(|v| v.len()).ok(), Some(1));
        assert!(split(b"  ", None).is_err_and(|e| e.status == StatusCode::BAD_REQUEST));
        assert!(split(b"[{\"a\":1},", Some("application/json")).is_err());
        let many = "{}\n".repeat(MAX_EVENTS + 1);
        assert!(split(many.as_bytes(), None).is_err_and(|e| e.status == StatusCode::PAYLOAD_TOO_LARGE));
    }

    #[test]
    fn tombstones_are_recognised_and_checked() {
        assert!(
            matches!(validate(Topic::Payments, br#"{"_key":"p1","_tombstone":true}"#), Item::Tombstone(k) if k == "p1")
        );
        assert!(
            matches!(validate(Topic::Payments, br#"{"_key":"","_tombstone":true}"#), Item::Bad(_, r) if r.reason == Reason::MissingKey)
        );
        assert!(matches!(validate(Topic::Payments, br#"{"_key":"p","_tombstone":false}"#), Item::Bad(..)));
        assert!(
            matches!(validate(Topic::Payments, br#"{"tenant_id":"t"}"#), Item::Bad(_, r) if r.reason == Reason::MissingField)
        );
    }
}
