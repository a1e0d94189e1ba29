//! One getOrders `Order` → the canonical lifecycle events its status implies.
//!
//! | `OrderStatus` | events (deterministic ids `amazon:{AmazonOrderId}:{kind}`) |
//! |---|---|
//! | Pending | `placed` once `OrderTotal` is known (Amazon omits it while payment is pending) |
//! | Unshipped, Unfulfillable, InvoiceUnconfirmed | `placed` |
//! | PartiallyShipped, Shipped | `placed`, `shipped` |
//! | Canceled | `placed` (when `OrderTotal` is known), `cancelled` |
//!
//! An order is re-read whenever Amazon updates it; every state re-emits the same ids, so the
//! processor counts each fact once (first sight wins). getOrders has no ship time: `shipped`
//! is timed at `LastUpdateDate`, the moment Amazon recorded the status, with `LatestShipDate`
//! as its ship-by. Nor does it carry tracking data; shipments count as validly tracked here
//! (valid-tracking rates come from the shipment milestones). Cancellations count as the
//! seller's unless `BuyerRequestedCancel.IsBuyerRequestedCancel` is `"true"`.

use kpiflow_schemas::{CancelledBy, Fulfilment, OrderCancelled, OrderPlaced, OrderShipped};
use serde_json::Value;

use crate::map::{MapError, Record};
use crate::pull::Fact;

