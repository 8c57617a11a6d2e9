//! The account tree (customer → project → allocation), the association
//! listing every operation starts from, and ownership: which accounts this
//! backend may change.
//!
//! Ownership. An allocation account this backend created carries a marker at
//! the end of its description: `[waldur:<resource uuid>]` (or `[waldur]` when
//! the resource is not known). Before any change the backend checks it, so a
//! request naming a customer or project account, an account outside the
//! configured prefix, or any account a person made by hand is refused
//! (FAILED_PRECONDITION, reason RESOURCE_NOT_MANAGED) and nothing runs on it.
//! Accounts the original Python agent made have no marker; with
//! `ownership.adopt_unmarked: by_prefix` (the default) one whose name has the
//! allocation prefix and that sits under a project account with that project
//! as its organisation (the original's shape) is taken over: the marker is
//! written before its first change. `waldur-backend-server adopt` does the
//! same on purpose, for any account.

use std::collections::{BTreeMap, BTreeSet};

use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{BackendError, BackendResult};

use crate::limits::join_tres;
use crate::settings::Adopt;
use crate::{SlurmBackend, args, checked_account, names};

/// One association row of `show account withassoc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Assoc {
    pub account: String,
    pub description: String,
    pub organization: String,
    pub parent: String,
    pub user: String,
    pub grp_tres_mins: String,
    pub qos: String,
}

/// The listing of some accounts: their own rows and their users' rows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rows(pub Vec<Assoc>);

impl Rows {
    /// The account's own row.
    pub fn account(&self, name: &str) -> Option<&Assoc> {
        self.0
            .iter()
            .find(|a| a.account == name && a.user.is_empty())
    }

    /// The account's members.
    pub fn members(&self, name: &str) -> BTreeSet<String> {
        self.0
            .iter()
            .filter(|a| a.account == name && !a.user.is_empty())
            .map(|a| a.user.clone())
            .collect()
    }
}

/// What the backend may do with an existing account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// It carries the marker (for this resource, when it names one).
    Owned { resource: Option<String> },
    /// An unmarked account of the original agent's shape, taken over on
    /// its first change.
    Adoptable,
    /// Not this backend's: why.
    Foreign(String),
}

const MARKER: &str = "[waldur";

/// The resource a description's ownership marker names: `Some(None)` for a
/// bare `[waldur]`, `None` without a marker.
pub(crate) fn marker(description: &str) -> Option<Option<String>> {
    let at = description.rfind(MARKER)?;
    let rest = description[at + MARKER.len()..].trim_end();
    match rest {
        "]" => Some(None),
        _ => rest
            .strip_prefix(':')
            .and_then(|r| r.strip_suffix(']'))
            .filter(|u| u.len() == 32 && u.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|u| Some(u.to_ascii_lowercase())),
    }
}

/// A description with the marker of `resource` (uuid hex, dashes or not).
pub(crate) fn marked(description: &str, resource: Option<&str>) -> String {
    let base = match description.rfind(MARKER) {
        Some(at) => description[..at].trim_end(),
        None => description.trim_end(),
    };
    let tag = match resource.map(|r| r.replace('-', "").to_ascii_lowercase()) {
        Some(u) if u.len() == 32 && u.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("[waldur:{u}]")
        }
        _ => "[waldur]".to_owned(),
    };
    let base = names::description(base);
    if base.is_empty() {
        tag
    } else {
        format!("{base} {tag}")
    }
}

fn not_managed(id: &str, why: &str) -> BackendError {
    BackendError::not_managed(id, why)
}

