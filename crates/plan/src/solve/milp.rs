//! Exact re-optimisation of part of a plan: a MILP over some free units, everything else fixed,
//! solved by branch and bound (the pure-Rust microlp) within a node limit.
//!
//! Model: free units with identical candidates (a class) share one integer variable per
//! candidate, `x[k][c] ∈ 0..=m_k`, and one for those left out, `z[k]`; `Σ_c x + z = m_k`; each
//! offer's nodes and each region's megawatts are bounded by what the fixed units leave; a
//! service (whose units are free together) has binaries `y` per provider and region it could
//! use, `y ≤ Σ x` there, and `Σ y + k·z[u] ≥ k` for each of its units. The current plan is the
//! warm start, so the result is never worse than it.

use super::{Choice, Classes, Residual};
use crate::interrupt::Watch;
use crate::problem::Problem;
use microlp::{ComparisonOp, LinearExpr, OptimizationDirection, SolveOptions, Variable};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// What a re-optimisation found.
#[derive(Clone)]
pub(crate) struct Reopt {
    /// New choice of each free unit.
    pub assign: Vec<(usize, Option<usize>)>,
    /// Simplex iterations plus nodes spent: the work budget's unit.
    pub work: u64,
    /// Whether the solver returned a solution (`assign` is empty when not).
    pub found: bool,
    /// Whether the caller's time limit stopped the solve (its result is then not the node
    /// limit's, so it is never remembered).
    pub timed_out: bool,
}

/// What every re-optimisation of one search reads (the problem and its classes) and the
/// sub-problems it has solved so far.
pub(crate) struct Cx<'a> {
    pub p: &'a Problem,
    pub cls: &'a Classes,
    memo: Memo,
    /// The caller's interrupt, whose time left limits each solve.
    watch: Option<&'a Watch<'a>>,
}

impl<'a> Cx<'a> {
    #[cfg(test)]
    pub fn new(p: &'a Problem, cls: &'a Classes) -> Self {
        Cx {
            p,
            cls,
            memo: Memo::default(),
            watch: None,
        }
    }

    /// A context whose solves stop when `watch`'s interrupt knows its deadline has come.
    pub fn watched(p: &'a Problem, cls: &'a Classes, watch: &'a Watch<'a>) -> Self {
        Cx {
            p,
            cls,
            memo: Memo::default(),
            watch: Some(watch),
        }
    }

    /// Time left before the caller's deadline, if it has one.
    pub(crate) fn time_left(&self) -> Option<Duration> {
        self.watch.and_then(|w| w.time_left())
    }
}

/// Sub-problems already solved, by everything that defines them (see `definition`): the
/// search meets the same neighbourhood again after a change elsewhere in the plan (2 of 9
/// solves of 0.3-0.5 s each on contended 10,000-workload seed 9, 69 of 85 on seed 3, 135 of
/// 285 on the contended 150-workload sets), and the solver is deterministic, so the earlier
/// result is the result. It comes back with the work it was charged then, so the plan does not
/// depend on whether it was looked up.
#[derive(Default)]
struct Memo(HashMap<Vec<u64>, Reopt>);

/// Simplex iterations per branch-and-bound node charged to a solve that fails: what full
/// solves spend (7.4 on the 800-variable neighbourhoods of a contended 10,000-workload set
/// with services, 14,700 iterations over 2,000 nodes).
const ITERATIONS_PER_NODE: u64 = 7;

/// Margin kept under a region's power left, watts: the solver's row tolerance must never let
/// a plan exceed a cap.
const POWER_MARGIN_W: f64 = 1.0;

/// A sub-problem as `reoptimize` states it: groups of free units with the candidates each
/// keeps, the free units that stay out (no candidate fits), and the key it is remembered by.
struct Programme {
    options: Vec<(Vec<usize>, Vec<usize>)>,
    out: Vec<usize>,
    key: Vec<u64>,
}

