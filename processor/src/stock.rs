//! Daily stock levels: per SKU and business day, each location's newest level at the day's
//! end, carried forward to days without a report (catalog measures with `daily`).
//!
//! Sources report stock when it changes (or when polled): a SKU at zero for a week may be
//! reported once. The stockout rate, average stock and turnover need one indicator per SKU
//! per business day, so this keeps each location's last report of every day and books every
//! day of a SKU, from its first report to its shop's current day (the business day of the
//! shop's newest fact), at that day's local midnight. A report (late or not) re-books the days
//! from its own to the current one; the shop moving into a new day books that day for every
//! SKU it knows. Only differences reach the engine's buckets, like restatements.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use kpiflow_schemas::Decimal;
use serde::{Deserialize, Serialize};

use crate::catalog::DailyKind;
use crate::window::Hour;

/// One change to a bucket: (scope, hour, measure, amount).
pub type Delta = (u32, Hour, u16, Decimal);

/// Per measure, an amount; serialized as rust_decimal's exact 16-byte form (postcard, the
/// checkpoint format, cannot read a self-describing decimal).
#[derive(Debug, Clone, Default, PartialEq)]
struct Levels(Vec<(u16, Decimal)>);

impl Serialize for Levels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let packed: Vec<(u16, [u8; 16])> =
            self.0.iter().map(|(m, d)| (*m, d.0.serialize())).collect();
        packed.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Levels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let packed: Vec<(u16, [u8; 16])> = Deserialize::deserialize(d)?;
        Ok(Levels(
            packed
                .into_iter()
                .map(|(m, b)| (m, Decimal(rust_decimal::Decimal::deserialize(b))))
                .collect(),
        ))
    }
}

/// The last report of one location on one business day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    version: i64,
    event_id: String,
    /// Per measure, the level this report gives it.
    values: Levels,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Sku {
    /// (measure, scope) pairs this SKU's days add to: its shop and, for KPIs per SKU, itself.
    targets: Vec<(u16, u32)>,
    /// Per location (its replace key): the last report of each business day.
    locations: BTreeMap<String, BTreeMap<NaiveDate, Report>>,
    /// What each booked day added, per measure.
    booked: BTreeMap<NaiveDate, Levels>,
}

impl Sku {
    fn first_day(&self) -> Option<NaiveDate> {
        self.locations
            .values()
            .filter_map(|days| days.keys().next().copied())
            .min()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Shop {
    /// The last business day booked for every SKU.
    current: Option<NaiveDate>,
    skus: BTreeMap<String, Sku>,
}

/// Daily stock state of every shop, per replace group of `daily` measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StockDays {
    /// By (shop scope, replace group): one shop's groups are one range.
    shops: BTreeMap<(u32, u16), Shop>,
}

/// How one report is placed.
pub struct Placed<'a> {
    /// The replace group of the measures.
    pub group: u16,
    /// The shop scope.
    pub shop: u32,
    /// The SKU (header `sku`).
    pub sku: &'a str,
    /// The location: the report's replace key.
    pub location: String,
    /// The report's business day in the shop's zone.
    pub day: NaiveDate,
    /// Restatement version (the largest (version, event id) of a day wins).
    pub version: i64,
    /// The event id.
    pub event_id: &'a str,
    /// Per measure, the level the report gives it.
    pub values: Vec<(u16, Decimal)>,
    /// (measure, scope) pairs the SKU's days add to.
    pub targets: Vec<(u16, u32)>,
}

impl StockDays {
    /// Whether any daily state is held.
    pub fn is_empty(&self) -> bool {
        self.shops.is_empty()
    }

