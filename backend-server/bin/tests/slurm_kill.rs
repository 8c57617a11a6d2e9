//! The real binary hosting the SLURM backend on the cluster from
//! `deploy/services.sh` (WALDUR_SLURM_CLUSTER=1), killed in the middle of a
//! batch of creates: the server with SIGKILL while its `sacctmgr load` runs,
//! and the load itself. A new server given the same creates again (what the
//! coordinator does with orders that did not finish) completes every
//! allocation with its own limits and members, each once.

#![allow(clippy::unwrap_used)] // a test's input is its own

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Server, TestPki, connect, free_port};
use tonic::transport::Channel;
use waldur_backend_proto::v1::backend_service_client::BackendServiceClient;
use waldur_backend_proto::v1::{self as wire, UserOutcome};
use waldur_backend_sdk::Backend;
use waldur_backend_slurm::SlurmBackend;

const BIN: &str = env!("CARGO_BIN_EXE_waldur-backend-server");

const SETTINGS: &str = r#"{"customer_prefix": "kc_", "project_prefix": "kp_", "allocation_prefix": "kt_", "enable_user_homedir_account_creation": false, "components": {"cpu": {"label": "CPU", "measured_unit": "k-Hours", "unit_factor": 60000, "accounting_type": "limit"}}}"#;

fn enabled() -> bool {
    if std::env::var_os("WALDUR_SLURM_CLUSTER").is_some() {
        return true;
    }
    eprintln!("WALDUR_SLURM_CLUSTER is not set: run deploy/test.sh, which brings the cluster up");
    false
}

async fn start(pki: &TestPki, port: u16) -> (Server, BackendServiceClient<Channel>) {
    let config = pki.path("slurm.yaml");
    let text = pki
        .server_config(port, SETTINGS)
        .replace("type: example", "type: slurm");
    std::fs::write(&config, text).unwrap();
    let server = Server(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            // The flat files of a killed server are left behind: in the
            // test's own directory, removed with it.
            .env("TMPDIR", pki.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (server, BackendServiceClient::new(connect(pki, port).await))
}

/// A process's state letter and parent, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold anything: the fields follow its last ')'.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Whether a process is a `sacctmgr load file=…`.
fn is_load(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.first().is_some_and(|a| a.ends_with(b"sacctmgr"))
        && args.iter().any(|a| *a == b"load")
        && args.iter().any(|a| a.windows(5).any(|w| w == b"file="))
}

/// The running `sacctmgr load` started by `parent`, if any: only this
/// test's server's, never another run's on the same cluster.
fn load_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let (state, ppid) = stat(pid)?;
        (ppid == parent && state != 'Z' && is_load(pid)).then_some(pid)
    })
}

