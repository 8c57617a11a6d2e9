//! Running: what one config builds ([`offering`]), the task loops
//! ([`runner`]), the event consumers and their handlers ([`events`]) and the
//! admin port ([`admin`]) and what it shows of the loops ([`status`]).
//!
//! `offering` is at the bottom: the runner and the event handlers both work
//! from it and neither imports the other's internals, except that the
//! runner starts the consumers.

pub mod admin;
pub mod events;
pub mod offering;
pub mod runner;
pub mod status;

pub use offering::{BuildError, Coordinator, OfferingRuntime, Task};
