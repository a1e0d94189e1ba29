//! The cost-of-goods file connector as `kpiflow ingest` runs it, without Kafka: a file read on
//! start, edited while the connector polls (only the changed row comes again, later and under a
//! new id), read again after a restart (the same ids), in CSV and TOML; and its documented
//! example table builds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kpiflow_ingest::connectors::cogs_file::{CogsFile, CogsFileConfig, FileRead};
use kpiflow_ingest::{Connector, MemoryPublisher, StopReason};
use kpiflow_schemas::{Event, EventBody, Money};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/cogs_file")
        .join(name)
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Puts `text` at `path` modified at `mtime` as an editor saving atomically would: written
/// beside it, dated, renamed into place (so the connector never sees it half-written).
fn save(path: &Path, text: &str, mtime: &str) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(t(mtime).into())
        .unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config(path: &Path, poll_interval: &str) -> CogsFileConfig {
    let cfg = CogsFileConfig::from_value(&serde_json::json!({
        "path": path, "shop": "shop-003", "channel": "shopify",
        "time_zone": "America/New_York", "poll_interval": poll_interval,
    }))
    .expect("parses");
    cfg.validate().expect("valid");
    cfg
}

/// (id, event_time, SKU, landed cost) of each event.
fn summary(events: &[Event]) -> Vec<(String, String, String, String)> {
    events
        .iter()
        .map(|e| {
            let EventBody::CostChanged(c) = &e.body else {
                panic!("{e:?}")
            };
            (
                e.header.event_id.clone(),
                e.header.event_time.to_rfc3339(),
                e.header.sku.clone().unwrap(),
                c.landed().to_string(),
            )
        })
        .collect()
}

fn row(id: &str, time: &str, sku: &str, landed: &str) -> (String, String, String, String) {
    (id.into(), time.into(), sku.into(), landed.into())
}

/// Waits (at most 30 s) for a read of version `version`.
async fn read_of(reads: &mut watch::Receiver<Option<FileRead>>, version: &str) -> FileRead {
    let want = t(version);
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        reads.wait_for(|r| r.as_ref().is_some_and(|r| r.version == want)),
    )
    .await
    .unwrap_or_else(|_| panic!("no read of the version of {version} within 30 s"))
    .expect("the connector is alive");
    r.clone().unwrap()
}

