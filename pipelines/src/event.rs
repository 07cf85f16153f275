//! The event model of SPEC §2: one typed struct per topic, decoding with the
//! §2.6 rejection rules, upsert keys and tombstones.

use serde::{Deserialize, Serialize};

use crate::time::Micros;
use crate::types::{Count, NonNeg, Signed, Str, Tenant, Text, Ts, Unit};

/// Largest accepted payload (SPEC §2.6).
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// The six input topics. The name is the default Kafka topic name and the
/// `replay` file stem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    Impressions,
    Conversations,
    Messages,
    Payments,
    RoUpdates,
    Deals,
}

impl Topic {
    pub const ALL: [Topic; 6] =
        [Topic::Impressions, Topic::Conversations, Topic::Messages, Topic::Payments, Topic::RoUpdates, Topic::Deals];

    pub fn name(self) -> &'static str {
        match self {
            Topic::Impressions => "impressions",
            Topic::Conversations => "conversations",
            Topic::Messages => "messages",
            Topic::Payments => "payments",
            Topic::RoUpdates => "ro_updates",
            Topic::Deals => "deals",
        }
    }

    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The field whose value is the upsert key (SPEC §2.1–2.5, §2.7).
    pub fn key_field(self) -> &'static str {
        match self {
            Topic::Impressions | Topic::Conversations => "event_id",
            Topic::Messages => "message_id",
            Topic::Payments => "payment_id",
            Topic::RoUpdates => "ro_id",
            Topic::Deals => "deal_id",
        }
    }
}

/// SPEC §2.1.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Impression {
    pub tenant_id: Tenant,
    pub ts: Ts,
    pub event_id: Str,
    pub channel: Str,
    pub intent_cluster: Str,
    pub impressions: Count,
    pub share_ai_snippet: Unit,
    pub ctr_baseline: Unit,
    pub ctr_drop_when_ai: Unit,
    pub lead_cr: Unit,
    pub close_rate: Unit,
    pub recoverable_share: Unit,
    pub avg_gross: NonNeg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Started,
    Message,
    Ended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PropertyType {
    SingleFamily,
    Condo,
    Coop,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionMaker {
    Primary,
    Influencer,
    Researcher,
}

/// Lead facts a conversation event may carry (SPEC §2.2); all optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Facts {
    #[serde(default)]
    pub homeowner: Option<bool>,
    #[serde(default)]
    pub monthly_bill: Option<NonNeg>,
    #[serde(default)]
    pub property_type: Option<PropertyType>,
    #[serde(default)]
    pub region: Option<Str>,
    #[serde(default)]
    pub timeline_months: Option<Count>,
    #[serde(default)]
    pub credit_signal: Option<bool>,
    #[serde(default)]
    pub decision_maker: Option<DecisionMaker>,
    #[serde(default)]
    pub sentiment: Option<Signed>,
    #[serde(default)]
    pub questions: Option<Count>,
    #[serde(default)]
    pub technical_questions: Option<Count>,
    #[serde(default)]
    pub objections_resolved: Option<Count>,
}

/// SPEC §2.2.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Conversation {
    pub tenant_id: Tenant,
    pub ts: Ts,
    pub event_id: Str,
    pub conversation_id: Str,
    pub subject_id: Str,
    pub kind: ConversationKind,
    #[serde(default)]
    pub facts: Option<Facts>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outbound,
    Inbound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageChannel {
    Sms,
    Email,
    Push,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    Control,
    Treatment,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Queued,
    Sent,
    Delivered,
    Failed,
    Clicked,
    Replied,
    HeldOut,
}

/// SPEC §2.3.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Message {
    pub tenant_id: Tenant,
    pub ts: Ts,
    pub message_id: Str,
    pub subject_id: Str,
    pub direction: Direction,
    pub channel: MessageChannel,
    #[serde(default)]
    pub campaign_id: Option<Str>,
    #[serde(default)]
    pub offer_id: Option<Str>,
    #[serde(default)]
    pub experiment_id: Option<Str>,
    #[serde(default)]
    pub variant: Option<Variant>,
    pub status: MessageStatus,
    #[serde(default)]
    pub sent_at: Option<Ts>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Succeeded,
    Failed,
    Refunded,
}

