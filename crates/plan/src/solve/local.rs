//! Local search: single moves to cheaper options and ejection moves.

use super::*;
use crate::problem::Problem;

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
pub(crate) const EJECT_OPTIONS: usize = 3;
/// How many occupants of a full offer `eject` considers moving.
pub(crate) const EJECT_OCCUPANTS: usize = 24;

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
