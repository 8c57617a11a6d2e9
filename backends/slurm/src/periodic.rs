//! Periodic settings from Waldur's SLURM usage policies: fairshare, a TRES
//! limit, a raw-usage reset. The payload is typed and checked before
//! anything runs: a negative, non-finite or out-of-range number is
//! INVALID_ARGUMENT naming the field (`GrpTRESMins=cpu=-1` would
//! remove the limit in SLURM; `1e30` would have become `i64::MAX`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use waldur_backend_sdk::types::JsonObject;
use waldur_backend_sdk::{BackendError, BackendResult};

use crate::limits::MAX_TRES_VALUE;
use crate::parse::{limit_value, tres};
use crate::settings::LimitType;
use crate::{SlurmBackend, args, names};

/// The largest fairshare written (SLURM keeps it in 32 bits).
const MAX_FAIRSHARE: f64 = 2_147_483_647.0;

/// The payload as Waldur sends it; other keys (Waldur adds some) are
/// ignored.
#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default)]
    fairshare: Option<Value>,
    #[serde(default)]
    grp_tres_mins: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    max_tres_mins: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    limit_type: Option<LimitType>,
    #[serde(default)]
    reset_raw_usage: Option<bool>,
}

/// Checked periodic settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeriodicSettings {
    /// Fairshare to set, when given and not zero.
    pub fairshare: Option<i64>,
    /// The limit to set: its type and TRES values.
    pub limits: Option<(LimitType, BTreeMap<String, i64>)>,
    /// Reset RawUsage.
    pub reset_raw_usage: bool,
}

/// A non-negative, finite, in-range whole number (fractions are cut).
fn count(field: &str, v: &Value, max: f64) -> BackendResult<i64> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| BackendError::invalid_field(field, format!("{v} is not a number")))?;
    if !n.is_finite() || n < 0.0 {
        return Err(BackendError::invalid_field(
            field,
            format!("{n} is negative or not finite"),
        ));
    }
    if n > max {
        return Err(BackendError::invalid_field(
            field,
            format!("{n} exceeds the largest value {max}"),
        ));
    }
    // SLURM counts whole units (minutes, shares): a fraction of one is
    // dropped, as the original did; anything out of range was refused above.
    Ok(n.trunc() as i64)
}

impl PeriodicSettings {
    /// Checks Waldur's payload; `default_type` applies when it names none.
    pub fn parse(settings: JsonObject, default_type: LimitType) -> BackendResult<Self> {
        let raw: Raw = serde_json::from_value(Value::Object(settings))
            .map_err(|e| BackendError::invalid_field("settings", e.to_string()))?;
        let fairshare = match &raw.fairshare {
            None | Some(Value::Null) => None,
            Some(v) => Some(count("settings.fairshare", v, MAX_FAIRSHARE)?).filter(|f| *f != 0),
        };
        let chosen = [
            ("grp_tres_mins", &raw.grp_tres_mins),
            ("max_tres_mins", &raw.max_tres_mins),
        ]
        .into_iter()
        .find_map(|(name, m)| m.as_ref().filter(|m| !m.is_empty()).map(|m| (name, m)));
        let limits = match chosen {
            None => None,
            Some((name, map)) => {
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    if !names::valid_account(&k.replace('/', "")) {
                        return Err(BackendError::invalid_field(
                            &format!("settings.{name}"),
                            format!("{k:?} is not a TRES name"),
                        ));
                    }
                    out.insert(
                        k.clone(),
                        count(&format!("settings.{name}.{k}"), v, MAX_TRES_VALUE)?,
                    );
                }
                Some((raw.limit_type.unwrap_or(default_type), out))
            }
        };
        Ok(Self {
            fairshare,
            limits,
            reset_raw_usage: raw.reset_raw_usage == Some(true),
        })
    }
}

