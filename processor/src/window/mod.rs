//! Window kinds: which hour buckets make up a window, and which windows an hour belongs to.
//!
//! Time is kept as hour indexes (`unix seconds / 3600`, floored); a window is the half-open
//! hour range `[start, end)`.

pub mod business_day;
pub mod rolling;

use chrono::{DateTime, Utc};
use kpiflow_schemas::{WindowKind, WindowRef};

use crate::ProcessorConfig;

/// An hour index: whole hours since the Unix epoch (floored, so negative before 1970).
pub type Hour = i64;

/// The hour index containing `t`.
pub fn hour_of(t: DateTime<Utc>) -> Hour {
    t.timestamp().div_euclid(3600)
}

/// The start of an hour index, as a timestamp.
pub fn hour_start(h: Hour) -> DateTime<Utc> {
    DateTime::from_timestamp(h * 3600, 0).expect("hour index within chrono's range")
}

/// One configured window definition.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowSpec {
    /// Calendar days in a time zone.
    BusinessDay(business_day::BusinessDay),
    /// The last N hours, sliding by one hour.
    Rolling(rolling::Rolling),
}

impl WindowSpec {
    /// The window's name on outputs and in rules, e.g. `business_day`, `rolling_24h`.
    pub fn name(&self) -> &str {
        match self {
            WindowSpec::BusinessDay(_) => "business_day",
            WindowSpec::Rolling(r) => r.name(),
        }
    }

    /// Longest span of one window, in hours (bounds how long buckets must be kept).
    pub fn max_hours(&self) -> i64 {
        match self {
            WindowSpec::BusinessDay(_) => 25,
            WindowSpec::Rolling(r) => i64::from(r.hours),
        }
    }

    /// The published description of window `[start, end)`.
    pub fn window_ref(&self, start: Hour, end: Hour, basis: &str) -> WindowRef {
        let (kind, time_zone) = match self {
            WindowSpec::BusinessDay(d) => (WindowKind::BusinessDay, d.tz.name().to_string()),
            WindowSpec::Rolling(_) => (WindowKind::Rolling, "UTC".to_string()),
        };
        WindowRef {
            kind,
            name: self.name().to_string(),
            start: hour_start(start),
            end: hour_start(end),
            time_zone,
            basis: basis.to_string(),
        }
    }
}

/// The configured windows: the business day, then each rolling length.
pub fn specs(cfg: &ProcessorConfig) -> Vec<WindowSpec> {
    let mut specs = vec![WindowSpec::BusinessDay(business_day::BusinessDay {
        tz: cfg.tz(),
    })];
    specs.extend(
        cfg.rolling_hours
            .iter()
            .map(|h| WindowSpec::Rolling(rolling::Rolling::new(*h))),
    );
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_floor_before_the_epoch() {
        let t: DateTime<Utc> = "1969-12-31T23:30:00Z".parse().unwrap();
        assert_eq!(hour_of(t), -1);
        assert_eq!(
            hour_start(-1),
            "1969-12-31T23:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
