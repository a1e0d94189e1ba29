//! Golden KPI scenarios (`processor/tests/scenarios/*.scenario`): the engine's executable
//! specification, in the spirit of DataFusion's sqllogictest files.
//!
//! Each file states a configuration, input events in arrival order (with flushes between
//! batches), and the exact KPI rows, dead letters and breach transitions they must give.
//! Expected values are written by hand from the definitions (domain.md, the README); there is
//! no bless mode. The format is described in `processor/tests/scenarios/README.md`.
//!
//! Every scenario runs three times: batched as written, one event per batch, and all events
//! in one batch. Final KPI values and dead letters must be the same in all three (same input,
//! same output, whatever the batching); breach transitions are checked as written. A few
//! (`OVER_KAFKA`) also run over the real broker through the processor's Kafka loop.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kpiflow_processor::{Applied, Engine, PartitionId, ProcessorConfig};
use kpiflow_schemas::{Decimal, Event, KpiUpdate};
use serde_json::{Map, Value, json};

/// Header fields of an `event` line; everything else goes into the payload.
const HEADER: &[&str] = &[
    "id",
    "shop",
    "channel",
    "marketplace",
    "sku",
    "at",
    "source",
    "tz",
    "ingest",
];
const MONEY: &[&str] = &["total", "amount", "spend", "attributed_sales"];
const INTEGERS: &[&str] = &[
    "units",
    "impressions",
    "clicks",
    "attributed_orders",
    "sellable",
    "inbound",
    "reserved",
    "unfulfillable",
    "rating",
    "records_published",
    "errors",
    "consecutive_failures",
];
const BOOLS: &[&str] = &["tracking_valid", "seller_fault"];

/// The identity of a published row: KPI, scope, window name and start.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kpi: String,
    window: String,
    start: DateTime<Utc>,
    shop: String,
    channel: String,
    marketplace: String,
    sku: Option<String>,
    campaign: Option<String>,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} shop={} channel={} marketplace={}",
            self.kpi,
            self.window,
            self.start.format("%Y-%m-%dT%H:%M:%SZ"),
            self.shop,
            self.channel,
            self.marketplace
        )?;
        if let Some(s) = &self.sku {
            write!(f, " sku={s}")?;
        }
        if let Some(c) = &self.campaign {
            write!(f, " campaign={c}")?;
        }
        Ok(())
    }
}

impl Key {
    fn of(u: &KpiUpdate) -> Key {
        Key {
            kpi: u.kpi.clone(),
            window: u.window.name.clone(),
            start: u.window.start,
            shop: u.scope.shop.clone(),
            channel: u.scope.channel.to_string(),
            marketplace: u.scope.marketplace.clone(),
            sku: u.scope.sku.clone(),
            campaign: u.scope.campaign.clone(),
        }
    }
}

#[derive(Debug)]
enum Step {
    Event(Box<Event>),
    Flush(Duration),
    /// Flush, then checkpoint the engine (its state and the input read so far).
    Checkpoint,
    /// The processor dies: a new one restores the last checkpoint and reads again every
    /// event after it (Kafka redelivers what was not committed).
    Crash,
}

#[derive(Debug)]
struct Expect {
    line: usize,
    key: Key,
    /// `None`: the row must never be published.
    value: Option<(Decimal, Option<Decimal>)>,
}

#[derive(Debug, Default)]
struct Scenario {
    path: PathBuf,
    config: String,
    steps: Vec<Step>,
    expects: Vec<Expect>,
    /// (kpi, window): every published row of these must have an `expect` line.
    exhaustive: Vec<(String, String)>,
    /// event id → dead-letter kind.
    dead: BTreeMap<String, String>,
    /// (state, rule, window start), in order.
    breaches: Vec<(String, String, DateTime<Utc>)>,
    /// Why the engine does not meet this scenario yet (an open rule of an issue): the
    /// scenario must then fail, and passing is reported so the line gets removed.
    pending: Option<String>,
}

fn fields(tokens: &[&str], line: usize) -> Result<Vec<(String, String)>, String> {
    tokens
        .iter()
        .map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("line {line}: expected key=value, got {t:?}"))
        })
        .collect()
}

fn time(s: &str, line: usize) -> Result<DateTime<Utc>, String> {
    s.parse()
        .map_err(|e| format!("line {line}: {s:?} is not an RFC 3339 UTC time: {e}"))
}

