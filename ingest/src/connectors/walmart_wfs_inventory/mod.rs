//! `walmart_wfs_inventory`: Walmart Fulfillment Services stock (`GET /v3/fulfillment/inventory`,
//! `offset` paging) → one `inventory.snapshot` per SKU and WFS ship node.
//!
//! ```text
//!  POST /v3/token ─► access token (the walmart_orders client: WM_SEC.ACCESS_TOKEN, WM_SVC.NAME,
//!                    WM_QOS.CORRELATION_ID, Basic credentials)
//!  GET /v3/fulfillment/inventory?limit=…&offset=…
//!      └─ payload.inventory[].shipNodes[] ─► inventory.snapshot (location WFS-US, kind Wfs)
//!      └─ headers.totalCount ─► next offset = offset + rows read (until totalCount is reached)
//! ```
//!
//! A snapshot source, as `amazon_fba_inventory`: every sync reads the whole current state (no
//! `fromModifiedDate` filter, so an unchanged SKU is snapshotted again and stockout days keep
//! counting). A node's event time is its `modifiedDate` (the sync time when Walmart leaves it
//! empty) and its id `walmart_wfs:{sku}:{event time ms}`, so unchanged stock read again is a
//! duplicate the processor drops, exactly as FBA summaries are timed by `lastUpdatedTime`.
//! Quantities: sellable = `availToSellQty`; reserved = `onHandQty` − `availToSellQty` (on hand
//! but not available: held for orders); inbound and unfulfillable are not in this API (0).
//!
//! **Confirmed and unconfirmed.** Walmart's developer docs ("Get WFS inventory (Legacy)",
//! developer.walmart.com/us-marketplace/docs/get-wfs-inventory-legacy) confirm the endpoint
//! `GET https://marketplace.walmartapis.com/v3/fulfillment/inventory` and its headers; they also
//! say it is deprecated (end of life announced for March 3, 2026) in favour of the new WFS
//! Inventory API (`/v3/wfs/inventory`, not implemented here: its shape could not be read). The
//! query parameters (`limit`, `offset`), the response shape (`headers {totalCount, limit,
//! offset}`, `payload.inventory[]` with `sku` and `shipNodes[]` holding `modifiedDate`,
//! `availToSellQty`, `onHandQty`, `shipNodeType` "WFSFulfilled") could not be checked
//! against the live API. Nodes of another `shipNodeType` are skipped (not WFS stock); a node
//! that does not fit is dead-lettered naming the field and value. Fixtures:
//! `ingest/fixtures/walmart_wfs_inventory/`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kpiflow_schemas::{InventorySnapshot, LocationKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::IngestError;
use crate::connector::{Connector, parse_section};
use crate::connectors::walmart_orders::{self, request};
use crate::map::{MapError, Record, raw};
use crate::pull::token::WalmartCredentials;
use crate::pull::{
    Emitter, Fact, HttpClient, Origin, PullConnector, PullDefaults, PullSettings,
    WalmartAuthConfig, Window,
};

/// The registry name.
pub const NAME: &str = "walmart_wfs_inventory";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.walmart_wfs_inventory";
/// The config section (an array: one table per shop).
pub const SECTION: &str = "connectors.walmart_wfs_inventory";

/// The `shipNodeType` of Walmart-fulfilled stock.
const WFS_NODE: &str = "WFSFulfilled";

/// Hourly snapshots (stock moves slowly; the KPIs count per day), the Walmart client's rate
/// limit; no overlap or lookback (each sync reads the whole state).
pub const DEFAULTS: PullDefaults = PullDefaults {
    interval: Duration::from_secs(3600),
    overlap: Duration::ZERO,
    initial_lookback: Duration::ZERO,
    ..walmart_orders::DEFAULTS
};

fn default_limit() -> u32 {
    100
}

fn wfs_us() -> String {
    "WFS-US".into()
}

/// One `[[connectors.walmart_wfs_inventory]]` table: one seller account (shop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalmartWfsInventoryConfig {
    /// The shop id events carry (the Kafka key); the same as its `walmart_orders` table's.
    pub shop: String,
    /// SKUs per page (`limit`), 1 to 300. Default `100`.
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// The location id snapshots carry. Default `"WFS-US"`.
    #[serde(default = "wfs_us")]
    pub location: String,
    /// Polling, HTTP and cursor settings (default: hourly).
    #[serde(default)]
    pub pull: PullSettings,
    /// Client id and secret.
    pub auth: WalmartAuthConfig,
}

