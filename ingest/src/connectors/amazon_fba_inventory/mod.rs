//! `amazon_fba_inventory`: FBA inventory summaries (`GET /fba/inventory/v1/summaries`,
//! `nextToken` paging) → one `inventory.snapshot` per seller SKU.
//!
//! ```text
//!  GET /fba/inventory/v1/summaries?details=true&granularityType=Marketplace&granularityId=…
//!      └─ payload.inventorySummaries[] ─► inventory.snapshot (location e.g. FBA-US)
//!      └─ pagination.nextToken ─► same request with nextToken (until none)
//! ```
//!
//! A snapshot source: every sync reads the whole current state. A summary's event time is its
//! `lastUpdatedTime` (the sync time when Amazon leaves it empty) and its id
//! `amazon_fba:{marketplace}:{sellerSku}:{event time ms}`, so an unchanged summary read again
//! is a duplicate the processor drops. Quantities: sellable = `fulfillableQuantity`;
//! inbound = working + shipped + receiving; reserved = `reservedQuantity.totalReservedQuantity`;
//! unfulfillable = `unfulfillableQuantity.totalUnfulfillableQuantity`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kpiflow_core::SourceMetrics;
use kpiflow_schemas::{Channel, InventorySnapshot, LocationKind, SourceTz};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::IngestError;
use crate::connector::{Connector, parse_section};
use crate::map::{MapError, Record, raw};
use crate::pull::{
    Emitter, Fact, HttpClient, LwaConfig, Origin, PullConnector, PullDefaults, PullSettings,
    RateLimit, Request, TokenHeader, Window, lwa_client,
};

/// The registry name.
pub const NAME: &str = "amazon_fba_inventory";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.amazon_fba_inventory";
/// The config section (an array: one table per shop).
pub const SECTION: &str = "connectors.amazon_fba_inventory";

/// getInventorySummaries allows 2 requests a second, bursting to 2.
pub const DEFAULTS: PullDefaults = PullDefaults {
    base_url: "https://sellingpartnerapi-na.amazon.com",
    interval: Duration::from_secs(3600),
    overlap: Duration::ZERO,
    initial_lookback: Duration::ZERO,
    max_window: Duration::from_secs(24 * 3600),
    rate_limit: Some(RateLimit {
        rate: 2.0,
        burst: 2,
    }),
};

fn fba_us() -> String {
    "FBA-US".into()
}

/// One `[[connectors.amazon_fba_inventory]]` table: one seller account (shop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FbaInventoryConfig {
    /// The shop id events carry (the Kafka key).
    pub shop: String,
    /// The marketplace (`granularityId`, `marketplaceIds`). Default `"ATVPDKIKX0DER"`.
    #[serde(default = "crate::pull::settings::defaults::amazon_us")]
    pub marketplace: String,
    /// The location id snapshots carry. Default `"FBA-US"`.
    #[serde(default = "fba_us")]
    pub location: String,
    /// Polling, HTTP and cursor settings (default: hourly).
    #[serde(default)]
    pub pull: PullSettings,
    /// Login With Amazon credentials.
    pub auth: LwaConfig,
}

/// The inventory source for one shop.
pub struct FbaInventory {
    cfg: FbaInventoryConfig,
    origin: Origin,
    http: HttpClient,
}

impl FbaInventory {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: FbaInventoryConfig) -> Result<PullConnector, IngestError> {
        for (k, v) in [
            ("shop", &cfg.shop),
            ("marketplace", &cfg.marketplace),
            ("location", &cfg.location),
        ] {
            crate::pull::settings::non_empty(&format!("{SECTION}.{k}"), v)?;
        }
        let pull = cfg.pull.resolve(SECTION, &DEFAULTS)?;
        let metrics = SourceMetrics::new(NAME, &cfg.shop);
        let (http, _) = lwa_client(
            NAME,
            pull.http.clone(),
            &cfg.auth,
            &format!("{SECTION}.auth"),
            crate::pull::token::LWA_TOKEN_URL,
            metrics.clone(),
            TokenHeader::Named(reqwest::header::HeaderName::from_static(
                "x-amz-access-token",
            )),
        )?;
        let origin = Origin {
            shop: cfg.shop.clone(),
            channel: Channel::Amazon,
            marketplace: cfg.marketplace.clone(),
            source_tz: SourceTz::US_PACIFIC,
        };
        let source = FbaInventory { cfg, origin, http };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let mut next: Option<String> = None;
        loop {
            let mut req = Request::get("fba/inventory/v1/summaries")
                .query("details", "true")
                .query("granularityType", "Marketplace")
                .query("granularityId", &self.cfg.marketplace)
                .query("marketplaceIds", &self.cfg.marketplace);
            if let Some(t) = &next {
                req = req.query("nextToken", t);
            }
            let page: Page = self.http.send(&req).await?.json(NAME)?;
            for s in &page.payload.inventory_summaries {
                out.record(self.map(s, window.to), &raw(s)).await?;
            }
            match page.pagination.and_then(|p| p.next_token) {
                Some(t) if !t.is_empty() => next = Some(t),
                _ => return Ok(()),
            }
        }
    }

    /// One summary → one snapshot; `now` times summaries without `lastUpdatedTime`.
    fn map(&self, v: &Value, now: DateTime<Utc>) -> Result<Vec<Fact>, MapError> {
        let r = Record(v);
        let sku = r.str("sellerSku")?;
        let at = |e: MapError| format!("sku {sku}: {e}");
        let d = |f: &str| format!("inventoryDetails.{f}");
        let count = |f: &str| r.count_or_zero(&d(f)).map_err(at);
        let when = r.opt_time("lastUpdatedTime").map_err(at)?.unwrap_or(now);
        let body = InventorySnapshot {
            location: self.cfg.location.clone(),
            location_kind: LocationKind::Fba,
            sellable: count("fulfillableQuantity")?,
            inbound: count("inboundWorkingQuantity")?
                + count("inboundShippedQuantity")?
                + count("inboundReceivingQuantity")?,
            reserved: count("reservedQuantity.totalReservedQuantity")?,
            unfulfillable: count("unfulfillableQuantity.totalUnfulfillableQuantity")?,
        };
        let mut fact = Fact::new(
            format!(
                "amazon_fba:{}:{sku}:{}",
                self.cfg.marketplace,
                when.timestamp_millis()
            ),
            when,
            body,
        );
        fact.sku = Some(sku.to_string());
        Ok(vec![fact])
    }
}

#[derive(Deserialize)]
struct Page {
    payload: Payload,
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct Payload {
    // Raw JSON, so one bad summary is dead-lettered alone.
    #[serde(rename = "inventorySummaries", default)]
    inventory_summaries: Vec<Value>,
}

#[derive(Deserialize)]
struct Pagination {
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

crate::pull::impl_source!(FbaInventory {
    fn snapshot(&self) -> bool {
        true
    }
});

/// The registry's constructor: one `[[connectors.amazon_fba_inventory]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg: FbaInventoryConfig = parse_section(SECTION, section)?;
    Ok(Box::new(FbaInventory::build(cfg)?))
}
