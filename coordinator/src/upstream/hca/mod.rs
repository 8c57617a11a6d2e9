//! Helmholtz Cloud upstream: the coordinator as a Helmholtz Cloud Agent.
//!
//! The portal sends requests over AMQP 0-9-1 (queue `to_hca`) and reads the
//! answers from `to_portal`; properties `type` and `correlation_id` and the
//! `service_id` header frame every message.
//! `PingV1` is answered in kind; `ResourceAllocateV1` is checked against its
//! resource type's JSON Schema and becomes the same backend `CreateResource`
//! a Waldur order makes; deallocation by id becomes `DeleteResource`.
//!
//! * [`config`] — the `helmholtz:` settings, with `HCA_*` fallbacks;
//! * [`mapping`] — resource types: schema, backend and derivation templates;
//! * [`members`] — who the requester is locally: usernames from a table or LDAP;
//! * [`service`] — request → reply, transport-free;
//! * [`amqp`] — the lapin consumer and publisher, and the mock portal.

pub mod amqp;
pub mod config;
pub mod mapping;
pub mod members;
pub mod service;

pub use amqp::{LinkState, Portal, PortalMessage};
pub use config::HelmholtzConfig;
pub use service::HcaService;
