//! The LP relaxation's prices, exactly: the LP relaxation's dual, solved by row generation.
//!
//! Variables: `v[e]` (what a unit of entity `e` is worth), `μ[o] ≥ 0` per offer, `π[r] ≥ 0`
//! per region, and per service the duals of its redundancy rows (`α` per provider and region
//! it could use, `β` per unit, `γ` per provider and region). Maximise `Σ m_e v_e − Σ cap_o μ_o
//! − Σ MW_r π_r + Σ k β − Σ γ` subject to `v_e ≤ cost + nodes·μ + MW·π − α` for every
//! candidate, `v_e + k_p β_p + k_r β_r ≤ penalty` for a service's unit (`v_e ≤ floor`
//! otherwise), and `Σ_u β_u ≤ α + γ` per provider and region of a service. Only violated
//! candidate rows are added, round by round, so the programme stays small; when none is
//! violated the prices are optimal and the value is the LP relaxation's, redundancy rules
//! included. Any prices give a valid bound through `dual`, so stopping early is safe.

use super::packing::Entities;
use crate::problem::Problem;
use microlp::{
    ComparisonOp, LinearExpr, OptimizationDirection, SolveOptions, SolveOutcome, TerminationReason,
    Variable,
};
use std::collections::BTreeMap;

/// Rows added per entity and round at most.
const ROWS_PER_ROUND: usize = 2;
/// Wall-clock cap on one solve: a safety net against a solver that fails to converge, never
/// reached in normal runs (results do not depend on time unless it is).
const SAFETY_SECONDS: f64 = 2.0;

/// A service's redundancy duals and where they apply.
struct Service {
    /// Providers, then regions, its units could use; `α` and `γ` per entry.
    spots: Vec<(bool, usize)>,
    alpha: Vec<Variable>,
}

/// Rounds that add at most this many rows re-solve the solved programme with the rows added
/// one by one (microlp's dual simplex, from the basis it had; each addition copies the
/// constraint matrix and refactorises the basis); rounds that add more rebuild the programme
/// and solve it from scratch, which is cheaper for many rows at once.
const WARM_MAX_ROWS: usize = 200;

/// The programme's variables: `v` per entity, `μ` per offer, `π` per region, and each
/// service's duals. Building the programme again with more rows gives the same variables.
struct Model<'a> {
    p: &'a Problem,
    ents: &'a Entities,
    v: Vec<Variable>,
    mu: Vec<Variable>,
    pi: Vec<Variable>,
    services: Vec<Service>,
    service_of: Vec<usize>,
}

