//! `meta_ads`: Meta (Facebook / Instagram) Marketing API insights — daily campaign rows with
//! one chosen purchase action type, re-pulled over a trailing window.
//!
//! ```text
//!  GET /{api_version}/act_{ad_account_id}/insights?level=campaign&time_increment=1
//!      &time_range={"since":…,"until":…}&fields=campaign_id,date_start,spend,impressions,
//!       clicks,actions,action_values&limit=…
//!      └─ data[] ─► map::row ─► ad.performance     └─ paging.next (a full URL) ─► next page
//! ```
//!
//! Shapes: the Marketing API reference ("Ad Account Insights", "Insights API: paging",
//! "Rate limiting") and `../shared/reference/domain.md` §4. Numbers arrive as strings. Several
//! variants of one purchase appear in `actions` (`purchase`, `omni_purchase`,
//! `offsite_conversion.fb_pixel_purchase`, …): only `purchase_action_type` is counted, so a
//! purchase is never counted twice. Calls carry the system user's long-lived token as
//! `Authorization: Bearer`; it cannot be refreshed, so a refused token fails the sync with
//! Meta's message. Meta throttles with HTTP 400 and error codes 4, 17, 32, 613 or 80000-80014,
//! waiting `estimated_time_to_regain_access` minutes from `x-business-use-case-usage` when
//! given. Dates are the ad account's days (`time_zone`); a row's `as_of` is the end of the
//! sync window that read it, its id `meta_ads:{account}:{campaign}:{date}:{as_of ms}`.

mod map;

use std::sync::Arc;
use std::time::Duration;

use kpiflow_schemas::Channel;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
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
pub const NAME: &str = "meta_ads";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.meta_ads";
/// The config section (an array: one table per shop and ad account).
pub const SECTION: &str = "connectors.meta_ads";

/// Attribution settles within days; 14 re-pulled by default.
pub const DEFAULTS: PullDefaults = trailing_defaults("https://graph.facebook.com", 31, 0.5);

/// One `[[connectors.meta_ads]]` table: one ad account of one shop.
pub type MetaAdsConfig = AdAccountConfig<MetaAdsKeys>;

fn d_channel() -> Channel {
    Channel::Shopify
}
fn d_version() -> String {
    "v21.0".into()
}
fn d_action() -> String {
    "offsite_conversion.fb_pixel_purchase".into()
}
fn d_limit() -> u32 {
    100
}

/// The keys only a `[[connectors.meta_ads]]` table has (the shared ones: [`AdAccountConfig`];
/// `attribution_window` defaults to `"7d_click_1d_view"`, the account's setting as a label).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaAdsKeys {
    /// The ad account id, digits (without `act_`).
    pub ad_account_id: String,
    /// The sales channel the campaigns drive traffic to. Default `"shopify"`.
    #[serde(default = "d_channel")]
    pub channel: Channel,
    /// The one action type counted as a purchase. Default
    /// `"offsite_conversion.fb_pixel_purchase"`.
    #[serde(default = "d_action")]
    pub purchase_action_type: String,
    /// The Graph API version in the path. Default `"v21.0"`.
    #[serde(default = "d_version")]
    pub api_version: String,
    /// Rows per page (`limit`), 1 to 500. Default `100`.
    #[serde(default = "d_limit")]
    pub limit: u32,
    /// The system user's access token (`env:NAME` or `file:/path`).
    pub access_token: SecretRef,
}

impl AdPlatform for MetaAdsKeys {
    const PLATFORM: Platform = Platform::new(NAME, COMPONENT, SECTION, DEFAULTS);
    const ATTRIBUTION_WINDOW: &'static str = "7d_click_1d_view";

    fn account(cfg: &MetaAdsConfig) -> Result<(String, Channel), IngestError> {
        let keys = &cfg.platform;
        settings::digits(
            &Self::key("ad_account_id"),
            &keys.ad_account_id,
            "expected the account's digits, without \"act_\"",
        )?;
        settings::non_empty(
            &Self::key("purchase_action_type"),
            &keys.purchase_action_type,
        )?;
        settings::within(&Self::key("limit"), keys.limit, 1..=500)?;
        Ok((keys.ad_account_id.clone(), keys.channel))
    }
}

