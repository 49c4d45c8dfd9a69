//! Feasibility and scoring: the fleet and workloads compiled into placement units, offers and
//! candidate (unit, offer) pairs with their costs.
//!
//! Every (unit, offer) pair runs the one filter chain ([`crate::filter`]), so an unplaceable
//! unit can say what stopped it and how near it came. Scoring sums named $/h terms
//! ([`Terms`]: price, carbon, latency, data locality, migration) from one function,
//! [`Pricing::terms`], all in the same unit, so no term wins by scale alone.

use crate::filter::{self, Ask, Exclusions, Site, Verdict};
use crate::policy::Policy;
use crate::PreviousPlan;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use stratus_model::{Accelerator, Fleet, LatencyTable, WorkloadSet};

/// How a node of a pool is bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Already paid for under a commitment: priced at its marginal cost.
    Committed,
    /// On-demand list price.
    OnDemand,
    /// Spot / preemptible.
    Spot,
    /// A gang larger than a pool's committed nodes: all of them, plus on-demand nodes of the
    /// same pool for the rest (so a commitment is not left idle for want of a few nodes).
    CommittedPlusOnDemand,
}

/// A constraint that can exclude an option; names used in explanations and `unplaced` reasons.
/// Declaration order is filter order: the last filter that removed options is the one that
/// stopped a unit, since those options had passed every earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Constraint {
    /// The accelerator is not in the workload's allowed list.
    Accelerator,
    /// The region's jurisdiction is outside the workload's residency rule.
    Residency,
    /// Spot capacity, and the workload does not allow spot.
    Spot,
    /// The gang is larger than the pool's interconnect domain.
    InterconnectDomain,
    /// The pool has fewer nodes than the unit needs, even empty.
    PoolSize,
    /// The unit alone would exceed the region's power cap.
    PowerCap,
    /// The job cannot finish before its deadline on this accelerator.
    Deadline,
    /// The region is farther (RTT) from the users than the latency SLO.
    LatencySlo,
    /// The price exceeds the batch job's maximum.
    MaxPrice,
    /// Capacity taken by other placements.
    Capacity,
    /// Redundancy: the service must span more providers or regions.
    Redundancy,
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Constraint::Accelerator => "allowed accelerators",
            Constraint::Residency => "residency",
            Constraint::Spot => "spot not allowed",
            Constraint::InterconnectDomain => "interconnect domain size",
            Constraint::PoolSize => "pool size",
            Constraint::PowerCap => "region power cap",
            Constraint::Deadline => "deadline",
            Constraint::LatencySlo => "latency SLO",
            Constraint::MaxPrice => "maximum price",
            Constraint::Capacity => "capacity in use by other placements",
            Constraint::Redundancy => "redundancy across providers/regions",
        })
    }
}

/// One way to buy nodes of one pool.
#[derive(Debug, Clone)]
pub struct Offer {
    /// Index of the pool in fleet order.
    pub pool: usize,
    /// Pool id.
    pub pool_id: String,
    /// Provider index.
    pub provider: usize,
    /// Region index (global, fleet order).
    pub region: usize,
    /// How the nodes are bought.
    pub category: Category,
    /// Nodes available in this category.
    pub capacity_nodes: u32,
    /// Price per node-hour in this category (marginal for committed).
    pub node_price: f64,
    /// The pool's on-demand list price per node-hour: what an hour of these nodes is worth
    /// even when a commitment makes using them free, so moving work off them is never free.
    pub list_price: f64,
    /// Accelerator.
    pub accelerator: Accelerator,
    /// Chips per node.
    pub chips_per_node: u32,
    /// Facility watts per node counted against the region's power cap: (chips × TDP ×
    /// `power_cap_utilisation` + host) × PUE.
    pub node_facility_watts: f64,
    /// Average facility draw / the capped draw above: what energy and carbon are charged on.
    pub energy_share: f64,
    /// Grid carbon intensity of the region, g/kWh.
    pub carbon: f64,
    /// Chips in one interconnect domain of the pool.
    pub domain_chips: u32,
}

