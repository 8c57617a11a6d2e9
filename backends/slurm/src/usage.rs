//! Usage: one `sacct` over every requested account (per ~100 KB of names)
//! for a calendar month in the requested time zone.

use std::collections::BTreeMap;

use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{BackendError, BackendResult};

use crate::{SlurmBackend, args, names};

/// Splits ids into comma-joined chunks of at most ~100 KB: one argument may
/// not exceed Linux's 128 KiB (MAX_ARG_STRLEN), and SPEC allows 10,000 ids.
pub(crate) fn chunks(ids: &[String]) -> Vec<String> {
    const MAX: usize = 100_000;
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for id in ids {
        if !current.is_empty() && current.len() + id.len() + 1 > MAX {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(id);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `sacct` start and end of the month a query asks for.
fn month_window(query: &UsageQuery) -> BackendResult<(String, String)> {
    let tz = match &query.timezone {
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
            BackendError::invalid_field("timezone", format!("{name:?} is not an IANA time zone"))
        })?,
        None => jiff::tz::TimeZone::UTC,
    };
    let (year, month) = match query.period {
        Some(p) => (
            i16::try_from(p.year)
                .map_err(|_| BackendError::invalid_field("period.year", "is out of range"))?,
            i8::try_from(p.month)
                .map_err(|_| BackendError::invalid_field("period.month", "is out of range"))?,
        ),
        None => {
            let now = jiff::Timestamp::now().to_zoned(tz);
            (now.year(), now.month())
        }
    };
    let first = jiff::civil::Date::new(year, month, 1)
        .map_err(|e| BackendError::invalid_field("period", e.to_string()))?;
    Ok((
        format!("{first}T00:00:00"),
        format!("{}T23:59:59", first.last_of_month()),
    ))
}

impl SlurmBackend {
    /// GetUsageReport.
    pub(crate) async fn usage(&self, query: UsageQuery) -> BackendResult<Vec<ResourceUsage>> {
        let ids: Vec<String> = query
            .backend_ids
            .iter()
            .filter(|i| names::valid_account(i))
            .cloned()
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (start, end) = month_window(&query)?;
        let mut out = String::new();
        for chunk in chunks(&ids) {
            out.push_str(
                &self
                    .slurm
                    .sacct(args![
                        "--noconvert",
                        "--truncate",
                        "--allocations",
                        "--allusers",
                        format!("--starttime={start}"),
                        format!("--endtime={end}"),
                        format!("--accounts={chunk}"),
                        "--format=Account,ReqTRES,Elapsed,User"
                    ])
                    .await?,
            );
        }
        let raw = crate::parse::sacct_usage(&out, &self.usage_tres());
        let keys: Vec<&str> = self
            .settings
            .components
            .keys()
            .map(String::as_str)
            .collect();
        Ok(ids
            .iter()
            .map(|id| {
                let users: BTreeMap<String, Amounts> = raw
                    .get(id)
                    .map(|per_user| {
                        per_user
                            .iter()
                            .map(|(user, tres)| (user.clone(), self.waldur_usage(tres)))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut usage = ResourceUsage::from_users(id.clone(), keys.iter().copied(), users);
                // The total is the sum of the rounded user amounts, rounded
                // once more so float noise does not show in Waldur.
                for v in usage.total.values_mut() {
                    *v = crate::parse::round2(*v);
                }
                usage
            })
            .collect())
    }
}
