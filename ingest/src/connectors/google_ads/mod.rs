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

use kpiflow_schemas::Channel;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::IngestError;
use crate::connector::Connector;
use crate::map::raw;
use crate::pull::token::GOOGLE_TOKEN_URL;
use crate::pull::{
    AdAccountConfig, AdPlatform, HttpClient, LwaConfig, Platform, PullConnector, PullDefaults,
    ReadReport, ReportJob, Request, SecretRef, TokenHeader, lwa_client, trailing_defaults,
};

pub use map::row as map_row;

/// The registry name.
pub const NAME: &str = "google_ads";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.google_ads";
/// The config section (an array: one table per shop and customer).
pub const SECTION: &str = "connectors.google_ads";

/// Conversions are restated for days; 14 days re-pulled by default.
pub const DEFAULTS: PullDefaults = trailing_defaults("https://googleads.googleapis.com", 31, 1.0);

/// One `[[connectors.google_ads]]` table: one Google Ads customer (account) of one shop.
pub type GoogleAdsConfig = AdAccountConfig<GoogleAdsKeys>;

fn d_channel() -> Channel {
    Channel::Shopify
}
fn d_version() -> String {
    "v21".into()
}

/// The keys only a `[[connectors.google_ads]]` table has (the shared ones:
/// [`AdAccountConfig`]; `attribution_window` defaults to `"30d"`, the conversion window the
/// account's conversion actions use, as a label).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleAdsKeys {
    /// The customer id, ten digits (dashes allowed: `123-456-7890`).
    pub customer_id: String,
    /// The manager account's id when the customer is reached through one.
    #[serde(default)]
    pub login_customer_id: Option<String>,
    /// The sales channel the campaigns drive traffic to. Default `"shopify"`.
    #[serde(default = "d_channel")]
    pub channel: Channel,
    /// The API version in the path. Default `"v21"`.
    #[serde(default = "d_version")]
    pub api_version: String,
    /// The developer token (`env:NAME` or `file:/path`).
    pub developer_token: SecretRef,
    /// OAuth client and refresh token (`token_url` defaults to Google's).
    pub auth: LwaConfig,
}

/// `123-456-7890` as the API writes it.
fn digits(id: &str) -> String {
    id.chars().filter(|c| *c != '-').collect()
}

impl AdPlatform for GoogleAdsKeys {
    const PLATFORM: Platform = Platform::new(NAME, COMPONENT, SECTION, DEFAULTS);
    const ATTRIBUTION_WINDOW: &'static str = "30d";

    fn account(cfg: &GoogleAdsConfig) -> Result<(String, Channel), IngestError> {
        let customer = digits(&cfg.platform.customer_id);
        if customer.len() != 10 || !customer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IngestError::config(
                Self::key("customer_id"),
                format!("{:?}", cfg.platform.customer_id),
                "expected ten digits, e.g. \"123-456-7890\"",
            ));
        }
        Ok((customer, cfg.platform.channel))
    }
}

/// The GAQL reader for one customer.
pub struct GoogleAds {
    customer: String,
    api_version: String,
    http: HttpClient,
}

impl GoogleAds {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: GoogleAdsConfig) -> Result<PullConnector, IngestError> {
        cfg.connector(|keys, pull, metrics| {
            let (http, _) = lwa_client(
                NAME,
                pull.http.clone(),
                &keys.auth,
                &GoogleAdsKeys::key("auth"),
                GOOGLE_TOKEN_URL,
                metrics.clone(),
                TokenHeader::Bearer,
            )?;
            let dev = keys
                .developer_token
                .resolve(&GoogleAdsKeys::key("developer_token"))?;
            let mut http = http.with_header("developer-token", dev.expose())?;
            if let Some(login) = &keys.login_customer_id {
                http = http.with_header("login-customer-id", &digits(login))?;
            }
            Ok(GoogleAds {
                customer: digits(&keys.customer_id),
                api_version: keys.api_version,
                http,
            })
        })
    }
}

impl ReadReport for GoogleAds {
    async fn read(&self, job: ReportJob<'_, '_>) -> Result<(), IngestError> {
        let (from, to) = job.days;
        let query = format!(
            "SELECT segments.date, campaign.id, metrics.impressions, metrics.clicks, \
             metrics.cost_micros, metrics.conversions, metrics.conversions_value \
             FROM campaign WHERE segments.date BETWEEN '{from}' AND '{to}'"
        );
        let path = format!(
            "{}/customers/{}/googleAds:search",
            self.api_version, self.customer
        );
        let ctx = job.account.context(job.window.to);
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
                job.out.record(map::row(r, &ctx), &raw(r)).await?;
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

/// The registry's constructor: one `[[connectors.google_ads]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    Ok(Box::new(GoogleAds::build(GoogleAdsConfig::parse(
        section,
    )?)?))
}
