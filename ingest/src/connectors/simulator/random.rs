//! Seeded random streams, one per concern, and the few distributions the simulator draws from.
//!
//! Every concern (a shop's orders, a campaign's reports, a SKU's stock, delivery faults) draws
//! from its own ChaCha stream of the seed, so adding a shop or an anomaly does not reshuffle
//! the others' draws.

use chrono::TimeDelta;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a random stream is for; part of the stream id.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stream {
    Catalog = 1,
    Orders = 2,
    Ads = 3,
    Inventory = 4,
    Delivery = 5,
}

/// The random stream for `concern` and `index` (a shop, campaign or SKU number) under `seed`.
pub(super) fn stream(seed: u64, concern: Stream, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((concern as u64) << 56) ^ index);
    rng
}

/// A short, seed-dependent number in `0..1000`, so ids of different seeds differ.
pub(super) fn salt(seed: u64) -> u64 {
    // SplitMix64's finaliser: a well-mixed function of the seed, no RNG state involved.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % 1000
}

/// A duration of whole seconds, uniform in `[lo, hi]` seconds.
pub(super) fn secs(rng: &mut ChaCha8Rng, lo: i64, hi: i64) -> TimeDelta {
    TimeDelta::seconds(if hi > lo {
        rng.random_range(lo..=hi)
    } else {
        lo
    })
}

/// A duration of whole seconds, uniform in `[lo, hi]` hours.
pub(super) fn hours(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> TimeDelta {
    secs(rng, (lo * 3600.0) as i64, (hi * 3600.0) as i64)
}

/// A uniform `f64` in `[lo, hi)`.
pub(super) fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Picks a fixed share of a sequence of draws, evenly: any run of `n` consecutive draws has
/// `n * share` hits, give or take one. Used for the shares marketplaces hold sellers to, so a
/// healthy shop's daily KPIs stay near their targets and only injected anomalies cross
/// thresholds (independent coin flips would cross them by chance on some days).
#[derive(Debug, Clone)]
pub(super) struct Quota {
    acc: f64,
    share: f64,
}

impl Quota {
    /// A quota of `share`, starting at a random phase.
    pub(super) fn new(rng: &mut ChaCha8Rng, share: f64) -> Quota {
        Quota {
            acc: rng.random::<f64>(),
            share,
        }
    }

    /// Whether the next draw is a hit.
    pub(super) fn hit(&mut self) -> bool {
        self.acc += self.share;
        if self.acc >= 1.0 {
            self.acc -= 1.0;
            true
        } else {
            false
        }
    }
}

/// `true` with probability `p` (never for a `p` that is not a number).
pub(super) fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// A Poisson count with mean `lambda`: exact (Knuth) for small means, normal beyond.
pub(super) fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u64 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 0;
    }
    if lambda < 30.0 {
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = rng.random::<f64>();
        while p > limit {
            k += 1;
            p *= rng.random::<f64>();
        }
        return k;
    }
    // Box-Muller; 1 - u keeps the logarithm finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (lambda + lambda.sqrt() * z).round().max(0.0) as u64
}

/// An index drawn with the given cumulative weights (ascending, last = total).
pub(super) fn weighted(rng: &mut ChaCha8Rng, cumulative: &[f64]) -> usize {
    let total = cumulative.last().copied().unwrap_or(0.0);
    let x = rng.random::<f64>() * total;
    cumulative
        .iter()
        .position(|c| x < *c)
        .unwrap_or(cumulative.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_and_repeatable() {
        let draw = |c, i| stream(42, c, i).random::<u64>();
        assert_eq!(draw(Stream::Orders, 0), draw(Stream::Orders, 0));
        assert_ne!(draw(Stream::Orders, 0), draw(Stream::Orders, 1));
        assert_ne!(draw(Stream::Orders, 0), draw(Stream::Ads, 0));
        assert_ne!(salt(1), salt(2));
    }

    #[test]
    fn poisson_has_the_right_mean() {
        let mut rng = stream(1, Stream::Orders, 0);
        for lambda in [0.5, 4.0, 120.0] {
            let n = 20_000;
            let mean = (0..n).map(|_| poisson(&mut rng, lambda)).sum::<u64>() as f64 / n as f64;
            assert!(
                (mean - lambda).abs() < lambda * 0.05 + 0.02,
                "{lambda}: {mean}"
            );
        }
        assert_eq!(poisson(&mut rng, 0.0), 0);
    }

    #[test]
    fn quotas_hit_their_share_in_every_window() {
        let mut rng = stream(1, Stream::Orders, 0);
        let mut q = Quota::new(&mut rng, 0.02);
        let hits: Vec<bool> = (0..10_000).map(|_| q.hit()).collect();
        for window in hits.windows(130) {
            let n = window.iter().filter(|h| **h).count();
            assert!((2..=3).contains(&n), "{n}");
        }
    }

    #[test]
    fn weighted_picks_follow_weights() {
        let mut rng = stream(1, Stream::Catalog, 0);
        let cumulative = [1.0, 1.0, 4.0];
        let mut counts = [0; 3];
        for _ in 0..10_000 {
            counts[weighted(&mut rng, &cumulative)] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((2200..2800).contains(&counts[0]), "{counts:?}");
    }
}
