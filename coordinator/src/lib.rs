//! The coordinator: the marketplace-facing half of the system.
//!
//! It reads orders, resources, teams and usage from Waldur, decides what must
//! happen and calls backend servers through the `waldur.backend.v1` contract
//! over mutual TLS. It keeps no database: everything is re-derived from
//! Waldur and the backends, so a restart loses nothing.
//!
//! The folders are its rooms:
//!
//! * [`upstream`]: where requests come from (the Helmholtz Cloud adapter;
//!   Waldur's REST API and event queues are the `waldur-client` and
//!   `waldur-stomp` crates);
//! * [`processors`]: the work (orders, membership, usage report, usernames,
//!   registration);
//! * [`backend`]: the backend client, the only place that speaks the wire
//!   types;
//! * [`runtime`]: what one config builds, the task loops, the event
//!   consumers and the admin port;
//! * [`cli`]: the subcommands;
//! * [`config`], [`clock`], [`metrics`]: shared by all of them.

pub mod backend;
pub mod cli;
pub mod clock;
pub mod config;
pub mod metrics;
pub mod processors;
pub mod runtime;
pub mod upstream;

pub use waldur_runtime::secret;
