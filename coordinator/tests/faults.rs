//! The fault matrix: the real `waldur-coordinator` and `waldur-backend-server`
//! binaries, a Waldur simulator, RabbitMQ and (when `WALDUR_SLURM_CLUSTER` is
//! set) the real SLURM cluster, driven through one fault at a time. Each row
//! creates orders, injects the fault while they are processed, lets the
//! system settle and counts what was lost: orders not done, erred or
//! duplicated on the backend, usage records lost or doubled, members
//! wrongly removed. Every loss column must be zero; the table is printed
//! (RELIABILITY.md records it) and the program fails otherwise.
//!
//! Run alone: `cargo test -p waldur-coordinator --test faults` (after
//! `cargo build --workspace --bins`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use waldur_backend_proto::v1::Capability;
use waldur_coordinator::backend::BackendHandle;
use waldur_coordinator::config::Config;
use waldur_coordinator::secret::MapEnv;
use waldur_sim::{Fault, NewOrder, Scenario, Sim};

const SETTLE: Duration = Duration::from_secs(60);

/// The workspace's binaries (built before the tests, as deploy/test.sh does).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|d| d.parent()).unwrap().join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

fn slurm_on() -> bool {
    std::env::var_os("WALDUR_SLURM_CLUSTER").is_some()
}

/// What the backend server hosts.
#[derive(Clone)]
enum Kind {
    /// The in-memory example backend (fast; its state dies with it).
    Example,
    /// The real SLURM cluster, commands run through `bin` (a folder of
    /// wrappers that can be told to fail or hang).
    Slurm { prefix: String, bin: PathBuf },
}

/// One row of the table.
#[derive(Debug, Default, Clone)]
struct Losses {
    orders: usize,
    done: usize,
    erred: usize,
    not_done: usize,
    duplicated: usize,
    usage_lost: usize,
    usage_doubled: usize,
    members_removed: usize,
}

impl Losses {
    fn lost(&self) -> usize {
        self.erred
            + self.not_done
            + self.duplicated
            + self.usage_lost
            + self.usage_doubled
            + self.members_removed
    }
}

struct Lab {
    dir: tempfile::TempDir,
    sim: Sim,
    scenario: Scenario,
    kind: Kind,
    port: u16,
    backend: Option<Child>,
    coordinator: Option<Child>,
    handle: BackendHandle,
    orders: Vec<(String, String)>,
}

