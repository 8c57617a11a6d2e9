//! `waldur-coordinator plan`: every enabled task of the selected offerings
//! as a dry run. It reads Waldur and asks backends read-only questions
//! (GetResource, GetUserLimits, GetUsageReport, EvaluateOrder,
//! GenerateBackendId) and changes nothing: no order moves, no member is
//! added or removed, no usage is written, no username is generated.

use serde::Serialize;

use crate::processors::membership::MembershipPlan;
use crate::processors::orders::OrderPlan;
use crate::runtime::OfferingRuntime;

/// What one offering's next cycles would change.
#[derive(Debug, Clone, Serialize)]
pub struct OfferingPlan {
    /// Offering name.
    pub offering: String,
    /// Open orders and what would happen to each (orders task on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orders: Option<Vec<OrderPlan>>,
    /// Membership changes (membership task on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership: Option<MembershipPlan>,
    /// Usage that would be written (report task on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsagePlan>,
    /// Tasks whose plan could not be made, and why.
    pub errors: Vec<String>,
}

/// Usage records a report cycle would write.
#[derive(Debug, Clone, Serialize)]
pub struct UsagePlan {
    /// Periods considered, oldest first.
    pub periods: Vec<String>,
    /// Totals to write: resource, period, component → amount.
    pub writes: Vec<UsageWrite>,
    /// Resource-periods Waldur already holds.
    pub unchanged: usize,
    /// Decreases that would be refused: resource, component, old, new.
    pub refused: Vec<(String, String, f64, f64)>,
}

/// One `set_usage` a report cycle would send.
#[derive(Debug, Clone, Serialize)]
pub struct UsageWrite {
    /// Waldur resource UUID.
    pub resource: String,
    /// `YYYY-MM`.
    pub period: String,
    /// Component → amount, as sent.
    pub amounts: std::collections::BTreeMap<String, String>,
}

/// The plans of the given offerings.
pub async fn plan(offerings: &[&OfferingRuntime]) -> Vec<OfferingPlan> {
    let mut out = Vec::new();
    for o in offerings {
        let mut p = OfferingPlan {
            offering: o.config.name.clone(),
            orders: None,
            membership: None,
            usage: None,
            errors: Vec::new(),
        };
        if let Some(t) = &o.orders {
            match t.processor.plan().await {
                Ok(orders) => p.orders = Some(orders),
                Err(e) => p.errors.push(format!("orders: {e}")),
            }
        }
        if let Some(t) = &o.membership {
            match t.processor.plan().await {
                Ok(m) => p.membership = Some(m),
                Err(e) => p.errors.push(format!("membership: {e}")),
            }
        }
        if let Some(t) = &o.report {
            match t.processor.plan().await {
                Ok(s) => {
                    p.usage = Some(UsagePlan {
                        periods: s.periods,
                        writes: s
                            .planned
                            .into_iter()
                            .map(|(resource, period, amounts)| UsageWrite {
                                resource,
                                period,
                                amounts,
                            })
                            .collect(),
                        unchanged: s.totals_unchanged,
                        refused: s.decreases_refused,
                    });
                    p.errors
                        .extend(s.errors.into_iter().map(|e| format!("usage: {e}")));
                }
                Err(e) => p.errors.push(format!("usage: {e}")),
            }
        }
        out.push(p);
    }
    out
}

/// The plans as text for a terminal.
pub fn render(plans: &[OfferingPlan]) -> String {
    let mut out = String::new();
    let mut line = |indent: usize, text: String| {
        out.push_str(&"  ".repeat(indent));
        out.push_str(&text);
        out.push('\n');
    };
    for p in plans {
        line(0, format!("offering {}", p.offering));
        if let Some(orders) = &p.orders {
            line(1, format!("orders: {} open", orders.len()));
            for o in orders {
                line(
                    2,
                    format!("{} {} ({}): {}", o.order_type, o.order, o.state, o.action),
                );
            }
        }
        if let Some(m) = &p.membership {
            line(
                1,
                format!(
                    "membership: {} resources, {} with changes, {} offering users waiting for a username",
                    m.resources,
                    m.changes.len(),
                    m.usernames_pending
                ),
            );
            for r in &m.changes {
                line(2, format!("{}: {}", r.backend_id, describe(r)));
            }
            if let Some(t) = &m.breaker {
                line(2, format!("BREAKER: {}", t.message));
            }
        }
        if let Some(u) = &p.usage {
            line(
                1,
                format!(
                    "usage: periods {}, {} totals to write, {} unchanged, {} decreases refused",
                    u.periods.join(" "),
                    u.writes.len(),
                    u.unchanged,
                    u.refused.len()
                ),
            );
            for w in &u.writes {
                let amounts: Vec<String> =
                    w.amounts.iter().map(|(k, v)| format!("{k}={v}")).collect();
                line(
                    2,
                    format!("{} {}: {}", w.resource, w.period, amounts.join(" ")),
                );
            }
        }
        for e in &p.errors {
            line(1, format!("error: {e}"));
        }
    }
    out
}

fn describe(r: &crate::processors::membership::ResourcePlan) -> String {
    let mut parts = Vec::new();
    if r.missing {
        parts.push("missing on the backend".to_owned());
    }
    if let Some(e) = &r.error {
        parts.push(format!("would be marked erred: {e}"));
    }
    if let Some(e) = &r.deferred {
        parts.push(format!("deferred: {e}"));
    }
    if !r.add.is_empty() {
        parts.push(format!("add {}", r.add.join(", ")));
    }
    if !r.remove.is_empty() {
        parts.push(format!("remove {}", r.remove.join(", ")));
    }
    if let Some(a) = &r.access {
        parts.push(format!("set {a}"));
    }
    if let Some(l) = &r.limits_to_waldur {
        parts.push(format!("write limits {l:?} to waldur"));
    }
    if r.metadata_to_waldur {
        parts.push("write backend metadata to waldur".into());
    }
    for c in &r.user_limits {
        parts.push(format!("set {}'s limits to {:?}", c.username, c.limits));
    }
    for w in &r.withheld {
        parts.push(format!("withheld: {w}"));
    }
    parts.join("; ")
}
