//! Whole-simulator properties: determinism, wire validity, lifecycle order, delivery faults,
//! anomalies, and what `run` publishes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use kpiflow_schemas::{CancelledBy, Event, EventBody, Milestone, Topic};
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

use super::calendar::{self, Span};
use super::*;
use crate::MemoryPublisher;
use crate::connector::StopReason;

/// Crosses the spring-forward change (2026-03-08), starts mid-day Pacific.
fn start() -> DateTime<Utc> {
    "2026-03-05T17:23:00Z".parse().unwrap()
}

fn demo() -> Vec<Emitted> {
    simulate(&SimulatorConfig::demo(), start())
}

fn order_id(e: &Event) -> Option<&str> {
    Some(match &e.body {
        EventBody::OrderPlaced(b) => &b.order_id,
        EventBody::OrderPaid(b) => &b.order_id,
        EventBody::OrderShipped(b) => &b.order_id,
        EventBody::OrderDelivered(b) => &b.order_id,
        EventBody::OrderCancelled(b) => &b.order_id,
        EventBody::OrderReturned(b) => &b.order_id,
        EventBody::OrderRefunded(b) => &b.order_id,
        EventBody::OrderDefect(b) => &b.order_id,
        EventBody::ShipmentMilestone(b) => b.order_id.as_deref()?,
        _ => return None,
    })
}

/// When the source made the fact known: `as_of` for ad rows, else the event time.
fn emit_time(e: &Event) -> DateTime<Utc> {
    match &e.body {
        EventBody::AdPerformance(b) => b.as_of,
        _ => e.header.event_time,
    }
}

/// Unique events (duplicates removed), in stream order.
fn unique(stream: &[Emitted]) -> Vec<&Event> {
    stream
        .iter()
        .filter(|e| !e.duplicate)
        .map(|e| &e.event)
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let cfg = SimulatorConfig::demo();
    let a: Vec<Vec<u8>> = generate(&cfg, start()).iter().map(Event::to_json).collect();
    let b: Vec<Vec<u8>> = generate(&cfg, start()).iter().map(Event::to_json).collect();
    assert!(a.len() > 10_000, "{} events", a.len());
    assert_eq!(a, b);
    let other = SimulatorConfig {
        seed: 43,
        ..cfg.clone()
    };
    let c: Vec<Vec<u8>> = generate(&other, start())
        .iter()
        .map(Event::to_json)
        .collect();
    assert_ne!(a, c);
    // `simulate` is `generate` with annotations.
    let annotated: Vec<Vec<u8>> = demo().iter().map(|e| e.event.to_json()).collect();
    assert_eq!(a, annotated);
}

#[test]
fn every_event_round_trips_through_the_wire_format() {
    for e in generate(&SimulatorConfig::demo(), start()) {
        let back = Event::from_json(&e.to_json())
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&e.to_json())));
        assert_eq!(back, e);
        assert_eq!(e.header.source, "simulator");
        assert_eq!(e.header.source_tz.0.name(), "America/Los_Angeles");
    }
}

#[test]
fn headers_follow_the_shop() {
    let mut seen = BTreeMap::new();
    for e in generate(&SimulatorConfig::default(), start()) {
        let h = &e.header;
        seen.entry(h.shop.clone())
            .or_insert((h.channel, h.marketplace.clone()));
        assert_eq!(
            seen[&h.shop],
            (h.channel, h.marketplace.clone()),
            "{}",
            h.event_id
        );
        assert_eq!(e.key(), h.shop);
        assert!(h.event_id.starts_with("sim-42-"), "{}", h.event_id);
    }
    let shops: Vec<_> = seen
        .iter()
        .map(|(s, (c, m))| format!("{s} {c} {m}"))
        .collect();
    assert_eq!(
        shops,
        [
            "shop-001 amazon ATVPDKIKX0DER",
            "shop-002 walmart US",
            "shop-003 shopify US",
            "shop-004 tiktok_shop US"
        ]
    );
}

