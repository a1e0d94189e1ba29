//! The Shopify Admin API orders connector against a local server speaking the documented
//! shape: `Link` header paging with `page_info`, a 429 with `Retry-After`, the access token
//! header, and a restart from the stored cursor.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use kpiflow_ingest::MemoryPublisher;
use kpiflow_ingest::connectors::shopify::{OrdersConfig, ShopifyOrders};
use kpiflow_ingest::pull::PullConnector;
use tokio::time::Instant;

use super::fixture::{Reply, Req, Server, fixture, pull_settings, secret_file};

const C: &str = "shopify";
const TOKEN: &str = "shpat_test_0123456789abcdef";
const ORDERS: &str = "/admin/api/2025-10/orders.json";

/// Answers like the Admin API: checks the token, throttles the first `throttle` first-page
/// requests with 429 + `Retry-After: 0.5`, and serves the three pages linked by `Link`
/// headers, refusing filters next to `page_info` as Shopify does.
async fn fake_shopify(throttle: u32) -> Server {
    let base: Arc<OnceLock<String>> = Arc::default();
    let url = base.clone();
    let throttle = AtomicU32::new(throttle);
    let server = Server::start(move |req: &Req| {
        if req.path != ORDERS {
            return Reply::status(404, format!("no route {}", req.path));
        }
        if req.header("x-shopify-access-token") != TOKEN {
            return Reply::status(
                401,
                r#"{"errors":"[API] Invalid API key or access token (unrecognized login or wrong password)"}"#,
            );
        }
        let link = |p: &str, rel: &str| {
            format!(
                "<{}{ORDERS}?limit=250&page_info={p}>; rel=\"{rel}\"",
                url.get().expect("set after start")
            )
        };
        match req.q("page_info") {
            "" if req.q("status") != "any" || req.q("updated_at_min").is_empty() => {
                Reply::status(400, r#"{"errors":"status=any and updated_at_min expected"}"#)
            }
            "" if throttle
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| t.checked_sub(1))
                .is_ok() =>
            {
                Reply::status(
                    429,
                    r#"{"errors":"Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."}"#,
                )
                .with("retry-after", "0.5")
            }
            "" => Reply::json(fixture(C, "admin_orders_page1.json")).with("link", &link("p2", "next")),
            _ if !req.q("updated_at_min").is_empty() || !req.q("status").is_empty() => Reply::status(
                400,
                r#"{"errors":{"page_info":"page_info cannot be combined with other filters"}}"#,
            ),
            "p2" => Reply::json(fixture(C, "admin_orders_page2.json")).with(
                "link",
                &format!("{}, {}", link("p1", "previous"), link("p3", "next")),
            ),
            "p3" => Reply::json(fixture(C, "admin_orders_page3.json"))
                .with("link", &link("p2", "previous")),
            other => Reply::status(400, format!(r#"{{"errors":"bad page_info {other}"}}"#)),
        }
    })
    .await;
    base.set(server.url.clone()).unwrap();
    server
}

fn connector(server: &Server, state: &Path) -> PullConnector {
    connector_with(server, state, TOKEN)
}

fn connector_with(server: &Server, state: &Path, token: &str) -> PullConnector {
    let mut pull = pull_settings(server, &state.join("cursors"));
    pull.overlap = Some(Duration::from_secs(15 * 60));
    pull.initial_lookback = Some(Duration::from_secs(7 * 86_400));
    pull.max_window = Some(Duration::from_secs(30 * 86_400));
    let v = serde_json::json!({
        "shop": "shop-003",
        "domain": "acme-ceramics.myshopify.com",
        "access_token": "env:UNUSED",
        "time_zone": "America/New_York",
    });
    let mut cfg = OrdersConfig::from_value(&v).unwrap();
    cfg.access_token = secret_file(state, "token", token);
    cfg.pull = pull;
    ShopifyOrders::build(cfg).unwrap()
}

fn order_ids(p: &MemoryPublisher) -> Vec<String> {
    p.events()
        .into_iter()
        .filter(|e| e.schema() != "source.heartbeat")
        .map(|e| e.header.event_id)
        .collect()
}

fn time(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[tokio::test]
async fn pages_follow_the_link_header_and_a_429_is_waited_out() {
    let server = fake_shopify(1).await;
    let state = tempfile::tempdir().unwrap();
    let mut c = connector(&server, state.path());
    let publisher = MemoryPublisher::new();
    let began = Instant::now();
    let report = c.sync_once(&publisher).await.expect("sync");
    // Backoffs are 20-100 ms here: only honouring `Retry-After: 0.5` takes this long.
    assert!(
        began.elapsed() >= Duration::from_millis(500),
        "{:?}",
        began.elapsed()
    );

    let seen = server.requests_to(ORDERS);
    let pages: Vec<&str> = seen.iter().map(|r| r.q("page_info")).collect();
    assert_eq!(
        pages,
        ["", "", "p2", "p3"],
        "the throttled first page is asked again"
    );
    assert_eq!(seen[0].query, seen[1].query);
    let first = &seen[1];
    assert_eq!(first.q("order"), "updated_at asc");
    assert_eq!(first.q("limit"), "250");
    let min = time(first.q("updated_at_min"));
    let max = time(first.q("updated_at_max"));
    let reach = max - min;
    assert!(
        reach >= TimeDelta::days(7) && reach <= TimeDelta::days(7) + TimeDelta::seconds(2),
        "the first run reaches initial_lookback back: {reach}"
    );

    assert_eq!(
        order_ids(&publisher),
        [
            "shopify-5501234567890-placed",
            "shopify-5501234567890-paid",
            "shopify-5501234567890-shipped-5100000000001",
            "shopify-5501234567892-placed",
            "shopify-5501234567891-placed",
            "shopify-5501234567891-cancelled",
            "shopify-5501234567894-placed",
            "shopify-5501234567894-paid",
            "shopify-5501234567894-shipped-5100000000004",
            "shopify-5501234567894-refund-930000000001",
        ],
        "the webhook's ids, so both paths dedupe"
    );
    let dls = publisher.dead_letters();
    assert_eq!(dls.len(), 1, "{dls:?}");
    assert_eq!(dls[0].stage, "ingest.shopify_orders");
    assert!(
        dls[0].reason.starts_with(
            "shopify order 5501234567895: field `total_price`: expected a decimal string"
        ),
        "{}",
        dls[0].reason
    );
    assert_eq!(report.counts.published, 10);
    assert_eq!(report.counts.dead_lettered, 1);
    let beat = publisher
        .events()
        .into_iter()
        .find(|e| e.schema() == "source.heartbeat")
        .expect("a heartbeat after the sync");
    assert_eq!(beat.header.shop, "shop-003");

    let cursor = c
        .cursors()
        .load("shopify_orders", "shop-003")
        .await
        .unwrap()
        .expect("the cursor is saved after the flush");
    assert!(
        cursor.high_water <= max && max - cursor.high_water < TimeDelta::seconds(1),
        "the cursor is the window's end ({}); the request asked up to {max}",
        cursor.high_water
    );
}

#[tokio::test]
async fn a_restart_resumes_from_the_stored_cursor() {
    let server = fake_shopify(0).await;
    let state = tempfile::tempdir().unwrap();
    let first = MemoryPublisher::new();
    connector(&server, state.path())
        .sync_once(&first)
        .await
        .unwrap();
    let stored = connector(&server, state.path())
        .cursors()
        .load("shopify_orders", "shop-003")
        .await
        .unwrap()
        .unwrap();

    // A new process: the next sync starts at the stored mark minus the overlap, not at the
    // initial lookback, and re-reads give the same ids (the processor counts them once).
    let second = MemoryPublisher::new();
    let mut restarted = connector(&server, state.path());
    restarted.sync_once(&second).await.unwrap();
    let firsts: Vec<Req> = server
        .requests_to(ORDERS)
        .into_iter()
        .filter(|r| r.q("page_info").is_empty())
        .collect();
    assert_eq!(firsts.len(), 2);
    assert_eq!(
        time(firsts[1].q("updated_at_min")),
        (stored.high_water - TimeDelta::minutes(15)).trunc_subsecs(0)
    );
    assert_eq!(order_ids(&first), order_ids(&second));
    let moved = restarted
        .cursors()
        .load("shopify_orders", "shop-003")
        .await
        .unwrap()
        .unwrap();
    assert!(moved.high_water >= stored.high_water);
}

/// A token the store does not accept fails the sync with the platform's status, and the
/// cursor does not move.
#[tokio::test]
async fn a_rejected_token_fails_the_sync_without_moving_the_cursor() {
    let server = fake_shopify(0).await;
    let state = tempfile::tempdir().unwrap();
    let mut c = connector_with(&server, state.path(), "shpat_revoked");
    let publisher = MemoryPublisher::new();
    let err = c.sync_once(&publisher).await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    assert!(
        !err.contains("shpat_revoked"),
        "the token is never in errors: {err}"
    );
    assert!(
        c.cursors()
            .load("shopify_orders", "shop-003")
            .await
            .unwrap()
            .is_none()
    );
}