/// What kind of workload a unit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitKind {
    /// A training gang.
    Training,
    /// The replicas serving one user location (or one shard of it) of an inference service.
    Inference,
    /// A deferrable batch job.
    Batch,
}

/// A candidate's objective, $/h, term by term, so an explanation can say which term
/// decided between two options. Every term is in dollars per hour, so none wins by scale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Terms {
    /// The nodes' price per unit of progress: dollars / relative training speed (and the
    /// spot overhead) for training, plain dollars otherwise.
    pub price: f64,
    /// Expected energy × grid intensity × the policy's carbon price.
    pub carbon: f64,
    /// RTT × demand × the policy's latency price (inference).
    pub latency: f64,
    /// Remote-data charge when a training gang runs away from its data's region.
    pub locality: f64,
    /// Amortised cost of moving off the previous plan's placement.
    pub migration: f64,
}

impl Terms {
    /// The objective: the terms' sum, in a fixed order.
    pub fn total(&self) -> f64 {
        self.price + self.carbon + self.latency + self.locality + self.migration
    }

    /// The terms with their names, in `total`'s order.
    pub fn named(&self) -> [(&'static str, f64); 5] {
        [
            ("price", self.price),
            ("carbon", self.carbon),
            ("latency", self.latency),
            ("data locality", self.locality),
            ("migration", self.migration),
        ]
    }
}

/// How one unit's options are priced: what [`Pricing::terms`] needs besides the option, the
/// unit's demand and where it was ([`Unit::rps`], [`Unit::previous`]). Kept per unit rather
/// than as terms per candidate, so candidates stay small (the solver's loops run over millions
/// of them) and an explanation can still recover any option's terms from the one function
/// that priced it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    /// Gangs pay per unit of progress: dollars / the accelerator's training speed.
    pub per_progress: bool,
    /// Training on spot pays the policy's overhead (lost work on preemption).
    pub spot_overhead: bool,
    /// The region holding the gang's data (`usize::MAX` if it is in none of the fleet's),
    /// and the charge per hour for running anywhere else.
    pub data: Option<(usize, f64)>,
    /// Hours of work a move throws away (half a checkpoint interval plus the restart).
    pub migration_hours: f64,
}

impl Pricing {
    /// The objective's terms for `c`, an option on `offers[c.offer]`, for a unit serving
    /// `rps` (latency is charged per ms of RTT per req/s) that the previous plan had at
    /// `previous`. The only place options are priced: compile sums it into `Cand::cost`,
    /// explanations read it term by term (through [`Unit::terms`]).
    #[inline]
    pub fn terms(
        &self,
        offers: &[Offer],
        c: &Cand,
        (rps, previous): (f64, Option<(u32, bool)>),
        policy: &Policy,
    ) -> Terms {
        let o = &offers[c.offer as usize];
        let mut t = Terms {
            price: c.dollars,
            ..Terms::default()
        };
        if self.per_progress {
            // A chip half as fast costs double per unit of progress.
            t.price = c.dollars / o.accelerator.profile().rel_training;
        }
        if self.spot_overhead && o.category == Category::Spot {
            t.price *= 1.0 + policy.spot_training_overhead;
        }
        t.carbon = carbon_cost(c.watts * o.energy_share, o.carbon, policy);
        t.latency = policy.latency_usd_per_ms_krps_hour * c.rtt_ms * rps / 1000.0;
        if let Some((home, charge)) = self.data {
            if home != o.region {
                t.locality = charge;
            }
        }
        if let Some(p) = previous {
            if !c.is_at(p) {
                // Lost progress and restart, valued at list price: a move onto committed
                // (marginal-free) nodes still costs the work it throws away.
                let worth = c.total_nodes() as f64 * o.list_price;
                t.migration = c.dollars.max(worth) * self.migration_hours
                    / policy.migration_amortization_hours;
            }
        }
        t
    }
}

