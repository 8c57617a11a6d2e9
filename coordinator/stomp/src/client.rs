//! A resilient STOMP 1.2 over WebSocket consumer of one RabbitMQ queue
//! (core spec §7.4), for RabbitMQ's Web-STOMP plugin.
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
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::codec::{self as stomp, Decoded, Frame};
use crate::ws::{Incoming, Limits, WsConn};
use waldur_runtime::secret::Secret;

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
        error: String,
        /// The session had subscribed (so the backoff starts over).
        subscribed: bool,
    },
}

fn failed(error: impl Into<String>, subscribed: bool) -> End {
    End::Failed {
        error: error.into(),
        subscribed,
    }
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
        Err(_) => return failed(format!("no subscription within {CONNECT_TIMEOUT:?}"), false),
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
) -> Result<(), String>
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
        return Err(format!(
            "{e} (while a handler ran; its message is redelivered)"
        ));
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

/// A MESSAGE waiting for the handler: decoded, or refused with the reason.
struct Pending {
    frame: Frame,
    refused: Option<String>,
}

impl Pending {
    fn decoded(frame: Frame) -> Self {
        Self {
            frame,
            refused: None,
        }
    }
}

/// One thing read from the broker.
enum Read {
    /// A heart-beat or a WebSocket control frame.
    Nothing,
    /// A WebSocket ping, to answer.
    Ping(Vec<u8>),
    /// A frame.
    Frame(Frame),
    /// A MESSAGE that cannot be handed over as it is: its ack id, message
    /// id and why.
    Refused(Pending),
}

/// An open, subscribed connection.
struct Conn {
    ws: WsConn,
    queue: String,
    /// Only to scrub it from broker errors.
    passcode: Secret,
    max_message_bytes: usize,
    /// Send an EOL when nothing was sent for this long.
    send_every: Option<Duration>,
    /// The broker's negotiated heart-beat; twice this without traffic is death.
    recv_every: Option<Duration>,
    last_tx: Instant,
}

impl Conn {
    async fn send(&mut self, frame: &Frame) -> Result<(), String> {
        self.send_text(&frame.encode(), &frame.command).await
    }

