//! `tiktok_shop_returns` against a local return-search + Get Order Detail server (assumed
//! shapes, see fixtures/tiktok_shop_returns/README.md): every request's signature checked by
//! the server, paging, order dates by Get Order Detail (one call per page, cached), malformed
//! returns dead-lettered, 429 with Retry-After, 5xx, a non-zero `code`, restart from the
//! cursor, and a real broker.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kpiflow_core::SourceMetrics;
use kpiflow_ingest::MemoryPublisher;
use kpiflow_ingest::connectors::tiktok_shop_returns::{
    DETAIL_PATH, SEARCH_PATH, TiktokShopReturns, TiktokShopReturnsConfig,
};
use kpiflow_ingest::pull::PullConnector;
use kpiflow_schemas::{EventBody, Fulfilment, Money, Topic};

use super::fixture::{
    Reply, Req, Server, fixture, ids, pull_settings, secret_file, shop, tiktok_order_detail,
    tiktok_signature_ok,
};
use super::tiktok_shop_orders::{CIPHER, KEY, SECRET, TOKEN};

const C: &str = "tiktok_shop_returns";

/// What the fixture window publishes: 4035318291 returned (2 units) and refunded, 4035318292
/// refunded (refund only), 4035318294 returned (accepted, refund under way). 4035318293 (on
/// its way back), …97 (a replacement) and …98 (cancelled) publish nothing; …95 (`"9.9O"`) and
/// …96 (an order Get Order Detail does not know) are dead letters.
const IDS: [&str; 4] = [
    "tiktok_shop:576461413038785752:returned:4035318291",
    "tiktok_shop:576461413038785752:refund:4035318291",
    "tiktok_shop:576461413038785753:refund:4035318292",
    "tiktok_shop:576461413038785761:returned:4035318294",
];

/// The return search, by `page_token`; every call signed and carrying the shop's token.
fn returns(req: &Req) -> Reply {
    assert_eq!(req.header("x-tts-access-token"), TOKEN);
    assert_eq!((req.q("app_key"), req.q("shop_cipher")), (KEY, CIPHER));
    assert_eq!(req.q("page_size"), "3");
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert!(body["update_time_ge"].as_i64().unwrap() < body["update_time_lt"].as_i64().unwrap());
    match req.q("page_token") {
        "" => Reply::json(fixture(C, "returns-page-1.json")),
        "cmV0dXJucy1wYWdlLTI=" => Reply::json(fixture(C, "returns-page-2.json")),
        other => panic!("unexpected page_token {other:?}"),
    }
}

