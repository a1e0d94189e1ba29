//! `amazon_sp_reports` against a local Reports 2021-06-30 + getOrder + LWA server: create,
//! poll IN_QUEUE → IN_PROGRESS → DONE, gzip and plain documents, events and dead letters as
//! written by hand from the fixtures; a FATAL report, a CANCELLED one, 429 with Retry-After,
//! token expiry, 5xx, restart from the cursor, and the records on a real broker. The seller
//! performance report (Amazon's own Account Health figures) is read on its own: reference
//! values on the health topic, one dead letter for a metric without a rate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kpiflow_ingest::connectors::amazon_sp_reports::{
    AmazonReports, AmazonReportsConfig, OperationRates, ReportKind,
};
use kpiflow_ingest::pull::{PullConnector, RateLimit};
use kpiflow_schemas::{EventBody, Topic};

use super::amazon_sp_reports_api::{C, REPORTS, TOKEN, report, server};
use super::fixture::{Reply, Req, fixture, ids, lwa};
use super::rig::Rig;

/// Every event of one sync over the four fixture documents, in the order handed over (event
/// time): id, schema, event time, written from the fixtures.
const EVENTS: [(&str, &str, &str); 7] = [
    (
        "amazon:113-1000001-0000001:shipped",
        "order.shipped",
        "2026-11-03T04:10:00Z",
    ),
    (
        "amazon:113-1000002-0000002:shipped",
        "order.shipped",
        "2026-11-03T20:00:00Z",
    ),
    (
        "amazon_mfn_return:113-2000001-0000001:KF-LAMP-02:DmZ8q1RMA",
        "order.returned",
        "2026-11-18T21:05:10Z",
    ),
    (
        "amazon_fba_return:113-1000001-0000001:KF-MUG-01:2026-11-20T18:12:44+00:00:LPNRR1234567",
        "order.returned",
        "2026-11-20T18:12:44Z",
    ),
    // 11/21/2026 in US Pacific (PST) starts at 08:00 UTC.
    (
        "amazon:113-2000001-0000001:negative_feedback",
        "order.defect",
        "2026-11-21T08:00:00Z",
    ),
    (
        "amazon_fba_return:113-1000002-0000002:KF-MUG-01:2026-11-21T09:30:00+00:00:LPNRR7654321",
        "order.returned",
        "2026-11-21T09:30:00Z",
    ),
    (
        "amazon:113-2000002-0000002:negative_feedback",
        "order.defect",
        "2026-11-23T08:00:00Z",
    ),
];

fn fast() -> RateLimit {
    RateLimit {
        rate: 1000.0,
        burst: 1000,
    }
}

fn config(t: &Rig, reports: &[ReportKind]) -> AmazonReportsConfig {
    AmazonReportsConfig {
        shop: t.shop.clone(),
        marketplace: "ATVPDKIKX0DER".into(),
        reports: reports.to_vec(),
        time_zone: "America/Los_Angeles".into(),
        poll_interval: Duration::from_millis(10),
        poll_timeout: Duration::from_secs(5),
        rate_limits: OperationRates {
            create_report: fast(),
            get_report: fast(),
            get_report_document: fast(),
            get_order: fast(),
        },
        // One step for the whole first lookback: each step asks for every report again.
        pull: kpiflow_ingest::pull::PullSettings {
            max_window: Some(Duration::from_secs(31 * 24 * 3600)),
            ..t.pull()
        },
        auth: lwa(&t.server, t.dir.path()),
    }
}

fn connector(t: &Rig) -> PullConnector {
    AmazonReports::build(config(t, &ReportKind::FACTS)).expect("valid config")
}

fn performance_only(t: &Rig) -> PullConnector {
    AmazonReports::build(config(t, &[ReportKind::SellerPerformance])).expect("valid config")
}

