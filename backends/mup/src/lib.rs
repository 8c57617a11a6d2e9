//! The MUP backend: a Waldur resource is a set of allocations in a MUP
//! project-allocation portal, reached over its REST API.
//!
//! Model (the original agent's, with its known defects fixed; see the
//! README):
//! * the Waldur project is a MUP project, found by grant number (the second
//!   `/`-separated part of the Waldur project name) or created with the
//!   team's project manager as principal investigator;
//! * the resource is one allocation per configured component, identified
//!   `<allocation_prefix><resource UUID as 32 hex digits>_<component>`, of
//!   size `limit × unit_factor`; the primary component's identifier is the
//!   backend id, and any of the resource's identifiers names it;
//! * members are the MUP project's active members; a removed member is
//!   deactivated, never deleted, and re-added by activating it again;
//! * usage is what the portal reports per allocation and user;
//! * deletion deactivates the allocations, then the project, if this
//!   backend made it, once none of its allocations is active (soft deletion
//!   sets their sizes to 0).
//!
//! Ownership (SPEC §5.3a): an allocation is this backend's when its
//! identifier has the shape above with a configured component; anything
//! else in the portal is refused as not managed. The original agent made
//! identifiers of the same shape, so its allocations are taken over as they
//! are. A project this backend creates carries the ownership marker at the
//! end of its description; only such a project is ever deactivated.
//!
//! Layout: `client` (HTTP), `endpoints` (every portal call, typed),
//! `records` (what the portal answers), `resources` (finding, creating,
//! sizing and deleting a resource), `members` (people), `usage`, `people`
//! (registration data), `cache`, `settings`.

mod cache;
pub mod client;
mod endpoints;
mod members;
pub mod people;
pub mod records;
mod resources;
pub mod settings;
mod usage;

use std::collections::BTreeMap;

use waldur_backend_sdk::ownership::uuid_hex;
use waldur_backend_sdk::secret::{ProcessEnv, Secret};
use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{Backend, BackendError, BackendResult, SettingError};

use cache::Memo;
use client::{Api, ApiOptions};
use records::PortalUser;
pub use settings::MupSettings;

/// The backend type name used in server configs.
pub const TYPE_NAME: &str = "mup";

/// Largest size that survives the trip through a JSON number exactly.
const MAX_SIZE: i64 = 1 << 53;

/// The MUP backend of one portal.
#[derive(Debug)]
pub struct MupBackend {
    settings: MupSettings,
    api: Api,
    /// Allocation identifier → its project's id.
    projects_of: Memo<i64>,
    /// E-mail or username → the portal's user.
    users: Memo<PortalUser>,
    /// Held while a project is found or made, activated or deactivated, so
    /// a create and a delete of two resources of one project never race on
    /// it (the SDK serialises per resource, not per project).
    project_lock: tokio::sync::Mutex<()>,
}

