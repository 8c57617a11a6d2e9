//! The `waldur.backend.v1` contract in Rust terms, spoken by both sides of
//! the wire.
//!
//! * [`types`]: the domain vocabulary (`ResourceInfo`, `Limits`,
//!   `UserResult` with its [`types::Outcome`], ...): wire messages after
//!   validation, with `serde_json` for JSON and enums instead of integers.
//! * [`convert`]: the conversions. A server validates requests into domain
//!   types ([`convert::create_resource`], ...) and turns its results into
//!   responses ([`convert::resource_info`], ...); a client does the
//!   opposite ([`convert::to_wire`] for requests, [`convert::from_wire`] for
//!   responses). Field limits are the ones `proto/SPEC.md` states.
//! * [`BackendError`]: a failure with its gRPC code and `ErrorInfo` reason,
//!   to a status and back.
//!
//! The backend SDK re-exports all of it; the coordinator's backend client
//! is the only place where it meets the generated wire types.

mod error;

pub mod convert;
pub mod types;

pub use error::{BackendError, BackendResult};
pub use waldur_backend_proto::{ERROR_DOMAIN, reason};
