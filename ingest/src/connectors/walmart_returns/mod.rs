//! `walmart_returns`: Walmart Marketplace `GET /v3/returns`, polled by return-creation date
//! with `nextCursor` paging → `order.returned` (units) and, for refunded lines,
//! `order.refunded`.
//!
//! ```text
//!  POST /v3/token ─► access token (the walmart_orders client: WM_SEC.ACCESS_TOKEN, WM_SVC.NAME,
//!                    WM_QOS.CORRELATION_ID, Basic credentials)
//!  GET /v3/returns?returnCreationStartDate=from&returnCreationEndDate=to&limit=…
//!      └─ returnOrders[] ─► GET /v3/orders/{purchaseOrderId} (orderDate, shipNode; cached)
//!                        ─► map::return_order ─► order.returned / order.refunded
//!      └─ meta.nextCursor ─► GET /v3/returns{nextCursor}
//! ```
//!
//! **Time basis.** Return rate and refund rate count on the ORDER's date (the catalog books
//! both by `placed_at`), which a return does not carry: each purchase order's `orderDate`
//! (UTC epoch ms) and `shipNode.type` are read once with getOrder and cached; a return of an
//! order getOrder does not know (404) is dead-lettered. Events are timed at
//! `returnOrderDate`; the refund too (no refund time could be confirmed). Business days are US
//! Pacific, as for `walmart_orders`.
//!
//! **Seller fault.** Walmart's refund rate counts the seller's faults only: buyer-remorse
//! reasons (`CHANGED_MIND`, `NO_LONGER_NEEDED`, …, see [`map`]) are not; every other reason,
//! absent or unknown, is (the rate is never understated).
//!
//! **Unconfirmed shapes.** The endpoint, its filters (`returnCreationStartDate`,
//! `returnCreationEndDate`, `limit`) and `nextCursor` paging follow domain.md §6; the field
//! names could not be checked against the live API: `returnOrders[].returnOrderId`,
//! `returnOrderDate` (ISO 8601, or epoch ms like the orders API), `returnOrderLines[]` with
//! `returnOrderLineNumber`, `purchaseOrderId`, `item.sku`, `quantity.measurementValue`,
//! `returnReason`, `currentRefundStatus` (`REFUND_COMPLETED` = refunded; `REFUND_INITIATED`,
//! `REFUND_PENDING`, `REFUND_FAILED` = not yet) and `unitPrice {currencyAmount,
//! currencyUnit}` (the refund is taken as unit price × units: tax and shipping refunds are not
//! in it), and `meta.nextCursor` as the next page's query string. A return that does not fit is
//! dead-lettered naming the field and value. Fixtures: `ingest/fixtures/walmart_returns/`.

mod map;

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::IngestError;
use crate::connector::{Connector, parse_section};
use crate::connectors::walmart_orders::{self, iso, page_request, request};
use crate::map::{Record, raw};
use crate::pull::token::WalmartCredentials;
use crate::pull::{
    Emitter, HttpClient, Origin, PullConnector, PullSettings, WalmartAuthConfig, Window,
};

pub use map::OrderInfo;

/// The registry name.
pub const NAME: &str = "walmart_returns";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.walmart_returns";
/// The config section (an array: one table per shop).
pub const SECTION: &str = "connectors.walmart_returns";

/// Purchase orders whose date is remembered; the cache starts over beyond.
const ORDER_CACHE: usize = 100_000;

fn default_limit() -> u32 {
    100
}

/// One `[[connectors.walmart_returns]]` table: one seller account (shop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalmartReturnsConfig {
    /// The shop id events carry (the Kafka key); the same as its `walmart_orders` table's.
    pub shop: String,
    /// Returns per page (`limit`), 1 to 200. Default `100`.
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Polling, HTTP and cursor settings (the `walmart_orders` defaults: every 5 minutes, 15
    /// minutes overlap, the API's 20 requests a minute shared with getOrder).
    #[serde(default)]
    pub pull: PullSettings,
    /// Client id and secret.
    pub auth: WalmartAuthConfig,
}

