//! What the benchmarks (`cargo bench`, tables rather than timed tests) share: their knobs from
//! the environment, the median of a run's figures, and how far that median can be trusted on
//! a noisy machine.

/// The number in the variable `name`, or `default` when it is unset or not a number.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `values` (the upper one of an even count); panics on none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Writes back what the page cache holds dirty (`sync`), so that one phase or side of a
/// benchmark does not pay for the writes of the one before.
pub fn settle_disk() -> std::io::Result<()> {
    let status = std::process::Command::new("sync").status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("`sync` failed: {status}")))
    }
}

/// The most values [`median_interval`] takes, a little under where ½ⁿ stops being a normal
/// `f64` (n = 1023) and the chances it adds up would come out wrong; benchmarks run tens of
/// rounds.
pub const MAX_INTERVAL_VALUES: usize = 1000;

/// A range that holds the median of what a run's figures were drawn from, with a known chance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MedianInterval {
    pub low: f64,
    pub high: f64,
    /// The chance that the range holds the median (at least the one asked for).
    pub confidence: f64,
}

/// The narrowest range from the `j`-th smallest of `values` to the `j`-th largest that holds
/// the median of what they were drawn from with a chance of at least `confidence`; `None`
/// when there are too few for that (fewer than five at 90 %), or more than
/// [`MAX_INTERVAL_VALUES`].
///
/// It needs nothing but their order, so a machine's noise need not be normal, or even
/// symmetric: each value falls below the true median with chance ½, and the range misses it
/// only when fewer than `j` fall on one side of it (a binomial tail). Two rounds' ratios that
/// differ by a third are common on these machines; a goal such as "at least 0.9× multipart"
/// is met by a run only when its whole range is.
pub fn median_interval(values: &[f64], confidence: f64) -> Option<MedianInterval> {
    let n = values.len();
    if n > MAX_INTERVAL_VALUES {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    // P(Bin(n, ½) = i) for i = 0, 1, …, built up one ratio at a time (no factorials).
    let mut point = 0.5f64.powi(n as i32);
    let mut below = 0.0;
    let mut best = None;
    for j in 1..=n / 2 {
        below += point;
        let covered = 1.0 - 2.0 * below;
        if covered < confidence {
            break;
        }
        best = Some(MedianInterval {
            low: sorted[j - 1],
            high: sorted[n - j],
            confidence: covered,
        });
        point *= (n - (j - 1)) as f64 / j as f64;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_interval_is_the_narrowest_order_statistics_with_the_chance_asked_for() {
        let twelve: Vec<f64> = (1..=12).map(f64::from).rev().collect();
        let interval = median_interval(&twelve, 0.9).expect("twelve values are enough");
        // The 3rd to the 10th of twelve: 1 - 2 * (1 + 12 + 66) / 4096.
        assert_eq!((interval.low, interval.high), (3.0, 10.0));
        assert!((interval.confidence - 0.961_425_781_25).abs() < 1e-12);
        // Asking for more widens it: the 2nd to the 11th, 1 - 2 * 13 / 4096.
        let wider = median_interval(&twelve, 0.99).expect("twelve values are enough");
        assert_eq!((wider.low, wider.high), (2.0, 11.0));
        assert!((wider.confidence - 0.993_652_343_75).abs() < 1e-12);
    }

    #[test]
    fn too_few_values_give_no_median_interval() {
        let five = [0.8, 1.2, 0.9, 1.0, 1.1];
        let interval = median_interval(&five, 0.9).expect("five values reach 90 %");
        assert_eq!((interval.low, interval.high), (0.8, 1.2));
        assert!((interval.confidence - 0.9375).abs() < 1e-12);
        assert_eq!(median_interval(&five[..4], 0.9), None);
        assert_eq!(median_interval(&[], 0.9), None);
    }

    #[test]
    fn more_than_max_interval_values_give_no_median_interval() {
        let many: Vec<f64> = (0..=MAX_INTERVAL_VALUES).map(|n| n as f64).collect();
        assert!(median_interval(&many[..MAX_INTERVAL_VALUES], 0.9).is_some());
        assert_eq!(median_interval(&many, 0.9), None);
    }
}
