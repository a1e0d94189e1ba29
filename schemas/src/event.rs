//! The canonical event: a header every event carries and one versioned body per schema.
//!
//! Wire layout (JSON, one object per Kafka record):
//!
//! ```json
//! { "event_id": "sim-1-42", "schema": "order.placed", "schema_version": 1,
//!   "source": "simulator", "shop": "shop-001", "channel": "amazon",
//!   "marketplace": "ATVPDKIKX0DER", "sku": "SKU-7",
//!   "event_time": "2026-11-02T17:03:00Z", "source_tz": "America/Los_Angeles",
//!   "ingest_time": "2026-11-02T17:03:05Z",
//!   "payload": { "order_id": "113-...", "total": {"amount": "25.98", "currency": "USD"}, … } }
//! ```
//!
//! Readers tolerate unknown fields (a newer producer may add optional ones within a version);
//! a breaking change bumps `schema_version`, and [`Event::from_json`] names what it supports.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::SchemaError;
use crate::money::{Decimal, Money};

/// The sales channel a shop sells through.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Amazon (Seller Central).
    Amazon,
    /// Walmart Marketplace.
    Walmart,
    /// The seller's own Shopify store (DTC).
    Shopify,
    /// TikTok Shop.
    TiktokShop,
}

impl Channel {
    /// All channels, in a stable order.
    pub const ALL: [Channel; 4] = [
        Channel::Amazon,
        Channel::Walmart,
        Channel::Shopify,
        Channel::TiktokShop,
    ];

    /// The wire name, e.g. `tiktok_shop`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Amazon => "amazon",
            Channel::Walmart => "walmart",
            Channel::Shopify => "shopify",
            Channel::TiktokShop => "tiktok_shop",
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IANA time zone such as `America/Los_Angeles`: the zone the source reports its local
/// dates in (an ad account's zone, a marketplace's business day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceTz(pub chrono_tz::Tz);

impl SourceTz {
    /// US Pacific, Amazon's business-day zone.
    pub const US_PACIFIC: SourceTz = SourceTz(chrono_tz::America::Los_Angeles);
}

impl Serialize for SourceTz {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for SourceTz {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = Cow::<str>::deserialize(d)?;
        name.parse::<chrono_tz::Tz>().map(SourceTz).map_err(|_| {
            serde::de::Error::custom(format!(
                "expected an IANA time zone such as \"America/Los_Angeles\", got {name:?}"
            ))
        })
    }
}

impl JsonSchema for SourceTz {
    fn schema_name() -> Cow<'static, str> {
        "IanaTimeZone".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An IANA time zone name, e.g. \"America/Los_Angeles\".",
            "type": "string",
            "minLength": 1,
        })
    }
}

/// Fields every canonical event carries, whatever its schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventHeader {
    /// Unique id of this fact; a retried delivery of the same fact keeps the same id, which is
    /// how the processor counts it once.
    pub event_id: String,
    /// The system the fact came from, e.g. `amazon_sp_api`, `shopify_webhook`, `simulator`.
    pub source: String,
    /// The seller's shop (store) id; the Kafka record key, so a shop's events stay in order.
    pub shop: String,
    /// The sales channel the shop sells through.
    pub channel: Channel,
    /// Marketplace id, e.g. `ATVPDKIKX0DER` (Amazon US) or `US`.
    pub marketplace: String,
    /// Seller SKU, where the fact concerns one SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// When the fact happened, in UTC (RFC 3339).
    pub event_time: DateTime<Utc>,
    /// The source's own time zone (its local dates and business day).
    pub source_tz: SourceTz,
    /// When kpiflow ingested the fact, in UTC.
    pub ingest_time: DateTime<Utc>,
}

/// How an order is fulfilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fulfilment {
    /// Fulfilled by Amazon (AFN).
    Fba,
    /// Walmart Fulfillment Services.
    Wfs,
    /// Shipped by the seller (MFN) from its own stock.
    Merchant,
    /// Shipped from an overseas / third-party warehouse.
    ThirdParty,
    /// Fulfilled by TikTok Shop (FBT).
    Fbt,
}

/// An order was placed (Amazon `PurchaseDate`, Shopify `created_at`, Walmart `orderDate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    /// The platform's order id.
    pub order_id: String,
    /// Order total as charged to the buyer.
    pub total: Money,
    /// Units ordered.
    pub units: u32,
    /// How the order will be fulfilled.
    pub fulfilment: Fulfilment,
    /// Latest promised ship date (Amazon `LatestShipDate`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_by: Option<DateTime<Utc>>,
    /// Latest promised delivery date, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_by: Option<DateTime<Utc>>,
}

/// An order was paid (Shopify `processed_at` / `orders/paid`); the paid time basis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPaid {
    /// The platform's order id.
    pub order_id: String,
    /// When the order was placed, so order-date KPIs can bucket this fact.
    pub placed_at: DateTime<Utc>,
    /// Amount paid.
    pub amount: Money,
}

/// An order (or part of it) was ship-confirmed. `event_time` is the actual ship time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderShipped {
    /// The platform's order id.
    pub order_id: String,
    /// When the order was placed.
    pub placed_at: DateTime<Utc>,
    /// The promised ship-by date; shipping after it is a late shipment.
    pub ship_by: DateTime<Utc>,
    /// The promised delivery date, if known (valid-tracking rate is keyed on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_by: Option<DateTime<Utc>>,
    /// Units in this shipment.
    pub units: u32,
    /// Carrier name, e.g. `UPS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// Tracking number, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_id: Option<String>,
    /// Whether the carrier accepted the tracking number (first carrier scan).
    pub tracking_valid: bool,
    /// How the order is fulfilled, where the source says so (the order's `order.placed` has
    /// it). Marketplace scopes (seller-fulfilled orders only, WFS exempt) read it; a fact
    /// without it counts as seller-fulfilled, the side the seller is held to account for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfilment: Option<Fulfilment>,
}

