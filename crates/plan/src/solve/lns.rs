//! Large-neighbourhood search: free a few units around a target, re-optimise them exactly
//! (`milp`), keep the result when it is better.
//!
//! Targets, in order: units left out (largest penalty first), then units paying more than
//! their cheapest option (largest excess first). A target's neighbourhood is the target, the
//! units on the offers of its cheapest options, the units left out that could use those
//! offers, and, where a region's power binds, the units on that region's other offers: the
//! trades a one-move local search cannot make (a large gang for a small one, one job out so two
//! fit, a move that frees power for another pool). Services are freed whole.
//!
//! Work is counted in simplex iterations and branch-and-bound nodes, never in time, so the same
//! input and budget give the same plan.

use super::construct::{fill, repair_groups};
use super::milp::{reoptimize, Cx};
use super::{group_ok, objective, occupants, unit_cost, Choice, Classes, Residual};
use crate::interrupt::Watch;
use crate::problem::Problem;

/// Options of the target whose offers make its neighbourhood.
const TARGET_OPTIONS: usize = 6;
/// Levels a neighbourhood grows by.
const DEPTH: usize = 3;
/// Options of a freed unit whose offers the next level frees.
const ALTERNATIVES: usize = 3;
/// Units freed at most per neighbourhood.
const FREE_MAX: usize = 48;
/// Candidates a freed unit keeps in the sub-problem besides its current one.
const KEEP: usize = 16;
/// Branch-and-bound nodes per sub-problem.
const NODE_LIMIT: u64 = 2_000;
/// Candidates per unit when the whole problem is re-optimised at once…
const WHOLE_KEEP: usize = 12;
/// …which it is when it has at most this many variables…
const WHOLE_MAX_VARIABLES: usize = 6_000;
/// …within this many branch-and-bound nodes…
const WHOLE_NODE_LIMIT: u64 = 1_000;
/// …and with no deadline, or at least this many seconds before it (see [`hurried`]).
const HURRIED_SECONDS_LEFT: f64 = 3.0;
/// Under a deadline this near, sub-problems get this fraction of their branch-and-bound nodes:
/// one that runs to `NODE_LIMIT` takes 0.2–0.9 s on the 300-workload sets, all a 1 s net
/// leaves the search.
const HURRIED_NODE_DIVISOR: u64 = 4;

/// Whether the caller's deadline is less than `HURRIED_SECONDS_LEFT` away. Never without a
/// deadline, so plans without one do not depend on the clock.
fn hurried(cx: &Cx) -> bool {
    cx.time_left()
        .is_some_and(|t| t.as_secs_f64() < HURRIED_SECONDS_LEFT)
}

/// `NODE_LIMIT`, or a `HURRIED_NODE_DIVISOR`th of it when [`hurried`].
fn node_limit(cx: &Cx) -> u64 {
    if hurried(cx) {
        NODE_LIMIT / HURRIED_NODE_DIVISOR
    } else {
        NODE_LIMIT
    }
}
/// Variables past which the units `make_room` moved are not re-optimised together (the
/// greedy put-back stands). Every larger re-solve measured on the contended 10,000-workload
/// sets took seconds and found nothing the put-back had not: 515 and 863 evicted units (seed
/// 3) took 4 s and 28 s; 220 and 297 units (seed 9, up to 5,049 variables) 0.7–10 s each.
const SETTLE_MAX_VARIABLES: usize = 2_000;
/// Variables from which the next neighbourhood is solved ahead on a second thread (below it a
/// thread costs more than the solve).
const AHEAD_MIN_VARIABLES: usize = 60;
/// Targets past the current one looked at for a second sub-problem to solve at once.
const LOOK_AHEAD: usize = 3;
/// Levels of units a trial of `make_room` adds to its re-solve from the units it evicted and
/// could not put back…
const CHAIN_LEVELS: usize = 2;
/// …and how many at most.
const CHAIN_MAX: usize = 24;
/// Rounds over all targets at most.
const ROUNDS: usize = 4;
/// Variables of the largest neighbourhood (`FREE_MAX` units, `KEEP` options and their own
/// each). A `make_room` sub-problem larger than this (up to `SETTLE_MAX_VARIABLES`) gets
/// proportionally fewer branch-and-bound nodes and its work counts proportionally more, since
/// a simplex iteration costs more the larger the programme.
const NEIGHBOURHOOD_VARIABLES: usize = FREE_MAX * (KEEP + 1);

