//! `walmart_orders` against a local `/v3/token` + `/v3/orders` server: cursor paging, 429
//! with an HTTP-date Retry-After, token expiry, 5xx, an empty window (404), a malformed order,
//! restart from the cursor, and the records on a real broker.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kpiflow_core::SourceMetrics;
use kpiflow_ingest::MemoryPublisher;
use kpiflow_ingest::connectors::walmart_orders::{WalmartOrders, WalmartOrdersConfig};
use kpiflow_ingest::pull::{PullConnector, PullSettings, WalmartAuthConfig};
use kpiflow_schemas::{EventBody, Topic};

use super::fixture::{Reply, Req, fixture, ids, token_json};
use super::rig::{Rig, api_with_tokens, scripted};

const C: &str = "walmart_orders";
const ORDERS: &str = "/v3/orders";
const TOKEN: &str = "/v3/token";
const ID: &str = "walmart-client-id";
const SECRET: &str = "walmart-client-secret";

const PAGE_IDS: [&str; 6] = [
    "walmart:1796277083022:placed",
    "walmart:1796277083022:shipped",
    "walmart:1796277083023:placed",
    "walmart:1796277083024:placed",
    "walmart:1796277083024:cancelled",
    "walmart:1796277083026:placed",
];

/// `Basic base64(id:secret)`, as Walmart expects on every call.
fn basic() -> String {
    // "walmart-client-id:walmart-client-secret"
    "Basic d2FsbWFydC1jbGllbnQtaWQ6d2FsbWFydC1jbGllbnQtc2VjcmV0".into()
}

fn page(req: &Req) -> Reply {
    assert_eq!(req.header("authorization"), basic());
    assert!(req.header("wm_sec.access_token").starts_with("wm-token-"));
    assert_eq!(req.header("wm_svc.name"), "Walmart Marketplace");
    assert_eq!(
        req.header("wm_qos.correlation_id").len(),
        36,
        "a UUID per call"
    );
    let name = match req.q("poIndex") {
        "" => {
            assert!(!req.q("lastModifiedStartDate").is_empty());
            "orders-page-1.json"
        }
        "2" => "orders-page-2.json",
        "4" => "orders-page-3.json",
        other => panic!("unexpected poIndex {other:?}"),
    };
    Reply::json(fixture(C, name))
}

fn token(req: &Req, n: usize) -> Reply {
    assert_eq!(req.header("authorization"), basic());
    assert_eq!(req.form()["grant_type"], "client_credentials");
    assert!(!req.header("wm_qos.correlation_id").is_empty());
    token_json(C, "wm-token-", n)
}