/// An order was delivered. `event_time` is the actual delivery time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderDelivered {
    /// The platform's order id.
    pub order_id: String,
    /// When the order was placed.
    pub placed_at: DateTime<Utc>,
    /// The promised delivery date.
    pub deliver_by: DateTime<Utc>,
    /// Units delivered.
    pub units: u32,
    /// How the order is fulfilled, if the source says so (see [`OrderShipped::fulfilment`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfilment: Option<Fulfilment>,
}

/// Who cancelled an order; marketplaces hold the seller to account only for its own cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelledBy {
    /// The seller cancelled (e.g. out of stock): counts against cancellation rate.
    Seller,
    /// The buyer asked to cancel: excluded from the seller's cancellation rate.
    Buyer,
    /// The platform cancelled (e.g. payment failed).
    System,
}

/// An order was cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancelled {
    /// The platform's order id.
    pub order_id: String,
    /// When the order was placed; cancellation rate is bucketed by order date.
    pub placed_at: DateTime<Utc>,
    /// Who cancelled.
    pub cancelled_by: CancelledBy,
    /// Free-text reason from the platform, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How the order is fulfilled, if the source says so (see [`OrderShipped::fulfilment`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfilment: Option<Fulfilment>,
}

/// Units of an order came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderReturned {
    /// The platform's order id.
    pub order_id: String,
    /// When the order was placed.
    pub placed_at: DateTime<Utc>,
    /// Units returned.
    pub units: u32,
    /// Return reason, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How the order is fulfilled, if the source says so (see [`OrderShipped::fulfilment`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfilment: Option<Fulfilment>,
}

/// Money went back to the buyer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderRefunded {
    /// The platform's order id.
    pub order_id: String,
    /// When the order was placed.
    pub placed_at: DateTime<Utc>,
    /// Amount refunded (not negative).
    pub amount: Money,
    /// Whether the refund is the seller's fault (Walmart's refund rate counts only those).
    pub seller_fault: bool,
    /// How the order is fulfilled, if the source says so (see [`OrderShipped::fulfilment`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfilment: Option<Fulfilment>,
}

/// The kinds of order defect in Amazon's Order Defect Rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DefectKind {
    /// 1- or 2-star seller feedback.
    NegativeFeedback,
    /// An A-to-z Guarantee claim (not denied).
    AToZClaim,
    /// A credit-card chargeback.
    Chargeback,
}

/// A defect was recorded against an order, often weeks after it was placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderDefect {
    /// The platform's order id.
    pub order_id: String,
    /// When the order was placed; ODR is bucketed by order date.
    pub placed_at: DateTime<Utc>,
    /// The kind of defect.
    pub kind: DefectKind,
    /// Feedback stars (1-5) where the defect is feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<u8>,
    /// How the order is fulfilled, if the source says so (see [`OrderShipped::fulfilment`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfilment: Option<Fulfilment>,
}

/// What a platform fee is charged for: a closed set the profit KPIs can rely on, with the
/// platform's own name kept beside it ([`OrderFee::fee_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeeKind {
    /// The marketplace's commission on the sale (Amazon `Commission`, the referral fee).
    Referral,
    /// A per-item closing fee (Amazon `VariableClosingFee`, `FixedClosingFee`).
    Closing,
    /// Pick, pack and ship by the marketplace (Amazon `FBAPerUnitFulfillmentFee`,
    /// `FBAPerOrderFulfillmentFee`, `FBAWeightBasedFee`).
    FbaFulfilment,
    /// Warehouse storage (Amazon `FBAStorageFee`, `FBALongTermStorageFee`).
    Storage,
    /// The part of the commission the marketplace keeps when it refunds a sale (Amazon
    /// `RefundCommission`, the refund administration fee).
    RefundAdministration,
    /// Shipping the marketplace charges the seller for (labels bought through it; Amazon
    /// `ShippingChargeback`).
    ShippingLabel,
    /// Card or wallet processing (Shopify Payments, TikTok Shop transaction fees).
    PaymentProcessing,
    /// Digital services taxes passed on as a fee (Amazon `DigitalServicesFee`).
    DigitalServices,
    /// Anything else: see [`OrderFee::fee_type`].
    Other,
}

/// What a fee line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeeApplies {
    /// A sale (a shipped item): Amazon `ShipmentEventList`.
    Sale,
    /// A refund of a sale (the fee given back, or a refund fee): Amazon `RefundEventList`.
    Refund,
    /// The seller account, not one sale (storage, subscriptions): Amazon `ServiceFeeEventList`.
    Account,
}

/// One fee line a marketplace charged (or gave back) at `event_time`, the time it was posted
/// to the seller's account; the profit KPIs read these.
///
/// **Sign:** `amount` is what the fee costs the seller. A fee charged is positive (Amazon's
/// `Commission` of `-3.00` is `3.00` here); a fee given back, as when a refund reverses part
/// of the commission, is negative (Amazon's refund `Commission` of `+2.40` is `-2.40`).
/// Summing `amount` gives the net fees paid; profit subtracts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderFee {
    /// The platform's order id; absent for account fees that concern no order (storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// What the fee is for.
    pub kind: FeeKind,
    /// The platform's own fee type, e.g. `FBAPerUnitFulfillmentFee`.
    pub fee_type: String,
    /// What the fee costs the seller (signed; see the type's doc).
    pub amount: Money,
    /// Whether the line belongs to a sale, a refund or the account.
    pub applies_to: FeeApplies,
}

