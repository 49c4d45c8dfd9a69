//! Commitment-aware planning, shown on the planner's own output.
//!
//! The planner prices committed capacity at its marginal cost, so idle reserved nodes cost
//! nothing to fill. A spend commitment's yearly minimum works the same way once a shortfall
//! is in sight: the dollars between the projected draw and the minimum will be paid anyway,
//! so eligible capacity is cheaper at the margin than its price says. [`grant`] shows the
//! planner the commitment's capacity at a shadow price (a share of its discounted price),
//! and [`minimum_draw`] bisects on that price for the plan that draws the minimum, keeping
//! whichever plan makes the year cheapest. [`reservation`] shows the first effect: the same workloads
//! planned with and without the planner seeing the reservations.

use crate::commitment::{Commitment, PoolRef, Terms};
use crate::focus::{self, Options};
use crate::meter;
use serde::Serialize;
use stratus_model::{Committed, Fleet, Pool, UsdPerHour, WorkloadSet};
use stratus_plan::{plan, Category, Placement, Plan, Policy};

/// The pool of a placement that draws on spend commitment `c`: not spot, and in its scope.
fn drawing<'a>(fleet: &'a Fleet, c: &Commitment, pl: &Placement) -> Option<&'a Pool> {
    if pl.category == Category::Spot {
        return None;
    }
    fleet
        .pools()
        .find(|(_, _, q)| q.id == pl.pool)
        .filter(|(p, r, q)| c.covers(&PoolRef::of(p, r, q)))
        .map(|(_, _, q)| q)
}

/// Discounted dollars per hour a plan draws from a spend commitment (on-demand nodes of
/// placements in its scope; committed nodes count only where no reservation covers them).
pub fn draw_per_hour(fleet: &Fleet, c: &Commitment, p: &Plan) -> f64 {
    let Terms::Spend { discount, .. } = &c.terms else {
        return 0.0;
    };
    p.placements
        .iter()
        .filter_map(|pl| drawing(fleet, c, pl).map(|pool| (pl, pool)))
        .map(|(pl, pool)| {
            let reserved = match &pool.committed {
                Some(_) if !is_grant(pool) => pl.committed_nodes.min(pl.nodes),
                _ => 0,
            };
            (pl.nodes - reserved) as f64 * pool.on_demand_per_node_hour.0 * (1.0 - discount)
        })
        .sum()
}

const GRANT: &str = "minimum-draw:";

fn is_grant(pool: &stratus_model::Pool) -> bool {
    pool.committed
        .as_ref()
        .is_some_and(|k| k.name.starts_with(GRANT))
}

/// Show the planner the commitment's eligible capacity priced at `shadow` × its discounted
/// price: 1 is what the capacity really costs per hour under the commitment, 0 treats it as
/// already paid for. Between the two lies the price at which the plan draws just the
/// minimum: the shadow price of the minimum-draw clause. Pools with a reservation of their
/// own keep it.
pub fn grant(fleet: &Fleet, c: &Commitment, shadow: f64) -> Fleet {
    let Terms::Spend { discount, .. } = &c.terms else {
        return fleet.clone();
    };
    let mut f = fleet.clone();
    for p in &mut f.providers {
        for r in &mut p.regions {
            for q in &mut r.pools {
                let scope = PoolRef {
                    id: &q.id,
                    provider: &p.name,
                    region: &r.name,
                    accelerator: q.accelerator,
                };
                if c.covers(&scope) && q.committed.is_none() {
                    let price = q.on_demand_per_node_hour.0 * (1.0 - discount);
                    q.committed = Some(Committed {
                        name: format!("{GRANT}{}", c.id),
                        nodes: q.nodes,
                        rate_per_node_hour: UsdPerHour(price),
                        marginal_per_node_hour: UsdPerHour(price * shadow.clamp(0.0, 1.0)),
                    });
                }
            }
        }
    }
    f
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
    /// Planned with the commitment's capacity at the best shadow price found.
    pub after: Side,
    /// The shadow price chosen (share of the discounted price the planner saw), if any plan
    /// beat ignoring the minimum.
    pub shadow_price: Option<f64>,
    /// Re-plans made.
    pub rounds: u32,
}

fn side(fleet: &Fleet, c: &Commitment, p: &Plan, minimum: f64, hours: f64) -> Side {
    let draw = draw_per_hour(fleet, c, p);
    // Everything not drawn from the commitment, at what the plan pays for it.
    let (mut in_scope, mut other) = (0, 0.0);
    for pl in &p.placements {
        match drawing(fleet, c, pl) {
            Some(_) => in_scope += 1,
            None => other += pl.cost_per_hour,
        }
    }
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
/// as usual, then with eligible capacity priced at a shadow price found by bisection (at
/// most eight plans), and keep the plan whose year costs least, true-up included.
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
    let mut best_shadow = None;
    let mut rounds = 0;
    if before.shortfall_usd > 0.0 {
        // Bisect on the shadow price for the highest one whose plan draws the minimum,
        // keeping the cheapest year seen (the draw falls as the shadow price rises).
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for k in 0..8 {
            let shadow = if k == 0 { 1.0 } else { (lo + hi) / 2.0 };
            let f = grant(fleet, c, shadow);
            let p = plan(&f, workloads, policy, None);
            let s = side(&f, c, &p, minimum, hours);
            rounds += 1;
            if s.shortfall_usd > 0.0 {
                hi = shadow;
            } else {
                lo = shadow;
            }
            if s.year_cost_usd < after.year_cost_usd {
                after = s;
                best_shadow = Some(shadow);
            }
            if k == 0 && lo == 1.0 {
                break;
            }
        }
    }
    Some(MinimumDraw {
        commitment: c.id.clone(),
        year: year + 1,
        minimum_usd: minimum,
        before,
        after,
        shadow_price: best_shadow,
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
