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
            fulfilment: Fulfilment::Merchant,
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
    let verdict = e.apply(
        &ad("r2", "2026-11-02", "2026-11-04T14:00:00Z", "10", "40"),
        ADS,
        now,
    );
    let Applied::Superseded { reason } = verdict else {
        panic!("expected superseded, got {verdict:?}")
    };
    assert!(
        reason.contains("r3") && reason.contains("2026-11-05T14:00:00+00:00"),
        "the reason names the version that stays: {reason}"
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
            fulfilment: None,
        },
    );
    assert_eq!(e.apply(&cancel, P0, now), Applied::Counted);
    let second = e.flush(now, Utc::now());
    assert_eq!(
        day_value(&second, "cancellation_rate", "2026-11-02T08:00:00Z"),
        Some((d("1"), Some(d("1"))))
    );
    // Orders may be 3 days late by default; one placed 5 days before the newest order of its
    // stream is not.
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
                fulfilment: None,
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
    // Shipments are booked at their ship_by (the orders due in a window): s1 at Nov 2 12:00
    // (on time), s2 at Nov 2 11:00 (late), s3 at Nov 3 13:00 (on time).
    // [Nov 2 10:00, Nov 3 10:00) and [Nov 2 11:00, Nov 3 11:00) hold s1 and s2.
    assert_eq!(
        rolling("2026-11-03T10:00:00Z"),
        Some((d("1"), Some(d("2"))))
    );
    assert_eq!(
        rolling("2026-11-03T11:00:00Z"),
        Some((d("1"), Some(d("2"))))
    );
    assert_eq!(
        rolling("2026-11-03T12:00:00Z"),
        Some((d("0"), Some(d("1"))))
    );
    // s1 has left and s3 is due in the hour after: an empty window reads 0 / 0.
    assert_eq!(
        rolling("2026-11-03T13:00:00Z"),
        Some((d("0"), Some(d("0"))))
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

fn only(kpis: &[&str]) -> ProcessorConfig {
    ProcessorConfig {
        kpis: kpis.iter().map(|k| k.to_string()).collect(),
        ..ProcessorConfig::default()
    }
}

fn defect(id: &str, at: &str, placed_at: &str, order: &str) -> Event {
    Event::new(
        header(id, at),
        kpiflow_schemas::OrderDefect {
            order_id: order.into(),
            placed_at: t(placed_at),
            kind: kpiflow_schemas::DefectKind::AToZClaim,
            rating: None,
            fulfilment: None,
        },
    )
}

#[test]
fn a_defect_weeks_later_opens_an_odr_breach_and_counts_once_per_order() {
    let mut cfg = only(&["order_defect_rate"]);
    cfg.rules = vec![crate::rule::threshold::ThresholdRuleConfig {
        id: "odr".into(),
        kpi: "order_defect_rate".into(),
        window: "rolling_60d".into(),
        op: kpiflow_schemas::RuleOp::Above,
        threshold: 0.01,
        resolve_at: None,
        min_denominator: 50,
        severity: kpiflow_schemas::Severity::Critical,
        for_: None,
        channels: vec![],
        runbook_url: None,
        on_settling: Default::default(),
    }];
    let mut e = Engine::new(&cfg, 0);
    let now = Instant::now();
    for i in 0..100 {
        e.apply(
            &placed(&format!("o{i}"), "2026-10-01T18:00:00Z", "10.00"),
            P0,
            now,
        );
    }
    let first = e.flush(now, Utc::now());
    assert!(first.breaches.is_empty());
    // Three weeks later two defects arrive for one order: it counts once.
    let later = "2026-10-22T18:00:00Z";
    assert_eq!(
        e.apply(
            &defect("d1", later, "2026-10-01T18:00:00Z", "o-o7"),
            P0,
            now
        ),
        Applied::Counted
    );
    e.apply(
        &defect("d2", later, "2026-10-01T18:00:00Z", "o-o7"),
        P0,
        now,
    );
    e.apply(
        &defect("d3", later, "2026-10-01T18:00:00Z", "o-o9"),
        P0,
        now,
    );
    let out = e.flush(now, Utc::now());
    let newest = out
        .updates
        .iter()
        .filter(|u| u.window.name == "rolling_60d")
        .max_by_key(|u| u.window.end)
        .unwrap();
    assert_eq!(
        (newest.numerator, newest.denominator),
        (d("2"), Some(d("100")))
    );
    assert_eq!(out.breaches.len(), 1, "{:#?}", out.breaches);
    assert_eq!(out.breaches[0].state, kpiflow_schemas::BreachState::Firing);
    assert_eq!(out.breaches[0].kpi, "order_defect_rate");
}

#[test]
fn a_week_over_week_fall_opens_a_trend_breach() {
    let mut cfg = only(&["orders"]);
    cfg.trend_rules = vec![crate::rule::trend::TrendRuleConfig {
        id: "orders_wow".into(),
        kpi: "orders".into(),
        window: "business_day".into(),
        compare: crate::rule::trend::Compare::WeekAgo,
        baseline: None,
        movement: crate::rule::trend::Movement::Fall,
        change: 0.5,
        in_progress: Default::default(),
        resolve_change: None,
        min_denominator: 0,
        min_reference: 0.0,
        severity: kpiflow_schemas::Severity::Warning,
        for_: None,
        channels: vec![],
        runbook_url: None,
        on_settling: Default::default(),
    }];
    let mut e = Engine::new(&cfg, 0);
    let now = Instant::now();
    for i in 0..10 {
        e.apply(
            &placed(&format!("a{i}"), "2026-11-02T18:00:00Z", "1.00"),
            P0,
            now,
        );
    }
    assert!(e.flush(now, Utc::now()).breaches.is_empty());
    for i in 0..4 {
        e.apply(
            &placed(&format!("b{i}"), "2026-11-09T18:00:00Z", "1.00"),
            P0,
            now,
        );
    }
    // Nov 9 is in progress (watermark 17:55): its complete hours so far hold nothing, and
    // neither do those of Nov 2; the whole day is judged once the watermark has passed it.
    assert!(e.flush(now, Utc::now()).breaches.is_empty());
    e.apply(&placed("c", "2026-11-10T09:00:00Z", "1.00"), P0, now);
    let out = e.flush(now, Utc::now());
    assert_eq!(out.breaches.len(), 1, "{:#?}", out.breaches);
    let b = &out.breaches[0];
    assert_eq!(b.rule_kind, kpiflow_schemas::RuleKind::Trend);
    assert_eq!(b.baseline, Some(10.0));
    assert!((b.value.unwrap() + 0.6).abs() < 1e-9, "{b:?}");
    assert_eq!(b.window.start, t("2026-11-09T08:00:00Z"));
}

fn snapshot(id: &str, at: &str, sku: &str, sellable: u64) -> Event {
    let mut h = header(id, at);
    h.sku = Some(sku.into());
    Event::new(
        h,
        kpiflow_schemas::InventorySnapshot {
            location: "FBA-US".into(),
            location_kind: kpiflow_schemas::LocationKind::Fba,
            sellable,
            inbound: 0,
            reserved: 0,
            unfulfillable: 0,
        },
    )
}

#[test]
fn stockout_days_take_each_days_last_snapshot_and_cover_reads_the_newest_stock() {
    let mut e = Engine::new(
        &only(&["stockout_rate", "stockout_rate_by_sku", "days_of_cover"]),
        0,
    );
    let now = Instant::now();
    let logistics = PartitionId {
        topic: Topic::Logistics,
        partition: 0,
    };
    // Nov 2 (Pacific): A is out in the morning but restocked by evening; B has stock.
    e.apply(
        &snapshot("s1", "2026-11-02T17:00:00Z", "A", 0),
        logistics,
        now,
    );
    e.apply(
        &snapshot("s2", "2026-11-03T03:00:00Z", "A", 5),
        logistics,
        now,
    );
    e.apply(
        &snapshot("s3", "2026-11-02T17:00:00Z", "B", 3),
        logistics,
        now,
    );
    // Nov 3: A is out at its last snapshot.
    e.apply(
        &snapshot("s4", "2026-11-03T17:00:00Z", "A", 7),
        logistics,
        now,
    );
    e.apply(
        &snapshot("s5", "2026-11-04T02:00:00Z", "A", 0),
        logistics,
        now,
    );
    e.apply(
        &snapshot("s6", "2026-11-03T17:00:00Z", "B", 3),
        logistics,
        now,
    );
    for i in 0..7 {
        e.apply(
            &placed(&format!("o{i}"), "2026-11-03T10:00:00Z", "1.00"),
            P0,
            now,
        );
    }
    e.apply(&placed("late", "2026-11-03T18:30:00Z", "1.00"), P0, now);
    let out = e.flush(now, Utc::now());
    assert_eq!(
        day_value(&out, "stockout_rate", "2026-11-02T08:00:00Z"),
        Some((d("0"), Some(d("2"))))
    );
    assert_eq!(
        day_value(&out, "stockout_rate", "2026-11-03T08:00:00Z"),
        Some((d("1"), Some(d("2"))))
    );
    let sku_a = out
        .updates
        .iter()
        .rev()
        .find(|u| {
            u.kpi == "stockout_rate_by_sku"
                && u.scope.sku.as_deref() == Some("A")
                && u.window.name == "week"
        })
        .unwrap();
    assert_eq!((sku_a.numerator, sku_a.denominator), (d("1"), Some(d("2"))));
    // The watermark (orders at 18:30, less 5 minutes) makes the open window end at 19:00: the
    // newest snapshots before it are A = 7 and B = 3 (A's 02:00 stockout is later), and
    // 8 units sold in 7 days.
    let cover = out
        .updates
        .iter()
        .filter(|u| u.kpi == "days_of_cover" && u.window.name == "rolling_7d")
        .max_by_key(|u| u.window.end)
        .unwrap();
    assert_eq!(cover.window.end, t("2026-11-03T19:00:00Z"));
    assert_eq!(cover.denominator, Some(d("8")));
    assert_eq!(cover.numerator, d("70"));
    assert_eq!(cover.value, Some(8.75));
}

#[test]
fn a_silent_source_opens_a_staleness_breach_and_data_resolves_it() {
    let mut cfg = only(&["orders"]);
    cfg.staleness_rules = vec![crate::rule::staleness::StalenessRuleConfig {
        id: "silent".into(),
        source: "test".into(),
        max_silence: Duration::from_secs(3600),
        severity: kpiflow_schemas::Severity::Warning,
        owner: "operations".into(),
        channels: vec![],
        runbook_url: None,
    }];
    let mut e = Engine::new(&cfg, 0);
    let now = Instant::now();
    e.apply(&placed("a", "2026-11-02T18:00:00Z", "1.00"), P0, now);
    // Within the processor's own first hour, nothing is judged.
    assert!(e.flush(now, t("2026-11-02T21:00:00Z")).breaches.is_empty());
    let later = now + Duration::from_secs(2 * 3600);
    let fired = e.flush(later, t("2026-11-02T21:00:00Z")).breaches;
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].rule_kind, kpiflow_schemas::RuleKind::Staleness);
    e.apply(&placed("b", "2026-11-02T21:05:00Z", "1.00"), P0, later);
    let resolved = e.flush(later, t("2026-11-02T21:06:00Z")).breaches;
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].state, kpiflow_schemas::BreachState::Resolved);
}

