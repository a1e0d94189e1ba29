//! `amazon_sp_finances`: Amazon SP-API Finances v0 (`listFinancialEvents`) — refunds, A-to-z
//! claims, chargebacks and the fee lines of sales, refunds and the account.
//!
//! ```text
//!  GET /finances/v0/financialEvents?PostedAfter=from&PostedBefore=to&MaxResultsPerPage=…
//!      └─ payload.NextToken ─► GET /finances/v0/financialEvents?NextToken=… (until none)
//!      └─ payload.FinancialEvents.*EventList[] (numbers kept as written: exact amounts)
//!          ─► getOrder (purchase dates of refunded and claimed orders, cached) ─► map::*
//!          ─► every fact of the window sorted by event time ─► Emitter
//!
//!  ShipmentEventList        ─► order.fee (sale) per fee line
//!  RefundEventList          ─► order.refunded + order.fee (refund) per fee line
//!  GuaranteeClaimEventList  ─► order.defect a_to_z_claim
//!  ChargebackEventList      ─► order.defect chargeback
//!  ServiceFeeEventList      ─► order.fee (account) per fee line
//!  AdjustmentEventList      ─► read, not published (reimbursements and reserves: no canonical event yet)
//! ```
//!
//! Calls carry an LWA access token in `x-amz-access-token` (refreshed on 401/403, as the other
//! SP-API connectors). listFinancialEvents is budgeted at its documented 0.5 requests/s with
//! bursts of 30 (the `pull.rate_limit`), getOrder on its own budget (`get_order_rate_limit`);
//! a 429 waits out its Retry-After. A NextToken page is asked with the token alone, as
//! getOrders pages are. Amazon wants `PostedBefore` at least two minutes in the past, so a
//! window ends then.
//!
//! **Exact amounts.** `CurrencyAmount` is a JSON number: each event is read with
//! [`crate::map::exact_numbers`], which keeps the digits Amazon wrote, so no amount passes
//! through `f64`.
//!
//! **Time basis.** Events are timed at their `PostedDate` (UTC; events carry `source_tz =
//! America/Los_Angeles`). Refunds and defects count on their order's purchase date (the
//! catalog books them by `placed_at`), which financial events lack: it is read once per order
//! with getOrder, cached, exactly as `amazon_sp_reports` does; an order getOrder does not know
//! (404) dead-letters its event. Fees count on their posted date (the settlement basis) and
//! need no lookup. Events post days after the order and refunds and claims weeks later: the
//! default overlap re-reads 2 days, within the processor's lateness allowance for order facts,
//! and a window's facts are handed over in event-time order.
//!
//! **Ids** are stable (see [`map`]): an event re-read by the next sync's overlap, or after a
//! restart from the cursor, is a duplicate.
//!
//! **Unconfirmed shapes.** The documented `ServiceFeeEvent` has no `PostedDate`: a service fee
//! is timed at the start of the window it was read in (at most `max_window` early), and its id
//! is a hash of its content plus its rank among identical events of the window, so two
//! identical fees read in different windows would count once. Whether a NextToken request may
//! repeat the other parameters, and the exact sign of every fee type, are as far as known;
//! the fixtures under `ingest/fixtures/amazon_sp_finances/` say what is assumed, and an event
//! that does not fit is dead-lettered naming the field and value.

mod map;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kpiflow_core::SourceMetrics;
use kpiflow_schemas::{Channel, DefectKind, SourceTz};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::IngestError;
use crate::connector::{Connector, parse_section};
use crate::connectors::amazon_sp_orders::{OrderLookup, iso};
use crate::map::{Record, exact_numbers};
use crate::pull::{
    Emitter, HttpClient, LwaConfig, Mapped, Origin, PullConnector, PullDefaults, PullSettings,
    RateLimit, Request, TokenHeader, Window, lwa_client,
};

pub use map::{claim, fee_kind, refund, service_fee, shipment};

/// The registry name.
pub const NAME: &str = "amazon_sp_finances";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.amazon_sp_finances";
/// The config section (an array: one table per shop).
pub const SECTION: &str = "connectors.amazon_sp_finances";

/// Every hour, re-reading the last 2 days (within the processor's 3-day lateness allowance for
/// order facts), 30 days back at first, 7 days per request range at most; listFinancialEvents'
/// documented 0.5 requests/s with bursts of 30.
pub const DEFAULTS: PullDefaults = PullDefaults {
    base_url: "https://sellingpartnerapi-na.amazon.com",
    interval: Duration::from_secs(3600),
    overlap: Duration::from_secs(2 * 24 * 3600),
    initial_lookback: Duration::from_secs(30 * 24 * 3600),
    max_window: Duration::from_secs(7 * 24 * 3600),
    rate_limit: Some(RateLimit {
        rate: 0.5,
        burst: 30,
    }),
};

