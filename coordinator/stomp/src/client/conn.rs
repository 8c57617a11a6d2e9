//! One connection to the broker: opened and subscribed, read and written
//! with heart-beats kept and watched, and why it ended.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout};

use crate::codec::{self as stomp, Decoded, Frame};
use crate::ws::{Incoming, Limits, WsConn, WsError};
use waldur_runtime::secret::Secret;

use super::{
    CONNECT_TIMEOUT, DISCONNECT_RECEIPT, DISCONNECT_TIMEOUT, ERROR_BODY_LOGGED, SEND_TIMEOUT,
    SUBPROTOCOL, StompConfig,
};

/// Why a connection ended or could not be made; the consumer reconnects.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
    /// The WebSocket connection could not be made.
    #[error("websocket connect: {0}")]
    Connect(#[source] WsError),
    /// No trusted roots, or rustls refused its settings.
    #[error("tls: {0}")]
    Tls(String),
    /// Connected, but no subscription in time.
    #[error("no subscription within {CONNECT_TIMEOUT:?}")]
    NoSubscription,
    /// A write failed (`what`: "sending CONNECT", "answering a ping", ...).
    #[error("{what}: {source}")]
    Write {
        /// What was being sent.
        what: String,
        /// Why.
        #[source]
        source: WsError,
    },
    /// A write did not finish within [`SEND_TIMEOUT`].
    #[error("{what}: timed out after {SEND_TIMEOUT:?}")]
    WriteTimeout {
        /// What was being sent.
        what: String,
    },
    /// Reading failed.
    #[error("websocket: {0}")]
    Read(#[source] WsError),
    /// The broker closed the WebSocket.
    #[error("closed by the broker{}", close_reason(.0))]
    Closed(Option<(u16, String)>),
    /// The broker sent an ERROR frame (text with the passcode scrubbed).
    #[error("{0}")]
    Broker(String),
    /// A frame that cannot be read and names no message to acknowledge.
    #[error("{0}")]
    Unreadable(String),
    /// A MESSAGE that could not be handed over arrived before the
    /// subscription was confirmed.
    #[error("refused message during the handshake: {0}")]
    RefusedEarly(String),
    /// The broker answered CONNECT with something else.
    #[error("expected CONNECTED, got {0}")]
    NotConnected(String),
    /// The broker stopped sending heart-beats.
    #[error("nothing received from the broker for {0:?}")]
    Silent(Duration),
    /// The connection failed while a handler ran.
    #[error("{0} (while a handler ran; its message is redelivered)")]
    WhileHandling(#[source] Box<ConnError>),
}

pub(super) fn close_reason(close: &Option<(u16, String)>) -> String {
    match close {
        Some((code, reason)) => format!(" ({code}: {reason})"),
        None => String::new(),
    }
}

/// A MESSAGE waiting for the handler: decoded, or refused with the reason.
pub(super) struct Pending {
    pub(super) frame: Frame,
    pub(super) refused: Option<String>,
}

impl Pending {
    pub(super) fn decoded(frame: Frame) -> Self {
        Self {
            frame,
            refused: None,
        }
    }
}

/// One thing read from the broker.
pub(super) enum Read {
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
pub(super) struct Conn {
    pub(super) ws: WsConn,
    pub(super) queue: String,
    /// Only to scrub it from broker errors.
    pub(super) passcode: Secret,
    pub(super) max_message_bytes: usize,
    /// Send an EOL when nothing was sent for this long.
    pub(super) send_every: Option<Duration>,
    /// The broker's negotiated heart-beat; twice this without traffic is death.
    pub(super) recv_every: Option<Duration>,
    pub(super) last_tx: Instant,
}

impl Conn {
    pub(super) async fn send(&mut self, frame: &Frame) -> Result<(), ConnError> {
        self.send_text(&frame.encode(), &frame.command).await
    }

    /// Sends one WebSocket text message within [`SEND_TIMEOUT`] (a cut
    /// frame leaves the connection unusable: the caller reconnects).
    pub(super) async fn send_text(&mut self, data: &[u8], what: &str) -> Result<(), ConnError> {
        let what = || format!("sending {what}");
        match timeout(SEND_TIMEOUT, self.ws.send_text(data)).await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(ConnError::Write {
                    what: what(),
                    source,
                });
            }
            Err(_) => return Err(ConnError::WriteTimeout { what: what() }),
        }
        self.last_tx = Instant::now();
        Ok(())
    }

    pub(super) async fn pong(&mut self, payload: &[u8]) -> Result<(), ConnError> {
        let what = || "answering a ping".to_owned();
        match timeout(SEND_TIMEOUT, self.ws.pong(payload)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(ConnError::Write {
                what: what(),
                source,
            }),
            Err(_) => Err(ConnError::WriteTimeout { what: what() }),
        }
    }

    /// The next frame (skipping heart-beats and control messages).
    pub(super) async fn recv(&mut self) -> Result<Frame, ConnError> {
        loop {
            match self.read().await? {
                Read::Frame(frame) => return Ok(frame),
                Read::Refused(p) => {
                    return Err(ConnError::RefusedEarly(p.refused.unwrap_or_default()));
                }
                Read::Ping(payload) => self.pong(&payload).await?,
                Read::Nothing => {}
            }
        }
    }

    /// Reads one WebSocket message: a frame, a refused MESSAGE, or nothing
    /// (a heart-beat). Cancellation safe.
    pub(super) async fn read(&mut self) -> Result<Read, ConnError> {
        let incoming = self.ws.next().await.map_err(ConnError::Read)?;
        match incoming {
            Incoming::Control => Ok(Read::Nothing),
            Incoming::Ping(payload) => Ok(Read::Ping(payload)),
            Incoming::Closed(close) => Err(ConnError::Closed(close)),
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
    pub(super) async fn step(&mut self, pending: &mut VecDeque<Pending>) -> Result<(), ConnError> {
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
                    "ERROR" => Err(ConnError::Broker(broker_error(&frame, Some(&self.passcode)))),
                    "RECEIPT" => Ok(()),
                    other => {
                        tracing::debug!(queue = %self.queue, command = other, "unexpected stomp frame ignored");
                        Ok(())
                    }
                },
            },
            () = sleep_until(dead_at.unwrap_or_else(Instant::now)), if dead_at.is_some() => {
                Err(ConnError::Silent(2 * self.recv_every.unwrap_or_default()))
            }
        }
    }

    /// Best-effort graceful DISCONNECT: waits briefly for its receipt (so the
    /// ACKs sent before it were processed), then closes the WebSocket.
    pub(super) async fn disconnect(mut self) {
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
                        return Ok::<_, ConnError>(());
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
pub(super) fn refused(data: &[u8], why: String) -> Result<Read, ConnError> {
    match stomp::salvage(data) {
        Some(head) if head.command == "MESSAGE" && head.get("ack").is_some() => {
            Ok(Read::Refused(Pending {
                frame: head,
                refused: Some(why),
            }))
        }
        _ => Err(ConnError::Unreadable(why)),
    }
}

/// "broker error: <message header>: <body excerpt>", with the passcode
/// scrubbed in case the broker echoes it.
pub(super) fn broker_error(frame: &Frame, passcode: Option<&Secret>) -> String {
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
pub(super) fn negotiate(ms: u64, server: Option<&str>) -> (Option<Duration>, Option<Duration>) {
    let (sx, sy) = server
        .and_then(|h| h.split_once(','))
        .and_then(|(x, y)| Some((x.trim().parse::<u64>().ok()?, y.trim().parse::<u64>().ok()?)))
        .unwrap_or((0, 0));
    let pick = |ours: u64, theirs: u64| {
        (ours != 0 && theirs != 0).then(|| Duration::from_millis(ours.max(theirs)))
    };
    (pick(ms, sy), pick(ms, sx))
}

pub(super) fn tls_config() -> Result<Arc<rustls::ClientConfig>, ConnError> {
    let roots =
        waldur_runtime::tls::client_roots(None).map_err(|e| ConnError::Tls(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opens the WebSocket with the STOMP subprotocol and drops it: the
/// endpoint answers. No STOMP frame is sent, so no credentials are needed.
pub(super) async fn handshake(url: &str) -> Result<(), ConnError> {
    let tls = if url.starts_with("wss://") {
        Some(tls_config()?)
    } else {
        None
    };
    let limits = Limits {
        max_frame_bytes: 1 << 16,
        max_message_bytes: 1 << 16,
    };
    WsConn::connect(url, SUBPROTOCOL, tls, limits)
        .await
        .map(drop)
        .map_err(ConnError::Connect)
}

/// Opens a connection and subscribes; returns it with any MESSAGE frames
/// that arrived before the subscription's receipt.
pub(super) async fn open(
    config: &StompConfig,
    tls: &mut Option<Arc<rustls::ClientConfig>>,
) -> Result<(Conn, VecDeque<Pending>), ConnError> {
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
        .map_err(ConnError::Connect)?;
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
        "ERROR" => {
            return Err(ConnError::Broker(broker_error(
                &connected,
                Some(&config.passcode),
            )));
        }
        other => return Err(ConnError::NotConnected(other.to_owned())),
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
            "ERROR" => {
                return Err(ConnError::Broker(broker_error(
                    &frame,
                    Some(&config.passcode),
                )));
            }
            other => {
                tracing::debug!(queue = %config.queue, command = other, "unexpected stomp frame ignored");
            }
        }
    }
    Ok((conn, early))
}