impl Lab {
    async fn start(kind: Kind, events: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        support::write_pki(dir.path());
        let sim = Sim::new(support::TOKEN);
        let sim_addr = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        if events {
            sim.enable_events(waldur_sim::events::Broker::default());
        }
        let scenario = sim.seed_basic(
            None,
            &[
                ("alice", "PROJECT.MANAGER", Some("alice")),
                ("bob", "PROJECT.MEMBER", Some("bob")),
            ],
        );
        let port = support::free_port();
        let d = dir.path().display().to_string();
        let instance = match &kind {
            Kind::Example => {
                "  - name: hpc\n    type: example\n    settings: {allocation_prefix: hpc_}\n"
                    .to_owned()
            }
            Kind::Slurm { prefix, bin } => format!(
                "  - name: hpc\n    type: slurm\n    settings:\n      customer_prefix: {prefix}c_\n      project_prefix: {prefix}p_\n      allocation_prefix: {prefix}\n      slurm_bin_path: {}\n      components:\n        cpu: {{label: CPU, measured_unit: CPU-minutes, unit_factor: 1, accounting_type: usage}}\n        mem: {{label: Memory, measured_unit: GB-hours, unit_factor: 61440, accounting_type: limit}}\n",
                bin.display()
            ),
        };
        std::fs::write(
            dir.path().join("backend.yaml"),
            format!(
                "version: 1\nlisten: 127.0.0.1:{port}\ntls: {{ca: {d}/ca.pem, cert: {d}/server.pem, key: {d}/server.key, allowed_clients: [coordinator.test]}}\ninstances:\n{instance}"
            ),
        )
        .unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, support::TOKEN).unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let events_config = if events {
            "    events: {stomp_url: 'ws://127.0.0.1:15674/ws', heartbeat_seconds: 2, max_backoff_seconds: 2}\n"
        } else {
            ""
        };
        let config = format!(
            "version: 1\nretry: {{max_attempts: 3, initial_backoff_ms: 50, max_backoff_ms: 200}}\ntimeouts: {{waldur_seconds: 3, backend_read_seconds: 5, backend_mutate_seconds: 10, backend_connect_seconds: 2}}\n{backends}offerings:\n  - name: HPC\n    offering_uuid: {offering}\n    waldur: {{api_url: 'http://{sim_addr}/api/', token_file: {token}}}\n    backends: {{orders: hpc, report: hpc, membership: hpc}}\n    tasks: {{orders: true, report: true, membership: true, events: {events}}}\n    intervals: {{orders_seconds: {poll}, report_seconds: 2, membership_seconds: {poll}}}\n{events_config}",
            backends = support::backends_yaml(dir.path(), port),
            offering = scenario.offering_uuid,
            token = token.display(),
            // With events on, orders move through them alone: polling
            // would hide a stuck queue.
            poll = if events { 3600 } else { 1 },
        );
        std::fs::write(dir.path().join("coordinator.yaml"), &config).unwrap();
        let parsed = Config::parse(
            &config,
            &dir.path().join("coordinator.yaml"),
            &MapEnv::default(),
        )
        .unwrap();
        let handle =
            BackendHandle::remote("hpc", &parsed.backends["hpc"], &parsed.timeouts).unwrap();
        let mut lab = Self {
            dir,
            sim,
            scenario,
            kind,
            port,
            backend: None,
            coordinator: None,
            handle,
            orders: Vec::new(),
        };
        lab.start_backend().await;
        lab
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap()
    }

    async fn start_backend(&mut self) {
        let child = Command::new(binary("waldur-backend-server"))
            .args(["serve", "--config"])
            .arg(self.dir.path().join("backend.yaml"))
            .stdout(Stdio::null())
            .stderr(self.log("backend"))
            .spawn()
            .unwrap();
        self.backend = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the backend server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill_backend(&mut self) {
        if let Some(mut c) = self.backend.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn start_coordinator(&mut self) {
        let child = Command::new(binary("waldur-coordinator"))
            .args(["run", "--config"])
            .arg(self.dir.path().join("coordinator.yaml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(self.log("coordinator"))
            .spawn()
            .unwrap();
        self.coordinator = Some(child);
    }

    /// SIGKILL: no graceful anything.
    fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal_coordinator(&self, signal: &str) {
        if let Some(c) = &self.coordinator {
            Command::new("kill")
                .args([signal, &c.id().to_string()])
                .status()
                .unwrap();
        }
    }

    fn order(&mut self, name: &str) -> String {
        self.order_in(name, "executing")
    }

    fn order_in(&mut self, name: &str, state: &str) -> String {
        let created = self
            .sim
            .create_order(NewOrder {
                order_type: "Create".into(),
                state: state.into(),
                offering_uuid: self.scenario.offering_uuid.clone(),
                project_uuid: self.scenario.project_uuid.clone(),
                name: name.into(),
                limits: BTreeMap::from([("cpu".into(), 600), ("mem".into(), 5)]),
                ..Default::default()
            })
            .unwrap();
        self.orders
            .push((created.order_uuid.clone(), created.resource_uuid.clone()));
        created.order_uuid
    }

    /// Waits for a request whose path contains `route` to reach a fault
    /// (a hold) in Waldur.
    async fn seen(&self, route: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.sim.fault_hits().iter().any(|p| p.contains(route)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Holds every request matching `path` for `ms` (a place to kill at).
    fn hold(&self, method: &str, path: &str, ms: u64) {
        self.sim.add_fault(Fault {
            method: method.into(),
            path_contains: path.into(),
            latency_ms: ms,
            ..Default::default()
        });
    }

    /// Waits until every order is final (done or erred) and the backend
    /// and Waldur agree on members and usage, then counts the losses.
    async fn settle(&self) -> Losses {
        let deadline = Instant::now() + SETTLE;
        let final_state = |s: &Option<String>| matches!(s.as_deref(), Some("done" | "erred"));
        while Instant::now() < deadline
            && !self
                .orders
                .iter()
                .all(|(o, _)| final_state(&self.sim.order_state(o)))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut l = Losses {
            orders: self.orders.len(),
            ..Losses::default()
        };
        for (o, _) in &self.orders {
            match self.sim.order_state(o).as_deref() {
                Some("done") => l.done += 1,
                Some("erred") => l.erred += 1,
                _ => l.not_done += 1,
            }
        }
        let ids: Vec<String> = self
            .orders
            .iter()
            .filter_map(|(_, r)| self.sim.resource(r).map(|r| r.backend_id))
            .filter(|id| !id.is_empty())
            .collect();
        // Duplicates: backend resources of this lab beyond one per order.
        let mine = |id: &str| match &self.kind {
            Kind::Example => true,
            Kind::Slurm { prefix, .. } => {
                id.starts_with(prefix.as_str())
                    && !id.starts_with(&format!("{prefix}c_"))
                    && !id.starts_with(&format!("{prefix}p_"))
            }
        };
        let listed = self.listed().await;
        let on_backend = listed.iter().filter(|id| mine(id)).count();
        l.duplicated = on_backend.saturating_sub(ids.len());
        // Members: alice and bob on every resource, once membership ran.
        let want: BTreeSet<String> = ["alice", "bob"].iter().map(|s| (*s).to_owned()).collect();
        let missing = || async {
            let mut missing = 0;
            for id in &ids {
                if let Ok(Some(r)) = self.handle.get_resource(id).await {
                    let have: BTreeSet<String> = r.users.into_iter().collect();
                    missing += want.difference(&have).count();
                }
            }
            missing
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            l.members_removed = missing().await;
            if l.members_removed == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Usage: the backend's current-month totals, as Waldur holds them.
        let (lost, doubled) = self.usage(&ids).await;
        l.usage_lost = lost;
        l.usage_doubled = doubled;
        l
    }

    async fn listed(&self) -> Vec<String> {
        match self.handle.has(Capability::ListResources).await {
            Ok(true) => self
                .handle
                .list_resources()
                .await
                .map(|r| r.into_iter().map(|r| r.backend_id).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// (records missing or wrong, records doubled) after a report cycle
    /// had time to run.
    async fn usage(&self, ids: &[String]) -> (usize, usize) {
        if ids.is_empty() {
            return (0, 0);
        }
        let Ok(truth) = self.handle.usage_report(ids.to_vec(), None, "UTC").await else {
            return (ids.len(), 0);
        };
        let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
        let period = format!("{:04}-{:02}-01", now.year(), now.month());
        let by_id: BTreeMap<String, String> = self
            .orders
            .iter()
            .filter_map(|(_, r)| self.sim.resource(r).map(|x| (x.backend_id, r.clone())))
            .collect();
        let count = || {
            let (mut lost, mut doubled) = (0, 0);
            for u in &truth {
                let Some(resource) = by_id.get(&u.backend_id) else {
                    continue;
                };
                let records = self.sim.component_usages(resource);
                for (k, v) in &u.total {
                    let mine: Vec<_> = records
                        .iter()
                        .filter(|r| r.billing_period == period && &r.component_type == k)
                        .collect();
                    if mine.len() > 1 {
                        doubled += 1;
                    }
                    let want = format!("{:.2}", (v * 100.0).round() / 100.0);
                    let has = mine.first().map(|r| r.usage.clone());
                    if *v != 0.0 && has.as_deref() != Some(want.as_str()) {
                        lost += 1;
                    }
                }
            }
            (lost, doubled)
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (lost, doubled) = count();
            if (lost == 0 && doubled == 0) || Instant::now() > deadline {
                return (lost, doubled);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Removes what the lab made on a shared backend (SLURM).
    async fn clean_up(&mut self) {
        self.kill_coordinator();
        if let Kind::Slurm { prefix, .. } = &self.kind {
            for id in self
                .listed()
                .await
                .into_iter()
                .filter(|i| i.starts_with(prefix.as_str()))
            {
                let _ = self.handle.lock(&id).await.delete_resource(None).await;
            }
        }
        self.kill_backend();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_coordinator();
        self.kill_backend();
    }
}

/// Waits until `cond` holds, failing the row with `what` after `secs`.
async fn until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the offering's order queue has a consumer (the coordinator
/// subscribed), from RabbitMQ's management API.
async fn subscribed(offering: &str) -> bool {
    let http = reqwest::Client::new();
    let hex = offering.replace('-', "");
    let Ok(resp) = http
        .get(format!(
            "http://127.0.0.1:15672/api/queues/{}",
            waldur_sim::SIM_USER_UUID
        ))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
    else {
        return false;
    };
    let queues: Vec<serde_json::Value> = resp.json().await.unwrap_or_default();
    queues.iter().any(|q| {
        q["name"]
            .as_str()
            .is_some_and(|n| n.contains(&hex) && n.ends_with("_order"))
            && q["consumers"].as_u64().unwrap_or(0) > 0
    })
}

/// SLURM commands through wrappers: a flag file makes `sacctmgr` fail as it
/// does when slurmdbd is unreachable, or hang (only on command lines holding
/// the text the `.hang` file holds; an empty file: every call). A hanging
/// call leaves `<tool>.entered` behind, so the test knows it is in one.
fn slurm_wrappers(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["sacctmgr", "sacct", "scancel", "sinfo"] {
        let script = format!(
            "#!/bin/sh\nif [ -e {flags}/{tool}.fail ]; then echo 'sacctmgr: error: Problem talking to the database: Connection refused' >&2; exit 1; fi\nif [ -e {flags}/{tool}.hang ]; then case \" $* \" in *\"$(cat {flags}/{tool}.hang)\"*) touch {flags}/{tool}.entered; sleep 20;; esac; fi\nexec /usr/bin/{tool} \"$@\"\n",
            flags = dir.display()
        );
        let path = bin.join(tool);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    bin
}

fn slurm_kind(tag: &str) -> (Kind, tempfile::TempDir) {
    let flags = tempfile::tempdir().unwrap();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let prefix = format!("f{tag}{:x}_", millis % 0xfffff);
    let bin = slurm_wrappers(flags.path());
    (Kind::Slurm { prefix, bin }, flags)
}

fn waldur_fault(
    method: &str,
    path: &str,
    status: Option<u16>,
    body: Option<&str>,
    times: u32,
) -> Fault {
    Fault {
        method: method.into(),
        path_contains: path.into(),
        status,
        body: body.map(str::to_owned),
        times: Some(times),
        ..Default::default()
    }
}

/// Publishes raw bytes (base64 `payload`) to the offering's order event
/// queue through RabbitMQ's management API, `times` times: bodies no
/// Waldur would send, for example not UTF-8.
async fn publish_raw_order_event(offering: &str, payload: &str, times: usize) {
    let http = reqwest::Client::new();
    let vhost = waldur_sim::SIM_USER_UUID;
    let hex = offering.replace('-', "");
    let queues: Vec<serde_json::Value> = http
        .get(format!("http://127.0.0.1:15672/api/queues/{vhost}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let queue = queues
        .iter()
        .filter_map(|q| q["name"].as_str())
        .find(|n| n.contains(&hex) && n.ends_with("_order"))
        .expect("the order queue")
        .to_owned();
    for _ in 0..times {
        http.post(format!(
            "http://127.0.0.1:15672/api/exchanges/{vhost}/amq.default/publish"
        ))
        .basic_auth("guest", Some("guest"))
        .json(&json!({"properties": {}, "routing_key": queue, "payload": payload, "payload_encoding": "base64"}))
        .send()
        .await
        .unwrap();
    }
}

/// A row: runs `f` in a fresh lab and settles.
async fn row<F, Fut>(name: &str, kind: Kind, events: bool, f: F) -> (String, Losses, Duration)
where
    F: FnOnce(Lab) -> Fut,
    Fut: std::future::Future<Output = Lab>,
{
    let started = Instant::now();
    let lab = Lab::start(kind, events).await;
    let mut lab = f(lab).await;
    lab.sim.clear_faults();
    if lab.coordinator.is_none() {
        lab.start_coordinator();
    }
    let losses = lab.settle().await;
    if losses.lost() > 0 {
        for log in ["coordinator", "backend"] {
            let text = std::fs::read_to_string(lab.dir.path().join(format!("{log}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!("--- {name}: last lines of the {log} log");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
    lab.clean_up().await;
    (name.to_owned(), losses, started.elapsed())
}

/// Waldur faults while three orders are processed.
async fn waldur(name: &str, faults: Vec<Fault>) -> (String, Losses, Duration) {
    row(name, Kind::Example, false, |mut lab| async move {
        let injected: usize = faults.iter().map(|f| f.times.unwrap_or(1) as usize).sum();
        for f in faults {
            lab.sim.add_fault(f);
        }
        for i in 0..3 {
            lab.order(&format!("{name} {i}"));
        }
        lab.start_coordinator();
        // The row is about what happens once every fault was served.
        until("the faults to be served", 60, || {
            lab.sim.fault_hits().len() >= injected
        })
        .await;
        lab
    })
    .await
}

/// The coordinator killed while a request to `route` is held.
async fn kill_at(
    name: &str,
    kind: Kind,
    state: &str,
    method: &str,
    route: &str,
) -> (String, Losses, Duration) {
    let (state, method, route) = (state.to_owned(), method.to_owned(), route.to_owned());
    row(name, kind, false, |mut lab| async move {
        lab.hold(&method, &route, 5_000);
        lab.order_in("killed mid order", &state);
        lab.start_coordinator();
        assert!(lab.seen(&route).await, "{route} never called");
        lab.kill_coordinator();
        lab.sim.clear_faults();
        lab
    })
    .await
}

/// The month ends while a report cycle runs (in process: the clock is
/// injected): the current period waits; afterwards each month holds exactly
/// the backend's usage of that month, once.
async fn month_change() -> (String, Losses, Duration) {
    use waldur_backend_sdk::Backend;
    use waldur_backend_sdk::types::UsageQuery;
    use waldur_coordinator::clock::ManualClock;
    let started = Instant::now();
    let clock = ManualClock::new("2026-11-30T23:59:58Z".parse().unwrap());
    let w = support::World::start(support::Options {
        clock: Some(clock.clone()),
        ..support::Options::default()
    })
    .await;
    let (resource, id) = w.provisioned("midnight").await;
    clock.tick_by(jiff::SignedDuration::from_secs(1));
    for _ in 0..3 {
        w.report().await;
    }
    let records = w.sim.component_usages(&resource);
    let (mut lost, mut doubled) = (0, 0);
    // No month holds two records of a component, and the month that is
    // current at the end holds the backend's current usage. (The example
    // backend cannot say what November looked like while it was current, so
    // November's amounts are not compared.)
    for period in ["2026-11-01", "2026-12-01"] {
        for k in ["cpu", "mem"] {
            let n = records
                .iter()
                .filter(|r| r.billing_period == period && r.component_type == k)
                .count();
            doubled += n.saturating_sub(1);
        }
    }
    let query = UsageQuery {
        backend_ids: vec![id.clone()],
        period: None,
        timezone: None,
    };
    let truth = w.backend.usage_report(query).await.unwrap();
    for (k, v) in &truth[0].total {
        let want = format!("{v:.2}");
        let has = records
            .iter()
            .find(|r| r.billing_period == "2026-12-01" && &r.component_type == k)
            .map(|r| r.usage.as_str());
        if *v != 0.0 && has != Some(want.as_str()) {
            lost += 1;
        }
    }
    let losses = Losses {
        orders: 1,
        done: 1,
        usage_lost: lost,
        usage_doubled: doubled,
        ..Losses::default()
    };
    (
        "month changes between reading and writing usage".into(),
        losses,
        started.elapsed(),
    )
}

fn print(rows: &[(String, Losses, Duration)]) -> bool {
    println!(
        "\n{:<52} {:>6} {:>5} {:>6} {:>9} {:>11} {:>11} {:>14} {:>15} {:>8}",
        "fault",
        "orders",
        "done",
        "erred",
        "not done",
        "duplicated",
        "usage lost",
        "usage doubled",
        "members removed",
        "seconds"
    );
    let mut ok = true;
    for (name, l, took) in rows {
        ok &= l.lost() == 0;
        println!(
            "{:<52} {:>6} {:>5} {:>6} {:>9} {:>11} {:>11} {:>14} {:>15} {:>8.1}",
            name,
            l.orders,
            l.done,
            l.erred,
            l.not_done,
            l.duplicated,
            l.usage_lost,
            l.usage_doubled,
            l.members_removed,
            took.as_secs_f64()
        );
    }
    ok
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let mut rows = Vec::new();
    macro_rules! run {
        ($name:expr, $e:expr) => {
            if want($name) {
                eprintln!("fault matrix: {}", $name);
                rows.push($e.await);
            }
        };
    }
    run!(
        "waldur 5xx on writes",
        waldur(
            "waldur 5xx on writes",
            vec![waldur_fault("POST", "marketplace-", Some(503), None, 6)]
        )
    );
    run!(
        "waldur 429 on reads",
        waldur(
            "waldur 429 on reads",
            vec![waldur_fault("GET", "marketplace-", Some(429), None, 6)]
        )
    );
    run!(
        "waldur timeouts (answers after the client gave up)",
        waldur(
            "waldur timeouts (answers after the client gave up)",
            vec![Fault {
                method: "GET".into(),
                path_contains: "marketplace-provider-resources/".into(),
                latency_ms: 4_000,
                times: Some(3),
                ..Default::default()
            }]
        )
    );
    run!(
        "waldur HTML maintenance page with 200",
        waldur(
            "waldur HTML maintenance page with 200",
            vec![waldur_fault(
                "POST",
                "set_backend_id",
                None,
                Some("<html>down for maintenance</html>"),
                4
            )]
        )
    );
    run!(
        "waldur cut JSON and empty bodies",
        waldur(
            "waldur cut JSON and empty bodies",
            vec![
                waldur_fault(
                    "GET",
                    "marketplace-orders/",
                    None,
                    Some("[{\"uuid\": \"0f"),
                    2
                ),
                waldur_fault("GET", "/team/", None, Some(""), 2),
            ]
        )
    );
    run!(
        "waldur empty lists (team, offering users)",
        row(
            "waldur empty lists (team, offering users)",
            Kind::Example,
            false,
            |mut lab| async move {
                for i in 0..3 {
                    lab.order(&format!("empty lists {i}"));
                }
                lab.start_coordinator();
                let orders: Vec<String> = lab.orders.iter().map(|(o, _)| o.clone()).collect();
                until("the orders to be done", 60, || {
                    orders
                        .iter()
                        .all(|o| lab.sim.order_state(o).as_deref() == Some("done"))
                })
                .await;
                lab.sim
                    .add_fault(waldur_fault("GET", "/team/", None, Some("[]"), 30));
                lab.sim.add_fault(waldur_fault(
                    "GET",
                    "marketplace-offering-users/",
                    None,
                    Some("[]"),
                    30,
                ));
                // Membership cycles ran on the empty answers: both were
                // served more than once.
                until("membership cycles on empty answers", 60, || {
                    let hits = lab.sim.fault_hits();
                    hits.iter().filter(|p| p.contains("/team/")).count() >= 3
                        && hits.iter().filter(|p| p.contains("offering-users")).count() >= 2
                })
                .await;
                lab
            }
        )
    );
    run!(
        "connection dropped mid-answer",
        waldur(
            "connection dropped mid-answer",
            vec![Fault {
                path_contains: "marketplace-".into(),
                drop: true,
                times: Some(5),
                ..Default::default()
            }]
        )
    );
    run!(
        "coordinator killed after evaluating (before approve)",
        kill_at(
            "coordinator killed after evaluating (before approve)",
            Kind::Example,
            "pending-provider",
            "POST",
            "approve_by_provider"
        )
    );
    run!(
        "coordinator killed before done",
        kill_at(
            "coordinator killed before done",
            Kind::Example,
            "executing",
            "POST",
            "set_state_done"
        )
    );
    run!(
        "coordinator killed after set_backend_id",
        kill_at(
            "coordinator killed after set_backend_id",
            Kind::Example,
            "executing",
            "POST",
            "set_backend_metadata"
        )
    );
    run!(
        "rabbitmq restarted while events flow",
        row(
            "rabbitmq restarted while events flow",
            Kind::Example,
            true,
            |mut lab| async move {
                lab.start_coordinator();
                let offering = lab.scenario.offering_uuid.clone();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !subscribed(&offering).await {
                    assert!(
                        Instant::now() < deadline,
                        "the coordinator never subscribed"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                for i in 0..3 {
                    lab.order(&format!("broker {i}"));
                }
                support::rabbitmqctl(&["stop_app"]);
                for i in 3..5 {
                    lab.order(&format!("broker {i}"));
                }
                support::rabbitmqctl(&["start_app"]);
                lab
            }
        )
    );
    run!(
        "stomp heartbeats lost (coordinator frozen 8 s)",
        row(
            "stomp heartbeats lost (coordinator frozen 8 s)",
            Kind::Example,
            true,
            |mut lab| async move {
                lab.start_coordinator();
                let offering = lab.scenario.offering_uuid.clone();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !subscribed(&offering).await {
                    assert!(
                        Instant::now() < deadline,
                        "the coordinator never subscribed"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                lab.signal_coordinator("-STOP");
                for i in 0..3 {
                    lab.order(&format!("frozen {i}"));
                }
                tokio::time::sleep(Duration::from_secs(8)).await;
                lab.signal_coordinator("-CONT");
                lab
            }
        )
    );
    run!(
        "poison events (not UTF-8, not an object, a path as id)",
        row(
            "poison events (not UTF-8, not an object, a path as id)",
            Kind::Example,
            true,
            |mut lab| async move {
                lab.start_coordinator();
                let offering = lab.scenario.offering_uuid.clone();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !subscribed(&offering).await {
                    assert!(
                        Instant::now() < deadline,
                        "the coordinator never subscribed"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                lab.sim.emit_raw("order", &offering, json!("not an object"));
                lab.sim.emit_raw(
                    "order",
                    &offering,
                    json!({"order_uuid": "../../etc/passwd"}),
                );
                publish_raw_order_event(&offering, "//79", 8).await;
                for i in 0..3 {
                    lab.order(&format!("after poison {i}"));
                }
                lab
            }
        )
    );
    if slurm_on() {
        let (kind, flags) = slurm_kind("a");
        run!(
            "coordinator killed after the slurm account was made",
            kill_at(
                "coordinator killed after the slurm account was made",
                kind,
                "executing",
                "POST",
                "set_backend_id"
            )
        );
        drop(flags);
        let (kind, flags) = slurm_kind("b");
        let dir = flags.path().to_owned();
        run!(
            "backend server killed mid-create (slurm)",
            row(
                "backend server killed mid-create (slurm)",
                kind,
                false,
                |mut lab| async move {
                    // Killed while `sacctmgr add account` of the allocation
                    // runs: the account may or may not exist afterwards.
                    std::fs::write(dir.join("sacctmgr.hang"), " add account ").unwrap();
                    lab.order("backend killed");
                    lab.start_coordinator();
                    until("sacctmgr add account", 60, || {
                        dir.join("sacctmgr.entered").exists()
                    })
                    .await;
                    lab.kill_backend();
                    std::fs::remove_file(dir.join("sacctmgr.hang")).unwrap();
                    lab.start_backend().await;
                    lab
                }
            )
        );
        drop(flags);
        let (kind, flags) = slurm_kind("c");
        let dir = flags.path().to_owned();
        run!(
            "sacctmgr failing for 6 s",
            row(
                "sacctmgr failing for 6 s",
                kind,
                false,
                |mut lab| async move {
                    std::fs::write(dir.join("sacctmgr.fail"), "").unwrap();
                    for i in 0..2 {
                        lab.order(&format!("sacctmgr failing {i}"));
                    }
                    lab.start_coordinator();
                    tokio::time::sleep(Duration::from_secs(6)).await;
                    std::fs::remove_file(dir.join("sacctmgr.fail")).unwrap();
                    lab
                }
            )
        );
        drop(flags);
        let (kind, flags) = slurm_kind("d");
        let dir = flags.path().to_owned();
        run!(
            "sacctmgr hanging for 20 s",
            row(
                "sacctmgr hanging for 20 s",
                kind,
                false,
                |mut lab| async move {
                    std::fs::write(dir.join("sacctmgr.hang"), "").unwrap();
                    lab.order("sacctmgr hanging");
                    lab.start_coordinator();
                    until("a hanging sacctmgr", 60, || {
                        dir.join("sacctmgr.entered").exists()
                    })
                    .await;
                    std::fs::remove_file(dir.join("sacctmgr.hang")).unwrap();
                    lab
                }
            )
        );
        drop(flags);
        let (kind, flags) = slurm_kind("e");
        run!(
            "slurmdbd down for 8 s",
            row("slurmdbd down for 8 s", kind, false, |mut lab| async move {
                // Where deploy/services.sh keeps its state.
                let run = std::env::var("WALDUR_RUN")
                    .unwrap_or_else(|_| "/var/tmp/waldur-services".into());
                let pid_file = format!("{run}/run/slurm/slurmdbd.pid");
                let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
                assert!(!pid.trim().is_empty(), "no slurmdbd pid in {pid_file}");
                assert!(
                    Command::new("kill")
                        .arg(pid.trim())
                        .status()
                        .unwrap()
                        .success()
                );
                let sacctmgr_ok = || {
                    Command::new("sacctmgr")
                        .args(["-n", "show", "cluster"])
                        .output()
                        .is_ok_and(|o| o.status.success())
                };
                until("sacctmgr to fail with slurmdbd down", 30, || !sacctmgr_ok()).await;
                for i in 0..2 {
                    lab.order(&format!("slurmdbd down {i}"));
                }
                lab.start_coordinator();
                tokio::time::sleep(Duration::from_secs(8)).await;
                Command::new("/usr/sbin/slurmdbd").status().unwrap();
                until("slurmdbd to come back", 60, sacctmgr_ok).await;
                lab
            })
        );
        drop(flags);
    } else {
        eprintln!("fault matrix: WALDUR_SLURM_CLUSTER is not set; the SLURM rows are skipped");
    }
    run!(
        "month changes between reading and writing usage",
        month_change()
    );
    let ok = print(&rows);
    if !ok {
        eprintln!("fault matrix: losses above");
        std::process::exit(1);
    }
}
