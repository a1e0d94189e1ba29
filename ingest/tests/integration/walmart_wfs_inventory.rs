//! `walmart_wfs_inventory` against a local `/v3/token` + `/v3/fulfillment/inventory` server:
//! offset paging over two pages, a non-WFS node skipped, a malformed node, 429 with
//! Retry-After, token expiry, 5xx, and a restart that re-reads the same snapshot ids.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kpiflow_core::SourceMetrics;
use kpiflow_ingest::connectors::walmart_wfs_inventory::{
    WalmartWfsInventory, WalmartWfsInventoryConfig,
};
use kpiflow_ingest::pull::{PullConnector, WalmartAuthConfig};
use kpiflow_schemas::{EventBody, LocationKind};

use super::fixture::{Reply, Req, Server, fixture, ids, token_json};
use super::rig::Rig;

const C: &str = "walmart_wfs_inventory";
const INVENTORY: &str = "/v3/fulfillment/inventory";
const TOKEN: &str = "/v3/token";

/// Every snapshot of the fixture, id = sku and modifiedDate in epoch ms:
/// 2026-11-30T08:15:00Z = 1796026500000, 2026-11-29T21:00:00Z = 1795986000000,
/// 2026-11-30T02:40:00Z = 1796006400000. TEE-RED-M's SellerFulfilled node is not WFS stock;
/// SOCK-3PK (`"ten"` available) is a dead letter.
const IDS: [&str; 3] = [
    "walmart_wfs:MUG-BLUE-12:1796026500000",
    "walmart_wfs:TEE-RED-M:1795986000000",
    "walmart_wfs:CAP-GRN:1796006400000",
];

/// The inventory pages, by `offset`.
fn inventory(req: &Req) -> Reply {
    assert!(req.header("wm_sec.access_token").starts_with("wm-token-"));
    assert_eq!(req.header("wm_svc.name"), "Walmart Marketplace");
    assert_eq!(req.header("wm_qos.correlation_id").len(), 36);
    assert_eq!(req.q("limit"), "2");
    match req.q("offset") {
        "0" => Reply::json(fixture(C, "inventory-page-1.json")),
        "2" => Reply::json(fixture(C, "inventory-page-2.json")),
        other => panic!("unexpected offset {other:?}"),
    }
}