/// The options of `u` a neighbourhood or an eviction is built around: below `limit` (the
/// options cheaper than where it is), at most `TARGET_OPTIONS`. For a unit left out, half are
/// its cheapest and half those nearest to fitting now (fewest nodes short, relative to what
/// they need, then cheapest): when leaving it out costs far more than any option, the option
/// that is easiest to clear matters, not the one a few dollars cheaper.
fn target_options(
    p: &Problem,
    res: &Residual,
    u: usize,
    limit: usize,
    left_out: bool,
) -> Vec<usize> {
    let cands = &p.units[u].cands[..limit];
    let cheapest = if left_out {
        TARGET_OPTIONS / 2
    } else {
        TARGET_OPTIONS
    };
    let mut picked: Vec<usize> = (0..cands.len().min(cheapest)).collect();
    if left_out {
        let short = |c: usize| {
            let cand = &cands[c];
            let miss = |o: u32, n: u32| (n as i64 - res.nodes[o as usize].max(0)).max(0) as f64;
            (miss(cand.offer, cand.nodes) + miss(cand.offer2, cand.nodes2))
                / cand.total_nodes().max(1) as f64
        };
        let mut rest: Vec<(f64, usize)> =
            (picked.len()..cands.len()).map(|c| (short(c), c)).collect();
        rest.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        picked.extend(
            rest.into_iter()
                .take(TARGET_OPTIONS - picked.len())
                .map(|x| x.1),
        );
    }
    picked
}

/// Add `u` and, for a service, all its units, if they fit under the cap.
fn admit(p: &Problem, free: &mut Vec<usize>, seen: &mut [bool], u: usize) {
    let units: Vec<usize> = match p.units[u].group {
        Some(g) => p.groups[g].units.clone(),
        None => vec![u],
    };
    let new: Vec<usize> = units
        .into_iter()
        .filter(|&v| !seen[v] && !p.units[v].cands.is_empty())
        .collect();
    if free.len() + new.len() > FREE_MAX {
        return;
    }
    for v in new {
        seen[v] = true;
        free.push(v);
    }
}

/// The neighbourhood of `t` (see the module documentation), grown breadth first: the units on
/// the target's cheaper offers, then the units on the cheapest offers of those, and so on for
/// `DEPTH` levels, until `FREE_MAX` units are free.
fn neighbourhood(
    p: &Problem,
    choice: &Choice,
    res: &Residual,
    at: &[Vec<usize>],
    unplaced: &[usize],
    t: usize,
) -> Vec<usize> {
    let unit = &p.units[t];
    let limit = choice[t].unwrap_or(unit.cands.len());
    let mut free = Vec::new();
    let mut seen = vec![false; p.units.len()];
    let mut offer_seen = vec![false; p.offers.len()];
    admit(p, &mut free, &mut seen, t);
    let mut frontier: Vec<usize> = Vec::new();
    let mut first_offers: Vec<usize> = Vec::new();
    for ci in target_options(p, res, t, limit, choice[t].is_none()) {
        let c = &unit.cands[ci];
        frontier.extend([c.offer as usize, c.offer2 as usize]);
        // Where power binds, the units on the region's other offers are in the way too.
        let r = c.region as usize;
        if c.watts > res.watts(r) {
            frontier.extend((0..p.offers.len()).filter(|&o| p.offers[o].region == r));
        }
    }
    for depth in 0..DEPTH {
        let mut grown = Vec::new();
        for &o in &frontier {
            if offer_seen[o] {
                continue;
            }
            offer_seen[o] = true;
            if depth == 0 {
                first_offers.push(o);
            }
            for &v in &at[o] {
                if !seen[v] {
                    admit(p, &mut free, &mut seen, v);
                    if seen[v] {
                        grown.push(v);
                    }
                }
            }
        }
        if depth == 0 {
            // Units left out that could use the target's offers compete for them.
            for &v in unplaced {
                let wants = p.units[v]
                    .cands
                    .iter()
                    .take(TARGET_OPTIONS)
                    .any(|c| first_offers.contains(&(c.offer as usize)));
                if wants {
                    admit(p, &mut free, &mut seen, v);
                }
            }
        }
        if free.len() >= FREE_MAX {
            break;
        }
        frontier = grown
            .iter()
            .flat_map(|&v| p.units[v].cands.iter().take(ALTERNATIVES))
            .flat_map(|c| [c.offer as usize, c.offer2 as usize])
            .collect();
    }
    free.sort_unstable();
    free
}

