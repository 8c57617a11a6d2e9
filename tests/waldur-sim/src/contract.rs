//! Validation of recorded calls against the official Waldur OpenAPI schema
//! (`tests/waldur-sim/openapi/waldur-openapi-8.0.5.yaml`, as published by
//! Waldur): every
//! request body sent and every 200/201 answer, per operation. Used by the
//! simulator's and the coordinator's contract tests.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::Call;

/// Where the schema lives.
pub const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/openapi/waldur-openapi-8.0.5.yaml"
);

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Calls validated, by `METHOD route`.
    pub checked: BTreeMap<String, usize>,
    /// Calls whose operation the schema lacks.
    pub not_in_schema: BTreeSet<String>,
    /// Violations, one line each.
    pub failures: Vec<String>,
}

/// The schema, ready to validate against.
pub struct OpenApi {
    components: Value,
    paths: Map<String, Value>,
}

/// OpenAPI 3.0 `nullable: true` → JSON Schema `null` allowed.
fn nullable_to_json_schema(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for child in o.values_mut() {
                nullable_to_json_schema(child);
            }
            if o.remove("nullable") == Some(Value::Bool(true)) {
                let inner = Value::Object(std::mem::take(o));
                o.insert("anyOf".into(), json!([inner, {"type": "null"}]));
            }
        }
        Value::Array(a) => a.iter_mut().for_each(nullable_to_json_schema),
        _ => {}
    }
}

/// Whether an OpenAPI path template matches a recorded route.
fn template_matches(template: &str, route: &str) -> bool {
    let t: Vec<&str> = template.trim_start_matches("/api/").split('/').collect();
    let r: Vec<&str> = route.split('/').collect();
    t.len() == r.len()
        && t.iter()
            .zip(&r)
            .all(|(a, b)| a == b || (a.starts_with('{') && *b == "{uuid}"))
}

impl OpenApi {
    /// Reads the schema. The one known deviation is applied: 8.0.5 types
    /// the read-only `usage` of usage records as an integer, but amounts
    /// have two decimal places, which must survive.
    pub fn load() -> Result<Self, String> {
        let text =
            std::fs::read_to_string(SCHEMA).map_err(|e| format!("cannot read {SCHEMA}: {e}"))?;
        let mut doc: Value = serde_norway::from_str(&text).map_err(|e| e.to_string())?;
        nullable_to_json_schema(&mut doc);
        for schema in ["ComponentUsage", "ComponentUserUsage"] {
            let usage = &mut doc["components"]["schemas"][schema]["properties"]["usage"];
            if usage.is_object() {
                *usage = json!({"type": "number"});
            }
        }
        Ok(Self {
            components: doc["components"].clone(),
            paths: doc["paths"].as_object().cloned().unwrap_or_default(),
        })
    }

    fn validate(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        let root = json!({"components": self.components, "allOf": [schema]});
        let validator = jsonschema::options()
            .should_validate_formats(false)
            .build(&root)
            .map_err(|e| format!("schema does not compile: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .take(3)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Checks every call's request body and successful answer.
    pub fn check(&self, calls: &[Call]) -> Report {
        let mut report = Report::default();
        for call in calls {
            let key = format!("{} {}", call.method, call.route);
            let method = call.method.to_lowercase();
            let Some(op) = self
                .paths
                .iter()
                .find(|(t, item)| template_matches(t, &call.route) && item.get(&method).is_some())
                .map(|(_, item)| &item[&method])
            else {
                report.not_in_schema.insert(key);
                continue;
            };
            if let Some(body) = &call.body {
                let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                if schema.is_null() {
                    report
                        .failures
                        .push(format!("{key}: sent a body but the operation takes none"));
                } else if let Err(e) = self.validate(schema, body) {
                    report.failures.push(format!("{key} request: {e}"));
                }
            }
            if let Some(response) = &call.response
                && (call.status == 200 || call.status == 201)
            {
                let schema = &op["responses"][call.status.to_string()]["content"]["application/json"]
                    ["schema"];
                if !schema.is_null()
                    && let Err(e) = self.validate(schema, response)
                {
                    report.failures.push(format!("{key} response: {e}"));
                }
            }
            *report.checked.entry(key).or_default() += 1;
        }
        report
    }
}
