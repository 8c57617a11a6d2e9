//! The resource lifecycle on the account tree: create, read, list, delete
//! (with the emptied project), and project sync.

use std::collections::{BTreeMap, BTreeSet};

use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{BackendError, BackendResult};

use crate::limits::join_tres;
use crate::{SlurmBackend, args, checked_account, names};

use crate::accounts::{Assoc, Ownership, Rows, marked, marker, not_managed, uuid_hex};
use crate::batch::NewAllocation;

impl SlurmBackend {
    /// CreateResource: the tree, the account with its limits and marker,
    /// QoS, directory, members. Creates arriving together are made together
    /// (see [`crate::batch`]).
    pub(crate) async fn create(&self, req: CreateResource) -> BackendResult<Created> {
        let job = self.prepare(req).await?;
        // The group first: a directory that is down stops the create before
        // SLURM changes, and the group's gid is there for the directory.
        let mut made_group = None;
        if let Some(d) = &self.directory {
            let (_, made) = d.ensure_group(&job.alloc).await?;
            made_group = made.then(|| job.alloc.clone());
        }
        let created = match self.create_queued(job).await {
            // The name is taken in SLURM: the caller tries the next one, and
            // the group made for it now is not left behind.
            Err(e) if e.reason == waldur_backend_sdk::proto::reason::RESOURCE_ALREADY_EXISTS => {
                if let (Some(d), Some(name)) = (&self.directory, made_group)
                    && let Err(de) = d.delete_group(&name).await
                {
                    tracing::warn!(group = %name, error = %de.message, "ldap group of a refused create not removed");
                }
                return Err(e);
            }
            other => other?,
        };
        if let Some(d) = &self.directory {
            d.add_members(&created.resource.backend_id, &created.resource.users)
                .await?;
        }
        Ok(created)
    }

    /// Everything a create needs that can be checked before touching SLURM.
    pub(crate) async fn prepare(&self, req: CreateResource) -> BackendResult<NewAllocation> {
        let alloc = checked_account("backend_id", req.backend_id.clone())?;
        let limits = self
            .backend_limits(&req.limits, true, Some(&req.resource))
            .await?;
        let customer = self.customer_account(&req.resource)?;
        let project = self.project_account(&req.resource)?;
        // An allocation named like its own project or customer account (or
        // the root) would find that account there and put its members on
        // it: the caller moves on to the next name.
        let s = &self.settings;
        let tier = [
            customer.as_deref(),
            Some(project.as_str()),
            Some(s.default_account.as_str()),
            Some(s.root_account()),
            s.parent_account.as_deref(),
        ];
        if tier.contains(&Some(alloc.as_str())) {
            return Err(BackendError::already_exists(
                &alloc,
                "it is the name of a customer, project or root account",
            ));
        }
        let uuid = uuid_hex(&req.resource.resource_uuid);
        Ok(NewAllocation {
            alloc,
            limits,
            customer,
            project,
            uuid,
            req,
        })
    }

    /// The accounts a create reads first: customer, project, allocation.
    pub(crate) fn wanted(job: &NewAllocation) -> Vec<String> {
        let mut wanted: Vec<String> = job.customer.iter().cloned().collect();
        wanted.push(job.project.clone());
        wanted.push(job.alloc.clone());
        wanted
    }

    /// One create on its own, under the hierarchy lock the caller holds.
    pub(crate) async fn create_one(&self, job: NewAllocation) -> BackendResult<Created> {
        let wanted = Self::wanted(&job);
        let existing = self.rows(&wanted).await?;
        let NewAllocation {
            alloc,
            limits,
            customer,
            project,
            uuid,
            req,
        } = job;

        match existing.account(&alloc) {
            Some(row) => {
                let taken = |why: &str| Err(BackendError::already_exists(&alloc, why));
                match self.ownership(row) {
                    Ownership::Foreign(why) => return taken(&why),
                    Ownership::Owned {
                        resource: Some(owner),
                    } if Some(&owner) != uuid.as_ref() => {
                        return taken(&format!("it belongs to Waldur resource {owner}"));
                    }
                    Ownership::Owned { resource: Some(_) } => {}
                    // An account bound to no resource is not this one's to
                    // take (under the project_slug policy every resource of
                    // a project starts from the same name); the caller moves
                    // on to the next name. Only a create that could not
                    // record its own uuid finds its earlier attempt so.
                    Ownership::Owned { resource: None } if uuid.is_none() => {
                        if row.parent != project {
                            return taken(&format!("it belongs to {}", row.parent));
                        }
                    }
                    Ownership::Owned { resource: None } | Ownership::Adoptable => {
                        return taken("it is bound to no Waldur resource");
                    }
                }
                // Same resource: bring the limits to the requested state.
                let current = row.grp_limits();
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
                let description = marked(&req.resource.name, uuid.as_deref());
                self.ensure_parents(&existing, &req.resource, &customer, &project)
                    .await?;
                let added = self
                    .add_account(&alloc, &description, &project, &project, &limits)
                    .await;
                match added {
                    // Another backend process removed the project as empty
                    // between our read and our add: make it again, once.
                    Err(e) if e.message.contains("doesn't exist") => {
                        let fresh = self.rows(&wanted).await?;
                        self.ensure_parents(&fresh, &req.resource, &customer, &project)
                            .await?;
                        self.add_account(&alloc, &description, &project, &project, &limits)
                            .await?;
                    }
                    other => other?,
                }
            }
        }
        let members = existing.members(&alloc);
        self.allocation_extras(&alloc).await?;
        let user_results = self
            .add_members_with(
                &alloc,
                &req.users,
                &members,
                req.homedir_umask.as_deref(),
                Some(&req.resource.attributes),
            )
            .await?;
        Ok(self.created(alloc, project, &req, members, user_results))
    }

