//! Selection: choose one candidate (or none) per unit.
//!
//! * Small problems: exact MILP (good_lp + microlp), so the result is provably optimal.
//! * Large problems: Lagrangian relaxation of pool capacity and region power. Its dual, maximised
//!   by subgradient ascent, is a valid lower bound (equal to the LP relaxation's for this
//!   assignment structure); its multipliers price scarce pools, a greedy pass on the priced costs
//!   builds a feasible plan, and a local search improves it. Identical units are aggregated into
//!   classes so one dual iteration costs O(classes × candidates), not O(units × candidates).
//!
//! Everything is deterministic: ties break on indices, no hashing order leaks into results.

// Parallel arrays indexed by offer / region read more clearly as index loops.
#![allow(clippy::needless_range_loop)]

use crate::problem::{Constraint, Problem};
use std::collections::HashMap;

/// A choice per unit: index into `unit.cands`, or `None` (unplaced).
pub type Choice = Vec<Option<usize>>;

/// Result of a solve.
#[derive(Debug, Clone)]
pub struct Solved {
    /// The choice.
    pub choice: Choice,
    /// Objective value, $/h.
    pub objective: f64,
    /// Proven lower bound on the optimum, $/h.
    pub lower_bound: f64,
    /// Which method produced it.
    pub method: String,
    /// Why each unplaced unit is unplaced (beyond its filters), by unit index.
    pub blocked: HashMap<usize, Constraint>,
}

/// Objective of a choice: placed costs plus penalties of unplaced units.
pub fn objective(p: &Problem, choice: &Choice) -> f64 {
    p.units
        .iter()
        .zip(choice)
        .map(|(u, c)| match c {
            Some(i) => u.cands[*i].cost,
            // A unit no option can take costs the same under every plan: left out of the sum.
            None if u.cands.is_empty() => 0.0,
            None => u.penalty,
        })
        .sum()
}

/// Residual capacity tracker: nodes per offer and facility watts per region.
#[derive(Debug, Clone)]
pub struct Residual {
    /// Nodes left per offer.
    pub nodes: Vec<i64>,
    /// Watts left per region.
    pub watts: Vec<f64>,
}

impl Residual {
    /// Full capacity.
    pub fn new(p: &Problem) -> Residual {
        Residual {
            nodes: p.offers.iter().map(|o| o.capacity_nodes as i64).collect(),
            watts: p.region_cap_watts.clone(),
        }
    }
    /// Whether a candidate fits; `None` if it does, else the binding constraint.
    pub fn blocks(&self, p: &Problem, u: usize, c: usize) -> Option<Constraint> {
        let cand = &p.units[u].cands[c];
        let o = &p.offers[cand.offer as usize];
        if (cand.nodes as i64) > self.nodes[cand.offer as usize] {
            Some(Constraint::Capacity)
        } else if cand.watts > self.watts[o.region] + 1e-6 {
            Some(Constraint::PowerCap)
        } else {
            None
        }
    }
    /// Take a candidate's resources.
    pub fn take(&mut self, p: &Problem, u: usize, c: usize) {
        let cand = &p.units[u].cands[c];
        self.nodes[cand.offer as usize] -= cand.nodes as i64;
        self.watts[p.offers[cand.offer as usize].region] -= cand.watts;
    }
    /// Give them back.
    pub fn give(&mut self, p: &Problem, u: usize, c: usize) {
        let cand = &p.units[u].cands[c];
        self.nodes[cand.offer as usize] += cand.nodes as i64;
        self.watts[p.offers[cand.offer as usize].region] += cand.watts;
    }
}

/// Whether a group's placed units meet its redundancy rule (vacuous when none is placed).
pub fn group_ok(p: &Problem, g: usize, choice: &Choice) -> bool {
    let grp = &p.groups[g];
    let mut provs: Vec<usize> = Vec::new();
    let mut regs: Vec<usize> = Vec::new();
    for &u in &grp.units {
        if let Some(c) = choice[u] {
            let o = &p.offers[p.units[u].cands[c].offer as usize];
            if !provs.contains(&o.provider) {
                provs.push(o.provider);
            }
            if !regs.contains(&o.region) {
                regs.push(o.region);
            }
        }
    }
    provs.is_empty()
        || (provs.len() as u32 >= grp.min_providers && regs.len() as u32 >= grp.min_regions)
}

/// Whether a choice satisfies every constraint (capacity, power, redundancy).
pub fn feasible(p: &Problem, choice: &Choice) -> bool {
    let mut r = Residual::new(p);
    for (u, c) in choice.iter().enumerate() {
        if let Some(c) = c {
            if r.blocks(p, u, *c).is_some() {
                return false;
            }
            r.take(p, u, *c);
        }
    }
    (0..p.groups.len()).all(|g| group_ok(p, g, choice))
}

