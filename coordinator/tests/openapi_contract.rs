//! Contract test: every request body the coordinator sends and every
//! response body waldur-sim returns, for the operations used, must validate
//! against the official Waldur OpenAPI schema (`tests/waldur-sim/openapi/waldur-openapi-8.0.5.yaml`).

#![allow(clippy::unwrap_used)] // a test's input is its own

mod support;

use serde_json::{Value, json};
use support::{Options, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_simulator_answers_follow_the_waldur_openapi_schema() {
    let schema = waldur_sim::contract::OpenApi::load().unwrap();

    // A scenario touching every order path: create (approve), update,
    // terminate, reject, erred.
    let world = World::start(Options::default()).await;
    let (create, resource) = world.order("Create", "pending-provider", "", json!({}));
    world.until_state(&create, "done").await;
    let update = world
        .sim
        .create_order(waldur_sim::NewOrder {
            order_type: "Update".into(),
            state: "executing".into(),
            resource_uuid: resource.clone(),
            limits: [("cpu".to_owned(), 7)].into(),
            ..Default::default()
        })
        .unwrap();
    world.until_state(&update.order_uuid, "done").await;
    let (terminate, _) = world.order("Terminate", "executing", &resource, json!({}));
    world.until_state(&terminate, "done").await;
    let (reject, _) = world.order(
        "Create",
        "pending-provider",
        "",
        json!({"example_decision": "reject"}),
    );
    world.until_state(&reject, "rejected").await;
    let (erred, _) = world.order(
        "Create",
        "executing",
        "",
        json!({"example_fail": "invalid_argument"}),
    );
    world.until_state(&erred, "erred").await;

    // Reporting, membership, usernames and the operator commands, as the
    // coordinator drives them.
    world.sim.set_plugin_options(
        &world.scenario.offering_uuid,
        json!({"service_provider_can_create_offering_user": true}),
    );
    let (synced, backend_id) = world.provisioned("contract sync").await;
    world.backend.record_usage(&backend_id, "alice", "cpu", 1.5);
    world.sim.set_user_limit(&synced, "alice", "cpu", 2.0);
    world
        .sim
        .add_service_account(&world.scenario.project_uuid, "svc_contract", "OK");
    for (name, email) in [
        ("erin", "erin@example.org"),
        ("frank", "frank@link.required"),
        ("grace", "grace@validation.required"),
    ] {
        let user = world.sim.add_user(name, email);
        world
            .sim
            .grant_role(&world.scenario.project_uuid, &user, "PROJECT.MEMBER");
        world
            .sim
            .add_offering_user(&world.scenario.offering_uuid, &user, "Requested", None);
    }
    world.sim.set_resource_flags(&synced, true, false);
    world.sim.set_resource_state(&synced, "Erred");
    world.membership().await;
    world.report().await;
    world.report().await;
    // One component missing in Waldur, so load-components creates one.
    if let Some(o) = world
        .sim
        .world()
        .offerings
        .get_mut(&world.scenario.offering_uuid)
    {
        o.components.retain(|c| c["type"] != "mem");
    }
    let selected = waldur_coordinator::cli::ops::select(&world.coordinator, &[]).unwrap();
    assert!(waldur_coordinator::cli::ops::load_components(&world.coordinator, &selected).await);
    assert!(waldur_coordinator::cli::ops::diagnostics(&world.coordinator, &selected).await);

    // Endpoints later tasks use (event subscriptions): exercised directly so
    // the simulator's answers are checked too.
    let http = reqwest::Client::new();
    let base = format!("http://{}/api/", world.sim_addr);
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let req = http
            .request(method, format!("{base}{path}"))
            .header("Authorization", format!("Token {}", support::TOKEN));
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        async move {
            req.send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap_or(Value::Null)
        }
    };
    call(
        reqwest::Method::POST,
        "marketplace-component-usages/set_usage/".into(),
        Some(json!({"usages": [{"type": "cpu", "amount": "2"}], "resource": resource, "date": "2026-11-05T00:00:00Z"})),
    )
    .await;
    let usages = call(
        reqwest::Method::GET,
        format!("marketplace-component-usages/?resource_uuid={resource}&billing_period=2026-11-01&field=uuid&field=type&field=usage"),
        None,
    )
    .await;
    let usage_uuid = usages[0]["uuid"].as_str().unwrap().to_owned();
    call(
        reqwest::Method::POST,
        format!("marketplace-component-usages/{usage_uuid}/set_user_usages/"),
        Some(json!({"usages": [{"username": "alice", "usage": "2", "date": "2026-11-05T00:00:00Z"}]})),
    )
    .await;
    let identity = world.sim.world().identities.keys().next().unwrap().clone();
    let subscription = call(
        reqwest::Method::POST,
        format!("marketplace-site-agent-identities/{identity}/register_event_subscription/"),
        Some(json!({"observable_object_type": "order", "description": "orders of the offering"})),
    )
    .await;
    let subscription = subscription["uuid"].as_str().unwrap().to_owned();
    call(
        reqwest::Method::POST,
        format!("event-subscriptions/{subscription}/create_queue/"),
        Some(json!({"offering_uuid": world.scenario.offering_uuid, "object_type": "order"})),
    )
    .await;

    let waldur_sim::contract::Report {
        checked,
        not_in_schema,
        failures,
    } = schema.check(&world.sim.calls());
    println!("validated operations: {checked:#?}");
    println!("not in the 8.0.5 schema: {not_in_schema:?}");
    assert!(
        failures.is_empty(),
        "schema violations:\n{}",
        failures.join("\n")
    );
    // set_endpoints is the only call the 8.0.5 schema lacks (newer Waldur has it).
    assert!(
        not_in_schema.iter().all(|k| k.contains("set_endpoints")),
        "calls outside the schema: {not_in_schema:?}"
    );
    for must in [
        "GET marketplace-orders/",
        "POST marketplace-orders/{uuid}/approve_by_provider/",
        "POST marketplace-orders/{uuid}/set_state_done/",
        "POST marketplace-orders/{uuid}/set_state_erred/",
        "POST marketplace-orders/{uuid}/reject_by_provider/",
        "GET marketplace-provider-resources/{uuid}/",
        "GET marketplace-provider-resources/{uuid}/team/",
        "POST marketplace-provider-resources/{uuid}/set_backend_id/",
        "POST marketplace-provider-resources/{uuid}/set_backend_metadata/",
        "GET marketplace-offering-users/",
        "GET marketplace-site-agent-identities/",
        "POST marketplace-site-agent-identities/",
        "POST marketplace-site-agent-identities/{uuid}/register_service/",
        "POST marketplace-site-agent-services/{uuid}/register_processor/",
        "POST marketplace-component-usages/set_usage/",
        "GET marketplace-component-usages/",
        "POST marketplace-component-usages/{uuid}/set_user_usages/",
        "POST marketplace-site-agent-identities/{uuid}/register_event_subscription/",
        "POST event-subscriptions/{uuid}/create_queue/",
        "GET marketplace-provider-resources/",
        "POST marketplace-provider-resources/{uuid}/refresh_last_sync/",
        "POST marketplace-provider-resources/{uuid}/set_as_ok/",
        "GET marketplace-component-user-usages/",
        "GET component-user-usage-limits/",
        "GET marketplace-provider-offerings/{uuid}/user-attribute-config/",
        "GET marketplace-provider-offerings/{uuid}/list_project_service_accounts/",
        "GET marketplace-provider-offerings/{uuid}/list_course_accounts/",
        "POST marketplace-provider-offerings/{uuid}/create_offering_component/",
        "POST marketplace-provider-offerings/{uuid}/update_offering_component/",
        "POST marketplace-offering-users/{uuid}/begin_creating/",
        "POST marketplace-offering-users/{uuid}/set_pending_account_linking/",
        "POST marketplace-offering-users/{uuid}/set_pending_additional_validation/",
        "PATCH marketplace-offering-users/{uuid}/",
        "GET users/me/",
    ] {
        assert!(checked.contains_key(must), "{must} was not exercised");
    }
}
