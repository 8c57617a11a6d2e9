//! What one config runs: per offering its processors (each a [`Task`] with
//! its backend, Waldur client and registration), the backends, and the
//! Helmholtz Cloud services. Built once at start; the runner and the event
//! consumers both work from it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::tunnel::TunnelError;
use crate::backend::{BackendHandle, ConnectError, TunnelHub};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, OfferingConfig, TUNNEL_ENDPOINT};
use crate::processors::identity::Registration;
use crate::processors::membership::MembershipProcessor;
use crate::processors::orders::OrderProcessor;
use crate::processors::report::ReportProcessor;
use waldur_client::WaldurClient;
use waldur_runtime::SettingError;
use waldur_runtime::secret::Env;

/// One task of one offering: its processor, backend, Waldur client (with the
/// task's User-Agent) and registration.
pub struct Task<P> {
    /// The processor.
    pub processor: P,
    /// Its backend.
    pub backend: BackendHandle,
    /// Its Waldur client.
    pub waldur: WaldurClient,
    registration: Registration,
    /// What its last cycle did, for the status view.
    pub last: crate::runtime::status::LastCycle,
}

/// Everything one offering runs.
pub struct OfferingRuntime {
    /// Its config.
    pub config: Arc<OfferingConfig>,
    /// Waldur client for operator commands (`order_process` User-Agent).
    pub waldur: WaldurClient,
    /// Order processing, if enabled.
    pub orders: Option<Task<OrderProcessor>>,
    /// Usage reporting, if enabled.
    pub report: Option<Task<ReportProcessor>>,
    /// Membership sync, if enabled.
    pub membership: Option<Task<MembershipProcessor>>,
    /// The API token, which is also the STOMP passcode (event mode).
    pub stomp_passcode: Option<waldur_runtime::secret::Secret>,
    /// Event consumers by object type, once subscribed (readiness, tests).
    pub consumers: std::sync::Mutex<Vec<(&'static str, waldur_stomp::client::ConsumerState)>>,
}

/// The coordinator: every offering and backend of one config.
pub struct Coordinator {
    /// Offerings, in config order.
    pub offerings: Vec<OfferingRuntime>,
    /// Backends by config key.
    pub backends: BTreeMap<String, BackendHandle>,
    /// Helmholtz Cloud services with their broker link state.
    pub hca: Vec<(
        Arc<crate::upstream::hca::HcaService>,
        Arc<crate::upstream::hca::LinkState>,
    )>,
}

/// Why a config cannot be turned into running clients.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A backend's endpoint or TLS files.
    #[error(transparent)]
    Backend(#[from] ConnectError),
    /// The tunnel listener.
    #[error("{0}")]
    Tunnel(String),
    /// A setting of one offering (the path names it by index).
    #[error("{source} (offering {name})")]
    Offering {
        /// The offering's name.
        name: String,
        /// The setting.
        #[source]
        source: SettingError,
    },
    /// A setting of one Helmholtz Cloud service (the path names it by index).
    #[error("{source} (helmholtz service {name})")]
    Helmholtz {
        /// The service's name.
        name: String,
        /// The setting.
        #[source]
        source: SettingError,
    },
}

/// What a command does when the tunnel's port is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelPort {
    /// `run`: the port is ours or nothing starts.
    Required,
    /// `check`, `plan` and the one-off commands, which run beside a running
    /// coordinator: a taken port leaves the tunnel backends unreachable.
    Shared,
}

/// The backends whose servers dial the tunnel.
pub fn tunneled_backends(config: &Config) -> Vec<String> {
    config
        .backends
        .iter()
        .filter(|(_, b)| b.endpoint == TUNNEL_ENDPOINT)
        .map(|(name, _)| name.clone())
        .collect()
}

/// A handle per configured backend: direct ones dial their server, tunnel
/// ones use `hub` (which must be given when any backend is `tunnel`).
pub fn backend_handles(
    config: &Config,
    hub: Option<&Arc<TunnelHub>>,
) -> Result<BTreeMap<String, BackendHandle>, BuildError> {
    let mut backends = BTreeMap::new();
    for (name, b) in &config.backends {
        let handle = if b.endpoint == TUNNEL_ENDPOINT {
            let hub = hub.ok_or_else(|| {
                BuildError::Tunnel(format!(
                    "backends.{name}: endpoint tunnel needs the tunnel listener"
                ))
            })?;
            BackendHandle::tunneled(name, b, &config.timeouts, hub.clone())
        } else {
            BackendHandle::remote(name, b, &config.timeouts)?
        };
        backends.insert(name.clone(), handle);
    }
    Ok(backends)
}

impl Coordinator {
    /// Builds clients for a config, connecting to backends over mutual TLS.
    pub fn build(config: &Config, env: &dyn Env) -> Result<Self, BuildError> {
        Self::build_with_tunnel(config, env, TunnelPort::Required)
    }

