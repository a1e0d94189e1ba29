//! What a connector is ([`Connector`]), what a run reports ([`RunStats`]), and the registry.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::{IngestError, Publish};

/// A source of canonical events: reads a platform (or simulates one) and publishes.
///
/// Object-safe so the binary can pick one by name from [`REGISTRY`].
pub trait Connector: Send {
    /// The registry name, e.g. `simulator`; also the metrics component `ingest.<name>`.
    fn name(&self) -> &'static str;

    /// Publishes until the source is exhausted, a configured limit is reached, or `shutdown`
    /// is cancelled; then flushes `publisher`, so `Ok` means every record is delivered.
    fn run<'a>(
        &'a mut self,
        publisher: &'a dyn Publish,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<RunStats, IngestError>>;

    /// The pull machinery behind this connector, for [`crate::pull::backfill`]; `None` for
    /// connectors that do not poll an API.
    fn as_pull(&mut self) -> Option<&mut crate::pull::PullConnector> {
        None
    }
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The source had nothing more to publish.
    Exhausted,
    /// The configured event limit was reached.
    MaxEvents,
    /// The configured wall-clock duration passed.
    Duration,
    /// Shutdown was requested.
    Shutdown,
}

/// What a finished run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStats {
    /// Events handed to the publisher (and delivered: the run flushed before returning).
    pub published: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Why the run ended.
    pub stop: StopReason,
    /// Wall-clock time the run took, flush included.
    pub elapsed: Duration,
}

impl RunStats {
    /// Published events per wall-clock second.
    pub fn events_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.published as f64 / secs
        } else {
            0.0
        }
    }
}

/// Builds a connector from its config section (already parsed from the config file).
pub type BuildConnector = fn(serde_json::Value) -> Result<Box<dyn Connector>, IngestError>;

/// One registered connector.
#[derive(Debug, Clone, Copy)]
pub struct ConnectorSpec {
    /// The name used in config and on the command line.
    pub name: &'static str,
    /// One line for `--help` and error messages.
    pub summary: &'static str,
    /// Parses and validates the config section, then builds the connector.
    pub build: BuildConnector,
}

