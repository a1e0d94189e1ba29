//! Shopify orders and refunds → canonical events, shared by the webhook and the backfill so
//! both paths produce the same event ids.
//!
//! Event ids come from the fact, not from the delivery: `shopify-<order id>-placed`, `-paid`,
//! `-cancelled`, `-shipped-<fulfillment id>`, `-refund-<refund id>`. A retried webhook, the
//! same fact seen again in `orders/updated` or `fulfillments/*`, and the backfill all yield
//! the same id, which the processor counts once. A delivered fulfilment's `order.delivered`
//! has its parcel's id (`delivered-<shop>-<tracking number>`), the one the tracking
//! aggregators give the same parcel.
//!
//! Time basis (domain reference §5): `order.placed` at `created_at` (it fires for unpaid
//! orders too); `order.paid` at the `orders/paid` delivery's `X-Shopify-Triggered-At`, the
//! paid basis for revenue — not the order's `processed_at`, which is normally its creation
//! time (an order paid later by bank deposit or cash on delivery keeps it); `order.shipped`
//! at the fulfilment's `created_at`; `order.delivered` at the delivered fulfilment's
//! `updated_at` (a fulfilment has no delivery time of its own); `order.cancelled` at `cancelled_at`; `order.refunded` at
//! the refund's `processed_at` (else `created_at`). All kept in UTC with the shop's zone as
//! `source_tz`.
//!
//! An order JSON alone does not say when it was paid: `orders/updated` therefore announces no
//! payment (`orders/paid` does, for every payment), and the Admin API backfill, which has no
//! delivery, falls back to `processed_at` for paid orders. Both paths give the payment the same
//! event id, so whichever the processor reads first counts; with the webhook running, that is
//! the delivery's time.

use chrono::{DateTime, TimeDelta, Utc};
use kpiflow_schemas::{
    CancelledBy, Channel, Decimal, Event, EventBody, EventHeader, Money, OrderCancelled,
    OrderDelivered, OrderPaid, OrderPlaced, OrderRefunded, OrderShipped,
};

use super::config::ShopifyShop;
use super::payload::{Fulfillment, Order, Refund};

/// Financial statuses meaning the order was paid at `processed_at` (refunds come later).
const PAID_STATUSES: [&str; 3] = ["paid", "partially_refunded", "refunded"];

/// Who cancelled, from Shopify's `cancel_reason`.
///
/// - `customer` → [`CancelledBy::Buyer`]: the buyer asked; not held against the seller.
/// - `declined` → [`CancelledBy::System`]: the payment was declined.
/// - `fraud` → [`CancelledBy::System`]: cancelled on Shopify's fraud analysis; a risk
///   control, not a failure to fulfil.
/// - `inventory`, `staff`, `other`, absent or unknown → [`CancelledBy::Seller`]: out of stock
///   and staff errors are the seller's; an unstated reason counts against the seller too, so
///   the cancellation rate is never understated.
pub fn cancelled_by(reason: Option<&str>) -> CancelledBy {
    match reason {
        Some("customer") => CancelledBy::Buyer,
        Some("declined" | "fraud") => CancelledBy::System,
        _ => CancelledBy::Seller,
    }
}

/// The facts a delivery may reveal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Facts {
    /// `orders/create`: the placement.
    Placed,
    /// `orders/paid`: the payment, at the delivery's `X-Shopify-Triggered-At`.
    Paid {
        /// When Shopify recorded the payment (the same on every retry of the delivery).
        at: DateTime<Utc>,
    },
    /// `orders/cancelled`: the cancellation.
    Cancelled,
    /// `orders/updated`: fulfilments, cancellation and refunds whose own time is at most
    /// `lookback` before the order's `updated_at`: the change that triggered the update, not
    /// every old fact again (which the processor would refuse as late). No payment: the order
    /// does not say when it was paid, `orders/paid` does.
    Updated {
        /// How far before `updated_at` a fact may be.
        lookback: TimeDelta,
    },
    /// The backfill: everything the order shows; a payment at `processed_at`, the only paid
    /// time an order carries.
    All,
}

