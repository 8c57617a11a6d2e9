//! The data model and its operations: pure (no I/O, no locking), so the
//! rules are unit-tested here and the HTTP layer only routes and renders.
//!
//! Every operation that takes a request body checks it the way Django REST
//! framework does (all field errors at once, `{"field": ["message"]}`) and
//! changes nothing when it refuses.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The research fields MUP answers on `/api/research-fields/list/` (a fixed
/// list: the real one is not public).
pub const RESEARCH_FIELDS: &[(i64, &str)] = &[
    (1, "Computer Science"),
    (2, "Physics"),
    (3, "Chemistry"),
    (4, "Biology"),
    (5, "Mathematics"),
    (6, "Engineering"),
    (7, "Earth Sciences"),
    (8, "Medicine"),
    (9, "Social Sciences"),
    (10, "Humanities"),
];

/// Start date given to projects seeded without one.
pub const DEFAULT_START_DATE: &str = "2025-01-01";
/// End date given to projects seeded without one.
pub const DEFAULT_END_DATE: &str = "2025-12-31";
/// Unit of usage answers unless the control API set another.
pub const DEFAULT_USAGE_UNIT: &str = "core-hours";

/// A MUP project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Id, from 1.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Email of the principal investigator.
    pub pi: String,
    /// Co-principal investigator, free text.
    pub co_pi: Option<String>,
    /// Research field id; `null` when the creator sent none.
    pub science_field: Option<i64>,
    /// `YYYY-MM-DD`.
    pub start_date: String,
    /// `YYYY-MM-DD`.
    pub end_date: String,
    /// Funding agency.
    pub agency: String,
    /// Grant number, unique.
    pub grant_number: String,
    /// Storage quota.
    pub max_storage: i64,
    /// Whether the project includes AI work.
    pub ai_included: bool,
    /// Whether MUP has activated the project.
    pub active: bool,
}

/// An allocation of a project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    /// Id, from 1.
    pub id: i64,
    /// Resource type (`type` on the wire).
    #[serde(rename = "type")]
    pub kind: String,
    /// Identifier, unique across all allocations.
    pub identifier: String,
    /// Size granted.
    pub size: i64,
    /// Amount used (the usage total, rounded, once usage is set).
    pub used: i64,
    /// Whether the allocation is active.
    pub active: bool,
    /// Id of the project.
    pub project: i64,
}

/// An entry of a user's `user_ssh_keys` (also where MyAccessID is kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SshKey {
    /// Id, from 1.
    pub id: i64,
    /// The key (or the MyAccessID CUID).
    pub key: String,
    /// Name (`myaccessid` for a MyAccessID entry).
    pub name: String,
}

/// A MUP user (approved or a registration request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Id, from 1.
    pub id: i64,
    /// Username, unique.
    pub username: String,
    /// Email, unique (compared exactly).
    pub email: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Salutation.
    pub salutation: String,
    /// Gender.
    pub gender: String,
    /// Year of birth.
    pub year_of_birth: Option<i64>,
    /// Country.
    pub country: String,
    /// Type of institution.
    pub type_of_institution: String,
    /// Affiliated institution.
    pub affiliated_institution: String,
    /// Agency.
    pub agency: String,
    /// Funding agency.
    pub funding_agency: String,
    /// Funding agency grant.
    pub funding_agency_grant: String,
    /// Research field ids.
    pub research_fields: Vec<i64>,
    /// Biography.
    pub biography: String,
    /// Whether MUP approved the registration.
    pub is_approved: bool,
    /// Whether the account is active.
    pub is_active: bool,
    /// SSH keys and the MyAccessID entry.
    pub user_ssh_keys: Vec<SshKey>,
    /// Every other field the creator sent, answered back as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A user's membership of a project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Id, from 1.
    pub id: i64,
    /// Project id.
    pub project: i64,
    /// User id.
    pub user: i64,
    /// Whether the membership is active.
    pub active: bool,
}

/// Usage of an allocation, as set through the control API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Usage per username.
    pub users: BTreeMap<String, f64>,
    /// Explicit total; `None` answers the sum of `users`.
    pub total: Option<f64>,
    /// Unit answered.
    pub unit: String,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            users: BTreeMap::new(),
            total: None,
            unit: DEFAULT_USAGE_UNIT.to_owned(),
        }
    }
}

impl Usage {
    /// The total answered: the explicit one, else the sum over users.
    pub fn total(&self) -> f64 {
        self.total.unwrap_or_else(|| self.users.values().sum())
    }
}

/// Switches between answer shapes seen in different MUP deployments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Member listings answer `{id, active, user_id, username, email}`
    /// instead of `{id, active, member: <user>}`.
    pub flat_members: bool,
    /// `POST /api/user/` answers 201 with `{}` instead of the user.
    pub empty_user_create_answer: bool,
}

/// The last id given out per kind (ids are never reused).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LastIds {
    /// Projects.
    pub project: i64,
    /// Allocations.
    pub allocation: i64,
    /// Users.
    pub user: i64,
    /// Memberships.
    pub member: i64,
    /// SSH key entries.
    pub ssh_key: i64,
}

/// The whole simulated MUP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Projects by ascending id.
    pub projects: Vec<Project>,
    /// Allocations by ascending id.
    pub allocations: Vec<Allocation>,
    /// Users by ascending id (registration order).
    pub users: Vec<User>,
    /// Memberships by ascending id.
    pub members: Vec<Member>,
    /// Usage by allocation id.
    pub usage: BTreeMap<i64, Usage>,
    /// Answer shape switches.
    pub options: Options,
    /// Id counters.
    pub last_ids: LastIds,
}

/// Why an operation was refused, with the answer MUP gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// 404 `{"detail": <text>}`.
    NotFound(String),
    /// 400 with field errors `{"<field>": ["<message>", ...]}`.
    Invalid(BTreeMap<String, Vec<String>>),
    /// 400 `{"detail": <text>}`.
    Rejected(String),
}

impl Refusal {
    fn not_found() -> Self {
        Self::NotFound("Not found.".to_owned())
    }

    fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(BTreeMap::from([(field.to_owned(), vec![message.into()])]))
    }

    /// The HTTP status answered.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Invalid(_) | Self::Rejected(_) => 400,
        }
    }

    /// The JSON body answered.
    pub fn body(&self) -> Value {
        match self {
            Self::NotFound(d) | Self::Rejected(d) => json!({ "detail": d }),
            Self::Invalid(errors) => to_json(errors),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.body())
    }
}

impl std::error::Error for Refusal {}

/// Serialises a model value; the model has only maps with string or integer
/// keys, which cannot fail.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

// ------------------------------------------------------------ field reading

const REQUIRED: &str = "This field is required.";
const NOT_NULL: &str = "This field may not be null.";
const NOT_BLANK: &str = "This field may not be blank.";
const NOT_INT: &str = "A valid integer is required.";
const NOT_BOOL: &str = "Must be a valid boolean.";
const NOT_STRING: &str = "Not a valid string.";
const NOT_EMAIL: &str = "Enter a valid email address.";
const NOT_DATE: &str = "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.";
const NOT_USERNAME: &str = "Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters.";

/// Whether a field must be present (create) or may be left out (edit).
#[derive(Clone, Copy, PartialEq)]
enum Need {
    Required,
    Optional,
}

/// Reads the fields of a request body, collecting every error the way DRF
/// does, so one answer lists all of them.
struct Fields<'a> {
    body: &'a Map<String, Value>,
    errors: BTreeMap<String, Vec<String>>,
}

impl<'a> Fields<'a> {
    fn new(body: &'a Value) -> Result<Self, Refusal> {
        match body {
            Value::Object(body) => Ok(Self {
                body,
                errors: BTreeMap::new(),
            }),
            other => Err(Refusal::field(
                "non_field_errors",
                format!(
                    "Invalid data. Expected a dictionary, but got {}.",
                    python_type(other)
                ),
            )),
        }
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }

    fn has_error(&self, field: &str) -> bool {
        self.errors.contains_key(field)
    }

    /// The raw value: `None` when absent; a `null` when `nullable` is false
    /// is an error.
    fn raw(&mut self, key: &str, need: Need, nullable: bool) -> Option<&'a Value> {
        let body = self.body;
        match body.get(key) {
            None => {
                if need == Need::Required {
                    self.error(key, REQUIRED);
                }
                None
            }
            Some(Value::Null) if !nullable => {
                self.error(key, NOT_NULL);
                None
            }
            Some(v) => Some(v),
        }
    }

    /// A string (numbers are taken as their text, as DRF's `CharField` does).
    fn string(&mut self, key: &str, need: Need, blank: bool) -> Option<String> {
        let value = self.raw(key, need, false)?;
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                self.error(key, NOT_STRING);
                return None;
            }
        };
        if !blank && text.trim().is_empty() {
            self.error(key, NOT_BLANK);
            return None;
        }
        Some(text)
    }

    /// A string that may be `null` (`Some(None)`).
    fn nullable_string(&mut self, key: &str) -> Option<Option<String>> {
        match self.raw(key, Need::Optional, true)? {
            Value::Null => Some(None),
            Value::String(s) => Some(Some(s.clone())),
            Value::Number(n) => Some(Some(n.to_string())),
            _ => {
                self.error(key, NOT_STRING);
                None
            }
        }
    }

    fn int_of(&mut self, key: &str, value: &Value, min: Option<i64>) -> Option<i64> {
        let Some(n) = as_int(value) else {
            self.error(key, NOT_INT);
            return None;
        };
        if let Some(min) = min
            && n < min
        {
            self.error(
                key,
                format!("Ensure this value is greater than or equal to {min}."),
            );
            return None;
        }
        Some(n)
    }

    fn int(&mut self, key: &str, need: Need, min: Option<i64>) -> Option<i64> {
        let value = self.raw(key, need, false)?;
        self.int_of(key, value, min)
    }

    /// An integer that may be `null` (`Some(None)`).
    fn nullable_int(&mut self, key: &str) -> Option<Option<i64>> {
        match self.raw(key, Need::Optional, true)? {
            Value::Null => Some(None),
            v => self.int_of(key, v, None).map(Some),
        }
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        let value = self.raw(key, Need::Optional, false)?;
        let b = as_bool(value);
        if b.is_none() {
            self.error(key, NOT_BOOL);
        }
        b
    }

    fn date(&mut self, key: &str, need: Need) -> Option<String> {
        let value = self.raw(key, need, false)?;
        match value.as_str().filter(|s| is_date(s)) {
            Some(s) => Some(s.to_owned()),
            None => {
                self.error(key, NOT_DATE);
                None
            }
        }
    }

    fn email(&mut self, key: &str, need: Need) -> Option<String> {
        let email = self.string(key, need, false)?;
        if is_email(&email) {
            Some(email)
        } else {
            self.error(key, NOT_EMAIL);
            None
        }
    }

    /// A list of research field ids, each one known.
    fn research_fields(&mut self, key: &str) -> Option<Vec<i64>> {
        let value = self.raw(key, Need::Optional, false)?;
        let Some(items) = value.as_array() else {
            self.error(
                key,
                format!(
                    "Expected a list of items but got type \"{}\".",
                    python_type(value)
                ),
            );
            return None;
        };
        let mut ids = Vec::new();
        for item in items {
            match as_int(item) {
                Some(id) if research_field_known(id) => ids.push(id),
                Some(id) => self.error(key, invalid_pk(&id.to_string())),
                None => self.error(key, incorrect_pk_type(item)),
            }
        }
        Some(ids)
    }

    /// A research field id that may be `null`.
    fn science_field(&mut self, key: &str) -> Option<Option<i64>> {
        match self.raw(key, Need::Optional, true)? {
            Value::Null => Some(None),
            v => match as_int(v) {
                Some(id) if research_field_known(id) => Some(Some(id)),
                Some(id) => {
                    self.error(key, invalid_pk(&id.to_string()));
                    None
                }
                None => {
                    self.error(key, incorrect_pk_type(v));
                    None
                }
            },
        }
    }

    fn finish(self) -> Result<(), Refusal> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Refusal::Invalid(self.errors))
        }
    }
}

