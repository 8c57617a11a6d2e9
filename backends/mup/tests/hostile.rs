//! Hostile tests of the MUP backend: garbled and lost answers, wrong
//! answers that could lead to destructive actions, hostile input through
//! the contract and concurrency. Each test names the behaviour it holds.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use mup_sim::{Fault, MupSim};
use serde_json::{Value, json};
use support::{GRANT, Portal, alice, bob, portal, resource};
use waldur_backend_sdk::proto::reason;
use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{Backend, BackendError};

// ------------------------------------------------------------ helpers

fn limits(cpu: i64, gpu: i64) -> Limits {
    BTreeMap::from([("cpu".to_owned(), cpu), ("gpu".to_owned(), gpu)])
}

fn request(p: &Portal, r: &ResourceContext, users: Vec<User>) -> CreateResource {
    CreateResource {
        backend_id: p.backend.generate_backend_id(&r.slug, Some(r)).unwrap(),
        resource: r.clone(),
        limits: limits(5, 2),
        users,
        ..CreateResource::default()
    }
}

/// Creates resource `r` and answers its backend id.
async fn create(p: &Portal, r: &ResourceContext, users: Vec<User>) -> String {
    p.backend
        .create_resource(request(p, r, users))
        .await
        .unwrap()
        .resource
        .backend_id
}

fn gpu_id(r: &ResourceContext) -> String {
    format!("alloc_{}_gpu", r.resource_uuid)
}

fn hard(id: &str) -> DeleteResource {
    DeleteResource {
        backend_id: id.to_owned(),
        mode: DeletionMode::Hard,
        resource: None,
    }
}

fn soft(id: &str) -> DeleteResource {
    DeleteResource {
        backend_id: id.to_owned(),
        mode: DeletionMode::Soft,
        resource: None,
    }
}

fn usage_of(id: &str) -> UsageQuery {
    UsageQuery {
        backend_ids: vec![id.to_owned()],
        period: None,
        timezone: None,
    }
}

/// Every matching request answered 200 with `body`.
fn body_fault(path: &str, body: &str) -> Fault {
    Fault {
        status: Some(200),
        body: Some(body.to_owned()),
        ..Fault::default().on(path)
    }
}

/// The next `method` request on `path` is served, then its answer lost.
fn lost(method: &str, path: &str, status: u16) -> Fault {
    Fault {
        after_serving: true,
        status: Some(status),
        ..Fault::default().on(path).method(method).times(1)
    }
}

fn assert_unavailable<T: std::fmt::Debug>(r: &Result<T, BackendError>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.reason, reason::BACKEND_NOT_READY, "{what}: {e:?}"),
        Ok(v) => panic!("{what}: expected UNAVAILABLE, got {v:?}"),
    }
}

/// Waits (polling, bounded) until a fault has been applied to a request
/// whose path contains `text`.
async fn wait_for_hit(sim: &MupSim, text: &str) {
    for _ in 0..1000 {
        if sim.fault_hits().iter().any(|h| h.contains(text)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no request on {text} arrived");
}

fn writes(sim: &MupSim) -> Vec<mup_sim::Call> {
    sim.calls()
        .into_iter()
        .filter(|c| c.method != "GET")
        .collect()
}

/// The project's allocations as the portal would list them, each passed
/// through `edit`.
fn listing(sim: &MupSim, pid: i64, edit: impl Fn(&mut serde_json::Map<String, Value>)) -> String {
    let list: Vec<Value> = sim
        .allocations(pid)
        .into_iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).unwrap();
            edit(v.as_object_mut().unwrap());
            v
        })
        .collect();
    Value::Array(list).to_string()
}

