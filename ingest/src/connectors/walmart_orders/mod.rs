//! `walmart_orders`: Walmart Marketplace `GET /v3/orders`, polled by `lastModifiedStartDate`
//! with `nextCursor` paging.
//!
//! ```text
//!  POST /v3/token (Basic client id:secret, grant_type=client_credentials) ─► access token
//!  GET /v3/orders?lastModifiedStartDate=from&lastModifiedEndDate=to&limit=…
//!      └─ list.elements.order[] ─► map::order ─► order.placed / shipped / cancelled
//!      └─ list.meta.nextCursor ("?limit=…&hasMoreElements=true&soIndex=…") ─► GET /v3/orders{nextCursor}
//! ```
//!
//! Every call carries `WM_SEC.ACCESS_TOKEN`, `WM_SVC.NAME`, a fresh `WM_QOS.CORRELATION_ID`
//! and the Basic credentials. `orderDate` and the other times are UTC epoch milliseconds;
//! the shop's business day is drawn in US Pacific like the other US marketplaces.

pub(crate) mod map;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use kpiflow_core::SourceMetrics;
use kpiflow_schemas::{Channel, SourceTz};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::IngestError;
use crate::connector::{Connector, parse_section};
use crate::map::raw;
use crate::pull::token::WalmartCredentials;
use crate::pull::{
    Emitter, HttpClient, OAuthTokens, Origin, PullConnector, PullDefaults, PullSettings, RateLimit,
    Request, TokenHeader, WalmartAuthConfig, Window,
};

pub use map::order as map_order;

/// The registry name.
pub const NAME: &str = "walmart_orders";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.walmart_orders";
/// The config section (an array: one table per shop).
pub const SECTION: &str = "connectors.walmart_orders";

/// Walmart allows about 20 order requests a minute, bursting to 20.
pub const DEFAULTS: PullDefaults = PullDefaults {
    base_url: "https://marketplace.walmartapis.com",
    interval: Duration::from_secs(5 * 60),
    overlap: Duration::from_secs(15 * 60),
    initial_lookback: Duration::from_secs(24 * 3600),
    max_window: Duration::from_secs(24 * 3600),
    rate_limit: Some(RateLimit {
        rate: 0.33,
        burst: 20,
    }),
};

fn default_limit() -> u32 {
    100
}

/// One `[[connectors.walmart_orders]]` table: one seller account (shop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalmartOrdersConfig {
    /// The shop id events carry (the Kafka key).
    pub shop: String,
    /// Orders per page (`limit`), 1 to 200. Default `100`.
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Polling, HTTP and cursor settings (defaults: every 5 minutes, 15 minutes overlap).
    #[serde(default)]
    pub pull: PullSettings,
    /// Client id and secret.
    pub auth: WalmartAuthConfig,
}

/// The orders source for one shop.
pub struct WalmartOrders {
    cfg: WalmartOrdersConfig,
    creds: WalmartCredentials,
    origin: Origin,
    http: HttpClient,
}

impl WalmartOrders {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: WalmartOrdersConfig) -> Result<PullConnector, IngestError> {
        crate::pull::settings::non_empty(&format!("{SECTION}.shop"), &cfg.shop)?;
        crate::pull::settings::within(&format!("{SECTION}.limit"), cfg.limit, 1..=200)?;
        let pull = cfg.pull.resolve(SECTION, &DEFAULTS)?;
        let (http, creds, metrics) = client(NAME, SECTION, &cfg.shop, &pull, &cfg.auth)?;
        let origin = origin(&cfg.shop);
        let source = WalmartOrders {
            cfg,
            creds,
            origin,
            http,
        };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let mut next: Option<String> = None;
        loop {
            let req = match &next {
                Some(cursor) => page_request(
                    NAME,
                    "v3/orders",
                    &self.creds,
                    "list.meta.nextCursor",
                    cursor,
                )?,
                None => request("v3/orders", &self.creds)
                    .query("lastModifiedStartDate", iso(window.from))
                    .query("lastModifiedEndDate", iso(window.to))
                    .query("limit", self.cfg.limit.to_string()),
            };
            let resp = self
                .http
                .send(&req.accept_status(reqwest::StatusCode::NOT_FOUND))
                .await?;
            // Walmart answers a window without orders with 404 CONTENT_NOT_FOUND.
            if resp.status == reqwest::StatusCode::NOT_FOUND {
                return Ok(());
            }
            let page: Page = resp.json(NAME)?;
            for order in &page.list.elements.order {
                out.record(map::order(order), &raw(order)).await?;
            }
            match page.list.meta.next_cursor {
                Some(c) if !c.is_empty() => next = Some(c),
                _ => return Ok(()),
            }
        }
    }
}

