//! The `events` table: canonical events as one wide Arrow schema, the input of catalog SQL.
//!
//! Measure expressions in the KPI catalog (`filter`, `value`, `time`, `key`) are SQL over these
//! columns, evaluated with DataFusion on batches of events; `kpiflow reconcile` runs the same
//! expressions over the Parquet events archive, which is written with this schema.
//!
//! One row per event. Header columns are never null; each payload column is filled by the
//! schemas that have the field and null for the others:
//!
//! | column | type | filled by |
//! |---|---|---|
//! | event_id, schema, source, shop, channel, marketplace, source_tz | Utf8 | every event |
//! | schema_version | UInt32 | every event |
//! | sku | Utf8 | events about one SKU |
//! | event_time, ingest_time | Timestamp(µs, UTC) | every event |
//! | local_date | Date32 | every event: `event_time`'s date in `source_tz` |
//! | order_id | Utf8 | `order.*`, `shipment.milestone` (if known) |
//! | placed_at | Timestamp | `order.*` (`order.placed`: its `event_time`) |
//! | amount, currency | Decimal128(38, 9), Utf8 | `order.placed` total, `order.paid` amount, `order.refunded` amount, `order.fee` amount (signed: what the fee costs the seller), `cost.changed` landed cost of one unit (purchase + freight + duties) |
//! | units | Int64 | `order.placed/shipped/delivered/returned`, `shipment.milestone` |
//! | fulfilment | Utf8 | `order.placed` (`fba`, `wfs`, `fbt`, `merchant`, `third_party`); the other `order.*` facts where the source says so |
//! | ship_by, deliver_by | Timestamp | `order.placed`, `order.shipped`, `order.delivered` |
//! | carrier, tracking_id | Utf8 | `order.shipped`, `shipment.milestone` |
//! | tracking_valid | Boolean | `order.shipped` |
//! | cancelled_by | Utf8 | `order.cancelled` (`seller`, `buyer`, `system`) |
//! | reason | Utf8 | `order.cancelled`, `order.returned` |
//! | seller_fault | Boolean | `order.refunded` |
//! | defect_kind, rating | Utf8, Int64 | `order.defect` |
//! | fee_kind, fee_type, fee_applies_to | Utf8 | `order.fee` (`referral`, `fba_fulfilment`, …; the platform's name; `sale`, `refund`, `account`) |
//! | effective_from | Date32 | `cost.changed` (the first business day the cost applies to) |
//! | platform, account_id, campaign_id, attribution_window | Utf8 | `ad.performance` |
//! | ad_date | Date32 | `ad.performance` (the report date in the ad account's zone) |
//! | impressions, clicks, attributed_orders | Int64 | `ad.performance` |
//! | spend, attributed_sales | Decimal128(38, 9) | `ad.performance` (`currency` holds their currency) |
//! | as_of | Timestamp | `ad.performance` |
//! | location, location_kind | Utf8 | `inventory.snapshot` |
//! | sellable, inbound, reserved, unfulfillable | Int64 | `inventory.snapshot` |
//! | shipment_id, warehouse, milestone | Utf8 | `shipment.milestone` |
//! | connector | Utf8 | `source.heartbeat` |
//! | last_success, newest_event_time | Timestamp | `source.heartbeat` |
//! | records_published, errors, consecutive_failures | Int64 | `source.heartbeat` |
//!
//! `account.health_metric` (a reference value, not a fact) fills only the header columns.

use std::sync::{Arc, OnceLock};

use crate::{Decimal, Event, EventBody, Money};
use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder, UInt32Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Decimal columns keep 9 places, like the sink's Parquet tables.
pub const DECIMAL_SCALE: i8 = 9;

