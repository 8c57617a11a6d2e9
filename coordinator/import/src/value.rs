//! Reading the original configuration: lenient scalar conversions in the
//! spirit of the original's pydantic models, without ever panicking.

use serde_norway::{Mapping, Number, Value};

/// The value with YAML tags (`!foo`) removed.
pub(crate) fn untag(v: &Value) -> &Value {
    let mut v = v;
    while let Value::Tagged(t) = v {
        v = &t.value;
    }
    v
}

/// A key's value; `None` when it is missing or null (the original treats
/// both as "unset").
pub(crate) fn get<'a>(m: &'a Mapping, key: &str) -> Option<&'a Value> {
    match m.get(key).map(untag) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

/// A mapping key as text (numbers and booleans are spelt out).
pub(crate) fn key_text(k: &Value) -> Option<String> {
    match untag(k) {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Text; numbers are accepted and spelt out (YAML reads `770` as a number).
pub(crate) fn text(v: &Value) -> Result<String, String> {
    match untag(v) {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("expected text, found {}", kind(other))),
    }
}

/// Text only (identifiers, URLs): numbers are not accepted.
pub(crate) fn strict_text(v: &Value) -> Result<String, String> {
    match untag(v) {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected text, found {}", kind(other))),
    }
}

/// A boolean, accepting the spellings pydantic and YAML 1.1 accept.
pub(crate) fn boolean(v: &Value) -> Result<bool, String> {
    match untag(v) {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(format!("expected true or false, found the number {n}")),
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" | "t" | "1" => Ok(true),
            "false" | "no" | "n" | "off" | "f" | "0" => Ok(false),
            _ => Err(format!("expected true or false, found {s:?}")),
        },
        other => Err(format!("expected true or false, found {}", kind(other))),
    }
}

/// A finite number (numeric text is accepted).
pub(crate) fn float(v: &Value) -> Result<f64, String> {
    let f = match untag(v) {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        other => return Err(format!("expected a number, found {}", kind(other))),
    };
    match f {
        Some(f) if f.is_finite() => Ok(f),
        _ => Err("expected a finite number".into()),
    }
}

/// An integer (numeric text and integral floats are accepted).
pub(crate) fn integer(v: &Value) -> Result<i64, String> {
    match untag(v) {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
                _ => Err(format!("expected a whole number, found {n}")),
            }
        }
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("expected a whole number, found {s:?}")),
        other => Err(format!("expected a whole number, found {}", kind(other))),
    }
}

/// An octal umask such as `"0077"` (at most four octal digits, at most
/// 0777), and whether it was written as a YAML number (then it is padded
/// to four digits).
pub(crate) fn umask(v: &Value) -> Result<(String, bool), String> {
    let (mask, was_number) = match untag(v) {
        Value::String(s) => (s.trim().to_owned(), false),
        Value::Number(n) => match n.as_u64() {
            Some(u) => (format!("{u:04}"), true),
            None => return Err(format!("{n} is not an octal umask such as \"0077\"")),
        },
        other => return Err(format!("expected an octal umask, found {}", kind(other))),
    };
    let octal =
        !mask.is_empty() && mask.len() <= 4 && mask.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(&mask, 8) {
        Ok(value) if octal && value <= 0o777 => Ok((mask, was_number)),
        _ => Err(format!("{mask:?} is not an octal umask such as \"0077\"")),
    }
}

/// A number for the output: integral values stay integers.
pub(crate) fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::Number(Number::from(f as i64))
    } else {
        Value::Number(Number::from(f))
    }
}

/// What a value is, for messages (never the value itself: it may be a secret).
pub(crate) fn kind(v: &Value) -> &'static str {
    match untag(v) {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// `s` made safe for one comment line or note: control characters become
/// spaces.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A lowercase slug of letters, digits and `-`, at most 40 characters.
pub(crate) fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 40 {
            break;
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "offering".into()
    } else {
        trimmed.into()
    }
}

/// The host of an `http(s)://` URL, without port or credentials; IPv6
/// addresses keep their brackets.
pub(crate) fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..end)?;
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    let host = if hostport.starts_with('[') {
        let close = hostport.find(']')?;
        hostport.get(..=close)?
    } else {
        hostport.split(':').next().unwrap_or(hostport)
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        None
    } else {
        Some(host.to_owned())
    }
}

/// The port of an `https://` URL, if it names one.
pub(crate) fn url_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://").map(|(_, r)| r)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..end)?;
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    let after_host = match hostport.find(']') {
        Some(close) => hostport.get(close + 1..)?,
        None => hostport,
    };
    after_host.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lowercase_dashed_and_never_empty() {
        assert_eq!(slug("Example SLURM Offering"), "example-slurm-offering");
        assert_eq!(slug("  Discoverer+ GPU  "), "discoverer-gpu");
        assert_eq!(slug("ÄÖÜ"), "offering");
        assert_eq!(slug(""), "offering");
        assert!(slug(&"x".repeat(500)).len() <= 40);
    }

    #[test]
    fn hosts_come_without_port_path_or_credentials() {
        assert_eq!(
            url_host("https://waldur.example.com/api/").as_deref(),
            Some("waldur.example.com")
        );
        assert_eq!(
            url_host("http://u:p@docker:8080/api/").as_deref(),
            Some("docker")
        );
        assert_eq!(url_host("https://[::1]:8443/api").as_deref(), Some("[::1]"));
        assert_eq!(url_host("https:///api/"), None);
        assert_eq!(url_host("no scheme"), None);
        assert_eq!(url_port("https://127.0.0.1:50051"), Some(50051));
        assert_eq!(url_port("https://[::1]:7000/x"), Some(7000));
        assert_eq!(url_port("https://host"), None);
    }

    #[test]
    fn booleans_accept_yaml_1_1_spellings() {
        assert_eq!(boolean(&Value::String("Yes".into())), Ok(true));
        assert_eq!(boolean(&Value::String("off".into())), Ok(false));
        assert!(boolean(&Value::String("maybe".into())).is_err());
    }

    #[test]
    fn comment_lines_lose_control_characters() {
        assert_eq!(one_line("a\nb\rc"), "a b c");
    }
}
