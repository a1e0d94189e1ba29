//! `shopify_returns`: a store's returns from the GraphQL Admin API (returns exist nowhere
//! else), polled through the orders they belong to → `order.returned`.
//!
//! ```text
//!  POST /admin/api/<version>/graphql.json        X-Shopify-Access-Token: <token>
//!      orders(first, after, query: "updated_at:>='from' AND updated_at:<'to'", sortKey: UPDATED_AT)
//!        { id createdAt updatedAt test returns(first) { id name status returnLineItems(first)
//!          { quantity returnReason } } }
//!      └─ orders.nodes[].returns.nodes[] ─► map ─► order.returned (OPEN or CLOSED returns)
//!      └─ orders.pageInfo { hasNextPage endCursor } ─► the same query with after = endCursor
//! ```
//!
//! **What counts.** A return whose status means the items are on their way back or are back
//! (`OPEN`: in progress, `CLOSED`: completed) is an `order.returned` of the units of its
//! lines, with the first line's `returnReason`; `REQUESTED` (not yet approved), `DECLINED` and
//! `CANCELED` are not (see [`map`]). The event id is the order's and the return's
//! (`shopify-<order id>-returned-<return id>`), so the overlap, a restart or the order's next
//! update re-read it under the same id and the processor counts it once. A return cancelled
//! after it was counted stays counted (the canonical events have no retraction).
//!
//! **Time basis.** Return rate counts on the ORDER's date (the catalog books `units_returned`
//! by `placed_at`): `placed_at` is the order's `createdAt`, the time `order.placed` carries
//! for the same order from `shopify_orders` and the webhook, whose order id (the numeric tail
//! of the order's gid) it shares. Events are timed at the order's `updatedAt`, the time the
//! poll saw the return (no return timestamp could be confirmed), in the store's zone as
//! `source_tz`.
//!
//! **Rate limits.** The GraphQL Admin API budgets query cost, not requests: a request whose
//! cost exceeds the points left is answered 200 with an `errors[].extensions.code` of
//! `THROTTLED` and `extensions.cost` (`requestedQueryCost`, `throttleStatus.currentlyAvailable`,
//! `throttleStatus.restoreRate`); it is retried after the wait for the missing points
//! ([`throttled`]). A 429 waits for its `Retry-After`. Any other GraphQL error fails the sync,
//! naming Shopify's message; the cursor does not move.
//!
//! **From the documentation as understood (unconfirmed against a live store), API version
//! 2025-10:** the fields queried (`Order.returns`, `Return.id`, `name`, `status` with
//! `ReturnStatus` values `CANCELED`, `CLOSED`, `DECLINED`, `OPEN`, `REQUESTED`;
//! `returnLineItems` nodes of the `ReturnLineItemType` interface with `quantity` and
//! `returnReason`, which later versions deprecate for `returnReasonDefinition`), the throttled
//! answer's shape (the `extensions` object at the top level, not inside the error), and
//! Shopify's query cost arithmetic ([`query_cost`]: a connection costs 2 plus `first` times
//! its node, an object 1, a scalar 0), which bounds the sizes to 1000 points. Whether
//! approving or closing a return moves its order's `updated_at` (the filter this connector
//! relies on) is not stated in the documentation either. Return lines' SKUs are not queried
//! (they cost a nested fulfilment line item each), so returns are shop-level. Fixtures:
//! `ingest/fixtures/shopify_returns/`.

mod map;

use std::time::Duration;

use kpiflow_schemas::{Fulfilment, SourceTz};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::admin::{self, Store, ceil_second, iso};
use super::config::ShopifyShop;
use crate::IngestError;
use crate::connector::Connector;
use crate::pull::secret::SecretRef;
use crate::pull::{
    Emitter, HttpClient, Origin, PullConnector, PullDefaults, PullSettings, RateLimit, Request,
    Window,
};

/// The registry name.
pub const NAME: &str = "shopify_returns";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.shopify_returns";
/// The config section (an array: one table per store).
pub const SECTION: &str = "connectors.shopify_returns";