/// An ISO 8601 query time, e.g. `2026-11-02T17:03:00Z`.
pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Where a Walmart Marketplace shop's events come from: channel Walmart, marketplace US, US
/// Pacific business days (Walmart's API speaks UTC epoch milliseconds).
pub(crate) fn origin(shop: &str) -> Origin {
    Origin {
        shop: shop.to_string(),
        channel: Channel::Walmart,
        marketplace: "US".into(),
        source_tz: SourceTz::US_PACIFIC,
    }
}

/// The Marketplace API client of one seller account, shared by the Walmart connectors:
/// `WM_SEC.ACCESS_TOKEN` from `POST /v3/token` (refreshed when it expires or is refused),
/// `WM_SVC.NAME` and JSON on every call. `name` labels its metrics, `section` its config keys.
pub(crate) fn client(
    name: &'static str,
    section: &str,
    shop: &str,
    pull: &crate::pull::settings::Pull,
    auth: &WalmartAuthConfig,
) -> Result<(HttpClient, WalmartCredentials, SourceMetrics), IngestError> {
    let creds = auth.resolve(&format!("{section}.auth"))?;
    let metrics = SourceMetrics::new(name, shop);
    let token_http = HttpClient::new(name, pull.http.clone(), metrics.clone())?;
    let tokens = Arc::new(OAuthTokens::walmart(
        token_http,
        creds.clone(),
        auth.refresh_margin,
    ));
    let http = HttpClient::new(name, pull.http.clone(), metrics.clone())?
        .with_token(
            tokens,
            TokenHeader::Named(reqwest::header::HeaderName::from_static(
                "wm_sec.access_token",
            )),
        )
        .with_header("wm_svc.name", &creds.service_name)?
        .with_header("accept", "application/json")?;
    Ok((http, creds, metrics))
}

/// A call to `path` with what every Walmart call carries besides the token: a fresh
/// `WM_QOS.CORRELATION_ID` and the Basic credentials.
pub(crate) fn request(path: impl Into<String>, creds: &WalmartCredentials) -> Request {
    Request::get(path)
        .header("wm_qos.correlation_id", uuid::Uuid::new_v4().to_string())
        .basic_auth(creds.client_id.clone(), creds.client_secret.clone())
}

/// The next page of `path`: Walmart's `nextCursor` is that page's whole query string, e.g.
/// "?limit=100&hasMoreElements=true&soIndex=100&poIndex=…", followed verbatim (it replaces
/// the first page's filters).
pub(crate) fn page_request(
    name: &str,
    path: &str,
    creds: &WalmartCredentials,
    field: &str,
    cursor: &str,
) -> Result<Request, IngestError> {
    let url = reqwest::Url::parse(&format!("http://cursor.invalid/{cursor}")).map_err(|e| {
        IngestError::Input {
            source_name: name.into(),
            problem: format!("field `{field}`: {cursor:?} is not a query string: {e}"),
        }
    })?;
    let mut req = request(path, creds);
    for (k, v) in url.query_pairs() {
        req = req.query(k, v);
    }
    Ok(req)
}

#[derive(Deserialize)]
struct Page {
    list: List,
}

#[derive(Deserialize)]
struct List {
    meta: Meta,
    #[serde(default)]
    elements: Elements,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(rename = "nextCursor")]
    next_cursor: Option<String>,
}

#[derive(Deserialize, Default)]
struct Elements {
    // Raw JSON, so one bad order is dead-lettered alone.
    #[serde(default)]
    order: Vec<Value>,
}

crate::pull::impl_source!(WalmartOrders);

/// The registry's constructor: one `[[connectors.walmart_orders]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg: WalmartOrdersConfig = parse_section(SECTION, section)?;
    Ok(Box::new(WalmartOrders::build(cfg)?))
}