#[test]
fn a_simulated_month_of_many_shops_dead_letters_nothing_as_late() {
    // The simulator delivers 2% of its facts up to 6 hours late and books returns, refunds
    // and defects days to weeks after their orders: none of that is later than an allowance
    // when lateness is judged per fact by its own time. (Before, every return or refund more
    // than 3 days after its order was dead-lettered.)
    use kpiflow_ingest::connectors::simulator::{SimulatorConfig, generate};
    let sim = SimulatorConfig {
        shops: 12,
        days: 30,
        orders_per_shop_per_day: 12,
        ..SimulatorConfig::default()
    };
    let events = generate(&sim, t("2026-10-01T07:00:00Z"));
    let mut e = Engine::new(&ProcessorConfig::default(), 0);
    let now = Instant::now();
    let (mut late, mut returns_and_refunds) = (Vec::new(), 0);
    for chunk in events.chunks(2_000) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|ev| (ev, PartitionId::zero_of(ev)))
            .collect();
        for (ev, v) in chunk.iter().zip(e.apply_batch(&batch, now)) {
            match v {
                Applied::Late { reason } => late.push(reason),
                Applied::Counted
                    if matches!(
                        ev.body,
                        EventBody::OrderReturned(_) | EventBody::OrderRefunded(_)
                    ) =>
                {
                    returns_and_refunds += 1
                }
                _ => {}
            }
        }
        e.flush(now, Utc::now());
    }
    assert!(
        late.is_empty(),
        "{} late, e.g. {:?}",
        late.len(),
        late.first()
    );
    assert!(
        returns_and_refunds > 50,
        "returns and refunds counted: {returns_and_refunds}"
    );
}