impl<'a> Model<'a> {
    /// The programme with the candidate rows `rows` (per entity, candidate indices).
    fn build(
        p: &'a Problem,
        ents: &'a Entities,
        rows: &[Vec<u32>],
    ) -> (Model<'a>, microlp::Problem) {
        let no = p.offers.len();
        let nr = p.region_cap_watts.len();
        let n = ents.len();
        let entity_of: BTreeMap<usize, usize> = (0..n).map(|e| (ents.rep(e), e)).collect();
        let mut lp = microlp::Problem::new(OptimizationDirection::Maximize);
        let v: Vec<_> = (0..n)
            .map(|e| {
                // A service's unit also has a penalty row with β; the floor bound is implied
                // by it and keeps the programme from cycling on its degenerate ties.
                let top = ents.floor(e);
                lp.add_var(ents.mult(e) as f64, (f64::NEG_INFINITY, top))
            })
            .collect();
        let mu: Vec<_> = (0..no)
            .map(|o| lp.add_var(-(p.offers[o].capacity_nodes as f64), (0.0, f64::INFINITY)))
            .collect();
        let pi: Vec<_> = (0..nr)
            .map(|r| lp.add_var(-p.region_cap_watts[r] / 1e6, (0.0, f64::INFINITY)))
            .collect();
        let mut services: Vec<Service> = Vec::new();
        let mut service_of = vec![usize::MAX; p.groups.len()];
        for (g, grp) in p.groups.iter().enumerate() {
            let members: Vec<usize> = grp
                .units
                .iter()
                .filter_map(|u| entity_of.get(u).copied())
                .collect();
            if members.is_empty() {
                continue;
            }
            let mut spots: Vec<(bool, usize)> = Vec::new();
            for &e in &members {
                for c in &p.units[ents.rep(e)].cands {
                    let o = &p.offers[c.offer as usize];
                    for spot in [(false, o.provider), (true, o.region)] {
                        if !spots.contains(&spot) {
                            spots.push(spot);
                        }
                    }
                }
            }
            spots.sort_unstable();
            let alpha: Vec<_> = spots
                .iter()
                .map(|_| lp.add_var(0.0, (0.0, f64::INFINITY)))
                .collect();
            let gamma: Vec<_> = spots
                .iter()
                .map(|_| lp.add_var(-1.0, (0.0, f64::INFINITY)))
                .collect();
            let kp = grp.min_providers as f64;
            let kr = grp.min_regions as f64;
            let units: Vec<(usize, Variable, Variable)> = members
                .iter()
                .map(|&e| {
                    let bp = lp.add_var(kp, (0.0, f64::INFINITY));
                    let br = lp.add_var(kr, (0.0, f64::INFINITY));
                    (e, bp, br)
                })
                .collect();
            for &(e, bp, br) in &units {
                let row: LinearExpr = [(v[e], 1.0), (bp, kp), (br, kr)].into_iter().collect();
                lp.add_constraint(row, ComparisonOp::Le, p.units[ents.rep(e)].penalty);
            }
            for (j, &(regional, _)) in spots.iter().enumerate() {
                let mut row = LinearExpr::empty();
                for &(_, bp, br) in &units {
                    row.add(if regional { br } else { bp }, 1.0);
                }
                row.add(alpha[j], -1.0);
                row.add(gamma[j], -1.0);
                lp.add_constraint(row, ComparisonOp::Le, 0.0);
            }
            service_of[g] = services.len();
            services.push(Service { spots, alpha });
        }
        let model = Model {
            p,
            ents,
            v,
            mu,
            pi,
            services,
            service_of,
        };
        for (e, r) in rows.iter().enumerate() {
            for &ci in r {
                let (expr, rhs) = model.row(e, ci);
                lp.add_constraint(expr, ComparisonOp::Le, rhs);
            }
        }
        lp.set_time_limit(std::time::Duration::from_secs_f64(SAFETY_SECONDS));
        (model, lp)
    }

    /// α of a candidate's provider and region, for a service's unit.
    fn alphas(&self, e: usize, c: &crate::problem::Cand) -> Vec<Variable> {
        let p = self.p;
        let Some(g) = p.units[self.ents.rep(e)].group else {
            return Vec::new();
        };
        let s = &self.services[self.service_of[g]];
        let o = &p.offers[c.offer as usize];
        [(false, o.provider), (true, o.region)]
            .iter()
            .filter_map(|spot| s.spots.binary_search(spot).ok())
            .map(|j| s.alpha[j])
            .collect()
    }

    /// Candidate `ci`'s row of entity `e`: `v_e ≤ cost + nodes·μ + MW·π − α`.
    fn row(&self, e: usize, ci: u32) -> (LinearExpr, f64) {
        let c = &self.p.units[self.ents.rep(e)].cands[ci as usize];
        let mut row = LinearExpr::empty();
        row.add(self.v[e], 1.0);
        if c.offer2 == c.offer {
            row.add(self.mu[c.offer as usize], -((c.nodes + c.nodes2) as f64));
        } else {
            row.add(self.mu[c.offer as usize], -(c.nodes as f64));
            row.add(self.mu[c.offer2 as usize], -(c.nodes2 as f64));
        }
        row.add(self.pi[c.region as usize], -c.mw);
        for a in self.alphas(e, c) {
            row.add(a, 1.0);
        }
        // A tiny, deterministic perturbation breaks the ties that make a degenerate
        // programme cycle; the bound is evaluated afresh from the prices, so it stays valid.
        let jitter = 1e-9 * (1 + (e * 7919 + ci as usize) % 997) as f64;
        (row, c.cost + jitter * c.cost.abs().max(1.0))
    }
}

