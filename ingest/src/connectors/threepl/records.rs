//! The two record kinds 3PLs report — shipment milestones and stock levels — and their mapping
//! to canonical events, shared by the CSV drop folder and the JSON webhook.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kpiflow_schemas::{
    Event, EventBody, EventHeader, InventorySnapshot, LocationKind, Milestone, ShipmentMilestone,
};

use super::config::ThreeplShop;

/// A record's fields by column name, however it arrived (a CSV row, a JSON object).
pub trait Row {
    /// The value of `column`, trimmed; `None` when absent or empty.
    fn get(&self, column: &str) -> Option<&str>;
}

impl Row for BTreeMap<String, String> {
    fn get(&self, column: &str) -> Option<&str> {
        BTreeMap::get(self, column)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }
}

/// Why a record could not be mapped: the column, its value and the rule. Displays as
/// `` `units` = "three": expected … ``; callers prefix where (file and line, or list index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The column (CSV) or field (JSON).
    pub column: String,
    /// The value found, if any.
    pub value: Option<String>,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "`{}` = {v:?}: {}", self.column, self.problem),
            None => write!(f, "`{}`: {}", self.column, self.problem),
        }
    }
}

/// Which kind of record a file or a JSON list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Shipment milestones → `shipment.milestone`.
    Shipment,
    /// Stock levels → `inventory.snapshot`.
    Stock,
}

impl Kind {
    /// Columns a record of this kind must have.
    pub fn required(&self) -> &'static [&'static str] {
        match self {
            Kind::Shipment => &[
                "shop",
                "warehouse",
                "shipment_id",
                "milestone",
                "occurred_at",
                "units",
            ],
            Kind::Stock => &["shop", "warehouse", "sku", "sellable", "as_of"],
        }
    }

    /// Columns it may have.
    pub fn optional(&self) -> &'static [&'static str] {
        match self {
            Kind::Shipment => &["order_id", "carrier", "tracking_id", "sku"],
            Kind::Stock => &["inbound", "reserved", "unfulfillable"],
        }
    }

    /// The kind a CSV header names: `milestone` means shipments, `sellable` stock.
    pub fn detect(columns: &[&str]) -> Option<Kind> {
        if columns.contains(&"milestone") {
            Some(Kind::Shipment)
        } else if columns.contains(&"sellable") {
            Some(Kind::Stock)
        } else {
            None
        }
    }

    /// Required columns missing from `columns`.
    pub fn missing(&self, columns: &[&str]) -> Vec<&'static str> {
        self.required()
            .iter()
            .copied()
            .filter(|c| !columns.contains(c))
            .collect()
    }
}

fn err(column: &str, value: Option<&str>, problem: impl Into<String>) -> FieldError {
    FieldError {
        column: column.to_string(),
        value: value.map(str::to_string),
        problem: problem.into(),
    }
}

fn required<'r>(row: &'r dyn Row, column: &str) -> Result<&'r str, FieldError> {
    row.get(column)
        .ok_or_else(|| err(column, None, "missing or empty"))
}

fn time(row: &dyn Row, column: &str) -> Result<DateTime<Utc>, FieldError> {
    let v = required(row, column)?;
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            err(
                column,
                Some(v),
                "expected an RFC 3339 time with offset such as \"2026-11-03T09:15:00-08:00\"",
            )
        })
}

fn count(row: &dyn Row, column: &str, default: Option<u64>) -> Result<u64, FieldError> {
    let Some(v) = row.get(column) else {
        return default.ok_or_else(|| err(column, None, "missing or empty"));
    };
    v.parse::<u64>().map_err(|_| {
        err(
            column,
            Some(v),
            "expected a whole number of units (0 or more)",
        )
    })
}

fn milestone(v: &str) -> Option<Milestone> {
    Some(match v.to_ascii_lowercase().as_str() {
        "received" => Milestone::Received,
        "packed" => Milestone::Packed,
        "handed_to_carrier" => Milestone::HandedToCarrier,
        "in_transit" => Milestone::InTransit,
        "delivered" => Milestone::Delivered,
        "exception" => Milestone::Exception,
        _ => return None,
    })
}

