//! The planning model's rules (see the crate documentation), applied to a fleet and workloads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use stratus_model::workload::residency_allows;
use stratus_model::{
    fleet::region_id, Accelerator, Fleet, GangScope, Inference, LatencyTable, Pool, Region,
    WorkloadSet,
};
use stratus_plan::{Category, Policy, PreviousPlan};

/// A slot: one way to buy nodes of one pool.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Pool id.
    pub pool: String,
    /// How its nodes are bought (never `CommittedPlusOnDemand`).
    pub category: Category,
    /// Nodes it has.
    pub nodes: u32,
    /// Region index.
    pub region: usize,
}

/// What kind of workload an item comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A training gang.
    Training,
    /// A batch job.
    Batch,
    /// One location (or shard) of an inference service.
    Inference,
}

/// One option of an item: where it would run and what that takes and costs.
#[derive(Debug, Clone)]
pub struct Opt {
    /// Pool id.
    pub pool: String,
    /// Category (`CommittedPlusOnDemand` for a blend).
    pub category: Category,
    /// Slots drawn on and nodes from each (two for a blend).
    pub uses: Vec<(usize, u32)>,
    /// Provider index.
    pub provider: usize,
    /// Region index.
    pub region: usize,
    /// Nodes in total.
    pub nodes: u32,
    /// Chips.
    pub chips: u32,
    /// Replicas (services) or 1.
    pub replicas: u32,
    /// Facility watts counted against the region's cap.
    pub watts: f64,
    /// Dollars per hour.
    pub dollars: f64,
    /// Objective contribution, $/h.
    pub cost: f64,
}

/// A placement unit.
#[derive(Debug, Clone)]
pub struct Item {
    /// Unit key (as the planner's plans name it).
    pub key: String,
    /// Workload name.
    pub workload: String,
    /// Kind.
    pub kind: Kind,
    /// Cost of leaving it out, $/h.
    pub penalty: f64,
    /// Options that satisfy every rule.
    pub options: Vec<Opt>,
    /// Service index, for services.
    pub service: Option<usize>,
    /// Left out by every plan (no option, or its service cannot span its rule): counts nothing.
    pub excluded: bool,
}

/// A service's redundancy rule over its items.
#[derive(Debug, Clone)]
pub struct Service {
    /// Name.
    pub name: String,
    /// Item indices.
    pub items: Vec<usize>,
    /// Providers its placed items must span.
    pub min_providers: u32,
    /// Regions its placed items must span.
    pub min_regions: u32,
}

/// A rule that rules an option out (the checker's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The pool's accelerator is not allowed.
    Accelerator,
    /// The region is outside the residency rule.
    Residency,
    /// Spot capacity for a workload that does not allow spot.
    Spot,
    /// The gang exceeds the interconnect domain.
    Domain,
    /// The slot (or a blend's slot) has too few nodes, even empty.
    Nodes,
    /// The option alone exceeds the region's power cap.
    Power,
    /// The job would miss its deadline.
    Deadline,
    /// A node's price exceeds the batch job's ceiling.
    MaxPrice,
    /// The region is beyond the latency SLO.
    Latency,
    /// The category does not exist for the pool, or does not fit the size (e.g. a blend of a
    /// job that fits in the committed nodes).
    NoSuchOption,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Broken::Accelerator => "accelerator not allowed",
            Broken::Residency => "residency",
            Broken::Spot => "spot not allowed",
            Broken::Domain => "interconnect domain",
            Broken::Nodes => "slot too small",
            Broken::Power => "power cap (alone)",
            Broken::Deadline => "deadline",
            Broken::MaxPrice => "price ceiling",
            Broken::Latency => "latency SLO",
            Broken::NoSuchOption => "no such option",
        })
    }
}

/// The rules applied to a fleet and workloads.
#[derive(Debug, Clone)]
pub struct Model {
    /// Slots, pool by pool in fleet order.
    pub slots: Vec<Slot>,
    /// Region ids.
    pub regions: Vec<String>,
    /// Power cap per region, facility watts.
    pub region_cap_watts: Vec<f64>,
    /// Provider names.
    pub providers: Vec<String>,
    /// Items.
    pub items: Vec<Item>,
    /// Services.
    pub services: Vec<Service>,
}