impl SlurmBackend {
    /// ApplyPeriodicSettings: only what differs is changed; the reset runs
    /// whenever asked.
    pub(crate) async fn periodic(
        &self,
        backend_id: &str,
        settings: JsonObject,
    ) -> BackendResult<Vec<String>> {
        if !self.settings.periodic_limits.enabled {
            return Err(BackendError::unimplemented("ApplyPeriodicSettings"));
        }
        let id = crate::account_id(backend_id)?;
        let wanted = PeriodicSettings::parse(settings, self.settings.periodic_limits.limit_type)?;
        self.owned(&id).await?;
        let out = self
            .slurm
            .sacctmgr_read(args![
                "show",
                "assoc",
                "where",
                format!("accounts={id}"),
                "format=account,user,fairshare,grptresmins,maxtresmins,grptres"
            ])
            .await?;
        let rows = crate::parse::rows(&out);
        let row = rows
            .iter()
            .find(|r| r.first() == Some(&id.as_str()) && r.get(1).is_some_and(|u| u.is_empty()))
            .ok_or_else(|| BackendError::resource_not_found(backend_id))?;
        let mut actions = Vec::new();
        if let Some(fs) = wanted.fairshare {
            let current: i64 = row.get(2).and_then(|v| v.parse().ok()).unwrap_or(-1);
            if current != fs {
                self.slurm
                    .sacctmgr_write(args![
                        "modify",
                        "account",
                        id,
                        "set",
                        format!("fairshare={fs}")
                    ])
                    .await?;
                actions.push(format!("set fairshare={fs} on {id}"));
            }
        }
        if let Some((limit_type, limits)) = &wanted.limits {
            let column = match limit_type {
                LimitType::GrpTresMins => 3,
                LimitType::MaxTresMins => 4,
                LimitType::GrpTres => 5,
            };
            let current = tres(row.get(column).copied().unwrap_or(""));
            let name = limit_type.as_str();
            for (k, target) in limits {
                if current.get(k).map(|c| limit_value(k, c) as i64) != Some(*target) {
                    self.slurm
                        .sacctmgr_write(args![
                            "modify",
                            "account",
                            id,
                            "set",
                            format!("{name}={k}={target}")
                        ])
                        .await?;
                    actions.push(format!("set {name}={k}={target} on {id}"));
                }
            }
        }
        if wanted.reset_raw_usage {
            self.slurm
                .sacctmgr_write(args!["modify", "account", id, "set", "RawUsage=0"])
                .await?;
            actions.push(format!("reset RawUsage on {id}"));
        }
        Ok(actions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> BackendResult<PeriodicSettings> {
        let serde_json::Value::Object(o) = v else {
            unreachable!()
        };
        PeriodicSettings::parse(o, LimitType::GrpTresMins)
    }

    #[test]
    fn negative_non_finite_and_huge_limits_are_refused_naming_the_field() {
        for (bad, field) in [
            (
                serde_json::json!({"grp_tres_mins": {"cpu": -1}}),
                "settings.grp_tres_mins.cpu",
            ),
            (
                serde_json::json!({"grp_tres_mins": {"cpu": 1e30}}),
                "settings.grp_tres_mins.cpu",
            ),
            (
                serde_json::json!({"grp_tres_mins": {"cpu": null}}),
                "settings.grp_tres_mins.cpu",
            ),
            (
                serde_json::json!({"grp_tres_mins": {"cpu": "lots"}}),
                "settings.grp_tres_mins.cpu",
            ),
            (serde_json::json!({"fairshare": -3}), "settings.fairshare"),
            (serde_json::json!({"fairshare": 1e12}), "settings.fairshare"),
        ] {
            let e = parse(bad.clone()).unwrap_err();
            assert_eq!(e.reason, "INVALID_FIELD", "{bad}");
            assert_eq!(e.metadata["field"], field, "{bad}");
        }
        let e = parse(serde_json::json!({"limit_type": "Everything"})).unwrap_err();
        assert_eq!(e.metadata["field"], "settings");
    }

    #[test]
    fn good_settings_are_typed() {
        let s = parse(serde_json::json!({
            "fairshare": 250, "max_tres_mins": {"cpu": "600.7"}, "limit_type": "MaxTRESMins",
            "reset_raw_usage": true, "qos": "ignored"
        }))
        .unwrap();
        assert_eq!(s.fairshare, Some(250));
        assert_eq!(
            s.limits,
            Some((
                LimitType::MaxTresMins,
                BTreeMap::from([("cpu".into(), 600)])
            ))
        );
        assert!(s.reset_raw_usage);
    }
}
