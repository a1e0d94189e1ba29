//! Property tests: whatever the delivery order (within the lateness bound), duplicates and
//! restatements, the last published value of every window equals a from-scratch computation
//! over the de-duplicated, latest-version facts.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use kpiflow_schemas::{
    AdPerformance, CancelledBy, Channel, Decimal, Event, EventHeader, Fulfilment, KpiUpdate, Money,
    OrderCancelled, OrderPlaced, OrderShipped, SourceTz, Topic,
};
use proptest::prelude::*;

use super::{Engine, PartitionId};
use crate::ProcessorConfig;

const BASE: i64 = 1_793_520_000; // 2026-11-01T06:40:00Z, just before the DST change day.

fn header(id: String, shop: usize, at: DateTime<Utc>) -> EventHeader {
    EventHeader {
        event_id: id,
        source: "prop".into(),
        shop: format!("shop-{shop}"),
        channel: Channel::Amazon,
        marketplace: "US".into(),
        sku: None,
        event_time: at,
        source_tz: SourceTz::US_PACIFIC,
        ingest_time: at,
    }
}

fn cents(c: u32) -> Money {
    Money {
        amount: Decimal(rust_decimal::Decimal::new(i64::from(c), 2)),
        currency: "USD".into(),
    }
}

/// One order: placed at `minute`, maybe shipped `ship` minutes later against a ship-by
/// `due` minutes after placement, maybe cancelled by the seller.
#[derive(Debug, Clone)]
struct Order {
    shop: usize,
    minute: i64,
    cents: u32,
    ship: Option<(i64, i64)>,
    cancel: bool,
}

fn order() -> impl Strategy<Value = Order> {
    (
        0usize..2,
        0i64..3 * 24 * 60,
        100u32..20_000,
        proptest::option::of((1i64..2000, 1i64..2000)),
        any::<bool>(),
    )
        .prop_map(|(shop, minute, cents, ship, cancel)| Order {
            shop,
            minute,
            cents,
            ship,
            cancel: cancel && ship.is_none(),
        })
}

/// One ad row key with its versions: (shop, campaign, day, [(as_of hours after the day,
/// spend cents, sales cents)]).
type AdRow = (usize, u8, i64, Vec<(i64, u32, u32)>);

/// The newest version of an ad row: ((as_of, event id), unix second, spend, sales), by
/// (shop, campaign, date).
type NewestAds =
    HashMap<(String, String, NaiveDate), ((DateTime<Utc>, String), i64, Decimal, Decimal)>;

fn ad_row() -> impl Strategy<Value = AdRow> {
    (
        0usize..2,
        0u8..2,
        0i64..3,
        proptest::collection::vec((24i64..96, 0u32..50_000, 0u32..200_000), 1..4),
    )
}

/// One inventory snapshot: (shop, SKU, minute, sellable units).
type Snapshot = (usize, u8, i64, u64);

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (0usize..2, 0u8..3, 0i64..3 * 24 * 60, 0u64..3)
}

fn events(orders: &[Order], ads: &[AdRow], snapshots: &[Snapshot]) -> Vec<(Event, Topic)> {
    let t = |min: i64| DateTime::from_timestamp(BASE + min * 60, 0).unwrap();
    let mut out = Vec::new();
    for (i, o) in orders.iter().enumerate() {
        let placed_at = t(o.minute);
        out.push((
            Event::new(
                header(format!("p{i}"), o.shop, placed_at),
                OrderPlaced {
                    order_id: format!("o{i}"),
                    total: cents(o.cents),
                    units: 1,
                    fulfilment: Fulfilment::Merchant,
                    ship_by: None,
                    deliver_by: None,
                },
            ),
            Topic::Orders,
        ));
        if let Some((after, due)) = o.ship {
            out.push((
                Event::new(
                    header(format!("s{i}"), o.shop, t(o.minute + after)),
                    OrderShipped {
                        order_id: format!("o{i}"),
                        placed_at,
                        ship_by: t(o.minute + due),
                        deliver_by: None,
                        units: 1,
                        carrier: None,
                        tracking_id: None,
                        tracking_valid: true,
                        fulfilment: None,
                    },
                ),
                Topic::Orders,
            ));
        }
        if o.cancel {
            out.push((
                Event::new(
                    header(format!("c{i}"), o.shop, t(o.minute + 90)),
                    OrderCancelled {
                        order_id: format!("o{i}"),
                        placed_at,
                        cancelled_by: CancelledBy::Seller,
                        reason: None,
                        fulfilment: None,
                    },
                ),
                Topic::Orders,
            ));
        }
    }
    let day0 = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    for (j, (shop, campaign, day, versions)) in ads.iter().enumerate() {
        let date = day0 + Duration::days(*day);
        let start = DateTime::parse_from_rfc3339(&format!("{date}T07:00:00Z"))
            .unwrap()
            .to_utc();
        for (v, (hours, spend, sales)) in versions.iter().enumerate() {
            out.push((
                Event::new(
                    header(format!("a{j}-{v}"), *shop, start),
                    AdPerformance {
                        platform: "amazon_ads".into(),
                        account_id: "acct".into(),
                        campaign_id: format!("c{campaign}"),
                        date,
                        impressions: 1000,
                        clicks: 10,
                        spend: cents(*spend),
                        attributed_orders: 1,
                        attributed_sales: cents(*sales),
                        attribution_window: "7d".into(),
                        // Versions of one key may share an as_of: the event id breaks the tie.
                        as_of: start + Duration::hours(*hours),
                    },
                ),
                Topic::Ads,
            ));
        }
    }
    for (k, (shop, sku, minute, sellable)) in snapshots.iter().enumerate() {
        let mut h = header(format!("inv{k}"), *shop, t(*minute));
        h.sku = Some(format!("sku-{sku}"));
        out.push((
            Event::new(
                h,
                kpiflow_schemas::InventorySnapshot {
                    location: "FBA-US".into(),
                    location_kind: kpiflow_schemas::LocationKind::Fba,
                    sellable: *sellable,
                    inbound: 0,
                    reserved: 0,
                    unfulfillable: 0,
                },
            ),
            Topic::Logistics,
        ));
    }
    out
}