async fn rig(inventory: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Rig {
    let tokens = AtomicUsize::new(0);
    Rig::new(
        Server::start(move |req| match req.path.as_str() {
            TOKEN => token_json(C, "wm-token-", tokens.fetch_add(1, Ordering::SeqCst) + 1),
            INVENTORY => inventory(req),
            other => Reply::status(404, format!("no route {other}")),
        })
        .await,
    )
}

fn connector(t: &Rig) -> PullConnector {
    WalmartWfsInventory::build(WalmartWfsInventoryConfig {
        shop: t.shop.clone(),
        limit: 2,
        location: "WFS-US".into(),
        pull: t.pull(),
        auth: WalmartAuthConfig {
            client_id: t.secret("wm_id", "walmart-client-id"),
            client_secret: t.secret("wm_secret", "walmart-client-secret"),
            service_name: "Walmart Marketplace".into(),
            refresh_margin: Duration::from_secs(60),
        },
    })
    .expect("valid config")
}

#[tokio::test]
async fn offset_pages_are_followed_wfs_nodes_snapshotted_and_bad_rows_dead_lettered() {
    let t = rig(inventory).await;
    t.sync(connector).await;
    let events = t.p.events();
    assert_eq!(ids(&events), IDS);
    let EventBody::InventorySnapshot(s) = &events[0].body else {
        panic!("{:?}", events[0])
    };
    // MUG-BLUE-12: 40 available of 43 on hand, so 43 - 40 = 3 reserved.
    assert_eq!(
        (s.sellable, s.reserved, s.inbound, s.unfulfillable),
        (40, 3, 0, 0)
    );
    assert_eq!(s.location, "WFS-US");
    assert_eq!(s.location_kind, LocationKind::Wfs);
    assert_eq!(events[0].header.sku.as_deref(), Some("MUG-BLUE-12"));
    assert_eq!(
        events[0].header.event_time.to_rfc3339(),
        "2026-11-30T08:15:00+00:00"
    );
    assert_eq!(events[0].header.channel.as_str(), "walmart");
    assert_eq!(events[0].header.marketplace, "US");
    // TEE-RED-M: out of stock at WFS (its 7 seller-fulfilled units are not counted).
    let EventBody::InventorySnapshot(s) = &events[1].body else {
        panic!("{:?}", events[1])
    };
    assert_eq!(s.sellable, 0);

    let reasons: Vec<String> = t.p.dead_letters().into_iter().map(|d| d.reason).collect();
    assert_eq!(
        reasons,
        ["sku SOCK-3PK: shipNodes[0]: field `availToSellQty`: expected an integer, got \"ten\""]
    );
    let offsets: Vec<String> = t
        .server
        .requests_to(INVENTORY)
        .iter()
        .map(|r| r.q("offset").to_string())
        .collect();
    assert_eq!(offsets, ["0", "2"], "totalCount 4 reached after two pages");
    assert_eq!(t.server.requests_to(TOKEN).len(), 1);
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after() {
    let calls = AtomicUsize::new(0);
    let t = rig(move |req| {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::status(429, fixture(C, "error-429.json")).with("retry-after", "1");
        }
        inventory(req)
    })
    .await;
    t.sync_waiting(connector, 1).await;
    assert_eq!(ids(&t.p.events()), IDS);
    assert_eq!(SourceMetrics::new(C, &t.shop).rate_limit_waits.get(), 1);
}

#[tokio::test]
async fn an_expired_token_is_replaced() {
    let t = rig(|req| {
        if req.header("wm_sec.access_token") == "wm-token-1" && req.q("offset") == "2" {
            return Reply::status(401, fixture(C, "error-401-expired.json"));
        }
        inventory(req)
    })
    .await;
    t.sync(connector).await;
    assert_eq!(ids(&t.p.events()), IDS);
    assert_eq!(t.server.requests_to(TOKEN).len(), 2, "refreshed once");
}

#[tokio::test]
async fn a_persistent_500_fails_the_sync_without_moving_the_cursor() {
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = AtomicUsize::new(0);
    let b = broken.clone();
    let t = rig(move |req| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        if n == 1 || (b.load(Ordering::SeqCst) && req.q("offset") == "2") {
            return Reply::status(500, fixture(C, "error-500.json"));
        }
        inventory(req)
    })
    .await;
    let mut c = connector(&t);
    c.sync_once(&t.p).await.expect("one 500 is retried");
    assert_eq!(ids(&t.p.events()), IDS);
    let saved = t.cursor(&c, C).await.unwrap();
    broken.store(true, Ordering::SeqCst);
    let err = c.sync_once(&t.p).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(t.cursor(&c, C).await.unwrap(), saved);
}

#[tokio::test]
async fn a_restart_resumes_from_the_cursor_with_the_same_ids() {
    let t = rig(inventory).await;
    t.sync(connector).await;
    t.restart(connector, C).await;
    // A snapshot source reads the whole state again from offset 0; unchanged stock keeps its
    // ids, so the processor drops the second copies.
    let distinct: BTreeSet<String> = ids(&t.p.events()).into_iter().collect();
    assert_eq!(distinct, IDS.iter().map(|s| s.to_string()).collect());
    assert_eq!(ids(&t.p.events()).len(), 2 * IDS.len());
    let offsets: Vec<String> = t
        .server
        .requests_to(INVENTORY)
        .iter()
        .map(|r| r.q("offset").to_string())
        .collect();
    assert_eq!(offsets, ["0", "2", "0", "2"]);
}
