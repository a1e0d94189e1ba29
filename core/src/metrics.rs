//! Every metric name and label key, the per-component counters, and the HTTP endpoint.
//!
//! Names live here and nowhere else, so dashboards, alert rules and code cannot disagree.
//! Pipeline metrics carry only low-cardinality labels (component, reason, kind); KPI series
//! carry the KPI's scope and are exported by the sink.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

use crate::CoreError;

/// Metric names.
pub mod names {
    /// Records a component read (counter; label `component`).
    pub const EVENTS_RECEIVED: &str = "kpiflow_events_received_total";
    /// Records a component wrote on (counter; label `component`).
    pub const EVENTS_SENT: &str = "kpiflow_events_sent_total";
    /// Records a component did not use: dead-lettered or discarded (counter; `component`, `reason`).
    pub const EVENTS_DROPPED: &str = "kpiflow_events_dropped_total";
    /// Errors by kind (counter; `component`, `kind`).
    pub const ERRORS: &str = "kpiflow_errors_total";
    /// Duplicate events counted once (counter; `component`).
    pub const DUPLICATES: &str = "kpiflow_duplicate_events_total";
    /// Event-time watermark, Unix seconds (gauge; `component`).
    pub const WATERMARK: &str = "kpiflow_watermark_seconds";
    /// Live aggregation buckets held in state (gauge; `component`).
    pub const STATE_BUCKETS: &str = "kpiflow_state_buckets";
    /// SKUs with units sold on a day they have no landed cost for: their profit is not
    /// published (gauge; `component`).
    pub const SKUS_WITHOUT_COST: &str = "kpiflow_skus_without_cost";
    /// Seconds from reading a batch to publishing its outputs (histogram; `component`).
    pub const BATCH_SECONDS: &str = "kpiflow_batch_duration_seconds";
    /// Histogram: seconds to restore the state of newly assigned partitions.
    pub const RESTORE_SECONDS: &str = "kpiflow_state_restore_duration_seconds";
    /// Histogram: seconds to write a state checkpoint.
    pub const CHECKPOINT_SECONDS: &str = "kpiflow_checkpoint_duration_seconds";
    /// A KPI's current value (gauge; `kpi`, `team`, `priority`, `shop`, `channel`,
    /// `marketplace`, `window`, `sku`, `campaign`: see [`KPI_LABELS`](super::KPI_LABELS)).
    pub const KPI_VALUE: &str = "kpiflow_kpi_value";
    /// A KPI's numerator (gauge; same labels as the value).
    pub const KPI_NUMERATOR: &str = "kpiflow_kpi_numerator";
    /// A KPI's denominator (gauge; same labels as the value).
    pub const KPI_DENOMINATOR: &str = "kpiflow_kpi_denominator";
    /// Open breaches (gauge; `rule`, `severity`).
    pub const BREACHES_OPEN: &str = "kpiflow_breaches_open";
    /// Breach transitions (counter; `rule`, `state`).
    pub const BREACH_EVENTS: &str = "kpiflow_breach_events_total";
    /// Files the sink committed (counter; `table`).
    pub const SINK_FILES: &str = "kpiflow_sink_files_total";
    /// Rows the sink committed (counter; `table`).
    pub const SINK_ROWS: &str = "kpiflow_sink_rows_total";
    /// Temporary files of a killed writer the sink removed at start (counter; `table`).
    pub const SINK_TEMP_FILES_REMOVED: &str = "kpiflow_sink_temp_files_removed_total";
    /// The automation guard's answers, by `answer` (`allow`, `deny`, `not_ready`,
    /// `bad_request`).
    pub const GUARD_ANSWERS: &str = "kpiflow_guard_answers_total";
    /// Pushes of the automation guard's webhook, by `outcome`: `delivered`, `rejected` (a 4xx,
    /// not retried), `failed` (every attempt failed), `dropped` (queue full), `abandoned` (at
    /// shutdown); `retried` counts failed attempts that are retried (counter).
    pub const GUARD_WEBHOOK_PUSHES: &str = "kpiflow_guard_webhook_pushes_total";
    /// Table files a query skipped because their Parquet footer is unreadable, with
    /// `--skip-unreadable` (counter; `table`).
    pub const QUERY_FILES_SKIPPED: &str = "kpiflow_query_files_skipped_total";
    /// When a source connector last completed a sync, Unix seconds (gauge; `connector`, `shop`).
    pub const SOURCE_LAST_SUCCESS: &str = "kpiflow_source_last_success_timestamp_seconds";
    /// Newest event time a source connector has published, Unix seconds (gauge; `connector`,
    /// `shop`); data freshness is `time() - kpiflow_source_newest_event_timestamp_seconds`.
    pub const SOURCE_NEWEST_EVENT: &str = "kpiflow_source_newest_event_timestamp_seconds";
    /// Events a source connector published (counter; `connector`, `shop`).
    pub const SOURCE_RECORDS: &str = "kpiflow_source_records_published_total";
    /// Failed syncs and failed requests of a source connector (counter; `connector`, `shop`).
    pub const SOURCE_ERRORS: &str = "kpiflow_source_errors_total";
    /// Failed syncs in a row (gauge; `connector`, `shop`); 0 after a success.
    pub const SOURCE_CONSECUTIVE_FAILURES: &str = "kpiflow_source_consecutive_failures";
    /// Times a request waited for the rate limit: the client-side limiter or a 429
    /// (counter; `connector`, `shop`).
    pub const SOURCE_RATE_LIMIT_WAITS: &str = "kpiflow_source_rate_limit_waits_total";
    /// Requests retried after a 5xx, a 429 or a connection error (counter; `connector`, `shop`).
    pub const SOURCE_RETRIES: &str = "kpiflow_source_retries_total";
    /// Failed writes of a sink: a Parquet flush, an Alertmanager or webhook delivery attempt
    /// (counter; `sink`).
    pub const SINK_WRITE_ERRORS: &str = "kpiflow_sink_write_errors_total";
    /// Canonical events per source and outcome: `accepted`, `late`, `dead_lettered`,
    /// `duplicate` (counter; `source`, `outcome`). Wired by the processor.
    pub const SOURCE_EVENTS: &str = "kpiflow_source_events_total";
    /// Records a consumer group has not committed yet, per partition (gauge; `component`,
    /// `topic`, `partition`).
    pub const CONSUMER_LAG: &str = "kpiflow_consumer_lag";
    /// Seconds from a record's publish time (`emitted_at`) to the moment a component has
    /// handled it for good: written to Parquet, accepted by Alertmanager (histogram;
    /// `component`).
    pub const EVENT_LATENCY_SECONDS: &str = "kpiflow_event_latency_seconds";
    /// Seconds an offset commit (or checkpoint) took (histogram; `component`).
    pub const COMMIT_SECONDS: &str = "kpiflow_commit_duration_seconds";
    /// KPI series exported on `/metrics` (gauge).
    pub const KPI_SERIES: &str = "kpiflow_kpi_series";
    /// KPI updates not exported on `/metrics` because the cardinality guard cut their series:
    /// `sku`, `campaign` (those labels are off) or `limit` (counter; `reason`).
    pub const KPI_SERIES_CUT: &str = "kpiflow_kpi_series_cut_total";
    /// Breaches an alert sink holds open and re-sends (gauge; `sink`).
    pub const ALERTS_OPEN: &str = "kpiflow_alerts_open";
    /// Alert deliveries accepted by the receiver (counter; `sink`, `state`).
    pub const ALERTS_SENT: &str = "kpiflow_alerts_sent_total";
    /// Connections and requests a webhook receiver's HTTP server refused before the handler:
    /// `connection_limit`, `header_timeout`, `body_timeout`, `too_large`, `idle_timeout`
    /// (counter; `component`, `reason`).
    pub const HTTP_REFUSED: &str = "kpiflow_http_refused_total";
    /// Connections a webhook receiver holds open (gauge; `component`).
    pub const HTTP_CONNECTIONS: &str = "kpiflow_http_connections";
}

