//! Creates that arrive together, on the real cluster from
//! `deploy/services.sh` (WALDUR_SLURM_CLUSTER=1): made together in fewer
//! SLURM processes than one at a time, each ending as its own create asked.

#![allow(clippy::unwrap_used)] // a test's input is its own

use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{Backend, BackendResult};
use waldur_backend_slurm::SlurmBackend;

fn enabled() -> bool {
    if std::env::var_os("WALDUR_SLURM_CLUSTER").is_some() {
        return true;
    }
    eprintln!("WALDUR_SLURM_CLUSTER is not set: run deploy/test.sh, which brings the cluster up");
    false
}

fn backend() -> SlurmBackend {
    SlurmBackend::from_settings(serde_json::json!({
        "customer_prefix": "bc_",
        "project_prefix": "bp_",
        "allocation_prefix": "bt_",
        "enable_user_homedir_account_creation": false,
        "components": {
            "cpu": {"label": "CPU", "measured_unit": "k-Hours", "unit_factor": 60000, "accounting_type": "limit"},
            "mem": {"label": "Memory", "measured_unit": "gb-Hours", "unit_factor": 61440, "accounting_type": "limit"}
        }
    }))
    .unwrap()
}

/// Unique per test and run, so accounts of earlier runs, or of the tests
/// running beside this one, never meet this one's.
fn run() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let test = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("{:x}{test}", secs % 0xfffff)
}

struct Want {
    id: String,
    customer: String,
    project: String,
    cpu: i64,
    users: Vec<&'static str>,
}

fn request(w: &Want, uuid: usize) -> CreateResource {
    CreateResource {
        backend_id: w.id.clone(),
        resource: ResourceContext {
            resource_uuid: format!("{uuid:0>32x}"),
            name: format!("Batch {}", w.id),
            slug: w.id.clone(),
            project_slug: w.project.clone(),
            project_name: format!("Project {}", w.project),
            customer_slug: w.customer.clone(),
            customer_name: format!("Customer {}", w.customer),
            ..ResourceContext::default()
        },
        limits: Limits::from([("cpu".into(), w.cpu), ("mem".into(), 1)]),
        users: w.users.iter().map(|u| User::named(*u)).collect(),
        ..CreateResource::default()
    }
}

async fn all_at_once(b: &SlurmBackend, reqs: Vec<CreateResource>) -> Vec<BackendResult<Created>> {
    futures::future::join_all(reqs.into_iter().map(|r| b.create_resource(r))).await
}

/// Every planned create at once, resource UUIDs 1, 2, ...
async fn create_all(b: &SlurmBackend, wants: &[Want]) -> Vec<BackendResult<Created>> {
    let reqs = wants.iter().enumerate().map(|(i, w)| request(w, i + 1));
    all_at_once(b, reqs.collect()).await
}

async fn cleanup(b: &SlurmBackend, ids: &[String]) {
    for id in ids {
        let _ = b
            .delete_resource(DeleteResource {
                backend_id: id.clone(),
                mode: DeletionMode::Hard,
                resource: None,
            })
            .await;
    }
}