/// Facts of the de-duplicated, latest-version data: (shop, measure, unix second, amount).
fn facts(events: &[(Event, Topic)]) -> Vec<(String, &'static str, i64, Decimal)> {
    let mut out = Vec::new();
    let mut ads: NewestAds = HashMap::new();
    // The last snapshot of each (shop, SKU, Pacific day): ((time, event id), sellable).
    type Day = (String, String, NaiveDate);
    let mut days: HashMap<Day, ((DateTime<Utc>, String), u64)> = HashMap::new();
    let mut seen = HashSet::new();
    let one = Decimal::from_i64(1);
    for (e, _) in events {
        if !seen.insert(e.header.event_id.clone()) {
            continue;
        }
        let shop = e.header.shop.clone();
        let at = e.header.event_time.timestamp();
        match &e.body {
            kpiflow_schemas::EventBody::OrderPlaced(o) => {
                out.push((shop.clone(), "orders", at, one));
                out.push((shop, "gmv", at, o.total.amount));
            }
            kpiflow_schemas::EventBody::OrderShipped(s) => {
                // Due on its ship_by: the shipment counts there, late or not.
                let due = s.ship_by.timestamp();
                out.push((shop.clone(), "shipments", due, one));
                if e.header.event_time > s.ship_by {
                    out.push((shop, "late", due, one));
                }
            }
            kpiflow_schemas::EventBody::OrderCancelled(c) => {
                out.push((shop, "cancels", c.placed_at.timestamp(), one))
            }
            kpiflow_schemas::EventBody::InventorySnapshot(i) => {
                let date = e
                    .header
                    .event_time
                    .with_timezone(&chrono_tz::America::Los_Angeles)
                    .date_naive();
                let key = (shop, e.header.sku.clone().unwrap_or_default(), date);
                let version = (e.header.event_time, e.header.event_id.clone());
                if days.get(&key).is_none_or(|old| version > old.0) {
                    days.insert(key, (version, i.sellable));
                }
            }
            kpiflow_schemas::EventBody::AdPerformance(a) => {
                let key = (shop, a.campaign_id.clone(), a.date);
                let version = (a.as_of, e.header.event_id.clone());
                // A report day is booked at its Pacific midnight, whatever its event time.
                let midnight = chrono::TimeZone::from_local_datetime(
                    &chrono_tz::America::Los_Angeles,
                    &a.date.and_hms_opt(0, 0, 0).unwrap(),
                )
                .unwrap()
                .timestamp();
                if ads.get(&key).is_none_or(|old| version > old.0) {
                    ads.insert(
                        key,
                        (version, midnight, a.spend.amount, a.attributed_sales.amount),
                    );
                }
            }
            _ => {}
        }
    }
    for ((shop, _, _), (_, at, spend, sales)) in ads {
        out.push((shop.clone(), "spend", at, spend));
        out.push((shop, "sales", at, sales));
    }
    // Stock carries forward: every SKU-day from the SKU's first snapshot day to its shop's
    // current day (the Pacific day of the shop's newest event) reads the last snapshot on or
    // before it, booked at that day's Pacific midnight.
    let mut newest: HashMap<String, DateTime<Utc>> = HashMap::new();
    for (e, _) in events {
        let n = newest
            .entry(e.header.shop.clone())
            .or_insert(e.header.event_time);
        *n = (*n).max(e.header.event_time);
    }
    let pacific = |t: DateTime<Utc>| {
        t.with_timezone(&chrono_tz::America::Los_Angeles)
            .date_naive()
    };
    let mut by_sku: HashMap<(String, String), Vec<(NaiveDate, u64)>> = HashMap::new();
    for ((shop, sku, date), (_, sellable)) in days {
        by_sku
            .entry((shop, sku))
            .or_default()
            .push((date, sellable));
    }
    for ((shop, _), mut levels) in by_sku {
        levels.sort();
        let current = pacific(newest[&shop]);
        let mut d = levels[0].0;
        while d <= current {
            let level = levels
                .iter()
                .rev()
                .find(|(ld, _)| *ld <= d)
                .map(|l| l.1)
                .unwrap();
            let midnight = chrono::TimeZone::from_local_datetime(
                &chrono_tz::America::Los_Angeles,
                &d.and_hms_opt(0, 0, 0).unwrap(),
            )
            .earliest()
            .unwrap()
            .timestamp();
            out.push((shop.clone(), "sku_days", midnight, one));
            if level == 0 {
                out.push((shop.clone(), "stockout_days", midnight, one));
            }
            d = d.succ_opt().unwrap();
        }
    }
    out
}

