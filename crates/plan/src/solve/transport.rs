//! The transportation relaxation: identical units aggregated into classes supply chips,
//! offers absorb them; solved by the network simplex, it prices offers and guides the plan.

use super::*;
use crate::flow;
use crate::problem::Problem;
use std::collections::HashMap;

/// Units that share an identical candidate list and penalty: the dual solves each class
/// once, and the transportation step treats it as one supply.
pub(crate) struct Classes {
    pub(crate) rep: Vec<usize>,
    pub(crate) mult: Vec<f64>,
    /// Class of each unit (`usize::MAX`: none, as for units without candidates and, up to
    /// `DP_MAX_PROVIDERS` providers, units of a redundancy group).
    pub(crate) of: Vec<usize>,
}

/// Everything the dual and the transportation step read of a unit, as words: penalty,
/// floor, whether it is in a service, and per candidate its chips, offers, nodes, cost and
/// watts. Units with equal words are interchangeable.
pub(crate) fn class_words(u: &crate::problem::Unit) -> impl Iterator<Item = u64> + '_ {
    let head = [
        u.penalty.to_bits(),
        u.tail_floor.to_bits(),
        u.group.is_some() as u64,
    ];
    head.into_iter().chain(u.cands.iter().flat_map(|c| {
        [
            c.chips as u64,
            c.offer as u64 | ((c.nodes as u64) << 32),
            c.offer2 as u64 | ((c.nodes2 as u64) << 32),
            c.cost.to_bits(),
            c.watts.to_bits(),
        ]
    }))
}

pub(crate) fn classes(p: &Problem) -> Classes {
    // Units are bucketed by a fingerprint of their words, then compared word for word with
    // the bucket's representatives, so a fingerprint collision never merges different units.
    let mut map: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut rep = Vec::new();
    let mut mult = Vec::new();
    let mut of = vec![usize::MAX; p.units.len()];
    for (ui, u) in p.units.iter().enumerate() {
        if u.cands.is_empty() {
            continue; // contributes nothing to the objective (see `objective`)
        }
        if u.group.is_some() && p.providers.len() <= DP_MAX_PROVIDERS {
            continue; // solved per group by `group_dp`
        }
        let mut h = Fingerprint::default();
        class_words(u).for_each(|w| h.eat(w));
        let bucket = map.entry(h.0).or_default();
        let same = |k: &&usize| class_words(&p.units[rep[**k]]).eq(class_words(u));
        match bucket.iter().find(same) {
            Some(&k) => {
                mult[k] += 1.0;
                of[ui] = k;
            }
            None => {
                of[ui] = rep.len();
                bucket.push(rep.len());
                rep.push(ui);
                mult.push(1.0);
            }
        }
    }
    Classes { rep, mult, of }
}

/// A fast multiplicative hash of 64-bit words (not DoS-resistant; nothing here is
/// adversarial, and `classes` checks every match in full).
#[derive(Default)]
pub(crate) struct Fingerprint(u64);

