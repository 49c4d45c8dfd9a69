//! Local search: single moves to cheaper options, ejection moves, and chains of moves that
//! make room for units left out (`relocate`).

use super::*;
use crate::interrupt::Watch;
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
    for u in 0..p.units.len() {
        if p.units[u].group.is_some() || p.units[u].cands.is_empty() {
            continue;
        }
        let cur = choice[u];
        let cur_cost = unit_cost(p, u, cur);
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
                    let v_cost = unit_cost(p, v, Some(cv));
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

/// Moves `relocate` chains at most to make room for one unit.
const RELOCATE_MOVES: usize = 16;
/// Levels of chains within a chain.
const CHAIN_DEPTH: usize = 1;
/// Levels of chains within a chain in [`relocate_deeper`]'s last pass.
const DEEP_CHAIN_DEPTH: usize = 2;

/// Candidates `relocate`'s chains may examine in all per unit of the budget. Chains are cheap
/// per candidate (150-230 million a second) and the ones that pay can be long: on contended
/// 10,000-workload sets, 9.5-34 million for one unit that paid (up to 4 % of the objective).
const RELOCATE_WORK_PER_UNIT: u64 = 100;

/// Work `relocate` has spent (candidates examined) and may spend: a chain stops, undone,
/// once it is spent. Without the cap, chains on a region short of power recurse over every
/// unit in the region (on one contended 10,000-workload set, 161 million candidates for
/// two units, 1.1 s a call, for nothing).
struct Work {
    spent: u64,
    cap: u64,
    /// Levels of chains a chain may start within it.
    depth: usize,
}

impl Work {
    fn over(&self) -> bool {
        self.spent >= self.cap
    }
}

/// One move of a chain: the unit, where it was, where it went.
type Move = (usize, Option<usize>, Option<usize>);

/// A plan being changed in place: the choice, what it leaves, and the units on each offer.
struct Live<'a> {
    choice: &'a mut Choice,
    res: &'a mut Residual,
    at: Vec<Vec<usize>>,
}

impl Live<'_> {
    fn apply(&mut self, p: &Problem, (v, from, to): Move) {
        if let Some(c) = from {
            self.res.give(p, v, c);
            let cand = &p.units[v].cands[c];
            for o in [cand.offer, cand.offer2] {
                self.at[o as usize].retain(|&x| x != v);
            }
        }
        if let Some(c) = to {
            self.res.take(p, v, c);
            let cand = &p.units[v].cands[c];
            self.at[cand.offer as usize].push(v);
            if cand.nodes2 > 0 {
                self.at[cand.offer2 as usize].push(v);
            }
        }
        self.choice[v] = to;
    }

    fn undo(&mut self, p: &Problem, moves: &[Move]) {
        for &(v, from, to) in moves.iter().rev() {
            self.apply(p, (v, to, from));
        }
    }
}

/// Options of an occupant `chain` tries making room for in turn (one level deeper), when
/// none of its options elsewhere fits as things are.
const DEEPER_OPTIONS: usize = 3;

/// What a chain must leave alone: the offers (and regions, when power is short) the units
/// it makes room for need.
#[derive(Clone, Default)]
struct Avoid {
    offers: Vec<usize>,
    regions: Vec<usize>,
}

/// Where an occupant goes: an option that fits (or out), or an option another chain clears.
enum Dest {
    Direct(Option<usize>),
    Deeper(f64, Vec<Move>),
}

