//! Contended workload sets: the planner's hard case, where there is not enough capacity and
//! the plan decides who gets what.
//!
//! A set is a fleet and workloads drawn together from a seed. The fleet is either a sample of
//! the built-in fleet's pools (15–60 of them, for sets small enough to solve exactly) or all of
//! it; either way each pool's nodes are rescaled so that the capacity of every accelerator is
//! `ratio` times the chips the workloads ask of it (0.4–2). The draw is adversarial on
//! purpose: gangs of 8–2,048 chips whose sizes do not divide pools evenly, interconnect
//! domains smaller than some gangs, mixed accelerators, spot tolerance, residency, deadlines
//! that rule out slow chips, price ceilings below some pools' prices, commitments smaller than
//! the gangs that want them (so blends of committed and on-demand nodes occur), power caps that
//! bind, and, in some sets, inference services with redundancy rules.

use crate::scenario::{demo_workloads, Rng};
use std::collections::{BTreeMap, BTreeSet};
use stratus_model::fleet::region_id;
use stratus_model::parse::validate_workloads;
use stratus_model::*;

/// What to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Contention {
    /// Workloads in the set.
    pub workloads: usize,
    /// Pools sampled from the base fleet (`None`: every pool of it).
    pub pools: Option<usize>,
    /// Capacity / demand in chips, per accelerator; drawn in 0.4–2 when `None`.
    pub ratio: Option<f64>,
    /// Whether inference services with redundancy rules are part of the mix.
    pub services: bool,
}

/// A drawn set.
#[derive(Debug, Clone)]
pub struct ContendedSet {
    /// The rescaled fleet.
    pub fleet: Fleet,
    /// The workloads.
    pub workloads: WorkloadSet,
    /// Capacity / demand the fleet was scaled to.
    pub ratio: f64,
}

/// Accelerators gangs and batch jobs are drawn over (the ones labs train on).
const TRAIN_ACCELERATORS: &[Accelerator] = &[
    Accelerator::H100,
    Accelerator::H200,
    Accelerator::B200,
    Accelerator::A100_80GB,
    Accelerator::A100_40GB,
    Accelerator::MI300X,
    Accelerator::H100Nvl,
    Accelerator::L4,
    Accelerator::A10G,
    Accelerator::A10,
    Accelerator::V100,
    Accelerator::TpuV5e,
    Accelerator::TpuV5p,
    Accelerator::Trainium1,
    Accelerator::Trainium2,
];

/// Gang sizes in chips: most do not divide 8-chip nodes, 768-chip domains or pools evenly.
const GANG_CHIPS: &[u32] = &[
    8, 8, 12, 16, 16, 24, 24, 40, 48, 56, 64, 96, 104, 136, 200, 256, 320, 520, 768, 1000, 1536,
    2048,
];

/// Draw a contended set from `base` (usually the built-in fleet). Deterministic in `seed`.
pub fn contended(base: &Fleet, c: &Contention, seed: u64) -> Result<ContendedSet, InputError> {
    let mut r = Rng(seed ^ 0xC0_47E4_D3D5);
    let ratio = c
        .ratio
        .unwrap_or_else(|| 0.4 + 1.6 * (r.below(1_000_001) as f64 / 1e6));
    let mut fleet = sample_pools(base, c.pools, &mut r);
    let workloads = draw_workloads(base, &fleet, c, &mut r)?;
    rescale(&mut fleet, &workloads, ratio, &mut r);
    let text = "";
    validate_workloads(&workloads, &fleet, "<contended>", text)?;
    Ok(ContendedSet {
        fleet,
        workloads,
        ratio,
    })
}