#[test]
fn a_far_future_fact_is_refused_and_the_shop_keeps_its_clock_and_state() {
    let mut e = Engine::new(&ProcessorConfig::default(), 0);
    let now = Instant::now();
    assert_eq!(
        e.apply(&placed("a", "2026-11-03T07:30:00Z", "10.00"), P0, now),
        Applied::Counted
    );
    // A year typed wrong: dated 2099, ingested in 2026.
    let mut typo = placed("typo", "2099-11-03T07:30:00Z", "99.00");
    typo.header.ingest_time = t("2026-11-03T07:31:00Z");
    match e.apply(&typo, P0, now) {
        Applied::Rejected { kind, reason } => {
            assert_eq!(kind, "implausible");
            assert!(
                reason.starts_with(
                    "order.placed typo: field `event_time` 2099-11-03T07:30:00+00:00 is "
                ),
                "{reason}"
            );
            assert!(reason.contains("processor.max_event_ahead"), "{reason}");
        }
        other => panic!("counted a fact from 2099: {other:?}"),
    }
    // A Unix epoch for a date: refused too.
    let mut epoch = placed("epoch", "1970-01-01T00:00:00Z", "7.00");
    epoch.header.ingest_time = t("2026-11-03T07:31:00Z");
    match e.apply(&epoch, P0, now) {
        Applied::Rejected { kind, reason } => {
            assert_eq!(kind, "implausible");
            assert!(reason.contains("before its ingest_time"), "{reason}");
            assert!(reason.contains("processor.max_event_age"), "{reason}");
        }
        other => panic!("counted a fact from 1970: {other:?}"),
    }
    // 23 hours ahead is within the default day: counted.
    let mut skewed = placed("skewed", "2026-11-04T06:30:00Z", "1.00");
    skewed.header.ingest_time = t("2026-11-03T07:30:00Z");
    assert_eq!(e.apply(&skewed, P0, now), Applied::Counted);
    // The shop's clock did not jump to 2099: a fact of the same day is neither late nor lost.
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
        Some((d("6.50"), None)),
        "5.50 + the skewed 1.00, not the 99.00 of 2099"
    );
}

