//! `tiktok_shop_returns` end to end: the connector syncs a fixture TikTok Shop API (the return
//! pages and Get Order Detail answers under `ingest/fixtures/tiktok_shop_returns/`, every
//! request's signature checked) into a real broker, beside the placements and shipments
//! `tiktok_shop_orders` would publish for the same orders, and the processor's return rate
//! and refund rate are the values worked out by hand below.
//!
//! By hand (orders placed 2026-11-26, all shipped in full: …5752 at 08:00Z, 2 units; …5753
//! 09:00Z, 1; …5760 10:00Z, 1; …5761 11:00Z, 1 (FBT); …5762 12:00Z, 1; …5763 13:00Z, 2):
//! - return rate = units returned / units shipped, by order date: 4035318291 brought back 2
//!   units (…5752, complete) + 4035318294 1 (…5761, accepted) = 3; 4035318293 (…5760) is still
//!   on its way back, 4035318292 is a refund only, …97 a replacement and …98 cancelled (…5763),
//!   …95 and …96 dead letters → 3 over 2 + 1 + 1 + 1 + 1 + 2 = 8 → 3 / 8.
//! - refund rate, TikTok Shop's: orders with a completed refund over orders (every refund,
//!   whoever's fault): …5752 (28.06) and …5753 (12.99); …5761's refund is under way, …5762's
//!   total `"9.9O"` is a dead letter → 2 over 6 orders → 2 / 6.

use chrono::DateTime;
use kpiflow_ingest::Publish;
use kpiflow_ingest::connectors::tiktok_shop_returns::{
    DETAIL_PATH, SEARCH_PATH, TiktokShopReturns, TiktokShopReturnsConfig,
};
use kpiflow_schemas::{Channel, Fulfilment};

use super::by_hand::{self, ByHand};
use super::fixture::{
    Reply, Server, fixture, pull_settings, secret_file, tiktok_order_detail, tiktok_signature_ok,
};

const SHOP: &str = "shop-tiktok-returns";
const C: &str = "tiktok_shop_returns";
const SECRET: &str = "e2e-app-secret";

/// The orders: id, placed (`create_time`, Unix seconds, as Get Order Detail says), units,
/// fulfilment.
fn orders() -> [by_hand::Order; 6] {
    let s = |s| DateTime::from_timestamp(s, 0).unwrap();
    [
        ("576461413038785752", s(1795680000), 2, Fulfilment::Merchant),
        ("576461413038785753", s(1795683600), 1, Fulfilment::Merchant),
        ("576461413038785760", s(1795687200), 1, Fulfilment::Merchant),
        ("576461413038785761", s(1795690800), 1, Fulfilment::Fbt),
        ("576461413038785762", s(1795694400), 1, Fulfilment::Merchant),
        ("576461413038785763", s(1795698000), 2, Fulfilment::Merchant),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiktok_shop_returns_through_the_broker_give_return_rate_and_refund_rate_by_hand() {
    let (kafka, publisher) = by_hand::broker("ttret").await;
    for shipped in [false, true] {
        for order in orders() {
            let e = by_hand::order_fact(SHOP, Channel::TiktokShop, order, shipped);
            publisher.publish(&e).await.unwrap();
        }
    }

    // The TikTok Shop API: the two return pages (by page_token) and Get Order Detail, for
    // signed requests only.
    let api = Server::start(move |req| {
        if !tiktok_signature_ok(req, SECRET) {
            return Reply::json(fixture("tiktok_shop_orders", "bad-sign.json"));
        }
        match req.path.as_str() {
            SEARCH_PATH if req.q("page_token").is_empty() => {
                Reply::json(fixture(C, "returns-page-1.json"))
            }
            SEARCH_PATH => Reply::json(fixture(C, "returns-page-2.json")),
            DETAIL_PATH => tiktok_order_detail(req),
            other => Reply::status(404, format!("no route {other}")),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = TiktokShopReturnsConfig {
        shop: SHOP.into(),
        shop_cipher: "GCP_e2e".into(),
        page_size: 3,
        app_key: secret_file(dir.path(), "tts_key", "e2e-app-key"),
        app_secret: secret_file(dir.path(), "tts_secret", SECRET),
        access_token: secret_file(dir.path(), "tts_token", "e2e-access-token"),
        pull: pull_settings(&api, &dir.path().join("cursors")),
    };
    // 2 returns + 2 refunds published; 4035318295 and 4035318296 dead-lettered.
    by_hand::sync(TiktokShopReturns::build(cfg).unwrap(), &publisher, (4, 2)).await;

    let covering = by_hand::holding("2026-11-26T08:00:00Z", "2026-11-26T13:00:00Z");
    let want: [ByHand; 4] = [
        ("return_rate", "rolling_30d", 3, 8),
        ("return_rate", "rolling_60d", 3, 8),
        ("refund_rate", "rolling_30d", 2, 6),
        ("refund_rate", "rolling_60d", 2, 6),
    ];
    let (stats, latest) =
        by_hand::process(&kafka, &["return_rate", "refund_rate"], &covering, &want).await;
    assert_eq!(stats.dead_lettered, 0, "nothing late, nothing refused");
    by_hand::check(&latest, SHOP, &covering, &want);
}
