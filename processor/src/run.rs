//! The processor's Kafka loop: read a batch, let the task that owns each record's partition
//! decode and apply it (tasks in parallel, one per core), send the outputs without waiting
//! for them, and at each checkpoint wait for every output in flight, write the checkpoint,
//! then commit offsets.
//!
//! **Guarantee** (any broker with consumer groups): every input event affects the KPI state
//! exactly once. Each partition number `p` is a task with its own [`Engine`]; its checkpoint
//! ([`crate::checkpoint`]) holds the engine state *and* the input offsets that state covers,
//! written only after every output of that state was acknowledged by Kafka (the outbox is
//! settled first; between checkpoints outputs are pipelined). On assignment the
//! consumer is positioned at the checkpoint's offsets (the beginning when there is none) and
//! the engine restored from it, so a crash replays exactly the records after the checkpoint.
//! A partition revoked in a rebalance is checkpointed by the rebalance callback (outbox
//! settled first) before it is handed over, so its next owner replays nothing.
//! Their outputs are published again: KPI updates are upserts keyed by (KPI, scope, window)
//! whose highest `revision` wins with the same values, and breach events repeat with the same
//! `breach_id` and `state`, so readers de-duplicate on (`breach_id`, `state`). Committed
//! Kafka offsets only report progress and lag.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use kpiflow_core::internal_events::{CommitFailed, ConsumerErrored, DeadLettered};
use kpiflow_core::metrics::{self, ComponentMetrics};
use kpiflow_core::{CoreError, KafkaConfig, Out, Outbox};
use kpiflow_schemas::{Event, Topic, Topics};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::config::Compiled;
use crate::engine::{Applied, Engine, Outputs, PartitionId};
use crate::{ProcessorConfig, ProcessorError};

const COMPONENT: &str = "processor";
/// The first checkpoint after partitions are assigned comes this soon (then every 2, 4, …
/// seconds up to `checkpoint.interval`).
const FIRST_CHECKPOINT: Duration = Duration::from_secs(1);

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
    what: &'static str,
}

/// What the rebalance callback tells the loop.
enum Assignment {
    /// Partition numbers now owned, each with its checkpoint (if any), and how many
    /// partitions the event topics have (which partition owns a shop follows from it).
    Assigned(Vec<(i32, Option<Checkpoint>)>, i32),
    /// Partition numbers no longer owned.
    Revoked(Vec<i32>),
    /// A checkpoint could not be read: the processor must stop rather than count twice.
    Failed(String),
    /// The event topics' partitions cannot be shared out by shop, or their count could not
    /// be read (then `true`: a restart may succeed). See [`partition_count`].
    Layout(String, bool),
}

/// Positions newly assigned partitions at their checkpoint's offsets (the beginning when
/// there is none) and hands the checkpoints to the loop; checkpoints revoked partitions
/// before they go.
struct Rebalancer {
    store: Arc<dyn CheckpointStore>,
    tx: std::sync::mpsc::Sender<Assignment>,
    /// The broker's cluster id, when it tells (checkpoints of another cluster are refused).
    cluster_id: Arc<std::sync::OnceLock<Option<String>>>,
    /// The loop's engines and applied positions, to checkpoint revoked partitions.
    shared: Arc<Mutex<Shared>>,
    /// The loop's outbox: settled before a revoked partition's checkpoint.
    outbox: Arc<tokio::sync::Mutex<Outbox>>,
    topics: Topics,
    /// Set when `run` returns: the state may then hold outputs that were never acknowledged
    /// (a failed delivery ends the run), so closing the consumer must not checkpoint it.
    stopping: Arc<AtomicBool>,
}

/// What the loop and the rebalance callback share. The callback runs inside the loop's
/// `recv()`, between batches, so the loop never holds the lock while it could run.
struct Shared {
    tasks: HashMap<i32, Task>,
    /// Next offset per (topic, partition) after the last *applied* record (the loop notes
    /// positions as it reads; a checkpoint must cover only what the engine holds).
    applied: HashMap<(String, i32), i64>,
    /// The event topics' partition count.
    partitions: i32,
}

