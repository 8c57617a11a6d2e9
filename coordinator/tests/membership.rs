//! Membership sync end to end: waldur-sim, the example backend over mutual
//! TLS, the coordinator's membership task.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use support::{Options, World};
use waldur_backend_proto::v1::AccessLevel;
use waldur_backend_sdk::Backend;
use waldur_sim::Fault;

async fn members(w: &World, backend_id: &str) -> Vec<String> {
    w.backend.get_resource(backend_id).await.unwrap().users
}

async fn access(w: &World, backend_id: &str) -> Option<AccessLevel> {
    w.backend.get_resource(backend_id).await.unwrap().access
}

/// Adds a project member with an OK offering user; returns the user uuid.
fn join(w: &World, username: &str) -> String {
    let user = w.sim.add_user(username, &format!("{username}@example.org"));
    w.sim
        .grant_role(&w.scenario.project_uuid, &user, "PROJECT.MEMBER");
    w.sim
        .add_offering_user(&w.scenario.offering_uuid, &user, "OK", Some(username));
    user
}

#[tokio::test]
async fn a_member_added_in_waldur_joins_the_resource_and_a_removed_one_leaves() {
    let w = World::start(Options::default()).await;
    let (_, id) = w.provisioned("team").await;
    assert_eq!(members(&w, &id).await, vec!["alice", "bob"]);

    join(&w, "dave");
    let s = w.membership().await;
    assert_eq!(s.users_added, 1, "{s:?}");
    assert_eq!(members(&w, &id).await, vec!["alice", "bob", "dave"]);

    let bob = w.scenario.users["bob"].clone();
    w.sim.revoke_role(&w.scenario.project_uuid, &bob);
    let s = w.membership().await;
    assert_eq!(s.users_removed, 1, "{s:?}");
    assert_eq!(members(&w, &id).await, vec!["alice", "dave"]);
}

#[tokio::test]
async fn a_members_missing_home_directory_is_made_again_by_the_next_cycle() {
    let w = World::start(Options::default()).await;
    w.provisioned("homes").await;
    assert!(w.backend.has_home_directory("alice") && w.backend.has_home_directory("bob"));
    let s = w.membership().await;
    assert_eq!(s.homedirs_created, 0, "{s:?}");

    // Gone (removed by hand, or its creation failed when bob was added).
    assert!(w.backend.forget_home_directory("bob"));
    let s = w.membership().await;
    assert_eq!(s.homedirs_created, 1, "{s:?}");
    assert!(w.backend.has_home_directory("bob"));
    let s = w.membership().await;
    assert_eq!(s.homedirs_created, 0, "{s:?}");
}

#[tokio::test]
async fn a_steady_state_cycle_changes_nothing_and_costs_two_waldur_calls_per_resource() {
    let w = World::start(Options::default()).await;
    let (_, id) = w.provisioned("steady").await;
    w.membership().await;
    w.sim.reset_calls();
    let s = w.membership().await;
    assert_eq!(s.backend_changes(), 0, "{s:?}");
    assert_eq!(s.metadata_pushed + s.limits_pushed, 0, "{s:?}");
    let per_resource: Vec<String> = w
        .sim
        .calls()
        .into_iter()
        .filter(|c| {
            c.route
                .starts_with("marketplace-provider-resources/{uuid}/")
        })
        .map(|c| format!("{} {}", c.method, c.route))
        .collect();
    assert_eq!(
        per_resource,
        vec![
            "GET marketplace-provider-resources/{uuid}/team/",
            "POST marketplace-provider-resources/{uuid}/refresh_last_sync/"
        ]
    );
    assert_eq!(members(&w, &id).await, vec!["alice", "bob"]);
}

