//! The simulator over real HTTP: its API answers, the control API and
//! faults.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::*;

const USER: &str = "waldur";
const PASSWORD: &str = "s3cret";

/// A running simulator and a client for it.
struct Mup {
    sim: MupSim,
    base: String,
    http: reqwest::Client,
}

async fn start() -> Mup {
    let sim = MupSim::new(USER, PASSWORD);
    let addr = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    Mup {
        sim,
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    }
}

impl Mup {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(USER, Some(PASSWORD));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let r = self.send(method, path, body).await;
        let status = r.status().as_u16();
        assert_eq!(
            r.headers()["content-type"],
            "application/json",
            "{path} answers JSON"
        );
        (status, r.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// A control call (no credentials).
    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/_sim/{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// An active project led by a seeded `pi` user; its id.
    fn active_project(&self, grant: &str) -> i64 {
        self.sim.add_user("pi", "pi@example.org");
        self.sim
            .add_project(grant, "Project", "pi@example.org", true)
    }
}

fn project_body(grant: &str) -> Value {
    json!({
        "title": "Climate runs", "description": "Ensembles", "pi": "pi@example.org",
        "co_pi": null, "science_field": 2, "start_date": "2025-02-01",
        "end_date": "2026-01-31", "agency": "FCT", "grant_number": grant,
        "max_storage": 100, "ai_included": true
    })
}

fn allocation_body(identifier: &str, size: i64) -> Value {
    json!({"type": "cpu", "identifier": identifier, "size": size, "used": 0, "active": true, "project": 1})
}

// ------------------------------------------------------------------ auth

#[tokio::test]
async fn missing_or_wrong_credentials_are_refused_with_401() {
    let mup = start().await;
    let url = format!("{}/api/projects/list/", mup.base);

    let r = mup.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"api\"");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"detail": "Authentication credentials were not provided."})
    );

    let r = mup
        .http
        .get(&url)
        .basic_auth(USER, Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"detail": "Invalid username/password."}));

    let r = mup
        .http
        .get(&url)
        .bearer_auth(PASSWORD)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "only basic authentication counts");

    assert_eq!(mup.get("/api/projects/list/").await, (200, json!([])));
    let control = mup
        .http
        .get(format!("{}/_sim/state", mup.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        control.status(),
        200,
        "the control API needs no credentials"
    );
}

#[tokio::test]
async fn an_unknown_path_is_404_before_authentication() {
    let mup = start().await;
    let r = mup
        .http
        .get(format!("{}/api/nowhere/", mup.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "Not found."})
    );
    assert_eq!(
        mup.get("/api/projects/list").await.0,
        404,
        "the slash matters"
    );
}

#[tokio::test]
async fn a_wrong_method_is_405_and_a_bad_body_400() {
    let mup = start().await;
    let r = mup.send(Method::DELETE, "/api/projects/list/", None).await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "Method \"DELETE\" not allowed."})
    );

    let r = mup
        .http
        .post(format!("{}/api/projects/add/", mup.base))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.starts_with("JSON parse error - "), "{detail}");
}

// -------------------------------------------------------------- projects

#[tokio::test]
async fn a_created_project_is_inactive_until_activated() {
    let mup = start().await;
    mup.sim.add_user("pi", "pi@example.org");

    let (status, p) = mup
        .post("/api/projects/add/", project_body("2025.001"))
        .await;
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["id"], 1);
    assert_eq!(p["active"], false);
    assert_eq!(p["ai_included"], true);
    assert_eq!(p["co_pi"], Value::Null);

    let (status, p) = mup.put("/api/projects/1/activate", json!({})).await;
    assert_eq!((status, p["active"].clone()), (200, json!(true)));
    assert!(mup.sim.project_by_grant("2025.001").unwrap().active);

    let (status, p) = mup
        .put("/api/projects/1/edit", json!({"title": "Renamed"}))
        .await;
    assert_eq!((status, p["title"].clone()), (200, json!("Renamed")));
    assert_eq!(p["active"], true, "editing leaves activation alone");

    let (_, p) = mup.put("/api/projects/1/deactivate", json!({})).await;
    assert_eq!(p["active"], false);
    let (status, listed) = mup.get("/api/projects/list/").await;
    assert_eq!(
        (status, listed[0]["title"].clone()),
        (200, json!("Renamed"))
    );
    assert_eq!(mup.put("/api/projects/9/activate", json!({})).await.0, 404);
}