/// The landed cost of one unit of the header's SKU (required) from the business day
/// `effective_from` on, in the shop's zone: what the seller paid to have the unit where it
/// sells — purchase price, first-mile freight, duties. The seller's own data (a cost file, an
/// ERP), never a platform's; the profit KPIs book each unit sold at the cost in force on its
/// booked business day.
///
/// A cost holds until the SKU's next `effective_from`. Two changes of one SKU and day: the
/// one with the later `event_time` (when the change was recorded) counts, the other is
/// `superseded`. A change dated back restates the cost of the units already booked on the
/// days it covers that the processor still holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CostChanged {
    /// First business day the cost applies to.
    pub effective_from: NaiveDate,
    /// Purchase price of one unit.
    pub purchase: Money,
    /// First-mile freight per unit (to the marketplace's or 3PL's warehouse), if known apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freight: Option<Money>,
    /// Import duties per unit, if known apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duties: Option<Money>,
}

impl CostChanged {
    /// The landed cost of one unit: purchase + freight + duties (one currency: validated).
    pub fn landed(&self) -> Decimal {
        [&self.freight, &self.duties]
            .into_iter()
            .flatten()
            .fold(self.purchase.amount, |sum, m| sum + m.amount)
    }
}

/// One day of one campaign's ad performance, as reported at `as_of`.
///
/// Platforms restate these figures for days (attribution, click validation): the same
/// (platform, account, campaign, date) arrives again with new values and a later `as_of`, and
/// the latest version replaces the earlier one rather than adding to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AdPerformance {
    /// Ad platform, e.g. `amazon_ads`, `google_ads`, `meta_ads`, `tiktok_ads`.
    pub platform: String,
    /// Ad account (profile) id.
    pub account_id: String,
    /// Campaign id.
    pub campaign_id: String,
    /// The report date in the ad account's time zone (`source_tz`).
    pub date: NaiveDate,
    /// Impressions.
    pub impressions: u64,
    /// Clicks.
    pub clicks: u64,
    /// Spend.
    pub spend: Money,
    /// Orders attributed to the campaign within the attribution window.
    pub attributed_orders: u64,
    /// Sales attributed to the campaign within the attribution window.
    pub attributed_sales: Money,
    /// Attribution window, e.g. `7d` or `14d`.
    pub attribution_window: String,
    /// When the platform reported these figures; the latest `as_of` wins.
    pub as_of: DateTime<Utc>,
}

/// Where stock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    /// An Amazon fulfilment network location.
    Fba,
    /// Walmart Fulfillment Services.
    Wfs,
    /// An overseas / third-party warehouse.
    ThirdParty,
    /// The seller's own warehouse.
    Own,
}

/// Stock of one SKU at one location at `event_time`; a later snapshot replaces an earlier one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InventorySnapshot {
    /// Location id, e.g. `FBA-US` or a warehouse code.
    pub location: String,
    /// Kind of location.
    pub location_kind: LocationKind,
    /// Units available to sell now.
    pub sellable: u64,
    /// Units on the way in (working, shipped, receiving).
    pub inbound: u64,
    /// Units reserved (pending orders, transfers).
    pub reserved: u64,
    /// Units held but not sellable (damaged, expired).
    #[serde(default)]
    pub unfulfillable: u64,
}

/// Milestones of a shipment handled by a 3PL / overseas warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Milestone {
    /// The warehouse received the order for fulfilment.
    Received,
    /// Picked and packed.
    Packed,
    /// Handed to the carrier (ship confirmation).
    HandedToCarrier,
    /// In transit.
    InTransit,
    /// Delivered to the buyer.
    Delivered,
    /// A carrier or warehouse exception.
    Exception,
}

/// A shipment milestone reported by a 3PL / overseas warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ShipmentMilestone {
    /// The warehouse's shipment id.
    pub shipment_id: String,
    /// The warehouse code.
    pub warehouse: String,
    /// Which milestone was reached (at `event_time`).
    pub milestone: Milestone,
    /// The marketplace order this shipment fulfils, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// Carrier name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// Tracking number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_id: Option<String>,
    /// Units in the shipment.
    pub units: u32,
}

/// Which of Amazon's Account Health metrics a reference value is
/// (`GET_V2_SELLER_PERFORMANCE_REPORT`'s `performanceMetrics[]`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HealthMetric {
    /// `orderDefectRate.afn`: Order Defect Rate of Amazon-fulfilled (FBA) orders.
    OrderDefectRateAfn,
    /// `orderDefectRate.mfn`: Order Defect Rate of merchant-fulfilled orders.
    OrderDefectRateMfn,
    /// `lateShipmentRate`.
    LateShipmentRate,
    /// `preFulfillmentCancellationRate`.
    PreFulfilmentCancelRate,
    /// `validTrackingRate`.
    ValidTrackingRate,
    /// `onTimeDeliveryRate`.
    OnTimeDeliveryRate,
}

impl HealthMetric {
    /// Every metric, in a stable order.
    pub const ALL: [HealthMetric; 6] = [
        HealthMetric::OrderDefectRateAfn,
        HealthMetric::OrderDefectRateMfn,
        HealthMetric::LateShipmentRate,
        HealthMetric::PreFulfilmentCancelRate,
        HealthMetric::ValidTrackingRate,
        HealthMetric::OnTimeDeliveryRate,
    ];

    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthMetric::OrderDefectRateAfn => "order_defect_rate_afn",
            HealthMetric::OrderDefectRateMfn => "order_defect_rate_mfn",
            HealthMetric::LateShipmentRate => "late_shipment_rate",
            HealthMetric::PreFulfilmentCancelRate => "pre_fulfilment_cancel_rate",
            HealthMetric::ValidTrackingRate => "valid_tracking_rate",
            HealthMetric::OnTimeDeliveryRate => "on_time_delivery_rate",
        }
    }
}

