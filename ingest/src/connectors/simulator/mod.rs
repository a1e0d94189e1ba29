//! The deterministic simulator: synthetic shops whose orders, ads, stock and shipments look
//! like the real platforms', with injectable anomalies.
//!
//! ```text
//!  SimulatorConfig ─► catalog (shops, SKUs, locations, campaigns)
//!        │                 │
//!        │     ┌───────────┼──────────────┬──────────────┐
//!        │   orders.rs   ads.rs      inventory.rs    anomalies.rs
//!        │  (lifecycle, (daily rows,  (6-hourly       (windows the
//!        │   milestones, restatements) snapshots)      others consult)
//!        │   fees; costs
//!        │   in profit.rs)
//!        │     └───────────┴──────┬───────┘
//!        └──────────────────► stream.rs (order of arrival, late, duplicates)
//!                                 │
//!                        generate() / simulate() ─► Simulator::run ─► Publish
//! ```
//!
//! [`generate`] is a pure function of the config and the start: no wall-clock reads, one
//! seeded ChaCha stream per concern. [`Simulator::run`] publishes exactly that stream (a
//! prefix of it when `max_events`, `duration` or shutdown stop it early), so tests can compute
//! expected KPI values from [`generate`] independently of the pipeline.

mod ads;
mod anomalies;
mod calendar;
mod catalog;
mod config;
mod inventory;
mod orders;
mod profit;
mod random;
mod stream;
#[cfg(test)]
mod tests;

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use kpiflow_core::ComponentMetrics;
use kpiflow_schemas::Event;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{Anomaly, SECTION, SimulatorConfig};
pub use stream::Emitted;

use crate::connector::{Connector, RunStats, StopReason};
use crate::{IngestError, Publish};

/// The registry name.
pub const NAME: &str = "simulator";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.simulator";
/// How often a run logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The events of a simulation starting at `start`, in the order [`Simulator::run`] publishes
/// them. Deterministic: the same config (seed, shape, anomalies, delivery faults) and start
/// give the same events, byte for byte.
///
/// Expects a validated config; values [`SimulatorConfig::validate`] refuses never panic here
/// but may yield few or no events.
pub fn generate(cfg: &SimulatorConfig, start: DateTime<Utc>) -> Vec<Event> {
    simulate(cfg, start).into_iter().map(|e| e.event).collect()
}

/// Like [`generate`], with each event marked late or duplicate, for tests that want to know
/// which deliveries were faults.
pub fn simulate(cfg: &SimulatorConfig, start: DateTime<Utc>) -> Vec<Emitted> {
    let span = calendar::Span::new(start, cfg.days);
    let shops = catalog::shops(cfg);
    let fx = anomalies::Effects::new(&cfg.anomalies, &span);
    let mut facts = Vec::new();
    profit::costs(cfg, &span, &shops, &mut facts);
    let lines = orders::generate(cfg, &span, &shops, &fx, &mut facts);
    inventory::generate(cfg, &span, &shops, &fx, &lines, &mut facts);
    ads::generate(cfg, &span, &shops, &fx, &mut facts);
    stream::assemble(facts, cfg, span.end)
}

/// The simulator connector: publishes [`generate`]'s stream, rate-limited if configured.
pub struct Simulator {
    cfg: SimulatorConfig,
    start: DateTime<Utc>,
    metrics: ComponentMetrics,
}

impl Simulator {
    /// Validates `cfg` and resolves its start (now minus `days` when unset) once, here.
    pub fn new(cfg: SimulatorConfig) -> Result<Simulator, IngestError> {
        let start = cfg.resolve_start(Utc::now());
        Simulator::with_start(cfg, start)
    }