impl SlurmBackend {
    /// Associations of the given accounts (account rows and user rows), with
    /// their descriptions and organisations: one `sacctmgr` per ~100 KB of
    /// names.
    pub(crate) async fn rows(&self, accounts: &[String]) -> BackendResult<Rows> {
        let mut all = Vec::new();
        for chunk in crate::usage::chunks(accounts) {
            let out = self
                .slurm
                .sacctmgr_read(args![
                    "show",
                    "account",
                    "withassoc",
                    "format=account,descr,org,parentname,user,grptresmins,qos",
                    "where",
                    format!("names={chunk}")
                ])
                .await?;
            all.extend(crate::parse::rows(&out).into_iter().map(|r| {
                let field = |i: usize| r.get(i).map(|s| (*s).to_owned()).unwrap_or_default();
                Assoc {
                    account: field(0).to_lowercase(),
                    description: field(1),
                    organization: field(2).to_lowercase(),
                    parent: field(3).to_lowercase(),
                    user: field(4),
                    grp_tres_mins: field(5),
                    qos: field(6),
                }
            }));
        }
        Ok(Rows(all))
    }

    /// Whether `row` (an account row) is this backend's to change.
    pub(crate) fn ownership(&self, row: &Assoc) -> Ownership {
        let s = &self.settings;
        let prefix = s.allocation_prefix.to_ascii_lowercase();
        if !row.account.starts_with(&prefix) {
            return Ownership::Foreign(format!("its name lacks the allocation prefix {prefix:?}"));
        }
        let tier = [
            Some(s.default_account.as_str()),
            Some(s.root_account()),
            s.parent_account.as_deref(),
        ];
        if tier.contains(&Some(row.account.as_str())) || row.organization == row.account {
            return Ownership::Foreign("it is a customer, project or root account".into());
        }
        if let Some(resource) = marker(&row.description) {
            return Ownership::Owned { resource };
        }
        let shaped = !row.parent.is_empty()
            && row.organization == row.parent
            && row.parent != s.root_account()
            && Some(row.parent.as_str()) != s.parent_account.as_deref();
        match (s.ownership.adopt_unmarked, shaped) {
            (Adopt::ByPrefix, true) => Ownership::Adoptable,
            (Adopt::ByPrefix, false) => Ownership::Foreign(
                "it carries no ownership marker and is not shaped like an allocation (organisation = parent project)".into(),
            ),
            (Adopt::Never, _) => Ownership::Foreign(
                "it carries no ownership marker; take it over with `waldur-backend-server adopt`"
                    .into(),
            ),
        }
    }

    /// The rows of an existing allocation the backend may read:
    /// RESOURCE_NOT_FOUND when absent, RESOURCE_NOT_MANAGED when foreign.
    pub(crate) async fn readable(&self, id: &str) -> BackendResult<Rows> {
        let rows = self.rows(&[id.to_owned()]).await?;
        let row = rows
            .account(id)
            .ok_or_else(|| BackendError::resource_not_found(id))?;
        if let Ownership::Foreign(why) = self.ownership(row) {
            return Err(not_managed(id, &why));
        }
        Ok(rows)
    }

    /// As [`Self::readable`], for a change: an adoptable account gets its
    /// marker first.
    pub(crate) async fn owned(&self, id: &str) -> BackendResult<Rows> {
        let rows = self.readable(id).await?;
        if let Some(row) = rows.account(id)
            && self.ownership(row) == Ownership::Adoptable
        {
            self.mark(id, &row.description, None).await?;
            tracing::info!(account = id, "unmarked allocation account adopted");
        }
        Ok(rows)
    }

    /// Writes the ownership marker into an account's description (nothing
    /// when it is there already).
    async fn mark(&self, id: &str, description: &str, resource: Option<&str>) -> BackendResult<()> {
        let wanted = marked(description, resource);
        if wanted == description {
            return Ok(());
        }
        self.set_account(id, format!("description={wanted}")).await
    }

    /// `waldur-backend-server adopt`: marks existing accounts as this
    /// backend's, whatever their shape (an operator's decision). Per
    /// account: true when marked now, false when it already was.
    pub async fn adopt(&self, ids: &[String]) -> Vec<(String, BackendResult<bool>)> {
        let mut out = Vec::new();
        for id in ids {
            let result = async {
                let id = checked_account("account", id.clone())?;
                let rows = self.rows(std::slice::from_ref(&id)).await?;
                let row = rows
                    .account(&id)
                    .ok_or_else(|| BackendError::resource_not_found(&id))?;
                if marker(&row.description).is_some() {
                    return Ok(false);
                }
                self.mark(&id, &row.description, None).await?;
                Ok(true)
            }
            .await;
            out.push((id.clone(), result));
        }
        out
    }

