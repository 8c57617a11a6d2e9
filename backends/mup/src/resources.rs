//! A resource's allocations: finding them, creating and sizing them,
//! listing and deleting them, and the MUP project they live in.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;
use waldur_backend_sdk::ownership::{marked, marker, uuid_hex};
use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{BackendError, BackendResult};

use crate::records::{Allocation, Project};
use crate::{MupBackend, grant_number};

/// The Waldur role whose holder becomes a new project's principal
/// investigator.
const PI_ROLE: &str = "PROJECT.MANAGER";

/// Each project's allocations (and how many records could not be read),
/// as read during one call: a call over many resources of one project lists
/// them once.
pub(crate) type Lists = HashMap<i64, (Vec<Allocation>, usize)>;

/// A resource as found in the portal.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    /// The resource UUID (32 hex digits).
    pub(crate) uuid: String,
    /// The component the asked identifier names.
    pub(crate) component: String,
    /// The project's id.
    pub(crate) project: i64,
    /// The resource's allocations, by component.
    pub(crate) allocations: BTreeMap<String, Allocation>,
    /// Something else in the project is active (or cannot be read): the
    /// project is not emptied by deleting this resource.
    pub(crate) project_in_use: bool,
}

impl Located {
    /// The allocation the asked id names is active: the resource exists.
    pub(crate) fn live(&self) -> bool {
        self.allocations
            .get(&self.component)
            .is_some_and(|a| a.active)
    }
}

/// Metadata for Waldur: the project and the named allocation.
pub(crate) fn metadata(l: &Located, p: &Project) -> JsonObject {
    let mut m = JsonObject::new();
    m.insert("mup_project_id".into(), json!(l.project));
    m.insert("mup_grant_number".into(), json!(p.grant_number));
    if let Some(a) = l.allocations.get(&l.component) {
        m.insert("mup_allocation_id".into(), json!(a.id));
        m.insert("allocation_type".into(), json!(a.kind));
        m.insert("allocation_size".into(), json!(a.size));
        m.insert("allocation_used".into(), a.used.clone());
    }
    m
}

impl MupBackend {
    /// The resource `backend_id` names, or `None` when the portal has no
    /// allocation by that identifier. An identifier of another shape that
    /// the portal has is someone else's (RESOURCE_NOT_MANAGED).
    pub(crate) async fn try_locate(&self, backend_id: &str) -> BackendResult<Option<Located>> {
        self.try_locate_with(backend_id, &mut Lists::new()).await
    }

