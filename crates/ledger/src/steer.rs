//! Commitment-aware planning, shown on the planner's own output.
//!
//! The planner prices committed capacity at its marginal cost, so idle reserved nodes cost
//! nothing to fill. A spend commitment's yearly minimum works the same way once a shortfall
//! is in sight: the dollars between the projected draw and the minimum will be paid anyway,
//! so eligible capacity up to that amount per hour is free at the margin. [`grant`] turns a
//! projected shortfall into such capacity (committed nodes with zero marginal cost on the
//! cheapest eligible pools), and [`minimum_draw`] re-plans until the minimum is met or no
//! eligible work is left to move. [`reservation`] shows the first effect: the same workloads
//! planned with and without the planner seeing the reservations.

use crate::commitment::{Commitment, PoolRef, Terms};
use crate::focus::{self, Options};
use crate::meter;
use crate::time::UnixSeconds;
use serde::Serialize;
use stratus_model::{Committed, Fleet, UsdPerHour, WorkloadSet};
use stratus_plan::{plan, Category, Plan, Policy};

/// Discounted dollars per hour a plan draws from a spend commitment (on-demand nodes of
/// placements in its scope; committed nodes count only where no reservation covers them).
pub fn draw_per_hour(fleet: &Fleet, c: &Commitment, p: &Plan) -> f64 {
    let Terms::Spend { discount, .. } = &c.terms else {
        return 0.0;
    };
    let mut sum = 0.0;
    for pl in &p.placements {
        if pl.category == Category::Spot {
            continue;
        }
        let Some((prov, region, pool)) = find(fleet, &pl.pool) else {
            continue;
        };
        let pref = PoolRef {
            id: &pool.id,
            provider: prov,
            region,
            accelerator: pool.accelerator,
        };
        if !c.covers(&pref) {
            continue;
        }
        let reserved = if is_grant(pool) {
            0
        } else {
            pool.committed
                .as_ref()
                .map(|_| pl.committed_nodes)
                .unwrap_or(0)
        };
        sum += (pl.nodes - reserved.min(pl.nodes)) as f64
            * pool.on_demand_per_node_hour.0
            * (1.0 - discount);
    }
    sum
}

fn find<'a>(fleet: &'a Fleet, id: &str) -> Option<(&'a str, &'a str, &'a stratus_model::Pool)> {
    fleet.providers.iter().find_map(|p| {
        p.regions.iter().find_map(|r| {
            r.pools
                .iter()
                .find(|q| q.id == id)
                .map(|q| (p.name.as_str(), r.name.as_str(), q))
        })
    })
}

const GRANT: &str = "minimum-draw:";

fn is_grant(pool: &stratus_model::Pool) -> bool {
    pool.committed
        .as_ref()
        .is_some_and(|k| k.name.starts_with(GRANT))
}

/// Give the planner `usd_per_hour` of free eligible capacity for commitment `c`: committed
/// nodes at zero marginal cost on its cheapest eligible pools (per chip, then by id) that
/// have no reservation of their own. Returns the fleet and the dollars per hour granted.
pub fn grant(fleet: &Fleet, c: &Commitment, usd_per_hour: f64) -> (Fleet, f64) {
    let Terms::Spend { discount, .. } = &c.terms else {
        return (fleet.clone(), 0.0);
    };
    let mut f = fleet.clone();
    let mut pools: Vec<(f64, String)> = Vec::new();
    for p in &f.providers {
        for r in &p.regions {
            for q in &r.pools {
                let pref = PoolRef {
                    id: &q.id,
                    provider: &p.name,
                    region: &r.name,
                    accelerator: q.accelerator,
                };
                if c.covers(&pref) && (q.committed.is_none() || is_grant(q)) {
                    pools.push((
                        q.on_demand_per_node_hour.0 / q.chips_per_node.max(1) as f64,
                        q.id.clone(),
                    ));
                }
            }
        }
    }
    pools.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut left = usd_per_hour;
    let mut granted = 0.0;
    for (_, id) in pools {
        for p in &mut f.providers {
            for r in &mut p.regions {
                for q in &mut r.pools {
                    if q.id != id {
                        continue;
                    }
                    let price = q.on_demand_per_node_hour.0 * (1.0 - discount);
                    let have = q.committed.as_ref().map(|k| k.nodes).unwrap_or(0);
                    let n = ((left / price).floor() as u32).min(q.nodes - have);
                    if n == 0 {
                        continue;
                    }
                    left -= n as f64 * price;
                    granted += n as f64 * price;
                    q.committed = Some(Committed {
                        name: format!("{GRANT}{}", c.id),
                        nodes: have + n,
                        rate_per_node_hour: UsdPerHour(price),
                        marginal_per_node_hour: UsdPerHour(0.0),
                    });
                }
            }
        }
    }
    (f, granted)
}

