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

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use kpiflow_core::SourceMetrics;
use kpiflow_schemas::{Channel, SourceTz};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::IngestError;
use crate::connector::{Connector, parse_section};
use crate::map::{AdContext, raw};
use crate::pull::{
    Emitter, HttpClient, Origin, PullConnector, PullDefaults, PullSettings, RateLimit, Request,
    SecretRef, Source, StaticToken, TokenHeader, Window,
};

pub use map::row as map_row;

/// The registry name.
pub const NAME: &str = "meta_ads";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.meta_ads";
/// The config section (an array: one table per shop and ad account).
pub const SECTION: &str = "connectors.meta_ads";

/// Attribution settles within days; 14 re-pulled by default.
pub const DEFAULTS: PullDefaults = PullDefaults {
    base_url: "https://graph.facebook.com",
    interval: Duration::from_secs(6 * 3600),
    overlap: Duration::from_secs(14 * 24 * 3600),
    initial_lookback: Duration::from_secs(14 * 24 * 3600),
    max_window: Duration::from_secs(31 * 24 * 3600),
    rate_limit: Some(RateLimit {
        rate: 0.5,
        burst: 5,
    }),
};

fn d_channel() -> Channel {
    Channel::Shopify
}
fn d_window() -> String {
    "7d_click_1d_view".into()
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

/// One `[[connectors.meta_ads]]` table: one ad account of one shop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaAdsConfig {
    /// The shop id events carry (the Kafka key).
    pub shop: String,
    /// The ad account id, digits (without `act_`).
    pub ad_account_id: String,
    /// The sales channel the campaigns drive traffic to. Default `"shopify"`.
    #[serde(default = "d_channel")]
    pub channel: Channel,
    /// Marketplace id events carry. Default `"US"`.
    #[serde(default = "crate::pull::settings::defaults::us")]
    pub marketplace: String,
    /// The ad account's time zone. Default `"America/Los_Angeles"`.
    #[serde(default = "crate::pull::settings::defaults::us_pacific")]
    pub time_zone: String,
    /// The ad account's currency. Default `"USD"`.
    #[serde(default = "crate::pull::settings::defaults::usd")]
    pub currency: String,
    /// The one action type counted as a purchase. Default
    /// `"offsite_conversion.fb_pixel_purchase"`.
    #[serde(default = "d_action")]
    pub purchase_action_type: String,
    /// The account's attribution setting, as a label. Default `"7d_click_1d_view"`.
    #[serde(default = "d_window")]
    pub attribution_window: String,
    /// The Graph API version in the path. Default `"v21.0"`.
    #[serde(default = "d_version")]
    pub api_version: String,
    /// Rows per page (`limit`), 1 to 500. Default `100`.
    #[serde(default = "d_limit")]
    pub limit: u32,
    /// The system user's access token (`env:NAME` or `file:/path`).
    pub access_token: SecretRef,
    /// Polling, HTTP and cursor settings (defaults: every 6 hours, 14 days re-pulled).
    #[serde(default)]
    pub pull: PullSettings,
}

/// The insights source for one ad account.
pub struct MetaAds {
    cfg: MetaAdsConfig,
    tz: chrono_tz::Tz,
    origin: Origin,
    http: HttpClient,
}

impl MetaAds {
    /// Validates `cfg`, reads the token and builds the connector.
    pub fn build(cfg: MetaAdsConfig) -> Result<PullConnector, IngestError> {
        let key = |k: &str| format!("{SECTION}.{k}");
        if cfg.ad_account_id.is_empty() || !cfg.ad_account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IngestError::config(
                key("ad_account_id"),
                format!("{:?}", cfg.ad_account_id),
                "expected the account's digits, without \"act_\"",
            ));
        }
        crate::pull::settings::non_empty(&key("shop"), &cfg.shop)?;
        crate::pull::settings::non_empty(&key("purchase_action_type"), &cfg.purchase_action_type)?;
        if !(1..=500).contains(&cfg.limit) {
            return Err(IngestError::config(
                key("limit"),
                cfg.limit,
                "must be between 1 and 500",
            ));
        }
        let tz = crate::pull::settings::time_zone(&key("time_zone"), &cfg.time_zone)?;
        let pull = cfg.pull.resolve(SECTION, &DEFAULTS)?;
        let metrics = SourceMetrics::new(NAME, &cfg.shop);
        let token = cfg.access_token.resolve(&key("access_token"))?;
        let http = HttpClient::new(NAME, pull.http.clone(), metrics.clone())?
            .with_token(Arc::new(StaticToken(token)), TokenHeader::Bearer)
            .with_throttle_detector(throttled);
        let origin = Origin {
            shop: cfg.shop.clone(),
            channel: cfg.channel,
            marketplace: cfg.marketplace.clone(),
            source_tz: SourceTz(tz),
        };
        let source = MetaAds {
            cfg,
            tz,
            origin,
            http,
        };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let day = |t: DateTime<Utc>| t.with_timezone(&self.tz).date_naive();
        let since = day(window.from);
        let until = day(window.to - chrono::TimeDelta::seconds(1)).max(since);
        let ctx = AdContext {
            platform: NAME,
            account: &self.cfg.ad_account_id,
            currency: &self.cfg.currency,
            tz: self.tz,
            window: &self.cfg.attribution_window,
            as_of: window.to,
        };
        let mut req = Request::get(format!(
            "{}/act_{}/insights",
            self.cfg.api_version, self.cfg.ad_account_id
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
        .query("limit", self.cfg.limit.to_string());
        loop {
            let page: Page = self.http.send(&req).await?.json(NAME)?;
            for r in &page.data {
                out.record(map::row(r, &ctx, &self.cfg.purchase_action_type), &raw(r))
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

impl Source for MetaAds {
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

/// The registry's constructor: one `[[connectors.meta_ads]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg: MetaAdsConfig = parse_section(SECTION, section)?;
    Ok(Box::new(MetaAds::build(cfg)?))
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
