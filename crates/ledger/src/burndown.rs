//! Burn-down: where each commitment stands at the end of the ledger, and where it is heading
//! if the observed run-rate continues. Computed from the FOCUS rows alone, so the report and
//! the export cannot disagree.
//!
//! - **Spend**: drawn to date, per-year draw against the year's minimum, run-rate, projected
//!   true-ups (shortfalls) per year, projected exhaustion date (when draws and true-ups reach
//!   the total), and the term-end shortfall or overage.
//! - **Usage**: reserved and used node-hours, utilisation, coverage (share of the pool's
//!   node-hours the reservation covered), fees, unused cost to date and projected to the
//!   term's end at the current utilisation.

use crate::commitment::{Commitment, Terms};
use crate::focus::{year_of, ChargeCategory, PricingCategory, Row, Status};
use crate::time::UnixSeconds;
use serde::Serialize;
use std::collections::BTreeMap;

const HOUR: f64 = 3600.0;

/// One commitment year of a spend commitment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct YearStatus {
    /// 1-based year of the term.
    pub year: u32,
    /// Start (UTC seconds).
    pub start: UnixSeconds,
    /// End (exclusive).
    pub end: UnixSeconds,
    /// The year's minimum draw.
    pub minimum_usd: f64,
    /// Drawn in the ledger.
    pub drawn_usd: f64,
    /// Drawn plus the run-rate for the rest of the year.
    pub projected_usd: f64,
    /// Projected true-up: minimum − projected, if positive (the invoiced one if settled).
    pub shortfall_usd: f64,
}

/// A spend commitment's state and forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpendStatus {
    /// Commitment id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Provider.
    pub provider: String,
    /// Term start.
    pub start: UnixSeconds,
    /// Term end.
    pub end: UnixSeconds,
    /// Promised total.
    pub total_usd: f64,
    /// Drawn by usage in the ledger.
    pub drawn_usd: f64,
    /// True-ups invoiced in the ledger.
    pub settled_shortfall_usd: f64,
    /// Observed draw per hour over the ledger's window within the term.
    pub run_rate_usd_per_hour: f64,
    /// Share of the provider's usage cost that drew on this commitment.
    pub coverage: f64,
    /// Per year.
    pub years: Vec<YearStatus>,
    /// When draws and true-ups reach the total at the run-rate (None: not within the term).
    pub exhaustion: Option<UnixSeconds>,
    /// Total − (projected draws + projected true-ups), if positive: owed at term end.
    pub term_shortfall_usd: f64,
    /// Projected draws beyond the total.
    pub overage_usd: f64,
    /// Cumulative draw (without true-ups) at points in time: the burn-down curve, actual up
    /// to the ledger's end and at the run-rate after it; the gap to the cumulative minimums
    /// is what true-ups will cost.
    pub curve: Vec<(UnixSeconds, f64)>,
}

/// A usage commitment's state and forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageStatus {
    /// Commitment id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Pool reserved.
    pub pool: String,
    /// Term start.
    pub start: UnixSeconds,
    /// Term end.
    pub end: UnixSeconds,
    /// Reserved node-hours in the ledger.
    pub reserved_node_hours: f64,
    /// Of which used.
    pub used_node_hours: f64,
    /// used / reserved.
    pub utilisation: f64,
    /// Reserved node-hours used / all node-hours used in the pool.
    pub coverage: f64,
    /// Fees invoiced.
    pub fee_usd: f64,
    /// Effective cost of the unused part.
    pub unused_usd: f64,
    /// Fees still to come until the term ends.
    pub remaining_fee_usd: f64,
    /// Unused cost to date plus the remaining fees × (1 − utilisation).
    pub projected_unused_usd: f64,
}

/// Everything `stratus ledger report` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// First charge period's start.
    pub from: UnixSeconds,
    /// Last charge period's end: "now" for the forecast.
    pub as_of: UnixSeconds,
    /// Σ BilledCost.
    pub billed_usd: f64,
    /// Σ EffectiveCost.
    pub effective_usd: f64,
    /// Σ ListCost of usage.
    pub list_usd: f64,
    /// Effective cost by provider.
    pub effective_by_provider: BTreeMap<String, f64>,
    /// Effective cost by pricing category of usage rows (`Standard`, `Dynamic`, `Committed`).
    pub effective_by_pricing: BTreeMap<String, f64>,
    /// Facility energy, MWh.
    pub energy_mwh: f64,
    /// Location-based emissions, tCO2e.
    pub tco2e: f64,
    /// Spend commitments.
    pub spend: Vec<SpendStatus>,
    /// Usage commitments.
    pub usage: Vec<UsageStatus>,
}

