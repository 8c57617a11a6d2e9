//! The coordinator: the marketplace-facing half of the system.
//!
//! It reads orders, resources, teams and usage from Waldur (and Helmholtz
//! Cloud), decides what must happen and calls backend servers through the
//! `waldur.backend.v1` contract over mutual TLS. This crate grows issue by
//! issue; today it carries the site PKI tooling shared with the backend
//! server.
