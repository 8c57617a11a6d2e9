//! Usage: what the portal reports for each allocation, per user, in
//! Waldur units.

use std::collections::BTreeMap;

use waldur_backend_sdk::BackendResult;
use waldur_backend_sdk::types::*;

use crate::MupBackend;
use crate::client::ApiError;
use crate::records::{self, Allocation};
use crate::resources::Lists;

impl MupBackend {
    /// Usage of the resources named. A resource the portal does not have,
    /// or whose usage it refuses to give, is left out (SPEC 5.14.3); the
    /// portal unreachable fails the whole report, so nothing is reported as
    /// zero.
    pub(crate) async fn report(&self, backend_ids: &[String]) -> BackendResult<Vec<ResourceUsage>> {
        let mut out = Vec::new();
        let mut lists = Lists::new();
        for id in backend_ids {
            let l = match self.locate_with(id, &mut lists).await {
                Ok(l) => l,
                Err(e) if crate::is_absent(&e) => continue,
                Err(e) => return Err(e),
            };
            let mut usage = ResourceUsage {
                backend_id: id.clone(),
                total: self
                    .settings
                    .components
                    .keys()
                    .map(|k| (k.clone(), 0.0))
                    .collect(),
                users: BTreeMap::new(),
            };
            let mut complete = true;
            for (component, a) in l.allocations.iter().filter(|(_, a)| a.active) {
                match self.allocation_usage(component, a).await {
                    Ok((total, per_user)) => {
                        usage.total.insert(component.clone(), total);
                        for (name, v) in per_user {
                            usage
                                .users
                                .entry(name)
                                .or_default()
                                .insert(component.clone(), v);
                        }
                    }
                    Err(e) if e.is_unreachable() => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(backend_id = %id, error = %e, "leaving a resource out of the usage report");
                        complete = false;
                        break;
                    }
                }
            }
            if complete {
                out.push(usage);
            }
        }
        Ok(out)
    }

    /// One allocation's usage in Waldur units: the total (the portal's own,
    /// which may exceed the users' sum when it bills usage to no user, never
    /// less) and per user.
    async fn allocation_usage(
        &self,
        component: &str,
        a: &Allocation,
    ) -> Result<(f64, BTreeMap<String, f64>), ApiError> {
        let u = self.api.usage(a).await?;
        let factor = self.settings.factor(component);
        let mut users = BTreeMap::new();
        for (name, v) in &u.users {
            match records::number(v).filter(|x| *x >= 0.0) {
                Some(amount) => {
                    users.insert(name.clone(), amount / factor);
                }
                None => {
                    tracing::warn!(allocation = %a.identifier, user = %name, value = %v, "ignoring a usage amount that is not a non-negative number");
                }
            }
        }
        let sum: f64 = users.values().sum();
        let total = u.total.max(0.0) / factor;
        if (total - sum).abs() > 1e-6 * total.max(1.0) {
            tracing::warn!(allocation = %a.identifier, total, users = sum, "mup reports a total that is not the sum of its users' usage; reporting the larger");
        }
        Ok((total.max(sum), users))
    }
}
