//! 1,000 Create orders through the real `waldur-coordinator` binary, the
//! example backend behind a mutual-TLS backend server, and waldur-sim:
//! orders per second, Waldur calls per order, coordinator peak RSS.
//! Prints figures; asserts nothing (see BENCHMARKS.md).
//!
//! cargo bench -p waldur-coordinator --bench orders

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark's input is its own

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use waldur_backend_example::ExampleBackend;
use waldur_backend_sdk::Registry;
use waldur_runtime::pki::{self, Usage, Validity};
use waldur_sim::{NewOrder, Sim};

const ORDERS: usize = 1_000;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = pki::create_ca("bench ca", Validity::days(1)).unwrap();
    pki::write(d, "ca", &ca).unwrap();
    pki::write(
        d,
        "server",
        &pki::issue(&ca, Usage::Server, "localhost", &[], Validity::days(1)).unwrap(),
    )
    .unwrap();
    pki::write(
        d,
        "client",
        &pki::issue(
            &ca,
            Usage::Client,
            "coordinator.bench",
            &[],
            Validity::days(1),
        )
        .unwrap(),
    )
    .unwrap();

    let sim = Sim::with_recording("bench-token", false);
    let sim_addr = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let scenario = sim.seed_basic(
        None,
        &[
            ("alice", "PROJECT.MANAGER", Some("alice")),
            ("bob", "PROJECT.MEMBER", Some("bob")),
        ],
    );
    for i in 0..ORDERS {
        sim.create_order(NewOrder {
            order_type: "Create".into(),
            state: "pending-provider".into(),
            offering_uuid: scenario.offering_uuid.clone(),
            project_uuid: scenario.project_uuid.clone(),
            name: format!("bench {i}"),
            limits: BTreeMap::from([("cpu".into(), 5), ("storage".into(), 10)]),
            ..Default::default()
        })
        .unwrap();
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server_config = format!(
        "version: 1\nlisten: 127.0.0.1:{port}\ntls:\n  ca: {0}/ca.pem\n  cert: {0}/server.pem\n  key: {0}/server.key\n  allowed_clients: [coordinator.bench]\ninstances:\n  - name: hpc\n    type: example\n",
        d.display()
    );
    let server_config =
        waldur_backend_sdk::config::ServerConfig::parse(&server_config, std::path::Path::new("b"))
            .unwrap();
    let backend = ExampleBackend::default();
    let server = waldur_backend_sdk::spawn(
        &server_config,
        Registry::single("hpc", Arc::new(backend.clone())).unwrap(),
    )
    .await
    .unwrap();

    std::fs::write(d.join("token"), "bench-token").unwrap();
    std::fs::set_permissions(
        d.join("token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let config = format!(
        "version: 1\nbackends:\n  hpc:\n    endpoint: https://127.0.0.1:{port}\n    server_name: localhost\n    instance: hpc\n    tls: {{ca: {0}/ca.pem, cert: {0}/client.pem, key: {0}/client.key}}\noffering_placeholder",
        d.display()
    )
    .replace(
        "offering_placeholder",
        &format!(
            "offerings:\n  - name: bench\n    offering_uuid: {}\n    waldur:\n      api_url: http://{sim_addr}/api/\n      token_file: {}/token\n    intervals: {{orders_seconds: 1}}\n    order_concurrency: 32\n    backends: {{orders: hpc}}\n",
            scenario.offering_uuid,
            d.display()
        ),
    );
    std::fs::write(d.join("coordinator.yaml"), config).unwrap();

    sim.reset_calls();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_waldur-coordinator"))
        .args(["run", "--config"])
        .arg(d.join("coordinator.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = sim.orders_in_state("done");
        if done == ORDERS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {ORDERS} orders done"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss = common::peak_rss_kib(child.id()).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    server.shutdown().await.unwrap();

    let calls = sim.calls();
    let mut routes: BTreeMap<String, usize> = BTreeMap::new();
    for c in &calls {
        *routes
            .entry(format!("{} {}", c.method, c.route))
            .or_default() += 1;
    }
    println!(
        "{ORDERS} pending-provider Create orders, example backend over mutual TLS, waldur-sim"
    );
    println!(
        "  wall time {elapsed:.2} s (coordinator start to last order done), {:.0} orders/s",
        ORDERS as f64 / elapsed
    );
    println!(
        "  waldur calls {} = {:.2} per order",
        calls.len(),
        calls.len() as f64 / ORDERS as f64
    );
    for (route, n) in &routes {
        println!("    {n:>6}  {route}");
    }
    println!("  coordinator peak RSS {:.1} MiB", rss as f64 / 1024.0);
    println!("  backend accounts created: {}", backend.resource_count());
}
