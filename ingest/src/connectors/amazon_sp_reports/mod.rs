//! `amazon_sp_reports`: Amazon SP-API Reports (2021-06-30) — FBA customer returns, merchant
//! returns, seller feedback and FBA shipments — through one report runner.
//!
//! ```text
//!  window ─► for each configured report: runner (create ─► poll ─► document ─► gunzip)
//!                 ─► tab-separated rows ─► getOrder (purchase dates, cached) ─► map::*
//!          ─► every fact of the window sorted by event time ─► Emitter
//!
//!  GET_AMAZON_FULFILLED_SHIPMENTS_DATA_GENERAL ─► order.shipped (carrier, tracking, estimated arrival)
//!  GET_FBA_FULFILLMENT_CUSTOMER_RETURNS_DATA   ─► order.returned (fba)
//!  GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE   ─► order.returned (merchant)
//!  GET_SELLER_FEEDBACK_DATA                    ─► order.defect negative_feedback (1-2 stars)
//!  GET_V2_SELLER_PERFORMANCE_REPORT (JSON)     ─► account.health_metric (Amazon's own ODR,
//!                                                  late shipment, cancel, valid tracking and
//!                                                  on-time delivery rates: reference values)
//! ```
//!
//! Calls carry an LWA access token in `x-amz-access-token` (refreshed on 401/403, as the other
//! SP-API connectors). Each operation has its own client-side budget ([`OperationRates`]: the
//! documented createReport once a minute, burst 15, and so on); a 429 waits out its
//! Retry-After. The reports cover `[dataStartTime, dataEndTime)` = the sync window, in UTC.
//!
//! **Time basis.** Report times are ISO 8601 with an offset and kept in UTC; date-only values
//! (the feedback report's `Date`) are the start of that day in `time_zone` (the marketplace's
//! day, US Pacific by default), never before the order itself. Events carry
//! `source_tz = America/Los_Angeles`. Returns and feedback count on their order's purchase date
//! (the catalog books them by `placed_at`): the FBA returns and feedback reports carry no
//! purchase date, so it is read once per order with getOrder (`GET /orders/v0/orders/{id}`,
//! `payload.PurchaseDate`, `payload.FulfillmentChannel`) and cached; an order getOrder does
//! not know (404) dead-letters its row. Every fact of a window is handed over in event-time
//! order, so no report puts the processor's per-source lateness clock ahead of another's.
//!
//! **Ids** are stable (see [`map`]): a row re-read by the next sync's overlap is a duplicate.
//! An FBA shipment has the id `amazon:{order}:shipped`, the one `amazon_sp_orders` gives the
//! same order's shipment, so a shop running both counts each shipped order once (the first
//! seen wins; an order shipped in parts across two report windows keeps its first part).
//!
//! **What the reports cannot say.** The FBA shipments report has an `estimated-arrival-date`
//! (published as `deliver_by`) but no delivery time, so no `order.delivered` is published and
//! FBA on-time delivery cannot be computed from it; it has no promised ship date either, so the
//! ship date stands in for `ship_by`. Neither matters to the built-in catalog: late shipment,
//! valid tracking and on-time delivery count seller-fulfilled orders only, as Amazon's account
//! health does; FBA shipments feed return rate's and fill rate's units shipped, and carry
//! carrier and tracking number (`tracking_valid` = both present) for catalogs that want them.
//! A feedback that is later removed or re-rated stays counted (the report shows the current
//! rating; the processor counts the first).
//!
//! **Unconfirmed shapes.** The Reports API calls and the FBA returns and FBA shipments columns
//! follow Amazon's documentation (domain.md §6). The merchant returns columns (`Order ID`,
//! `Order date`, `Return request date`, `Amazon RMA ID`, `Merchant SKU`, `Return quantity`,
//! `Return reason`) and the seller feedback columns (`Date`, `Rating`, `Comments`, `Order ID`,
//! …) and their date formats could not be checked against a real document: the fixtures say
//! what is assumed, and a row that does not fit is dead-lettered naming the field and value.
//! The seller performance report's count fields and date format are Amazon's published JSON
//! Schema's, also unconfirmed against a real document (see [`performance`]).

mod map;
pub mod performance;
mod runner;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use kpiflow_core::SourceMetrics;
use kpiflow_schemas::{Channel, SourceTz};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::IngestError;
use crate::connector::{Connector, parse_section};
use crate::connectors::amazon_sp_orders::OrderLookup;
use crate::map::{Record, raw};
use crate::pull::{
    Emitter, LwaConfig, Mapped, Origin, PullConnector, PullDefaults, PullSettings, ReportPoll,
    TokenHeader, Window, lwa_client,
};

