//! The time the coordinator reasons with: billing periods and the
//! month-boundary guard depend on it, so tests substitute a manual clock.

use std::sync::{Arc, Mutex};

use jiff::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told; every `now()` can also advance it by
/// a fixed step (to cross a month boundary in the middle of a cycle).
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<(Timestamp, jiff::SignedDuration)>>,
}

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: Timestamp) -> Self {
        Self {
            inner: Arc::new(Mutex::new((at, jiff::SignedDuration::ZERO))),
        }
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: Timestamp) {
        self.lock().0 = at;
    }

    /// Makes every later `now()` advance the clock by `step` after reading.
    pub fn tick_by(&self, step: jiff::SignedDuration) {
        self.lock().1 = step;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Timestamp, jiff::SignedDuration)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        let mut g = self.lock();
        let now = g.0;
        if let Ok(next) = now.checked_add(g.1) {
            g.0 = next;
        }
        now
    }
}

/// A calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    /// Year.
    pub year: i16,
    /// 1 to 12.
    pub month: i8,
}

impl From<Month> for waldur_backend_api::types::BillingPeriod {
    fn from(m: Month) -> Self {
        Self {
            year: i32::from(m.year),
            month: u32::try_from(m.month).unwrap_or_default(),
        }
    }
}

impl Month {
    /// The month `at` falls in, in `tz`.
    pub fn of(at: Timestamp, tz: &jiff::tz::TimeZone) -> Self {
        let z = at.to_zoned(tz.clone());
        Self {
            year: z.year(),
            month: z.month(),
        }
    }

    /// The month `n` months earlier.
    pub fn minus(self, n: u32) -> Self {
        let index = i64::from(self.year) * 12 + i64::from(self.month) - 1 - i64::from(n);
        Self {
            year: index.div_euclid(12) as i16,
            month: (index.rem_euclid(12) + 1) as i8,
        }
    }

    /// Waldur's billing period, `YYYY-MM-01`.
    pub fn billing_period(self) -> String {
        format!("{:04}-{:02}-01", self.year, self.month)
    }

    /// Midnight of the 1st in `tz`, as ISO 8601 with the zone's offset (the
    /// date usage is reported under, as the original agent). The local form
    /// keeps the month visible whatever zone Waldur reads it in.
    pub fn report_date(self, tz: &jiff::tz::TimeZone) -> String {
        jiff::civil::date(self.year, self.month, 1)
            .to_zoned(tz.clone())
            .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
            .unwrap_or_else(|_| format!("{}T00:00:00+00:00", self.billing_period()))
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_go_back_across_years() {
        let m = Month {
            year: 2026,
            month: 1,
        };
        assert_eq!(
            m.minus(1),
            Month {
                year: 2025,
                month: 12
            }
        );
        assert_eq!(m.minus(13).billing_period(), "2024-12-01");
    }

    #[test]
    fn the_month_depends_on_the_time_zone() {
        let at: Timestamp = "2026-11-30T23:30:00Z".parse().unwrap();
        let tallinn = jiff::tz::TimeZone::get("Europe/Tallinn").unwrap();
        assert_eq!(Month::of(at, &tallinn).to_string(), "2026-12");
        assert_eq!(
            Month::of(at, &jiff::tz::TimeZone::UTC).to_string(),
            "2026-11"
        );
    }

    #[test]
    fn the_report_date_is_midnight_of_the_first_in_the_zone() {
        let tallinn = jiff::tz::TimeZone::get("Europe/Tallinn").unwrap();
        let m = Month {
            year: 2026,
            month: 12,
        };
        assert_eq!(m.report_date(&tallinn), "2026-12-01T00:00:00+02:00");
    }

    #[test]
    fn a_ticking_manual_clock_advances_on_every_read() {
        let c = ManualClock::new("2026-11-30T23:59:59Z".parse().unwrap());
        c.tick_by(jiff::SignedDuration::from_secs(2));
        let first = c.now();
        let second = c.now();
        assert_eq!(second.as_second() - first.as_second(), 2);
    }
}
