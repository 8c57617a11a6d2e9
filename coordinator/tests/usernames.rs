//! Offering users through the username state machine: waldur-sim, the
//! example backend's username RPCs over mutual TLS, and the built-in
//! generator.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::{Options, World};

const CAN_CREATE: &str = "service_provider_can_create_offering_user";

/// A user with a Requested offering user; returns the offering user uuid.
fn requested(w: &World, username: &str, email: &str) -> String {
    let user = w.sim.add_user(username, email);
    w.sim
        .grant_role(&w.scenario.project_uuid, &user, "PROJECT.MEMBER");
    w.sim
        .add_offering_user(&w.scenario.offering_uuid, &user, "Requested", None)
}

fn allow(w: &World) {
    w.sim
        .set_plugin_options(&w.scenario.offering_uuid, json!({CAN_CREATE: true}));
}

/// State-changing offering-user calls since the last reset.
fn transitions(w: &World) -> Vec<String> {
    w.sim
        .calls()
        .into_iter()
        .filter(|c| c.route.starts_with("marketplace-offering-users/{uuid}/"))
        .filter(|c| c.method != "GET")
        .map(|c| format!("{} {}", c.method, c.route))
        .collect()
}

#[tokio::test]
async fn a_requested_user_moves_through_creating_to_ok_with_the_backends_name() {
    let w = World::start(Options::default()).await;
    allow(&w);
    let ou = requested(&w, "erin", "erin@example.org");
    w.sim.reset_calls();
    let s = w.membership().await;
    assert_eq!(s.usernames.assigned, 1, "{:?}", s.usernames);
    let user = w.sim.offering_user(&ou).unwrap();
    assert_eq!(user.state, "OK");
    assert_eq!(user.username.as_deref(), Some("erin"));
    assert_eq!(
        transitions(&w),
        vec![
            "POST marketplace-offering-users/{uuid}/begin_creating/",
            "PATCH marketplace-offering-users/{uuid}/",
        ]
    );
}

#[tokio::test]
async fn a_named_user_in_the_team_is_added_to_resources_in_the_same_cycle() {
    let w = World::start(Options::default()).await;
    let (_, id) = w.provisioned("fresh team").await;
    allow(&w);
    requested(&w, "erin", "erin@example.org");
    w.membership().await;
    let info = waldur_backend_sdk::Backend::get_resource(&w.backend, &id)
        .await
        .unwrap();
    assert!(info.users.contains(&"erin".to_owned()), "{:?}", info.users);
}

#[tokio::test]
async fn account_linking_required_moves_the_user_to_pending_with_comment_and_url() {
    let w = World::start(Options::default()).await;
    allow(&w);
    let ou = requested(&w, "frank", "frank@link.required");
    let s = w.membership().await;
    assert_eq!(s.usernames.pending, 1);
    let user = w.sim.offering_user(&ou).unwrap();
    assert_eq!(user.state, "Pending account linking");
    assert_eq!(
        user.service_provider_comment,
        "link your existing cluster account first"
    );
    assert_eq!(
        user.service_provider_comment_url,
        "https://idm.example.invalid/link"
    );
    // The next cycle does not repeat the transition.
    w.sim.reset_calls();
    let s = w.membership().await;
    assert_eq!(s.usernames.pending, 0);
    assert!(
        !w.sim
            .calls()
            .iter()
            .any(|c| c.route.ends_with("set_pending_account_linking/"))
    );
}

#[tokio::test]
async fn additional_validation_required_moves_the_user_to_pending_with_comment_and_url() {
    let w = World::start(Options::default()).await;
    allow(&w);
    let ou = requested(&w, "grace", "grace@validation.required");
    w.membership().await;
    let user = w.sim.offering_user(&ou).unwrap();
    assert_eq!(user.state, "Pending additional validation");
    assert_eq!(
        user.service_provider_comment,
        "your affiliation needs to be validated"
    );
    assert_eq!(
        user.service_provider_comment_url,
        "https://idm.example.invalid/validate"
    );
}

