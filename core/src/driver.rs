//! The consume loop of a role that reads Kafka: read → stage → dead-letter → flush → commit.
//!
//! A role implements [`Stage`] (what to do with one record, how to flush what it buffered)
//! and the [`Driver`] owns everything Kafka: the subscription, the lag reporter, the flush
//! policy, dead letters through the one [`Outbox`], consumer errors, and the offset commit
//! after each flush. The guarantee is the same for every role on it:
//!
//! ```text
//!   recv ─► Stage::on_record ─► Done / DeadLetter / Stop
//!     (every max_records records, max_wait after the first, at shutdown)
//!   Stage::on_flush ─► Outbox::settle (dead letters at Kafka) ─► commit owned offsets
//! ```
//!
//! An offset is committed only after the flush that made its record durable succeeded and
//! its dead letter (if any) was acknowledged: at-least-once, and a crash replays at most
//! the records since the last flush. Offsets of a partition revoked meanwhile are dropped,
//! never committed (its new owner commits its own progress).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::internal_events::{CommitFailed, ConsumerErrored, DeadLettered, RevokedBeforeCommit};
use crate::{ComponentMetrics, CoreError, KafkaConfig, Outbox, metrics};

/// Pause after a consumer error, so a broken connection does not spin the loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(200);

/// What a stage made of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Handled (buffered, delivered, or deliberately ignored): its offset is committed at
    /// the next flush.
    Done,
    /// Refused: the record goes to the dead-letter topic with `reason` (and is counted as
    /// dropped with `kind`), then its offset is committed like a handled one.
    DeadLetter {
        /// Short machine-readable class, e.g. `invalid`, `rejected`.
        kind: &'static str,
        /// What is wrong with the record, naming the field and value.
        reason: String,
    },
    /// Shutdown came while the stage was handling the record: it is not committed (the next
    /// start handles it again) and the driver stops after flushing what came before.
    Stop,
}

/// One role's logic on the records it reads; the [`Driver`] calls it.
pub trait Stage {
    /// The role's error type; Kafka failures of the driver convert into it.
    type Error: From<CoreError>;

    /// Handles one record with a payload (tombstones are counted and skipped by the driver).
    /// `shutdown` is for stages that wait (retries): on it they return [`Verdict::Stop`].
    fn on_record(
        &mut self,
        m: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Result<Verdict, Self::Error>> + Send;

    /// Makes what the records since the last flush produced durable; the driver commits
    /// their offsets once it returns `Ok`. An error stops the driver without committing.
    fn on_flush(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// How often [`Stage::on_tick`] runs (first tick at once); `None` (the default) never.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Periodic work beside consuming (e.g. re-sending open alerts).
    fn on_tick(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// When the driver flushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Flush once this many records were read since the last flush (1: after every record).
    pub max_records: usize,
    /// Flush this long after the first record read since the last flush.
    pub max_wait: Duration,
}

/// What the driver counted while it ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Records read (tombstones included).
    pub received: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Flushes that had records to make durable.
    pub flushes: u64,
}

/// The consume loop of one consumer group member; see the module docs.
pub struct Driver {
    kafka: KafkaConfig,
    group: String,
    topics: Vec<String>,
    stage_name: String,
    dead_letter_topic: String,
    metrics: ComponentMetrics,
    policy: FlushPolicy,
}

impl Driver {
    /// A member of `group` reading `topics`; `stage_name` names it in dead letters and logs,
    /// `metrics` is the component it counts under.
    pub fn new(
        kafka: &KafkaConfig,
        group: &str,
        topics: Vec<String>,
        stage_name: &str,
        metrics: ComponentMetrics,
        policy: FlushPolicy,
    ) -> Driver {
        Driver {
            dead_letter_topic: kafka.topics().name(kpiflow_schemas::Topic::DeadLetter),
            kafka: kafka.clone(),
            group: group.to_string(),
            topics,
            stage_name: stage_name.to_string(),
            metrics,
            policy: FlushPolicy {
                max_records: policy.max_records.max(1),
                ..policy
            },
        }
    }

    /// Subscribes, then runs `stage` until `shutdown` (or a [`Verdict::Stop`]); at the end
    /// everything read is flushed and committed. `on_subscribed` runs once the subscription
    /// is made (readiness). An error stops the loop without committing what was not flushed.
    pub async fn run<S: Stage + Send>(
        &self,
        stage: &mut S,
        on_subscribed: impl FnOnce(),
        shutdown: &CancellationToken,
    ) -> Result<DriverStats, S::Error> {
        let consumer = Arc::new(self.kafka.consumer(&self.group)?);
        let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|e| {
            CoreError::kafka(format!("subscribing to {}", self.topics.join(", ")), e)
        })?;
        let lag = crate::kafka::spawn_lag_reporter(
            self.kafka.clone(),
            self.group.clone(),
            self.topics.clone(),
            self.metrics.clone(),
            shutdown.clone(),
        );
        on_subscribed();
        let mut run = Run {
            driver: self,
            consumer: &consumer,
            outbox: Outbox::new(self.kafka.producer()?, self.metrics.clone()),
            pending: HashMap::new(),
            unflushed: 0,
            stats: DriverStats::default(),
        };
        let result = run.consume(stage, shutdown).await;
        let stats = run.stats;
        lag.abort();
        // Closing a consumer blocks while it leaves the group; keep that off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        result.map(|()| stats)
    }
}

/// One run's state: the consumer, the dead-letter outbox, offsets awaiting commit.
struct Run<'a> {
    driver: &'a Driver,
    consumer: &'a Arc<StreamConsumer>,
    outbox: Outbox,
    /// Next offset to commit per (topic, partition): last handled offset + 1.
    pending: HashMap<(String, i32), i64>,
    /// Records read since the last flush.
    unflushed: usize,
    stats: DriverStats,
}

