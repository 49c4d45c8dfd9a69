//! The reconcile loop, level-triggered as Kubernetes controllers are: each tick compares the
//! desired state (a plan) with what the driver observes and issues the actions that close the
//! gap. It never reads a clock or a random source; the simulator and `stratus serve` call the
//! same [`Controller::tick`], one with simulated time, the other with wall time.

use crate::driver::{Driver, DriverError, InstanceState, LaunchRequest, LossCause, Time};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use stratus_model::{Fleet, WorkloadSet};
use stratus_plan::{
    Algorithm, Category, Constraint, Placement, Plan, Policy, PreviousPlan, UnitKind,
};

/// How the controller decides placements. `Stratus` is the product; the others are the
/// baselines the simulator compares it with, run by the same loop so only the decision differs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The global planner, re-optimising everything on a period and on events.
    Stratus,
    /// SkyPilot-like: each workload to its cheapest option in arrival order, failing over to the
    /// next cheapest on capacity errors; running work is never moved for cost.
    CheapestFirst,
    /// Everything on one cloud (the global planner restricted to that provider).
    SingleProvider(String),
    /// New workloads dealt to providers in turn, cheapest option within the provider, failing
    /// over to the next provider.
    RoundRobin,
}

impl Strategy {
    /// Short name for reports.
    pub fn name(&self) -> String {
        match self {
            Strategy::Stratus => "stratus".into(),
            Strategy::CheapestFirst => "cheapest-first".into(),
            Strategy::SingleProvider(p) => format!("single-provider:{p}"),
            Strategy::RoundRobin => "round-robin".into(),
        }
    }

    fn global(&self) -> bool {
        matches!(self, Strategy::Stratus | Strategy::SingleProvider(_))
    }
}

/// Timing of the loop. Defaults suit a fleet of cloud VMs that boot in minutes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// Seconds between reconciles.
    pub tick_s: f64,
    /// Seconds between global re-optimisations (global strategies).
    pub replan_s: f64,
    /// Seconds from an event (loss, arrival) to the reconcile that handles it.
    pub react_s: f64,
    /// A healthy unit is not moved for cost sooner than this after its launch (hysteresis).
    pub min_dwell_s: f64,
    /// A region believed down is tried again after this.
    pub probe_s: f64,
    /// A capacity error caps the pool in plans for this long.
    pub capacity_memory_s: f64,
    /// Launches per reconcile at most (rate limit).
    pub max_launches_per_tick: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            tick_s: 900.0,
            replan_s: 3600.0,
            react_s: 60.0,
            min_dwell_s: 3600.0,
            probe_s: 1800.0,
            capacity_memory_s: 3600.0,
            max_launches_per_tick: 1000,
        }
    }
}

/// What the controller did, for the actions log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Started a unit.
    Launch,
    /// Stopped a unit that is no longer planned.
    Stop,
    /// Checkpointed and stopped a unit to start it elsewhere.
    Migrate,
    /// Resized a unit in place (inference replicas following demand).
    Scale,
    /// A launch the driver refused.
    LaunchFailed,
    /// A unit the provider took away (preemption, outage, capacity loss).
    Lost,
}

/// One entry of the actions log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// When.
    pub at: Time,
    /// What.
    pub kind: ActionKind,
    /// Unit key.
    pub unit: String,
    /// Pool involved.
    pub pool: String,
    /// Idempotency token of the instance involved.
    pub token: String,
    /// Why, in one line.
    pub reason: String,
}

/// Counters over the controller's life.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerStats {
    /// Global re-optimisations.
    pub replans: u64,
    /// Plans of a subset of workloads (arrivals, losses, failovers).
    pub incremental_plans: u64,
    /// Launches accepted.
    pub launches: u64,
    /// Stops of units no longer planned.
    pub stops: u64,
    /// Moves (checkpoint, stop, launch elsewhere).
    pub migrations: u64,
    /// Resizes in place.
    pub scales: u64,
    /// Plans that ran a service below its redundancy because the providers or regions it
    /// needs were unavailable.
    pub degraded: u64,
    /// Launches refused for capacity.
    pub capacity_errors: u64,
    /// Launches refused because the region did not answer.
    pub unreachable_errors: u64,
    /// Units taken away by the provider.
    pub losses: u64,
}

