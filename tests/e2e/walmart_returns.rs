//! `walmart_returns` end to end: the connector syncs a fixture Walmart API (the returns pages,
//! getOrder answers and tokens under `ingest/fixtures/walmart_returns/`) into a real broker,
//! beside the placements and shipments `walmart_orders` would publish for the same orders, and
//! the processor's return rate and refund rate are the values worked out by hand below.
//!
//! By hand (orders …3022 seller-fulfilled, 2 units, placed 2026-11-20T16:29:31Z; …3023 WFS,
//! 2 units, 2026-11-21T01:02:03Z; …3026 seller-fulfilled, 3 units, 2026-11-21T05:00:00Z, all
//! shipped in full):
//! - return rate = units returned / units shipped, by order date: RO-9001 1 (…3022) + RO-9002
//!   2 (…3023) + RO-9003 1 (…3026) = 4 (RO-9004's `"two"` and RO-9005's unknown order are
//!   dead letters) over 2 + 2 + 3 = 7 → 4 / 7.
//! - refund rate, Walmart's: seller-fault refunds of non-WFS orders over non-WFS orders:
//!   …3022 refunded for a damaged hose (1); …3023's refund is WFS and buyer remorse, …3026's is
//!   still pending → 1 over 2 orders (…3022, …3026) → 1 / 2.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::DateTime;
use kpiflow_ingest::Publish;
use kpiflow_ingest::connectors::walmart_returns::{WalmartReturns, WalmartReturnsConfig};
use kpiflow_ingest::pull::WalmartAuthConfig;
use kpiflow_schemas::{Channel, Fulfilment};

use super::by_hand::{self, ByHand};
use super::fixture::{Reply, Server, fixture, pull_settings, secret_file, token_json};

const SHOP: &str = "shop-walmart-returns";
const C: &str = "walmart_returns";

/// The orders: purchase order id, placed (orderDate, epoch ms, as getOrder says), units,
/// fulfilment.
fn orders() -> [by_hand::Order; 3] {
    let ms = |ms| DateTime::from_timestamp_millis(ms).unwrap();
    [
        ("1796277083022", ms(1795192171000), 2, Fulfilment::Merchant),
        ("1796277083023", ms(1795222923000), 2, Fulfilment::Wfs),
        ("1796277083026", ms(1795237200000), 3, Fulfilment::Merchant),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walmart_returns_through_the_broker_give_return_rate_and_refund_rate_by_hand() {
    let (kafka, publisher) = by_hand::broker("wmret").await;
    for shipped in [false, true] {
        for order in orders() {
            let e = by_hand::order_fact(SHOP, Channel::Walmart, order, shipped);
            publisher.publish(&e).await.unwrap();
        }
    }

    // The Walmart API: tokens, the two returns pages (by the cursor's offset), getOrder.
    let tokens = AtomicUsize::new(0);
    let api = Server::start(move |req| match req.path.as_str() {
        "/v3/token" => token_json(C, "wm-token-", tokens.fetch_add(1, Ordering::SeqCst) + 1),
        "/v3/returns" if req.q("offset") == "2" => Reply::json(fixture(C, "returns-page-2.json")),
        "/v3/returns" => Reply::json(fixture(C, "returns-page-1.json")),
        p => match p.strip_prefix("/v3/orders/") {
            Some(po) if orders().iter().any(|o| o.0 == po) => {
                Reply::json(fixture(C, &format!("order-{po}.json")))
            }
            _ => Reply::status(404, fixture(C, "order-not-found-404.json")),
        },
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = WalmartReturnsConfig {
        shop: SHOP.into(),
        limit: 2,
        pull: pull_settings(&api, &dir.path().join("cursors")),
        auth: WalmartAuthConfig {
            client_id: secret_file(dir.path(), "wm_id", "walmart-client-id"),
            client_secret: secret_file(dir.path(), "wm_secret", "walmart-client-secret"),
            service_name: "Walmart Marketplace".into(),
            refresh_margin: Duration::from_secs(60),
        },
    };
    // 3 returns + 2 refunds published; RO-9004 and RO-9005 dead-lettered.
    by_hand::sync(WalmartReturns::build(cfg).unwrap(), &publisher, (5, 2)).await;

    let covering = by_hand::holding("2026-11-20T16:29:31Z", "2026-11-21T05:00:00Z");
    let want: [ByHand; 4] = [
        ("return_rate", "rolling_30d", 4, 7),
        ("return_rate", "rolling_60d", 4, 7),
        ("refund_rate", "rolling_30d", 1, 2),
        ("refund_rate", "rolling_60d", 1, 2),
    ];
    let (stats, latest) =
        by_hand::process(&kafka, &["return_rate", "refund_rate"], &covering, &want).await;
    assert_eq!(stats.dead_lettered, 0, "nothing late, nothing refused");
    by_hand::check(&latest, SHOP, &covering, &want);
}
