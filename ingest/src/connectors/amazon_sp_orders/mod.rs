//! `amazon_sp_orders`: Amazon Selling Partner API Orders v0 (`getOrders`), polled by
//! `LastUpdatedAfter` with `NextToken` paging.
//!
//! ```text
//!  GET /orders/v0/orders?MarketplaceIds=…&LastUpdatedAfter=from&LastUpdatedBefore=to
//!      └─ payload.Orders[] ─► map::order ─► order.placed / order.shipped / order.cancelled
//!      └─ payload.NextToken ─► GET /orders/v0/orders?MarketplaceIds=…&NextToken=… (until none)
//! ```
//!
//! Calls carry an LWA access token in `x-amz-access-token`. The API speaks UTC; Amazon's
//! business day is US Pacific, so events carry `source_tz = America/Los_Angeles`. Amazon asks
//! for `LastUpdatedBefore` at least two minutes in the past, so a window ends then.

mod lookup;
mod map;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use kpiflow_core::SourceMetrics;
use kpiflow_schemas::{Channel, SourceTz};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::IngestError;
use crate::connector::{Connector, parse_section};
use crate::map::raw;
use crate::pull::{
    Emitter, HttpClient, LwaConfig, Origin, PullConnector, PullDefaults, PullSettings, RateLimit,
    Request, TokenHeader, Window, lwa_client,
};

pub use lookup::{OrderInfo, OrderLookup, Orders, looked_up};
pub use map::order as map_order;

/// The registry name.
pub const NAME: &str = "amazon_sp_orders";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.amazon_sp_orders";
/// The config section (an array: one table per shop).
pub const SECTION: &str = "connectors.amazon_sp_orders";
/// Amazon US.
pub const US_MARKETPLACE: &str = "ATVPDKIKX0DER";

/// The documented getOrders budget: 0.0167 requests per second, bursts of 20.
pub const DEFAULTS: PullDefaults = PullDefaults {
    base_url: "https://sellingpartnerapi-na.amazon.com",
    interval: Duration::from_secs(5 * 60),
    overlap: Duration::from_secs(15 * 60),
    initial_lookback: Duration::from_secs(24 * 3600),
    max_window: Duration::from_secs(24 * 3600),
    rate_limit: Some(RateLimit {
        rate: 0.0167,
        burst: 20,
    }),
};

fn us() -> Vec<String> {
    vec![US_MARKETPLACE.to_string()]
}

fn default_page_size() -> u32 {
    100
}

/// One `[[connectors.amazon_sp_orders]]` table: one seller account (shop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmazonOrdersConfig {
    /// The shop id events carry (the Kafka key).
    pub shop: String,
    /// `MarketplaceIds` to read. Default `["ATVPDKIKX0DER"]` (Amazon US).
    #[serde(default = "us")]
    pub marketplace_ids: Vec<String>,
    /// `MaxResultsPerPage`, 1 to 100. Default `100`.
    #[serde(default = "default_page_size")]
    pub max_results_per_page: u32,
    /// Polling, HTTP and cursor settings (defaults: every 5 minutes, 15 minutes overlap,
    /// 0.0167 requests/s with bursts of 20).
    #[serde(default)]
    pub pull: PullSettings,
    /// Login With Amazon credentials.
    pub auth: LwaConfig,
}

impl AmazonOrdersConfig {
    /// Checks the values this connector owns (the `pull` table is checked when resolved).
    pub fn validate(&self) -> Result<(), IngestError> {
        crate::pull::settings::non_empty(&format!("{SECTION}.shop"), &self.shop)?;
        if self.marketplace_ids.is_empty()
            || self.marketplace_ids.iter().any(|m| m.trim().is_empty())
        {
            return Err(IngestError::config(
                format!("{SECTION}.marketplace_ids"),
                format!("{:?}", self.marketplace_ids),
                "must list at least one marketplace id, e.g. \"ATVPDKIKX0DER\"",
            ));
        }
        if !(1..=100).contains(&self.max_results_per_page) {
            return Err(IngestError::config(
                format!("{SECTION}.max_results_per_page"),
                self.max_results_per_page,
                "must be between 1 and 100",
            ));
        }
        Ok(())
    }
}

/// The getOrders source for one shop.
pub struct AmazonOrders {
    cfg: AmazonOrdersConfig,
    origin: Origin,
    http: HttpClient,
}

impl AmazonOrders {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: AmazonOrdersConfig) -> Result<PullConnector, IngestError> {
        cfg.validate()?;
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
            marketplace: cfg.marketplace_ids[0].clone(),
            source_tz: SourceTz::US_PACIFIC,
        };
        let source = AmazonOrders { cfg, origin, http };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let markets = self.cfg.marketplace_ids.join(",");
        let mut next: Option<String> = None;
        loop {
            let req = Request::get("orders/v0/orders").query("MarketplaceIds", &markets);
            let req = match &next {
                Some(token) => req.query("NextToken", token),
                None => req
                    .query("LastUpdatedAfter", iso(window.from))
                    .query("LastUpdatedBefore", iso(window.to))
                    .query(
                        "MaxResultsPerPage",
                        self.cfg.max_results_per_page.to_string(),
                    ),
            };
            let page: Page = self.http.send(&req).await?.json(NAME)?;
            for order in &page.payload.orders {
                out.record(map::order(order), &raw(order)).await?;
            }
            match page.payload.next_token {
                Some(t) if !t.is_empty() => next = Some(t),
                _ => return Ok(()),
            }
        }
    }
}

/// UTC, whole seconds, `Z`: the form the SP-API documents (also the Reports API's).
pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Deserialize)]
struct Page {
    payload: Payload,
}

#[derive(Deserialize)]
struct Payload {
    // Records stay raw JSON so one bad order is dead-lettered alone.
    #[serde(rename = "Orders", default)]
    orders: Vec<Value>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
}

crate::pull::impl_source!(AmazonOrders {
    fn window_end(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - TimeDelta::minutes(2)
    }
});

/// The registry's constructor: one `[[connectors.amazon_sp_orders]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg: AmazonOrdersConfig = parse_section(SECTION, section)?;
    Ok(Box::new(AmazonOrders::build(cfg)?))
}
