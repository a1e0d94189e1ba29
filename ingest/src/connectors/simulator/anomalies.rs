//! Configured anomalies resolved to time windows, and the questions the generators ask of them.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use super::calendar::Span;
use super::config::Anomaly;

/// A half-open UTC interval `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window {
    pub(super) start: DateTime<Utc>,
    pub(super) end: DateTime<Utc>,
}

impl Window {
    pub(super) fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

/// The anomalies of one run, with their windows resolved against the span.
#[derive(Debug, Default)]
pub(super) struct Effects {
    spikes: Vec<(u32, Window, f64)>,
    stockouts: Vec<(u32, u32, Window)>,
    collapses: Vec<(u32, NaiveDate, f64)>,
}

impl Effects {
    pub(super) fn new(anomalies: &[Anomaly], span: &Span) -> Effects {
        let mut fx = Effects::default();
        for a in anomalies {
            match *a {
                Anomaly::LateShipmentSpike {
                    shop,
                    day,
                    late_share,
                    hours,
                } => {
                    let start = span.day_start(day);
                    let end = start + TimeDelta::hours(i64::from(hours));
                    fx.spikes.push((shop, Window { start, end }, late_share));
                }
                Anomaly::Stockout {
                    shop,
                    day,
                    sku,
                    days,
                } => {
                    // Pacific midnights, so a DST change inside keeps whole business days.
                    let start = span.day_start(day);
                    let end = span.day_start(day.saturating_add(days));
                    fx.stockouts.push((shop, sku, Window { start, end }));
                }
                Anomaly::RoasCollapse { shop, day, factor } => {
                    fx.collapses.push((shop, span.date(day), factor));
                }
            }
        }
        fx
    }

    /// The late-shipment spike covering a `ship_by` of `shop`: its window and late share.
    pub(super) fn spike(&self, shop: u32, ship_by: DateTime<Utc>) -> Option<(Window, f64)> {
        self.spikes
            .iter()
            .find(|(s, w, _)| *s == shop && w.contains(ship_by))
            .map(|(_, w, share)| (*w, *share))
    }

    /// Whether SKU `sku` of `shop` is out of stock at `t`.
    pub(super) fn out_of_stock(&self, shop: u32, sku: u32, t: DateTime<Utc>) -> bool {
        self.stockouts
            .iter()
            .any(|(s, k, w)| *s == shop && *k == sku && w.contains(t))
    }

    /// The stockout windows of SKU `sku` of `shop`, in start order.
    pub(super) fn stockouts_of(&self, shop: u32, sku: u32) -> Vec<Window> {
        let mut ws: Vec<Window> = self
            .stockouts
            .iter()
            .filter(|(s, k, _)| *s == shop && *k == sku)
            .map(|(_, _, w)| *w)
            .collect();
        ws.sort_by_key(|w| w.start);
        ws
    }

    /// The multiplier on attributed sales of `shop`'s ads for report date `date`.
    pub(super) fn roas_factor(&self, shop: u32, date: NaiveDate) -> f64 {
        self.collapses
            .iter()
            .filter(|(s, from, _)| *s == shop && date >= *from)
            .map(|(_, _, f)| *f)
            .product()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::simulator::SimulatorConfig;

    #[test]
    fn windows_start_at_pacific_midnight() {
        let span = Span::new("2026-11-10T15:00:00Z".parse().unwrap(), 7);
        let fx = Effects::new(&SimulatorConfig::demo().anomalies, &span);
        // Day 2 is 2026-11-12 Pacific, which starts at 08:00Z (PST).
        let due = "2026-11-12T08:00:00Z".parse().unwrap();
        let (w, share) = fx.spike(0, due).unwrap();
        assert_eq!(
            w.end,
            "2026-11-13T08:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(share, 0.3);
        assert!(fx.spike(0, due - TimeDelta::seconds(1)).is_none());
        assert!(fx.spike(1, due).is_none());
        assert!(fx.out_of_stock(1, 0, "2026-11-14T12:00:00Z".parse().unwrap()));
        assert!(!fx.out_of_stock(1, 1, "2026-11-14T12:00:00Z".parse().unwrap()));
        assert!(!fx.out_of_stock(1, 0, "2026-11-15T08:00:00Z".parse().unwrap()));
        let day4 = span.date(4);
        assert_eq!(fx.roas_factor(2, day4), 0.3);
        assert_eq!(fx.roas_factor(2, day4.pred_opt().unwrap()), 1.0);
        assert_eq!(fx.roas_factor(0, day4), 1.0);
    }
}