/// Targets of one round: units left out, largest penalty first, then units above their
/// cheapest option, largest excess first.
fn targets(p: &Problem, choice: &Choice) -> (Vec<usize>, Vec<usize>) {
    let mut out: Vec<(f64, usize)> = Vec::new();
    let mut left: Vec<(f64, usize)> = Vec::new();
    for (u, unit) in p.units.iter().enumerate() {
        let Some(best) = unit.cands.first() else {
            continue;
        };
        match choice[u] {
            None => left.push((unit.penalty, u)),
            Some(c) if unit.cands[c].cost > best.cost + 1e-9 => {
                out.push((unit.cands[c].cost - best.cost, u))
            }
            _ => {}
        }
    }
    let by = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    left.sort_by(by);
    out.sort_by(by);
    let unplaced: Vec<usize> = left.iter().map(|x| x.1).collect();
    let mut all = unplaced.clone();
    all.extend(out.into_iter().map(|x| x.1));
    (all, unplaced)
}

/// Improve `choice`: first make room by force (`make_room`) for the units left out, largest
/// penalty first, within an eighth of `budget` (cheap, and it places what a bounded
/// neighbourhood cannot: a gang that needs a whole pool); then re-optimise neighbourhoods
/// until a round finds nothing, `budget` (see [`settle`] for its unit) runs out, or the
/// objective is within `floor` (a proven bound plus what is not worth searching for); then
/// make room by force again within a quarter more of the budget, and search again around what
/// that moved. Each step keeps only what lowers the objective. Returns the work spent.
pub(crate) fn search(
    p: &Problem,
    cls: &Classes,
    choice: &mut Choice,
    res: &mut Residual,
    budget: u64,
    floor: f64,
    watch: &Watch,
) -> u64 {
    let cx = &mut Cx::watched(p, cls, watch);
    let mut failed = Vec::new();
    let (work, _) = force_room(
        cx,
        choice,
        res,
        budget / 8,
        floor,
        &mut failed,
        false,
        watch,
    );
    let mut spent = work;
    let before = choice.clone();
    spent += rounds(cx, choice, res, budget.saturating_sub(spent), floor, watch);
    // A target that failed is tried again only if the rounds changed the plan on an offer its
    // trials clear: on the same plan it would fail the same way (it is all deterministic),
    // and elsewhere a change alters only where the evicted units go back.
    let mut touched = vec![false; p.offers.len()];
    for (u, (was, is)) in before.iter().zip(choice.iter()).enumerate() {
        if was != is {
            for c in [was, is].into_iter().flatten() {
                let cand = &p.units[u].cands[*c];
                touched[cand.offer as usize] = true;
                touched[cand.offer2 as usize] = true;
            }
        }
    }
    failed.retain(|(_, offers)| offers.iter().all(|&o| !touched[o]));
    spent
        + room_then_rounds(
            cx,
            choice,
            res,
            budget / 4,
            floor,
            &mut failed,
            false,
            watch,
        )
}

/// `force_room` within `allowance`, then, if it changed the plan, the neighbourhood rounds
/// around what the evictions moved with what is left of the allowance. Returns the work spent.
#[allow(clippy::too_many_arguments)]
fn room_then_rounds(
    cx: &mut Cx,
    choice: &mut Choice,
    res: &mut Residual,
    allowance: u64,
    floor: f64,
    failed: &mut Vec<(usize, Vec<usize>)>,
    rivals: bool,
    watch: &Watch,
) -> u64 {
    let (work, made) = force_room(cx, choice, res, allowance, floor, failed, rivals, watch);
    let mut spent = work;
    if made && work < allowance {
        spent += rounds(cx, choice, res, allowance - work, floor, watch);
    }
    spent
}

/// A last pass over what the finished search still leaves out: `make_room` whose trials also
/// put in the other units left out that want the room, re-solve with the units on the options
/// of what stays out, and clear a service's options one at a time (see [`make_room`]), within
/// a quarter of `budget`, then the
/// neighbourhood rounds around what it moved with what is left of that quarter. Not part of
/// [`search`]: taken early, these trades change where the search goes next, and over the exact
/// test's sets that ended worse as often as better; last, they only lower the objective.
/// Returns the work spent.
pub(crate) fn trade(
    p: &Problem,
    cls: &Classes,
    choice: &mut Choice,
    res: &mut Residual,
    budget: u64,
    floor: f64,
    watch: &Watch,
) -> u64 {
    let cx = &mut Cx::watched(p, cls, watch);
    let failed = &mut Vec::new();
    room_then_rounds(cx, choice, res, budget / 4, floor, failed, true, watch)
}

