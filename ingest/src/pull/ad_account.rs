//! What the ad connectors share: the account table, the trailing report window, the Source.
//!
//! ```text
//!  [[connectors.<platform>]] ─► AdAccountConfig<Keys> ─► AdAccount ─► PullConnector
//!   shared keys + the           parse, validate          zone, origin,    │ window
//!   platform's Keys                                     context(as_of)   ▼
//!                          Source (here) ─► ReadReport::read(ReportJob: days, out)
//! ```
//!
//! A platform adds its own keys ([`AdPlatform`]) and its read ([`ReadReport`]); the rest is
//! here, so the four ad connectors check, date and label their rows the same way.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures::future::BoxFuture;
use kpiflow_core::SourceMetrics;
use kpiflow_schemas::{Channel, SourceTz};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::emit::{Emitter, Origin};
use super::rate_limit::RateLimit;
use super::runner::{PullConnector, Source, Window};
use super::settings::{self, Pull, PullDefaults, PullSettings};
use crate::IngestError;
use crate::connector::parse_section;
use crate::map::AdContext;

const DAY: u64 = 24 * 3600;

/// Pull defaults of an ad platform. A day's figures keep changing for up to 14 days while
/// conversions are attributed, so every sync (every 6 hours) re-pulls the trailing 14 days
/// and restated rows arrive as newer versions; `max_window_days` is the longest range one
/// report may cover, `rate` the platform's request budget per second.
pub const fn trailing_defaults(
    base_url: &'static str,
    max_window_days: u64,
    rate: f64,
) -> PullDefaults {
    PullDefaults {
        base_url,
        interval: Duration::from_secs(6 * 3600),
        overlap: Duration::from_secs(14 * DAY),
        initial_lookback: Duration::from_secs(14 * DAY),
        max_window: Duration::from_secs(max_window_days * DAY),
        rate_limit: Some(RateLimit { rate, burst: 5 }),
    }
}

/// Who an ad platform is to the runner: its names, its config section, its pull defaults.
#[derive(Debug, Clone, Copy)]
pub struct Platform {
    /// The registry name, e.g. `meta_ads`; also the `platform` of its rows.
    pub name: &'static str,
    /// The metrics component and dead-letter stage, e.g. `ingest.meta_ads`.
    pub component: &'static str,
    /// The config section, e.g. `connectors.meta_ads`.
    pub section: &'static str,
    /// The pull defaults, usually [`trailing_defaults`].
    pub defaults: PullDefaults,
}

impl Platform {
    /// A platform from its connector's constants.
    pub const fn new(
        name: &'static str,
        component: &'static str,
        section: &'static str,
        defaults: PullDefaults,
    ) -> Platform {
        Platform {
            name,
            component,
            section,
            defaults,
        }
    }
}

/// The keys only one ad platform has (its account id, credentials, API options), and what it
/// decides about the shared ones. The implementing struct denies unknown fields: it is read
/// alone first (see [`AdAccountConfig::parse`]).
pub trait AdPlatform:
    Debug + Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Names, section and pull defaults.
    const PLATFORM: Platform;
    /// The default `marketplace`.
    const MARKETPLACE: &'static str = "US";
    /// The default `attribution_window`.
    const ATTRIBUTION_WINDOW: &'static str;

    /// Checks the platform's keys and anything it demands of the shared ones (errors name
    /// the key, see [`AdPlatform::key`], and quote the value); returns the account id as the
    /// API and the rows write it, and the sales channel its campaigns drive traffic to.
    fn account(cfg: &AdAccountConfig<Self>) -> Result<(String, Channel), IngestError>;

    /// `key` in full, e.g. `connectors.meta_ads.limit`, for errors.
    fn key(key: &str) -> String {
        format!("{}.{key}", Self::PLATFORM.section)
    }
}

fn default_marketplace<P: AdPlatform>() -> String {
    P::MARKETPLACE.into()
}

