//! Usage reporting end to end: waldur-sim, the example backend over mutual
//! TLS, the coordinator's report task.

#![allow(clippy::unwrap_used)]

mod support;

use support::{Options, World};
use waldur_backend_example::{ComponentSettings, ExampleSettings};
use waldur_coordinator::clock::ManualClock;

fn quiet() -> ExampleSettings {
    ExampleSettings {
        allocation_prefix: "hpc_".into(),
        synthetic_usage: false,
        ..ExampleSettings::default()
    }
}

fn clock_at(at: &str) -> ManualClock {
    ManualClock::new(at.parse().unwrap())
}

/// `set_usage` and `set_user_usages` calls since the last reset, with bodies.
fn usage_writes(w: &World) -> Vec<(String, serde_json::Value)> {
    w.sim
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST" && c.route.starts_with("marketplace-component-usages/"))
        .map(|c| (c.route, c.body.unwrap_or_default()))
        .collect()
}

fn amount(w: &World, resource: &str, period: &str, component: &str) -> Option<String> {
    w.sim
        .component_usages(resource)
        .into_iter()
        .find(|u| u.billing_period == period && u.component_type == component)
        .map(|u| u.usage)
}

#[tokio::test]
async fn backend_usage_reaches_waldur_under_its_component_period_and_user() {
    let w = World::start(Options {
        settings: quiet(),
        clock: Some(clock_at("2026-11-15T12:00:00Z")),
        ..Options::default()
    })
    .await;
    let (resource, backend_id) = w.provisioned("usage run").await;
    w.backend.record_usage(&backend_id, "alice", "cpu", 1.234);
    w.backend.record_usage(&backend_id, "bob", "cpu", 2.0);
    w.backend.record_usage(&backend_id, "bob", "mem", 10.5);

    let s = w.report().await;
    assert_eq!(s.resources, 1);
    assert_eq!(s.periods, vec!["2026-10", "2026-11"]);
    assert!(s.errors.is_empty(), "{:?}", s.errors);

    assert_eq!(amount(&w, &resource, "2026-11-01", "cpu").unwrap(), "3.23");
    assert_eq!(amount(&w, &resource, "2026-11-01", "mem").unwrap(), "10.50");
    // A limit-type component is never reported as usage.
    assert!(amount(&w, &resource, "2026-11-01", "storage").is_none());
    let cpu = w
        .sim
        .component_usages(&resource)
        .into_iter()
        .find(|u| u.billing_period == "2026-11-01" && u.component_type == "cpu")
        .unwrap();
    assert_eq!(cpu.user_usages["alice"].usage, "1.23");
    assert_eq!(cpu.user_usages["bob"].usage, "2.00");
    assert!(
        cpu.user_usages["alice"]
            .user
            .as_deref()
            .is_some_and(|u| u.contains("marketplace-offering-users")),
        "per-user usage links the offering user"
    );
    // Dated the first of the month in the configured zone.
    let (_, body) = usage_writes(&w)
        .into_iter()
        .rfind(|(route, _)| route.ends_with("set_usage/"))
        .unwrap();
    assert_eq!(body["date"], "2026-11-01T00:00:00+00:00");
}

#[tokio::test]
async fn unchanged_usage_is_not_written_again() {
    let w = World::start(Options {
        settings: quiet(),
        clock: Some(clock_at("2026-11-15T12:00:00Z")),
        ..Options::default()
    })
    .await;
    let (_, backend_id) = w.provisioned("steady").await;
    w.backend.record_usage(&backend_id, "alice", "cpu", 4.0);
    let first = w.report().await;
    assert!(first.totals_written >= 1);
    assert!(first.user_usages_written >= 1);

    w.sim.reset_calls();
    let second = w.report().await;
    assert_eq!(second.totals_written, 0, "{second:?}");
    assert_eq!(second.user_usages_written, 0, "{second:?}");
    assert_eq!(
        second.totals_unchanged, 1,
        "the current period is in Waldur; the empty past one was never written"
    );
    assert!(usage_writes(&w).is_empty(), "{:?}", usage_writes(&w));
}

#[tokio::test]
async fn a_decreasing_total_is_refused_and_waldur_keeps_the_higher_amount() {
    let w = World::start(Options {
        settings: quiet(),
        clock: Some(clock_at("2026-11-15T12:00:00Z")),
        ..Options::default()
    })
    .await;
    let (resource, backend_id) = w.provisioned("shrinking").await;
    w.backend.record_usage(&backend_id, "alice", "cpu", 5.0);
    w.report().await;
    w.backend.record_usage(&backend_id, "alice", "cpu", -2.0);
    w.sim.reset_calls();

    let s = w.report().await;
    assert_eq!(s.decreases_refused.len(), 1, "{s:?}");
    let (uuid, component, old, new) = &s.decreases_refused[0];
    assert_eq!(
        (uuid.as_str(), component.as_str(), *old, *new),
        (resource.as_str(), "cpu", 5.0, 3.0)
    );
    assert_eq!(amount(&w, &resource, "2026-11-01", "cpu").unwrap(), "5.00");
    assert!(
        usage_writes(&w)
            .iter()
            .all(|(_, b)| b["date"] != "2026-11-01T00:00:00+00:00"),
        "nothing is written for the refused period"
    );
}

