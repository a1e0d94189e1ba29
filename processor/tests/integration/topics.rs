//! Reading what a run wrote to its topics; shared by the processor's and the end-to-end
//! tests (`#[path]`-included by both).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kpiflow_core::KafkaConfig;
use kpiflow_schemas::Topic;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// Every record of `topic` (its committed ones: `read_committed`), partition by partition in
/// offset order, read from the beginning to the end offsets it had when called.
pub(crate) fn read_all(kafka: &KafkaConfig, topic: Topic) -> Vec<Vec<u8>> {
    let name = kafka.topics().name(topic);
    let mut cfg = kafka.client_config().unwrap();
    cfg.set("group.id", format!("{}-read-all", kafka.topic_prefix))
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = cfg.create().unwrap();
    let meta = consumer
        .fetch_metadata(Some(&name), Duration::from_secs(10))
        .unwrap();
    let mut ends = HashMap::new();
    let mut list = TopicPartitionList::new();
    for p in meta.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(&name, p.id(), Duration::from_secs(10))
            .unwrap();
        if high > low {
            ends.insert(p.id(), high);
            list.add_partition_offset(&name, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{name} not read to its end: {ends:?}"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            out.push(m.payload().unwrap_or_default().to_vec());
            if ends
                .get(&m.partition())
                .is_some_and(|end| m.offset() + 1 >= *end)
            {
                ends.remove(&m.partition());
            }
        }
    }
    out
}

/// Waits until the KPI update and breach topics of `kafka` have not grown for `quiet`: a
/// processor publishes its last windows only once its partitions have been idle for
/// `processor.idle_timeout` after it read the end of its input, so "caught up" is not yet
/// "done". Fails after two minutes.
pub(crate) async fn outputs_settle(kafka: &KafkaConfig, quiet: Duration) {
    let outputs = [Topic::KpiUpdates, Topic::Breaches].map(|t| kafka.topics().name(t));
    let ends = || -> Vec<i64> {
        tokio::task::block_in_place(|| {
            kafka
                .group_lag("settle", &outputs, Duration::from_secs(10))
                .unwrap()
                .iter()
                .map(|p| p.end)
                .collect()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut last, mut since) = (ends(), Instant::now());
    while since.elapsed() < quiet {
        assert!(
            Instant::now() < deadline,
            "the outputs of {} never settled",
            kafka.topic_prefix
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = ends();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}
