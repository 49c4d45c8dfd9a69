//! The reconcile loop, level-triggered as Kubernetes controllers are, in the shape of
//! kube-rs's runtime: each tick observes the driver, re-plans when due, then reconciles every
//! unit on its own (`reconcile_unit`), from what is desired and what is owned, never from the
//! event that woke it. Every driver failure goes through one error policy
//! (`Controller::error_policy`), which decides backoff and what the planner must avoid. It
//! never reads a clock or a random source; the simulator and `stratus serve` call the same
//! [`Controller::tick`], one with simulated time, the other with wall time.
//!
//! Safety rules, each checked by the deterministic simulation tests (`stratus bench dst`):
//! - A launch's token is written to the [`Journal`] before the driver sees it, kept until
//!   the driver definitively refuses, and every retry reuses it; tokens are never reused.
//! - A unit never has more instances that may be alive than [`UnitKey::max_live`] allows: a
//!   new one is launched only when the others are seen stopping or gone.
//! - What could not be observed is unknown, not gone: loss detection and adoption skip it,
//!   and launches wait until every part of the driver has been observed once since start.
//! - Stops are retried until the driver confirms them; an instance carrying this
//!   installation's prefix that no unit owns is stopped after [`ControllerConfig::orphan_grace_s`].

use crate::driver::{
    scope_covers, Driver, DriverError, Instance, InstanceState, LaunchRequest, LossCause,
    Observation, PoolCapacity, Time,
};
use crate::strategy::{filter, names, Placer, PlanContext, Strategy};
use crate::unit::{token_seq, token_unit, UnitKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use stratus_model::{Fleet, WorkloadSet};
use stratus_plan::{Category, Placement, Plan, Policy, PreviousPlan};

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
    /// First wait before a driver call without a clear answer is retried; it doubles with
    /// every attempt up to [`ControllerConfig::retry_max_s`].
    pub retry_s: f64,
    /// Longest wait between retries.
    pub retry_max_s: f64,
    /// An instance carrying this installation's token prefix that no unit owns is stopped
    /// once it has been seen for this long (a launch whose record was lost, another
    /// controller's leftovers).
    pub orphan_grace_s: f64,
    /// A unit whose region could not be observed for this long is written off: placed
    /// again elsewhere, while its instance is stopped once the region answers. Only for
    /// drivers whose jobs fence themselves (the Slurm driver's owner file); unset by
    /// default, since a region that does not answer may still run the instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_off_s: Option<f64>,
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
            retry_s: 60.0,
            retry_max_s: 900.0,
            orphan_grace_s: 600.0,
            write_off_s: None,
        }
    }
}

/// What the controller did, for the actions log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Started a unit.
    Launch,
    /// Stopped a unit that is no longer planned (or an instance no unit owns).
    Stop,
    /// Checkpointed and stopped a unit to start it elsewhere.
    Migrate,
    /// Resized a unit in place (inference replicas following demand).
    Scale,
    /// A launch the driver refused, or did not answer clearly (then retried with its token).
    LaunchFailed,
    /// A unit the provider took away (preemption, outage, capacity loss).
    Lost,
    /// Took over an instance found running after a restart.
    Adopt,
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
#[serde(default)]
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
    /// Driver calls that got no clear answer, or a region that said it is down.
    pub unreachable_errors: u64,
    /// Units taken away by the provider.
    pub losses: u64,
    /// Launches sent again with their token after an unclear answer.
    pub launch_retries: u64,
    /// Stops sent again because the last one was not confirmed.
    pub stop_retries: u64,
    /// Parts of the driver's world an observation could not read.
    pub observe_failures: u64,
    /// Instances taken over after a restart.
    pub adopted: u64,
    /// Instances no unit owned, stopped.
    pub orphans_stopped: u64,
    /// Units written off after their region could not be observed for
    /// [`ControllerConfig::write_off_s`].
    pub written_off: u64,
}

/// Durable memory of the controller: what must survive a crash so that no token is reused
/// and no launch is forgotten. `stratus serve` keeps it in its database; the simulator in
/// memory ([`MemoryJournal`]).
pub trait Journal: Send {
    /// A token sequence number above `floor` never handed out before, durably: after a crash
    /// and restart it is never returned again.
    fn next_seq(&mut self, floor: u64) -> Result<u64, String>;
    /// Record, durably, that `req` is about to be sent to the driver. Called before every new
    /// launch; on an error the launch is not sent.
    fn intent(&mut self, req: &LaunchRequest, at: Time) -> Result<(), String>;
    /// Forget, durably, a launch the driver definitively refused, before anything else is
    /// launched for its unit: a restart must not send it again beside its successor. On an
    /// error the launch is kept (and refused again at its next retry).
    fn forget(&mut self, token: &str) -> Result<(), String>;
}

/// A journal that keeps nothing across restarts (the simulator, tests).
#[derive(Debug, Default, Clone)]
pub struct MemoryJournal {
    seq: u64,
}

impl MemoryJournal {
    /// A journal whose tokens continue above `seq` (as a database's reservation would after
    /// a restart).
    pub fn after(seq: u64) -> MemoryJournal {
        MemoryJournal { seq }
    }
}

impl Journal for MemoryJournal {
    fn next_seq(&mut self, floor: u64) -> Result<u64, String> {
        self.seq = self.seq.max(floor) + 1;
        Ok(self.seq)
    }
    fn intent(&mut self, _req: &LaunchRequest, _at: Time) -> Result<(), String> {
        Ok(())
    }
    fn forget(&mut self, _token: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Where an owned instance is in its life, as the controller knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Its token is issued and the launch sent (or about to be); not yet seen by an
    /// observation. It may exist: its token is kept and the launch retried with it until
    /// the instance is seen or the driver definitively refuses.
    Launching,
    /// Seen pending or running.
    Live,
    /// Asked to stop; `confirmed` once the driver accepted the stop or the instance was seen
    /// stopping. Unconfirmed stops are retried.
    Stopping {
        /// The driver accepted, or the instance was seen stopping.
        confirmed: bool,
    },
    /// Its region could not be observed for [`ControllerConfig::write_off_s`]: the unit was
    /// placed again, and this instance is stopped once the region answers.
    WrittenOff,
}

/// An instance the controller owns: what it asked for and where it stands. This is the
/// record a durable harness stores after every reconcile and hands back to
/// [`Controller::restore`] after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owned {
    /// What was asked for (its token is the idempotency key).
    pub request: LaunchRequest,
    /// When the launch was first sent.
    pub launched_at: Time,
    /// Where it stands.
    pub phase: Phase,
    /// Calls of the current phase that got no clear answer.
    #[serde(default)]
    pub attempts: u32,
    /// When the next retry is due.
    #[serde(default)]
    pub next_try: Time,
    /// Seen running (not just pending) by the last observation.
    #[serde(default)]
    pub running: bool,
    /// Facility power the planner counted for it, MW (0 when adopted).
    #[serde(default)]
    pub power_mw: f64,
}

