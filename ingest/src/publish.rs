//! The seam between connectors and Kafka: [`Publish`], its Kafka and in-memory implementations.
//!
//! A connector hands canonical events to a [`Publish`] and never sees Kafka. The guarantee a
//! publisher gives: once [`Publish::flush`] has returned `Ok`, every record passed to
//! [`Publish::publish`] or [`Publish::dead_letter`] before it is stored by the destination.
//! A record that could not be stored is an error from a later `publish` or from `flush`;
//! nothing is dropped silently.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::future::BoxFuture;
use kpiflow_core::{ComponentMetrics, KafkaConfig, Out, Outbox};
use kpiflow_schemas::{DeadLetter, Event, Topic, Topics};
use rdkafka::error::KafkaError;

use rdkafka::types::RDKafkaErrorCode;

use crate::IngestError;

/// Where connectors put what they read: canonical events, and records they could not use.
///
/// Object-safe (methods return boxed futures) so a connector takes `&dyn Publish` and tests
/// hand it a [`MemoryPublisher`].
pub trait Publish: Send + Sync {
    /// Makes sure the destination can take records (creates missing topics); call once before
    /// publishing.
    fn ensure_topics(&self) -> BoxFuture<'_, Result<(), IngestError>>;

    /// Sends one event on its topic, keyed by its shop. Returns once the record is accepted
    /// for delivery (waiting while too many are in flight); delivery itself is confirmed by
    /// [`Publish::flush`]. An error may concern an earlier record whose delivery failed.
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), IngestError>>;

    /// Sends a record the connector could not turn into an event to the dead-letter topic, as
    /// a [`DeadLetter`] naming the `stage` (e.g. `ingest.simulator`), a short `reason_kind`
    /// (e.g. `invalid`) and the full `reason`.
    fn dead_letter<'a>(
        &'a self,
        stage: &'a str,
        reason_kind: &'a str,
        reason: &'a str,
        raw: &'a [u8],
    ) -> BoxFuture<'a, Result<(), IngestError>>;

    /// Waits until every record sent so far is delivered; the first failure is the error.
    fn flush(&self) -> BoxFuture<'_, Result<(), IngestError>>;
}

/// Publishes to Kafka through the idempotent producer of [`KafkaConfig::producer`] and the
/// one producer path of every role ([`Outbox`]).
///
/// Each event goes to `Topics::name(event.body.topic())` with the shop as key, so one shop's
/// events stay in order within a partition. At most `max_in_flight` records await their
/// acknowledgement; `publish` waits when the window is full and `flush` waits for all of
/// them. Counts `sent` (acknowledged events), `dropped` (dead letters, by reason kind) and
/// `error("kafka")` in the component's metrics.
pub struct KafkaPublisher {
    kafka: KafkaConfig,
    /// Full topic names, indexed like [`Topic::ALL`].
    topic_names: Vec<String>,
    metrics: ComponentMetrics,
    // A tokio mutex: it is held while waiting for deliveries when the window is full.
    outbox: tokio::sync::Mutex<Outbox>,
}

impl KafkaPublisher {
    /// Unacknowledged records allowed before `publish` waits for deliveries.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;

    /// A publisher for the topics under `kafka.topic_prefix`; validates `kafka` first.
    /// No connection is made until the first record is sent.
    pub fn new(kafka: &KafkaConfig, metrics: ComponentMetrics) -> Result<Self, IngestError> {
        kafka.validate()?;
        let outbox = Outbox::new(kafka.producer()?, metrics.clone())
            .with_max_in_flight(Self::DEFAULT_MAX_IN_FLIGHT);
        let topics: Topics = kafka.topics();
        Ok(KafkaPublisher {
            kafka: kafka.clone(),
            topic_names: Topic::ALL.iter().map(|t| topics.name(*t)).collect(),
            metrics,
            outbox: tokio::sync::Mutex::new(outbox),
        })
    }

    /// Changes how many records may await acknowledgement at once (at least 1).
    pub fn with_max_in_flight(self, max_in_flight: usize) -> Self {
        let outbox = self.outbox.into_inner().with_max_in_flight(max_in_flight);
        KafkaPublisher {
            outbox: tokio::sync::Mutex::new(outbox),
            ..self
        }
    }

    fn topic_name(&self, topic: Topic) -> &str {
        let i = Topic::ALL.iter().position(|t| *t == topic).unwrap_or(0);
        &self.topic_names[i]
    }
}

impl Publish for KafkaPublisher {
    fn ensure_topics(&self) -> BoxFuture<'_, Result<(), IngestError>> {
        Box::pin(async move { Ok(self.kafka.ensure_topics().await?) })
    }

    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), IngestError>> {
        Box::pin(async move {
            let payload = event.to_json();
            let out = Out {
                topic: self.topic_name(event.body.topic()),
                key: Some(event.key()),
                payload: &payload,
                what: "event",
                counted: true,
            };
            Ok(self.outbox.lock().await.send(out).await?)
        })
    }

    fn dead_letter<'a>(
        &'a self,
        stage: &'a str,
        reason_kind: &'a str,
        reason: &'a str,
        raw: &'a [u8],
    ) -> BoxFuture<'a, Result<(), IngestError>> {
        Box::pin(async move {
            let payload = DeadLetter::new(stage, reason_kind, reason, raw).to_json();
            let out = Out {
                topic: self.topic_name(Topic::DeadLetter),
                key: Some(stage),
                payload: &payload,
                what: "dead letter",
                counted: false,
            };
            self.outbox.lock().await.send(out).await?;
            self.metrics.dropped(reason_kind, 1);
            Ok(())
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), IngestError>> {
        Box::pin(async move { Ok(self.outbox.lock().await.settle().await?) })
    }
}

