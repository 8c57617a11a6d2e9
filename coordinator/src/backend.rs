//! The backend client handle: one type whatever the transport (a remote
//! server over mutual TLS, or an in-process registry over a duplex channel).
//!
//! Read top to bottom, every call goes through:
//! 1. a capability check (an RPC the backend does not advertise is never sent);
//! 2. a deadline per call class (reads short, mutations and usage long);
//! 3. retries with capped exponential backoff on retryable codes only
//!    (`UNAVAILABLE`, `ABORTED`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`);
//! 4. the channel's concurrency limit, and tonic's reconnect with backoff.
//!
//! At most one mutating call per resource is in flight ([`BackendHandle::lock`]).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use tracing::Instrument;
use waldur_backend_proto::v1::backend_service_client::BackendServiceClient;
use waldur_backend_proto::v1::{self as wire, Capability};

use crate::config::{BackendConfig, TimeoutConfig};

/// Deadline classes.
#[derive(Debug, Clone, Copy)]
pub enum CallClass {
    /// Identity and reads.
    Read,
    /// Mutations and usage reports.
    Mutate,
}

/// A failed backend call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("backend {backend}: {rpc}: {code:?}: {message}")]
pub struct BackendCallError {
    /// Backend name (config key).
    pub backend: String,
    /// The RPC.
    pub rpc: &'static str,
    /// gRPC code.
    pub code: Code,
    /// ErrorInfo reason, if any.
    pub reason: String,
    /// The backend's message.
    pub message: String,
    /// ErrorInfo metadata.
    pub metadata: HashMap<String, String>,
}

impl BackendCallError {
    /// Codes that mean "try again later; nothing is wrong with the request".
    pub fn is_retryable(&self) -> bool {
        retryable(self.code)
    }
}

fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Aborted | Code::DeadlineExceeded | Code::ResourceExhausted
    )
}

/// Statuses that did not come from the backend's judgement of the request:
/// * a call that failed below gRPC (the connection broke, the server died
///   mid-call) comes back from tonic as UNKNOWN with the transport error as
///   its source (a status the server sent has no source): UNAVAILABLE;
/// * a server that gave up at the call's deadline answers CANCELLED
///   ("Timeout expired"; the coordinator never cancels its own calls):
///   DEADLINE_EXCEEDED.
///
/// Both are retried: the requests are idempotent, and a hung or vanished
/// backend must never err an order.
fn not_the_backends_answer(s: Status) -> Status {
    match s.code() {
        Code::Unknown if std::error::Error::source(&s).is_some() => {
            Status::unavailable(format!("connection to the backend lost: {}", s.message()))
        }
        Code::Cancelled => {
            Status::deadline_exceeded(format!("the backend gave up: {}", s.message()))
        }
        _ => s,
    }
}

/// A backend server instance as the coordinator sees it.
#[derive(Clone)]
pub struct BackendHandle {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    instance: String,
    client: BackendServiceClient<Channel>,
    read_timeout: Duration,
    mutate_timeout: Duration,
    capabilities: OnceCell<BTreeSet<i32>>,
    info: OnceCell<wire::GetBackendInfoResponse>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendHandle")
            .field("name", &self.inner.name)
            .field("instance", &self.inner.instance)
            .finish()
    }
}

