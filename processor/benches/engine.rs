//! Engine throughput, printed as a table of ratios against a baseline from the same run.
//!
//! `cargo bench -p kpiflow-processor --bench engine` (add `-- --shops 40` etc.). Under
//! `cargo test` the file only runs a tiny smoke pass, so CI stays fast.
//!
//! Baseline: decoding the same JSON records (`Event::from_json`), which every path pays.

// The table on stdout is this program's output.
#![allow(clippy::print_stdout)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kpiflow_ingest::connectors::simulator::{SimulatorConfig, generate};
use kpiflow_processor::{Engine, PartitionId, ProcessorConfig};
use kpiflow_schemas::Event;

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

/// Best of `runs` timings of `f`, in seconds (the least disturbed by the noisy machine).
fn best(runs: u32, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Applies `events` in batches of 20,000 (the processor's default `max_batch`), flushing after
/// each batch as the processor does.
fn apply_all(engine: &mut Engine, events: &[Event]) -> usize {
    let now = Instant::now();
    let mut published = 0;
    for chunk in events.chunks(20_000) {
        let batch: Vec<(&Event, PartitionId)> =
            chunk.iter().map(|e| (e, PartitionId::zero_of(e))).collect();
        engine.apply_batch(&batch, now);
        published += engine.flush(now, Utc::now()).updates.len();
    }
    published
        + engine
            .flush(now + Duration::from_secs(60), Utc::now())
            .updates
            .len()
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (shops, days, orders) = if bench {
        (arg("--shops", 20), arg("--days", 14), arg("--orders", 300))
    } else {
        (2, 2, 20)
    };
    let runs = if bench { 5 } else { 1 };
    let cfg = SimulatorConfig {
        shops,
        days,
        orders_per_shop_per_day: orders,
        ..SimulatorConfig::default()
    };
    let start: DateTime<Utc> = "2026-11-01T07:00:00Z".parse().unwrap();
    let events = generate(&cfg, start);
    let records: Vec<Vec<u8>> = events.iter().map(Event::to_json).collect();
    let n = records.len() as f64;

    let decode = best(runs, || {
        for r in &records {
            std::hint::black_box(Event::from_json(r).unwrap());
        }
    });
    let cfg_all = ProcessorConfig::default();
    let mut published = 0;
    let engine = best(runs, || {
        let mut engine = Engine::new(&cfg_all, 0);
        published = apply_all(&mut engine, std::hint::black_box(&events))
    });
    let both = best(runs, || {
        let decoded: Vec<Event> = records
            .iter()
            .map(|r| Event::from_json(r).unwrap())
            .collect();
        let mut engine = Engine::new(&cfg_all, 0);
        std::hint::black_box(apply_all(&mut engine, &decoded));
    });

    let mut state = Engine::new(&cfg_all, 0);
    apply_all(&mut state, &events);

    println!(
        "engine benchmark: {} events ({shops} shops x {days} days x {orders} orders/day), all {} catalog KPIs, best of {runs}",
        records.len(),
        state.catalog().kpis.len()
    );
    println!("| path | events/s | ratio to decode |");
    println!("|---|---:|---:|");
    for (name, secs) in [
        ("decode JSON (baseline)", decode),
        ("engine apply + flush (decoded)", engine),
        ("decode + engine", both),
    ] {
        println!("| {name} | {:.0} | {:.2} |", n / secs, decode / secs);
    }
    println!(
        "state after the run: {} scopes, {} (scope, hour) buckets, {} remembered event ids; {} KPI updates per pass",
        state.state_scopes(),
        state.state_buckets(),
        state.remembered_ids(),
        published
    );
}