/// How a metric must compare with its target to stay in good standing (`targetCondition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetCondition {
    /// `LESS_THAN`: the rate must stay below the target (ODR, late shipment, cancel).
    LessThan,
    /// `GREATER_THAN`: the rate must stay above the target (valid tracking, on-time delivery).
    GreaterThan,
    /// `EQUALS`.
    Equals,
}

/// Amazon's verdict on a metric (`status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// `GOOD`.
    Good,
    /// `BAD`.
    Bad,
    /// `NONE`: no verdict (e.g. no orders in the range).
    #[serde(rename = "none")]
    Unrated,
}

/// One of Amazon's own Account Health figures for a shop: a **reference value**, not a fact.
/// The processor compares its own value of the matching KPI over the same days with it (the
/// `*_vs_amazon` cross-check KPIs); it is never added to any KPI. `event_time` is the end of
/// the reporting range (the start of the day after `window_to`, in `source_tz`).
///
/// Amazon restates a range as defects arrive: a later report of the same metric and range
/// replaces an earlier one (the larger `ingest_time` wins, ties broken by `event_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AccountHealthMetric {
    /// Which metric.
    pub metric: HealthMetric,
    /// First day of Amazon's reporting range (`reportingDateFrom`), a US Pacific day
    /// (`source_tz`), inclusive.
    pub window_from: NaiveDate,
    /// Last day of the range (`reportingDateTo`), inclusive.
    pub window_to: NaiveDate,
    /// The rate's numerator where the report gives it (defective orders, late shipments,
    /// seller cancellations, shipments with valid tracking, on-time deliveries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerator: Option<u64>,
    /// Its denominator where the report gives it (orders, shipments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<u64>,
    /// Amazon's rate as a fraction (`0.009` is 0.9%).
    pub rate: Decimal,
    /// The target (`targetValue`), a fraction like `rate`.
    pub target_value: Decimal,
    /// How the rate must compare with the target.
    pub target_condition: TargetCondition,
    /// Amazon's verdict.
    pub status: HealthStatus,
}

/// A connector's periodic health report for one shop. It is not a business fact: it feeds the
/// processor's staleness rules ("no orders from Amazon for 2 hours") and the health dashboards.
/// `event_time` is when the report was made (wall clock).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SourceHeartbeat {
    /// Connector id, e.g. `amazon_sp_orders`, `shopify_webhook`.
    pub connector: String,
    /// When the connector last completed a sync (or accepted a delivery) successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<DateTime<Utc>>,
    /// Newest event time among the records it has published (data freshness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_event_time: Option<DateTime<Utc>>,
    /// Records published since the connector started.
    pub records_published: u64,
    /// Errors since the connector started.
    pub errors: u64,
    /// Failed syncs in a row; 0 when the last sync succeeded.
    pub consecutive_failures: u32,
}

impl Fulfilment {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Fulfilment::Fba => "fba",
            Fulfilment::Wfs => "wfs",
            Fulfilment::Merchant => "merchant",
            Fulfilment::ThirdParty => "third_party",
            Fulfilment::Fbt => "fbt",
        }
    }

    /// Whether the seller (itself or through its 3PL) ships the order: the marketplaces hold
    /// the seller to account for late shipment, cancellation and tracking only then.
    pub fn seller_fulfilled(&self) -> bool {
        matches!(self, Fulfilment::Merchant | Fulfilment::ThirdParty)
    }
}

impl CancelledBy {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            CancelledBy::Seller => "seller",
            CancelledBy::Buyer => "buyer",
            CancelledBy::System => "system",
        }
    }
}

impl DefectKind {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            DefectKind::NegativeFeedback => "negative_feedback",
            DefectKind::AToZClaim => "a_to_z_claim",
            DefectKind::Chargeback => "chargeback",
        }
    }
}

impl FeeKind {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            FeeKind::Referral => "referral",
            FeeKind::Closing => "closing",
            FeeKind::FbaFulfilment => "fba_fulfilment",
            FeeKind::Storage => "storage",
            FeeKind::RefundAdministration => "refund_administration",
            FeeKind::ShippingLabel => "shipping_label",
            FeeKind::PaymentProcessing => "payment_processing",
            FeeKind::DigitalServices => "digital_services",
            FeeKind::Other => "other",
        }
    }
}

impl FeeApplies {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            FeeApplies::Sale => "sale",
            FeeApplies::Refund => "refund",
            FeeApplies::Account => "account",
        }
    }
}

impl LocationKind {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            LocationKind::Fba => "fba",
            LocationKind::Wfs => "wfs",
            LocationKind::ThirdParty => "third_party",
            LocationKind::Own => "own",
        }
    }
}

impl Milestone {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Milestone::Received => "received",
            Milestone::Packed => "packed",
            Milestone::HandedToCarrier => "handed_to_carrier",
            Milestone::InTransit => "in_transit",
            Milestone::Delivered => "delivered",
            Milestone::Exception => "exception",
        }
    }
}

