//! Exact MILP for small problems (good_lp with the pure-Rust microlp solver).
//!
//! Model: binary x[u,c] per candidate and z[u] per unit (unplaced), Σ_c x + z = 1;
//! Σ nodes·x ≤ capacity per offer; Σ watts·x ≤ cap per region; for redundancy groups, binary
//! y[g,p] / w[g,r] that may be 1 only if some unit of g sits on provider p / region r, and for
//! every unit u of g: Σ_p y ≥ k·(1 − z[u]) (if anything of the service is placed, its placed
//! units span k providers), likewise for regions.

use crate::problem::Problem;
use crate::solve::{Choice, Solved};
use good_lp::{
    constraint, microlp, variable, Expression, ProblemVariables, Solution, SolverModel, Variable,
};
use std::collections::{BTreeMap, HashMap};

/// Per group: its index, and its candidates by provider and by region.
type GroupRows = (
    usize,
    BTreeMap<usize, Vec<(usize, usize)>>,
    BTreeMap<usize, Vec<(usize, usize)>>,
);

/// Solve exactly; `None` if the solver fails (callers fall back to the heuristic).
pub fn solve_exact(p: &Problem) -> Option<Solved> {
    let mut vars = ProblemVariables::new();
    let x: Vec<Vec<Variable>> = p
        .units
        .iter()
        .map(|u| {
            u.cands
                .iter()
                .map(|_| vars.add(variable().binary()))
                .collect()
        })
        .collect();
    let z: Vec<Variable> = p
        .units
        .iter()
        .map(|_| vars.add(variable().binary()))
        .collect();
    let mut obj = Expression::from(0.0);
    for (ui, u) in p.units.iter().enumerate() {
        for (ci, c) in u.cands.iter().enumerate() {
            obj += c.cost * x[ui][ci];
        }
        if !u.cands.is_empty() {
            obj += u.penalty * z[ui];
        }
    }
    // Group spans.
    let mut gy: Vec<(Vec<Variable>, Vec<Variable>)> = Vec::new();
    let mut group_rows: Vec<GroupRows> = Vec::new();
    for (gi, g) in p.groups.iter().enumerate() {
        let mut by_p: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
        let mut by_r: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
        for &u in &g.units {
            for (ci, c) in p.units[u].cands.iter().enumerate() {
                let o = &p.offers[c.offer as usize];
                by_p.entry(o.provider).or_default().push((u, ci));
                by_r.entry(o.region).or_default().push((u, ci));
            }
        }
        let yp: Vec<Variable> = by_p.keys().map(|_| vars.add(variable().binary())).collect();
        let yr: Vec<Variable> = by_r.keys().map(|_| vars.add(variable().binary())).collect();
        gy.push((yp, yr));
        group_rows.push((gi, by_p, by_r));
    }
    let mut model = vars.minimise(obj).using(microlp);
    for (ui, u) in p.units.iter().enumerate() {
        let mut e = Expression::from(z[ui]);
        for v in &x[ui] {
            e += *v;
        }
        model = model.with(constraint!(e == 1.0));
        let _ = u;
    }
    let mut by_offer: HashMap<usize, Expression> = HashMap::new();
    let mut by_region: HashMap<usize, Expression> = HashMap::new();
    for (ui, u) in p.units.iter().enumerate() {
        for (ci, c) in u.cands.iter().enumerate() {
            *by_offer
                .entry(c.offer as usize)
                .or_insert_with(|| Expression::from(0.0)) += c.nodes as f64 * x[ui][ci];
            if c.nodes2 > 0 {
                *by_offer
                    .entry(c.offer2 as usize)
                    .or_insert_with(|| Expression::from(0.0)) += c.nodes2 as f64 * x[ui][ci];
            }
            *by_region
                .entry(p.offers[c.offer as usize].region)
                .or_insert_with(|| Expression::from(0.0)) += (c.watts / 1e6) * x[ui][ci];
        }
    }
    let mut offers: Vec<_> = by_offer.into_iter().collect();
    offers.sort_by_key(|(o, _)| *o);
    for (o, e) in offers {
        model = model.with(constraint!(e <= p.offers[o].capacity_nodes as f64));
    }
    let mut regions: Vec<_> = by_region.into_iter().collect();
    regions.sort_by_key(|(r, _)| *r);
    for (r, e) in regions {
        model = model.with(constraint!(e <= p.region_cap_watts[r] / 1e6));
    }
    for ((gi, by_p, by_r), (yp, yr)) in group_rows.iter().zip(&gy) {
        let g = &p.groups[*gi];
        for ((_, members), y) in by_p.iter().zip(yp) {
            let mut e = Expression::from(0.0);
            for &(u, ci) in members {
                e += x[u][ci];
            }
            model = model.with(constraint!(*y <= e));
        }
        for ((_, members), y) in by_r.iter().zip(yr) {
            let mut e = Expression::from(0.0);
            for &(u, ci) in members {
                e += x[u][ci];
            }
            model = model.with(constraint!(*y <= e));
        }
        for &u in &g.units {
            let sp: Expression = yp.iter().fold(Expression::from(0.0), |a, v| a + *v);
            let sr: Expression = yr.iter().fold(Expression::from(0.0), |a, v| a + *v);
            let kp = g.min_providers as f64;
            let kr = g.min_regions as f64;
            model = model.with(constraint!(sp + kp * z[u] >= kp));
            model = model.with(constraint!(sr + kr * z[u] >= kr));
        }
    }
    let sol = model.solve().ok()?;
    let choice: Choice = x
        .iter()
        .map(|xs| xs.iter().position(|v| sol.value(*v) > 0.5))
        .collect();
    let objective = crate::solve::objective(p, &choice);
    Some(Solved {
        choice,
        objective,
        lower_bound: objective,
        bound_by: "the optimum (exact MILP)",
        method: "exact MILP (microlp)".into(),
    })
}
