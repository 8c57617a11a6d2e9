//! `waldur-coordinator traces`: a small OTLP/gRPC trace receiver that
//! prints each finished trace as a waterfall in the terminal — the
//! coordinator's order span, its Waldur requests and backend calls, the
//! backend server's RPC spans and each command they ran, with offsets and
//! durations. For the demo and for a first look without Grafana; point
//! `OTEL_EXPORTER_OTLP_ENDPOINT` of both programs at it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// One received span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// `service.name` of the process that sent it.
    pub service: String,
    /// Span name.
    pub name: String,
    /// Trace id, hex.
    pub trace: String,
    /// Span id, hex.
    pub id: String,
    /// Parent span id, hex; empty for a root.
    pub parent: String,
    /// Start, ns since the epoch.
    pub start_ns: u64,
    /// End, ns since the epoch.
    pub end_ns: u64,
    /// Attributes as text.
    pub attributes: BTreeMap<String, String>,
}

/// Spans held at once; more are dropped until traces are printed.
const MAX_SPANS: usize = 100_000;

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    /// When each trace last got a span.
    touched: BTreeMap<String, Instant>,
}

/// Holds what exporters send; a `TraceService` (tests host it too).
#[derive(Clone, Default)]
pub struct Receiver(Arc<Mutex<Received>>);

impl Receiver {
    /// Every span held now.
    pub fn spans(&self) -> Vec<Span> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spans
            .clone()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .map(|a| text(&a.value))
                .unwrap_or_default();
            for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                let span = Span {
                    service: service.clone(),
                    name: s.name.clone(),
                    trace: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    // Some SDKs send a root's parent as zeros.
                    parent: if s.parent_span_id.iter().all(|b| *b == 0) {
                        String::new()
                    } else {
                        hex(&s.parent_span_id)
                    },
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano.max(s.start_time_unix_nano),
                    attributes: s
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text(&a.value)))
                        .collect(),
                };
                // Bounded: a flood of spans (or a trace that never goes
                // quiet) cannot grow the receiver without end.
                if r.spans.len() >= MAX_SPANS {
                    continue;
                }
                r.touched.insert(span.trace.clone(), now);
                r.spans.push(span);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Receives on `listen`; prints every trace whose root span is named