/// Maps one `Order` object; `Err` names the field and value that made it unusable.
pub fn order(v: &Value) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let id = r.str("AmazonOrderId")?;
    let status = r.str("OrderStatus")?;
    let placed_at = r.time("PurchaseDate")?;
    let updated_at = r.time("LastUpdateDate")?;
    let fulfilment = match r.str("FulfillmentChannel")? {
        "AFN" => Fulfilment::Fba,
        "MFN" => Fulfilment::Merchant,
        other => {
            return Err(format!(
                "order {id}: field `FulfillmentChannel`: expected \"AFN\" or \"MFN\", got {other:?}"
            ));
        }
    };
    let ship_by = r.opt_time("LatestShipDate")?;
    let deliver_by = r.opt_time("LatestDeliveryDate")?;
    let shipped_units = r.count_or_zero("NumberOfItemsShipped")?;
    let unshipped_units = r.count_or_zero("NumberOfItemsUnshipped")?;
    let units = u32::try_from(shipped_units + unshipped_units)
        .map_err(|_| format!("order {id}: fields `NumberOfItems*`: too many units"))?;
    let marketplace = r.opt_str("MarketplaceId")?.map(str::to_string);
    let total = match r.get("OrderTotal") {
        Some(_) => Some(
            r.money("OrderTotal.Amount", "OrderTotal.CurrencyCode")
                .map_err(|e| format!("order {id}: {e}"))?,
        ),
        None => None,
    };
    let fact = |kind: &str, at, body: kpiflow_schemas::EventBody| Fact {
        event_id: format!("amazon:{id}:{kind}"),
        event_time: at,
        sku: None,
        marketplace: marketplace.clone(),
        body,
    };

    let mut facts = Vec::new();
    let known = [
        "Pending",
        "Unshipped",
        "PartiallyShipped",
        "Shipped",
        "Canceled",
        "Unfulfillable",
        "InvoiceUnconfirmed",
        "PendingAvailability",
    ];
    if !known.contains(&status) {
        return Err(format!(
            "order {id}: field `OrderStatus`: unknown status {status:?} (known: {})",
            known.join(", ")
        ));
    }
    match (&total, status) {
        (Some(total), _) => facts.push(fact(
            "placed",
            placed_at,
            OrderPlaced {
                order_id: id.to_string(),
                total: total.clone(),
                units: units.max(1),
                fulfilment,
                ship_by,
                deliver_by,
            }
            .into(),
        )),
        // Amazon leaves the total out until payment is authorised.
        (None, "Pending" | "PendingAvailability" | "Canceled") => {}
        (None, _) => {
            return Err(format!(
                "order {id}: field `OrderTotal` is missing on a {status} order"
            ));
        }
    }
    if matches!(status, "Shipped" | "PartiallyShipped") {
        let ship_by = ship_by.ok_or_else(|| {
            format!("order {id}: field `LatestShipDate` is missing on a {status} order")
        })?;
        facts.push(fact(
            "shipped",
            updated_at.max(placed_at),
            OrderShipped {
                order_id: id.to_string(),
                placed_at,
                ship_by,
                deliver_by,
                units: u32::try_from(shipped_units.max(1)).unwrap_or(u32::MAX),
                carrier: None,
                tracking_id: None,
                tracking_valid: true,
                fulfilment: Some(fulfilment),
            }
            .into(),
        ));
    }
    // An order cancelled before Amazon priced it (Pending, then Canceled) was never placed:
    // no placement, so no cancellation either (cancellation rate is cancels of placed orders).
    if status == "Canceled" && total.is_some() {
        let by_buyer = r.opt_str("BuyerRequestedCancel.IsBuyerRequestedCancel")? == Some("true");
        facts.push(fact(
            "cancelled",
            updated_at.max(placed_at),
            OrderCancelled {
                order_id: id.to_string(),
                placed_at,
                cancelled_by: if by_buyer {
                    CancelledBy::Buyer
                } else {
                    CancelledBy::Seller
                },
                reason: r
                    .opt_str("BuyerRequestedCancel.BuyerCancelReason")?
                    .map(str::to_string),
                fulfilment: Some(fulfilment),
            }
            .into(),
        ));
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::EventBody;
    use serde_json::json;

    fn base(status: &str) -> Value {
        json!({
            "AmazonOrderId": "113-0000001-0000001",
            "PurchaseDate": "2026-11-02T17:03:00Z",
            "LastUpdateDate": "2026-11-03T09:00:00Z",
            "OrderStatus": status,
            "FulfillmentChannel": "MFN",
            "OrderTotal": {"CurrencyCode": "USD", "Amount": "25.98"},
            "NumberOfItemsShipped": 2,
            "NumberOfItemsUnshipped": 0,
            "LatestShipDate": "2026-11-04T07:59:59Z",
            "MarketplaceId": "ATVPDKIKX0DER"
        })
    }

    #[test]
    fn a_shipped_order_is_placed_and_shipped() {
        let facts = order(&base("Shipped")).unwrap();
        let ids: Vec<_> = facts.iter().map(|f| f.event_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "amazon:113-0000001-0000001:placed",
                "amazon:113-0000001-0000001:shipped"
            ]
        );
        let EventBody::OrderPlaced(p) = &facts[0].body else {
            panic!()
        };
        assert_eq!(p.total.amount.to_string(), "25.98");
        assert_eq!(p.fulfilment, Fulfilment::Merchant);
        assert_eq!(p.units, 2);
        assert_eq!(
            facts[0].event_time.to_rfc3339(),
            "2026-11-02T17:03:00+00:00"
        );
        let EventBody::OrderShipped(s) = &facts[1].body else {
            panic!()
        };
        assert_eq!(s.ship_by.to_rfc3339(), "2026-11-04T07:59:59+00:00");
    }

    #[test]
    fn pending_orders_without_a_total_wait_and_cancels_name_who() {
        let mut v = base("Pending");
        v.as_object_mut().unwrap().remove("OrderTotal");
        assert!(order(&v).unwrap().is_empty());
        let mut v = base("Canceled");
        v["FulfillmentChannel"] = "AFN".into();
        v["BuyerRequestedCancel"] =
            json!({"IsBuyerRequestedCancel": "true", "BuyerCancelReason": "changed mind"});
        let facts = order(&v).unwrap();
        let EventBody::OrderCancelled(c) = &facts[1].body else {
            panic!()
        };
        assert_eq!(c.cancelled_by, CancelledBy::Buyer);
        let EventBody::OrderPlaced(p) = &facts[0].body else {
            panic!()
        };
        assert_eq!(p.fulfilment, Fulfilment::Fba);
        assert_eq!(c.fulfilment, Some(Fulfilment::Fba));
    }

    #[test]
    fn an_order_cancelled_before_it_was_priced_gives_no_cancellation() {
        // Pending, then Canceled: Amazon never priced it, so it was never a placed order and
        // its cancellation must not count against the seller (or against any order count).
        let mut v = base("Canceled");
        v.as_object_mut().unwrap().remove("OrderTotal");
        assert!(order(&v).unwrap().is_empty());
    }

    #[test]
    fn a_backfilled_shipped_order_is_placed_at_its_purchase_time() {
        // A backfill sees only the order's last state; its placement still lands at
        // PurchaseDate (orders and GMV by order date), the shipment at its update time.
        let facts = order(&base("Shipped")).unwrap();
        assert_eq!(
            facts[0].event_time.to_rfc3339(),
            "2026-11-02T17:03:00+00:00"
        );
        assert_eq!(
            facts[1].event_time.to_rfc3339(),
            "2026-11-03T09:00:00+00:00"
        );
        let EventBody::OrderShipped(s) = &facts[1].body else {
            panic!()
        };
        assert_eq!(s.fulfilment, Some(Fulfilment::Merchant));
    }

    #[test]
    fn unusable_orders_name_field_and_value() {
        let mut v = base("Unshipped");
        v["OrderTotal"]["Amount"] = "25,98".into();
        assert_eq!(
            order(&v).unwrap_err(),
            "order 113-0000001-0000001: field `OrderTotal.Amount`: expected a decimal such as \"12.34\", got \"25,98\""
        );
        let mut v = base("Unshipped");
        v["FulfillmentChannel"] = "XYZ".into();
        assert!(
            order(&v)
                .unwrap_err()
                .contains("`FulfillmentChannel`: expected \"AFN\" or \"MFN\", got \"XYZ\"")
        );
        let mut v = base("Teleported");
        v["OrderStatus"] = "Teleported".into();
        assert!(
            order(&v)
                .unwrap_err()
                .contains("unknown status \"Teleported\"")
        );
    }
}