#[test]
fn ids_are_unique_per_fact_and_duplicates_are_exact_copies() {
    let stream = demo();
    let mut first: HashMap<&str, (usize, Vec<u8>)> = HashMap::new();
    for (i, e) in stream.iter().enumerate() {
        let id = e.event.header.event_id.as_str();
        let json = e.event.to_json();
        match first.get(id) {
            None => {
                assert!(!e.duplicate, "{id}: a duplicate before its original");
                first.insert(id, (i, json));
            }
            Some((_, original)) => {
                assert!(e.duplicate, "{id}: two different facts share an id");
                assert_eq!(
                    &json, original,
                    "{id}: a duplicate differs from its original"
                );
            }
        }
    }
}

#[test]
fn delivery_faults_have_the_configured_shares() {
    let stream = demo();
    let n = stream.len() as f64;
    let originals = stream.iter().filter(|e| !e.duplicate).count() as f64;
    let dups = stream.iter().filter(|e| e.duplicate).count() as f64;
    let late = stream.iter().filter(|e| e.late && !e.duplicate).count() as f64;
    assert!(
        (dups / originals - 0.01).abs() < 0.003,
        "duplicates {dups} of {n}"
    );
    assert!(
        (late / originals - 0.02).abs() < 0.004,
        "late {late} of {originals}"
    );

    let none = SimulatorConfig {
        duplicate_rate: 0.0,
        late_rate: 0.0,
        ..SimulatorConfig::default()
    };
    assert!(
        simulate(&none, start())
            .iter()
            .all(|e| !e.late && !e.duplicate)
    );
}

#[test]
fn the_stream_keeps_its_ordering_guarantees() {
    let cfg = SimulatorConfig::demo();
    let end = start() + TimeDelta::days(7);
    let max_delay = TimeDelta::from_std(cfg.max_delay).unwrap();
    let mut last_on_time = DateTime::<Utc>::MIN_UTC;
    let mut newer_before_late = 0;
    let mut newest = DateTime::<Utc>::MIN_UTC;
    for e in demo() {
        let h = &e.event.header;
        let emitted = emit_time(&e.event);
        let lag = h.ingest_time - emitted;
        assert!(
            h.event_time <= h.ingest_time && h.ingest_time <= end,
            "{}",
            h.event_id
        );
        if e.late {
            assert!(lag > TimeDelta::seconds(5) && lag <= max_delay + TimeDelta::seconds(5));
            if emitted < newest {
                newer_before_late += 1;
            }
        } else {
            assert!(
                (1..=5).contains(&lag.num_seconds()),
                "{}: {lag}",
                h.event_id
            );
        }
        if !e.late && !e.duplicate {
            assert!(emitted >= last_on_time, "{} out of order", h.event_id);
            last_on_time = emitted;
        }
        newest = newest.max(emitted);
    }
    assert!(
        newer_before_late > 100,
        "late events must arrive after newer ones"
    );
}

