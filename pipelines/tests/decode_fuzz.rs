//! The decoder never panics, whatever the bytes (SPEC §2.6 "never a crash"):
//! arbitrary bytes, and valid events mutated byte by byte, for every topic.
//! Whatever it accepts is valid and round-trips through its own encoding.

use proptest::prelude::*;
use revpulse_pipelines::event::{decode, decode_value, Topic};

const SAMPLES: [(Topic, &str); 6] = [
    (
        Topic::Impressions,
        r#"{"tenant_id":"t","ts":"2026-11-01T12:34:56.789Z","event_id":"e","channel":"maps","intent_cluster":"i","impressions":10,"share_ai_snippet":0.5,"ctr_baseline":0.1,"ctr_drop_when_ai":0.5,"lead_cr":0.1,"close_rate":0.2,"recoverable_share":0.3,"avg_gross":1000}"#,
    ),
    (
        Topic::Conversations,
        r#"{"tenant_id":"t","ts":"2026-11-01T00:00:00Z","event_id":"c","conversation_id":"cv","subject_id":"s","kind":"message","facts":{"homeowner":true,"monthly_bill":250,"property_type":"condo","sentiment":-0.5,"questions":2}}"#,
    ),
    (
        Topic::Messages,
        r#"{"tenant_id":"t","ts":"2026-11-01T00:00:00Z","message_id":"m","subject_id":"s","direction":"outbound","channel":"sms","campaign_id":"c","experiment_id":"x","variant":"control","status":"sent","sent_at":"2026-11-01T00:00:00+01:00"}"#,
    ),
    (
        Topic::Payments,
        r#"{"tenant_id":"t","ts":"2026-11-01T00:00:00Z","payment_id":"p","subject_id":"s","status":"succeeded","amount_cents":1999,"currency":"USD"}"#,
    ),
    (
        Topic::RoUpdates,
        r#"{"tenant_id":"t","ts":"2026-11-01T00:00:00Z","ro_id":"r","subject_id":"s","status":"closed","opened_at":"2026-10-01T00:00:00Z","closed_at":"2026-11-01T00:00:00Z","lines":[{"code":"LOF","amount_cents":4999,"offer_id":"o"}]}"#,
    ),
    (
        Topic::Deals,
        r#"{"tenant_id":"t","ts":"2026-11-01T00:00:00Z","deal_id":"d","stage":"proposal","amount_cents":500000,"currency":"EUR","stage_entered_at":"2026-10-01T00:00:00Z","last_activity_at":"2026-10-20T00:00:00Z","expected_close":"2026-12-15T00:00:00Z","champion_identified":true,"competitors_mentioned":1,"interactions":4}"#,
    ),
];

fn check(topic: Topic, bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(event) = decode_value(topic, bytes) {
        let again = decode_value(topic, event.to_json().as_bytes());
        prop_assert_eq!(again.as_ref().ok(), Some(&event), "accepted input does not round-trip");
    }
    let _ = decode(topic, Some(bytes), Some(bytes));
    let _ = decode(topic, Some(bytes), None);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), t in 0usize..6) {
        check(SAMPLES[t].0, &bytes)?;
    }

    #[test]
    fn mutated_events_never_panic(
        t in 0usize..6,
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..6),
    ) {
        let (topic, sample) = SAMPLES[t];
        prop_assert!(decode_value(topic, sample.as_bytes()).is_ok(), "sample {} is valid", t);
        let mut bytes = sample.as_bytes().to_vec();
        for (at, op, byte) in edits {
            let i = at.index(bytes.len().max(1)).min(bytes.len());
            match op {
                0 if i < bytes.len() => { bytes.remove(i); }
                1 => bytes.insert(i, byte),
                2 if i < bytes.len() => bytes[i] = byte,
                _ => bytes.truncate(i),
            }
        }
        check(topic, &bytes)?;
    }

    #[test]
    fn extreme_numbers_are_rejected_or_exact(n in prop::sample::select(vec![
        "1e400", "-1e400", "18446744073709551616", "1000000000000001", "-0", "0.0000000001", "1e-400", "-1", "NaN", "Infinity",
    ])) {
        let doc = SAMPLES[3].1.replace("1999", n);
        check(Topic::Payments, doc.as_bytes())?;
        let doc = SAMPLES[0].1.replace("0.5,\"ctr_b", &format!("{n},\"ctr_b"));
        check(Topic::Impressions, doc.as_bytes())?;
    }
}
