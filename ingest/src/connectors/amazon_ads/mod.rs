//! `amazon_ads`: Amazon Ads reporting v3 — daily campaign rows, re-pulled over a trailing
//! window so restated figures flow as restatements.
//!
//! ```text
//!  POST /reporting/reports {startDate, endDate, configuration{reportTypeId, timeUnit: DAILY,
//!                           format: GZIP_JSON, columns}}                  ─► reportId
//!  GET  /reporting/reports/{reportId}  every poll_interval until COMPLETED ─► url, completedAt
//!  GET  url (pre-signed, no token) ─► gzip ─► JSON rows ─► map::row ─► ad.performance
//! ```
//!
//! Calls carry `Authorization: Bearer <LWA token>`, `Amazon-Advertising-API-ClientId` and
//! `Amazon-Advertising-API-Scope` (the profile id). Figures for a date keep changing for up to
//! 14 days, so each sync reaches back `pull.overlap` (default 14 days) and every row is
//! published again with `as_of` = the report's `completedAt`. A row's event id includes that
//! `as_of` (`amazon_ads:{profile}:{campaignId}:{date}:{as_of ms}`): each version is a distinct
//! event, and the processor keeps the one with the latest `as_of` per (platform, account,
//! campaign, date) — see `processor/src/engine.rs` `apply_ad`.

mod map;

use std::io::Read;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures::future::BoxFuture;
use kpiflow_core::SourceMetrics;
use kpiflow_schemas::{Channel, SourceTz};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::IngestError;
use crate::connector::{Connector, parse_section};
use crate::map::{AdContext, parse_time, raw};
use crate::pull::{
    Emitter, HttpClient, LwaConfig, Origin, PullConnector, PullDefaults, PullSettings, RateLimit,
    Request, Source, TokenHeader, Window, lwa_client,
};

pub use map::row as map_row;

/// The registry name.
pub const NAME: &str = "amazon_ads";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.amazon_ads";
/// The config section (an array: one table per shop and profile).
pub const SECTION: &str = "connectors.amazon_ads";

/// Reports cover at most 31 days; figures settle within 14.
pub const DEFAULTS: PullDefaults = PullDefaults {
    base_url: "https://advertising-api.amazon.com",
    interval: Duration::from_secs(6 * 3600),
    overlap: Duration::from_secs(14 * 24 * 3600),
    initial_lookback: Duration::from_secs(14 * 24 * 3600),
    max_window: Duration::from_secs(31 * 24 * 3600),
    rate_limit: Some(RateLimit {
        rate: 1.0,
        burst: 5,
    }),
};

fn default_report_type() -> String {
    "spCampaigns".into()
}
fn default_window() -> String {
    "7d".into()
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_poll_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

/// One `[[connectors.amazon_ads]]` table: one advertising profile of one shop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmazonAdsConfig {
    /// The shop id events carry (the Kafka key).
    pub shop: String,
    /// The advertising profile id (`Amazon-Advertising-API-Scope`).
    pub profile_id: String,
    /// The marketplace the profile advertises in. Default `"ATVPDKIKX0DER"`.
    #[serde(default = "crate::pull::settings::defaults::amazon_us")]
    pub marketplace: String,
    /// The profile's time zone (report dates are its days). Default `"America/Los_Angeles"`.
    #[serde(default = "crate::pull::settings::defaults::us_pacific")]
    pub time_zone: String,
    /// The profile's currency (report rows carry none). Default `"USD"`.
    #[serde(default = "crate::pull::settings::defaults::usd")]
    pub currency: String,
    /// Sponsored Products report type, `spCampaigns`. Default `"spCampaigns"`.
    #[serde(default = "default_report_type")]
    pub report_type: String,
    /// Attribution window of the orders and sales counted: `"7d"` (`purchases7d`,
    /// `sales7d`) or `"14d"`. Default `"7d"`.
    #[serde(default = "default_window")]
    pub attribution_window: String,
    /// Time between two status checks of a pending report. Default `"30s"`.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A report not COMPLETED after this long fails the sync (the next one asks again).
    /// Default `"30m"`.
    #[serde(default = "default_poll_timeout", with = "humantime_serde")]
    pub poll_timeout: Duration,
    /// Polling, HTTP and cursor settings (defaults: every 6 hours, 14 days re-pulled).
    #[serde(default)]
    pub pull: PullSettings,
    /// Login With Amazon credentials of the Ads API app.
    pub auth: LwaConfig,
}