fn expected(
    facts: &[(String, &'static str, i64, Decimal)],
    u: &KpiUpdate,
) -> (Decimal, Option<Decimal>) {
    let (s, e) = (u.window.start.timestamp(), u.window.end.timestamp());
    let sum = |m: &str| -> Decimal {
        facts
            .iter()
            .filter(|f| f.0 == u.scope.shop && f.1 == m && f.2 >= s && f.2 < e)
            .map(|f| f.3)
            .sum()
    };
    let (num, den) = match u.kpi.as_str() {
        "gmv" => ("gmv", None),
        "orders" => ("orders", None),
        "aov" => ("gmv", Some("orders")),
        "late_shipment_rate" => ("late", Some("shipments")),
        "cancellation_rate" => ("cancels", Some("orders")),
        "roas" => ("sales", Some("spend")),
        "stockout_rate" => ("stockout_days", Some("sku_days")),
        other => panic!("unknown KPI {other}"),
    };
    (sum(num), den.map(sum))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn streamed_values_equal_a_from_scratch_computation(
        orders in proptest::collection::vec(order(), 1..60),
        ads in proptest::collection::vec(ad_row(), 0..6),
        snapshots in proptest::collection::vec(snapshot(), 0..30),
        dup_every in 2usize..9,
        jitter in proptest::collection::vec(0i64..7200, 200),
        flush_every in 1usize..40,
    ) {
        let all = events(&orders, &ads, &snapshots);
        // Delivery order: event time plus up to 2 h of jitter (well within the 3-day
        // lateness), with every n-th event delivered twice.
        let mut delivery: Vec<(i64, usize)> = all
            .iter()
            .enumerate()
            .map(|(i, (e, _))| (e.header.event_time.timestamp() + jitter[i % jitter.len()], i))
            .collect();
        for i in (0..all.len()).step_by(dup_every) {
            delivery.push((all[i].0.header.event_time.timestamp() + 3600, i));
        }
        delivery.sort();
        // The KPIs the reference below computes.
        let cfg = ProcessorConfig {
            kpis: [
                "gmv",
                "orders",
                "aov",
                "late_shipment_rate",
                "cancellation_rate",
                "roas",
                "stockout_rate",
            ]
            .map(String::from)
            .to_vec(),
            ..ProcessorConfig::default()
        };
        let mut engine = Engine::new(&cfg, 0);
        let now = Instant::now();
        let mut last: HashMap<String, KpiUpdate> = HashMap::new();
        let mut keep = |out: super::Outputs| {
            for u in out.updates {
                last.insert(u.key(), u);
            }
        };
        for (n, (_, i)) in delivery.iter().enumerate() {
            let (event, topic) = &all[*i];
            let verdict = engine.apply(event, PartitionId { topic: *topic, partition: 0 }, now);
            prop_assert!(!matches!(verdict, super::Applied::Late { .. } | super::Applied::Rejected { .. }), "{verdict:?}");
            if n % flush_every == 0 {
                keep(engine.flush(now, Utc::now()));
            }
        }
        keep(engine.flush(now, Utc::now()));
        let facts = facts(&all);
        for u in last.values() {
            prop_assert_eq!((u.numerator, u.denominator), expected(&facts, u), "{}", u.key());
        }
        // Snapshots are aggregated, not ignored.
        prop_assert_eq!(
            snapshots.is_empty(),
            !last.values().any(|u| u.kpi == "stockout_rate" && u.denominator.is_some_and(|d| d > Decimal::ZERO)),
        );
        // Every business day that holds an order was published.
        for (shop, _, at, _) in facts.iter().filter(|f| f.1 == "orders") {
            let found = last.values().any(|u| {
                &u.scope.shop == shop && u.kpi == "orders" && u.window.name == "business_day"
                    && u.window.start.timestamp() <= *at && *at < u.window.end.timestamp()
            });
            prop_assert!(found, "no business day for {shop} at {at}");
        }
    }
}