/// SPEC §2.4.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Payment {
    pub tenant_id: Tenant,
    pub ts: Ts,
    pub payment_id: Str,
    pub subject_id: Str,
    pub status: PaymentStatus,
    pub amount_cents: Count,
    pub currency: Str,
    #[serde(default)]
    pub plan_id: Option<Str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoStatus {
    Open,
    Closed,
    Void,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoLine {
    pub code: Str,
    pub amount_cents: Count,
    #[serde(default)]
    pub offer_id: Option<Str>,
}

/// SPEC §2.5.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoUpdate {
    pub tenant_id: Tenant,
    pub ts: Ts,
    pub ro_id: Str,
    pub subject_id: Str,
    #[serde(default)]
    pub vin: Option<Str>,
    pub status: RoStatus,
    pub opened_at: Ts,
    #[serde(default)]
    pub closed_at: Option<Ts>,
    #[serde(default)]
    pub advisor: Option<Str>,
    pub lines: Vec<RoLine>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DealStage {
    Discovery,
    Qualified,
    Proposal,
    Negotiation,
    Won,
    Lost,
}

impl DealStage {
    pub const ALL: [DealStage; 6] = [
        DealStage::Discovery,
        DealStage::Qualified,
        DealStage::Proposal,
        DealStage::Negotiation,
        DealStage::Won,
        DealStage::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DealStage::Discovery => "discovery",
            DealStage::Qualified => "qualified",
            DealStage::Proposal => "proposal",
            DealStage::Negotiation => "negotiation",
            DealStage::Won => "won",
            DealStage::Lost => "lost",
        }
    }

    /// Open unless won or lost (SPEC §3.11).
    pub fn is_open(self) -> bool {
        !matches!(self, DealStage::Won | DealStage::Lost)
    }
}

/// SPEC §2.7: a CRM opportunity's current state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Deal {
    pub tenant_id: Tenant,
    pub ts: Ts,
    pub deal_id: Str,
    #[serde(default)]
    pub subject_id: Option<Str>,
    pub stage: DealStage,
    pub amount_cents: Count,
    pub currency: Str,
    pub stage_entered_at: Ts,
    pub last_activity_at: Ts,
    pub expected_close: Ts,
    #[serde(default)]
    pub owner: Option<Str>,
    #[serde(default)]
    pub champion_identified: Option<bool>,
    #[serde(default)]
    pub budget_confirmed: Option<bool>,
    #[serde(default)]
    pub decision_maker_engaged: Option<bool>,
    #[serde(default)]
    pub competitors_mentioned: Option<Count>,
    #[serde(default)]
    pub interactions: Option<Count>,
}

/// A version of an upsert-keyed entity: its upsert key and event time.
pub trait Versioned {
    fn upsert_key(&self) -> &str;
    fn ts(&self) -> Micros;
    fn tenant(&self) -> &str;
}

macro_rules! versioned {
    ($ty:ty, $key:ident) => {
        impl Versioned for $ty {
            fn upsert_key(&self) -> &str {
                &self.$key
            }
            fn ts(&self) -> Micros {
                self.ts.0
            }
            fn tenant(&self) -> &str {
                &self.tenant_id.0
            }
        }
    };
}
versioned!(Impression, event_id);
versioned!(Conversation, event_id);
versioned!(Message, message_id);
versioned!(Payment, payment_id);
versioned!(RoUpdate, ro_id);
versioned!(Deal, deal_id);

/// A decoded, valid event of any topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Event {
    Impression(Impression),
    Conversation(Conversation),
    Message(Message),
    Payment(Payment),
    RoUpdate(RoUpdate),
    Deal(Deal),
}

impl Event {
    pub fn topic(&self) -> Topic {
        match self {
            Event::Impression(_) => Topic::Impressions,
            Event::Conversation(_) => Topic::Conversations,
            Event::Message(_) => Topic::Messages,
            Event::Payment(_) => Topic::Payments,
            Event::RoUpdate(_) => Topic::RoUpdates,
            Event::Deal(_) => Topic::Deals,
        }
    }

    fn versioned(&self) -> &dyn Versioned {
        match self {
            Event::Impression(e) => e,
            Event::Conversation(e) => e,
            Event::Message(e) => e,
            Event::Payment(e) => e,
            Event::RoUpdate(e) => e,
            Event::Deal(e) => e,
        }
    }

    pub fn upsert_key(&self) -> &str {
        self.versioned().upsert_key()
    }

    pub fn ts(&self) -> Micros {
        self.versioned().ts()
    }

    /// The tenant the event belongs to.
    pub fn tenant(&self) -> &str {
        self.versioned().tenant()
    }

    /// The event as one JSON object (the wire format of every topic).
    pub fn to_json(&self) -> String {
        let r = match self {
            Event::Impression(e) => serde_json::to_value(e),
            Event::Conversation(e) => serde_json::to_value(e),
            Event::Message(e) => serde_json::to_value(e),
            Event::Payment(e) => serde_json::to_value(e),
            Event::RoUpdate(e) => serde_json::to_value(e),
            Event::Deal(e) => serde_json::to_value(e),
        };
        // Serializing these plain structs cannot fail (no maps with non-string keys).
        strip_nulls(r.unwrap_or_default()).to_string()
    }
}

