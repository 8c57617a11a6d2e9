//! The registry: the named backend instances one server hosts, and what
//! every RPC does before the backend sees it (instance lookup, per-resource
//! lock, component check, trace id, metrics, error mapping).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use waldur_runtime::span;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::convert::{self, required_id};
use crate::types::*;
use crate::{Backend, BackendError, BackendResult};
use waldur_runtime::SettingError;

/// One hosted backend instance.
pub(crate) struct Instance {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) capabilities: HashSet<Capability>,
}

/// The instances one server hosts, by name.
///
/// Cheap to clone; the gRPC adapter, the health loop and tests share it.
#[derive(Clone, Default)]
pub struct Registry {
    instances: Arc<BTreeMap<String, Instance>>,
    locks: ResourceLocks,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("instances", &self.instances.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Builds a [`Registry`].
#[derive(Default)]
pub struct RegistryBuilder {
    instances: BTreeMap<String, Instance>,
}

impl std::fmt::Debug for RegistryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field("instances", &self.instances.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RegistryBuilder {
    /// Adds an instance. Its capabilities are read once, here.
    ///
    /// # Errors
    /// When the name is empty or already taken.
    pub fn add(mut self, name: &str, backend: Arc<dyn Backend>) -> Result<Self, SettingError> {
        if name.is_empty() || name.len() > convert::MAX_ID_LEN {
            return Err(SettingError::new(
                "instances",
                format!("instance name {name:?} must have 1 to 255 bytes"),
            ));
        }
        if self.instances.contains_key(name) {
            return Err(SettingError::new(
                "instances",
                format!("instance {name:?} is configured twice"),
            ));
        }
        let capabilities = backend.capabilities().into_iter().collect();
        self.instances.insert(
            name.to_owned(),
            Instance {
                backend,
                capabilities,
            },
        );
        Ok(self)
    }

    /// The registry.
    pub fn build(self) -> Registry {
        Registry {
            instances: Arc::new(self.instances),
            locks: ResourceLocks::default(),
        }
    }
}

impl Registry {
    /// A builder.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// A registry with one instance.
    pub fn single(name: &str, backend: Arc<dyn Backend>) -> Result<Self, SettingError> {
        Ok(Self::builder().add(name, backend)?.build())
    }

    /// Names of the hosted instances.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.instances.keys().map(String::as_str)
    }

    /// Probes every instance; returns (name, probe) pairs. A probe that fails
    /// counts as not ready.
    pub async fn probe_all(&self) -> Vec<(String, Probe)> {
        let mut out = Vec::with_capacity(self.instances.len());
        for (name, inst) in self.instances.iter() {
            let probe = match inst.backend.probe().await {
                Ok(p) => p,
                Err(e) => Probe::not_ready(e.message),
            };
            out.push((name.clone(), probe));
        }
        out
    }

    /// Runs the self checks of every instance that advertises DIAGNOSTICS;
    /// returns (name, checks) pairs. A run that fails is one failed check.
    pub async fn diagnose_all(&self) -> Vec<(String, Diagnostics)> {
        let mut out = Vec::new();
        for (name, inst) in self.instances.iter() {
            if !inst.capabilities.contains(&Capability::Diagnostics) {
                continue;
            }
            let d = match inst.backend.diagnostics().await {
                Ok(d) => d,
                Err(e) => Diagnostics {
                    checks: vec![DiagnosticCheck {
                        name: "diagnostics".into(),
                        status: CheckStatus::Failed,
                        message: e.message,
                    }],
                    info: Default::default(),
                },
            };
            out.push((name.clone(), d));
        }
        out
    }

    pub(crate) fn instance(&self, name: String, needs: &[Capability]) -> BackendResult<&Instance> {
        let name = required_id("instance", name)?;
        let inst = self
            .instances
            .get(&name)
            .ok_or_else(|| BackendError::unknown_instance(&name))?;
        if !needs.is_empty() && !needs.iter().any(|c| inst.capabilities.contains(c)) {
            let wanted: Vec<&str> = needs.iter().map(|c| c.as_str_name()).collect();
            return Err(BackendError::new(
                tonic::Code::Unimplemented,
                waldur_backend_proto::reason::CAPABILITY_NOT_SUPPORTED,
                format!("instance {name} does not advertise {}", wanted.join(" or ")),
            ));
        }
        Ok(inst)
    }
}

impl Instance {
    /// Rejects limits for components the instance does not define.
    pub(crate) async fn check_components(&self, limits: &Limits) -> BackendResult<()> {
        if limits.is_empty() {
            return Ok(());
        }
        let known: HashSet<String> = self
            .backend
            .components()
            .await?
            .into_iter()
            .map(|c| c.key)
            .collect();
        match limits.keys().find(|k| !known.contains(*k)) {
            Some(k) => Err(BackendError::unknown_component(k)),
            None => Ok(()),
        }
    }
}

/// Serialises mutating calls per (instance, backend id): SPEC allows at most
/// one in flight per resource, and waiting is kinder than refusing.
type ResourceLocks = waldur_runtime::KeyedLock<(String, String)>;

impl Registry {
    pub(crate) async fn lock(
        &self,
        instance: &str,
        backend_id: &str,
    ) -> waldur_runtime::KeyedGuard<(String, String)> {
        self.locks
            .lock((instance.to_owned(), backend_id.to_owned()))
            .await
    }
}

/// The W3C trace id of a `traceparent` header, if well formed.
pub(crate) fn trace_id(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    let value = metadata.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, trace, _span) = (parts.next()?, parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then(|| trace.to_owned())
}

/// Runs one RPC inside its span, logs its outcome and maps the error.
pub(crate) async fn rpc<Req, Resp, Fut>(
    method: &'static str,
    request: Request<Req>,
    handler: impl FnOnce(Req) -> Fut,
) -> Result<Response<Resp>, Status>
where
    Fut: Future<Output = BackendResult<Resp>>,
{
    let trace = trace_id(request.metadata());
    let span = tracing::info_span!(
        span::SERVER_CALL,
        otel.kind = "server",
        rpc.method = method,
        trace_id = trace.as_deref().unwrap_or(""),
        rpc.code = tracing::field::Empty,
    );
    crate::telemetry::set_remote_parent(&span, request.metadata());
    let started = Instant::now();
    let result = handler(request.into_inner()).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let elapsed_us = elapsed.as_micros();
    crate::metrics::rpc(
        method,
        match &result {
            Ok(_) => tonic::Code::Ok,
            Err(e) => e.code,
        },
        elapsed,
    );
    match result {
        Ok(resp) => {
            span.record(span::field::RPC_CODE, "OK");
            tracing::debug!(parent: &span, elapsed_us, "rpc done");
            Ok(Response::new(resp))
        }
        Err(e) => {
            span.record(span::field::RPC_CODE, format!("{:?}", e.code));
            if matches!(e.code, tonic::Code::Internal | tonic::Code::Unknown) {
                tracing::warn!(parent: &span, elapsed_us, reason = %e.reason, error = %e.message, "rpc failed");
            } else {
                tracing::info!(parent: &span, elapsed_us, reason = %e.reason, error = %e.message, "rpc refused");
            }
            Err(e.to_status())
        }
    }
}