/// One side of a comparison: a plan's draw and its year's cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    /// Discounted dollars per hour drawn from the commitment.
    pub draw_usd_per_hour: f64,
    /// Projected draw over the commitment year.
    pub year_draw_usd: f64,
    /// The year's minimum − the projected draw, if positive.
    pub shortfall_usd: f64,
    /// Everything else the plan spends per hour (other providers, spot, out of scope), at
    /// list price; reservations' fees are the same on both sides and left out.
    pub other_usd_per_hour: f64,
    /// The year's cost: other spend + the larger of draw and minimum.
    pub year_cost_usd: f64,
    /// Placements drawing on the commitment.
    pub placements_in_scope: usize,
}

/// [`minimum_draw`]'s result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinimumDraw {
    /// Commitment id.
    pub commitment: String,
    /// Commitment year (1-based).
    pub year: u32,
    /// Its minimum.
    pub minimum_usd: f64,
    /// Planned without regard to the minimum.
    pub before: Side,
    /// Planned with the projected shortfall granted as free capacity.
    pub after: Side,
    /// Dollars per hour of free capacity granted in the end.
    pub granted_usd_per_hour: f64,
    /// Re-plans made.
    pub rounds: u32,
}

fn side(fleet: &Fleet, c: &Commitment, p: &Plan, minimum: f64, hours: f64) -> Side {
    let draw = draw_per_hour(fleet, c, p);
    let in_scope = p
        .placements
        .iter()
        .filter(|pl| {
            pl.category != Category::Spot
                && find(fleet, &pl.pool).is_some_and(|(prov, region, pool)| {
                    c.covers(&PoolRef {
                        id: &pool.id,
                        provider: prov,
                        region,
                        accelerator: pool.accelerator,
                    })
                })
        })
        .count();
    let list_in_scope: f64 = p
        .placements
        .iter()
        .filter(|pl| pl.category != Category::Spot)
        .filter_map(|pl| {
            let (prov, region, pool) = find(fleet, &pl.pool)?;
            let inside = c.covers(&PoolRef {
                id: &pool.id,
                provider: prov,
                region,
                accelerator: pool.accelerator,
            });
            inside.then(|| {
                let own = if is_grant(pool) {
                    0
                } else {
                    pool.committed
                        .as_ref()
                        .map(|_| pl.committed_nodes)
                        .unwrap_or(0)
                };
                (pl.nodes - own.min(pl.nodes)) as f64 * pool.on_demand_per_node_hour.0
            })
        })
        .sum();
    // The planner's marginal cost counts granted nodes as free; add them back at list so
    // the two sides are priced alike.
    let granted_list: f64 = p
        .placements
        .iter()
        .filter_map(|pl| {
            let (_, _, pool) = find(fleet, &pl.pool)?;
            is_grant(pool).then_some(pl.committed_nodes as f64 * pool.on_demand_per_node_hour.0)
        })
        .sum();
    let other = p.cost_per_hour + granted_list - list_in_scope;
    let year_draw = draw * hours;
    Side {
        draw_usd_per_hour: draw,
        year_draw_usd: year_draw,
        shortfall_usd: (minimum - year_draw).max(0.0),
        other_usd_per_hour: other.max(0.0),
        year_cost_usd: other.max(0.0) * hours + year_draw.max(minimum),
        placements_in_scope: in_scope,
    }
}

