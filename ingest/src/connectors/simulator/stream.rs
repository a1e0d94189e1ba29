//! The delivery model: the order facts arrive in, which arrive late, which twice.
//!
//! Each fact has an emission time: its event time, except ad rows, which exist only once
//! reported (`as_of`). Guarantees of the assembled stream:
//! - on-time events appear in non-decreasing emission time, and are ingested 1-5 s after it;
//! - a late event is ingested `max_delay / 20` to `max_delay` (+ 1-5 s) after its emission
//!   and sits in the stream where it arrived, after newer events;
//! - a duplicate is an exact copy (same JSON, same `event_id`) of an earlier event, placed
//!   1 s to 10 min (of arrival time) after it;
//! - nothing ingested after the end of the span is emitted, so every `ingest_time` (and
//!   every `event_time`) is at most `start + days`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kpiflow_schemas::Event;

use super::SimulatorConfig;
use super::random::{self, Stream};

/// One generated fact before delivery.
#[derive(Debug)]
pub(super) struct Fact {
    /// When the source makes it known: event time, or `as_of` for ad rows.
    pub(super) emit: DateTime<Utc>,
    pub(super) event: Event,
}

impl Fact {
    pub(super) fn new(emit: DateTime<Utc>, event: Event) -> Fact {
        Fact { emit, event }
    }
}

/// One published event and how it was delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// The event, exactly as published.
    pub event: Event,
    /// Delivered late: after events that happened later.
    pub late: bool,
    /// A re-delivery of an event published earlier in the stream.
    pub duplicate: bool,
}

/// Orders the facts as the stream delivers them, with late and duplicate deliveries.
pub(super) fn assemble(
    mut facts: Vec<Fact>,
    cfg: &SimulatorConfig,
    end: DateTime<Utc>,
) -> Vec<Emitted> {
    // Stable: facts with the same emission time keep the order they were generated in.
    facts.sort_by_key(|f| f.emit);
    let mut rng = random::stream(cfg.seed, Stream::Delivery, 0);
    let max_delay = delta(cfg.max_delay);
    let min_delay = max_delay / 20;
    // (arrival, tiebreak, emitted)
    let mut out: Vec<(DateTime<Utc>, u64, Emitted)> =
        Vec::with_capacity(facts.len() + facts.len() / 50);
    for (i, fact) in facts.into_iter().enumerate() {
        // Every draw is taken for every fact, so one fact's fate never shifts another's.
        let jitter = random::secs(&mut rng, 1, 5);
        let late = random::chance(&mut rng, cfg.late_rate);
        let delay = random::secs(&mut rng, min_delay.num_seconds(), max_delay.num_seconds());
        let duplicate = random::chance(&mut rng, cfg.duplicate_rate);
        let dup_lag = random::secs(&mut rng, 1, 600);

        let arrival = if late {
            fact.emit.checked_add_signed(delay)
        } else {
            Some(fact.emit)
        };
        let Some((arrival, ingest)) =
            arrival.and_then(|a| Some((a, a.checked_add_signed(jitter)?)))
        else {
            continue;
        };
        if ingest > end {
            continue;
        }
        let mut event = fact.event;
        event.header.ingest_time = ingest;
        let i = i as u64;
        if duplicate && ingest + dup_lag <= end {
            let copy = Emitted {
                event: event.clone(),
                late,
                duplicate: true,
            };
            out.push((arrival + dup_lag, 2 * i + 1, copy));
        }
        out.push((
            arrival,
            2 * i,
            Emitted {
                event,
                late,
                duplicate: false,
            },
        ));
    }
    out.sort_by_key(|(arrival, tiebreak, _)| (*arrival, *tiebreak));
    out.into_iter().map(|(_, _, e)| e).collect()
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}
