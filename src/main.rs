use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use revpulse::config::Config;
use revpulse::demo::{demo, DemoOptions};
use revpulse::generate::{write_dir, GenConfig};
use revpulse::replay;
use revpulse::runner::{Cluster, Shared};
use revpulse::serve::start_api;
use revpulse_connectors::clickhouse::{migrate, ClickHouseSink};
use revpulse_connectors::kafka::KeyedProducer;
use revpulse_connectors::schema_registry::AvroCodec;
use revpulse_pipelines::event::Topic;
use revpulse_pipelines::row::row_json;

/// revpulse: incremental revenue intelligence, Kafka → differential dataflow → ClickHouse.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Write the final metrics to ClickHouse.
    Clickhouse,
    /// Print one JSON object per row of the final state.
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProduceFormat {
    Json,
    Avro,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Loads the file and the `REVPULSE__…` overrides, validates them and
    /// prints the effective configuration (secrets redacted). Exit status 0
    /// when valid, 1 otherwise.
    Check {
        #[arg(long, env = "REVPULSE_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Knobs of `revpulse bench`.
#[derive(clap::Args)]
struct BenchArgs {
    #[arg(long, default_value_t = 500_000)]
    events: usize,
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    #[arg(long, default_value_t = 20)]
    tenants: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Seconds of steady load for the freshness phase.
    #[arg(long, default_value_t = 15)]
    freshness_secs: u64,
    /// Instead of the phases above: stream at --soak-rate for this many
    /// seconds and print RSS over time.
    #[arg(long)]
    soak: Option<u64>,
    #[arg(long, default_value_t = 5_000)]
    soak_rate: u64,
    /// With --soak: stream only these topics (comma-separated), e.g.
    /// `impressions` to watch one family's state alone.
    #[arg(long, value_delimiter = ',')]
    soak_topics: Vec<String>,
    /// With --soak: leave retention off (to compare memory with it on).
    #[arg(long)]
    soak_no_retention: bool,
    /// ClickHouse connection (default: the local one).
    #[arg(long, env = "REVPULSE_CONFIG")]
    config: Option<PathBuf>,
    /// Instead of the phases above: restart time after a history of H and
    /// of 4xH events with the same live state, and checkpoint overhead.
    #[arg(long)]
    restart: bool,
    /// With --restart: records of the live state.
    #[arg(long, default_value_t = 100_000)]
    restart_live: usize,
    /// With --restart: corrections of each live record in history H.
    #[arg(long, default_value_t = 3)]
    restart_rounds: usize,
    /// Instead of the phases above: HTTP ingest throughput for batches of
    /// 1, 100 and 10,000 events against the plain Kafka producer.
    #[arg(long)]
    ingest: bool,
    /// With --ingest: concurrent HTTP connections.
    #[arg(long, default_value_t = 8)]
    ingest_connections: usize,
    /// Instead of the phases above: the query API under load while `revpulse
    /// demo` streams (lead lookups at 50 and 200 clients, RaR at 200).
    #[arg(long)]
    api: bool,
    /// With --api: seconds of load per phase.
    #[arg(long, default_value_t = 10)]
    api_secs: u64,
    /// With --api: the demo's backlog of history.
    #[arg(long, default_value_t = 20_000)]
    api_backlog: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Everything on one machine, nothing configured: embedded Kafka, local ClickHouse, live events, API.
    Demo {
        /// Live events per second.
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        /// Events of history produced before the live stream.
        #[arg(long, default_value_t = 20_000)]
        backlog: usize,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// API listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value_t = 5)]
        tenants: usize,
        #[arg(long, default_value_t = 2)]
        partitions: i32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// ClickHouse HTTP address (the local one is started if it is down).
        #[arg(long, default_value = "http://127.0.0.1:8123")]
        clickhouse_url: String,
        /// ClickHouse database (created if missing).
        #[arg(long, default_value = "revpulse")]
        database: String,
    },
    /// The production pipeline with the API and metrics.
    Run {
        /// Configuration file; `REVPULSE__…` variables override it.
        #[arg(long, env = "REVPULSE_CONFIG")]
        config: Option<PathBuf>,
        /// Timely worker threads in this process (timely's -w).
        #[arg(long, short = 'w', default_value_t = 1)]
        workers: usize,
        /// Processes in the cluster (timely's -n); each runs this command.
        #[arg(long, short = 'n', default_value_t = 1)]
        processes: usize,
        /// This process's index, 0..processes (timely's -p).
        #[arg(long, short = 'p', default_value_t = 0)]
        process_index: usize,
        /// File with one host:port per line, process 0 first (timely's -h).
        #[arg(long)]
        hostfile: Option<PathBuf>,
        /// API listen address (overrides the configuration; each process of
        /// a cluster on one host needs its own).
        #[arg(long)]
        listen: Option<String>,
        /// Discard the state directory's checkpoint and rebuild the state
        /// from what the topics still hold (docs/guarantees.md).
        #[arg(long)]
        rebuild: bool,
    },
    /// Runs the dataflow over DIR/<topic>.jsonl and writes the final metrics.
    Replay {
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Clickhouse)]
        output: Output,
        /// Timely worker threads.
        #[arg(long, short = 'w', default_value_t = 1)]
        workers: usize,
        /// Lines per epoch.
        #[arg(long, default_value_t = 1_000_000)]
        batch: usize,
        /// Configuration (metric settings; the ClickHouse connection).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Publishes JSONL (FILE or stdin) to a topic, keyed by the upsert key.
    Produce {
        #[arg(long)]
        topic: String,
        file: Option<PathBuf>,
        /// bootstrap.servers (default: from --config, else 127.0.0.1:9092).
        #[arg(long)]
        brokers: Option<String>,
        /// Value encoding: JSON as given, or Confluent-framed Avro with the
        /// topic's `schemas/avro` schema (registered under `<topic>-value`).
        #[arg(long, value_enum, default_value_t = ProduceFormat::Json)]
        format: ProduceFormat,
        /// Schema registry URL for `--format avro` (default: from --config).
        #[arg(long)]
        registry: Option<String>,
        /// The event type of the lines when --topic is not one of the five
        /// default topic names.
        #[arg(long)]
        event_type: Option<String>,
        #[arg(long, env = "REVPULSE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Throughput, freshness and memory in one run: replay, Kafka
    /// consume+decode ceiling, full pipeline, freshness at half load, state
    /// size (embedded broker, local ClickHouse). Build with --release.
    Bench(BenchArgs),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Writes a seeded synthetic data set as DIR/<topic>.jsonl.
    Generate {
        #[arg(long, default_value = "data")]
        out: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 5)]
        tenants: usize,
    },
    /// Applies the ClickHouse migrations.
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Serves the query API alone, over the metrics already in ClickHouse.
    Api {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address (overrides the configuration).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Prints the SHA-256 of an API key, for `key_sha256` in the configuration.
    HashKey { key: String },
}

/// Defaults, the file, then `REVPULSE__…` overrides (src/config.rs).
fn load(config: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(Config::resolve(config.map(PathBuf::as_path))?)
}

use revpulse::start::{runtime, Services, StartOptions};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,librdkafka=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }

    match cli.command {
        Command::Demo { rate, backlog, duration, listen, tenants, partitions, seed, clickhouse_url, database } => {
            demo(DemoOptions {
                rate,
                backlog,
                duration: duration.map(Duration::from_secs),
                listen,
                tenants,
                partitions,
                seed,
                clickhouse_url,
                database,
            })
        }
        Command::Run { config, workers, processes, process_index, hostfile, listen, rebuild } => {
            let mut cfg = load(config.as_ref())?;
            if let Some(l) = listen {
                cfg.api.listen = l;
            }
            cfg.state.dir.get_or_insert_with(|| DEFAULT_STATE_DIR.to_owned());
            cfg.state.rebuild = rebuild;
            run(&cfg, &Cluster { workers, processes, process_index, hostfile })
        }
        Command::Bench(args) => bench(args),
        Command::Config { command: ConfigCommand::Check { config } } => {
            let cfg = load(config.as_ref())?;
            print!("{}", cfg.redacted_toml());
            eprintln!(
                "configuration OK ({})",
                config.as_ref().map_or("defaults".to_owned(), |p| p.display().to_string())
            );
            Ok(())
        }
        Command::Replay { dir, output, workers, batch, config } => {
            replay_command(&dir, output, workers, batch, config.as_ref())
        }
        Command::Produce { topic, file, brokers, format, registry, event_type, config } => {
            let mut cfg = load(config.as_ref())?.kafka;
            if let Some(b) = brokers {
                cfg.brokers = b;
            }
            let event = event_type.as_deref().unwrap_or(&topic);
            let kind = Topic::from_name(event);
            let avro = match format {
                ProduceFormat::Json => None,
                ProduceFormat::Avro => {
                    let kind = kind
                        .with_context(|| format!("--format avro: {event:?} is not an event type; pass --event-type"))?;
                    let mut reg = cfg.schema_registry.clone().unwrap_or_default();
                    if let Some(url) = registry {
                        reg.url = url;
                    }
                    let rt = runtime()?;
                    let codec = AvroCodec::new(&reg, rt.handle().clone())?;
                    Some((kind, codec, rt))
                }
            };
            produce(&cfg, &topic, kind, avro, file)
        }
        Command::Generate { out, events, seed, tenants } => {
            let counts = write_dir(&out, GenConfig { seed, tenants, ..GenConfig::default() }, events)?;
            for (t, n) in counts {
                println!("{}: {n}", out.join(format!("{}.jsonl", t.name())).display());
            }
            Ok(())
        }
        Command::Api { config, listen } => {
            let mut cfg = load(config.as_ref())?;
            if let Some(l) = listen {
                cfg.api.listen = l;
            }
            api_only(&cfg)
        }
        Command::HashKey { key } => {
            println!("{}", revpulse_api::hash_key(&key));
            Ok(())
        }
        Command::Migrate { config } => {
            let cfg = load(config.as_ref())?;
            let applied = runtime()?.block_on(migrate(&cfg.clickhouse))?;
            println!("applied {} migration(s): {applied:?}", applied.len());
            Ok(())
        }
    }
}