/// State `free` as a programme against what `res` holds for them (see `reoptimize`).
fn programme(
    p: &Problem,
    cls: &Classes,
    choice: &Choice,
    res: &Residual,
    free: &[usize],
    keep: usize,
    node_limit: u64,
) -> Programme {
    // Free units grouped by class (services' units and unclassed units alone).
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &u in free {
        let k = cls.of[u];
        if k == usize::MAX || p.units[u].group.is_some() {
            groups.push(vec![u]);
        } else {
            by_class.entry(k).or_default().push(u);
        }
    }
    groups.extend(by_class.into_values());
    groups.sort_by_key(|g| g[0]);
    // Each group's candidates: its current ones and the cheapest that fit alone. A group with
    // none (left out, and nothing fits even with every free unit's use given back) stays out
    // and is left out of the programme, which is then the same whichever such units the
    // search freed with the rest.
    let mut out: Vec<usize> = Vec::new();
    let mut options: Vec<(Vec<usize>, Vec<usize>)> = Vec::with_capacity(groups.len());
    for g in groups {
        let u = g[0];
        let current: Vec<usize> = g.iter().filter_map(|&v| choice[v]).collect();
        let mut kept: Vec<usize> = Vec::new();
        for ci in 0..p.units[u].cands.len() {
            if current.contains(&ci) || (kept.len() < keep && res.blocks(p, u, ci).is_none()) {
                kept.push(ci);
            }
        }
        if kept.is_empty() {
            out.extend(g);
        } else {
            options.push((g, kept));
        }
    }
    let key = definition(p, choice, res, &options, node_limit);
    Programme { options, out, key }
}

/// Re-optimise `free` (every unit of a service must be free if one is) against what `res`
/// holds for them (the fixed units' use taken, the free units' given back). Each free unit
/// keeps its current candidate and at most `keep` others, the cheapest that fit alone.
pub(crate) fn reoptimize(
    cx: &mut Cx,
    choice: &Choice,
    res: &Residual,
    free: &[usize],
    keep: usize,
    node_limit: u64,
) -> Reopt {
    let (p, cls) = (cx.p, cx.cls);
    let Programme { options, out, key } = programme(p, cls, choice, res, free, keep, node_limit);
    let mut r = match cx.memo.0.get(&key) {
        Some(r) => r.clone(),
        None => {
            let r = solve(p, choice, res, &options, node_limit, cx.time_left());
            if r.timed_out {
                if let Some(w) = cx.watch {
                    w.fire();
                }
            } else {
                cx.memo.0.insert(key, r.clone());
            }
            r
        }
    };
    if r.found {
        r.assign.extend(out.iter().map(|&u| (u, None)));
    }
    r
}

/// A sub-problem the search expects to meet next, to be solved on another thread while this
/// one solves the current one: the search's own order and results stay those of one thread,
/// since what it meets is then looked up (`Cx::remember`), with the work it was charged.
pub(crate) struct Ahead {
    programme: Programme,
    choice: Choice,
    res: Residual,
    node_limit: u64,
    time_limit: Option<Duration>,
}

impl Ahead {
    /// Solve it (no shared state: safe on any thread).
    pub fn solve(self, p: &Problem) -> (Vec<u64>, Reopt) {
        let r = solve(
            p,
            &self.choice,
            &self.res,
            &self.programme.options,
            self.node_limit,
            self.time_limit,
        );
        (self.programme.key, r)
    }
}

impl Cx<'_> {
    /// The sub-problem `reoptimize` would solve for `free` on this plan (`res` as the plan
    /// holds it; the free units' use is given back here), unless it is already remembered or
    /// has nothing to solve.
    pub fn ahead(
        &self,
        choice: &Choice,
        res: &Residual,
        free: &[usize],
        keep: usize,
        node_limit: u64,
    ) -> Option<Ahead> {
        let p = self.p;
        let mut res = res.clone();
        for &u in free {
            if let Some(c) = choice[u] {
                res.give(p, u, c);
            }
        }
        let programme = programme(p, self.cls, choice, &res, free, keep, node_limit);
        if programme.options.is_empty() || self.memo.0.contains_key(&programme.key) {
            return None;
        }
        Some(Ahead {
            programme,
            choice: choice.clone(),
            res,
            node_limit,
            time_limit: self.time_left(),
        })
    }

    /// Keep a result solved ahead (unless the time limit stopped it).
    pub fn remember(&mut self, key: Vec<u64>, r: Reopt) {
        if r.timed_out {
            return;
        }
        self.memo.0.entry(key).or_insert(r);
    }
}