/// Defaults: every 10 minutes, 15 minutes overlap, a day back on the first run. The GraphQL
/// API limits query cost, not requests (THROTTLED answers say how long to wait); one request
/// a second, two at once, keeps a store's other apps their share. The base URL default is
/// replaced by `https://<domain>/`.
pub const DEFAULTS: PullDefaults = PullDefaults {
    base_url: "https://example.myshopify.com/",
    interval: Duration::from_secs(10 * 60),
    overlap: Duration::from_secs(15 * 60),
    initial_lookback: Duration::from_secs(24 * 3600),
    max_window: Duration::from_secs(24 * 3600),
    rate_limit: Some(RateLimit {
        rate: 1.0,
        burst: 2,
    }),
};

/// The most a single query may cost (Shopify refuses costlier ones outright).
pub const MAX_QUERY_COST: u64 = 1000;

/// The query: orders updated in the window, oldest change first, with their returns.
const QUERY: &str = "query kpiflowReturns($first: Int!, $after: String, $query: String!, $returns: Int!, $lines: Int!) {
  orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {
    pageInfo { hasNextPage endCursor }
    nodes {
      id
      name
      createdAt
      updatedAt
      test
      returns(first: $returns) {
        pageInfo { hasNextPage }
        nodes {
          id
          name
          status
          returnLineItems(first: $lines) {
            pageInfo { hasNextPage }
            nodes { id quantity returnReason }
          }
        }
      }
    }
  }
}";

fn default_page_size() -> u32 {
    10
}
fn default_returns_per_order() -> u32 {
    5
}
fn default_lines_per_return() -> u32 {
    10
}

/// One `[[connectors.shopify_returns]]` table: one store, as its `shopify_orders` table names
/// it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnsConfig {
    /// The kpiflow shop id events carry; the same as the store's `shopify_orders` table's.
    pub shop: String,
    /// The store's `*.myshopify.com` domain; the API base URL is `https://<domain>/` unless
    /// `pull.base_url` says otherwise.
    pub domain: String,
    /// The Admin API access token with `read_returns` (`env:NAME` or `file:/path`).
    pub access_token: SecretRef,
    /// Admin API version in the path. Default `2025-10`.
    #[serde(default = "admin::default_api_version")]
    pub api_version: String,
    /// Orders per page (`orders(first:)`), 1 to 250. Default 10.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Returns read per order (`returns(first:)`), 1 to 250; an order with more is
    /// dead-lettered, naming this key. Default 5.
    #[serde(default = "default_returns_per_order")]
    pub returns_per_order: u32,
    /// Lines read per return (`returnLineItems(first:)`), 1 to 250; a return with more is
    /// dead-lettered (its units would be understated), naming this key. Default 10.
    #[serde(default = "default_lines_per_return")]
    pub lines_per_return: u32,
    /// Marketplace id on events. Default `US`.
    #[serde(default = "ShopifyShop::default_marketplace")]
    pub marketplace: String,
    /// The store's IANA time zone. Default `America/Los_Angeles`.
    #[serde(default = "ShopifyShop::default_time_zone")]
    pub time_zone: SourceTz,
    /// How the store's orders are fulfilled. Default `merchant`.
    #[serde(default = "ShopifyShop::default_fulfilment")]
    pub fulfilment: Fulfilment,
    /// Polling, HTTP and cursor settings.
    #[serde(default)]
    pub pull: PullSettings,
}

/// The requested cost of [`QUERY`] for these sizes, as Shopify computes it before running a
/// query: a connection costs 2 plus `first` times its node; each order, return and line is an
/// object (1); scalars are free. Defaults: 2 + 10 × (1 + 2 + 5 × (1 + 2 + 10 × 1)) = 682.
pub fn query_cost(page_size: u32, returns_per_order: u32, lines_per_return: u32) -> u64 {
    let lines = 2 + u64::from(lines_per_return);
    let returns = 2 + u64::from(returns_per_order) * (1 + lines);
    2 + u64::from(page_size) * (1 + returns)
}

impl ReturnsConfig {
    /// Parses one table (without validating).
    pub fn from_value(value: &Value) -> Result<Self, IngestError> {
        crate::connector::parse_section(SECTION, value.clone())
    }

    /// The store's labels (returns need no handling or delivery promise).
    pub fn store(&self) -> ShopifyShop {
        ShopifyShop {
            shop: self.shop.clone(),
            marketplace: self.marketplace.clone(),
            time_zone: self.time_zone,
            fulfilment: self.fulfilment,
            handling_time: ShopifyShop::default_handling_time(),
            delivery_time: None,
        }
    }