    /// Records a report and returns the bucket changes of the days it re-books, up to
    /// `today` (the shop's current business day, at least the report's). `Err` names the
    /// newer report of the same location and day that stays.
    pub fn report(
        &mut self,
        r: Placed<'_>,
        today: NaiveDate,
        kind: &dyn Fn(u16) -> DailyKind,
        midnight: &dyn Fn(NaiveDate) -> Hour,
    ) -> Result<Vec<Delta>, String> {
        let mut out = Vec::new();
        let today = today.max(r.day);
        let shop = self.shops.entry((r.shop, r.group)).or_default();
        if let Some(old) = shop
            .skus
            .get(r.sku)
            .and_then(|sku| sku.locations.get(&r.location))
            .and_then(|days| days.get(&r.day))
            && (old.version, old.event_id.as_str()) >= (r.version, r.event_id)
        {
            return Err(format!("event {}", old.event_id));
        }
        // The shop may enter a new day with this report: first carry every SKU's levels so
        // far into the days up to it, then let the report change its own days.
        let until = shop.current.map_or(today, |c| c.max(today));
        if let Some(from) = shop
            .current
            .filter(|c| *c < until)
            .and_then(|c| c.succ_opt())
        {
            for sku in shop.skus.values_mut() {
                rebook(sku, from, until, kind, midnight, &mut out);
            }
        }
        shop.current = Some(until);
        let sku = shop.skus.entry(r.sku.to_string()).or_default();
        sku.locations.entry(r.location).or_default().insert(
            r.day,
            Report {
                version: r.version,
                event_id: r.event_id.to_string(),
                values: Levels(r.values),
            },
        );
        for t in r.targets {
            if !sku.targets.contains(&t) {
                sku.targets.push(t);
            }
        }
        // A level carries forward, never back: the days from the report's own on change.
        rebook(sku, r.day, until, kind, midnight, &mut out);
        Ok(out)
    }

    /// The shop `shop` has reached business day `today`: books the new days of every SKU of
    /// every daily group it has.
    pub fn advance(
        &mut self,
        shop: u32,
        today: NaiveDate,
        kind: &dyn Fn(u16) -> DailyKind,
        midnight: &dyn Fn(NaiveDate) -> Hour,
    ) -> Vec<Delta> {
        let mut out = Vec::new();
        for state in self
            .shops
            .range_mut((shop, 0)..=(shop, u16::MAX))
            .map(|(_, s)| s)
        {
            if state.current.is_none_or(|c| c >= today) {
                continue;
            }
            let from = state
                .current
                .and_then(|c| c.succ_opt())
                .expect("checked above");
            for sku in state.skus.values_mut() {
                rebook(sku, from, today, kind, midnight, &mut out);
            }
            state.current = Some(today);
        }
        out
    }

    /// Forgets the days of `shop` before `cutoff` (their buckets are gone), keeping each
    /// location's last report before it: later days still carry it forward.
    pub fn evict(&mut self, shop: u32, cutoff: NaiveDate) {
        for state in self
            .shops
            .range_mut((shop, 0)..=(shop, u16::MAX))
            .map(|(_, s)| s)
        {
            for sku in state.skus.values_mut() {
                sku.booked = sku.booked.split_off(&cutoff);
                for days in sku.locations.values_mut() {
                    let keep = days.range(..cutoff).next_back().map(|(d, _)| *d);
                    if let Some(k) = keep {
                        *days = days.split_off(&k);
                    }
                }
            }
        }
    }

    /// Renumbers measures and groups after a restore into a changed catalog (`None`: gone).
    pub fn remap(
        self,
        group: &dyn Fn(u16) -> Option<u16>,
        measure: &dyn Fn(u16) -> Option<u16>,
    ) -> StockDays {
        let values = |v: Levels| -> Levels {
            Levels(
                v.0.into_iter()
                    .filter_map(|(m, d)| Some((measure(m)?, d)))
                    .collect(),
            )
        };
        let mut out = StockDays::default();
        for ((shop, g), mut state) in self.shops {
            let Some(g) = group(g) else { continue };
            for sku in state.skus.values_mut() {
                sku.targets = std::mem::take(&mut sku.targets)
                    .into_iter()
                    .filter_map(|(m, s)| Some((measure(m)?, s)))
                    .collect();
                sku.booked = std::mem::take(&mut sku.booked)
                    .into_iter()
                    .map(|(d, v)| (d, values(v)))
                    .collect();
                for days in sku.locations.values_mut() {
                    for r in days.values_mut() {
                        r.values = values(std::mem::take(&mut r.values));
                    }
                }
            }
            out.shops.insert((shop, g), state);
        }
        out
    }
}