#[tokio::test]
async fn an_edited_row_is_republished_later_under_a_new_id_and_the_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("costs.csv");
    let original = std::fs::read_to_string(fixture("costs.csv")).unwrap();
    save(&path, &original, "2026-10-28T09:00:00Z");
    let mut connector = CogsFile::new(config(&path, "100ms")).unwrap();
    let mut reads = connector.reads();
    let publisher = MemoryPublisher::new();
    let stop = CancellationToken::new();

    let editor = async {
        let first = read_of(&mut reads, "2026-10-28T09:00:00Z").await;
        assert_eq!(
            (first.published, first.unchanged, first.dead_letters),
            (4, 0, 0)
        );
        assert_eq!(
            summary(&publisher.events()),
            [
                row(
                    "cogs_file:shop-003:MUG-SAND-12OZ:2026-11-01:2026-10-28T09:00:00Z",
                    "2026-10-28T09:00:00+00:00",
                    "MUG-SAND-12OZ",
                    "8.00"
                ),
                row(
                    "cogs_file:shop-003:MUG-SLATE-12OZ:2026-11-01:2026-10-28T09:00:00Z",
                    "2026-10-28T09:00:00+00:00",
                    "MUG-SLATE-12OZ",
                    "8.00"
                ),
                row(
                    "cogs_file:shop-003:TEE-BLK-M:2026-10-15:2026-10-28T09:00:00Z",
                    "2026-10-28T09:00:00+00:00",
                    "TEE-BLK-M",
                    "4.70"
                ),
                row(
                    "cogs_file:shop-003:TEE-BLK-M:2026-12-01:2026-10-28T09:00:00Z",
                    "2026-10-28T09:00:00+00:00",
                    "TEE-BLK-M",
                    "4.95"
                ),
            ]
        );

        // The seller raises one purchase price.
        let edited = original.replace(
            "MUG-SLATE-12OZ,2026-11-01,6.40,",
            "MUG-SLATE-12OZ,2026-11-01,6.90,",
        );
        assert_ne!(edited, original);
        save(&path, &edited, "2026-10-29T10:30:00Z");
        let second = read_of(&mut reads, "2026-10-29T10:30:00Z").await;
        assert_eq!(
            (second.published, second.unchanged, second.dead_letters),
            (1, 3, 0)
        );
        let events = publisher.events();
        assert_eq!(
            summary(&events[4..]),
            [row(
                "cogs_file:shop-003:MUG-SLATE-12OZ:2026-11-01:2026-10-29T10:30:00Z",
                "2026-10-29T10:30:00+00:00",
                "MUG-SLATE-12OZ",
                "8.50"
            )]
        );
        let EventBody::CostChanged(c) = &events[4].body else {
            panic!()
        };
        assert_eq!(c.purchase, Money::usd("6.90"));
        assert_eq!(events[4].header.source_tz.0.name(), "America/New_York");

        // Saved again without a change: read, nothing published.
        save(&path, &edited, "2026-10-30T08:00:00Z");
        let third = read_of(&mut reads, "2026-10-30T08:00:00Z").await;
        assert_eq!(
            (third.published, third.unchanged, third.dead_letters),
            (0, 4, 0)
        );
        assert_eq!(publisher.events().len(), 5);
        stop.cancel();
    };
    let (run, ()) = tokio::join!(connector.run(&publisher, stop.clone()), editor);
    let stats = run.unwrap();
    assert_eq!(
        (stats.published, stats.dead_lettered, stats.stop),
        (5, 0, StopReason::Shutdown)
    );
    assert!(publisher.dead_letters().is_empty());

    // A restart reads the edited file again: every row, each under the id and time it had.
    let mut restarted = CogsFile::new(config(&path, "0s")).unwrap();
    let again = MemoryPublisher::new();
    let stats = restarted
        .run(&again, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(stats.stop, StopReason::Exhausted);
    let ids: Vec<String> = summary(&again.events())
        .into_iter()
        .map(|(id, ..)| id)
        .collect();
    assert_eq!(
        ids,
        [
            "cogs_file:shop-003:MUG-SAND-12OZ:2026-11-01:2026-10-30T08:00:00Z",
            "cogs_file:shop-003:MUG-SLATE-12OZ:2026-11-01:2026-10-30T08:00:00Z",
            "cogs_file:shop-003:TEE-BLK-M:2026-10-15:2026-10-30T08:00:00Z",
            "cogs_file:shop-003:TEE-BLK-M:2026-12-01:2026-10-30T08:00:00Z",
        ],
        "the file's last modification time versions every row after a restart"
    );
    let mut once_more = CogsFile::new(config(&path, "0s")).unwrap();
    let third = MemoryPublisher::new();
    once_more
        .run(&third, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        summary(&third.events()),
        summary(&again.events()),
        "an unchanged file gives the same ids and times"
    );
}

#[tokio::test]
async fn the_toml_sample_gives_the_events_of_the_csv_sample() {
    let dir = tempfile::tempdir().unwrap();
    let mut published = Vec::new();
    for name in ["costs.csv", "costs.toml"] {
        let path = dir.path().join(name);
        save(
            &path,
            &std::fs::read_to_string(fixture(name)).unwrap(),
            "2026-10-28T09:00:00Z",
        );
        // Through the registry, as `kpiflow ingest` builds it.
        let mut c = kpiflow_ingest::connector::build(
            "cogs_file",
            serde_json::json!({"path": path, "shop": "shop-003", "channel": "shopify",
                               "poll_interval": "0s"}),
        )
        .unwrap();
        let p = MemoryPublisher::new();
        let stats = c.run(&p, CancellationToken::new()).await.unwrap();
        assert_eq!((stats.published, stats.dead_lettered), (4, 0), "{name}");
        published.push(p.events());
    }
    let strip = |events: &[Event]| -> Vec<Event> {
        events
            .iter()
            .cloned()
            .map(|mut e| {
                e.header.ingest_time = t("2026-10-28T09:00:00Z");
                e
            })
            .collect()
    };
    assert_eq!(strip(&published[0]), strip(&published[1]));
    assert_eq!(published[0][0].header.marketplace, "US");
}

