//! Week windows: Monday-to-Monday calendar weeks in a time zone (ISO weeks), DST-correct.

use chrono::{Datelike, Duration};

use super::Hour;
use super::business_day::BusinessDay;

/// The week `[start, end)` (hour indexes) containing hour `h`, in `day`'s zone.
pub fn week_of(day: &BusinessDay, h: Hour) -> (Hour, Hour) {
    let date = super::hour_start(h).with_timezone(&day.tz).date_naive();
    let monday = date - Duration::days(i64::from(date.weekday().num_days_from_monday()));
    (
        day.midnight(monday),
        day.midnight(monday + Duration::days(7)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::hour_of;
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;

    fn la() -> BusinessDay {
        BusinessDay {
            tz: chrono_tz::America::Los_Angeles,
        }
    }

    #[test]
    fn the_week_of_the_fall_dst_change_has_169_hours() {
        // Sunday 2026-11-01 02:00 PDT falls back; that week runs Oct 26 .. Nov 2.
        let t: DateTime<Utc> = "2026-10-28T12:00:00Z".parse().unwrap();
        let (s, e) = week_of(&la(), hour_of(t));
        assert_eq!(e - s, 169);
        assert_eq!(
            super::super::hour_start(s).to_rfc3339(),
            "2026-10-26T07:00:00+00:00"
        );
    }

    proptest! {
        #[test]
        fn weeks_tile_time(h in 0i64..1_000_000) {
            let (s, e) = week_of(&la(), h);
            prop_assert!(s <= h && h < e);
            prop_assert!((167..=169).contains(&(e - s)));
            prop_assert_eq!(week_of(&la(), e), (e, week_of(&la(), e).1));
        }
    }
}
