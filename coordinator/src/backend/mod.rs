//! The backend client: one type whatever the transport (a remote server
//! over mutual TLS, or an in-process registry over a duplex channel), and
//! the only place in the coordinator that speaks the wire types. Callers
//! give and get the contract's domain types (`waldur_backend_api::types`);
//! the instance name is filled in here.
//!
//! Read top to bottom, every call goes through:
//! 1. a capability check (an RPC the backend does not advertise is never sent);
//! 2. one deadline per call, by class (reads short, mutations and usage
//!    long), shared by all its attempts and sent to the server as
//!    `grpc-timeout`;
//! 3. retries with [`RETRY`] on retryable codes only (`UNAVAILABLE`,
//!    `ABORTED`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`);
//! 4. the channel's concurrency limit, and tonic's reconnect with backoff.
//!
//! Calls that change a resource exist only on a [`ResourceSession`], which
//! holds that resource's lock ([`BackendHandle::lock`]): at most one
//! mutating sequence per resource is in flight, and no caller can forget it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use waldur_runtime::span;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tracing::Instrument;
use waldur_backend_api::convert::{from_wire, struct_to_json, to_wire};
use waldur_backend_api::types::*;
use waldur_backend_api::{BackendError, reason};
use waldur_backend_proto::v1 as wire;
use waldur_backend_proto::v1::backend_service_client::BackendServiceClient;
use waldur_runtime::{KeyedLock, RetryPolicy};

use crate::config::{BackendConfig, TimeoutConfig};

mod error;
mod session;
pub mod tunnel;

use error::not_the_backends_answer;
pub(crate) use error::retryable;
pub use error::{BackendCallError, ConnectError};
pub use session::ResourceSession;
pub use tunnel::{LinkStatus, TunnelHub};
/// Retries of one backend call: three attempts, 200 ms then 400 ms apart
/// (plus jitter), within the call's one deadline.
pub const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    initial_backoff: Duration::from_millis(200),
    max_backoff: Duration::from_secs(2),
};

/// Page size asked of ListResources.
const LIST_PAGE_SIZE: i32 = 500;

/// Deadline classes.
#[derive(Debug, Clone, Copy)]
enum CallClass {
    /// Identity and reads.
    Read,
    /// Mutations and usage reports.
    Mutate,
}

/// A backend server instance as the coordinator sees it.
#[derive(Clone)]
pub struct BackendHandle {
    inner: Arc<Inner>,
}

/// How calls reach the backend server.
enum Transport {
    /// A channel of our own: we dial the server (or host it in process).
    Direct(BackendServiceClient<Channel>),
    /// The server dials us: whatever connection the tunnel holds for it now.
    Tunnel(Arc<TunnelHub>),
}

