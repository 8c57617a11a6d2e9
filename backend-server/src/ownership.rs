//! Ownership markers: how a backend records, in a free-text description of
//! the system behind it, which resource it created an object for, so that it
//! acts only on what it manages (SPEC §5.3a). An object made for resource
//! `u` ends its description with `[waldur:<u as 32 hex digits>]`; one made
//! for no particular resource (a project or customer tier) with `[waldur]`.

const MARKER: &str = "[waldur";

/// The resource a description's marker names: `Some(None)` for a bare
/// `[waldur]`, `None` without a marker.
pub fn marker(description: &str) -> Option<Option<String>> {
    let at = description.rfind(MARKER)?;
    let rest = description[at + MARKER.len()..].trim_end();
    match rest {
        "]" => Some(None),
        _ => rest
            .strip_prefix(':')
            .and_then(|r| r.strip_suffix(']'))
            .filter(|u| u.len() == 32 && u.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|u| Some(u.to_ascii_lowercase())),
    }
}

/// The description without its marker.
pub fn unmarked(description: &str) -> &str {
    match description.rfind(MARKER) {
        Some(at) => description[..at].trim_end(),
        None => description.trim_end(),
    }
}

/// `base` followed by the marker of `resource` (a UUID with or without
/// dashes; anything else, or none, gives the bare marker).
pub fn marked(base: &str, resource: Option<&str>) -> String {
    let base = unmarked(base);
    let tag = match resource.and_then(uuid_hex) {
        Some(u) => format!("[waldur:{u}]"),
        None => "[waldur]".to_owned(),
    };
    if base.is_empty() {
        tag
    } else {
        format!("{base} {tag}")
    }
}

/// A UUID as 32 lowercase hex digits, dashes dropped; `None` if it is not one.
pub fn uuid_hex(uuid: &str) -> Option<String> {
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_names_its_resource_or_nobody_and_survives_a_round_trip() {
        let u = "0F0F0000-0000-0000-0000-000000000001";
        let d = marked("Big project", Some(u));
        assert_eq!(d, "Big project [waldur:0f0f0000000000000000000000000001]");
        assert_eq!(
            marker(&d),
            Some(Some("0f0f0000000000000000000000000001".into()))
        );
        assert_eq!(unmarked(&d), "Big project");
        assert_eq!(marker(&marked("p", None)), Some(None));
        assert_eq!(marker("made by hand"), None);
        assert_eq!(marker("x [waldur:nothex]"), None);
        assert_eq!(marked(&d, None), "Big project [waldur]");
    }
}