macro_rules! event_bodies {
    ($( $variant:ident($ty:ident) = $name:literal v $version:literal, $family:ident; )*) => {
        /// The schema-specific part of an event; one variant per canonical schema.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum EventBody {
            $(
                #[doc = concat!("`", $name, "` v", stringify!($version), ".")]
                $variant($ty),
            )*
        }

        impl EventBody {
            /// Every (schema name, version) this build reads and writes.
            pub const SCHEMAS: &'static [(&'static str, u32)] = &[$(($name, $version)),*];

            /// The schema name, e.g. `order.placed`.
            pub fn schema(&self) -> &'static str {
                match self { $(EventBody::$variant(_) => $name,)* }
            }

            /// The schema version this build writes.
            pub fn version(&self) -> u32 {
                match self { $(EventBody::$variant(_) => $version,)* }
            }

            /// The topic family events of `schema` travel on, if it is one this build reads.
            pub fn topic_of(schema: &str) -> Option<crate::Topic> {
                match schema { $($name => Some(crate::Topic::$family),)* _ => None }
            }

            /// The topic family the event travels on.
            pub fn topic(&self) -> crate::Topic {
                match self { $(EventBody::$variant(_) => crate::Topic::$family,)* }
            }

            /// [`EventBody::decode`] without tracking the path: `None` on any problem, which
            /// the caller then decodes again the slow way for an error naming the field.
            fn decode_fast(schema: &str, version: u32, payload: &RawValue) -> Option<EventBody> {
                match (schema, version) {
                    $(($name, $version) => serde_json::from_str::<$ty>(payload.get()).ok().map(EventBody::$variant),)*
                    _ => None,
                }
            }

            fn decode(schema: &str, version: u32, payload: &RawValue) -> Result<EventBody, SchemaError> {
                match (schema, version) {
                    $(($name, $version) => decode_payload::<$ty>($name, payload).map(EventBody::$variant),)*
                    _ => Err(SchemaError::Unsupported {
                        schema: schema.to_string(),
                        version,
                        supported: EventBody::SCHEMAS
                            .iter()
                            .map(|(n, v)| format!("{n} v{v}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    }),
                }
            }

            /// A `$ref` to the body's JSON Schema (added to `generator`), for [`crate::json_schema`].
            pub(crate) fn payload_schema(schema: &str, generator: &mut SchemaGenerator) -> Option<Schema> {
                match schema {
                    $($name => Some(generator.subschema_for::<$ty>()),)*
                    _ => None,
                }
            }
        }

        $(
            impl From<$ty> for EventBody {
                fn from(body: $ty) -> EventBody { EventBody::$variant(body) }
            }
        )*
    };
}

event_bodies! {
    OrderPlaced(OrderPlaced) = "order.placed" v 1, Orders;
    OrderPaid(OrderPaid) = "order.paid" v 1, Orders;
    OrderShipped(OrderShipped) = "order.shipped" v 1, Orders;
    OrderDelivered(OrderDelivered) = "order.delivered" v 1, Orders;
    OrderCancelled(OrderCancelled) = "order.cancelled" v 1, Orders;
    OrderReturned(OrderReturned) = "order.returned" v 1, Orders;
    OrderRefunded(OrderRefunded) = "order.refunded" v 1, Orders;
    OrderDefect(OrderDefect) = "order.defect" v 1, Orders;
    OrderFee(OrderFee) = "order.fee" v 1, Orders;
    CostChanged(CostChanged) = "cost.changed" v 1, Orders;
    AdPerformance(AdPerformance) = "ad.performance" v 1, Ads;
    InventorySnapshot(InventorySnapshot) = "inventory.snapshot" v 1, Logistics;
    ShipmentMilestone(ShipmentMilestone) = "shipment.milestone" v 1, Logistics;
    SourceHeartbeat(SourceHeartbeat) = "source.heartbeat" v 1, Health;
    AccountHealthMetric(AccountHealthMetric) = "account.health_metric" v 1, Health;
}

fn decode_payload<T: DeserializeOwned>(schema: &str, payload: &RawValue) -> Result<T, SchemaError> {
    let mut de = serde_json::Deserializer::from_str(payload.get());
    serde_path_to_error::deserialize(&mut de).map_err(|e| path_error(schema, "payload", e))
}

fn path_error(
    schema: &str,
    prefix: &str,
    e: serde_path_to_error::Error<serde_json::Error>,
) -> SchemaError {
    let path = e.path().to_string();
    let field = match (prefix, path.as_str()) {
        ("", p) => p.to_string(),
        (pre, ".") => pre.to_string(),
        (pre, p) => format!("{pre}.{p}"),
    };
    let inner = e.into_inner();
    // serde_json appends " at line 1 column N", which says nothing once the field is named.
    let mut problem = inner.to_string();
    if let Some(i) = problem.rfind(" at line ") {
        problem.truncate(i);
    }
    SchemaError::Field {
        schema: schema.to_string(),
        field,
        problem,
    }
}

/// A canonical event: the header plus a schema-specific body.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Fields every event carries.
    pub header: EventHeader,
    /// The schema-specific part.
    pub body: EventBody,
}

#[derive(Serialize)]
struct WireOut<'a> {
    #[serde(flatten)]
    header: &'a EventHeader,
    schema: &'static str,
    schema_version: u32,
    payload: &'a EventBody,
}

/// The whole wire record in one pass (the fast path of [`Event::from_json`]): the header's
/// fields, the dispatch fields, the payload left raw for its schema's type. Converting into
/// [`EventHeader`] names every field, so the two cannot drift apart.
#[derive(Deserialize)]
struct WireIn<'a> {
    event_id: String,
    source: String,
    shop: String,
    channel: Channel,
    marketplace: String,
    #[serde(default)]
    sku: Option<String>,
    event_time: DateTime<Utc>,
    source_tz: SourceTz,
    ingest_time: DateTime<Utc>,
    #[serde(borrow)]
    schema: Cow<'a, str>,
    schema_version: u32,
    #[serde(borrow)]
    payload: &'a RawValue,
}