    /// Builds clients; `port` says what to do when another process (the
    /// running coordinator) holds the tunnel's port.
    pub fn build_with_tunnel(
        config: &Config,
        env: &dyn Env,
        port: TunnelPort,
    ) -> Result<Self, BuildError> {
        let served = tunneled_backends(config);
        let hub = match &config.tunnel {
            None => None,
            Some(_) if served.is_empty() => {
                tracing::warn!(
                    "tunnel: no backend has endpoint: tunnel, so the tunnel does not listen"
                );
                None
            }
            Some(t) => match TunnelHub::bind(t, served) {
                Ok(hub) => Some(hub),
                Err(TunnelError::Bind { source, .. })
                    if port == TunnelPort::Shared
                        && source.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    tracing::info!(listen = %t.listen, "the tunnel's port is in use (a running coordinator): its /readyz shows each tunnel link");
                    Some(TunnelHub::detached())
                }
                Err(e) => {
                    return Err(BuildError::Tunnel(format!(
                        "{e} (if the coordinator is already running, its /readyz shows each tunnel link)"
                    )));
                }
            },
        };
        let backends = backend_handles(config, hub.as_ref())?;
        Self::with_backends(config, env, backends, Arc::new(SystemClock))
    }

    /// Builds with the given backend handles (in-process backends in tests)
    /// and clock.
    pub fn with_backends(
        config: &Config,
        env: &dyn Env,
        backends: BTreeMap<String, BackendHandle>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BuildError> {
        let mut offerings = Vec::new();
        for (i, o) in config.offerings.iter().enumerate() {
            let in_offering = |e: SettingError| BuildError::Offering {
                name: o.name.clone(),
                source: e.within(format_args!("offerings[{i}]")),
            };
            let creds = o
                .waldur
                .token(env)
                .map_err(|e| in_offering(e.within("waldur")))?;
            let client = |mode: &str| {
                WaldurClient::new(
                    &o.waldur.api_url,
                    creds.clone(),
                    mode,
                    config.timeouts.waldur(),
                    config.retry.clone(),
                    o.waldur.verify_tls,
                )
                .map(|c| c.with_observer(crate::metrics::waldur_request))
                .map_err(|e| in_offering(e.within("waldur")))
            };
            let backend =
                |role: &str, name: &Option<String>| -> Result<Option<BackendHandle>, BuildError> {
                    name.as_ref()
                        .map(|name| {
                            backends.get(name).cloned().ok_or_else(|| {
                                in_offering(SettingError::new(
                                    format!("backends.{role}"),
                                    format!("{name} is not a key of backends"),
                                ))
                            })
                        })
                        .transpose()
                };
            let shared = Arc::new(o.clone());
            let waldur = client("order_process")?;
            let orders = match (backend("orders", &o.backends.orders)?, o.tasks.orders) {
                (Some(b), true) => Some(Task {
                    processor: OrderProcessor::new(
                        shared.clone(),
                        waldur.clone(),
                        b.clone(),
                        config.expose_backend_error_details,
                    ),
                    backend: b,
                    waldur: waldur.clone(),
                    registration: Registration::new(
                        &o.offering_uuid,
                        "order_process",
                        "OfferingOrderProcessor",
                    ),
                    last: Default::default(),
                }),
                _ => None,
            };
            let report = match (backend("report", &o.backends.report)?, o.tasks.report) {
                (Some(b), true) => {
                    let w = client("report")?;
                    Some(Task {
                        processor: ReportProcessor::new(
                            shared.clone(),
                            w.clone(),
                            b.clone(),
                            clock.clone(),
                            &config.timezone,
                        ),
                        backend: b,
                        waldur: w,
                        registration: Registration::new(
                            &o.offering_uuid,
                            "report",
                            "OfferingReportProcessor",
                        ),
                        last: Default::default(),
                    })
                }
                _ => None,
            };
            let membership = match (
                backend("membership", &o.backends.membership)?,
                o.tasks.membership,
            ) {
                (Some(b), true) => {
                    let w = client("membership_sync")?;
                    let names = backend("usernames", &o.backends.usernames)?;
                    Some(Task {
                        processor: MembershipProcessor::new(
                            shared.clone(),
                            w.clone(),
                            b.clone(),
                            names,
                            config.expose_backend_error_details,
                        ),
                        backend: b,
                        waldur: w,
                        registration: Registration::new(
                            &o.offering_uuid,
                            "membership_sync",
                            "OfferingMembershipProcessor",
                        ),
                        last: Default::default(),
                    })
                }
                _ => None,
            };
            let stomp_passcode = match &creds {
                crate::config::Credentials::Token(t) => Some(t.clone()),
                crate::config::Credentials::Oidc { .. } => None,
            };
            offerings.push(OfferingRuntime {
                config: shared,
                waldur,
                orders,
                report,
                membership,
                stomp_passcode,
                consumers: std::sync::Mutex::new(Vec::new()),
            });
        }
        let mut hca = Vec::new();
        for (i, s) in config.helmholtz.services.iter().enumerate() {
            let service =
                crate::upstream::hca::HcaService::build(s, env, &config.base_dir, &backends)
                    .map_err(|e| BuildError::Helmholtz {
                        name: s.name.clone(),
                        source: e.within(format_args!("helmholtz.services[{i}]")),
                    })?;
            hca.push((
                Arc::new(service),
                Arc::new(crate::upstream::hca::LinkState::default()),
            ));
        }
        Ok(Self {
            offerings,
            backends,
            hca,
        })
    }
}

impl<P> Task<P> {
    /// The agent identity's UUID, once registered.
    pub async fn identity(&self) -> Option<waldur_client::ids::Uuid> {
        self.registration.identity().await
    }

    /// Registers the agent identity, service and processor (once per start,
    /// again after Waldur forgot them).
    pub async fn register(&self) {
        // A Waldur before 8.0 has no agent registry: said once by the
        // client, then not tried every cycle.
        if self.waldur.lacks_agent_registry() {
            return;
        }
        let (kind, version) = match self.backend.info().await {
            Ok(i) => (i.name.clone(), i.version.clone()),
            Err(_) => ("unknown".to_owned(), "unknown".to_owned()),
        };
        if let Err(e) = self
            .registration
            .ensure(&self.waldur, &kind, &version)
            .await
        {
            if e.is_missing_endpoint() {
                return; // the client said so, once
            }
            if e.status() == Some(404) {
                self.registration.invalidate().await;
            }
            tracing::warn!(error = %e, "agent registration failed; retrying next cycle");
        }
    }
}