/// Greedy construction: units in `order`, each to its cheapest fitting candidate under
/// `score(u, c)`.
pub fn greedy(
    p: &Problem,
    order: &[usize],
    score: &dyn Fn(usize, usize) -> f64,
    blocked: &mut HashMap<usize, Constraint>,
) -> (Choice, Residual) {
    let mut res = Residual::new(p);
    let mut choice: Choice = vec![None; p.units.len()];
    for &u in order {
        let mut best: Option<(f64, usize)> = None;
        let mut why = None;
        for c in 0..p.units[u].cands.len() {
            if let Some(b) = res.blocks(p, u, c) {
                why.get_or_insert(b);
                continue;
            }
            let s = score(u, c);
            if best.is_none_or(|(bs, _)| s < bs) {
                best = Some((s, c));
            }
        }
        match best {
            Some((_, c)) => {
                res.take(p, u, c);
                choice[u] = Some(c);
            }
            None => {
                if let Some(w) = why {
                    blocked.insert(u, w);
                }
            }
        }
    }
    repair_groups(p, &mut choice, &mut res, blocked);
    (choice, res)
}

/// Make every redundancy group satisfied: add the cheapest moves that bring in a new
/// provider or region; if impossible, unplace the group (reason: redundancy).
pub fn repair_groups(
    p: &Problem,
    choice: &mut Choice,
    res: &mut Residual,
    blocked: &mut HashMap<usize, Constraint>,
) {
    for g in 0..p.groups.len() {
        let mut guard = 0;
        while !group_ok(p, g, choice) && guard < 64 {
            guard += 1;
            let grp = &p.groups[g];
            let (provs, regs) = spans(p, g, choice);
            let need_prov = (provs.len() as u32) < grp.min_providers;
            // Best move: a unit of the group to a candidate on a new provider (or region).
            let mut best: Option<(f64, usize, usize)> = None;
            for &u in &grp.units {
                let cur = choice[u];
                let cur_cost = cur
                    .map(|c| p.units[u].cands[c].cost)
                    .unwrap_or(p.units[u].penalty);
                // Moving a unit away must not remove the only unit on a provider/region.
                if let Some(c) = cur {
                    let o = &p.offers[p.units[u].cands[c].offer as usize];
                    let same_prov = grp
                        .units
                        .iter()
                        .filter(|&&v| {
                            choice[v].is_some_and(|cv| {
                                p.offers[p.units[v].cands[cv].offer as usize].provider == o.provider
                            })
                        })
                        .count();
                    let same_reg = grp
                        .units
                        .iter()
                        .filter(|&&v| {
                            choice[v].is_some_and(|cv| {
                                p.offers[p.units[v].cands[cv].offer as usize].region == o.region
                            })
                        })
                        .count();
                    if same_prov < 2 && need_prov || same_reg < 2 && !need_prov {
                        continue;
                    }
                }
                if let Some(c) = cur {
                    res.give(p, u, c);
                }
                for (ci, cand) in p.units[u].cands.iter().enumerate() {
                    let o = &p.offers[cand.offer as usize];
                    let new = if need_prov {
                        !provs.contains(&o.provider)
                    } else {
                        !regs.contains(&o.region)
                    };
                    if new && res.blocks(p, u, ci).is_none() {
                        let delta = cand.cost - cur_cost;
                        if best.is_none_or(|(d, _, _)| delta < d) {
                            best = Some((delta, u, ci));
                        }
                    }
                }
                if let Some(c) = cur {
                    res.take(p, u, c);
                }
            }
            match best {
                Some((_, u, ci)) => {
                    if let Some(c) = choice[u] {
                        res.give(p, u, c);
                    }
                    res.take(p, u, ci);
                    choice[u] = Some(ci);
                }
                None => break,
            }
        }
        if !group_ok(p, g, choice) {
            for &u in &p.groups[g].units {
                if let Some(c) = choice[u].take() {
                    res.give(p, u, c);
                }
                blocked.insert(u, Constraint::Redundancy);
            }
        }
    }
}

fn spans(p: &Problem, g: usize, choice: &Choice) -> (Vec<usize>, Vec<usize>) {
    let mut provs = Vec::new();
    let mut regs = Vec::new();
    for &u in &p.groups[g].units {
        if let Some(c) = choice[u] {
            let o = &p.offers[p.units[u].cands[c].offer as usize];
            if !provs.contains(&o.provider) {
                provs.push(o.provider);
            }
            if !regs.contains(&o.region) {
                regs.push(o.region);
            }
        }
    }
    (provs, regs)
}