pub use crate::connectors::amazon_sp_orders::{OrderInfo, Orders};
pub use map::{Rows, fba_return, fba_shipment, feedback, merchant_return, tsv};
pub use runner::{Document, OperationRates, ReportRunner};

/// The registry name.
pub const NAME: &str = "amazon_sp_reports";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.amazon_sp_reports";
/// The config section (an array: one table per shop).
pub const SECTION: &str = "connectors.amazon_sp_reports";

/// Every 6 hours, re-reading the last 2 days (rows are added to these reports hours after
/// the fact; 2 days stays inside the processor's 3-day lateness allowance for order facts),
/// 30 days back at first, 7 days per report at most. `rate_limit` is the pre-signed
/// downloads' (the API operations have their own, [`OperationRates`]).
pub const DEFAULTS: PullDefaults = PullDefaults {
    base_url: "https://sellingpartnerapi-na.amazon.com",
    interval: Duration::from_secs(6 * 3600),
    overlap: Duration::from_secs(2 * 24 * 3600),
    initial_lookback: Duration::from_secs(30 * 24 * 3600),
    max_window: Duration::from_secs(7 * 24 * 3600),
    rate_limit: None,
};

/// The report types this connector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// `GET_AMAZON_FULFILLED_SHIPMENTS_DATA_GENERAL` → `order.shipped`.
    FbaShipments,
    /// `GET_FBA_FULFILLMENT_CUSTOMER_RETURNS_DATA` → `order.returned`.
    FbaReturns,
    /// `GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE` → `order.returned`.
    MerchantReturns,
    /// `GET_SELLER_FEEDBACK_DATA` → `order.defect` (1-2 stars).
    SellerFeedback,
    /// `GET_V2_SELLER_PERFORMANCE_REPORT` → `account.health_metric` (reference values for
    /// the processor's `*_vs_amazon` cross-checks).
    SellerPerformance,
}

impl ReportKind {
    /// Every kind, the default `reports`.
    pub const ALL: [ReportKind; 5] = [
        ReportKind::FbaShipments,
        ReportKind::FbaReturns,
        ReportKind::MerchantReturns,
        ReportKind::SellerFeedback,
        ReportKind::SellerPerformance,
    ];

    /// The reports of facts (returns, feedback, shipments): every kind but the account
    /// health figures.
    pub const FACTS: [ReportKind; 4] = [
        ReportKind::FbaShipments,
        ReportKind::FbaReturns,
        ReportKind::MerchantReturns,
        ReportKind::SellerFeedback,
    ];

    /// The SP-API `reportType`.
    pub fn report_type(self) -> &'static str {
        match self {
            ReportKind::FbaShipments => "GET_AMAZON_FULFILLED_SHIPMENTS_DATA_GENERAL",
            ReportKind::FbaReturns => "GET_FBA_FULFILLMENT_CUSTOMER_RETURNS_DATA",
            ReportKind::MerchantReturns => "GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE",
            ReportKind::SellerFeedback => "GET_SELLER_FEEDBACK_DATA",
            ReportKind::SellerPerformance => performance::REPORT_TYPE,
        }
    }
}

fn all_reports() -> Vec<ReportKind> {
    ReportKind::ALL.to_vec()
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_poll_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

/// One `[[connectors.amazon_sp_reports]]` table: one seller account (shop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmazonReportsConfig {
    /// The shop id events carry (the Kafka key).
    pub shop: String,
    /// The marketplace (`marketplaceIds`). Default `"ATVPDKIKX0DER"` (Amazon US).
    #[serde(default = "crate::pull::settings::defaults::amazon_us")]
    pub marketplace: String,
    /// Which reports to read: `"fba_shipments"`, `"fba_returns"`, `"merchant_returns"`,
    /// `"seller_feedback"`, `"seller_performance"` (Amazon's own Account Health figures, the
    /// reference of the processor's cross-checks). Default all five.
    #[serde(default = "all_reports")]
    pub reports: Vec<ReportKind>,
    /// The zone of date-only report values (the feedback `Date`, the days of the seller
    /// performance report's ranges). Default `"America/Los_Angeles"`.
    #[serde(default = "crate::pull::settings::defaults::us_pacific")]
    pub time_zone: String,
    /// Time between two status checks of a pending report. Default `"30s"`.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A report not DONE after this long fails the sync (the next one asks again). Default
    /// `"30m"`.
    #[serde(default = "default_poll_timeout", with = "humantime_serde")]
    pub poll_timeout: Duration,
    /// Client-side budgets per SP-API operation (defaults: the documented rates).
    #[serde(default)]
    pub rate_limits: OperationRates,
    /// Polling, HTTP and cursor settings (defaults: every 6 hours, 2 days overlap, 7 days per
    /// report; its `rate_limit` applies to the document downloads).
    #[serde(default)]
    pub pull: PullSettings,
    /// Login With Amazon credentials.
    pub auth: LwaConfig,
}