#[tokio::test]
async fn a_pending_user_is_completed_once_the_backend_can_name_them() {
    let w = World::start(Options::default()).await;
    allow(&w);
    let user = w.sim.add_user("heidi", "heidi@example.org");
    let ou = w.sim.add_offering_user(
        &w.scenario.offering_uuid,
        &user,
        "Pending account linking",
        None,
    );
    w.membership().await;
    let u = w.sim.offering_user(&ou).unwrap();
    assert_eq!(u.state, "OK");
    assert_eq!(u.username.as_deref(), Some("heidi"));
}

#[tokio::test]
async fn without_the_plugin_option_users_wait_in_requested() {
    let w = World::start(Options::default()).await;
    let ou = requested(&w, "ivan", "ivan@example.org");
    let s = w.membership().await;
    assert!(
        s.usernames
            .skipped
            .as_deref()
            .is_some_and(|why| why.contains(CAN_CREATE)),
        "{:?}",
        s.usernames
    );
    assert_eq!(w.sim.offering_user(&ou).unwrap().state, "Requested");
}

#[tokio::test]
async fn a_backend_source_whose_backend_makes_no_usernames_is_a_config_error_said_by_check_and_cycles()
 {
    let w = World::start(Options {
        settings: waldur_backend_example::ExampleSettings {
            allocation_prefix: "hpc_".into(),
            usernames: false,
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    allow(&w);
    let ou = requested(&w, "judy", "judy@example.org");
    let m = &w.coordinator.offerings[0]
        .membership
        .as_ref()
        .unwrap()
        .processor;
    let why = m.usernames().misconfigured().await.expect("a config error");
    assert!(
        why.contains("usernames.source") && why.contains("does not make usernames"),
        "{why}"
    );
    let s = w.membership().await;
    assert_eq!(s.usernames.skipped.as_deref(), Some(why.as_str()));
    assert_eq!(w.sim.offering_user(&ou).unwrap().state, "Requested");

    // The built-in generator needs nothing from the backend.
    let w = World::start(Options {
        settings: waldur_backend_example::ExampleSettings {
            allocation_prefix: "hpc_".into(),
            usernames: false,
            ..Default::default()
        },
        extra_offering_config: "    usernames: {source: waldur_username}",
        ..Options::default()
    })
    .await;
    let m = &w.coordinator.offerings[0]
        .membership
        .as_ref()
        .unwrap()
        .processor;
    assert_eq!(m.usernames().misconfigured().await, None);
}

#[tokio::test]
async fn the_builtin_generator_names_users_from_their_waldur_username() {
    let w = World::start(Options {
        extra_offering_config: "    usernames: {source: waldur_username, prefix: hpc_}",
        ..Options::default()
    })
    .await;
    allow(&w);
    let first = requested(&w, "Ann.Lee@uni-a.example", "ann@uni-a.example");
    let second = requested(&w, "ann.lee@uni-b.example", "ann@uni-b.example");
    let broken = requested(&w, "@@@", "odd@example.org");
    let s = w.membership().await;
    assert_eq!(s.usernames.assigned, 2, "{:?}", s.usernames);
    assert_eq!(s.usernames.failed, 1, "{:?}", s.usernames);
    let mut names = vec![
        w.sim.offering_user(&first).unwrap().username.unwrap(),
        w.sim.offering_user(&second).unwrap().username.unwrap(),
    ];
    names.sort();
    assert_eq!(names, vec!["hpc_ann_lee", "hpc_ann_lee1"]);
    assert_eq!(
        w.sim.offering_user(&broken).unwrap().state,
        "Error creating"
    );
    // Error creating is retried: begin_creating again, failing again.
    let s = w.membership().await;
    assert_eq!(s.usernames.failed, 1);
}
