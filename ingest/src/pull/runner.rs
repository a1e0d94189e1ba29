//! The poll loop: a [`Source`] (the platform-specific half) driven by a [`PullConnector`]
//! (windows from the cursor, flush-then-checkpoint, heartbeats, intervals, shutdown), and
//! [`backfill`] over a date range through the same path.
//!
//! ```text
//!   cursor ─► window [high_water − overlap, now) ─► steps of max_window
//!                                     │
//!         Source::sync(step, Emitter) ─► publisher.flush() ─► cursor.save(step.to)
//!                                     │
//!                   heartbeat + metrics ─► sleep(interval) ─► again, until shutdown
//! ```

use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use futures::future::BoxFuture;
use kpiflow_core::{ComponentMetrics, SourceMetrics};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cursor::{Cursor, CursorStore};
use super::emit::{Counts, Emitter, Origin};
use super::health::Health;
use super::settings::Pull;
use crate::connector::{Connector, RunStats, StopReason};
use crate::{IngestError, Publish};

/// A time range `[from, to)` to read, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start.
    pub from: DateTime<Utc>,
    /// Exclusive end.
    pub to: DateTime<Utc>,
}

/// The platform-specific half of a pull connector: reads one window and hands the records to
/// an [`Emitter`]. Everything else (cursor, retries of whole syncs, heartbeats) is the runner's.
pub trait Source: Send + Sync {
    /// The registry name, e.g. `amazon_sp_orders`.
    fn name(&self) -> &'static str;

    /// The metrics component and dead-letter stage, e.g. `ingest.amazon_sp_orders`.
    fn component(&self) -> &'static str;

    /// Shop, channel, marketplace and zone of the events.
    fn origin(&self) -> &Origin;

    /// The latest end a window may have at wall-clock `now`; platforms that index changes
    /// with a delay want the newest minutes left for the next sync (Amazon: 2 minutes).
    fn window_end(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now
    }

    /// `true` for sources that read the platform's current state (stock levels) rather than
    /// changes in a time range: each sync is then one call of [`Source::sync`] with the
    /// window from the last sync to now.
    fn snapshot(&self) -> bool {
        false
    }

    /// Reads everything the platform changed in `window` (following its paging to the end)
    /// and hands it to `out`. Records that cannot be mapped go to [`Emitter::dead_letter`];
    /// an `Err` aborts the sync, and nothing of the window is checkpointed.
    fn sync<'a, 'p: 'a>(
        &'a self,
        window: Window,
        out: &'a mut Emitter<'p>,
    ) -> BoxFuture<'a, Result<(), IngestError>>;
}

/// Implements [`Source`] for a connector type with the usual shape: `NAME` and `COMPONENT`
/// constants in scope, an `origin: Origin` field and an inherent
/// `async fn read(&self, Window, &mut Emitter<'_>) -> Result<(), IngestError>`. Overrides of
/// the provided methods (`window_end`, `snapshot`) go in braces after the type.
macro_rules! impl_source {
    ($ty:ty $({ $($extra:item)* })?) => {
        impl $crate::pull::Source for $ty {
            fn name(&self) -> &'static str {
                NAME
            }

            fn component(&self) -> &'static str {
                COMPONENT
            }

            fn origin(&self) -> &$crate::pull::Origin {
                &self.origin
            }

            $($($extra)*)?

            fn sync<'a, 'p: 'a>(
                &'a self,
                window: $crate::pull::Window,
                out: &'a mut $crate::pull::Emitter<'p>,
            ) -> futures::future::BoxFuture<'a, Result<(), $crate::IngestError>> {
                Box::pin(self.read(window, out))
            }
        }
    };
}
pub(crate) use impl_source;

/// What one call of [`PullConnector::sync_once`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncReport {
    /// The range read.
    pub window: Window,
    /// What was handed over.
    pub counts: Counts,
}

/// A backfill's progress, reported after each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Start of the range.
    pub from: DateTime<Utc>,
    /// End of the range.
    pub to: DateTime<Utc>,
    /// Everything before this instant is published and flushed.
    pub done_until: DateTime<Utc>,
    /// What was handed over so far.
    pub counts: Counts,
}

impl Progress {
    /// Share of the range done, from 0 to 1.
    pub fn fraction(&self) -> f64 {
        let total = (self.to - self.from).num_milliseconds() as f64;
        if total <= 0.0 {
            return 1.0;
        }
        ((self.done_until - self.from).num_milliseconds() as f64 / total).clamp(0.0, 1.0)
    }
}

