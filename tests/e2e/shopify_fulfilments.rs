//! Shopify fulfilments end to end: the `shopify_webhook` receiver takes the order and
//! fulfilment deliveries under `ingest/fixtures/shopify/` over HTTP into a real broker, and the
//! processor's valid tracking and on-time delivery rates are the values worked out by hand.
//!
//! By hand, from the fixtures (store in America/New_York, ships within 2 days, promises
//! delivery within 5 days of the order: `delivery_time = "5days"`):
//! - #1042 placed 2026-11-02T12:03-05:00 = 17:03Z → promised 2026-11-07T17:03Z; shipped 3
//!   units with UPS 1Z999AA10123456784 (fulfillments/create, then the same shipment again in
//!   the in-transit and delivered updates: one id, counted once); delivered
//!   2026-11-05T19:12:30Z, before the promise → 3 units on time.
//! - #1045 placed 15:40-05:00 = 20:40Z → promised 2026-11-07T20:40Z; 1 unit with USPS;
//!   delivered 2026-11-09T15:00Z, after the promise → late.
//! - #1047 placed 18:05-05:00 = 23:05Z → promised 2026-11-07T23:05Z; 2 units shipped without a
//!   tracking number.
//! - Valid tracking (packages by promised date, all on 2026-11-07): 2 with a tracking number
//!   (#1042, #1045) of 3 ship-confirmed → 2 / 3.
//! - On-time delivery: tracked units (valid tracking and a promise) 3 + 1 = 4; delivered by the
//!   promise 3 (#1042) → 3 / 4.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kpiflow_ingest::IngestError;
use kpiflow_ingest::connectors::shopify::{ShopifyWebhook, WebhookConfig};
use kpiflow_ingest::publish::KafkaPublisher;
use kpiflow_ingest::pull::secret::Secret;
use kpiflow_ingest::push::metrics::PushStats;
use kpiflow_ingest::push::signature::sign;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::by_hand::{self, ByHand};
use super::push_http::post;

const SECRET: &str = "shpss_e2e_client_secret";
const SHOP: &str = "shop-shopify-e2e";

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("ingest/fixtures/shopify")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture store's `shopify_webhook`, serving on the test broker.
pub(crate) struct StoreHook {
    hook: ShopifyWebhook,
    addr: SocketAddr,
    stop: CancellationToken,
    serving: JoinHandle<Result<(), IngestError>>,
}

impl StoreHook {
    /// Starts the receiver for acme-ceramics.myshopify.com as `shop` (New York, promising
    /// delivery within 5 days).
    pub(crate) async fn start(shop: &str, publisher: Arc<KafkaPublisher>) -> StoreHook {
        let cfg = WebhookConfig::from_value(&serde_json::json!({
            "listen": "127.0.0.1:0",
            "client_secret": "env:KPIFLOW_TEST_UNUSED",
            "shops": { "acme-ceramics.myshopify.com": {
                "shop": shop, "time_zone": "America/New_York", "delivery_time": "5days" } },
        }))
        .unwrap();
        let hook = ShopifyWebhook::new(cfg).unwrap();
        let bound = hook.bind_with_secret(Secret::new(SECRET)).await.unwrap();
        let addr = bound.local_addr();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let serving = tokio::spawn(async move { bound.serve(publisher.as_ref(), s).await });
        StoreHook {
            hook,
            addr,
            stop,
            serving,
        }
    }

    /// Posts fixture `file` as a signed `topic` delivery; it must be answered 200, which the
    /// receiver does only once Kafka acknowledged the delivery's events.
    pub(crate) async fn post(&self, topic: &str, file: &str) {
        let body = fixture(file);
        let sig = sign(&Secret::new(SECRET), &body);
        let resp = post(
            self.addr,
            "/webhooks/shopify",
            &[
                ("X-Shopify-Topic", topic),
                ("X-Shopify-Shop-Domain", "acme-ceramics.myshopify.com"),
                ("X-Shopify-Webhook-Id", file),
                ("X-Shopify-Hmac-Sha256", &sig),
            ],
            &body,
        )
        .await;
        assert_eq!(resp.status, 200, "{topic} {file}: {}", resp.body);
    }

    /// Stops the receiver; returns its counters.
    pub(crate) async fn finish(self) -> PushStats {
        self.stop.cancel();
        self.serving.await.unwrap().unwrap();
        self.hook.stats()
    }
}

/// The fixture deliveries before any parcel is delivered, in the order Shopify would send
/// them (each stream's facts in time order): three orders, #1042's shipment and its
/// in-transit update, #1047's shipment without tracking.
pub(crate) const BEFORE_DELIVERY: [(&str, &str); 6] = [
    ("orders/create", "orders_create.json"),
    ("orders/create", "orders_create_1045.json"),
    ("orders/create", "orders_create_1047.json"),
    ("fulfillments/create", "fulfillments_create.json"),
    ("fulfillments/update", "fulfillments_update_in_transit.json"),
    (
        "fulfillments/create",
        "fulfillments_create_no_tracking.json",
    ),
];

/// The store's delivered updates: #1042 on time, #1045 late.
pub(crate) const DELIVERIES: [(&str, &str); 2] = [
    ("fulfillments/update", "fulfillments_update_delivered.json"),
    (
        "fulfillments/update",
        "fulfillments_update_delivered_late.json",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_fulfilments_through_the_broker_give_valid_tracking_and_on_time_delivery_by_hand() {
    let (kafka, publisher) = by_hand::broker("shopful").await;
    let store = StoreHook::start(SHOP, Arc::new(publisher)).await;
    for (topic, file) in BEFORE_DELIVERY.iter().chain(&DELIVERIES) {
        store.post(topic, file).await;
    }
    let stats = store.finish().await;
    assert_eq!((stats.published, stats.dead_lettered), (10, 0));

    // Every promise falls on 2026-11-07 between 17:03Z and 23:05Z.
    let covering = by_hand::holding("2026-11-07T17:03:00Z", "2026-11-07T23:05:00Z");
    let want: [ByHand; 3] = [
        ("valid_tracking_rate", "business_day", 2, 3),
        ("valid_tracking_rate", "rolling_30d", 2, 3),
        ("on_time_delivery_rate", "rolling_30d", 3, 4),
    ];
    let kpis = ["valid_tracking_rate", "on_time_delivery_rate"];
    let (stats, latest) = by_hand::process(&kafka, &kpis, &covering, &want).await;
    assert_eq!(
        stats.received, 10,
        "3 placements, 5 shipments, 2 deliveries"
    );
    assert_eq!(
        stats.duplicates, 2,
        "#1042's shipment again in its in-transit and delivered updates"
    );
    assert_eq!(stats.dead_lettered, 0, "nothing late, nothing refused");

    by_hand::check(&latest, SHOP, &covering, &want);
}
