//! The coordinator's Prometheus metrics, in one place: each function below
//! is the only way to bump its series, so names and label sets stay bounded
//! (offerings, backends and services come from the config; endpoints are
//! path templates; outcomes and codes are fixed sets).
//!
//! Served on `/metrics` of the admin port ([`crate::runtime::admin`]) in the
//! OpenMetrics text format.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric name the coordinator exports (the dashboard and
/// `deploy/check-deploy.sh` are checked against it).
pub const NAMES: &[&str] = &[
    "waldur_coordinator_orders_total",
    "waldur_coordinator_order_latency_seconds",
    "waldur_coordinator_waldur_requests_total",
    "waldur_coordinator_backend_rpcs_total",
    "waldur_coordinator_backend_rpc_duration_seconds",
    "waldur_coordinator_usage_report_age_seconds",
    "waldur_coordinator_membership_changes_total",
    "waldur_coordinator_events_received_total",
    "waldur_coordinator_events_failed_total",
    "waldur_coordinator_hca_requests_total",
    "waldur_coordinator_breaker_trips_total",
    "waldur_coordinator_breaker_tripped",
    "waldur_coordinator_build_info",
    "waldur_coordinator_tunnel_connected",
    "waldur_coordinator_tunnel_connections_total",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrderLabels {
    offering: String,
    r#type: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    offering: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WaldurLabels {
    endpoint: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    backend: String,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLatencyLabels {
    backend: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OfferingLabel {
    offering: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    offering: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    offering: String,
    object_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HcaLabels {
    service: String,
    message_type: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

fn latency_buckets() -> Histogram {
    // 10 ms .. ~3 h: orders on slow backends take hours.
    Histogram::new(exponential_buckets(0.01, 2.5, 16))
}

fn rpc_buckets() -> Histogram {
    // 0.5 ms .. ~2 min.
    Histogram::new(exponential_buckets(0.0005, 2.5, 14))
}

struct Metrics {
    registry: Registry,
    orders: Family<OrderLabels, Counter>,
    order_latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    waldur: Family<WaldurLabels, Counter>,
    rpcs: Family<RpcLabels, Counter>,
    rpc_latency: Family<RpcLatencyLabels, Histogram, fn() -> Histogram>,
    usage_age: Family<OfferingLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    membership: Family<ChangeLabels, Counter>,
    events: Family<EventLabels, Counter>,
    events_failed: Family<EventLabels, Counter>,
    hca: Family<HcaLabels, Counter>,
    breaker_trips: Family<ChangeLabels, Counter>,
    breaker_tripped: Family<OfferingLabel, Gauge>,
    tunnel_up: Family<BackendLabel, Gauge>,
    tunnel_connections: Family<BackendLabel, Counter>,
    last_report: Mutex<BTreeMap<String, SystemTime>>,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut registry = Registry::with_prefix("waldur_coordinator");
        let orders = Family::default();
        registry.register(
            "orders",
            "Order handlings by type and outcome (done, erred, rejected, pending, deferred, in_progress); an order waiting on the provider or a slow backend counts once per cycle",
            orders.clone(),
        );
        let order_latency = Family::new_with_constructor(latency_buckets as fn() -> Histogram);
        registry.register(
            "order_latency_seconds",
            "Time from an order's creation in Waldur to done",
            order_latency.clone(),
        );
        let waldur = Family::default();
        registry.register(
            "waldur_requests",
            "Waldur API requests by endpoint template, method and HTTP status (or error)",
            waldur.clone(),
        );
        let rpcs = Family::default();
        registry.register(
            "backend_rpcs",
            "Backend RPCs by backend, method and gRPC code",
            rpcs.clone(),
        );
        let rpc_latency = Family::new_with_constructor(rpc_buckets as fn() -> Histogram);
        registry.register(
            "backend_rpc_duration_seconds",
            "Backend RPC latency, retries included",
            rpc_latency.clone(),
        );
        let usage_age = Family::default();
        registry.register(
            "usage_report_age_seconds",
            "Seconds since the offering's last successful usage report",
            usage_age.clone(),
        );
        let membership = Family::default();
        registry.register(
            "membership_changes",
            "Membership drift corrected on backends (added, removed, access)",
            membership.clone(),
        );
        let events = Family::default();
        registry.register(
            "events_received",
            "Waldur events received over STOMP",
            events.clone(),
        );
        let events_failed = Family::default();
        registry.register(
            "events_failed",
            "Waldur events whose handler failed or that were malformed",
            events_failed.clone(),
        );
        let hca = Family::default();
        registry.register(
            "hca_requests",
            "Helmholtz Cloud request handlings by message type and outcome (a postponed request counts as retry each time)",
            hca.clone(),
        );
        let breaker_trips = Family::default();
        registry.register(
            "breaker_trips",
            "Cycles whose destructive changes the blast-radius breaker withheld, by the kind that exceeded its limit (members_removed, access_reduced, user_limits_lowered, resources_erred)",
            breaker_trips.clone(),
        );
        let breaker_tripped = Family::default();
        registry.register(
            "breaker_tripped",
            "1 while the offering's last membership cycle had its destructive changes withheld",
            breaker_tripped.clone(),
        );
        let tunnel_up = Family::default();
        registry.register(
            "tunnel_connected",
            "1 while the backend's server is connected through the tunnel (dial-out backends only)",
            tunnel_up.clone(),
        );
        let tunnel_connections = Family::default();
        registry.register(
            "tunnel_connections",
            "Tunnel connections accepted per backend (reconnects are this minus one)",
            tunnel_connections.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("build_info", "Version of this coordinator", build);
        Metrics {
            registry,
            orders,
            order_latency,
            waldur,
            rpcs,
            rpc_latency,
            usage_age,
            membership,
            events,
            events_failed,
            hca,
            breaker_trips,
            breaker_tripped,
            tunnel_up,
            tunnel_connections,
            last_report: Mutex::new(BTreeMap::new()),
        }
    })
}

/// A backend's server connected through the tunnel.
pub fn tunnel_connected(backend: &str) {
    let m = metrics();
    let label = BackendLabel {
        backend: backend.into(),
    };
    m.tunnel_up.get_or_create(&label).set(1);
    m.tunnel_connections.get_or_create(&label).inc();
}

/// A backend's tunnel connection closed.
pub fn tunnel_disconnected(backend: &str) {
    metrics()
        .tunnel_up
        .get_or_create(&BackendLabel {
            backend: backend.into(),
        })
        .set(0);
}

/// One order finished a step; `latency` from its creation when done.
pub fn order(offering: &str, order_type: &str, outcome: &str, latency: Option<Duration>) {
    let m = metrics();
    m.orders
        .get_or_create(&OrderLabels {
            offering: offering.into(),
            r#type: order_type.into(),
            outcome: outcome.into(),
        })
        .inc();
    if let Some(l) = latency {
        m.order_latency
            .get_or_create(&LatencyLabels {
                offering: offering.into(),
                r#type: order_type.into(),
            })
            .observe(l.as_secs_f64());
    }
}

/// One Waldur request; `status` is the HTTP status or `error`.
pub fn waldur_request(path: &str, method: &str, status: &str) {
    metrics()
        .waldur
        .get_or_create(&WaldurLabels {
            endpoint: endpoint_template(path),
            method: method.into(),
            status: status.into(),
        })
        .inc();
}

/// One backend RPC with its final code.
pub fn backend_rpc(backend: &str, method: &str, code: tonic::Code, took: Duration) {
    let m = metrics();
    m.rpcs
        .get_or_create(&RpcLabels {
            backend: backend.into(),
            method: method.into(),
            code: format!("{code:?}"),
        })
        .inc();
    m.rpc_latency
        .get_or_create(&RpcLatencyLabels {
            backend: backend.into(),
            method: method.into(),
        })
        .observe(took.as_secs_f64());
}

/// A usage report of the offering succeeded now.
pub fn usage_reported(offering: &str) {
    if let Ok(mut m) = metrics().last_report.lock() {
        m.insert(offering.into(), SystemTime::now());
    }
}

/// Membership changes made on a backend in one cycle.
pub fn membership_changes(offering: &str, added: usize, removed: usize, access: usize) {
    let m = metrics();
    for (kind, n) in [("added", added), ("removed", removed), ("access", access)] {
        let c = m.membership.get_or_create(&ChangeLabels {
            offering: offering.into(),
            kind: kind.into(),
        });
        if n > 0 {
            c.inc_by(n as u64);
        }
    }
}

/// The breaker's verdict on one membership cycle: `tripped` names the kind
/// that exceeded its limit.
pub fn breaker(offering: &str, tripped: Option<&str>) {
    let m = metrics();
    m.breaker_tripped
        .get_or_create(&OfferingLabel {
            offering: offering.into(),
        })
        .set(i64::from(tripped.is_some()));
    if let Some(kind) = tripped {
        m.breaker_trips
            .get_or_create(&ChangeLabels {
                offering: offering.into(),
                kind: kind.into(),
            })
            .inc();
    }
}

/// One Waldur event received; `failed` when its handler failed or it was
/// malformed.
pub fn event(offering: &str, object_type: &str, failed: bool) {
    let m = metrics();
    let labels = EventLabels {
        offering: offering.into(),
        object_type: object_type.into(),
    };
    m.events.get_or_create(&labels).inc();
    if failed {
        m.events_failed.get_or_create(&labels).inc();
    }
}

/// One Helmholtz Cloud request handled. An unknown message type is counted
/// as `other` so senders cannot grow the label set.
pub fn hca_request(service: &str, message_type: Option<&str>, outcome: &str) {
    let t = match message_type {
        Some(t)
            if t.len() <= 40
                && t.chars().all(|c| c.is_ascii_alphanumeric())
                && outcome != "UnknownMessageType" =>
        {
            t
        }
        _ => "other",
    };
    metrics()
        .hca
        .get_or_create(&HcaLabels {
            service: service.into(),
            message_type: t.into(),
            outcome: outcome.into(),
        })
        .inc();
}

/// The OpenMetrics text of every series.
pub fn encode() -> String {
    let m = metrics();
    if let Ok(last) = m.last_report.lock() {
        let now = SystemTime::now();
        for (offering, at) in last.iter() {
            let age = now.duration_since(*at).unwrap_or_default().as_secs_f64();
            m.usage_age
                .get_or_create(&OfferingLabel {
                    offering: offering.clone(),
                })
                .set(age);
        }
    }
    waldur_runtime::exposition::encode(&m.registry)
}

pub use waldur_client::endpoint_template;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exported_name_is_listed() {
        order("o", "Create", "done", Some(Duration::from_millis(5)));
        waldur_request("/api/x/", "GET", "200");
        backend_rpc("b", "Probe", tonic::Code::Ok, Duration::from_millis(1));
        usage_reported("o");
        membership_changes("o", 1, 0, 0);
        event("o", "order", true);
        hca_request("s", Some("PingV1"), "pong");
        breaker("o", Some("members_removed"));
        tunnel_connected("b");
        let text = encode();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap_or_default();
            let counter = format!("{name}_total");
            assert!(
                NAMES.contains(&name) || NAMES.contains(&counter.as_str()),
                "{name} is exported but not in NAMES"
            );
        }
        for name in NAMES {
            let base = name.trim_end_matches("_total");
            assert!(text.contains(base), "{name} is listed but not exported");
        }
    }

    #[test]
    fn unknown_hca_types_do_not_grow_the_label_set() {
        hca_request("s", Some("<script>"), "UnknownMessageType");
        assert!(encode().contains("message_type=\"other\""));
    }
}