/// `make_room` for each unit left out, largest penalty first, within `allowance`, but those in
/// `failed`; those for which it finds nothing are added to `failed` with the offers their
/// trials cleared, and `failed` is emptied when the plan changes. `rivals` as for `make_room`.
#[allow(clippy::too_many_arguments)]
fn force_room(
    cx: &mut Cx,
    choice: &mut Choice,
    res: &mut Residual,
    allowance: u64,
    floor: f64,
    failed: &mut Vec<(usize, Vec<usize>)>,
    rivals: bool,
    watch: &Watch,
) -> (u64, bool) {
    let p = cx.p;
    let (_, unplaced) = targets(p, choice);
    let mut spent = 0;
    let mut made = false;
    for t in unplaced {
        if spent >= allowance || objective(p, choice) <= floor || watch.stop() {
            break;
        }
        // An earlier eviction may have placed it.
        if choice[t].is_none() && failed.iter().all(|f| f.0 != t) {
            let at = occupants(p, choice);
            let left = allowance - spent;
            let (work, applied, cleared) = make_room(cx, choice, res, &at, t, left, rivals);
            spent += work;
            made |= applied;
            if applied {
                failed.clear();
            } else if let Some(offers) = cleared {
                failed.push((t, offers));
            }
        }
    }
    (spent, made)
}

/// The neighbourhood rounds of [`search`].
fn rounds(
    cx: &mut Cx,
    choice: &mut Choice,
    res: &mut Residual,
    budget: u64,
    floor: f64,
    watch: &Watch,
) -> u64 {
    let p = cx.p;
    let mut spent = 0u64;
    // A problem small enough is first re-optimised whole.
    let free: Vec<usize> = (0..p.units.len())
        .filter(|&u| !p.units[u].cands.is_empty())
        .collect();
    let size: usize = free
        .iter()
        .map(|&u| p.units[u].cands.len().min(WHOLE_KEEP))
        .sum();
    // Not when a deadline is near: the whole problem's solve takes seconds on the larger sets
    // (2.1 s on one of 226 workloads, for nothing), and one cut short by the deadline ends
    // the search with nothing, where the neighbourhoods would have found something.
    if size <= WHOLE_MAX_VARIABLES && objective(p, choice) > floor && !hurried(cx) && !watch.stop()
    {
        spent += settle(cx, choice, res, &free, WHOLE_KEEP, WHOLE_NODE_LIMIT).0;
    }
    let mut obj = objective(p, choice);
    for _ in 0..ROUNDS {
        let (list, unplaced) = targets(p, choice);
        let mut at = occupants(p, choice);
        let mut improved = false;
        let mut done = vec![false; p.units.len()];
        // Interchangeable targets (one class, one current option) that found nothing since
        // the plan last changed: another of them would find nothing too.
        let mut fruitless: Vec<(usize, Option<usize>)> = Vec::new();
        for (i, &t) in list.iter().enumerate() {
            if spent >= budget || obj <= floor || watch.stop() {
                return spent;
            }
            if skipped(cx, choice, &done, &fruitless, t) {
                continue;
            }
            let key = (cx.cls.of[t], choice[t]);
            let free = neighbourhood(p, choice, res, &at, &unplaced, t);
            let limit = node_limit(cx);
            // Two sub-problems at once, one on a second thread: this target's, when it is
            // not solved yet, and the next target's on this plan. Most neighbourhoods find
            // nothing and the plan stays, so the next target then looks its result up. The
            // next target is the first after this one that would not be skipped if this one
            // found nothing.
            let this = (variables(p, &free, KEEP) >= AHEAD_MIN_VARIABLES)
                .then(|| cx.ahead(choice, res, &free, KEEP, limit))
                .flatten();
            if let Some(this) = this {
                let mut if_fruitless = fruitless.clone();
                if_fruitless.push(key);
                let next = list[i + 1..]
                    .iter()
                    .filter(|&&w| !skipped(cx, choice, &done, &if_fruitless, w))
                    .take(LOOK_AHEAD)
                    .find_map(|&w| {
                        let nb = neighbourhood(p, choice, res, &at, &unplaced, w);
                        (variables(p, &nb, KEEP) >= AHEAD_MIN_VARIABLES)
                            .then(|| cx.ahead(choice, res, &nb, KEEP, limit))
                            .flatten()
                    });
                if let Some(next) = next {
                    let (a, b) = std::thread::scope(|sc| {
                        let h = sc.spawn(move || next.solve(p));
                        let a = this.solve(p);
                        (a, h.join().expect("a sub-problem solved ahead"))
                    });
                    cx.remember(a.0, a.1);
                    cx.remember(b.0, b.1);
                }
            }
            let (work, applied) = settle(cx, choice, res, &free, KEEP, limit);
            spent += work;

            if applied {
                at = occupants(p, choice);
                obj = objective(p, choice);
                improved = true;
                fruitless.clear();
                for &u in &free {
                    done[u] = true;
                }
            } else if key.0 != usize::MAX {
                fruitless.push(key);
            }
        }
        if !improved {
            break;
        }
    }
    spent
}