/// Python's name for a JSON value's type, as DRF's messages say it.
fn python_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn invalid_pk(pk: &str) -> String {
    format!("Invalid pk \"{pk}\" - object does not exist.")
}

fn incorrect_pk_type(v: &Value) -> String {
    format!(
        "Incorrect type. Expected pk value, received {}.",
        python_type(v)
    )
}

fn research_field_known(id: i64) -> bool {
    RESEARCH_FIELDS.iter().any(|(known, _)| *known == id)
}

/// An integer as DRF's `IntegerField` takes it: a JSON integer, a float
/// without a fraction, or a string of either.
fn as_int(v: &Value) -> Option<i64> {
    fn from_f64(f: f64) -> Option<i64> {
        // Only whole numbers well inside i64 (the cast would saturate).
        (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
    }
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(from_f64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(from_f64))
        }
        _ => None,
    }
}

/// A boolean as DRF's `BooleanField` takes it.
fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.as_str() {
            "true" | "True" | "TRUE" | "1" | "yes" | "on" | "y" | "t" => Some(true),
            "false" | "False" | "FALSE" | "0" | "no" | "off" | "n" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `YYYY-MM-DD` naming a real day.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && s.parse::<jiff::civil::Date>().is_ok()
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// Django's username rule: letters, digits and `@.+-_`.
fn is_username(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '@' | '.' | '+' | '-' | '_'))
}

// ------------------------------------------------------------- projects

/// The fields of a project a request may set.
#[derive(Default)]
struct ProjectPatch {
    title: Option<String>,
    description: Option<String>,
    pi: Option<String>,
    co_pi: Option<Option<String>>,
    science_field: Option<Option<i64>>,
    start_date: Option<String>,
    end_date: Option<String>,
    agency: Option<String>,
    grant_number: Option<String>,
    max_storage: Option<i64>,
    ai_included: Option<bool>,
}

impl ProjectPatch {
    /// Reads the fields; `need` applies to title, pi, grant number and dates.
    fn read(f: &mut Fields<'_>, need: Need) -> Self {
        Self {
            title: f.string("title", need, false),
            description: f.string("description", Need::Optional, true),
            pi: f.string("pi", need, false),
            co_pi: f.nullable_string("co_pi"),
            science_field: f.science_field("science_field"),
            start_date: f.date("start_date", need),
            end_date: f.date("end_date", need),
            agency: f.string("agency", Need::Optional, true),
            grant_number: f.string("grant_number", need, false),
            max_storage: f.int("max_storage", Need::Optional, Some(0)),
            ai_included: f.boolean("ai_included"),
        }
    }

    fn apply(self, p: &mut Project) {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *slot = v;
            }
        }
        set(&mut p.title, self.title);
        set(&mut p.description, self.description);
        set(&mut p.pi, self.pi);
        set(&mut p.co_pi, self.co_pi);
        set(&mut p.science_field, self.science_field);
        set(&mut p.start_date, self.start_date);
        set(&mut p.end_date, self.end_date);
        set(&mut p.agency, self.agency);
        set(&mut p.grant_number, self.grant_number);
        set(&mut p.max_storage, self.max_storage);
        set(&mut p.ai_included, self.ai_included);
    }
}

// ---------------------------------------------------------------- users

/// Keys of a user object the model holds itself (never kept as extras).
const USER_KEYS: &[&str] = &[
    "id",
    "username",
    "email",
    "first_name",
    "last_name",
    "salutation",
    "gender",
    "year_of_birth",
    "country",
    "type_of_institution",
    "affiliated_institution",
    "agency",
    "funding_agency",
    "funding_agency_grant",
    "research_fields",
    "biography",
    "is_approved",
    "is_active",
    "user_ssh_keys",
];

/// The free-text fields of a user besides the names.
const USER_TEXT_KEYS: &[&str] = &[
    "salutation",
    "gender",
    "country",
    "type_of_institution",
    "affiliated_institution",
    "agency",
    "funding_agency",
    "funding_agency_grant",
    "biography",
];

/// The fields of a user a request may set.
#[derive(Default)]
struct UserPatch {
    username: Option<String>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    text: Vec<(&'static str, String)>,
    year_of_birth: Option<Option<i64>>,
    research_fields: Option<Vec<i64>>,
    extra: Map<String, Value>,
}

impl UserPatch {
    /// Reads the fields; `names` applies to username, email, first and last
    /// name. `skip` names control-only keys that are not extras.
    fn read(f: &mut Fields<'_>, need: Need, names: Need, skip: &[&str]) -> Self {
        let username = f.string("username", need, false);
        if let Some(u) = &username
            && !is_username(u)
        {
            f.error("username", NOT_USERNAME);
        }
        let mut text = Vec::new();
        for key in USER_TEXT_KEYS {
            if let Some(v) = f.string(key, Need::Optional, true) {
                text.push((*key, v));
            }
        }
        Self {
            username,
            email: f.email("email", need),
            first_name: f.string("first_name", names, false),
            last_name: f.string("last_name", names, false),
            text,
            year_of_birth: f.nullable_int("year_of_birth"),
            research_fields: f.research_fields("research_fields"),
            extra: f
                .body
                .iter()
                .filter(|(k, _)| !USER_KEYS.contains(&k.as_str()) && !skip.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    fn apply(self, u: &mut User) {
        if let Some(v) = self.username {
            u.username = v;
        }
        if let Some(v) = self.email {
            u.email = v;
        }
        if let Some(v) = self.first_name {
            u.first_name = v;
        }
        if let Some(v) = self.last_name {
            u.last_name = v;
        }
        for (key, v) in self.text {
            match key {
                "salutation" => u.salutation = v,
                "gender" => u.gender = v,
                "country" => u.country = v,
                "type_of_institution" => u.type_of_institution = v,
                "affiliated_institution" => u.affiliated_institution = v,
                "agency" => u.agency = v,
                "funding_agency" => u.funding_agency = v,
                "funding_agency_grant" => u.funding_agency_grant = v,
                _ => u.biography = v,
            }
        }
        if let Some(v) = self.year_of_birth {
            u.year_of_birth = v;
        }
        if let Some(v) = self.research_fields {
            u.research_fields = v;
        }
        u.extra.extend(self.extra);
    }
}

// ---------------------------------------------------------------- state

impl State {
    // ------------------------------------------------------ look-ups

    /// A project by id.
    pub fn project(&self, id: i64) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id)
    }

    fn project_mut(&mut self, id: i64) -> Result<&mut Project, Refusal> {
        self.projects
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or_else(Refusal::not_found)
    }

    /// A project by grant number.
    pub fn project_by_grant(&self, grant: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.grant_number == grant)
    }

