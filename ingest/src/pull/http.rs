//! The HTTP client every pull connector uses: base URL, rate limit, retries, access tokens.
//!
//! ```text
//!  Request ─► rate limiter ─► token (cached) ─► reqwest ─► 2xx ─► Response
//!                  ▲                              │
//!                  └── 429: Retry-After ◄─────────┤ 5xx / timeout / connection: backoff + jitter
//!                      401/403: refresh the token once ◄─┘
//! ```

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::rate_limit::{RateLimit, RateLimiter};
use super::retry::{RetryPolicy, parse_retry_after};
use super::secret::Secret;
use super::token::TokenProvider;
use crate::IngestError;
use kpiflow_core::SourceMetrics;

/// Where and how a client talks to one platform.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The platform's base URL (production, sandbox, or a local test server); request paths
    /// are joined to it.
    pub base_url: Url,
    /// Time limit of one attempt, connecting and reading the body included.
    pub timeout: Duration,
    /// Client-side request budget; `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// Retries of failed attempts.
    pub retry: RetryPolicy,
}

/// How an access token is put on a request.
#[derive(Debug, Clone)]
pub enum TokenHeader {
    /// `Authorization: Bearer <token>` (Amazon Ads, Google, Meta).
    Bearer,
    /// A named header holding the bare token: `x-amz-access-token` (SP-API),
    /// `WM_SEC.ACCESS_TOKEN` (Walmart).
    Named(HeaderName),
}

/// One request, described before it is sent, so every attempt can rebuild it.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<(&'static str, Vec<u8>)>,
    basic_auth: Option<(Secret, Secret)>,
    authenticate: bool,
    accept: Vec<StatusCode>,
}

impl Request {
    /// A GET of `path` (relative to the base URL, or an absolute URL).
    pub fn get(path: impl Into<String>) -> Request {
        Request::new(Method::GET, path)
    }

    /// A POST of `path` with no body yet.
    pub fn post(path: impl Into<String>) -> Request {
        Request::new(Method::POST, path)
    }

    fn new(method: Method, path: impl Into<String>) -> Request {
        Request {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            basic_auth: None,
            authenticate: true,
            accept: Vec::new(),
        }
    }

    /// Adds a query parameter.
    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> Request {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Adds a header; a value that is not a valid header value is an internal error at send.
    pub fn header(mut self, name: &'static str, value: impl AsRef<str>) -> Request {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }

    /// A JSON body.
    pub fn json(mut self, body: &serde_json::Value) -> Request {
        self.body = Some(("application/json", body.to_string().into_bytes()));
        self
    }

    /// A JSON body given as bytes, sent exactly as given (for signed requests, whose signature
    /// covers the body bytes).
    pub fn raw_json(mut self, body: Vec<u8>) -> Request {
        self.body = Some(("application/json", body));
        self
    }

    /// An `application/x-www-form-urlencoded` body (token requests; values may be secrets).
    pub fn form(mut self, fields: &[(&str, &str)]) -> Request {
        let mut url = Url::parse("http://form.invalid/").expect("a valid URL");
        url.query_pairs_mut().extend_pairs(fields);
        let body = url.query().unwrap_or_default().as_bytes().to_vec();
        self.body = Some(("application/x-www-form-urlencoded", body));
        self
    }

    /// HTTP Basic credentials (Walmart's client id and secret).
    pub fn basic_auth(mut self, user: Secret, password: Secret) -> Request {
        self.basic_auth = Some((user, password));
        self
    }

    /// Treats `status` as an answer rather than a failure (Walmart answers "no orders" with 404).
    pub fn accept_status(mut self, status: StatusCode) -> Request {
        self.accept.push(status);
        self
    }

    /// Sends no access token (token endpoints, pre-signed download URLs).
    pub fn without_token(mut self) -> Request {
        self.authenticate = false;
        self
    }

    /// `GET /orders/v0/orders`: names the request in errors and logs, without query values.
    pub fn describe(&self) -> String {
        let path = Url::parse(&self.path)
            .map(|u| u.path().to_string())
            .unwrap_or_else(|_| self.path.clone());
        format!("{} {path}", self.method)
    }
}

/// A successful (2xx, or accepted with [`Request::accept_status`]) response, body read.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
    /// What was requested, for error messages.
    pub request: String,
}

impl Response {
    /// Decodes the body as JSON; a body that does not fit names the field and the problem.
    pub fn json<T: DeserializeOwned>(&self, connector: &str) -> Result<T, IngestError> {
        let mut de = serde_json::Deserializer::from_slice(&self.body);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            IngestError::Input {
                source_name: connector.to_string(),
                problem: format!(
                    "{}: response field `{path}`: {}",
                    self.request,
                    e.into_inner()
                ),
            }
        })
    }
}

