//! Against a real broker (`KPIFLOW_TEST_BOOTSTRAP`, set by `scripts/test.sh`): what the
//! simulator publishes is exactly what it generated, and dead letters arrive with their reason.
//! The pull connectors run against local HTTP servers speaking each platform's API shapes
//! (modules under `tests/integration/`, recorded responses under `fixtures/<connector>/`).
//!
//! Each test uses its own random topic prefix and consumer group, so runs never see each
//! other's records.

use std::collections::BTreeMap;
use std::time::Duration;

use kpiflow_core::{ComponentMetrics, KafkaConfig};
use kpiflow_ingest::connectors::simulator::{Anomaly, Simulator, SimulatorConfig, generate};
use kpiflow_ingest::{KafkaPublisher, Publish, StopReason};
use kpiflow_schemas::{DeadLetter, Event, Topic};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod integration {
    pub(crate) mod amazon_ads;
    pub(crate) mod amazon_fba_inventory;
    pub(crate) mod amazon_sp_finances;
    pub(crate) mod amazon_sp_finances_api;
    pub(crate) mod amazon_sp_orders;
    pub(crate) mod amazon_sp_reports;
    pub(crate) mod amazon_sp_reports_api;
    pub(crate) mod cogs_file;
    pub(crate) mod config_example;
    pub(crate) mod fixture;
    pub(crate) mod google_ads;
    pub(crate) mod meta_ads;
    pub(crate) mod pipeline;
    pub(crate) mod push_config_example;
    pub(crate) mod push_http;
    pub(crate) mod push_limits;
    pub(crate) mod rig;
    pub(crate) mod shopify;
    pub(crate) mod shopify_fulfillments;
    pub(crate) mod shopify_orders;
    pub(crate) mod shopify_returns;
    pub(crate) mod threepl;
    pub(crate) mod tiktok_ads;
    pub(crate) mod tiktok_shop_orders;
    pub(crate) mod tiktok_shop_returns;
    pub(crate) mod tracking;
    pub(crate) mod walmart_connect_ads;
    pub(crate) mod walmart_orders;
    pub(crate) mod walmart_returns;
    pub(crate) mod walmart_wfs_inventory;

    use std::time::Duration;

    use kpiflow_core::ComponentMetrics;
    use kpiflow_ingest::pull::PullConnector;
    use kpiflow_ingest::{KafkaPublisher, Publish};
    use kpiflow_schemas::{DeadLetter, Event, Topic};

    /// One sync of `c` through a real broker: the events arrive on `topic` keyed by `shop` in
    /// `want_ids` order, one heartbeat on events.health; returns the dead letters.
    pub(crate) async fn pull_through_kafka(
        c: &mut PullConnector,
        topic: Topic,
        shop: &str,
        want_ids: &[&str],
    ) -> Vec<DeadLetter> {
        pull_through_kafka_prefix(c, topic, shop, want_ids, want_ids.len()).await
    }

    /// Like [`pull_through_kafka`], for `events` events of which the first are `want_ids`.
    pub(crate) async fn pull_through_kafka_prefix(
        c: &mut PullConnector,
        topic: Topic,
        shop: &str,
        want_ids: &[&str],
        events: usize,
    ) -> Vec<DeadLetter> {
        let kafka = crate::kafka();
        kafka
            .wait_until_reachable(Duration::from_secs(30))
            .await
            .expect("broker reachable");
        let publisher = KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.test")).unwrap();
        publisher.ensure_topics().await.unwrap();
        let report = c.sync_once(&publisher).await.expect("sync delivered");
        assert_eq!(report.counts.published as usize, events);
        let want = events + 1 + report.counts.dead_lettered as usize;
        // Subscribing to a topic twice is refused: `topic` may be the health topic itself.
        let mut topics = vec![topic, Topic::Health, Topic::DeadLetter];
        topics.dedup();
        let consumer = crate::consumer(&kafka, &topics);
        let (mut ids, mut beats, mut dead) = (Vec::new(), 0, Vec::new());
        for (t, key, payload) in crate::read(&kafka, &consumer, want).await {
            if t == Topic::DeadLetter {
                dead.push(serde_json::from_slice::<DeadLetter>(&payload).unwrap());
                continue;
            }
            assert_eq!(key, shop, "records are keyed by shop");
            let event = Event::from_json(&payload).expect("a valid event");
            // The health topic also carries reference values (account.health_metric).
            if t == Topic::Health && event.schema() == "source.heartbeat" {
                beats += 1;
            } else {
                assert_eq!(t, topic);
                ids.push(event.header.event_id);
            }
        }
        assert_eq!(ids.len(), events);
        assert_eq!(
            ids[..want_ids.len()],
            *want_ids,
            "one shop, one partition: Kafka keeps the order"
        );
        assert_eq!(beats, 1);
        assert_eq!(dead.len() as u64, report.counts.dead_lettered);
        dead
    }
}

