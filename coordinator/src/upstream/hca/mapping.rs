//! The resource-type table: a request's `type` (its schema's title) selects
//! the schema that checks `specification`, the backend instance, and the
//! templates that turn the request into a backend `CreateResource`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use waldur_backend_api::types::ResourceContext;
use waldur_runtime::SettingError;

use super::config::{LimitSource, ResourceTypeConfig, TargetPolicy};
use super::members::Requester;

/// A refusal shown to the portal user as `ErrorV1 {type, message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Error kind (`SpecificationInvalid`, `UnknownResourceType`, or a
    /// provider's own type).
    pub kind: Cow<'static, str>,
    /// User-readable text: never secrets, internals or host names.
    pub message: String,
    /// Outcome label for metrics and logs: the kind when the adapter chose
    /// it, `refused` for a provider's own types (a bounded label set).
    pub label: &'static str,
}

impl Refusal {
    pub(crate) fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: Cow::Borrowed(kind),
            message: message.into(),
            label: kind,
        }
    }

    /// A type the provider named (configured, or the backend's reason).
    pub(crate) fn provider(kind: String, message: impl Into<String>) -> Self {
        Self {
            kind: Cow::Owned(kind),
            message: message.into(),
            label: "refused",
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new("SpecificationInvalid", message)
    }
}

/// One resource type, its schema compiled.
pub struct ResourceType {
    /// The settings.
    pub config: ResourceTypeConfig,
    /// The schema's `title`, which requests name in `type`.
    pub title: Option<String>,
    validator: jsonschema::Validator,
    /// The templates, parsed once at load.
    templates: Templates,
}

struct Templates {
    backend_id: Template,
    name: Option<Template>,
    project: Option<Template>,
    customer: Option<Template>,
}

impl std::fmt::Debug for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceType")
            .field("backend", &self.config.backend)
            .finish_non_exhaustive()
    }
}

/// What an allocation request turns into.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    /// Base name for GenerateBackendId.
    pub base: String,
    /// The resource context (its UUID derived from the correlation id).
    pub context: ResourceContext,
    /// Limits in Waldur units.
    pub limits: BTreeMap<String, i64>,
    /// Who asked: the person or group that becomes the members.
    pub requester: Requester,
}

impl ResourceType {
    /// Loads and compiles the schema (Draft 2020-12, formats checked);
    /// `base_dir` resolves a relative schema path.
    pub fn load(config: &ResourceTypeConfig, base_dir: &Path) -> Result<Self, SettingError> {
        let path = if config.schema.is_absolute() {
            config.schema.clone()
        } else {
            base_dir.join(&config.schema)
        };
        let at =
            |reason: String| SettingError::new("schema", format!("{}: {reason}", path.display()));
        let text = std::fs::read_to_string(&path).map_err(|e| at(e.to_string()))?;
        let schema: Value =
            serde_json::from_str(&text).map_err(|e| at(format!("not JSON: {e}")))?;
        Self::compile(config, &schema)
    }

    /// Compiles a schema given as JSON and checks the templates against it:
    /// a template naming a field the schema does not define would refuse
    /// every request with an error that blames the user.
    pub fn compile(config: &ResourceTypeConfig, schema: &Value) -> Result<Self, SettingError> {
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(schema)
            .map_err(|e| {
                SettingError::new("schema", format!("not a valid Draft 2020-12 schema: {e}"))
            })?;
        let parse = |key: &str, t: &Option<String>| {
            t.as_deref()
                .map(Template::parse)
                .transpose()
                .map_err(|e| SettingError::new(key, e))
        };
        let templates = Templates {
            backend_id: Template::parse(&config.backend_id)
                .map_err(|e| SettingError::new("backend_id", e))?,
            name: parse("name", &config.name)?,
            project: parse("project", &config.project)?,
            customer: parse("customer", &config.customer)?,
        };
        // Two requests must never name one backend resource: backends that
        // cannot record the requester (SLURM) would treat the second as the
        // first and share the account.
        if !templates
            .backend_id
            .0
            .iter()
            .any(|p| matches!(p, Part::RequestHash | Part::CorrelationId))
        {
            return Err(SettingError::new(
                "backend_id",
                format!(
                    "{:?} must contain {{request_hash}} (or {{correlation_id}}) so that every request gets its own resource",
                    config.backend_id
                ),
            ));
        }
        let mut pointers: Vec<String> = std::iter::once(&templates.backend_id)
            .chain(&templates.name)
            .chain(&templates.project)
            .chain(&templates.customer)
            .flat_map(Template::pointers)
            .collect();
        for (key, l) in &config.limits {
            if let LimitSource::From { from, factor, .. } = l {
                if !from.starts_with('/') {
                    return Err(SettingError::new(
                        format!("limits.{key}.from"),
                        format!("{from:?} is not a JSON pointer"),
                    ));
                }
                if !factor.is_finite() || *factor < 0.0 {
                    return Err(SettingError::new(
                        format!("limits.{key}.factor"),
                        format!("{factor} must be a finite number >= 0"),
                    ));
                }
                pointers.push(from.clone());
            }
        }
        for p in pointers {
            if let Some(field) = p.strip_prefix("/specification/")
                && !schema_defines(schema, field)
            {
                return Err(SettingError::new(
                    "schema",
                    format!("{p}: the schema defines no such field under properties"),
                ));
            }
        }
        Ok(Self {
            config: config.clone(),
            title: schema
                .get("title")
                .and_then(Value::as_str)
                .map(str::to_owned),
            validator,
            templates,
        })
    }