/// Everything the programme of `options` (groups of free units and the candidates each keeps)
/// depends on besides the problem's costs, options and rules: the units and where they are,
/// the candidates kept, the nodes and power left on the offers and regions those use, and the
/// node limit.
fn definition(
    p: &Problem,
    choice: &Choice,
    res: &Residual,
    options: &[(Vec<usize>, Vec<usize>)],
    node_limit: u64,
) -> Vec<u64> {
    let mut key: Vec<u64> = vec![node_limit];
    let mut offers = BTreeSet::new();
    let mut regions = BTreeSet::new();
    for (g, kept) in options {
        key.push(g.len() as u64);
        for &v in g {
            key.extend([v as u64, choice[v].map_or(u64::MAX, |c| c as u64)]);
        }
        key.push(kept.len() as u64);
        for &ci in kept {
            key.push(ci as u64);
            let c = &p.units[g[0]].cands[ci];
            offers.insert(c.offer as usize);
            if c.nodes2 > 0 {
                offers.insert(c.offer2 as usize);
            }
            regions.insert(c.region as usize);
        }
    }
    key.extend(
        offers
            .into_iter()
            .flat_map(|o| [o as u64, res.nodes[o].max(0) as u64]),
    );
    key.extend(
        regions
            .into_iter()
            .flat_map(|r| [r as u64, res.watts(r).to_bits()]),
    );
    key
}

