//! Exactly-once effect under faults (SPEC §7), with the real binary as a
//! child process, librdkafka's mock cluster (kept by this test process, so it
//! survives the child) and a real ClickHouse:
//!
//! - `kill -9` at three random points of a 200k-event stream (with 5%
//!   malformed messages of every kind), restart each time, then a graceful
//!   SIGTERM: ClickHouse equals a from-scratch recomputation, the process
//!   exits 0, every offset is committed, every bad message is dead-lettered.
//! - ClickHouse stopped for 20 s mid-stream and restarted: the same, with
//!   `/readyz` false during the outage and the child's RSS under a bound.
//! - The mock cluster's broker down for 8 s: the same.
//! - On an out-of-process broker (Tansu, scripts/tansu.sh): `kill -9` twice
//!   while the broker outlives the pipeline, and the broker process stopped
//!   for 8 s and started again with its data on disk: the same (see
//!   [`Tansu`] for what Tansu 0.6 lacks and these runs therefore leave out).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;
use revpulse::generate::{GenConfig, Generator};
use revpulse::replay::{self, Line};
use revpulse_connectors::clickhouse::ClickHouseConfig;
use revpulse_connectors::kafka::{KafkaConfig, KeyedProducer};
use revpulse_pipelines::event::{decode_value, Topic};

const GROUP: &str = "revpulse-faults";

/// One fault test at a time: each runs a child pipeline at full speed, and
/// the readiness and bound checks time what happens during an outage, which
/// a concurrent kill -9 run on the same two cores would distort.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_config(dir: &Path, brokers: &str, ch: &ClickHouseConfig, api_port: u16) -> PathBuf {
    let path = dir.join("revpulse.toml");
    let text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{GROUP}\"\nmax_batch_messages = 5000\n\
         [clickhouse]\nurl = \"{}\"\ndatabase = \"{}\"\nretry_max_ms = 1000\n\
         [api]\nlisten = \"127.0.0.1:{api_port}\"\n[pipeline]\nmax_in_flight_batches = 4\n\
         [state]\ndir = \"{}\"\ninterval_ms = 200\n",
        ch.url,
        ch.database,
        dir.join("state").display()
    );
    std::fs::File::create(&path).and_then(|mut f| f.write_all(text.as_bytes())).expect("write config");
    path
}

fn spawn(config: &Path, log: &Path) -> Child {
    spawn_workers(config, log, 1)
}

