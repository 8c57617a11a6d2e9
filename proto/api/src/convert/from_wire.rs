//! Client direction, responses: wire messages into domain values.
//!
//! An answer comes from another process, possibly in another language, so
//! these never fail and never panic: an enum value this side does not know
//! reads as "unknown" (`None`, or the enum's unspecified value), a missing
//! message as its default.

use std::collections::BTreeMap;

use tonic::Code;
use waldur_backend_proto::v1 as wire;

use super::struct_to_json;
use crate::BackendError;
use crate::types::*;

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Identity of the backend.
pub fn backend_info(r: wire::GetBackendInfoResponse) -> BackendInfo {
    BackendInfo {
        name: r.name,
        version: r.version,
        vendor_version: some(r.vendor_version),
    }
}

/// A probe answer.
pub fn probe(r: wire::ProbeResponse) -> Probe {
    Probe {
        ready: r.ready,
        message: r.message,
    }
}

/// Self checks.
pub fn diagnostics(r: wire::GetDiagnosticsResponse) -> Diagnostics {
    Diagnostics {
        checks: r
            .checks
            .into_iter()
            .map(|c| DiagnosticCheck {
                status: c.status(),
                name: c.name,
                message: c.message,
            })
            .collect(),
        info: r.info.into_iter().collect(),
    }
}

/// Capabilities this side knows (values from a newer contract are left
/// out: nothing here could use them).
pub fn capabilities(values: Vec<i32>) -> std::collections::HashSet<Capability> {
    values
        .into_iter()
        .filter_map(|v| Capability::try_from(v).ok())
        .filter(|c| *c != Capability::Unspecified)
        .collect()
}

/// What the backend knows of a resource.
pub fn resource_info(r: wire::ResourceInfo) -> ResourceInfo {
    let access = match AccessLevel::try_from(r.access) {
        Ok(AccessLevel::Unspecified) | Err(_) => None,
        Ok(a) => Some(a),
    };
    ResourceInfo {
        backend_id: r.backend_id,
        parent_id: r.parent_id,
        effective_id: r.effective_id,
        description: r.description,
        limits: r.limits.into_iter().collect(),
        metadata: struct_to_json(r.metadata),
        endpoints: r.endpoints,
        users: r.users,
        credentials: Secrets(r.credentials.into_iter().collect()),
        access,
    }
}

/// One user's result. A failure keeps the code and message the backend
/// gave; an outcome this side does not know counts as a failure.
pub fn user_result(r: wire::UserResult) -> UserResult {
    let outcome = match wire::UserOutcome::try_from(r.outcome) {
        Ok(wire::UserOutcome::Applied) => Outcome::Applied,
        Ok(wire::UserOutcome::Unchanged) => Outcome::Unchanged,
        Ok(wire::UserOutcome::Failed) => {
            Outcome::Failed(BackendError::new(Code::from_i32(r.code), "", r.message))
        }
        _ => Outcome::Failed(BackendError::new(
            Code::Unknown,
            "",
            format!("the backend gave no known outcome ({})", r.outcome),
        )),
    };
    UserResult {
        username: r.username,
        outcome,
    }
}

/// Per-user results.
pub fn user_results(list: Vec<wire::UserResult>) -> Vec<UserResult> {
    list.into_iter().map(user_result).collect()
}

/// The result of CreateResource.
pub fn created(r: wire::CreateResourceResponse) -> Created {
    Created {
        resource: resource_info(r.resource.unwrap_or_default()),
        ready: r.ready,
        operation_id: some(r.operation_id),
        user_results: user_results(r.user_results),
    }
}

/// The result of DeleteResource.
pub fn deleted(r: wire::DeleteResourceResponse) -> Deleted {
    Deleted {
        ready: r.ready,
        operation_id: some(r.operation_id),
        existed: r.existed,
    }
}

/// The result of SetResourceLimits.
pub fn limits_applied(r: wire::SetResourceLimitsResponse) -> LimitsApplied {
    LimitsApplied {
        limits: r.limits.into_iter().collect(),
        ready: r.ready,
        operation_id: some(r.operation_id),
    }
}

/// Usage of one resource.
pub fn resource_usage(u: wire::ResourceUsage) -> ResourceUsage {
    ResourceUsage {
        backend_id: u.backend_id,
        total: u.total.into_iter().collect(),
        users: u
            .users
            .into_iter()
            .map(|x| (x.username, x.usage.into_iter().collect()))
            .collect(),
    }
}

/// Per-user limits of a resource.
pub fn user_limits(list: Vec<wire::UserLimits>) -> BTreeMap<String, Limits> {
    list.into_iter()
        .map(|u| (u.username, u.limits.into_iter().collect()))
        .collect()
}

/// A decision on a pending order (an unknown value reads as unspecified,
/// which leaves the order pending).
pub fn decision(r: wire::EvaluateOrderResponse) -> Decision {
    Decision {
        decision: r.decision(),
        message: r.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_values_from_a_newer_backend_read_as_unknown() {
        let info = resource_info(wire::ResourceInfo {
            access: 99,
            ..Default::default()
        });
        assert_eq!(info.access, None);
        let r = user_result(wire::UserResult {
            username: "ada".into(),
            outcome: 42,
            ..Default::default()
        });
        assert!(matches!(r.outcome, Outcome::Failed(_)));
        assert_eq!(
            capabilities(vec![Capability::Resources as i32, 9999, 0]),
            [Capability::Resources].into_iter().collect()
        );
        let d = decision(wire::EvaluateOrderResponse {
            decision: 77,
            message: String::new(),
        });
        assert_eq!(d.decision, OrderDecision::Unspecified);
    }

    #[test]
    fn a_failed_user_keeps_the_backends_code_and_message() {
        let r = user_result(wire::UserResult {
            username: "ada".into(),
            outcome: wire::UserOutcome::Failed as i32,
            message: "no such user".into(),
            code: Code::NotFound as i32,
        });
        match r.outcome {
            Outcome::Failed(e) => {
                assert_eq!(e.code, Code::NotFound);
                assert_eq!(e.message, "no such user");
            }
            other => panic!("{other:?}"),
        }
    }
}
