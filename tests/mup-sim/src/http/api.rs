//! MUP's API: its routes and what each answers.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::state::{RESEARCH_FIELDS, Refusal, State, to_json};

use super::{Answer, percent_decode};

/// An API route with its path parameters.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Route {
    ResearchFields,
    ProjectList,
    ProjectByGrant(String),
    ProjectView(i64),
    ProjectAdd,
    ProjectEdit(i64),
    ProjectActivate(i64),
    ProjectDeactivate(i64),
    AllocationList(i64),
    AllocationAdd(i64),
    AllocationEdit(i64, i64),
    AllocationView(i64, i64),
    AllocationByIdentifier(String),
    AllocationUsage(i64, i64),
    MemberList(i64),
    MemberAdd(i64),
    MemberToggle(i64, i64),
    UserList,
    UserRequestList,
    UserView(i64),
    UserByEmail(String),
    UserByUsername(String),
    UserCreate,
    UserMyAccessId(i64),
    UserEdit(i64),
}

/// An id segment as Django's `<int:...>` takes it: digits only.
fn id(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A text segment: `<str:...>`, non-empty.
fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The route of a path below `/api/` (as sent, percent-encoded) and the one
/// method it takes. Trailing slashes are matched exactly as MUP spells each
/// path: `projects/list/` but `projects/view/{id}`.
pub(super) fn route(rest: &str) -> Option<(Route, Method)> {
    let (trimmed, slash) = match rest.strip_suffix('/') {
        Some(t) => (t, true),
        None => (rest, false),
    };
    // Split before decoding, so an encoded `/` stays inside its segment.
    let decoded: Vec<String> = trimmed
        .split('/')
        .map(percent_decode)
        .collect::<Option<_>>()?;
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    use Method as M;
    use Route as R;
    let found = match (segments.as_slice(), slash) {
        (["research-fields", "list"], true) => (R::ResearchFields, M::GET),
        (["projects", "list"], true) => (R::ProjectList, M::GET),
        (["projects", "add"], true) => (R::ProjectAdd, M::POST),
        (["projects", "by-grant", g], false) => (R::ProjectByGrant(text(g)?), M::GET),
        (["projects", "view", i], false) => (R::ProjectView(id(i)?), M::GET),
        // Before `projects/{id}/...`: "allocations" is no id anyway, but
        // the order keeps that obvious.
        (["projects", "allocations", ident], false) => {
            (R::AllocationByIdentifier(text(ident)?), M::GET)
        }
        (["projects", i, "edit"], false) => (R::ProjectEdit(id(i)?), M::PUT),
        (["projects", i, "activate"], false) => (R::ProjectActivate(id(i)?), M::PUT),
        (["projects", i, "deactivate"], false) => (R::ProjectDeactivate(id(i)?), M::PUT),
        (["projects", i, "allocations", "list"], false) => (R::AllocationList(id(i)?), M::GET),
        (["projects", i, "allocations", "add"], false) => (R::AllocationAdd(id(i)?), M::POST),
        (["projects", p, "allocations", "edit", a], false) => {
            (R::AllocationEdit(id(p)?, id(a)?), M::PUT)
        }
        (["projects", p, "allocations", "view", a], false) => {
            (R::AllocationView(id(p)?, id(a)?), M::GET)
        }
        (["projects", p, "allocations", a, "usage"], false) => {
            (R::AllocationUsage(id(p)?, id(a)?), M::GET)
        }
        (["projects", i, "members", "list"], false) => (R::MemberList(id(i)?), M::GET),
        (["projects", i, "members", "add"], false) => (R::MemberAdd(id(i)?), M::POST),
        (["projects", p, "members", m, "toggle-status"], false) => {
            (R::MemberToggle(id(p)?, id(m)?), M::PUT)
        }
        (["user"], true) => (R::UserCreate, M::POST),
        (["user", "list"], true) => (R::UserList, M::GET),
        (["user", "request", "list"], true) => (R::UserRequestList, M::GET),
        (["user", "view", i], false) => (R::UserView(id(i)?), M::GET),
        (["user", "by-email", e], false) => (R::UserByEmail(text(e)?), M::GET),
        (["user", "by-username", u], false) => (R::UserByUsername(text(u)?), M::GET),
        (["user", "edit", i], false) => (R::UserEdit(id(i)?), M::PUT),
        (["user", i, "myaccessid"], false) => (R::UserMyAccessId(id(i)?), M::POST),
        _ => return None,
    };
    Some(found)
}

fn ok(value: Value) -> Result<Answer, Refusal> {
    Ok(Answer::new(StatusCode::OK, value))
}

fn created(value: Value) -> Result<Answer, Refusal> {
    Ok(Answer::new(StatusCode::CREATED, value))
}

fn list<'a, T: serde::Serialize + 'a>(items: impl IntoIterator<Item = &'a T>) -> Value {
    Value::Array(items.into_iter().map(to_json).collect())
}

fn found<T: serde::Serialize>(item: Option<&T>, missing: &str) -> Result<Answer, Refusal> {
    match item {
        Some(item) => ok(to_json(item)),
        None => Err(Refusal::NotFound(missing.to_owned())),
    }
}

/// Serves an authenticated request whose method matched its route.
pub(super) fn serve(state: &mut State, route: Route, body: &Value) -> Answer {
    answer(state, route, body).unwrap_or_else(Answer::from)
}

fn answer(state: &mut State, route: Route, body: &Value) -> Result<Answer, Refusal> {
    match route {
        Route::ResearchFields => ok(Value::Array(
            RESEARCH_FIELDS
                .iter()
                .map(|(id, name)| json!({"id": id, "name": name}))
                .collect(),
        )),
        Route::ProjectList => ok(list(&state.projects)),
        Route::ProjectByGrant(grant) => found(state.project_by_grant(&grant), "Project not found."),
        Route::ProjectView(id) => found(state.project(id), "Not found."),
        Route::ProjectAdd => created(to_json(&state.create_project(body)?)),
        Route::ProjectEdit(id) => ok(to_json(&state.edit_project(id, body)?)),
        Route::ProjectActivate(id) => ok(to_json(&state.set_project_active(id, true)?)),
        Route::ProjectDeactivate(id) => ok(to_json(&state.set_project_active(id, false)?)),
        Route::AllocationList(project) => ok(list(state.project_allocations(project)?)),
        Route::AllocationAdd(project) => created(to_json(&state.add_allocation(project, body)?)),
        Route::AllocationEdit(project, id) => {
            ok(to_json(&state.edit_allocation(project, id, body)?))
        }
        Route::AllocationView(project, id) => ok(to_json(state.project_allocation(project, id)?)),
        Route::AllocationByIdentifier(identifier) => found(
            state.allocation_by_identifier(&identifier),
            "Allocation not found.",
        ),
        Route::AllocationUsage(project, id) => ok(state.usage_answer(project, id)?),
        Route::MemberList(project) => {
            let flat = state.options.flat_members;
            let members = state.project_members(project)?;
            ok(Value::Array(
                members.iter().map(|m| state.member_json(m, flat)).collect(),
            ))
        }
        Route::MemberAdd(project) => {
            let m = state.add_member(project, body)?;
            created(state.member_json(&m, false))
        }
        Route::MemberToggle(project, id) => {
            let m = state.toggle_member(project, id, body)?;
            ok(state.member_json(&m, false))
        }
        Route::UserList => ok(list(state.users.iter().filter(|u| u.is_approved))),
        // Users are kept in registration order: oldest request first.
        Route::UserRequestList => ok(list(state.users.iter().filter(|u| !u.is_approved))),
        Route::UserView(id) => found(state.user(id), "Not found."),
        Route::UserByEmail(email) => found(state.user_by_email(&email), "User not found."),
        Route::UserByUsername(name) => found(state.user_by_username(&name), "User not found."),
        Route::UserCreate => {
            let u = state.register_user(body)?;
            if state.options.empty_user_create_answer {
                created(json!({}))
            } else {
                created(to_json(&u))
            }
        }
        Route::UserMyAccessId(id) => ok(to_json(&state.add_myaccessid(id, body)?)),
        Route::UserEdit(id) => ok(to_json(&state.edit_user(id, body)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_mups_spelling_exactly() {
        assert_eq!(
            route("projects/allocations/p_1%2Fx"),
            Some((Route::AllocationByIdentifier("p_1/x".into()), Method::GET))
        );
        assert_eq!(
            route("projects/3/allocations/7/usage"),
            Some((Route::AllocationUsage(3, 7), Method::GET))
        );
        assert_eq!(
            route("projects/by-grant/2024.00001.CPCA"),
            Some((Route::ProjectByGrant("2024.00001.CPCA".into()), Method::GET))
        );
        assert_eq!(route("user/"), Some((Route::UserCreate, Method::POST)));
        assert_eq!(route("projects/list"), None, "list needs its slash");
        assert_eq!(route("projects/view/1/"), None, "view takes none");
        assert_eq!(route("projects/x/edit"), None, "ids are digits");
        assert_eq!(route("projects/by-grant/"), None, "a grant is not empty");
        assert_eq!(route("user/by-email/%zz"), None, "bad escapes are no path");
    }
}