fn spawn_workers(config: &Path, log: &Path, workers: usize) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_revpulse"))
        .args(["run", "-w", &workers.to_string(), "--config"])
        .arg(config)
        .env("RUST_LOG", "info,librdkafka=warn,revpulse::runner::checkpoint=debug")
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("spawn revpulse run")
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Produces `total` generated events (5% malformed among them) at about
/// `rate` per second, calling `tick(fraction_done)` as it goes. Returns the
/// valid events in arrival order and the number of malformed ones.
fn stream(kafka: &KafkaConfig, total: usize, rate: usize, seed: u64, mut tick: impl FnMut(f64)) -> (Vec<Line>, usize) {
    let producer = KeyedProducer::new(kafka).expect("producer");
    let mut generator = Generator::new(GenConfig { seed, tenants: 4, ..GenConfig::default() });
    let bad = common::malformed();
    let mut lines = Vec::new();
    let mut seq: BTreeMap<Topic, u64> = BTreeMap::new();
    let mut malformed = 0;
    let started = Instant::now();
    for i in 0..total {
        if i % 20 == 7 {
            // The payload-too-large kind is 1 MiB: only twice per run, on
            // different keys, so no partition outgrows the mock cluster's
            // ~5 MiB retention (a restart re-reads every partition).
            let (topic, key, payload, _) = &bad[(i / 20) % bad.len()];
            if payload.len() < 10_000 || i % (total / 2) == 7 {
                let key = format!("{key}-{i}");
                producer.send(kafka.topics.get(*topic), key.as_bytes(), Some(payload)).expect("send bad");
                malformed += 1;
            }
        }
        let r = generator.next_record();
        producer
            .send(kafka.topics.get(r.topic), r.key.as_bytes(), r.payload.as_deref().map(str::as_bytes))
            .expect("send");
        let s = seq.entry(r.topic).or_insert(0);
        *s += 1;
        let value =
            r.payload.as_deref().map(|p| decode_value(r.topic, p.as_bytes()).expect("generated events are valid"));
        lines.push(Line { topic: r.topic, key: r.key, value, seq: *s });
        if i % 1_000 == 999 {
            producer.poll();
            tick(i as f64 / total as f64);
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            std::thread::sleep(due.saturating_sub(started.elapsed()));
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    (lines, malformed)
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    common::send_sigterm(child);
    common::wait_exit(child, Duration::from_secs(60))
}

fn setup(
    name: &str,
    partitions: i32,
) -> (MockCluster<'static, rdkafka::producer::DefaultProducerContext>, KafkaConfig, PathBuf) {
    let mut kafka = KafkaConfig { group_id: GROUP.into(), ..KafkaConfig::default() };
    let cluster = revpulse::start::embedded_kafka(&mut kafka, partitions).expect("embedded kafka");
    (cluster, kafka, test_dir(name))
}

/// A fresh directory for test `name`'s configuration, log and state.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("revpulse-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn kill_9_three_times_then_sigterm_is_exact() {
    kill_9_then_sigterm("kill9", 1, 3, None);
}

/// Five kills on two workers with retention configured (latenesses longer
/// than the stream, so the expected result is the plain recomputation),
/// checkpoints every 50 ms so that kills land while one is being written.
#[test]
fn kill_9_five_times_on_two_workers_with_retention_is_exact() {
    let retention = "[metrics.retention]\nrar_lateness_secs = 40000000\nrevenue_per_minute_lateness_secs = 40000000\n\
                     attribution_lateness_secs = 40000000\nsubject_idle_secs = 40000000\n";
    kill_9_then_sigterm("kill9w2", 2, 5, Some(retention));
}

fn kill_9_then_sigterm(name: &str, workers: usize, kills: usize, extra_config: Option<&str>) {
    let _serial = serial();
    let rt = revpulse::start::runtime().expect("runtime");
    let ch = rt.block_on(common::fresh_clickhouse(name));
    // 8 partitions per topic keep each under the mock cluster's ~5 MiB retention.
    let (_cluster, kafka, dir) = setup(name, 8);
    let config = write_config(&dir, &kafka.brokers, &ch, common::free_port());
    if let Some(extra) = extra_config {
        let text = std::fs::read_to_string(&config).expect("config");
        let text = text.replace("interval_ms = 200", "interval_ms = 50") + extra;
        std::fs::write(&config, text).expect("config");
    }
    let log = dir.join("revpulse.log");

    let mut child = spawn_workers(&config, &log, workers);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11 + kills as u64);
    let step = 0.84 / kills as f64;
    let mut kill_at: Vec<f64> = (0..kills).map(|i| 0.1 + step * i as f64 + rng.random_range(0.0..step * 0.7)).collect();
    let mut killed = 0;
    let (lines, malformed) = stream(&kafka, 200_000, 40_000, 5, |done| {
        if kill_at.first().is_some_and(|at| done >= *at) {
            kill_at.remove(0);
            child.kill().expect("kill -9");
            let _ = child.wait();
            killed += 1;
            child = spawn_workers(&config, &log, workers);
        }
    });
    assert_eq!(killed, kills);
    common::wait_committed(&kafka, Duration::from_secs(240));
    let status = sigterm(&mut child);
    assert!(status.success(), "graceful stop exits 0, got {status}");

    let expected = replay::run(lines, &Default::default(), 1, 50_000).expect("replay");
    rt.block_on(common::assert_metric_tables_match(&ch, &expected));

    // Every malformed message was dead-lettered (at least once across restarts).
    let dlq: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", "dlq-count")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("dlq consumer");
    // The high watermark counts every dead letter ever appended (the mock
    // cluster may have dropped old ones); restarts may dead-letter twice.
    let (_, high) = dlq.fetch_watermarks(&kafka.dlq_topic, 0, Duration::from_secs(5)).expect("dlq watermarks");
    assert!(high as usize >= malformed, "{high} dead letters for {malformed} malformed messages");
    // The restarts resumed from checkpoints (not from the topics' beginning).
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // Only starts before the first checkpoint was written read the topics
    // from their beginning.
    let starts: Vec<bool> = text
        .lines()
        .filter_map(|l| match () {
            _ if l.contains("resuming from the checkpoint") => Some(true),
            _ if l.contains("no checkpoint yet") => Some(false),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), kills + 1, "one start per run");
    let first = starts.iter().position(|r| *r).expect("a restart resumed from a checkpoint");
    assert!(starts[first..].iter().all(|r| *r), "every start after the first checkpoint resumed from one: {starts:?}");
    eprintln!("{name}: {} of {kills} kills landed while a checkpoint was being written", kills_mid_write(&text));
    let _ = std::fs::remove_dir_all(&dir);
}