/// The Arrow type of money columns.
pub fn decimal_type() -> DataType {
    DataType::Decimal128(38, DECIMAL_SCALE)
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Column names and types, in order; `true` means the column is never null.
const COLUMNS: &[(&str, Kind, bool)] = &[
    ("event_id", Kind::Str, true),
    ("schema", Kind::Str, true),
    ("schema_version", Kind::U32, true),
    ("source", Kind::Str, true),
    ("shop", Kind::Str, true),
    ("channel", Kind::Str, true),
    ("marketplace", Kind::Str, true),
    ("sku", Kind::Str, false),
    ("event_time", Kind::Time, true),
    ("source_tz", Kind::Str, true),
    ("ingest_time", Kind::Time, true),
    ("local_date", Kind::Date, true),
    ("order_id", Kind::Str, false),
    ("placed_at", Kind::Time, false),
    ("amount", Kind::Dec, false),
    ("currency", Kind::Str, false),
    ("units", Kind::I64, false),
    ("fulfilment", Kind::Str, false),
    ("ship_by", Kind::Time, false),
    ("deliver_by", Kind::Time, false),
    ("carrier", Kind::Str, false),
    ("tracking_id", Kind::Str, false),
    ("tracking_valid", Kind::Bool, false),
    ("cancelled_by", Kind::Str, false),
    ("reason", Kind::Str, false),
    ("seller_fault", Kind::Bool, false),
    ("defect_kind", Kind::Str, false),
    ("rating", Kind::I64, false),
    ("fee_kind", Kind::Str, false),
    ("fee_type", Kind::Str, false),
    ("fee_applies_to", Kind::Str, false),
    ("effective_from", Kind::Date, false),
    ("platform", Kind::Str, false),
    ("account_id", Kind::Str, false),
    ("campaign_id", Kind::Str, false),
    ("ad_date", Kind::Date, false),
    ("impressions", Kind::I64, false),
    ("clicks", Kind::I64, false),
    ("spend", Kind::Dec, false),
    ("attributed_orders", Kind::I64, false),
    ("attributed_sales", Kind::Dec, false),
    ("attribution_window", Kind::Str, false),
    ("as_of", Kind::Time, false),
    ("location", Kind::Str, false),
    ("location_kind", Kind::Str, false),
    ("sellable", Kind::I64, false),
    ("inbound", Kind::I64, false),
    ("reserved", Kind::I64, false),
    ("unfulfillable", Kind::I64, false),
    ("shipment_id", Kind::Str, false),
    ("warehouse", Kind::Str, false),
    ("milestone", Kind::Str, false),
    ("connector", Kind::Str, false),
    ("last_success", Kind::Time, false),
    ("newest_event_time", Kind::Time, false),
    ("records_published", Kind::I64, false),
    ("errors", Kind::I64, false),
    ("consecutive_failures", Kind::I64, false),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Str,
    U32,
    I64,
    Bool,
    Dec,
    Time,
    Date,
}

impl Kind {
    fn data_type(self) -> DataType {
        match self {
            Kind::Str => DataType::Utf8,
            Kind::U32 => DataType::UInt32,
            Kind::I64 => DataType::Int64,
            Kind::Bool => DataType::Boolean,
            Kind::Dec => decimal_type(),
            Kind::Time => timestamp_type(),
            Kind::Date => DataType::Date32,
        }
    }
}

/// The schema of the `events` table.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        Arc::new(Schema::new(
            COLUMNS
                .iter()
                .map(|(name, kind, required)| Field::new(*name, kind.data_type(), !required))
                .collect::<Vec<_>>(),
        ))
    }))
}

/// A value of one cell.
#[derive(Debug, Clone, Copy)]
enum Cell<'a> {
    Str(&'a str),
    U32(u32),
    I64(i64),
    Bool(bool),
    Dec(i128),
    Time(i64),
    Date(i32),
}

enum Builder {
    Str(StringBuilder),
    U32(UInt32Builder),
    I64(Int64Builder),
    Bool(BooleanBuilder),
    Dec(Decimal128Builder),
    Time(TimestampMicrosecondBuilder),
    Date(Date32Builder),
}

