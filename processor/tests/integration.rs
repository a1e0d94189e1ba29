//! The processor against a real Kafka broker: bad and late records are dead-lettered with
//! their reason, and everything else is still counted, once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kpiflow_core::KafkaConfig;
use kpiflow_processor::ProcessorConfig;
use kpiflow_processor::checkpoint::Checkpoint;
use kpiflow_processor::config::CheckpointConfig;
use kpiflow_schemas::{
    Channel, DeadLetter, Decimal, Event, EventHeader, Fulfilment, KpiUpdate, Money, OrderPlaced,
    SourceTz, Topic,
};
use object_store::ObjectStoreExt;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

fn kafka() -> KafkaConfig {
    let bootstrap = std::env::var("KPIFLOW_TEST_BOOTSTRAP")
        .expect("set KPIFLOW_TEST_BOOTSTRAP to a Kafka broker, or run scripts/test.sh");
    let prefix = format!("proc-{}", uuid::Uuid::new_v4().simple());
    toml::from_str(&format!(
        "bootstrap_servers = \"{bootstrap}\"\ntopic_prefix = \"{prefix}\""
    ))
    .unwrap()
}

fn placed(id: &str, at: &str, amount: &str) -> Event {
    let t: DateTime<Utc> = at.parse().unwrap();
    Event::new(
        EventHeader {
            event_id: id.into(),
            source: "test".into(),
            shop: "shop-1".into(),
            channel: Channel::Shopify,
            marketplace: "US".into(),
            sku: None,
            event_time: t,
            source_tz: SourceTz::US_PACIFIC,
            ingest_time: t,
        },
        OrderPlaced {
            order_id: format!("o-{id}"),
            total: Money::usd(amount),
            units: 1,
            fulfilment: Fulfilment::Merchant,
            ship_by: None,
            deliver_by: None,
        },
    )
}

