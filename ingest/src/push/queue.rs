//! The publish queue: handlers submit deliveries and wait for the worker's acknowledgement.

use kpiflow_schemas::Event;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::metrics::PushMetrics;
use crate::{IngestError, Publish};

/// Deliveries the worker takes in one round, sharing one flush.
const MAX_BATCH: usize = 256;

/// A record that could not be mapped, bound for the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Short reason class, e.g. `invalid`.
    pub kind: &'static str,
    /// The full reason, naming field and value.
    pub reason: String,
    /// The raw record.
    pub raw: Vec<u8>,
}

/// What one delivery (request, file batch) carries to Kafka.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    /// Canonical events to publish.
    pub events: Vec<Event>,
    /// Records for the dead-letter topic.
    pub dead_letters: Vec<Rejected>,
}

impl Delivery {
    /// Adds the records of `other`.
    pub fn extend(&mut self, other: Delivery) {
        self.events.extend(other.events);
        self.dead_letters.extend(other.dead_letters);
    }
}

/// Why a submitted delivery was not acknowledged; the sender should retry (503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Kafka did not acknowledge before the deadline; the delivery may still be stored, and
    /// a retry is counted once thanks to deterministic event ids.
    #[error("not acknowledged before the deadline")]
    Deadline,
    /// Publishing failed (the publisher's error, without credentials).
    #[error("publishing failed: {0}")]
    Failed(String),
    /// The worker has stopped (shutting down).
    #[error("the receiver is shutting down")]
    Closed,
}

struct Job {
    delivery: Delivery,
    done: oneshot::Sender<Result<(), String>>,
}

/// The handlers' side: cheap to clone.
#[derive(Clone)]
pub struct PublishQueue {
    tx: mpsc::Sender<Job>,
}

/// The side that owns the publisher: [`QueueWorker::run`].
pub struct QueueWorker {
    rx: mpsc::Receiver<Job>,
    metrics: PushMetrics,
}

/// A queue holding at most `capacity` deliveries waiting for the worker.
pub fn publish_queue(capacity: usize, metrics: PushMetrics) -> (PublishQueue, QueueWorker) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (PublishQueue { tx }, QueueWorker { rx, metrics })
}

impl PublishQueue {
    /// Hands `delivery` to the worker and waits until Kafka acknowledged all of it, or
    /// `deadline` passes.
    pub async fn submit(&self, delivery: Delivery, deadline: Instant) -> Result<(), SubmitError> {
        let (done, acked) = oneshot::channel();
        match tokio::time::timeout_at(deadline, self.tx.send(Job { delivery, done })).await {
            Err(_) => return Err(SubmitError::Deadline),
            Ok(Err(_)) => return Err(SubmitError::Closed),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, acked).await {
            Err(_) => Err(SubmitError::Deadline),
            Ok(Err(_)) => Err(SubmitError::Closed),
            Ok(Ok(result)) => result.map_err(SubmitError::Failed),
        }
    }
}

impl QueueWorker {
    /// Publishes deliveries until every [`PublishQueue`] is dropped, answering each only
    /// after a flush covering it returned. A failed round fails its deliveries (the senders
    /// retry) and the worker carries on.
    pub async fn run(mut self, publisher: &dyn Publish) {
        let stage = self.metrics.component();
        while let Some(first) = self.rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let deliveries: Vec<&Delivery> = batch.iter().map(|j| &j.delivery).collect();
            let result = publish(publisher, stage, &deliveries).await;
            match &result {
                Ok(()) => self.metrics.acknowledged(&deliveries),
                Err(e) => {
                    self.metrics.failed(&deliveries);
                    tracing::warn!(component = stage, error = %e, deliveries = batch.len(),
                        "not acknowledged; the senders will retry");
                }
            }
            let answer = result.map_err(|e| e.to_string());
            for job in batch {
                // A sender that gave up (deadline) no longer listens; its retry is counted once.
                let _ = job.done.send(answer.clone());
            }
        }
    }
}

/// Publishes `deliveries` (dead letters under `stage`) and flushes: after `Ok` all of it is
/// stored. The flush happens after a failure too, so an earlier record's failure is not
/// reported against the next call.
pub async fn publish(
    publisher: &dyn Publish,
    stage: &str,
    deliveries: &[&Delivery],
) -> Result<(), IngestError> {
    let sent = async {
        for d in deliveries {
            for event in &d.events {
                publisher.publish(event).await?;
            }
            for r in &d.dead_letters {
                publisher
                    .dead_letter(stage, r.kind, &r.reason, &r.raw)
                    .await?;
            }
        }
        Ok::<(), IngestError>(())
    }
    .await;
    let flushed = publisher.flush().await;
    sent.and(flushed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::MemoryPublisher;
    use std::time::Duration;

    #[tokio::test]
    async fn acknowledges_after_the_flush_and_fails_when_publishing_fails() {
        let publisher = MemoryPublisher::failing_after(0);
        let metrics = PushMetrics::new("ingest.test_queue");
        let (queue, worker) = publish_queue(4, metrics.clone());
        let deadline = Instant::now() + Duration::from_secs(5);
        let client = async move {
            let ok = queue
                .submit(
                    Delivery {
                        events: vec![],
                        dead_letters: vec![Rejected {
                            kind: "invalid",
                            reason: "r".into(),
                            raw: b"x".to_vec(),
                        }],
                    },
                    deadline,
                )
                .await;
            let failed = queue
                .submit(
                    Delivery {
                        events: vec![crate::push::queue::tests::event()],
                        dead_letters: vec![],
                    },
                    deadline,
                )
                .await;
            (ok, failed)
        };
        let ((ok, failed), ()) = tokio::join!(client, worker.run(&publisher));
        assert_eq!(ok, Ok(()));
        assert!(matches!(failed, Err(SubmitError::Failed(_))), "{failed:?}");
        assert_eq!(publisher.dead_letters().len(), 1);
        assert!(publisher.flush_count() >= 2);
        let s = metrics.snapshot();
        assert_eq!((s.published, s.dead_lettered), (0, 1));
    }

    #[tokio::test]
    async fn a_stuck_worker_means_the_deadline_not_a_hang() {
        let (queue, _worker) = publish_queue(1, PushMetrics::new("ingest.test_queue"));
        let r = queue
            .submit(
                Delivery::default(),
                Instant::now() + Duration::from_millis(50),
            )
            .await;
        assert_eq!(r, Err(SubmitError::Deadline));
    }

    pub(crate) fn event() -> Event {
        use kpiflow_schemas::*;
        let t = "2026-11-02T17:03:00Z".parse().unwrap();
        Event::new(
            EventHeader {
                event_id: "e".into(),
                source: "test".into(),
                shop: "s".into(),
                channel: Channel::Shopify,
                marketplace: "US".into(),
                sku: None,
                event_time: t,
                source_tz: SourceTz::US_PACIFIC,
                ingest_time: t,
            },
            OrderPaid {
                order_id: "o".into(),
                placed_at: t,
                amount: Money::usd("1.00"),
            },
        )
    }
}
