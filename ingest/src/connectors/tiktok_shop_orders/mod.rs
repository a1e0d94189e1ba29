//! `tiktok_shop_orders`: TikTok Shop Partner API order search, polled by update time with
//! `next_page_token` paging; every call signed with HMAC-SHA256.
//!
//! ```text
//!  POST /order/202309/orders/search?app_key=…&timestamp=…&shop_cipher=…&page_size=…
//!       [&page_token=…]&sign=…          body {"update_time_ge": from, "update_time_lt": to}
//!      └─ data.orders[] ─► map::order ─► order.placed / shipped / cancelled
//!      └─ data.next_page_token ─► the same request with page_token (until empty)
//! ```
//!
//! Assumed shapes, from the TikTok Shop Partner Center documentation (partner.tiktokshop.com:
//! "Order API 202309 > Get Order List", "Sign your API request", "Common error codes");
//! domain.md has no TikTok section, so these are the documented shapes as understood here,
//! not recorded traffic:
//! - the signature: the query parameters except `sign` and `access_token`, sorted by key and
//!   written `key` + `value`, after the request path, followed by the body; that string
//!   wrapped in the app secret on both sides; HMAC-SHA256 keyed with the app secret, lower-case
//!   hex. `timestamp` is Unix seconds (TikTok allows a few minutes of skew; a retry keeps the
//!   first attempt's signature);
//! - the access token travels in `x-tts-access-token`; every answer carries `code` (0 = OK)
//!   and `message`; a non-zero code fails the sync naming it. Token refresh (TikTok's own
//!   `/api/v2/token/refresh`, not OAuth) is not implemented: refresh the token out of band;
//! - orders: `id`, `status` (UNPAID, ON_HOLD, AWAITING_SHIPMENT, PARTIALLY_SHIPPING,
//!   AWAITING_COLLECTION, IN_TRANSIT, DELIVERED, COMPLETED, CANCELLED), `create_time`,
//!   `update_time`, `rts_sla_time`, `rts_time` (Unix seconds), `payment.total_amount`
//!   (string) and `payment.currency`, `line_items[]` (one unit each), `fulfillment_type`
//!   (FULFILLMENT_BY_SELLER / FULFILLMENT_BY_TIKTOK), `tracking_number`, `shipping_provider`,
//!   `cancellation_initiator` (SELLER / BUYER / SYSTEM), `cancel_reason`.

mod map;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hmac::{KeyInit, Mac};
use kpiflow_core::SourceMetrics;
use kpiflow_schemas::{Channel, SourceTz};
use reqwest::header::HeaderName;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::IngestError;
use crate::connector::{Connector, parse_section};
use crate::map::raw;
use crate::pull::{
    Emitter, HttpClient, Origin, PullConnector, PullDefaults, PullSettings, RateLimit, Request,
    Secret, SecretRef, Source, StaticToken, TokenHeader, Window,
};

pub use map::order as map_order;

/// The registry name.
pub const NAME: &str = "tiktok_shop_orders";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.tiktok_shop_orders";
/// The config section (an array: one table per shop).
pub const SECTION: &str = "connectors.tiktok_shop_orders";
/// The order search path.
pub const SEARCH_PATH: &str = "/order/202309/orders/search";

/// Near-real-time polling with the usual overlap.
pub const DEFAULTS: PullDefaults = PullDefaults {
    base_url: "https://open-api.tiktokglobalshop.com",
    interval: Duration::from_secs(5 * 60),
    overlap: Duration::from_secs(15 * 60),
    initial_lookback: Duration::from_secs(24 * 3600),
    max_window: Duration::from_secs(24 * 3600),
    rate_limit: Some(RateLimit {
        rate: 5.0,
        burst: 10,
    }),
};

fn d_page_size() -> u32 {
    50
}

/// One `[[connectors.tiktok_shop_orders]]` table: one TikTok Shop (shop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiktokShopOrdersConfig {
    /// The shop id events carry (the Kafka key).
    pub shop: String,
    /// The shop's `shop_cipher` (from Get Authorized Shops).
    pub shop_cipher: String,
    /// Orders per page, 1 to 100. Default `50`.
    #[serde(default = "d_page_size")]
    pub page_size: u32,
    /// The app key (`env:NAME` or `file:/path`).
    pub app_key: SecretRef,
    /// The app secret, the signing key (`env:NAME` or `file:/path`).
    pub app_secret: SecretRef,
    /// The shop's access token (`env:NAME` or `file:/path`).
    pub access_token: SecretRef,
    /// Polling, HTTP and cursor settings (defaults: every 5 minutes, 15 minutes overlap).
    #[serde(default)]
    pub pull: PullSettings,
}

