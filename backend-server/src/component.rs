//! Waldur's optional component fields, as a backend's settings carry them.
//!
//! A backend describes its components (`ListComponents`) and
//! `waldur-coordinator load-components` publishes them to the offering. Besides what the
//! backend itself needs (label, unit, accounting type, factor), Waldur
//! knows display and ordering rules the backend passes through unchanged:
//! bounds, a pre-filled value, an article code, prepaid durations. A
//! backend's component settings embed [`ComponentFields`] with
//! `#[serde(flatten)]`, so the fields sit beside the backend's own ones, as
//! in the original agent's `backend_components`.

use serde::Deserialize;

use crate::types::{Component, LimitPeriod};

/// The period a limit applies to, as Waldur spells it.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// Per month.
    Month,
    /// Per quarter.
    Quarterly,
    /// Per year.
    Annual,
    /// Over the life of the resource.
    Total,
}

/// Optional Waldur component fields passed through to the offering.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ComponentFields {
    /// Longer description.
    #[serde(default)]
    pub description: Option<String>,
    /// Smallest value a user may order.
    #[serde(default)]
    pub min_value: Option<f64>,
    /// Largest value a user may order.
    #[serde(default)]
    pub max_value: Option<f64>,
    /// Largest value available in total.
    #[serde(default)]
    pub max_available_limit: Option<f64>,
    /// Value pre-filled in the order form.
    #[serde(default)]
    pub default_limit: Option<f64>,
    /// Period a limit applies to.
    #[serde(default)]
    pub limit_period: Option<Period>,
    /// Billing article code.
    #[serde(default)]
    pub article_code: Option<String>,
    /// An on/off component.
    #[serde(default)]
    pub is_boolean: Option<bool>,
    /// Billed in advance (implied by a one-time accounting type).
    #[serde(default)]
    pub is_prepaid: Option<bool>,
    /// Shortest prepaid duration, months.
    #[serde(default)]
    pub min_prepaid_duration: Option<i32>,
    /// Longest prepaid duration, months.
    #[serde(default)]
    pub max_prepaid_duration: Option<i32>,
    /// Step of prepaid durations, months.
    #[serde(default)]
    pub prepaid_duration_step: Option<i32>,
    /// Shortest renewal, months.
    #[serde(default)]
    pub min_renewal_duration: Option<i32>,
    /// Longest renewal, months.
    #[serde(default)]
    pub max_renewal_duration: Option<i32>,
    /// Step of renewals, months.
    #[serde(default)]
    pub renewal_duration_step: Option<i32>,
}

