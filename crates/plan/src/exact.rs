//! Exact MILP for small problems (the pure-Rust microlp solver, under a node limit).
//!
//! Model: binary x[u,c] per candidate and z[u] per unit (unplaced), Σ_c x + z = 1;
//! Σ nodes·x ≤ capacity per offer; Σ watts·x ≤ cap per region; for redundancy groups, binary
//! y[g,p] / w[g,r] that may be 1 only if some unit of g sits on provider p / region r, and for
//! every unit u of g: Σ_p y ≥ k·(1 − z[u]) (if anything of the service is placed, its placed
//! units span k providers), likewise for regions.

use crate::problem::Problem;
use crate::solve::{Choice, Solved};
use microlp::{ComparisonOp, LinearExpr, OptimizationDirection, SolveOptions, Variable};
use std::collections::BTreeMap;

/// Branch-and-bound nodes the exact solve may spend before it gives up. Most twelve-unit
/// problems are proved within it, but not all (74 of 343 drawn by the property tests'
/// generator were not), and unbounded one ran for over ten minutes: a planner that hangs is
/// worse than one that keeps its heuristic's plan. A node count, not a clock, so the same
/// input always takes the same path.
pub const NODE_LIMIT: u64 = 5_000;

/// What the exact solve found within its node limit.
pub enum Exact {
    /// The optimum, proved.
    Optimal(Solved),
    /// The best plan found when the node limit stopped the search (no better than the warm
    /// start, if one was given), without proof.
    Stopped(Choice),
}

/// Solve exactly from `warm` (a plan to start from, e.g. the heuristic's); `None` if the solver
/// fails or found nothing within [`NODE_LIMIT`] nodes.
pub fn solve_exact(p: &Problem, warm: Option<&Choice>) -> Option<Exact> {
    let mut lp = microlp::Problem::new(OptimizationDirection::Minimize);
    let mut by_offer: BTreeMap<usize, LinearExpr> = BTreeMap::new();
    let mut by_region: BTreeMap<usize, LinearExpr> = BTreeMap::new();
    let mut x: Vec<Vec<Variable>> = Vec::with_capacity(p.units.len());
    let mut z: Vec<Variable> = Vec::with_capacity(p.units.len());
    for u in &p.units {
        let xs: Vec<Variable> = u.cands.iter().map(|c| lp.add_binary_var(c.cost)).collect();
        // A unit with no candidate has no choice to make, and its penalty is a constant.
        let zu = lp.add_binary_var(if u.cands.is_empty() { 0.0 } else { u.penalty });
        let mut one: LinearExpr = xs.iter().map(|&v| (v, 1.0)).collect();
        one.add(zu, 1.0);
        lp.add_constraint(one, ComparisonOp::Eq, 1.0);
        for (c, &v) in u.cands.iter().zip(&xs) {
            by_offer
                .entry(c.offer as usize)
                .or_insert_with(LinearExpr::empty)
                .add(v, c.nodes as f64);
            if c.nodes2 > 0 {
                by_offer
                    .entry(c.offer2 as usize)
                    .or_insert_with(LinearExpr::empty)
                    .add(v, c.nodes2 as f64);
            }
            by_region
                .entry(p.offers[c.offer as usize].region)
                .or_insert_with(LinearExpr::empty)
                .add(v, c.watts / 1e6);
        }
        x.push(xs);
        z.push(zu);
    }
    for (o, row) in by_offer {
        lp.add_constraint(row, ComparisonOp::Le, p.offers[o].capacity_nodes as f64);
    }
    for (r, row) in by_region {
        lp.add_constraint(row, ComparisonOp::Le, p.region_cap_watts[r] / 1e6);
    }
    // Group spans: y[g,k] may be 1 only if some unit of g sits on provider (or region) k.
    for g in &p.groups {
        for by_region in [false, true] {
            let mut members: BTreeMap<usize, Vec<Variable>> = BTreeMap::new();
            for &u in &g.units {
                for (c, &v) in p.units[u].cands.iter().zip(&x[u]) {
                    let o = &p.offers[c.offer as usize];
                    let key = if by_region { o.region } else { o.provider };
                    members.entry(key).or_default().push(v);
                }
            }
            let need = if by_region {
                g.min_regions
            } else {
                g.min_providers
            } as f64;
            let mut span: Vec<Variable> = Vec::with_capacity(members.len());
            for vs in members.values() {
                let y = lp.add_binary_var(0.0);
                let mut row: LinearExpr = vs.iter().map(|&v| (v, -1.0)).collect();
                row.add(y, 1.0);
                lp.add_constraint(row, ComparisonOp::Le, 0.0);
                span.push(y);
            }
            for &u in &g.units {
                // If anything of the service is placed, its placed units span `need` keys.
                let mut row: LinearExpr = span.iter().map(|&y| (y, 1.0)).collect();
                row.add(z[u], need);
                lp.add_constraint(row, ComparisonOp::Ge, need);
            }
        }
    }
    let mut opts = SolveOptions::default();
    opts.node_limit = Some(NODE_LIMIT);
    // Only the unit variables are given; microlp completes the span variables itself.
    opts.warm_start = warm.map(|choice| {
        let mut hint = Vec::new();
        for ((xs, &zu), c) in x.iter().zip(&z).zip(choice) {
            for (ci, &v) in xs.iter().enumerate() {
                hint.push((v, if *c == Some(ci) { 1.0 } else { 0.0 }));
            }
            hint.push((zu, if c.is_none() { 1.0 } else { 0.0 }));
        }
        hint
    });
    let outcome = lp.solve_with(opts).ok()?;
    let optimal = outcome.is_optimal();
    let sol = outcome.solution()?;
    let choice: Choice = x
        .iter()
        .map(|xs| xs.iter().position(|&v| sol.var_value(v) > 0.5))
        .collect();
    if !optimal {
        return Some(Exact::Stopped(choice));
    }
    let objective = crate::solve::objective(p, &choice);
    Some(Exact::Optimal(Solved {
        choice,
        objective,
        lower_bound: objective,
        bound_by: "the optimum (exact MILP)",
        method: "exact MILP (microlp)".into(),
        stopped_early: false,
    }))
}
