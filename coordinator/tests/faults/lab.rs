//! The lab: a simulator, the two real binaries and their configs, started,
//! killed and restarted by the rows; and the losses a row counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use waldur_backend_proto::v1::Capability;
use waldur_coordinator::backend::BackendHandle;
use waldur_coordinator::config::Config;
use waldur_coordinator::secret::MapEnv;
use waldur_sim::{Fault, NewOrder, Scenario, Sim};

use crate::{SETTLE, support};

/// What the backend server hosts.
#[derive(Clone)]
pub(crate) enum Kind {
    /// The in-memory example backend (fast; its state dies with it).
    Example,
    /// The real SLURM cluster, commands run through `bin` (a folder of
    /// wrappers that can be told to fail or hang).
    Slurm { prefix: String, bin: PathBuf },
}

/// One row of the table.
#[derive(Debug, Default, Clone)]
pub(crate) struct Losses {
    pub(crate) orders: usize,
    pub(crate) done: usize,
    pub(crate) erred: usize,
    pub(crate) not_done: usize,
    pub(crate) duplicated: usize,
    pub(crate) usage_lost: usize,
    pub(crate) usage_doubled: usize,
    pub(crate) members_removed: usize,
}

impl Losses {
    pub(crate) fn lost(&self) -> usize {
        self.erred
            + self.not_done
            + self.duplicated
            + self.usage_lost
            + self.usage_doubled
            + self.members_removed
    }
}

pub(crate) struct Lab {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) sim: Sim,
    pub(crate) scenario: Scenario,
    pub(crate) kind: Kind,
    pub(crate) port: u16,
    pub(crate) backend: Option<Child>,
    pub(crate) coordinator: Option<Child>,
    pub(crate) handle: BackendHandle,
    pub(crate) orders: Vec<(String, String)>,
}

impl Lab {
    pub(crate) async fn start(kind: Kind, events: bool) -> Self {
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

    pub(crate) fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap()
    }

    pub(crate) async fn start_backend(&mut self) {
        let child = Command::new(support::workspace_binary("waldur-backend-server"))
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

    pub(crate) fn kill_backend(&mut self) {
        if let Some(mut c) = self.backend.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn start_coordinator(&mut self) {
        let child = Command::new(support::workspace_binary("waldur-coordinator"))
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
    pub(crate) fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn signal_coordinator(&self, signal: &str) {
        if let Some(c) = &self.coordinator {
            Command::new("kill")
                .args([signal, &c.id().to_string()])
                .status()
                .unwrap();
        }
    }

    pub(crate) fn order(&mut self, name: &str) -> String {
        self.order_in(name, "executing")
    }

    pub(crate) fn order_in(&mut self, name: &str, state: &str) -> String {
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
    pub(crate) async fn seen(&self, route: &str) -> bool {
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
    pub(crate) fn hold(&self, method: &str, path: &str, ms: u64) {
        self.sim.add_fault(Fault {
            method: method.into(),
            path_contains: path.into(),
            latency_ms: ms,
            ..Default::default()
        });
    }

    /// Waits until every order is final (done or erred) and the backend
    /// and Waldur agree on members and usage, then counts the losses.
    pub(crate) async fn settle(&self) -> Losses {
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

    pub(crate) async fn listed(&self) -> Vec<String> {
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
    pub(crate) async fn usage(&self, ids: &[String]) -> (usize, usize) {
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
    pub(crate) async fn clean_up(&mut self) {
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