    /// As [`Self::try_locate`], sharing `lists` with the other lookups of
    /// one call.
    pub(crate) async fn try_locate_with(
        &self,
        backend_id: &str,
        lists: &mut Lists,
    ) -> BackendResult<Option<Located>> {
        let Some((uuid, component)) = self.parse_identifier(backend_id) else {
            return match self.api.allocation_by_identifier(backend_id).await? {
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
        // The remembered project first; if the portal contradicts it (the
        // allocation was moved), look the identifier up once.
        if let Some(project) = self.projects_of.get(backend_id) {
            if let Some(l) = self.in_project(project, &uuid, &component, lists).await? {
                return Ok(Some(l));
            }
            self.projects_of.forget(backend_id);
        }
        let Some(found) = self.api.allocation_by_identifier(backend_id).await? else {
            return Ok(None);
        };
        match self
            .in_project(found.project, &uuid, &component, lists)
            .await?
        {
            Some(l) => {
                self.projects_of.put(backend_id, found.project);
                Ok(Some(l))
            }
            // Listed by identifier but not among its project's allocations:
            // the portal is mid-change; try again later.
            None => Err(BackendError::not_ready(format!(
                "mup lists allocation {backend_id} under project {}, but that project's allocations do not include it",
                found.project
            ))),
        }
    }

    /// The resource `uuid` in `project`, if the allocation of `component`
    /// is there.
    async fn in_project(
        &self,
        project: i64,
        uuid: &str,
        component: &str,
        lists: &mut Lists,
    ) -> BackendResult<Option<Located>> {
        let (list, unreadable) = match lists.entry(project) {
            std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
            std::collections::hash_map::Entry::Vacant(e) => e
                .insert(self.api.allocations(project).await?.unwrap_or_default())
                .clone(),
        };
        let mut allocations = BTreeMap::new();
        let mut project_in_use = unreadable > 0;
        for a in list {
            match self.parse_identifier(&a.identifier) {
                Some((u, c)) if u == uuid => {
                    allocations.insert(c, a);
                }
                _ => project_in_use |= a.active,
            }
        }
        Ok(allocations.contains_key(component).then(|| Located {
            uuid: uuid.to_owned(),
            component: component.to_owned(),
            project,
            allocations,
            project_in_use,
        }))
    }

    /// The live resource `backend_id` names, or RESOURCE_NOT_FOUND.
    pub(crate) async fn locate(&self, backend_id: &str) -> BackendResult<Located> {
        self.locate_with(backend_id, &mut Lists::new()).await
    }

    /// As [`Self::locate`], sharing `lists` with other lookups of one call.
    pub(crate) async fn locate_with(
        &self,
        backend_id: &str,
        lists: &mut Lists,
    ) -> BackendResult<Located> {
        match self.try_locate_with(backend_id, lists).await? {
            Some(l) if l.live() => Ok(l),
            _ => Err(BackendError::resource_not_found(backend_id)),
        }
    }

    /// The limits the active allocations stand for. An allocation whose size
    /// cannot be read fails the read: a made-up 0 would reach Waldur.
    pub(crate) fn limits_of(&self, l: &Located) -> BackendResult<Limits> {
        l.allocations
            .iter()
            .filter(|(_, a)| a.active)
            .map(|(c, a)| match a.size {
                Some(size) => Ok((c.clone(), self.limit_of(c, size))),
                None => Err(BackendError::not_ready(format!(
                    "mup allocation {} has no readable size",
                    a.identifier
                ))),
            })
            .collect()
    }

    /// The resource as Waldur sees it: limits, members, metadata.
    pub(crate) async fn described(
        &self,
        backend_id: &str,
        l: &Located,
    ) -> BackendResult<ResourceInfo> {
        let p = self.api.project(l.project).await?;
        let members = self.api.members(l.project).await?;
        Ok(ResourceInfo {
            backend_id: backend_id.to_owned(),
            parent_id: p.grant_number.clone(),
            description: p.title.clone(),
            limits: self.limits_of(l)?,
            metadata: metadata(l, &p),
            users: crate::members::active_names(&members),
            ..ResourceInfo::default()
        })
    }

    /// Brings each component's allocation to its wanted size, active:
    /// creates the missing ones, edits those that differ. Returns the
    /// resource's allocations as the portal answered the writes, so the
    /// caller need not read them again.
    async fn apply_sizes(
        &self,
        project: i64,
        uuid: &str,
        existing: &BTreeMap<String, Allocation>,
        sizes: &BTreeMap<String, f64>,
    ) -> BackendResult<BTreeMap<String, Allocation>> {
        let mut now = existing.clone();
        // The primary allocation first: it names the resource, so once any
        // allocation exists, a re-issued call finds the resource and all of
        // its allocations.
        let primary = self.settings.primary();
        let order = sizes
            .iter()
            .filter(|(c, _)| c.as_str() == primary)
            .chain(sizes.iter().filter(|(c, _)| c.as_str() != primary));
        for (component, size) in order {
            match existing.get(component) {
                Some(a) if a.active && a.size == Some(*size) => {}
                Some(a) => {
                    let edited = self.api.edit_allocation(a, *size, true).await?;
                    now.insert(component.clone(), edited);
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
                    match self.api.add_allocation(project, &body).await {
                        Ok(a) => {
                            self.projects_of.put(&a.identifier, a.project);
                            now.insert(component.clone(), a);
                        }
                        // An earlier add whose answer was lost: take the
                        // allocation as it is and size it.
                        Err(e) if e.status() == Some(400) && e.says("already exists") => {
                            match self.api.allocation_by_identifier(&identifier).await? {
                                Some(a) if a.project == project => {
                                    let a = if a.active && a.size == Some(*size) {
                                        a
                                    } else {
                                        self.api.edit_allocation(&a, *size, true).await?
                                    };
                                    now.insert(component.clone(), a);
                                }
                                _ => {
                                    return Err(BackendError::command_refused(format!(
                                        "allocation {identifier} exists in another mup project: {e}"
                                    )));
                                }
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(now)
    }

    /// Creates (or completes, or re-creates) a resource.
    pub(crate) async fn create(&self, req: CreateResource) -> BackendResult<Created> {
        let r = &req.resource;
        let uuid = uuid_hex(&r.resource_uuid).ok_or_else(|| {
            BackendError::invalid_field("resource.resource_uuid", "is not a UUID")
        })?;
        if self
            .parse_identifier(&req.backend_id)
            .is_none_or(|(u, _)| u != uuid)
        {
            if self
                .api
                .allocation_by_identifier(&req.backend_id)
                .await?
                .is_some()
            {
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
        if let Some(unknown) = req
            .limits
            .keys()
            .find(|k| !self.settings.components.contains_key(*k))
        {
            return Err(BackendError::unknown_component(unknown));
        }
        let mut sizes = BTreeMap::new();
        for (key, c) in &self.settings.components {
            let limit = req.limits.get(key).copied().or(c.limit).unwrap_or(0);
            sizes.insert(key.clone(), self.size(key, limit)?);
        }
        // A resource created before (a re-issued create, or a re-create
        // after deletion) stays in its project; otherwise the project comes
        // from the grant number.
        // Under the project lock until the allocations are active, so a
        // delete of the project's last other resource cannot deactivate the
        // project in between.
        let (project, allocations) = {
            let _project = self.project_lock.lock().await;
            let (project, existing) = match self.try_locate(&req.backend_id).await? {
                Some(l) => (l.project, l.allocations),
                None => (
                    self.find_or_make_project(r, &req.users).await?,
                    BTreeMap::new(),
                ),
            };
            let p = self.api.project(project).await?;
            if !p.active {
                self.api.set_project_active(project, true).await?;
                tracing::info!(project, grant = %p.grant_number, "activated mup project");
            }
            let allocations = self.apply_sizes(project, &uuid, &existing, &sizes).await?;
            (project, allocations)
        };
        let user_results = if req.users.is_empty() {
            Vec::new()
        } else {
            self.add_members(project, &req.users, &r.customer_name)
                .await
        };
        let component = self
            .parse_identifier(&req.backend_id)
            .map(|(_, c)| c)
            .unwrap_or_default();
        let located = Located {
            uuid,
            component,
            project,
            allocations,
            project_in_use: false,
        };
        Ok(Created {
            resource: self.described(&req.backend_id, &located).await?,
            ready: true,
            operation_id: None,
            user_results,
        })
    }

    /// The MUP project of a resource being created: found by grant number,
    /// else created with the team's project manager as PI and this
    /// backend's marker in its description. The caller holds the project
    /// lock.
    async fn find_or_make_project(
        &self,
        r: &ResourceContext,
        users: &[User],
    ) -> BackendResult<i64> {
        let grant = grant_number(&r.project_name)?;
        if let Some(p) = self.api.project_by_grant(&grant).await? {
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
        let end = jiff::Span::new()
            .try_days(self.settings.project_duration_days)
            .and_then(|span| today.checked_add(span))
            .map_err(|e| {
                BackendError::invalid_field("project_duration_days", format!("no end date: {e}"))
            })?;
        let body = json!({
            "title": r.project_name,
            "description": marked(&format!("Waldur project {}", r.project_name.trim()), None),
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
        match self.api.create_project(&body).await {
            Ok(p) => {
                tracing::info!(project = p.id, grant = %grant, pi = %pi.username, "created mup project");
                Ok(p.id)
            }
            // Made by a call whose answer was lost.
            Err(e) if e.status() == Some(400) && e.says("grant") => self
                .api
                .project_by_grant(&grant)
                .await?
                .map(|p| p.id)
                .ok_or_else(|| e.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a resource: hard deactivates its allocations (the named one
    /// last, so a half-done delete still shows the resource) and then the
    /// project, if this backend made it and nothing else in it is active;
    /// soft keeps the allocations with size 0.
    pub(crate) async fn delete(&self, req: DeleteResource) -> BackendResult<Deleted> {
        let done = |existed| Deleted {
            ready: true,
            operation_id: None,
            existed,
        };
        let _project = self.project_lock.lock().await;
        let Some(l) = self.try_locate(&req.backend_id).await? else {
            return Ok(done(false));
        };
        let existed = l.live();
        let soft = match req.mode {
            DeletionMode::Soft => true,
            DeletionMode::Hard => false,
            _ => self.settings.soft_delete,
        };
        if soft && !existed {
            return Ok(done(false));
        }
        // A hard delete re-issued after a lost answer finds the named
        // allocation inactive: it still finishes the rest (other
        // allocations, the emptied project) and answers existed=false.
        let mut order: Vec<&Allocation> = l.allocations.values().filter(|a| a.active).collect();
        order.sort_by_key(|a| a.identifier == req.backend_id);
        for a in order {
            if soft {
                if a.size != Some(0.0) {
                    self.api.edit_allocation(a, 0.0, true).await?;
                }
            } else {
                let size = a.size.unwrap_or(0.0);
                self.api.edit_allocation(a, size, false).await?;
            }
        }
        if !soft && self.settings.deactivate_empty_projects && !l.project_in_use {
            let p = self.api.project(l.project).await?;
            if p.active && marker(&p.description) == Some(None) {
                self.api.set_project_active(l.project, false).await?;
                tracing::info!(project = l.project, grant = %p.grant_number, "deactivated mup project: none of its allocations is active");
            }
        }
        Ok(done(existed))
    }

    /// Sets the limits given; components left out keep theirs.
    pub(crate) async fn set_limits(
        &self,
        backend_id: &str,
        limits: Limits,
    ) -> BackendResult<LimitsApplied> {
        let mut l = self.locate(backend_id).await?;
        let mut sizes = BTreeMap::new();
        for (key, limit) in &limits {
            sizes.insert(key.clone(), self.size(key, *limit)?);
        }
        l.allocations = self
            .apply_sizes(l.project, &l.uuid, &l.allocations, &sizes)
            .await?;
        Ok(LimitsApplied {
            limits: self.limits_of(&l)?,
            ready: true,
            operation_id: None,
        })
    }

    /// Every live resource, under its primary component's identifier.
    pub(crate) async fn list(&self, page: PageRequest) -> BackendResult<Page> {
        let primary = self.settings.primary().to_owned();
        let mut resources = Vec::new();
        for p in self.api.projects().await? {
            if page
                .parent_id
                .as_ref()
                .is_some_and(|g| g != &p.grant_number)
            {
                continue;
            }
            let Some((list, _)) = self.api.allocations(p.id).await? else {
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
                    project_in_use: true,
                };
                if !l.live() {
                    continue;
                }
                match self.limits_of(&l) {
                    Ok(limits) => resources.push(ResourceInfo {
                        backend_id: self.identifier(&uuid, &component),
                        parent_id: p.grant_number.clone(),
                        description: p.title.clone(),
                        limits,
                        metadata: metadata(&l, &p),
                        ..ResourceInfo::default()
                    }),
                    Err(e) => {
                        tracing::warn!(uuid = %uuid, error = %e, "leaving a resource out of the listing")
                    }
                }
            }
        }
        resources.sort_by(|a, b| a.backend_id.cmp(&b.backend_id));
        Ok(page.page(resources, 200))
    }
}
