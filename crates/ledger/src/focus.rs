//! Spend as FOCUS 1.2 rows (the FinOps Open Cost and Usage Specification), built from
//! metered [`Usage`] and the lab's [`Commitment`]s, and a checker of the specification's
//! column rules that reads the CSV back, so the export is validated as written.
//!
//! How each charge is represented (FOCUS 1.2, "Discount Handling" and the column rules):
//! - **On demand**: a `Usage` row, `PricingCategory` `Standard`, billed as used.
//! - **Spot**: `Dynamic`, billed at the spot price.
//! - **Reserved nodes** (usage-based commitment, paid each hour, no upfront; it covers any
//!   non-spot use of its pool, first come first served within the hour): a `Purchase`
//!   row per hour (`Recurring`, `BilledCost` = reserved node-hours × rate, `EffectiveCost` 0);
//!   the nodes used are `Usage` rows, `Committed`, status `Used`, `BilledCost` 0 and
//!   `EffectiveCost` at the reserved rate; what was not used is one `Usage` row per hour with
//!   status `Unused`, no `ConsumedQuantity`, and `ResourceId` = the commitment.
//! - **Spend commitment**: eligible usage is `Committed`/`Used` at list less the discount,
//!   `BilledCost` 0; the commitment invoices what was drawn as one `Purchase` row per
//!   month; a commitment year that ends below its minimum gets a one-time `Purchase` of the
//!   shortfall and an `Unused` row carrying its `EffectiveCost`.
//!
//! So, per commitment, Σ `EffectiveCost` of `Usage` rows = Σ `BilledCost` of `Purchase` rows,
//! as FOCUS requires; the checker verifies it. Energy and location-based emissions of each
//! usage row are custom columns `x_EnergyKwh` and `x_EmissionsKgCo2e`.

use crate::commitment::{Commitment, Kind, PoolRef, Terms};
use crate::meter::Usage;
use crate::time::{self, UnixSeconds};
use std::collections::{BTreeMap, HashMap};
use stratus_model::{Accelerator, Fleet};
use stratus_plan::Category;

/// FOCUS `ChargeCategory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeCategory {
    /// Metered use (and the unused part of a commitment).
    Usage,
    /// Buying a commitment.
    Purchase,
}

/// FOCUS `PricingCategory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PricingCategory {
    /// The account's agreed rate (also the purchase of a commitment).
    Standard,
    /// A price the provider varies (spot).
    Dynamic,
    /// Charged under an existing commitment.
    Committed,
}

/// FOCUS `CommitmentDiscountStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Consumed by a resource.
    Used,
    /// The part nobody used.
    Unused,
}

/// The commitment columns of a row.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitmentCols {
    /// `CommitmentDiscountId`.
    pub id: String,
    /// `CommitmentDiscountName`.
    pub name: String,
    /// `CommitmentDiscountCategory`.
    pub category: Kind,
    /// `CommitmentDiscountStatus` (null on purchases).
    pub status: Option<Status>,
    /// `CommitmentDiscountQuantity`.
    pub quantity: f64,
    /// `CommitmentDiscountUnit`: `Hours` (node-hours) or `USD`.
    pub unit: &'static str,
    /// Whether this is a capacity reservation (fills `CapacityReservation*`).
    pub reservation: bool,
}

