//! Report and membership cycles over many resources: waldur-sim, the example
//! backend behind a mutual-TLS backend server, the coordinator library.
//! Prints wall time, Waldur calls per resource and backend changes per
//! cycle; asserts nothing (see BENCHMARKS.md).
//!
//! cargo bench -p waldur-coordinator --bench cycles [-- 1000 10000]

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark's input is its own

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use common::Bench;
use waldur_backend_example::{ExampleBackend, ExampleSettings};
use waldur_coordinator::config::Config;
use waldur_coordinator::runtime::Coordinator;
use waldur_coordinator::secret::MapEnv;
use waldur_sim::Sim;

const USERS: usize = 5;

fn calls_by_route(sim: &Sim) -> BTreeMap<String, usize> {
    let mut routes = BTreeMap::new();
    for c in sim.calls() {
        *routes
            .entry(format!("{} {}", c.method, c.route))
            .or_default() += 1;
    }
    routes
}

async fn run(resources: usize) {
    // The backend gets the same allocations with the same members.
    let backend = ExampleBackend::new(ExampleSettings {
        synthetic_usage: true,
        ..ExampleSettings::default()
    });
    let bench = Bench::start(Arc::new(backend.clone()), &[]).await;
    let sim = &bench.sim;
    bench.seed_allocations(&backend, resources, USERS).await;
    let config = bench.config(
        "    tasks: {orders: false, report: true, membership: true}\n    backends: {report: hpc, membership: hpc}\n    reporting: {periods: 1, concurrency: 32}\n    membership: {concurrency: 32}",
    );
    let env = MapEnv::from([("T", "bench-token")]);
    let config = Config::parse(&config, Path::new("bench.yaml"), &env).unwrap();
    let coordinator = Coordinator::build(&config, &env).unwrap();
    // Registration and capability discovery happen once per process; keep
    // them out of the figures.
    coordinator.sync_membership_once().await;
    coordinator.report_once().await;
    // ...but that already reported: start the report from an empty Waldur.
    sim.world().usages.clear();
    sim.reset_calls();

    println!("== {resources} resources × {USERS} users");
    for (label, expect_writes) in [
        ("report, usage changed", true),
        ("report, unchanged", false),
    ] {
        sim.reset_calls();
        let t = Instant::now();
        let (_, r) = coordinator.report_once().await.pop().unwrap();
        let elapsed = t.elapsed().as_secs_f64();
        let s = r.unwrap();
        let calls = sim.call_count();
        println!(
            "{label}: {elapsed:.2} s, {:.2} Waldur calls per resource ({calls} calls), {} totals written, {} unchanged, {} per-user batches, errors {}",
            calls as f64 / resources as f64,
            s.totals_written,
            s.totals_unchanged,
            s.user_usages_written,
            s.errors.len()
        );
        if expect_writes {
            for (route, n) in calls_by_route(sim) {
                println!("    {n:>7} {route}");
            }
        }
    }
    for label in [
        "membership, steady state",
        "membership, steady state (again)",
    ] {
        sim.reset_calls();
        let t = Instant::now();
        let (_, r) = coordinator.sync_membership_once().await.pop().unwrap();
        let elapsed = t.elapsed().as_secs_f64();
        let s = r.unwrap();
        let calls = sim.call_count();
        println!(
            "{label}: {elapsed:.2} s, {:.2} Waldur calls per resource, backend changes {}, erred {}, missing {}",
            calls as f64 / resources as f64,
            s.backend_changes(),
            s.erred.len(),
            s.missing_on_backend.len()
        );
    }
    bench.server.shutdown().await.unwrap();
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    for n in sizes {
        run(n).await;
    }
}
