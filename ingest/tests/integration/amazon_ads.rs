//! `amazon_ads` against a local reporting-v3 + LWA server: create, poll until COMPLETED,
//! download gzip rows; restated rows on the next sync; 429, token expiry, 5xx, a FAILED
//! report, a malformed row, restart from the cursor, and the records on a real broker.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{NaiveDate, TimeDelta, Utc};
use kpiflow_ingest::connectors::amazon_ads::{AmazonAds, AmazonAdsKeys};
use kpiflow_ingest::pull::PullConnector;
use kpiflow_schemas::Topic;

use super::fixture::{
    LWA_CLIENT_ID, Reply, Req, Server, ad_rows, fixture, fixture_with, lwa, lwa_token,
};
use super::rig::{Rig, day_in};

const C: &str = "amazon_ads";
const PROFILE: &str = "3245645645645";
const TOKEN: &str = "/auth/o2/token";

/// A fault to inject: given the request and the count of API calls so far, maybe answer it.
type Fault = dyn Fn(&Req, usize) -> Option<Reply> + Send + Sync;

/// The reporting API: report n serves `report-rows-n.json`, completes on its third poll,
/// generated at 10:0n UTC on 2026-11-27.
async fn server(fault: impl Fn(&Req, usize) -> Option<Reply> + Send + Sync + 'static) -> Server {
    let tokens = AtomicUsize::new(0);
    let calls = AtomicUsize::new(0);
    let polls: Mutex<BTreeMap<String, usize>> = Mutex::default();
    let created: Mutex<Vec<serde_json::Value>> = Mutex::default();
    let fault: Arc<Fault> = Arc::new(fault);
    Server::start(move |req| {
        if req.path == TOKEN {
            return lwa_token(req, tokens.fetch_add(1, Ordering::SeqCst) + 1);
        }
        if let Some(reply) = fault(req, calls.fetch_add(1, Ordering::SeqCst)) {
            return reply;
        }
        let host = req.header("host").to_string();
        if let Some(file) = req.path.strip_prefix("/download/") {
            assert_eq!(
                req.header("authorization"),
                "",
                "pre-signed URLs get no token"
            );
            let n = file.trim_start_matches("rep-").trim_end_matches(".json.gz");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&fixture(C, &format!("report-rows-{n}.json")))
                .unwrap();
            return Reply {
                status: 200,
                headers: vec![("content-type", "application/octet-stream".into())],
                body: gz.finish().unwrap(),
            };
        }
        assert!(
            req.header("authorization")
                .starts_with("Bearer Atza|token-")
        );
        assert_eq!(req.header("amazon-advertising-api-clientid"), LWA_CLIENT_ID);
        assert_eq!(req.header("amazon-advertising-api-scope"), PROFILE);
        let vars = |id: &str, body: &serde_json::Value, n: &str| -> Vec<(String, String)> {
            vec![
                ("report".into(), id.to_string()),
                (
                    "startDate".into(),
                    body["startDate"].as_str().unwrap().into(),
                ),
                ("endDate".into(), body["endDate"].as_str().unwrap().into()),
                ("name".into(), body["name"].as_str().unwrap().into()),
                ("url".into(), format!("http://{host}/download/{id}.json.gz")),
                // Documented v3 statuses carry no `completedAt`: the rows' as_of is
                // `generatedAt`, a few seconds before the last status change.
                ("generatedAt".into(), format!("2026-11-27T10:0{n}:00.000Z")),
                ("updatedAt".into(), format!("2026-11-27T10:0{n}:07.500Z")),
            ]
        };
        let answer = |name: &str, vars: Vec<(String, String)>| {
            let vars: Vec<(&str, &str)> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Reply::json(fixture_with(C, name, &vars))
        };
        if req.method.as_str() == "POST" && req.path == "/reporting/reports" {
            assert_eq!(
                req.header("content-type"),
                "application/vnd.createasyncreportrequest.v3+json"
            );
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            let mut created = created.lock().unwrap();
            created.push(body.clone());
            let id = format!("rep-{}", created.len());
            return answer(
                "report-pending.json",
                vars(&id, &body, &created.len().to_string()),
            );
        }
        if let Some(id) = req.path.strip_prefix("/reporting/reports/") {
            let n: usize = id.trim_start_matches("rep-").parse().unwrap();
            let body = created.lock().unwrap()[n - 1].clone();
            let mut polls = polls.lock().unwrap();
            let seen = polls.entry(id.to_string()).or_default();
            *seen += 1;
            let name = match *seen {
                1 => "report-pending.json",
                2 => "report-processing.json",
                _ => "report-completed.json",
            };
            return answer(name, vars(id, &body, &n.to_string()));
        }
        Reply::status(404, format!("no route {}", req.path))
    })
    .await
}

