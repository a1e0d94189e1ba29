//! `tiktok_ads` against a local integrated-report server (assumed shapes, see
//! fixtures/tiktok_ads/README.md): page paging, a malformed row, body-level throttling and a
//! 500, a refused token, the trailing re-pull from the cursor, and the rows on a real broker.

use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{NaiveDate, TimeDelta};
use kpiflow_core::SourceMetrics;
use kpiflow_ingest::MemoryPublisher;
use kpiflow_ingest::connectors::tiktok_ads::{TiktokAds, TiktokAdsConfig};
use kpiflow_ingest::pull::PullConnector;
use kpiflow_schemas::{AdPerformance, Channel, Event, Topic};

use super::fixture::{Reply, Req, Server, ad_rows, fixture, pull_settings, secret_file, shop};

const C: &str = "tiktok_ads";
const REPORT: &str = "/open_api/v1.3/report/integrated/get/";
const TOKEN: &str = "tiktok-advertiser-token";

fn page(req: &Req) -> Reply {
    assert_eq!(req.header("access-token"), TOKEN);
    assert_eq!(req.q("data_level"), "AUCTION_CAMPAIGN");
    assert_eq!(req.q("dimensions"), r#"["campaign_id","stat_time_day"]"#);
    match req.q("page") {
        "1" => Reply::json(fixture(C, "report-page-1.json")),
        "2" => Reply::json(fixture(C, "report-page-2.json")),
        other => panic!("unexpected page {other:?}"),
    }
}

async fn server(report: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Server {
    Server::start(move |req| match req.path.as_str() {
        REPORT => report(req),
        other => Reply::status(404, format!("no route {other}")),
    })
    .await
}

fn connector(server: &Server, dir: &std::path::Path, shop: &str) -> PullConnector {
    TiktokAds::build(TiktokAdsConfig {
        shop: shop.to_string(),
        advertiser_id: "7001234567890".into(),
        channel: Channel::TiktokShop,
        marketplace: "US".into(),
        time_zone: "America/Los_Angeles".into(),
        currency: "USD".into(),
        attribution_window: "7d_click_1d_view".into(),
        page_size: 2,
        access_token: secret_file(dir, "tt_token", TOKEN),
        pull: pull_settings(server, &dir.join("cursors")),
    })
    .expect("valid config")
}

fn ads(events: &[Event]) -> Vec<AdPerformance> {
    ad_rows(events).into_iter().map(|(_, a)| a).collect()
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
    let rows = ads(&p.events());
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].spend.amount.to_string(), "31.20");
    assert_eq!(rows[0].attributed_sales.amount.to_string(), "89.97");
    assert_eq!(rows[0].date.to_string(), "2026-11-20");
    assert_eq!(p.events()[0].header.channel, Channel::TiktokShop);
    assert_eq!(
        p.dead_letters()[0].reason,
        "field `metrics.spend`: expected a decimal such as \"12.34\", got \"?\""
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
    let starts: Vec<NaiveDate> = server
        .requests_to(REPORT)
        .iter()
        .filter(|r| r.q("page") == "1")
        .map(|r| r.q("start_date").parse().unwrap())
        .collect();
    let la = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&chrono_tz::America::Los_Angeles)
            .date_naive()
    };
    assert_eq!(starts[1], la(saved.high_water - TimeDelta::days(14)));
    assert_eq!(ads(&p.events()).len(), 6);
}

#[tokio::test]
async fn body_level_throttling_and_a_500_are_retried() {
    let calls = AtomicUsize::new(0);
    let server = server(move |req| match calls.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::json(fixture(C, "throttled.json")),
        2 => Reply::status(500, "upstream error"),
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
async fn a_refused_token_fails_the_sync_naming_the_code() {
    let server = server(|_| Reply::json(fixture(C, "token-invalid.json"))).await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop();
    let mut c = connector(&server, dir.path(), &shop);
    let p = MemoryPublisher::new();
    let err = c.sync_once(&p).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("code 40105") && text.contains("issue a new one"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
    assert!(!err.is_retryable());
    assert!(c.cursors().load(C, &shop).await.unwrap().is_none());
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