fn pool_of(r: &Row) -> &str {
    r.sku_price_id.rsplit_once(':').map(|x| x.0).unwrap_or("")
}

/// Build the report from a ledger's rows.
pub fn report(commitments: &[Commitment], rows: &[Row]) -> Report {
    let from = rows.iter().map(|r| r.charge_start).min().unwrap_or(0);
    let as_of = rows.iter().map(|r| r.charge_end).max().unwrap_or(0);
    let mut rep = Report {
        from,
        as_of,
        billed_usd: 0.0,
        effective_usd: 0.0,
        list_usd: 0.0,
        effective_by_provider: BTreeMap::new(),
        effective_by_pricing: BTreeMap::new(),
        energy_mwh: 0.0,
        tco2e: 0.0,
        spend: Vec::new(),
        usage: Vec::new(),
    };
    for r in rows {
        rep.billed_usd += r.billed_cost;
        rep.effective_usd += r.effective_cost;
        *rep.effective_by_provider
            .entry(r.provider.clone())
            .or_default() += r.effective_cost;
        if r.charge_category == ChargeCategory::Usage {
            rep.list_usd += r.list_cost;
            let k = match r.pricing_category {
                PricingCategory::Standard => "Standard",
                PricingCategory::Dynamic => "Dynamic",
                PricingCategory::Committed => "Committed",
            };
            *rep.effective_by_pricing.entry(k.into()).or_default() += r.effective_cost;
        }
        rep.energy_mwh += r.energy_kwh.unwrap_or(0.0) / 1000.0;
        rep.tco2e += r.emissions_kg.unwrap_or(0.0) / 1000.0;
    }
    for c in commitments {
        let mine = || {
            rows.iter()
                .filter(move |r| r.commitment.as_ref().is_some_and(|k| k.id == c.id))
        };
        match &c.terms {
            Terms::Spend {
                total_usd,
                yearly_minimum_usd: mins,
                ..
            } => {
                let mut drawn_y = vec![0.0; c.years as usize];
                let mut settled_y = vec![0.0; c.years as usize];
                for r in mine() {
                    let k = r.commitment.as_ref().expect("filtered");
                    let y = year_of(c, r.charge_start) as usize;
                    match (r.charge_category, k.status) {
                        (ChargeCategory::Usage, Some(Status::Used)) => {
                            drawn_y[y] += r.effective_cost
                        }
                        (ChargeCategory::Usage, Some(Status::Unused)) => {
                            settled_y[y] += r.effective_cost
                        }
                        _ => {}
                    }
                }
                let drawn: f64 = drawn_y.iter().sum();
                let settled: f64 = settled_y.iter().sum();
                let w0 = from.max(c.start);
                let w1 = as_of.min(c.end);
                let rate = if w1 > w0 {
                    drawn / ((w1 - w0) as f64 / HOUR)
                } else {
                    0.0
                };
                let provider_usage: f64 = rows
                    .iter()
                    .filter(|r| {
                        r.provider == c.provider && r.charge_category == ChargeCategory::Usage
                    })
                    .filter(|r| {
                        r.commitment
                            .as_ref()
                            .is_none_or(|k| k.status == Some(Status::Used))
                    })
                    .map(|r| r.effective_cost)
                    .sum();
                let mut years = Vec::new();
                let mut cum = 0.0;
                let mut curve = vec![(c.start, 0.0)];
                let mut exhaustion = None;
                let mut projected_sum = 0.0;
                if as_of > c.start && as_of < c.end {
                    curve.push((as_of, drawn));
                }
                let mut cum_draw = 0.0;
                for y in 0..c.years {
                    let (ys, ye) = c.year_bounds(y);
                    let future_h = (ye - as_of.max(ys)).max(0) as f64 / HOUR;
                    let projected = drawn_y[y as usize] + rate * future_h;
                    let settled_here = settled_y[y as usize];
                    let shortfall = if settled_here > 0.0 {
                        settled_here
                    } else {
                        (mins[y as usize] - projected).max(0.0)
                    };
                    // Exhaustion: the moment the running sum of draws and true-ups reaches
                    // the total: in the year's actual part, its projected part, or at its end.
                    if exhaustion.is_none() {
                        let actual = drawn_y[y as usize];
                        if actual > 0.0 && cum + actual >= *total_usd {
                            let a = ys.max(from);
                            let b = ye.min(as_of);
                            exhaustion =
                                Some(a + ((*total_usd - cum) / actual * (b - a) as f64) as i64);
                        } else if rate > 0.0 && cum + projected >= *total_usd {
                            let need = *total_usd - cum - actual;
                            exhaustion = Some(as_of.max(ys) + (need / rate * HOUR) as i64);
                        } else if cum + projected + shortfall >= *total_usd - 1e-9 {
                            exhaustion = Some(ye);
                        }
                    }
                    cum += projected + shortfall;
                    cum_draw += projected;
                    projected_sum += projected;
                    if ye > as_of {
                        curve.push((ye, cum_draw));
                    }
                    years.push(YearStatus {
                        year: y + 1,
                        start: ys,
                        end: ye,
                        minimum_usd: mins[y as usize],
                        drawn_usd: drawn_y[y as usize],
                        projected_usd: projected,
                        shortfall_usd: shortfall,
                    });
                }
                rep.spend.push(SpendStatus {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    provider: c.provider.clone(),
                    start: c.start,
                    end: c.end,
                    total_usd: *total_usd,
                    drawn_usd: drawn,
                    settled_shortfall_usd: settled,
                    run_rate_usd_per_hour: rate,
                    coverage: if provider_usage > 0.0 {
                        drawn / provider_usage
                    } else {
                        0.0
                    },
                    years,
                    exhaustion,
                    term_shortfall_usd: (*total_usd - cum).max(0.0),
                    overage_usd: (projected_sum - *total_usd).max(0.0),
                    curve,
                });
            }
            Terms::Usage {
                pool,
                rate_per_node_hour: rate,
                steps,
                ..
            } => {
                let (mut reserved, mut used, mut fee, mut unused) = (0.0, 0.0, 0.0, 0.0);
                for r in mine() {
                    let k = r.commitment.as_ref().expect("filtered");
                    match (r.charge_category, k.status) {
                        (ChargeCategory::Purchase, _) => {
                            reserved += r.pricing_quantity;
                            fee += r.billed_cost;
                        }
                        (ChargeCategory::Usage, Some(Status::Used)) => used += k.quantity,
                        (ChargeCategory::Usage, Some(Status::Unused)) => unused += r.effective_cost,
                        _ => {}
                    }
                }
                let pool_nh: f64 = rows
                    .iter()
                    .filter(|r| r.charge_category == ChargeCategory::Usage && pool_of(r) == pool)
                    .filter_map(|r| r.consumed_quantity)
                    .sum();
                // Remaining reserved node-hours from the ledger's end to the term's end.
                let mut remaining_nh = 0.0;
                for (i, &(t0, n)) in steps.iter().enumerate() {
                    let t1 = steps.get(i + 1).map(|s| s.0).unwrap_or(c.end);
                    let a = t0.max(as_of);
                    if t1 > a {
                        remaining_nh += n as f64 * (t1 - a) as f64 / HOUR;
                    }
                }
                let util = if reserved > 0.0 { used / reserved } else { 0.0 };
                let remaining_fee = remaining_nh * rate;
                rep.usage.push(UsageStatus {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    pool: pool.clone(),
                    start: c.start,
                    end: c.end,
                    reserved_node_hours: reserved,
                    used_node_hours: used,
                    utilisation: util,
                    coverage: if pool_nh > 0.0 { used / pool_nh } else { 0.0 },
                    fee_usd: fee,
                    unused_usd: unused,
                    remaining_fee_usd: remaining_fee,
                    projected_unused_usd: unused + remaining_fee * (1.0 - util),
                });
            }
        }
    }
    rep
}
