//! The blast-radius breaker: how much damage one sync may do.
//!
//! A full cycle's plan is judged on its own. Event-driven syncs touch a few
//! resources each, so on their own they would always pass: they are judged
//! against the offering (its size as the last full cycle saw it) together
//! with what the event syncs of the last hour already did, and none of
//! them may go through a trip the last full cycle left standing. A full
//! cycle that passes clears both.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::plan::ResourcePlan;
use crate::config::SafetyConfig;

/// How long event-driven syncs' destructive changes are remembered.
const WINDOW: Duration = Duration::from_secs(3600);

/// A kind of destructive change the breaker counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Destructive {
    /// Members removed from resources.
    MembersRemoved,
    /// Resources paused or downscaled.
    AccessReduced,
    /// Per-user limits lowered, set where there were none, or cleared.
    UserLimitsLowered,
    /// Resources marked Erred in Waldur.
    ResourcesErred,
}

impl Destructive {
    /// The metric label and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MembersRemoved => "members_removed",
            Self::AccessReduced => "access_reduced",
            Self::UserLimitsLowered => "user_limits_lowered",
            Self::ResourcesErred => "resources_erred",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::MembersRemoved => "members would be removed",
            Self::AccessReduced => "resources would be paused or downscaled",
            Self::UserLimitsLowered => "per-user limits would be lowered",
            Self::ResourcesErred => "resources would be marked erred",
        }
    }

    fn of_what(self) -> &'static str {
        match self {
            Self::MembersRemoved | Self::UserLimitsLowered => "members",
            Self::AccessReduced | Self::ResourcesErred => "resources",
        }
    }

    const ALL: [Self; 4] = [
        Self::MembersRemoved,
        Self::AccessReduced,
        Self::UserLimitsLowered,
        Self::ResourcesErred,
    ];

    fn index(self) -> usize {
        match self {
            Self::MembersRemoved => 0,
            Self::AccessReduced => 1,
            Self::UserLimitsLowered => 2,
            Self::ResourcesErred => 3,
        }
    }
}

/// The breaker's verdict on a sync that would do too much damage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trip {
    /// The first kind over its limit.
    pub kind: Destructive,
    /// Changes of that kind the sync would make (with the window's, for an
    /// event-driven sync).
    pub count: usize,
    /// What exists of that kind (members, resources).
    pub existing: usize,
    /// The decision in words, with the commands that help.
    pub message: String,
}

/// Changes per kind, and what exists to change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub changes: [usize; 4],
    pub members: usize,
    pub resources: usize,
}

impl Tally {
    /// Counts one more plan.
    pub fn add(&mut self, p: &ResourcePlan) {
        self.members += p.members;
        self.resources += 1;
        self.changes[0] += p.remove.len();
        self.changes[1] += usize::from(p.access_reduced);
        self.changes[2] += p.user_limits.iter().filter(|c| c.lowered).count();
        self.changes[3] += usize::from(p.error.is_some());
    }

    fn existing(&self, kind: Destructive) -> usize {
        match kind.of_what() {
            "members" => self.members,
            _ => self.resources,
        }
    }
}

/// Whether a sync covers the whole offering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every OK and Erred resource of the offering.
    Full,
    /// Some resources, because an event asked.
    Partial,
}

/// What the breaker remembers between syncs.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The standing trip, until a full cycle passes.
    pub trip: Option<Trip>,
    /// The offering's size at the last full cycle.
    offering: Option<Tally>,
    /// Destructive changes made by event-driven syncs, with when.
    recent: VecDeque<(Instant, [usize; 4])>,
}

impl State {
    /// The verdict on `planned`. A partial sync counts the window's changes
    /// and the offering's size, and cannot pass a standing trip.
    pub fn judge(
        &mut self,
        safety: &SafetyConfig,
        scope: Scope,
        planned: Tally,
    ) -> Option<(Destructive, usize, usize)> {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
        {
            self.recent.pop_front();
        }
        let mut counted = planned;
        if scope == Scope::Partial {
            for (_, c) in &self.recent {
                for (i, n) in c.iter().enumerate() {
                    counted.changes[i] += n;
                }
            }
            if let Some(o) = self.offering {
                counted.members = counted.members.max(o.members);
                counted.resources = counted.resources.max(o.resources);
            }
        }
        let over = Destructive::ALL.into_iter().find_map(|kind| {
            let count = counted.changes[kind.index()];
            let existing = counted.existing(kind);
            // Only a sync that plans changes of this kind can trip on it.
            (planned.changes[kind.index()] > 0 && safety.exceeded(count, existing))
                .then_some((kind, count, existing))
        });
        if over.is_some() {
            return over;
        }
        if scope == Scope::Partial
            && let Some(t) = &self.trip
            && planned.changes.iter().any(|n| *n > 0)
        {
            return Some((t.kind, t.count, t.existing));
        }
        None
    }

