//! `google_ads`: Google Ads API GAQL search — one row per campaign and day, re-pulled over a
//! trailing window (conversions keep arriving for the conversion window).
//!
//! ```text
//!  POST /{api_version}/customers/{customer_id}/googleAds:search
//!       {"query": "SELECT segments.date, campaign.id, metrics.… FROM campaign
//!                  WHERE segments.date BETWEEN 'from' AND 'to'", "pageToken": …}
//!      └─ results[] ─► map::row ─► ad.performance      └─ nextPageToken ─► next page
//! ```
//!
//! Shapes: the Google Ads API REST reference (`GoogleAdsService.Search`, JSON field names in
//! lowerCamelCase, int64 values as strings, zero metrics omitted) and
//! `../shared/reference/domain.md` §4. Calls carry `Authorization: Bearer` (OAuth 2.0
//! refresh-token grant at `https://oauth2.googleapis.com/token`), `developer-token` and, for
//! accounts reached through a manager, `login-customer-id`. Dates are the account's days
//! (`time_zone`, fixed when the account was created); cost is `metrics.costMicros / 1e6`,
//! exact. GAQL has no report time, so a row's `as_of` is the end of the sync window that read
//! it; its id `google_ads:{customer}:{campaign}:{date}:{as_of ms}`.

mod map;

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use kpiflow_core::SourceMetrics;
use kpiflow_schemas::{Channel, SourceTz};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::IngestError;
use crate::connector::{Connector, parse_section};
use crate::map::{AdContext, raw};
use crate::pull::token::GOOGLE_TOKEN_URL;
use crate::pull::{
    Emitter, HttpClient, LwaConfig, Origin, PullConnector, PullDefaults, PullSettings, RateLimit,
    Request, SecretRef, Source, TokenHeader, Window, lwa_client,
};

pub use map::row as map_row;

/// The registry name.
pub const NAME: &str = "google_ads";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.google_ads";
/// The config section (an array: one table per shop and customer).
pub const SECTION: &str = "connectors.google_ads";

/// Conversions are restated for days; 14 days re-pulled by default.
pub const DEFAULTS: PullDefaults = PullDefaults {
    base_url: "https://googleads.googleapis.com",
    interval: Duration::from_secs(6 * 3600),
    overlap: Duration::from_secs(14 * 24 * 3600),
    initial_lookback: Duration::from_secs(14 * 24 * 3600),
    max_window: Duration::from_secs(31 * 24 * 3600),
    rate_limit: Some(RateLimit {
        rate: 1.0,
        burst: 5,
    }),
};

fn d_channel() -> Channel {
    Channel::Shopify
}
fn d_window() -> String {
    "30d".into()
}
fn d_version() -> String {
    "v21".into()
}

/// One `[[connectors.google_ads]]` table: one Google Ads customer (account) of one shop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleAdsConfig {
    /// The shop id events carry (the Kafka key).
    pub shop: String,
    /// The customer id, ten digits (dashes allowed: `123-456-7890`).
    pub customer_id: String,
    /// The manager account's id when the customer is reached through one.
    #[serde(default)]
    pub login_customer_id: Option<String>,
    /// The sales channel the campaigns drive traffic to. Default `"shopify"`.
    #[serde(default = "d_channel")]
    pub channel: Channel,
    /// Marketplace id events carry. Default `"US"`.
    #[serde(default = "crate::pull::settings::defaults::us")]
    pub marketplace: String,
    /// The account's time zone. Default `"America/Los_Angeles"`.
    #[serde(default = "crate::pull::settings::defaults::us_pacific")]
    pub time_zone: String,
    /// The account's currency. Default `"USD"`.
    #[serde(default = "crate::pull::settings::defaults::usd")]
    pub currency: String,
    /// The conversion window the account's conversion actions use, as a label. Default `"30d"`.
    #[serde(default = "d_window")]
    pub attribution_window: String,
    /// The API version in the path. Default `"v21"`.
    #[serde(default = "d_version")]
    pub api_version: String,
    /// The developer token (`env:NAME` or `file:/path`).
    pub developer_token: SecretRef,
    /// Polling, HTTP and cursor settings (defaults: every 6 hours, 14 days re-pulled).
    #[serde(default)]
    pub pull: PullSettings,
    /// OAuth client and refresh token (`token_url` defaults to Google's).
    pub auth: LwaConfig,
}

