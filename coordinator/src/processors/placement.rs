//! Changes Waldur makes to a resource outside orders that the backend must
//! follow:
//!
//! * **placement**: a project moved to another customer, or a resource to
//!   another project, must move in the backend's tree too
//!   (`SyncResourceProject`, for backends that advertise PROJECT_SYNC), or
//!   the allocation's usage and limits stay under the old owner;
//! * **end date** of a resource with prepaid components: the backend grants
//!   the prepaid amount for every month the resource runs, so a renewal
//!   that moves the end date recomputes its limits (`SetResourceLimits`
//!   with the same limits and the new end date).
//!
//! The original asked the backend about both on every cycle for every
//! resource. Here the membership cycle remembers each resource's placement
//! and end date and asks only about resources it sees change; a full pass
//! asks about every resource's placement once per
//! `membership.project_sync_hours` (the first cycle after a start included,
//! so moves made while the coordinator was down are caught), and a
//! `resource` event asks about its resource. A failed call is logged and
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
const CONTEXT_FIELDS: [&str; 14] = [
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
    "created",
    "end_date",
];

/// Calls at once in a full pass (the backend's reads are bounded on its
/// side; this only keeps a pass from crowding out other work).
const PASS_CONCURRENCY: usize = 4;

/// What is remembered of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// Project and customer UUIDs as numbers.
    placement: (u128, u128),
    /// End date, seconds since the epoch (`None`: unknown).
    end: Option<i64>,
}

/// What one offering's cycles remember of its resources.
pub struct Placements {
    offering_uuid: Uuid,
    waldur: WaldurClient,
    backend: BackendHandle,
    /// Hours between full passes; 0: none.
    pass_every: Option<Duration>,
    seen: Mutex<HashMap<u128, Seen>>,
    /// Resources whose last placement call failed: asked again next cycle.
    retry: Mutex<std::collections::HashSet<u128>>,
    last_pass: Mutex<Option<Instant>>,
}

/// What following Waldur's changes did in one cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Followed {
    /// Resources asked about their placement.
    pub checked: usize,
    /// Resources the backend moved.
    pub moved: usize,
    /// Prepaid resources whose limits were set again for a new end date.
    pub renewed: usize,
    /// Calls that failed (asked again next cycle).
    pub failed: usize,
}

fn seen_of(r: &Resource) -> Option<(u128, Seen)> {
    // An end date that is absent or does not parse is unknown, never "no
    // end": prepaid limits are not cut to a month on the strength of it.
    let end = crate::processors::orders::timestamp(r.end_date.as_deref())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    Some((
        uuid_number(&r.uuid)?,
        Seen {
            placement: (
                uuid_number(&r.project_uuid)?,
                uuid_number(&r.customer_uuid)?,
            ),
            end,
        },
    ))
}

impl Placements {
    /// What one offering remembers; `pass_hours` 0 turns full passes off.
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
            pass_every: (pass_hours > 0)
                .then(|| Duration::from_secs(pass_hours.saturating_mul(3600))),
            seen: Mutex::new(HashMap::new()),
            retry: Mutex::new(Default::default()),
            last_pass: Mutex::new(None),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<u128, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn placing(&self) -> bool {
        self.backend
            .has(Capability::ProjectSync)
            .await
            .unwrap_or(false)
    }

