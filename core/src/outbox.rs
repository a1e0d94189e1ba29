//! The one producer path every role sends through: a bounded window of unacknowledged
//! records, back-pressure when librdkafka's queue is full, failures that name the record.
//!
//! Sending does not wait for the broker: a record is handed to the client and its delivery
//! report kept. [`Outbox::settle`] waits for every report; a role calls it before whatever
//! makes progress durable (a checkpoint, an offset commit), which is what keeps its delivery
//! guarantee while it goes on reading and applying with outputs in flight (pipelining).

use std::collections::VecDeque;
use std::time::Duration;

use futures::FutureExt;
use kpiflow_schemas::DeadLetter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::{ComponentMetrics, CoreError};

/// One record to send.
#[derive(Debug, Clone, Copy)]
pub struct Out<'a> {
    /// The full topic name.
    pub topic: &'a str,
    /// The partitioning key; records of one key stay in order.
    pub key: Option<&'a str>,
    /// The encoded record.
    pub payload: &'a [u8],
    /// What the record is, for errors: `event`, `KPI update`, `dead letter` …
    pub what: &'static str,
    /// Counted in the component's `sent` metric once acknowledged (outputs, not dead letters).
    pub counted: bool,
}

/// The dead letter of the record `m` that `stage` refused, and its key: the input's key when
/// it has one (one shop's letters stay in order on one partition), else the stage's name.
pub fn dead_letter_record(
    stage: &str,
    kind: &str,
    reason: String,
    m: &BorrowedMessage<'_>,
) -> (String, Vec<u8>) {
    let letter = DeadLetter::new(stage, kind, reason, m.payload().unwrap_or_default()).from_record(
        m.topic(),
        m.partition(),
        m.offset(),
        m.key(),
    );
    let key = letter.key.clone().unwrap_or_else(|| stage.to_string());
    (key, letter.to_json())
}

/// A producer with a bounded window of unacknowledged records.
pub struct Outbox {
    producer: FutureProducer,
    metrics: ComponentMetrics,
    max_in_flight: usize,
    /// Delivery reports in send order, with what each record is and whether it counts.
    in_flight: VecDeque<(DeliveryFuture, &'static str, bool)>,
}

impl Outbox {
    /// Unacknowledged records allowed before [`Outbox::send`] waits for deliveries.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 100_000;

    /// Sends through `producer`, counting in `metrics` (`sent`, `error{kind="kafka"}`).
    pub fn new(producer: FutureProducer, metrics: ComponentMetrics) -> Outbox {
        Outbox {
            producer,
            metrics,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            in_flight: VecDeque::new(),
        }
    }

    /// Changes how many records may await acknowledgement at once (at least 1).
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Outbox {
        self.max_in_flight = max_in_flight.max(1);
        self
    }

