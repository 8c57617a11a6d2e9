//! A minimal WebSocket client (RFC 6455) for STOMP over RabbitMQ's
//! Web-STOMP plugin.
//!
//! Why not a general WebSocket library: RabbitMQ sends every STOMP frame as
//! a *text* message, whatever the bytes of the AMQP body it carries, and a
//! general client refuses a text message that is not UTF-8 by closing the
//! connection. The broker then redelivers the same message to the next
//! connection, and the queue is stuck for ever behind it. The same happens
//! with a message over the client's size limit. This client hands every
//! message over as bytes, and a message over the limits is not buffered:
//! its head (where STOMP keeps the headers, the ack id among them) is kept
//! and the rest is read and dropped, so the consumer can acknowledge it and
//! say why it was not handled.
//!
//! Reading is cancellation safe (bytes are buffered before they are parsed),
//! so [`WsConn::next`] can race a timer in `select!`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The GUID RFC 6455 appends to the key to prove the server read it.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest handshake answer read.
const MAX_HANDSHAKE: usize = 16 << 10;
/// How much of an oversized message is kept (its STOMP headers).
pub const HEAD_KEPT: usize = 64 << 10;

/// Limits on what is buffered.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single WebSocket frame buffered.
    pub max_frame_bytes: usize,
    /// Largest message (all its fragments) buffered.
    pub max_message_bytes: usize,
}

/// What the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text or binary message.
    Message(Vec<u8>),
    /// A message over the limits: its first [`HEAD_KEPT`] bytes and its
    /// full size. The rest was read and dropped.
    Oversized {
        /// The start of the message.
        head: Vec<u8>,
        /// Its size in bytes.
        size: usize,
    },
    /// A ping: the caller answers it with [`WsConn::pong`] (not done inside
    /// [`WsConn::next`], which must stay cancellation safe).
    Ping(Vec<u8>),
    /// A pong.
    Control,
    /// The server closed the connection (code, reason).
    Closed(Option<(u16, String)>),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open WebSocket connection.
pub struct WsConn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    limits: Limits,
    /// The message being assembled from fragments.
    message: Vec<u8>,
    /// Its size so far (including dropped bytes).
    message_size: usize,
    /// True once it went over a limit: only its head is kept.
    oversized: bool,
    /// True between a non-final data frame and its final continuation.
    in_message: bool,
    /// The frame of an oversized message being read and dropped.
    streaming: Option<Streaming>,
    /// When bytes last arrived: a large message still arriving is a live
    /// peer, even before it is whole.
    last_read: tokio::time::Instant,
}

/// A frame whose payload is consumed as it arrives.
#[derive(Debug, Clone, Copy)]
struct Streaming {
    remaining: u64,
    fin: bool,
    mask: Option<[u8; 4]>,
    /// Payload bytes consumed so far (for the mask).
    offset: usize,
}

impl std::fmt::Debug for WsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConn").finish_non_exhaustive()
    }
}

/// A WebSocket failure; the connection is unusable after it.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The URL is not `ws://` or `wss://` with a host.
    #[error("url {0:?}: {1}")]
    Url(String, String),
    /// TCP, TLS or the stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server did not accept the WebSocket handshake.
    #[error("websocket handshake: {0}")]
    Handshake(String),
    /// The server broke the framing rules.
    #[error("websocket protocol: {0}")]
    Protocol(&'static str),
}

