//! The built-in backends, by the `type:` an instance names in the config.

use std::sync::Arc;

use waldur_backend_sdk::{Backend, SettingError};

/// Types this binary knows.
pub const KNOWN: &[&str] = &[
    waldur_backend_example::TYPE_NAME,
    waldur_backend_slurm::TYPE_NAME,
    waldur_backend_moab::TYPE_NAME,
    waldur_backend_mup::TYPE_NAME,
];

/// Builds one backend from its type and settings.
pub fn build(kind: &str, settings: serde_json::Value) -> Result<Arc<dyn Backend>, SettingError> {
    match kind {
        waldur_backend_example::TYPE_NAME => Ok(Arc::new(
            waldur_backend_example::ExampleBackend::from_settings(settings)?,
        )),
        waldur_backend_slurm::TYPE_NAME => Ok(Arc::new(
            waldur_backend_slurm::SlurmBackend::from_settings(settings)?,
        )),
        waldur_backend_moab::TYPE_NAME => Ok(Arc::new(
            waldur_backend_moab::MoabBackend::from_settings(settings)?,
        )),
        waldur_backend_mup::TYPE_NAME => Ok(Arc::new(
            waldur_backend_mup::MupBackend::from_settings(settings)?,
        )),
        other => Err(SettingError::new(
            "type",
            format!(
                "unknown type {other:?}; this server knows {}",
                KNOWN.join(", ")
            ),
        )),
    }
}

/// Why an instance of this config cannot serve a real site, if it cannot:
/// the in-memory example backend completes every order and keeps nothing
/// anywhere, so a production config naming it by mistake looks healthy while
/// no account is ever made. A config marked `demo: true` is meant so.
pub fn not_for_production(kind: &str, settings: &serde_json::Value) -> Option<String> {
    let demo = settings.get("demo").and_then(serde_json::Value::as_bool) == Some(true);
    (kind == waldur_backend_example::TYPE_NAME && !demo).then(|| {
        "type example is the in-memory reference backend: orders complete but no cluster account is ever made (set settings.demo: true for a demo)".to_owned()
    })
}
