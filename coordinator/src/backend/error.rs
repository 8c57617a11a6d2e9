//! What a backend call can fail with, and which failures are retried.

use std::collections::HashMap;

use tonic::{Code, Status};
use waldur_backend_api::reason;

/// A failed backend call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("backend {backend}: {rpc}: {code:?}: {message}")]
pub struct BackendCallError {
    /// Backend name (config key).
    pub backend: String,
    /// The RPC.
    pub rpc: &'static str,
    /// gRPC code.
    pub code: Code,
    /// ErrorInfo reason, if any.
    pub reason: String,
    /// The backend's message.
    pub message: String,
    /// ErrorInfo metadata.
    pub metadata: HashMap<String, String>,
}

impl BackendCallError {
    /// Codes that mean "try again later; nothing is wrong with the request".
    pub fn is_retryable(&self) -> bool {
        retryable(self.code)
    }

    /// Whether the backend said it has no such resource.
    pub fn is_not_found(&self) -> bool {
        self.code == Code::NotFound && self.reason == reason::RESOURCE_NOT_FOUND
    }
}

pub(crate) fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Aborted | Code::DeadlineExceeded | Code::ResourceExhausted
    )
}

/// Why a remote backend cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The endpoint is not a URI.
    #[error("backends.{name}.endpoint: {source}")]
    Endpoint {
        /// Backend name.
        name: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS files cannot be loaded.
    #[error("backends.{name}.tls: {source}")]
    Tls {
        /// Backend name.
        name: String,
        /// What failed.
        #[source]
        source: waldur_runtime::TlsError,
    },
    /// tonic refused the TLS settings.
    #[error("backends.{name}.tls: {source}")]
    TlsConfig {
        /// Backend name.
        name: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Statuses that did not come from the backend's judgement of the request:
/// * a call that failed below gRPC (the connection broke, the server died
///   mid-call) comes back from tonic as UNKNOWN with the transport error as
///   its source (a status the server sent has no source): UNAVAILABLE;
/// * a server that gave up at the call's deadline answers CANCELLED
///   ("Timeout expired"; the coordinator never cancels its own calls):
///   DEADLINE_EXCEEDED.
///
/// Both are retried: the requests are idempotent, and a hung or vanished
/// backend must never err an order.
pub(super) fn not_the_backends_answer(s: Status) -> Status {
    match s.code() {
        Code::Unknown if std::error::Error::source(&s).is_some() => {
            Status::unavailable(format!("connection to the backend lost: {}", s.message()))
        }
        Code::Cancelled => {
            Status::deadline_exceeded(format!("the backend gave up: {}", s.message()))
        }
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_or_a_timed_out_call_is_retryable_and_a_servers_unknown_is_not() {
        let broken = Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert_eq!(broken.code(), Code::Unknown);
        assert_eq!(not_the_backends_answer(broken).code(), Code::Unavailable);
        let timed_out = Status::cancelled("Timeout expired");
        assert_eq!(
            not_the_backends_answer(timed_out).code(),
            Code::DeadlineExceeded
        );
        let sent = Status::unknown("the backend did not say");
        assert_eq!(not_the_backends_answer(sent).code(), Code::Unknown);
    }
}
