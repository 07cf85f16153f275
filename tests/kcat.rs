//! An external Kafka client (kcat, librdkafka's CLI, not our producer)
//! publishes JSON events, keys and tombstones; revpulse consumes them and
//! ClickHouse equals a `replay` of the same files.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use revpulse::config::Config;
use revpulse::generate::{write_dir, GenConfig};
use revpulse::replay;
use revpulse_pipelines::event::Topic;
use serde_json::Value;

#[test]
fn events_produced_by_kcat_are_consumed() {
    assert!(
        Command::new("kcat").arg("-V").output().is_ok_and(|o| o.status.success()),
        "kcat not found: scripts/setup.sh installs it"
    );
    let rt = revpulse::start::runtime().expect("runtime");
    let ch = rt.block_on(common::fresh_clickhouse("kcat"));
    let mut cfg = Config { clickhouse: ch.clone(), ..Config::default() };
    let cluster = revpulse::start::embedded_kafka(&mut cfg.kafka, 2).expect("mock cluster");

    let dir = std::env::temp_dir().join(format!("revpulse-kcat-{}", std::process::id()));
    let counts = write_dir(&dir, GenConfig { seed: 3, tenants: 2, ..GenConfig::default() }, 4_000).expect("generate");
    let mut tombstones = 0;
    for t in Topic::ALL {
        // kcat -K: "key<TAB>value" per line; -Z: an empty value is a tombstone.
        let text = std::fs::read_to_string(dir.join(format!("{}.jsonl", t.name()))).expect("read");
        let mut input = String::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).expect("generated JSON");
            if v.get("_tombstone").and_then(Value::as_bool) == Some(true) {
                tombstones += 1;
                input.push_str(&format!("{}\t\n", v["_key"].as_str().expect("_key")));
            } else {
                input.push_str(&format!("{}\t{line}\n", v[t.key_field()].as_str().expect("key field")));
            }
        }
        let mut kcat = Command::new("kcat")
            .args(["-P", "-b", &cluster.bootstrap_servers(), "-t", cfg.kafka.topics.get(t), "-K", "\t", "-Z"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("kcat");
        kcat.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write to kcat");
        assert!(kcat.wait().expect("kcat exit").success(), "kcat -P {}", t.name());
    }
    assert!(tombstones > 0, "the data set has tombstones");

    let total: usize = counts.values().sum();
    let (shared, _) = common::run_until_seen(&rt, &cfg, total, Duration::from_secs(60), |_| {});
    let consumed: u64 = Topic::ALL.iter().map(|t| shared.metrics.consumed.with_label_values(&[t.name()]).get()).sum();
    assert_eq!(consumed as usize, total, "every kcat message was consumed, none rejected");

    let (lines, _) = replay::read_dir(&dir).expect("read");
    let expected = replay::run(lines, &cfg.metrics, 1, 5_000).expect("replay");
    rt.block_on(common::assert_clickhouse_matches(&ch, &expected));
    let _ = std::fs::remove_dir_all(&dir);
}
