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

    /// The broker as the portal and the coordinator reach it: over AMQPS
    /// with the test CA when [`amqps_ca`] names one, else plain AMQP.
    pub fn broker(&self) -> ResolvedBroker {
        let ca = amqps_ca();
        ResolvedBroker {
            host: if ca.is_some() {
                "localhost"
            } else {
                "127.0.0.1"
            }
            .into(),
            port: if ca.is_some() { 5671 } else { 5672 },
            tls: ca.is_some(),
            ca_file: ca,
            vhost: self.name.clone(),
            username: self.user.clone(),
            password: Secret::new(self.password.clone()),
        }
    }
}

/// The CA of the broker's AMQPS listener (`deploy/services.sh amqps`), when
/// `WALDUR_AMQPS_CA` names it: the Helmholtz tests then talk TLS, as
/// production does, with the certificate verified for `localhost`.
pub fn amqps_ca() -> Option<PathBuf> {
    std::env::var_os("WALDUR_AMQPS_CA").map(PathBuf::from)
}

/// The `broker:` settings of [`Vhost::broker`] as config YAML (flow style).
fn broker_yaml(vhost: &str) -> String {
    match amqps_ca() {
        Some(ca) => format!(
            "{{host: localhost, port: 5671, tls: true, ca_file: {}, vhost: {vhost}}}",
            ca.display()
        ),
        None => format!("{{host: 127.0.0.1, port: 5672, vhost: {vhost}}}"),
    }
}

/// What a test adds to the shipped two resource types and the service.
#[derive(Default, Clone)]
pub struct Extra {
    /// Lines under `ComputeResourceSpecV1:` (10 spaces of indent).
    pub compute: String,
    /// Lines under `ChatTeamSpecV1:`.
    pub chat: String,
    /// Lines under the service (6 spaces).
    pub service: String,
    /// `target:` of `ComputeResourceSpecV1` instead of `group`.
    pub compute_target: Option<&'static str>,
}

pub fn schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hca/schemas")
}

/// Coordinator config with one Helmholtz service on `vhost` and the backend
/// `hpc` on `port`.
pub fn config_text(dir: &Path, port: u16, vhost: &str, service_id: &str) -> String {
    config_text_with(dir, port, vhost, service_id, &Extra::default())
}

