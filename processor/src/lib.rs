//! The KPI engine: consumes canonical events, keeps event-time aggregates, emits KPI updates
//! and breach events.
//!
//! ```text
//!  events.orders ─┐                    ┌──────────── Engine ─────────────┐
//!  events.ads ────┼─► source (Kafka) ─►│ dedup ─► measures ─► hour buckets│─► kpi.updates
//!  events.logistics┘   (batches,       │ restatements   watermark ─► windows ─► rules ─► breaches
//!                       offsets)       └──────────────────────────────────┘
//!              bad / too-late records ─► deadletter (with the reason)
//! ```
//!
//! - [`engine::Engine`] is pure (no I/O): feed it events, ask it to [`engine::Engine::flush`],
//!   get [`kpiflow_schemas::KpiUpdate`]s and [`kpiflow_schemas::BreachEvent`]s back. Tests and
//!   benchmarks drive it directly.
//! - [`catalog`] holds the KPI definitions: every ratio is two additive measures, divided only
//!   when a value is read ("never average ratios").
//! - [`window`] has one file per window kind (business day, rolling N hours); [`rule`] one file
//!   per rule kind.
//! - [`run`] wires the engine to Kafka: read a batch, apply, publish outputs, await their
//!   delivery, then commit the input offsets.
//!
//! Aggregates live in one-hour UTC buckets per shop; a business day in any whole-hour-offset
//! zone is an exact set of those buckets (23, 24 or 25 of them across DST changes).

pub mod catalog;
pub mod checkpoint;
pub mod config;
pub mod cost;
pub mod engine;
pub mod error;
pub mod fx;
pub mod reconcile;
pub mod rule;
pub mod run;
pub mod stock;
pub mod template;
pub mod watermark;
pub mod window;

pub use config::ProcessorConfig;
pub use engine::{Applied, Engine, Outputs, PartitionId};
pub use error::ProcessorError;
/// The events table and fixed-point decimals live in `kpiflow-schemas` (feature `arrow`),
/// shared with the sink; re-exported under their old paths.
pub use kpiflow_schemas::{event_table, fixed};