struct Inner {
    name: String,
    instance: String,
    transport: Transport,
    read_timeout: Duration,
    mutate_timeout: Duration,
    capabilities: OnceCell<HashSet<Capability>>,
    /// Keys of prepaid components, known once components were read.
    prepaid: OnceCell<std::collections::BTreeSet<String>>,
    info: OnceCell<BackendInfo>,
    locks: KeyedLock<String>,
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
    ) -> Result<Self, ConnectError> {
        let endpoint = Endpoint::from_shared(config.endpoint.clone()).map_err(|source| {
            ConnectError::Endpoint {
                name: name.to_owned(),
                source,
            }
        })?;
        let host = endpoint.uri().host().unwrap_or("localhost").to_owned();
        let server_name = config.server_name.clone().unwrap_or(host);
        let files = config.tls.as_ref().ok_or_else(|| ConnectError::Tls {
            name: name.to_owned(),
            source: waldur_runtime::TlsError::Parse(
                "tls is required for a direct connection".into(),
            ),
        })?;
        let tls = files
            .client_config(&server_name)
            .map_err(|source| ConnectError::Tls {
                name: name.to_owned(),
                source,
            })?;
        let channel = endpoint
            .tls_config(tls)
            .map_err(|source| ConnectError::TlsConfig {
                name: name.to_owned(),
                source,
            })?
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
        Self::with_transport(
            name,
            instance,
            Transport::Direct(BackendServiceClient::new(channel)),
            timeouts,
        )
    }

    /// A handle to a backend whose server dials the tunnel `hub`.
    pub fn tunneled(
        name: &str,
        config: &BackendConfig,
        timeouts: &TimeoutConfig,
        hub: Arc<TunnelHub>,
    ) -> Self {
        Self::with_transport(name, &config.instance, Transport::Tunnel(hub), timeouts)
    }

    fn with_transport(
        name: &str,
        instance: &str,
        transport: Transport,
        timeouts: &TimeoutConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                instance: instance.to_owned(),
                transport,
                read_timeout: Duration::from_secs(timeouts.backend_read_seconds.max(1)),
                mutate_timeout: Duration::from_secs(timeouts.backend_mutate_seconds.max(1)),
                capabilities: OnceCell::new(),
                prepaid: OnceCell::new(),
                info: OnceCell::new(),
                locks: KeyedLock::default(),
            }),
        }
    }

    /// Backend name (config key).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The tunnel connection's state, for a backend whose server dials in;
    /// `None` for a direct connection.
    pub fn link_status(&self) -> Option<LinkStatus> {
        match &self.inner.transport {
            Transport::Direct(_) => None,
            Transport::Tunnel(hub) => Some(hub.status(&self.inner.name)),
        }
    }

    /// The client for one call: the tunnel's current connection, or
    /// UNAVAILABLE while the server is not connected (orders wait, as with
    /// an unreachable server).
    fn client(&self) -> Result<BackendServiceClient<Channel>, Status> {
        match &self.inner.transport {
            Transport::Direct(c) => Ok(c.clone()),
            Transport::Tunnel(hub) => hub
                .channel(&self.inner.name)
                .map(BackendServiceClient::new)
                .ok_or_else(|| {
                    Status::unavailable(format!(
                        "backend {} connects through the tunnel and its server is not connected",
                        self.inner.name
                    ))
                }),
        }
    }

    /// Instance name on the server.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    fn instance_name(&self) -> String {
        self.inner.instance.clone()
    }

    fn error(&self, rpc: &'static str, status: &Status) -> BackendCallError {
        let e = BackendError::from_status(status);
        BackendCallError {
            backend: self.inner.name.clone(),
            rpc,
            code: e.code,
            reason: e.reason,
            message: e.message,
            metadata: e.metadata.into_iter().collect(),
        }
    }

    /// Runs one RPC within its deadline, retrying retryable failures.
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
        let budget = match class {
            CallClass::Read => self.inner.read_timeout,
            CallClass::Mutate => self.inner.mutate_timeout,
        };
        let deadline = Instant::now() + budget;
        let span = tracing::info_span!(
            span::BACKEND_CALL,
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
                let left = deadline.saturating_duration_since(Instant::now());
                let mut req = Request::new(request.clone());
                // The server stops at the same moment the client does.
                req.set_timeout(left);
                // The backend server continues this span's trace.
                waldur_runtime::telemetry::inject_grpc(req.metadata_mut());
                let result = match self.client() {
                    Err(s) => Err(s),
                    Ok(client) => match tokio::time::timeout_at(deadline, send(client, req)).await {
                        Ok(r) => r.map_err(not_the_backends_answer),
                        Err(_) => Err(Status::deadline_exceeded(format!(
                            "no answer within {budget:?}"
                        ))),
                    },
                };
                match result {
                    Ok(resp) => return Ok(resp.into_inner()),
                    Err(s) if retryable(s.code()) && RETRY.again(attempt) => {
                        let wait = RETRY.backoff(attempt);
                        if Instant::now() + wait >= deadline {
                            return Err(s);
                        }
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
        span.record(span::field::RPC_CODE, format!("{code:?}"));
        crate::metrics::backend_rpc(&self.inner.name, rpc, code, started.elapsed());
        result.map_err(|s| self.error(rpc, &s))
    }

    /// Capabilities, fetched once per process (they must not change).
    pub async fn capabilities(&self) -> Result<&HashSet<Capability>, BackendCallError> {
        self.inner
            .capabilities
            .get_or_try_init(|| async {
                let r = self
                    .call(
                        "GetCapabilities",
                        CallClass::Read,
                        wire::GetCapabilitiesRequest {
                            instance: self.instance_name(),
                        },
                        |mut c, r| async move { c.get_capabilities(r).await },
                    )
                    .await?;
                Ok(from_wire::capabilities(r.capabilities))
            })
            .await
    }

    /// Whether any component is prepaid (billed in advance for the months
    /// a resource runs), so its limits depend on the end date. Read once.
    pub async fn prepaid(&self) -> Result<bool, BackendCallError> {
        Ok(!self.prepaid_components().await?.is_empty())
    }

    /// Keys of the prepaid components. Their backend values cover the
    /// months a resource runs, so they are not Waldur's limits.
    pub async fn prepaid_components(
        &self,
    ) -> Result<&std::collections::BTreeSet<String>, BackendCallError> {
        self.inner
            .prepaid
            .get_or_try_init(|| async {
                Ok(self
                    .components()
                    .await?
                    .into_iter()
                    .filter(|c| c.is_prepaid || c.accounting_type() == AccountingType::OneTime)
                    .map(|c| c.key)
                    .collect())
            })
            .await
    }

    /// Whether the backend advertises `cap`.
    pub async fn has(&self, cap: Capability) -> Result<bool, BackendCallError> {
        Ok(self.capabilities().await?.contains(&cap))
    }

    async fn require(&self, cap: Capability, rpc: &'static str) -> Result<(), BackendCallError> {
        if self.has(cap).await? {
            return Ok(());
        }
        Err(BackendCallError {
            backend: self.inner.name.clone(),
            rpc,
            code: Code::Unimplemented,
            reason: reason::CAPABILITY_NOT_SUPPORTED.into(),
            message: format!("the backend does not advertise {}", cap.as_str_name()),
            metadata: HashMap::new(),
        })
    }

    /// Takes the resource's lock: the calls that change it are on the
    /// session, which holds the lock until dropped.
    pub async fn lock(&self, backend_id: &str) -> ResourceSession {
        ResourceSession {
            _guard: self.inner.locks.lock(backend_id.to_owned()).await,
            handle: self.clone(),
            backend_id: backend_id.to_owned(),
        }
    }

    /// Backend identity, fetched once.
    pub async fn info(&self) -> Result<&BackendInfo, BackendCallError> {
        self.inner
            .info
            .get_or_try_init(|| async {
                let r = self
                    .call(
                        "GetBackendInfo",
                        CallClass::Read,
                        wire::GetBackendInfoRequest {
                            instance: self.instance_name(),
                        },
                        |mut c, r| async move { c.get_backend_info(r).await },
                    )
                    .await?;
                Ok(from_wire::backend_info(r))
            })
            .await
    }

    /// Readiness.
    pub async fn probe(&self) -> Result<Probe, BackendCallError> {
        let r = self
            .call(
                "Probe",
                CallClass::Read,
                wire::ProbeRequest {
                    instance: self.instance_name(),
                },
                |mut c, r| async move { c.probe(r).await },
            )
            .await?;
        Ok(from_wire::probe(r))
    }

    /// The backend's self checks, or `None` when it has none.
    pub async fn diagnostics(&self) -> Result<Option<Diagnostics>, BackendCallError> {
        if !self.has(Capability::Diagnostics).await? {
            return Ok(None);
        }
        let r = self
            .call(
                "GetDiagnostics",
                // Self checks run several commands on a busy cluster.
                CallClass::Mutate,
                wire::GetDiagnosticsRequest {
                    instance: self.instance_name(),
                },
                |mut c, r| async move { c.get_diagnostics(r).await },
            )
            .await?;
        Ok(Some(from_wire::diagnostics(r)))
    }

    /// Component definitions.
    pub async fn components(&self) -> Result<Vec<Component>, BackendCallError> {
        let r = self
            .call(
                "ListComponents",
                CallClass::Read,
                wire::ListComponentsRequest {
                    instance: self.instance_name(),
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
        resource: &ResourceContext,
    ) -> Result<String, BackendCallError> {
        let r = self
            .call(
                "GenerateBackendId",
                CallClass::Read,
                wire::GenerateBackendIdRequest {
                    instance: self.instance_name(),
                    base_name: base_name.to_owned(),
                    resource: Some(to_wire::resource(resource.clone())),
                },
                |mut c, r| async move { c.generate_backend_id(r).await },
            )
            .await?;
        Ok(r.backend_id)
    }

    /// The resource, or `None` when the backend does not have it.
    pub async fn get_resource(
        &self,
        backend_id: &str,
    ) -> Result<Option<ResourceInfo>, BackendCallError> {
        self.require(Capability::Resources, "GetResource").await?;
        let r = self
            .call(
                "GetResource",
                CallClass::Read,
                wire::GetResourceRequest {
                    instance: self.instance_name(),
                    backend_id: backend_id.to_owned(),
                },
                |mut c, r| async move { c.get_resource(r).await },
            )
            .await;
        match r {
            Ok(r) => Ok(r.resource.map(from_wire::resource_info)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Members of many resources with, where the backend reads them in bulk,
    /// each resource and its per-user limits (ListResourceUsers, full view).
    pub async fn list_resource_details(
        &self,
        backend_ids: &[String],
    ) -> Result<ResourceUsers, BackendCallError> {
        self.require(Capability::Membership, "ListResourceUsers")
            .await?;
        let r = self
            .call(
                "ListResourceUsers",
                CallClass::Read,
                wire::ListResourceUsersRequest {
                    instance: self.instance_name(),
                    backend_ids: backend_ids.to_vec(),
                    view: wire::ResourceView::Full as i32,
                },
                |mut c, r| async move { c.list_resource_users(r).await },
            )
            .await?;
        let mut out = ResourceUsers {
            missing: r.missing_backend_ids,
            ..ResourceUsers::default()
        };
        for entry in r.resources {
            if let Some(info) = entry.resource {
                let mut resource = from_wire::resource_info(info);
                // The entry's id names it, whatever the nested copy says.
                resource.backend_id = entry.backend_id.clone();
                let details = ResourceDetails {
                    resource,
                    user_limits: from_wire::user_limits(entry.user_limits),
                };
                out.details.insert(entry.backend_id.clone(), details);
            }
            out.found.insert(entry.backend_id, entry.usernames);
        }
        Ok(out)
    }

    /// Decides a pending order; accept when the backend does not evaluate
    /// orders.
    pub async fn evaluate_order(&self, order: Order) -> Result<Decision, BackendCallError> {
        if !self.has(Capability::OrderEvaluation).await? {
            return Ok(Decision {
                decision: OrderDecision::Accept,
                message: String::new(),
            });
        }
        let r = self
            .call(
                "EvaluateOrder",
                CallClass::Read,
                wire::EvaluateOrderRequest {
                    instance: self.instance_name(),
                    order: Some(to_wire::order(order)),
                },
                |mut c, r| async move { c.evaluate_order(r).await },
            )
            .await?;
        Ok(from_wire::decision(r))
    }

    /// Usage of many resources for the current month (`period` None) or a
    /// past one; resources the backend lacks are left out.
    pub async fn usage_report(
        &self,
        backend_ids: Vec<String>,
        period: Option<BillingPeriod>,
        timezone: &str,
    ) -> Result<Vec<ResourceUsage>, BackendCallError> {
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
                    instance: self.instance_name(),
                    backend_ids,
                    period: period.map(to_wire::period),
                    timezone: timezone.to_owned(),
                },
                |mut c, r| async move { c.get_usage_report(r).await },
            )
            .await?;
        Ok(r.resources
            .into_iter()
            .map(from_wire::resource_usage)
            .collect())
    }

    /// Backend metadata of a resource.
    pub async fn get_resource_metadata(
        &self,
        backend_id: &str,
    ) -> Result<JsonObject, BackendCallError> {
        self.require(Capability::Metadata, "GetResourceMetadata")
            .await?;
        let r = self
            .call(
                "GetResourceMetadata",
                CallClass::Read,
                wire::GetResourceMetadataRequest {
                    instance: self.instance_name(),
                    backend_id: backend_id.to_owned(),
                },
                |mut c, r| async move { c.get_resource_metadata(r).await },
            )
            .await?;
        Ok(struct_to_json(r.metadata))
    }

    /// Limits as the backend enforces them.
    pub async fn get_resource_limits(&self, backend_id: &str) -> Result<Limits, BackendCallError> {
        self.require(Capability::ResourceLimits, "GetResourceLimits")
            .await?;
        let r = self
            .call(
                "GetResourceLimits",
                CallClass::Read,
                wire::GetResourceLimitsRequest {
                    instance: self.instance_name(),
                    backend_id: backend_id.to_owned(),
                },
                |mut c, r| async move { c.get_resource_limits(r).await },
            )
            .await?;
        Ok(r.limits.into_iter().collect())
    }

    /// Per-user limits of a resource, by username.
    pub async fn get_user_limits(
        &self,
        backend_id: &str,
    ) -> Result<BTreeMap<String, Limits>, BackendCallError> {
        self.require(Capability::UserLimits, "GetUserLimits")
            .await?;
        let r = self
            .call(
                "GetUserLimits",
                CallClass::Read,
                wire::GetUserLimitsRequest {
                    instance: self.instance_name(),
                    backend_id: backend_id.to_owned(),
                },
                |mut c, r| async move { c.get_user_limits(r).await },
            )
            .await?;
        Ok(from_wire::user_limits(r.users))
    }

    /// Creates home directories (`umask` None: the backend's default).
    pub async fn create_home_directories(
        &self,
        usernames: Vec<String>,
        umask: Option<&str>,
    ) -> Result<Vec<UserResult>, BackendCallError> {
        self.require(Capability::HomeDirectories, "CreateHomeDirectories")
            .await?;
        let r = self
            .call(
                "CreateHomeDirectories",
                CallClass::Mutate,
                wire::CreateHomeDirectoriesRequest {
                    instance: self.instance_name(),
                    usernames,
                    umask: umask.unwrap_or_default().to_owned(),
                },
                |mut c, r| async move { c.create_home_directories(r).await },
            )
            .await?;
        Ok(from_wire::user_results(r.results))
    }

    /// The username the backend knows for an offering user, if any.
    pub async fn get_username(
        &self,
        user: OfferingUser,
    ) -> Result<Option<String>, BackendCallError> {
        self.require(Capability::Usernames, "GetUsername").await?;
        let r = self
            .call(
                "GetUsername",
                CallClass::Read,
                wire::GetUsernameRequest {
                    instance: self.instance_name(),
                    user: Some(to_wire::offering_user(user)),
                },
                |mut c, r| async move { c.get_username(r).await },
            )
            .await?;
        Ok(Some(r.username).filter(|u| !u.is_empty()))
    }

    /// Generates (idempotently) the username of an offering user.
    pub async fn generate_username(&self, user: OfferingUser) -> Result<String, BackendCallError> {
        self.require(Capability::Usernames, "GenerateUsername")
            .await?;
        let r = self
            .call(
                "GenerateUsername",
                CallClass::Mutate,
                wire::GenerateUsernameRequest {
                    instance: self.instance_name(),
                    user: Some(to_wire::offering_user(user)),
                },
                |mut c, r| async move { c.generate_username(r).await },
            )
            .await?;
        Ok(r.username)
    }

    /// Every resource the backend has (all pages).
    pub async fn list_resources(&self) -> Result<Vec<ResourceInfo>, BackendCallError> {
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
                        instance: self.instance_name(),
                        parent_id: String::new(),
                        page_size: LIST_PAGE_SIZE,
                        page_token: token.clone(),
                    },
                    |mut c, r| async move { c.list_resources(r).await },
                )
                .await?;
            out.extend(r.resources.into_iter().map(from_wire::resource_info));
            // A token that does not move would loop for ever.
            if r.next_page_token.is_empty() || r.next_page_token == token {
                return Ok(out);
            }
            token = r.next_page_token;
        }
    }
}
