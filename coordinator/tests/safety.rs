//! Nothing is lost on bad upstream data: answers a real Waldur, a proxy in
//! front of it or a broker can produce never destroy or stall work. Each
//! test reproduces one way it used to, on waldur-sim and the example backend
//! over mutual TLS.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::{Options, World};
use waldur_backend_sdk::Backend;
use waldur_coordinator::processors::orders::OrderOutcome;
use waldur_coordinator::runtime::events::handlers::{self, Handled};
use waldur_sim::Fault;

async fn members(w: &World, backend_id: &str) -> Vec<String> {
    w.backend.get_resource(backend_id).await.unwrap().users
}

fn garbage(path: &str, body: &str) -> Fault {
    Fault {
        method: "GET".into(),
        path_contains: path.into(),
        body: Some(body.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_empty_team_answer_never_empties_an_allocation() {
    let w = World::start(Options::default()).await;
    let (_, id) = w.provisioned("team").await;
    assert_eq!(members(&w, &id).await, vec!["alice", "bob"]);

    w.sim.add_fault(garbage("/team/", "[]"));
    let s = w.membership().await;
    assert_eq!(s.users_removed, 0, "{s:?}");
    assert_eq!(s.withheld.len(), 1, "{s:?}");
    assert!(
        s.withheld[0].1.contains("no team member with an account"),
        "{s:?}"
    );
    assert_eq!(members(&w, &id).await, vec!["alice", "bob"]);
}

#[tokio::test]
async fn an_empty_offering_user_list_removes_nobody() {
    let w = World::start(Options::default()).await;
    let (_, id) = w.provisioned("users").await;
    w.sim
        .add_fault(garbage("marketplace-offering-users/", "[]"));
    let s = w.membership().await;
    assert_eq!(s.users_removed, 0, "{s:?}");
    assert_eq!(members(&w, &id).await, vec!["alice", "bob"]);
}

#[tokio::test]
async fn an_operator_can_let_an_emptied_team_through_on_purpose() {
    let w = World::start(Options::default()).await;
    let (_, id) = w.provisioned("emptied").await;
    for user in ["alice", "bob"] {
        let uuid = w.scenario.users[user].clone();
        w.sim.revoke_role(&w.scenario.project_uuid, &uuid);
    }
    let s = w.membership().await;
    assert_eq!(s.users_removed, 0, "withheld without the operator: {s:?}");
    assert!(w.coordinator.run_once_with(&[], true).await);
    assert!(members(&w, &id).await.is_empty());
}

#[tokio::test]
async fn a_shrunken_offering_user_list_trips_the_breaker_and_nothing_is_removed() {
    let w = World::start(Options {
        extra_offering_config: "    safety: {max_destructive: 2, max_destructive_percent: 10}\n",
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        ids.push(w.provisioned(name).await.1);
    }
    // Waldur suddenly lists bob's offering user no more: three removals of
    // six members, over both limits.
    let bob = w.scenario.users["bob"].clone();
    let ou = w
        .sim
        .offering_user_of(&w.scenario.offering_uuid, &bob)
        .unwrap();
    w.sim.set_offering_user_restricted(&ou.uuid, true);
    let dave = w.sim.add_user("dave", "dave@example.org");
    w.sim
        .grant_role(&w.scenario.project_uuid, &dave, "PROJECT.MEMBER");
    w.sim
        .add_offering_user(&w.scenario.offering_uuid, &dave, "OK", Some("dave"));

    let s = w.membership().await;
    let trip = s.breaker.clone().expect("the breaker trips");
    assert_eq!((trip.count, trip.existing), (3, 6), "{trip:?}");
    assert!(
        trip.message.contains("run --once --allow-destructive"),
        "{trip:?}"
    );
    assert!(trip.message.contains("waldur-coordinator plan"), "{trip:?}");
    assert_eq!(s.users_removed, 0, "{s:?}");
    assert_eq!(s.users_added, 3, "constructive work goes on: {s:?}");
    for id in &ids {
        assert_eq!(members(&w, id).await, vec!["alice", "bob", "dave"]);
    }
    let membership = w.coordinator.offerings[0].membership.as_ref().unwrap();
    assert!(membership.processor.tripped().is_some());
    let (_, text) = waldur_coordinator::runtime::admin::readiness(&w.coordinator).await;
    assert!(text.contains("degraded breaker HPC"), "{text}");

    // The plan shows what is held; the operator lets one cycle through.
    let plan = membership.processor.plan().await.unwrap();
    assert!(plan.breaker.is_some());
    assert!(w.coordinator.run_once_with(&[], true).await);
    for id in &ids {
        assert_eq!(members(&w, id).await, vec!["alice", "dave"]);
    }
    let s = w.membership().await;
    assert!(s.breaker.is_none(), "{s:?}");
    assert!(membership.processor.tripped().is_none());
}

#[tokio::test]
async fn when_the_breaker_trips_resources_with_only_additions_are_synced_and_the_rest_keep_their_members()
 {
    // Pages of one resource: each page's plans are applied as it is made,
    // before the breaker has seen the whole cycle.
    let w = World::start(Options {
        extra_offering_config: "    safety: {max_destructive: 2, max_destructive_percent: 10}\n    membership: {page_size: 1}\n",
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        ids.push(w.provisioned(name).await.1);
    }
    // Two allocations gain members Waldur does not know (four removals,
    // over both limits); the third has none.
    for id in &ids[..2] {
        w.backend
            .add_users(
                id,
                vec![
                    waldur_backend_api::types::User::named("mallory"),
                    waldur_backend_api::types::User::named("trudy"),
                ],
                None,
            )
            .await
            .unwrap();
    }
    let dave = w.sim.add_user("dave", "dave@example.org");
    w.sim
        .grant_role(&w.scenario.project_uuid, &dave, "PROJECT.MEMBER");
    w.sim
        .add_offering_user(&w.scenario.offering_uuid, &dave, "OK", Some("dave"));

    let s = w.membership().await;
    let trip = s.breaker.clone().expect("the breaker trips");
    assert_eq!(trip.count, 4, "{trip:?}");
    assert_eq!(s.users_removed, 0, "{s:?}");
    assert_eq!(s.users_added, 3, "{s:?}");
    assert_eq!(s.withheld.len(), 2, "{s:?}");
    for id in &ids[..2] {
        assert_eq!(
            members(&w, id).await,
            vec!["alice", "bob", "dave", "mallory", "trudy"]
        );
    }
    assert_eq!(members(&w, &ids[2]).await, vec!["alice", "bob", "dave"]);
}

#[tokio::test]
async fn the_plan_changes_nothing() {
    let w = World::start(Options {
        settings: waldur_backend_example::ExampleSettings {
            allocation_prefix: "hpc_".into(),
            synthetic_usage: false,
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let (resource, id) = w.provisioned("planned").await;
    let dave = w.sim.add_user("dave", "dave@example.org");
    w.sim
        .grant_role(&w.scenario.project_uuid, &dave, "PROJECT.MEMBER");
    w.sim
        .add_offering_user(&w.scenario.offering_uuid, &dave, "OK", Some("dave"));
    w.sim.set_resource_flags(&resource, true, false);
    let (order, _) = w.order("Create", "executing", "", json!({}));
    w.backend.record_usage(&id, "alice", "cpu", 2.0);
    w.sim.reset_calls();

    let selected: Vec<_> = w.coordinator.offerings.iter().collect();
    let plans = waldur_coordinator::cli::plan::plan(&selected).await;
    let text = waldur_coordinator::cli::plan::render(&plans);
    assert!(text.contains("add dave"), "{text}");
    assert!(text.contains("set ACCESS_LEVEL_PAUSED"), "{text}");
    assert!(text.contains("create hpc_weather-run"), "{text}");
    assert!(text.contains("cpu=2.00"), "{text}");
    let writes: Vec<String> = w
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.method != "GET")
        .map(|c| format!("{} {}", c.method, c.route))
        .collect();
    assert!(writes.is_empty(), "the plan wrote to waldur: {writes:?}");
    assert_eq!(members(&w, &id).await, vec!["alice", "bob"]);
    assert_eq!(w.backend.resource_count(), 1);
    assert_eq!(w.sim.order_state(&order).as_deref(), Some("executing"));
    let json = serde_json::to_value(&plans).unwrap();
    assert_eq!(json[0]["membership"]["changes"][0]["add"], json!(["dave"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_cut_or_empty_answers_from_waldur_defer_orders_instead_of_erring_them() {
    let w = World::start(Options::default()).await;
    let (order, resource) = w.order("Create", "executing", "", json!({}));
    for fault in [
        // The account is created, then Waldur's answer is a proxy's page.
        Fault {
            method: "POST".into(),
            path_contains: "set_backend_id".into(),
            body: Some("<html><body>down for maintenance</body></html>".into()),
            ..Default::default()
        },
        Fault {
            method: "GET".into(),
            path_contains: "marketplace-provider-resources/".into(),
            body: Some(r#"{"uuid": "0f0f"#.into()),
            ..Default::default()
        },
        Fault {
            method: "GET".into(),
            path_contains: "/team/".into(),
            body: Some(String::new()),
            ..Default::default()
        },
    ] {
        w.sim.clear_faults();
        w.sim.add_fault(fault.clone());
        let report = w.cycle().await;
        assert!(
            matches!(report.outcomes[&order], OrderOutcome::Deferred(_)),
            "{fault:?}: {report:?}"
        );
        assert_eq!(w.sim.order_state(&order).as_deref(), Some("executing"));
    }
    w.sim.clear_faults();
    w.until_state(&order, "done").await;
    assert_eq!(w.backend.resource_count(), 1, "no second account");
    assert_eq!(
        w.sim.resource(&resource).unwrap().backend_id,
        "hpc_weather-run"
    );
}

#[tokio::test]
async fn ids_from_events_never_reach_a_url_unchecked() {
    let w = World::start(Options::default()).await;
    let o = &w.coordinator.offerings[0];
    w.sim.reset_calls();
    for (object_type, body) in [
        ("order", json!({"order_uuid": "../../../etc/passwd"})),
        ("resource", json!({"resource_uuid": "x/../../users/me"})),
        (
            "user_role",
            json!({"project_uuid": "%2e%2e%2f", "granted": true}),
        ),
        (
            "importable_resources",
            json!({"backend_resource_request_uuid": "../backend-resources"}),
        ),
    ] {
        let handled = handlers::handle(o, object_type, body.to_string().as_bytes()).await;
        assert!(matches!(handled, Handled::Invalid(_)), "{handled:?}");
    }
    assert_eq!(w.sim.call_count(), 0, "{:?}", w.sim.calls());
}

#[tokio::test]
async fn usage_is_never_written_as_zero_to_a_period_without_a_record() {
    let w = World::start(Options {
        settings: waldur_backend_example::ExampleSettings {
            allocation_prefix: "hpc_".into(),
            synthetic_usage: false,
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let (resource, id) = w.provisioned("idle").await;
    let s = w.report().await;
    assert_eq!(s.totals_written, 0, "{s:?}");
    assert!(w.sim.component_usages(&resource).is_empty());

    // Usage of the current month is written; the empty past month is not.
    w.backend.record_usage(&id, "alice", "cpu", 1.5);
    let s = w.report().await;
    assert_eq!(s.totals_written, 1, "{s:?}");
    let writes: Vec<_> = w
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.route.ends_with("set_usage/"))
        .collect();
    assert_eq!(writes.len(), 1, "only the current month: {writes:?}");
}