/// Room for unit `t` (left out) on its option `ci`, made in place: while the option's offer
/// (or its region's power) is short, the occupant that frees it for the least extra cost per
/// node (or watt) moves to its own cheapest option elsewhere that fits, or, where that costs
/// less, its service's rule allows and it is worth less than `t`, is left out; with `depth`
/// left, an occupant may also take an option that a chain of its own clears (a gang moved
/// to a pool another gang leaves). `t` is placed last. Returns the moves (`t`'s included) and
/// their change in objective, or `None` with nothing changed when no chain of
/// `RELOCATE_MOVES` makes room.
fn chain(
    p: &Problem,
    live: &mut Live,
    (t, ci): (usize, usize),
    depth: usize,
    avoid: &Avoid,
    work: &mut Work,
) -> Option<(f64, Vec<Move>)> {
    let cand = p.units[t].cands[ci];
    let pen = p.units[t].penalty;
    let blocked = [cand.offer as usize, cand.offer2 as usize];
    let region = cand.region as usize;
    let mut moves: Vec<Move> = Vec::new();
    let mut delta = 0.0;
    while let Some(why) = live.res.blocks(p, t, ci) {
        if moves.len() >= RELOCATE_MOVES || work.over() {
            live.undo(p, &moves);
            return None;
        }
        // What is short: an offer's nodes, or the region's power.
        let short = match why {
            Constraint::Capacity if (cand.nodes as i64) > live.res.nodes[blocked[0]] => {
                Some(blocked[0])
            }
            Constraint::Capacity => Some(blocked[1]),
            _ => None,
        };
        let near: Vec<usize> = match short {
            Some(o) => live.at[o].clone(),
            None => (0..p.offers.len())
                .filter(|&o| p.offers[o].region == region)
                .flat_map(|o| live.at[o].iter().copied())
                .collect(),
        };
        let mut inner = avoid.clone();
        match short {
            Some(_) => inner.offers.extend(blocked),
            None => inner.regions.push(region),
        }
        let elsewhere = |cx: &crate::problem::Cand| {
            let on = |o: u32| inner.offers.contains(&(o as usize));
            let second = cx.nodes2 > 0 && on(cx.offer2);
            !(on(cx.offer) || second || inner.regions.contains(&(cx.region as usize)))
        };
        // (extra cost per node or watt freed, occupant, where it goes)
        let mut pick: Option<(f64, usize, Dest)> = None;
        for v in near {
            let Some(cv) = live.choice[v] else { continue };
            let c = &p.units[v].cands[cv];
            let freed = match short {
                Some(o) => {
                    (if c.offer as usize == o { c.nodes } else { 0 }
                        + if c.offer2 as usize == o { c.nodes2 } else { 0 })
                        as f64
                }
                None if c.region as usize == region => c.watts,
                None => 0.0,
            };
            if v == t || freed <= 0.0 {
                continue;
            }
            if work.over() {
                break;
            }
            live.apply(p, (v, Some(cv), None));
            work.spent += p.units[v].cands.len() as u64;
            let allowed = |choice: &Choice, x: Option<usize>| {
                p.units[v]
                    .group
                    .is_none_or(|g| group_ok_with(p, g, choice, Some((v, x))))
            };
            let alt = (0..p.units[v].cands.len()).find(|&x| {
                elsewhere(&p.units[v].cands[x])
                    && live.res.blocks(p, v, x).is_none()
                    && allowed(live.choice, Some(x))
            });
            let mut options: Vec<(f64, Dest)> = Vec::new();
            if let Some(x) = alt {
                options.push((unit_cost(p, v, Some(x)) - c.cost, Dest::Direct(Some(x))));
            }
            if p.units[v].penalty < pen && allowed(live.choice, None) {
                options.push((p.units[v].penalty - c.cost, Dest::Direct(None)));
            }
            if depth > 0 && alt.is_none() {
                let cheaper: Vec<usize> = (0..p.units[v].cands.len())
                    .filter(|&x| elsewhere(&p.units[v].cands[x]) && allowed(live.choice, Some(x)))
                    .take(DEEPER_OPTIONS)
                    .collect();
                for x in cheaper {
                    if let Some((d, sub)) = chain(p, live, (v, x), depth - 1, &inner, work) {
                        live.undo(p, &sub);
                        // `d` counts the occupant as placed from out: from where it was.
                        let change = d + p.units[v].penalty - c.cost;
                        options.push((change, Dest::Deeper(change, sub)));
                    }
                }
            }
            for (change, dest) in options {
                let d = change / freed;
                if pick.as_ref().is_none_or(|(pd, _, _)| d < *pd) {
                    pick = Some((d, v, dest));
                }
            }
            live.apply(p, (v, None, Some(cv)));
        }
        let Some((_, v, dest)) = pick else {
            live.undo(p, &moves);
            return None;
        };
        let from = live.choice[v];
        match dest {
            Dest::Direct(x) => {
                delta += unit_cost(p, v, x) - unit_cost(p, v, from);
                live.apply(p, (v, from, x));
                moves.push((v, from, x));
            }
            Dest::Deeper(change, sub) => {
                delta += change;
                live.apply(p, (v, from, None));
                moves.push((v, from, None));
                for m in sub {
                    live.apply(p, m);
                    moves.push(m);
                }
            }
        }
    }
    let m = (t, None, Some(ci));
    live.apply(p, m);
    moves.push(m);
    Some((delta + cand.cost - pen, moves))
}