#[tokio::test]
async fn a_paused_resource_is_paused_and_restored_when_waldur_lifts_it() {
    let w = World::start(Options::default()).await;
    let (resource, id) = w.provisioned("pausable").await;
    w.sim.set_resource_flags(&resource, true, false);
    let s = w.membership().await;
    assert_eq!(s.access_changed, 1);
    assert_eq!(access(&w, &id).await, Some(AccessLevel::Paused));
    let md = w.sim.resource(&resource).unwrap().backend_metadata;
    assert_eq!(md["access"], "ACCESS_LEVEL_PAUSED", "{md}");

    w.sim.set_resource_flags(&resource, false, true);
    w.membership().await;
    assert_eq!(access(&w, &id).await, Some(AccessLevel::Downscaled));

    w.sim.set_resource_flags(&resource, false, false);
    w.membership().await;
    assert_eq!(access(&w, &id).await, Some(AccessLevel::Full));
    let md = w.sim.resource(&resource).unwrap().backend_metadata;
    assert_eq!(md["access"], "ACCESS_LEVEL_FULL");
}

#[tokio::test]
async fn restricted_member_access_removes_every_member() {
    let w = World::start(Options::default()).await;
    let (resource, id) = w.provisioned("locked").await;
    w.sim.set_restrict_member_access(&resource, true);
    let s = w.membership().await;
    assert_eq!(s.users_removed, 2);
    assert!(members(&w, &id).await.is_empty());
}

#[tokio::test]
async fn backend_limits_are_written_back_to_waldur_when_they_differ() {
    let w = World::start(Options::default()).await;
    let (resource, _) = w.provisioned("limits").await;
    let before = w.sim.resource(&resource).unwrap().limits;
    w.sim.world().resources.values_mut().for_each(|r| {
        if r.uuid == resource {
            r.limits = BTreeMap::from([("cpu".into(), 999)]);
        }
    });
    let s = w.membership().await;
    assert_eq!(s.limits_pushed, 1);
    assert_eq!(w.sim.resource(&resource).unwrap().limits, before);
}

#[tokio::test]
async fn per_user_limits_follow_waldur() {
    let w = World::start(Options::default()).await;
    let (resource, id) = w.provisioned("per-user").await;
    w.sim.set_user_limit(&resource, "alice", "cpu", 3.0);
    let s = w.membership().await;
    assert_eq!(s.user_limits_set, 1, "{s:?}");
    let limits = w.backend.get_user_limits(&id).await.unwrap();
    assert_eq!(limits["alice"], BTreeMap::from([("cpu".to_owned(), 3)]));

    let s = w.membership().await;
    assert_eq!(s.user_limits_set, 0, "unchanged limits are not set again");

    w.sim.clear_user_limits(&resource);
    w.membership().await;
    let limits = w.backend.get_user_limits(&id).await.unwrap();
    assert!(
        limits.get("alice").is_none_or(|l| l.is_empty()),
        "{limits:?}"
    );
}

#[tokio::test]
async fn service_accounts_of_the_project_join_and_closed_ones_leave() {
    let w = World::start(Options::default()).await;
    let (_, id) = w.provisioned("svc").await;
    let account = w
        .sim
        .add_service_account(&w.scenario.project_uuid, "svc_ci", "OK");
    w.membership().await;
    assert!(members(&w, &id).await.contains(&"svc_ci".to_owned()));
    w.sim.set_account_state(&account, "Closed");
    w.membership().await;
    assert!(!members(&w, &id).await.contains(&"svc_ci".to_owned()));
}

#[tokio::test]
async fn an_erred_resource_is_set_ok_after_a_good_sync() {
    let w = World::start(Options::default()).await;
    let (resource, _) = w.provisioned("recovering").await;
    w.sim.set_resource_state(&resource, "Erred");
    let s = w.membership().await;
    assert_eq!(s.recovered, 1);
    let r = w.sim.resource(&resource).unwrap();
    assert_eq!(r.state, "OK");
    assert!(r.last_sync.is_some());
}

