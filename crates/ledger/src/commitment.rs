//! Commitments: what the lab has promised to buy, in the two shapes contracts take.
//!
//! - **Spend-based**: "$38B over 7 years, drawn as capacity comes online, with yearly
//!   minimums". Eligible usage (scope: provider, regions, accelerators) is billed at list less
//!   the commitment's discount and draws the commitment down; each commitment year's draw
//!   below that year's minimum is charged at the year's end (a true-up), and the true-up
//!   counts towards the total.
//! - **Usage-based**: reserved nodes of one pool at a fixed rate per node-hour, paid used or
//!   not (use-it-or-lose-it each hour), with an optional ramp of the reserved count.
//!
//! A fleet's `committed` pools are usage-based commitments the planner already knows about;
//! those without terms in a commitments file get a one-year term from the ledger's start.

use crate::time::{self, UnixSeconds};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use stratus_model::parse::{find_line, from_str, Format, InputError};
use stratus_model::{Accelerator, Fleet, Pool, Provider, Region, UsdPerHour};

/// A commitments file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitmentsFile {
    /// The commitments.
    #[serde(default)]
    pub commitments: Vec<CommitmentSpec>,
}

/// Spend- or usage-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A dollar amount over a term, with yearly minimums.
    Spend,
    /// Reserved nodes of one pool.
    Usage,
}

/// One step of a usage commitment's ramp: from this date, this many nodes are reserved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampStep {
    /// UTC date (`YYYY-MM-DD` or `YYYY-MM-DDTHH:mm:ssZ`).
    pub from: String,
    /// Nodes reserved from then on.
    pub nodes: u32,
}

/// A commitment as written in a file; [`load`] checks it and turns it into a [`Commitment`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitmentSpec {
    /// Unique id (the FOCUS `CommitmentDiscountId`).
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// `spend` or `usage`.
    pub kind: Kind,
    /// Provider it applies to (spend: required; usage: implied by `pool`).
    #[serde(default)]
    pub provider: Option<String>,
    /// Spend scope: region names of that provider (empty: all).
    #[serde(default)]
    pub regions: Vec<String>,
    /// Spend scope: accelerator models (empty: all).
    #[serde(default)]
    pub accelerators: Vec<Accelerator>,
    /// Term start, UTC date.
    pub start: String,
    /// Term length in years.
    pub years: u32,
    /// Spend: the total promised over the term, dollars.
    #[serde(default)]
    pub total_usd: Option<f64>,
    /// Spend: fraction off list price for eligible usage (0.2 = 20 % off).
    #[serde(default)]
    pub discount: Option<f64>,
    /// Spend: the minimum draw of each commitment year, one per year.
    #[serde(default)]
    pub yearly_minimum_usd: Option<Vec<f64>>,
    /// Usage: the pool reserved.
    #[serde(default)]
    pub pool: Option<String>,
    /// Usage: nodes reserved at the start.
    #[serde(default)]
    pub nodes: Option<u32>,
    /// Usage: contracted price per reserved node-hour.
    #[serde(default)]
    pub rate_per_node_hour: Option<UsdPerHour>,
    /// Usage: later changes of the reserved count.
    #[serde(default)]
    pub ramp: Vec<RampStep>,
}

/// Terms of a checked commitment.
#[derive(Debug, Clone, PartialEq)]
pub enum Terms {
    /// Spend-based.
    Spend {
        /// Total over the term, dollars.
        total_usd: f64,
        /// Fraction off list for eligible usage.
        discount: f64,
        /// Minimum draw per commitment year.
        yearly_minimum_usd: Vec<f64>,
        /// Regions in scope (names; empty: all of the provider's).
        regions: Vec<String>,
        /// Accelerators in scope (empty: all).
        accelerators: Vec<Accelerator>,
    },
    /// Usage-based.
    Usage {
        /// Pool id.
        pool: String,
        /// Reserved nodes from each time on, ascending; the first is at the start.
        steps: Vec<(UnixSeconds, u32)>,
        /// Dollars per reserved node-hour.
        rate_per_node_hour: f64,
    },
}

/// A checked commitment.
#[derive(Debug, Clone, PartialEq)]
pub struct Commitment {
    /// Unique id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Provider.
    pub provider: String,
    /// Term start.
    pub start: UnixSeconds,
    /// Term end (exclusive).
    pub end: UnixSeconds,
    /// Term in years.
    pub years: u32,
    /// What was promised.
    pub terms: Terms,
}

impl Commitment {
    /// Spend or usage.
    pub fn kind(&self) -> Kind {
        match self.terms {
            Terms::Spend { .. } => Kind::Spend,
            Terms::Usage { .. } => Kind::Usage,
        }
    }

