//! The conformance suite, in process, against the MOAB backend on
//! `mam-sim` (users alice and bob, and an account made by hand).

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use waldur_backend_conformance::{Fixtures, conformance_suite};
use waldur_backend_moab::MoabBackend;
use waldur_backend_sdk::Registry;

fn registry() -> Registry {
    let dir = tempfile::tempdir().unwrap().keep();
    for u in ["alice", "bob"] {
        support::mam(&dir, &format!("mam-create-user -u {u}"));
    }
    support::mam(
        &dir,
        "mam-create-account -a conf-by-hand -d by-hand -o nobody",
    );
    let backend = MoabBackend::new(
        support::settings(serde_json::json!({})),
        Arc::new(support::SimRunner { dir }),
    );
    Registry::single("hpc", Arc::new(backend)).unwrap()
}

conformance_suite!(
    moab_backend_passes_the_conformance_suite,
    "hpc",
    registry(),
    Fixtures {
        users: vec!["alice".into(), "bob".into()],
        unmanaged_backend_id: "conf-by-hand".into(),
        ..Fixtures::default()
    }
);
