//! Agent identity, service and processor registration (core spec §2.1).
//!
//! The original agent re-registered every cycle; the coordinator registers
//! once per start and again only when Waldur forgot the identity (404).

use serde_json::json;
use tokio::sync::Mutex;

use crate::waldur::{WaldurClient, WaldurResult};

/// The registration of one (offering, mode) pair.
#[derive(Debug)]
pub struct Registration {
    offering_uuid: String,
    mode: &'static str,
    processor: &'static str,
    /// (identity uuid, service uuid) once registered.
    service: Mutex<Option<(String, String)>>,
}

impl Registration {
    /// A registration for `mode` (`order_process`, `report`, ...) and the
    /// processor kind (`OfferingOrderProcessor`, ...).
    pub fn new(offering_uuid: &str, mode: &'static str, processor: &'static str) -> Self {
        Self {
            offering_uuid: offering_uuid.to_owned(),
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
    ) -> WaldurResult<String> {
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
            Some(i) => waldur.update_agent_identity(&i.uuid, &body).await?,
            None => waldur.create_agent_identity(&body).await?,
        };
        let svc = waldur
            .register_service(&identity.uuid, self.mode, self.mode)
            .await?;
        waldur
            .register_processor(&svc.uuid, self.processor, backend_type, backend_version)
            .await?;
        tracing::info!(offering = %self.offering_uuid, mode = self.mode, identity = %identity.uuid, "agent identity registered");
        *service = Some((identity.uuid.clone(), svc.uuid.clone()));
        Ok(svc.uuid)
    }

    /// The agent identity's UUID, once registered.
    pub async fn identity(&self) -> Option<String> {
        self.service.lock().await.as_ref().map(|(i, _)| i.clone())
    }

    /// Forgets the registration so the next [`Registration::ensure`] redoes it.
    pub async fn invalidate(&self) {
        *self.service.lock().await = None;
    }
}
