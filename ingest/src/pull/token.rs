//! Access tokens: the [`TokenProvider`] seam, and the two flows the platforms use — Login With
//! Amazon refresh tokens (SP-API, Amazon Ads) and Walmart's client-credentials token.
//!
//! Both endpoints answer `{"access_token": "...", "expires_in": <seconds>, ...}`; a token is
//! cached until `expires_in` minus a margin, and fetched again after a 401/403 (see
//! [`super::http::HttpClient::send`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::http::{HttpClient, Request};
use super::secret::{Secret, SecretRef};
use crate::IngestError;

/// Hands out a valid access token.
pub trait TokenProvider: Send + Sync {
    /// A token valid for at least the provider's margin: the cached one, or a fresh one.
    fn token(&self) -> BoxFuture<'_, Result<Secret, IngestError>>;
    /// The platform refused `token` (401/403): forget it, so the next [`TokenProvider::token`]
    /// fetches a new one. A newer token fetched meanwhile is kept.
    fn invalidate(&self, token: &Secret);
}

/// A fixed token (tests, or platforms with long-lived tokens).
#[derive(Debug, Clone)]
pub struct StaticToken(pub Secret);

impl TokenProvider for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<Secret, IngestError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
    fn invalidate(&self, _: &Secret) {}
}

/// The Login With Amazon token endpoint.
pub const LWA_TOKEN_URL: &str = "https://api.amazon.com/auth/o2/token";
/// Google's OAuth 2.0 token endpoint.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

fn default_margin() -> Duration {
    Duration::from_secs(60)
}

/// `auth` of the Amazon connectors (a Login With Amazon app and the seller's refresh token)
/// and of Google Ads (an OAuth client and refresh token): the OAuth 2.0 refresh-token grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LwaConfig {
    /// The token endpoint. Default: the platform's (`https://api.amazon.com/auth/o2/token`
    /// for Amazon, `https://oauth2.googleapis.com/token` for Google).
    #[serde(default)]
    pub token_url: Option<String>,
    /// The LWA app's client id (`env:NAME` or `file:/path`).
    pub client_id: SecretRef,
    /// The LWA app's client secret (`env:NAME` or `file:/path`).
    pub client_secret: SecretRef,
    /// The seller's refresh token from authorising the app (`env:NAME` or `file:/path`).
    pub refresh_token: SecretRef,
    /// A token is refreshed this long before it expires. Default `"60s"`.
    #[serde(default = "default_margin", with = "humantime_serde")]
    pub refresh_margin: Duration,
}

fn default_walmart_service() -> String {
    "Walmart Marketplace".into()
}

/// `auth` of the Walmart connector: the seller's API client id and secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalmartAuthConfig {
    /// Client id (`env:NAME` or `file:/path`).
    pub client_id: SecretRef,
    /// Client secret (`env:NAME` or `file:/path`).
    pub client_secret: SecretRef,
    /// The `WM_SVC.NAME` header. Default `"Walmart Marketplace"`.
    #[serde(default = "default_walmart_service")]
    pub service_name: String,
    /// A token is refreshed this long before it expires. Default `"60s"`.
    #[serde(default = "default_margin", with = "humantime_serde")]
    pub refresh_margin: Duration,
}

/// Resolved Walmart credentials, also needed on every API call (Basic auth, `WM_SVC.NAME`).
#[derive(Debug, Clone)]
pub struct WalmartCredentials {
    /// Client id.
    pub client_id: Secret,
    /// Client secret.
    pub client_secret: Secret,
    /// `WM_SVC.NAME`.
    pub service_name: String,
}

impl WalmartAuthConfig {
    /// Reads the credentials; `key` is the config key of this section, for errors.
    pub fn resolve(&self, key: &str) -> Result<WalmartCredentials, IngestError> {
        Ok(WalmartCredentials {
            client_id: self.client_id.resolve(&format!("{key}.client_id"))?,
            client_secret: self
                .client_secret
                .resolve(&format!("{key}.client_secret"))?,
            service_name: self.service_name.clone(),
        })
    }
}

/// An HTTP client whose calls carry an access token from the refresh-token grant in `header`
/// (`x-amz-access-token` for SP-API, `Authorization: Bearer` for Amazon Ads and Google). The
/// token endpoint (`auth.token_url`, else `default_token_url`) shares the API client's
/// timeout and retries, not its rate limit. `key` names the `auth` section in errors.
pub fn lwa_client(
    connector: &'static str,
    api: super::http::HttpOptions,
    auth: &LwaConfig,
    key: &str,
    default_token_url: &str,
    metrics: kpiflow_core::SourceMetrics,
    header: super::http::TokenHeader,
) -> Result<(HttpClient, std::sync::Arc<OAuthTokens>), IngestError> {
    let url = auth.token_url.as_deref().unwrap_or(default_token_url);
    let token_url = reqwest::Url::parse(url).map_err(|e| {
        IngestError::config(
            format!("{key}.token_url"),
            format!("{url:?}"),
            format!("not a URL: {e}"),
        )
    })?;
    let token_http = HttpClient::new(
        connector,
        super::http::HttpOptions {
            base_url: token_url,
            rate_limit: None,
            ..api.clone()
        },
        metrics.clone(),
    )?;
    let tokens = std::sync::Arc::new(OAuthTokens::lwa(token_http, auth, key)?);
    let client = HttpClient::new(connector, api, metrics)?.with_token(tokens.clone(), header);
    Ok((client, tokens))
}