/// What a job (training or batch) asks, in the rules' terms.
struct Job<'a> {
    kind: Kind,
    chips: u32,
    accelerators: &'a [Accelerator],
    residency: &'a [String],
    spot: bool,
    one_domain: bool,
    work: f64,
    deadline: Option<f64>,
    max_price: Option<f64>,
    data_region: Option<&'a str>,
    checkpoint_hours: f64,
}

/// One inference item: a service, a location and the demand it serves.
struct Shard<'a> {
    service: &'a Inference,
    from: &'a str,
    rps: f64,
}

/// A pool with what the rules read of its place.
struct Place<'a> {
    provider: usize,
    region: usize,
    reg: &'a Region,
    region_id: String,
    pool: &'a Pool,
    /// Slot indices: committed, on-demand, spot.
    slots: [Option<usize>; 3],
}

impl<'a> Place<'a> {
    fn node_facility_watts(&self, policy: &Policy) -> f64 {
        self.pool.node_watts(policy.power_cap_utilisation).0 * self.reg.pue
    }
    fn node_average_watts(&self, policy: &Policy) -> f64 {
        self.pool.node_watts(policy.utilisation).0 * self.reg.pue
    }
    fn price(&self, category: Category) -> f64 {
        match category {
            Category::Committed => self
                .pool
                .committed
                .as_ref()
                .map_or(f64::INFINITY, |c| c.marginal_per_node_hour.0),
            Category::Spot => self.pool.spot_per_node_hour.map_or(f64::INFINITY, |p| p.0),
            _ => self.pool.on_demand_per_node_hour.0,
        }
    }
}

fn slot_index(category: Category) -> usize {
    match category {
        Category::Committed => 0,
        Category::Spot => 2,
        _ => 1,
    }
}

/// Everything shared by the option rules of one model.
pub(crate) struct Ctx<'a> {
    policy: &'a Policy,
    previous: Option<&'a PreviousPlan>,
    places: Vec<Place<'a>>,
    slots: Vec<Slot>,
    region_cap_watts: Vec<f64>,
    lat: std::sync::Arc<LatencyTable>,
    region_lat: Vec<Option<usize>>,
}

impl Model {
    /// Apply the rules. `previous` charges migration as the planner's `--previous` does.
    pub fn new(
        fleet: &Fleet,
        workloads: &WorkloadSet,
        policy: &Policy,
        previous: Option<&PreviousPlan>,
    ) -> Model {
        let ctx = Ctx::new(fleet, policy, previous);
        let mut items = Vec::new();
        for t in &workloads.training {
            let job = Job {
                kind: Kind::Training,
                chips: t.chips,
                accelerators: &t.accelerators,
                residency: &t.residency,
                spot: t.spot,
                one_domain: t.scope == GangScope::OneDomain,
                work: t.work_chip_hours.0,
                deadline: t.deadline_hours,
                max_price: None,
                data_region: t.data_region.as_deref(),
                checkpoint_hours: t.checkpoint_minutes / 60.0,
            };
            items.push(ctx.job_item(&t.name, t.priority, &job));
        }
        for b in &workloads.batch {
            let job = Job {
                kind: Kind::Batch,
                chips: b.chips,
                accelerators: &b.accelerators,
                residency: &b.residency,
                spot: b.spot,
                one_domain: false,
                work: b.work_chip_hours.0,
                deadline: b.deadline_hours,
                max_price: b.max_usd_per_chip_hour.map(|p| p.0),
                data_region: None,
                checkpoint_hours: 0.5,
            };
            items.push(ctx.job_item(&b.name, b.priority, &job));
        }
        let mut services = Vec::new();
        for (si, s) in workloads.inference.iter().enumerate() {
            let first = items.len();
            for (key, from, rps) in shards(s) {
                let shard = Shard {
                    service: s,
                    from,
                    rps,
                };
                let mut item = ctx.shard_item(key, &shard);
                item.service = Some(si);
                items.push(item);
            }
            let members: Vec<usize> = (first..items.len()).collect();
            let mut provs = BTreeSet::new();
            let mut regs = BTreeSet::new();
            for &i in &members {
                for o in &items[i].options {
                    provs.insert(o.provider);
                    regs.insert(o.region);
                }
            }
            if (provs.len() as u32) < s.min_providers || (regs.len() as u32) < s.min_regions {
                for &i in &members {
                    items[i].excluded = true;
                }
            }
            services.push(Service {
                name: s.name.clone(),
                items: members,
                min_providers: s.min_providers,
                min_regions: s.min_regions,
            });
        }
        Model {
            slots: ctx.slots,
            regions: fleet
                .regions()
                .map(|(p, r)| region_id(&p.name, &r.name))
                .collect(),
            region_cap_watts: ctx.region_cap_watts,
            providers: fleet.providers.iter().map(|p| p.name.clone()).collect(),
            items,
            services,
        }
    }