fn plan(run: &str) -> Vec<Want> {
    // Two customers, three projects, three limit shapes, two teams.
    let shapes = [
        ("x", "xa", 5, vec!["alice", "bob"]),
        ("x", "xa", 5, vec!["alice", "bob"]),
        ("x", "xa", 7, vec!["alice", "bob"]),
        ("x", "xb", 9, vec!["alice"]),
        ("y", "ya", 11, vec!["bob"]),
        ("y", "ya", 13, vec!["alice", "bob"]),
    ];
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, (c, p, cpu, users))| Want {
            id: format!("bt_{run}{i}"),
            customer: format!("{c}{run}"),
            project: format!("{p}{run}"),
            cpu,
            users,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_arriving_together_each_end_with_their_own_parent_limits_and_members() {
    if !enabled() {
        return;
    }
    let b = backend();
    let run = run();
    let wants = plan(&run);
    let before = b.spawned();
    let results = create_all(&b, &wants).await;
    let spawned = b.spawned() - before;
    let ids: Vec<String> = wants.iter().map(|w| w.id.clone()).collect();
    for (w, r) in wants.iter().zip(&results) {
        let created = r.as_ref().unwrap_or_else(|e| panic!("{}: {e:?}", w.id));
        assert_eq!(created.resource.backend_id, w.id);
        assert_eq!(created.resource.parent_id, format!("bp_{}", w.project));
        assert!(
            created
                .user_results
                .iter()
                .all(|u| u.outcome == Outcome::Applied),
            "{}: {:?}",
            w.id,
            created.user_results
        );
        let info = b.get_resource(&w.id).await.unwrap();
        assert_eq!(info.parent_id, format!("bp_{}", w.project), "{}", w.id);
        assert_eq!(info.limits.get("cpu"), Some(&w.cpu), "{}: {info:?}", w.id);
        let mut users = w.users.clone();
        users.sort_unstable();
        assert_eq!(info.users, users, "{}", w.id);
        assert!(info.description.contains(&w.id), "{info:?}");
    }
    println!("{spawned} SLURM processes for six creates");
    // One at a time, six creates under new customers and projects cost
    // 4–5 processes each.
    assert!(spawned < 24, "{spawned} SLURM processes for six creates");
    cleanup(&b, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_another_resource_owns_fails_only_its_own_create_in_a_batch() {
    if !enabled() {
        return;
    }
    let b = backend();
    let run = run();
    let wants = plan(&run);
    // The third id already belongs to another Waldur resource.
    let taken = request(&wants[2], 0xdead);
    b.create_resource(taken).await.unwrap();
    let results = create_all(&b, &wants).await;
    for (i, (w, r)) in wants.iter().zip(&results).enumerate() {
        if i == 2 {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.code, tonic::Code::AlreadyExists, "{e:?}");
        } else {
            let info = b.get_resource(&w.id).await.unwrap();
            assert_eq!(info.limits.get("cpu"), Some(&w.cpu), "{}", w.id);
            assert!(r.is_ok(), "{}: {r:?}", w.id);
        }
    }
    let info = b.get_resource(&wants[2].id).await.unwrap();
    assert_eq!(
        info.limits.get("cpu"),
        Some(&wants[2].cpu),
        "the owner's account was left as it was"
    );
    cleanup(&b, &wants.iter().map(|w| w.id.clone()).collect::<Vec<_>>()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_interrupted_after_its_accounts_were_loaded_is_completed_by_the_re_issued_creates()
{
    if !enabled() {
        return;
    }
    let b = backend();
    let run = run();
    let wants = plan(&run);
    // The state a batch leaves when the server dies between the load and
    // `add user`: the accounts with limits, no members.
    let bare: Vec<CreateResource> = wants
        .iter()
        .enumerate()
        .map(|(i, w)| CreateResource {
            users: vec![],
            ..request(w, i + 1)
        })
        .collect();
    for r in all_at_once(&b, bare).await {
        r.unwrap();
    }
    // The coordinator re-issues every create.
    let results = create_all(&b, &wants).await;
    let listing = b
        .list_resource_users(&wants.iter().map(|w| w.id.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    for (w, r) in wants.iter().zip(&results) {
        r.as_ref().unwrap_or_else(|e| panic!("{}: {e:?}", w.id));
        let mut users: Vec<String> = w.users.iter().map(|u| (*u).to_owned()).collect();
        users.sort();
        let mut listed = listing.found[&w.id].clone();
        listed.sort();
        assert_eq!(listed, users, "{}: each member once", w.id);
        let info = b.get_resource(&w.id).await.unwrap();
        assert_eq!(info.limits.get("cpu"), Some(&w.cpu));
    }
    // Re-issued once more, nothing changes.
    let again = create_all(&b, &wants).await;
    for r in again {
        let created = r.unwrap();
        assert!(
            created
                .user_results
                .iter()
                .all(|u| u.outcome == Outcome::Unchanged),
            "{:?}",
            created.user_results
        );
    }
    cleanup(&b, &wants.iter().map(|w| w.id.clone()).collect::<Vec<_>>()).await;
}
