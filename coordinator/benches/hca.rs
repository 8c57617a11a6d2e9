//! Helmholtz Cloud request latency and throughput on the real RabbitMQ:
//! the coordinator library consumes `to_hca` in a virtual host of its own,
//! the example backend sits behind a mutual-TLS backend server, and this
//! program plays the portal. First `n` allocations one after another
//! (latency: publish → ResourceCreatedV1 received), then `n` more published
//! at once (throughput with `prefetch` requests in flight). Prints figures;
//! asserts nothing.
//!
//! cargo bench -p waldur-coordinator --bench hca [-- 300]

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark's input is its own

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Bench;
use serde_json::json;
use waldur_backend_example::ExampleBackend;
use waldur_coordinator::config::Config;
use waldur_coordinator::runtime::Coordinator;
use waldur_coordinator::secret::{MapEnv, Secret};
use waldur_coordinator::upstream::hca::Portal;
use waldur_coordinator::upstream::hca::config::ResolvedBroker;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn put(http: &reqwest::Client, path: &str, body: serde_json::Value) {
    let r = http
        .put(format!("http://127.0.0.1:15672/api/{path}"))
        .basic_auth("guest", Some("guest"))
        .json(&body)
        .send()
        .await
        .expect("rabbitmq management api (deploy/services.sh up)");
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

fn request(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "ComputeResourceSpecV1",
        "target_entity": {"user_id_target": null, "group_urn_target": "urn:geant:helmholtz.de:group:bench"},
        "specification": {"project_name": format!("bench-{i}"), "cpu_hours": 100}
    }))
    .unwrap()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300);
    let tag = format!("{:x}", rand::random::<u32>());
    let (vhost, user, password) = (
        format!("hca-bench-{tag}"),
        format!("hca-bench-{tag}"),
        tag.clone(),
    );
    let http = reqwest::Client::new();
    put(&http, &format!("vhosts/{vhost}"), json!({})).await;
    put(
        &http,
        &format!("users/{user}"),
        json!({"password": password, "tags": ""}),
    )
    .await;
    put(
        &http,
        &format!("permissions/{vhost}/{user}"),
        json!({"configure": ".*", "write": ".*", "read": ".*"}),
    )
    .await;

    let backend = ExampleBackend::default();
    let bench = Bench::start(Arc::new(backend.clone()), &[]).await;
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hca/schemas");
    let text = format!(
        "version: 1\nbackends:\n  hpc:\n    endpoint: https://127.0.0.1:{port}\n    server_name: localhost\n    instance: hpc\n    tls: {{ca: {d}/ca.pem, cert: {d}/client.pem, key: {d}/client.key}}\nhelmholtz:\n  services:\n    - name: bench\n      service_id: bench\n      broker: {{host: 127.0.0.1, port: 5672, vhost: {vhost}}}\n      declare_queues: true\n      prefetch: 16\n      resource_types:\n        ComputeResourceSpecV1:\n          schema: {s}/ComputeResourceSpecV1.json\n          backend: hpc\n          backend_id: \"hca_{{/specification/project_name}}_{{request_hash}}\"\n          limits: {{cpu: {{from: /specification/cpu_hours}}}}\n",
        port = bench.port,
        d = bench.dir.path().display(),
        s = schemas.display(),
    );
    let env = MapEnv::from([
        ("HCA_USERNAME", user.as_str()),
        ("HCA_PASSWORD", password.as_str()),
    ]);
    let config = Config::parse(&text, Path::new("bench.yaml"), &env).unwrap();
    let coordinator = Arc::new(Coordinator::build(&config, &env).unwrap());
    let run = tokio::spawn(coordinator.clone().run(std::future::pending()));
    while !coordinator.hca[0].1.connected() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let broker = ResolvedBroker {
        host: "127.0.0.1".into(),
        port: 5672,
        tls: false,
        ca_file: None,
        vhost: vhost.clone(),
        username: user.clone(),
        password: Secret::new(password.clone()),
    };
    let mut portal = Portal::connect(&broker, "bench", "to_hca", "to_portal")
        .await
        .unwrap();

    // Latency: one request at a time.
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("lat-{i}");
        let started = Instant::now();
        portal
            .send("ResourceAllocateV1", &id, &request(i))
            .await
            .unwrap();
        let reply = portal
            .reply_to(&id, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        latencies.push(started.elapsed());
        assert_eq!(reply.message_type, "ResourceCreatedV1", "{:?}", reply.body);
    }
    latencies.sort();

    // Throughput: n requests published at once.
    let started = Instant::now();
    for i in n..2 * n {
        portal
            .send("ResourceAllocateV1", &format!("tp-{i}"), &request(i))
            .await
            .unwrap();
    }
    let mut seen = HashSet::new();
    while seen.len() < n {
        let m = portal
            .next(Duration::from_secs(60))
            .await
            .unwrap()
            .expect("reply");
        assert_eq!(m.message_type, "ResourceCreatedV1", "{:?}", m.body);
        seen.insert(m.correlation_id);
    }
    let burst = started.elapsed();
    run.abort();

    println!("hca allocations, example backend over mutual TLS, real RabbitMQ");
    println!(
        "latency ({n} sequential): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "throughput ({n} at once, prefetch 16): {:.0} requests/s ({:.2} s)",
        n as f64 / burst.as_secs_f64(),
        burst.as_secs_f64()
    );
    println!("resources on the backend: {}", backend.resource_count());
}
