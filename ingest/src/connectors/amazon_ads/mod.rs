//! `amazon_ads`: Amazon Ads reporting v3 — daily campaign rows, re-pulled over a trailing
//! window so restated figures flow as restatements.
//!
//! ```text
//!  POST /reporting/reports {startDate, endDate, configuration{reportTypeId, timeUnit: DAILY,
//!                           format: GZIP_JSON, columns}}                  ─► reportId
//!  GET  /reporting/reports/{reportId}  every poll_interval until COMPLETED ─► url, generatedAt
//!  GET  url (pre-signed, no token) ─► gzip ─► JSON rows ─► map::row ─► ad.performance
//! ```
//!
//! Calls carry `Authorization: Bearer <LWA token>`, `Amazon-Advertising-API-ClientId` and
//! `Amazon-Advertising-API-Scope` (the profile id). Figures for a date keep changing for up to
//! 14 days, so each sync reaches back `pull.overlap` (default 14 days) and every row is
//! published again with `as_of` = the report's `generatedAt` (else its `updatedAt`: the v3
//! status has no completion field of its own). A row's event id includes that
//! `as_of` (`amazon_ads:{profile}:{campaignId}:{date}:{as_of ms}`): each version is a distinct
//! event, and the processor keeps the one with the latest `as_of` per (platform, account,
//! campaign, date) — see `processor/src/engine.rs` `apply_ad`.

mod map;

use std::time::Duration;

use kpiflow_schemas::Channel;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::IngestError;
use crate::connector::Connector;
use crate::map::{parse_time, raw};
use crate::pull::{
    AdAccountConfig, AdPlatform, HttpClient, LwaConfig, Platform, Polled, PullConnector,
    PullDefaults, ReadReport, ReportJob, ReportPoll, Request, TokenHeader, gunzip, lwa_client,
    settings, trailing_defaults,
};

pub use map::row as map_row;

/// The registry name.
pub const NAME: &str = "amazon_ads";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.amazon_ads";
/// The config section (an array: one table per shop and profile).
pub const SECTION: &str = "connectors.amazon_ads";

/// Reports cover at most 31 days; figures settle within 14.
pub const DEFAULTS: PullDefaults = trailing_defaults("https://advertising-api.amazon.com", 31, 1.0);

/// One `[[connectors.amazon_ads]]` table: one advertising profile of one shop.
pub type AmazonAdsConfig = AdAccountConfig<AmazonAdsKeys>;

fn default_report_type() -> String {
    "spCampaigns".into()
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_poll_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

/// The keys only a `[[connectors.amazon_ads]]` table has (the shared ones:
/// [`AdAccountConfig`]). Here `marketplace` defaults to `"ATVPDKIKX0DER"`, `currency` is the
/// profile's (report rows carry none), and `attribution_window` (default `"7d"`) picks the
/// orders and sales counted: `"7d"` (`purchases7d`, `sales7d`) or `"14d"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmazonAdsKeys {
    /// The advertising profile id (`Amazon-Advertising-API-Scope`).
    pub profile_id: String,
    /// Sponsored Products report type, `spCampaigns`. Default `"spCampaigns"`.
    #[serde(default = "default_report_type")]
    pub report_type: String,
    /// Time between two status checks of a pending report. Default `"30s"`.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A report not COMPLETED after this long fails the sync (the next one asks again).
    /// Default `"30m"`.
    #[serde(default = "default_poll_timeout", with = "humantime_serde")]
    pub poll_timeout: Duration,
    /// Login With Amazon credentials of the Ads API app.
    pub auth: LwaConfig,
}

impl AmazonAdsKeys {
    fn poll(&self) -> ReportPoll {
        ReportPoll {
            interval: self.poll_interval,
            timeout: self.poll_timeout,
        }
    }
}

impl AdPlatform for AmazonAdsKeys {
    const PLATFORM: Platform = Platform::new(NAME, COMPONENT, SECTION, DEFAULTS);
    const MARKETPLACE: &'static str = "ATVPDKIKX0DER";
    const ATTRIBUTION_WINDOW: &'static str = "7d";

