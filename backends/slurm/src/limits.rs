//! Limits and unit conversion: Waldur units ↔ TRES-minutes, the cluster's
//! TRES, per-user limits.
//!
//! A limit the backend sets must read back equal (SPEC §5.7): a value that
//! cannot be represented after `unit_factor` (too large, or lost to the
//! conversion) is refused with INVALID_ARGUMENT, never clamped.

use std::collections::{BTreeMap, BTreeSet};

use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{BackendError, BackendResult};

use crate::accounts::Rows;
use crate::parse::{limit_value, tres};
use crate::settings::Accounting;
use crate::{SlurmBackend, args, names};

/// The largest TRES value the backend writes: integers up to 2^53 survive
/// the float arithmetic of unit factors exactly (SLURM itself takes 64-bit
/// values).
pub const MAX_TRES_VALUE: f64 = 9_007_199_254_740_992.0;

/// `cpu=1,mem=2` from a map.
pub fn join_tres(limits: &BTreeMap<String, i64>) -> String {
    limits
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Months a prepaid resource runs: whole calendar months from creation to
/// end, one more when the end day is later in its month, at least 1; 1 when
/// either date is unknown.
pub fn prepaid_months(resource: Option<&ResourceContext>) -> i64 {
    let date = |t: std::time::SystemTime| {
        let ts = jiff::Timestamp::try_from(t).ok()?;
        Some(ts.to_zoned(jiff::tz::TimeZone::UTC).date())
    };
    let Some(r) = resource else { return 1 };
    let (Some(c), Some(e)) = (r.created.and_then(date), r.end_date.and_then(date)) else {
        return 1;
    };
    let months = (i64::from(e.year()) - i64::from(c.year())) * 12 + i64::from(e.month())
        - i64::from(c.month())
        + i64::from(e.day() > c.day());
    months.max(1)
}

impl SlurmBackend {
    /// TRES the cluster knows (`list tres`, read once); empty when unknown.
    pub(crate) async fn cluster_tres(&self) -> &BTreeSet<String> {
        self.cluster_tres
            .get_or_init(|| async {
                match self.slurm.sacctmgr_read(args!["list", "tres"]).await {
                    Ok(out) => crate::parse::rows(&out)
                        .into_iter()
                        .filter_map(|r| match (r.first(), r.get(1)) {
                            (Some(t), Some(n)) if !n.is_empty() => Some(format!("{t}/{n}")),
                            (Some(t), _) => Some((*t).to_owned()),
                            _ => None,
                        })
                        .collect(),
                    Err(e) => {
                        tracing::warn!(error = %e.message, "cannot list TRES; limits are not filtered");
                        BTreeSet::new()
                    }
                }
            })
            .await
    }

    /// Waldur limits → backend `GrpTRESMins` values, unknown TRES dropped:
    /// passthrough components × unit_factor, mapped components onto their
    /// target TRES × factor (summed), prepaid (`one`) components × the
    /// number of months the resource runs. At creation usage-type components
    /// take their configured fixed limit, as the original agent.
    pub(crate) async fn backend_limits(
        &self,
        waldur: &Limits,
        creating: bool,
        resource: Option<&ResourceContext>,
    ) -> BackendResult<BTreeMap<String, i64>> {
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        for (key, c) in &self.settings.components {
            let value = if creating && c.accounting_type == Accounting::Usage {
                c.limit.or_else(|| waldur.get(key).map(|v| *v as f64))
            } else {
                waldur.get(key).map(|v| *v as f64)
            };
            let Some(mut v) = value else { continue };
            if c.accounting_type == Accounting::One {
                v *= prepaid_months(resource) as f64;
            }
            if c.target_components.is_empty() {
                let backend = v * c.unit_factor;
                representable(key, v, c.unit_factor, backend)?;
                // A plain limit must read back as what was set.
                if c.accounting_type != Accounting::One
                    && waldur.contains_key(key)
                    && (backend.trunc() / c.unit_factor) as i64 != v as i64
                {
                    return Err(BackendError::invalid_field(
                        "limits",
                        format!(
                            "{key}={v} cannot be represented: with unit_factor {} it would read back as {}",
                            c.unit_factor,
                            (backend.trunc() / c.unit_factor) as i64
                        ),
                    ));
                }
                *sums.entry(key.clone()).or_insert(0.0) += backend;
            } else {
                for (target, t) in &c.target_components {
                    let backend = v * t.factor;
                    representable(key, v, t.factor, backend)?;
                    *sums.entry(target.clone()).or_insert(0.0) += backend;
                }
            }
        }
        for (k, v) in &sums {
            if *v > MAX_TRES_VALUE {
                return Err(BackendError::invalid_field(
                    "limits",
                    format!("{k}: {v} TRES-minutes exceed the largest value this backend writes"),
                ));
            }
        }
        let mut out: BTreeMap<String, i64> = sums.into_iter().map(|(k, v)| (k, v as i64)).collect();
        let known = self.cluster_tres().await;
        if !known.is_empty() {
            out.retain(|k, _| known.contains(k));
        }
        Ok(out)
    }

    /// Waldur-unit limits of a newly created resource: as requested, plus
    /// the fixed limits of usage-type components (the original's
    /// `_collect_resource_limits`).
    pub(crate) fn created_limits(&self, requested: &Limits) -> Limits {
        let mut out = requested.clone();
        for (key, c) in &self.settings.components {
            if c.accounting_type == Accounting::Usage
                && let Some(l) = c.limit
            {
                out.insert(key.clone(), l as i64);
            }
        }
        out
    }

    /// TRES the usage parser keeps: passthrough components and every target.
    pub(crate) fn usage_tres(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for (key, c) in &self.settings.components {
            if c.target_components.is_empty() {
                out.push(key.as_str());
            } else {
                out.extend(c.target_components.keys().map(String::as_str));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Raw TRES usage → Waldur amounts per component: passthrough ÷
    /// unit_factor rounded to 2 decimals; mapped: Σ target ÷ factor rounded
    /// to an integer (the original's reverse mapping).
    pub(crate) fn waldur_usage(&self, tres: &BTreeMap<String, f64>) -> Amounts {
        self.settings
            .components
            .iter()
            .map(|(key, c)| {
                let v = if c.target_components.is_empty() {
                    crate::parse::round2(tres.get(key).copied().unwrap_or(0.0) / c.unit_factor)
                } else {
                    c.target_components
                        .iter()
                        .map(|(t, tc)| tres.get(t).copied().unwrap_or(0.0) / tc.factor)
                        .sum::<f64>()
                        .round()
                };
                (key.clone(), v)
            })
            .collect()
    }

    /// `GrpTRESMins` text → Waldur limits of configured components.
    pub(crate) fn waldur_limits(&self, grp_tres_mins: &str) -> Limits {
        tres(grp_tres_mins)
            .into_iter()
            .filter_map(|(k, raw)| {
                let c = self.settings.components.get(&k)?;
                Some((
                    k.clone(),
                    (limit_value(&k, &raw) as f64 / c.unit_factor) as i64,
                ))
            })
            .collect()
    }

    /// SetResourceLimits: the full state, components left out cleared.
    pub(crate) async fn set_limits(
        &self,
        backend_id: &str,
        limits: Limits,
        resource: Option<ResourceContext>,
    ) -> BackendResult<LimitsApplied> {
        let id = crate::account_id(backend_id)?;
        let mut backend = self
            .backend_limits(&limits, false, resource.as_ref())
            .await?;
        self.owned(&id).await?;
        // Full state: usage-type components keep their configured fixed
        // limit; other TRES left out are cleared (-1).
        let mut fixed = Limits::new();
        for (key, c) in &self.settings.components {
            if c.accounting_type == Accounting::Usage
                && !limits.contains_key(key)
                && let Some(l) = c.limit
            {
                fixed.insert(key.clone(), l as i64);
            }
        }
        for (k, v) in self
            .backend_limits(&fixed, false, resource.as_ref())
            .await?
        {
            backend.entry(k).or_insert(v);
        }
        let known = self.cluster_tres().await;
        for key in self.usage_tres() {
            if !backend.contains_key(key) && (known.is_empty() || known.contains(key)) {
                backend.insert(key.to_owned(), -1);
            }
        }
        self.slurm
            .sacctmgr_write(args![
                "modify",
                "account",
                id,
                "set",
                format!("GrpTRESMins={}", join_tres(&backend))
            ])
            .await?;
        let applied = limits
            .into_iter()
            .filter(|(k, _)| backend.get(k).is_some_and(|v| *v >= 0))
            .collect();
        Ok(LimitsApplied {
            limits: applied,
            ready: true,
            operation_id: None,
        })
    }

    /// SetUserLimits: `MaxTRESMins` of the member's association.
    pub(crate) async fn set_user_limits_of(
        &self,
        backend_id: &str,
        username: &str,
        limits: Limits,
    ) -> BackendResult<()> {
        let id = crate::account_id(backend_id)?;
        if !names::valid_user(username) {
            return Err(BackendError::invalid_field(
                "username",
                "is not a valid local username",
            ));
        }
        let mut backend = self.backend_limits(&limits, false, None).await?;
        let rows = self.owned(&id).await?;
        if !rows.members(&id).contains(username) {
            return Err(BackendError::invalid_field(
                "username",
                format!("{username} is not a member of {id}"),
            ));
        }
        for key in self.usage_tres() {
            backend.entry(key.to_owned()).or_insert(-1);
        }
        let known = self.cluster_tres().await;
        backend.retain(|k, _| known.is_empty() || known.contains(k));
        self.slurm
            .sacctmgr_write(args![
                "modify",
                "user",
                username,
                "where",
                format!("account={id}"),
                "set",
                format!("MaxTRESMins={}", join_tres(&backend))
            ])
            .await
            .map(drop)
    }

    /// GetUserLimits: members with `MaxTRESMins`.
    pub(crate) async fn user_limits(
        &self,
        backend_id: &str,
    ) -> BackendResult<BTreeMap<String, Limits>> {
        let id = crate::account_id(backend_id)?;
        let rows = self.readable(&id).await?;
        Ok(self.user_limits_in(&rows, &id))
    }

    /// Per-user limits (`MaxTRESMins` of the user rows) of `id` in a
    /// listing.
    pub(crate) fn user_limits_in(&self, rows: &Rows, id: &str) -> BTreeMap<String, Limits> {
        rows.users(id)
            .map(|r| (r.user.clone(), self.waldur_limits(&r.max_tres_mins)))
            .filter(|(_, l)| !l.is_empty())
            .collect()
    }
}

/// A Waldur value × factor that SLURM can hold exactly.
fn representable(key: &str, v: f64, factor: f64, backend: f64) -> BackendResult<()> {
    if !backend.is_finite() || !(0.0..=MAX_TRES_VALUE).contains(&backend) {
        return Err(BackendError::invalid_field(
            "limits",
            format!("{key}={v} × {factor} cannot be represented as a TRES limit"),
        ));
    }
    Ok(())
}