/// Running: not gone, not a zombie waiting to be reaped.
fn running(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// Creates issued until the server answers something other than
/// UNAVAILABLE (slurmdbd may be briefly busy after a killed client).
async fn create_all_until_answered(
    client: &BackendServiceClient<Channel>,
    reqs: &[wire::CreateResourceRequest],
) -> Vec<Result<wire::CreateResourceResponse, tonic::Status>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answers = create_all(client, reqs).await;
        let busy = answers
            .iter()
            .any(|a| matches!(a, Err(e) if e.code() == tonic::Code::Unavailable));
        if !busy || Instant::now() > deadline {
            return answers;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Removes the test's allocations however the test ends.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let accounts = self.0.join(",");
        for what in ["user", "account"] {
            let mut c = Command::new("sacctmgr");
            c.args(["-i", "remove", what]);
            if what == "user" {
                c.args(["where", &format!("account={accounts}")]);
            } else {
                c.arg(&accounts);
            }
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}

struct Want {
    id: String,
    project: &'static str,
    cpu: i64,
    users: &'static [&'static str],
}

fn request(run: &str, w: &Want, n: usize) -> wire::CreateResourceRequest {
    wire::CreateResourceRequest {
        instance: "hpc".into(),
        backend_id: w.id.clone(),
        resource: Some(wire::ResourceContext {
            resource_uuid: format!("{n:0>32x}"),
            name: format!("Killed {}", w.id),
            slug: w.id.clone(),
            project_slug: format!("{}{run}", w.project),
            project_name: format!("Project {}", w.project),
            customer_slug: format!("c{run}"),
            customer_name: "Customer".into(),
            ..Default::default()
        }),
        limits: HashMap::from([("cpu".into(), w.cpu)]),
        users: w
            .users
            .iter()
            .map(|u| wire::User {
                username: (*u).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Every create at once; the answers in order.
async fn create_all(
    client: &BackendServiceClient<Channel>,
    reqs: &[wire::CreateResourceRequest],
) -> Vec<Result<wire::CreateResourceResponse, tonic::Status>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, r) in reqs.iter().enumerate() {
        let (mut c, r) = (client.clone(), r.clone());
        set.spawn(async move { (i, c.create_resource(r).await.map(|a| a.into_inner())) });
    }
    let mut out: Vec<_> = set.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Where the kill lands.
#[derive(Clone, Copy, PartialEq)]
enum Kill {
    /// The server and its `sacctmgr load` while the load runs.
    DuringLoad,
    /// The server as soon as its load has ended, before it checks the
    /// result and answers.
    AfterLoad,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_during_its_batch_load_leaves_what_the_re_issued_creates_complete_once() {
    if enabled() {
        killed_then_issued_again(Kill::DuringLoad, "a").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_right_after_its_batch_load_leaves_what_the_re_issued_creates_complete_once()
 {
    if enabled() {
        killed_then_issued_again(Kill::AfterLoad, "b").await;
    }
}

async fn killed_then_issued_again(kill: Kill, tag: &str) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let run = format!("{tag}{:x}", secs % 0xfffff);
    let wants: Vec<Want> = [
        ("xa", 5, &["alice", "bob"][..]),
        ("xa", 7, &["alice"][..]),
        ("xb", 9, &["bob"][..]),
        ("xb", 11, &["alice", "bob"][..]),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (project, cpu, users))| Want {
        id: format!("kt_{run}{i}"),
        project,
        cpu,
        users,
    })
    .collect();
    let reqs: Vec<_> = wants
        .iter()
        .enumerate()
        .map(|(i, w)| request(&run, w, i + 1))
        .collect();
    let ids: Vec<String> = wants.iter().map(|w| w.id.clone()).collect();
    let _cleanup = Cleanup(ids.clone());
    let pki = TestPki::new();
    let port = free_port();
    let (mut server, client) = start(&pki, port).await;
    let server_pid = server.0.id();

    // The creates go out; as soon as the batch's load runs, the server and
    // the load are killed, as a host losing power would.
    let calls = tokio::spawn({
        let (client, reqs) = (client.clone(), reqs.clone());
        async move { create_all(&client, &reqs).await }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let load = loop {
        if let Some(pid) = load_of(server_pid) {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the batch never ran sacctmgr load"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    if kill == Kill::DuringLoad {
        server.kill();
        // Still the load found (a pid is reused only once reaped).
        if running(load) && is_load(load) {
            let killed = Command::new("kill")
                .args(["-9", &load.to_string()])
                .status()
                .unwrap();
            assert!(killed.success() || !running(load), "kill -9 {load} failed");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while running(load) {
        assert!(
            Instant::now() < deadline,
            "sacctmgr load {load} never ended"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill();
    // Whatever the callers heard (the connection went), the coordinator
    // issues the orders again.
    let _ = calls.await;
    let slurm = SlurmBackend::from_settings(serde_json::from_str(SETTINGS).unwrap()).unwrap();
    let left = slurm.list_resource_users(&ids).await.unwrap();
    println!(
        "the kill left {} of {} allocations, {} members",
        left.found.len(),
        ids.len(),
        left.found.values().map(Vec::len).sum::<usize>()
    );

    // A new server, the same creates again.
    let (_server, client) = start(&pki, port).await;
    for (w, answer) in wants
        .iter()
        .zip(create_all_until_answered(&client, &reqs).await)
    {
        let answer = answer.unwrap_or_else(|e| panic!("{}: {e:?}", w.id));
        assert!(answer.ready, "{}: {answer:?}", w.id);
    }
    let listing = slurm.list_resource_users(&ids).await.unwrap();
    for w in &wants {
        let mut listed = listing.found[&w.id].clone();
        listed.sort();
        assert_eq!(listed, w.users, "{}: each member once", w.id);
        let info = slurm.get_resource(&w.id).await.unwrap();
        assert_eq!(info.limits.get("cpu"), Some(&w.cpu), "{}: {info:?}", w.id);
        assert_eq!(info.parent_id, format!("kp_{}{run}", w.project));
    }
    // Once more: nothing left to do.
    for answer in create_all_until_answered(&client, &reqs).await {
        let answer = answer.unwrap();
        assert!(
            answer
                .user_results
                .iter()
                .all(|u| u.outcome == UserOutcome::Unchanged as i32),
            "{:?}",
            answer.user_results
        );
    }
    for id in ids {
        let _ = slurm
            .delete_resource(waldur_backend_sdk::types::DeleteResource {
                backend_id: id,
                mode: waldur_backend_sdk::types::DeletionMode::Hard,
                resource: None,
            })
            .await;
    }
}
