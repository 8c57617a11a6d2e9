//! SLURM process counts and timings on the real cluster (deploy/services.sh),
//! and sacct parsing throughput. Prints figures; asserts nothing.
//!
//! sudo deploy/services.sh up && cargo bench -p waldur-backend-slurm --bench slurm

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark's input is its own

use std::time::Instant;

use waldur_backend_sdk::Backend;
use waldur_backend_sdk::types::*;
use waldur_backend_slurm::SlurmBackend;

const ALLOCATIONS: usize = 1_000;

fn parse_throughput() {
    let line = "a_weather-run|billing=64,cpu=64,mem=524288M,node=1,gres/gpu=4|1-08:00:00|alice\n";
    let text = line.repeat(1_000_000);
    let started = Instant::now();
    let usage = waldur_backend_slurm::parse::sacct_usage(&text, &["cpu", "mem", "gres/gpu"]);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(usage.len(), 1);
    println!(
        "sacct parsing: 1,000,000 lines in {secs:.3} s = {:.0} lines/s",
        1e6 / secs
    );
}

#[tokio::main]
async fn main() {
    parse_throughput();
    if std::process::Command::new("sacctmgr")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("no SLURM on this machine: run deploy/services.sh up for the cluster figures");
        return;
    }
    let b = SlurmBackend::from_settings(serde_json::json!({
        "customer_prefix": "bc_", "project_prefix": "bp_", "allocation_prefix": "ba_",
        "components": {
            "cpu": {"label": "CPU", "measured_unit": "k-Hours", "unit_factor": 60000, "accounting_type": "limit"},
            "mem": {"label": "Memory", "measured_unit": "gb-Hours", "unit_factor": 61440, "accounting_type": "limit"}
        }
    }))
    .unwrap();
    // Warm the TRES cache, as a running server has.
    b.diagnostics().await.unwrap();

    // One allocation with limits and 5 users, under a new customer and project.
    let ctx = ResourceContext {
        resource_uuid: "b".repeat(32),
        name: "bench allocation".into(),
        slug: "one".into(),
        project_slug: "bench".into(),
        customer_slug: "bench".into(),
        ..ResourceContext::default()
    };
    let users: Vec<User> = (1..=5)
        .map(|i| User::named(format!("benchuser{i}")))
        .collect();
    let before = b.spawned();
    let started = Instant::now();
    b.create_resource(CreateResource {
        backend_id: "ba_one".into(),
        resource: ctx.clone(),
        limits: Limits::from([("cpu".into(), 10), ("mem".into(), 5)]),
        users: users.clone(),
        ..CreateResource::default()
    })
    .await
    .unwrap();
    println!(
        "create allocation with limits and 5 users (new customer and project): {} SLURM processes, {:.2} s",
        b.spawned() - before,
        started.elapsed().as_secs_f64()
    );

    // 1,000 allocations under one project: one `add account` of all names.
    let names: Vec<String> = (0..ALLOCATIONS).map(|i| format!("ba_many{i:04}")).collect();
    let status = std::process::Command::new("sacctmgr")
        .args([
            "-i",
            "add",
            "account",
            &names.join(","),
            "parent=bp_bench",
            "organization=bp_bench",
            "description=bench",
        ])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let before = b.spawned();
    let started = Instant::now();
    let report = b
        .usage_report(UsageQuery {
            backend_ids: names.clone(),
            period: None,
            timezone: None,
        })
        .await
        .unwrap();
    println!(
        "usage report over {ALLOCATIONS} allocations: {} SLURM processes, {:.2} s, {} entries",
        b.spawned() - before,
        started.elapsed().as_secs_f64(),
        report.len()
    );

    let before = b.spawned();
    let started = Instant::now();
    let listing = b.list_resource_users(&names).await.unwrap();
    println!(
        "membership listing of {ALLOCATIONS} allocations: {} SLURM processes, {:.2} s, {} found",
        b.spawned() - before,
        started.elapsed().as_secs_f64(),
        listing.found.len()
    );

    // Clean up.
    let _ = std::process::Command::new("sacctmgr")
        .args([
            "-i",
            "remove",
            "account",
            "where",
            &format!("name={}", names.join(",")),
        ])
        .output();
    b.delete_resource(DeleteResource {
        backend_id: "ba_one".into(),
        mode: DeletionMode::Hard,
        resource: None,
    })
    .await
    .unwrap();
    let _ = std::process::Command::new("sacctmgr")
        .args(["-i", "remove", "account", "where", "name=bc_bench"])
        .output();
    let _ = std::process::Command::new("sacctmgr")
        .args([
            "-i",
            "remove",
            "user",
            "where",
            "name=benchuser1,benchuser2,benchuser3,benchuser4,benchuser5",
        ])
        .output();
}