/// Drops `null` members of objects, at any depth: an absent optional field
/// and a null one read the same, and events are written without them. (The
/// structs themselves serialize every field: timely's exchange between
/// processes uses bincode, which cannot skip fields.)
pub fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            Value::Object(m.into_iter().filter(|(_, x)| !x.is_null()).map(|(k, x)| (k, strip_nulls(x))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// Why an input message was rejected; the label of the DLQ header and of
/// the `revpulse_rejected_total` counter (bounded set, SPEC §2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    PayloadTooLarge,
    InvalidUtf8,
    InvalidJson,
    MissingField,
    WrongType,
    UnknownEnum,
    OutOfRange,
    StringTooLong,
    BadTimestamp,
    /// A tombstone without a message key names no entity.
    MissingKey,
    /// Older than the configured lateness horizon (SPEC §7).
    TooLate,
    /// Not decodable in the configured wire format (e.g. Avro framing).
    BadFormat,
    /// An Avro message whose schema id the registry does not know.
    UnknownSchema,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::PayloadTooLarge,
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::MissingField,
        Reason::WrongType,
        Reason::UnknownEnum,
        Reason::OutOfRange,
        Reason::StringTooLong,
        Reason::BadTimestamp,
        Reason::MissingKey,
        Reason::TooLate,
        Reason::BadFormat,
        Reason::UnknownSchema,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PayloadTooLarge => "payload_too_large",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::UnknownEnum => "unknown_enum",
            Reason::OutOfRange => "out_of_range",
            Reason::StringTooLong => "string_too_long",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::MissingKey => "missing_key",
            Reason::TooLate => "too_late",
            Reason::BadFormat => "bad_format",
            Reason::UnknownSchema => "unknown_schema",
        }
    }
}

/// A rejected input message: the reason label and a human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Reject {
    pub reason: Reason,
    pub detail: String,
}

impl Reject {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Reject { reason, detail: detail.into() }
    }

    fn from_json(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let msg = e.to_string();
        let reason = match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => Reason::InvalidJson,
            Category::Data => {
                // serde's own messages, or the prefix our validated types put first.
                const PREFIXES: [(&str, Reason); 7] = [
                    ("missing field", Reason::MissingField),
                    ("unknown variant", Reason::UnknownEnum),
                    ("invalid type", Reason::WrongType),
                    ("invalid value", Reason::OutOfRange),
                    ("out_of_range", Reason::OutOfRange),
                    ("string_too_long", Reason::StringTooLong),
                    ("bad_timestamp", Reason::BadTimestamp),
                ];
                PREFIXES.iter().find(|(p, _)| msg.starts_with(p)).map(|(_, r)| *r).unwrap_or(Reason::WrongType)
            }
        };
        Reject { reason, detail: msg }
    }
}

/// One input message after decoding: an upsert of `key` to `value`, or a
/// tombstone (`value == None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upsert {
    pub key: Text,
    pub value: Option<Event>,
}

/// Decodes one Kafka message of `topic` (SPEC §2.6). A `None` payload is a
/// tombstone for `key`.
pub fn decode(topic: Topic, key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<Upsert, Reject> {
    let Some(payload) = payload else {
        let key = key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Reject::new(Reason::MissingKey, "tombstone without a message key"))?;
        let key =
            std::str::from_utf8(key).map_err(|e| Reject::new(Reason::InvalidUtf8, format!("message key: {e}")))?;
        return Ok(Upsert { key: Text::from(key), value: None });
    };
    let event = decode_value(topic, payload)?;
    Ok(Upsert { key: Text::from(event.upsert_key()), value: Some(event) })
}

/// Decodes and validates one JSON event of `topic`.
pub fn decode_value(topic: Topic, payload: &[u8]) -> Result<Event, Reject> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Reject::new(Reason::PayloadTooLarge, format!("{} bytes > {MAX_PAYLOAD_BYTES}", payload.len())));
    }
    let text = std::str::from_utf8(payload).map_err(|e| Reject::new(Reason::InvalidUtf8, e.to_string()))?;
    validate_json(topic, text)
}

/// Decodes and validates one JSON event of `topic` whose size the caller
/// has already bounded (the Avro path bounds the Avro bytes, and the JSON
/// it spells may be a little larger).
pub fn validate_json(topic: Topic, text: &str) -> Result<Event, Reject> {
    let event = match topic {
        Topic::Impressions => Event::Impression(serde_json::from_str(text).map_err(Reject::from_json)?),
        Topic::Conversations => Event::Conversation(serde_json::from_str(text).map_err(Reject::from_json)?),
        Topic::Messages => {
            let m: Message = serde_json::from_str(text).map_err(Reject::from_json)?;
            if m.experiment_id.is_some() != m.variant.is_some() {
                return Err(Reject::new(Reason::MissingField, "experiment_id and variant go together"));
            }
            Event::Message(m)
        }
        Topic::Payments => {
            let p: Payment = serde_json::from_str(text).map_err(Reject::from_json)?;
            check_currency(&p.currency)?;
            Event::Payment(p)
        }
        Topic::RoUpdates => {
            let r: RoUpdate = serde_json::from_str(text).map_err(Reject::from_json)?;
            if r.status == RoStatus::Closed && r.closed_at.is_none() {
                return Err(Reject::new(Reason::MissingField, "closed_at is required when status is closed"));
            }
            Event::RoUpdate(r)
        }
        Topic::Deals => {
            let d: Deal = serde_json::from_str(text).map_err(Reject::from_json)?;
            check_currency(&d.currency)?;
            Event::Deal(d)
        }
    };
    Ok(event)
}

