//! The auth service's metrics, registered by the binary next to every other
//! component's.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// The outcome of an attempt.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// "true" or "false".
    pub success: String,
}

/// Login counters.
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    /// Password steps of logins (requests with well-formed input).
    pub login_attempts: Family<Outcome, Counter>,
    /// Second steps of logins.
    pub mfa_attempts: Family<Outcome, Counter>,
    /// Requests refused because the password-hashing pool was full.
    pub hashes_refused: Counter,
}

fn outcome(success: bool) -> Outcome {
    Outcome {
        success: success.to_string(),
    }
}

impl AuthMetrics {
    /// Metrics registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "auth_login_attempts",
            "Login attempts (the password step), by outcome",
            metrics.login_attempts.clone(),
        );
        registry.register(
            "auth_mfa_attempts",
            "Second steps of logins, by outcome",
            metrics.mfa_attempts.clone(),
        );
        registry.register(
            "auth_password_hashes_refused",
            "Requests refused at once because every password-hashing thread was busy and the queue full",
            metrics.hashes_refused.clone(),
        );
        metrics
    }

    /// Counts a password step.
    pub fn login(&self, success: bool) {
        self.login_attempts.get_or_create(&outcome(success)).inc();
    }

    /// Counts a refusal of the hashing pool.
    pub fn hash_refused(&self) {
        self.hashes_refused.inc();
    }

    /// Counts a second step.
    pub fn mfa(&self, success: bool) {
        self.mfa_attempts.get_or_create(&outcome(success)).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_exposed_by_outcome() {
        let mut registry = Registry::default();
        let metrics = AuthMetrics::register(&mut registry);
        metrics.login(false);
        metrics.login(true);
        metrics.login(true);
        metrics.mfa(true);
        metrics.hash_refused();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("auth_login_attempts_total{success=\"true\"} 2"), "{text}");
        assert!(
            text.contains("auth_login_attempts_total{success=\"false\"} 1"),
            "{text}"
        );
        assert!(text.contains("auth_mfa_attempts_total{success=\"true\"} 1"), "{text}");
        assert!(text.contains("auth_password_hashes_refused_total 1"), "{text}");
    }
}