impl Owned {
    /// Whether the instance may be alive for all the controller knows (it counts against
    /// [`UnitKey::max_live`]).
    pub fn may_be_alive(&self) -> bool {
        !matches!(
            self.phase,
            Phase::Stopping { confirmed: true } | Phase::WrittenOff
        )
    }
    fn serving(&self) -> bool {
        matches!(self.phase, Phase::Launching | Phase::Live)
    }
}

/// A unit as planned.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Workload name.
    pub workload: String,
    /// Pool id.
    pub pool: String,
    /// Region id.
    pub region: String,
    /// How the nodes are bought.
    pub category: Category,
    /// Nodes.
    pub nodes: u32,
    /// Of which from the pool's commitment.
    pub committed_nodes: u32,
    /// Inference replicas (1 for jobs).
    pub replicas: u32,
    /// Facility power the planner counted, MW.
    pub power_mw: f64,
}

impl Desired {
    /// Whether `r` launched this placement and size (power is derived, and unknown for
    /// adopted instances).
    pub fn matches(&self, r: &LaunchRequest) -> bool {
        self.workload == r.workload
            && self.pool == r.pool
            && self.category == r.category
            && self.nodes == r.nodes
            && self.committed_nodes == r.committed_nodes
            && self.replicas == r.replicas
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

    fn from_request(r: &LaunchRequest) -> Desired {
        Desired {
            workload: r.workload.clone(),
            pool: r.pool.clone(),
            region: r.region.clone(),
            category: r.category,
            nodes: r.nodes,
            committed_nodes: r.committed_nodes,
            replicas: r.replicas,
            power_mw: 0.0,
        }
    }

    fn from_owned(o: &Owned) -> Desired {
        Desired {
            power_mw: o.power_mw,
            ..Desired::from_request(&o.request)
        }
    }

    fn request(&self, token: String, unit: &UnitKey) -> LaunchRequest {
        LaunchRequest {
            token,
            unit: unit.to_string(),
            workload: self.workload.clone(),
            pool: self.pool.clone(),
            region: self.region.clone(),
            category: self.category,
            nodes: self.nodes,
            committed_nodes: self.committed_nodes,
            replicas: self.replicas,
        }
    }
}

/// One unit: what the plan wants, and every instance owned for it, oldest first.
#[derive(Debug, Clone, Default)]
struct Unit {
    desired: Option<Desired>,
    instances: Vec<Owned>,
    /// When the driver last definitively refused a launch of what is desired (cleared by a
    /// launch it accepts, or a plan that moves the unit).
    refused: Option<Time>,
    /// Reconciles in a row whose launch of what is desired was refused.
    refusals: u32,
}

impl Unit {
    /// The newest instance still meant to serve.
    fn newest(&self) -> Option<&Owned> {
        self.instances.iter().rev().find(|o| o.serving())
    }
    fn alive_count(&self) -> usize {
        self.instances.iter().filter(|o| o.may_be_alive()).count()
    }
    fn is_empty(&self) -> bool {
        self.desired.is_none() && self.instances.is_empty()
    }
}

/// An instance carrying this installation's prefix that no unit owns.
#[derive(Debug, Clone)]
struct Orphan {
    pool: String,
    unit: String,
    first_seen: Time,
    next_try: Time,
    attempts: u32,
}

/// Whether adoption after a start is done.
#[derive(Debug, Clone, PartialEq)]
enum Adoption {
    /// Nothing observed yet.
    NotStarted,
    /// These parts of the driver could not be read yet: what runs there is unknown, so
    /// nothing is launched until they are.
    Pending(BTreeSet<String>),
    /// Every part was observed once.
    Done,
}

/// Deliberate defects, compiled only with the `dst-mutation` feature, that the
/// deterministic simulation tests must catch.
#[cfg(feature = "dst-mutation")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// A launch without a clear answer is retried with a new token (the old one dropped).
    NewTokenOnRetry,
    /// A failed observation is read as "nothing runs there".
    FailedObserveIsEmpty,
}

/// The controller: beliefs about the world, the desired state, and what it owns.
pub struct Controller {
    /// Loop timing.
    pub config: ControllerConfig,
    /// Decision strategy.
    pub strategy: Strategy,
    /// Planner policy.
    pub policy: Policy,
    placer: Box<dyn Placer>,
    fleet: Fleet,
    down: BTreeMap<String, Time>,
    caps: BTreeMap<String, (Time, PoolCapacity)>,
    units: BTreeMap<UnitKey, Unit>,
    incomplete: BTreeSet<String>,
    unplaced: BTreeMap<String, String>,
    known: BTreeSet<String>,
    last_full: Option<Time>,
    /// Capacity was released since unplaced work was last retried.
    freed: bool,
    /// Each service's total demand (req/s) when it was last sized.
    demand_seen: BTreeMap<String, f64>,
    /// Workloads with an instance launching or booting, as of the last observation.
    booting: BTreeSet<String>,
    /// The planner's output of the last global re-optimisation, for plan history and APIs.
    last_plan: Option<Plan>,
    /// The driver's report at the last reconcile.
    observation: Observation,
    /// Since when each part of the driver could not be read.
    unobserved_since: BTreeMap<String, Time>,
    dirty: bool,
    orphans: BTreeMap<String, Orphan>,
    adoption: Adoption,
    last_now: Option<Time>,
    /// The highest token sequence number seen (restored, adopted or issued).
    seq_seen: u64,
    journal: Box<dyn Journal>,
    /// Counters.
    pub stats: ControllerStats,
    /// Starts every token this controller issues, so controllers of different installations
    /// sharing a provider never take (or stop) each other's instances. Empty in the simulator.
    pub token_prefix: String,
    /// A deliberate defect for the simulation tests to catch.
    #[cfg(feature = "dst-mutation")]
    pub mutation: Option<Mutation>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("strategy", &self.strategy)
            .field("units", &self.units.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The planner's view for one strategy: see [`PlanContext`].
struct Cx<'a> {
    c: &'a Controller,
    previous: &'a PreviousPlan,
    policy: &'a Policy,
}

impl PlanContext for Cx<'_> {
    fn plan(&mut self, only: Option<&str>, w: &WorkloadSet, holding: &[Placement]) -> Plan {
        let view = self.c.view(only, holding);
        stratus_plan::plan(&view, w, self.policy, Some(self.previous))
    }
    fn providers(&self) -> Vec<String> {
        self.c
            .fleet
            .providers
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }
}

/// What the unit passes do in a reconcile.
#[derive(Default)]
struct Pass {
    launched: usize,
    /// Workloads whose launch the driver definitively refused: planned again.
    failed: BTreeSet<String>,
}