impl Run<'_> {
    async fn consume<S: Stage + Send>(
        &mut self,
        stage: &mut S,
        shutdown: &CancellationToken,
    ) -> Result<(), S::Error> {
        let mut ticks = stage.tick_interval().map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        // When the oldest unflushed record must be flushed; `None` while nothing waits.
        let mut deadline: Option<Instant> = None;
        loop {
            let due = deadline;
            let timer = async move {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let tick = async {
                match ticks.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return self.flush(stage).await,
                () = timer => {
                    self.flush(stage).await?;
                    deadline = None;
                }
                () = tick => stage.on_tick().await,
                received = self.consumer.recv() => match received {
                    Ok(m) => {
                        if !self.handle(stage, &m, shutdown).await? {
                            return self.flush(stage).await;
                        }
                        deadline.get_or_insert_with(|| Instant::now() + self.driver.policy.max_wait);
                        if self.unflushed >= self.driver.policy.max_records {
                            self.flush(stage).await?;
                            deadline = None;
                        }
                    }
                    Err(e) => self.consumer_error(e).await?,
                },
            }
        }
    }

    /// Hands one record to the stage and notes its offset; `false` on [`Verdict::Stop`].
    async fn handle<S: Stage + Send>(
        &mut self,
        stage: &mut S,
        m: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> Result<bool, S::Error> {
        let metrics = &self.driver.metrics;
        metrics.received.inc();
        self.stats.received += 1;
        if m.payload().is_none() {
            // A tombstone deletes a key on a compacted topic; nothing to handle.
            metrics.dropped("tombstone", 1);
        } else {
            match stage.on_record(m, shutdown).await? {
                Verdict::Done => {}
                Verdict::DeadLetter { kind, reason } => self.dead_letter(m, kind, reason).await?,
                Verdict::Stop => return Ok(false),
            }
        }
        self.pending
            .insert((m.topic().to_string(), m.partition()), m.offset() + 1);
        self.unflushed += 1;
        Ok(true)
    }

    /// Sends `m`'s dead letter; it is settled before any commit past `m`.
    async fn dead_letter(
        &mut self,
        m: &BorrowedMessage<'_>,
        kind: &'static str,
        reason: String,
    ) -> Result<(), CoreError> {
        let stage = self.driver.stage_name.as_str();
        DeadLettered {
            metrics: &self.driver.metrics,
            stage,
            kind,
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            reason: &reason,
        }
        .emit();
        self.outbox
            .dead_letter(&self.driver.dead_letter_topic, stage, kind, reason, m)
            .await?;
        self.stats.dead_lettered += 1;
        Ok(())
    }

    /// Flushes the stage (when it read anything since the last flush), then commits.
    async fn flush<S: Stage + Send>(&mut self, stage: &mut S) -> Result<(), S::Error> {
        if self.unflushed > 0 {
            stage.on_flush().await?;
            self.unflushed = 0;
            self.stats.flushes += 1;
        }
        Ok(self.commit().await?)
    }

    /// Commits the pending offsets of the partitions this consumer still owns, once every
    /// dead letter is at Kafka. A failed commit keeps them for the next flush (only
    /// duplicates are at stake).
    async fn commit(&mut self) -> Result<(), CoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // A record's only trace may be its dead letter: it must be at Kafka first.
        self.outbox.settle().await?;
        let assignment = self
            .consumer
            .assignment()
            .map_err(|e| CoreError::kafka("reading the assignment", e))?;
        let mut tpl = TopicPartitionList::new();
        self.pending.retain(|(topic, partition), next| {
            let owned = assignment.find_partition(topic, *partition).is_some();
            if owned {
                // Adding to a fresh list only fails for an invalid offset, which `next` is not.
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
            } else {
                RevokedBeforeCommit {
                    topic,
                    partition: *partition,
                }
                .emit();
            }
            owned
        });
        if tpl.count() == 0 {
            return Ok(());
        }
        let c = Arc::clone(self.consumer);
        let started = std::time::Instant::now();
        let committed = tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| CoreError::KafkaAdmin(format!("commit task failed: {e}")))?;
        metrics::commit_seconds()
            .with_label_values(&[self.driver.metrics.component()])
            .observe(started.elapsed().as_secs_f64());
        match committed {
            Ok(()) => self.pending.clear(),
            Err(error) => CommitFailed {
                metrics: &self.driver.metrics,
                error: &error,
            }
            .emit(),
        }
        Ok(())
    }

    async fn consumer_error(&mut self, e: KafkaError) -> Result<(), CoreError> {
        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            return Err(CoreError::kafka(
                format!("consuming {}", self.driver.topics.join(", ")),
                e,
            ));
        }
        // Broker restarts and rebalances surface here and heal by themselves.
        ConsumerErrored {
            metrics: &self.driver.metrics,
            error: &e,
        }
        .emit();
        tokio::time::sleep(ERROR_BACKOFF).await;
        Ok(())
    }
}