#[test]
fn order_lifecycles_are_consistent() {
    #[derive(Default)]
    struct Life {
        placed: Option<DateTime<Utc>>,
        placed_at: Option<DateTime<Utc>>,
        shipped: Option<DateTime<Utc>>,
        delivered: Option<DateTime<Utc>>,
        cancelled: Option<DateTime<Utc>>,
        returned: Option<DateTime<Utc>>,
        refunded: Option<DateTime<Utc>>,
        milestones: Vec<(Milestone, DateTime<Utc>)>,
    }
    let mut lives: HashMap<String, Life> = HashMap::new();
    for e in unique(&demo()) {
        let Some(id) = order_id(e) else { continue };
        let t = e.header.event_time;
        let life = lives.entry(id.to_string()).or_default();
        match &e.body {
            EventBody::OrderPlaced(b) => {
                life.placed = Some(t);
                assert_eq!(b.total.amount.0.scale(), 2);
                assert!((1..=3).contains(&b.units));
                assert!(b.ship_by.unwrap() > t && b.deliver_by.unwrap() > b.ship_by.unwrap());
            }
            EventBody::OrderPaid(b) => life.placed_at = Some(b.placed_at),
            EventBody::OrderShipped(b) => {
                life.shipped = Some(t);
                life.placed_at = Some(b.placed_at);
            }
            EventBody::OrderDelivered(_) => life.delivered = Some(t),
            EventBody::OrderCancelled(_) => life.cancelled = Some(t),
            EventBody::OrderReturned(_) => life.returned = Some(t),
            EventBody::OrderRefunded(_) => life.refunded = Some(t),
            EventBody::ShipmentMilestone(b) => life.milestones.push((b.milestone, t)),
            _ => {}
        }
    }
    let (mut shipped, mut cancelled) = (0, 0);
    for (id, l) in &lives {
        if let (Some(p), Some(pa)) = (l.placed, l.placed_at) {
            assert_eq!(p, pa, "{id}");
        }
        let placed = l.placed.or(l.placed_at);
        for t in [l.shipped, l.delivered, l.cancelled, l.returned]
            .into_iter()
            .flatten()
        {
            assert!(placed.is_none_or(|p| t > p), "{id}: before placement");
        }
        if l.cancelled.is_some() {
            cancelled += 1;
            assert!(
                l.shipped.is_none() && l.delivered.is_none(),
                "{id}: cancelled yet shipped"
            );
        }
        if let Some(d) = l.delivered {
            assert!(
                l.shipped.is_some_and(|s| s < d),
                "{id}: delivered before shipping"
            );
        }
        if let Some(r) = l.returned {
            assert!(
                l.delivered.is_some_and(|d| d < r),
                "{id}: returned before delivery"
            );
        }
        if let (Some(r), Some(f)) = (l.returned, l.refunded) {
            assert!(r < f, "{id}: refunded before the return arrived");
        }
        if l.shipped.is_some() {
            shipped += 1;
        }
        let mut ms = l.milestones.clone();
        ms.sort_by_key(|(m, _)| *m as u8);
        assert!(ms.windows(2).all(|w| w[0].1 <= w[1].1), "{id}: {ms:?}");
        // (Either event may be missing: a late delivery can fall after the span's end.)
        for (kind, shipment_time) in [
            (Milestone::HandedToCarrier, l.shipped),
            (Milestone::Delivered, l.delivered),
        ] {
            if let (Some((_, m)), Some(t)) = (ms.iter().find(|(k, _)| *k == kind), shipment_time) {
                assert_eq!(*m, t, "{id}: {kind:?} is the order's own time");
            }
        }
    }
    // (3PL orders ship 3 to 5 days after purchase: those of the span's last days ship after it.)
    assert!(
        shipped > 2200 && cancelled > 50,
        "shipped {shipped}, cancelled {cancelled}"
    );
}

#[test]
fn shares_look_like_a_healthy_shop() {
    let cfg = SimulatorConfig::default();
    let events = generate(&cfg, start());
    let unique: HashMap<&str, &Event> = events
        .iter()
        .map(|e| (e.header.event_id.as_str(), e))
        .collect();
    let count =
        |f: &dyn Fn(&EventBody) -> bool| unique.values().filter(|e| f(&e.body)).count() as f64;
    let placed = count(&|b| matches!(b, EventBody::OrderPlaced(_)));
    let per_shop_day = placed / 4.0 / 7.0;
    assert!(
        (110.0..130.0).contains(&per_shop_day),
        "{per_shop_day} orders/shop/day"
    );
    let cancels = count(&|b| matches!(b, EventBody::OrderCancelled(_)));
    let seller = count(
        &|b| matches!(b, EventBody::OrderCancelled(c) if c.cancelled_by == CancelledBy::Seller),
    );
    assert!(
        (0.012..0.03).contains(&(cancels / placed)),
        "{cancels}/{placed}"
    );
    assert!(
        (0.45..0.75).contains(&(seller / cancels)),
        "{seller}/{cancels}"
    );
    let shipped: Vec<_> = unique
        .values()
        .filter_map(|e| match &e.body {
            EventBody::OrderShipped(b) => Some((e.header.event_time, b)),
            _ => None,
        })
        .collect();
    let late = shipped.iter().filter(|(t, b)| *t > b.ship_by).count() as f64;
    let valid = shipped.iter().filter(|(_, b)| b.tracking_valid).count() as f64;
    let n = shipped.len() as f64;
    assert!((0.01..0.03).contains(&(late / n)), "late {late}/{n}");
    assert!(
        (0.95..0.99).contains(&(valid / n)),
        "valid tracking {valid}/{n}"
    );

    // Order volume peaks in the Pacific evening and is low at night.
    let mut by_hour = [0u32; 24];
    for e in unique.values() {
        if matches!(e.body, EventBody::OrderPlaced(_)) {
            by_hour[calendar::pacific_hour(e.header.event_time) as usize] += 1;
        }
    }
    assert!(by_hour[20] > 4 * by_hour[3], "{by_hour:?}");
}

