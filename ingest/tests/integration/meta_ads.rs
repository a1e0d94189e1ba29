//! `meta_ads` against a local insights server: `paging.next` URLs, the one purchase action
//! type, a malformed row, Meta's 400-style throttling and a 500, an expired (unrefreshable)
//! token, the trailing re-pull from the cursor, and the rows on a real broker.

use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{NaiveDate, TimeDelta};
use kpiflow_core::SourceMetrics;
use kpiflow_ingest::MemoryPublisher;
use kpiflow_ingest::connectors::meta_ads::{MetaAds, MetaAdsConfig};
use kpiflow_ingest::pull::PullConnector;
use kpiflow_schemas::{AdPerformance, Channel, Event, EventBody, Topic};

use super::fixture::{
    Reply, Req, Server, ad_rows, fixture, fixture_with, pull_settings, secret_file, shop,
};

const C: &str = "meta_ads";
const INSIGHTS: &str = "/v21.0/act_1234567890/insights";
const TOKEN: &str = "EAAG-system-user-token";

fn page(req: &Req) -> Reply {
    assert_eq!(req.header("authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(
        req.q("access_token"),
        "",
        "the token never travels in the URL"
    );
    match req.q("after") {
        "" => {
            assert_eq!((req.q("level"), req.q("time_increment")), ("campaign", "1"));
            let base = format!("http://{}", req.header("host"));
            Reply::json(fixture_with(C, "insights-page-1.json", &[("base", &base)]))
        }
        "MQZDZD" => Reply::json(fixture(C, "insights-page-2.json")),
        other => panic!("unexpected cursor {other:?}"),
    }
}

async fn server(insights: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Server {
    Server::start(move |req| match req.path.as_str() {
        INSIGHTS => insights(req),
        other => Reply::status(404, format!("no route {other}")),
    })
    .await
}

fn connector(server: &Server, dir: &std::path::Path, shop: &str) -> PullConnector {
    MetaAds::build(MetaAdsConfig {
        shop: shop.to_string(),
        ad_account_id: "1234567890".into(),
        channel: Channel::Shopify,
        marketplace: "US".into(),
        time_zone: "America/Los_Angeles".into(),
        currency: "USD".into(),
        purchase_action_type: "offsite_conversion.fb_pixel_purchase".into(),
        attribution_window: "7d_click_1d_view".into(),
        api_version: "v21.0".into(),
        limit: 2,
        access_token: secret_file(dir, "meta_token", TOKEN),
        pull: pull_settings(server, &dir.join("cursors")),
    })
    .expect("valid config")
}

fn ads(events: &[Event]) -> Vec<AdPerformance> {
    ad_rows(events).into_iter().map(|(_, a)| a).collect()
}

fn since(req: &Req) -> NaiveDate {
    let range: serde_json::Value = serde_json::from_str(req.q("time_range")).unwrap();
    range["since"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn next_urls_are_followed_and_the_trailing_window_is_re_pulled_after_a_restart() {
    let server = server(page).await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop();
    let p = MemoryPublisher::new();
    connector(&server, dir.path(), &shop)
        .sync_once(&p)
        .await
        .unwrap();
    let rows = ads(&p.events());
    assert_eq!(rows.len(), 3);
    assert_eq!(
        (
            rows[0].attributed_orders,
            rows[0].attributed_sales.amount.to_string().as_str()
        ),
        (4, "103.96"),
        "one purchase type, not the sum of its variants"
    );
    assert_eq!(rows[1].attributed_orders, 0);
    assert_eq!(
        p.dead_letters()[0].reason,
        "field `spend`: expected a decimal such as \"12.34\", got \"n/a\""
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
        .requests_to(INSIGHTS)
        .into_iter()
        .filter(|r| r.q("after").is_empty())
        .collect();
    let la = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&chrono_tz::America::Los_Angeles)
            .date_naive()
    };
    assert_eq!(
        since(&firsts[1]),
        la(saved.high_water - TimeDelta::days(14))
    );
    assert_eq!(ads(&p.events()).len(), 6);
}

#[tokio::test]
async fn meta_throttling_and_a_500_are_retried() {
    let calls = AtomicUsize::new(0);
    let server = server(move |req| match calls.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::status(400, fixture(C, "error-throttled.json")).with(
            "x-business-use-case-usage",
            r#"{"1234567890":[{"type":"ads_insights","call_count":98,"total_cputime":12,"total_time":20,"estimated_time_to_regain_access":0}]}"#,
        ),
        2 => Reply::status(500, fixture(C, "error-500.json")),
        _ => page(req),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop();
    let p = MemoryPublisher::new();
    connector(&server, dir.path(), &shop)
        .sync_once(&p)
        .await
        .unwrap();
    assert_eq!(ads(&p.events()).len(), 3);
    let m = SourceMetrics::new(C, &shop);
    assert_eq!((m.rate_limit_waits.get(), m.retries.get()), (1, 2));
}

#[tokio::test]
async fn an_expired_token_fails_the_sync_clearly_and_keeps_the_cursor() {
    let server = server(|_| Reply::status(400, fixture(C, "error-expired-token.json"))).await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop();
    let mut c = connector(&server, dir.path(), &shop);
    let p = MemoryPublisher::new();
    let err = c.sync_once(&p).await.unwrap_err();
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("HTTP 400") && text.contains("Session has expired"),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
    assert!(c.cursors().load(C, &shop).await.unwrap().is_none());
    assert_eq!(
        server.requests_to(INSIGHTS).len(),
        1,
        "a 400 is not retried"
    );
    let events = p.events();
    let EventBody::SourceHeartbeat(h) = &events.last().unwrap().body else {
        panic!()
    };
    assert_eq!(h.consecutive_failures, 1);
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
