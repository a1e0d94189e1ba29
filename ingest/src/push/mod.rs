//! What push connectors share: the generic receiver ([`receiver`]), HMAC signatures, the
//! recent-delivery cache, counters, and the queue that acknowledges a delivery only once Kafka
//! stored what it carried.
//!
//! ```text
//!  HTTP request ─► body limit ─► signature ─► map ─► PublishQueue ══► worker ─► Publish + flush
//!       (axum)       (413)        (401)     (DLQ)     (bounded)        (one task, group commit)
//!                                                  ◄═ ack (200) / 503 after the deadline
//! ```
//!
//! Handlers never hold the publisher: they hand a [`queue::Delivery`] to the queue and wait
//! (up to a deadline) for the worker, which owns the `&dyn Publish`, to publish and flush it.
//! Concurrent deliveries share one flush.

pub mod health;
pub mod metrics;
pub mod queue;
pub mod receiver;
pub mod recent;
pub mod server;
pub mod signature;