#[tokio::test]
async fn a_project_with_a_taken_grant_or_an_unknown_pi_is_refused() {
    let mup = start().await;
    mup.sim.add_user("pi", "pi@example.org");
    assert_eq!(
        mup.post("/api/projects/add/", project_body("G-1")).await.0,
        201
    );

    let (status, body) = mup.post("/api/projects/add/", project_body("G-1")).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"grant_number": ["project with this grant number already exists."]})
    );

    let mut other = project_body("G-2");
    other["pi"] = json!("stranger@example.org");
    other["end_date"] = json!("31/12/2026");
    let (status, body) = mup.post("/api/projects/add/", other).await;
    assert_eq!(status, 400);
    assert_eq!(body["pi"], json!(["unknown principal investigator"]));
    assert!(body["end_date"][0].as_str().unwrap().contains("YYYY-MM-DD"));

    let (status, body) = mup.post("/api/projects/add/", json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(body["title"], json!(["This field is required."]));
    assert_eq!(mup.sim.projects().len(), 1, "refusals change nothing");
}

#[tokio::test]
async fn projects_are_found_by_grant_or_answer_404() {
    let mup = start().await;
    mup.sim
        .add_project("2024.12345.PTDC/X", "T", "pi@example.org", true);
    let (status, p) = mup.get("/api/projects/by-grant/2024.12345.PTDC%2FX").await;
    assert_eq!((status, p["id"].clone()), (200, json!(1)));
    assert_eq!(
        mup.get("/api/projects/by-grant/nope").await,
        (404, json!({"detail": "Project not found."}))
    );
    assert_eq!(mup.get("/api/projects/view/1").await.0, 200);
    assert_eq!(mup.get("/api/projects/view/2").await.0, 404);
}

// ----------------------------------------------------------- allocations

#[tokio::test]
async fn allocations_are_added_edited_and_found_by_identifier() {
    let mup = start().await;
    let project = mup.active_project("G");

    let path = format!("/api/projects/{project}/allocations/add");
    let (status, a) = mup.post(&path, allocation_body("g_cpu_1", 1000)).await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(
        a,
        json!({"id": 1, "type": "cpu", "identifier": "g_cpu_1", "size": 1000, "used": 0, "active": true, "project": project})
    );
    let (status, b) = mup.post(&path, allocation_body("g gpu/2", 5)).await;
    assert_eq!(status, 201, "{b}");

    let (status, found) = mup.get("/api/projects/allocations/g_cpu_1").await;
    assert_eq!((status, found["project"].clone()), (200, json!(project)));
    let (status, found) = mup.get("/api/projects/allocations/g%20gpu%2F2").await;
    assert_eq!((status, found["id"].clone()), (200, json!(2)));
    assert_eq!(
        mup.get("/api/projects/allocations/none").await,
        (404, json!({"detail": "Allocation not found."}))
    );

    let edit = format!("/api/projects/{project}/allocations/edit/1");
    let mut changed = allocation_body("g_cpu_1", 2000);
    changed["active"] = json!(false);
    let (status, a) = mup.put(&edit, changed).await;
    assert_eq!(
        (status, a["size"].clone(), a["active"].clone()),
        (200, json!(2000), json!(false))
    );
    let (status, body) = mup.put(&edit, allocation_body("g gpu/2", 1)).await;
    assert_eq!(status, 400, "an identifier of another allocation: {body}");

    let view = format!("/api/projects/{project}/allocations/view/1");
    assert_eq!(mup.get(&view).await.1["size"], 2000);
    let (_, all) = mup
        .get(&format!("/api/projects/{project}/allocations/list"))
        .await;
    assert_eq!(
        all.as_array().unwrap().len(),
        2,
        "inactive ones are listed too"
    );
    let other = mup.sim.add_project("H", "Other", "pi@example.org", true);
    assert_eq!(
        mup.get(&format!("/api/projects/{other}/allocations/view/1"))
            .await
            .0,
        404
    );
    assert_eq!(mup.get("/api/projects/99/allocations/list").await.0, 404);
}

