//! The task loops: per offering, each enabled task (orders, usage report,
//! membership sync) runs a cycle, then waits its interval, measured from the
//! end of the cycle as the original agent. Tasks and offerings run
//! independently: a slow report never delays orders.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::offering::{Coordinator, OfferingRuntime, Task};
pub use super::status::Cycled;
use crate::config::OfferingConfig;
use crate::processors::membership::{MembershipProcessor, MembershipSummary};
use crate::processors::orders::{CycleReport, OrderOutcome, OrderProcessor};
use crate::processors::report::{ReportProcessor, ReportSummary};
use crate::processors::step::StepError;
use waldur_client::WaldurError;

impl Coordinator {
    /// One order cycle for every offering with order processing on.
    pub async fn process_orders_once(&self) -> Vec<(String, Result<CycleReport, WaldurError>)> {
        self.orders_once(&[]).await
    }

    /// One report cycle for every offering with reporting on.
    pub async fn report_once(&self) -> Vec<(String, Result<ReportSummary, StepError>)> {
        self.report_once_in(&[]).await
    }

    /// One membership cycle for every offering with membership sync on.
    pub async fn sync_membership_once(
        &self,
    ) -> Vec<(String, Result<MembershipSummary, WaldurError>)> {
        self.membership_once(&[]).await
    }

    /// The offerings named in `only` (by name or UUID), or all when empty.
    fn selected<'a>(&'a self, only: &'a [String]) -> impl Iterator<Item = &'a OfferingRuntime> {
        self.offerings.iter().filter(move |o| {
            only.is_empty()
                || only.iter().any(|n| {
                    *n == o.config.name
                        || waldur_client::ids::same_uuid(n, o.config.offering_uuid.as_str())
                })
        })
    }

    async fn orders_once(
        &self,
        only: &[String],
    ) -> Vec<(String, Result<CycleReport, WaldurError>)> {
        let mut out = Vec::new();
        for o in self.selected(only) {
            if let Some(t) = &o.orders {
                t.register().await;
                out.push((o.config.name.clone(), t.processor.run_cycle().await));
            }
        }
        out
    }

    async fn report_once_in(
        &self,
        only: &[String],
    ) -> Vec<(String, Result<ReportSummary, StepError>)> {
        let mut out = Vec::new();
        for o in self.selected(only) {
            if let Some(t) = &o.report {
                t.register().await;
                out.push((o.config.name.clone(), t.processor.run_cycle().await));
            }
        }
        out
    }

    async fn membership_once(
        &self,
        only: &[String],
    ) -> Vec<(String, Result<MembershipSummary, WaldurError>)> {
        let mut out = Vec::new();
        for o in self.selected(only) {
            if let Some(t) = &o.membership {
                t.register().await;
                out.push((o.config.name.clone(), t.processor.run_cycle().await));
            }
        }
        out
    }

    /// One cycle of every enabled task, in order: orders, membership, report
    /// (`run --once`). True when no cycle failed as a whole.
    pub async fn run_once(&self) -> bool {
        self.run_once_with(&[], false).await
    }

    /// [`Self::run_once`] for the offerings named in `only` (all when
    /// empty); `allow_destructive` lets this one cycle through the
    /// blast-radius breaker and the empty-team guard.
    pub async fn run_once_with(&self, only: &[String], allow_destructive: bool) -> bool {
        let mut ok = true;
        for (name, r) in self.orders_once(only).await {
            match r {
                Ok(r) => println!("{name}: orders: {} processed", r.outcomes.len()),
                Err(e) => {
                    ok = false;
                    println!("{name}: orders: failed: {e}");
                }
            }
        }
        for o in self.selected(only) {
            if let Some(t) = &o.membership {
                t.processor.allow_destructive(allow_destructive);
            }
        }
        for (name, r) in self.membership_once(only).await {
            match r {
                Ok(s) => {
                    println!(
                        "{name}: membership: {} resources, {} users added, {} removed, {} access changes, {} erred, {} missing on the backend, {} changes withheld, {} moved under their project, {} prepaid limits renewed ({} of these calls failed)",
                        s.resources,
                        s.users_added,
                        s.users_removed,
                        s.access_changed,
                        s.erred.len(),
                        s.missing_on_backend.len(),
                        s.withheld.len(),
                        s.followed.moved,
                        s.followed.renewed,
                        s.followed.failed
                    );
                    if let Some(t) = &s.breaker {
                        println!("{name}: membership: breaker: {}", t.message);
                    }
                    for (id, why) in &s.withheld {
                        println!("{name}: membership: {id}: {why}");
                    }
                }
                Err(e) => {
                    ok = false;
                    println!("{name}: membership: failed: {e}");
                }
            }
        }
        for o in self.selected(only) {
            if let Some(t) = &o.membership {
                t.processor.allow_destructive(false);
            }
        }
        for (name, r) in self.report_once_in(only).await {
            match r {
                Ok(s) => println!(
                    "{name}: report: {} resources, periods {:?}, {} totals written, {} unchanged, {} per-user batches, {} decreases refused, unknown components {:?}",
                    s.resources,
                    s.periods,
                    s.totals_written,
                    s.totals_unchanged,
                    s.user_usages_written,
                    s.decreases_refused.len(),
                    s.unknown_components
                ),
                Err(e) => {
                    ok = false;
                    println!("{name}: report: failed: {e}");
                }
            }
        }
        ok
    }

