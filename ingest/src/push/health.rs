//! Per-shop health of a push connector: the pull side's [`Health`] (kpiflow_source_* metrics
//! and `source.heartbeat` events), fed by acknowledged deliveries instead of syncs.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use kpiflow_core::SourceMetrics;
use kpiflow_schemas::Event;
use tokio_util::sync::CancellationToken;

use super::queue::Delivery;
use crate::pull::health::Health;
use crate::pull::{Counts, Origin};
use crate::{IngestError, Publish};

/// Health of every shop a push connector serves.
pub struct PushHealth {
    shops: Mutex<BTreeMap<String, (Origin, Health)>>,
}

impl PushHealth {
    /// Health for `connector` (e.g. `shopify_webhook`) and the shops of `origins`.
    pub fn new(connector: &'static str, origins: impl IntoIterator<Item = Origin>) -> PushHealth {
        let shops = origins
            .into_iter()
            .map(|o| {
                let h = Health::new(connector, SourceMetrics::new(connector, &o.shop));
                (o.shop.clone(), (o, h))
            })
            .collect();
        PushHealth {
            shops: Mutex::new(shops),
        }
    }

    /// Records deliveries the publisher acknowledged (`ok`) or failed: per shop of their
    /// events, what was published, the newest event time, and success or failure.
    pub fn record(&self, deliveries: &[&Delivery], ok: bool) {
        let mut per_shop: BTreeMap<&str, Counts> = BTreeMap::new();
        for e in deliveries.iter().flat_map(|d| &d.events) {
            let c = per_shop.entry(e.header.shop.as_str()).or_default();
            if ok {
                c.published += 1;
                c.newest_event_time = c.newest_event_time.max(Some(e.header.event_time));
            }
        }
        let now = Utc::now();
        let mut shops = self.shops.lock().unwrap_or_else(PoisonError::into_inner);
        for (shop, counts) in per_shop {
            if let Some((_, h)) = shops.get_mut(shop) {
                // The pull side counts records as it emits them; here they count once stored.
                h.metrics().records.inc_by(counts.published);
                h.record(now, &counts, ok);
            }
        }
    }

    /// One `source.heartbeat` per shop, now.
    pub fn heartbeats(&self) -> Vec<Event> {
        let now = Utc::now();
        self.shops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|(o, h)| h.heartbeat(o, now))
            .collect()
    }

    /// Publishes the heartbeats now and every `interval` until `shutdown`. A failure is
    /// logged: the next beat tries again.
    pub async fn beat(
        &self,
        publisher: &dyn Publish,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            let sent: Result<(), IngestError> = async {
                for e in self.heartbeats() {
                    publisher.publish(&e).await?;
                }
                publisher.flush().await
            }
            .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "heartbeat not published");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::{Channel, EventBody, SourceTz};

    #[test]
    fn acknowledged_events_count_for_their_shop() {
        let origin = Origin {
            shop: "s".into(),
            channel: Channel::Shopify,
            marketplace: "US".into(),
            source_tz: SourceTz::US_PACIFIC,
        };
        let h = PushHealth::new("test_push_health", [origin]);
        let mut e = crate::push::queue::tests::event();
        e.header.shop = "s".into();
        let d = Delivery {
            events: vec![e.clone(), e],
            dead_letters: vec![],
        };
        h.record(&[&d], true);
        h.record(&[&d], false);
        let beats = h.heartbeats();
        assert_eq!(beats.len(), 1);
        let EventBody::SourceHeartbeat(b) = &beats[0].body else {
            panic!()
        };
        assert_eq!(
            (b.records_published, b.errors, b.consecutive_failures),
            (2, 1, 1)
        );
        assert!(b.last_success.is_some());
        assert_eq!(beats[0].header.shop, "s");
    }
}