/// The seller performance fixture's reference values, written from
/// `fixtures/amazon_sp_reports/seller-performance.json`: id and event time (the midnight
/// after the range's last day, US Pacific: PST, so 08:00 UTC), in event-time order.
const REFERENCES: [(&str, &str); 5] = [
    (
        "amazon_health:ATVPDKIKX0DER:pre_fulfilment_cancel_rate:2026-11-01:2026-11-07:0:1:0",
        "2026-11-08T08:00:00Z",
    ),
    (
        "amazon_health:ATVPDKIKX0DER:order_defect_rate_afn:2026-09-23:2026-11-21:1:3:0.3333",
        "2026-11-22T08:00:00Z",
    ),
    (
        "amazon_health:ATVPDKIKX0DER:order_defect_rate_mfn:2026-09-23:2026-11-21:0:1:0",
        "2026-11-22T08:00:00Z",
    ),
    (
        "amazon_health:ATVPDKIKX0DER:late_shipment_rate:2026-10-23:2026-11-21:0:0:0",
        "2026-11-22T08:00:00Z",
    ),
    (
        "amazon_health:ATVPDKIKX0DER:valid_tracking_rate:2026-10-23:2026-11-21:0:0:0",
        "2026-11-22T08:00:00Z",
    ),
];

fn feedback_only(t: &Rig) -> PullConnector {
    AmazonReports::build(config(t, &[ReportKind::SellerFeedback])).expect("valid config")
}