impl MupBackend {
    /// A backend for `settings` with the portal password given.
    pub fn new(settings: MupSettings, password: Secret) -> Result<Self, SettingError> {
        let base =
            url::Url::parse(&settings.api_url).map_err(|e| SettingError::new("api_url", e))?;
        if !matches!(base.path(), "" | "/" | "/api" | "/api/") {
            tracing::warn!(api_url = %settings.api_url, "the path of api_url is not used: every MUP endpoint is an absolute /api/ path");
        }
        let loopback = matches!(base.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if base.scheme() == "http" && !loopback {
            tracing::warn!(api_url = %settings.api_url, "the portal is reached over plain http: its password travels unencrypted");
        }
        let ca_pem =
            match &settings.ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    SettingError::new("ca_file", format!("{}: {e}", path.display()))
                })?),
                None => None,
            };
        let api = Api::new(ApiOptions {
            base,
            username: settings.username.clone(),
            password,
            timeout: settings.timeout(),
            retries: settings.retries,
            ca_pem,
        })
        .map_err(|e| SettingError::new("ca_file", e))?;
        let ttl = std::time::Duration::from_secs(settings.cache_seconds);
        Ok(Self {
            settings,
            api,
            projects_of: Memo::new(ttl),
            users: Memo::new(ttl),
            project_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// A backend from a server config's `settings`; the password comes from
    /// the file or environment variable they name.
    pub fn from_settings(value: serde_json::Value) -> Result<Self, SettingError> {
        let settings = MupSettings::parse(value)?;
        let password = settings.password(&ProcessEnv)?;
        Self::new(settings, password)
    }

    /// HTTP requests sent so far (benchmarks and tests).
    pub fn calls(&self) -> u64 {
        self.api.calls()
    }

    /// The identifier of `component`'s allocation of resource `uuid`.
    fn identifier(&self, uuid: &str, component: &str) -> String {
        format!("{}{uuid}_{component}", self.settings.allocation_prefix)
    }

    /// Resource UUID and component of an identifier of this backend's shape.
    fn parse_identifier(&self, id: &str) -> Option<(String, String)> {
        let rest = id.strip_prefix(&self.settings.allocation_prefix)?;
        let hex = rest.get(..32)?;
        let component = rest.get(32..)?.strip_prefix('_')?;
        let lower_hex = hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        (lower_hex && self.settings.components.contains_key(component))
            .then(|| (hex.to_owned(), component.to_owned()))
    }

    /// The allocation size of `limit` Waldur units of `component`, refused
    /// when it would not read back as the same limit.
    fn size(&self, component: &str, limit: i64) -> BackendResult<f64> {
        if !self.settings.components.contains_key(component) {
            return Err(BackendError::unknown_component(component));
        }
        let factor = self.settings.factor(component);
        let refuse = || {
            BackendError::invalid_field(
                &format!("limits.{component}"),
                format!("{limit} × {factor} is not a whole allocation size MUP can hold"),
            )
        };
        // Checked before any float arithmetic: beyond 2^53 an i64 no longer
        // converts exactly, and a rounded limit would read back different.
        if !(0..=MAX_SIZE).contains(&limit) {
            return Err(refuse());
        }
        let size = (limit as f64 * factor).round();
        // Accepted only if it reads back as the same limit, whatever the
        // factor's scale.
        if size > MAX_SIZE as f64 || self.limit_of(component, size) != limit {
            return Err(refuse());
        }
        Ok(size)
    }

    /// The Waldur limit an allocation of `size` stands for.
    fn limit_of(&self, component: &str, size: f64) -> i64 {
        (size / self.settings.factor(component)).round() as i64
    }
}

/// The grant number in a Waldur project name: its second `/`-separated
/// part, trimmed (`"EHPC-AIF / EHPC-2020FL01-114 / Title"`).
pub fn grant_number(project_name: &str) -> BackendResult<String> {
    project_name
        .split('/')
        .nth(1)
        .map(str::trim)
        // `.` and `..` cannot travel in a URL path: no project could be
        // found by them again.
        .filter(|g| !g.is_empty() && !matches!(*g, "." | ".."))
        .map(str::to_owned)
        .ok_or_else(|| {
            BackendError::invalid_field(
                "resource.project_name",
                format!(
                    "{project_name:?} carries no grant number: MUP projects are matched by the second '/'-separated part of the Waldur project name"
                ),
            )
        })
}

/// "This resource is not there (or not ours)": callers that work through
/// lists leave it out rather than fail.
fn is_absent(e: &BackendError) -> bool {
    e.reason == waldur_backend_sdk::proto::reason::RESOURCE_NOT_FOUND
        || e.reason == waldur_backend_sdk::proto::reason::RESOURCE_NOT_MANAGED
}

#[async_trait::async_trait]
impl Backend for MupBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: TYPE_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor_version: None,
        }
    }

    fn capabilities(&self) -> Vec<Capability> {
        use Capability::*;
        // No pause or downscale (MUP has no such allocation state) and no
        // historical usage (the portal reports an allocation's usage so far,
        // not per month).
        vec![
            Resources,
            ListResources,
            ResourceLimits,
            Metadata,
            Membership,
            UsageReport,
            Diagnostics,
        ]
    }

    async fn probe(&self) -> BackendResult<Probe> {
        Ok(match self.api.research_fields().await {
            Ok(_) => Probe::ready(),
            Err(e) => Probe::not_ready(e.to_string()),
        })
    }

    async fn components(&self) -> BackendResult<Vec<Component>> {
        Ok(self.settings.component_list())
    }

    fn generate_backend_id(
        &self,
        _base_name: &str,
        resource: Option<&ResourceContext>,
    ) -> BackendResult<String> {
        let uuid = resource
            .and_then(|r| uuid_hex(&r.resource_uuid))
            .ok_or_else(|| {
                BackendError::invalid_field(
                    "resource.resource_uuid",
                    "is required: MUP allocation identifiers are made from the resource UUID",
                )
            })?;
        Ok(self.identifier(&uuid, self.settings.primary()))
    }

    async fn diagnostics(&self) -> BackendResult<Diagnostics> {
        let check = |name: &str, r: Result<String, client::ApiError>| DiagnosticCheck {
            name: name.into(),
            status: if r.is_ok() {
                CheckStatus::Ok
            } else {
                CheckStatus::Failed
            },
            message: r.unwrap_or_else(|e| e.to_string()),
        };
        let fields = self.api.research_fields().await;
        let projects = self.api.projects().await;
        let mut info = BTreeMap::from([
            ("api_url".to_owned(), self.settings.api_url.clone()),
            (
                "primary_component".to_owned(),
                self.settings.primary().to_owned(),
            ),
        ]);
        if let Ok(p) = &projects {
            info.insert("projects".into(), p.len().to_string());
        }
        Ok(Diagnostics {
            checks: vec![
                check(
                    "research-fields",
                    fields.map(|f| format!("{} research fields", f.len())),
                ),
                check(
                    "projects",
                    projects.map(|p| {
                        let active = p.iter().filter(|p| p.active).count();
                        format!("{} projects, {active} active", p.len())
                    }),
                ),
            ],
            info,
        })
    }

    async fn create_resource(&self, req: CreateResource) -> BackendResult<Created> {
        self.create(req).await
    }

    async fn get_resource(&self, backend_id: &str) -> BackendResult<ResourceInfo> {
        let l = self.locate(backend_id).await?;
        self.described(backend_id, &l).await
    }

    async fn list_resources(&self, page: PageRequest) -> BackendResult<Page> {
        self.list(page).await
    }

    async fn delete_resource(&self, req: DeleteResource) -> BackendResult<Deleted> {
        self.delete(req).await
    }

    async fn set_resource_limits(
        &self,
        backend_id: &str,
        limits: Limits,
        _resource: Option<ResourceContext>,
    ) -> BackendResult<LimitsApplied> {
        self.set_limits(backend_id, limits).await
    }

    async fn get_resource_limits(&self, backend_id: &str) -> BackendResult<Limits> {
        let l = self.locate(backend_id).await?;
        self.limits_of(&l)
    }

    async fn get_resource_metadata(&self, backend_id: &str) -> BackendResult<JsonObject> {
        let l = self.locate(backend_id).await?;
        let p = self.api.project(l.project).await?;
        Ok(resources::metadata(&l, &p))
    }

    async fn add_users(
        &self,
        backend_id: &str,
        users: Vec<User>,
        _homedir_umask: Option<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let l = self.locate(backend_id).await?;
        Ok(self.add_members(l.project, &users, "").await)
    }

    async fn remove_users(
        &self,
        backend_id: &str,
        usernames: Vec<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let l = self.locate(backend_id).await?;
        self.remove_members(l.project, usernames).await
    }

    async fn list_resource_users(&self, backend_ids: &[String]) -> BackendResult<ResourceUsers> {
        self.list_members(backend_ids).await
    }

    async fn usage_report(&self, query: UsageQuery) -> BackendResult<Vec<ResourceUsage>> {
        self.report(&query.backend_ids).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grant_number_is_the_second_part_of_the_project_name() {
        assert_eq!(
            grant_number("EHPC-AIF-FL / EHPC-ANF-2020FL01-114 / Description").unwrap(),
            "EHPC-ANF-2020FL01-114"
        );
        assert_eq!(grant_number("A/ G-1 ").unwrap(), "G-1");
        for bad in ["", "no slashes", "A /  / C", "A/", "A / .. / B", "A/./B"] {
            let e = grant_number(bad).unwrap_err();
            assert_eq!(
                e.reason,
                waldur_backend_sdk::proto::reason::INVALID_FIELD,
                "{bad}"
            );
        }
    }
}
