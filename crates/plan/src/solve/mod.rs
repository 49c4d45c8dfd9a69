//! Selection: choose one candidate (or none) per unit.
//!
//! * Small problems: exact MILP (microlp, under a node limit), so the result is provably optimal.
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

use crate::problem::{Constraint, Problem};

mod construct;
mod dual;
#[cfg(test)]
mod fixtures;
mod groups;
mod knapsack;
mod lns;
mod local;
mod lp;
mod milp;
mod packing;
mod transport;

use construct::fill;
pub use construct::{cheapest_first, greedy, repair_groups, stay};
pub use dual::relaxation_bound;
use dual::{dual, DUAL_BUDGET};
pub use groups::{group_dp, ProviderLists};
use groups::{group_dp_priced, group_exact_priced, DP_MAX_PROVIDERS};
pub use local::{eject, improve};
use transport::{
    classes, follow_transport, transport_relaxations, Classes, PARALLEL_MIN_CANDIDATES,
};

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
    /// Which relaxation gave the lower bound.
    pub bound_by: &'static str,
    /// Whether an [`Interrupt`](crate::interrupt::Interrupt) stopped the search before its
    /// budget ran out.
    pub stopped_early: bool,
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

/// Fixed-point steps per watt in `Residual`: 2^-24 W, exact integer sums up to 5.5e11 W.
const WATT_STEPS: f64 = (1u64 << 24) as f64;

/// Watts in `Residual`'s fixed point.
fn fixed(w: f64) -> i64 {
    // Truncated (one instruction; `round` is a library call in these hot loops), the same
    // for the same draw every time, which is all exactness needs. `as` saturates: an
    // unbounded cap stays the largest value.
    (w * WATT_STEPS) as i64
}

/// Residual capacity tracker: nodes per offer and facility watts per region.
///
/// Watts are kept in fixed point (`WATT_STEPS`), so taking an option and giving it back leaves
/// a region's power exactly where it was. In floating point the trials the search undoes left
/// rounding behind, and the plan depended on how many it tried: on a contended
/// 10,000-workload set, 1.6 % of the objective from a difference of 6e-8 W.
#[derive(Debug, Clone, PartialEq)]
pub struct Residual {
    /// Nodes left per offer.
    pub nodes: Vec<i64>,
    /// Watts left per region, in steps of 1/`WATT_STEPS` W (read with `watts`).
    watts: Vec<i64>,
}

