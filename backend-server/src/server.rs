//! Serving: mutual TLS, the client allowlist, health, reflection, shutdown.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::service::InterceptorLayer;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Status};
use tonic_health::ServingStatus;
use waldur_backend_proto::v1::backend_service_server::BackendServiceServer;

use crate::config::ServerConfig;
use crate::{BackendError, Registry};

/// The gRPC service name the health service reports for all instances.
pub const HEALTH_SERVICE_NAME: &str = "waldur.backend.v1.BackendService";

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// TLS material could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] waldur_runtime::TlsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(String),
}

/// A running server.
#[derive(Debug)]
pub struct Bound {
    /// The address actually bound (useful with port 0); `None` when the
    /// server only dials out.
    pub local_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Bound {
    /// Stops accepting connections, lets in-flight RPCs finish and waits.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Reflection(format!("server task failed: {e}"))),
        }
    }
}

/// Serves until `shutdown` completes, then drains and returns.
pub async fn serve(
    config: &ServerConfig,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let bound = spawn(config, registry).await?;
    if let Some(addr) = bound.local_addr {
        tracing::info!(addr = %addr, "backend server listening");
    }
    if let Some(c) = &config.connect {
        tracing::info!(coordinator = %c.coordinator, backends = ?c.backends, "backend server dialing out to the coordinator's tunnel");
    }
    shutdown.await;
    tracing::info!("shutting down: draining in-flight requests");
    bound.shutdown().await
}

/// Binds and starts serving in the background.
pub async fn spawn(config: &ServerConfig, registry: Registry) -> Result<Bound, ServeError> {
    let material = config.tls.files().load()?;
    let allowed: Arc<HashSet<String>> =
        Arc::new(config.tls.allowed_clients.iter().cloned().collect());
    // Connections come from the listener (the coordinator dials in), from
    // the dialer (this server dials the coordinator's tunnel), or both.
    let mut sources: Vec<Incoming> = Vec::new();
    let mut local_addr = None;
    if let Some(addr) = config.listen {
        let bind_error = |source| ServeError::Bind { addr, source };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_error)?;
        local_addr = Some(listener.local_addr().map_err(bind_error)?);
        let tls = material.rustls_server_config()?;
        sources.push(Box::pin(crate::accept::incoming(listener, tls)));
    }
    if let Some(connect) = config.connect.clone() {
        let mut tls = (*material.rustls_client_config()?).clone();
        tls.alpn_protocols = vec![waldur_runtime::tunnel::ALPN.to_vec()];
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(crate::dial::dial_forever(
            connect,
            Arc::new(tls),
            allowed.clone(),
            tx,
        ));
        sources.push(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)));
    }
    let incoming = futures::stream::select_all(sources);

    let (reporter, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(waldur_backend_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (health_stop_tx, health_stop_rx) = oneshot::channel::<()>();
    let health_task = tokio::spawn(health_loop(
        registry.clone(),
        reporter,
        config.health.interval(),
        health_stop_rx,
    ));

    // Outermost first: the allowlist, then decoding. HTTP/2 pings find a
    // dead peer (a dial-out tunnel behind a NAT that forgot it) in under a
    // minute.
    let router = Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .layer(InterceptorLayer::new(move |req: Request<()>| {
            authorize(&allowed, req)
        }))
        .layer(DecodeErrorsLayer)
        .add_service(BackendServiceServer::new(registry))
        .add_service(health_service)
        .add_service(reflection);
    let task = tokio::spawn(async move {
        let result = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            })
            .await;
        let _ = health_stop_tx.send(());
        let _ = health_task.await;
        result.map_err(ServeError::from)
    });
    Ok(Bound {
        local_addr,
        shutdown: Some(stop_tx),
        task,
    })
}

/// A source of connections to serve.
type Incoming =
    std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<crate::accept::TlsConn>> + Send>>;