    /// An allocation by id.
    pub fn allocation(&self, id: i64) -> Option<&Allocation> {
        self.allocations.iter().find(|a| a.id == id)
    }

    /// An allocation by identifier.
    pub fn allocation_by_identifier(&self, identifier: &str) -> Option<&Allocation> {
        self.allocations.iter().find(|a| a.identifier == identifier)
    }

    /// An allocation of a project (404 when it belongs to another).
    pub fn project_allocation(&self, project: i64, id: i64) -> Result<&Allocation, Refusal> {
        self.allocation(id)
            .filter(|a| a.project == project)
            .ok_or_else(Refusal::not_found)
    }

    /// The allocations of a project, active and inactive.
    pub fn project_allocations(&self, project: i64) -> Result<Vec<&Allocation>, Refusal> {
        self.project(project).ok_or_else(Refusal::not_found)?;
        Ok(self
            .allocations
            .iter()
            .filter(|a| a.project == project)
            .collect())
    }

    /// A user by id.
    pub fn user(&self, id: i64) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    fn user_mut(&mut self, id: i64) -> Result<&mut User, Refusal> {
        self.users
            .iter_mut()
            .find(|u| u.id == id)
            .ok_or_else(Refusal::not_found)
    }

    /// A user by email (exact).
    pub fn user_by_email(&self, email: &str) -> Option<&User> {
        self.users.iter().find(|u| u.email == email)
    }

    /// A user by username (exact).
    pub fn user_by_username(&self, username: &str) -> Option<&User> {
        self.users.iter().find(|u| u.username == username)
    }

    /// The memberships of a project, active and inactive.
    pub fn project_members(&self, project: i64) -> Result<Vec<&Member>, Refusal> {
        self.project(project).ok_or_else(Refusal::not_found)?;
        Ok(self
            .members
            .iter()
            .filter(|m| m.project == project)
            .collect())
    }

    // ----------------------------------------------------- projects

    /// `POST /api/projects/add/`: a new inactive project led by an existing
    /// user.
    pub fn create_project(&mut self, body: &Value) -> Result<Project, Refusal> {
        let mut f = Fields::new(body)?;
        let patch = ProjectPatch::read(&mut f, Need::Required);
        if let Some(pi) = &patch.pi
            && self.user_by_email(pi).is_none()
        {
            f.error("pi", "unknown principal investigator");
        }
        self.check_grant(&mut f, patch.grant_number.as_deref(), None);
        f.finish()?;
        // MUP activates projects in a separate step.
        Ok(self.insert_project(patch, false))
    }

    /// Control: a project as given (`grant_number` required, the PI need not
    /// exist), active unless `active: false`.
    pub fn seed_project(&mut self, body: &Value) -> Result<Project, Refusal> {
        let mut f = Fields::new(body)?;
        let grant = f.string("grant_number", Need::Required, false);
        let mut patch = ProjectPatch::read(&mut f, Need::Optional);
        let active = f.boolean("active").unwrap_or(true);
        self.check_grant(&mut f, grant.as_deref(), None);
        f.finish()?;
        if patch.title.is_none() {
            patch.title = grant.as_ref().map(|g| format!("Project {g}"));
        }
        patch.grant_number = grant;
        Ok(self.insert_project(patch, active))
    }

    fn check_grant(&self, f: &mut Fields<'_>, grant: Option<&str>, except: Option<i64>) {
        if let Some(grant) = grant
            && self
                .project_by_grant(grant)
                .is_some_and(|p| Some(p.id) != except)
        {
            f.error(
                "grant_number",
                "project with this grant number already exists.",
            );
        }
    }

    fn insert_project(&mut self, patch: ProjectPatch, active: bool) -> Project {
        self.last_ids.project += 1;
        let mut p = Project {
            id: self.last_ids.project,
            title: String::new(),
            description: String::new(),
            pi: String::new(),
            co_pi: None,
            science_field: None,
            start_date: DEFAULT_START_DATE.to_owned(),
            end_date: DEFAULT_END_DATE.to_owned(),
            agency: String::new(),
            grant_number: String::new(),
            max_storage: 0,
            ai_included: false,
            active,
        };
        patch.apply(&mut p);
        self.projects.push(p.clone());
        p
    }

    /// `PUT /api/projects/{id}/edit`: the fields given (`active` is left to
    /// activate/deactivate).
    pub fn edit_project(&mut self, id: i64, body: &Value) -> Result<Project, Refusal> {
        self.project(id).ok_or_else(Refusal::not_found)?;
        let mut f = Fields::new(body)?;
        let patch = ProjectPatch::read(&mut f, Need::Optional);
        if let Some(pi) = &patch.pi
            && self.user_by_email(pi).is_none()
        {
            f.error("pi", "unknown principal investigator");
        }
        self.check_grant(&mut f, patch.grant_number.as_deref(), Some(id));
        f.finish()?;
        let p = self.project_mut(id)?;
        patch.apply(p);
        Ok(p.clone())
    }