    /// The objective of a choice (an option index per item, or none): placed costs plus the
    /// penalties of items left out that are not excluded.
    pub fn objective(&self, choice: &[Option<usize>]) -> f64 {
        self.items
            .iter()
            .zip(choice)
            .map(|(it, c)| match c {
                Some(k) => it.options[*k].cost,
                None if it.excluded => 0.0,
                None => it.penalty,
            })
            .sum()
    }
}

/// A service's items: (key, location, rps), by the shard rule.
fn shards(s: &Inference) -> Vec<(String, &str, f64)> {
    let need = s.min_providers.max(s.min_regions) as usize;
    let locations = s.demand.len();
    let missing = need.saturating_sub(locations);
    let mut out = Vec::new();
    for (i, d) in s.demand.iter().enumerate() {
        let k = if i < missing.min(locations) {
            1 + missing.div_ceil(locations)
        } else {
            1
        };
        for j in 0..k {
            let key = if k == 1 {
                format!("{}@{}", s.name, d.from)
            } else {
                format!("{}@{}#{}", s.name, d.from, j)
            };
            out.push((key, d.from.as_str(), d.rps.0 / k as f64));
        }
    }
    out
}

fn penalty(priority: u32, chips: u32, kind: Kind) -> f64 {
    let p = 1000.0 * chips.max(1) as f64 * (1.0 + priority as f64 / 100.0);
    if kind == Kind::Batch {
        p / 10.0
    } else {
        p
    }
}