/// Label keys.
pub mod labels {
    /// Which role and part: `ingest.simulator`, `processor`, `sink.parquet`, …
    pub const COMPONENT: &str = "component";
    /// Why a record was dropped: `invalid`, `late`, `currency`, …
    pub const REASON: &str = "reason";
    /// Error class: `kafka`, `io`, `decode`, …
    pub const KIND: &str = "kind";
    /// KPI id.
    pub const KPI: &str = "kpi";
    /// Shop id.
    pub const SHOP: &str = "shop";
    /// Sales channel.
    pub const CHANNEL: &str = "channel";
    /// Marketplace id.
    pub const MARKETPLACE: &str = "marketplace";
    /// Window name, e.g. `rolling_24h`.
    pub const WINDOW: &str = "window";
    /// Breach rule id.
    pub const RULE: &str = "rule";
    /// Breach severity.
    pub const SEVERITY: &str = "severity";
    /// Breach state.
    pub const STATE: &str = "state";
    /// Parquet table.
    pub const TABLE: &str = "table";
    /// The automation guard's answer: `allow`, `deny`, `not_ready`, `bad_request`.
    pub const ANSWER: &str = "answer";
    /// Source connector, e.g. `amazon_sp_orders`.
    pub const CONNECTOR: &str = "connector";
    /// The team that owns a KPI, e.g. `ads`, `operations`, `warehouse`, `customer_service`.
    pub const TEAM: &str = "team";
    /// A KPI's priority: `core` (shown first) or `supporting`.
    pub const PRIORITY: &str = "priority";
    /// Seller SKU (KPI series grouped by SKU; empty otherwise).
    pub const SKU: &str = "sku";
    /// Ad campaign id (KPI series grouped by campaign; empty otherwise).
    pub const CAMPAIGN: &str = "campaign";
    /// Which sink: `parquet`, `alertmanager`, `webhook`.
    pub const SINK: &str = "sink";
    /// Event source (connector), e.g. `amazon`, `simulator`.
    pub const SOURCE: &str = "source";
    /// What happened to an event: `accepted`, `late`, `dead_lettered`, `duplicate`; to a guard
    /// webhook push: `delivered`, `retried`, `rejected`, `failed`, `dropped`, `abandoned`.
    pub const OUTCOME: &str = "outcome";
    /// Kafka topic.
    pub const TOPIC: &str = "topic";
    /// Kafka partition number.
    pub const PARTITION: &str = "partition";
}