async fn rig(orders: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Rig {
    Rig::new(api_with_tokens(ORDERS, orders, TOKEN, token).await)
}

fn connector(t: &Rig) -> PullConnector {
    connector_with(t, t.pull())
}

fn connector_with(t: &Rig, pull: PullSettings) -> PullConnector {
    WalmartOrders::build(WalmartOrdersConfig {
        shop: t.shop.clone(),
        limit: 2,
        pull,
        auth: WalmartAuthConfig {
            client_id: t.secret("wm_id", ID),
            client_secret: t.secret("wm_secret", SECRET),
            service_name: "Walmart Marketplace".into(),
            refresh_margin: Duration::from_secs(60),
        },
    })
    .expect("valid config")
}

#[tokio::test]
async fn cursor_pages_are_followed_and_a_malformed_order_is_dead_lettered() {
    let t = rig(page).await;
    t.sync(connector).await;
    assert_eq!(ids(&t.p.events()), PAGE_IDS);
    let dl = t.p.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(
        dl[0].reason,
        "order 1796277083025: orderLines.orderLine[0]: charges.charge[0]: field `chargeAmount.amount`: expected a decimal such as \"12.34\", got \"9.O\""
    );
    assert_eq!(t.p.events()[0].header.channel.as_str(), "walmart");
    // One token for the whole sync; the cursor's query string was followed verbatim.
    assert_eq!(t.server.requests_to(TOKEN).len(), 1);
    let second = &t.server.requests_to(ORDERS)[1];
    assert_eq!(second.q("hasMoreElements"), "true");
    assert_eq!(second.q("soIndex"), "5");
    assert_eq!(
        second.q("lastModifiedStartDate"),
        "",
        "the cursor replaces the filters"
    );
}

#[tokio::test]
async fn an_empty_window_is_a_404_and_not_an_error() {
    let t = rig(|_| Reply::status(404, fixture(C, "no-orders-404.json"))).await;
    let mut c = connector(&t);
    let report = c.sync_once(&t.p).await.expect("no orders is a success");
    assert_eq!(report.counts.published, 0);
    assert!(t.cursor(&c, C).await.is_some());
}

#[tokio::test]
async fn a_429_waits_for_an_http_date_retry_after() {
    let t = rig(scripted(
        |n| {
            (n == 0).then(|| {
                // Two seconds ahead, rounded down to the second an HTTP date can express.
                let at = chrono::Utc::now() + chrono::TimeDelta::seconds(2);
                let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
                Reply::status(429, fixture(C, "error-429.json")).with("retry-after", &date)
            })
        },
        page,
    ))
    .await;
    t.sync_waiting(connector, 1).await;
    assert_eq!(ids(&t.p.events()), PAGE_IDS);
    assert_eq!(SourceMetrics::new(C, &t.shop).rate_limit_waits.get(), 1);
}

#[tokio::test]
async fn an_expired_token_is_replaced() {
    let t = rig(|req| {
        if req.header("wm_sec.access_token") == "wm-token-1" && !req.q("poIndex").is_empty() {
            return Reply::status(401, fixture(C, "error-401-expired.json"));
        }
        page(req)
    })
    .await;
    t.sync(connector).await;
    assert_eq!(ids(&t.p.events()), PAGE_IDS);
    assert_eq!(t.server.requests_to(TOKEN).len(), 2);
}

#[tokio::test]
async fn a_500_is_retried_and_a_persistent_one_fails_the_sync_without_moving_the_cursor() {
    let calls = Arc::new(AtomicUsize::new(0));
    let broken = Arc::new(AtomicBool::new(false));
    let (calls2, broken2) = (calls.clone(), broken.clone());
    let t = rig(move |req| {
        let n = calls2.fetch_add(1, Ordering::SeqCst);
        let paging = !req.q("poIndex").is_empty();
        if n == 1 || (paging && broken2.load(Ordering::SeqCst)) {
            return Reply::status(500, fixture(C, "error-500.json"));
        }
        page(req)
    })
    .await;
    let mut c = connector(&t);
    c.sync_once(&t.p).await.expect("one 500 is retried");
    assert_eq!(ids(&t.p.events()), PAGE_IDS);
    assert_eq!(SourceMetrics::new(C, &t.shop).retries.get(), 1);
    let saved = t.cursor(&c, C).await.unwrap();

    broken.store(true, Ordering::SeqCst);
    let err = c.sync_once(&t.p).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("HTTP 500 Internal Server Error after 4 attempts"),
        "{err}"
    );
    assert_eq!(t.cursor(&c, C).await.unwrap(), saved);
    assert_eq!(c.health().consecutive_failures, 1);
}

#[tokio::test]
async fn a_restart_resumes_from_the_cursor_and_loses_nothing() {
    let t = rig(page).await;
    t.sync(connector).await;
    // A new process re-reads from the cursor minus the overlap; the same orders come back.
    let saved = t.restart(connector, C).await;
    let starts: Vec<String> = t
        .server
        .requests_to(ORDERS)
        .iter()
        .filter(|r| r.q("poIndex").is_empty())
        .map(|r| r.q("lastModifiedStartDate").to_string())
        .collect();
    let want = (saved.high_water - chrono::TimeDelta::minutes(15))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(starts[1], want);
    let all = ids(&t.p.events());
    assert_eq!(all.len(), 2 * PAGE_IDS.len(), "the overlap re-reads");
    let distinct: BTreeSet<_> = all.into_iter().collect();
    assert_eq!(
        distinct,
        PAGE_IDS.iter().map(|s| s.to_string()).collect(),
        "same ids, nothing new"
    );
}

