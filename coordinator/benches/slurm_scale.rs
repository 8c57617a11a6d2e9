//! The coordinator over the real SLURM cluster (`deploy/services.sh up`) at
//! scale: N Create orders with limits and 5 users each (10 projects, a team
//! of 5 per project) through waldur-sim, the coordinator library and the
//! SLURM backend behind a mutual-TLS backend server; then a membership cycle
//! and a usage report over the N allocations. Prints wall time and SLURM
//! processes per step; asserts nothing (see BENCHMARKS.md).
//!
//! cargo bench -p waldur-coordinator --bench slurm_scale [-- 1000]
//!
//! `ORDER_CONCURRENCY=256` puts that many orders in flight (default 64).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark's input is its own

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Bench;
use waldur_backend_slurm::SlurmBackend;
use waldur_coordinator::config::Config;
use waldur_coordinator::runtime::Coordinator;
use waldur_coordinator::secret::MapEnv;
use waldur_sim::NewOrder;

const PROJECTS: usize = 10;
const TEAM: usize = 5;

fn sacctmgr(args: &[&str]) {
    let _ = std::process::Command::new("sacctmgr")
        .arg("-i")
        .args(args)
        .output();
}

#[tokio::main]
async fn main() {
    // Warnings (a batch that fell back, an order that failed) are part of
    // the figures; RUST_LOG shows more.
    waldur_runtime::telemetry::init_logging(false);
    let orders: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000);
    if std::process::Command::new("sacctmgr")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("no SLURM on this machine: run deploy/services.sh up first");
        return;
    }
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 0xfffff
    );
    let slurm = Arc::new(
        SlurmBackend::from_settings(serde_json::json!({
            "customer_prefix": format!("s{run}c_"),
            "project_prefix": format!("s{run}p_"),
            "allocation_prefix": format!("s{run}a_"),
            "enable_user_homedir_account_creation": false,
            "components": {
                "cpu": {"label": "CPU", "measured_unit": "k-Hours", "unit_factor": 60000, "accounting_type": "usage"},
                "mem": {"label": "Memory", "measured_unit": "gb-Hours", "unit_factor": 61440, "accounting_type": "usage"}
            }
        }))
        .unwrap(),
    );
    let bench = Bench::start(slurm.clone(), &[]).await;
    let sim = &bench.sim;
    let offering = bench.scenario.offering_uuid.clone();
    let mut projects = Vec::new();
    let mut usernames = Vec::new();
    {
        let mut w = sim.world();
        for p in 0..PROJECTS {
            let project = waldur_sim::world::Project {
                uuid: format!("{:032x}", 0xbe00 + p),
                name: format!("scale {p}"),
                slug: format!("scale-{p}"),
                customer_uuid: bench.scenario.customer_uuid.clone(),
            };
            let uuid = project.uuid.clone();
            w.projects.insert(uuid.clone(), project);
            for j in 0..TEAM {
                let name = format!("s{run}u{p}x{j}");
                let user = w.add_user(&name, &format!("{name}@example.org"), &name);
                w.grant_role(&uuid, &user, "PROJECT.MEMBER").unwrap();
                w.add_offering_user(&offering, &user, "OK", Some(&name));
                usernames.push(name);
            }
            projects.push(uuid);
        }
    }
    for i in 0..orders {
        sim.create_order(NewOrder {
            order_type: "Create".into(),
            state: "pending-provider".into(),
            offering_uuid: offering.clone(),
            project_uuid: projects[i % PROJECTS].clone(),
            name: format!("scale {i}"),
            limits: BTreeMap::from([("cpu".into(), 5 + (i % 3) as i64), ("mem".into(), 10)]),
            ..Default::default()
        })
        .unwrap();
    }
    // Creates wait for their batch: the channel must carry more calls
    // than the orders in flight, or the cheap calls queue behind them.
    // ORDER_CONCURRENCY sets how many orders are in flight (64 unless set).
    let in_flight: usize = std::env::var("ORDER_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let config = bench.config(
        "    tasks: {orders: true, report: true, membership: true}\n    backends: {orders: hpc, report: hpc, membership: hpc}\n    order_concurrency: IN_FLIGHT\n    reporting: {periods: 1, concurrency: 32}\n    membership: {concurrency: 32}",
    )
    .replace("IN_FLIGHT", &in_flight.to_string())
    .replace("    instance: hpc\n", &format!("    instance: hpc\n    max_concurrency: {}\n", 4 * in_flight.max(64)));
    let env = MapEnv::from([("T", "bench-token")]);
    let config = Config::parse(&config, Path::new("bench.yaml"), &env).unwrap();
    let coordinator = Coordinator::build(&config, &env).unwrap();

    println!(
        "== {orders} Create orders with limits and {TEAM} users each, {PROJECTS} projects, real SLURM"
    );
    let before = slurm.spawned();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3600);
    loop {
        coordinator.process_orders_once().await;
        let done = sim.orders_in_state("done");
        if done == orders {
            break;
        }
        if Instant::now() > deadline {
            println!("only {done} of {orders} orders done after an hour");
            break;
        }
    }
    println!(
        "orders: {:.1} s, {} SLURM processes ({:.3} per order)",
        started.elapsed().as_secs_f64(),
        slurm.spawned() - before,
        (slurm.spawned() - before) as f64 / orders as f64
    );

    for label in ["membership, steady state", "membership, again"] {
        let before = slurm.spawned();
        let started = Instant::now();
        let (_, r) = coordinator.sync_membership_once().await.pop().unwrap();
        let s = r.unwrap();
        println!(
            "{label}: {:.2} s, {} SLURM processes, {} backend changes, {} erred, {} missing",
            started.elapsed().as_secs_f64(),
            slurm.spawned() - before,
            s.backend_changes(),
            s.erred.len(),
            s.missing_on_backend.len()
        );
    }
    let before = slurm.spawned();
    let started = Instant::now();
    let (_, r) = coordinator.report_once().await.pop().unwrap();
    let s = r.unwrap();
    println!(
        "usage report: {:.2} s, {} SLURM processes, {} errors",
        started.elapsed().as_secs_f64(),
        slurm.spawned() - before,
        s.errors.len()
    );

    // Clean up in bulk (one account at a time would take minutes).
    let accounts: Vec<String> = sim
        .world()
        .resources
        .values()
        .map(|r| r.backend_id.clone())
        .filter(|b| b.starts_with(&format!("s{run}a_")))
        .collect();
    // Small chunks: slurmdbd takes minutes over one removal of hundreds.
    for chunk in accounts.chunks(50) {
        sacctmgr(&[
            "remove",
            "user",
            "where",
            &format!("account={}", chunk.join(",")),
        ]);
        sacctmgr(&[
            "remove",
            "account",
            "where",
            &format!("name={}", chunk.join(",")),
        ]);
    }
    sacctmgr(&[
        "remove",
        "user",
        "where",
        &format!("name={}", usernames.join(",")),
    ]);
    let tiers: Vec<String> = (0..PROJECTS)
        .map(|p| format!("s{run}p_scale-{p}"))
        .chain([format!("s{run}c_example-uni")])
        .collect();
    sacctmgr(&[
        "remove",
        "account",
        "where",
        &format!("name={}", tiers.join(",")),
    ]);
    bench.server.shutdown().await.unwrap();
}