impl Residual {
    /// Full capacity.
    pub fn new(p: &Problem) -> Residual {
        Residual {
            nodes: p.offers.iter().map(|o| o.capacity_nodes as i64).collect(),
            watts: p.region_cap_watts.iter().map(|&w| fixed(w)).collect(),
        }
    }
    /// Watts left in region `r`.
    pub fn watts(&self, r: usize) -> f64 {
        self.watts[r] as f64 / WATT_STEPS
    }
    /// Whether a candidate fits; `None` if it does, else the binding constraint.
    pub fn blocks(&self, p: &Problem, u: usize, c: usize) -> Option<Constraint> {
        let cand = &p.units[u].cands[c];
        let o = &p.offers[cand.offer as usize];
        let short2 = cand.nodes2 > 0 && (cand.nodes2 as i64) > self.nodes[cand.offer2 as usize];
        if (cand.nodes as i64) > self.nodes[cand.offer as usize] || short2 {
            Some(Constraint::Capacity)
        } else if fixed(cand.watts) > self.watts[o.region].saturating_add(fixed(1e-6)) {
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
        let r = p.offers[cand.offer as usize].region;
        self.watts[r] = self.watts[r].saturating_sub(fixed(cand.watts));
    }
    /// Give them back.
    pub fn give(&mut self, p: &Problem, u: usize, c: usize) {
        let cand = &p.units[u].cands[c];
        self.nodes[cand.offer as usize] += cand.nodes as i64;
        self.nodes[cand.offer2 as usize] += cand.nodes2 as i64;
        let r = p.offers[cand.offer as usize].region;
        self.watts[r] = self.watts[r].saturating_add(fixed(cand.watts));
    }
}

/// What unit `u` adds to the objective with choice `c`: its option's cost, its penalty when
/// left out, nothing when no option could take it (the same under every plan).
pub(crate) fn unit_cost(p: &Problem, u: usize, c: Option<usize>) -> f64 {
    let unit = &p.units[u];
    match c {
        Some(c) => unit.cands[c].cost,
        None if unit.cands.is_empty() => 0.0,
        None => unit.penalty,
    }
}

/// Units placed on each offer (a blend counts on both of its offers).
pub(crate) fn occupants(p: &Problem, choice: &Choice) -> Vec<Vec<usize>> {
    let mut at = vec![Vec::new(); p.offers.len()];
    for (u, c) in choice.iter().enumerate() {
        if let Some(c) = c {
            let cand = &p.units[u].cands[*c];
            at[cand.offer as usize].push(u);
            if cand.nodes2 > 0 {
                at[cand.offer2 as usize].push(u);
            }
        }
    }
    at
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

/// Providers and regions the placed units of group `g` span (see `group_ok_with` for `with`).
pub(crate) fn spans(
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

/// Candidate rows the LP relaxation's prices are computed exactly for (by row generation);
/// past this the capacity dual's steps stand in for them.
const LP_MAX_CANDIDATES: usize = 100_000;
/// Rounds of row generation at most.
const LP_ROUNDS: usize = 30;
/// Knapsack cells the packing dual may update per unit of the budget.
const PACKING_WORK_PER_UNIT: u64 = 300;
/// Candidate pairs past which the packing dual is not run: on the generated and contended
/// sets of 10,000 workloads (2 million pairs) it took 0.5 s and never raised the bound.
const PACKING_MAX_CANDIDATES: usize = 1_000_000;
/// The packing dual runs only when the plan is farther than this from the bound (relative):
/// closer, the bound already says the plan is good.
const PACKING_GAP: f64 = 1e-3;
/// A plan this close to the bound (relative) is not searched further.
const CLOSE: f64 = 1e-4;

/// Bound source: the Lagrangian dual of capacity and power, by subgradient steps.
pub const BY_CAPACITY_DUAL: &str = "lagrangian dual of capacity and power";
/// Bound source: the same dual at the LP relaxation's optimal prices (so at least the LP's
/// value: the subproblems it leaves are solved in integers).
pub const BY_LP_PRICES: &str = "lagrangian dual at the lp relaxation's prices (>= lp relaxation)";
/// Bound source: as above, each service's subproblem solved exactly with both rules.
pub const BY_EXACT_GROUPS: &str =
    "lagrangian dual with exact service subproblems (>= lp relaxation when it was solved)";
/// Bound source: the packing dual, which keeps each offer's integer knapsack.
pub const BY_PACKING: &str = "packing dual (capacity knapsacks kept)";

/// Heuristic solve with a Lagrangian lower bound.
///
/// 1. Prices: the transportation relaxation (`transport`) prices every offer; the capacity
///    dual refines them (and power's); on small problems the LP relaxation's exact prices
///    (`lp`) replace them when they bound better.
/// 2. Plans: one follows the transportation flow, one is a greedy under the refined prices,
///    one is the baseline's, one is the plan in force (`stay`, when there is one); each is
///    polished by local search and ejections, and the best is
///    re-optimised by neighbourhoods (`lns`) within `budget`.
/// 3. The bound: the better of the capacity dual and the packing dual (`packing`) started
///    from the best prices, which keeps each offer's integer knapsack.
pub fn solve_lagrangian(p: &Problem, iters: usize, budget: u64) -> Solved {
    solve_lagrangian_until(p, iters, budget, &crate::interrupt::Never)
}

/// [`solve_lagrangian`], asking `interrupt` between steps whether to stop early (see
/// [`crate::interrupt`]).
pub fn solve_lagrangian_until(
    p: &Problem,
    iters: usize,
    budget: u64,
    interrupt: &dyn crate::interrupt::Interrupt,
) -> Solved {
    let watch = &crate::interrupt::Watch::new(interrupt);
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
    let cands: usize = p.units.iter().map(|u| u.cands.len()).sum();
    let (mu0, quota) = transport_relaxations(p, &cls, cands >= PARALLEL_MIN_CANDIDATES);
    let mu0 = mu0.unwrap_or_else(|| vec![0.0; p.offers.len()]);
    // Power is unpriced at the start: the dual's steps price the regions that bind.
    let pi0 = vec![0.0; nr];
    let priced0 = |u: usize, c: usize| p.units[u].cands[c].priced(&mu0, &pi0);
    let (followed, flow_prices) = follow_transport(p, &cls, &order, &priced0, quota);
    let mut plans: Vec<(Choice, Residual)> = vec![followed];
    // The baseline's plan is one more start: stratus never does worse than it.
    plans.push(cheapest_first(p));
    // So is the plan in force: a re-plan never ends worse than staying put.
    if p.units.iter().any(|u| u.previous.is_some()) {
        plans.push(stay(p, &order));
    }
    let (mu0, pi0) = dual_start(p, &cls, &lists, (mu0, pi0), flow_prices);
    // Small problems can afford more dual iterations: scale with the work per iteration,
    // deterministically (from the problem's size, never from a clock).
    // At least one iteration: the first evaluates the dual at the transportation prices.
    let iters = (DUAL_BUDGET / cands.max(1)).clamp(iters, 8 * iters).max(1);
    let upper0 = plans
        .iter()
        .map(|(c, _)| objective(p, c))
        .fold(f64::INFINITY, f64::min);
    let (mut lb, mut mu, mut pi) = dual(p, iters, upper0, &cls, &lists, (mu0, pi0));
    let mut bound_by = BY_CAPACITY_DUAL;
    let ents = packing::Entities::new(p, &cls);
    if budget > 0 && cands <= LP_MAX_CANDIDATES && upper0 - lb > CLOSE * lb.abs() && !watch.stop() {
        let got = lp::prices(p, &ents, LP_ROUNDS, watch);
        if let Some((m, q, _)) = got {
            let l = with_exact_groups(p, &cls, &lists, &m, &q);
            if l > lb {
                (lb, mu, pi) = (l, m, q);
                bound_by = BY_LP_PRICES;
            }
        }
    }
    let priced = |u: usize, c: usize| p.units[u].cands[c].priced(&mu, &pi);
    plans.push(greedy(p, &order, &priced));
    let polish = |(mut c, mut r): (Choice, Residual)| {
        improve(p, &mut c, &mut r);
        eject(p, &mut c, &mut r);
        improve(p, &mut c, &mut r);
        (c, r)
    };
    let better = |a: (Choice, Residual), b: (Choice, Residual)| {
        // Ties keep the earlier plan.
        if objective(p, &b.0) < objective(p, &a.0) {
            b
        } else {
            a
        }
    };
    let (mut choice, mut res) = plans
        .into_iter()
        .map(polish)
        .reduce(better)
        .expect("at least three starts");
    if budget > 0 && !watch.stop() {
        // Under scarcity what is left out dominates the objective: when the best start
        // leaves out a unit that has options, two more starts place the units worth most
        // first, by penalty and by penalty per chip (a service counts whole).
        if (0..n).any(|u| choice[u].is_none() && !p.units[u].cands.is_empty()) {
            let cost = |u: usize, c: usize| p.units[u].cands[c].cost;
            // Polished once more: one pass of `eject` is not a fixpoint, and a second finds
            // more (on one 300-workload set, 3 more units placed).
            (choice, res) = polish((choice, res));
            for per_chip in [false, true] {
                let key = worth(p, per_chip);
                let mut o: Vec<usize> = (0..n).collect();
                o.sort_by(|&a, &b| key[b].total_cmp(&key[a]).then(a.cmp(&b)));
                (choice, res) = better((choice, res), polish(greedy(p, &o, &cost)));
            }
        }
        // Chains of moves that make room for what is left out, before and after the search
        // (each within `budget` of its own unit, candidates examined).
        local::relocate(p, &mut choice, &mut res, budget, watch);
        improve(p, &mut choice, &mut res);
        let floor = lb + CLOSE * lb.abs();
        lns::search(p, &cls, &mut choice, &mut res, budget, floor, watch);
        local::relocate(p, &mut choice, &mut res, budget, watch);
        improve(p, &mut choice, &mut res);
        // A last pass with chains a level deeper: it only lowers the objective from here.
        local::relocate_deeper(p, &mut choice, &mut res, budget, watch);
        improve(p, &mut choice, &mut res);
        // Then trades of one unit for several (or several for one) around what is still out.
        if lns::trade(p, &cls, &mut choice, &mut res, budget, floor, watch) > 0 {
            improve(p, &mut choice, &mut res);
        }
    }
    let obj = objective(p, &choice);
    if budget > 0 && cands <= LP_MAX_CANDIDATES && !watch.stop() {
        let l = with_exact_groups(p, &cls, &lists, &mu, &pi);
        if l > lb {
            lb = l;
            bound_by = BY_EXACT_GROUPS;
        }
    }
    if budget > 0
        && cands <= PACKING_MAX_CANDIDATES
        && obj - lb > PACKING_GAP * lb.abs().max(1.0)
        && !watch.stop()
    {
        let lambda = packing::start(p, &ents, &mu, &pi);
        let work = budget.saturating_mul(PACKING_WORK_PER_UNIT);
        let (packed, _, _) = packing::ascend(p, &ents, lambda, pi, obj, work, watch);
        if packed > lb {
            lb = packed;
            bound_by = BY_PACKING;
        }
    }
    Solved {
        choice,
        objective: obj,
        lower_bound: lb.min(obj),
        bound_by,
        method: format!(
            "transportation relaxation ({} classes) + Lagrangian and packing bounds + neighbourhood search",
            cls.rep.len()
        ),
        stopped_early: watch.fired(),
    }
}

/// Where the capacity dual starts: the transportation relaxation's prices, power unpriced
/// (`start`), or, when the quota flow (which caps power, conservatively, in chips) priced some
/// region, a blend of the two, whichever bounds best there. Starting with the binding regions
/// priced matters: the dual's steps move power prices slowly (on a 10,000-workload contended
/// set, 40 steps from the flow's prices end 44 % higher than from unpriced power), but the
/// quota flow's conversion to chips overstates power on other sets, so each start is
/// evaluated (one dual evaluation each) and the best kept; ties keep `start`.
fn dual_start(
    p: &Problem,
    cls: &Classes,
    lists: &ProviderLists,
    start: (Vec<f64>, Vec<f64>),
    flow: Option<(Vec<f64>, Vec<f64>)>,
) -> (Vec<f64>, Vec<f64>) {
    let Some((mu_f, pi_f)) = flow.filter(|(_, pi)| pi.iter().any(|&x| x > 0.0)) else {
        return start;
    };
    let value = |s: &(Vec<f64>, Vec<f64>)| dual(p, 1, f64::INFINITY, cls, lists, s.clone()).0;
    let mut best = value(&start);
    let mut chosen = start.clone();
    for theta in [1.0, 0.5, 0.25] {
        let pi: Vec<f64> = pi_f.iter().map(|x| x * theta).collect();
        for mu in [&mu_f, &start.0] {
            let s = (mu.clone(), pi.clone());
            let v = value(&s);
            if v > best {
                best = v;
                chosen = s;
            }
        }
    }
    chosen
}

/// What each unit is worth placing, to order the penalty-first starts: its penalty, or with
/// `per_chip` its penalty per chip of its smallest option; a service's units all take the
/// service's whole (penalties summed, over chips summed).
fn worth(p: &Problem, per_chip: bool) -> Vec<f64> {
    let chips = |u: usize| {
        if per_chip {
            p.units[u]
                .cands
                .iter()
                .map(|c| c.chips)
                .min()
                .unwrap_or(0)
                .max(1) as f64
        } else {
            1.0
        }
    };
    let whole: Vec<f64> = p
        .groups
        .iter()
        .map(|g| {
            let pen: f64 = g.units.iter().map(|&u| p.units[u].penalty).sum();
            let size: f64 = g.units.iter().map(|&u| chips(u)).sum();
            if per_chip {
                pen / size
            } else {
                pen
            }
        })
        .collect();
    (0..p.units.len())
        .map(|u| {
            p.units[u]
                .group
                .map_or(p.units[u].penalty / chips(u), |g| whole[g])
        })
        .collect()
}

/// The capacity dual's bound at `(mu, pi)` with each service's subproblem solved exactly
/// (both redundancy rules) where the provider programme relaxes its region rule.
fn with_exact_groups(
    p: &Problem,
    cls: &Classes,
    lists: &ProviderLists,
    mu: &[f64],
    pi: &[f64],
) -> f64 {
    let (mut l, _, _) = dual(p, 1, f64::INFINITY, cls, lists, (mu.to_vec(), pi.to_vec()));
    for g in 0..p.groups.len() {
        let relaxed = group_dp_priced(p, g, mu, pi, lists).map(|(v, _)| v);
        if let (Some(relaxed), Some(exact)) = (relaxed, group_exact_priced(p, g, mu, pi)) {
            l += (exact - relaxed).max(0.0);
        }
    }
    l
}

/// Tests: the candidate of unit `u` on pool `pool` alone (not a blend).
#[cfg(test)]
fn cand_on(p: &Problem, u: usize, pool: &str) -> usize {
    p.units[u]
        .cands
        .iter()
        .position(|c| p.offers[c.offer as usize].pool_id == pool && c.nodes2 == 0)
        .unwrap_or_else(|| panic!("unit {u} has no candidate on pool {pool}"))
}

#[cfg(test)]
mod tests {
    use super::fixtures::{fleet, gang, pool, region};
    use super::transport::transport_prices;
    use super::*;
    use crate::problem::compile;
    use crate::Policy;
    use stratus_model::WorkloadSet;

    /// Ten one-node gangs; region `a` has a cheap pool of 8 nodes, region `b` a dear one of 8,
    /// and `a`'s power is capped at `a_nodes` nodes' worth.
    pub(super) fn power_bound(a_nodes: Option<f64>) -> Problem {
        let w = WorkloadSet {
            training: (0..10).map(|i| gang(&format!("g{i}"), 4)).collect(),
            ..WorkloadSet::default()
        };
        let build = |cap_mw: f64| {
            let f = fleet(vec![
                region("a", 38.9, -77.4, cap_mw, vec![pool("pa", 8, 10.0)]),
                region("b", 39.0, -77.5, 100.0, vec![pool("pb", 8, 30.0)]),
            ]);
            compile(&f, &w, &Policy::default(), None)
        };
        let ample = build(100.0);
        match a_nodes {
            None => ample,
            Some(n) => {
                let pa = ample.offers.iter().find(|o| o.pool_id == "pa").unwrap();
                build(n * pa.node_facility_watts / 1e6)
            }
        }
    }

    /// (value of the dual at the unpriced start, at `dual_start`'s choice, the flow's π, and
    /// the objective of the planner's plan: a feasible plan, so above any valid bound).
    fn starts(p: &Problem) -> (f64, f64, Vec<f64>, f64, bool) {
        let cls = classes(p);
        let lists = ProviderLists::new(p);
        let order: Vec<usize> = (0..p.units.len()).collect();
        let mu0 = transport_prices(p, &cls).unwrap();
        let pi0 = vec![0.0; p.region_cap_watts.len()];
        let score = |u: usize, c: usize| p.units[u].cands[c].cost;
        let (_, flow) = follow_transport(p, &cls, &order, &score, None);
        let flow_pi = flow.as_ref().unwrap().1.clone();
        let start = (mu0, pi0);
        let chosen = dual_start(p, &cls, &lists, start.clone(), flow);
        let value = |s: &(Vec<f64>, Vec<f64>)| dual(p, 1, f64::INFINITY, &cls, &lists, s.clone()).0;
        let plan = solve_lagrangian(p, 20, 0).objective;
        (
            value(&start),
            value(&chosen),
            flow_pi,
            plan,
            chosen == start,
        )
    }

    #[test]
    fn the_dual_starts_with_binding_power_priced() {
        // Power for 4.5 of pa's 8 nodes: the flow without power fills pa and prices only its
        // nodes; the power-capped flow prices region a's power, and that start bounds higher.
        let p = power_bound(Some(4.5));
        let (unpriced, chosen, flow_pi, plan, kept) = starts(&p);
        let a = p.offers.iter().find(|o| o.pool_id == "pa").unwrap().region;
        let b = p.offers.iter().find(|o| o.pool_id == "pb").unwrap().region;
        assert!(flow_pi[a] > 0.0 && flow_pi[b] == 0.0, "{flow_pi:?}");
        assert!(!kept);
        assert!(chosen > unpriced + 1.0, "{chosen} vs {unpriced}");
        // Still a bound: at most what a feasible plan costs (4 gangs on pa, 6 on pb).
        assert!(
            chosen <= plan + 1e-6 * plan,
            "{chosen} above the plan's {plan}"
        );
        assert_eq!(
            p.units.iter().filter(|u| u.cands.len() == 2).count(),
            10,
            "every gang has both pools as options"
        );
    }

    #[test]
    fn without_binding_power_the_dual_starts_where_it_did() {
        let p = power_bound(None);
        let (unpriced, chosen, flow_pi, _, kept) = starts(&p);
        assert!(flow_pi.iter().all(|&x| x == 0.0), "{flow_pi:?}");
        assert!(kept);
        assert_eq!(unpriced, chosen);
    }

    #[test]
    fn the_two_flows_give_the_same_on_two_threads_as_on_one() {
        // No services: the quota flow is solved over the whole fleet, beside the prices'.
        let p = power_bound(Some(4.5));
        let cls = classes(&p);
        let one_thread = transport_relaxations(&p, &cls, false);
        let (mu, quota) = transport_relaxations(&p, &cls, true);
        assert_eq!((&mu, &quota), (&one_thread.0, &one_thread.1));
        assert_eq!(mu, transport_prices(&p, &cls));
        let quota = quota.expect("solved beside the prices without services");
        assert!(
            quota
                .as_ref()
                .is_some_and(|q| q.1 .1.iter().any(|&x| x > 0.0)),
            "power priced"
        );
        // Following the flow solved ahead is following the one solved after the (no) services.
        let order: Vec<usize> = (0..p.units.len()).collect();
        let score = |u: usize, c: usize| p.units[u].cands[c].cost;
        let ahead = follow_transport(&p, &cls, &order, &score, Some(quota));
        let after = follow_transport(&p, &cls, &order, &score, None);
        assert_eq!(ahead.0 .0, after.0 .0);
        assert_eq!(ahead.1, after.1);
    }

    #[test]
    fn taking_and_giving_back_leaves_power_exactly_where_it_was() {
        // Region a's cap is exactly 4 of pa's nodes' draw, computed as the fleet would (MW).
        let p = power_bound(Some(4.0));
        let a = p.offers.iter().position(|o| o.pool_id == "pa").unwrap();
        let b = p.offers.iter().position(|o| o.pool_id == "pb").unwrap();
        let on = |u: usize, o: usize| p.units[u].cands.iter().position(|c| c.offer as usize == o);
        // The cap of exactly four nodes' draw takes four, not three, and not five.
        let mut r = Residual::new(&p);
        let mut placed = Vec::new();
        for u in 0..p.units.len() {
            let c = on(u, a).unwrap();
            if r.blocks(&p, u, c).is_none() {
                r.take(&p, u, c);
                placed.push((u, c));
            }
        }
        assert_eq!(placed.len(), 4);
        // The rest on pb, then all given back in another order, many times over: not a
        // step off (in floating point, a thousand rounds drift).
        for u in 4..p.units.len() {
            let c = on(u, b).unwrap();
            r.take(&p, u, c);
            placed.push((u, c));
        }
        let first = r.clone();
        for round in 0..1000 {
            let (u, c) = placed[round % placed.len()];
            r.give(&p, u, c);
            let (v, d) = placed[(round * 7 + 3) % placed.len()];
            if v != u {
                r.give(&p, v, d);
                r.take(&p, v, d);
            }
            r.take(&p, u, c);
        }
        assert_eq!(r, first);
        for &(u, c) in placed
            .iter()
            .step_by(2)
            .chain(placed.iter().skip(1).step_by(2))
        {
            r.give(&p, u, c);
        }
        assert_eq!(r, Residual::new(&p));
        let ra = p.offers[a].region;
        assert!((r.watts(ra) - p.region_cap_watts[ra]).abs() < 1e-7);
    }
}
