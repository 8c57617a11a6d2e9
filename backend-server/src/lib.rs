//! SDK and runtime for backend servers of the `waldur.backend.v1` contract.
//!
//! A backend implements [`Backend`] with domain types ([`types`]) and never
//! sees the wire messages. [`serve`] hosts one or more named instances behind
//! mutual TLS, with the standard gRPC health service driven by each
//! instance's probe, gRPC reflection, request validation, error mapping to
//! canonical codes with `google.rpc.ErrorInfo`, one tracing span per RPC and
//! graceful shutdown on SIGTERM/SIGINT.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn run(backend: Arc<dyn waldur_backend_sdk::Backend>, config: waldur_backend_sdk::config::ServerConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let registry = waldur_backend_sdk::Registry::single("hpc", backend)?;
//! waldur_backend_sdk::serve(&config, registry, waldur_backend_sdk::shutdown_signal()).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod accept;
mod backend;
pub mod command;
pub mod component;
pub mod config;
mod dial;
pub mod metrics;
pub mod ownership;
mod registry;
mod server;
mod service;

pub use waldur_backend_api::{convert, types};
pub use waldur_runtime::{SettingError, ldap_entry, secret, span, telemetry};

pub use accept::{MAX_HANDSHAKES, MAX_HANDSHAKES_PER_PEER, PeerInfo};
pub use backend::Backend;
pub use dial::reach_coordinator;
pub use registry::{Registry, RegistryBuilder};
pub use server::{Bound, ServeError, serve, serve_duplex, spawn};
pub use waldur_backend_api::{BackendError, BackendResult};
pub use waldur_runtime::shutdown::signal as shutdown_signal;

/// Re-export of the wire crate, for tests and clients.
pub use waldur_backend_proto as proto;