/// The whole API: `search` for the return search, Get Order Detail from the fixture orders;
/// a request whose signature does not check out gets TikTok's invalid-sign answer.
async fn server(search: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Server {
    Server::start(move |req| {
        if !tiktok_signature_ok(req, SECRET) {
            return Reply::json(fixture("tiktok_shop_orders", "bad-sign.json"));
        }
        match req.path.as_str() {
            SEARCH_PATH => search(req),
            DETAIL_PATH => {
                assert!(req.body.is_empty(), "Get Order Detail is a GET");
                assert_eq!(req.header("x-tts-access-token"), TOKEN);
                tiktok_order_detail(req)
            }
            other => Reply::status(404, format!("no route {other}")),
        }
    })
    .await
}

fn connector_signed_with(
    server: &Server,
    dir: &std::path::Path,
    shop: &str,
    secret: &str,
) -> PullConnector {
    TiktokShopReturns::build(TiktokShopReturnsConfig {
        shop: shop.to_string(),
        shop_cipher: CIPHER.into(),
        page_size: 3,
        app_key: secret_file(dir, "tts_key", KEY),
        app_secret: secret_file(dir, "tts_secret", secret),
        access_token: secret_file(dir, "tts_token", TOKEN),
        pull: pull_settings(server, &dir.join("cursors")),
    })
    .expect("valid config")
}

fn connector(server: &Server, dir: &std::path::Path, shop: &str) -> PullConnector {
    connector_signed_with(server, dir, shop, SECRET)
}

/// The `ids` of every Get Order Detail call, in order.
fn detail_ids(server: &Server) -> Vec<String> {
    server
        .requests_to(DETAIL_PATH)
        .iter()
        .map(|r| r.q("ids").to_string())
        .collect()
}

#[tokio::test]
async fn pages_are_read_orders_dated_once_and_bad_returns_dead_lettered() {
    let server = server(returns).await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop();
    let p = MemoryPublisher::new();
    let mut c = connector(&server, dir.path(), &shop);
    c.sync_once(&p).await.unwrap();
    let events = p.events();
    assert_eq!(ids(&events), IDS);

    // Counted on the order's create_time (…5752: 1795680000 = 2026-11-26T08:00:00Z), timed at
    // the return's update_time (1796200000 = 2026-12-02T08:26:40Z).
    let EventBody::OrderReturned(r) = &events[0].body else {
        panic!("{:?}", events[0])
    };
    assert_eq!(r.placed_at.to_rfc3339(), "2026-11-26T08:00:00+00:00");
    assert_eq!(r.units, 2, "two return line items");
    assert_eq!(
        events[0].header.event_time.to_rfc3339(),
        "2026-12-02T08:26:40+00:00"
    );
    assert_eq!(events[0].header.channel.as_str(), "tiktok_shop");
    let EventBody::OrderRefunded(f) = &events[1].body else {
        panic!("{:?}", events[1])
    };
    // refund_total 28.06 = 25.98 subtotal + 2.08 tax; damaged is the seller's fault.
    assert_eq!(
        (f.amount.clone(), f.seller_fault),
        (Money::usd("28.06"), true)
    );
    let EventBody::OrderRefunded(f) = &events[2].body else {
        panic!("{:?}", events[2])
    };
    // No longer needed: the buyer's doing.
    assert_eq!(
        (f.amount.clone(), f.seller_fault),
        (Money::usd("12.99"), false)
    );
    let EventBody::OrderReturned(r) = &events[3].body else {
        panic!("{:?}", events[3])
    };
    // …5761 is fulfilled by TikTok (Get Order Detail's fulfillment_type).
    assert_eq!((r.units, r.fulfilment), (1, Some(Fulfilment::Fbt)));
    assert_eq!(events[3].header.sku.as_deref(), Some("TT-LAMP-02"));

    let reasons: Vec<String> = p.dead_letters().into_iter().map(|d| d.reason).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(
        reasons[0],
        "return 4035318295: field `refund_amount.refund_total`: expected a decimal such as \"12.34\", got \"9.9O\""
    );
    assert!(
        reasons[1].starts_with("return 4035318296: field `order_id`: order 576461413038785799 is unknown to Get Order Detail"),
        "{}",
        reasons[1]
    );

    // One Get Order Detail call per page, for the returns that publish; the next sync asks
    // only for the order TikTok did not know (the others are cached).
    c.sync_once(&p).await.unwrap();
    assert_eq!(
        detail_ids(&server),
        [
            "576461413038785752,576461413038785753",
            "576461413038785761,576461413038785762,576461413038785799",
            "576461413038785799"
        ]
    );
}

#[tokio::test]
async fn a_request_signed_with_another_secret_is_refused_by_the_server() {
    let server = server(returns).await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop();
    let p = MemoryPublisher::new();
    let err = connector_signed_with(&server, dir.path(), &shop, "another-secret")
        .sync_once(&p)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("code 36009004: Invalid sign."), "{err}");
    assert!(p.events().iter().all(|e| e.schema() == "source.heartbeat"));
}

