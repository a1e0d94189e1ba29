//! Business-day windows: calendar days in a time zone, DST-correct (23, 24 or 25 hours).

use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;

use super::{Hour, hour_start};

/// Calendar days in `tz`.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessDay {
    /// The zone whose midnights bound the days.
    pub tz: Tz,
}

impl BusinessDay {
    /// The day `[start, end)` (hour indexes) that contains hour `h`.
    pub fn day_of(&self, h: Hour) -> (Hour, Hour) {
        let date = hour_start(h).with_timezone(&self.tz).date_naive();
        (
            self.midnight(date),
            self.midnight(date.succ_opt().expect("date in range")),
        )
    }

    /// The hour index at which `date` begins in the zone. Where midnight does not exist (a DST
    /// jump at midnight) the day begins at the first hour that does.
    pub fn midnight(&self, date: NaiveDate) -> Hour {
        for hour in 0..24 {
            let local = date.and_hms_opt(hour, 0, 0).expect("valid hour");
            if let Some(t) = self.tz.from_local_datetime(&local).earliest() {
                // Whole-hour offsets (checked by config validation) keep this exact.
                return t.timestamp().div_euclid(3600);
            }
        }
        unreachable!("every calendar day has a first hour")
    }
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

    fn at(s: &str) -> Hour {
        hour_of(s.parse::<DateTime<Utc>>().unwrap())
    }

    #[test]
    fn dst_days_have_23_and_25_hours() {
        // 2026-03-08 US Pacific springs forward; 2026-11-01 falls back.
        let (s, e) = la().day_of(at("2026-03-08T12:00:00Z"));
        assert_eq!(
            (hour_start(s).to_rfc3339(), e - s),
            ("2026-03-08T08:00:00+00:00".into(), 23)
        );
        let (s, e) = la().day_of(at("2026-11-01T12:00:00Z"));
        assert_eq!(
            (hour_start(s).to_rfc3339(), e - s),
            ("2026-11-01T07:00:00+00:00".into(), 25)
        );
        let (s, e) = la().day_of(at("2026-11-02T07:59:00Z"));
        assert_eq!(
            (hour_start(s).to_rfc3339(), e - s),
            ("2026-11-01T07:00:00+00:00".into(), 25)
        );
    }

    proptest! {
        /// Days contain their hour, are 23-25 hours long, and tile time without gaps.
        #[test]
        fn days_tile_time(h in 0i64..1_000_000, zone in 0usize..4) {
            let tz = [chrono_tz::America::Los_Angeles, chrono_tz::America::New_York,
                      chrono_tz::Asia::Shanghai, chrono_tz::Europe::London][zone];
            let d = BusinessDay { tz };
            let (s, e) = d.day_of(h);
            prop_assert!(s <= h && h < e);
            prop_assert!((23..=25).contains(&(e - s)));
            prop_assert_eq!(d.day_of(e).0, e);
            prop_assert_eq!(d.day_of(s - 1).1, s);
        }
    }
}