    /// Activates or deactivates a project.
    pub fn set_project_active(&mut self, id: i64, active: bool) -> Result<Project, Refusal> {
        let p = self.project_mut(id)?;
        p.active = active;
        Ok(p.clone())
    }

    // -------------------------------------------------- allocations

    /// `POST /api/projects/{id}/allocations/add`: only into an active
    /// project; the project in the path wins over the body's.
    pub fn add_allocation(&mut self, project: i64, body: &Value) -> Result<Allocation, Refusal> {
        let p = self.project(project).ok_or_else(Refusal::not_found)?;
        if !p.active {
            return Err(Refusal::Rejected("project is not active".to_owned()));
        }
        self.insert_allocation(project, body)
    }

    /// Control: an allocation of any existing project, active or not, named
    /// by `project` (id) or `project_grant`.
    pub fn seed_allocation(&mut self, body: &Value) -> Result<Allocation, Refusal> {
        let project = match (
            body.get("project").and_then(as_int),
            body.get("project_grant").and_then(Value::as_str),
        ) {
            (Some(id), _) => self.project(id).map(|p| p.id),
            (None, Some(grant)) => self.project_by_grant(grant).map(|p| p.id),
            (None, None) => return Err(Refusal::field("project", REQUIRED)),
        };
        let Some(project) = project else {
            return Err(Refusal::field("project", "unknown project"));
        };
        self.insert_allocation(project, body)
    }

    fn insert_allocation(&mut self, project: i64, body: &Value) -> Result<Allocation, Refusal> {
        let mut f = Fields::new(body)?;
        let kind = f.string("type", Need::Required, false);
        let identifier = f.string("identifier", Need::Required, false);
        let size = f.int("size", Need::Required, Some(0));
        let used = f.int("used", Need::Optional, Some(0));
        let active = f.boolean("active");
        self.check_identifier(&mut f, identifier.as_deref(), None);
        f.finish()?;
        let (Some(kind), Some(identifier), Some(size)) = (kind, identifier, size) else {
            // finish() refuses when a required field is missing.
            return Err(Refusal::field("non_field_errors", "incomplete allocation"));
        };
        self.last_ids.allocation += 1;
        let a = Allocation {
            id: self.last_ids.allocation,
            kind,
            identifier,
            size,
            used: used.unwrap_or(0),
            active: active.unwrap_or(true),
            project,
        };
        self.allocations.push(a.clone());
        Ok(a)
    }

    fn check_identifier(&self, f: &mut Fields<'_>, identifier: Option<&str>, except: Option<i64>) {
        if let Some(identifier) = identifier
            && self
                .allocation_by_identifier(identifier)
                .is_some_and(|a| Some(a.id) != except)
        {
            f.error(
                "identifier",
                "allocation with this identifier already exists.",
            );
        }
    }

    /// `PUT /api/projects/{pid}/allocations/edit/{aid}`: type, identifier,
    /// size, used and active as given (an allocation never changes project).
    pub fn edit_allocation(
        &mut self,
        project: i64,
        id: i64,
        body: &Value,
    ) -> Result<Allocation, Refusal> {
        self.project_allocation(project, id)?;
        let mut f = Fields::new(body)?;
        let kind = f.string("type", Need::Optional, false);
        let identifier = f.string("identifier", Need::Optional, false);
        let size = f.int("size", Need::Optional, Some(0));
        let used = f.int("used", Need::Optional, Some(0));
        let active = f.boolean("active");
        self.check_identifier(&mut f, identifier.as_deref(), Some(id));
        f.finish()?;
        let Some(a) = self.allocations.iter_mut().find(|a| a.id == id) else {
            return Err(Refusal::not_found());
        };
        if let Some(v) = kind {
            a.kind = v;
        }
        if let Some(v) = identifier {
            a.identifier = v;
        }
        if let Some(v) = size {
            a.size = v;
        }
        if let Some(v) = used {
            a.used = v;
        }
        if let Some(v) = active {
            a.active = v;
        }
        Ok(a.clone())
    }

    /// `GET /api/projects/{pid}/allocations/{aid}/usage`.
    pub fn usage_answer(&self, project: i64, id: i64) -> Result<Value, Refusal> {
        self.project_allocation(project, id)?;
        let usage = self.usage.get(&id).cloned().unwrap_or_default();
        Ok(json!({"total": usage.total(), "users": usage.users, "unit": usage.unit}))
    }

    /// Control: replaces an allocation's usage (`unit` kept unless given)
    /// and sets its `used` to the total, rounded.
    pub fn set_usage(
        &mut self,
        identifier: &str,
        users: BTreeMap<String, f64>,
        total: Option<f64>,
        unit: Option<String>,
    ) -> Result<Usage, Refusal> {
        let Some(a) = self
            .allocations
            .iter_mut()
            .find(|a| a.identifier == identifier)
        else {
            return Err(Refusal::NotFound("Allocation not found.".to_owned()));
        };
        let usage = self.usage.entry(a.id).or_default();
        usage.users = users;
        usage.total = total;
        if let Some(unit) = unit {
            usage.unit = unit;
        }
        // `used` is an integer on the wire.
        a.used = usage.total().round() as i64;
        Ok(usage.clone())
    }

    // ------------------------------------------------------ members

    /// `POST /api/projects/{id}/members/add`: the user named by `user_id`
    /// (or, without it, by `email`); one membership per user and project.
    pub fn add_member(&mut self, project: i64, body: &Value) -> Result<Member, Refusal> {
        self.project(project).ok_or_else(Refusal::not_found)?;
        let mut f = Fields::new(body)?;
        let user = self.member_user(&mut f);
        let active = f.boolean("active");
        f.finish()?;
        let Some(user) = user else {
            return Err(Refusal::field("user_id", REQUIRED));
        };
        self.insert_member(project, user, active.unwrap_or(true))
    }

