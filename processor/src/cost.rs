//! Landed unit costs per SKU and the units they price: the cost of goods of the profit KPIs.
//!
//! A cost measure's units are booked at the cost in force on their booked business day. Costs
//! arrive as `cost.changed` events, and sellers enter them late: a cost dated back must
//! reprice units already booked. So each SKU keeps, beside its costs by first day, the units
//! it booked per hour while the hour's state is kept; a change returns what it reprices and
//! the engine books only the difference (and takes the units out of "uncosted" when they had
//! no cost before).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use kpiflow_schemas::Decimal;
use serde::{Deserialize, Serialize};

use crate::window::Hour;

/// A decimal in rust_decimal's exact 16-byte form: postcard, the checkpoint format, cannot
/// read a self-describing decimal.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Packed(Decimal);

impl Serialize for Packed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.0.serialize().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Packed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: [u8; 16] = Deserialize::deserialize(d)?;
        Ok(Packed(Decimal(rust_decimal::Decimal::deserialize(bytes))))
    }
}

/// One cost, as first recorded (the latest `event_time` of a day counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Price {
    cost: Packed,
    version: DateTime<Utc>,
    event_id: String,
}

/// One SKU's costs and the units they price.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Book {
    /// Landed unit cost by the first business day it applies to.
    prices: BTreeMap<NaiveDate, Price>,
    /// Units booked per (hour, cost measure), for repricing.
    units: BTreeMap<(Hour, u16), Packed>,
}

/// Units of one (hour, cost measure) repriced by a cost change: `old` is the cost they were
/// booked at (`None`: they had none and were booked as uncosted).
#[derive(Debug, Clone, PartialEq)]
pub struct Repriced {
    /// The booked hour.
    pub hour: Hour,
    /// The cost measure.
    pub measure: u16,
    /// Units booked there.
    pub units: Decimal,
    /// The cost they had.
    pub old: Option<Decimal>,
    /// The cost they have now.
    pub new: Decimal,
}

/// Every SKU's book, by (shop scope, SKU). Ordered, so snapshots of equal states are equal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Costs {
    books: BTreeMap<(u32, String), Book>,
}

impl Costs {
    /// The cost of one unit of `sku` on business `day`, if one is known.
    pub fn price(&self, shop: u32, sku: &str, day: NaiveDate) -> Option<Decimal> {
        let book = self.books.get(&(shop, sku.to_string()))?;
        book.prices.range(..=day).next_back().map(|(_, p)| p.cost.0)
    }

    /// Remembers `units` of cost measure `measure` booked at `hour`, for later repricing.
    pub fn book_units(&mut self, shop: u32, sku: &str, hour: Hour, measure: u16, units: Decimal) {
        let book = self.books.entry((shop, sku.to_string())).or_default();
        book.units.entry((hour, measure)).or_default().0 += units;
    }

    /// Records the cost of `sku` from `day` on, unless a change of that day recorded later
    /// (larger `(version, event_id)`) is already held: then `Err` names it. `Ok` lists the
    /// booked units it reprices: those of the days from `day` to the SKU's next change
    /// (`midnight` gives a business day's first hour in the shop's zone).
    #[allow(clippy::too_many_arguments)]
    pub fn change(
        &mut self,
        shop: u32,
        sku: &str,
        day: NaiveDate,
        cost: Decimal,
        version: DateTime<Utc>,
        event_id: &str,
        midnight: &dyn Fn(NaiveDate) -> Hour,
    ) -> Result<Vec<Repriced>, String> {
        let book = self.books.entry((shop, sku.to_string())).or_default();
        if let Some(held) = book.prices.get(&day)
            && (held.version, held.event_id.as_str()) == (version, event_id)
        {
            // The same record again (a source republishing its file after a restart, once its
            // id is no longer remembered): already counted.
            return Ok(Vec::new());
        }
        if let Some(held) = book.prices.get(&day)
            && (held.version, held.event_id.as_str()) > (version, event_id)
        {
            return Err(format!(
                "event {}, recorded {}",
                held.event_id,
                held.version.to_rfc3339()
            ));
        }
        // Until the next change, the days it covers had the cost in force before it.
        let old = book.prices.range(..=day).next_back().map(|(_, p)| p.cost.0);
        let until = book
            .prices
            .range(day.succ_opt().unwrap_or(day)..)
            .next()
            .map(|(d, _)| midnight(*d));
        book.prices.insert(
            day,
            Price {
                cost: Packed(cost),
                version,
                event_id: event_id.to_string(),
            },
        );
        let from = (midnight(day), 0u16);
        let covered = book
            .units
            .range(from..)
            .take_while(|((h, _), _)| until.is_none_or(|u| *h < u));
        Ok(covered
            .filter(|(_, units)| units.0 != Decimal::ZERO)
            .map(|((hour, measure), units)| Repriced {
                hour: *hour,
                measure: *measure,
                units: units.0,
                old,
                new: cost,
            })
            .collect())
    }

    /// Forgets the units of `shop` booked before `cutoff` (their buckets are gone). Costs stay:
    /// they are few, and a late fact may still need the one in force on its day.
    pub fn evict(&mut self, shop: u32, cutoff: Hour) {
        for ((s, _), book) in self.books.range_mut((shop, String::new())..) {
            if *s != shop {
                break;
            }
            book.units = book.units.split_off(&(cutoff, 0));
        }
    }

