//! The coordinator: the marketplace-facing half of the system.
//!
//! It reads orders, resources, teams and usage from Waldur, decides what must
//! happen and calls backend servers through the `waldur.backend.v1` contract
//! over mutual TLS. It keeps no database: everything is re-derived from
//! Waldur and the backends, so a restart loses nothing.
//!
//! * [`admin`] — `/metrics`, `/healthz`, `/readyz`;
//! * [`config`] — the strict YAML config;
//! * [`waldur`] — the typed Waldur REST client;
//! * [`backend`] — the backend client handle (mTLS channel, deadlines, retries);
//! * [`identity`] — agent identity, service and processor registration;
//! * [`orders`] — order processing;
//! * [`report`] — usage reporting;
//! * [`membership`] — membership sync;
//! * [`usernames`] — offering users and their usernames;
//! * [`hca`] — Helmholtz Cloud requests over AMQP;
//! * [`metrics`] — Prometheus series;
//! * [`ops`] — operator commands (load-components, diagnostics, ...);
//! * [`runner`] — the per-offering task loops.

pub mod admin;
pub mod backend;
pub mod check;
pub mod clock;
pub mod config;
pub mod events;
pub mod hca;
pub mod identity;
pub mod membership;
pub mod metrics;
pub mod migrate;
pub mod ops;
pub mod orders;
pub mod plan;
pub mod report;
pub mod runner;
pub use waldur_runtime::secret;
pub mod team;
pub mod usernames;
