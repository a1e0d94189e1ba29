//! The sink's stage: decode, buffer, write Parquet; the driver commits offsets after it.
//!
//! The Kafka loop (read, dead-letter, flush policy, commit) is [`kpiflow_core::driver`]'s;
//! the flush policy is `roll_rows` records or `roll_interval` after the first.
//!
//! ```text
//!  recv ─► decode ─┬─ ok ──► gauges + live view (at once) ─► buffer ──┐
//!                  └─ bad ─► dead-letter topic (awaited) ─────────────┤ offset noted
//!                                                                     ▼
//!   roll_rows reached, roll_interval passed, or shutdown ─► flush: write files (atomic)
//!                                                                ─► commit offsets (sync)
//! ```
//!
//! Guarantee: at-least-once. An offset is committed only after every record before it is in
//! a committed file (or on the dead-letter topic), so a crash loses nothing; it may write
//! the last flush's rows again. The same holds when a partition is revoked between a write
//! and its commit: the new owner starts from the last committed offset and writes those rows
//! a second time. Readers use the `kpi_latest` view, which keeps one row per key.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kpiflow_core::metrics::{self, ComponentMetrics};
use kpiflow_core::{Driver, FlushPolicy, KafkaConfig, Stage, Verdict};
use kpiflow_schemas::{BreachEvent, Event, KpiUpdate, Topic, Topics};
use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;

use crate::parquet::store::TableStore;
use crate::parquet::{Table, TableRow, remove_abandoned_temp_files};
use crate::{KpiGauges, LiveView, SinkConfig, SinkError};

/// Where temp files cannot be locked, those older than this are debris of a crashed writer
/// (a write takes seconds).
const UNLOCKABLE_TEMP_AGE: Duration = Duration::from_secs(3600);
/// The sink's name in metrics, logs and dead letters.
const COMPONENT: &str = "sink";
/// How long start-up waits for a broker to answer before giving up (and being restarted).
const BROKER_WAIT: Duration = Duration::from_secs(60);

/// What one [`run`] did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Records read from Kafka.
    pub received: u64,
    /// Rows committed to `kpi_values`.
    pub kpi_rows: u64,
    /// Rows committed to `breaches`.
    pub breach_rows: u64,
    /// Rows committed to `events` (the archive, when on).
    pub event_rows: u64,
    /// Event records not archived because they do not decode or do not fit the table (the
    /// processor dead-letters them; the sink counts them as dropped, reason `not_archived`).
    pub events_not_archived: u64,
    /// Parquet files committed.
    pub files: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Flushes that had records to write.
    pub flushes: u64,
}

