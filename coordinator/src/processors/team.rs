//! Who should be on a resource: Waldur's project team joined with the
//! offering's users, as backend `User`s. Shared by order post-processing and
//! membership sync so both add exactly the same people.

use std::collections::{BTreeMap, HashMap, HashSet};

use waldur_backend_api::types::User;

use waldur_client::ids::uuid_key;
use waldur_client::types::{OfferingUser, TeamMember, offering_user_state};

/// Offering users that have an account, by Waldur user UUID: what each
/// contributes to a backend `User`. An index over a large offering holds
/// tens of thousands of them, so an entry is its UUID as a number and one
/// string packing the username and the attributes ([`pack`]): about half
/// of a map of strings per user.
#[derive(Debug, Clone, Default)]
pub struct Usable {
    by_user: HashMap<u128, Box<str>>,
}

/// What a team member's offering user contributes to a backend `User`.
#[derive(Debug, Clone, PartialEq)]
pub struct UsableUser {
    /// The offering username.
    pub username: String,
    /// The exposed attributes ([`user_attributes`]).
    pub attributes: BTreeMap<String, String>,
}

impl Usable {
    /// Adds (or replaces) the account of a Waldur user. A user UUID that is
    /// not a UUID matches no team member ([`waldur_client::ids::same_uuid`])
    /// and is not kept.
    pub fn insert(
        &mut self,
        user_uuid: &str,
        username: &str,
        attributes: &BTreeMap<String, String>,
    ) {
        let Some(key) = uuid_number(user_uuid) else {
            tracing::warn!(
                user_uuid,
                username,
                "offering user whose user UUID is no UUID; left out"
            );
            return;
        };
        let fields = std::iter::once(username).chain(
            attributes
                .iter()
                .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
        );
        self.by_user.insert(key, pack(fields));
    }

    /// The account of a Waldur user, by UUID in any spelling.
    pub fn get(&self, user_uuid: &str) -> Option<UsableUser> {
        let packed = self.by_user.get(&uuid_number(user_uuid)?)?;
        let mut fields = unpack(packed);
        let username = fields.next()?.to_owned();
        let mut attributes = BTreeMap::new();
        while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
            attributes.insert(k.to_owned(), v.to_owned());
        }
        Some(UsableUser {
            username,
            attributes,
        })
    }

    /// Accounts indexed.
    pub fn len(&self) -> usize {
        self.by_user.len()
    }

    /// No account indexed.
    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }

    /// Takes in another index's accounts.
    pub fn extend(&mut self, other: Usable) {
        self.by_user.extend(other.by_user);
    }
}

/// A UUID as a number: 32 hex digits, with or without dashes.
pub(crate) fn uuid_number(uuid: &str) -> Option<u128> {
    let key = uuid_key(uuid);
    if key.len() != 32 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&key, 16).ok()
}

/// Fields in one string, each as its length in bytes, `:`, then itself, so
/// any content survives (a separator character could occur in a name).
fn pack<'a>(fields: impl Iterator<Item = &'a str>) -> Box<str> {
    let mut out = String::new();
    for f in fields {
        out.push_str(&f.len().to_string());
        out.push(':');
        out.push_str(f);
    }
    out.into_boxed_str()
}

/// The fields [`pack`] joined; stops at anything it did not write.
fn unpack(packed: &str) -> impl Iterator<Item = &str> {
    let mut rest = packed;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_once(':')?;
        let field = tail.get(..len.parse::<usize>().ok()?)?;
        rest = &tail[field.len()..];
        Some(field)
    })
}

/// The offering users with an account (state OK with a username, not
/// restricted), indexed. Built once per cycle: it indexes the whole
/// offering, so it keeps of each offering user only what a backend `User`
/// takes. A Waldur before 8.0 sends no state at all: there a username is
/// what makes an account.
pub fn usable_offering_users(users: Vec<OfferingUser>, exposed: &[String]) -> Usable {
    let mut usable = Usable::default();
    for u in users.iter().filter(|u| {
        (u.state == offering_user_state::OK || u.state.is_empty())
            && !u.is_restricted
            && u.username.as_deref().is_some_and(|n| !n.is_empty())
    }) {
        usable.insert(
            &u.user_uuid,
            u.username.as_deref().unwrap_or_default(),
            &user_attributes(u, exposed),
        );
    }
    usable
}

/// What a cycle keeps of an offering's users, built a page at a time: the
/// accounts by Waldur user, the users still waiting for a username (whole,
/// for username generation), and every username taken.
#[derive(Debug, Default)]
pub struct OfferingUserIndex {
    /// Offering users with an account ([`usable_offering_users`]).
    pub usable: Usable,
    /// Unrestricted offering users in an open state.
    pub open: Vec<OfferingUser>,
    /// Every username the offering's users have.
    pub taken: HashSet<String>,
}

impl OfferingUserIndex {
    /// Takes in one page of offering users.
    pub fn add_page(&mut self, page: Vec<OfferingUser>, exposed: &[String]) {
        let mut rest = Vec::with_capacity(page.len());
        for u in page {
            if let Some(name) = u.username.as_deref().filter(|n| !n.is_empty()) {
                self.taken.insert(name.to_owned());
            }
            if !u.is_restricted && crate::processors::usernames::is_open(&u.state) {
                self.open.push(u);
            } else {
                rest.push(u);
            }
        }
        self.usable.extend(usable_offering_users(rest, exposed));
    }
}