    /// The channel is Amazon: Sponsored Products sell there (the table has no `channel`).
    fn account(cfg: &AmazonAdsConfig) -> Result<(String, Channel), IngestError> {
        let keys = &cfg.platform;
        settings::non_empty(&Self::key("profile_id"), &keys.profile_id)?;
        if !matches!(cfg.attribution_window.as_str(), "7d" | "14d") {
            return Err(IngestError::config(
                Self::key("attribution_window"),
                format!("{:?}", cfg.attribution_window),
                "expected \"7d\" or \"14d\"",
            ));
        }
        if keys.report_type != "spCampaigns" {
            return Err(IngestError::config(
                Self::key("report_type"),
                format!("{:?}", keys.report_type),
                "only \"spCampaigns\" (one row per campaign and day) is supported",
            ));
        }
        if cfg.currency.len() != 3 || !cfg.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(IngestError::config(
                Self::key("currency"),
                format!("{:?}", cfg.currency),
                "expected an ISO 4217 code such as \"USD\"",
            ));
        }
        keys.poll().validate(SECTION)?;
        Ok((keys.profile_id.clone(), Channel::Amazon))
    }
}

/// The reporting reader for one profile.
pub struct AmazonAds {
    keys: AmazonAdsKeys,
    http: HttpClient,
}

impl AmazonAds {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: AmazonAdsConfig) -> Result<PullConnector, IngestError> {
        cfg.connector(|keys, pull, metrics| {
            let auth_key = AmazonAdsKeys::key("auth");
            let (http, _) = lwa_client(
                NAME,
                pull.http.clone(),
                &keys.auth,
                &auth_key,
                crate::pull::token::LWA_TOKEN_URL,
                metrics.clone(),
                TokenHeader::Bearer,
            )?;
            let client_id = keys
                .auth
                .client_id
                .resolve(&format!("{auth_key}.client_id"))?;
            let http = http
                .with_header("amazon-advertising-api-clientid", client_id.expose())?
                .with_header("amazon-advertising-api-scope", &keys.profile_id)?;
            Ok(AmazonAds { keys, http })
        })
    }

    /// Polls the report until COMPLETED; FAILED or the timeout is an error.
    async fn wait(&self, id: &str) -> Result<Status, IngestError> {
        let req = Request::get(format!("reporting/reports/{id}"));
        self.keys
            .poll()
            .wait(NAME, id, || async {
                let status: Status = self.http.send(&req).await?.json(NAME)?;
                Ok(match status.status.as_str() {
                    "COMPLETED" => Polled::Done(status),
                    "FAILED" => Polled::Failed(format!(
                        "FAILED: {}",
                        status
                            .failure_reason
                            .as_deref()
                            .unwrap_or("no reason given")
                    )),
                    _ => Polled::Pending(status.status),
                })
            })
            .await
    }

    fn input(&self, report: &str, problem: &str) -> IngestError {
        IngestError::Input {
            source_name: NAME.into(),
            problem: format!("report {report}: {problem}"),
        }
    }
}