/// Runs the sink until `shutdown` is cancelled, then flushes, commits and returns.
///
/// Consumes the KPI update and breach topics (names from `kafka.topics()`) in consumer group
/// `cfg.group_id`; writes Parquet under `cfg.dir`; exports the current window of every KPI
/// series and the open breaches as Prometheus gauges; feeds `live` if given. A record that
/// does not decode is published to the dead-letter topic and counted as dropped (`invalid`);
/// the sink keeps going.
///
/// `guard`, when given, is rebuilt from the table's open breaches and the whole breaches
/// topic, and follows it ([`crate::guard`]); with `[sink.guard.webhook]` it pushes pause and
/// resume until this returns ([`crate::guard_webhook`]).
///
/// `ready` (the sink's `/readyz` part) turns true once a broker answered, the topics exist and
/// the open breaches are restored from Parquet: from then on `/metrics` tells the truth.
///
/// Errors stop the sink without committing what was not written, so restarting it is always
/// safe; [`SinkError::is_retryable`] tells whether a restart may help.
pub async fn run(
    kafka: &KafkaConfig,
    cfg: &SinkConfig,
    live: Option<LiveView>,
    guard: Option<crate::Guard>,
    ready: Option<Arc<AtomicBool>>,
    shutdown: CancellationToken,
) -> Result<SinkStats, SinkError> {
    cfg.validate()?;
    kafka.validate()?;
    let tables = TableStore::open(&cfg.dir, &cfg.object_store)?;
    let topics = kafka.topics();
    kafka.wait_until_reachable(BROKER_WAIT).await?;
    kafka.ensure_topics().await?;
    let metrics = ComponentMetrics::new(COMPONENT);
    // Series exist from the start at zero, so rate() and the dashboards see them before the
    // first error or cut.
    let _ = metrics::sink_write_errors().with_label_values(&["parquet"]);
    for reason in ["sku", "campaign", "limit"] {
        let _ = metrics::kpi_series_cut().with_label_values(&[reason]);
    }
    let _ = metrics::kpi_series();

    match remove_abandoned_temp_files_at_start(&tables).await {
        Ok(_) => {}
        // Debris costs disk space only (readers skip temp files): not a reason to stop.
        Err(e) => tracing::warn!(error = %e, "could not clean up temporary files"),
    }

    let mut gauges = KpiGauges::with_guard(cfg.prometheus);
    // Breaches that opened in an earlier run stay open on /metrics after a restart: their
    // firing events were committed and will not be read again.
    let open = match crate::query::open_breaches(&tables).await {
        Ok(open) => {
            gauges.restore_open(&open);
            open
        }
        Err(e) => {
            metrics.error(e.kind());
            tracing::warn!(error = %e, "could not restore open breaches from Parquet");
            Vec::new()
        }
    };
    // The guard reads the whole breaches topic itself (after the table's open breaches,
    // whose firing events retention may have deleted): a gate must know every breach. Its
    // webhook's sender starts first, so the syncs at ready and every later change are pushed;
    // it stops when this function returns (the next start syncs what it still held).
    let webhook_stop = shutdown.child_token();
    let _stop_webhook = webhook_stop.clone().drop_guard();
    let mut guard_webhook = None;
    let _guard_reader = match &guard {
        Some(g) => {
            guard_webhook = g.start_webhook(webhook_stop.clone())?;
            Some(g.follow(kafka, &open, shutdown.clone())?)
        }
        None => None,
    };

    let mut subscribed = vec![topics.name(Topic::KpiUpdates), topics.name(Topic::Breaches)];
    if cfg.events_archive {
        subscribed.extend(Topic::EVENTS.iter().map(|t| topics.name(*t)));
    }
    let driver = Driver::new(
        kafka,
        &cfg.group_id,
        subscribed.clone(),
        COMPONENT,
        metrics.clone(),
        FlushPolicy {
            max_records: cfg.roll_rows,
            max_wait: cfg.roll_interval,
        },
    );
    let dir = tables.to_string();
    let started = || {
        if let Some(r) = &ready {
            r.store(true, Ordering::Relaxed);
        }
        tracing::info!(
            group = %cfg.group_id,
            topics = %subscribed.join(", "),
            %dir,
            "sink started"
        );
    };
    let mut sink = Sink {
        cfg,
        tables,
        topics,
        metrics,
        gauges,
        live,
        kpis: Vec::new(),
        breaches: Vec::new(),
        events: Vec::new(),
        stats: SinkStats::default(),
    };
    // At shutdown, everything read so far is written and committed before returning.
    let result = driver.run(&mut sink, started, &shutdown).await;
    if let Some(task) = guard_webhook {
        webhook_stop.cancel();
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "the guard webhook's sender failed");
        }
    }
    match result {
        Ok(counted) => {
            sink.stats.received = counted.received;
            sink.stats.dead_lettered = counted.dead_lettered;
            sink.stats.flushes = counted.flushes;
            tracing::info!(stats = ?sink.stats, "sink stopped");
            Ok(sink.stats)
        }
        Err(e) => {
            sink.metrics.error(e.kind());
            Err(e)
        }
    }
}

/// The sink's first step on its tables, before it consumes: removes the temp files a killed
/// sink (or compaction) left, whatever their age, and keeps those a live writer still holds
/// (see [`remove_abandoned_temp_files`]). Returns how many went.
///
/// Temp files exist only in local folders: in a bucket a file is one PUT of the whole
/// object, which S3 makes visible only once complete, so a killed writer leaves nothing.
pub async fn remove_abandoned_temp_files_at_start(tables: &TableStore) -> Result<usize, SinkError> {
    let Some(dir) = tables.local().map(std::path::Path::to_path_buf) else {
        return Ok(0);
    };
    tokio::task::spawn_blocking(move || remove_abandoned_temp_files(&dir, UNLOCKABLE_TEMP_AGE))
        .await
        .map_err(|e| SinkError::Internal(format!("clean-up task failed: {e}")))?
}

/// A decoded record, ready to buffer.
enum Row {
    Kpi(KpiUpdate),
    Breach(BreachEvent),
    Event(Box<Event>),
}

struct Sink<'a> {
    cfg: &'a SinkConfig,
    tables: TableStore,
    topics: Topics,
    metrics: ComponentMetrics,
    gauges: KpiGauges,
    live: Option<LiveView>,
    kpis: Vec<KpiUpdate>,
    breaches: Vec<BreachEvent>,
    events: Vec<Event>,
    stats: SinkStats,
}

impl Stage for Sink<'_> {
    type Error = SinkError;

    /// Decodes one record into the buffer (or refuses it for the dead-letter topic); gauges
    /// and the live view see it at once.
    async fn on_record(
        &mut self,
        m: &BorrowedMessage<'_>,
        _shutdown: &CancellationToken,
    ) -> Result<Verdict, SinkError> {
        let payload = m.payload().unwrap_or_default();
        match self.decode(m.topic(), payload) {
            Ok(Row::Kpi(u)) => {
                self.gauges.apply_kpi(&u);
                if let Some(live) = &self.live {
                    live.apply_kpi(&u);
                }
                self.kpis.push(u);
            }
            Ok(Row::Breach(b)) => {
                self.gauges.apply_breach(&b);
                if let Some(live) = &self.live {
                    live.apply_breach(&b);
                }
                self.breaches.push(b);
            }
            Ok(Row::Event(e)) => self.events.push(*e),
            // The processor reads the same record and dead-letters it with the reason; a
            // second dead letter from the archive would only double the noise.
            Err(reason) if self.is_event_topic(m.topic()) => {
                tracing::debug!(topic = m.topic(), %reason, "event not archived");
                self.metrics.dropped("not_archived", 1);
                self.stats.events_not_archived += 1;
            }
            Err(reason) => {
                return Ok(Verdict::DeadLetter {
                    kind: "invalid",
                    reason,
                });
            }
        }
        Ok(Verdict::Done)
    }

    /// Writes the buffers to Parquet (atomic files); the driver commits their offsets next.
    async fn on_flush(&mut self) -> Result<(), SinkError> {
        self.write().await
    }
}