#[tokio::test]
async fn a_taken_identifier_or_an_inactive_project_refuses_an_allocation() {
    let mup = start().await;
    let project = mup.active_project("G");
    let path = format!("/api/projects/{project}/allocations/add");
    assert_eq!(mup.post(&path, allocation_body("dup_1", 1)).await.0, 201);

    let (status, body) = mup.post(&path, allocation_body("dup_1", 1)).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"identifier": ["allocation with this identifier already exists."]})
    );
    let (status, body) = mup.post(&path, allocation_body("neg", -5)).await;
    assert_eq!(
        (status, body["size"].clone()),
        (
            400,
            json!(["Ensure this value is greater than or equal to 0."])
        )
    );

    let inactive = mup
        .sim
        .add_project("I", "Inactive", "pi@example.org", false);
    let (status, body) = mup
        .post(
            &format!("/api/projects/{inactive}/allocations/add"),
            allocation_body("x", 1),
        )
        .await;
    assert_eq!(
        (status, body),
        (400, json!({"detail": "project is not active"}))
    );
    assert_eq!(
        mup.post("/api/projects/99/allocations/add", allocation_body("y", 1))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn usage_set_through_the_control_api_is_answered() {
    let mup = start().await;
    let project = mup.active_project("G");
    let a = mup
        .sim
        .add_allocation(project, "cpu", "g_cpu", 100)
        .unwrap();
    let usage = format!("/api/projects/{project}/allocations/{}/usage", a.id);

    assert_eq!(
        mup.get(&usage).await,
        (
            200,
            json!({"total": 0.0, "users": {}, "unit": "core-hours"})
        )
    );

    let (status, _) = mup
        .control(
            Method::POST,
            "allocations/g_cpu/usage",
            Some(json!({"users": {"alice": 5.0, "bob": 2.5}})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, u) = mup.get(&usage).await;
    assert_eq!(
        u,
        json!({"total": 7.5, "users": {"alice": 5.0, "bob": 2.5}, "unit": "core-hours"})
    );
    assert_eq!(
        mup.sim.allocation("g_cpu").unwrap().used,
        8,
        "used is the total, rounded"
    );

    mup.sim
        .set_usage("g_cpu", [("alice", 1.0)], Some(40.0))
        .unwrap();
    mup.sim.set_usage_unit("g_cpu", "GPU-hours").unwrap();
    let (_, u) = mup.get(&usage).await;
    assert_eq!(
        u,
        json!({"total": 40.0, "users": {"alice": 1.0}, "unit": "GPU-hours"})
    );
    let (_, a) = mup.get("/api/projects/allocations/g_cpu").await;
    assert_eq!(a["used"], 40);
    assert_eq!(
        mup.get(&format!("/api/projects/{project}/allocations/9/usage"))
            .await
            .0,
        404
    );
}

// --------------------------------------------------------------- members

#[tokio::test]
async fn members_are_added_once_and_toggled() {
    let mup = start().await;
    let project = mup.active_project("G");
    let alice = mup.sim.add_user("alice", "alice@example.org");
    let add = format!("/api/projects/{project}/members/add");

    let (status, m) = mup
        .post(
            &add,
            json!({"user_id": alice, "email": "alice@example.org", "active": true}),
        )
        .await;
    assert_eq!(status, 201, "{m}");
    assert_eq!(
        (m["active"].clone(), m["member"]["username"].clone()),
        (json!(true), json!("alice"))
    );
    let mid = m["id"].as_i64().unwrap();

    let toggle = format!("/api/projects/{project}/members/{mid}/toggle-status");
    let (status, m) = mup.put(&toggle, json!({"active": false})).await;
    assert_eq!((status, m["active"].clone()), (200, json!(false)));

    let (status, body) = mup
        .post(&add, json!({"user_id": alice, "active": true}))
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"detail": "User is already a member of this project."})
        ),
        "an inactive membership still counts"
    );
    let (status, body) = mup.post(&add, json!({"user_id": 77, "active": true})).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"user_id": ["Invalid pk \"77\" - object does not exist."]})
        )
    );

    let (_, m) = mup.put(&toggle, json!({})).await;
    assert_eq!(m["active"], true, "no `active` flips it");
    let (_, listed) = mup
        .get(&format!("/api/projects/{project}/members/list"))
        .await;
    assert_eq!(listed[0]["member"]["email"], "alice@example.org");
    assert_eq!(mup.sim.members(project).len(), 1);
    assert_eq!(
        mup.put(
            &format!("/api/projects/{project}/members/99/toggle-status"),
            json!({})
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn member_listings_switch_to_the_flat_shape() {
    let mup = start().await;
    let project = mup.active_project("G");
    let bob = mup.sim.add_user("bob", "bob@example.org");
    mup.sim.add_member(project, bob, false).unwrap();
    let list = format!("/api/projects/{project}/members/list");

    let (status, _) = mup
        .control(Method::POST, "options", Some(json!({"flat_members": true})))
        .await;
    assert_eq!(status, 200);
    let (_, listed) = mup.get(&list).await;
    assert_eq!(
        listed,
        json!([{"id": 1, "active": false, "user_id": bob, "username": "bob", "email": "bob@example.org"}])
    );

    mup.sim.set_flat_members(false);
    let (_, listed) = mup.get(&list).await;
    assert_eq!(listed[0]["member"]["id"], bob);
    let (status, _) = mup
        .control(Method::POST, "options", Some(json!({"flat_member": true})))
        .await;
    assert_eq!(status, 400, "a misspelt option is refused");
}

// ----------------------------------------------------------------- users

#[tokio::test]
async fn a_registration_waits_in_the_request_list_until_approved() {
    let mup = start().await;
    let body = json!({
        "username": "carla", "email": "carla@example.org", "first_name": "Carla",
        "last_name": "Sousa", "year_of_birth": 1990, "research_fields": [1, 2],
        "orcid": "0000-0001"
    });
    let (status, u) = mup.post("/api/user/", body.clone()).await;
    assert_eq!(status, 201, "{u}");
    assert_eq!(
        (u["is_approved"].clone(), u["is_active"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(u["orcid"], "0000-0001", "extra fields are kept");
    let id = u["id"].as_i64().unwrap();

    let (_, requests) = mup.get("/api/user/request/list/").await;
    assert_eq!(requests[0]["username"], "carla");
    assert_eq!(mup.get("/api/user/list/").await.1, json!([]));

    let (status, body) = mup.post("/api/user/", body).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["email"],
        json!(["user with this email already exists."])
    );
    let (status, body) = mup
        .post(
            "/api/user/",
            json!({"username": "d", "email": "no-at", "year_of_birth": "old"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["email"], json!(["Enter a valid email address."]));
    assert_eq!(body["first_name"], json!(["This field is required."]));
    assert_eq!(
        body["year_of_birth"],
        json!(["A valid integer is required."])
    );

    let (status, u) = mup
        .control(Method::POST, &format!("users/{id}/approve"), None)
        .await;
    assert_eq!(
        (status, u["is_approved"].clone(), u["is_active"].clone()),
        (200, json!(true), json!(true))
    );
    assert_eq!(mup.get("/api/user/request/list/").await.1, json!([]));
    assert_eq!(mup.get("/api/user/list/").await.1[0]["id"], id);
    assert_eq!(
        mup.get("/api/user/by-email/carla%40example.org").await.1["id"],
        id
    );
    assert_eq!(mup.get("/api/user/by-username/carla").await.1["id"], id);
    assert_eq!(
        mup.get("/api/user/by-username/nobody").await,
        (404, json!({"detail": "User not found."}))
    );

    let (status, u) = mup
        .put(&format!("/api/user/edit/{id}"), json!({"biography": "Hi"}))
        .await;
    assert_eq!((status, u["biography"].clone()), (200, json!("Hi")));
}

#[tokio::test]
async fn a_registration_may_answer_an_empty_object() {
    let mup = start().await;
    mup.sim.set_empty_user_create_answer(true);
    let body =
        json!({"username": "e", "email": "e@example.org", "first_name": "E", "last_name": "F"});
    assert_eq!(mup.post("/api/user/", body).await, (201, json!({})));
    let (_, requests) = mup.get("/api/user/request/list/").await;
    assert_eq!(
        requests[0]["email"], "e@example.org",
        "the id is found in the request list"
    );
}

#[tokio::test]
async fn myaccessid_is_recorded_once() {
    let mup = start().await;
    let id = mup.sim.add_user("ana", "ana@example.org");
    let path = format!("/api/user/{id}/myaccessid");
    let cuid = "abc123@myaccessid.org";

    let (status, _) = mup.post(&path, json!({"myaccessid": cuid})).await;
    assert_eq!(status, 200);
    let (status, u) = mup.post(&path, json!({"myaccessid": cuid})).await;
    assert_eq!(status, 200);
    assert_eq!(
        u["user_ssh_keys"],
        json!([{"id": 1, "key": cuid, "name": "myaccessid"}])
    );
    let (_, viewed) = mup.get(&format!("/api/user/view/{id}")).await;
    assert_eq!(viewed["user_ssh_keys"], u["user_ssh_keys"]);

    assert_eq!(mup.post(&path, json!({"myaccessid": ""})).await.0, 400);
    assert_eq!(mup.post(&path, json!({})).await.0, 400);
    assert_eq!(
        mup.post("/api/user/99/myaccessid", json!({"myaccessid": cuid}))
            .await
            .0,
        404
    );
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn a_fault_for_one_time_answers_503_then_mup_answers() {
    let mup = start().await;
    let (status, _) = mup
        .control(
            Method::POST,
            "faults",
            Some(json!({"path_contains": "/projects/list/", "status": 503, "times": 1})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        mup.get("/api/projects/list/").await,
        (503, json!({"detail": "injected fault 503"}))
    );
    assert_eq!(mup.get("/api/projects/list/").await, (200, json!([])));
    assert_eq!(mup.sim.fault_hits(), vec!["/api/projects/list/".to_owned()]);
    assert!(mup.sim.faults().is_empty(), "a used-up fault disappears");
}

#[tokio::test]
async fn a_fault_can_answer_an_html_page() {
    let mup = start().await;
    mup.sim.add_fault(Fault {
        status: Some(502),
        body: Some("<html><body>Bad Gateway</body></html>".into()),
        ..Fault::default()
    });
    let r = mup
        .send(Method::GET, "/api/research-fields/list/", None)
        .await;
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        r.text().await.unwrap(),
        "<html><body>Bad Gateway</body></html>"
    );

    mup.sim.clear_faults();
    let (status, fields) = mup.get("/api/research-fields/list/").await;
    assert_eq!(
        (status, fields[0].clone()),
        (200, json!({"id": 1, "name": "Computer Science"}))
    );
}

#[tokio::test]
async fn a_latency_fault_delays_the_real_answer() {
    let mup = start().await;
    mup.sim.add_fault(Fault {
        latency_ms: 300,
        ..Fault::default().on("/user/list/").method("GET").times(1)
    });
    let started = Instant::now();
    let (status, _) = mup.get("/api/user/list/").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(mup.sim.faults().is_empty(), "it was for one request only");
    assert_eq!(mup.get("/api/user/list/").await.0, 200);
}

#[tokio::test]
async fn an_after_serving_fault_applies_the_effect_but_loses_the_answer() {
    let mup = start().await;
    mup.sim.add_user("pi", "pi@example.org");
    mup.sim.add_fault(
        Fault::status(500)
            .on("/projects/add/")
            .times(1)
            .method("post"),
    );
    mup.sim.add_fault(Fault {
        after_serving: true,
        ..Fault::status(504)
    });
    let (status, _) = mup.post("/api/projects/add/", project_body("A-1")).await;
    assert_eq!(status, 500);
    assert!(
        mup.sim.project_by_grant("A-1").is_none(),
        "a plain fault serves nothing"
    );

    let (status, body) = mup.post("/api/projects/add/", project_body("A-1")).await;
    assert_eq!(
        (status, body),
        (504, json!({"detail": "injected fault 504"}))
    );
    assert!(
        mup.sim.project_by_grant("A-1").is_some(),
        "the project was created"
    );
}

#[tokio::test]
async fn a_drop_fault_closes_the_connection_without_an_answer() {
    let mup = start().await;
    mup.sim.add_fault(Fault {
        drop: true,
        times: Some(1),
        ..Fault::default()
    });
    let r = mup
        .http
        .get(format!("{}/api/projects/list/", mup.base))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await;
    assert!(r.is_err(), "no answer: {r:?}");
    assert_eq!(mup.get("/api/projects/list/").await.0, 200);
    assert_eq!(mup.sim.calls()[0].status, 0);
}

// --------------------------------------------------------------- control

#[tokio::test]
async fn calls_are_recorded_as_sent_and_can_be_cleared() {
    let mup = start().await;
    mup.get("/api/user/by-email/a%40b.org").await;
    mup.post("/api/user/", json!({"username": "x"})).await;
    let (status, calls) = mup.control(Method::GET, "calls", None).await;
    assert_eq!(status, 200);
    assert_eq!(calls[0]["path"], "/api/user/by-email/a%40b.org");
    assert_eq!(calls[0]["status"], 404);
    assert_eq!(calls[1]["method"], "POST");
    assert_eq!(calls[1]["body"], json!({"username": "x"}));
    assert_eq!(mup.sim.call_count(), 2);
    mup.control(Method::DELETE, "calls", None).await;
    assert_eq!(mup.sim.call_count(), 0);
}

#[tokio::test]
async fn the_control_api_seeds_and_shows_the_state() {
    let mup = start().await;
    let (status, u) = mup
        .control(
            Method::POST,
            "users",
            Some(json!({"username": "r", "email": "r@x.org", "approved": false})),
        )
        .await;
    assert_eq!((status, u["is_approved"].clone()), (201, json!(false)));
    let (status, p) = mup
        .control(
            Method::POST,
            "projects",
            Some(json!({"grant_number": "S-1", "pi": "r@x.org"})),
        )
        .await;
    assert_eq!((status, p["active"].clone()), (201, json!(true)));
    let (status, a) = mup
        .control(
            Method::POST,
            "allocations",
            Some(json!({"project": p["id"], "type": "gpu", "identifier": "foreign_1", "size": 3})),
        )
        .await;
    assert_eq!((status, a["project"].clone()), (201, p["id"].clone()));
    let (status, _) = mup
        .control(
            Method::POST,
            "seed",
            Some(json!({"members": [{"project": 1, "username": "r"}]})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, p) = mup
        .control(Method::POST, "projects/1/deactivate", None)
        .await;
    assert_eq!((status, p["active"].clone()), (200, json!(false)));

    let (_, state) = mup.control(Method::GET, "state", None).await;
    assert_eq!(state["allocations"][0]["identifier"], "foreign_1");
    assert_eq!(state["members"][0]["user"], 1);
    let (status, body) = mup
        .control(
            Method::POST,
            "projects",
            Some(json!({"grant_number": "S-1"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    mup.control(Method::DELETE, "state", None).await;
    assert!(mup.sim.projects().is_empty());
    assert_eq!(mup.control(Method::GET, "nothing", None).await.0, 404);
}
