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
//! * deletion deactivates the allocations, then the project once none of
//!   its allocations is active (soft deletion sets their sizes to 0).
//!
//! Ownership (SPEC §5.3a): an allocation is this backend's when its
//! identifier has the shape above with a configured component; anything
//! else in the portal is refused as not managed. The original agent made
//! identifiers of the same shape, so its allocations are taken over as they
//! are.

mod cache;
pub mod client;
pub mod people;
pub mod records;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use waldur_backend_sdk::ownership::uuid_hex;
use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{Backend, BackendError, BackendResult, SettingError};

use cache::Memo;
use client::{Api, ApiError, ApiOptions};
use records::{Allocation, Member, PortalUser, Project, Usage};
pub use settings::MupSettings;

/// The backend type name used in server configs.
pub const TYPE_NAME: &str = "mup";

/// The Waldur role whose holder becomes a new project's principal
/// investigator.
const PI_ROLE: &str = "PROJECT.MANAGER";

/// Largest size that survives the trip through a JSON number exactly.
const MAX_SIZE: f64 = 9_007_199_254_740_992.0;

/// The MUP backend of one portal.
#[derive(Debug)]
pub struct MupBackend {
    settings: MupSettings,
    api: Api,
    /// Allocation identifier → its project's id.
    projects_of: Memo<i64>,
    /// E-mail or username → the portal's user.
    users: Memo<PortalUser>,
    /// Held while a project is looked up and made, so two resources of one
    /// project created at once never make it twice (the SDK serialises per
    /// resource, not per project).
    making_project: tokio::sync::Mutex<()>,
}

/// Each project's allocations, as read during one call.
type Lists = std::collections::HashMap<i64, Vec<Allocation>>;

/// A resource as found in the portal.
#[derive(Debug, Clone)]
struct Located {
    /// The resource UUID (32 hex digits).
    uuid: String,
    /// The component the asked identifier names.
    component: String,
    /// The project's id.
    project: i64,
    /// The resource's allocations, by component.
    allocations: BTreeMap<String, Allocation>,
    /// Some other allocation of the project is active.
    project_used_by_others: bool,
}

impl Located {
    /// The allocation the asked id names is active: the resource exists.
    fn live(&self) -> bool {
        self.allocations
            .get(&self.component)
            .is_some_and(|a| a.active)
    }
}