/// Books days `from..=to` of `sku` again: each day's level per measure is the sum over
/// locations of their newest report on or before it; only changes are emitted.
fn rebook(
    sku: &mut Sku,
    from: NaiveDate,
    to: NaiveDate,
    kind: &dyn Fn(u16) -> DailyKind,
    midnight: &dyn Fn(NaiveDate) -> Hour,
    out: &mut Vec<Delta>,
) {
    let Some(first) = sku.first_day() else {
        return;
    };
    let measures: Vec<u16> = {
        let mut m: Vec<u16> = sku.targets.iter().map(|(m, _)| *m).collect();
        m.sort_unstable();
        m.dedup();
        m
    };
    let mut day = from.max(first);
    while day <= to {
        let mut level: Vec<(u16, Decimal)> = measures.iter().map(|m| (*m, Decimal::ZERO)).collect();
        for days in sku.locations.values() {
            if let Some((_, r)) = days.range(..=day).next_back() {
                for (m, v) in &r.values.0 {
                    if let Some(slot) = level.iter_mut().find(|(lm, _)| lm == m) {
                        slot.1 += *v;
                    }
                }
            }
        }
        let now: Vec<(u16, Decimal)> = level
            .into_iter()
            .map(|(m, l)| {
                let v = match kind(m) {
                    DailyKind::Days => Decimal::from_i64(1),
                    DailyKind::ZeroDays if l == Decimal::ZERO => Decimal::from_i64(1),
                    DailyKind::ZeroDays => Decimal::ZERO,
                    DailyKind::Level => l,
                };
                (m, v)
            })
            .collect();
        let before = sku.booked.get(&day);
        let hour = midnight(day);
        for (m, v) in &now {
            let old = before
                .and_then(|b| b.0.iter().find(|(bm, _)| bm == m))
                .map_or(Decimal::ZERO, |(_, v)| *v);
            if *v != old {
                for (tm, scope) in &sku.targets {
                    if tm == m {
                        out.push((*scope, hour, *m, *v - old));
                    }
                }
            }
        }
        sku.booked.insert(day, Levels(now));
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAYS: u16 = 0;
    const ZERO: u16 = 1;
    const LEVEL: u16 = 2;

    fn kind(m: u16) -> DailyKind {
        match m {
            DAYS => DailyKind::Days,
            ZERO => DailyKind::ZeroDays,
            _ => DailyKind::Level,
        }
    }

    fn midnight(d: NaiveDate) -> Hour {
        // UTC days, for brevity.
        i64::from(d.signed_duration_since(day(1)).num_days() as i32) * 24
    }

    fn day(n: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, n).unwrap()
    }

    fn report(loc: &str, d: u32, version: i64, level: i64) -> Placed<'static> {
        Placed {
            group: 0,
            shop: 0,
            sku: "A",
            location: loc.into(),
            day: day(d),
            version,
            event_id: Box::leak(format!("{loc}-{d}-{version}").into_boxed_str()),
            values: [DAYS, ZERO, LEVEL]
                .iter()
                .map(|m| (*m, Decimal::from_i64(level)))
                .collect(),
            targets: vec![(DAYS, 0), (ZERO, 0), (LEVEL, 0)],
        }
    }

    /// Per measure, the sum of all deltas per day (hour / 24 + 1 = day of the month).
    fn totals(deltas: &[Delta]) -> BTreeMap<(u32, u16), Decimal> {
        let mut t = BTreeMap::new();
        for (_, h, m, v) in deltas {
            *t.entry(((*h / 24 + 1) as u32, *m)).or_insert(Decimal::ZERO) += *v;
        }
        t.retain(|_, v| *v != Decimal::ZERO);
        t
    }

    #[test]
    fn a_level_is_carried_forward_to_days_without_a_report() {
        let mut s = StockDays::default();
        let mut all = Vec::new();
        all.extend(
            s.report(report("FBA", 1, 1, 0), day(1), &kind, &midnight)
                .unwrap(),
        );
        // Nothing reported for a week; the shop's newest fact reaches day 7.
        all.extend(s.advance(0, day(7), &kind, &midnight));
        let t = totals(&all);
        for d in 1..=7 {
            assert_eq!(t.get(&(d, DAYS)), Some(&Decimal::from_i64(1)), "day {d}");
            assert_eq!(t.get(&(d, ZERO)), Some(&Decimal::from_i64(1)), "day {d}");
            assert_eq!(t.get(&(d, LEVEL)), None, "day {d}");
        }
        assert_eq!(t.get(&(8, DAYS)), None);
    }

    #[test]
    fn the_days_last_report_decides_and_locations_add_up() {
        let mut s = StockDays::default();
        let mut all = Vec::new();
        all.extend(
            s.report(report("FBA", 1, 1, 5), day(1), &kind, &midnight)
                .unwrap(),
        );
        all.extend(
            s.report(report("FBA", 2, 1, 2), day(2), &kind, &midnight)
                .unwrap(),
        );
        all.extend(
            s.report(report("FBA", 2, 2, 0), day(2), &kind, &midnight)
                .unwrap(),
        );
        // A second location appears on day 3 with 4 units: the SKU is not out of stock.
        all.extend(
            s.report(report("WH", 3, 1, 4), day(3), &kind, &midnight)
                .unwrap(),
        );
        let t = totals(&all);
        assert_eq!(t.get(&(1, LEVEL)), Some(&Decimal::from_i64(5)));
        assert_eq!(
            t.get(&(2, LEVEL)),
            None,
            "the day's later report (0) decides"
        );
        assert_eq!(t.get(&(2, ZERO)), Some(&Decimal::from_i64(1)));
        assert_eq!(t.get(&(3, LEVEL)), Some(&Decimal::from_i64(4)));
        assert_eq!(t.get(&(3, ZERO)), None);
        assert_eq!(
            t.get(&(3, DAYS)),
            Some(&Decimal::from_i64(1)),
            "one indicator per SKU"
        );
        // An older version of day 2's report is refused, naming the one that stays.
        let err = s
            .report(report("FBA", 2, 1, 9), day(3), &kind, &midnight)
            .unwrap_err();
        assert_eq!(err, "event FBA-2-2");
    }

    #[test]
    fn a_late_report_rebooks_the_days_it_carries_into() {
        let mut s = StockDays::default();
        let mut all = Vec::new();
        all.extend(
            s.report(report("FBA", 1, 1, 3), day(1), &kind, &midnight)
                .unwrap(),
        );
        all.extend(s.advance(0, day(5), &kind, &midnight));
        // A report for day 3 arrives late: days 3..5 now read 0.
        all.extend(
            s.report(report("FBA", 3, 1, 0), day(5), &kind, &midnight)
                .unwrap(),
        );
        let t = totals(&all);
        assert_eq!(t.get(&(2, LEVEL)), Some(&Decimal::from_i64(3)));
        for d in 3..=5 {
            assert_eq!(t.get(&(d, LEVEL)), None, "day {d}");
            assert_eq!(t.get(&(d, ZERO)), Some(&Decimal::from_i64(1)), "day {d}");
        }
    }

    #[test]
    fn a_report_after_a_gap_carries_the_old_level_through_the_gap() {
        let mut s = StockDays::default();
        let mut all = Vec::new();
        all.extend(
            s.report(report("FBA", 2, 1, 0), day(2), &kind, &midnight)
                .unwrap(),
        );
        all.extend(
            s.report(report("FBA", 9, 1, 25), day(9), &kind, &midnight)
                .unwrap(),
        );
        let t = totals(&all);
        for d in 2..=8 {
            assert_eq!(t.get(&(d, ZERO)), Some(&Decimal::from_i64(1)), "day {d}");
        }
        assert_eq!(t.get(&(9, ZERO)), None);
        assert_eq!(t.get(&(9, LEVEL)), Some(&Decimal::from_i64(25)));
    }

    #[test]
    fn a_report_before_the_first_day_moves_the_start_back() {
        let mut s = StockDays::default();
        let mut all = Vec::new();
        all.extend(
            s.report(report("FBA", 3, 1, 2), day(3), &kind, &midnight)
                .unwrap(),
        );
        all.extend(
            s.report(report("FBA", 1, 1, 0), day(3), &kind, &midnight)
                .unwrap(),
        );
        let t = totals(&all);
        assert_eq!(t.get(&(1, ZERO)), Some(&Decimal::from_i64(1)));
        assert_eq!(
            t.get(&(2, ZERO)),
            Some(&Decimal::from_i64(1)),
            "day 1's 0 carried"
        );
        assert_eq!(t.get(&(3, LEVEL)), Some(&Decimal::from_i64(2)));
        assert_eq!(t.get(&(3, ZERO)), None);
    }

    #[test]
    fn eviction_keeps_the_report_later_days_carry() {
        let mut s = StockDays::default();
        s.report(report("FBA", 1, 1, 3), day(1), &kind, &midnight)
            .unwrap();
        s.advance(0, day(10), &kind, &midnight);
        s.evict(0, day(8));
        let more = s.advance(0, day(11), &kind, &midnight);
        let t = totals(&more);
        assert_eq!(t.get(&(11, LEVEL)), Some(&Decimal::from_i64(3)));
        assert_eq!(t.get(&(11, DAYS)), Some(&Decimal::from_i64(1)));
    }
}