/// Every connector, in one place: adding a connector means adding its folder under
/// `connectors/` and one line here.
pub const REGISTRY: &[ConnectorSpec] = &[
    ConnectorSpec {
        name: crate::connectors::simulator::NAME,
        summary: "deterministic synthetic shops: orders, ads, inventory, shipments, anomalies",
        build: crate::connectors::simulator::build,
    },
    ConnectorSpec {
        name: crate::connectors::amazon_sp_orders::NAME,
        summary: "Amazon SP-API Orders v0 (getOrders by LastUpdatedAfter): placed, shipped, cancelled",
        build: crate::connectors::amazon_sp_orders::build,
    },
    ConnectorSpec {
        name: crate::connectors::amazon_fba_inventory::NAME,
        summary: "Amazon FBA inventory summaries (nextToken paging): inventory.snapshot per SKU",
        build: crate::connectors::amazon_fba_inventory::build,
    },
    ConnectorSpec {
        name: crate::connectors::amazon_sp_reports::NAME,
        summary: "Amazon SP-API Reports (create, poll, gzip document): FBA and merchant returns, negative feedback, FBA shipments, account health",
        build: crate::connectors::amazon_sp_reports::build,
    },
    ConnectorSpec {
        name: crate::connectors::amazon_sp_finances::NAME,
        summary: "Amazon SP-API Finances v0 (financial events, NextToken paging): refunds, A-to-z claims, chargebacks, fee lines",
        build: crate::connectors::amazon_sp_finances::build,
    },
    ConnectorSpec {
        name: crate::connectors::amazon_ads::NAME,
        summary: "Amazon Ads reporting v3 (spCampaigns, daily, trailing re-pull): ad.performance with restatements",
        build: crate::connectors::amazon_ads::build,
    },
    ConnectorSpec {
        name: crate::connectors::google_ads::NAME,
        summary: "Google Ads GAQL search (campaign x day, cost in micros, trailing re-pull): ad.performance",
        build: crate::connectors::google_ads::build,
    },
    ConnectorSpec {
        name: crate::connectors::meta_ads::NAME,
        summary: "Meta insights (campaign x day, one purchase action type, cursor paging): ad.performance",
        build: crate::connectors::meta_ads::build,
    },
    ConnectorSpec {
        name: crate::connectors::tiktok_ads::NAME,
        summary: "TikTok for Business integrated report (campaign x day, page paging): ad.performance",
        build: crate::connectors::tiktok_ads::build,
    },
    ConnectorSpec {
        name: crate::connectors::walmart_connect_ads::NAME,
        summary: "Walmart Connect Sponsored Search snapshot reports (campaign x day, RSA-signed, poll, gzip JSON lines, trailing re-pull): ad.performance",
        build: crate::connectors::walmart_connect_ads::build,
    },
    ConnectorSpec {
        name: crate::connectors::tiktok_shop_orders::NAME,
        summary: "TikTok Shop order search (update time, next_page_token, signed): placed, shipped, cancelled",
        build: crate::connectors::tiktok_shop_orders::build,
    },
    ConnectorSpec {
        name: crate::connectors::tiktok_shop_returns::NAME,
        summary: "TikTok Shop return search (update time, next_page_token, signed; order dates by Get Order Detail): returned, refunded",
        build: crate::connectors::tiktok_shop_returns::build,
    },
    ConnectorSpec {
        name: crate::connectors::walmart_orders::NAME,
        summary: "Walmart Marketplace /v3/orders (lastModifiedStartDate, nextCursor): placed, shipped, cancelled",
        build: crate::connectors::walmart_orders::build,
    },
    ConnectorSpec {
        name: crate::connectors::walmart_returns::NAME,
        summary: "Walmart Marketplace /v3/returns (return creation date, nextCursor; order dates by getOrder): returned, refunded",
        build: crate::connectors::walmart_returns::build,
    },
    ConnectorSpec {
        name: crate::connectors::walmart_wfs_inventory::NAME,
        summary: "Walmart Fulfillment Services /v3/fulfillment/inventory (offset paging, whole state each sync): inventory snapshots",
        build: crate::connectors::walmart_wfs_inventory::build,
    },
    ConnectorSpec {
        name: crate::connectors::shopify::WEBHOOK_NAME,
        summary: "Shopify webhook receiver: orders/create, paid, updated, cancelled, refunds/create, fulfillments/create and update",
        build: crate::connectors::shopify::webhook::build,
    },
    ConnectorSpec {
        name: crate::connectors::shopify::orders::NAME,
        summary: "Shopify Admin API orders (updated_at_min, Link paging): the webhook's events, polled or backfilled",
        build: crate::connectors::shopify::orders::build,
    },
    ConnectorSpec {
        name: crate::connectors::shopify::returns::NAME,
        summary: "Shopify GraphQL Admin API returns (orders by updated_at, endCursor paging, THROTTLED waits): returned",
        build: crate::connectors::shopify::returns::build,
    },
    ConnectorSpec {
        name: crate::connectors::threepl::NAME,
        summary: "3PL / overseas warehouse: shipment milestones and stock from CSV files and a webhook",
        build: crate::connectors::threepl::build,
    },
    ConnectorSpec {
        name: crate::connectors::cogs_file::NAME,
        summary: "the seller's cost-of-goods file (CSV or TOML, re-read when it changes): cost.changed per SKU and first day",
        build: crate::connectors::cogs_file::build,
    },
    ConnectorSpec {
        name: crate::connectors::tracking::AFTERSHIP_NAME,
        summary: "AfterShip tracking webhook: order.delivered (with expected delivery) and shipment.milestone",
        build: crate::connectors::tracking::build_aftership,
    },
    ConnectorSpec {
        name: crate::connectors::tracking::TRACK17_NAME,
        summary: "17TRACK push (TRACKING_UPDATED): order.delivered (with expected delivery) and shipment.milestone",
        build: crate::connectors::tracking::build_track17,
    },
];

