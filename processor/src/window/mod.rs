//! Windows: one file per kind (business day, week, month, rolling); all are unions of one-hour
//! UTC buckets, which is why business time zones must have whole-hour offsets.

pub mod business_day;
pub mod month;
pub mod rolling;
pub mod week;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kpiflow_schemas::{WindowKind, WindowRef};

use crate::catalog::{WindowDef, WindowKindConfig};

/// Hours since the Unix epoch (UTC), the bucket index.
pub type Hour = i64;

/// The bucket of `t`.
pub fn hour_of(t: DateTime<Utc>) -> Hour {
    t.timestamp().div_euclid(3600)
}

/// The start of bucket `h`.
pub fn hour_start(h: Hour) -> DateTime<Utc> {
    DateTime::from_timestamp(h * 3600, 0).expect("hour index within chrono's range")
}

/// The calendar window (day, week or month in `tz`) containing hour `h`; `None` for rolling
/// and lagged windows, which are placed by their end.
pub fn calendar_window(def: &WindowDef, tz: Tz, h: Hour) -> Option<(Hour, Hour)> {
    let day = business_day::BusinessDay { tz };
    match def.kind {
        WindowKindConfig::BusinessDay => Some(day.day_of(h)),
        WindowKindConfig::Week => Some(week::week_of(&day, h)),
        WindowKindConfig::Month => Some(month::month_of(&day, h)),
        WindowKindConfig::Rolling | WindowKindConfig::Lagged => None,
    }
}

/// What outputs say about a window.
pub fn window_ref(def: &WindowDef, tz: Tz, start: Hour, end: Hour, basis: &str) -> WindowRef {
    let (kind, time_zone) = match def.kind {
        WindowKindConfig::BusinessDay => (WindowKind::BusinessDay, tz.name()),
        WindowKindConfig::Week => (WindowKind::Week, tz.name()),
        WindowKindConfig::Month => (WindowKind::Month, tz.name()),
        WindowKindConfig::Rolling => (WindowKind::Rolling, "UTC"),
        WindowKindConfig::Lagged => (WindowKind::Lagged, "UTC"),
    };
    WindowRef {
        kind,
        name: def.name.clone(),
        start: hour_start(start),
        end: hour_start(end),
        time_zone: time_zone.to_string(),
        basis: basis.to_string(),
    }
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
