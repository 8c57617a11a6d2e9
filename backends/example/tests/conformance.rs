//! The conformance suite, in-process, through the real gRPC adapter over an
//! in-memory duplex transport: once with immediate provisioning and once
//! with slow provisioning (CSI-style `ready=false` and Watch events).

#![allow(clippy::unwrap_used)] // a test's input is its own

use std::sync::Arc;

use waldur_backend_conformance::{Fixtures, conformance_suite};
use waldur_backend_example::{ExampleBackend, ExampleSettings};
use waldur_backend_sdk::Registry;

fn fixtures() -> Fixtures {
    Fixtures {
        users: vec!["alice".into(), "bob".into()],
        link_required_email: "carol@link.required".into(),
        validation_required_email: "dave@validation.required".into(),
        slow_timeout_seconds: 10,
        unmanaged_backend_id: "conf-by-hand".into(),
        ..Fixtures::default()
    }
}

fn registry(settings: ExampleSettings) -> Registry {
    Registry::single("hpc", Arc::new(ExampleBackend::new(settings))).expect("one instance")
}

conformance_suite!(
    example_backend_passes_the_conformance_suite,
    "hpc",
    registry(ExampleSettings {
        unmanaged: vec!["conf-by-hand".into()],
        ..ExampleSettings::default()
    }),
    fixtures()
);

conformance_suite!(
    example_backend_with_slow_provisioning_passes_the_conformance_suite,
    "hpc",
    registry(ExampleSettings {
        provisioning_delay_ms: 150,
        unmanaged: vec!["conf-by-hand".into()],
        ..ExampleSettings::default()
    }),
    fixtures()
);