    /// Could `backend_id` (as the backend made it from this type's
    /// template, perhaps with a backend prefix) have come from this type?
    /// Deallocation refuses ids that could not, so the portal can only
    /// remove what Helmholtz requests created.
    pub fn could_have_made(&self, backend_id: &str) -> bool {
        self.templates.backend_id.matches_suffix_of(backend_id)
    }

    /// Checks a request body and derives the backend request.
    /// `request_key` identifies the request (service id and correlation id):
    /// the same key always gives the same resource UUID, so a redelivered
    /// request names the resource it already created.
    pub fn derive(
        &self,
        body: &Value,
        correlation_id: &str,
        request_key: &str,
    ) -> Result<Derived, Refusal> {
        let target = body
            .get("target_entity")
            .ok_or_else(|| Refusal::invalid("target_entity is missing"))?;
        let user = non_null_string(target, "user_id_target")?;
        let group = non_null_string(target, "group_urn_target")?;
        let requester = match (user, group, self.config.target) {
            (Some(_), Some(_), _) => {
                return Err(Refusal::invalid(
                    "target_entity names both a user and a group; it must name one",
                ));
            }
            (None, None, _) => {
                return Err(Refusal::invalid(
                    "target_entity names neither a user nor a group",
                ));
            }
            (Some(_), None, TargetPolicy::Group) => {
                return Err(Refusal::invalid(
                    "this resource type is for groups: set group_urn_target",
                ));
            }
            (None, Some(_), TargetPolicy::User) => {
                return Err(Refusal::invalid(
                    "this resource type is personal: set user_id_target",
                ));
            }
            (Some(u), None, _) => Requester::User(u),
            (None, Some(g), _) => Requester::Group(g),
        };
        let owner = requester.id().to_owned();
        let spec = body
            .get("specification")
            .ok_or_else(|| Refusal::invalid("specification is missing"))?;
        let problems: Vec<String> = self
            .validator
            .iter_errors(spec)
            .take(5)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_owned() } else { at };
                clip(&format!("{at}: {e}"), 200)
            })
            .collect();
        if !problems.is_empty() {
            return Err(Refusal::invalid(format!(
                "specification is invalid: {}",
                problems.join("; ")
            )));
        }

        let hash = request_hash(request_key);
        let vars = Vars {
            body,
            owner: &owner,
            correlation_id,
            request_hash: &hash[..HASH_DIGITS],
        };
        let t = &self.templates;
        let render = |t: &Option<Template>| t.as_ref().map(|t| t.render(&vars)).transpose();
        let base = slug(&t.backend_id.render(&vars)?);
        if base.is_empty() {
            return Err(Refusal::invalid("the fields naming the resource are empty"));
        }
        let name = render(&t.name)?.unwrap_or_else(|| base.clone());
        let project = render(&t.project)?;
        let customer = render(&t.customer)?;
        let mut limits = BTreeMap::new();
        for (key, source) in &self.config.limits {
            limits.insert(key.clone(), limit(key, source, body)?);
        }
        let mut attributes = serde_json::Map::new();
        attributes.insert("hca_owner".into(), Value::String(owner.clone()));
        attributes.insert(
            "hca_correlation_id".into(),
            Value::String(correlation_id.into()),
        );
        if let Some(s) = spec.as_object() {
            for (k, v) in s {
                attributes.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let context = ResourceContext {
            resource_uuid: hash[..32].to_owned(),
            name,
            slug: base.clone(),
            project_slug: project.as_deref().map(slug).unwrap_or_default(),
            project_name: project.unwrap_or_default(),
            customer_slug: customer.as_deref().map(slug).unwrap_or_default(),
            customer_name: customer.unwrap_or_default(),
            attributes,
            ..ResourceContext::default()
        };
        Ok(Derived {
            base,
            context,
            limits,
            requester,
        })
    }
}