    /// Control: a membership of `project` (id) for the user named by
    /// `user_id`, `email` or `username`.
    pub fn seed_member(&mut self, body: &Value) -> Result<Member, Refusal> {
        let mut f = Fields::new(body)?;
        let project = f.int("project", Need::Required, None);
        let user = match body.get("username").and_then(Value::as_str) {
            Some(name) if body.get("user_id").is_none() => match self.user_by_username(name) {
                Some(u) => Some(u.id),
                None => {
                    f.error("username", "User not found.");
                    None
                }
            },
            _ => self.member_user(&mut f),
        };
        let active = f.boolean("active");
        f.finish()?;
        let (Some(project), Some(user)) = (project, user) else {
            return Err(Refusal::field("user_id", REQUIRED));
        };
        self.project(project).ok_or_else(Refusal::not_found)?;
        self.insert_member(project, user, active.unwrap_or(true))
    }

    /// The user of a membership request: `user_id`, else `email`.
    fn member_user(&self, f: &mut Fields<'_>) -> Option<i64> {
        let body = f.body;
        match (body.get("user_id"), body.get("email")) {
            (Some(id), _) if !id.is_null() => match as_int(id) {
                Some(n) if self.user(n).is_some() => Some(n),
                Some(n) => {
                    f.error("user_id", invalid_pk(&n.to_string()));
                    None
                }
                None => {
                    f.error("user_id", incorrect_pk_type(id));
                    None
                }
            },
            (_, Some(Value::String(email))) => match self.user_by_email(email) {
                Some(u) => Some(u.id),
                None => {
                    f.error("email", "User not found.");
                    None
                }
            },
            _ => {
                f.error("user_id", REQUIRED);
                None
            }
        }
    }

    fn insert_member(&mut self, project: i64, user: i64, active: bool) -> Result<Member, Refusal> {
        if self
            .members
            .iter()
            .any(|m| m.project == project && m.user == user)
        {
            return Err(Refusal::Rejected(
                "User is already a member of this project.".to_owned(),
            ));
        }
        self.last_ids.member += 1;
        let m = Member {
            id: self.last_ids.member,
            project,
            user,
            active,
        };
        self.members.push(m.clone());
        Ok(m)
    }

    /// `PUT /api/projects/{pid}/members/{mid}/toggle-status`: sets `active`
    /// as given, or flips it when the body has none.
    pub fn toggle_member(
        &mut self,
        project: i64,
        id: i64,
        body: &Value,
    ) -> Result<Member, Refusal> {
        self.project(project).ok_or_else(Refusal::not_found)?;
        let mut f = Fields::new(body)?;
        let active = f.boolean("active");
        f.finish()?;
        let Some(m) = self
            .members
            .iter_mut()
            .find(|m| m.id == id && m.project == project)
        else {
            return Err(Refusal::not_found());
        };
        m.active = active.unwrap_or(!m.active);
        Ok(m.clone())
    }

    /// A membership as MUP answers it: nested (`member` is the user) or flat.
    pub fn member_json(&self, m: &Member, flat: bool) -> Value {
        let user = self.user(m.user);
        if flat {
            json!({
                "id": m.id,
                "active": m.active,
                "user_id": m.user,
                "username": user.map(|u| u.username.as_str()),
                "email": user.map(|u| u.email.as_str()),
            })
        } else {
            json!({"id": m.id, "active": m.active, "member": user.map(to_json)})
        }
    }

    // -------------------------------------------------------- users

    /// `POST /api/user/`: a registration request (not approved, inactive).
    pub fn register_user(&mut self, body: &Value) -> Result<User, Refusal> {
        self.create_user(body, Need::Required, false, &[])
    }

    /// Control: a user with optional names, approved (and active) unless
    /// `approved: false`.
    pub fn seed_user(&mut self, body: &Value) -> Result<User, Refusal> {
        let approved = match body.get("approved") {
            None | Some(Value::Null) => true,
            Some(v) => as_bool(v).ok_or_else(|| Refusal::field("approved", NOT_BOOL))?,
        };
        self.create_user(body, Need::Optional, approved, &["approved"])
    }

    fn create_user(
        &mut self,
        body: &Value,
        names: Need,
        approved: bool,
        skip: &[&str],
    ) -> Result<User, Refusal> {
        let mut f = Fields::new(body)?;
        let patch = UserPatch::read(&mut f, Need::Required, names, skip);
        self.check_unique_user(&mut f, &patch, None);
        f.finish()?;
        self.last_ids.user += 1;
        let mut u = User {
            id: self.last_ids.user,
            username: String::new(),
            email: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            salutation: String::new(),
            gender: String::new(),
            year_of_birth: None,
            country: String::new(),
            type_of_institution: String::new(),
            affiliated_institution: String::new(),
            agency: String::new(),
            funding_agency: String::new(),
            funding_agency_grant: String::new(),
            research_fields: Vec::new(),
            biography: String::new(),
            is_approved: approved,
            is_active: approved,
            user_ssh_keys: Vec::new(),
            extra: Map::new(),
        };
        patch.apply(&mut u);
        self.users.push(u.clone());
        Ok(u)
    }

    fn check_unique_user(&self, f: &mut Fields<'_>, patch: &UserPatch, except: Option<i64>) {
        let other = |u: &&User| Some(u.id) != except;
        if let Some(email) = &patch.email
            && !f.has_error("email")
            && self.users.iter().filter(other).any(|u| &u.email == email)
        {
            f.error("email", "user with this email already exists.");
        }
        if let Some(username) = &patch.username
            && !f.has_error("username")
            && self
                .users
                .iter()
                .filter(other)
                .any(|u| &u.username == username)
        {
            f.error("username", "A user with that username already exists.");
        }
    }

    /// `PUT /api/user/edit/{id}`: the fields given; other fields are kept
    /// as extras.
    pub fn edit_user(&mut self, id: i64, body: &Value) -> Result<User, Refusal> {
        self.user(id).ok_or_else(Refusal::not_found)?;
        let mut f = Fields::new(body)?;
        let patch = UserPatch::read(&mut f, Need::Optional, Need::Optional, &[]);
        self.check_unique_user(&mut f, &patch, Some(id));
        f.finish()?;
        let u = self.user_mut(id)?;
        patch.apply(u);
        Ok(u.clone())
    }