/// Re-issues `req` until it succeeds (at most `n` times).
async fn create_until_ok(p: &Portal, req: &CreateResource, n: usize) -> Created {
    let mut last = None;
    for _ in 0..n {
        match p.backend.create_resource(req.clone()).await {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
    }
    panic!("the create never completed: {last:?}");
}

/// One project for GRANT, active, with exactly the allocations of the
/// given resources (active, sized 5000/2), alice (and bob) active members
/// once each, and each portal user registered once.
fn assert_final_state(p: &Portal, resources: &[&ResourceContext], with_bob: bool) {
    let projects = p.sim.projects();
    assert_eq!(projects.len(), 1, "one project: {projects:?}");
    let project = &projects[0];
    assert_eq!(project.grant_number, GRANT);
    assert!(project.active, "the project is active");
    let allocations = p.sim.allocations(project.id);
    assert_eq!(
        allocations.len(),
        2 * resources.len(),
        "no duplicate allocation: {allocations:?}"
    );
    for r in resources {
        let cpu = p.sim.allocation(&format!("alloc_{}_cpu", r.resource_uuid));
        let gpu = p.sim.allocation(&gpu_id(r));
        let (cpu, gpu) = (cpu.unwrap(), gpu.unwrap());
        assert_eq!((cpu.size, cpu.active), (5000, true), "{cpu:?}");
        assert_eq!((gpu.size, gpu.active), (2, true), "{gpu:?}");
    }
    let users = p.sim.users();
    let expected_users = if with_bob { 2 } else { 1 };
    assert_eq!(users.len(), expected_users, "registered once: {users:?}");
    let members = p.sim.members(project.id);
    assert_eq!(
        members.len(),
        expected_users,
        "one membership each: {members:?}"
    );
    assert!(members.iter().all(|m| m.active), "{members:?}");
}

// ============================================= garbled and empty answers

/// Answers a portal may give instead of the JSON expected.
const GARBAGE: &[&str] = &[
    "[]",
    "{}",
    "",
    "<html><body><h1>502 Bad Gateway</h1></body></html>",
    "[{\"id\": 1, \"ident",
    "{\"count\": 0, \"next\": null, \"previous\": null, \"results\": []}",
    "{\"detail\": \"Not found.\"}",
    "null",
    "\"ok\"",
];

#[tokio::test]
async fn garbled_answers_to_every_read_are_unavailable_and_change_nothing() {
    let p = portal(json!({"cache_seconds": 0, "retries": 0})).await;
    let r = resource(1);
    let id = create(&p, &r, vec![alice(), bob()]).await;
    let other = create(&p, &resource(2), vec![alice()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    p.sim.set_usage(&id, [("alice", 1000.0)], None).unwrap();
    let before = p.sim.snapshot();
    let all = vec!["get", "limits", "users"];
    let endpoints = [
        (format!("/api/projects/allocations/{id}"), all.clone()),
        (format!("/api/projects/{pid}/allocations/list"), all.clone()),
        (format!("/api/projects/view/{pid}"), vec!["get"]),
        (
            format!("/api/projects/{pid}/members/list"),
            vec!["get", "users"],
        ),
    ];
    for (path, uses) in &endpoints {
        for body in GARBAGE {
            if path.ends_with("members/list") && *body == "[]" {
                continue; // a project without members: a valid answer
            }
            let what = format!("{path} answered {body:?}");
            p.sim.add_fault(body_fault(path, body));
            // Each operation that needs the garbled endpoint is UNAVAILABLE.
            let got = p.backend.get_resource(&id).await;
            if uses.contains(&"get") {
                assert_unavailable(&got, &format!("get_resource, {what}"));
            }
            let lim = p.backend.get_resource_limits(&id).await;
            if uses.contains(&"limits") {
                assert_unavailable(&lim, &format!("get_resource_limits, {what}"));
            }
            let listed = p
                .backend
                .list_resource_users(std::slice::from_ref(&id))
                .await;
            if uses.contains(&"users") {
                assert_unavailable(&listed, &format!("list_resource_users, {what}"));
            }
            let removed = p.backend.remove_users(&id, vec!["bob".into()]).await;
            if uses.contains(&"users") {
                assert_unavailable(&removed, &format!("remove_users, {what}"));
            }
            let set = p
                .backend
                .set_resource_limits(&id, BTreeMap::from([("cpu".into(), 9)]), None)
                .await;
            if uses.contains(&"limits") {
                assert_unavailable(&set, &format!("set_resource_limits, {what}"));
            }
            // Deleting `other` must never deactivate `id`'s project.
            let _ = p.backend.delete_resource(hard(&other)).await;
            p.sim.clear_faults();
            // Undo what a legitimate part of the calls did (set limits and
            // the delete of `other` may go through when the garbled
            // endpoint is one they do not need).
            let now = p.sim.snapshot();
            assert!(
                p.sim.project(pid).unwrap().active,
                "{what}: the project was deactivated"
            );
            // Only bob may have been removed (when remove_users did not
            // need the garbled endpoint).
            let alice_id = p.sim.user_by_username("alice").unwrap().id;
            assert!(
                p.sim
                    .members(pid)
                    .iter()
                    .any(|m| m.user == alice_id && m.active),
                "{what}: alice was deactivated"
            );
            assert_eq!(now.members.len(), before.members.len(), "{what}");
            assert!(p.sim.allocation(&id).unwrap().active, "{what}");
            assert_eq!(now.users, before.users, "{what}");
            assert_eq!(now.projects.len(), 1, "{what}");
            // Back to the starting point.
            p.backend.add_users(&id, vec![bob()], None).await.unwrap();
            p.backend
                .set_resource_limits(&id, limits(5, 2), None)
                .await
                .unwrap();
            create(&p, &resource(2), vec![alice()]).await;
        }
    }
}

#[tokio::test]
async fn garbled_user_lookups_fail_that_user_only_and_never_register_twice() {
    let p = portal(json!({"cache_seconds": 0, "retries": 0})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    for path in ["/api/user/by-email/", "/api/user/by-username/"] {
        for body in GARBAGE {
            p.sim.add_fault(body_fault(path, body));
            let results = p.backend.add_users(&id, vec![bob()], None).await.unwrap();
            p.sim.clear_faults();
            assert_eq!(results.len(), 1);
            // Garbage is not "no such user": bob is not registered, and
            // not added as someone else.
            assert_eq!(p.sim.users().len(), 1, "{path} answered {body:?}");
            assert_eq!(p.sim.members(pid).len(), 1, "{path} answered {body:?}");
            match &results[0].outcome {
                Outcome::Failed(e) => {
                    assert_eq!(
                        e.reason,
                        reason::BACKEND_NOT_READY,
                        "{path} {body:?}: {e:?}"
                    );
                }
                other => panic!("{path} answered {body:?}: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_project_lookup_answered_with_garbage_never_makes_a_project() {
    let p = portal(json!({"retries": 0})).await;
    let r = resource(1);
    for body in GARBAGE {
        p.sim.add_fault(body_fault("/by-grant/", body));
        let e = p
            .backend
            .create_resource(request(&p, &r, vec![alice()]))
            .await;
        p.sim.clear_faults();
        assert_unavailable(&e, &format!("by-grant answered {body:?}"));
        assert!(p.sim.projects().is_empty(), "by-grant answered {body:?}");
    }
    let created = create_until_ok(&p, &request(&p, &r, vec![alice()]), 1).await;
    assert!(created.ready);
}

#[tokio::test]
async fn ids_and_amounts_given_as_strings_are_read_as_numbers() {
    let p = portal(json!({"cache_seconds": 0})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    let body = listing(&p.sim, pid, |a| {
        for k in ["id", "size", "used", "project"] {
            let s = a[k].to_string();
            a.insert(k.into(), Value::String(s));
        }
    });
    p.sim
        .add_fault(body_fault(&format!("/{pid}/allocations/list"), &body));
    assert_eq!(
        p.backend.get_resource_limits(&id).await.unwrap(),
        limits(5, 2)
    );
}

#[tokio::test]
async fn a_usage_read_that_fails_reports_nothing_never_zeros() {
    let p = portal(json!({"retries": 0})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    p.sim.set_usage(&id, [("alice", 1500.0)], None).unwrap();
    for fault in [
        Fault::status(500).on("/usage"),
        Fault::status(503).on("/usage"),
        Fault::status(401).on("/usage"),
        body_fault("/usage", "<html>Service Unavailable</html>"),
        body_fault("/usage", "{\"total\": 15"),
        Fault {
            drop: true,
            ..Fault::default().on("/usage")
        },
    ] {
        p.sim.add_fault(fault.clone());
        let report = p.backend.usage_report(usage_of(&id)).await;
        p.sim.clear_faults();
        match report {
            Err(e) => assert_eq!(e.reason, reason::BACKEND_NOT_READY, "{fault:?}: {e:?}"),
            Ok(r) => assert!(r.is_empty(), "{fault:?}: reported {r:?}"),
        }
    }
}

#[tokio::test]
async fn usage_answers_without_amounts_never_report_zeros() {
    // `{}`, `[]`, an empty 200 or an unusable total say nothing about usage:
    // never "nothing used".
    let p = portal(json!({"retries": 0})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    p.sim.set_usage(&id, [("alice", 1500.0)], None).unwrap();
    let mut bad = Vec::new();
    for body in [
        "{}",
        "[]",
        "",
        "{\"detail\": \"Not found.\"}",
        "{\"total\": null, \"users\": {}}",
        "{\"total\": \"n/a\", \"users\": {}}",
    ] {
        p.sim.add_fault(body_fault("/usage", body));
        let report = p.backend.usage_report(usage_of(&id)).await;
        p.sim.clear_faults();
        if let Ok(r) = &report
            && r.iter().any(|u| u.total.get("cpu") == Some(&0.0))
        {
            bad.push(format!("{body:?} reported {:?}", r[0].total));
        }
    }
    assert!(
        bad.is_empty(),
        "zeros reported for unusable usage answers: {bad:#?}"
    );
}

// ============================== wrong answers leading to destructive acts

#[tokio::test]
async fn a_member_list_that_looks_empty_removes_nobody_and_adds_no_duplicate() {
    let p = portal(json!({"cache_seconds": 0})).await;
    let id = create(&p, &resource(1), vec![alice(), bob()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    p.sim.add_fault(body_fault("/members/list", "[]"));
    let removed = p
        .backend
        .remove_users(&id, vec!["alice".into(), "bob".into()])
        .await
        .unwrap();
    assert!(removed.iter().all(|r| r.outcome == Outcome::Unchanged));
    let added = p
        .backend
        .add_users(&id, vec![alice(), bob()], None)
        .await
        .unwrap();
    assert_eq!(added.len(), 2);
    p.sim.clear_faults();
    let members = p.sim.members(pid);
    assert_eq!(members.len(), 2, "no duplicate membership: {members:?}");
    assert!(members.iter().all(|m| m.active));
    assert_eq!(p.sim.users().len(), 2, "nobody registered twice");
}

#[tokio::test]
async fn a_member_list_with_a_shorter_or_id_less_record_deactivates_nobody() {
    let p = portal(json!({"cache_seconds": 0})).await;
    let id = create(&p, &resource(1), vec![alice(), bob()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    // bob's record without its membership id; alice's with a null id.
    for body in [
        "[{\"id\": 1, \"active\": true, \"member\": {\"username\": \"alice\"}}, {\"active\": true, \"member\": {\"username\": \"bob\"}}]",
        "[{\"id\": null, \"active\": true, \"member\": {\"username\": \"bob\"}}]",
    ] {
        p.sim.add_fault(body_fault("/members/list", body));
        let r = p.backend.remove_users(&id, vec!["bob".into()]).await;
        p.sim.clear_faults();
        assert_unavailable(&r, body);
    }
    assert!(p.sim.members(pid).iter().all(|m| m.active));
}

#[tokio::test]
async fn a_member_whose_active_flag_is_not_a_boolean_is_not_reported_as_a_member() {
    // A non-boolean `active` ("false", 0, null) must not read as true: the
    // deactivated member would be listed as a user, and an add of that user
    // would answer UNCHANGED without reactivating it.
    let p = portal(json!({"cache_seconds": 0})).await;
    let id = create(&p, &resource(1), vec![alice(), bob()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    p.backend
        .remove_users(&id, vec!["bob".into()])
        .await
        .unwrap();
    let bob_membership = p.sim.members(pid).into_iter().find(|m| !m.active).unwrap();
    let alice_membership = p.sim.members(pid).into_iter().find(|m| m.active).unwrap();
    let body = json!([
        {"id": alice_membership.id, "active": true, "username": "alice", "email": "alice@uni.example"},
        {"id": bob_membership.id, "active": "false", "username": "bob", "email": "bob@uni.example"},
    ])
    .to_string();
    p.sim.add_fault(body_fault("/members/list", &body));
    let listed = p
        .backend
        .list_resource_users(std::slice::from_ref(&id))
        .await;
    if let Ok(l) = &listed {
        assert_eq!(
            l.found[&id],
            ["alice"],
            "a member with active \"false\" was reported as a member"
        );
    }
    let added = p.backend.add_users(&id, vec![bob()], None).await.unwrap();
    p.sim.clear_faults();
    assert!(
        !matches!(added[0].outcome, Outcome::Unchanged)
            || p.sim.members(pid).iter().all(|m| m.active),
        "bob's deactivated membership was read as active and left deactivated"
    );
}

#[tokio::test]
async fn an_empty_allocation_list_never_lets_a_delete_deactivate_the_project() {
    let p = portal(json!({"cache_seconds": 0})).await;
    let a = create(&p, &resource(1), vec![alice()]).await;
    let b = create(&p, &resource(2), vec![alice()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    for body in ["[]", "{}", ""] {
        p.sim
            .add_fault(body_fault(&format!("/{pid}/allocations/list"), body));
        let r = p.backend.delete_resource(hard(&a)).await;
        p.sim.clear_faults();
        assert_unavailable(&r, body);
        assert!(p.sim.project(pid).unwrap().active, "{body:?}");
        assert!(p.sim.allocation(&a).unwrap().active, "{body:?}");
    }
    assert!(p.sim.allocation(&b).unwrap().active);
}

#[tokio::test]
async fn a_delete_never_deactivates_a_project_whose_listing_omits_the_active_flags() {
    // Guards: a listing without `active` must not read as "inactive"
    // (it did: `Allocation::active` defaulted to false), so a listing without
    // `active` (another deployment's shape, a serializer change) makes every
    // other allocation look inactive and the project is deactivated under
    // a resource that is still in use.
    let p = portal(json!({"cache_seconds": 0})).await;
    let a = create(&p, &resource(1), vec![alice()]).await;
    let b = create(&p, &resource(2), vec![alice()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    let body = listing(&p.sim, pid, |a| {
        a.remove("active");
    });
    p.sim
        .add_fault(body_fault(&format!("/{pid}/allocations/list"), &body));
    let r = p.backend.delete_resource(hard(&a)).await;
    p.sim.clear_faults();
    assert!(p.sim.allocation(&b).unwrap().active);
    assert!(
        p.sim.project(pid).unwrap().active,
        "the project of an active resource was deactivated (delete answered {r:?})"
    );
}

#[tokio::test]
async fn a_garbled_allocation_size_is_never_read_as_a_zero_or_negative_limit() {
    // Guards: a null or non-numeric size must not read as 0 (it did), and a
    // negative size becomes a negative limit.
    let p = portal(json!({"cache_seconds": 0})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    let mut bad = Vec::new();
    for size in [json!(null), json!("lots"), json!(-5000), json!(-2)] {
        let body = listing(&p.sim, pid, |a| {
            a.insert("size".into(), size.clone());
        });
        p.sim
            .add_fault(body_fault(&format!("/{pid}/allocations/list"), &body));
        let got = p.backend.get_resource_limits(&id).await;
        p.sim.clear_faults();
        if let Ok(l) = &got
            && l.values().any(|v| *v <= 0)
        {
            bad.push(format!("size {size} read as limits {l:?}"));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

#[tokio::test]
async fn a_soft_delete_zeroes_an_allocation_whose_size_the_portal_garbled() {
    // Guards: a garbled size once read as 0, so the soft delete skipped the
    // edit, answers OK, and the allocation keeps its full size.
    let p = portal(json!({"cache_seconds": 0})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    let body = listing(&p.sim, pid, |a| {
        a.insert("size".into(), Value::Null);
    });
    p.sim
        .add_fault(body_fault(&format!("/{pid}/allocations/list"), &body).times(1));
    let r = p.backend.delete_resource(soft(&id)).await;
    p.sim.clear_faults();
    if r.is_ok() {
        assert_eq!(
            p.sim.allocation(&id).unwrap().size,
            0,
            "soft delete answered OK but the allocation keeps its size"
        );
    }
}

#[tokio::test]
async fn a_limit_change_never_overwrites_the_portals_used_amount() {
    // An edit that sent back `used` as read before would lose usage the
    // portal accounts between the read and the write (and a null `used`
    // would reset it to 0).
    let p = portal(json!({"cache_seconds": 0})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    p.sim.set_usage(&id, [("alice", 1500.0)], None).unwrap();
    assert_eq!(p.sim.allocation(&id).unwrap().used, 1500);
    // The edit is held while the portal accounts more usage.
    p.sim.add_fault(Fault {
        latency_ms: 1500,
        ..Fault::default()
            .on("/allocations/edit/")
            .method("PUT")
            .times(1)
    });
    let backend_call =
        p.backend
            .set_resource_limits(&id, BTreeMap::from([("cpu".into(), 9)]), None);
    let portal_accounts = async {
        wait_for_hit(&p.sim, "/allocations/edit/").await;
        p.sim.set_usage(&id, [("alice", 2500.0)], None).unwrap();
    };
    let (applied, ()) = tokio::join!(backend_call, portal_accounts);
    applied.unwrap();
    let a = p.sim.allocation(&id).unwrap();
    assert_eq!(a.size, 9000);
    assert_eq!(a.used, 2500, "the limit change wrote back a stale `used`");
}

#[tokio::test]
async fn a_project_lookup_answering_another_grant_never_receives_the_allocations() {
    // A by-grant answer naming another grant (a portal or proxy bug) must
    // not put the resource under someone else's grant.
    let p = portal(json!({})).await;
    let other = p
        .sim
        .add_project("OTHER-GRANT", "someone else", "pi@uni.example", true);
    let other_json = serde_json::to_string(&p.sim.project(other).unwrap()).unwrap();
    p.sim.add_fault(body_fault("/by-grant/", &other_json));
    let r = p
        .backend
        .create_resource(request(&p, &resource(1), vec![alice()]))
        .await;
    p.sim.clear_faults();
    assert!(
        p.sim.allocations(other).is_empty(),
        "the resource of {GRANT} was created under OTHER-GRANT (create answered {r:?})"
    );
}

#[tokio::test]
async fn a_proxys_html_404_is_not_read_as_a_deleted_allocation() {
    // Guards: a 404 that is not the API's own is not "absent"; a proxy or
    // maintenance page answering
    // 404 makes a delete report existed=false (Waldur forgets a resource
    // that stays active) and a usage report leave it out.
    let p = portal(json!({"cache_seconds": 0, "retries": 0})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    p.sim.add_fault(Fault {
        status: Some(404),
        body: Some("<html><body><h1>404 Not Found</h1>nginx</body></html>".into()),
        ..Fault::default().on("/api/")
    });
    let deleted = p.backend.delete_resource(hard(&id)).await;
    let got = p.backend.get_resource(&id).await;
    p.sim.clear_faults();
    assert!(p.sim.allocation(&id).unwrap().active);
    assert_unavailable(&deleted, "delete through an HTML 404");
    assert_unavailable(&got, "get_resource through an HTML 404");
}

// ===================================== lost answers after applied writes

#[tokio::test]
async fn a_create_whose_answer_is_lost_at_any_write_completes_without_duplicates() {
    let steps: &[(&str, &str)] = &[
        ("POST", "/api/projects/add/"),
        ("PUT", "/activate"),
        ("POST", "/api/user/"),
        ("POST", "/myaccessid"),
        ("POST", "/allocations/add"),
        ("POST", "/members/add"),
    ];
    for (method, path) in steps {
        for status in [500, 502, 504] {
            let p = portal(json!({"retries": 1})).await;
            let r = resource(1);
            let req = request(&p, &r, vec![alice(), bob()]);
            p.sim.add_fault(lost(method, path, status));
            let first = p.backend.create_resource(req.clone()).await;
            let done = match first {
                Ok(c) => c,
                Err(_) => create_until_ok(&p, &req, 3).await,
            };
            // A lost membership answer fails that user: the re-issue heals.
            let done = if done
                .user_results
                .iter()
                .any(|u| matches!(u.outcome, Outcome::Failed(_)))
            {
                create_until_ok(&p, &req, 3).await
            } else {
                done
            };
            assert_eq!(
                done.resource.users,
                ["alice", "bob"],
                "{method} {path} {status}"
            );
            assert_final_state(&p, &[&r], true);
        }
    }
}

#[tokio::test]
async fn a_dropped_connection_after_each_create_write_completes_without_duplicates() {
    for (method, path) in [
        ("POST", "/api/projects/add/"),
        ("POST", "/api/user/"),
        ("POST", "/allocations/add"),
        ("POST", "/members/add"),
    ] {
        let p = portal(json!({"retries": 2})).await;
        let r = resource(1);
        let req = request(&p, &r, vec![alice(), bob()]);
        p.sim.add_fault(Fault {
            drop: true,
            after_serving: true,
            ..Fault::default().on(path).method(method).times(1)
        });
        let _ = p.backend.create_resource(req.clone()).await;
        let done = create_until_ok(&p, &req, 3).await;
        assert_eq!(done.resource.users, ["alice", "bob"], "{method} {path}");
        assert_final_state(&p, &[&r], true);
    }
}

#[tokio::test]
async fn a_create_interrupted_after_one_allocation_completes_when_the_primary_component_sorts_last()
{
    // With `primary_component: gpu` (what import-config sets when the
    // original listed gpu first), an add that fails or loses its answer
    // must not leave a resource whose re-issued create never completes.
    let p = portal(json!({"primary_component": "gpu"})).await;
    let r = resource(1);
    let req = request(&p, &r, vec![alice()]);
    assert_eq!(req.backend_id, gpu_id(&r));
    p.sim.add_fault(lost("POST", "/allocations/add", 502));
    assert!(p.backend.create_resource(req.clone()).await.is_err());
    let done = create_until_ok(&p, &req, 3).await;
    assert_eq!(done.resource.limits, limits(5, 2));
    assert_final_state(&p, &[&r], false);
}

#[tokio::test]
async fn a_create_whose_second_allocation_fails_completes_when_the_primary_component_sorts_last() {
    // As above, without any lost answer: the first add succeeds, the second
    // answers 503 once (a POST is not retried once sent).
    let p = portal(json!({"primary_component": "gpu"})).await;
    let r = resource(1);
    let req = request(&p, &r, vec![alice()]);
    // The first add passes (a pass-through fault used up), the second fails.
    p.sim.add_fault(
        Fault::default()
            .on("/allocations/add")
            .method("POST")
            .times(1),
    );
    p.sim.add_fault(
        Fault::status(503)
            .on("/allocations/add")
            .method("POST")
            .times(1),
    );
    assert!(p.backend.create_resource(req.clone()).await.is_err());
    // The primary allocation is made first, so the resource is findable.
    assert!(p.sim.allocation(&gpu_id(&r)).is_some());
    let done = create_until_ok(&p, &req, 3).await;
    assert_eq!(done.resource.limits, limits(5, 2));
    assert_final_state(&p, &[&r], false);
}

#[tokio::test]
async fn limit_changes_with_lost_answers_converge_without_duplicates() {
    let p = portal(json!({"components": {"mem": {"label": "M", "measured_unit": "GB", "accounting_type": "limit"}}})).await;
    let r = resource(1);
    let id = create(&p, &r, vec![alice()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    let n = p.sim.allocations(pid).len();
    let want = BTreeMap::from([("cpu".to_owned(), 8), ("mem".to_owned(), 64)]);
    for fault in [
        lost("PUT", "/allocations/edit/", 500),
        lost("POST", "/allocations/add", 500),
        lost("PUT", "/allocations/edit/", 502),
    ] {
        p.sim.add_fault(fault);
        let _ = p.backend.set_resource_limits(&id, want.clone(), None).await;
    }
    let applied = p
        .backend
        .set_resource_limits(&id, want.clone(), None)
        .await
        .unwrap();
    assert_eq!(applied.limits["cpu"], 8);
    assert_eq!(applied.limits["mem"], 64);
    assert_eq!(
        p.sim.allocations(pid).len(),
        n.max(3),
        "no duplicate allocation"
    );
    p.sim.reset_calls();
    p.backend
        .set_resource_limits(&id, want, None)
        .await
        .unwrap();
    assert!(writes(&p.sim).is_empty(), "a repeated change wrote");
}

#[tokio::test]
async fn a_hard_delete_with_lost_answers_converges_and_keeps_other_resources() {
    for (method, path) in [("PUT", "/allocations/edit/"), ("PUT", "/deactivate")] {
        let p = portal(json!({})).await;
        let a = create(&p, &resource(1), vec![alice()]).await;
        let pid = p.sim.project_by_grant(GRANT).unwrap().id;
        p.sim.add_fault(lost(method, path, 500));
        let first = p.backend.delete_resource(hard(&a)).await;
        let again = p.backend.delete_resource(hard(&a)).await.unwrap();
        assert!(
            first.is_err() || first.as_ref().unwrap().existed,
            "{path}: {first:?}"
        );
        assert!(again.ready);
        assert!(p.sim.allocations(pid).iter().all(|x| !x.active), "{path}");
        assert!(!p.sim.project(pid).unwrap().active, "{path}");
        assert_eq!(
            p.backend.get_resource(&a).await.unwrap_err().reason,
            reason::RESOURCE_NOT_FOUND
        );
    }
}

#[tokio::test]
async fn a_hard_delete_whose_last_edit_answer_is_lost_still_deactivates_the_emptied_project() {
    // The named allocation is deactivated last; when that answer is lost,
    // the re-issued delete finds the resource not live and answers
    // existed=false at once, so the emptied project is never deactivated.
    let p = portal(json!({})).await;
    let a = create(&p, &resource(1), vec![alice()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    let aid = p.sim.allocation(&a).unwrap().id;
    p.sim
        .add_fault(lost("PUT", &format!("/{pid}/allocations/edit/{aid}"), 500));
    assert!(p.backend.delete_resource(hard(&a)).await.is_err());
    p.backend.delete_resource(hard(&a)).await.unwrap();
    assert!(p.sim.allocations(pid).iter().all(|x| !x.active));
    assert!(
        !p.sim.project(pid).unwrap().active,
        "the emptied project stays active after the re-issued delete"
    );
}

#[tokio::test]
async fn a_soft_delete_of_a_resource_already_gone_succeeds_with_existed_false() {
    // Guards SPEC §5.4.1 — deleting a resource that does not exist MUST
    // succeed. A soft delete after a hard one (or of a re-issued soft delete
    // whose resource was hard-deleted meanwhile) answers RESOURCE_NOT_FOUND.
    let p = portal(json!({})).await;
    let a = create(&p, &resource(1), vec![alice()]).await;
    p.backend.delete_resource(hard(&a)).await.unwrap();
    let r = p.backend.delete_resource(soft(&a)).await;
    assert!(
        matches!(&r, Ok(d) if !d.existed),
        "soft delete of a deleted resource: {r:?}"
    );
}

#[tokio::test]
async fn membership_changes_with_lost_answers_converge_without_duplicates() {
    let p = portal(json!({})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    // Add: registration and membership answers lost.
    for fault in [
        lost("POST", "/api/user/", 500),
        lost("POST", "/members/add", 500),
    ] {
        p.sim.add_fault(fault);
        let r = p.backend.add_users(&id, vec![bob()], None).await.unwrap();
        assert_eq!(r.len(), 1);
    }
    let r = p.backend.add_users(&id, vec![bob()], None).await.unwrap();
    assert_ne!(r[0].outcome, Outcome::Applied, "{r:?}");
    assert_eq!(p.sim.users().len(), 2);
    assert_eq!(p.sim.members(pid).len(), 2);
    // Remove: toggle answer lost, then re-issued.
    p.sim.add_fault(lost("PUT", "/toggle-status", 500));
    let first = p
        .backend
        .remove_users(&id, vec!["bob".into()])
        .await
        .unwrap();
    assert!(matches!(first[0].outcome, Outcome::Failed(_)), "{first:?}");
    let again = p
        .backend
        .remove_users(&id, vec!["bob".into()])
        .await
        .unwrap();
    assert_eq!(again[0].outcome, Outcome::Unchanged);
    assert_eq!(
        p.sim.members(pid).iter().filter(|m| m.active).count(),
        1,
        "alice stays, bob is deactivated"
    );
    // Re-add: toggle answer lost, then re-issued.
    p.sim.add_fault(lost("PUT", "/toggle-status", 500));
    let _ = p.backend.add_users(&id, vec![bob()], None).await.unwrap();
    let again = p.backend.add_users(&id, vec![bob()], None).await.unwrap();
    assert_eq!(again[0].outcome, Outcome::Unchanged);
    assert_eq!(p.sim.members(pid).len(), 2);
    assert!(p.sim.members(pid).iter().all(|m| m.active));
}

// ====================================================== hostile input

#[tokio::test]
async fn hostile_backend_ids_are_not_found_and_reach_only_the_lookup_endpoint() {
    let p = portal(json!({"cache_seconds": 0})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    let before = p.sim.snapshot();
    let long = "a".repeat(20_000);
    let hostile = [
        "",
        "/",
        "..",
        ".",
        "../../projects/list/",
        "%2F..%2F",
        &format!("{id}/../../{pid}/deactivate"),
        &format!("{id}%2F"),
        &format!("{id}?x=1"),
        &format!("{id}#frag"),
        &id.to_uppercase(),
        "alloc_ÄÖÜ00000000000000000000000000_cpu",
        "alloc_0000000000000000000000000000000١_cpu",
        "alloc_00000000000000000000000000000001_cpu\n",
        "\u{0000}",
        long.as_str(),
    ];
    for bad in hostile {
        p.sim.reset_calls();
        let what = format!("{:?}", bad.chars().take(60).collect::<String>());
        let got = p.backend.get_resource(bad).await.unwrap_err();
        assert!(
            got.reason == reason::RESOURCE_NOT_FOUND
                || got.reason == reason::INVALID_FIELD
                || got.reason == reason::RESOURCE_NOT_MANAGED,
            "{what}: {got:?}"
        );
        let deleted = p.backend.delete_resource(hard(bad)).await;
        assert!(
            matches!(&deleted, Ok(d) if !d.existed) || deleted.is_err(),
            "{what}: {deleted:?}"
        );
        let u = p.backend.usage_report(usage_of(bad)).await.unwrap();
        assert!(u.is_empty(), "{what}");
        for c in p.sim.calls() {
            assert_eq!(c.method, "GET", "{what} led to {c:?}");
            assert!(
                c.path.starts_with("/api/projects/allocations/")
                    || c.path == "/api/projects/allocations",
                "{what} reached {}",
                c.path
            );
        }
    }
    assert_eq!(p.sim.snapshot(), before, "a hostile id changed the portal");
}

#[tokio::test]
async fn grants_with_odd_characters_are_found_again_not_made_twice() {
    for grant in [
        "GRANT-ÆØÅ-ñ-1",
        "X%2FY",
        "G?x=1#f",
        "G 1",
        "G;rm -rf",
        "\u{202e}EVIL",
    ] {
        let p = portal(json!({})).await;
        let mut r1 = resource(1);
        r1.project_name = format!("Call / {grant} / Title");
        let mut r2 = resource(2);
        r2.project_name = r1.project_name.clone();
        create(&p, &r1, vec![alice()]).await;
        create(&p, &r2, vec![alice()]).await;
        let projects = p.sim.projects();
        assert_eq!(projects.len(), 1, "{grant}: {projects:?}");
        assert_eq!(projects[0].grant_number, grant);
        assert_eq!(p.sim.allocations(projects[0].id).len(), 4, "{grant}");
    }
}

#[tokio::test]
async fn a_grant_of_dot_segments_is_refused_or_found_again_never_lost() {
    // URLs resolve "." and ".." path segments away: /api/projects/by-grant/..
    // would be /api/projects/by-grant, whose 404 reads as "no project", and
    // a second resource would never find the first one's project.
    for grant in [".", ".."] {
        let p = portal(json!({})).await;
        let mut r1 = resource(1);
        r1.project_name = format!("Call / {grant} / Title");
        let mut r2 = resource(2);
        r2.project_name = r1.project_name.clone();
        let first = p
            .backend
            .create_resource(request(&p, &r1, vec![alice()]))
            .await;
        match first {
            Err(e) => assert_eq!(e.reason, reason::INVALID_FIELD, "{grant}: {e:?}"),
            Ok(_) => {
                let second = p
                    .backend
                    .create_resource(request(&p, &r2, vec![alice()]))
                    .await;
                assert!(second.is_ok(), "{grant}: second resource: {second:?}");
                assert_eq!(p.sim.projects().len(), 1, "{grant}");
            }
        }
    }
}

#[tokio::test]
async fn odd_usernames_and_emails_fail_only_their_own_user() {
    let p = portal(json!({})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    let odd = |username: &str, email: &str| User {
        username: username.into(),
        email: email.into(),
        full_name: "Odd One".into(),
        ..User::default()
    };
    let users = vec![
        odd("with space", "with space@uni.example"),
        odd("double", "double@@uni.example"),
        odd("", ""),
        odd("../../etc", "dots@uni.example"),
        odd("slash/name", "slash/name@uni.example"),
        odd("ünï", "ünï@uni.example"),
        odd(
            &"x".repeat(300),
            &format!("{}@uni.example", "y".repeat(300)),
        ),
        bob(),
    ];
    let n = users.len();
    let names: Vec<String> = users.iter().map(|u| u.username.clone()).collect();
    let r = p.backend.add_users(&id, users, None).await.unwrap();
    assert_eq!(r.len(), n, "one result per user");
    let got: Vec<String> = r.iter().map(|u| u.username.clone()).collect();
    assert_eq!(got, names, "in request order");
    assert_eq!(r[n - 1].outcome, Outcome::Applied, "bob is added: {r:?}");
    // Removing odd names deactivates nobody else.
    let removed = p
        .backend
        .remove_users(
            &id,
            vec![
                "".into(),
                "ALICE".into(),
                "alice ".into(),
                "%61lice".into(),
                "*".into(),
            ],
        )
        .await
        .unwrap();
    assert!(
        removed.iter().all(|u| u.outcome == Outcome::Unchanged),
        "{removed:?}"
    );
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    let alice_id = p.sim.user_by_email("alice@uni.example").unwrap().id;
    assert!(
        p.sim
            .members(pid)
            .iter()
            .any(|m| m.user == alice_id && m.active)
    );
}

#[tokio::test]
async fn extreme_limits_are_refused_and_change_nothing() {
    let p = portal(json!({})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    let before = p.sim.snapshot();
    for (key, limit) in [
        ("cpu", i64::MAX),
        ("cpu", i64::MIN),
        ("cpu", -1),
        ("gpu", i64::MAX),
        ("gpu", -1),
        ("cpu", 9_007_199_254_741),
    ] {
        let e = p
            .backend
            .set_resource_limits(&id, BTreeMap::from([(key.to_owned(), limit)]), None)
            .await
            .unwrap_err();
        assert_eq!(e.reason, reason::INVALID_FIELD, "{key}={limit}: {e:?}");
    }
    let e = p
        .backend
        .set_resource_limits(&id, BTreeMap::from([("bogus".to_owned(), 1)]), None)
        .await
        .unwrap_err();
    assert_eq!(e.reason, reason::UNKNOWN_COMPONENT);
    assert_eq!(p.sim.snapshot(), before);
    // 2^53 itself is the largest size that reads back.
    let top = 9_007_199_254_740_992_i64;
    let applied = p
        .backend
        .set_resource_limits(&id, BTreeMap::from([("gpu".to_owned(), top)]), None)
        .await
        .unwrap();
    assert_eq!(applied.limits["gpu"], top);
    assert_eq!(
        p.backend.get_resource_limits(&id).await.unwrap()["gpu"],
        top
    );
}

#[tokio::test]
async fn a_limit_just_above_two_to_the_53_is_refused_not_rounded() {
    // Guards: `limit as f64` rounds 2^53+1 to 2^53 before a range check,
    // so the limit is accepted and reads back as a different number.
    let p = portal(json!({})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    let limit = 9_007_199_254_740_993_i64;
    let r = p
        .backend
        .set_resource_limits(&id, BTreeMap::from([("gpu".to_owned(), limit)]), None)
        .await;
    match r {
        Err(e) => assert_eq!(e.reason, reason::INVALID_FIELD),
        Ok(applied) => assert_eq!(
            applied.limits["gpu"], limit,
            "accepted, but reads back as another limit"
        ),
    }
}

#[tokio::test]
async fn a_limit_that_is_not_a_whole_size_is_refused_even_with_a_tiny_unit_factor() {
    // With unit_factor 1e-6 (Waldur MB, MUP TB), 1,000,001 MB would become
    // 1 TB and read back as 1,000,000: refused instead.
    let p = portal(json!({"components": {"tb": {"label": "Storage", "measured_unit": "MB", "accounting_type": "limit", "unit_factor": 0.000001}}})).await;
    let id = create(&p, &resource(1), vec![alice()]).await;
    let r = p
        .backend
        .set_resource_limits(&id, BTreeMap::from([("tb".to_owned(), 1_000_001)]), None)
        .await;
    match r {
        Err(e) => assert_eq!(e.reason, reason::INVALID_FIELD),
        Ok(applied) => assert_eq!(
            applied.limits["tb"], 1_000_001,
            "accepted, but reads back as another limit"
        ),
    }
    // A whole size is taken and reads back.
    let ok = p
        .backend
        .set_resource_limits(&id, BTreeMap::from([("tb".to_owned(), 3_000_000)]), None)
        .await
        .unwrap();
    assert_eq!(ok.limits["tb"], 3_000_000);
}

#[tokio::test]
async fn a_create_refuses_limits_naming_an_unknown_component() {
    // SPEC §4.4: limits naming a component that is not listed MUST be
    // refused (UNKNOWN_COMPONENT), also when the SDK's check is bypassed.
    let p = portal(json!({})).await;
    let r = resource(1);
    let mut req = request(&p, &r, vec![alice()]);
    req.limits.insert("bogus".into(), 7);
    let e = p.backend.create_resource(req).await;
    assert!(
        matches!(&e, Err(e) if e.reason == reason::UNKNOWN_COMPONENT),
        "{e:?}"
    );
    assert!(p.sim.projects().is_empty());
}

#[tokio::test]
async fn a_create_refuses_negative_and_oversized_limits_before_writing() {
    let p = portal(json!({})).await;
    for l in [-1, i64::MIN, i64::MAX] {
        let mut req = request(&p, &resource(1), vec![alice()]);
        req.limits = limits(l, 1);
        let e = p.backend.create_resource(req).await.unwrap_err();
        assert_eq!(e.reason, reason::INVALID_FIELD, "{l}");
    }
    assert!(p.sim.projects().is_empty());
    assert!(p.sim.users().is_empty());
}

#[tokio::test]
async fn a_huge_project_duration_is_refused_not_a_panic() {
    // `jiff::Span::days` panics above 7,304,484 days: a huge
    // `project_duration_days` must be refused, never panic a request.
    let parsed = waldur_backend_mup::MupSettings::parse(support::settings(
        "http://127.0.0.1:9",
        json!({"project_duration_days": 100_000_000}),
    ));
    if parsed.is_err() {
        return; // refused at start: fine
    }
    let p = std::sync::Arc::new(portal(json!({"project_duration_days": 100_000_000})).await);
    let q = p.clone();
    let joined = tokio::spawn(async move {
        let req = request(&q, &resource(1), vec![alice()]);
        q.backend.create_resource(req).await.map(|_| ())
    })
    .await;
    assert!(
        !joined.as_ref().is_err_and(tokio::task::JoinError::is_panic),
        "create panicked: {joined:?}"
    );
}

#[tokio::test]
async fn a_malformed_page_token_is_no_panic() {
    let p = portal(json!({})).await;
    create(&p, &resource(1), vec![alice()]).await;
    for token in ["", "\u{ffff}", "zzzzzzzz", "alloc_", &"9".repeat(10_000)] {
        let page = p
            .backend
            .list_resources(PageRequest {
                parent_id: None,
                page_size: 1,
                page_token: Some(token.into()),
            })
            .await
            .unwrap();
        assert!(page.resources.len() <= 1);
    }
}

// ====================================================== concurrency

#[tokio::test]
async fn two_creates_of_one_new_project_at_once_make_one_project() {
    let p = portal(json!({})).await;
    // Slow the project lookup down so both creates overlap.
    p.sim.add_fault(Fault {
        latency_ms: 200,
        ..Fault::default().on("/by-grant/").times(2)
    });
    let (r1, r2) = (resource(1), resource(2));
    let (a, b) = tokio::join!(
        p.backend
            .create_resource(request(&p, &r1, vec![alice(), bob()])),
        p.backend
            .create_resource(request(&p, &r2, vec![alice(), bob()])),
    );
    a.unwrap();
    b.unwrap();
    assert_final_state(&p, &[&r1, &r2], true);
}

#[tokio::test]
async fn two_creates_of_one_new_project_on_two_backends_make_one_project() {
    // Two server processes (or an instance restarted mid-create) share no
    // lock: the portal's unique grant number is all that stops a second
    // project.
    let p = portal(json!({})).await;
    let second = support::backend(&p.url, support::PASSWORD, json!({}));
    p.sim.add_fault(Fault {
        latency_ms: 200,
        ..Fault::default().on("/by-grant/").times(2)
    });
    let (r1, r2) = (resource(1), resource(2));
    let (a, b) = tokio::join!(
        p.backend
            .create_resource(request(&p, &r1, vec![alice(), bob()])),
        second.create_resource(request(&p, &r2, vec![alice(), bob()])),
    );
    // One may have to wait for the other's project (UNAVAILABLE), never more.
    let req1 = request(&p, &r1, vec![alice(), bob()]);
    let req2 = request(&p, &r2, vec![alice(), bob()]);
    if a.is_err() {
        create_until_ok(&p, &req1, 3).await;
    }
    if let Err(e) = b {
        assert_ne!(e.reason, reason::INVALID_FIELD, "{e:?}");
        create_until_ok(&p, &req2, 3).await;
    }
    assert_final_state(&p, &[&r1, &r2], true);
}

#[tokio::test]
async fn a_delete_racing_a_create_in_the_same_project_never_leaves_it_deactivated() {
    // Guards: delete decides "no other allocation is active" from a listing
    // read before it deactivates the project; a create of another resource
    // of that project between the two ends with an active allocation in a
    // deactivated project (or, the other way round, with a create refused
    // "project is not active", which fails the order). The project lock is
    // held only around finding/making the project.
    let p = portal(json!({"cache_seconds": 0})).await;
    let (r1, r2) = (resource(1), resource(2));
    let a = create(&p, &r1, vec![alice()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    // The delete's project deactivation is held in flight...
    p.sim.add_fault(Fault {
        latency_ms: 1500,
        ..Fault::default().on("/deactivate").method("PUT").times(1)
    });
    let delete = p.backend.delete_resource(hard(&a));
    // ...while the create of r2 runs.
    let create_r2 = async {
        wait_for_hit(&p.sim, "/deactivate").await;
        p.backend
            .create_resource(request(&p, &r2, vec![alice()]))
            .await
    };
    let (deleted, created) = tokio::join!(delete, create_r2);
    deleted.unwrap();
    let created = created.map(|_| ());
    let b = p.sim.allocation(&gpu_id(&r2));
    assert!(created.is_ok(), "create of r2 failed: {created:?}");
    assert!(b.is_some_and(|b| b.active));
    assert!(
        p.sim.project(pid).unwrap().active,
        "r2 is active in a deactivated project"
    );
}

#[tokio::test]
async fn a_create_racing_a_delete_in_the_same_project_is_neither_refused_nor_left_deactivated() {
    // The other order: the create has found and activated the project and
    // its allocation add is in flight when a delete of the project's only
    // other resource runs. The delete sees no other active allocation and
    // deactivates the project; the add then lands in (or is refused by) a
    // deactivated project. The project lock covers the create's lookup and
    // activation but not its allocation adds.
    let p = portal(json!({"cache_seconds": 0})).await;
    let (r1, r2) = (resource(1), resource(2));
    let a = create(&p, &r1, vec![alice()]).await;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    p.sim.add_fault(Fault {
        latency_ms: 1500,
        ..Fault::default()
            .on("/allocations/add")
            .method("POST")
            .times(1)
    });
    let create_r2 = p.backend.create_resource(request(&p, &r2, vec![alice()]));
    let delete = async {
        wait_for_hit(&p.sim, "/allocations/add").await;
        p.backend.delete_resource(hard(&a)).await
    };
    let (created, deleted) = tokio::join!(create_r2, delete);
    deleted.unwrap();
    let created = created.map(|_| ());
    assert!(created.is_ok(), "create of r2 failed: {created:?}");
    assert!(
        p.sim.project(pid).unwrap().active,
        "r2 is active in a deactivated project"
    );
}

#[tokio::test]
async fn adding_one_new_user_to_two_projects_at_once_registers_them_once() {
    let p = portal(json!({})).await;
    let r1 = resource(1);
    let mut r2 = resource(2);
    r2.project_name = "Call / OTHER-GRANT / T".into();
    let a = create(&p, &r1, vec![alice()]).await;
    let b = create(&p, &r2, vec![alice()]).await;
    p.sim.add_fault(Fault {
        latency_ms: 200,
        ..Fault::default().on("/by-email/").times(2)
    });
    let (x, y) = tokio::join!(
        p.backend.add_users(&a, vec![bob()], None),
        p.backend.add_users(&b, vec![bob()], None),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    for r in [&x, &y] {
        if let Outcome::Failed(e) = &r[0].outcome {
            assert_eq!(e.reason, reason::BACKEND_NOT_READY, "{e:?}");
        }
    }
    // A failed one heals on the next cycle.
    p.backend.add_users(&a, vec![bob()], None).await.unwrap();
    p.backend.add_users(&b, vec![bob()], None).await.unwrap();
    let bobs = p
        .sim
        .users()
        .into_iter()
        .filter(|u| u.email == "bob@uni.example")
        .count();
    assert_eq!(bobs, 1);
    for grant in [GRANT, "OTHER-GRANT"] {
        let pid = p.sim.project_by_grant(grant).unwrap().id;
        assert_eq!(p.sim.members(pid).len(), 2, "{grant}");
    }
}