impl ReadReport for AmazonAds {
    async fn read(&self, job: ReportJob<'_, '_>) -> Result<(), IngestError> {
        let (start, end) = job.days;
        let shop = &job.account.origin.shop;
        let (purchases, sales) = match job.account.attribution_window.as_str() {
            "14d" => ("purchases14d", "sales14d"),
            _ => ("purchases7d", "sales7d"),
        };
        let body = json!({
            "name": format!("kpiflow {} {shop} {start}..{end}", self.keys.report_type),
            "startDate": start.to_string(),
            "endDate": end.to_string(),
            "configuration": {
                "adProduct": "SPONSORED_PRODUCTS",
                "groupBy": ["campaign"],
                "columns": ["date", "campaignId", "impressions", "clicks", "cost", purchases, sales],
                "reportTypeId": self.keys.report_type,
                "timeUnit": "DAILY",
                "format": "GZIP_JSON",
            }
        });
        let created: Created = self
            .http
            .send(&Request::post("reporting/reports").json(&body).header(
                "content-type",
                "application/vnd.createasyncreportrequest.v3+json",
            ))
            .await?
            .json(NAME)?;
        let report = self.wait(&created.report_id).await?;
        let as_of = report
            .as_of()
            .map_err(|problem| self.input(&created.report_id, &problem))?;
        let url = report
            .url
            .ok_or_else(|| self.input(&created.report_id, "a COMPLETED report has no `url`"))?;
        let file = self.http.send(&Request::get(url).without_token()).await?;
        let text = gunzip(&file.body).map_err(|e| self.input(&created.report_id, &e))?;
        let rows: Vec<Value> = serde_json::from_slice(&text).map_err(|e| {
            self.input(
                &created.report_id,
                &format!("the report file is not a JSON array of rows: {e}"),
            )
        })?;
        tracing::info!(connector = NAME, %shop, report = %created.report_id, %start, %end, rows = rows.len(), "report downloaded");
        let ctx = job.account.context(as_of);
        for r in &rows {
            job.out
                .record(map::row(r, &ctx, purchases, sales), &raw(r))
                .await?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Created {
    #[serde(rename = "reportId")]
    report_id: String,
}

/// The fields kpiflow reads of a v3 report status (`reportId`, `name`, `status`,
/// `configuration`, `startDate`, `endDate`, `createdAt`, `updatedAt`, `generatedAt`, `url`,
/// `urlExpiresAt`, `fileSize`, `failureReason`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    status: String,
    url: Option<String>,
    generated_at: Option<String>,
    updated_at: Option<String>,
    failure_reason: Option<String>,
}

impl Status {
    /// When a COMPLETED report's figures were taken: `generatedAt`, or `updatedAt` (the last
    /// status change, which for a COMPLETED report is its completion) when Amazon left
    /// `generatedAt` out. The rows' `as_of`, so a later report's rows replace earlier ones.
    fn as_of(&self) -> Result<chrono::DateTime<chrono::Utc>, String> {
        if let Some(t) = self.generated_at.as_deref().and_then(parse_time) {
            return Ok(t);
        }
        self.updated_at
            .as_deref()
            .and_then(parse_time)
            .ok_or_else(|| {
                format!(
                    "a COMPLETED report has no readable `generatedAt` ({:?}) or `updatedAt` ({:?})",
                    self.generated_at, self.updated_at
                )
            })
    }
}

/// The registry's constructor: one `[[connectors.amazon_ads]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    Ok(Box::new(AmazonAds::build(AmazonAdsConfig::parse(
        section,
    )?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A COMPLETED status in the documented v3 shape, with `generated_at` and `updated_at`.
    fn completed(generated_at: Value, updated_at: Value) -> Status {
        serde_json::from_value(json!({
            "configuration": {"adProduct": "SPONSORED_PRODUCTS", "groupBy": ["campaign"],
                              "columns": ["date", "campaignId"], "reportTypeId": "spCampaigns",
                              "timeUnit": "DAILY", "format": "GZIP_JSON", "filters": null},
            "createdAt": "2026-11-27T09:58:01.144Z",
            "endDate": "2026-11-27",
            "failureReason": null,
            "fileSize": 412,
            "generatedAt": generated_at,
            "name": "kpiflow spCampaigns shop-001 2026-11-13..2026-11-27",
            "reportId": "rep-1",
            "startDate": "2026-11-13",
            "updatedAt": updated_at,
            "url": "https://offline-report-storage-us-east-1-prod.s3.amazonaws.com/rep-1.json.gz",
            "urlExpiresAt": "2026-11-27T11:00:00.000Z",
            "status": "COMPLETED"
        }))
        .unwrap()
    }

    #[test]
    fn as_of_is_generated_at_else_updated_at() {
        let s = completed(
            json!("2026-11-27T10:01:00.000Z"),
            json!("2026-11-27T10:01:07.500Z"),
        );
        assert_eq!(s.as_of().unwrap().to_rfc3339(), "2026-11-27T10:01:00+00:00");
        let s = completed(Value::Null, json!("2026-11-27T10:01:07.500Z"));
        assert_eq!(
            s.as_of().unwrap().to_rfc3339(),
            "2026-11-27T10:01:07.500+00:00"
        );
        let s = completed(json!("soon"), Value::Null);
        assert_eq!(
            s.as_of().unwrap_err(),
            "a COMPLETED report has no readable `generatedAt` (Some(\"soon\")) or `updatedAt` (None)"
        );
    }
}