    /// Control: approves a registration (the user becomes active).
    pub fn approve_user(&mut self, id: i64) -> Result<User, Refusal> {
        let u = self.user_mut(id)?;
        u.is_approved = true;
        u.is_active = true;
        Ok(u.clone())
    }

    /// `POST /api/user/{id}/myaccessid`: records the CUID as a
    /// `user_ssh_keys` entry named `myaccessid`, once.
    pub fn add_myaccessid(&mut self, id: i64, body: &Value) -> Result<User, Refusal> {
        self.user(id).ok_or_else(Refusal::not_found)?;
        let mut f = Fields::new(body)?;
        let cuid = f.string("myaccessid", Need::Required, false);
        f.finish()?;
        let Some(cuid) = cuid else {
            return Err(Refusal::field("myaccessid", REQUIRED));
        };
        let next = self.last_ids.ssh_key + 1;
        let u = self.user_mut(id)?;
        let known = u
            .user_ssh_keys
            .iter()
            .any(|k| k.name == "myaccessid" && k.key == cuid);
        if !known {
            u.user_ssh_keys.push(SshKey {
                id: next,
                key: cuid,
                name: "myaccessid".to_owned(),
            });
        }
        let answer = u.clone();
        if !known {
            self.last_ids.ssh_key = next;
        }
        Ok(answer)
    }

    // ------------------------------------------------------- seeding