/// One candidate placement of a unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cand {
    /// Offer index.
    pub offer: u32,
    /// Nodes taken from `offer`.
    pub nodes: u32,
    /// Second offer, for a committed + on-demand blend (else equal to `offer`).
    pub offer2: u32,
    /// Nodes taken from `offer2` (0 unless blended).
    pub nodes2: u32,
    /// Facility watts drawn at full load.
    pub watts: f64,
    /// The same in MW, the unit the dual prices power in.
    pub mw: f64,
    /// Region index of the offer (kept here so hot loops avoid a lookup).
    pub region: u32,
    /// Objective contribution, $/h: the total of the unit's [`Pricing::terms`] here.
    pub cost: f64,
    /// Plain dollars per hour (marginal price of the nodes).
    pub dollars: f64,
    /// Chips used.
    pub chips: u32,
    /// Replicas (inference) or 1.
    pub replicas: u32,
    /// RTT from the unit's users, ms (inference), else 0.
    pub rtt_ms: f64,
}

impl Cand {
    /// Reduced cost under Lagrangian prices: pool prices per node (on both offers of a
    /// blend) and region power prices per MW. Never below `cost`, since prices are ≥ 0.
    pub fn priced(&self, mu: &[f64], pi: &[f64]) -> f64 {
        self.cost
            + mu[self.offer as usize] * self.nodes as f64
            + mu[self.offer2 as usize] * self.nodes2 as f64
            + pi[self.region as usize] * self.mw
    }

    /// Nodes in total, over both offers of a blend.
    pub fn total_nodes(&self) -> u32 {
        self.nodes + self.nodes2
    }

    /// Whether this is where `Unit::previous` says the unit was (same offer, blend or not):
    /// the one candidate charged no migration.
    pub fn is_at(&self, previous: (u32, bool)) -> bool {
        (self.offer, self.nodes2 > 0) == previous
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        oi: usize,
        o: &Offer,
        nodes: u32,
        watts: f64,
        dollars: f64,
        (chips, replicas): (u32, u32),
        rtt_ms: f64,
    ) -> Cand {
        Cand {
            offer: oi as u32,
            nodes,
            offer2: oi as u32,
            nodes2: 0,
            watts,
            mw: watts / 1e6,
            region: o.region as u32,
            cost: 0.0,
            dollars,
            chips,
            replicas,
            rtt_ms,
        }
    }
}

/// An indivisible placement decision: a gang, a batch job, or one location's replicas.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Workload name.
    pub workload: String,
    /// Unique key within the plan (`name`, or `name@from` / `name@from#k` for inference).
    pub key: String,
    /// Kind.
    pub kind: UnitKind,
    /// Priority of the workload.
    pub priority: u32,
    /// Cost of leaving it unplaced, $/h (dominates any placement cost; grows with priority).
    pub penalty: f64,
    /// Candidates, sorted by cost then offer index.
    pub cands: Vec<Cand>,
    /// Offers removed per constraint, each with its nearest miss, for the unplaced reason.
    pub rejected: Exclusions,
    /// Diversity group index (inference services), if any.
    pub group: Option<usize>,
    /// Arrival order (position in the workload file), for baselines.
    pub arrival: usize,
    /// Demand served (req/s), inference only.
    pub rps: f64,
    /// Where the previous plan had it, if anywhere: offer index, and whether as a blend
    /// (committed plus on-demand nodes of the offer's pool). A candidate anywhere else is
    /// charged migration.
    pub previous: Option<(u32, bool)>,
    /// How its options are priced, term by term.
    pub pricing: Pricing,
    /// Cheapest cost among candidates cut by `Policy::max_candidates_per_unit` (∞ if none).
    pub tail_floor: f64,
    /// Providers among the cut candidates (bit `i` for provider `i`; the first 64 only).
    pub tail_mask: u64,
}

impl Unit {
    /// The objective's terms for its candidate `c` (what `c.cost` totals).
    pub fn terms(&self, offers: &[Offer], c: &Cand, policy: &Policy) -> Terms {
        self.pricing
            .terms(offers, c, (self.rps, self.previous), policy)
    }
}

/// Redundancy requirement over the units of one inference service.
#[derive(Debug, Clone)]
pub struct Group {
    /// Service name.
    pub name: String,
    /// Units of the group.
    pub units: Vec<usize>,
    /// Distinct providers required.
    pub min_providers: u32,
    /// Distinct regions required.
    pub min_regions: u32,
}

