//! Event-to-done latency of Create orders through the event path: waldur-sim
//! publishes to the real RabbitMQ, the coordinator consumes over STOMP
//! (polling set to an hour), the example or the SLURM backend behind mutual
//! TLS. Orders are created one at a time, each after the previous one is
//! done, so the figure is latency, not queueing. Prints p50/p99 and, for
//! SLURM, the share of the time spent in SLURM commands; asserts nothing.
//!
//! cargo bench -p waldur-coordinator --bench events [-- example 500 | slurm 30]
//! (slurm needs the cluster from deploy/services.sh)

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark's input is its own

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Bench;
use waldur_backend_example::ExampleBackend;
use waldur_backend_sdk::Backend;
use waldur_backend_slurm::SlurmBackend;
use waldur_coordinator::config::Config;
use waldur_coordinator::runtime::Coordinator;
use waldur_coordinator::secret::MapEnv;
use waldur_sim::NewOrder;
use waldur_sim::events::Broker;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let kind = args.first().map(String::as_str).unwrap_or("example");
    let orders: usize = args
        .get(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(if kind == "slurm" { 30 } else { 500 });

    let slurm = (kind == "slurm").then(|| {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let prefix = format!("b{:x}_", millis % 0xfffff);
        Arc::new(
            SlurmBackend::from_settings(serde_json::json!({
                "customer_prefix": format!("{prefix}c_"),
                "project_prefix": format!("{prefix}p_"),
                "allocation_prefix": prefix,
                "components": {
                    "cpu": {"label": "CPU", "measured_unit": "CPU-minutes", "unit_factor": 1, "accounting_type": "usage"}
                }
            }))
            .unwrap(),
        )
    });
    let backend: Arc<dyn Backend> = match &slurm {
        Some(s) => s.clone(),
        None => Arc::new(ExampleBackend::default()),
    };
    let bench = Bench::start(
        backend,
        &[
            ("alice", "PROJECT.MANAGER", Some("alice")),
            ("bob", "PROJECT.MEMBER", Some("bob")),
        ],
    )
    .await;
    bench.sim.enable_events(Broker::default());
    let config = bench.config(
        "    tasks: {orders: true, report: false, membership: false, events: true}\n    backends: {orders: hpc}\n    intervals: {orders_seconds: 3600}\n    events: {stomp_url: 'ws://127.0.0.1:15674/ws'}",
    );
    let env = MapEnv::from([("T", "bench-token")]);
    let config = Config::parse(&config, Path::new("bench.yaml"), &env).unwrap();
    let coordinator = Arc::new(Coordinator::build(&config, &env).unwrap());
    let running = coordinator.clone();
    let run = tokio::spawn(async move { running.run(std::future::pending()).await });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let connected = coordinator.offerings[0]
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(t, s)| *t == "order" && s.connected());
        if connected {
            break;
        }
        assert!(Instant::now() < deadline, "consumer never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Warm up: connections, capabilities, registration.
    let limits = std::collections::BTreeMap::from([("cpu".to_owned(), 100)]);
    let once = |name: String| {
        bench
            .sim
            .create_order(NewOrder {
                order_type: "Create".into(),
                state: "pending-provider".into(),
                offering_uuid: bench.scenario.offering_uuid.clone(),
                project_uuid: bench.scenario.project_uuid.clone(),
                name,
                limits: limits.clone(),
                ..Default::default()
            })
            .unwrap()
            .order_uuid
    };
    let sim = bench.sim.clone();
    let wait_done = |order: String| {
        let sim = sim.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while sim.order_state(&order).as_deref() != Some("done") {
                assert!(Instant::now() < deadline, "order {order} never done");
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
    };
    wait_done(once("warm up".into())).await;

    let busy_before = slurm.as_ref().map(|s| s.busy()).unwrap_or_default();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(orders);
    for i in 0..orders {
        let t = Instant::now();
        let order = once(format!("latency {i}"));
        wait_done(order).await;
        latencies.push(t.elapsed());
    }
    let total = started.elapsed();
    latencies.sort();
    println!(
        "{kind}: {orders} Create orders, event to done: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );
    if let Some(s) = &slurm {
        let busy = s.busy() - busy_before;
        println!(
            "time in SLURM commands: {:.1} s of {:.1} s ({:.0} %), {:.1} processes per order",
            busy.as_secs_f64(),
            total.as_secs_f64(),
            100.0 * busy.as_secs_f64() / total.as_secs_f64(),
            s.spawned() as f64 / (orders + 1) as f64
        );
    }
    run.abort();
    bench.server.shutdown().await.unwrap();
}
