//! `walmart_connect_ads` end to end: the connector syncs a fixture Walmart Connect snapshot
//! API (`ingest/fixtures/walmart_connect_ads/`: create, done, the gzip JSON-lines file) into a
//! real broker, and the processor's ROAS, ACoS and CPC of the Walmart shop are the values
//! worked out by hand below.
//!
//! By hand, from `report-rows-1.jsonl`, the Pacific business day of 2026-11-20 (08:00Z to
//! 08:00Z): campaign 51001 spent 30.00 for 40 clicks and 120.00 of 14-day attributed sales,
//! 51002 spent 5.00 for 10 clicks and 25.00 of sales → spend 35, sales 145, clicks 50:
//! - ROAS = ad sales / ad spend = 145 / 35;
//! - ACoS = ad spend / ad sales = 35 / 145;
//! - CPC = ad spend / clicks = 35 / 50.
//!
//! (Nov 21's rows: 51002's `"12,40"` spend is a dead letter of the connector; the day's other
//! rows are booked on Nov 21 and stay out of Nov 20.)

use std::time::Duration;

use kpiflow_ingest::connectors::walmart_connect_ads::{WalmartConnectAds, WalmartConnectAdsKeys};
use kpiflow_ingest::pull::AdAccountConfig;

use super::by_hand::{self, ByHand};
use super::fixture::{
    Reply, Server, fixture, fixture_with, pull_settings, rsa_private_key, secret_file,
};

const SHOP: &str = "shop-walmart-ads";
const C: &str = "walmart_connect_ads";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walmart_connect_ads_through_the_broker_give_roas_acos_and_cpc_by_hand() {
    let (kafka, publisher) = by_hand::broker("wmads").await;
    // The server takes any signature here (the integration tests check it); the key is made
    // for this run.
    // The snapshot API: one snapshot, done at its first poll; the file is gzip JSON lines.
    let api = Server::start(move |req| {
        let host = req.header("host").to_string();
        if req.path == "/download/snap-1.jsonl.gz" {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&fixture(C, "report-rows-1.jsonl")).unwrap();
            return Reply {
                status: 200,
                headers: vec![("content-type", "application/octet-stream".into())],
                body: gz.finish().unwrap(),
            };
        }
        let details = format!("http://{host}/download/snap-1.jsonl.gz");
        let vars = [("snapshot", "snap-1"), ("details", details.as_str())];
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/snapshot/report") => {
                Reply::json(fixture_with(C, "snapshot-created.json", &vars))
            }
            ("GET", "/snapshot") => Reply::json(fixture_with(C, "snapshot-done.json", &vars)),
            (_, p) => Reply::status(404, format!("no route {p}")),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = AdAccountConfig {
        shop: SHOP.into(),
        marketplace: "US".into(),
        time_zone: "America/Los_Angeles".into(),
        currency: "USD".into(),
        attribution_window: "14d".into(),
        pull: pull_settings(&api, &dir.path().join("cursors")),
        platform: WalmartConnectAdsKeys {
            advertiser_id: "600001".into(),
            consumer_id: secret_file(
                dir.path(),
                "consumer_id",
                "c0ffee00-1111-2222-3333-444455556666",
            ),
            private_key: secret_file(dir.path(), "private_key", &rsa_private_key()),
            key_version: "1".into(),
            access_token: secret_file(dir.path(), "access_token", "test-advertiser-token"),
            report_type: "campaign".into(),
            poll_interval: Duration::from_millis(10),
            poll_timeout: Duration::from_secs(5),
        },
    };
    // Four rows published, the "12,40" one dead-lettered.
    by_hand::sync(WalmartConnectAds::build(cfg).unwrap(), &publisher, (4, 1)).await;

    let nov_20 = by_hand::holding("2026-11-20T08:00:00Z", "2026-11-20T08:00:00Z");
    let want: [ByHand; 3] = [
        ("roas", "business_day", 145, 35),
        ("acos", "business_day", 35, 145),
        ("cpc", "business_day", 35, 50),
    ];
    let (stats, latest) = by_hand::process(&kafka, &["roas", "acos", "cpc"], &nov_20, &want).await;
    assert_eq!(stats.dead_lettered, 0, "nothing late, nothing refused");
    by_hand::check(&latest, SHOP, &nov_20, &want);
}