async fn rig(fault: impl Fn(&Req, usize) -> Option<Reply> + Send + Sync + 'static) -> Rig {
    Rig::new(server(fault).await)
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn creates(t: &Rig) -> Vec<serde_json::Value> {
    t.server
        .requests_to(REPORTS)
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn a_sync_reads_every_report_into_events_and_dead_letters() {
    let t = rig(|_, _| None).await;
    let began = Utc::now();
    let report = t.sync(connector).await;
    let events: Vec<_> =
        t.p.events()
            .into_iter()
            .filter(|e| e.schema() != "source.heartbeat")
            .collect();
    let got: Vec<(String, &str, DateTime<Utc>)> = events
        .iter()
        .map(|e| (e.header.event_id.clone(), e.schema(), e.header.event_time))
        .collect();
    let want: Vec<(String, &str, DateTime<Utc>)> = EVENTS
        .iter()
        .map(|(id, s, t)| (id.to_string(), *s, at(t)))
        .collect();
    assert_eq!(got, want);
    for e in &events {
        assert_eq!(e.header.source, C);
        assert_eq!(e.header.shop, t.shop);
        assert_eq!(e.header.marketplace, "ATVPDKIKX0DER");
        assert_eq!(e.header.source_tz.0.name(), "America/Los_Angeles");
    }
    // Bodies, from the fixtures and getOrder's purchase dates.
    let EventBody::OrderShipped(s) = &events[0].body else {
        panic!("{:?}", events[0])
    };
    assert_eq!(s.units, 3, "two item rows: 1 + 2");
    assert_eq!(s.placed_at, at("2026-11-02T17:03:00Z"));
    assert_eq!(s.deliver_by, Some(at("2026-11-06T03:00:00Z")));
    assert_eq!(s.carrier.as_deref(), Some("AMZN_US"));
    assert_eq!(s.tracking_id.as_deref(), Some("TBA123456789000"));
    assert!(s.tracking_valid);
    assert_eq!(s.fulfilment, Some(kpiflow_schemas::Fulfilment::Fba));
    let EventBody::OrderShipped(s) = &events[1].body else {
        panic!()
    };
    assert_eq!(
        (s.units, s.tracking_valid, s.carrier.as_deref()),
        (2, false, None)
    );
    let EventBody::OrderReturned(r) = &events[2].body else {
        panic!()
    };
    assert_eq!(
        r.placed_at,
        at("2026-11-04T16:00:00Z"),
        "the report's Order date"
    );
    assert_eq!(r.units, 1);
    let EventBody::OrderReturned(r) = &events[5].body else {
        panic!()
    };
    assert_eq!(
        r.placed_at,
        at("2026-11-03T01:30:00Z"),
        "getOrder's PurchaseDate"
    );
    assert_eq!((r.units, r.reason.as_deref()), (2, Some("NOT_COMPATIBLE")));
    let EventBody::OrderDefect(d) = &events[6].body else {
        panic!()
    };
    assert_eq!(d.placed_at, at("2026-11-05T06:45:00Z"));
    assert_eq!(d.rating, Some(2));
    assert_eq!(
        d.fulfilment,
        Some(kpiflow_schemas::Fulfilment::Fba),
        "getOrder's AFN"
    );

    // Three rows could not be used; each reason names the field or line and the value.
    let mut dead: Vec<String> = t.p.dead_letters().into_iter().map(|d| d.reason).collect();
    dead.sort();
    assert_eq!(
        dead,
        [
            "GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE rep-3: row 2: 4 tab-separated fields where the header has 27 (Order ID, Order date, Return request date, Return request status, Amazon RMA ID, Seller RMA ID, Label type, Label cost, Currency code, Return carrier, Tracking ID, Label to be paid by, A-to-z claim, Is prime, ASIN, Merchant SKU, Item Name, Return quantity, Return reason, In policy, Return type, Resolution, Invoice number, Return delivery date, Order Amount, Order quantity, Refunded Amount)",
            "order 113-1000002-0000002: field `Rating`: expected an integer, got \"five\"",
            "order 113-9999999-9999999: getOrder knows no such order, so its purchase date is unknown",
        ]
    );
    assert_eq!(
        (report.counts.published, report.counts.dead_lettered),
        (7, 3)
    );

    // Four reports over the sync window (the first: 30 days back), in the configured order.
    let c = creates(&t);
    let types: Vec<&str> = c
        .iter()
        .map(|b| b["reportType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "GET_AMAZON_FULFILLED_SHIPMENTS_DATA_GENERAL",
            "GET_FBA_FULFILLMENT_CUSTOMER_RETURNS_DATA",
            "GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE",
            "GET_SELLER_FEEDBACK_DATA",
        ]
    );
    for b in &c {
        assert_eq!(b["marketplaceIds"], serde_json::json!(["ATVPDKIKX0DER"]));
        assert_eq!(b.as_object().unwrap().len(), 4, "{b}");
    }
    let start: DateTime<Utc> = c[0]["dataStartTime"].as_str().unwrap().parse().unwrap();
    let end: DateTime<Utc> = c[0]["dataEndTime"].as_str().unwrap().parse().unwrap();
    assert!(c[0]["dataEndTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        end - start,
        TimeDelta::days(30),
        "initial_lookback, one step"
    );
    assert!((began - end).num_seconds().abs() <= 2, "up to now");
    assert!(
        c.iter()
            .all(|b| b["dataStartTime"] == c[0]["dataStartTime"])
    );
    for n in 1..=4 {
        let polls = t.server.requests_to(&format!("{REPORTS}/rep-{n}")).len();
        assert_eq!(polls, 3, "IN_QUEUE, IN_PROGRESS, DONE");
    }
    // getOrder: once per order of the FBA returns (one unknown) and of the negative feedback
    // only (the 5-star and the malformed rating are not asked).
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
            "113-1000001-0000001",
            "113-1000002-0000002",
            "113-9999999-9999999",
            "113-2000001-0000001",
            "113-2000002-0000002",
        ]
    );
}

#[tokio::test]
async fn a_restart_reads_from_the_cursor_minus_the_overlap_and_repeats_the_same_ids() {
    let t = rig(|_, _| None).await;
    t.sync(connector).await;
    let first = ids(&t.p.events());
    let saved = t.restart(connector, C).await;
    let c = creates(&t);
    assert_eq!(c.len(), 8);
    // The default overlap: 2 days before the high-water mark.
    assert_eq!(
        c[4]["dataStartTime"].as_str().unwrap(),
        (saved.high_water - TimeDelta::days(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let all = ids(&t.p.events());
    assert_eq!(all.len(), 14);
    assert_eq!(
        all[7..],
        first[..],
        "a re-read row is a duplicate: the same id"
    );
    // A new process starts with an empty purchase-date cache.
    assert_eq!(
        t.server
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/orders/v0/orders/"))
            .count(),
        10
    );
}

#[tokio::test]
async fn a_fatal_report_fails_the_sync_and_keeps_the_cursor() {
    let t = rig(|req, _| {
        (req.path == format!("{REPORTS}/rep-1")).then(|| {
            let body = serde_json::json!({"reportType": "GET_SELLER_FEEDBACK_DATA",
                "dataStartTime": "2026-11-01T00:00:00Z", "dataEndTime": "2026-11-25T00:00:00Z"});
            report("report-fatal.json", "rep-1", &body)
        })
    })
    .await;
    let mut c = feedback_only(&t);
    let err = c.sync_once(&t.p).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "amazon_sp_reports: report rep-1 GET_SELLER_FEEDBACK_DATA FATAL"
    );
    assert!(err.is_retryable());
    assert!(t.cursor(&c, C).await.is_none());
    assert_eq!(c.health().consecutive_failures, 1);
    assert!(ids(&t.p.events()).is_empty());
    assert!(
        t.server
            .requests()
            .iter()
            .all(|r| !r.path.starts_with("/reports/2021-06-30/documents/")),
        "a FATAL report's document is not read"
    );
}

#[tokio::test]
async fn a_cancelled_report_is_an_empty_one() {
    let t = rig(|req, _| {
        (req.path == format!("{REPORTS}/rep-1")).then(|| {
            let body = serde_json::json!({"reportType": "GET_SELLER_FEEDBACK_DATA",
                "dataStartTime": "2026-11-01T00:00:00Z", "dataEndTime": "2026-11-25T00:00:00Z"});
            report("report-cancelled.json", "rep-1", &body)
        })
    })
    .await;
    let mut c = feedback_only(&t);
    let r = c.sync_once(&t.p).await.expect("no data is not an error");
    assert_eq!((r.counts.published, r.counts.dead_lettered), (0, 0));
    assert!(t.cursor(&c, C).await.is_some(), "the window is done");
}

#[tokio::test]
async fn a_429_waits_out_its_retry_after_and_a_5xx_is_retried() {
    let limited = AtomicUsize::new(0);
    let broken = AtomicUsize::new(0);
    let t = rig(move |req, _| {
        if req.path == REPORTS && limited.fetch_add(1, Ordering::SeqCst) == 0 {
            return Some(Reply::status(429, fixture(C, "error-429.json")).with("retry-after", "1"));
        }
        if req.path.starts_with("/reports/2021-06-30/documents/")
            && broken.fetch_add(1, Ordering::SeqCst) == 0
        {
            return Some(Reply::status(503, fixture(C, "error-503.json")));
        }
        None
    })
    .await;
    t.sync_waiting(feedback_only, 1).await;
    assert_eq!(
        ids(&t.p.events()),
        [
            "amazon:113-2000001-0000001:negative_feedback",
            "amazon:113-2000002-0000002:negative_feedback"
        ]
    );
    assert_eq!(
        t.server.requests_to(REPORTS).len(),
        2,
        "created again after the 429"
    );
    assert_eq!(t.waits_and_retries(C), (1, 2));
}

#[tokio::test]
async fn an_expired_token_is_refreshed_while_polling() {
    let t = rig(|req, _| {
        (req.path.starts_with(&format!("{REPORTS}/"))
            && req.header("x-amz-access-token") == "Atza|token-1")
            .then(|| Reply::status(403, fixture(C, "error-401-expired.json")))
    })
    .await;
    t.sync(feedback_only).await;
    assert_eq!(ids(&t.p.events()).len(), 2);
    assert_eq!(t.server.requests_to(TOKEN).len(), 2);
    let polls = t.server.requests_to(&format!("{REPORTS}/rep-1"));
    assert_eq!(polls[0].header("x-amz-access-token"), "Atza|token-1");
    assert!(
        polls[1..]
            .iter()
            .all(|r| r.header("x-amz-access-token") == "Atza|token-2")
    );
}

#[tokio::test]
async fn a_sync_lands_on_the_broker() {
    let t = rig(|_, _| None).await;
    let want: Vec<&str> = EVENTS.iter().map(|(id, _, _)| *id).collect();
    let dead = super::pull_through_kafka(&mut connector(&t), Topic::Orders, &t.shop, &want).await;
    assert_eq!(dead.len(), 3);
    assert!(dead.iter().all(|d| d.stage == "ingest.amazon_sp_reports"));
    assert!(dead.iter().any(|d| d.payload.contains("\"five\"")));
}

#[tokio::test]
async fn the_seller_performance_report_is_one_reference_value_per_metric() {
    let t = rig(|_, _| None).await;
    let report = t.sync(performance_only).await;
    let events: Vec<_> =
        t.p.events()
            .into_iter()
            .filter(|e| e.schema() != "source.heartbeat")
            .collect();
    let got: Vec<(String, DateTime<Utc>)> = events
        .iter()
        .map(|e| (e.header.event_id.clone(), e.header.event_time))
        .collect();
    let want: Vec<(String, DateTime<Utc>)> = REFERENCES
        .iter()
        .map(|(id, t)| (id.to_string(), at(t)))
        .collect();
    assert_eq!(got, want);
    for e in &events {
        assert_eq!(e.schema(), "account.health_metric");
        assert_eq!(e.body.topic(), Topic::Health, "reference values, not facts");
        assert_eq!(
            (e.header.source.as_str(), e.header.shop.as_str()),
            (C, t.shop.as_str())
        );
    }
    // The AFN ODR: 1 of 3 orders, Amazon's rate 0.3333 against a target below 0.01.
    let EventBody::AccountHealthMetric(m) = &events[1].body else {
        panic!("{:?}", events[1])
    };
    assert_eq!(m.metric, kpiflow_schemas::HealthMetric::OrderDefectRateAfn);
    assert_eq!(
        (m.window_from.to_string(), m.window_to.to_string()),
        ("2026-09-23".to_string(), "2026-11-21".to_string())
    );
    assert_eq!((m.numerator, m.denominator), (Some(1), Some(3)));
    assert_eq!(m.rate.to_string(), "0.3333");
    assert_eq!(m.target_value.to_string(), "0.01");
    assert_eq!(
        m.target_condition,
        kpiflow_schemas::TargetCondition::LessThan
    );
    assert_eq!(m.status, kpiflow_schemas::HealthStatus::Bad);
    // onTimeDeliveryRate's rate is null: one dead letter naming the metric and the field.
    let dead: Vec<String> = t.p.dead_letters().into_iter().map(|d| d.reason).collect();
    assert_eq!(
        dead,
        ["GET_V2_SELLER_PERFORMANCE_REPORT rep-1: onTimeDeliveryRate: field `rate` is missing"]
    );
    assert_eq!(
        (report.counts.published, report.counts.dead_lettered),
        (5, 1)
    );
    let c = creates(&t);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["reportType"], "GET_V2_SELLER_PERFORMANCE_REPORT");
    assert_eq!(c[0]["marketplaceIds"], serde_json::json!(["ATVPDKIKX0DER"]));
}

#[tokio::test]
async fn the_seller_performance_report_read_again_repeats_the_same_ids() {
    let t = rig(|_, _| None).await;
    t.sync(performance_only).await;
    let first = ids(&t.p.events());
    t.restart(performance_only, C).await;
    let all = ids(&t.p.events());
    assert_eq!(all.len(), 2 * first.len());
    assert_eq!(
        all[first.len()..],
        first[..],
        "the same figures are duplicates"
    );
}

#[tokio::test]
async fn a_429_on_the_performance_report_waits_and_the_values_land_on_the_health_topic() {
    let limited = AtomicUsize::new(0);
    let t = rig(move |req, _| {
        (req.path == REPORTS && limited.fetch_add(1, Ordering::SeqCst) == 0)
            .then(|| Reply::status(429, fixture(C, "error-429.json")).with("retry-after", "1"))
    })
    .await;
    let want: Vec<&str> = REFERENCES.iter().map(|(id, _)| *id).collect();
    let dead =
        super::pull_through_kafka(&mut performance_only(&t), Topic::Health, &t.shop, &want).await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .reason
            .contains("onTimeDeliveryRate: field `rate` is missing")
    );
    assert!(dead[0].payload.contains("shipmentCountWithValidTracking"));
    assert_eq!(
        t.server.requests_to(REPORTS).len(),
        2,
        "created again after the 429"
    );
}
