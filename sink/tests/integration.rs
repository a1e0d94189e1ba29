//! The sink against a real Kafka broker: records in, Parquet + dead letters + metrics out.
//!
//! Needs `KPIFLOW_TEST_BOOTSTRAP=host:port` (scripts/test.sh starts a broker and sets it).
//! Every run uses its own topic prefix and consumer groups, so runs never see each other.
//! Modules under `integration/` add real Alertmanager and Prometheus processes.

mod integration {
    pub(crate) mod daemons;

    mod alerts;
    mod archive;
    mod object_store;
    mod prometheus;
}

use std::time::Duration;

use kpiflow_core::KafkaConfig;
use kpiflow_core::metrics;
use kpiflow_schemas::{BreachEvent, DeadLetter, KpiUpdate, Topic};
use kpiflow_sink::parquet::TableRow;
use kpiflow_sink::{LiveView, SinkConfig, SinkStats, TableStore, query};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) const DEADLINE: Duration = Duration::from_secs(90);
const GARBAGE: &[u8] = br#"{"kpi": 42, "numerator": 1.5}"#;

pub(crate) fn bootstrap() -> String {
    std::env::var("KPIFLOW_TEST_BOOTSTRAP")
        .unwrap_or_else(|_| panic!("set KPIFLOW_TEST_BOOTSTRAP or run scripts/test.sh"))
}

pub(crate) fn fixtures<T>(
    text: &str,
    decode: fn(&[u8]) -> Result<T, kpiflow_schemas::SchemaError>,
) -> Vec<T> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| decode(l.as_bytes()).expect("fixture decodes"))
        .collect()
}