impl Controller {
    /// A controller for `fleet` (its belief of the world: prices, carbon, capacity), with a
    /// journal that keeps nothing across restarts.
    pub fn new(fleet: Fleet, strategy: Strategy, config: ControllerConfig) -> Controller {
        let placer = strategy.placer();
        Controller {
            config,
            policy: placer.policy(),
            placer,
            strategy,
            fleet,
            down: BTreeMap::new(),
            caps: BTreeMap::new(),
            units: BTreeMap::new(),
            incomplete: BTreeSet::new(),
            unplaced: BTreeMap::new(),
            known: BTreeSet::new(),
            last_full: None,
            freed: false,
            demand_seen: BTreeMap::new(),
            booting: BTreeSet::new(),
            last_plan: None,
            observation: Observation::default(),
            unobserved_since: BTreeMap::new(),
            dirty: true,
            orphans: BTreeMap::new(),
            adoption: Adoption::NotStarted,
            last_now: None,
            seq_seen: 0,
            journal: Box::new(MemoryJournal::default()),
            stats: ControllerStats::default(),
            token_prefix: String::new(),
            #[cfg(feature = "dst-mutation")]
            mutation: None,
        }
    }

    /// Keep the token sequence and launch intents in `journal` (a database, in production).
    pub fn set_journal(&mut self, journal: Box<dyn Journal>) {
        self.journal = journal;
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
    pub fn observed(&self) -> &[Instance] {
        &self.observation.instances
    }

    /// The whole last observation, with the parts that could not be read.
    pub fn observation(&self) -> &Observation {
        &self.observation
    }

    /// Every instance the controller owns, by unit: what a durable harness stores after each
    /// reconcile.
    pub fn owned(&self) -> impl Iterator<Item = &Owned> {
        self.units.values().flat_map(|u| u.instances.iter())
    }

    /// Whether every part of the driver has been observed since start (until then nothing
    /// is launched), and the parts still waited for.
    pub fn adoption_pending(&self) -> Vec<String> {
        match &self.adoption {
            Adoption::NotStarted => vec!["(not observed yet)".into()],
            Adoption::Pending(s) => s.iter().cloned().collect(),
            Adoption::Done => Vec::new(),
        }
    }

    /// Tokens of instances carrying this installation's prefix that no unit owns, with
    /// when each was first seen.
    pub fn orphans(&self) -> impl Iterator<Item = (&str, Time)> {
        self.orphans.iter().map(|(t, o)| (t.as_str(), o.first_seen))
    }

    /// Take back what a durable harness stored before a restart (see
    /// [`Controller::owned`]), before the first tick. Instances come back to their units and
    /// keep their place until the planner says otherwise; tokens continue above every one
    /// seen. Records whose unit key does not parse are returned.
    pub fn restore(&mut self, owned: Vec<Owned>) -> Vec<(Owned, String)> {
        let mut bad = Vec::new();
        for o in owned {
            let key = match UnitKey::parse(&o.request.unit) {
                Ok(k) => k,
                Err(e) => {
                    bad.push((o, e));
                    continue;
                }
            };
            if let Some(n) = token_seq(&o.request.token) {
                self.seq_seen = self.seq_seen.max(n);
            }
            let unit = self.units.entry(key).or_default();
            if o.serving() && unit.desired.is_none() {
                unit.desired = Some(Desired::from_owned(&o));
            }
            unit.instances.push(o);
        }
        for u in self.units.values_mut() {
            u.instances
                .sort_by(|a, b| a.launched_at.0.total_cmp(&b.launched_at.0));
        }
        bad
    }

    /// Take over what a driver already runs, as after a restart without stored state: live
    /// instances with this installation's prefix become owned units, so the next reconcile
    /// keeps them instead of launching again. (The first observations of [`Controller::tick`]
    /// do this by themselves, part by part as each can be read.)
    pub fn adopt(&mut self, instances: Vec<Instance>) {
        for i in &instances {
            self.adopt_one(i, Time(0.0), &mut Vec::new());
        }
    }

    /// The planner's output at the last global re-optimisation (global strategies).
    pub fn last_plan(&self) -> Option<&Plan> {
        self.last_plan.as_ref()
    }

    /// Workloads with at least one unit the last plan could not place, or whose launch was
    /// refused, each with why.
    pub fn unplaced(&self) -> &BTreeMap<String, String> {
        &self.unplaced
    }

    /// Workloads with at least one unit the last plan could not place.
    pub fn unplaced_workloads(&self) -> BTreeSet<String> {
        self.unplaced.keys().cloned().collect()
    }

    /// Workloads with at least one unit in the plan.
    pub fn placed_workloads(&self) -> BTreeSet<String> {
        self.units
            .values()
            .filter_map(|u| u.desired.as_ref().map(|d| d.workload.clone()))
            .collect()
    }

    /// Every unit: what the plan wants of it, and the instances it owns, oldest first.
    pub fn units(&self) -> impl Iterator<Item = (&UnitKey, Option<&Desired>, &[Owned])> {
        self.units
            .iter()
            .map(|(k, u)| (k, u.desired.as_ref(), u.instances.as_slice()))
    }

    /// The earliest time a retry is due, for a harness that sleeps until then.
    pub fn next_wake(&self) -> Option<Time> {
        self.units
            .values()
            .flat_map(|u| u.instances.iter())
            .filter(|o| {
                matches!(
                    o.phase,
                    Phase::Launching | Phase::Stopping { confirmed: false } | Phase::WrittenOff
                )
            })
            .map(|o| o.next_try)
            .chain(self.orphans.values().map(|o| o.next_try))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// One reconcile at `now` for the active `workloads`: observe, re-plan if due, act.
    /// Time never goes back for the controller: an earlier `now` is read as the last one.
    pub fn tick(
        &mut self,
        now: Time,
        workloads: &WorkloadSet,
        driver: &mut dyn Driver,
    ) -> Vec<Action> {
        let now = match self.last_now {
            Some(l) if now.0 < l.0 => l,
            _ => now,
        };
        self.last_now = Some(now);
        let mut log = Vec::new();
        self.observe(now, driver, &mut log);
        self.down.retain(|_, t| t.0 > now.0);
        self.caps.retain(|_, c| c.0 .0 > now.0);
        self.track_workloads(workloads);
        let global = self.placer.global();
        let due = self
            .last_full
            .is_none_or(|t| now.0 - t.0 >= self.config.replan_s - 1e-6);
        if global && (self.dirty || due) {
            let all: BTreeSet<String> = names(workloads).map(String::from).collect();
            self.plan_workloads(&all, workloads, true);
            self.stats.replans += 1;
            self.last_full = Some(now);
            self.dirty = false;
        } else {
            // Work that did not fit is retried when capacity was released, and on the
            // re-plan period otherwise: not on every tick, where nothing would have changed.
            let mut todo = self.incomplete.clone();
            if self.freed || due {
                todo.extend(self.unplaced.keys().cloned());
                self.freed = false;
                if !global {
                    self.last_full = Some(now);
                }
            }
            if !todo.is_empty() {
                self.plan_workloads(&todo, workloads, false);
                self.stats.incremental_plans += 1;
            }
        }
        // Stops, retried stops and moves first, so launches find the capacity they free.
        let settling = self.settling();
        let keys: Vec<UnitKey> = self.units.keys().cloned().collect();
        for key in &keys {
            self.reconcile_unit(key, now, driver, &mut log, &settling, None);
        }
        for round in 0..3 {
            let mut pass = Pass::default();
            let keys: Vec<UnitKey> = self.units.keys().cloned().collect();
            for key in &keys {
                self.reconcile_unit(key, now, driver, &mut log, &settling, Some(&mut pass));
            }
            if pass.failed.is_empty() {
                break;
            }
            if round == 2 {
                // Tried again at the next reconcile; listed until then.
                for w in pass.failed {
                    self.incomplete.insert(w);
                }
                break;
            }
            self.plan_workloads(&pass.failed, workloads, false);
            self.stats.incremental_plans += 1;
        }
        self.sweep_orphans(now, driver, &mut log);
        self.units.retain(|_, u| !u.is_empty());
        log
    }

    /// Finished or withdrawn workloads are forgotten (their units then stop); new ones and
    /// services whose demand moved by more than a tenth are planned.
    fn track_workloads(&mut self, workloads: &WorkloadSet) {
        let active: BTreeSet<&str> = names(workloads).collect();
        let mut dropped = false;
        for u in self.units.values_mut() {
            if u.desired
                .as_ref()
                .is_some_and(|d| !active.contains(d.workload.as_str()))
            {
                u.desired = None;
                dropped = true;
            }
        }
        self.freed |= dropped;
        self.incomplete.retain(|w| active.contains(w.as_str()));
        self.unplaced.retain(|w, _| active.contains(w.as_str()));
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
    }

    /// Services whose replicas that leave the plan keep serving: those with replicas
    /// launching, booting, or about to launch, so a re-plan never leaves one without any. A
    /// unit whose launch was refused is not about to launch: the replicas it would replace
    /// stop, and free what it needs.
    fn settling(&self) -> BTreeSet<String> {
        let mut s = self.booting.clone();
        for u in self.units.values() {
            if let Some(d) = &u.desired {
                if u.refused.is_none() && !u.newest().is_some_and(|o| d.matches(&o.request)) {
                    s.insert(d.workload.clone());
                }
            }
        }
        s
    }

    fn backoff(&self, attempts: u32) -> f64 {
        let k = attempts.saturating_sub(1).min(20);
        (self.config.retry_s * f64::from(1u32 << k)).min(self.config.retry_max_s)
    }

    /// How long `pool` has been out of sight (0 when it was observed).
    fn unobserved_for(&self, pool: &str, now: Time) -> Option<f64> {
        self.unobserved_since
            .iter()
            .filter(|(s, _)| scope_covers(s, pool))
            .map(|(_, t)| now.0 - t.0)
            .max_by(|a, b| a.total_cmp(b))
    }

    /// Read the driver. Instances seen update their owners; owned instances missing from a
    /// part that was read are gone (lost, unless being stopped); parts that could not be
    /// read change nothing. Unknown instances with this installation's prefix are adopted
    /// the first time their part is read after a start, and are orphans after that.
    fn observe(&mut self, now: Time, driver: &mut dyn Driver, log: &mut Vec<Action>) {
        #[allow(unused_mut)]
        let mut obs = driver.observe(now);
        #[cfg(feature = "dst-mutation")]
        if self.mutation == Some(Mutation::FailedObserveIsEmpty) {
            obs.unobserved.clear();
        }
        self.stats.observe_failures += obs.unobserved.len() as u64;
        // Since when each part has been out of sight.
        let failing: BTreeSet<String> = obs.unobserved.iter().map(|u| u.scope.clone()).collect();
        self.unobserved_since.retain(|s, _| failing.contains(s));
        for s in &failing {
            self.unobserved_since.entry(s.clone()).or_insert(now);
        }
        // Adoption: parts read for the first time since start.
        let (first, waiting): (bool, BTreeSet<String>) = match &self.adoption {
            Adoption::NotStarted => (true, BTreeSet::new()),
            Adoption::Pending(s) => (false, s.clone()),
            Adoption::Done => (false, BTreeSet::new()),
        };
        let seen: HashMap<&str, &Instance> = obs
            .instances
            .iter()
            .map(|i| (i.request.token.as_str(), i))
            .collect();
        let write_off = self.config.write_off_s;
        let mut lost: Vec<(UnitKey, Owned, String)> = Vec::new();
        let mut booting = BTreeSet::new();
        let mut owned_tokens: BTreeSet<String> = BTreeSet::new();
        let mut written_off: Vec<(UnitKey, Owned)> = Vec::new();
        let unobserved_for: HashMap<String, f64> = self
            .units
            .values()
            .flat_map(|u| u.instances.iter())
            .filter_map(|o| {
                self.unobserved_for(&o.request.pool, now)
                    .map(|d| (o.request.token.clone(), d))
            })
            .collect();
        for (key, unit) in self.units.iter_mut() {
            let mut keep = Vec::with_capacity(unit.instances.len());
            for mut o in std::mem::take(&mut unit.instances) {
                owned_tokens.insert(o.request.token.clone());
                if obs.unobserved(&o.request.pool) {
                    // Unknown: keep it as it is, unless it has been out of sight past the
                    // write-off time (fenced drivers only).
                    let gone_for = unobserved_for.get(&o.request.token).copied().unwrap_or(0.0);
                    if o.serving() && write_off.is_some_and(|w| gone_for >= w) {
                        o.phase = Phase::WrittenOff;
                        o.next_try = now;
                        written_off.push((key.clone(), o.clone()));
                    }
                    if matches!(o.phase, Phase::Launching)
                        || matches!(o.phase, Phase::Live) && !o.running
                    {
                        booting.insert(o.request.workload.clone());
                    }
                    keep.push(o);
                    continue;
                }
                match seen.get(o.request.token.as_str()).map(|i| i.state) {
                    Some(InstanceState::Pending { .. }) | Some(InstanceState::Running) => {
                        let running =
                            seen[o.request.token.as_str()].state == InstanceState::Running;
                        match o.phase {
                            Phase::Launching => {
                                o.phase = Phase::Live;
                                o.attempts = 0;
                            }
                            // A confirmed stop that still runs: the driver did not do it.
                            Phase::Stopping { confirmed: true } => {
                                o.phase = Phase::Stopping { confirmed: false };
                            }
                            _ => {}
                        }
                        o.running = running;
                        if o.serving() && !running {
                            booting.insert(o.request.workload.clone());
                        }
                        keep.push(o);
                    }
                    Some(InstanceState::Stopping { .. }) => {
                        o.running = false;
                        if o.serving() {
                            // Stopping without being asked now: a stop sent before a
                            // restart. The unit is placed again.
                            lost.push((
                                key.clone(),
                                o.clone(),
                                "stopping without a stop from this controller".into(),
                            ));
                        }
                        o.phase = Phase::Stopping { confirmed: true };
                        keep.push(o);
                    }
                    Some(InstanceState::Lost(c)) => {
                        if o.serving() {
                            let cause = match c {
                                LossCause::Preempted => "spot preemption",
                                LossCause::Outage => "outage",
                                LossCause::CapacityLoss => "capacity loss",
                            };
                            lost.push((key.clone(), o, cause.into()));
                        }
                    }
                    None => match o.phase {
                        // Not seen yet: resolved by sending the launch again.
                        Phase::Launching => {
                            booting.insert(o.request.workload.clone());
                            keep.push(o)
                        }
                        Phase::Live => lost.push((key.clone(), o, "instance disappeared".into())),
                        Phase::Stopping { .. } | Phase::WrittenOff => {}
                    },
                }
            }
            unit.instances = keep;
        }
        for (key, o) in written_off {
            self.stats.written_off += 1;
            self.down
                .insert(o.request.region.clone(), now.plus(self.config.probe_s));
            self.lose(
                &key,
                &o,
                now,
                log,
                "its region could not be observed: written off",
            );
        }
        for (key, o, cause) in lost {
            if matches!(
                seen.get(o.request.token.as_str()).map(|i| i.state),
                Some(InstanceState::Lost(LossCause::Outage))
            ) {
                self.down
                    .insert(o.request.region.clone(), now.plus(self.config.probe_s));
            }
            self.lose(&key, &o, now, log, &cause);
        }
        // Instances nobody owns: adopted where their part is read for the first time since
        // start, orphans otherwise.
        let adoptable = |pool: &str| {
            !obs.unobserved(pool) && (first || waiting.iter().any(|s| scope_covers(s, pool)))
        };
        let mut to_adopt = Vec::new();
        let mut live_orphans = BTreeSet::new();
        for i in &obs.instances {
            let t = &i.request.token;
            if owned_tokens.contains(t) || !t.starts_with(&self.token_prefix) {
                continue;
            }
            if !matches!(
                i.state,
                InstanceState::Pending { .. } | InstanceState::Running
            ) {
                continue;
            }
            if adoptable(&i.request.pool) {
                to_adopt.push(i.clone());
            } else {
                live_orphans.insert(t.clone());
            }
        }
        for i in to_adopt {
            if !self.adopt_one(&i, now, log) {
                live_orphans.insert(i.request.token.clone());
            }
        }
        let grace = self.config.orphan_grace_s;
        for t in &live_orphans {
            let i = seen[t.as_str()];
            self.orphans.entry(t.clone()).or_insert_with(|| Orphan {
                pool: i.request.pool.clone(),
                unit: i.request.unit.clone(),
                first_seen: now,
                next_try: now.plus(grace),
                attempts: 0,
            });
        }
        self.orphans
            .retain(|t, o| live_orphans.contains(t) || obs.unobserved(&o.pool));
        // Adoption is done when every part was read once.
        self.adoption = if first || !waiting.is_empty() {
            let still: BTreeSet<String> = if first {
                failing.clone()
            } else {
                waiting
                    .into_iter()
                    .filter(|s| {
                        failing
                            .iter()
                            .any(|f| scope_covers(f, s) || scope_covers(s, f))
                    })
                    .collect()
            };
            // A fenced driver's part out of sight past the write-off time is given up on.
            let still: BTreeSet<String> = still
                .into_iter()
                .filter(|s| {
                    !write_off.is_some_and(|w| {
                        self.unobserved_since
                            .get(s)
                            .is_some_and(|t| now.0 - t.0 >= w)
                    })
                })
                .collect();
            if still.is_empty() {
                Adoption::Done
            } else {
                Adoption::Pending(still)
            }
        } else {
            Adoption::Done
        };
        self.booting = booting;
        self.observation = obs;
    }

    /// A unit lost its serving instance: it is placed again.
    fn lose(&mut self, key: &UnitKey, o: &Owned, now: Time, log: &mut Vec<Action>, cause: &str) {
        self.incomplete.insert(o.request.workload.clone());
        if let Some(u) = self.units.get_mut(key) {
            // Whatever replaces it is planned afresh.
            if u.newest().is_none() {
                u.desired = None;
            }
        }
        self.stats.losses += 1;
        self.freed = true;
        self.dirty |= self.placer.global();
        log.push(Action {
            at: now,
            kind: ActionKind::Lost,
            unit: key.to_string(),
            pool: o.request.pool.clone(),
            token: o.request.token.clone(),
            reason: cause.to_string(),
        });
    }

    /// Take over `i` for its unit when the unit has room for it; whether it was taken.
    fn adopt_one(&mut self, i: &Instance, now: Time, log: &mut Vec<Action>) -> bool {
        if !matches!(
            i.state,
            InstanceState::Pending { .. } | InstanceState::Running
        ) || !i.request.token.starts_with(&self.token_prefix)
        {
            return false;
        }
        let key = match token_unit(&i.request.token, &self.token_prefix)
            .map(UnitKey::parse)
            .unwrap_or_else(|| UnitKey::parse(&i.request.unit))
        {
            Ok(k) => k,
            Err(_) => return false,
        };
        if let Some(n) = token_seq(&i.request.token) {
            self.seq_seen = self.seq_seen.max(n);
        }
        let unit = self.units.entry(key.clone()).or_default();
        if unit.alive_count() > 0 {
            return false;
        }
        if unit.desired.is_none() {
            unit.desired = Some(Desired::from_request(&i.request));
        }
        unit.instances.push(Owned {
            request: i.request.clone(),
            launched_at: i.launched_at,
            phase: Phase::Live,
            attempts: 0,
            next_try: now,
            running: i.state == InstanceState::Running,
            power_mw: 0.0,
        });
        self.stats.adopted += 1;
        log.push(Action {
            at: now,
            kind: ActionKind::Adopt,
            unit: key.to_string(),
            pool: i.request.pool.clone(),
            token: i.request.token.clone(),
            reason: "found running after a start".into(),
        });
        true
    }

    /// Plan `todo` (workload names); everything else planned keeps its capacity.
    fn plan_workloads(&mut self, todo: &BTreeSet<String>, workloads: &WorkloadSet, full: bool) {
        let mut subset = filter(workloads, |n| todo.contains(n));
        if subset.is_empty() && !full {
            return;
        }
        if self.placer.one_provider_per_workload() {
            // One provider per workload by construction: a service's cross-provider redundancy
            // cannot hold, so it is kept across regions only (what a one-cloud lab runs).
            for s in &mut subset.inference {
                s.min_providers = 1;
            }
        }
        // Where each unit was meant to be, to tell a move from the same plan again.
        let mut before: HashMap<UnitKey, (String, Category)> = HashMap::new();
        for (k, u) in self.units.iter_mut() {
            if u.desired
                .as_ref()
                .is_some_and(|d| todo.contains(&d.workload))
            {
                let d = u.desired.take().expect("checked");
                before.insert(k.clone(), (d.pool, d.category));
            }
        }
        let previous = PreviousPlan {
            placements: self
                .units
                .iter()
                .filter_map(|(k, u)| {
                    u.newest()
                        .map(|o| (k.to_string(), (o.request.pool.clone(), o.request.category)))
                })
                .collect(),
        };
        let policy = self.policy.clone();
        let mut placer = std::mem::replace(&mut self.placer, Strategy::Stratus.placer());
        let placed = {
            let mut cx = Cx {
                c: self,
                previous: &previous,
                policy: &policy,
            };
            placer.place(&subset, &mut cx)
        };
        self.placer = placer;
        if full {
            self.last_plan = placed.plan;
        }
        self.stats.degraded += placed.degraded;
        let mut unplaced = placed.unplaced;
        let global = self.placer.global();
        for p in &placed.placements {
            let key = match UnitKey::parse(&p.unit) {
                Ok(k) => k,
                Err(e) => {
                    unplaced.insert(p.workload.clone(), format!("the planner's unit: {e}"));
                    continue;
                }
            };
            let mut d = Desired::from_placement(p);
            if before.get(&key) != Some(&(d.pool.clone(), d.category)) {
                if let Some(u) = self.units.get_mut(&key) {
                    u.refused = None;
                    u.refusals = 0;
                }
            }
            let unit = self.units.entry(key).or_default();
            if !global {
                // Baselines never move running work for cost: a unit that runs keeps its pool
                // (it may still be resized there).
                if let Some(o) = unit.newest() {
                    if o.request.pool != d.pool || o.request.category != d.category {
                        d = Desired::from_owned(o);
                    }
                }
            }
            unit.desired = Some(d);
        }
        for w in todo {
            self.incomplete.remove(w);
            match unplaced.remove(w) {
                Some(why) => {
                    self.unplaced.insert(w.clone(), why);
                }
                None => {
                    self.unplaced.remove(w);
                }
            }
        }
    }

    /// The fleet as plans should see it: believed-down regions and capacity errors applied,
    /// and the capacity and power of units kept in place (and of `holding`) taken out.
    fn view(&self, only: Option<&str>, holding: &[Placement]) -> Fleet {
        let mut f = self.fleet.clone();
        let mut used: HashMap<&str, PoolCapacity> = HashMap::new();
        let mut power: HashMap<&str, f64> = HashMap::new();
        let kept = self
            .units
            .values()
            .filter_map(|u| u.desired.as_ref())
            .map(|d| {
                (
                    &d.pool,
                    &d.region,
                    d.category,
                    d.nodes,
                    d.committed_nodes,
                    d.power_mw,
                )
            });
        let held = holding.iter().map(|p| {
            (
                &p.pool,
                &p.region,
                p.category,
                p.nodes,
                p.committed_nodes,
                p.power_mw,
            )
        });
        for (pool, region, category, nodes, committed, mw) in kept.chain(held) {
            let e = used.entry(pool.as_str()).or_default();
            *e = e.plus(PoolCapacity::split(category, nodes, committed));
            *power.entry(region.as_str()).or_default() += mw;
        }
        // Instances on their way out (replaced, stopping, written off) still hold their nodes,
        // a confirmed stop too until the driver stops reporting it: planning into nodes a slow
        // stop still holds fails the launch, and two units can then swap a pool at every
        // re-plan and never settle.
        for u in self.units.values() {
            let newest = u.instances.iter().rposition(|o| o.serving());
            for (i, o) in u.instances.iter().enumerate() {
                if Some(i) == newest {
                    continue;
                }
                let e = used.entry(o.request.pool.as_str()).or_default();
                *e = e.plus(PoolCapacity::of(&o.request));
            }
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
                    let mut free = PoolCapacity::of_pool(pool);
                    if down {
                        free = PoolCapacity::default();
                    }
                    if let Some((_, cap)) = self.caps.get(&pool.id) {
                        free = free.min(*cap);
                    }
                    if let Some(u) = used.get(pool.id.as_str()) {
                        free = free.minus(*u);
                    }
                    if let Some(c) = pool.committed.as_mut() {
                        c.nodes = free.committed;
                    }
                    pool.nodes = free.committed.saturating_add(free.on_demand);
                    pool.spot_nodes = free.spot;
                }
            }
        }
        f
    }