impl Fingerprint {
    fn eat(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Candidates of a class that enter the transportation relaxation (the cheapest; the rest are
/// summarised by their floor). Half the default candidate list: on the 10,000-workload bench
/// the bound is 0.1 % lower than with all 256 and the flow is solved in about half the time.
pub(crate) const TRANSPORT_CLASS_CANDIDATES: usize = 128;
/// Candidates of a redundancy group's unit that enter the transportation relaxation; the
/// rest are summarised by their floor (services are a small share of the chips, and their
/// exact rule is restored by the per-group programme of the dual and of the plan). Past
/// `DP_MAX_PROVIDERS` such units are in classes and get `TRANSPORT_CLASS_CANDIDATES`.
pub(crate) const TRANSPORT_GROUP_CANDIDATES: usize = 4;
/// Arcs from which the flow starts from every unit left out (`flow::Network::solve_from`)
/// rather than from the artificial basis. On the contended 10,000-workload sets (620,000–
/// 640,000 arcs) that start takes a tenth of the pivots: each flow is solved in 0.1–0.3 s
/// instead of 1.3–2.7 s. The start also changes which of several optimal flows is found, and
/// the plan follows the flow: on those sets the plan moved by −0.66 % to +0.39 %; on the
/// uncontended 10,000-workload sets (28,000 arcs, flows of 0.1 s either way) by −0.04 % to
/// +0.44 %, for no time saved. Below this many arcs the artificial start is kept, and with it
/// the plans it gave: the contended 1,000-workload sets have 50,000–61,000 arcs.
pub(crate) const START_MIN_ARCS: usize = 100_000;
/// $/h to integer flow cost: 10⁻⁵ $ per chip-hour resolution.
pub(crate) const TRANSPORT_SCALE: f64 = 1e5;

/// One supply of the transportation network: `count` units of `unit`'s kind (a class's
/// representative, or one service unit), offered their `keep` cheapest candidates.
pub(crate) struct Source {
    unit: usize,
    count: i64,
    keep: usize,
}

/// The transportation network, solved: sources supply chips to offers, each offer passes up
/// to `chips_left[o]` chips on to the sink (through its region's node where `power_chips`
/// caps the region), and a floor arc per source takes what goes unplaced, or to a candidate
/// beyond `keep`, at the cheapest such cost. Node counts and arc order depend only on the
/// inputs, so the result is deterministic.
pub(crate) struct TransportFlow {
    flow: flow::Flow,
    /// Per source: (candidate, arc) of each candidate arc.
    arcs: Vec<Vec<(usize, usize)>>,
    first_offer: usize,
    sink: usize,
}

pub(crate) fn transport_flow(
    p: &Problem,
    sources: &[Source],
    chips_left: &[i64],
    power_chips: &[Option<i64>],
) -> Option<TransportFlow> {
    started_flow(p, sources, chips_left, power_chips, START_MIN_ARCS)
}

/// `transport_flow`, started from every unit left out when the network has `min_arcs` arcs
/// or more.
fn started_flow(
    p: &Problem,
    sources: &[Source],
    chips_left: &[i64],
    power_chips: &[Option<i64>],
    min_arcs: usize,
) -> Option<TransportFlow> {
    let first_offer = sources.len();
    let first_region = first_offer + p.offers.len();
    let sink = first_region + p.region_cap_watts.len();
    let mut net = flow::Network::new(sink + 1);
    // Clamped so that no cost, however absurd a priority makes a penalty, overflows the
    // network simplex's arithmetic ($10⁷ per chip-hour is above any price).
    let per_chip = |v: f64, chips: u32| {
        (v / chips.max(1) as f64 * TRANSPORT_SCALE)
            .clamp(-1e12, 1e12)
            .round() as i64
    };
    let mut total = 0i64;
    let mut arcs = Vec::with_capacity(sources.len());
    // The start: every source on its floor arc (all left out), offers and regions hung from
    // the sink by the arcs they pass their chips on by, where those can carry any.
    let mut tree = vec![None; sink + 1];
    for (node, src) in sources.iter().enumerate() {
        let unit = &p.units[src.unit];
        let chips = unit.cands[0].chips.max(1);
        let supply = chips as i64 * src.count;
        net.set_supply(node, supply);
        total += supply;
        let mut floor = unit.penalty.min(unit.tail_floor);
        let mut mine = Vec::new();
        for (ci, c) in unit.cands.iter().enumerate() {
            if ci >= src.keep {
                floor = floor.min(c.cost);
                break;
            }
            let to = first_offer + c.offer as usize;
            mine.push((
                ci,
                net.add_arc(node, to, flow::INF, per_chip(c.cost, chips)),
            ));
        }
        tree[node] = Some(net.add_arc(node, sink, flow::INF, per_chip(floor, chips)));
        arcs.push(mine);
    }
    for (o, off) in p.offers.iter().enumerate() {
        let to = match power_chips[off.region] {
            Some(_) => first_region + off.region,
            None => sink,
        };
        let a = net.add_arc(first_offer + o, to, chips_left[o], 0);
        tree[first_offer + o] = (chips_left[o] > 0).then_some(a);
    }
    for (r, cap) in power_chips.iter().enumerate() {
        if let Some(chips) = *cap {
            let a = net.add_arc(first_region + r, sink, chips, 0);
            tree[first_region + r] = (chips > 0).then_some(a);
        }
    }
    net.set_supply(sink, -total);
    Some(TransportFlow {
        flow: if net.arcs() >= min_arcs {
            net.solve_from(&tree)?
        } else {
            net.solve()?
        },
        arcs,
        first_offer,
        sink,
    })
}

/// Prices per node of every offer from the transportation relaxation: each class (and each
/// unit of a redundancy group) supplies its chips, each offer absorbs up to its capacity in
/// chips, and leaving a unit out (or taking a trimmed candidate) costs its floor. It drops
/// power caps, redundancy and node rounding, so it is not itself the bound; its potentials
/// are where the dual starts. `None` only if the network simplex refuses the costs.
pub(crate) fn transport_prices(p: &Problem, cls: &Classes) -> Option<Vec<f64>> {
    let classes = cls.rep.iter().zip(&cls.mult).map(|(&u, &m)| Source {
        unit: u,
        count: m as i64,
        keep: TRANSPORT_CLASS_CANDIDATES,
    });
    let singles = (0..p.units.len())
        .filter(|&u| cls.of[u] == usize::MAX && !p.units[u].cands.is_empty())
        .map(|u| Source {
            unit: u,
            count: 1,
            keep: TRANSPORT_GROUP_CANDIDATES,
        });
    let sources: Vec<Source> = classes.chain(singles).collect();
    let chips: Vec<i64> = p
        .offers
        .iter()
        .map(|o| o.capacity_nodes as i64 * o.chips_per_node as i64)
        .collect();
    let none = vec![None; p.region_cap_watts.len()];
    let t = transport_flow(p, &sources, &chips, &none)?;
    Some(t.prices(p, &none, &[]).0)
}

impl TransportFlow {
    /// Prices from the flow's potentials: per node of each offer (what its offer → region or
    /// offer → sink arc is worth per chip, times chips per node), and per MW of each region
    /// whose power is capped (`power_chips`, converted at `watts_per_chip`), in $/MW-h.
    fn prices(
        &self,
        p: &Problem,
        power_chips: &[Option<i64>],
        watts_per_chip: &[f64],
    ) -> (Vec<f64>, Vec<f64>) {
        let pot = &self.flow.potential;
        let first_region = self.first_offer + p.offers.len();
        // Offer → sink (or → region) has reduced cost π[o] − π[next] ≤ 0 when full: minus that
        // is its price per chip.
        let per_chip =
            |from: usize, to: usize| (pot[to] - pot[from]).max(0) as f64 / TRANSPORT_SCALE;
        let mu = p
            .offers
            .iter()
            .enumerate()
            .map(|(o, off)| {
                let next = match power_chips[off.region] {
                    Some(_) => first_region + off.region,
                    None => self.sink,
                };
                per_chip(self.first_offer + o, next) * off.chips_per_node as f64
            })
            .collect();
        let pi = (0..power_chips.len())
            .map(|r| match power_chips[r] {
                Some(_) => {
                    per_chip(first_region + r, self.sink) / watts_per_chip[r].max(1e-9) * 1e6
                }
                None => 0.0,
            })
            .collect();
        (mu, pi)
    }
}

/// How many units of each class the transportation flow sends to each candidate, over what
/// `left` holds once the services are placed: per class, (candidate, units) in candidate
/// order. Regions whose power could run out get a cap in chips: their watts over the most
/// power-hungry chip among their offers, a conservative conversion (exact where a region has
/// one kind of chip). Classes of service units (past `DP_MAX_PROVIDERS`) are placed already
/// and supply nothing. Also returns the flow's prices (see [`TransportFlow::prices`]): with
/// power in the flow, they price the regions whose power binds, which the flow without power
/// (`transport_prices`) cannot.
pub(crate) fn transport_quota(p: &Problem, cls: &Classes, left: &Residual) -> Option<Quota> {
    let sources: Vec<Source> = cls
        .rep
        .iter()
        .zip(&cls.mult)
        .map(|(&u, &m)| Source {
            unit: u,
            count: if p.units[u].group.is_some() {
                0
            } else {
                m as i64
            },
            keep: TRANSPORT_CLASS_CANDIDATES,
        })
        .collect();
    let nr = p.region_cap_watts.len();
    let chips: Vec<i64> = p
        .offers
        .iter()
        .enumerate()
        .map(|(o, off)| left.nodes[o].max(0) * off.chips_per_node as i64)
        .collect();
    let mut region_chips = vec![0i64; nr];
    let mut watts_per_chip = vec![0.0f64; nr];
    for (o, off) in p.offers.iter().enumerate() {
        region_chips[off.region] += chips[o];
        let w = off.node_facility_watts / off.chips_per_node.max(1) as f64;
        watts_per_chip[off.region] = watts_per_chip[off.region].max(w);
    }
    let power_chips: Vec<Option<i64>> = (0..nr)
        .map(|r| {
            let cap = (left.watts(r).max(0.0) / watts_per_chip[r].max(1e-9)).floor() as i64;
            (cap < region_chips[r]).then_some(cap)
        })
        .collect();
    let t = transport_flow(p, &sources, &chips, &power_chips)?;
    let prices = t.prices(p, &power_chips, &watts_per_chip);
    let quota = t
        .arcs
        .iter()
        .zip(&sources)
        .map(|(arcs, src)| {
            let chips = p.units[src.unit].cands[0].chips.max(1) as i64;
            arcs.iter()
                .filter(|&&(_, e)| t.flow.flow[e] >= chips)
                .map(|&(ci, e)| (ci, (t.flow.flow[e] / chips) as u32))
                .collect()
        })
        .collect();
    Some((quota, prices))
}

/// Per class, (candidate, units) the flow sends; and the flow's prices.
pub(crate) type Quota = (Vec<Vec<(usize, u32)>>, Prices);

/// Prices per node of each offer (μ) and per MW of each region (π), $/h.
pub(crate) type Prices = (Vec<f64>, Vec<f64>);

/// The plan the transportation flow suggests: services are placed whole by their per-group
/// programme under `score`, in `order`; then each class's units go, in `order`, where the
/// quota flow over what the services left sends them, while they fit; whatever is left
/// takes its cheapest fitting candidate under `score`. Also returns the quota flow's prices
/// (`None` without a flow). `solved` is the quota flow when it was solved already (see
/// [`transport_relaxations`]; only where there are no services, so over the whole fleet).
pub(crate) fn follow_transport(
    p: &Problem,
    cls: &Classes,
    order: &[usize],
    score: &dyn Fn(usize, usize) -> f64,
    solved: Option<Option<Quota>>,
) -> ((Choice, Residual), Option<Prices>) {
    let mut res = Residual::new(p);
    let mut choice: Choice = vec![None; p.units.len()];
    let mut group_done = vec![false; p.groups.len()];
    let services: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&u| p.units[u].group.is_some())
        .collect();
    fill(
        p,
        &services,
        score,
        &mut group_done,
        (&mut choice, &mut res),
    );
    // Without a flow (costs the network simplex refuses), every unit takes the greedy below.
    let flow = solved.unwrap_or_else(|| transport_quota(p, cls, &res));
    let (mut quota, prices) = match flow {
        Some((q, prices)) => (q, Some(prices)),
        None => (Vec::new(), None),
    };
    for &u in order {
        let k = cls.of[u];
        if k >= quota.len() || choice[u].is_some() {
            continue;
        }
        for q in quota[k].iter_mut() {
            if q.1 > 0 && res.blocks(p, u, q.0).is_none() {
                q.1 -= 1;
                res.take(p, u, q.0);
                choice[u] = Some(q.0);
                break;
            }
        }
    }
    fill(p, order, score, &mut group_done, (&mut choice, &mut res));
    repair_groups(p, &mut choice, &mut res);
    ((choice, res), prices)
}

/// Candidate rows past which the two flows of [`transport_relaxations`] are solved on two
/// threads.
pub(crate) const PARALLEL_MIN_CANDIDATES: usize = 50_000;

/// The transportation relaxation's prices (`transport_prices`) and, when the plan has no
/// services, the quota flow over the whole fleet (`transport_quota`; with services it needs
/// their places, which need the prices, so it is left to `follow_transport`). Without
/// services the two flows are independent, and with `parallel` (large problems) they are
/// solved at once on two threads: each is deterministic, so the result does not depend on
/// which ends first (on the contended 10,000-workload sets each takes about a second).
pub(crate) fn transport_relaxations(
    p: &Problem,
    cls: &Classes,
    parallel: bool,
) -> (Option<Vec<f64>>, Option<Option<Quota>>) {
    if p.units.iter().any(|u| u.group.is_some()) {
        return (transport_prices(p, cls), None);
    }
    let whole = || transport_quota(p, cls, &Residual::new(p));
    if !parallel {
        return (transport_prices(p, cls), Some(whole()));
    }
    std::thread::scope(|s| {
        let quota = s.spawn(whole);
        let prices = transport_prices(p, cls);
        let quota = quota
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (prices, Some(quota))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flows_start_from_every_unit_left_out() {
        // With and without power caps (every region capped, one at zero chips): the start
        // is a basis, so the flow is solved from it rather than from the artificial start,
        // to the same optimum; this network is small, so the planner's own flow is not.
        let p = super::super::tests::power_bound(Some(4.5));
        let cls = classes(&p);
        let sources: Vec<Source> = (cls.rep.iter().zip(&cls.mult))
            .map(|(&u, &m)| Source {
                unit: u,
                count: m as i64,
                keep: TRANSPORT_CLASS_CANDIDATES,
            })
            .collect();
        let chips: Vec<i64> = p
            .offers
            .iter()
            .map(|o| o.capacity_nodes as i64 * o.chips_per_node as i64)
            .collect();
        let nr = p.region_cap_watts.len();
        let capped: Vec<Option<i64>> = (0..nr).map(|r| Some(r as i64 * 8)).collect();
        for caps in [vec![None; nr], capped] {
            let started = started_flow(&p, &sources, &chips, &caps, 0).unwrap();
            let plain = transport_flow(&p, &sources, &chips, &caps).unwrap();
            assert!(
                started.flow.started && !plain.flow.started,
                "small: not started"
            );
            assert_eq!(started.flow.cost, plain.flow.cost);
        }
    }
}
