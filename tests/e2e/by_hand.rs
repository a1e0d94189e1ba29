//! What the connector end-to-end tests share: run the processor over the events a test put on
//! the broker, with only the KPIs it checks, and compare the newest revision of every window
//! holding all the facts with the (KPI, window, numerator, denominator) worked out by hand.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kpiflow_core::{ComponentMetrics, KafkaConfig};
use kpiflow_ingest::Publish;
use kpiflow_ingest::publish::KafkaPublisher;
use kpiflow_processor::ProcessorConfig;
use kpiflow_processor::run::RunStats;
use kpiflow_schemas::{
    Channel, Decimal, Event, EventBody, EventHeader, Fulfilment, KpiUpdate, Money, OrderPlaced,
    OrderShipped, SourceTz, Topic,
};
use tokio_util::sync::CancellationToken;

use super::{bootstrap, read_all, wait_until_consumed};

/// Fresh topics (prefix `e2e-<tag>-<uuid>`, one partition) on the test broker, created, and a
/// publisher to them.
pub(crate) async fn broker(tag: &str) -> (KafkaConfig, KafkaPublisher) {
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap(),
        topic_prefix: format!("e2e-{tag}-{}", uuid::Uuid::new_v4().simple()),
        partitions: 1,
        ..KafkaConfig::default()
    };
    let publisher = KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.test")).unwrap();
    publisher.ensure_topics().await.unwrap();
    (kafka, publisher)
}

/// One sync of `connector` to `publisher`, which must publish and dead-letter `counts`.
pub(crate) async fn sync(
    mut connector: kpiflow_ingest::pull::PullConnector,
    publisher: &KafkaPublisher,
    counts: (u64, u64),
) {
    let report = connector
        .sync_once(publisher)
        .await
        .expect("sync delivered");
    assert_eq!(
        (report.counts.published, report.counts.dead_lettered),
        counts,
        "published, dead-lettered"
    );
}

/// Windows holding every fact booked from `from` to `to` (RFC 3339).
pub(crate) fn holding(from: &str, to: &str) -> impl Fn(&KpiUpdate) -> bool + use<> {
    let from: DateTime<Utc> = from.parse().unwrap();
    let to: DateTime<Utc> = to.parse().unwrap();
    move |u| u.window.start <= from && u.window.end > to
}

/// A KPI value worked out by hand: (KPI, window name, numerator, denominator).
pub(crate) type ByHand = (&'static str, &'static str, i64, i64);

/// Runs the processor over `kafka`'s event topics computing `kpis`, until it consumed them and
/// every `want` is the newest revision of some window `covering` accepts (or a minute passed);
/// returns its stats and the newest revision per (KPI, window).
pub(crate) async fn process(
    kafka: &KafkaConfig,
    kpis: &[&str],
    covering: &dyn Fn(&KpiUpdate) -> bool,
    want: &[ByHand],
) -> (RunStats, BTreeMap<String, KpiUpdate>) {
    let state = tempfile::tempdir().unwrap();
    let processor = ProcessorConfig {
        group_id: format!("{}-processor", kafka.topic_prefix),
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

    // The last windows are published when the partition sits idle: poll until they are there.
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
    (task.await.unwrap().unwrap(), latest)
}

/// Every window `covering` accepts of each `want` KPI and window shows the hand-worked sums,
/// for `shop`, and there is at least one.
pub(crate) fn check(
    latest: &BTreeMap<String, KpiUpdate>,
    shop: &str,
    covering: &dyn Fn(&KpiUpdate) -> bool,
    want: &[ByHand],
) {
    for (kpi, window, n, d) in want {
        let rows: Vec<&KpiUpdate> = latest
            .values()
            .filter(|u| u.kpi == *kpi && u.window.name == *window && covering(u))
            .collect();
        assert!(
            !rows.is_empty(),
            "{kpi} {window}: no window holds every fact"
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
}

/// The `order.placed` `amazon_sp_orders` publishes for an SP-API fixture order of `shop`
/// (`channel` AFN or MFN), placed at `at` (RFC 3339) for 29.98 USD.
pub(crate) fn amazon_placed(shop: &str, id: &str, at: &str, channel: &str, units: u32) -> Event {
    let at: DateTime<Utc> = at.parse().unwrap();
    let header = EventHeader {
        event_id: format!("amazon:{id}:placed"),
        source: "amazon_sp_orders".into(),
        shop: shop.into(),
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
                amount: Decimal::parse("29.98").unwrap(),
                currency: "USD".into(),
            },
            units,
            fulfilment,
            ship_by: None,
            deliver_by: None,
        },
    )
}

/// An order of a returns test: id, placement time, units, fulfilment.
pub(crate) type Order = (&'static str, DateTime<Utc>, u32, Fulfilment);

/// What `<channel>_orders` (`walmart_orders`, `tiktok_shop_orders`) publishes for `order` of
/// `shop`: its placement for 29.98 USD, or (`shipped`) its shipment in full a day later,
/// tracked by UPS. Ids `<channel>:<order id>:placed|shipped`, as those connectors write them.
pub(crate) fn order_fact(shop: &str, channel: Channel, order: Order, shipped: bool) -> Event {
    let (id, placed, units, fulfilment) = order;
    let at = if shipped {
        placed + chrono::TimeDelta::days(1)
    } else {
        placed
    };
    let header = EventHeader {
        event_id: format!(
            "{}:{id}:{}",
            channel.as_str(),
            if shipped { "shipped" } else { "placed" }
        ),
        source: format!("{}_orders", channel.as_str()),
        shop: shop.into(),
        channel,
        marketplace: "US".into(),
        sku: None,
        event_time: at,
        source_tz: SourceTz::US_PACIFIC,
        ingest_time: at,
    };
    let body: EventBody = if shipped {
        OrderShipped {
            order_id: id.into(),
            placed_at: placed,
            ship_by: at,
            deliver_by: None,
            units,
            carrier: Some("UPS".into()),
            tracking_id: Some(format!("1Z{id}")),
            tracking_valid: true,
            fulfilment: Some(fulfilment),
        }
        .into()
    } else {
        OrderPlaced {
            order_id: id.into(),
            total: Money::usd("29.98"),
            units,
            fulfilment,
            ship_by: None,
            deliver_by: None,
        }
        .into()
    };
    Event::new(header, body)
}