/// The returns source for one shop.
pub struct WalmartReturns {
    cfg: WalmartReturnsConfig,
    creds: WalmartCredentials,
    origin: Origin,
    http: HttpClient,
    orders: Mutex<HashMap<String, OrderInfo>>,
}

impl WalmartReturns {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: WalmartReturnsConfig) -> Result<PullConnector, IngestError> {
        crate::pull::settings::non_empty(&format!("{SECTION}.shop"), &cfg.shop)?;
        crate::pull::settings::within(&format!("{SECTION}.limit"), cfg.limit, 1..=200)?;
        let pull = cfg.pull.resolve(SECTION, &walmart_orders::DEFAULTS)?;
        let (http, creds, metrics) =
            walmart_orders::client(NAME, SECTION, &cfg.shop, &pull, &cfg.auth)?;
        let origin = walmart_orders::origin(&cfg.shop);
        let source = WalmartReturns {
            cfg,
            creds,
            origin,
            http,
            orders: Mutex::default(),
        };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let mut next: Option<String> = None;
        loop {
            let req = match &next {
                Some(cursor) => {
                    page_request(NAME, "v3/returns", &self.creds, "meta.nextCursor", cursor)?
                }
                None => request("v3/returns", &self.creds)
                    .query("returnCreationStartDate", iso(window.from))
                    .query("returnCreationEndDate", iso(window.to))
                    .query("limit", self.cfg.limit.to_string()),
            };
            let resp = self
                .http
                .send(&req.accept_status(reqwest::StatusCode::NOT_FOUND))
                .await?;
            // As for orders, a window without returns may be a 404 CONTENT_NOT_FOUND.
            if resp.status == reqwest::StatusCode::NOT_FOUND {
                return Ok(());
            }
            let page: Page = resp.json(NAME)?;
            for ro in &page.return_orders {
                for po in map::purchase_orders(ro) {
                    self.order(&po).await?;
                }
                let mapped = {
                    let cache = self.cache();
                    map::return_order(ro, &|po| cache.get(po).copied())
                };
                out.record(mapped, &raw(ro)).await?;
            }
            match page.meta.next_cursor {
                Some(c) if !c.is_empty() => next = Some(c),
                _ => return Ok(()),
            }
        }
    }

    /// Reads purchase order `po`'s date and fulfilment into the cache unless it is there; an
    /// order Walmart does not know (404) stays absent (its return lines are dead-lettered).
    async fn order(&self, po: &str) -> Result<(), IngestError> {
        if self.cache().contains_key(po) {
            return Ok(());
        }
        let req = request(format!("v3/orders/{po}"), &self.creds)
            .accept_status(reqwest::StatusCode::NOT_FOUND);
        let resp = self.http.send(&req).await?;
        if resp.status == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        let v: Value = resp.json(NAME)?;
        let r = Record(&v);
        let bad = |e: String| IngestError::Input {
            source_name: NAME.into(),
            problem: format!("getOrder {po}: {e}"),
        };
        let placed_at = r.epoch_ms("order.orderDate").map_err(bad)?;
        let fulfilment = r
            .get("order")
            .map(|o| walmart_orders::map::fulfilment(&Record(o)))
            .transpose()
            .map_err(bad)?
            .unwrap_or(kpiflow_schemas::Fulfilment::Merchant);
        let mut cache = self.cache();
        if cache.len() >= ORDER_CACHE {
            cache.clear();
        }
        cache.insert(
            po.to_string(),
            OrderInfo {
                placed_at,
                fulfilment,
            },
        );
        Ok(())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, OrderInfo>> {
        self.orders.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Deserialize)]
struct Page {
    meta: Meta,
    // Raw JSON, so one bad return is dead-lettered alone.
    #[serde(default, rename = "returnOrders")]
    return_orders: Vec<Value>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(rename = "nextCursor")]
    next_cursor: Option<String>,
}

crate::pull::impl_source!(WalmartReturns);

/// The registry's constructor: one `[[connectors.walmart_returns]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg: WalmartReturnsConfig = parse_section(SECTION, section)?;
    Ok(Box::new(WalmartReturns::build(cfg)?))
}