impl Rebalancer {
    /// Checkpoints the revoked partitions that changed since their last checkpoint, once
    /// every output in flight is acknowledged, so their next owner starts where this member
    /// stopped instead of replaying up to `checkpoint.interval`.
    fn checkpoint_revoked(&self, partitions: &[i32]) -> Result<(), String> {
        if self.stopping.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Ok(mut outbox) = self.outbox.try_lock() else {
            // Not reachable (the loop holds it only while it is not polling); the next
            // owner replays from the last checkpoint, which is always safe.
            tracing::warn!("outbox busy at revocation; the next owner replays");
            return Ok(());
        };
        // Delivery reports are completed by the producer's own thread: waiting here, on the
        // polling thread, cannot deadlock.
        futures::executor::block_on(outbox.settle()).map_err(|e| {
            format!("outputs not acknowledged before revoked partitions were handed over: {e}")
        })?;
        let mut shared = lock(&self.shared);
        let s = &mut *shared;
        let cluster = self.cluster_id.get().cloned().flatten();
        let mut saved = Vec::new();
        for p in partitions {
            if let Some(task) = s.tasks.get_mut(p).filter(|t| t.changed) {
                save_checkpoint(
                    self.store.as_ref(),
                    &self.topics,
                    *p,
                    task,
                    &s.applied,
                    cluster.clone(),
                    s.partitions,
                )
                .map_err(|e| e.to_string())?;
                saved.push(*p);
            }
        }
        if !saved.is_empty() {
            tracing::info!(partitions = ?saved, "revoked partitions checkpointed before hand-over");
        }
        Ok(())
    }
}

/// The shared state, also after a panic elsewhere (its data stay consistent: every change
/// is made under the lock by one thread).
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets the flag when dropped: `run` returned, by any path.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Writes partition `p`'s checkpoint: its engine state and the offsets (`positions`) that
/// state covers. Returns the snapshot's size.
fn save_checkpoint(
    store: &dyn CheckpointStore,
    topics: &Topics,
    p: i32,
    task: &mut Task,
    positions: &HashMap<(String, i32), i64>,
    cluster: Option<String>,
    partitions: i32,
) -> Result<usize, ProcessorError> {
    let offsets = Topic::EVENTS
        .iter()
        .filter_map(|t| {
            let next = positions.get(&(topics.name(*t), p))?;
            Some((t.suffix().to_string(), *next))
        })
        .collect();
    let bytes = task.engine.snapshot();
    let size = bytes.len();
    store.save(
        &Checkpoint::new(p, offsets, bytes)
            .in_cluster(cluster)
            .with_partitions(partitions),
    )?;
    task.changed = false;
    Ok(size)
}

impl ClientContext for Rebalancer {}

impl ConsumerContext for Rebalancer {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<i32> = {
            let mut p: Vec<i32> = tpl
                .elements()
                .iter()
                .map(TopicPartitionListElem::partition)
                .collect();
            p.sort_unstable();
            p.dedup();
            p
        };
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // A metadata request may fail while the broker restarts: retried for a while
                // (the rebalance waits) before the processor gives up.
                let deadline = Instant::now() + Duration::from_secs(30);
                let count = loop {
                    match partition_count(consumer, tpl) {
                        Ok(count) => break count,
                        Err((problem, true)) if Instant::now() < deadline => {
                            tracing::warn!(%problem, "retrying");
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        Err((problem, retryable)) => {
                            let _ = self.tx.send(Assignment::Layout(problem, retryable));
                            return;
                        }
                    }
                };
                let mut assigned = Vec::new();
                let cluster = self.cluster_id.get().cloned().flatten();
                for p in &partitions {
                    match self.store.load(*p) {
                        Ok(Some(cp)) => {
                            match check_restorable(
                                consumer,
                                tpl,
                                *p,
                                &cp,
                                cluster.as_deref(),
                                count,
                            ) {
                                Ok(()) => assigned.push((*p, Some(cp))),
                                Err(problem) => {
                                    let _ = self.tx.send(Assignment::Failed(format!(
                                        "{}: {problem}",
                                        self.store.name(*p)
                                    )));
                                    return;
                                }
                            }
                        }
                        Ok(None) => assigned.push((*p, None)),
                        Err(e) => {
                            let _ = self.tx.send(Assignment::Failed(e.to_string()));
                            return;
                        }
                    }
                }
                let elements: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                for (topic, p) in elements {
                    let suffix = topic.split_once('.').map_or("", |(_, s)| s).to_string();
                    let offset = assigned
                        .iter()
                        .find(|(q, _)| *q == p)
                        .and_then(|(_, cp)| cp.as_ref()?.offset(&suffix))
                        .map_or(Offset::Beginning, Offset::Offset);
                    let _ = tpl.set_partition_offset(&topic, p, offset);
                }
                if let Err(e) = consumer.assign(tpl) {
                    let _ = self
                        .tx
                        .send(Assignment::Failed(format!("assigning partitions: {e}")));
                    return;
                }
                let _ = self.tx.send(Assignment::Assigned(assigned, count));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Err(problem) = self.checkpoint_revoked(&partitions) {
                    let _ = self.tx.send(Assignment::Failed(problem));
                }
                let _ = self.tx.send(Assignment::Revoked(partitions));
                let _ = consumer.unassign();
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error; the group will retry");
                let _ = consumer.unassign();
            }
        }
    }
}

