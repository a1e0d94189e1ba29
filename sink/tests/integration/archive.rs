//! The optional `events` archive: canonical events from the event topics into Parquet.

use std::time::Duration;

use kpiflow_core::KafkaConfig;
use kpiflow_schemas::{Event, Topic};
use kpiflow_sink::SinkConfig;
use tokio_util::sync::CancellationToken;

use crate::{await_committed, bootstrap, produce};

/// The schemas crate's golden sample of every event schema.
fn golden_events() -> Vec<Event> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/fixtures/events");
    let mut events: Vec<Event> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            Event::from_json(&bytes).expect("golden event decodes")
        })
        .collect();
    events.sort_by(|a, b| a.header.event_id.cmp(&b.header.event_id));
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_archived_in_the_event_table_schema() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap(),
        topic_prefix: format!("archivetest-{id}"),
        ..KafkaConfig::default()
    };
    kafka.ensure_topics().await.unwrap();
    let events = golden_events();
    assert!(events.len() >= 12, "one per schema");
    for e in &events {
        produce(&kafka, e.body.topic(), e.key(), &e.to_json()).await;
    }
    produce(
        &kafka,
        Topic::Orders,
        "shop-x",
        b"{\"schema\": \"order.placed\"}",
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = SinkConfig {
        dir: dir.path().into(),
        group_id: format!("archivetest-{id}"),
        roll_interval: Duration::from_millis(200),
        events_archive: true,
        ..SinkConfig::default()
    };
    let stop = CancellationToken::new();
    let (k, c, s) = (kafka.clone(), cfg.clone(), stop.clone());
    let task = tokio::spawn(async move {
        kpiflow_sink::run(&k, &c, None, None, None, s)
            .await
            .unwrap()
    });
    let topics = kafka.topics();
    let inputs: Vec<String> = Topic::EVENTS.iter().map(|t| topics.name(*t)).collect();
    await_committed(&kafka, &cfg.group_id, &inputs).await;
    stop.cancel();
    let stats = task.await.unwrap();
    assert_eq!(stats.event_rows as usize, events.len());
    assert_eq!(stats.events_not_archived, 1, "the undecodable record");
    assert_eq!(
        stats.dead_lettered, 0,
        "the processor dead-letters bad events, not the archive"
    );

    let got = kpiflow_sink::query(
        dir.path(),
        "SELECT event_id, schema, CAST(date AS VARCHAR) AS date, CAST(amount AS VARCHAR) AS amount \
         FROM events ORDER BY event_id",
    )
    .await
    .unwrap();
    let csv = kpiflow_sink::format_batches(&got, kpiflow_sink::OutputFormat::Csv).unwrap();
    let lines: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(lines.len(), events.len(), "{csv}");
    for (line, e) in lines.iter().zip(&events) {
        let date = e.header.event_time.date_naive().to_string();
        assert!(
            line.starts_with(&format!("{},{},{date},", e.header.event_id, e.schema())),
            "{line}"
        );
    }
    let placed = lines.iter().find(|l| l.contains(",order.placed,")).unwrap();
    assert!(placed.ends_with(",25.980000000"), "exact decimal: {placed}");
}