/// `revpulse bench`: the phases, or a soak with `--soak`.
fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs {
        events,
        partitions,
        tenants,
        seed,
        freshness_secs,
        soak,
        soak_rate,
        soak_topics,
        soak_no_retention,
        config,
        restart,
        restart_live,
        restart_rounds,
        ingest,
        ingest_connections,
        api,
        api_secs,
        api_backlog,
    } = args;
    if api {
        return revpulse::bench::api::api(&revpulse::bench::api::ApiOptions {
            backlog: api_backlog,
            rate: 2_000,
            secs: api_secs,
            tenants: 5,
            clickhouse: load(config.as_ref())?.clickhouse,
        });
    }
    if ingest {
        return revpulse::bench::ingest::ingest(&revpulse::bench::ingest::IngestOptions {
            events,
            partitions,
            connections: ingest_connections,
        });
    }
    if restart {
        return revpulse::bench::restart::restart(&revpulse::bench::restart::RestartOptions {
            live: restart_live,
            rounds: restart_rounds,
            partitions,
            tenants,
            seed,
            clickhouse: load(config.as_ref())?.clickhouse,
        });
    }
    if let Some(secs) = soak {
        let topics = soak_topics
            .iter()
            .map(|t| Topic::from_name(t).ok_or_else(|| anyhow::anyhow!("unknown topic {t:?}")))
            .collect::<anyhow::Result<Vec<Topic>>>()?;
        return revpulse::bench::soak(&revpulse::bench::SoakOptions {
            duration: Duration::from_secs(secs),
            rate: soak_rate,
            event_secs_per_sec: 86_400,
            sample: Duration::from_secs(30),
            partitions,
            tenants,
            seed,
            clickhouse: load(config.as_ref())?.clickhouse,
            topics,
            retention: if soak_no_retention {
                Default::default()
            } else {
                revpulse_pipelines::config::RetentionConfig {
                    rar_lateness_secs: Some(2 * 86_400),
                    revenue_per_minute_lateness_secs: Some(3_600),
                    attribution_lateness_secs: Some(2 * 86_400),
                    subject_idle_secs: Some(2 * 86_400),
                }
            },
        });
    }
    revpulse::bench::bench(&revpulse::bench::BenchOptions {
        events,
        partitions,
        tenants,
        seed,
        freshness: Duration::from_secs(freshness_secs),
        clickhouse: load(config.as_ref())?.clickhouse,
    })
}