/// Late-shipment share of `shop` per Pacific ship day: (late, shipped).
fn late_share_by_ship_day(events: &[Event], shop: &str) -> BTreeMap<NaiveDate, (u32, u32)> {
    let mut seen = HashSet::new();
    let mut days: BTreeMap<NaiveDate, (u32, u32)> = BTreeMap::new();
    for e in events {
        if let EventBody::OrderShipped(b) = &e.body
            && e.header.shop == shop
            && seen.insert(e.header.event_id.clone())
        {
            let day = days
                .entry(calendar::pacific_date(e.header.event_time))
                .or_default();
            day.1 += 1;
            if e.header.event_time > b.ship_by {
                day.0 += 1;
            }
        }
    }
    days
}

#[test]
fn a_late_shipment_spike_shows_on_its_day_only() {
    for seed in [42, 7, 15, 27, 2026] {
        let cfg = SimulatorConfig {
            seed,
            ..SimulatorConfig::demo()
        };
        let span = Span::new(start(), cfg.days);
        let spike_day = span.date(2);
        let days = late_share_by_ship_day(&generate(&cfg, start()), "shop-001");
        let (late, shipped) = days[&spike_day];
        assert!(
            shipped >= 20,
            "seed {seed}: {shipped} shipments on {spike_day}"
        );
        assert!(
            f64::from(late) / f64::from(shipped) > 0.10,
            "seed {seed}: {late}/{shipped} late on {spike_day}"
        );
        // Whole business days only: a partial first or last day is a handful of shipments.
        let whole = |d: NaiveDate| {
            calendar::at_local(d, 0, 0) >= span.start
                && d.succ_opt()
                    .is_some_and(|n| calendar::at_local(n, 0, 0) <= span.end)
        };
        for (day, (late, shipped)) in &days {
            if *day != spike_day && whole(*day) {
                assert!(
                    f64::from(*late) / f64::from(*shipped) < 0.04,
                    "seed {seed}: {late}/{shipped} late on {day}"
                );
            }
        }
        // Without the anomaly the day is ordinary.
        let plain = SimulatorConfig {
            seed,
            ..SimulatorConfig::default()
        };
        let (late, shipped) =
            late_share_by_ship_day(&generate(&plain, start()), "shop-001")[&spike_day];
        assert!(
            f64::from(late) / f64::from(shipped) < 0.04,
            "seed {seed}: {late}/{shipped}"
        );
    }
}

#[test]
fn a_stockout_empties_the_sku_and_cancels_its_orders() {
    let cfg = SimulatorConfig::demo();
    let span = Span::new(start(), cfg.days);
    let (from, to) = (span.day_start(3), span.day_start(5));
    let events = generate(&cfg, start());
    let mut zero_snapshots = 0;
    let mut sellable_after = 0;
    for e in &events {
        if let EventBody::InventorySnapshot(s) = &e.body {
            let t = e.header.event_time;
            let is_target =
                e.header.shop == "shop-002" && e.header.sku.as_deref() == Some("SKU-002-001");
            if is_target && from <= t && t < to {
                assert_eq!(s.sellable, 0, "{}", e.header.event_id);
                assert!(s.inbound > 0);
                zero_snapshots += 1;
            } else {
                assert!(s.sellable > 0, "unexpected stockout: {}", e.header.event_id);
                if is_target && t >= to {
                    sellable_after += 1;
                }
            }
            assert!(s.reserved <= s.sellable + s.reserved);
        }
    }
    // Two days of 6-hourly snapshots at both locations.
    assert!(zero_snapshots >= 14, "{zero_snapshots}");
    assert!(sellable_after > 0);

    // The SKU's orders placed during the stockout are all cancelled by the seller.
    let mut placed = HashSet::new();
    let mut cancelled = HashSet::new();
    for e in &events {
        if e.header.shop != "shop-002" || e.header.sku.as_deref() != Some("SKU-002-001") {
            continue;
        }
        match &e.body {
            EventBody::OrderPlaced(b)
                if from <= e.header.event_time && e.header.event_time < to =>
            {
                placed.insert(b.order_id.clone());
            }
            EventBody::OrderCancelled(b) if from <= b.placed_at && b.placed_at < to => {
                assert_eq!(b.cancelled_by, CancelledBy::Seller);
                assert_eq!(b.reason.as_deref(), Some("out of stock"));
                cancelled.insert(b.order_id.clone());
            }
            EventBody::OrderShipped(b) => {
                assert!(!(from <= b.placed_at && b.placed_at < to), "{}", b.order_id);
            }
            _ => {}
        }
    }
    assert!(placed.len() >= 10, "{} orders of the SKU", placed.len());
    // Orders placed in the last hours of the span may be cancelled after it ends.
    assert!(
        cancelled.len() + 2 >= placed.len(),
        "{} of {}",
        cancelled.len(),
        placed.len()
    );
}