impl ComponentFields {
    /// Why the fields cannot describe a component, if they cannot: bounds
    /// the wrong way round, negative values or durations.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("min_value", self.min_value),
            ("max_value", self.max_value),
            ("max_available_limit", self.max_available_limit),
            ("default_limit", self.default_limit),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("{name} must be a non-negative number, found {v}"));
            }
        }
        if let (Some(lo), Some(hi)) = (self.min_value, self.max_value)
            && lo > hi
        {
            return Err(format!("min_value {lo} is above max_value {hi}"));
        }
        if let Some(d) = self.default_limit
            && (self.min_value.is_some_and(|lo| d < lo) || self.max_value.is_some_and(|hi| d > hi))
        {
            return Err(format!("default_limit {d} is outside min_value..max_value"));
        }
        for (lo_name, lo, hi_name, hi) in [
            (
                "min_prepaid_duration",
                self.min_prepaid_duration,
                "max_prepaid_duration",
                self.max_prepaid_duration,
            ),
            (
                "min_renewal_duration",
                self.min_renewal_duration,
                "max_renewal_duration",
                self.max_renewal_duration,
            ),
        ] {
            if let (Some(lo), Some(hi)) = (lo, hi)
                && lo > hi
            {
                return Err(format!("{lo_name} {lo} is above {hi_name} {hi}"));
            }
        }
        for (name, step) in [
            ("prepaid_duration_step", self.prepaid_duration_step),
            ("renewal_duration_step", self.renewal_duration_step),
        ] {
            if step == Some(0) {
                return Err(format!("{name} must be at least 1"));
            }
        }
        for (name, v) in [
            ("min_prepaid_duration", self.min_prepaid_duration),
            ("max_prepaid_duration", self.max_prepaid_duration),
            ("prepaid_duration_step", self.prepaid_duration_step),
            ("min_renewal_duration", self.min_renewal_duration),
            ("max_renewal_duration", self.max_renewal_duration),
            ("renewal_duration_step", self.renewal_duration_step),
        ] {
            if let Some(v) = v
                && v < 0
            {
                return Err(format!("{name} must not be negative, found {v}"));
            }
        }
        Ok(())
    }

    /// Copies the fields that are set into a component definition.
    pub fn apply(&self, c: &mut Component) {
        if let Some(d) = &self.description {
            c.description = d.clone();
        }
        c.min_value = self.min_value.or(c.min_value);
        c.max_value = self.max_value.or(c.max_value);
        c.max_available_limit = self.max_available_limit.or(c.max_available_limit);
        c.default_limit = self.default_limit.or(c.default_limit);
        if let Some(p) = self.limit_period {
            c.set_limit_period(match p {
                Period::Month => LimitPeriod::Month,
                Period::Quarterly => LimitPeriod::Quarterly,
                Period::Annual => LimitPeriod::Annual,
                Period::Total => LimitPeriod::Total,
            });
        }
        if let Some(a) = &self.article_code {
            c.article_code = a.clone();
        }
        if let Some(b) = self.is_boolean {
            c.is_boolean = b;
        }
        if let Some(p) = self.is_prepaid {
            c.is_prepaid = p;
        }
        c.min_prepaid_duration = self.min_prepaid_duration.or(c.min_prepaid_duration);
        c.max_prepaid_duration = self.max_prepaid_duration.or(c.max_prepaid_duration);
        c.prepaid_duration_step = self.prepaid_duration_step.or(c.prepaid_duration_step);
        c.min_renewal_duration = self.min_renewal_duration.or(c.min_renewal_duration);
        c.max_renewal_duration = self.max_renewal_duration.or(c.max_renewal_duration);
        c.renewal_duration_step = self.renewal_duration_step.or(c.renewal_duration_step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_fields_reach_the_component_and_unset_ones_leave_it_alone() {
        let fields: ComponentFields = serde_json::from_value(serde_json::json!({
            "description": "CPU time",
            "max_value": 1000.0,
            "limit_period": "annual",
            "article_code": "AC-1",
            "renewal_duration_step": 3,
        }))
        .expect("fields parse");
        let mut c = Component {
            key: "cpu".into(),
            default_limit: Some(5.0),
            ..Component::default()
        };
        fields.apply(&mut c);
        assert_eq!(c.description, "CPU time");
        assert_eq!(c.max_value, Some(1000.0));
        assert_eq!(c.limit_period(), LimitPeriod::Annual);
        assert_eq!(c.article_code, "AC-1");
        assert_eq!(c.renewal_duration_step, Some(3));
        assert_eq!(c.default_limit, Some(5.0));
        assert_eq!(c.min_value, None);
    }

    #[test]
    fn bounds_the_wrong_way_round_or_negative_are_refused() {
        let wrong = ComponentFields {
            min_value: Some(10.0),
            max_value: Some(1.0),
            ..ComponentFields::default()
        };
        assert!(wrong.check().unwrap_err().contains("above max_value"));
        let negative = ComponentFields {
            prepaid_duration_step: Some(-1),
            ..ComponentFields::default()
        };
        assert!(negative.check().is_err());
        assert!(ComponentFields::default().check().is_ok());
    }

    #[test]
    fn an_unknown_limit_period_is_refused() {
        let r: Result<ComponentFields, _> =
            serde_json::from_value(serde_json::json!({"limit_period": "weekly"}));
        assert!(r.is_err());
    }
}
