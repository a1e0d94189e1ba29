//! `amazon_sp_finances` against a local Finances v0 + getOrder + LWA server: two pages joined
//! by NextToken, events and dead letters as written by hand from the fixtures, 429 with
//! Retry-After, 5xx, token expiry, restart from the cursor with the same ids, and the records
//! on a real broker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kpiflow_ingest::connectors::amazon_sp_finances::{AmazonFinances, AmazonFinancesConfig};
use kpiflow_ingest::pull::{PullConnector, RateLimit};
use kpiflow_schemas::{DefectKind, EventBody, FeeApplies, FeeKind, Fulfilment, Topic};

use super::amazon_sp_finances_api::{C, EVENTS, NEXT, TOKEN, server};
use super::fixture::{Reply, Req, fixture, ids, lwa};
use super::rig::Rig;

const SALE_1: &str = "amazon:113-3000001-0000001:fee:sale:2026-11-04T10:15:31Z:51234567890123";
const SALE_2: &str = "amazon:113-3000002-0000002:fee:sale:2026-11-05T09:00:00Z:52234567890123";
const REFUND_1: &str = "amazon:113-3000001-0000001:fee:refund:2026-11-20T18:12:44Z:61234567890123";
const REFUND_3: &str = "amazon:113-3000003-0000003:fee:refund:2026-11-22T10:00:00Z:64234567890123";

/// Every event of one read of both pages after the service fee (whose id hashes its content),
/// in the order handed over (posted time): id, schema, event time, written from the fixtures.
/// A refund and a defect are timed at their PostedDate (all after their orders).
fn events() -> Vec<(String, &'static str, &'static str)> {
    let fee = |p: &str, t: &str| format!("{p}:{t}");
    vec![
        (
            fee(SALE_1, "Commission"),
            "order.fee",
            "2026-11-04T10:15:31Z",
        ),
        (
            fee(SALE_1, "FBAPerUnitFulfillmentFee"),
            "order.fee",
            "2026-11-04T10:15:31Z",
        ),
        (
            fee(SALE_2, "Commission"),
            "order.fee",
            "2026-11-05T09:00:00Z",
        ),
        (
            fee(SALE_2, "VariableClosingFee"),
            "order.fee",
            "2026-11-05T09:00:00Z",
        ),
        (
            "amazon:113-3000001-0000001:refund:2026-11-20T18:12:44Z".into(),
            "order.refunded",
            "2026-11-20T18:12:44Z",
        ),
        (
            fee(REFUND_1, "Commission"),
            "order.fee",
            "2026-11-20T18:12:44Z",
        ),
        (
            fee(REFUND_1, "RefundCommission"),
            "order.fee",
            "2026-11-20T18:12:44Z",
        ),
        (
            "amazon:113-3000003-0000003:refund:2026-11-22T10:00:00Z".into(),
            "order.refunded",
            "2026-11-22T10:00:00Z",
        ),
        (
            fee(REFUND_3, "Commission"),
            "order.fee",
            "2026-11-22T10:00:00Z",
        ),
        (
            fee(REFUND_3, "RefundCommission"),
            "order.fee",
            "2026-11-22T10:00:00Z",
        ),
        (
            "amazon:113-3000002-0000002:a_to_z_claim".into(),
            "order.defect",
            "2026-11-25T08:00:00Z",
        ),
        // Posted twice (pages 1 and 2): one id, so the processor counts it once.
        (
            "amazon:113-3000001-0000001:chargeback".into(),
            "order.defect",
            "2026-11-26T12:00:00Z",
        ),
        (
            "amazon:113-3000001-0000001:chargeback".into(),
            "order.defect",
            "2026-11-27T12:00:00Z",
        ),
    ]
}

fn config(t: &Rig) -> AmazonFinancesConfig {
    AmazonFinancesConfig {
        shop: t.shop.clone(),
        marketplace: "ATVPDKIKX0DER".into(),
        max_results_per_page: 100,
        get_order_rate_limit: RateLimit {
            rate: 1000.0,
            burst: 1000,
        },
        // One request range for the whole first lookback.
        pull: kpiflow_ingest::pull::PullSettings {
            max_window: Some(Duration::from_secs(31 * 24 * 3600)),
            ..t.pull()
        },
        auth: lwa(&t.server, t.dir.path()),
    }
}

fn connector(t: &Rig) -> PullConnector {
    AmazonFinances::build(config(t)).expect("valid config")
}

