//! Client-side rate limiting: a token bucket (rate + burst), as the platforms document theirs.
//!
//! Hand-written rather than `governor`: it is a dozen lines, and its arithmetic is a pure
//! function of the clock ([`RateLimiter::reserve`]) that tests drive with chosen instants.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// A platform's request budget: `rate` requests per second on average, up to `burst` at once
/// (Amazon SP-API getOrders: `rate = 0.0167`, `burst = 20`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second, sustained (may be below 1).
    pub rate: f64,
    /// Requests that may be sent at once after a quiet period.
    pub burst: u32,
}

impl RateLimit {
    /// `None` when the values make sense, else the problem.
    pub fn problem(&self) -> Option<String> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Some(format!(
                "rate must be a positive number of requests per second, got {}",
                self.rate
            ));
        }
        if self.burst == 0 {
            return Some("burst must be at least 1".into());
        }
        None
    }
}

/// A token bucket on tokio's clock. It starts full; each request takes a token, and a request
/// that finds none reserves the next one and sleeps until it is due, so waiting callers are
/// served in order at the sustained rate.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Available tokens; negative when callers hold reservations.
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter {
            limit,
            state: Mutex::new(Bucket {
                tokens: f64::from(limit.burst),
                refilled: Instant::now(),
            }),
        }
    }

    /// Takes a token, sleeping until one is due; returns how long it slept (zero if a token
    /// was available).
    pub async fn acquire(&self) -> Duration {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// Takes (or reserves) a token at `now`; returns how long the caller must wait for it.
    pub fn reserve(&self, now: Instant) -> Duration {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut b, now);
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.limit.rate)
        }
    }

    /// Empties the bucket at `now`: the server said the budget is spent (a 429), whatever we
    /// counted.
    pub fn drain(&self, now: Instant) {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut b, now);
        b.tokens = b.tokens.min(0.0);
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let earned = now.saturating_duration_since(b.refilled).as_secs_f64() * self.limit.rate;
        b.tokens = (b.tokens + earned).min(f64::from(self.limit.burst));
        b.refilled = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn bursts_then_paces_at_the_rate() {
        let l = RateLimiter::new(RateLimit {
            rate: 0.5,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.reserve(t0), Duration::ZERO);
        }
        // Callers beyond the burst queue up one token interval (2 s) apart.
        assert_eq!(l.reserve(t0), secs(2.0));
        assert_eq!(l.reserve(t0), secs(4.0));
        // Once their turns passed, the bucket refills at the rate, never beyond the burst.
        let later = t0 + secs(4.0 + 100.0);
        for _ in 0..3 {
            assert_eq!(l.reserve(later), Duration::ZERO);
        }
        assert_eq!(l.reserve(later), secs(2.0));
    }

    #[test]
    fn a_drained_bucket_waits() {
        let l = RateLimiter::new(RateLimit {
            rate: 1.0,
            burst: 20,
        });
        let t0 = Instant::now();
        l.drain(t0);
        assert_eq!(l.reserve(t0), secs(1.0));
    }

    #[tokio::test]
    async fn acquire_sleeps_for_its_turn() {
        let l = RateLimiter::new(RateLimit {
            rate: 50.0,
            burst: 1,
        });
        assert_eq!(l.acquire().await, Duration::ZERO);
        let began = Instant::now();
        let waited = l.acquire().await;
        assert!(waited > Duration::ZERO);
        assert!(began.elapsed() >= waited);
    }

    #[test]
    fn nonsense_limits_are_named() {
        let bad = RateLimit {
            rate: 0.0,
            burst: 1,
        };
        assert!(bad.problem().unwrap().contains("got 0"));
        let bad = RateLimit {
            rate: 1.0,
            burst: 0,
        };
        assert!(bad.problem().is_some());
    }
}
