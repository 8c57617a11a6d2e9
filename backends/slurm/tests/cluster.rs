//! The SLURM backend against the real single-node cluster that
//! `deploy/services.sh` brings up (deploy/test.sh sets
//! WALDUR_SLURM_CLUSTER=1 after bringing it up).

#![allow(clippy::unwrap_used)] // a test's input is its own

use std::sync::Arc;

use waldur_backend_conformance::Fixtures;
use waldur_backend_sdk::Registry;
use waldur_backend_slurm::SlurmBackend;

fn cluster_available() -> bool {
    if std::env::var_os("WALDUR_SLURM_CLUSTER").is_some() {
        return true;
    }
    eprintln!("WALDUR_SLURM_CLUSTER is not set: run deploy/test.sh, which brings the cluster up");
    false
}

pub fn settings() -> serde_json::Value {
    serde_json::json!({
        "default_account": "root",
        "customer_prefix": "c_",
        "project_prefix": "p_",
        "allocation_prefix": "a_",
        "qos_paused": "waldur_paused",
        "qos_downscaled": "waldur_downscaled",
        "periodic_limits": {"enabled": true},
        "components": {
            "cpu": {"label": "CPU", "measured_unit": "k-Hours", "unit_factor": 60000, "accounting_type": "limit"},
            "mem": {"label": "Memory", "measured_unit": "gb-Hours", "unit_factor": 61440, "accounting_type": "limit"}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slurm_backend_passes_the_conformance_suite_on_the_real_cluster() {
    if !cluster_available() {
        return;
    }
    let backend = SlurmBackend::from_settings(settings()).unwrap();
    let channel =
        waldur_backend_sdk::serve_duplex(Registry::single("hpc", Arc::new(backend)).unwrap())
            .await
            .unwrap();
    let fixtures = Fixtures {
        instance: "hpc".into(),
        users: vec!["alice".into(), "bob".into()],
        resource_prefix: "cf".into(),
        customer_slug: "cfcust".into(),
        project_slug: "cfproj".into(),
        alt_project_slug: "cfproj2".into(),
        // The project account the suite's creates make.
        unmanaged_backend_id: "p_cfproj".into(),
        ..Fixtures::default()
    };
    let report = waldur_backend_conformance::run(channel, fixtures, None).await;
    let text = report.render();
    println!("{text}");
    assert_eq!(report.failed(), 0, "{text}");
}