/// `revpulse replay`: the dataflow over DIR/<topic>.jsonl, to ClickHouse or stdout.
fn replay_command(
    dir: &std::path::Path,
    output: Output,
    workers: usize,
    batch: usize,
    config: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let cfg = load(config)?;
    let (lines, counts) = replay::read_dir(dir)?;
    let state = replay::run(lines, &cfg.metrics, workers, batch)?;
    eprintln!("replayed {} events ({} rejected) into {} rows", counts.valid, counts.rejected, state.len());
    match output {
        Output::Json => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            // Retention state is for restarts, not a metric.
            for (k, v) in state.iter().filter(|(k, _)| !k.table.is_state()) {
                serde_json::to_writer(&mut out, &row_json(k, v))?;
                std::io::Write::write_all(&mut out, b"\n")?;
            }
            std::io::Write::flush(&mut out)?;
        }
        Output::Clickhouse => {
            let rt = runtime()?;
            rt.block_on(async {
                migrate(&cfg.clickhouse).await?;
                let sink = ClickHouseSink::new(cfg.clickhouse.clone(), None);
                let rows: Vec<_> = state.into_iter().map(|(k, v)| (k, Some(v))).collect();
                sink.write(&rows).await?;
                anyhow::Ok(())
            })?;
        }
    }
    Ok(())
}

