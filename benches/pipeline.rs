//! The pipeline benchmark: what the processor sustains over a real broker, against the raw
//! consume rate of the same topic measured in the same run (the ceiling), plus the engine on
//! in-memory batches, memory per active (scope, hour) bucket and event-to-output latency at a
//! fixed rate. Prints one table; figures are ratios to baselines from the same run because
//! these machines are noisy.
//!
//! `scripts/bench.sh` starts a broker and runs `cargo bench -p kpiflow --bench pipeline`
//! (flags after `--`: `--shops 45 --days 14 --orders 300 --seconds 20`, and `--rate N` for
//! one latency run at N ev/s instead of two at 10% and 80% of the end-to-end rate). Under
//! `cargo test` it runs a tiny smoke pass when `KPIFLOW_TEST_BOOTSTRAP` names a broker.

// The table on stdout is this program's output.
#![allow(clippy::print_stdout)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kpiflow_core::{ComponentMetrics, KafkaConfig};
use kpiflow_ingest::Publish;
use kpiflow_ingest::connectors::simulator::{SimulatorConfig, generate};
use kpiflow_ingest::publish::KafkaPublisher;
use kpiflow_processor::{Engine, PartitionId, ProcessorConfig};
use kpiflow_schemas::{
    Channel, Event, EventHeader, Fulfilment, KpiUpdate, Money, OrderPlaced, SourceTz, Topic,
};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

fn kafka(bootstrap: &str, prefix: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: bootstrap.to_string(),
        topic_prefix: prefix.to_string(),
        partitions: 4,
        ..KafkaConfig::default()
    }
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Events/s of the engine alone on in-memory batches of 20,000.
fn engine_rate(events: &[Event]) -> f64 {
    let mut engine = Engine::new(&ProcessorConfig::default(), 0);
    let now = Instant::now();
    let t = Instant::now();
    for chunk in events.chunks(20_000) {
        let batch: Vec<(&Event, PartitionId)> =
            chunk.iter().map(|e| (e, PartitionId::zero_of(e))).collect();
        engine.apply_batch(&batch, now);
        std::hint::black_box(engine.flush(now, Utc::now()));
    }
    events.len() as f64 / t.elapsed().as_secs_f64()
}

/// Snapshot size and restore time of an engine holding `scopes` x `hours` (scope, hour)
/// buckets (one order each, so as many de-duplication ids): the checkpoint restore on a
/// partition move.
fn restore_time(scopes: usize, hours: i64) -> (usize, usize, f64) {
    let start: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
    let cfg = ProcessorConfig {
        kpis: vec!["orders".into(), "gmv".into()],
        ..ProcessorConfig::default()
    };
    let mut engine = Engine::new(&cfg, 0);
    let now = Instant::now();
    for h in 0..hours {
        let at = start + chrono::Duration::hours(h);
        let events: Vec<Event> = (0..scopes)
            .map(|s| order(&format!("r-{s}-{h}"), &format!("shop-{s}"), at))
            .collect();
        let batch: Vec<(&Event, PartitionId)> = events
            .iter()
            .map(|e| (e, PartitionId::zero_of(e)))
            .collect();
        engine.apply_batch(&batch, now);
    }
    let buckets = engine.state_buckets();
    let bytes = engine.snapshot();
    let t = Instant::now();
    let mut restored = Engine::new(&cfg, 0);
    restored
        .restore(&bytes, now)
        .expect("the snapshot restores");
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(&restored);
    (buckets, bytes.len(), secs)
}

/// Events/s of the engine over `events` split into two partitions by shop (as the producers
/// key them): one after the other on one thread, then one engine per thread on two, as the
/// processor's partition tasks run.
fn engine_scaling(events: &[Event]) -> (f64, f64) {
    let halves: [Vec<&Event>; 2] = {
        let mut h: [Vec<&Event>; 2] = [Vec::new(), Vec::new()];
        for e in events {
            let shop_hash = e
                .header
                .shop
                .bytes()
                .fold(0u32, |a, b| a.wrapping_mul(31) ^ u32::from(b));
            h[(shop_hash % 2) as usize].push(e);
        }
        h
    };
    let apply = |part: &[&Event]| {
        let mut engine = Engine::new(&ProcessorConfig::default(), 0);
        let now = Instant::now();
        for chunk in part.chunks(20_000) {
            let batch: Vec<(&Event, PartitionId)> = chunk
                .iter()
                .map(|e| (*e, PartitionId::zero_of(e)))
                .collect();
            engine.apply_batch(&batch, now);
            std::hint::black_box(engine.flush(now, Utc::now()));
        }
    };
    let t = Instant::now();
    for part in &halves {
        apply(part);
    }
    let one = events.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    std::thread::scope(|s| {
        for part in &halves {
            s.spawn(|| apply(part));
        }
    });
    let two = events.len() as f64 / t.elapsed().as_secs_f64();
    (one, two)
}