    /// Sends one WebSocket text message within [`SEND_TIMEOUT`] (a cut
    /// frame leaves the connection unusable: the caller reconnects).
    async fn send_text(&mut self, data: &[u8], what: &str) -> Result<(), String> {
        match timeout(SEND_TIMEOUT, self.ws.send_text(data)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("sending {what}: {e}")),
            Err(_) => return Err(format!("sending {what}: timed out after {SEND_TIMEOUT:?}")),
        }
        self.last_tx = Instant::now();
        Ok(())
    }

    async fn pong(&mut self, payload: &[u8]) -> Result<(), String> {
        match timeout(SEND_TIMEOUT, self.ws.pong(payload)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("answering a ping: {e}")),
            Err(_) => Err(format!(
                "answering a ping: timed out after {SEND_TIMEOUT:?}"
            )),
        }
    }

    /// The next frame (skipping heart-beats and control messages).
    async fn recv(&mut self) -> Result<Frame, String> {
        loop {
            match self.read().await? {
                Read::Frame(frame) => return Ok(frame),
                Read::Refused(p) => {
                    return Err(format!(
                        "refused message during the handshake: {}",
                        p.refused.unwrap_or_default()
                    ));
                }
                Read::Ping(payload) => self.pong(&payload).await?,
                Read::Nothing => {}
            }
        }
    }

    /// Reads one WebSocket message: a frame, a refused MESSAGE, or nothing
    /// (a heart-beat). Cancellation safe.
    async fn read(&mut self) -> Result<Read, String> {
        let incoming = self
            .ws
            .next()
            .await
            .map_err(|e| format!("websocket: {e}"))?;
        match incoming {
            Incoming::Control => Ok(Read::Nothing),
            Incoming::Ping(payload) => Ok(Read::Ping(payload)),
            Incoming::Closed(close) => Err(match close {
                Some((code, reason)) => format!("closed by the broker ({code}: {reason})"),
                None => "closed by the broker".into(),
            }),
            Incoming::Message(data) => match stomp::decode(&data, usize::MAX) {
                Ok(Decoded::Heartbeat) => Ok(Read::Nothing),
                Ok(Decoded::Frame(frame)) => Ok(Read::Frame(frame)),
                Err(e) => refused(&data, format!("malformed frame: {e}")),
            },
            Incoming::Oversized { head, size } => refused(
                &head,
                format!(
                    "message of {size} bytes exceeds events.max_message_bytes ({})",
                    self.max_message_bytes
                ),
            ),
        }
    }

    /// One round of the connection's own work: a heart-beat due, the broker
    /// silent for too long, or one message read (a MESSAGE is queued in
    /// `pending`). An error means the connection is unusable.
    async fn step(&mut self, pending: &mut VecDeque<Pending>) -> Result<(), String> {
        let send_at = self.send_every.map(|d| self.last_tx + d);
        // Any bytes count as life: a large message still arriving is not a
        // silent broker.
        let dead_at = self.recv_every.map(|d| self.ws.last_read() + 2 * d);
        tokio::select! {
            biased;
            () = sleep_until(send_at.unwrap_or_else(Instant::now)), if send_at.is_some() => {
                self.send_text(b"\n", "a heart-beat").await
            }
            // Only the read races the timers; answers are written after it
            // returned, so no frame is ever cut halfway.
            r = self.read() => match r? {
                Read::Nothing => Ok(()),
                Read::Ping(payload) => self.pong(&payload).await,
                Read::Refused(p) => {
                    pending.push_back(p);
                    Ok(())
                }
                Read::Frame(frame) => match frame.command.as_str() {
                    "MESSAGE" => {
                        pending.push_back(Pending::decoded(frame));
                        Ok(())
                    }
                    "ERROR" => Err(broker_error(&frame, Some(&self.passcode))),
                    "RECEIPT" => Ok(()),
                    other => {
                        tracing::debug!(queue = %self.queue, command = other, "unexpected stomp frame ignored");
                        Ok(())
                    }
                },
            },
            () = sleep_until(dead_at.unwrap_or_else(Instant::now)), if dead_at.is_some() => {
                Err(format!(
                    "nothing received from the broker for {:?}",
                    2 * self.recv_every.unwrap_or_default()
                ))
            }
        }
    }

    /// Best-effort graceful DISCONNECT: waits briefly for its receipt (so the
    /// ACKs sent before it were processed), then closes the WebSocket.
    async fn disconnect(mut self) {
        let graceful = async {
            self.send(&Frame::new("DISCONNECT").header("receipt", DISCONNECT_RECEIPT))
                .await?;
            // Messages still arriving are not acknowledged: the broker
            // hands them out again after the disconnect.
            loop {
                match self.read().await? {
                    Read::Frame(frame)
                        if frame.command == "RECEIPT"
                            && frame.get("receipt-id") == Some(DISCONNECT_RECEIPT) =>
                    {
                        return Ok::<_, String>(());
                    }
                    Read::Ping(payload) => self.pong(&payload).await?,
                    Read::Frame(_) | Read::Refused(_) | Read::Nothing => {}
                }
            }
        };
        match timeout(DISCONNECT_TIMEOUT, graceful).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(queue = %self.queue, error = %e, "stomp disconnect failed")
            }
            Err(_) => tracing::debug!(queue = %self.queue, "no receipt for stomp disconnect"),
        }
        let _ = timeout(DISCONNECT_TIMEOUT, self.ws.close()).await;
    }
}

/// A message that does not decode (or is too large) is a MESSAGE to
/// acknowledge when its head names one with an ack id; anything else is a
/// broken stream.
fn refused(data: &[u8], why: String) -> Result<Read, String> {
    match stomp::salvage(data) {
        Some(head) if head.command == "MESSAGE" && head.get("ack").is_some() => {
            Ok(Read::Refused(Pending {
                frame: head,
                refused: Some(why),
            }))
        }
        _ => Err(why),
    }
}

/// "broker error: <message header>: <body excerpt>", with the passcode
/// scrubbed in case the broker echoes it.
fn broker_error(frame: &Frame, passcode: Option<&Secret>) -> String {
    let mut text = format!(
        "broker error: {}",
        frame.get("message").unwrap_or("(no message)")
    );
    let body = String::from_utf8_lossy(&frame.body);
    let body = body.trim();
    if !body.is_empty() {
        text.push_str(": ");
        text.extend(body.chars().take(ERROR_BODY_LOGGED));
    }
    match passcode.map(Secret::expose) {
        Some(p) if !p.is_empty() => text.replace(p, "<redacted>"),
        _ => text,
    }
}

