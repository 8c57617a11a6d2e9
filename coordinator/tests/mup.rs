//! The coordinator against waldur-sim and the MUP backend over mutual TLS,
//! the backend talking HTTP to `mup-sim`: a Create waits while the project
//! manager has no account, then makes the MUP project with them as PI and
//! one allocation per component; an Update resizes; usage reaches Waldur
//! per user; the team follows Waldur; a Terminate deactivates allocations
//! and project; and a portal that is down or answers garbage leaves orders
//! untouched.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use mup_sim::{Fault, MupSim};
use support::{Options, World};
use waldur_backend_example::ExampleBackend;
use waldur_backend_mup::{MupBackend, MupSettings};
use waldur_backend_sdk::secret::Secret;
use waldur_sim::NewOrder;

const GRANT: &str = "EHPC-E2E-7";

async fn world() -> (World, MupSim) {
    let mup = MupSim::new("agent", "mup-pw");
    let addr = mup.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let settings = MupSettings::parse(serde_json::json!({
        "api_url": format!("http://{addr}"),
        "username": "agent",
        "password_env": "MUP_PASSWORD",
        "retries": 0,
        "timeout_seconds": 5,
        "components": {
            "cpu": {"label": "CPU", "measured_unit": "k-core-hours", "accounting_type": "limit", "unit_factor": 1000},
            "storage": {"label": "Storage", "measured_unit": "GB", "accounting_type": "limit", "mup_allocation_type": "Storage"}
        }
    }))
    .unwrap();
    let backend = MupBackend::new(settings, Secret::new("mup-pw")).unwrap();
    let w = World::start_with(
        Options::default(),
        ExampleBackend::default(),
        Arc::new(backend),
    )
    .await;
    w.sim
        .world()
        .projects
        .get_mut(&w.scenario.project_uuid)
        .unwrap()
        .name = format!("EuroHPC / {GRANT} / Climate Modelling");
    (w, mup)
}

fn limits(cpu: i64, storage: i64) -> BTreeMap<String, i64> {
    BTreeMap::from([("cpu".to_owned(), cpu), ("storage".to_owned(), storage)])
}

fn create_order(w: &World) -> (String, String) {
    let created = w
        .sim
        .create_order(NewOrder {
            order_type: "Create".into(),
            state: "executing".into(),
            offering_uuid: w.scenario.offering_uuid.clone(),
            project_uuid: w.scenario.project_uuid.clone(),
            name: "mup run".into(),
            limits: limits(5, 50),
            ..Default::default()
        })
        .unwrap();
    (created.order_uuid, created.resource_uuid)
}

fn usage_of(w: &World, resource: &str, component: &str) -> (f64, BTreeMap<String, f64>) {
    let usages = w.sim.component_usages(resource);
    let u = usages
        .iter()
        .find(|u| u.component_type == component)
        .unwrap_or_else(|| panic!("no {component} usage: {usages:?}"));
    (
        u.usage.parse().unwrap(),
        u.user_usages
            .iter()
            .map(|(k, v)| (k.clone(), v.usage.parse().unwrap()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mup_allocation_lives_from_create_to_terminate_through_waldur_orders() {
    let (w, mup) = world().await;
    let alice = w.scenario.users["alice"].clone();
    let offering = w.scenario.offering_uuid.clone();

    // The project manager has no account yet: the order waits.
    w.sim.add_offering_user(&offering, &alice, "Creating", None);
    let (order, resource) = create_order(&w);
    for _ in 0..3 {
        w.cycle().await;
        assert_eq!(w.sim.order_state(&order).as_deref(), Some("executing"));
    }
    assert!(mup.projects().is_empty(), "nothing made without a PI");

    // The account is ready: the project is made with them as PI.
    w.sim
        .add_offering_user(&offering, &alice, "OK", Some("alice"));
    w.until_state(&order, "done").await;
    let backend_id = w.sim.resource(&resource).unwrap().backend_id;
    assert_eq!(backend_id, format!("alloc_{resource}_cpu"));
    let project = mup.project_by_grant(GRANT).unwrap();
    assert!(project.active);
    assert_eq!(project.pi, "alice@example.org");
    let sizes: BTreeMap<String, i64> = mup
        .allocations(project.id)
        .iter()
        .map(|a| (a.identifier.clone(), a.size))
        .collect();
    assert_eq!(
        sizes,
        BTreeMap::from([
            (format!("alloc_{resource}_cpu"), 5000),
            (format!("alloc_{resource}_storage"), 50),
        ])
    );
    let member_names = |mup: &MupSim| -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = mup
            .members(project.id)
            .iter()
            .map(|m| (mup.user(m.user).unwrap().username, m.active))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        member_names(&mup),
        [("alice".to_owned(), true), ("bob".to_owned(), true)]
    );

    // Update: the matching allocation is resized.
    let update = w
        .sim
        .create_order(NewOrder {
            order_type: "Update".into(),
            state: "executing".into(),
            offering_uuid: offering.clone(),
            project_uuid: w.scenario.project_uuid.clone(),
            resource_uuid: resource.clone(),
            limits: limits(7, 50),
            ..Default::default()
        })
        .unwrap();
    w.until_state(&update.order_uuid, "done").await;
    assert_eq!(mup.allocation(&backend_id).unwrap().size, 7000);

    // Usage reaches Waldur per user, in Waldur units.
    mup.set_usage(&backend_id, [("alice", 1500.0), ("bob", 500.0)], None)
        .unwrap();
    w.report().await;
    let (total, users) = usage_of(&w, &resource, "cpu");
    assert_eq!(total, 2.0);
    assert_eq!(users["alice"], 1.5);
    assert_eq!(users["bob"], 0.5);

    // The team follows Waldur: bob is deactivated, then activated again.
    let bob = w.scenario.users["bob"].clone();
    w.sim.revoke_role(&w.scenario.project_uuid, &bob);
    let s = w.membership().await;
    assert_eq!(s.users_removed, 1, "{s:?}");
    assert_eq!(
        member_names(&mup),
        [("alice".to_owned(), true), ("bob".to_owned(), false)]
    );
    w.sim
        .grant_role(&w.scenario.project_uuid, &bob, "PROJECT.MEMBER");
    let s = w.membership().await;
    assert_eq!(s.users_added, 1, "{s:?}");
    assert_eq!(
        member_names(&mup),
        [("alice".to_owned(), true), ("bob".to_owned(), true)]
    );

    // Terminate deactivates the allocations and the emptied project.
    let (order, _) = w.order("Terminate", "executing", &resource, serde_json::json!({}));
    w.until_state(&order, "done").await;
    assert!(mup.allocations(project.id).iter().all(|a| !a.active));
    assert!(!mup.project(project.id).unwrap().active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mup_down_or_answering_garbage_leaves_orders_untouched() {
    let (w, mup) = world().await;
    let (order, resource) = create_order(&w);
    for fault in [
        Fault::status(503),
        Fault {
            status: Some(200),
            body: Some("<html><body>maintenance</body></html>".into()),
            ..Fault::default()
        },
        Fault {
            drop: true,
            ..Fault::default()
        },
    ] {
        mup.add_fault(fault);
        for _ in 0..2 {
            w.cycle().await;
            assert_eq!(w.sim.order_state(&order).as_deref(), Some("executing"));
        }
        mup.clear_faults();
    }
    assert!(mup.projects().is_empty());
    assert!(w.sim.resource(&resource).unwrap().backend_id.is_empty());
    w.until_state(&order, "done").await;
    assert_eq!(mup.projects().len(), 1);
}
