//! Counters of a push connector: Prometheus series plus an in-process snapshot for tests and logs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kpiflow_core::ComponentMetrics;

use super::health::PushHealth;
use super::queue::Delivery;

/// What a receiver has seen since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Deliveries (requests, files' rows) that reached the receiver.
    pub received: u64,
    /// Events acknowledged by the publisher.
    pub published: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Deliveries recognised as retries of acknowledged ones and not published again.
    pub duplicates: u64,
    /// Deliveries refused before parsing, by reason (e.g. `signature_mismatch`, `too_large`).
    pub rejected: BTreeMap<String, u64>,
    /// Connections and requests the HTTP server refused before the handler, by reason
    /// (see [`super::events::reasons`]).
    pub refused: BTreeMap<String, u64>,
    /// Connections open now.
    pub connections_open: u64,
}

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    published: AtomicU64,
    dead_lettered: AtomicU64,
    duplicates: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
    refused: Mutex<BTreeMap<String, u64>>,
    connections_open: AtomicU64,
}

/// Adds one to `map[reason]`.
fn bump(map: &Mutex<BTreeMap<String, u64>>, reason: &str) {
    *map.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(reason.to_string())
        .or_default() += 1;
}

/// The counters of one push connector.
///
/// Prometheus: `received`, `dropped{reason}` for rejections and `duplicates` are counted here;
/// `sent` and `dropped{reason=<dead-letter kind>}` are counted by the [`crate::KafkaPublisher`]
/// when it acknowledges, so the binary builds the publisher with the same component.
#[derive(Clone)]
pub struct PushMetrics {
    metrics: ComponentMetrics,
    counts: Arc<Counts>,
    health: Option<Arc<PushHealth>>,
}

impl PushMetrics {
    /// Counters for `component`, e.g. `ingest.shopify_webhook`.
    pub fn new(component: &'static str) -> PushMetrics {
        PushMetrics {
            metrics: ComponentMetrics::new(component),
            counts: Arc::default(),
            health: None,
        }
    }

    /// Also keeps per-shop health (source metrics and heartbeats) from acknowledged deliveries.
    pub fn with_health(mut self, health: Arc<PushHealth>) -> PushMetrics {
        self.health = Some(health);
        self
    }

    /// The per-shop health, if kept.
    pub fn health(&self) -> Option<&Arc<PushHealth>> {
        self.health.as_ref()
    }

    /// The component label, also the dead-letter stage.
    pub fn component(&self) -> &'static str {
        self.metrics.component()
    }

    /// One delivery arrived.
    pub fn received(&self) {
        self.metrics.received.inc();
        self.counts.received.fetch_add(1, Ordering::Relaxed);
    }

    /// One delivery was refused before parsing (low-cardinality `reason`).
    pub fn rejected(&self, reason: &str) {
        self.metrics.dropped(reason, 1);
        bump(&self.counts.rejected, reason);
    }

    /// The HTTP server refused a connection or request before the handler (low-cardinality
    /// `reason`, see [`super::events::reasons`]).
    pub fn refused(&self, reason: &str) {
        kpiflow_core::metrics::http_refused()
            .with_label_values(&[self.component(), reason])
            .inc();
        bump(&self.counts.refused, reason);
    }

    /// A connection was accepted (`+1`) or closed (`-1`).
    pub fn connections(&self, delta: i64) {
        kpiflow_core::metrics::http_connections()
            .with_label_values(&[self.component()])
            .add(delta);
        if delta >= 0 {
            self.counts
                .connections_open
                .fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.counts
                .connections_open
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// A retried delivery was acknowledged without publishing.
    pub fn duplicate(&self) {
        kpiflow_core::metrics::duplicates()
            .with_label_values(&[self.component()])
            .inc();
        self.counts.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    /// The publisher acknowledged `deliveries`.
    pub fn acknowledged(&self, deliveries: &[&Delivery]) {
        let events: usize = deliveries.iter().map(|d| d.events.len()).sum();
        let dead: usize = deliveries.iter().map(|d| d.dead_letters.len()).sum();
        self.counts
            .published
            .fetch_add(events as u64, Ordering::Relaxed);
        self.counts
            .dead_lettered
            .fetch_add(dead as u64, Ordering::Relaxed);
        if let Some(h) = &self.health {
            h.record(deliveries, true);
        }
    }

    /// Publishing `deliveries` failed (they were not acknowledged).
    pub fn failed(&self, deliveries: &[&Delivery]) {
        self.metrics.error("kafka");
        if let Some(h) = &self.health {
            h.record(deliveries, false);
        }
    }

    /// An error of `kind` (e.g. `kafka`, `io`).
    pub fn error(&self, kind: &str) {
        self.metrics.error(kind);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> PushStats {
        let c = &self.counts;
        PushStats {
            received: c.received.load(Ordering::Relaxed),
            published: c.published.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            rejected: c
                .rejected
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            refused: c
                .refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            connections_open: c.connections_open.load(Ordering::Relaxed),
        }
    }
}
