//! `google_ads` against a local GAQL search + OAuth server: paging, a malformed row, a day
//! without traffic, 429 / expired token / 503, the trailing re-pull from the cursor, and the
//! rows on a real broker.

use chrono::{NaiveDate, TimeDelta};
use kpiflow_ingest::connectors::google_ads::{GoogleAds, GoogleAdsConfig, GoogleAdsKeys};
use kpiflow_ingest::pull::PullConnector;
use kpiflow_schemas::{Channel, Topic};

use super::fixture::{Reply, Req, ad_rows, fixture, lwa, token_json};
use super::rig::{Rig, api_with_tokens, day_in, scripted};

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

fn token(req: &Req, n: usize) -> Reply {
    assert_eq!(req.form()["grant_type"], "refresh_token");
    token_json(C, "ya29.token-", n)
}

async fn rig(search: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Rig {
    Rig::new(api_with_tokens(SEARCH, search, TOKEN, token).await)
}

fn connector(t: &Rig) -> PullConnector {
    let mut auth = lwa(&t.server, t.dir.path());
    auth.token_url = Some(format!("{}{TOKEN}", t.server.url));
    GoogleAds::build(GoogleAdsConfig {
        time_zone: "America/New_York".into(),
        ..t.ad_account(GoogleAdsKeys {
            customer_id: "123-456-7890".into(),
            login_customer_id: Some("987-654-3210".into()),
            channel: Channel::Shopify,
            api_version: "v21".into(),
            developer_token: t.secret("dev", DEV),
            auth,
        })
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
    let t = rig(page).await;
    t.sync(connector).await;
    let rows = ad_rows(&t.p.events());
    assert_eq!(rows.len(), 3, "four rows, one malformed");
    let (_, first) = &rows[0];
    assert_eq!(first.spend.amount.to_string(), "41.25");
    assert_eq!(first.attributed_sales.amount.to_string(), "129.5");
    assert_eq!((first.clicks, first.attributed_orders), (88, 3));
    assert_eq!(t.p.events()[0].header.channel, Channel::Shopify);
    assert_eq!(
        t.p.events()[0].header.source_tz.0.name(),
        "America/New_York"
    );
    let (_, quiet) = &rows[2];
    assert_eq!(
        (quiet.impressions, quiet.spend.amount.to_string().as_str()),
        (0, "0")
    );
    let dl = t.p.dead_letters();
    assert_eq!(
        dl[0].reason,
        "field `metrics.costMicros`: expected an integer, got \"38.000.000\""
    );

    let saved = t.restart(connector, C).await;
    let firsts: Vec<Req> = t
        .server
        .requests_to(SEARCH)
        .into_iter()
        .filter(|r| !String::from_utf8_lossy(&r.body).contains("pageToken"))
        .collect();
    assert_eq!(
        query_dates(&firsts[1]).0,
        day_in(
            chrono_tz::America::New_York,
            saved.high_water - TimeDelta::days(14)
        )
    );
    let (from, to) = query_dates(&firsts[0]);
    assert_eq!(to - from, TimeDelta::days(14));
    // The second sync's rows are versions of the same keys as of that sync: a later as_of
    // has its own id; within the same second, the identical version keeps the same id.
    let all = ad_rows(&t.p.events());
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
    let t = rig(scripted(
        |n| match n {
            0 => Some(Reply::status(429, fixture(C, "error-429.json")).with("retry-after", "1")),
            2 => Some(Reply::status(401, fixture(C, "error-401.json"))),
            3 => Some(Reply::status(503, fixture(C, "error-503.json"))),
            _ => None,
        },
        page,
    ))
    .await;
    t.sync_waiting(connector, 1).await;
    assert_eq!(ad_rows(&t.p.events()).len(), 3);
    assert_eq!(t.server.requests_to(TOKEN).len(), 2);
    assert_eq!(t.waits_and_retries(C), (1, 2));
}

#[tokio::test]
async fn a_sync_lands_on_the_broker() {
    let t = rig(page).await;
    let dead =
        super::pull_through_kafka_prefix(&mut connector(&t), Topic::Ads, &t.shop, &[], 3).await;
    assert_eq!(dead.len(), 1);
}
