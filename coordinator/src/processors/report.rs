//! Usage reporting, batched.
//!
//! One cycle, per billing period (the current month and `periods - 1` before
//! it, oldest first, so a month that just ended is closed before the new
//! one is written):
//!
//! 1. one `GetUsageReport` per 500 resources (the backend runs one `sacct`
//!    for all of them, not one per resource);
//! 2. one offering-wide read of the period's component usages and per-user
//!    usages (the original read them per resource);
//! 3. per resource, concurrently and bounded: `set_usage` only when a total
//!    changed, refused when it went down and the backend does not advertise
//!    DECREASING_USAGE (accumulated compute cannot shrink: a smaller number
//!    is a backend fault and must not overwrite billing data);
//! 4. per component record, `set_user_usages` only when a user's amount
//!    changed.
//!
//! Amounts are rounded to two decimals (Waldur refuses more). Components the
//! offering does not define are reported in the summary and the log, never
//! sent. If the month changes between reading usage and writing it, the
//! current period is skipped this cycle: the usage would land in the wrong
//! month (the original's guard, per cycle instead of per resource).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use waldur_runtime::span;

use futures::StreamExt;
use serde_json::{Value, json};
use tracing::Instrument;
use waldur_backend_api::types::{Capability, ResourceUsage};

use crate::backend::BackendHandle;
use crate::clock::{Clock, Month};
use crate::config::OfferingConfig;
use crate::processors::step::StepError;
use waldur_client::ids::Uuid;
use waldur_client::ids::uuid_key;
use waldur_client::types::amount;
use waldur_client::{WaldurClient, WaldurError};

/// A resource's usage as the report keeps it: pairs instead of the
/// backend answer's nested maps, which cost a tree node per user, and each
/// component's name shared ([`Names`]) instead of a copy per user (tens of
/// megabytes over a large offering).
#[derive(Debug, Clone, Default)]
struct Usage {
    /// Per component.
    total: Amounts,
    /// Per user, per component.
    users: Vec<(Box<str>, Amounts)>,
}

/// Amounts by component.
type Amounts = Vec<(Arc<str>, f64)>;

/// Component names, one copy each for a whole cycle.
#[derive(Debug, Default)]
struct Names(HashSet<Arc<str>>);

impl Names {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.0.get(name) {
            return n.clone();
        }
        let n: Arc<str> = name.into();
        self.0.insert(n.clone());
        n
    }
}

impl Usage {
    fn new(r: ResourceUsage, names: &mut Names) -> Self {
        Self {
            total: r
                .total
                .into_iter()
                .map(|(k, v)| (names.get(&k), v))
                .collect(),
            users: r
                .users
                .into_iter()
                .map(|(user, per)| {
                    let per = per.into_iter().map(|(k, v)| (names.get(&k), v)).collect();
                    (user.into_boxed_str(), per)
                })
                .collect(),
        }
    }
}

/// Resources per GetUsageReport call.
const CHUNK: usize = 500;

/// Fields of the resource listing the report needs.
const RESOURCE_FIELDS: [&str; 2] = ["uuid", "backend_id"];

/// What the report keeps of a resource for the whole cycle.
#[derive(Debug)]
struct Reported {
    uuid: Box<str>,
    backend_id: Box<str>,
}

impl Reported {
    fn id(&self) -> Result<Uuid, waldur_client::ids::InvalidUuid> {
        Uuid::parse("resource.uuid", &self.uuid)
    }
}

/// Offering username → offering user URL, for `set_user_usages`. The URLs
/// of one Waldur share everything up to the offering user's UUID, so that
/// part is kept once: tens of thousands of full URLs would be megabytes.
#[derive(Debug, Default)]
struct UserUrls {
    prefix: String,
    by_name: HashMap<Box<str>, Box<str>>,
}

impl UserUrls {
    fn insert(&mut self, username: &str, url: &str) {
        if self.prefix.is_empty()
            && let Some(at) = url.rfind("marketplace-offering-users/")
        {
            self.prefix = url[..at + "marketplace-offering-users/".len()].to_owned();
        }
        // A URL of another shape is kept whole, behind a NUL no URL has.
        let tail = match url.strip_prefix(self.prefix.as_str()) {
            Some(t) if !self.prefix.is_empty() => t.to_owned(),
            _ => format!("\0{url}"),
        };
        self.by_name.insert(username.into(), tail.into_boxed_str());
    }