    /// Nodes reserved at `t` (0 outside the term; spend commitments reserve none).
    pub fn reserved_nodes(&self, t: UnixSeconds) -> u32 {
        match &self.terms {
            Terms::Usage { steps, .. } if t >= self.start && t < self.end => steps
                .iter()
                .rev()
                .find(|(from, _)| *from <= t)
                .map(|s| s.1)
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Start and end of commitment year `y` (0-based).
    pub fn year_bounds(&self, y: u32) -> (UnixSeconds, UnixSeconds) {
        (
            time::add_years(self.start, y),
            time::add_years(self.start, y + 1).min(self.end),
        )
    }

    /// Whether usage of this pool draws on the commitment (spend scope; usage: same pool).
    pub fn covers(&self, fleet_pool: &PoolRef<'_>) -> bool {
        match &self.terms {
            Terms::Usage { pool, .. } => pool == fleet_pool.id,
            Terms::Spend {
                regions,
                accelerators,
                ..
            } => {
                fleet_pool.provider == self.provider
                    && (regions.is_empty() || regions.iter().any(|r| r == fleet_pool.region))
                    && (accelerators.is_empty() || accelerators.contains(&fleet_pool.accelerator))
            }
        }
    }
}

/// What scope matching needs to know of a pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolRef<'a> {
    /// Pool id.
    pub id: &'a str,
    /// Provider name.
    pub provider: &'a str,
    /// Region name (without the provider).
    pub region: &'a str,
    /// Accelerator.
    pub accelerator: Accelerator,
}

impl<'a> PoolRef<'a> {
    /// A pool of the fleet, as [`Fleet::pools`] yields it.
    pub fn of(p: &'a Provider, r: &'a Region, q: &'a Pool) -> PoolRef<'a> {
        PoolRef {
            id: &q.id,
            provider: &p.name,
            region: &r.name,
            accelerator: q.accelerator,
        }
    }
}

/// Read and check a commitments file against the fleet.
pub fn load_file(
    path: &std::path::Path,
    fleet: &Fleet,
    ledger_start: UnixSeconds,
) -> Result<Vec<Commitment>, InputError> {
    let (name, text) = stratus_model::parse::read_text(path)?;
    load(&name, &text, fleet, ledger_start)
}

/// Parse and check commitments text (YAML, or JSON/TOML by the file name's extension), then
/// add a usage commitment for every committed pool of the fleet the text does not cover.
pub fn load(
    file: &str,
    text: &str,
    fleet: &Fleet,
    ledger_start: UnixSeconds,
) -> Result<Vec<Commitment>, InputError> {
    let f: CommitmentsFile = from_str(file, text, Format::from_path(file))?;
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    let mut reserved_pools = HashSet::new();
    for (i, c) in f.commitments.iter().enumerate() {
        let bad = |field: &str, reason: String| InputError {
            file: file.into(),
            line: find_line(text, &c.id, 0),
            field: Some(format!("commitments[{i}].{field}")),
            reason,
        };
        if c.id.trim().is_empty() {
            return Err(bad("id", "must not be empty".into()));
        }
        if !ids.insert(c.id.clone()) {
            return Err(InputError {
                line: find_line(text, &c.id, 1),
                ..bad("id", format!("duplicate commitment id `{}`", c.id))
            });
        }
        let start = time::parse(&c.start).map_err(|r| bad("start", r))?;
        if c.years == 0 || c.years > 30 {
            return Err(bad(
                "years",
                format!("{} is not a term in years (1 to 30)", c.years),
            ));
        }
        let end = time::add_years(start, c.years);
        let extra = |field: &str, present: bool| -> Result<(), InputError> {
            if present {
                Err(bad(
                    field,
                    format!("does not apply to a {:?} commitment", c.kind).to_lowercase(),
                ))
            } else {
                Ok(())
            }
        };
        let terms = match c.kind {
            Kind::Spend => {
                extra("pool", c.pool.is_some())?;
                extra("nodes", c.nodes.is_some())?;
                extra("rate_per_node_hour", c.rate_per_node_hour.is_some())?;
                extra("ramp", !c.ramp.is_empty())?;
                let provider = c
                    .provider
                    .clone()
                    .ok_or_else(|| bad("provider", "is required for a spend commitment".into()))?;
                let Some(p) = fleet.providers.iter().find(|p| p.name == provider) else {
                    return Err(bad(
                        "provider",
                        format!("no provider `{provider}` in the fleet"),
                    ));
                };
                for r in &c.regions {
                    if !p.regions.iter().any(|x| &x.name == r) {
                        return Err(bad(
                            "regions",
                            format!("no region `{r}` at provider `{provider}`"),
                        ));
                    }
                }
                let total = c
                    .total_usd
                    .ok_or_else(|| bad("total_usd", "is required for a spend commitment".into()))?;
                if !(total.is_finite() && total > 0.0) {
                    return Err(bad(
                        "total_usd",
                        format!("{total} is not a positive amount"),
                    ));
                }
                let discount = c.discount.unwrap_or(0.0);
                if !(0.0..1.0).contains(&discount) {
                    return Err(bad(
                        "discount",
                        format!("{discount} is not a fraction in [0, 1)"),
                    ));
                }
                let mins = c
                    .yearly_minimum_usd
                    .clone()
                    .unwrap_or_else(|| vec![0.0; c.years as usize]);
                if mins.len() != c.years as usize {
                    return Err(bad(
                        "yearly_minimum_usd",
                        format!("has {} entries for a {}-year term", mins.len(), c.years),
                    ));
                }
                if let Some(m) = mins.iter().find(|m| !(m.is_finite() && **m >= 0.0)) {
                    return Err(bad(
                        "yearly_minimum_usd",
                        format!("{m} is not a non-negative amount"),
                    ));
                }
                let sum: f64 = mins.iter().sum();
                if sum > total * (1.0 + 1e-12) {
                    return Err(bad(
                        "yearly_minimum_usd",
                        format!("the minimums add up to {sum}, more than total_usd {total}"),
                    ));
                }
                (
                    provider,
                    Terms::Spend {
                        total_usd: total,
                        discount,
                        yearly_minimum_usd: mins,
                        regions: c.regions.clone(),
                        accelerators: c.accelerators.clone(),
                    },
                )
            }
            Kind::Usage => {
                extra("total_usd", c.total_usd.is_some())?;
                extra("discount", c.discount.is_some())?;
                extra("yearly_minimum_usd", c.yearly_minimum_usd.is_some())?;
                extra("regions", !c.regions.is_empty())?;
                extra("accelerators", !c.accelerators.is_empty())?;
                let pool_id = c
                    .pool
                    .clone()
                    .ok_or_else(|| bad("pool", "is required for a usage commitment".into()))?;
                let Some((provider, pool)) = fleet
                    .pools()
                    .find(|(_, _, q)| q.id == pool_id)
                    .map(|(p, _, q)| (p.name.clone(), q))
                else {
                    return Err(bad("pool", format!("no pool `{pool_id}` in the fleet")));
                };
                if let Some(p) = &c.provider {
                    if *p != provider {
                        return Err(bad(
                            "provider",
                            format!("pool `{pool_id}` belongs to `{provider}`, not `{p}`"),
                        ));
                    }
                }
                let nodes = c
                    .nodes
                    .ok_or_else(|| bad("nodes", "is required for a usage commitment".into()))?;
                let rate = c
                    .rate_per_node_hour
                    .or(pool.committed.as_ref().map(|k| k.rate_per_node_hour))
                    .ok_or_else(|| {
                        bad(
                            "rate_per_node_hour",
                            "is required (the pool has no committed rate in the fleet)".into(),
                        )
                    })?;
                let mut steps = vec![(start, nodes)];
                for (k, s) in c.ramp.iter().enumerate() {
                    let t = time::parse(&s.from).map_err(|r| bad(&format!("ramp[{k}].from"), r))?;
                    if t <= steps.last().expect("non-empty").0 || t >= end {
                        return Err(bad(
                            &format!("ramp[{k}].from"),
                            "ramp steps must be in order, after the start and before the term ends"
                                .into(),
                        ));
                    }
                    steps.push((t, s.nodes));
                }
                if let Some(n) = steps.iter().map(|s| s.1).find(|&n| n > pool.nodes) {
                    return Err(bad(
                        "nodes",
                        format!("{n} reserved nodes exceed the pool's {} nodes", pool.nodes),
                    ));
                }
                reserved_pools.insert(pool_id.clone());
                (
                    provider,
                    Terms::Usage {
                        pool: pool_id,
                        steps,
                        rate_per_node_hour: rate.0,
                    },
                )
            }
        };
        out.push(Commitment {
            id: c.id.clone(),
            name: if c.name.is_empty() {
                c.id.clone()
            } else {
                c.name.clone()
            },
            provider: terms.0,
            start,
            end,
            years: c.years,
            terms: terms.1,
        });
    }
    for c in from_fleet(fleet, ledger_start) {
        let Terms::Usage { pool, .. } = &c.terms else {
            continue;
        };
        if !reserved_pools.contains(pool) && ids.insert(c.id.clone()) {
            out.push(c);
        }
    }
    Ok(out)
}

/// The fleet's committed pools as usage commitments: one-year terms from `start`.
pub fn from_fleet(fleet: &Fleet, start: UnixSeconds) -> Vec<Commitment> {
    fleet
        .pools()
        .filter_map(|(p, _, pool)| {
            let k = pool.committed.as_ref()?;
            Some(Commitment {
                id: k.name.clone(),
                name: format!("{} (fleet file; no terms given: one year)", k.name),
                provider: p.name.clone(),
                start,
                end: time::add_years(start, 1),
                years: 1,
                terms: Terms::Usage {
                    pool: pool.id.clone(),
                    steps: vec![(start, k.nodes)],
                    rate_per_node_hour: k.rate_per_node_hour.0,
                },
            })
        })
        .collect()
}
