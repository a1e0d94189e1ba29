//! The simulated span and US Pacific time: business days, local clock times, diurnal demand.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::America::Los_Angeles;
use chrono_tz::Tz;

/// The zone every simulated shop and ad account reports in.
pub(super) const ZONE: Tz = Los_Angeles;

/// The event-time span `[start, end]` and its Pacific calendar.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(super) start: DateTime<Utc>,
    pub(super) end: DateTime<Utc>,
    /// The Pacific date `start` falls on: anomaly day 0.
    pub(super) first_date: NaiveDate,
}

impl Span {
    pub(super) fn new(start: DateTime<Utc>, days: u32) -> Span {
        Span {
            start,
            end: start + TimeDelta::days(i64::from(days)),
            first_date: pacific_date(start),
        }
    }

    /// The Pacific date of day `offset` (0 = the date of `start`).
    pub(super) fn date(&self, offset: u32) -> NaiveDate {
        self.first_date + Days::new(u64::from(offset))
    }

    /// Pacific midnight starting day `offset`, as UTC.
    pub(super) fn day_start(&self, offset: u32) -> DateTime<Utc> {
        at_local(self.date(offset), 0, 0)
    }

    /// Every Pacific date the span touches, in order.
    pub(super) fn dates(&self) -> impl Iterator<Item = NaiveDate> + use<> {
        let last = pacific_date(self.end);
        self.first_date.iter_days().take_while(move |d| *d <= last)
    }
}

/// The Pacific calendar date of an instant.
pub(super) fn pacific_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&ZONE).date_naive()
}

/// The Pacific hour of day (0-23) of an instant.
pub(super) fn pacific_hour(t: DateTime<Utc>) -> u32 {
    t.with_timezone(&ZONE).hour()
}

/// The Pacific midnight ending the business day `t` falls on, as UTC.
pub(super) fn day_end(t: DateTime<Utc>) -> DateTime<Utc> {
    let date = pacific_date(t);
    date.succ_opt().map_or(t, |next| at_local(next, 0, 0))
}

/// `hour:minute` Pacific time on `date`, as UTC. Times skipped by the spring-forward change
/// (02:00-03:00) are taken an hour later; the simulator only asks for 00:00 and 06:00.
pub(super) fn at_local(date: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    let naive = date.and_time(NaiveTime::from_hms_opt(hour, minute, 0).unwrap_or(NaiveTime::MIN));
    match ZONE.from_local_datetime(&naive).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => {
            let later = naive + TimeDelta::hours(1);
            ZONE.from_local_datetime(&later)
                .earliest()
                .map_or_else(|| Utc.from_utc_datetime(&naive), |t| t.with_timezone(&Utc))
        }
    }
}

/// Relative order volume by Pacific hour: quiet at night, a lunchtime bump, an evening peak.
const DIURNAL: [f64; 24] = [
    0.35, 0.25, 0.18, 0.15, 0.15, 0.22, 0.40, 0.60, 0.80, 0.95, 1.05, 1.15, //
    1.25, 1.15, 1.05, 1.00, 1.05, 1.20, 1.45, 1.75, 2.00, 1.90, 1.40, 0.80,
];

/// The demand multiplier of a Pacific hour; the 24 values average to 1.
pub(super) fn diurnal(hour: u32) -> f64 {
    let mean = DIURNAL.iter().sum::<f64>() / 24.0;
    DIURNAL[(hour % 24) as usize] / mean
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn pacific_days_follow_daylight_saving() {
        // 2026-11-01 is the fall-back day: PDT (UTC-7) until 02:00, then PST (UTC-8).
        let span = Span::new(t("2026-10-31T20:00:00Z"), 3);
        assert_eq!(
            span.first_date,
            NaiveDate::from_ymd_opt(2026, 10, 31).unwrap()
        );
        assert_eq!(span.day_start(0), t("2026-10-31T07:00:00Z"));
        assert_eq!(span.day_start(1), t("2026-11-01T07:00:00Z"));
        assert_eq!(span.day_start(2), t("2026-11-02T08:00:00Z"));
        assert_eq!(span.dates().count(), 4);
        assert_eq!(
            at_local(NaiveDate::from_ymd_opt(2026, 3, 8).unwrap(), 2, 30),
            t("2026-03-08T10:30:00Z")
        );
        assert_eq!(pacific_hour(t("2026-11-02T04:00:00Z")), 20);
        assert_eq!(
            day_end(t("2026-11-01T12:00:00Z")),
            t("2026-11-02T08:00:00Z")
        );
    }

    #[test]
    fn diurnal_weights_average_to_one_and_peak_in_the_evening() {
        let mean = (0..24).map(diurnal).sum::<f64>() / 24.0;
        assert!((mean - 1.0).abs() < 1e-9);
        let peak = (0..24).max_by(|a, b| diurnal(*a).total_cmp(&diurnal(*b)));
        assert_eq!(peak, Some(20));
        assert!(diurnal(3) < 0.2 * diurnal(20));
    }
}
