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
//! - the signature, `x-tts-access-token` and the `code`/`message` envelope: see [`api`],
//!   which `tiktok_shop_returns` shares;
//! - orders: `id`, `status` (UNPAID, ON_HOLD, AWAITING_SHIPMENT, PARTIALLY_SHIPPING,
//!   AWAITING_COLLECTION, IN_TRANSIT, DELIVERED, COMPLETED, CANCELLED), `create_time`,
//!   `update_time`, `rts_sla_time`, `rts_time` (Unix seconds), `payment.total_amount`
//!   (string) and `payment.currency`, `line_items[]` (one unit each), `fulfillment_type`
//!   (FULFILLMENT_BY_SELLER / FULFILLMENT_BY_TIKTOK), `tracking_number`, `shipping_provider`,
//!   `cancellation_initiator` (SELLER / BUYER / SYSTEM), `cancel_reason`.

pub mod api;
pub mod lookup;
pub(crate) mod map;

use std::time::Duration;

use kpiflow_schemas::{Channel, SourceTz};
use serde_json::Value;

use crate::IngestError;
use crate::connector::{Connector, parse_section};
use crate::map::raw;
use crate::pull::{Emitter, Origin, PullConnector, PullDefaults, RateLimit, Window};

pub use api::{Search, ShopApi, TiktokShopConfig, sign};
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

/// One `[[connectors.tiktok_shop_orders]]` table (the keys every TikTok Shop table takes).
pub type TiktokShopOrdersConfig = TiktokShopConfig;

/// The order source for one shop.
pub struct TiktokShopOrders {
    cfg: TiktokShopOrdersConfig,
    origin: Origin,
    api: ShopApi,
}

impl TiktokShopOrders {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: TiktokShopOrdersConfig) -> Result<PullConnector, IngestError> {
        let pull = cfg.pull.resolve(SECTION, &DEFAULTS)?;
        let (api, metrics) = ShopApi::new(NAME, SECTION, &cfg, &pull)?;
        let origin = Origin {
            shop: cfg.shop.clone(),
            channel: Channel::TiktokShop,
            marketplace: "US".into(),
            source_tz: SourceTz::US_PACIFIC,
        };
        let source = TiktokShopOrders { cfg, origin, api };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let mut pages = Search::new(SEARCH_PATH, "orders", self.cfg.page_size, &window);
        while let Some(orders) = pages.next_page(&self.api).await? {
            for o in &orders {
                out.record(map::order(o), &raw(o)).await?;
            }
        }
        Ok(())
    }
}

crate::pull::impl_source!(TiktokShopOrders);

/// The registry's constructor: one `[[connectors.tiktok_shop_orders]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg: TiktokShopOrdersConfig = parse_section(SECTION, section)?;
    Ok(Box::new(TiktokShopOrders::build(cfg)?))
}
