//! A tracking update in provider-neutral form and its canonical event, shared by both
//! providers so their ids and mapping rules cannot drift apart.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use kpiflow_schemas::{
    Event, EventBody, EventHeader, Fulfilment, Milestone, OrderDelivered, ShipmentMilestone,
    SourceTz,
};
use serde_json::Value;

pub use crate::connectors::threepl::records::FieldError;

/// Where a parcel is, as far as kpiflow counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Delivered to the buyer.
    Delivered,
    /// Any other milestone kpiflow keeps.
    Milestone(Milestone),
}

/// One tracking update, read from either provider's push.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The carrier's tracking number.
    pub tracking_number: String,
    /// The carrier as the provider names it (AfterShip slug, 17TRACK carrier code).
    pub carrier: Option<String>,
    /// The marketplace order the parcel fulfils.
    pub order_id: String,
    /// The status reached.
    pub status: Status,
    /// When it was reached (for `Delivered`, the delivery time).
    pub at: DateTime<Utc>,
    /// The expected delivery, if the provider or carrier gives one.
    pub expected: Option<DateTime<Utc>>,
    /// The earliest scan the push lists, if any.
    pub first_scan: Option<DateTime<Utc>>,
}

/// What a push turned into before the shop is applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// An update to publish.
    Update(Update),
    /// Acknowledged and not published, counted under this reason.
    Ignore(&'static str),
}

/// What a provider's status word means to kpiflow: a [`Status`], or no carrier scan yet
/// (nothing on-time delivery or valid tracking can count).
pub type StatusTable = [(&'static str, Option<Status>)];

/// Looks `value` (of `field`) up in `table` (`None`: no carrier scan yet); an unknown word
/// names the field and lists the known ones.
pub fn status(field: &str, value: &str, table: &StatusTable) -> Result<Option<Status>, FieldError> {
    match table.iter().find(|(word, _)| *word == value) {
        Some((_, s)) => Ok(*s),
        None => Err(field_err(
            field,
            Some(value),
            format!(
                "expected one of {}",
                table.iter().map(|(w, _)| *w).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// The shop the parcels belong to and how events are labelled.
#[derive(Debug, Clone)]
pub struct Target {
    /// The connector name (the events' `source`, the id prefix).
    pub source: &'static str,
    /// kpiflow shop id.
    pub shop: String,
    /// Sales channel.
    pub channel: kpiflow_schemas::Channel,
    /// Marketplace id.
    pub marketplace: String,
    /// The shop's zone.
    pub time_zone: SourceTz,
    /// How the parcels are fulfilled.
    pub fulfilment: Fulfilment,
    /// Whether a delivery with an expected date is an `order.delivered` (else a milestone).
    pub count_deliveries: bool,
    /// `warehouse` on milestones.
    pub warehouse: String,
    /// Units per parcel.
    pub units: u32,
}

/// Builds a [`FieldError`].
pub fn field_err(field: &str, value: Option<&str>, problem: impl Into<String>) -> FieldError {
    FieldError {
        column: field.to_string(),
        value: value.map(str::to_string),
        problem: problem.into(),
    }
}

/// The non-empty string at `path` under `v` (numbers as their text), if any.
pub fn text<'v>(v: &'v Value, path: &[&str]) -> Option<std::borrow::Cow<'v, str>> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    match cur {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().into()),
        Value::Number(n) => Some(n.to_string().into()),
        _ => None,
    }
}

/// Parses a provider time: RFC 3339 with an offset; without one (`2026-11-09T14:05:00`) it is
/// read in `tz`; a bare date is the start of that day in `tz`, or its last second when
/// `end_of_day` (an expected delivery date means "by the end of that day").
pub fn time(
    field: &str,
    v: &str,
    tz: SourceTz,
    end_of_day: bool,
) -> Result<DateTime<Utc>, FieldError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(v, "%Y-%m-%d").ok().map(|d| {
                if end_of_day {
                    d.and_hms_opt(23, 59, 59).expect("a valid time")
                } else {
                    d.and_hms_opt(0, 0, 0).expect("a valid time")
                }
            })
        });
    local
        .and_then(|t| tz.0.from_local_datetime(&t).earliest())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            field_err(
                field,
                Some(v),
                "expected a time such as \"2026-11-09T14:05:00-05:00\", \"2026-11-09T14:05:00\" or a date \"2026-11-09\"",
            )
        })
}

/// The canonical event of `u` for `t`: `order.delivered` when delivered with an expected
/// delivery and `t` counts deliveries, else `shipment.milestone`. A milestone's id is built from the update's identity
/// (carrier, tracking number, status, time), so a repeated push gives the same id; a
/// delivery's is the parcel's ([`crate::map::parcel_delivered_id`]), shared with every other
/// source reporting the same parcel's delivery, so on-time delivery counts it once.
pub fn event(u: &Update, t: &Target, now: DateTime<Utc>) -> Event {
    let step = match u.status {
        Status::Delivered => Milestone::Delivered,
        Status::Milestone(m) => m,
    };
    let expected = u.expected.filter(|_| t.count_deliveries);
    let event_id = match (u.status, expected) {
        (Status::Delivered, Some(_)) => {
            crate::map::parcel_delivered_id(&t.shop, &u.tracking_number)
        }
        _ => format!(
            "{}-{}-{}-{}-{}-{}",
            t.source,
            t.shop,
            u.carrier.as_deref().unwrap_or("-"),
            u.tracking_number,
            step.as_str(),
            u.at.timestamp()
        ),
    };
    let header = EventHeader {
        event_id,
        source: t.source.to_string(),
        shop: t.shop.clone(),
        channel: t.channel,
        marketplace: t.marketplace.clone(),
        sku: None,
        event_time: u.at,
        source_tz: t.time_zone,
        ingest_time: now,
    };
    let body = match (u.status, expected) {
        (Status::Delivered, Some(deliver_by)) => EventBody::OrderDelivered(OrderDelivered {
            order_id: u.order_id.clone(),
            // A push does not carry the order's placement; the first carrier scan (or the
            // delivery) is the closest time known not before it. No on-time measure reads it.
            placed_at: u.first_scan.map_or(u.at, |f| f.min(u.at)),
            deliver_by,
            units: t.units,
            fulfilment: Some(t.fulfilment),
        }),
        _ => EventBody::ShipmentMilestone(ShipmentMilestone {
            shipment_id: u.tracking_number.clone(),
            warehouse: t.warehouse.clone(),
            milestone: step,
            order_id: Some(u.order_id.clone()),
            carrier: u.carrier.clone(),
            tracking_id: Some(u.tracking_number.clone()),
            units: t.units,
        }),
    };
    Event { header, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_with_without_offset_and_dates() {
        let ny = SourceTz(chrono_tz::America::New_York);
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            time("f", "2026-11-09T14:05:00-05:00", ny, false).unwrap(),
            utc("2026-11-09T19:05:00Z")
        );
        assert_eq!(
            time("f", "2026-11-09T14:05:00", ny, false).unwrap(),
            utc("2026-11-09T19:05:00Z")
        );
        assert_eq!(
            time("f", "2026-11-10", ny, true).unwrap(),
            utc("2026-11-11T04:59:59Z")
        );
        assert_eq!(
            time("msg.expected_delivery", "soon", ny, true)
                .unwrap_err()
                .to_string(),
            "`msg.expected_delivery` = \"soon\": expected a time such as \"2026-11-09T14:05:00-05:00\", \"2026-11-09T14:05:00\" or a date \"2026-11-09\""
        );
    }
}
