//! A MUP backend on a fresh `mup-sim`, and the resources and users the
//! tests use.

#![allow(dead_code)]

use mup_sim::MupSim;
use serde_json::{Value, json};
use waldur_backend_mup::{MupBackend, MupSettings};
use waldur_backend_sdk::secret::Secret;
use waldur_backend_sdk::types::{ResourceContext, User};

pub const USER: &str = "waldur-agent";
pub const PASSWORD: &str = "mup-s3cret";
pub const GRANT: &str = "EHPC-2026-042";

/// A simulator and a backend on it.
pub struct Portal {
    pub sim: MupSim,
    pub url: String,
    pub backend: MupBackend,
}

/// Settings with components cpu (×1000) and gpu, `extra` merged in (its
/// `components` are added to those).
pub fn settings(url: &str, extra: Value) -> Value {
    let mut s = json!({
        "api_url": url,
        "username": USER,
        "password_env": "MUP_PASSWORD",
        "timeout_seconds": 5,
        "retries": 1,
        "components": {
            "cpu": {"label": "CPU", "measured_unit": "k-core-hours", "accounting_type": "limit", "unit_factor": 1000},
            "gpu": {"label": "GPU", "measured_unit": "GPU-hours", "accounting_type": "limit", "mup_allocation_type": "Deucalion GPU"}
        }
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            match (k.as_str(), v) {
                ("components", Value::Object(more)) => {
                    for (ck, cv) in more {
                        s["components"][ck] = cv;
                    }
                }
                (_, v) => s[k] = v,
            }
        }
    }
    s
}

/// A backend for the portal at `url` with this password.
pub fn backend(url: &str, password: &str, extra: Value) -> MupBackend {
    MupBackend::new(
        MupSettings::parse(settings(url, extra)).unwrap(),
        Secret::new(password),
    )
    .unwrap()
}

/// A fresh simulator and a backend on it.
pub async fn portal(extra: Value) -> Portal {
    let sim = MupSim::new(USER, PASSWORD);
    let addr = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{addr}");
    let backend = backend(&url, PASSWORD, extra);
    Portal { sim, url, backend }
}

/// Resource `n` of the project whose name carries [`GRANT`].
pub fn resource(n: u32) -> ResourceContext {
    ResourceContext {
        resource_uuid: format!("{n:0>32x}"),
        name: format!("run {n}"),
        slug: format!("run-{n}"),
        project_uuid: "0000000000000000000000000000aaaa".into(),
        project_slug: "climate".into(),
        project_name: format!("EuroHPC AI Factory / {GRANT} / Climate Modelling"),
        customer_uuid: "0000000000000000000000000000bbbb".into(),
        customer_slug: "uni".into(),
        customer_name: "University of Examples".into(),
        ..ResourceContext::default()
    }
}

/// The project manager.
pub fn alice() -> User {
    User {
        username: "alice".into(),
        waldur_username: "alice@myaccessid.example".into(),
        email: "alice@uni.example".into(),
        full_name: "Alice Liddell".into(),
        role: "PROJECT.MANAGER".into(),
        ..User::default()
    }
}

/// A member.
pub fn bob() -> User {
    User {
        username: "bob".into(),
        email: "bob@uni.example".into(),
        full_name: "Bob Builder".into(),
        role: "PROJECT.MEMBER".into(),
        ..User::default()
    }
}
