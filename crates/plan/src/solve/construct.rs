//! Construction: greedy fills, services placed whole, redundancy repair, and the cheapest-first
//! baseline.

use super::*;
use crate::problem::Problem;

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

/// The plan in force, as far as it still fits: each unit at the candidate where the previous
/// plan had it (a service's units only while they keep its redundancy rule); nothing else is
/// placed (local search adds what pays). Searching from it, the planner never ends worse than
/// staying put, so a re-plan moves a unit only when the move pays for its migration.
pub fn stay(p: &Problem, order: &[usize]) -> (Choice, Residual) {
    let mut res = Residual::new(p);
    let mut choice: Choice = vec![None; p.units.len()];
    for &u in order {
        let unit = &p.units[u];
        let at = unit
            .previous
            .and_then(|prev| unit.cands.iter().position(|c| c.is_at(prev)));
        if let Some(c) = at.filter(|&c| res.blocks(p, u, c).is_none()) {
            res.take(p, u, c);
            choice[u] = Some(c);
        }
    }
    for (g, grp) in p.groups.iter().enumerate() {
        if !group_ok(p, g, &choice) {
            for &u in &grp.units {
                if let Some(c) = choice[u].take() {
                    res.give(p, u, c);
                }
            }
        }
    }
    (choice, res)
}

/// Units in `order` not yet chosen: a service is placed whole (by `place_group`) the first
/// time the order reaches one of its units, since its redundancy rule shapes every choice
/// (`done` remembers); any other unit takes its cheapest fitting candidate under `score`.
pub(crate) fn fill(
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
pub(crate) fn cheapest_fitting(
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

/// Place service `g` whole under `score`, by its per-group programme where the providers are
/// few enough; its units already placed are kept where they are.
pub(crate) fn place_group(
    p: &Problem,
    g: usize,
    score: &dyn Fn(usize, usize) -> f64,
    choice: &mut Choice,
    res: &mut Residual,
) {
    // A unit already placed stays where it is: the programme counts it there.
    let fits = |u: usize, c: usize| match choice[u] {
        Some(at) => (c == at).then(|| score(u, c)),
        None => res.blocks(p, u, c).is_none().then(|| score(u, c)),
    };
    let plan = group_dp(p, g, &fits);
    let grp = &p.groups[g];
    for (k, &u) in grp.units.iter().enumerate() {
        if choice[u].is_some() {
            continue;
        }
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
    // The rule the programme leaves out (regions beyond providers) is met now, while the
    // room for it is still free, not after other units have taken it.
    repair_group(p, g, choice, res);
}

/// Make every redundancy group satisfied: add the cheapest moves that bring in a new
/// provider or region; if impossible, unplace the group (reason: redundancy).
pub fn repair_groups(p: &Problem, choice: &mut Choice, res: &mut Residual) {
    for g in 0..p.groups.len() {
        repair_group(p, g, choice, res);
    }
}

/// `repair_groups` for group `g` alone.
fn repair_group(p: &Problem, g: usize, choice: &mut Choice, res: &mut Residual) {
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

/// The baseline's choice: arrival order, each unit to its cheapest (in dollars) candidate
/// that still fits, failing over to the next cheapest; redundancy repaired afterwards.
pub fn cheapest_first(p: &Problem) -> (Choice, Residual) {
    let mut order: Vec<usize> = (0..p.units.len()).collect();
    order.sort_by_key(|&u| (p.units[u].arrival, u));
    let dollars = |u: usize, c: usize| p.units[u].cands[c].dollars;
    greedy(p, &order, &dollars)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{images, pool, region};
    use super::*;
    use crate::problem::compile;
    use crate::Policy;
    use stratus_model::*;

    /// A service of two replicas that must span two providers, one replica already placed on
    /// a dear pool: placing the service keeps it there and puts the other on the other
    /// provider, and the residual counts each node once.
    #[test]
    fn placing_a_service_keeps_its_units_already_placed() {
        let provider = |name: &str, r: Region| Provider {
            name: name.into(),
            regions: vec![r],
        };
        let f = Fleet {
            name: "t".into(),
            notes: vec![],
            providers: vec![
                provider(
                    "aws",
                    region(
                        "a",
                        38.9,
                        -77.4,
                        100.0,
                        vec![pool("pa", 1, 10.0), pool("pc", 1, 30.0)],
                    ),
                ),
                provider(
                    "gcp",
                    region("b", 38.9, -77.4, 100.0, vec![pool("qb", 1, 20.0)]),
                ),
            ],
            latency: vec![],
        };
        let svc = Inference {
            name: "s".into(),
            model: "m".into(),
            priority: 200,
            replica: [(
                Accelerator::H100,
                ReplicaSpec {
                    chips: 4,
                    rps: RequestsPerSec(10.0),
                },
            )]
            .into_iter()
            .collect(),
            images: images(),
            demand: vec![Demand {
                from: "aws:a".into(),
                rps: RequestsPerSec(20.0),
            }],
            latency_slo_ms: Millis(120.0),
            min_providers: 2,
            min_regions: 1,
            spot: false,
            residency: vec![],
            min_replicas: None,
            max_replicas: None,
        };
        let w = WorkloadSet {
            inference: vec![svc],
            ..WorkloadSet::default()
        };
        let p = compile(&f, &w, &Policy::default(), None);
        assert_eq!(p.groups.len(), 1);
        let units = p.groups[0].units.clone();
        assert_eq!(units.len(), 2);
        let on = |u: usize, id: &str| super::super::cand_on(&p, u, id);
        let (first, second) = (units[0], units[1]);
        let mut choice: Choice = vec![None; p.units.len()];
        let mut res = Residual::new(&p);
        res.take(&p, first, on(first, "pc"));
        choice[first] = Some(on(first, "pc"));
        let cost = |u: usize, c: usize| p.units[u].cands[c].cost;
        fill(&p, &units, &cost, &mut [false], (&mut choice, &mut res));
        assert_eq!(choice[first], Some(on(first, "pc")));
        assert_eq!(choice[second], Some(on(second, "qb")));
        let mut counted = Residual::new(&p);
        for (u, c) in choice.iter().enumerate() {
            if let Some(c) = c {
                counted.take(&p, u, *c);
            }
        }
        assert_eq!(res, counted);
        assert!(feasible(&p, &choice));
    }
}
