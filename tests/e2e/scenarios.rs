//! Golden scenarios through the `kpiflow` binary over a real broker: a scenario's events are
//! published in arrival order, `kpiflow process` runs as a user runs it (a config file, one
//! process, SIGTERM at the end), and every row and dead letter the file expects is read back
//! from the topics. The in-process runs (every scenario, three batchings) live with the
//! engine in `processor/tests/integration/scenarios.rs`; both read the files with
//! `scenario_file.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kpiflow_core::KafkaConfig;
use kpiflow_schemas::{KpiUpdate, Topic};
use rdkafka::producer::FutureRecord;

use super::scenario_file::{Key, Outcome, Scenario, Step, check, load, same};
use super::{bootstrap, read_all, wait_until_consumed};

/// One scenario per rule of the trust issue that Kafka could break: per-fact lateness (003),
/// per-kind restatements (004) and an older version arriving after a newer one (026),
/// marketplace scopes at `ship_by` (016), date-valued ad rows (028), stock carried per
/// business day (029), one shop backfilling beside a live one (039, two partitions), currency
/// conversion with a held-out order (058). Batching is up to the consumer here, so breach
/// transitions (checked as written in-process) are not compared.
const OVER_KAFKA: &[&str] = &[
    "003_returns_weeks_after_delivery_still_count.scenario",
    "004_restatements_never_cross_fact_kinds.scenario",
    "016_shipments_on_time_at_ship_by_late_after.scenario",
    "026_ad_restatement_older_then_newer.scenario",
    "028_ad_rows_booked_at_the_business_start_of_their_date.scenario",
    "029_stockout_rate_one_indicator_per_sku_business_day.scenario",
    "039_backfill_of_one_shop_while_another_is_live.scenario",
    "058_money_converted_at_the_rate_of_its_business_day.scenario",
];

/// The config file a user would write for this scenario: its `config` lines become the
/// `[processor]` table, plus this run's topics, group, checkpoint directory and quick
/// flushes (the last windows are published soon after the input ends).
fn config_file(dir: &Path, kafka: &KafkaConfig, group: &str, s: &Scenario) -> PathBuf {
    let mut processor: toml::Table = toml::from_str(&s.config)
        .unwrap_or_else(|e| panic!("{}: config lines: {e}", s.path.display()));
    processor.insert("group_id".into(), group.into());
    for (key, value) in [("flush_interval", "200ms"), ("idle_timeout", "500ms")] {
        processor.entry(key).or_insert_with(|| value.into());
    }
    let mut checkpoint = toml::Table::new();
    checkpoint.insert("dir".into(), dir.join("state").display().to_string().into());
    // Offsets are committed with each checkpoint: often, so `flush` lines can be awaited.
    checkpoint.insert("interval".into(), "300ms".into());
    processor.insert("checkpoint".into(), checkpoint.into());
    let mut kafka_table = toml::Table::new();
    kafka_table.insert(
        "bootstrap_servers".into(),
        kafka.bootstrap_servers.clone().into(),
    );
    kafka_table.insert("topic_prefix".into(), kafka.topic_prefix.clone().into());
    kafka_table.insert("partitions".into(), i64::from(kafka.partitions).into());
    let mut metrics = toml::Table::new();
    metrics.insert("listen".into(), "127.0.0.1:0".into());
    let mut file = toml::Table::new();
    file.insert("kafka".into(), kafka_table.into());
    file.insert("metrics".into(), metrics.into());
    file.insert("processor".into(), processor.into());
    let text = toml::to_string(&file).unwrap();
    let path = dir.join("kpiflow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `kpiflow process`: killed when dropped, printing its log if the test failed.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(config: &Path, log: PathBuf) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_kpiflow"))
            .arg("--config")
            .arg(config)
            .arg("process")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Process { child, log }
    }

    /// Fails (the log is printed on drop) if the process has exited (a config error, a crash).
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("kpiflow process exited ({status}); its log follows");
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as an orchestrator stops it; it must exit cleanly.
    fn stop(mut self) -> String {
        let status = super::terminate(&mut self.child);
        assert!(
            status.success(),
            "kpiflow process stops cleanly on SIGTERM ({status:?}); its log:\n{}",
            self.log()
        );
        self.log()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() && self.log.exists() {
            eprintln!("kpiflow process log:\n{}", self.log());
        }
    }
}

