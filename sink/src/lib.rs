//! The sink: the end of the pipeline, and what data teams, Grafana and on-call read.
//!
//! ```text
//!   processor ─► <prefix>.kpi.updates ─┐
//!             └► <prefix>.breaches ────┤  consumer group `sink.group_id`
//!                                      ▼
//!   ┌─ run (a Stage on kpiflow_core's Driver, which reads and commits) ──┐
//!   │ decode ─┬─► buffer ─► flush ─► Parquet files (atomic) ─► commit    │
//!   │         │   (every roll_rows records, roll_interval, at shutdown)  │
//!   │         ├─► gauges: current-window KPI values, open breaches       │
//!   │         ├─► live view: the demo console's tables                   │
//!   │         └─► undecodable ─► <prefix>.deadletter                     │
//!   └────────────────────────────────────────────────────────────────────┘
//!        │                                        │
//!        ▼                                        ▼
//!   <dir>/kpi_values/date=…/*.parquet             /metrics (kpiflow-core) ─► Prometheus ─► Grafana
//!   <dir>/breaches/date=YYYY-MM-DD/*.parquet
//!        │
//!        ▼
//!   query: SQL via DataFusion over kpi_values, breaches, kpi_latest ─► data teams
//!
//!   <prefix>.breaches ─► alert (one consumer group per receiver) ─► Alertmanager, webhook
//!   <prefix>.breaches ─► guard (its own consumer) ─► GET /v1/guard; signed pause/resume pushes
//! ```
//!
//! Guarantee: **at-least-once**. Offsets are committed only after the rows they carried are in
//! a renamed, fsynced Parquet file, so a crash never loses a row; it may write a row twice (the
//! rows of the last flush before the crash, or of a partition revoked between write and
//! commit). KPI rows are upserts keyed by [`KpiUpdate::key`](kpiflow_schemas::KpiUpdate::key);
//! readers use the `kpi_latest` view, which keeps the highest `revision` per key, and so never
//! see the duplicates; the `kpi_values` view shows each `(key, revision)` once, and
//! `kpiflow compact` drops the copies from the files.
//!
//! - [`run()`]: the Kafka consumer loop and its guarantee ([`mod@run`]);
//! - [`SinkConfig`]: the `[sink]` section of the config file;
//! - [`parquet`]: Arrow schemas of the two tables and the atomic, Hive-partitioned file writer;
//! - [`mod@query`]: a DataFusion session over the files, the `kpi_latest` view, output formats;
//! - [`prometheus`]: the live KPI and breach gauges on `/metrics` (current window only,
//!   behind a cardinality guard);
//! - [`alert`]: breaches to Alertmanager (API v2) and signed webhooks ([`run_alerts`]);
//! - [`guard`]: the automation guard (`GET /v1/guard`), and [`guard_webhook`]: its signed
//!   pause / resume pushes;
//! - [`live`]: the latest values and breach events for the demo's console;
//! - [`internal_events`]: the log-and-count events of table hygiene (temp files removed,
//!   unreadable files skipped) and of the guard's webhook;
//! - [`SinkError`]: this crate's one error type.
//!
//! Reading the tables (a folder here; an opened [`TableStore`] reads an `s3://` bucket):
//!
//! ```no_run
//! # async fn example() -> Result<(), kpiflow_sink::SinkError> {
//! use kpiflow_sink::{OutputFormat, format_batches, query};
//!
//! let batches = query(
//!     "kpiflow-data",
//!     "SELECT kpi, shop, window_start, value FROM kpi_latest \
//!      WHERE date >= DATE '2025-03-01' ORDER BY window_start",
//! )
//! .await?;
//! print!("{}", format_batches(&batches, OutputFormat::Table)?);
//! # Ok(())
//! # }
//! ```

pub mod alert;
pub mod config;
pub mod error;
pub mod guard;
pub mod guard_webhook;
pub mod internal_events;
pub mod live;
pub mod parquet;
pub mod prometheus;
pub mod query;
pub mod run;

mod current;

pub use alert::{AlertStats, AlertsConfig, run_alerts};
pub use config::{Compression, PrometheusConfig, SinkConfig};
pub use error::SinkError;
pub use guard::{Guard, GuardConfig};
pub use guard_webhook::GuardWebhookConfig;
pub use live::LiveView;
pub use parquet::store::TableStore;
pub use prometheus::KpiGauges;
pub use query::{Answer, OutputFormat, QueryOptions, format_batches, query, query_with, session};
pub use run::{SinkStats, run};
