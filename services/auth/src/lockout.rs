//! The failed-login policy: a few free attempts, then progressive delays,
//! and no more than a hard maximum of consecutive failures. Every attempt is
//! counted before its password is checked (an atomic compare-and-set in the
//! store), so concurrent attempts cannot slip past the limit.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Limits on consecutive failed logins of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LockoutPolicy {
    /// Failures allowed before the first delay.
    pub free_attempts: u32,
    /// The first delay, seconds; it doubles with every further failure.
    pub base_delay_secs: u32,
    /// The longest delay, seconds.
    pub max_delay_secs: u32,
    /// After this many consecutive failures the account stays locked until
    /// an operator unlocks it.
    pub max_failures: u32,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            free_attempts: 5,
            base_delay_secs: 30,
            max_delay_secs: 3600,
            max_failures: 100,
        }
    }
}

/// What the policy says about a new attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptDecision {
    /// Go ahead; the account is locked until `locks_until` should this
    /// attempt fail (it is recorded so already).
    Allowed {
        /// The failure count should this attempt fail.
        failures: u32,
        /// The lock that then applies.
        locks_until: Option<DateTime<Utc>>,
    },
    /// Refused without checking the password.
    Locked {
        /// When to try again; `None` when only an operator can unlock.
        until: Option<DateTime<Utc>>,
    },
}

impl LockoutPolicy {
    /// Decides on an attempt, given the account's consecutive failures and
    /// current lock.
    pub fn decide(&self, failures: u32, locked_until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> AttemptDecision {
        if failures >= self.max_failures {
            return AttemptDecision::Locked { until: None };
        }
        if let Some(until) = locked_until.filter(|until| *until > now) {
            return AttemptDecision::Locked { until: Some(until) };
        }
        let failures = failures + 1;
        AttemptDecision::Allowed {
            failures,
            locks_until: self.delay_after(failures).map(|d| now + d),
        }
    }

    /// Whether the `failures`-th consecutive failure locks the account:
    /// the first lock of a streak, or the last failure allowed (only an
    /// operator unlocks it then). What the user is told about.
    pub fn locks_account(&self, failures: u32) -> bool {
        let first_lock =
            self.delay_after(failures).is_some() && (failures <= 1 || self.delay_after(failures - 1).is_none());
        first_lock || failures == self.max_failures
    }

    /// The lock that follows `failures` consecutive failures.
    pub fn delay_after(&self, failures: u32) -> Option<Duration> {
        if failures < self.free_attempts {
            return None;
        }
        if failures >= self.max_failures {
            return Some(Duration::days(36_500));
        }
        let doublings = (failures - self.free_attempts).min(20);
        let secs = u64::from(self.base_delay_secs)
            .saturating_mul(1 << doublings)
            .min(u64::from(self.max_delay_secs));
        Some(Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_lock_of_a_streak_and_the_last_failure_lock_the_account() {
        let policy = LockoutPolicy::default();
        let locking: Vec<u32> = (1..=policy.max_failures).filter(|f| policy.locks_account(*f)).collect();
        assert_eq!(locking, vec![policy.free_attempts, policy.max_failures]);
    }

    #[test]
    fn delays_start_after_the_free_attempts_and_double_up_to_the_cap() {
        let p = LockoutPolicy::default();
        assert_eq!(p.delay_after(4), None);
        assert_eq!(p.delay_after(5), Some(Duration::seconds(30)));
        assert_eq!(p.delay_after(6), Some(Duration::seconds(60)));
        assert_eq!(p.delay_after(12), Some(Duration::seconds(3600)));
    }

    #[test]
    fn a_lock_refuses_until_it_ends_and_the_maximum_is_final() {
        let p = LockoutPolicy::default();
        let now = Utc::now();
        let until = now + Duration::seconds(30);
        assert_eq!(
            p.decide(5, Some(until), now),
            AttemptDecision::Locked { until: Some(until) }
        );
        assert!(matches!(
            p.decide(5, Some(until), until + Duration::seconds(1)),
            AttemptDecision::Allowed {
                failures: 6,
                locks_until: Some(_)
            }
        ));
        assert_eq!(p.decide(100, None, now), AttemptDecision::Locked { until: None });
    }
}