/// A pull connector: a [`Source`] plus the poll loop. Implements [`Connector`].
pub struct PullConnector {
    source: Box<dyn Source>,
    pull: Pull,
    cursors: CursorStore,
    health: Health,
    component: ComponentMetrics,
}

impl PullConnector {
    /// Drives `source` with `pull`'s settings; `metrics` should be the series the source's
    /// HTTP client counts into.
    pub fn new(source: Box<dyn Source>, pull: Pull, metrics: SourceMetrics) -> PullConnector {
        PullConnector {
            cursors: CursorStore::new(pull.cursor_dir.clone()),
            health: Health::new(source.name(), metrics),
            component: ComponentMetrics::new(source.component()),
            source,
            pull,
        }
    }

    /// The source.
    pub fn source(&self) -> &dyn Source {
        self.source.as_ref()
    }

    /// The settings.
    pub fn settings(&self) -> &Pull {
        &self.pull
    }

    /// Running totals since start.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The cursor store.
    pub fn cursors(&self) -> &CursorStore {
        &self.cursors
    }

    fn delta(d: Duration) -> TimeDelta {
        TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
    }

    /// Reads one step and flushes it: after `Ok`, everything of `window` is delivered.
    async fn step(
        &self,
        window: Window,
        publisher: &dyn Publish,
    ) -> (Counts, Result<(), IngestError>) {
        let origin = self.source.origin();
        let mut out = Emitter::new(
            publisher,
            self.source.name(),
            self.source.component(),
            origin,
            &self.component,
            self.health.metrics(),
        );
        let mut result = self.source.sync(window, &mut out).await;
        // Flush even after a failure: what was handed over is delivered or reported.
        let flushed = publisher.flush().await;
        if result.is_ok() {
            result = flushed;
        }
        (out.counts(), result)
    }

    /// Records what a sync (or a backfill step) did in the health series and publishes the
    /// shop's `source.heartbeat`, flushed: the processor's staleness rules and the dashboards
    /// see every pull, whatever its outcome.
    async fn beat(
        &mut self,
        counts: &Counts,
        ok: bool,
        publisher: &dyn Publish,
    ) -> Result<(), IngestError> {
        self.health.record(Utc::now(), counts, ok);
        self.health
            .publish(self.source.origin(), Utc::now(), publisher)
            .await?;
        publisher.flush().await
    }

    /// One sync at wall-clock now: from the stored high-water mark minus `overlap` (or now
    /// minus `initial_lookback` the first time) to [`Source::window_end`], in steps of
    /// `max_window`, saving the cursor after each flushed step. Then records health and
    /// publishes a heartbeat, whatever the outcome.
    pub async fn sync_once(&mut self, publisher: &dyn Publish) -> Result<SyncReport, IngestError> {
        let now = Utc::now();
        // Whole seconds: the form platforms take timestamps in, so the cursor is what was asked.
        let end = self.source.window_end(now).trunc_subsecs(0);
        let name = self.source.name();
        let shop = self.source.origin().shop.clone();
        let mut counts = Counts::default();
        let mut from = end;
        let result: Result<(), IngestError> = async {
            let cursor = self.cursors.load(name, &shop).await?;
            from = match &cursor {
                Some(c) => c.high_water - Self::delta(self.pull.overlap),
                None => end - Self::delta(self.pull.initial_lookback),
            };
            if self.source.snapshot() {
                from = cursor.as_ref().map_or(end, |c| c.high_water.min(end));
            }
            let mut at = from;
            // A snapshot source is read once per sync, even when no time has passed (and only
            // once when time has: `take` first, so the flag is spent by the first read).
            let mut once = self.source.snapshot();
            while std::mem::take(&mut once) || at < end {
                let to = if self.source.snapshot() {
                    end
                } else {
                    (at + Self::delta(self.pull.max_window)).min(end)
                };
                let (c, r) = self.step(Window { from: at, to }, publisher).await;
                counts.add(&c);
                r?;
                // Never move a cursor backwards (a clock step back, a shortened overlap).
                let high_water = cursor.as_ref().map_or(to, |c| c.high_water.max(to));
                self.cursors
                    .save(&Cursor {
                        connector: name.to_string(),
                        shop: shop.clone(),
                        high_water,
                        saved_at: Utc::now(),
                    })
                    .await?;
                at = to;
            }
            Ok(())
        }
        .await;
        let beat = self.beat(&counts, result.is_ok(), publisher).await;
        result?;
        beat?;
        tracing::info!(
            connector = name,
            shop = %shop,
            from = %from,
            to = %end,
            published = counts.published,
            dead_lettered = counts.dead_lettered,
            "sync done"
        );
        Ok(SyncReport {
            window: Window { from, to: end },
            counts,
        })
    }

