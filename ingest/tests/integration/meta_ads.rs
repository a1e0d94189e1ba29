//! `meta_ads` against a local insights server: `paging.next` URLs, the one purchase action
//! type, a malformed row, Meta's 400-style throttling and a 500, an expired (unrefreshable)
//! token, the trailing re-pull from the cursor, and the rows on a real broker.

use chrono::{NaiveDate, TimeDelta};
use kpiflow_ingest::connectors::meta_ads::{MetaAds, MetaAdsKeys};
use kpiflow_ingest::pull::PullConnector;
use kpiflow_schemas::{Channel, EventBody, Topic};

use super::fixture::{Reply, Req, ads, fixture, fixture_with};
use super::rig::{Rig, day_in, scripted};

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

fn connector(t: &Rig) -> PullConnector {
    MetaAds::build(t.ad_account(MetaAdsKeys {
        ad_account_id: "1234567890".into(),
        channel: Channel::Shopify,
        purchase_action_type: "offsite_conversion.fb_pixel_purchase".into(),
        api_version: "v21.0".into(),
        limit: 2,
        access_token: t.secret("meta_token", TOKEN),
    }))
    .expect("valid config")
}

fn since(req: &Req) -> NaiveDate {
    let range: serde_json::Value = serde_json::from_str(req.q("time_range")).unwrap();
    range["since"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn next_urls_are_followed_and_the_trailing_window_is_re_pulled_after_a_restart() {
    let t = Rig::serving(INSIGHTS, page).await;
    t.sync(connector).await;
    let rows = ads(&t.p.events());
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
        t.p.dead_letters()[0].reason,
        "field `spend`: expected a decimal such as \"12.34\", got \"n/a\""
    );
    let saved = t.restart(connector, C).await;
    let firsts: Vec<Req> = t
        .server
        .requests_to(INSIGHTS)
        .into_iter()
        .filter(|r| r.q("after").is_empty())
        .collect();
    assert_eq!(
        since(&firsts[1]),
        day_in(
            chrono_tz::America::Los_Angeles,
            saved.high_water - TimeDelta::days(14)
        )
    );
    assert_eq!(ads(&t.p.events()).len(), 6);
}

#[tokio::test]
async fn meta_throttling_and_a_500_are_retried() {
    let t = Rig::serving(INSIGHTS, scripted(
        |n| match n {
            0 => Some(Reply::status(400, fixture(C, "error-throttled.json")).with(
                "x-business-use-case-usage",
                r#"{"1234567890":[{"type":"ads_insights","call_count":98,"total_cputime":12,"total_time":20,"estimated_time_to_regain_access":0}]}"#,
            )),
            2 => Some(Reply::status(500, fixture(C, "error-500.json"))),
            _ => None,
        },
        page,
    ))
    .await;
    t.sync(connector).await;
    assert_eq!(ads(&t.p.events()).len(), 3);
    assert_eq!(t.waits_and_retries(C), (1, 2));
}

#[tokio::test]
async fn an_expired_token_fails_the_sync_clearly_and_keeps_the_cursor() {
    let t = Rig::serving(INSIGHTS, |_| {
        Reply::status(400, fixture(C, "error-expired-token.json"))
    })
    .await;
    let mut c = connector(&t);
    let err = c.sync_once(&t.p).await.unwrap_err();
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("HTTP 400") && text.contains("Session has expired"),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
    assert!(t.cursor(&c, C).await.is_none());
    assert_eq!(
        t.server.requests_to(INSIGHTS).len(),
        1,
        "a 400 is not retried"
    );
    let events = t.p.events();
    let EventBody::SourceHeartbeat(h) = &events.last().unwrap().body else {
        panic!()
    };
    assert_eq!(h.consecutive_failures, 1);
}

#[tokio::test]
async fn a_sync_lands_on_the_broker() {
    let t = Rig::serving(INSIGHTS, page).await;
    let dead =
        super::pull_through_kafka_prefix(&mut connector(&t), Topic::Ads, &t.shop, &[], 3).await;
    assert_eq!(dead.len(), 1);
}