    fn get(&self, username: &str) -> Option<String> {
        let tail = self.by_name.get(username)?;
        Some(match tail.strip_prefix('\0') {
            Some(whole) => whole.to_owned(),
            None => format!("{}{tail}", self.prefix),
        })
    }
}

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportSummary {
    /// Resources considered (OK or Erred, with a backend id).
    pub resources: usize,
    /// Periods processed, oldest first.
    pub periods: Vec<String>,
    /// `set_usage` calls made.
    pub totals_written: usize,
    /// Resource-periods whose totals were already in Waldur.
    pub totals_unchanged: usize,
    /// `set_user_usages` calls made.
    pub user_usages_written: usize,
    /// Refused decreases: (resource uuid, component, old, new).
    pub decreases_refused: Vec<(String, String, f64, f64)>,
    /// Component keys the backend reported that the offering does not have.
    pub unknown_components: BTreeSet<String>,
    /// The current period was skipped because the month changed mid-cycle.
    pub month_changed: bool,
    /// Failures per resource or period, for the log.
    pub errors: Vec<String>,
    /// A dry run's totals that would be written: (resource uuid, period,
    /// component → amount).
    pub planned: Vec<(String, String, BTreeMap<String, String>)>,
}

/// Reports usage of one offering.
pub struct ReportProcessor {
    offering: Arc<OfferingConfig>,
    waldur: WaldurClient,
    backend: BackendHandle,
    clock: Arc<dyn Clock>,
    tz: jiff::tz::TimeZone,
    tz_name: String,
}

/// Existing Waldur records of one resource in one period. A flat list,
/// not a map of lists: the report holds one per resource of the offering.
#[derive(Default)]
struct Existing {
    /// (component type, record uuid, amount) as Waldur listed them; a type
    /// listed twice is two entries, and is never written over.
    records: Vec<(Arc<str>, Uuid, Option<f64>)>,
    /// Why Waldur's records of this resource cannot be trusted this cycle
    /// (a record id that is no UUID, an amount that is no number): nothing
    /// is written over what cannot be read.
    doubtful: Option<String>,
}

impl Existing {
    /// The records of one component type.
    fn of<'a, 'c>(
        &'a self,
        component: &'c str,
    ) -> impl Iterator<Item = (&'a Uuid, Option<f64>)> + use<'a, 'c> {
        self.records
            .iter()
            .filter(move |(c, _, _)| &**c == component)
            .map(|(_, id, amount)| (id, *amount))
    }

    /// The record of a component type, when there is exactly one.
    fn single(&self, component: &str) -> Option<(&Uuid, Option<f64>)> {
        let mut records = self.of(component);
        let first = records.next()?;
        records.next().is_none().then_some(first)
    }

    /// The component types recorded.
    fn types(&self) -> BTreeSet<&str> {
        self.records.iter().map(|(c, _, _)| &**c).collect()
    }
}

/// Per-user amounts already in Waldur: usage record uuid → (username,
/// amount), sorted by username.
type ExistingUsers = HashMap<Box<str>, Vec<(Box<str>, Option<f64>)>>;

/// A user's amount on a record, if Waldur has one.
fn known_amount(users: &ExistingUsers, record: &str, username: &str) -> Option<f64> {
    let list = users.get(record)?;
    let at = list.binary_search_by(|(u, _)| (**u).cmp(username)).ok()?;
    list[at].1
}

struct PeriodContext<'a> {
    month: Month,
    past: bool,
    date: String,
    components: &'a BTreeSet<String>,
    decreasing_ok: bool,
    user_urls: &'a UserUrls,
    /// Decide, but write nothing (`waldur-coordinator plan`).
    dry_run: bool,
}

enum TotalOutcome {
    Written { new_types: bool },
    Planned(Vec<(String, String)>),
    Unchanged,
    Refused(Vec<(String, f64, f64)>),
    Skipped,
}

