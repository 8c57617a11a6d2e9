//! The tunnel listener: backend servers at sites that accept no inbound
//! connection dial out to it, and each accepted connection becomes the
//! transport of the backends it serves. The contract, the mutual TLS and
//! the identities are those of a direct connection; only who dials whom is
//! reversed. After the TLS handshake the backend server names the backends
//! it serves (`waldur_runtime::tunnel`); the allowlist binds each
//! certificate identity to the backend names it may serve, so one cluster's
//! certificate cannot pretend to be another cluster. Then the coordinator
//! speaks HTTP/2 as the client over the connection, as it would over one it
//! dialed.
//!
//! A newer connection for a backend replaces the older one (logged). A
//! backend without a connection is unavailable: its calls fail UNAVAILABLE
//! and orders wait, as with an unreachable server.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};
use waldur_runtime::handshake::{RefusalLog, Slot, Slots};
use waldur_runtime::tunnel;

use crate::config::TunnelConfig;

/// Why the tunnel listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The TLS files.
    #[error("tunnel.tls: {0}")]
    Tls(#[from] waldur_runtime::TlsError),
    /// The listen address.
    #[error("tunnel.listen {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// One backend's connection state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// Since when the current connection is up; `None` when not connected.
    pub connected_since: Option<SystemTime>,
    /// Connections accepted for the backend before the current one.
    pub reconnects: u64,
    /// The certificate identity of the connected server.
    pub peer: Option<String>,
    /// This process listens for the server (false when another process,
    /// the running coordinator, holds the tunnel's port).
    pub listening: bool,
}

#[derive(Clone)]
struct Link {
    id: u64,
    channel: Channel,
    since: SystemTime,
    peer: String,
}

#[derive(Default)]
struct Links {
    /// The connection each backend is reached through now.
    current: HashMap<String, Link>,
    /// Connections accepted per backend so far (reconnects are one less).
    accepted: HashMap<String, u64>,
}

