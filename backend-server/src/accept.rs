//! Accepting connections: the mutual-TLS handshake run here rather than
//! inside tonic, so a refused handshake is seen. Each refusal is counted
//! (`waldur_backend_tls_handshakes_refused_total{reason}`) and logged at info
//! with the peer address and the reason, at most
//! [`waldur_runtime::handshake::LOG_BURST`] lines a minute (a scanner must
//! not flood the log); the lines held back are counted in the next one. Accepted connections carry the peer's address
//! and certificates to the allowlist check as [`PeerInfo`].
//!
//! Handshakes in progress are bounded, in all ([`MAX_HANDSHAKES`]) and per
//! peer address ([`MAX_HANDSHAKES_PER_PEER`]): a scanner opening
//! connections it never finishes cannot use up the file descriptors, and
//! cannot crowd out the coordinator from another address. A connection over
//! the bounds is closed at once (reason `busy`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;

use waldur_runtime::handshake::{HANDSHAKE_TIMEOUT, RefusalLog, Slots};
pub use waldur_runtime::handshake::{MAX_HANDSHAKES, MAX_HANDSHAKES_PER_PEER};

/// Who is on the other end of an accepted connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// Its verified certificate chain, leaf first.
    pub certs: Arc<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

/// A mutual-TLS connection the server serves gRPC on: accepted from a
/// client, or dialed out to the coordinator's tunnel (then the TLS client
/// side, and dropping `_closed` tells the dialer the connection is gone).
pub struct TlsConn {
    pub(crate) inner: tokio_rustls::TlsStream<TcpStream>,
    pub(crate) peer: PeerInfo,
    /// Dropped with the connection.
    pub(crate) _closed: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A stream of accepted mutual-TLS connections from `listener`; handshakes
/// run concurrently, so a slow client never holds up the others.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let log = RefusalLog::new("tls handshake refused");
    let slots = Slots::default();
    tokio::spawn(async move {
        loop {
            // The server dropping the stream (shutdown) closes the listener.
            let accepted = tokio::select! {
                () = tx.closed() => return,
                r = listener.accept() => r,
            };
            let (tcp, remote_addr) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(slot) = slots.take(remote_addr.ip()) else {
                refused(&log, remote_addr, "busy", "too many handshakes in progress");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (tx, acceptor, log) = (tx.clone(), acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(slot);
                let conn = match outcome {
                    Ok(Ok(tls)) => {
                        let certs = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                            .unwrap_or_default();
                        TlsConn {
                            inner: tokio_rustls::TlsStream::Server(tls),
                            peer: PeerInfo {
                                remote_addr,
                                certs: Arc::new(certs),
                            },
                            _closed: None,
                        }
                    }
                    Ok(Err(e)) => {
                        refused(&log, remote_addr, classify(&e), &e.to_string());
                        return;
                    }
                    Err(_) => {
                        let detail = format!("no handshake within {HANDSHAKE_TIMEOUT:?}");
                        refused(&log, remote_addr, "timeout", &detail);
                        return;
                    }
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The bounded reason label of a failed handshake.
fn classify(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    let Some(tls) = e.get_ref().and_then(|x| x.downcast_ref::<Error>()) else {
        return "other";
    };
    match tls {
        Error::NoCertificatesPresented => "no_certificate",
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_ca",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired",
        Error::InvalidCertificate(_) => "bad_certificate",
        Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::InvalidMessage(_)
        | Error::PeerIncompatible(_)
        | Error::NoApplicationProtocol => "protocol",
        _ => "other",
    }
}

/// Counts a refused connection and logs it (rate-limited).
fn refused(log: &RefusalLog, peer: SocketAddr, reason: &'static str, detail: &str) {
    crate::metrics::tls_refused(reason);
    log.refused(peer, reason, detail);
}