    /// Control: seeds `users`, then `projects`, `allocations`, `members`
    /// and `usage` (`[{identifier, users, total?, unit?}]`) from one
    /// document; stops at the first refusal, naming the entry.
    pub fn seed(&mut self, doc: &Value) -> Result<(), String> {
        let list = |key: &str| -> Vec<Value> {
            doc.get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let fail = |key: &str, i: usize, e: Refusal| format!("{key}[{i}]: {e}");
        for (i, v) in list("users").iter().enumerate() {
            self.seed_user(v).map_err(|e| fail("users", i, e))?;
        }
        for (i, v) in list("projects").iter().enumerate() {
            self.seed_project(v).map_err(|e| fail("projects", i, e))?;
        }
        for (i, v) in list("allocations").iter().enumerate() {
            self.seed_allocation(v)
                .map_err(|e| fail("allocations", i, e))?;
        }
        for (i, v) in list("members").iter().enumerate() {
            self.seed_member(v).map_err(|e| fail("members", i, e))?;
        }
        for (i, v) in list("usage").iter().enumerate() {
            let request = UsageRequest::from_value(v).map_err(|e| fail("usage", i, e))?;
            let identifier = v
                .get("identifier")
                .and_then(Value::as_str)
                .ok_or_else(|| fail("usage", i, Refusal::field("identifier", REQUIRED)))?;
            self.set_usage(identifier, request.users, request.total, request.unit)
                .map_err(|e| fail("usage", i, e))?;
        }
        Ok(())
    }
}

/// The body of a control request setting usage.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct UsageRequest {
    pub(crate) users: BTreeMap<String, f64>,
    pub(crate) total: Option<f64>,
    pub(crate) unit: Option<String>,
}

impl UsageRequest {
    pub(crate) fn from_value(v: &Value) -> Result<Self, Refusal> {
        Self::deserialize(v).map_err(|e| Refusal::Rejected(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_pi() -> State {
        let mut s = State::default();
        s.seed_user(&json!({"username": "pi", "email": "pi@example.org"}))
            .unwrap();
        s
    }

    fn project_body(grant: &str) -> Value {
        json!({
            "title": "T", "description": "", "pi": "pi@example.org", "co_pi": null,
            "science_field": 1, "start_date": "2025-01-01", "end_date": "2025-12-31",
            "agency": "FCT", "grant_number": grant, "max_storage": 10, "ai_included": false
        })
    }

    #[test]
    fn a_created_project_is_inactive_and_gets_the_next_id() {
        let mut s = with_pi();
        let p = s.create_project(&project_body("G1")).unwrap();
        assert_eq!((p.id, p.active), (1, false));
        assert_eq!(s.create_project(&project_body("G2")).unwrap().id, 2);
    }

    #[test]
    fn a_project_lists_every_field_error_at_once() {
        let mut s = with_pi();
        let e = s
            .create_project(&json!({"pi": "nobody@example.org", "start_date": "2025-13-01"}))
            .unwrap_err();
        let body = e.body();
        assert_eq!(body["title"][0], REQUIRED);
        assert_eq!(body["grant_number"][0], REQUIRED);
        assert_eq!(body["end_date"][0], REQUIRED);
        assert_eq!(body["start_date"][0], NOT_DATE);
        assert_eq!(body["pi"][0], "unknown principal investigator");
        assert!(s.projects.is_empty(), "a refused create changes nothing");
    }

    #[test]
    fn dates_must_be_calendar_days() {
        assert!(is_date("2024-02-29"));
        assert!(!is_date("2023-02-29"));
        assert!(!is_date("2024-2-29"));
        assert!(!is_date("2024-02-29T00:00"));
    }

    #[test]
    fn integers_follow_drf() {
        assert_eq!(as_int(&json!(5)), Some(5));
        assert_eq!(as_int(&json!("5")), Some(5));
        assert_eq!(as_int(&json!(5.0)), Some(5));
        assert_eq!(as_int(&json!(5.5)), None);
        assert_eq!(as_int(&json!(true)), None);
    }

    #[test]
    fn editing_a_project_keeps_other_grants_unique() {
        let mut s = with_pi();
        s.create_project(&project_body("G1")).unwrap();
        s.create_project(&project_body("G2")).unwrap();
        let e = s
            .edit_project(2, &json!({"grant_number": "G1"}))
            .unwrap_err();
        assert_eq!(e.status(), 400);
        let p = s
            .edit_project(2, &json!({"grant_number": "G2", "title": "New"}))
            .unwrap();
        assert_eq!(p.title, "New");
    }

    #[test]
    fn allocations_need_an_active_project_and_a_unique_identifier() {
        let mut s = with_pi();
        let p = s.create_project(&project_body("G1")).unwrap();
        let body = json!({"type": "cpu", "identifier": "a_1", "size": 10});
        assert_eq!(
            s.add_allocation(p.id, &body).unwrap_err(),
            Refusal::Rejected("project is not active".into())
        );
        s.set_project_active(p.id, true).unwrap();
        let a = s.add_allocation(p.id, &body).unwrap();
        assert_eq!((a.used, a.active, a.project), (0, true, p.id));
        assert_eq!(
            s.add_allocation(p.id, &body).unwrap_err().body(),
            json!({"identifier": ["allocation with this identifier already exists."]})
        );
        let e = s
            .add_allocation(p.id, &json!({"type": "", "identifier": "b", "size": -1}))
            .unwrap_err();
        assert_eq!(e.body()["type"][0], NOT_BLANK);
        assert_eq!(
            e.body()["size"][0],
            "Ensure this value is greater than or equal to 0."
        );
    }

    #[test]
    fn usage_total_is_the_sum_unless_set_and_sets_used() {
        let mut s = with_pi();
        let p = s.seed_project(&json!({"grant_number": "G"})).unwrap();
        let a = s
            .seed_allocation(&json!({"project": p.id, "type": "cpu", "identifier": "x", "size": 1}))
            .unwrap();
        let users = BTreeMap::from([("a".to_owned(), 1.5), ("b".to_owned(), 2.0)]);
        s.set_usage("x", users.clone(), None, None).unwrap();
        assert_eq!(s.usage_answer(p.id, a.id).unwrap()["total"], json!(3.5));
        assert_eq!(s.allocation(a.id).unwrap().used, 4);
        s.set_usage("x", users, Some(10.0), Some("GPU-hours".into()))
            .unwrap();
        let u = s.usage_answer(p.id, a.id).unwrap();
        assert_eq!(
            (u["total"].clone(), u["unit"].clone()),
            (json!(10.0), json!("GPU-hours"))
        );
        assert_eq!(s.usage_answer(p.id + 1, a.id).unwrap_err().status(), 404);
    }

    #[test]
    fn one_membership_per_user_and_project_even_inactive() {
        let mut s = with_pi();
        let p = s.seed_project(&json!({"grant_number": "G"})).unwrap();
        let m = s
            .add_member(p.id, &json!({"user_id": 1, "active": false}))
            .unwrap();
        assert!(!m.active);
        assert_eq!(
            s.add_member(p.id, &json!({"user_id": 1})).unwrap_err(),
            Refusal::Rejected("User is already a member of this project.".into())
        );
        assert_eq!(
            s.add_member(p.id, &json!({"user_id": 9}))
                .unwrap_err()
                .body(),
            json!({"user_id": ["Invalid pk \"9\" - object does not exist."]})
        );
        assert!(s.toggle_member(p.id, m.id, &json!({})).unwrap().active);
        assert!(
            !s.toggle_member(p.id, m.id, &json!({"active": false}))
                .unwrap()
                .active
        );
    }

    #[test]
    fn registration_keeps_extra_fields_and_refuses_duplicates() {
        let mut s = State::default();
        let body = json!({"username": "ana", "email": "ana@example.org", "first_name": "Ana",
            "last_name": "S", "year_of_birth": "1990", "orcid": "0000", "is_approved": true});
        let u = s.register_user(&body).unwrap();
        assert!(!u.is_approved && !u.is_active);
        assert_eq!(u.year_of_birth, Some(1990));
        assert_eq!(to_json(&u)["orcid"], "0000");
        assert!(!u.extra.contains_key("is_approved"));
        let e = s.register_user(&body).unwrap_err().body();
        assert_eq!(e["email"][0], "user with this email already exists.");
        assert_eq!(
            e["username"][0],
            "A user with that username already exists."
        );
        let e = s
            .register_user(&json!({"username": "b", "email": "nope", "year_of_birth": "x"}))
            .unwrap_err()
            .body();
        assert_eq!(e["email"][0], NOT_EMAIL);
        assert_eq!(e["year_of_birth"][0], NOT_INT);
        assert_eq!(e["first_name"][0], REQUIRED);
    }

    #[test]
    fn myaccessid_is_recorded_once() {
        let mut s = with_pi();
        let body = json!({"myaccessid": "cuid@myaccessid.org"});
        s.add_myaccessid(1, &body).unwrap();
        let u = s.add_myaccessid(1, &body).unwrap();
        assert_eq!(
            u.user_ssh_keys,
            vec![SshKey {
                id: 1,
                key: "cuid@myaccessid.org".into(),
                name: "myaccessid".into()
            }]
        );
        assert_eq!(
            s.add_myaccessid(1, &json!({"myaccessid": ""}))
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn a_non_object_body_is_refused_as_drf_does() {
        let mut s = State::default();
        assert_eq!(
            s.register_user(&json!([])).unwrap_err().body(),
            json!({"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]})
        );
    }

    #[test]
    fn a_seed_document_links_by_assigned_ids_or_grant() {
        let mut s = State::default();
        let doc = json!({
            "users": [{"username": "u", "email": "u@x.org"}, {"username": "r", "email": "r@x.org", "approved": false}],
            "projects": [{"grant_number": "G", "pi": "u@x.org"}],
            "allocations": [{"project_grant": "G", "type": "cpu", "identifier": "G_cpu", "size": 5}],
            "members": [{"project": 1, "username": "u"}],
            "usage": [{"identifier": "G_cpu", "users": {"u": 2.0}}]
        });
        s.seed(&doc).unwrap();
        assert!(s.projects[0].active);
        assert!(!s.users[1].is_approved);
        assert_eq!(s.allocations[0].used, 2);
        assert_eq!(s.members[0].user, 1);
        let e = s
            .seed(&json!({"projects": [{"grant_number": "G"}]}))
            .unwrap_err();
        assert!(e.starts_with("projects[0]: 400"), "{e}");
    }
}
