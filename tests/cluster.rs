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
        assert_eq!(stats.committed.len(), 5 * 5, "round {round}: every partition's offsets committed");
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

#[test]
fn two_processes_on_loopback_match_one_worker() {
    let (rt, _cluster, cfg) = common::mock_pipeline("procs", 5);
    let producer = KeyedProducer::new(&cfg.kafka).expect("producer");
    let mut g = Generator::new(GenConfig { seed: 22, tenants: 3, ..GenConfig::default() });
    let mut lines = Vec::new();
    produce(&producer, &cfg, &mut g, 6_000, &mut lines);

    let dir = std::env::temp_dir().join(format!("revpulse-procs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let hostfile = dir.join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", common::free_port(), common::free_port()))
        .expect("hostfile");
    let config = dir.join("revpulse.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\nmax_batch_messages = 1500\n[clickhouse]\nurl = \"{}\"\ndatabase = \"{}\"\n",
            cfg.kafka.brokers, cfg.clickhouse.url, cfg.clickhouse.database
        ),
    )
    .expect("config");
    let apis = [format!("127.0.0.1:{}", common::free_port()), format!("127.0.0.1:{}", common::free_port())];
    let procs: Vec<Proc> = (0..2)
        .map(|i| {
            Proc(
                Command::new(env!("CARGO_BIN_EXE_revpulse"))
                    .args(["run", "--config"])
                    .arg(&config)
                    .args(["--workers", "1", "--processes", "2", "--process-index", &i.to_string(), "--hostfile"])
                    .arg(&hostfile)
                    .args(["--listen", &apis[i]])
                    .env_remove("REVPULSE_CONFIG")
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.join(format!("process-{i}.log"))).expect("log"))
                    .spawn()
                    .expect("revpulse run"),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumed(&apis[0]) + consumed(&apis[1]) < lines.len() as u64 {
        if Instant::now() > deadline {
            let logs: Vec<String> = (0..2)
                .map(|i| std::fs::read_to_string(dir.join(format!("process-{i}.log"))).unwrap_or_default())
                .collect();
            panic!(
                "cluster consumed {} of {}:\n{}",
                consumed(&apis[0]) + consumed(&apis[1]),
                lines.len(),
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(consumed(&apis[0]) > 0 && consumed(&apis[1]) > 0, "both processes read partitions");
    // A cluster stops together: every process gets the signal, and each
    // finishes once all have stopped reading (docs/cluster.md, "Stopping").
    for p in &procs {
        common::send_sigterm(&p.0);
    }
    for mut p in procs {
        let status = common::wait_exit(&mut p.0, Duration::from_secs(60));
        assert!(status.success(), "process exited with {status}");
    }
    rt.block_on(common::assert_clickhouse_matches(&cfg.clickhouse, &expected(&lines, &cfg)));
    let _ = std::fs::remove_dir_all(&dir);
}