impl Builder {
    fn new(kind: Kind, capacity: usize) -> Builder {
        match kind {
            Kind::Str => Builder::Str(StringBuilder::with_capacity(capacity, capacity * 8)),
            Kind::U32 => Builder::U32(UInt32Builder::with_capacity(capacity)),
            Kind::I64 => Builder::I64(Int64Builder::with_capacity(capacity)),
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            Kind::Dec => Builder::Dec(
                Decimal128Builder::with_capacity(capacity).with_data_type(decimal_type()),
            ),
            Kind::Time => Builder::Time(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
            Kind::Date => Builder::Date(Date32Builder::with_capacity(capacity)),
        }
    }

    fn push(&mut self, cell: Option<Cell<'_>>) {
        match (self, cell) {
            (Builder::Str(b), Some(Cell::Str(v))) => b.append_value(v),
            (Builder::U32(b), Some(Cell::U32(v))) => b.append_value(v),
            (Builder::I64(b), Some(Cell::I64(v))) => b.append_value(v),
            (Builder::Bool(b), Some(Cell::Bool(v))) => b.append_value(v),
            (Builder::Dec(b), Some(Cell::Dec(v))) => b.append_value(v),
            (Builder::Time(b), Some(Cell::Time(v))) => b.append_value(v),
            (Builder::Date(b), Some(Cell::Date(v))) => b.append_value(v),
            (Builder::Str(b), None) => b.append_null(),
            (Builder::U32(b), None) => b.append_null(),
            (Builder::I64(b), None) => b.append_null(),
            (Builder::Bool(b), None) => b.append_null(),
            (Builder::Dec(b), None) => b.append_null(),
            (Builder::Time(b), None) => b.append_null(),
            (Builder::Date(b), None) => b.append_null(),
            // Row::set only stores cells of the column's kind (checked in its tests).
            (_, Some(_)) => unreachable!("cell kind does not match its column"),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Builder::Str(mut b) => Arc::new(b.finish()),
            Builder::U32(mut b) => Arc::new(b.finish()),
            Builder::I64(mut b) => Arc::new(b.finish()),
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Dec(mut b) => Arc::new(b.finish()),
            Builder::Time(mut b) => Arc::new(b.finish()),
            Builder::Date(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Why an event cannot become a row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// The field, e.g. `payload.total.amount`.
    pub field: String,
    /// What is wrong with its value.
    pub problem: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.problem)
    }
}

/// Checks that `event` fits the table (decimals with at most 9 places, counts within i64).
pub fn check(event: &Event) -> Result<(), RowError> {
    let mut row = Row::default();
    row.fill(event)
}

/// [`check`], and that every value is within `bounds`.
pub fn check_bounded(event: &Event, bounds: Bounds) -> Result<(), Refusal> {
    let mut row = Row::bounded(bounds);
    row.fill(event).map_err(Refusal::Invalid)?;
    row.beyond.map_or(Ok(()), |e| Err(Refusal::Implausible(e)))
}

/// Converts events to one batch of the [`schema`]. Events that fail [`check`] must be
/// filtered out first; this fails on the first one that does not fit.
pub fn to_batch<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<RecordBatch, RowError> {
    let events: Vec<&Event> = events.into_iter().collect();
    let mut builders: Vec<Builder> = COLUMNS
        .iter()
        .map(|(_, kind, _)| Builder::new(*kind, events.len()))
        .collect();
    let mut row = Row::default();
    for event in events {
        row.clear();
        row.fill(event)?;
        for (b, cell) in builders.iter_mut().zip(row.cells.iter()) {
            b.push(*cell);
        }
    }
    let columns = builders.into_iter().map(Builder::finish).collect();
    // The builders follow COLUMNS, which is where the schema comes from.
    Ok(RecordBatch::try_new(schema(), columns).expect("builders match the schema"))
}

/// One row being filled: a cell per column, by index.
struct Row<'e> {
    cells: Vec<Option<Cell<'e>>>,
    bounds: Bounds,
    /// The first value found beyond `bounds`.
    beyond: Option<RowError>,
}

impl Default for Row<'_> {
    fn default() -> Self {
        Row::bounded(Bounds::NONE)
    }
}