/// How many partitions the assigned event topics have: the same for all, since task `p` reads
/// partition `p` of each and a shop must map to the same task in every topic. One metadata
/// request per topic, at assignment only.
fn partition_count(
    consumer: &BaseConsumer<Rebalancer>,
    tpl: &TopicPartitionList,
) -> Result<i32, (String, bool)> {
    let topics: std::collections::BTreeSet<String> = tpl
        .elements()
        .iter()
        .map(|e| e.topic().to_string())
        .collect();
    let mut counts: Vec<(String, i32)> = Vec::new();
    for topic in &topics {
        let md = consumer
            .fetch_metadata(Some(topic.as_str()), Duration::from_secs(10))
            .map_err(|e| (format!("reading the partition count of {topic}: {e}"), true))?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic.as_str())
            .map_or(0, |t| t.partitions().len());
        counts.push((topic.clone(), i32::try_from(n).unwrap_or(i32::MAX)));
    }
    match counts.as_slice() {
        [] => Ok(1),
        [(_, first), rest @ ..] if rest.iter().all(|(_, n)| n == first) => Ok(*first),
        _ => Err((
            format!(
                "the event topics have different partition counts ({}): the processor's task p reads partition p of every event topic, so a shop would be split between tasks; give them all the same count (and rebuild the state, see the README's partitioning contract)",
                counts
                    .iter()
                    .map(|(t, n)| format!("{t}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            false,
        )),
    }
}

/// Checks that a checkpoint describes the partitions it is about to be restored for.
///
/// - Another cluster (both ids known and different): its offsets mean nothing here, so the
///   processor stops.
/// - Another partition count (both known): shops moved between partitions, so the state is
///   other tasks'; the processor stops.
/// - Past the end: the topic was re-created or truncated since (on the same cluster); its
///   offsets mean nothing and restoring would count the new events on top of old state, so
///   the processor stops.
/// - Before the start: retention deleted records the checkpoint had not read yet. They are
///   lost to the KPIs whatever happens now; the processor goes on, counts them as dropped
///   (`reason="retention"`) and logs an error, so the gap is visible rather than silent
///   (counted again if the same checkpoint is restored again before a newer one is written).
fn check_restorable<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
    partition: i32,
    cp: &Checkpoint,
    cluster: Option<&str>,
    partitions: i32,
) -> Result<(), String> {
    if let Some(then) = cp.partitions
        && then != partitions
    {
        return Err(format!(
            "written when the event topics had {then} partitions, but they have {partitions} now: a shop's partition is murmur2(shop id) modulo the count, so most shops moved and this state belongs to other tasks (restoring it would split shops between tasks that publish competing values). Stop every processor of the group, delete its checkpoints and replay the topics (the README's partitioning contract)"
        ));
    }
    if let (Some(theirs), Some(ours)) = (cp.cluster_id.as_deref(), cluster)
        && theirs != ours
    {
        return Err(format!(
            "written against Kafka cluster {theirs:?}, but the broker is cluster {ours:?}; its offsets mean nothing here and restoring it would count events twice. Point the processor at the cluster it ran against, or delete this group's checkpoints to rebuild the state from the topics"
        ));
    }
    for elem in tpl.elements().iter().filter(|e| e.partition() == partition) {
        let topic = elem.topic();
        let suffix = topic.split_once('.').map_or("", |(_, s)| s);
        let Some(next) = cp.offset(suffix) else {
            continue;
        };
        // One metadata request per restored partition, at assignment only.
        let (low, high) = match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))
        {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(%topic, partition, error = %e, "could not check the checkpoint's offsets");
                continue;
            }
        };
        if next > high {
            return Err(format!(
                "its offset {next} for {topic}[{partition}] is past the end of the partition ({high}): the topic was re-created or truncated since, and restoring would count its events on top of old state. Delete this group's checkpoints to rebuild the state from the topics"
            ));
        }
        if next < low {
            let lost = low - next;
            ComponentMetrics::new(COMPONENT).dropped("retention", u64::try_from(lost).unwrap_or(0));
            tracing::error!(
                %topic, partition, checkpoint_offset = next, first_offset = low, lost,
                "retention deleted records before the processor read them: they are missing from the KPIs"
            );
        }
    }
    Ok(())
}

