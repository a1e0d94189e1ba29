//! Shared plumbing for every kpiflow role, kept small on purpose.
//!
//! ```text
//!   ingest ─┐                      ┌─ processor ─┐
//!           ├─ kafka (clients) ────┤             ├─ metrics (names, /metrics, /healthz)
//!   sink ───┘                      └─────────────┘
//! ```
//!
//! - [`kafka`]: how every role talks to Kafka (settings, producers, consumers, topic set-up),
//!   so SASL/TLS pass-through and delivery settings are decided in one place;
//! - [`driver`]: the consume loop of the sink and the alert sinks (read, stage, dead-letter,
//!   flush, commit), so a role writes only its [`driver::Stage`];
//! - [`internal_events`]: what the loops report (dead letters, consumer errors, failed
//!   commits), each logged and counted in one place;
//! - [`outbox`]: the one producer path (a bounded window of unacknowledged records, settled
//!   before anything becomes durable), dead letters included;
//! - [`metrics`]: every metric name and label key, and the HTTP endpoint that exposes them;
//! - [`storage`]: local folders and S3-compatible buckets for checkpoints and tables;
//! - [`CoreError`]: this crate's errors.

pub mod driver;
pub mod error;
pub mod internal_events;
pub mod kafka;
pub mod metrics;
pub mod outbox;
pub mod storage;

pub use driver::{Driver, DriverStats, FlushPolicy, Stage, Verdict};
pub use error::CoreError;
pub use kafka::{KafkaConfig, PartitionLag};
pub use metrics::{ComponentMetrics, SourceMetrics};
pub use outbox::{Out, Outbox};
