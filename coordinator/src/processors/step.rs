//! How one step of a processor fails: an order, the membership sync of one
//! resource, a usage report cycle, an import request. Every processor follows the
//! same rule, kept here once: a temporary failure (Waldur unreachable or
//! overloaded, a backend that answers a retryable code, work deferred on
//! purpose) leaves the work untouched for the next cycle; anything else is a
//! failure of this step that the processor reports as its kind requires.

use waldur_client::WaldurError;
use waldur_client::ids::InvalidUuid;

use crate::backend::BackendCallError;

/// Why a step did not finish.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Waldur failed or refused.
    #[error(transparent)]
    Waldur(#[from] WaldurError),
    /// The backend failed or refused.
    #[error(transparent)]
    Backend(#[from] BackendCallError),
    /// Waldur sent an id that is not a UUID.
    #[error(transparent)]
    InvalidId(#[from] InvalidUuid),
    /// The backend has no resource with the step's backend id.
    #[error("the backend has no resource with this backend id")]
    Missing,
    /// Not now: the next cycle tries again (a plan gone stale, a
    /// precondition not met yet).
    #[error("{0}")]
    Deferred(String),
    /// Failed for good, for the reason given.
    #[error("{0}")]
    Failed(String),
}

impl StepError {
    /// Whether the work is left for the next cycle rather than failed.
    pub fn is_temporary(&self) -> bool {
        match self {
            Self::Waldur(e) => e.is_transient(),
            Self::Backend(e) => e.is_retryable(),
            Self::Deferred(_) => true,
            Self::InvalidId(_) | Self::Missing | Self::Failed(_) => false,
        }
    }

    /// Whether the backend said the resource does not exist.
    pub fn is_missing(&self) -> bool {
        match self {
            Self::Missing => true,
            Self::Backend(e) => e.is_not_found(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_work_is_temporary_and_failures_and_missing_resources_are_not() {
        assert!(StepError::Deferred("stale".into()).is_temporary());
        assert!(!StepError::Failed("no".into()).is_temporary());
        assert!(!StepError::Missing.is_temporary());
        assert!(StepError::Missing.is_missing());
        assert!(!StepError::Failed("x".into()).is_missing());
    }
}