#[test]
fn max_event_ahead_below_a_minute_is_refused_naming_the_key() {
    let cfg = ProcessorConfig {
        max_event_ahead: Duration::from_secs(5),
        ..ProcessorConfig::default()
    };
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.contains("max_event_ahead") && err.contains("5s"),
        "{err}"
    );
}

#[test]
fn values_beyond_the_bounds_are_refused_naming_field_value_and_bound() {
    let mut e = Engine::new(&ProcessorConfig::default(), 0);
    let now = Instant::now();
    let refused = |e: &mut Engine, ev: &Event| match e.apply(ev, P0, now) {
        Applied::Rejected { kind, reason } => {
            assert_eq!(kind, "implausible", "{reason}");
            reason
        }
        other => panic!("counted {}: {other:?}", ev.header.event_id),
    };
    // 10^23 does not fit rust_decimal's 96 bits at scale 9; it used to be rescaled to
    // 10^19 silently. Now it is read exactly and refused: beyond the default 1000000.
    let huge = placed("huge", "2026-11-03T07:30:00Z", "100000000000000000000000");
    let reason = refused(&mut e, &huge);
    assert_eq!(
        reason,
        "order.placed huge: field `payload.total.amount`: 100000000000000000000000 is beyond ±1000000, the most one fact may carry (processor.bounds.max_amount)"
    );
    // The largest rust_decimal, and its negative.
    let max = placed(
        "max",
        "2026-11-03T07:30:00Z",
        "79228162514264337593543950335",
    );
    assert!(refused(&mut e, &max).contains("79228162514264337593543950335 is beyond"));
    let mut units = placed("units", "2026-11-03T07:30:00Z", "10.00");
    if let EventBody::OrderPlaced(b) = &mut units.body {
        b.units = 100_001;
    }
    assert_eq!(
        refused(&mut e, &units),
        "order.placed units: field `payload.units`: 100001 is more than 100000, the most one fact may carry (processor.bounds.max_units)"
    );
    let mut long_shop = placed("long", "2026-11-03T07:30:00Z", "10.00");
    long_shop.header.shop = "x".repeat(10 * 1024);
    let reason = refused(&mut e, &long_shop);
    assert!(
        reason.starts_with("order.placed long: field `shop`: 10240 bytes long (\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"…); at most 1024 are accepted (processor.bounds.max_text_bytes)"),
        "{reason}"
    );
    // Exactly at the bounds: counted; the refused facts moved nothing.
    assert_eq!(
        e.apply(&placed("edge", "2026-11-03T07:30:00Z", "1000000"), P0, now),
        Applied::Counted
    );
    let out = e.flush(now, Utc::now());
    assert_eq!(
        day_value(&out, "gmv", "2026-11-02T08:00:00Z"),
        Some((d("1000000"), None))
    );
}

