//! Shared set-up of the coordinator benchmarks: a site CA, waldur-sim and a
//! backend server over mutual TLS on loopback.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use waldur_backend_sdk::types::{CreateResource, ResourceContext, User};
use waldur_backend_sdk::{Backend, Bound, Registry};
use waldur_runtime::pki::{self, Usage, Validity};
use waldur_sim::{Scenario, Sim};

pub struct Bench {
    pub dir: tempfile::TempDir,
    pub sim: Sim,
    pub sim_addr: std::net::SocketAddr,
    pub scenario: Scenario,
    pub port: u16,
    pub server: Bound,
}

impl Bench {
    /// waldur-sim seeded with `team` and a backend server hosting `backend`
    /// as instance `hpc`.
    pub async fn start(backend: Arc<dyn Backend>, team: &[(&str, &str, Option<&str>)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = pki::create_ca("bench ca", Validity::days(1)).unwrap();
        pki::write(d, "ca", &ca).unwrap();
        let server = pki::issue(&ca, Usage::Server, "localhost", &[], Validity::days(1)).unwrap();
        pki::write(d, "server", &server).unwrap();
        let client = pki::issue(
            &ca,
            Usage::Client,
            "coordinator.bench",
            &[],
            Validity::days(1),
        );
        pki::write(d, "client", &client.unwrap()).unwrap();

        let sim = Sim::with_recording("bench-token", false);
        let sim_addr = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let scenario = sim.seed_basic(None, team);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server_config = format!(
            "version: 1\nlisten: 127.0.0.1:{port}\ntls:\n  ca: {0}/ca.pem\n  cert: {0}/server.pem\n  key: {0}/server.key\n  allowed_clients: [coordinator.bench]\ninstances:\n  - name: hpc\n    type: example\n",
            d.display()
        );
        let server_config =
            waldur_backend_sdk::config::ServerConfig::parse(&server_config, Path::new("b"))
                .unwrap();
        let server =
            waldur_backend_sdk::spawn(&server_config, Registry::single("hpc", backend).unwrap())
                .await
                .unwrap();
        Self {
            dir,
            sim,
            sim_addr,
            scenario,
            port,
            server,
        }
    }

    /// Seeds `resources` OK resources in waldur-sim (`seed_bulk`: each in its
    /// own project with `users` members) and the same allocations, with
    /// the same members, on `backend`.
    pub async fn seed_allocations(&self, backend: &dyn Backend, resources: usize, users: usize) {
        let uuids = self
            .sim
            .seed_bulk(&self.scenario.offering_uuid, resources, users);
        for (i, uuid) in uuids.iter().enumerate() {
            backend
                .create_resource(CreateResource {
                    backend_id: format!("bulk_{i}"),
                    resource: ResourceContext {
                        resource_uuid: uuid.clone(),
                        name: format!("bulk-{i}"),
                        ..Default::default()
                    },
                    users: (0..users)
                        .map(|j| User {
                            role: "PROJECT.MEMBER".into(),
                            ..User::named(format!("u{i}x{j}"))
                        })
                        .collect(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }

    /// The coordinator config head (one backend `hpc`), then `offering`
    /// lines for the seeded offering.
    pub fn config(&self, offering: &str) -> String {
        format!(
            "version: 1\nbackends:\n  hpc:\n    endpoint: https://127.0.0.1:{port}\n    server_name: localhost\n    instance: hpc\n    tls: {{ca: {d}/ca.pem, cert: {d}/client.pem, key: {d}/client.key}}\nofferings:\n  - name: bench\n    offering_uuid: {uuid}\n    waldur: {{api_url: \"http://{addr}/api/\", token_env: T}}\n{offering}\n",
            port = self.port,
            d = self.dir.path().display(),
            uuid = self.scenario.offering_uuid,
            addr = self.sim_addr,
        )
    }
}

/// A process's peak resident memory (`VmHWM`) in KiB, while it runs.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