/// An HTTP client for one connector and shop. Cheap to clone (shares the connection pool,
/// the rate limiter and the token cache).
#[derive(Clone)]
pub struct HttpClient {
    connector: &'static str,
    client: reqwest::Client,
    options: HttpOptions,
    limiter: Option<Arc<RateLimiter>>,
    token: Option<(Arc<dyn TokenProvider>, TokenHeader)>,
    headers: Vec<(HeaderName, HeaderValue)>,
    metrics: SourceMetrics,
    throttled: Option<Throttled>,
}

/// Recognises a platform's own "slow down" answer that is not a 429 (Meta: HTTP 400 with error
/// code 17 or 80004; TikTok: HTTP 200 with code 40100): `Some(wait)` treats the response like a
/// 429 whose Retry-After is `wait` (`None`: back off).
pub type Throttled = fn(StatusCode, &HeaderMap, &[u8]) -> Option<Option<Duration>>;

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("connector", &self.connector)
            .field("base_url", &self.options.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client for `connector`, counting into `metrics`.
    pub fn new(
        connector: &'static str,
        options: HttpOptions,
        metrics: SourceMetrics,
    ) -> Result<HttpClient, IngestError> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("kpiflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| IngestError::External {
                system: connector.to_string(),
                detail: format!("building the HTTP client: {e}"),
                retryable: false,
            })?;
        Ok(HttpClient {
            connector,
            client,
            limiter: options.rate_limit.map(|l| Arc::new(RateLimiter::new(l))),
            options,
            token: None,
            headers: Vec::new(),
            metrics,
            throttled: None,
        })
    }

    /// The same client (connections, token, headers) with a request budget of its own: APIs
    /// that rate-limit per operation (SP-API Reports: createReport once a minute, getReport
    /// twice a second) get one client per operation; `None` for no limit.
    pub fn with_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.limiter = limit.map(|l| Arc::new(RateLimiter::new(l)));
        self
    }

    /// Treats the responses `detector` recognises as rate limiting, like a 429.
    pub fn with_throttle_detector(mut self, detector: Throttled) -> Self {
        self.throttled = Some(detector);
        self
    }

    /// Puts an access token from `provider` on every request (unless
    /// [`Request::without_token`]); a 401/403 refreshes it once and retries.
    pub fn with_token(mut self, provider: Arc<dyn TokenProvider>, header: TokenHeader) -> Self {
        self.token = Some((provider, header));
        self
    }

    /// Adds a header to every request, e.g. `WM_SVC.NAME`. Values are marked sensitive (some
    /// are credentials, e.g. Google's `developer-token`) and never appear in errors.
    pub fn with_header(mut self, name: &'static str, value: &str) -> Result<Self, IngestError> {
        let mut v = HeaderValue::from_str(value).map_err(|_| IngestError::Config {
            key: format!("{} header {name}", self.connector),
            value: "(hidden)".into(),
            problem: "not a valid HTTP header value".into(),
        })?;
        v.set_sensitive(true);
        self.headers.push((HeaderName::from_static(name), v));
        Ok(self)
    }

    /// The connector name.
    pub fn connector(&self) -> &'static str {
        self.connector
    }

    /// The health series requests are counted in.
    pub fn metrics(&self) -> &SourceMetrics {
        &self.metrics
    }

    fn url(&self, req: &Request) -> Result<Url, IngestError> {
        let url = if req.path.starts_with("http://") || req.path.starts_with("https://") {
            Url::parse(&req.path)
        } else {
            self.options.base_url.join(&req.path)
        };
        let mut url = url.map_err(|e| {
            IngestError::Internal(format!("{}: bad request URL: {e}", req.describe()))
        })?;
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&req.query);
        }
        Ok(url)
    }

    fn external(&self, detail: String, retryable: bool) -> IngestError {
        IngestError::External {
            system: self.connector.to_string(),
            detail,
            retryable,
        }
    }

    /// Sends `req` until it succeeds or the retry policy gives up.
    ///
    /// Retried: connection errors, timeouts, 408, 429 (after its Retry-After, else backoff) and
    /// 5xx. A 401/403 on a request with a token invalidates the token and is retried once with
    /// a fresh one. Other statuses fail at once, with the start of the body (platforms put the
    /// reason there). Errors never contain credentials: tokens travel in headers only.
    pub async fn send(&self, req: &Request) -> Result<Response, IngestError> {
        let url = self.url(req)?;
        let what = req.describe();
        let policy = &self.options.retry;
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            attempt += 1;
            if let Some(l) = &self.limiter
                && !l.acquire().await.is_zero()
            {
                self.metrics.rate_limit_waits.inc();
            }
            let mut builder = self.client.request(req.method.clone(), url.clone());
            for (k, v) in self.headers.iter().chain(&req.headers) {
                builder = builder.header(k, v);
            }
            if let Some((ct, body)) = &req.body {
                builder = builder
                    .header(reqwest::header::CONTENT_TYPE, *ct)
                    .body(body.clone());
            }
            if let Some((user, password)) = &req.basic_auth {
                builder = builder.basic_auth(user.expose(), Some(password.expose()));
            }
            let mut sent_token = None;
            if req.authenticate
                && let Some((provider, header)) = &self.token
            {
                let token = provider.token().await?;
                builder = match header {
                    TokenHeader::Bearer => builder.bearer_auth(token.expose()),
                    TokenHeader::Named(name) => {
                        let mut v = HeaderValue::from_str(token.expose()).map_err(|_| {
                            self.external(
                                "the access token is not a valid header value".into(),
                                false,
                            )
                        })?;
                        // Keeps it out of any debug output of the request.
                        v.set_sensitive(true);
                        builder.header(name, v)
                    }
                };
                sent_token = Some(token);
            }
            let retry_in = match builder.send().await {
                Err(e) => {
                    let detail = format!("{what}: {}", without_url(e));
                    if attempt >= policy.max_attempts {
                        self.metrics.errors.inc();
                        return Err(self.external(
                            format!("{detail} (gave up after {attempt} attempts)"),
                            true,
                        ));
                    }
                    tracing::warn!(connector = self.connector, attempt, error = %detail, "request failed; retrying");
                    policy.backoff(attempt)
                }
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let body = match resp.bytes().await {
                        Ok(b) => b.to_vec(),
                        Err(e) if attempt < policy.max_attempts => {
                            tracing::warn!(connector = self.connector, attempt, error = %without_url(e), "reading a response failed; retrying");
                            self.metrics.retries.inc();
                            tokio::time::sleep(policy.backoff(attempt)).await;
                            continue;
                        }
                        Err(e) => {
                            self.metrics.errors.inc();
                            return Err(self.external(
                                format!("{what}: reading the body: {}", without_url(e)),
                                true,
                            ));
                        }
                    };
                    // Some platforms throttle with a 200 and an error code in the body (TikTok).
                    let platform_throttle = self.throttled.and_then(|d| d(status, &headers, &body));
                    if platform_throttle.is_none()
                        && (status.is_success() || req.accept.contains(&status))
                    {
                        return Ok(Response {
                            status,
                            headers,
                            body,
                            request: what,
                        });
                    }
                    let excerpt = excerpt(&body);
                    let status = if platform_throttle.is_some() {
                        StatusCode::TOO_MANY_REQUESTS
                    } else {
                        status
                    };
                    match status {
                        StatusCode::TOO_MANY_REQUESTS => {
                            self.metrics.rate_limit_waits.inc();
                            let asked = platform_throttle.flatten().or_else(|| {
                                headers
                                    .get(RETRY_AFTER)
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(|v| parse_retry_after(v, Utc::now()))
                            });
                            // Without a Retry-After the server's budget is spent by its own
                            // count: empty ours so later requests pace at the sustained rate.
                            if asked.is_none()
                                && let Some(l) = &self.limiter
                            {
                                l.drain(tokio::time::Instant::now());
                            }
                            if let Some(asked) = asked
                                && asked > policy.max_retry_after
                            {
                                self.metrics.errors.inc();
                                return Err(self.external(
                                    format!(
                                        "{what}: rate limited (429) with Retry-After {}, more than retry.max_retry_after ({})",
                                        humantime::format_duration(asked),
                                        humantime::format_duration(policy.max_retry_after)
                                    ),
                                    true,
                                ));
                            }
                            if attempt >= policy.max_attempts {
                                self.metrics.errors.inc();
                                return Err(self.external(
                                    format!(
                                        "{what}: still rate limited (429) after {attempt} attempts"
                                    ),
                                    true,
                                ));
                            }
                            tracing::info!(
                                connector = self.connector,
                                ?asked,
                                "rate limited (429); waiting"
                            );
                            asked.unwrap_or_else(|| policy.backoff(attempt))
                        }
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                            if req.authenticate && self.token.is_some() && !refreshed =>
                        {
                            if let (Some((provider, _)), Some(t)) = (&self.token, &sent_token) {
                                provider.invalidate(t);
                            }
                            refreshed = true;
                            // A refresh is not a failed attempt of the request itself.
                            attempt -= 1;
                            tracing::info!(connector = self.connector, %status, "access token refused; refreshing it once");
                            continue;
                        }
                        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                            if attempt >= policy.max_attempts {
                                self.metrics.errors.inc();
                                return Err(self.external(
                                    format!("{what}: HTTP {s} after {attempt} attempts: {excerpt}"),
                                    true,
                                ));
                            }
                            tracing::warn!(connector = self.connector, attempt, status = %s, "server error; retrying");
                            policy.backoff(attempt)
                        }
                        s => {
                            self.metrics.errors.inc();
                            let hint = if matches!(
                                s,
                                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                            ) {
                                " (credentials refused even after a token refresh: check the auth settings)"
                            } else {
                                ""
                            };
                            return Err(
                                self.external(format!("{what}: HTTP {s}{hint}: {excerpt}"), false)
                            );
                        }
                    }
                }
            };
            self.metrics.retries.inc();
            tokio::time::sleep(retry_in).await;
        }
    }
}

/// reqwest's message without the URL, whose query may be long (and whose host is known).
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The first 300 characters of a body, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}