/// Optimal (or, after `rounds`, the last) prices of the LP relaxation: (μ, π), and whether
/// they are proven optimal. Each round adds the violated rows: few at once are added to the
/// solved programme (see `WARM_MAX_ROWS`), many rebuild it.
pub(crate) fn prices(
    p: &Problem,
    ents: &Entities,
    rounds: usize,
    watch: &crate::interrupt::Watch,
) -> Option<(Vec<f64>, Vec<f64>, bool)> {
    let n = ents.len();
    // Rows so far, per entity: candidate indices.
    let mut rows: Vec<Vec<u32>> = vec![vec![0]; n];
    let (model, lp) = Model::build(p, ents, &rows);
    // The LP solves get the interrupt's time left as their limit (none without one); each
    // warm re-solve gets that much again, and the rounds stop at the next question.
    let opts = || {
        let mut o = SolveOptions::default();
        o.time_limit = watch.time_left();
        o
    };
    let solved = |o: Result<SolveOutcome, microlp::Error>| {
        let o = o.ok()?;
        if o.termination_reason() == TerminationReason::TimeLimit {
            watch.fire();
        }
        o.into_solution().ok()
    };
    let mut sol = solved(lp.solve_with(opts()))?;
    let mut last = None;
    for round in 0..rounds {
        let m: Vec<f64> = model
            .mu
            .iter()
            .map(|&x| sol.var_value(x).max(0.0))
            .collect();
        let q: Vec<f64> = model
            .pi
            .iter()
            .map(|&x| sol.var_value(x).max(0.0))
            .collect();
        let val: Vec<f64> = model.v.iter().map(|&x| sol.var_value(x)).collect();
        // Violated rows: candidates cheaper at these prices than the entity's value.
        let mut new_rows: Vec<(usize, u32)> = Vec::new();
        for e in 0..n {
            let unit = &p.units[ents.rep(e)];
            let mut worst: Vec<(f64, u32)> = Vec::new();
            for (ci, c) in unit.cands.iter().enumerate() {
                let a: f64 = model.alphas(e, c).iter().map(|&x| sol.var_value(x)).sum();
                let slack = c.priced(&m, &q) - a - val[e];
                if slack < -1e-7 * val[e].abs().max(1.0) && !rows[e].contains(&(ci as u32)) {
                    worst.push((slack, ci as u32));
                }
            }
            worst.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for &(_, ci) in worst.iter().take(ROWS_PER_ROUND) {
                rows[e].push(ci);
                new_rows.push((e, ci));
            }
        }
        let done = new_rows.is_empty();
        last = Some((m, q, done));
        // Stopped early, the prices so far still bound.
        if done || round + 1 == rounds || watch.stop() {
            break;
        }
        if new_rows.len() > WARM_MAX_ROWS {
            let (_, lp) = Model::build(p, ents, &rows);
            match solved(lp.solve_with(opts())) {
                Some(s) => sol = s,
                None => return last,
            }
            continue;
        }
        for (e, ci) in new_rows {
            // Each row is a re-solve: asked before each, so a stop waits for one at most.
            if watch.stop() {
                return last;
            }
            let (expr, rhs) = model.row(e, ci);
            // A solve stopped by the safety net keeps the last prices: any prices bound.
            match solved(sol.add_constraint(expr, ComparisonOp::Le, rhs)) {
                Some(s) => sol = s,
                None => return last,
            }
        }
    }
    last
}