#[tokio::test]
async fn a_429_and_a_5xx_are_retried_and_a_non_zero_code_fails_the_sync() {
    let calls = AtomicUsize::new(0);
    let expired = Arc::new(AtomicBool::new(false));
    let e = expired.clone();
    let server = server(move |req| {
        if e.load(Ordering::SeqCst) {
            return Reply::json(fixture("tiktok_shop_orders", "token-expired.json"));
        }
        match calls.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::status(429, r#"{"code":429,"message":"Too many requests"}"#)
                .with("retry-after", "1"),
            2 => Reply::status(502, "bad gateway"),
            _ => returns(req),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop();
    let p = MemoryPublisher::new();
    let mut c = connector(&server, dir.path(), &shop);
    let began = std::time::Instant::now();
    c.sync_once(&p).await.unwrap();
    assert!(began.elapsed() >= Duration::from_secs(1), "Retry-After: 1");
    assert_eq!(ids(&p.events()), IDS);
    let m = SourceMetrics::new(C, &shop);
    assert_eq!((m.rate_limit_waits.get(), m.retries.get()), (1, 2));

    let saved = c.cursors().load(C, &shop).await.unwrap().unwrap();
    expired.store(true, Ordering::SeqCst);
    let err = c.sync_once(&p).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("code 105002") && text.contains("expired"),
        "{text}"
    );
    assert!(!err.is_retryable(), "an expired token needs a person");
    assert!(!text.contains(TOKEN) && !text.contains(SECRET), "{text}");
    assert_eq!(c.cursors().load(C, &shop).await.unwrap().unwrap(), saved);
}

#[tokio::test]
async fn a_persistent_5xx_fails_the_sync_without_moving_the_cursor() {
    let broken = Arc::new(AtomicBool::new(false));
    let b = broken.clone();
    let server = server(move |req| {
        if b.load(Ordering::SeqCst) && !req.q("page_token").is_empty() {
            return Reply::status(500, r#"{"code":50000,"message":"Internal error"}"#);
        }
        returns(req)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop();
    let p = MemoryPublisher::new();
    let mut c = connector(&server, dir.path(), &shop);
    c.sync_once(&p).await.unwrap();
    let saved = c.cursors().load(C, &shop).await.unwrap().unwrap();
    broken.store(true, Ordering::SeqCst);
    let err = c.sync_once(&p).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(c.cursors().load(C, &shop).await.unwrap().unwrap(), saved);
}

#[tokio::test]
async fn a_restart_resumes_from_the_cursor_with_the_same_ids() {
    let server = server(returns).await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop();
    let p = MemoryPublisher::new();
    connector(&server, dir.path(), &shop)
        .sync_once(&p)
        .await
        .unwrap();
    let restarted = connector(&server, dir.path(), &shop);
    let saved = restarted.cursors().load(C, &shop).await.unwrap().unwrap();
    let mut restarted = restarted;
    restarted.sync_once(&p).await.unwrap();
    let starts: Vec<i64> = server
        .requests_to(SEARCH_PATH)
        .iter()
        .filter(|r| r.q("page_token").is_empty())
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["update_time_ge"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let want = (saved.high_water - chrono::TimeDelta::minutes(15)).timestamp();
    assert_eq!(
        starts[1], want,
        "from the cursor minus the 15-minute overlap"
    );
    let distinct: BTreeSet<String> = ids(&p.events()).into_iter().collect();
    assert_eq!(
        distinct,
        IDS.iter().map(|s| s.to_string()).collect(),
        "the overlap re-reads the same ids"
    );
    assert_eq!(ids(&p.events()).len(), 2 * IDS.len());
}

#[tokio::test]
async fn a_sync_lands_on_the_broker() {
    let server = server(returns).await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop();
    let mut c = connector(&server, dir.path(), &shop);
    let dead = super::pull_through_kafka(&mut c, Topic::Orders, &shop, &IDS).await;
    assert_eq!(dead.len(), 2);
    assert!(dead[0].payload.contains("9.9O"), "{}", dead[0].payload);
}