async fn send(producer: &FutureProducer, topic: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key("shop-1").payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// `base` for a test on `kafka`: its own group, checkpoints under `state`, quick flushes and
/// a short idle timeout (the last windows are published soon after the input ends).
fn on_broker(
    kafka: &KafkaConfig,
    state: &std::path::Path,
    base: ProcessorConfig,
) -> ProcessorConfig {
    ProcessorConfig {
        group_id: format!("{}-processor", kafka.topic_prefix),
        checkpoint: kpiflow_processor::config::CheckpointConfig {
            dir: state.into(),
            ..Default::default()
        },
        idle_timeout: Duration::from_millis(500),
        flush_interval: Duration::from_millis(200),
        ..base
    }
}

/// The processor with the default catalog running on `kafka` (checkpoints in the returned
/// directory) until the token is cancelled.
fn start(
    kafka: &KafkaConfig,
) -> (
    tempfile::TempDir,
    CancellationToken,
    tokio::task::JoinHandle<
        Result<kpiflow_processor::run::RunStats, kpiflow_processor::ProcessorError>,
    >,
) {
    let state = tempfile::tempdir().unwrap();
    let cfg = on_broker(kafka, state.path(), ProcessorConfig::default());
    let stop = CancellationToken::new();
    let (k, s) = (kafka.clone(), stop.clone());
    let task = tokio::spawn(async move { kpiflow_processor::run::run(&k, &cfg, None, s).await });
    (state, stop, task)
}

/// The KPI updates read until shop-1's GMV of the Pacific business day of 2026-11-02 is
/// `want`.
fn gmv_of_nov_2_reaches(kafka: &KafkaConfig, want: &Decimal) -> Vec<KpiUpdate> {
    let day: DateTime<Utc> = "2026-11-02T08:00:00Z".parse().unwrap();
    read_until(
        kafka,
        &kafka.topics().name(Topic::KpiUpdates),
        |b| KpiUpdate::from_json(b).unwrap(),
        |got: &[KpiUpdate]| {
            got.iter().any(|u| {
                u.kpi == "gmv"
                    && u.scope.shop == "shop-1"
                    && u.window.name == "business_day"
                    && u.window.start == day
                    && &u.numerator == want
            })
        },
    )
}

/// Reads `topic` from the start until `done` holds for what was read, or the deadline passes.
fn read_until<T>(
    kafka: &KafkaConfig,
    topic: &str,
    decode: impl Fn(&[u8]) -> T,
    done: impl Fn(&[T]) -> bool,
) -> Vec<T> {
    let mut cfg = kafka.client_config().unwrap();
    cfg.set(
        "group.id",
        format!("reader-{}", uuid::Uuid::new_v4().simple()),
    )
    .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = cfg.create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while !done(&got) {
        assert!(
            Instant::now() < deadline,
            "{topic}: condition not met within 60s ({} records read)",
            got.len()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            got.push(decode(m.payload().unwrap_or_default()));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_late_records_are_dead_lettered_and_the_rest_is_counted_once() {
    let kafka = kafka();
    kafka.ensure_topics().await.unwrap();
    let topics = kafka.topics();
    let orders = topics.name(Topic::Orders);
    let producer = kafka.producer().unwrap();

    let a = placed("a", "2026-11-02T18:00:00Z", "10.00");
    send(&producer, &orders, &a.to_json()).await;
    send(&producer, &orders, b"{not json").await;
    let mut bad_amount: serde_json::Value =
        serde_json::from_slice(&placed("x", "2026-11-02T18:05:00Z", "1.00").to_json()).unwrap();
    bad_amount["payload"]["total"]["amount"] = "-3.x".into();
    send(
        &producer,
        &orders,
        &serde_json::to_vec(&bad_amount).unwrap(),
    )
    .await;
    let mut euro = placed("e", "2026-11-02T18:10:00Z", "7.00");
    if let kpiflow_schemas::EventBody::OrderPlaced(o) = &mut euro.body {
        o.total.currency = "EUR".into();
    }
    send(&producer, &orders, &euro.to_json()).await;
    send(&producer, &orders, &a.to_json()).await; // a retried delivery
    send(
        &producer,
        &orders,
        &placed("b", "2026-11-02T19:00:00Z", "5.50").to_json(),
    )
    .await;

    let (_state, stop, task) = start(&kafka);

    // The valid orders are counted once each: GMV of the Pacific day of Nov 2 is 15.50.
    let want = Decimal::parse("15.50").unwrap();
    let updates = gmv_of_nov_2_reaches(&kafka, &want);
    assert!(
        updates
            .iter()
            .all(|u| u.numerator <= want || u.kpi != "gmv"),
        "nothing counted twice"
    );

    // Once the watermark has moved past, an order placed 10 days earlier is too late.
    read_until(
        &kafka,
        &topics.name(Topic::KpiUpdates),
        |b| KpiUpdate::from_json(b).unwrap(),
        |got: &[KpiUpdate]| {
            got.iter()
                .any(|u| u.watermark >= "2026-11-02T18:00:00Z".parse::<DateTime<Utc>>().unwrap())
        },
    );
    send(
        &producer,
        &orders,
        &placed("old", "2026-10-23T18:00:00Z", "99.00").to_json(),
    )
    .await;

    let letters = read_until(
        &kafka,
        &topics.name(Topic::DeadLetter),
        |b| serde_json::from_slice::<DeadLetter>(b).unwrap(),
        |got: &[DeadLetter]| got.len() >= 4,
    );
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    let reasons: Vec<(&str, &str)> = letters
        .iter()
        .map(|l| (l.reason_kind.as_str(), l.reason.as_str()))
        .collect();
    assert_eq!(letters.len(), 4, "{reasons:#?}");
    assert!(
        reasons[0].0 == "invalid" && reasons[0].1.starts_with("event: not a JSON event object"),
        "{reasons:#?}"
    );
    assert_eq!(
        reasons[1],
        (
            "invalid",
            r#"order.placed: field `payload.total.amount`: expected a decimal string such as "12.34", got "-3.x""#
        )
    );
    assert!(
        reasons[2].0 == "currency"
            && reasons[2]
                .1
                .contains(r#""EUR" is not the pipeline currency "USD""#),
        "{reasons:#?}"
    );
    assert!(
        reasons[3].0 == "late"
            && reasons[3]
                .1
                .contains("allowed lateness for orders is 3days"),
        "{reasons:#?}"
    );
    // Dead letters keep the raw record and where it came from.
    assert_eq!(letters[0].payload, "{not json");
    assert_eq!(letters[0].topic.as_deref(), Some(orders.as_str()));
    assert_eq!(stats.duplicates, 1);
    assert_eq!(stats.dead_lettered, 4);
}

/// A record too large to carry whole in a dead letter (5 MB; the input topic accepts it) used
/// to stop the processor: its letter failed with MessageSizeTooLarge, the processor exited,
/// restarted, read it again and exited again. Now the letter keeps the record's start, size
/// and hash, and the orders after it are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_a_dead_letter_is_cut_and_the_processor_goes_on() {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let kafka = kafka();
    kafka.ensure_topics().await.unwrap();
    let topics = kafka.topics();
    let orders = topics.name(Topic::Orders);
    let admin: AdminClient<_> = kafka.client_config().unwrap().create().unwrap();
    let raised =
        AlterConfig::new(ResourceSpecifier::Topic(&orders)).set("max.message.bytes", "8388608");
    for r in admin
        .alter_configs(&[raised], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let mut big_producer = kafka.client_config().unwrap();
    big_producer.set("message.max.bytes", "10000000");
    let big_producer: FutureProducer = big_producer.create().unwrap();
    let mut big = br#"{"event_id":"big","pad":""#.to_vec();
    big.resize(5_000_000 - 2, b'x');
    big.extend_from_slice(br#""}"#);
    assert_eq!(big.len(), 5_000_000);
    send(&big_producer, &orders, &big).await;
    let producer = kafka.producer().unwrap();
    send(
        &producer,
        &orders,
        &placed("after", "2026-11-02T18:00:00Z", "12.00").to_json(),
    )
    .await;

    let (_state, stop, task) = start(&kafka);

    let letters = read_until(
        &kafka,
        &topics.name(Topic::DeadLetter),
        |b| (b.len(), serde_json::from_slice::<DeadLetter>(b).unwrap()),
        |got: &[(usize, DeadLetter)]| !got.is_empty(),
    );
    let (size, letter) = &letters[0];
    assert!(*size <= 900 * 1024, "a letter of {size} bytes");
    assert_eq!(letter.reason_kind, "invalid", "{}", letter.reason);
    assert!(letter.payload_truncated);
    assert_eq!(letter.payload_bytes, Some(5_000_000));
    assert_eq!(letter.payload_sha256.as_ref().map(String::len), Some(64));
    assert!(
        letter
            .payload
            .starts_with(r#"{"event_id":"big","pad":"xxx"#)
    );
    assert_eq!(
        (letter.topic.as_deref(), letter.offset),
        (Some(orders.as_str()), Some(0))
    );
    // The order after it is counted: GMV 12.00 on the Pacific day of Nov 2.
    gmv_of_nov_2_reaches(&kafka, &Decimal::parse("12.00").unwrap());
    assert!(!task.is_finished(), "the processor stopped");
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(stats.dead_lettered, 1);
}

/// Sends `event` keyed by its shop as kpiflow's producer would, or to partition `to`; returns
/// the partition it landed on.
async fn send_to(producer: &FutureProducer, topic: &str, event: &Event, to: Option<i32>) -> i32 {
    let payload = event.to_json();
    let mut record = FutureRecord::to(topic).key(event.key()).payload(&payload);
    if let Some(p) = to {
        record = record.partition(p);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap()
        .partition
}

/// A valid order of a shop read from a partition that does not own the shop used to replace
/// the shop's values by that one order (two partition tasks publishing the same keys, the
/// last one winning). kpiflow's producers put a shop where Kafka's default partitioner does,
/// and the processor dead-letters an event found anywhere else, naming both partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_on_a_partition_that_does_not_own_its_shop_is_dead_lettered() {
    let kafka = kafka();
    assert_eq!(kafka.partitions, 3);
    kafka.ensure_topics().await.unwrap();
    let topics = kafka.topics();
    let orders = topics.name(Topic::Orders);
    let producer = kafka.producer().unwrap();

    // Where each shop belongs, worked out from Kafka's murmur2 (seed 0x9747b28c, sign bit
    // cleared, modulo 3) outside this code base: shop-1 -> 2, shop-2 -> 1, shop-3 -> 0.
    // librdkafka's partitioner must agree, and so must the processor's check.
    let mut at = Vec::new();
    for (n, shop, owner) in [(1, "shop-1", 2), (2, "shop-2", 1), (3, "shop-3", 0)] {
        let mut e = placed(&format!("p{n}"), "2026-11-02T18:00:00Z", "10.00");
        e.header.shop = shop.into();
        at.push(send_to(&producer, &orders, &e, None).await);
        assert_eq!(kpiflow_core::kafka::shop_partition(shop, 3), owner);
    }
    assert_eq!(
        at,
        [2, 1, 0],
        "kpiflow's producer partitions as Kafka's default does"
    );
    // A 5.00 order of shop-1 on partition 0, as a producer partitioning otherwise would put it.
    let stray = placed("stray", "2026-11-02T18:30:00Z", "5.00");
    assert_eq!(send_to(&producer, &orders, &stray, Some(0)).await, 0);
    // And one more on its own partition: 2.50.
    let own = placed("own", "2026-11-02T19:00:00Z", "2.50");
    assert_eq!(send_to(&producer, &orders, &own, None).await, 2);

    let (_state, stop, task) = start(&kafka);

    let letters = read_until(
        &kafka,
        &topics.name(Topic::DeadLetter),
        |b| serde_json::from_slice::<DeadLetter>(b).unwrap(),
        |got: &[DeadLetter]| !got.is_empty(),
    );
    assert_eq!(letters[0].reason_kind, "misrouted", "{}", letters[0].reason);
    assert!(
        letters[0].reason.starts_with(&format!(
            r#"order.placed stray: shop "shop-1" belongs to partition 2 of {orders} (murmur2 of the shop id over 3 partitions"#
        )) && letters[0].reason.contains("but was read from partition 0"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].partition, Some(0));
    // shop-1's GMV of the Pacific day of Nov 2 is its own partition's: 10.00 + 2.50 = 12.50,
    // and no value of shop-1 comes from partition 0's task (which would say 5.00).
    let day: DateTime<Utc> = "2026-11-02T08:00:00Z".parse().unwrap();
    let want = Decimal::parse("12.50").unwrap();
    let gmv_of_shop_1 = |u: &KpiUpdate| {
        u.kpi == "gmv"
            && u.scope.shop == "shop-1"
            && u.window.name == "business_day"
            && u.window.start == day
    };
    let updates = read_until(
        &kafka,
        &topics.name(Topic::KpiUpdates),
        |b| KpiUpdate::from_json(b).unwrap(),
        |got: &[KpiUpdate]| got.iter().any(|u| gmv_of_shop_1(u) && u.numerator == want),
    );
    let five = Decimal::parse("5.00").unwrap();
    assert!(
        !updates
            .iter()
            .any(|u| gmv_of_shop_1(u) && u.numerator == five),
        "a competing value from partition 0"
    );
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(stats.dead_lettered, 1);
}

/// Task `p` reads partition `p` of every event topic, so a shop must have the same partition
/// number in each: with `events.orders` on 2 partitions and the others on 3, a shop's orders
/// and ads would meet in different tasks. The processor refuses to start, naming the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_topics_with_different_partition_counts_stop_the_processor_naming_them() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let kafka = kafka();
    let topics = kafka.topics();
    let orders = topics.name(Topic::Orders);
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().unwrap().create().unwrap();
    for r in admin
        .create_topics(
            &[NewTopic::new(&orders, 2, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap()
    {
        r.unwrap();
    }
    kafka.ensure_topics().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = on_broker(&kafka, state.path(), ProcessorConfig::default());
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        kpiflow_processor::run::run(&kafka, &cfg, None, CancellationToken::new()),
    )
    .await
    .expect("the processor neither started nor stopped")
    .unwrap_err();
    let err = err.to_string();
    let ads = topics.name(Topic::Ads);
    assert!(
        err.starts_with("event topics: the event topics have different partition counts (")
            && err.contains(&format!("{ads}: 3"))
            && err.contains(&format!("{orders}: 2")),
        "{err}"
    );
}

/// The hostile-input corpus (`processor/fixtures/hostile/`, one record a file, plus a
/// generated 300 KB record) published on `events.orders` in the middle of a simulated
/// reference stream: each hostile record is one dead letter with its kind and the field and
/// value named, the processor goes on, and every KPI key of the reference shops has exactly
/// the value of a clean run of the same stream without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_are_each_one_dead_letter_and_every_reference_kpi_equals_the_clean_run() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hostile");
    let manifest = std::fs::read_to_string(dir.join("corpus.tsv")).unwrap();
    // (record, dead-letter kind, substrings of the reason), in publishing order.
    let mut hostile: Vec<(String, Vec<u8>, String, Vec<String>)> = manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut cols = l.split('\t');
            let file = cols.next().unwrap().to_string();
            let kind = cols.next().unwrap().to_string();
            let parts = cols.filter(|p| !p.is_empty()).map(String::from).collect();
            let record = std::fs::read(dir.join(&file)).unwrap();
            (file, record, kind, parts)
        })
        .collect();
    assert_eq!(hostile.len(), 21, "corpus.tsv lists every file");
    let mut big = br#"{"event_id":"h-big","pad":""#.to_vec();
    big.resize(300_000, b'x');
    big.extend_from_slice(br#""}"#);
    hostile.push(("generated 300 KB".into(), big, "invalid".into(), Vec::new()));

    // The reference: two simulated shops over two days, shop-001 (Amazon) among them.
    let sim = kpiflow_ingest::connectors::simulator::SimulatorConfig {
        seed: 9,
        shops: 2,
        days: 2,
        orders_per_shop_per_day: 40,
        late_rate: 0.0,
        ..Default::default()
    };
    let events = kpiflow_ingest::connectors::simulator::generate(
        &sim,
        "2026-11-02T08:00:00Z".parse().unwrap(),
    );
    let half = events.len() / 2;
    // One valid order of shop-001 carries a field the schema lacks: unknown fields are
    // ignored, so it counts, as its plain copy counts in the clean run.
    let extra = placed("h-extra", "2026-11-02T18:40:00Z", "2.25");
    let mut with_field: serde_json::Value = serde_json::from_slice(&extra.to_json()).unwrap();
    with_field["payload"]["gift_wrap"] = true.into();
    let with_field = serde_json::to_vec(&with_field).unwrap();

    // Both runs on one partition: ownership (tested above) is not what this corpus is about.
    let run = |records: Vec<(Topic, Vec<u8>)>| async move {
        let mut kafka = kafka();
        kafka.partitions = 1;
        kafka.ensure_topics().await.unwrap();
        let producer = kafka.producer().unwrap();
        for (topic, record) in &records {
            send(&producer, &kafka.topics().name(*topic), record).await;
        }
        let (_state, stop, task) = start(&kafka);
        caught_up(&kafka, &format!("{}-processor", kafka.topic_prefix)).await;
        topics::outputs_settle(&kafka, Duration::from_secs(2)).await;
        assert!(!task.is_finished(), "the processor stopped");
        stop.cancel();
        let stats = task.await.unwrap().unwrap();
        (kafka, stats)
    };
    let as_records = |events: &[Event]| -> Vec<(Topic, Vec<u8>)> {
        events
            .iter()
            .map(|e| (e.body.topic(), e.to_json()))
            .collect()
    };
    let mut clean = as_records(&events[..half]);
    clean.push((Topic::Orders, extra.to_json()));
    clean.extend(as_records(&events[half..]));
    let mut attacked = as_records(&events[..half]);
    let (before, after) = hostile.split_at(hostile.len() / 2);
    attacked.extend(before.iter().map(|h| (Topic::Orders, h.1.clone())));
    attacked.push((Topic::Orders, with_field));
    attacked.extend(after.iter().map(|h| (Topic::Orders, h.1.clone())));
    attacked.extend(as_records(&events[half..]));

    let (clean, clean_stats) = run(clean).await;
    let (attacked, stats) = run(attacked).await;
    assert_eq!(
        clean_stats.dead_lettered, 0,
        "the reference stream is clean"
    );

    // Every hostile record is one dead letter, in order, with its kind and reason.
    let letters: Vec<DeadLetter> = topics::read_all(&attacked, Topic::DeadLetter)
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(letters.len(), hostile.len(), "{reasons:#?}");
    assert_eq!(stats.dead_lettered, hostile.len() as u64);
    for (letter, (file, _, kind, parts)) in letters.iter().zip(&hostile) {
        assert_eq!(&letter.reason_kind, kind, "{file}: {}", letter.reason);
        for part in parts {
            assert!(
                letter.reason.contains(part.as_str()),
                "{file}: {part:?} not in {}",
                letter.reason
            );
        }
    }
    // The oversized one keeps its start, size and hash.
    let big = letters.last().unwrap();
    assert!(big.payload_truncated);
    assert_eq!(big.payload_bytes, Some(300_002));

    // Every KPI key of the clean run, with the same value, and no other key.
    let latest = |kafka: &KafkaConfig| -> std::collections::BTreeMap<String, String> {
        let mut newest = std::collections::BTreeMap::<String, KpiUpdate>::new();
        for raw in topics::read_all(kafka, Topic::KpiUpdates) {
            let u = KpiUpdate::from_json(&raw).unwrap();
            if newest.get(&u.key()).is_none_or(|o| u.revision > o.revision) {
                newest.insert(u.key(), u);
            }
        }
        newest
            .into_iter()
            .map(|(k, u)| (k, format!("{} / {:?}", u.numerator, u.denominator)))
            .collect()
    };
    let (want, got) = (latest(&clean), latest(&attacked));
    assert!(want.len() > 1000, "only {} KPI keys", want.len());
    let differing: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {:?}, clean {v}", got.get(k)))
        .chain(
            got.keys()
                .filter(|k| !want.contains_key(*k))
                .map(|k| format!("{k}: not in the clean run")),
        )
        .collect();
    assert!(
        differing.is_empty(),
        "{} of {} keys differ, e.g. {:#?}",
        differing.len(),
        want.len(),
        &differing[..differing.len().min(5)]
    );
}

/// Waits until `group` has committed the end of every event partition.
async fn caught_up(kafka: &KafkaConfig, group: &str) {
    let topics = kafka.topics();
    let inputs: Vec<String> = Topic::EVENTS.iter().map(|t| topics.name(*t)).collect();
    eventually(Duration::from_millis(100), || {
        let lag = tokio::task::block_in_place(|| {
            kafka.group_lag(group, &inputs, Duration::from_secs(10))
        });
        match &lag {
            Ok(parts) if !parts.is_empty() && parts.iter().all(|p| p.lag() == 0) => Ok(()),
            _ => Err(format!("{group} did not catch up: {lag:?}")),
        }
    })
    .await;
}

/// Polls `check` every `every` until it is `Ok`; fails with its last error after 60 s.
async fn eventually(every: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Err(problem) = check() else {
            return;
        };
        assert!(Instant::now() < deadline, "{problem}");
        tokio::time::sleep(every).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_processor_restores_its_checkpoint_and_reads_only_what_is_new() {
    let state = tempfile::tempdir().unwrap();
    restart_restores_the_checkpoint(CheckpointConfig {
        dir: state.path().into(),
        interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
}

/// The same over S3 (the local test server): a cluster without a shared volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_in_object_storage_restore_like_local_ones() {
    let Some((dir, object_store)) = kpiflow_core::storage::test_location("processor") else {
        return;
    };
    restart_restores_the_checkpoint(CheckpointConfig {
        dir,
        interval: Duration::from_millis(200),
        object_store,
    })
    .await;
}

/// How many checkpoints `cfg` holds for `group`.
async fn checkpoints(cfg: &CheckpointConfig, group: &str) -> usize {
    let location = cfg.dir.join(group);
    match location.open("test", &cfg.object_store).unwrap() {
        None => std::fs::read_dir(location.local().unwrap())
            .unwrap()
            .count(),
        Some(bucket) => {
            use futures::TryStreamExt;
            let prefix = bucket.key("");
            let listed: Vec<_> = bucket
                .store()
                .list(Some(&prefix))
                .try_collect()
                .await
                .unwrap();
            listed.len()
        }
    }
}

/// A processor checkpoints into `checkpoint`, stops, and a second one restores from it: it
/// reads only the records after the checkpoint and its values continue the first one's.
async fn restart_restores_the_checkpoint(checkpoint: CheckpointConfig) {
    let kafka = kafka();
    kafka.ensure_topics().await.unwrap();
    let topics = kafka.topics();
    let orders = topics.name(Topic::Orders);
    let producer = kafka.producer().unwrap();
    let cfg = ProcessorConfig {
        group_id: format!("{}-processor", kafka.topic_prefix),
        idle_timeout: Duration::from_millis(500),
        flush_interval: Duration::from_millis(200),
        checkpoint,
        kpis: vec!["orders".into()],
        ..ProcessorConfig::default()
    };
    let first: Vec<Event> = (0..10)
        .map(|i| placed(&format!("a{i}"), "2026-11-02T18:00:00Z", "1.00"))
        .collect();
    for e in &first {
        send(&producer, &orders, &e.to_json()).await;
    }
    let run = |cfg: ProcessorConfig| {
        let kafka = kafka.clone();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task =
            tokio::spawn(async move { kpiflow_processor::run::run(&kafka, &cfg, None, s).await });
        (stop, task)
    };
    let (stop, task) = run(cfg.clone());
    caught_up(&kafka, &cfg.group_id).await;
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(stats.received, 10);
    assert_eq!(
        checkpoints(&cfg.checkpoint, &cfg.group_id).await,
        1,
        "one checkpoint: all orders of shop-1 are on one partition"
    );

    // Five new orders, plus the first ten delivered again by a retrying producer.
    for i in 0..5 {
        let e = placed(&format!("b{i}"), "2026-11-02T19:00:00Z", "1.00");
        send(&producer, &orders, &e.to_json()).await;
    }
    for e in &first {
        send(&producer, &orders, &e.to_json()).await;
    }
    let (stop, task) = run(cfg.clone());
    caught_up(&kafka, &cfg.group_id).await;
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    // Only what came after the checkpoint was read; the re-sent orders counted once.
    assert_eq!(stats.received, 15);
    assert_eq!(stats.duplicates, 10);
    let day = |u: &KpiUpdate| {
        u.kpi == "orders"
            && u.window.name == "business_day"
            && u.window.start == "2026-11-02T08:00:00Z".parse::<DateTime<Utc>>().unwrap()
    };
    let updates = read_until(
        &kafka,
        &topics.name(Topic::KpiUpdates),
        |b| KpiUpdate::from_json(b).unwrap(),
        |got: &[KpiUpdate]| {
            got.iter()
                .any(|u| day(u) && u.numerator == Decimal::from_i64(15))
        },
    );
    let newest = updates
        .iter()
        .filter(|u| day(u))
        .max_by_key(|u| u.revision)
        .unwrap();
    assert_eq!(newest.numerator, Decimal::from_i64(15));
}

/// A processor killed sooner than `checkpoint.interval` after its start (a crash loop) has
/// still checkpointed: the first checkpoint after an assignment comes within about a second,
/// so the next start reads nothing twice. Here the interval is an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_before_its_checkpoint_interval_has_checkpointed_already() {
    let kafka = kafka();
    kafka.ensure_topics().await.unwrap();
    let orders = kafka.topics().name(Topic::Orders);
    let producer = kafka.producer().unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = ProcessorConfig {
        kpis: vec!["orders".into()],
        checkpoint: CheckpointConfig {
            dir: state.path().into(),
            interval: Duration::from_secs(3600),
            ..Default::default()
        },
        ..on_broker(&kafka, state.path(), ProcessorConfig::default())
    };
    for i in 0..10 {
        let e = placed(&format!("c{i}"), "2026-11-02T18:00:00Z", "1.00");
        send(&producer, &orders, &e.to_json()).await;
    }
    let run = |cfg: ProcessorConfig| spawn_processor(&kafka, cfg);
    let (_stop, _, task) = run(cfg.clone());
    // Offsets are committed only after a checkpoint: caught up means checkpointed.
    caught_up(&kafka, &cfg.group_id).await;
    assert_eq!(checkpoints(&cfg.checkpoint, &cfg.group_id).await, 1);
    // Killed: no final checkpoint, no clean shutdown.
    task.abort();
    let _ = task.await;

    // The next start restores that checkpoint and reads only the 5 orders sent after it.
    let (stop, ready, task) = run(cfg.clone());
    await_ready(&ready).await;
    for i in 0..5 {
        let e = placed(&format!("d{i}"), "2026-11-02T19:00:00Z", "1.00");
        send(&producer, &orders, &e.to_json()).await;
    }
    caught_up(&kafka, &cfg.group_id).await;
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(
        (stats.received, stats.duplicates),
        (5, 0),
        "the restart began at the early checkpoint"
    );
}

/// The processor running `cfg` on `kafka` until its token is cancelled, with its readiness
/// flag (set once its partitions are assigned and restored).
fn spawn_processor(
    kafka: &KafkaConfig,
    cfg: ProcessorConfig,
) -> (
    CancellationToken,
    Arc<AtomicBool>,
    tokio::task::JoinHandle<
        Result<kpiflow_processor::run::RunStats, kpiflow_processor::ProcessorError>,
    >,
) {
    let kafka = kafka.clone();
    let stop = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let (s, r) = (stop.clone(), Some(Arc::clone(&ready)));
    let task = tokio::spawn(async move { kpiflow_processor::run::run(&kafka, &cfg, r, s).await });
    (stop, ready, task)
}

/// Waits until a processor's readiness flag is set.
async fn await_ready(ready: &AtomicBool) {
    eventually(Duration::from_millis(10), || {
        ready
            .load(Ordering::Relaxed)
            .then_some(())
            .ok_or_else(|| "never assigned".to_string())
    })
    .await;
}

/// Waits until partition `p`'s checkpoint covers the orders topic up to offset `next`.
async fn await_checkpoint(
    store: &dyn kpiflow_processor::checkpoint::CheckpointStore,
    p: i32,
    next: i64,
) {
    eventually(Duration::from_millis(20), || {
        let covered = store
            .load(p)
            .unwrap()
            .and_then(|c| c.offset("events.orders"));
        (covered == Some(next))
            .then_some(())
            .ok_or_else(|| format!("checkpoint of partition {p} covers {covered:?}, not {next}"))
    })
    .await;
}

/// A member checkpoints the partitions revoked from it before they are handed over, so their
/// next owner starts where it stopped, not at its last scheduled checkpoint. The member has
/// applied 5 orders that its schedule would checkpoint only 16 s later when a second member
/// joins; the (eager) rebalance revokes every partition of every member, so whichever member
/// then owns the shop's partition, its checkpoint covers the 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_partitions_are_checkpointed_before_the_hand_over() {
    let kafka = kafka();
    kafka.ensure_topics().await.unwrap();
    let topics = kafka.topics();
    let orders = topics.name(Topic::Orders);
    let producer = kafka.producer().unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = ProcessorConfig {
        kpis: vec!["orders".into()],
        checkpoint: CheckpointConfig {
            dir: state.path().into(),
            interval: Duration::from_secs(3600),
            ..Default::default()
        },
        ..on_broker(&kafka, state.path(), ProcessorConfig::default())
    };
    let store = kpiflow_processor::checkpoint::open(&cfg.checkpoint, &cfg.group_id).unwrap();
    let p = kpiflow_core::kafka::shop_partition("shop-1", kafka.partitions);
    let run = |cfg: ProcessorConfig| spawn_processor(&kafka, cfg);
    let mut sent: i64 = 0;
    let order = |i: i64| placed(&format!("r{i}"), "2026-11-02T18:00:00Z", "1.00").to_json();

    let (stop_a, ready_a, task_a) = run(cfg.clone());
    await_ready(&ready_a).await;
    let assigned_at = Instant::now();
    // Scheduled checkpoints come 1, 3, 7, 15 and 31 s after the assignment. One order at a
    // time, each awaited in the checkpoint after it, until the one at 15 s.
    while assigned_at.elapsed() < Duration::from_secs(14) {
        send(&producer, &orders, &order(sent)).await;
        sent += 1;
        await_checkpoint(store.as_ref(), p, sent).await;
    }
    // Five more, applied (their KPI update is out), not yet checkpointed.
    for _ in 0..5 {
        send(&producer, &orders, &order(sent)).await;
        sent += 1;
    }
    let day: DateTime<Utc> = "2026-11-02T08:00:00Z".parse().unwrap();
    read_until(
        &kafka,
        &topics.name(Topic::KpiUpdates),
        |b| KpiUpdate::from_json(b).unwrap(),
        |got: &[KpiUpdate]| {
            got.iter().any(|u| {
                u.kpi == "orders"
                    && u.window.name == "business_day"
                    && u.window.start == day
                    && u.numerator == Decimal::from_i64(sent)
            })
        },
    );
    let (stop_b, ready_b, task_b) = run(cfg.clone());
    await_ready(&ready_b).await;
    let covered = store
        .load(p)
        .unwrap()
        .and_then(|c| c.offset("events.orders"));
    assert!(
        assigned_at.elapsed() < Duration::from_secs(31),
        "inconclusive: the next scheduled checkpoint may have come first"
    );
    assert_eq!(
        covered,
        Some(sent),
        "the revoked partition's checkpoint covers every order applied"
    );

    stop_b.cancel();
    stop_a.cancel();
    let (a, b) = (
        task_a.await.unwrap().unwrap(),
        task_b.await.unwrap().unwrap(),
    );
    assert_eq!(a.duplicates + b.duplicates, 0);
}

/// The object-storage store on its own: round trip, newest wins, a corrupt object is refused
/// with its URL, and all of it from inside an async runtime (where the rebalance callback
/// calls it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_storage_checkpoints_round_trip_and_refuse_corrupt_objects() {
    let Some((dir, object_store)) = kpiflow_core::storage::test_location("ckpt") else {
        return;
    };
    let cfg = CheckpointConfig {
        dir,
        object_store,
        ..Default::default()
    };
    let store = kpiflow_processor::checkpoint::open(&cfg, "group-a").unwrap();
    assert_eq!(store.load(2).unwrap(), None);
    let first = Checkpoint::new(2, vec![("events.orders".into(), 10)], vec![1, 2, 3]);
    store.save(&first).unwrap();
    let second = Checkpoint::new(2, vec![("events.orders".into(), 20)], vec![4; 100_000]);
    store.save(&second).unwrap();
    assert_eq!(store.load(2).unwrap(), Some(second));
    // Another group's prefix does not see it.
    let other = kpiflow_processor::checkpoint::open(&cfg, "group-b").unwrap();
    assert_eq!(other.load(2).unwrap(), None);

    let bucket = cfg
        .dir
        .join("group-a")
        .open("test", &cfg.object_store)
        .unwrap()
        .unwrap();
    bucket
        .store()
        .put(&bucket.key("partition-3.ckpt"), b"garbage".to_vec().into())
        .await
        .unwrap();
    let err = store.load(3).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "{}/partition-3.ckpt: cannot decode",
            cfg.dir.join("group-a")
        )),
        "{err}"
    );
}

/// Checkpoints of every partition at orders offset `offset`, written against `cluster` while
/// the topics had `partitions`, on fresh topics: the error the processor stops with at its
/// first assignment.
async fn refused_checkpoint(offset: i64, cluster: Option<&str>, partitions: Option<i32>) -> String {
    let kafka = kafka();
    kafka.ensure_topics().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = ProcessorConfig {
        group_id: format!("{}-processor", kafka.topic_prefix),
        checkpoint: CheckpointConfig {
            dir: state.path().into(),
            ..Default::default()
        },
        kpis: vec!["orders".into()],
        ..ProcessorConfig::default()
    };
    let store = kpiflow_processor::checkpoint::open(&cfg.checkpoint, &cfg.group_id).unwrap();
    for p in 0..kafka.partitions {
        let offsets = vec![(Topic::Orders.suffix().into(), offset)];
        let mut cp = Checkpoint::new(p, offsets, Vec::new()).in_cluster(cluster.map(String::from));
        if let Some(n) = partitions {
            cp = cp.with_partitions(n);
        }
        store.save(&cp).unwrap();
    }
    let run = kpiflow_processor::run::run(&kafka, &cfg, None, CancellationToken::new());
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the processor stops at the first assignment")
        .unwrap_err()
        .to_string()
}

/// A checkpoint of another Kafka cluster (say, a re-created broker) is refused at assignment
/// with where it lives and both cluster ids, instead of replaying the new topics on top of
/// old state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_another_cluster_is_refused() {
    let err = refused_checkpoint(0, Some("elsewhere"), None).await;
    assert!(
        err.contains("partition-") && err.contains("written against Kafka cluster \"elsewhere\""),
        "{err}"
    );
    assert!(
        !err.contains("the broker is cluster \"\""),
        "the broker's id is known: {err}"
    );
}

/// A checkpoint written while the event topics had another partition count (they were
/// given more partitions since: most shops moved) is refused with both counts, instead of
/// restoring state that now belongs to other tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_another_partition_count_is_refused() {
    // The test topics have 3 partitions (the default); the checkpoints say 1.
    let err = refused_checkpoint(0, None, Some(1)).await;
    assert!(
        err.contains("partition-")
            && err.contains("written when the event topics had 1 partitions, but they have 3 now"),
        "{err}"
    );
}

