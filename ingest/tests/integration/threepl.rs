//! The 3PL connector: CSV files from a drop folder (happy path, bad rows, a crash mid-file,
//! files still being written) and the signed JSON webhook, which yields the same event ids.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kpiflow_core::ComponentMetrics;
use kpiflow_ingest::connectors::threepl::{DropConfig, Threepl, ThreeplConfig};
use kpiflow_ingest::pull::secret::Secret;
use kpiflow_ingest::push::signature::sign;
use kpiflow_ingest::{KafkaPublisher, MemoryPublisher};
use kpiflow_schemas::{Event, EventBody, LocationKind, Milestone, Topic};
use tokio_util::sync::CancellationToken;

use super::push_http::post;

const SECRET: &str = "3pl-shared-secret";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/threepl")
        .join(name)
}

fn config(drop: Option<&Path>, webhook: bool) -> ThreeplConfig {
    let mut v = serde_json::json!({
        "shops": {
            "shop-003": { "channel": "shopify" },
            "shop-001": { "channel": "amazon", "marketplace": "ATVPDKIKX0DER",
                          "time_zone": "America/New_York" },
        },
    });
    if let Some(dir) = drop {
        v["drop"] =
            serde_json::json!({ "dir": dir, "poll_interval": "100ms", "settle_time": "0s" });
    }
    if webhook {
        v["webhook"] =
            serde_json::json!({ "listen": "127.0.0.1:0", "secret": "env:KPIFLOW_TEST_UNUSED" });
    }
    let cfg = ThreeplConfig::from_value(&v).expect("parses");
    cfg.validate().expect("valid");
    cfg
}