async fn rig(fault: impl Fn(&Req, usize) -> Option<Reply> + Send + Sync + 'static) -> Rig {
    Rig::new(server(fault).await)
}

fn connector(t: &Rig) -> PullConnector {
    AmazonAds::build(t.ad_account(AmazonAdsKeys {
        profile_id: PROFILE.into(),
        report_type: "spCampaigns".into(),
        poll_interval: Duration::from_millis(10),
        poll_timeout: Duration::from_secs(5),
        auth: lwa(&t.server, t.dir.path()),
    }))
    .expect("valid config")
}

fn pacific_day(t: chrono::DateTime<Utc>) -> NaiveDate {
    day_in(chrono_tz::America::Los_Angeles, t)
}

#[tokio::test]
async fn reports_are_polled_downloaded_and_restated_rows_come_as_new_versions() {
    let t = rig(|_, _| None).await;
    let began = Utc::now();
    t.sync(connector).await;

    let first = ad_rows(&t.p.events());
    assert_eq!(first.len(), 4, "five rows, one malformed");
    let dl = t.p.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(
        dl[0].reason,
        "field `clicks`: expected an integer, got \"many\""
    );
    let (id, a) = &first[0];
    assert_eq!(
        id,
        "amazon_ads:3245645645645:1234567890123:2026-11-20:1795773660000"
    );
    assert_eq!(
        (a.platform.as_str(), a.account_id.as_str()),
        ("amazon_ads", PROFILE)
    );
    assert_eq!(a.spend.amount.to_string(), "24.87");
    assert_eq!(a.attributed_sales.amount.to_string(), "103.96");
    assert_eq!(a.as_of.to_rfc3339(), "2026-11-27T10:01:00+00:00");
    assert_eq!(
        t.p.events()[0].header.source_tz.0.name(),
        "America/Los_Angeles"
    );

    // The first report covers the initial 14-day lookback, in Pacific dates, as documented.
    let create = &t
        .server
        .requests()
        .into_iter()
        .find(|r| r.path == "/reporting/reports")
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&create.body).unwrap();
    let end = body["endDate"]
        .as_str()
        .unwrap()
        .parse::<NaiveDate>()
        .unwrap();
    let start = body["startDate"]
        .as_str()
        .unwrap()
        .parse::<NaiveDate>()
        .unwrap();
    assert_eq!(end, pacific_day(began), "today, in the profile's zone");
    assert_eq!(end - start, TimeDelta::days(14));
    assert_eq!(body["configuration"]["timeUnit"], "DAILY");
    assert_eq!(body["configuration"]["format"], "GZIP_JSON");
    assert_eq!(body["configuration"]["reportTypeId"], "spCampaigns");
    let polls = t.server.requests_to("/reporting/reports/rep-1").len();
    assert_eq!(polls, 3, "polled until COMPLETED");

    // A restart re-pulls the trailing 14 days from the cursor: restated rows arrive as
    // versions with a later as_of and their own ids, for the same (campaign, date).
    let saved = t.restart(connector, C).await;
    let creates: Vec<serde_json::Value> = t
        .server
        .requests_to("/reporting/reports")
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(
        creates[1]["startDate"].as_str().unwrap(),
        pacific_day(saved.high_water - TimeDelta::days(14)).to_string()
    );
    let all = ad_rows(&t.p.events());
    assert_eq!(all.len(), 9);
    let second = &all[4..];
    let restated = second
        .iter()
        .find(|(_, a)| a.campaign_id == "1234567890123" && a.date.to_string() == "2026-11-20")
        .unwrap();
    assert_ne!(restated.0, first[0].0, "each version has its own event id");
    assert!(restated.1.as_of > first[0].1.as_of);
    assert_eq!(restated.1.attributed_sales.amount.to_string(), "133.95");
    assert_eq!(restated.1.attributed_orders, 5);
    // The row malformed in the first report is fine in the second.
    assert!(
        second
            .iter()
            .any(|(_, a)| a.campaign_id == "1234567890124" && a.clicks == 14)
    );
}

