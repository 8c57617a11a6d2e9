//! The gRPC adapter: implements the generated `BackendService` over a set of
//! named backend instances.

use futures::StreamExt;
use tonic::{Request, Response, Status};
use waldur_backend_proto::v1 as wire;
use waldur_backend_proto::v1::backend_service_server::BackendService;

use crate::BackendError;
use crate::convert::{self, optional_id, required_id, required_ids};
use crate::types::*;

use crate::registry::{Registry, rpc};

type RpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl BackendService for Registry {
    async fn get_backend_info(
        &self,
        request: Request<wire::GetBackendInfoRequest>,
    ) -> RpcResult<wire::GetBackendInfoResponse> {
        rpc("GetBackendInfo", request, async |r| {
            let instance = r.instance.clone();
            let info = self.instance(r.instance, &[])?.backend.info();
            Ok(wire::GetBackendInfoResponse {
                name: info.name,
                version: info.version,
                instance,
                vendor_version: info.vendor_version.unwrap_or_default(),
                contract_version: waldur_backend_proto::CONTRACT_VERSION.to_owned(),
            })
        })
        .await
    }

    async fn get_capabilities(
        &self,
        request: Request<wire::GetCapabilitiesRequest>,
    ) -> RpcResult<wire::GetCapabilitiesResponse> {
        rpc("GetCapabilities", request, async |r| {
            let inst = self.instance(r.instance, &[])?;
            let mut caps: Vec<i32> = inst.capabilities.iter().map(|c| *c as i32).collect();
            caps.sort_unstable();
            Ok(wire::GetCapabilitiesResponse { capabilities: caps })
        })
        .await
    }

    async fn probe(&self, request: Request<wire::ProbeRequest>) -> RpcResult<wire::ProbeResponse> {
        rpc("Probe", request, async |r| {
            let p = self.instance(r.instance, &[])?.backend.probe().await?;
            Ok(wire::ProbeResponse {
                ready: p.ready,
                message: p.message,
            })
        })
        .await
    }

    async fn get_diagnostics(
        &self,
        request: Request<wire::GetDiagnosticsRequest>,
    ) -> RpcResult<wire::GetDiagnosticsResponse> {
        rpc("GetDiagnostics", request, async |r| {
            let inst = self.instance(r.instance, &[Capability::Diagnostics])?;
            let d = inst.backend.diagnostics().await?;
            Ok(wire::GetDiagnosticsResponse {
                checks: d
                    .checks
                    .into_iter()
                    .map(|c| wire::DiagnosticCheck {
                        name: c.name,
                        status: c.status as i32,
                        message: c.message,
                    })
                    .collect(),
                info: d.info.into_iter().collect(),
            })
        })
        .await
    }

    async fn list_components(
        &self,
        request: Request<wire::ListComponentsRequest>,
    ) -> RpcResult<wire::ListComponentsResponse> {
        rpc("ListComponents", request, async |r| {
            let components = self.instance(r.instance, &[])?.backend.components().await?;
            Ok(wire::ListComponentsResponse { components })
        })
        .await
    }

    async fn generate_backend_id(
        &self,
        request: Request<wire::GenerateBackendIdRequest>,
    ) -> RpcResult<wire::GenerateBackendIdResponse> {
        rpc("GenerateBackendId", request, async |r| {
            let inst = self.instance(r.instance, &[])?;
            let base = required_id("base_name", r.base_name)?;
            let resource = convert::optional_resource("resource", r.resource)?;
            let backend_id = inst.backend.generate_backend_id(&base, resource.as_ref())?;
            Ok(wire::GenerateBackendIdResponse { backend_id })
        })
        .await
    }

    async fn create_resource(
        &self,
        request: Request<wire::CreateResourceRequest>,
    ) -> RpcResult<wire::CreateResourceResponse> {
        rpc("CreateResource", request, async |r| {
            let instance = r.instance.clone();
            let inst = self.instance(r.instance.clone(), &[Capability::Resources])?;
            let req = convert::create_resource(r)?;
            inst.check_components(&req.limits).await?;
            let _guard = self.lock(&instance, &req.backend_id).await;
            let created = inst.backend.create_resource(req).await?;
            Ok(wire::CreateResourceResponse {
                resource: Some(convert::resource_info(created.resource)),
                ready: created.ready,
                operation_id: created.operation_id.unwrap_or_default(),
                user_results: convert::user_results(created.user_results),
            })
        })
        .await
    }

    async fn get_resource(
        &self,
        request: Request<wire::GetResourceRequest>,
    ) -> RpcResult<wire::GetResourceResponse> {
        rpc("GetResource", request, async |r| {
            let inst = self.instance(r.instance, &[Capability::Resources])?;
            let id = required_id("backend_id", r.backend_id)?;
            let info = inst.backend.get_resource(&id).await?;
            Ok(wire::GetResourceResponse {
                resource: Some(convert::resource_info(info)),
            })
        })
        .await
    }

    async fn list_resources(
        &self,
        request: Request<wire::ListResourcesRequest>,
    ) -> RpcResult<wire::ListResourcesResponse> {
        rpc("ListResources", request, async |r| {
            let inst = self.instance(r.instance, &[Capability::ListResources])?;
            let page_size = usize::try_from(r.page_size)
                .map_err(|_| BackendError::invalid_field("page_size", "is negative"))?;
            let page = PageRequest {
                parent_id: Some(optional_id("parent_id", r.parent_id)?).filter(|p| !p.is_empty()),
                page_size: page_size.min(convert::MAX_ITEMS),
                page_token: Some(convert::text("page_token", r.page_token)?)
                    .filter(|t| !t.is_empty()),
            };
            let page = inst.backend.list_resources(page).await?;
            Ok(wire::ListResourcesResponse {
                resources: page
                    .resources
                    .into_iter()
                    .map(convert::resource_info)
                    .collect(),
                next_page_token: page.next_page_token.unwrap_or_default(),
            })
        })
        .await
    }

    async fn delete_resource(
        &self,
        request: Request<wire::DeleteResourceRequest>,
    ) -> RpcResult<wire::DeleteResourceResponse> {
        rpc("DeleteResource", request, async |r| {
            let instance = r.instance.clone();
            let inst = self.instance(r.instance, &[Capability::Resources])?;
            let backend_id = required_id("backend_id", r.backend_id)?;
            let mode = DeletionMode::try_from(r.mode)
                .map_err(|_| BackendError::invalid_field("mode", "unknown deletion mode"))?;
            let resource = convert::optional_resource("resource", r.resource)?;
            let _guard = self.lock(&instance, &backend_id).await;
            let d = inst
                .backend
                .delete_resource(DeleteResource {
                    backend_id,
                    mode,
                    resource,
                })
                .await?;
            Ok(wire::DeleteResourceResponse {
                ready: d.ready,
                operation_id: d.operation_id.unwrap_or_default(),
                existed: d.existed,
            })
        })
        .await
    }

    async fn sync_resource_project(
        &self,
        request: Request<wire::SyncResourceProjectRequest>,
    ) -> RpcResult<wire::SyncResourceProjectResponse> {
        rpc("SyncResourceProject", request, async |r| {
            let instance = r.instance.clone();
            let inst = self.instance(r.instance, &[Capability::ProjectSync])?;
            let backend_id = required_id("backend_id", r.backend_id)?;
            let resource = convert::resource("resource", r.resource)?;
            let _guard = self.lock(&instance, &backend_id).await;
            let changed = inst
                .backend
                .sync_resource_project(&backend_id, resource)
                .await?;
            Ok(wire::SyncResourceProjectResponse { changed })
        })
        .await
    }

    async fn set_resource_limits(
        &self,
        request: Request<wire::SetResourceLimitsRequest>,
    ) -> RpcResult<wire::SetResourceLimitsResponse> {
        rpc("SetResourceLimits", request, async |r| {
            let instance = r.instance.clone();
            let inst = self.instance(r.instance, &[Capability::ResourceLimits])?;
            let backend_id = required_id("backend_id", r.backend_id)?;
            let limits = convert::limits("limits", r.limits)?;
            let resource = convert::optional_resource("resource", r.resource)?;
            inst.check_components(&limits).await?;
            let _guard = self.lock(&instance, &backend_id).await;
            let applied = inst
                .backend
                .set_resource_limits(&backend_id, limits, resource)
                .await?;
            Ok(wire::SetResourceLimitsResponse {
                limits: applied.limits.into_iter().collect(),
                ready: applied.ready,
                operation_id: applied.operation_id.unwrap_or_default(),
            })
        })
        .await
    }

    async fn get_resource_limits(
        &self,
        request: Request<wire::GetResourceLimitsRequest>,
    ) -> RpcResult<wire::GetResourceLimitsResponse> {
        rpc("GetResourceLimits", request, async |r| {
            let inst = self.instance(r.instance, &[Capability::ResourceLimits])?;
            let backend_id = required_id("backend_id", r.backend_id)?;
            let limits = inst.backend.get_resource_limits(&backend_id).await?;
            Ok(wire::GetResourceLimitsResponse {
                limits: limits.into_iter().collect(),
            })
        })
        .await
    }

    async fn set_user_limits(
        &self,
        request: Request<wire::SetUserLimitsRequest>,
    ) -> RpcResult<wire::SetUserLimitsResponse> {
        rpc("SetUserLimits", request, async |r| {
            let instance = r.instance.clone();
            let inst = self.instance(r.instance, &[Capability::UserLimits])?;
            let backend_id = required_id("backend_id", r.backend_id)?;
            let username = required_id("username", r.username)?;
            let limits = convert::limits("limits", r.limits)?;
            inst.check_components(&limits).await?;
            let _guard = self.lock(&instance, &backend_id).await;
            inst.backend
                .set_user_limits(&backend_id, &username, limits)
                .await?;
            Ok(wire::SetUserLimitsResponse {})
        })
        .await
    }

    async fn get_user_limits(
        &self,
        request: Request<wire::GetUserLimitsRequest>,
    ) -> RpcResult<wire::GetUserLimitsResponse> {
        rpc("GetUserLimits", request, async |r| {
            let inst = self.instance(r.instance, &[Capability::UserLimits])?;
            let backend_id = required_id("backend_id", r.backend_id)?;
            let users = inst.backend.get_user_limits(&backend_id).await?;
            Ok(wire::GetUserLimitsResponse {
                users: convert::user_limits(users),
            })
        })
        .await
    }

    async fn set_resource_access(
        &self,
        request: Request<wire::SetResourceAccessRequest>,
    ) -> RpcResult<wire::SetResourceAccessResponse> {
        rpc("SetResourceAccess", request, async |r| {
            let instance = r.instance.clone();
            // Unknown instance first (SPEC 7.2), then the field, then capabilities.
            self.instance(r.instance.clone(), &[])?;
            let access = match AccessLevel::try_from(r.access) {
                Ok(a) if a != AccessLevel::Unspecified => a,
                _ => return Err(BackendError::invalid_field("access", "is required")),
            };
            let needs: &[Capability] = match access {
                AccessLevel::Paused => &[Capability::Pause],
                AccessLevel::Downscaled => &[Capability::Downscale],
                _ => &[Capability::Pause, Capability::Downscale],
            };
            let inst = self.instance(r.instance, needs)?;
            let backend_id = required_id("backend_id", r.backend_id)?;
            let _guard = self.lock(&instance, &backend_id).await;
            let changed = inst
                .backend
                .set_resource_access(&backend_id, access)
                .await?;
            Ok(wire::SetResourceAccessResponse { changed })
        })
        .await
    }

    async fn get_resource_metadata(
        &self,
        request: Request<wire::GetResourceMetadataRequest>,
    ) -> RpcResult<wire::GetResourceMetadataResponse> {
        rpc("GetResourceMetadata", request, async |r| {
            let inst = self.instance(r.instance, &[Capability::Metadata])?;
            let backend_id = required_id("backend_id", r.backend_id)?;
            let metadata = inst.backend.get_resource_metadata(&backend_id).await?;
            Ok(wire::GetResourceMetadataResponse {
                metadata: Some(convert::json_to_struct(metadata)),
            })
        })
        .await
    }

    async fn add_users(
        &self,
        request: Request<wire::AddUsersRequest>,
    ) -> RpcResult<wire::AddUsersResponse> {
        rpc("AddUsers", request, async |r| {
            let instance = r.instance.clone();
            let inst = self.instance(r.instance, &[Capability::Membership])?;
            let backend_id = required_id("backend_id", r.backend_id)?;
            let users = convert::users("users", r.users, true)?;
            let umask = convert::umask("homedir_umask", r.homedir_umask)?;
            let _guard = self.lock(&instance, &backend_id).await;
            let results = inst.backend.add_users(&backend_id, users, umask).await?;
            Ok(wire::AddUsersResponse {
                results: convert::user_results(results),
            })
        })
        .await
    }

    async fn remove_users(
        &self,
        request: Request<wire::RemoveUsersRequest>,
    ) -> RpcResult<wire::RemoveUsersResponse> {
        rpc("RemoveUsers", request, async |r| {
            let instance = r.instance.clone();
            let inst = self.instance(r.instance, &[Capability::Membership])?;
            let backend_id = required_id("backend_id", r.backend_id)?;
            let usernames = required_ids("usernames", r.usernames)?;
            let _guard = self.lock(&instance, &backend_id).await;
            let results = inst.backend.remove_users(&backend_id, usernames).await?;
            Ok(wire::RemoveUsersResponse {
                results: convert::user_results(results),
            })
        })
        .await
    }

    async fn list_resource_users(
        &self,
        request: Request<wire::ListResourceUsersRequest>,
    ) -> RpcResult<wire::ListResourceUsersResponse> {
        rpc("ListResourceUsers", request, async |r| {
            let full = r.view() == wire::ResourceView::Full;
            let inst = self.instance(r.instance, &[Capability::Membership])?;
            let ids = required_ids("backend_ids", r.backend_ids)?;
            let mut listing = if full {
                inst.backend.list_resource_details(&ids).await?
            } else {
                inst.backend.list_resource_users(&ids).await?
            };
            let user_limits = inst.capabilities.contains(&Capability::UserLimits);
            Ok(wire::ListResourceUsersResponse {
                resources: listing
                    .found
                    .into_iter()
                    .map(|(backend_id, mut usernames)| {
                        usernames.sort();
                        let (resource, limits) = match listing.details.remove(&backend_id) {
                            Some(ResourceDetails {
                                mut resource,
                                user_limits: limits,
                            }) => {
                                // Secrets are GetResource's to give, never
                                // a bulk read's.
                                resource.credentials = Secrets::default();
                                (Some(convert::resource_info(resource)), limits)
                            }
                            None => (None, Default::default()),
                        };
                        wire::ResourceUsers {
                            user_limits: if user_limits && resource.is_some() {
                                convert::user_limits(limits)
                            } else {
                                Vec::new()
                            },
                            resource,
                            backend_id,
                            usernames,
                        }
                    })
                    .collect(),
                missing_backend_ids: listing.missing,
            })
        })
        .await
    }

    async fn create_home_directories(
        &self,
        request: Request<wire::CreateHomeDirectoriesRequest>,
    ) -> RpcResult<wire::CreateHomeDirectoriesResponse> {
        rpc("CreateHomeDirectories", request, async |r| {
            let inst = self.instance(r.instance, &[Capability::HomeDirectories])?;
            let usernames = required_ids("usernames", r.usernames)?;
            let umask = convert::umask("umask", r.umask)?;
            let results = inst
                .backend
                .create_home_directories(usernames, umask)
                .await?;
            Ok(wire::CreateHomeDirectoriesResponse {
                results: convert::user_results(results),
            })
        })
        .await
    }

    async fn reconcile_user_roles(
        &self,
        request: Request<wire::ReconcileUserRolesRequest>,
    ) -> RpcResult<wire::ReconcileUserRolesResponse> {
        rpc("ReconcileUserRoles", request, async |r| {
            let instance = r.instance.clone();
            let inst = self.instance(r.instance, &[Capability::RoleReconciliation])?;
            let backend_id = required_id("backend_id", r.backend_id)?;
            let users = convert::users("users", r.users, true)?;
            let _guard = self.lock(&instance, &backend_id).await;
            let results = inst
                .backend
                .reconcile_user_roles(&backend_id, users)
                .await?;
            Ok(wire::ReconcileUserRolesResponse {
                results: convert::user_results(results),
            })
        })
        .await
    }

    async fn get_usage_report(
        &self,
        request: Request<wire::GetUsageReportRequest>,
    ) -> RpcResult<wire::GetUsageReportResponse> {
        rpc("GetUsageReport", request, async |r| {
            let needs: &[Capability] = if r.period.is_some() {
                &[Capability::HistoricalUsage]
            } else {
                &[Capability::UsageReport]
            };
            let inst = self.instance(r.instance, needs)?;
            let backend_ids = required_ids("backend_ids", r.backend_ids)?;
            let period = match r.period {
                None => None,
                Some(p) => {
                    let month = u32::try_from(p.month).ok().filter(|m| (1..=12).contains(m));
                    match month {
                        Some(month) if (1970..=9999).contains(&p.year) => Some(BillingPeriod {
                            year: p.year,
                            month,
                        }),
                        _ => {
                            return Err(BackendError::invalid_field(
                                "period",
                                format!("{}-{} is not a valid month", p.year, p.month),
                            ));
                        }
                    }
                }
            };
            let timezone = Some(optional_id("timezone", r.timezone)?).filter(|t| !t.is_empty());
            let usage = inst
                .backend
                .usage_report(UsageQuery {
                    backend_ids,
                    period,
                    timezone,
                })
                .await?;
            Ok(wire::GetUsageReportResponse {
                resources: usage.into_iter().map(convert::resource_usage).collect(),
            })
        })
        .await
    }

    async fn get_username(
        &self,
        request: Request<wire::GetUsernameRequest>,
    ) -> RpcResult<wire::GetUsernameResponse> {
        rpc("GetUsername", request, async |r| {
            let inst = self.instance(r.instance, &[Capability::Usernames])?;
            let user = convert::offering_user("user", r.user)?;
            let username = inst.backend.get_username(user).await?.unwrap_or_default();
            Ok(wire::GetUsernameResponse { username })
        })
        .await
    }

    async fn generate_username(
        &self,
        request: Request<wire::GenerateUsernameRequest>,
    ) -> RpcResult<wire::GenerateUsernameResponse> {
        rpc("GenerateUsername", request, async |r| {
            let inst = self.instance(r.instance, &[Capability::Usernames])?;
            let user = convert::offering_user("user", r.user)?;
            let username = inst.backend.generate_username(user).await?;
            if username.is_empty() {
                return Err(BackendError::command_failed(
                    "backend generated an empty username",
                ));
            }
            Ok(wire::GenerateUsernameResponse { username })
        })
        .await
    }

    async fn evaluate_order(
        &self,
        request: Request<wire::EvaluateOrderRequest>,
    ) -> RpcResult<wire::EvaluateOrderResponse> {
        rpc("EvaluateOrder", request, async |r| {
            let inst = self.instance(r.instance, &[Capability::OrderEvaluation])?;
            let order = convert::order(r.order)?;
            let d = inst.backend.evaluate_order(order).await?;
            Ok(wire::EvaluateOrderResponse {
                decision: d.decision as i32,
                message: d.message,
            })
        })
        .await
    }

    type WatchStream = futures::stream::BoxStream<'static, Result<wire::WatchResponse, Status>>;

    async fn watch(&self, request: Request<wire::WatchRequest>) -> RpcResult<Self::WatchStream> {
        rpc("Watch", request, async |r| {
            let inst = self.instance(r.instance, &[Capability::Watch])?;
            let mut ids = Vec::with_capacity(r.backend_ids.len());
            for id in r.backend_ids {
                ids.push(required_id("backend_ids", id)?);
            }
            let events = inst.backend.watch(ids).await?;
            let stream: Self::WatchStream = events
                .map(|e| match e {
                    Ok(e) => Ok(wire::WatchResponse {
                        backend_id: e.backend_id,
                        operation_id: e.operation_id.unwrap_or_default(),
                        state: e.state as i32,
                        message: e.message,
                        time: Some(convert::to_timestamp(e.time)),
                    }),
                    Err(e) => Err(e.to_status()),
                })
                .boxed();
            Ok(stream)
        })
        .await
    }

    async fn apply_periodic_settings(
        &self,
        request: Request<wire::ApplyPeriodicSettingsRequest>,
    ) -> RpcResult<wire::ApplyPeriodicSettingsResponse> {
        rpc("ApplyPeriodicSettings", request, async |r| {
            let instance = r.instance.clone();
            let inst = self.instance(r.instance, &[Capability::PeriodicSettings])?;
            let backend_id = required_id("backend_id", r.backend_id)?;
            let settings = r
                .settings
                .ok_or_else(|| BackendError::invalid_field("settings", "is required"))?;
            let settings = convert::struct_to_json(Some(settings));
            let _guard = self.lock(&instance, &backend_id).await;
            let actions = inst
                .backend
                .apply_periodic_settings(&backend_id, settings)
                .await?;
            Ok(wire::ApplyPeriodicSettingsResponse { actions })
        })
        .await
    }
}
