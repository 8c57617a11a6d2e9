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

fn filter() -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // tungstenite traces frame payloads, the STOMP passcode included; the
    // exporter's own crates would trace their exports: never below info,
    // whatever RUST_LOG says.
    for quiet in [
        "tungstenite=info",
        "tokio_tungstenite=info",
        "opentelemetry=warn",
        "opentelemetry_sdk=warn",
        "opentelemetry_otlp=warn",
        "h2=info",
        "tower=info",
        "hyper=info",
        "lapin=info",
        "amq_protocol=info",
    ] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
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
                    problem = Some(format!("trace export to {e} is off: {err}"));
                    None
                }
            }
        }
        _ => None,
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("waldur")));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter()).with(otel);
    let installed = if json {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    if installed.is_err() {
        // A subscriber is already installed (tests): keep it.
        return TelemetryGuard { provider };
    }
    if let Some(p) = problem {
        tracing::warn!("{p}");
    }
    TelemetryGuard { provider }
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
pub fn provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The subscriber layer for a provider (tests that install their own
/// subscriber).
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_opentelemetry::layer().with_tracer(provider.tracer("waldur"))
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
    sc.is_valid().then(|| sc.trace_id().to_string())
}