/// `revpulse run`'s state directory when the configuration names none.
const DEFAULT_STATE_DIR: &str = "revpulse-state";

fn run(cfg: &Config, cluster: &Cluster) -> anyhow::Result<()> {
    let rt = runtime()?;
    let services = Services::start(&rt, cfg, StartOptions { api: true, signals: true })?;
    services.run(&rt, cfg, cluster).map(|_| ())
}

/// `revpulse api`: the query API alone (for deployments that scale it
/// apart from the pipeline). Readiness then tracks ClickHouse only.
fn api_only(cfg: &Config) -> anyhow::Result<()> {
    let rt = runtime()?;
    let shared = Shared::default();
    shared.readiness.kafka.store(true, Ordering::Relaxed);
    let sink = ClickHouseSink::new(cfg.clickhouse.clone(), None);
    let api = start_api(&rt, cfg, sink.client().clone(), &shared)?;
    println!("revpulse API listening on http://{}", api.addr);
    revpulse::install_signal_handlers(&rt, &shared);
    rt.block_on(api.handle)??;
    Ok(())
}

/// `revpulse produce`: one message per line, keyed by the topic's upsert
/// key (or `_key` for `{"_key": K, "_tombstone": true}` lines).
fn produce(
    cfg: &revpulse_connectors::kafka::KafkaConfig,
    topic: &str,
    kind: Option<Topic>,
    mut avro: Option<(Topic, AvroCodec, tokio::runtime::Runtime)>,
    file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let key_field = kind.map(Topic::key_field);
    let producer = KeyedProducer::new(cfg)?;
    let reader: Box<dyn BufRead> = match &file {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let mut n = 0u64;
    for line in reader.split(b'\n') {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&line).ok();
        let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name)).and_then(|v| v.as_str()).map(str::to_owned);
        if parsed.as_ref().and_then(|v| v.get("_tombstone")).and_then(|v| v.as_bool()) == Some(true) {
            let key = field("_key").context("tombstone line without _key")?;
            producer.send(topic, key.as_bytes(), None)?;
        } else if let Some((kind, codec, _)) = avro.as_mut() {
            let value = parsed.as_ref().with_context(|| format!("line {}: not JSON", n + 1))?;
            let bytes = codec.encode(*kind, topic, value).with_context(|| format!("line {}", n + 1))?;
            let key = key_field.and_then(field).unwrap_or_default();
            producer.send(topic, key.as_bytes(), Some(&bytes))?;
        } else {
            // Lines that do not parse are still published (unkeyed): the pipeline dead-letters them.
            let key = key_field.and_then(field).unwrap_or_default();
            producer.send(topic, key.as_bytes(), Some(&line))?;
        }
        n += 1;
        if n.is_multiple_of(10_000) {
            producer.poll();
        }
    }
    producer.flush(Duration::from_secs(30))?;
    eprintln!("produced {n} messages to {topic}");
    Ok(())
}