    /// Validates `cfg` and simulates from `start`, whatever `cfg.start` says.
    pub fn with_start(
        cfg: SimulatorConfig,
        start: DateTime<Utc>,
    ) -> Result<Simulator, IngestError> {
        cfg.validate()?;
        Ok(Simulator {
            cfg,
            start,
            metrics: ComponentMetrics::new(COMPONENT),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SimulatorConfig {
        &self.cfg
    }

    /// The resolved event-time start.
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// The events a full run publishes (see [`generate`]).
    pub fn events(&self) -> Vec<Event> {
        generate(&self.cfg, self.start)
    }

    /// Publishes the stream until it ends, `max_events` or `duration` is reached, or
    /// `shutdown` is cancelled; then flushes, so `Ok` means everything published is delivered.
    ///
    /// On an error the run stops at once; records accepted before it may still be in flight
    /// (the publisher's `flush` waits for them).
    pub async fn run(
        &mut self,
        publisher: &dyn Publish,
        shutdown: CancellationToken,
    ) -> Result<RunStats, IngestError> {
        let began = Instant::now();
        tokio::select! {
            r = publisher.ensure_topics() => r?,
            () = shutdown.cancelled() => return Ok(stats(0, 0, StopReason::Shutdown, began)),
        }
        let (cfg, start) = (self.cfg.clone(), self.start);
        // Generation is CPU work of up to seconds for big configs: keep it off the runtime.
        let events = tokio::task::spawn_blocking(move || generate(&cfg, start))
            .await
            .map_err(|e| IngestError::Internal(format!("the generator panicked: {e}")))?;
        tracing::info!(
            events = events.len(),
            start = %self.start,
            days = self.cfg.days,
            seed = self.cfg.seed,
            rate = ?self.cfg.rate,
            "simulation generated; publishing"
        );

        let publishing = Instant::now();
        // A duration too long to add to a clock is no limit at all.
        let deadline = self.cfg.duration.and_then(|d| publishing.checked_add(d));
        let limit = self.cfg.max_events.unwrap_or(u64::MAX);
        let mut progress = Progress::new(publishing);
        let (mut published, mut dead_lettered) = (0u64, 0u64);
        let mut stop = StopReason::Exhausted;
        for event in &events {
            if published + dead_lettered >= limit {
                stop = StopReason::MaxEvents;
                break;
            }
            if shutdown.is_cancelled() {
                stop = StopReason::Shutdown;
                break;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                stop = StopReason::Duration;
                break;
            }
            if let Some(rate) = self.cfg.rate {
                // The n-th event is due n/rate seconds after publishing began: a schedule, not
                // a fixed sleep, so time spent publishing counts and bursts catch up.
                let due =
                    publishing + Duration::from_secs_f64((published + dead_lettered) as f64 / rate);
                if due > now {
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = sleep_until_opt(deadline) => { stop = StopReason::Duration; break; }
                        () = shutdown.cancelled() => { stop = StopReason::Shutdown; break; }
                    }
                }
            }
            self.metrics.received.inc();
            // A connector checks what it read before publishing; the generator's events always
            // pass (a test says so), but the path is the one real connectors take.
            if let Err(e) = event.validate() {
                let raw = event.to_json();
                publisher
                    .dead_letter(COMPONENT, "invalid", &e.to_string(), &raw)
                    .await?;
                dead_lettered += 1;
                continue;
            }
            tokio::select! {
                biased;
                r = publisher.publish(event) => r?,
                () = shutdown.cancelled() => { stop = StopReason::Shutdown; break; }
            }
            published += 1;
            progress.tick(published, events.len());
        }
        publisher.flush().await?;
        let stats = stats(published, dead_lettered, stop, began);
        tracing::info!(
            published,
            dead_lettered,
            stop = ?stats.stop,
            elapsed = ?stats.elapsed,
            events_per_second = stats.events_per_second().round(),
            "simulator finished; every event delivered"
        );
        Ok(stats)
    }
}

fn stats(published: u64, dead_lettered: u64, stop: StopReason, began: Instant) -> RunStats {
    RunStats {
        published,
        dead_lettered,
        stop,
        elapsed: began.elapsed(),
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Logs published counts and the recent rate every few seconds.
struct Progress {
    last: Instant,
    last_count: u64,
}

impl Progress {
    fn new(now: Instant) -> Progress {
        Progress {
            last: now,
            last_count: 0,
        }
    }

    fn tick(&mut self, published: u64, total: usize) {
        let elapsed = self.last.elapsed();
        if elapsed < PROGRESS_EVERY {
            return;
        }
        let rate = (published - self.last_count) as f64 / elapsed.as_secs_f64();
        tracing::info!(
            published,
            total,
            events_per_second = rate.round(),
            "simulator progress"
        );
        self.last = Instant::now();
        self.last_count = published;
    }
}

impl Connector for Simulator {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run<'a>(
        &'a mut self,
        publisher: &'a dyn Publish,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<RunStats, IngestError>> {
        Box::pin(Simulator::run(self, publisher, shutdown))
    }
}

/// The registry's constructor: parses and validates the `[simulate]` section.
pub(crate) fn build(section: serde_json::Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg = SimulatorConfig::from_value(section)?;
    Ok(Box::new(Simulator::new(cfg)?))
}