/// How many runs in `log` ended (were killed) between "writing
/// checkpoint" and its "checkpoint written".
fn kills_mid_write(log: &str) -> usize {
    let mut writing = false;
    let mut mid = 0;
    for line in log.lines() {
        if line.contains("no checkpoint yet") || line.contains("resuming from the checkpoint") {
            mid += usize::from(writing);
            writing = false;
        } else if line.contains("writing checkpoint") {
            writing = true;
        } else if line.contains("checkpoint written") {
            writing = false;
        }
    }
    mid
}

#[test]
fn clickhouse_outage_of_20s_is_exact_and_bounded() {
    let _serial = serial();
    let rt = revpulse::start::runtime().expect("runtime");
    // A ClickHouse of its own, so stopping it disturbs no other test.
    let ch_dir = std::env::temp_dir().join(format!("revpulse-faults-ch-{}", std::process::id()));
    let (http, tcp) = (common::free_port(), common::free_port());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/clickhouse.sh");
    let clickhouse = |verb: &str| {
        let ok = Command::new("bash")
            .arg(script)
            .arg(verb)
            .env("REVPULSE_CH_DIR", &ch_dir)
            .env("REVPULSE_CH_HTTP_PORT", http.to_string())
            .env("REVPULSE_CH_TCP_PORT", tcp.to_string())
            .status()
            .expect("clickhouse.sh");
        assert!(ok.success(), "clickhouse.sh {verb}");
    };
    clickhouse("start");
    let ch = rt.block_on(common::fresh_clickhouse_at("outage", Some(format!("http://127.0.0.1:{http}"))));
    assert_eq!(ch.url, format!("http://127.0.0.1:{http}"));

    let (_cluster, kafka, dir) = setup("outage", 4);
    let api_port = common::free_port();
    let config = write_config(&dir, &kafka.brokers, &ch, api_port);
    let mut child = spawn(&config, &dir.join("revpulse.log"));
    let pid = child.id();

    let ready = || {
        Command::new("curl")
            .args(["-fsS", "--max-time", "1", &format!("http://127.0.0.1:{api_port}/readyz")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let mut max_rss = 0;
    let mut outage_seen_unready = false;
    let mut outage = None;
    let (lines, _) = stream(&kafka, 60_000, 2_000, 9, |done| {
        max_rss = max_rss.max(rss_kib(pid).unwrap_or(0));
        if outage.is_none() && done >= 0.2 {
            clickhouse("stop");
            outage = Some(Instant::now());
        }
        if let Some(at) = outage {
            if at.elapsed() > Duration::from_secs(3) && at.elapsed() < Duration::from_secs(20) && !ready() {
                outage_seen_unready = true;
            }
            if at.elapsed() >= Duration::from_secs(20) && ch_down(&ch.url) {
                clickhouse("start");
            }
        }
    });
    // The outage lasts 20 s even if the stream ended sooner.
    let outage_len = outage.map(|o| o.elapsed()).unwrap_or_default();
    std::thread::sleep(Duration::from_secs(20).saturating_sub(outage_len));
    if ch_down(&ch.url) {
        clickhouse("start");
    }
    common::wait_committed(&kafka, Duration::from_secs(180));
    max_rss = max_rss.max(rss_kib(pid).unwrap_or(0));
    assert!(outage_seen_unready, "/readyz was false while ClickHouse was down");
    assert!(ready(), "/readyz is true again after recovery");
    assert!(sigterm(&mut child).success());

    let expected = replay::run(lines, &Default::default(), 1, 50_000).expect("replay");
    rt.block_on(common::assert_clickhouse_matches(&ch, &expected));
    eprintln!("peak RSS of revpulse run during the outage test: {} MiB", max_rss / 1024);
    assert!(max_rss < 256 * 1024, "RSS {} KiB over the 256 MiB bound", max_rss);
    clickhouse("stop");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&ch_dir);
}

/// What `/readyz` on `api_port` says of Kafka (None: no answer).
fn kafka_ready(api_port: u16) -> Option<bool> {
    Command::new("curl")
        .args(["-sS", "--max-time", "1", &format!("http://127.0.0.1:{api_port}/readyz")])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["kafka"].as_bool())
}

fn ch_down(url: &str) -> bool {
    !Command::new("curl")
        .args(["-fsS", "--max-time", "1", &format!("{url}/ping")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn kafka_broker_outage_is_exact() {
    let _serial = serial();
    let rt = revpulse::start::runtime().expect("runtime");
    let ch = rt.block_on(common::fresh_clickhouse("broker"));
    let (cluster, kafka, dir) = setup("broker", 4);
    let api_port = common::free_port();
    let config = write_config(&dir, &kafka.brokers, &ch, api_port);
    let mut child = spawn(&config, &dir.join("revpulse.log"));
    let kafka_ready = || kafka_ready(api_port);
    // Produce a first half, take the broker down for 8 s, then produce the rest.
    let (mut lines, _) = stream(&kafka, 20_000, 10_000, 21, |_| {});
    std::thread::sleep(Duration::from_secs(2));
    cluster.broker_down(1).expect("broker down");
    let down = Instant::now();
    let mut seen_unready = false;
    while down.elapsed() < Duration::from_secs(8) {
        seen_unready |= kafka_ready() == Some(false);
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.broker_up(1).expect("broker up");
    let (rest, _) = stream(&kafka, 20_000, 10_000, 22, |_| {});
    // The second generator's keys are its own (different seed), so per-key order holds.
    let offset: BTreeMap<Topic, u64> = lines.iter().fold(BTreeMap::new(), |mut m, l| {
        m.insert(l.topic, l.seq);
        m
    });
    lines.extend(rest.into_iter().map(|mut l| {
        l.seq += offset.get(&l.topic).copied().unwrap_or(0);
        l
    }));
    common::wait_committed(&kafka, Duration::from_secs(120));
    assert!(seen_unready, "/readyz reported Kafka unreachable while the broker was down");
    assert_eq!(kafka_ready(), Some(true));
    assert!(sigterm(&mut child).success());
    let expected = replay::run(lines, &Default::default(), 1, 50_000).expect("replay");
    rt.block_on(common::assert_clickhouse_matches(&ch, &expected));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Tansu broker (scripts/tansu.sh) of one test's own: a Kafka broker in a
/// process of its own, so it outlives the pipeline's and can itself be
/// stopped and started. Tansu 0.6 deviates from Kafka where revpulse
/// notices (docs/development.md, "Out-of-process broker"): its high
/// watermark is the base offset of a partition's last batch + 1, and it
/// returns committed offsets without their metadata. So these runs keep no
/// checkpoint (a checkpointed position past that false end is refused as
/// beyond the end), configure no retention (whose watermark rides in the
/// commit metadata), and wait for ClickHouse to equal the recomputation
/// instead of for committed offsets to reach the high watermark.
struct Tansu {
    dir: PathBuf,
    port: u16,
    s3_port: u16,
    storage: &'static str,
}

impl Tansu {
    fn start(name: &str, storage: &'static str) -> Tansu {
        let dir = std::env::temp_dir().join(format!("revpulse-tansu-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tansu = Tansu { dir, port: common::free_port(), s3_port: common::free_port(), storage };
        tansu.script("start");
        tansu
    }

    fn script(&self, verb: &str) {
        let ok = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/tansu.sh"))
            .arg(verb)
            .env("REVPULSE_TANSU_DIR", &self.dir)
            .env("REVPULSE_TANSU_PORT", self.port.to_string())
            .env("REVPULSE_TANSU_S3_PORT", self.s3_port.to_string())
            .env("REVPULSE_TANSU_STORAGE", self.storage)
            .status()
            .expect("scripts/tansu.sh");
        assert!(ok.success(), "scripts/tansu.sh {verb}");
    }

    /// A Kafka configuration for this broker, its topics created with
    /// `partitions` partitions. Fetches wait longer than revpulse's 10 ms
    /// default: Tansu lists every batch of a partition per fetch and answers
    /// nothing when the wait runs out first.
    fn kafka(&self, rt: &tokio::runtime::Runtime, partitions: i32) -> KafkaConfig {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let mut kafka = KafkaConfig { group_id: GROUP.into(), ..KafkaConfig::default() };
        kafka.brokers = format!("127.0.0.1:{}", self.port);
        let wait = if self.storage == "s3" { "500" } else { "100" };
        kafka.properties.insert("fetch.wait.max.ms".into(), wait.into());
        let admin: AdminClient<_> =
            ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create().expect("admin client");
        let mut names: Vec<(String, i32)> =
            Topic::ALL.iter().map(|t| (kafka.topics.get(*t).to_owned(), partitions)).collect();
        names.push((kafka.dlq_topic.clone(), 1));
        let topics: Vec<NewTopic> =
            names.iter().map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1))).collect();
        for result in rt.block_on(admin.create_topics(&topics, &AdminOptions::new())).expect("create topics") {
            result.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
        kafka
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        // Never panics: a drop while a failed test unwinds would abort the binary.
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/tansu.sh"))
            .arg("stop")
            .env("REVPULSE_TANSU_DIR", &self.dir)
            .env("REVPULSE_TANSU_PORT", self.port.to_string())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A configuration for the broker `kafka` without checkpoints (see [`Tansu`]).
fn tansu_config(dir: &Path, kafka: &KafkaConfig, ch: &ClickHouseConfig) -> PathBuf {
    let config = write_config(dir, &kafka.brokers, ch, common::free_port());
    let props: String = kafka.properties.iter().map(|(k, v)| format!("\"{k}\" = \"{v}\"\n")).collect();
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("[clickhouse]\n", &format!("[kafka.properties]\n{props}[clickhouse]\n"))
        .replace("[state]\n", "[state]\ncheckpoints = false\n");
    std::fs::write(&config, text).expect("config");
    config
}

/// Waits until ClickHouse holds exactly `expected`, then asserts it.
fn wait_matches(rt: &tokio::runtime::Runtime, ch: &ClickHouseConfig, expected: &replay::State, deadline: Duration) {
    let want: std::collections::BTreeSet<String> =
        expected.iter().map(|(k, v)| revpulse_pipelines::row::row_json(k, v).to_string()).collect();
    let started = Instant::now();
    while started.elapsed() < deadline {
        let have: std::collections::BTreeSet<String> =
            rt.block_on(common::clickhouse_rows(ch)).iter().map(|v| v.to_string()).collect();
        if have == want {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    rt.block_on(common::assert_clickhouse_matches(ch, expected));
}

/// `kill -9` twice on an out-of-process broker that outlives the pipeline,
/// then a graceful stop: ClickHouse equals a from-scratch recomputation.
#[test]
fn kill_9_on_an_out_of_process_broker_is_exact() {
    let _serial = serial();
    let rt = revpulse::start::runtime().expect("runtime");
    let ch = rt.block_on(common::fresh_clickhouse("tansu_kill"));
    let tansu = Tansu::start("kill", "memory");
    let kafka = tansu.kafka(&rt, 4);
    let dir = test_dir("tansu-kill");
    let config = tansu_config(&dir, &kafka, &ch);
    let log = dir.join("revpulse.log");
    let mut child = spawn(&config, &log);
    let mut kill_at = vec![0.3, 0.7];
    let (lines, _) = stream(&kafka, 40_000, 10_000, 31, |done| {
        if kill_at.first().is_some_and(|at| done >= *at) {
            kill_at.remove(0);
            child.kill().expect("kill -9");
            let _ = child.wait();
            child = spawn(&config, &log);
        }
    });
    let expected = replay::run(lines, &Default::default(), 1, 50_000).expect("replay");
    wait_matches(&rt, &ch, &expected, Duration::from_secs(180));
    assert!(sigterm(&mut child).success());
    rt.block_on(common::assert_clickhouse_matches(&ch, &expected));
    drop(tansu);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The broker process itself stops for 8 s and starts again (its data on
/// disk, through Tansu's s3:// engine on scripts/tansu_s3.py) while the
/// pipeline runs: `/readyz` reports Kafka unreachable meanwhile, and
/// ClickHouse ends equal to a from-scratch recomputation.
#[test]
fn out_of_process_broker_restart_is_exact() {
    let _serial = serial();
    let rt = revpulse::start::runtime().expect("runtime");
    let ch = rt.block_on(common::fresh_clickhouse("tansu_restart"));
    let tansu = Tansu::start("restart", "s3");
    let kafka = tansu.kafka(&rt, 2);
    let dir = test_dir("tansu-restart");
    let config = tansu_config(&dir, &kafka, &ch);
    let api_port: u16 = std::fs::read_to_string(&config)
        .expect("config")
        .lines()
        .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:").and_then(|p| p.trim_end_matches('"').parse().ok()))
        .expect("api port");
    let mut child = spawn(&config, &dir.join("revpulse.log"));
    let kafka_ready = || kafka_ready(api_port);
    let (mut lines, _) = stream(&kafka, 10_000, 5_000, 41, |_| {});
    std::thread::sleep(Duration::from_secs(2));
    tansu.script("stop");
    let down = Instant::now();
    let mut seen_unready = false;
    while down.elapsed() < Duration::from_secs(8) {
        seen_unready |= kafka_ready() == Some(false);
        std::thread::sleep(Duration::from_millis(200));
    }
    tansu.script("start");
    let (rest, _) = stream(&kafka, 10_000, 5_000, 42, |_| {});
    let offset: BTreeMap<Topic, u64> = lines.iter().fold(BTreeMap::new(), |mut m, l| {
        m.insert(l.topic, l.seq);
        m
    });
    lines.extend(rest.into_iter().map(|mut l| {
        l.seq += offset.get(&l.topic).copied().unwrap_or(0);
        l
    }));
    let expected = replay::run(lines, &Default::default(), 1, 50_000).expect("replay");
    wait_matches(&rt, &ch, &expected, Duration::from_secs(240));
    assert!(seen_unready, "/readyz reported Kafka unreachable while the broker was down");
    assert!(sigterm(&mut child).success());
    drop(tansu);
    let _ = std::fs::remove_dir_all(&dir);
}
