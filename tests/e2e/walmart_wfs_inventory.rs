//! `walmart_wfs_inventory` end to end: the connector syncs a fixture WFS inventory API (the two
//! offset pages and tokens under `ingest/fixtures/walmart_wfs_inventory/`) into a real broker,
//! beside two placements `walmart_orders` would publish, and the processor's stockout rate and
//! days of cover for the Walmart shop are the values worked out by hand below.
//!
//! By hand (business days are US Pacific, UTC−8 in late November):
//! - snapshots, each on its `modifiedDate`'s day: TEE-RED-M 0 sellable at 2026-11-29T21:00Z
//!   (Nov 29 13:00 PST), CAP-GRN 12 at 2026-11-30T02:40Z (Nov 29 18:40 PST), MUG-BLUE-12 40 at
//!   2026-11-30T08:15Z (Nov 30 00:15 PST, the shop's newest fact, so Nov 30 is its current
//!   day). SOCK-3PK (`"ten"` available) is a dead letter; TEE-RED-M's SellerFulfilled node is
//!   not WFS stock.
//! - stockout rate = zero-stock SKU-days / SKU-days from each SKU's first snapshot to Nov 30:
//!   TEE-RED-M Nov 29 and Nov 30 (carried forward), both zero: 2 of 2; CAP-GRN Nov 29, Nov 30:
//!   0 of 2; MUG-BLUE-12 Nov 30: 0 of 1 → 2 / 5.
//! - days of cover (rolling 7 days) = sellable now × 7 / units ordered: (0 + 12 + 40) × 7 =
//!   364 over the orders' 3 + 4 = 7 units → 364 / 7 (52 days).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::DateTime;
use kpiflow_ingest::Publish;
use kpiflow_ingest::connectors::walmart_wfs_inventory::{
    WalmartWfsInventory, WalmartWfsInventoryConfig,
};
use kpiflow_ingest::pull::WalmartAuthConfig;
use kpiflow_schemas::{Channel, Fulfilment};

use super::by_hand::{self, ByHand};
use super::fixture::{Reply, Server, fixture, pull_settings, secret_file, token_json};

const SHOP: &str = "shop-walmart-wfs";
const C: &str = "walmart_wfs_inventory";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wfs_inventory_through_the_broker_gives_stockout_rate_and_days_of_cover_by_hand() {
    let (kafka, publisher) = by_hand::broker("wmwfs").await;
    // Two WFS orders on Nov 29 (Pacific): 10:00 PST with 3 units, 16:00 PST with 4.
    let ms = |ms| DateTime::from_timestamp_millis(ms).unwrap();
    for order in [
        ("1796300000001", ms(1795975200000), 3, Fulfilment::Wfs), // 2026-11-29T18:00:00Z
        ("1796300000002", ms(1795996800000), 4, Fulfilment::Wfs), // 2026-11-30T00:00:00Z
    ] {
        let e = by_hand::order_fact(SHOP, Channel::Walmart, order, false);
        publisher.publish(&e).await.unwrap();
    }

    // The WFS inventory API: tokens and the two pages, by offset.
    let tokens = AtomicUsize::new(0);
    let api = Server::start(move |req| match req.path.as_str() {
        "/v3/token" => token_json(C, "wm-token-", tokens.fetch_add(1, Ordering::SeqCst) + 1),
        "/v3/fulfillment/inventory" if req.q("offset") == "2" => {
            Reply::json(fixture(C, "inventory-page-2.json"))
        }
        "/v3/fulfillment/inventory" => Reply::json(fixture(C, "inventory-page-1.json")),
        other => Reply::status(404, format!("no route {other}")),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = WalmartWfsInventoryConfig {
        shop: SHOP.into(),
        limit: 2,
        location: "WFS-US".into(),
        pull: pull_settings(&api, &dir.path().join("cursors")),
        auth: WalmartAuthConfig {
            client_id: secret_file(dir.path(), "wm_id", "walmart-client-id"),
            client_secret: secret_file(dir.path(), "wm_secret", "walmart-client-secret"),
            service_name: "Walmart Marketplace".into(),
            refresh_margin: Duration::from_secs(60),
        },
    };
    // 3 snapshots published; SOCK-3PK dead-lettered.
    by_hand::sync(WalmartWfsInventory::build(cfg).unwrap(), &publisher, (3, 1)).await;

    // From Nov 29's Pacific midnight (08:00Z, where its SKU-days are booked) to the newest fact.
    let covering = by_hand::holding("2026-11-29T08:00:00Z", "2026-11-30T08:15:00Z");
    let want: [ByHand; 3] = [
        ("stockout_rate", "rolling_7d", 2, 5),
        ("stockout_rate", "rolling_30d", 2, 5),
        ("days_of_cover", "rolling_7d", 364, 7),
    ];
    let (stats, latest) = by_hand::process(
        &kafka,
        &["stockout_rate", "days_of_cover"],
        &covering,
        &want,
    )
    .await;
    assert_eq!(stats.dead_lettered, 0, "nothing late, nothing refused");
    by_hand::check(&latest, SHOP, &covering, &want);
}