/// A unit as planned.
#[derive(Debug, Clone, PartialEq)]
struct Desired {
    workload: String,
    pool: String,
    region: String,
    category: Category,
    nodes: u32,
    committed_nodes: u32,
    replicas: u32,
    power_mw: f64,
}

impl Desired {
    /// Same placement and size (power is derived, and unknown for adopted instances).
    fn same_as(&self, o: &Desired) -> bool {
        self.workload == o.workload
            && self.pool == o.pool
            && self.category == o.category
            && self.nodes == o.nodes
            && self.committed_nodes == o.committed_nodes
            && self.replicas == o.replicas
    }

    fn from_placement(p: &Placement) -> Desired {
        Desired {
            workload: p.workload.clone(),
            pool: p.pool.clone(),
            region: p.region.clone(),
            category: p.category,
            nodes: p.nodes,
            committed_nodes: p.committed_nodes,
            replicas: p.replicas,
            power_mw: p.power_mw,
        }
    }
}

/// A unit we launched and believe alive.
#[derive(Debug, Clone, PartialEq)]
struct Tracked {
    token: String,
    desired: Desired,
    launched_at: Time,
    /// The instance this one replaces, kept serving until this one runs (make before break).
    retiring: Option<String>,
}

/// The controller: beliefs about the world, the desired state, and what it launched.
#[derive(Debug, Clone)]
pub struct Controller {
    /// Loop timing.
    pub config: ControllerConfig,
    /// Decision strategy.
    pub strategy: Strategy,
    /// Planner policy.
    pub policy: Policy,
    fleet: Fleet,
    down: BTreeMap<String, Time>,
    caps: BTreeMap<String, (Time, u32, u32, u32)>,
    desired: BTreeMap<String, Desired>,
    tracked: BTreeMap<String, Tracked>,
    incomplete: BTreeSet<String>,
    unplaced: BTreeSet<String>,
    known: BTreeSet<String>,
    seq: u64,
    last_full: Option<Time>,
    /// Capacity was released since unplaced work was last retried.
    freed: bool,
    /// Each service's total demand (req/s) when it was last sized.
    demand_seen: BTreeMap<String, f64>,
    /// Workloads with an instance still booting, as of the last observation.
    booting: BTreeSet<String>,
    /// The planner's output of the last global re-optimisation, for plan history and APIs.
    last_plan: Option<Plan>,
    /// The driver's report at the last reconcile.
    observed: Vec<crate::driver::Instance>,
    dirty: bool,
    rr_next: usize,
    rr_of: BTreeMap<String, usize>,
    /// Counters.
    pub stats: ControllerStats,
    /// Starts every token this controller issues, so controllers of different installations
    /// sharing a provider never take (or stop) each other's instances. Empty in the simulator.
    pub token_prefix: String,
}

impl Controller {
    /// A controller for `fleet` (its belief of the world: prices, carbon, capacity).
    pub fn new(fleet: Fleet, strategy: Strategy, config: ControllerConfig) -> Controller {
        let policy = match strategy {
            Strategy::CheapestFirst | Strategy::RoundRobin => {
                Policy::with_algorithm(Algorithm::CheapestFirst)
            }
            _ => Policy::default(),
        };
        Controller {
            config,
            strategy,
            policy,
            fleet,
            down: BTreeMap::new(),
            caps: BTreeMap::new(),
            desired: BTreeMap::new(),
            tracked: BTreeMap::new(),
            incomplete: BTreeSet::new(),
            unplaced: BTreeSet::new(),
            known: BTreeSet::new(),
            seq: 0,
            last_full: None,
            freed: false,
            demand_seen: BTreeMap::new(),
            booting: BTreeSet::new(),
            last_plan: None,
            observed: Vec::new(),
            dirty: true,
            rr_next: 0,
            rr_of: BTreeMap::new(),
            stats: ControllerStats::default(),
            token_prefix: String::new(),
        }
    }

