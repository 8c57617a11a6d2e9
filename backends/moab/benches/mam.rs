//! `mam-*` processes per operation of the MOAB backend, on `mam-sim` run in
//! process (the counts are the backend's, not the simulator's speed):
//! a created allocation with 5 users under a new project, a usage report
//! and a membership listing over 1,000 allocations.
//!
//! `cargo bench -p waldur-backend-moab --bench mam -- [ALLOCATIONS]`

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use waldur_backend_sdk::Backend;
use waldur_backend_sdk::types::*;

fn create(i: usize, users: &[&str]) -> CreateResource {
    CreateResource {
        backend_id: format!("a_r{i}"),
        resource: ResourceContext {
            resource_uuid: format!("0f0f0000000000000000{i:012x}"),
            name: format!("Resource {i}"),
            project_slug: format!("proj{}", i / 10),
            project_name: format!("Project {}", i / 10),
            ..ResourceContext::default()
        },
        limits: Limits::from([("deposit".into(), 100)]),
        users: users
            .iter()
            .map(|u| User {
                username: (*u).into(),
                ..User::default()
            })
            .collect(),
        ..CreateResource::default()
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let (b, dir) = support::backend(serde_json::json!({}));
    let users = ["alice", "bob", "u3", "u4", "u5"];
    for u in &users[2..] {
        support::mam(dir.path(), &format!("mam-create-user -u {u}"));
    }

    let before = b.spawned();
    b.create_resource(create(0, &users)).await.unwrap();
    println!(
        "create, new project, deposit, 5 users: {} mam-* processes",
        b.spawned() - before
    );
    let before = b.spawned();
    b.create_resource(create(1, &users)).await.unwrap();
    println!(
        "create, existing project, deposit, 5 users: {} mam-* processes",
        b.spawned() - before
    );

    for i in 2..n {
        b.create_resource(create(i, &["alice"])).await.unwrap();
    }
    for i in 0..n {
        support::mam(
            dir.path(),
            &format!("mam-charge -J j{i} -a a_r{i} -u alice -z 1.5"),
        );
    }
    let ids: Vec<String> = (0..n).map(|i| format!("a_r{i}")).collect();

    let before = b.spawned();
    let started = Instant::now();
    let report = b
        .usage_report(UsageQuery {
            backend_ids: ids.clone(),
            period: None,
            timezone: Some("UTC".into()),
        })
        .await
        .unwrap();
    println!(
        "usage report over {n} allocations: {} mam-* process, {:.2} s, {} with usage",
        b.spawned() - before,
        started.elapsed().as_secs_f64(),
        report.iter().filter(|r| !r.users.is_empty()).count()
    );

    let before = b.spawned();
    let started = Instant::now();
    let listed = b.list_resource_users(&ids).await.unwrap();
    println!(
        "membership listing of {n} allocations: {} mam-* process, {:.2} s, {} found",
        b.spawned() - before,
        started.elapsed().as_secs_f64(),
        listed.found.len()
    );
}