/// The order source for one shop.
pub struct TiktokShopOrders {
    cfg: TiktokShopOrdersConfig,
    app_key: Secret,
    app_secret: Secret,
    origin: Origin,
    http: HttpClient,
}

impl TiktokShopOrders {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: TiktokShopOrdersConfig) -> Result<PullConnector, IngestError> {
        let key = |k: &str| format!("{SECTION}.{k}");
        crate::pull::settings::non_empty(&key("shop"), &cfg.shop)?;
        crate::pull::settings::non_empty(&key("shop_cipher"), &cfg.shop_cipher)?;
        if !(1..=100).contains(&cfg.page_size) {
            return Err(IngestError::config(
                key("page_size"),
                cfg.page_size,
                "must be between 1 and 100",
            ));
        }
        let pull = cfg.pull.resolve(SECTION, &DEFAULTS)?;
        let metrics = SourceMetrics::new(NAME, &cfg.shop);
        let token = cfg.access_token.resolve(&key("access_token"))?;
        let http = HttpClient::new(NAME, pull.http.clone(), metrics.clone())?.with_token(
            Arc::new(StaticToken(token)),
            TokenHeader::Named(HeaderName::from_static("x-tts-access-token")),
        );
        let origin = Origin {
            shop: cfg.shop.clone(),
            channel: Channel::TiktokShop,
            marketplace: "US".into(),
            source_tz: SourceTz::US_PACIFIC,
        };
        let source = TiktokShopOrders {
            app_key: cfg.app_key.resolve(&key("app_key"))?,
            app_secret: cfg.app_secret.resolve(&key("app_secret"))?,
            cfg,
            origin,
            http,
        };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let body = json!({
            "update_time_ge": window.from.timestamp(),
            "update_time_lt": window.to.timestamp(),
        })
        .to_string();
        let mut page_token: Option<String> = None;
        loop {
            let mut params = vec![
                ("app_key".to_string(), self.app_key.expose().to_string()),
                (
                    "timestamp".into(),
                    chrono::Utc::now().timestamp().to_string(),
                ),
                ("shop_cipher".into(), self.cfg.shop_cipher.clone()),
                ("page_size".into(), self.cfg.page_size.to_string()),
            ];
            if let Some(t) = &page_token {
                params.push(("page_token".into(), t.clone()));
            }
            let sign = sign(&self.app_secret, SEARCH_PATH, &params, &body);
            let mut req = Request::post(SEARCH_PATH.trim_start_matches('/'));
            for (k, v) in params {
                req = req.query(k, v);
            }
            let req = req.query("sign", sign).raw_json(body.clone().into_bytes());
            let page: Envelope = self.http.send(&req).await?.json(NAME)?;
            if page.code != 0 {
                return Err(IngestError::External {
                    system: NAME.into(),
                    detail: format!("{}: code {}: {}", req.describe(), page.code, page.message),
                    retryable: false,
                });
            }
            let data = page.data.unwrap_or_default();
            for o in &data.orders {
                out.record(map::order(o), &raw(o)).await?;
            }
            match data.next_page_token {
                Some(t) if !t.is_empty() => page_token = Some(t),
                _ => return Ok(()),
            }
        }
    }
}

/// TikTok Shop's request signature (see the module doc), lower-case hex.
pub fn sign(secret: &Secret, path: &str, params: &[(String, String)], body: &str) -> String {
    let mut sorted: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "sign" && k != "access_token")
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut text = String::from(path);
    for (k, v) in sorted {
        text.push_str(k);
        text.push_str(v);
    }
    text.push_str(body);
    let wrapped = format!("{0}{text}{0}", secret.expose());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(wrapped.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Deserialize)]
struct Envelope {
    code: i64,
    #[serde(default)]
    message: String,
    data: Option<Data>,
}

#[derive(Deserialize, Default)]
struct Data {
    #[serde(default)]
    orders: Vec<Value>,
    next_page_token: Option<String>,
}

impl Source for TiktokShopOrders {
    fn name(&self) -> &'static str {
        NAME
    }

    fn component(&self) -> &'static str {
        COMPONENT
    }

    fn origin(&self) -> &Origin {
        &self.origin
    }

    fn sync<'a, 'p: 'a>(
        &'a self,
        window: Window,
        out: &'a mut Emitter<'p>,
    ) -> BoxFuture<'a, Result<(), IngestError>> {
        Box::pin(self.read(window, out))
    }
}

/// The registry's constructor: one `[[connectors.tiktok_shop_orders]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg: TiktokShopOrdersConfig = parse_section(SECTION, section)?;
    Ok(Box::new(TiktokShopOrders::build(cfg)?))
}
