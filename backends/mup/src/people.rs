//! From a Waldur user to a MUP registration request: the attribute mapping
//! (gender, country, year of birth, institution type) with the configured
//! defaults for what Waldur does not know.

use serde_json::{Value, json};
use waldur_backend_sdk::types::User;

use crate::settings::MupSettings;

/// MUP's gender from Waldur's: ISO/IEC 5218 codes (0 not known, 1 male,
/// 2 female, 9 not applicable) or a word kept as it is.
pub fn gender(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    Some(
        match raw.parse::<i64>() {
            Ok(0 | 9) => "Don't want to reply",
            Ok(1) => "Male",
            Ok(2) => "Female",
            Ok(_) => "Other",
            Err(_) => raw,
        }
        .to_owned(),
    )
}

/// The English country name of an ISO 3166 alpha-2 code; anything else is
/// kept as it is (it may already be a name).
pub fn country(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    if raw.len() == 2
        && let Ok(c) = isocountry::CountryCode::for_alpha2_caseless(raw)
    {
        return Some(c.name().to_owned());
    }
    Some(raw.to_owned())
}

/// The year of a birth date (`YYYY-MM-DD`, or anything starting with a
/// four-digit year).
pub fn birth_year(raw: &str) -> Option<i64> {
    let digits: String = raw.trim().chars().take(4).collect();
    (digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// MUP's institution type from a SCHAC home organization type (plain, or
/// as a `urn:schac:homeOrganizationType:...` URN).
pub fn institution_type(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let kind = raw.rsplit(':').next().unwrap_or(raw).to_ascii_lowercase();
    Some(
        match kind.as_str() {
            "university" | "research-institution" | "research" => "Academia",
            "company" => "Industry",
            "government" => "Public Administration",
            _ => "Other",
        }
        .to_owned(),
    )
}

/// First and last name: the attributes when given, else the full name
/// split at its first space.
fn names(user: &User) -> (String, String) {
    let attr = |k: &str| user.attributes.get(k).map(|s| s.trim()).unwrap_or_default();
    let full = if user.full_name.trim().is_empty() {
        attr("full_name")
    } else {
        user.full_name.trim()
    };
    let (first_of_full, last_of_full) = full.split_once(' ').unwrap_or((full, ""));
    let first = match attr("first_name") {
        "" => first_of_full,
        f => f,
    };
    let last = match attr("last_name") {
        "" => last_of_full.trim(),
        l => l,
    };
    (first.to_owned(), last.to_owned())
}

/// The registration request for `user`; `institution` is the customer's
/// name when the caller knows it.
pub fn registration(s: &MupSettings, user: &User, email: &str, institution: &str) -> Value {
    let attr = |k: &str| {
        user.attributes
            .get(k)
            .map(String::as_str)
            .unwrap_or_default()
    };
    let or = |v: Option<String>, d: &str| v.unwrap_or_else(|| d.to_owned());
    let username = if user.username.is_empty() {
        email.split('@').next().unwrap_or(email).to_owned()
    } else {
        user.username.clone()
    };
    let (first_name, last_name) = names(user);
    let affiliation = [institution, attr("organization")]
        .into_iter()
        .map(str::trim)
        .find(|v| !v.is_empty())
        .unwrap_or(&s.default_user_institution)
        .to_owned();
    let salutation = match attr("personal_title").trim() {
        "" => s.default_user_salutation.clone(),
        t => t.to_owned(),
    };
    let grant_suffix: String = username.chars().take(10).collect::<String>().to_uppercase();
    json!({
        "username": username,
        "email": email,
        "research_fields": [s.default_research_field],
        "first_name": first_name,
        "last_name": last_name,
        "salutation": salutation,
        "gender": or(gender(attr("gender")), &s.default_user_gender),
        "year_of_birth": birth_year(attr("birth_date")).unwrap_or(s.default_user_birth_year),
        "country": or(country(attr("country_of_residence")), &s.default_user_country),
        "type_of_institution": or(institution_type(attr("organization_type")), &s.default_user_institution_type),
        "affiliated_institution": affiliation,
        "agency": s.default_agency,
        "funding_agency": s.default_agency,
        "funding_agency_grant": format!("{}{grant_suffix}", s.user_funding_agency_prefix),
        "request_reason": "User account creation via Waldur site agent for project access",
        "rejection_reason": "",
        "biography": s.default_user_biography,
        "last_login": null,
        "is_verified": false,
        "is_approved": false,
        "is_active": false,
        "is_staff": false,
        "is_admin": false,
        "is_totp_enabled": false,
        "has_subscribe_newsletter": false,
        "has_read_and_accepted_terms_of_service": true,
        "has_read_and_accepted_data_sharing_policy": true,
        "groups": [],
        "user_permissions": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn settings() -> MupSettings {
        MupSettings::parse(json!({
            "api_url": "https://mup.example.org", "username": "a", "password_env": "P",
            "components": {"cpu": {"label": "CPU", "measured_unit": "h", "accounting_type": "limit"}}
        }))
        .unwrap()
    }

    #[test]
    fn gender_codes_map_to_mups_words() {
        assert_eq!(gender("1").as_deref(), Some("Male"));
        assert_eq!(gender("2").as_deref(), Some("Female"));
        assert_eq!(gender("0").as_deref(), Some("Don't want to reply"));
        assert_eq!(gender("9").as_deref(), Some("Don't want to reply"));
        assert_eq!(gender("5").as_deref(), Some("Other"));
        assert_eq!(gender("Female").as_deref(), Some("Female"));
        assert_eq!(gender(" "), None);
    }

    #[test]
    fn countries_become_english_names_and_unknown_codes_are_kept() {
        assert_eq!(country("PT").as_deref(), Some("Portugal"));
        assert_eq!(country("de").as_deref(), Some("Germany"));
        assert_eq!(country("XX").as_deref(), Some("XX"));
        assert_eq!(country("Spain").as_deref(), Some("Spain"));
    }

    #[test]
    fn birth_years_and_institution_types_are_derived() {
        assert_eq!(birth_year("1984-02-29"), Some(1984));
        assert_eq!(birth_year("84"), None);
        assert_eq!(
            institution_type("urn:schac:homeOrganizationType:int:university").as_deref(),
            Some("Academia")
        );
        assert_eq!(institution_type("company").as_deref(), Some("Industry"));
        assert_eq!(
            institution_type("government").as_deref(),
            Some("Public Administration")
        );
        assert_eq!(institution_type("ngo").as_deref(), Some("Other"));
    }

    #[test]
    fn a_registration_maps_attributes_and_falls_back_to_defaults() {
        let s = settings();
        let user = User {
            username: "ada_lovelace_1815".into(),
            full_name: "Ada King Lovelace".into(),
            attributes: BTreeMap::from([
                ("gender".into(), "2".into()),
                ("country_of_residence".into(), "GB".into()),
                ("birth_date".into(), "1815-12-10".into()),
            ]),
            ..User::default()
        };
        let r = registration(&s, &user, "ada@uni.org", "");
        assert_eq!(r["first_name"], "Ada");
        assert_eq!(r["last_name"], "King Lovelace");
        assert_eq!(r["gender"], "Female");
        assert_eq!(r["year_of_birth"], 1815);
        assert_eq!(r["type_of_institution"], "Academic");
        assert_eq!(r["affiliated_institution"], "Research Institution");
        assert_eq!(r["salutation"], "Dr.");
        assert_eq!(r["funding_agency_grant"], "WALDUR-SITE-AGENT-ADA_LOVELA");
        assert_eq!(r["research_fields"], json!([1]));
        let bare = registration(&s, &User::default(), "bob@uni.org", "Uni of Bob");
        assert_eq!(bare["username"], "bob");
        assert_eq!(bare["gender"], "Other");
        assert_eq!(bare["country"], "Portugal");
        assert_eq!(bare["year_of_birth"], 1990);
        assert_eq!(bare["affiliated_institution"], "Uni of Bob");
    }
}
