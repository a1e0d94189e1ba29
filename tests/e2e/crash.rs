//! Delivery guarantees under SIGKILL: processors killed at random moments while the stream
//! runs lose nothing and count nothing twice; `KPIFLOW_CRASH_KILLS` sets how many kills (5 by
//! default; `scripts/soak.sh` repeats the test). A sink killed while it writes leaves no temp
//! file behind its next start and no row a query sees twice.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kpiflow_core::KafkaConfig;
use kpiflow_core::storage::{Location, StoreOptions};
use kpiflow_ingest::connectors::simulator::{Simulator, SimulatorConfig, generate};
use kpiflow_ingest::publish::KafkaPublisher;
use kpiflow_schemas::{KpiUpdate, Topic};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::{
    REFERENCE_KPIS, Sums, assert_oracle_agrees, bootstrap, facts, formula, read_all,
    wait_until_consumed,
};

/// Writes the members' config under `dir`; checkpoints go to `checkpoints` (a location and
/// its S3 settings) when given, else to `dir/state`.
fn processor_config(
    dir: &std::path::Path,
    kafka: &KafkaConfig,
    group: &str,
    checkpoints: Option<(Location, StoreOptions)>,
) -> std::path::PathBuf {
    let path = dir.join("kpiflow.toml");
    let (state, options) =
        checkpoints.unwrap_or_else(|| (dir.join("state").into(), StoreOptions::new()));
    let options: String = options
        .iter()
        .map(|(k, v)| format!("{k} = \"{v}\"\n"))
        .collect();
    // The KPIs `formula` knows (a TOML array reads like Rust's debug form of the list).
    let kpis = REFERENCE_KPIS;
    let text = format!(
        r#"{kafka}
[processor]
group_id = "{group}"
kpis = {kpis:?}
flush_interval = "200ms"
idle_timeout = "1s"
{rule}
[processor.checkpoint]
dir = "{state}"
interval = "300ms"

[processor.checkpoint.object_store]
{options}"#,
        kafka = kafka_sections(kafka),
        rule = super::LSR_RULE,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The `[kafka]` and `[metrics]` sections of a member killed and restarted by these tests.
pub(crate) fn kafka_sections(kafka: &KafkaConfig) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{}"
topic_prefix = "{}"
partitions = 3

[kafka.client]
# A killed member's partitions move after this, not after the 45 s default.
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[metrics]
listen = "127.0.0.1:0"
"#,
        kafka.bootstrap_servers, kafka.topic_prefix
    )
}

/// A `kpiflow` process killed when dropped: a failing test must not leave it running (it
/// would keep the test runner's descriptors, e.g. a build lock, and reconnect to the broker).
pub(crate) struct KillOnDrop(pub(crate) Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &std::path::Path, log: &std::path::Path) -> KillOnDrop {
    let log = std::fs::File::create(log).unwrap();
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kpiflow"))
            .arg("--config")
            .arg(config)
            .arg("process")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// The simulator's events from 2026-11-02 08:00 UTC and a task publishing them over about
/// `seconds`, into fresh topics (`<name>-<uuid>`, `partitions` each) on `bootstrap`.
async fn simulated_stream(
    bootstrap: String,
    name: &str,
    partitions: i32,
    sim: &SimulatorConfig,
    seconds: f64,
) -> Stream {
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap,
        topic_prefix: format!("{name}-{}", uuid::Uuid::new_v4().simple()),
        partitions,
        ..KafkaConfig::default()
    };
    kafka.ensure_topics().await.unwrap();
    let start_at = "2026-11-02T08:00:00Z".parse().unwrap();
    let events = generate(sim, start_at);
    let publisher = KafkaPublisher::new(
        &kafka,
        kpiflow_core::ComponentMetrics::new("ingest.simulator"),
    )
    .unwrap();
    let sim = SimulatorConfig {
        rate: Some(events.len() as f64 / seconds),
        ..sim.clone()
    };
    let publishing = tokio::spawn(async move {
        Simulator::with_start(sim, start_at)
            .unwrap()
            .run(&publisher, CancellationToken::new())
            .await
            .unwrap()
    });
    Stream {
        group: format!("{}-processor", kafka.topic_prefix),
        kafka,
        events,
        publishing,
    }
}

/// A simulated stream being published (see [`simulated_stream`]).
struct Stream {
    kafka: KafkaConfig,
    /// The processors' consumer group: `<topic prefix>-processor`.
    group: String,
    events: Vec<kpiflow_schemas::Event>,
    publishing: tokio::task::JoinHandle<kpiflow_ingest::RunStats>,
}

