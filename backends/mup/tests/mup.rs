//! The MUP backend against `mup-sim` over real HTTP: projects by grant
//! number, allocations per component, members, usage, and every way the
//! portal can fail.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use mup_sim::Fault;
use serde_json::json;
use support::{GRANT, Portal, alice, bob, portal, resource};
use waldur_backend_sdk::Backend;
use waldur_backend_sdk::proto::reason;
use waldur_backend_sdk::types::*;

fn limits(cpu: i64, gpu: i64) -> Limits {
    BTreeMap::from([("cpu".to_owned(), cpu), ("gpu".to_owned(), gpu)])
}

async fn create(p: &Portal, r: &ResourceContext, users: Vec<User>) -> Created {
    p.backend
        .create_resource(CreateResource {
            backend_id: p.backend.generate_backend_id(&r.slug, Some(r)).unwrap(),
            resource: r.clone(),
            limits: limits(5, 2),
            users,
            ..CreateResource::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_create_makes_the_project_with_the_manager_as_pi_and_one_allocation_per_component() {
    let p = portal(json!({})).await;
    let r = resource(1);
    let created = create(&p, &r, vec![alice(), bob()]).await;
    let id = &created.resource.backend_id;
    assert_eq!(id, &format!("alloc_{}_cpu", r.resource_uuid));
    assert_eq!(created.resource.parent_id, GRANT);
    assert_eq!(created.resource.limits, limits(5, 2));
    assert_eq!(created.resource.users, ["alice", "bob"]);
    assert!(
        created
            .user_results
            .iter()
            .all(|u| u.outcome == Outcome::Applied)
    );

    let project = p.sim.project_by_grant(GRANT).unwrap();
    assert!(project.active, "a new project is activated");
    assert_eq!(project.pi, "alice@uni.example");
    assert_eq!(project.title, r.project_name);
    let allocations = p.sim.allocations(project.id);
    let sizes: BTreeMap<_, _> = allocations
        .iter()
        .map(|a| (a.identifier.clone(), (a.kind.clone(), a.size)))
        .collect();
    assert_eq!(
        sizes,
        BTreeMap::from([
            (
                format!("alloc_{}_cpu", r.resource_uuid),
                ("Deucalion x86_64".to_owned(), 5000)
            ),
            (
                format!("alloc_{}_gpu", r.resource_uuid),
                ("Deucalion GPU".to_owned(), 2)
            ),
        ])
    );
    // Both users were registered: requests awaiting the portal's approval.
    let ada = p.sim.user_by_email("alice@uni.example").unwrap();
    assert!(!ada.is_approved);
    assert_eq!(p.sim.members(project.id).len(), 2);
}

#[tokio::test]
async fn a_create_without_a_ready_project_manager_waits_and_changes_nothing() {
    let p = portal(json!({})).await;
    let r = resource(1);
    let e = p
        .backend
        .create_resource(CreateResource {
            backend_id: p.backend.generate_backend_id("x", Some(&r)).unwrap(),
            resource: r.clone(),
            users: vec![bob()],
            ..CreateResource::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.reason, reason::BACKEND_NOT_READY, "{e:?}");
    assert!(
        e.message.contains("principal investigator"),
        "{}",
        e.message
    );
    assert!(p.sim.projects().is_empty());
    assert!(p.sim.users().is_empty());
    // The manager's account arrives: the same request now completes.
    let created = create(&p, &r, vec![alice(), bob()]).await;
    assert!(created.ready);
}

#[tokio::test]
async fn a_create_in_an_existing_project_needs_no_manager_and_activates_the_project() {
    let p = portal(json!({})).await;
    let pid = p
        .sim
        .add_project(GRANT, "from the call", "pi@uni.example", false);
    let r = resource(1);
    let created = create(&p, &r, vec![]).await;
    assert!(created.user_results.is_empty());
    assert!(p.sim.project(pid).unwrap().active);
    assert_eq!(p.sim.allocations(pid).len(), 2);
    assert_eq!(p.sim.projects().len(), 1);
}

#[tokio::test]
async fn a_project_name_without_a_grant_number_is_an_invalid_field() {
    let p = portal(json!({})).await;
    let mut r = resource(1);
    r.project_name = "Climate Modelling".into();
    let e = p
        .backend
        .create_resource(CreateResource {
            backend_id: p.backend.generate_backend_id("x", Some(&r)).unwrap(),
            resource: r,
            users: vec![alice()],
            ..CreateResource::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.reason, reason::INVALID_FIELD);
    assert_eq!(e.metadata["field"], "resource.project_name");
}

#[tokio::test]
async fn a_repeated_create_changes_nothing_and_a_lost_answer_is_recovered() {
    let p = portal(json!({})).await;
    let r = resource(1);
    // The first allocation is made but its answer is lost.
    p.sim.add_fault(Fault {
        after_serving: true,
        status: Some(502),
        ..Fault::default()
            .on("allocations/add")
            .method("POST")
            .times(1)
    });
    let request = CreateResource {
        backend_id: p.backend.generate_backend_id("x", Some(&r)).unwrap(),
        resource: r.clone(),
        limits: limits(5, 2),
        users: vec![alice()],
        ..CreateResource::default()
    };
    assert!(p.backend.create_resource(request.clone()).await.is_err());
    p.backend.create_resource(request.clone()).await.unwrap();
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    assert_eq!(p.sim.allocations(pid).len(), 2, "no duplicate allocation");
    p.sim.reset_calls();
    let again = p.backend.create_resource(request).await.unwrap();
    assert_eq!(again.user_results[0].outcome, Outcome::Unchanged);
    let writes: Vec<_> = p
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.method != "GET")
        .collect();
    assert!(writes.is_empty(), "a repeated create wrote: {writes:?}");
}

#[tokio::test]
async fn limits_update_the_matching_allocation_and_refuse_sizes_that_would_not_read_back() {
    let p = portal(json!({"components": {"half": {"label": "H", "measured_unit": "h", "accounting_type": "limit", "unit_factor": 0.5}}})).await;
    let r = resource(1);
    let created = create(&p, &r, vec![alice()]).await;
    let id = created.resource.backend_id;
    let applied = p
        .backend
        .set_resource_limits(&id, BTreeMap::from([("cpu".into(), 7)]), None)
        .await
        .unwrap();
    assert_eq!(applied.limits["cpu"], 7);
    assert_eq!(applied.limits["gpu"], 2);
    let cpu = p.sim.allocation(&id).unwrap();
    assert_eq!(cpu.size, 7000);
    assert_eq!(p.backend.get_resource_limits(&id).await.unwrap()["cpu"], 7);
    let e = p
        .backend
        .set_resource_limits(&id, BTreeMap::from([("half".into(), 3)]), None)
        .await
        .unwrap_err();
    assert_eq!(e.reason, reason::INVALID_FIELD, "{e:?}");
    // A component configured later gets its allocation on the first change.
    p.backend
        .set_resource_limits(&id, BTreeMap::from([("half".into(), 4)]), None)
        .await
        .unwrap();
    assert_eq!(
        p.sim
            .allocation(&format!("alloc_{}_half", r.resource_uuid))
            .unwrap()
            .size,
        2
    );
}

#[tokio::test]
async fn terminate_deactivates_the_allocations_then_the_project_once_nothing_in_it_is_active() {
    let p = portal(json!({})).await;
    let (r1, r2) = (resource(1), resource(2));
    let a = create(&p, &r1, vec![alice()]).await.resource.backend_id;
    let b = create(&p, &r2, vec![alice()]).await.resource.backend_id;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    let hard = |id: &str| DeleteResource {
        backend_id: id.to_owned(),
        mode: DeletionMode::Hard,
        resource: None,
    };
    assert!(p.backend.delete_resource(hard(&a)).await.unwrap().existed);
    assert!(
        !p.sim.allocation(&a).unwrap().active,
        "deactivated, not deleted"
    );
    assert!(
        p.sim.project(pid).unwrap().active,
        "another resource still uses it"
    );
    let e = p.backend.get_resource(&a).await.unwrap_err();
    assert_eq!(e.reason, reason::RESOURCE_NOT_FOUND);
    assert!(!p.backend.delete_resource(hard(&a)).await.unwrap().existed);

    p.backend.delete_resource(hard(&b)).await.unwrap();
    assert!(
        !p.sim.project(pid).unwrap().active,
        "the emptied project is deactivated"
    );

    // Re-creating a deleted resource reactivates what it had.
    create(&p, &r1, vec![alice()]).await;
    assert!(p.sim.allocation(&a).unwrap().active);
    assert!(p.sim.project(pid).unwrap().active);
    assert_eq!(p.sim.allocations(pid).len(), 4);
}

#[tokio::test]
async fn soft_deletion_keeps_the_allocations_with_size_zero() {
    let p = portal(json!({})).await;
    let id = create(&p, &resource(1), vec![alice()])
        .await
        .resource
        .backend_id;
    p.backend
        .delete_resource(DeleteResource {
            backend_id: id.clone(),
            mode: DeletionMode::Soft,
            resource: None,
        })
        .await
        .unwrap();
    let a = p.sim.allocation(&id).unwrap();
    assert!(a.active);
    assert_eq!(a.size, 0);
    assert_eq!(
        p.backend.get_resource_limits(&id).await.unwrap(),
        limits(0, 0)
    );
}

#[tokio::test]
async fn members_are_deactivated_never_deleted_and_reactivated_when_added_again() {
    let p = portal(json!({})).await;
    let id = create(&p, &resource(1), vec![alice(), bob()])
        .await
        .resource
        .backend_id;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    let removed = p
        .backend
        .remove_users(&id, vec!["bob".into(), "nobody".into()])
        .await
        .unwrap();
    assert_eq!(removed[0].outcome, Outcome::Applied);
    assert_eq!(removed[1].outcome, Outcome::Unchanged);
    let members = p.sim.members(pid);
    assert_eq!(members.len(), 2, "bob's membership is kept");
    assert_eq!(members.iter().filter(|m| m.active).count(), 1);
    let listed = p
        .backend
        .list_resource_users(std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(listed.found[&id], ["alice"]);

    let added = p.backend.add_users(&id, vec![bob()], None).await.unwrap();
    assert_eq!(added[0].outcome, Outcome::Applied);
    assert!(p.sim.members(pid).iter().all(|m| m.active));
    assert_eq!(p.sim.members(pid).len(), 2, "reactivated, not added twice");
}

#[tokio::test]
async fn both_member_record_shapes_are_read() {
    let p = portal(json!({})).await;
    let id = create(&p, &resource(1), vec![alice(), bob()])
        .await
        .resource
        .backend_id;
    let nested = p
        .backend
        .list_resource_users(std::slice::from_ref(&id))
        .await
        .unwrap();
    p.sim.set_flat_members(true);
    let flat = p
        .backend
        .list_resource_users(std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(nested, flat);
    assert_eq!(flat.found[&id], ["alice", "bob"]);
    let removed = p
        .backend
        .remove_users(&id, vec!["bob".into()])
        .await
        .unwrap();
    assert_eq!(removed[0].outcome, Outcome::Applied);
    let again = p.backend.add_users(&id, vec![bob()], None).await.unwrap();
    assert_eq!(again[0].outcome, Outcome::Applied);
}

#[tokio::test]
async fn a_person_the_portal_knows_under_another_username_is_refused_not_registered_twice() {
    let p = portal(json!({})).await;
    let pid = p.sim.add_project(GRANT, "t", "pi@uni.example", true);
    let uid = p.sim.add_user("a.lovelace", "alice@uni.example");
    p.sim.add_member(pid, uid, true).unwrap();
    let created = create(&p, &resource(1), vec![alice()]).await;
    // Listed under the portal's name, she would be removed and re-added
    // every cycle: refused with what to do instead, and nothing changes.
    let Outcome::Failed(e) = &created.user_results[0].outcome else {
        panic!("{:?}", created.user_results);
    };
    assert!(e.message.contains("\"a.lovelace\""), "{}", e.message);
    assert_eq!(p.sim.users().len(), 1);
    assert_eq!(p.sim.members(pid).len(), 1);
}

#[tokio::test]
async fn a_new_user_is_registered_with_the_mapped_attributes_and_their_myaccess_id() {
    let p = portal(json!({})).await;
    let mut ada = alice();
    ada.attributes = BTreeMap::from([
        ("gender".into(), "2".into()),
        ("country_of_residence".into(), "DE".into()),
        ("birth_date".into(), "1815-12-10".into()),
        (
            "organization_type".into(),
            "urn:schac:homeOrganizationType:int:university".into(),
        ),
        ("personal_title".into(), "Prof.".into()),
    ]);
    let r = resource(1);
    create(&p, &r, vec![ada]).await;
    let u = p.sim.user_by_email("alice@uni.example").unwrap();
    assert_eq!(u.username, "alice");
    assert_eq!(
        (u.first_name.as_str(), u.last_name.as_str()),
        ("Alice", "Liddell")
    );
    assert_eq!(u.gender, "Female");
    assert_eq!(u.country, "Germany");
    assert_eq!(u.year_of_birth, Some(1815));
    assert_eq!(u.type_of_institution, "Academia");
    assert_eq!(u.salutation, "Prof.");
    assert_eq!(u.affiliated_institution, r.customer_name);
    assert_eq!(u.funding_agency_grant, "WALDUR-SITE-AGENT-ALICE");
    let keys: Vec<_> = u.user_ssh_keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["alice@myaccessid.example"]);
}

#[tokio::test]
async fn a_registration_answered_without_an_id_is_found_in_the_request_list() {
    let p = portal(json!({})).await;
    p.sim.set_empty_user_create_answer(true);
    let created = create(&p, &resource(1), vec![alice(), bob()]).await;
    assert!(
        created
            .user_results
            .iter()
            .all(|u| u.outcome == Outcome::Applied)
    );
    assert_eq!(created.resource.users, ["alice", "bob"]);
}

#[tokio::test]
async fn usage_is_read_per_allocation_and_converted_to_waldur_units() {
    let p = portal(json!({})).await;
    let r = resource(1);
    let id = create(&p, &r, vec![alice(), bob()])
        .await
        .resource
        .backend_id;
    p.sim
        .set_usage(&id, [("alice", 1500.0), ("bob", 500.0)], None)
        .unwrap();
    let gpu = format!("alloc_{}_gpu", r.resource_uuid);
    p.sim.set_usage(&gpu, [("alice", 3.0)], Some(4.0)).unwrap();
    let report = p
        .backend
        .usage_report(UsageQuery {
            backend_ids: vec![
                id.clone(),
                "alloc_ffffffffffffffffffffffffffffffff_cpu".into(),
            ],
            period: None,
            timezone: None,
        })
        .await
        .unwrap();
    assert_eq!(report.len(), 1, "an unknown resource is left out");
    let u = &report[0];
    assert_eq!(u.total["cpu"], 2.0);
    assert_eq!(u.users["alice"]["cpu"], 1.5);
    assert_eq!(u.users["bob"]["cpu"], 0.5);
    // The portal's own total may exceed the users' sum.
    assert_eq!(u.total["gpu"], 4.0);
    assert_eq!(u.users["alice"]["gpu"], 3.0);
}

#[tokio::test]
async fn an_unreachable_or_garbled_portal_is_unavailable_and_never_reads_as_absent() {
    let p = portal(json!({"retries": 0})).await;
    let r = resource(1);
    // An outage of the project lookup must not lead to a second project.
    p.sim.add_fault(Fault::status(503).on("by-grant"));
    let request = CreateResource {
        backend_id: p.backend.generate_backend_id("x", Some(&r)).unwrap(),
        resource: r.clone(),
        users: vec![alice()],
        ..CreateResource::default()
    };
    let e = p
        .backend
        .create_resource(request.clone())
        .await
        .unwrap_err();
    assert_eq!(e.reason, reason::BACKEND_NOT_READY, "{e:?}");
    assert!(
        e.message.contains("GET /api/projects/by-grant/"),
        "{}",
        e.message
    );
    assert!(p.sim.projects().is_empty());
    p.sim.clear_faults();
    let id = p
        .backend
        .create_resource(request)
        .await
        .unwrap()
        .resource
        .backend_id;

    // An HTML error page or a cut answer is not an empty member list.
    for body in [
        "<html><body>Bad gateway</body></html>",
        "[{\"id\": 1, \"act",
    ] {
        p.sim.add_fault(Fault {
            status: Some(200),
            body: Some(body.into()),
            ..Fault::default().on("members/list")
        });
        let e = p
            .backend
            .list_resource_users(std::slice::from_ref(&id))
            .await
            .unwrap_err();
        assert_eq!(e.reason, reason::BACKEND_NOT_READY, "{e:?}");
        let e = p
            .backend
            .remove_users(&id, vec!["alice".into()])
            .await
            .unwrap_err();
        assert_eq!(e.reason, reason::BACKEND_NOT_READY, "{e:?}");
        p.sim.clear_faults();
    }
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    assert!(
        p.sim.members(pid).iter().all(|m| m.active),
        "nothing removed"
    );

    // A dropped connection during a usage read reports nothing, not zeros.
    p.sim.add_fault(Fault {
        drop: true,
        ..Fault::default().on("/usage")
    });
    let e = p
        .backend
        .usage_report(UsageQuery {
            backend_ids: vec![id],
            period: None,
            timezone: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.reason, reason::BACKEND_NOT_READY, "{e:?}");
}

#[tokio::test]
async fn transient_failures_of_reads_are_retried() {
    let p = portal(json!({"retries": 2})).await;
    let id = create(&p, &resource(1), vec![alice()])
        .await
        .resource
        .backend_id;
    p.sim
        .add_fault(Fault::status(503).on("members/list").times(2));
    let listed = p
        .backend
        .list_resource_users(std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(listed.found[&id], ["alice"]);
}

#[tokio::test]
async fn a_moved_allocation_is_followed_rather_than_remembered() {
    let p = portal(json!({"cache_seconds": 3600})).await;
    let r = resource(1);
    let id = create(&p, &r, vec![alice()]).await.resource.backend_id;
    // The portal's staff move the allocations to another project.
    let other = p
        .sim
        .add_project("OTHER-GRANT", "other", "pi@uni.example", true);
    {
        let mut st = p.sim.state();
        for a in st.allocations.iter_mut() {
            a.project = other;
        }
    }
    let info = p.backend.get_resource(&id).await.unwrap();
    assert_eq!(info.parent_id, "OTHER-GRANT");
}

#[tokio::test]
async fn allocations_the_backend_did_not_make_are_not_managed() {
    let p = portal(json!({})).await;
    let pid = p.sim.add_project(GRANT, "t", "pi@uni.example", true);
    p.sim.add_allocation(pid, "x", "by-hand", 10).unwrap();
    let e = p.backend.get_resource("by-hand").await.unwrap_err();
    assert_eq!(e.reason, reason::RESOURCE_NOT_MANAGED);
    let e = p
        .backend
        .delete_resource(DeleteResource {
            backend_id: "by-hand".into(),
            mode: DeletionMode::Hard,
            resource: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.reason, reason::RESOURCE_NOT_MANAGED);
    assert!(p.sim.allocation("by-hand").unwrap().active);
    let e = p.backend.get_resource("never-there").await.unwrap_err();
    assert_eq!(e.reason, reason::RESOURCE_NOT_FOUND);
}

#[tokio::test]
async fn wrong_credentials_make_the_probe_fail_without_showing_them() {
    let p = portal(json!({})).await;
    let wrong = support::backend(&p.url, "not-the-password", json!({}));
    let probe = wrong.probe().await.unwrap();
    assert!(!probe.ready);
    assert!(probe.message.contains("401"), "{}", probe.message);
    assert!(!probe.message.contains("not-the-password"));
    assert!(p.backend.probe().await.unwrap().ready);
}

#[tokio::test]
async fn a_path_in_the_api_url_is_ignored_as_the_original_did() {
    let p = portal(json!({})).await;
    let other = support::backend(
        &format!("{}/some/prefix/", p.url),
        support::PASSWORD,
        json!({}),
    );
    assert!(other.probe().await.unwrap().ready);
}

#[tokio::test]
async fn the_resources_are_listed_by_identifier_under_their_grant() {
    let p = portal(json!({})).await;
    let a = create(&p, &resource(1), vec![alice()])
        .await
        .resource
        .backend_id;
    let b = create(&p, &resource(2), vec![alice()])
        .await
        .resource
        .backend_id;
    let pid = p.sim.project_by_grant(GRANT).unwrap().id;
    p.sim.add_allocation(pid, "x", "by-hand", 10).unwrap();
    let page = p
        .backend
        .list_resources(PageRequest {
            parent_id: Some(GRANT.into()),
            page_size: 0,
            page_token: None,
        })
        .await
        .unwrap();
    let ids: Vec<_> = page
        .resources
        .iter()
        .map(|r| r.backend_id.clone())
        .collect();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(ids, expected);
}