/// Local search: move single units to cheaper candidates that fit, and place unplaced units
/// where room appeared, until nothing improves (bounded passes).
pub fn improve(
    p: &Problem,
    choice: &mut Choice,
    res: &mut Residual,
    blocked: &mut HashMap<usize, Constraint>,
) {
    for _pass in 0..8 {
        let mut changed = false;
        for u in 0..p.units.len() {
            let cur_cost = choice[u]
                .map(|c| p.units[u].cands[c].cost)
                .unwrap_or(p.units[u].penalty);
            if let Some(c) = choice[u] {
                res.give(p, u, c);
            }
            let mut moved = None;
            for (ci, cand) in p.units[u].cands.iter().enumerate() {
                if cand.cost >= cur_cost - 1e-9 {
                    break; // sorted by cost: nothing cheaper follows
                }
                if res.blocks(p, u, ci).is_none() {
                    let old = choice[u];
                    choice[u] = Some(ci);
                    let ok = p.units[u].group.is_none_or(|g| group_ok(p, g, choice));
                    choice[u] = old;
                    if ok {
                        moved = Some(ci);
                        break;
                    }
                }
            }
            match moved {
                Some(ci) => {
                    res.take(p, u, ci);
                    choice[u] = Some(ci);
                    blocked.remove(&u);
                    changed = true;
                }
                None => {
                    if let Some(c) = choice[u] {
                        res.take(p, u, c);
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
}

/// Units that share an identical candidate list and penalty, solved once in the dual.
struct Classes {
    rep: Vec<usize>,
    mult: Vec<f64>,
}

fn classes(p: &Problem) -> Classes {
    let mut map: HashMap<Vec<u64>, usize> = HashMap::new();
    let mut rep = Vec::new();
    let mut mult = Vec::new();
    for (ui, u) in p.units.iter().enumerate() {
        if u.cands.is_empty() {
            continue; // contributes nothing to the objective (see `objective`)
        }
        let mut key = Vec::with_capacity(u.cands.len() * 3 + 1);
        key.push(u.penalty.to_bits());
        for c in &u.cands {
            key.push(c.offer as u64 | ((c.nodes as u64) << 32));
            key.push(c.cost.to_bits());
            key.push(c.watts.to_bits());
        }
        match map.get(&key) {
            Some(&k) => mult[k] += 1.0,
            None => {
                map.insert(key, rep.len());
                rep.push(ui);
                mult.push(1.0);
            }
        }
    }
    Classes { rep, mult }
}

/// Lagrangian dual of capacity and power: lower bound and the best multipliers.
/// Power is dualised per MW to keep both subgradients on comparable scales.
fn dual(p: &Problem, iters: usize, mut upper: f64, cls: &Classes) -> (f64, Vec<f64>, Vec<f64>) {
    let no = p.offers.len();
    let nr = p.region_cap_watts.len();
    let mut mu = vec![0.0f64; no];
    let mut pi = vec![0.0f64; nr];
    let mut best = f64::NEG_INFINITY;
    let mut best_mu = mu.clone();
    let mut best_pi = pi.clone();
    let mut theta = 1.0;
    let mut since = 0;
    let mut use_nodes = vec![0.0f64; no];
    let mut use_mw = vec![0.0f64; nr];
    for _ in 0..iters {
        use_nodes.iter_mut().for_each(|x| *x = 0.0);
        use_mw.iter_mut().for_each(|x| *x = 0.0);
        let mut l = 0.0;
        for (k, &u) in cls.rep.iter().enumerate() {
            let unit = &p.units[u];
            let mut bv = unit.penalty;
            let mut bc = usize::MAX;
            for (ci, c) in unit.cands.iter().enumerate() {
                if c.cost >= bv {
                    break; // multipliers only add: a candidate whose own cost exceeds the best cannot win
                }
                let o = c.offer as usize;
                let v = c.cost + mu[o] * c.nodes as f64 + pi[p.offers[o].region] * c.watts / 1e6;
                if v < bv {
                    bv = v;
                    bc = ci;
                }
            }
            let m = cls.mult[k];
            l += m * bv;
            if bc != usize::MAX {
                let c = &unit.cands[bc];
                use_nodes[c.offer as usize] += m * c.nodes as f64;
                use_mw[p.offers[c.offer as usize].region] += m * c.watts / 1e6;
            }
        }
        for o in 0..no {
            l -= mu[o] * p.offers[o].capacity_nodes as f64;
        }
        for r in 0..nr {
            l -= pi[r] * p.region_cap_watts[r] / 1e6;
        }
        if best == f64::NEG_INFINITY || l > best + 1e-9 * best.abs().max(1.0) {
            best = l;
            best_mu.clone_from(&mu);
            best_pi.clone_from(&pi);
            since = 0;
        } else {
            since += 1;
            if since >= 5 {
                theta /= 2.0;
                since = 0;
            }
        }
        // Projected subgradient.
        let mut norm = 0.0;
        let g_o: Vec<f64> = (0..no)
            .map(|o| {
                let g = use_nodes[o] - p.offers[o].capacity_nodes as f64;
                if mu[o] <= 0.0 && g < 0.0 {
                    0.0
                } else {
                    g
                }
            })
            .collect();
        let g_r: Vec<f64> = (0..nr)
            .map(|r| {
                let g = use_mw[r] - p.region_cap_watts[r] / 1e6;
                if pi[r] <= 0.0 && g < 0.0 {
                    0.0
                } else {
                    g
                }
            })
            .collect();
        norm += g_o.iter().map(|g| g * g).sum::<f64>();
        norm += g_r.iter().map(|g| g * g).sum::<f64>();
        if norm < 1e-12 {
            break; // relaxed solution is feasible for the relaxed constraints: optimal dual
        }
        if upper < best {
            upper = best;
        }
        let step = theta * (upper - l).max(1e-6 * upper.abs().max(1.0)) / norm;
        for o in 0..no {
            mu[o] = (mu[o] + step * g_o[o]).max(0.0);
        }
        for r in 0..nr {
            pi[r] = (pi[r] + step * g_r[r]).max(0.0);
        }
        if theta < 1e-4 {
            break;
        }
    }
    (best, best_mu, best_pi)
}

/// Heuristic solve with a Lagrangian lower bound.
pub fn solve_lagrangian(p: &Problem, iters: usize) -> Solved {
    let n = p.units.len();
    // Initial order: priority first, then the biggest (hardest to fit) units.
    let mut order: Vec<usize> = (0..n).collect();
    let size = |u: usize| p.units[u].cands.first().map(|c| c.dollars).unwrap_or(0.0);
    order.sort_by(|&a, &b| {
        p.units[b]
            .priority
            .cmp(&p.units[a].priority)
            .then(size(b).total_cmp(&size(a)))
            .then(a.cmp(&b))
    });
    let mut blocked = HashMap::new();
    let plain = |u: usize, c: usize| p.units[u].cands[c].cost;
    let (mut best_choice, mut res) = greedy(p, &order, &plain, &mut blocked);
    improve(p, &mut best_choice, &mut res, &mut blocked);
    let mut best_obj = objective(p, &best_choice);
    let mut best_blocked = blocked;

    let cls = classes(p);
    let (lb, mu, pi) = dual(p, iters, best_obj, &cls);
    // Priced greedy: scarce pools carry their multiplier, so units that have good
    // alternatives leave them to units that do not.
    let priced = |u: usize, c: usize| {
        let cand = &p.units[u].cands[c];
        let o = cand.offer as usize;
        cand.cost + mu[o] * cand.nodes as f64 + pi[p.offers[o].region] * cand.watts / 1e6
    };
    for variant in 0..2 {
        let mut order2 = order.clone();
        if variant == 1 {
            // Regret order: units that lose most if they miss their best priced option first.
            let regret: Vec<f64> = (0..n)
                .map(|u| {
                    let mut v: Vec<f64> =
                        (0..p.units[u].cands.len()).map(|c| priced(u, c)).collect();
                    v.sort_by(f64::total_cmp);
                    match (v.first(), v.get(1)) {
                        (Some(a), Some(b)) => b - a,
                        (Some(a), None) => p.units[u].penalty - a,
                        _ => 0.0,
                    }
                })
                .collect();
            order2.sort_by(|&a, &b| {
                p.units[b]
                    .priority
                    .cmp(&p.units[a].priority)
                    .then(regret[b].total_cmp(&regret[a]))
                    .then(a.cmp(&b))
            });
        }
        let mut blocked = HashMap::new();
        let (mut ch, mut res) = greedy(p, &order2, &priced, &mut blocked);
        improve(p, &mut ch, &mut res, &mut blocked);
        let obj = objective(p, &ch);
        if obj < best_obj - 1e-9 {
            best_obj = obj;
            best_choice = ch;
            best_blocked = blocked;
        }
    }
    let lower = lb.min(best_obj);
    Solved {
        choice: best_choice,
        objective: best_obj,
        lower_bound: lower,
        method: format!("lagrangian ({} classes) + greedy repair", cls.rep.len()),
        blocked: best_blocked,
    }
}