#[tokio::test]
async fn a_sync_lands_on_the_broker() {
    let t = rig(page).await;
    let dead =
        super::pull_through_kafka(&mut connector(&t), Topic::Orders, &t.shop, &PAGE_IDS).await;
    assert!(dead[0].reason.contains("\"9.O\""), "{}", dead[0].reason);
}

#[tokio::test]
async fn a_backfill_walks_the_range_in_steps_and_leaves_the_cursor_alone() {
    let t = rig(page).await;
    let mut c = connector(&t);
    let from = "2026-11-20T00:00:00Z".parse().unwrap();
    let to = "2026-11-22T12:00:00Z".parse().unwrap();
    let mut seen = Vec::new();
    let stats = kpiflow_ingest::pull::backfill(&mut c, from, to, &t.p, |progress| {
        seen.push((
            progress.done_until,
            progress.fraction(),
            progress.counts.published,
        ));
    })
    .await
    .unwrap();
    // Steps of max_window (one day): [20th, 21st), [21st, 22nd), [22nd, 22nd 12:00).
    let starts: Vec<String> = t
        .server
        .requests_to(ORDERS)
        .iter()
        .filter(|r| r.q("poIndex").is_empty())
        .map(|r| {
            format!(
                "{}..{}",
                r.q("lastModifiedStartDate"),
                r.q("lastModifiedEndDate")
            )
        })
        .collect();
    assert_eq!(
        starts,
        [
            "2026-11-20T00:00:00Z..2026-11-21T00:00:00Z",
            "2026-11-21T00:00:00Z..2026-11-22T00:00:00Z",
            "2026-11-22T00:00:00Z..2026-11-22T12:00:00Z"
        ]
    );
    let fractions: Vec<f64> = seen.iter().map(|s| (s.1 * 100.0).round() / 100.0).collect();
    assert_eq!(fractions, [0.0, 0.4, 0.8, 1.0]);
    assert_eq!(seen.last().unwrap().2, 3 * PAGE_IDS.len() as u64);
    assert_eq!(stats.published, 3 * PAGE_IDS.len() as u64);
    assert!(t.cursor(&c, C).await.is_none());
    // A heartbeat after each step, as a sync publishes, counting what was published so far.
    let beats: Vec<u64> =
        t.p.events()
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::SourceHeartbeat(h) => Some(h.records_published),
                _ => None,
            })
            .collect();
    assert_eq!(beats, [6, 12, 18], "six events a step");
}

#[tokio::test]
async fn run_syncs_every_interval_until_shutdown() {
    let t = rig(page).await;
    let mut settings = t.pull();
    settings.interval = Some(Duration::from_secs(1));
    let mut c = connector_with(&t, settings);
    let p = Arc::new(MemoryPublisher::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let (stopper, watched) = (stop.clone(), p.clone());
    let beats = move || {
        watched
            .events()
            .iter()
            .filter(|e| e.schema() == "source.heartbeat")
            .count()
    };
    let count = beats.clone();
    let waiter = tokio::spawn(async move {
        // Three heartbeats mean three completed syncs: the loop keeps going on its own.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while count() < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "three syncs within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stopper.cancel();
    });
    let stats = c.run(p.as_ref(), stop).await.expect("a clean stop");
    waiter.await.unwrap();
    assert_eq!(stats.stop, kpiflow_ingest::StopReason::Shutdown);
    assert!(beats() >= 3);
    let firsts = t
        .server
        .requests_to(ORDERS)
        .iter()
        .filter(|r| r.q("poIndex").is_empty())
        .count();
    assert!(firsts >= 3, "one read per sync, got {firsts}");
}
