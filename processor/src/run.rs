//! The processor's Kafka loop: read a batch, apply it, publish outputs, await their delivery,
//! then commit the input offsets.
//!
//! State is in memory in this first cut, so the processor rebuilds it on every start by reading
//! its input topics from the beginning (as far as retention reaches); committed offsets only
//! report progress and lag. Outputs are upserts (the highest `revision` per key wins), so the
//! replay after a restart changes no reader's view. Durable state is the delivery-guarantees
//! issue's work.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use kpiflow_core::metrics::{self, ComponentMetrics};
use kpiflow_core::{CoreError, KafkaConfig};
use kpiflow_schemas::{DeadLetter, Event, Topic, Topics};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::engine::{Applied, Engine, Outputs, PartitionId};
use crate::{ProcessorConfig, ProcessorError};

const COMPONENT: &str = "processor";

/// Totals of one run, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunStats {
    /// Records read.
    pub received: u64,
    /// KPI updates published.
    pub updates: u64,
    /// Breach events published.
    pub breaches: u64,
    /// Records dead-lettered (invalid, late, rejected).
    pub dead_lettered: u64,
    /// Duplicate events ignored.
    pub duplicates: u64,
}

struct Record {
    topic: String,
    key: String,
    payload: Vec<u8>,
}

/// Runs the processor until `shutdown`, then flushes, commits and returns.
/// `ready` is set once the input partitions are assigned.
pub async fn run(
    kafka: &KafkaConfig,
    cfg: &ProcessorConfig,
    ready: Option<Arc<AtomicBool>>,
    shutdown: CancellationToken,
) -> Result<RunStats, ProcessorError> {
    kafka.validate()?;
    let compiled = cfg.compile()?;
    kafka.wait_until_reachable(Duration::from_secs(60)).await?;
    kafka.ensure_topics().await?;
    let topics = kafka.topics();
    let consumer = kafka.consumer(&cfg.group_id)?;
    let producer = kafka.producer()?;
    let assigned = assign_from_beginning(&consumer, &topics).await?;
    tracing::info!(group = %cfg.group_id, partitions = assigned.len(), "processor reading events from the beginning");
    if let Some(r) = &ready {
        r.store(true, Ordering::Relaxed);
    }

    let m = ComponentMetrics::new(COMPONENT);
    let duplicates = metrics::duplicates().with_label_values(&[COMPONENT]);
    let state_gauge = metrics::state_buckets().with_label_values(&[COMPONENT]);
    let batch_seconds = metrics::batch_seconds().with_label_values(&[COMPONENT]);
    let names: HashMap<String, Topic> = Topic::EVENTS
        .iter()
        .map(|t| (topics.name(*t), *t))
        .collect();
    let dead_topic = topics.name(Topic::DeadLetter);
    let updates_topic = topics.name(Topic::KpiUpdates);
    let breaches_topic = topics.name(Topic::Breaches);

    let first_revision = u64::try_from(Utc::now().timestamp_micros()).unwrap_or(0);
    let mut engine = Engine::with(&compiled, first_revision);
    for (topic, partition) in &assigned {
        if let Some(t) = topics.parse(topic) {
            engine.register_partition(
                PartitionId {
                    topic: t,
                    partition: *partition,
                },
                Instant::now(),
            );
        }
    }
    let mut stats = RunStats::default();
    let mut positions: HashMap<(String, i32), i64> = HashMap::new();
    let mut last_log = Instant::now();
    loop {
        let deadline = tokio::time::Instant::now() + cfg.flush_interval;
        let mut dead: Vec<(usize, Record)> = Vec::new();
        let mut decoded = Vec::new();
        let mut dead_letters = Vec::new();
        let mut read = 0usize;
        let mut stopping = false;
        let batch_started = Instant::now();
        while read < cfg.max_batch {
            let msg = tokio::select! {
                biased;
                _ = shutdown.cancelled() => { stopping = true; break }
                _ = tokio::time::sleep_until(deadline) => break,
                msg = consumer.recv() => msg,
            };
            let msg = match msg {
                Ok(msg) => msg,
                Err(e) => {
                    m.error("kafka");
                    tracing::warn!(error = %e, "consume error; the client retries");
                    continue;
                }
            };
            read += 1;
            m.received.inc();
            stats.received += 1;
            positions.insert((msg.topic().to_string(), msg.partition()), msg.offset() + 1);
            let Some(topic) = names.get(msg.topic()).copied() else {
                continue;
            };
            let partition = PartitionId {
                topic,
                partition: msg.partition(),
            };
            match msg.payload().map(Event::from_json) {
                None => {
                    dead_letters.push((
                        read,
                        "invalid",
                        "empty record: no payload".to_string(),
                        msg,
                    ));
                }
                Some(Err(e)) => dead_letters.push((read, "invalid", e.to_string(), msg)),
                Some(Ok(event)) => decoded.push((read, event, partition, msg)),
            }
        }
        // Measures are evaluated over the whole batch at once (vectorised DataFusion
        // expressions), so records are decoded first and applied together.
        let batch: Vec<(&Event, PartitionId)> =
            decoded.iter().map(|(_, e, p, _)| (e, *p)).collect();
        let verdicts = engine.apply_batch(&batch, Instant::now())?;
        for ((seq, _, _, msg), verdict) in decoded.iter().zip(verdicts) {
            let verdict = match verdict {
                Applied::Counted | Applied::Unused => Ok(()),
                Applied::Duplicate => {
                    duplicates.inc();
                    stats.duplicates += 1;
                    Ok(())
                }
                Applied::Superseded => {
                    m.dropped("superseded", 1);
                    Ok(())
                }
                Applied::Late { reason } => Err(("late", reason)),
                Applied::Rejected { kind, reason } => Err((kind, reason)),
            };
            if let Err((kind, reason)) = verdict {
                m.dropped(kind, 1);
                stats.dead_lettered += 1;
                tracing::debug!(kind, %reason, "dead-lettering a record");
                dead.push((*seq, dead_letter(msg, &dead_topic, kind, reason)));
            }
        }
        for (seq, kind, reason, msg) in dead_letters.drain(..) {
            m.dropped(kind, 1);
            stats.dead_lettered += 1;
            tracing::debug!(kind, %reason, "dead-lettering a record");
            dead.push((seq, dead_letter(&msg, &dead_topic, kind, reason)));
        }
        drop(decoded);
        // Dead letters keep the order their records were read in.
        dead.sort_by_key(|(seq, _)| *seq);

        for quiet in engine.quiet_partitions(Instant::now()) {
            let name = topics.name(quiet.topic);
            let at_end =
                match consumer.fetch_watermarks(&name, quiet.partition, Duration::from_secs(5)) {
                    Ok((low, high)) => {
                        positions
                            .get(&(name, quiet.partition))
                            .copied()
                            .unwrap_or(low)
                            >= high
                    }
                    Err(e) => {
                        m.error("kafka");
                        tracing::warn!(error = %e, "reading a partition's end offset failed");
                        false
                    }
                };
            engine.set_caught_up(quiet, at_end);
        }
        let outputs = engine.flush(Instant::now(), Utc::now());
        stats.updates += outputs.updates.len() as u64;
        stats.breaches += outputs.breaches.len() as u64;
        let sent = outputs.updates.len() + outputs.breaches.len();
        let records = dead.into_iter().map(|(_, r)| r).chain(encode(
            outputs,
            &updates_topic,
            &breaches_topic,
        ));
        publish(&producer, records).await?;
        m.sent.inc_by(sent as u64);
        if read > 0 {
            commit(&consumer, &positions, &m);
            batch_seconds.observe(batch_started.elapsed().as_secs_f64());
        }
        if let Some(wm) = engine.watermark() {
            m.watermark().set(wm.timestamp());
        }
        state_gauge.set(engine.state_buckets() as i64);
        if last_log.elapsed() > Duration::from_secs(10) {
            last_log = Instant::now();
            tracing::info!(
                received = stats.received,
                updates = stats.updates,
                breaches = stats.breaches,
                dead_lettered = stats.dead_lettered,
                watermark = ?engine.watermark(),
                buckets = engine.state_buckets(),
                "processor progress"
            );
        }
        if stopping {
            tracing::info!(?stats, "processor stopped");
            return Ok(stats);
        }
    }
}