fn replicas(rps: f64, per_replica: f64) -> u32 {
    ((rps / per_replica).ceil() as u32).max(1)
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        fleet: &'a Fleet,
        policy: &'a Policy,
        previous: Option<&'a PreviousPlan>,
    ) -> Ctx<'a> {
        let lat = LatencyTable::cached(fleet);
        let mut places = Vec::new();
        let mut slots = Vec::new();
        let mut region_cap_watts = Vec::new();
        let mut region_lat = Vec::new();
        let mut region = 0;
        for (pi, p) in fleet.providers.iter().enumerate() {
            for reg in &p.regions {
                region_cap_watts.push(reg.power_cap_mw.0 * 1e6);
                region_lat.push(lat.index_of(&region_id(&p.name, &reg.name)));
                for pool in &reg.pools {
                    let committed = pool.committed.as_ref().map_or(0, |c| c.nodes);
                    let sizes = [
                        (Category::Committed, committed),
                        (Category::OnDemand, pool.nodes.saturating_sub(committed)),
                        (
                            Category::Spot,
                            if pool.spot_per_node_hour.is_some() {
                                pool.spot_nodes
                            } else {
                                0
                            },
                        ),
                    ];
                    let mut idx = [None; 3];
                    for (k, (category, nodes)) in sizes.into_iter().enumerate() {
                        if nodes > 0 {
                            idx[k] = Some(slots.len());
                            slots.push(Slot {
                                pool: pool.id.clone(),
                                category,
                                nodes,
                                region,
                            });
                        }
                    }
                    places.push(Place {
                        provider: pi,
                        region,
                        reg,
                        region_id: region_id(&p.name, &reg.name),
                        pool,
                        slots: idx,
                    });
                }
                region += 1;
            }
        }
        Ctx {
            policy,
            previous,
            places,
            slots,
            region_cap_watts,
            lat,
            region_lat,
        }
    }

    /// The place of a pool id.
    pub(crate) fn place_of(&self, pool: &str) -> Option<usize> {
        self.places.iter().position(|p| p.pool.id == pool)
    }

    fn job_item(&self, name: &str, priority: u32, job: &Job) -> Item {
        let mut options = Vec::new();
        for place in 0..self.places.len() {
            for category in [
                Category::Committed,
                Category::CommittedPlusOnDemand,
                Category::OnDemand,
                Category::Spot,
            ] {
                if let Ok(o) = self.job_option(name, job, place, category) {
                    options.push(o);
                }
            }
        }
        Item {
            key: name.to_string(),
            workload: name.to_string(),
            kind: job.kind,
            penalty: penalty(priority, job.chips, job.kind),
            excluded: options.is_empty(),
            options,
            service: None,
        }
    }

    fn shard_item(&self, key: String, shard: &Shard) -> Item {
        let mut options = Vec::new();
        for place in 0..self.places.len() {
            for category in [Category::Committed, Category::OnDemand, Category::Spot] {
                if let Ok(o) = self.shard_option(&key, shard, place, category) {
                    options.push(o);
                }
            }
        }
        let s = shard.service;
        let fewest = s
            .replica
            .values()
            .map(|spec| replicas(shard.rps, spec.rps.0) * spec.chips)
            .min()
            .unwrap_or(1);
        Item {
            key,
            workload: s.name.clone(),
            kind: Kind::Inference,
            penalty: penalty(s.priority, fewest, Kind::Inference),
            excluded: options.is_empty(),
            options,
            service: None,
        }
    }

    fn migration(&self, key: &str, pool: &str, category: Category) -> bool {
        self.previous
            .and_then(|p| p.placements.get(key))
            .is_some_and(|(pp, pc)| pp != pool || *pc != category)
    }

    fn carbon(&self, place: &Place, nodes: u32) -> f64 {
        // kW × g/kWh = g/h; / 1e6 = t/h; × $/t.
        let kw = nodes as f64 * place.node_average_watts(self.policy) / 1000.0;
        kw * place.reg.carbon_g_per_kwh.0 / 1e6 * self.policy.carbon_price.0
    }

    /// The option of a job on a pool in a category, or the first rule that rules it out.
    fn job_option(
        &self,
        key: &str,
        job: &Job,
        place: usize,
        category: Category,
    ) -> Result<Opt, Broken> {
        let pl = &self.places[place];
        let pool = pl.pool;
        if !job.accelerators.contains(&pool.accelerator) {
            return Err(Broken::Accelerator);
        }
        if !residency_allows(job.residency, &pl.reg.jurisdictions) {
            return Err(Broken::Residency);
        }
        if category == Category::Spot && !job.spot {
            return Err(Broken::Spot);
        }
        if job.one_domain && job.chips > pool.domain_chips {
            return Err(Broken::Domain);
        }
        let nodes = job.chips.div_ceil(pool.chips_per_node);
        let slot = |c: Category| pl.slots[slot_index(c)];
        let size = |s: Option<usize>| s.map_or(0, |s| self.slots[s].nodes);
        let uses: Vec<(usize, u32)> = match category {
            Category::CommittedPlusOnDemand => {
                let (c, od) = (slot(Category::Committed), slot(Category::OnDemand));
                let (Some(c), Some(od)) = (c, od) else {
                    return Err(Broken::NoSuchOption);
                };
                let have = self.slots[c].nodes;
                if nodes <= have {
                    return Err(Broken::NoSuchOption); // fits in the committed nodes alone
                }
                if nodes - have > self.slots[od].nodes {
                    return Err(Broken::Nodes);
                }
                vec![(c, have), (od, nodes - have)]
            }
            _ => {
                let Some(s) = slot(category) else {
                    return Err(Broken::NoSuchOption);
                };
                if nodes > size(Some(s)) {
                    return Err(Broken::Nodes);
                }
                vec![(s, nodes)]
            }
        };
        let watts = nodes as f64 * pl.node_facility_watts(self.policy);
        if watts > self.region_cap_watts[pl.region] {
            return Err(Broken::Power);
        }
        let speed = pool.accelerator.profile().rel_training;
        if let Some(d) = job.deadline {
            if job.work / (job.chips as f64 * speed) > d {
                return Err(Broken::Deadline);
            }
        }
        let price_of = |s: usize| self.places[place].price(self.slots[s].category);
        if let Some(max) = job.max_price {
            if uses
                .iter()
                .any(|&(s, _)| price_of(s) / pool.chips_per_node as f64 > max)
            {
                return Err(Broken::MaxPrice);
            }
        }
        let dollars: f64 = uses.iter().map(|&(s, n)| n as f64 * price_of(s)).sum();
        let mut cost = dollars / speed;
        if category == Category::Spot && job.kind == Kind::Training {
            cost *= 1.0 + self.policy.spot_training_overhead;
        }
        cost += self.carbon(pl, nodes);
        if job.data_region.is_some_and(|d| d != pl.region_id) {
            cost += self.policy.remote_data_usd_per_chip_hour * job.chips as f64;
        }
        if self.migration(key, &pool.id, category) {
            let worth = nodes as f64 * pool.on_demand_per_node_hour.0;
            cost += dollars.max(worth) * (job.checkpoint_hours / 2.0 + self.policy.restart_hours)
                / self.policy.migration_amortization_hours;
        }
        Ok(Opt {
            pool: pool.id.clone(),
            category,
            uses,
            provider: pl.provider,
            region: pl.region,
            nodes,
            chips: job.chips,
            replicas: 1,
            watts,
            dollars,
            cost,
        })
    }

    /// The option of an inference item on a pool in a category, or the first rule that rules
    /// it out.
    fn shard_option(
        &self,
        key: &str,
        shard: &Shard,
        place: usize,
        category: Category,
    ) -> Result<Opt, Broken> {
        let pl = &self.places[place];
        let pool = pl.pool;
        let s = shard.service;
        let Some(spec) = s.replica.get(&pool.accelerator) else {
            return Err(Broken::Accelerator);
        };
        if !residency_allows(&s.residency, &pl.reg.jurisdictions) {
            return Err(Broken::Residency);
        }
        if category == Category::Spot && !s.spot {
            return Err(Broken::Spot);
        }
        let Some(slot) = pl.slots[slot_index(category)].filter(|_| {
            category != Category::CommittedPlusOnDemand // services are never blended
        }) else {
            return Err(Broken::NoSuchOption);
        };
        let r = replicas(shard.rps, spec.rps.0);
        let cpn = pool.chips_per_node;
        let nodes = if spec.chips <= cpn {
            r.div_ceil(cpn / spec.chips)
        } else {
            r * spec.chips.div_ceil(cpn)
        };
        if nodes > self.slots[slot].nodes {
            return Err(Broken::Nodes);
        }
        let watts = nodes as f64 * pl.node_facility_watts(self.policy);
        if watts > self.region_cap_watts[pl.region] {
            return Err(Broken::Power);
        }
        let rtt = match (self.lat.index_of(shard.from), self.region_lat[pl.region]) {
            (Some(a), Some(b)) => self.lat.rtt(a, b).0,
            _ => f64::INFINITY,
        };
        if rtt > s.latency_slo_ms.0 {
            return Err(Broken::Latency);
        }
        let dollars = nodes as f64 * pl.price(category);
        let mut cost = dollars
            + self.carbon(pl, nodes)
            + self.policy.latency_usd_per_ms_krps_hour * rtt * shard.rps / 1000.0;
        if self.migration(key, &pool.id, category) {
            let worth = nodes as f64 * pool.on_demand_per_node_hour.0;
            cost += dollars.max(worth) * self.policy.restart_hours
                / self.policy.migration_amortization_hours;
        }
        Ok(Opt {
            pool: pool.id.clone(),
            category,
            uses: vec![(slot, nodes)],
            provider: pl.provider,
            region: pl.region,
            nodes,
            chips: r * spec.chips,
            replicas: r,
            watts,
            dollars,
            cost,
        })
    }
}