/// An ISO 4217 code is three upper-case letters (SPEC §2.4, §2.7).
fn check_currency(currency: &str) -> Result<(), Reject> {
    if currency.len() == 3 && currency.bytes().all(|c| c.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(Reject::new(Reason::UnknownEnum, format!("currency {currency:?} is not an ISO 4217 code")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMP: &str = r#"{"tenant_id":"t1","ts":"2026-11-01T12:34:56.789Z","event_id":"e1","channel":"google_search","intent_cluster":"ev","impressions":1000,"share_ai_snippet":0.4,"ctr_baseline":0.05,"ctr_drop_when_ai":0.5,"lead_cr":0.1,"close_rate":0.2,"recoverable_share":0.3,"avg_gross":2500}"#;

    fn reason(topic: Topic, s: &str) -> Reason {
        match decode_value(topic, s.as_bytes()) {
            Ok(e) => panic!("accepted {s}: {e:?}"),
            Err(r) => r.reason,
        }
    }

    #[test]
    fn decodes_valid_impression_and_round_trips() {
        let e = decode_value(Topic::Impressions, IMP.as_bytes()).expect("valid");
        assert_eq!(e.upsert_key(), "e1");
        let again = decode_value(Topic::Impressions, e.to_json().as_bytes()).expect("round trip");
        assert_eq!(e, again);
    }

    #[test]
    fn classifies_every_reject_rule() {
        let t = Topic::Impressions;
        assert_eq!(reason(t, "{"), Reason::InvalidJson);
        assert_eq!(reason(t, "[1,2]"), Reason::WrongType);
        assert_eq!(reason(t, &IMP.replace(r#""channel":"google_search","#, "")), Reason::MissingField);
        assert_eq!(reason(t, &IMP.replace("1000", "\"1000\"")), Reason::WrongType);
        assert_eq!(reason(t, &IMP.replace("1000", "-5")), Reason::OutOfRange);
        assert_eq!(reason(t, &IMP.replace("1000", "10.5")), Reason::WrongType);
        assert_eq!(reason(t, &IMP.replace("0.4", "1.4")), Reason::OutOfRange);
        assert_eq!(reason(t, &IMP.replace("2026-11-01T12", "2026-11-01 12")), Reason::BadTimestamp);
        assert_eq!(reason(t, &IMP.replace("\"ev\"", &format!("\"{}\"", "x".repeat(1025)))), Reason::StringTooLong);
        assert_eq!(reason(t, &IMP.replace("\"t1\"", "\"\"")), Reason::OutOfRange);
        let too_big = format!("{}{}", IMP, " ".repeat(MAX_PAYLOAD_BYTES));
        assert_eq!(reason(t, &too_big), Reason::PayloadTooLarge);
        assert_eq!(decode_value(t, b"\xff\xfe").map_err(|r| r.reason), Err(Reason::InvalidUtf8));
        // Deep nesting never recurses on the stack: unknown fields are skipped
        // iteratively, known ones fail their type.
        let nest = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode_value(t, IMP.replacen('{', &format!("{{\"x\":{nest},"), 1).as_bytes()).is_ok());
        assert_eq!(reason(t, &IMP.replace("\"google_search\"", &nest)), Reason::WrongType);
        assert_eq!(reason(t, &"[".repeat(100_000)), Reason::WrongType);
        let m = r#"{"tenant_id":"t","ts":"2026-11-01T00:00:00Z","message_id":"m","subject_id":"s","direction":"outbound","channel":"fax","status":"sent"}"#;
        assert_eq!(reason(Topic::Messages, m), Reason::UnknownEnum);
        let m = m.replace("fax", "sms").replace(r#""status""#, r#""experiment_id":"x","status""#);
        assert_eq!(reason(Topic::Messages, &m), Reason::MissingField);
    }

    #[test]
    fn tombstones_need_a_key() {
        let t = decode(Topic::Payments, Some(b"p1"), None).expect("tombstone");
        assert_eq!(t, Upsert { key: "p1".into(), value: None });
        assert_eq!(decode(Topic::Payments, None, None).map_err(|r| r.reason), Err(Reason::MissingKey));
    }
}
