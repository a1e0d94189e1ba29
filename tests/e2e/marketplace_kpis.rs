//! What the marketplace connectors' end-to-end tests share: the processor run over the
//! broker's events, and the hand-computed ratios it must publish.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kpiflow_core::KafkaConfig;
use kpiflow_processor::ProcessorConfig;
use kpiflow_processor::run::RunStats;
use kpiflow_schemas::{Decimal, KpiUpdate, Topic};
use tokio_util::sync::CancellationToken;

use super::{read_all, wait_until_consumed};

/// A ratio the processor must publish: KPI, window, numerator, denominator.
pub(crate) type Want = (&'static str, &'static str, i64, i64);

/// Runs the processor with `kpis` over what `kafka`'s topics hold until it consumed them,
/// waits (60 s at most) until every `want` is published for `shop` in a window covering all
/// of `[orders.0, orders.1]` (the placements), stops it, and checks that every such window of
/// each wanted KPI holds exactly that ratio. Returns the run's stats and the newest revision
/// per (KPI, window).
pub(crate) async fn processor_publishes(
    kafka: &KafkaConfig,
    prefix: &str,
    kpis: &[&str],
    shop: &str,
    orders: (DateTime<Utc>, DateTime<Utc>),
    want: &[Want],
) -> (RunStats, BTreeMap<String, KpiUpdate>) {
    let state = tempfile::tempdir().unwrap();
    let processor = ProcessorConfig {
        group_id: format!("{prefix}-processor"),
        checkpoint: kpiflow_processor::config::CheckpointConfig {
            dir: state.path().into(),
            ..Default::default()
        },
        idle_timeout: Duration::from_millis(500),
        flush_interval: Duration::from_millis(200),
        kpis: kpis.iter().map(|k| k.to_string()).collect(),
        ..ProcessorConfig::default()
    };
    let stop = CancellationToken::new();
    let (k, p, s) = (kafka.clone(), processor.clone(), stop.clone());
    let task = tokio::spawn(async move { kpiflow_processor::run::run(&k, &p, None, s).await });
    let topics = kafka.topics();
    let inputs: Vec<String> = Topic::EVENTS.iter().map(|t| topics.name(*t)).collect();
    wait_until_consumed(kafka, &processor.group_id, &inputs, Duration::from_secs(60)).await;

    // The newest revision per (KPI, window), once every expected window is there (the last
    // windows are published when the partition sits idle).
    let covering = |u: &KpiUpdate| u.window.start <= orders.0 && u.window.end > orders.1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let latest = loop {
        let mut latest: BTreeMap<String, KpiUpdate> = BTreeMap::new();
        for raw in tokio::task::block_in_place(|| read_all(kafka, Topic::KpiUpdates)) {
            let u = KpiUpdate::from_json(&raw).unwrap();
            if latest
                .get(&u.key())
                .is_none_or(|old| old.revision < u.revision)
            {
                latest.insert(u.key(), u);
            }
        }
        let there = want.iter().all(|(kpi, window, n, d)| {
            latest.values().any(|u| {
                u.kpi == *kpi
                    && u.window.name == *window
                    && covering(u)
                    && u.numerator == Decimal::from_i64(*n)
                    && u.denominator == Some(Decimal::from_i64(*d))
            })
        });
        if there || tokio::time::Instant::now() > deadline {
            break latest;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.cancel();
    let stats = task.await.unwrap().unwrap();

    for (kpi, window, n, d) in want {
        let rows: Vec<&KpiUpdate> = latest
            .values()
            .filter(|u| u.kpi == *kpi && u.window.name == *window && covering(u))
            .collect();
        assert!(
            !rows.is_empty(),
            "{kpi} {window}: no window holds every order"
        );
        for u in rows {
            assert_eq!(u.scope.shop, shop);
            assert_eq!(
                (u.numerator, u.denominator),
                (Decimal::from_i64(*n), Some(Decimal::from_i64(*d))),
                "{kpi} {window} from {} to {}",
                u.window.start,
                u.window.end
            );
        }
    }
    (stats, latest)
}
