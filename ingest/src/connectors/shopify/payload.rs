//! Shopify's order and refund JSON (REST Admin API and webhook payloads share the shape),
//! reduced to the fields kpiflow reads; unknown fields are ignored.

use chrono::{DateTime, Utc};
use kpiflow_schemas::Decimal;
use serde::{Deserialize, Deserializer};

/// A Shopify timestamp: RFC 3339 with the shop's offset (`2026-11-02T12:03:00-05:00`), kept in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub DateTime<Utc>);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| Time(t.with_timezone(&Utc)))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "expected an RFC 3339 time such as \"2026-11-02T12:03:00-05:00\", got {s:?}"
                ))
            })
    }
}

/// An order (`orders/*` webhooks, `GET /admin/api/<version>/orders.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    /// The order id (64-bit).
    pub id: u64,
    /// When the order was placed (not paid).
    pub created_at: Time,
    /// When it was processed, i.e. paid for paid orders.
    #[serde(default)]
    pub processed_at: Option<Time>,
    /// Last change.
    #[serde(default)]
    pub updated_at: Option<Time>,
    /// Set once cancelled.
    #[serde(default)]
    pub cancelled_at: Option<Time>,
    /// `customer`, `fraud`, `inventory`, `declined`, `staff` or `other`.
    #[serde(default)]
    pub cancel_reason: Option<String>,
    /// `pending`, `authorized`, `partially_paid`, `paid`, `partially_refunded`, `refunded`, `voided`.
    #[serde(default)]
    pub financial_status: Option<String>,
    /// The order total in the shop currency, a decimal string.
    pub total_price: Decimal,
    /// The shop currency (ISO 4217).
    pub currency: String,
    /// Ordered lines.
    #[serde(default)]
    pub line_items: Vec<LineItem>,
    /// Fulfilments (shipments) so far.
    #[serde(default)]
    pub fulfillments: Vec<Fulfillment>,
    /// Refunds so far.
    #[serde(default)]
    pub refunds: Vec<Refund>,
    /// A test order (bogus gateway): not a sale.
    #[serde(default)]
    pub test: bool,
}

/// One order line.
#[derive(Debug, Clone, Deserialize)]
pub struct LineItem {
    /// Units.
    pub quantity: u32,
    /// Seller SKU, if set.
    #[serde(default)]
    pub sku: Option<String>,
}

/// One fulfilment of (part of) an order: an element of an order's `fulfillments`, or the
/// body of a `fulfillments/create` / `fulfillments/update` webhook.
#[derive(Debug, Clone, Deserialize)]
pub struct Fulfillment {
    /// The fulfilment id.
    pub id: u64,
    /// The order it fulfils (always in the webhook body).
    #[serde(default)]
    pub order_id: Option<u64>,
    /// When it was created, i.e. ship-confirmed.
    pub created_at: Time,
    /// Last change: for a `delivered` shipment status, when the carrier's delivery reached
    /// Shopify (a fulfilment carries no delivery time of its own).
    #[serde(default)]
    pub updated_at: Option<Time>,
    /// `pending`, `open`, `success`, `cancelled`, `error` or `failure`.
    #[serde(default)]
    pub status: Option<String>,
    /// Carrier name.
    #[serde(default)]
    pub tracking_company: Option<String>,
    /// Tracking number (the first, when there are several).
    #[serde(default)]
    pub tracking_number: Option<String>,
    /// Every tracking number of the fulfilment.
    #[serde(default)]
    pub tracking_numbers: Vec<String>,
    /// The carrier's latest status as Shopify tracks it: `label_printed`, `label_purchased`,
    /// `attempted_delivery`, `ready_for_pickup`, `confirmed`, `in_transit`,
    /// `out_for_delivery`, `delivered`, `failure`; null before any.
    #[serde(default)]
    pub shipment_status: Option<String>,
    /// The lines it ships.
    #[serde(default)]
    pub line_items: Vec<LineItem>,
}

/// A refund (`refunds/create`, or an element of an order's `refunds`).
#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    /// The refund id.
    pub id: u64,
    /// The refunded order.
    pub order_id: u64,
    /// When the refund was created.
    pub created_at: Time,
    /// When it was processed.
    #[serde(default)]
    pub processed_at: Option<Time>,
    /// The money movements; `kind = "refund"`, `status = "success"` ones are what the buyer got.
    #[serde(default)]
    pub transactions: Vec<Transaction>,
}

/// One payment transaction.
#[derive(Debug, Clone, Deserialize)]
pub struct Transaction {
    /// `refund`, `sale`, `capture`, `authorization`, `void`, …
    pub kind: String,
    /// `success`, `pending`, `failure` or `error`.
    #[serde(default)]
    pub status: Option<String>,
    /// Amount, a decimal string.
    pub amount: Decimal,
    /// Currency, if given (else the order's).
    #[serde(default)]
    pub currency: Option<String>,
}

/// Decodes `T` from JSON bytes; the error names the field path and the problem.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            format!("not JSON: {inner}")
        } else {
            let mut problem = inner.to_string();
            if let Some(i) = problem.rfind(" at line ") {
                problem.truncate(i);
            }
            format!("field `{path}`: {problem}")
        }
    })
}
