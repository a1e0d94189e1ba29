//! The shared machinery of pull connectors (those that poll a platform's API).
//!
//! ```text
//!   settings ─► http (rate_limit, retry, token) ─► Source::sync ─► emit ─► Publish
//!                                                       ▲                    │ flush
//!                       runner: window from cursor ─────┘   cursor.save ◄────┘
//!                               heartbeat + metrics (health) after every sync
//! ```
//!
//! A connector implements [`Source`] (one window of one platform, for one shop) and is run by
//! [`PullConnector`]; everything else lives here, one file per concern:
//! - [`http`]: the HTTP client (base URL, timeouts, 429 + Retry-After, backoff with jitter on
//!   5xx and connection errors, token refresh on 401/403);
//! - [`rate_limit`]: the client-side token bucket; [`retry`]: backoff and Retry-After;
//! - [`token`]: access tokens (Login With Amazon, Walmart); [`secret`]: credentials from
//!   `env:`/`file:` that never print;
//! - [`cursor`]: durable checkpoints per (connector, shop), written atomically, saved only
//!   after the publisher flushed what they cover;
//! - [`emit`]: what a source hands events and dead letters to; [`health`]: heartbeats and
//!   per-shop metrics; [`settings`]: the shared `pull` config table;
//! - [`runner`]: the poll loop and [`backfill`];
//! - [`ad_account`]: what the ad connectors share (account table, trailing report window);
//! - [`report`]: what report APIs share (polling a requested report, gunzip).

pub mod ad_account;
pub mod cursor;
pub mod emit;
pub mod health;
pub mod http;
pub mod rate_limit;
pub mod report;
pub mod retry;
pub mod runner;
pub mod secret;
pub mod settings;
pub mod token;

pub use ad_account::{
    AdAccount, AdAccountConfig, AdPlatform, Platform, ReadReport, ReportJob, trailing_defaults,
};
pub use cursor::{Cursor, CursorStore};
pub use emit::{Counts, Emitter, Fact, Mapped, Origin};
pub use http::{HttpClient, HttpOptions, Request, Response, Throttled, TokenHeader};
pub use rate_limit::{RateLimit, RateLimiter};
pub use report::{Polled, ReportPoll, gunzip};
pub use retry::RetryPolicy;
pub(crate) use runner::impl_source;
pub use runner::{Progress, PullConnector, Source, SyncReport, Window, backfill};
pub use secret::{Secret, SecretRef};
pub use settings::{Pull, PullDefaults, PullSettings};
pub use token::{
    LwaConfig, OAuthTokens, StaticToken, TokenProvider, WalmartAuthConfig, lwa_client,
};
