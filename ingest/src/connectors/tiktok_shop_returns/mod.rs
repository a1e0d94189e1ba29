//! `tiktok_shop_returns`: TikTok Shop Partner API return search ("Return and Refund API
//! 202309"), polled by update time with `next_page_token` paging → `order.returned` and
//! `order.refunded`, counted on the order's date read with Get Order Detail.
//!
//! ```text
//!  POST /return_refund/202309/returns/search?app_key=…&timestamp=…&shop_cipher=…&page_size=…
//!       [&page_token=…]&sign=…          body {"update_time_ge": from, "update_time_lt": to}
//!      └─ data.return_orders[] ─► GET /order/202309/orders?ids=a,b,… (create_time,
//!                                 fulfillment_type; once per order, cached, 50 ids a call)
//!                              ─► map::return_order ─► order.returned / order.refunded
//!      └─ data.next_page_token ─► the same request with page_token (until empty)
//! ```
//!
//! Signing, `x-tts-access-token`, the `code`/`message` envelope and paging are
//! `tiktok_shop_orders`' ([`crate::connectors::tiktok_shop_orders::api`]); the table takes the
//! same keys and defaults as a `[[connectors.tiktok_shop_orders]]` table.
//!
//! **Time basis.** Return rate and refund rate count on the ORDER's date (the catalog books
//! both by `placed_at`), which a return does not carry: each order's `create_time` (the time
//! `tiktok_shop_orders` books the placement at) is read once with Get Order Detail and
//! cached. Polling by `update_time` sees a return again each time its status moves, so a
//! return requested weeks ago is published when it completes.
//!
//! **Shapes**, from the TikTok Shop Partner Center documentation ("Return and Refund API
//! 202309 > Search Returns", "Order API 202309 > Get Order Detail"), as understood and
//! cross-read with two public SDKs; domain.md has no TikTok section, so none of this is
//! recorded traffic — verify against a sandbox shop:
//! - documented as understood: the path and its query; the body filters `update_time_ge` /
//!   `update_time_lt` (Unix seconds); `data.return_orders[]`, `data.next_page_token`;
//!   per return `return_id`, `order_id`, `return_type` (REFUND, RETURN_AND_REFUND,
//!   REPLACEMENT), `return_status` (see [`map`]), `create_time`, `update_time` (Unix seconds),
//!   `return_reason`, `return_reason_text`, `role`, `refund_amount {currency, refund_total,
//!   refund_subtotal, refund_shipping_fee, refund_tax}` (amounts as strings, parsed as exact
//!   decimals), `return_line_items[]` with `return_line_item_id`, `order_line_item_id`,
//!   `sku_id`, `seller_sku` and their own `refund_amount`;
//! - unconfirmed: what each status means for the item's whereabouts (SUCCESS read as "the
//!   package was accepted, the refund is under way"), that a return line item is one unit,
//!   `can_buyer_keep_item`, the values of `role` (BUYER, SELLER, SYSTEM, OPERATOR) and of
//!   `return_reason` (the buyer-remorse endings in [`map::BUYER_REASONS`]), the page-size
//!   maximum (taken as the order search's 100) and Get Order Detail's 50 ids a call.
//!
//! A return that does not fit is dead-lettered naming the field and value.

mod map;

use kpiflow_schemas::{Channel, SourceTz};
use serde_json::Value;

use crate::IngestError;
use crate::connector::{Connector, parse_section};
use crate::connectors::tiktok_shop_orders::lookup::OrderLookup;
use crate::connectors::tiktok_shop_orders::{self, Search, ShopApi, TiktokShopConfig};
use crate::map::raw;
use crate::pull::{Emitter, Origin, PullConnector, Window};

pub use crate::connectors::tiktok_shop_orders::lookup::DETAIL_PATH;
pub use map::BUYER_REASONS;

/// The registry name.
pub const NAME: &str = "tiktok_shop_returns";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.tiktok_shop_returns";
/// The config section (an array: one table per shop).
pub const SECTION: &str = "connectors.tiktok_shop_returns";
/// The return search path.
pub const SEARCH_PATH: &str = "/return_refund/202309/returns/search";

/// One `[[connectors.tiktok_shop_returns]]` table: the keys of a `tiktok_shop_orders` table
/// (the shop's, with the same credentials). Defaults too: every 5 minutes, 15 minutes overlap,
/// 5 requests a second shared with Get Order Detail.
pub type TiktokShopReturnsConfig = TiktokShopConfig;

/// The returns source for one shop.
pub struct TiktokShopReturns {
    cfg: TiktokShopReturnsConfig,
    origin: Origin,
    api: ShopApi,
    orders: OrderLookup,
}

impl TiktokShopReturns {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: TiktokShopReturnsConfig) -> Result<PullConnector, IngestError> {
        let pull = cfg.pull.resolve(SECTION, &tiktok_shop_orders::DEFAULTS)?;
        let (api, metrics) = ShopApi::new(NAME, SECTION, &cfg, &pull)?;
        let origin = Origin {
            shop: cfg.shop.clone(),
            channel: Channel::TiktokShop,
            marketplace: "US".into(),
            source_tz: SourceTz::US_PACIFIC,
        };
        let source = TiktokShopReturns {
            cfg,
            origin,
            api,
            orders: OrderLookup::default(),
        };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let mut pages = Search::new(SEARCH_PATH, "return_orders", self.cfg.page_size, &window);
        while let Some(returns) = pages.next_page(&self.api).await? {
            // One Get Order Detail call for the page's orders not yet cached.
            let ids = returns.iter().filter_map(map::needs_order).collect();
            let orders = self.orders.get(&self.api, ids).await?;
            for ro in &returns {
                let mapped = map::return_order(ro, &|id| orders.get(id).copied());
                out.record(mapped, &raw(ro)).await?;
            }
        }
        Ok(())
    }
}

crate::pull::impl_source!(TiktokShopReturns);

/// The registry's constructor: one `[[connectors.tiktok_shop_returns]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg: TiktokShopReturnsConfig = parse_section(SECTION, section)?;
    Ok(Box::new(TiktokShopReturns::build(cfg)?))
}
