//! Unary round trip over mutual TLS on loopback against the example backend
//! hosted by the real `waldur-backend-server` binary: p50/p99 latency with
//! one request in flight, throughput with 64 in flight, and the server's
//! peak RSS. Prints figures; asserts nothing (see BENCHMARKS.md).
//!
//! cargo bench -p waldur-backend-server --bench rpc

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark's input is its own

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Endpoint;
use waldur_backend_proto::v1::backend_service_client::BackendServiceClient;
use waldur_backend_proto::v1::{self as wire};
use waldur_runtime::pki::{self, Usage, Validity};

const SEQUENTIAL: usize = 20_000;
const CONCURRENCY: usize = 64;
const LOAD_SECONDS: u64 = 10;

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::create_ca("bench ca", Validity::days(1)).unwrap();
    pki::write(dir.path(), "ca", &ca).unwrap();
    let server = pki::issue(
        &ca,
        Usage::Server,
        "localhost",
        &["127.0.0.1".into()],
        Validity::days(1),
    )
    .unwrap();
    pki::write(dir.path(), "server", &server).unwrap();
    let client = pki::issue(&ca, Usage::Client, "bench.client", &[], Validity::days(1)).unwrap();
    pki::write(dir.path(), "client", &client).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let config = format!(
        "version: 1\nlisten: 127.0.0.1:{port}\ntls:\n  ca: {}\n  cert: {}\n  key: {}\n  allowed_clients: [bench.client]\ninstances:\n  - name: hpc\n    type: example\n",
        p("ca.pem"),
        p("server.pem"),
        p("server.key")
    );
    std::fs::write(dir.path().join("server.yaml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_waldur-backend-server"))
        .args(["serve", "--config", &p("server.yaml")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let files = waldur_runtime::TlsFiles {
        ca: p("ca.pem").into(),
        cert: p("client.pem").into(),
        key: p("client.key").into(),
    };
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(files.client_config("localhost").unwrap())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let channel = loop {
        match endpoint.connect().await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("server did not start: {e:?}"),
        }
    };
    let mut c = BackendServiceClient::new(channel.clone());
    let resource = wire::ResourceContext {
        resource_uuid: "b".repeat(32),
        project_slug: "p".into(),
        ..Default::default()
    };
    c.create_resource(wire::CreateResourceRequest {
        instance: "hpc".into(),
        backend_id: "bench".into(),
        resource: Some(resource),
        users: vec![wire::User {
            username: "alice".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let request = wire::GetResourceRequest {
        instance: "hpc".into(),
        backend_id: "bench".into(),
    };

    // Warm up, then one request in flight.
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

    // 64 in flight over one HTTP/2 connection for a fixed time.
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
    let elapsed = started.elapsed().as_secs_f64();
    let rss = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();

    println!("unary GetResource over mutual TLS, loopback, example backend");
    println!(
        "  sequential ({SEQUENTIAL} calls): p50 {:?}  p99 {:?}",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99)
    );
    println!(
        "  {CONCURRENCY} in flight for {LOAD_SECONDS}s: {total} calls, {:.0} RPC/s",
        total as f64 / elapsed
    );
    println!(
        "  waldur-backend-server peak RSS: {:.1} MiB",
        rss as f64 / 1024.0
    );
}