    /// Runs every task loop until `shutdown` completes.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let this = self;
        let mut tasks = tokio::task::JoinSet::new();
        for o in &this.offerings {
            // Logged beside the work, never in its way: a Waldur that is down
            // now is met by the cycles' own retries.
            let (name, waldur) = (o.config.name.clone(), o.waldur.clone());
            tokio::spawn(async move { log_waldur_version(&name, &waldur).await });
        }
        for index in 0..this.offerings.len() {
            let o = &this.offerings[index];
            if o.orders.is_some() {
                let c = this.clone();
                tasks.spawn(async move {
                    let o = &c.offerings[index];
                    if let Some(t) = &o.orders {
                        looped(&o.config, "orders", o.config.intervals.orders_seconds, t).await
                    }
                });
            }
            if o.membership.is_some() {
                let c = this.clone();
                tasks.spawn(async move {
                    let o = &c.offerings[index];
                    if let Some(t) = &o.membership {
                        looped(
                            &o.config,
                            "membership",
                            o.config.intervals.membership_seconds,
                            t,
                        )
                        .await
                    }
                });
            }
            if o.config.tasks.events {
                let c = this.clone();
                tasks.spawn(async move { crate::runtime::events::consumers::run(c, index).await });
            }
            if o.report.is_some() {
                let c = this.clone();
                tasks.spawn(async move {
                    let o = &c.offerings[index];
                    if let Some(t) = &o.report {
                        looped(&o.config, "report", o.config.intervals.report_seconds, t).await
                    }
                });
            }
        }
        // Helmholtz consumers stop gracefully: running requests answer and
        // acknowledge before the process exits.
        let (stop_hca, stop) = tokio::sync::watch::channel(false);
        let mut hca = tokio::task::JoinSet::new();
        for (service, state) in &this.hca {
            hca.spawn(crate::upstream::hca::amqp::run(
                service.clone(),
                state.clone(),
                stop.clone(),
            ));
        }
        if tasks.is_empty() && hca.is_empty() {
            tracing::warn!("no task is enabled: nothing to do");
        }
        shutdown.await;
        tracing::info!("shutting down: stopping task loops");
        let _ = stop_hca.send(true);
        while hca.join_next().await.is_some() {}
        tasks.shutdown().await;
    }
}

/// A processor the task loop can drive: one cycle, summarised for the log
/// (`None` when there is nothing worth a line) and for the status view.
pub trait Cycle: Send + Sync {
    /// Runs one cycle.
    fn cycle(&self) -> impl Future<Output = Result<Cycled, String>> + Send;
}

impl Cycle for OrderProcessor {
    async fn cycle(&self) -> Result<Cycled, String> {
        let r = self.run_cycle().await.map_err(|e| e.to_string())?;
        let open = r.count(|o| {
            matches!(
                o,
                OrderOutcome::KeptPending | OrderOutcome::InProgress | OrderOutcome::Deferred(_)
            )
        });
        Ok(Cycled {
            summary: (!r.outcomes.is_empty()).then(|| format!("{} orders", r.outcomes.len())),
            backlog: open,
        })
    }
}

impl Cycle for MembershipProcessor {
    async fn cycle(&self) -> Result<Cycled, String> {
        let s = self.run_cycle().await.map_err(|e| e.to_string())?;
        Ok(Cycled {
            summary: Some(format!(
                "{} resources, {} backend changes, {} erred, {} missing on the backend",
                s.resources,
                s.backend_changes(),
                s.erred.len(),
                s.missing_on_backend.len()
            )),
            backlog: s.deferred.len(),
        })
    }
}

impl Cycle for ReportProcessor {
    async fn cycle(&self) -> Result<Cycled, String> {
        let s = self.run_cycle().await.map_err(|e| e.to_string())?;
        Ok(Cycled {
            summary: Some(format!(
                "{} resources, {} totals written, {} unchanged, {} decreases refused, {} errors",
                s.resources,
                s.totals_written,
                s.totals_unchanged,
                s.decreases_refused.len(),
                s.errors.len()
            )),
            backlog: s.errors.len(),
        })
    }
}

/// Runs a task's cycle for ever, `every` seconds after the previous one ended.
async fn looped<P: Cycle>(offering: &OfferingConfig, task: &str, every: u64, t: &Task<P>) {
    let interval = Duration::from_secs(every.max(1));
    loop {
        t.register().await;
        let started = std::time::Instant::now();
        let result = t.processor.cycle().await;
        match &result {
            Ok(Cycled {
                summary: Some(what),
                ..
            }) => {
                tracing::info!(offering = %offering.name, task, result = %what, "cycle finished")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(offering = %offering.name, task, error = %e, "cycle failed"),
        }
        t.last.record(started.elapsed(), result);
        tokio::time::sleep(interval).await;
    }
}

/// The Waldur release an offering talks to, and what it lacks if older.
async fn log_waldur_version(offering: &str, waldur: &waldur_client::WaldurClient) {
    match waldur.version().await {
        Ok(v) => {
            let (oldest, newest) = waldur_client::compat::TESTED;
            tracing::info!(offering, version = %v, tested = %format!("{oldest} to {newest}"), "waldur version");
            for warning in waldur_client::compat::warnings(&v) {
                tracing::warn!(offering, version = %v, warning, "this waldur lacks a feature; the agent does without it");
            }
        }
        Err(e) => tracing::warn!(offering, error = %e, "waldur version unknown"),
    }
}
