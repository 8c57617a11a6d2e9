//! The MOAB backend against `mam-sim`, in process: the simulator's commands
//! run as library calls on a state directory of the test's own.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use waldur_backend_moab::{MoabBackend, MoabSettings};
use waldur_backend_sdk::command::{Output, Runner};

/// Fixed clock of the usage records.
pub const NOW: &str = "2026-12-07 10:00:00";

/// Runs `mam-*` through `mam_sim::run` on `dir`.
pub struct SimRunner {
    pub dir: PathBuf,
}

#[async_trait::async_trait]
impl Runner for SimRunner {
    async fn run(&self, program: &str, args: &[String]) -> std::io::Result<Output> {
        let name = Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (dir, args) = (self.dir.clone(), args.to_vec());
        let out = tokio::task::spawn_blocking(move || mam_sim::run(&name, &args, &dir, NOW))
            .await
            .map_err(std::io::Error::other)?;
        Ok(Output {
            code: Some(i32::from(out.code)),
            stdout: out.stdout,
            stderr: String::new(),
        })
    }
}

/// Settings of a test instance.
pub fn settings(extra: serde_json::Value) -> MoabSettings {
    let mut v = serde_json::json!({
        "project_prefix": "p_",
        "allocation_prefix": "a_",
        "components": {"deposit": {"label": "Deposit", "measured_unit": "EUR", "accounting_type": "limit"}},
    });
    if let (Some(base), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in more {
            base.insert(k.clone(), x.clone());
        }
    }
    MoabSettings::parse(v).unwrap()
}

/// A backend on a fresh simulator with users `alice` and `bob`.
pub fn backend(extra: serde_json::Value) -> (MoabBackend, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for u in ["alice", "bob"] {
        mam(dir.path(), &format!("mam-create-user -u {u}"));
    }
    let b = MoabBackend::new(
        settings(extra),
        Arc::new(SimRunner {
            dir: dir.path().to_owned(),
        }),
    );
    (b, dir)
}

/// Runs one simulator command line (words split on spaces).
pub fn mam(dir: &Path, line: &str) -> mam_sim::Outcome {
    let mut words = line.split(' ');
    let command = words.next().unwrap_or_default().to_owned();
    let rest: Vec<String> = words.map(str::to_owned).collect();
    mam_sim::run(&command, &rest, dir, NOW)
}

/// The simulator's state.
pub fn state(dir: &Path) -> mam_sim::state::State {
    mam_sim::state::read(dir).unwrap()
}
