//! The one error type a backend returns, and its mapping to gRPC statuses.
//!
//! Every error carries a canonical gRPC code and a `google.rpc.ErrorInfo`
//! reason from `proto/SPEC.md`, so a coordinator in any language can decide
//! what to do from the code alone and show the reason to an operator.

use std::collections::BTreeMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use waldur_backend_proto::{ERROR_DOMAIN, reason};

/// Result of a backend operation.
pub type BackendResult<T> = Result<T, BackendError>;

/// A failure with its gRPC code, `ErrorInfo` reason and metadata.
///
/// The message is shown to operators and, for some errors, to Waldur users:
/// never put secrets or internals (file paths of keys, tokens) in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// Canonical gRPC code.
    pub code: Code,
    /// `ErrorInfo.reason`, one of [`waldur_backend_proto::reason`].
    pub reason: String,
    /// Human-readable message: lowercase, no trailing period.
    pub message: String,
    /// `ErrorInfo.metadata`, for example `field` or `comment_url`.
    pub metadata: BTreeMap<String, String>,
}

impl BackendError {
    /// A new error with no metadata.
    pub fn new(code: Code, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_owned(),
            message: message.into(),
            metadata: BTreeMap::new(),
        }
    }

    /// Adds one `ErrorInfo` metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key.to_owned(), value.into());
        self
    }

    /// The resource does not exist (NOT_FOUND, RESOURCE_NOT_FOUND).
    pub fn resource_not_found(backend_id: &str) -> Self {
        Self::new(
            Code::NotFound,
            reason::RESOURCE_NOT_FOUND,
            format!("resource {backend_id} not found"),
        )
        .with_metadata("backend_id", backend_id)
    }

    /// The backend id is taken by another resource (ALREADY_EXISTS).
    pub fn already_exists(backend_id: &str, why: &str) -> Self {
        Self::new(
            Code::AlreadyExists,
            reason::RESOURCE_ALREADY_EXISTS,
            format!("resource {backend_id} already exists: {why}"),
        )
        .with_metadata("backend_id", backend_id)
    }

    /// A field is missing or malformed (INVALID_ARGUMENT, INVALID_FIELD).
    pub fn invalid_field(field: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            Code::InvalidArgument,
            reason::INVALID_FIELD,
            format!("{field}: {why}"),
        )
        .with_metadata("field", field)
    }

    /// A component the instance does not define (INVALID_ARGUMENT).
    pub fn unknown_component(key: &str) -> Self {
        Self::new(
            Code::InvalidArgument,
            reason::UNKNOWN_COMPONENT,
            format!("unknown component {key:?}"),
        )
        .with_metadata("component", key)
    }

    /// The backend cannot serve now; the caller retries later (UNAVAILABLE).
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, reason::BACKEND_NOT_READY, message)
    }

    /// A cluster command or remote API failed (INTERNAL).
    pub fn command_failed(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, reason::BACKEND_COMMAND_FAILED, message)
    }

    /// The system behind the backend refused a command for a reason that
    /// retrying will not change (FAILED_PRECONDITION): a value it does not
    /// accept, an object it does not have, an insufficient balance.
    pub fn command_refused(message: impl Into<String>) -> Self {
        Self::new(
            Code::FailedPrecondition,
            reason::BACKEND_COMMAND_FAILED,
            message,
        )
    }

    /// The backend has something by this name that it does not manage, and
    /// leaves alone (FAILED_PRECONDITION, RESOURCE_NOT_MANAGED).
    pub fn not_managed(backend_id: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            Code::FailedPrecondition,
            reason::RESOURCE_NOT_MANAGED,
            format!("{backend_id} is not a resource this backend manages: {why}"),
        )
        .with_metadata("backend_id", backend_id)
    }

    /// A slow operation failed on the backend side (FAILED_PRECONDITION).
    pub fn operation_failed(message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, reason::OPERATION_FAILED, message)
    }

    /// The user must link an existing account first.
    pub fn account_linking_required(comment: &str, comment_url: Option<&str>) -> Self {
        Self::new(
            Code::FailedPrecondition,
            reason::ACCOUNT_LINKING_REQUIRED,
            comment,
        )
        .with_metadata("comment", comment)
        .with_metadata("comment_url", comment_url.unwrap_or_default())
    }

    /// The user must pass additional validation first.
    pub fn additional_validation_required(comment: &str, comment_url: Option<&str>) -> Self {
        Self::new(
            Code::FailedPrecondition,
            reason::ADDITIONAL_VALIDATION_REQUIRED,
            comment,
        )
        .with_metadata("comment", comment)
        .with_metadata("comment_url", comment_url.unwrap_or_default())
    }

    /// The RPC is not implemented by this backend (UNIMPLEMENTED).
    pub fn unimplemented(rpc: &str) -> Self {
        Self::new(
            Code::Unimplemented,
            reason::CAPABILITY_NOT_SUPPORTED,
            format!("{rpc} is not supported by this backend"),
        )
        .with_metadata("rpc", rpc)
    }

    /// The instance is not hosted here (NOT_FOUND, UNKNOWN_INSTANCE).
    pub fn unknown_instance(instance: &str) -> Self {
        Self::new(
            Code::NotFound,
            reason::UNKNOWN_INSTANCE,
            format!("unknown backend instance {instance:?}"),
        )
        .with_metadata("instance", instance)
    }

    /// Converts to a gRPC status carrying a `google.rpc.ErrorInfo` detail.
    pub fn to_status(&self) -> Status {
        let metadata: std::collections::HashMap<String, String> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Status::with_error_details(
            self.code,
            self.message.clone(),
            ErrorDetails::with_error_info(self.reason.clone(), ERROR_DOMAIN, metadata),
        )
    }

    /// Reads an error back from a gRPC status (the coordinator's side).
    pub fn from_status(status: &Status) -> Self {
        let info = status.get_details_error_info();
        Self {
            code: status.code(),
            reason: info.as_ref().map(|i| i.reason.clone()).unwrap_or_default(),
            message: status.message().to_owned(),
            metadata: info
                .map(|i| i.metadata.into_iter().collect())
                .unwrap_or_default(),
        }
    }
}

impl From<BackendError> for Status {
    fn from(e: BackendError) -> Self {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_info_survives_the_round_trip_through_a_status() {
        let e =
            BackendError::account_linking_required("link your account", Some("https://idp/link"));
        let back = BackendError::from_status(&e.to_status());
        assert_eq!(back, e);
        assert_eq!(back.code, Code::FailedPrecondition);
        assert_eq!(back.metadata["comment_url"], "https://idp/link");
    }
}
