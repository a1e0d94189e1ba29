//! The Shopify Admin API orders connector against a local server speaking the documented
//! shape: `Link` header paging with `page_info`, a 429 with `Retry-After`, the access token
//! header, and a restart from the stored cursor.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use kpiflow_ingest::MemoryPublisher;
use kpiflow_ingest::connectors::shopify::{OrdersConfig, ShopifyOrders};
use kpiflow_ingest::pull::PullConnector;
use tokio::time::Instant;

const TOKEN: &str = "shpat_test_0123456789abcdef";
const ORDERS: &str = "/admin/api/2025-10/orders.json";

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/shopify")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One request the server saw: its query pairs and when.
#[derive(Debug, Clone)]
struct Seen {
    query: Vec<(String, String)>,
    at: Instant,
    status: u16,
}

impl Seen {
    fn get(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// First-page requests to answer with 429 before serving.
    throttle: Arc<Mutex<u32>>,
}

async fn orders(State(f): State<Fake>, headers: HeaderMap, uri: Uri) -> Response {
    let url = reqwest::Url::parse(&format!("http://x{uri}")).unwrap();
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let mut seen = Seen {
        query,
        at: Instant::now(),
        status: 200,
    };
    let reply =
        |seen: &mut Seen, status: StatusCode, h: Vec<(&'static str, String)>, body: String| {
            seen.status = status.as_u16();
            let mut r = (status, body).into_response();
            for (k, v) in h {
                r.headers_mut().insert(k, v.parse().unwrap());
            }
            r.headers_mut().insert(
                "content-type",
                "application/json; charset=utf-8".parse().unwrap(),
            );
            r
        };
    let resp = if headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        != Some(TOKEN)
    {
        reply(&mut seen, StatusCode::UNAUTHORIZED, vec![],
            r#"{"errors":"[API] Invalid API key or access token (unrecognized login or wrong password)"}"#.into())
    } else {
        let link = |p: &str, rel: &str| {
            format!(
                "<http://{}{ORDERS}?limit=250&page_info={p}>; rel=\"{rel}\"",
                f.addr
            )
        };
        match seen.get("page_info") {
            None => {
                let throttled = {
                    let mut t = f.throttle.lock().unwrap();
                    let hit = *t > 0;
                    *t = t.saturating_sub(1);
                    hit
                };
                if seen.get("status") != Some("any") || seen.get("updated_at_min").is_none() {
                    reply(
                        &mut seen,
                        StatusCode::BAD_REQUEST,
                        vec![],
                        r#"{"errors":"status=any and updated_at_min expected"}"#.into(),
                    )
                } else if throttled {
                    reply(&mut seen, StatusCode::TOO_MANY_REQUESTS, vec![("retry-after", "0.5".into())],
                        r#"{"errors":"Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."}"#.into())
                } else {
                    reply(
                        &mut seen,
                        StatusCode::OK,
                        vec![("link", link("p2", "next"))],
                        fixture("admin_orders_page1.json"),
                    )
                }
            }
            // Shopify refuses filters next to page_info.
            Some(_) if seen.get("updated_at_min").is_some() || seen.get("status").is_some() => {
                reply(
                    &mut seen,
                    StatusCode::BAD_REQUEST,
                    vec![],
                    r#"{"errors":{"page_info":"page_info cannot be combined with other filters"}}"#
                        .into(),
                )
            }
            Some("p2") => reply(
                &mut seen,
                StatusCode::OK,
                vec![(
                    "link",
                    format!("{}, {}", link("p1", "previous"), link("p3", "next")),
                )],
                fixture("admin_orders_page2.json"),
            ),
            Some("p3") => reply(
                &mut seen,
                StatusCode::OK,
                vec![("link", link("p2", "previous"))],
                fixture("admin_orders_page3.json"),
            ),
            Some(_) => reply(
                &mut seen,
                StatusCode::BAD_REQUEST,
                vec![],
                r#"{"errors":"bad page_info"}"#.into(),
            ),
        }
    };
    f.seen.lock().unwrap().push(seen);
    resp
}

async fn fake_shopify(throttle: u32) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = Fake {
        addr: listener.local_addr().unwrap(),
        seen: Arc::default(),
        throttle: Arc::new(Mutex::new(throttle)),
    };
    let app = Router::new()
        .route(ORDERS, get(orders))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    fake
}

fn connector(fake: &Fake, state: &Path) -> PullConnector {
    let token_file = state.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let v = serde_json::json!({
        "domain": "acme-ceramics.myshopify.com",
        "access_token": format!("file:{}", token_file.display()),
        "store": { "shop": "shop-003", "time_zone": "America/New_York" },
        "pull": {
            "base_url": format!("http://{}/", fake.addr),
            "cursor_dir": state.join("cursors"),
            "overlap": "15m",
            "initial_lookback": "7days",
            "max_window": "30days",
            "retry": { "initial_backoff": "50ms", "max_backoff": "200ms" },
        },
    });
    ShopifyOrders::build(OrdersConfig::from_value(&v).unwrap()).unwrap()
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
    let fake = fake_shopify(1).await;
    let state = tempfile::tempdir().unwrap();
    let mut c = connector(&fake, state.path());
    let publisher = MemoryPublisher::new();
    let report = c.sync_once(&publisher).await.expect("sync");

    let seen = fake.seen.lock().unwrap().clone();
    let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [429, 200, 200, 200], "{seen:?}");
    assert!(
        seen[1].at - seen[0].at >= Duration::from_millis(500),
        "Retry-After: 0.5 was honoured ({:?})",
        seen[1].at - seen[0].at
    );
    assert_eq!(seen[1].get("order"), Some("updated_at asc"));
    assert_eq!(seen[1].get("limit"), Some("250"));
    let min = time(seen[1].get("updated_at_min").unwrap());
    let max = time(seen[1].get("updated_at_max").unwrap());
    let reach = max - min;
    assert!(
        reach >= TimeDelta::days(7) && reach <= TimeDelta::days(7) + TimeDelta::seconds(2),
        "the first run reaches initial_lookback back: {reach}"
    );
    assert_eq!(seen[2].get("page_info"), Some("p2"));
    assert_eq!(seen[3].get("page_info"), Some("p3"));

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
    let fake = fake_shopify(0).await;
    let state = tempfile::tempdir().unwrap();
    let first = MemoryPublisher::new();
    connector(&fake, state.path())
        .sync_once(&first)
        .await
        .unwrap();
    let stored = connector(&fake, state.path())
        .cursors()
        .load("shopify_orders", "shop-003")
        .await
        .unwrap()
        .unwrap();

    // A new process: the next sync starts at the stored mark minus the overlap, not at the
    // initial lookback, and re-reads give the same ids.
    let second = MemoryPublisher::new();
    let mut restarted = connector(&fake, state.path());
    restarted.sync_once(&second).await.unwrap();
    let seen = fake.seen.lock().unwrap().clone();
    let firsts: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.get("page_info").is_none())
        .collect();
    assert_eq!(firsts.len(), 2);
    assert_eq!(
        time(firsts[1].get("updated_at_min").unwrap()),
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
