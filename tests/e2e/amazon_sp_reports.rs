//! `amazon_sp_reports` end to end: the connector syncs the fixture SP-API (the five report
//! documents under `ingest/fixtures/amazon_sp_reports/`) into a real broker, beside the
//! placements `amazon_sp_orders` would publish for the same orders, and the processor's
//! return rate, ODR and negative feedback rate, and its cross-checks against Amazon's own
//! figures, are the values worked out by hand below.
//!
//! By hand, from the fixtures (orders placed 2026-11-02 … 2026-11-05):
//! - units shipped by order date (FBA shipments report): 113-1000001 3 (1 + 2), 113-1000002 2
//!   → 5; units returned: FBA returns 1 (113-1000001) + 2 (113-1000002), the third row's order
//!   unknown (dead-lettered), merchant returns 1 (113-2000001) → 4. Return rate 4 / 5.
//! - negative feedback (1-2 stars): 113-2000001 (1 star), 113-2000002 (2 stars); 5 stars and
//!   the malformed rating count nothing → 2 defective orders of 4 placed: ODR 2 / 4, negative
//!   feedback rate 2 / 4.
//! - valid tracking rate: both shipments are FBA, outside its seller-fulfilled scope → no
//!   value for the shop.
//! - Amazon's figures (`seller-performance.json`): ODR over 2026-09-23 … 2026-11-21 (every
//!   order above) AFN 1 / 3 and MFN 0 / 1 → (1 + 0) / (3 + 1) = 0.25 against kpiflow's
//!   2 / 4 = 0.5: `order_defect_rate_vs_amazon` = 0.5 − 0.25 = 0.25, beyond the 0.005
//!   tolerance → the cross-check rule fires. Pre-fulfilment cancel over 2026-11-01 … 11-07:
//!   Amazon 0 (0 / 1); kpiflow's cancellation rate 0 / 1 (113-2000001, the one merchant
//!   order, not cancelled) → 0, within tolerance: no breach. Valid tracking: Amazon 0 / 0,
//!   kpiflow no value → a row without value, no breach. On-time delivery has no rate in the
//!   fixture (dead-lettered by the connector).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kpiflow_core::{ComponentMetrics, KafkaConfig};
use kpiflow_ingest::Publish;
use kpiflow_ingest::connectors::amazon_sp_reports::{
    AmazonReports, AmazonReportsConfig, OperationRates, ReportKind,
};
use kpiflow_ingest::publish::KafkaPublisher;
use kpiflow_ingest::pull::{PullSettings, RateLimit};
use kpiflow_processor::ProcessorConfig;
use kpiflow_schemas::{Decimal, KpiUpdate, Topic};
use tokio_util::sync::CancellationToken;

use super::amazon_sp_reports_api::{ORDERS, server};
use super::by_hand;
use super::fixture::{lwa, pull_settings};
use super::{bootstrap, read_all, wait_until_consumed};

const SHOP: &str = "shop-amz-reports";