fn default_attribution_window<P: AdPlatform>() -> String {
    P::ATTRIBUTION_WINDOW.into()
}

/// One `[[connectors.<ad platform>]]` table: one ad account of one shop. The keys below are
/// every platform's; `platform` holds the platform's own, written in the same table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound = "P: AdPlatform")]
pub struct AdAccountConfig<P: AdPlatform> {
    /// The shop id events carry (the Kafka key).
    pub shop: String,
    /// Marketplace id events carry. Default `"US"` (Amazon Ads: `"ATVPDKIKX0DER"`).
    #[serde(default = "default_marketplace::<P>")]
    pub marketplace: String,
    /// The account's time zone: report dates are its days. Default `"America/Los_Angeles"`.
    #[serde(default = "crate::pull::settings::defaults::us_pacific")]
    pub time_zone: String,
    /// The account's currency (report rows rarely carry one). Default `"USD"`.
    #[serde(default = "crate::pull::settings::defaults::usd")]
    pub currency: String,
    /// The attribution setting the figures follow, as a label on every row. Default per
    /// platform.
    #[serde(default = "default_attribution_window::<P>")]
    pub attribution_window: String,
    /// Polling, HTTP and cursor settings (defaults: [`trailing_defaults`]).
    #[serde(default)]
    pub pull: PullSettings,
    /// The platform's own keys.
    #[serde(flatten)]
    pub platform: P,
}

/// The keys [`AdAccountConfig`] reads itself (a test keeps this list true).
const SHARED_KEYS: [&str; 6] = [
    "shop",
    "marketplace",
    "time_zone",
    "currency",
    "attribution_window",
    "pull",
];

impl<P: AdPlatform> AdAccountConfig<P> {
    /// Reads one table. The platform's keys are read on their own first: within a flattened
    /// part serde no longer knows which key failed, and errors must name it.
    pub fn parse(table: serde_json::Value) -> Result<Self, IngestError> {
        let mut own = table.clone();
        if let Some(keys) = own.as_object_mut() {
            keys.retain(|k, _| !SHARED_KEYS.contains(&k.as_str()));
        }
        if let Err(mut e) = parse_section::<P>(P::PLATFORM.section, own) {
            // serde lists the platform's keys only; the shared ones are as valid.
            if let IngestError::Config { problem, .. } = &mut e
                && problem.starts_with("unknown field")
            {
                problem.push_str(&format!(", or one of `{}`", SHARED_KEYS.join("`, `")));
            }
            return Err(e);
        }
        parse_section(P::PLATFORM.section, table)
    }

    /// Checks every key but the `pull` table (checked when resolved), before any I/O.
    pub fn validate(&self) -> Result<(), IngestError> {
        self.check().map(|_| ())
    }

    /// [`validate`](Self::validate), returning the account's zone, id and channel.
    fn check(&self) -> Result<(chrono_tz::Tz, String, Channel), IngestError> {
        settings::non_empty(&P::key("shop"), &self.shop)?;
        let tz = settings::time_zone(&P::key("time_zone"), &self.time_zone)?;
        let (id, channel) = P::account(self)?;
        Ok((tz, id, channel))
    }

    /// Validates, resolves the pull settings and builds the connector; `reader` makes the
    /// platform's reader (its HTTP client, credentials) from its keys.
    pub fn connector<R: ReadReport>(
        self,
        reader: impl FnOnce(P, &Pull, &SourceMetrics) -> Result<R, IngestError>,
    ) -> Result<PullConnector, IngestError> {
        let (tz, id, channel) = self.check()?;
        let platform = P::PLATFORM;
        let pull = self.pull.resolve(platform.section, &platform.defaults)?;
        let metrics = SourceMetrics::new(platform.name, &self.shop);
        let account = AdAccount {
            platform: platform.name,
            component: platform.component,
            id,
            tz,
            origin: Origin {
                shop: self.shop,
                channel,
                marketplace: self.marketplace,
                source_tz: SourceTz(tz),
            },
            currency: self.currency,
            attribution_window: self.attribution_window,
        };
        let reader = reader(self.platform, &pull, &metrics)?;
        let source = AdSource { account, reader };
        Ok(PullConnector::new(Box::new(source), pull, metrics))
    }
}