fn default_page_size() -> u32 {
    100
}

fn default_get_order() -> RateLimit {
    RateLimit {
        rate: 0.5,
        burst: 30,
    }
}

/// One `[[connectors.amazon_sp_finances]]` table: one seller account (shop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmazonFinancesConfig {
    /// The shop id events carry (the Kafka key).
    pub shop: String,
    /// The marketplace the events are booked to. Default `"ATVPDKIKX0DER"` (Amazon US).
    #[serde(default = "crate::pull::settings::defaults::amazon_us")]
    pub marketplace: String,
    /// `MaxResultsPerPage`, 1 to 100. Default `100`.
    #[serde(default = "default_page_size")]
    pub max_results_per_page: u32,
    /// getOrder's budget (purchase dates of refunded and claimed orders). Default
    /// `{ rate = 0.5, burst = 30 }`.
    #[serde(default = "default_get_order")]
    pub get_order_rate_limit: RateLimit,
    /// Polling, HTTP and cursor settings (defaults: every hour, 2 days overlap, 7 days per
    /// range, 0.5 requests/s with bursts of 30).
    #[serde(default)]
    pub pull: PullSettings,
    /// Login With Amazon credentials.
    pub auth: LwaConfig,
}

impl AmazonFinancesConfig {
    /// Checks the values this connector owns (the `pull` table is checked when resolved).
    pub fn validate(&self) -> Result<(), IngestError> {
        let key = |k: &str| format!("{SECTION}.{k}");
        crate::pull::settings::non_empty(&key("shop"), &self.shop)?;
        crate::pull::settings::non_empty(&key("marketplace"), &self.marketplace)?;
        crate::pull::settings::within(
            &key("max_results_per_page"),
            self.max_results_per_page,
            1..=100,
        )?;
        if let Some(problem) = self.get_order_rate_limit.problem() {
            let l = self.get_order_rate_limit;
            return Err(IngestError::config(
                key("get_order_rate_limit"),
                format!("{{ rate = {}, burst = {} }}", l.rate, l.burst),
                problem,
            ));
        }
        Ok(())
    }
}

/// The financial events source for one shop.
pub struct AmazonFinances {
    cfg: AmazonFinancesConfig,
    origin: Origin,
    http: HttpClient,
    orders: OrderLookup,
}

#[derive(Deserialize)]
struct Page {
    payload: Payload,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
    #[serde(rename = "FinancialEvents", default)]
    events: Lists,
}

/// The lists kpiflow reads, each event kept as its raw text (exact numbers, and the
/// dead-letter payload as Amazon sent it).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Lists {
    #[serde(default)]
    shipment_event_list: Vec<Box<RawValue>>,
    #[serde(default)]
    refund_event_list: Vec<Box<RawValue>>,
    #[serde(default)]
    guarantee_claim_event_list: Vec<Box<RawValue>>,
    #[serde(default)]
    chargeback_event_list: Vec<Box<RawValue>>,
    #[serde(default)]
    service_fee_event_list: Vec<Box<RawValue>>,
    #[serde(default)]
    adjustment_event_list: Vec<Box<RawValue>>,
}

/// Which list an event came from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum List {
    Shipment,
    Refund,
    GuaranteeClaim,
    Chargeback,
    ServiceFee,
}

impl List {
    fn name(self) -> &'static str {
        match self {
            List::Shipment => "ShipmentEventList",
            List::Refund => "RefundEventList",
            List::GuaranteeClaim => "GuaranteeClaimEventList",
            List::Chargeback => "ChargebackEventList",
            List::ServiceFee => "ServiceFeeEventList",
        }
    }

    /// Whether its facts need their order's purchase date.
    fn dated_by_order(self) -> bool {
        matches!(self, List::Refund | List::GuaranteeClaim | List::Chargeback)
    }
}

/// An event read: its list, its text, and the event parsed with exact numbers.
struct Read {
    list: List,
    raw: Box<RawValue>,
    value: Result<Value, String>,
}

