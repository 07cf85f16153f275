//! Scale-out: the same data through 1 worker, 2 and 3 worker threads, and
//! 2 processes on loopback (timely's own cluster) yields identical
//! ClickHouse tables — equal to a `replay` of the events. Restarts that
//! change the worker count (so every key may change owner) still delete
//! the rows of keys deleted while the pipeline was down.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use revpulse::config::Config;
use revpulse::generate::{GenConfig, Generator};
use revpulse::replay::{self, Line};
use revpulse::runner::Cluster;
use revpulse_connectors::kafka::KeyedProducer;
use revpulse_pipelines::event::{decode_value, Topic};

/// Produces `n` generated events (and remembers them as replay lines).
fn produce(producer: &KeyedProducer, cfg: &Config, g: &mut Generator, n: usize, lines: &mut Vec<Line>) {
    for _ in 0..n {
        let r = g.next_record();
        producer
            .send(cfg.kafka.topics.get(r.topic), r.key.as_bytes(), r.payload.as_deref().map(str::as_bytes))
            .expect("send");
        let seq = lines.iter().filter(|l| l.topic == r.topic).count() as u64 + 1;
        let value = r.payload.as_deref().map(|p| decode_value(r.topic, p.as_bytes()).expect("valid"));
        lines.push(Line { topic: r.topic, key: r.key, value, seq });
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn expected(lines: &[Line], cfg: &Config) -> replay::State {
    replay::run(lines.to_vec(), &cfg.metrics, 1, 100_000).expect("replay")
}

#[test]
fn worker_threads_agree_across_restarts_that_change_their_number() {
    let (rt, _cluster, cfg) = common::mock_pipeline("workers", 5);
    let producer = KeyedProducer::new(&cfg.kafka).expect("producer");
    let mut g = Generator::new(GenConfig { seed: 21, tenants: 3, ..GenConfig::default() });
    let mut lines = Vec::new();

    for (round, workers, events) in [(1, 2, 6_000), (2, 1, 3_000), (3, 3, 2_000)] {
        produce(&producer, &cfg, &mut g, events, &mut lines);
        if round == 2 {
            // Deleted while no pipeline runs: the next start must delete
            // the rows these keys fed, whichever worker owns them now.
            let victims: Vec<(Topic, revpulse_pipelines::types::Text)> = lines
                .iter()
                .filter(|l| l.value.is_some() && l.topic == Topic::Conversations)
                .map(|l| (l.topic, l.key.clone()))
                .take(150)
                .collect();
            for (t, key) in victims {
                producer.send(cfg.kafka.topics.get(t), key.as_bytes(), None).expect("tombstone");
                let seq = lines.iter().filter(|l| l.topic == t).count() as u64 + 1;
                lines.push(Line { topic: t, key, value: None, seq });
            }
            producer.flush(Duration::from_secs(10)).expect("flush");
        }
        let cluster = Cluster { workers, ..Cluster::default() };
        let (_, stats) =
            common::run_cluster_until_seen(&rt, &cfg, &cluster, lines.len(), Duration::from_secs(120), |_| {});
        assert_eq!(stats.committed.len(), Topic::ALL.len() * 5, "round {round}: every partition's offsets committed");
        let committed: i64 = stats.committed.values().sum();
        assert_eq!(committed as usize, lines.len(), "round {round}: committed offsets cover every message");
        rt.block_on(common::assert_clickhouse_matches(&cfg.clickhouse, &expected(&lines, &cfg)));
    }
}

/// Sum of `revpulse_consumed_total` over a process's `/metrics`.
fn consumed(api: &str) -> u64 {
    let out = Command::new("curl").args(["-sS", "--max-time", "2", &format!("http://{api}/metrics")]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("revpulse_consumed_total{"))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two processes on loopback: their config, hostfile, API addresses, logs.
struct Pair {
    dir: std::path::PathBuf,
    config: std::path::PathBuf,
    hostfile: std::path::PathBuf,
    apis: [String; 2],
}

impl Pair {
    fn new(name: &str, cfg: &Config, extra: &str) -> Pair {
        let dir = std::env::temp_dir().join(format!("revpulse-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let hostfile = dir.join("hosts.txt");
        let config = dir.join("revpulse.toml");
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbrokers = \"{}\"\nmax_batch_messages = 1500\n[clickhouse]\nurl = \"{}\"\ndatabase = \"{}\"\n{extra}",
                cfg.kafka.brokers, cfg.clickhouse.url, cfg.clickhouse.database
            ),
        )
        .expect("config");
        let apis = [String::new(), String::new()];
        let mut pair = Pair { dir, config, hostfile, apis };
        pair.new_ports();
        pair
    }

    /// Fresh ports: a killed process's may still be taken for a while.
    fn new_ports(&mut self) {
        std::fs::write(
            &self.hostfile,
            format!("127.0.0.1:{}\n127.0.0.1:{}\n", common::free_port(), common::free_port()),
        )
        .expect("hostfile");
        self.apis = [format!("127.0.0.1:{}", common::free_port()), format!("127.0.0.1:{}", common::free_port())];
    }

    fn log(&self, i: usize, run: usize) -> std::path::PathBuf {
        self.dir.join(format!("process-{i}-run-{run}.log"))
    }

    fn logs(&self, run: usize) -> String {
        let read = |i| std::fs::read_to_string(self.log(i, run)).unwrap_or_default();
        format!("{}\n---\n{}", read(0), read(1))
    }

    fn spawn(&self, run: usize, workers: usize) -> Vec<Proc> {
        (0..2)
            .map(|i| {
                Proc(
                    Command::new(env!("CARGO_BIN_EXE_revpulse"))
                        .args(["run", "--config"])
                        .arg(&self.config)
                        .args(["--workers", &workers.to_string(), "--processes", "2", "--process-index"])
                        .arg(i.to_string())
                        .arg("--hostfile")
                        .arg(&self.hostfile)
                        .args(["--listen", &self.apis[i]])
                        .env_remove("REVPULSE_CONFIG")
                        .env("NO_COLOR", "1")
                        .env("RUST_LOG", "info,revpulse::runner=debug,librdkafka=warn")
                        .stdout(Stdio::null())
                        .stderr(std::fs::File::create(self.log(i, run)).expect("log"))
                        .spawn()
                        .expect("revpulse run"),
                )
            })
            .collect()
    }

    fn consumed(&self) -> u64 {
        consumed(&self.apis[0]) + consumed(&self.apis[1])
    }

    /// Waits until the processes consumed `n` messages between them.
    fn wait_consumed(&self, n: u64, run: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.consumed() < n {
            assert!(Instant::now() < deadline, "cluster consumed {} of {n}:\n{}", self.consumed(), self.logs(run));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A cluster stops together: every process gets the signal, and each
    /// finishes once all have stopped reading (docs/cluster.md, "Stopping").
    fn stop(&self, procs: Vec<Proc>, run: usize) {
        for p in &procs {
            common::send_sigterm(&p.0);
        }
        for mut p in procs {
            let status = common::wait_exit(&mut p.0, Duration::from_secs(60));
            assert!(status.success(), "process exited with {status}:\n{}", self.logs(run));
        }
    }
}

#[test]
fn two_processes_on_loopback_match_one_worker() {
    let (rt, _cluster, cfg) = common::mock_pipeline("procs", 5);
    let producer = KeyedProducer::new(&cfg.kafka).expect("producer");
    let mut g = Generator::new(GenConfig { seed: 22, tenants: 3, ..GenConfig::default() });
    let mut lines = Vec::new();
    produce(&producer, &cfg, &mut g, 6_000, &mut lines);
    let pair = Pair::new("procs", &cfg, "[state]\ncheckpoints = false\n");
    let procs = pair.spawn(0, 1);
    pair.wait_consumed(lines.len() as u64, 0);
    assert!(consumed(&pair.apis[0]) > 0 && consumed(&pair.apis[1]) > 0, "both processes read partitions");
    pair.stop(procs, 0);
    rt.block_on(common::assert_clickhouse_matches(&cfg.clickhouse, &expected(&lines, &cfg)));
    let _ = std::fs::remove_dir_all(&pair.dir);
}

/// Two processes checkpoint in rounds (docs/guarantees.md, "Checkpoints of
/// a cluster"): after a clean stop a restart reads only what came after;
/// after `kill -9` of both in the middle of rounds (every 50 ms) the
/// restart agrees on one cut and is exact; a restart with another shape is
/// refused, naming both.
#[test]
fn two_processes_checkpoint_in_rounds_and_resume_exactly() {
    checkpoint_in_rounds(1);
}

/// The same with two workers per process: the last round at a stop must
/// wait for every worker's upsert log, not only the first's.
#[test]
fn two_processes_of_two_workers_checkpoint_in_rounds_and_resume_exactly() {
    checkpoint_in_rounds(2);
}

fn checkpoint_in_rounds(workers: usize) {
    let (rt, _cluster, cfg) = common::mock_pipeline(&format!("procs_cp{workers}"), 5);
    let producer = KeyedProducer::new(&cfg.kafka).expect("producer");
    let mut g = Generator::new(GenConfig { seed: 23, tenants: 3, ..GenConfig::default() });
    let mut lines = Vec::new();
    produce(&producer, &cfg, &mut g, 6_000, &mut lines);
    let mut pair = Pair::new(&format!("procs-cp{workers}"), &cfg, "");
    let state = pair.dir.join("state");
    std::fs::write(
        &pair.config,
        std::fs::read_to_string(&pair.config).expect("config")
            + &format!("[state]\ndir = \"{}\"\ninterval_ms = 50\n", state.display()),
    )
    .expect("config");

    // Run 0: from the beginning, then a clean stop with a last round.
    let procs = pair.spawn(0, workers);
    pair.wait_consumed(lines.len() as u64, 0);
    pair.stop(procs, 0);
    rt.block_on(common::assert_clickhouse_matches(&cfg.clickhouse, &expected(&lines, &cfg)));
    for i in 0..2 {
        assert!(state.join(format!("process-{i}")).is_dir(), "process {i} has a state directory of its own");
    }

    // Run 1: resumes from the last round and reads only the new messages.
    let before = lines.len();
    produce(&producer, &cfg, &mut g, 3_000, &mut lines);
    pair.new_ports();
    let procs = pair.spawn(1, workers);
    pair.wait_consumed((lines.len() - before) as u64, 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pair.consumed(), (lines.len() - before) as u64, "only what came after the checkpoint is read");
    // kill -9 both while rounds run.
    produce(&producer, &cfg, &mut g, 3_000, &mut lines);
    std::thread::sleep(Duration::from_millis(300));
    drop(procs);
    let logs = pair.logs(1);
    assert!(logs.matches("resuming from the checkpoint").count() == 2, "both resumed:\n{logs}");

    // Run 2: agrees on one cut, catches up, exact.
    produce(&producer, &cfg, &mut g, 2_000, &mut lines);
    pair.new_ports();
    let procs = pair.spawn(2, workers);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pair.logs(2).contains("caught up") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    pair.stop(procs, 2);
    let logs = pair.logs(2);
    assert_eq!(logs.matches("the processes agreed on their checkpoint").count(), 2, "{logs}");
    rt.block_on(common::assert_clickhouse_matches(&cfg.clickhouse, &expected(&lines, &cfg)));

    // Another shape: refused, naming what wrote the checkpoint.
    let procs = pair.spawn(3, workers + 1);
    for mut p in procs {
        let status = common::wait_exit(&mut p.0, Duration::from_secs(30));
        assert!(!status.success(), "a start with another shape must fail");
    }
    let logs = pair.logs(3);
    let shape = |n: usize| format!("process 0 of 2, {n} worker{} each", if n == 1 { "" } else { "s" });
    let refused = format!("was written by {} and this run is {}", shape(workers), shape(workers + 1));
    assert!(logs.contains(&refused), "{logs}");
    let _ = std::fs::remove_dir_all(&pair.dir);
}