    /// The controller's belief of the fleet, for the harness to update with public facts
    /// (price changes, the current hour's grid carbon). Taken into account at the next
    /// global re-optimisation.
    pub fn fleet_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
    }

    /// Ask for a global re-optimisation at the next tick (an outage was announced, prices
    /// changed).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// What the driver reported at the start of the last reconcile: callers that show state
    /// read this instead of asking the driver again (a remote call per driver).
    pub fn observed(&self) -> &[crate::driver::Instance] {
        &self.observed
    }

    /// Take over what a driver already runs (after a restart of the controller): live
    /// instances become tracked units, so the next reconcile keeps them instead of launching
    /// again, and new tokens continue after the highest one seen.
    pub fn adopt(&mut self, instances: Vec<crate::driver::Instance>) {
        for i in instances {
            if matches!(
                i.state,
                InstanceState::Lost(_) | InstanceState::Stopping { .. }
            ) || !i.request.token.starts_with(&self.token_prefix)
            {
                continue;
            }
            let r = i.request;
            if let Some(n) = r
                .token
                .rsplit_once('~')
                .and_then(|(_, n)| n.parse::<u64>().ok())
            {
                self.seq = self.seq.max(n);
            }
            let d = Desired {
                workload: r.workload,
                pool: r.pool,
                region: r.region,
                category: r.category,
                nodes: r.nodes,
                committed_nodes: r.committed_nodes,
                replicas: r.replicas,
                power_mw: 0.0,
            };
            self.desired.insert(r.unit.clone(), d.clone());
            self.tracked.insert(
                r.unit,
                Tracked {
                    token: r.token,
                    desired: d,
                    launched_at: i.launched_at,
                    retiring: None,
                },
            );
        }
    }

    /// The planner's output at the last global re-optimisation (global strategies).
    pub fn last_plan(&self) -> Option<&Plan> {
        self.last_plan.as_ref()
    }

    /// Workloads with at least one unit the last plan could not place.
    pub fn unplaced_workloads(&self) -> &BTreeSet<String> {
        &self.unplaced
    }

    /// One reconcile at `now` for the active `workloads`: observe, re-plan if due, act.
    pub fn tick(
        &mut self,
        now: Time,
        workloads: &WorkloadSet,
        driver: &mut dyn Driver,
    ) -> Vec<Action> {
        let mut log = Vec::new();
        self.observe(now, driver, &mut log);
        self.down.retain(|_, t| t.0 > now.0);
        self.caps.retain(|_, c| c.0 .0 > now.0);

        // Finished or withdrawn workloads: forget their plan, stop what runs.
        let active: BTreeSet<&str> = names(workloads).collect();
        let before = self.desired.len();
        self.desired
            .retain(|_, d| active.contains(d.workload.as_str()));
        self.freed |= self.desired.len() != before;
        self.incomplete.retain(|w| active.contains(w.as_str()));
        self.unplaced.retain(|w| active.contains(w.as_str()));
        self.rr_of.retain(|w, _| active.contains(w.as_str()));
        for w in names(workloads) {
            if self.known.insert(w.to_string()) {
                self.incomplete.insert(w.to_string());
            }
        }
        self.known.retain(|w| active.contains(w.as_str()));
        // A service whose demand moved by more than a tenth is re-sized (autoscaling).
        self.demand_seen.retain(|w, _| active.contains(w.as_str()));
        for s in &workloads.inference {
            let total: f64 = s.demand.iter().map(|d| d.rps.0).sum();
            let prev = self.demand_seen.insert(s.name.clone(), total);
            match prev {
                Some(p) if (total - p).abs() > 0.1 * p.max(1e-9) => {
                    self.incomplete.insert(s.name.clone());
                }
                Some(p) => {
                    self.demand_seen.insert(s.name.clone(), p);
                }
                None => {}
            }
        }

        let due = self
            .last_full
            .is_none_or(|t| now.0 - t.0 >= self.config.replan_s - 1e-6);
        if self.strategy.global() && (self.dirty || due) {
            let all: BTreeSet<String> = active.iter().map(|s| s.to_string()).collect();
            self.plan_workloads(&all, workloads, true);
            self.stats.replans += 1;
            self.last_full = Some(now);
            self.dirty = false;
        } else {
            // Work that did not fit is retried when capacity was released, and on the
            // re-plan period otherwise: not on every tick, where nothing would have changed.
            let mut todo = self.incomplete.clone();
            if self.freed || due {
                todo.extend(self.unplaced.iter().cloned());
                self.freed = false;
                if !self.strategy.global() {
                    self.last_full = Some(now);
                }
            }
            if !todo.is_empty() {
                self.plan_workloads(&todo, workloads, false);
                self.stats.incremental_plans += 1;
            }
        }
        for round in 0..3 {
            let failed = self.reconcile(now, driver, &mut log);
            if failed.is_empty() || round == 2 {
                break;
            }
            self.plan_workloads(&failed, workloads, false);
            self.stats.incremental_plans += 1;
        }
        log
    }

    /// Drop tracked units the driver no longer runs; losses make their workload incomplete.
    fn observe(&mut self, now: Time, driver: &mut dyn Driver, log: &mut Vec<Action>) {
        self.observed = driver.observe(now);
        let seen: HashMap<String, InstanceState> = self
            .observed
            .iter()
            .map(|i| (i.request.token.clone(), i.state))
            .collect();
        // Replacements that run now retire the instance they replace; a lost replacement
        // takes its predecessor with it (the unit is re-placed as a whole).
        for t in self.tracked.values_mut() {
            let Some(old) = t.retiring.clone() else {
                continue;
            };
            match seen.get(&t.token) {
                Some(InstanceState::Pending { .. }) => {}
                _ => {
                    let _ = driver.stop(now, &old);
                    t.retiring = None;
                    self.freed = true;
                }
            }
        }
        self.booting = self
            .tracked
            .values()
            .filter(|t| matches!(seen.get(&t.token), Some(InstanceState::Pending { .. })))
            .map(|t| t.desired.workload.clone())
            .collect();
        let mut lost = Vec::new();
        for (unit, t) in &self.tracked {
            let cause = match seen.get(&t.token) {
                None => Some("instance disappeared".to_string()),
                Some(InstanceState::Lost(c)) => Some(
                    match c {
                        LossCause::Preempted => "spot preemption",
                        LossCause::Outage => "outage",
                        LossCause::CapacityLoss => "capacity loss",
                    }
                    .to_string(),
                ),
                _ => None,
            };
            if let Some(c) = cause {
                if matches!(
                    seen.get(&t.token),
                    Some(InstanceState::Lost(LossCause::Outage))
                ) {
                    self.down
                        .insert(t.desired.region.clone(), now.plus(self.config.probe_s));
                }
                lost.push((unit.clone(), c));
            }
        }
        for (unit, cause) in lost {
            let t = self.tracked.remove(&unit).expect("listed above");
            self.desired.remove(&unit);
            self.incomplete.insert(t.desired.workload.clone());
            self.stats.losses += 1;
            self.freed = true;
            self.dirty |= self.strategy.global();
            log.push(Action {
                at: now,
                kind: ActionKind::Lost,
                unit,
                pool: t.desired.pool,
                token: t.token,
                reason: cause,
            });
        }
    }

    /// Plan `todo` (workload names); everything else planned keeps its capacity.
    fn plan_workloads(&mut self, todo: &BTreeSet<String>, workloads: &WorkloadSet, full: bool) {
        let mut subset = filter(workloads, |n| todo.contains(n));
        if subset.is_empty() && !full {
            return;
        }
        if matches!(
            self.strategy,
            Strategy::SingleProvider(_) | Strategy::RoundRobin
        ) {
            // One provider per workload by construction: a service's cross-provider redundancy
            // cannot hold, so it is kept across regions only (what a one-cloud lab runs).
            for s in &mut subset.inference {
                s.min_providers = 1;
            }
        }
        self.desired.retain(|_, d| !todo.contains(&d.workload));
        let previous = PreviousPlan {
            placements: self
                .tracked
                .iter()
                .map(|(u, t)| (u.clone(), (t.desired.pool.clone(), t.desired.category)))
                .collect(),
        };
        let providers: Vec<String> = self
            .fleet
            .providers
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let mut placed: Vec<Placement> = Vec::new();
        let mut unplaced_units: BTreeSet<String> = BTreeSet::new();
        match &self.strategy {
            Strategy::Stratus | Strategy::CheapestFirst | Strategy::SingleProvider(_) => {
                let only = match &self.strategy {
                    Strategy::SingleProvider(p) => Some(p.clone()),
                    _ => None,
                };
                let view = self.view(only.as_deref());
                let plan = stratus_plan::plan(&view, &subset, &self.policy, Some(&previous));
                if full {
                    self.last_plan = Some(plan.clone());
                }
                // Services whose redundancy cannot hold now (an outage took the providers
                // they need) run degraded, on what is left, rather than not at all.
                let degraded: BTreeSet<String> = plan
                    .unplaced
                    .iter()
                    .filter(|u| {
                        u.kind == UnitKind::Inference && u.constraint == Constraint::Redundancy
                    })
                    .map(|u| u.workload.clone())
                    .collect();
                placed = plan.placements;
                unplaced_units.extend(plan.unplaced.into_iter().map(|u| u.workload));
                if !degraded.is_empty() {
                    let mut part = filter(&subset, |n| degraded.contains(n));
                    for s in &mut part.inference {
                        s.min_providers = 1;
                        s.min_regions = 1;
                    }
                    for p in &placed {
                        self.desired
                            .insert(p.unit.clone(), Desired::from_placement(p));
                    }
                    let view = self.view(only.as_deref());
                    let plan = stratus_plan::plan(&view, &part, &self.policy, Some(&previous));
                    let got: BTreeSet<&str> = plan
                        .placements
                        .iter()
                        .map(|p| p.workload.as_str())
                        .collect();
                    self.stats.degraded += got.len() as u64;
                    for w in &got {
                        unplaced_units.remove(*w);
                    }
                    // Still short of redundancy: retried as capacity comes back.
                    unplaced_units.extend(got.iter().map(|w| w.to_string()));
                    placed.extend(plan.placements);
                }
            }
            Strategy::RoundRobin => {
                // Deal new workloads to providers in turn (arrival order), then fail over.
                for w in names(&subset) {
                    if !self.rr_of.contains_key(w) {
                        self.rr_of
                            .insert(w.to_string(), self.rr_next % providers.len().max(1));
                        self.rr_next += 1;
                    }
                }
                let mut left: BTreeSet<String> = names(&subset).map(String::from).collect();
                for attempt in 0..providers.len() {
                    if left.is_empty() {
                        break;
                    }
                    let mut placed_now: Vec<Placement> = Vec::new();
                    for (pi, pname) in providers.iter().enumerate() {
                        let group: BTreeSet<String> = left
                            .iter()
                            .filter(|w| (self.rr_of[*w] + attempt) % providers.len() == pi)
                            .cloned()
                            .collect();
                        if group.is_empty() {
                            continue;
                        }
                        let part = filter(&subset, |n| group.contains(n));
                        for p in &placed {
                            self.desired
                                .insert(p.unit.clone(), Desired::from_placement(p));
                        }
                        let view = self.view(Some(pname));
                        let plan = stratus_plan::plan(&view, &part, &self.policy, Some(&previous));
                        // A workload placed in part stays with this provider; its units that
                        // found no room are retried at later reconciles.
                        let got: BTreeSet<String> =
                            plan.placements.iter().map(|p| p.workload.clone()).collect();
                        unplaced_units.extend(
                            plan.unplaced
                                .into_iter()
                                .map(|u| u.workload)
                                .filter(|w| got.contains(w)),
                        );
                        placed_now.extend(plan.placements);
                        for g in &group {
                            if got.contains(g) {
                                left.remove(g);
                            }
                        }
                    }
                    placed.extend(placed_now);
                }
                unplaced_units.extend(left);
            }
        }
        for p in &placed {
            let mut d = Desired::from_placement(p);
            if !self.strategy.global() {
                // Baselines never move running work for cost: a unit that runs keeps its pool
                // (it may still be resized there).
                if let Some(t) = self.tracked.get(&p.unit) {
                    if t.desired.pool != d.pool || t.desired.category != d.category {
                        d = t.desired.clone();
                    }
                }
            }
            self.desired.insert(p.unit.clone(), d);
        }
        for w in todo {
            self.incomplete.remove(w);
            if unplaced_units.contains(w) {
                self.unplaced.insert(w.clone());
            } else {
                self.unplaced.remove(w);
            }
        }
    }

    /// The fleet as plans should see it: believed-down regions and capacity errors applied,
    /// and the capacity and power of units kept in place taken out.
    fn view(&self, only: Option<&str>) -> Fleet {
        let mut f = self.fleet.clone();
        let mut used: HashMap<&str, (u32, u32, u32)> = HashMap::new();
        let mut power: HashMap<&str, f64> = HashMap::new();
        for d in self.desired.values() {
            let e = used.entry(d.pool.as_str()).or_default();
            if d.category == Category::Spot {
                e.2 += d.nodes;
            } else {
                e.0 += d.committed_nodes;
                e.1 += d.nodes - d.committed_nodes.min(d.nodes);
            }
            *power.entry(d.region.as_str()).or_default() += d.power_mw;
        }
        for prov in &mut f.providers {
            for r in &mut prov.regions {
                let rid = stratus_model::fleet::region_id(&prov.name, &r.name);
                // Other providers stay in the view without pools: their regions are still
                // where users are and where latency is measured from.
                if only.is_some_and(|p| p != prov.name) {
                    r.pools.clear();
                    continue;
                }
                let down = self.down.contains_key(&rid);
                if let Some(mw) = power.get(rid.as_str()) {
                    r.power_cap_mw.0 = (r.power_cap_mw.0 - mw).max(0.0);
                }
                for pool in &mut r.pools {
                    let mut committed = pool.committed.as_ref().map(|c| c.nodes).unwrap_or(0);
                    let mut od = pool.nodes.saturating_sub(committed);
                    let mut spot = pool.spot_nodes;
                    if down {
                        (committed, od, spot) = (0, 0, 0);
                    }
                    if let Some(&(_, c, o, s)) = self.caps.get(&pool.id) {
                        committed = committed.min(c);
                        od = od.min(o);
                        spot = spot.min(s);
                    }
                    if let Some(&(c, o, s)) = used.get(pool.id.as_str()) {
                        committed = committed.saturating_sub(c);
                        od = od.saturating_sub(o);
                        spot = spot.saturating_sub(s);
                    }
                    if let Some(c) = pool.committed.as_mut() {
                        c.nodes = committed;
                    }
                    pool.nodes = committed + od;
                    pool.spot_nodes = spot;
                }
            }
        }
        f
    }

    /// Close the gap between desired and tracked. Returns the workloads whose launches failed.
    fn reconcile(
        &mut self,
        now: Time,
        driver: &mut dyn Driver,
        log: &mut Vec<Action>,
    ) -> BTreeSet<String> {
        // Stops and moves first, so launches find the capacity they free. Inference moves and
        // resizes are made before they break: the old instance keeps serving until its
        // replacement runs (see `observe`); a gang checkpoints and stops, then starts anew.
        let mut replacing: BTreeMap<String, Tracked> = BTreeMap::new();
        // A service's replicas that leave the plan keep serving while the service has
        // replicas booting or about to launch, so a re-plan never leaves it without any.
        let mut settling = self.booting.clone();
        for (u, d) in &self.desired {
            if !self.tracked.contains_key(u) {
                settling.insert(d.workload.clone());
            }
        }
        let units: Vec<String> = self.tracked.keys().cloned().collect();
        for unit in units {
            let t = &self.tracked[&unit];
            let action = match self.desired.get(&unit) {
                None if unit.contains('@') && settling.contains(&t.desired.workload) => None,
                None => Some((ActionKind::Stop, "no longer in the plan".to_string())),
                Some(d) if d.same_as(&t.desired) => None,
                Some(d) if d.pool == t.desired.pool && d.category == t.desired.category => Some((
                    ActionKind::Scale,
                    format!("{} → {} nodes", t.desired.nodes, d.nodes),
                )),
                Some(d) => {
                    let young = now.0 - t.launched_at.0 < self.config.min_dwell_s;
                    if young && self.strategy.global() {
                        // Hysteresis: keep the recent placement for now.
                        let keep = t.desired.clone();
                        self.desired.insert(unit.clone(), keep);
                        None
                    } else {
                        Some((
                            ActionKind::Migrate,
                            format!("re-planned to {} ({:?})", d.pool, d.category),
                        ))
                    }
                }
            };
            let Some((kind, reason)) = action else {
                continue;
            };
            let t = self.tracked.remove(&unit).expect("listed above");
            match kind {
                ActionKind::Migrate => self.stats.migrations += 1,
                ActionKind::Scale => self.stats.scales += 1,
                _ => self.stats.stops += 1,
            }
            log.push(Action {
                at: now,
                kind,
                unit: unit.clone(),
                pool: t.desired.pool.clone(),
                token: t.token.clone(),
                reason,
            });
            if kind != ActionKind::Stop && unit.contains('@') && t.retiring.is_none() {
                replacing.insert(unit, t);
            } else {
                // A stop of an instance the driver already forgot is not an error here.
                let _ = driver.stop(now, &t.token);
                if let Some(old) = &t.retiring {
                    let _ = driver.stop(now, old);
                }
                self.freed = true;
            }
        }
        let mut failed = BTreeSet::new();
        let mut launched = 0;
        let todo: Vec<(String, Desired)> = self
            .desired
            .iter()
            .filter(|(u, _)| !self.tracked.contains_key(*u))
            .map(|(u, d)| (u.clone(), d.clone()))
            .collect();
        for (unit, d) in todo {
            if launched >= self.config.max_launches_per_tick {
                break;
            }
            self.seq += 1;
            let token = format!("{}{unit}~{}", self.token_prefix, self.seq);
            let req = LaunchRequest {
                token: token.clone(),
                unit: unit.clone(),
                workload: d.workload.clone(),
                pool: d.pool.clone(),
                region: d.region.clone(),
                category: d.category,
                nodes: d.nodes,
                committed_nodes: d.committed_nodes,
                replicas: d.replicas,
            };
            match driver.launch(now, &req) {
                Ok(()) => {
                    launched += 1;
                    self.stats.launches += 1;
                    log.push(Action {
                        at: now,
                        kind: ActionKind::Launch,
                        unit: unit.clone(),
                        pool: d.pool.clone(),
                        token: token.clone(),
                        reason: format!("{} nodes ({:?})", d.nodes, d.category),
                    });
                    let retiring = replacing.remove(&unit).map(|old| old.token);
                    self.tracked.insert(
                        unit,
                        Tracked {
                            token,
                            desired: d,
                            launched_at: now,
                            retiring,
                        },
                    );
                }
                Err(e) => {
                    match &e {
                        DriverError::Capacity { free, .. } => {
                            self.stats.capacity_errors += 1;
                            // Capacity available to us = free now + what we already hold there.
                            let mut held = (0, 0, 0);
                            for t in self.tracked.values().filter(|t| t.desired.pool == d.pool) {
                                if t.desired.category == Category::Spot {
                                    held.2 += t.desired.nodes;
                                } else {
                                    held.0 += t.desired.committed_nodes;
                                    held.1 += t.desired.nodes - t.desired.committed_nodes;
                                }
                            }
                            self.caps.insert(
                                d.pool.clone(),
                                (
                                    now.plus(self.config.capacity_memory_s),
                                    free.committed + held.0,
                                    free.on_demand + held.1,
                                    free.spot + held.2,
                                ),
                            );
                        }
                        DriverError::Unreachable { region, .. } => {
                            self.stats.unreachable_errors += 1;
                            self.down
                                .insert(region.clone(), now.plus(self.config.probe_s));
                        }
                        _ => {}
                    }
                    log.push(Action {
                        at: now,
                        kind: ActionKind::LaunchFailed,
                        unit: unit.clone(),
                        pool: d.pool.clone(),
                        token,
                        reason: e.to_string(),
                    });
                    match replacing.remove(&unit) {
                        // The replacement did not start: the old instance keeps serving.
                        Some(old) => {
                            self.desired.insert(unit.clone(), old.desired.clone());
                            self.tracked.insert(unit.clone(), old);
                        }
                        None => {
                            self.desired.remove(&unit);
                        }
                    }
                    failed.insert(d.workload.clone());
                }
            }
        }
        // Replacements not launched this tick (rate limit) keep the old instance.
        for (unit, old) in replacing {
            self.desired.insert(unit.clone(), old.desired.clone());
            self.tracked.insert(unit, old);
        }
        failed
    }
}

/// Workload names in file order (arrival order for the simulator's sets).
fn names(w: &WorkloadSet) -> impl Iterator<Item = &str> {
    w.training
        .iter()
        .map(|t| t.name.as_str())
        .chain(w.inference.iter().map(|s| s.name.as_str()))
        .chain(w.batch.iter().map(|b| b.name.as_str()))
}

/// The workloads whose name passes `keep`.
fn filter(w: &WorkloadSet, keep: impl Fn(&str) -> bool) -> WorkloadSet {
    WorkloadSet {
        training: w
            .training
            .iter()
            .filter(|t| keep(&t.name))
            .cloned()
            .collect(),
        inference: w
            .inference
            .iter()
            .filter(|s| keep(&s.name))
            .cloned()
            .collect(),
        batch: w.batch.iter().filter(|b| keep(&b.name)).cloned().collect(),
    }
}
