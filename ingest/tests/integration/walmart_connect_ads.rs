//! `walmart_connect_ads` against a local snapshot-report server that verifies each call's RSA
//! signature: create, poll pending → processing → done, download gzip JSON lines; restated
//! rows on the next sync; 429, 5xx, a rejected signature, a malformed row, restart.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use kpiflow_ingest::connectors::walmart_connect_ads::{WalmartConnectAds, WalmartConnectAdsKeys};
use kpiflow_ingest::pull::PullConnector;
use ring::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};

use super::fixture::{Reply, Req, Server, ad_rows, fixture, fixture_with, rsa_private_key};
use super::rig::Rig;

const C: &str = "walmart_connect_ads";
const ADVERTISER: &str = "600001";
const CONSUMER: &str = "c0ffee00-1111-2222-3333-444455556666";
const TOKEN: &str = "test-advertiser-token";

type Fault = dyn Fn(&Req, usize) -> Option<Reply> + Send + Sync;

/// Two fresh 2048-bit RSA keys (PKCS#8 PEM, `BEGIN PRIVATE KEY`) made by `openssl` for this
/// run: the server trusts the first; the second signs calls the server must refuse. None is
/// committed.
fn keys() -> &'static [String; 2] {
    static KEYS: OnceLock<[String; 2]> = OnceLock::new();
    KEYS.get_or_init(|| [rsa_private_key(), rsa_private_key()])
}

/// The DER bytes of a PEM key.
fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// Whether `req` carries a valid signature of the trusted key over
/// "consumerId\ntimestamp\nkeyVersion\n".
fn signed(req: &Req) -> bool {
    let trusted = RsaKeyPair::from_pkcs8(&der(&keys()[0])).unwrap();
    let public = UnparsedPublicKey::new(
        &RSA_PKCS1_2048_8192_SHA256,
        trusted.public_key().as_ref().to_vec(),
    );
    let text = format!(
        "{}\n{}\n{}\n",
        req.header("wm_consumer.id"),
        req.header("wm_consumer.intimestamp"),
        req.header("wm_sec.key_version")
    );
    let Ok(sig) =
        base64::engine::general_purpose::STANDARD.decode(req.header("wm_sec.auth_signature"))
    else {
        return false;
    };
    req.header("wm_consumer.id") == CONSUMER
        && req.header("wm_sec.key_version") == "1"
        && req.header("wm_consumer.intimestamp").parse::<i64>().is_ok()
        && public.verify(text.as_bytes(), &sig).is_ok()
}

/// The snapshot API: snapshot n serves `report-rows-n.jsonl` and is done on its third poll.
async fn server(fault: impl Fn(&Req, usize) -> Option<Reply> + Send + Sync + 'static) -> Server {
    let calls = AtomicUsize::new(0);
    let polls: Mutex<BTreeMap<String, usize>> = Mutex::default();
    let created = AtomicUsize::new(0);
    let fault: Arc<Fault> = Arc::new(fault);
    Server::start(move |req| {
        if let Some(reply) = fault(req, calls.fetch_add(1, Ordering::SeqCst)) {
            return reply;
        }
        let host = req.header("host").to_string();
        if let Some(file) = req.path.strip_prefix("/download/") {
            assert_eq!(req.header("authorization"), "", "no token to the file URL");
            assert_eq!(req.header("wm_sec.auth_signature"), "");
            let n = file
                .trim_start_matches("snap-")
                .trim_end_matches(".jsonl.gz");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&fixture(C, &format!("report-rows-{n}.jsonl")))
                .unwrap();
            return Reply {
                status: 200,
                headers: vec![("content-type", "application/octet-stream".into())],
                body: gz.finish().unwrap(),
            };
        }
        if req.header("authorization") != format!("Bearer {TOKEN}") || !signed(req) {
            return Reply::status(401, fixture(C, "error-401.json"));
        }
        let answer = |name: &str, id: &str| {
            let details = format!("http://{host}/download/{id}.jsonl.gz");
            Reply::json(fixture_with(
                C,
                name,
                &[("snapshot", id), ("details", &details)],
            ))
        };
        if req.method.as_str() == "POST" && req.path == "/snapshot/report" {
            let n = created.fetch_add(1, Ordering::SeqCst) + 1;
            return answer("snapshot-created.json", &format!("snap-{n}"));
        }
        if req.path == "/snapshot" {
            assert_eq!(req.q("advertiserId"), ADVERTISER);
            let id = req.q("snapshotId").to_string();
            let mut polls = polls.lock().unwrap();
            let seen = polls.entry(id.clone()).or_default();
            *seen += 1;
            let name = match *seen {
                1 => "snapshot-pending.json",
                2 => "snapshot-processing.json",
                _ => "snapshot-done.json",
            };
            return answer(name, &id);
        }
        Reply::status(404, format!("no route {}", req.path))
    })
    .await
}

async fn rig(fault: impl Fn(&Req, usize) -> Option<Reply> + Send + Sync + 'static) -> Rig {
    Rig::new(server(fault).await)
}

fn keys_signed_by(t: &Rig, key: usize) -> WalmartConnectAdsKeys {
    // The first key as its bare base64 body (as Walmart's key tool prints it), the second
    // as PEM: both forms are read.
    let b64 = base64::engine::general_purpose::STANDARD.encode(der(&keys()[key]));
    let text = if key == 0 { b64 } else { keys()[key].clone() };
    WalmartConnectAdsKeys {
        advertiser_id: ADVERTISER.into(),
        consumer_id: t.secret("consumer_id", CONSUMER),
        private_key: t.secret("private_key", &text),
        key_version: "1".into(),
        access_token: t.secret("access_token", TOKEN),
        report_type: "campaign".into(),
        poll_interval: Duration::from_millis(10),
        poll_timeout: Duration::from_secs(5),
    }
}