fn column_index(name: &str) -> usize {
    COLUMNS
        .iter()
        .position(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn days(d: NaiveDate) -> i32 {
    d.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch"))
        .num_days() as i32
}

/// The i128 mantissa at scale 9, or why not. Exact: a value too large for a 96-bit mantissa at
/// scale 9 (beyond 7.9e19) is widened in 128 bits, never rescaled to fewer places.
pub fn scaled(d: Decimal, field: &str) -> Result<i128, RowError> {
    if d.0.scale() > DECIMAL_SCALE as u32 {
        return Err(RowError {
            field: field.to_string(),
            problem: format!(
                "{d} has {} decimal places; at most {DECIMAL_SCALE} are kept",
                d.0.scale()
            ),
        });
    }
    Ok(crate::fixed::fixed(d))
}

/// Plausibility bounds on an event's values (`[processor.bounds]`): a value beyond them is
/// refused as implausible, naming the field, the value and the bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Largest absolute money amount of one fact (an order's total, a refund, a fee, a
    /// campaign-day's spend or sales), as a mantissa at scale 9.
    pub max_amount: i128,
    /// Largest unit count of one order fact or shipment (`payload.units`).
    pub max_units: i64,
    /// Longest text field (an id, a SKU, a reason), in bytes.
    pub max_text_bytes: usize,
}

impl Bounds {
    /// No bounds beyond the table's types: what `to_batch` uses, since its events were
    /// checked already.
    pub const NONE: Bounds = Bounds {
        max_amount: i128::MAX,
        max_units: i64::MAX,
        max_text_bytes: usize::MAX,
    };
}

/// Why an event is refused before it is counted.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// It does not fit the table's types (too many decimal places, a count beyond i64).
    Invalid(RowError),
    /// A value beyond [`Bounds`].
    Implausible(RowError),
}

impl<'e> Row<'e> {
    fn bounded(bounds: Bounds) -> Self {
        Row {
            cells: vec![None; COLUMNS.len()],
            bounds,
            beyond: None,
        }
    }

    fn clear(&mut self) {
        self.cells.iter_mut().for_each(|c| *c = None);
    }

    /// Notes the first value beyond the bounds (filling goes on: the row is dropped anyway).
    fn beyond(&mut self, field: &str, problem: impl FnOnce() -> String) {
        if self.beyond.is_none() {
            self.beyond = Some(RowError {
                field: field.to_string(),
                problem: problem(),
            });
        }
    }

    fn set(&mut self, name: &str, cell: Cell<'e>) {
        self.cells[column_index(name)] = Some(cell);
    }

    /// A text column; a value beyond the bounds is named by its field on the wire: a header
    /// field as it is, a payload field as `payload.<name>`.
    fn str(&mut self, name: &str, v: &'e str) {
        const HEADER: [&str; 8] = [
            "event_id",
            "schema",
            "source",
            "shop",
            "channel",
            "marketplace",
            "sku",
            "source_tz",
        ];
        if v.len() > self.bounds.max_text_bytes {
            if HEADER.contains(&name) {
                self.too_long(name, v);
            } else {
                self.too_long(&format!("payload.{name}"), v);
            }
        }
        self.set(name, Cell::Str(v));
    }

    /// Notes that the text of `field` is beyond `max_text_bytes`.
    fn too_long(&mut self, field: &str, v: &str) {
        let max = self.bounds.max_text_bytes;
        self.beyond(field, || {
            let start: String = v.chars().take(32).collect();
            format!(
                "{} bytes long ({start:?}…); at most {max} are accepted (processor.bounds.max_text_bytes)",
                v.len()
            )
        });
    }