/// Builds the connector called `name` from its config section; unknown names list the known ones.
pub fn build(name: &str, config: serde_json::Value) -> Result<Box<dyn Connector>, IngestError> {
    let spec = REGISTRY.iter().find(|s| s.name == name).ok_or_else(|| {
        IngestError::config(
            "connector",
            format!("{name:?}"),
            format!(
                "no such connector; known connectors: {}",
                REGISTRY
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    (spec.build)(config)
}

/// Parses a config section (`section` is its key, e.g. `simulate` or
/// `connectors.walmart_orders`); errors name the full key and quote the value, e.g.
/// ``bad config: `simulate.shops` = "x": invalid type: string "x", expected u32``.
pub fn parse_section<T: serde::de::DeserializeOwned>(
    section: &str,
    value: serde_json::Value,
) -> Result<T, IngestError> {
    serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().clone();
        let last = path
            .iter()
            .next_back()
            .map(ToString::to_string)
            .unwrap_or_default();
        let problem = e.into_inner().to_string();
        // A credential pasted where a reference belongs must not reach the logs, nor a whole
        // table that may hold one, nor the value of a misspelt key (`secert = "…"`): an
        // unknown key's value says nothing about the mistake.
        let at = if is_credential_key(&last) {
            "\"***\"".to_string()
        } else if problem.starts_with("unknown field") {
            "(not read)".to_string()
        } else {
            let v = value_at(&value, &path);
            if v.starts_with('{') || v.starts_with('[') {
                "(a table)".to_string()
            } else {
                v
            }
        };
        let key = match path.to_string().as_str() {
            "." => section.to_string(),
            p => format!("{section}.{p}"),
        };
        IngestError::config(key, at, problem)
    })
}

/// Keys whose values may be credentials.
fn is_credential_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "token", "password", "client_id", "key"]
        .iter()
        .any(|w| k.contains(w))
}

/// The config value at `path`, compact JSON, for error messages.
fn value_at(root: &serde_json::Value, path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut cur = Some(root);
    for seg in path.iter() {
        cur = match (seg, cur) {
            (Segment::Seq { index }, Some(v)) => v.get(*index),
            (Segment::Map { key }, Some(v)) => v.get(key),
            (Segment::Enum { .. }, v) => v,
            _ => None,
        };
    }
    match cur {
        Some(v) => v.to_string(),
        None => "(missing)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_connectors_list_the_known_ones() {
        let err = build("shopfiy", serde_json::json!({})).err().unwrap();
        let err = err.to_string();
        assert!(
            err.starts_with(
                r#"bad config: `connector` = "shopfiy": no such connector; known connectors: simulator, amazon_sp_orders"#
            ),
            "{err}"
        );
        assert!(
            err.contains("shopify_webhook, shopify_orders, shopify_returns, threepl"),
            "{err}"
        );
    }

    #[test]
    fn tables_are_not_quoted_in_errors() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            shop: String,
        }
        let err = parse_section::<S>(
            "connectors.x",
            serde_json::json!({"shop": "s", "secert": "shpss_pasted"}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `secert`"), "{err}");
        assert!(!err.contains("shpss_pasted"), "{err}");
    }

    #[test]
    fn pasted_credentials_are_not_echoed() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct S {
            auth: crate::pull::LwaConfig,
        }
        let err = parse_section::<S>(
            "connectors.amazon_sp_orders",
            serde_json::json!({"auth": {"client_id": "env:ID", "client_secret": "amzn1.secret-value",
                                        "refresh_token": "env:R"}}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "bad config: `connectors.amazon_sp_orders.auth.client_secret` = \"***\""
            ),
            "{err}"
        );
        assert!(!err.contains("amzn1"), "{err}");
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = REGISTRY.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
    }

    #[test]
    fn the_simulator_builds_from_an_empty_section() {
        let c = build("simulator", serde_json::json!({})).unwrap();
        assert_eq!(c.name(), "simulator");
    }
}