#[tokio::test]
async fn bad_rows_are_dead_lettered_and_the_good_ones_published() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("costs_bad_rows.csv");
    save(
        &path,
        &std::fs::read_to_string(fixture("costs_bad_rows.csv")).unwrap(),
        "2026-10-28T09:00:00Z",
    );
    let mut c = CogsFile::new(config(&path, "0s")).unwrap();
    let p = MemoryPublisher::new();
    let stats = c.run(&p, CancellationToken::new()).await.unwrap();
    assert_eq!((stats.published, stats.dead_lettered), (2, 5));
    let skus: Vec<String> = summary(&p.events())
        .into_iter()
        .map(|(_, _, sku, landed)| format!("{sku} {landed}"))
        .collect();
    assert_eq!(skus, ["MUG-SAND-12OZ 8.00", "TEE-BLK-L 4.95"]);
    let dls = p.dead_letters();
    let reasons: Vec<(&str, &str)> = dls
        .iter()
        .map(|d| (d.reason_kind.as_str(), d.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "invalid",
                "file costs_bad_rows.csv, line 3, column `effective_from` = \"01/11/2026\": expected a date YYYY-MM-DD such as \"2026-11-01\""
            ),
            (
                "invalid",
                "file costs_bad_rows.csv, line 4, column `sku` = \"\": must not be empty: a cost is the cost of one SKU"
            ),
            (
                "invalid",
                "file costs_bad_rows.csv, line 5, column `purchase` = \"-4.10\": must not be negative"
            ),
            (
                "invalid",
                "file costs_bad_rows.csv, line 7, column `currency` = \"usd\": expected an ISO 4217 code of three upper-case letters such as \"USD\""
            ),
            (
                "duplicate",
                "file costs_bad_rows.csv, line 6: sku \"MUG-SAND-12OZ\" effective_from 2026-11-01 repeats line 2; the first is kept"
            ),
        ]
    );
    assert!(dls.iter().all(|d| d.stage == "ingest.cogs_file"));
    assert_eq!(
        dls[2].payload,
        "sku,effective_from,purchase,freight,duties,currency\nTEE-BLK-M,2026-10-15,-4.10,0.60,,\n",
        "the raw row, under its header"
    );
}

/// The `[[connectors.cogs_file]]` example of deploy/config/kpiflow.toml, uncommented, builds
/// and shows the defaults, so the documentation cannot drift from the code.
#[test]
fn the_documented_example_table_builds_and_shows_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config/kpiflow.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text
        .find("# ─── Cost of goods file")
        .expect("the cost file part");
    let end = text
        .find("# ─── Shopify and 3PL connectors")
        .expect("the part after it");
    let toml: String = text[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.starts_with('[')
                || l.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                })
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let v: toml::Value = toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let v = serde_json::to_value(v).unwrap();
    let tables = v["connectors"]["cogs_file"].as_array().expect("one table");
    assert_eq!(tables.len(), 1);
    let built = kpiflow_ingest::connector::build("cogs_file", tables[0].clone()).unwrap();
    assert_eq!(built.name(), "cogs_file");
    let documented = CogsFileConfig::from_value(&tables[0]).unwrap();
    let mut defaults = tables[0].clone();
    let keys = defaults.as_object_mut().unwrap();
    for k in ["marketplace", "currency", "time_zone", "poll_interval"] {
        assert!(keys.remove(k).is_some(), "{k} is documented");
    }
    let defaulted = CogsFileConfig::from_value(&defaults).unwrap();
    assert_eq!(
        documented,
        CogsFileConfig {
            marketplace: Some(defaulted.marketplace()),
            ..defaulted
        },
        "the example shows the defaults"
    );
}