/// The tunnel listener and the connections it holds, by backend name.
/// Dropping it stops the listener and closes every connection; the backend
/// servers keep dialing until a coordinator listens again.
pub struct TunnelHub {
    links: Mutex<Links>,
    /// `None` for a detached hub (another process holds the port).
    local_addr: Option<SocketAddr>,
    next_id: AtomicU64,
    /// Dropped with the hub: stops the accept loop.
    _stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for TunnelHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelHub")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl TunnelHub {
    /// Binds the listener and accepts in the background (needs a tokio
    /// runtime). `served` are the backends configured to come through the
    /// tunnel: a server offering another name is refused.
    pub fn bind(config: &TunnelConfig, served: Vec<String>) -> Result<Arc<Self>, TunnelError> {
        let mut tls = (*config.tls.load()?.rustls_server_config()?).clone();
        tls.alpn_protocols = vec![tunnel::ALPN.to_vec()];
        let addr = config.listen;
        let bind = |source| TunnelError::Bind { addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        std_listener.set_nonblocking(true).map_err(bind)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind)?;
        let local_addr = listener.local_addr().map_err(bind)?;
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let hub = Arc::new(Self {
            links: Mutex::new(Links::default()),
            local_addr: Some(local_addr),
            next_id: AtomicU64::new(1),
            _stop: Some(stop_tx),
        });
        // Every tunnel backend has its series from the start, so an alert on
        // "not connected" fires for a server that never dialed in too.
        for name in &served {
            crate::metrics::tunnel_disconnected(name);
        }
        tracing::info!(addr = %local_addr, backends = ?served, "tunnel listening for backend servers");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let rules = Arc::new(Rules {
            allowed: config.allowed.clone(),
            served,
            max_concurrency: config.max_concurrency.max(1),
        });
        let weak = Arc::downgrade(&hub);
        // The port faces the sites' networks: openings in progress are
        // bounded in all and per address, and refusals are logged at a
        // bounded rate, as on the backend server's own port.
        let slots = Slots::default();
        let log = RefusalLog::new("tunnel connection refused");
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = &mut stop_rx => return,
                    r = listener.accept() => r,
                };
                let (tcp, remote) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "tunnel accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // The hub is gone (the coordinator stopped): stop accepting.
                let Some(hub) = weak.upgrade() else { return };
                let Some(slot) = slots.take(remote.ip()) else {
                    log.refused(remote, "busy", "too many openings in progress");
                    continue;
                };
                let (acceptor, rules, log) = (acceptor.clone(), rules.clone(), log.clone());
                tokio::spawn(async move {
                    if let Err(e) = hub.admit(tcp, &acceptor, &rules, slot).await {
                        log.refused(remote, "opening", &e);
                    }
                });
            }
        });
        Ok(hub)
    }

    /// A hub without a listener, for commands that run beside a running
    /// coordinator holding the port: no backend is ever connected.
    pub fn detached() -> Arc<Self> {
        Arc::new(Self {
            links: Mutex::new(Links::default()),
            local_addr: None,
            next_id: AtomicU64::new(1),
            _stop: None,
        })
    }

    /// The bound address; `None` for a detached hub.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    fn links(&self) -> std::sync::MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The channel to `backend`, if its server is connected.
    pub fn channel(&self, backend: &str) -> Option<Channel> {
        self.links().current.get(backend).map(|l| l.channel.clone())
    }

    /// `backend`'s connection state.
    pub fn status(&self, backend: &str) -> LinkStatus {
        let links = self.links();
        let accepted = links.accepted.get(backend).copied().unwrap_or(0);
        let listening = self.local_addr.is_some();
        match links.current.get(backend) {
            Some(l) => LinkStatus {
                connected_since: Some(l.since),
                reconnects: accepted.saturating_sub(1),
                peer: Some(l.peer.clone()),
                listening,
            },
            None => LinkStatus {
                connected_since: None,
                reconnects: accepted.saturating_sub(1),
                peer: None,
                listening,
            },
        }
    }

    /// One connection: TLS, the opening, the allowlist, then HTTP/2.
    async fn admit(
        self: &Arc<Self>,
        tcp: TcpStream,
        acceptor: &tokio_rustls::TlsAcceptor,
        rules: &Rules,
        slot: Slot,
    ) -> Result<(), String> {
        let _ = tcp.set_nodelay(true);
        // The whole opening (TLS handshake and the offer) within one bound.
        let opened = tokio::time::timeout(tunnel::OPENING_TIMEOUT, async {
            let mut tls = acceptor
                .accept(tcp)
                .await
                .map_err(|e| format!("tls handshake: {e}"))?;
            let identities = waldur_runtime::leaf_identities(tls.get_ref().1.peer_certificates())
                .map_err(|e| format!("client certificate: {e}"))?;
            let offered = tunnel::read_offer(&mut tls).await?;
            match rules.check(&identities, &offered) {
                Ok(identity) => {
                    tunnel::answer(&mut tls, Ok(()))
                        .await
                        .map_err(|e| format!("cannot answer the opening: {e}"))?;
                    Ok((tls, identity, offered))
                }
                Err(why) => {
                    let _ = tunnel::answer(&mut tls, Err(&why)).await;
                    Err(why)
                }
            }
        })
        .await
        .map_err(|_| format!("no opening within {:?}", tunnel::OPENING_TIMEOUT))??;
        drop(slot);
        let (tls, identity, backends) = opened;
        // Ids follow arrival: of two connections for one backend, the later
        // one wins even if its HTTP/2 setup finishes first.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (closed_tx, closed_rx) = oneshot::channel();
        let slot = Arc::new(Mutex::new(Some(Watched {
            inner: tls,
            _closed: closed_tx,
        })));
        // The connector hands out this one connection once: a channel whose
        // connection ends cannot dial anew (the server dials us); it fails
        // until a newer connection replaces it. `http://` because the TLS is
        // already done (tonic must not add its own); the host is only the
        // authority the server sees.
        let channel = Endpoint::from_static("http://tunnel.invalid")
            .concurrency_limit(rules.max_concurrency)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .connect_with_connector(tower::service_fn(move |_uri| {
                let taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                async move {
                    taken.map(hyper_util::rt::TokioIo::new).ok_or_else(|| {
                        std::io::Error::other("the tunnel connection closed; waiting for the backend server to dial again")
                    })
                }
            }))
            .await
            .map_err(|e| format!("http/2 over the tunnel: {e}"))?;
        let since = SystemTime::now();
        {
            let mut links = self.links();
            for name in &backends {
                *links.accepted.entry(name.clone()).or_default() += 1;
                if links.current.get(name).is_some_and(|l| l.id > id) {
                    tracing::warn!(backend = %name, peer = %identity, "an older tunnel connection finished after a newer one; dropped");
                    continue;
                }
                let replaced = links.current.insert(
                    name.clone(),
                    Link {
                        id,
                        channel: channel.clone(),
                        since,
                        peer: identity.clone(),
                    },
                );
                if let Some(old) = replaced {
                    tracing::warn!(backend = %name, peer = %identity, previous_peer = %old.peer, "a newer tunnel connection replaces the previous one (two servers serving one backend replace each other for ever: run one)");
                }
                crate::metrics::tunnel_connected(name);
            }
        }
        tracing::info!(peer = %identity, ?backends, "backend server connected through the tunnel");
        // When the connection is gone, forget it (unless already replaced).
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            let _ = closed_rx.await;
            let Some(hub) = hub.upgrade() else { return };
            let mut links = hub.links();
            for name in &backends {
                if links.current.get(name).is_some_and(|l| l.id == id) {
                    links.current.remove(name);
                    crate::metrics::tunnel_disconnected(name);
                    tracing::warn!(backend = %name, "tunnel connection closed; the backend is unavailable until its server dials again");
                }
            }
        });
        Ok(())
    }
}