    async fn renewing(&self) -> bool {
        self.backend
            .has(Capability::ResourceLimits)
            .await
            .unwrap_or(false)
            && self.backend.prepaid().await.unwrap_or(false)
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

    /// Follows a membership cycle's resources (read with `customer_uuid`,
    /// `project_uuid` and `end_date`): a full placement pass when one is
    /// due, else a call for each resource seen in another place than last
    /// time; and new limits for each prepaid resource whose end date moved.
    /// A resource seen for the first time is remembered; the full pass is
    /// what checks its placement.
    pub async fn follow(&self, resources: &[Resource]) -> Followed {
        let (placing, renewing) = (self.placing().await, self.renewing().await);
        if !placing && !renewing {
            return Followed::default();
        }
        let mut followed = Followed::default();
        if placing && self.pass_due() {
            followed = self.full_pass().await;
        }
        let mut moved = Vec::new();
        let mut renewed = Vec::new();
        {
            let mut seen = self.seen();
            let retry = self.retry.lock().unwrap_or_else(|p| p.into_inner());
            for r in resources {
                let Some((id, now)) = seen_of(r) else {
                    continue;
                };
                let before = *seen.entry(id).or_insert(now);
                if placing && (before.placement != now.placement || retry.contains(&id)) {
                    moved.push(r);
                }
                if renewing && now.end.is_some() && before.end != now.end {
                    renewed.push(r);
                }
            }
        }
        for r in moved {
            if let Some(full) = self.whole(r).await {
                followed.add(self.sync(&full).await);
            } else {
                followed.failed += 1;
            }
        }
        for r in renewed {
            match self.whole(r).await {
                Some(full) if self.renew(&full).await => followed.renewed += 1,
                _ => followed.failed += 1,
            }
        }
        followed
    }

    /// Follows one resource read whole (a `resource` event): its placement
    /// is asked about whatever was seen before, its limits set again when
    /// it is prepaid and its end date moved.
    pub async fn follow_one(&self, r: &Resource) -> Followed {
        let mut followed = Followed::default();
        if self.placing().await {
            followed.add(self.sync(r).await);
        }
        let ended = seen_of(r).is_some_and(|(id, now)| {
            let mut seen = self.seen();
            now.end.is_some() && seen.entry(id).or_insert(now).end != now.end
        });
        if ended && self.renewing().await {
            if self.renew(r).await {
                followed.renewed += 1;
            } else {
                followed.failed += 1;
            }
        }
        followed
    }

    /// The whole record of a resource the cycle read with few fields.
    async fn whole(&self, r: &Resource) -> Option<Resource> {
        let uuid = r.id().ok()?;
        match self.waldur.resource(&uuid).await {
            Ok(full) => Some(full),
            Err(e) => {
                tracing::warn!(resource = %r.uuid, error = %e, "changed resource not read; followed next cycle");
                None
            }
        }
    }

    /// Sets a prepaid resource's limits again for its end date; true when
    /// done (and remembered).
    async fn renew(&self, r: &Resource) -> bool {
        let context = resource_context(r, &Order::default());
        // The months are counted from both dates, and the limits are the
        // full state: a record without them would cut or open the grant.
        if context.created.is_none() || context.end_date.is_none() || r.limits.is_empty() {
            tracing::warn!(resource = %r.uuid, "prepaid limits not set again: the resource's dates or limits are missing");
            return false;
        }
        let session = self.backend.lock(&r.backend_id).await;
        match session
            .set_resource_limits(r.limits.clone(), Some(context))
            .await
        {
            Ok(_) => {
                tracing::info!(resource = %r.uuid, backend_id = %r.backend_id, end_date = ?r.end_date, "prepaid limits set for the new end date");
                self.remember(r, |old, now| Seen {
                    end: now.end.or(old.end),
                    ..old
                });
                true
            }
            Err(e) => {
                tracing::warn!(resource = %r.uuid, backend_id = %r.backend_id, error = %e, "prepaid limits not set for the new end date; tried again next cycle");
                false
            }
        }
    }

    fn mark_retry(&self, r: &Resource, failed: bool) {
        let Some(id) = uuid_number(&r.uuid) else {
            return;
        };
        let mut retry = self.retry.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            retry.insert(id);
        } else {
            retry.remove(&id);
        }
    }

    /// Updates what is remembered of `r` with `pick(old, now)`.
    fn remember(&self, r: &Resource, pick: impl FnOnce(Seen, Seen) -> Seen) {
        if let Some((id, now)) = seen_of(r) {
            let mut seen = self.seen();
            let old = *seen.entry(id).or_insert(now);
            seen.insert(id, pick(old, now));
        }
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
        self.seen().retain(|id, _| listed.contains(id));
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
        if r.backend_id.is_empty() || !self.placing().await {
            return Some(false);
        }
        let context = resource_context(r, &Order::default());
        let session = self.backend.lock(&r.backend_id).await;
        match session.sync_resource_project(context).await {
            Ok(moved) => {
                if moved {
                    tracing::info!(resource = %r.uuid, backend_id = %r.backend_id, project = %r.project_slug, customer = %r.customer_slug, "allocation moved under its project and customer");
                }
                self.remember(r, |old, now| Seen {
                    placement: now.placement,
                    ..old
                });
                self.mark_retry(r, false);
                Some(moved)
            }
            Err(e) => {
                tracing::warn!(resource = %r.uuid, backend_id = %r.backend_id, error = %e, "project sync failed; asked again next cycle");
                self.mark_retry(r, true);
                None
            }
        }
    }
}

impl Followed {
    /// Counts one placement call's outcome: moved, in place, or failed
    /// (`None`).
    pub fn add(&mut self, result: Option<bool>) {
        self.checked += 1;
        match result {
            Some(true) => self.moved += 1,
            Some(false) => {}
            None => self.failed += 1,
        }
    }
}
