//! One GraphQL order node with its returns → an `order.returned` per counted return, each
//! return its own record (one that does not fit is dead-lettered alone, naming field and
//! value).
//!
//! Ids: `shopify-<order id>-returned-<return id>`, the numeric tails of the gids
//! (`gid://shopify/Order/5501234567890`, `gid://shopify/Return/7100000001`): `order_id` is the
//! order id `shopify_orders` and the webhook key the order's other facts by.

use chrono::{DateTime, Utc};
use kpiflow_schemas::{Fulfilment, OrderReturned};
use serde_json::Value;

use crate::map::{MapError, Record, raw};
use crate::pull::{Fact, Mapped};

/// `ReturnStatus` values and whether the items are coming back (`OPEN`: in progress) or came
/// back (`CLOSED`: completed); `REQUESTED` awaits the merchant's approval, `DECLINED` and
/// `CANCELED` end without a return.
const STATUSES: [(&str, bool); 5] = [
    ("OPEN", true),
    ("CLOSED", true),
    ("REQUESTED", false),
    ("DECLINED", false),
    ("CANCELED", false),
];

/// How many returns per order and lines per return the query asked for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// `returns(first:)`.
    pub(super) returns_per_order: u32,
    /// `returnLineItems(first:)`.
    pub(super) lines_per_return: u32,
}

/// The records of one order node: one per return (test orders have none), and a dead letter
/// for the order itself when it cannot be read or has more returns than were asked for.
/// `fulfilment` is the store's.
pub(super) fn order(v: &Value, fulfilment: Fulfilment, limits: Limits) -> Vec<Mapped> {
    let r = Record(v);
    if r.get("test").and_then(Value::as_bool) == Some(true) {
        return Vec::new();
    }
    let head = (|| {
        let oid = gid_tail(&r, "id", "Order").map_err(|e| format!("order: {e}"))?;
        let placed_at = r
            .time("createdAt")
            .map_err(|e| format!("order {oid}: {e}"))?;
        let seen_at = r
            .time("updatedAt")
            .map_err(|e| format!("order {oid}: {e}"))?;
        let returns = match r.get("returns.nodes") {
            Some(Value::Array(list)) => list,
            other => {
                return Err(format!(
                    "order {oid}: field `returns.nodes`: expected a list, got {}",
                    other.map_or_else(|| "nothing".to_string(), Value::to_string)
                ));
            }
        };
        Ok((oid, placed_at, seen_at, returns))
    })();
    let (oid, placed_at, seen_at, returns) = match head {
        Ok(h) => h,
        Err(e) => return vec![(Err(format!("shopify {e}")), raw(v))],
    };
    let order = OrderFacts {
        oid: &oid,
        placed_at,
        seen_at,
        fulfilment,
    };
    let mut out: Vec<Mapped> = returns
        .iter()
        .map(|ret| (order.returned(ret, limits.lines_per_return), raw(ret)))
        .collect();
    if r.get("returns.pageInfo.hasNextPage") == Some(&Value::Bool(true)) {
        out.push((
            Err(format!(
                "shopify order {oid}: field `returns.pageInfo.hasNextPage`: true: more than {} returns on one order were not read; raise returns_per_order",
                limits.returns_per_order
            )),
            raw(v),
        ));
    }
    out
}

/// What a return takes from its order.
struct OrderFacts<'a> {
    oid: &'a str,
    placed_at: DateTime<Utc>,
    seen_at: DateTime<Utc>,
    fulfilment: Fulfilment,
}