/// The best chain for `t` over its options that `admit` accepts, applied in place if it
/// changes the objective by less than `limit` and leaves every service it moved within its
/// rule (but `whole`, the service being placed unit by unit, which its caller checks); its
/// change and moves. Each move checks its own service's rule when it is made, but a chain
/// within a chain may move another unit of the same service afterwards.
fn best_chain(
    p: &Problem,
    live: &mut Live,
    t: usize,
    limit: f64,
    admit: &dyn Fn(&Choice, usize) -> bool,
    whole: Option<usize>,
    work: &mut Work,
) -> Option<(f64, Vec<Move>)> {
    let pen = p.units[t].penalty;
    let mut best: Option<(f64, Vec<Move>)> = None;
    for ci in 0..p.units[t].cands.len() {
        let bound = best.as_ref().map_or(limit, |b| b.0.min(limit));
        // Sorted by cost: no later option can do better.
        if p.units[t].cands[ci].cost - pen >= bound - 1e-9 {
            break;
        }
        if work.over() {
            break;
        }
        if !admit(live.choice, ci) {
            continue;
        }
        let depth = work.depth;
        if let Some((d, moves)) = chain(p, live, (t, ci), depth, &Avoid::default(), work) {
            let keeps_rules = moves
                .iter()
                .filter_map(|&(u, _, _)| p.units[u].group)
                .filter(|&g| Some(g) != whole)
                .all(|g| group_ok(p, g, live.choice));
            live.undo(p, &moves);
            if keeps_rules && d < bound - 1e-9 {
                best = Some((d, moves));
            }
        }
    }
    let (d, moves) = best?;
    for &m in &moves {
        live.apply(p, m);
    }
    Some((d, moves))
}

/// Room for units left out, made by moving what sits on one of their options elsewhere
/// (`chain`): each unit left out, largest penalty first, takes the cheapest chain that pays;
/// a service of which nothing is placed is placed unit by unit, each on a new provider (or
/// region) while its rule needs one, and kept only if the whole pays and keeps the rule.
/// These are the trades a sub-problem of bounded size misses when a unit's value dwarfs
/// every price (a service replica worth $192,000/h left out for want of one move of another
/// service). Units are started while the work spent (candidates examined) is under `budget`;
/// the chains of one started run on up to `budget × RELOCATE_WORK_PER_UNIT` in all. Returns
/// the work spent.
pub(crate) fn relocate(
    p: &Problem,
    choice: &mut Choice,
    res: &mut Residual,
    budget: u64,
    watch: &Watch,
) -> u64 {
    let cap = budget.saturating_mul(RELOCATE_WORK_PER_UNIT);
    relocate_within(p, choice, res, budget, cap, CHAIN_DEPTH, watch)
}

/// [`relocate`] with chains one level deeper, as a last pass over what the plan still leaves
/// out: it only ever lowers the objective of the plan it is given. Not the default of every
/// pass, because a deeper chain taken early changes where the search goes next and, over the
/// exact test's 215 sets, that ended worse as often as better (198 within 1 % instead of 200,
/// though the worst set went from 1.71x to 1.56x the optimum); on the worst set a cascade of
/// moves across services needs the third level.
pub(crate) fn relocate_deeper(
    p: &Problem,
    choice: &mut Choice,
    res: &mut Residual,
    budget: u64,
    watch: &Watch,
) -> u64 {
    let cap = budget.saturating_mul(RELOCATE_WORK_PER_UNIT);
    relocate_within(p, choice, res, budget, cap, DEEP_CHAIN_DEPTH, watch)
}