    /// Records handed to the client and not acknowledged yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Hands `out` to the client. Waits only while the window is full or librdkafka's queue
    /// is; an error may concern an earlier record whose delivery failed.
    pub async fn send(&mut self, out: Out<'_>) -> Result<(), CoreError> {
        // Collecting finished reports keeps the window small and surfaces a failure close to
        // the record that caused it.
        self.reap()?;
        while self.in_flight.len() >= self.max_in_flight {
            self.settle_one().await?;
        }
        let mut record = FutureRecord::<str, [u8]>::to(out.topic).payload(out.payload);
        if let Some(key) = out.key {
            record = record.key(key);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.in_flight.push_back((delivery, out.what, out.counted));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    // The client's queue drains as the broker acknowledges: wait for one.
                    if self.in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    } else {
                        self.settle_one().await?;
                    }
                }
                Err((source, _)) => {
                    self.metrics.error("kafka");
                    return Err(CoreError::Delivery {
                        record: describe(out.what, Some(out.payload), out.key, out.topic),
                        source,
                    });
                }
            }
        }
    }

    /// Sends a dead letter for the record `m` that `stage` refused (see [`dead_letter_record`]).
    pub async fn dead_letter(
        &mut self,
        topic: &str,
        stage: &str,
        kind: &str,
        reason: String,
        m: &BorrowedMessage<'_>,
    ) -> Result<(), CoreError> {
        let (key, payload) = dead_letter_record(stage, kind, reason, m);
        self.send(Out {
            topic,
            key: Some(&key),
            payload: &payload,
            what: "dead letter",
            counted: false,
        })
        .await
    }

    /// Waits until every record sent so far is acknowledged. Every report is awaited even
    /// after a failure, so returning means nothing is in flight; the first failure is the
    /// error.
    pub async fn settle(&mut self) -> Result<(), CoreError> {
        let mut first = None;
        while !self.in_flight.is_empty() {
            if let Err(e) = self.settle_one().await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Takes the reports that are already in, oldest first, without waiting.
    fn reap(&mut self) -> Result<(), CoreError> {
        while let Some((delivery, _, _)) = self.in_flight.front_mut() {
            let Some(report) = delivery.now_or_never() else {
                return Ok(());
            };
            let (_, what, counted) = self.in_flight.pop_front().expect("front exists");
            self.outcome(report, what, counted)?;
        }
        Ok(())
    }

    async fn settle_one(&mut self) -> Result<(), CoreError> {
        let Some((delivery, what, counted)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let report = delivery.await;
        self.outcome(report, what, counted)
    }

    fn outcome(
        &self,
        report: <DeliveryFuture as std::future::Future>::Output,
        what: &'static str,
        counted: bool,
    ) -> Result<(), CoreError> {
        let (source, message) = match report {
            Ok(Ok(_)) => {
                if counted {
                    self.metrics.sent.inc();
                }
                return Ok(());
            }
            Ok(Err((e, message))) => (e, Some(message)),
            // The producer went away before it reported: the record's fate is unknown.
            Err(_) => (KafkaError::Canceled, None),
        };
        self.metrics.error("kafka");
        Err(CoreError::Delivery {
            record: message.map_or_else(|| what.to_string(), |m| describe_failed(what, &m)),
            source,
        })
    }
}

/// Names a record in errors: `event sim-42-17-placed (key "shop-001") to kpiflow.events.orders`,
/// with the event id when the payload has one (read only when something failed, so sending
/// never formats a description).
fn describe(what: &str, payload: Option<&[u8]>, key: Option<&str>, topic: &str) -> String {
    let id = payload
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        .and_then(|v| Some(v.get("event_id")?.as_str()?.to_string()));
    let what = match id {
        Some(id) => format!("{what} {id}"),
        None => what.to_string(),
    };
    format!("{what} (key {:?}) to {topic}", key.unwrap_or_default())
}

fn describe_failed(what: &str, m: &OwnedMessage) -> String {
    let key = m.key().map(String::from_utf8_lossy);
    describe(what, m.payload(), key.as_deref(), m.topic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KafkaConfig;

    /// Nothing listens on port 1: every delivery times out after a second.
    fn unreachable() -> FutureProducer {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:1".into(),
            client: [("message.timeout.ms".to_string(), "1000".to_string())].into(),
            ..KafkaConfig::default()
        }
        .producer()
        .unwrap()
    }

    fn event(id: &str) -> Vec<u8> {
        format!(r#"{{"event_id":"{id}","schema":"order.placed"}}"#).into_bytes()
    }

    fn out<'a>(payload: &'a [u8]) -> Out<'a> {
        Out {
            topic: "kpiflow.events.orders",
            key: Some("shop-001"),
            payload,
            what: "event",
            counted: true,
        }
    }

    #[tokio::test]
    async fn a_full_window_waits_and_reports_the_earlier_failure() {
        let mut outbox =
            Outbox::new(unreachable(), ComponentMetrics::new("test.outbox")).with_max_in_flight(1);
        let first = event("first");
        outbox.send(out(&first)).await.unwrap();
        assert_eq!(outbox.in_flight(), 1);
        // The window holds one record: the second send waits for the first's report, which
        // is the failure, naming the record.
        let second = event("second");
        let err = outbox.send(out(&second)).await.unwrap_err();
        assert_eq!(
            err.to_string().split(" failed:").next(),
            Some(r#"kafka: delivery of event first (key "shop-001") to kpiflow.events.orders"#),
            "{err}"
        );
        assert!(err.is_retryable(), "a timeout may pass: {err}");
        assert_eq!(outbox.in_flight(), 0, "the second record was not sent");
    }

    #[tokio::test]
    async fn settle_awaits_every_report_and_returns_the_first_failure() {
        let metrics = ComponentMetrics::new("test.outbox.settle");
        let mut outbox = Outbox::new(unreachable(), metrics.clone());
        for id in ["a", "b", "c"] {
            outbox.send(out(&event(id))).await.unwrap();
        }
        assert_eq!(
            outbox.in_flight(),
            3,
            "sending does not wait for the broker"
        );
        let err = outbox.settle().await.unwrap_err();
        assert!(err.to_string().contains("event a "), "{err}");
        assert_eq!(outbox.in_flight(), 0, "nothing is left in flight");
        assert_eq!(metrics.sent.get(), 0, "nothing was acknowledged");
        outbox.settle().await.unwrap();
    }
}
