//! Unit tests of the engine over the built-in catalog.

use super::*;
use chrono::NaiveDate;
use kpiflow_schemas::{
    AdPerformance, CancelledBy, Channel, EventHeader, Fulfilment, OrderCancelled, OrderPlaced,
    OrderShipped, SourceTz,
};
use std::collections::BTreeSet;

const P0: PartitionId = PartitionId {
    topic: Topic::Orders,
    partition: 0,
};
const ADS: PartitionId = PartitionId {
    topic: Topic::Ads,
    partition: 0,
};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn header(id: &str, at: &str) -> EventHeader {
    EventHeader {
        event_id: id.into(),
        source: "test".into(),
        shop: "shop-1".into(),
        channel: Channel::Amazon,
        marketplace: "ATVPDKIKX0DER".into(),
        sku: None,
        event_time: t(at),
        source_tz: SourceTz::US_PACIFIC,
        ingest_time: t(at),
    }
}

fn placed(id: &str, at: &str, amount: &str) -> Event {
    Event::new(
        header(id, at),
        OrderPlaced {
            order_id: format!("o-{id}"),
            total: Money::usd(amount),
            units: 1,
            fulfilment: Fulfilment::Fba,
            ship_by: None,
            deliver_by: None,
        },
    )
}

fn ad(id: &str, date: &str, as_of: &str, spend: &str, sales: &str) -> Event {
    let d: NaiveDate = date.parse().unwrap();
    let start = format!("{date}T08:00:00Z");
    Event::new(
        header(id, &start),
        AdPerformance {
            platform: "amazon_ads".into(),
            account_id: "a".into(),
            campaign_id: "c".into(),
            date: d,
            impressions: 100,
            clicks: 10,
            spend: Money::usd(spend),
            attributed_orders: 1,
            attributed_sales: Money::usd(sales),
            attribution_window: "7d".into(),
            as_of: t(as_of),
        },
    )
}

fn day_value(out: &Outputs, kpi: &str, day_start: &str) -> Option<(Decimal, Option<Decimal>)> {
    out.updates
        .iter()
        .rev()
        .find(|u| u.kpi == kpi && u.window.name == "business_day" && u.window.start == t(day_start))
        .map(|u| (u.numerator, u.denominator))
}

fn d(s: &str) -> Decimal {
    Decimal::parse(s).unwrap()
}

#[test]
fn duplicates_count_once_and_days_follow_pacific_time() {
    let mut e = Engine::new(&ProcessorConfig::default(), 0);
    let now = Instant::now();
    // 07:30 UTC on Nov 3 is still Nov 2 in Los Angeles (UTC-8).
    assert_eq!(
        e.apply(&placed("a", "2026-11-03T07:30:00Z", "10.00"), P0, now),
        Applied::Counted
    );
    assert_eq!(
        e.apply(&placed("a", "2026-11-03T07:30:00Z", "10.00"), P0, now),
        Applied::Duplicate
    );
    assert_eq!(
        e.apply(&placed("b", "2026-11-03T08:30:00Z", "5.50"), P0, now),
        Applied::Counted
    );
    let out = e.flush(now, Utc::now());
    assert_eq!(
        day_value(&out, "gmv", "2026-11-02T08:00:00Z"),
        Some((d("10.00"), None))
    );
    assert_eq!(
        day_value(&out, "gmv", "2026-11-03T08:00:00Z"),
        Some((d("5.50"), None))
    );
    assert_eq!(
        day_value(&out, "aov", "2026-11-02T08:00:00Z"),
        Some((d("10.00"), Some(d("1"))))
    );
}

#[test]
fn restated_ad_rows_replace_and_older_versions_are_ignored() {
    let mut e = Engine::new(&ProcessorConfig::default(), 0);
    let now = Instant::now();
    assert_eq!(
        e.apply(
            &ad("r1", "2026-11-02", "2026-11-03T14:00:00Z", "10", "30"),
            ADS,
            now
        ),
        Applied::Counted
    );
    assert_eq!(
        e.apply(
            &ad("r3", "2026-11-02", "2026-11-05T14:00:00Z", "9", "45"),
            ADS,
            now
        ),
        Applied::Counted
    );
    // The day-2 version arrives after the day-3 one: it must not count.
    assert_eq!(
        e.apply(
            &ad("r2", "2026-11-02", "2026-11-04T14:00:00Z", "10", "40"),
            ADS,
            now
        ),
        Applied::Superseded
    );
    let out = e.flush(now, Utc::now());
    assert_eq!(
        day_value(&out, "roas", "2026-11-02T08:00:00Z"),
        Some((d("45"), Some(d("9"))))
    );
}

