//! Cost per update does not grow with history (issue: metric families).
//!
//! Loads 10k and then 1M generated events of history into the full dataflow
//! (all five metric families, one worker), then applies the same sequence of
//! small batches (1,000 events each: new events, corrections, duplicates,
//! stale versions and tombstones) and reports the time per update after each
//! history, and their ratio. Run: `cargo bench --bench history`.

use std::time::{Duration, Instant};

use revpulse::generate::{GenConfig, Generator, Record};
use revpulse_pipelines::config::MetricsConfig;
use revpulse_pipelines::dataflow::{build, Dataflow};
use revpulse_pipelines::event::decode_value;
use revpulse_pipelines::time::{parse_rfc3339, MICROS_PER_SECOND};

const BATCH: usize = 1_000;
const BATCHES: usize = 20;
const STEP: i64 = 60 * MICROS_PER_SECOND;

/// `REVPULSE_BENCH_TOPICS=impressions,messages` limits the input to some
/// topics, to see which family's cost moves.
fn wanted(r: &Record) -> bool {
    std::env::var("REVPULSE_BENCH_TOPICS").map_or(true, |t| t.split(',').any(|n| n == r.topic.name()))
}

fn feed(df: &mut Dataflow, worker: &mut timely::worker::Worker, records: &[Record], seq: &mut u64) {
    for r in records.iter().filter(|r| wanted(r)) {
        *seq += 1;
        let value = r.payload.as_deref().and_then(|p| decode_value(r.topic, p.as_bytes()).ok());
        df.inputs.send(r.topic, r.key.clone(), value, *seq);
    }
    let epoch = df.inputs.epoch() + 1;
    df.inputs.advance_to(epoch);
    df.inputs.flush();
    worker.step_while(|| df.probe.less_than(&epoch));
    df.completed.borrow_mut().changes.clear();
}

/// Time per update of the probe batches after `history` events.
fn measure(history: usize) -> Duration {
    let end = parse_rfc3339("2026-11-01T00:00:00Z").unwrap_or_default();
    timely::execute_directly(move |worker| {
        let mut df = build(worker, &MetricsConfig::default(), revpulse_pipelines::dataflow::BuildOptions::fresh());
        let mut seq = 0;
        // History ends at the same event time whatever its length, so the
        // probe batches below are identical in both runs.
        let start = end - history as i64 * STEP;
        let mut g = Generator::new(GenConfig { seed: 1, tenants: 5, start, step: STEP });
        let mut loaded = 0;
        while loaded < history {
            let n = (history - loaded).min(50_000);
            let chunk: Vec<Record> = (0..n).map(|_| g.next_record()).collect();
            feed(&mut df, worker, &chunk, &mut seq);
            loaded += n;
        }
        let mut probe = Generator::new(GenConfig { seed: 2, tenants: 5, start: end, step: STEP });
        let batches: Vec<Vec<Record>> =
            (0..BATCHES).map(|_| (0..BATCH).map(|_| probe.next_record()).collect()).collect();
        let t = Instant::now();
        probe_phase(&mut df, worker, &batches, &mut seq);
        t.elapsed() / (BATCH * BATCHES) as u32
    })
}

/// The timed part, a function of its own so that
/// `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*probe_phase*'`
/// counts its instructions alone (independent of cache effects).
#[inline(never)]
fn probe_phase(df: &mut Dataflow, worker: &mut timely::worker::Worker, batches: &[Vec<Record>], seq: &mut u64) {
    for b in batches {
        feed(df, worker, b, seq);
    }
}

fn main() {
    // Warm-up run so allocator and page-fault effects do not favour either.
    // `REVPULSE_BENCH_HISTORY=N` measures one history size only (for profilers).
    if let Some(h) = std::env::var("REVPULSE_BENCH_HISTORY").ok().and_then(|h| h.parse().ok()) {
        println!("{h} events of history: {:.2} µs per update", measure(h).as_secs_f64() * 1e6);
        return;
    }
    let _ = measure(10_000);
    let runs: Vec<(usize, Duration)> = [10_000, 100_000, 1_000_000].into_iter().map(|h| (h, measure(h))).collect();
    let base = runs[0].1.as_secs_f64();
    println!("{:>10}  {:>16}  {:>12}", "history", "µs per update", "vs 10k");
    for (h, d) in &runs {
        println!("{h:>10}  {:>16.2}  {:>12.2}", d.as_secs_f64() * 1e6, d.as_secs_f64() / base);
    }
    let (_, hundred_k) = runs[1];
    let (_, million) = runs[2];
    println!("ratio 1M/100k: {:.2}", million.as_secs_f64() / hundred_k.as_secs_f64());
}
