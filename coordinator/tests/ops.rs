//! Operator commands against waldur-sim and the example backend.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use support::{Options, World};
use waldur_backend_example::{ComponentSettings, ExampleSettings};
use waldur_coordinator::cli::ops;

fn selected(w: &World) -> Vec<&waldur_coordinator::runtime::OfferingRuntime> {
    ops::select(&w.coordinator, &[]).unwrap()
}

#[tokio::test]
async fn load_components_updates_existing_and_creates_missing_components() {
    let settings = ExampleSettings {
        components: Some(vec![
            ComponentSettings {
                key: "cpu".into(),
                label: "CPU core-hours".into(),
                measured_unit: "core-h".into(),
                accounting_type: "usage".into(),
                unit_factor: 60.0,
                limit: Some(1000),
            },
            ComponentSettings {
                key: "gpu".into(),
                label: "GPU hours".into(),
                measured_unit: "gpu-h".into(),
                accounting_type: "usage".into(),
                unit_factor: 60.0,
                limit: None,
            },
        ]),
        ..ExampleSettings::default()
    };
    let w = World::start(Options {
        settings,
        ..Options::default()
    })
    .await;
    assert!(ops::load_components(&w.coordinator, &selected(&w)).await);
    let offering = w.sim.world().offerings[&w.scenario.offering_uuid].clone();
    let by_type: BTreeMap<String, serde_json::Value> = offering
        .components
        .iter()
        .map(|c| (c["type"].as_str().unwrap().to_owned(), c.clone()))
        .collect();
    assert_eq!(by_type["cpu"]["name"], "CPU core-hours");
    assert_eq!(by_type["cpu"]["measured_unit"], "core-h");
    assert_eq!(by_type["gpu"]["billing_type"], "usage");
    assert!(by_type.contains_key("storage"), "nothing is deleted");
    // Idempotent: a second run updates, it does not duplicate.
    assert!(ops::load_components(&w.coordinator, &selected(&w)).await);
    let count = w.sim.world().offerings[&w.scenario.offering_uuid]
        .components
        .len();
    assert_eq!(count, 4);
}

#[tokio::test]
async fn diagnostics_pass_on_a_healthy_offering_and_fail_on_a_wrong_token() {
    let w = World::start(Options::default()).await;
    w.provisioned("diag").await;
    assert!(ops::diagnostics(&w.coordinator, &selected(&w)).await);
    w.sim.add_fault(waldur_sim::Fault {
        path_contains: "/users/me".into(),
        status: Some(401),
        ..Default::default()
    });
    assert!(!ops::diagnostics(&w.coordinator, &selected(&w)).await);
}

#[tokio::test]
async fn sync_resource_limits_writes_the_backends_limits_to_waldur() {
    let w = World::start(Options::default()).await;
    let (resource, _) = w.provisioned("limits").await;
    let before = w.sim.resource(&resource).unwrap().limits;
    w.sim.world().resources.values_mut().for_each(|r| {
        if r.uuid == resource {
            r.limits = BTreeMap::from([("cpu".into(), 1)]);
        }
    });
    assert!(ops::sync_resource_limits(&w.coordinator, &selected(&w)).await);
    assert_eq!(w.sim.resource(&resource).unwrap().limits, before);
}

#[tokio::test]
async fn create_homedirs_and_sync_offering_users_succeed() {
    let w = World::start(Options::default()).await;
    assert!(ops::create_homedirs(&w.coordinator, &selected(&w)).await);
    assert!(ops::sync_offering_users(&w.coordinator, &selected(&w)).await);
}

#[tokio::test]
async fn an_unknown_offering_name_is_an_error_listing_the_known_ones() {
    let w = World::start(Options::default()).await;
    let e = ops::select(&w.coordinator, &["nope".into()]).err().unwrap();
    assert!(e.contains("\"HPC\""), "{e}");
}
