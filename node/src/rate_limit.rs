//! Token buckets, one per key (a customer, or a source address): a
//! sustained rate and a burst. A request over the limit gets 429 with
//! `Retry-After`, and changes nothing. A bucket that has refilled is the
//! same as no bucket, so full ones are dropped when the map grows: the
//! memory stays bounded however many addresses a client uses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The bucket of one customer: tokens left at `updated`.
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Map size past which full buckets are dropped before adding a new one.
const PRUNE_ABOVE: usize = 10_000;

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    map: HashMap<String, Bucket>,
    /// Size at which full buckets are next dropped.
    prune_at: usize,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: f64) -> Self {
        RateLimiter {
            per_second,
            burst: burst.max(1.0),
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                prune_at: PRUNE_ABOVE,
            }),
        }
    }

    /// Takes one token for `customer` at `now`; on refusal, the seconds until
    /// a token is available (at least 1, as `Retry-After` counts whole seconds).
    pub fn check_at(&self, customer: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.map.len() >= buckets.prune_at && !buckets.map.contains_key(customer) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * rate < burst
            });
            // Pruning again only after the map doubles keeps it amortised
            // O(1) even when every bucket is in use.
            buckets.prune_at = PRUNE_ABOVE.max(2 * buckets.map.len());
        }
        let bucket = buckets.map.entry(customer.to_string()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }

    pub fn check(&self, customer: &str) -> Result<(), u64> {
        self.check_at(customer, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_allowed_then_the_sustained_rate() {
        let limiter = RateLimiter::new(2.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at("a", t0), Ok(()));
        }
        assert_eq!(limiter.check_at("a", t0), Err(1));
        // Another customer has its own bucket.
        assert_eq!(limiter.check_at("b", t0), Ok(()));
        // Half a second at 2/s refills one token.
        assert_eq!(
            limiter.check_at("a", t0 + Duration::from_millis(500)),
            Ok(())
        );
        assert!(limiter
            .check_at("a", t0 + Duration::from_millis(500))
            .is_err());
    }

    #[test]
    fn full_buckets_are_dropped_when_many_keys_pass_and_busy_ones_are_kept() {
        let limiter = RateLimiter::new(10.0, 2.0);
        let t0 = Instant::now();
        limiter.check_at("busy", t0).unwrap();
        limiter.check_at("busy", t0).unwrap();
        for i in 0..PRUNE_ABOVE - 1 {
            limiter.check_at(&format!("10.0.{i}"), t0).unwrap();
        }
        // A second later every bucket has refilled (10/s), "busy" too; the
        // next new key finds the map at the threshold and drops them all.
        limiter
            .check_at("new", t0 + Duration::from_secs(1))
            .unwrap();
        let len = limiter.buckets.lock().unwrap().map.len();
        assert_eq!(len, 1, "only the new key's bucket remains");
        // Buckets still in use survive a prune.
        for i in 0..PRUNE_ABOVE * 2 {
            let _ = limiter.check_at(&format!("k{i}"), t0 + Duration::from_secs(1));
        }
        assert!(limiter.check_at("new", t0 + Duration::from_secs(1)).is_ok());
        assert!(limiter
            .check_at("new", t0 + Duration::from_secs(1))
            .is_err());
    }
}