#[test]
fn late_cancellations_correct_the_order_day_and_too_late_facts_are_refused() {
    let mut e = Engine::new(&ProcessorConfig::default(), 0);
    let now = Instant::now();
    e.apply(&placed("a", "2026-11-02T18:00:00Z", "10.00"), P0, now);
    let first = e.flush(now, Utc::now());
    assert_eq!(
        day_value(&first, "cancellation_rate", "2026-11-02T08:00:00Z"),
        Some((d("0"), Some(d("1"))))
    );
    e.apply(&placed("b", "2026-11-04T18:00:00Z", "10.00"), P0, now);
    e.flush(now, Utc::now());
    let cancel = Event::new(
        header("c", "2026-11-04T19:00:00Z"),
        OrderCancelled {
            order_id: "o-a".into(),
            placed_at: t("2026-11-02T18:00:00Z"),
            cancelled_by: CancelledBy::Seller,
            reason: None,
        },
    );
    assert_eq!(e.apply(&cancel, P0, now), Applied::Counted);
    let second = e.flush(now, Utc::now());
    assert_eq!(
        day_value(&second, "cancellation_rate", "2026-11-02T08:00:00Z"),
        Some((d("1"), Some(d("1"))))
    );
    // Orders may be 3 days late by default; one placed 5 days before the watermark is not.
    let old = placed("z", "2026-10-30T12:00:00Z", "1.00");
    assert!(matches!(e.apply(&old, P0, now), Applied::Late { .. }));
}

#[test]
fn late_shipments_and_rolling_windows() {
    let mut e = Engine::new(&ProcessorConfig::default(), 0);
    let now = Instant::now();
    let ship = |id: &str, at: &str, ship_by: &str| {
        Event::new(
            header(id, at),
            OrderShipped {
                order_id: id.into(),
                placed_at: t("2026-11-01T00:00:00Z"),
                ship_by: t(ship_by),
                deliver_by: None,
                units: 1,
                carrier: None,
                tracking_id: None,
                tracking_valid: true,
            },
        )
    };
    assert_eq!(
        e.apply(
            &ship("s1", "2026-11-02T10:30:00Z", "2026-11-02T12:00:00Z"),
            P0,
            now,
        ),
        Applied::Counted
    );
    e.apply(
        &ship("s2", "2026-11-02T11:30:00Z", "2026-11-02T11:00:00Z"),
        P0,
        now,
    );
    e.apply(
        &ship("s3", "2026-11-03T12:30:00Z", "2026-11-03T13:00:00Z"),
        P0,
        now,
    );
    let out = e.flush(now, Utc::now());
    let rolling = |end: &str| {
        out.updates
            .iter()
            .rev()
            .find(|u| {
                u.kpi == "late_shipment_rate"
                    && u.window.name == "rolling_24h"
                    && u.window.end == t(end)
            })
            .map(|u| (u.numerator, u.denominator))
    };
    // [Nov 2 10:00, Nov 3 10:00) holds s1 (on time) and s2 (late).
    assert_eq!(
        rolling("2026-11-03T10:00:00Z"),
        Some((d("1"), Some(d("2"))))
    );
    assert_eq!(
        rolling("2026-11-03T11:00:00Z"),
        Some((d("1"), Some(d("1"))))
    );
    // s2 has left and s3 is not in yet: an empty window reads 0 / 0.
    assert_eq!(
        rolling("2026-11-03T12:00:00Z"),
        Some((d("0"), Some(d("0"))))
    );
    assert_eq!(
        rolling("2026-11-03T13:00:00Z"),
        Some((d("0"), Some(d("1"))))
    );
    // The watermark is 12:25 on Nov 3, so the open window ends at 13:00 and none later.
    assert_eq!(rolling("2026-11-03T14:00:00Z"), None);
}

#[test]
fn rolling_windows_of_data_read_before_the_first_watermark_are_published() {
    let mut e = Engine::new(&ProcessorConfig::default(), 0);
    let now = Instant::now();
    let other = PartitionId {
        topic: Topic::Orders,
        partition: 1,
    };
    e.register_partition(other, now);
    e.apply(&placed("a", "2026-11-02T10:30:00Z", "1.00"), P0, now);
    // Partition 1 has not been read: no watermark, so no rolling window yet.
    let first = e.flush(now, Utc::now());
    assert!(first.updates.iter().all(|u| matches!(
        u.window.kind,
        kpiflow_schemas::WindowKind::BusinessDay
            | kpiflow_schemas::WindowKind::Week
            | kpiflow_schemas::WindowKind::Month
    )));
    e.apply(&placed("b", "2026-11-03T10:30:00Z", "1.00"), P0, now);
    e.apply(&placed("c", "2026-11-03T10:30:00Z", "1.00"), other, now);
    let second = e.flush(now, Utc::now());
    let ends: BTreeSet<DateTime<Utc>> = second
        .updates
        .iter()
        .filter(|u| u.kpi == "orders" && u.window.name == "rolling_24h")
        .map(|u| u.window.end)
        .collect();
    // Every window from order a's hour on, not only the newest.
    assert_eq!(ends.first(), Some(&t("2026-11-02T11:00:00Z")));
    assert_eq!(ends.last(), Some(&t("2026-11-03T11:00:00Z")));
    assert_eq!(ends.len(), 25);
}

#[test]
fn other_currencies_are_rejected_with_the_field() {
    let mut e = Engine::new(&ProcessorConfig::default(), 0);
    let mut ev = placed("a", "2026-11-02T18:00:00Z", "10.00");
    if let EventBody::OrderPlaced(o) = &mut ev.body {
        o.total.currency = "EUR".into();
    }
    match e.apply(&ev, P0, Instant::now()) {
        Applied::Rejected { kind, reason } => {
            assert_eq!(kind, "currency");
            assert!(reason.contains("payload.total.currency"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
