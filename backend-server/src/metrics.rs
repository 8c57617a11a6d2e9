//! Backend-server Prometheus metrics: RPCs by method and code, and the
//! commands a backend runs (SLURM's `sacctmgr`, `sacct`, ...) by binary and
//! outcome. Label sets are bounded: methods and codes are fixed, binaries
//! are the backend's own few. Served on `/metrics` of the metrics port
//! (`metrics.listen` in the server config).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric name a backend server exports.
pub const NAMES: &[&str] = &[
    "waldur_backend_rpcs_total",
    "waldur_backend_rpc_duration_seconds",
    "waldur_backend_commands_total",
    "waldur_backend_command_duration_seconds",
    "waldur_backend_tls_handshakes_refused_total",
    "waldur_backend_tunnel_connected",
    "waldur_backend_tunnel_connections_total",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    binary: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BinaryLabel {
    binary: String,
}

fn buckets() -> Histogram {
    // 0.5 ms .. ~2 min: sacctmgr on a busy slurmdbd takes seconds.
    Histogram::new(exponential_buckets(0.0005, 2.5, 14))
}

struct Metrics {
    registry: Registry,
    rpcs: Family<RpcLabels, Counter>,
    rpc_latency: Family<MethodLabel, Histogram, fn() -> Histogram>,
    commands: Family<CommandLabels, Counter>,
    command_latency: Family<BinaryLabel, Histogram, fn() -> Histogram>,
    refused: Family<ReasonLabel, Counter>,
    tunnel_up: Gauge,
    tunnel_connections: Counter,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut registry = Registry::with_prefix("waldur_backend");
        let rpcs = Family::default();
        registry.register("rpcs", "RPCs served, by method and gRPC code", rpcs.clone());
        let rpc_latency = Family::new_with_constructor(buckets as fn() -> Histogram);
        registry.register(
            "rpc_duration_seconds",
            "Time to serve an RPC",
            rpc_latency.clone(),
        );
        let commands = Family::default();
        registry.register(
            "commands",
            "Commands run by backends, by binary and outcome (ok, failed: non-zero exit, error: could not run)",
            commands.clone(),
        );
        let command_latency = Family::new_with_constructor(buckets as fn() -> Histogram);
        registry.register(
            "command_duration_seconds",
            "Run time of backend commands",
            command_latency.clone(),
        );
        let refused = Family::default();
        registry.register(
            "tls_handshakes_refused",
            "Connections refused during the mutual-TLS handshake, by reason (no_certificate, unknown_ca, expired, bad_certificate, protocol, timeout, busy, other)",
            refused.clone(),
        );
        let tunnel_up = Gauge::default();
        registry.register(
            "tunnel_connected",
            "1 while the dial-out tunnel to the coordinator is open",
            tunnel_up.clone(),
        );
        let tunnel_connections = Counter::default();
        registry.register(
            "tunnel_connections",
            "Dial-out tunnels opened to the coordinator (reconnects are this minus one)",
            tunnel_connections.clone(),
        );
        Metrics {
            registry,
            rpcs,
            rpc_latency,
            commands,
            command_latency,
            refused,
            tunnel_up,
            tunnel_connections,
        }
    })
}

/// The dial-out tunnel opened.
pub fn tunnel_connected() {
    let m = metrics();
    m.tunnel_up.set(1);
    m.tunnel_connections.inc();
}

/// The dial-out tunnel closed.
pub fn tunnel_disconnected() {
    metrics().tunnel_up.set(0);
}

/// One RPC served.
pub fn rpc(method: &str, code: tonic::Code, took: Duration) {
    let m = metrics();
    m.rpcs
        .get_or_create(&RpcLabels {
            method: method.into(),
            code: format!("{code:?}"),
        })
        .inc();
    m.rpc_latency
        .get_or_create(&MethodLabel {
            method: method.into(),
        })
        .observe(took.as_secs_f64());
}

/// One command run: `outcome` is `ok`, `failed` (non-zero exit) or `error`
/// (could not be started).
pub fn command(binary: &str, outcome: &str, took: Duration) {
    let m = metrics();
    m.commands
        .get_or_create(&CommandLabels {
            binary: binary.into(),
            outcome: outcome.into(),
        })
        .inc();
    m.command_latency
        .get_or_create(&BinaryLabel {
            binary: binary.into(),
        })
        .observe(took.as_secs_f64());
}

/// One connection refused during the TLS handshake; `reason` is one of a
/// fixed few.
pub fn tls_refused(reason: &'static str) {
    metrics()
        .refused
        .get_or_create(&ReasonLabel {
            reason: reason.into(),
        })
        .inc();
}

/// The OpenMetrics text of every series.
pub fn encode() -> String {
    waldur_runtime::exposition::encode(&metrics().registry)
}

pub use waldur_runtime::exposition::CONTENT_TYPE;

/// Serves `/metrics` (and `/healthz`) on `listener` until the task is
/// dropped.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async {
                ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], encode())
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    axum::serve(listener, app).await
}

/// Binds the metrics port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpcs_and_commands_appear_under_their_listed_names() {
        rpc("CreateResource", tonic::Code::Ok, Duration::from_millis(3));
        command("sacctmgr", "ok", Duration::from_millis(30));
        tls_refused("unknown_ca");
        let text = encode();
        assert!(
            text.contains(r#"waldur_backend_rpcs_total{method="CreateResource",code="Ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"waldur_backend_commands_total{binary="sacctmgr",outcome="ok"} 1"#),
            "{text}"
        );
        for name in NAMES {
            assert!(text.contains(name.trim_end_matches("_total")), "{name}");
        }
    }
}