    /// Records what a sync did (`made`: the destructive changes applied).
    pub fn record(&mut self, scope: Scope, planned: Tally, made: [usize; 4], trip: Option<Trip>) {
        match scope {
            Scope::Full => {
                self.offering = Some(planned);
                self.recent.clear();
                self.trip = trip;
            }
            Scope::Partial => {
                if made.iter().any(|n| *n > 0) {
                    self.recent.push_back((Instant::now(), made));
                }
                if trip.is_some() {
                    self.trip = trip;
                }
            }
        }
    }
}

/// The words of a trip.
pub(crate) fn message(
    offering: &str,
    safety: &SafetyConfig,
    (kind, count, existing): (Destructive, usize, usize),
    allowed: bool,
) -> Trip {
    let message = format!(
        "membership sync of offering {offering}: {count} of {existing} {of} ({kind}) exceed the limit of {max} and {pct} %; {verdict}; `waldur-coordinator plan --offering {offering}` shows the changes, `waldur-coordinator run --once --allow-destructive --offering {offering}` lets one cycle through",
        of = kind.of_what(),
        kind = kind.what(),
        max = safety.max_destructive,
        pct = safety.max_destructive_percent,
        verdict = if allowed {
            "let through as the operator asked"
        } else {
            "every destructive change is withheld"
        },
    );
    Trip {
        kind,
        count,
        existing,
        message,
    }
}

/// The prefix of every reason the breaker withholds a change for.
pub(crate) const WITHHELD: &str = "withheld by the blast-radius breaker";

/// Whether a plan holds anything the breaker counts (what [`withhold`]
/// takes out). A plan that does not is applied whatever the verdict.
pub(crate) fn weighs(plan: &ResourcePlan) -> bool {
    !plan.remove.is_empty()
        || plan.access_reduced
        || plan.user_limits.iter().any(|c| c.lowered)
        || plan.error.is_some()
}

/// Takes the destructive changes out of a plan, noting why.
pub(crate) fn withhold(plan: &mut ResourcePlan, why: &str) {
    let mut held = Vec::new();
    if !plan.remove.is_empty() {
        held.push(format!("removing {}", plan.remove.join(", ")));
        plan.remove.clear();
    }
    if plan.access_reduced {
        held.push(format!(
            "setting {}",
            plan.access.take().unwrap_or_default()
        ));
        plan.access_level = None;
        plan.access_reduced = false;
    }
    let lowered: Vec<String> = plan
        .user_limits
        .iter()
        .filter(|c| c.lowered)
        .map(|c| c.username.clone())
        .collect();
    if !lowered.is_empty() {
        held.push(format!("lowering the limits of {}", lowered.join(", ")));
        plan.user_limits.retain(|c| !c.lowered);
    }
    if plan.error.is_some() {
        held.push("marking the resource erred".into());
    }
    plan.held_by_breaker = true;
    if !held.is_empty() {
        plan.withheld.push(format!("{why}: {}", held.join("; ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(members: usize, removed: usize) -> Tally {
        Tally {
            changes: [removed, 0, 0, 0],
            members,
            resources: 1,
        }
    }

    #[test]
    fn a_full_cycle_trips_only_over_both_the_count_and_the_share() {
        let safety = SafetyConfig::default();
        let mut s = State::default();
        assert_eq!(s.judge(&safety, Scope::Full, tally(5, 5)), None);
        assert_eq!(s.judge(&safety, Scope::Full, tally(100, 6)), None);
        assert_eq!(
            s.judge(&safety, Scope::Full, tally(100, 11)),
            Some((Destructive::MembersRemoved, 11, 100))
        );
    }

    #[test]
    fn event_syncs_add_up_within_the_window_against_the_whole_offering() {
        let safety = SafetyConfig::default();
        let mut s = State::default();
        s.record(Scope::Full, tally(40, 0), [0; 4], None);
        // Five syncs of one project, two removals each: 2, 4, ... 10 > 5
        // and > 10 % of 40 on the fourth.
        let mut verdicts = Vec::new();
        for _ in 0..4 {
            let v = s.judge(&safety, Scope::Partial, tally(4, 2));
            if v.is_none() {
                s.record(Scope::Partial, tally(4, 2), [2, 0, 0, 0], None);
            }
            verdicts.push(v.is_some());
        }
        assert_eq!(verdicts, vec![false, false, true, true]);
        // A full cycle that passes starts over.
        s.record(Scope::Full, tally(40, 0), [0; 4], None);
        assert_eq!(s.judge(&safety, Scope::Partial, tally(4, 2)), None);
    }

    #[test]
    fn a_standing_trip_holds_event_syncs_that_would_change_anything_destructive() {
        let safety = SafetyConfig::default();
        let mut s = State::default();
        let trip = message("o", &safety, (Destructive::MembersRemoved, 9, 20), false);
        s.record(Scope::Full, tally(20, 9), [0; 4], Some(trip));
        assert!(s.judge(&safety, Scope::Partial, tally(2, 1)).is_some());
        assert_eq!(s.judge(&safety, Scope::Partial, tally(2, 0)), None);
    }
}
