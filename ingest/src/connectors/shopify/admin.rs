//! What the Admin API connectors (`shopify_orders`, `shopify_returns`) share: the store's
//! HTTP client with its `X-Shopify-Access-Token`, the API version check, and window bounds.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use futures::future::BoxFuture;
use kpiflow_core::SourceMetrics;
use kpiflow_schemas::Channel;
use reqwest::header::HeaderName;

use super::config::ShopifyShop;
use crate::IngestError;
use crate::pull::secret::{Secret, SecretRef};
use crate::pull::{
    HttpClient, Origin, Pull, PullDefaults, PullSettings, TokenHeader, TokenProvider,
};

/// The Admin API version both connectors default to.
pub(crate) fn default_api_version() -> String {
    "2025-10".into()
}

/// Checks `api_version` is a dated version such as `2025-10` (`section` names the table).
pub(crate) fn validate_api_version(section: &str, v: &str) -> Result<(), IngestError> {
    let ok = v.len() == 7
        && v.as_bytes()[4] == b'-'
        && v[..4]
            .bytes()
            .chain(v[5..].bytes())
            .all(|b| b.is_ascii_digit());
    if !ok {
        return Err(IngestError::config(
            format!("{section}.api_version"),
            format!("{v:?}"),
            "expected a version such as \"2025-10\"",
        ));
    }
    Ok(())
}

/// One store as an Admin API connector reaches it.
pub(crate) struct Store<'a> {
    /// The registry name, e.g. `shopify_orders`.
    pub name: &'static str,
    /// The config section, for error keys.
    pub section: &'a str,
    /// The store's labels.
    pub labels: &'a ShopifyShop,
    /// Its `*.myshopify.com` domain.
    pub domain: &'a str,
    /// The access token reference.
    pub access_token: &'a SecretRef,
    /// The `pull` table as written.
    pub pull: &'a PullSettings,
}

/// What a built Admin API connector runs on.
pub(crate) struct Client {
    /// The resolved pull settings.
    pub pull: Pull,
    /// The HTTP client, putting the token on every request.
    pub http: HttpClient,
    /// The store's health series.
    pub metrics: SourceMetrics,
    /// The header fields of the store's events.
    pub origin: Origin,
}

impl Store<'_> {
    /// Resolves the pull settings (base URL `https://<domain>/` unless set) and builds the
    /// client. No I/O: the token is read when a request needs it (so a rotated token file is
    /// picked up without a restart), and checked once here, so a missing one is refused with
    /// the other config errors (and by `check-config`).
    pub(crate) fn client(&self, defaults: &PullDefaults) -> Result<Client, IngestError> {
        let key = format!("{}.access_token", self.section);
        self.access_token.check(&key)?;
        let mut settings = self.pull.clone();
        settings
            .base_url
            .get_or_insert_with(|| format!("https://{}/", self.domain));
        let pull = settings.resolve(self.section, defaults)?;
        let metrics = SourceMetrics::new(self.name, &self.labels.shop);
        let token = AccessToken {
            secret: self.access_token.clone(),
            key,
        };
        let http = HttpClient::new(self.name, pull.http.clone(), metrics.clone())?.with_token(
            Arc::new(token),
            TokenHeader::Named(HeaderName::from_static("x-shopify-access-token")),
        );
        let origin = Origin {
            shop: self.labels.shop.clone(),
            channel: Channel::Shopify,
            marketplace: self.labels.marketplace.clone(),
            source_tz: self.labels.time_zone,
        };
        Ok(Client {
            pull,
            http,
            metrics,
            origin,
        })
    }
}

/// The Admin API access token, read from its `env:`/`file:` reference on each use (Shopify
/// offline tokens do not expire; a 401 fails the sync, and the next one reads the reference
/// again).
struct AccessToken {
    secret: SecretRef,
    key: String,
}

impl TokenProvider for AccessToken {
    fn token(&self) -> BoxFuture<'_, Result<Secret, IngestError>> {
        Box::pin(async move { self.secret.resolve(&self.key) })
    }

    fn invalidate(&self, _: &Secret) {}
}

/// UTC, whole seconds, `Z`.
pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `t` rounded up to a whole second: a window's end, floored, would skip the records of its
/// last fraction of a second.
pub(crate) fn ceil_second(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = t.trunc_subsecs(0);
    if floor == t {
        t
    } else {
        floor + chrono::TimeDelta::seconds(1)
    }
}