/// The compiled problem.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Offers.
    pub offers: Vec<Offer>,
    /// Units.
    pub units: Vec<Unit>,
    /// Redundancy groups.
    pub groups: Vec<Group>,
    /// Power cap per region, facility watts.
    pub region_cap_watts: Vec<f64>,
    /// Region ids.
    pub region_ids: Vec<String>,
    /// Provider names.
    pub providers: Vec<String>,
}

struct RegionInfo {
    jurisdictions: Vec<String>,
    id: String,
}

/// Nodes needed for `replicas` replicas of `chips` chips each on nodes of `cpn` chips.
pub fn nodes_for_replicas(replicas: u32, chips: u32, cpn: u32) -> u32 {
    if chips <= cpn {
        let per_node = cpn / chips;
        replicas.div_ceil(per_node)
    } else {
        replicas * chips.div_ceil(cpn)
    }
}

/// Compile fleet + workloads into a [`Problem`]. Pure and deterministic.
pub fn compile(
    fleet: &Fleet,
    workloads: &WorkloadSet,
    policy: &Policy,
    previous: Option<&PreviousPlan>,
) -> Problem {
    let lat = LatencyTable::cached(fleet);
    let mut offers = Vec::new();
    let mut regions = Vec::new();
    let mut region_cap_watts = Vec::new();
    let mut providers = Vec::new();
    let mut pool_idx = 0usize;
    for (pi, p) in fleet.providers.iter().enumerate() {
        providers.push(p.name.clone());
        for r in &p.regions {
            let ri = regions.len();
            regions.push(RegionInfo {
                jurisdictions: r.jurisdictions.clone(),
                id: format!("{}:{}", p.name, r.name),
            });
            region_cap_watts.push(r.power_cap_mw.to_watts().0);
            for pool in &r.pools {
                let facility = pool.node_watts(policy.power_cap_utilisation).0 * r.pue;
                let energy_share =
                    pool.node_watts(policy.utilisation).0 * r.pue / facility.max(1e-9);
                let committed = pool.committed.as_ref().map(|c| c.nodes).unwrap_or(0);
                let mut push = |category, capacity_nodes: u32, node_price: f64| {
                    if capacity_nodes > 0 {
                        offers.push(Offer {
                            pool: pool_idx,
                            pool_id: pool.id.clone(),
                            provider: pi,
                            region: ri,
                            category,
                            capacity_nodes,
                            node_price,
                            list_price: pool.on_demand_per_node_hour.0,
                            accelerator: pool.accelerator,
                            chips_per_node: pool.chips_per_node,
                            node_facility_watts: facility,
                            energy_share,
                            carbon: r.carbon_g_per_kwh.0,
                            domain_chips: pool.domain_chips,
                        });
                    }
                };
                if let Some(c) = &pool.committed {
                    push(Category::Committed, c.nodes, c.marginal_per_node_hour.0);
                }
                push(
                    Category::OnDemand,
                    pool.nodes.saturating_sub(committed),
                    pool.on_demand_per_node_hour.0,
                );
                if let Some(s) = pool.spot_per_node_hour {
                    push(Category::Spot, pool.spot_nodes, s.0);
                }
                pool_idx += 1;
            }
        }
    }
    // Offers by accelerator: the first filter, applied by lookup rather than by scan (the
    // chain's accelerator filter then passes every offer looked up).
    let mut by_acc: BTreeMap<Accelerator, Vec<usize>> = BTreeMap::new();
    for (i, o) in offers.iter().enumerate() {
        by_acc.entry(o.accelerator).or_default().push(i);
    }
    // The offers of the allowed accelerators; the others count as excluded by that filter.
    let considered_offers =
        |accs: &mut dyn Iterator<Item = &Accelerator>, rejected: &mut Exclusions| -> Vec<usize> {
            let considered: Vec<usize> = accs
                .flat_map(|a| by_acc.get(a).into_iter().flatten().copied())
                .collect();
            let skipped = (offers.len() - considered.len()) as u32;
            if skipped > 0 {
                filter::exclude(
                    rejected,
                    filter::Reject::categorical(Constraint::Accelerator),
                    skipped,
                );
            }
            considered
        };
    // What offer `oi` gives a unit: `extra_nodes` beyond its own (a blend's on-demand
    // nodes), `top_price` its dearest node's price, `rtt_ms` from the unit's users.
    let site = |oi: usize, extra_nodes: u32, top_price: f64, rtt_ms: f64| -> Site {
        let o = &offers[oi];
        Site {
            accelerator: o.accelerator,
            jurisdictions: &regions[o.region].jurisdictions,
            spot: o.category == Category::Spot,
            domain_chips: o.domain_chips,
            nodes: o.capacity_nodes + extra_nodes,
            cap_watts: region_cap_watts[o.region],
            usd_per_chip_hour: top_price / o.chips_per_node as f64,
            rtt_ms,
        }
    };
    let region_lat: Vec<usize> = regions
        .iter()
        .map(|r| {
            lat.index_of(&r.id)
                .expect("latency table covers every region")
        })
        .collect();

    let mut units = Vec::new();
    let mut groups = Vec::new();
    let mut arrival = 0usize;
    let offer_index: std::collections::HashMap<(&str, Category), u32> = offers
        .iter()
        .enumerate()
        .map(|(i, o)| ((o.pool_id.as_str(), o.category), i as u32))
        .collect();
    // A blend is recorded as its own category; its candidate sits on the committed offer.
    let prev_offer = |key: &str| -> Option<(u32, bool)> {
        let (pool, cat) = previous?.placements.get(key)?;
        let blend = *cat == Category::CommittedPlusOnDemand;
        let cat = if blend { Category::Committed } else { *cat };
        offer_index.get(&(pool.as_str(), cat)).map(|&o| (o, blend))
    };

    // Gang-like units: training and batch share one filter chain.
    struct Gang<'a> {
        name: &'a str,
        kind: UnitKind,
        priority: u32,
        chips: u32,
        accelerators: &'a [Accelerator],
        residency: &'a [String],
        spot: bool,
        one_domain: bool,
        work: f64,
        deadline: Option<f64>,
        max_price: Option<f64>,
        data_region: Option<&'a str>,
        checkpoint_h: f64,
    }
    let mut gangs: Vec<Gang> = Vec::new();
    for t in &workloads.training {
        gangs.push(Gang {
            name: &t.name,
            kind: UnitKind::Training,
            priority: t.priority,
            chips: t.chips,
            accelerators: &t.accelerators,
            residency: &t.residency,
            spot: t.spot,
            one_domain: t.scope == stratus_model::GangScope::OneDomain,
            work: t.work_chip_hours.0,
            deadline: t.deadline_hours,
            max_price: None,
            data_region: t.data_region.as_deref(),
            checkpoint_h: t.checkpoint_minutes / 60.0,
        });
    }
    for b in &workloads.batch {
        gangs.push(Gang {
            name: &b.name,
            kind: UnitKind::Batch,
            priority: b.priority,
            chips: b.chips,
            accelerators: &b.accelerators,
            residency: &b.residency,
            spot: b.spot,
            one_domain: false,
            work: b.work_chip_hours.0,
            deadline: b.deadline_hours,
            max_price: b.max_usd_per_chip_hour.map(|p| p.0),
            data_region: None,
            checkpoint_h: 0.5,
        });
    }
    let make_gang = |arrival: usize, g: &Gang| -> Unit {
        let mut rejected = Exclusions::new();
        let mut cands = take_scratch();
        let key = g.name.to_string();
        let previous = prev_offer(&key);
        let pricing = Pricing {
            per_progress: true,
            spot_overhead: g.kind == UnitKind::Training,
            data: g.data_region.map(|d| {
                let home = regions.iter().position(|r| r.id == d);
                let charge = policy.remote_data_usd_per_chip_hour * g.chips as f64;
                (home.unwrap_or(usize::MAX), charge)
            }),
            migration_hours: g.checkpoint_h / 2.0 + policy.restart_hours,
        };
        let mut accs = g.accelerators.to_vec();
        accs.sort();
        accs.dedup();
        for oi in considered_offers(&mut accs.iter(), &mut rejected) {
            let o = &offers[oi];
            let prof = o.accelerator.profile();
            let nodes = g.chips.div_ceil(o.chips_per_node);
            let watts = nodes as f64 * o.node_facility_watts;
            let speed = prof.rel_training;
            // A gang too big for a pool's committed nodes can take all of them plus on-demand
            // nodes of the same pool (the next offer, by construction).
            let on_demand = (o.category == Category::Committed)
                .then(|| offers.get(oi + 1))
                .flatten()
                .filter(|od| od.pool == o.pool && od.category == Category::OnDemand);
            let blend = on_demand
                .filter(|od| {
                    nodes > o.capacity_nodes && nodes - o.capacity_nodes <= od.capacity_nodes
                })
                .map(|od| (o.capacity_nodes, nodes - o.capacity_nodes, od.node_price));
            let ask = Ask {
                accelerators: &accs,
                residency: g.residency,
                spot: g.spot,
                one_domain_chips: g.one_domain.then_some(g.chips),
                nodes,
                watts,
                run_hours: g.work / (g.chips as f64 * speed),
                deadline_hours: g.deadline,
                max_usd_per_chip_hour: g.max_price,
                latency_slo_ms: None,
            };
            // Every node is held to a price ceiling, the on-demand ones of a blend included.
            let top_price = blend.map_or(o.node_price, |(_, _, od)| o.node_price.max(od));
            let extra = on_demand.map_or(0, |od| od.capacity_nodes);
            if let Verdict::Reject(r) = filter::check(&ask, &site(oi, extra, top_price, 0.0)) {
                filter::exclude(&mut rejected, r, 1);
                continue;
            }
            let dollars = match blend {
                Some((n1, n2, od_price)) => n1 as f64 * o.node_price + n2 as f64 * od_price,
                None => nodes as f64 * o.node_price,
            };
            let mut cand = Cand::new(oi, o, nodes, watts, dollars, (g.chips, 1), 0.0);
            if let Some((n1, n2, _)) = blend {
                cand.nodes = n1;
                cand.offer2 = oi as u32 + 1;
                cand.nodes2 = n2;
            }
            cand.cost = pricing
                .terms(&offers, &cand, (0.0, previous), policy)
                .total();
            cands.push(cand);
        }
        let (cands, tail_floor, tail_mask) =
            trim_cands(cands, policy.max_candidates_per_unit, &offers, previous);
        Unit {
            workload: g.name.to_string(),
            key,
            kind: g.kind,
            priority: g.priority,
            penalty: penalty(g.priority, g.chips, g.kind),
            cands,
            rejected,
            group: None,
            arrival,
            rps: 0.0,
            previous,
            pricing,
            tail_floor,
            tail_mask,
        }
    };
    units.extend(par_map(&gangs, &make_gang));
    arrival += gangs.len();

    // Every service's shards, built in parallel like the gangs; `spans[si]` is service
    // `si`'s run of shards (its group's units, once offset by the units before them).
    struct Shard<'a> {
        service: usize,
        key: String,
        rps: f64,
        from: &'a str,
    }
    let mut shards: Vec<Shard> = Vec::new();
    let mut spans = Vec::with_capacity(workloads.inference.len());
    for (si, s) in workloads.inference.iter().enumerate() {
        let start = shards.len();
        // Shards: enough units that the redundancy rule can be met even with one location.
        let need = s.min_providers.max(s.min_regions) as usize;
        let total_locations = s.demand.len();
        let extra = need.saturating_sub(total_locations);
        for (di, d) in s.demand.iter().enumerate() {
            // Split the first locations into more shards when there are too few locations.
            let k = 1 + if di < extra.min(total_locations) {
                extra.div_ceil(total_locations)
            } else {
                0
            };
            for j in 0..k {
                let key = if k == 1 {
                    format!("{}@{}", s.name, d.from)
                } else {
                    format!("{}@{}#{}", s.name, d.from, j)
                };
                shards.push(Shard {
                    service: si,
                    key,
                    rps: d.rps.0 / k as f64,
                    from: &d.from,
                });
            }
        }
        spans.push(start..shards.len());
    }
    let first_group = groups.len();
    let make_shard = |_: usize, shard: &Shard| -> Unit {
        let (s, rps) = (&workloads.inference[shard.service], shard.rps);
        let key = shard.key.clone();
        let from_idx = lat.index_of(shard.from);
        let mut rejected = Exclusions::new();
        let mut cands = take_scratch();
        let previous = prev_offer(&key);
        let pricing = Pricing {
            per_progress: false,
            spot_overhead: false,
            data: None,
            migration_hours: policy.restart_hours,
        };
        let accs: Vec<Accelerator> = s.replica.keys().copied().collect();
        for oi in considered_offers(&mut accs.iter(), &mut rejected) {
            let o = &offers[oi];
            let rtt = from_idx
                .map(|f| lat.rtt(f, region_lat[o.region]).0)
                .unwrap_or(f64::INFINITY);
            // `considered_offers` kept only accelerators the service has a replica for.
            let spec = s.replica[&o.accelerator];
            let replicas = (rps / spec.rps.0).ceil().max(1.0) as u32;
            let nodes = nodes_for_replicas(replicas, spec.chips, o.chips_per_node);
            let watts = nodes as f64 * o.node_facility_watts;
            let ask = Ask {
                accelerators: &accs,
                residency: &s.residency,
                spot: s.spot,
                one_domain_chips: None,
                nodes,
                watts,
                run_hours: 0.0,
                deadline_hours: None,
                max_usd_per_chip_hour: None,
                latency_slo_ms: Some(s.latency_slo_ms.0),
            };
            if let Verdict::Reject(r) = filter::check(&ask, &site(oi, 0, o.node_price, rtt)) {
                filter::exclude(&mut rejected, r, 1);
                continue;
            }
            let dollars = nodes as f64 * o.node_price;
            let size = (replicas * spec.chips, replicas);
            let mut cand = Cand::new(oi, o, nodes, watts, dollars, size, rtt);
            cand.cost = pricing
                .terms(&offers, &cand, (rps, previous), policy)
                .total();
            cands.push(cand);
        }
        let (cands, tail_floor, tail_mask) =
            trim_cands(cands, policy.max_candidates_per_unit, &offers, previous);
        // The fewest chips any replica shape needs for this demand: a rule of the workload,
        // not of which offers survive the filters.
        let fewest = s
            .replica
            .values()
            .map(|spec| ((rps / spec.rps.0).ceil().max(1.0) as u32) * spec.chips)
            .min()
            .unwrap_or(1);
        Unit {
            workload: s.name.clone(),
            key,
            kind: UnitKind::Inference,
            priority: s.priority,
            penalty: penalty(s.priority, fewest, UnitKind::Inference),
            cands,
            rejected,
            group: Some(first_group + shard.service),
            arrival: arrival + shard.service,
            rps,
            previous,
            pricing,
            tail_floor,
            tail_mask,
        }
    };
    let first_shard = units.len();
    units.extend(par_map(&shards, &make_shard));
    for (s, span) in workloads.inference.iter().zip(spans) {
        let members: Vec<usize> = (first_shard + span.start..first_shard + span.end).collect();
        // A service whose options, all together, cannot span the required providers or
        // regions can never be placed: say so now rather than leave it to the solver.
        let (mut ps, mut rs) = (Vec::new(), Vec::new());
        for &m in &members {
            for c in &units[m].cands {
                let o = &offers[c.offer as usize];
                if !ps.contains(&o.provider) {
                    ps.push(o.provider);
                }
                if !rs.contains(&o.region) {
                    rs.push(o.region);
                }
            }
        }
        if (ps.len() as u32) < s.min_providers || (rs.len() as u32) < s.min_regions {
            for &m in &members {
                let n = units[m].cands.len() as u32;
                units[m].cands.clear();
                units[m].tail_floor = f64::INFINITY;
                units[m].tail_mask = 0;
                let r = filter::Reject::categorical(Constraint::Redundancy);
                filter::exclude(&mut units[m].rejected, r, n);
            }
        }
        groups.push(Group {
            name: s.name.clone(),
            units: members,
            min_providers: s.min_providers,
            min_regions: s.min_regions,
        });
    }

    Problem {
        offers,
        units,
        groups,
        region_cap_watts,
        region_ids: regions.iter().map(|r| r.id.clone()).collect(),
        providers,
    }
}

