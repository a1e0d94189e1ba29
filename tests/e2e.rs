//! End to end over a real Kafka broker: simulate → process → sink → Parquet.
//!
//! The expected KPI values are computed here, straight from the generated events and the
//! formulas in the domain reference, without any of the engine's code: de-duplicate by event
//! id, keep the newest version of each restated ad row, and sum each measure over the window.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::arrow::util::display::array_value_to_string;
use kpiflow_core::{ComponentMetrics, KafkaConfig};
use kpiflow_ingest::connectors::simulator::{Anomaly, Simulator, SimulatorConfig, generate};
use kpiflow_ingest::publish::KafkaPublisher;
use kpiflow_processor::ProcessorConfig;
use kpiflow_processor::rule::threshold::ThresholdRuleConfig;
use kpiflow_schemas::{CancelledBy, Event, EventBody, RuleOp, Severity, Topic};
use kpiflow_sink::SinkConfig;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

#[path = "e2e/amazon_sp_finances.rs"]
mod amazon_sp_finances;
#[path = "../ingest/tests/integration/amazon_sp_finances_api.rs"]
mod amazon_sp_finances_api;
#[path = "e2e/amazon_sp_reports.rs"]
mod amazon_sp_reports;
#[path = "../ingest/tests/integration/amazon_sp_reports_api.rs"]
mod amazon_sp_reports_api;
#[path = "e2e/by_hand.rs"]
mod by_hand;
#[path = "e2e/chaos.rs"]
mod chaos;
#[path = "e2e/cli.rs"]
mod cli;
#[path = "e2e/crash.rs"]
mod crash;
#[path = "e2e/dashboards.rs"]
mod dashboards;
#[path = "../ingest/tests/integration/fixture.rs"]
#[expect(
    dead_code,
    reason = "the fixture server and its LWA helpers are used here, not every helper"
)]
mod fixture;
#[path = "e2e/guard.rs"]
mod guard;
#[path = "../processor/tests/integration/oracle_cli.rs"]
mod oracle_cli;
#[path = "../ingest/tests/integration/push_http.rs"]
mod push_http;
#[path = "e2e/readiness.rs"]
mod readiness;
#[path = "../processor/tests/integration/scenario_file.rs"]
#[expect(
    dead_code,
    reason = "a flush's pause is the in-process runner's clock, not read here"
)]
mod scenario_file;
#[path = "e2e/scenarios.rs"]
mod scenarios;
#[path = "e2e/shopify_fulfilments.rs"]
mod shopify_fulfilments;
#[path = "e2e/shopify_returns.rs"]
mod shopify_returns;
#[path = "e2e/tiktok_shop_returns.rs"]
mod tiktok_shop_returns;
#[path = "../processor/tests/integration/topics.rs"]
mod topics;
#[path = "e2e/tracking.rs"]
mod tracking;
#[path = "e2e/walmart_connect_ads.rs"]
mod walmart_connect_ads;
#[path = "e2e/walmart_returns.rs"]
mod walmart_returns;
#[path = "e2e/walmart_wfs_inventory.rs"]
mod walmart_wfs_inventory;

use topics::read_all;

fn bootstrap() -> String {
    std::env::var("KPIFLOW_TEST_BOOTSTRAP")
        .expect("set KPIFLOW_TEST_BOOTSTRAP to a Kafka broker, or run scripts/test.sh")
}

/// The sink's golden gmv row (`sink/fixtures/kpi_updates.jsonl`, line 4: dtc-store,
/// business day 2025-03-14, numerator 12345.67, revision 3).
fn gmv_fixture() -> kpiflow_schemas::KpiUpdate {
    let line = include_str!("../sink/fixtures/kpi_updates.jsonl")
        .lines()
        .nth(3)
        .expect("the fixture has a fourth line");
    kpiflow_schemas::KpiUpdate::from_json(line.as_bytes()).expect("the fixture decodes")
}