/// One FOCUS row. Money is in USD; quantities of nodes are node-hours.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `BilledCost`.
    pub billed_cost: f64,
    /// `EffectiveCost`.
    pub effective_cost: f64,
    /// `ListCost`.
    pub list_cost: f64,
    /// `ListUnitPrice`.
    pub list_unit_price: f64,
    /// `ContractedCost`.
    pub contracted_cost: f64,
    /// `ContractedUnitPrice`.
    pub contracted_unit_price: f64,
    /// `ChargeCategory`.
    pub charge_category: ChargeCategory,
    /// `ChargeFrequency`: `One-Time`, `Recurring` or `Usage-Based`.
    pub charge_frequency: &'static str,
    /// `ChargeDescription`.
    pub charge_description: String,
    /// `ChargePeriodStart`.
    pub charge_start: UnixSeconds,
    /// `ChargePeriodEnd` (exclusive).
    pub charge_end: UnixSeconds,
    /// `PricingCategory`.
    pub pricing_category: PricingCategory,
    /// `PricingQuantity`.
    pub pricing_quantity: f64,
    /// `PricingUnit`.
    pub pricing_unit: &'static str,
    /// `ConsumedQuantity` (node-hours), null on purchases and unused rows.
    pub consumed_quantity: Option<f64>,
    /// `ProviderName`, `PublisherName`, `InvoiceIssuerName`.
    pub provider: String,
    /// `RegionId` (the provider's region name).
    pub region: Option<String>,
    /// `RegionName` (place).
    pub region_name: Option<String>,
    /// `ResourceId`: the instance's client token, or the commitment id.
    pub resource_id: Option<String>,
    /// `ResourceName`: the plan unit.
    pub resource_name: Option<String>,
    /// `ResourceType`.
    pub resource_type: Option<&'static str>,
    /// `ServiceName`.
    pub service_name: String,
    /// `ServiceCategory`.
    pub service_category: &'static str,
    /// `ServiceSubcategory`.
    pub service_subcategory: &'static str,
    /// `SkuId`: provider and instance type (or the commitment kind).
    pub sku_id: String,
    /// `SkuPriceId`: the SKU in one pool at one pricing category.
    pub sku_price_id: String,
    /// Commitment columns, if the charge relates to one.
    pub commitment: Option<CommitmentCols>,
    /// `Tags` as a JSON object.
    pub tags: Option<String>,
    /// `x_Workload`.
    pub workload: Option<String>,
    /// `x_Accelerator`.
    pub accelerator: Option<Accelerator>,
    /// `x_Chips`: chips billed on the row (per hour of the period).
    pub chips: Option<u32>,
    /// `x_EnergyKwh`: facility energy of the row's usage.
    pub energy_kwh: Option<f64>,
    /// `x_EmissionsKgCo2e`: location-based, at the region's yearly average intensity.
    pub emissions_kg: Option<f64>,
}

/// Errors building a ledger.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    /// A usage record names a pool the fleet does not have.
    #[error("usage record `{token}`: pool `{pool}` is not in the fleet")]
    UnknownPool {
        /// Record.
        token: String,
        /// Pool.
        pool: String,
    },
    /// A usage record's times or counts make no sense.
    #[error("usage record `{token}`: {reason}")]
    BadUsage {
        /// Record.
        token: String,
        /// Why.
        reason: String,
    },
}

/// How to write the ledger.
#[derive(Debug, Clone)]
pub struct Options {
    /// UTC time of the harness's time 0 (the simulator's start; 0 for the live service,
    /// whose clock is Unix time).
    pub epoch: UnixSeconds,
    /// Average accelerator utilisation, for the energy columns.
    pub utilisation: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            epoch: time::parse("2026-01-01").expect("constant date"),
            utilisation: 0.8,
        }
    }
}

#[derive(Debug, Clone)]
struct PoolInfo<'a> {
    provider: &'a str,
    region: &'a str,
    location: &'a str,
    instance_type: &'a str,
    accelerator: Accelerator,
    chips: u32,
    on_demand: f64,
    spot: f64,
    kw_per_node: f64,
    carbon: f64,
}

impl PoolInfo<'_> {
    /// `RegionName`: the place, or the region id where the fleet names none.
    fn region_name(&self) -> &str {
        if self.location.is_empty() {
            self.region
        } else {
            self.location
        }
    }
}

const HOUR: i64 = 3600;

fn service(provider: &str, acc: Accelerator) -> (String, &'static str, &'static str) {
    match provider {
        "gcp" if acc.arch() == stratus_model::Arch::Xla => (
            "Cloud TPU".into(),
            "AI and Machine Learning",
            "AI Platforms",
        ),
        "aws" => (
            "Amazon Elastic Compute Cloud".into(),
            "Compute",
            "Virtual Machines",
        ),
        "azure" => ("Virtual Machines".into(), "Compute", "Virtual Machines"),
        "gcp" => ("Compute Engine".into(), "Compute", "Virtual Machines"),
        "lambda" => (
            "Lambda Cloud GPU Instances".into(),
            "Compute",
            "Virtual Machines",
        ),
        p => (format!("{p} compute"), "Compute", "Virtual Machines"),
    }
}

