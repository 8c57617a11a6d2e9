//! One server process hosts several named instances with separate state.

#![allow(clippy::unwrap_used)] // a test's input is its own

use std::sync::Arc;

use waldur_backend_example::{ExampleBackend, ExampleSettings};
use waldur_backend_proto::v1::{self as wire, backend_service_client::BackendServiceClient};
use waldur_backend_sdk::Registry;

#[tokio::test]
async fn two_instances_in_one_server_keep_their_resources_apart() {
    let registry = Registry::builder()
        .add("alpha", Arc::new(ExampleBackend::default()))
        .unwrap()
        .add(
            "beta",
            Arc::new(ExampleBackend::new(ExampleSettings {
                allocation_prefix: "b_".into(),
                ..ExampleSettings::default()
            })),
        )
        .unwrap()
        .build();
    let mut client =
        BackendServiceClient::new(waldur_backend_sdk::serve_duplex(registry).await.unwrap());
    let id = |instance: &str| wire::GenerateBackendIdRequest {
        instance: instance.into(),
        base_name: "Proj1".into(),
        resource: None,
    };
    let alpha_id = client
        .generate_backend_id(id("alpha"))
        .await
        .unwrap()
        .into_inner()
        .backend_id;
    let beta_id = client
        .generate_backend_id(id("beta"))
        .await
        .unwrap()
        .into_inner()
        .backend_id;
    assert_eq!((alpha_id.as_str(), beta_id.as_str()), ("proj1", "b_proj1"));

    client
        .create_resource(wire::CreateResourceRequest {
            instance: "alpha".into(),
            backend_id: alpha_id.clone(),
            resource: Some(wire::ResourceContext {
                resource_uuid: "a".repeat(32),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let in_alpha = client
        .get_resource(wire::GetResourceRequest {
            instance: "alpha".into(),
            backend_id: alpha_id.clone(),
        })
        .await;
    let in_beta = client
        .get_resource(wire::GetResourceRequest {
            instance: "beta".into(),
            backend_id: alpha_id,
        })
        .await;
    assert!(in_alpha.is_ok());
    assert_eq!(in_beta.unwrap_err().code(), tonic::Code::NotFound);
}

#[test]
fn an_instance_name_used_twice_is_refused() {
    let err = Registry::builder()
        .add("x", Arc::new(ExampleBackend::default()))
        .unwrap()
        .add("x", Arc::new(ExampleBackend::default()))
        .unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
}