impl WsConn {
    /// Connects to `url` (`ws://` or `wss://`) offering `subprotocol`.
    pub async fn connect(
        url: &str,
        subprotocol: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        limits: Limits,
    ) -> Result<Self, WsError> {
        let parsed = url::Url::parse(url).map_err(|e| WsError::Url(url.into(), e.to_string()))?;
        let secure = match parsed.scheme() {
            "ws" => false,
            "wss" => true,
            other => {
                return Err(WsError::Url(
                    url.into(),
                    format!("scheme {other} is not ws or wss"),
                ));
            }
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| WsError::Url(url.into(), "no host".into()))?
            .to_owned();
        let port = parsed.port().unwrap_or(if secure { 443 } else { 80 });
        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = if secure {
            let config =
                tls.ok_or_else(|| WsError::Url(url.into(), "no tls configuration".into()))?;
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|e| WsError::Url(url.into(), e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Box::new(stream)
        } else {
            Box::new(tcp)
        };
        let mut conn = Self {
            io,
            buf: Vec::with_capacity(8 << 10),
            limits,
            message: Vec::new(),
            message_size: 0,
            oversized: false,
            in_message: false,
            streaming: None,
            last_read: tokio::time::Instant::now(),
        };
        let path = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        let host_header = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        conn.handshake(&path, &host_header, subprotocol).await?;
        Ok(conn)
    }

    async fn handshake(
        &mut self,
        path: &str,
        host: &str,
        subprotocol: &str,
    ) -> Result<(), WsError> {
        let nonce: [u8; 16] = rand::random();
        let key = base64(&nonce);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
        );
        self.io.write_all(request.as_bytes()).await?;
        self.io.flush().await?;
        let end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if self.buf.len() > MAX_HANDSHAKE {
                return Err(WsError::Handshake("answer headers too long".into()));
            }
            if self.fill().await? == 0 {
                return Err(WsError::Handshake(
                    "connection closed during the handshake".into(),
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        let code = status.split_whitespace().nth(1).unwrap_or_default();
        if code != "101" {
            return Err(WsError::Handshake(format!("http status {code}")));
        }
        let expected = base64(&sha1(format!("{key}{ACCEPT_GUID}").as_bytes()));
        let accept = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|(_, v)| v.trim().to_owned());
        if accept.as_deref() != Some(expected.as_str()) {
            return Err(WsError::Handshake("wrong Sec-WebSocket-Accept".into()));
        }
        Ok(())
    }

    /// Reads more bytes into the buffer; 0 at end of stream. Cancelling it
    /// loses nothing.
    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 << 10];
        let n = self.io.read(&mut chunk).await?;
        if n > 0 {
            self.last_read = tokio::time::Instant::now();
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// When bytes last arrived from the peer.
    pub fn last_read(&self) -> tokio::time::Instant {
        self.last_read
    }

    /// The next message or control event. Cancellation safe: it only reads
    /// (a ping is returned for the caller to answer).
    pub async fn next(&mut self) -> Result<Incoming, WsError> {
        loop {
            if let Some(event) = self.parse()? {
                return Ok(event.into());
            }
            if self.fill().await? == 0 {
                return Err(WsError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                )));
            }
        }
    }

    /// Parses what the buffer holds, without waiting.
    fn parse(&mut self) -> Result<Option<Parsed>, WsError> {
        loop {
            // The rest of a frame of an oversized message: keep what fits
            // in the head, drop the other bytes as they arrive.
            if let Some(st) = &mut self.streaming {
                let available = self
                    .buf
                    .len()
                    .min(usize::try_from(st.remaining).unwrap_or(usize::MAX));
                let keep = HEAD_KEPT.saturating_sub(self.message.len()).min(available);
                let mut part = self.buf[..keep].to_vec();
                unmask_at(&mut part, st.mask, st.offset);
                self.message.extend_from_slice(&part);
                self.buf.drain(..available);
                st.offset += available;
                st.remaining -= available as u64;
                self.message_size = self.message_size.saturating_add(available);
                if st.remaining > 0 {
                    return Ok(None);
                }
                let fin = st.fin;
                self.streaming = None;
                if fin {
                    return Ok(Some(self.finish()));
                }
                self.in_message = true;
                continue;
            }
            let Some(h) = header(&self.buf)? else {
                return Ok(None);
            };
            let len = usize::try_from(h.len).map_err(|_| WsError::Protocol("frame too long"))?;
            if h.opcode >= 0x8 {
                // Control frames: small, whole, never fragmented.
                if !h.fin || len > 125 {
                    return Err(WsError::Protocol("invalid control frame"));
                }
                if self.buf.len() < h.size + len {
                    return Ok(None);
                }
                let mut payload = self.buf[h.size..h.size + len].to_vec();
                unmask(&mut payload, h.mask);
                self.buf.drain(..h.size + len);
                return Ok(Some(match h.opcode {
                    0x8 => Parsed::Closed(close_reason(&payload)),
                    0x9 => Parsed::Ping(payload),
                    0xA => Parsed::Pong,
                    _ => return Err(WsError::Protocol("unknown control opcode")),
                }));
            }
            match (h.opcode, self.in_message) {
                (0x0, true) | (0x1 | 0x2, false) => {}
                _ => return Err(WsError::Protocol("unexpected data frame")),
            }
            if len > self.limits.max_frame_bytes
                || self.message_size.saturating_add(len) > self.limits.max_message_bytes
            {
                self.oversized = true;
            }
            if self.oversized {
                self.buf.drain(..h.size);
                self.streaming = Some(Streaming {
                    remaining: h.len,
                    fin: h.fin,
                    mask: h.mask,
                    offset: 0,
                });
                continue;
            }
            if self.buf.len() < h.size + len {
                return Ok(None);
            }
            let mut payload = self.buf[h.size..h.size + len].to_vec();
            unmask(&mut payload, h.mask);
            self.buf.drain(..h.size + len);
            self.message_size += len;
            self.message.extend_from_slice(&payload);
            if !h.fin {
                self.in_message = true;
                continue;
            }
            return Ok(Some(self.finish()));
        }
    }