/// The insights reader for one ad account.
pub struct MetaAds {
    keys: MetaAdsKeys,
    http: HttpClient,
}

impl MetaAds {
    /// Validates `cfg`, reads the token and builds the connector.
    pub fn build(cfg: MetaAdsConfig) -> Result<PullConnector, IngestError> {
        cfg.connector(|keys, pull, metrics| {
            let token = keys
                .access_token
                .resolve(&MetaAdsKeys::key("access_token"))?;
            let http = HttpClient::new(NAME, pull.http.clone(), metrics.clone())?
                .with_token(Arc::new(StaticToken(token)), TokenHeader::Bearer)
                .with_throttle_detector(throttled);
            Ok(MetaAds { keys, http })
        })
    }
}

impl ReadReport for MetaAds {
    async fn read(&self, job: ReportJob<'_, '_>) -> Result<(), IngestError> {
        let (since, until) = job.days;
        let ctx = job.account.context(job.window.to);
        let mut req = Request::get(format!(
            "{}/act_{}/insights",
            self.keys.api_version, self.keys.ad_account_id
        ))
        .query("level", "campaign")
        .query("time_increment", "1")
        .query(
            "time_range",
            format!(r#"{{"since":"{since}","until":"{until}"}}"#),
        )
        .query(
            "fields",
            "campaign_id,date_start,date_stop,spend,impressions,clicks,actions,action_values",
        )
        .query("limit", self.keys.limit.to_string());
        loop {
            let page: Page = self.http.send(&req).await?.json(NAME)?;
            for r in &page.data {
                job.out
                    .record(map::row(r, &ctx, &self.keys.purchase_action_type), &raw(r))
                    .await?;
            }
            match page.paging.and_then(|p| p.next) {
                Some(next) if !next.is_empty() => req = Request::get(next),
                _ => return Ok(()),
            }
        }
    }
}

/// Meta's throttling answers (HTTP 400/403 with a rate-limit error code).
fn throttled(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Option<Duration>> {
    if !matches!(status.as_u16(), 400 | 403) {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let code = v["error"]["code"].as_i64()?;
    if !matches!(code, 4 | 17 | 32 | 613 | 80000..=80014) {
        return None;
    }
    // {"<account>": [{"type": "ads_insights", "estimated_time_to_regain_access": <minutes>}]}
    let minutes = headers
        .get("x-business-use-case-usage")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| serde_json::from_str::<Value>(h).ok())
        .and_then(|u| {
            u.as_object()?
                .values()
                .filter_map(Value::as_array)
                .flatten()
                .filter_map(|e| e["estimated_time_to_regain_access"].as_u64())
                .max()
        })
        .filter(|m| *m > 0);
    Some(minutes.map(|m| Duration::from_secs(m * 60)))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<Value>,
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    next: Option<String>,
}

/// The registry's constructor: one `[[connectors.meta_ads]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    Ok(Box::new(MetaAds::build(MetaAdsConfig::parse(section)?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_recognised_with_their_wait() {
        let body = br#"{"error":{"message":"There have been too many calls to this ad-account.","type":"OAuthException","code":80004,"error_subcode":2446079}}"#;
        let mut h = HeaderMap::new();
        h.insert(
            "x-business-use-case-usage",
            r#"{"1234":[{"type":"ads_insights","call_count":100,"total_cputime":30,"total_time":40,"estimated_time_to_regain_access":2}]}"#
                .parse()
                .unwrap(),
        );
        assert_eq!(
            throttled(StatusCode::BAD_REQUEST, &h, body),
            Some(Some(Duration::from_secs(120)))
        );
        assert_eq!(
            throttled(StatusCode::BAD_REQUEST, &HeaderMap::new(), body),
            Some(None)
        );
        let expired = br#"{"error":{"message":"Error validating access token","type":"OAuthException","code":190}}"#;
        assert_eq!(throttled(StatusCode::BAD_REQUEST, &h, expired), None);
    }
}
