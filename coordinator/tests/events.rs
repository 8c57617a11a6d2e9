//! Event processing end to end on the real RabbitMQ (Web-STOMP on
//! 127.0.0.1:15674, started by `deploy/services.sh`): waldur-sim publishes
//! events as Waldur does, the coordinator consumes them over STOMP with
//! polling set to an hour, the example backend runs behind mutual TLS.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Options, World, until};
use waldur_backend_proto::v1::AccessLevel;
use waldur_backend_sdk::Backend;
use waldur_coordinator::runtime::Coordinator;
use waldur_coordinator::runtime::events::consumers::object_types;
use waldur_sim::events::Broker;
use waldur_stomp::client::ConsumerState;

pub const EVENT_CONFIG: &str = "    intervals: {orders_seconds: 3600, membership_seconds: 3600, report_seconds: 3600}\n    events: {stomp_url: 'ws://127.0.0.1:15674/ws', heartbeat_seconds: 2, max_backoff_seconds: 2}";

async fn world() -> World {
    let w = World::start(Options {
        tasks: "{orders: true, report: false, membership: true, events: true}",
        extra_offering_config: EVENT_CONFIG,
        ..Options::default()
    })
    .await;
    w.sim.enable_events(Broker::default());
    w
}

/// The consumer state of one object type.
fn consumer(c: &Arc<Coordinator>, object_type: &str) -> ConsumerState {
    c.offerings[0]
        .consumers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(t, _)| *t == object_type)
        .map(|(_, s)| s.clone())
        .unwrap()
}