/// Units per fixture order as the FBA shipments report ships them; the merchant orders' 1.
fn units(id: &str) -> u32 {
    match id {
        "113-1000001-0000001" => 3,
        "113-1000002-0000002" => 2,
        _ => 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amazon_reports_through_the_broker_give_return_rate_odr_and_negative_feedback_by_hand() {
    let prefix = format!("e2e-amzrep-{}", uuid::Uuid::new_v4().simple());
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap(),
        topic_prefix: prefix.clone(),
        partitions: 1,
        ..KafkaConfig::default()
    };
    let publisher = KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.test")).unwrap();
    publisher.ensure_topics().await.unwrap();
    for (id, at, channel) in ORDERS {
        publisher
            .publish(&by_hand::amazon_placed(SHOP, id, at, channel, units(id)))
            .await
            .unwrap();
    }

    let api = server(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let fast = RateLimit {
        rate: 1000.0,
        burst: 1000,
    };
    let cfg = AmazonReportsConfig {
        shop: SHOP.into(),
        marketplace: "ATVPDKIKX0DER".into(),
        reports: ReportKind::ALL.to_vec(),
        time_zone: "America/Los_Angeles".into(),
        poll_interval: Duration::from_millis(10),
        poll_timeout: Duration::from_secs(5),
        rate_limits: OperationRates {
            create_report: fast,
            get_report: fast,
            get_report_document: fast,
            get_order: fast,
        },
        pull: PullSettings {
            max_window: Some(Duration::from_secs(31 * 24 * 3600)),
            ..pull_settings(&api, &dir.path().join("cursors"))
        },
        auth: lwa(&api, dir.path()),
    };
    let report = AmazonReports::build(cfg)
        .unwrap()
        .sync_once(&publisher)
        .await
        .expect("sync delivered");
    // The four fact reports' 7 and 3, plus 5 reference values and the rate-less one.
    assert_eq!(
        (report.counts.published, report.counts.dead_lettered),
        (12, 4)
    );

    let state = tempfile::tempdir().unwrap();
    let processor = ProcessorConfig {
        group_id: format!("{prefix}-processor"),
        checkpoint: kpiflow_processor::config::CheckpointConfig {
            dir: state.path().into(),
            ..Default::default()
        },
        idle_timeout: Duration::from_millis(500),
        flush_interval: Duration::from_millis(200),
        kpis: [
            "return_rate",
            "order_defect_rate",
            "negative_feedback_rate",
            "valid_tracking_rate",
        ]
        .map(String::from)
        .to_vec(),
        crosscheck_rules: vec![
            toml::from_str(
                r#"id = "amazon_figures_differ"
                   kpis = ["order_defect_rate", "cancellation_rate", "valid_tracking_rate"]"#,
            )
            .unwrap(),
        ],
        ..ProcessorConfig::default()
    };
    let stop = CancellationToken::new();
    let (k, p, s) = (kafka.clone(), processor.clone(), stop.clone());
    let task = tokio::spawn(async move { kpiflow_processor::run::run(&k, &p, None, s).await });
    let topics = kafka.topics();
    let inputs: Vec<String> = Topic::EVENTS.iter().map(|t| topics.name(*t)).collect();
    wait_until_consumed(
        &kafka,
        &processor.group_id,
        &inputs,
        Duration::from_secs(60),
    )
    .await;

    // The newest revision per (KPI, window), once every expected window is there (the last
    // windows are published when the partition sits idle).
    let placed_from: DateTime<Utc> = "2026-11-02T17:03:00Z".parse().unwrap();
    let placed_to: DateTime<Utc> = "2026-11-05T06:45:00Z".parse().unwrap();
    let covering = |u: &KpiUpdate| u.window.start <= placed_from && u.window.end > placed_to;
    // Cross-check rows: (KPI, numerator = kpiflow's rate minus Amazon's, value).
    let checks: [(&str, &str, Option<f64>); 3] = [
        ("order_defect_rate_vs_amazon", "0.25", Some(0.25)),
        ("cancellation_rate_vs_amazon", "0", Some(0.0)),
        ("valid_tracking_rate_vs_amazon", "0", None),
    ];
    let want: [(&str, &str, i64, i64); 6] = [
        ("return_rate", "rolling_30d", 4, 5),
        ("return_rate", "rolling_60d", 4, 5),
        ("order_defect_rate", "rolling_30d", 2, 4),
        ("order_defect_rate", "rolling_60d", 2, 4),
        ("negative_feedback_rate", "rolling_30d", 2, 4),
        ("negative_feedback_rate", "rolling_60d", 2, 4),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let latest = loop {
        let mut latest: BTreeMap<String, KpiUpdate> = BTreeMap::new();
        for raw in tokio::task::block_in_place(|| read_all(&kafka, Topic::KpiUpdates)) {
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
        let checked = checks.iter().all(|(kpi, n, v)| {
            latest.values().any(|u| {
                u.kpi == *kpi && u.numerator == Decimal::parse(n).unwrap() && u.value == *v
            })
        });
        if (there && checked) || tokio::time::Instant::now() > deadline {
            break latest;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(
        stats.received,
        4 + 7 + 5 + 1,
        "placements, the connector's facts and reference values, its heartbeat (one sync)"
    );
    assert_eq!(stats.dead_lettered, 0, "nothing late, nothing refused");

    for (kpi, window, n, d) in want {
        let rows: Vec<&KpiUpdate> = latest
            .values()
            .filter(|u| u.kpi == kpi && u.window.name == window && covering(u))
            .collect();
        assert!(
            !rows.is_empty(),
            "{kpi} {window}: no window holds every order"
        );
        for u in rows {
            assert_eq!(u.scope.shop, SHOP);
            assert_eq!(
                (u.numerator, u.denominator),
                (Decimal::from_i64(n), Some(Decimal::from_i64(d))),
                "{kpi} {window} from {} to {}",
                u.window.start,
                u.window.end
            );
        }
    }
    // Rolling windows over the shop's data are published for every KPI of the shop, so valid
    // tracking has rows: none with a value (0 / 0).
    assert!(
        latest
            .values()
            .filter(|u| u.kpi == "valid_tracking_rate")
            .all(|u| u.value.is_none() && u.numerator == Decimal::ZERO),
        "FBA shipments are outside valid tracking's seller-fulfilled scope"
    );
    for (kpi, n, v) in checks {
        let rows: Vec<&KpiUpdate> = latest.values().filter(|u| u.kpi == kpi).collect();
        assert_eq!(rows.len(), 1, "{kpi}: one row per Amazon range");
        let u = rows[0];
        assert_eq!(
            (u.numerator, u.denominator, u.value),
            (Decimal::parse(n).unwrap(), None, v),
            "{kpi}"
        );
        assert_eq!(u.window.name, "amazon_reporting_range");
        assert_eq!(u.scope.shop, SHOP);
    }
    let odr = latest
        .values()
        .find(|u| u.kpi == "order_defect_rate_vs_amazon")
        .unwrap();
    // 2026-09-23 is a PDT day (07:00 UTC); the day after 2026-11-21 a PST one (08:00 UTC).
    assert_eq!(
        odr.window.start,
        "2026-09-23T07:00:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    assert_eq!(
        odr.window.end,
        "2026-11-22T08:00:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    // The rule fired for the ODR, and for nothing else.
    let breaches: Vec<kpiflow_schemas::BreachEvent> =
        tokio::task::block_in_place(|| read_all(&kafka, Topic::Breaches))
            .iter()
            .map(|raw| kpiflow_schemas::BreachEvent::from_json(raw).unwrap())
            .collect();
    let fired: Vec<(&str, &str, kpiflow_schemas::BreachState)> = breaches
        .iter()
        .map(|b| (b.rule.as_str(), b.kpi.as_str(), b.state))
        .collect();
    assert_eq!(
        fired,
        [(
            "amazon_figures_differ",
            "order_defect_rate_vs_amazon",
            kpiflow_schemas::BreachState::Firing
        )]
    );
    assert_eq!(breaches[0].rule_kind, kpiflow_schemas::RuleKind::CrossCheck);
    assert_eq!(breaches[0].baseline, Some(0.25), "Amazon's rate");
}
