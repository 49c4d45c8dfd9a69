//! Selection: choose one candidate (or none) per unit.
//!
//! * Small problems: exact MILP (good_lp + microlp), so the result is provably optimal.
//! * Large problems: a transportation relaxation (units of identical classes supply chips,
//!   offers absorb them up to capacity) solved exactly by the network simplex (`flow`). Its
//!   potentials price every offer, and its flow says how many units of each class go where;
//!   the plan follows it, services placed whole by a per-group programme, then a local search
//!   and ejection moves polish it. The bound is the Lagrangian dual of capacity and power,
//!   evaluated exactly (redundancy included) at those prices and refined by a few short
//!   subgradient steps: any prices give a valid bound, and these are nearly optimal ones.
//!   Identical units are aggregated into classes, so the dual costs O(classes × candidates),
//!   not O(units × candidates).
//!
//! Everything is deterministic: ties break on indices, no hashing order leaks into results.

// Parallel arrays indexed by offer / region read more clearly as index loops.
#![allow(clippy::needless_range_loop)]

use crate::flow;
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
        let short2 = cand.nodes2 > 0 && (cand.nodes2 as i64) > self.nodes[cand.offer2 as usize];
        if (cand.nodes as i64) > self.nodes[cand.offer as usize] || short2 {
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
        self.nodes[cand.offer2 as usize] -= cand.nodes2 as i64;
        self.watts[p.offers[cand.offer as usize].region] -= cand.watts;
    }
    /// Give them back.
    pub fn give(&mut self, p: &Problem, u: usize, c: usize) {
        let cand = &p.units[u].cands[c];
        self.nodes[cand.offer as usize] += cand.nodes as i64;
        self.nodes[cand.offer2 as usize] += cand.nodes2 as i64;
        self.watts[p.offers[cand.offer as usize].region] += cand.watts;
    }
}

/// Whether a group's placed units meet its redundancy rule (vacuous when none is placed).
pub fn group_ok(p: &Problem, g: usize, choice: &Choice) -> bool {
    group_ok_with(p, g, choice, None)
}

/// `group_ok` as if unit `u` had choice `c` (`with = Some((u, c))`), without copying `choice`.
pub fn group_ok_with(
    p: &Problem,
    g: usize,
    choice: &Choice,
    with: Option<(usize, Option<usize>)>,
) -> bool {
    let grp = &p.groups[g];
    let (provs, regs) = spans(p, g, choice, with);
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
) -> (Choice, Residual) {
    let mut res = Residual::new(p);
    let mut choice: Choice = vec![None; p.units.len()];
    let mut group_done = vec![false; p.groups.len()];
    fill(p, order, score, &mut group_done, (&mut choice, &mut res));
    repair_groups(p, &mut choice, &mut res);
    (choice, res)
}

/// Units in `order` not yet chosen: a service is placed whole (by `place_group`) the first
/// time the order reaches one of its units, since its redundancy rule shapes every choice
/// (`done` remembers); any other unit takes its cheapest fitting candidate under `score`.
fn fill(
    p: &Problem,
    order: &[usize],
    score: &dyn Fn(usize, usize) -> f64,
    done: &mut [bool],
    (choice, res): (&mut Choice, &mut Residual),
) {
    for &u in order {
        if let Some(g) = p.units[u].group {
            if !done[g] {
                done[g] = true;
                place_group(p, g, score, choice, res);
            }
        } else if choice[u].is_none() {
            if let Some(c) = cheapest_fitting(p, res, u, score) {
                res.take(p, u, c);
                choice[u] = Some(c);
            }
        }
    }
}

/// The candidate of `u` with the lowest `score` that fits what is left (ties: lower index).
fn cheapest_fitting(
    p: &Problem,
    res: &Residual,
    u: usize,
    score: &dyn Fn(usize, usize) -> f64,
) -> Option<usize> {
    (0..p.units[u].cands.len())
        .filter(|&c| res.blocks(p, u, c).is_none())
        .map(|c| (score(u, c), c))
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        .map(|(_, c)| c)
}

/// Providers beyond this many make the per-group DP (over provider subsets) too large; such
/// groups fall back to placement unit by unit plus repair, and the bound ignores their rule.
const DP_MAX_PROVIDERS: usize = 12;

/// Best assignment of one group's units under `score` (None = candidate unusable), with the
/// rule "placed units span at least `min_providers` providers, or nothing is placed".
/// Dynamic programme over the set of providers used: exact for the provider rule; the region
/// rule is implied when it asks for no more regions than providers (each provider's regions
/// are its own), and otherwise left to `repair_groups`.
pub fn group_dp(
    p: &Problem,
    g: usize,
    score: &dyn Fn(usize, usize) -> Option<f64>,
) -> Option<(f64, Vec<Option<usize>>)> {
    dp_with(p, g, |u, b| {
        for (ci, c) in p.units[u].cands.iter().enumerate() {
            if let Some(v) = score(u, ci) {
                let pr = p.offers[c.offer as usize].provider;
                if b[pr].is_none_or(|(bv, _)| v < bv) {
                    b[pr] = Some((v, ci));
                }
            }
        }
    })
}