#[test]
fn bounds_are_configurable_and_validated() {
    let cfg: ProcessorConfig =
        toml::from_str("[bounds]\nmax_amount = \"50000000\"\nmax_units = 5\nmax_text_bytes = 64\n")
            .unwrap();
    cfg.validate().unwrap();
    let mut e = Engine::new(&cfg, 0);
    let now = Instant::now();
    // 20,000,000 is beyond the default, within this config's 50,000,000.
    assert_eq!(
        e.apply(&placed("big", "2026-11-03T07:30:00Z", "20000000"), P0, now),
        Applied::Counted
    );
    for (toml, key) in [
        ("[bounds]\nmax_amount = \"0\"", "bounds.max_amount"),
        (
            "[bounds]\nmax_amount = \"2000000000000000\"",
            "bounds.max_amount",
        ),
        ("[bounds]\nmax_units = 0", "bounds.max_units"),
        ("[bounds]\nmax_text_bytes = 10", "bounds.max_text_bytes"),
    ] {
        let cfg: ProcessorConfig = toml::from_str(toml).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(key), "{toml}: {err}");
    }
}

/// A custom measure that divides by `units - 1`: it type-checks, and fails on an order of one
/// unit (division by zero). That order alone is rejected; the batch's others count.
#[test]
fn a_record_the_catalog_cannot_evaluate_is_rejected_alone() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        r#"[windows]
business_day = { kind = "business_day" }

[measures.orders]
events = ["order.placed"]
basis = "placed"
unit = "count"

[measures.per_extra_unit]
events = ["order.placed"]
value = "amount / (units - 1)"
basis = "placed"
unit = "money"