/// Waits until `group` has committed offsets at the end of every partition of `topics`.
async fn wait_until_consumed(
    kafka: &KafkaConfig,
    group: &str,
    topics: &[String],
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        // A fresh broker may answer "not coordinator" for a while: that is "not yet".
        let behind = match tokio::task::block_in_place(|| {
            kafka.group_lag(group, topics, Duration::from_secs(10))
        }) {
            Ok(parts) => parts
                .iter()
                .filter(|p| p.lag() > 0)
                .map(|p| format!("{}/{}: {} of {}", p.topic, p.partition, p.committed, p.end))
                .collect(),
            Err(e) => vec![e.to_string()],
        };
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} did not catch up within {within:?}: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One additive fact: `amount` of `measure` for `shop` at unix second `at`.
struct Fact {
    shop: String,
    measure: &'static str,
    at: i64,
    amount: Decimal,
}

fn money(m: &kpiflow_schemas::Money) -> Decimal {
    m.amount.0
}

/// Shipped by the seller or its 3PL (domain.md: Amazon's seller-fulfilled scope); a fact that
/// does not say counts as seller-fulfilled.
fn seller_fulfilled(f: Option<kpiflow_schemas::Fulfilment>) -> bool {
    use kpiflow_schemas::Fulfilment::{Merchant, ThirdParty};
    f.is_none_or(|f| matches!(f, Merchant | ThirdParty))
}

/// The facts the domain reference's formulas sum, from de-duplicated, latest-version events.
fn facts(events: &[Event]) -> Vec<Fact> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut ads: HashMap<(String, String, String, String, chrono::NaiveDate), &Event> =
        HashMap::new();
    for e in events {
        if !seen.insert(e.header.event_id.clone()) {
            continue;
        }
        let shop = e.header.shop.clone();
        let at = e.header.event_time.timestamp();
        let mut push = |measure, at, amount| {
            out.push(Fact {
                shop: shop.clone(),
                measure,
                at,
                amount,
            })
        };
        match &e.body {
            EventBody::OrderPlaced(o) => {
                push("orders", at, Decimal::ONE);
                push("gmv", at, money(&o.total));
                if seller_fulfilled(Some(o.fulfilment)) {
                    push("orders_sf", at, Decimal::ONE);
                }
            }
            // Amazon's late shipment rate: seller-fulfilled orders due to ship (at ship_by).
            EventBody::OrderShipped(s) if seller_fulfilled(s.fulfilment) => {
                let due = s.ship_by.timestamp();
                push("shipments", due, Decimal::ONE);
                if e.header.event_time > s.ship_by {
                    push("late_shipments", due, Decimal::ONE);
                }
            }
            EventBody::OrderCancelled(c)
                if c.cancelled_by == CancelledBy::Seller && seller_fulfilled(c.fulfilment) =>
            {
                push("seller_cancels", c.placed_at.timestamp(), Decimal::ONE);
            }
            EventBody::AdPerformance(a) => {
                let key = (
                    e.header.shop.clone(),
                    a.platform.clone(),
                    a.account_id.clone(),
                    a.campaign_id.clone(),
                    a.date,
                );
                let newer = match ads.get(&key).map(|old| &old.body) {
                    Some(EventBody::AdPerformance(old)) => {
                        (a.as_of, &e.header.event_id) > (old.as_of, &ads[&key].header.event_id)
                    }
                    _ => true,
                };
                if newer {
                    ads.insert(key, e);
                }
            }
            _ => {}
        }
    }
    for e in ads.values() {
        if let EventBody::AdPerformance(a) = &e.body {
            let at = e.header.event_time.timestamp();
            out.push(Fact {
                shop: e.header.shop.clone(),
                measure: "ad_spend",
                at,
                amount: money(&a.spend),
            });
            out.push(Fact {
                shop: e.header.shop.clone(),
                measure: "ad_sales",
                at,
                amount: money(&a.attributed_sales),
            });
        }
    }
    out
}

