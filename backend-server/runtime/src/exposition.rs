//! Prometheus/OpenMetrics exposition shared by both binaries' `/metrics`.

use prometheus_client::registry::Registry;

/// The OpenMetrics content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The OpenMetrics text of a registry; empty if encoding fails, which
/// writing to a `String` cannot.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}