fn decimal(s: &str, line: usize) -> Result<Decimal, String> {
    Decimal::parse(s).ok_or_else(|| format!("line {line}: {s:?} is not a decimal"))
}

fn payload_value(key: &str, v: &str, line: usize) -> Result<Value, String> {
    if v == "null" {
        return Ok(Value::Null);
    }
    if MONEY.contains(&key) {
        let (amount, currency) = v.split_once('@').unwrap_or((v, "USD"));
        return Ok(json!({ "amount": amount, "currency": currency }));
    }
    if INTEGERS.contains(&key) {
        return v
            .parse::<i64>()
            .map(Value::from)
            .map_err(|e| format!("line {line}: {key}={v}: {e}"));
    }
    if BOOLS.contains(&key) {
        return v
            .parse::<bool>()
            .map(Value::from)
            .map_err(|e| format!("line {line}: {key}={v}: {e}"));
    }
    Ok(Value::from(v))
}

fn event(schema: &str, tokens: &[&str], line: usize) -> Result<Event, String> {
    let mut header: BTreeMap<String, String> = BTreeMap::new();
    let mut payload = Map::new();
    for (k, v) in fields(tokens, line)? {
        if HEADER.contains(&k.as_str()) {
            header.insert(k, v);
        } else {
            payload.insert(k.clone(), payload_value(&k, &v, line)?);
        }
    }
    let get = |k: &str, default: &str| header.get(k).cloned().unwrap_or(default.to_string());
    let at = header
        .get("at")
        .ok_or_else(|| format!("line {line}: an event needs at=<event time>"))?;
    let id = header
        .get("id")
        .ok_or_else(|| format!("line {line}: an event needs id=<event id>"))?;
    let mut wire = json!({
        "event_id": id,
        "schema": schema,
        "schema_version": 1,
        "source": get("source", "scenario"),
        "shop": get("shop", "s1"),
        "channel": get("channel", "amazon"),
        "marketplace": get("marketplace", "ATVPDKIKX0DER"),
        "event_time": at,
        "source_tz": get("tz", "America/Los_Angeles"),
        "ingest_time": get("ingest", at),
        "payload": payload,
    });
    if let Some(sku) = header.get("sku") {
        wire["sku"] = Value::from(sku.as_str());
    }
    Event::from_json(wire.to_string().as_bytes())
        .map_err(|e| format!("line {line}: the event does not decode: {e}"))
}

fn key(tokens: &[&str], line: usize) -> Result<Key, String> {
    let [kpi, window, start, scope @ ..] = tokens else {
        return Err(format!(
            "line {line}: expected <kpi> <window> <window start> [shop=.. channel=.. marketplace=.. sku=.. campaign=..]"
        ));
    };
    let mut key = Key {
        kpi: kpi.to_string(),
        window: window.to_string(),
        start: time(start, line)?,
        shop: "s1".into(),
        channel: "amazon".into(),
        marketplace: "ATVPDKIKX0DER".into(),
        sku: None,
        campaign: None,
    };
    for (k, v) in fields(scope, line)? {
        match k.as_str() {
            "shop" => key.shop = v,
            "channel" => key.channel = v,
            "marketplace" => key.marketplace = v,
            "sku" => key.sku = Some(v),
            "campaign" => key.campaign = Some(v),
            other => return Err(format!("line {line}: unknown scope field {other:?}")),
        }
    }
    Ok(key)
}