#[tokio::test]
async fn a_backend_whose_usage_may_decrease_overwrites_lower_totals() {
    let w = World::start(Options {
        settings: ExampleSettings {
            usage_may_decrease: true,
            ..quiet()
        },
        clock: Some(clock_at("2026-11-15T12:00:00Z")),
        ..Options::default()
    })
    .await;
    let (resource, backend_id) = w.provisioned("storage-like").await;
    w.backend.record_usage(&backend_id, "alice", "mem", 8.0);
    w.report().await;
    w.backend.record_usage(&backend_id, "alice", "mem", -3.0);
    let s = w.report().await;
    assert!(s.decreases_refused.is_empty());
    assert_eq!(amount(&w, &resource, "2026-11-01", "mem").unwrap(), "5.00");
}

#[tokio::test]
async fn at_the_month_boundary_the_old_month_is_reported_before_the_new_one() {
    let w = World::start(Options {
        settings: ExampleSettings {
            synthetic_usage: true,
            ..quiet()
        },
        clock: Some(clock_at("2026-12-01T00:00:30Z")),
        ..Options::default()
    })
    .await;
    let (resource, _) = w.provisioned("boundary").await;
    w.sim.reset_calls();
    let s = w.report().await;
    assert_eq!(s.periods, vec!["2026-11", "2026-12"]);
    let dates: Vec<String> = usage_writes(&w)
        .into_iter()
        .filter(|(route, _)| route.ends_with("set_usage/"))
        .map(|(_, b)| b["date"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        dates,
        vec!["2026-11-01T00:00:00+00:00", "2026-12-01T00:00:00+00:00"]
    );
    assert!(amount(&w, &resource, "2026-11-01", "cpu").is_some());
    assert!(amount(&w, &resource, "2026-12-01", "cpu").is_some());
}

#[tokio::test]
async fn when_the_month_changes_while_reading_the_current_period_waits() {
    let clock = clock_at("2026-11-30T23:59:59Z");
    let w = World::start(Options {
        settings: quiet(),
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    let (resource, backend_id) = w.provisioned("midnight").await;
    w.backend.record_usage(&backend_id, "alice", "cpu", 1.0);
    // Every read of the clock moves it on: the month ends between reading
    // the usage and writing it.
    clock.tick_by(jiff::SignedDuration::from_secs(1));
    let s = w.report().await;
    assert!(s.month_changed, "{s:?}");
    assert_eq!(s.periods, vec!["2026-10"]);
    assert!(amount(&w, &resource, "2026-11-01", "cpu").is_none());
}

#[tokio::test]
async fn components_the_offering_lacks_are_reported_and_not_sent() {
    let mut settings = quiet();
    settings.components = Some(vec![
        ComponentSettings {
            key: "cpu".into(),
            label: "CPU".into(),
            measured_unit: "k-Hours".into(),
            accounting_type: "usage".into(),
            unit_factor: 1.0,
            limit: None,
        },
        ComponentSettings {
            key: "gpu".into(),
            label: "GPU".into(),
            measured_unit: "hours".into(),
            accounting_type: "usage".into(),
            unit_factor: 1.0,
            limit: None,
        },
        ComponentSettings {
            key: "storage".into(),
            label: "Storage".into(),
            measured_unit: "GB".into(),
            accounting_type: "limit".into(),
            unit_factor: 1.0,
            limit: None,
        },
    ]);
    let w = World::start(Options {
        settings,
        clock: Some(clock_at("2026-11-15T12:00:00Z")),
        ..Options::default()
    })
    .await;
    let (resource, backend_id) = w.provisioned("gpu job").await;
    w.backend.record_usage(&backend_id, "alice", "gpu", 7.0);
    w.backend.record_usage(&backend_id, "alice", "cpu", 1.0);
    let s = w.report().await;
    assert_eq!(
        s.unknown_components.into_iter().collect::<Vec<_>>(),
        vec!["gpu"]
    );
    assert!(amount(&w, &resource, "2026-11-01", "gpu").is_none());
    assert_eq!(amount(&w, &resource, "2026-11-01", "cpu").unwrap(), "1.00");
}

#[tokio::test]
async fn a_past_period_waldur_refuses_is_skipped_and_the_current_one_written() {
    let w = World::start(Options {
        settings: ExampleSettings {
            synthetic_usage: true,
            ..quiet()
        },
        ..Options::default()
    })
    .await;
    w.sim.set_refuse_backfill(true);
    let (resource, _) = w.provisioned("backfill").await;
    let s = w.report().await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let current = format!("{:04}-{:02}-01", now.year(), now.month());
    let usages = w.sim.component_usages(&resource);
    assert!(
        usages.iter().all(|u| u.billing_period == current),
        "{usages:?}"
    );
    assert!(!usages.is_empty());
}