#[tokio::test]
async fn a_failed_sync_marks_the_resource_erred_with_the_error() {
    let w = World::start(Options::default()).await;
    let (resource, _) = w.provisioned("failing").await;
    w.sim.world().resources.values_mut().for_each(|r| {
        if r.uuid == resource {
            r.limits = BTreeMap::from([("cpu".into(), 1)]);
        }
    });
    w.sim.add_fault(Fault {
        method: "POST".into(),
        path_contains: "/set_limits/".into(),
        status: Some(400),
        ..Fault::default()
    });
    let s = w.membership().await;
    assert_eq!(s.erred.len(), 1, "{s:?}");
    let r = w.sim.resource(&resource).unwrap();
    assert_eq!(r.state, "Erred");
    assert!(r.error_message.contains("HTTP 400"), "{}", r.error_message);
}

#[tokio::test]
async fn a_resource_missing_on_the_backend_is_reported_and_left_alone() {
    let w = World::start(Options::default()).await;
    let (resource, id) = w.provisioned("vanishing").await;
    w.backend
        .delete_resource(waldur_backend_sdk::types::DeleteResource {
            backend_id: id.clone(),
            mode: waldur_backend_sdk::types::DeletionMode::Hard,
            resource: None,
        })
        .await
        .unwrap();
    let s = w.membership().await;
    assert_eq!(s.missing_on_backend, vec![id]);
    assert_eq!(w.sim.resource(&resource).unwrap().state, "OK");
}

#[tokio::test]
async fn membership_statuses_are_reported_when_the_offering_asks_and_only_on_change() {
    let w = World::start(Options::default()).await;
    w.sim.set_plugin_options(
        &w.scenario.offering_uuid,
        serde_json::json!({"enable_membership_sync_status": true}),
    );
    let (resource, _) = w.provisioned("statuses").await;
    w.membership().await;
    let stored = w.sim.world().membership_statuses.get(&resource).cloned();
    let stored = stored.unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|s| s["state"] == "synced"));
    w.sim.reset_calls();
    w.membership().await;
    assert!(
        !w.sim
            .calls()
            .iter()
            .any(|c| c.route.ends_with("set_membership_sync_statuses/"))
    );
}

/// The final members of each resource and the sync's counts, for random
/// teams and backend members, with or without the backend's bulk read.
async fn sync_outcome(
    bulk_reads: bool,
    team: &[bool],
    on_backend: &[Vec<bool>],
) -> (Vec<Vec<String>>, usize, usize) {
    const POOL: [&str; 6] = ["ann", "ben", "cat", "dan", "eve", "zed"];
    let w = World::start(Options {
        settings: waldur_backend_example::ExampleSettings {
            bulk_reads,
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for r in 0..on_backend.len() {
        ids.push(w.provisioned(&format!("prop{r}")).await.1);
    }
    // "zed" (the last) never has an account in Waldur.
    for (name, _) in POOL.iter().zip(team).filter(|(_, on)| **on) {
        join(&w, name);
    }
    for (id, chosen) in ids.iter().zip(on_backend) {
        let current = w.backend.get_resource(id).await.unwrap().users;
        w.backend.remove_users(id, current).await.unwrap();
        let users: Vec<waldur_backend_sdk::types::User> = POOL
            .iter()
            .zip(chosen)
            .filter(|(_, on)| **on)
            .map(|(n, _)| waldur_backend_sdk::types::User::named(*n))
            .collect();
        if !users.is_empty() {
            w.backend.add_users(id, users, None).await.unwrap();
        }
    }
    let s = w.membership().await;
    let mut after = Vec::new();
    for id in &ids {
        after.push(members(&w, id).await);
    }
    (after, s.users_added, s.users_removed)
}

#[test]
fn membership_from_the_bulk_read_makes_the_same_changes_as_reading_each_resource() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 8,
        ..ProptestConfig::default()
    });
    let strategy = (
        proptest::collection::vec(any::<bool>(), 5),
        proptest::collection::vec(proptest::collection::vec(any::<bool>(), 6), 1..4),
    );
    runner
        .run(&strategy, |(team, members)| {
            let bulk = rt.block_on(sync_outcome(true, &team, &members));
            let each = rt.block_on(sync_outcome(false, &team, &members));
            prop_assert_eq!(bulk, each);
            Ok(())
        })
        .unwrap();
}