/// The programme of `options` (see the module documentation), solved by branch and bound
/// from the current plan, and the free units' new choices read from its solution.
fn solve(
    p: &Problem,
    choice: &Choice,
    res: &Residual,
    options: &[(Vec<usize>, Vec<usize>)],
    node_limit: u64,
    time_limit: Option<Duration>,
) -> Reopt {
    let mut lp = microlp::Problem::new(OptimizationDirection::Minimize);
    let mut offer_rows: BTreeMap<usize, LinearExpr> = BTreeMap::new();
    let mut region_rows: BTreeMap<usize, LinearExpr> = BTreeMap::new();
    // Per group: its candidates and their variables, and the left-out variable.
    let mut vars: Vec<(Vec<(usize, Variable)>, Variable)> = Vec::with_capacity(options.len());
    let mut warm: Vec<(Variable, f64)> = Vec::new();
    let mut unit_z: BTreeMap<usize, Variable> = BTreeMap::new();
    for (g, kept) in options {
        let u = g[0];
        let unit = &p.units[u];
        let m = g.len() as f64;
        let current: Vec<usize> = g.iter().filter_map(|&v| choice[v]).collect();
        let mut xs = Vec::with_capacity(kept.len());
        for &ci in kept {
            let c = &unit.cands[ci];
            // No more copies than the offer could hold alone.
            let fit = |o: u32, n: u32| {
                if n == 0 {
                    m
                } else {
                    (res.nodes[o as usize].max(0) / n as i64) as f64
                }
            };
            let cap = m.min(fit(c.offer, c.nodes)).min(fit(c.offer2, c.nodes2));
            let x = if g.len() == 1 {
                lp.add_binary_var(c.cost)
            } else {
                lp.add_integer_var(c.cost, (0, cap.max(0.0) as i32))
            };
            offer_rows
                .entry(c.offer as usize)
                .or_insert_with(LinearExpr::empty)
                .add(x, c.nodes as f64);
            if c.nodes2 > 0 {
                offer_rows
                    .entry(c.offer2 as usize)
                    .or_insert_with(LinearExpr::empty)
                    .add(x, c.nodes2 as f64);
            }
            region_rows
                .entry(c.region as usize)
                .or_insert_with(LinearExpr::empty)
                .add(x, c.mw);
            let n = current.iter().filter(|&&k| k == ci).count();
            warm.push((x, n as f64));
            xs.push((ci, x));
        }
        let z = if g.len() == 1 {
            lp.add_binary_var(unit.penalty)
        } else {
            lp.add_integer_var(unit.penalty, (0, g.len() as i32))
        };
        warm.push((z, (g.len() - current.len()) as f64));
        let mut one: LinearExpr = xs.iter().map(|&(_, x)| (x, 1.0)).collect();
        one.add(z, 1.0);
        lp.add_constraint(one, ComparisonOp::Eq, m);
        if unit.group.is_some() {
            unit_z.insert(u, z);
        }
        vars.push((xs, z));
    }
    for (o, row) in offer_rows {
        lp.add_constraint(row, ComparisonOp::Le, res.nodes[o].max(0) as f64);
    }
    for (r, row) in region_rows {
        let mw = ((res.watts(r) - POWER_MARGIN_W) / 1e6).max(0.0);
        lp.add_constraint(row, ComparisonOp::Le, mw);
    }
    // Redundancy: every service with a free unit is free whole.
    let mut services: Vec<usize> = options
        .iter()
        .filter_map(|(g, _)| p.units[g[0]].group)
        .collect();
    services.sort_unstable();
    services.dedup();
    for g in services {
        let grp = &p.groups[g];
        for by_region in [false, true] {
            let need = if by_region {
                grp.min_regions
            } else {
                grp.min_providers
            } as f64;
            let mut at: BTreeMap<usize, LinearExpr> = BTreeMap::new();
            for (gi, (group, _)) in options.iter().enumerate() {
                if p.units[group[0]].group != Some(g) {
                    continue;
                }
                for &(ci, x) in &vars[gi].0 {
                    let o = &p.offers[p.units[group[0]].cands[ci].offer as usize];
                    let key = if by_region { o.region } else { o.provider };
                    at.entry(key).or_insert_with(LinearExpr::empty).add(x, 1.0);
                }
            }
            let mut ys = Vec::new();
            for (key, mut row) in at {
                let y = lp.add_binary_var(0.0);
                row.add(y, -1.0);
                lp.add_constraint(row, ComparisonOp::Ge, 0.0);
                // The warm start: y is 1 where the current plan has something.
                let used = grp.units.iter().any(|&u| {
                    choice[u].is_some_and(|c| {
                        let o = &p.offers[p.units[u].cands[c].offer as usize];
                        (if by_region { o.region } else { o.provider }) == key
                    })
                });
                warm.push((y, used as u8 as f64));
                ys.push(y);
            }
            for &u in &grp.units {
                let Some(&z) = unit_z.get(&u) else { continue };
                let mut row: LinearExpr = ys.iter().map(|&y| (y, 1.0)).collect();
                row.add(z, need);
                lp.add_constraint(row, ComparisonOp::Ge, need);
            }
        }
    }
    let mut opts = SolveOptions::default();
    opts.node_limit = Some(node_limit);
    opts.time_limit = time_limit;
    opts.warm_start = Some(warm);
    // A solve that fails (microlp reports a singular basis on some of these) says nothing of
    // what it spent: it is charged as one that ran to its node limit, so that failures, which
    // repeat on similar neighbourhoods, cannot run past the budget uncounted.
    let failed = Reopt {
        assign: Vec::new(),
        work: node_limit.saturating_mul(ITERATIONS_PER_NODE + 1),
        found: false,
        timed_out: false,
    };
    let Ok(outcome) = lp.solve_with(opts) else {
        return failed;
    };
    let timed_out = outcome.termination_reason() == microlp::TerminationReason::TimeLimit;
    let Some(sol) = outcome.solution() else {
        return Reopt {
            timed_out,
            ..failed
        };
    };
    let stats = sol.stats();
    let work = stats.lp_iterations + stats.nodes_solved;
    let mut assign = Vec::with_capacity(options.iter().map(|(g, _)| g.len()).sum());
    for ((g, _), (xs, _)) in options.iter().zip(&vars) {
        // Members keep their current candidate where the count allows, so a class's units
        // do not trade places for nothing.
        let mut counts: Vec<(usize, usize)> = xs
            .iter()
            .map(|&(ci, x)| (ci, sol.var_value(x).round().max(0.0) as usize))
            .collect();
        let mut rest = Vec::new();
        for &u in g {
            match choice[u].and_then(|c| counts.iter_mut().find(|(ci, n)| *ci == c && *n > 0)) {
                Some(slot) => {
                    slot.1 -= 1;
                    assign.push((u, choice[u]));
                }
                None => rest.push(u),
            }
        }
        let mut it = counts
            .iter()
            .flat_map(|&(ci, n)| std::iter::repeat_n(ci, n));
        for u in rest {
            assign.push((u, it.next()));
        }
    }
    Reopt {
        assign,
        work,
        found: true,
        timed_out,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{fleet, gang, pool, region};
    use super::super::transport::classes;
    use super::*;
    use crate::problem::compile;
    use crate::Policy;
    use stratus_model::WorkloadSet;

    /// One unit holds a node of the cheap four-node pool, two one-node jobs sit in a dear pool,
    /// and two four-node gangs are left out (the cheap pool is one node short for either).
    #[test]
    fn a_programme_met_again_or_solved_ahead_is_looked_up_whichever_unit_left_out_came_with_it() {
        let f = fleet(vec![region(
            "a",
            38.9,
            -77.4,
            100.0,
            vec![pool("big", 4, 10.0), pool("dear", 2, 20.0)],
        )]);
        let names = ["anchor", "j1", "j2", "wide", "wide2"];
        let w = WorkloadSet {
            training: names
                .iter()
                .map(|n| gang(n, if n.starts_with("wide") { 16 } else { 4 }))
                .collect(),
            ..WorkloadSet::default()
        };
        let p = compile(&f, &w, &Policy::default(), None);
        let unit = |n: &str| p.units.iter().position(|u| u.workload == n).unwrap();
        let on = |u: usize, pool: &str| super::super::cand_on(&p, u, pool);
        let mut choice: Choice = vec![None; p.units.len()];
        let mut res = Residual::new(&p);
        for (n, at) in [("anchor", "big"), ("j1", "dear"), ("j2", "dear")] {
            let (u, c) = (unit(n), on(unit(n), at));
            res.take(&p, u, c);
            choice[u] = Some(c);
        }
        let planned = res.clone();
        // As `settle` does: the free units' use is given back first.
        for n in ["j1", "j2"] {
            res.give(&p, unit(n), choice[unit(n)].unwrap());
        }
        let cls = classes(&p);
        // Solved ahead on another thread, then met: looked up, with the same answer and work
        // as solved in place.
        let ahead_cx = &mut Cx::new(&p, &cls);
        let mut wide = vec![unit("j1"), unit("j2"), unit("wide")];
        wide.sort_unstable();
        let a = ahead_cx
            .ahead(&choice, &planned, &wide, 16, 100)
            .expect("not solved yet");
        let (k, r) = std::thread::scope(|sc| sc.spawn(|| a.solve(&p)).join().unwrap());
        ahead_cx.remember(k, r);
        assert!(ahead_cx.ahead(&choice, &planned, &wide, 16, 100).is_none());
        let met = reoptimize(ahead_cx, &choice, &res, &wide, 16, 100);
        assert_eq!(ahead_cx.memo.0.len(), 1);
        let cx = &mut Cx::new(&p, &cls);
        let free = |other: &str| {
            let mut f = vec![unit("j1"), unit("j2"), unit(other)];
            f.sort_unstable();
            f
        };
        let sorted = |mut a: Vec<(usize, Option<usize>)>| {
            a.sort_unstable();
            a
        };
        let first = reoptimize(cx, &choice, &res, &free("wide"), 16, 100);
        let expect = |other: &str| {
            sorted(vec![
                (unit("j1"), Some(on(unit("j1"), "big"))),
                (unit("j2"), Some(on(unit("j2"), "big"))),
                (unit(other), None),
            ])
        };
        assert!(first.found && first.work > 0);
        assert_eq!(sorted(first.assign.clone()), expect("wide"));
        assert_eq!(sorted(met.assign), expect("wide"));
        assert_eq!(met.work, first.work);
        // The other gang in its place: the same programme, looked up, not solved again, and
        // the answer speaks of the unit freed this time.
        let again = reoptimize(cx, &choice, &res, &free("wide2"), 16, 100);
        assert_eq!(cx.memo.0.len(), 1);
        assert_eq!(sorted(again.assign.clone()), expect("wide2"));
        assert_eq!(again.work, first.work);
        // Solved afresh it is the same.
        let fresh = reoptimize(
            &mut Cx::new(&p, &cls),
            &choice,
            &res,
            &free("wide2"),
            16,
            100,
        );
        assert_eq!(sorted(fresh.assign), expect("wide2"));
        assert_eq!(fresh.work, again.work);
        // Less room (two nodes more held on the cheap pool) is another programme: one job
        // moves there, the other stays.
        let mut held = res.clone();
        for _ in 0..2 {
            held.take(&p, unit("j1"), on(unit("j1"), "big"));
        }
        let other = reoptimize(cx, &choice, &held, &free("wide"), 16, 100);
        assert_eq!(cx.memo.0.len(), 2);
        let cheap = other
            .assign
            .iter()
            .filter(|&&(u, c)| u != unit("wide") && c == Some(on(u, "big")))
            .count();
        assert_eq!(cheap, 1, "{:?}", other.assign);
    }
}
