//! The packing dual: the Lagrangian relaxation of "each unit takes at most one option" (prices
//! `λ` per class of units) and of region power (prices `π`), which leaves one integer knapsack
//! per offer (`knapsack`). A pool's committed and on-demand offers are solved together, since a
//! blend takes all of the committed nodes and some on-demand ones.
//!
//! Why: the capacity dual (`dual`) is at best the LP relaxation, and under scarcity the LP fills
//! pools with fractions of gangs, so its bound can sit far below every real plan. Here each
//! offer holds whole units only, so the bound is never below the capacity dual's at the prices
//! it starts from (`λ` = each class's priced value there) and is usually well above the LP.
//! Services' redundancy rules are relaxed (a valid, weaker bound for them); candidates cut by
//! `max_candidates_per_unit` count as an option at their floor that uses nothing.

use super::knapsack::{self, Item};
use super::Classes;
use crate::problem::{Category, Problem};

/// Evaluations of the packing dual at most, whatever the budget.
const MAX_ITERATIONS: usize = 300;

/// What the dual works on: classes of identical units, and every other unit with options alone.
pub(crate) struct Entities {
    /// A representative unit.
    rep: Vec<usize>,
    /// Units it stands for.
    mult: Vec<u32>,
    /// Cost of leaving one out, or of taking a cut candidate (no capacity used).
    floor: Vec<f64>,
    /// Per offer: the (entity, candidate) pairs on it alone (not blends).
    by_offer: Vec<Vec<(u32, u32)>>,
    /// Per pool: committed, on-demand and spot offers, and the blends on the pool.
    pools: Vec<PoolOffers>,
}

#[derive(Default)]
struct PoolOffers {
    committed: Option<usize>,
    on_demand: Option<usize>,
    spot: Option<usize>,
    blends: Vec<(u32, u32)>,
}

impl Entities {
    pub(crate) fn new(p: &Problem, cls: &Classes) -> Entities {
        let mut rep = Vec::new();
        let mut mult = Vec::new();
        for (k, &u) in cls.rep.iter().enumerate() {
            rep.push(u);
            mult.push(cls.mult[k] as u32);
        }
        for (u, unit) in p.units.iter().enumerate() {
            if cls.of[u] == usize::MAX && !unit.cands.is_empty() {
                rep.push(u);
                mult.push(1);
            }
        }
        let floor = rep
            .iter()
            .map(|&u| p.units[u].penalty.min(p.units[u].tail_floor))
            .collect();
        let mut by_offer = vec![Vec::new(); p.offers.len()];
        let mut pool_of: std::collections::BTreeMap<usize, usize> = Default::default();
        let mut pools: Vec<PoolOffers> = Vec::new();
        for (o, off) in p.offers.iter().enumerate() {
            let k = *pool_of.entry(off.pool).or_insert_with(|| {
                pools.push(PoolOffers::default());
                pools.len() - 1
            });
            match off.category {
                Category::Committed => pools[k].committed = Some(o),
                Category::Spot => pools[k].spot = Some(o),
                _ => pools[k].on_demand = Some(o),
            }
        }
        for (e, &u) in rep.iter().enumerate() {
            for (ci, c) in p.units[u].cands.iter().enumerate() {
                if c.nodes2 > 0 {
                    let k = pool_of[&p.offers[c.offer as usize].pool];
                    pools[k].blends.push((e as u32, ci as u32));
                } else {
                    by_offer[c.offer as usize].push((e as u32, ci as u32));
                }
            }
        }
        Entities {
            rep,
            mult,
            floor,
            by_offer,
            pools,
        }
    }

    /// Number of entities.
    pub(crate) fn len(&self) -> usize {
        self.rep.len()
    }

    /// The unit entity `e` stands for.
    pub(crate) fn rep(&self, e: usize) -> usize {
        self.rep[e]
    }

    /// Units entity `e` stands for.
    pub(crate) fn mult(&self, e: usize) -> u32 {
        self.mult[e]
    }

    /// What leaving one unit of `e` out (or taking a cut candidate) costs.
    pub(crate) fn floor(&self, e: usize) -> f64 {
        self.floor[e]
    }
}

/// One evaluation: the bound, and how often each entity was taken and the power each region
/// used (the subgradient).
pub(crate) struct Evaluated {
    /// L(λ, π): a lower bound on the objective.
    pub value: f64,
    /// Copies of each entity the knapsacks took (left-out copies not counted).
    pub taken: Vec<u32>,
    /// Per region, MW the knapsacks used.
    pub mw: Vec<f64>,
    /// Knapsack cells updated: the work this evaluation cost.
    pub work: u64,
}