    /// The message assembled so far, and a clean slate for the next.
    fn finish(&mut self) -> Parsed {
        self.in_message = false;
        let message = std::mem::take(&mut self.message);
        let size = std::mem::take(&mut self.message_size);
        if std::mem::take(&mut self.oversized) {
            Parsed::Oversized {
                head: message,
                size,
            }
        } else {
            Parsed::Message(message)
        }
    }

    /// Answers a ping.
    pub async fn pong(&mut self, payload: &[u8]) -> Result<(), WsError> {
        self.send_frame(0xA, payload).await
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, data: &[u8]) -> Result<(), WsError> {
        self.send_frame(0x1, data).await
    }

    /// Sends a close frame and shuts the stream down (best effort).
    pub async fn close(&mut self) {
        let _ = self.send_frame(0x8, &1000u16.to_be_bytes()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), WsError> {
        let mask: [u8; 4] = rand::random();
        let mut frame = encode_header(true, opcode, payload.len() as u64, Some(mask));
        let start = frame.len();
        frame.extend_from_slice(payload);
        unmask_at(&mut frame[start..], Some(mask), 0);
        self.io.write_all(&frame).await?;
        self.io.flush().await?;
        Ok(())
    }
}

enum Parsed {
    Message(Vec<u8>),
    Oversized { head: Vec<u8>, size: usize },
    Ping(Vec<u8>),
    Pong,
    Closed(Option<(u16, String)>),
}

impl From<Parsed> for Incoming {
    fn from(p: Parsed) -> Self {
        match p {
            Parsed::Message(m) => Self::Message(m),
            Parsed::Oversized { head, size } => Self::Oversized { head, size },
            Parsed::Ping(payload) => Self::Ping(payload),
            Parsed::Pong => Self::Control,
            Parsed::Closed(c) => Self::Closed(c),
        }
    }
}

/// A frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    /// Bytes the header takes.
    size: usize,
}

/// The header at the start of `buf`, if it is all there.
fn header(buf: &[u8]) -> Result<Option<Header>, WsError> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol("reserved bits set"));
    }
    let masked = b1 & 0x80 != 0;
    let (len, ext) = match b1 & 0x7F {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(b) => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(b);
                (u64::from_be_bytes(raw), 8)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 0),
    };
    let mask_len = if masked { 4 } else { 0 };
    let Some(m) = rest.get(ext..ext + mask_len) else {
        return Ok(None);
    };
    let mask = masked.then(|| [m[0], m[1], m[2], m[3]]);
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        mask,
        len,
        size: 2 + ext + mask_len,
    }))
}

fn encode_header(fin: bool, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0F));
    let masked = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(masked | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(masked | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(masked | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
    out
}

fn unmask(data: &mut [u8], mask: Option<[u8; 4]>) {
    unmask_at(data, mask, 0);
}

fn unmask_at(data: &mut [u8], mask: Option<[u8; 4]>, offset: usize) {
    if let Some(m) = mask {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= m[(offset + i) % 4];
        }
    }
}

fn close_reason(payload: &[u8]) -> Option<(u16, String)> {
    let [a, b, reason @ ..] = payload else {
        return None;
    };
    Some((
        u16::from_be_bytes([*a, *b]),
        String::from_utf8_lossy(reason).into_owned(),
    ))
}

fn sha1(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
