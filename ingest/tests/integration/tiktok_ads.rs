//! `tiktok_ads` against a local integrated-report server (assumed shapes, see
//! fixtures/tiktok_ads/README.md): page paging, a malformed row, body-level throttling and a
//! 500, a refused token, the trailing re-pull from the cursor, and the rows on a real broker.

use chrono::{NaiveDate, TimeDelta};
use kpiflow_ingest::connectors::tiktok_ads::{TiktokAds, TiktokAdsKeys};
use kpiflow_ingest::pull::PullConnector;
use kpiflow_schemas::{Channel, Topic};

use super::fixture::{Reply, Req, ads, fixture};
use super::rig::{Rig, day_in, scripted};

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

fn connector(t: &Rig) -> PullConnector {
    TiktokAds::build(t.ad_account(TiktokAdsKeys {
        advertiser_id: "7001234567890".into(),
        channel: Channel::TiktokShop,
        page_size: 2,
        access_token: t.secret("tt_token", TOKEN),
    }))
    .expect("valid config")
}

#[tokio::test]
async fn pages_are_read_and_the_trailing_window_is_re_pulled_after_a_restart() {
    let t = Rig::serving(REPORT, page).await;
    t.sync(connector).await;
    let rows = ads(&t.p.events());
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].spend.amount.to_string(), "31.20");
    assert_eq!(rows[0].attributed_sales.amount.to_string(), "89.97");
    assert_eq!(rows[0].date.to_string(), "2026-11-20");
    assert_eq!(t.p.events()[0].header.channel, Channel::TiktokShop);
    assert_eq!(
        t.p.dead_letters()[0].reason,
        "field `metrics.spend`: expected a decimal such as \"12.34\", got \"?\""
    );
    let saved = t.restart(connector, C).await;
    let starts: Vec<NaiveDate> = t
        .server
        .requests_to(REPORT)
        .iter()
        .filter(|r| r.q("page") == "1")
        .map(|r| r.q("start_date").parse().unwrap())
        .collect();
    assert_eq!(
        starts[1],
        day_in(
            chrono_tz::America::Los_Angeles,
            saved.high_water - TimeDelta::days(14)
        )
    );
    assert_eq!(ads(&t.p.events()).len(), 6);
}

#[tokio::test]
async fn body_level_throttling_and_a_500_are_retried() {
    let t = Rig::serving(
        REPORT,
        scripted(
            |n| match n {
                0 => Some(Reply::json(fixture(C, "throttled.json"))),
                2 => Some(Reply::status(500, "upstream error")),
                _ => None,
            },
            page,
        ),
    )
    .await;
    t.sync(connector).await;
    assert_eq!(ads(&t.p.events()).len(), 3);
    assert_eq!(t.waits_and_retries(C), (1, 2));
}

#[tokio::test]
async fn a_refused_token_fails_the_sync_naming_the_code() {
    let t = Rig::serving(REPORT, |_| Reply::json(fixture(C, "token-invalid.json"))).await;
    let mut c = connector(&t);
    let err = c.sync_once(&t.p).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("code 40105") && text.contains("issue a new one"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
    assert!(!err.is_retryable());
    assert!(t.cursor(&c, C).await.is_none());
}

#[tokio::test]
async fn a_sync_lands_on_the_broker() {
    let t = Rig::serving(REPORT, page).await;
    let dead =
        super::pull_through_kafka_prefix(&mut connector(&t), Topic::Ads, &t.shop, &[], 3).await;
    assert_eq!(dead.len(), 1);
}