/// L(λ, π) and its subgradient.
pub(crate) fn evaluate(p: &Problem, ents: &Entities, lambda: &[f64], pi: &[f64]) -> Evaluated {
    let mut value = 0.0;
    for e in 0..ents.len() {
        let m = ents.mult[e] as f64;
        value += m * lambda[e] + m * (ents.floor[e] - lambda[e]).min(0.0);
    }
    for (r, cap) in p.region_cap_watts.iter().enumerate() {
        value -= pi[r] * cap / 1e6;
    }
    let mut taken = vec![0u32; ents.len()];
    let mut mw = vec![0.0; p.region_cap_watts.len()];
    let reduced = |e: u32, ci: u32| {
        let c = &p.units[ents.rep[e as usize]].cands[ci as usize];
        c.cost - lambda[e as usize] + pi[c.region as usize] * c.mw
    };
    let work = std::cell::Cell::new(0u64);
    let solve_offer = |o: usize| -> (knapsack::Solved, Vec<Item>) {
        let cap = p.offers[o].capacity_nodes;
        let items: Vec<Item> = ents.by_offer[o]
            .iter()
            .map(|&(e, ci)| Item {
                weight: p.units[ents.rep[e as usize]].cands[ci as usize].nodes,
                value: reduced(e, ci),
                count: ents.mult[e as usize],
                tag: e,
            })
            .collect();
        let ks = knapsack::solve(&items, cap, true);
        work.set(work.get() + ks.work + items.len() as u64);
        (ks, items)
    };
    let mut out = (&mut taken, &mut mw);
    let record = |out: &mut (&mut Vec<u32>, &mut Vec<f64>),
                  items: &[Item],
                  ks: &knapsack::Solved,
                  w: usize,
                  o: usize| {
        for (i, copies) in ks.taken(w) {
            let e = items[i].tag as usize;
            let ci = ents.by_offer[o][i].1;
            out.0[e] += copies;
            let c = &p.units[ents.rep[e]].cands[ci as usize];
            out.1[c.region as usize] += c.mw * copies as f64;
        }
    };
    for pool in &ents.pools {
        if let Some(s) = pool.spot {
            let (ks, items) = solve_offer(s);
            let w = p.offers[s].capacity_nodes as usize;
            value += ks.best[w];
            record(&mut out, &items, &ks, w, s);
        }
        let od = pool.on_demand.map(|o| (o, solve_offer(o)));
        let com = pool.committed.map(|o| (o, solve_offer(o)));
        let od_best = |w: usize| od.as_ref().map_or(0.0, |(_, (ks, _))| ks.best[w]);
        let od_cap = pool
            .on_demand
            .map_or(0, |o| p.offers[o].capacity_nodes as usize);
        // Without a blend: the two knapsacks apart.
        let plain = com.as_ref().map_or(0.0, |(o, (ks, _))| {
            ks.best[p.offers[*o].capacity_nodes as usize]
        }) + od_best(od_cap);
        // With one: it takes every committed node and `nodes2` on-demand ones.
        let mut with_blend: Option<(f64, u32, u32)> = None;
        for &(e, ci) in &pool.blends {
            let c = &p.units[ents.rep[e as usize]].cands[ci as usize];
            let Some(left) = od_cap.checked_sub(c.nodes2 as usize) else {
                continue;
            };
            let v = reduced(e, ci) + od_best(left);
            if v < plain && with_blend.is_none_or(|(b, _, _)| v < b) {
                with_blend = Some((v, e, ci));
            }
        }
        match with_blend {
            Some((v, e, ci)) => {
                value += v;
                let c = &p.units[ents.rep[e as usize]].cands[ci as usize];
                out.0[e as usize] += 1;
                out.1[c.region as usize] += c.mw;
                if let Some((o, (ks, items))) = &od {
                    record(&mut out, items, ks, od_cap - c.nodes2 as usize, *o);
                }
            }
            None => {
                value += plain;
                if let Some((o, (ks, items))) = &com {
                    record(
                        &mut out,
                        items,
                        ks,
                        p.offers[*o].capacity_nodes as usize,
                        *o,
                    );
                }
                if let Some((o, (ks, items))) = &od {
                    record(&mut out, items, ks, od_cap, *o);
                }
            }
        }
    }
    Evaluated {
        value,
        taken,
        mw,
        work: work.get(),
    }
}

/// The starting prices: each entity's value at the capacity dual's prices (its cheapest
/// priced option, or its floor), so the first evaluation is at least the capacity dual's bound.
pub(crate) fn start(p: &Problem, ents: &Entities, mu: &[f64], pi: &[f64]) -> Vec<f64> {
    (0..ents.len())
        .map(|e| {
            let unit = &p.units[ents.rep[e]];
            unit.cands
                .iter()
                .map(|c| c.priced(mu, pi))
                .fold(ents.floor[e], f64::min)
        })
        .collect()
}