/// A drop folder holding copies of `files`.
fn inbox(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(fixture(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn csv_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.header.event_id.clone()).collect()
}

#[tokio::test]
async fn csv_files_are_published_then_moved_to_done() {
    let dir = inbox(&["shipments_20261103.csv", "stock_20261103.csv"]);
    let t = Threepl::new(config(Some(dir.path()), false)).unwrap();
    let folder = t.drop_folder().unwrap();
    folder.prepare().await.unwrap();
    let publisher = MemoryPublisher::new();
    let outcomes = folder.scan_once(&publisher).await.unwrap();
    assert_eq!(outcomes.len(), 2);
    assert_eq!((outcomes[0].events, outcomes[0].dead_letters), (6, 0));
    assert_eq!((outcomes[1].events, outcomes[1].dead_letters), (3, 0));
    assert!(
        publisher.flush_count() >= 2,
        "each file is flushed before it moves"
    );
    assert_eq!(
        csv_files(dir.path()),
        Vec::<String>::new(),
        "the inbox is empty"
    );
    assert_eq!(
        csv_files(&dir.path().join("done")),
        ["shipments_20261103.csv", "stock_20261103.csv"]
    );

    let events = publisher.events();
    assert!(publisher.dead_letters().is_empty());
    let handed = &events[2];
    assert_eq!(
        handed.header.event_id,
        "threepl-shop-003-ONT-3PL-1-SH-1001-handed_to_carrier-1793749200"
    );
    assert_eq!(
        handed.header.event_time.to_rfc3339(),
        "2026-11-03T23:40:00+00:00"
    );
    assert_eq!(handed.header.sku.as_deref(), Some("MUG-SAND-12OZ"));
    let EventBody::ShipmentMilestone(m) = &handed.body else {
        panic!("{handed:?}")
    };
    assert_eq!(m.milestone, Milestone::HandedToCarrier);
    assert_eq!(m.tracking_id.as_deref(), Some("9400111899223344556677"));
    assert_eq!(m.order_id.as_deref(), Some("5501234567890"));
    assert_eq!(m.units, 3);
    let nj = &events[4];
    assert_eq!(nj.header.shop, "shop-001");
    assert_eq!(nj.header.marketplace, "ATVPDKIKX0DER");
    assert_eq!(nj.header.source_tz.0.name(), "America/New_York");

    let EventBody::InventorySnapshot(s) = &events[8].body else {
        panic!()
    };
    assert_eq!(
        (s.sellable, s.inbound, s.reserved, s.unfulfillable),
        (1210, 0, 44, 0),
        "empty optional counts are 0"
    );
    assert_eq!(s.location, "NJ-3PL-2");
    assert_eq!(s.location_kind, LocationKind::ThirdParty);

    // Nothing left: a second scan does nothing.
    assert!(folder.scan_once(&publisher).await.unwrap().is_empty());
    assert_eq!(publisher.events().len(), 9);
    assert_eq!(t.stats().published, 9);
}

#[tokio::test]
async fn bad_rows_are_dead_lettered_with_file_line_column_and_value() {
    let dir = inbox(&["shipments_bad_rows.csv"]);
    std::fs::write(dir.path().join("orders_export.csv"), "a,b\n1,2\n").unwrap();
    let t = Threepl::new(config(Some(dir.path()), false)).unwrap();
    let folder = t.drop_folder().unwrap();
    folder.prepare().await.unwrap();
    let publisher = MemoryPublisher::new();
    folder.scan_once(&publisher).await.unwrap();

    // The unusable file goes to failed/, with one dead letter saying why.
    assert_eq!(csv_files(&dir.path().join("failed")), ["orders_export.csv"]);
    assert_eq!(
        csv_files(&dir.path().join("done")),
        ["shipments_bad_rows.csv"]
    );
    let dls = publisher.dead_letters();
    let reasons: Vec<&str> = dls.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(dls[0].reason_kind, "invalid_file");
    assert!(
        reasons[0].starts_with("file orders_export.csv: header [\"a\", \"b\"] names neither"),
        "{}",
        reasons[0]
    );
    assert_eq!(
        &reasons[1..],
        [
            "file shipments_bad_rows.csv, line 3, column `units` = \"three\": expected a whole number of units (0 or more)",
            "file shipments_bad_rows.csv, line 4, column `milestone` = \"lost_in_space\": expected one of received, packed, handed_to_carrier, in_transit, delivered, exception",
            "file shipments_bad_rows.csv, line 5, column `occurred_at` = \"04/11/2026 09:30\": expected an RFC 3339 time with offset such as \"2026-11-03T09:15:00-08:00\"",
            "file shipments_bad_rows.csv, line 6: 4 fields, but the header has 10",
        ]
    );
    assert_eq!(
        dls[1].payload,
        "shop,warehouse,shipment_id,order_id,milestone,occurred_at,carrier,tracking_id,units,sku\n\
         shop-003,ONT-3PL-1,SH-2002,5501234567896,packed,2026-11-04T08:30:00-08:00,,,three,MUG-SAND-12OZ\n",
        "the raw row, under its header"
    );
    // The good rows around the bad ones are published.
    let got = ids(&publisher.events());
    assert_eq!(got.len(), 2);
    assert!(
        got[0].contains("SH-2001") && got[1].contains("SH-2006"),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_file_interrupted_mid_way_is_read_again_with_the_same_ids() {
    let dir = inbox(&["shipments_20261103.csv"]);
    let t = Threepl::new(config(Some(dir.path()), false)).unwrap();
    let folder = t.drop_folder().unwrap();
    folder.prepare().await.unwrap();

    // Kafka fails after two records: the file must stay where it is.
    let broken = MemoryPublisher::failing_after(2);
    let err = folder.scan_once(&broken).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(csv_files(dir.path()), ["shipments_20261103.csv"]);
    assert!(csv_files(&dir.path().join("done")).is_empty());
    let first = ids(&broken.events());
    assert_eq!(first.len(), 2);

    // After the restart (a new watcher, a working publisher) the whole file is read again.
    let t = Threepl::new(config(Some(dir.path()), false)).unwrap();
    let publisher = MemoryPublisher::new();
    t.drop_folder()
        .unwrap()
        .scan_once(&publisher)
        .await
        .unwrap();
    let second = ids(&publisher.events());
    assert_eq!(second.len(), 6);
    assert_eq!(
        second[..2],
        first[..],
        "the same records give the same event ids"
    );
    assert_eq!(
        csv_files(&dir.path().join("done")),
        ["shipments_20261103.csv"]
    );
}

#[tokio::test]
async fn files_still_being_written_wait_for_the_settle_time() {
    let dir = inbox(&["stock_20261103.csv"]);
    let mut cfg = config(Some(dir.path()), false);
    cfg.drop = Some(DropConfig {
        settle_time: Duration::from_secs(3600),
        ..DropConfig::for_tests(dir.path().to_path_buf())
    });
    let t = Threepl::new(cfg).unwrap();
    let folder = t.drop_folder().unwrap();
    folder.prepare().await.unwrap();
    let publisher = MemoryPublisher::new();
    assert!(folder.scan_once(&publisher).await.unwrap().is_empty());
    assert!(publisher.events().is_empty());
    assert_eq!(csv_files(dir.path()), ["stock_20261103.csv"]);
}

#[tokio::test]
async fn the_webhook_checks_its_signature_and_maps_like_the_csv_path() {
    let t = Threepl::new(config(None, true)).unwrap();
    let receiver = t
        .bind_webhook_with_secret(Secret::new(SECRET))
        .await
        .unwrap()
        .expect("webhook configured");
    let addr = receiver.local_addr();
    let publisher = Arc::new(MemoryPublisher::new());
    let stop = CancellationToken::new();
    let p = publisher.clone();
    let s = stop.clone();
    let task = tokio::spawn(async move { receiver.serve(p.as_ref(), s).await });

    let body = std::fs::read(fixture("webhook_batch.json")).unwrap();
    let good = sign(&Secret::new(SECRET), &body);
    let wrong = sign(&Secret::new("not-the-secret"), &body);
    let path = "/webhooks/threepl";
    let resp = post(addr, path, &[], &body).await;
    assert_eq!(resp.status, 401, "{resp:?}");
    let resp = post(addr, path, &[("X-Threepl-Hmac-Sha256", &wrong)], &body).await;
    assert_eq!(resp.status, 401);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let resp = post(addr, path, &[("X-Threepl-Hmac-Sha256", &good)], &tampered).await;
    assert_eq!(resp.status, 401);
    assert!(publisher.events().is_empty());

    let headers = [
        ("X-Threepl-Hmac-Sha256", good.as_str()),
        ("X-Threepl-Delivery-Id", "d-1"),
    ];
    let resp = post(addr, path, &headers, &body).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let resp = post(addr, path, &headers, &body).await;
    assert_eq!(resp.status, 200, "a retry is acknowledged");
    let hooked = ids(&publisher.events());
    assert_eq!(hooked.len(), 3, "published once: {hooked:?}");
    let dls = publisher.dead_letters();
    assert_eq!(dls.len(), 1);
    assert_eq!(
        dls[0].reason,
        "3pl webhook: shipments[2], field `units` = {\"count\":1}: expected a string or a number"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    let stats = t.stats();
    assert_eq!(stats.duplicates, 1);
    assert_eq!(stats.rejected["signature_missing"], 1);
    assert_eq!(stats.rejected["signature_mismatch"], 2);

    // The same records from the CSV files carry the same event ids.
    let dir = inbox(&["shipments_20261103.csv", "stock_20261103.csv"]);
    let csv_publisher = MemoryPublisher::new();
    Threepl::new(config(Some(dir.path()), false))
        .unwrap()
        .drop_folder()
        .unwrap()
        .scan_once(&csv_publisher)
        .await
        .unwrap();
    let from_csv = ids(&csv_publisher.events());
    for id in &hooked {
        assert!(from_csv.contains(id), "{id} not among {from_csv:?}");
    }
}

/// The connector as the binary runs it, against a real broker: a file dropped into the folder
/// is in Kafka once it has moved to done/.
#[tokio::test]
async fn a_dropped_file_reaches_kafka() {
    let kafka = crate::kafka();
    kafka
        .wait_until_reachable(Duration::from_secs(30))
        .await
        .expect("broker reachable");
    let dir = tempfile::tempdir().unwrap();
    let mut connector = Threepl::new(config(Some(dir.path()), false)).unwrap();
    let publisher = KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.threepl")).unwrap();
    let stop = CancellationToken::new();
    let done = dir.path().join("done").join("stock_20261103.csv");
    let dropper = async {
        // Written under another name and renamed, as an SFTP upload finishing would.
        let tmp = dir.path().join("stock.partial");
        std::fs::copy(fixture("stock_20261103.csv"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.path().join("stock_20261103.csv")).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !done.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the file was not processed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
    };
    let (run, ()) = tokio::join!(
        kpiflow_ingest::Connector::run(&mut connector, &publisher, stop.clone()),
        dropper
    );
    let stats = run.unwrap();
    assert_eq!(stats.published, 3);
    // The three snapshots, and the heartbeat of each shop published when the connector started.
    let consumer = crate::consumer(&kafka, &[Topic::Logistics, Topic::Health]);
    let got = crate::read(&kafka, &consumer, 5).await;
    let mut skus = Vec::new();
    let mut beats = Vec::new();
    for (topic, key, payload) in &got {
        let e = Event::from_json(payload).unwrap();
        assert_eq!(&e.header.shop, key);
        match topic {
            Topic::Logistics => skus.push(e.header.sku.unwrap()),
            Topic::Health => beats.push(e.header.shop),
            other => panic!("{other:?}"),
        }
    }
    skus.sort();
    beats.sort();
    assert_eq!(skus, ["MUG-SAND-12OZ", "MUG-SLATE-12OZ", "TEE-BLK-M"]);
    assert_eq!(beats, ["shop-001", "shop-003"]);
}