fn kafka() -> KafkaConfig {
    let bootstrap = std::env::var("KPIFLOW_TEST_BOOTSTRAP")
        .unwrap_or_else(|_| panic!("set KPIFLOW_TEST_BOOTSTRAP or run scripts/test.sh"));
    KafkaConfig {
        bootstrap_servers: bootstrap,
        topic_prefix: format!("test-ingest-{}", uuid::Uuid::new_v4()),
        partitions: 3,
        ..KafkaConfig::default()
    }
}

/// A consumer of `topics` in a fresh group, reading from the beginning.
fn consumer(kafka: &KafkaConfig, topics: &[Topic]) -> StreamConsumer {
    let names: Vec<String> = topics.iter().map(|t| kafka.topics().name(*t)).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let consumer = kafka
        .consumer(&format!("test-ingest-{}", uuid::Uuid::new_v4()))
        .expect("consumer");
    consumer.subscribe(&names).expect("subscribe");
    consumer
}

/// A record read back: topic, key, payload.
type Record = (Topic, String, Vec<u8>);

/// Reads until `want` records arrived, or fails at the deadline.
async fn read(kafka: &KafkaConfig, consumer: &StreamConsumer, want: usize) -> Vec<Record> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let topics = kafka.topics();
    let mut got = Vec::with_capacity(want);
    while got.len() < want {
        let msg = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(msg)) => msg,
            Ok(Err(e)) => panic!("consuming: {e}"),
            Err(_) => panic!("only {} of {want} records arrived within 60 s", got.len()),
        };
        let topic = topics.parse(msg.topic()).expect("one of the test's topics");
        let key = String::from_utf8(msg.key().unwrap_or_default().to_vec()).expect("UTF-8 key");
        got.push((topic, key, msg.payload().unwrap_or_default().to_vec()));
    }
    got
}