/// Who may serve what.
struct Rules {
    /// Certificate identity → backend names it may serve.
    allowed: BTreeMap<String, Vec<String>>,
    /// Backends configured to come through the tunnel.
    served: Vec<String>,
    max_concurrency: usize,
}

impl Rules {
    /// The identity that may serve every offered backend, or why not.
    fn check(&self, identities: &[String], offered: &[String]) -> Result<String, String> {
        if let Some(unknown) = offered.iter().find(|b| !self.served.contains(b)) {
            return Err(format!(
                "backend {unknown} is not configured to connect through the tunnel (endpoint: tunnel)"
            ));
        }
        identities
            .iter()
            .find(|id| {
                self.allowed
                    .get(*id)
                    .is_some_and(|names| offered.iter().all(|b| names.contains(b)))
            })
            .cloned()
            .ok_or_else(|| {
                format!(
                    "certificate {} may not serve {} (tunnel.allowed)",
                    identities.first().map(String::as_str).unwrap_or("<none>"),
                    offered.join(", ")
                )
            })
    }
}

/// A connection that says when it is dropped.
struct Watched<S> {
    inner: S,
    _closed: oneshot::Sender<()>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            allowed: BTreeMap::from([
                ("cluster-a.example.org".into(), vec!["a".into()]),
                (
                    "cluster-b.example.org".into(),
                    vec!["b".into(), "b-gpu".into()],
                ),
            ]),
            served: vec!["a".into(), "b".into(), "b-gpu".into()],
            max_concurrency: 1,
        }
    }

    #[test]
    fn a_certificate_serves_only_the_backends_it_is_bound_to() {
        let r = rules();
        let a = vec!["cluster-a.example.org".to_owned()];
        assert_eq!(r.check(&a, &["a".into()]).unwrap(), "cluster-a.example.org");
        let e = r.check(&a, &["b".into()]).unwrap_err();
        assert!(e.contains("may not serve b"), "{e}");
        let b = vec!["cluster-b.example.org".to_owned()];
        assert!(r.check(&b, &["b".into(), "b-gpu".into()]).is_ok());
        assert!(r.check(&b, &["b".into(), "a".into()]).is_err());
        let e = r.check(&b, &["c".into()]).unwrap_err();
        assert!(e.contains("not configured"), "{e}");
    }
}