fn carbon_cost(avg_watts: f64, carbon_g_per_kwh: f64, policy: &Policy) -> f64 {
    // g/h = average W / 1000 × g/kWh; $/h = g/h / 1e6 × $/t.
    avg_watts / 1000.0 * carbon_g_per_kwh / 1e6 * policy.carbon_price.0
}

/// Cost of leaving a unit out, $/h: $1,000 per chip-hour scaled by priority, far above any
/// price, so the planner places whatever fits and drops low priorities first. Batch jobs are
/// deferrable, so they carry a tenth of it.
fn penalty(priority: u32, chips: u32, kind: UnitKind) -> f64 {
    let base = 1000.0 * chips.max(1) as f64 * (1.0 + priority as f64 / 100.0);
    match kind {
        UnitKind::Batch => base / 10.0,
        _ => base,
    }
}

/// `f` over `items` with their indices, on two threads (halves), results in input order.
fn par_map<T: Sync, R: Send>(items: &[T], f: &(dyn Fn(usize, &T) -> R + Sync)) -> Vec<R> {
    let mid = items.len() / 2;
    if mid < 64 {
        return items.iter().enumerate().map(|(i, t)| f(i, t)).collect();
    }
    let (a, b) = items.split_at(mid);
    let (mut ra, rb) = std::thread::scope(|sc| {
        let hb = sc.spawn(|| {
            b.iter()
                .enumerate()
                .map(|(i, t)| f(mid + i, t))
                .collect::<Vec<R>>()
        });
        let ra: Vec<R> = a.iter().enumerate().map(|(i, t)| f(i, t)).collect();
        (ra, hb.join().expect("compile worker"))
    });
    ra.extend(rb);
    ra
}