impl AmazonFinances {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: AmazonFinancesConfig) -> Result<PullConnector, IngestError> {
        cfg.validate()?;
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
        let orders = OrderLookup::new(
            NAME,
            http.clone().with_rate_limit(Some(cfg.get_order_rate_limit)),
        );
        let origin = Origin {
            shop: cfg.shop.clone(),
            channel: Channel::Amazon,
            marketplace: cfg.marketplace.clone(),
            source_tz: SourceTz::US_PACIFIC,
        };
        let source = AmazonFinances {
            cfg,
            origin,
            http,
            orders,
        };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }

    /// Every event of `window`, following NextToken to the last page.
    async fn pages(&self, window: Window) -> Result<Vec<Read>, IngestError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let req = Request::get("finances/v0/financialEvents");
            let req = match &next {
                Some(token) => req.query("NextToken", token),
                None => req
                    .query("PostedAfter", iso(window.from))
                    .query("PostedBefore", iso(window.to))
                    .query(
                        "MaxResultsPerPage",
                        self.cfg.max_results_per_page.to_string(),
                    ),
            };
            let page: Page = self.http.send(&req).await?.json(NAME)?;
            let l = page.payload.events;
            tracing::debug!(connector = NAME, shop = %self.origin.shop, adjustments = l.adjustment_event_list.len(), "AdjustmentEventList read, not published");
            for (list, events) in [
                (List::Shipment, l.shipment_event_list),
                (List::Refund, l.refund_event_list),
                (List::GuaranteeClaim, l.guarantee_claim_event_list),
                (List::Chargeback, l.chargeback_event_list),
                (List::ServiceFee, l.service_fee_event_list),
            ] {
                for raw in events {
                    let value = exact_numbers(raw.get())
                        .map_err(|e| format!("{}: not JSON: {e}", list.name()));
                    out.push(Read { list, raw, value });
                }
            }
            match page.payload.next_token {
                Some(t) if !t.is_empty() => next = Some(t),
                _ => return Ok(out),
            }
        }
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let events = self.pages(window).await?;
        let ids: BTreeSet<String> = events
            .iter()
            .filter(|e| e.list.dated_by_order())
            .filter_map(|e| e.value.as_ref().ok())
            .filter_map(|v| Record(v).str("AmazonOrderId").ok().map(str::to_string))
            .collect();
        let orders = self.orders.get(ids).await?;
        // Identical service fees of one window are told apart by their rank.
        let mut occurrences: HashMap<String, u32> = HashMap::new();
        let mut mapped: Vec<Mapped> = Vec::with_capacity(events.len());
        for e in events {
            let facts = e.value.and_then(|v| match e.list {
                List::Shipment => shipment(&v),
                List::Refund => refund(&v, &orders),
                List::GuaranteeClaim => claim(&v, &orders, DefectKind::AToZClaim),
                List::Chargeback => claim(&v, &orders, DefectKind::Chargeback),
                List::ServiceFee => {
                    let n = occurrences.entry(v.to_string()).or_default();
                    let facts = service_fee(&v, window.from, *n);
                    *n += 1;
                    facts
                }
            });
            let facts = facts.map_err(|reason| format!("{}: {reason}", e.list.name()));
            mapped.push((facts, e.raw.get().as_bytes().to_vec()));
        }
        // One report's (or page's) facts must not make another's late.
        out.records_in_time_order(mapped).await
    }
}

crate::pull::impl_source!(AmazonFinances {
    fn window_end(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - TimeDelta::minutes(2)
    }
});

/// The registry's constructor: one `[[connectors.amazon_sp_finances]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg: AmazonFinancesConfig = parse_section(SECTION, section)?;
    Ok(Box::new(AmazonFinances::build(cfg)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(extra: Value) -> String {
        let mut t = json!({"shop": "shop-001", "auth": {"client_id": "env:A", "client_secret": "env:B", "refresh_token": "env:C"}});
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        match parse_section::<AmazonFinancesConfig>(SECTION, t) {
            Ok(c) => c
                .validate()
                .map(|()| "ok".into())
                .unwrap_or_else(|e| e.to_string()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_key() {
        assert_eq!(check(json!({})), "ok");
        assert_eq!(
            check(json!({"max_results_per_page": 0})),
            "bad config: `connectors.amazon_sp_finances.max_results_per_page` = 0: must be between 1 and 100"
        );
        assert_eq!(
            check(json!({"get_order_rate_limit": {"rate": 0.0, "burst": 1}})),
            "bad config: `connectors.amazon_sp_finances.get_order_rate_limit` = { rate = 0, burst = 1 }: rate must be a positive number of requests per second, got 0"
        );
        assert!(
            check(json!({"shop": " "}))
                .starts_with("bad config: `connectors.amazon_sp_finances.shop` = \" \"")
        );
        assert!(check(json!({"shpo": "x"})).contains("unknown field `shpo`"));
    }
}