    /// The one error policy for driver calls about `req`: remember what the planner must
    /// avoid, count, and say when to try again (`None`: drop the call, it changed nothing).
    fn error_policy(&mut self, req: &LaunchRequest, e: &DriverError, now: Time) {
        match e {
            DriverError::Capacity { free, .. } => {
                self.stats.capacity_errors += 1;
                // Capacity available to us = free now + what we already hold there.
                let held = self
                    .units
                    .values()
                    .flat_map(|u| u.instances.iter())
                    .filter(|o| o.request.pool == req.pool && o.may_be_alive())
                    .fold(PoolCapacity::default(), |a, o| {
                        a.plus(PoolCapacity::of(&o.request))
                    });
                self.caps.insert(
                    req.pool.clone(),
                    (now.plus(self.config.capacity_memory_s), free.plus(held)),
                );
            }
            DriverError::Down { region, .. } | DriverError::Unreachable { region, .. } => {
                self.stats.unreachable_errors += 1;
                let region = if region.is_empty() {
                    &req.region
                } else {
                    region
                };
                self.down
                    .insert(region.clone(), now.plus(self.config.probe_s));
            }
            DriverError::Refused { .. } | DriverError::UnknownPool(_) => {
                self.caps.insert(
                    req.pool.clone(),
                    (
                        now.plus(self.config.capacity_memory_s),
                        PoolCapacity::default(),
                    ),
                );
            }
            DriverError::UnknownToken(_) => {}
        }
    }

