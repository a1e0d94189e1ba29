//! `fulfillments/create` and `fulfillments/update` through the real Shopify receiver: shipments
//! with carrier and tracking number, deliveries by the store's promised date under the parcel's
//! id, the order's date from an earlier order delivery, signatures, retries by
//! `X-Shopify-Webhook-Id`, and dead letters naming the field.

use kpiflow_ingest::MemoryPublisher;
use kpiflow_ingest::connectors::shopify::WebhookConfig;
use kpiflow_ingest::pull::secret::Secret;
use kpiflow_ingest::push::signature::sign;
use kpiflow_schemas::EventBody;

use super::push_http::post;
use super::shopify::{deliver, fixture, signed, start};

/// The test store (America/New_York) promising delivery within 5 days of the order
/// (`delivery_time`), shipping within the default 2.
fn config() -> WebhookConfig {
    let v = serde_json::json!({
        "listen": "127.0.0.1:0",
        "client_secret": "env:KPIFLOW_TEST_UNUSED",
        "shops": { "acme-ceramics.myshopify.com": {
            "shop": "shop-003", "time_zone": "America/New_York", "delivery_time": "5days" } },
    });
    WebhookConfig::from_value(&v).expect("valid test config")
}

#[tokio::test]
async fn fulfilments_publish_the_shipment_then_its_delivery() {
    let publisher = std::sync::Arc::new(MemoryPublisher::new());
    let r = start(config(), publisher.clone()).await;
    for (topic, file, id) in [
        ("orders/create", "orders_create.json", "e-o1042"),
        ("orders/create", "orders_create_1045.json", "e-o1045"),
        ("fulfillments/create", "fulfillments_create.json", "e-f1"),
        (
            "fulfillments/update",
            "fulfillments_update_in_transit.json",
            "e-f2",
        ),
        (
            "fulfillments/update",
            "fulfillments_update_delivered.json",
            "e-f3",
        ),
        (
            "fulfillments/update",
            "fulfillments_update_delivered_late.json",
            "e-f4",
        ),
    ] {
        let body = fixture(file);
        let resp = deliver(r.addr, topic, id, &body, signed(&body)).await;
        assert_eq!(resp.status, 200, "{topic} {file}: {resp:?}");
    }
    let events = publisher.events();
    let got: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.header.event_id.as_str(), e.schema()))
        .collect();
    let shipped_1042 = "shopify-5501234567890-shipped-5100000000001";
    assert_eq!(
        got,
        [
            ("shopify-5501234567890-placed", "order.placed"),
            ("shopify-5501234567895-placed", "order.placed"),
            (shipped_1042, "order.shipped"),
            // in transit: the shipment again, under its id (the processor counts it once).
            (shipped_1042, "order.shipped"),
            (shipped_1042, "order.shipped"),
            ("delivered-shop-003-1Z999AA10123456784", "order.delivered"),
            (
                "shopify-5501234567895-shipped-5100000000045",
                "order.shipped"
            ),
            // "9400 1118 9922 3817 5765 93" without its spaces: the id AfterShip's push of
            // the same USPS parcel gets (tracking::map), so the delivery counts once.
            (
                "delivered-shop-003-9400111899223817576593",
                "order.delivered"
            ),
        ]
    );
    assert!(publisher.dead_letters().is_empty());

    // #1042 placed 2026-11-02T12:03:00-05:00 = 17:03Z; ship by +2 days, deliver by +5 days.
    let EventBody::OrderShipped(s) = &events[2].body else {
        panic!("{:?}", events[2])
    };
    assert_eq!(
        events[2].header.event_time.to_rfc3339(),
        "2026-11-03T21:20:00+00:00"
    );
    assert_eq!(s.placed_at.to_rfc3339(), "2026-11-02T17:03:00+00:00");
    assert_eq!(s.ship_by.to_rfc3339(), "2026-11-04T17:03:00+00:00");
    assert_eq!(
        s.deliver_by.map(|t| t.to_rfc3339()).as_deref(),
        Some("2026-11-07T17:03:00+00:00")
    );
    assert_eq!(
        (s.units, s.carrier.as_deref(), s.tracking_id.as_deref()),
        (3, Some("UPS"), Some("1Z999AA10123456784"))
    );
    assert!(s.tracking_valid);
    assert_eq!(events[2].body, events[3].body, "the same fact each time");
    let d = &events[5];
    // updated_at 2026-11-05T14:12:30-05:00: delivered two days before the promise.
    assert_eq!(
        d.header.event_time.to_rfc3339(),
        "2026-11-05T19:12:30+00:00"
    );
    let EventBody::OrderDelivered(b) = &d.body else {
        panic!("{d:?}")
    };
    assert_eq!(b.deliver_by.to_rfc3339(), "2026-11-07T17:03:00+00:00");
    assert_eq!(b.placed_at.to_rfc3339(), "2026-11-02T17:03:00+00:00");
    assert_eq!(b.units, 3);
    // #1045 placed 15:40 -05:00 = 20:40Z, promised 2026-11-07T20:40Z, delivered
    // 2026-11-09T10:00 -05:00 = 15:00Z: late.
    let late = &events[7];
    assert_eq!(
        late.header.event_time.to_rfc3339(),
        "2026-11-09T15:00:00+00:00"
    );
    let EventBody::OrderDelivered(b) = &late.body else {
        panic!("{late:?}")
    };
    assert_eq!(b.deliver_by.to_rfc3339(), "2026-11-07T20:40:00+00:00");
    assert_eq!(b.units, 1);
    r.stop().await;
}

