//! The task loops: per offering, each enabled task runs a cycle, then waits
//! its interval (measured from the end of the cycle, as the original agent).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::BackendHandle;
use crate::config::{Config, OfferingConfig};
use crate::identity::Registration;
use crate::orders::{CycleReport, OrderProcessor};
use crate::secret::Env;
use crate::waldur::{WaldurClient, WaldurError};

/// Everything one offering runs.
pub struct OfferingRuntime {
    /// Its config.
    pub config: Arc<OfferingConfig>,
    /// Waldur client of the order task.
    pub waldur: WaldurClient,
    orders: Option<(OrderProcessor, BackendHandle, Registration)>,
}

/// The coordinator: every offering and backend of one config.
pub struct Coordinator {
    /// Offerings, in config order.
    pub offerings: Vec<OfferingRuntime>,
    /// Backends by config key.
    pub backends: BTreeMap<String, BackendHandle>,
}

impl Coordinator {
    /// Builds clients for a config, connecting to backends over mutual TLS.
    pub fn build(config: &Config, env: &dyn Env) -> Result<Self, String> {
        let mut backends = BTreeMap::new();
        for (name, b) in &config.backends {
            backends.insert(
                name.clone(),
                BackendHandle::remote(name, b, &config.timeouts)?,
            );
        }
        Self::with_backends(config, env, backends)
    }

    /// Builds with the given backend handles (in-process backends in tests).
    pub fn with_backends(
        config: &Config,
        env: &dyn Env,
        backends: BTreeMap<String, BackendHandle>,
    ) -> Result<Self, String> {
        let mut offerings = Vec::new();
        for o in &config.offerings {
            let creds = o.waldur.token(env)?;
            let waldur = WaldurClient::new(
                &o.waldur.api_url,
                creds,
                "order_process",
                config.timeouts.waldur(),
                config.retry.clone(),
                o.waldur.verify_tls,
            )?;
            let config_arc = Arc::new(o.clone());
            let orders = match (&o.backends.orders, o.tasks.orders) {
                (Some(name), true) => {
                    let backend = backends
                        .get(name)
                        .cloned()
                        .ok_or_else(|| format!("offering {}: unknown backend {name}", o.name))?;
                    let processor = OrderProcessor::new(
                        config_arc.clone(),
                        waldur.clone(),
                        backend.clone(),
                        config.expose_backend_error_details,
                    );
                    let registration = Registration::new(
                        &o.offering_uuid,
                        "order_process",
                        "OfferingOrderProcessor",
                    );
                    Some((processor, backend, registration))
                }
                _ => None,
            };
            offerings.push(OfferingRuntime {
                config: config_arc,
                waldur,
                orders,
            });
        }
        Ok(Self {
            offerings,
            backends,
        })
    }

    /// One order cycle for every offering with order processing on.
    pub async fn process_orders_once(&self) -> Vec<(String, Result<CycleReport, WaldurError>)> {
        let mut out = Vec::new();
        for o in &self.offerings {
            if let Some((processor, backend, registration)) = &o.orders {
                register(&o.waldur, backend, registration).await;
                out.push((o.config.name.clone(), processor.run_cycle().await));
            }
        }
        out
    }

    /// Runs every task loop until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let this = Arc::new(self);
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..this.offerings.len() {
            let c = this.clone();
            if c.offerings[index].orders.is_some() {
                tasks.spawn(async move { c.order_loop(index).await });
            }
        }
        if tasks.is_empty() {
            tracing::warn!("no task is enabled: nothing to do");
        }
        shutdown.await;
        tracing::info!("shutting down: stopping task loops");
        tasks.shutdown().await;
    }

    async fn order_loop(&self, index: usize) {
        let o = &self.offerings[index];
        let Some((processor, backend, registration)) = &o.orders else {
            return;
        };
        let interval = Duration::from_secs(o.config.intervals.orders_seconds.max(1));
        loop {
            register(&o.waldur, backend, registration).await;
            match processor.run_cycle().await {
                Ok(report) => {
                    if !report.outcomes.is_empty() {
                        tracing::info!(offering = %o.config.name, orders = report.outcomes.len(), "order cycle finished");
                    }
                }
                Err(e) => {
                    tracing::warn!(offering = %o.config.name, error = %e, "order cycle failed")
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
}

async fn register(waldur: &WaldurClient, backend: &BackendHandle, registration: &Registration) {
    let (kind, version) = match backend.info().await {
        Ok(i) => (i.name.clone(), i.version.clone()),
        Err(_) => ("unknown".to_owned(), "unknown".to_owned()),
    };
    if let Err(e) = registration.ensure(waldur, &kind, &version).await {
        if e.status() == Some(404) {
            registration.invalidate().await;
        }
        tracing::warn!(error = %e, "agent registration failed; retrying next cycle");
    }
}