/// The GAQL source for one customer.
pub struct GoogleAds {
    customer: String,
    cfg: GoogleAdsConfig,
    tz: chrono_tz::Tz,
    origin: Origin,
    http: HttpClient,
}

impl GoogleAds {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: GoogleAdsConfig) -> Result<PullConnector, IngestError> {
        let key = |k: &str| format!("{SECTION}.{k}");
        let customer: String = cfg.customer_id.chars().filter(|c| *c != '-').collect();
        if customer.len() != 10 || !customer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IngestError::config(
                key("customer_id"),
                format!("{:?}", cfg.customer_id),
                "expected ten digits, e.g. \"123-456-7890\"",
            ));
        }
        crate::pull::settings::non_empty(&key("shop"), &cfg.shop)?;
        let tz = crate::pull::settings::time_zone(&key("time_zone"), &cfg.time_zone)?;
        let pull = cfg.pull.resolve(SECTION, &DEFAULTS)?;
        let metrics = SourceMetrics::new(NAME, &cfg.shop);
        let (http, _) = lwa_client(
            NAME,
            pull.http.clone(),
            &cfg.auth,
            &key("auth"),
            GOOGLE_TOKEN_URL,
            metrics.clone(),
            TokenHeader::Bearer,
        )?;
        let dev = cfg.developer_token.resolve(&key("developer_token"))?;
        let mut http = http.with_header("developer-token", dev.expose())?;
        if let Some(login) = &cfg.login_customer_id {
            let login: String = login.chars().filter(|c| *c != '-').collect();
            http = http.with_header("login-customer-id", &login)?;
        }
        let origin = Origin {
            shop: cfg.shop.clone(),
            channel: cfg.channel,
            marketplace: cfg.marketplace.clone(),
            source_tz: SourceTz(tz),
        };
        let source = GoogleAds {
            customer,
            cfg,
            tz,
            origin,
            http,
        };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let day = |t: DateTime<Utc>| t.with_timezone(&self.tz).date_naive();
        let (from, to) = (
            day(window.from),
            day(window.to - chrono::TimeDelta::seconds(1)).max(day(window.from)),
        );
        let query = format!(
            "SELECT segments.date, campaign.id, metrics.impressions, metrics.clicks, \
             metrics.cost_micros, metrics.conversions, metrics.conversions_value \
             FROM campaign WHERE segments.date BETWEEN '{from}' AND '{to}'"
        );
        let path = format!(
            "{}/customers/{}/googleAds:search",
            self.cfg.api_version, self.customer
        );
        let ctx = AdContext {
            platform: NAME,
            account: &self.customer,
            currency: &self.cfg.currency,
            tz: self.tz,
            window: &self.cfg.attribution_window,
            as_of: window.to,
        };
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({ "query": query });
            if let Some(t) = &token {
                body["pageToken"] = Value::String(t.clone());
            }
            let page: Page = self
                .http
                .send(&Request::post(path.clone()).json(&body))
                .await?
                .json(NAME)?;
            for r in &page.results {
                out.record(map::row(r, &ctx), &raw(r)).await?;
            }
            match page.next_page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(()),
            }
        }
    }
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    results: Vec<Value>,
    #[serde(rename = "nextPageToken")]
    next_page_token: Option<String>,
}

impl Source for GoogleAds {
    fn name(&self) -> &'static str {
        NAME
    }

    fn component(&self) -> &'static str {
        COMPONENT
    }

    fn origin(&self) -> &Origin {
        &self.origin
    }

    fn sync<'a, 'p: 'a>(
        &'a self,
        window: Window,
        out: &'a mut Emitter<'p>,
    ) -> BoxFuture<'a, Result<(), IngestError>> {
        Box::pin(self.read(window, out))
    }
}

/// The registry's constructor: one `[[connectors.google_ads]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg: GoogleAdsConfig = parse_section(SECTION, section)?;
    Ok(Box::new(GoogleAds::build(cfg)?))
}
