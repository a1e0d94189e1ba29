//! `shopify_orders`: the Admin API orders backfill and poller, through the shared pull
//! framework ([`crate::pull`]), producing the webhook's events and ids.
//!
//! ```text
//!  GET /admin/api/<version>/orders.json?status=any&updated_at_min=from&updated_at_max=to
//!                                        &limit=250&order=updated_at asc
//!      X-Shopify-Access-Token: <token>
//!      └─ orders[] ─► mapping (Facts::All) ─► order.placed / paid / shipped / cancelled / refunded
//!      └─ Link: <…orders.json?limit=250&page_info=…>; rel="next" ─► GET that URL (until none)
//! ```
//!
//! Shopify's cursor paging: after the first page only `limit` and `page_info` may be sent, so
//! the next page is requested exactly as the `Link` header gives it. The window is the
//! runner's (stored high-water mark minus `overlap`), checkpointed after each flushed step;
//! 429s are waited out per `Retry-After` by the HTTP client; REST Admin's leaky bucket (2
//! requests/s, bucket of 40) is the default client-side rate.

use std::time::Duration;

use chrono::Utc;
use kpiflow_schemas::{Fulfilment, SourceTz};
use reqwest::header::{HeaderMap, LINK};
use serde::Deserialize;
use serde_json::Value;

use super::admin::{self, Store, ceil_second, iso};
use super::config::ShopifyShop;
use super::mapping::{Facts, Mapper};
use super::payload::{Order, decode};
use crate::IngestError;
use crate::connector::Connector;
use crate::pull::secret::SecretRef;
use crate::pull::{
    Emitter, HttpClient, Origin, PullConnector, PullDefaults, PullSettings, RateLimit, Request,
    Window,
};

/// The registry name.
pub const NAME: &str = "shopify_orders";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.shopify_orders";
/// The config section (an array: one table per store).
pub const SECTION: &str = "connectors.shopify_orders";

/// Defaults: every 5 minutes, 15 minutes overlap, a day back on the first run, REST Admin's
/// 2 requests/s with a bucket of 40. The base URL default is replaced by `https://<domain>/`.
pub const DEFAULTS: PullDefaults = PullDefaults {
    base_url: "https://example.myshopify.com/",
    interval: Duration::from_secs(5 * 60),
    overlap: Duration::from_secs(15 * 60),
    initial_lookback: Duration::from_secs(24 * 3600),
    max_window: Duration::from_secs(24 * 3600),
    rate_limit: Some(RateLimit {
        rate: 2.0,
        burst: 40,
    }),
};

fn default_page_size() -> u32 {
    250
}

/// One `[[connectors.shopify_orders]]` table: one store.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    /// The kpiflow shop id events carry (and `kpiflow backfill --shop` names).
    pub shop: String,
    /// The store's `*.myshopify.com` domain; the API base URL is `https://<domain>/` unless
    /// `pull.base_url` says otherwise.
    pub domain: String,
    /// The Admin API access token (`env:NAME` or `file:/path`).
    pub access_token: SecretRef,
    /// Admin API version in the path. Default `2025-10`.
    #[serde(default = "admin::default_api_version")]
    pub api_version: String,
    /// `limit` per page, 1 to 250. Default 250.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Marketplace id on events. Default `US`.
    #[serde(default = "ShopifyShop::default_marketplace")]
    pub marketplace: String,
    /// The store's IANA time zone. Default `America/Los_Angeles`.
    #[serde(default = "ShopifyShop::default_time_zone")]
    pub time_zone: SourceTz,
    /// How the store's orders are fulfilled. Default `merchant`.
    #[serde(default = "ShopifyShop::default_fulfilment")]
    pub fulfilment: Fulfilment,
    /// The promised handling time (ship-by = `created_at` + this). Default 2 days.
    #[serde(
        default = "ShopifyShop::default_handling_time",
        with = "humantime_serde"
    )]
    pub handling_time: Duration,
    /// The promised delivery time (deliver-by = `created_at` + this), as the webhook's
    /// `shops` tables have it; the same value on both keeps their events identical. Default
    /// unset (no promise known).
    #[serde(default, with = "humantime_serde")]
    pub delivery_time: Option<Duration>,
    /// Polling, HTTP and cursor settings.
    #[serde(default)]
    pub pull: PullSettings,
}

impl OrdersConfig {
    /// Parses one table (without validating).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, IngestError> {
        crate::connector::parse_section(SECTION, value.clone())
    }

    /// The store's labels, as the webhook's `shops` tables hold them.
    pub fn store(&self) -> ShopifyShop {
        ShopifyShop {
            shop: self.shop.clone(),
            marketplace: self.marketplace.clone(),
            time_zone: self.time_zone,
            fulfilment: self.fulfilment,
            handling_time: self.handling_time,
            delivery_time: self.delivery_time,
        }
    }

    /// Checks what this connector owns (the `pull` table is checked when resolved).
    pub fn validate(&self) -> Result<(), IngestError> {
        let shops = [(self.domain.clone(), self.store())].into();
        super::config::validate_shops(SECTION, &shops)?;
        admin::validate_api_version(SECTION, &self.api_version)?;
        if !(1..=250).contains(&self.page_size) {
            return Err(IngestError::config(
                format!("{SECTION}.page_size"),
                self.page_size,
                "must be between 1 and 250",
            ));
        }
        Ok(())
    }
}