pub(crate) async fn produce(kafka: &KafkaConfig, topic: Topic, key: &str, payload: &[u8]) {
    let producer = kafka.producer().unwrap();
    let name = kafka.topics().name(topic);
    producer
        .send(
            FutureRecord::to(&name).key(key).payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap_or_else(|e| panic!("producing to {name}: {e}"));
}

/// Waits until `group` has committed, on every partition of `topics`, the end offset.
pub(crate) async fn await_committed(kafka: &KafkaConfig, group: &str, topics: &[String]) {
    let started = Instant::now();
    loop {
        // The offset look-ups block; this test runs on a multi-threaded runtime.
        let probe =
            tokio::task::block_in_place(|| kafka.group_lag(group, topics, Duration::from_secs(5)))
                .map(|parts| parts.iter().map(|p| p.lag()).sum::<i64>());
        match probe {
            Ok(0) => return,
            Ok(lag) if started.elapsed() > DEADLINE => {
                panic!("group {group} still has {lag} uncommitted records after {DEADLINE:?}")
            }
            Err(e) if started.elapsed() > DEADLINE => panic!("reading offsets of {group}: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub(crate) async fn read<R: TableRow>(tables: impl Into<TableStore>, sql: &str) -> Vec<R> {
    query(tables, sql)
        .await
        .unwrap()
        .iter()
        .flat_map(|b| R::from_batch(b).unwrap())
        .collect()
}

/// The value of a `metric` line in the exposition whose labels contain all of `labels`.
pub(crate) fn exposed(metric: &str, labels: &[&str]) -> Option<f64> {
    metrics::render()
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| labels.iter().all(|w| l.contains(w)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

pub(crate) fn start_sink(
    kafka: &KafkaConfig,
    cfg: &SinkConfig,
    live: &LiveView,
) -> (CancellationToken, tokio::task::JoinHandle<SinkStats>) {
    let shutdown = CancellationToken::new();
    let (kafka, cfg, live, token) = (kafka.clone(), cfg.clone(), live.clone(), shutdown.clone());
    let task = tokio::spawn(async move {
        kpiflow_sink::run(&kafka, &cfg, Some(live), None, None, token)
            .await
            .expect("the sink runs until shutdown")
    });
    (shutdown, task)
}

/// Fresh topics (prefix `<name>-<id>`, two partitions) holding the KPI update and breach
/// fixtures: (id, kafka, kpis, breaches).
pub(crate) async fn topics_with_fixtures(
    name: &str,
) -> (String, KafkaConfig, Vec<KpiUpdate>, Vec<BreachEvent>) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap(),
        topic_prefix: format!("{name}-{id}"),
        partitions: 2,
        ..KafkaConfig::default()
    };
    kafka.ensure_topics().await.unwrap();
    let kpis = fixtures(
        include_str!("../fixtures/kpi_updates.jsonl"),
        KpiUpdate::from_json,
    );
    let breaches = fixtures(
        include_str!("../fixtures/breaches.jsonl"),
        BreachEvent::from_json,
    );
    for k in &kpis {
        let payload = serde_json::to_vec(k).unwrap();
        produce(&kafka, Topic::KpiUpdates, &k.key(), &payload).await;
    }
    for b in &breaches {
        let payload = serde_json::to_vec(b).unwrap();
        produce(&kafka, Topic::Breaches, &b.breach_id, &payload).await;
    }
    (id, kafka, kpis, breaches)
}

/// Publishes a newer revision (3) of `kpi` with other values, and returns it.
pub(crate) async fn publish_restatement(kafka: &KafkaConfig, kpi: &KpiUpdate) -> KpiUpdate {
    let mut newer = kpi.clone();
    newer.revision = 3;
    newer.numerator = kpiflow_schemas::Decimal::parse("5").unwrap();
    newer.value = Some(0.04);
    let payload = serde_json::to_vec(&newer).unwrap();
    produce(kafka, Topic::KpiUpdates, &newer.key(), &payload).await;
    newer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_become_parquet_dead_letters_and_gauges() {
    let (id, kafka, kpis, events) = topics_with_fixtures("sinktest").await;
    let topics = kafka.topics();
    let (kpi_topic, breach_topic) = (topics.name(Topic::KpiUpdates), topics.name(Topic::Breaches));
    produce(&kafka, Topic::KpiUpdates, "garbage-key", GARBAGE).await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = SinkConfig {
        dir: dir.path().into(),
        group_id: format!("sinktest-{id}"),
        roll_interval: Duration::from_millis(200),
        ..SinkConfig::default()
    };
    let live = LiveView::new();
    let (shutdown, task) = start_sink(&kafka, &cfg, &live);
    await_committed(
        &kafka,
        &cfg.group_id,
        &[kpi_topic.clone(), breach_topic.clone()],
    )
    .await;

    // Offsets are committed only after the files: everything is readable now, exactly.
    let back: Vec<KpiUpdate> = read(
        dir.path(),
        "SELECT * FROM kpi_values ORDER BY key, revision",
    )
    .await;
    let mut expected = kpis.clone();
    expected.sort_by_key(|k| (k.key(), k.revision));
    assert_eq!(back, expected);
    let back: Vec<BreachEvent> = read(dir.path(), "SELECT * FROM breaches ORDER BY at").await;
    let mut expected = events.clone();
    expected.sort_by_key(|b| b.at);
    assert_eq!(back, expected);

    // The current window of late_shipment_rate is 2025-03-14 at revision 2 (0.032); the
    // correction to 2025-03-13 (revision 5, 0.09) went to Parquet only.
    let lsr = [
        r#"kpi="late_shipment_rate""#,
        r#"shop="shop-1""#,
        r#"window="rolling_24h""#,
    ];
    assert_eq!(
        exposed("kpiflow_kpi_value", &lsr),
        Some(0.032),
        "{}",
        metrics::render()
    );
    assert_eq!(exposed("kpiflow_kpi_denominator", &lsr), Some(125.0));
    let gmv = [r#"kpi="gmv""#, r#"shop="dtc-store""#];
    assert_eq!(exposed("kpiflow_kpi_value", &gmv), Some(12345.67));
    let open = |rule: &str| exposed("kpiflow_breaches_open", &[&format!("rule=\"{rule}\"")]);
    assert_eq!(open("lsr-above-4pct"), Some(0.0), "fired, then resolved");
    assert_eq!(open("stockout-above-5pct"), Some(1.0));
    let live_lsr = live
        .kpis()
        .into_iter()
        .find(|k| k.kpi == "late_shipment_rate")
        .expect("the live view has the series");
    assert_eq!(live_lsr.revision, 2);
    assert_eq!(live.recent_breaches().len(), events.len());

    shutdown.cancel();
    let stats = task.await.unwrap();
    assert_eq!(stats.received as usize, kpis.len() + events.len() + 1);
    assert_eq!(stats.kpi_rows as usize, kpis.len());
    assert_eq!(stats.breach_rows as usize, events.len());
    assert_eq!(stats.dead_lettered, 1);
    let sink_text = metrics::render();
    assert!(
        sink_text.contains(r#"kpiflow_events_dropped_total{component="sink",reason="invalid"} 1"#),
        "{sink_text}"
    );

    // The garbage record is on the dead-letter topic, with where it came from and why.
    let letter = read_dead_letter(&kafka, &id).await;
    assert_eq!(letter.stage, "sink");
    assert_eq!(letter.reason_kind, "invalid");
    assert!(letter.reason.starts_with("kpi.update"), "{}", letter.reason);
    assert_eq!(letter.topic.as_deref(), Some(kpi_topic.as_str()));
    assert_eq!(letter.key.as_deref(), Some("garbage-key"));
    assert_eq!(letter.payload.as_bytes(), GARBAGE);
    assert!(letter.partition.is_some() && letter.offset.is_some());

    // A restart resumes after the committed offsets (no row is written twice) and rebuilds
    // the open breaches from Parquet, since their firing events will not be read again.
    metrics::breaches_open()
        .with_label_values(&["stockout-above-5pct", "warning"])
        .set(0);
    let newer = publish_restatement(&kafka, &kpis[1]).await;
    let (shutdown, task) = start_sink(&kafka, &cfg, &live);
    await_committed(&kafka, &cfg.group_id, &[kpi_topic, breach_topic]).await;
    shutdown.cancel();
    let stats = task.await.unwrap();
    assert_eq!((stats.received, stats.kpi_rows), (1, 1));
    // The files themselves: `kpi_values` would hide a row written twice.
    let all = query(dir.path(), "SELECT count(*) AS n FROM kpi_values_raw")
        .await
        .unwrap();
    let all = kpiflow_sink::format_batches(&all, kpiflow_sink::OutputFormat::Csv).unwrap();
    assert_eq!(all, format!("n\n{}\n", kpis.len() + 1));
    let latest: Vec<KpiUpdate> = read(
        dir.path(),
        &format!("SELECT * FROM kpi_latest WHERE key = '{}'", newer.key()),
    )
    .await;
    assert_eq!(latest, vec![newer]);
    assert_eq!(
        open("stockout-above-5pct"),
        Some(1.0),
        "restored from Parquet"
    );
}

async fn read_dead_letter(kafka: &KafkaConfig, id: &str) -> DeadLetter {
    let consumer: StreamConsumer = kafka.consumer(&format!("sinktest-{id}-dlq")).unwrap();
    let topic = kafka.topics().name(Topic::DeadLetter);
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(DEADLINE, consumer.recv())
        .await
        .unwrap_or_else(|_| panic!("no dead letter on {topic} within {DEADLINE:?}"))
        .unwrap();
    serde_json::from_slice(message.payload().expect("a dead letter has a payload")).unwrap()
}