/// The registry all kpiflow metrics live in (the process-wide default registry).
pub fn registry() -> &'static Registry {
    prometheus::default_registry()
}

/// Registers `metric` once per process; later calls return the same collector.
fn register<M: prometheus::core::Collector + Clone + 'static>(
    cell: &'static OnceLock<M>,
    make: impl FnOnce() -> prometheus::Result<M>,
) -> &'static M {
    cell.get_or_init(|| {
        let m = make().expect("metric definitions are valid");
        // Registration only fails on a duplicate name, which the OnceLock rules out.
        registry()
            .register(Box::new(m.clone()))
            .expect("metric registered once");
        m
    })
}

macro_rules! counter_vec {
    ($fn:ident, $name:expr, $help:expr, [$($label:expr),*]) => {
        #[doc = concat!("The `", stringify!($fn), "` counter family.")]
        pub fn $fn() -> &'static IntCounterVec {
            static CELL: OnceLock<IntCounterVec> = OnceLock::new();
            register(&CELL, || IntCounterVec::new(Opts::new($name, $help), &[$($label),*]))
        }
    };
}

macro_rules! gauge_vec {
    ($fn:ident, $ty:ident, $name:expr, $help:expr, [$($label:expr),*]) => {
        #[doc = concat!("The `", stringify!($fn), "` gauge family.")]
        pub fn $fn() -> &'static $ty {
            static CELL: OnceLock<$ty> = OnceLock::new();
            register(&CELL, || $ty::new(Opts::new($name, $help), &[$($label),*]))
        }
    };
}