impl BackendHandle {
    /// A handle to a remote backend over mutual TLS. Connects lazily: a
    /// backend that is down at start is retried on every call.
    pub fn remote(
        name: &str,
        config: &BackendConfig,
        timeouts: &TimeoutConfig,
    ) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| format!("backends.{name}.endpoint: {e}"))?;
        let host = endpoint.uri().host().unwrap_or("localhost").to_owned();
        let server_name = config.server_name.clone().unwrap_or(host);
        let tls = config
            .tls
            .client_config(&server_name)
            .map_err(|e| format!("backends.{name}.tls: {e}"))?;
        let channel = endpoint
            .tls_config(tls)
            .map_err(|e| format!("backends.{name}.tls: {e}"))?
            .connect_timeout(Duration::from_secs(timeouts.backend_connect_seconds.max(1)))
            .concurrency_limit(config.max_concurrency.max(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(Self::from_channel(
            name,
            &config.instance,
            channel,
            timeouts,
        ))
    }

    /// A handle over an existing channel (in-process backends, tests).
    pub fn from_channel(
        name: &str,
        instance: &str,
        channel: Channel,
        timeouts: &TimeoutConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                instance: instance.to_owned(),
                client: BackendServiceClient::new(channel),
                read_timeout: Duration::from_secs(timeouts.backend_read_seconds.max(1)),
                mutate_timeout: Duration::from_secs(timeouts.backend_mutate_seconds.max(1)),
                capabilities: OnceCell::new(),
                info: OnceCell::new(),
                locks: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Backend name (config key).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Instance name on the server.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    fn error(&self, rpc: &'static str, status: &Status) -> BackendCallError {
        let info = status.get_details_error_info();
        BackendCallError {
            backend: self.inner.name.clone(),
            rpc,
            code: status.code(),
            reason: info.as_ref().map(|i| i.reason.clone()).unwrap_or_default(),
            message: status.message().to_owned(),
            metadata: info.map(|i| i.metadata).unwrap_or_default(),
        }
    }

    /// Runs one RPC with its deadline and retries.
    async fn call<Req, Resp, F, Fut>(
        &self,
        rpc: &'static str,
        class: CallClass,
        request: Req,
        send: F,
    ) -> Result<Resp, BackendCallError>
    where
        Req: Clone,
        F: Fn(BackendServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let deadline = match class {
            CallClass::Read => self.inner.read_timeout,
            CallClass::Mutate => self.inner.mutate_timeout,
        };
        const ATTEMPTS: u32 = 3;
        let span = tracing::info_span!(
            "backend_rpc",
            otel.kind = "client",
            rpc.method = rpc,
            backend = %self.inner.name,
            rpc.code = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut req = Request::new(request.clone());
                req.set_timeout(deadline);
                // The backend server continues this span's trace.
                waldur_runtime::telemetry::inject_grpc(req.metadata_mut());
                let result =
                    match tokio::time::timeout(deadline, send(self.inner.client.clone(), req)).await {
                        Ok(r) => r.map_err(not_the_backends_answer),
                        Err(_) => Err(Status::deadline_exceeded(format!(
                            "no answer within {deadline:?}"
                        ))),
                    };
                match result {
                    Ok(resp) => return Ok(resp.into_inner()),
                    Err(s) if retryable(s.code()) && attempt < ATTEMPTS => {
                        let wait = Duration::from_millis(100 * (1 << attempt));
                        tracing::debug!(backend = %self.inner.name, rpc, code = ?s.code(), attempt, "retrying backend call");
                        tokio::time::sleep(wait).await;
                    }
                    Err(s) => return Err(s),
                }
            }
        }
        .instrument(span.clone())
        .await;
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        span.record("rpc.code", format!("{code:?}"));
        crate::metrics::backend_rpc(&self.inner.name, rpc, code, started.elapsed());
        result.map_err(|s| self.error(rpc, &s))
    }

    /// Capabilities, fetched once per process (they must not change).
    pub async fn capabilities(&self) -> Result<&BTreeSet<i32>, BackendCallError> {
        self.inner
            .capabilities
            .get_or_try_init(|| async {
                let r = self
                    .call(
                        "GetCapabilities",
                        CallClass::Read,
                        wire::GetCapabilitiesRequest {
                            instance: self.inner.instance.clone(),
                        },
                        |mut c, r| async move { c.get_capabilities(r).await },
                    )
                    .await?;
                Ok(r.capabilities.into_iter().collect())
            })
            .await
    }

    /// Whether the backend advertises `cap`.
    pub async fn has(&self, cap: Capability) -> Result<bool, BackendCallError> {
        Ok(self.capabilities().await?.contains(&(cap as i32)))
    }

    async fn require(&self, cap: Capability, rpc: &'static str) -> Result<(), BackendCallError> {
        if self.has(cap).await? {
            return Ok(());
        }
        Err(BackendCallError {
            backend: self.inner.name.clone(),
            rpc,
            code: Code::Unimplemented,
            reason: waldur_backend_proto::reason::CAPABILITY_NOT_SUPPORTED.into(),
            message: format!("the backend does not advertise {}", cap.as_str_name()),
            metadata: HashMap::new(),
        })
    }

    /// Serialises mutating calls on one resource.
    pub async fn lock(&self, backend_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() > 10_000 {
                map.retain(|_, l| Arc::strong_count(l) > 1);
            }
            map.entry(backend_id.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Backend info, fetched once.
    pub async fn info(&self) -> Result<&wire::GetBackendInfoResponse, BackendCallError> {
        self.inner
            .info
            .get_or_try_init(|| {
                self.call(
                    "GetBackendInfo",
                    CallClass::Read,
                    wire::GetBackendInfoRequest {
                        instance: self.inner.instance.clone(),
                    },
                    |mut c, r| async move { c.get_backend_info(r).await },
                )
            })
            .await
    }

    /// Probe.
    pub async fn probe(&self) -> Result<wire::ProbeResponse, BackendCallError> {
        self.call(
            "Probe",
            CallClass::Read,
            wire::ProbeRequest {
                instance: self.inner.instance.clone(),
            },
            |mut c, r| async move { c.probe(r).await },
        )
        .await
    }

    /// Component definitions.
    pub async fn components(&self) -> Result<Vec<wire::Component>, BackendCallError> {
        let r = self
            .call(
                "ListComponents",
                CallClass::Read,
                wire::ListComponentsRequest {
                    instance: self.inner.instance.clone(),
                },
                |mut c, r| async move { c.list_components(r).await },
            )
            .await?;
        Ok(r.components)
    }

    /// Backend id for a base name.
    pub async fn generate_backend_id(
        &self,
        base_name: &str,
        resource: &wire::ResourceContext,
    ) -> Result<String, BackendCallError> {
        let r = self
            .call(
                "GenerateBackendId",
                CallClass::Read,
                wire::GenerateBackendIdRequest {
                    instance: self.inner.instance.clone(),
                    base_name: base_name.to_owned(),
                    resource: Some(resource.clone()),
                },
                |mut c, r| async move { c.generate_backend_id(r).await },
            )
            .await?;
        Ok(r.backend_id)
    }

    /// Creates (or re-issues the creation of) a resource.
    pub async fn create_resource(
        &self,
        mut request: wire::CreateResourceRequest,
    ) -> Result<wire::CreateResourceResponse, BackendCallError> {
        self.require(Capability::Resources, "CreateResource")
            .await?;
        request.instance = self.inner.instance.clone();
        self.call(
            "CreateResource",
            CallClass::Mutate,
            request,
            |mut c, r| async move { c.create_resource(r).await },
        )
        .await
    }

    /// The resource, or `None` when the backend does not have it.
    pub async fn get_resource(
        &self,
        backend_id: &str,
    ) -> Result<Option<wire::ResourceInfo>, BackendCallError> {
        self.require(Capability::Resources, "GetResource").await?;
        let r = self
            .call(
                "GetResource",
                CallClass::Read,
                wire::GetResourceRequest {
                    instance: self.inner.instance.clone(),
                    backend_id: backend_id.to_owned(),
                },
                |mut c, r| async move { c.get_resource(r).await },
            )
            .await;
        match r {
            Ok(r) => Ok(r.resource),
            Err(e)
                if e.code == Code::NotFound
                    && e.reason == waldur_backend_proto::reason::RESOURCE_NOT_FOUND =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a resource (re-issue while not ready).
    pub async fn delete_resource(
        &self,
        backend_id: &str,
        resource: Option<wire::ResourceContext>,
    ) -> Result<wire::DeleteResourceResponse, BackendCallError> {
        self.require(Capability::Resources, "DeleteResource")
            .await?;
        self.call(
            "DeleteResource",
            CallClass::Mutate,
            wire::DeleteResourceRequest {
                instance: self.inner.instance.clone(),
                backend_id: backend_id.to_owned(),
                mode: wire::DeletionMode::Unspecified as i32,
                resource,
            },
            |mut c, r| async move { c.delete_resource(r).await },
        )
        .await
    }

    /// Sets a resource's limits (re-issue while not ready).
    pub async fn set_resource_limits(
        &self,
        backend_id: &str,
        limits: std::collections::BTreeMap<String, i64>,
        resource: Option<wire::ResourceContext>,
    ) -> Result<wire::SetResourceLimitsResponse, BackendCallError> {
        self.require(Capability::ResourceLimits, "SetResourceLimits")
            .await?;
        self.call(
            "SetResourceLimits",
            CallClass::Mutate,
            wire::SetResourceLimitsRequest {
                instance: self.inner.instance.clone(),
                backend_id: backend_id.to_owned(),
                limits: limits.into_iter().collect(),
                resource,
            },
            |mut c, r| async move { c.set_resource_limits(r).await },
        )
        .await
    }

    /// Adds users to a resource.
    pub async fn add_users(
        &self,
        backend_id: &str,
        users: Vec<wire::User>,
        homedir_umask: &str,
    ) -> Result<Vec<wire::UserResult>, BackendCallError> {
        self.require(Capability::Membership, "AddUsers").await?;
        let r = self
            .call(
                "AddUsers",
                CallClass::Mutate,
                wire::AddUsersRequest {
                    instance: self.inner.instance.clone(),
                    backend_id: backend_id.to_owned(),
                    users,
                    homedir_umask: homedir_umask.to_owned(),
                },
                |mut c, r| async move { c.add_users(r).await },
            )
            .await?;
        Ok(r.results)
    }

    /// Decides a pending order; ACCEPT when the backend does not evaluate orders.
    pub async fn evaluate_order(
        &self,
        order: wire::Order,
    ) -> Result<wire::EvaluateOrderResponse, BackendCallError> {
        if !self.has(Capability::OrderEvaluation).await? {
            return Ok(wire::EvaluateOrderResponse {
                decision: wire::OrderDecision::Accept as i32,
                message: String::new(),
            });
        }
        self.call(
            "EvaluateOrder",
            CallClass::Read,
            wire::EvaluateOrderRequest {
                instance: self.inner.instance.clone(),
                order: Some(order),
            },
            |mut c, r| async move { c.evaluate_order(r).await },
        )
        .await
    }

    /// Usage of many resources for the current month (`period` None) or a
    /// past one; resources the backend lacks are left out.
    pub async fn usage_report(
        &self,
        backend_ids: Vec<String>,
        period: Option<crate::clock::Month>,
        timezone: &str,
    ) -> Result<Vec<wire::ResourceUsage>, BackendCallError> {
        self.require(Capability::UsageReport, "GetUsageReport")
            .await?;
        if period.is_some() {
            self.require(Capability::HistoricalUsage, "GetUsageReport")
                .await?;
        }
        let r = self
            .call(
                "GetUsageReport",
                CallClass::Mutate,
                wire::GetUsageReportRequest {
                    instance: self.inner.instance.clone(),
                    backend_ids,
                    period: period.map(|m| wire::BillingPeriod {
                        year: i32::from(m.year),
                        month: i32::from(m.month),
                    }),
                    timezone: timezone.to_owned(),
                },
                |mut c, r| async move { c.get_usage_report(r).await },
            )
            .await?;
        Ok(r.resources)
    }

    /// Removes users from a resource.
    pub async fn remove_users(
        &self,
        backend_id: &str,
        usernames: Vec<String>,
    ) -> Result<Vec<wire::UserResult>, BackendCallError> {
        self.require(Capability::Membership, "RemoveUsers").await?;
        let r = self
            .call(
                "RemoveUsers",
                CallClass::Mutate,
                wire::RemoveUsersRequest {
                    instance: self.inner.instance.clone(),
                    backend_id: backend_id.to_owned(),
                    usernames,
                },
                |mut c, r| async move { c.remove_users(r).await },
            )
            .await?;
        Ok(r.results)
    }

    /// Brings existing members' roles in line with Waldur.
    pub async fn reconcile_user_roles(
        &self,
        backend_id: &str,
        users: Vec<wire::User>,
    ) -> Result<Vec<wire::UserResult>, BackendCallError> {
        self.require(Capability::RoleReconciliation, "ReconcileUserRoles")
            .await?;
        let r = self
            .call(
                "ReconcileUserRoles",
                CallClass::Mutate,
                wire::ReconcileUserRolesRequest {
                    instance: self.inner.instance.clone(),
                    backend_id: backend_id.to_owned(),
                    users,
                },
                |mut c, r| async move { c.reconcile_user_roles(r).await },
            )
            .await?;
        Ok(r.results)
    }

    /// Sets the access level; true when it changed.
    pub async fn set_resource_access(
        &self,
        backend_id: &str,
        access: wire::AccessLevel,
    ) -> Result<bool, BackendCallError> {
        let cap = match access {
            wire::AccessLevel::Paused => Capability::Pause,
            wire::AccessLevel::Downscaled => Capability::Downscale,
            _ if self.has(Capability::Pause).await? => Capability::Pause,
            _ => Capability::Downscale,
        };
        self.require(cap, "SetResourceAccess").await?;
        let r = self
            .call(
                "SetResourceAccess",
                CallClass::Mutate,
                wire::SetResourceAccessRequest {
                    instance: self.inner.instance.clone(),
                    backend_id: backend_id.to_owned(),
                    access: access as i32,
                },
                |mut c, r| async move { c.set_resource_access(r).await },
            )
            .await?;
        Ok(r.changed)
    }

    /// Backend metadata of a resource.
    pub async fn get_resource_metadata(
        &self,
        backend_id: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, BackendCallError> {
        self.require(Capability::Metadata, "GetResourceMetadata")
            .await?;
        let r = self
            .call(
                "GetResourceMetadata",
                CallClass::Read,
                wire::GetResourceMetadataRequest {
                    instance: self.inner.instance.clone(),
                    backend_id: backend_id.to_owned(),
                },
                |mut c, r| async move { c.get_resource_metadata(r).await },
            )
            .await?;
        Ok(waldur_backend_api::convert::struct_to_json(r.metadata))
    }

    /// Limits as the backend enforces them.
    pub async fn get_resource_limits(
        &self,
        backend_id: &str,
    ) -> Result<std::collections::BTreeMap<String, i64>, BackendCallError> {
        self.require(Capability::ResourceLimits, "GetResourceLimits")
            .await?;
        let r = self
            .call(
                "GetResourceLimits",
                CallClass::Read,
                wire::GetResourceLimitsRequest {
                    instance: self.inner.instance.clone(),
                    backend_id: backend_id.to_owned(),
                },
                |mut c, r| async move { c.get_resource_limits(r).await },
            )
            .await?;
        Ok(r.limits.into_iter().collect())
    }

    /// Per-user limits of a resource.
    pub async fn get_user_limits(
        &self,
        backend_id: &str,
    ) -> Result<
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>,
        BackendCallError,
    > {
        self.require(Capability::UserLimits, "GetUserLimits")
            .await?;
        let r = self
            .call(
                "GetUserLimits",
                CallClass::Read,
                wire::GetUserLimitsRequest {
                    instance: self.inner.instance.clone(),
                    backend_id: backend_id.to_owned(),
                },
                |mut c, r| async move { c.get_user_limits(r).await },
            )
            .await?;
        Ok(r.users
            .into_iter()
            .map(|u| (u.username, u.limits.into_iter().collect()))
            .collect())
    }

    /// Sets (or, with an empty map, removes) one user's limits.
    pub async fn set_user_limits(
        &self,
        backend_id: &str,
        username: &str,
        limits: std::collections::BTreeMap<String, i64>,
    ) -> Result<(), BackendCallError> {
        self.require(Capability::UserLimits, "SetUserLimits")
            .await?;
        self.call(
            "SetUserLimits",
            CallClass::Mutate,
            wire::SetUserLimitsRequest {
                instance: self.inner.instance.clone(),
                backend_id: backend_id.to_owned(),
                username: username.to_owned(),
                limits: limits.into_iter().collect(),
            },
            |mut c, r| async move { c.set_user_limits(r).await },
        )
        .await?;
        Ok(())
    }

    /// Creates home directories.
    pub async fn create_home_directories(
        &self,
        usernames: Vec<String>,
        umask: &str,
    ) -> Result<Vec<wire::UserResult>, BackendCallError> {
        self.require(Capability::HomeDirectories, "CreateHomeDirectories")
            .await?;
        let r = self
            .call(
                "CreateHomeDirectories",
                CallClass::Mutate,
                wire::CreateHomeDirectoriesRequest {
                    instance: self.inner.instance.clone(),
                    usernames,
                    umask: umask.to_owned(),
                },
                |mut c, r| async move { c.create_home_directories(r).await },
            )
            .await?;
        Ok(r.results)
    }

    /// The username the backend knows for an offering user ("" if none).
    pub async fn get_username(&self, user: wire::OfferingUser) -> Result<String, BackendCallError> {
        self.require(Capability::Usernames, "GetUsername").await?;
        let r = self
            .call(
                "GetUsername",
                CallClass::Read,
                wire::GetUsernameRequest {
                    instance: self.inner.instance.clone(),
                    user: Some(user),
                },
                |mut c, r| async move { c.get_username(r).await },
            )
            .await?;
        Ok(r.username)
    }

    /// Generates (idempotently) the username of an offering user.
    pub async fn generate_username(
        &self,
        user: wire::OfferingUser,
    ) -> Result<String, BackendCallError> {
        self.require(Capability::Usernames, "GenerateUsername")
            .await?;
        let r = self
            .call(
                "GenerateUsername",
                CallClass::Mutate,
                wire::GenerateUsernameRequest {
                    instance: self.inner.instance.clone(),
                    user: Some(user),
                },
                |mut c, r| async move { c.generate_username(r).await },
            )
            .await?;
        Ok(r.username)
    }

    /// Applies periodic settings; returns what was done.
    pub async fn apply_periodic_settings(
        &self,
        backend_id: &str,
        settings: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<String>, BackendCallError> {
        self.require(Capability::PeriodicSettings, "ApplyPeriodicSettings")
            .await?;
        let r = self
            .call(
                "ApplyPeriodicSettings",
                CallClass::Mutate,
                wire::ApplyPeriodicSettingsRequest {
                    instance: self.inner.instance.clone(),
                    backend_id: backend_id.to_owned(),
                    settings: Some(waldur_backend_api::convert::json_to_struct(settings)),
                },
                |mut c, r| async move { c.apply_periodic_settings(r).await },
            )
            .await?;
        Ok(r.actions)
    }

    /// Every resource the backend has (all pages).
    pub async fn list_resources(&self) -> Result<Vec<wire::ResourceInfo>, BackendCallError> {
        self.require(Capability::ListResources, "ListResources")
            .await?;
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let r = self
                .call(
                    "ListResources",
                    CallClass::Read,
                    wire::ListResourcesRequest {
                        instance: self.inner.instance.clone(),
                        parent_id: String::new(),
                        page_size: 500,
                        page_token: token.clone(),
                    },
                    |mut c, r| async move { c.list_resources(r).await },
                )
                .await?;
            out.extend(r.resources);
            if r.next_page_token.is_empty() || r.next_page_token == token {
                return Ok(out);
            }
            token = r.next_page_token;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_or_a_timed_out_call_is_retryable_and_a_servers_unknown_is_not() {
        let broken = Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert_eq!(broken.code(), Code::Unknown);
        assert_eq!(not_the_backends_answer(broken).code(), Code::Unavailable);
        let timed_out = Status::cancelled("Timeout expired");
        assert_eq!(
            not_the_backends_answer(timed_out).code(),
            Code::DeadlineExceeded
        );
        let sent = Status::unknown("the backend did not say");
        assert_eq!(not_the_backends_answer(sent).code(), Code::Unknown);
    }
}