/// Plan the workloads for commitment year `year` (0-based) of spend commitment `c`, first
/// as usual, then with the projected shortfall granted as free capacity, re-planning (at
/// most four times) while a shortfall remains and more can be granted.
pub fn minimum_draw(
    fleet: &Fleet,
    workloads: &WorkloadSet,
    policy: &Policy,
    c: &Commitment,
    year: u32,
) -> Option<MinimumDraw> {
    let Terms::Spend {
        yearly_minimum_usd, ..
    } = &c.terms
    else {
        return None;
    };
    let minimum = *yearly_minimum_usd.get(year as usize)?;
    let (ys, ye) = c.year_bounds(year);
    debug_assert!(ye > ys);
    let hours = (ye - ys) as f64 / 3600.0;
    let p0 = plan(fleet, workloads, policy, None);
    let before = side(fleet, c, &p0, minimum, hours);
    let mut after = before.clone();
    let mut granted_rate = 0.0;
    let mut rounds = 0;
    while after.shortfall_usd > 1e-6 * minimum.max(1.0) && rounds < 4 {
        let want = granted_rate + after.shortfall_usd / hours;
        let (f, g) = grant(fleet, c, want);
        if g <= granted_rate + 1e-9 {
            break;
        }
        let p = plan(&f, workloads, policy, None);
        let s = side(&f, c, &p, minimum, hours);
        rounds += 1;
        granted_rate = g;
        if s.year_cost_usd > after.year_cost_usd + 1e-6 {
            break;
        }
        after = s;
    }
    Some(MinimumDraw {
        commitment: c.id.clone(),
        year: year + 1,
        minimum_usd: minimum,
        before,
        after,
        granted_usd_per_hour: granted_rate,
        rounds,
    })
}

/// One side of [`reservation`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReservationSide {
    /// Reserved node-hours used / reserved, over all reservations.
    pub utilisation: f64,
    /// Effective cost of the unused reserved node-hours.
    pub unused_usd: f64,
    /// Σ EffectiveCost over the window.
    pub effective_usd: f64,
}

/// [`reservation`]'s result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReservationDemo {
    /// Hours the plans were held.
    pub hours: f64,
    /// Planned on a fleet with its reservations hidden (a commitment-unaware scheduler that
    /// sees list prices only); the reservations still bill and still cover what lands on them.
    pub unaware: ReservationSide,
    /// Planned with reservations at their marginal cost.
    pub aware: ReservationSide,
}

/// Plan the workloads twice, once with the fleet's reservations hidden from the planner and
/// once as usual, hold each plan for `hours` from `start`, and bill both with the same
/// commitments.
pub fn reservation(
    fleet: &Fleet,
    workloads: &WorkloadSet,
    policy: &Policy,
    commitments: &[Commitment],
    opts: &Options,
    hours: f64,
) -> ReservationDemo {
    let mut hidden = fleet.clone();
    for p in &mut hidden.providers {
        for r in &mut p.regions {
            for q in &mut r.pools {
                q.committed = None;
            }
        }
    }
    let bill = |p: &Plan| {
        let rows = focus::build(fleet, commitments, &meter::from_plan(p, hours), opts)
            .expect("plan pools are in the fleet");
        let rep = crate::burndown::report(commitments, &rows);
        let reserved: f64 = rep.usage.iter().map(|u| u.reserved_node_hours).sum();
        let used: f64 = rep.usage.iter().map(|u| u.used_node_hours).sum();
        ReservationSide {
            utilisation: if reserved > 0.0 { used / reserved } else { 0.0 },
            unused_usd: rep.usage.iter().map(|u| u.unused_usd).sum(),
            effective_usd: rep.effective_usd,
        }
    };
    ReservationDemo {
        hours,
        unaware: bill(&plan(&hidden, workloads, policy, None)),
        aware: bill(&plan(fleet, workloads, policy, None)),
    }
}

/// Start of commitment year `year` of `c`, for callers that hold plans from then.
pub fn year_start(c: &Commitment, year: u32) -> UnixSeconds {
    c.year_bounds(year).0
}