/// Fill each unit's best option per provider with `fill(unit, row)`, then run the DP.
fn dp_with(
    p: &Problem,
    g: usize,
    mut fill: impl FnMut(usize, &mut [Option<(f64, usize)>]),
) -> Option<(f64, Vec<Option<usize>>)> {
    let np = p.providers.len();
    if np > DP_MAX_PROVIDERS {
        return None;
    }
    let grp = &p.groups[g];
    let mut best = vec![None; grp.units.len() * np];
    for (k, &u) in grp.units.iter().enumerate() {
        fill(u, &mut best[k * np..(k + 1) * np]);
    }
    dp_over_providers(p, g, &best)
}

/// Per unit of each group, its candidate indices split by provider (each list cost-sorted),
/// so pricing stops early per provider.
pub struct ProviderLists {
    lists: Vec<Vec<Vec<u32>>>,
}

impl ProviderLists {
    /// Build for every unit that belongs to a group.
    pub fn new(p: &Problem) -> ProviderLists {
        let np = p.providers.len();
        let lists = p
            .units
            .iter()
            .map(|u| {
                if u.group.is_none() || np > DP_MAX_PROVIDERS {
                    return Vec::new(); // not read: no per-group programme runs
                }
                let mut l = vec![Vec::new(); np];
                for (ci, c) in u.cands.iter().enumerate() {
                    l[p.offers[c.offer as usize].provider].push(ci as u32);
                }
                l
            })
            .collect();
        ProviderLists { lists }
    }
}

/// `group_dp` under Lagrangian prices, for the dual: a unit's candidates cut by
/// `max_candidates_per_unit` count as one option per provider at their floor, returned as
/// `Some(usize::MAX)` (no resources known), which keeps the bound valid.
fn group_dp_priced(
    p: &Problem,
    g: usize,
    mu: &[f64],
    pi: &[f64],
    lists: &ProviderLists,
) -> Option<(f64, Vec<Option<usize>>)> {
    dp_with(p, g, |u, row| {
        let unit = &p.units[u];
        for (pr, slot) in row.iter_mut().enumerate() {
            let mut b: Option<(f64, usize)> = (unit.tail_floor.is_finite()
                && unit.tail_mask & (1 << pr) != 0)
                .then_some((unit.tail_floor, usize::MAX));
            for &ci in &lists.lists[u][pr] {
                let c = &unit.cands[ci as usize];
                if b.is_some_and(|(bv, _)| c.cost >= bv) {
                    break; // prices only add: nothing later in this list can win
                }
                let v = c.priced(mu, pi);
                if b.is_none_or(|(bv, _)| v < bv) {
                    b = Some((v, ci as usize));
                }
            }
            *slot = b;
        }
    })
}

fn dp_over_providers(
    p: &Problem,
    g: usize,
    best: &[Option<(f64, usize)>],
) -> Option<(f64, Vec<Option<usize>>)> {
    let np = p.providers.len();
    let grp = &p.groups[g];
    let states = 1usize << np;
    let n = grp.units.len();
    let inf = f64::INFINITY;
    let mut dp = vec![inf; states];
    dp[0] = 0.0;
    let mut next = vec![inf; states];
    // back[k * states + mask] = (previous mask, provider or usize::MAX for unplaced)
    let mut back = vec![(0usize, usize::MAX); n * states];
    for (k, &u) in grp.units.iter().enumerate() {
        // Same convention as `objective`: a unit with no option costs nothing when left out.
        let pen = if p.units[u].cands.is_empty() {
            0.0
        } else {
            p.units[u].penalty
        };
        next.iter_mut().for_each(|x| *x = inf);
        let bk = &mut back[k * states..(k + 1) * states];
        for mask in 0..states {
            let v = dp[mask];
            if v == inf {
                continue;
            }
            if v + pen < next[mask] {
                next[mask] = v + pen;
                bk[mask] = (mask, usize::MAX);
            }
            for (pr, b) in best[k * np..(k + 1) * np].iter().enumerate() {
                if let Some((s, _)) = b {
                    let m2 = mask | (1 << pr);
                    if v + s < next[m2] {
                        next[m2] = v + s;
                        bk[m2] = (mask, pr);
                    }
                }
            }
        }
        std::mem::swap(&mut dp, &mut next);
    }
    let need = grp.min_providers;
    let (mut mask, val) = (0..states)
        .filter(|&m| m == 0 || (m as u64).count_ones() >= need)
        .map(|m| (m, dp[m]))
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))?;
    if val == inf {
        return None;
    }
    let mut out = vec![None; n];
    for k in (0..n).rev() {
        let (prev, pr) = back[k * states + mask];
        if pr != usize::MAX {
            out[k] = best[k * np + pr].map(|(_, c)| c);
        }
        mask = prev;
    }
    Some((val, out))
}

