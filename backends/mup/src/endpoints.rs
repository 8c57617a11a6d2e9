//! Every portal endpoint this backend calls, typed: the one place that
//! knows the paths and the bodies. Each answers the portal's error as it
//! came ([`ApiError`]); callers decide what an error means.

use serde_json::{Value, json};

use crate::client::{Api, ApiError};
use crate::records::{self, Allocation, Member, PortalUser, Project, Usage};

type Result<T> = std::result::Result<T, ApiError>;

impl Api {
    /// `GET /api/research-fields/list/`: the cheapest read, used as ping.
    pub async fn research_fields(&self) -> Result<Vec<Value>> {
        self.get(&["api", "research-fields", "list", ""]).await
    }

    /// `GET /api/projects/list/`.
    pub async fn projects(&self) -> Result<Vec<Project>> {
        self.get(&["api", "projects", "list", ""]).await
    }

    /// `GET /api/projects/by-grant/{grant}`; `None` when absent. A project
    /// of another grant in the answer is garbage, not a match.
    pub async fn project_by_grant(&self, grant: &str) -> Result<Option<Project>> {
        let path = ["api", "projects", "by-grant", grant];
        match self.find::<Project>(&path).await? {
            Some(p) if p.grant_number != grant => Err(ApiError::garbled(
                reqwest::Method::GET,
                &path,
                format!(
                    "the answer is project {} of grant {:?}",
                    p.id, p.grant_number
                ),
            )),
            found => Ok(found),
        }
    }

    /// `GET /api/projects/view/{id}`.
    pub async fn project(&self, id: i64) -> Result<Project> {
        self.get(&["api", "projects", "view", &id.to_string()])
            .await
    }

    /// `POST /api/projects/add/`.
    pub async fn create_project(&self, body: &Value) -> Result<Project> {
        self.post(&["api", "projects", "add", ""], body).await
    }

    /// `PUT /api/projects/{id}/activate` or `.../deactivate`.
    pub async fn set_project_active(&self, id: i64, active: bool) -> Result<()> {
        let action = if active { "activate" } else { "deactivate" };
        let _: Value = self
            .put(&["api", "projects", &id.to_string(), action], &json!({}))
            .await?;
        Ok(())
    }

    /// `GET /api/projects/allocations/{identifier}`; `None` when absent.
    pub async fn allocation_by_identifier(&self, identifier: &str) -> Result<Option<Allocation>> {
        self.find(&["api", "projects", "allocations", identifier])
            .await
    }

    /// `GET /api/projects/{id}/allocations/list`: the records it can read,
    /// and how many it could not; `None` when the project is absent.
    pub async fn allocations(&self, project: i64) -> Result<Option<(Vec<Allocation>, usize)>> {
        let list: Option<Vec<Value>> = self
            .find(&[
                "api",
                "projects",
                &project.to_string(),
                "allocations",
                "list",
            ])
            .await?;
        Ok(list.map(records::allocations))
    }

    /// `POST /api/projects/{id}/allocations/add`.
    pub async fn add_allocation(&self, project: i64, body: &Value) -> Result<Allocation> {
        self.post(
            &[
                "api",
                "projects",
                &project.to_string(),
                "allocations",
                "add",
            ],
            body,
        )
        .await
    }

    /// `PUT /api/projects/{pid}/allocations/edit/{aid}` with the
    /// allocation's fields, `size` and `active` replaced. `used` is left
    /// out: the portal keeps it from its own accounting, and echoing a value
    /// read earlier would overwrite usage recorded since.
    pub async fn edit_allocation(
        &self,
        a: &Allocation,
        size: f64,
        active: bool,
    ) -> Result<Allocation> {
        let body = json!({
            "type": a.kind,
            "identifier": a.identifier,
            "size": size as i64,
            "active": active,
            "project": a.project,
        });
        self.put(
            &[
                "api",
                "projects",
                &a.project.to_string(),
                "allocations",
                "edit",
                &a.id.to_string(),
            ],
            &body,
        )
        .await
    }

    /// `GET /api/projects/{pid}/allocations/{aid}/usage`.
    pub async fn usage(&self, a: &Allocation) -> Result<Usage> {
        let (pid, aid) = (a.project.to_string(), a.id.to_string());
        let path = ["api", "projects", &pid, "allocations", &aid, "usage"];
        let answer: Value = self.get(&path).await?;
        Usage::parse(&answer).map_err(|why| ApiError::garbled(reqwest::Method::GET, &path, why))
    }

    /// `GET /api/projects/{id}/members/list`, in either record shape. A
    /// record without an id makes the whole answer unusable, so a garbled
    /// answer never reads as fewer members.
    pub async fn members(&self, project: i64) -> Result<Vec<Member>> {
        let path = ["api", "projects", &project.to_string(), "members", "list"];
        let list: Vec<Value> = self.get(&path).await?;
        records::members(list).map_err(|why| ApiError::garbled(reqwest::Method::GET, &path, why))
    }

    /// `POST /api/projects/{id}/members/add`.
    pub async fn add_member(&self, project: i64, user: &PortalUser, email: &str) -> Result<Value> {
        self.post(
            &["api", "projects", &project.to_string(), "members", "add"],
            &json!({"user_id": user.id, "email": email, "active": true}),
        )
        .await
    }

    /// `PUT /api/projects/{pid}/members/{mid}/toggle-status` with the state
    /// wanted (never a bare toggle, so a repeated call changes nothing).
    pub async fn set_member_active(&self, project: i64, member: i64, active: bool) -> Result<()> {
        let _: Value = self
            .put(
                &[
                    "api",
                    "projects",
                    &project.to_string(),
                    "members",
                    &member.to_string(),
                    "toggle-status",
                ],
                &json!({"active": active}),
            )
            .await?;
        Ok(())
    }

    /// `GET /api/user/by-email/{email}`; `None` when absent.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<PortalUser>> {
        self.find(&["api", "user", "by-email", email]).await
    }

    /// `GET /api/user/by-username/{username}`; `None` when absent.
    pub async fn user_by_username(&self, username: &str) -> Result<Option<PortalUser>> {
        self.find(&["api", "user", "by-username", username]).await
    }

    /// `GET /api/user/view/{id}`.
    pub async fn user(&self, id: i64) -> Result<PortalUser> {
        self.get(&["api", "user", "view", &id.to_string()]).await
    }

    /// `POST /api/user/`: a registration request. Some portals answer
    /// without the new user: `None` then.
    pub async fn register(&self, body: &Value) -> Result<Option<PortalUser>> {
        let answer: Value = self.post(&["api", "user", ""], body).await?;
        Ok(serde_json::from_value(answer).ok())
    }

    /// `GET /api/user/request/list/`: pending registrations.
    pub async fn registrations(&self) -> Result<Vec<PortalUser>> {
        let list: Vec<Value> = self.get(&["api", "user", "request", "list", ""]).await?;
        Ok(list
            .into_iter()
            .filter_map(|r| serde_json::from_value(r).ok())
            .collect())
    }

    /// `POST /api/user/{id}/myaccessid`.
    pub async fn set_myaccessid(&self, user: i64, myaccessid: &str) -> Result<()> {
        let _: Value = self
            .post(
                &["api", "user", &user.to_string(), "myaccessid"],
                &json!({"myaccessid": myaccessid}),
            )
            .await?;
        Ok(())
    }
}