/// Whether a round passes over target `t`: freed (and settled) by an earlier neighbourhood
/// of the round, or interchangeable (one class, one current option) with a target in
/// `fruitless`, which found nothing since the plan last changed.
fn skipped(
    cx: &Cx,
    choice: &Choice,
    done: &[bool],
    fruitless: &[(usize, Option<usize>)],
    t: usize,
) -> bool {
    let key = (cx.cls.of[t], choice[t]);
    done[t] || (key.0 != usize::MAX && fruitless.contains(&key))
}

/// Room made by force for a unit left out, when its neighbourhood was too large to solve (a
/// gang that needs a whole pool, a service whose every option is taken): each trial evicts
/// every unit on some offers (services whole; where power binds, the region's offers too),
/// places the target, puts the evicted back greedily, largest penalty first, and re-optimises
/// them together (`settle`; not past `SETTLE_MAX_VARIABLES`, where the put-back stands). With
/// `rivals`, the other units left out that want the cleared offers are put in after the
/// evicted (two smaller gangs may be worth more than the one evicted), and the re-solve also
/// frees the units on the cheapest options of each evicted unit still out, two levels deep (a
/// chain: the gang evicted takes a pool whose gang moves to a third). A job tries each of its
/// cheapest options in turn; a service clears the offers of all its units' cheapest options at
/// once and is placed whole first, and with `rivals` then tries each option of each unit left
/// out alone, that unit fixed there and the rest of the service placed around it.
/// Trials stop once their work reaches `allowance`. The best trial is kept if it beats the
/// plan. Returns the work spent (the evicted units' candidates, and the sub-problems'), whether
/// the plan changed, and the offers the trials cleared if every trial ran.
fn make_room(
    cx: &mut Cx,
    choice: &mut Choice,
    res: &mut Residual,
    at: &[Vec<usize>],
    t: usize,
    allowance: u64,
    rivals: bool,
) -> (u64, bool, Option<Vec<usize>>) {
    let p = cx.p;
    // Offers a candidate needs cleared.
    let needs = |u: usize, c: usize, offers: &mut Vec<usize>| {
        let cand = &p.units[u].cands[c];
        offers.extend([cand.offer as usize, cand.offer2 as usize]);
        let r = cand.region as usize;
        if cand.watts > res.watts(r) {
            offers.extend((0..p.offers.len()).filter(|&o| p.offers[o].region == r));
        }
    };
    // Trials: (offers to clear, units placed first, a unit and its candidate fixed first).
    type Trial = (Vec<usize>, Vec<usize>, Option<(usize, usize)>);
    let mut trials: Vec<Trial> = Vec::new();
    match p.units[t].group {
        None => {
            for c in target_options(p, res, t, p.units[t].cands.len(), true) {
                let mut offers = Vec::new();
                needs(t, c, &mut offers);
                trials.push((offers, Vec::new(), Some((t, c))));
            }
        }
        Some(g) => {
            let units = &p.groups[g].units;
            let mut offers = Vec::new();
            for &u in units {
                let left_out = choice[u].is_none();
                for c in target_options(p, res, u, p.units[u].cands.len(), left_out) {
                    needs(u, c, &mut offers);
                }
            }
            trials.push((offers, units.clone(), None));
            // With `rivals`, then one option of one unit left out at a time: clearing every
            // option of every unit at once evicts what can go nowhere else, while the service
            // may need only one pool cleared, its other units going where there is room
            // already. Only in the last pass: inside the search these trials spent the
            // allowance other targets needed (exact test: 201 of 215 within 1 %, not 203).
            for &u in units.iter().filter(|&&u| rivals && choice[u].is_none()) {
                for c in target_options(p, res, u, p.units[u].cands.len(), true) {
                    let mut one = Vec::new();
                    needs(u, c, &mut one);
                    trials.push((one, units.clone(), Some((u, c))));
                }
            }
        }
    }
    // Put-back order: largest penalty first, ties by index.
    let by_penalty = |a: &usize, b: &usize| {
        p.units[*b]
            .penalty
            .total_cmp(&p.units[*a].penalty)
            .then(a.cmp(b))
    };
    let mut work = 0u64;
    let mut best: Option<(f64, Choice, Residual)> = None;
    let before = objective(p, choice);
    let mut cleared = Some(Vec::new());
    for (mut offers, lead, fixed) in trials {
        if work >= allowance {
            cleared = None;
            break;
        }
        offers.sort_unstable();
        offers.dedup();
        if let Some(c) = cleared.as_mut() {
            c.extend_from_slice(&offers);
        }
        let mut evict: Vec<usize> = Vec::new();
        for &o in &offers {
            for &v in &at[o] {
                match p.units[v].group {
                    Some(g) => {
                        evict.extend(p.groups[g].units.iter().filter(|&&w| choice[w].is_some()))
                    }
                    None => evict.push(v),
                }
            }
        }
        // A service placed around one fixed unit is placed afresh.
        if fixed.is_some() {
            evict.extend(lead.iter().filter(|&&w| choice[w].is_some()));
        }
        evict.sort_unstable();
        evict.dedup();
        let (mut ch, mut rs) = (choice.clone(), res.clone());
        for &v in &evict {
            if let Some(cv) = ch[v].take() {
                rs.give(p, v, cv);
            }
        }
        if let Some((u, c)) = fixed {
            if rs.blocks(p, u, c).is_some() {
                continue;
            }
            rs.take(p, u, c);
            ch[u] = Some(c);
        }
        evict.sort_by(by_penalty);
        let order: Vec<usize> = lead.iter().chain(&evict).copied().collect();
        // The other units left out that want the cleared offers compete for what the
        // put-back leaves: one gang in may be worth less than the two it makes room for.
        let mut cleared_offer = vec![false; p.offers.len()];
        for &o in &offers {
            cleared_offer[o] = true;
        }
        let mut rival: Vec<usize> = (0..p.units.len())
            .filter(|&v| {
                rivals
                    && v != t
                    && ch[v].is_none()
                    && p.units[v].group.is_none_or(|g| {
                        p.groups[g].units.iter().all(|&w| ch[w].is_none() && w != t)
                    })
                    && p.units[v].cands.iter().take(TARGET_OPTIONS).any(|c| {
                        cleared_offer[c.offer as usize] || cleared_offer[c.offer2 as usize]
                    })
            })
            .collect();
        rival.sort_by(by_penalty);
        let order: Vec<usize> = order.into_iter().chain(rival).collect();
        work += order
            .iter()
            .map(|&v| p.units[v].cands.len() as u64 + 1)
            .sum::<u64>();
        let mut done = vec![false; p.groups.len()];
        let cost = |u: usize, c: usize| p.units[u].cands[c].cost;
        fill(p, &order, &cost, &mut done, (&mut ch, &mut rs));
        repair_groups(p, &mut ch, &mut rs);
        // The greedy put-back, then everything moved re-optimised together around the target.
        let mut freed: Vec<usize> = order;
        if fixed.is_none() {
            freed.push(t);
        }
        freed.sort_unstable();
        freed.dedup();
        // With `rivals`, the units on the cheapest options of an evicted unit the put-back
        // left out, and on theirs, join the re-solve.
        let mut seen = vec![false; p.units.len()];
        for &v in &freed {
            seen[v] = true;
        }
        let ch_at = occupants(p, &ch);
        let mut frontier: Vec<usize> = freed
            .iter()
            .copied()
            .filter(|&v| rivals && ch[v].is_none() && choice[v].is_some())
            .collect();
        let mut joined = 0;
        for _ in 0..CHAIN_LEVELS {
            let mut next = Vec::new();
            for &v in &frontier {
                for c in p.units[v].cands.iter().take(ALTERNATIVES) {
                    for o in [c.offer as usize, c.offer2 as usize] {
                        for &w in &ch_at[o] {
                            let whole = p.units[w].group.is_none();
                            if !seen[w] && whole && joined < CHAIN_MAX {
                                seen[w] = true;
                                joined += 1;
                                next.push(w);
                            }
                        }
                    }
                }
            }
            freed.extend_from_slice(&next);
            frontier = next;
        }
        freed.sort_unstable();
        let size = variables(p, &freed, KEEP);
        let limit = node_limit(cx);
        if size <= SETTLE_MAX_VARIABLES {
            let nodes = (limit * NEIGHBOURHOOD_VARIABLES as u64 / size.max(1) as u64).min(limit);
            // Counted at what it costs: an iteration of a larger programme costs more.
            let scale = (size / NEIGHBOURHOOD_VARIABLES).max(1) as u64;
            work += scale * settle(cx, &mut ch, &mut rs, &freed, KEEP, nodes).0;
        }
        let obj = objective(p, &ch);
        if obj < before - 1e-9 * before.abs().max(1.0)
            && best.as_ref().is_none_or(|(b, _, _)| obj < *b)
        {
            best = Some((obj, ch, rs));
        }
    }
    match best {
        Some((_, ch, rs)) => {
            *choice = ch;
            *res = rs;
            (work, true, cleared)
        }
        None => (work, false, cleared),
    }
}

