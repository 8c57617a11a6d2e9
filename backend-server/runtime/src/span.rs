//! The names of the spans both binaries open, and of the fields recorded on
//! them after they start. Dashboards, trace queries and the trace tests
//! match on these strings, so they are written once, here.

/// One order, the root of its trace (coordinator).
pub const ORDER: &str = "order";
/// One STOMP event handled (coordinator).
pub const EVENT: &str = "event";
/// One Helmholtz Cloud request (coordinator).
pub const HCA_REQUEST: &str = "hca_request";
/// One membership sync cycle of an offering (coordinator).
pub const MEMBERSHIP_CYCLE: &str = "membership_cycle";
/// One usage report cycle of an offering (coordinator).
pub const USAGE_CYCLE: &str = "usage_cycle";
/// One Waldur REST request as the coordinator makes it (one per attempt).
pub const WALDUR_CALL: &str = "waldur_request";
/// One backend call as the client makes it (coordinator).
pub const BACKEND_CALL: &str = "backend_rpc";
/// One backend call as the server answers it (backend server).
pub const SERVER_CALL: &str = "rpc";
/// One command a backend runs (`sacctmgr`, `sacct`, ...).
pub const COMMAND: &str = "command";

/// Fields recorded once the outcome is known.
pub mod field {
    /// How an order or request ended (`done`, `erred`, `retry`, ...).
    pub const OUTCOME: &str = "outcome";
    /// The HTTP status of a Waldur request (0: no answer).
    pub const HTTP_STATUS: &str = "http.status_code";
    /// The gRPC code of a call (`OK`, `Unavailable`, ...).
    pub const RPC_CODE: &str = "rpc.code";
    /// A command's exit code (-1: killed by a signal).
    pub const COMMAND_EXIT_CODE: &str = "command.exit_code";
    /// How long a command ran.
    pub const COMMAND_DURATION_MS: &str = "command.duration_ms";
}
