use std::collections::HashMap;
use std::time::Duration;

use apache_avro::types::Value as AvroValue;
use apache_avro::Schema;
use revpulse_pipelines::event::{decode, strip_nulls, validate_json, Reason, Reject, Topic, Upsert, MAX_PAYLOAD_BYTES};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};
use serde_json::Value as JsonValue;

use super::{avro_schema, SchemaRegistryConfig};

#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// The registry could not be asked (unreachable, timeout, 502/503): the
    /// message is fine as far as anyone knows, so it is retried, never
    /// dead-lettered.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The message itself is bad: unknown schema id, wrong framing, bytes
    /// that do not decode, or an event that fails validation.
    #[error("{}: {}", .0.reason.as_str(), .0.detail)]
    Rejected(Reject),
    #[error("schema registry settings: {0}")]
    Settings(String),
    #[error("encoding a {topic} event as Avro: {detail}")]
    Encode { topic: &'static str, detail: String },
}

/// Decodes (the source) and encodes (`revpulse produce`) Confluent-framed
/// Avro. Schemas are fetched once per id and cached; the async client runs
/// on `rt`, so callers must not be on one of its worker threads.
pub struct AvroCodec {
    decoder: AvroDecoder,
    encoder: AvroEncoder,
    rt: tokio::runtime::Handle,
    /// The `schemas/avro` schema per topic, parsed once, for encoding.
    writer_schemas: HashMap<Topic, Schema>,
}

impl AvroCodec {
    pub fn new(cfg: &SchemaRegistryConfig, rt: tokio::runtime::Handle) -> Result<Self, AvroError> {
        // A few bytes may declare a huge array or string; cap what one
        // decode may allocate (the first setting in the process wins).
        apache_avro::util::max_allocation_bytes(4 * MAX_PAYLOAD_BYTES);
        let settings = || {
            let mut b = SrSettings::new_builder(cfg.url.trim_end_matches('/').to_owned());
            b.set_timeout(Duration::from_millis(cfg.timeout_ms.max(1)));
            if let Some(user) = &cfg.username {
                b.set_basic_authorization(user, cfg.password.as_deref());
            }
            b.build().map_err(|e| AvroError::Settings(e.to_string()))
        };
        Ok(AvroCodec {
            decoder: AvroDecoder::new(settings()?),
            encoder: AvroEncoder::new(settings()?),
            rt,
            writer_schemas: HashMap::new(),
        })
    }

    /// Decodes one message of `topic`; a missing payload is a tombstone, as
    /// for JSON.
    pub fn decode(&self, topic: Topic, key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<Upsert, AvroError> {
        let Some(bytes) = payload else {
            return decode(topic, key, None).map_err(AvroError::Rejected);
        };
        let reject = |reason, detail: String| AvroError::Rejected(Reject { reason, detail });
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(reject(Reason::PayloadTooLarge, format!("{} bytes > {MAX_PAYLOAD_BYTES}", bytes.len())));
        }
        let id = match bytes {
            [0, a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
            [m, ..] if *m != 0 => {
                return Err(reject(Reason::BadFormat, format!("magic byte {m:#04x}, not Confluent-framed Avro (0x00)")))
            }
            _ => {
                return Err(reject(
                    Reason::BadFormat,
                    format!("{} bytes: too short for Confluent framing", bytes.len()),
                ))
            }
        };
        // Asked apart from decoding so an unknown id and undecodable bytes
        // are told apart; the schema is cached, so the decode below does not
        // ask again.
        if let Err(e) = self.rt.block_on(self.decoder.get_schema(id)) {
            // Only "no such schema" says the message is bad. Anything else
            // (5xx, 429, auth, a proxy's error page) says nothing about the
            // message: retry it, and forget the cached failure so the retry
            // asks the registry again.
            let talking_failed = e.retriable
                || e.error.starts_with("HTTP request to schema registry failed")
                || e.error.starts_with("could not parse to RawRegisteredSchema");
            if talking_failed && !e.error.contains("status 404") {
                self.decoder.remove_errors_from_cache();
                return Err(AvroError::Unavailable(describe(&e)));
            }
            // 404, or the id names a schema that is not usable Avro.
            return Err(reject(Reason::UnknownSchema, format!("schema id {id}: {}", describe(&e))));
        }
        // The schema is cached now, so failing here is about the bytes.
        let value = match self.rt.block_on(self.decoder.decode(Some(bytes))) {
            Ok(r) => r.value,
            Err(e) => return Err(reject(Reason::BadFormat, format!("schema id {id}: {}", describe(&e)))),
        };
        let json = to_json(value).map_err(|detail| reject(Reason::BadFormat, detail))?;
        // One validation path for both formats: the record is checked as the
        // JSON event it spells.
        let text = serde_json::to_string(&json).map_err(|e| reject(Reason::BadFormat, e.to_string()))?;
        let event = validate_json(topic, &text).map_err(AvroError::Rejected)?;
        Ok(Upsert { key: event.upsert_key().into(), value: Some(event) })
    }

    /// Encodes one JSON event of `topic` with its `schemas/avro` schema,
    /// registering that schema under `<kafka_topic>-value` on first use.
    pub fn encode(&mut self, topic: Topic, kafka_topic: &str, event: &JsonValue) -> Result<Vec<u8>, AvroError> {
        let err = |detail: String| AvroError::Encode { topic: topic.name(), detail };
        let schema = match self.writer_schemas.entry(topic) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Schema::parse_str(avro_schema(topic)).map_err(|x| err(x.to_string()))?)
            }
        };
        let value = from_json(event).resolve(schema).map_err(|e| err(e.to_string()))?;
        let full_name = match &*schema {
            Schema::Record(r) => Some(r.name.fullname(None)),
            _ => None,
        };
        let supplied = SuppliedSchema::new(full_name, SchemaType::Avro, avro_schema(topic).to_owned());
        let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(kafka_topic.to_owned(), false, supplied);
        self.rt.block_on(self.encoder.encode_value(value, &strategy)).map_err(|e| {
            if e.retriable {
                AvroError::Unavailable(describe(&e))
            } else {
                err(describe(&e))
            }
        })
    }
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(c) => format!("{} ({c})", e.error),
        None => e.error.clone(),
    }
}

/// Avro → JSON, dropping nulls so an absent optional field and a null
/// union branch read the same.
fn to_json(v: AvroValue) -> Result<JsonValue, String> {
    let json = JsonValue::try_from(v).map_err(|e| e.to_string())?;
    Ok(strip_nulls(json))
}

/// JSON → untyped Avro; `resolve` then fits it to the schema (records,
/// enums, unions, int → double promotion).
fn from_json(v: &JsonValue) -> AvroValue {
    match v {
        JsonValue::Null => AvroValue::Null,
        JsonValue::Bool(b) => AvroValue::Boolean(*b),
        JsonValue::Number(n) => match n.as_i64() {
            Some(i) => AvroValue::Long(i),
            None => AvroValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        JsonValue::String(s) => AvroValue::String(s.clone()),
        JsonValue::Array(a) => AvroValue::Array(a.iter().map(from_json).collect()),
        JsonValue::Object(m) => AvroValue::Map(m.iter().map(|(k, x)| (k.clone(), from_json(x))).collect()),
    }
}