    fn opt_str(&mut self, name: &str, v: &'e Option<String>) {
        if let Some(v) = v {
            self.str(name, v);
        }
    }

    fn opt_fulfilment(&mut self, f: Option<crate::Fulfilment>) {
        if let Some(f) = f {
            self.str("fulfilment", f.as_str());
        }
    }

    fn time(&mut self, name: &str, t: DateTime<Utc>) {
        self.set(name, Cell::Time(micros(t)));
    }

    fn opt_time(&mut self, name: &str, t: Option<DateTime<Utc>>) {
        if let Some(t) = t {
            self.time(name, t);
        }
    }

    fn int(&mut self, name: &str, v: u64, field: &str) -> Result<(), RowError> {
        let v = i64::try_from(v).map_err(|_| RowError {
            field: field.to_string(),
            problem: format!("{v} is larger than {}", i64::MAX),
        })?;
        self.set(name, Cell::I64(v));
        Ok(())
    }

    fn dec(&mut self, name: &str, d: Decimal, field: &str) -> Result<(), RowError> {
        let v = scaled(d, field)?;
        if v.unsigned_abs() > self.bounds.max_amount.unsigned_abs() {
            let max = crate::fixed::decimal(self.bounds.max_amount).0.normalize();
            self.beyond(field, || {
                format!("{d} is beyond ±{max}, the most one fact may carry (processor.bounds.max_amount)")
            });
        }
        self.set(name, Cell::Dec(v));
        Ok(())
    }

    fn units(&mut self, v: u32) -> Result<(), RowError> {
        if i64::from(v) > self.bounds.max_units {
            let max = self.bounds.max_units;
            self.beyond("payload.units", || {
                format!("{v} is more than {max}, the most one fact may carry (processor.bounds.max_units)")
            });
        }
        self.int("units", u64::from(v), "payload.units")
    }

    fn money(&mut self, name: &str, m: &'e Money, field: &str) -> Result<(), RowError> {
        self.dec(name, m.amount, &format!("{field}.amount"))?;
        if m.currency.len() > self.bounds.max_text_bytes {
            self.too_long(&format!("{field}.currency"), &m.currency);
        }
        self.set("currency", Cell::Str(&m.currency));
        Ok(())
    }