/// One ad account, checked: whose rows a read yields and in which zone they are dated.
#[derive(Debug, Clone)]
pub struct AdAccount {
    /// The platform (its registry name).
    pub platform: &'static str,
    component: &'static str,
    /// The account id rows carry.
    pub id: String,
    /// The account's zone: report dates are its days.
    pub tz: chrono_tz::Tz,
    /// Shop, channel, marketplace and zone of the events.
    pub origin: Origin,
    /// The account's currency.
    pub currency: String,
    /// The attribution setting's label.
    pub attribution_window: String,
}

impl AdAccount {
    /// The report dates `window` touches in the account's zone, first and last (inclusive).
    pub fn days(&self, window: Window) -> (NaiveDate, NaiveDate) {
        let day = |t: DateTime<Utc>| t.with_timezone(&self.tz).date_naive();
        // `to` is exclusive: a window ending at midnight asks nothing of the next day, and
        // an empty one still asks for its first.
        let last = window.to - chrono::TimeDelta::nanoseconds(1);
        (day(window.from), day(last.max(window.from)))
    }

    /// What every row of one read shares, reported by the platform at `as_of`.
    pub fn context(&self, as_of: DateTime<Utc>) -> AdContext<'_> {
        AdContext {
            platform: self.platform,
            account: &self.id,
            currency: &self.currency,
            tz: self.tz,
            window: &self.attribution_window,
            as_of,
        }
    }
}

/// One read of one account: the window, the report days it touches, where the rows go.
pub struct ReportJob<'a, 'p> {
    /// The account read.
    pub account: &'a AdAccount,
    /// The sync window; its end is the `as_of` of platforms that report no time of their own.
    pub window: Window,
    /// The first and last report date the window touches (see [`AdAccount::days`]).
    pub days: (NaiveDate, NaiveDate),
    /// Where the rows go.
    pub out: &'a mut Emitter<'p>,
}

/// The part of an ad connector that differs: how its platform reports a window's rows.
pub trait ReadReport: Send + Sync + 'static {
    /// Reads every row of the job's days (following the platform's paging to the end) and
    /// hands it to `job.out`; an `Err` aborts the sync (see [`Source::sync`]).
    fn read(&self, job: ReportJob<'_, '_>) -> impl Future<Output = Result<(), IngestError>> + Send;
}

/// An ad account with its platform's reader, as the runner sees it.
struct AdSource<R> {
    account: AdAccount,
    reader: R,
}