impl ReportProcessor {
    /// A processor; `tz` is the configured IANA zone (validated at load).
    pub fn new(
        offering: Arc<OfferingConfig>,
        waldur: WaldurClient,
        backend: BackendHandle,
        clock: Arc<dyn Clock>,
        tz: &str,
    ) -> Self {
        Self {
            offering,
            waldur,
            backend,
            clock,
            tz: jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC),
            tz_name: tz.to_owned(),
        }
    }

    /// One report cycle. Errors are Waldur or backend failures that stop the
    /// whole cycle (listing, usage); per-resource failures are in the summary.
    pub async fn run_cycle(&self) -> Result<ReportSummary, StepError> {
        let span =
            tracing::info_span!(parent: None, span::USAGE_CYCLE, offering = %self.offering.name);
        let result = self.cycle().instrument(span).await;
        if result.is_ok() {
            crate::metrics::usage_reported(&self.offering.name);
        }
        result
    }

    /// What a cycle would write, writing nothing.
    pub async fn plan(&self) -> Result<ReportSummary, StepError> {
        self.cycle_with(true).await
    }

    async fn cycle(&self) -> Result<ReportSummary, StepError> {
        self.cycle_with(false).await
    }

    async fn cycle_with(&self, dry_run: bool) -> Result<ReportSummary, StepError> {
        let offering_uuid = &self.offering.offering_uuid;
        let offering = self
            .waldur
            .provider_offering(offering_uuid, &["components"])
            .await?;
        let components: BTreeSet<String> = offering
            .components
            .iter()
            .map(|c| c.component_type.clone())
            .collect();
        let mut resources: Vec<Reported> = Vec::new();
        self.waldur
            .resource_pages(offering_uuid, &["OK", "Erred"], &RESOURCE_FIELDS, |page| {
                resources.extend(
                    page.into_iter()
                        .filter(|r| !r.backend_id.is_empty())
                        .map(|r| Reported {
                            uuid: r.uuid.into_boxed_str(),
                            backend_id: r.backend_id.into_boxed_str(),
                        }),
                )
            })
            .await?;
        resources.shrink_to_fit();
        let mut summary = ReportSummary {
            resources: resources.len(),
            ..Default::default()
        };
        if resources.is_empty() {
            return Ok(summary);
        }
        let decreasing_ok = self.backend.has(Capability::DecreasingUsage).await?;
        let historical = self.backend.has(Capability::HistoricalUsage).await?;
        let ids: Vec<String> = resources.iter().map(|r| r.backend_id.to_string()).collect();
        let user_urls = self.user_urls().await;

        let start = Month::of(self.clock.now(), &self.tz);
        for back in (0..self.offering.reporting.periods).rev() {
            let month = start.minus(back);
            let past = back > 0;
            if past && !historical {
                tracing::debug!(period = %month, "backend has no historical usage; past period skipped");
                continue;
            }
            let usage = self.usage(&ids, past.then_some(month)).await?;
            if !past && Month::of(self.clock.now(), &self.tz) != month {
                tracing::warn!(period = %month, "the month changed while reading usage; the current period is reported next cycle");
                summary.month_changed = true;
                continue;
            }
            summary.periods.push(month.to_string());
            let ctx = PeriodContext {
                month,
                past,
                date: month.report_date(&self.tz),
                components: &components,
                decreasing_ok,
                user_urls: &user_urls,
                dry_run,
            };
            self.report_period(&ctx, &resources, usage, &mut summary)
                .await?;
        }
        for key in &summary.unknown_components {
            tracing::warn!(offering = %self.offering.name, component = %key, "the backend reports a component the offering does not define; add it with load-components");
        }
        Ok(summary)
    }

    /// Offering username → offering user URL, for `set_user_usages`.
    async fn user_urls(&self) -> UserUrls {
        // A page at a time: the whole offering's users are not held.
        let mut urls = UserUrls::default();
        match self
            .waldur
            .offering_user_pages(&self.offering.offering_uuid, |page| {
                for u in page {
                    if let Some(name) = u.username.as_deref().filter(|n| !n.is_empty())
                        && !u.url.is_empty()
                    {
                        urls.insert(name, &u.url);
                    }
                }
            })
            .await
        {
            Ok(()) => urls,
            Err(e) => {
                tracing::warn!(error = %e, "offering users unavailable; per-user usage is sent without user links");
                UserUrls::default()
            }
        }
    }

    async fn usage(
        &self,
        ids: &[String],
        period: Option<Month>,
    ) -> Result<HashMap<String, Usage>, StepError> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut names = Names::default();
        for chunk in ids.chunks(CHUNK) {
            for r in self
                .backend
                .usage_report(chunk.to_vec(), period.map(Into::into), &self.tz_name)
                .await?
            {
                out.insert(r.backend_id.clone(), Usage::new(r, &mut names));
            }
        }
        Ok(out)
    }

    async fn existing(
        &self,
        period: &str,
    ) -> Result<(HashMap<String, Existing>, ExistingUsers), WaldurError> {
        let offering = &self.offering.offering_uuid;
        // A page at a time: a whole offering's records, full, are tens of
        // megabytes; what is kept of each is a few words.
        let mut by_resource: HashMap<String, Existing> = HashMap::new();
        let mut names = Names::default();
        self.waldur
            .component_usage_pages(offering, period, |page| {
                for r in page {
                    let entry = by_resource.entry(uuid_key(&r.resource_uuid)).or_default();
                    let id = match Uuid::parse("component_usage.uuid", &r.uuid) {
                        Ok(id) => id,
                        Err(e) => {
                            entry.doubtful = Some(e.to_string());
                            continue;
                        }
                    };
                    let value = amount(&r.usage);
                    if value.is_none() {
                        entry.doubtful = Some(format!(
                            "the {} record's amount {} is not a number",
                            r.component_type, r.usage
                        ));
                    }
                    entry
                        .records
                        .push((names.get(&r.component_type), id, value));
                }
            })
            .await?;
        let mut users: ExistingUsers = HashMap::new();
        self.waldur
            .component_user_usage_pages(offering, period, |page| {
                for u in page {
                    users
                        .entry(u.parent_uuid().into_boxed_str())
                        .or_default()
                        .push((u.username.as_str().into(), amount(&u.usage)));
                }
            })
            .await?;
        for list in users.values_mut() {
            // The last listed wins, as a map would have it.
            list.reverse();
            list.sort_by(|a, b| a.0.cmp(&b.0));
            list.dedup_by(|a, b| a.0 == b.0);
        }
        Ok((by_resource, users))
    }

    async fn report_period(
        &self,
        ctx: &PeriodContext<'_>,
        resources: &[Reported],
        mut usage: HashMap<String, Usage>,
        summary: &mut ReportSummary,
    ) -> Result<(), WaldurError> {
        let period = ctx.month.billing_period();
        let (mut existing, existing_users) = self.existing(&period).await?;
        let limit = self.offering.reporting.concurrency.max(1);

        // Totals.
        let mut work: Vec<(&Reported, Usage)> = Vec::with_capacity(resources.len());
        for r in resources {
            match usage.remove(&*r.backend_id) {
                Some(u) => work.push((r, u)),
                // The backend has no such resource: the current month is
                // reported as zero (as the original), a past one is skipped.
                None if !ctx.past => {
                    let zero = Usage {
                        total: ctx
                            .components
                            .iter()
                            .map(|c| (c.as_str().into(), 0.0))
                            .collect(),
                        users: Vec::new(),
                    };
                    work.push((r, zero));
                }
                None => {}
            }
        }
        for (_, u) in &work {
            summary.unknown_components.extend(
                u.total
                    .iter()
                    .map(|(k, _)| k)
                    .filter(|k| !ctx.components.contains(&***k))
                    .map(|k| k.to_string()),
            );
        }
        let empty = Existing::default();
        let outcomes: Vec<(usize, Result<TotalOutcome, WaldurError>)> =
            futures::stream::iter(0..work.len())
                .map(|i| {
                    let (r, u) = &work[i];
                    let ex = existing.get(&uuid_key(&r.uuid)).unwrap_or(&empty);
                    async move { (i, self.write_total(ctx, r, u, ex).await) }
                })
                .buffer_unordered(limit)
                .collect()
                .await;
        let mut refetch = false;
        let mut refused: HashSet<usize> = HashSet::new();
        for (i, outcome) in outcomes {
            let r = work[i].0;
            match outcome {
                Ok(TotalOutcome::Written { new_types }) => {
                    summary.totals_written += 1;
                    refetch |= new_types;
                }
                Ok(TotalOutcome::Unchanged) => summary.totals_unchanged += 1,
                Ok(TotalOutcome::Planned(usages)) => summary.planned.push((
                    r.uuid.to_string(),
                    ctx.month.to_string(),
                    usages.into_iter().collect(),
                )),
                Ok(TotalOutcome::Refused(list)) => {
                    refused.insert(i);
                    for (k, old, new) in list {
                        tracing::error!(resource = %r.uuid, backend_id = %r.backend_id, component = %k, old, new, period = %period, "usage went down; refusing to overwrite billing data (advertise DECREASING_USAGE if this component may shrink)");
                        summary
                            .decreases_refused
                            .push((r.uuid.to_string(), k, old, new));
                    }
                }
                Ok(TotalOutcome::Skipped) => {}
                Err(e) => {
                    refused.insert(i);
                    summary
                        .errors
                        .push(format!("resource {} period {period}: {e}", r.uuid));
                }
            }
        }

        if ctx.dry_run {
            return Ok(());
        }
        // Records created just now have UUIDs only Waldur knows.
        if refetch {
            existing = self.existing(&period).await?.0;
        }

        // Per-user amounts, built as they are sent (the iterator is lazy):
        // the JSON of a whole offering's users would be tens of megabytes.
        // Indices, not references: a closure over `&(Resource, usage)`
        // trips the compiler's higher-ranked lifetime check on spawned
        // futures.
        let keep: Vec<usize> = (0..work.len()).filter(|i| !refused.contains(i)).collect();
        let (work, existing, existing_users) = (&work, &existing, &existing_users);
        let user_work = futures::stream::iter(keep).flat_map(move |i| {
            let (r, u) = &work[i];
            let ex = existing.get(&uuid_key(&r.uuid));
            futures::stream::iter(user_batches(ctx, u, ex, existing_users))
        });
        // Tallied as they come: a whole offering's answers are not kept.
        let mut results = user_work
            .map(|(record, items)| async move {
                let r = self.waldur.set_user_usages(&record, &items).await;
                (record, r)
            })
            .buffer_unordered(limit);
        while let Some((record, r)) = results.next().await {
            match r {
                Ok(()) => summary.user_usages_written += 1,
                Err(e) => summary
                    .errors
                    .push(format!("user usages of record {record}: {e}")),
            }
        }
        Ok(())
    }

    async fn write_total(
        &self,
        ctx: &PeriodContext<'_>,
        r: &Reported,
        u: &Usage,
        ex: &Existing,
    ) -> Result<TotalOutcome, WaldurError> {
        let totals: BTreeMap<&str, f64> = u
            .total
            .iter()
            .filter(|(k, _)| ctx.components.contains(&**k))
            .filter_map(|(k, v)| {
                if v.is_finite() && *v >= 0.0 {
                    Some((&**k, round2(*v)))
                } else {
                    tracing::warn!(resource = %r.uuid, component = %k, value = v, "ignoring an invalid usage amount");
                    None
                }
            })
            .collect();
        if totals.is_empty() {
            return Ok(TotalOutcome::Skipped);
        }
        if let Some(why) = &ex.doubtful {
            return Err(WaldurError::unexpected(
                "GET",
                "marketplace-component-usages/",
                format!("{why}; this resource is not written"),
            ));
        }
        // Nothing used and nothing recorded: writing zeros would only make
        // empty records (and, for a closed month, a refused write per
        // resource every cycle).
        if ex.records.is_empty() && totals.values().all(|v| *v == 0.0) {
            return Ok(TotalOutcome::Skipped);
        }
        if unchanged(&totals, ex) {
            return Ok(TotalOutcome::Unchanged);
        }
        if !ctx.decreasing_ok {
            let mut refused = Vec::new();
            for (k, new) in &totals {
                let amounts: Vec<Option<f64>> = ex.of(k).map(|(_, a)| a).collect();
                if amounts.is_empty() {
                    continue;
                }
                let old = amounts.iter().flatten().fold(0.0, |m, a| a.max(m));
                if amounts.len() > 1 || *new < old - 1e-9 {
                    refused.push(((*k).to_owned(), old, *new));
                }
            }
            if !refused.is_empty() {
                return Ok(TotalOutcome::Refused(refused));
            }
        }
        let usages: Vec<(String, String)> = totals
            .iter()
            .map(|(k, v)| ((*k).to_owned(), format!("{v:.2}")))
            .collect();
        if ctx.dry_run {
            return Ok(TotalOutcome::Planned(usages));
        }
        let id = match r.id() {
            Ok(id) => id,
            Err(e) => {
                return Err(WaldurError::unexpected(
                    "GET",
                    "marketplace-provider-resources/",
                    e,
                ));
            }
        };
        match self.waldur.set_usage(&id, &usages, &ctx.date).await {
            Ok(()) => Ok(TotalOutcome::Written {
                new_types: totals.keys().any(|k| ex.of(k).next().is_none()),
            }),
            Err(e) if ctx.past && e.status() == Some(400) => {
                if e.to_string().contains("backfilling past billing periods") {
                    tracing::info!(resource = %r.uuid, period = %ctx.month, "waldur refuses usage for past periods from this token; skipped");
                } else {
                    tracing::warn!(resource = %r.uuid, period = %ctx.month, error = %e, "past period refused; skipped");
                }
                Ok(TotalOutcome::Skipped)
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether Waldur already holds exactly these totals: same component set,
/// one record each, equal amounts.
fn unchanged(totals: &BTreeMap<&str, f64>, ex: &Existing) -> bool {
    if totals.len() != ex.types().len() {
        return false;
    }
    totals.iter().all(|(k, new)| {
        ex.single(k)
            .is_some_and(|(_, old)| old.is_some_and(|old| close(old, *new)))
    })
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6_f64.max(1e-9 * a.abs().max(b.abs()))
}

/// Rounds to cents, as Waldur stores usage.
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The `set_user_usages` calls one resource needs: per component record,
/// every user's amount, sent only when one differs from Waldur's.
fn user_batches(
    ctx: &PeriodContext<'_>,
    u: &Usage,
    ex: Option<&Existing>,
    existing_users: &ExistingUsers,
) -> Vec<(Uuid, Vec<Value>)> {
    let Some(ex) = ex else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for component in ex.types() {
        if !ctx.components.contains(component) {
            continue;
        }
        let Some((record, _)) = ex.single(component) else {
            continue;
        };
        let mut changed = false;
        let items: Vec<Value> = u
            .users
            .iter()
            .filter_map(|(username, usage)| {
                let v = usage.iter().find(|(c, _)| &**c == component)?.1;
                if !v.is_finite() || v < 0.0 {
                    return None;
                }
                let v = round2(v);
                let same = known_amount(existing_users, record.as_str(), username)
                    .is_some_and(|old| close(old, v));
                changed |= !same;
                let mut item =
                    json!({"username": username, "usage": format!("{v:.2}"), "date": ctx.date});
                if let Some(url) = ctx.user_urls.get(username) {
                    item["user"] = Value::String(url);
                }
                Some(item)
            })
            .collect();
        if changed && !items.is_empty() {
            out.push((record.clone(), items));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_urls_come_back_whole_whatever_their_shape() {
        let mut urls = UserUrls::default();
        let a = "https://waldur.example/api/marketplace-offering-users/0a1b/";
        let b = "https://waldur.example/api/marketplace-offering-users/0c2d/";
        let other = "https://elsewhere.example/users/7/";
        urls.insert("ada", a);
        urls.insert("bob", b);
        urls.insert("cy", other);
        assert_eq!(urls.get("ada").as_deref(), Some(a));
        assert_eq!(urls.get("bob").as_deref(), Some(b));
        assert_eq!(urls.get("cy").as_deref(), Some(other));
        assert_eq!(urls.get("dee"), None);
        let mut first_odd = UserUrls::default();
        first_odd.insert("cy", other);
        first_odd.insert("ada", a);
        assert_eq!(first_odd.get("cy").as_deref(), Some(other));
        assert_eq!(first_odd.get("ada").as_deref(), Some(a));
    }

    fn existing(entries: &[(&str, &[f64])]) -> Existing {
        let mut ex = Existing::default();
        for (k, amounts) in entries {
            for a in *amounts {
                ex.records.push((
                    (*k).into(),
                    Uuid::parse("t", "0f0f0000000000000000000000000001").unwrap(),
                    Some(*a),
                ));
            }
        }
        ex
    }

    #[test]
    fn equal_totals_are_unchanged_and_any_difference_is_not() {
        let totals = BTreeMap::from([("cpu", 1.5), ("mem", 2.0)]);
        assert!(unchanged(
            &totals,
            &existing(&[("cpu", &[1.5]), ("mem", &[2.0])])
        ));
        assert!(!unchanged(
            &totals,
            &existing(&[("cpu", &[1.5]), ("mem", &[2.01])])
        ));
        assert!(!unchanged(&totals, &existing(&[("cpu", &[1.5])])));
        assert!(!unchanged(
            &totals,
            &existing(&[("cpu", &[1.5, 1.5]), ("mem", &[2.0])])
        ));
    }

    #[test]
    fn amounts_round_to_cents() {
        assert_eq!(round2(1.005_1), 1.01);
        assert_eq!(round2(2.0 / 3.0), 0.67);
        assert_eq!(format!("{:.2}", round2(3.0)), "3.00");
    }
}