    /// Reconcile one unit from what is desired and what it owns. Without `pass`: stops,
    /// retried stops and the stops that moves and resizes begin with; with it: retried and
    /// new launches.
    fn reconcile_unit(
        &mut self,
        key: &UnitKey,
        now: Time,
        driver: &mut dyn Driver,
        log: &mut Vec<Action>,
        settling: &BTreeSet<String>,
        pass: Option<&mut Pass>,
    ) {
        match pass {
            None => self.unit_stops(key, now, driver, log, settling),
            Some(p) => self.unit_launches(key, now, driver, log, p),
        }
    }

    fn unit_stops(
        &mut self,
        key: &UnitKey,
        now: Time,
        driver: &mut dyn Driver,
        log: &mut Vec<Action>,
        settling: &BTreeSet<String>,
    ) {
        let global = self.placer.global();
        let dwell = self.config.min_dwell_s;
        let Some(unit) = self.units.get_mut(key) else {
            return;
        };
        // Hysteresis: a recent placement is kept rather than moved for cost.
        if let (Some(d), Some(o)) = (&unit.desired, unit.newest()) {
            let moved = o.request.pool != d.pool || o.request.category != d.category;
            if moved && global && o.phase == Phase::Live && now.0 - o.launched_at.0 < dwell {
                unit.desired = Some(Desired::from_owned(o));
            }
        }
        let mut to_stop: Vec<(usize, Option<(ActionKind, String)>)> = Vec::new();
        match &unit.desired {
            None => {
                let keep = key.is_replicas() && settling.contains(key.workload());
                if !keep {
                    for (i, o) in unit.instances.iter().enumerate() {
                        if o.phase == Phase::Live {
                            to_stop.push((
                                i,
                                Some((ActionKind::Stop, "no longer in the plan".to_string())),
                            ));
                        }
                    }
                }
            }
            Some(d) => {
                let newest = unit.instances.iter().rposition(|o| o.serving());
                match newest {
                    Some(n) if d.matches(&unit.instances[n].request) => {
                        // Make before break: once the newest runs, the ones it replaces stop.
                        // A job's gang has no second copy to wait for.
                        let ready = unit.instances[n].phase == Phase::Live
                            && (unit.instances[n].running || !key.is_replicas());
                        if ready {
                            let tok = unit.instances[n].request.token.clone();
                            for (i, o) in unit.instances.iter().enumerate() {
                                if i != n && o.phase == Phase::Live {
                                    to_stop.push((
                                        i,
                                        Some((ActionKind::Stop, format!("replaced by {tok}"))),
                                    ));
                                }
                            }
                        }
                    }
                    Some(n) => {
                        let o = &unit.instances[n];
                        let (kind, why) =
                            if o.request.pool == d.pool && o.request.category == d.category {
                                (
                                    ActionKind::Scale,
                                    format!("{} → {} nodes", o.request.nodes, d.nodes),
                                )
                            } else {
                                (
                                    ActionKind::Migrate,
                                    format!("re-planned to {} ({:?})", d.pool, d.category),
                                )
                            };
                        if !key.is_replicas() {
                            // A gang checkpoints and stops, then starts anew.
                            if o.phase == Phase::Live {
                                to_stop.push((n, Some((kind, why))));
                            }
                        } else if o.phase == Phase::Live
                            && (unit.refusals >= 2
                                || unit.refusals >= 1
                                    && o.request.pool == d.pool
                                    && o.request.category == d.category)
                        {
                            // No room for the replacement while the old replicas run (a
                            // resize in a full pool, or two units swapping places): break
                            // before make.
                            to_stop.push((
                                n,
                                Some((kind, format!("{why}; no room for it while these run"))),
                            ));
                        } else {
                            // Replicas keep serving until their replacement runs; an older
                            // one makes room when the unit is at its limit and the newest
                            // serves.
                            let serves = o.phase == Phase::Live && o.running;
                            if serves && unit.alive_count() >= key.max_live() {
                                if let Some(i) = unit
                                    .instances
                                    .iter()
                                    .position(|x| x.phase == Phase::Live)
                                    .filter(|&i| i != n)
                                {
                                    to_stop.push((i, Some((kind, why))));
                                }
                            }
                        }
                    }
                    None => {}
                }
            }
        }
        for (i, why) in to_stop {
            let unit = self.units.get_mut(key).expect("exists");
            let o = &mut unit.instances[i];
            o.phase = Phase::Stopping { confirmed: false };
            o.attempts = 0;
            o.next_try = now;
            let (token, pool) = (o.request.token.clone(), o.request.pool.clone());
            if let Some((kind, reason)) = why {
                match kind {
                    ActionKind::Migrate => self.stats.migrations += 1,
                    ActionKind::Scale => self.stats.scales += 1,
                    _ => self.stats.stops += 1,
                }
                log.push(Action {
                    at: now,
                    kind,
                    unit: key.to_string(),
                    pool,
                    token,
                    reason,
                });
            }
        }
        // Every stop not yet confirmed is sent (again) when due.
        let due: Vec<usize> = self.units[key]
            .instances
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                matches!(
                    o.phase,
                    Phase::Stopping { confirmed: false } | Phase::WrittenOff
                ) && o.next_try.0 <= now.0 + 1e-9
                    && !self.observation.unobserved(&o.request.pool)
            })
            .map(|(i, _)| i)
            .collect();
        let mut gone = Vec::new();
        for i in due {
            let token = self.units[key].instances[i].request.token.clone();
            let attempts = self.units[key].instances[i].attempts;
            if attempts > 0 {
                self.stats.stop_retries += 1;
            }
            let r = driver.stop(now, &token);
            let req = self.units[key].instances[i].request.clone();
            match r {
                Ok(()) => {
                    let o = &mut self.units.get_mut(key).expect("exists").instances[i];
                    o.phase = Phase::Stopping { confirmed: true };
                    o.attempts = 0;
                    self.freed = true;
                }
                // The driver has no such instance: it is gone.
                Err(DriverError::UnknownToken(_)) => {
                    gone.push(i);
                    self.freed = true;
                }
                Err(e) => {
                    self.error_policy(&req, &e, now);
                    let wait = self.backoff(attempts + 1);
                    let o = &mut self.units.get_mut(key).expect("exists").instances[i];
                    o.attempts = attempts + 1;
                    o.next_try = now.plus(wait);
                }
            }
        }
        let unit = self.units.get_mut(key).expect("exists");
        for i in gone.into_iter().rev() {
            unit.instances.remove(i);
        }
    }

    fn unit_launches(
        &mut self,
        key: &UnitKey,
        now: Time,
        driver: &mut dyn Driver,
        log: &mut Vec<Action>,
        pass: &mut Pass,
    ) {
        // Launches without a clear answer are sent again with their token when due.
        let retry: Vec<usize> = match self.units.get(key) {
            None => return,
            Some(u) => u
                .instances
                .iter()
                .enumerate()
                .filter(|(_, o)| o.phase == Phase::Launching && o.next_try.0 <= now.0 + 1e-9)
                .map(|(i, _)| i)
                .collect(),
        };
        let mut refused = Vec::new();
        for i in retry {
            let req = self.units[key].instances[i].request.clone();
            let attempts = self.units[key].instances[i].attempts;
            self.stats.launch_retries += 1;
            match driver.launch(now, &req) {
                Ok(()) => {
                    let wait = self.backoff(1);
                    let o = &mut self.units.get_mut(key).expect("exists").instances[i];
                    o.attempts = 0;
                    // Seen by the next observation; sent again only if not by then.
                    o.next_try = now.plus(wait);
                    log.push(Action {
                        at: now,
                        kind: ActionKind::Launch,
                        unit: key.to_string(),
                        pool: req.pool.clone(),
                        token: req.token.clone(),
                        reason: format!("accepted when sent again (attempt {})", attempts + 1),
                    });
                }
                Err(e) if e.definitive() => {
                    self.error_policy(&req, &e, now);
                    if self.journal.forget(&req.token).is_err() {
                        let wait = self.backoff(attempts + 1);
                        let o = &mut self.units.get_mut(key).expect("exists").instances[i];
                        o.attempts = attempts + 1;
                        o.next_try = now.plus(wait);
                        continue;
                    }
                    refused.push(i);
                    let wanted = self.units[key]
                        .desired
                        .as_ref()
                        .is_some_and(|d| d.matches(&req));
                    if wanted {
                        let u = self.units.get_mut(key).expect("exists");
                        if u.refused.is_none_or(|t| t.0 < now.0) {
                            u.refusals += 1;
                        }
                        u.refused = Some(now);
                        pass.failed.insert(req.workload.clone());
                        self.unplaced
                            .insert(req.workload.clone(), format!("launch refused: {e}"));
                    }
                    log.push(Action {
                        at: now,
                        kind: ActionKind::LaunchFailed,
                        unit: key.to_string(),
                        pool: req.pool.clone(),
                        token: req.token.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    self.error_policy(&req, &e, now);
                    let wait = self.backoff(attempts + 1);
                    let o = &mut self.units.get_mut(key).expect("exists").instances[i];
                    o.attempts = attempts + 1;
                    o.next_try = now.plus(wait);
                }
            }
        }
        {
            let unit = self.units.get_mut(key).expect("exists");
            for i in refused.into_iter().rev() {
                unit.instances.remove(i);
            }
        }
        // A new instance when the unit needs one and may have one more.
        let unit = &self.units[key];
        let Some(d) = unit.desired.clone() else {
            return;
        };
        if unit.newest().is_some_and(|o| d.matches(&o.request)) {
            return;
        }
        // Refused this reconcile already: tried again at the next, or where a new plan puts it.
        if unit.refused.is_some_and(|t| t.0 >= now.0) {
            return;
        }
        if unit.alive_count() >= key.max_live()
            || !matches!(self.adoption, Adoption::Done)
            || pass.launched >= self.config.max_launches_per_tick
        {
            return;
        }
        let seq = match self.journal.next_seq(self.seq_seen) {
            Ok(s) => s,
            Err(e) => {
                self.unplaced
                    .insert(d.workload.clone(), format!("journal unavailable: {e}"));
                return;
            }
        };
        self.seq_seen = self.seq_seen.max(seq);
        let token = format!("{}{key}~{seq}", self.token_prefix);
        let req = d.request(token.clone(), key);
        if let Err(e) = self.journal.intent(&req, now) {
            self.unplaced
                .insert(d.workload.clone(), format!("journal unavailable: {e}"));
            return;
        }
        pass.launched += 1;
        let replacing = unit.newest().map(|o| o.request.clone());
        let retry_s = self.backoff(1);
        self.units
            .get_mut(key)
            .expect("exists")
            .instances
            .push(Owned {
                request: req.clone(),
                launched_at: now,
                phase: Phase::Launching,
                attempts: 1,
                next_try: now.plus(retry_s),
                running: false,
                power_mw: d.power_mw,
            });
        match driver.launch(now, &req) {
            Ok(()) => {
                self.stats.launches += 1;
                if let Some(old) = replacing.as_ref().filter(|_| key.is_replicas()) {
                    // Make before break: the old replicas serve until these run.
                    let (kind, reason) = if old.pool == d.pool && old.category == d.category {
                        self.stats.scales += 1;
                        (
                            ActionKind::Scale,
                            format!("{} → {} nodes, replaced by {token}", old.nodes, d.nodes),
                        )
                    } else {
                        self.stats.migrations += 1;
                        (
                            ActionKind::Migrate,
                            format!(
                                "re-planned to {} ({:?}), replaced by {token}",
                                d.pool, d.category
                            ),
                        )
                    };
                    log.push(Action {
                        at: now,
                        kind,
                        unit: key.to_string(),
                        pool: old.pool.clone(),
                        token: old.token.clone(),
                        reason,
                    });
                }
                log.push(Action {
                    at: now,
                    kind: ActionKind::Launch,
                    unit: key.to_string(),
                    pool: d.pool.clone(),
                    token,
                    reason: format!("{} nodes ({:?})", d.nodes, d.category),
                });
                let unit = self.units.get_mut(key).expect("exists");
                unit.refused = None;
                unit.refusals = 0;
                let o = unit.instances.last_mut().expect("pushed");
                o.attempts = 0;
            }
            Err(e) => {
                self.error_policy(&req, &e, now);
                #[allow(unused_mut)]
                let mut drop_token = e.definitive();
                #[cfg(feature = "dst-mutation")]
                if self.mutation == Some(Mutation::NewTokenOnRetry) {
                    drop_token = true;
                }
                log.push(Action {
                    at: now,
                    kind: ActionKind::LaunchFailed,
                    unit: key.to_string(),
                    pool: d.pool.clone(),
                    token: token.clone(),
                    reason: if drop_token {
                        e.to_string()
                    } else {
                        format!("{e}; sent again with the same token")
                    },
                });
                if drop_token && self.journal.forget(&token).is_ok() {
                    let unit = self.units.get_mut(key).expect("exists");
                    unit.instances.pop();
                    // A replacement that did not start: the old instance keeps serving.
                    if e.definitive() {
                        if unit.refused.is_none_or(|t| t.0 < now.0) {
                            unit.refusals += 1;
                        }
                        unit.refused = Some(now);
                        pass.failed.insert(d.workload.clone());
                        self.unplaced
                            .insert(d.workload.clone(), format!("launch refused: {e}"));
                    }
                }
            }
        }
    }

    /// Stop instances with this installation's prefix that no unit owns, once they have
    /// been seen for the grace period, and again until the driver confirms.
    fn sweep_orphans(&mut self, now: Time, driver: &mut dyn Driver, log: &mut Vec<Action>) {
        let due: Vec<String> = self
            .orphans
            .iter()
            .filter(|(_, o)| o.next_try.0 <= now.0 + 1e-9 && !self.observation.unobserved(&o.pool))
            .map(|(t, _)| t.clone())
            .collect();
        for t in due {
            let r = driver.stop(now, &t);
            let attempts = self.orphans[&t].attempts + 1;
            let wait = match r {
                // Checked again by the next observation; stopped again if still live.
                Ok(()) | Err(DriverError::UnknownToken(_)) => self.config.retry_s,
                Err(_) => self.backoff(attempts),
            };
            let o = self.orphans.get_mut(&t).expect("listed");
            if o.attempts == 0 {
                self.stats.orphans_stopped += 1;
                log.push(Action {
                    at: now,
                    kind: ActionKind::Stop,
                    unit: o.unit.clone(),
                    pool: o.pool.clone(),
                    token: t.clone(),
                    reason: format!(
                        "no unit owns it (first seen {:.0} s ago)",
                        now.0 - o.first_seen.0
                    ),
                });
            } else {
                self.stats.stop_retries += 1;
            }
            o.attempts = attempts;
            o.next_try = now.plus(wait);
        }
    }
}