/// The orders source of one store.
pub struct ShopifyOrders {
    cfg: OrdersConfig,
    store: ShopifyShop,
    origin: Origin,
    http: HttpClient,
}

impl ShopifyOrders {
    /// Validates `cfg` and builds the connector, without I/O: the token is read when a
    /// request needs it, and checked here.
    pub fn build(cfg: OrdersConfig) -> Result<PullConnector, IngestError> {
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
        let source = ShopifyOrders {
            store,
            cfg,
            origin: client.origin,
            http: client.http,
        };
        Ok(PullConnector::new(
            Box::new(source),
            client.pull,
            client.metrics,
        ))
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let mut next: Option<String> = None;
        loop {
            let req = match &next {
                Some(url) => Request::get(url.clone()),
                None => Request::get(format!("admin/api/{}/orders.json", self.cfg.api_version))
                    .query("status", "any")
                    .query("updated_at_min", iso(window.from))
                    // Whole seconds, widened outwards.
                    .query("updated_at_max", iso(ceil_second(window.to)))
                    .query("limit", self.cfg.page_size.to_string())
                    .query("order", "updated_at asc"),
            };
            let resp = self.http.send(&req).await?;
            let page: Page = resp.json(NAME)?;
            let mapper = Mapper {
                shop: &self.store,
                source: NAME,
                now: Utc::now(),
            };
            for raw in &page.orders {
                out.received();
                let bytes = raw.to_string().into_bytes();
                let mapped = decode::<Order>(&bytes).and_then(|o| {
                    if o.test {
                        Ok(Vec::new())
                    } else {
                        mapper.order(&o, Facts::All)
                    }
                });
                match mapped {
                    Ok(events) => {
                        for e in events {
                            out.emit(e.header, e.body, &bytes).await?;
                        }
                    }
                    Err(reason) => {
                        let reason = if reason.starts_with("order ") {
                            format!("shopify {reason}")
                        } else {
                            format!("shopify order {}: {reason}", raw["id"])
                        };
                        out.dead_letter(&reason, &bytes).await?;
                    }
                }
            }
            match next_link(&resp.headers) {
                Some(url) => next = Some(url),
                None => return Ok(()),
            }
        }
    }
}

/// The `rel="next"` URL of a `Link` header, e.g.
/// `<https://x.myshopify.com/admin/api/2025-10/orders.json?limit=250&page_info=abc>; rel="next"`.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|part| {
            part.split(';')
                .skip(1)
                .any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\""))
        })
        .and_then(|part| {
            let s = part.trim();
            let url = s.strip_prefix('<')?.split_once('>')?.0;
            Some(url.to_string())
        })
}

#[derive(Deserialize)]
struct Page {
    // Orders stay raw JSON so one bad order is dead-lettered alone.
    #[serde(default)]
    orders: Vec<Value>,
}

crate::pull::impl_source!(ShopifyOrders);

/// Builds the connector from one `[[connectors.shopify_orders]]` table.
pub(crate) fn build(section: serde_json::Value) -> Result<Box<dyn Connector>, IngestError> {
    Ok(Box::new(ShopifyOrders::build(OrdersConfig::from_value(
        &section,
    )?)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn the_next_link_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(
                "<https://a.myshopify.com/admin/api/2025-10/orders.json?limit=2&page_info=prev1>; rel=\"previous\", \
                 <https://a.myshopify.com/admin/api/2025-10/orders.json?limit=2&page_info=next2>; rel=\"next\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://a.myshopify.com/admin/api/2025-10/orders.json?limit=2&page_info=next2")
        );
        h.insert(
            LINK,
            HeaderValue::from_static("<https://a/x?page_info=p>; rel=\"previous\""),
        );
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn config_errors_name_key_and_value() {
        let v = serde_json::json!({
            "domain": "acme.myshopify.com", "access_token": "env:T",
            "api_version": "latest", "shop": "shop-003"
        });
        let c = OrdersConfig::from_value(&v).unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "bad config: `connectors.shopify_orders.api_version` = \"latest\": expected a version such as \"2025-10\""
        );
        let v = serde_json::json!({"domain": "acme.myshopify.com", "access_token": "shpat_pasted",
            "shop": "s"});
        let err = OrdersConfig::from_value(&v).unwrap_err().to_string();
        assert!(!err.contains("shpat_pasted"), "{err}");
    }
}
