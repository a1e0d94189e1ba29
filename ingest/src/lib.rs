//! Connector workers: read (or simulate) the platforms sellers use and publish canonical
//! events into Kafka.
//!
//! ```text
//!   platform APIs, webhooks ──► Connector ──► Publish ──► Kafka ──► processor ──► sink
//!   (or the simulator)          (one folder    (KafkaPublisher)
//!                                per source)      │  events.orders / events.ads / events.logistics
//!                                                 └► deadletter (what a connector could not use)
//! ```
//!
//! The seams:
//! - [`Connector`]: reads a source until it ends, a limit is hit or shutdown, and publishes
//!   every record it read, turned into a canonical [`kpiflow_schemas::Event`];
//! - [`Publish`]: where connectors put events. [`KafkaPublisher`] sends each event to its
//!   topic keyed by shop and only reports success once Kafka acknowledged it;
//!   [`MemoryPublisher`] keeps them in memory for tests.
//!
//! Connectors are listed once, in [`connector::REGISTRY`]; each lives in its own folder under
//! [`connectors`]. The first is the deterministic [`connectors::simulator`], whose
//! [`generate`](connectors::simulator::generate) function is also how end-to-end tests know
//! what the pipeline should compute.
//!
//! The platform connectors poll APIs through the shared machinery of [`pull`]: an HTTP client
//! (rate limit, Retry-After, backoff, token refresh), durable cursors saved only after the
//! publisher flushed, heartbeats and per-shop health metrics, and [`pull::backfill`]. Each
//! implements [`pull::Source`] — one window of one platform for one shop; the four ad
//! connectors share theirs, with the account table and the report days, in
//! [`pull::ad_account`] — and maps records field by field with [`map`], dead-lettering what it
//! cannot use with the field and value:
//!
//! ```text
//!  amazon_sp_orders, walmart_orders, tiktok_shop_orders ─► order.placed / shipped / cancelled
//!  amazon_fba_inventory             ─► inventory.snapshot
//!  amazon_ads, google_ads, meta_ads, tiktok_ads ─► ad.performance (versions by as_of)
//!  every pull connector             ─► source.heartbeat after each sync
//! ```
//!
//! Shared machinery is one module per direction: [`pull`] for connectors that poll an API (HTTP
//! client, rate limit, retries, tokens, cursors, heartbeats) and [`push`] for those that are
//! sent data (webhook receivers that verify signatures and acknowledge only after Kafka did,
//! drop folders).
//!
//! Errors are one type, [`IngestError`], whose variants say whose fault a failure is and
//! whether retrying can help.

pub mod connector;
pub mod connectors;
pub mod error;
pub mod map;
pub mod publish;
pub mod pull;
pub mod push;

pub use connector::{Connector, RunStats, StopReason};
pub use connectors::simulator::{Simulator, SimulatorConfig};
pub use error::IngestError;
pub use publish::{KafkaPublisher, MemoryPublisher, Publish};
