//! The processor against a real Kafka broker: bad and late records are dead-lettered with
//! their reason, and everything else is still counted, once.

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

/// A hostile-input corpus in the middle of a reference stream: each hostile record is one
/// dead letter with its kind and the field named, the processor goes on, and the reference
/// shop's GMV is what its valid orders give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_are_each_one_dead_letter_and_the_reference_counts_stay_exact() {
    let mut kafka = kafka();
    // One partition: ownership (tested above) is not what this corpus is about.
    kafka.partitions = 1;
    kafka.ensure_topics().await.unwrap();
    let topics = kafka.topics();
    let orders = topics.name(Topic::Orders);
    let producer = kafka.producer().unwrap();
    let valid = |id: &str, at: &str, amount: &str| -> serde_json::Value {
        serde_json::from_slice(&placed(id, at, amount).to_json()).unwrap()
    };
    let edit = |id: &str, f: &dyn Fn(&mut serde_json::Value)| -> Vec<u8> {
        let mut v = valid(id, "2026-11-02T18:30:00Z", "1.00");
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let whole = placed("h-ok", "2026-11-02T18:30:00Z", "1.00").to_json();
    // (record, dead-letter kind, substrings of the reason), in publishing order.
    let hostile: Vec<(Vec<u8>, &str, Vec<&str>)> = vec![
        (whole[..whole.len() / 2].to_vec(), "invalid", vec!["EOF"]),
        (vec![0xff, 0xfe, b'{'], "invalid", vec!["not UTF-8"]),
        (Vec::new(), "invalid", vec![]),
        (
            edit("h-nan", &|v| v["payload"]["total"]["amount"] = "NaN".into()),
            "invalid",
            vec!["`payload.total.amount`", "\"NaN\""],
        ),
        (
            edit("h-1e400", &|v| {
                v["payload"]["total"]["amount"] = "1e400".into()
            }),
            "invalid",
            vec!["`payload.total.amount`", "\"1e400\""],
        ),
        (
            edit("h-huge", &|v| {
                v["payload"]["total"]["amount"] = "100000000000000000000000".into()
            }),
            "implausible",
            vec!["`payload.total.amount`", "100000000000000000000000"],
        ),
        (
            edit("h-neg", &|v| v["payload"]["units"] = (-3).into()),
            "invalid",
            vec!["`payload.units`"],
        ),
        (
            edit("h-schema", &|v| v["schema"] = "order.teleported".into()),
            "invalid",
            vec!["order.teleported"],
        ),
        (
            edit("h-version", &|v| v["schema_version"] = 99.into()),
            "invalid",
            vec!["99"],
        ),
        (
            edit("h-1970", &|v| {
                v["event_time"] = "1970-01-01T00:00:00Z".into()
            }),
            "implausible",
            vec!["1970-01-01"],
        ),
        (
            edit("h-9999", &|v| {
                v["event_time"] = "9999-12-31T23:59:59Z".into()
            }),
            "implausible",
            vec!["9999-12-31"],
        ),
        (
            edit("h-missing", &|v| {
                v["payload"].as_object_mut().unwrap().remove("order_id");
            }),
            "invalid",
            vec!["order_id"],
        ),
        (
            edit("h-longshop", &|v| v["shop"] = "s".repeat(10_000).into()),
            "implausible",
            vec!["`shop`"],
        ),
        (
            {
                let text =
                    String::from_utf8(placed("h-dup", "2026-11-02T18:30:00Z", "1.00").to_json())
                        .unwrap();
                format!(r#"{{"event_id":"h-dup2",{}"#, &text[1..]).into_bytes()
            },
            "invalid",
            vec!["duplicate field `event_id`"],
        ),
        (
            {
                let mut big = br#"{"event_id":"h-big","pad":""#.to_vec();
                big.resize(300_000, b'x');
                big.extend_from_slice(br#""}"#);
                big
            },
            "invalid",
            vec![],
        ),
    ];
    // The reference: 10.00 before, 5.50 after, and one order with an extra field (accepted:
    // unknown fields are ignored) 2.25 in the middle.
    send(
        &producer,
        &orders,
        &placed("r1", "2026-11-02T18:00:00Z", "10.00").to_json(),
    )
    .await;
    for (record, _, _) in &hostile[..7] {
        send(&producer, &orders, record).await;
    }
    let mut extra = valid("r2", "2026-11-02T18:40:00Z", "2.25");
    extra["payload"]["gift_wrap"] = true.into();
    send(&producer, &orders, &serde_json::to_vec(&extra).unwrap()).await;
    for (record, _, _) in &hostile[7..] {
        send(&producer, &orders, record).await;
    }
    send(
        &producer,
        &orders,
        &placed("r3", "2026-11-02T19:00:00Z", "5.50").to_json(),
    )
    .await;

    let (_state, stop, task) = start(&kafka);
    let letters = read_until(
        &kafka,
        &topics.name(Topic::DeadLetter),
        |b| serde_json::from_slice::<DeadLetter>(b).unwrap(),
        |got: &[DeadLetter]| got.len() >= hostile.len(),
    );
    // 10.00 + 2.25 + 5.50 = 17.75 on the Pacific day of Nov 2.
    let want = Decimal::parse("17.75").unwrap();
    let updates = gmv_of_nov_2_reaches(&kafka, &want);
    assert!(
        updates
            .iter()
            .all(|u| u.kpi != "gmv" || u.numerator <= want),
        "a hostile amount reached GMV"
    );
    assert!(!task.is_finished(), "the processor stopped");
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(letters.len(), hostile.len());
    assert_eq!(stats.dead_lettered, hostile.len() as u64);
    for (i, (letter, (_, kind, parts))) in letters.iter().zip(&hostile).enumerate() {
        assert_eq!(letter.reason_kind, *kind, "record {i}: {}", letter.reason);
        for part in parts {
            assert!(
                letter.reason.contains(part),
                "record {i}: {part:?} not in {}",
                letter.reason
            );
        }
    }
    // The oversized one keeps its start, size and hash.
    let big = letters.last().unwrap();
    assert!(big.payload_truncated);
    assert_eq!(big.payload_bytes, Some(300_002));
}

/// Waits until `group` has committed the end of every event partition.
async fn caught_up(kafka: &KafkaConfig, group: &str) {
    let topics = kafka.topics();
    let inputs: Vec<String> = Topic::EVENTS.iter().map(|t| topics.name(*t)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lag = tokio::task::block_in_place(|| {
            kafka.group_lag(group, &inputs, Duration::from_secs(10))
        });
        if let Ok(parts) = &lag
            && !parts.is_empty()
            && parts.iter().all(|p| p.lag() == 0)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{group} did not catch up: {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
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

/// Checkpoints of every partition at orders offset `offset`, written against `cluster`, on
/// fresh topics: the error the processor stops with at its first assignment.
async fn refused_checkpoint(offset: i64, cluster: Option<&str>) -> String {
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
        let cp = Checkpoint::new(p, offsets, Vec::new()).in_cluster(cluster.map(String::from));
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
    let err = refused_checkpoint(0, Some("elsewhere")).await;
    assert!(
        err.contains("partition-") && err.contains("written against Kafka cluster \"elsewhere\""),
        "{err}"
    );
    assert!(
        !err.contains("the broker is cluster \"\""),
        "the broker's id is known: {err}"
    );
}

/// A checkpoint whose offsets lie past the end of its partitions (the topics were re-created
/// on the same cluster) is refused, with the offset and the partition's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_past_the_end_of_its_topic_is_refused() {
    let err = refused_checkpoint(1000, None).await;
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
