//! The conformance suite, in process, against the MUP backend on
//! `mup-sim`: the fixtures' project exists in the portal (so no principal
//! investigator is needed), users alice and bob are known to it, and an
//! allocation made by hand sits in the project.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use mup_sim::MupSim;
use waldur_backend_conformance::{Fixtures, conformance_suite};
use waldur_backend_sdk::Registry;

async fn registry() -> Registry {
    let sim = MupSim::new(support::USER, support::PASSWORD);
    let addr = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let pid = sim.add_project(support::GRANT, "conformance", "pi@uni.example", true);
    for u in ["alice", "bob"] {
        sim.add_user(u, &format!("{u}@uni.example"));
    }
    sim.add_allocation(pid, "x", "conf-by-hand", 10).unwrap();
    // The server keeps its own handle on the simulator.
    let backend = support::backend(
        &format!("http://{addr}"),
        support::PASSWORD,
        serde_json::json!({}),
    );
    Registry::single("hpc", Arc::new(backend)).unwrap()
}

conformance_suite!(
    mup_backend_passes_the_conformance_suite,
    "hpc",
    registry().await,
    Fixtures {
        users: vec!["alice".into(), "bob".into()],
        unmanaged_backend_id: "conf-by-hand".into(),
        project_name: format!("CONF / {} / conformance", support::GRANT),
        usage_total_may_exceed_users: true,
        ..Fixtures::default()
    }
);