/// Longest requester id accepted.
const MAX_REQUESTER_LEN: usize = 1024;

fn non_null_string(target: &Value, key: &str) -> Result<Option<String>, Refusal> {
    match target.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        // voPersonIDs and group URNs are short; a huge one is an attack on
        // the logs or the directory, never a person.
        Some(Value::String(s)) if s.len() > MAX_REQUESTER_LEN => Err(Refusal::invalid(format!(
            "target_entity.{key} is longer than {MAX_REQUESTER_LEN} bytes"
        ))),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Refusal::invalid(format!(
            "target_entity.{key} must be a string or null"
        ))),
    }
}

fn limit(key: &str, source: &LimitSource, body: &Value) -> Result<i64, Refusal> {
    match source {
        LimitSource::Constant(v) => Ok(*v),
        LimitSource::From {
            from,
            factor,
            default,
        } => {
            let value = match body.pointer(from) {
                Some(Value::Number(n)) => n.as_f64(),
                Some(Value::Null) | None => *default,
                Some(_) => {
                    return Err(Refusal::invalid(format!("{from} must be a number")));
                }
            };
            let Some(v) = value else {
                return Err(Refusal::invalid(format!(
                    "{from} is missing (it sets the {key} limit)"
                )));
            };
            let scaled = (v * factor).round();
            if !scaled.is_finite() || scaled < 0.0 || scaled > i64::MAX as f64 {
                return Err(Refusal::invalid(format!(
                    "{from}: {v} is out of range for the {key} limit"
                )));
            }
            Ok(scaled as i64)
        }
    }
}

/// Digits of `{request_hash}`: 48 bits, so collisions stay out of reach
/// (about one in 10^5 after 75,000 requests).
const HASH_DIGITS: usize = 12;

/// Hex SHA-256 of the request key: the resource UUID (32 digits) and the
/// `{request_hash}` placeholder ([`HASH_DIGITS`] digits).
fn request_hash(key: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A lower-case name backends accept: letters, digits, `_` and `-`; runs of
/// anything else become one `_`.
pub fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_owned()
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}…")
}

/// Does the schema define `field` (a `/`-separated path below
/// `specification`) through `properties`? A schema without `properties` at
/// some level (free-form objects) accepts anything below it.
fn schema_defines(schema: &Value, field: &str) -> bool {
    let mut at = schema;
    for seg in field.split('/') {
        match at.get("properties") {
            Some(props) => match props.get(seg) {
                Some(next) => at = next,
                None => return false,
            },
            None => return true,
        }
    }
    true
}

struct Vars<'a> {
    body: &'a Value,
    owner: &'a str,
    correlation_id: &'a str,
    request_hash: &'a str,
}

/// A literal template fragment as [`slug`] leaves it inside a name
/// (lower-cased, other characters as `_`, not trimmed).
fn slug_fragment(t: &str) -> String {
    t.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Matches `parts` against all of `id` (bytes of an ASCII backend id).
fn match_here(parts: &[Part], id: &[u8]) -> bool {
    match parts.split_first() {
        None => id.is_empty(),
        Some((Part::Text(t), rest)) => {
            id.starts_with(t.as_bytes()) && match_here(rest, &id[t.len()..])
        }
        Some((Part::RequestHash, rest)) => {
            id.len() >= HASH_DIGITS
                && id[..HASH_DIGITS].iter().all(u8::is_ascii_hexdigit)
                && match_here(rest, &id[HASH_DIGITS..])
        }
        Some((_, rest)) => (1..=id.len()).any(|n| match_here(rest, &id[n..])),
    }
}

/// A parsed template: literal text and placeholders.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Pointer(String),
    Owner,
    CorrelationId,
    RequestHash,
}

struct Template(Vec<Part>);