/// Variables of the sub-problem that re-optimises `free` with `keep` candidates each: one per
/// candidate kept and one for leaving the unit out (at most; `milp` merges a class's units).
fn variables(p: &Problem, free: &[usize], keep: usize) -> usize {
    free.iter()
        .map(|&u| p.units[u].cands.len().min(keep) + 1)
        .sum()
}

/// Re-optimise `free` against the rest of the plan and keep the result if it is better and
/// keeps every rule. Returns the work spent (the sub-problem's variables, to build it, plus
/// its simplex iterations and branch-and-bound nodes) and whether the plan changed.
fn settle(
    cx: &mut Cx,
    choice: &mut Choice,
    res: &mut Residual,
    free: &[usize],
    keep: usize,
    node_limit: u64,
) -> (u64, bool) {
    let p = cx.p;
    for &u in free {
        if let Some(c) = choice[u] {
            res.give(p, u, c);
        }
    }
    let before: f64 = free.iter().map(|&u| unit_cost(p, u, choice[u])).sum();
    let r = reoptimize(cx, choice, res, free, keep, node_limit);
    let work = variables(p, free, keep) as u64 + r.work;
    if r.found {
        let after: f64 = r.assign.iter().map(|&(u, c)| unit_cost(p, u, c)).sum();
        if after < before - 1e-9 * before.abs().max(1.0) {
            // Checked again here: the solver's tolerances must never let a plan break a rule.
            let mut trial = res.clone();
            let fits = r.assign.iter().all(|&(u, c)| match c {
                Some(c) if trial.blocks(p, u, c).is_none() => {
                    trial.take(p, u, c);
                    true
                }
                Some(_) => false,
                None => true,
            });
            let mut next = choice.clone();
            for &(u, c) in &r.assign {
                next[u] = c;
            }
            let groups_ok = free
                .iter()
                .filter_map(|&u| p.units[u].group)
                .all(|g| group_ok(p, g, &next));
            if fits && groups_ok {
                *res = trial;
                *choice = next;
                return (work, true);
            }
        }
    }
    for &u in free {
        if let Some(c) = choice[u] {
            res.take(p, u, c);
        }
    }
    (work, false)
}