/// Why an item cannot have the given pool and category, re-derived for the checker: `Ok`
/// with the option when the rules allow it.
pub(crate) fn option_for(
    fleet: &Fleet,
    workloads: &WorkloadSet,
    policy: &Policy,
    previous: Option<&PreviousPlan>,
    key: &str,
    pool: &str,
    category: Category,
) -> Option<Result<Opt, Broken>> {
    let ctx = Ctx::new(fleet, policy, previous);
    let place = ctx.place_of(pool)?;
    if let Some(t) = workloads.training.iter().find(|t| t.name == key) {
        let job = Job {
            kind: Kind::Training,
            chips: t.chips,
            accelerators: &t.accelerators,
            residency: &t.residency,
            spot: t.spot,
            one_domain: t.scope == GangScope::OneDomain,
            work: t.work_chip_hours.0,
            deadline: t.deadline_hours,
            max_price: None,
            data_region: t.data_region.as_deref(),
            checkpoint_hours: t.checkpoint_minutes / 60.0,
        };
        return Some(ctx.job_option(key, &job, place, category));
    }
    if let Some(b) = workloads.batch.iter().find(|b| b.name == key) {
        let job = Job {
            kind: Kind::Batch,
            chips: b.chips,
            accelerators: &b.accelerators,
            residency: &b.residency,
            spot: b.spot,
            one_domain: false,
            work: b.work_chip_hours.0,
            deadline: b.deadline_hours,
            max_price: b.max_usd_per_chip_hour.map(|p| p.0),
            data_region: None,
            checkpoint_hours: 0.5,
        };
        return Some(ctx.job_option(key, &job, place, category));
    }
    for s in &workloads.inference {
        for (k, from, rps) in shards(s) {
            if k == key {
                let shard = Shard {
                    service: s,
                    from,
                    rps,
                };
                return Some(ctx.shard_option(key, &shard, place, category));
            }
        }
    }
    None
}

