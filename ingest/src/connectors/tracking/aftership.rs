//! AfterShip's tracking-update webhook body → [`Update`].
//!
//! `{"event": "tracking_update", "event_id": …, "msg": {tracking}, "ts": …}` where the tracking
//! carries `tracking_number`, `slug` (carrier), `tag` (`Pending`, `InfoReceived`, `InTransit`,
//! `OutForDelivery`, `AttemptFail`, `Delivered`, `AvailableForPickup`, `Exception`,
//! `Expired`), `order_id` / `order_number` (set by the seller when creating the tracking),
//! `expected_delivery`, `shipment_delivery_date` and `checkpoints[]` (oldest first, each with
//! `checkpoint_time` and `tag`).

use serde_json::Value;

use super::map::{FieldError, Parsed, Status, StatusTable, Update, field_err, status, text, time};
use kpiflow_schemas::{Milestone, SourceTz};

/// AfterShip's `tag` values, in its documented order.
const STATUSES: &StatusTable = &[
    ("Pending", None),
    ("InfoReceived", None),
    ("InTransit", Some(Status::Milestone(Milestone::InTransit))),
    (
        "OutForDelivery",
        Some(Status::Milestone(Milestone::InTransit)),
    ),
    ("AttemptFail", Some(Status::Milestone(Milestone::Exception))),
    ("Delivered", Some(Status::Delivered)),
    (
        "AvailableForPickup",
        Some(Status::Milestone(Milestone::InTransit)),
    ),
    ("Exception", Some(Status::Milestone(Milestone::Exception))),
    ("Expired", Some(Status::Milestone(Milestone::Exception))),
];

/// Reads one push. The order id is `msg.order_id`, else `msg.order_number`.
pub fn parse(doc: &Value, tz: SourceTz) -> Result<Parsed, FieldError> {
    if let Some(event) = text(doc, &["event"])
        && event != "tracking_update"
    {
        return Ok(Parsed::Ignore("not_a_tracking_update"));
    }
    let msg = doc
        .get("msg")
        .filter(|m| m.is_object())
        .ok_or_else(|| field_err("msg", None, "missing or not an object"))?;
    let tag = text(msg, &["tag"]).ok_or_else(|| field_err("msg.tag", None, "missing or empty"))?;
    let Some(status) = status("msg.tag", &tag, STATUSES)? else {
        return Ok(Parsed::Ignore("no_carrier_scan_yet"));
    };
    let tracking_number = text(msg, &["tracking_number"])
        .ok_or_else(|| field_err("msg.tracking_number", None, "missing or empty"))?
        .into_owned();
    let order_id = text(msg, &["order_id"])
        .or_else(|| text(msg, &["order_number"]))
        .ok_or_else(|| {
            field_err(
                "msg.order_id",
                None,
                "missing or empty, and so is msg.order_number: set the order id on the tracking when creating it",
            )
        })?
        .into_owned();
    let checkpoints: &[Value] = match msg.get("checkpoints") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(field_err(
                "msg.checkpoints",
                Some(&other.to_string()),
                "expected a list",
            ));
        }
    };
    let checkpoint_time = |i: usize| -> Result<Option<_>, FieldError> {
        let field = format!("msg.checkpoints[{i}].checkpoint_time");
        text(&checkpoints[i], &["checkpoint_time"])
            .map(|v| time(&field, &v, tz, false))
            .transpose()
    };
    let first_scan = match checkpoints.len() {
        0 => None,
        _ => checkpoint_time(0)?,
    };
    let latest = match checkpoints.len() {
        0 => None,
        n => checkpoint_time(n - 1)?,
    };
    let at = match (status, text(msg, &["shipment_delivery_date"])) {
        (Status::Delivered, Some(d)) => Some(time("msg.shipment_delivery_date", &d, tz, false)?),
        _ => latest,
    }
    .ok_or_else(|| {
        field_err(
            "msg.checkpoints",
            None,
            "no checkpoint with a checkpoint_time (nor a shipment_delivery_date): the update has no time",
        )
    })?;
    let expected = text(msg, &["expected_delivery"])
        .map(|v| time("msg.expected_delivery", &v, tz, true))
        .transpose()?;
    Ok(Parsed::Update(Update {
        tracking_number,
        carrier: text(msg, &["slug"]).map(|s| s.into_owned()),
        order_id,
        status,
        at,
        expected,
        first_scan,
    }))
}