    /// The per-allocation QoS and project directory, where configured.
    pub(crate) async fn allocation_extras(&self, alloc: &str) -> BackendResult<()> {
        if self.settings.qos_management.enabled {
            self.ensure_allocation_qos(alloc).await?;
        }
        if self.settings.project_directory.enabled {
            self.project_directory(alloc).await;
        }
        Ok(())
    }

    /// The answer to a create: the allocation with the members it had and
    /// those just added.
    pub(crate) fn created(
        &self,
        alloc: String,
        project: String,
        req: &CreateResource,
        members: BTreeSet<String>,
        user_results: Vec<UserResult>,
    ) -> Created {
        let mut users: BTreeSet<String> = members;
        users.extend(
            user_results
                .iter()
                .filter(|r| r.outcome == Outcome::Applied)
                .map(|r| r.username.clone()),
        );
        Created {
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
        }
    }

    /// GetResource: members, limits, QoS, access level.
    pub(crate) async fn resource(&self, backend_id: &str) -> BackendResult<ResourceInfo> {
        let id = crate::account_id(backend_id)?;
        let rows = self.readable(&id).await?;
        let row = rows
            .account(&id)
            .ok_or_else(|| BackendError::resource_not_found(backend_id))?;
        let mut info = self.info(&rows, &id, row);
        // Members as ListResourceUsers counts them (the group's too).
        if let Some(d) = &self.directory
            && let Some(grouped) = d.members(std::slice::from_ref(&id)).await?.get(&id)
        {
            crate::members::union(&mut info.users, grouped);
        }
        Ok(info)
    }

    /// What GetResource answers, from an association listing holding the
    /// account row `row` of `id`.
    pub(crate) fn info(&self, rows: &Rows, id: &str, row: &Assoc) -> ResourceInfo {
        let mut metadata = JsonObject::new();
        metadata.insert("qos".into(), row.qos.clone().into());
        ResourceInfo {
            backend_id: id.to_owned(),
            parent_id: row.parent.clone(),
            description: row.description.clone(),
            limits: self.waldur_limits(&row.grp_tres_mins),
            metadata,
            access: self.access_of(row),
            users: rows.members(id).into_iter().collect(),
            ..ResourceInfo::default()
        }
    }