fn place_group(
    p: &Problem,
    g: usize,
    score: &dyn Fn(usize, usize) -> f64,
    choice: &mut Choice,
    res: &mut Residual,
) {
    let fits = |u: usize, c: usize| res.blocks(p, u, c).is_none().then(|| score(u, c));
    let plan = group_dp(p, g, &fits);
    let grp = &p.groups[g];
    for (k, &u) in grp.units.iter().enumerate() {
        let want = match &plan {
            Some((_, picks)) => picks[k],
            // Past `DP_MAX_PROVIDERS`: unit by unit, and `repair_groups` enforces the rule.
            None => cheapest_fitting(p, res, u, score),
        };
        // Units of one service may want the same offer; take it while it fits, else the
        // best candidate that still does.
        let pick = want.and_then(|w| {
            if res.blocks(p, u, w).is_none() {
                Some(w)
            } else {
                cheapest_fitting(p, res, u, score)
            }
        });
        if let Some(c) = pick {
            res.take(p, u, c);
            choice[u] = Some(c);
        }
    }
}

/// Make every redundancy group satisfied: add the cheapest moves that bring in a new
/// provider or region; if impossible, unplace the group (reason: redundancy).
pub fn repair_groups(p: &Problem, choice: &mut Choice, res: &mut Residual) {
    for g in 0..p.groups.len() {
        let mut guard = 0;
        while !group_ok(p, g, choice) && guard < 64 {
            guard += 1;
            let grp = &p.groups[g];
            let (provs, regs) = spans(p, g, choice, None);
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
                    let sharing = |same: &dyn Fn(&crate::problem::Offer) -> bool| {
                        grp.units
                            .iter()
                            .filter(|&&v| {
                                choice[v].is_some_and(|cv| {
                                    same(&p.offers[p.units[v].cands[cv].offer as usize])
                                })
                            })
                            .count()
                    };
                    let same_prov = sharing(&|x| x.provider == o.provider);
                    let same_reg = sharing(&|x| x.region == o.region);
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
            }
        }
    }
}

