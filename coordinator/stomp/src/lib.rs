//! STOMP 1.2 over WebSocket, as Waldur's event queues on RabbitMQ
//! (`rabbitmq_web_stomp`) speak it.
//!
//! * [`codec`]: frames to bytes and back, with the 1.2 escaping rules and a
//!   salvage of the head of a frame that does not decode;
//! * [`ws`]: the WebSocket transport (RFC 6455), which reads a message over
//!   the limits to its end and keeps only its head, so one large or broken
//!   message cannot stall a queue;
//! * [`client`]: the queue consumer (connect, subscribe with
//!   `client-individual` acks, heart-beats, reconnect with backoff), handing
//!   every message to a handler and acknowledging it, or acknowledging it
//!   with the reason it could not be handed over.
//!
//! It depends on nothing of the coordinator: only secrets, from the runtime.

pub mod client;
pub mod codec;
pub mod ws;