/// The WFS inventory source for one shop.
pub struct WalmartWfsInventory {
    cfg: WalmartWfsInventoryConfig,
    creds: WalmartCredentials,
    origin: Origin,
    http: HttpClient,
}

impl WalmartWfsInventory {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: WalmartWfsInventoryConfig) -> Result<PullConnector, IngestError> {
        for (k, v) in [("shop", &cfg.shop), ("location", &cfg.location)] {
            crate::pull::settings::non_empty(&format!("{SECTION}.{k}"), v)?;
        }
        crate::pull::settings::within(&format!("{SECTION}.limit"), cfg.limit, 1..=300)?;
        let pull = cfg.pull.resolve(SECTION, &DEFAULTS)?;
        let (http, creds, metrics) =
            walmart_orders::client(NAME, SECTION, &cfg.shop, &pull, &cfg.auth)?;
        let origin = walmart_orders::origin(&cfg.shop);
        let source = WalmartWfsInventory {
            cfg,
            creds,
            origin,
            http,
        };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let mut offset: u64 = 0;
        loop {
            let req = request("v3/fulfillment/inventory", &self.creds)
                .query("limit", self.cfg.limit.to_string())
                .query("offset", offset.to_string());
            let page: Page = self.http.send(&req).await?.json(NAME)?;
            let rows = page.payload.inventory.len() as u64;
            for item in &page.payload.inventory {
                out.record(self.map(item, window.to), &raw(item)).await?;
            }
            offset += rows;
            // An empty page ends the walk too, so a totalCount that overstates cannot loop.
            if rows == 0 || offset >= page.headers.total_count {
                return Ok(());
            }
        }
    }

    /// One SKU → one snapshot per WFS node; `now` times nodes without `modifiedDate`.
    fn map(&self, v: &Value, now: DateTime<Utc>) -> Result<Vec<Fact>, MapError> {
        let r = Record(v);
        let sku = r.str("sku")?;
        let nodes = match r.get("shipNodes") {
            Some(Value::Array(a)) => a,
            Some(other) => {
                return Err(format!(
                    "sku {sku}: field `shipNodes`: expected an array, got {other}"
                ));
            }
            None => return Err(format!("sku {sku}: field `shipNodes` is missing")),
        };
        let mut facts = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let n = Record(n);
            let at = |e: MapError| format!("sku {sku}: shipNodes[{i}]: {e}");
            if n.opt_str("shipNodeType").map_err(at)? != Some(WFS_NODE) {
                continue;
            }
            let sellable = n.count("availToSellQty").map_err(at)?;
            let on_hand = n.count("onHandQty").map_err(at)?;
            let when = n.opt_time("modifiedDate").map_err(at)?.unwrap_or(now);
            let body = InventorySnapshot {
                location: self.cfg.location.clone(),
                location_kind: LocationKind::Wfs,
                sellable,
                inbound: 0,
                reserved: on_hand.saturating_sub(sellable),
                unfulfillable: 0,
            };
            let mut fact = Fact::new(
                format!("walmart_wfs:{sku}:{}", when.timestamp_millis()),
                when,
                body,
            );
            fact.sku = Some(sku.to_string());
            facts.push(fact);
        }
        Ok(facts)
    }
}

#[derive(Deserialize)]
struct Page {
    headers: Headers,
    #[serde(default)]
    payload: Payload,
}

#[derive(Deserialize)]
struct Headers {
    #[serde(rename = "totalCount")]
    total_count: u64,
}

#[derive(Deserialize, Default)]
struct Payload {
    // Raw JSON, so one bad SKU is dead-lettered alone.
    #[serde(default)]
    inventory: Vec<Value>,
}

crate::pull::impl_source!(WalmartWfsInventory {
    fn snapshot(&self) -> bool {
        true
    }
});

/// The registry's constructor: one `[[connectors.walmart_wfs_inventory]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg: WalmartWfsInventoryConfig = parse_section(SECTION, section)?;
    Ok(Box::new(WalmartWfsInventory::build(cfg)?))
}
