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
use waldur_runtime::pki::{self, Usage, Validity};

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
    Endpoint::from_shared(format!(
        "https://127.0.0.1:{}",
        server.local_addr.unwrap().port()
    ))
    .unwrap()
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
    let files = waldur_runtime::TlsFiles {
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
    let plain = Endpoint::from_shared(format!(
        "http://127.0.0.1:{}",
        server.local_addr.unwrap().port()
    ))
    .unwrap();
    assert!(call(plain).await.is_err());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let pki = TestPki::new();
    let server = start(&pki).await;
    let (cert, key) = pki.client("expired", "coordinator.test", Validity::expired());
    let files = waldur_runtime::TlsFiles {
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

/// The refused-handshake counter of one reason, from the metrics text.
fn refused(reason: &str) -> u64 {
    let text = waldur_backend_sdk::metrics::encode();
    let needle = format!("waldur_backend_tls_handshakes_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn refused_handshakes_are_counted_by_reason() {
    let pki = TestPki::new();
    let server = start(&pki).await;
    let before = (
        refused("no_certificate"),
        refused("unknown_ca"),
        refused("protocol"),
    );
    // No certificate.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(pki.path("ca.pem")).unwrap(),
        ))
        .domain_name("localhost");
    assert!(call(https(&server).tls_config(tls).unwrap()).await.is_err());
    // A certificate of another CA.
    let other_ca = pki::create_ca("rogue ca", Validity::days(1)).unwrap();
    let rogue = pki::issue(&other_ca, Usage::Client, "x.test", &[], Validity::days(1)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(pki.path("ca.pem")).unwrap(),
        ))
        .identity(Identity::from_pem(&rogue.cert_pem, &rogue.key_pem))
        .domain_name("localhost");
    assert!(call(https(&server).tls_config(tls).unwrap()).await.is_err());
    // Plain HTTP on the TLS port.
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr.unwrap())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(refused("no_certificate") > before.0
        && refused("unknown_ca") > before.1
        && refused("protocol") > before.2)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "refusals not counted"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(refused("no_certificate") > before.0);
    assert!(refused("unknown_ca") > before.1);
    assert!(refused("protocol") > before.2);
    // The server still serves good clients.
    let tls = client_files(&pki).client_config("localhost").unwrap();
    assert_eq!(
        call(https(&server).tls_config(tls).unwrap()).await.unwrap(),
        "example"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn handshakes_left_hanging_are_bounded_per_peer_and_the_rest_closed_at_once() {
    let pki = TestPki::new();
    let server = start(&pki).await;
    let before = refused("busy");
    // Connections that never start a handshake fill this address's slots.
    let mut idle = Vec::new();
    for _ in 0..waldur_backend_sdk::MAX_HANDSHAKES_PER_PEER {
        idle.push(
            tokio::net::TcpStream::connect(server.local_addr.unwrap())
                .await
                .unwrap(),
        );
    }
    // One more from the same address is closed without a handshake.
    let mut extra = tokio::net::TcpStream::connect(server.local_addr.unwrap())
        .await
        .unwrap();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut extra, &mut sink),
    )
    .await;
    assert!(matches!(read, Ok(Ok(0))), "closed at once: {read:?}");
    assert!(refused("busy") > before);
    // Once they go, a good client is served again.
    drop(idle);
    let tls = client_files(&pki).client_config("localhost").unwrap();
    let endpoint = https(&server).tls_config(tls).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match call(endpoint.clone()).await {
            Ok(name) => {
                assert_eq!(name, "example");
                break;
            }
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_request_that_is_not_protobuf_is_invalid_argument_not_internal() {
    let pki = TestPki::new();
    let server = start(&pki).await;
    let tls = client_files(&pki).client_config("localhost").unwrap();
    let channel = https(&server)
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Bytes that are no GetBackendInfoRequest: a field of wire type 7.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path =
        http::uri::PathAndQuery::from_static("/waldur.backend.v1.BackendService/GetBackendInfo");
    let status = grpc
        .unary::<_, waldur_backend_proto::v1::GetBackendInfoResponse, _>(
            tonic::Request::new(vec![0x0f_u8, 0xff, 0xff]),
            path,
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let e = waldur_backend_sdk::BackendError::from_status(&status);
    assert_eq!(e.reason, "INVALID_FIELD");
    assert_eq!(e.metadata["field"], "request");
    server.shutdown().await.unwrap();
}

/// Sends raw bytes, decodes the answer as `M`.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = waldur_backend_proto::v1::GetBackendInfoResponse;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<waldur_backend_proto::v1::GetBackendInfoResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<(), waldur_backend_proto::v1::GetBackendInfoResponse>::raw_decoder(
            tonic::codec::BufferSettings::default(),
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}
