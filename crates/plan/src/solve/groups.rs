//! Redundancy groups: the exact per-service programme over the set of providers it uses.

use crate::problem::Problem;

/// Providers beyond this many make the per-group DP (over provider subsets) too large; such
/// groups fall back to placement unit by unit plus repair, and the bound ignores their rule.
pub(crate) const DP_MAX_PROVIDERS: usize = 12;

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
pub(crate) fn dp_with(
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
pub(crate) fn group_dp_priced(
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

pub(crate) fn dp_over_providers(
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

/// One service's least priced cost with both of its rules exact, providers and regions: a
/// small MILP over each unit's cheapest priced candidate per region (within a region, only
/// the cheapest can matter). `None` when a unit's options were cut by
/// `max_candidates_per_unit` (their regions are unknown) or the solver fails; the provider
/// programme then stands in.
pub(crate) fn group_exact_priced(p: &Problem, g: usize, mu: &[f64], pi: &[f64]) -> Option<f64> {
    use microlp::{ComparisonOp, LinearExpr, OptimizationDirection};
    use std::collections::BTreeMap;
    let grp = &p.groups[g];
    if grp.units.iter().any(|&u| p.units[u].tail_floor.is_finite()) {
        return None;
    }
    let mut lp = microlp::Problem::new(OptimizationDirection::Minimize);
    let mut at_provider: BTreeMap<usize, LinearExpr> = BTreeMap::new();
    let mut at_region: BTreeMap<usize, LinearExpr> = BTreeMap::new();
    let mut zs = Vec::new();
    for &u in &grp.units {
        let unit = &p.units[u];
        if unit.cands.is_empty() {
            continue;
        }
        let mut best: BTreeMap<usize, f64> = BTreeMap::new();
        for c in &unit.cands {
            let v = c.priced(mu, pi);
            let e = best.entry(c.region as usize).or_insert(v);
            *e = e.min(v);
        }
        let mut one = LinearExpr::empty();
        for (r, v) in best {
            let x = lp.add_binary_var(v);
            one.add(x, 1.0);
            let provider = p
                .offers
                .iter()
                .find(|o| o.region == r)
                .map_or(usize::MAX, |o| o.provider);
            at_region
                .entry(r)
                .or_insert_with(LinearExpr::empty)
                .add(x, 1.0);
            at_provider
                .entry(provider)
                .or_insert_with(LinearExpr::empty)
                .add(x, 1.0);
        }
        let z = lp.add_binary_var(unit.penalty);
        one.add(z, 1.0);
        lp.add_constraint(one, ComparisonOp::Eq, 1.0);
        zs.push(z);
    }
    for (rows, need) in [
        (at_provider, grp.min_providers as f64),
        (at_region, grp.min_regions as f64),
    ] {
        let mut ys = Vec::new();
        for (_, mut row) in rows {
            let y = lp.add_binary_var(0.0);
            row.add(y, -1.0);
            lp.add_constraint(row, ComparisonOp::Ge, 0.0);
            ys.push(y);
        }
        for &z in &zs {
            let mut row: LinearExpr = ys.iter().map(|&y| (y, 1.0)).collect();
            row.add(z, need);
            lp.add_constraint(row, ComparisonOp::Ge, need);
        }
    }
    let sol = lp.solve().ok()?.into_solution().ok()?;
    (sol.status() == microlp::SolutionStatus::Optimal).then(|| sol.objective())
}