/// Final (latest `as_of`) attributed sales / spend of `shop`'s ad rows, by report date.
fn roas_by_date(events: &[Event], shop: &str) -> BTreeMap<NaiveDate, f64> {
    let mut latest: HashMap<(String, NaiveDate), (DateTime<Utc>, f64, f64)> = HashMap::new();
    for e in events {
        if let EventBody::AdPerformance(a) = &e.body
            && e.header.shop == shop
        {
            let row = (
                a.as_of,
                a.attributed_sales.amount.to_f64(),
                a.spend.amount.to_f64(),
            );
            let slot = latest.entry((a.campaign_id.clone(), a.date)).or_insert(row);
            if row.0 > slot.0 {
                *slot = row;
            }
        }
    }
    let mut by_date: BTreeMap<NaiveDate, (f64, f64)> = BTreeMap::new();
    for ((_, date), (_, sales, spend)) in latest {
        let d = by_date.entry(date).or_default();
        d.0 += sales;
        d.1 += spend;
    }
    by_date.into_iter().map(|(d, (s, p))| (d, s / p)).collect()
}

#[test]
fn a_roas_collapse_cuts_attributed_sales_from_its_day() {
    let cfg = SimulatorConfig::demo();
    let span = Span::new(start(), cfg.days);
    let events = generate(&cfg, start());
    let collapsed = roas_by_date(&events, "shop-003");
    assert!(!collapsed.is_empty());
    for (date, roas) in &collapsed {
        if *date >= span.date(4) {
            assert!(*roas < 1.8, "{date}: ROAS {roas} after the collapse");
        } else {
            assert!((2.0..6.0).contains(roas), "{date}: ROAS {roas}");
        }
    }
    for (date, roas) in roas_by_date(&events, "shop-001") {
        assert!(
            (2.0..6.0).contains(&roas),
            "{date}: ROAS {roas} of an unaffected shop"
        );
    }
}

#[test]
fn ad_rows_are_restated_with_later_as_of() {
    let cfg = SimulatorConfig::default();
    let end = start() + TimeDelta::days(7);
    type AdKey = (String, String, String, NaiveDate);
    let mut rows: BTreeMap<AdKey, Vec<(u32, DateTime<Utc>, u64)>> = BTreeMap::new();
    for e in unique(&simulate(&cfg, start())) {
        if let EventBody::AdPerformance(a) = &e.body {
            let revision: u32 = e
                .header
                .event_id
                .rsplit("-r")
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(e.header.event_time, calendar::at_local(a.date, 0, 0));
            assert!(a.as_of <= end && a.as_of > e.header.event_time + TimeDelta::days(1));
            assert_eq!(
                calendar::pacific_date(a.as_of),
                a.date + chrono::Days::new(super::ads::REVISION_DAYS[revision as usize - 1])
            );
            assert!(e.header.sku.is_none());
            rows.entry((
                a.platform.clone(),
                a.account_id.clone(),
                a.campaign_id.clone(),
                a.date,
            ))
            .or_default()
            .push((revision, a.as_of, a.clicks));
        }
    }
    let mut restated = 0;
    for (key, mut versions) in rows {
        versions.sort();
        let revisions: Vec<u32> = versions.iter().map(|v| v.0).collect();
        assert_eq!(
            revisions,
            (1..=versions.len() as u32).collect::<Vec<_>>(),
            "{key:?}"
        );
        assert!(
            versions
                .windows(2)
                .all(|w| w[0].1 < w[1].1 && w[0].2 >= w[1].2),
            "{key:?}"
        );
        if versions.len() >= 3 {
            restated += 1;
        }
    }
    assert!(restated > 20, "{restated} rows restated at least twice");
}