impl OrderFacts<'_> {
    /// The `order.returned` of one return node, none for a return that brings nothing back.
    fn returned(&self, v: &Value, lines_per_return: u32) -> Result<Vec<Fact>, MapError> {
        let oid = self.oid;
        let r = Record(v);
        let rid = gid_tail(&r, "id", "Return").map_err(|e| format!("shopify order {oid}: {e}"))?;
        let at = |e: MapError| match r.opt_str("name").ok().flatten() {
            Some(name) => format!("shopify order {oid} return {rid} ({name}): {e}"),
            None => format!("shopify order {oid} return {rid}: {e}"),
        };
        let status = r.str("status").map_err(at)?;
        match STATUSES.iter().find(|(s, _)| *s == status) {
            Some((_, true)) => {}
            Some((_, false)) => return Ok(Vec::new()),
            None => {
                return Err(at(format!(
                    "field `status`: unknown status {status:?} (known: {})",
                    STATUSES.map(|(s, _)| s).join(", ")
                )));
            }
        }
        if r.get("returnLineItems.pageInfo.hasNextPage") == Some(&Value::Bool(true)) {
            return Err(at(format!(
                "field `returnLineItems.pageInfo.hasNextPage`: true: more than {lines_per_return} lines were not read, so its units are unknown; raise lines_per_return"
            )));
        }
        let lines = match r.get("returnLineItems.nodes") {
            Some(Value::Array(lines)) if !lines.is_empty() => lines,
            _ => {
                return Err(at(
                    "field `returnLineItems.nodes`: expected a non-empty list".into(),
                ));
            }
        };
        let mut units: u32 = 0;
        for (i, line) in lines.iter().enumerate() {
            let l = Record(line);
            let n = l
                .count("quantity")
                .map_err(|e| at(format!("returnLineItems.nodes[{i}]: {e}")))?;
            units = u32::try_from(n)
                .ok()
                .and_then(|n| units.checked_add(n))
                .ok_or_else(|| {
                    at(format!(
                        "returnLineItems.nodes[{i}]: field `quantity`: {n} is not a plausible number of units"
                    ))
                })?;
        }
        if units == 0 {
            return Err(at(
                "field `returnLineItems.nodes`: no units returned (quantities sum to 0)".into(),
            ));
        }
        let reason = Record(&lines[0])
            .opt_str("returnReason")
            .map_err(|e| at(format!("returnLineItems.nodes[0]: {e}")))?
            .map(str::to_string);
        Ok(vec![Fact::new(
            format!("shopify-{oid}-returned-{rid}"),
            self.seen_at,
            OrderReturned {
                order_id: oid.to_string(),
                placed_at: self.placed_at,
                units,
                reason,
                fulfilment: Some(self.fulfilment),
            },
        )])
    }
}

