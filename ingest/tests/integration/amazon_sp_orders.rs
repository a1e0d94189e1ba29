//! `amazon_sp_orders` against a local getOrders + LWA server: paging, 429, token expiry, 5xx,
//! a malformed order, restart from the cursor, and the records on a real broker.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use kpiflow_core::SourceMetrics;
use kpiflow_ingest::connectors::amazon_sp_orders::{AmazonOrders, AmazonOrdersConfig};
use kpiflow_ingest::pull::PullConnector;
use kpiflow_schemas::{EventBody, Topic};

use super::fixture::{Reply, Req, Server, fixture, ids, lwa, lwa_token};
use super::rig::{Rig, api_with_tokens, scripted};

const C: &str = "amazon_sp_orders";
const ORDERS: &str = "/orders/v0/orders";
const TOKEN: &str = "/auth/o2/token";

/// The ids the three fixture pages yield (order …0004 is malformed, …0005 pending).
const PAGE_IDS: [&str; 7] = [
    "amazon:113-5550001-0000001:placed",
    "amazon:113-5550001-0000001:shipped",
    "amazon:113-5550002-0000002:placed",
    "amazon:113-5550003-0000003:placed",
    "amazon:113-5550003-0000003:cancelled",
    "amazon:113-5550006-0000006:placed",
    "amazon:113-5550006-0000006:shipped",
];

/// The fixture page for a getOrders request: by NextToken, checking the token header.
pub(crate) fn page(req: &Req) -> Reply {
    assert_eq!(req.method.as_str(), "GET");
    assert_eq!(req.q("MarketplaceIds"), "ATVPDKIKX0DER");
    assert!(
        req.header("x-amz-access-token").starts_with("Atza|token-"),
        "{:?}",
        req.headers
    );
    let name = match req.q("NextToken") {
        "" => {
            assert!(!req.q("LastUpdatedAfter").is_empty());
            "orders-page-1.json"
        }
        "2YgYW55IGNhcm5hbCBwbGVhc3VyZS4=" => "orders-page-2.json",
        "page-3-token" => "orders-page-3.json",
        other => panic!("unexpected NextToken {other:?}"),
    };
    Reply::json(fixture(C, name))
}

