//! Retry settings: attempts and exponential backoff with jitter.

use std::time::Duration;

use crate::config::SettingError;

/// Retry settings for transient failures (exponential backoff with jitter).
///
/// `BASE_DELAY_MS` and `MAX_DELAY_MS` are only the [`Default`] delays, in milliseconds: each
/// connector names its own with a type alias (`salesync_marketo::RetryConfig` waits 500 ms up to
/// 30 s, `salesync_salesforce::RetryConfig` 250 ms up to 20 s), so a struct literal, `default()`
/// and `none()` work through either name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig<const BASE_DELAY_MS: u64, const MAX_DELAY_MS: u64> {
    /// Attempts per request, including the first (≥ 1). A repeat after a re-authentication (a
    /// fresh token after the old one was refused) is not counted.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubled for each further attempt.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl<const B: u64, const M: u64> Default for RetryConfig<B, M> {
    /// 5 attempts, `BASE_DELAY_MS` doubling up to `MAX_DELAY_MS`.
    fn default() -> Self {
        Self { max_attempts: 5, base_delay: Duration::from_millis(B), max_delay: Duration::from_millis(M) }
    }
}

impl<const B: u64, const M: u64> RetryConfig<B, M> {
    /// No retries at all (one attempt; the default delays).
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// The delay after `failures` failed attempts (≥ 1), before attempt `failures + 1`:
    /// `base · 2^(failures-1)`, capped at `max_delay`, with "equal jitter" (a random point in the
    /// upper half).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let full = self.base_delay.saturating_mul(1u32 << exp).min(self.max_delay);
        let jitter: f64 = rand::random();
        full.mul_f64(0.5 + 0.5 * jitter)
    }

    /// Checks the settings a builder was given: at least one attempt, and a first delay no longer
    /// than the upper bound. The error names `retry.max_attempts` or `retry.base_delay`.
    pub fn check(&self) -> Result<(), SettingError> {
        if self.max_attempts == 0 {
            return Err(SettingError::new("retry.max_attempts", "must be at least 1"));
        }
        if self.base_delay > self.max_delay {
            return Err(SettingError::new("retry.base_delay", "must not exceed retry.max_delay"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Retry = RetryConfig<500, 30_000>;

    #[test]
    fn delays_grow_and_cap() {
        let r =
            Retry { max_attempts: 5, base_delay: Duration::from_millis(100), max_delay: Duration::from_millis(500) };
        for _ in 0..50 {
            let d1 = r.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = r.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            assert!(r.delay(30) <= Duration::from_millis(500));
        }
        let r = Retry { max_attempts: 5, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        for _ in 0..50 {
            assert!(r.delay(30) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn defaults_come_from_the_parameters() {
        let d = RetryConfig::<250, 20_000>::default();
        assert_eq!(
            d,
            RetryConfig { max_attempts: 5, base_delay: Duration::from_millis(250), max_delay: Duration::from_secs(20) }
        );
        let d = Retry::default();
        assert_eq!((d.base_delay, d.max_delay), (Duration::from_millis(500), Duration::from_secs(30)));
        assert_eq!(Retry::none(), Retry { max_attempts: 1, ..Retry::default() });
    }

    #[test]
    fn settings_are_checked() {
        assert!(Retry::default().check().is_ok() && Retry::none().check().is_ok());
        assert_eq!(Retry { max_attempts: 0, ..Retry::default() }.check().unwrap_err().key, "retry.max_attempts");
        let slow_start = Retry { base_delay: Duration::from_secs(60), ..Retry::default() };
        assert_eq!(slow_start.check().unwrap_err().key, "retry.base_delay");
    }
}