impl AmazonReportsConfig {
    /// Checks the values this connector owns (the `pull` table is checked when resolved).
    pub fn validate(&self) -> Result<(), IngestError> {
        let key = |k: &str| format!("{SECTION}.{k}");
        crate::pull::settings::non_empty(&key("shop"), &self.shop)?;
        crate::pull::settings::non_empty(&key("marketplace"), &self.marketplace)?;
        crate::pull::settings::time_zone(&key("time_zone"), &self.time_zone)?;
        let distinct: BTreeSet<_> = self.reports.iter().collect();
        if self.reports.is_empty() || distinct.len() != self.reports.len() {
            return Err(IngestError::config(
                key("reports"),
                format!("{:?}", self.reports),
                "must list each report at most once, at least one of \"fba_shipments\", \"fba_returns\", \"merchant_returns\", \"seller_feedback\", \"seller_performance\"",
            ));
        }
        self.poll().validate(SECTION)?;
        self.rate_limits.validate(SECTION)
    }

    fn poll(&self) -> ReportPoll {
        ReportPoll {
            interval: self.poll_interval,
            timeout: self.poll_timeout,
        }
    }
}

/// The reports source for one shop.
pub struct AmazonReports {
    cfg: AmazonReportsConfig,
    tz: chrono_tz::Tz,
    origin: Origin,
    runner: ReportRunner,
    orders: OrderLookup,
}

impl AmazonReports {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: AmazonReportsConfig) -> Result<PullConnector, IngestError> {
        cfg.validate()?;
        let tz = crate::pull::settings::time_zone(&format!("{SECTION}.time_zone"), &cfg.time_zone)?;
        let pull = cfg.pull.resolve(SECTION, &DEFAULTS)?;
        let metrics = SourceMetrics::new(NAME, &cfg.shop);
        let (http, _) = lwa_client(
            NAME,
            pull.http.clone(),
            &cfg.auth,
            &format!("{SECTION}.auth"),
            crate::pull::token::LWA_TOKEN_URL,
            metrics.clone(),
            TokenHeader::Named(reqwest::header::HeaderName::from_static(
                "x-amz-access-token",
            )),
        )?;
        let runner = ReportRunner::new(
            NAME,
            &http,
            cfg.marketplace.clone(),
            &cfg.rate_limits,
            cfg.poll(),
        );
        let orders = OrderLookup::new(NAME, http.with_rate_limit(Some(cfg.rate_limits.get_order)));
        let origin = Origin {
            shop: cfg.shop.clone(),
            channel: Channel::Amazon,
            marketplace: cfg.marketplace.clone(),
            source_tz: SourceTz::US_PACIFIC,
        };
        let source = AmazonReports {
            cfg,
            tz,
            origin,
            runner,
            orders,
        };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }

    /// Reads one report of `window` into `facts` (mapped rows with their raw form) and
    /// `dead` (rows that could not be mapped, with the reason).
    async fn report(
        &self,
        kind: ReportKind,
        window: Window,
        mapped: &mut Vec<Mapped>,
    ) -> Result<(), IngestError> {
        let doc = self.runner.run(kind.report_type(), window).await?;
        if kind == ReportKind::SellerPerformance {
            // A JSON document, not rows: one reference value per metric.
            for (facts, raw) in
                performance::seller_performance(&doc.bytes, &self.cfg.marketplace, self.tz)
            {
                let facts =
                    facts.map_err(|e| format!("{} {}: {e}", kind.report_type(), doc.report_id));
                mapped.push((facts, raw));
            }
            tracing::info!(connector = NAME, shop = %self.origin.shop, report = %doc.report_id, report_type = kind.report_type(), "report read");
            return Ok(());
        }
        let rows = tsv(&doc.bytes);
        tracing::info!(connector = NAME, shop = %self.origin.shop, report = %doc.report_id, report_type = kind.report_type(), rows = rows.rows.len(), bad = rows.bad.len(), "report read");
        for (reason, line) in rows.bad {
            let reason = format!("{} {}: {reason}", kind.report_type(), doc.report_id);
            mapped.push((Err(reason), line));
        }
        let ids = |col: &str, keep: &dyn Fn(&Value) -> bool| -> BTreeSet<String> {
            rows.rows
                .iter()
                .filter(|r| keep(r))
                .filter_map(|r| Record(r).str(col).ok().map(str::to_string))
                .collect()
        };
        match kind {
            ReportKind::FbaReturns => {
                let orders = self.orders.get(ids("order-id", &|_| true)).await?;
                for r in &rows.rows {
                    mapped.push((fba_return(r, &orders), raw(r)));
                }
            }
            ReportKind::SellerFeedback => {
                // Only negative feedback becomes a fact: only its orders are looked up.
                let negative = |r: &Value| map::rating(&Record(r)).is_ok_and(|s| s <= 2);
                let orders = self.orders.get(ids("Order ID", &negative)).await?;
                for r in &rows.rows {
                    mapped.push((feedback(r, &orders, self.tz), raw(r)));
                }
            }
            ReportKind::MerchantReturns => {
                for r in &rows.rows {
                    mapped.push((merchant_return(r, self.tz), raw(r)));
                }
            }
            ReportKind::FbaShipments => {
                // One row per shipped item: an order's rows become one shipment.
                let mut groups: Vec<(String, Vec<&Value>)> = Vec::new();
                let mut at: HashMap<String, usize> = HashMap::new();
                for r in &rows.rows {
                    let id = Record(r)
                        .str("amazon-order-id")
                        .unwrap_or_default()
                        .to_string();
                    let i = *at.entry(id.clone()).or_insert_with(|| {
                        groups.push((id, Vec::new()));
                        groups.len() - 1
                    });
                    groups[i].1.push(r);
                }
                for (_, group) in groups {
                    let raw_rows = Value::Array(group.iter().map(|v| (*v).clone()).collect());
                    mapped.push((fba_shipment(&group), raw(&raw_rows)));
                }
            }
            // Read above, as JSON.
            ReportKind::SellerPerformance => {}
        }
        Ok(())
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let mut mapped = Vec::new();
        for kind in &self.cfg.reports {
            self.report(*kind, window, &mut mapped).await?;
        }
        // One report's (or page's) facts must not make another's late.
        out.records_in_time_order(mapped).await
    }
}