/// [`memory_per_bucket`] in a fresh process of this program: the RSS growth of this one,
/// after generating, encoding and publishing a million events, only reuses freed memory.
fn memory_per_bucket_fresh(scopes: usize, hours: i64) -> (f64, usize) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--memory-per-bucket",
            &scopes.to_string(),
            &hours.to_string(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let bytes = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(f64::NAN);
    let buckets = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    (bytes, buckets)
}

/// Bytes of resident memory per (scope, hour) bucket, from `scopes` shops with one order in
/// each of `hours` hours (so it includes the de-duplication id of that order).
fn memory_per_bucket(scopes: usize, hours: i64) -> (f64, usize) {
    let start: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
    let mut engine = Engine::new(&ProcessorConfig::default(), 0);
    let now = Instant::now();
    let before = rss();
    for h in 0..hours {
        let at = start + chrono::Duration::hours(h);
        let events: Vec<Event> = (0..scopes)
            .map(|s| order(&format!("m-{s}-{h}"), &format!("shop-{s}"), at))
            .collect();
        let batch: Vec<(&Event, PartitionId)> = events
            .iter()
            .map(|e| (e, PartitionId::zero_of(e)))
            .collect();
        engine.apply_batch(&batch, now);
    }
    let buckets = engine.state_buckets();
    let grown = rss().saturating_sub(before);
    std::hint::black_box(&engine);
    (grown as f64 / buckets as f64, buckets)
}

fn order(id: &str, shop: &str, at: DateTime<Utc>) -> Event {
    Event::new(
        EventHeader {
            event_id: id.to_string(),
            source: "bench".into(),
            shop: shop.to_string(),
            channel: Channel::Amazon,
            marketplace: "ATVPDKIKX0DER".into(),
            sku: None,
            event_time: at,
            source_tz: SourceTz::US_PACIFIC,
            ingest_time: at,
        },
        OrderPlaced {
            order_id: id.to_string(),
            total: Money::usd("10.00"),
            units: 1,
            fulfilment: Fulfilment::Fba,
            ship_by: None,
            deliver_by: None,
        },
    )
}

async fn publish_all(kafka: &KafkaConfig, events: &[Event]) {
    let publisher = KafkaPublisher::new(kafka, ComponentMetrics::new("bench")).unwrap();
    for e in events {
        publisher.publish(e).await.unwrap();
    }
    publisher.flush().await.unwrap();
}

