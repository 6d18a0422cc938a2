//! How often and how patiently the engine tries again: a [`RetryPolicy`]
//! with exponential backoff. Transient store errors are retried for as long
//! as they last (the message is not at fault); a message whose handling
//! keeps failing is tried `attempts` times and then goes to the dead letters.

use std::time::Duration;

/// Attempts and backoff between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times a failing message is tried before it is dead-lettered.
    pub attempts: u32,
    /// The wait after the first failure; it doubles after each next one.
    pub first_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failure in a row (counted from 1).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first_backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        };
        let waits: Vec<_> = (1..=5).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 50, 50]);
        assert_eq!(policy.backoff(1000), Duration::from_millis(50));
    }
}
