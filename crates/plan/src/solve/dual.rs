//! The Lagrangian dual of pool capacity and region power: any prices give a valid lower
//! bound; projected subgradient steps refine them.

use super::*;
use crate::problem::Problem;

/// Candidate evaluations the dual may spend beyond its minimum iterations.
pub(crate) const DUAL_BUDGET: usize = 40_000_000;
/// Iterations without improvement before the step shrinks.
pub(crate) const HALVE_AFTER: usize = 10;

/// Candidate count from which the dual runs its two halves on two threads.
pub(crate) const THREADED_CANDIDATES: usize = 200_000;

/// Where the dual's work is cut in two: classes and groups in order, halved by candidates.
#[derive(Clone, Copy)]
pub(crate) struct Split {
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
pub(crate) fn relaxed_part(
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

/// Lagrangian dual of capacity and power, maximised from the given prices: the best value
/// found (a lower bound) and the prices that gave it.
///
/// Steps follow a target level (Polyak steps towards `best + δ`, `δ` halved when progress
/// stalls), since the incumbent can sit far above the dual's optimum when capacity is short
/// and steps aimed at it overshoot; successive directions are deflected (Camerini–Fratta–
/// Maffioli) against zig-zagging; and a region's power row is measured in nodes of its average
/// pool, so power and capacity prices move on one scale.
pub(crate) fn dual(
    p: &Problem,
    iters: usize,
    upper: f64,
    cls: &Classes,
    lists: &ProviderLists,
    (mu0, pi0): (Vec<f64>, Vec<f64>),
) -> (f64, Vec<f64>, Vec<f64>) {
    let no = p.offers.len();
    let nr = p.region_cap_watts.len();
    // MW of one average node per region: the unit a power row is measured in.
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
    let mut mu = mu0;
    let mut pi = pi0;
    let mut best = f64::NEG_INFINITY;
    let mut best_prices = (mu.clone(), pi.clone());
    let mut delta = 0.0;
    let mut since = 0;
    let mut use_nodes = vec![0.0f64; no];
    let mut use_mw = vec![0.0f64; nr];
    let mut dir_o = vec![0.0f64; no];
    let mut dir_r = vec![0.0f64; nr];
    let split = Split::new(p, cls);
    // Per-half usage buffers, reused across iterations.
    let mut half_a = (vec![0.0f64; no], vec![0.0f64; nr]);
    let mut half_b = (vec![0.0f64; no], vec![0.0f64; nr]);
    for it in 0..iters {
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
        if it == 0 {
            best = l;
            // The first target: a tenth of the way to the incumbent, at most 5 % above.
            delta = ((upper - l) / 10.0).clamp(1e-6 * l.abs().max(1.0), 0.05 * l.abs().max(1.0));
        } else if l > best + 1e-9 * best.abs().max(1.0) {
            best = l;
            best_prices.0.clone_from(&mu);
            best_prices.1.clone_from(&pi);
            since = 0;
        } else {
            since += 1;
            if since >= HALVE_AFTER {
                delta /= 2.0;
                since = 0;
            }
        }
        if it == 0 {
            best_prices.0.clone_from(&mu);
            best_prices.1.clone_from(&pi);
        }
        // Projected subgradient, power in node units, deflected by the previous direction.
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
                let g = (use_mw[r] - p.region_cap_watts[r] / 1e6) / node_mw[r];
                if pi[r] <= 0.0 && g < 0.0 {
                    0.0
                } else {
                    g
                }
            })
            .collect();
        let gd: f64 = (0..no).map(|o| g_o[o] * dir_o[o]).sum::<f64>()
            + (0..nr).map(|r| g_r[r] * dir_r[r]).sum::<f64>();
        let dd: f64 = dir_o.iter().chain(&dir_r).map(|d| d * d).sum();
        let beta = if gd < 0.0 && dd > 0.0 {
            -1.5 * gd / dd
        } else {
            0.0
        };
        for o in 0..no {
            dir_o[o] = g_o[o] + beta * dir_o[o];
        }
        for r in 0..nr {
            dir_r[r] = g_r[r] + beta * dir_r[r];
        }
        let norm: f64 = dir_o.iter().chain(&dir_r).map(|d| d * d).sum();
        if norm < 1e-12 {
            break; // relaxed solution is feasible for the relaxed constraints: optimal dual
        }
        if delta < 1e-7 * best.abs().max(1.0) {
            break;
        }
        let step = (best + delta - l).max(0.0) / norm;
        for o in 0..no {
            mu[o] = (mu[o] + step * dir_o[o]).max(0.0);
        }
        for r in 0..nr {
            // A node-unit price back to $/MW.
            pi[r] = (pi[r] + step * dir_r[r] / node_mw[r]).max(0.0);
        }
    }
    (best, best_prices.0, best_prices.1)
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
    dual(p, 1, f64::INFINITY, &cls, &lists, zero).0
}