async fn rig(fault: impl Fn(&Req, usize) -> Option<Reply> + Send + Sync + 'static) -> Rig {
    Rig::new(server(fault).await)
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn business(t: &Rig) -> Vec<kpiflow_schemas::Event> {
    t.p.events()
        .into_iter()
        .filter(|e| e.schema() != "source.heartbeat")
        .collect()
}

/// The service fee's id: a content hash (16 hex digits), rank 0, its one line.
fn is_service_fee_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("amazon:fee:account:") else {
        return false;
    };
    let Some(hash) = rest.strip_suffix(":0:account:FBAStorageFee") else {
        return false;
    };
    hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn both_pages_become_refunds_defects_and_fees_and_dead_letters_name_field_and_value() {
    let t = rig(|_, _| None).await;
    let (from, to) = (at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z"));
    let stats = connector(&t)
        .backfill(from, to, &t.p, |_| {})
        .await
        .expect("backfill");
    assert_eq!((stats.published, stats.dead_lettered), (14, 2));
    let events = business(&t);
    // The service fee has no PostedDate: timed at the range's start, so it comes first.
    assert!(
        is_service_fee_id(&events[0].header.event_id),
        "{:?}",
        events[0]
    );
    assert_eq!(events[0].header.event_time, from);
    let EventBody::OrderFee(f) = &events[0].body else {
        panic!("{:?}", events[0])
    };
    assert_eq!(
        (
            f.order_id.as_deref(),
            events[0].header.sku.as_deref(),
            f.kind,
            f.amount.amount.to_string(),
            f.applies_to
        ),
        (
            None,
            Some("KF-MUG-01"),
            FeeKind::Storage,
            "12.48".to_string(),
            FeeApplies::Account
        ),
        "FBAStorageFee -12.48 costs 12.48"
    );
    let got: Vec<(String, &str, DateTime<Utc>)> = events[1..]
        .iter()
        .map(|e| (e.header.event_id.clone(), e.schema(), e.header.event_time))
        .collect();
    let want: Vec<(String, &str, DateTime<Utc>)> = events_want();
    assert_eq!(got, want);
    for e in &events {
        assert_eq!(e.header.source, C);
        assert_eq!(e.header.shop, t.shop);
        assert_eq!(e.header.marketplace, "ATVPDKIKX0DER");
        assert_eq!(e.header.source_tz.0.name(), "America/Los_Angeles");
    }
    // Amounts exactly as written, signs turned to what the fee costs the seller.
    let amount = |i: usize| match &events[i].body {
        EventBody::OrderFee(f) => (f.kind, f.applies_to, f.amount.amount.to_string()),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        amount(1),
        (FeeKind::Referral, FeeApplies::Sale, "3.00".into())
    );
    assert_eq!(
        amount(2),
        (FeeKind::FbaFulfilment, FeeApplies::Sale, "3.22".into())
    );
    assert_eq!(
        amount(3),
        (FeeKind::Referral, FeeApplies::Sale, "5.18".into())
    );
    assert_eq!(
        amount(4),
        (FeeKind::Closing, FeeApplies::Sale, "1.80".into())
    );
    assert_eq!(
        amount(6),
        (FeeKind::Referral, FeeApplies::Refund, "-3.00".into())
    );
    assert_eq!(
        amount(7),
        (
            FeeKind::RefundAdministration,
            FeeApplies::Refund,
            "0.60".into()
        )
    );
    assert_eq!(
        amount(9),
        (FeeKind::Referral, FeeApplies::Refund, "-3.75".into())
    );
    assert_eq!(events[1].header.sku.as_deref(), Some("KF-MUG-01"));
    // Refunds: the charges given back, on their order's purchase date from getOrder.
    let EventBody::OrderRefunded(r) = &events[5].body else {
        panic!("{:?}", events[5])
    };
    assert_eq!(r.amount.amount.to_string(), "21.59", "19.99 + 1.60");
    assert_eq!(r.placed_at, at("2026-11-02T17:03:00Z"));
    assert_eq!(r.fulfilment, Some(Fulfilment::Fba));
    let EventBody::OrderRefunded(r) = &events[8].body else {
        panic!()
    };
    assert_eq!(r.amount.amount.to_string(), "24.99");
    assert_eq!(r.placed_at, at("2026-11-04T16:00:00Z"));
    let EventBody::OrderDefect(d) = &events[11].body else {
        panic!()
    };
    assert_eq!(
        (d.kind, d.placed_at, d.fulfilment),
        (
            DefectKind::AToZClaim,
            at("2026-11-03T01:30:00Z"),
            Some(Fulfilment::Merchant)
        )
    );
    let EventBody::OrderDefect(d) = &events[12].body else {
        panic!()
    };
    assert_eq!(
        (d.kind, d.placed_at),
        (DefectKind::Chargeback, at("2026-11-02T17:03:00Z"))
    );

    let mut dead: Vec<String> = t.p.dead_letters().into_iter().map(|d| d.reason).collect();
    dead.sort();
    assert_eq!(
        dead,
        [
            "RefundEventList: order 113-9999999-9999999: getOrder knows no such order, so its purchase date is unknown",
            "ShipmentEventList: order 113-3000003-0000003: field `PostedDate`: expected an ISO 8601 time with offset such as \"2026-11-02T17:03:00Z\", got \"2026-11-06\"",
        ]
    );
    // The dead letter carries the event as Amazon sent it (the number as written).
    assert!(
        t.p.dead_letters()
            .iter()
            .any(|d| d.payload.contains("\"CurrencyAmount\": -3.75")),
        "{:?}",
        t.p.dead_letters()
    );

    // Two pages: the range first, then the NextToken alone (the server checks both).
    let pages = t.server.requests_to(EVENTS);
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0].q("PostedAfter"), "2026-11-01T00:00:00Z");
    assert_eq!(pages[0].q("PostedBefore"), "2026-12-01T00:00:00Z");
    assert_eq!(pages[0].q("MaxResultsPerPage"), "100");
    assert_eq!(pages[1].q("NextToken"), NEXT);
    // getOrder once per order of a refund, claim or chargeback (shipments need no date).
    let looked_up: Vec<String> = t
        .server
        .requests()
        .into_iter()
        .filter_map(|r| {
            r.path
                .strip_prefix("/orders/v0/orders/")
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        looked_up,
        [
            "113-3000001-0000001",
            "113-3000002-0000002",
            "113-3000003-0000003",
            "113-9999999-9999999"
        ]
    );
}

fn events_want() -> Vec<(String, &'static str, DateTime<Utc>)> {
    events()
        .into_iter()
        .map(|(id, s, t)| (id, s, at(t)))
        .collect()
}

#[tokio::test]
async fn a_restart_reads_from_the_cursor_minus_the_overlap_and_repeats_the_same_ids() {
    let t = rig(|_, _| None).await;
    t.sync(connector).await;
    let first = ids(&t.p.events());
    assert_eq!(first.len(), 14);
    let saved = t.restart(connector, C).await;
    let pages = t.server.requests_to(EVENTS);
    assert_eq!(pages.len(), 4);
    // The default overlap: 2 days before the high-water mark; Amazon's 2 minutes at the end.
    assert_eq!(
        pages[2].q("PostedAfter"),
        (saved.high_water - TimeDelta::days(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let end: DateTime<Utc> = pages[2].q("PostedBefore").parse().unwrap();
    assert!(
        (Utc::now() - TimeDelta::minutes(2) - end)
            .num_seconds()
            .abs()
            <= 5
    );
    let all = ids(&t.p.events());
    assert_eq!(all.len(), 28);
    // Sorted: the undated service fee is timed at each read's start, so its place moves.
    let (mut again, mut first) = (all[14..].to_vec(), first);
    again.sort();
    first.sort();
    assert_eq!(again, first, "a re-read event is a duplicate: the same id");
}

#[tokio::test]
async fn a_429_waits_out_its_retry_after_and_a_5xx_is_retried() {
    let limited = AtomicUsize::new(0);
    let broken = AtomicUsize::new(0);
    let t = rig(move |req, _| {
        if req.path == EVENTS
            && req.q("NextToken").is_empty()
            && limited.fetch_add(1, Ordering::SeqCst) == 0
        {
            return Some(Reply::status(429, fixture(C, "error-429.json")).with("retry-after", "1"));
        }
        if req.q("NextToken") == NEXT && broken.fetch_add(1, Ordering::SeqCst) == 0 {
            return Some(Reply::status(503, fixture(C, "error-503.json")));
        }
        None
    })
    .await;
    t.sync_waiting(connector, 1).await;
    assert_eq!(ids(&t.p.events()).len(), 14);
    assert_eq!(
        t.server.requests_to(EVENTS).len(),
        4,
        "each asked again once"
    );
    assert_eq!(t.waits_and_retries(C), (1, 2));
}

#[tokio::test]
async fn an_expired_token_is_refreshed_between_pages() {
    let t = rig(|req, _| {
        (req.q("NextToken") == NEXT && req.header("x-amz-access-token") == "Atza|token-1")
            .then(|| Reply::status(403, fixture(C, "error-401-expired.json")))
    })
    .await;
    t.sync(connector).await;
    assert_eq!(ids(&t.p.events()).len(), 14);
    assert_eq!(t.server.requests_to(TOKEN).len(), 2);
    let pages = t.server.requests_to(EVENTS);
    assert_eq!(pages[0].header("x-amz-access-token"), "Atza|token-1");
    assert_eq!(pages[1].header("x-amz-access-token"), "Atza|token-1");
    assert_eq!(pages[2].header("x-amz-access-token"), "Atza|token-2");
}

#[tokio::test]
async fn a_failed_page_fails_the_sync_and_keeps_the_cursor() {
    // Page 2 never answers well: nothing of the window is checkpointed.
    let t = rig(|req, _| {
        (req.q("NextToken") == NEXT).then(|| Reply::status(503, fixture(C, "error-503.json")))
    })
    .await;
    let mut c = connector(&t);
    let err = c.sync_once(&t.p).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(t.cursor(&c, C).await.is_none());
    assert!(
        ids(&t.p.events()).is_empty(),
        "page 1 is not handed over alone"
    );
}

#[tokio::test]
async fn a_sync_lands_on_the_broker() {
    let t = rig(|_, _| None).await;
    let dead =
        super::pull_through_kafka_prefix(&mut connector(&t), Topic::Orders, &t.shop, &[], 14).await;
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| d.stage == "ingest.amazon_sp_finances"));
    assert!(dead.iter().any(|d| d.payload.contains("\"2026-11-06\"")));
}