/// Checks the verified client certificate's SAN identities against the
/// allowlist. The chain was already verified by rustls during the handshake.
fn authorize(allowed: &HashSet<String>, req: Request<()>) -> Result<Request<()>, Status> {
    let Some(peer) = req.extensions().get::<crate::accept::PeerInfo>() else {
        return Err(Status::unauthenticated("a client certificate is required"));
    };
    let certs = &peer.certs;
    let Some(leaf) = certs.first() else {
        return Err(Status::unauthenticated("a client certificate is required"));
    };
    let identities = waldur_runtime::peer_identities(leaf)
        .map_err(|_| Status::unauthenticated("client certificate cannot be parsed"))?;
    if identities.iter().any(|id| allowed.contains(id)) {
        return Ok(req);
    }
    tracing::warn!(?identities, "client identity not allowed");
    let shown = identities.first().map(String::as_str).unwrap_or("<none>");
    Err(BackendError::new(
        tonic::Code::PermissionDenied,
        waldur_backend_proto::reason::IDENTITY_NOT_ALLOWED,
        format!("client identity {shown} is not in tls.allowed_clients"),
    )
    .to_status())
}

/// Keeps the health service in line with the instances' probes: the empty
/// service name and [`HEALTH_SERVICE_NAME`] are SERVING when every instance
/// is ready; each instance name has its own status.
async fn health_loop(
    registry: Registry,
    reporter: tonic_health::server::HealthReporter,
    interval: std::time::Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let mut last_all: Option<bool> = None;
    loop {
        let probes = registry.probe_all().await;
        let all_ready = probes.iter().all(|(_, p)| p.ready);
        for (name, probe) in &probes {
            let status = if probe.ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status(name, status).await;
        }
        let status = if all_ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        reporter
            .set_service_status(HEALTH_SERVICE_NAME, status)
            .await;
        if last_all != Some(all_ready) {
            let not_ready: Vec<String> = probes
                .iter()
                .filter(|(_, p)| !p.ready)
                .map(|(n, p)| format!("{n}: {}", p.message))
                .collect();
            tracing::info!(ready = all_ready, ?not_ready, "health changed");
            last_all = Some(all_ready);
        }
        tokio::select! {
            _ = &mut stop => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    for name in registry.names() {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
}

/// Serves `registry` in-process over an in-memory duplex transport and
/// returns a channel to it: the real gRPC adapter (encoding, validation,
/// error mapping) without sockets, TLS or the allowlist. For tests and
/// embedding only.
pub async fn serve_duplex(registry: Registry) -> Result<Channel, ServeError> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<tokio::io::DuplexStream>();
    let incoming =
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    tokio::spawn(
        Server::builder()
            .add_service(BackendServiceServer::new(registry))
            .serve_with_incoming(incoming),
    );
    let channel = Endpoint::from_static("http://in-process.invalid")
        .connect_with_connector(tower::service_fn(move |_uri| {
            let tx = tx.clone();
            async move {
                let (client, server) = tokio::io::duplex(256 * 1024);
                tx.send(server)
                    .map_err(|_| std::io::Error::other("in-process server stopped"))?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
            }
        }))
        .await?;
    Ok(channel)
}

/// Brings two of tonic's own answers in line with SPEC: a request whose
/// bytes do not decode is `INVALID_ARGUMENT` (reason `INVALID_FIELD`, field
/// `request`; tonic says `INTERNAL`, which reads as the backend's fault),
/// and a call whose deadline passed is `DEADLINE_EXCEEDED` (tonic says
/// `CANCELLED`, which callers do not retry).
#[derive(Debug, Clone, Copy)]
struct DecodeErrorsLayer;

impl<S> tower::Layer<S> for DecodeErrorsLayer {
    type Service = DecodeErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrors { inner }
    }
}

#[derive(Debug, Clone)]
struct DecodeErrors<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for DecodeErrors<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            // A decode failure is answered before any message: a
            // trailers-only response whose status sits in the headers.
            let status = Status::from_header_map(resp.headers());
            match status {
                Some(s)
                    if s.code() == tonic::Code::Internal
                        && s.message().starts_with("failed to decode Protobuf message") =>
                {
                    let e = BackendError::invalid_field("request", s.message());
                    Ok(e.to_status().into_http())
                }
                // The call's deadline passed: tonic says CANCELLED, SPEC
                // says DEADLINE_EXCEEDED (retried by the caller).
                Some(s) if s.code() == tonic::Code::Cancelled => Ok(Status::deadline_exceeded(
                    format!("the call's deadline passed: {}", s.message()),
                )
                .into_http()),
                _ => Ok(resp),
            }
        })
    }
}