impl Sink<'_> {
    fn decode(&self, topic: &str, payload: &[u8]) -> Result<Row, String> {
        fn storable<R: TableRow>(r: R) -> Result<R, String> {
            r.check_storable().map(|()| r).map_err(|e| e.to_string())
        }
        match self.topics.parse(topic) {
            Some(Topic::KpiUpdates) => KpiUpdate::from_json(payload)
                .map_err(|e| e.to_string())
                .and_then(storable)
                .map(Row::Kpi),
            Some(Topic::Breaches) => BreachEvent::from_json(payload)
                .map_err(|e| e.to_string())
                .and_then(storable)
                .map(Row::Breach),
            Some(t) if self.cfg.events_archive && Topic::EVENTS.contains(&t) => {
                Event::from_json(payload)
                    .map_err(|e| e.to_string())
                    .and_then(storable)
                    .map(|e| Row::Event(Box::new(e)))
            }
            _ => Err(format!("topic {topic:?} is not one the sink subscribed to")),
        }
    }

    fn is_event_topic(&self, topic: &str) -> bool {
        self.topics
            .parse(topic)
            .is_some_and(|t| Topic::EVENTS.contains(&t))
    }

    /// Writes the buffers to Parquet, counting files and rows.
    async fn write(&mut self) -> Result<(), SinkError> {
        let kpis = std::mem::take(&mut self.kpis);
        let breaches = std::mem::take(&mut self.breaches);
        let events = std::mem::take(&mut self.events);
        let compression = self.cfg.compression;
        // Publish times, for the end-to-end latency once the files are in place.
        let emitted: Vec<_> = kpis
            .iter()
            .map(|k| k.emitted_at)
            .chain(breaches.iter().map(|b| b.emitted_at))
            .collect();
        let written = async {
            let mut files = self.tables.write(kpis, compression).await?;
            files.extend(self.tables.write(breaches, compression).await?);
            files.extend(self.tables.write(events, compression).await?);
            Ok::<_, SinkError>(files)
        }
        .await;
        let files = written.inspect_err(|_| {
            metrics::sink_write_errors()
                .with_label_values(&["parquet"])
                .inc();
        })?;
        let now = chrono::Utc::now();
        let latency = metrics::event_latency_seconds().with_label_values(&["sink"]);
        for at in emitted {
            latency.observe((now - at).to_std().unwrap_or_default().as_secs_f64());
        }

        for f in &files {
            let rows = f.rows as u64;
            metrics::sink_files()
                .with_label_values(&[f.table.name()])
                .inc();
            metrics::sink_rows()
                .with_label_values(&[f.table.name()])
                .inc_by(rows);
            self.metrics.sent.inc_by(rows);
            self.stats.files += 1;
            match f.table {
                Table::KpiValues => self.stats.kpi_rows += rows,
                Table::Breaches => self.stats.breach_rows += rows,
                Table::Events => self.stats.event_rows += rows,
            }
            tracing::debug!(path = %f.path.display(), rows, "committed file");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Compression;
    use crate::parquet::tests::{files_under, kpi_fixtures};
    use crate::parquet::write_rows;

    #[tokio::test]
    async fn start_up_removes_a_killed_sinks_temp_files_and_keeps_finished_files() {
        let dir = tempfile::tempdir().unwrap();
        let finished = write_rows(dir.path(), &kpi_fixtures(), Compression::Zstd).unwrap();
        let mut before: Vec<_> = finished.iter().map(|f| f.path.clone()).collect();
        before.sort();
        let bytes: Vec<Vec<u8>> = before.iter().map(|p| std::fs::read(p).unwrap()).collect();
        // Two half-written files, as 10 SIGKILLs left them, next to finished ones.
        let stale = [
            finished[0]
                .path
                .with_file_name(".part-20250314T101500.000Z-a.parquet.tmp"),
            dir.path()
                .join("breaches/date=2025-03-14/.part-20250314T101500.000Z-b.parquet.tmp"),
        ];
        std::fs::create_dir_all(stale[1].parent().unwrap()).unwrap();
        for p in &stale {
            std::fs::write(p, b"PAR1 half a file").unwrap();
        }

        let removed = remove_abandoned_temp_files_at_start(&TableStore::from(dir.path()))
            .await
            .unwrap();
        assert_eq!(removed, 2);
        assert!(
            stale.iter().all(|p| !p.exists()),
            "both temp files are gone"
        );
        assert_eq!(files_under(dir.path()), before, "finished files stay");
        let after: Vec<Vec<u8>> = before.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert_eq!(after, bytes, "finished files are untouched");
    }
}
