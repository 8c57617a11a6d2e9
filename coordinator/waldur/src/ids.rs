//! Typed Waldur ids. Every path the client builds takes a [`Uuid`], so an id
//! from an event, a Waldur payload or an AMQP message must have passed
//! [`Uuid::parse`] before it reaches a URL: `../../etc/passwd` never becomes
//! a path segment.

use std::fmt;

/// A Waldur UUID: 32 hex digits on input, with or without the four dashes of
/// the canonical form, in any case; lowercase hex without dashes everywhere
/// it is used (URLs, comparisons, map keys).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(String);

impl schemars::JsonSchema for Uuid {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Uuid".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Dashes and case are optional, as the parser accepts them.
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}$"
        })
    }
}

/// A value that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {shown:?} is not a uuid (32 hex digits)")]
pub struct InvalidUuid {
    /// Where the value came from, for example `order.uuid`.
    pub field: String,
    /// The start of the value (long values are cut).
    pub shown: String,
}

impl Uuid {
    /// Parses `value` taken from `field` (named in the error).
    pub fn parse(field: &str, value: &str) -> Result<Self, InvalidUuid> {
        let hex: String = match value.len() {
            32 => value.to_owned(),
            36 if [8, 13, 18, 23].iter().all(|&i| value.as_bytes()[i] == b'-') => {
                value.chars().filter(|c| *c != '-').collect()
            }
            _ => String::new(),
        };
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Self(hex.to_ascii_lowercase()));
        }
        let mut end = value.len().min(40);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        Err(InvalidUuid {
            field: field.to_owned(),
            shown: value[..end].to_owned(),
        })
    }

    /// Parses an optional value: empty means none.
    pub fn parse_opt(field: &str, value: &str) -> Result<Option<Self>, InvalidUuid> {
        if value.is_empty() {
            Ok(None)
        } else {
            Self::parse(field, value).map(Some)
        }
    }

    /// The normalised form: 32 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Uuid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Uuid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse("uuid", &s).map_err(serde::de::Error::custom)
    }
}

/// The key form of a UUID read from a payload without validation (map keys
/// joining lists): lowercase, dashes dropped. A valid UUID gets the text of
/// [`Uuid::as_str`].
pub fn uuid_key(value: &str) -> String {
    value
        .chars()
        .filter(|c| *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// UUIDs compare equal with or without dashes, in any case. A value that is
/// not a UUID equals nothing.
pub fn same_uuid(a: &str, b: &str) -> bool {
    matches!((Uuid::parse("", a), Uuid::parse("", b)), (Ok(a), Ok(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_form_of_a_valid_uuid_is_its_normal_form() {
        let dashed = "0F0F0000-0000-0000-0000-000000000001";
        assert_eq!(uuid_key(dashed), Uuid::parse("x", dashed).unwrap().as_str());
    }

    #[test]
    fn both_forms_parse_to_lowercase_hex() {
        let a = Uuid::parse("x", "0F0F0000-0000-0000-0000-000000000001").unwrap();
        let b = Uuid::parse("x", "0f0f0000000000000000000000000001").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "0f0f0000000000000000000000000001");
    }

    #[test]
    fn path_traversal_and_other_garbage_are_refused_naming_the_field() {
        for bad in [
            "../../../etc/passwd",
            "",
            "0f0f000000000000000000000000000",
            "0f0f0000000000000000000000000001/",
            "0f0f0000-0000-0000-0000-00000000000g",
            "0f0f-0000000-0000-0000-000000000001",
            "0f0f0000000000000000000000000001?x=1",
            "ＡＡＡ",
        ] {
            let e = Uuid::parse("order_uuid", bad).unwrap_err();
            assert_eq!(e.field, "order_uuid");
            assert!(e.to_string().starts_with("order_uuid: "), "{e}");
        }
    }

    #[test]
    fn long_garbage_is_cut_in_the_error_without_splitting_a_character() {
        let e = Uuid::parse("f", &"é".repeat(100)).unwrap_err();
        assert!(e.shown.len() <= 40);
    }

    #[test]
    fn same_uuid_ignores_dashes_and_case_and_rejects_garbage() {
        assert!(same_uuid(
            "0F0F0000-0000-0000-0000-000000000001",
            "0f0f0000000000000000000000000001"
        ));
        assert!(!same_uuid("a", "a"));
    }
}
