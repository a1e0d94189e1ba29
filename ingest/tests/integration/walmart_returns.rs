//! `walmart_returns` against a local `/v3/token` + `/v3/returns` + `/v3/orders/{id}` server:
//! cursor paging, order dates by getOrder (cached; 404 dead-letters the return), a malformed
//! return, 429 with Retry-After, token expiry, 5xx, and restart from the cursor.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kpiflow_core::SourceMetrics;
use kpiflow_ingest::connectors::walmart_returns::{WalmartReturns, WalmartReturnsConfig};
use kpiflow_ingest::pull::{PullConnector, WalmartAuthConfig};
use kpiflow_schemas::{EventBody, Fulfilment, Money};

use super::fixture::{Reply, Req, Server, fixture, ids, token_json};
use super::rig::Rig;

const C: &str = "walmart_returns";
const RETURNS: &str = "/v3/returns";
const TOKEN: &str = "/v3/token";

/// Every fact of the fixture window: RO-9001 returned and refunded (damaged: the seller's
/// fault), RO-9002 returned and refunded (changed mind, WFS), RO-9003 returned with its refund
/// pending. RO-9004 (`"two"` units) and RO-9005 (unknown order) are dead letters.
const IDS: [&str; 5] = [
    "walmart:1796277083022:returned:RO-9001:1",
    "walmart:1796277083022:refund:RO-9001:1",
    "walmart:1796277083023:returned:RO-9002:1",
    "walmart:1796277083023:refund:RO-9002:1",
    "walmart:1796277083026:returned:RO-9003:1",
];

/// The returns pages, by the cursor's `offset`.
fn returns(req: &Req) -> Reply {
    assert!(req.header("wm_sec.access_token").starts_with("wm-token-"));
    assert_eq!(req.header("wm_svc.name"), "Walmart Marketplace");
    assert_eq!(req.header("wm_qos.correlation_id").len(), 36);
    match req.q("offset") {
        "" => {
            assert!(!req.q("returnCreationStartDate").is_empty());
            assert!(!req.q("returnCreationEndDate").is_empty());
            assert_eq!(req.q("limit"), "2");
            Reply::json(fixture(C, "returns-page-1.json"))
        }
        "2" => Reply::json(fixture(C, "returns-page-2.json")),
        other => panic!("unexpected offset {other:?}"),
    }
}

/// The whole API: tokens, getOrder (fixtures per purchase order, else 404) and `returns`.
async fn rig(returns: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Rig {
    let tokens = AtomicUsize::new(0);
    Rig::new(
        Server::start(move |req| match req.path.as_str() {
            TOKEN => token_json(C, "wm-token-", tokens.fetch_add(1, Ordering::SeqCst) + 1),
            RETURNS => returns(req),
            p if p.starts_with("/v3/orders/") => {
                let po = &p["/v3/orders/".len()..];
                match po {
                    "1796277083022" | "1796277083023" | "1796277083026" => {
                        Reply::json(fixture(C, &format!("order-{po}.json")))
                    }
                    _ => Reply::status(404, fixture(C, "order-not-found-404.json")),
                }
            }
            other => Reply::status(404, format!("no route {other}")),
        })
        .await,
    )
}

fn connector(t: &Rig) -> PullConnector {
    WalmartReturns::build(WalmartReturnsConfig {
        shop: t.shop.clone(),
        limit: 2,
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
async fn pages_are_followed_orders_dated_and_bad_returns_dead_lettered() {
    let t = rig(returns).await;
    t.sync(connector).await;
    let events = t.p.events();
    assert_eq!(ids(&events), IDS);
    // Returns count on the order's date: …3022's orderDate 1795192171000 ms.
    let EventBody::OrderReturned(r) = &events[0].body else {
        panic!("{:?}", events[0])
    };
    assert_eq!(r.placed_at.to_rfc3339(), "2026-11-20T16:29:31+00:00");
    assert_eq!(
        events[0].header.event_time.to_rfc3339(),
        "2026-11-24T18:22:41+00:00"
    );
    assert_eq!(events[0].header.channel.as_str(), "walmart");
    let EventBody::OrderRefunded(f) = &events[3].body else {
        panic!("{:?}", events[3])
    };
    // 2 mugs at 12.50; changed mind is the buyer's doing; …3023 is WFS.
    assert_eq!(f.amount, Money::usd("25.00"));
    assert!(!f.seller_fault);
    assert_eq!(f.fulfilment, Some(Fulfilment::Wfs));

    let reasons: Vec<String> = t.p.dead_letters().into_iter().map(|d| d.reason).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(
        reasons[0],
        "return order RO-9004: returnOrderLines[0]: field `quantity.measurementValue`: expected an integer, got \"two\""
    );
    assert!(
        reasons[1].starts_with("return order RO-9005: returnOrderLines[0]: field `purchaseOrderId`: order 1796277083099 is unknown to getOrder"),
        "{}",
        reasons[1]
    );
    // getOrder once per purchase order (…3026 twice in the pages: cached), the cursor verbatim.
    let gets: Vec<String> = t
        .server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v3/orders/"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        gets,
        [
            "/v3/orders/1796277083022",
            "/v3/orders/1796277083023",
            "/v3/orders/1796277083026",
            "/v3/orders/1796277083099"
        ]
    );
    let second = &t.server.requests_to(RETURNS)[1];
    assert_eq!(second.q("offset"), "2");
    assert_eq!(t.server.requests_to(TOKEN).len(), 1);
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after() {
    let calls = AtomicUsize::new(0);
    let t = rig(move |req| {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::status(429, fixture(C, "error-429.json")).with("retry-after", "1");
        }
        returns(req)
    })
    .await;
    t.sync_waiting(connector, 1).await;
    assert_eq!(ids(&t.p.events()), IDS);
    assert_eq!(SourceMetrics::new(C, &t.shop).rate_limit_waits.get(), 1);
}

#[tokio::test]
async fn an_expired_token_is_replaced() {
    let t = rig(|req| {
        if req.header("wm_sec.access_token") == "wm-token-1" && !req.q("offset").is_empty() {
            return Reply::status(401, fixture(C, "error-401-expired.json"));
        }
        returns(req)
    })
    .await;
    t.sync(connector).await;
    assert_eq!(ids(&t.p.events()), IDS);
    assert_eq!(t.server.requests_to(TOKEN).len(), 2);
}

#[tokio::test]
async fn a_persistent_500_fails_the_sync_without_moving_the_cursor() {
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = AtomicUsize::new(0);
    let b = broken.clone();
    let t = rig(move |req| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        if n == 1 || (b.load(Ordering::SeqCst) && !req.q("offset").is_empty()) {
            return Reply::status(500, fixture(C, "error-500.json"));
        }
        returns(req)
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
    let t = rig(returns).await;
    t.sync(connector).await;
    let saved = t.restart(connector, C).await;
    let starts: Vec<String> = t
        .server
        .requests_to(RETURNS)
        .iter()
        .filter(|r| r.q("offset").is_empty())
        .map(|r| r.q("returnCreationStartDate").to_string())
        .collect();
    let want = (saved.high_water - chrono::TimeDelta::minutes(15))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        starts[1], want,
        "from the cursor minus the 15-minute overlap"
    );
    let distinct: BTreeSet<String> = ids(&t.p.events()).into_iter().collect();
    assert_eq!(
        distinct,
        IDS.iter().map(|s| s.to_string()).collect(),
        "the overlap re-reads the same ids"
    );
    // Heartbeats aside (`ids` leaves them out).
    assert_eq!(ids(&t.p.events()).len(), 2 * IDS.len());
}