/// Assigns every partition of the event topics, starting at the beginning (see module docs).
async fn assign_from_beginning(
    consumer: &StreamConsumer,
    topics: &Topics,
) -> Result<Vec<(String, i32)>, ProcessorError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tpl = TopicPartitionList::new();
    let mut assigned = Vec::new();
    for topic in Topic::EVENTS {
        let name = topics.name(topic);
        loop {
            let md = consumer
                .fetch_metadata(Some(&name), Duration::from_secs(10))
                .map_err(|e| CoreError::kafka(format!("reading metadata of {name}"), e))?;
            let partitions: Vec<i32> = md
                .topics()
                .iter()
                .filter(|t| t.name() == name && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if !partitions.is_empty() {
                for p in partitions {
                    assigned.push((name.clone(), p));
                    tpl.add_partition_offset(&name, p, Offset::Beginning)
                        .map_err(|e| CoreError::kafka(format!("assigning {name}/{p}"), e))?;
                }
                break;
            }
            if Instant::now() > deadline {
                return Err(CoreError::KafkaAdmin(format!(
                    "topic {name} has no partitions after 60s; create it or enable kafka.create_topics"
                ))
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    consumer
        .assign(&tpl)
        .map_err(|e| CoreError::kafka("assigning input partitions", e))?;
    Ok(assigned)
}

fn dead_letter(msg: &BorrowedMessage<'_>, topic: &str, kind: &str, reason: String) -> Record {
    let letter = DeadLetter::new(COMPONENT, kind, reason, msg.payload().unwrap_or_default())
        .from_record(msg.topic(), msg.partition(), msg.offset(), msg.key());
    Record {
        topic: topic.to_string(),
        key: letter.key.clone().unwrap_or_default(),
        payload: letter.to_json(),
    }
}

fn encode(outputs: Outputs, updates: &str, breaches: &str) -> impl Iterator<Item = Record> {
    let updates = outputs.updates.into_iter().map(move |u| Record {
        topic: updates.to_string(),
        key: u.key(),
        payload: serde_json::to_vec(&u).expect("KPI updates serialize"),
    });
    let breaches = outputs.breaches.into_iter().map(move |b| Record {
        topic: breaches.to_string(),
        key: b.breach_id.clone(),
        payload: serde_json::to_vec(&b).expect("breach events serialize"),
    });
    updates.chain(breaches)
}

/// Enqueues records in order (so one key's records keep their order) and waits until Kafka
/// has acknowledged every one of them.
async fn publish(
    producer: &FutureProducer,
    records: impl Iterator<Item = Record>,
) -> Result<(), ProcessorError> {
    let mut pending = Vec::new();
    for r in records {
        loop {
            let rec = FutureRecord::to(&r.topic).key(&r.key).payload(&r.payload);
            match producer.send_result(rec) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // The client's queue drains as the broker acknowledges; give it a moment.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    return Err(ProcessorError::Publish(format!(
                        "enqueueing to {}: {e}",
                        r.topic
                    )));
                }
            }
        }
    }
    for delivery in pending {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(ProcessorError::Publish(e.to_string())),
            Err(_) => {
                return Err(ProcessorError::Publish(
                    "producer dropped a delivery".into(),
                ));
            }
        }
    }
    Ok(())
}

fn commit(
    consumer: &StreamConsumer,
    positions: &HashMap<(String, i32), i64>,
    m: &ComponentMetrics,
) {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in positions {
        if tpl
            .add_partition_offset(topic, *partition, Offset::Offset(*next))
            .is_err()
        {
            m.error("kafka");
        }
    }
    // Offsets only report progress here (state is rebuilt from the beginning), so an
    // asynchronous commit is enough; a failure is counted and the next flush retries.
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        m.error("kafka");
        tracing::warn!(error = %e, "committing offsets failed; retrying at the next flush");
    }
}
