//! The KPI catalog: additive measures, and KPIs defined as measures or ratios of two.
//!
//! A measure is a filtered sum or count over canonical events, placed in time by one of the
//! event's timestamps (its basis). Ratios are never averaged: each window keeps numerator and
//! denominator sums and divides only when a value is published.
//!
//! This first catalog is compiled in; moving definitions into a configuration file is the
//! engine issue's work, and the names here are the ones that file will use.

use chrono::{DateTime, Utc};
use kpiflow_schemas::{CancelledBy, Decimal, Direction, EventBody};

/// An additive quantity kept per shop and hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    /// Orders placed (basis: placed time).
    Orders,
    /// Order totals placed (basis: placed time).
    Gmv,
    /// Orders ship-confirmed (basis: ship time).
    Shipments,
    /// Orders ship-confirmed after their ship-by date (basis: ship time).
    LateShipments,
    /// Orders cancelled by the seller (basis: the order's placed time).
    SellerCancels,
    /// Ad spend (basis: the ad report date); restated rows replace earlier versions.
    AdSpend,
    /// Ad-attributed sales (basis: the ad report date); restated rows replace earlier versions.
    AdSales,
}

/// How many measures there are; buckets hold one slot per measure.
pub const MEASURES: usize = 7;

impl Measure {
    /// The bucket slot of this measure.
    pub const fn slot(self) -> usize {
        self as usize
    }
}

/// What a KPI measures, and how to read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KpiDef {
    /// KPI id, e.g. `late_shipment_rate`.
    pub id: &'static str,
    /// Definition version, stamped on every output so history stays comparable.
    pub version: u32,
    /// `money`, `count` or `ratio`.
    pub unit: &'static str,
    /// Whether larger is better.
    pub direction: Direction,
    /// Owning team.
    pub owner: &'static str,
    /// The numerator (or the value itself).
    pub numerator: Measure,
    /// The denominator, for ratios.
    pub denominator: Option<Measure>,
    /// Which timestamp places facts in windows.
    pub basis: &'static str,
}

impl KpiDef {
    /// Whether values are amounts of money (and so carry a currency).
    pub fn is_money(&self) -> bool {
        self.unit == "money"
    }
}

/// The KPIs of the first cut, per shop.
pub const KPIS: &[KpiDef] = &[
    KpiDef {
        id: "gmv",
        version: 1,
        unit: "money",
        direction: Direction::HigherIsBetter,
        owner: "finance",
        numerator: Measure::Gmv,
        denominator: None,
        basis: "placed",
    },
    KpiDef {
        id: "orders",
        version: 1,
        unit: "count",
        direction: Direction::HigherIsBetter,
        owner: "operations",
        numerator: Measure::Orders,
        denominator: None,
        basis: "placed",
    },
    KpiDef {
        id: "aov",
        version: 1,
        unit: "money",
        direction: Direction::HigherIsBetter,
        owner: "finance",
        numerator: Measure::Gmv,
        denominator: Some(Measure::Orders),
        basis: "placed",
    },
    KpiDef {
        id: "late_shipment_rate",
        version: 1,
        unit: "ratio",
        direction: Direction::LowerIsBetter,
        owner: "warehouse",
        numerator: Measure::LateShipments,
        denominator: Some(Measure::Shipments),
        basis: "shipped",
    },
    KpiDef {
        id: "cancellation_rate",
        version: 1,
        unit: "ratio",
        direction: Direction::LowerIsBetter,
        owner: "operations",
        numerator: Measure::SellerCancels,
        denominator: Some(Measure::Orders),
        basis: "placed",
    },
    KpiDef {
        id: "roas",
        version: 1,
        unit: "ratio",
        direction: Direction::HigherIsBetter,
        owner: "ads",
        numerator: Measure::AdSales,
        denominator: Some(Measure::AdSpend),
        basis: "ad_date",
    },
];

/// Looks a KPI up by id.
pub fn kpi(id: &str) -> Option<&'static KpiDef> {
    KPIS.iter().find(|k| k.id == id)
}

/// One event's effect on one measure: add `amount` at `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    /// Which measure.
    pub measure: Measure,
    /// The basis timestamp that places it in time.
    pub at: DateTime<Utc>,
    /// How much to add.
    pub amount: Decimal,
}

/// What a (non-restatable) event adds to the measures. Ad rows are restatable and handled by
/// the engine, which applies only their difference from the version they replace.
pub fn contributions(event_time: DateTime<Utc>, body: &EventBody, out: &mut Vec<Contribution>) {
    let one = Decimal::from_i64(1);
    let mut add = |measure, at, amount| {
        out.push(Contribution {
            measure,
            at,
            amount,
        })
    };
    match body {
        EventBody::OrderPlaced(o) => {
            add(Measure::Orders, event_time, one);
            add(Measure::Gmv, event_time, o.total.amount);
        }
        EventBody::OrderShipped(s) => {
            add(Measure::Shipments, event_time, one);
            if event_time > s.ship_by {
                add(Measure::LateShipments, event_time, one);
            }
        }
        EventBody::OrderCancelled(c) if c.cancelled_by == CancelledBy::Seller => {
            add(Measure::SellerCancels, c.placed_at, one);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ratio_has_a_distinct_denominator_and_ids_are_unique() {
        for (i, k) in KPIS.iter().enumerate() {
            assert!(
                KPIS[i + 1..].iter().all(|o| o.id != k.id),
                "duplicate {}",
                k.id
            );
            if let Some(d) = k.denominator {
                assert_ne!(d, k.numerator, "{}", k.id);
            }
            assert!(k.numerator.slot() < MEASURES);
        }
        assert!(kpi("roas").is_some());
        assert!(kpi("nope").is_none());
    }
}