/// Waits until every consumer is connected and the initial polling pass
/// has listed the orders, so later work can only come through events.
async fn ready(w: &World, c: &Arc<Coordinator>) {
    let expected = object_types(&c.offerings[0]).await.len();
    until("consumers connected", Duration::from_secs(30), || {
        let consumers = c.offerings[0]
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        consumers.len() == expected && consumers.iter().all(|(_, s)| s.connected())
    })
    .await;
    until("the initial pass", Duration::from_secs(30), || {
        w.sim
            .calls()
            .iter()
            .any(|c| c.route == "marketplace-orders/")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_created_in_waldur_reaches_done_through_the_event_path() {
    let w = world().await;
    let (c, run) = w.spawn_running();
    ready(&w, &c).await;
    let started = Instant::now();
    let (order, resource) = w.order("Create", "pending-provider", "", json!({}));
    until("the order done", Duration::from_secs(20), || {
        w.sim.order_state(&order).as_deref() == Some("done")
    })
    .await;
    println!("event to done: {:?}", started.elapsed());
    assert!(!w.sim.resource(&resource).unwrap().backend_id.is_empty());
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_pauses_in_waldur_reach_the_backend_through_events() {
    let w = world().await;
    let (resource, id) = w.provisioned("event team").await;
    let (c, run) = w.spawn_running();
    ready(&w, &c).await;

    let dave = w.sim.add_user("dave", "dave@example.org");
    w.sim
        .add_offering_user(&w.scenario.offering_uuid, &dave, "OK", Some("dave"));
    w.sim
        .grant_role(&w.scenario.project_uuid, &dave, "PROJECT.MEMBER");
    let members = || async { w.backend.get_resource(&id).await.unwrap().users };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !members().await.contains(&"dave".to_owned()) {
        assert!(Instant::now() < deadline, "dave never added");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    w.sim.revoke_role(&w.scenario.project_uuid, &dave);
    while members().await.contains(&"dave".to_owned()) {
        assert!(Instant::now() < deadline, "dave never removed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    w.sim.set_resource_flags(&resource, true, false);
    while w.backend.get_resource(&id).await.unwrap().access != Some(AccessLevel::Paused) {
        assert!(Instant::now() < deadline, "never paused");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_messages_are_acknowledged_and_the_next_good_one_is_processed() {
    let w = world().await;
    let (c, run) = w.spawn_running();
    ready(&w, &c).await;
    let offering = w.scenario.offering_uuid.clone();
    w.sim.emit_raw("order", &offering, json!("{not json"));
    w.sim.emit_raw("order", &offering, json!("[1, 2, 3]"));
    w.sim
        .emit_raw("order", &offering, json!({"order_state": "executing"}));
    w.sim
        .emit_raw("order", &offering, json!({"order_uuid": 42}));
    w.sim
        .emit_raw("order", &offering, json!("x".repeat(1 << 20)));
    w.sim.emit_raw(
        "resource",
        &offering,
        json!({"resource_uuid": "00000000000000000000000000000bad"}),
    );
    let (order, _) = w.order("Create", "pending-provider", "", json!({}));
    until("the good order done", Duration::from_secs(30), || {
        w.sim.order_state(&order).as_deref() == Some("done")
    })
    .await;
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_message_changes_nothing() {
    let w = world().await;
    let (c, run) = w.spawn_running();
    ready(&w, &c).await;
    let (order, _) = w.order("Create", "pending-provider", "", json!({}));
    until("the order done", Duration::from_secs(20), || {
        w.sim.order_state(&order).as_deref() == Some("done")
    })
    .await;
    let resources = w.backend.resource_count();
    w.sim.reset_calls();
    let offering = w.scenario.offering_uuid.clone();
    // Counted by the consumer, not by Waldur reads: a polling cycle may read
    // the order too, and two messages for one order may share a read.
    let orders = consumer(&c, "order");
    let handled = orders.acked();
    for _ in 0..2 {
        w.sim.emit_raw(
            "order",
            &offering,
            json!({"order_uuid": order, "order_state": "executing"}),
        );
    }
    until("both duplicates handled", Duration::from_secs(30), || {
        orders.acked() >= handled + 2
    })
    .await;
    assert_eq!(w.backend.resource_count(), resources);
    assert_eq!(w.sim.order_state(&order).as_deref(), Some("done"));
    assert!(
        !w.sim
            .calls()
            .iter()
            .any(|c| c.method == "POST" && c.route.starts_with("marketplace-orders/"))
    );
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_being_handled_when_the_coordinator_dies_is_processed_after_restart() {
    let w = world().await;
    let (c, run) = w.spawn_running();
    ready(&w, &c).await;
    // Waldur answers the order read slowly: the handler is mid-way when the
    // coordinator is killed.
    w.sim.add_fault(waldur_sim::Fault {
        method: "GET".into(),
        path_contains: "/marketplace-orders/".into(),
        latency_ms: 4_000,
        ..Default::default()
    });
    let (order, _) = w.order("Create", "pending-provider", "", json!({}));
    let orders = consumer(&c, "order");
    until(
        "the handler reading the order",
        Duration::from_secs(20),
        || orders.received() >= 1 && orders.acked() == 0,
    )
    .await;
    run.abort();
    let _ = run.await;
    w.sim.clear_faults();
    assert_eq!(
        w.sim.order_state(&order).as_deref(),
        Some("pending-provider")
    );

    let (c, run) = w.spawn_running();
    let expected = object_types(&c.offerings[0]).await.len();
    until("consumers after restart", Duration::from_secs(30), || {
        c.offerings[0]
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
            == expected
    })
    .await;
    let orders = consumer(&c, "order");
    until(
        "the unacknowledged message redelivered",
        Duration::from_secs(30),
        || orders.received() >= 1,
    )
    .await;
    until(
        "the order done after restart",
        Duration::from_secs(30),
        || w.sim.order_state(&order).as_deref() == Some("done"),
    )
    .await;
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_event_was_lost_is_settled_by_the_reconciliation_sweep() {
    let w = World::start(Options {
        tasks: "{orders: true, report: false, membership: true, events: true}",
        extra_offering_config: "    intervals: {orders_seconds: 3600, membership_seconds: 3600, report_seconds: 3600}\n    events: {stomp_url: 'ws://127.0.0.1:15674/ws', heartbeat_seconds: 2, max_backoff_seconds: 2, reconcile_seconds: 1, stuck_after_seconds: 0}",
        ..Options::default()
    })
    .await;
    w.sim.enable_events(Broker::default());
    let (c, run) = w.spawn_running();
    ready(&w, &c).await;
    // Waldur publishes nothing from now on: only the sweep can settle it.
    w.sim.world().events_on = false;
    let (order, _) = w.order("Create", "pending-provider", "", json!({}));
    until(
        "the sweep settling the order",
        Duration::from_secs(30),
        || w.sim.order_state(&order).as_deref() == Some("done"),
    )
    .await;
    assert_eq!(consumer(&c, "order").received(), 0, "no event carried it");
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_request_offers_backend_resources_waldur_lacks() {
    let w = World::start(Options {
        tasks: "{orders: true, report: false, membership: true, events: true}",
        extra_offering_config: "    intervals: {orders_seconds: 3600, membership_seconds: 3600, report_seconds: 3600}\n    events: {stomp_url: 'ws://127.0.0.1:15674/ws', heartbeat_seconds: 2, max_backoff_seconds: 2}\n    resource_import: {enabled: true}",
        ..Options::default()
    })
    .await;
    w.sim.enable_events(Broker::default());
    let (known, _) = w.provisioned("already known").await;
    // An allocation made on the cluster by hand, under the project's account.
    w.backend
        .create_resource(waldur_backend_sdk::types::CreateResource {
            backend_id: "hpc_legacy".into(),
            resource: waldur_backend_sdk::types::ResourceContext {
                resource_uuid: "00000000000000000000000000001e9a".into(),
                name: "legacy".into(),
                project_slug: "climate-modelling".into(),
                ..Default::default()
            },
            limits: [("cpu".to_owned(), 3)].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (c, run) = w.spawn_running();
    ready(&w, &c).await;
    let request = w.sim.request_import(&w.scenario.offering_uuid);
    until("the import request done", Duration::from_secs(20), || {
        w.sim.world().import_requests[&request]["state"] == "Done"
    })
    .await;
    let offered: Vec<serde_json::Value> =
        w.sim.world().backend_resources.values().cloned().collect();
    assert_eq!(offered.len(), 1, "{offered:?}");
    assert_eq!(offered[0]["backend_id"], "hpc_legacy");
    assert_eq!(offered[0]["project_uuid"], w.scenario.project_uuid);
    assert_eq!(offered[0]["backend_metadata"]["limits"]["cpu"], 3);
    assert!(w.sim.resource(&known).is_some());
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_settings_are_applied_and_the_result_reported_to_the_policy() {
    let w = world().await;
    let (resource, id) = w.provisioned("periodic").await;
    let (c, run) = w.spawn_running();
    ready(&w, &c).await;
    let offering = w.scenario.offering_uuid.clone();
    w.sim.emit_raw(
        "resource_periodic_limits",
        &offering,
        json!({"resource_uuid": resource, "backend_id": id, "policy_uuid": "0000000000000000000000000000901c",
               "action": "apply_periodic_settings", "settings": {"fairshare": 500}, "qos_threshold": 1}),
    );
    w.sim.emit_raw(
        "resource_periodic_limits",
        &offering,
        json!({"resource_uuid": resource, "policy_uuid": "0000000000000000000000000000901c", "action": "apply_periodic_settings"}),
    );
    until("both results reported", Duration::from_secs(20), || {
        w.sim.world().periodic_reports.len() == 2
    })
    .await;
    let reports = w.sim.world().periodic_reports.clone();
    assert_eq!(reports[0]["success"], true, "{reports:?}");
    assert_eq!(reports[0]["commands_executed"].as_array().unwrap().len(), 1);
    assert_eq!(
        reports[1]["success"], false,
        "a message without backend_id fails"
    );
    run.abort();
}