[kpis.per_extra_unit]
description = "Amount per unit beyond the first, per order."
unit = "money"
direction = "higher_is_better"
owner = "finance"
priority = "core"
numerator = "per_extra_unit"
denominator = "orders"
windows = ["business_day"]
"#,
    )
    .unwrap();
    let cfg = ProcessorConfig {
        catalog: Some(catalog),
        ..Default::default()
    };
    let mut e = Engine::new(&cfg, 1);
    let with_units = |id: &str, at: &str, amount: &str, units: u32| {
        let mut ev = placed(id, at, amount);
        if let EventBody::OrderPlaced(o) = &mut ev.body {
            o.units = units;
        }
        ev
    };
    // 30.00 over 3 units: 15.00 per extra unit; 1 unit: 10.00 / 0; 20.00 over 2 units: 20.00.
    let a = with_units("a", "2026-11-02T18:00:00Z", "30.00", 3);
    let b = with_units("b", "2026-11-02T18:05:00Z", "10.00", 1);
    let c = with_units("c", "2026-11-02T18:10:00Z", "20.00", 2);
    let now = Instant::now();
    let verdicts = e.apply_batch(&[(&a, P0), (&b, P0), (&c, P0)], now);
    assert_eq!(verdicts[0], Applied::Counted);
    assert_eq!(verdicts[2], Applied::Counted);
    match &verdicts[1] {
        Applied::Rejected { kind, reason } => {
            assert_eq!(*kind, "unprocessable");
            assert!(reason.starts_with("order.placed b: "), "{reason}");
            assert!(reason.to_lowercase().contains("divide by zero"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The day's value: (15.00 + 20.00) / 2 orders = 17.50.
    let out = e.flush(now, Utc::now());
    let day = out
        .updates
        .iter()
        .find(|u| u.kpi == "per_extra_unit" && u.window.name == "business_day")
        .expect("a business-day value");
    assert_eq!(day.numerator, Decimal::parse("35").unwrap());
    assert_eq!(day.denominator, Some(Decimal::parse("2").unwrap()));
}

fn cost(id: &str, at: &str, sku: &str, from: &str, purchase: &str) -> Event {
    let mut h = header(id, at);
    h.sku = Some(sku.into());
    Event::new(
        h,
        kpiflow_schemas::CostChanged {
            effective_from: from.parse().unwrap(),
            purchase: Money::usd(purchase),
            freight: None,
            duties: None,
        },
    )
}

#[test]
fn skus_sold_before_their_first_cost_are_counted_until_it_covers_them_and_costs_move_no_clock() {
    let mut e = Engine::new(&only(&["net_profit"]), 0);
    let now = Instant::now();
    let mut a = placed("a", "2026-11-02T17:00:00Z", "30.00");
    a.header.sku = Some("SKU-A".into());
    let mut b = placed("b", "2026-11-02T18:00:00Z", "20.00");
    b.header.sku = Some("SKU-B".into());
    // SKU-A's cost starts on Nov 3 (Pacific): its Nov 2 unit has none; SKU-B has no cost.
    let costs = [
        cost("c-a", "2030-01-01T00:00:00Z", "SKU-A", "2026-11-03", "8.00"),
        a,
        b,
    ];
    let batch: Vec<_> = costs.iter().map(|ev| (ev, P0)).collect();
    assert!(
        e.apply_batch(&batch, now)
            .iter()
            .all(|v| *v == Applied::Counted)
    );
    assert_eq!(e.skus_without_cost(), 2);
    // A cost recorded in 2030 is reference data: the watermark follows the orders only.
    e.flush(now, Utc::now());
    assert!(e.watermark().unwrap() < t("2026-11-03T00:00:00Z"));
    // From Nov 2 (its Pacific midnight, 08:00Z) SKU-A's Nov 2 unit is covered.
    let fix = cost(
        "c-a2",
        "2030-01-02T00:00:00Z",
        "SKU-A",
        "2026-11-02",
        "7.00",
    );
    assert_eq!(e.apply(&fix, P0, now), Applied::Counted);
    assert_eq!(e.skus_without_cost(), 1);
}
