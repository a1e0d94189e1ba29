//! `google_ads` against a local GAQL search + OAuth server: paging, a malformed row, a day
//! without traffic, 429 / expired token / 503, the trailing re-pull from the cursor, and the
//! rows on a real broker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{NaiveDate, TimeDelta};
use kpiflow_core::SourceMetrics;
use kpiflow_ingest::MemoryPublisher;
use kpiflow_ingest::connectors::google_ads::{GoogleAds, GoogleAdsConfig};
use kpiflow_ingest::pull::PullConnector;
use kpiflow_schemas::{Channel, Topic};

use super::fixture::{
    Reply, Req, Server, ad_rows, fixture, fixture_with, lwa, pull_settings, secret_file, shop,
};

const C: &str = "google_ads";
const SEARCH: &str = "/v21/customers/1234567890/googleAds:search";
const TOKEN: &str = "/token";
const DEV: &str = "dev-token-123";

fn page(req: &Req) -> Reply {
    assert!(
        req.header("authorization")
            .starts_with("Bearer ya29.token-")
    );
    assert_eq!(req.header("developer-token"), DEV);
    assert_eq!(req.header("login-customer-id"), "9876543210");
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert!(
        body["query"]
            .as_str()
            .unwrap()
            .contains("FROM campaign WHERE segments.date BETWEEN")
    );
    match body["pageToken"].as_str() {
        None => Reply::json(fixture(C, "search-page-1.json")),
        Some("CPbn2Lq1ARD0") => Reply::json(fixture(C, "search-page-2.json")),
        Some(other) => panic!("unexpected pageToken {other:?}"),
    }
}

async fn server(search: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Server {
    let tokens = AtomicUsize::new(0);
    Server::start(move |req| match req.path.as_str() {
        TOKEN => {
            assert_eq!(req.form()["grant_type"], "refresh_token");
            let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::json(fixture_with(
                C,
                "token.json",
                &[("token", &format!("ya29.token-{n}"))],
            ))
        }
        SEARCH => search(req),
        other => Reply::status(404, format!("no route {other}")),
    })
    .await
}

fn connector(server: &Server, dir: &std::path::Path, shop: &str) -> PullConnector {
    let mut auth = lwa(server, dir);
    auth.token_url = Some(format!("{}{TOKEN}", server.url));
    GoogleAds::build(GoogleAdsConfig {
        shop: shop.to_string(),
        customer_id: "123-456-7890".into(),
        login_customer_id: Some("987-654-3210".into()),
        channel: Channel::Shopify,
        marketplace: "US".into(),
        time_zone: "America/New_York".into(),
        currency: "USD".into(),
        attribution_window: "30d".into(),
        api_version: "v21".into(),
        developer_token: secret_file(dir, "dev", DEV),
        pull: pull_settings(server, &dir.join("cursors")),
        auth,
    })
    .expect("valid config")
}

fn query_dates(req: &Req) -> (NaiveDate, NaiveDate) {
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    let q = body["query"].as_str().unwrap();
    let dates: Vec<NaiveDate> = q.split('\'').filter_map(|s| s.parse().ok()).collect();
    (dates[0], dates[1])
}

#[tokio::test]
async fn pages_are_read_and_the_trailing_window_is_re_pulled_after_a_restart() {
    let server = server(page).await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop();
    let p = MemoryPublisher::new();
    connector(&server, dir.path(), &shop)
        .sync_once(&p)
        .await
        .unwrap();
    let rows = ad_rows(&p.events());
    assert_eq!(rows.len(), 3, "four rows, one malformed");
    let (_, first) = &rows[0];
    assert_eq!(first.spend.amount.to_string(), "41.25");
    assert_eq!(first.attributed_sales.amount.to_string(), "129.5");
    assert_eq!((first.clicks, first.attributed_orders), (88, 3));
    assert_eq!(p.events()[0].header.channel, Channel::Shopify);
    assert_eq!(p.events()[0].header.source_tz.0.name(), "America/New_York");
    let (_, quiet) = &rows[2];
    assert_eq!(
        (quiet.impressions, quiet.spend.amount.to_string().as_str()),
        (0, "0")
    );
    let dl = p.dead_letters();
    assert_eq!(
        dl[0].reason,
        "field `metrics.costMicros`: expected an integer, got \"38.000.000\""
    );

    let saved = connector(&server, dir.path(), &shop)
        .cursors()
        .load(C, &shop)
        .await
        .unwrap()
        .unwrap();
    connector(&server, dir.path(), &shop)
        .sync_once(&p)
        .await
        .unwrap();
    let firsts: Vec<Req> = server
        .requests_to(SEARCH)
        .into_iter()
        .filter(|r| !String::from_utf8_lossy(&r.body).contains("pageToken"))
        .collect();
    let ny = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&chrono_tz::America::New_York).date_naive()
    };
    assert_eq!(
        query_dates(&firsts[1]).0,
        ny(saved.high_water - TimeDelta::days(14))
    );
    let (from, to) = query_dates(&firsts[0]);
    assert_eq!(to - from, TimeDelta::days(14));
    // The second sync's rows are versions of the same keys as of that sync: a later as_of
    // has its own id; within the same second, the identical version keeps the same id.
    let all = ad_rows(&p.events());
    assert_eq!(all.len(), 6);
    assert!(all[3].1.as_of >= all[0].1.as_of);
    assert_eq!(all[3].0 == all[0].0, all[3].1.as_of == all[0].1.as_of);
    assert!(
        all[3]
            .0
            .ends_with(&format!(":{}", all[3].1.as_of.timestamp_millis()))
    );
    assert_eq!(
        (&all[3].1.campaign_id, all[3].1.date),
        (&all[0].1.campaign_id, all[0].1.date)
    );
}

#[tokio::test]
async fn rate_limits_token_expiry_and_unavailability_are_absorbed() {
    let calls = AtomicUsize::new(0);
    let server = server(move |req| match calls.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::status(429, fixture(C, "error-429.json")).with("retry-after", "1"),
        2 => Reply::status(401, fixture(C, "error-401.json")),
        3 => Reply::status(503, fixture(C, "error-503.json")),
        _ => page(req),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop();
    let p = MemoryPublisher::new();
    let began = std::time::Instant::now();
    connector(&server, dir.path(), &shop)
        .sync_once(&p)
        .await
        .unwrap();
    assert!(began.elapsed() >= Duration::from_secs(1));
    assert_eq!(ad_rows(&p.events()).len(), 3);
    assert_eq!(server.requests_to(TOKEN).len(), 2);
    let m = SourceMetrics::new(C, &shop);
    assert_eq!((m.rate_limit_waits.get(), m.retries.get()), (1, 2));
}

#[tokio::test]
async fn a_sync_lands_on_the_broker() {
    let server = server(page).await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop();
    let mut c = connector(&server, dir.path(), &shop);
    let dead = super::pull_through_kafka_prefix(&mut c, Topic::Ads, &shop, &[], 3).await;
    assert_eq!(dead.len(), 1);
}
