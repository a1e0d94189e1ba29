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
use crate::rule::trend::Compare;

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

/// The same window one week or one month before `[start, end)`: calendar windows move by
/// local dates (so a DST change in between is respected), rolling ones by 7 or 30 days.
pub fn earlier(def: &WindowDef, tz: Tz, start: Hour, end: Hour, compare: Compare) -> (Hour, Hour) {
    let hours_back = match compare {
        Compare::MonthAgo => 30 * 24,
        _ => 7 * 24,
    };
    if matches!(
        def.kind,
        WindowKindConfig::Rolling | WindowKindConfig::Lagged
    ) {
        return (start - hours_back, end - hours_back);
    }
    let day = business_day::BusinessDay { tz };
    let date = hour_start(start).with_timezone(&tz).date_naive();
    let before = match compare {
        Compare::MonthAgo => date
            .checked_sub_months(chrono::Months::new(1))
            .unwrap_or(date - chrono::Duration::days(30)),
        _ => date - chrono::Duration::days(7),
    };
    calendar_window(def, tz, day.midnight(before)).unwrap_or((start - hours_back, end - hours_back))
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
    fn earlier_windows_move_by_local_dates() {
        let la = chrono_tz::America::Los_Angeles;
        let def = |kind, hours| WindowDef {
            name: "w".into(),
            kind,
            hours,
            lag_hours: 0,
        };
        let at = |s: &str| hour_of(s.parse::<DateTime<Utc>>().unwrap());
        // Nov 3 (PST) a week back is Oct 27 (PDT): 169 hours earlier, not 168.
        let day = def(WindowKindConfig::BusinessDay, 0);
        let (s, e) = calendar_window(&day, la, at("2026-11-03T12:00:00Z")).unwrap();
        let (ps, pe) = earlier(&day, la, s, e, Compare::WeekAgo);
        assert_eq!(s - ps, 169);
        assert_eq!(pe - ps, 24);
        let month = def(WindowKindConfig::Month, 0);
        let (s, e) = calendar_window(&month, la, at("2026-03-15T12:00:00Z")).unwrap();
        let (ps, pe) = earlier(&month, la, s, e, Compare::MonthAgo);
        assert_eq!(hour_start(ps).to_rfc3339(), "2026-02-01T08:00:00+00:00");
        assert_eq!(pe, s);
        let rolling = def(WindowKindConfig::Rolling, 24 * 7);
        assert_eq!(
            earlier(&rolling, la, 1000, 1168, Compare::WeekAgo),
            (832, 1000)
        );
    }

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
