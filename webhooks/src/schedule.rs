//! When a failed delivery is tried again: the Standard Webhooks schedule (at once, then 5 s,
//! 5 min, 30 min, 2 h, 5 h, 10 h and 10 h after each failure), each delay moved by up to ±20%
//! so that deliveries failed together do not all come back at the same moment. A receiver that
//! timed out or said 429 waits at least a minute, and a `Retry-After` longer than the
//! schedule's delay is honoured. The schedule is configurable (`WEBHOOK_RETRY_SCHEDULE`), so
//! tests run in seconds. The queue that holds the message between attempts applies it
//! (`messaging::RetryConfig::on_schedule` with [`RetrySchedule::retry_delays`] and
//! [`RetrySchedule::jitter_percent`], and the handler's [`RetrySchedule::floor`]).

use crate::delivery::Verdict;
use service_kit::config::parse_duration;
use std::str::FromStr;
use std::time::Duration;

/// The longest `Retry-After` honoured; a receiver cannot park a message for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 3600);

/// Delays between attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    /// Before the first attempt, then after each failure.
    delays: Vec<Duration>,
    /// The share by which each delay may move either way.
    jitter: f64,
    /// The least wait after a timeout or a 429.
    slow_down: Duration,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        Self {
            delays: vec![
                Duration::ZERO,
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(300),
                minutes(600),
                minutes(600),
            ],
            jitter: 0.2,
            slow_down: Duration::from_secs(60),
        }
    }
}

impl RetrySchedule {
    /// This schedule with `slow_down` as the least wait after a timeout or a 429.
    pub fn with_slow_down(self, slow_down: Duration) -> Self {
        Self { slow_down, ..self }
    }

    /// How far each delay may move either way, in percent.
    pub fn jitter_percent(&self) -> u8 {
        (self.jitter * 100.0).round().clamp(0.0, 100.0) as u8
    }

    /// The least wait before the next attempt that `verdict` asks for, whatever the schedule
    /// says: the receiver's `Retry-After` (up to [`MAX_RETRY_AFTER`]), and the slow-down wait
    /// after a timeout or a 429.
    pub fn floor(&self, verdict: &Verdict) -> Duration {
        let Verdict::Retry {
            retry_after,
            slow_down,
        } = verdict
        else {
            return Duration::ZERO;
        };
        let asked = retry_after.map_or(Duration::ZERO, |asked| asked.min(MAX_RETRY_AFTER));
        if *slow_down {
            asked.max(self.slow_down)
        } else {
            asked
        }
    }

    /// The delays after each failed attempt (all but the first delay, which comes before the
    /// first attempt), for a queue that schedules the retries itself.
    pub fn retry_delays(&self) -> Vec<Duration> {
        self.delays.iter().skip(1).copied().collect()
    }
}

impl FromStr for RetrySchedule {
    type Err = String;

    /// `0s, 5s, 5m, 30m, 2h` (`ms`, `s`, `m` and `h`; a bare number is seconds).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let delays = text
            .split(',')
            .map(str::trim)
            .map(parse_duration)
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() {
            return Err("a retry schedule needs at least one delay".into());
        }
        Ok(Self {
            delays,
            ..Self::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Verdict = Verdict::Retry {
        retry_after: None,
        slow_down: false,
    };

    #[test]
    fn the_default_is_the_specifications_schedule_with_twenty_percent_of_jitter() {
        let schedule = RetrySchedule::default();
        let expected = [5, 300, 1800, 7200, 18000, 36000, 36000].map(Duration::from_secs);
        assert_eq!(schedule.retry_delays(), expected, "eight attempts in all");
        assert_eq!(schedule.jitter_percent(), 20);
    }

    #[test]
    fn a_timeout_or_429_waits_a_minute_and_retry_after_is_honoured_up_to_a_limit() {
        let schedule = RetrySchedule::default();
        let slow = Verdict::Retry {
            retry_after: None,
            slow_down: true,
        };
        let asked = |seconds| Verdict::Retry {
            retry_after: Some(Duration::from_secs(seconds)),
            slow_down: false,
        };
        assert_eq!(schedule.floor(&slow), Duration::from_secs(60));
        assert_eq!(schedule.floor(&asked(90)), Duration::from_secs(90));
        assert_eq!(schedule.floor(&asked(10 * 86_400)), MAX_RETRY_AFTER);
        let both = Verdict::Retry {
            retry_after: Some(Duration::from_secs(30)),
            slow_down: true,
        };
        assert_eq!(schedule.floor(&both), Duration::from_secs(60));
        assert_eq!(schedule.floor(&RETRY), Duration::ZERO);
        assert_eq!(schedule.floor(&Verdict::Delivered), Duration::ZERO);
        assert_eq!(schedule.floor(&Verdict::Gone), Duration::ZERO);
        let quick = schedule.with_slow_down(Duration::from_secs(2));
        assert_eq!(quick.floor(&slow), Duration::from_secs(2));
    }

    #[test]
    fn a_configured_schedule_reads_short_delays() {
        let schedule: RetrySchedule = "0, 200ms, 1s, 2".parse().unwrap();
        assert_eq!(
            schedule.retry_delays(),
            [
                Duration::from_millis(200),
                Duration::from_secs(1),
                Duration::from_secs(2)
            ]
        );
        assert!("".parse::<RetrySchedule>().is_err());
    }
}