/// A checkpoint whose offsets lie past the end of its partitions (the topics were re-created
/// on the same cluster) is refused, with the offset and the partition's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_past_the_end_of_its_topic_is_refused() {
    let err = refused_checkpoint(1000, None, None).await;
    assert!(
        err.contains("its offset 1000 for") && err.contains("is past the end of the partition (0)"),
        "{err}"
    );
}

/// Records that retention deleted before the processor read them are counted as dropped
/// (`reason="retention"`), and the processor goes on with what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_lost_to_retention_before_they_were_read_are_counted() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::{Offset, TopicPartitionList};

    let kafka = kafka();
    kafka.ensure_topics().await.unwrap();
    let orders = kafka.topics().name(Topic::Orders);
    let producer = kafka.producer().unwrap();
    for i in 0..10 {
        let e = placed(&format!("r{i}"), "2026-11-02T18:00:00Z", "1.00");
        send(&producer, &orders, &e.to_json()).await;
    }
    // All of shop-1's orders are on one partition: find it.
    let probe = kafka.consumer("probe").unwrap();
    let partition = (0..kafka.partitions)
        .find(|p| {
            probe
                .fetch_watermarks(&orders, *p, Duration::from_secs(10))
                .unwrap()
                .1
                == 10
        })
        .expect("one partition holds the ten orders");
    // Retention (simulated by the admin API) removes offsets 0..6.
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().unwrap().create().unwrap();
    let mut before = TopicPartitionList::new();
    before
        .add_partition_offset(&orders, partition, Offset::Offset(6))
        .unwrap();
    admin
        .delete_records(&before, &AdminOptions::new())
        .await
        .unwrap();

    // The checkpoint had read up to offset 2 (with an empty state).
    let state = tempfile::tempdir().unwrap();
    let cfg = ProcessorConfig {
        group_id: format!("{}-processor", kafka.topic_prefix),
        idle_timeout: Duration::from_millis(500),
        flush_interval: Duration::from_millis(200),
        checkpoint: CheckpointConfig {
            dir: state.path().into(),
            ..Default::default()
        },
        kpis: vec!["orders".into()],
        ..ProcessorConfig::default()
    };
    let empty = kpiflow_processor::Engine::with(&cfg.compile().unwrap(), 1).snapshot();
    kpiflow_processor::checkpoint::open(&cfg.checkpoint, &cfg.group_id)
        .unwrap()
        .save(&Checkpoint::new(
            partition,
            vec![(Topic::Orders.suffix().into(), 2)],
            empty,
        ))
        .unwrap();
    let dropped = || {
        kpiflow_core::metrics::render()
            .lines()
            .find(|l| {
                l.starts_with("kpiflow_events_dropped_total{")
                    && l.contains(r#"component="processor""#)
                    && l.contains(r#"reason="retention""#)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let stop = CancellationToken::new();
    let task = {
        let (kafka, cfg, stop) = (kafka.clone(), cfg.clone(), stop.clone());
        tokio::spawn(async move { kpiflow_processor::run::run(&kafka, &cfg, None, stop).await })
    };
    caught_up(&kafka, &cfg.group_id).await;
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(stats.received, 4, "offsets 6..10 are what is left");
    assert_eq!(dropped(), 4.0, "offsets 2..6 were lost to retention");
}

#[path = "integration/oracle.rs"]
mod oracle;
#[path = "integration/oracle_cli.rs"]
mod oracle_cli;
#[path = "integration/scenario_file.rs"]
mod scenario_file;
#[path = "integration/scenarios.rs"]
mod scenarios;
#[path = "integration/topics.rs"]
mod topics;