    pub(crate) fn customer_account(&self, r: &ResourceContext) -> BackendResult<Option<String>> {
        if self.settings.parent_account.is_some() {
            return Ok(None);
        }
        if r.customer_slug.is_empty() {
            return Err(BackendError::invalid_field(
                "resource.customer_slug",
                "is required by the account hierarchy",
            ));
        }
        let name = format!("{}{}", self.settings.customer_prefix, r.customer_slug);
        crate::folded_account("resource.customer_slug", &name).map(Some)
    }

    pub(crate) fn project_account(&self, r: &ResourceContext) -> BackendResult<String> {
        if r.project_slug.is_empty() {
            return Err(BackendError::invalid_field(
                "resource.project_slug",
                "is required by the account hierarchy",
            ));
        }
        crate::folded_account(
            "resource.project_slug",
            &format!("{}{}", self.settings.project_prefix, r.project_slug),
        )
    }

    /// `add account`, with the limits on the same line.
    pub(crate) async fn add_account(
        &self,
        name: &str,
        description: &str,
        organization: &str,
        parent: &str,
        limits: &BTreeMap<String, i64>,
    ) -> BackendResult<()> {
        // An empty description makes sacctmgr fail ("Unspecified error").
        let description = Some(names::description(description))
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| name.to_owned());
        let mut a = args![
            "add",
            "account",
            name,
            format!("description={description}"),
            format!("organization={organization}"),
            format!("parent={parent}")
        ];
        if !limits.is_empty() {
            a.push(format!("GrpTRESMins={}", join_tres(limits)));
        }
        match self.slurm.sacctmgr_write(a).await {
            Ok(_) => Ok(()),
            // Another process may have added it in the meantime (slurmdbd
            // answers a concurrent add with "Unspecified error"): if it
            // exists now under the wanted parent, that is success.
            Err(e) => match self.rows(&[name.to_owned()]).await {
                Ok(rows) if rows.account(name).is_some_and(|r| r.parent == parent) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// `modify account set <setting> where account=<account>`.
    pub(crate) async fn set_account(&self, account: &str, setting: String) -> BackendResult<()> {
        self.slurm
            .sacctmgr_write(args![
                "modify",
                "account",
                "set",
                setting,
                "where",
                format!("account={account}")
            ])
            .await
            .map(drop)
    }

    /// The customer and project accounts above an allocation, created when
    /// missing.
    async fn ensure_parents(
        &self,
        rows: &Rows,
        resource: &ResourceContext,
        customer: &Option<String>,
        project: &str,
    ) -> BackendResult<()> {
        if let Some(c) = customer
            && rows.account(c).is_none()
        {
            self.add_account(
                c,
                &resource.customer_name,
                c,
                self.settings.root_account(),
                &BTreeMap::new(),
            )
            .await?;
        }
        if rows.account(project).is_none() {
            let parent = customer
                .clone()
                .or_else(|| self.settings.parent_account.clone())
                .unwrap_or_default();
            self.add_account(
                project,
                &resource.project_name,
                project,
                &parent,
                &BTreeMap::new(),
            )
            .await?;
        }
        Ok(())
    }

    /// The per-allocation QoS (`qos_management`): created once, made the
    /// account's default, extra QoS added to its list.
    async fn ensure_allocation_qos(&self, account: &str) -> BackendResult<()> {
        let q = &self.settings.qos_management;
        let shown = self
            .slurm
            .sacctmgr_read(args!["show", "qos", account, "format=name"])
            .await?;
        if !shown.lines().any(|l| l.trim() == account) {
            self.slurm
                .sacctmgr_write(args![
                    "add",
                    "qos",
                    account,
                    "set",
                    format!("flags={}", q.flags)
                ])
                .await?;
            let options = [
                ("GrpTRES", q.grp_tres.clone()),
                ("MaxJobs", q.max_jobs.map(|v| v.to_string())),
                ("MaxSubmit", q.max_submit.map(|v| v.to_string())),
                ("MaxWall", q.max_wall.clone()),
                ("MinTRESPerJob", q.min_tres_per_job.clone()),
            ];
            for (name, value) in options {
                if let Some(v) = value {
                    self.slurm
                        .sacctmgr_write(args![
                            "modify",
                            "qos",
                            account,
                            "set",
                            format!("{name}={v}")
                        ])
                        .await?;
                }
            }
        }
        self.set_account(account, format!("qos+={account}")).await?;
        self.set_account(account, format!("defaultqos={account}"))
            .await?;
        for extra in &q.additional_qos {
            self.set_account(account, format!("qos+={extra}")).await?;
        }
        Ok(())
    }

    /// CreateResource: the tree, the account with its limits and marker,
    /// QoS, directory, members.
    pub(crate) async fn create(&self, req: CreateResource) -> BackendResult<Created> {
        let alloc = checked_account("backend_id", req.backend_id.clone())?;
        let limits = self
            .backend_limits(&req.limits, true, Some(&req.resource))
            .await?;
        // Customer and project accounts are shared: a create and a delete of
        // the same project must not interleave (see `hierarchy`).
        let _hierarchy = self.hierarchy.lock().await;
        let customer = self.customer_account(&req.resource)?;
        let project = self.project_account(&req.resource)?;
        let mut wanted: Vec<String> = customer.iter().cloned().collect();
        wanted.push(project.clone());
        wanted.push(alloc.clone());
        let existing = self.rows(&wanted).await?;
        let uuid = req
            .resource
            .resource_uuid
            .replace('-', "")
            .to_ascii_lowercase();

        match existing.account(&alloc) {
            Some(row) => {
                let taken = |why: &str| Err(BackendError::already_exists(&alloc, why));
                match self.ownership(row) {
                    Ownership::Foreign(why) => return taken(&why),
                    Ownership::Owned {
                        resource: Some(owner),
                    } if owner != uuid => {
                        return taken(&format!("it belongs to Waldur resource {owner}"));
                    }
                    Ownership::Owned { resource: Some(_) } => {}
                    Ownership::Owned { resource: None } | Ownership::Adoptable => {
                        // Without a recorded resource the parent decides.
                        if row.parent != project {
                            return taken(&format!("it belongs to {}", row.parent));
                        }
                        self.mark(&alloc, &row.description, Some(&uuid)).await?;
                    }
                }
                // Same resource: bring the limits to the requested state.
                let current: BTreeMap<String, i64> = crate::parse::tres(&row.grp_tres_mins)
                    .into_iter()
                    .map(|(k, v)| (k.clone(), crate::parse::limit_value(&k, &v) as i64))
                    .collect();
                if !limits.is_empty() && limits.iter().any(|(k, v)| current.get(k) != Some(v)) {
                    self.slurm
                        .sacctmgr_write(args![
                            "modify",
                            "account",
                            alloc,
                            "set",
                            format!("GrpTRESMins={}", join_tres(&limits))
                        ])
                        .await?;
                }
            }
            None => {
                self.ensure_parents(&existing, &req.resource, &customer, &project)
                    .await?;
                self.add_account(
                    &alloc,
                    &marked(&req.resource.name, Some(&uuid)),
                    &project,
                    &project,
                    &limits,
                )
                .await?;
            }
        }
        let members = existing.members(&alloc);
        if self.settings.qos_management.enabled {
            self.ensure_allocation_qos(&alloc).await?;
        }
        if self.settings.project_directory.enabled {
            self.project_directory(&alloc).await;
        }
        let user_results = self
            .add_members_with(
                &alloc,
                &req.users,
                &members,
                req.homedir_umask.as_deref(),
                Some(&req.resource.attributes),
            )
            .await?;
        let mut users: BTreeSet<String> = members;
        users.extend(
            user_results
                .iter()
                .filter(|r| r.outcome == Outcome::Applied)
                .map(|r| r.username.clone()),
        );
        Ok(Created {
            resource: ResourceInfo {
                backend_id: alloc,
                parent_id: project,
                description: names::description(&req.resource.name),
                limits: self.created_limits(&req.limits),
                users: users.into_iter().collect(),
                ..ResourceInfo::default()
            },
            ready: true,
            operation_id: None,
            user_results,
        })
    }

    /// GetResource: members, limits, QoS, access level.
    pub(crate) async fn resource(&self, backend_id: &str) -> BackendResult<ResourceInfo> {
        let id = crate::account_id(backend_id)?;
        let rows = self.readable(&id).await?;
        let row = rows
            .account(&id)
            .ok_or_else(|| BackendError::resource_not_found(backend_id))?;
        let mut metadata = JsonObject::new();
        metadata.insert("qos".into(), row.qos.clone().into());
        Ok(ResourceInfo {
            backend_id: id.clone(),
            parent_id: row.parent.clone(),
            description: row.description.clone(),
            limits: self.waldur_limits(&row.grp_tres_mins),
            metadata,
            access: self.access_of(&row.qos),
            users: rows.members(&id).into_iter().collect(),
            ..ResourceInfo::default()
        })
    }

    /// ListResources: the allocations this backend manages (or would adopt).
    pub(crate) async fn list(&self, page: PageRequest) -> BackendResult<Page> {
        let out = self
            .slurm
            .sacctmgr_read(args!["list", "account", "format=account,descr,org"])
            .await?;
        let mut all: Vec<ResourceInfo> = crate::parse::rows(&out)
            .into_iter()
            .filter(|r| r.len() >= 3)
            .filter_map(|r| {
                let row = Assoc {
                    account: r[0].to_lowercase(),
                    description: r[1].to_owned(),
                    organization: r[2].to_lowercase(),
                    // Allocation accounts carry their project as organisation.
                    parent: r[2].to_lowercase(),
                    ..Assoc::default()
                };
                match self.ownership(&row) {
                    Ownership::Foreign(_) => None,
                    _ => Some(ResourceInfo {
                        backend_id: row.account,
                        description: row.description,
                        parent_id: row.parent,
                        ..ResourceInfo::default()
                    }),
                }
            })
            .filter(|r| page.parent_id.as_ref().is_none_or(|p| &r.parent_id == p))
            .collect();
        all.sort_by(|a, b| a.backend_id.cmp(&b.backend_id));
        let after = page.page_token.unwrap_or_default();
        let size = if page.page_size == 0 {
            500
        } else {
            page.page_size
        };
        let mut rest = all.into_iter().filter(|r| r.backend_id > after);
        let resources: Vec<ResourceInfo> = rest.by_ref().take(size).collect();
        let next_page_token = if rest.next().is_some() {
            resources.last().map(|r| r.backend_id.clone())
        } else {
            None
        };
        Ok(Page {
            resources,
            next_page_token,
        })
    }

    /// DeleteResource: jobs cancelled, members removed, then the account
    /// (hard) or its limits zeroed (soft); an emptied project goes too.
    pub(crate) async fn delete(&self, req: DeleteResource) -> BackendResult<Deleted> {
        let gone = Deleted {
            ready: true,
            operation_id: None,
            existed: false,
        };
        let id = checked_account("backend_id", req.backend_id.clone())?;
        let rows = self.rows(std::slice::from_ref(&id)).await?;
        let Some(row) = rows.account(&id).cloned() else {
            return Ok(gone);
        };
        if let Ownership::Foreign(why) = self.ownership(&row) {
            return Err(not_managed(&id, &why));
        }
        let soft = match req.mode {
            DeletionMode::Soft => true,
            DeletionMode::Hard => false,
            DeletionMode::Unspecified => self.settings.soft_delete,
        };
        // Both modes stop the work first: cancel jobs, drop the members.
        if !rows.members(&id).is_empty() {
            if let Err(e) = self.slurm.scancel(args!["-A", id, "-f"]).await {
                tracing::warn!(account = %id, error = %e.message, "cancelling jobs before deletion failed");
            }
            self.slurm
                .sacctmgr_write(args!["remove", "user", "where", format!("account={id}")])
                .await?;
        }
        if soft {
            let known = self.cluster_tres().await;
            let zeros: BTreeMap<String, i64> = self
                .usage_tres()
                .into_iter()
                .filter(|k| known.is_empty() || known.contains(*k))
                .map(|k| (k.to_owned(), 0))
                .collect();
            self.slurm
                .sacctmgr_write(args![
                    "modify",
                    "account",
                    id,
                    "set",
                    format!("GrpTRESMins={}", join_tres(&zeros))
                ])
                .await?;
            return Ok(Deleted {
                existed: true,
                ..gone
            });
        }
        self.slurm
            .sacctmgr_write(args!["remove", "account", "where", format!("name={id}")])
            .await?;
        if self.settings.qos_management.enabled
            && let Err(e) = self
                .slurm
                .sacctmgr_write(args!["remove", "qos", "where", format!("name={id}")])
                .await
        {
            tracing::warn!(qos = %id, error = %e.message, "allocation QoS not removed");
        }
        let _hierarchy = self.hierarchy.lock().await;
        // Remove the project account once its last allocation is gone.
        let project = row.parent.clone();
        let is_project = self.settings.parent_account.as_deref() != Some(project.as_str())
            && project != self.settings.root_account()
            && !project.is_empty();
        if is_project {
            let out = self
                .slurm
                .sacctmgr_read(args![
                    "list",
                    "account",
                    "format=account,org",
                    "where",
                    format!("organizations={project}")
                ])
                .await?;
            let children = crate::parse::rows(&out)
                .into_iter()
                .filter(|r| r.first().is_some_and(|a| a.to_lowercase() != project))
                .count();
            if children == 0 {
                self.slurm
                    .sacctmgr_write(args![
                        "remove",
                        "account",
                        "where",
                        format!("name={project}")
                    ])
                    .await?;
            }
        }
        Ok(Deleted {
            existed: true,
            ..gone
        })
    }

    /// SyncResourceProject: the allocation (and its project) moved under
    /// the parents the resource's project and customer call for.
    pub(crate) async fn sync_project(
        &self,
        backend_id: &str,
        resource: ResourceContext,
    ) -> BackendResult<bool> {
        let id = checked_account("backend_id", backend_id.to_owned())?;
        let customer = self.customer_account(&resource)?;
        let project = self.project_account(&resource)?;
        self.owned(&id).await?;
        let mut wanted: Vec<String> = customer.iter().cloned().collect();
        wanted.push(project.clone());
        wanted.push(id.clone());
        let rows = self.rows(&wanted).await?;
        let row = rows
            .account(&id)
            .ok_or_else(|| BackendError::resource_not_found(backend_id))?
            .clone();
        let mut changed = false;
        if let Some(c) = &customer
            && rows.account(c).is_none()
        {
            self.add_account(
                c,
                &resource.customer_name,
                c,
                self.settings.root_account(),
                &BTreeMap::new(),
            )
            .await?;
        }
        match rows.account(&project) {
            None => {
                let parent = customer
                    .clone()
                    .or_else(|| self.settings.parent_account.clone())
                    .unwrap_or_default();
                self.add_account(
                    &project,
                    &resource.project_name,
                    &project,
                    &parent,
                    &BTreeMap::new(),
                )
                .await?;
            }
            Some(p) => {
                if let Some(c) = &customer
                    && &p.parent != c
                {
                    self.slurm
                        .sacctmgr_write(args![
                            "modify",
                            "account",
                            "where",
                            format!("name={project}"),
                            "set",
                            format!("parent={c}")
                        ])
                        .await?;
                    changed = true;
                }
            }
        }
        if row.parent != project {
            self.slurm
                .sacctmgr_write(args![
                    "modify",
                    "account",
                    "where",
                    format!("name={id}"),
                    "set",
                    format!("parent={project}"),
                    format!("organization={project}")
                ])
                .await?;
            changed = true;
        }
        Ok(changed)
    }

    /// The access level the account's QoS stands for, in the swap model;
    /// unknown (so the coordinator asks SetResourceAccess, which checks for
    /// itself) in the enforcement model or for a QoS set by hand.
    pub(crate) fn access_of(&self, qos: &str) -> Option<AccessLevel> {
        if self.settings.qos_enforced() {
            return None;
        }
        let s = &self.settings;
        if s.qos_paused.as_deref() == Some(qos) {
            Some(AccessLevel::Paused)
        } else if s.qos_downscaled.as_deref() == Some(qos) {
            Some(AccessLevel::Downscaled)
        } else if s.qos_default == qos {
            Some(AccessLevel::Full)
        } else {
            None
        }
    }

    /// SetResourceAccess: the QoS swap, or `GrpSubmitJobs` under
    /// enforcement.
    pub(crate) async fn set_access(
        &self,
        backend_id: &str,
        access: AccessLevel,
    ) -> BackendResult<bool> {
        let id = crate::account_id(backend_id)?;
        if self.settings.qos_enforced() {
            // Enforcement model: never touch QoS lists, block submission.
            self.owned(&id).await?;
            let value = if access == AccessLevel::Full {
                "-1"
            } else {
                "0"
            };
            let out = self
                .slurm
                .sacctmgr_read(args![
                    "show",
                    "assoc",
                    "where",
                    format!("accounts={id}"),
                    "format=account,user,grpsubmit"
                ])
                .await?;
            let current = crate::parse::rows(&out)
                .into_iter()
                .find(|r| r.first() == Some(&id.as_str()) && r.get(1).is_some_and(|u| u.is_empty()))
                .and_then(|r| r.get(2).map(|v| v.to_string()))
                .unwrap_or_default();
            let wanted_now = if value == "-1" {
                current.is_empty()
            } else {
                current == value
            };
            if wanted_now {
                return Ok(false);
            }
            self.slurm
                .sacctmgr_write(args![
                    "modify",
                    "account",
                    id,
                    "set",
                    format!("GrpSubmitJobs={value}")
                ])
                .await?;
            return Ok(true);
        }
        let target = match access {
            AccessLevel::Paused => self.settings.qos_paused.clone(),
            AccessLevel::Downscaled => self.settings.qos_downscaled.clone(),
            _ => Some(self.settings.qos_default.clone()),
        }
        .ok_or_else(|| BackendError::unimplemented("SetResourceAccess"))?;
        let rows = self.owned(&id).await?;
        let row = rows
            .account(&id)
            .ok_or_else(|| BackendError::resource_not_found(backend_id))?;
        if row.qos == target {
            return Ok(false);
        }
        self.slurm
            .sacctmgr_write(args![
                "modify",
                "account",
                id,
                "set",
                format!("qos={target}")
            ])
            .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_the_resource_or_nobody() {
        let u = "0f0f0000000000000000000000000001";
        assert_eq!(marker(&format!("run [waldur:{u}]")), Some(Some(u.into())));
        assert_eq!(marker("run [waldur]"), Some(None));
        assert_eq!(marker("run"), None);
        assert_eq!(marker("run [waldur:short]"), None);
        assert_eq!(
            marked(
                "my run [waldur]",
                Some("0F0F0000-0000-0000-0000-000000000001")
            ),
            format!("my run [waldur:{u}]")
        );
        assert_eq!(marked("", None), "[waldur]");
        assert_eq!(marked("a \"b\"", None), "a b [waldur]");
    }
}