    /// Syncs every `interval` until `shutdown`. A failed sync is logged, counted and shown in
    /// the heartbeat, and the next one retries (the cursor did not move); only configuration
    /// errors and bugs end the run.
    pub async fn run(
        &mut self,
        publisher: &dyn Publish,
        shutdown: CancellationToken,
    ) -> Result<RunStats, IngestError> {
        let began = Instant::now();
        let mut total = Counts::default();
        tokio::select! {
            r = publisher.ensure_topics() => r?,
            () = shutdown.cancelled() => return Ok(stats(&total, StopReason::Shutdown, began)),
        }
        loop {
            let outcome = tokio::select! {
                r = self.sync_once(publisher) => r,
                () = shutdown.cancelled() => break,
            };
            match outcome {
                Ok(report) => total.add(&report.counts),
                Err(e @ (IngestError::Config { .. } | IngestError::Internal(_))) => {
                    publisher.flush().await?;
                    return Err(e);
                }
                Err(e) => tracing::error!(
                    connector = self.source.name(),
                    shop = %self.source.origin().shop,
                    consecutive_failures = self.health.consecutive_failures,
                    error = %e,
                    "sync failed; the next one retries from the same cursor"
                ),
            }
            tokio::select! {
                () = tokio::time::sleep(self.pull.interval) => {}
                () = shutdown.cancelled() => break,
            }
        }
        publisher.flush().await?;
        Ok(stats(&total, StopReason::Shutdown, began))
    }

    /// Pulls `[from, to)` through the same path as a sync, in steps of `max_window`, calling
    /// `progress` after each flushed step, and publishing a heartbeat after each step as a
    /// sync does. The live cursor is left alone: a backfill neither moves nor needs it. The
    /// first failed step ends the backfill with its error.
    pub async fn backfill(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        publisher: &dyn Publish,
        mut progress: impl FnMut(&Progress),
    ) -> Result<RunStats, IngestError> {
        if from >= to {
            return Err(IngestError::config(
                "backfill --from",
                from.to_rfc3339(),
                format!("must be before --to ({})", to.to_rfc3339()),
            ));
        }
        let began = Instant::now();
        publisher.ensure_topics().await?;
        let mut p = Progress {
            from,
            to,
            done_until: from,
            counts: Counts::default(),
        };
        progress(&p);
        while p.done_until < to {
            let step_to = (p.done_until + Self::delta(self.pull.max_window)).min(to);
            let (c, r) = self
                .step(
                    Window {
                        from: p.done_until,
                        to: step_to,
                    },
                    publisher,
                )
                .await;
            p.counts.add(&c);
            let beat = self.beat(&c, r.is_ok(), publisher).await;
            r?;
            beat?;
            p.done_until = step_to;
            progress(&p);
        }
        Ok(stats(&p.counts, StopReason::Exhausted, began))
    }
}

fn stats(c: &Counts, stop: StopReason, began: Instant) -> RunStats {
    RunStats {
        published: c.published,
        dead_lettered: c.dead_lettered,
        stop,
        elapsed: began.elapsed(),
    }
}

impl Connector for PullConnector {
    fn name(&self) -> &'static str {
        self.source.name()
    }

    fn run<'a>(
        &'a mut self,
        publisher: &'a dyn Publish,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<RunStats, IngestError>> {
        Box::pin(PullConnector::run(self, publisher, shutdown))
    }

    fn as_pull(&mut self) -> Option<&mut PullConnector> {
        Some(self)
    }
}

/// Pulls `[from, to)` from `connector` (built from the registry) into `publisher`; see
/// [`PullConnector::backfill`]. Connectors that do not pull (the simulator, webhook
/// receivers) are refused with a config error naming them.
pub async fn backfill(
    connector: &mut dyn Connector,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    publisher: &dyn Publish,
    progress: impl FnMut(&Progress),
) -> Result<RunStats, IngestError> {
    let name = connector.name();
    let Some(pull) = connector.as_pull() else {
        return Err(IngestError::config(
            "backfill connector",
            format!("{name:?}"),
            "this connector does not pull from an API, so it cannot backfill",
        ));
    };
    pull.backfill(from, to, publisher, progress).await
}