/// Maximise L from the given prices until `budget` knapsack cells are spent (at least one
/// evaluation): the best bound, with the prices that gave it. Steps as in the capacity dual: towards a target level above the best value,
/// deflected, each class's price scaled by its floor (prices range from dollars to millions
/// across classes), power measured in nodes of the region's average pool.
/// Iterations without a better bound after which the ascent stops.
const STALL_ITERATIONS: usize = 40;

pub(crate) fn ascend(
    p: &Problem,
    ents: &Entities,
    mut lambda: Vec<f64>,
    mut pi: Vec<f64>,
    upper: f64,
    budget: u64,
    watch: &crate::interrupt::Watch,
) -> (f64, Vec<f64>, Vec<f64>) {
    let nr = pi.len();
    let mut spent = 0u64;
    let mut node_mw = vec![0.0f64; nr];
    let mut count = vec![0.0f64; nr];
    for o in &p.offers {
        node_mw[o.region] += o.node_facility_watts / 1e6;
        count[o.region] += 1.0;
    }
    for r in 0..nr {
        node_mw[r] = if count[r] > 0.0 {
            node_mw[r] / count[r]
        } else {
            1.0
        };
    }
    let scale: Vec<f64> = ents.floor.iter().map(|f| f.max(1.0)).collect();
    let mut best = f64::NEG_INFINITY;
    let mut best_prices = (lambda.clone(), pi.clone());
    let mut delta = 0.0;
    let mut since = 0;
    let mut stale = 0;
    let mut dir_e = vec![0.0f64; ents.len()];
    let mut dir_r = vec![0.0f64; nr];
    for it in 0..MAX_ITERATIONS {
        if it > 0 && (spent >= budget || watch.stop()) {
            break;
        }
        let ev = evaluate(p, ents, &lambda, &pi);
        spent += ev.work;
        if it == 0 {
            best = ev.value;
            delta = ((upper - best) / 10.0)
                .clamp(1e-6 * best.abs().max(1.0), 0.05 * best.abs().max(1.0));
        } else if ev.value > best + 1e-9 * best.abs().max(1.0) {
            best = ev.value;
            best_prices = (lambda.clone(), pi.clone());
            since = 0;
            stale = 0;
        } else {
            since += 1;
            stale += 1;
            // Four halvings of the step without a better bound: the ascent has stalled.
            if stale >= STALL_ITERATIONS {
                break;
            }
            if since >= 10 {
                delta /= 2.0;
                since = 0;
            }
        }
        // Subgradient in scaled coordinates: λ_e = s_e · y_e, power in node units.
        let g_e: Vec<f64> = (0..ents.len())
            .map(|e| {
                let m = ents.mult[e] as f64;
                let left_out = if ents.floor[e] < lambda[e] { m } else { 0.0 };
                (m - ev.taken[e] as f64 - left_out) * scale[e].sqrt()
            })
            .collect();
        let g_r: Vec<f64> = (0..nr)
            .map(|r| {
                let g = (ev.mw[r] - p.region_cap_watts[r] / 1e6) / node_mw[r];
                if pi[r] <= 0.0 && g < 0.0 {
                    0.0
                } else {
                    g
                }
            })
            .collect();
        let gd: f64 = g_e
            .iter()
            .zip(&dir_e)
            .chain(g_r.iter().zip(&dir_r))
            .map(|(g, d)| g * d)
            .sum();
        let dd: f64 = dir_e.iter().chain(&dir_r).map(|d| d * d).sum();
        let beta = if gd < 0.0 && dd > 0.0 {
            -1.5 * gd / dd
        } else {
            0.0
        };
        for (d, g) in dir_e.iter_mut().zip(&g_e) {
            *d = g + beta * *d;
        }
        for (d, g) in dir_r.iter_mut().zip(&g_r) {
            *d = g + beta * *d;
        }
        let norm: f64 = dir_e.iter().chain(&dir_r).map(|d| d * d).sum();
        if norm < 1e-12 || delta < 1e-7 * best.abs().max(1.0) {
            break;
        }
        let step = (best + delta - ev.value).max(0.0) / norm;
        for e in 0..ents.len() {
            lambda[e] += step * dir_e[e] * scale[e].sqrt();
        }
        for r in 0..nr {
            pi[r] = (pi[r] + step * dir_r[r] / node_mw[r]).max(0.0);
        }
    }
    (best, best_prices.0, best_prices.1)
}
