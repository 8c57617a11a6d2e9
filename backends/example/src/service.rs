//! The contract, call by call: how the in-memory state answers each RPC.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{Backend, BackendError, BackendResult};

use crate::{
    ExampleBackend, OpKind, Resource, TYPE_NAME, managed, metadata_of, operation_id, resource,
    resource_mut, valid_username,
};

#[async_trait::async_trait]
impl Backend for ExampleBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: TYPE_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor_version: Some("in-memory".into()),
        }
    }

    fn capabilities(&self) -> Vec<Capability> {
        use Capability::*;
        let mut caps = vec![
            Resources,
            ListResources,
            ResourceLimits,
            UserLimits,
            Pause,
            Downscale,
            Metadata,
            Membership,
            HomeDirectories,
            RoleReconciliation,
            UsageReport,
            HistoricalUsage,
            OrderEvaluation,
            Watch,
            Diagnostics,
            PeriodicSettings,
            ProjectSync,
        ];
        if self.settings.provisioning_delay_ms > 0 {
            caps.push(SlowProvisioning);
        }
        if self.settings.usage_may_decrease {
            caps.push(DecreasingUsage);
        }
        if self.settings.usernames {
            caps.push(Usernames);
        }
        caps
    }

    async fn probe(&self) -> BackendResult<Probe> {
        Ok(if self.lock().ready {
            Probe::ready()
        } else {
            Probe::not_ready("set not ready by a test")
        })
    }

    async fn components(&self) -> BackendResult<Vec<Component>> {
        Ok(self.components.as_ref().clone())
    }

    fn generate_backend_id(
        &self,
        base_name: &str,
        _resource: Option<&ResourceContext>,
    ) -> BackendResult<String> {
        let id = format!("{}{}", self.settings.allocation_prefix, base_name).to_lowercase();
        if id.len() > 64 {
            return Err(BackendError::invalid_field(
                "base_name",
                "gives an id over 64 characters",
            ));
        }
        Ok(id)
    }

    async fn diagnostics(&self) -> BackendResult<Diagnostics> {
        let st = self.lock();
        Ok(Diagnostics {
            checks: vec![
                DiagnosticCheck {
                    name: "state".into(),
                    status: CheckStatus::Ok,
                    message: format!("{} resources in memory", st.resources.len()),
                },
                DiagnosticCheck {
                    name: "ready".into(),
                    status: if st.ready {
                        CheckStatus::Ok
                    } else {
                        CheckStatus::Failed
                    },
                    message: String::new(),
                },
            ],
            info: BTreeMap::from([("components".into(), self.components.len().to_string())]),
        })
    }

    async fn create_resource(&self, req: CreateResource) -> BackendResult<Created> {
        match req
            .resource
            .attributes
            .get("example_fail")
            .and_then(|v| v.as_str())
        {
            Some("invalid_argument") => {
                return Err(BackendError::invalid_field(
                    "resource.attributes",
                    "example backend asked to refuse this order",
                ));
            }
            Some("unavailable") => return Err(BackendError::not_ready("example backend is busy")),
            Some("internal") => return Err(BackendError::command_failed("example command failed")),
            _ => {}
        }
        if !valid_account_name(&req.backend_id) {
            return Err(BackendError::invalid_field(
                "backend_id",
                "may only hold lower-case letters, digits, '_' and '-'",
            ));
        }
        let limits = if req.limits.is_empty() {
            self.default_limits()
        } else {
            req.limits.clone()
        };
        let (info, user_results) = {
            let mut st = self.lock();
            if st.unmanaged.contains(&req.backend_id) {
                return Err(BackendError::already_exists(
                    &req.backend_id,
                    "it exists and is not this backend's",
                ));
            }
            let r = match st.resources.get_mut(&req.backend_id) {
                Some(r) if r.resource_uuid != req.resource.resource_uuid => {
                    return Err(BackendError::already_exists(
                        &req.backend_id,
                        "it belongs to another Waldur resource",
                    ));
                }
                Some(r) => r,
                None => st
                    .resources
                    .entry(req.backend_id.clone())
                    .or_insert(Resource {
                        resource_uuid: req.resource.resource_uuid.clone(),
                        parent_id: req.resource.project_slug.clone(),
                        description: req.resource.name.clone(),
                        access: Some(AccessLevel::Full),
                        ..Resource::default()
                    }),
            };
            if !r.soft_deleted {
                r.limits = limits;
            }
            let results = self.add_members(r, &req.users);
            let info = self.info_of(&req.backend_id, r);
            made_homes(&mut st, &results);
            (info, results)
        };
        let ready = self.operation_ready(OpKind::Create, &req.backend_id);
        Ok(Created {
            resource: info,
            ready,
            operation_id: (!ready).then(|| operation_id(OpKind::Create, &req.backend_id)),
            user_results,
        })
    }

    async fn get_resource(&self, backend_id: &str) -> BackendResult<ResourceInfo> {
        let st = self.lock();
        let r = resource(&st, backend_id)?;
        Ok(self.info_of(backend_id, r))
    }

    async fn list_resources(&self, page: PageRequest) -> BackendResult<Page> {
        let st = self.lock();
        let after = page.page_token.clone().unwrap_or_default();
        // The map is ordered by backend id: start after the token.
        let sorted = st
            .resources
            .range::<String, _>((
                std::ops::Bound::Excluded(&after),
                std::ops::Bound::Unbounded,
            ))
            .map(|(id, r)| self.info_of(id, r));
        Ok(page.page(sorted, 100))
    }

    async fn delete_resource(&self, req: DeleteResource) -> BackendResult<Deleted> {
        let existed = {
            let st = self.lock();
            managed(&st, &req.backend_id)?;
            st.resources.contains_key(&req.backend_id)
        };
        if !existed {
            return Ok(Deleted {
                ready: true,
                operation_id: None,
                existed: false,
            });
        }
        let ready = self.operation_ready(OpKind::Delete, &req.backend_id);
        if ready {
            let soft = match req.mode {
                DeletionMode::Soft => true,
                DeletionMode::Hard => false,
                DeletionMode::Unspecified => self.settings.soft_delete,
            };
            let mut st = self.lock();
            if soft {
                if let Some(r) = st.resources.get_mut(&req.backend_id) {
                    r.soft_deleted = true;
                    for v in r.limits.values_mut() {
                        *v = 0;
                    }
                }
            } else {
                st.resources.remove(&req.backend_id);
            }
        }
        Ok(Deleted {
            ready,
            operation_id: (!ready).then(|| operation_id(OpKind::Delete, &req.backend_id)),
            existed,
        })
    }

    async fn sync_resource_project(
        &self,
        backend_id: &str,
        resource: ResourceContext,
    ) -> BackendResult<bool> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        if resource.project_slug.is_empty() || r.parent_id == resource.project_slug {
            return Ok(false);
        }
        r.parent_id = resource.project_slug;
        Ok(true)
    }

    async fn set_resource_limits(
        &self,
        backend_id: &str,
        limits: Limits,
        _resource: Option<ResourceContext>,
    ) -> BackendResult<LimitsApplied> {
        resource(&self.lock(), backend_id)?;
        let ready = self.operation_ready(OpKind::SetLimits, backend_id);
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        if ready {
            r.limits = limits;
            r.soft_deleted = false;
        }
        Ok(LimitsApplied {
            limits: r.limits.clone(),
            ready,
            operation_id: (!ready).then(|| operation_id(OpKind::SetLimits, backend_id)),
        })
    }

    async fn get_resource_limits(&self, backend_id: &str) -> BackendResult<Limits> {
        let st = self.lock();
        let r = resource(&st, backend_id)?;
        Ok(r.limits.clone())
    }

    async fn set_user_limits(
        &self,
        backend_id: &str,
        username: &str,
        limits: Limits,
    ) -> BackendResult<()> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        if !r.users.contains_key(username) {
            return Err(BackendError::invalid_field(
                "username",
                format!("{username} is not a member of {backend_id}"),
            ));
        }
        if limits.is_empty() {
            r.user_limits.remove(username);
        } else {
            r.user_limits.insert(username.to_owned(), limits);
        }
        Ok(())
    }

    async fn get_user_limits(&self, backend_id: &str) -> BackendResult<BTreeMap<String, Limits>> {
        let st = self.lock();
        let r = resource(&st, backend_id)?;
        Ok(r.user_limits.clone())
    }

    async fn set_resource_access(
        &self,
        backend_id: &str,
        access: AccessLevel,
    ) -> BackendResult<bool> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        let changed = r.access != Some(access);
        r.access = Some(access);
        Ok(changed)
    }

    async fn get_resource_metadata(&self, backend_id: &str) -> BackendResult<JsonObject> {
        let st = self.lock();
        let r = resource(&st, backend_id)?;
        Ok(metadata_of(backend_id, r))
    }

    async fn add_users(
        &self,
        backend_id: &str,
        users: Vec<User>,
        _homedir_umask: Option<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        let results = self.add_members(r, &users);
        made_homes(&mut st, &results);
        Ok(results)
    }

    async fn remove_users(
        &self,
        backend_id: &str,
        usernames: Vec<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        Ok(usernames
            .into_iter()
            .map(|u| {
                r.user_limits.remove(&u);
                match r.users.remove(&u) {
                    Some(_) => UserResult::applied(u),
                    None => UserResult::unchanged(u),
                }
            })
            .collect())
    }

    async fn list_resource_users(&self, backend_ids: &[String]) -> BackendResult<ResourceUsers> {
        let st = self.lock();
        let mut out = ResourceUsers::default();
        for id in backend_ids {
            match st.resources.get(id) {
                Some(r) => {
                    out.found
                        .insert(id.clone(), r.users.keys().cloned().collect());
                }
                None => out.missing.push(id.clone()),
            }
        }
        Ok(out)
    }

    async fn list_resource_details(&self, backend_ids: &[String]) -> BackendResult<ResourceUsers> {
        let mut out = self.list_resource_users(backend_ids).await?;
        if !self.settings.bulk_reads {
            return Ok(out);
        }
        let st = self.lock();
        for id in out.found.keys() {
            if let Some(r) = st.resources.get(id) {
                let details = ResourceDetails {
                    resource: self.info_of(id, r),
                    user_limits: r.user_limits.clone(),
                };
                out.details.insert(id.clone(), details);
            }
        }
        Ok(out)
    }

    async fn create_home_directories(
        &self,
        usernames: Vec<String>,
        _umask: Option<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let mut st = self.lock();
        Ok(usernames
            .into_iter()
            .map(|u| {
                if !valid_username(&u) {
                    let e = BackendError::invalid_field("usernames", "not a valid local username");
                    return UserResult::failed(u, e);
                }
                if st.homedirs.insert(u.clone()) {
                    UserResult::applied(u)
                } else {
                    UserResult::unchanged(u)
                }
            })
            .collect())
    }

    async fn reconcile_user_roles(
        &self,
        backend_id: &str,
        users: Vec<User>,
    ) -> BackendResult<Vec<UserResult>> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        Ok(users
            .into_iter()
            .map(|u| match r.users.get_mut(&u.username) {
                None => UserResult::failed(
                    &u.username,
                    BackendError::invalid_field("users", format!("{} is not a member", u.username)),
                ),
                Some(role) if *role == u.role => UserResult::unchanged(&u.username),
                Some(role) => {
                    *role = u.role.clone();
                    UserResult::applied(&u.username)
                }
            })
            .collect())
    }

    async fn usage_report(&self, query: UsageQuery) -> BackendResult<Vec<ResourceUsage>> {
        let st = self.lock();
        Ok(query
            .backend_ids
            .iter()
            .filter_map(|id| {
                st.resources
                    .get(id)
                    .map(|r| self.usage_of(id, r, query.period, &st))
            })
            .collect())
    }

    async fn get_username(&self, user: OfferingUser) -> BackendResult<Option<String>> {
        Ok(self.lock().usernames.get(&user.offering_user_uuid).cloned())
    }

    async fn generate_username(&self, user: OfferingUser) -> BackendResult<String> {
        let domain = user
            .email
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or_default();
        match domain {
            "link.required" => {
                return Err(BackendError::account_linking_required(
                    "link your existing cluster account first",
                    Some("https://idm.example.invalid/link"),
                ));
            }
            "validation.required" => {
                return Err(BackendError::additional_validation_required(
                    "your affiliation needs to be validated",
                    Some("https://idm.example.invalid/validate"),
                ));
            }
            _ => {}
        }
        let mut st = self.lock();
        if let Some(existing) = st.usernames.get(&user.offering_user_uuid) {
            return Ok(existing.clone());
        }
        let source = [
            &user.waldur_username,
            &user.email,
            &user.full_name,
            &user.offering_user_uuid,
        ]
        .into_iter()
        .find(|s| !s.is_empty())
        .map(|s| s.split('@').next().unwrap_or_default())
        .unwrap_or_default();
        let cleaned: String = source
            .to_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(24)
            .collect();
        let base = format!("{}{}", self.settings.username_prefix, cleaned);
        let base = if valid_username(&base) {
            base
        } else {
            format!("u{base}")
        };
        let taken: BTreeSet<&String> = st.usernames.values().collect();
        let name = std::iter::once(base.clone())
            .chain((1..).map(|i| format!("{base}{i}")))
            .find(|candidate| !taken.contains(candidate))
            .unwrap_or(base);
        st.usernames.insert(user.offering_user_uuid, name.clone());
        Ok(name)
    }

    async fn evaluate_order(&self, order: Order) -> BackendResult<Decision> {
        let hint = order
            .resource
            .attributes
            .get("example_decision")
            .and_then(|v| v.as_str());
        Ok(match hint {
            Some("reject") => Decision {
                decision: OrderDecision::Reject,
                message: "rejected by the example policy".into(),
            },
            Some("pending") => Decision {
                decision: OrderDecision::Pending,
                message: "waiting for the example policy".into(),
            },
            // A policy on the team: no project manager, no allocation.
            Some("needs_manager") if !order.team.iter().any(|u| u.role == "PROJECT.MANAGER") => {
                Decision {
                    decision: OrderDecision::Pending,
                    message: "waiting for the project to have a manager with an account".into(),
                }
            }
            _ => Decision {
                decision: OrderDecision::Accept,
                message: String::new(),
            },
        })
    }

    async fn watch(
        &self,
        backend_ids: Vec<String>,
    ) -> BackendResult<BoxStream<'static, BackendResult<WatchEvent>>> {
        let wanted: BTreeSet<String> = backend_ids.into_iter().collect();
        let rx = self.events.subscribe();
        let stream = tokio_stream_from(rx)
            .filter(move |e| {
                let keep = wanted.is_empty() || wanted.contains(&e.backend_id);
                async move { keep }
            })
            .map(Ok)
            .boxed();
        Ok(stream)
    }

    async fn apply_periodic_settings(
        &self,
        backend_id: &str,
        settings: JsonObject,
    ) -> BackendResult<Vec<String>> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        let mut actions = Vec::new();
        for (k, v) in settings {
            if r.periodic.get(&k) != Some(&v) {
                actions.push(format!("set {k}={v} on {backend_id}"));
                r.periodic.insert(k, v);
            }
        }
        Ok(actions)
    }
}

/// Account names the example accepts (SLURM's rules, to be realistic).
fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

/// A broadcast receiver as a stream; lagging receivers skip what they missed
/// (the coordinator re-issues requests anyway, events are only hints).
fn tokio_stream_from(
    rx: broadcast::Receiver<WatchEvent>,
) -> impl futures::Stream<Item = WatchEvent> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Members added get their home directory, as on a cluster.
fn made_homes(st: &mut crate::State, results: &[UserResult]) {
    for r in results {
        if r.outcome == Outcome::Applied {
            st.homedirs.insert(r.username.clone());
        }
    }
}