/// Maps one record of `kind`. The event id is derived from the record's identity (shop,
/// warehouse, shipment and milestone and time; or SKU and time), so the CSV and the webhook
/// path, and a file read twice, give the same id.
pub fn map(
    kind: Kind,
    row: &dyn Row,
    shops: &BTreeMap<String, ThreeplShop>,
    source: &str,
    now: DateTime<Utc>,
) -> Result<Event, FieldError> {
    let shop_id = required(row, "shop")?;
    let shop = shops.get(shop_id).ok_or_else(|| {
        err(
            "shop",
            Some(shop_id),
            format!(
                "not a shop under {}.shops (known: {})",
                super::SECTION,
                shops.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let warehouse = required(row, "warehouse")?;
    let header = |id: String, at: DateTime<Utc>, sku: Option<&str>| EventHeader {
        event_id: id,
        source: source.to_string(),
        shop: shop_id.to_string(),
        channel: shop.channel,
        marketplace: shop.marketplace.clone(),
        sku: sku.map(str::to_string),
        event_time: at,
        source_tz: shop.time_zone,
        ingest_time: now,
    };
    let (header, body): (EventHeader, EventBody) = match kind {
        Kind::Shipment => {
            let shipment_id = required(row, "shipment_id")?;
            let m_text = required(row, "milestone")?;
            let m = milestone(m_text).ok_or_else(|| {
                err(
                    "milestone",
                    Some(m_text),
                    "expected one of received, packed, handed_to_carrier, in_transit, delivered, exception",
                )
            })?;
            let at = time(row, "occurred_at")?;
            let units = count(row, "units", None)?;
            let units = u32::try_from(units)
                .ok()
                .filter(|u| *u > 0)
                .ok_or_else(|| {
                    err(
                        "units",
                        row.get("units"),
                        "must be between 1 and 4294967295",
                    )
                })?;
            let m_name = serde_json::to_value(m)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            (
                header(
                    format!(
                        "threepl-{shop_id}-{warehouse}-{shipment_id}-{m_name}-{}",
                        at.timestamp()
                    ),
                    at,
                    row.get("sku"),
                ),
                ShipmentMilestone {
                    shipment_id: shipment_id.to_string(),
                    warehouse: warehouse.to_string(),
                    milestone: m,
                    order_id: row.get("order_id").map(str::to_string),
                    carrier: row.get("carrier").map(str::to_string),
                    tracking_id: row.get("tracking_id").map(str::to_string),
                    units,
                }
                .into(),
            )
        }
        Kind::Stock => {
            let sku = required(row, "sku")?;
            let at = time(row, "as_of")?;
            (
                header(
                    format!("threepl-{shop_id}-{warehouse}-{sku}-{}", at.timestamp()),
                    at,
                    Some(sku),
                ),
                InventorySnapshot {
                    location: warehouse.to_string(),
                    location_kind: LocationKind::ThirdParty,
                    sellable: count(row, "sellable", None)?,
                    inbound: count(row, "inbound", Some(0))?,
                    reserved: count(row, "reserved", Some(0))?,
                    unfulfillable: count(row, "unfulfillable", Some(0))?,
                }
                .into(),
            )
        }
    };
    let event = Event::new(header, body);
    event.validate().map_err(|e| FieldError {
        column: e.field_path().unwrap_or("record").to_string(),
        value: None,
        problem: e.to_string(),
    })?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shops() -> BTreeMap<String, ThreeplShop> {
        [("shop-003".to_string(), ThreeplShop::for_tests())].into()
    }

    fn row(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn now() -> DateTime<Utc> {
        "2026-11-03T20:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_milestone_maps_with_a_deterministic_id() {
        let r = row(&[
            ("shop", "shop-003"),
            ("warehouse", "ONT-3PL-1"),
            ("shipment_id", "SH-1001"),
            ("milestone", "HANDED_TO_CARRIER"),
            ("occurred_at", "2026-11-03T09:15:00-08:00"),
            ("units", "2"),
            ("carrier", "USPS"),
            ("order_id", ""),
        ]);
        let e = map(Kind::Shipment, &r, &shops(), "threepl", now()).unwrap();
        assert_eq!(
            e.header.event_id,
            "threepl-shop-003-ONT-3PL-1-SH-1001-handed_to_carrier-1793726100"
        );
        let EventBody::ShipmentMilestone(m) = &e.body else {
            panic!()
        };
        assert_eq!(m.milestone, Milestone::HandedToCarrier);
        assert_eq!(m.order_id, None, "an empty cell is absent");
        assert_eq!(m.carrier.as_deref(), Some("USPS"));
    }

    #[test]
    fn errors_name_column_and_value() {
        let base = [
            ("shop", "shop-003"),
            ("warehouse", "ONT-3PL-1"),
            ("sku", "MUG-SAND-12OZ"),
            ("sellable", "12"),
            ("as_of", "2026-11-03T06:00:00Z"),
        ];
        let ok = map(Kind::Stock, &row(&base), &shops(), "threepl", now()).unwrap();
        let EventBody::InventorySnapshot(s) = &ok.body else {
            panic!()
        };
        assert_eq!(
            (s.sellable, s.inbound, s.location_kind),
            (12, 0, LocationKind::ThirdParty)
        );

        let mut bad = row(&base);
        bad.insert("sellable".into(), "-4".into());
        let e = map(Kind::Stock, &bad, &shops(), "threepl", now()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`sellable` = \"-4\": expected a whole number of units (0 or more)"
        );
        let mut bad = row(&base);
        bad.insert("shop".into(), "shop-999".into());
        let e = map(Kind::Stock, &bad, &shops(), "threepl", now()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`shop` = \"shop-999\": not a shop"),
            "{e}"
        );
        let mut bad = row(&base);
        bad.remove("as_of");
        let e = map(Kind::Stock, &bad, &shops(), "threepl", now()).unwrap_err();
        assert_eq!(e.to_string(), "`as_of`: missing or empty");
    }

    #[test]
    fn kinds_are_detected_from_the_header() {
        assert_eq!(Kind::detect(&["shop", "milestone"]), Some(Kind::Shipment));
        assert_eq!(Kind::detect(&["shop", "sellable"]), Some(Kind::Stock));
        assert_eq!(Kind::detect(&["a", "b"]), None);
        assert_eq!(
            Kind::Stock.missing(&["shop", "sellable"]),
            ["warehouse", "sku", "as_of"]
        );
    }
}
