//! The alert stage: deliver each breach with retries, re-send the open ones; the driver
//! ([`kpiflow_core::driver`]) consumes and commits each breach once its receiver accepted it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use kpiflow_core::metrics::{self, ComponentMetrics, Readiness};
use kpiflow_core::{Driver, FlushPolicy, KafkaConfig, PartitionLag, Stage, Verdict};
use kpiflow_schemas::{BreachEvent, BreachState, Topic, Topics};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::{AlertSink, AlertsConfig, sinks};
use crate::SinkError;

/// Longest the start-up rebuild may go without reading anything before it gives up.
const REBUILD_STALL: Duration = Duration::from_secs(60);
/// Kafka round-trip timeout of the rebuild's offset look-ups.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// What one alert sink did, returned when [`run_alerts`] stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertStats {
    /// The sink kind.
    pub sink: &'static str,
    /// Breaches open after the start-up rebuild.
    pub restored_open: usize,
    /// Breach records read from Kafka.
    pub received: u64,
    /// Breach transitions the receiver accepted.
    pub delivered: u64,
    /// Delivery attempts that failed and were retried.
    pub retries: u64,
    /// Records dead-lettered (undecodable, or refused for good by the receiver).
    pub dead_lettered: u64,
    /// Re-sends of the open breaches that the receiver accepted.
    pub resends: u64,
}

/// Runs every enabled alert sink until `shutdown`; each has its own consumer group
/// (`<group_id>.<kind>`) and its own readiness part (`alerts.<kind>`, ready once its open
/// breaches are rebuilt). Returns immediately with no stats when none is enabled.
pub async fn run_alerts(
    kafka: &KafkaConfig,
    cfg: &AlertsConfig,
    readiness: Option<&Readiness>,
    shutdown: CancellationToken,
) -> Result<Vec<AlertStats>, SinkError> {
    kafka.validate()?;
    let sinks = sinks(cfg)?;
    if sinks.is_empty() {
        return Ok(Vec::new());
    }
    kafka.ensure_topics().await?;
    let runs = sinks.into_iter().map(|sink| {
        let ready = readiness.map(|r| r.part(sink.component()));
        let shutdown = shutdown.clone();
        async move {
            let result = Runner::new(kafka, cfg, sink)
                .run(ready, shutdown.clone())
                .await;
            // One sink failing stops the others: the process exits and is restarted whole.
            if result.is_err() {
                shutdown.cancel();
            }
            result
        }
    });
    futures::future::join_all(runs).await.into_iter().collect()
}

struct Runner<'a> {
    kafka: &'a KafkaConfig,
    cfg: &'a AlertsConfig,
    sink: Box<dyn AlertSink>,
    group: String,
    topics: Topics,
    metrics: ComponentMetrics,
    /// Firing breaches by id, as delivered.
    open: BTreeMap<String, BreachEvent>,
    stats: AlertStats,
}

impl<'a> Runner<'a> {
    fn new(kafka: &'a KafkaConfig, cfg: &'a AlertsConfig, sink: Box<dyn AlertSink>) -> Self {
        // Series exist from the start at zero, for rate() and the dashboards.
        let _ = metrics::sink_write_errors().with_label_values(&[sink.kind()]);
        for state in ["firing", "resolved"] {
            let _ = metrics::alerts_sent().with_label_values(&[sink.kind(), state]);
        }
        Runner {
            group: format!("{}.{}", cfg.group_id, sink.kind()),
            topics: kafka.topics(),
            metrics: ComponentMetrics::new(sink.component()),
            stats: AlertStats {
                sink: sink.kind(),
                ..AlertStats::default()
            },
            kafka,
            cfg,
            sink,
            open: BTreeMap::new(),
        }
    }

    async fn run(
        mut self,
        ready: Option<Arc<AtomicBool>>,
        shutdown: CancellationToken,
    ) -> Result<AlertStats, SinkError> {
        let topic = self.topics.name(Topic::Breaches);
        if self.sink.resend_interval().is_some() {
            self.rebuild(&topic).await?;
        }
        // One record at a time: a breach is committed once its receiver accepted it.
        let driver = Driver::new(
            self.kafka,
            &self.group,
            vec![topic],
            self.sink.component(),
            self.metrics.clone(),
            FlushPolicy {
                max_records: 1,
                max_wait: Duration::ZERO,
            },
        );
        let (kind, group, open) = (self.sink.kind(), self.group.clone(), self.open.len());
        let started = || {
            if let Some(r) = &ready {
                r.store(true, Ordering::Relaxed);
            }
            tracing::info!(sink = kind, %group, open, "alert sink started");
        };
        match driver.run(&mut self, started, &shutdown).await {
            Ok(counted) => {
                self.stats.received = counted.received;
                self.stats.dead_lettered = counted.dead_lettered;
                tracing::info!(stats = ?self.stats, "alert sink stopped");
                Ok(self.stats)
            }
            Err(e) => {
                self.metrics.error(e.kind());
                Err(e)
            }
        }
    }

    /// Rebuilds the open breaches from what this group delivered before: every record of the
    /// breaches topic below the group's committed offsets, replayed in order per partition
    /// (a breach's events share a key, so a partition).
    async fn rebuild(&mut self, topic: &str) -> Result<(), SinkError> {
        let (kafka, group, topic) = (self.kafka.clone(), self.group.clone(), topic.to_string());
        let delivered = tokio::task::spawn_blocking(move || read_delivered(&kafka, &group, &topic))
            .await
            .map_err(|e| SinkError::Internal(format!("rebuild task failed: {e}")))??;
        for b in delivered {
            self.track(&b);
        }
        self.stats.restored_open = self.open.len();
        self.export_open();
        Ok(())
    }