#[tokio::test]
async fn a_simulation_arrives_exactly_as_generated() {
    let kafka = kafka();
    kafka
        .wait_until_reachable(Duration::from_secs(30))
        .await
        .expect("broker reachable");
    let start = "2026-03-05T17:23:00Z".parse().unwrap();
    let cfg = SimulatorConfig {
        shops: 4,
        days: 2,
        orders_per_shop_per_day: 40,
        start: Some(start),
        anomalies: vec![
            Anomaly::LateShipmentSpike {
                shop: 0,
                day: 1,
                late_share: 0.3,
                hours: 24,
            },
            Anomaly::Stockout {
                shop: 1,
                day: 0,
                sku: 0,
                days: 1,
            },
            Anomaly::RoasCollapse {
                shop: 2,
                day: 1,
                factor: 0.3,
            },
        ],
        ..SimulatorConfig::default()
    };
    let expected = generate(&cfg, start);
    assert!(expected.len() > 500, "{} events", expected.len());

    let publisher = KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.test"))
        .expect("publisher")
        .with_max_in_flight(64);
    let mut sim = Simulator::new(cfg).expect("valid config");
    let stats = sim
        .run(&publisher, CancellationToken::new())
        .await
        .expect("run delivers everything");
    assert_eq!(stats.stop, StopReason::Exhausted);
    assert_eq!(stats.published, expected.len() as u64);

    // Nothing else is on these topics, so exactly the published records must come back.
    let consumer = consumer(&kafka, &Topic::EVENTS);
    let got = read(&kafka, &consumer, expected.len()).await;

    // Per topic and shop, Kafka keeps order (one key, one partition; idempotent producer), so
    // each sequence must equal the generated one filtered the same way.
    let mut want: BTreeMap<(Topic, String), Vec<Vec<u8>>> = BTreeMap::new();
    for e in &expected {
        want.entry((e.body.topic(), e.key().to_string()))
            .or_default()
            .push(e.to_json());
    }
    let mut have: BTreeMap<(Topic, String), Vec<Vec<u8>>> = BTreeMap::new();
    for (topic, key, payload) in got {
        let event = Event::from_json(&payload).expect("a valid event");
        assert_eq!(event.key(), key, "the record key is the shop");
        assert_eq!(
            event.body.topic(),
            topic,
            "{} on the wrong topic",
            event.header.event_id
        );
        have.entry((topic, key)).or_default().push(payload);
    }
    let counts = |m: &BTreeMap<(Topic, String), Vec<Vec<u8>>>| -> BTreeMap<Topic, usize> {
        let mut c = BTreeMap::new();
        for ((t, _), v) in m {
            *c.entry(*t).or_default() += v.len();
        }
        c
    };
    assert_eq!(counts(&have), counts(&want));
    assert_eq!(
        have.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, records) in &want {
        assert!(
            have[k] == *records,
            "{k:?}: records differ from the generated ones"
        );
    }
}

#[tokio::test]
async fn dead_letters_arrive_with_their_reason() {
    let kafka = kafka();
    kafka
        .wait_until_reachable(Duration::from_secs(30))
        .await
        .expect("broker reachable");
    let publisher =
        KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.test")).expect("publisher");
    publisher.ensure_topics().await.expect("topics");
    let raw = br#"{"schema":"order.placed","payload":{"total":{"amount":"-3.x"}}}"#;
    let reason = r#"order.placed: field `payload.total.amount`: expected a decimal string such as "12.34", got "-3.x""#;
    publisher
        .dead_letter("ingest.test", "invalid", reason, raw)
        .await
        .expect("dead letter accepted");
    publisher.flush().await.expect("dead letter delivered");

    let consumer = consumer(&kafka, &[Topic::DeadLetter]);
    let got = read(&kafka, &consumer, 1).await;
    let (topic, key, payload) = &got[0];
    assert_eq!(*topic, Topic::DeadLetter);
    assert_eq!(key, "ingest.test");
    let dl: DeadLetter = serde_json::from_slice(payload).expect("a DeadLetter");
    assert_eq!(dl.stage, "ingest.test");
    assert_eq!(dl.reason_kind, "invalid");
    assert_eq!(dl.reason, reason);
    assert_eq!(dl.payload.as_bytes(), raw);
}

/// Generation and publishing throughput, for the record (16 shops x 500 orders a day for a
/// week, about 300 000 events):
/// `cargo test --release -p kpiflow-ingest --test integration -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn publish_throughput() {
    let kafka = kafka();
    kafka
        .wait_until_reachable(Duration::from_secs(30))
        .await
        .expect("broker reachable");
    let cfg = SimulatorConfig {
        shops: 16,
        orders_per_shop_per_day: 500,
        start: Some("2026-03-05T17:23:00Z".parse().unwrap()),
        ..SimulatorConfig::demo()
    };
    let began = std::time::Instant::now();
    let events = generate(&cfg, cfg.start.unwrap());
    let generated = began.elapsed();
    let publisher =
        KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.test")).expect("publisher");
    let stats = Simulator::new(cfg)
        .expect("valid config")
        .run(&publisher, CancellationToken::new())
        .await
        .expect("run");
    eprintln!(
        "generate: {} events in {generated:?} ({:.0} events/s); \
         run: {} events in {:?} ({:.0} events/s: topic set-up, generation, publishing, flush)",
        events.len(),
        events.len() as f64 / generated.as_secs_f64(),
        stats.published,
        stats.elapsed,
        stats.events_per_second()
    );
}