/// [`config_text`] with a test's additions.
pub fn config_text_with(
    dir: &Path,
    port: u16,
    vhost: &str,
    service_id: &str,
    extra: &Extra,
) -> String {
    format!(
        r#"
version: 1
timeouts: {{backend_read_seconds: 5, backend_mutate_seconds: 5, backend_connect_seconds: 2}}
{backends}helmholtz:
  services:
    - name: test
      service_id: {service_id}
      broker: {broker}
      declare_queues: true
      max_backoff_seconds: 1
      resource_types:
        ComputeResourceSpecV1:
          schema: {s}/ComputeResourceSpecV1.json
          backend: hpc
          target: {compute_target}
          backend_id: "hca_{{/specification/project_name}}_{{request_hash}}"
          project: "{{/specification/project_name}}"
          customer: helmholtz
          limits:
            cpu: {{from: /specification/cpu_hours}}
            mem: {{from: /specification/gpu_hours, default: 0}}
{compute}        ChatTeamSpecV1:
          schema: {s}/ChatTeamSpecV1.json
          backend: hpc
          target: user
          backend_id: "chat_{{/specification/team_name}}_{{request_hash}}"
          limits: {{gpu: 1}}
{chat}{service}"#,
        backends = super::backends_yaml(dir, port),
        s = schemas().display(),
        broker = broker_yaml(vhost),
        compute = extra.compute,
        compute_target = extra.compute_target.unwrap_or("group"),
        chat = extra.chat,
        service = extra.service,
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
        Self::with(served, Extra::default()).await
    }

    /// [`Setup::new`] with a test's additions to the config.
    pub async fn with(served: Arc<dyn Backend>, extra: Extra) -> Self {
        let dir = tempfile::tempdir().unwrap();
        super::write_pki(dir.path());
        let port = super::free_port();
        let server = super::start_backend(dir.path(), port, served.clone()).await;
        let vhost = Vhost::create().await;
        let service_id = unique("svc");
        let text = config_text_with(dir.path(), port, &vhost.name, &service_id, &extra);
        std::fs::write(dir.path().join("coordinator.yaml"), &text).unwrap();
        let env = MapEnv::from([
            ("HCA_USERNAME", vhost.user.as_str()),
            ("HCA_PASSWORD", vhost.password.as_str()),
            // The test directory's admin password, for `password_env`.
            ("TEST_LDAP_PASSWORD", LDAP_PASSWORD),
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

/// The group the shipped payloads and [`compute`] name.
pub const CLIMATE: &str = "urn:geant:helmholtz.de:group:climate#login.helmholtz.de";

pub fn compute(project: &str, cpu_hours: i64) -> Vec<u8> {
    compute_for(
        &json!({"user_id_target": null, "group_urn_target": CLIMATE}),
        project,
        cpu_hours,
    )
}

/// A compute request for `target_entity`.
pub fn compute_for(target_entity: &Value, project: &str, cpu_hours: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "ComputeResourceSpecV1",
        "target_entity": target_entity,
        "specification": {"project_name": project, "cpu_hours": cpu_hours, "gpu_hours": 3}
    }))
    .unwrap()
}

/// `target_entity` of a person.
pub fn person(vo_person_id: &str) -> Value {
    json!({"user_id_target": vo_person_id, "group_urn_target": null})
}

/// `target_entity` of a group.
pub fn group(urn: &str) -> Value {
    json!({"user_id_target": null, "group_urn_target": urn})
}

/// The test directory `deploy/services.sh` runs (OpenLDAP on 127.0.0.1:389),
/// when `WALDUR_LDAP_URL` names it.
pub fn ldap_url() -> Option<String> {
    std::env::var("WALDUR_LDAP_URL").ok()
}

/// The test directory, written as its admin; entries made through it are
/// removed by [`Directory::clean_up`].
pub struct Directory {
    ldap: ldap3::Ldap,
    made: Vec<String>,
}

pub const LDAP_BASE: &str = "dc=waldur,dc=test";
/// The test directory's admin password (`deploy/services.sh`).
pub const LDAP_PASSWORD: &str = "waldur-test";

impl Directory {
    pub async fn connect(url: &str) -> Self {
        let (conn, mut ldap) = ldap3::LdapConnAsync::new(url).await.unwrap();
        ldap3::drive!(conn);
        ldap.simple_bind(&format!("cn=admin,{LDAP_BASE}"), LDAP_PASSWORD)
            .await
            .unwrap()
            .success()
            .unwrap();
        Self {
            ldap,
            made: Vec::new(),
        }
    }

    /// A person with a POSIX account, their voPersonID and group
    /// entitlements.
    pub async fn person(&mut self, uid: &str, vo_person_id: &str, groups: &[&str]) {
        let dn = format!("uid={uid},ou=people,{LDAP_BASE}");
        let uid_number = (rand::random::<u32>() % 100_000 + 200_000).to_string();
        let mut attrs: Vec<(&str, std::collections::HashSet<&str>)> = vec![
            (
                "objectClass",
                ["inetOrgPerson", "posixAccount", "voPerson", "eduPerson"].into(),
            ),
            ("uid", [uid].into()),
            ("cn", [uid].into()),
            ("sn", [uid].into()),
            ("uidNumber", [uid_number.as_str()].into()),
            ("gidNumber", [uid_number.as_str()].into()),
            ("homeDirectory", ["/home/nobody"].into()),
            ("voPersonID", [vo_person_id].into()),
        ];
        if !groups.is_empty() {
            attrs.push(("eduPersonEntitlement", groups.iter().copied().collect()));
        }
        self.ldap.add(&dn, attrs).await.unwrap().success().unwrap();
        self.made.push(dn);
    }

    /// A posixGroup under ou=groups whose description is `urn`.
    pub async fn posix_group(&mut self, cn: &str, urn: &str, member_uids: &[&str]) {
        let dn = format!("cn={cn},ou=groups,{LDAP_BASE}");
        let gid = (rand::random::<u32>() % 100_000 + 300_000).to_string();
        let attrs: Vec<(&str, std::collections::HashSet<&str>)> = vec![
            ("objectClass", ["posixGroup"].into()),
            ("cn", [cn].into()),
            ("gidNumber", [gid.as_str()].into()),
            ("description", [urn].into()),
            ("memberUid", member_uids.iter().copied().collect()),
        ];
        self.ldap.add(&dn, attrs).await.unwrap().success().unwrap();
        self.made.push(dn);
    }

    pub async fn clean_up(mut self) {
        for dn in self.made.drain(..) {
            let _ = self.ldap.delete(&dn).await;
        }
        let _ = self.ldap.unbind().await;
    }
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

/// The example backend with slow creates, optionally a first create that
/// never answers after doing its work (a coordinator "killed" while it
/// waits), and refusals to give before creating.
pub struct Gated {
    inner: ExampleBackend,
    delay: Duration,
    stall_first: std::sync::atomic::AtomicBool,
    refusals: std::sync::Mutex<std::collections::VecDeque<waldur_backend_sdk::BackendError>>,
    refuse_members: std::sync::atomic::AtomicBool,
}

impl Gated {
    pub fn new(inner: ExampleBackend, delay: Duration, stall_first: bool) -> Self {
        Self {
            inner,
            delay,
            stall_first: std::sync::atomic::AtomicBool::new(stall_first),
            refusals: Default::default(),
            refuse_members: Default::default(),
        }
    }

    /// The next creates fail with these errors, in order.
    /// Creates that add no member: each is refused, as a backend refuses a
    /// name it cannot take.
    pub fn refusing_members(inner: ExampleBackend) -> Self {
        let g = Self::new(inner, Duration::ZERO, false);
        g.refuse_members
            .store(true, std::sync::atomic::Ordering::SeqCst);
        g
    }

    pub fn refusing(inner: ExampleBackend, errors: Vec<waldur_backend_sdk::BackendError>) -> Self {
        let g = Self::new(inner, Duration::ZERO, false);
        *g.refusals.lock().unwrap() = errors.into();
        g
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
        if let Some(e) = self.refusals.lock().unwrap().pop_front() {
            return Err(e);
        }
        tokio::time::sleep(self.delay).await;
        let mut request = request;
        let users = if self
            .refuse_members
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            std::mem::take(&mut request.users)
        } else {
            Vec::new()
        };
        let mut created = self.inner.create_resource(request).await?;
        for u in users {
            created.user_results.push(UserResult::failed(
                u.username.clone(),
                waldur_backend_sdk::BackendError::invalid_field(
                    "username",
                    "not an account name here",
                ),
            ));
        }
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
