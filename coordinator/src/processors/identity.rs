//! Agent identity, service and processor registration.
//!
//! The original agent re-registered every cycle; the coordinator registers
//! once per start and again only when Waldur forgot the identity (404).

use serde_json::json;
use tokio::sync::Mutex;

use waldur_client::ids::Uuid;
use waldur_client::{WaldurClient, WaldurError, WaldurResult};

/// The registration of one (offering, mode) pair.
#[derive(Debug)]
pub struct Registration {
    offering_uuid: Uuid,
    mode: &'static str,
    processor: &'static str,
    /// (identity uuid, service uuid) once registered.
    service: Mutex<Option<(Uuid, Uuid)>>,
}

impl Registration {
    /// A registration for `mode` (`order_process`, `report`, ...) and the
    /// processor kind (`OfferingOrderProcessor`, ...).
    pub fn new(offering_uuid: &Uuid, mode: &'static str, processor: &'static str) -> Self {
        Self {
            offering_uuid: offering_uuid.clone(),
            mode,
            processor,
            service: Mutex::new(None),
        }
    }

    /// Registers identity, service and processor unless already done.
    pub async fn ensure(
        &self,
        waldur: &WaldurClient,
        backend_type: &str,
        backend_version: &str,
    ) -> WaldurResult<Uuid> {
        let mut service = self.service.lock().await;
        if let Some((_, uuid)) = service.as_ref() {
            return Ok(uuid.clone());
        }
        // Every task of an offering shares one identity; serialising the
        // get-or-create keeps tasks starting together from creating several.
        static IDENTITY: Mutex<()> = Mutex::const_new(());
        let _identity = IDENTITY.lock().await;
        let name = format!("agent-{}", self.offering_uuid);
        let body = json!({
            "offering": self.offering_uuid,
            "name": name,
            "version": env!("CARGO_PKG_VERSION"),
            "last_restarted": jiff::Timestamp::now().to_string(),
            "dependencies": [{"package": "waldur-coordinator", "version": env!("CARGO_PKG_VERSION")}],
            "config_file_path": "",
            "config_file_content": "",
        });
        let existing = waldur.agent_identities(&name).await?;
        let identity = match existing.into_iter().find(|i| i.name == name) {
            Some(i) => {
                let id = checked("marketplace-site-agent-identities/", &i.uuid)?;
                waldur.update_agent_identity(&id, &body).await?
            }
            None => waldur.create_agent_identity(&body).await?,
        };
        let identity = checked("marketplace-site-agent-identities/", &identity.uuid)?;
        let svc = waldur
            .register_service(&identity, self.mode, self.mode)
            .await?;
        let svc = checked("register_service", &svc.uuid)?;
        waldur
            .register_processor(&svc, self.processor, backend_type, backend_version)
            .await?;
        tracing::info!(offering = %self.offering_uuid, mode = self.mode, %identity, "agent identity registered");
        *service = Some((identity, svc.clone()));
        Ok(svc)
    }

    /// The agent identity's UUID, once registered.
    pub async fn identity(&self) -> Option<Uuid> {
        self.service.lock().await.as_ref().map(|(i, _)| i.clone())
    }

    /// Forgets the registration so the next [`Registration::ensure`] redoes it.
    pub async fn invalidate(&self) {
        *self.service.lock().await = None;
    }
}

/// A UUID from Waldur's answer on `path`.
fn checked(path: &str, value: &str) -> WaldurResult<Uuid> {
    Uuid::parse("uuid", value).map_err(|e| WaldurError::unexpected("POST", path, e))
}
