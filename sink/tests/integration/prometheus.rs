//! A real Prometheus scrapes the sink's `/metrics`, with deploy/'s recording and alert rules.

use std::time::Duration;

use kpiflow_core::KafkaConfig;
use kpiflow_core::metrics::{self, Readiness};
use kpiflow_schemas::{Decimal, KpiUpdate, Topic};
use kpiflow_sink::SinkConfig;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::daemons::{self, await_some};
use crate::{DEADLINE, await_committed, bootstrap, fixtures, produce};

/// The project's rules, loaded by the test's Prometheus as they are deployed.
const RULES: &str = include_str!("../../../deploy/prometheus/rules.yml");
/// A window name of this test's own: the registry is shared with the other tests.
const WINDOW: &str = "prom_test_24h";

/// The first sample of an instant query's result, if any.
async fn instant(prom: &daemons::Daemon, query: String) -> Option<f64> {
    let r = reqwest::Client::new()
        .get(prom.url("/api/v1/query"))
        .query(&[("query", query.as_str())])
        .send()
        .await
        .ok()?;
    let body: Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
    body["data"]["result"].as_array()?.first()?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

fn update(shop: &str, numerator: &str, denominator: &str, sku: Option<&str>) -> KpiUpdate {
    let mut u = fixtures(
        include_str!("../../fixtures/kpi_updates.jsonl"),
        KpiUpdate::from_json,
    )
    .remove(1);
    u.window.name = WINDOW.into();
    u.scope.shop = shop.into();
    u.scope.sku = sku.map(str::to_string);
    let (n, d) = (
        Decimal::parse(numerator).unwrap(),
        Decimal::parse(denominator).unwrap(),
    );
    u.value = Some(n.to_f64() / d.to_f64());
    u.numerator = n;
    u.denominator = Some(d);
    u
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_kpi_values_and_evaluates_the_recording_rules() {
    if daemons::binary("prometheus", "prometheus").is_none() {
        return;
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap(),
        topic_prefix: format!("promtest-{id}"),
        ..KafkaConfig::default()
    };
    kafka.ensure_topics().await.unwrap();
    // Two Amazon shops, and one SKU-level value the default guard keeps off /metrics.
    let updates = [
        update("shop-a", "4", "125", None),
        update("shop-b", "6", "75", None),
        update("shop-a", "1", "2", Some("SKU-1")),
    ];
    for u in &updates {
        produce(
            &kafka,
            Topic::KpiUpdates,
            &u.key(),
            &serde_json::to_vec(u).unwrap(),
        )
        .await;
    }

    let dir = tempfile::tempdir().unwrap();
    let cfg = SinkConfig {
        dir: dir.path().into(),
        group_id: format!("promtest-{id}"),
        roll_interval: Duration::from_millis(200),
        ..SinkConfig::default()
    };
    let stop = CancellationToken::new();
    let readiness = Readiness::default();
    let ready = readiness.part("sink");
    let (addr, http) = metrics::serve(([127, 0, 0, 1], 0).into(), readiness.clone(), stop.clone())
        .await
        .unwrap();
    let (k, c, s) = (kafka.clone(), cfg.clone(), stop.clone());
    let sink = tokio::spawn(async move {
        kpiflow_sink::run(&k, &c, None, None, Some(ready), s)
            .await
            .unwrap()
    });
    await_committed(
        &kafka,
        &cfg.group_id,
        &[kafka.topics().name(Topic::KpiUpdates)],
    )
    .await;
    let readyz = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 200, "ready once the broker answered");

    let Some(prom) = daemons::prometheus(addr, Some(RULES)).await else {
        return;
    };
    let value = await_some(
        "shop-a's late shipment rate in Prometheus",
        DEADLINE,
        || {
            instant(
                &prom,
                format!(r#"kpiflow_kpi_value{{window="{WINDOW}",shop="shop-a"}}"#),
            )
        },
        || prom.log(),
    )
    .await;
    assert_eq!(value, 0.032);
    let denominator = instant(
        &prom,
        format!(r#"kpiflow_kpi_denominator{{window="{WINDOW}",shop="shop-b"}}"#),
    )
    .await;
    assert_eq!(denominator, Some(75.0));
    // The recording rule divides sums (10 / 200), not the average of the two ratios.
    let by_channel = await_some(
        "the channel ratio recording rule",
        DEADLINE,
        || {
            instant(
                &prom,
                format!(
                    r#"kpiflow:kpi_ratio:by_channel{{window="{WINDOW}",kpi="late_shipment_rate",channel="amazon"}}"#
                ),
            )
        },
        || prom.log(),
    )
    .await;
    assert!((by_channel - 0.05).abs() < 1e-12, "{by_channel}");
    let sku_series = instant(
        &prom,
        format!(r#"count(kpiflow_kpi_value{{window="{WINDOW}",sku!=""}})"#),
    )
    .await;
    assert_eq!(sku_series, None, "SKU series stay off by default");
    let cut = instant(
        &prom,
        r#"kpiflow_kpi_series_cut_total{reason="sku"}"#.into(),
    )
    .await;
    assert!(cut.is_some_and(|n| n >= 1.0), "{cut:?}");

    stop.cancel();
    sink.await.unwrap();
    http.await.unwrap();
}
