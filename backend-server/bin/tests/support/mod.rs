//! Shared test support: a throw-away site PKI and a server config.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use waldur_runtime::pki::{self, Issued, Usage, Validity};

/// A site PKI in a temporary directory, created at run time.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: Issued,
}

impl TestPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = pki::create_ca("test site ca", Validity::days(1)).expect("ca");
        pki::write(dir.path(), "ca", &ca).expect("write ca");
        let server = pki::issue(
            &ca,
            Usage::Server,
            "localhost",
            &["127.0.0.1".into()],
            Validity::days(1),
        )
        .expect("server cert");
        pki::write(dir.path(), "server", &server).expect("write server");
        let client = pki::issue(
            &ca,
            Usage::Client,
            "coordinator.test",
            &[],
            Validity::days(1),
        )
        .expect("client cert");
        pki::write(dir.path(), "client", &client).expect("write client");
        Self { dir, ca }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues another client certificate from this CA.
    pub fn client(&self, stem: &str, identity: &str, validity: Validity) -> (PathBuf, PathBuf) {
        let issued = pki::issue(&self.ca, Usage::Client, identity, &[], validity).expect("client");
        pki::write(self.dir.path(), stem, &issued).expect("write");
        (
            self.path(&format!("{stem}.pem")),
            self.path(&format!("{stem}.key")),
        )
    }

    /// A server config on 127.0.0.1:port hosting the example backend.
    pub fn server_config(&self, port: u16, settings: &str) -> String {
        format!(
            "version: 1\nlisten: 127.0.0.1:{port}\ntls:\n  ca: {ca}\n  cert: {cert}\n  key: {key}\n  allowed_clients: [coordinator.test]\nhealth:\n  probe_interval_seconds: 1\ninstances:\n  - name: hpc\n    type: example\n    settings: {settings}\n",
            ca = self.path("ca.pem").display(),
            cert = self.path("server.pem").display(),
            key = self.path("server.key").display(),
        )
    }

    pub fn write_config(&self, port: u16, settings: &str) -> PathBuf {
        let path = self.path("server.yaml");
        std::fs::write(&path, self.server_config(port, settings)).expect("write config");
        path
    }
}

/// TLS files of the default allowed client.
pub fn client_files(pki: &TestPki) -> waldur_runtime::TlsFiles {
    waldur_runtime::TlsFiles {
        ca: pki.path("ca.pem"),
        cert: pki.path("client.pem"),
        key: pki.path("client.key"),
    }
}

pub fn exists(p: &Path) -> bool {
    p.try_exists().unwrap_or(false)
}

/// A free local TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process, killed when dropped.
pub struct Server(pub std::process::Child);

impl Server {
    /// SIGKILL, then reap; again is harmless.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A mutual-TLS channel to the server on 127.0.0.1:port, retried until it
/// is up (30 s at most).
pub async fn connect(pki: &TestPki, port: u16) -> tonic::transport::Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(client_files(pki).client_config("localhost").unwrap())
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "server never came up: {e:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
