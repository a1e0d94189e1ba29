//! `amazon_sp_finances` end to end: the connector backfills November 2026 from the fixture
//! SP-API (the two financial-event pages under `ingest/fixtures/amazon_sp_finances/`) into a
//! real broker, beside the placements `amazon_sp_orders` would publish for the same orders, and
//! the processor's refund rate and ODR are the values worked out by hand below; the fee lines
//! it reads and ignores (no built-in KPI reads them yet) are neither refused nor dead-lettered.
//!
//! By hand, from the fixtures (4 orders placed 2026-11-02 … 2026-11-05, all Amazon, none WFS):
//! - refunds: 113-3000001 (page 1) and 113-3000003 (page 2); the refund of 113-9999999 is
//!   dead-lettered (getOrder does not know the order) → 2 refunded orders of 4: refund rate
//!   2 / 4 (Amazon's refund rate counts any refund of any order).
//! - defects: a chargeback on 113-3000001, posted twice (one id: counted once), an A-to-z claim
//!   on 113-3000002 → 2 defective orders of 4: ODR 2 / 4.
//! - published: 14 facts (1 service fee, 4 sale fees, 2 refunds with 2 fee lines each, 1
//!   claim, 2 chargebacks); dead-lettered: 2 (the malformed PostedDate, the unknown order).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kpiflow_core::{ComponentMetrics, KafkaConfig};
use kpiflow_ingest::connectors::amazon_sp_finances::{AmazonFinances, AmazonFinancesConfig};
use kpiflow_ingest::publish::KafkaPublisher;
use kpiflow_ingest::pull::{PullSettings, RateLimit};
use kpiflow_ingest::Publish;
use kpiflow_processor::ProcessorConfig;
use kpiflow_schemas::{
    Channel, Event, EventHeader, Fulfilment, KpiUpdate, Money, OrderPlaced, SourceTz, Topic,
};
use kpiflow_schemas::Decimal;
use tokio_util::sync::CancellationToken;

use super::amazon_sp_finances_api::{ORDERS, server};
use super::fixture::{lwa, pull_settings};
use super::{bootstrap, read_all, wait_until_consumed};

const SHOP: &str = "shop-amz-finances";

/// The `order.placed` `amazon_sp_orders` publishes for a fixture order.
fn placed(id: &str, at: &str, channel: &str) -> Event {
    let at: DateTime<Utc> = at.parse().unwrap();
    let header = EventHeader {
        event_id: format!("amazon:{id}:placed"),
        source: "amazon_sp_orders".into(),
        shop: SHOP.into(),
        channel: Channel::Amazon,
        marketplace: "ATVPDKIKX0DER".into(),
        sku: None,
        event_time: at,
        source_tz: SourceTz::US_PACIFIC,
        ingest_time: at,
    };
    let fulfilment = if channel == "AFN" {
        Fulfilment::Fba
    } else {
        Fulfilment::Merchant
    };
    Event::new(
        header,
        OrderPlaced {
            order_id: id.into(),
            total: Money {
                amount: kpiflow_schemas::Decimal::parse("29.98").unwrap(),
                currency: "USD".into(),
            },
            units: 1,
            fulfilment,
            ship_by: None,
            deliver_by: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amazon_finances_through_the_broker_give_refund_rate_and_odr_by_hand() {
    let prefix = format!("e2e-amzfin-{}", uuid::Uuid::new_v4().simple());
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap(),
        topic_prefix: prefix.clone(),
        partitions: 1,
        ..KafkaConfig::default()
    };
    let publisher = KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.test")).unwrap();
    publisher.ensure_topics().await.unwrap();
    for (id, at, channel) in ORDERS {
        publisher.publish(&placed(id, at, channel)).await.unwrap();
    }

    let api = server(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = AmazonFinancesConfig {
        shop: SHOP.into(),
        marketplace: "ATVPDKIKX0DER".into(),
        max_results_per_page: 100,
        get_order_rate_limit: RateLimit {
            rate: 1000.0,
            burst: 1000,
        },
        pull: PullSettings {
            max_window: Some(Duration::from_secs(31 * 24 * 3600)),
            ..pull_settings(&api, &dir.path().join("cursors"))
        },
        auth: lwa(&api, dir.path()),
    };
    // A fixed range: the undated service fee is timed at its start, before every other fact.
    let (from, to): (DateTime<Utc>, DateTime<Utc>) = (
        "2026-11-01T00:00:00Z".parse().unwrap(),
        "2026-12-01T00:00:00Z".parse().unwrap(),
    );
    let stats = AmazonFinances::build(cfg)
        .unwrap()
        .backfill(from, to, &publisher, |_| {})
        .await
        .expect("backfill delivered");
    assert_eq!((stats.published, stats.dead_lettered), (14, 2));

    let state = tempfile::tempdir().unwrap();
    let processor = ProcessorConfig {
        group_id: format!("{prefix}-processor"),
        checkpoint: kpiflow_processor::config::CheckpointConfig {
            dir: state.path().into(),
            ..Default::default()
        },
        idle_timeout: Duration::from_millis(500),
        flush_interval: Duration::from_millis(200),
        kpis: ["refund_rate", "order_defect_rate"]
        .map(String::from)
        .to_vec(),
        ..ProcessorConfig::default()
    };
    let stop = CancellationToken::new();
    let (k, p, s) = (kafka.clone(), processor.clone(), stop.clone());
    let task = tokio::spawn(async move { kpiflow_processor::run::run(&k, &p, None, s).await });
    let topics = kafka.topics();
    let inputs: Vec<String> = Topic::EVENTS.iter().map(|t| topics.name(*t)).collect();
    wait_until_consumed(&kafka, &processor.group_id, &inputs, Duration::from_secs(60)).await;

    // The newest revision per (KPI, window), once every expected window is there (the last
    // windows are published when the partition sits idle).
    let placed_from: DateTime<Utc> = "2026-11-02T17:03:00Z".parse().unwrap();
    let placed_to: DateTime<Utc> = "2026-11-05T06:45:00Z".parse().unwrap();
    let covering = |u: &KpiUpdate| u.window.start <= placed_from && u.window.end > placed_to;
    let want: [(&str, &str, i64, i64); 4] = [
        ("refund_rate", "rolling_30d", 2, 4),
        ("refund_rate", "rolling_60d", 2, 4),
        ("order_defect_rate", "rolling_30d", 2, 4),
        ("order_defect_rate", "rolling_60d", 2, 4),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let latest = loop {
        let mut latest: BTreeMap<String, KpiUpdate> = BTreeMap::new();
        for raw in tokio::task::block_in_place(|| read_all(&kafka, Topic::KpiUpdates)) {
            let u = KpiUpdate::from_json(&raw).unwrap();
            if latest.get(&u.key()).is_none_or(|old| old.revision < u.revision) {
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
    let run = task.await.unwrap().unwrap();
    assert_eq!(run.received, 4 + 14 + 1, "placements, the connector's facts, a heartbeat");
    assert_eq!(run.dead_lettered, 0, "nothing late, nothing refused: fees neither");

    for (kpi, window, n, d) in want {
        let rows: Vec<&KpiUpdate> = latest
            .values()
            .filter(|u| u.kpi == kpi && u.window.name == window && covering(u))
            .collect();
        assert!(!rows.is_empty(), "{kpi} {window}: no window holds every order");
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
}
