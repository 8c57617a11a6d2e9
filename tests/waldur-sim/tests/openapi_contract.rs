//! Contract test: the simulator's answers (and the request bodies this test
//! sends, as the agent sends them) for the endpoints of usage, per-user
//! limits, offering users, accounts, offering components and the user
//! attribute config validate against the official Waldur OpenAPI schema
//! (`tests/waldur-sim/openapi/waldur-openapi-8.0.5.yaml`).

#![allow(clippy::unwrap_used)] // a test's input is its own

use serde_json::{Value, json};
use waldur_sim::{NewOrder, Sim};

const TOKEN: &str = "contract-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_answers_follow_the_waldur_openapi_schema() {
    let schema = waldur_sim::contract::OpenApi::load().unwrap();

    let sim = Sim::new(TOKEN);
    let addr = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let s = sim.seed_basic(
        None,
        &[
            ("alice", "PROJECT.MANAGER", Some("alice")),
            ("bob", "PROJECT.MEMBER", None),
        ],
    );
    let created = sim
        .create_order(NewOrder {
            order_type: "Create".into(),
            state: "executing".into(),
            offering_uuid: s.offering_uuid.clone(),
            project_uuid: s.project_uuid.clone(),
            name: "run".into(),
            ..Default::default()
        })
        .unwrap();
    sim.world().set_done(&created.order_uuid).unwrap();
    let r = created.resource_uuid;
    let o = s.offering_uuid.clone();
    let bob = s.users["bob"].clone();
    let ou = sim.add_offering_user(&o, &bob, "Requested", None);
    let linking = sim.add_offering_user(
        &o,
        &sim.add_user("carol", "c@example.org"),
        "Creating",
        None,
    );
    sim.set_user_limit(&r, "alice", "cpu", 10.0);
    sim.add_service_account(&s.project_uuid, "svc", "OK");
    sim.add_course_account(&s.project_uuid, "course", "Closed");

    let http = reqwest::Client::new();
    let base = format!("http://{addr}/api/");
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let req = http
            .request(method, format!("{base}{path}"))
            .header("Authorization", format!("Token {TOKEN}"));
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    use reqwest::Method as M;

    // Usage, as the report cycle sends it.
    let (st, _) = call(
        M::POST,
        "marketplace-component-usages/set_usage/".into(),
        Some(json!({"usages": [{"type": "cpu", "amount": "2.50"}], "resource": r, "date": "2026-11-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(st, 201);
    let (_, usages) = call(
        M::GET,
        format!("marketplace-component-usages/?resource_uuid={r}&billing_period=2026-11-01"),
        None,
    )
    .await;
    let usage = usages[0]["uuid"].as_str().unwrap().to_owned();
    let (st, _) = call(
        M::POST,
        format!("marketplace-component-usages/{usage}/set_user_usages/"),
        Some(json!({"usages": [
            {"username": "alice", "usage": "2.00", "date": "2026-11-01T00:00:00Z",
             "user": format!("http://sim/api/marketplace-offering-users/{ou}/")},
            {"username": "bob", "usage": "0.50", "date": "2026-11-01T00:00:00Z"}]})),
    )
    .await;
    assert_eq!(st, 201);
    let (st, _) = call(
        M::POST,
        format!("marketplace-component-usages/{usage}/set_user_usage/"),
        Some(json!({"username": "bob", "usage": "0.75", "date": "2026-11-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(st, 201);
    for q in [
        format!("marketplace-component-usages/?offering_uuid={o}&type=cpu"),
        format!("marketplace-component-usages/{usage}/"),
        format!(
            "marketplace-component-user-usages/?resource_uuid={r}&component_usage_billing_period=2026-11-01"
        ),
        format!("marketplace-component-user-usages/?offering_uuid={o}&username=alice"),
        format!("component-user-usage-limits/?resource_uuid={r}"),
    ] {
        let (st, body) = call(M::GET, q.clone(), None).await;
        assert_eq!(st, 200, "{q}");
        assert!(body.as_array().is_none_or(|a| !a.is_empty()), "{q}: {body}");
    }

    // Offering users, as username management drives them.
    for q in [
        format!("marketplace-offering-users/?offering_uuid={o}&is_restricted=false"),
        format!(
            "marketplace-offering-users/?offering_uuid={o}&user_uuid={bob}&is_restricted=false"
        ),
        format!("marketplace-offering-users/{ou}/"),
    ] {
        assert_eq!(call(M::GET, q, None).await.0, 200);
    }
    let action = |id: &str, name: &str| format!("marketplace-offering-users/{id}/{name}/");
    assert_eq!(
        call(M::POST, action(&ou, "begin_creating"), None).await.0,
        200
    );
    let (st, body) = call(
        M::PATCH,
        format!("marketplace-offering-users/{ou}/"),
        Some(json!({"username": "bob01"})),
    )
    .await;
    assert_eq!((st, body["state"].as_str()), (200, Some("OK")));
    let comment =
        json!({"comment": "link your account", "comment_url": "https://idp.example.org/link"});
    assert_eq!(
        call(
            M::POST,
            action(&linking, "set_pending_account_linking"),
            Some(comment.clone())
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            M::POST,
            action(&linking, "set_pending_additional_validation"),
            Some(comment)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(M::POST, action(&linking, "set_validation_complete"), None)
            .await
            .0,
        200
    );
    let third = sim.add_offering_user(&o, &s.users["alice"], "Creating", Some("alice"));
    assert_eq!(
        call(M::POST, action(&third, "set_error_creating"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(M::POST, action(&third, "set_error_creating"), None)
            .await
            .0,
        400
    );

    // Offering context.
    for q in [
        format!("marketplace-provider-offerings/{o}/user-attribute-config/"),
        format!("marketplace-provider-offerings/{o}/list_project_service_accounts/"),
        format!("marketplace-provider-offerings/{o}/list_course_accounts/"),
        "users/me/".to_owned(),
    ] {
        assert_eq!(call(M::GET, q, None).await.0, 200);
    }
    let (st, _) = call(
        M::POST,
        format!("marketplace-provider-offerings/{o}/create_offering_component/"),
        Some(json!({"type": "gpu", "name": "GPU", "measured_unit": "GPU-hours", "billing_type": "usage",
                    "limit_period": "month", "limit_amount": 100, "description": "GPUs", "article_code": "",
                    "min_value": 0, "max_value": 1000})),
    )
    .await;
    assert_eq!(st, 201);
    let gpu = sim.world().offerings[&o].components[3]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _) = call(
        M::POST,
        format!("marketplace-provider-offerings/{o}/update_offering_component/"),
        Some(json!({"uuid": gpu, "type": "gpu", "name": "GPU", "measured_unit": "GPU-hours", "billing_type": "usage",
                    "limit_period": null, "limit_amount": null})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        call(
            M::GET,
            format!("marketplace-provider-offerings/{o}/?field=components"),
            None
        )
        .await
        .0,
        200
    );
    let (st, body) = call(
        M::POST,
        format!("marketplace-provider-resources/{r}/set_membership_sync_statuses/"),
        Some(json!({"statuses": [{"username": "alice", "scope_type": "project", "role_name": "PROJECT.MANAGER", "state": "synced"}]})),
    )
    .await;
    assert_eq!((st, body), (200, json!({"stored": 1, "skipped": []})));

    let waldur_sim::contract::Report {
        checked,
        not_in_schema,
        failures,
    } = schema.check(&sim.calls());
    println!("validated operations: {checked:#?}");
    assert!(
        failures.is_empty(),
        "schema violations:\n{}",
        failures.join("\n")
    );
    // set_membership_sync_statuses is newer than 8.0.5.
    assert!(
        not_in_schema
            .iter()
            .all(|k| k.contains("set_membership_sync_statuses")),
        "calls outside the schema: {not_in_schema:?}"
    );
    for must in [
        "GET marketplace-component-usages/",
        "GET marketplace-component-usages/{uuid}/",
        "POST marketplace-component-usages/set_usage/",
        "POST marketplace-component-usages/{uuid}/set_user_usages/",
        "POST marketplace-component-usages/{uuid}/set_user_usage/",
        "GET marketplace-component-user-usages/",
        "GET component-user-usage-limits/",
        "GET marketplace-offering-users/",
        "GET marketplace-offering-users/{uuid}/",
        "PATCH marketplace-offering-users/{uuid}/",
        "POST marketplace-offering-users/{uuid}/begin_creating/",
        "POST marketplace-offering-users/{uuid}/set_pending_account_linking/",
        "POST marketplace-offering-users/{uuid}/set_pending_additional_validation/",
        "POST marketplace-offering-users/{uuid}/set_validation_complete/",
        "POST marketplace-offering-users/{uuid}/set_error_creating/",
        "GET marketplace-provider-offerings/{uuid}/user-attribute-config/",
        "GET marketplace-provider-offerings/{uuid}/list_project_service_accounts/",
        "GET marketplace-provider-offerings/{uuid}/list_course_accounts/",
        "POST marketplace-provider-offerings/{uuid}/create_offering_component/",
        "POST marketplace-provider-offerings/{uuid}/update_offering_component/",
        "GET marketplace-provider-offerings/{uuid}/",
        "GET users/me/",
    ] {
        assert!(checked.contains_key(must), "{must} was not exercised");
    }
}