    /// Checks what this connector owns (the `pull` table is checked when resolved).
    pub fn validate(&self) -> Result<(), IngestError> {
        let shops = [(self.domain.clone(), self.store())].into();
        super::config::validate_shops(SECTION, &shops)?;
        admin::validate_api_version(SECTION, &self.api_version)?;
        for (key, n) in [
            ("page_size", self.page_size),
            ("returns_per_order", self.returns_per_order),
            ("lines_per_return", self.lines_per_return),
        ] {
            if !(1..=250).contains(&n) {
                return Err(IngestError::config(
                    format!("{SECTION}.{key}"),
                    n,
                    "must be between 1 and 250",
                ));
            }
        }
        let cost = query_cost(
            self.page_size,
            self.returns_per_order,
            self.lines_per_return,
        );
        if cost > MAX_QUERY_COST {
            return Err(IngestError::config(
                format!("{SECTION}.page_size"),
                self.page_size,
                format!(
                    "with returns_per_order = {} and lines_per_return = {} the query would cost {cost} points (2 + page_size × (3 + returns_per_order × (3 + lines_per_return))), more than the {MAX_QUERY_COST} Shopify allows one query; lower one of them",
                    self.returns_per_order, self.lines_per_return
                ),
            ));
        }
        Ok(())
    }
}

/// The returns source of one store.
pub struct ShopifyReturns {
    cfg: ReturnsConfig,
    origin: Origin,
    http: HttpClient,
}

impl ShopifyReturns {
    /// Validates `cfg` and builds the connector, without I/O: the token is read when a
    /// request needs it, and checked here.
    pub fn build(cfg: ReturnsConfig) -> Result<PullConnector, IngestError> {
        cfg.validate()?;
        let store = cfg.store();
        let client = Store {
            name: NAME,
            section: SECTION,
            labels: &store,
            domain: &cfg.domain,
            access_token: &cfg.access_token,
            pull: &cfg.pull,
        }
        .client(&DEFAULTS)?;
        let source = ShopifyReturns {
            cfg,
            origin: client.origin,
            http: client.http.with_throttle_detector(throttled),
        };
        Ok(PullConnector::new(
            Box::new(source),
            client.pull,
            client.metrics,
        ))
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let path = format!("admin/api/{}/graphql.json", self.cfg.api_version);
        // Whole seconds, the end widened outwards (`<` excludes it).
        let filter = format!(
            "updated_at:>='{}' AND updated_at:<'{}'",
            iso(window.from),
            iso(ceil_second(window.to))
        );
        let mut after: Option<String> = None;
        loop {
            let body = json!({
                "query": QUERY,
                "variables": {
                    "first": self.cfg.page_size,
                    "after": after,
                    "query": filter,
                    "returns": self.cfg.returns_per_order,
                    "lines": self.cfg.lines_per_return,
                },
            });
            let resp = self.http.send(&Request::post(&path).json(&body)).await?;
            let answer: Answer = resp.json(NAME)?;
            if let Some(errors) = answer.errors.as_ref().and_then(messages) {
                return Err(IngestError::External {
                    system: NAME.into(),
                    detail: format!("{}: GraphQL errors: {errors}", resp.request),
                    retryable: false,
                });
            }
            let Some(data) = answer.data else {
                return Err(IngestError::Input {
                    source_name: NAME.into(),
                    problem: format!("{}: response field `data` is missing", resp.request),
                });
            };
            let limits = map::Limits {
                returns_per_order: self.cfg.returns_per_order,
                lines_per_return: self.cfg.lines_per_return,
            };
            for order in &data.orders.nodes {
                for (facts, raw) in map::order(order, self.cfg.fulfilment, limits) {
                    out.record(facts, &raw).await?;
                }
            }
            let info = data.orders.page_info;
            match info.end_cursor {
                Some(c) if info.has_next_page && !c.is_empty() => after = Some(c),
                _ => return Ok(()),
            }
        }
    }
}

