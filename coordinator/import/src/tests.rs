//! Unit tests: robustness against arbitrary input, and the YAML reader's
//! behaviour on the scalars the original's configs contain.

use super::*;

/// xorshift64*: deterministic, dependency-free randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const FIXTURES: &[&str] = &[
    include_str!("../tests/fixtures/slurm-full.yaml"),
    include_str!("../tests/fixtures/agent-example.yaml"),
    include_str!("../tests/fixtures/shared-cluster-stomp.yaml"),
    include_str!("../tests/fixtures/unsupported.yaml"),
    include_str!("../tests/fixtures/oidc.yaml"),
];

/// Runs a migration; success must yield YAML that parses.
fn survive(text: &str) {
    if let Ok(m) = migrate(text, &Options::default()) {
        serde_norway::from_str::<serde_json::Value>(&m.coordinator_yaml)
            .expect("generated coordinator yaml parses");
        for b in &m.backend_servers {
            serde_norway::from_str::<serde_json::Value>(&b.yaml)
                .expect("generated server yaml parses");
        }
    }
}

#[test]
fn random_token_soup_never_panics() {
    let pieces = [
        "offerings",
        ":",
        " ",
        "\n",
        "- ",
        "  ",
        "    ",
        "name",
        "waldur_api_url",
        "waldur_offering_uuid",
        "waldur_api_token",
        "order_processing_backend",
        "slurm",
        "{",
        "}",
        "[",
        "]",
        ",",
        "&a ",
        "*a",
        "<<: ",
        "!tag ",
        "\"",
        "'",
        "#",
        "0077",
        "yes",
        "~",
        "null",
        "http://h/api/",
        "https://",
        "backend_components",
        "backend_settings",
        "cpu",
        "label",
        "accounting_type",
        "usage",
        "unit_factor",
        "-1e400",
        "0x1f",
        "\t",
        "?",
        "|",
        ">",
        "%YAML 1.2",
        "---",
        "...",
        "é",
        "\u{0}",
        "\u{feff}",
        "stomp_enabled",
        "true",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..4000 {
        let n = rng.below(80);
        let text: String = (0..n).map(|_| *rng.pick(&pieces)).collect();
        survive(&text);
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for _ in 0..1500 {
        let mut chars: Vec<char> = rng.pick(FIXTURES).chars().collect();
        for _ in 0..=rng.below(4) {
            if chars.is_empty() {
                break;
            }
            let at = rng.below(chars.len());
            match rng.below(4) {
                0 => {
                    let end = (at + rng.below(40)).min(chars.len());
                    chars.drain(at..end);
                }
                1 => chars.insert(
                    at,
                    *rng.pick(&[':', '-', ' ', '\n', '"', '[', '{', '&', '*']),
                ),
                2 => chars[at] = *rng.pick(&['x', '0', ' ', '\n', '\'', '!', '#', 'é']),
                _ => {
                    let end = (at + rng.below(60)).min(chars.len());
                    let copy: Vec<char> = chars[at..end].to_vec();
                    let to = rng.below(chars.len());
                    chars.splice(to..to, copy);
                }
            }
        }
        let text: String = chars.into_iter().collect();
        survive(&text);
    }
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    let words = [
        "",
        "slurm",
        "moab",
        "yes",
        "no",
        "0077",
        "777",
        "usage",
        "limit",
        "one",
        "UPPER",
        "https://w.example/api/",
        "ws",
        "a b",
        "-x",
        "grpTRES",
        "xfs",
        "\n",
        "null",
    ];
    let keys = [
        "name",
        "label",
        "limit",
        "factor",
        "enabled",
        "provider",
        "cpu",
        "components",
        "default_account",
        "target_components",
        "max_jobs",
        "additional_qos",
        "<<",
    ];
    match rng.below(if depth > 3 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => Value::Number((rng.next() as i64).into()),
        3 => Value::Number(serde_norway::Number::from(*rng.pick(&[
            0.5,
            -1.0,
            1e300,
            f64::NAN,
            f64::INFINITY,
            0.0,
        ]))),
        4 | 5 => Value::String((*rng.pick(&words)).into()),
        6 => Value::Sequence(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        7 => {
            let mut m = Mapping::new();
            for _ in 0..rng.below(4) {
                m.insert(
                    Value::String((*rng.pick(&keys)).into()),
                    random_value(rng, depth + 1),
                );
            }
            Value::Mapping(m)
        }
        _ => {
            let mut m = Mapping::new();
            m.insert(random_value(rng, depth + 1), random_value(rng, depth + 1));
            Value::Mapping(m)
        }
    }
}

/// Replaces or deletes the value at a random position of the tree.
fn mutate(v: &mut Value, rng: &mut Rng) {
    match v {
        Value::Mapping(m) if !m.is_empty() && rng.below(4) != 0 => {
            let i = rng.below(m.len());
            if rng.below(6) == 0 {
                let key = m.keys().nth(i).cloned();
                if let Some(k) = key {
                    m.remove(&k);
                }
            } else if let Some(child) = m.values_mut().nth(i) {
                mutate(child, rng);
            }
        }
        Value::Sequence(s) if !s.is_empty() && rng.below(4) != 0 => {
            let i = rng.below(s.len());
            mutate(&mut s[i], rng);
        }
        other => *other = random_value(rng, 0),
    }
}

#[test]
fn fixtures_with_values_of_the_wrong_type_never_panic() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let parsed: Vec<Value> = FIXTURES
        .iter()
        .map(|f| serde_norway::from_str(f).expect("fixture parses"))
        .collect();
    for _ in 0..3000 {
        let mut v = rng.pick(&parsed).clone();
        for _ in 0..=rng.below(3) {
            mutate(&mut v, &mut rng);
        }
        let Ok(text) = serde_norway::to_string(&v) else {
            continue;
        };
        survive(&text);
    }
}

#[test]
fn an_unquoted_umask_is_read_as_digits_and_padded() {
    // serde_norway keeps a leading-zero scalar as text, as written.
    let v: Value = serde_norway::from_str("0077").unwrap();
    assert_eq!(value::umask(&v).unwrap(), ("0077".to_owned(), false));
    let v: Value = serde_norway::from_str("77").unwrap();
    assert_eq!(value::umask(&v).unwrap(), ("0077".to_owned(), true));
    assert!(value::umask(&Value::String("0999".into())).is_err());
    assert!(value::umask(&Value::String("01777".into())).is_err());
}

#[test]
fn generated_strings_that_look_like_other_types_stay_strings() {
    let mut m = Mapping::new();
    for s in [
        "0077", "yes", "null", "~", "", "770", "1e3", "- x", "a: b", "#c",
    ] {
        m.insert(Value::String(s.into()), Value::String(s.into()));
    }
    let text = serde_norway::to_string(&Value::Mapping(m.clone())).unwrap();
    let back: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(back, Value::Mapping(m));
}

#[test]
fn offering_names_cannot_break_out_of_header_comments() {
    let text = "offerings:\n  - name: \"evil\\nversion: 2\\nx\"\n    waldur_api_url: https://w.example/api/\n    waldur_api_token: t\n    waldur_offering_uuid: u\n    order_processing_backend: moab\n  - name: ok\n    waldur_api_url: https://w.example/api/\n    waldur_api_token: t2\n    waldur_offering_uuid: u2\n    order_processing_backend: slurm\n    backend_components: {cpu: {label: C, measured_unit: h, accounting_type: usage}}\n";
    let m = migrate(text, &Options::default()).unwrap();
    let c: serde_json::Value = serde_norway::from_str(&m.coordinator_yaml).unwrap();
    assert_eq!(c["version"], 1);
    assert!(m.notes.iter().all(|n| !n.contains('\n')));
}

#[test]
fn names_that_the_slurm_backend_refuses_are_kept_with_a_note() {
    let text = "offerings:\n  - name: n\n    waldur_api_url: https://w.example/api/\n    waldur_api_token: t\n    waldur_offering_uuid: u\n    order_processing_backend: slurm\n    backend_settings: {default_account: Root, default_homedir_umask: 99, homedir_quota: {max_files: 3}}\n    backend_components: {cpu: {label: C, measured_unit: h, accounting_type: usage}}\n";
    let m = migrate(text, &Options::default()).unwrap();
    let s: serde_json::Value = serde_norway::from_str(&m.backend_servers[0].yaml).unwrap();
    let st = &s["instances"][0]["settings"];
    assert_eq!(st["default_account"], "Root");
    assert!(
        m.notes
            .iter()
            .any(|n| n.contains("default_account") && n.contains("Root"))
    );
    // An invalid umask falls back to the default and is noted.
    assert!(st.get("default_homedir_umask").is_none());
    let c: serde_json::Value = serde_norway::from_str(&m.coordinator_yaml).unwrap();
    assert_eq!(c["offerings"][0]["membership"]["homedir_umask"], "0077");
    assert!(m.notes.iter().any(|n| n.contains("default_homedir_umask")));
    // A quota without a provider is dropped.
    assert!(st.get("homedir_quota").is_none());
    assert!(
        m.notes
            .iter()
            .any(|n| n.contains("homedir_quota") && n.contains("provider"))
    );
}

#[test]
fn rest_mode_and_missing_components_keep_a_slurm_offering_with_the_original() {
    let base = "offerings:\n  - name: n\n    waldur_api_url: https://w.example/api/\n    waldur_api_token: t\n    waldur_offering_uuid: u\n    order_processing_backend: slurm\n";
    let rest = format!(
        "{base}    backend_settings: {{execution_mode: rest}}\n    backend_components: {{cpu: {{label: C, measured_unit: h, accounting_type: usage}}}}\n"
    );
    let e = migrate(&rest, &Options::default()).unwrap_err().to_string();
    assert!(e.contains("execution_mode"), "{e}");
    let e = migrate(base, &Options::default()).unwrap_err().to_string();
    assert!(e.contains("backend_components is empty"), "{e}");
}

#[test]
fn an_offering_without_role_backends_is_not_migrated() {
    let text = "offerings:\n  - name: idle\n    waldur_api_url: https://w.example/api/\n    waldur_api_token: t\n    waldur_offering_uuid: u\n    backend_type: slurm\n";
    let e = migrate(text, &Options::default()).unwrap_err().to_string();
    assert!(e.contains("ran nothing"), "{e}");
}

#[test]
fn two_entries_for_one_waldur_offering_are_noted() {
    let one = "  - name: N\n    waldur_api_url: https://w.example/api/\n    waldur_api_token: t\n    waldur_offering_uuid: 0f0f-AA\n    order_processing_backend: slurm\n    backend_components: {cpu: {label: C, measured_unit: h, accounting_type: usage}}\n";
    let text = format!("offerings:\n{one}{}", one.replace("0f0f-AA", "0f0faa"));
    let m = migrate(&text, &Options::default()).unwrap();
    assert!(
        m.notes
            .iter()
            .any(|n| n.contains("waldur_offering_uuid") && n.contains("same")),
        "{:?}",
        m.notes
    );
}