counter_vec!(
    events_received,
    names::EVENTS_RECEIVED,
    "Records a component read.",
    [labels::COMPONENT]
);
counter_vec!(
    events_sent,
    names::EVENTS_SENT,
    "Records a component wrote on.",
    [labels::COMPONENT]
);
counter_vec!(
    events_dropped,
    names::EVENTS_DROPPED,
    "Records a component did not use (dead-lettered or discarded), by reason.",
    [labels::COMPONENT, labels::REASON]
);
counter_vec!(
    errors,
    names::ERRORS,
    "Errors, by kind.",
    [labels::COMPONENT, labels::KIND]
);
counter_vec!(
    duplicates,
    names::DUPLICATES,
    "Duplicate events counted once.",
    [labels::COMPONENT]
);
counter_vec!(
    http_refused,
    names::HTTP_REFUSED,
    "Connections and requests a webhook receiver refused before the handler, by reason.",
    [labels::COMPONENT, labels::REASON]
);
gauge_vec!(
    http_connections,
    IntGaugeVec,
    names::HTTP_CONNECTIONS,
    "Connections a webhook receiver holds open.",
    [labels::COMPONENT]
);
counter_vec!(
    breach_events,
    names::BREACH_EVENTS,
    "Breach transitions published.",
    [labels::RULE, labels::STATE]
);
counter_vec!(
    sink_files,
    names::SINK_FILES,
    "Parquet files committed.",
    [labels::TABLE]
);
counter_vec!(
    sink_rows,
    names::SINK_ROWS,
    "Parquet rows committed.",
    [labels::TABLE]
);
counter_vec!(
    guard_answers,
    names::GUARD_ANSWERS,
    "Answers of the automation guard (GET /v1/guard), by answer.",
    [labels::ANSWER]
);
counter_vec!(
    guard_webhook_pushes,
    names::GUARD_WEBHOOK_PUSHES,
    "Pushes of the automation guard's webhook, by outcome (retried counts attempts).",
    [labels::OUTCOME]
);
counter_vec!(
    sink_temp_files_removed,
    names::SINK_TEMP_FILES_REMOVED,
    "Temporary files of a killed writer removed at sink start.",
    [labels::TABLE]
);
counter_vec!(
    query_files_skipped,
    names::QUERY_FILES_SKIPPED,
    "Table files a query skipped because their Parquet footer is unreadable.",
    [labels::TABLE]
);
gauge_vec!(
    watermark,
    IntGaugeVec,
    names::WATERMARK,
    "Event-time watermark (Unix seconds).",
    [labels::COMPONENT]
);
gauge_vec!(
    state_buckets,
    IntGaugeVec,
    names::STATE_BUCKETS,
    "Aggregation buckets held in state.",
    [labels::COMPONENT]
);
gauge_vec!(
    skus_without_cost,
    IntGaugeVec,
    names::SKUS_WITHOUT_COST,
    "SKUs with units sold on a day they have no landed cost for (their profit is withheld).",
    [labels::COMPONENT]
);
gauge_vec!(
    breaches_open,
    IntGaugeVec,
    names::BREACHES_OPEN,
    "Breaches currently firing.",
    [labels::RULE, labels::SEVERITY]
);

counter_vec!(
    source_records,
    names::SOURCE_RECORDS,
    "Events a source connector published.",
    [labels::CONNECTOR, labels::SHOP]
);
counter_vec!(
    source_errors,
    names::SOURCE_ERRORS,
    "Failed syncs and requests of a source connector.",
    [labels::CONNECTOR, labels::SHOP]
);
counter_vec!(
    source_rate_limit_waits,
    names::SOURCE_RATE_LIMIT_WAITS,
    "Requests that waited for the client-side rate limit or a 429's Retry-After.",
    [labels::CONNECTOR, labels::SHOP]
);
counter_vec!(
    source_retries,
    names::SOURCE_RETRIES,
    "Requests retried after a 5xx, a 429 or a connection error.",
    [labels::CONNECTOR, labels::SHOP]
);
gauge_vec!(
    source_last_success,
    IntGaugeVec,
    names::SOURCE_LAST_SUCCESS,
    "When the connector last completed a sync (Unix seconds).",
    [labels::CONNECTOR, labels::SHOP]
);
gauge_vec!(
    source_newest_event,
    IntGaugeVec,
    names::SOURCE_NEWEST_EVENT,
    "Newest event time the connector published (Unix seconds).",
    [labels::CONNECTOR, labels::SHOP]
);
gauge_vec!(
    source_consecutive_failures,
    IntGaugeVec,
    names::SOURCE_CONSECUTIVE_FAILURES,
    "Failed syncs in a row.",
    [labels::CONNECTOR, labels::SHOP]
);

