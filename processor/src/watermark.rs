//! Event-time watermarks per input partition, with idle partitions not holding time back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kpiflow_schemas::Topic;
use serde::{Deserialize, Serialize};

use crate::engine::PartitionId;

/// What a checkpoint keeps of the watermarks: event times, not wall-clock instants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatermarkState {
    /// (topic suffix, partition, newest event time).
    partitions: Vec<(String, i32, Option<DateTime<Utc>>)>,
    current: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy)]
struct Partition {
    /// None until the partition's first record: until then it may hold anything.
    max_event_time: Option<DateTime<Utc>>,
    last_seen: Instant,
    /// Whether the reader has reached the partition's end (checked only once it is quiet).
    caught_up: bool,
}

/// Tracks the newest event time per partition; the watermark is the oldest of those among the
/// partitions that are still active, minus the allowed out-of-orderness. It never goes back.
///
/// A partition stops holding the watermark back only when it has been quiet for the idle
/// timeout *and* the reader has confirmed it is at the partition's end: while a backlog is
/// replayed, a partition the client has not fetched yet is behind, not idle.
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

    /// Declares an assigned partition before any record of it is read, so that it holds the
    /// watermark back until it has delivered a record or is confirmed empty.
    pub fn register(&mut self, partition: PartitionId, now: Instant) {
        self.partitions.entry(partition).or_insert(Partition {
            max_event_time: None,
            last_seen: now,
            caught_up: false,
        });
    }

    /// The checkpointable part.
    pub fn state(&self) -> WatermarkState {
        let mut partitions: Vec<_> = self
            .partitions
            .iter()
            .map(|(id, p)| {
                (
                    id.topic.suffix().to_string(),
                    id.partition,
                    p.max_event_time,
                )
            })
            .collect();
        partitions.sort();
        WatermarkState {
            partitions,
            current: self.current,
        }
    }

    /// Restores a checkpoint at wall-clock `now`: partitions count as just seen and not yet
    /// caught up, so the idle logic starts afresh.
    pub fn restore(&mut self, state: WatermarkState, now: Instant) {
        for (suffix, partition, max_event_time) in state.partitions {
            let Some(topic) = Topic::ALL.into_iter().find(|t| t.suffix() == suffix) else {
                continue;
            };
            self.partitions.insert(
                PartitionId { topic, partition },
                Partition {
                    max_event_time,
                    last_seen: now,
                    caught_up: false,
                },
            );
        }
        self.current = state.current;
    }

    /// Records an event time seen on `partition` at wall-clock `now`.
    pub fn observe(&mut self, partition: PartitionId, event_time: DateTime<Utc>, now: Instant) {
        let p = self.partitions.entry(partition).or_insert(Partition {
            max_event_time: None,
            last_seen: now,
            caught_up: false,
        });
        p.max_event_time = Some(p.max_event_time.map_or(event_time, |m| m.max(event_time)));
        p.last_seen = now;
        p.caught_up = false;
    }

    fn quiet(&self, p: &Partition, now: Instant) -> bool {
        now.saturating_duration_since(p.last_seen) >= self.idle_timeout
    }

    /// Partitions quiet for the idle timeout whose end the reader has not confirmed yet.
    pub fn quiet_partitions(&self, now: Instant) -> Vec<PartitionId> {
        self.partitions
            .iter()
            .filter(|(_, p)| !p.caught_up && self.quiet(p, now))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Tells whether the reader is at the end of `partition` (see [`Watermarks::quiet_partitions`]).
    pub fn set_caught_up(&mut self, partition: PartitionId, caught_up: bool) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.caught_up = caught_up;
        }
    }

    /// Recomputes the watermark at wall-clock `now` and returns it.
    ///
    /// When every partition is idle, the newest of them decides: nothing older is on its way.
    pub fn advance(&mut self, now: Instant) -> Option<DateTime<Utc>> {
        let mut oldest_active: Option<DateTime<Utc>> = None;
        for p in self.partitions.values() {
            if p.caught_up && self.quiet(p, now) {
                continue;
            }
            match p.max_event_time {
                // An active partition that has shown nothing yet may still hold anything.
                None => return self.current,
                Some(t) => oldest_active = Some(oldest_active.map_or(t, |o| o.min(t))),
            }
        }
        let all_idle = || {
            self.partitions
                .values()
                .filter_map(|p| p.max_event_time)
                .max()
        };
        if let Some(newest) = oldest_active.or_else(all_idle) {
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
        // Partition 1 goes quiet, but it is not idle until the reader is at its end.
        let later = start + Duration::from_secs(11);
        w.observe(p(0), t("2026-01-01T11:00:00Z"), later);
        assert_eq!(w.advance(later), Some(t("2026-01-01T07:59:00Z")));
        assert_eq!(w.quiet_partitions(later), vec![p(1)]);
        w.set_caught_up(p(1), true);
        assert_eq!(w.advance(later), Some(t("2026-01-01T10:59:00Z")));
        // A partition waking up with old data does not move the watermark back.
        w.observe(p(1), t("2026-01-01T09:00:00Z"), later);
        assert_eq!(w.advance(later), Some(t("2026-01-01T10:59:00Z")));
    }

    #[test]
    fn a_registered_partition_holds_the_watermark_until_read_or_confirmed_empty() {
        let start = Instant::now();
        let mut w = Watermarks::new(Duration::ZERO, Duration::from_secs(10));
        w.register(p(0), start);
        w.register(p(1), start);
        w.observe(p(0), t("2026-01-05T00:00:00Z"), start);
        // Replaying a backlog: partition 1 has not been fetched yet.
        assert_eq!(w.advance(start), None);
        let later = start + Duration::from_secs(10);
        assert_eq!(w.advance(later), None, "quiet but not confirmed at its end");
        w.set_caught_up(p(1), true);
        assert_eq!(w.advance(later), Some(t("2026-01-05T00:00:00Z")));
    }
}
