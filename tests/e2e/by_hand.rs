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
    Channel, Decimal, Event, EventHeader, Fulfilment, KpiUpdate, Money, OrderPlaced, OrderShipped,
    SourceTz, Topic,
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

/// A marketplace's order connector, as far as the events it publishes go: their source, id
/// prefix (`<prefix>:<order id>:<kind>`), channel and marketplace.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seller {
    source: &'static str,
    prefix: &'static str,
    channel: Channel,
    marketplace: &'static str,
}

/// `amazon_sp_orders` (Amazon US).
pub(crate) const AMAZON: Seller = Seller {
    source: "amazon_sp_orders",
    prefix: "amazon",
    channel: Channel::Amazon,
    marketplace: "ATVPDKIKX0DER",
};
/// `walmart_orders`.
pub(crate) const WALMART: Seller = Seller {
    source: "walmart_orders",
    prefix: "walmart",
    channel: Channel::Walmart,
    marketplace: "US",
};
/// `tiktok_shop_orders`.
pub(crate) const TIKTOK_SHOP: Seller = Seller {
    source: "tiktok_shop_orders",
    prefix: "tiktok_shop",
    channel: Channel::TiktokShop,
    marketplace: "US",
};

/// A shipment as an order connector reports it: when it shipped, by when it was due, the
/// promised delivery (`None` where the platform gives none, as TikTok Shop's order search) and
/// the tracking: Walmart and TikTok Shop give a number and count a shipment with one as
/// tracked; Amazon's Orders API gives none and counts every FBM shipment as tracked.
pub(crate) struct Shipment<'a> {
    pub(crate) placed: &'a str,
    pub(crate) shipped: &'a str,
    pub(crate) ship_by: &'a str,
    pub(crate) deliver_by: Option<&'a str>,
    pub(crate) units: u32,
    pub(crate) tracking_id: Option<&'a str>,
    pub(crate) tracking_valid: bool,
}

fn utc(at: &str) -> DateTime<Utc> {
    at.parse()
        .unwrap_or_else(|e| panic!("{at:?} is not RFC 3339: {e}"))
}

impl Seller {
    fn header(&self, shop: &str, id: &str, kind: &str, at: DateTime<Utc>) -> EventHeader {
        EventHeader {
            event_id: format!("{}:{id}:{kind}", self.prefix),
            source: self.source.into(),
            shop: shop.into(),
            channel: self.channel,
            marketplace: self.marketplace.into(),
            sku: None,
            event_time: at,
            source_tz: SourceTz::US_PACIFIC,
            ingest_time: at,
        }
    }

    /// The `order.placed` of order `id` of `shop`, placed at `at` (RFC 3339) for 29.98 USD.
    pub(crate) fn placed(
        &self,
        shop: &str,
        id: &str,
        at: &str,
        fulfilment: Fulfilment,
        units: u32,
    ) -> Event {
        let at = utc(at);
        Event::new(
            self.header(shop, id, "placed", at),
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

    /// The `order.shipped` of seller-fulfilled order `id` of `shop`.
    pub(crate) fn shipped(&self, shop: &str, id: &str, s: &Shipment<'_>) -> Event {
        self.shipped_as(shop, id, s, Fulfilment::Merchant)
    }

    /// The `order.shipped` of order `id` of `shop`, fulfilled by `fulfilment`.
    pub(crate) fn shipped_as(
        &self,
        shop: &str,
        id: &str,
        s: &Shipment<'_>,
        fulfilment: Fulfilment,
    ) -> Event {
        Event::new(
            self.header(shop, id, "shipped", utc(s.shipped)),
            OrderShipped {
                order_id: id.into(),
                placed_at: utc(s.placed),
                ship_by: utc(s.ship_by),
                deliver_by: s.deliver_by.map(utc),
                units: s.units,
                carrier: None,
                tracking_valid: s.tracking_valid,
                tracking_id: s.tracking_id.map(str::to_string),
                fulfilment: Some(fulfilment),
            },
        )
    }
}

/// The `order.placed` `amazon_sp_orders` publishes for an SP-API fixture order of `shop`
/// (`channel` AFN or MFN), placed at `at` (RFC 3339) for 29.98 USD.
pub(crate) fn amazon_placed(shop: &str, id: &str, at: &str, channel: &str, units: u32) -> Event {
    let fulfilment = if channel == "AFN" {
        Fulfilment::Fba
    } else {
        Fulfilment::Merchant
    };
    AMAZON.placed(shop, id, at, fulfilment, units)
}

/// An order of a returns test: id, placement time, units, fulfilment.
pub(crate) type Order = (&'static str, DateTime<Utc>, u32, Fulfilment);

/// What `<channel>_orders` (`walmart_orders`, `tiktok_shop_orders`) publishes for `order` of
/// `shop`: its placement for 29.98 USD, or (`shipped`) its shipment in full a day later, on
/// time, with a valid tracking number. Ids `<channel>:<order id>:placed|shipped`, as those
/// connectors write them.
pub(crate) fn order_fact(shop: &str, channel: Channel, order: Order, shipped: bool) -> Event {
    let seller = match channel {
        Channel::Walmart => WALMART,
        Channel::TiktokShop => TIKTOK_SHOP,
        other => panic!("no order connector builder for {other:?}"),
    };
    let (id, placed, units, fulfilment) = order;
    let placed = placed.to_rfc3339();
    if !shipped {
        return seller.placed(shop, id, &placed, fulfilment, units);
    }
    let at = (utc(&placed) + chrono::TimeDelta::days(1)).to_rfc3339();
    let tracking = format!("1Z{id}");
    let shipment = Shipment {
        placed: &placed,
        shipped: &at,
        ship_by: &at,
        deliver_by: None,
        units,
        tracking_id: Some(&tracking),
        tracking_valid: true,
    };
    seller.shipped_as(shop, id, &shipment, fulfilment)
}