    fn fill(&mut self, event: &'e Event) -> Result<(), RowError> {
        let h = &event.header;
        self.str("event_id", &h.event_id);
        self.str("schema", event.body.schema());
        self.set("schema_version", Cell::U32(event.body.version()));
        self.str("source", &h.source);
        self.str("shop", &h.shop);
        self.str("channel", h.channel.as_str());
        self.str("marketplace", &h.marketplace);
        self.opt_str("sku", &h.sku);
        self.time("event_time", h.event_time);
        self.str("source_tz", h.source_tz.0.name());
        self.time("ingest_time", h.ingest_time);
        let local = h.event_time.with_timezone(&h.source_tz.0).date_naive();
        self.set("local_date", Cell::Date(days(local)));
        match &event.body {
            EventBody::OrderPlaced(b) => {
                self.str("order_id", &b.order_id);
                self.time("placed_at", h.event_time);
                self.money("amount", &b.total, "payload.total")?;
                self.units(b.units)?;
                self.str("fulfilment", b.fulfilment.as_str());
                self.opt_time("ship_by", b.ship_by);
                self.opt_time("deliver_by", b.deliver_by);
            }
            EventBody::OrderPaid(b) => {
                self.str("order_id", &b.order_id);
                self.time("placed_at", b.placed_at);
                self.money("amount", &b.amount, "payload.amount")?;
            }
            EventBody::OrderShipped(b) => {
                self.str("order_id", &b.order_id);
                self.time("placed_at", b.placed_at);
                self.time("ship_by", b.ship_by);
                self.opt_time("deliver_by", b.deliver_by);
                self.units(b.units)?;
                self.opt_str("carrier", &b.carrier);
                self.opt_str("tracking_id", &b.tracking_id);
                self.set("tracking_valid", Cell::Bool(b.tracking_valid));
                self.opt_fulfilment(b.fulfilment);
            }
            EventBody::OrderDelivered(b) => {
                self.str("order_id", &b.order_id);
                self.time("placed_at", b.placed_at);
                self.time("deliver_by", b.deliver_by);
                self.units(b.units)?;
                self.opt_fulfilment(b.fulfilment);
            }
            EventBody::OrderCancelled(b) => {
                self.str("order_id", &b.order_id);
                self.time("placed_at", b.placed_at);
                self.str("cancelled_by", b.cancelled_by.as_str());
                self.opt_str("reason", &b.reason);
                self.opt_fulfilment(b.fulfilment);
            }
            EventBody::OrderReturned(b) => {
                self.str("order_id", &b.order_id);
                self.time("placed_at", b.placed_at);
                self.units(b.units)?;
                self.opt_str("reason", &b.reason);
                self.opt_fulfilment(b.fulfilment);
            }
            EventBody::OrderRefunded(b) => {
                self.str("order_id", &b.order_id);
                self.time("placed_at", b.placed_at);
                self.money("amount", &b.amount, "payload.amount")?;
                self.set("seller_fault", Cell::Bool(b.seller_fault));
                self.opt_fulfilment(b.fulfilment);
            }
            EventBody::OrderDefect(b) => {
                self.str("order_id", &b.order_id);
                self.time("placed_at", b.placed_at);
                self.str("defect_kind", b.kind.as_str());
                if let Some(r) = b.rating {
                    self.set("rating", Cell::I64(i64::from(r)));
                }
                self.opt_fulfilment(b.fulfilment);
            }
            EventBody::OrderFee(b) => {
                self.opt_str("order_id", &b.order_id);
                self.money("amount", &b.amount, "payload.amount")?;
                self.str("fee_kind", b.kind.as_str());
                self.str("fee_type", &b.fee_type);
                self.str("fee_applies_to", b.applies_to.as_str());
            }
            EventBody::CostChanged(b) => {
                for (field, part) in [
                    ("payload.freight", &b.freight),
                    ("payload.duties", &b.duties),
                ] {
                    if let Some(part) = part {
                        self.money("amount", part, field)?;
                    }
                }
                // The parts are checked one by one above; the column holds their sum.
                self.money("amount", &b.purchase, "payload.purchase")?;
                self.dec("amount", b.landed(), "payload.purchase.amount")?;
                self.set("effective_from", Cell::Date(days(b.effective_from)));
            }
            EventBody::AdPerformance(b) => {
                self.str("platform", &b.platform);
                self.str("account_id", &b.account_id);
                self.str("campaign_id", &b.campaign_id);
                self.set("ad_date", Cell::Date(days(b.date)));
                self.int("impressions", b.impressions, "payload.impressions")?;
                self.int("clicks", b.clicks, "payload.clicks")?;
                self.money("spend", &b.spend, "payload.spend")?;
                self.int(
                    "attributed_orders",
                    b.attributed_orders,
                    "payload.attributed_orders",
                )?;
                self.money(
                    "attributed_sales",
                    &b.attributed_sales,
                    "payload.attributed_sales",
                )?;
                self.str("attribution_window", &b.attribution_window);
                self.time("as_of", b.as_of);
            }
            EventBody::InventorySnapshot(b) => {
                self.str("location", &b.location);
                self.str("location_kind", b.location_kind.as_str());
                self.int("sellable", b.sellable, "payload.sellable")?;
                self.int("inbound", b.inbound, "payload.inbound")?;
                self.int("reserved", b.reserved, "payload.reserved")?;
                self.int("unfulfillable", b.unfulfillable, "payload.unfulfillable")?;
            }
            EventBody::ShipmentMilestone(b) => {
                self.str("shipment_id", &b.shipment_id);
                self.str("warehouse", &b.warehouse);
                self.str("milestone", b.milestone.as_str());
                self.opt_str("order_id", &b.order_id);
                self.opt_str("carrier", &b.carrier);
                self.opt_str("tracking_id", &b.tracking_id);
                self.units(b.units)?;
            }
            EventBody::SourceHeartbeat(b) => {
                self.str("connector", &b.connector);
                self.opt_time("last_success", b.last_success);
                self.opt_time("newest_event_time", b.newest_event_time);
                self.int(
                    "records_published",
                    b.records_published,
                    "payload.records_published",
                )?;
                self.int("errors", b.errors, "payload.errors")?;
                self.int(
                    "consecutive_failures",
                    u64::from(b.consecutive_failures),
                    "payload.consecutive_failures",
                )?;
            }
            // A reference value, never summed: the cross-check reads it from the event itself
            // (engine_crosscheck.rs), so it fills only the header columns.
            EventBody::AccountHealthMetric(_) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Decimal128Array, StringArray};

    fn fixtures() -> Vec<Event> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/events");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| Event::from_json(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn every_schema_fills_its_columns_with_matching_types() {
        let events = fixtures();
        assert_eq!(events.len(), crate::EventBody::SCHEMAS.len());
        let batch = to_batch(&events).unwrap();
        assert_eq!(batch.num_rows(), events.len());
        let schemas = batch
            .column_by_name("schema")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let row = |name: &str| {
            (0..schemas.len())
                .find(|i| schemas.value(*i) == name)
                .unwrap()
        };
        let amount = batch
            .column_by_name("amount")
            .unwrap()
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        let placed = row("order.placed");
        assert!(amount.is_valid(placed));
        assert!(amount.is_null(row("ad.performance")));
        // Follow-up order facts carry their order's fulfilment where the source says it.
        let fulfilment = batch
            .column_by_name("fulfilment")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(fulfilment.value(row("order.shipped")), "fba");
        assert!(fulfilment.is_null(row("order.defect")));
        // Every column is filled by at least one fixture, so no column is dead weight.
        for (i, field) in batch.schema().fields().iter().enumerate() {
            assert!(
                batch.column(i).null_count() < batch.num_rows(),
                "column {} is null for every schema",
                field.name()
            );
        }
    }

