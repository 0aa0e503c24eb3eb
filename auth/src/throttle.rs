//! Brute-force protection for logins. Failed attempts are counted per e-mail and per client
//! address within a sliding window; past the limit, attempts are refused (before any password
//! is checked) until the oldest counted failure leaves the window. An attempt counts from the
//! moment it starts, so a burst of concurrent guesses gets no more tries than a sequence. A successful login clears
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

/// A login attempt in progress, counted as a failure until it is known to be otherwise.
#[derive(Debug)]
#[must_use = "an attempt is a failure unless reported as succeeded or withdrawn"]
pub struct Attempt {
    keys: Vec<ThrottleKey>,
    at: Instant,
}

/// Removes one failure counted at `at` against `key`.
fn uncount(failures: &mut HashMap<ThrottleKey, VecDeque<Instant>>, key: &ThrottleKey, at: Instant) {
    if let Some(times) = failures.get_mut(key) {
        if let Some(position) = times.iter().rposition(|t| *t == at) {
            times.remove(position);
        }
        if times.is_empty() {
            failures.remove(key);
        }
    }
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

    /// Starts a login attempt: refused with how long to wait if any of `keys` is at its limit;
    /// otherwise counted as a failure against every key at once, in the same critical section.
    /// Counting before the password is checked is what holds the limit under a burst: attempts
    /// that run concurrently (a password check takes a while) each see the others. The attempt
    /// stays counted unless it [`succeeded`](Self::succeeded) or is
    /// [`withdrawn`](Self::withdraw).
    pub fn begin(&self, keys: &[ThrottleKey]) -> Result<Attempt, Duration> {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("throttle lock");
        let wait = keys
            .iter()
            .filter_map(|key| {
                let times = failures.get_mut(key)?;
                self.forget_expired(times, now);
                let limit = self.limit(key) as usize;
                (times.len() >= limit).then(|| {
                    let oldest = times[times.len() - limit];
                    (oldest + self.window).saturating_duration_since(now)
                })
            })
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        if failures.len() >= MAX_TRACKED_KEYS {
            failures.retain(|_, times| times.back().is_some_and(|t| now - *t < self.window));
        }
        let mut counted = Vec::with_capacity(keys.len());
        for key in keys {
            if failures.len() >= MAX_TRACKED_KEYS && !failures.contains_key(key) {
                continue;
            }
            failures.entry(key.clone()).or_default().push_back(now);
            counted.push(key.clone());
        }
        Ok(Attempt {
            keys: counted,
            at: now,
        })
    }

    /// The password was right: the e-mail's count is cleared; against an address, only this
    /// attempt is taken back (one valid account must not launder failures against others).
    pub fn succeeded(&self, attempt: Attempt) {
        let mut failures = self.failures.lock().expect("throttle lock");
        for key in &attempt.keys {
            match key {
                ThrottleKey::Email(_) => {
                    failures.remove(key);
                }
                ThrottleKey::Address(_) => uncount(&mut failures, key, attempt.at),
            }
        }
    }

    /// The attempt says nothing about the password (the user store failed): take it back.
    pub fn withdraw(&self, attempt: Attempt) {
        let mut failures = self.failures.lock().expect("throttle lock");
        for key in &attempt.keys {
            uncount(&mut failures, key, attempt.at);
        }
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
            drop(throttle.begin(&keys).expect("under the limit"));
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        // Failures at t=0, 10, 20; now t=30: the first leaves the window at t=60.
        assert_eq!(throttle.begin(&keys).unwrap_err(), Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(throttle.begin(&keys).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_in_flight_count_so_a_burst_gets_no_more_tries() {
        let throttle = LoginThrottle::new(Duration::from_secs(60), 3, 100);
        let keys = [email("a@example.com")];
        // Ten attempts begin before any password check has finished.
        let started: Vec<_> = (0..10).map(|_| throttle.begin(&keys)).collect();
        assert_eq!(started.iter().filter(|attempt| attempt.is_ok()).count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn success_clears_the_email_and_takes_back_only_its_own_address_count() {
        let throttle = LoginThrottle::new(Duration::from_secs(60), 2, 2);
        let address = ThrottleKey::Address("10.0.0.1".into());
        let keys = [email("a@example.com"), address.clone()];
        drop(throttle.begin(&keys).unwrap());
        tokio::time::advance(Duration::from_secs(1)).await;
        let right = throttle.begin(&keys).unwrap();
        throttle.succeeded(right);
        // The e-mail is clear; the address keeps the one failure, not the success.
        assert!(throttle.begin(&[email("a@example.com")]).is_ok());
        assert!(
            throttle.begin(std::slice::from_ref(&address)).is_ok(),
            "one failure of two"
        );
        assert!(throttle.begin(&[address]).is_err(), "now at the limit");
    }

    #[tokio::test(start_paused = true)]
    async fn a_withdrawn_attempt_does_not_count() {
        let throttle = LoginThrottle::new(Duration::from_secs(60), 1, 100);
        let keys = [email("a@example.com")];
        throttle.withdraw(throttle.begin(&keys).unwrap());
        assert!(throttle.begin(&keys).is_ok());
        assert!(throttle.begin(&keys).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn addresses_have_their_own_limit() {
        let throttle = LoginThrottle::new(Duration::from_secs(60), 100, 2);
        let address = ThrottleKey::Address("10.0.0.1".into());
        drop(
            throttle
                .begin(&[email("a@example.com"), address.clone()])
                .unwrap(),
        );
        drop(
            throttle
                .begin(&[email("b@example.com"), address.clone()])
                .unwrap(),
        );
        assert!(throttle.begin(&[email("c@example.com"), address]).is_err());
        assert!(throttle.begin(&[email("c@example.com")]).is_ok());
    }
}