    /// SKUs with units booked on a day before their first cost, or with no cost at all: the
    /// gap that keeps their profit from being published.
    pub fn skus_without_cost(&self, midnight: &dyn Fn(u32, NaiveDate) -> Hour) -> usize {
        self.books
            .iter()
            .filter(|((shop, _), b)| {
                let Some(first_hour) = b
                    .units
                    .iter()
                    .find(|(_, u)| u.0 != Decimal::ZERO)
                    .map(|((h, _), _)| *h)
                else {
                    return false;
                };
                b.prices
                    .keys()
                    .next()
                    .is_none_or(|d| first_hour < midnight(*shop, *d))
            })
            .count()
    }

    /// The same books with measure numbers mapped to another catalog's (a restored
    /// checkpoint); units of measures it lacks are dropped.
    pub fn remap(self, measure: &dyn Fn(u16) -> Option<u16>) -> Costs {
        let mut out = self;
        for book in out.books.values_mut() {
            book.units = std::mem::take(&mut book.units)
                .into_iter()
                .filter_map(|((h, m), u)| Some(((h, measure(m)?), u)))
                .collect();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Days as UTC: day n since the epoch starts at hour 24n.
    fn midnight(day: NaiveDate) -> Hour {
        (day - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() * 24
    }

    #[test]
    fn a_cost_dated_back_reprices_the_days_up_to_the_next_change() {
        let mut c = Costs::default();
        let nov = |n: i64| midnight(day("2026-11-01")) + (n - 1) * 24;
        c.book_units(0, "A", nov(1) + 5, 3, d("2"));
        c.book_units(0, "A", nov(3) + 1, 3, d("1"));
        c.book_units(0, "A", nov(5), 3, d("4"));
        assert_eq!(c.price(0, "A", day("2026-11-05")), None);
        // From Nov 3: units of Nov 3 and 5 had no cost.
        let r = c
            .change(
                0,
                "A",
                day("2026-11-03"),
                d("7"),
                at("2026-11-06T00:00:00Z"),
                "e1",
                &midnight,
            )
            .unwrap();
        assert_eq!(
            r.iter()
                .map(|r| (r.hour, r.units, r.old, r.new))
                .collect::<Vec<_>>(),
            [
                (nov(3) + 1, d("1"), None, d("7")),
                (nov(5), d("4"), None, d("7"))
            ]
        );
        // Then from Nov 1 at 5: it covers Nov 1 and 2 only (Nov 3 has its own cost).
        let r = c
            .change(
                0,
                "A",
                day("2026-11-01"),
                d("5"),
                at("2026-11-06T00:00:00Z"),
                "e2",
                &midnight,
            )
            .unwrap();
        assert_eq!(
            r.iter()
                .map(|r| (r.hour, r.units, r.old))
                .collect::<Vec<_>>(),
            [(nov(1) + 5, d("2"), None)]
        );
        // A correction of Nov 3 recorded later replaces 7 by 6 for Nov 3 and 5.
        let r = c
            .change(
                0,
                "A",
                day("2026-11-03"),
                d("6"),
                at("2026-11-07T00:00:00Z"),
                "e3",
                &midnight,
            )
            .unwrap();
        assert_eq!(
            r.iter().map(|r| (r.hour, r.old, r.new)).collect::<Vec<_>>(),
            [
                (nov(3) + 1, Some(d("7")), d("6")),
                (nov(5), Some(d("7")), d("6"))
            ]
        );
        // One recorded earlier than the held one is refused, naming it.
        let err = c
            .change(
                0,
                "A",
                day("2026-11-03"),
                d("9"),
                at("2026-11-06T12:00:00Z"),
                "e4",
                &midnight,
            )
            .unwrap_err();
        assert_eq!(err, "event e3, recorded 2026-11-07T00:00:00+00:00");
        // The held record itself again reprices nothing and is not refused.
        let again = c.change(
            0,
            "A",
            day("2026-11-03"),
            d("6"),
            at("2026-11-07T00:00:00Z"),
            "e3",
            &midnight,
        );
        assert_eq!(again, Ok(Vec::new()));
        assert_eq!(c.price(0, "A", day("2026-11-02")), Some(d("5")));
        assert_eq!(c.price(0, "A", day("2026-11-30")), Some(d("6")));
        assert_eq!(c.price(0, "A", day("2026-10-31")), None);
    }

    #[test]
    fn skus_without_cost_count_units_before_their_first_cost() {
        let mut c = Costs::default();
        let m = |_: u32, d: NaiveDate| midnight(d);
        let h = midnight(day("2026-11-02"));
        c.book_units(0, "A", h, 0, d("1"));
        c.book_units(0, "B", h, 0, d("1"));
        c.book_units(1, "A", h, 0, d("1"));
        c.change(
            0,
            "B",
            day("2026-11-02"),
            d("3"),
            at("2026-11-02T00:00:00Z"),
            "b",
            &midnight,
        )
        .unwrap();
        c.change(
            1,
            "A",
            day("2026-11-03"),
            d("3"),
            at("2026-11-02T00:00:00Z"),
            "a",
            &midnight,
        )
        .unwrap();
        // Shop 0's A has no cost; shop 1's A sold on Nov 2 but costs from Nov 3.
        assert_eq!(c.skus_without_cost(&m), 2);
        c.evict(1, h + 24);
        assert_eq!(c.skus_without_cost(&m), 1);
    }
}
