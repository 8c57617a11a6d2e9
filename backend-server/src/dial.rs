//! Dial-out: the backend server keeps one mutual-TLS connection to the
//! coordinator's tunnel listener open and serves gRPC over it, so a site
//! opens no inbound port. The connection is made here (TCP, TLS as the
//! client with this server's certificate, the tunnel's opening lines) and
//! handed to the same gRPC server as accepted connections; the coordinator's
//! certificate goes through the same `allowed_clients` check.
//!
//! When a connection ends, or cannot be made, the dialer tries again for
//! ever with capped exponential backoff and jitter; a connection that lived
//! a minute resets the backoff.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use waldur_runtime::{RetryPolicy, tunnel};

use crate::accept::{PeerInfo, TlsConn};
use crate::config::ConnectConfig;

/// A connection this long-lived was healthy: the next failure starts the
/// backoff from the beginning.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Dials until `tx` is closed (the server shut down). `allowed` are the
/// client identities of `tls.allowed_clients`: the coordinator's
/// certificate must carry one, checked before anything is offered (every
/// call is checked against it again, as on accepted connections).
pub(crate) async fn dial_forever(
    config: ConnectConfig,
    tls: Arc<rustls::ClientConfig>,
    allowed: Arc<HashSet<String>>,
    tx: mpsc::Sender<std::io::Result<TlsConn>>,
) {
    let policy = RetryPolicy {
        max_attempts: u32::MAX,
        initial_backoff: Duration::from_millis(250),
        max_backoff: Duration::from_secs(config.max_backoff_seconds.max(1)),
    };
    let connector = tokio_rustls::TlsConnector::from(tls);
    let mut failures: u32 = 0;
    let mut connections: u64 = 0;
    loop {
        let attempt = tokio::select! {
            () = tx.closed() => return,
            r = tokio::time::timeout(tunnel::OPENING_TIMEOUT, connect(&config, &connector, &allowed)) => r,
        };
        match attempt {
            Ok(Ok((conn, closed))) => {
                connections += 1;
                crate::metrics::tunnel_connected();
                tracing::info!(coordinator = %config.coordinator, backends = ?config.backends, reconnects = connections - 1, "tunnel to the coordinator open");
                let since = Instant::now();
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = tx.closed() => return,
                    _ = closed => {}
                }
                crate::metrics::tunnel_disconnected();
                tracing::warn!(coordinator = %config.coordinator, lived_seconds = since.elapsed().as_secs(), "tunnel to the coordinator closed; reconnecting");
                if since.elapsed() >= HEALTHY_AFTER {
                    failures = 0;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(coordinator = %config.coordinator, error = %e, "cannot open the tunnel to the coordinator");
            }
            Err(_) => {
                tracing::warn!(coordinator = %config.coordinator, timeout = ?tunnel::OPENING_TIMEOUT, "the tunnel's opening timed out");
            }
        }
        failures = failures.saturating_add(1);
        let wait = policy.backoff(failures);
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One connection: TCP, TLS, the opening. Returns the connection for the
/// gRPC server and a receiver that completes when it is dropped.
async fn connect(
    config: &ConnectConfig,
    connector: &tokio_rustls::TlsConnector,
    allowed: &HashSet<String>,
) -> Result<(TlsConn, oneshot::Receiver<()>), String> {
    let (host, port) = config.address()?;
    let name = ServerName::try_from(config.server_name())
        .map_err(|e| format!("server name {:?}: {e}", config.server_name()))?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let remote_addr = tcp
        .peer_addr()
        .map_err(|e| format!("connection to {host}:{port}: {e}"))?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls handshake with {host}:{port}: {e}"))?;
    let certs: Vec<_> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    // A coordinator whose identity is not allowed would get
    // PERMISSION_DENIED on every call: say so now, not "connected".
    let identities = waldur_runtime::leaf_identities(Some(&certs))
        .map_err(|e| format!("the coordinator's certificate: {e}"))?;
    if !identities.iter().any(|id| allowed.contains(id)) {
        return Err(format!(
            "the coordinator's identity {} is not in tls.allowed_clients",
            identities.first().map(String::as_str).unwrap_or("<none>")
        ));
    }
    tunnel::offer(&mut tls, &config.backends).await?;
    let (closed_tx, closed_rx) = oneshot::channel();
    Ok((
        TlsConn {
            inner: tokio_rustls::TlsStream::Client(tls),
            peer: PeerInfo {
                remote_addr,
                certs: Arc::new(certs),
            },
            _closed: Some(closed_tx),
        },
        closed_rx,
    ))
}

/// For `check`: reaches the coordinator's tunnel listener and completes
/// the TLS handshake with this server's certificate, checks the
/// coordinator's identity, then hangs up before the opening (so a running
/// server's connection is not replaced). Returns what was seen.
pub async fn reach_coordinator(config: &crate::config::ServerConfig) -> Result<String, String> {
    let connect = config
        .connect
        .as_ref()
        .ok_or_else(|| "no connect: section".to_owned())?;
    let material = config.tls.files().load().map_err(|e| e.to_string())?;
    let mut tls = (*material.rustls_client_config().map_err(|e| e.to_string())?).clone();
    tls.alpn_protocols = vec![tunnel::ALPN.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let (host, port) = connect.address()?;
    let name = ServerName::try_from(connect.server_name())
        .map_err(|e| format!("server name {:?}: {e}", connect.server_name()))?;
    let attempt = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls handshake with {host}:{port}: {e}"))?;
        let identities = waldur_runtime::leaf_identities(tls.get_ref().1.peer_certificates())
            .map_err(|e| format!("the coordinator's certificate: {e}"))?;
        let allowed = identities
            .iter()
            .find(|id| config.tls.allowed_clients.contains(id))
            .ok_or_else(|| {
                format!(
                    "the coordinator's identity {} is not in tls.allowed_clients",
                    identities.first().map(String::as_str).unwrap_or("<none>")
                )
            })?;
        Ok::<_, String>(format!(
            "tunnel: reached {host}:{port}, mutual TLS ok, the coordinator is {allowed}"
        ))
    };
    tokio::time::timeout(tunnel::OPENING_TIMEOUT, attempt)
        .await
        .map_err(|_| {
            format!(
                "no handshake with {host}:{port} within {:?}",
                tunnel::OPENING_TIMEOUT
            )
        })?
}