/// `relocate` with the chains' cap and depth given.
fn relocate_within(
    p: &Problem,
    choice: &mut Choice,
    res: &mut Residual,
    budget: u64,
    cap: u64,
    depth: usize,
    watch: &Watch,
) -> u64 {
    let mut work = Work {
        spent: 0,
        cap,
        depth,
    };
    let mut left: Vec<usize> = (0..p.units.len())
        .filter(|&u| choice[u].is_none() && !p.units[u].cands.is_empty())
        .collect();
    by_penalty_first(p, &mut left);
    let at = occupants(p, choice);
    let mut live = Live { choice, res, at };
    let mut tried_group = vec![false; p.groups.len()];
    for t in left {
        // No unit is started past the budget; one started may finish its chains up to the cap.
        if work.spent >= budget {
            break;
        }
        if live.choice[t].is_some() {
            continue;
        }
        if watch.stop() {
            break;
        }
        // A job, or a unit of a service that is partly placed: placed alone, keeping the rule.
        let whole = p.units[t]
            .group
            .filter(|&g| p.groups[g].units.iter().all(|&u| live.choice[u].is_none()));
        let Some(g) = whole else {
            let alone = |choice: &Choice, ci: usize| {
                p.units[t]
                    .group
                    .is_none_or(|g| group_ok_with(p, g, choice, Some((t, Some(ci)))))
            };
            best_chain(p, &mut live, t, 0.0, &alone, None, &mut work);
            continue;
        };
        if std::mem::replace(&mut tried_group[g], true) {
            continue;
        }
        let grp = &p.groups[g];
        let mut units: Vec<usize> = grp.units.clone();
        by_penalty_first(p, &mut units);
        let mut all: Vec<Move> = Vec::new();
        let mut total = 0.0;
        for u in units {
            let (provs, regs) = spans(p, g, live.choice, None);
            let need_p = (provs.len() as u32) < grp.min_providers;
            let need_r = (regs.len() as u32) < grp.min_regions;
            let new = |_: &Choice, ci: usize| {
                let o = &p.offers[p.units[u].cands[ci].offer as usize];
                (!need_p || !provs.contains(&o.provider)) && (!need_r || !regs.contains(&o.region))
            };
            // While the rule is unmet a unit may cost more than it saves: the whole decides.
            let limit = if need_p || need_r { f64::INFINITY } else { 0.0 };
            if let Some((d, moves)) = best_chain(p, &mut live, u, limit, &new, Some(g), &mut work) {
                total += d;
                all.extend(moves);
            }
        }
        if !(group_ok(p, g, live.choice) && total < -1e-9) {
            live.undo(p, &all);
        }
    }
    work.spent
}