#[tokio::test]
async fn a_429_on_create_waits_and_a_5xx_on_download_is_retried() {
    let t = rig(|req, _| {
        static LIMITED: AtomicUsize = AtomicUsize::new(0);
        static BROKEN: AtomicUsize = AtomicUsize::new(0);
        if req.path == "/reporting/reports" && LIMITED.fetch_add(1, Ordering::SeqCst) == 0 {
            return Some(Reply::status(429, fixture(C, "error-429.json")).with("retry-after", "1"));
        }
        if req.path.starts_with("/download/") && BROKEN.fetch_add(1, Ordering::SeqCst) == 0 {
            return Some(Reply::status(500, fixture(C, "error-500.json")));
        }
        None
    })
    .await;
    t.sync_waiting(connector, 1).await;
    assert_eq!(ad_rows(&t.p.events()).len(), 4);
    assert_eq!(t.server.requests_to("/reporting/reports").len(), 2);
    assert_eq!(t.waits_and_retries(C), (1, 2));
}

#[tokio::test]
async fn an_expired_token_is_refreshed_while_polling() {
    let t = rig(|req, _| {
        (req.path.starts_with("/reporting/reports/")
            && req.header("authorization") == "Bearer Atza|token-1")
            .then(|| Reply::status(401, fixture(C, "error-401.json")))
    })
    .await;
    t.sync(connector).await;
    assert_eq!(ad_rows(&t.p.events()).len(), 4);
    assert_eq!(t.server.requests_to(TOKEN).len(), 2);
}

#[tokio::test]
async fn a_failed_report_fails_the_sync_and_keeps_the_cursor() {
    let t = rig(|req, _| {
        req.path.starts_with("/reporting/reports/").then(|| {
            Reply::json(fixture_with(
                C,
                "report-failed.json",
                &[("report", "rep-1")],
            ))
        })
    })
    .await;
    let mut c = connector(&t);
    let err = c.sync_once(&t.p).await.unwrap_err().to_string();
    assert!(
        err.contains("report rep-1 FAILED: Report generation failed"),
        "{err}"
    );
    assert!(t.cursor(&c, C).await.is_none());
    assert_eq!(c.health().consecutive_failures, 1);
}

#[tokio::test]
async fn a_sync_lands_on_the_broker() {
    let t = rig(|_, _| None).await;
    let ids = [
        "amazon_ads:3245645645645:1234567890123:2026-11-20:1795773660000",
        "amazon_ads:3245645645645:1234567890124:2026-11-20:1795773660000",
        "amazon_ads:3245645645645:1234567890123:2026-11-21:1795773660000",
        "amazon_ads:3245645645645:1234567890125:2026-11-21:1795773660000",
    ];
    let dead = super::pull_through_kafka(&mut connector(&t), Topic::Ads, &t.shop, &ids).await;
    assert!(dead[0].payload.contains("\"many\""));
}