/// The numeric id of a `gid://shopify/<kind>/<id>` at `path`.
fn gid_tail(r: &Record<'_>, path: &str, kind: &str) -> Result<String, MapError> {
    let s = r.str(path)?;
    s.strip_prefix("gid://shopify/")
        .and_then(|t| t.strip_prefix(kind))
        .and_then(|t| t.strip_prefix('/'))
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
        .ok_or_else(|| {
            format!("field `{path}`: expected a gid such as \"gid://shopify/{kind}/1234567890\", got {s:?}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::EventBody;

    const LIMITS: Limits = Limits {
        returns_per_order: 5,
        lines_per_return: 10,
    };

    fn page(name: &str) -> Value {
        let path = format!(
            "{}/fixtures/shopify_returns/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    fn orders(name: &str) -> Vec<Value> {
        page(name)["data"]["orders"]["nodes"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn returned(m: &Mapped) -> (String, DateTime<Utc>, OrderReturned) {
        let facts = m.0.as_ref().unwrap();
        assert_eq!(facts.len(), 1, "{facts:?}");
        let EventBody::OrderReturned(r) = &facts[0].body else {
            panic!("{facts:?}")
        };
        (facts[0].event_id.clone(), facts[0].event_time, r.clone())
    }

    #[test]
    fn an_open_return_counts_its_units_on_the_orders_date_and_a_requested_one_not_yet() {
        let o = &orders("orders-page-1.json")[0];
        let m = order(o, Fulfilment::Merchant, LIMITS);
        assert_eq!(m.len(), 2, "#1042's two returns");
        let (id, at, r) = returned(&m[0]);
        assert_eq!(id, "shopify-5501234567890-returned-7100000001");
        // #1042 was created 2026-11-02T12:03:00-05:00 = 17:03Z; updated 2026-11-06T15:20:00Z.
        assert_eq!(r.placed_at.to_rfc3339(), "2026-11-02T17:03:00+00:00");
        assert_eq!(at.to_rfc3339(), "2026-11-06T15:20:00+00:00");
        assert_eq!(r.order_id, "5501234567890");
        // Two lines of 1 mug each, 1 + 1 = 2 units; the first line's reason.
        assert_eq!((r.units, r.reason.as_deref()), (2, Some("DEFECTIVE")));
        assert_eq!(r.fulfilment, Some(Fulfilment::Merchant));
        // #1042-R2 is REQUESTED: not approved, nothing is coming back yet.
        assert_eq!(m[1].0, Ok(vec![]));
    }

    #[test]
    fn a_closed_return_counts_too() {
        let o = &orders("orders-page-1.json")[1];
        let m = order(o, Fulfilment::Merchant, LIMITS);
        let (id, _, r) = returned(&m[0]);
        assert_eq!(id, "shopify-5501234567895-returned-7100000003");
        // One line of 1 bowl.
        assert_eq!((r.units, r.reason.as_deref()), (1, Some("SIZE_TOO_SMALL")));
    }

    #[test]
    fn declined_returns_and_test_orders_count_nothing_and_bad_fields_are_named() {
        let os = orders("orders-page-2.json");
        let m = order(&os[0], Fulfilment::Merchant, LIMITS);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].0, Ok(vec![]), "DECLINED");
        assert_eq!(
            m[1].0.as_ref().unwrap_err(),
            "shopify order 5501234567897 return 7100000005 (#1047-R2): returnLineItems.nodes[0]: field `quantity`: expected an integer, got \"two\""
        );
        assert!(
            order(&os[1], Fulfilment::Merchant, LIMITS).is_empty(),
            "a test order"
        );

        let mut odd = os[0].clone();
        odd["returns"]["nodes"][0]["status"] = "MAYBE".into();
        let m = order(&odd, Fulfilment::Merchant, LIMITS);
        assert!(
            m[0].0.as_ref().unwrap_err().ends_with(
                "field `status`: unknown status \"MAYBE\" (known: OPEN, CLOSED, REQUESTED, DECLINED, CANCELED)"
            ),
            "{:?}",
            m[0].0
        );
        let mut odd = os[0].clone();
        odd["id"] = "5501234567897".into();
        let m = order(&odd, Fulfilment::Merchant, LIMITS);
        assert_eq!(
            m[0].0.as_ref().unwrap_err(),
            "shopify order: field `id`: expected a gid such as \"gid://shopify/Order/1234567890\", got \"5501234567897\""
        );
    }

    #[test]
    fn more_returns_or_lines_than_asked_for_are_dead_letters() {
        let mut o = orders("orders-page-1.json")[0].clone();
        o["returns"]["pageInfo"]["hasNextPage"] = true.into();
        o["returns"]["nodes"][0]["returnLineItems"]["pageInfo"]["hasNextPage"] = true.into();
        let m = order(&o, Fulfilment::Merchant, LIMITS);
        assert_eq!(m.len(), 3, "two returns and the order");
        assert!(
            m[0].0.as_ref().unwrap_err().contains(
                "more than 10 lines were not read, so its units are unknown; raise lines_per_return"
            ),
            "{:?}",
            m[0].0
        );
        assert!(
            m[2].0
                .as_ref()
                .unwrap_err()
                .starts_with("shopify order 5501234567890: field `returns.pageInfo.hasNextPage`: true: more than 5 returns"),
            "{:?}",
            m[2].0
        );
    }
}