/// Label keys of the KPI series, in order. `team` and `priority` follow from the KPI (they
/// add no series; dashboards filter by them). `sku` and `campaign` are empty (which
/// Prometheus treats as absent) for shop-level series and whenever the sink's cardinality
/// guard keeps SKU or campaign series off.
pub const KPI_LABELS: [&str; 9] = [
    labels::KPI,
    labels::TEAM,
    labels::PRIORITY,
    labels::SHOP,
    labels::CHANNEL,
    labels::MARKETPLACE,
    labels::WINDOW,
    labels::SKU,
    labels::CAMPAIGN,
];

gauge_vec!(
    kpi_value,
    GaugeVec,
    names::KPI_VALUE,
    "Current KPI value (latest window).",
    [
        labels::KPI,
        labels::TEAM,
        labels::PRIORITY,
        labels::SHOP,
        labels::CHANNEL,
        labels::MARKETPLACE,
        labels::WINDOW,
        labels::SKU,
        labels::CAMPAIGN
    ]
);
gauge_vec!(
    kpi_numerator,
    GaugeVec,
    names::KPI_NUMERATOR,
    "Current KPI numerator (latest window).",
    [
        labels::KPI,
        labels::TEAM,
        labels::PRIORITY,
        labels::SHOP,
        labels::CHANNEL,
        labels::MARKETPLACE,
        labels::WINDOW,
        labels::SKU,
        labels::CAMPAIGN
    ]
);
gauge_vec!(
    kpi_denominator,
    GaugeVec,
    names::KPI_DENOMINATOR,
    "Current KPI denominator (latest window).",
    [
        labels::KPI,
        labels::TEAM,
        labels::PRIORITY,
        labels::SHOP,
        labels::CHANNEL,
        labels::MARKETPLACE,
        labels::WINDOW,
        labels::SKU,
        labels::CAMPAIGN
    ]
);
counter_vec!(
    sink_write_errors,
    names::SINK_WRITE_ERRORS,
    "Failed sink writes (Parquet flushes, alert delivery attempts).",
    [labels::SINK]
);
counter_vec!(
    source_events,
    names::SOURCE_EVENTS,
    "Canonical events per source and outcome (accepted, late, superseded, dead_lettered, duplicate).",
    [labels::SOURCE, labels::OUTCOME]
);
gauge_vec!(
    consumer_lag,
    IntGaugeVec,
    names::CONSUMER_LAG,
    "Records a consumer group has not committed yet, per partition.",
    [labels::COMPONENT, labels::TOPIC, labels::PARTITION]
);
counter_vec!(
    kpi_series_cut,
    names::KPI_SERIES_CUT,
    "KPI updates not exported because the cardinality guard cut their series, by reason.",
    [labels::REASON]
);
gauge_vec!(
    alerts_open,
    IntGaugeVec,
    names::ALERTS_OPEN,
    "Breaches an alert sink holds open and re-sends.",
    [labels::SINK]
);
counter_vec!(
    alerts_sent,
    names::ALERTS_SENT,
    "Alert deliveries accepted by the receiver, by breach state.",
    [labels::SINK, labels::STATE]
);

/// KPI series exported on `/metrics`.
pub fn kpi_series() -> &'static IntGauge {
    static CELL: OnceLock<IntGauge> = OnceLock::new();
    register(&CELL, || {
        IntGauge::new(names::KPI_SERIES, "KPI series exported on /metrics.")
    })
}

/// Seconds from a record's publish time to the moment a component handled it for good.
pub fn event_latency_seconds() -> &'static HistogramVec {
    static CELL: OnceLock<HistogramVec> = OnceLock::new();
    register(&CELL, || {
        HistogramVec::new(
            HistogramOpts::new(
                names::EVENT_LATENCY_SECONDS,
                "Seconds from a record's publish time to the moment a component handled it for good.",
            )
            .buckets(prometheus::exponential_buckets(0.01, 2.0, 16)?),
            &[labels::COMPONENT],
        )
    })
}

/// Seconds an offset commit took.
pub fn commit_seconds() -> &'static HistogramVec {
    static CELL: OnceLock<HistogramVec> = OnceLock::new();
    register(&CELL, || {
        HistogramVec::new(
            HistogramOpts::new(names::COMMIT_SECONDS, "Seconds an offset commit took.")
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 14)?),
            &[labels::COMPONENT],
        )
    })
}

