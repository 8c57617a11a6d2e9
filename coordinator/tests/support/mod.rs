//! A world for end-to-end tests: waldur-sim, a real backend server over
//! mutual TLS hosting the example backend, and a coordinator wired to both.
//!
//! With `WALDUR_TEST_TUNNEL=1` every backend server dials out to the
//! coordinator's tunnel listener instead of listening: the same tests run
//! in dial-out mode (the helpers below switch; the tests do not change).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use waldur_backend_example::{ExampleBackend, ExampleSettings};
use waldur_backend_sdk::{Backend, Bound, Registry};
use waldur_coordinator::backend::TunnelHub;
use waldur_coordinator::clock::{Clock, ManualClock, SystemClock};
use waldur_coordinator::config::Config;
use waldur_coordinator::processors::membership::MembershipSummary;
use waldur_coordinator::processors::orders::CycleReport;
use waldur_coordinator::processors::report::ReportSummary;
use waldur_coordinator::runtime::Coordinator;
use waldur_coordinator::secret::MapEnv;
use waldur_runtime::pki::{self, Usage, Validity};
use waldur_sim::{NewOrder, Scenario, Sim};

pub mod hca;

pub const TOKEN: &str = "sim-token-0123456789";

pub struct World {
    pub dir: tempfile::TempDir,
    pub sim: Sim,
    pub sim_addr: std::net::SocketAddr,
    pub scenario: Scenario,
    pub backend: ExampleBackend,
    /// What the backend server hosts (the example backend unless started
    /// with [`World::start_with`]).
    pub served: Arc<dyn Backend>,
    pub server: Option<Bound>,
    pub port: u16,
    pub coordinator: Coordinator,
    pub config: Config,
    pub env: MapEnv,
}

pub struct Options {
    pub settings: ExampleSettings,
    pub extra_offering_config: &'static str,
    pub waldur_timeout_seconds: u64,
    pub expose_errors: bool,
    /// Authenticate with OIDC client credentials instead of a token.
    pub oidc: bool,
    /// The coordinator's clock (default: the system clock).
    pub clock: Option<ManualClock>,
    /// The `tasks:` map of the offering.
    pub tasks: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            settings: ExampleSettings {
                allocation_prefix: "hpc_".into(),
                ..ExampleSettings::default()
            },
            extra_offering_config: "",
            waldur_timeout_seconds: 5,
            expose_errors: true,
            oidc: false,
            clock: None,
            tasks: "{orders: true, report: true, membership: true}",
        }
    }
}

/// Waits until `cond` holds, checking every 25 ms; fails the test after
/// `limit`, naming `what`.
pub async fn until(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    until_every(what, limit, Duration::from_millis(25), cond).await
}