fn parse(path: &Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut s = Scenario {
        path: path.to_path_buf(),
        ..Scenario::default()
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split(" #").next().unwrap_or("").trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let tokens: Vec<&str> = content.split_whitespace().collect();
        match tokens[0] {
            "config" => {
                s.config.push_str(content["config".len()..].trim());
                s.config.push('\n');
            }
            "event" => {
                let schema = tokens
                    .get(1)
                    .ok_or_else(|| format!("line {line}: event <schema> key=value ..."))?;
                let event = event(schema, &tokens[2..], line)?;
                s.steps.push(Step::Event(Box::new(event)));
            }
            "flush" => {
                let pause = match tokens.get(1) {
                    Some(d) => humantime::parse_duration(d.trim_start_matches('+'))
                        .map_err(|e| format!("line {line}: {d}: {e}"))?,
                    None => Duration::from_secs(1),
                };
                s.steps.push(Step::Flush(pause));
            }
            "checkpoint" => s.steps.push(Step::Checkpoint),
            "crash" => s.steps.push(Step::Crash),
            "expect" => {
                let eq = tokens.iter().position(|t| *t == "=").ok_or_else(|| {
                    format!("line {line}: expect ... = <numerator> [/ <denominator>]")
                })?;
                let key = key(&tokens[1..eq], line)?;
                let value = match &tokens[eq + 1..] {
                    [n] => (decimal(n, line)?, None),
                    [n, "/", d] => (decimal(n, line)?, Some(decimal(d, line)?)),
                    _ => {
                        return Err(format!(
                            "line {line}: expected = <numerator> [/ <denominator>]"
                        ));
                    }
                };
                s.expects.push(Expect {
                    line,
                    key,
                    value: Some(value),
                });
            }
            "absent" => {
                let key = key(&tokens[1..], line)?;
                s.expects.push(Expect {
                    line,
                    key,
                    value: None,
                });
            }
            "exhaustive" => match &tokens[1..] {
                [kpi, window] => s.exhaustive.push((kpi.to_string(), window.to_string())),
                _ => return Err(format!("line {line}: exhaustive <kpi> <window>")),
            },
            "dead" => match &tokens[1..] {
                [id, kind] => {
                    s.dead.insert(id.to_string(), kind.to_string());
                }
                _ => return Err(format!("line {line}: dead <event id> <kind>")),
            },
            "breach" => match &tokens[1..] {
                [state, rule, start] => {
                    s.breaches
                        .push((state.to_string(), rule.to_string(), time(start, line)?));
                }
                _ => {
                    return Err(format!(
                        "line {line}: breach <firing|resolved> <rule> <window start>"
                    ));
                }
            },
            "pending" => s.pending = Some(content["pending".len()..].trim().to_string()),
            other => return Err(format!("line {line}: unknown directive {other:?}")),
        }
    }
    Ok(s)
}

/// How a run cuts the input into batches.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Batching {
    AsWritten,
    OneByOne,
    OneBatch,
}

#[derive(Debug, Default)]
struct Outcome {
    latest: BTreeMap<Key, KpiUpdate>,
    dead: BTreeMap<String, String>,
    breaches: Vec<(String, String, DateTime<Utc>)>,
}

fn verdict_kind(v: &Applied) -> Option<String> {
    match v {
        Applied::Counted | Applied::Duplicate | Applied::Unused => None,
        Applied::Superseded { .. } => Some("superseded".into()),
        Applied::Late { .. } => Some("late".into()),
        Applied::Rejected { kind, .. } => Some(kind.to_string()),
    }
}

fn config(s: &Scenario) -> Result<ProcessorConfig, String> {
    let cfg: ProcessorConfig = toml::from_str(&s.config).map_err(|e| format!("bad config: {e}"))?;
    cfg.compile().map_err(|e| format!("bad config: {e}"))?;
    Ok(cfg)
}

