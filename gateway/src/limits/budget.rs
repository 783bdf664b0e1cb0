//! Budgets: US dollars a gateway key, a virtual key or a metadata value may
//! spend per UTC day, per UTC month or in total (`[[budgets]]` in the server
//! config; a key's own `budget` replaces the rule for its scope).
//!
//! A request is checked before any upstream call: when a budget it counts
//! against is spent, it is refused (412, as Portkey answers an exhausted
//! budget). Its cost is known when its answer ends and is added then, so the
//! request that crosses a budget completes and later ones are refused. Spend
//! is kept in memory and, through the request log's writer, in the state
//! database (`budget_spend`), from which it is read back at start-up.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Scope;

/// A budget's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
    Total,
}

impl Period {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "day" => Ok(Self::Day),
            "month" => Ok(Self::Month),
            "total" => Ok(Self::Total),
            _ => Err(format!(
                "unknown period `{text}`: expected day, month or total"
            )),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
            Self::Total => "total",
        }
    }

    /// The Unix second the period holding `now` began (UTC); 0 for `total`.
    pub fn start(self, now: i64) -> i64 {
        match self {
            Self::Total => 0,
            Self::Day => now - now.rem_euclid(86_400),
            Self::Month => {
                let days = now.div_euclid(86_400);
                let (y, m, _) = civil_from_days(days);
                days_from_civil(y, m, 1) * 86_400
            }
        }
    }
}

/// A budget: dollars per period.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub usd: f64,
    pub period: Period,
}

impl Budget {
    pub fn check(&self) -> Result<(), String> {
        if self.usd.is_finite() && self.usd > 0.0 {
            Ok(())
        } else {
            Err(format!("`budget.usd` must be above 0, found {}", self.usd))
        }
    }
}

/// `[[budgets]]`: a budget for each value of a scope, or for one value
/// (`name`: a key's id, a virtual key's name, a metadata value).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRule {
    pub scope: Scope,
    pub name: Option<String>,
    pub budget: Budget,
}

/// Where spend is kept: a bucket and the Unix second its period began.
pub type Slot = (String, i64);

/// One budget a request counts against.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    /// `key:key_…`, `virtual_key:NAME`, `metadata.user:alice`.
    pub id: String,
    pub budget: Budget,
}

impl Charge {
    /// Where its spend is kept: the bucket and the period's start.
    pub fn slot(&self, now: i64) -> Slot {
        (self.id.clone(), self.budget.period.start(now))
    }
}

/// A request refused: a budget is spent.
#[derive(Debug, Clone, PartialEq)]
pub struct Exhausted {
    pub bucket: String,
    pub budget: Budget,
    pub spent: f64,
}

/// Dollars spent, by bucket and period start.
#[derive(Debug, Default)]
pub struct Budgets {
    spent: Mutex<HashMap<Slot, f64>>,
}

impl Budgets {
    fn spent(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, f64>> {
        self.spent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails on the first budget that is spent. `now` is Unix seconds.
    pub fn check(&self, charges: &[Charge], now: i64) -> Result<(), Exhausted> {
        if charges.is_empty() {
            return Ok(());
        }
        let spent = self.spent();
        let used: Vec<f64> = charges
            .iter()
            .map(|c| spent.get(&c.slot(now)).copied().unwrap_or(0.0))
            .collect();
        exhausted(charges, &used)
    }

    /// Adds `usd` to every budget in `charges`; returns the slots charged
    /// (for the state database).
    pub fn spend(&self, charges: &[Charge], usd: f64, now: i64) -> Vec<Slot> {
        if charges.is_empty() || usd <= 0.0 {
            return Vec::new();
        }
        let mut spent = self.spent();
        charges
            .iter()
            .map(|c| {
                let slot = c.slot(now);
                *spent.entry(slot.clone()).or_default() += usd;
                slot
            })
            .collect()
    }

    /// What the state database says was spent (at start-up).
    pub fn restore(&self, rows: impl IntoIterator<Item = (Slot, f64)>) {
        let mut spent = self.spent();
        for (slot, usd) in rows {
            *spent.entry(slot).or_default() += usd;
        }
    }

    /// What `bucket` has spent in the period holding `now`.
    pub fn spent_now(&self, bucket: &str, period: Period, now: i64) -> f64 {
        self.spent()
            .get(&(bucket.to_owned(), period.start(now)))
            .copied()
            .unwrap_or(0.0)
    }
}

/// The first budget whose spend (`spent`, one per charge) has reached it.
/// Shared with stores elsewhere (Redis).
pub fn exhausted(charges: &[Charge], spent: &[f64]) -> Result<(), Exhausted> {
    match charges
        .iter()
        .zip(spent)
        .find(|(c, used)| **used >= c.budget.usd)
    {
        Some((c, used)) => Err(Exhausted {
            bucket: c.id.clone(),
            budget: c.budget,
            spent: *used,
        }),
        None => Ok(()),
    }
}

// Howard Hinnant's civil-date algorithms (public domain): days since
// 1970-01-01 to and from a proleptic Gregorian date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_on_utc_boundaries() {
        // 2026-11-25T05:34:29Z
        let now = 1_795_584_869;
        assert_eq!(Period::Day.start(now), 1_795_564_800); // 2026-11-25T00:00Z
        assert_eq!(Period::Month.start(now), 1_793_491_200); // 2026-11-01T00:00Z
        assert_eq!(Period::Total.start(now), 0);
        // 2024-02-29 is in February of a leap year.
        assert_eq!(Period::Month.start(1_709_208_000), 1_706_745_600);
        for days in [-1000, 0, 59, 365 * 400, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn a_spent_budget_refuses_until_its_period_ends() {
        let b = Budgets::default();
        let charge = Charge {
            id: "key:k".into(),
            budget: Budget {
                usd: 1.0,
                period: Period::Day,
            },
        };
        let now = 86_400 * 100 + 10;
        assert_eq!(b.check(std::slice::from_ref(&charge), now), Ok(()));
        let slots = b.spend(std::slice::from_ref(&charge), 0.6, now);
        assert_eq!(slots, vec![("key:k".to_owned(), 86_400 * 100)]);
        assert_eq!(b.check(std::slice::from_ref(&charge), now), Ok(()));
        b.spend(std::slice::from_ref(&charge), 0.6, now + 5);
        let refused = b
            .check(std::slice::from_ref(&charge), now + 6)
            .expect_err("spent");
        assert_eq!(refused.bucket, "key:k");
        assert!((refused.spent - 1.2).abs() < 1e-9);
        // The next day starts at nothing.
        assert_eq!(b.check(std::slice::from_ref(&charge), now + 86_400), Ok(()));
        // What the database kept counts after a restart.
        let again = Budgets::default();
        again.restore([(("key:k".to_owned(), 86_400 * 100), 1.5)]);
        assert!(again.check(&[charge], now).is_err());
    }
}