fn cmp_cands(a: &Cand, b: &Cand) -> std::cmp::Ordering {
    a.cost.total_cmp(&b.cost).then(a.offer.cmp(&b.offer))
}

/// Sort candidates by cost and keep the `keep` cheapest. What is cut is summarised by its
/// cheapest cost and its providers, so the dual can still count it and stay a valid bound:
/// prices only add, so no cut candidate can cost less than the floor. The candidate where the
/// previous plan had the unit is always kept, so staying put is always an option.
fn trim_cands(
    mut c: Vec<Cand>,
    keep: usize,
    offers: &[Offer],
    previous: Option<(u32, bool)>,
) -> (Vec<Cand>, f64, u64) {
    let (mut kept, floor, mask) = if c.len() > keep && keep > 0 {
        c.select_nth_unstable_by(keep, cmp_cands);
        let at = previous.and_then(|p| c[keep..].iter().position(|x| x.is_at(p)));
        if let Some(i) = at {
            c.swap(keep, keep + i);
        }
        let keep = keep + at.is_some() as usize;
        let tail = &c[keep..];
        let floor = tail.iter().map(|x| x.cost).fold(f64::INFINITY, f64::min);
        let mask = tail
            .iter()
            // Providers past the 64th are left out: only the first `DP_MAX_PROVIDERS` are read.
            .fold(0u64, |m, x| {
                m | 1u64
                    .checked_shl(offers[x.offer as usize].provider as u32)
                    .unwrap_or(0)
            });
        (c[..keep].to_vec(), floor, mask)
    } else {
        (c.to_vec(), f64::INFINITY, 0)
    };
    // Cost then offer index is a total order, so the unstable sort is deterministic.
    kept.sort_unstable_by(cmp_cands);
    give_scratch(c);
    (kept, floor, mask)
}

thread_local! {
    /// A unit's candidates before trimming: one buffer per compile thread, reused, so
    /// compiling thousands of units does not allocate (and fault in) a list per unit.
    static SCRATCH: std::cell::RefCell<Vec<Cand>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn take_scratch() -> Vec<Cand> {
    let mut v = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    v.clear();
    v
}

fn give_scratch(v: Vec<Cand>) {
    SCRATCH.with(|s| *s.borrow_mut() = v);
}