#[cfg(test)]
mod tests {
    use super::super::feasible;
    use super::super::fixtures::{fleet, gang, pool, region};
    use super::super::transport::classes;
    use super::*;
    use crate::problem::compile;
    use crate::Policy;
    use stratus_model::WorkloadSet;

    /// Four one-node jobs fill the only pool a four-node gang fits (one domain); a dearer pool
    /// of one-node domains could take the jobs instead.
    fn crowded() -> (Problem, Choice, Residual, usize) {
        let mut spare = pool("spare", 4, 11.0);
        spare.domain_chips = 4;
        let f = fleet(vec![region(
            "a",
            38.9,
            -77.4,
            100.0,
            vec![pool("big", 4, 10.0), spare],
        )]);
        let mut training: Vec<_> = (0..4).map(|i| gang(&format!("job{i}"), 4)).collect();
        training.push(gang("wide", 16));
        let w = WorkloadSet {
            training,
            ..WorkloadSet::default()
        };
        let p = compile(&f, &w, &Policy::default(), None);
        let wide = p.units.iter().position(|u| u.workload == "wide").unwrap();
        let mut choice: Choice = vec![None; p.units.len()];
        let mut res = Residual::new(&p);
        for u in (0..p.units.len()).filter(|&u| u != wide) {
            let c = super::super::cand_on(&p, u, "big");
            res.take(&p, u, c);
            choice[u] = Some(c);
        }
        (p, choice, res, wide)
    }