/// The base fleet cut to `n` pools drawn at random among the accelerators of
/// [`TRAIN_ACCELERATORS`] (regions and providers left without pools are dropped), or all of it.
fn sample_pools(base: &Fleet, n: Option<usize>, r: &mut Rng) -> Fleet {
    let Some(n) = n else { return base.clone() };
    let eligible: Vec<String> = base
        .pools()
        .filter(|(_, _, p)| TRAIN_ACCELERATORS.contains(&p.accelerator))
        .map(|(_, _, p)| p.id.clone())
        .collect();
    // A partial Fisher–Yates shuffle picks `n` distinct pools.
    let mut ids = eligible;
    let n = n.min(ids.len());
    for i in 0..n {
        let j = i + r.below((ids.len() - i) as u64) as usize;
        ids.swap(i, j);
    }
    let keep: BTreeSet<&str> = ids[..n].iter().map(|s| s.as_str()).collect();
    let mut fleet = base.clone();
    fleet.name = format!("{} — {n} sampled pools", base.name);
    for p in &mut fleet.providers {
        for reg in &mut p.regions {
            reg.pools.retain(|pl| keep.contains(pl.id.as_str()));
        }
        p.regions.retain(|reg| !reg.pools.is_empty());
    }
    fleet.providers.retain(|p| !p.regions.is_empty());
    let regions: BTreeSet<String> = fleet
        .regions()
        .map(|(p, reg)| region_id(&p.name, &reg.name))
        .collect();
    fleet
        .latency
        .retain(|l| regions.contains(&l.a) && regions.contains(&l.b));
    fleet
}

fn images(accs: &[Accelerator]) -> BTreeMap<Arch, String> {
    accs.iter()
        .map(|a| (a.arch(), format!("registry.lab/{}:latest", a.arch())))
        .collect()
}

/// A uniform draw in `lo..hi`.
fn uniform(r: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * (r.below(1_000_001) as f64 / 1e6)
}

/// 1–3 accelerators among those the fleet has, the first drawn uniformly, the others near it
/// in training speed (so a job's options are real alternatives).
fn accelerator_set(present: &[Accelerator], r: &mut Rng) -> Vec<Accelerator> {
    let first = *r.pick(present);
    let mut set = vec![first];
    let extra = r.below(3);
    let speed = first.profile().rel_training;
    let mut near: Vec<Accelerator> = present
        .iter()
        .copied()
        .filter(|a| *a != first && (a.profile().rel_training / speed).ln().abs() < 1.2)
        .collect();
    for _ in 0..extra {
        if near.is_empty() {
            break;
        }
        let i = r.below(near.len() as u64) as usize;
        set.push(near.swap_remove(i));
    }
    set.sort();
    set
}