/// The reporting source for one profile.
pub struct AmazonAds {
    cfg: AmazonAdsConfig,
    tz: chrono_tz::Tz,
    origin: Origin,
    http: HttpClient,
}

impl AmazonAds {
    /// Validates `cfg`, reads the credentials and builds the connector.
    pub fn build(cfg: AmazonAdsConfig) -> Result<PullConnector, IngestError> {
        let key = |k: &str| format!("{SECTION}.{k}");
        for (k, v) in [("shop", &cfg.shop), ("profile_id", &cfg.profile_id)] {
            crate::pull::settings::non_empty(&key(k), v)?;
        }
        let tz = crate::pull::settings::time_zone(&key("time_zone"), &cfg.time_zone)?;
        if !matches!(cfg.attribution_window.as_str(), "7d" | "14d") {
            return Err(IngestError::config(
                key("attribution_window"),
                format!("{:?}", cfg.attribution_window),
                "expected \"7d\" or \"14d\"",
            ));
        }
        if cfg.report_type != "spCampaigns" {
            return Err(IngestError::config(
                key("report_type"),
                format!("{:?}", cfg.report_type),
                "only \"spCampaigns\" (one row per campaign and day) is supported",
            ));
        }
        if cfg.currency.len() != 3 || !cfg.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(IngestError::config(
                key("currency"),
                format!("{:?}", cfg.currency),
                "expected an ISO 4217 code such as \"USD\"",
            ));
        }
        if cfg.poll_interval.is_zero() || cfg.poll_timeout < cfg.poll_interval {
            return Err(IngestError::config(
                key("poll_timeout"),
                format!(
                    "{:?}",
                    humantime::format_duration(cfg.poll_timeout).to_string()
                ),
                format!(
                    "must be at least poll_interval ({}), which must be positive",
                    humantime::format_duration(cfg.poll_interval)
                ),
            ));
        }
        let pull = cfg.pull.resolve(SECTION, &DEFAULTS)?;
        let metrics = SourceMetrics::new(NAME, &cfg.shop);
        let auth_key = key("auth");
        let (http, _) = lwa_client(
            NAME,
            pull.http.clone(),
            &cfg.auth,
            &auth_key,
            crate::pull::token::LWA_TOKEN_URL,
            metrics.clone(),
            TokenHeader::Bearer,
        )?;
        let client_id = cfg
            .auth
            .client_id
            .resolve(&format!("{auth_key}.client_id"))?;
        let http = http
            .with_header("amazon-advertising-api-clientid", client_id.expose())?
            .with_header("amazon-advertising-api-scope", &cfg.profile_id)?;
        let origin = Origin {
            shop: cfg.shop.clone(),
            channel: Channel::Amazon,
            marketplace: cfg.marketplace.clone(),
            source_tz: SourceTz(tz),
        };
        let source = AmazonAds {
            cfg,
            tz,
            origin,
            http,
        };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }

    /// The report dates `window` touches, in the profile's zone.
    fn dates(&self, window: Window) -> (NaiveDate, NaiveDate) {
        let day = |t: DateTime<Utc>| t.with_timezone(&self.tz).date_naive();
        let last = window.to - chrono::TimeDelta::nanoseconds(1);
        (day(window.from), day(last.max(window.from)))
    }

    async fn read(&self, window: Window, out: &mut Emitter<'_>) -> Result<(), IngestError> {
        let (start, end) = self.dates(window);
        let (purchases, sales) = match self.cfg.attribution_window.as_str() {
            "14d" => ("purchases14d", "sales14d"),
            _ => ("purchases7d", "sales7d"),
        };
        let body = json!({
            "name": format!("kpiflow {} {} {start}..{end}", self.cfg.report_type, self.cfg.shop),
            "startDate": start.to_string(),
            "endDate": end.to_string(),
            "configuration": {
                "adProduct": "SPONSORED_PRODUCTS",
                "groupBy": ["campaign"],
                "columns": ["date", "campaignId", "impressions", "clicks", "cost", purchases, sales],
                "reportTypeId": self.cfg.report_type,
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
        let url = report
            .url
            .ok_or_else(|| self.input(&created.report_id, "a COMPLETED report has no `url`"))?;
        let as_of = report
            .completed_at
            .as_deref()
            .and_then(parse_time)
            .ok_or_else(|| {
                self.input(
                    &created.report_id,
                    "a COMPLETED report has no readable `completedAt`",
                )
            })?;
        let file = self.http.send(&Request::get(url).without_token()).await?;
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(file.body.as_slice())
            .read_to_end(&mut text)
            .map_err(|e| {
                self.input(
                    &created.report_id,
                    &format!("the report file is not gzip: {e}"),
                )
            })?;
        let rows: Vec<Value> = serde_json::from_slice(&text).map_err(|e| {
            self.input(
                &created.report_id,
                &format!("the report file is not a JSON array of rows: {e}"),
            )
        })?;
        tracing::info!(connector = NAME, shop = %self.cfg.shop, report = %created.report_id, %start, %end, rows = rows.len(), "report downloaded");
        let ctx = AdContext {
            platform: NAME,
            account: &self.cfg.profile_id,
            currency: &self.cfg.currency,
            tz: self.tz,
            window: &self.cfg.attribution_window,
            as_of,
        };
        for r in &rows {
            out.record(map::row(r, &ctx, purchases, sales), &raw(r))
                .await?;
        }
        Ok(())
    }

    /// Polls the report until COMPLETED; FAILED or the timeout is an error.
    async fn wait(&self, id: &str) -> Result<Status, IngestError> {
        let deadline = tokio::time::Instant::now() + self.cfg.poll_timeout;
        loop {
            let status: Status = self
                .http
                .send(&Request::get(format!("reporting/reports/{id}")))
                .await?
                .json(NAME)?;
            match status.status.as_str() {
                "COMPLETED" => return Ok(status),
                "FAILED" => {
                    return Err(IngestError::External {
                        system: NAME.into(),
                        detail: format!(
                            "report {id} FAILED: {}",
                            status
                                .failure_reason
                                .as_deref()
                                .unwrap_or("no reason given")
                        ),
                        retryable: true,
                    });
                }
                _ => {}
            }
            if tokio::time::Instant::now() + self.cfg.poll_interval > deadline {
                return Err(IngestError::External {
                    system: NAME.into(),
                    detail: format!(
                        "report {id} still {} after poll_timeout ({})",
                        status.status,
                        humantime::format_duration(self.cfg.poll_timeout)
                    ),
                    retryable: true,
                });
            }
            tokio::time::sleep(self.cfg.poll_interval).await;
        }
    }

    fn input(&self, report: &str, problem: &str) -> IngestError {
        IngestError::Input {
            source_name: NAME.into(),
            problem: format!("report {report}: {problem}"),
        }
    }
}

#[derive(Deserialize)]
struct Created {
    #[serde(rename = "reportId")]
    report_id: String,
}

#[derive(Deserialize)]
struct Status {
    status: String,
    url: Option<String>,
    #[serde(rename = "completedAt")]
    completed_at: Option<String>,
    #[serde(rename = "failureReason")]
    failure_reason: Option<String>,
}

impl Source for AmazonAds {
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

/// The registry's constructor: one `[[connectors.amazon_ads]]` table.
pub(crate) fn build(section: Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg: AmazonAdsConfig = parse_section(SECTION, section)?;
    Ok(Box::new(AmazonAds::build(cfg)?))
}
