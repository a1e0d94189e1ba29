//! Canonical kpiflow events and outputs: the wire contract between every role.
//!
//! ```text
//!  platform APIs ──► ingest ──► [events.orders | events.ads | events.logistics] ──► processor
//!                                                                                     │
//!            sink ◄── [kpi.updates | breaches] ◄──────────────────────────────────────┘
//!  anything unreadable on the way ──► [deadletter] (raw payload + reason)
//! ```
//!
//! This crate owns everything that crosses Kafka:
//! - [`Event`]: the versioned canonical event (an [`EventHeader`] every event carries, plus one
//!   [`EventBody`] per schema such as `order.placed` or `ad.performance`);
//! - [`KpiUpdate`] and [`BreachEvent`]: what the processor publishes;
//! - [`DeadLetter`]: what any role publishes when it cannot use a record;
//! - [`Topics`]: topic names and record keys, defined once;
//! - with the `arrow` feature, `event_table`: the same events as one wide Arrow schema (the
//!   input of the catalog's SQL, the `events` Parquet archive), and `fixed`: the fixed-point
//!   form of decimals both use. The processor and the sink share them; the sink no longer
//!   depends on the processor for it.
//!
//! The Rust types are the source of truth. The JSON Schema files under `schemas/json/` are
//! generated from them ([`json_schema::documents`]) and a test fails when the committed files
//! drift from the types (`KPIFLOW_BLESS=1 cargo test -p kpiflow-schemas` rewrites them).
//!
//! Decoding ([`Event::from_json`]) never panics and never guesses: a record that does not fit
//! yields a [`SchemaError`] naming the schema, the field, the value and the rule, e.g.
//! ``order.placed: field `payload.total.amount`: expected a decimal string such as "12.34", got "-3.x"``.

pub mod error;
pub mod event;
#[cfg(feature = "arrow")]
pub mod event_table;
#[cfg(feature = "arrow")]
pub mod fixed;
pub mod json_schema;
pub mod money;
pub mod output;
pub mod topics;

pub use error::SchemaError;
pub use event::{
    AccountHealthMetric, AdPerformance, CancelledBy, Channel, CostChanged, DefectKind, Event,
    EventBody, EventHeader, FeeApplies, FeeKind, Fulfilment, HealthMetric, HealthStatus,
    InventorySnapshot, LocationKind, Milestone, OrderCancelled, OrderDefect, OrderDelivered,
    OrderFee, OrderPaid, OrderPlaced, OrderRefunded, OrderReturned, OrderShipped,
    ShipmentMilestone, SourceHeartbeat, SourceTz, TargetCondition,
};
pub use money::{Decimal, Money};
pub use output::{
    BreachEvent, BreachState, DeadLetter, Direction, KpiUpdate, Priority, RuleKind, RuleOp, Scope,
    Severity, WindowKind, WindowRef,
};
pub use topics::{Topic, Topics};