impl Template {
    fn parse(t: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("template {t:?}: '{{' without '}}'"))?;
            let name = &after[..close];
            parts.push(match name {
                "owner" => Part::Owner,
                "correlation_id" => Part::CorrelationId,
                "request_hash" => Part::RequestHash,
                p if p.starts_with('/') => Part::Pointer(p.to_owned()),
                other => {
                    return Err(format!(
                        "template {t:?}: unknown placeholder {{{other}}} (use a JSON pointer such as {{/specification/name}}, {{owner}}, {{correlation_id}} or {{request_hash}})"
                    ));
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self(parts))
    }

    fn pointers(&self) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|p| match p {
                Part::Pointer(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether `id` ends with something this template renders to (after
    /// [`slug`]): literal text must match, a request hash is exactly
    /// [`HASH_DIGITS`] hex digits, any other placeholder is one or more
    /// characters.
    fn matches_suffix_of(&self, id: &str) -> bool {
        let parts: Vec<Part> = self
            .0
            .iter()
            .map(|p| match p {
                Part::Text(t) => Part::Text(slug_fragment(t)),
                other => other.clone(),
            })
            .collect();
        let id = id.as_bytes();
        (0..=id.len()).any(|start| match_here(&parts, &id[start..]))
    }

    fn render(&self, vars: &Vars<'_>) -> Result<String, Refusal> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Owner => out.push_str(vars.owner),
                Part::CorrelationId => out.push_str(vars.correlation_id),
                Part::RequestHash => out.push_str(vars.request_hash),
                Part::Pointer(ptr) => match vars.body.pointer(ptr) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Number(n)) => out.push_str(&n.to_string()),
                    Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
                    Some(Value::Null) | None => {
                        return Err(Refusal::invalid(format!("{ptr} is missing")));
                    }
                    Some(_) => {
                        return Err(Refusal::invalid(format!(
                            "{ptr} must be a string or number"
                        )));
                    }
                },
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt(extra: &str) -> ResourceType {
        let config: ResourceTypeConfig = serde_norway::from_str(&format!(
            "schema: x.json\nbackend: hpc\nbackend_id: \"hca_{{/specification/project}}_{{request_hash}}\"\nproject: \"{{/specification/project}}\"\ncustomer: helmholtz\nlimits:\n  cpu: {{from: /specification/cpu_hours, factor: 60}}\n  storage: 5\n{extra}"
        ))
        .unwrap();
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "ComputeResourceSpecV1",
            "type": "object",
            "required": ["project", "cpu_hours"],
            "properties": {
                "project": {"type": "string", "minLength": 1},
                "cpu_hours": {"type": "integer", "minimum": 1},
                "contact": {"type": "string", "format": "email"}
            }
        });
        ResourceType::compile(&config, &schema).unwrap()
    }

    /// A valid request for the "Climate Run" project.
    fn climate() -> Value {
        body(json!({"project": "Climate Run", "cpu_hours": 10}))
    }

    fn body(spec: Value) -> Value {
        json!({
            "type": "ComputeResourceSpecV1",
            "target_entity": {"user_id_target": null, "group_urn_target": "urn:geant:helmholtz.de:group:Team A"},
            "specification": spec
        })
    }

    #[test]
    fn a_valid_request_derives_names_limits_and_a_stable_uuid() {
        let t = rt("");
        let d = t.derive(&climate(), "c-1", "svc/c-1").unwrap();
        assert!(d.base.starts_with("hca_climate_run_"), "{}", d.base);
        assert_eq!(d.base.len(), "hca_climate_run_".len() + HASH_DIGITS);
        assert_eq!(d.context.project_slug, "climate_run");
        assert_eq!(d.context.customer_slug, "helmholtz");
        assert_eq!(
            d.limits,
            BTreeMap::from([("cpu".into(), 600), ("storage".into(), 5)])
        );
        let again = t.derive(&climate(), "c-1", "svc/c-1").unwrap();
        assert_eq!(d.context.resource_uuid, again.context.resource_uuid);
        let other = t.derive(&climate(), "c-2", "svc/c-2").unwrap();
        assert_ne!(d.context.resource_uuid, other.context.resource_uuid);
        assert_ne!(
            d.base, other.base,
            "two requests must not share a backend id"
        );
    }

    #[test]
    fn a_backend_id_without_a_per_request_part_is_a_config_error() {
        let mut c = rt("").config.clone();
        c.backend_id = "hca_{/specification/project}".into();
        let e = ResourceType::compile(&c, &json!({"type": "object"})).unwrap_err();
        assert!(e.to_string().contains("{request_hash}"), "{e}");
    }

    #[test]
    fn templates_naming_fields_the_schema_lacks_are_config_errors() {
        let mut c = rt("").config.clone();
        c.project = Some("{/specification/projct}".into());
        let schema = json!({"type": "object", "properties": {"project": {"type": "string"}}});
        let e = ResourceType::compile(&c, &schema).unwrap_err();
        assert!(e.to_string().contains("/specification/projct"), "{e}");
        let mut c = rt("").config.clone();
        c.limits.insert(
            "gpu".into(),
            LimitSource::From {
                from: "/specification/gpus".into(),
                factor: 1.0,
                default: None,
            },
        );
        assert!(ResourceType::compile(&c, &schema).is_err());
    }

    #[test]
    fn deallocation_ids_must_fit_a_template() {
        let t = rt("");
        let d = t.derive(&climate(), "c-1", "svc/c-1").unwrap();
        assert!(t.could_have_made(&d.base));
        assert!(
            t.could_have_made(&format!("site_{}", d.base)),
            "a backend prefix is fine"
        );
        assert!(!t.could_have_made("hpc_weather-run"));
        assert!(!t.could_have_made("hca_climate_run"));
        assert!(!t.could_have_made("hca_climate_run_12345"));
    }

    #[test]
    fn schema_failures_name_the_failing_fields() {
        let r = rt("")
            .derive(
                &body(json!({"project": "", "cpu_hours": 0, "contact": "nope"})),
                "c",
                "k",
            )
            .unwrap_err();
        assert_eq!(r.kind, "SpecificationInvalid");
        for field in ["/project", "/cpu_hours", "/contact"] {
            assert!(r.message.contains(field), "{}", r.message);
        }
    }

    #[test]
    fn target_entity_rules_are_enforced() {
        let t = rt("target: user\n");
        let e = t
            .derive(&body(json!({"project": "p", "cpu_hours": 1})), "c", "k")
            .unwrap_err();
        assert!(e.message.contains("personal"), "{}", e.message);
        let both = json!({"target_entity": {"user_id_target": "u", "group_urn_target": "g"}, "specification": {"project": "p", "cpu_hours": 1}});
        assert!(
            rt("")
                .derive(&both, "c", "k")
                .unwrap_err()
                .message
                .contains("both")
        );
        let neither = json!({"target_entity": {"user_id_target": null, "group_urn_target": null}, "specification": {"project": "p", "cpu_hours": 1}});
        assert!(
            rt("")
                .derive(&neither, "c", "k")
                .unwrap_err()
                .message
                .contains("neither")
        );
    }

    #[test]
    fn templates_take_the_owner_and_a_request_hash() {
        let t = rt("name: \"{owner}\"\n");
        let mut c = t.config.clone();
        c.backend_id = "hca_{request_hash}".into();
        let t2 = ResourceType::compile(&c, &json!({"type": "object"})).unwrap();
        let d = t2
            .derive(&body(json!({"project": "p", "cpu_hours": 1})), "c", "svc/c")
            .unwrap();
        assert_eq!(d.base.len(), "hca_".len() + HASH_DIGITS);
        let d = t
            .derive(&body(json!({"project": "p", "cpu_hours": 1})), "c", "svc/c")
            .unwrap();
        assert_eq!(d.context.name, "urn:geant:helmholtz.de:group:Team A");
    }

    #[test]
    fn a_requester_id_longer_than_a_kilobyte_is_an_invalid_specification() {
        let t = rt("");
        let mut b = body(json!({"project": "p", "cpu_hours": 1}));
        b["target_entity"]["group_urn_target"] = json!("u".repeat(1025));
        let e = t.derive(&b, "c", "svc/c").unwrap_err();
        assert_eq!(e.kind, "SpecificationInvalid");
        assert!(e.message.contains("1024"), "{}", e.message);
        assert!(e.message.len() < 200, "the id is not echoed");
    }

    #[test]
    fn bad_templates_are_config_errors() {
        let mut c = rt("").config.clone();
        c.backend_id = "hca_{project}".into();
        let e = ResourceType::compile(&c, &json!({})).unwrap_err();
        assert!(e.to_string().contains("unknown placeholder"), "{e}");
        c.backend_id = "hca_{/x".into();
        assert!(ResourceType::compile(&c, &json!({})).is_err());
    }

    #[test]
    fn slugs_are_what_backends_accept() {
        assert_eq!(slug("Team A / Ünïcode!"), "team_a_n_code");
        assert_eq!(slug("__x__"), "x");
        assert_eq!(slug("a-b_c"), "a-b_c");
    }
}