/// Build the FOCUS rows of `usage` (times on the harness clock, see [`Options::epoch`]).
/// Rows come out in charge-period order, then usage order: the same input gives the same file.
pub fn build(
    fleet: &Fleet,
    commitments: &[Commitment],
    usage: &[Usage],
    opts: &Options,
) -> Result<Vec<Row>, LedgerError> {
    let pools: HashMap<&str, PoolInfo> = fleet
        .pools()
        .map(|(p, r, q)| {
            let info = PoolInfo {
                provider: &p.name,
                region: &r.name,
                location: &r.location,
                instance_type: &q.instance_type,
                accelerator: q.accelerator,
                chips: q.chips_per_node,
                on_demand: q.on_demand_per_node_hour.0,
                spot: q
                    .spot_per_node_hour
                    .map(|s| s.0)
                    .unwrap_or(q.on_demand_per_node_hour.0),
                kw_per_node: q.node_watts(opts.utilisation).0 * r.pue / 1000.0,
                carbon: r.carbon_g_per_kwh.0,
            };
            (q.id.as_str(), info)
        })
        .collect();
    // Split every record at UTC hour boundaries.
    struct Seg {
        u: usize,
        hour: UnixSeconds,
        hours: f64,
    }
    let mut segs = Vec::new();
    for (i, u) in usage.iter().enumerate() {
        if !pools.contains_key(u.pool.as_str()) {
            return Err(LedgerError::UnknownPool {
                token: u.token.clone(),
                pool: u.pool.clone(),
            });
        }
        if !(u.start_s.is_finite() && u.end_s.is_finite() && u.end_s >= u.start_s) {
            return Err(LedgerError::BadUsage {
                token: u.token.clone(),
                reason: format!("ends ({}) before it starts ({})", u.end_s, u.start_s),
            });
        }
        if u.committed_nodes > u.nodes {
            return Err(LedgerError::BadUsage {
                token: u.token.clone(),
                reason: format!("{} committed nodes of {}", u.committed_nodes, u.nodes),
            });
        }
        let (s, e) = (opts.epoch as f64 + u.start_s, opts.epoch as f64 + u.end_s);
        let mut h = (s / HOUR as f64).floor() as i64 * HOUR;
        while (h as f64) < e {
            let a = s.max(h as f64);
            let b = e.min((h + HOUR) as f64);
            if b > a {
                segs.push(Seg {
                    u: i,
                    hour: h,
                    hours: (b - a) / HOUR as f64,
                });
            }
            h += HOUR;
        }
    }
    segs.sort_by_key(|s| (s.hour, s.u));
    let (first, last) = match (segs.first(), segs.last()) {
        (Some(a), Some(b)) => (a.hour, b.hour + HOUR),
        _ => return Ok(Vec::new()),
    };

    let mut rows = Vec::new();
    // Reserved node-hours used per (commitment, hour), for coverage and the unused rows.
    let mut used_nh: HashMap<(usize, UnixSeconds), f64> = HashMap::new();
    // Spend drawn per (commitment, month start) and per (commitment, year).
    let mut drawn_month: BTreeMap<(usize, UnixSeconds), f64> = BTreeMap::new();
    let mut drawn_year: HashMap<(usize, u32), f64> = HashMap::new();
    let reservation_of: HashMap<&str, Vec<usize>> = {
        let mut m: HashMap<&str, Vec<usize>> = HashMap::new();
        for (ci, c) in commitments.iter().enumerate() {
            if let Terms::Usage { pool, .. } = &c.terms {
                m.entry(pool.as_str()).or_default().push(ci);
            }
        }
        m
    };

    for sg in &segs {
        let u = &usage[sg.u];
        let p = &pools[u.pool.as_str()];
        let (service_name, cat, sub) = service(p.provider, p.accelerator);
        let base =
            |pc: PricingCategory, nh: f64, list: f64, billed: f64, effective: f64, what: String| {
                let kwh = nh * p.kw_per_node;
                Row {
                    billed_cost: billed,
                    effective_cost: effective,
                    list_cost: nh * list,
                    list_unit_price: list,
                    contracted_cost: nh * list,
                    contracted_unit_price: list,
                    charge_category: ChargeCategory::Usage,
                    charge_frequency: "Usage-Based",
                    charge_description: what,
                    charge_start: sg.hour,
                    charge_end: sg.hour + HOUR,
                    pricing_category: pc,
                    pricing_quantity: nh,
                    pricing_unit: "Hours",
                    consumed_quantity: Some(nh),
                    provider: p.provider.to_string(),
                    region: Some(p.region.to_string()),
                    region_name: Some(p.region_name().to_string()),
                    resource_id: Some(u.token.clone()),
                    resource_name: Some(u.unit.clone()),
                    resource_type: Some("Accelerator node group"),
                    service_name: service_name.clone(),
                    service_category: cat,
                    service_subcategory: sub,
                    sku_id: format!("{}:{}", p.provider, p.instance_type),
                    sku_price_id: format!(
                        "{}:{}",
                        u.pool,
                        match pc {
                            PricingCategory::Standard => "on-demand",
                            PricingCategory::Dynamic => "spot",
                            PricingCategory::Committed => "committed",
                        }
                    ),
                    commitment: None,
                    tags: Some(
                        serde_json::json!({"stratus/workload": u.workload, "stratus/unit": u.unit})
                            .to_string(),
                    ),
                    workload: Some(u.workload.clone()),
                    accelerator: Some(p.accelerator),
                    chips: Some(p.chips * (nh / sg.hours.max(1e-12)).round() as u32),
                    energy_kwh: Some(kwh),
                    emissions_kg: Some(kwh * p.carbon / 1000.0),
                }
            };
        if u.category == Category::Spot {
            let nh = u.nodes as f64 * sg.hours;
            rows.push(base(
                PricingCategory::Dynamic,
                nh,
                p.spot,
                nh * p.spot,
                nh * p.spot,
                format!(
                    "{} spot {} node-hours of {}",
                    p.instance_type,
                    fmt_num(nh),
                    u.pool
                ),
            ));
            continue;
        }
        // A reservation in force covers any non-spot use of its pool, as providers apply
        // them, whether or not the controller asked for committed nodes.
        let mut want = u.nodes as f64 * sg.hours;
        for &ci in reservation_of
            .get(u.pool.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            if want <= 0.0 {
                break;
            }
            let c = &commitments[ci];
            let room = c.reserved_nodes(sg.hour) as f64
                - used_nh.get(&(ci, sg.hour)).copied().unwrap_or(0.0);
            let take = want.min(room.max(0.0));
            if take <= 0.0 {
                continue;
            }
            let Terms::Usage {
                rate_per_node_hour: rate,
                ..
            } = c.terms
            else {
                unreachable!()
            };
            *used_nh.entry((ci, sg.hour)).or_default() += take;
            want -= take;
            let mut r = base(
                PricingCategory::Committed,
                take,
                p.on_demand,
                0.0,
                take * rate,
                format!(
                    "{} reserved {} node-hours of {} under {}",
                    p.instance_type,
                    fmt_num(take),
                    u.pool,
                    c.id
                ),
            );
            r.commitment = Some(CommitmentCols {
                id: c.id.clone(),
                name: c.name.clone(),
                category: Kind::Usage,
                status: Some(Status::Used),
                quantity: take,
                unit: "Hours",
                reservation: true,
            });
            rows.push(r);
        }
        // What no reservation covered, node-hours.
        let nh = want;
        if nh <= 1e-12 {
            continue;
        }
        // On-demand use: drawn from a spend commitment in scope and in force, if any.
        let pref = PoolRef {
            id: &u.pool,
            provider: p.provider,
            region: p.region,
            accelerator: p.accelerator,
        };
        let spend = commitments.iter().enumerate().find(|(_, c)| {
            c.kind() == Kind::Spend && c.start <= sg.hour && sg.hour < c.end && c.covers(&pref)
        });
        match spend {
            Some((ci, c)) => {
                let Terms::Spend { discount, .. } = c.terms else {
                    unreachable!()
                };
                let cost = nh * p.on_demand * (1.0 - discount);
                *drawn_month
                    .entry((ci, time::month_start(sg.hour)))
                    .or_default() += cost;
                *drawn_year.entry((ci, year_of(c, sg.hour))).or_default() += cost;
                let mut r = base(
                    PricingCategory::Committed,
                    nh,
                    p.on_demand,
                    0.0,
                    cost,
                    format!(
                        "{} {} node-hours of {} drawn from {} at {:.0}% off list",
                        p.instance_type,
                        fmt_num(nh),
                        u.pool,
                        c.id,
                        discount * 100.0
                    ),
                );
                r.commitment = Some(CommitmentCols {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    category: Kind::Spend,
                    status: Some(Status::Used),
                    quantity: cost,
                    unit: "USD",
                    reservation: false,
                });
                rows.push(r);
            }
            None => rows.push(base(
                PricingCategory::Standard,
                nh,
                p.on_demand,
                nh * p.on_demand,
                nh * p.on_demand,
                format!(
                    "{} on-demand {} node-hours of {}",
                    p.instance_type,
                    fmt_num(nh),
                    u.pool
                ),
            )),
        }
    }

    // Reservations: the hourly fee and the unused part, for every hour of the window in term.
    for (ci, c) in commitments.iter().enumerate() {
        let Terms::Usage {
            pool,
            rate_per_node_hour: rate,
            ..
        } = &c.terms
        else {
            continue;
        };
        let Some(p) = pools.get(pool.as_str()) else {
            continue;
        };
        let (service_name, cat, sub) = service(p.provider, p.accelerator);
        let mut h = first.max(c.start / HOUR * HOUR);
        while h < last.min(c.end) {
            let reserved = c.reserved_nodes(h) as f64;
            if reserved > 0.0 {
                let used = used_nh.get(&(ci, h)).copied().unwrap_or(0.0);
                let row = |cc: ChargeCategory, q: f64, status: Option<Status>| Row {
                    billed_cost: if cc == ChargeCategory::Purchase {
                        q * rate
                    } else {
                        0.0
                    },
                    effective_cost: if cc == ChargeCategory::Purchase {
                        0.0
                    } else {
                        q * rate
                    },
                    list_cost: q * rate,
                    list_unit_price: *rate,
                    contracted_cost: q * rate,
                    contracted_unit_price: *rate,
                    charge_category: cc,
                    charge_frequency: if cc == ChargeCategory::Purchase {
                        "Recurring"
                    } else {
                        "Usage-Based"
                    },
                    charge_description: if cc == ChargeCategory::Purchase {
                        format!(
                            "{}: {} reserved nodes of {} for one hour",
                            c.id,
                            fmt_num(q),
                            pool
                        )
                    } else {
                        format!(
                            "{}: {} reserved node-hours of {} unused",
                            c.id,
                            fmt_num(q),
                            pool
                        )
                    },
                    charge_start: h,
                    charge_end: h + HOUR,
                    pricing_category: if cc == ChargeCategory::Purchase {
                        PricingCategory::Standard
                    } else {
                        PricingCategory::Committed
                    },
                    pricing_quantity: q,
                    pricing_unit: "Hours",
                    consumed_quantity: None,
                    provider: p.provider.to_string(),
                    region: Some(p.region.to_string()),
                    region_name: Some(p.region_name().to_string()),
                    resource_id: Some(c.id.clone()),
                    resource_name: Some(c.name.clone()),
                    resource_type: Some("Capacity reservation"),
                    service_name: service_name.clone(),
                    service_category: cat,
                    service_subcategory: sub,
                    sku_id: format!("{}:{}:reservation", p.provider, p.instance_type),
                    sku_price_id: format!("{pool}:reservation"),
                    commitment: Some(CommitmentCols {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        category: Kind::Usage,
                        status,
                        quantity: q,
                        unit: "Hours",
                        reservation: true,
                    }),
                    tags: None,
                    workload: None,
                    accelerator: Some(p.accelerator),
                    chips: None,
                    energy_kwh: None,
                    emissions_kg: None,
                };
                rows.push(row(ChargeCategory::Purchase, reserved, None));
                if reserved - used > 1e-9 {
                    rows.push(row(
                        ChargeCategory::Usage,
                        reserved - used,
                        Some(Status::Unused),
                    ));
                }
            }
            h += HOUR;
        }
    }

    // Spend commitments: monthly invoices of what was drawn, and year-end true-ups.
    for (ci, c) in commitments.iter().enumerate() {
        let Terms::Spend {
            yearly_minimum_usd: mins,
            ..
        } = &c.terms
        else {
            continue;
        };
        let (service_name, _, _) = service(&c.provider, Accelerator::H100);
        let purchase = |start: UnixSeconds,
                        end: UnixSeconds,
                        amount: f64,
                        freq: &'static str,
                        status: Option<Status>,
                        what: String| Row {
            billed_cost: if status.is_none() { amount } else { 0.0 },
            effective_cost: if status.is_none() { 0.0 } else { amount },
            list_cost: amount,
            list_unit_price: 1.0,
            contracted_cost: amount,
            contracted_unit_price: 1.0,
            charge_category: if status.is_none() {
                ChargeCategory::Purchase
            } else {
                ChargeCategory::Usage
            },
            charge_frequency: freq,
            charge_description: what,
            charge_start: start,
            charge_end: end,
            pricing_category: if status.is_none() {
                PricingCategory::Standard
            } else {
                PricingCategory::Committed
            },
            pricing_quantity: amount,
            pricing_unit: "USD",
            consumed_quantity: None,
            provider: c.provider.clone(),
            region: None,
            region_name: None,
            resource_id: Some(c.id.clone()),
            resource_name: Some(c.name.clone()),
            resource_type: Some("Spend commitment"),
            service_name: service_name.clone(),
            service_category: "Compute",
            service_subcategory: "Virtual Machines",
            sku_id: format!("{}:spend-commitment", c.provider),
            sku_price_id: format!("{}:spend-commitment:{}", c.provider, c.id),
            commitment: Some(CommitmentCols {
                id: c.id.clone(),
                name: c.name.clone(),
                category: Kind::Spend,
                status,
                quantity: amount,
                unit: "USD",
                reservation: false,
            }),
            tags: None,
            workload: None,
            accelerator: None,
            chips: None,
            energy_kwh: None,
            emissions_kg: None,
        };
        for (&(cj, month), &amount) in &drawn_month {
            if cj == ci {
                let end = time::next_month(month).min(last).min(c.end);
                let start = month.max(first).max(c.start);
                rows.push(purchase(
                    start,
                    end,
                    amount,
                    "Recurring",
                    None,
                    format!("{}: drawn in {}", c.id, &time::format(month)[..7]),
                ));
            }
        }
        for (y, &min) in mins.iter().enumerate() {
            let (ys, ye) = c.year_bounds(y as u32);
            // Only a year wholly inside the ledger's window is settled here.
            if ys >= first && ye <= last {
                let drawn = drawn_year.get(&(ci, y as u32)).copied().unwrap_or(0.0);
                let short = min - drawn;
                if short > 1e-9 {
                    let what = format!(
                        "{}: year {} drew {} of its {} minimum",
                        c.id,
                        y + 1,
                        fmt_num(drawn),
                        fmt_num(min)
                    );
                    rows.push(purchase(
                        ye - HOUR,
                        ye,
                        short,
                        "One-Time",
                        None,
                        format!("{what}: shortfall invoiced"),
                    ));
                    rows.push(purchase(
                        ye - HOUR,
                        ye,
                        short,
                        "One-Time",
                        Some(Status::Unused),
                        format!("{what}: shortfall unused"),
                    ));
                }
            }
        }
    }
    rows.sort_by_key(|r| r.charge_start);
    Ok(rows)
}