    /// `make_room` for `t` on a copy of the plan: its result and the copy's choice after it.
    fn room(
        p: &Problem,
        (choice, res): (&Choice, &Residual),
        t: usize,
        allowance: u64,
        rivals: bool,
    ) -> ((u64, bool, Option<Vec<usize>>), Choice) {
        let cls = classes(p);
        let at = occupants(p, choice);
        let (mut c, mut r) = (choice.clone(), res.clone());
        let got = make_room(
            &mut Cx::new(p, &cls),
            &mut c,
            &mut r,
            &at,
            t,
            allowance,
            rivals,
        );
        (got, c)
    }

    /// One pool of four nodes holds a four-node gang; two two-node gangs of higher priority,
    /// left out, are worth more together than it, but neither alone.
    #[test]
    fn with_rivals_room_made_for_one_unit_takes_in_another_that_wants_it() {
        let f = fleet(vec![region(
            "a",
            38.9,
            -77.4,
            100.0,
            vec![pool("big", 4, 10.0)],
        )]);
        let mut small: Vec<_> = (0..2).map(|i| gang(&format!("small{i}"), 8)).collect();
        for g in &mut small {
            g.priority = 200;
        }
        let mut training = vec![gang("wide", 16)];
        training.extend(small);
        let w = WorkloadSet {
            training,
            ..WorkloadSet::default()
        };
        let p = compile(&f, &w, &Policy::default(), None);
        let unit = |name: &str| p.units.iter().position(|u| u.workload == name).unwrap();
        let (wide, small0) = (unit("wide"), unit("small0"));
        assert!(p.units[wide].penalty < p.units[small0].penalty * 2.0);
        assert!(p.units[wide].penalty > p.units[small0].penalty);
        let mut choice: Choice = vec![None; p.units.len()];
        let mut res = Residual::new(&p);
        res.take(&p, wide, 0);
        choice[wide] = Some(0);
        // Alone, the trial evicts the wide gang for one small one: worse, so nothing changes.
        let ((_, applied, _), c0) = room(&p, (&choice, &res), small0, u64::MAX, false);
        assert!(!applied);
        assert_eq!(c0, choice);
        // With rivals, the other small gang takes the rest of the room: both in, wide out.
        let ((_, applied, _), c1) = room(&p, (&choice, &res), small0, u64::MAX, true);
        assert!(applied);
        assert_eq!(c1[wide], None);
        assert!(c1[small0].is_some() && c1[unit("small1")].is_some());
        assert!(feasible(&p, &c1) && objective(&p, &c1) < objective(&p, &choice));
    }

    #[test]
    fn room_is_made_within_the_allowance_and_not_past_it() {
        let (p, choice, res, wide) = crowded();
        let cls = classes(&p);
        // No allowance: no trial runs, nothing changes, and the unit is not marked as failed.
        let ((work, applied, cleared), c0) = room(&p, (&choice, &res), wide, 0, false);
        assert_eq!((work, applied, cleared), (0, false, None));
        assert_eq!(c0, choice);
        // With room to work: the jobs move to the spare pool and the gang takes theirs.
        let ((work, applied, cleared), c1) = room(&p, (&choice, &res), wide, u64::MAX, false);
        assert!(applied && work > 0 && cleared.is_some_and(|o| !o.is_empty()));
        assert!(c1.iter().all(|c| c.is_some()), "{c1:?}");
        assert!(feasible(&p, &c1) && objective(&p, &c1) < objective(&p, &choice));
        // A unit it cannot help is remembered as failed, and skipped on the same plan.
        let mut failed = vec![(wide, vec![0])];
        let (mut c2, mut r2) = (choice.clone(), res.clone());
        let (work, made) = force_room(
            &mut Cx::new(&p, &cls),
            &mut c2,
            &mut r2,
            u64::MAX,
            0.0,
            &mut failed,
            false,
            &Watch::never(),
        );
        assert_eq!((work, made), (0, false));
        assert_eq!(c2, choice);
    }
}