/// Range sums over facts, by (shop, measure).
struct Sums(HashMap<(String, &'static str), Vec<(i64, Decimal)>>);

impl Sums {
    fn new(facts: Vec<Fact>) -> Sums {
        let mut by: HashMap<(String, &'static str), Vec<(i64, Decimal)>> = HashMap::new();
        for f in facts {
            by.entry((f.shop, f.measure))
                .or_default()
                .push((f.at, f.amount));
        }
        for v in by.values_mut() {
            v.sort_by_key(|(at, _)| *at);
            let mut acc = Decimal::ZERO;
            for (_, amount) in v.iter_mut() {
                acc += *amount;
                *amount = acc;
            }
        }
        Sums(by)
    }

    /// Sum of `measure` for `shop` over `[start, end)`.
    fn sum(&self, shop: &str, measure: &'static str, start: i64, end: i64) -> Decimal {
        let Some(v) = self.0.get(&(shop.to_string(), measure)) else {
            return Decimal::ZERO;
        };
        let upto = |t: i64| {
            let i = v.partition_point(|(at, _)| *at < t);
            if i == 0 { Decimal::ZERO } else { v[i - 1].1 }
        };
        upto(end) - upto(start)
    }
}

/// The KPIs [`formula`] knows (the oracle checks all of them).
const REFERENCE_KPIS: [&str; 6] = [
    "gmv",
    "orders",
    "aov",
    "late_shipment_rate",
    "cancellation_rate",
    "roas",
];

/// The formulas of the domain reference, as (numerator, denominator) measures.
fn formula(kpi: &str) -> (&'static str, Option<&'static str>) {
    match kpi {
        "gmv" => ("gmv", None),
        "orders" => ("orders", None),
        "aov" => ("gmv", Some("orders")),
        "late_shipment_rate" => ("late_shipments", Some("shipments")),
        "cancellation_rate" => ("seller_cancels", Some("orders_sf")),
        "roas" => ("ad_sales", Some("ad_spend")),
        other => panic!("the test does not know KPI {other}"),
    }
}

fn dec(s: &str) -> Option<Decimal> {
    (!s.is_empty()).then(|| s.parse::<Decimal>().unwrap().normalize())
}

async fn rows(dir: &std::path::Path, sql: &str) -> Vec<Vec<String>> {
    let batches = kpiflow_sink::query(dir, sql).await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(r) {
                            String::new()
                        } else {
                            array_value_to_string(c, r).unwrap()
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

/// Sends SIGTERM to `child`, as an orchestrator stops it, and waits for its exit.
fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -TERM {}", child.id());
    child.wait().unwrap()
}

/// The simulator's stream with the late-shipment spike the end-to-end rule (`lsr_high`)
/// fires on: on shop-003 (Shopify: its own warehouse and a 3PL, all seller-fulfilled), whose
/// own orders are due within 2 days, half of the orders due on day 1 ship late. (An Amazon
/// shop ships most orders through FBA, outside the late shipment rate, and 3PL orders are due
/// days later.) 2 % duplicates, 3 % late deliveries.
fn spiked_stream(
    seed: u64,
    shops: u32,
    days: u32,
    orders_per_shop_per_day: u32,
) -> SimulatorConfig {
    SimulatorConfig {
        seed,
        shops,
        days,
        orders_per_shop_per_day,
        duplicate_rate: 0.02,
        late_rate: 0.03,
        anomalies: vec![Anomaly::LateShipmentSpike {
            shop: 2,
            day: 1,
            late_share: 0.5,
            hours: 24,
        }],
        ..SimulatorConfig::default()
    }
}

/// The late-shipment rule of the end-to-end runs, as `[[processor.rules]]` TOML.
const LSR_RULE: &str = r#"
[[processor.rules]]
id = "lsr_high"
kpi = "late_shipment_rate"
window = "rolling_24h"
op = "above"
threshold = 0.10
resolve_at = 0.06
min_denominator = 20
severity = "critical"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_stream_gives_exact_kpis_in_parquet_and_a_breach_that_fires_and_resolves() {
    let test_started = Instant::now();
    let prefix = format!("e2e-{}", uuid::Uuid::new_v4().simple());
    let kafka: KafkaConfig = toml::from_str(&format!(
        "bootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"",
        bootstrap()
    ))
    .unwrap();
    // Pacific midnight on 2026-11-01, the day US Pacific time falls back (a 25-hour day).
    let start: DateTime<Utc> = "2026-11-01T07:00:00Z".parse().unwrap();
    let sim = spiked_stream(7, 4, 4, 150);
    let events = generate(&sim, start);
    let ids: HashSet<&str> = events.iter().map(|e| e.header.event_id.as_str()).collect();
    assert!(
        ids.len() < events.len(),
        "the stream must contain duplicate deliveries"
    );
    let mut newest = DateTime::<Utc>::MIN_UTC;
    let mut out_of_order = 0;
    for e in &events {
        if !matches!(e.body, EventBody::AdPerformance(_)) {
            if e.header.event_time + chrono::Duration::hours(1) < newest {
                out_of_order += 1;
            }
            newest = newest.max(e.header.event_time);
        }
    }
    assert!(
        out_of_order > 0,
        "the stream must contain events more than an hour out of order"
    );

    let publisher = KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.simulator")).unwrap();
    let published = Simulator::with_start(sim.clone(), start)
        .unwrap()
        .run(&publisher, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(published.published, events.len() as u64);

    let state = tempfile::tempdir().unwrap();
    let processor = ProcessorConfig {
        group_id: format!("{prefix}-processor"),
        checkpoint: kpiflow_processor::config::CheckpointConfig {
            dir: state.path().into(),
            ..Default::default()
        },
        idle_timeout: Duration::from_secs(2),
        flush_interval: Duration::from_millis(300),
        rules: vec![ThresholdRuleConfig {
            id: "lsr_high".into(),
            kpi: "late_shipment_rate".into(),
            window: "rolling_24h".into(),
            op: RuleOp::Above,
            threshold: 0.10,
            resolve_at: Some(0.06),
            min_denominator: 20,
            severity: Severity::Critical,
            for_: None,
            channels: Vec::new(),
            runbook_url: None,
            on_settling: Default::default(),
        }],
        // The whole built-in catalog: the oracle checks every KPI, the reference below the
        // ones it knows (REFERENCE_KPIS).
        ..ProcessorConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let sink = SinkConfig {
        dir: dir.path().into(),
        group_id: format!("{prefix}-sink"),
        roll_interval: Duration::from_millis(500),
        // The archive reconcile reads below is the sink's own.
        events_archive: true,
        ..SinkConfig::default()
    };
    let stop = CancellationToken::new();
    let (k, p, s) = (kafka.clone(), processor.clone(), stop.clone());
    let proc_task = tokio::spawn(async move { kpiflow_processor::run::run(&k, &p, None, s).await });
    let (k, c, s) = (kafka.clone(), sink.clone(), stop.clone());
    let sink_task =
        tokio::spawn(async move { kpiflow_sink::run(&k, &c, None, None, None, s).await });

    let topics = kafka.topics();
    let inputs: Vec<String> = Topic::EVENTS.iter().map(|t| topics.name(*t)).collect();
    wait_until_consumed(
        &kafka,
        &processor.group_id,
        &inputs,
        Duration::from_secs(180),
    )
    .await;
    let outputs = [topics.name(Topic::KpiUpdates), topics.name(Topic::Breaches)];
    let sink_inputs: Vec<String> = outputs.iter().chain(&inputs).cloned().collect();
    wait_until_consumed(
        &kafka,
        &sink.group_id,
        &sink_inputs,
        Duration::from_secs(180),
    )
    .await;
    stop.cancel();
    let stats = proc_task.await.unwrap().unwrap();
    sink_task.await.unwrap().unwrap();
    assert_eq!(stats.received, events.len() as u64);
    // Nothing in this stream is beyond its lateness: the only dead letters allowed are older
    // versions of a restated fact arriving after a newer one (an inventory snapshot delayed
    // past a later one of the same day), each naming the version that stays.
    let refused: Vec<kpiflow_schemas::DeadLetter> = read_all(&kafka, Topic::DeadLetter)
        .iter()
        .map(|d| serde_json::from_slice(d).unwrap())
        .collect();
    assert_eq!(refused.len() as u64, stats.dead_lettered);
    let unexpected: Vec<_> = refused
        .iter()
        .filter(|d| d.reason_kind != "superseded" || !d.reason.contains("already counted"))
        .collect();
    if !unexpected.is_empty() {
        panic!(
            "nothing in this stream is beyond its lateness, yet {} records were dead-lettered, e.g. {:#?}",
            unexpected.len(),
            &unexpected[..unexpected.len().min(3)]
        );
    }
    assert_eq!(stats.duplicates as usize, events.len() - ids.len());
    // Every role has reported: the dashboards and rules may only use what /metrics shows.
    dashboards::assert_deploy_uses_exported_metrics().await;

    // Every KPI value in Parquet equals the value computed from the events.
    let sums = Sums::new(facts(&events));
    let got = rows(
        dir.path(),
        &format!(
            "SELECT kpi, shop, window_name, to_unixtime(window_start), to_unixtime(window_end), \
                    CAST(numerator AS VARCHAR), CAST(denominator AS VARCHAR) FROM kpi_latest \
             WHERE kpi IN ('{}')",
            REFERENCE_KPIS.join("', '")
        ),
    )
    .await;
    let mut mismatches = Vec::new();
    let mut days: BTreeMap<String, HashSet<i64>> = BTreeMap::new();
    let mut rolling = 0;
    for r in &got {
        let (kpi, shop, window) = (&r[0], &r[1], &r[2]);
        let (s, e): (i64, i64) = (r[3].parse().unwrap(), r[4].parse().unwrap());
        let (num, den) = formula(kpi);
        let want = (
            Some(sums.sum(shop, num, s, e).normalize()),
            den.map(|d| sums.sum(shop, d, s, e).normalize()),
        );
        if (dec(&r[5]), dec(&r[6])) != want {
            mismatches.push(format!("{r:?}: want {want:?}"));
        }
        if window == "business_day" {
            days.entry(shop.clone()).or_default().insert(s);
        } else {
            rolling += 1;
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} rows differ, e.g. {:#?}",
        mismatches.len(),
        got.len(),
        &mismatches[..mismatches.len().min(10)]
    );
    // Not vacuous: every shop has every Pacific day of the span (the first one 25 hours
    // long), and rolling windows for the whole span.
    assert_eq!(days.len(), 4, "{days:?}");
    for (shop, starts) in &days {
        assert!(
            starts.len() >= 4,
            "{shop} has only {} business days",
            starts.len()
        );
        assert!(
            starts.contains(&start.timestamp()),
            "{shop} lacks the first day"
        );
    }
    assert!(rolling >= 4 * 6 * 72, "only {rolling} rolling-window rows");

    // The late-shipment spike on shop-003 opened a breach that later resolved.
    let breaches = rows(
        dir.path(),
        "SELECT breach_id, shop, state, to_unixtime(at) FROM breaches WHERE rule = 'lsr_high' ORDER BY at",
    )
    .await;
    let fired: Vec<&Vec<String>> = breaches
        .iter()
        .filter(|b| b[1] == "shop-003" && b[2] == "firing")
        .collect();
    if fired.is_empty() {
        let worst = rows(
            dir.path(),
            "SELECT window_start, numerator, denominator, value, revision FROM kpi_latest \
             WHERE shop = 'shop-003' AND kpi = 'late_shipment_rate' AND window_name = 'rolling_24h' \
             ORDER BY value DESC NULLS LAST LIMIT 5",
        )
        .await;
        let daily: Vec<String> = (0..5)
            .map(|d| {
                let s = start.timestamp() + d * 86_400;
                let late = sums.sum("shop-003", "late_shipments", s, s + 86_400);
                let shipped = sums.sum("shop-003", "shipments", s, s + 86_400);
                format!("day {d}: {late}/{shipped}")
            })
            .collect();
        panic!(
            "no breach fired for shop-003: {breaches:?}; worst windows: {worst:?}; generated: {daily:?}"
        );
    }
    let id = &fired[0][0];
    assert!(
        breaches.iter().any(|b| &b[0] == id && b[2] == "resolved"),
        "breach {id} never resolved: {breaches:?}"
    );
    // And the data really did cross the rule then (computed independently).
    let fired_at: i64 = fired[0][3].parse().unwrap();
    let late = sums.sum("shop-003", "late_shipments", fired_at - 86_400, fired_at);
    let shipped = sums.sum("shop-003", "shipments", fired_at - 86_400, fired_at);
    assert!(
        shipped >= Decimal::from(20) && late / shipped > Decimal::new(10, 2),
        "{late}/{shipped}"
    );

    // `kpiflow compact` merges the sink's many small files; every check below then reads
    // the compacted tables, so it must have kept every row exactly once.
    // (Parquet files, partition folders holding any.)
    let files = |dir: &std::path::Path| {
        let (mut n, mut folders) = (0, 0);
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let mut here = 0;
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "parquet") {
                    here += 1;
                }
            }
            n += here;
            folders += usize::from(here > 0);
        }
        (n, folders)
    };
    let (before, folders) = files(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kpiflow"))
        .args(["compact", "--older-than", "0s", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every file is small: each partition ends with exactly one. (How many files the sink
    // wrote per partition depends on timing, so `before` may already be one per folder.)
    let (after, _) = files(dir.path());
    assert_eq!(
        after, folders,
        "compaction leaves one file per partition folder: {before} files in {folders} folders -> {after}"
    );
    eprintln!("kpiflow compact: {before} files -> {after}");

    // `kpiflow reconcile` recomputes the same values from an events archive.
    eprintln!("pipeline part took {:?}", test_started.elapsed());
    assert_reconciles(dir.path(), &events);
    // And the independent oracle (tests/oracle, Python, written from domain.md) agrees with
    // every value streamed to kpi.updates.
    assert_oracle_agrees(&kafka, &events, &[]);
}

/// Every record of `topic` from its start; the topic must be quiet (nothing written any more).
/// Runs `tests/oracle/oracle.py` over the events as published and every KPI update streamed,
/// minus the events the processor dead-lettered, and asserts it finds no difference.
fn assert_oracle_agrees(kafka: &KafkaConfig, events: &[Event], kpis: &[String]) {
    let refused: Vec<String> = read_all(kafka, Topic::DeadLetter)
        .iter()
        .filter_map(|d| {
            let d: serde_json::Value = serde_json::from_slice(d).ok()?;
            let raw: serde_json::Value = serde_json::from_str(d["payload"].as_str()?).ok()?;
            Some(raw["event_id"].as_str()?.to_string())
        })
        .collect();
    oracle_cli::assert_oracle_agrees_with(
        events,
        read_all(kafka, Topic::KpiUpdates),
        &refused,
        kpis,
    );
}

/// Writes `events` as one Parquet file of the `events` table under `dir`.
fn write_events(dir: &std::path::Path, name: &str, events: &[Event]) {
    std::fs::create_dir_all(dir).unwrap();
    let batch = kpiflow_schemas::event_table::to_batch(events).unwrap();
    let file = std::fs::File::create(dir.join(name)).unwrap();
    let mut w =
        datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Runs `kpiflow reconcile` over the sink folder; returns (success, stdout).
fn reconcile_command(dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kpiflow"))
        .args(["reconcile", "--format", "csv", "--dir"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), format!("{stdout}{stderr}"))
}

/// The stream and the batch recomputation agree on what the pipeline published, and a fact
/// the stream never saw shows up as a difference in exactly the windows it belongs to.
fn assert_reconciles(dir: &std::path::Path, events: &[Event]) {
    // The sink archived every delivery (duplicates included) under events/date=…/.
    let archive = dir.join("events");
    assert!(
        std::fs::read_dir(&archive).is_ok_and(|mut d| d.next().is_some()),
        "the sink wrote no events archive in {}",
        archive.display()
    );
    let started = Instant::now();
    let (ok, out) = reconcile_command(dir, &[]);
    eprintln!("reconcile took {:?}: {}", started.elapsed(), out.trim());
    assert!(ok, "reconcile found differences: {out}");
    assert!(out.contains("published windows match"), "{out}");

    // One order the stream never saw, for shop-001 in the middle of the span.
    let mut extra = events
        .iter()
        .find(|e| e.header.shop == "shop-001" && matches!(e.body, EventBody::OrderPlaced(_)))
        .unwrap()
        .clone();
    extra.header.event_id = "never-streamed".into();
    // Where the sink would have put it: the archive is a Hive-partitioned table.
    let partition = archive.join(format!("date={}", extra.header.event_time.date_naive()));
    write_events(&partition, "extra.parquet", &[extra.clone()]);
    let (ok, out) = reconcile_command(dir, &["--kpi", "orders"]);
    assert!(!ok, "an unseen order must be reported: {out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("orders,")).collect();
    assert!(!lines.is_empty(), "{out}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("amazon/ATVPDKIKX0DER/shop-001") || l.contains("/shop-001,")),
        "only shop-001's windows differ: {lines:#?}"
    );
    let at = extra.header.event_time;
    for l in &lines {
        let f: Vec<&str> = l.split(',').collect();
        let (s, e): (DateTime<Utc>, DateTime<Utc>) = (f[3].parse().unwrap(), f[4].parse().unwrap());
        assert!(s <= at && at < e, "{l} does not contain {at}");
    }
}
