//! `shopify_returns` against a local GraphQL Admin API: the posted query is read only as far
//! as the answer needs (its variables: `after`, the `updated_at` filter, the sizes), and the
//! answers are the documented shape under `ingest/fixtures/shopify_returns/`: `endCursor`
//! paging, a THROTTLED answer in a 200, a 429 with Retry-After, a rejected token, 5xx, a
//! GraphQL error, a malformed return, and a restart from the cursor.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use kpiflow_ingest::connectors::shopify::{ReturnsConfig, ShopifyReturns};
use kpiflow_ingest::pull::PullConnector;
use kpiflow_schemas::EventBody;
use serde_json::Value;

use super::fixture::{Reply, Req, fixture, ids};
use super::rig::Rig;

const C: &str = "shopify_returns";
const GRAPHQL: &str = "/admin/api/2025-10/graphql.json";
const TOKEN: &str = "shpat_test_returns_0123456789";

/// The counted returns of the two pages: #1042-R1 (OPEN) and #1045-R1 (CLOSED). #1042-R2 is
/// REQUESTED and #1047-R1 DECLINED (nothing comes back), #1047-R2 has `"two"` units (a dead
/// letter), #1049 is a test order.
const IDS: [&str; 2] = [
    "shopify-5501234567890-returned-7100000001",
    "shopify-5501234567895-returned-7100000003",
];

/// page 1's `endCursor`.
const CURSOR_1: &str =
    "eyJsYXN0X2lkIjo1NTAxMjM0NTY3ODk1LCJsYXN0X3ZhbHVlIjoiMjAyNi0xMS0wNiAxNToyMjowMC4wMDAwMDAifQ==";

/// The posted GraphQL request.
fn posted(req: &Req) -> Value {
    serde_json::from_slice(&req.body).expect("a JSON body")
}

/// The `updated_at` bounds of a request's `query` variable.
fn bounds(req: &Req) -> (DateTime<Utc>, DateTime<Utc>) {
    let v = posted(req);
    let q = v["variables"]["query"].as_str().expect("a query filter");
    let rest = q.strip_prefix("updated_at:>='").expect(q);
    let (from, rest) = rest.split_once("' AND updated_at:<'").expect(q);
    let to = rest.strip_suffix('\'').expect(q);
    (from.parse().unwrap(), to.parse().unwrap())
}

/// Answers like the GraphQL Admin API: checks the token and the query, then serves the page
/// the `after` variable asks for.
fn api(req: &Req) -> Reply {
    if req.header("x-shopify-access-token") != TOKEN {
        return Reply::status(401, fixture(C, "error-401.json"));
    }
    let v = posted(req);
    let query = v["query"].as_str().unwrap_or_default();
    assert!(query.contains("sortKey: UPDATED_AT"), "{query}");
    assert!(query.contains("returnLineItems(first: $lines)"), "{query}");
    bounds(req);
    match v["variables"]["after"].as_str() {
        None => Reply::json(fixture(C, "orders-page-1.json")),
        Some(CURSOR_1) => Reply::json(fixture(C, "orders-page-2.json")),
        Some(other) => Reply::json(format!(
            r#"{{"errors":[{{"message":"Invalid cursor {other}","extensions":{{"code":"BAD_REQUEST"}}}}]}}"#
        )),
    }
}

/// A rig whose API answers `fault(n)` for the n-th request (from 0) where it gives one, else
/// like [`api`].
async fn rig(fault: impl Fn(usize, &Req) -> Option<Reply> + Send + Sync + 'static) -> Rig {
    let calls = AtomicUsize::new(0);
    Rig::serving(GRAPHQL, move |req| {
        fault(calls.fetch_add(1, Ordering::SeqCst), req).unwrap_or_else(|| api(req))
    })
    .await
}

fn connector_with(t: &Rig, token: &str) -> PullConnector {
    let mut cfg = ReturnsConfig::from_value(&serde_json::json!({
        "shop": t.shop,
        "domain": "acme-ceramics.myshopify.com",
        "access_token": "env:KPIFLOW_TEST_UNUSED",
        "time_zone": "America/New_York",
    }))
    .unwrap();
    cfg.access_token = t.secret("shopify_token", token);
    cfg.pull = t.pull();
    ShopifyReturns::build(cfg).expect("valid config")
}

fn connector(t: &Rig) -> PullConnector {
    connector_with(t, TOKEN)
}

fn revoked(t: &Rig) -> PullConnector {
    connector_with(t, "shpat_revoked")
}