/// Builds events for one shop; `source` is the connector name.
pub struct Mapper<'a> {
    /// The shop's settings.
    pub shop: &'a ShopifyShop,
    /// `shopify_webhook` or `shopify_orders`.
    pub source: &'static str,
    /// Ingest time.
    pub now: DateTime<Utc>,
}

impl Mapper<'_> {
    fn header(&self, id: String, at: DateTime<Utc>, sku: Option<String>) -> EventHeader {
        EventHeader {
            event_id: id,
            source: self.source.to_string(),
            shop: self.shop.shop.clone(),
            channel: Channel::Shopify,
            marketplace: self.shop.marketplace.clone(),
            sku,
            event_time: at,
            source_tz: self.shop.time_zone,
            ingest_time: self.now,
        }
    }

    fn event(
        &self,
        id: String,
        at: DateTime<Utc>,
        sku: Option<String>,
        body: impl Into<EventBody>,
    ) -> Result<Event, String> {
        let e = Event::new(self.header(id, at, sku), body);
        e.validate().map_err(|err| err.to_string())?;
        Ok(e)
    }

    /// The events `facts` selects from `order`. An error names the field and value; the
    /// caller dead-letters the whole payload.
    pub fn order(&self, order: &Order, facts: Facts) -> Result<Vec<Event>, String> {
        let placed = order.created_at.0;
        let oid = order.id.to_string();
        let sku = single_sku(order);
        let units: u32 = order.line_items.iter().map(|l| l.quantity).sum();
        let money = |amount: Decimal| Money {
            amount,
            currency: order.currency.clone(),
        };
        let ship_by = placed + self.shop.handling_time_delta();
        let recent = |t: DateTime<Utc>| match facts {
            Facts::Updated { lookback } => order.updated_at.is_none_or(|u| t >= u.0 - lookback),
            _ => true,
        };
        let mut out = Vec::new();

        if matches!(facts, Facts::Placed | Facts::All) {
            if units == 0 {
                return Err(format!(
                    "order {oid}: field `line_items`: no units ordered (quantities sum to 0)"
                ));
            }
            out.push(self.event(
                format!("shopify-{oid}-placed"),
                placed,
                sku.clone(),
                OrderPlaced {
                    order_id: oid.clone(),
                    total: money(order.total_price),
                    units,
                    fulfilment: self.shop.fulfilment,
                    ship_by: Some(ship_by),
                    deliver_by: self.shop.deliver_by(placed),
                },
            )?);
        }

        let paid_status = order
            .financial_status
            .as_deref()
            .is_some_and(|s| PAID_STATUSES.contains(&s));
        let paid_at = match facts {
            Facts::Paid { at } => Some(at),
            Facts::All if paid_status => Some(order.processed_at.map(|t| t.0).ok_or_else(|| {
                format!("order {oid}: field `processed_at`: missing on a paid order (the paid time basis)")
            })?),
            _ => None,
        };
        if let Some(paid_at) = paid_at {
            out.push(self.event(
                format!("shopify-{oid}-paid"),
                paid_at,
                sku.clone(),
                OrderPaid {
                    order_id: oid.clone(),
                    placed_at: placed,
                    amount: money(order.total_price),
                },
            )?);
        }

        if matches!(facts, Facts::Updated { .. } | Facts::All) {
            let order_lines = OrderLines {
                sku: sku.as_deref(),
                units,
            };
            for f in &order.fulfillments {
                out.extend(self.fulfillment(&oid, placed, f, order_lines, &recent)?);
            }
        }

        let wants_cancel = match facts {
            Facts::Cancelled => true,
            Facts::Updated { .. } | Facts::All => order.cancelled_at.is_some(),
            _ => false,
        };
        if wants_cancel {
            let at = order.cancelled_at.map(|t| t.0).ok_or_else(|| {
                format!("order {oid}: field `cancelled_at`: missing on a cancelled order")
            })?;
            if recent(at) {
                out.push(self.event(
                    format!("shopify-{oid}-cancelled"),
                    at,
                    sku.clone(),
                    OrderCancelled {
                        order_id: oid.clone(),
                        placed_at: placed,
                        cancelled_by: cancelled_by(order.cancel_reason.as_deref()),
                        reason: order.cancel_reason.clone(),
                        fulfilment: Some(self.shop.fulfilment),
                    },
                )?);
            }
        }

        if matches!(facts, Facts::Updated { .. } | Facts::All) {
            for r in &order.refunds {
                if let Some(e) = self.refund(r, placed, Some(&order.currency))?
                    && recent(e.header.event_time)
                {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// The events of fulfilment `f` of order `oid` placed at `placed`, those whose own time
    /// `recent` accepts: `order.shipped` at its `created_at` once its `status` is `success`,
    /// and `order.delivered` at its `updated_at` once its `shipment_status` is `delivered` —
    /// when it has a tracking number (on-time delivery counts tracked units only) and the
    /// store promises a delivery time (`delivery_time`; the event needs the promised date).
    /// `order` stands in for lines the fulfilment does not list.
    ///
    /// Ids: the shipment `shopify-<order id>-shipped-<fulfillment id>`, the same from
    /// `fulfillments/*`, `orders/updated` and the backfill; the delivery the parcel's
    /// ([`crate::map::parcel_delivered_id`]), shared with the tracking aggregators so a
    /// parcel both report counts once.
    pub fn fulfillment(
        &self,
        oid: &str,
        placed: DateTime<Utc>,
        f: &Fulfillment,
        order: OrderLines<'_>,
        recent: &dyn Fn(DateTime<Utc>) -> bool,
    ) -> Result<Vec<Event>, String> {
        let mut out = Vec::new();
        if f.status.as_deref() != Some("success") {
            return Ok(out);
        }
        let shipped: u32 = f.line_items.iter().map(|l| l.quantity).sum();
        let units = if shipped > 0 {
            shipped
        } else {
            order.units.max(1)
        };
        let sku = single(f.line_items.iter().filter_map(|l| l.sku.as_deref()))
            .or_else(|| order.sku.map(str::to_string));
        let tracking = f
            .tracking_number
            .iter()
            .chain(&f.tracking_numbers)
            .map(|t| t.trim())
            .find(|t| !t.is_empty())
            .map(str::to_string);
        let deliver_by = self.shop.deliver_by(placed);
        let fulfilment = Some(self.shop.fulfilment);
        if recent(f.created_at.0) {
            out.push(self.event(
                format!("shopify-{oid}-shipped-{}", f.id),
                f.created_at.0,
                sku.clone(),
                OrderShipped {
                    order_id: oid.to_string(),
                    placed_at: placed,
                    ship_by: placed + self.shop.handling_time_delta(),
                    deliver_by,
                    units,
                    carrier: f.tracking_company.clone(),
                    // Shopify reports no carrier scan; a tracking number is the evidence.
                    tracking_valid: tracking.is_some(),
                    tracking_id: tracking.clone(),
                    fulfilment,
                },
            )?);
        }
        if f.shipment_status.as_deref() == Some("delivered")
            && let (Some(number), Some(deliver_by)) = (&tracking, deliver_by)
        {
            let at = f.updated_at.map(|t| t.0).ok_or_else(|| {
                format!(
                    "fulfillment {} of order {oid}: field `updated_at`: missing on a delivered fulfilment (the delivery time)",
                    f.id
                )
            })?;
            if recent(at) {
                out.push(self.event(
                    crate::map::parcel_delivered_id(&self.shop.shop, number),
                    at,
                    sku,
                    OrderDelivered {
                        order_id: oid.to_string(),
                        placed_at: placed,
                        deliver_by,
                        units,
                        fulfilment,
                    },
                )?);
            }
        }
        Ok(out)
    }

    /// The `order.refunded` event of `refund` of an order placed at `placed_at`: the sum of its
    /// successful refund transactions, exactly, in their one currency. `None` when nothing was
    /// paid back (e.g. a restock-only refund).
    pub fn refund(
        &self,
        refund: &Refund,
        placed_at: DateTime<Utc>,
        order_currency: Option<&str>,
    ) -> Result<Option<Event>, String> {
        let oid = refund.order_id.to_string();
        let mut total = Decimal::ZERO;
        let mut currency: Option<String> = None;
        for (i, t) in refund.transactions.iter().enumerate() {
            if t.kind != "refund" || t.status.as_deref().is_some_and(|s| s != "success") {
                continue;
            }
            let c = t
                .currency
                .clone()
                .or_else(|| order_currency.map(str::to_string))
                .ok_or_else(|| {
                    format!("refund {}: field `transactions[{i}].currency`: missing, and no order currency is known", refund.id)
                })?;
            match &currency {
                Some(seen) if *seen != c => {
                    return Err(format!(
                        "refund {}: field `transactions[{i}].currency`: {c:?} differs from {seen:?} in the same refund",
                        refund.id
                    ));
                }
                _ => currency = Some(c),
            }
            total += t.amount;
        }
        let Some(currency) = currency else {
            return Ok(None);
        };
        if total == Decimal::ZERO {
            return Ok(None);
        }
        let at = refund.processed_at.unwrap_or(refund.created_at).0;
        self.event(
            format!("shopify-{oid}-refund-{}", refund.id),
            at,
            None,
            OrderRefunded {
                order_id: oid,
                placed_at,
                amount: Money {
                    amount: total,
                    currency,
                },
                // Shopify refunds carry no fault; the refund-rate rules that count only the
                // seller's faults are Walmart's.
                seller_fault: false,
                fulfilment: Some(self.shop.fulfilment),
            },
        )
        .map(Some)
    }
}

/// What an order's lines say, for a fulfilment that lists none.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderLines<'a> {
    /// The SKU all its lines share, if any.
    pub sku: Option<&'a str>,
    /// Units ordered (0 when the order is not at hand).
    pub units: u32,
}

/// The order's SKU when all its lines share one, so SKU-scoped KPIs can use it.
fn single_sku(order: &Order) -> Option<String> {
    single(order.line_items.iter().filter_map(|l| l.sku.as_deref()))
}

/// The one non-empty SKU of `skus`, if they all agree.
fn single<'s>(skus: impl Iterator<Item = &'s str>) -> Option<String> {
    let mut skus = skus.filter(|s| !s.trim().is_empty());
    let first = skus.next()?;
    skus.all(|s| s == first).then(|| first.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::shopify::payload::decode;

    fn shop() -> ShopifyShop {
        ShopifyShop::for_tests("shop-003")
    }

    fn order(extra: serde_json::Value) -> Order {
        let mut v = serde_json::json!({
            "id": 5501234567890u64,
            "created_at": "2026-11-02T12:03:00-05:00",
            "processed_at": "2026-11-02T12:05:00-05:00",
            "updated_at": "2026-11-04T09:00:00-05:00",
            "financial_status": "paid",
            "total_price": "105.40",
            "currency": "USD",
            "line_items": [{"quantity": 2, "sku": "MUG-01"}, {"quantity": 1, "sku": "MUG-01"}],
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        decode(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn mapper(shop: &ShopifyShop) -> Mapper<'_> {
        Mapper {
            shop,
            source: "shopify_webhook",
            now: "2026-11-04T14:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn placed_uses_created_at_and_paid_uses_the_delivery_time() {
        let s = shop();
        let m = mapper(&s);
        let o = order(serde_json::json!({}));
        let placed = m.order(&o, Facts::Placed).unwrap();
        assert_eq!(placed.len(), 1);
        let h = &placed[0].header;
        assert_eq!(h.event_id, "shopify-5501234567890-placed");
        assert_eq!(h.event_time.to_rfc3339(), "2026-11-02T17:03:00+00:00");
        assert_eq!(h.sku.as_deref(), Some("MUG-01"));
        let EventBody::OrderPlaced(p) = &placed[0].body else {
            panic!("{placed:?}")
        };
        assert_eq!((p.units, p.total.amount.to_string()), (3, "105.40".into()));
        // Paid the next morning: processed_at (17:05 UTC on the 2nd) is not the paid time.
        let at = "2026-11-03T14:20:11.250Z".parse().unwrap();
        let paid = m.order(&o, Facts::Paid { at }).unwrap();
        assert_eq!(paid.len(), 1);
        assert_eq!(paid[0].header.event_id, "shopify-5501234567890-paid");
        assert_eq!(
            paid[0].header.event_time.to_rfc3339(),
            "2026-11-03T14:20:11.250+00:00"
        );
        // The backfill has no delivery: processed_at is the only paid time the order carries.
        let all = m.order(&o, Facts::All).unwrap();
        assert_eq!(all[1].header.event_id, "shopify-5501234567890-paid");
        assert_eq!(
            all[1].header.event_time.to_rfc3339(),
            "2026-11-02T17:05:00+00:00"
        );
    }

    /// The events of an `orders/updated` delivery of `o`, with a day's lookback.
    fn updated(m: &Mapper<'_>, o: &Order) -> Vec<Event> {
        let lookback = TimeDelta::hours(24);
        m.order(o, Facts::Updated { lookback }).unwrap()
    }

    #[test]
    fn an_update_does_not_announce_the_payment() {
        let s = shop();
        let m = mapper(&s);
        // Paid within the lookback of the update, yet the order cannot say when: no payment.
        let o = order(serde_json::json!({"updated_at": "2026-11-02T12:06:00-05:00"}));
        let events = updated(&m, &o);
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn cancel_reasons_decide_who_cancelled() {
        assert_eq!(cancelled_by(Some("customer")), CancelledBy::Buyer);
        assert_eq!(cancelled_by(Some("inventory")), CancelledBy::Seller);
        assert_eq!(cancelled_by(Some("fraud")), CancelledBy::System);
        assert_eq!(cancelled_by(Some("declined")), CancelledBy::System);
        assert_eq!(cancelled_by(Some("other")), CancelledBy::Seller);
        assert_eq!(cancelled_by(None), CancelledBy::Seller);
    }

    #[test]
    fn refunds_sum_successful_refund_transactions_exactly() {
        let s = shop();
        let m = mapper(&s);
        let r: Refund = decode(
            br#"{"id": 77, "order_id": 9, "created_at": "2026-11-05T10:00:00Z",
                 "transactions": [
                   {"kind": "refund", "status": "success", "amount": "0.10", "currency": "USD"},
                   {"kind": "refund", "status": "success", "amount": "0.20", "currency": "USD"},
                   {"kind": "refund", "status": "failure", "amount": "99.00", "currency": "USD"},
                   {"kind": "sale", "status": "success", "amount": "5.00", "currency": "USD"}]}"#,
        )
        .unwrap();
        let e = m
            .refund(&r, "2026-11-01T00:00:00Z".parse().unwrap(), None)
            .unwrap()
            .unwrap();
        assert_eq!(e.header.event_id, "shopify-9-refund-77");
        let EventBody::OrderRefunded(b) = &e.body else {
            panic!()
        };
        assert_eq!(b.amount, Money::usd("0.30"));
        let mixed: Refund = decode(
            br#"{"id": 78, "order_id": 9, "created_at": "2026-11-05T10:00:00Z",
                 "transactions": [
                   {"kind": "refund", "status": "success", "amount": "1.00", "currency": "USD"},
                   {"kind": "refund", "status": "success", "amount": "1.00", "currency": "CAD"}]}"#,
        )
        .unwrap();
        let err = m
            .refund(&mixed, "2026-11-01T00:00:00Z".parse().unwrap(), None)
            .unwrap_err();
        assert!(err.contains("transactions[1].currency"), "{err}");
    }

    #[test]
    fn updated_reveals_only_recent_facts() {
        let s = shop();
        let m = mapper(&s);
        let o = order(serde_json::json!({
            "fulfillments": [
                {"id": 1, "created_at": "2026-11-04T08:00:00-05:00", "status": "success",
                 "tracking_company": "UPS", "tracking_number": "1Z999",
                 "line_items": [{"quantity": 3, "sku": "MUG-01"}]},
                {"id": 2, "created_at": "2026-11-04T08:30:00-05:00", "status": "cancelled"}
            ]
        }));
        let events = updated(&m, &o);
        let ids: Vec<_> = events.iter().map(|e| e.header.event_id.as_str()).collect();
        // Paid two days before the update: not re-announced; only the new fulfilment.
        assert_eq!(ids, ["shopify-5501234567890-shipped-1"]);
        let all = m.order(&o, Facts::All).unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
    }

    /// A fulfilment body as `fulfillments/*` posts it, with `extra` fields replaced.
    fn fulfillment(extra: serde_json::Value) -> Fulfillment {
        let mut v = serde_json::json!({
            "id": 51, "order_id": 5501234567890u64, "status": "success",
            "created_at": "2026-11-03T16:20:00-05:00", "updated_at": "2026-11-05T14:12:30-05:00",
            "tracking_company": "UPS", "tracking_number": null,
            "tracking_numbers": ["1z999aa1 0123456784"], "shipment_status": "delivered",
            "line_items": [{"quantity": 2, "sku": "MUG-01"}],
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        decode(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn a_delivered_fulfilment_is_shipped_and_delivered_by_the_promise() {
        let mut s = shop();
        s.delivery_time = Some(std::time::Duration::from_secs(5 * 86_400));
        let m = mapper(&s);
        // Placed 2026-11-02T17:03:00Z: ship by +2 days, deliver by +5 days.
        let placed = "2026-11-02T17:03:00Z".parse().unwrap();
        let f = fulfillment(serde_json::json!({}));
        let events = m
            .fulfillment("5501234567890", placed, &f, OrderLines::default(), &|_| {
                true
            })
            .unwrap();
        let ids: Vec<_> = events.iter().map(|e| e.header.event_id.as_str()).collect();
        // The number from `tracking_numbers` (no `tracking_number`), spaces dropped, upper-cased.
        assert_eq!(
            ids,
            [
                "shopify-5501234567890-shipped-51",
                "delivered-shop-003-1Z999AA10123456784"
            ]
        );
        let EventBody::OrderShipped(sh) = &events[0].body else {
            panic!("{events:?}")
        };
        assert_eq!(sh.tracking_id.as_deref(), Some("1z999aa1 0123456784"));
        assert!(sh.tracking_valid);
        assert_eq!((sh.units, sh.carrier.as_deref()), (2, Some("UPS")));
        assert_eq!(sh.ship_by.to_rfc3339(), "2026-11-04T17:03:00+00:00");
        assert_eq!(
            sh.deliver_by.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-11-07T17:03:00+00:00")
        );
        assert_eq!(events[0].header.sku.as_deref(), Some("MUG-01"));
        let d = &events[1];
        // updated_at 14:12:30 -05:00 = 19:12:30 UTC.
        assert_eq!(
            d.header.event_time.to_rfc3339(),
            "2026-11-05T19:12:30+00:00"
        );
        let EventBody::OrderDelivered(b) = &d.body else {
            panic!("{d:?}")
        };
        assert_eq!(b.deliver_by.to_rfc3339(), "2026-11-07T17:03:00+00:00");
        assert_eq!((b.units, b.placed_at), (2, placed));

        // No tracking number: shipped (without valid tracking), and no delivery to count.
        let untracked = fulfillment(serde_json::json!({"tracking_numbers": []}));
        let events = m
            .fulfillment(
                "5501234567890",
                placed,
                &untracked,
                OrderLines::default(),
                &|_| true,
            )
            .unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        let EventBody::OrderShipped(sh) = &events[0].body else {
            panic!()
        };
        assert!(!sh.tracking_valid && sh.tracking_id.is_none());
        // Not yet successful (e.g. `pending`): nothing.
        let pending = fulfillment(serde_json::json!({"status": "pending"}));
        let none = m
            .fulfillment(
                "5501234567890",
                placed,
                &pending,
                OrderLines::default(),
                &|_| true,
            )
            .unwrap();
        assert!(none.is_empty(), "{none:?}");
        // Delivered without its time: the payload is refused, naming the field.
        let timeless = fulfillment(serde_json::json!({"updated_at": null}));
        let err = m
            .fulfillment(
                "5501234567890",
                placed,
                &timeless,
                OrderLines::default(),
                &|_| true,
            )
            .unwrap_err();
        assert!(err.contains("field `updated_at`"), "{err}");
    }

    #[test]
    fn without_a_promised_delivery_time_a_delivery_is_not_an_on_time_fact() {
        let s = shop();
        let m = mapper(&s);
        let placed = "2026-11-02T17:03:00Z".parse().unwrap();
        let f = fulfillment(serde_json::json!({}));
        let events = m
            .fulfillment("5501234567890", placed, &f, OrderLines::default(), &|_| {
                true
            })
            .unwrap();
        assert_eq!(events.len(), 1, "only the shipment: {events:?}");
        let EventBody::OrderShipped(sh) = &events[0].body else {
            panic!()
        };
        assert_eq!(sh.deliver_by, None);
    }

    #[test]
    fn an_update_showing_a_recent_delivery_announces_it_under_the_parcel_id() {
        let mut s = shop();
        s.delivery_time = Some(std::time::Duration::from_secs(5 * 86_400));
        let m = mapper(&s);
        // Updated when the delivery reached Shopify; shipped two days before: outside the
        // day's lookback, only the delivery is new.
        let o = order(serde_json::json!({
            "updated_at": "2026-11-05T14:12:31-05:00",
            "fulfillments": [{"id": 51, "order_id": 5501234567890u64, "status": "success",
                "created_at": "2026-11-03T10:00:00-05:00", "updated_at": "2026-11-05T14:12:30-05:00",
                "tracking_company": "UPS", "tracking_number": "1Z999AA10123456784",
                "shipment_status": "delivered", "line_items": []}]
        }));
        let events = updated(&m, &o);
        let ids: Vec<_> = events.iter().map(|e| e.header.event_id.as_str()).collect();
        assert_eq!(ids, ["delivered-shop-003-1Z999AA10123456784"]);
        let EventBody::OrderDelivered(b) = &events[0].body else {
            panic!()
        };
        // The fulfilment lists no lines: the order's 2 + 1 units.
        assert_eq!(b.units, 3);
        // The backfill sees both, the shipment with the same id as fulfillments/create.
        let all = m.order(&o, Facts::All).unwrap();
        let ids: Vec<_> = all.iter().map(|e| e.header.event_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "shopify-5501234567890-placed",
                "shopify-5501234567890-paid",
                "shopify-5501234567890-shipped-51",
                "delivered-shop-003-1Z999AA10123456784"
            ]
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let err = decode::<Order>(
            br#"{"id": 1, "created_at": "yesterday", "total_price": "1.00", "currency": "USD"}"#,
        )
        .unwrap_err();
        assert_eq!(
            err,
            r#"field `created_at`: expected an RFC 3339 time such as "2026-11-02T12:03:00-05:00", got "yesterday""#
        );
        let err = decode::<Order>(
            br#"{"id": 1, "created_at": "2026-11-02T12:03:00Z", "total_price": 1.5, "currency": "USD"}"#,
        )
        .unwrap_err();
        assert!(
            err.starts_with("field `total_price`: expected a decimal string"),
            "{err}"
        );
        let s = shop();
        let o = order(serde_json::json!({"line_items": []}));
        let err = mapper(&s).order(&o, Facts::Placed).unwrap_err();
        assert!(err.contains("`line_items`"), "{err}");
    }
}
