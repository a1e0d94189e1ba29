//! Event-time watermarks per input partition, with idle partitions not holding time back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::engine::PartitionId;

#[derive(Debug, Clone, Copy)]
struct Partition {
    max_event_time: DateTime<Utc>,
    last_seen: Instant,
}

/// Tracks the newest event time per partition; the watermark is the oldest of those among the
/// partitions that are still active, minus the allowed out-of-orderness. It never goes back.
#[derive(Debug, Clone)]
pub struct Watermarks {
    partitions: HashMap<PartitionId, Partition>,
    out_of_orderness: chrono::Duration,
    idle_timeout: Duration,
    current: Option<DateTime<Utc>>,
}

impl Watermarks {
    /// A tracker with the given reorder allowance and idle timeout.
    pub fn new(out_of_orderness: Duration, idle_timeout: Duration) -> Self {
        Watermarks {
            partitions: HashMap::new(),
            out_of_orderness: chrono::Duration::from_std(out_of_orderness)
                .unwrap_or(chrono::Duration::MAX),
            idle_timeout,
            current: None,
        }
    }

    /// Records an event time seen on `partition` at wall-clock `now`.
    pub fn observe(&mut self, partition: PartitionId, event_time: DateTime<Utc>, now: Instant) {
        self.partitions
            .entry(partition)
            .and_modify(|p| {
                p.max_event_time = p.max_event_time.max(event_time);
                p.last_seen = now;
            })
            .or_insert(Partition {
                max_event_time: event_time,
                last_seen: now,
            });
    }

    /// Recomputes the watermark at wall-clock `now` and returns it.
    ///
    /// When every partition is idle, the newest of them decides: nothing older is on its way.
    pub fn advance(&mut self, now: Instant) -> Option<DateTime<Utc>> {
        let active = self
            .partitions
            .values()
            .filter(|p| now.saturating_duration_since(p.last_seen) < self.idle_timeout)
            .map(|p| p.max_event_time)
            .min();
        let all_idle = || self.partitions.values().map(|p| p.max_event_time).max();
        if let Some(newest) = active.or_else(all_idle) {
            let candidate = newest
                .checked_sub_signed(self.out_of_orderness)
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            self.current = Some(self.current.map_or(candidate, |c| c.max(candidate)));
        }
        self.current
    }

    /// The watermark as of the last [`Watermarks::advance`].
    pub fn current(&self) -> Option<DateTime<Utc>> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::Topic;

    fn p(n: i32) -> PartitionId {
        PartitionId {
            topic: Topic::Orders,
            partition: n,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn slowest_active_partition_holds_the_watermark_until_idle() {
        let start = Instant::now();
        let mut w = Watermarks::new(Duration::from_secs(60), Duration::from_secs(10));
        assert_eq!(w.advance(start), None);
        w.observe(p(0), t("2026-01-01T10:00:00Z"), start);
        w.observe(p(1), t("2026-01-01T08:00:00Z"), start);
        assert_eq!(w.advance(start), Some(t("2026-01-01T07:59:00Z")));
        // Partition 1 goes quiet; after the idle timeout only partition 0 counts.
        let later = start + Duration::from_secs(11);
        w.observe(p(0), t("2026-01-01T11:00:00Z"), later);
        assert_eq!(w.advance(later), Some(t("2026-01-01T10:59:00Z")));
        // A partition waking up with old data does not move the watermark back.
        w.observe(p(1), t("2026-01-01T09:00:00Z"), later);
        assert_eq!(w.advance(later), Some(t("2026-01-01T10:59:00Z")));
    }
}