/// [`until`], checking every `every` (for conditions that run a command).
pub async fn until_every(
    what: &str,
    limit: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Runs `rabbitmqctl` (broker restarts in tests); fails the test if it does.
pub fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback port nobody listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether backend servers dial out to the coordinator's tunnel
/// (`WALDUR_TEST_TUNNEL=1`) instead of listening.
pub fn tunnel_mode() -> bool {
    std::env::var_os("WALDUR_TEST_TUNNEL").is_some_and(|v| v == "1")
}

/// The coordinator config's `backends:` section: backend `hpc` on `port`
/// with the [`write_pki`] client certificate. In dial-out mode, the tunnel
/// listener on `port` instead, allowing the server certificate to serve
/// `hpc`.
pub fn backends_yaml(dir: &Path, port: u16) -> String {
    if tunnel_mode() {
        return format!(
            "tunnel:\n  listen: 127.0.0.1:{port}\n  tls: {{ca: {d}/ca.pem, cert: {d}/client.pem, key: {d}/client.key}}\n  allowed: {{localhost: [hpc]}}\nbackends:\n  hpc:\n    endpoint: tunnel\n    instance: hpc\n",
            d = dir.display()
        );
    }
    format!(
        "backends:\n  hpc:\n    endpoint: https://127.0.0.1:{port}\n    server_name: localhost\n    instance: hpc\n    tls: {{ca: {d}/ca.pem, cert: {d}/client.pem, key: {d}/client.key}}\n",
        d = dir.display()
    )
}

/// A backend server config's transport line: listen on `port`, or, in
/// dial-out mode, dial the coordinator's tunnel on `port`.
pub fn server_transport_yaml(port: u16) -> String {
    if tunnel_mode() {
        format!(
            "connect: {{coordinator: 'https://127.0.0.1:{port}', server_name: coordinator.test, backends: [hpc], max_backoff_seconds: 1}}\n"
        )
    } else {
        format!("listen: 127.0.0.1:{port}\n")
    }
}

/// The tunnel listener for a config, one per listen address in the whole
/// test process (several coordinators of one test share it, as they share
/// the port).
fn hub(config: &Config) -> Option<Arc<TunnelHub>> {
    static HUBS: std::sync::OnceLock<
        std::sync::Mutex<BTreeMap<std::net::SocketAddr, Arc<TunnelHub>>>,
    > = std::sync::OnceLock::new();
    let t = config.tunnel.as_ref()?;
    let mut hubs = HUBS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let hub = hubs.entry(t.listen).or_insert_with(|| {
        TunnelHub::bind(
            t,
            waldur_coordinator::runtime::offering::tunneled_backends(config),
        )
        .unwrap()
    });
    Some(hub.clone())
}

pub fn write_pki(dir: &Path) {
    let ca = pki::create_ca("test ca", Validity::days(1)).unwrap();
    pki::write(dir, "ca", &ca).unwrap();
    // Both purposes: in dial-out mode the backend server is the TLS client
    // and the coordinator the TLS server.
    let server = pki::issue(
        &ca,
        Usage::Both,
        "localhost",
        &["127.0.0.1".into()],
        Validity::days(1),
    )
    .unwrap();
    pki::write(dir, "server", &server).unwrap();
    let client = pki::issue(&ca, Usage::Both, "coordinator.test", &[], Validity::days(1)).unwrap();
    pki::write(dir, "client", &client).unwrap();
}

pub async fn start_backend(dir: &Path, port: u16, backend: Arc<dyn Backend>) -> Bound {
    let config = format!(
        "version: 1\n{transport}tls:\n  ca: {0}/ca.pem\n  cert: {0}/server.pem\n  key: {0}/server.key\n  allowed_clients: [coordinator.test]\ninstances:\n  - name: hpc\n    type: example\n",
        dir.display(),
        transport = server_transport_yaml(port),
    );
    let config = waldur_backend_sdk::config::ServerConfig::parse(&config, Path::new("t")).unwrap();
    waldur_backend_sdk::spawn(&config, Registry::single("hpc", backend).unwrap())
        .await
        .unwrap()
}

pub fn build_coordinator(config: &Config, env: &MapEnv, clock: Option<ManualClock>) -> Coordinator {
    let backends =
        waldur_coordinator::runtime::offering::backend_handles(config, hub(config).as_ref())
            .unwrap();
    let clock: Arc<dyn Clock> = match clock {
        Some(c) => Arc::new(c),
        None => Arc::new(SystemClock),
    };
    Coordinator::with_backends(config, env, backends, clock).unwrap()
}

impl World {
    pub async fn start(options: Options) -> Self {
        let backend = ExampleBackend::new(options.settings.clone());
        Self::start_with(options, backend.clone(), Arc::new(backend)).await
    }

    /// A world whose backend server hosts `served`.
    pub async fn start_with(
        options: Options,
        backend: ExampleBackend,
        served: Arc<dyn Backend>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_pki(dir.path());
        let sim = Sim::new(TOKEN);
        let sim_addr = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let scenario = sim.seed_basic(
            None,
            &[
                ("alice", "PROJECT.MANAGER", Some("alice")),
                ("bob", "PROJECT.MEMBER", Some("bob")),
                ("carol", "PROJECT.MEMBER", None),
            ],
        );
        let port = free_port();
        let server = start_backend(dir.path(), port, served.clone()).await;
        let config = format!(
            r#"
version: 1
expose_backend_error_details: {expose}
retry: {{max_attempts: 2, initial_backoff_ms: 10, max_backoff_ms: 20}}
timeouts: {{waldur_seconds: {wt}, backend_read_seconds: 5, backend_mutate_seconds: 10, backend_connect_seconds: 2}}
{backends}offerings:
  - name: HPC
    offering_uuid: {offering}
    waldur:
      api_url: http://{sim_addr}/api/
      {auth}
    backends: {{orders: hpc, report: hpc, membership: hpc}}
    tasks: {tasks}
{extra}
"#,
            backends = backends_yaml(dir.path(), port),
            expose = options.expose_errors,
            wt = options.waldur_timeout_seconds,
            offering = scenario.offering_uuid,
            extra = options.extra_offering_config,
            tasks = options.tasks,
            auth = if options.oidc {
                format!(
                    "oidc: {{token_url: 'http://{sim_addr}/oidc/token', client_id: site-agent, client_secret_env: OIDC_SECRET}}"
                )
            } else {
                "token_env: WALDUR_TOKEN".to_owned()
            },
        );
        if options.oidc {
            sim.enable_oidc("site-agent", "oidc-secret");
        }
        let env = MapEnv::from([("WALDUR_TOKEN", TOKEN), ("OIDC_SECRET", "oidc-secret")]);
        let config = Config::parse(&config, Path::new("coordinator.yaml"), &env).unwrap();
        let coordinator = build_coordinator(&config, &env, options.clock.clone());
        let config_copy = config.clone();
        Self {
            dir,
            sim,
            sim_addr,
            scenario,
            backend,
            served,
            server: Some(server),
            port,
            coordinator,
            config: config_copy,
            env,
        }
    }

    pub fn order(
        &self,
        order_type: &str,
        state: &str,
        resource_uuid: &str,
        attributes: serde_json::Value,
    ) -> (String, String) {
        let created = self
            .sim
            .create_order(NewOrder {
                order_type: order_type.into(),
                state: state.into(),
                offering_uuid: self.scenario.offering_uuid.clone(),
                project_uuid: self.scenario.project_uuid.clone(),
                resource_uuid: resource_uuid.into(),
                name: "Weather Run".into(),
                limits: BTreeMap::from([("cpu".into(), 5), ("storage".into(), 50)]),
                attributes,
                ..Default::default()
            })
            .unwrap();
        (created.order_uuid, created.resource_uuid)
    }

    pub async fn cycle(&self) -> CycleReport {
        let mut results = self.coordinator.process_orders_once().await;
        results.pop().unwrap().1.expect("order cycle")
    }

    /// Runs cycles until the order reaches `state` (deadline 20 s).
    pub async fn until_state(&self, order: &str, state: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            self.cycle().await;
            if self.sim.order_state(order).as_deref() == Some(state) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order never reached {state}: {:?}",
                self.sim.order(order)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A fresh coordinator from the same config, running every task loop
    /// (events included) until the returned handle is aborted.
    pub fn spawn_running(&self) -> (Arc<Coordinator>, tokio::task::JoinHandle<()>) {
        let c = Arc::new(build_coordinator(&self.config, &self.env, None));
        let run = c.clone();
        let handle = tokio::spawn(async move { run.run(std::future::pending()).await });
        (c, handle)
    }

    pub async fn report(&self) -> ReportSummary {
        let mut results = self.coordinator.report_once().await;
        results.pop().unwrap().1.expect("report cycle")
    }

    pub async fn membership(&self) -> MembershipSummary {
        let mut results = self.coordinator.sync_membership_once().await;
        results.pop().unwrap().1.expect("membership cycle")
    }

    /// Creates a resource through a Create order and returns (resource
    /// uuid, backend id).
    pub async fn provisioned(&self, name: &str) -> (String, String) {
        self.provisioned_with(
            name,
            BTreeMap::from([("cpu".into(), 5), ("storage".into(), 50)]),
        )
        .await
    }

    /// As [`World::provisioned`], with these limits.
    pub async fn provisioned_with(
        &self,
        name: &str,
        limits: BTreeMap<String, i64>,
    ) -> (String, String) {
        let created = self
            .sim
            .create_order(NewOrder {
                order_type: "Create".into(),
                state: "executing".into(),
                offering_uuid: self.scenario.offering_uuid.clone(),
                project_uuid: self.scenario.project_uuid.clone(),
                name: name.into(),
                limits,
                ..Default::default()
            })
            .unwrap();
        self.until_state(&created.order_uuid, "done").await;
        let backend_id = self
            .sim
            .resource(&created.resource_uuid)
            .unwrap()
            .backend_id;
        (created.resource_uuid, backend_id)
    }

    pub async fn stop_backend(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }

    pub async fn restart_backend(&mut self) {
        self.server = Some(start_backend(self.dir.path(), self.port, self.served.clone()).await);
    }
}

/// A binary of the workspace (`cargo build --workspace --bins` runs before
/// the tests, as deploy/test.sh does).
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|d| d.parent()).unwrap().join(name);
    assert!(
        bin.try_exists().unwrap_or(false),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}