/// When the next checkpoint is due: [`FIRST_CHECKPOINT`] after an assignment, then twice as
/// long each time up to `checkpoint.interval`, so a member killed sooner than the interval
/// after every start (a crash loop) still keeps its progress instead of replaying it.
struct Schedule {
    last: Instant,
    every: Duration,
    interval: Duration,
}

impl Schedule {
    fn new(interval: Duration) -> Schedule {
        Schedule {
            last: Instant::now(),
            every: FIRST_CHECKPOINT.min(interval),
            interval,
        }
    }

    /// Partitions were assigned: the next checkpoint comes [`FIRST_CHECKPOINT`] from now.
    fn restart(&mut self) {
        *self = Schedule::new(self.interval);
    }

    fn due(&self) -> bool {
        self.last.elapsed() >= self.every
    }

    /// A checkpoint was taken now.
    fn done(&mut self) {
        self.last = Instant::now();
        self.every = (self.every * 2).min(self.interval);
    }
}

/// One partition number's engine.
struct Task {
    engine: Engine,
    /// Records applied since the last checkpoint.
    changed: bool,
}

/// Runs the processor until `shutdown`, then publishes, checkpoints, commits and returns.
/// `ready` is set once partitions are assigned and their state restored.
pub async fn run(
    kafka: &KafkaConfig,
    cfg: &ProcessorConfig,
    ready: Option<Arc<AtomicBool>>,
    shutdown: CancellationToken,
) -> Result<RunStats, ProcessorError> {
    kafka.validate()?;
    let compiled = cfg.compile()?;
    let store = crate::checkpoint::open(&cfg.checkpoint, &cfg.group_id)?;
    kafka.wait_until_reachable(Duration::from_secs(60)).await?;
    kafka.ensure_topics().await?;
    let topics = kafka.topics();
    let (tx, rx) = std::sync::mpsc::channel();
    let cluster_id = Arc::new(std::sync::OnceLock::new());
    let instance_id = cfg.instance_id()?;
    let m = ComponentMetrics::new(COMPONENT);
    // Outputs are sent without waiting for their acknowledgements (reading and applying go
    // on meanwhile); the outbox is settled before each checkpoint, which keeps the guarantee.
    let outbox = Arc::new(tokio::sync::Mutex::new(Outbox::new(
        kafka.producer()?,
        m.clone(),
    )));
    let shared = Arc::new(Mutex::new(Shared {
        tasks: HashMap::new(),
        applied: HashMap::new(),
        partitions: 1,
    }));
    let stopping = Arc::new(AtomicBool::new(false));
    let consumer: StreamConsumer<Rebalancer> = {
        let mut c = kafka.client_config()?;
        if let Some(id) = &instance_id {
            // Static membership: a restarted member is given its partitions back at once.
            c.set("group.instance.id", id);
        }
        c.set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            // Range hands partition p of every event topic to the same member: task p.
            .set("partition.assignment.strategy", "range");
        c.create_with_context(Rebalancer {
            store: Arc::clone(&store),
            tx,
            cluster_id: Arc::clone(&cluster_id),
            shared: Arc::clone(&shared),
            outbox: Arc::clone(&outbox),
            topics: topics.clone(),
            stopping: Arc::clone(&stopping),
        })
        .map_err(|e| CoreError::kafka(format!("creating consumer for group {}", cfg.group_id), e))?
    };
    // Known before the first assignment (which needs subscribe): checkpoints are checked
    // against it. A metadata request to a broker that already answered: quick.
    let cluster = consumer.client().fetch_cluster_id(Duration::from_secs(10));
    if cluster.is_none() {
        tracing::warn!(
            "the broker did not tell its cluster id; checkpoints cannot be checked against it"
        );
    }
    let _ = cluster_id.set(cluster.clone());
    let inputs: Vec<String> = Topic::EVENTS.iter().map(|t| topics.name(*t)).collect();
    consumer
        .subscribe(&inputs.iter().map(String::as_str).collect::<Vec<_>>())
        .map_err(|e| CoreError::kafka("subscribing to the event topics", e))?;
    // Declared after the consumer, so dropped before it: closing the consumer revokes its
    // partitions, and the callback must then know that `run` is over.
    let _stopping = SetOnDrop(stopping);
    tracing::info!(group = %cfg.group_id, checkpoints = %cfg.checkpoint.dir.join(&cfg.group_id), "processor joining its consumer group");

    let duplicates = metrics::duplicates().with_label_values(&[COMPONENT]);
    let state_gauge = metrics::state_buckets().with_label_values(&[COMPONENT]);
    let uncosted_gauge = metrics::skus_without_cost().with_label_values(&[COMPONENT]);
    let batch_seconds = metrics::batch_seconds().with_label_values(&[COMPONENT]);
    let names: HashMap<String, Topic> = Topic::EVENTS
        .iter()
        .map(|t| (topics.name(*t), *t))
        .collect();
    let dead_topic = topics.name(Topic::DeadLetter);
    let updates_topic = topics.name(Topic::KpiUpdates);
    let breaches_topic = topics.name(Topic::Breaches);

    let lag = kpiflow_core::kafka::spawn_lag_reporter(
        kafka.clone(),
        cfg.group_id.clone(),
        inputs.clone(),
        m.clone(),
        shutdown.clone(),
    );
    // The event topics' partition count, known at the first assignment.
    let mut partitions: i32 = 1;
    let mut stats = RunStats::default();
    let mut positions: HashMap<(String, i32), i64> = HashMap::new();
    let mut last_log = Instant::now();
    let mut schedule = Schedule::new(cfg.checkpoint.interval);
    let assigning = Assigning {
        rx,
        compiled: &compiled,
        topics: &topics,
        ready: ready.as_deref(),
    };
    loop {
        let deadline = tokio::time::Instant::now() + cfg.flush_interval;
        // The batch: each record read with the engine partition it belongs to.
        let mut msgs: Vec<(PartitionId, BorrowedMessage<'_>)> = Vec::new();
        let mut stopping = false;
        let batch_started = Instant::now();
        while msgs.len() < cfg.max_batch {
            let msg = tokio::select! {
                biased;
                _ = shutdown.cancelled() => { stopping = true; break }
                _ = tokio::time::sleep_until(deadline) => break,
                msg = consumer.recv() => msg,
            };
            // Rebalances run inside recv(): apply them before using what it returned.
            assigning.apply(
                &mut lock(&shared).tasks,
                &mut positions,
                &mut partitions,
                &mut schedule,
            )?;
            let msg = match msg {
                Ok(msg) => msg,
                Err(error) => {
                    ConsumerErrored {
                        metrics: &m,
                        error: &error,
                    }
                    .emit();
                    continue;
                }
            };
            if !lock(&shared).tasks.contains_key(&msg.partition()) {
                // Revoked while the record was in flight: its new owner reads it.
                continue;
            }
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
            msgs.push((partition, msg));
        }
        let read = msgs.len();
        // Everything up to the send below runs under the shared lock, which the rebalance
        // callback takes (it runs inside recv(), never while the loop is here).
        let records: Vec<Record> = {
            let mut guard = lock(&shared);
            let s = &mut *guard;
            assigning.apply(&mut s.tasks, &mut positions, &mut partitions, &mut schedule)?;
            // Each task decodes and applies its own records, on a core of its own when there are
            // several (tasks share nothing). Measures are evaluated over a task's whole batch at
            // once (vectorised DataFusion expressions).
            let mut rows: HashMap<i32, Vec<usize>> = HashMap::new();
            for (i, (p, _)) in msgs.iter().enumerate() {
                rows.entry(p.partition).or_default().push(i);
            }
            let now = Instant::now();
            let jobs: Vec<(&mut Task, Vec<usize>)> = s
                .tasks
                .iter_mut()
                .filter_map(|(p, task)| Some((task, rows.remove(p)?)))
                .collect();
            let mut dead: Vec<(usize, Record)> = Vec::new();
            for applied in in_parallel(jobs, |(task, rows)| {
                apply_task(task, &msgs, &rows, now, &dead_topic, partitions)
            }) {
                let applied = applied?;
                stats.duplicates += applied.duplicates;
                duplicates.inc_by(applied.duplicates);
                stats.dead_lettered += applied.dead.len() as u64;
                dead.extend(applied.dead);
            }
            // Dead letters keep the order their records were read in.
            dead.sort_by_key(|(seq, _)| *seq);

            // Whether a quiet partition was read to its end needs the consumer: asked here, then
            // every task flushes (and encodes its outputs) in parallel again.
            for task in s.tasks.values_mut() {
                for quiet in task.engine.quiet_partitions(Instant::now()) {
                    let name = topics.name(quiet.topic);
                    let at_end = match consumer.fetch_watermarks(
                        &name,
                        quiet.partition,
                        Duration::from_secs(5),
                    ) {
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
                    task.engine.set_caught_up(quiet, at_end);
                }
            }
            let (now, wall) = (Instant::now(), Utc::now());
            let mut encoded = Vec::new();
            for (updates, breaches, records) in
                in_parallel(s.tasks.values_mut().collect(), |task: &mut Task| {
                    let o = task.engine.flush(now, wall);
                    let counts = (o.updates.len() as u64, o.breaches.len() as u64);
                    let records: Vec<Record> = encode(o, &updates_topic, &breaches_topic).collect();
                    (counts.0, counts.1, records)
                })
            {
                stats.updates += updates;
                stats.breaches += breaches;
                encoded.push(records);
            }
            // Every record read so far is applied and its outputs are about to be sent: what a
            // revoked partition's checkpoint may cover.
            s.applied.clone_from(&positions);
            s.partitions = partitions;
            dead.into_iter()
                .map(|(_, r)| r)
                .chain(encoded.into_iter().flatten())
                .collect()
        };
        let records = records.into_iter();
        if stopping {
            // A shutdown waits for in-flight outputs, but not forever: past the deadline the
            // checkpoint is not written and the next owner replays from the previous one.
            tokio::time::timeout(cfg.shutdown_timeout, async {
                let mut outbox = outbox.lock().await;
                send(&mut outbox, records).await?;
                outbox.settle().await
            })
            .await
            .map_err(|_| {
                ProcessorError::Publish(format!(
                    "outputs not acknowledged within shutdown_timeout ({}); stopping without a final checkpoint",
                    humantime::format_duration(cfg.shutdown_timeout)
                ))
            })??;
        } else {
            send(&mut *outbox.lock().await, records).await?;
        }
        if read > 0 {
            batch_seconds.observe(batch_started.elapsed().as_secs_f64());
        }
        if stopping || schedule.due() {
            // Every output of the state about to become durable must be acknowledged first.
            outbox.lock().await.settle().await?;
            schedule.done();
            let started = Instant::now();
            let mut written = 0usize;
            for (p, task) in lock(&shared).tasks.iter_mut().filter(|(_, t)| t.changed) {
                written += save_checkpoint(
                    store.as_ref(),
                    &topics,
                    *p,
                    task,
                    &positions,
                    cluster.clone(),
                    partitions,
                )?;
            }
            if written > 0 {
                metrics::checkpoint_seconds()
                    .with_label_values(&[COMPONENT])
                    .observe(started.elapsed().as_secs_f64());
                tracing::debug!(bytes = written, took = ?started.elapsed(), "checkpoint written");
                commit(&consumer, &positions, &m);
            }
        }
        let (watermark, buckets, ntasks) = {
            let s = lock(&shared);
            let watermark = s.tasks.values().filter_map(|t| t.engine.watermark()).min();
            let buckets: usize = s.tasks.values().map(|t| t.engine.state_buckets()).sum();
            let uncosted: usize = s.tasks.values().map(|t| t.engine.skus_without_cost()).sum();
            uncosted_gauge.set(uncosted as i64);
            (watermark, buckets, s.tasks.len())
        };
        if let Some(wm) = watermark {
            m.watermark().set(wm.timestamp());
        }
        state_gauge.set(buckets as i64);
        if last_log.elapsed() > Duration::from_secs(10) {
            last_log = Instant::now();
            tracing::info!(
                received = stats.received,
                updates = stats.updates,
                breaches = stats.breaches,
                dead_lettered = stats.dead_lettered,
                tasks = ntasks,
                watermark = ?watermark,
                buckets,
                "processor progress"
            );
        }
        if stopping {
            lag.abort();
            tracing::info!(?stats, "processor stopped");
            return Ok(stats);
        }
    }
}

/// What applying one task's records gave, for the loop's totals.
struct TaskApplied {
    /// Dead letters, with the index of their record in the batch.
    dead: Vec<(usize, Record)>,
    duplicates: u64,
}

/// Decodes the records `rows` of `msgs` (all of `task`'s partition) and applies them to its
/// engine; counts every outcome and builds the dead letters of those refused.
fn apply_task(
    task: &mut Task,
    msgs: &[(PartitionId, BorrowedMessage<'_>)],
    rows: &[usize],
    now: Instant,
    dead_topic: &str,
    partitions: i32,
) -> Result<TaskApplied, ProcessorError> {
    let m = ComponentMetrics::new(COMPONENT);
    let mut out = TaskApplied {
        dead: Vec::new(),
        duplicates: 0,
    };
    let mut refuse = |i: usize, kind: &'static str, reason: String| {
        let msg = &msgs[i].1;
        DeadLettered {
            metrics: &m,
            stage: COMPONENT,
            kind,
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
            reason: &reason,
        }
        .emit();
        out.dead
            .push((i, dead_letter(msg, dead_topic, kind, reason)));
    };
    let mut decoded: Vec<(usize, Event)> = Vec::with_capacity(rows.len());
    for &i in rows {
        let decoding = match msgs[i].1.payload() {
            None => Err("empty record: no payload".to_string()),
            Some(bytes) => Event::from_json(bytes).map_err(|e| e.to_string()),
        };
        match decoding {
            Ok(event) => match misrouted(&event, &msgs[i].1, partitions) {
                None => decoded.push((i, event)),
                Some(reason) => {
                    metrics::source_events()
                        .with_label_values(&[event.header.source.as_str(), "dead_lettered"])
                        .inc();
                    refuse(i, "misrouted", reason);
                }
            },
            Err(reason) => {
                // Undecodable: the source is unknown.
                metrics::source_events()
                    .with_label_values(&["unknown", "dead_lettered"])
                    .inc();
                refuse(i, "invalid", reason);
            }
        }
    }
    let batch: Vec<(&Event, PartitionId)> = decoded.iter().map(|(i, e)| (e, msgs[*i].0)).collect();
    let verdicts = task.engine.apply_batch(&batch, now);
    task.changed = true;
    for ((i, event), verdict) in decoded.iter().zip(verdicts) {
        let outcome = match &verdict {
            Applied::Counted | Applied::Unused => "accepted",
            Applied::Superseded { .. } => "superseded",
            Applied::Duplicate => "duplicate",
            Applied::Late { .. } => "late",
            Applied::Rejected { .. } => "dead_lettered",
        };
        metrics::source_events()
            .with_label_values(&[event.header.source.as_str(), outcome])
            .inc();
        match verdict {
            Applied::Counted | Applied::Unused => {}
            Applied::Duplicate => out.duplicates += 1,
            Applied::Superseded { reason } => refuse(*i, "superseded", reason),
            Applied::Late { reason } => refuse(*i, "late", reason),
            Applied::Rejected { kind, reason } => refuse(*i, kind, reason),
        }
    }
    Ok(out)
}

/// Why `event`, read as `msg` from a topic with `partitions` partitions, is not this task's to
/// count, if it is not: its shop is owned by another partition, whose task counts the shop's
/// other events. Counting it here too would publish a competing value for the shop's keys.
fn misrouted(event: &Event, msg: &BorrowedMessage<'_>, partitions: i32) -> Option<String> {
    let owner = kpiflow_core::kafka::shop_partition(&event.header.shop, partitions);
    (owner != msg.partition()).then(|| {
        format!(
            "{} {}: shop {:?} belongs to partition {owner} of {} (murmur2 of the shop id over {partitions} partitions, Kafka's default partitioner) but was read from partition {}; producers must key canonical events by shop with that partitioner (librdkafka: partitioner={})",
            event.schema(),
            event.header.event_id,
            event.header.shop,
            msg.topic(),
            msg.partition(),
            kpiflow_core::kafka::PARTITIONER,
        )
    })
}

/// Runs `f` on every job, spread over the machine's cores (scoped threads: jobs may borrow
/// the batch); results in job order. One job runs on the calling thread.
fn in_parallel<T: Send, R: Send>(jobs: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    if jobs.len() <= 1 {
        return jobs.into_iter().map(f).collect();
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let per_thread = jobs.len().div_ceil(cores);
    let mut groups: Vec<Vec<T>> = Vec::new();
    for job in jobs {
        match groups.last_mut() {
            Some(g) if g.len() < per_thread => g.push(job),
            _ => groups.push(vec![job]),
        }
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|g| s.spawn(move || g.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a processor task panicked"))
            .collect()
    })
}

/// What applying assignments needs besides the loop's state.
struct Assigning<'a> {
    rx: std::sync::mpsc::Receiver<Assignment>,
    compiled: &'a Compiled,
    topics: &'a Topics,
    ready: Option<&'a AtomicBool>,
}

impl Assigning<'_> {
    /// Creates (restoring from their checkpoints) the tasks of newly assigned partitions and
    /// drops revoked ones (the rebalance callback checkpointed them before the hand-over, see
    /// [`Rebalancer::checkpoint_revoked`]); an assignment restarts the checkpoint `schedule`.
    fn apply(
        &self,
        tasks: &mut HashMap<i32, Task>,
        positions: &mut HashMap<(String, i32), i64>,
        partitions: &mut i32,
        schedule: &mut Schedule,
    ) -> Result<(), ProcessorError> {
        let (rx, compiled, topics, ready) = (&self.rx, self.compiled, self.topics, self.ready);
        while let Ok(a) = rx.try_recv() {
            match a {
                Assignment::Failed(problem) => return Err(ProcessorError::Checkpoint { problem }),
                Assignment::Layout(problem, retryable) => {
                    return Err(ProcessorError::Topics { problem, retryable });
                }
                Assignment::Revoked(ps) => {
                    for p in ps {
                        tasks.remove(&p);
                        positions.retain(|(_, q), _| *q != p);
                    }
                    tracing::info!(tasks = tasks.len(), "partitions revoked");
                }
                Assignment::Assigned(list, count) => {
                    schedule.restart();
                    *partitions = count;
                    let started = Instant::now();
                    let mut bytes = 0usize;
                    for (p, checkpoint) in list {
                        let first_revision =
                            u64::try_from(Utc::now().timestamp_micros()).unwrap_or(0);
                        let mut engine = Engine::with(compiled, first_revision);
                        let now = Instant::now();
                        if let Some(cp) = &checkpoint {
                            engine.restore(&cp.engine, now)?;
                            bytes += cp.engine.len();
                            for (suffix, next) in &cp.offsets {
                                positions
                                    .insert((format!("{}.{suffix}", topics.prefix()), p), *next);
                            }
                        }
                        for topic in Topic::EVENTS {
                            engine.register_partition(
                                PartitionId {
                                    topic,
                                    partition: p,
                                },
                                now,
                            );
                        }
                        tasks.insert(
                            p,
                            Task {
                                engine,
                                changed: false,
                            },
                        );
                    }
                    let took = started.elapsed();
                    metrics::restore_seconds()
                        .with_label_values(&[COMPONENT])
                        .observe(took.as_secs_f64());
                    tracing::info!(
                        tasks = tasks.len(),
                        restored_bytes = bytes,
                        ?took,
                        "partitions assigned and state restored"
                    );
                    if let Some(r) = ready {
                        r.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(())
    }
}

fn dead_letter(msg: &BorrowedMessage<'_>, topic: &str, kind: &str, reason: String) -> Record {
    let (key, payload) = kpiflow_core::outbox::dead_letter_record(COMPONENT, kind, reason, msg);
    Record {
        topic: topic.to_string(),
        key,
        payload,
        what: "dead letter",
    }
}

fn encode(outputs: Outputs, updates: &str, breaches: &str) -> impl Iterator<Item = Record> {
    let updates = outputs.updates.into_iter().map(move |u| Record {
        topic: updates.to_string(),
        key: u.key(),
        payload: serde_json::to_vec(&u).expect("KPI updates serialize"),
        what: "KPI update",
    });
    let breaches = outputs.breaches.into_iter().map(move |b| Record {
        topic: breaches.to_string(),
        key: b.breach_id.clone(),
        payload: serde_json::to_vec(&b).expect("breach events serialize"),
        what: "breach event",
    });
    updates.chain(breaches)
}

/// Hands records to the outbox in order (one key's records keep their order); waits only
/// while its window is full.
async fn send(
    outbox: &mut Outbox,
    records: impl Iterator<Item = Record>,
) -> Result<(), kpiflow_core::CoreError> {
    for r in records {
        outbox
            .send(Out {
                topic: &r.topic,
                key: Some(&r.key),
                payload: &r.payload,
                what: r.what,
                counted: r.what != "dead letter",
            })
            .await?;
    }
    Ok(())
}

fn commit(
    consumer: &StreamConsumer<Rebalancer>,
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
    // Offsets only report progress and lag (positions come from the checkpoints), so an
    // asynchronous commit is enough; a failure is counted and the next checkpoint retries.
    if let Err(error) = consumer.commit(&tpl, CommitMode::Async) {
        CommitFailed {
            metrics: m,
            error: &error,
        }
        .emit();
    }
}
