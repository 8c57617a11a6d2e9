//! Peak memory of the real `waldur-coordinator` binary over one report and
//! one membership cycle (`run --once`), for growing numbers of resources:
//! waldur-sim and the example backend behind a mutual-TLS backend server in
//! the bench process, the coordinator in its own. Prints figures; asserts
//! nothing (see BENCHMARKS.md).
//!
//! cargo bench -p waldur-coordinator --bench memory [-- 1000 10000]
//!
//! Each size runs two cycles: the first writes every usage record, the
//! second finds them (the steady state).
//! `ONLY=report` or `ONLY=membership` runs that task alone.
//! `WRAP="heaptrack -o /tmp/coordinator"` runs the coordinator under that
//! command, to see where the memory goes (the figure is then the wrapper's).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark's input is its own

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Bench;
use waldur_backend_example::{ExampleBackend, ExampleSettings};

const USERS: usize = 5;

async fn run(resources: usize) {
    let backend = ExampleBackend::new(ExampleSettings {
        synthetic_usage: true,
        ..ExampleSettings::default()
    });
    let bench = Bench::start(Arc::new(backend.clone()), &[]).await;
    bench.seed_allocations(&backend, resources, USERS).await;
    let only = std::env::var("ONLY").unwrap_or_default();
    let config = bench.config(
        "    tasks: {orders: false, report: REPORT, membership: MEMBERSHIP}\n    backends: {report: hpc, membership: hpc}\n    reporting: {periods: 1, concurrency: 32}\n    membership: {concurrency: 32}",
    )
    .replace("REPORT", if only == "membership" { "false" } else { "true" })
    .replace("MEMBERSHIP", if only == "report" { "false" } else { "true" });
    let path = bench.dir.path().join("coordinator.yaml");
    std::fs::write(&path, config).unwrap();
    // The first cycle writes every record; the second finds them all and
    // holds Waldur's per-user amounts as well: the steady state.
    for cycle in ["first", "second"] {
        let started = Instant::now();
        let binary = env!("CARGO_BIN_EXE_waldur-coordinator");
        let wrap = std::env::var("WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["run", "--once", "--config"])
            .arg(&path)
            .env("T", "bench-token")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // VmHWM only grows: the last reading before the exit is the peak.
        let mut peak = 0;
        let status = loop {
            if let Some(kib) = common::peak_rss_kib(child.id()) {
                peak = peak.max(kib);
            }
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let elapsed = started.elapsed().as_secs_f64();
        let reported = bench.sim.world().usages.len();
        let tasks = match only.as_str() {
            "report" | "membership" => only.as_str(),
            _ => "report + membership",
        };
        println!(
            "{resources} resources × {USERS} users: {tasks} (run --once, {cycle} cycle) {elapsed:.2} s, {status}, coordinator peak RSS {:.1} MiB, {reported} usage records",
            peak as f64 / 1024.0
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
        vec![100, 1_000, 10_000]
    } else {
        sizes
    };
    for n in sizes {
        run(n).await;
    }
}
