//! Where a resource sits: its project, and the project's customer. A
//! project moved to another customer, or a resource moved to another
//! project, must move in the backend's tree too (`SyncResourceProject`,
//! for backends that advertise PROJECT_SYNC), or the allocation's usage
//! and limits stay under the old owner.
//!
//! The original asked the backend on every cycle for every resource. Here
//! the membership cycle remembers each resource's placement and asks only
//! for resources it sees move; a full pass asks for every resource once per
//! `membership.project_sync_hours` (the first cycle after a start included,
//! so moves made while the coordinator was down are caught), and a
//! `resource` event asks for its resource. A failed call is logged and
//! asked again next cycle; it never marks the resource erred, as in the
//! original.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use waldur_backend_api::types::Capability;

use crate::backend::BackendHandle;
use crate::processors::orders::resource_context;
use crate::processors::team::uuid_number;
use waldur_client::WaldurClient;
use waldur_client::ids::Uuid;
use waldur_client::types::{Order, Resource};

/// Resource fields a full pass reads: what `SyncResourceProject` needs.
const CONTEXT_FIELDS: [&str; 12] = [
    "uuid",
    "name",
    "slug",
    "backend_id",
    "offering_uuid",
    "project_uuid",
    "project_slug",
    "project_name",
    "customer_uuid",
    "customer_slug",
    "customer_name",
    "state",
];

/// Calls at once in a full pass (the backend's reads are bounded on its
/// side; this only keeps a pass from crowding out other work).
const PASS_CONCURRENCY: usize = 4;

/// A resource's placement: project and customer UUIDs as numbers.
type Placement = (u128, u128);

/// What one offering's cycles remember of placements.
pub struct Placements {
    offering_uuid: Uuid,
    waldur: WaldurClient,
    backend: BackendHandle,
    /// Hours between full passes; 0: none.
    pass_every: Option<Duration>,
    seen: Mutex<HashMap<u128, Placement>>,
    last_pass: Mutex<Option<Instant>>,
}

/// What following placements did in one cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Followed {
    /// Resources asked about.
    pub checked: usize,
    /// Resources the backend moved.
    pub moved: usize,
    /// Calls that failed (asked again next cycle).
    pub failed: usize,
}

fn placement(r: &Resource) -> Option<(u128, Placement)> {
    Some((
        uuid_number(&r.uuid)?,
        (
            uuid_number(&r.project_uuid)?,
            uuid_number(&r.customer_uuid)?,
        ),
    ))
}

impl Placements {
    /// Placements of one offering; `pass_hours` 0 turns full passes off.
    pub fn new(
        offering_uuid: &Uuid,
        waldur: WaldurClient,
        backend: BackendHandle,
        pass_hours: u64,
    ) -> Self {
        Self {
            offering_uuid: offering_uuid.clone(),
            waldur,
            backend,
            pass_every: (pass_hours > 0).then(|| Duration::from_secs(pass_hours * 3600)),
            seen: Mutex::new(HashMap::new()),
            last_pass: Mutex::new(None),
        }
    }

    async fn supported(&self) -> bool {
        self.backend
            .has(Capability::ProjectSync)
            .await
            .unwrap_or(false)
    }

    fn pass_due(&self) -> bool {
        let Some(every) = self.pass_every else {
            return false;
        };
        self.last_pass
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= every)
    }

    /// Follows the placements of a membership cycle's resources (read with
    /// `customer_uuid` and `project_uuid`): a full pass when one is due,
    /// else a call for each resource seen in another place than last time.
    /// A resource seen for the first time is remembered; the full pass is
    /// what checks it.
    pub async fn follow(&self, resources: &[Resource]) -> Followed {
        if !self.supported().await {
            return Followed::default();
        }
        if self.pass_due() {
            return self.full_pass().await;
        }
        let moved: Vec<&Resource> = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            resources
                .iter()
                .filter(|r| {
                    let Some((id, now)) = placement(r) else {
                        return false;
                    };
                    match seen.get(&id) {
                        Some(before) => *before != now,
                        None => {
                            seen.insert(id, now);
                            false
                        }
                    }
                })
                .collect()
        };
        let mut followed = Followed::default();
        for r in moved {
            // The cycle's listing lacks the slugs and names: read them.
            let full = match r.id() {
                Ok(uuid) => self.waldur.resource(&uuid).await,
                Err(_) => continue,
            };
            match full {
                Ok(full) => followed.add(self.sync(&full).await),
                Err(e) => {
                    tracing::warn!(resource = %r.uuid, error = %e, "moved resource not read; its project is synced next cycle");
                    followed.failed += 1;
                }
            }
        }
        followed
    }

    /// Asks the backend to place every resource of the offering.
    pub async fn full_pass(&self) -> Followed {
        let resources = match self
            .waldur
            .resources(&self.offering_uuid, &["OK", "Erred"], &CONTEXT_FIELDS)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "resources not listed; the project sync pass waits for the next cycle");
                return Followed::default();
            }
        };
        // Resources gone from Waldur are forgotten.
        let listed: std::collections::HashSet<u128> = resources
            .iter()
            .filter_map(|r| uuid_number(&r.uuid))
            .collect();
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| listed.contains(id));
        // Indices, not references: a closure over `&Resource` trips the
        // compiler's higher-ranked lifetime check on spawned futures.
        let placed: Vec<usize> = (0..resources.len())
            .filter(|i| !resources[*i].backend_id.is_empty())
            .collect();
        let resources = &resources;
        let results: Vec<Option<bool>> = futures::stream::iter(placed)
            .map(|i| async move { self.sync(&resources[i]).await })
            .buffer_unordered(PASS_CONCURRENCY)
            .collect()
            .await;
        let mut followed = Followed::default();
        for r in results {
            followed.add(r);
        }
        *self.last_pass.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        tracing::info!(
            resources = followed.checked,
            moved = followed.moved,
            failed = followed.failed,
            "project sync pass done"
        );
        followed
    }

    /// Asks the backend to place one resource (read with the context
    /// fields); `None` when the call failed. Remembers the placement on
    /// success.
    pub async fn sync(&self, r: &Resource) -> Option<bool> {
        if r.backend_id.is_empty() || !self.supported().await {
            return Some(false);
        }
        let context = resource_context(r, &Order::default());
        let session = self.backend.lock(&r.backend_id).await;
        match session.sync_resource_project(context).await {
            Ok(moved) => {
                if moved {
                    tracing::info!(resource = %r.uuid, backend_id = %r.backend_id, project = %r.project_slug, customer = %r.customer_slug, "allocation moved under its project and customer");
                }
                if let Some((id, now)) = placement(r) {
                    self.seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, now);
                }
                Some(moved)
            }
            Err(e) => {
                tracing::warn!(resource = %r.uuid, backend_id = %r.backend_id, error = %e, "project sync failed; asked again next cycle");
                None
            }
        }
    }
}

impl Followed {
    /// Counts one call's outcome: moved, in place, or failed (`None`).
    pub fn add(&mut self, result: Option<bool>) {
        self.checked += 1;
        match result {
            Some(true) => self.moved += 1,
            Some(false) => {}
            None => self.failed += 1,
        }
    }
}