/// The newest revision of every row on the KPI topic so far.
fn latest(kafka: &KafkaConfig) -> BTreeMap<Key, KpiUpdate> {
    let mut latest: BTreeMap<Key, KpiUpdate> = BTreeMap::new();
    for raw in read_all(kafka, Topic::KpiUpdates) {
        let u = KpiUpdate::from_json(&raw).unwrap();
        let k = Key::of(&u);
        if latest.get(&k).is_none_or(|old| old.revision < u.revision) {
            latest.insert(k, u);
        }
    }
    latest
}

/// Every value the file expects is published (absent rows are checked afterwards).
fn values_there(s: &Scenario, latest: &BTreeMap<Key, KpiUpdate>) -> bool {
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
}

/// Runs `s` through a `kpiflow process` of its own (fresh topics, two partitions) and returns
/// what it published, with the process's log.
async fn run_through_the_binary(s: &Scenario) -> (Outcome, String) {
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap(),
        topic_prefix: format!("scn-{}", uuid::Uuid::new_v4().simple()),
        partitions: 2,
        ..KafkaConfig::default()
    };
    kafka.ensure_topics().await.unwrap();
    let topics = kafka.topics();
    let dir = tempfile::tempdir().unwrap();
    let group = format!("{}-processor", kafka.topic_prefix);
    let mut process = Process::start(
        &config_file(dir.path(), &kafka, &group, s),
        dir.path().join("process.log"),
    );

    // In arrival order, keyed by shop like every kpiflow producer: one shop's facts stay in
    // order on their partition. At a `flush` line the processor first reads everything sent
    // so far (the pause itself is the in-process runner's clock; it is not slept here).
    let inputs: Vec<String> = Topic::EVENTS.iter().map(|t| topics.name(*t)).collect();
    let producer = kafka.producer().unwrap();
    let mut sent = false;
    for step in &s.steps {
        match step {
            Step::Event(e) => {
                producer
                    .send(
                        FutureRecord::to(&topics.name(e.body.topic()))
                            .key(&e.header.shop)
                            .payload(&e.to_json()),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .unwrap();
                sent = true;
            }
            Step::Flush(_) | Step::Checkpoint if sent => {
                process.assert_running();
                wait_until_consumed(&kafka, &group, &inputs, Duration::from_secs(60)).await;
            }
            Step::Flush(_) | Step::Checkpoint => {}
            Step::Crash => panic!("{}: crash scenarios run in-process", s.path.display()),
        }
    }
    process.assert_running();
    wait_until_consumed(&kafka, &group, &inputs, Duration::from_secs(60)).await;
    // Dead letters are published before the offsets of their input are committed; the last
    // windows once the partitions sit idle: wait until every value the file expects is there
    // (or 60 s), then compare everything.
    let mut out = Outcome::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        out.latest = tokio::task::block_in_place(|| latest(&kafka));
        if values_there(s, &out.latest) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    out.dead = tokio::task::block_in_place(|| read_all(&kafka, Topic::DeadLetter))
        .iter()
        .map(|raw| {
            let d: kpiflow_schemas::DeadLetter = serde_json::from_slice(raw).unwrap();
            let input: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
            (
                input["event_id"].as_str().unwrap().to_string(),
                d.reason_kind,
            )
        })
        .collect();
    let log = process.stop();
    (out, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_through_the_binary_over_a_real_broker_give_the_same_rows() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("processor/tests/scenarios");
    let all = load(&dir);
    let mut report = String::new();
    for name in OVER_KAFKA {
        let s = all
            .iter()
            .find(|s| s.path.file_name().is_some_and(|n| n == *name))
            .unwrap_or_else(|| panic!("no scenario {name}"));
        assert!(s.pending.is_none(), "{name} is pending: pick another");
        let (out, log) = run_through_the_binary(s).await;
        let problems = check(s, &out, false);
        if problems.is_empty() {
            let _ = writeln!(report, "ok      {name}");
        } else {
            let _ = writeln!(report, "FAILED  {name}");
            for p in problems {
                let _ = writeln!(report, "    {p}");
            }
            let _ = writeln!(report, "  its log:\n{log}");
        }
    }
    eprintln!("{report}");
    assert!(
        !report.contains("FAILED"),
        "through the binary over Kafka:\n{report}"
    );
}