crate::pull::impl_source!(AmazonReports);

/// The registry's constructor: one `[[connectors.amazon_sp_reports]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg: AmazonReportsConfig = parse_section(SECTION, section)?;
    Ok(Box::new(AmazonReports::build(cfg)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(extra: Value) -> Value {
        let mut t = json!({"shop": "shop-001", "auth": {"client_id": "env:A", "client_secret": "env:B", "refresh_token": "env:C"}});
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        t
    }

    fn check(extra: Value) -> String {
        match parse_section::<AmazonReportsConfig>(SECTION, table(extra)) {
            Ok(c) => c
                .validate()
                .map(|()| "ok".into())
                .unwrap_or_else(|e| e.to_string()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_read_every_report_at_the_documented_rates() {
        let c: AmazonReportsConfig = parse_section(SECTION, table(json!({}))).unwrap();
        c.validate().unwrap();
        assert_eq!(c.reports, ReportKind::ALL);
        assert_eq!(c.rate_limits.create_report.rate, 0.0167);
        assert_eq!(c.rate_limits.get_report.burst, 15);
        assert_eq!(c.marketplace, "ATVPDKIKX0DER");
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(
            check(json!({"reports": ["fba_returns", "fba_returns"]}))
                .starts_with("bad config: `connectors.amazon_sp_reports.reports` = [FbaReturns, FbaReturns]: must list each report at most once"),
            "{}",
            check(json!({"reports": ["fba_returns", "fba_returns"]}))
        );
        assert!(check(json!({"reports": ["returns"]})).starts_with(
            "bad config: `connectors.amazon_sp_reports.reports[0]` = \"returns\": unknown variant `returns`"
        ));
        assert!(
            check(json!({"time_zone": "PST"}))
                .starts_with("bad config: `connectors.amazon_sp_reports.time_zone` = \"PST\"")
        );
        assert_eq!(
            check(json!({"rate_limits": {"get_order": {"rate": 0.0, "burst": 1}}})),
            "bad config: `connectors.amazon_sp_reports.rate_limits.get_order` = { rate = 0, burst = 1 }: rate must be a positive number of requests per second, got 0"
        );
        assert!(
            check(json!({"poll_interval": "1m", "poll_timeout": "10s"}))
                .starts_with("bad config: `connectors.amazon_sp_reports.poll_timeout` = \"10s\"")
        );
        assert!(check(json!({"shpo": "x"})).contains("unknown field `shpo`"));
    }
}
