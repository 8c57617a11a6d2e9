//! Access levels (pause, downscale) as QoS swaps or `GrpSubmitJobs`.

use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{BackendError, BackendResult};

use crate::{SlurmBackend, args};

use crate::accounts::Assoc;

impl SlurmBackend {
    /// The access level an account row stands for: its QoS in the swap
    /// model, `GrpSubmitJobs` under enforcement (none: full; 0: paused, which
    /// is also what downscaled looks like there). Unknown for a QoS set by
    /// hand, so the coordinator asks SetResourceAccess, which checks for
    /// itself.
    pub(crate) fn access_of(&self, row: &Assoc) -> Option<AccessLevel> {
        let s = &self.settings;
        if s.qos_enforced() {
            return match row.grp_submit.trim() {
                "" => Some(AccessLevel::Full),
                "0" => Some(AccessLevel::Paused),
                _ => None,
            };
        }
        if s.qos_paused.as_deref() == Some(row.qos.as_str()) {
            Some(AccessLevel::Paused)
        } else if s.qos_downscaled.as_deref() == Some(row.qos.as_str()) {
            Some(AccessLevel::Downscaled)
        } else if s.qos_default == row.qos {
            Some(AccessLevel::Full)
        } else {
            None
        }
    }

    /// SetResourceAccess: the QoS swap, or `GrpSubmitJobs` under
    /// enforcement.
    pub(crate) async fn set_access(
        &self,
        backend_id: &str,
        access: AccessLevel,
    ) -> BackendResult<bool> {
        let id = crate::account_id(backend_id)?;
        if self.settings.qos_enforced() {
            // Enforcement model: never touch QoS lists, block submission.
            let rows = self.owned(&id).await?;
            let current = rows
                .account(&id)
                .ok_or_else(|| BackendError::resource_not_found(backend_id))?
                .grp_submit
                .trim()
                .to_owned();
            let value = if access == AccessLevel::Full {
                "-1"
            } else {
                "0"
            };
            let wanted_now = if value == "-1" {
                current.is_empty()
            } else {
                current == value
            };
            if wanted_now {
                return Ok(false);
            }
            self.slurm
                .sacctmgr_write(args![
                    "modify",
                    "account",
                    id,
                    "set",
                    format!("GrpSubmitJobs={value}")
                ])
                .await?;
            return Ok(true);
        }
        let target = match access {
            AccessLevel::Paused => self.settings.qos_paused.clone(),
            AccessLevel::Downscaled => self.settings.qos_downscaled.clone(),
            _ => Some(self.settings.qos_default.clone()),
        }
        .ok_or_else(|| BackendError::unimplemented("SetResourceAccess"))?;
        let rows = self.owned(&id).await?;
        let row = rows
            .account(&id)
            .ok_or_else(|| BackendError::resource_not_found(backend_id))?;
        if row.qos == target {
            return Ok(false);
        }
        self.slurm
            .sacctmgr_write(args![
                "modify",
                "account",
                id,
                "set",
                format!("qos={target}")
            ])
            .await?;
        Ok(true)
    }
}
