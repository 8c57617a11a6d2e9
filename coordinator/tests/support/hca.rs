//! Helmholtz Cloud tests: a virtual host and user of their own on the real
//! broker, a backend server over mutual TLS, and the portal's side.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use waldur_backend_example::{ExampleBackend, ExampleSettings};
use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{Backend, BackendResult, Bound};
use waldur_coordinator::config::Config;
use waldur_coordinator::runtime::Coordinator;
use waldur_coordinator::secret::{MapEnv, Secret};
use waldur_coordinator::upstream::hca::config::ResolvedBroker;
use waldur_coordinator::upstream::hca::{Portal, PortalMessage};

const MGMT: &str = "http://127.0.0.1:15672/api";

pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}-{:x}", n & 0xffff_ffff)
}

/// A virtual host and a user of its own on the real broker.
pub struct Vhost {
    pub name: String,
    pub user: String,
    pub password: String,
    http: reqwest::Client,
}

impl Vhost {
    pub async fn create() -> Self {
        let v = Self {
            name: unique("hca-test"),
            user: unique("hca-user"),
            password: unique("pw"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = v.put(&format!("vhosts/{}", v.name), json!({})).await
                && v.put(
                    &format!("users/{}", v.user),
                    json!({"password": v.password, "tags": ""}),
                )
                .await
                && v.put(
                    &format!("permissions/{}/{}", v.name, v.user),
                    json!({"configure": ".*", "write": ".*", "read": ".*"}),
                )
                .await;
            if ok {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "rabbitmq management api not reachable"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn put(&self, path: &str, body: Value) -> bool {
        self.http
            .put(format!("{MGMT}/{path}"))
            .basic_auth("guest", Some("guest"))
            .json(&body)
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    }

    /// Messages in a queue, ready or unacknowledged.
    pub async fn depth(&self, queue: &str) -> Option<u64> {
        let r = self
            .http
            .get(format!("{MGMT}/queues/{}/{queue}", self.name))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        v["messages"].as_u64()
    }

    pub fn broker(&self) -> ResolvedBroker {
        ResolvedBroker {
            host: "127.0.0.1".into(),
            port: 5672,
            tls: false,
            ca_file: None,
            vhost: self.name.clone(),
            username: self.user.clone(),
            password: Secret::new(self.password.clone()),
        }
    }
}

pub fn schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hca/schemas")
}

/// Coordinator config with one Helmholtz service on `vhost` and the backend
/// `hpc` on `port`.
pub fn config_text(dir: &Path, port: u16, vhost: &str, service_id: &str) -> String {
    format!(
        r#"
version: 1
timeouts: {{backend_read_seconds: 5, backend_mutate_seconds: 5, backend_connect_seconds: 2}}
{backends}helmholtz:
  services:
    - name: test
      service_id: {service_id}
      broker: {{host: 127.0.0.1, port: 5672, vhost: {vhost}}}
      declare_queues: true
      max_backoff_seconds: 1
      resource_types:
        ComputeResourceSpecV1:
          schema: {s}/ComputeResourceSpecV1.json
          backend: hpc
          target: group
          backend_id: "hca_{{/specification/project_name}}_{{request_hash}}"
          project: "{{/specification/project_name}}"
          customer: helmholtz
          limits:
            cpu: {{from: /specification/cpu_hours}}
            mem: {{from: /specification/gpu_hours, default: 0}}
        ChatTeamSpecV1:
          schema: {s}/ChatTeamSpecV1.json
          backend: hpc
          target: user
          backend_id: "chat_{{/specification/team_name}}_{{request_hash}}"
          limits: {{gpu: 1}}
"#,
        backends = super::backends_yaml(dir, port),
        s = schemas().display(),
    )
}

/// The broker, a backend server and the coordinator's config, not yet
/// running.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub vhost: Vhost,
    pub service_id: String,
    pub config: Config,
    pub env: MapEnv,
    pub port: u16,
    stop: tokio::sync::watch::Sender<bool>,
    served: Arc<dyn Backend>,
    server: Option<Bound>,
}

impl Setup {
    pub async fn new(served: Arc<dyn Backend>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        super::write_pki(dir.path());
        let port = super::free_port();
        let server = super::start_backend(dir.path(), port, served.clone()).await;
        let vhost = Vhost::create().await;
        let service_id = unique("svc");
        let text = config_text(dir.path(), port, &vhost.name, &service_id);
        std::fs::write(dir.path().join("coordinator.yaml"), &text).unwrap();
        let env = MapEnv::from([
            ("HCA_USERNAME", vhost.user.as_str()),
            ("HCA_PASSWORD", vhost.password.as_str()),
        ]);
        let config = Config::parse(&text, &dir.path().join("coordinator.yaml"), &env).unwrap();
        Self {
            dir,
            vhost,
            service_id,
            config,
            env,
            port,
            stop: tokio::sync::watch::channel(false).0,
            served,
            server: Some(server),
        }
    }

    /// Starts the coordinator in this process; abort the handle to kill it,
    /// or [`Setup::stop_and_check_all_acknowledged`] to stop it gracefully.
    pub async fn start(&self) -> (Arc<Coordinator>, tokio::task::JoinHandle<()>) {
        let c = Arc::new(super::build_coordinator(&self.config, &self.env, None));
        let stop = self.stop.subscribe();
        let run = tokio::spawn(c.clone().run(async move {
            let mut stop = stop;
            let _ = stop.wait_for(|s| *s).await;
        }));
        super::until(
            "the coordinator to connect to the broker",
            Duration::from_secs(30),
            || c.hca[0].1.connected(),
        )
        .await;
        (c, run)
    }

    pub async fn stop_backend(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }

    pub async fn restart_backend(&mut self) {
        self.server =
            Some(super::start_backend(self.dir.path(), self.port, self.served.clone()).await);
    }

    pub async fn portal(&self) -> Portal {
        Portal::connect(
            &self.vhost.broker(),
            &self.service_id,
            "to_hca",
            "to_portal",
        )
        .await
        .unwrap()
    }

    /// Stops the coordinator as SIGTERM does and proves every request was
    /// acknowledged: once its consumer is gone, anything unacknowledged would
    /// be back in `to_hca`, and the queue is empty.
    pub async fn stop_and_check_all_acknowledged(&self, run: tokio::task::JoinHandle<()>) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(40), run)
            .await
            .expect("the coordinator did not stop")
            .unwrap();
        let portal = self.portal().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (ready, consumers) = portal.queue_state("to_hca").await.unwrap();
            if consumers == 0 {
                assert_eq!(ready, 0, "requests left unacknowledged in to_hca");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the coordinator's consumer did not go away"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn example() -> ExampleBackend {
    ExampleBackend::new(ExampleSettings::default())
}

pub fn compute(project: &str, cpu_hours: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "ComputeResourceSpecV1",
        "target_entity": {"user_id_target": null, "group_urn_target": "urn:geant:helmholtz.de:group:climate#login.helmholtz.de"},
        "specification": {"project_name": project, "cpu_hours": cpu_hours, "gpu_hours": 3}
    }))
    .unwrap()
}