/// The exposed attributes of an offering user, as the backend receives them
///: `full_name` expands to full, first and last name;
/// `username` is the key itself and is left out; unset values are omitted.
pub fn user_attributes(ou: &OfferingUser, exposed: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.insert(key.to_owned(), v);
        }
    };
    for field in exposed {
        match field.as_str() {
            "username" => {}
            "full_name" => {
                put("full_name", Some(ou.user_full_name.clone()));
                put("first_name", Some(ou.user_first_name.clone()));
                put("last_name", Some(ou.user_last_name.clone()));
            }
            "email" => put("email", Some(ou.user_email.clone())),
            other => {
                let value = ou
                    .extra
                    .get(&format!("user_{other}"))
                    .and_then(|v| match v {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Array(a) => Some(
                            a.iter()
                                .map(|x| x.as_str().map(str::to_owned).unwrap_or(x.to_string()))
                                .collect::<Vec<_>>()
                                .join(","),
                        ),
                        v => Some(v.to_string()),
                    });
                put(other, value);
            }
        }
    }
    out
}

/// Team members that have a usable offering user, as backend users, sorted
/// and unique by username.
pub fn team_users(team: &[TeamMember], offering_users: &Usable) -> Vec<User> {
    let mut users: Vec<User> = team
        .iter()
        .filter_map(|m| {
            let ou = offering_users.get(&m.uuid)?;
            Some(User {
                username: ou.username,
                user_uuid: m.uuid.clone(),
                waldur_username: m.username.clone(),
                email: m.email.clone().unwrap_or_default(),
                full_name: m.full_name.clone(),
                role: m.role.clone(),
                attributes: ou.attributes.into_iter().collect(),
            })
        })
        .collect();
    users.sort_by(|a, b| a.username.cmp(&b.username));
    users.dedup_by(|a, b| a.username == b.username);
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0a1b2c3d-0000-4000-8000-00000000000a";
    const B: &str = "0a1b2c3d-0000-4000-8000-00000000000b";
    const C: &str = "0a1b2c3d-0000-4000-8000-00000000000c";

    fn ou(user: &str, username: Option<&str>, state: &str) -> OfferingUser {
        OfferingUser {
            uuid: format!("ou-{user}"),
            user_uuid: user.into(),
            username: username.map(str::to_owned),
            state: state.into(),
            user_full_name: "Ada Lovelace".into(),
            user_first_name: "Ada".into(),
            user_email: "ada@example.org".into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_ok_offering_users_with_a_username_are_usable() {
        let list = vec![
            ou(A, Some("ada"), "OK"),
            ou(B, None, "OK"),
            ou(C, Some("cy"), "Creating"),
            ou("not-a-uuid", Some("nemo"), "OK"),
        ];
        let usable = usable_offering_users(list, &[]);
        assert_eq!(usable.len(), 1);
        assert_eq!(usable.get(A).map(|u| u.username).as_deref(), Some("ada"));
    }

    #[test]
    fn team_members_without_an_account_are_left_out_and_names_are_unique() {
        let list = vec![ou(A, Some("ada"), "OK")];
        let usable = usable_offering_users(list, &["email".into()]);
        let member = |uuid: &str, role: &str| TeamMember {
            uuid: uuid.into(),
            username: "ada@uni".into(),
            role: role.into(),
            ..Default::default()
        };
        let users = team_users(
            &[
                member(&A.replace('-', ""), "PROJECT.MEMBER"),
                member(&A.to_uppercase(), "PROJECT.MANAGER"),
                member(B, "PROJECT.MEMBER"),
            ],
            &usable,
        );
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].username, "ada");
        assert_eq!(users[0].attributes["email"], "ada@example.org");
    }

    #[test]
    fn packed_accounts_keep_any_characters() {
        let mut usable = Usable::default();
        let attributes = BTreeMap::from([
            ("email".to_owned(), "a:1@x".to_owned()),
            ("full_name".to_owned(), "Zoë 12:34 \u{1f}".to_owned()),
            ("empty".to_owned(), String::new()),
        ]);
        usable.insert(A, "a:b", &attributes);
        let got = usable.get(&A.replace('-', "").to_uppercase()).unwrap();
        assert_eq!(got.username, "a:b");
        assert_eq!(got.attributes, attributes);
        assert!(usable.get(B).is_none());
        assert!(usable.get("").is_none());
    }

    #[test]
    fn full_name_expands_and_empty_values_are_omitted() {
        let a = user_attributes(
            &ou("a", Some("ada"), "OK"),
            &["username".into(), "full_name".into(), "organization".into()],
        );
        assert_eq!(a["full_name"], "Ada Lovelace");
        assert_eq!(a["first_name"], "Ada");
        assert!(!a.contains_key("last_name"));
        assert!(!a.contains_key("username"));
        assert!(!a.contains_key("organization"));
    }
}