/// Items with identical options and penalty, outside services: the LP relaxation (and the
/// MILP with general integers) may treat each group as one variable per option.
pub(crate) fn identical_groups(m: &Model) -> Vec<Vec<usize>> {
    let mut by: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, it) in m.items.iter().enumerate() {
        if it.service.is_some() || it.excluded {
            groups.push(vec![i]);
            continue;
        }
        let mut sig = format!("{:?}|{}", it.kind, it.penalty.to_bits());
        for o in &it.options {
            sig.push_str(&format!(
                "|{:?}{}{}",
                o.uses,
                o.cost.to_bits(),
                o.watts.to_bits()
            ));
        }
        match by.get(&sig) {
            Some(&g) => groups[g].push(i),
            None => {
                by.insert(sig, groups.len());
                groups.push(vec![i]);
            }
        }
    }
    groups
}

/// Per-slot nodes and per-region watts a choice uses, for checks.
pub fn usage(m: &Model, choice: &[Option<usize>]) -> (Vec<u64>, Vec<f64>) {
    let mut nodes = vec![0u64; m.slots.len()];
    let mut watts = vec![0.0; m.regions.len()];
    for (it, c) in m.items.iter().zip(choice) {
        if let Some(k) = c {
            let o = &it.options[*k];
            for &(s, n) in &o.uses {
                nodes[s] += n as u64;
            }
            watts[o.region] += o.watts;
        }
    }
    (nodes, watts)
}

/// Providers and regions the placed items of each service span.
pub(crate) fn spans(m: &Model, choice: &[Option<usize>]) -> Vec<(usize, usize, usize)> {
    m.services
        .iter()
        .map(|s| {
            let mut provs = BTreeSet::new();
            let mut regs = BTreeSet::new();
            let mut placed = 0;
            for &i in &s.items {
                if let Some(k) = choice[i] {
                    placed += 1;
                    provs.insert(m.items[i].options[k].provider);
                    regs.insert(m.items[i].options[k].region);
                }
            }
            (placed, provs.len(), regs.len())
        })
        .collect()
}

/// Index of each item by key.
pub fn by_key(m: &Model) -> BTreeMap<&str, usize> {
    m.items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.key.as_str(), i))
        .collect()
}
