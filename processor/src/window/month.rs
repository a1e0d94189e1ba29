//! Month windows: calendar months in a time zone, DST-correct.

use chrono::{Datelike, NaiveDate};

use super::Hour;
use super::business_day::BusinessDay;

/// The month `[start, end)` (hour indexes) containing hour `h`, in `day`'s zone.
pub fn month_of(day: &BusinessDay, h: Hour) -> (Hour, Hour) {
    let date = super::hour_start(h).with_timezone(&day.tz).date_naive();
    let first = NaiveDate::from_ymd_opt(date.year(), date.month(), 1).expect("valid month");
    let next = if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    }
    .expect("valid month");
    (day.midnight(first), day.midnight(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn la() -> BusinessDay {
        BusinessDay {
            tz: chrono_tz::America::Los_Angeles,
        }
    }

    proptest! {
        #[test]
        fn months_tile_time(h in 0i64..1_000_000) {
            let (s, e) = month_of(&la(), h);
            prop_assert!(s <= h && h < e);
            // 28 to 31 days, plus or minus the DST hour.
            prop_assert!((28 * 24 - 1..=31 * 24 + 1).contains(&(e - s)));
            prop_assert_eq!(month_of(&la(), e).0, e);
        }
    }
}
