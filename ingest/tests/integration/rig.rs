//! What every pull connector test starts from: a fixture server, a folder, a shop, a publisher.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use kpiflow_core::SourceMetrics;
use kpiflow_ingest::MemoryPublisher;
use kpiflow_ingest::pull::{
    AdAccountConfig, AdPlatform, Cursor, PullConnector, PullSettings, SecretRef, SyncReport,
};

use super::fixture::{Reply, Req, Server, pull_settings, secret_file, shop};

/// One test's surroundings: the platform's fixture server, a temporary folder for credentials
/// and cursors (shared by every connector the test builds, as by successive processes), a
/// fresh shop and an in-memory publisher.
pub(crate) struct Rig {
    pub(crate) server: Server,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) shop: String,
    pub(crate) p: MemoryPublisher,
}

/// Builds the connector under test for a rig.
pub(crate) type Build = fn(&Rig) -> PullConnector;

impl Rig {
    /// A rig around `server`.
    pub(crate) fn new(server: Server) -> Rig {
        Rig {
            server,
            dir: tempfile::tempdir().unwrap(),
            shop: shop(),
            p: MemoryPublisher::new(),
        }
    }

    /// A rig whose server answers `api` on `path` and 404 elsewhere.
    pub(crate) async fn serving(
        path: &'static str,
        api: impl Fn(&Req) -> Reply + Send + Sync + 'static,
    ) -> Rig {
        Rig::new(
            Server::start(move |req| match req.path.as_str() {
                p if p == path => api(req),
                other => Reply::status(404, format!("no route {other}")),
            })
            .await,
        )
    }

    /// Pull settings pointing at the server, cursors in the rig's folder.
    pub(crate) fn pull(&self) -> PullSettings {
        pull_settings(&self.server, &self.dir.path().join("cursors"))
    }

    /// An ad account table for the rig's shop, pulling from the server, with the platform's
    /// defaults (and the account in US Pacific time, in USD); `keys` are the platform's own.
    pub(crate) fn ad_account<P: AdPlatform>(&self, keys: P) -> AdAccountConfig<P> {
        AdAccountConfig {
            shop: self.shop.clone(),
            marketplace: P::MARKETPLACE.into(),
            time_zone: "America/Los_Angeles".into(),
            currency: "USD".into(),
            attribution_window: P::ATTRIBUTION_WINDOW.into(),
            pull: self.pull(),
            platform: keys,
        }
    }

    /// A `file:` credential `name` holding `value`, in the rig's folder.
    pub(crate) fn secret(&self, name: &str, value: &str) -> SecretRef {
        secret_file(self.dir.path(), name, value)
    }

    /// One sync by a freshly built connector (a process that starts, syncs and stops).
    pub(crate) async fn sync(&self, build: Build) -> SyncReport {
        build(self).sync_once(&self.p).await.expect("sync succeeds")
    }

    /// One sync that must have waited out a Retry-After of `secs` seconds.
    pub(crate) async fn sync_waiting(&self, build: Build, secs: u64) {
        let began = Instant::now();
        self.sync(build).await;
        assert!(
            began.elapsed() >= Duration::from_secs(secs),
            "a Retry-After of {secs} s was honoured"
        );
    }

    /// The rate-limit waits and retries `connector` counted for the rig's shop.
    pub(crate) fn waits_and_retries(&self, connector: &str) -> (u64, u64) {
        let m = SourceMetrics::new(connector, &self.shop);
        (m.rate_limit_waits.get(), m.retries.get())
    }

    /// The cursor `connector` saved for the rig's shop.
    pub(crate) async fn cursor(&self, c: &PullConnector, connector: &str) -> Option<Cursor> {
        c.cursors().load(connector, &self.shop).await.unwrap()
    }

    /// A restart: a new process reads the saved cursor and syncs from it; returns that
    /// cursor, from which the second sync started (minus the overlap).
    pub(crate) async fn restart(&self, build: Build, connector: &str) -> Cursor {
        let saved = self
            .cursor(&build(self), connector)
            .await
            .expect("a cursor");
        self.sync(build).await;
        saved
    }
}

/// A handler answering the n-th call (from 0) with `fault(n)` where it gives one, and with
/// `page` otherwise.
pub(crate) fn scripted(
    fault: impl Fn(usize) -> Option<Reply> + Send + Sync + 'static,
    page: impl Fn(&Req) -> Reply + Send + Sync + 'static,
) -> impl Fn(&Req) -> Reply + Send + Sync + 'static {
    let calls = AtomicUsize::new(0);
    move |req| fault(calls.fetch_add(1, Ordering::SeqCst)).unwrap_or_else(|| page(req))
}

/// A server answering `api` on `path` and `token(req, n)` for the n-th token asked (from 1)
/// on `token_path`; 404 elsewhere.
pub(crate) async fn api_with_tokens(
    path: &'static str,
    api: impl Fn(&Req) -> Reply + Send + Sync + 'static,
    token_path: &'static str,
    token: impl Fn(&Req, usize) -> Reply + Send + Sync + 'static,
) -> Server {
    let tokens = AtomicUsize::new(0);
    Server::start(move |req| match req.path.as_str() {
        p if p == token_path => token(req, tokens.fetch_add(1, Ordering::SeqCst) + 1),
        p if p == path => api(req),
        other => Reply::status(404, format!("no route {other}")),
    })
    .await
}

/// `t`'s date in `tz`: report dates are the ad account's days.
pub(crate) fn day_in(tz: chrono_tz::Tz, t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}
