//! One Walmart `order` → the canonical lifecycle events its order-line statuses imply.
//!
//! | line statuses | events (ids `walmart:{purchaseOrderId}:{kind}`) |
//! |---|---|
//! | Created, Acknowledged | `placed` |
//! | any line Shipped or Delivered | `placed`, `shipped` |
//! | every line Cancelled | `placed`, `cancelled` |
//!
//! `placed` is timed at `orderDate` (UTC epoch ms) with the sum of every charge and its tax as
//! the total; `shipped` at the newest `trackingInfo.shipDateTime` (else the line's
//! `statusDate`) with `shippingInfo.estimatedShipDate` as ship-by; `cancelled` at the newest
//! line `statusDate`, by the buyer when the reason says the customer asked
//! (`CUSTOMER_REQUESTED_SELLER_TO_CANCEL`), else by the seller.

use chrono::{DateTime, Utc};
use kpiflow_schemas::{
    CancelledBy, Decimal, EventBody, Fulfilment, Money, OrderCancelled, OrderPlaced, OrderShipped,
};
use serde_json::Value;

use crate::map::{MapError, Record};
use crate::pull::Fact;

const STATUSES: [&str; 6] = [
    "Created",
    "Acknowledged",
    "Shipped",
    "Delivered",
    "Cancelled",
    "Refund",
];

/// Maps one `order` object; `Err` names the field and value that made it unusable.
pub fn order(v: &Value) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let po = r.str("purchaseOrderId")?;
    let at = |e: MapError| format!("order {po}: {e}");
    let placed_at = r.epoch_ms("orderDate").map_err(at)?;
    let ship_by = opt_ms(&r, "shippingInfo.estimatedShipDate").map_err(at)?;
    let deliver_by = opt_ms(&r, "shippingInfo.estimatedDeliveryDate").map_err(at)?;
    let fulfilment = fulfilment(&r).map_err(at)?;
    let lines = match r.get("orderLines.orderLine") {
        Some(Value::Array(lines)) if !lines.is_empty() => lines,
        _ => {
            return Err(at(
                "field `orderLines.orderLine`: expected a non-empty list".into(),
            ));
        }
    };

    let mut total: Option<Money> = None;
    let mut add = |m: Money, field: &str| -> Result<(), MapError> {
        match &mut total {
            None => total = Some(m),
            Some(t) if t.currency == m.currency => t.amount += m.amount,
            Some(t) => {
                return Err(format!(
                    "field `{field}`: currency {:?} differs from the order's {:?}",
                    m.currency, t.currency
                ));
            }
        }
        Ok(())
    };
    let (mut units, mut shipped_units) = (0u64, 0u64);
    let (mut all_cancelled, mut any_shipped) = (true, false);
    let mut by_buyer = false;
    let mut last_status: Option<DateTime<Utc>> = None;
    let mut shipped_at: Option<DateTime<Utc>> = None;
    let (mut carrier, mut tracking) = (None, None);
    for (i, line) in lines.iter().enumerate() {
        let l = Record(line);
        let f = |name: &str| format!("orderLines.orderLine[{i}].{name}");
        let in_line = |e: MapError| at(format!("orderLines.orderLine[{i}]: {e}"));
        let qty = l.count("orderLineQuantity.amount").map_err(in_line)?;
        units += qty;
        if let Some(Value::Array(charges)) = l.get("charges.charge") {
            for (j, c) in charges.iter().enumerate() {
                let c = Record(c);
                let in_charge = |e: MapError| in_line(format!("charges.charge[{j}]: {e}"));
                let amount = c
                    .money("chargeAmount.amount", "chargeAmount.currency")
                    .map_err(in_charge)?;
                add(amount, &f(&format!("charges.charge[{j}].chargeAmount"))).map_err(at)?;
                if c.get("tax.taxAmount").is_some() {
                    let tax = c
                        .money("tax.taxAmount.amount", "tax.taxAmount.currency")
                        .map_err(in_charge)?;
                    add(tax, &f(&format!("charges.charge[{j}].tax"))).map_err(at)?;
                }
            }
        }
        if let Some(t) = opt_ms(&l, "statusDate").map_err(in_line)? {
            last_status = last_status.max(Some(t));
        }
        let statuses = match l.get("orderLineStatuses.orderLineStatus") {
            Some(Value::Array(s)) if !s.is_empty() => s,
            _ => {
                return Err(at(format!(
                    "field `{}`: expected a non-empty list",
                    f("orderLineStatuses.orderLineStatus")
                )));
            }
        };
        for (k, st) in statuses.iter().enumerate() {
            let s = Record(st);
            let in_status =
                |e: MapError| in_line(format!("orderLineStatuses.orderLineStatus[{k}]: {e}"));
            let status = s.str("status").map_err(in_status)?;
            if !STATUSES.contains(&status) {
                return Err(at(format!(
                    "field `{}`: unknown status {status:?} (known: {})",
                    f(&format!("orderLineStatuses.orderLineStatus[{k}].status")),
                    STATUSES.join(", ")
                )));
            }
            let qty = s
                .count_or_zero("statusQuantity.amount")
                .map_err(in_status)?;
            if status != "Cancelled" {
                all_cancelled = false;
            } else if s.opt_str("cancellationReason").map_err(in_status)?
                == Some("CUSTOMER_REQUESTED_SELLER_TO_CANCEL")
            {
                by_buyer = true;
            }
            if matches!(status, "Shipped" | "Delivered") {
                any_shipped = true;
                shipped_units += qty;
                if let Some(t) = opt_ms(&s, "trackingInfo.shipDateTime").map_err(in_status)? {
                    shipped_at = shipped_at.max(Some(t));
                }
                carrier = carrier.or(s
                    .opt_str("trackingInfo.carrierName.carrier")
                    .map_err(in_status)?
                    .map(str::to_string));
                tracking = tracking.or(s
                    .opt_str("trackingInfo.trackingNumber")
                    .map_err(in_status)?
                    .map(str::to_string));
            }
        }
    }
    let total = total.unwrap_or(Money {
        amount: Decimal::ZERO,
        currency: "USD".into(),
    });
    let fact = |kind: &str, t: DateTime<Utc>, body: EventBody| {
        Fact::new(format!("walmart:{po}:{kind}"), t, body)
    };
    let units32 = |n: u64| u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    let mut facts = vec![fact(
        "placed",
        placed_at,
        OrderPlaced {
            order_id: po.to_string(),
            total,
            units: units32(units),
            fulfilment,
            ship_by,
            deliver_by,
        }
        .into(),
    )];
    if any_shipped {
        let ship_by = ship_by.ok_or_else(|| {
            at("field `shippingInfo.estimatedShipDate` is missing on a shipped order".into())
        })?;
        let when = shipped_at
            .or(last_status)
            .unwrap_or(placed_at)
            .max(placed_at);
        facts.push(fact(
            "shipped",
            when,
            OrderShipped {
                order_id: po.to_string(),
                placed_at,
                ship_by,
                deliver_by,
                units: units32(shipped_units),
                carrier,
                tracking_valid: tracking.is_some(),
                tracking_id: tracking,
                fulfilment: Some(fulfilment),
            }
            .into(),
        ));
    }
    if all_cancelled {
        facts.push(fact(
            "cancelled",
            last_status.unwrap_or(placed_at).max(placed_at),
            OrderCancelled {
                order_id: po.to_string(),
                placed_at,
                cancelled_by: if by_buyer {
                    CancelledBy::Buyer
                } else {
                    CancelledBy::Seller
                },
                reason: None,
                fulfilment: Some(fulfilment),
            }
            .into(),
        ));
    }
    Ok(facts)
}

