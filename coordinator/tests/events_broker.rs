//! The broker restarts in the middle of a stream of events: every order
//! published before, during and after the restart reaches `done`. Its own
//! test binary, so the restart disturbs no other test.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Options, World, rabbitmqctl};
use waldur_sim::events::Broker;

const EVENT_CONFIG: &str = "    intervals: {orders_seconds: 3600, membership_seconds: 3600, report_seconds: 3600}\n    events: {stomp_url: 'ws://127.0.0.1:15674/ws', heartbeat_seconds: 2, max_backoff_seconds: 1}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_across_a_broker_restart_are_all_processed() {
    let w = World::start(Options {
        tasks: "{orders: true, report: false, membership: false, events: true}",
        extra_offering_config: EVENT_CONFIG,
        ..Options::default()
    })
    .await;
    w.sim.enable_events(Broker::default());
    let (c, run) = w.spawn_running();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.offerings[0]
        .consumers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .first()
        .is_some_and(|(_, s)| s.connected())
    {
        assert!(Instant::now() < deadline, "consumer never connected");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let mut orders = Vec::new();
    for _ in 0..3 {
        orders.push(w.order("Create", "pending-provider", "", json!({})).0);
    }
    rabbitmqctl(&["stop_app"]);
    for _ in 0..3 {
        orders.push(w.order("Create", "pending-provider", "", json!({})).0);
    }
    rabbitmqctl(&["start_app"]);
    for _ in 0..3 {
        orders.push(w.order("Create", "pending-provider", "", json!({})).0);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pending: Vec<&String> = orders
            .iter()
            .filter(|o| w.sim.order_state(o).as_deref() != Some("done"))
            .collect();
        if pending.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "orders never done: {pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = &c.offerings[0]
        .consumers
        .lock()
        .unwrap_or_else(|p| p.into_inner())[0]
        .1
        .clone();
    assert!(state.connects() >= 2, "the consumer reconnected");
    run.abort();
}