/// `root` (any root when `None`) once no span of it arrived for `quiet`.
/// Runs until the process is stopped.
pub async fn run(
    listen: SocketAddr,
    root: Option<String>,
    quiet: Duration,
) -> std::process::ExitCode {
    let receiver = Receiver::default();
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: listening on {listen}: {e}");
            return std::process::ExitCode::from(crate::cli::EX_USAGE);
        }
    };
    println!("receiving OTLP/gRPC traces on {listen}");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .serve_with_incoming(incoming);
    let printer = async {
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        loop {
            ticker.tick().await;
            for trace in take_quiet(&receiver, quiet) {
                let has_root = trace
                    .iter()
                    .any(|s| s.parent.is_empty() && root.as_deref().is_none_or(|r| r == s.name));
                if has_root {
                    println!("{}", waterfall(&trace, 48));
                }
            }
        }
    };
    tokio::select! {
        r = server => {
            if let Err(e) = r {
                eprintln!("error: trace receiver: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
        () = printer => {}
    }
    std::process::ExitCode::SUCCESS
}

/// Removes and returns the traces no span arrived for within `quiet`.
fn take_quiet(receiver: &Receiver, quiet: Duration) -> Vec<Vec<Span>> {
    let mut r = receiver.0.lock().unwrap_or_else(|p| p.into_inner());
    let done: Vec<String> = r
        .touched
        .iter()
        .filter(|(_, at)| at.elapsed() >= quiet)
        .map(|(t, _)| t.clone())
        .collect();
    let mut out = Vec::new();
    for t in done {
        r.touched.remove(&t);
        let (mine, rest): (Vec<Span>, Vec<Span>) = std::mem::take(&mut r.spans)
            .into_iter()
            .partition(|s| s.trace == t);
        r.spans = rest;
        out.push(mine);
    }
    out
}

/// The attributes worth a glance, per span kind.
fn label(s: &Span) -> String {
    let a = |k: &str| s.attributes.get(k).map(String::as_str).unwrap_or("");
    let detail = match s.name.as_str() {
        "waldur_request" => format!(
            "{} {} -> {}",
            a("http.method"),
            a("url.path"),
            a("http.status_code")
        ),
        "backend_rpc" | "rpc" => format!("{} {}", a("rpc.method"), a("rpc.code")),
        "command" => format!("{} exit {}", a("command.binary"), a("command.exit_code")),
        "order" => format!("{} {}", a("type"), a("outcome")),
        _ => a("outcome").to_owned(),
    };
    let line = format!("{} [{}] {}", s.name, s.service, detail.trim());
    // Names and attributes come from outside: no terminal escapes.
    line.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// One trace as text: a header, then a line per span in start order,
/// indented by depth, with its offset from the trace's start, a bar of
/// `width` columns placing it in time, and its duration.
pub fn waterfall(spans: &[Span], width: usize) -> String {
    let width = width.max(1);
    let Some(start) = spans.iter().map(|s| s.start_ns).min() else {
        return String::new();
    };
    let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(start);
    let total = end.saturating_sub(start).max(1);
    let ms = |ns: u64| ns as f64 / 1e6;
    let depth = |s: &Span| {
        let mut d = 0;
        let mut parent = s.parent.clone();
        while d < 32 {
            match spans.iter().find(|p| p.id == parent) {
                Some(p) => {
                    d += 1;
                    parent = p.parent.clone();
                }
                None => break,
            }
        }
        d
    };
    let mut ordered: Vec<&Span> = spans.iter().collect();
    ordered.sort_by_key(|s| (s.start_ns, std::cmp::Reverse(s.end_ns)));
    let mut out = format!(
        "trace {}: {} spans, {:.1} ms\n",
        spans[0].trace,
        spans.len(),
        ms(total)
    );
    for s in ordered {
        let took = s.end_ns.saturating_sub(s.start_ns);
        let from = (s.start_ns.saturating_sub(start) as f64 / total as f64 * width as f64) as usize;
        let len = ((took as f64 / total as f64) * width as f64).ceil() as usize;
        let from = from.min(width.saturating_sub(1));
        let len = len.clamp(1, width - from);
        let bar = format!(
            "{}{}{}",
            " ".repeat(from),
            "█".repeat(len),
            " ".repeat(width - from - len)
        );
        out.push_str(&format!(
            "{:>9.1} ms |{bar}| {:>9.1} ms  {}{}\n",
            ms(s.start_ns.saturating_sub(start)),
            ms(took),
            "  ".repeat(depth(s)),
            label(s)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(name: &str, id: &str, parent: &str, start_ms: u64, end_ms: u64) -> Span {
        Span {
            service: "svc".into(),
            name: name.into(),
            trace: "t1".into(),
            id: id.into(),
            parent: parent.into(),
            start_ns: start_ms * 1_000_000,
            end_ns: end_ms * 1_000_000,
            attributes: BTreeMap::from([("http.method".into(), "POST".into())]),
        }
    }

    #[test]
    fn a_waterfall_places_each_span_in_time_under_its_parent() {
        let spans = vec![
            span("command", "c", "r", 40, 80),
            span("order", "o", "", 0, 100),
            span("waldur_request", "w", "o", 0, 10),
            span("rpc", "r", "o", 20, 90),
        ];
        let text = waterfall(&spans, 10);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("trace t1: 4 spans, 100.0 ms"),
            "{text}"
        );
        // Start order; depth shows as indentation; bars sit where the span ran.
        assert!(
            lines[1].contains("|██████████|") && lines[1].contains("ms  order [svc]"),
            "{text}"
        );
        assert!(
            lines[2].contains("|█         |")
                && lines[2].contains("ms    waldur_request [svc] POST"),
            "{text}"
        );
        assert!(
            lines[3].contains("|  ███████ |") && lines[3].contains("    rpc"),
            "{text}"
        );
        assert!(
            lines[4].contains("|    ████  |") && lines[4].contains("      command"),
            "{text}"
        );
        assert_eq!(waterfall(&[], 10), "");
        // Hostile input: an end before the start, no width, escapes.
        let mut odd = span("x\u{1b}[2J", "z", "", 50, 10);
        odd.trace = "t2".into();
        let text = waterfall(&[odd], 0);
        assert!(text.contains("x?[2J") && !text.contains('\u{1b}'), "{text}");
    }
}