#[tokio::test]
async fn fulfilment_signatures_retries_and_dead_letters() {
    let publisher = std::sync::Arc::new(MemoryPublisher::new());
    let r = start(config(), publisher.clone()).await;
    let body = fixture("fulfillments_create.json");

    // Before the order: its date (the shipment's bucket) is unknown.
    let resp = deliver(r.addr, "fulfillments/create", "e-0", &body, signed(&body)).await;
    assert_eq!(resp.status, 200, "{resp:?}");

    // Unsigned or signed with another secret: refused before parsing.
    let wrong = sign(&Secret::new("someone-elses-secret"), &body);
    let resp = deliver(r.addr, "fulfillments/create", "e-1", &body, Some(wrong)).await;
    assert_eq!(resp.status, 401, "{resp:?}");
    let resp = deliver(r.addr, "fulfillments/create", "e-1", &body, None).await;
    assert_eq!(resp.status, 401, "{resp:?}");

    let order = fixture("orders_create.json");
    let resp = deliver(r.addr, "orders/create", "e-o", &order, signed(&order)).await;
    assert_eq!(resp.status, 200);

    // Shopify's retry of one delivery without an event id: the same X-Shopify-Webhook-Id.
    let sig = signed(&body).unwrap();
    for _ in 0..2 {
        let resp = post(
            r.addr,
            "/webhooks/shopify",
            &[
                ("X-Shopify-Topic", "fulfillments/create"),
                ("X-Shopify-Shop-Domain", "acme-ceramics.myshopify.com"),
                (
                    "X-Shopify-Webhook-Id",
                    "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
                ),
                ("X-Shopify-Hmac-Sha256", &sig),
            ],
            &body,
        )
        .await;
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    assert_eq!(r.hook.stats().duplicates, 1);

    let bad = fixture("fulfillments_create_bad_time.json");
    let resp = deliver(r.addr, "fulfillments/create", "e-bad", &bad, signed(&bad)).await;
    assert_eq!(
        resp.status, 200,
        "retrying the same bytes cannot help: {resp:?}"
    );
    let no_order = String::from_utf8(body.clone())
        .unwrap()
        .replace("\"order_id\": 5501234567890,", "");
    let no_order = no_order.as_bytes();
    let resp = deliver(
        r.addr,
        "fulfillments/create",
        "e-no",
        no_order,
        signed(no_order),
    )
    .await;
    assert_eq!(resp.status, 200);

    let ids: Vec<String> = publisher
        .events()
        .iter()
        .map(|e| e.header.event_id.clone())
        .collect();
    assert_eq!(
        ids,
        [
            "shopify-5501234567890-placed",
            "shopify-5501234567890-shipped-5100000000001"
        ]
    );
    let dls = publisher.dead_letters();
    let reasons: Vec<(&str, &str)> = dls
        .iter()
        .map(|d| (d.reason_kind.as_str(), d.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[0].0, "order_unknown");
    assert!(
        reasons[0]
            .1
            .starts_with("shopify fulfillments/create: fulfillment 5100000000001 of order 5501234567890: the order's created_at is unknown"),
        "{}",
        reasons[0].1
    );
    assert_eq!(
        reasons[1],
        (
            "invalid",
            "shopify fulfillments/create: field `created_at`: expected an RFC 3339 time such as \"2026-11-02T12:03:00-05:00\", got \"03/11/2026 16:20\""
        )
    );
    assert_eq!(
        reasons[2],
        (
            "invalid",
            "shopify fulfillments/create: fulfillment 5100000000001: field `order_id` is missing"
        )
    );
    assert_eq!(dls[1].payload.as_bytes(), bad, "the raw body is kept");
    r.stop().await;
}

/// A store without `delivery_time` promises no date: a delivered fulfilment is a shipment only
/// (`order.delivered` needs the promised date on-time delivery keys on).
#[tokio::test]
async fn without_a_promise_a_delivery_publishes_only_the_shipment() {
    let publisher = std::sync::Arc::new(MemoryPublisher::new());
    let r = start(super::shopify::config(), publisher.clone()).await;
    for (topic, file, id) in [
        ("orders/create", "orders_create.json", "e-o"),
        (
            "fulfillments/update",
            "fulfillments_update_delivered.json",
            "e-f",
        ),
    ] {
        let body = fixture(file);
        assert_eq!(
            deliver(r.addr, topic, id, &body, signed(&body))
                .await
                .status,
            200
        );
    }
    let events = publisher.events();
    let schemas: Vec<&str> = events.iter().map(|e| e.schema()).collect();
    assert_eq!(schemas, ["order.placed", "order.shipped"]);
    let EventBody::OrderShipped(s) = &events[1].body else {
        panic!()
    };
    assert_eq!(s.deliver_by, None);
    r.stop().await;
}
