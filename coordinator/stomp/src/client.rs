//! A resilient STOMP 1.2 over WebSocket consumer of one RabbitMQ queue
//!, for RabbitMQ's Web-STOMP plugin.
//!
//! One session: WebSocket handshake offering the `v12.stomp` subprotocol,
//! `CONNECT` (the `host` header is the RabbitMQ vhost), `CONNECTED`,
//! `SUBSCRIBE` to the pre-existing queue `/amq/queue/<queue>` with
//! `ack:client-individual` and a receipt, `RECEIPT`; then messages are
//! handed to the handler one at a time and each is acknowledged only after
//! its handler returned, so a crash or a lost connection in the middle of a
//! handler makes RabbitMQ redeliver it. Heart-beats are negotiated, sent and
//! monitored. Any failure ends the session and a new one starts after a
//! capped exponential backoff with jitter, for ever, until shutdown.
//!
//! Every MESSAGE that reaches the consumer is either handled or acknowledged
//! with the reason it was not: a body that is not UTF-8 or not JSON goes to
//! the handler like any other (which refuses it), and a frame the codec
//! cannot decode or a message over `max_message_bytes` reaches the handler
//! as [`Message::refused`]. Nothing a publisher puts into a queue can stall
//! it (see [`crate::ws`] for why the transport is this project's own).
//!
//! The passcode is a [`Secret`] and is never logged.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt as _;
use tokio::time::{sleep, timeout};

use crate::codec::Frame;
use waldur_runtime::secret::Secret;

mod conn;

use conn::{Conn, ConnError, Pending, open};

/// The WebSocket subprotocol for STOMP 1.2.
const SUBPROTOCOL: &str = "v12.stomp";
/// How long opening a session (TCP, TLS, WebSocket, CONNECT, SUBSCRIBE) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful DISCONNECT waits for its receipt.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one frame (an ACK, a heart-beat) may take to go out: a broker
/// that stops reading must not block the consumer for good.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// The receipt id of the DISCONNECT frame.
const DISCONNECT_RECEIPT: &str = "disconnect";
/// Longest excerpt of an ERROR frame's body that is logged.
const ERROR_BODY_LOGGED: usize = 200;

/// How to reach and consume one queue.
#[derive(Debug, Clone)]
pub struct StompConfig {
    /// `ws://host:port/path` or `wss://…`.
    pub url: String,
    /// The STOMP `host` header: the RabbitMQ vhost.
    pub vhost: String,
    /// The STOMP login.
    pub login: String,
    /// The STOMP passcode; never logged.
    pub passcode: Secret,
    /// The queue, subscribed as `/amq/queue/<queue>`; it must exist.
    pub queue: String,
    /// Heart-beat interval offered in both directions (0 disables them).
    pub heartbeat: Duration,
    /// RabbitMQ's `prefetch-count`: unacknowledged messages in flight (at
    /// least 1; RabbitMQ would read 0 as unlimited).
    pub prefetch: u32,
    /// The first reconnect delay.
    pub initial_backoff: Duration,
    /// The longest reconnect delay (before jitter).
    pub max_backoff: Duration,
    /// The largest WebSocket frame buffered.
    pub max_frame_bytes: usize,
    /// The largest STOMP message handled; a larger one is acknowledged and
    /// dropped with a log line, never buffered whole.
    pub max_message_bytes: usize,
}

impl StompConfig {
    /// Settings with the defaults: heart-beats 10 s both ways, prefetch 16,
    /// backoff from 1 s to 120 s, frames and messages up to 4 MiB.
    pub fn new(
        url: impl Into<String>,
        vhost: impl Into<String>,
        login: impl Into<String>,
        passcode: Secret,
        queue: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            vhost: vhost.into(),
            login: login.into(),
            passcode,
            queue: queue.into(),
            heartbeat: Duration::from_secs(10),
            prefetch: 16,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(120),
            max_frame_bytes: 4 << 20,
            max_message_bytes: 4 << 20,
        }
    }
}