/// Batch latency histogram.
pub fn batch_seconds() -> &'static HistogramVec {
    static CELL: OnceLock<HistogramVec> = OnceLock::new();
    register(&CELL, || {
        HistogramVec::new(
            HistogramOpts::new(
                names::BATCH_SECONDS,
                "Seconds from reading a batch to publishing its outputs.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
            &[labels::COMPONENT],
        )
    })
}

/// State restore duration (on partition assignment).
pub fn restore_seconds() -> &'static HistogramVec {
    static CELL: OnceLock<HistogramVec> = OnceLock::new();
    register(&CELL, || {
        HistogramVec::new(
            HistogramOpts::new(
                names::RESTORE_SECONDS,
                "Seconds to restore the state of newly assigned partitions from their checkpoints.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
            &[labels::COMPONENT],
        )
    })
}

/// Checkpoint write duration.
pub fn checkpoint_seconds() -> &'static HistogramVec {
    static CELL: OnceLock<HistogramVec> = OnceLock::new();
    register(&CELL, || {
        HistogramVec::new(
            HistogramOpts::new(
                names::CHECKPOINT_SECONDS,
                "Seconds to write the state checkpoints of one flush.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
            &[labels::COMPONENT],
        )
    })
}

/// The four counters every component reports: received, sent, dropped (by reason), errors (by kind).
#[derive(Clone)]
pub struct ComponentMetrics {
    component: &'static str,
    /// Records read.
    pub received: prometheus::IntCounter,
    /// Records written on.
    pub sent: prometheus::IntCounter,
}

impl ComponentMetrics {
    /// Counters for `component` (e.g. `processor`), registered on first use.
    pub fn new(component: &'static str) -> Self {
        // Every component dead-letters invalid records: that series exists from the start at
        // zero, so increase() and the dead-letter alert see the first one.
        let _ = events_dropped().with_label_values(&[component, "invalid"]);
        ComponentMetrics {
            component,
            received: events_received().with_label_values(&[component]),
            sent: events_sent().with_label_values(&[component]),
        }
    }

    /// The component label.
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// Counts `n` records not used, with a low-cardinality reason such as `invalid` or `late`.
    pub fn dropped(&self, reason: &str, n: u64) {
        events_dropped()
            .with_label_values(&[self.component, reason])
            .inc_by(n);
    }

    /// Counts an error of `kind` (e.g. `kafka`, `io`).
    pub fn error(&self, kind: &str) {
        errors().with_label_values(&[self.component, kind]).inc();
    }

    /// The watermark gauge of this component.
    pub fn watermark(&self) -> IntGauge {
        watermark().with_label_values(&[self.component])
    }

    /// Publishes this component's consumer lag, one series per partition (from
    /// [`KafkaConfig::group_lag`](crate::KafkaConfig::group_lag)).
    pub fn consumer_lag(&self, lags: &[crate::PartitionLag]) {
        for l in lags {
            consumer_lag()
                .with_label_values(&[self.component, l.topic.as_str(), &l.partition.to_string()])
                .set(l.lag());
        }
    }
}

/// Health series of one source connector for one shop: sync outcomes, freshness, rate limits.
#[derive(Clone, Debug)]
pub struct SourceMetrics {
    /// Events published.
    pub records: prometheus::IntCounter,
    /// Failed syncs and failed requests.
    pub errors: prometheus::IntCounter,
    /// Requests that waited for a rate limit (client-side or a 429).
    pub rate_limit_waits: prometheus::IntCounter,
    /// Requests retried.
    pub retries: prometheus::IntCounter,
    /// Last successful sync, Unix seconds.
    pub last_success: IntGauge,
    /// Newest event time published, Unix seconds.
    pub newest_event: IntGauge,
    /// Failed syncs in a row.
    pub consecutive_failures: IntGauge,
}

impl SourceMetrics {
    /// The series of `connector` (e.g. `amazon_sp_orders`) for `shop`, registered on first use.
    pub fn new(connector: &str, shop: &str) -> Self {
        let l = [connector, shop];
        SourceMetrics {
            records: source_records().with_label_values(&l),
            errors: source_errors().with_label_values(&l),
            rate_limit_waits: source_rate_limit_waits().with_label_values(&l),
            retries: source_retries().with_label_values(&l),
            last_success: source_last_success().with_label_values(&l),
            newest_event: source_newest_event().with_label_values(&l),
            consecutive_failures: source_consecutive_failures().with_label_values(&l),
        }
    }
}