#[test]
fn inventory_is_snapshotted_every_six_hours_per_sku_and_location() {
    let cfg = SimulatorConfig::default();
    let mut per_key: BTreeMap<(String, String), Vec<DateTime<Utc>>> = BTreeMap::new();
    for e in unique(&simulate(&cfg, start())) {
        if let EventBody::InventorySnapshot(s) = &e.body {
            per_key
                .entry((e.header.sku.clone().unwrap(), s.location.clone()))
                .or_default()
                .push(e.header.event_time);
        }
    }
    // 4 shops x 8 SKUs x 2 locations.
    assert_eq!(per_key.len(), 64);
    for (key, mut times) in per_key {
        times.sort();
        assert!(times.len() >= 26, "{key:?}: {}", times.len());
        assert!(
            times.windows(2).all(|w| w[1] - w[0] == TimeDelta::hours(6)),
            "{key:?}"
        );
    }
}

#[test]
fn events_land_on_their_topics() {
    let mut topics = BTreeMap::new();
    for e in generate(&SimulatorConfig::default(), start()) {
        *topics.entry(e.body.topic()).or_insert(0) += 1;
    }
    assert_eq!(topics.len(), 3, "{topics:?}");
    assert!(topics[&Topic::Orders] > topics[&Topic::Logistics]);
    assert!(topics[&Topic::Ads] > 100);
}