fn connector(t: &Rig) -> PullConnector {
    WalmartConnectAds::build(t.ad_account(keys_signed_by(t, 0))).expect("valid config")
}

fn untrusted(t: &Rig) -> PullConnector {
    WalmartConnectAds::build(t.ad_account(keys_signed_by(t, 1))).expect("valid config")
}

#[tokio::test]
async fn snapshots_are_polled_downloaded_and_a_restated_day_comes_as_a_new_version() {
    let t = rig(|_, _| None).await;
    t.sync(connector).await;

    let first = ad_rows(&t.p.events());
    assert_eq!(first.len(), 4, "five rows, one malformed");
    let dl = t.p.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(
        dl[0].reason,
        "field `adSpend`: expected a decimal such as \"12.34\", got \"12,40\""
    );
    let (id, a) = &first[0];
    assert!(
        id.starts_with("walmart_connect_ads:600001:51001:2026-11-20:"),
        "{id}"
    );
    assert_eq!(
        (a.platform.as_str(), a.account_id.as_str()),
        (C, ADVERTISER)
    );
    assert_eq!(a.spend.amount.to_string(), "30");
    assert_eq!(a.attributed_sales.amount.to_string(), "120");
    assert_eq!(a.attributed_orders, 3);
    let e = &t.p.events()[0];
    assert_eq!(e.header.source_tz.0.name(), "America/Los_Angeles");
    assert_eq!(e.header.channel, kpiflow_schemas::Channel::Walmart);
    // Pacific midnight of Nov 20 is 08:00 UTC (PST, UTC-8): booked on the row's date.
    assert_eq!(
        e.header.event_time.to_rfc3339(),
        "2026-11-20T08:00:00+00:00"
    );

    let create = &t.server.requests_to("/snapshot/report")[0];
    let body: serde_json::Value = serde_json::from_slice(&create.body).unwrap();
    assert_eq!(body["advertiserId"], ADVERTISER);
    assert_eq!(body["reportType"], "campaign");
    assert_eq!(
        body["reportMetrics"],
        serde_json::json!([
            "date",
            "campaignId",
            "impressions",
            "clicks",
            "adSpend",
            "attributedOrders14days",
            "attributedSales14days"
        ])
    );
    let polls = t
        .server
        .requests_to("/snapshot")
        .iter()
        .filter(|r| r.q("snapshotId") == "snap-1")
        .count();
    assert_eq!(polls, 3, "polled pending, processing, done");

    // A restart syncs from the cursor, re-pulling the trailing days: the restated day
    // arrives as a version with a later as_of and its own id.
    t.restart(connector, C).await;
    let all = ad_rows(&t.p.events());
    assert_eq!(all.len(), 9, "4 rows, then all 5 of the second snapshot");
    let restated = all[4..]
        .iter()
        .find(|(_, a)| a.campaign_id == "51001" && a.date.to_string() == "2026-11-20")
        .unwrap();
    assert_ne!(restated.0, first[0].0, "each version has its own event id");
    assert!(restated.1.as_of > first[0].1.as_of);
    assert_eq!(restated.1.attributed_sales.amount.to_string(), "150");
    assert_eq!(restated.1.attributed_orders, 4);
    assert!(
        all[4..]
            .iter()
            .any(|(_, a)| a.campaign_id == "51002" && a.spend.amount.to_string() == "12.4"),
        "the row malformed in the first snapshot is read in the second"
    );
}

#[tokio::test]
async fn a_429_on_create_waits_and_a_5xx_while_polling_is_retried() {
    let t = rig(|req, _| {
        static LIMITED: AtomicUsize = AtomicUsize::new(0);
        static BROKEN: AtomicUsize = AtomicUsize::new(0);
        if req.path == "/snapshot/report" && LIMITED.fetch_add(1, Ordering::SeqCst) == 0 {
            return Some(Reply::status(429, fixture(C, "error-429.json")).with("retry-after", "1"));
        }
        if req.path == "/snapshot" && BROKEN.fetch_add(1, Ordering::SeqCst) == 0 {
            return Some(Reply::status(500, fixture(C, "error-500.json")));
        }
        None
    })
    .await;
    t.sync_waiting(connector, 1).await;
    assert_eq!(ad_rows(&t.p.events()).len(), 4);
    assert_eq!(t.server.requests_to("/snapshot/report").len(), 2);
    assert_eq!(t.waits_and_retries(C), (1, 2));
}

#[tokio::test]
async fn a_call_signed_with_another_key_is_refused_and_keeps_the_cursor() {
    let t = rig(|_, _| None).await;
    let mut c = untrusted(&t);
    let err = c.sync_once(&t.p).await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    assert!(ad_rows(&t.p.events()).is_empty());
    assert!(t.cursor(&c, C).await.is_none());
    // The trusted key gets through the same server.
    t.sync(connector).await;
    assert_eq!(ad_rows(&t.p.events()).len(), 4);
}

#[tokio::test]
async fn a_failed_snapshot_fails_the_sync_naming_it() {
    let t = rig(|req, _| {
        (req.path == "/snapshot").then(|| {
            Reply::json(fixture_with(
                C,
                "snapshot-failed.json",
                &[("snapshot", "snap-1")],
            ))
        })
    })
    .await;
    let mut c = connector(&t);
    let err = c.sync_once(&t.p).await.unwrap_err().to_string();
    assert!(
        err.contains("report snap-1 failed: Report generation failed"),
        "{err}"
    );
    assert!(t.cursor(&c, C).await.is_none());
}