/// A named part's readiness flag.
type Part = (String, Arc<AtomicBool>);

/// What `/readyz` reports: every registered part must say it is ready.
#[derive(Clone, Default)]
pub struct Readiness {
    parts: Arc<std::sync::Mutex<Vec<Part>>>,
}

impl Readiness {
    /// Registers a part (e.g. `processor`) that starts not ready; flip the returned flag.
    pub fn part(&self, name: &str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.parts
            .lock()
            .expect("readiness lock")
            .push((name.to_string(), flag.clone()));
        flag
    }

    /// Registers the part `kafka`, true while a broker answers (asked every
    /// [`BROKER_PROBE_INTERVAL`](crate::kafka::BROKER_PROBE_INTERVAL)) until `shutdown`: a role
    /// that cannot reach Kafka is not ready, whatever its other parts say.
    pub fn watch_broker(
        &self,
        kafka: &crate::KafkaConfig,
        shutdown: &CancellationToken,
    ) -> Result<(), CoreError> {
        crate::kafka::spawn_broker_probe(
            kafka,
            self.part("kafka"),
            crate::kafka::BROKER_PROBE_INTERVAL,
            crate::kafka::BROKER_PROBE_TIMEOUT,
            shutdown.clone(),
        )
        .map(drop)
    }

    /// The parts that are not ready yet (empty means ready).
    pub fn not_ready(&self) -> Vec<String> {
        self.parts
            .lock()
            .expect("readiness lock")
            .iter()
            .filter(|(_, f)| !f.load(Ordering::Relaxed))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Renders the registry in the Prometheus text format.
pub fn render() -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry().gather(), &mut buf)
        .expect("text encoding into a Vec cannot fail");
    String::from_utf8(buf).expect("the text format is UTF-8")
}

/// The HTTP routes: `/metrics`, `/healthz` (the process is up) and `/readyz` (every part ready).
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(|| async { render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let waiting = readiness.not_ready();
                async move {
                    if waiting.is_empty() {
                        (StatusCode::OK, "ready\n".to_string())
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {}\n", waiting.join(", ")),
                        )
                    }
                }
            }),
        )
}

/// Binds `addr` (port 0 picks a free port) and serves [`router`] until `shutdown`.
/// Returns the bound address and the server task.
pub async fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), CoreError> {
    serve_with(addr, readiness, Router::new(), shutdown).await
}

/// [`serve`] with a role's own routes beside the standard ones (the sink's `/v1/guard`).
pub async fn serve_with(
    addr: SocketAddr,
    readiness: Readiness,
    extra: Router,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), CoreError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CoreError::Metrics {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| CoreError::Metrics {
        addr: addr.to_string(),
        source,
    })?;
    let task = tokio::spawn(async move {
        let app = router(readiness).merge(extra);
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_counters_appear_in_the_exposition() {
        let m = ComponentMetrics::new("test.component");
        m.received.inc_by(3);
        m.dropped("invalid", 1);
        let text = render();
        assert!(
            text.contains(r#"kpiflow_events_received_total{component="test.component"} 3"#),
            "{text}"
        );
        assert!(text.contains(
            r#"kpiflow_events_dropped_total{component="test.component",reason="invalid"} 1"#
        ));
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    /// The real HTTP endpoint, over a socket: what Prometheus and a Kubernetes probe see.
    #[tokio::test]
    async fn endpoints_serve_metrics_health_and_readiness() {
        let readiness = Readiness::default();
        let ready = readiness.part("processor");
        ComponentMetrics::new("test.http").received.inc();
        let stop = CancellationToken::new();
        let (addr, task) = serve(([127, 0, 0, 1], 0).into(), readiness, stop.clone())
            .await
            .unwrap();
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains(r#"kpiflow_events_received_total{component="test.http"} 1"#));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let not_ready = get(addr, "/readyz").await;
        assert!(
            not_ready.starts_with("HTTP/1.1 503") && not_ready.contains("not ready: processor"),
            "{not_ready}"
        );
        ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn readiness_lists_waiting_parts() {
        let r = Readiness::default();
        let a = r.part("processor");
        assert_eq!(r.not_ready(), vec!["processor".to_string()]);
        a.store(true, Ordering::Relaxed);
        assert!(r.not_ready().is_empty());
    }
}