fn run(s: &Scenario, batching: Batching) -> Result<Outcome, String> {
    let cfg = config(s)?;
    let mut engine = Engine::new(&cfg, 0);
    let start = Instant::now();
    let wall0: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().expect("valid");
    let mut elapsed = Duration::ZERO;
    let mut out = Outcome::default();
    let mut pending: Vec<&Event> = Vec::new();
    let flush =
        |engine: &mut Engine, pending: &mut Vec<&Event>, elapsed: Duration, out: &mut Outcome| {
            let now = start + elapsed;
            let batch: Vec<(&Event, PartitionId)> = pending
                .iter()
                .map(|e| (*e, PartitionId::zero_of(e)))
                .collect();
            let verdicts = engine.apply_batch(&batch, now).expect("the engine applies");
            for (e, v) in pending.iter().zip(&verdicts) {
                if let Some(kind) = verdict_kind(v) {
                    out.dead.insert(e.header.event_id.clone(), kind);
                }
            }
            pending.clear();
            let o = engine.flush(now, wall0 + chrono::Duration::from_std(elapsed).unwrap());
            for u in o.updates {
                out.latest.insert(Key::of(&u), u);
            }
            for b in o.breaches {
                out.breaches.push((
                    match b.state {
                        kpiflow_schemas::BreachState::Firing => "firing".to_string(),
                        kpiflow_schemas::BreachState::Resolved => "resolved".to_string(),
                    },
                    b.rule.clone(),
                    b.window.start,
                ));
            }
        };
    // The last checkpoint (as written only): the engine's bytes and the next step's index.
    let mut checkpoint: Option<(Vec<u8>, usize)> = None;
    for (index, step) in s.steps.iter().enumerate() {
        match step {
            Step::Checkpoint if batching == Batching::AsWritten => {
                elapsed += Duration::from_millis(10);
                flush(&mut engine, &mut pending, elapsed, &mut out);
                checkpoint = Some((engine.snapshot(), index + 1));
            }
            Step::Crash if batching == Batching::AsWritten => {
                // What was applied since the checkpoint is lost with the process; its
                // outputs already published stay on the topic (upserts).
                pending.clear();
                engine = Engine::new(&cfg, 0);
                let from = match &checkpoint {
                    Some((bytes, from)) => {
                        engine
                            .restore(bytes, start + elapsed)
                            .expect("the checkpoint restores");
                        *from
                    }
                    None => 0,
                };
                for replayed in &s.steps[from..index] {
                    if let Step::Event(e) = replayed {
                        pending.push(e);
                    }
                }
                elapsed += Duration::from_millis(10);
                flush(&mut engine, &mut pending, elapsed, &mut out);
            }
            Step::Checkpoint | Step::Crash => {}
            Step::Event(event) => {
                pending.push(event);
                if batching == Batching::OneByOne {
                    elapsed += Duration::from_millis(10);
                    flush(&mut engine, &mut pending, elapsed, &mut out);
                }
            }
            Step::Flush(pause) => {
                if batching == Batching::AsWritten {
                    elapsed += *pause;
                    flush(&mut engine, &mut pending, elapsed, &mut out);
                }
            }
        }
    }
    // The end of the input: every partition is read to its end and idle, so the watermark
    // reaches the newest event.
    elapsed += Duration::from_secs(1);
    flush(&mut engine, &mut pending, elapsed, &mut out);
    elapsed += cfg.idle_timeout + Duration::from_secs(1);
    for p in engine.quiet_partitions(start + elapsed) {
        engine.set_caught_up(p, true);
    }
    elapsed += Duration::from_secs(1);
    flush(&mut engine, &mut pending, elapsed, &mut out);
    Ok(out)
}

fn shown(n: &Decimal, d: &Option<Decimal>) -> String {
    match d {
        Some(d) => format!("{n} / {d}"),
        None => n.to_string(),
    }
}

fn same(a: &Decimal, b: &Decimal) -> bool {
    a.0.normalize() == b.0.normalize()
}

/// Checks one run against the file; returns the problems found.
fn check(s: &Scenario, batching: Batching, out: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    for e in &s.expects {
        match (out.latest.get(&e.key), &e.value) {
            (None, None) => {}
            (Some(u), None) => problems.push(format!(
                "line {}: {} should not be published, got {}",
                e.line,
                e.key,
                shown(&u.numerator, &u.denominator)
            )),
            (None, Some((n, d))) => problems.push(format!(
                "line {}: {} was never published (expected {})",
                e.line,
                e.key,
                shown(n, d)
            )),
            (Some(u), Some((n, d))) => {
                let den_ok = match (d, &u.denominator) {
                    (None, None) => true,
                    (Some(a), Some(b)) => same(a, b),
                    _ => false,
                };
                if !same(n, &u.numerator) || !den_ok {
                    problems.push(format!(
                        "line {}: {} = {}, expected {}",
                        e.line,
                        e.key,
                        shown(&u.numerator, &u.denominator),
                        shown(n, d)
                    ));
                }
            }
        }
    }
    let listed: BTreeSet<&Key> = s.expects.iter().map(|e| &e.key).collect();
    for (kpi, window) in &s.exhaustive {
        for (k, u) in &out.latest {
            if &k.kpi == kpi && &k.window == window && !listed.contains(k) {
                problems.push(format!(
                    "exhaustive {kpi} {window}: {k} = {} is published but has no expect line",
                    shown(&u.numerator, &u.denominator)
                ));
            }
        }
    }
    if out.dead != s.dead {
        problems.push(format!(
            "dead letters: got {:?}, expected {:?}",
            out.dead, s.dead
        ));
    }
    if batching == Batching::AsWritten && out.breaches != s.breaches {
        let list = |b: &[(String, String, DateTime<Utc>)]| {
            b.iter()
                .map(|(st, r, w)| format!("breach {st} {r} {}", w.format("%Y-%m-%dT%H:%M:%SZ")))
                .collect::<Vec<_>>()
                .join("\n    ")
        };
        problems.push(format!(
            "breach transitions:\n  got:\n    {}\n  expected:\n    {}",
            list(&out.breaches),
            list(&s.breaches)
        ));
    }
    problems
}

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

