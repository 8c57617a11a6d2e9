//! One order is one trace across hops: an in-test OTLP/gRPC receiver takes
//! the spans of this process (the coordinator) and of a real
//! `waldur-backend-server` process it spawns; after one Create order the
//! receiver holds the coordinator's `order` span, the backend server's
//! `rpc` span for CreateResource below it, and — on the real SLURM cluster
//! (`WALDUR_SLURM_CLUSTER`) — the `command` spans of sacctmgr below that.
//! The order's trace id is in the resource's backend metadata and in the
//! `traceparent` headers Waldur received. Metrics of the same order are
//! scraped from the coordinator's admin port and the server's metrics port. Its own test binary: it installs the
//! process-wide subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use waldur_runtime::span;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
use serde_json::json;
use waldur_coordinator::config::Config;
use waldur_coordinator::secret::MapEnv;
use waldur_sim::{NewOrder, Sim};

use waldur_coordinator::cli::traces::{Receiver, Span};

/// Is `span` below `ancestor` in `spans`?
fn descends(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let mut at = span.clone();
    for _ in 0..64 {
        if at.parent == ancestor.id {
            return true;
        }
        match spans.iter().find(|s| s.id == at.parent) {
            Some(p) => at = p.clone(),
            None => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_from_the_coordinator_down_to_backend_commands() {
    let slurm = std::env::var_os("WALDUR_SLURM_CLUSTER").is_some();

    // The OTLP receiver.
    let receiver = Receiver::default();
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = otlp.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(otlp)),
    );
    let endpoint = format!("http://{otlp_addr}");

    // This process is the coordinator, set up as its binary does.
    let telemetry = waldur_backend_sdk::telemetry::init(false, "waldur-coordinator", &|k| {
        (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| endpoint.clone())
    });
    assert!(telemetry.exporting());

    // A real backend server process exporting to the same receiver.
    let dir = tempfile::tempdir().unwrap();
    support::write_pki(dir.path());
    let port = support::free_port();
    let server_metrics = support::free_port();
    let tag = format!("t{:x}", rand::random::<u32>() & 0xfffff);
    let instance = if slurm {
        format!(
            "  - name: hpc\n    type: slurm\n    settings:\n      customer_prefix: {tag}c_\n      project_prefix: {tag}p_\n      allocation_prefix: {tag}_\n      components:\n        cpu: {{label: CPU, measured_unit: CPU-minutes, unit_factor: 1, accounting_type: usage}}\n"
        )
    } else {
        "  - name: hpc\n    type: example\n    settings: {allocation_prefix: hpc_}\n".to_owned()
    };
    let server_config = format!(
        "version: 1\n{transport}metrics: {{listen: '127.0.0.1:{server_metrics}'}}\ntls:\n  ca: {d}/ca.pem\n  cert: {d}/server.pem\n  key: {d}/server.key\n  allowed_clients: [coordinator.test]\ninstances:\n{instance}",
        d = dir.path().display(),
        transport = support::server_transport_yaml(port),
    );
    std::fs::write(dir.path().join("server.yaml"), server_config).unwrap();
    let mut server = std::process::Command::new(support::workspace_binary("waldur-backend-server"))
        .args(["serve", "--config"])
        .arg(dir.path().join("server.yaml"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "waldur-backend-server")
        // Logs at warn must not switch span export off.
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();

    // Waldur and the coordinator, with an admin port for the metrics.
    let sim = Sim::new(support::TOKEN);
    let sim_addr = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let scenario = sim.seed_basic(None, &[("alice", "PROJECT.MANAGER", Some("alice"))]);
    let admin = support::free_port();
    let config = format!(
        r#"
version: 1
admin: {{listen: "127.0.0.1:{admin}"}}
timeouts: {{backend_read_seconds: 10, backend_mutate_seconds: 60, backend_connect_seconds: 2}}
{backends}offerings:
  - name: HPC
    offering_uuid: {offering}
    waldur: {{api_url: "http://{sim_addr}/api/", token_env: WALDUR_TOKEN}}
    backends: {{orders: hpc}}
    tasks: {{orders: true}}
"#,
        backends = support::backends_yaml(dir.path(), port),
        offering = scenario.offering_uuid,
    );
    let env = MapEnv::from([("WALDUR_TOKEN", support::TOKEN)]);
    let config = Config::parse(&config, std::path::Path::new("c.yaml"), &env).unwrap();
    let coordinator = Arc::new(support::build_coordinator(&config, &env, None));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", admin))
        .await
        .unwrap();
    tokio::spawn(waldur_coordinator::runtime::admin::serve(
        listener,
        coordinator.clone(),
    ));

    let created = sim
        .create_order(NewOrder {
            order_type: "Create".into(),
            state: "executing".into(),
            offering_uuid: scenario.offering_uuid.clone(),
            project_uuid: scenario.project_uuid.clone(),
            name: "Traced Run".into(),
            limits: BTreeMap::from([("cpu".into(), 5)]),
            attributes: json!({}),
            ..Default::default()
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sim.order_state(&created.order_uuid).as_deref() != Some("done") {
        assert!(
            Instant::now() < deadline,
            "order not done: {:?}",
            sim.order(&created.order_uuid)
        );
        coordinator.process_orders_once().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The backend server's own metrics for the same order.
    let text = reqwest::get(format!("http://127.0.0.1:{server_metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"waldur_backend_rpcs_total{method="CreateResource",code="Ok"}"#),
        "{text}"
    );
    if slurm {
        assert!(
            text.contains(r#"waldur_backend_commands_total{binary="sacctmgr",outcome="ok"}"#),
            "{text}"
        );
        assert!(
            text.contains("waldur_backend_command_duration_seconds_count{binary=\"sacctmgr\"}"),
            "{text}"
        );
    }

    // Everything answers: ready.
    let ready = reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body = ready.text().await.unwrap();
    assert!(
        body.contains("ok waldur HPC") && body.contains("ok backend hpc"),
        "{body}"
    );

    // Flush both sides: this process's provider, and the server's on SIGTERM.
    tokio::task::block_in_place(|| telemetry.flush());
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::block_in_place(|| server.wait()).unwrap();
    assert!(exit.success(), "backend server exited with {exit}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let (order, rpc, spans) = loop {
        let spans = receiver.spans();
        let order = spans.iter().find(|s| {
            s.name == span::ORDER
                && s.service == "waldur-coordinator"
                && s.attributes.get("order").map(String::as_str)
                    == Some(created.order_uuid.as_str())
        });
        let rpc = order.and_then(|o| {
            spans.iter().find(|s| {
                s.service == "waldur-backend-server"
                    && s.name == "rpc"
                    && s.trace == o.trace
                    && s.attributes.get("rpc.method").map(String::as_str) == Some("CreateResource")
            })
        });
        if let (Some(o), Some(r)) = (order, rpc) {
            break (o.clone(), r.clone(), spans);
        }
        assert!(
            Instant::now() < deadline,
            "no order span with a CreateResource rpc span of the backend server in its trace: {:#?}",
            spans
                .iter()
                .map(|s| (&s.service, &s.name, &s.trace))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The order span is a root; the server's span descends from it through
    // the coordinator's client span.
    assert!(
        order.parent.is_empty(),
        "the order span has a parent: {order:?}"
    );
    assert!(
        descends(&spans, &rpc, &order),
        "rpc span is not below the order span"
    );
    let client = spans
        .iter()
        .find(|s| s.id == rpc.parent)
        .expect("the rpc span's parent was exported");
    assert_eq!(client.name, span::BACKEND_CALL);
    assert_eq!(client.service, "waldur-coordinator");
    if slurm {
        let commands: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name == span::COMMAND && s.trace == order.trace)
            .collect();
        assert!(
            commands
                .iter()
                .any(|c| c.attributes.get("command.binary").map(String::as_str)
                    == Some("sacctmgr")
                    && descends(&spans, c, &rpc)),
            "no sacctmgr command span below the CreateResource span: {commands:#?}"
        );
        assert!(
            commands
                .iter()
                .all(|c| c.attributes.contains_key("command.exit_code"))
        );
    }

    // Every Waldur request the order made is a client span below it, with
    // method, endpoint (ids replaced), attempt and status; the traceparent
    // Waldur received names that span.
    let rest: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == span::WALDUR_CALL && s.trace == order.trace)
        .collect();
    let set_backend_id = rest
        .iter()
        .find(|s| {
            s.attributes.get("url.path").map(String::as_str)
                == Some("marketplace-provider-resources/{id}/set_backend_id/")
        })
        .unwrap_or_else(|| {
            panic!("no set_backend_id request span in the order's trace: {rest:#?}")
        });
    assert!(descends(&spans, set_backend_id, &order));
    assert_eq!(set_backend_id.attributes["http.method"], "POST");
    assert_eq!(set_backend_id.attributes["http.status_code"], "200");
    assert_eq!(set_backend_id.attributes["attempt"], "1");
    assert!(
        sim.traceparents()
            .iter()
            .any(|t| t.contains(&set_backend_id.id)),
        "Waldur's traceparent does not name the request span"
    );

    // The trace id reached Waldur twice: in the resource's metadata and in
    // the traceparent of the calls made for the order.
    let resource = sim.resource(&created.resource_uuid).unwrap();
    assert_eq!(resource.backend_metadata["trace_id"], json!(order.trace));
    assert!(
        sim.traceparents().iter().any(|t| t.contains(&order.trace)),
        "no Waldur request carried the order's trace"
    );

    // Metrics of the same order, scraped like Prometheus does.
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        r#"waldur_coordinator_orders_total{offering="HPC",type="Create",outcome="done"} 1"#,
        r#"waldur_coordinator_backend_rpcs_total{backend="hpc",method="CreateResource",code="Ok"}"#,
        r#"waldur_coordinator_order_latency_seconds_count{offering="HPC",type="Create"} 1"#,
        r#"waldur_coordinator_waldur_requests_total{endpoint="marketplace-orders/{id}/set_state_done/",method="POST",status="200"} 1"#,
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    let health = reqwest::get(format!("http://127.0.0.1:{admin}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // The backend server is gone now: not ready, and it says which.
    let ready = reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(
        body.contains("ok waldur HPC") && body.contains("fail backend hpc"),
        "{body}"
    );
}
