//! What the suite needs to know about the backend under test.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Fixtures: read from the `--fixtures` YAML file; every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fixtures {
    /// The instance under test (the CLI's `--instance` overrides it).
    pub instance: String,
    /// Component keys to put limits on; empty means every listed component.
    pub components: Vec<String>,
    /// Usernames that exist on the backend (at least two).
    pub users: Vec<String>,
    /// Customer slug of test resources.
    pub customer_slug: String,
    /// Project slug of test resources.
    pub project_slug: String,
    /// Project name of test resources (a MUP backend reads the project's
    /// grant number from it).
    pub project_name: String,
    /// A second project slug, for the project move case.
    pub alt_project_slug: String,
    /// Prefix of test resource slugs (keep it short: SLURM names are short).
    pub resource_prefix: String,
    /// Settings for ApplyPeriodicSettings.
    pub periodic_settings: BTreeMap<String, serde_json::Value>,
    /// The backend documents that its usage totals may exceed the users'
    /// sum (SPEC 5.14.2: usage billed to no user); otherwise they must
    /// equal it.
    pub usage_total_may_exceed_users: bool,
    /// An e-mail whose offering user needs account linking (skip if empty).
    pub link_required_email: String,
    /// An e-mail whose offering user needs validation (skip if empty).
    pub validation_required_email: String,
    /// The id of something the backend has but does not manage (for SLURM,
    /// a project account the suite's creates make); skip if empty.
    pub unmanaged_backend_id: String,
    /// How often idempotent calls are repeated (at least 2).
    pub repeat: usize,
    /// Seconds to wait for slow provisioning.
    pub slow_timeout_seconds: u64,
    /// Fixed run id (tests); a fresh one otherwise.
    pub run_id: Option<String>,
}

impl Default for Fixtures {
    fn default() -> Self {
        Self {
            instance: String::new(),
            components: Vec::new(),
            users: vec!["conf_user1".into(), "conf_user2".into()],
            customer_slug: "conf-cust".into(),
            project_slug: "conf-proj".into(),
            project_name: "conformance project".into(),
            alt_project_slug: "conf-proj2".into(),
            resource_prefix: "conf".into(),
            periodic_settings: BTreeMap::from([("fairshare".into(), serde_json::json!(10))]),
            usage_total_may_exceed_users: false,
            link_required_email: String::new(),
            validation_required_email: String::new(),
            unmanaged_backend_id: String::new(),
            repeat: 2,
            slow_timeout_seconds: 60,
            run_id: None,
        }
    }
}

impl Fixtures {
    /// Reads a fixtures file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read fixtures {}: {e}", path.display()))?;
        let fx: Self = serde_norway::from_str(&text)
            .map_err(|e| format!("invalid fixtures {}: {e}", path.display()))?;
        if fx.users.len() < 2 {
            return Err(format!(
                "fixtures {}: users needs at least two names",
                path.display()
            ));
        }
        Ok(fx)
    }

    /// The slow-provisioning timeout.
    pub fn slow_timeout(&self) -> Duration {
        Duration::from_secs(self.slow_timeout_seconds.max(1))
    }

    /// How often to repeat idempotent calls.
    pub fn repeat(&self) -> usize {
        self.repeat.max(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_fixtures_file_parses_and_shows_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures.example.yaml");
        let fx = Fixtures::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let d = Fixtures::default();
        assert_eq!(fx.users, d.users);
        assert_eq!(fx.project_name, d.project_name);
        assert_eq!(fx.slow_timeout_seconds, d.slow_timeout_seconds);
        assert_eq!(fx.repeat, d.repeat);
    }
}