fn scenarios() -> Vec<Scenario> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(scenario_dir())
        .expect("processor/tests/scenarios exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "scenario"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| parse(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

#[test]
fn golden_scenarios_give_their_hand_computed_rows_in_every_batching() {
    let all = scenarios();
    assert!(!all.is_empty(), "no scenario files found");
    let mut report = String::new();
    let mut failed = 0;
    for s in &all {
        let name = s.path.file_name().unwrap().to_string_lossy().to_string();
        let mut problems = Vec::new();
        for batching in [Batching::AsWritten, Batching::OneByOne, Batching::OneBatch] {
            match run(s, batching) {
                Ok(out) => {
                    for p in check(s, batching, &out) {
                        problems.push(format!("[{batching:?}] {p}"));
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        problems
            .dedup_by(|a, b| a.split_once("] ").map(|x| x.1) == b.split_once("] ").map(|x| x.1));
        if let Some(why) = &s.pending {
            if problems.is_empty() {
                failed += 1;
                let _ = writeln!(
                    report,
                    "FAILED  {name}: marked pending ({why}) but now passes: remove the pending line"
                );
            } else {
                let _ = writeln!(
                    report,
                    "pending {name}: {why} ({} differences)",
                    problems.len()
                );
            }
        } else if problems.is_empty() {
            let _ = writeln!(report, "ok      {name}");
        } else {
            failed += 1;
            let _ = writeln!(report, "FAILED  {name}");
            for p in problems {
                let _ = writeln!(report, "    {p}");
            }
        }
    }
    eprintln!("{report}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} scenarios failed:\n{report}",
        all.len()
    );
}

#[test]
fn every_catalog_kpi_and_window_has_a_scenario() {
    let all = scenarios();
    let expected: BTreeSet<(String, String)> = all
        .iter()
        .filter(|s| s.pending.is_none())
        .flat_map(|s| s.expects.iter())
        .filter(|e| e.value.is_some())
        .map(|e| (e.key.kpi.clone(), e.key.window.clone()))
        .collect();
    let catalog = kpiflow_processor::catalog::Catalog::builtin();
    let mut missing_kpis = Vec::new();
    for k in &catalog.kpis {
        if !expected.iter().any(|(kpi, _)| *kpi == k.id) {
            missing_kpis.push(k.id.clone());
        }
    }
    let mut missing_windows = Vec::new();
    for w in &catalog.windows {
        if !expected.iter().any(|(_, window)| *window == w.name) {
            missing_windows.push(w.name.clone());
        }
    }
    assert!(
        missing_kpis.is_empty() && missing_windows.is_empty(),
        "catalog KPIs without a scenario expect line: {missing_kpis:?}; windows without one: {missing_windows:?}"
    );
}

/// Scenarios also run over a real broker, through the processor's Kafka loop (the function
/// `kpiflow process` runs): one per rule of the trust issue. Batching there is up to the
/// consumer, so breach transitions (checked as written in-process) are not compared.
const OVER_KAFKA: &[&str] = &[
    "003_returns_weeks_after_delivery_still_count.scenario",
    "004_restatements_never_cross_fact_kinds.scenario",
    "016_shipments_on_time_at_ship_by_late_after.scenario",
    "029_stockout_rate_one_indicator_per_sku_business_day.scenario",
    "039_backfill_of_one_shop_while_another_is_live.scenario",
    "058_money_converted_at_the_rate_of_its_business_day.scenario",
];

/// The dead letters read so far: event id → kind.
fn dead_of(letters: &[kpiflow_schemas::DeadLetter]) -> BTreeMap<String, String> {
    letters
        .iter()
        .filter_map(|d| {
            let raw: Value = serde_json::from_str(&d.payload).ok()?;
            Some((raw["event_id"].as_str()?.to_string(), d.reason_kind.clone()))
        })
        .collect()
}

async fn run_over_kafka(s: &Scenario) -> Outcome {
    use kpiflow_schemas::Topic;
    let kafka = super::kafka();
    kafka.ensure_topics().await.unwrap();
    let topics = kafka.topics();
    let state = tempfile::tempdir().unwrap();
    let cfg = super::on_broker(&kafka, state.path(), config(s).unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let (k, c, st) = (kafka.clone(), cfg.clone(), stop.clone());
    let task = tokio::spawn(async move { kpiflow_processor::run::run(&k, &c, None, st).await });
    // In arrival order, keyed by shop like every kpiflow producer: one shop's facts stay in
    // order on their partition.
    let producer = kafka.producer().unwrap();
    for step in &s.steps {
        if let Step::Event(e) = step {
            producer
                .send(
                    rdkafka::producer::FutureRecord::to(&topics.name(e.body.topic()))
                        .key(&e.header.shop)
                        .payload(&e.to_json()),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }
    super::caught_up(&kafka, &cfg.group_id).await;
    // The last windows are published once the partitions sit idle: wait until every value
    // the file expects is there (or 60 s), then compare everything.
    let mut out = Outcome::default();
    let values_there = |latest: &BTreeMap<Key, KpiUpdate>| {
        s.expects.iter().all(|e| match &e.value {
            None => true,
            Some((n, d)) => latest.get(&e.key).is_some_and(|u| {
                same(n, &u.numerator)
                    && match (d, &u.denominator) {
                        (None, None) => true,
                        (Some(a), Some(b)) => same(a, b),
                        _ => false,
                    }
            }),
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        out.latest = tokio::task::block_in_place(|| read_all_updates(&kafka));
        if values_there(&out.latest) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !s.dead.is_empty() {
        let letters = tokio::task::block_in_place(|| {
            super::read_until(
                &kafka,
                &topics.name(Topic::DeadLetter),
                |b| serde_json::from_slice::<kpiflow_schemas::DeadLetter>(b).unwrap(),
                |got| got.len() >= s.dead.len(),
            )
        });
        out.dead = dead_of(&letters);
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    out
}

/// Every KPI update on the topic so far, the highest revision per row.
fn read_all_updates(kafka: &kpiflow_core::KafkaConfig) -> BTreeMap<Key, KpiUpdate> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = kafka.topics().name(kpiflow_schemas::Topic::KpiUpdates);
    let mut cfg = kafka.client_config().unwrap();
    cfg.set(
        "group.id",
        format!("reader-{}", uuid::Uuid::new_v4().simple()),
    )
    .set("auto.offset.reset", "earliest")
    .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = cfg.create().unwrap();
    // Assigned, not subscribed: no group to join, every partition from its start.
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..kafka.partitions {
        tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut latest: BTreeMap<Key, KpiUpdate> = BTreeMap::new();
    let mut at_end = 0;
    let partitions = kafka.partitions as usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    while at_end < partitions && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let u = KpiUpdate::from_json(m.payload().unwrap_or_default()).unwrap();
                let k = Key::of(&u);
                if latest.get(&k).is_none_or(|old| old.revision < u.revision) {
                    latest.insert(k, u);
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => at_end += 1,
            _ => {}
        }
    }
    latest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_over_a_real_broker_give_the_same_rows() {
    let all = scenarios();
    let mut report = String::new();
    for name in OVER_KAFKA {
        let s = all
            .iter()
            .find(|s| s.path.file_name().is_some_and(|n| n == *name))
            .unwrap_or_else(|| panic!("no scenario {name}"));
        let out = run_over_kafka(s).await;
        let problems = check(s, Batching::OneBatch, &out);
        if problems.is_empty() {
            let _ = writeln!(report, "ok      {name}");
        } else {
            let _ = writeln!(report, "FAILED  {name}");
            for p in problems {
                let _ = writeln!(report, "    {p}");
            }
        }
    }
    eprintln!("{report}");
    assert!(!report.contains("FAILED"), "over Kafka:\n{report}");
}