/// Providers and regions the placed units of group `g` span (see `group_ok_with` for `with`).
fn spans(
    p: &Problem,
    g: usize,
    choice: &Choice,
    with: Option<(usize, Option<usize>)>,
) -> (Vec<usize>, Vec<usize>) {
    let mut provs = Vec::new();
    let mut regs = Vec::new();
    for &u in &p.groups[g].units {
        let c = match with {
            Some((w, c)) if w == u => c,
            _ => choice[u],
        };
        if let Some(c) = c {
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
pub fn improve(p: &Problem, choice: &mut Choice, res: &mut Residual) {
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
                    let ok = p.units[u]
                        .group
                        .is_none_or(|g| group_ok_with(p, g, choice, Some((u, Some(ci)))));
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

/// How many cheaper, full options of a unit `eject` examines.
const EJECT_OPTIONS: usize = 3;
/// How many occupants of a full offer `eject` considers moving.
const EJECT_OCCUPANTS: usize = 24;

/// Ejection moves: a unit whose cheaper option is full takes it if one occupant of that
/// offer can move to its own best fitting alternative and the pair saves money overall.
/// Captures the trades a one-at-a-time greedy misses under contention (bounded work).
pub fn eject(p: &Problem, choice: &mut Choice, res: &mut Residual) {
    let mut at: Vec<Vec<usize>> = vec![Vec::new(); p.offers.len()];
    for (u, c) in choice.iter().enumerate() {
        if let Some(c) = c {
            at[p.units[u].cands[*c].offer as usize].push(u);
        }
    }
    let cost_of = |u: usize, c: Option<usize>| match c {
        Some(c) => p.units[u].cands[c].cost,
        None => p.units[u].penalty,
    };
    for u in 0..p.units.len() {
        if p.units[u].group.is_some() || p.units[u].cands.is_empty() {
            continue;
        }
        let cur = choice[u];
        let cur_cost = cost_of(u, cur);
        let mut tried = 0;
        for ci in 0..p.units[u].cands.len() {
            let cu = p.units[u].cands[ci];
            if cu.cost >= cur_cost - 1e-9 || tried >= EJECT_OPTIONS {
                break;
            }
            if res.blocks(p, u, ci).is_none() {
                continue; // `improve` takes free options
            }
            tried += 1;
            let b = cu.offer as usize;
            let mut best: Option<(f64, usize, usize)> = None; // (delta, v, v's new cand)
            for &v in at[b].iter().take(EJECT_OCCUPANTS) {
                if p.units[v].group.is_some() || v == u {
                    continue;
                }
                let Some(cv) = choice[v] else { continue };
                // Tentatively: v leaves b, u leaves its place and takes b.
                res.give(p, v, cv);
                if let Some(c) = cur {
                    res.give(p, u, c);
                }
                if res.blocks(p, u, ci).is_none() {
                    res.take(p, u, ci);
                    let v_cost = cost_of(v, Some(cv));
                    let alt = (0..p.units[v].cands.len())
                        .filter(|&x| p.units[v].cands[x].offer as usize != b)
                        .find(|&x| res.blocks(p, v, x).is_none());
                    let (v_new, v_new_cost) = match alt {
                        Some(x) => (x, p.units[v].cands[x].cost),
                        None => (usize::MAX, p.units[v].penalty),
                    };
                    let delta = (cu.cost - cur_cost) + (v_new_cost - v_cost);
                    if delta < -1e-9 && best.is_none_or(|(d, _, _)| delta < d) {
                        best = Some((delta, v, v_new));
                    }
                    res.give(p, u, ci);
                }
                if let Some(c) = cur {
                    res.take(p, u, c);
                }
                res.take(p, v, cv);
            }
            if let Some((_, v, v_new)) = best {
                let cv = choice[v].expect("occupant is placed");
                res.give(p, v, cv);
                at[b].retain(|&x| x != v);
                if let Some(c) = cur {
                    res.give(p, u, c);
                    at[p.units[u].cands[c].offer as usize].retain(|&x| x != u);
                }
                res.take(p, u, ci);
                choice[u] = Some(ci);
                at[b].push(u);
                if v_new == usize::MAX {
                    choice[v] = None;
                } else {
                    res.take(p, v, v_new);
                    choice[v] = Some(v_new);
                    at[p.units[v].cands[v_new].offer as usize].push(v);
                }
                break;
            }
        }
    }
}

/// Units that share an identical candidate list and penalty: the dual solves each class
/// once, and the transportation step treats it as one supply.
struct Classes {
    rep: Vec<usize>,
    mult: Vec<f64>,
    /// Class of each unit (`usize::MAX`: none, as for units without candidates and, up to
    /// `DP_MAX_PROVIDERS` providers, units of a redundancy group).
    of: Vec<usize>,
}

/// Everything the dual and the transportation step read of a unit, as words: penalty,
/// floor, whether it is in a service, and per candidate its chips, offers, nodes, cost and
/// watts. Units with equal words are interchangeable.
fn class_words(u: &crate::problem::Unit) -> impl Iterator<Item = u64> + '_ {
    let head = [
        u.penalty.to_bits(),
        u.tail_floor.to_bits(),
        u.group.is_some() as u64,
    ];
    head.into_iter().chain(u.cands.iter().flat_map(|c| {
        [
            c.chips as u64,
            c.offer as u64 | ((c.nodes as u64) << 32),
            c.offer2 as u64 | ((c.nodes2 as u64) << 32),
            c.cost.to_bits(),
            c.watts.to_bits(),
        ]
    }))
}

fn classes(p: &Problem) -> Classes {
    // Units are bucketed by a fingerprint of their words, then compared word for word with
    // the bucket's representatives, so a fingerprint collision never merges different units.
    let mut map: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut rep = Vec::new();
    let mut mult = Vec::new();
    let mut of = vec![usize::MAX; p.units.len()];
    for (ui, u) in p.units.iter().enumerate() {
        if u.cands.is_empty() {
            continue; // contributes nothing to the objective (see `objective`)
        }
        if u.group.is_some() && p.providers.len() <= DP_MAX_PROVIDERS {
            continue; // solved per group by `group_dp`
        }
        let mut h = Fingerprint::default();
        class_words(u).for_each(|w| h.eat(w));
        let bucket = map.entry(h.0).or_default();
        let same = |k: &&usize| class_words(&p.units[rep[**k]]).eq(class_words(u));
        match bucket.iter().find(same) {
            Some(&k) => {
                mult[k] += 1.0;
                of[ui] = k;
            }
            None => {
                of[ui] = rep.len();
                bucket.push(rep.len());
                rep.push(ui);
                mult.push(1.0);
            }
        }
    }
    Classes { rep, mult, of }
}

/// A fast multiplicative hash of 64-bit words (not DoS-resistant; nothing here is
/// adversarial, and `classes` checks every match in full).
#[derive(Default)]
struct Fingerprint(u64);

impl Fingerprint {
    fn eat(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Candidates of a class that enter the transportation relaxation (the cheapest; the rest are
/// summarised by their floor). Half the default candidate list: on the 10,000-workload bench
/// the bound is 0.1 % lower than with all 256 and the flow is solved in about half the time.
const TRANSPORT_CLASS_CANDIDATES: usize = 128;
/// Candidates of a redundancy group's unit that enter the transportation relaxation; the
/// rest are summarised by their floor (services are a small share of the chips, and their
/// exact rule is restored by the per-group programme of the dual and of the plan). Past
/// `DP_MAX_PROVIDERS` such units are in classes and get `TRANSPORT_CLASS_CANDIDATES`.
const TRANSPORT_GROUP_CANDIDATES: usize = 4;
/// $/h to integer flow cost: 10⁻⁵ $ per chip-hour resolution.
const TRANSPORT_SCALE: f64 = 1e5;

/// One supply of the transportation network: `count` units of `unit`'s kind (a class's
/// representative, or one service unit), offered their `keep` cheapest candidates.
struct Source {
    unit: usize,
    count: i64,
    keep: usize,
}

/// The transportation network, solved: sources supply chips to offers, each offer passes up
/// to `chips_left[o]` chips on to the sink (through its region's node where `power_chips`
/// caps the region), and a floor arc per source takes what goes unplaced, or to a candidate
/// beyond `keep`, at the cheapest such cost. Node counts and arc order depend only on the
/// inputs, so the result is deterministic.
struct TransportFlow {
    flow: flow::Flow,
    /// Per source: (candidate, arc) of each candidate arc.
    arcs: Vec<Vec<(usize, usize)>>,
    first_offer: usize,
    sink: usize,
}

fn transport_flow(
    p: &Problem,
    sources: &[Source],
    chips_left: &[i64],
    power_chips: &[Option<i64>],
) -> Option<TransportFlow> {
    let first_offer = sources.len();
    let first_region = first_offer + p.offers.len();
    let sink = first_region + p.region_cap_watts.len();
    let mut net = flow::Network::new(sink + 1);
    // Clamped so that no cost, however absurd a priority makes a penalty, overflows the
    // network simplex's arithmetic ($10⁷ per chip-hour is above any price).
    let per_chip = |v: f64, chips: u32| {
        (v / chips.max(1) as f64 * TRANSPORT_SCALE)
            .clamp(-1e12, 1e12)
            .round() as i64
    };
    let mut total = 0i64;
    let mut arcs = Vec::with_capacity(sources.len());
    for (node, src) in sources.iter().enumerate() {
        let unit = &p.units[src.unit];
        let chips = unit.cands[0].chips.max(1);
        let supply = chips as i64 * src.count;
        net.set_supply(node, supply);
        total += supply;
        let mut floor = unit.penalty.min(unit.tail_floor);
        let mut mine = Vec::new();
        for (ci, c) in unit.cands.iter().enumerate() {
            if ci >= src.keep {
                floor = floor.min(c.cost);
                break;
            }
            let to = first_offer + c.offer as usize;
            mine.push((
                ci,
                net.add_arc(node, to, flow::INF, per_chip(c.cost, chips)),
            ));
        }
        net.add_arc(node, sink, flow::INF, per_chip(floor, chips));
        arcs.push(mine);
    }
    for (o, off) in p.offers.iter().enumerate() {
        let to = match power_chips[off.region] {
            Some(_) => first_region + off.region,
            None => sink,
        };
        net.add_arc(first_offer + o, to, chips_left[o], 0);
    }
    for (r, cap) in power_chips.iter().enumerate() {
        if let Some(chips) = *cap {
            net.add_arc(first_region + r, sink, chips, 0);
        }
    }
    net.set_supply(sink, -total);
    Some(TransportFlow {
        flow: net.solve()?,
        arcs,
        first_offer,
        sink,
    })
}

/// Prices per node of every offer from the transportation relaxation: each class (and each
/// unit of a redundancy group) supplies its chips, each offer absorbs up to its capacity in
/// chips, and leaving a unit out (or taking a trimmed candidate) costs its floor. It drops
/// power caps, redundancy and node rounding, so it is not itself the bound; its potentials
/// are where the dual starts. `None` only if the network simplex refuses the costs.
fn transport_prices(p: &Problem, cls: &Classes) -> Option<Vec<f64>> {
    let classes = cls.rep.iter().zip(&cls.mult).map(|(&u, &m)| Source {
        unit: u,
        count: m as i64,
        keep: TRANSPORT_CLASS_CANDIDATES,
    });
    let singles = (0..p.units.len())
        .filter(|&u| cls.of[u] == usize::MAX && !p.units[u].cands.is_empty())
        .map(|u| Source {
            unit: u,
            count: 1,
            keep: TRANSPORT_GROUP_CANDIDATES,
        });
    let sources: Vec<Source> = classes.chain(singles).collect();
    let chips: Vec<i64> = p
        .offers
        .iter()
        .map(|o| o.capacity_nodes as i64 * o.chips_per_node as i64)
        .collect();
    let t = transport_flow(p, &sources, &chips, &vec![None; p.region_cap_watts.len()])?;
    let pot = &t.flow.potential;
    Some(
        p.offers
            .iter()
            .enumerate()
            .map(|(o, off)| {
                // Offer → sink has reduced cost π[o] − π[sink] ≤ 0 when full: minus that is
                // its price per chip.
                let per_chip = (pot[t.sink] - pot[t.first_offer + o]).max(0) as f64;
                per_chip / TRANSPORT_SCALE * off.chips_per_node as f64
            })
            .collect(),
    )
}

/// How many units of each class the transportation flow sends to each candidate, over what
/// `left` holds once the services are placed: per class, (candidate, units) in candidate
/// order. Regions whose power could run out get a cap in chips: their watts over the most
/// power-hungry chip among their offers, a conservative conversion (exact where a region has
/// one kind of chip). Classes of service units (past `DP_MAX_PROVIDERS`) are placed already
/// and supply nothing.
fn transport_quota(p: &Problem, cls: &Classes, left: &Residual) -> Option<Vec<Vec<(usize, u32)>>> {
    let sources: Vec<Source> = cls
        .rep
        .iter()
        .zip(&cls.mult)
        .map(|(&u, &m)| Source {
            unit: u,
            count: if p.units[u].group.is_some() {
                0
            } else {
                m as i64
            },
            keep: TRANSPORT_CLASS_CANDIDATES,
        })
        .collect();
    let nr = p.region_cap_watts.len();
    let chips: Vec<i64> = p
        .offers
        .iter()
        .enumerate()
        .map(|(o, off)| left.nodes[o].max(0) * off.chips_per_node as i64)
        .collect();
    let mut region_chips = vec![0i64; nr];
    let mut watts_per_chip = vec![0.0f64; nr];
    for (o, off) in p.offers.iter().enumerate() {
        region_chips[off.region] += chips[o];
        let w = off.node_facility_watts / off.chips_per_node.max(1) as f64;
        watts_per_chip[off.region] = watts_per_chip[off.region].max(w);
    }
    let power_chips: Vec<Option<i64>> = (0..nr)
        .map(|r| {
            let cap = (left.watts[r].max(0.0) / watts_per_chip[r].max(1e-9)).floor() as i64;
            (cap < region_chips[r]).then_some(cap)
        })
        .collect();
    let t = transport_flow(p, &sources, &chips, &power_chips)?;
    Some(
        t.arcs
            .iter()
            .zip(&sources)
            .map(|(arcs, src)| {
                let chips = p.units[src.unit].cands[0].chips.max(1) as i64;
                arcs.iter()
                    .filter(|&&(_, e)| t.flow.flow[e] >= chips)
                    .map(|&(ci, e)| (ci, (t.flow.flow[e] / chips) as u32))
                    .collect()
            })
            .collect(),
    )
}

/// The plan the transportation flow suggests: services are placed whole by their per-group
/// programme under `score`, in `order`; then each class's units go, in `order`, where the
/// quota flow over what the services left sends them, while they fit; whatever is left
/// takes its cheapest fitting candidate under `score`.
fn follow_transport(
    p: &Problem,
    cls: &Classes,
    order: &[usize],
    score: &dyn Fn(usize, usize) -> f64,
) -> (Choice, Residual) {
    let mut res = Residual::new(p);
    let mut choice: Choice = vec![None; p.units.len()];
    let mut group_done = vec![false; p.groups.len()];
    let services: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&u| p.units[u].group.is_some())
        .collect();
    fill(
        p,
        &services,
        score,
        &mut group_done,
        (&mut choice, &mut res),
    );
    // Without a flow (costs the network simplex refuses), every unit takes the greedy below.
    let mut quota = transport_quota(p, cls, &res).unwrap_or_default();
    for &u in order {
        let k = cls.of[u];
        if k >= quota.len() || choice[u].is_some() {
            continue;
        }
        for q in quota[k].iter_mut() {
            if q.1 > 0 && res.blocks(p, u, q.0).is_none() {
                q.1 -= 1;
                res.take(p, u, q.0);
                choice[u] = Some(q.0);
                break;
            }
        }
    }
    fill(p, order, score, &mut group_done, (&mut choice, &mut res));
    repair_groups(p, &mut choice, &mut res);
    (choice, res)
}

/// Candidate evaluations the dual may spend beyond its minimum iterations.
const DUAL_BUDGET: usize = 40_000_000;
/// Iterations without improvement before the step shrinks.
const HALVE_AFTER: usize = 10;

/// Candidate count from which the dual runs its two halves on two threads.
const THREADED_CANDIDATES: usize = 200_000;

/// Where the dual's work is cut in two: classes and groups in order, halved by candidates.
#[derive(Clone, Copy)]
struct Split {
    /// Work items `0..classes` are classes, the rest groups; the second half starts here.
    at: usize,
    /// Whether the halves are worth a thread each (small problems lose more to spawning).
    threaded: bool,
}

impl Split {
    fn new(p: &Problem, cls: &Classes) -> Split {
        let weights: Vec<usize> = cls
            .rep
            .iter()
            .map(|&u| p.units[u].cands.len())
            .chain(p.groups.iter().map(|g| {
                g.units
                    .iter()
                    .map(|&u| p.units[u].cands.len())
                    .sum::<usize>()
            }))
            .collect();
        let total: usize = weights.iter().sum();
        let mut acc = 0;
        let at = weights
            .iter()
            .position(|w| {
                acc += w;
                acc * 2 >= total
            })
            .map_or(weights.len(), |i| i + 1);
        Split {
            at,
            threaded: total >= THREADED_CANDIDATES,
        }
    }
}

/// Value of the relaxed subproblems of one half of the work items; their usage per offer
/// (nodes) and per region (MW) is written into the given buffers.
#[allow(clippy::too_many_arguments)]
fn relaxed_part(
    p: &Problem,
    cls: &Classes,
    lists: &ProviderLists,
    mu: &[f64],
    pi: &[f64],
    split: Split,
    second: bool,
    (use_nodes, use_mw): (&mut [f64], &mut [f64]),
) -> f64 {
    use_nodes.fill(0.0);
    use_mw.fill(0.0);
    let mut l = 0.0;
    let nc = cls.rep.len();
    let items = nc + p.groups.len();
    let range = if second { split.at..items } else { 0..split.at };
    for item in range {
        if item < nc {
            let k = item;
            let unit = &p.units[cls.rep[k]];
            // The cut tail is represented by its floor, with no usage: a valid relaxation.
            let mut bv = unit.penalty.min(unit.tail_floor);
            let mut bc = usize::MAX;
            for (ci, c) in unit.cands.iter().enumerate() {
                if c.cost >= bv {
                    break; // prices only add: a candidate whose own cost exceeds the best cannot win
                }
                let v = c.priced(mu, pi);
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
                use_nodes[c.offer2 as usize] += m * c.nodes2 as f64;
                use_mw[c.region as usize] += m * c.mw;
            }
        } else {
            // Redundancy groups: exact per group under the current prices.
            let g = item - nc;
            if let Some((v, picks)) = group_dp_priced(p, g, mu, pi, lists) {
                l += v;
                for (k, pick) in picks.iter().enumerate() {
                    if let Some(ci) = pick.filter(|&ci| ci != usize::MAX) {
                        let c = &p.units[p.groups[g].units[k]].cands[ci];
                        use_nodes[c.offer as usize] += c.nodes as f64;
                        use_nodes[c.offer2 as usize] += c.nodes2 as f64;
                        use_mw[c.region as usize] += c.mw;
                    }
                }
            }
        }
    }
    l
}

/// Lagrangian dual of capacity and power, maximised by projected subgradient steps from the
/// given prices: the best value found, a lower bound. Power is dualised per MW to keep both
/// subgradients on comparable scales.
fn dual(
    p: &Problem,
    iters: usize,
    mut upper: f64,
    cls: &Classes,
    lists: &ProviderLists,
    (mu0, pi0): (Vec<f64>, Vec<f64>),
) -> f64 {
    let no = p.offers.len();
    let nr = p.region_cap_watts.len();
    let mut mu = mu0;
    let mut pi = pi0;
    let mut best = f64::NEG_INFINITY;
    // Started from the transportation prices, the dual is already close to its optimum:
    // short steps refine it where long ones would throw it away.
    let mut theta: f64 = 0.02;
    let mut since = 0;
    let mut use_nodes = vec![0.0f64; no];
    let mut use_mw = vec![0.0f64; nr];
    let split = Split::new(p, cls);
    // Per-half usage buffers, reused across iterations.
    let mut half_a = (vec![0.0f64; no], vec![0.0f64; nr]);
    let mut half_b = (vec![0.0f64; no], vec![0.0f64; nr]);
    for _ in 0..iters {
        // The relaxed subproblems are independent: two halves on two threads, combined in a
        // fixed order so the result does not depend on scheduling.
        let (mu_r, pi_r) = (&mu, &pi);
        let half = |second: bool, buf: &mut (Vec<f64>, Vec<f64>)| {
            let (nodes, mw) = buf;
            relaxed_part(p, cls, lists, mu_r, pi_r, split, second, (nodes, mw))
        };
        let (ua, ub) = (&mut half_a, &mut half_b);
        let (la, lb) = if split.threaded {
            std::thread::scope(|sc| {
                let b = sc.spawn(|| half(true, ub));
                let a = half(false, ua);
                (a, b.join().expect("dual worker"))
            })
        } else {
            (half(false, ua), half(true, ub))
        };
        let mut l = la + lb;
        for o in 0..no {
            use_nodes[o] = half_a.0[o] + half_b.0[o];
        }
        for r in 0..nr {
            use_mw[r] = half_a.1[r] + half_b.1[r];
        }
        for o in 0..no {
            l -= mu[o] * p.offers[o].capacity_nodes as f64;
        }
        for r in 0..nr {
            l -= pi[r] * p.region_cap_watts[r] / 1e6;
        }
        if best == f64::NEG_INFINITY || l > best + 1e-9 * best.abs().max(1.0) {
            best = l;
            since = 0;
        } else {
            since += 1;
            if since >= HALVE_AFTER {
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
    best
}

/// The plain relaxation bound (every unit at its cheapest option, services at their cheapest
/// redundant layout, capacity ignored): weak but valid and cheap, for plans that compute no
/// better bound.
pub fn relaxation_bound(p: &Problem) -> f64 {
    let cls = classes(p);
    let lists = ProviderLists::new(p);
    let zero = (
        vec![0.0; p.offers.len()],
        vec![0.0; p.region_cap_watts.len()],
    );
    dual(p, 1, f64::INFINITY, &cls, &lists, zero)
}

/// The baseline's choice: arrival order, each unit to its cheapest (in dollars) candidate
/// that still fits, failing over to the next cheapest; redundancy repaired afterwards.
pub fn cheapest_first(p: &Problem) -> (Choice, Residual) {
    let mut order: Vec<usize> = (0..p.units.len()).collect();
    order.sort_by_key(|&u| (p.units[u].arrival, u));
    let dollars = |u: usize, c: usize| p.units[u].cands[c].dollars;
    greedy(p, &order, &dollars)
}

/// Heuristic solve with a Lagrangian lower bound.
///
/// 1. The transportation relaxation (`transport`) prices every offer exactly for its model.
/// 2. The plan follows it: services whole under those prices, then each class's units where a
///    second flow over what the services left (power caps included) sends them; local search
///    and ejections polish it.
/// 3. The Lagrangian dual, started from those prices (where it is already close to its
///    optimum, so with short steps), adds power and redundancy and gives the proven bound.
pub fn solve_lagrangian(p: &Problem, iters: usize) -> Solved {
    let n = p.units.len();
    // Order: priority first, then the biggest (hardest to fit) units.
    let mut order: Vec<usize> = (0..n).collect();
    let size = |u: usize| p.units[u].cands.first().map(|c| c.dollars).unwrap_or(0.0);
    order.sort_by(|&a, &b| {
        p.units[b]
            .priority
            .cmp(&p.units[a].priority)
            .then(size(b).total_cmp(&size(a)))
            .then(a.cmp(&b))
    });
    let cls = classes(p);
    let lists = ProviderLists::new(p);
    let nr = p.region_cap_watts.len();
    // The floor arcs make the relaxation always feasible; zero prices are the fallback for
    // costs the network simplex refuses.
    let mu0 = transport_prices(p, &cls).unwrap_or_else(|| vec![0.0; p.offers.len()]);
    // Power is unpriced at the start: the dual's steps price the regions that bind.
    let pi0 = vec![0.0; nr];
    let priced0 = |u: usize, c: usize| p.units[u].cands[c].priced(&mu0, &pi0);
    let (mut choice, mut res) = follow_transport(p, &cls, &order, &priced0);
    improve(p, &mut choice, &mut res);
    eject(p, &mut choice, &mut res);
    improve(p, &mut choice, &mut res);
    let mut obj = objective(p, &choice);
    // The baseline's plan, polished, is one more start: stratus never does worse than it.
    let (mut base, mut base_res) = cheapest_first(p);
    improve(p, &mut base, &mut base_res);
    let base_obj = objective(p, &base);
    if base_obj < obj - 1e-9 {
        (choice, obj) = (base, base_obj);
    }
    // Small problems can afford more dual iterations: scale with the work per iteration,
    // deterministically (from the problem's size, never from a clock).
    let cands: usize = p.units.iter().map(|u| u.cands.len()).sum();
    // At least one iteration: the first evaluates the dual at the transportation prices.
    let iters = (DUAL_BUDGET / cands.max(1)).clamp(iters, 8 * iters).max(1);
    let lb = dual(p, iters, obj, &cls, &lists, (mu0, pi0));
    Solved {
        choice,
        objective: obj,
        lower_bound: lb.min(obj),
        method: format!(
            "transportation relaxation ({} classes) + Lagrangian bound + local search",
            cls.rep.len()
        ),
    }
}