/// One received MESSAGE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The frame's headers in wire order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// RabbitMQ delivered it before (`redelivered:true`).
    pub redelivered: bool,
    /// Why the transport refused the message (a frame that does not decode,
    /// a message over the size limit); its body is then empty. It is
    /// acknowledged once the handler returns, like any other.
    pub refused: Option<String>,
}

impl Message {
    /// The value of header `name` (first occurrence).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `destination` header.
    pub fn destination(&self) -> Option<&str> {
        self.header("destination")
    }

    fn from_frame(frame: Frame) -> Self {
        let redelivered = frame.get("redelivered") == Some("true");
        Self {
            headers: frame.headers,
            body: frame.body,
            redelivered,
            refused: None,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    connected: AtomicBool,
    attempts: AtomicU64,
    connects: AtomicU64,
    received: AtomicU64,
    acked: AtomicU64,
}

/// Observable state of a consumer (readiness probes, tests); clones share it.
#[derive(Debug, Clone, Default)]
pub struct ConsumerState(Arc<Counters>);

impl ConsumerState {
    /// Subscribed right now.
    pub fn connected(&self) -> bool {
        self.0.connected.load(Ordering::SeqCst)
    }

    /// Sessions that reached the subscribed state.
    pub fn connects(&self) -> u64 {
        self.0.connects.load(Ordering::SeqCst)
    }

    /// Sessions started, successful or not.
    pub fn attempts(&self) -> u64 {
        self.0.attempts.load(Ordering::SeqCst)
    }

    /// Messages handed to the handler.
    pub fn received(&self) -> u64 {
        self.0.received.load(Ordering::SeqCst)
    }

    /// Messages acknowledged after their handler returned.
    pub fn acked(&self) -> u64 {
        self.0.acked.load(Ordering::SeqCst)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// Consumes until `shutdown` resolves. Handler calls are strictly sequential
/// (one message at a time); a message is ACKed (client-individual) only after
/// its handler returned, so a crash or disconnect mid-handler means RabbitMQ
/// redelivers it. Reconnects forever with capped exponential backoff and jitter.
///
/// A handler that is running when `shutdown` resolves is not cancelled: it
/// finishes, its message is acknowledged, then DISCONNECT is sent.
pub async fn consume<H, Fut>(
    config: StompConfig,
    state: ConsumerState,
    mut handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: FnMut(Message) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut shutdown = pin!(shutdown);
    let mut tls = None;
    let mut failures: u32 = 0;
    loop {
        ConsumerState::bump(&state.0.attempts);
        let end = session(&config, &state, &mut handler, shutdown.as_mut(), &mut tls).await;
        state.0.connected.store(false, Ordering::SeqCst);
        let (error, subscribed) = match end {
            End::Shutdown => {
                tracing::info!(queue = %config.queue, "stomp consumer stopped");
                return;
            }
            End::Failed { error, subscribed } => (error, subscribed),
        };
        if subscribed {
            failures = 0;
        }
        let delay = backoff(config.initial_backoff, config.max_backoff, failures);
        failures = failures.saturating_add(1);
        if subscribed {
            tracing::warn!(queue = %config.queue, error = %error, retry_in = ?delay, "stomp connection lost; reconnecting");
        } else {
            tracing::warn!(queue = %config.queue, attempt = failures, error = %error, retry_in = ?delay, "stomp connection failed; retrying");
        }
        tokio::select! {
            biased;
            () = shutdown.as_mut() => {
                tracing::info!(queue = %config.queue, "stomp consumer stopped");
                return;
            }
            () = sleep(delay) => {}
        }
    }
}

/// `min(initial · 2^failures, max)` plus 0–25 % jitter.
fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let base = initial
        .saturating_mul(1u32 << failures.min(31))
        .min(max.max(initial));
    let jitter = 1.0 + rand::random_range(0.0..=0.25);
    Duration::try_from_secs_f64(base.as_secs_f64() * jitter).unwrap_or(base)
}

/// How a session ended.
enum End {
    Shutdown,
    Failed {
        error: ConnError,
        /// The session had subscribed (so the backoff starts over).
        subscribed: bool,
    },
}

fn failed(error: ConnError, subscribed: bool) -> End {
    End::Failed { error, subscribed }
}

/// One connection: open, subscribe, consume until it fails or shutdown.
async fn session<H, Fut, S>(
    config: &StompConfig,
    state: &ConsumerState,
    handler: &mut H,
    mut shutdown: Pin<&mut S>,
    tls: &mut Option<Arc<rustls::ClientConfig>>,
) -> End
where
    H: FnMut(Message) -> Fut,
    Fut: Future<Output = ()>,
    S: Future<Output = ()>,
{
    let opened = tokio::select! {
        biased;
        () = shutdown.as_mut() => return End::Shutdown,
        r = timeout(CONNECT_TIMEOUT, open(config, tls)) => r,
    };
    let (mut conn, mut pending) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => return failed(e, false),
        Err(_) => return failed(ConnError::NoSubscription, false),
    };
    ConsumerState::bump(&state.0.connects);
    state.0.connected.store(true, Ordering::SeqCst);
    tracing::info!(
        queue = %config.queue,
        vhost = %config.vhost,
        send_heartbeat = ?conn.send_every,
        expect_heartbeat = ?conn.recv_every,
        "stomp consumer subscribed"
    );
    loop {
        if shutdown.as_mut().now_or_never().is_some() {
            conn.disconnect().await;
            return End::Shutdown;
        }
        if let Some(next) = pending.pop_front() {
            if let Err(e) = deliver(&mut conn, state, handler, &mut pending, next).await {
                return failed(e, true);
            }
            continue;
        }
        tokio::select! {
            biased;
            () = shutdown.as_mut() => {
                conn.disconnect().await;
                return End::Shutdown;
            }
            r = conn.step(&mut pending) => {
                if let Err(e) = r {
                    return failed(e, true);
                }
            }
        }
    }
}

/// Runs the handler on one MESSAGE, keeping the connection alive meanwhile,
/// then acknowledges it. The handler always runs to completion.
async fn deliver<H, Fut>(
    conn: &mut Conn,
    state: &ConsumerState,
    handler: &mut H,
    pending: &mut VecDeque<Pending>,
    next: Pending,
) -> Result<(), ConnError>
where
    H: FnMut(Message) -> Fut,
    Fut: Future<Output = ()>,
{
    let ack = next.frame.get("ack").map(str::to_owned);
    let mut message = Message::from_frame(next.frame);
    message.refused = next.refused;
    tracing::debug!(
        queue = %conn.queue,
        message_id = message.header("message-id").unwrap_or_default(),
        redelivered = message.redelivered,
        bytes = message.body.len(),
        "stomp message received"
    );
    ConsumerState::bump(&state.0.received);
    let mut running = pin!(handler(message));
    let mut broken = None;
    loop {
        if broken.is_some() {
            running.as_mut().await;
            break;
        }
        tokio::select! {
            biased;
            () = running.as_mut() => break,
            r = conn.step(pending) => {
                if let Err(e) = r {
                    broken = Some(e);
                }
            }
        }
    }
    if let Some(e) = broken {
        return Err(ConnError::WhileHandling(Box::new(e)));
    }
    match ack {
        Some(id) => {
            conn.send(&Frame::new("ACK").header("id", id)).await?;
            ConsumerState::bump(&state.0.acked);
        }
        None => {
            tracing::warn!(queue = %conn.queue, "stomp message without an ack header; not acknowledged")
        }
    }
    Ok(())
}

/// Whether the STOMP endpoint at `url` (`ws://` or `wss://`) answers: the
/// WebSocket handshake with the STOMP subprotocol succeeds within 10 s.
/// Nothing is logged in to or subscribed, so it needs no credentials and
/// has no effect on the broker; `waldur-coordinator check` uses it.
pub async fn reachable(url: &str) -> Result<(), String> {
    match timeout(Duration::from_secs(10), conn::handshake(url)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

#[cfg(test)]
mod tests;