/// The newest revision of every key on the KPI updates topic.
pub(crate) fn latest_updates(kafka: &KafkaConfig) -> HashMap<String, KpiUpdate> {
    let mut latest: HashMap<String, KpiUpdate> = HashMap::new();
    for raw in read_all(kafka, Topic::KpiUpdates) {
        let u = KpiUpdate::from_json(&raw).unwrap();
        if latest
            .get(&u.key())
            .is_none_or(|old| u.revision > old.revision)
        {
            latest.insert(u.key(), u);
        }
    }
    latest
}

/// Fails unless every value equals the reference computed from `events`.
fn assert_exact(latest: &HashMap<String, KpiUpdate>, events: &[kpiflow_schemas::Event]) {
    let sums = Sums::new(facts(events));
    let mut wrong = Vec::new();
    for u in latest.values() {
        let (num, den) = formula(&u.kpi);
        let (s, e) = (u.window.start.timestamp(), u.window.end.timestamp());
        let want = (
            sums.sum(&u.scope.shop, num, s, e).normalize(),
            den.map(|d| sums.sum(&u.scope.shop, d, s, e).normalize()),
        );
        let got = (
            u.numerator.0.normalize(),
            u.denominator.map(|d| d.0.normalize()),
        );
        if got != want {
            wrong.push(format!("{}: got {got:?}, want {want:?}", u.key()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} values differ, e.g. {:#?}",
        wrong.len(),
        latest.len(),
        &wrong[..wrong.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processors_killed_mid_stream_lose_nothing_and_count_nothing_twice() {
    let kills: usize = std::env::var("KPIFLOW_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let sim = super::spiked_stream(11, 4, 3, 80);
    // The stream runs for about 12 s while processors are killed.
    let Stream {
        kafka,
        group,
        events,
        publishing: stream,
    } = simulated_stream(bootstrap(), "crash", 3, &sim, 12.0).await;

    let dir = tempfile::tempdir().unwrap();
    let config = processor_config(dir.path(), &kafka, &group, None);
    let mut rng = rand::rng();
    for i in 0..kills {
        let mut child = start(&config, &dir.path().join(format!("run-{i}.log")));
        let after = Duration::from_millis(rng.random_range(1_000..4_000));
        tokio::time::sleep(after).await;
        child.kill().unwrap(); // SIGKILL: no flush, no checkpoint, no goodbye
        child.wait().unwrap();
        eprintln!("killed processor {i} after {after:?}");
    }
    let published = stream.await.unwrap();
    assert_eq!(published.published, events.len() as u64);

    let mut last = start(&config, &dir.path().join("final.log"));
    let topics = kafka.topics();
    let inputs: Vec<String> = Topic::EVENTS.iter().map(|t| topics.name(*t)).collect();
    wait_until_consumed(&kafka, &group, &inputs, Duration::from_secs(240)).await;
    let status = super::terminate(&mut last);
    assert!(
        status.success(),
        "the last processor stops cleanly on SIGTERM: {status:?}"
    );
    let checkpoints = std::fs::read_dir(dir.path().join("state").join(&group))
        .unwrap()
        .count();
    assert!(checkpoints >= 1, "state was checkpointed");

    // Final KPI values: the highest revision per key equals the reference.
    let latest = latest_updates(&kafka);
    assert!(latest.len() > 1000, "only {} KPI keys", latest.len());
    assert_exact(&latest, &events);
    // And the independent oracle agrees with every update streamed across the kills.
    assert_oracle_agrees(&kafka, &events, &REFERENCE_KPIS.map(String::from));

    // Breaches: after collapsing repeats of the same (breach id, state), every scope's
    // breaches alternate firing / resolved, each resolution closing the open breach.
    let (seen, _) = super::chaos::transitions(&kafka);
    assert!(!seen.is_empty(), "the late-shipment spike opens a breach");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processors_share_the_partitions_and_survive_losing_one() {
    let sim = SimulatorConfig {
        seed: 5,
        shops: 6,
        days: 2,
        orders_per_shop_per_day: 60,
        ..SimulatorConfig::default()
    };
    let Stream {
        kafka,
        group,
        events,
        publishing: stream,
    } = simulated_stream(bootstrap(), "scale", 3, &sim, 10.0).await;
    let dir = tempfile::tempdir().unwrap();
    // No shared volume between the members: their checkpoints live in S3 (the local test
    // server), as on machines of their own. Without a server (outside CI) a shared folder.
    let config = processor_config(
        dir.path(),
        &kafka,
        &group,
        kpiflow_core::storage::test_location("scale-out"),
    );
    let mut members: Vec<KillOnDrop> = (0..3)
        .map(|i| start(&config, &dir.path().join(format!("member-{i}.log"))))
        .collect();
    // Once the group has spread the partitions, one member dies.
    let spread = Instant::now() + Duration::from_secs(60);
    let assigned = |i: usize| {
        std::fs::read_to_string(dir.path().join(format!("member-{i}.log")))
            .unwrap_or_default()
            .lines()
            .rfind(|l| l.contains("partitions assigned"))
            .is_some_and(|l| l.contains("tasks=1"))
    };
    while !(0..3).all(assigned) {
        if Instant::now() > spread {
            let logs: Vec<String> = (0..3)
                .map(|i| {
                    std::fs::read_to_string(dir.path().join(format!("member-{i}.log")))
                        .unwrap_or_default()
                })
                .collect();
            panic!("the three members never held one partition each: {logs:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    members[0].kill().unwrap();
    members[0].wait().unwrap();
    let published = stream.await.unwrap();
    assert_eq!(published.published, events.len() as u64);
    let topics = kafka.topics();
    let inputs: Vec<String> = Topic::EVENTS.iter().map(|t| topics.name(*t)).collect();
    wait_until_consumed(&kafka, &group, &inputs, Duration::from_secs(240)).await;
    for m in &mut members[1..] {
        assert!(super::terminate(m).success());
    }
    // The survivors took over the dead member's partition, restoring its checkpoint.
    let took_over = (1..3).any(|i| {
        std::fs::read_to_string(dir.path().join(format!("member-{i}.log")))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("tasks=2") && !l.contains("restored_bytes=0"))
    });
    assert!(
        took_over,
        "no survivor restored the dead member's partition"
    );

    let latest = latest_updates(&kafka);
    let shops: std::collections::HashSet<&str> =
        latest.values().map(|u| u.scope.shop.as_str()).collect();
    assert_eq!(shops.len(), 6, "every shop has values");
    assert_exact(&latest, &events);
}

/// Held by each test that runs a private broker: they share its port.
pub(crate) static PRIVATE_BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The private broker's port: `KPIFLOW_RESTART_TEST_PORT`, default 29692 (its controller takes
/// 29693). Below Linux's ephemeral range (32768–60999) on purpose: while this broker is down,
/// clients reconnecting to it can be given its own port as their source port and connect to
/// themselves, which holds the port and makes the next start fail with "Address already in
/// use" (seen with 39692: three tests failed in a row).
pub(crate) fn private_port() -> u16 {
    std::env::var("KPIFLOW_RESTART_TEST_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(29692u16)
}

/// Stops the private broker on `port` with data under the path when dropped, however the
/// test ends.
pub(crate) struct StopBroker(pub(crate) u16, pub(crate) std::path::PathBuf);

impl Drop for StopBroker {
    fn drop(&mut self) {
        let _ = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/local/kafka.sh"
        ))
        .arg("stop")
        .env("KPIFLOW_KAFKA_PORT", self.0.to_string())
        .env("KPIFLOW_KAFKA_DATA", &self.1)
        .output();
    }
}

/// `deploy/local/kafka.sh <cmd>` for a private broker on `port` with data under `data`.
pub(crate) fn broker(cmd: &str, port: u16, data: &std::path::Path) -> String {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/local/kafka.sh"
    ))
    .arg(cmd)
    .env("KPIFLOW_KAFKA_PORT", port.to_string())
    .env("KPIFLOW_KAFKA_DATA", data)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "kafka.sh {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_and_doubles_nothing() {
    // A broker of its own: the other tests share theirs.
    let _private = PRIVATE_BROKER.lock().await;
    let port = private_port();
    let data = tempfile::tempdir().unwrap();
    let bootstrap = broker("start", port, data.path());
    let _stop = StopBroker(port, data.path().to_path_buf());
    let sim = SimulatorConfig {
        seed: 3,
        shops: 3,
        days: 2,
        orders_per_shop_per_day: 60,
        duplicate_rate: 0.02,
        ..SimulatorConfig::default()
    };
    let Stream {
        kafka,
        group,
        events,
        publishing: stream,
    } = simulated_stream(bootstrap, "restart", 2, &sim, 10.0).await;
    let state = tempfile::tempdir().unwrap();
    let cfg = kpiflow_processor::ProcessorConfig {
        group_id: group.clone(),
        flush_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(1),
        kpis: REFERENCE_KPIS.map(String::from).to_vec(),
        checkpoint: kpiflow_processor::config::CheckpointConfig {
            dir: state.path().into(),
            interval: Duration::from_millis(300),
            ..Default::default()
        },
        ..kpiflow_processor::ProcessorConfig::default()
    };
    let stop = CancellationToken::new();
    let processor = tokio::spawn({
        let (kafka, cfg, stop) = (kafka.clone(), cfg.clone(), stop.clone());
        async move { kpiflow_processor::run::run(&kafka, &cfg, None, stop).await }
    });
    // Mid-stream, the broker goes away for a few seconds and comes back with its data.
    tokio::time::sleep(Duration::from_secs(4)).await;
    broker("stop", port, data.path());
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker("start", port, data.path());
    let published = stream.await.unwrap();
    assert_eq!(published.published, events.len() as u64);
    let topics = kafka.topics();
    let inputs: Vec<String> = Topic::EVENTS.iter().map(|t| topics.name(*t)).collect();
    wait_until_consumed(&kafka, &group, &inputs, Duration::from_secs(240)).await;
    stop.cancel();
    processor.await.unwrap().unwrap();

    let latest = latest_updates(&kafka);
    assert!(latest.len() > 100, "only {} KPI keys", latest.len());
    assert_exact(&latest, &events);
    assert_oracle_agrees(&kafka, &events, &REFERENCE_KPIS.map(String::from));
}

/// Waits until the processor's log at `log` says its partitions are assigned; the time it took.
fn until_assigned(log: &std::path::Path, child: &mut Child, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("partitions assigned and state restored") {
            return started.elapsed();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the processor exited ({status}):\n{text}");
        }
        assert!(
            started.elapsed() < within,
            "no assignment within {within:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Static membership (`processor.instance_id`): a member SIGKILLed and restarted with the same
/// id takes its partitions back at once. Without it the group waits for the dead member's
/// session to expire (45 s by default, kept here) before anyone gets them.
#[test]
fn a_killed_member_restarted_with_its_instance_id_gets_its_partitions_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("static-{}", uuid::Uuid::new_v4().simple());
    let config = dir.path().join("kpiflow.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
bootstrap_servers = "{bootstrap}"
topic_prefix = "{prefix}"
partitions = 2

[metrics]
listen = "127.0.0.1:0"

[processor]
group_id = "{prefix}-processor"
instance_id = "member-0"
kpis = ["orders"]

[processor.checkpoint]
dir = "{state}"
"#,
            bootstrap = bootstrap(),
            state = dir.path().join("state").display(),
        ),
    )
    .unwrap();
    let first_log = dir.path().join("first.log");
    let mut first = start(&config, &first_log);
    until_assigned(&first_log, &mut first, Duration::from_secs(120));
    first.kill().unwrap(); // SIGKILL: the member never says goodbye
    first.wait().unwrap();

    let second_log = dir.path().join("second.log");
    let mut second = start(&config, &second_log);
    let took = until_assigned(&second_log, &mut second, Duration::from_secs(120));
    eprintln!("restart to assignment: {took:?}");
    second.kill().unwrap();
    second.wait().unwrap();
    assert!(
        took < Duration::from_secs(15),
        "the restarted member waited {took:?} for its partitions (the session timeout is 45 s)"
    );
}

/// Files under `dir` (recursively) whose name passes `keep`.
fn files_named(dir: &std::path::Path, keep: fn(&str) -> bool) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_str().is_some_and(keep) {
                n += 1;
            }
        }
    }
    n
}

/// The one number a `SELECT count(*) AS n …` answers.
async fn count(tables: &std::path::Path, sql: &str) -> usize {
    let batches = kpiflow_sink::query(tables, sql).await.unwrap();
    let csv = kpiflow_sink::format_batches(&batches, kpiflow_sink::OutputFormat::Csv).unwrap();
    csv.trim().trim_start_matches("n\n").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_killed_while_writing_leaves_no_temp_files_and_no_doubled_rows() {
    const KILLS: i64 = 10;
    const KPIS: usize = 40;
    const SHOPS: usize = 20;
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap(),
        topic_prefix: format!("sinkkill-{}", uuid::Uuid::new_v4().simple()),
        partitions: 3,
        ..KafkaConfig::default()
    };
    kafka.ensure_topics().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let group = format!("{}-sink", kafka.topic_prefix);
    let config = dir.path().join("kpiflow.toml");
    std::fs::write(
        &config,
        format!(
            r#"{}
[sink]
dir = "{}"
group_id = "{group}"
# Small flushes: each writes a file per date folder (20 fsyncs), so kills land inside one.
roll_rows = 400
roll_interval = "100ms"
"#,
            kafka_sections(&kafka),
            tables.display()
        ),
    )
    .unwrap();
    let sink = |log: &str| {
        let log = std::fs::File::create(dir.path().join(log)).unwrap();
        KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_kpiflow"))
                .arg("--config")
                .arg(&config)
                .arg("sink")
                .env("RUST_LOG", "info")
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let base = super::gmv_fixture();
    let producer = kafka.producer().unwrap();
    let topic = kafka.topics().name(Topic::KpiUpdates);
    // Round r publishes revision r of 40 KPIs x 20 shops = 800 keys, then starts a sink and
    // SIGKILLs it once it has committed a few files; the last round's sink drains the topic.
    let is_part = |n: &str| n.starts_with("part-") && n.ends_with(".parquet");
    let is_temp = |n: &str| n.starts_with(".part-") && n.ends_with(".parquet.tmp");
    let mut rng = rand::rng();
    let mut debris = 0;
    for round in 1..=KILLS + 1 {
        let mut deliveries = Vec::new();
        for k in 0..KPIS {
            for s in 0..SHOPS {
                let mut u = base.clone();
                u.kpi = format!("kill_kpi_{k:02}");
                u.scope.shop = format!("shop-{s:02}");
                // One business day per shop: a flush writes one file per date folder.
                let day = chrono::Duration::days(s as i64);
                u.window.start += day;
                u.window.end += day;
                u.revision = round as u64;
                let (key, payload) = (u.key(), serde_json::to_vec(&u).unwrap());
                let record = rdkafka::producer::FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&payload);
                deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
            }
        }
        for d in deliveries {
            d.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
        // Temp files the previous kill left; this start must remove every one.
        debris += files_named(&tables, is_temp);
        let before = files_named(&tables, is_part);
        let mut child = sink(&format!("run-{round}.log"));
        if round > KILLS {
            wait_until_consumed(
                &kafka,
                &group,
                std::slice::from_ref(&topic),
                Duration::from_secs(120),
            )
            .await;
            assert!(
                super::terminate(&mut child).success(),
                "the last sink stops cleanly"
            );
            break;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while files_named(&tables, is_part) < before + 3 {
            assert!(Instant::now() < deadline, "sink {round} wrote no files");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..60))).await;
        child.kill().unwrap(); // SIGKILL: mid-flush, no commit, no clean-up
        child.wait().unwrap();
    }

    // Every start removed the temp files the kill before it left, and the last one left none.
    let removed: usize = (1..=KILLS + 1)
        .map(|r| {
            std::fs::read_to_string(dir.path().join(format!("run-{r}.log")))
                .unwrap()
                .matches("removed a temporary file of a killed writer")
                .count()
        })
        .sum();
    assert_eq!(files_named(&tables, is_temp), 0, "no temp file stays");
    assert_eq!(
        removed, debris,
        "each leftover temp file was removed (and logged) at start"
    );

    // 11 rounds x 800 keys, each (key, revision) once however often a restart re-wrote it.
    let t = tables.as_path();
    let raw = count(t, "SELECT count(*) AS n FROM kpi_values_raw").await;
    let published = (KILLS as usize + 1) * KPIS * SHOPS;
    assert_eq!(
        count(t, "SELECT count(*) AS n FROM kpi_values").await,
        published
    );
    assert_eq!(
        count(
            t,
            "SELECT count(*) AS n FROM kpi_latest WHERE revision = 11"
        )
        .await,
        KPIS * SHOPS
    );
    assert!(raw >= published, "{raw} rows in the files");
    let stats = kpiflow_sink::parquet::compact::compact(
        &kpiflow_sink::TableStore::from(t),
        Duration::ZERO,
        kpiflow_sink::Compression::Zstd,
    )
    .await
    .unwrap();
    assert_eq!(stats.copies_dropped, raw - published, "{stats:?}");
    assert_eq!(
        count(t, "SELECT count(*) AS n FROM kpi_values_raw").await,
        published
    );
    eprintln!(
        "{KILLS} SIGKILLs: {debris} temp files left and removed at start; {raw} rows in the \
         files for {published} (key, revision) pairs; compaction dropped {} copies ({stats:?})",
        stats.copies_dropped
    );
}
