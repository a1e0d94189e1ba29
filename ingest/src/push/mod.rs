//! What push connectors share: the generic receiver ([`receiver`]) on a hardened HTTP server
//! ([`server`]: timeouts, connection and body limits), HMAC signatures, the
//! recent-delivery cache, counters, and the queue that acknowledges a delivery only once Kafka
//! stored what it carried.
//!
//! ```text
//!  HTTP request ─► server ─► signature ─► map ─► PublishQueue ══► worker ─► Publish + flush
//!   (hyper, axum)  (limits:      (401)     (DLQ)     (bounded)        (one task, group commit)
//!                  408/413/close)
//!                                                  ◄═ ack (200) / 503 after the deadline
//! ```
//!
//! Handlers never hold the publisher: they hand a [`queue::Delivery`] to the queue and wait
//! (up to a deadline) for the worker, which owns the `&dyn Publish`, to publish and flush it.
//! Concurrent deliveries share one flush.

pub mod events;
pub mod health;
pub mod metrics;
pub mod queue;
pub mod receiver;
pub mod recent;
pub mod server;
pub mod signature;
