//! RPC latency and throughput through the dial-out tunnel versus a direct
//! connection, in the same run and against the same process: the real
//! `waldur-backend-server` binary both listens (the coordinator dials in)
//! and dials the coordinator's tunnel listener, hosting the example
//! backend. Unary `GetResource`: p50/p99 with one request in flight, and
//! throughput with 64 in flight over the one HTTP/2 connection of each
//! transport. Prints figures; asserts nothing (see BENCHMARKS.md).
//!
//! cargo bench -p waldur-coordinator --bench tunnel

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark's input is its own

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use waldur_backend_proto::v1::backend_service_client::BackendServiceClient;
use waldur_backend_proto::v1::{self as wire};
use waldur_coordinator::backend::TunnelHub;
use waldur_coordinator::config::TunnelConfig;
use waldur_runtime::pki::{self, Usage, Validity};

const SEQUENTIAL: usize = 20_000;
const CONCURRENCY: usize = 64;
const LOAD_SECONDS: u64 = 5;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(name: &str, channel: Channel) {
    let request = wire::GetResourceRequest {
        instance: "hpc".into(),
        backend_id: "bench".into(),
    };
    let mut c = BackendServiceClient::new(channel.clone());
    for _ in 0..2_000 {
        c.get_resource(request.clone()).await.unwrap();
    }
    let mut samples = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        c.get_resource(request.clone()).await.unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    let stop = Instant::now() + Duration::from_secs(LOAD_SECONDS);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let mut c = BackendServiceClient::new(channel.clone());
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                c.get_resource(request.clone()).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    println!(
        "{name:>7}: sequential ({SEQUENTIAL} calls) p50 {:?}  p99 {:?};  {CONCURRENCY} in flight: {:.0} RPC/s",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        total as f64 / started.elapsed().as_secs_f64()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::create_ca("bench ca", Validity::days(1)).unwrap();
    pki::write(dir.path(), "ca", &ca).unwrap();
    let server = pki::issue(
        &ca,
        Usage::Both,
        "localhost",
        &["127.0.0.1".into()],
        Validity::days(1),
    )
    .unwrap();
    pki::write(dir.path(), "server", &server).unwrap();
    let coordinator = pki::issue(
        &ca,
        Usage::Both,
        "coordinator.bench",
        &[],
        Validity::days(1),
    )
    .unwrap();
    pki::write(dir.path(), "coordinator", &coordinator).unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let files = waldur_runtime::TlsFiles {
        ca: p("ca.pem").into(),
        cert: p("coordinator.pem").into(),
        key: p("coordinator.key").into(),
    };

    let tunnel_port = free_port();
    let hub = TunnelHub::bind(
        &TunnelConfig {
            listen: format!("127.0.0.1:{tunnel_port}").parse().unwrap(),
            tls: files.clone(),
            allowed: BTreeMap::from([("localhost".into(), vec!["hpc".into()])]),
            max_concurrency: 1024,
        },
        vec!["hpc".into()],
    )
    .unwrap();

    let port = free_port();
    let config = format!(
        "version: 1\nlisten: 127.0.0.1:{port}\nconnect: {{coordinator: 'https://127.0.0.1:{tunnel_port}', server_name: coordinator.bench, backends: [hpc]}}\ntls:\n  ca: {}\n  cert: {}\n  key: {}\n  allowed_clients: [coordinator.bench]\ninstances:\n  - name: hpc\n    type: example\n",
        p("ca.pem"),
        p("server.pem"),
        p("server.key")
    );
    std::fs::write(dir.path().join("server.yaml"), config).unwrap();
    let binary = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("release/waldur-backend-server");
    let mut child = Command::new(&binary)
        .args(["serve", "--config", &p("server.yaml")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (cargo build --release --bin waldur-backend-server first)",
                binary.display()
            )
        });

    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(files.client_config("localhost").unwrap())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let direct = loop {
        match endpoint.connect().await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("server did not start: {e:?}"),
        }
    };
    let tunnel = loop {
        if let Some(c) = hub.channel("hpc") {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the server never dialed the tunnel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    BackendServiceClient::new(direct.clone())
        .create_resource(wire::CreateResourceRequest {
            instance: "hpc".into(),
            backend_id: "bench".into(),
            resource: Some(wire::ResourceContext {
                resource_uuid: "b".repeat(32),
                project_slug: "p".into(),
                ..Default::default()
            }),
            users: vec![wire::User {
                username: "alice".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();

    println!("unary GetResource over mutual TLS, loopback, example backend, one server process");
    measure("direct", direct.clone()).await;
    measure("tunnel", tunnel.clone()).await;
    measure("direct", direct).await;
    measure("tunnel", tunnel).await;
    let _ = child.kill();
    let _ = child.wait();
}
