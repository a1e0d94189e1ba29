//! Inventory snapshots of every SKU at each of its shop's two locations, every 6 hours.
//!
//! Sellable stock falls by the units of the orders placed there (cancelled orders excepted),
//! a replenishment is ordered when it drops below about 10 days of demand and arrives 3-6
//! days later (`inbound` until then), and `reserved` holds the units of orders placed but not
//! shipped yet. A stockout anomaly empties the SKU at its start and the replenishment lands
//! exactly at its end; its orders were cancelled, so nothing draws the stock down meanwhile.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use kpiflow_schemas::{Event, InventorySnapshot};
use rand::Rng;

use super::SimulatorConfig;
use super::anomalies::Effects;
use super::calendar::Span;
use super::catalog::Shop;
use super::orders::OrderLine;
use super::random::{self, Stream};
use super::stream::Fact;

/// Time between snapshots.
const EVERY: TimeDelta = TimeDelta::hours(6);
/// Mean units per order (70% one unit, 22% two, 8% three).
const UNITS_PER_ORDER: f64 = 1.38;

/// A replenishment on its way.
struct Inbound {
    units: u64,
    arrives: DateTime<Utc>,
}

/// Pushes the snapshots of every SKU and location onto `facts`; `orders` is every order line
/// of the run.
pub(super) fn generate(
    cfg: &SimulatorConfig,
    span: &Span,
    shops: &[Shop],
    fx: &Effects,
    orders: &[OrderLine],
    facts: &mut Vec<Fact>,
) {
    // Snapshot times: the 6-hour UTC marks within the span.
    let first = span
        .start
        .duration_trunc(EVERY)
        .map(|t| if t < span.start { t + EVERY } else { t })
        .unwrap_or(span.start);
    let times: Vec<DateTime<Utc>> = std::iter::successors(Some(first), |t| Some(*t + EVERY))
        .take_while(|t| *t <= span.end)
        .collect();

    // Orders per (shop, sku, location), placement order, cancelled ones left out.
    let skus = cfg.skus_per_shop as usize;
    let mut by_key: Vec<Vec<&OrderLine>> = vec![Vec::new(); shops.len() * skus * 2];
    for o in orders.iter().filter(|o| o.shipped.is_some()) {
        by_key[(o.shop as usize * skus + o.sku as usize) * 2 + o.location].push(o);
    }

    for shop in shops {
        for (k, sku) in shop.skus.iter().enumerate() {
            let stockouts = fx.stockouts_of(shop.index, k as u32);
            for (loc_index, location) in shop.locations.iter().enumerate() {
                let key = (shop.index as usize * skus + k) * 2 + loc_index;
                let mut rng = random::stream(cfg.seed, Stream::Inventory, key as u64);
                let demand_per_day = f64::from(cfg.orders_per_shop_per_day)
                    * sku.share
                    * shop.location_share(loc_index)
                    * UNITS_PER_ORDER;
                let reorder_point = (demand_per_day * 10.0).ceil().max(20.0) as u64;
                let reorder_units = (demand_per_day * 30.0).ceil().max(40.0) as u64;
                let mut sellable =
                    (demand_per_day * random::uniform(&mut rng, 14.0, 30.0)).ceil() as u64 + 20;
                let unfulfillable = if rng.random_bool(0.3) {
                    rng.random_range(1..=4)
                } else {
                    0
                };
                let mut inbound: Option<Inbound> = None;
                let lines = &by_key[key];
                let mut next_order = 0;

                for &t in &times {
                    let lead = random::hours(&mut rng, 3.0 * 24.0, 6.0 * 24.0);
                    if let Some(p) = inbound.as_ref().filter(|p| p.arrives <= t) {
                        sellable += p.units;
                        inbound = None;
                    }
                    while let Some(o) = lines.get(next_order).filter(|o| o.placed <= t) {
                        sellable = sellable.saturating_sub(u64::from(o.units));
                        next_order += 1;
                    }
                    if let Some(w) = stockouts.iter().find(|w| w.contains(t)) {
                        // Out of stock: the shelf stays empty until the replenishment lands
                        // at the window's end.
                        sellable = 0;
                        if inbound.as_ref().is_none_or(|p| p.arrives != w.end) {
                            inbound = Some(Inbound {
                                units: reorder_units.max(inbound.as_ref().map_or(0, |p| p.units)),
                                arrives: w.end,
                            });
                        }
                    } else if inbound.is_none() && sellable < reorder_point {
                        inbound = Some(Inbound {
                            units: reorder_units,
                            arrives: t + lead,
                        });
                    }
                    // Reserved: placed, not yet shipped. Orders ship within ~3 days of
                    // placement, so only the recent ones can still be open.
                    let reserved: u64 = lines[..next_order]
                        .iter()
                        .rev()
                        .take_while(|o| t - o.placed < TimeDelta::days(4))
                        .filter(|o| o.shipped.is_some_and(|s| s > t))
                        .map(|o| u64::from(o.units))
                        .sum();
                    let event_id = format!(
                        "sim-{}-inv-{}-{}-{}",
                        cfg.seed,
                        sku.id,
                        location.id,
                        t.timestamp()
                    );
                    facts.push(Fact::new(
                        t,
                        Event::new(
                            shop.header(event_id, Some(sku), t),
                            InventorySnapshot {
                                location: location.id.clone(),
                                location_kind: location.kind,
                                sellable,
                                inbound: inbound.as_ref().map_or(0, |p| p.units),
                                reserved,
                                unfulfillable,
                            },
                        ),
                    ));
                }
            }
        }
    }
}