/// How an order is fulfilled, from its `shipNode.type` (absent: seller-fulfilled).
pub(crate) fn fulfilment(r: &Record<'_>) -> Result<Fulfilment, MapError> {
    match r.opt_str("shipNode.type")? {
        None | Some("SellerFulfilled") => Ok(Fulfilment::Merchant),
        Some("WFSFulfilled") => Ok(Fulfilment::Wfs),
        Some("3PLFulfilled") => Ok(Fulfilment::ThirdParty),
        Some(other) => Err(format!(
            "field `shipNode.type`: expected SellerFulfilled, WFSFulfilled or 3PLFulfilled, got {other:?}"
        )),
    }
}

fn opt_ms(r: &Record<'_>, path: &str) -> Result<Option<DateTime<Utc>>, MapError> {
    match r.get(path) {
        None => Ok(None),
        Some(_) => r.epoch_ms(path).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<Value> {
        let text = include_str!("../../../fixtures/walmart_orders/orders-page-1.json");
        let v: Value = serde_json::from_str(text).unwrap();
        v["list"]["elements"]["order"].as_array().unwrap().clone()
    }

    #[test]
    fn a_shipped_order_sums_charges_and_tax_exactly() {
        let orders = fixture();
        let facts = order(&orders[0]).unwrap();
        let ids: Vec<_> = facts.iter().map(|f| f.event_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "walmart:1796277083022:placed",
                "walmart:1796277083022:shipped"
            ]
        );
        let EventBody::OrderPlaced(p) = &facts[0].body else {
            panic!()
        };
        // 10.50 + 0.80 tax + 2.99 shipping + 5.25 + 0.42 tax
        assert_eq!(p.total.amount.to_string(), "19.96");
        assert_eq!(p.units, 2);
        assert_eq!(
            facts[0].event_time.to_rfc3339(),
            "2026-11-20T16:29:31+00:00"
        );
        let EventBody::OrderShipped(s) = &facts[1].body else {
            panic!()
        };
        assert_eq!(s.tracking_id.as_deref(), Some("1Z12345E0205271688"));
        assert!(s.tracking_valid);
    }
}