    #[test]
    fn too_many_decimal_places_name_the_field() {
        let mut e = fixtures()
            .into_iter()
            .find(|e| e.schema() == "order.placed")
            .unwrap();
        if let EventBody::OrderPlaced(o) = &mut e.body {
            o.total.amount = Decimal::parse("1.0000000001").unwrap();
        }
        let err = check(&e).unwrap_err();
        assert_eq!(err.field, "payload.total.amount");
        assert!(err.problem.contains("10 decimal places"), "{err}");
    }
}

#[cfg(test)]
mod scaled_tests {
    use super::*;

    #[test]
    fn amounts_too_large_for_96_bits_at_scale_nine_are_widened_exactly_not_rescaled() {
        let d = |s: &str| Decimal(s.parse().unwrap());
        // 10^23 at scale 9 is the mantissa 10^32 (rust_decimal's own rescale would have
        // stopped at scale 5 and made it 10^28, i.e. 10^19 read at scale 9).
        assert_eq!(
            scaled(d("100000000000000000000000"), "f"),
            Ok(10i128.pow(32))
        );
        assert_eq!(
            scaled(d("79228162514264337593543950335"), "f"),
            Ok(79_228_162_514_264_337_593_543_950_335i128 * 1_000_000_000)
        );
        assert_eq!(scaled(d("-0.5"), "f"), Ok(-500_000_000));
        let err = scaled(d("0.1234567891"), "payload.total.amount").unwrap_err();
        assert_eq!(err.field, "payload.total.amount");
    }
}
