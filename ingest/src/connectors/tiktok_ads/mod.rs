//! `tiktok_ads`: TikTok for Business Marketing API, synchronous integrated report — daily
//! campaign rows, re-pulled over a trailing window.
//!
//! ```text
//!  GET /open_api/v1.3/report/integrated/get/?advertiser_id=…&report_type=BASIC
//!      &data_level=AUCTION_CAMPAIGN&dimensions=["campaign_id","stat_time_day"]
//!      &metrics=["spend","impressions","clicks","complete_payment","total_complete_payment_rate"]
//!      &start_date=…&end_date=…&page=N&page_size=…          (header Access-Token)
//!      └─ {"code": 0, "data": {"list": [{dimensions, metrics}], "page_info": {page, total_page}}}
//! ```
//!
//! Assumed shapes, from the TikTok API for Business documentation (business-api.tiktok.com
//! portal: "Reporting > Synchronous reports", "Metrics: basic / attribution", "Return
//! codes"); domain.md has no TikTok section, so these are the documented shapes as understood
//! here, not recorded traffic:
//! - every answer is HTTP 200 with `code` 0 on success; `code` 40100 means "too many requests"
//!   (handled like a 429), 40104 / 40105 an invalid or expired access token (the long-lived
//!   advertiser token cannot be refreshed here: the sync fails naming the code), 5xxxx a
//!   transient server error (retried by the next sync); other codes fail the sync;
//! - `dimensions.stat_time_day` is `"YYYY-MM-DD 00:00:00"` in the advertiser's time zone;
//!   metrics are strings; `complete_payment` counts purchases and
//!   `total_complete_payment_rate` is their total value ("Total complete payment value").
//!
//! A row's `as_of` is the end of the sync window that read it; its id
//! `tiktok_ads:{advertiser}:{campaign}:{date}:{as_of ms}`.

mod map;

use std::sync::Arc;
use std::time::Duration;

use kpiflow_schemas::Channel;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::IngestError;
use crate::connector::Connector;
use crate::map::raw;
use crate::pull::{
    AdAccountConfig, AdPlatform, HttpClient, Platform, PullConnector, PullDefaults, ReadReport,
    ReportJob, Request, SecretRef, StaticToken, TokenHeader, settings, trailing_defaults,
};

pub use map::row as map_row;

/// The registry name.
pub const NAME: &str = "tiktok_ads";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.tiktok_ads";
/// The config section (an array: one table per shop and advertiser).
pub const SECTION: &str = "connectors.tiktok_ads";

/// Attribution settles within days; 14 re-pulled by default.
pub const DEFAULTS: PullDefaults = trailing_defaults("https://business-api.tiktok.com", 30, 1.0);

/// One `[[connectors.tiktok_ads]]` table: one advertiser of one shop.
pub type TiktokAdsConfig = AdAccountConfig<TiktokAdsKeys>;

fn d_channel() -> Channel {
    Channel::TiktokShop
}
fn d_page_size() -> u32 {
    100
}

/// The keys only a `[[connectors.tiktok_ads]]` table has (the shared ones:
/// [`AdAccountConfig`]; `attribution_window` defaults to `"7d_click_1d_view"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiktokAdsKeys {
    /// The advertiser id (digits).
    pub advertiser_id: String,
    /// The sales channel the campaigns drive traffic to. Default `"tiktok_shop"`.
    #[serde(default = "d_channel")]
    pub channel: Channel,
    /// Rows per page, 1 to 1000. Default `100`.
    #[serde(default = "d_page_size")]
    pub page_size: u32,
    /// The advertiser's long-lived access token (`env:NAME` or `file:/path`).
    pub access_token: SecretRef,
}

impl AdPlatform for TiktokAdsKeys {
    const PLATFORM: Platform = Platform::new(NAME, COMPONENT, SECTION, DEFAULTS);
    const ATTRIBUTION_WINDOW: &'static str = "7d_click_1d_view";

    fn account(cfg: &TiktokAdsConfig) -> Result<(String, Channel), IngestError> {
        let keys = &cfg.platform;
        let id = &keys.advertiser_id;
        settings::digits(
            &Self::key("advertiser_id"),
            id,
            "expected the advertiser's digits",
        )?;
        settings::within(&Self::key("page_size"), keys.page_size, 1..=1000)?;
        Ok((id.clone(), keys.channel))
    }
}

/// The report reader for one advertiser.
pub struct TiktokAds {
    keys: TiktokAdsKeys,
    http: HttpClient,
}

impl TiktokAds {
    /// Validates `cfg`, reads the token and builds the connector.
    pub fn build(cfg: TiktokAdsConfig) -> Result<PullConnector, IngestError> {
        cfg.connector(|keys, pull, metrics| {
            let token = keys
                .access_token
                .resolve(&TiktokAdsKeys::key("access_token"))?;
            let http = HttpClient::new(NAME, pull.http.clone(), metrics.clone())?
                .with_token(
                    Arc::new(StaticToken(token)),
                    TokenHeader::Named(HeaderName::from_static("access-token")),
                )
                .with_throttle_detector(throttled);
            Ok(TiktokAds { keys, http })
        })
    }
}

impl ReadReport for TiktokAds {
    async fn read(&self, job: ReportJob<'_, '_>) -> Result<(), IngestError> {
        let (start, end) = job.days;
        let ctx = job.account.context(job.window.to);
        let mut page_no = 1u32;
        loop {
            let req = Request::get("open_api/v1.3/report/integrated/get/")
                .query("advertiser_id", &self.keys.advertiser_id)
                .query("report_type", "BASIC")
                .query("data_level", "AUCTION_CAMPAIGN")
                .query("dimensions", r#"["campaign_id","stat_time_day"]"#)
                .query(
                    "metrics",
                    r#"["spend","impressions","clicks","complete_payment","total_complete_payment_rate"]"#,
                )
                .query("start_date", start.to_string())
                .query("end_date", end.to_string())
                .query("page", page_no.to_string())
                .query("page_size", self.keys.page_size.to_string());
            let page: Envelope = self.http.send(&req).await?.json(NAME)?;
            if page.code != 0 {
                return Err(IngestError::External {
                    system: NAME.into(),
                    detail: format!(
                        "{}: code {}: {}{}",
                        req.describe(),
                        page.code,
                        page.message,
                        match page.code {
                            40104 | 40105 => " (the access token was refused: issue a new one)",
                            _ => "",
                        }
                    ),
                    retryable: page.code >= 50000,
                });
            }
            let data = page.data.unwrap_or_default();
            for r in &data.list {
                job.out.record(map::row(r, &ctx), &raw(r)).await?;
            }
            let total = data.page_info.map_or(1, |p| p.total_page);
            if page_no >= total {
                return Ok(());
            }
            page_no += 1;
        }
    }
}

/// TikTok's "too many requests": HTTP 200 with `code` 40100.
fn throttled(_: StatusCode, _: &HeaderMap, body: &[u8]) -> Option<Option<Duration>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    (v["code"].as_i64() == Some(40100)).then_some(None)
}

#[derive(Deserialize)]
struct Envelope {
    code: i64,
    #[serde(default)]
    message: String,
    data: Option<Data>,
}

#[derive(Deserialize, Default)]
struct Data {
    #[serde(default)]
    list: Vec<Value>,
    page_info: Option<PageInfo>,
}

#[derive(Deserialize)]
struct PageInfo {
    total_page: u32,
}

/// The registry's constructor: one `[[connectors.tiktok_ads]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    Ok(Box::new(TiktokAds::build(TiktokAdsConfig::parse(
        section,
    )?)?))
}
