//! `shopify_returns` end to end: the connector syncs a fixture GraphQL Admin API (the two
//! order pages under `ingest/fixtures/shopify_returns/`) into a real broker, beside the
//! placements and shipments `shopify_orders` would publish for the same orders, and the
//! processor's return rate is the value worked out by hand below.
//!
//! By hand (the store's orders of 2026-11-02, all shipped in full the next day):
//! - #1042 (5501234567890) placed 17:03Z, 3 mugs; #1045 (…895) placed 20:40Z, 1 bowl; #1047
//!   (…897) placed 23:05Z, 2 mugs → units shipped, by order date: 3 + 1 + 2 = 6.
//! - Returns: #1042-R1 OPEN, lines of 1 + 1 = 2 units; #1045-R1 CLOSED, 1 unit; #1042-R2
//!   REQUESTED and #1047-R1 DECLINED bring nothing back; #1047-R2's quantity `"two"` is a dead
//!   letter; #1049 is a test order → units returned 2 + 1 = 3.
//! - Return rate = units returned / units shipped, by order date = 3 / 6, in every rolling
//!   window holding 2026-11-02.

use chrono::{DateTime, TimeDelta, Utc};
use kpiflow_ingest::Publish;
use kpiflow_ingest::connectors::shopify::{ReturnsConfig, ShopifyReturns};
use kpiflow_schemas::{
    Channel, Event, EventBody, EventHeader, Fulfilment, Money, OrderPlaced, OrderShipped, SourceTz,
};

use super::by_hand::{self, ByHand};
use super::fixture::{Reply, Server, fixture, pull_settings, secret_file};

const SHOP: &str = "shop-shopify-returns";
const C: &str = "shopify_returns";
const TOKEN: &str = "shpat_e2e_returns";

/// The orders: id, created (UTC), units, the id of the fulfilment that shipped them all.
const ORDERS: [(&str, &str, u32, &str); 3] = [
    ("5501234567890", "2026-11-02T17:03:00Z", 3, "5100000000001"),
    ("5501234567895", "2026-11-02T20:40:00Z", 1, "5100000000002"),
    ("5501234567897", "2026-11-02T23:05:00Z", 2, "5100000000003"),
];

/// What `shopify_orders` publishes for an order: its placement, or (`shipped`) its
/// fulfilment a day later.
fn order_event((oid, created, units, fid): (&str, &str, u32, &str), shipped: bool) -> Event {
    let placed: DateTime<Utc> = created.parse().unwrap();
    let at = if shipped {
        placed + TimeDelta::days(1)
    } else {
        placed
    };
    let header = EventHeader {
        event_id: if shipped {
            format!("shopify-{oid}-shipped-{fid}")
        } else {
            format!("shopify-{oid}-placed")
        },
        source: "shopify_orders".into(),
        shop: SHOP.into(),
        channel: Channel::Shopify,
        marketplace: "US".into(),
        sku: None,
        event_time: at,
        source_tz: SourceTz(chrono_tz::America::New_York),
        ingest_time: at,
    };
    let body: EventBody = if shipped {
        OrderShipped {
            order_id: oid.into(),
            placed_at: placed,
            ship_by: placed + TimeDelta::days(2),
            deliver_by: None,
            units,
            carrier: Some("UPS".into()),
            tracking_id: Some(format!("1Z{oid}")),
            tracking_valid: true,
            fulfilment: Some(Fulfilment::Merchant),
        }
        .into()
    } else {
        OrderPlaced {
            order_id: oid.into(),
            total: Money::usd("35.13"),
            units,
            fulfilment: Fulfilment::Merchant,
            ship_by: Some(placed + TimeDelta::days(2)),
            deliver_by: None,
        }
        .into()
    };
    Event::new(header, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_returns_through_the_broker_give_return_rate_by_hand() {
    let (kafka, publisher) = by_hand::broker("shopret").await;
    for shipped in [false, true] {
        for order in ORDERS {
            publisher
                .publish(&order_event(order, shipped))
                .await
                .unwrap();
        }
    }

    // The GraphQL Admin API: page 1 without a cursor, page 2 after page 1's endCursor.
    let api = Server::start(|req| {
        if req.path != "/admin/api/2025-10/graphql.json" {
            return Reply::status(404, format!("no route {}", req.path));
        }
        if req.header("x-shopify-access-token") != TOKEN {
            return Reply::status(401, fixture(C, "error-401.json"));
        }
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        match v["variables"]["after"].as_str() {
            None => Reply::json(fixture(C, "orders-page-1.json")),
            Some(_) => Reply::json(fixture(C, "orders-page-2.json")),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ReturnsConfig::from_value(&serde_json::json!({
        "shop": SHOP,
        "domain": "acme-ceramics.myshopify.com",
        "access_token": "env:KPIFLOW_TEST_UNUSED",
        "time_zone": "America/New_York",
    }))
    .unwrap();
    cfg.access_token = secret_file(dir.path(), "token", TOKEN);
    cfg.pull = pull_settings(&api, &dir.path().join("cursors"));
    // #1042-R1 and #1045-R1 published; #1047-R2 dead-lettered.
    by_hand::sync(ShopifyReturns::build(cfg).unwrap(), &publisher, (2, 1)).await;

    let covering = by_hand::holding("2026-11-02T17:03:00Z", "2026-11-02T23:05:00Z");
    let want: [ByHand; 2] = [
        ("return_rate", "rolling_30d", 3, 6),
        ("return_rate", "rolling_60d", 3, 6),
    ];
    let (stats, latest) = by_hand::process(&kafka, &["return_rate"], &covering, &want).await;
    assert_eq!(stats.dead_lettered, 0, "nothing late, nothing refused");
    by_hand::check(&latest, SHOP, &covering, &want);
}
