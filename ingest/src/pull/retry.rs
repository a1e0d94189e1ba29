//! When to try a request again: exponential backoff with jitter, and the server's Retry-After.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How a request is retried after a 5xx, a 429, a timeout or a connection error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included, before the request fails. Default `6`.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubled for each further one, e.g. `"500ms"`.
    /// Default `"1s"`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The longest backoff between two attempts. Default `"2m"`.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// The longest Retry-After honoured; a server asking for more fails the request (the next
    /// sync tries again). Default `"15m"`.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(120),
            max_retry_after: Duration::from_secs(15 * 60),
        }
    }
}

impl RetryPolicy {
    /// `None` when the values make sense, else (key, value, problem).
    pub fn problem(&self) -> Option<(&'static str, String, String)> {
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Some((
                "max_attempts",
                self.max_attempts.to_string(),
                "must be between 1 and 100".into(),
            ));
        }
        if self.initial_backoff > self.max_backoff {
            return Some((
                "initial_backoff",
                format!(
                    "{:?}",
                    humantime::format_duration(self.initial_backoff).to_string()
                ),
                format!(
                    "must not exceed max_backoff ({})",
                    humantime::format_duration(self.max_backoff)
                ),
            ));
        }
        None
    }

    /// The pause before retry number `retry` (1 for the first): the exponential step, of which
    /// the upper half is random ("equal jitter"), so clients that failed together do not come
    /// back together, yet none retries at once.
    pub fn backoff(&self, retry: u32) -> Duration {
        let step = self
            .initial_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max_backoff);
        let half = step / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

/// Reads a Retry-After header: delay-seconds (`"120"`) or an HTTP date
/// (`"Wed, 21 Oct 2026 07:28:00 GMT"`), relative to `now`. A date in the past means "now";
/// anything else unreadable is `None`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // Fractional seconds are not in RFC 9110 but some gateways send them.
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        at.with_timezone(&Utc)
            .signed_duration_since(now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now: DateTime<Utc> = "2026-10-21T07:27:00Z".parse().unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
            ..RetryPolicy::default()
        };
        for _ in 0..50 {
            let b1 = p.backoff(1);
            assert!((50..=100).contains(&b1.as_millis()), "{b1:?}");
            let b3 = p.backoff(3);
            assert!((200..=400).contains(&b3.as_millis()), "{b3:?}");
            let b9 = p.backoff(9);
            assert!((350..=700).contains(&b9.as_millis()), "{b9:?}");
        }
        assert!(p.backoff(u32::MAX) <= Duration::from_millis(700));
    }

    #[test]
    fn nonsense_policies_are_named() {
        let p = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.problem().unwrap().0, "max_attempts");
        let p = RetryPolicy {
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        assert_eq!(p.problem().unwrap().0, "initial_backoff");
    }
}