    /// Applies a transition to the open set; returns the firing event a resolve closes.
    fn track(&mut self, b: &BreachEvent) -> Option<BreachEvent> {
        match b.state {
            BreachState::Firing => {
                // A repeated firing keeps the first: its time is when the breach opened.
                self.open
                    .entry(b.breach_id.clone())
                    .or_insert_with(|| b.clone());
                None
            }
            BreachState::Resolved => self.open.remove(&b.breach_id),
        }
    }

    fn export_open(&self) {
        metrics::alerts_open()
            .with_label_values(&[self.sink.kind()])
            .set(i64::try_from(self.open.len()).unwrap_or(i64::MAX));
    }

    async fn resend(&mut self) {
        if self.open.is_empty() {
            return;
        }
        match self.sink.resend(self.open.values().collect()).await {
            Ok(()) => self.stats.resends += 1,
            Err(e) => {
                // The next tick tries again; firing alerts are held 4 intervals.
                metrics::sink_write_errors()
                    .with_label_values(&[self.sink.kind()])
                    .inc();
                self.metrics.error(e.kind());
                tracing::warn!(sink = self.sink.kind(), error = %e, "re-sending open alerts failed");
            }
        }
    }
}

impl Stage for Runner<'_> {
    type Error = SinkError;

    /// Delivers one breach transition, retrying with back-off while the receiver may recover.
    async fn on_record(
        &mut self,
        m: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> Result<Verdict, SinkError> {
        let breach = match BreachEvent::from_json(m.payload().unwrap_or_default()) {
            Ok(b) => b,
            Err(e) => {
                return Ok(Verdict::DeadLetter {
                    kind: "invalid",
                    reason: e.to_string(),
                });
            }
        };
        let opened = self.track(&breach);
        self.export_open();
        let mut delay = self.cfg.retry_initial;
        loop {
            match self.sink.deliver(&breach, opened.as_ref()).await {
                Ok(()) => {
                    self.metrics.sent.inc();
                    self.stats.delivered += 1;
                    metrics::alerts_sent()
                        .with_label_values(&[self.sink.kind(), breach.state.as_str()])
                        .inc();
                    let latency = (Utc::now() - breach.emitted_at)
                        .to_std()
                        .unwrap_or_default();
                    metrics::event_latency_seconds()
                        .with_label_values(&[self.sink.component()])
                        .observe(latency.as_secs_f64());
                    return Ok(Verdict::Done);
                }
                Err(e) if e.is_retryable() => {
                    metrics::sink_write_errors()
                        .with_label_values(&[self.sink.kind()])
                        .inc();
                    self.metrics.error(e.kind());
                    self.stats.retries += 1;
                    tracing::warn!(
                        sink = self.sink.kind(),
                        breach = %breach.breach_id,
                        error = %e,
                        retry_in = ?delay,
                        "delivery failed; retrying"
                    );
                    tokio::select! {
                        // Not committed: the next start delivers it again.
                        () = shutdown.cancelled() => return Ok(Verdict::Stop),
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(self.cfg.retry_max);
                }
                Err(e) => {
                    metrics::sink_write_errors()
                        .with_label_values(&[self.sink.kind()])
                        .inc();
                    return Ok(Verdict::DeadLetter {
                        kind: "rejected",
                        reason: e.to_string(),
                    });
                }
            }
        }
    }

    /// Re-sends the open breaches; the first tick is at once, so after a restart
    /// Alertmanager hears of every open breach even if it forgot them while kpiflow was down.
    fn tick_interval(&self) -> Option<Duration> {
        self.sink.resend_interval()
    }

    async fn on_tick(&mut self) {
        self.resend().await;
    }
}

/// Reads, in order per partition, every decodable breach event below `group`'s committed
/// offsets on `topic`. Blocking.
fn read_delivered(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
) -> Result<Vec<BreachEvent>, SinkError> {
    let lags = kafka.group_lag(group, &[topic.to_string()], KAFKA_TIMEOUT)?;
    let mut targets: HashMap<i32, i64> = lags
        .iter()
        .filter(|l| l.committed > 0)
        .map(|l: &PartitionLag| (l.partition, l.committed))
        .collect();
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let mut client = kafka.client_config()?;
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = client
        .create()
        .map_err(|e| SinkError::kafka("creating the rebuild consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    for p in targets.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(|e| SinkError::kafka("assigning partitions for the rebuild", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| SinkError::kafka("assigning partitions for the rebuild", e))?;
    let mut events = Vec::new();
    let mut last_progress = std::time::Instant::now();
    while !targets.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                last_progress = std::time::Instant::now();
                let Some(target) = targets.get(&m.partition()).copied() else {
                    continue;
                };
                if m.offset() < target
                    && let Some(b) = m.payload().and_then(|p| BreachEvent::from_json(p).ok())
                {
                    events.push(b);
                }
                if m.offset() + 1 >= target {
                    targets.remove(&m.partition());
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "rebuild read error; continuing"),
            None => {
                // Transaction markers and retention gaps have no message: ask the position.
                if let Ok(pos) = consumer.position() {
                    for e in pos.elements_for_topic(topic) {
                        if let Offset::Offset(o) = e.offset()
                            && targets.get(&e.partition()).is_some_and(|t| o >= *t)
                        {
                            targets.remove(&e.partition());
                        }
                    }
                }
                if !targets.is_empty() && last_progress.elapsed() > REBUILD_STALL {
                    return Err(SinkError::Kafka {
                        context: format!(
                            "rebuilding open breaches: nothing read from {topic} for {REBUILD_STALL:?}"
                        ),
                        source: KafkaError::NoMessageReceived,
                    });
                }
            }
        }
    }
    Ok(events)
}
