//! Event processing over STOMP: the frame codec and the queue consumer.

pub mod body;
pub mod client;
pub mod consumers;
pub mod handlers;
pub mod stomp;
pub mod ws;
