//! The sink writing its tables to S3 (the local test server `deploy/local/s3.sh`): every row
//! lands in a `date=…` object, SQL reads them back from the bucket, a restart writes
//! nothing twice, and the open breaches are rebuilt from the bucket.

use std::time::Duration;

use futures::TryStreamExt;
use kpiflow_schemas::{BreachEvent, KpiUpdate, Topic};
use kpiflow_sink::{LiveView, SinkConfig, TableStore};
use object_store::ObjectStoreExt;

use crate::{await_committed, publish_restatement, read, start_sink, topics_with_fixtures};

/// Every object key under `relative` in the bucket.
async fn keys_under(bucket: &kpiflow_core::storage::Bucket, relative: &str) -> Vec<String> {
    bucket
        .store()
        .list(Some(&bucket.key(relative)))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_in_object_storage_are_written_once_and_queryable() {
    let Some((dir, object_store)) = kpiflow_core::storage::test_location("sink") else {
        return;
    };
    let (id, kafka, kpis, breaches) = topics_with_fixtures("sinks3").await;
    let topics = kafka.topics();
    let inputs = [topics.name(Topic::KpiUpdates), topics.name(Topic::Breaches)];

    let cfg = SinkConfig {
        dir: dir.clone(),
        object_store: object_store.clone(),
        group_id: format!("sinks3-{id}"),
        roll_interval: Duration::from_millis(200),
        ..SinkConfig::default()
    };
    let tables = TableStore::open(&cfg.dir, &cfg.object_store).unwrap();
    let live = LiveView::new();
    let (shutdown, task) = start_sink(&kafka, &cfg, &live);
    await_committed(&kafka, &cfg.group_id, &inputs).await;
    shutdown.cancel();
    let stats = task.await.unwrap();
    assert_eq!(stats.kpi_rows as usize, kpis.len());

    // Committed offsets imply the objects: all rows read back from the bucket, exactly.
    let back: Vec<KpiUpdate> =
        read(&tables, "SELECT * FROM kpi_values ORDER BY key, revision").await;
    let mut expected = kpis.clone();
    expected.sort_by_key(|k| (k.key(), k.revision));
    assert_eq!(back, expected);
    let back: Vec<BreachEvent> = read(&tables, "SELECT * FROM breaches ORDER BY at").await;
    let mut expected = breaches.clone();
    expected.sort_by_key(|b| b.at);
    assert_eq!(back, expected);

    // Hive layout under the prefix, whole Parquet objects only (no temporary names).
    let TableStore::Bucket(bucket) = &tables else {
        panic!("{dir} opened as a folder");
    };
    let objects = keys_under(bucket, "").await;
    let prefix = format!("{}/", bucket.key(""));
    let relative: Vec<&str> = objects
        .iter()
        .map(|o| o.strip_prefix(&prefix).unwrap())
        .collect();
    assert!(
        relative
            .iter()
            .all(|o| o.ends_with(".parquet") && !o.contains(".tmp")),
        "{relative:#?}"
    );
    for k in &kpis {
        let folder = format!("kpi_values/date={}/", k.window.start.date_naive());
        assert!(
            relative.iter().any(|o| o.starts_with(&folder)),
            "{folder} in {relative:#?}"
        );
    }

    // A restart resumes after the committed offsets: one new row, nothing written twice.
    let newer = publish_restatement(&kafka, &kpis[1]).await;
    let (shutdown, task) = start_sink(&kafka, &cfg, &live);
    await_committed(&kafka, &cfg.group_id, &inputs).await;
    shutdown.cancel();
    let stats = task.await.unwrap();
    assert_eq!((stats.received, stats.kpi_rows), (1, 1));
    // The files themselves: `kpi_values` would hide a row written twice.
    let all: Vec<KpiUpdate> = read(&tables, "SELECT * FROM kpi_values_raw").await;
    assert_eq!(all.len(), kpis.len() + 1);
    let latest: Vec<KpiUpdate> = read(
        &tables,
        &format!("SELECT * FROM kpi_latest WHERE key = '{}'", newer.key()),
    )
    .await;
    assert_eq!(latest, vec![newer]);

    // Compaction in the bucket: one object per partition, the same rows.
    let stats = kpiflow_sink::parquet::compact::compact(
        &tables,
        Duration::ZERO,
        kpiflow_sink::Compression::Zstd,
    )
    .await
    .unwrap();
    assert!(
        stats.files_in > stats.files_out && stats.files_out > 0,
        "{stats:?}"
    );
    let compacted: Vec<KpiUpdate> = read(&tables, "SELECT * FROM kpi_values").await;
    let sorted = |mut v: Vec<KpiUpdate>| {
        v.sort_by_key(|k| (k.key(), k.revision));
        v
    };
    assert_eq!(sorted(compacted), sorted(all));
    let objects = keys_under(bucket, "kpi_values").await;
    let mut folders: Vec<&str> = objects
        .iter()
        .filter_map(|o| o.rsplit_once('/'))
        .map(|(f, _)| f)
        .collect();
    folders.sort_unstable();
    let count = folders.len();
    folders.dedup();
    assert_eq!(
        count,
        folders.len(),
        "one object per partition: {objects:#?}"
    );

    // What a restarted sink rebuilds its open-breach gauges from: the bucket's breaches.
    let open = kpiflow_sink::query::open_breaches(&tables).await.unwrap();
    let open: Vec<&str> = open.iter().map(|b| b.rule.as_str()).collect();
    assert_eq!(open, vec!["stockout-above-5pct"]);
}

/// In a bucket too, a truncated object is named by its `s3://` URL and can be skipped.
#[tokio::test]
async fn an_unreadable_object_is_named_and_can_be_skipped() {
    let Some((dir, object_store)) = kpiflow_core::storage::test_location("sinkbad") else {
        return;
    };
    let tables = TableStore::open(&dir, &object_store).unwrap();
    let kpis = crate::fixtures(
        include_str!("../../fixtures/kpi_updates.jsonl"),
        KpiUpdate::from_json,
    );
    // Rows 0, 1 (late_shipment_rate revisions 1, 2) and 3 (gmv revision 3) are sound.
    let compression = kpiflow_sink::Compression::Zstd;
    tables.write(kpis[..2].to_vec(), compression).await.unwrap();
    tables
        .write(kpis[3..4].to_vec(), compression)
        .await
        .unwrap();
    // Row 2's file (late_shipment_rate, 2025-03-13) cut in half, as an interrupted copy.
    let good = tables
        .write(kpis[2..3].to_vec(), compression)
        .await
        .unwrap();
    let TableStore::Bucket(bucket) = &tables else {
        panic!("a bucket");
    };
    let relative = "kpi_values/date=2025-03-13/part-truncated.parquet";
    let whole = bucket.key(&format!(
        "kpi_values/date=2025-03-13/{}",
        good[0].path.file_name().unwrap().to_str().unwrap()
    ));
    let store = bucket.store();
    let bytes = store.get(&whole).await.unwrap().bytes().await.unwrap();
    store
        .put(&bucket.key(relative), bytes.slice(..bytes.len() / 2).into())
        .await
        .unwrap();
    store.delete(&whole).await.unwrap();
    let url = bucket.url(relative, false);
    let sql = "SELECT kpi, revision FROM kpi_values ORDER BY kpi, revision";

    let err = kpiflow_sink::query(&tables, sql).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read 1 Parquet file: {url} (")),
        "{err}"
    );
    let options = kpiflow_sink::QueryOptions {
        skip_unreadable: true,
    };
    let answer = kpiflow_sink::query_with(&tables, sql, options)
        .await
        .unwrap();
    // gmv 3; late_shipment_rate 1 and 2; revision 5 was in the truncated object.
    assert_eq!(
        kpiflow_sink::format_batches(&answer.batches, kpiflow_sink::OutputFormat::Csv).unwrap(),
        "kpi,revision\ngmv,3\nlate_shipment_rate,1\nlate_shipment_rate,2\n"
    );
    assert_eq!(answer.skipped.len(), 1);
    assert_eq!(answer.skipped[0].path, url);
}
