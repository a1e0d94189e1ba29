//! Health of one connector and shop: metrics after every sync, and `source.heartbeat` events
//! the processor's staleness rules and the dashboards read.

use chrono::{DateTime, Utc};
use kpiflow_core::SourceMetrics;
use kpiflow_schemas::{Event, EventHeader, SourceHeartbeat};

use super::emit::{Counts, Origin};
use crate::{IngestError, Publish};

/// Running totals of one connector and shop since start.
#[derive(Debug, Clone)]
pub struct Health {
    connector: &'static str,
    metrics: SourceMetrics,
    /// Last successful sync.
    pub last_success: Option<DateTime<Utc>>,
    /// Newest event time published.
    pub newest_event_time: Option<DateTime<Utc>>,
    /// Events published since start.
    pub records_published: u64,
    /// Failed syncs since start.
    pub errors: u64,
    /// Failed syncs in a row.
    pub consecutive_failures: u32,
}

impl Health {
    /// Fresh totals; the series are `metrics`.
    pub fn new(connector: &'static str, metrics: SourceMetrics) -> Health {
        Health {
            connector,
            metrics,
            last_success: None,
            newest_event_time: None,
            records_published: 0,
            errors: 0,
            consecutive_failures: 0,
        }
    }

    /// The metric series.
    pub fn metrics(&self) -> &SourceMetrics {
        &self.metrics
    }

    /// Records a sync that ended at `now`: what it published (also when it failed part-way,
    /// since those events were published) and whether it succeeded.
    pub fn record(&mut self, now: DateTime<Utc>, counts: &Counts, ok: bool) {
        self.records_published += counts.published;
        self.newest_event_time = self.newest_event_time.max(counts.newest_event_time);
        if let Some(t) = self.newest_event_time {
            self.metrics.newest_event.set(t.timestamp());
        }
        if ok {
            self.last_success = Some(now);
            self.consecutive_failures = 0;
            self.metrics.last_success.set(now.timestamp());
        } else {
            self.errors += 1;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.metrics.errors.inc();
        }
        self.metrics
            .consecutive_failures
            .set(i64::from(self.consecutive_failures));
    }

    /// The heartbeat event for `origin` at `now`.
    pub fn heartbeat(&self, origin: &Origin, now: DateTime<Utc>) -> Event {
        Event::new(
            EventHeader {
                event_id: format!(
                    "{}:{}:heartbeat:{}",
                    self.connector,
                    origin.shop,
                    now.timestamp_millis()
                ),
                source: self.connector.to_string(),
                shop: origin.shop.clone(),
                channel: origin.channel,
                marketplace: origin.marketplace.clone(),
                sku: None,
                event_time: now,
                source_tz: origin.source_tz,
                ingest_time: now,
            },
            SourceHeartbeat {
                connector: self.connector.to_string(),
                last_success: self.last_success,
                newest_event_time: self.newest_event_time,
                records_published: self.records_published,
                errors: self.errors,
                consecutive_failures: self.consecutive_failures,
            },
        )
    }

    /// Publishes the heartbeat (delivery is confirmed by the publisher's next flush).
    pub async fn publish(
        &self,
        origin: &Origin,
        now: DateTime<Utc>,
        publisher: &dyn Publish,
    ) -> Result<(), IngestError> {
        publisher.publish(&self.heartbeat(origin, now)).await
    }
}