/// Heart-beat intervals (send, expect) negotiated per STOMP 1.2 from ours
/// (`ms` both ways) and the server's `heart-beat: sx,sy`.
fn negotiate(ms: u64, server: Option<&str>) -> (Option<Duration>, Option<Duration>) {
    let (sx, sy) = server
        .and_then(|h| h.split_once(','))
        .and_then(|(x, y)| Some((x.trim().parse::<u64>().ok()?, y.trim().parse::<u64>().ok()?)))
        .unwrap_or((0, 0));
    let pick = |ours: u64, theirs: u64| {
        (ours != 0 && theirs != 0).then(|| Duration::from_millis(ours.max(theirs)))
    };
    (pick(ms, sy), pick(ms, sx))
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let native = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(native.certs);
    if roots.is_empty() {
        return Err(format!(
            "no trusted root certificates found ({} errors loading them)",
            native.errors.len()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opens a connection and subscribes; returns it with any MESSAGE frames
/// that arrived before the subscription's receipt.
async fn open(
    config: &StompConfig,
    tls: &mut Option<Arc<rustls::ClientConfig>>,
) -> Result<(Conn, VecDeque<Pending>), String> {
    let tls = if config.url.starts_with("wss://") {
        Some(match tls {
            Some(c) => c.clone(),
            None => tls.insert(tls_config()?).clone(),
        })
    } else {
        None
    };
    let limits = Limits {
        max_frame_bytes: config.max_frame_bytes.max(1024),
        max_message_bytes: config.max_message_bytes.max(1024),
    };
    let ws = WsConn::connect(&config.url, SUBPROTOCOL, tls, limits)
        .await
        .map_err(|e| format!("websocket connect: {e}"))?;
    let now = Instant::now();
    let mut conn = Conn {
        ws,
        queue: config.queue.clone(),
        passcode: config.passcode.clone(),
        max_message_bytes: limits.max_message_bytes,
        send_every: None,
        recv_every: None,
        last_tx: now,
    };
    let ms = u64::try_from(config.heartbeat.as_millis()).unwrap_or(u64::MAX);
    conn.send(
        &Frame::new("CONNECT")
            .header("accept-version", "1.2")
            .header("host", &config.vhost)
            .header("login", &config.login)
            .header("passcode", config.passcode.expose())
            .header("heart-beat", format!("{ms},{ms}")),
    )
    .await?;
    let connected = conn.recv().await?;
    match connected.command.as_str() {
        "CONNECTED" => {}
        "ERROR" => return Err(broker_error(&connected, Some(&config.passcode))),
        other => return Err(format!("expected CONNECTED, got {other}")),
    }
    (conn.send_every, conn.recv_every) = negotiate(ms, connected.get("heart-beat"));
    let receipt = format!("subscribe-{}", config.queue);
    conn.send(
        &Frame::new("SUBSCRIBE")
            .header("id", &config.queue)
            .header("destination", format!("/amq/queue/{}", config.queue))
            .header("ack", "client-individual")
            .header("prefetch-count", config.prefetch.max(1).to_string())
            .header("receipt", &receipt),
    )
    .await?;
    let mut early = VecDeque::new();
    loop {
        let frame = match conn.read().await? {
            Read::Nothing => continue,
            Read::Ping(payload) => {
                conn.pong(&payload).await?;
                continue;
            }
            Read::Refused(p) => {
                early.push_back(p);
                continue;
            }
            Read::Frame(frame) => frame,
        };
        match frame.command.as_str() {
            "RECEIPT" if frame.get("receipt-id") == Some(receipt.as_str()) => break,
            "MESSAGE" => early.push_back(Pending::decoded(frame)),
            "ERROR" => return Err(broker_error(&frame, Some(&config.passcode))),
            other => {
                tracing::debug!(queue = %config.queue, command = other, "unexpected stomp frame ignored");
            }
        }
    }
    Ok((conn, early))
}

#[cfg(test)]
mod tests;