/// Reads every input partition from the beginning until `n` records arrived: the ceiling.
/// A `BaseConsumer` poll loop on a thread of its own (librdkafka's fastest path from Rust,
/// within a few percent of `kcat -C -e`), with the processor's client settings.
fn raw_consume(kafka: &KafkaConfig, n: usize) -> f64 {
    let mut cfg = kafka.client_config().unwrap();
    cfg.set("group.id", "bench-raw")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = cfg.create().unwrap();
    let topics = kafka.topics();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in Topic::EVENTS {
        for p in 0..kafka.partitions {
            tpl.add_partition_offset(&topics.name(t), p, rdkafka::Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    // The clock starts at the first record: connecting is start-up, not consuming.
    let mut got = 0;
    let mut started = None;
    while got < n {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            std::hint::black_box(m.unwrap().payload());
            started.get_or_insert_with(Instant::now);
            got += 1;
        }
    }
    n as f64 / started.map_or(0.0, |t| t.elapsed().as_secs_f64())
}

/// `kpiflow process` (the same function, in this process) from a fresh group until it has
/// read `n` records: the start-up (restore, group join, until partitions are assigned) in
/// seconds, and the rate from then on.
async fn processor_rate(kafka: &KafkaConfig, group: &str, n: usize) -> (f64, f64) {
    let state = tempfile::tempdir().unwrap();
    let cfg = ProcessorConfig {
        group_id: group.to_string(),
        checkpoint: kpiflow_processor::config::CheckpointConfig {
            dir: state.path().into(),
            ..Default::default()
        },
        idle_timeout: Duration::from_secs(1),
        ..ProcessorConfig::default()
    };
    let received = kpiflow_core::metrics::events_received().with_label_values(&["processor"]);
    let before = received.get();
    let stop = CancellationToken::new();
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (k, c, s, r) = (kafka.clone(), cfg.clone(), stop.clone(), ready.clone());
    let t = Instant::now();
    let task = tokio::spawn(async move { kpiflow_processor::run::run(&k, &c, Some(r), s).await });
    while !ready.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let startup = t.elapsed().as_secs_f64();
    let t = Instant::now();
    while received.get() - before < n as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    stop.cancel();
    task.await.unwrap().unwrap();
    (startup, rate)
}

/// Sends orders for one shop at `rate` per second for `seconds`, with the processor running,
/// and measures, per order, the time until a KPI update counting it was on the output topic.
async fn latency(kafka: &KafkaConfig, rate: f64, seconds: f64) -> (f64, f64, usize) {
    let state = tempfile::tempdir().unwrap();
    let cfg = ProcessorConfig {
        group_id: format!("{}-latency", kafka.topic_prefix),
        checkpoint: kpiflow_processor::config::CheckpointConfig {
            dir: state.path().into(),
            ..Default::default()
        },
        idle_timeout: Duration::from_secs(1),
        ..ProcessorConfig::default()
    };
    let stop = CancellationToken::new();
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (k, c, s, r) = (kafka.clone(), cfg, stop.clone(), ready.clone());
    let task = tokio::spawn(async move { kpiflow_processor::run::run(&k, &c, Some(r), s).await });
    // Latency is measured in steady state, not across the processor's start-up.
    while !ready.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let consumer: StreamConsumer = kafka.consumer("bench-latency-reader").unwrap();
    let updates = kafka.topics().name(Topic::KpiUpdates);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..kafka.partitions {
        tpl.add_partition_offset(&updates, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let consumer = Arc::new(consumer);
    // Reader: for each count k, when an update first showed at least k orders.
    let seen: Arc<std::sync::Mutex<HashMap<u64, Instant>>> = Arc::default();
    let (reader_seen, reader_stop, reader) = (seen.clone(), stop.clone(), consumer.clone());
    let reader_task = tokio::spawn(async move {
        let mut best = 0u64;
        loop {
            let m = tokio::select! {
                _ = reader_stop.cancelled() => break,
                m = reader.recv() => m,
            };
            let Ok(m) = m else { continue };
            let Some(u) = m.payload().and_then(|b| KpiUpdate::from_json(b).ok()) else {
                continue;
            };
            if u.kpi != "orders"
                || u.scope.shop != "latency-shop"
                || u.window.name != "business_day"
            {
                continue;
            }
            let n = u.numerator.to_f64() as u64;
            if n > best {
                let now = Instant::now();
                let mut s = reader_seen.lock().unwrap();
                for k in best + 1..=n {
                    s.insert(k, now);
                }
                best = n;
            }
        }
    });
    let publisher = KafkaPublisher::new(kafka, ComponentMetrics::new("bench")).unwrap();
    let total = (rate * seconds) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut sent_at = Vec::with_capacity(total as usize);
    let start = tokio::time::Instant::now();
    for k in 0..total {
        tokio::time::sleep_until(start + interval.mul_f64(k as f64)).await;
        let e = order(&format!("lat-{k}"), "latency-shop", Utc::now());
        sent_at.push(Instant::now());
        publisher.publish(&e).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < total as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    reader_task.await.unwrap();
    let seen = seen.lock().unwrap();
    let mut lat: Vec<f64> = sent_at
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            seen.get(&(i as u64 + 1))
                .map(|t| t.saturating_duration_since(*s).as_secs_f64())
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p) as usize).copied();
    (
        pct(0.5).unwrap_or(f64::NAN),
        pct(0.99).unwrap_or(f64::NAN),
        lat.len(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, scopes, hours] = args.as_slice()
        && flag == "--memory-per-bucket"
    {
        let (bytes, buckets) = memory_per_bucket(scopes.parse().unwrap(), hours.parse().unwrap());
        println!("{bytes} {buckets}");
        return;
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let Ok(bootstrap) = std::env::var("KPIFLOW_TEST_BOOTSTRAP") else {
        println!("pipeline benchmark skipped: set KPIFLOW_TEST_BOOTSTRAP (scripts/bench.sh does)");
        return;
    };
    let (shops, days, orders) = if bench {
        (
            // 45 x 14 x 300: about 1.05M events, so start-up cannot hide in the rate.
            arg("--shops", 45.0),
            arg("--days", 14.0),
            arg("--orders", 300.0),
        )
    } else {
        (2.0, 2.0, 20.0)
    };
    // Latency at a fixed rate (`--rate`), or by default at 10% and 80% of the rate the
    // processor reached end to end in this run.
    let fixed_rate = std::env::args()
        .any(|a| a == "--rate")
        .then(|| arg("--rate", 0.0));
    let seconds = if bench { arg("--seconds", 20.0) } else { 2.0 };
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let kafka = kafka(&bootstrap, &prefix);
    kafka.ensure_topics().await.unwrap();
    let cfg = SimulatorConfig {
        shops: shops as u32,
        days: days as u32,
        orders_per_shop_per_day: orders as u32,
        ..SimulatorConfig::default()
    };
    let start: DateTime<Utc> = "2026-11-01T07:00:00Z".parse().unwrap();
    let events = generate(&cfg, start);
    let n = events.len();

    let decode_started = Instant::now();
    let records: Vec<Vec<u8>> = events.iter().map(Event::to_json).collect();
    for r in &records {
        std::hint::black_box(Event::from_json(r).unwrap());
    }
    let decode = n as f64 / decode_started.elapsed().as_secs_f64();
    let engine = engine_rate(&events);
    let (one_core, two_cores) = engine_scaling(&events);
    publish_all(&kafka, &events).await;
    let raw = tokio::task::block_in_place(|| raw_consume(&kafka, n));
    let (startup, e2e) = processor_rate(&kafka, "bench-processor", n).await;
    let (per_bucket, buckets) = if bench {
        memory_per_bucket_fresh(2_000, 48)
    } else {
        memory_per_bucket_fresh(50, 4)
    };
    let (restored_buckets, snapshot_bytes, restore_secs) = if bench {
        restore_time(10_000, 100)
    } else {
        restore_time(20, 5)
    };
    let rates: Vec<(f64, String)> = match (fixed_rate, bench) {
        (Some(r), _) => vec![(r, "fixed".into())],
        (None, true) => vec![
            ((e2e * 0.1).round(), "10% of the end-to-end rate".into()),
            ((e2e * 0.8).round(), "80% of it".into()),
        ],
        (None, false) => vec![(100.0, "smoke".into())],
    };
    let mut latencies = Vec::new();
    for (i, (rate, what)) in rates.into_iter().enumerate() {
        let lat_kafka = self::kafka(&bootstrap, &format!("{prefix}-lat{i}"));
        lat_kafka.ensure_topics().await.unwrap();
        let (p50, p99, measured) = latency(&lat_kafka, rate, seconds).await;
        assert_eq!(
            measured,
            (rate * seconds) as usize,
            "every order was seen on the output"
        );
        latencies.push((rate, what, p50, p99, measured));
    }

    println!(
        "pipeline benchmark: {n} simulated events ({shops} shops x {days} days x {orders} orders/day), full catalog, broker {bootstrap}"
    );
    println!("| measure | value | ratio |");
    println!("|---|---:|---:|");
    println!(
        "| raw consume of the input topics (ceiling: BaseConsumer poll loop) | {raw:.0} ev/s | 1.00 |"
    );
    println!(
        "| processor end to end from the broker, once assigned | {e2e:.0} ev/s | {:.2} of raw consume |",
        e2e / raw
    );
    println!(
        "| processor start-up: restore, group join, assignment | {:.0} ms | not in the rate |",
        startup * 1000.0
    );
    println!(
        "| engine on in-memory batches | {engine:.0} ev/s | {:.2} of raw consume |",
        engine / raw
    );
    println!(
        "| JSON decode alone | {decode:.0} ev/s | {:.2} of raw consume |",
        decode / raw
    );
    println!(
        "| engine, 2 partitions on 2 threads | {two_cores:.0} ev/s | {:.2}x the same 2 partitions on one ({one_core:.0} ev/s) |",
        two_cores / one_core
    );
    println!(
        "| memory per active (scope, hour) bucket | {per_bucket:.0} B | over {buckets} buckets |"
    );
    println!(
        "| restore of {restored_buckets} active (scope, hour) keys | {:.0} ms | {:.1} MB snapshot |",
        restore_secs * 1000.0,
        snapshot_bytes as f64 / 1e6
    );
    for (rate, what, p50, p99, measured) in latencies {
        println!(
            "| event-to-output latency at {rate:.0} ev/s ({what}), p50 / p99 | {:.0} / {:.0} ms | {measured} events, flush interval {} |",
            p50 * 1000.0,
            p99 * 1000.0,
            humantime::format_duration(ProcessorConfig::default().flush_interval)
        );
    }
}