impl WireIn<'_> {
    fn into_event(self) -> Option<Event> {
        let body = EventBody::decode_fast(&self.schema, self.schema_version, self.payload)?;
        let header = EventHeader {
            event_id: self.event_id,
            source: self.source,
            shop: self.shop,
            channel: self.channel,
            marketplace: self.marketplace,
            sku: self.sku,
            event_time: self.event_time,
            source_tz: self.source_tz,
            ingest_time: self.ingest_time,
        };
        Some(Event { header, body })
    }
}

#[derive(Deserialize)]
struct WireDispatch<'a> {
    #[serde(borrow)]
    schema: Cow<'a, str>,
    schema_version: u32,
    #[serde(borrow)]
    payload: &'a RawValue,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireOut {
            header: &self.header,
            schema: self.body.schema(),
            schema_version: self.body.version(),
            payload: &self.body,
        }
        .serialize(s)
    }
}

impl Event {
    /// Builds an event; the schema name and version follow from the body.
    pub fn new(header: EventHeader, body: impl Into<EventBody>) -> Event {
        Event {
            header,
            body: body.into(),
        }
    }

    /// The schema name, e.g. `order.placed`.
    pub fn schema(&self) -> &'static str {
        self.body.schema()
    }

    /// The Kafka record key: the shop, so one shop's events stay ordered in one partition.
    pub fn key(&self) -> &str {
        &self.header.shop
    }

    /// Encodes to the wire JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing owned, well-formed values into a Vec cannot fail.
        serde_json::to_vec(self).expect("event serializes")
    }

    /// Decodes and validates one wire record.
    ///
    /// One pass without path tracking first; a record that fails it is decoded again the
    /// slow way ([`serde_path_to_error`]), only to name the field in the error.
    pub fn from_json(bytes: &[u8]) -> Result<Event, SchemaError> {
        let fast = serde_json::from_slice::<WireIn<'_>>(bytes)
            .ok()
            .and_then(WireIn::into_event);
        match fast {
            Some(event) => {
                event.validate()?;
                Ok(event)
            }
            None => Event::from_json_explained(bytes),
        }
    }

    /// [`Event::from_json`]'s slow path: every failure names the field and the value.
    fn from_json_explained(bytes: &[u8]) -> Result<Event, SchemaError> {
        let text = std::str::from_utf8(bytes).map_err(|e| SchemaError::Malformed {
            schema: "event".into(),
            detail: format!("not UTF-8: {e}"),
        })?;
        let dispatch: WireDispatch<'_> = {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                if e.inner().is_syntax() || e.inner().is_eof() {
                    SchemaError::Malformed {
                        schema: "event".into(),
                        detail: e.into_inner().to_string(),
                    }
                } else {
                    path_error("event", "", e)
                }
            })?
        };
        let schema = dispatch.schema.as_ref();
        let body = EventBody::decode(schema, dispatch.schema_version, dispatch.payload)?;
        let header: EventHeader = {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| path_error(schema, "", e))?
        };
        let event = Event { header, body };
        event.validate()?;
        Ok(event)
    }

    /// Rules a type cannot express: non-empty ids, non-negative money, ordered timestamps.
    pub fn validate(&self) -> Result<(), SchemaError> {
        let schema = self.schema();
        let h = &self.header;
        for (field, value) in [
            ("event_id", &h.event_id),
            ("source", &h.source),
            ("shop", &h.shop),
            ("marketplace", &h.marketplace),
        ] {
            non_empty(schema, field, value)?;
        }
        if let Some(sku) = &h.sku {
            non_empty(schema, "sku", sku)?;
        }
        let not_before = |field: &str, t: DateTime<Utc>, placed: DateTime<Utc>| {
            if t < placed {
                Err(SchemaError::field(
                    schema,
                    field,
                    &format!(
                        "must not be before payload.placed_at ({})",
                        placed.to_rfc3339()
                    ),
                    t.to_rfc3339(),
                ))
            } else {
                Ok(())
            }
        };
        match &self.body {
            EventBody::OrderPlaced(b) => {
                non_empty(schema, "payload.order_id", &b.order_id)?;
                b.total.check_non_negative(schema, "payload.total")?;
                if b.units == 0 {
                    return Err(SchemaError::field(
                        schema,
                        "payload.units",
                        "must be at least 1",
                        b.units,
                    ));
                }
            }
            EventBody::OrderPaid(b) => {
                non_empty(schema, "payload.order_id", &b.order_id)?;
                b.amount.check_non_negative(schema, "payload.amount")?;
            }
            EventBody::OrderShipped(b) => {
                non_empty(schema, "payload.order_id", &b.order_id)?;
                not_before("event_time", h.event_time, b.placed_at)?;
                not_before("payload.ship_by", b.ship_by, b.placed_at)?;
            }
            EventBody::OrderDelivered(b) => {
                non_empty(schema, "payload.order_id", &b.order_id)?;
                not_before("event_time", h.event_time, b.placed_at)?;
            }
            EventBody::OrderCancelled(b) => {
                non_empty(schema, "payload.order_id", &b.order_id)?;
                not_before("event_time", h.event_time, b.placed_at)?;
            }
            EventBody::OrderReturned(b) => {
                non_empty(schema, "payload.order_id", &b.order_id)?;
                not_before("event_time", h.event_time, b.placed_at)?;
            }
            EventBody::OrderRefunded(b) => {
                non_empty(schema, "payload.order_id", &b.order_id)?;
                not_before("event_time", h.event_time, b.placed_at)?;
                b.amount.check_non_negative(schema, "payload.amount")?;
            }
            EventBody::OrderDefect(b) => {
                non_empty(schema, "payload.order_id", &b.order_id)?;
                not_before("event_time", h.event_time, b.placed_at)?;
                if let Some(r) = b.rating
                    && !(1..=5).contains(&r)
                {
                    return Err(SchemaError::field(
                        schema,
                        "payload.rating",
                        "must be between 1 and 5",
                        r,
                    ));
                }
            }
            EventBody::OrderFee(b) => {
                if let Some(o) = &b.order_id {
                    non_empty(schema, "payload.order_id", o)?;
                }
                non_empty(schema, "payload.fee_type", &b.fee_type)?;
                // Signed on purpose: a fee given back is negative.
            }
            EventBody::CostChanged(b) => {
                if h.sku.is_none() {
                    return Err(SchemaError::field(
                        schema,
                        "sku",
                        "is required: a cost is the cost of one SKU",
                        "null",
                    ));
                }
                b.purchase.check_non_negative(schema, "payload.purchase")?;
                for (field, part) in [
                    ("payload.freight", &b.freight),
                    ("payload.duties", &b.duties),
                ] {
                    let Some(part) = part else { continue };
                    part.check_non_negative(schema, field)?;
                    if part.currency != b.purchase.currency {
                        return Err(SchemaError::field(
                            schema,
                            format!("{field}.currency"),
                            &format!(
                                "must be the currency of payload.purchase ({})",
                                b.purchase.currency
                            ),
                            &part.currency,
                        ));
                    }
                }
            }
            EventBody::AdPerformance(b) => {
                for (field, value) in [
                    ("payload.platform", &b.platform),
                    ("payload.account_id", &b.account_id),
                    ("payload.campaign_id", &b.campaign_id),
                ] {
                    non_empty(schema, field, value)?;
                }
                b.spend.check_non_negative(schema, "payload.spend")?;
                b.attributed_sales
                    .check_non_negative(schema, "payload.attributed_sales")?;
                if b.clicks > b.impressions {
                    return Err(SchemaError::field(
                        schema,
                        "payload.clicks",
                        &format!("must not exceed payload.impressions ({})", b.impressions),
                        b.clicks,
                    ));
                }
            }
            EventBody::InventorySnapshot(b) => non_empty(schema, "payload.location", &b.location)?,
            EventBody::ShipmentMilestone(b) => {
                non_empty(schema, "payload.shipment_id", &b.shipment_id)?;
                non_empty(schema, "payload.warehouse", &b.warehouse)?;
            }
            EventBody::SourceHeartbeat(b) => non_empty(schema, "payload.connector", &b.connector)?,
            EventBody::AccountHealthMetric(b) => {
                if b.window_to < b.window_from {
                    return Err(SchemaError::field(
                        schema,
                        "payload.window_to",
                        &format!("must not be before payload.window_from ({})", b.window_from),
                        b.window_to,
                    ));
                }
                for (field, value) in [
                    ("payload.rate", b.rate),
                    ("payload.target_value", b.target_value),
                ] {
                    if value.is_negative() {
                        return Err(SchemaError::field(
                            schema,
                            field,
                            "must not be negative",
                            value,
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn non_empty(schema: &str, field: &str, value: &str) -> Result<(), SchemaError> {
    if value.trim().is_empty() {
        Err(SchemaError::field(
            schema,
            field,
            "must not be empty",
            value,
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_enums_as_str_is_the_serde_wire_name() {
        fn check<T: Serialize>(v: T, name: &str) {
            assert_eq!(serde_json::to_value(v).unwrap(), serde_json::json!(name));
        }
        for v in [
            Fulfilment::Fba,
            Fulfilment::Wfs,
            Fulfilment::Merchant,
            Fulfilment::ThirdParty,
            Fulfilment::Fbt,
        ] {
            check(v, v.as_str());
        }
        for v in [CancelledBy::Seller, CancelledBy::Buyer, CancelledBy::System] {
            check(v, v.as_str());
        }
        for v in [
            DefectKind::NegativeFeedback,
            DefectKind::AToZClaim,
            DefectKind::Chargeback,
        ] {
            check(v, v.as_str());
        }
        for v in [
            FeeKind::Referral,
            FeeKind::Closing,
            FeeKind::FbaFulfilment,
            FeeKind::Storage,
            FeeKind::RefundAdministration,
            FeeKind::ShippingLabel,
            FeeKind::PaymentProcessing,
            FeeKind::DigitalServices,
            FeeKind::Other,
        ] {
            check(v, v.as_str());
        }
        for v in [FeeApplies::Sale, FeeApplies::Refund, FeeApplies::Account] {
            check(v, v.as_str());
        }
        for v in [
            LocationKind::Fba,
            LocationKind::Wfs,
            LocationKind::ThirdParty,
            LocationKind::Own,
        ] {
            check(v, v.as_str());
        }
        for v in HealthMetric::ALL {
            check(v, v.as_str());
        }
        for v in [
            Milestone::Received,
            Milestone::Packed,
            Milestone::HandedToCarrier,
            Milestone::InTransit,
            Milestone::Delivered,
            Milestone::Exception,
        ] {
            check(v, v.as_str());
        }
    }
    use crate::Money;

    fn header() -> EventHeader {
        EventHeader {
            event_id: "e-1".into(),
            source: "test".into(),
            shop: "shop-1".into(),
            channel: Channel::Amazon,
            marketplace: "ATVPDKIKX0DER".into(),
            sku: Some("SKU-1".into()),
            event_time: "2026-11-02T17:03:00Z".parse().unwrap(),
            source_tz: SourceTz::US_PACIFIC,
            ingest_time: "2026-11-02T17:03:05Z".parse().unwrap(),
        }
    }

    fn placed() -> Event {
        Event::new(
            header(),
            OrderPlaced {
                order_id: "o-1".into(),
                total: Money::usd("25.98"),
                units: 2,
                fulfilment: Fulfilment::Fba,
                ship_by: None,
                deliver_by: None,
            },
        )
    }

    #[test]
    fn round_trips_through_json() {
        let e = placed();
        let json = e.to_json();
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(r#""schema":"order.placed""#), "{text}");
        assert!(text.contains(r#""amount":"25.98""#), "{text}");
        assert_eq!(Event::from_json(&json).unwrap(), e);
    }

    fn with(mut v: serde_json::Value, path: &[&str], new: serde_json::Value) -> Vec<u8> {
        let mut cur = &mut v;
        for p in &path[..path.len() - 1] {
            cur = cur.get_mut(*p).unwrap();
        }
        cur[path[path.len() - 1]] = new;
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn a_cost_names_its_sku_and_one_currency() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/events/cost.changed.json"
        );
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let EventBody::CostChanged(c) = Event::from_json(&serde_json::to_vec(&v).unwrap())
            .unwrap()
            .body
        else {
            panic!("a cost")
        };
        // 6.40 + 1.15 + 0.45
        assert_eq!(c.landed(), Decimal::parse("8.00").unwrap());
        let err =
            Event::from_json(&with(v.clone(), &["sku"], serde_json::Value::Null)).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"cost.changed: field `sku`: is required: a cost is the cost of one SKU, got "null""#
        );
        let err = Event::from_json(&with(
            v.clone(),
            &["payload", "duties", "currency"],
            "CNY".into(),
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"cost.changed: field `payload.duties.currency`: must be the currency of payload.purchase (USD), got "CNY""#
        );
        let err = Event::from_json(&with(v, &["payload", "freight", "amount"], "-1.15".into()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"cost.changed: field `payload.freight.amount`: must not be negative, got "-1.15""#
        );
    }

    #[test]
    fn errors_name_schema_field_value_and_rule() {
        let v: serde_json::Value = serde_json::from_slice(&placed().to_json()).unwrap();
        let err = Event::from_json(&with(
            v.clone(),
            &["payload", "total", "amount"],
            "-3.x".into(),
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"order.placed: field `payload.total.amount`: expected a decimal string such as "12.34", got "-3.x""#
        );
        let err = Event::from_json(&with(
            v.clone(),
            &["payload", "total", "amount"],
            "-3.00".into(),
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"order.placed: field `payload.total.amount`: must not be negative, got "-3.00""#
        );
        let err = Event::from_json(&with(v.clone(), &["channel"], "ebay".into())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("order.placed: field `channel`: unknown variant `ebay`"),
            "{err}"
        );
        let err =
            Event::from_json(&with(v.clone(), &["source_tz"], "Mars/Olympus".into())).unwrap_err();
        assert!(err.to_string().contains(r#"got "Mars/Olympus""#), "{err}");
        let err = Event::from_json(&with(v.clone(), &["schema_version"], 9.into())).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "event: fields `schema` = \"order.placed\", `schema_version` = 9: not a schema and version this build reads (supported: order.placed v1"
            ),
            "{err}"
        );
        let err = Event::from_json(b"{not json").unwrap_err();
        assert!(matches!(err, SchemaError::Malformed { .. }), "{err}");
        let mut missing = v.clone();
        missing["payload"].as_object_mut().unwrap().remove("units");
        let err = Event::from_json(&serde_json::to_vec(&missing).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "order.placed: field `payload`: missing field `units`"
        );
    }

    #[test]
    fn lifecycle_times_must_follow_placement() {
        let shipped = Event::new(
            header(),
            OrderShipped {
                order_id: "o-1".into(),
                placed_at: "2026-11-03T00:00:00Z".parse().unwrap(),
                ship_by: "2026-11-04T00:00:00Z".parse().unwrap(),
                deliver_by: None,
                units: 1,
                carrier: None,
                tracking_id: None,
                tracking_valid: true,
                fulfilment: None,
            },
        );
        let err = Event::from_json(&shipped.to_json()).unwrap_err();
        assert_eq!(err.field_path(), Some("event_time"));
    }
}

#[cfg(test)]
#[path = "event_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod fixture_tests {
    use super::*;

    /// Golden sample events, one per schema, in the shapes connectors produce: each must
    /// decode, carry the schema its file is named after, and encode back to the same JSON.
    #[test]
    fn every_schema_has_a_golden_sample_that_round_trips() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/events");
        let mut covered = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let event =
                Event::from_json(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            assert_eq!(event.schema(), stem, "{}", path.display());
            // The one-pass decoder took it (not the fallback) and agrees with the slow one.
            let fast = serde_json::from_slice::<WireIn<'_>>(&bytes)
                .ok()
                .and_then(WireIn::into_event);
            assert_eq!(fast.as_ref(), Some(&event), "{}", path.display());
            assert_eq!(
                Event::from_json_explained(&bytes).unwrap(),
                event,
                "{}",
                path.display()
            );
            let original: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let again: serde_json::Value = serde_json::from_slice(&event.to_json()).unwrap();
            assert_eq!(original, again, "{}", path.display());
            covered.push(stem);
        }
        covered.sort();
        let mut all: Vec<String> = EventBody::SCHEMAS
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        all.sort();
        assert_eq!(covered, all, "one fixture per schema");
    }
}
