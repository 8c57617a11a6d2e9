//! How the client authenticates and retries.

use serde::Deserialize;
use waldur_runtime::secret::Secret;

/// How an offering authenticates to Waldur.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// `Authorization: Token …`.
    Token(Secret),
    /// OIDC client credentials: `Authorization: Bearer …`.
    Oidc {
        /// Token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: Secret,
    },
}

/// Retries of transient failures (5xx, 429, network) with exponential backoff
/// and jitter.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First backoff, milliseconds.
    pub initial_backoff_ms: u64,
    /// Largest backoff, milliseconds.
    pub max_backoff_ms: u64,
}

impl RetryConfig {
    /// The policy these settings describe.
    pub fn policy(&self) -> waldur_runtime::RetryPolicy {
        waldur_runtime::RetryPolicy {
            max_attempts: self.max_attempts,
            initial_backoff: std::time::Duration::from_millis(self.initial_backoff_ms),
            max_backoff: std::time::Duration::from_millis(self.max_backoff_ms),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff_ms: 200,
            max_backoff_ms: 5_000,
        }
    }
}
