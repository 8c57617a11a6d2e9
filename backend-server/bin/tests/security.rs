//! Mutual TLS and the client allowlist, against a real server on loopback.

#![allow(clippy::unwrap_used)] // a test's input is its own

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{TestPki, client_files};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use waldur_backend_proto::v1::GetBackendInfoRequest;
use waldur_backend_proto::v1::backend_service_client::BackendServiceClient;
use waldur_backend_sdk::config::ServerConfig;
use waldur_backend_sdk::{Bound, Registry};
use waldur_tls::pki::{self, Usage, Validity};

async fn start(pki: &TestPki) -> Bound {
    let text = pki.server_config(0, "{}");
    let config = ServerConfig::parse(&text, std::path::Path::new("test")).unwrap();
    let backend = Arc::new(waldur_backend_example::ExampleBackend::default());
    waldur_backend_sdk::spawn(&config, Registry::single("hpc", backend).unwrap())
        .await
        .unwrap()
}

async fn call(endpoint: Endpoint) -> Result<String, String> {
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = BackendServiceClient::new(channel);
    client
        .get_backend_info(GetBackendInfoRequest {
            instance: "hpc".into(),
        })
        .await
        .map(|r| r.into_inner().name)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

fn https(server: &Bound) -> Endpoint {
    Endpoint::from_shared(format!("https://127.0.0.1:{}", server.local_addr.port())).unwrap()
}

#[tokio::test]
async fn an_allowed_client_with_a_valid_certificate_is_served() {
    let pki = TestPki::new();
    let server = start(&pki).await;
    let tls = client_files(&pki).client_config("localhost").unwrap();
    assert_eq!(
        call(https(&server).tls_config(tls).unwrap()).await.unwrap(),
        "example"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let pki = TestPki::new();
    let server = start(&pki).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(pki.path("ca.pem")).unwrap(),
        ))
        .domain_name("localhost");
    let err = call(https(&server).tls_config(tls).unwrap())
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let pki = TestPki::new();
    let server = start(&pki).await;
    let other_ca = pki::create_ca("rogue ca", Validity::days(1)).unwrap();
    let rogue = pki::issue(
        &other_ca,
        Usage::Client,
        "coordinator.test",
        &[],
        Validity::days(1),
    )
    .unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(pki.path("ca.pem")).unwrap(),
        ))
        .identity(Identity::from_pem(&rogue.cert_pem, &rogue.key_pem))
        .domain_name("localhost");
    assert!(call(https(&server).tls_config(tls).unwrap()).await.is_err());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_valid_certificate_with_an_identity_not_allowed_gets_permission_denied() {
    let pki = TestPki::new();
    let server = start(&pki).await;
    let (cert, key) = pki.client("intruder", "intruder.test", Validity::days(1));
    let files = waldur_tls::TlsFiles {
        ca: pki.path("ca.pem"),
        cert,
        key,
    };
    let err = call(
        https(&server)
            .tls_config(files.client_config("localhost").unwrap())
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(err.starts_with("PermissionDenied"), "{err}");
    assert!(err.contains("intruder.test"), "{err}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_plaintext_client_is_refused() {
    let pki = TestPki::new();
    let server = start(&pki).await;
    let plain =
        Endpoint::from_shared(format!("http://127.0.0.1:{}", server.local_addr.port())).unwrap();
    assert!(call(plain).await.is_err());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let pki = TestPki::new();
    let server = start(&pki).await;
    let (cert, key) = pki.client("expired", "coordinator.test", Validity::expired());
    let files = waldur_tls::TlsFiles {
        ca: pki.path("ca.pem"),
        cert,
        key,
    };
    assert!(
        call(
            https(&server)
                .tls_config(files.client_config("localhost").unwrap())
                .unwrap()
        )
        .await
        .is_err()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_server_certificate_for_another_name_is_refused_by_the_client() {
    let pki = TestPki::new();
    let server = start(&pki).await;
    let tls = client_files(&pki)
        .client_config("not-the-backend.test")
        .unwrap();
    assert!(call(https(&server).tls_config(tls).unwrap()).await.is_err());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_service_reports_serving_once_instances_are_ready() {
    let pki = TestPki::new();
    let server = start(&pki).await;
    let tls = client_files(&pki).client_config("localhost").unwrap();
    let channel = https(&server)
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "hpc".into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .ok();
        if status == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never became SERVING: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await.unwrap();
}
