//! `threepl`: shipment milestones and stock levels from a 3PL / overseas warehouse, read from a
//! CSV drop folder ([`folder`]) and/or received on a signed JSON webhook ([`webhook`]); both
//! map records with the same code ([`records`]), so both give the same event ids.
//!
//! # File format (one kind per file, told apart by the header)
//!
//! Shipment milestones → `shipment.milestone` (a `milestone` column):
//!
//! | column        | required | meaning                                                         |
//! |---------------|----------|-----------------------------------------------------------------|
//! | `shop`        | yes      | kpiflow shop id, one of `[connectors.threepl.shops]`            |
//! | `warehouse`   | yes      | warehouse code                                                  |
//! | `shipment_id` | yes      | the warehouse's shipment id                                     |
//! | `milestone`   | yes      | received, packed, handed_to_carrier, in_transit, delivered, exception |
//! | `occurred_at` | yes      | RFC 3339 with offset, e.g. `2026-11-03T09:15:00-08:00`          |
//! | `units`       | yes      | units in the shipment, at least 1                               |
//! | `order_id`    | no       | the marketplace order it fulfils                                |
//! | `carrier`     | no       | carrier name                                                    |
//! | `tracking_id` | no       | tracking number                                                 |
//! | `sku`         | no       | seller SKU, when the shipment holds one SKU                     |
//!
//! Stock levels → `inventory.snapshot` at location `warehouse`, kind `third_party` (a
//! `sellable` column): `shop`, `warehouse`, `sku`, `sellable`, `as_of` (RFC 3339) required;
//! `inbound`, `reserved`, `unfulfillable` optional (0 when absent). Counts are whole numbers.
//!
//! Header names are case-insensitive, cells are trimmed, extra columns are ignored, a UTF-8
//! byte-order mark is skipped. Samples: `ingest/fixtures/threepl/`.
//!
//! # Ids and restarts
//!
//! `threepl-<shop>-<warehouse>-<shipment_id>-<milestone>-<occurred_at unix seconds>` and
//! `threepl-<shop>-<warehouse>-<sku>-<as_of unix seconds>`: a file read again after a crash,
//! or the same record arriving by webhook, is counted once by the processor.

pub mod config;
pub mod folder;
pub mod records;
pub mod webhook;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{DropConfig, ThreeplConfig, ThreeplShop, ThreeplWebhookConfig};
pub use folder::DropFolder;

use crate::connector::{Connector, RunStats, StopReason};
use crate::pull::Origin;
use crate::pull::secret::Secret;
use crate::push::health::PushHealth;
use crate::push::metrics::{PushMetrics, PushStats};
use crate::push::receiver::{self, Receiver, ReceiverOptions};
use crate::{IngestError, Publish};

/// The registry name.
pub const NAME: &str = "threepl";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.threepl";
/// The config section.
pub const SECTION: &str = "connectors.threepl";

/// The connector: the drop folder and the webhook, whichever are configured, until shutdown.
pub struct Threepl {
    cfg: ThreeplConfig,
    shops: Arc<std::collections::BTreeMap<String, ThreeplShop>>,
    metrics: PushMetrics,
}

impl Threepl {
    /// Validates `cfg`; nothing is read or bound yet.
    pub fn new(cfg: ThreeplConfig) -> Result<Threepl, IngestError> {
        cfg.validate()?;
        let origins = cfg.shops.iter().map(|(id, s)| Origin {
            shop: id.clone(),
            channel: s.channel,
            marketplace: s.marketplace.clone(),
            source_tz: s.time_zone,
        });
        let health = Arc::new(PushHealth::new(NAME, origins));
        Ok(Threepl {
            shops: Arc::new(cfg.shops.clone()),
            cfg,
            metrics: PushMetrics::new(COMPONENT).with_health(health),
        })
    }

    /// The counters so far (both paths).
    pub fn stats(&self) -> PushStats {
        self.metrics.snapshot()
    }

    /// The drop-folder watcher, if configured.
    pub fn drop_folder(&self) -> Option<DropFolder> {
        self.cfg
            .drop
            .clone()
            .map(|d| DropFolder::new(d, self.shops.clone(), self.metrics.clone()))
    }

    /// Binds the webhook with its configured secret, if configured.
    pub async fn bind_webhook(&self) -> Result<Option<Receiver>, IngestError> {
        let Some(w) = &self.cfg.webhook else {
            return Ok(None);
        };
        let secret = w.secret.resolve(&webhook_secret_key())?;
        self.bind_webhook_with_secret(secret).await
    }

    /// Like [`Threepl::bind_webhook`] with a secret obtained elsewhere.
    pub async fn bind_webhook_with_secret(
        &self,
        secret: Secret,
    ) -> Result<Option<Receiver>, IngestError> {
        let Some(w) = &self.cfg.webhook else {
            return Ok(None);
        };
        let opts = ReceiverOptions {
            listen: w.listen,
            listen_key: format!("{SECTION}.webhook.listen"),
            path: w.path.clone(),
            signature_header: w.signature_header.to_ascii_lowercase(),
            max_body_bytes: w.max_body_bytes,
            ack_deadline: w.ack_deadline,
            recent_deliveries: w.recent_deliveries,
            queue_capacity: w.queue_capacity,
            http: w.http.clone(),
        };
        let mapper = Arc::new(webhook::ThreeplMapper {
            shops: self.shops.clone(),
        });
        receiver::bind(opts, secret, mapper, self.metrics.clone())
            .await
            .map(Some)
    }
}

impl Connector for Threepl {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run<'a>(
        &'a mut self,
        publisher: &'a dyn Publish,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<RunStats, IngestError>> {
        Box::pin(async move {
            let began = Instant::now();
            publisher.ensure_topics().await?;
            let hook = self.bind_webhook().await?;
            let folder = self.drop_folder();
            let serving = async {
                match hook {
                    Some(r) => {
                        tracing::info!(addr = %r.local_addr(), "3pl webhook listening");
                        r.serve(publisher, shutdown.clone()).await
                    }
                    None => Ok(()),
                }
            };
            let watching = async {
                match &folder {
                    Some(f) => {
                        let r = f.run(publisher, shutdown.clone()).await;
                        // A broken folder stops the webhook too: the operator must see it.
                        if r.is_err() {
                            shutdown.cancel();
                        }
                        r
                    }
                    None => Ok(()),
                }
            };
            let beating = self.metrics.health().expect("set in new").beat(
                publisher,
                self.cfg.heartbeat_interval,
                shutdown.clone(),
            );
            let (served, watched, ()) = tokio::join!(serving, watching, beating);
            served?;
            watched?;
            let s = self.stats();
            Ok(RunStats {
                published: s.published,
                dead_lettered: s.dead_lettered,
                stop: StopReason::Shutdown,
                elapsed: began.elapsed(),
            })
        })
    }
}

/// Builds the connector from its section (the registry's entry point).
pub(crate) fn build(section: serde_json::Value) -> Result<Box<dyn Connector>, IngestError> {
    let threepl = Threepl::new(ThreeplConfig::from_value(&section)?)?;
    // The webhook's secret is read again when it binds; checking it here refuses a missing
    // one before any I/O (and in check-config).
    if let Some(w) = &threepl.cfg.webhook {
        w.secret.check(&webhook_secret_key())?;
    }
    Ok(Box::new(threepl))
}

/// The webhook secret's config key, named in errors.
fn webhook_secret_key() -> String {
    format!("{SECTION}.webhook.secret")
}