    /// ListResources: the allocations this backend manages (or would adopt).
    pub(crate) async fn list(&self, page: PageRequest) -> BackendResult<Page> {
        let out = self
            .slurm
            .sacctmgr_read(args!["list", "account", "format=account,org,descr"])
            .await?;
        let mut all: Vec<ResourceInfo> = crate::parse::rows(&out)
            .into_iter()
            .filter(|r| r.len() >= 3)
            .filter_map(|r| {
                let row = Assoc {
                    account: r[0].to_lowercase(),
                    organization: r[1].to_lowercase(),
                    // Allocation accounts carry their project as organisation.
                    parent: r[1].to_lowercase(),
                    description: r[2..].join("|"),
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
            .collect();
        all.sort_by(|a, b| a.backend_id.cmp(&b.backend_id));
        Ok(page.page(all, 500))
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
        if let Some(d) = &self.directory {
            d.check().await?;
        }
        let rows = self.rows(std::slice::from_ref(&id)).await?;
        let Some(row) = rows.account(&id).cloned() else {
            // A delete that failed at the directory is finished here.
            if let Some(d) = &self.directory {
                d.delete_group(&id).await?;
            }
            return Ok(gone);
        };
        match self.ownership(&row) {
            Ownership::Foreign(why) => return Err(not_managed(&id, &why)),
            // Two Waldur resources can carry one backend id (set by staff,
            // or imported): only the one the marker names may delete it.
            Ownership::Owned {
                resource: Some(owner),
            } if req
                .resource
                .as_ref()
                .and_then(|r| uuid_hex(&r.resource_uuid))
                .is_some_and(|asked| asked != owner) =>
            {
                return Err(not_managed(
                    &id,
                    &format!("it belongs to Waldur resource {owner}"),
                ));
            }
            _ => {}
        }
        let soft = match req.mode {
            DeletionMode::Soft => true,
            DeletionMode::Hard => false,
            DeletionMode::Unspecified => self.settings.soft_delete,
        };
        // Both modes stop the work first: cancel jobs, drop the members.
        let members: Vec<String> = rows.members(&id).into_iter().collect();
        if !members.is_empty() {
            if let Err(e) = self.slurm.scancel(args!["-A", id, "-f"]).await {
                tracing::warn!(account = %id, error = %e.message, "cancelling jobs before deletion failed");
            }
            self.slurm
                .sacctmgr_write(args!["remove", "user", "where", format!("account={id}")])
                .await?;
            self.release_default_associations(&members).await;
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
            // The account stays for a restore; its group keeps nobody (as
            // the group lists them: a re-issue finds SLURM's list empty).
            if let Some(d) = &self.directory {
                let grouped: Vec<String> = d
                    .members(std::slice::from_ref(&id))
                    .await?
                    .remove(&id)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                d.remove_members(&id, &grouped).await?;
            }
            return Ok(Deleted {
                existed: true,
                ..gone
            });
        }
        self.slurm
            .sacctmgr_write(args!["remove", "account", "where", format!("name={id}")])
            .await?;
        if let Some(d) = &self.directory {
            d.delete_group(&id).await?;
        }
        if self.settings.qos_management.enabled
            && let Err(e) = self
                .slurm
                .sacctmgr_write(args!["remove", "qos", "where", format!("name={id}")])
                .await
        {
            tracing::warn!(qos = %id, error = %e.message, "allocation QoS not removed");
        }
        let _hierarchy = crate::HIERARCHY.lock().await;
        if let Err(e) = self.remove_emptied_project(&row.parent).await {
            tracing::warn!(account = %row.parent, error = %e.message, "emptied project account not removed");
        }
        Ok(Deleted {
            existed: true,
            ..gone
        })
    }

    /// Removes a project account once its last allocation is gone, when it
    /// is one this backend made: the project prefix, itself as
    /// organisation, no sub-accounts and no users of its own. Anything else
    /// (a department account someone made by hand) stays.
    async fn remove_emptied_project(&self, project: &str) -> BackendResult<()> {
        let s = &self.settings;
        let tier = project.is_empty()
            || project == s.root_account()
            || s.parent_account.as_deref() == Some(project)
            || !project.starts_with(&s.project_prefix.to_ascii_lowercase());
        if tier {
            return Ok(());
        }
        let rows = self.rows(&[project.to_owned()]).await?;
        let ours = rows
            .account(project)
            .is_some_and(|r| r.organization == project && marker(&r.description).is_none());
        if !ours || !rows.members(project).is_empty() {
            return Ok(());
        }
        let children = self
            .slurm
            .sacctmgr_read(args![
                "show",
                "assoc",
                "where",
                format!("parent={project}"),
                "format=account"
            ])
            .await?;
        if children.lines().any(|l| !l.trim().is_empty()) {
            return Ok(());
        }
        self.slurm
            .sacctmgr_write(args![
                "remove",
                "account",
                "where",
                format!("name={project}")
            ])
            .await
            .map(drop)
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
        if let Some(tree) = self.recent_tree().await
            && tree.in_place(&id, &project, customer.as_deref())
        {
            return Ok(false);
        }
        let moved = self
            .move_into_place(&id, &project, customer, &resource)
            .await;
        if !matches!(moved, Ok(false)) {
            self.forget_tree().await;
        }
        moved
    }

    /// The precise path of [`Self::sync_project`]: fresh reads, then the
    /// missing accounts and the moves.
    async fn move_into_place(
        &self,
        id: &str,
        project: &str,
        customer: Option<String>,
        resource: &ResourceContext,
    ) -> BackendResult<bool> {
        self.owned(id).await?;
        let mut wanted: Vec<String> = customer.iter().cloned().collect();
        wanted.push(project.to_owned());
        wanted.push(id.to_owned());
        let rows = self.rows(&wanted).await?;
        let row = rows
            .account(id)
            .ok_or_else(|| BackendError::resource_not_found(id))?
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
        match rows.account(project) {
            None => {
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
}
