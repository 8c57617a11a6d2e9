//! Where requests come from. Waldur's REST API and its STOMP event queues
//! have crates of their own (`waldur-client`, `waldur-stomp`); what lives
//! here is the Helmholtz Cloud adapter ([`hca`]), which turns portal
//! requests over AMQP into the same backend calls as Waldur orders.

pub mod hca;