impl<R: ReadReport> Source for AdSource<R> {
    fn name(&self) -> &'static str {
        self.account.platform
    }

    fn component(&self) -> &'static str {
        self.account.component
    }

    fn origin(&self) -> &Origin {
        &self.account.origin
    }

    fn sync<'a, 'p: 'a>(
        &'a self,
        window: Window,
        out: &'a mut Emitter<'p>,
    ) -> BoxFuture<'a, Result<(), IngestError>> {
        let account = &self.account;
        let days = account.days(window);
        Box::pin(self.reader.read(ReportJob {
            account,
            window,
            days,
            out,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Keys {
        account_id: String,
        #[serde(default)]
        limit: u32,
    }

    impl AdPlatform for Keys {
        const PLATFORM: Platform = Platform::new(
            "test_ads",
            "ingest.test_ads",
            "connectors.test_ads",
            trailing_defaults("https://ads.example.com", 31, 1.0),
        );
        const ATTRIBUTION_WINDOW: &'static str = "7d";

        fn account(cfg: &AdAccountConfig<Self>) -> Result<(String, Channel), IngestError> {
            settings::non_empty(&Self::key("account_id"), &cfg.platform.account_id)?;
            Ok((cfg.platform.account_id.clone(), Channel::Shopify))
        }
    }

    fn parse(table: serde_json::Value) -> Result<AdAccountConfig<Keys>, String> {
        AdAccountConfig::parse(table).map_err(|e| e.to_string())
    }

    #[test]
    fn the_shared_keys_are_the_ones_the_struct_reads() {
        let cfg = parse(json!({"shop": "s", "account_id": "1"})).unwrap();
        let v = serde_json::to_value(&cfg).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.retain(|k| !["account_id", "limit"].contains(k));
        keys.sort_unstable();
        let mut shared = SHARED_KEYS.to_vec();
        shared.sort_unstable();
        assert_eq!(keys, shared);
    }

    #[test]
    fn defaults_come_from_the_platform() {
        let cfg = parse(json!({"shop": "s", "account_id": "1"})).unwrap();
        assert_eq!(
            (
                cfg.marketplace.as_str(),
                cfg.time_zone.as_str(),
                cfg.currency.as_str(),
                cfg.attribution_window.as_str()
            ),
            ("US", "America/Los_Angeles", "USD", "7d")
        );
    }

    #[test]
    fn errors_name_the_key_in_either_part() {
        let err = parse(json!({"shop": "s", "account_id": "1", "limit": "x"})).unwrap_err();
        assert!(
            err.starts_with("bad config: `connectors.test_ads.limit` = \"x\""),
            "{err}"
        );
        let err =
            parse(json!({"shop": "s", "account_id": "1", "pull": {"interval": 5}})).unwrap_err();
        assert!(
            err.starts_with("bad config: `connectors.test_ads.pull.interval` = 5"),
            "{err}"
        );
        let err = parse(json!({"shop": "s", "account_id": "1", "curency": "EUR"})).unwrap_err();
        assert!(
            err.starts_with("bad config: `connectors.test_ads.curency`")
                && err.contains("unknown field `curency`")
                && err.contains("`currency`"),
            "{err}"
        );
        let cfg = parse(json!({"shop": " ", "account_id": "1"})).unwrap();
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            "bad config: `connectors.test_ads.shop` = \" \": must not be empty"
        );
        let cfg = parse(json!({"shop": "s", "account_id": "1", "time_zone": "PST"})).unwrap();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .starts_with("bad config: `connectors.test_ads.time_zone` = \"PST\"")
        );
    }

    #[test]
    fn a_window_asks_for_the_days_it_touches_in_the_account_zone() {
        let cfg = parse(json!({"shop": "s", "account_id": "1"})).unwrap();
        let account = AdAccount {
            platform: Keys::PLATFORM.name,
            component: Keys::PLATFORM.component,
            id: "1".into(),
            tz: chrono_tz::America::Los_Angeles,
            origin: Origin {
                shop: cfg.shop,
                channel: Channel::Shopify,
                marketplace: cfg.marketplace,
                source_tz: SourceTz(chrono_tz::America::Los_Angeles),
            },
            currency: cfg.currency,
            attribution_window: cfg.attribution_window,
        };
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        // Midnight in Los Angeles (UTC-8 in November) ends the 20th: the 21st is not asked.
        let w = Window {
            from: t("2026-11-06T08:00:00Z"),
            to: t("2026-11-21T08:00:00Z"),
        };
        assert_eq!(account.days(w), (d("2026-11-06"), d("2026-11-20")));
        let w = Window {
            from: t("2026-11-21T08:00:00Z"),
            to: t("2026-11-21T08:00:01Z"),
        };
        assert_eq!(account.days(w), (d("2026-11-21"), d("2026-11-21")));
        let empty = Window {
            from: t("2026-11-21T07:59:59Z"),
            to: t("2026-11-21T07:59:59Z"),
        };
        assert_eq!(account.days(empty), (d("2026-11-20"), d("2026-11-20")));
    }
}
