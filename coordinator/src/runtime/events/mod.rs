//! Waldur's events: their bodies decoded into typed events (`body`), the
//! consumers of the offering's queues over `waldur-stomp` (`consumers`),
//! and what each event makes the processors do (`handlers`).

pub mod body;
pub mod consumers;
pub mod handlers;