enum Grant {
    /// `POST token_url` with `grant_type=refresh_token`.
    Lwa {
        client_id: Secret,
        client_secret: Secret,
        refresh_token: Secret,
    },
    /// `POST /v3/token` with `grant_type=client_credentials` and Basic auth.
    Walmart(WalmartCredentials),
}

/// A token endpoint of the OAuth family (LWA, Walmart), with a cache.
pub struct OAuthTokens {
    http: HttpClient,
    path: String,
    grant: Grant,
    margin: Duration,
    cached: Mutex<Option<(Secret, Instant)>>,
    // Serialises fetches, so callers that all find the cache empty wait for one fetch.
    fetching: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens")
            .field("http", &self.http)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl OAuthTokens {
    /// The refresh-token grant (Login With Amazon, Google): `http` points at the token URL
    /// (its base URL); `key` names the config section in errors.
    pub fn lwa(http: HttpClient, cfg: &LwaConfig, key: &str) -> Result<OAuthTokens, IngestError> {
        let grant = Grant::Lwa {
            client_id: cfg.client_id.resolve(&format!("{key}.client_id"))?,
            client_secret: cfg.client_secret.resolve(&format!("{key}.client_secret"))?,
            refresh_token: cfg.refresh_token.resolve(&format!("{key}.refresh_token"))?,
        };
        Ok(OAuthTokens::new(http, "", grant, cfg.refresh_margin))
    }

    /// Walmart: `http` points at the Marketplace API base URL; tokens come from `/v3/token`.
    pub fn walmart(http: HttpClient, creds: WalmartCredentials, margin: Duration) -> OAuthTokens {
        OAuthTokens::new(http, "v3/token", Grant::Walmart(creds), margin)
    }

    fn new(http: HttpClient, path: &str, grant: Grant, margin: Duration) -> OAuthTokens {
        OAuthTokens {
            http,
            path: path.to_string(),
            grant,
            margin,
            cached: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// Tokens fetched so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn cached(&self) -> Option<Secret> {
        let c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        c.as_ref()
            .filter(|(_, valid_until)| Instant::now() < *valid_until)
            .map(|(t, _)| t.clone())
    }

    async fn fetch(&self) -> Result<Secret, IngestError> {
        let req = match &self.grant {
            Grant::Lwa {
                client_id,
                client_secret,
                refresh_token,
            } => Request::post(self.path.clone()).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose()),
                ("client_id", client_id.expose()),
                ("client_secret", client_secret.expose()),
            ]),
            Grant::Walmart(c) => Request::post(self.path.clone())
                .form(&[("grant_type", "client_credentials")])
                .basic_auth(c.client_id.clone(), c.client_secret.clone())
                .header("accept", "application/json")
                .header("wm_svc.name", &c.service_name)
                .header("wm_qos.correlation_id", uuid::Uuid::new_v4().to_string()),
        }
        .without_token();
        let resp = self.http.send(&req).await?;
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: u64,
        }
        // serde's message could quote the token: name the problem, never the value.
        let parsed: TokenResponse =
            serde_json::from_slice(&resp.body).map_err(|_| IngestError::External {
                system: self.http.connector().to_string(),
                detail: format!(
                    "{}: the token response lacks a string `access_token` or a number `expires_in`",
                    resp.request
                ),
                retryable: false,
            })?;
        if parsed.access_token.is_empty() {
            return Err(IngestError::External {
                system: self.http.connector().to_string(),
                detail: format!(
                    "{}: the token response has an empty access_token",
                    resp.request
                ),
                retryable: false,
            });
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let token = Secret::new(parsed.access_token);
        let lifetime = Duration::from_secs(parsed.expires_in).saturating_sub(self.margin);
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((token.clone(), Instant::now() + lifetime));
        tracing::debug!(
            connector = self.http.connector(),
            expires_in = parsed.expires_in,
            "access token fetched"
        );
        Ok(token)
    }
}

impl TokenProvider for OAuthTokens {
    fn token(&self) -> BoxFuture<'_, Result<Secret, IngestError>> {
        Box::pin(async move {
            if let Some(t) = self.cached() {
                return Ok(t);
            }
            let _one_at_a_time = self.fetching.lock().await;
            if let Some(t) = self.cached() {
                return Ok(t);
            }
            self.fetch().await
        })
    }

    fn invalidate(&self, token: &Secret) {
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.as_ref().is_some_and(|(t, _)| t == token) {
            *c = None;
        }
    }
}
