//! Brute-force protection for logins. Failed attempts are counted per e-mail and per client
//! address within a sliding window; past the limit, attempts are refused (before any password
//! is checked) until the oldest counted failure leaves the window. A successful login clears
//! the e-mail's count; an address's count only ages out, so one valid account cannot be used
//! to launder failures against others.
//!
//! The counts live in this process's memory: each auth replica throttles on its own, and a
//! restart forgets them. The map is bounded so a flood of distinct keys cannot exhaust memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Most keys tracked at once; past it, keys with no failure left in the window are dropped,
/// and if that is not enough the new key is not tracked (the per-e-mail limit still applies).
const MAX_TRACKED_KEYS: usize = 100_000;

/// What is being throttled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    /// A normalized e-mail address.
    Email(String),
    /// A client's network address.
    Address(String),
}

/// Sliding-window failure counts.
#[derive(Debug)]
pub struct LoginThrottle {
    window: Duration,
    max_per_email: u32,
    max_per_address: u32,
    failures: Mutex<HashMap<ThrottleKey, VecDeque<Instant>>>,
}

impl LoginThrottle {
    /// A throttle allowing `max_per_email` / `max_per_address` failures per `window`.
    pub fn new(window: Duration, max_per_email: u32, max_per_address: u32) -> Self {
        Self {
            window,
            max_per_email,
            max_per_address,
            failures: Mutex::default(),
        }
    }

    /// `Some(wait)` if any of `keys` is over its limit right now.
    pub fn check(&self, keys: &[ThrottleKey]) -> Option<Duration> {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("throttle lock");
        keys.iter()
            .filter_map(|key| {
                let times = failures.get_mut(key)?;
                self.forget_expired(times, now);
                let limit = self.limit(key) as usize;
                (times.len() >= limit).then(|| {
                    let oldest = times[times.len() - limit];
                    (oldest + self.window).saturating_duration_since(now)
                })
            })
            .max()
    }

    /// Counts a failed attempt against every key.
    pub fn record_failure(&self, keys: &[ThrottleKey]) {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("throttle lock");
        if failures.len() >= MAX_TRACKED_KEYS {
            failures.retain(|_, times| times.back().is_some_and(|t| now - *t < self.window));
        }
        for key in keys {
            if failures.len() >= MAX_TRACKED_KEYS && !failures.contains_key(key) {
                continue;
            }
            let limit = self.limit(key) as usize;
            let times = failures.entry(key.clone()).or_default();
            self.forget_expired(times, now);
            times.push_back(now);
            while times.len() > limit {
                times.pop_front();
            }
        }
    }

    /// Clears the count of one key (after a successful login).
    pub fn reset(&self, key: &ThrottleKey) {
        self.failures.lock().expect("throttle lock").remove(key);
    }

    fn limit(&self, key: &ThrottleKey) -> u32 {
        match key {
            ThrottleKey::Email(_) => self.max_per_email,
            ThrottleKey::Address(_) => self.max_per_address,
        }
    }

    fn forget_expired(&self, times: &mut VecDeque<Instant>, now: Instant) {
        while times.front().is_some_and(|t| now - *t >= self.window) {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(e: &str) -> ThrottleKey {
        ThrottleKey::Email(e.into())
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_after_the_limit_until_the_window_passes() {
        let throttle = LoginThrottle::new(Duration::from_secs(60), 3, 100);
        let keys = [email("a@example.com")];
        for _ in 0..3 {
            assert_eq!(throttle.check(&keys), None);
            throttle.record_failure(&keys);
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        // Failures at t=0, 10, 20; now t=30: the first leaves the window at t=60.
        assert_eq!(throttle.check(&keys), Some(Duration::from_secs(30)));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(throttle.check(&keys), None);
    }

    #[tokio::test(start_paused = true)]
    async fn reset_clears_one_key_only() {
        let throttle = LoginThrottle::new(Duration::from_secs(60), 2, 2);
        let address = ThrottleKey::Address("10.0.0.1".into());
        let keys = [email("a@example.com"), address.clone()];
        throttle.record_failure(&keys);
        throttle.record_failure(&keys);
        assert!(throttle.check(&keys).is_some());
        throttle.reset(&email("a@example.com"));
        assert_eq!(throttle.check(&[email("a@example.com")]), None);
        assert!(
            throttle.check(&[address]).is_some(),
            "the address still counts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn addresses_have_their_own_limit() {
        let throttle = LoginThrottle::new(Duration::from_secs(60), 100, 2);
        let address = ThrottleKey::Address("10.0.0.1".into());
        throttle.record_failure(&[email("a@example.com"), address.clone()]);
        throttle.record_failure(&[email("b@example.com"), address.clone()]);
        assert!(throttle.check(&[email("c@example.com"), address]).is_some());
        assert_eq!(throttle.check(&[email("c@example.com")]), None);
    }
}