/// Sort units by penalty, largest first (ties: lower index).
fn by_penalty_first(p: &Problem, units: &mut [usize]) {
    units.sort_by(|&a, &b| {
        p.units[b]
            .penalty
            .total_cmp(&p.units[a].penalty)
            .then(a.cmp(&b))
    });
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{fleet, gang, images, pool, region};
    use super::*;
    use crate::problem::compile;
    use crate::Policy;
    use stratus_model::*;

    /// The state `choice` describes, as (unit key, pool id), taken into a fresh residual.
    fn state(p: &Problem, at: &[(&str, &str)]) -> (Choice, Residual) {
        let mut choice = vec![None; p.units.len()];
        let mut res = Residual::new(p);
        for (key, pool) in at {
            let u = p.units.iter().position(|x| x.key == *key).unwrap();
            let c = super::super::cand_on(p, u, pool);
            choice[u] = Some(c);
            res.take(p, u, c);
        }
        (choice, res)
    }

    fn pools_of(p: &Problem, choice: &Choice) -> Vec<(String, Option<String>)> {
        p.units
            .iter()
            .zip(choice)
            .map(|(u, c)| {
                let pool = c.map(|c| p.offers[u.cands[c].offer as usize].pool_id.clone());
                (u.key.clone(), pool)
            })
            .collect()
    }

    /// Pools of `largest`, `largest / 2`, ... 1 nodes (a power of two), the largest cheapest
    /// ($10 a node-hour, then $5 more each size down), and gangs g1, g2, ... g`largest` that
    /// fill each exactly. With `largest` 4, from `NESTED_START` (g2 on the big pool, g1 on the
    /// middle one, g4 out), placing g4 needs g2 moved to the middle pool, which needs g1
    /// moved first.
    fn nested_pools(largest: u32) -> Problem {
        let sizes: Vec<u32> = (0..=largest.ilog2()).rev().map(|k| 1 << k).collect();
        let pools = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| pool(&format!("p{n}"), *n, 10.0 + 5.0 * i as f64))
            .collect();
        let f = fleet(vec![region("us-east-1", 38.9, -77.4, 100.0, pools)]);
        let w = WorkloadSet {
            training: sizes
                .iter()
                .rev()
                .map(|n| gang(&format!("g{n}"), 4 * n))
                .collect(),
            ..WorkloadSet::default()
        };
        compile(&f, &w, &Policy::default(), None)
    }

    const NESTED_START: [(&str, &str); 2] = [("g1", "p2"), ("g2", "p4")];

    #[test]
    fn relocate_clears_a_pool_with_a_chain_two_moves_deep() {
        let p = nested_pools(4);
        let (mut choice, mut res) = state(&p, &NESTED_START);
        let before = objective(&p, &choice);
        let work = relocate(&p, &mut choice, &mut res, 1_000_000, &Watch::never());
        assert!(work > 0);
        assert_eq!(
            pools_of(&p, &choice),
            vec![
                ("g1".into(), Some("p1".into())),
                ("g2".into(), Some("p2".into())),
                ("g4".into(), Some("p4".into())),
            ]
        );
        assert!(feasible(&p, &choice));
        assert!(objective(&p, &choice) < before);
        // The residual it kept is the one the new plan implies, to the bit.
        let (_, fresh) = state(&p, &[("g1", "p1"), ("g2", "p2"), ("g4", "p4")]);
        assert_eq!(res.nodes, fresh.nodes);
        assert_eq!(res.watts, fresh.watts);
    }

    #[test]
    fn the_deeper_pass_finds_a_chain_three_moves_deep_that_relocate_cuts_short() {
        // Pools of 8, 4, 2 and 1 nodes, the largest cheapest, and gangs that fill each. From
        // g4 on the 8-node pool, g2 on the 4-node one and g1 on the 2-node one, placing g8
        // needs g4, g2 and g1 each moved one pool down. Two levels of chains reach g2 only
        // and leave it (or g4) out; the third level places all four.
        let p = nested_pools(8);
        let start = [("g1", "p2"), ("g2", "p4"), ("g4", "p8")];
        let all = vec![
            ("g1".into(), Some("p1".into())),
            ("g2".into(), Some("p2".into())),
            ("g4".into(), Some("p4".into())),
            ("g8".into(), Some("p8".into())),
        ];
        let (was, _) = state(&p, &start);
        let (mut shallow, mut res) = state(&p, &start);
        relocate(&p, &mut shallow, &mut res, 1_000_000, &Watch::never());
        assert!(feasible(&p, &shallow));
        assert_ne!(pools_of(&p, &shallow), all);
        assert!(shallow.iter().any(|c| c.is_none()));
        let (mut deep, mut res) = state(&p, &start);
        relocate_deeper(&p, &mut deep, &mut res, 1_000_000, &Watch::never());
        assert_eq!(pools_of(&p, &deep), all);
        assert!(feasible(&p, &deep));
        assert!(objective(&p, &deep) < objective(&p, &shallow));
        assert!(objective(&p, &shallow) <= objective(&p, &was));
        let (_, fresh) = state(
            &p,
            &[("g1", "p1"), ("g2", "p2"), ("g4", "p4"), ("g8", "p8")],
        );
        assert_eq!((&res.nodes, &res.watts), (&fresh.nodes, &fresh.watts));
    }

    #[test]
    fn relocate_stops_its_chains_at_the_cap_and_leaves_the_plan_as_it_was() {
        // The chain of `relocate_clears_a_pool_with_a_chain_two_moves_deep`, under every cap
        // from 0 to what it needs: the work spent passes the cap by at most one unit's
        // candidates; what a cap cuts short is undone to the bit; at the cap it needs, the
        // chain is found.
        let p = nested_pools(4);
        let start = NESTED_START;
        let (mut choice, mut res) = state(&p, &start);
        let needed = relocate_within(
            &p,
            &mut choice,
            &mut res,
            1,
            u64::MAX,
            CHAIN_DEPTH,
            &Watch::never(),
        );
        let found = choice.clone();
        assert_ne!(found, state(&p, &start).0);
        let most = p.units.iter().map(|u| u.cands.len() as u64).max().unwrap();
        for cap in 0..=needed {
            let (mut choice, mut res) = state(&p, &start);
            let spent = relocate_within(
                &p,
                &mut choice,
                &mut res,
                1,
                cap,
                CHAIN_DEPTH,
                &Watch::never(),
            );
            assert!(spent < cap.max(1) + most, "cap {cap}: spent {spent}");
            assert!(feasible(&p, &choice));
            // Whatever was kept (nothing, a shorter chain that pays, or the chain) is exactly
            // in the residual, and never worse than the start.
            let mut fresh = Residual::new(&p);
            for (u, c) in choice.iter().enumerate() {
                if let Some(c) = c {
                    fresh.take(&p, u, *c);
                }
            }
            assert_eq!((&res.nodes, &res.watts), (&fresh.nodes, &fresh.watts));
            let (was, _) = state(&p, &start);
            assert!(objective(&p, &choice) <= objective(&p, &was));
            if cap >= needed {
                assert_eq!(choice, found, "cap {cap}");
            }
        }
    }

    #[test]
    fn relocate_frees_a_regions_power_by_moving_a_job_to_another_region() {
        // Region a's cap fits the 6-node gang or the 1-node batch job's pool draw, not both;
        // the batch job sits there (cheapest) and the gang is out. Moving the job to region b
        // (dearer) lets the gang in.
        let node_w = pool("x", 1, 1.0).node_watts(1.0).0 * 1.2;
        let cap_mw = node_w * 6.5 / 1e6;
        let f = fleet(vec![
            region(
                "us-east-1",
                38.9,
                -77.4,
                cap_mw,
                vec![pool("ax", 6, 10.0), pool("ay", 1, 5.0)],
            ),
            region("us-east-2", 40.0, -83.0, 100.0, vec![pool("bz", 1, 30.0)]),
        ]);
        let w = WorkloadSet {
            training: vec![gang("gang", 24)],
            batch: vec![Batch {
                name: "job".into(),
                priority: 100,
                chips: 4,
                accelerators: vec![Accelerator::H100],
                images: images(),
                work_chip_hours: ChipHours(10.0),
                deadline_hours: None,
                max_usd_per_chip_hour: None,
                residency: vec![],
                spot: false,
            }],
            ..WorkloadSet::default()
        };
        let p = compile(&f, &w, &Policy::default(), None);
        let (mut choice, mut res) = state(&p, &[("job", "ay")]);
        let gi = p.units.iter().position(|u| u.key == "gang").unwrap();
        assert_eq!(res.blocks(&p, gi, 0), Some(Constraint::PowerCap));
        relocate(&p, &mut choice, &mut res, 1_000_000, &Watch::never());
        assert_eq!(
            pools_of(&p, &choice),
            vec![
                ("gang".into(), Some("ax".into())),
                ("job".into(), Some("bz".into())),
            ]
        );
        assert!(feasible(&p, &choice));
    }
}