fn small_config() -> impl Strategy<Value = SimulatorConfig> {
    (
        any::<u64>(),
        1u32..4,
        1u32..5,
        1u32..4,
        0u32..60,
        0.0f64..0.3,
        0.0f64..0.3,
        1u64..200_000,
        prop::collection::vec((0u8..3, 0u32..4, 0u32..4, 0u32..5, 0.0f64..1.0), 0..3),
    )
        .prop_map(
            |(seed, shops, skus, days, orders, dup, late, delay, anomalies)| {
                let anomalies = anomalies
                    .into_iter()
                    .map(|(kind, shop, day, n, x)| {
                        let (shop, day) = (shop % shops, day % days);
                        match kind {
                            0 => Anomaly::LateShipmentSpike {
                                shop,
                                day,
                                late_share: x.max(0.01),
                                hours: 1 + n,
                            },
                            1 => Anomaly::Stockout {
                                shop,
                                day,
                                sku: n % skus,
                                days: 1 + n % days,
                            },
                            _ => Anomaly::RoasCollapse {
                                shop,
                                day,
                                factor: x,
                            },
                        }
                    })
                    .collect();
                SimulatorConfig {
                    seed,
                    shops,
                    skus_per_shop: skus,
                    days,
                    orders_per_shop_per_day: orders,
                    duplicate_rate: dup,
                    late_rate: late,
                    max_delay: Duration::from_secs(delay),
                    anomalies,
                    ..SimulatorConfig::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the (valid) shape, generation succeeds and keeps the stream's guarantees.
    #[test]
    fn any_small_simulation_keeps_its_guarantees(cfg in small_config(), minute in 0i64..(60 * 24 * 365)) {
        prop_assert!(cfg.validate().is_ok(), "{cfg:?}");
        let start = "2025-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::minutes(minute);
        let end = start + TimeDelta::days(i64::from(cfg.days));
        let stream = simulate(&cfg, start);
        let mut last = DateTime::<Utc>::MIN_UTC;
        let mut ids = HashSet::new();
        for e in &stream {
            let h = &e.event.header;
            prop_assert!(e.event.validate().is_ok(), "{:?}", e.event.validate());
            prop_assert!(h.event_time <= h.ingest_time && h.ingest_time <= end);
            prop_assert!(ids.insert(h.event_id.clone()) != e.duplicate, "{}", h.event_id);
            if !e.late && !e.duplicate {
                let t = emit_time(&e.event);
                prop_assert!(t >= last, "{} out of order", h.event_id);
                last = t;
            }
        }
        let again: Vec<Event> = generate(&cfg, start);
        prop_assert_eq!(again.len(), stream.len());
    }
}

fn small() -> SimulatorConfig {
    SimulatorConfig {
        shops: 2,
        days: 2,
        orders_per_shop_per_day: 40,
        start: Some(start()),
        ..SimulatorConfig::default()
    }
}

#[tokio::test]
async fn run_publishes_exactly_the_generated_stream() {
    let cfg = small();
    let expected = generate(&cfg, start());
    let mut sim = Simulator::new(cfg).unwrap();
    assert_eq!(sim.start(), start());
    let publisher = MemoryPublisher::new();
    let stats = sim.run(&publisher, CancellationToken::new()).await.unwrap();
    assert_eq!(stats.stop, StopReason::Exhausted);
    assert_eq!(stats.published, expected.len() as u64);
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(publisher.events(), expected);
    assert_eq!(publisher.flush_count(), 1);
}

#[tokio::test]
async fn run_stops_at_max_events_with_a_prefix() {
    let cfg = SimulatorConfig {
        max_events: Some(25),
        ..small()
    };
    let expected = generate(&cfg, start());
    let publisher = MemoryPublisher::new();
    let stats = Simulator::new(cfg)
        .unwrap()
        .run(&publisher, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((stats.published, stats.stop), (25, StopReason::MaxEvents));
    assert_eq!(publisher.events(), expected[..25]);
}

#[tokio::test]
async fn run_keeps_to_the_rate_and_the_duration() {
    let cfg = SimulatorConfig {
        rate: Some(200.0),
        max_events: Some(40),
        ..small()
    };
    let publisher = MemoryPublisher::new();
    let stats = Simulator::new(cfg)
        .unwrap()
        .run(&publisher, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(stats.published, 40);
    // The 40th event is due 39/200 s after the first.
    assert!(
        stats.elapsed >= Duration::from_millis(190),
        "{:?}",
        stats.elapsed
    );
    assert!(
        stats.elapsed < Duration::from_secs(2),
        "{:?}",
        stats.elapsed
    );

    let cfg = SimulatorConfig {
        rate: Some(100.0),
        duration: Some(Duration::from_millis(300)),
        ..small()
    };
    let stats = Simulator::new(cfg)
        .unwrap()
        .run(&MemoryPublisher::new(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(stats.stop, StopReason::Duration);
    assert!((20..=40).contains(&stats.published), "{}", stats.published);
}

#[tokio::test]
async fn run_stops_on_shutdown_and_reports_publisher_failures() {
    let token = CancellationToken::new();
    token.cancel();
    let publisher = MemoryPublisher::new();
    let stats = Simulator::new(small())
        .unwrap()
        .run(&publisher, token)
        .await
        .unwrap();
    assert_eq!((stats.published, stats.stop), (0, StopReason::Shutdown));

    let token = CancellationToken::new();
    let cancel = token.clone();
    let cfg = SimulatorConfig {
        rate: Some(50.0),
        ..small()
    };
    let mut sim = Simulator::new(cfg).unwrap();
    let publisher = MemoryPublisher::new();
    let run = sim.run(&publisher, token);
    let stop = async {
        // Cancel once something was published: a condition, not a fixed sleep.
        while publisher.events().len() < 3 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
    };
    let (stats, ()) = tokio::join!(run, stop);
    let stats = stats.unwrap();
    assert_eq!(stats.stop, StopReason::Shutdown);
    assert!(
        stats.published >= 3 && stats.published < 50,
        "{}",
        stats.published
    );
    assert_eq!(publisher.flush_count(), 1, "a stopped run still flushes");

    let failing = MemoryPublisher::failing_after(10);
    let err = Simulator::new(small())
        .unwrap()
        .run(&failing, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(failing.events().len(), 10);
}
