//! Event processing over STOMP: the frame codec and the queue consumer.

pub mod body;
pub mod consumers;
pub mod handlers;