/// Serves tokens (counting them) and `orders` for the orders path.
pub(crate) async fn server(orders: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Server {
    api_with_tokens(ORDERS, orders, TOKEN, lwa_token).await
}

async fn rig(orders: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Rig {
    Rig::new(server(orders).await)
}

pub(crate) fn connector(t: &Rig) -> PullConnector {
    let cfg = AmazonOrdersConfig {
        shop: t.shop.clone(),
        marketplace_ids: vec!["ATVPDKIKX0DER".into()],
        max_results_per_page: 100,
        pull: t.pull(),
        auth: lwa(&t.server, t.dir.path()),
    };
    AmazonOrders::build(cfg).expect("valid config")
}

#[tokio::test]
async fn pages_are_followed_and_a_malformed_order_is_dead_lettered() {
    let t = rig(page).await;
    let mut c = connector(&t);
    let report = c.sync_once(&t.p).await.expect("sync succeeds");

    assert_eq!(ids(&t.p.events()), PAGE_IDS);
    assert_eq!(report.counts.published, 7);
    assert_eq!(report.counts.dead_lettered, 1);
    let dl = t.p.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].stage, "ingest.amazon_sp_orders");
    assert_eq!(
        dl[0].reason,
        "order 113-5550004-0000004: field `OrderTotal.Amount`: expected a decimal such as \"12.34\", got \"19,99\""
    );
    assert!(
        dl[0]
            .payload
            .contains("\"AmazonOrderId\":\"113-5550004-0000004\"")
    );

    // Canonical fields: exact money, currency, Pacific zone, UTC times, AFN = FBA.
    let placed = &t.p.events()[0];
    assert_eq!(placed.header.shop, t.shop);
    assert_eq!(placed.header.source_tz.0.name(), "America/Los_Angeles");
    assert_eq!(
        placed.header.event_time.to_rfc3339(),
        "2026-11-20T17:03:12+00:00"
    );
    let EventBody::OrderPlaced(o) = &placed.body else {
        panic!("{placed:?}")
    };
    assert_eq!(
        (
            o.total.amount.to_string().as_str(),
            o.total.currency.as_str()
        ),
        ("25.98", "USD")
    );
    assert_eq!(o.fulfilment, kpiflow_schemas::Fulfilment::Fba);

    // The window asked for ends two minutes before now and starts a day earlier.
    let first = &t.server.requests_to(ORDERS)[0];
    let after: chrono::DateTime<chrono::Utc> = first.q("LastUpdatedAfter").parse().unwrap();
    let before: chrono::DateTime<chrono::Utc> = first.q("LastUpdatedBefore").parse().unwrap();
    assert_eq!(before - after, chrono::TimeDelta::days(1));
    assert!(chrono::Utc::now() - before >= chrono::TimeDelta::minutes(2));

    // The cursor is the window's end; a heartbeat reports the sync.
    let cursor = t.cursor(&c, C).await.expect("cursor saved");
    assert_eq!(cursor.high_water, before);
    let beat = t.p.events().into_iter().last().unwrap();
    let EventBody::SourceHeartbeat(h) = &beat.body else {
        panic!("{beat:?}")
    };
    assert_eq!(h.records_published, 7);
    assert_eq!(h.consecutive_failures, 0);
    assert_eq!(
        h.newest_event_time.unwrap().to_rfc3339(),
        "2026-11-21T18:02:10+00:00"
    );
    assert!(h.last_success.is_some());
    let m = SourceMetrics::new(C, &t.shop);
    assert_eq!(m.records.get(), 7);
    assert!(m.last_success.get() > 0);
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let t = rig(scripted(
        |n| {
            (n == 1)
                .then(|| Reply::status(429, fixture(C, "error-429.json")).with("retry-after", "1"))
        },
        page,
    ))
    .await;
    t.sync_waiting(connector, 1).await;
    assert_eq!(ids(&t.p.events()), PAGE_IDS);
    let asked: Vec<_> = t
        .server
        .requests_to(ORDERS)
        .iter()
        .map(|r| r.q("NextToken").to_string())
        .collect();
    // Page 2 was asked twice: once refused, once served.
    assert_eq!(
        asked,
        [
            "",
            "2YgYW55IGNhcm5hbCBwbGVhc3VyZS4=",
            "2YgYW55IGNhcm5hbCBwbGVhc3VyZS4=",
            "page-3-token"
        ]
    );
    assert_eq!(t.waits_and_retries(C), (1, 1));
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_page_retried() {
    let t = rig(move |req| {
        // The first token expires after the first page.
        if req.header("x-amz-access-token") == "Atza|token-1" && !req.q("NextToken").is_empty() {
            return Reply::status(401, fixture(C, "error-401-expired.json"));
        }
        page(req)
    })
    .await;
    t.sync(connector).await;
    assert_eq!(ids(&t.p.events()), PAGE_IDS);
    let tokens = t.server.requests_to(TOKEN);
    assert_eq!(tokens.len(), 2, "one initial token, one refresh");
    assert_eq!(tokens[1].form()["grant_type"], "refresh_token");
    let used: Vec<_> = t
        .server
        .requests_to(ORDERS)
        .iter()
        .map(|r| r.header("x-amz-access-token").to_string())
        .collect();
    assert_eq!(
        used,
        [
            "Atza|token-1",
            "Atza|token-1",
            "Atza|token-2",
            "Atza|token-2"
        ]
    );
}

#[tokio::test]
async fn a_refused_refresh_token_fails_without_leaking_secrets() {
    let t = Rig::new(
        Server::start(|req| match req.path.as_str() {
            TOKEN => Reply::status(400, fixture("lwa", "invalid-grant.json")),
            _ => Reply::status(500, "unreachable"),
        })
        .await,
    );
    let err = connector(&t).sync_once(&t.p).await.unwrap_err().to_string();
    assert!(
        err.contains("HTTP 400") && err.contains("invalid_grant"),
        "{err}"
    );
    for secret in [
        super::fixture::LWA_CLIENT_SECRET,
        super::fixture::LWA_REFRESH_TOKEN,
    ] {
        assert!(!err.contains(secret), "{err}");
    }
    // The failed sync still reports itself.
    let events = t.p.events();
    let EventBody::SourceHeartbeat(h) = &events.last().unwrap().body else {
        panic!()
    };
    assert_eq!((h.consecutive_failures, h.errors), (1, 1));
}

#[tokio::test]
async fn a_5xx_is_retried_with_backoff() {
    let t = rig(scripted(
        |n| (n < 2).then(|| Reply::status(503, fixture(C, "error-503.json"))),
        page,
    ))
    .await;
    t.sync(connector).await;
    assert_eq!(ids(&t.p.events()), PAGE_IDS);
    assert_eq!(t.server.requests_to(ORDERS).len(), 5);
    assert_eq!(SourceMetrics::new(C, &t.shop).retries.get(), 2);
}

#[tokio::test]
async fn a_restart_resumes_from_the_cursor_minus_the_overlap() {
    // First process: a full sync, then gone.
    let first = rig(page).await;
    first.sync(connector).await;
    let saved = first.cursor(&connector(&first), C).await.unwrap();

    // Second process, same cursor folder: a sync whose second page fails permanently must not
    // move the cursor; the next sync re-reads the same window.
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let fail2 = fail.clone();
    // The same folder, shop and publisher; a new server.
    let t = Rig {
        server: server(move |req| {
            if !req.q("NextToken").is_empty() && fail2.load(Ordering::SeqCst) {
                return Reply::status(
                    400,
                    r#"{"errors":[{"code":"InvalidInput","message":"Invalid NextToken"}]}"#,
                );
            }
            let mut body: serde_json::Value =
                serde_json::from_slice(&fixture(C, "orders-after-restart.json")).unwrap();
            if req.q("NextToken").is_empty() {
                body["payload"]["NextToken"] = "more".into();
            }
            Reply::json(body.to_string())
        })
        .await,
        ..first
    };
    let mut c = connector(&t);
    assert!(c.sync_once(&t.p).await.is_err());
    assert_eq!(t.cursor(&c, C).await.unwrap(), saved);
    fail.store(false, Ordering::SeqCst);
    c.sync_once(&t.p).await.unwrap();

    let windows: Vec<_> = t
        .server
        .requests_to(ORDERS)
        .iter()
        .filter(|r| r.q("NextToken").is_empty())
        .map(|r| r.q("LastUpdatedAfter").to_string())
        .collect();
    let want = (saved.high_water - chrono::TimeDelta::minutes(15))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        windows,
        [want.clone(), want],
        "both resume at cursor minus the 15 min overlap"
    );
    let after = t.cursor(&c, C).await.unwrap();
    assert!(after.saved_at > saved.saved_at && after.high_water >= saved.high_water);

    // Across both processes nothing is missing, and every repeat is a repeat of an id.
    let all = ids(&t.p.events());
    let distinct: BTreeSet<_> = all.iter().cloned().collect();
    let mut want: BTreeSet<String> = PAGE_IDS.iter().map(|s| s.to_string()).collect();
    want.extend([
        "amazon:113-5550002-0000002:shipped".to_string(),
        "amazon:113-5550007-0000007:placed".to_string(),
    ]);
    assert_eq!(distinct, want);
    // Re-read records keep their ids and their content: the processor drops them as duplicates.
    let events = t.p.events();
    let placed: Vec<_> = events
        .iter()
        .filter(|e| e.header.event_id == "amazon:113-5550002-0000002:placed")
        .collect();
    assert!(placed.len() >= 2);
    assert!(placed.iter().all(|e| e.body == placed[0].body));
}

#[tokio::test]
async fn a_sync_lands_on_the_broker() {
    let t = rig(page).await;
    let dead =
        super::pull_through_kafka(&mut connector(&t), Topic::Orders, &t.shop, &PAGE_IDS).await;
    assert!(
        dead[0].reason.contains("`OrderTotal.Amount`"),
        "{}",
        dead[0].reason
    );
}
