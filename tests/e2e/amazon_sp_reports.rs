//! `amazon_sp_reports` end to end: the connector syncs the fixture SP-API (the four report
//! documents under `ingest/fixtures/amazon_sp_reports/`) into a real broker, beside the
//! placements `amazon_sp_orders` would publish for the same orders, and the processor's
//! return rate, ODR and negative feedback rate are the values worked out by hand below.
//!
//! By hand, from the fixtures (orders placed 2026-11-02 … 2026-11-05):
//! - units shipped by order date (FBA shipments report): 113-1000001 3 (1 + 2), 113-1000002 2
//!   → 5; units returned: FBA returns 1 (113-1000001) + 2 (113-1000002), the third row's order
//!   unknown (dead-lettered), merchant returns 1 (113-2000001) → 4. Return rate 4 / 5.
//! - negative feedback (1-2 stars): 113-2000001 (1 star), 113-2000002 (2 stars); 5 stars and
//!   the malformed rating count nothing → 2 defective orders of 4 placed: ODR 2 / 4, negative
//!   feedback rate 2 / 4.
//! - valid tracking rate: both shipments are FBA, outside its seller-fulfilled scope → no
//!   value for the shop.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kpiflow_ingest::Publish;
use kpiflow_ingest::connectors::amazon_sp_reports::{
    AmazonReports, AmazonReportsConfig, OperationRates, ReportKind,
};
use kpiflow_ingest::pull::{PullSettings, RateLimit};
use kpiflow_schemas::{Channel, Event, EventHeader, Fulfilment, Money, OrderPlaced, SourceTz};

use super::amazon_sp_reports_api::{ORDERS, server};
use super::by_hand::{self, ByHand};
use super::fixture::{lwa, pull_settings};

const SHOP: &str = "shop-amz-reports";

/// The `order.placed` `amazon_sp_orders` publishes for a fixture order (units as the FBA
/// shipments report ships them; the merchant orders' 1).
fn placed(id: &str, at: &str, channel: &str) -> Event {
    let units = match id {
        "113-1000001-0000001" => 3,
        "113-1000002-0000002" => 2,
        _ => 1,
    };
    let at: DateTime<Utc> = at.parse().unwrap();
    let header = EventHeader {
        event_id: format!("amazon:{id}:placed"),
        source: "amazon_sp_orders".into(),
        shop: SHOP.into(),
        channel: Channel::Amazon,
        marketplace: "ATVPDKIKX0DER".into(),
        sku: None,
        event_time: at,
        source_tz: SourceTz::US_PACIFIC,
        ingest_time: at,
    };
    let fulfilment = if channel == "AFN" {
        Fulfilment::Fba
    } else {
        Fulfilment::Merchant
    };
    Event::new(
        header,
        OrderPlaced {
            order_id: id.into(),
            total: Money {
                amount: kpiflow_schemas::Decimal::parse("29.98").unwrap(),
                currency: "USD".into(),
            },
            units,
            fulfilment,
            ship_by: None,
            deliver_by: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amazon_reports_through_the_broker_give_return_rate_odr_and_negative_feedback_by_hand() {
    let (kafka, publisher) = by_hand::broker("amzrep").await;
    for (id, at, channel) in ORDERS {
        publisher.publish(&placed(id, at, channel)).await.unwrap();
    }

    let api = server(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let fast = RateLimit {
        rate: 1000.0,
        burst: 1000,
    };
    let cfg = AmazonReportsConfig {
        shop: SHOP.into(),
        marketplace: "ATVPDKIKX0DER".into(),
        reports: ReportKind::ALL.to_vec(),
        time_zone: "America/Los_Angeles".into(),
        poll_interval: Duration::from_millis(10),
        poll_timeout: Duration::from_secs(5),
        rate_limits: OperationRates {
            create_report: fast,
            get_report: fast,
            get_report_document: fast,
            get_order: fast,
        },
        pull: PullSettings {
            max_window: Some(Duration::from_secs(31 * 24 * 3600)),
            ..pull_settings(&api, &dir.path().join("cursors"))
        },
        auth: lwa(&api, dir.path()),
    };
    by_hand::sync(AmazonReports::build(cfg).unwrap(), &publisher, (7, 3)).await;

    // Orders placed 2026-11-02T17:03Z … 2026-11-05T06:45Z: windows holding every order.
    let covering = by_hand::holding("2026-11-02T17:03:00Z", "2026-11-05T06:45:00Z");
    let want: [ByHand; 6] = [
        ("return_rate", "rolling_30d", 4, 5),
        ("return_rate", "rolling_60d", 4, 5),
        ("order_defect_rate", "rolling_30d", 2, 4),
        ("order_defect_rate", "rolling_60d", 2, 4),
        ("negative_feedback_rate", "rolling_30d", 2, 4),
        ("negative_feedback_rate", "rolling_60d", 2, 4),
    ];
    let kpis = [
        "return_rate",
        "order_defect_rate",
        "negative_feedback_rate",
        "valid_tracking_rate",
    ];
    let (stats, latest) = by_hand::process(&kafka, &kpis, &covering, &want).await;
    assert_eq!(
        stats.received,
        4 + 7 + 4,
        "placements, the connector's facts, heartbeats"
    );
    assert_eq!(stats.dead_lettered, 0, "nothing late, nothing refused");

    by_hand::check(&latest, SHOP, &covering, &want);
    assert!(
        latest.values().all(|u| u.kpi != "valid_tracking_rate"),
        "FBA shipments are outside valid tracking's seller-fulfilled scope"
    );
}