/// The workloads: 45 % training gangs, 30 % batch jobs and 25 % inference services when
/// `services`, else 60 % training and 40 % batch. Regions are drawn from `fleet`, replica
/// shapes from the demo set's services (parsed against `base`).
fn draw_workloads(
    base: &Fleet,
    fleet: &Fleet,
    c: &Contention,
    r: &mut Rng,
) -> Result<WorkloadSet, InputError> {
    let present: Vec<Accelerator> = fleet
        .pools()
        .map(|(_, _, p)| p.accelerator)
        .filter(|a| TRAIN_ACCELERATORS.contains(a))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let regions: Vec<String> = fleet
        .regions()
        .map(|(p, reg)| region_id(&p.name, &reg.name))
        .collect();
    // Per-chip on-demand price per accelerator (the median over its pools), so price ceilings
    // and deadlines are drawn around what the fleet really charges.
    let mut prices: BTreeMap<Accelerator, Vec<f64>> = BTreeMap::new();
    for (_, _, p) in fleet.pools() {
        prices
            .entry(p.accelerator)
            .or_default()
            .push(p.on_demand_per_node_hour.0 / p.chips_per_node as f64);
    }
    let median = |a: Accelerator| -> f64 {
        let mut v = prices.get(&a).cloned().unwrap_or_else(|| vec![2.0]);
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let templates: Vec<Inference> = demo_workloads(base)?
        .inference
        .into_iter()
        .filter(|s| s.replica.keys().any(|a| present.contains(a)))
        .collect();
    let mut w = WorkloadSet::default();
    for i in 0..c.workloads {
        let roll = r.below(100);
        let services = c.services && !templates.is_empty();
        let (train_cut, batch_cut) = if services { (45, 75) } else { (60, 100) };
        if roll < train_cut {
            let accs = accelerator_set(&present, r);
            let chips = *r.pick(GANG_CHIPS);
            let hours = uniform(r, 12.0, 400.0);
            let slowest = accs
                .iter()
                .map(|a| a.profile().rel_training)
                .fold(f64::INFINITY, f64::min);
            // A deadline between the fastest and the slowest chip's finish time rules the slow
            // ones out.
            let deadline_hours = (r.below(5) == 0).then(|| hours / slowest * uniform(r, 0.5, 1.2));
            w.training.push(Training {
                name: format!("train-{i}"),
                priority: *r.pick(&[50u32, 100, 100, 100, 120, 150, 250]),
                chips,
                images: images(&accs),
                accelerators: accs,
                scope: if r.below(10) < 3 {
                    GangScope::OneRegion
                } else {
                    GangScope::OneDomain
                },
                work_chip_hours: ChipHours(chips as f64 * hours),
                checkpoint_minutes: *r.pick(&[15.0, 30.0, 60.0, 120.0]),
                deadline_hours,
                data_region: (r.below(5) == 0).then(|| r.pick(&regions).clone()),
                residency: residency(r),
                spot: r.below(10) < 3,
            });
        } else if roll < batch_cut {
            let accs = accelerator_set(&present, r);
            let chips = *r.pick(&[1u32, 2, 4, 8, 8, 12, 16, 24, 32, 64]);
            let reference = accs
                .iter()
                .map(|a| median(*a))
                .fold(f64::INFINITY, f64::min);
            w.batch.push(Batch {
                name: format!("batch-{i}"),
                priority: *r.pick(&[5u32, 10, 10, 20, 40]),
                chips,
                images: images(&accs),
                accelerators: accs,
                work_chip_hours: ChipHours(chips as f64 * uniform(r, 2.0, 48.0)),
                deadline_hours: (r.below(10) == 0).then(|| uniform(r, 24.0, 400.0)),
                max_usd_per_chip_hour: (r.below(10) < 4)
                    .then(|| UsdPerHour(reference * uniform(r, 0.3, 1.5))),
                spot: r.below(10) < 8,
                residency: residency(r),
            });
        } else {
            let t = r.pick(&templates).clone();
            let locations = 1 + r.below(3) as usize;
            let mut demand: Vec<Demand> = Vec::new();
            for _ in 0..locations {
                let from = r.pick(&regions).clone();
                let rps = RequestsPerSec(uniform(r, 5.0, 120.0).round());
                match demand.iter_mut().find(|d| d.from == from) {
                    Some(d) => d.rps += rps,
                    None => demand.push(Demand { from, rps }),
                }
            }
            w.inference.push(Inference {
                name: format!("svc-{i}"),
                priority: *r.pick(&[150u32, 200, 200, 300]),
                demand,
                latency_slo_ms: Millis(*r.pick(&[60.0, 120.0, 200.0, 300.0])),
                min_providers: 1 + r.below(2) as u32,
                min_regions: 1 + r.below(3) as u32,
                spot: r.below(4) == 0,
                residency: vec![],
                ..t
            });
        }
    }
    Ok(w)
}

fn residency(r: &mut Rng) -> Vec<String> {
    match r.below(20) {
        0 | 1 => vec!["EU".into()],
        2 => vec!["US".into()],
        _ => vec![],
    }
}

/// Chips the workloads ask of each accelerator: a workload's chips (an inference service's at
/// its replica shape's rate) spread evenly over the accelerators it accepts.
fn demand_by_accelerator(w: &WorkloadSet) -> BTreeMap<Accelerator, f64> {
    let mut d: BTreeMap<Accelerator, f64> = BTreeMap::new();
    let mut spread = |accs: &mut dyn Iterator<Item = (Accelerator, f64)>| {
        let v: Vec<(Accelerator, f64)> = accs.collect();
        let n = v.len().max(1) as f64;
        for (a, chips) in v {
            *d.entry(a).or_default() += chips / n;
        }
    };
    for t in &w.training {
        spread(&mut t.accelerators.iter().map(|a| (*a, t.chips as f64)));
    }
    for b in &w.batch {
        spread(&mut b.accelerators.iter().map(|a| (*a, b.chips as f64)));
    }
    for s in &w.inference {
        let rps: f64 = s.demand.iter().map(|d| d.rps.0).sum();
        spread(
            &mut s
                .replica
                .iter()
                .map(|(a, spec)| (*a, (rps / spec.rps.0).ceil() * spec.chips as f64)),
        );
    }
    d
}

/// Rescale every pool so each accelerator's capacity is `ratio` × its demand (pools of an
/// accelerator nobody asks for keep a few nodes), with random weights between pools; then draw
/// commitments, spot capacity and binding power caps.
fn rescale(fleet: &mut Fleet, w: &WorkloadSet, ratio: f64, r: &mut Rng) {
    let demand = demand_by_accelerator(w);
    let mut weights: BTreeMap<String, f64> = BTreeMap::new();
    let mut total: BTreeMap<Accelerator, f64> = BTreeMap::new();
    for (_, _, p) in fleet.pools() {
        let wt = uniform(r, 0.2, 1.8) * p.nodes as f64 * p.chips_per_node as f64;
        weights.insert(p.id.clone(), wt);
        *total.entry(p.accelerator).or_default() += wt;
    }
    for prov in &mut fleet.providers {
        for reg in &mut prov.regions {
            for p in &mut reg.pools {
                let chips = match demand.get(&p.accelerator) {
                    Some(d) => ratio * d * weights[&p.id] / total[&p.accelerator],
                    None => (4 * p.chips_per_node) as f64,
                };
                let nodes = (chips / p.chips_per_node as f64).round().max(1.0) as u32;
                p.nodes = nodes;
                p.spot_nodes = if p.spot_per_node_hour.is_some() {
                    nodes.div_ceil(4)
                } else {
                    0
                };
                // Commitments on a quarter of the pools, often smaller than a gang, so the
                // planner has to blend committed and on-demand nodes.
                p.committed = (r.below(4) == 0 && nodes >= 2).then(|| Committed {
                    name: format!("commit-{}", p.id),
                    nodes: (nodes as f64 * uniform(r, 0.2, 0.7)).round().max(1.0) as u32,
                    rate_per_node_hour: UsdPerHour(p.on_demand_per_node_hour.0 * 0.6),
                    marginal_per_node_hour: UsdPerHour(0.0),
                });
                // A domain at most as large as the pool: gangs above it cannot sit in one.
                p.domain_chips = p.domain_chips.min(nodes * p.chips_per_node).max(1);
            }
            // A power cap between 40 % and 110 % of what the region's pools draw at full
            // load, so in some regions it binds before the pools are full.
            let full: f64 = reg
                .pools
                .iter()
                .map(|p| p.nodes as f64 * p.node_it_watts().0 * reg.pue)
                .sum();
            let mw = (full * uniform(r, 0.4, 1.1) / 1e6 * 1000.0).ceil() / 1000.0;
            reg.power_cap_mw = Megawatts(mw.max(0.001));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contended_sets_depend_only_on_the_seed_and_validate() {
        let base = crate::builtin();
        for seed in 0..20 {
            let c = Contention {
                workloads: 20 + 14 * seed as usize,
                pools: Some(15 + 2 * seed as usize),
                ratio: None,
                services: seed % 2 == 0,
            };
            let a = contended(base, &c, seed).unwrap();
            let b = contended(base, &c, seed).unwrap();
            assert_eq!(a.fleet, b.fleet);
            assert_eq!(a.workloads, b.workloads);
            assert!((0.4..=2.0).contains(&a.ratio), "{}", a.ratio);
            assert_eq!(a.fleet.pool_count(), c.pools.unwrap());
            assert_eq!(a.workloads.len(), c.workloads);
            assert_eq!(a.workloads.inference.is_empty(), !c.services, "seed {seed}");
        }
    }

    #[test]
    fn capacity_tracks_the_ratio_per_accelerator() {
        let base = crate::builtin();
        let c = Contention {
            workloads: 1000,
            pools: None,
            ratio: Some(0.5),
            services: true,
        };
        let s = contended(base, &c, 3).unwrap();
        let demand = demand_by_accelerator(&s.workloads);
        // Capacity per accelerator, and how far node rounding can move it (half a node per
        // pool, or a whole one where a pool is rounded up to its single node).
        let mut cap: BTreeMap<Accelerator, (f64, f64)> = BTreeMap::new();
        for (_, _, p) in s.fleet.pools() {
            let e = cap.entry(p.accelerator).or_default();
            e.0 += (p.nodes * p.chips_per_node) as f64;
            e.1 += p.chips_per_node as f64;
        }
        for (a, d) in &demand {
            let (got, slack) = cap[a];
            assert!((got - 0.5 * d).abs() <= slack + 1e-9, "{a}: {got} for {d}");
        }
    }
}