#[tokio::test]
async fn pages_follow_the_end_cursor_and_a_malformed_return_is_dead_lettered() {
    let t = rig(|_, _| None).await;
    let report = t.sync(connector).await;
    let events = t.p.events();
    assert_eq!(ids(&events), IDS);
    let EventBody::OrderReturned(r) = &events[0].body else {
        panic!("{:?}", events[0])
    };
    // #1042-R1: two lines of 1 mug = 2 units, counted on the order's date (created
    // 2026-11-02T17:03:00Z), timed when the poll saw it (the order's updatedAt).
    assert_eq!((r.order_id.as_str(), r.units), ("5501234567890", 2));
    assert_eq!(r.placed_at.to_rfc3339(), "2026-11-02T17:03:00+00:00");
    assert_eq!(
        events[0].header.event_time.to_rfc3339(),
        "2026-11-06T15:20:00+00:00"
    );
    assert_eq!(events[0].header.channel.as_str(), "shopify");
    assert_eq!(events[0].header.source, C);

    let dls = t.p.dead_letters();
    assert_eq!(dls.len(), 1, "{dls:?}");
    assert_eq!(dls[0].stage, "ingest.shopify_returns");
    assert_eq!(
        dls[0].reason,
        "shopify order 5501234567897 return 7100000005 (#1047-R2): returnLineItems.nodes[0]: field `quantity`: expected an integer, got \"two\""
    );
    assert_eq!(
        (report.counts.published, report.counts.dead_lettered),
        (2, 1)
    );

    let seen = t.server.requests_to(GRAPHQL);
    assert_eq!(seen.len(), 2, "two pages");
    let first = posted(&seen[0]);
    assert_eq!(first["variables"]["after"], Value::Null);
    assert_eq!(
        (
            &first["variables"]["first"],
            &first["variables"]["returns"],
            &first["variables"]["lines"]
        ),
        (&10.into(), &5.into(), &10.into()),
        "the default sizes"
    );
    assert_eq!(posted(&seen[1])["variables"]["after"], CURSOR_1);
    assert_eq!(bounds(&seen[0]), bounds(&seen[1]), "one window, both pages");
    let (from, to) = bounds(&seen[0]);
    let reach = to - from;
    assert!(
        reach >= TimeDelta::days(1) && reach <= TimeDelta::days(1) + TimeDelta::seconds(2),
        "the first run reaches the default initial_lookback, a day: {reach}"
    );
    let cursor = t.cursor(&connector(&t), C).await.expect("a cursor");
    assert!(
        cursor.high_water <= to && to - cursor.high_water < TimeDelta::seconds(1),
        "the cursor is the window's end ({}); the filter asked up to {to}",
        cursor.high_water
    );
}

#[tokio::test]
async fn a_throttled_answer_waits_for_the_points_the_query_needs() {
    // (682 requested − 632 available) / 100 a second = 0.5 s; backoffs here are 20-100 ms.
    let t = rig(|n, _| (n == 0).then(|| Reply::json(fixture(C, "throttled.json")))).await;
    let began = Instant::now();
    t.sync(connector).await;
    assert!(
        began.elapsed() >= Duration::from_millis(500),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(ids(&t.p.events()), IDS);
    assert_eq!(t.server.requests_to(GRAPHQL).len(), 3, "page 1 asked again");
    assert_eq!(t.waits_and_retries(C), (1, 1));
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after() {
    let t = rig(|n, _| {
        (n == 1).then(|| Reply::status(429, fixture(C, "error-429.json")).with("retry-after", "1"))
    })
    .await;
    t.sync_waiting(connector, 1).await;
    assert_eq!(ids(&t.p.events()), IDS);
    assert_eq!(t.waits_and_retries(C).0, 1);
}

#[tokio::test]
async fn a_rejected_token_fails_the_sync_without_moving_the_cursor() {
    let t = rig(|_, _| None).await;
    let mut c = revoked(&t);
    let err = c.sync_once(&t.p).await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("Invalid API key or access token"), "{err}");
    assert!(
        !err.contains("shpat_revoked"),
        "the token is never in errors: {err}"
    );
    assert_eq!(
        t.server.requests_to(GRAPHQL).len(),
        2,
        "the token is read again once, then the sync fails"
    );
    assert!(t.cursor(&c, C).await.is_none());
    assert!(
        t.p.events()
            .iter()
            .all(|e| e.schema() == "source.heartbeat")
    );
}

#[tokio::test]
async fn a_5xx_is_retried_and_a_persistent_one_fails_without_moving_the_cursor() {
    let broken = Arc::new(AtomicBool::new(false));
    let b = broken.clone();
    let t = rig(move |n, req| {
        let later_page = posted(req)["variables"]["after"].is_string();
        (n == 1 || (b.load(Ordering::SeqCst) && later_page))
            .then(|| Reply::status(503, fixture(C, "error-503.json")))
    })
    .await;
    let mut c = connector(&t);
    c.sync_once(&t.p).await.expect("one 503 is retried");
    assert_eq!(ids(&t.p.events()), IDS);
    let saved = t.cursor(&c, C).await.unwrap();
    broken.store(true, Ordering::SeqCst);
    let err = c.sync_once(&t.p).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(t.cursor(&c, C).await.unwrap(), saved);
}

#[tokio::test]
async fn a_graphql_error_fails_the_sync_naming_shopifys_message() {
    let t = rig(|_, _| Some(Reply::json(fixture(C, "error-undefined-field.json")))).await;
    let mut c = connector(&t);
    let err = c.sync_once(&t.p).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "shopify_returns: POST admin/api/2025-10/graphql.json: GraphQL errors: Field 'returnz' doesn't exist on type 'Order' (undefinedField)"
    );
    assert_eq!(t.server.requests_to(GRAPHQL).len(), 1, "not retried");
    assert!(t.cursor(&c, C).await.is_none());
}

#[tokio::test]
async fn a_restart_resumes_from_the_cursor_with_the_same_ids() {
    let t = rig(|_, _| None).await;
    t.sync(connector).await;
    let saved = t.restart(connector, C).await;
    let starts: Vec<DateTime<Utc>> = t
        .server
        .requests_to(GRAPHQL)
        .iter()
        .filter(|r| posted(r)["variables"]["after"].is_null())
        .map(|r| bounds(r).0)
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(
        starts[1],
        (saved.high_water - TimeDelta::minutes(15)).trunc_subsecs(0),
        "from the cursor minus the 15-minute overlap"
    );
    let distinct: BTreeSet<String> = ids(&t.p.events()).into_iter().collect();
    assert_eq!(
        distinct,
        IDS.iter().map(|s| s.to_string()).collect(),
        "the overlap re-reads the same ids"
    );
    assert_eq!(ids(&t.p.events()).len(), 2 * IDS.len());
}
