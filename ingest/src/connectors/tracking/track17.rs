//! 17TRACK's push (webhook v2.2) body → [`Update`].
//!
//! `{"event": "TRACKING_UPDATED", "data": {"number", "carrier", "tag", "track_info": {…}}}`;
//! `track_info` holds `latest_status.status` (`NotFound`, `InfoReceived`, `InTransit`,
//! `Expired`, `AvailableForPickup`, `OutForDelivery`, `DeliveryFailure`, `Delivered`,
//! `Exception`), `latest_event` (`time_iso`, `time_utc`), `time_metrics.estimated_delivery_date`
//! (`from`, `to`) and `milestone[]` (`key_stage`, `time_iso`, `time_utc`). `TRACKING_STOPPED`
//! pushes are acknowledged and not published.

use serde_json::Value;

use super::map::{FieldError, Parsed, Status, StatusTable, Update, field_err, status, text, time};
use kpiflow_schemas::{Milestone, SourceTz};

/// 17TRACK's main statuses, in its documented order.
const STATUSES: &StatusTable = &[
    ("NotFound", None),
    ("InfoReceived", None),
    ("InTransit", Some(Status::Milestone(Milestone::InTransit))),
    ("Expired", Some(Status::Milestone(Milestone::Exception))),
    (
        "AvailableForPickup",
        Some(Status::Milestone(Milestone::InTransit)),
    ),
    (
        "OutForDelivery",
        Some(Status::Milestone(Milestone::InTransit)),
    ),
    (
        "DeliveryFailure",
        Some(Status::Milestone(Milestone::Exception)),
    ),
    ("Delivered", Some(Status::Delivered)),
    ("Exception", Some(Status::Milestone(Milestone::Exception))),
];

/// Reads one push. The order id is `data.tag`, the label the seller sets when registering the
/// number (17TRACK echoes it in every push).
pub fn parse(doc: &Value, tz: SourceTz) -> Result<Parsed, FieldError> {
    match text(doc, &["event"]).as_deref() {
        Some("TRACKING_UPDATED") => {}
        Some("TRACKING_STOPPED") => return Ok(Parsed::Ignore("not_a_tracking_update")),
        other => {
            return Err(field_err(
                "event",
                other,
                "expected TRACKING_UPDATED or TRACKING_STOPPED",
            ));
        }
    }
    let data = doc
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| field_err("data", None, "missing or not an object"))?;
    let status_text = text(data, &["track_info", "latest_status", "status"]).ok_or_else(|| {
        field_err(
            "data.track_info.latest_status.status",
            None,
            "missing or empty",
        )
    })?;
    let Some(status) = status(
        "data.track_info.latest_status.status",
        &status_text,
        STATUSES,
    )?
    else {
        return Ok(Parsed::Ignore("no_carrier_scan_yet"));
    };
    let tracking_number = text(data, &["number"])
        .ok_or_else(|| field_err("data.number", None, "missing or empty"))?
        .into_owned();
    let order_id = text(data, &["tag"])
        .ok_or_else(|| {
            field_err(
                "data.tag",
                None,
                "missing or empty: register the number with the order id as its tag",
            )
        })?
        .into_owned();
    let at = match text(data, &["track_info", "latest_event", "time_iso"]) {
        Some(v) => time("data.track_info.latest_event.time_iso", &v, tz, false)?,
        None => {
            let v = text(data, &["track_info", "latest_event", "time_utc"]).ok_or_else(|| {
                field_err(
                    "data.track_info.latest_event.time_iso",
                    None,
                    "missing or empty, and so is time_utc: the update has no time",
                )
            })?;
            time("data.track_info.latest_event.time_utc", &v, tz, false)?
        }
    };
    let eta = |end| ["track_info", "time_metrics", "estimated_delivery_date", end];
    let expected = match text(data, &eta("to")) {
        Some(v) => Some(time(
            "data.track_info.time_metrics.estimated_delivery_date.to",
            &v,
            tz,
            true,
        )?),
        None => text(data, &eta("from"))
            .map(|v| {
                time(
                    "data.track_info.time_metrics.estimated_delivery_date.from",
                    &v,
                    tz,
                    true,
                )
            })
            .transpose()?,
    };
    let mut first_scan = None;
    if let Some(Value::Array(stages)) = data.get("track_info").and_then(|i| i.get("milestone")) {
        for (i, stage) in stages.iter().enumerate() {
            if let Some(v) = text(stage, &["time_utc"]) {
                let t = time(
                    &format!("data.track_info.milestone[{i}].time_utc"),
                    &v,
                    tz,
                    false,
                )?;
                first_scan =
                    Some(first_scan.map_or(t, |f: chrono::DateTime<chrono::Utc>| f.min(t)));
            }
        }
    }
    Ok(Parsed::Update(Update {
        tracking_number,
        carrier: text(data, &["carrier"]).map(|s| s.into_owned()),
        order_id,
        status,
        at,
        expected,
        first_scan,
    }))
}
