//! HTTP requests per operation of the MUP backend, on `mup-sim` served in
//! process over real HTTP (the counts are the backend's; the simulator's
//! speed says nothing about a real portal): creates with 5 users under a
//! new and an existing project, a repeated create, a limit change, and a
//! membership listing and a usage report over many resources, ten per
//! project.
//!
//! `cargo bench -p waldur-backend-mup --bench portal -- [RESOURCES]`

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use waldur_backend_sdk::Backend;
use waldur_backend_sdk::types::*;

fn users() -> Vec<User> {
    let mut users = vec![support::alice(), support::bob()];
    for i in 3..=5 {
        users.push(User {
            username: format!("user{i}"),
            email: format!("user{i}@uni.example"),
            full_name: format!("User Number{i}"),
            role: "PROJECT.MEMBER".into(),
            ..User::default()
        });
    }
    users
}

fn request(p: &support::Portal, i: u32, users: Vec<User>) -> CreateResource {
    let mut r = support::resource(i + 1);
    r.project_name = format!("Call / GRANT-{} / Project {}", i / 10, i / 10);
    CreateResource {
        backend_id: p.backend.generate_backend_id("", Some(&r)).unwrap(),
        resource: r,
        limits: Limits::from([("cpu".into(), 5), ("gpu".into(), 2)]),
        users,
        ..CreateResource::default()
    }
}

async fn counted<T>(p: &support::Portal, what: &str, f: impl std::future::Future<Output = T>) -> T {
    let before = p.backend.calls();
    let started = Instant::now();
    let out = f.await;
    println!(
        "{what}: {} requests, {:.3} s",
        p.backend.calls() - before,
        started.elapsed().as_secs_f64()
    );
    out
}

#[tokio::main]
async fn main() {
    let n: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let p = support::portal(serde_json::json!({"cache_seconds": 3600})).await;

    let first = request(&p, 0, users());
    counted(
        &p,
        "create, new project, 2 components, 5 new users",
        p.backend.create_resource(first.clone()),
    )
    .await
    .unwrap();
    counted(
        &p,
        "create, existing project, 2 components, 5 members already",
        p.backend.create_resource(request(&p, 1, users())),
    )
    .await
    .unwrap();
    counted(
        &p,
        "the same create repeated",
        p.backend.create_resource(first.clone()),
    )
    .await
    .unwrap();
    counted(
        &p,
        "limit change of one component",
        p.backend
            .set_resource_limits(&first.backend_id, Limits::from([("cpu".into(), 9)]), None),
    )
    .await
    .unwrap();

    let mut ids = vec![first.backend_id.clone()];
    for i in 1..n {
        let r = request(&p, i, vec![support::alice()]);
        ids.push(r.backend_id.clone());
        p.backend.create_resource(r).await.unwrap();
    }
    for id in &ids {
        p.sim.set_usage(id, [("alice", 1500.0)], None).unwrap();
    }
    let listed = counted(
        &p,
        &format!(
            "membership listing of {n} resources in {} projects",
            n.div_ceil(10)
        ),
        p.backend.list_resource_users(&ids),
    )
    .await
    .unwrap();
    assert_eq!(listed.found.len(), ids.len());
    let report = counted(
        &p,
        &format!("usage report over {n} resources (2 allocations each)"),
        p.backend.usage_report(UsageQuery {
            backend_ids: ids.clone(),
            period: None,
            timezone: None,
        }),
    )
    .await
    .unwrap();
    assert_eq!(report.len(), ids.len());
}