/// Recognises a THROTTLED answer (HTTP 200, `errors[].extensions.code`): wait for the points
/// the query needs, `(requestedQueryCost − currentlyAvailable) / restoreRate` seconds, from
/// the answer's `extensions.cost`; without those figures, back off.
pub fn throttled(_: StatusCode, _: &HeaderMap, body: &[u8]) -> Option<Option<Duration>> {
    // Cheap test first: every successful page passes through here.
    if !body.windows(9).any(|w| w == b"THROTTLED") {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let hit = v["errors"]
        .as_array()?
        .iter()
        .any(|e| e["extensions"]["code"] == "THROTTLED");
    if !hit {
        return None;
    }
    let cost = &v["extensions"]["cost"];
    let wait = (|| {
        let needed = cost["requestedQueryCost"].as_f64()?;
        let left = cost["throttleStatus"]["currentlyAvailable"].as_f64()?;
        let rate = cost["throttleStatus"]["restoreRate"].as_f64()?;
        let secs = (needed - left) / rate;
        (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
    })();
    Some(wait)
}

/// Shopify's messages (with their codes) of a non-empty `errors` list, `None` for none.
fn messages(errors: &Value) -> Option<String> {
    let list = errors.as_array()?;
    if list.is_empty() {
        return None;
    }
    let each: Vec<String> = list
        .iter()
        .map(|e| {
            let message = e["message"]
                .as_str()
                .map_or_else(|| e.to_string(), str::to_string);
            match e["extensions"]["code"].as_str() {
                Some(code) => format!("{message} ({code})"),
                None => message,
            }
        })
        .collect();
    Some(each.join("; "))
}

#[derive(Deserialize)]
struct Answer {
    data: Option<Data>,
    #[serde(default)]
    errors: Option<Value>,
}

#[derive(Deserialize)]
struct Data {
    orders: Orders,
}

#[derive(Deserialize)]
struct Orders {
    // Raw JSON, so one bad order or return is dead-lettered alone.
    #[serde(default)]
    nodes: Vec<Value>,
    #[serde(rename = "pageInfo")]
    page_info: PageInfo,
}

#[derive(Deserialize)]
struct PageInfo {
    #[serde(rename = "hasNextPage")]
    has_next_page: bool,
    #[serde(rename = "endCursor")]
    end_cursor: Option<String>,
}

crate::pull::impl_source!(ShopifyReturns);

/// Builds the connector from one `[[connectors.shopify_returns]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    Ok(Box::new(ShopifyReturns::build(ReturnsConfig::from_value(
        &section,
    )?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/fixtures/shopify_returns/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn a_throttled_answer_waits_for_the_missing_points() {
        let h = HeaderMap::new();
        // (682 requested − 632 available) / 100 restored a second = 0.5 s.
        assert_eq!(
            throttled(StatusCode::OK, &h, &fixture("throttled.json")),
            Some(Some(Duration::from_millis(500)))
        );
        let page = fixture("orders-page-1.json");
        assert_eq!(throttled(StatusCode::OK, &h, &page), None);
        let bare = br#"{"errors":[{"message":"Throttled","extensions":{"code":"THROTTLED"}}]}"#;
        assert_eq!(throttled(StatusCode::OK, &h, bare), Some(None));
        let other = fixture("error-undefined-field.json");
        assert_eq!(throttled(StatusCode::OK, &h, &other), None);
    }

    #[test]
    fn graphql_errors_are_named_with_their_codes() {
        let v: Value = serde_json::from_slice(&fixture("error-undefined-field.json")).unwrap();
        assert_eq!(
            messages(&v["errors"]).unwrap(),
            "Field 'returnz' doesn't exist on type 'Order' (undefinedField)"
        );
        assert_eq!(messages(&json!([])), None);
    }

    #[test]
    fn the_query_cost_is_bounded() {
        // 2 + 10 × (1 + 2 + 5 × (1 + 2 + 10)) = 2 + 10 × 68 = 682.
        assert_eq!(query_cost(10, 5, 10), 682);
        let v = json!({"shop": "shop-003", "domain": "acme-ceramics.myshopify.com",
            "access_token": "env:T", "page_size": 20});
        let c = ReturnsConfig::from_value(&v).unwrap();
        // 2 + 20 × 68 = 1362.
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("bad config: `connectors.shopify_returns.page_size` = 20: with returns_per_order = 5 and lines_per_return = 10 the query would cost 1362 points"),
            "{err}"
        );
        let c = ReturnsConfig::from_value(&json!({"shop": "s",
            "domain": "acme-ceramics.myshopify.com", "access_token": "env:T"}))
        .unwrap();
        c.validate().unwrap();
        let err = ReturnsConfig::from_value(&json!({"shop": "s", "domain": "d.myshopify.com",
            "access_token": "env:T", "lines_per_retrun": 3}))
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `lines_per_retrun`"), "{err}");
    }
}
