//! Per-key rate limits (token buckets) for commands per admin and alert pushes per source.
//!
//! Buckets live in a bounded moka cache, so a flood of distinct keys cannot grow memory: the
//! least recently used buckets are dropped (a dropped bucket starts full again, which only ever
//! errs on the side of letting a rare key through).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most keys tracked at once.
const MAX_KEYS: u64 = 100_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token-bucket limiter: `per_minute` events per key per minute, with bursts up to the same.
pub(crate) struct RateLimiter {
    per_minute: u32,
    buckets: moka::sync::Cache<String, Arc<Mutex<Bucket>>>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` events per key (0 turns the limit off).
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, buckets: moka::sync::Cache::builder().max_capacity(MAX_KEYS).time_to_idle(Duration::from_secs(600)).build() }
    }

    /// Takes one token for `key` at `now`; `Err(wait)` when the key is over its limit.
    pub(crate) fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let bucket = self.buckets.get_with_by_ref(key, || Arc::new(Mutex::new(Bucket { tokens: capacity, updated: now })));
        let mut bucket = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let refill = now.saturating_duration_since(bucket.updated).as_secs_f64() * capacity / 60.0;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) * 60.0 / capacity))
        }
    }

    /// Takes one token for `key` now.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_for_refill() {
        let limiter = RateLimiter::new(3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("alice", start).is_ok());
        }
        let wait = limiter.check_at("alice", start).unwrap_err();
        assert_eq!(wait.as_secs(), 20);
        // Another key is not affected.
        assert!(limiter.check_at("bob", start).is_ok());
        // 20 s later one token is back.
        assert!(limiter.check_at("alice", start + Duration::from_secs(20)).is_ok());
        assert!(limiter.check_at("alice", start + Duration::from_secs(20)).is_err());
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limiter = RateLimiter::new(0);
        for _ in 0..1000 {
            assert!(limiter.check("anyone").is_ok());
        }
    }
}