/// Keeps everything in memory, in publish order; for tests.
#[derive(Default)]
pub struct MemoryPublisher {
    events: Mutex<Vec<Event>>,
    dead_letters: Mutex<Vec<DeadLetter>>,
    fail_after: Option<usize>,
    flushes: AtomicUsize,
}

impl MemoryPublisher {
    /// An empty publisher that accepts everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// A publisher that accepts `n` events and then fails every `publish` with a retryable
    /// Kafka error, to test how connectors handle a broken destination.
    pub fn failing_after(n: usize) -> Self {
        MemoryPublisher {
            fail_after: Some(n),
            ..Self::default()
        }
    }

    /// The events published so far, in order.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.events).clone()
    }

    /// The dead letters published so far, in order.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.dead_letters).clone()
    }

    /// How many times [`Publish::flush`] was called.
    pub fn flush_count(&self) -> usize {
        self.flushes.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock cannot leave a Vec half-pushed.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Publish for MemoryPublisher {
    fn ensure_topics(&self) -> BoxFuture<'_, Result<(), IngestError>> {
        Box::pin(async { Ok(()) })
    }

    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), IngestError>> {
        Box::pin(async move {
            let mut events = lock(&self.events);
            if self.fail_after.is_some_and(|n| events.len() >= n) {
                return Err(IngestError::kafka(
                    format!("memory publisher set to fail after {} events", events.len()),
                    KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure),
                ));
            }
            events.push(event.clone());
            Ok(())
        })
    }

    fn dead_letter<'a>(
        &'a self,
        stage: &'a str,
        reason_kind: &'a str,
        reason: &'a str,
        raw: &'a [u8],
    ) -> BoxFuture<'a, Result<(), IngestError>> {
        Box::pin(async move {
            lock(&self.dead_letters).push(DeadLetter::new(stage, reason_kind, reason, raw));
            Ok(())
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), IngestError>> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::{Channel, EventHeader, Fulfilment, Money, OrderPlaced, SourceTz};

    fn event(id: &str) -> Event {
        let t = "2026-11-02T17:03:00Z".parse().unwrap();
        Event::new(
            EventHeader {
                event_id: id.into(),
                source: "test".into(),
                shop: "shop-001".into(),
                channel: Channel::Amazon,
                marketplace: "ATVPDKIKX0DER".into(),
                sku: None,
                event_time: t,
                source_tz: SourceTz::US_PACIFIC,
                ingest_time: t,
            },
            OrderPlaced {
                order_id: "o-1".into(),
                total: Money::usd("9.99"),
                units: 1,
                fulfilment: Fulfilment::Fba,
                ship_by: None,
                deliver_by: None,
            },
        )
    }

    #[tokio::test]
    async fn memory_publisher_keeps_order_and_fails_on_request() {
        let p = MemoryPublisher::failing_after(2);
        let dyn_p: &dyn Publish = &p;
        dyn_p.publish(&event("a")).await.unwrap();
        dyn_p.publish(&event("b")).await.unwrap();
        let err = dyn_p.publish(&event("c")).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        dyn_p
            .dead_letter("ingest.test", "invalid", "field `x`: bad", b"\xffraw")
            .await
            .unwrap();
        dyn_p.flush().await.unwrap();
        let ids: Vec<_> = p.events().into_iter().map(|e| e.header.event_id).collect();
        assert_eq!(ids, ["a", "b"]);
        let dl = p.dead_letters();
        assert_eq!(dl[0].stage, "ingest.test");
        assert_eq!(dl[0].reason_kind, "invalid");
        assert_eq!(dl[0].payload, "\u{fffd}raw");
        assert_eq!(p.flush_count(), 1);
    }

    #[tokio::test]
    async fn kafka_publisher_refuses_bad_config_before_connecting() {
        let kafka = KafkaConfig {
            bootstrap_servers: "nohostport".into(),
            ..KafkaConfig::default()
        };
        let err = KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.test"))
            .err()
            .expect("bad bootstrap servers are refused");
        assert!(matches!(err, IngestError::Config { .. }), "{err}");
        assert!(err.to_string().contains("kafka.bootstrap_servers"), "{err}");
    }

    #[tokio::test]
    async fn an_undeliverable_record_is_an_error_not_a_silent_drop() {
        // Nothing listens on port 1; deliveries time out after a second.
        let kafka = KafkaConfig {
            bootstrap_servers: "127.0.0.1:1".into(),
            client: [("message.timeout.ms".to_string(), "1000".to_string())].into(),
            ..KafkaConfig::default()
        };
        let p = KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.test")).unwrap();
        p.publish(&event("lost")).await.unwrap();
        let err = p.flush().await.unwrap_err();
        assert!(matches!(err, IngestError::Delivery { .. }), "{err}");
        assert!(
            err.to_string().starts_with(
                r#"kafka: delivery of event lost (key "shop-001") to kpiflow.events.orders failed"#
            ),
            "{err}"
        );
        assert!(err.is_retryable());
        // Flushing again has nothing left to wait for.
        p.flush().await.unwrap();
    }
}
