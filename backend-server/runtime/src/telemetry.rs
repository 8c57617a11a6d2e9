//! Logging and tracing set-up shared by the binaries, and the W3C trace
//! context helpers both sides of the contract use.
//!
//! * Logs: `RUST_LOG` filters (default `info`), human or JSON lines on stderr.
//! * Traces: exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, off otherwise; the
//!   service name comes from `OTEL_SERVICE_NAME` (default: the binary's),
//!   the sampler from `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` as
//!   the OpenTelemetry SDK reads them.
//! * Propagation: the coordinator injects `traceparent` into gRPC metadata
//!   and HTTP headers ([`inject_grpc`], [`inject_http`]); the backend server
//!   makes each RPC span a child of the caller's ([`set_remote_parent`]).

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes and stops trace export when dropped: keep it alive in `main`.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports every finished span now (tests, before exit).
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }

    /// True when spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Crates that trace protocol frames (the STOMP passcode, the AMQP login)
/// or their own exports: never more than info from them, whatever
/// `RUST_LOG` says, for every output.
const NOISY: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "lapin",
    "amq_protocol",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "h2",
    "hyper",
    "tower",
];

fn capped(meta: &tracing::Metadata<'_>) -> bool {
    allowed(*meta.level(), meta.target())
}

fn allowed(level: tracing::Level, target: &str) -> bool {
    level <= tracing::Level::INFO || !NOISY.iter().any(|t| target.starts_with(t))
}

/// The log filter: `RUST_LOG`, default `info`.
fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// What is exported as spans: this project's info spans, whatever the log
/// level (`RUST_LOG=warn` must not switch tracing off); others at warn.
fn trace_filter() -> tracing_subscriber::filter::Targets {
    use tracing::Level;
    let mut t = tracing_subscriber::filter::Targets::new().with_default(Level::WARN);
    for ours in [
        "waldur_coordinator",
        "waldur_client",
        "waldur_backend_sdk",
        "waldur_backend_slurm",
        "waldur_backend_moab",
        "waldur_backend_mup",
        "waldur_backend_example",
    ] {
        t = t.with_target(ours, Level::INFO);
    }
    t
}

/// Installs logging only (no trace export).
pub fn init_logging(json: bool) {
    let _ = init(json, "", &|_| None);
}

/// Installs the global subscriber: logs, plus OTLP trace export when the
/// environment (read through `var`) names an endpoint. `service` is the
/// default `service.name`. An exporter that cannot be built is reported and
/// left off: tracing is never a reason not to start.
pub fn init(json: bool, service: &str, var: &dyn Fn(&str) -> Option<String>) -> TelemetryGuard {
    use tracing_subscriber::Layer;
    let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .filter(|e| !e.trim().is_empty());
    let mut problem = None;
    let provider = match endpoint {
        Some(e) if !service.is_empty() => {
            let name = var("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_owned());
            match provider(&e, &name) {
                Ok(p) => Some(p),
                Err(err) => {
                    problem = Some(format!(
                        "trace export to {} is off: {err}",
                        without_userinfo(&e)
                    ));
                    None
                }
            }
        }
        _ => None,
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("waldur"))
            .with_filter(trace_filter())
    });
    // Colour only on a terminal: in a file, a pipe or the journal the
    // escape codes are noise.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = if json {
        fmt.json().with_filter(log_filter()).boxed()
    } else {
        fmt.with_filter(log_filter()).boxed()
    };
    let installed = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::filter_fn(capped))
        .with(fmt)
        .with(otel)
        .try_init();
    if installed.is_err() {
        // A subscriber is already installed (tests): keep it.
        return TelemetryGuard { provider };
    }
    if let Some(p) = problem {
        tracing::warn!("{p}");
    }
    TelemetryGuard { provider }
}

/// An endpoint without `user:password@` in its authority.
fn without_userinfo(endpoint: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}{path}")
}

/// Runs a binary's main future on a multi-threaded runtime with logging and
/// (for `service` non-empty) trace export set up inside it: the OTLP
/// exporter's channel lives on the runtime, and the final flush needs it.
pub fn run_main<F>(json: bool, service: &str, main: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = std::process::ExitCode>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let telemetry = init(json, service, &|k| std::env::var(k).ok());
        let code = main.await;
        tokio::task::block_in_place(|| drop(telemetry));
        code
    })
}

/// A tracer provider exporting in batches to `endpoint` over OTLP/gRPC.
pub fn provider(
    endpoint: &str,
    service: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

struct GrpcInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for GrpcInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct GrpcExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for GrpcExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

struct HttpInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HttpInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Writes the current span's context (`traceparent`) into gRPC metadata.
pub fn inject_grpc(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut GrpcInjector(metadata));
}

/// Writes the current span's context (`traceparent`) into HTTP headers.
pub fn inject_http(headers: &mut http::HeaderMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut HttpInjector(headers));
}

/// Makes `span` a child of the caller's span named in the metadata, when
/// there is one.
pub fn set_remote_parent(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) {
    if metadata.get("traceparent").is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&GrpcExtractor(metadata));
    let _ = span.set_parent(cx);
}

/// The trace id of the current span, when it is being traced (hex, 32
/// digits); written into resource metadata so an operator can jump from
/// Waldur to the trace.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    // An unsampled trace is never exported: naming it would send an
    // operator looking for nothing.
    (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_shown_without_credentials() {
        assert_eq!(
            without_userinfo("https://user:secret@otel.example.org:4317/v1"),
            "https://otel.example.org:4317/v1"
        );
        assert_eq!(
            without_userinfo("http://127.0.0.1:4317"),
            "http://127.0.0.1:4317"
        );
        assert_eq!(without_userinfo("otel:4317"), "otel:4317");
    }

    #[test]
    fn noisy_crates_are_capped_at_info() {
        use tracing::Level;
        assert!(!allowed(Level::TRACE, "lapin::io_loop"));
        assert!(!allowed(Level::DEBUG, "tungstenite::protocol"));
        assert!(allowed(Level::INFO, "lapin::io_loop"));
        assert!(allowed(Level::TRACE, "waldur_coordinator::hca"));
    }
}