/// Commitment year (0-based) of time `t`.
pub fn year_of(c: &Commitment, t: UnixSeconds) -> u32 {
    (0..c.years)
        .find(|&y| t < c.year_bounds(y).1)
        .unwrap_or(c.years.saturating_sub(1))
}

/// Decimal text as FOCUS's numeric format allows it: no exponent, no `+`, at most ten
/// decimals, trailing zeros dropped.
pub fn fmt_num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return "0".into();
    }
    let s = format!("{x:.10}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// The columns written, in order: FOCUS 1.2's, then custom `x_` ones.
pub const COLUMNS: &[&str] = &[
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "CapacityReservationId",
    "CapacityReservationStatus",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountQuantity",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "CommitmentDiscountUnit",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceId",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SkuPriceId",
    "Tags",
    "x_Workload",
    "x_Accelerator",
    "x_Chips",
    "x_EnergyKwh",
    "x_EmissionsKgCo2e",
];

/// Write rows as FOCUS CSV (null = empty field).
pub fn write_csv<W: std::io::Write>(rows: &[Row], account: &str, out: W) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS)?;
    let opt = |s: Option<String>| s.unwrap_or_default();
    for r in rows {
        let month = time::month_start(r.charge_start);
        let cm = r.commitment.as_ref();
        let kind = |k: Kind| match k {
            Kind::Spend => "Spend",
            Kind::Usage => "Usage",
        };
        let status = |s: Status| match s {
            Status::Used => "Used",
            Status::Unused => "Unused",
        };
        let ctype = cm.map(|c| match c.category {
            Kind::Spend => "Spend commitment".to_string(),
            Kind::Usage => "Reserved capacity".to_string(),
        });
        let reservation = cm.filter(|c| c.reservation);
        let rec: Vec<String> = vec![
            fmt_num(r.billed_cost),
            format!("{}-{}", r.provider, account),
            format!("{account} at {}", r.provider),
            "USD".into(),
            time::format(time::next_month(month)),
            time::format(month),
            opt(reservation.map(|c| c.id.clone())),
            opt(reservation
                .and_then(|c| c.status)
                .map(|s| status(s).to_string())),
            match r.charge_category {
                ChargeCategory::Usage => "Usage".into(),
                ChargeCategory::Purchase => "Purchase".into(),
            },
            String::new(),
            r.charge_description.clone(),
            r.charge_frequency.into(),
            time::format(r.charge_end),
            time::format(r.charge_start),
            opt(cm.map(|c| kind(c.category).to_string())),
            opt(cm.map(|c| c.id.clone())),
            opt(cm.map(|c| c.name.clone())),
            opt(cm.map(|c| fmt_num(c.quantity))),
            opt(cm.and_then(|c| c.status).map(|s| status(s).to_string())),
            opt(ctype),
            opt(cm.map(|c| c.unit.to_string())),
            opt(r.consumed_quantity.map(fmt_num)),
            opt(r.consumed_quantity.map(|_| "Hours".to_string())),
            fmt_num(r.contracted_cost),
            fmt_num(r.contracted_unit_price),
            fmt_num(r.effective_cost),
            format!("{}-{}-{}", r.provider, account, &time::format(month)[..7]),
            r.provider.clone(),
            fmt_num(r.list_cost),
            fmt_num(r.list_unit_price),
            match r.pricing_category {
                PricingCategory::Standard => "Standard".into(),
                PricingCategory::Dynamic => "Dynamic".into(),
                PricingCategory::Committed => "Committed".into(),
            },
            fmt_num(r.pricing_quantity),
            r.pricing_unit.into(),
            r.provider.clone(),
            r.provider.clone(),
            opt(r.region.clone()),
            opt(r.region_name.clone()),
            opt(r.resource_id.clone()),
            opt(r.resource_name.clone()),
            opt(r.resource_type.map(str::to_string)),
            r.service_category.into(),
            r.service_name.clone(),
            r.service_subcategory.into(),
            r.sku_id.clone(),
            r.sku_price_id.clone(),
            opt(r.tags.clone()),
            opt(r.workload.clone()),
            opt(r.accelerator.map(|a| a.to_string())),
            opt(r.chips.map(|c| c.to_string())),
            opt(r.energy_kwh.map(fmt_num)),
            opt(r.emissions_kg.map(fmt_num)),
        ];
        w.write_record(&rec)?;
    }
    w.flush()?;
    Ok(())
}
