//! Shopify: the webhook receiver ([`webhook`], connector `shopify_webhook`) and the Admin API
//! orders backfill (connector `shopify_orders`), sharing one mapping ([`mapping`]) so both
//! paths produce the same event ids; and the GraphQL Admin API returns poller ([`returns`],
//! connector `shopify_returns`), keyed by the same order ids. Both Admin API connectors share
//! their client ([`admin`]).
//!
//! ```text
//!  Shopify ──POST /webhooks/shopify──► webhook ─► verify HMAC ─► payload ─► mapping ─► Publish
//!  Admin API ◄──GET orders.json────── backfill ──────────────────┘ (same events, same ids)
//!  Admin API ◄──POST graphql.json──── returns ─► returns::map ─────────────► order.returned
//! ```

pub mod admin;
pub mod config;
pub mod mapping;
pub mod orders;
pub mod payload;
pub mod returns;
pub mod webhook;

pub use config::{ShopifyShop, WebhookConfig};
pub use orders::{OrdersConfig, ShopifyOrders};
pub use returns::{ReturnsConfig, ShopifyReturns};
pub use webhook::ShopifyWebhook;

/// The webhook receiver's registry name.
pub const WEBHOOK_NAME: &str = "shopify_webhook";
/// Its metrics component and dead-letter stage.
pub const WEBHOOK_COMPONENT: &str = "ingest.shopify_webhook";
/// Its config section.
pub const WEBHOOK_SECTION: &str = "connectors.shopify_webhook";
