//! Internal events of the Kafka plumbing: each struct's `emit()` logs and counts one thing.
//!
//! As Vector's `internal_events`: the loops say *what happened* (`DeadLettered { … }.emit()`)
//! and the log line, its level and the metric live here, once for every role, so the sink,
//! the alert sinks and the processor report the same event the same way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;

use crate::ComponentMetrics;

/// How often a dead letter of one (component, kind) is logged at `warn`; the others of that
/// minute go to `debug` (a backfill of late records must not flood the log; the count and
/// the dead-letter topic have every one).
const DEAD_LETTER_WARN_EVERY: Duration = Duration::from_secs(60);

/// A record went to the dead-letter topic. Counted in
/// `kpiflow_events_dropped_total{component,reason=<kind>}`.
pub struct DeadLettered<'a> {
    /// The component counting it.
    pub metrics: &'a ComponentMetrics,
    /// The stage that refused it, as named in the dead letter (e.g. `sink`, `alerts.webhook`).
    pub stage: &'a str,
    /// Short class of the refusal: `invalid`, `late`, `rejected`, …
    pub kind: &'a str,
    /// Where the record was read.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Why, naming the field and value.
    pub reason: &'a str,
}

impl DeadLettered<'_> {
    /// Logs (at `warn` once a minute per component and kind, else `debug`) and counts.
    pub fn emit(&self) {
        self.metrics.dropped(self.kind, 1);
        let (stage, kind, topic, partition, offset, reason) = (
            self.stage,
            self.kind,
            self.topic,
            self.partition,
            self.offset,
            self.reason,
        );
        match first_this_minute(self.metrics.component(), kind) {
            Some(since) => tracing::warn!(
                stage,
                kind,
                topic,
                partition,
                offset,
                reason,
                same_kind_since_last_warning = since,
                "dead-lettering a record"
            ),
            None => tracing::debug!(
                stage,
                kind,
                topic,
                partition,
                offset,
                reason,
                "dead-lettering a record"
            ),
        }
    }
}

/// Per (component, kind): when the last warning was logged, and how many went to `debug` since.
type WarnedAt = HashMap<(&'static str, String), (Instant, u64)>;

/// `Some(n)` when a dead letter of `(component, kind)` should be logged at `warn` now, `n`
/// being how many were logged at `debug` since the last warning.
fn first_this_minute(component: &'static str, kind: &str) -> Option<u64> {
    static LAST: Mutex<Option<WarnedAt>> = Mutex::new(None);
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let map = last.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    match map.get_mut(&(component, kind.to_string())) {
        Some((at, quiet)) if now.duration_since(*at) < DEAD_LETTER_WARN_EVERY => {
            *quiet += 1;
            None
        }
        Some((at, quiet)) => {
            let since = *quiet;
            (*at, *quiet) = (now, 0);
            Some(since)
        }
        None => {
            map.insert((component, kind.to_string()), (now, 0));
            Some(0)
        }
    }
}

/// The consumer reported an error it recovers from (a broker restart, a rebalance). Counted
/// in `kpiflow_errors_total{component,kind="kafka"}`.
pub struct ConsumerErrored<'a> {
    /// The component counting it.
    pub metrics: &'a ComponentMetrics,
    /// The client's error.
    pub error: &'a KafkaError,
}

impl ConsumerErrored<'_> {
    /// Logs at `warn` and counts.
    pub fn emit(&self) {
        self.metrics.error("kafka");
        tracing::warn!(error = %self.error, "consumer error; the client retries");
    }
}

/// An offset commit failed; the next one carries the same offsets (only duplicates after a
/// crash are at stake). Counted in `kpiflow_errors_total{component,kind="kafka"}`.
pub struct CommitFailed<'a> {
    /// The component counting it.
    pub metrics: &'a ComponentMetrics,
    /// The client's error.
    pub error: &'a KafkaError,
}

impl CommitFailed<'_> {
    /// Logs at `warn` and counts.
    pub fn emit(&self) {
        self.metrics.error("kafka");
        tracing::warn!(error = %self.error, "offset commit failed; retrying at the next one");
    }
}

/// A partition was revoked between reading records and committing them: its offsets are
/// dropped, and its new owner reads those records again. Logged at `info`.
pub struct RevokedBeforeCommit<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
}

impl RevokedBeforeCommit<'_> {
    /// Logs.
    pub fn emit(&self) {
        tracing::info!(
            topic = self.topic,
            partition = self.partition,
            "partition revoked before commit; its new owner reads its records again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_kind_warns_once_a_minute_and_counts_the_quiet_ones() {
        // Its own component and kind: the limiter is process-wide.
        let kind = "test_kind_warns_once";
        assert_eq!(first_this_minute("test", kind), Some(0));
        assert_eq!(first_this_minute("test", kind), None);
        assert_eq!(first_this_minute("test", kind), None);
        // Another kind, or another component, warns on its own.
        assert_eq!(first_this_minute("test", "test_other_kind"), Some(0));
        assert_eq!(first_this_minute("test_other", kind), Some(0));
    }
}