pub async fn ask(
    portal: &mut Portal,
    message_type: &str,
    correlation_id: &str,
    body: &[u8],
) -> PortalMessage {
    portal
        .send(message_type, correlation_id, body)
        .await
        .unwrap();
    portal
        .reply_to(correlation_id, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no reply to {correlation_id}"))
}

/// The example backend with slow creates, and optionally a first create
/// that never answers after doing its work (a coordinator "killed" while it
/// waits).
pub struct Gated {
    inner: ExampleBackend,
    delay: Duration,
    stall_first: std::sync::atomic::AtomicBool,
}

impl Gated {
    pub fn new(inner: ExampleBackend, delay: Duration, stall_first: bool) -> Self {
        Self {
            inner,
            delay,
            stall_first: std::sync::atomic::AtomicBool::new(stall_first),
        }
    }
}

#[async_trait::async_trait]
impl Backend for Gated {
    fn info(&self) -> BackendInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> Vec<Capability> {
        self.inner.capabilities()
    }
    async fn probe(&self) -> BackendResult<Probe> {
        self.inner.probe().await
    }
    async fn components(&self) -> BackendResult<Vec<Component>> {
        self.inner.components().await
    }
    fn generate_backend_id(
        &self,
        base_name: &str,
        resource: Option<&ResourceContext>,
    ) -> BackendResult<String> {
        self.inner.generate_backend_id(base_name, resource)
    }
    async fn create_resource(&self, request: CreateResource) -> BackendResult<Created> {
        tokio::time::sleep(self.delay).await;
        let created = self.inner.create_resource(request).await?;
        if self
            .stall_first
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            std::future::pending::<()>().await;
        }
        Ok(created)
    }
    async fn get_resource(&self, backend_id: &str) -> BackendResult<ResourceInfo> {
        self.inner.get_resource(backend_id).await
    }
    async fn delete_resource(&self, request: DeleteResource) -> BackendResult<Deleted> {
        self.inner.delete_resource(request).await
    }
}
