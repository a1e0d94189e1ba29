//! Alertmanager API v2: `POST /api/v2/alerts` with labels, annotations, `startsAt`, `endsAt`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use kpiflow_schemas::{BreachEvent, BreachState};
use serde::Serialize;

use super::{AlertSink, AlertsConfig, annotations, http_client, labels, post_json, redacted};
use crate::SinkError;

/// Most alerts in one POST when re-sending (Alertmanager reads the whole body into memory).
const MAX_ALERTS_PER_POST: usize = 500;
/// A firing alert is held `HOLD_FACTOR × resend_interval` past each send, like Prometheus:
/// a few missed re-sends do not resolve it.
const HOLD_FACTOR: u32 = 4;

/// One `postableAlert` of the API v2.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostableAlert {
    /// Identify the alert; the same for a breach's firing and resolved events.
    pub labels: BTreeMap<String, String>,
    /// Text for humans.
    pub annotations: BTreeMap<String, String>,
    /// When the breach opened.
    #[serde(rename = "startsAt")]
    pub starts_at: DateTime<Utc>,
    /// When Alertmanager may consider it resolved: in the future while firing, the resolve
    /// time once resolved.
    #[serde(rename = "endsAt")]
    pub ends_at: DateTime<Utc>,
    /// A link back to where the alert came from.
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

impl PostableAlert {
    /// The alert for `b` as of `now`. Firing: `endsAt = now + hold`. Resolved: `endsAt` is the
    /// resolve's event time, capped at `now` (a future `endsAt` would keep it firing) and never
    /// before `startsAt`.
    ///
    /// `startsAt` is the opening event's time (`opened`, or `b` itself when firing), capped at
    /// `now`: event time may run ahead of the wall clock in a replay.
    pub fn from_breach(
        b: &BreachEvent,
        opened: Option<&BreachEvent>,
        now: DateTime<Utc>,
        hold: Duration,
        generator_url: Option<&str>,
    ) -> PostableAlert {
        let first = opened.unwrap_or(b);
        let starts_at = first.at.min(now);
        let ends_at = match b.state {
            BreachState::Firing => now + hold,
            BreachState::Resolved => b.at.min(now).max(starts_at),
        };
        PostableAlert {
            // A resolve must carry the very labels its firing had, or Alertmanager would see
            // a different alert; the firing event is the reference when known.
            labels: labels(first),
            annotations: annotations(b),
            starts_at,
            ends_at,
            generator_url: generator_url.map(str::to_string),
        }
    }
}

/// Pushes breaches to one Alertmanager.
#[derive(Debug)]
pub struct Alertmanager {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    target: String,
    resend_interval: Duration,
    generator_url: Option<String>,
}

impl Alertmanager {
    /// A client for `cfg.alertmanager` (validated by the caller).
    pub fn new(cfg: &AlertsConfig) -> Result<Self, SinkError> {
        let am = &cfg.alertmanager;
        let bad_url = |problem: String| SinkError::Config {
            key: "alerts.alertmanager.url".into(),
            value: format!("{:?}", am.url),
            problem,
        };
        let base = reqwest::Url::parse(&am.url).map_err(|e| bad_url(e.to_string()))?;
        let endpoint = base
            .join(&format!(
                "{}/api/v2/alerts",
                base.path().trim_end_matches('/')
            ))
            .map_err(|e| bad_url(e.to_string()))?;
        let client = http_client(cfg)?;
        Ok(Alertmanager {
            client,
            target: format!("alertmanager {}", redacted(&endpoint)),
            endpoint,
            resend_interval: am.resend_interval,
            generator_url: am.generator_url.clone(),
        })
    }

    fn hold(&self) -> Duration {
        self.resend_interval * HOLD_FACTOR
    }

    async fn post(&self, alerts: &[PostableAlert]) -> Result<(), SinkError> {
        let body = serde_json::to_vec(alerts)
            .map_err(|e| SinkError::Internal(format!("encoding alerts: {e}")))?;
        post_json(self.client.post(self.endpoint.clone()), &self.target, body).await
    }
}

impl AlertSink for Alertmanager {
    fn kind(&self) -> &'static str {
        "alertmanager"
    }

    fn component(&self) -> &'static str {
        "alerts.alertmanager"
    }

    fn deliver<'a>(
        &'a self,
        breach: &'a BreachEvent,
        opened: Option<&'a BreachEvent>,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let alert = PostableAlert::from_breach(
                breach,
                opened,
                Utc::now(),
                self.hold(),
                self.generator_url.as_deref(),
            );
            self.post(std::slice::from_ref(&alert)).await
        })
    }

    fn resend_interval(&self) -> Option<Duration> {
        Some(self.resend_interval)
    }

    fn resend<'a>(&'a self, open: Vec<&'a BreachEvent>) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let now = Utc::now();
            for chunk in open.chunks(MAX_ALERTS_PER_POST) {
                let alerts: Vec<PostableAlert> = chunk
                    .iter()
                    .map(|b| {
                        PostableAlert::from_breach(
                            b,
                            None,
                            now,
                            self.hold(),
                            self.generator_url.as_deref(),
                        )
                    })
                    .collect();
                self.post(&alerts).await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::tests::breach_fixtures;

    #[test]
    fn firing_is_held_open_and_resolved_ends_at_its_time() {
        let fx = breach_fixtures();
        let (firing, resolved) = (&fx[0], &fx[1]);
        let now: DateTime<Utc> = "2025-03-16T00:00:00Z".parse().unwrap();
        let hold = Duration::from_secs(240);
        let a = PostableAlert::from_breach(firing, None, now, hold, Some("http://grafana/x"));
        assert_eq!(a.starts_at, firing.at);
        assert_eq!(a.ends_at, now + hold);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["labels"]["alertname"], firing.rule.as_str());
        assert_eq!(json["generatorURL"], "http://grafana/x");
        assert!(
            json["startsAt"]
                .as_str()
                .unwrap()
                .starts_with("2025-03-15T00:00:00")
        );

        let r = PostableAlert::from_breach(resolved, Some(firing), now, hold, None);
        assert_eq!(r.labels, a.labels, "the resolve must name the same alert");
        assert_eq!(r.starts_at, firing.at);
        assert_eq!(r.ends_at, resolved.at);
        assert_eq!(r.annotations["summary"], resolved.message);
    }

    #[test]
    fn times_never_run_ahead_of_the_wall_clock() {
        let fx = breach_fixtures();
        let now: DateTime<Utc> = "2025-03-15T03:00:00Z".parse().unwrap();
        let r = PostableAlert::from_breach(&fx[1], Some(&fx[0]), now, Duration::ZERO, None);
        assert_eq!(r.ends_at, now, "a resolve stamped in the future ends now");
        let early: DateTime<Utc> = "2025-03-14T00:00:00Z".parse().unwrap();
        let f = PostableAlert::from_breach(&fx[0], None, early, Duration::from_secs(1), None);
        assert_eq!(f.starts_at, early);
    }

    #[test]
    fn the_endpoint_keeps_a_path_prefix() {
        let mut cfg = AlertsConfig::default();
        cfg.alertmanager.url = "http://am.example:9093/prefix/".into();
        let am = Alertmanager::new(&cfg).unwrap();
        assert_eq!(
            am.endpoint.as_str(),
            "http://am.example:9093/prefix/api/v2/alerts"
        );
        cfg.alertmanager.url = "http://am.example:9093".into();
        let am = Alertmanager::new(&cfg).unwrap();
        assert_eq!(am.endpoint.as_str(), "http://am.example:9093/api/v2/alerts");
    }
}