impl MupBackend {
    /// A backend for `settings` with the portal password given.
    pub fn new(settings: MupSettings, password: String) -> Result<Self, SettingError> {
        let base =
            url::Url::parse(&settings.api_url).map_err(|e| SettingError::new("api_url", e))?;
        if !matches!(base.path(), "" | "/" | "/api" | "/api/") {
            tracing::warn!(api_url = %settings.api_url, "the path of api_url is not used: every MUP endpoint is an absolute /api/ path");
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
            making_project: tokio::sync::Mutex::new(()),
        })
    }

    /// A backend from a server config's `settings`; the password comes from
    /// the file or environment variable they name.
    pub fn from_settings(value: serde_json::Value) -> Result<Self, SettingError> {
        let settings = MupSettings::parse(value)?;
        let password = settings.password(&|k| std::env::var(k).ok())?;
        Self::new(settings, password)
    }

    /// HTTP requests sent so far (benchmarks and tests).
    pub fn calls(&self) -> u64 {
        self.api.calls()
    }

    // ------------------------------------------------------------ naming

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
        let factor = self
            .settings
            .components
            .get(component)
            .map(|c| c.unit_factor)
            .ok_or_else(|| BackendError::unknown_component(component))?;
        let size = limit as f64 * factor;
        if !(0.0..=MAX_SIZE).contains(&size) || (size - size.round()).abs() > 1e-6 {
            return Err(BackendError::invalid_field(
                &format!("limits.{component}"),
                format!("{limit} × {factor} is not a whole allocation size MUP can hold"),
            ));
        }
        Ok(size.round())
    }

    /// The Waldur limit an allocation of `size` stands for.
    fn limit_of(&self, component: &str, size: f64) -> i64 {
        let factor = self
            .settings
            .components
            .get(component)
            .map_or(1.0, |c| c.unit_factor);
        (size / factor).round() as i64
    }

    // ------------------------------------------------------------ lookups

    /// The allocation with `identifier`, if the portal has one.
    async fn lookup(&self, identifier: &str) -> BackendResult<Option<Allocation>> {
        Ok(self
            .api
            .find(&["api", "projects", "allocations", identifier])
            .await?)
    }

    /// Every allocation of a project; `None` when the project is gone.
    async fn project_allocations(&self, project: i64) -> BackendResult<Option<Vec<Allocation>>> {
        let id = project.to_string();
        Ok(self
            .api
            .find(&["api", "projects", &id, "allocations", "list"])
            .await?)
    }

    async fn project(&self, project: i64) -> BackendResult<Project> {
        let id = project.to_string();
        Ok(self.api.get(&["api", "projects", "view", &id]).await?)
    }

    /// The resource `backend_id` names, or `None` when the portal has no
    /// allocation by that identifier. An identifier of another shape that
    /// the portal has is someone else's (RESOURCE_NOT_MANAGED).
    async fn try_locate(&self, backend_id: &str) -> BackendResult<Option<Located>> {
        self.try_locate_with(backend_id, &mut Lists::new()).await
    }

    /// As [`Self::try_locate`], reading each project's allocations at most
    /// once per `lists`: a call over many resources of one project lists
    /// them once.
    async fn try_locate_with(
        &self,
        backend_id: &str,
        lists: &mut Lists,
    ) -> BackendResult<Option<Located>> {
        let Some((uuid, component)) = self.parse_identifier(backend_id) else {
            return match self.lookup(backend_id).await? {
                Some(_) => Err(BackendError::not_managed(
                    backend_id,
                    format!(
                        "its identifier is not {}<resource UUID>_<component> with a configured component",
                        self.settings.allocation_prefix
                    ),
                )),
                None => Ok(None),
            };
        };
        // A remembered project saves the lookup; if the portal contradicts
        // it (the allocation was moved), look again once.
        let mut remembered = self.projects_of.get(backend_id);
        loop {
            let from_memo = remembered.is_some();
            let project = match remembered.take() {
                Some(p) => p,
                None => match self.lookup(backend_id).await? {
                    Some(a) => a.project,
                    None => return Ok(None),
                },
            };
            if !lists.contains_key(&project) {
                let list = self.project_allocations(project).await?.unwrap_or_default();
                lists.insert(project, list);
            }
            let mut allocations = BTreeMap::new();
            let mut project_used_by_others = false;
            for a in lists.get(&project).into_iter().flatten() {
                match self.parse_identifier(&a.identifier) {
                    Some((u, c)) if u == uuid => {
                        allocations.insert(c, a.clone());
                    }
                    _ => project_used_by_others |= a.active,
                }
            }
            if !allocations.contains_key(&component) {
                self.projects_of.forget(backend_id);
                if from_memo {
                    continue;
                }
                // Listed by identifier but not in its own project: the
                // portal is mid-change; try again later.
                return Err(BackendError::not_ready(format!(
                    "mup lists allocation {backend_id} under project {project}, but that project's allocations do not include it"
                )));
            }
            self.projects_of.put(backend_id, project);
            return Ok(Some(Located {
                uuid,
                component,
                project,
                allocations,
                project_used_by_others,
            }));
        }
    }

    /// The live resource `backend_id` names, or RESOURCE_NOT_FOUND.
    async fn locate(&self, backend_id: &str) -> BackendResult<Located> {
        self.locate_with(backend_id, &mut Lists::new()).await
    }

    /// As [`Self::locate`], sharing `lists` with other lookups of one call.
    async fn locate_with(&self, backend_id: &str, lists: &mut Lists) -> BackendResult<Located> {
        match self.try_locate_with(backend_id, lists).await? {
            Some(l) if l.live() => Ok(l),
            _ => Err(BackendError::resource_not_found(backend_id)),
        }
    }

    async fn members(&self, project: i64) -> BackendResult<Vec<Member>> {
        let id = project.to_string();
        let list: Vec<Value> = self
            .api
            .get(&["api", "projects", &id, "members", "list"])
            .await?;
        records::members(list)
            .map_err(|e| BackendError::not_ready(format!("mup members of project {project}: {e}")))
    }

    fn limits_of(&self, l: &Located) -> Limits {
        l.allocations
            .iter()
            .filter(|(_, a)| a.active)
            .map(|(c, a)| (c.clone(), self.limit_of(c, a.size)))
            .collect()
    }

    fn info(&self, backend_id: &str, l: &Located, project: Option<&Project>) -> ResourceInfo {
        ResourceInfo {
            backend_id: backend_id.to_owned(),
            parent_id: project.map(|p| p.grant_number.clone()).unwrap_or_default(),
            description: project.map(|p| p.title.clone()).unwrap_or_default(),
            limits: self.limits_of(l),
            ..ResourceInfo::default()
        }
    }

    // ------------------------------------------------------------ changes

    /// Writes an allocation's size and state, keeping its other fields.
    async fn edit_allocation(
        &self,
        a: &Allocation,
        size: f64,
        active: bool,
    ) -> BackendResult<Allocation> {
        let (pid, aid) = (a.project.to_string(), a.id.to_string());
        let body = json!({
            "type": a.kind,
            "identifier": a.identifier,
            "size": size as i64,
            "used": a.used as i64,
            "active": active,
            "project": a.project,
        });
        Ok(self
            .api
            .put(
                &["api", "projects", &pid, "allocations", "edit", &aid],
                &body,
            )
            .await?)
    }

    /// Brings each component's allocation to its wanted size, active:
    /// creates the missing ones, edits those that differ.
    async fn apply_sizes(
        &self,
        project: i64,
        uuid: &str,
        existing: &BTreeMap<String, Allocation>,
        sizes: &BTreeMap<String, f64>,
    ) -> BackendResult<()> {
        for (component, size) in sizes {
            match existing.get(component) {
                Some(a) if a.active && a.size == *size => {}
                Some(a) => {
                    self.edit_allocation(a, *size, true).await?;
                }
                None => {
                    let identifier = self.identifier(uuid, component);
                    let kind = self
                        .settings
                        .components
                        .get(component)
                        .map(|c| c.mup_allocation_type.clone())
                        .unwrap_or_default();
                    let body = json!({
                        "type": kind,
                        "identifier": identifier,
                        "size": *size as i64,
                        "used": 0,
                        "active": true,
                        "project": project,
                    });
                    let pid = project.to_string();
                    let made: Result<Allocation, ApiError> = self
                        .api
                        .post(&["api", "projects", &pid, "allocations", "add"], &body)
                        .await;
                    match made {
                        Ok(a) => self.projects_of.put(&a.identifier, a.project),
                        // A lost answer to an earlier add: the allocation is
                        // there; the next call finds and sizes it.
                        Err(e) if e.says("already exists") => {
                            return Err(BackendError::not_ready(format!(
                                "allocation {identifier} appeared while being created; retry: {e}"
                            )));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(())
    }

    async fn activate(&self, project: i64) -> BackendResult<()> {
        let p = self.project(project).await?;
        if !p.active {
            let id = project.to_string();
            let _: Value = self
                .api
                .put(&["api", "projects", &id, "activate"], &json!({}))
                .await?;
            tracing::info!(project, grant = %p.grant_number, "activated mup project");
        }
        Ok(())
    }

    /// The portal user of a Waldur user: found by e-mail, then by username,
    /// else registered (a registration request the portal's staff approve).
    /// The MyAccess id (the Waldur username) is added when missing.
    async fn ensure_user(&self, user: &User, institution: &str) -> BackendResult<PortalUser> {
        let email = user.email.trim();
        let key = if email.is_empty() {
            &user.username
        } else {
            email
        };
        if let Some(u) = self.users.get(key) {
            return Ok(u);
        }
        let mut found = None;
        if !email.is_empty() {
            found = self.api.find(&["api", "user", "by-email", email]).await?;
        }
        if found.is_none() && !user.username.is_empty() {
            found = self
                .api
                .find(&["api", "user", "by-username", &user.username])
                .await?;
        }
        let portal_user = match found {
            Some(u) => u,
            None if email.is_empty() => {
                return Err(BackendError::command_refused(format!(
                    "{} has no mup account and no e-mail address to register one with",
                    user.username
                )));
            }
            None => self.register(user, email, institution).await?,
        };
        self.ensure_myaccessid(&portal_user, user.waldur_username.trim())
            .await;
        self.users.put(key, portal_user.clone());
        Ok(portal_user)
    }

    async fn register(
        &self,
        user: &User,
        email: &str,
        institution: &str,
    ) -> BackendResult<PortalUser> {
        let body = people::registration(&self.settings, user, email, institution);
        let answer: Result<Value, ApiError> = self.api.post(&["api", "user", ""], &body).await;
        match answer {
            Ok(v) => {
                if let Ok(u) = serde_json::from_value::<PortalUser>(v) {
                    tracing::info!(user = %user.username, mup_user = u.id, "registered a mup user (awaiting approval)");
                    return Ok(u);
                }
            }
            // Registered by a call whose answer was lost: find it below.
            Err(e) if e.status() == Some(400) && e.says("already exists") => {}
            Err(e) => return Err(e.into()),
        }
        // Some portals answer a registration without the new id: the newest
        // request with this e-mail is it.
        let requests: Vec<Value> = self
            .api
            .get(&["api", "user", "request", "list", ""])
            .await?;
        requests
            .iter()
            .filter_map(|r| serde_json::from_value::<PortalUser>(r.clone()).ok())
            .filter(|r| r.email.eq_ignore_ascii_case(email))
            .max_by_key(|r| r.id)
            .ok_or_else(|| {
                BackendError::not_ready(format!(
                    "mup accepted the registration of {email} but lists no request for it yet"
                ))
            })
    }

    /// Adds the MyAccess id to a user who lacks it. Failures are logged
    /// only: the membership does not depend on it.
    async fn ensure_myaccessid(&self, user: &PortalUser, myaccessid: &str) {
        if myaccessid.is_empty() {
            return;
        }
        let has = match user.has_key(myaccessid) {
            Some(has) => has,
            None => {
                let id = user.id.to_string();
                match self
                    .api
                    .get::<PortalUser>(&["api", "user", "view", &id])
                    .await
                {
                    Ok(full) => full.has_key(myaccessid).unwrap_or(false),
                    Err(e) => {
                        tracing::warn!(mup_user = user.id, error = %e, "cannot read a mup user's myaccessid");
                        return;
                    }
                }
            }
        };
        if !has {
            let id = user.id.to_string();
            let r: Result<Value, ApiError> = self
                .api
                .post(
                    &["api", "user", &id, "myaccessid"],
                    &json!({"myaccessid": myaccessid}),
                )
                .await;
            if let Err(e) = r {
                tracing::warn!(mup_user = user.id, error = %e, "cannot set a mup user's myaccessid");
            }
        }
    }

    async fn toggle(&self, project: i64, member: i64, active: bool) -> BackendResult<()> {
        let (pid, mid) = (project.to_string(), member.to_string());
        let _: Value = self
            .api
            .put(
                &["api", "projects", &pid, "members", &mid, "toggle-status"],
                &json!({"active": active}),
            )
            .await?;
        Ok(())
    }

    /// Makes each user an active member of `project`, one result each.
    async fn add_members(
        &self,
        project: i64,
        users: &[User],
        institution: &str,
    ) -> Vec<UserResult> {
        let mut members = match self.members(project).await {
            Ok(m) => m,
            Err(e) => {
                return users
                    .iter()
                    .map(|u| UserResult::failed(&u.username, e.clone()))
                    .collect();
            }
        };
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            let result = self.add_member(project, u, institution, &mut members).await;
            out.push(match result {
                Ok(true) => UserResult::applied(&u.username),
                Ok(false) => UserResult::unchanged(&u.username),
                Err(e) => UserResult::failed(&u.username, e),
            });
        }
        out
    }

    /// Whether anything changed.
    async fn add_member(
        &self,
        project: i64,
        u: &User,
        institution: &str,
        members: &mut Vec<Member>,
    ) -> BackendResult<bool> {
        if let Some(m) = members.iter_mut().find(|m| m.is(&u.username, &u.email)) {
            if m.active {
                return Ok(false);
            }
            self.toggle(project, m.id, true).await?;
            m.active = true;
            return Ok(true);
        }
        let portal_user = self.ensure_user(u, institution).await?;
        let email = if portal_user.email.is_empty() {
            u.email.clone()
        } else {
            portal_user.email.clone()
        };
        let pid = project.to_string();
        let added: Result<Value, ApiError> = self
            .api
            .post(
                &["api", "projects", &pid, "members", "add"],
                &json!({"user_id": portal_user.id, "email": email, "active": true}),
            )
            .await;
        match added {
            Ok(v) => {
                if let Some(m) = Member::parse(&v) {
                    members.push(m);
                }
                Ok(true)
            }
            // A member under another name (registered before with a
            // different username): activate that membership if needed.
            Err(e) if e.says("already a member") => {
                *members = self.members(project).await?;
                match members
                    .iter()
                    .find(|m| m.is(&portal_user.username, &portal_user.email))
                {
                    Some(m) if !m.active => {
                        self.toggle(project, m.id, true).await?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The MUP project of a resource being created: found by grant number,
    /// else created with the team's project manager as PI.
    async fn find_or_make_project(
        &self,
        r: &ResourceContext,
        users: &[User],
    ) -> BackendResult<i64> {
        let grant = grant_number(&r.project_name)?;
        let _making = self.making_project.lock().await;
        if let Some(p) = self
            .api
            .find::<Project>(&["api", "projects", "by-grant", &grant])
            .await?
        {
            return Ok(p.id);
        }
        let pi = users
            .iter()
            .find(|u| u.role.eq_ignore_ascii_case(PI_ROLE) && !u.email.trim().is_empty())
            .ok_or_else(|| {
                BackendError::not_ready(format!(
                    "mup project {grant} does not exist yet and needs a principal investigator: no project manager of {:?} has an account on this offering with an e-mail address yet",
                    r.project_name
                ))
            })?;
        let pi_user = self.ensure_user(pi, &r.customer_name).await?;
        let today = jiff::Zoned::now().date();
        let end = today
            .checked_add(jiff::Span::new().days(self.settings.project_duration_days))
            .unwrap_or(today);
        let description = match r.project_name.trim() {
            "" => String::new(),
            name => format!("Waldur project {name}"),
        };
        let body = json!({
            "title": r.project_name,
            "description": description,
            "pi": if pi_user.email.is_empty() { pi.email.clone() } else { pi_user.email.clone() },
            "co_pi": "",
            "science_field": self.settings.default_research_field,
            "start_date": today.to_string(),
            "end_date": end.to_string(),
            "agency": self.settings.default_agency,
            "grant_number": grant,
            "max_storage": self.settings.default_storage_limit,
            "ai_included": false,
        });
        let made: Result<Project, ApiError> =
            self.api.post(&["api", "projects", "add", ""], &body).await;
        match made {
            Ok(p) => {
                tracing::info!(project = p.id, grant = %grant, pi = %pi.username, "created mup project");
                Ok(p.id)
            }
            // Made by a call whose answer was lost.
            Err(e) if e.status() == Some(400) && e.says("grant") => self
                .api
                .find::<Project>(&["api", "projects", "by-grant", &grant])
                .await?
                .map(|p| p.id)
                .ok_or_else(|| e.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// The usage of one allocation in Waldur units: total and per user.
    async fn allocation_usage(
        &self,
        component: &str,
        a: &Allocation,
    ) -> Result<(f64, BTreeMap<String, f64>), ApiError> {
        let (pid, aid) = (a.project.to_string(), a.id.to_string());
        let u: Usage = self
            .api
            .get(&["api", "projects", &pid, "allocations", &aid, "usage"])
            .await?;
        let factor = self
            .settings
            .components
            .get(component)
            .map_or(1.0, |c| c.unit_factor);
        let users = u
            .users
            .iter()
            .filter_map(|(name, v)| {
                let amount = records::number(v).filter(|x| *x >= 0.0);
                if amount.is_none() {
                    tracing::warn!(allocation = %a.identifier, user = %name, value = %v, "ignoring a usage amount that is not a non-negative number");
                }
                Some((name.clone(), amount? / factor))
            })
            .collect();
        Ok((u.total.max(0.0) / factor, users))
    }
}

/// The grant number in a Waldur project name: its second `/`-separated
/// part, trimmed (`"EHPC-AIF / EHPC-2020FL01-114 / Title"`).
pub fn grant_number(project_name: &str) -> BackendResult<String> {
    project_name
        .split('/')
        .nth(1)
        .map(str::trim)
        .filter(|g| !g.is_empty())
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

/// A backend error for "this resource is not there", which callers that
/// work through lists treat as absent rather than as a failure.
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
        let r: Result<Vec<Value>, ApiError> =
            self.api.get(&["api", "research-fields", "list", ""]).await;
        Ok(match r {
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
        let mut checks = Vec::new();
        let mut info = BTreeMap::new();
        info.insert("api_url".into(), self.settings.api_url.clone());
        info.insert(
            "primary_component".into(),
            self.settings.primary().to_owned(),
        );
        let fields: Result<Vec<Value>, ApiError> =
            self.api.get(&["api", "research-fields", "list", ""]).await;
        checks.push(match fields {
            Ok(f) => DiagnosticCheck {
                name: "research-fields".into(),
                status: CheckStatus::Ok,
                message: format!("{} research fields", f.len()),
            },
            Err(e) => DiagnosticCheck {
                name: "research-fields".into(),
                status: CheckStatus::Failed,
                message: e.to_string(),
            },
        });
        let projects: Result<Vec<Project>, ApiError> =
            self.api.get(&["api", "projects", "list", ""]).await;
        checks.push(match projects {
            Ok(p) => {
                info.insert("projects".into(), p.len().to_string());
                DiagnosticCheck {
                    name: "projects".into(),
                    status: CheckStatus::Ok,
                    message: format!(
                        "{} projects, {} active",
                        p.len(),
                        p.iter().filter(|p| p.active).count()
                    ),
                }
            }
            Err(e) => DiagnosticCheck {
                name: "projects".into(),
                status: CheckStatus::Failed,
                message: e.to_string(),
            },
        });
        Ok(Diagnostics { checks, info })
    }

    async fn create_resource(&self, req: CreateResource) -> BackendResult<Created> {
        let r = &req.resource;
        let uuid = uuid_hex(&r.resource_uuid).ok_or_else(|| {
            BackendError::invalid_field("resource.resource_uuid", "is not a UUID")
        })?;
        if self
            .parse_identifier(&req.backend_id)
            .is_none_or(|(u, _)| u != uuid)
        {
            if self.lookup(&req.backend_id).await?.is_some() {
                return Err(BackendError::already_exists(
                    &req.backend_id,
                    "it is an allocation of another resource",
                ));
            }
            return Err(BackendError::invalid_field(
                "backend_id",
                format!(
                    "MUP allocations of this resource are named after its UUID: expected {}",
                    self.identifier(&uuid, self.settings.primary())
                ),
            ));
        }
        let mut sizes = BTreeMap::new();
        for (key, c) in &self.settings.components {
            let limit = req.limits.get(key).copied().or(c.limit).unwrap_or(0);
            sizes.insert(key.clone(), self.size(key, limit)?);
        }
        // A resource created before (a re-issued create, or a re-create
        // after deletion) stays in its project; otherwise the project comes
        // from the grant number.
        let found = self.try_locate(&req.backend_id).await?;
        let (project, existing) = match found {
            Some(l) => (l.project, l.allocations),
            None => (
                self.find_or_make_project(r, &req.users).await?,
                BTreeMap::new(),
            ),
        };
        self.activate(project).await?;
        self.apply_sizes(project, &uuid, &existing, &sizes).await?;
        let user_results = if req.users.is_empty() {
            Vec::new()
        } else {
            self.add_members(project, &req.users, &r.customer_name)
                .await
        };
        let located = self.locate(&req.backend_id).await?;
        let p = self.project(project).await?;
        let mut resource = self.info(&req.backend_id, &located, Some(&p));
        resource.users = self
            .members(project)
            .await?
            .into_iter()
            .filter(|m| m.active)
            .map(|m| {
                if m.username.is_empty() {
                    m.email
                } else {
                    m.username
                }
            })
            .collect();
        Ok(Created {
            resource,
            ready: true,
            operation_id: None,
            user_results,
        })
    }

    async fn get_resource(&self, backend_id: &str) -> BackendResult<ResourceInfo> {
        let l = self.locate(backend_id).await?;
        let p = self.project(l.project).await?;
        let mut info = self.info(backend_id, &l, Some(&p));
        info.users = active_names(&self.members(l.project).await?);
        Ok(info)
    }

    async fn list_resources(&self, page: PageRequest) -> BackendResult<Page> {
        let projects: Vec<Project> = self.api.get(&["api", "projects", "list", ""]).await?;
        let primary = self.settings.primary().to_owned();
        let mut resources = Vec::new();
        for p in projects {
            if page
                .parent_id
                .as_ref()
                .is_some_and(|g| g != &p.grant_number)
            {
                continue;
            }
            let Some(list) = self.project_allocations(p.id).await? else {
                continue;
            };
            let mut by_uuid: BTreeMap<String, BTreeMap<String, Allocation>> = BTreeMap::new();
            for a in list {
                if let Some((u, c)) = self.parse_identifier(&a.identifier) {
                    by_uuid.entry(u).or_default().insert(c, a);
                }
            }
            for (uuid, allocations) in by_uuid {
                let component = if allocations.contains_key(&primary) {
                    primary.clone()
                } else {
                    allocations.keys().next().cloned().unwrap_or_default()
                };
                let l = Located {
                    component: component.clone(),
                    uuid: uuid.clone(),
                    project: p.id,
                    allocations,
                    project_used_by_others: false,
                };
                if l.live() {
                    resources.push(self.info(&self.identifier(&uuid, &component), &l, Some(&p)));
                }
            }
        }
        resources.sort_by(|a, b| a.backend_id.cmp(&b.backend_id));
        Ok(page.page(resources, 200))
    }

    async fn delete_resource(&self, req: DeleteResource) -> BackendResult<Deleted> {
        let Some(l) = self.try_locate(&req.backend_id).await? else {
            return Ok(Deleted {
                ready: true,
                operation_id: None,
                existed: false,
            });
        };
        let existed = l.live();
        let soft = match req.mode {
            DeletionMode::Soft => true,
            DeletionMode::Hard => false,
            _ => self.settings.soft_delete,
        };
        if soft {
            if !existed {
                return Err(BackendError::resource_not_found(&req.backend_id));
            }
            for a in l.allocations.values().filter(|a| a.active && a.size != 0.0) {
                self.edit_allocation(a, 0.0, true).await?;
            }
        } else {
            for a in l.allocations.values().filter(|a| a.active) {
                self.edit_allocation(a, a.size, false).await?;
            }
            if self.settings.deactivate_empty_projects && !l.project_used_by_others {
                let p = self.project(l.project).await?;
                if p.active {
                    let id = l.project.to_string();
                    let _: Value = self
                        .api
                        .put(&["api", "projects", &id, "deactivate"], &json!({}))
                        .await?;
                    tracing::info!(project = l.project, grant = %p.grant_number, "deactivated mup project: none of its allocations is active");
                }
            }
        }
        Ok(Deleted {
            ready: true,
            operation_id: None,
            existed,
        })
    }

    async fn set_resource_limits(
        &self,
        backend_id: &str,
        limits: Limits,
        _resource: Option<ResourceContext>,
    ) -> BackendResult<LimitsApplied> {
        let l = self.locate(backend_id).await?;
        let mut sizes = BTreeMap::new();
        for (key, limit) in &limits {
            sizes.insert(key.clone(), self.size(key, *limit)?);
        }
        self.apply_sizes(l.project, &l.uuid, &l.allocations, &sizes)
            .await?;
        let now = self.locate(backend_id).await?;
        Ok(LimitsApplied {
            limits: self.limits_of(&now),
            ready: true,
            operation_id: None,
        })
    }

    async fn get_resource_limits(&self, backend_id: &str) -> BackendResult<Limits> {
        let l = self.locate(backend_id).await?;
        Ok(self.limits_of(&l))
    }

    async fn get_resource_metadata(&self, backend_id: &str) -> BackendResult<JsonObject> {
        let l = self.locate(backend_id).await?;
        let p = self.project(l.project).await?;
        let mut m = JsonObject::new();
        m.insert("mup_project_id".into(), json!(l.project));
        m.insert("mup_grant_number".into(), json!(p.grant_number));
        if let Some(a) = l.allocations.get(&l.component) {
            m.insert("mup_allocation_id".into(), json!(a.id));
            m.insert("allocation_type".into(), json!(a.kind));
            m.insert("allocation_size".into(), json!(a.size));
            m.insert("allocation_used".into(), json!(a.used));
        }
        Ok(m)
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
        let members = self.members(l.project).await?;
        let mut out = Vec::with_capacity(usernames.len());
        for name in usernames {
            match members.iter().find(|m| m.active && m.is(&name, "")) {
                None => out.push(UserResult::unchanged(name)),
                Some(m) => match self.toggle(l.project, m.id, false).await {
                    Ok(()) => out.push(UserResult::applied(name)),
                    Err(e) => out.push(UserResult::failed(name, e)),
                },
            }
        }
        Ok(out)
    }

    async fn list_resource_users(&self, backend_ids: &[String]) -> BackendResult<ResourceUsers> {
        let mut out = ResourceUsers::default();
        let mut by_project: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        let mut lists = Lists::new();
        for id in backend_ids {
            match self.locate_with(id, &mut lists).await {
                Ok(l) => by_project.entry(l.project).or_default().push(id.clone()),
                Err(e) if is_absent(&e) => out.missing.push(id.clone()),
                Err(e) => return Err(e),
            }
        }
        for (project, ids) in by_project {
            let names = active_names(&self.members(project).await?);
            for id in ids {
                out.found.insert(id, names.clone());
            }
        }
        Ok(out)
    }

    async fn usage_report(&self, query: UsageQuery) -> BackendResult<Vec<ResourceUsage>> {
        let mut out = Vec::new();
        let mut lists = Lists::new();
        for id in &query.backend_ids {
            let l = match self.locate_with(id, &mut lists).await {
                Ok(l) => l,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(e),
            };
            let mut users: BTreeMap<String, Amounts> = BTreeMap::new();
            let mut total: Amounts = self
                .settings
                .components
                .keys()
                .map(|k| (k.clone(), 0.0))
                .collect();
            let mut usable = true;
            for (component, a) in l.allocations.iter().filter(|(_, a)| a.active) {
                match self.allocation_usage(component, a).await {
                    Ok((portal_total, per_user)) => {
                        let sum: f64 = per_user.values().sum();
                        if (portal_total - sum).abs() > 1e-6 * portal_total.max(1.0) {
                            tracing::warn!(allocation = %a.identifier, total = portal_total, users = sum, "mup reports a total that is not the sum of its users' usage; reporting the larger");
                        }
                        total.insert(component.clone(), portal_total.max(sum));
                        for (name, v) in per_user {
                            users.entry(name).or_default().insert(component.clone(), v);
                        }
                    }
                    // The portal down: report nothing rather than zeros.
                    Err(e)
                        if BackendError::from(e.clone()).reason
                            == waldur_backend_sdk::proto::reason::BACKEND_NOT_READY =>
                    {
                        return Err(e.into());
                    }
                    // One allocation the portal refuses to report on: leave
                    // this resource out, report the others.
                    Err(e) => {
                        tracing::warn!(backend_id = %id, error = %e, "leaving a resource out of the usage report");
                        usable = false;
                        break;
                    }
                }
            }
            if usable {
                out.push(ResourceUsage {
                    backend_id: id.clone(),
                    total,
                    users,
                });
            }
        }
        Ok(out)
    }
}

/// Active members' usernames (e-mail for a member without one), sorted.
fn active_names(members: &[Member]) -> Vec<String> {
    let set: BTreeSet<String> = members
        .iter()
        .filter(|m| m.active)
        .map(|m| {
            if m.username.is_empty() {
                m.email.clone()
            } else {
                m.username.clone()
            }
        })
        .filter(|n| !n.is_empty())
        .collect();
    set.into_iter().collect()
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
        for bad in ["", "no slashes", "A /  / C", "A/"] {
            let e = grant_number(bad).unwrap_err();
            assert_eq!(
                e.reason,
                waldur_backend_sdk::proto::reason::INVALID_FIELD,
                "{bad}"
            );
        }
    }
}
