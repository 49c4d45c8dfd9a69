//! Deterministic simulation testing of the control plane, in the manner of TigerBeetle's
//! simulator and turmoil: one seed drives everything. The harness runs the service's own
//! host loop ([`crate::reconcile_at`]: the real controller, the real store on SQLite in a
//! temporary directory) against the simulated provider behind a [`FaultyDriver`], on a
//! simulated clock, and from the seed alone draws the fault rates themselves (each seed is a
//! different world), launch and stop timeouts after the call took effect, calls lost before
//! they did, capacity refusals, failed and partial observations, instances hidden after
//! their launch, preemptions, region outages, capacity losses, stray instances carrying the
//! installation's prefix, slow stops, clock jumps, workload changes (and stored workloads
//! that no longer validate), and crashes between and in the middle of reconciles, after
//! which the service restarts from its database.
//!
//! After every reconcile it checks the safety invariants; at the end, with faults stopped,
//! that the system converges to the plan (liveness). A failure names the seed, the step,
//! the invariant and a one-line replay command.

use crate::{app_with_control, lock, reconcile_at, App, Backend, Config, DriverChoice, HostDriver};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use stratus_control::fault::{FaultRates, FaultyDriver, Rng};
use stratus_control::{
    ControllerConfig, Driver, DriverError, InstanceState, LaunchRequest, Observation, Phase,
    PoolCapacity, SimProvider, Time, UnitKey,
};
use stratus_model::parse::{from_str, validate_workloads, Format};
use stratus_model::{Fleet, WorkloadSet};
use stratus_plan::Category;

/// The fleet the simulation runs on: two providers, two regions each, small pools, so
/// capacity runs short and outages matter.
pub const FLEET: &str = r#"
name: dst
providers:
  - name: aws
    regions:
      - {name: east, jurisdictions: [US], lat: 39.0, lon: -77.5, carbon_g_per_kwh: 400, pue: 1.2, power_cap_mw: 20,
         pools: [{id: "aws:east:gpu8", instance_type: gpu8, accelerator: H100, chips_per_node: 8, nodes: 6,
                  on_demand_per_node_hour: 98, spot_per_node_hour: 30, spot_nodes: 2, domain_chips: 64,
                  committed: {name: east-reserved, nodes: 2, rate_per_node_hour: 60}}]}
      - {name: west, jurisdictions: [US], lat: 45.6, lon: -121.2, carbon_g_per_kwh: 100, pue: 1.2, power_cap_mw: 20,
         pools: [{id: "aws:west:gpu8", instance_type: gpu8, accelerator: H100, chips_per_node: 8, nodes: 4,
                  on_demand_per_node_hour: 92, spot_per_node_hour: 28, spot_nodes: 2, domain_chips: 64}]}
  - name: gcp
    regions:
      - {name: eu, jurisdictions: [EU], lat: 53.3, lon: 6.6, carbon_g_per_kwh: 300, pue: 1.1, power_cap_mw: 20,
         pools: [{id: "gcp:eu:a3", instance_type: a3, accelerator: H100, chips_per_node: 8, nodes: 6,
                  on_demand_per_node_hour: 88, spot_per_node_hour: 25, spot_nodes: 3, domain_chips: 64}]}
      - {name: us, jurisdictions: [US], lat: 41.2, lon: -95.9, carbon_g_per_kwh: 450, pue: 1.1, power_cap_mw: 20,
         pools: [{id: "gcp:us:a3", instance_type: a3, accelerator: H100, chips_per_node: 8, nodes: 4,
                  on_demand_per_node_hour: 85, domain_chips: 64}]}
"#;

/// The workloads the simulation applies, replaces and deletes.
const TEMPLATES: &str = r#"
training:
  - {name: train-a, chips: 16, accelerators: [H100], images: {cuda: i}, work_chip_hours: 5000, checkpoint_minutes: 30}
  - {name: train-b, chips: 8, accelerators: [H100], images: {cuda: i}, work_chip_hours: 500, spot: true}
  - {name: train-c, chips: 24, accelerators: [H100], images: {cuda: i}, work_chip_hours: 9000, scope: one_region}
inference:
  - {name: svc-a, model: m, replica: {H100: {chips: 8, rps: 10}}, images: {cuda: i}, latency_slo_ms: 200,
     demand: [{from: "aws:east", rps: 15}, {from: "gcp:eu", rps: 5}], min_regions: 2}
  - {name: svc-b, model: m, replica: {H100: {chips: 8, rps: 10}}, images: {cuda: i}, latency_slo_ms: 250,
     demand: [{from: "aws:west", rps: 8}], min_providers: 2, spot: true}
batch:
  - {name: batch-a, chips: 8, accelerators: [H100], images: {cuda: i}, work_chip_hours: 40}
"#;

/// A stored spec that no longer validates: the service must list it, not abort on it.
const INVALID: &str = r#"{"name": "svc-bad", "model": "m", "replica": {"H100": {"chips": 8, "rps": 10}},
 "images": {"cuda": "i"}, "demand": [{"from": "aws:east", "rps": 5}], "latency_slo_ms": 200,
 "min_regions": 200000000}"#;

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reconciles with faults.
    pub steps: usize,
    /// Most quiet reconciles to converge in.
    pub settle_max: usize,
    /// Print what happens at every step.
    pub verbose: bool,
    /// A deliberate defect in the controller, which the run must catch.
    #[cfg(feature = "dst-mutation")]
    pub mutation: Option<stratus_control::Mutation>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            steps: 40,
            settle_max: 60,
            verbose: false,
            #[cfg(feature = "dst-mutation")]
            mutation: None,
        }
    }
}

/// The world one seed draws.
#[derive(Debug, Clone)]
pub struct Params {
    /// Faults of driver calls.
    pub rates: FaultRates,
    /// Seconds from a launch to running.
    pub boot_s: f64,
    /// Seconds from a stop to released nodes (slow stops).
    pub stop_s: f64,
    /// Per reconcile: a running spot instance is preempted.
    pub preempt: f64,
    /// Per reconcile: a region goes down (for 1 to 10 reconciles).
    pub outage: f64,
    /// Per reconcile: a pool loses half its capacity (for 1 to 10 reconciles).
    pub capacity_loss: f64,
    /// Per reconcile: an instance with the installation's prefix that no unit owns appears.
    pub stray: f64,
    /// Per reconcile: the clock jumps 1 to 4 hours.
    pub clock_jump: f64,
    /// Per reconcile: a workload is applied, replaced or deleted.
    pub change: f64,
    /// Per reconcile: a spec that no longer validates is stored.
    pub invalid: f64,
    /// Per reconcile: the service crashes in the middle of it.
    pub crash_mid: f64,
    /// Per reconcile: the service crashes after it.
    pub crash_after: f64,
}

impl Params {
    /// Everything drawn from `seed`.
    pub fn draw(seed: u64) -> Params {
        let mut r = Rng::new(seed, "params");
        let rates = FaultRates::draw(&mut r);
        let mut p = |max: f64| {
            if r.chance(1.0 / 3.0) {
                0.0
            } else {
                r.range(0.0, max)
            }
        };
        Params {
            rates,
            boot_s: p(240.0),
            stop_s: 1.0 + p(900.0),
            preempt: p(0.3),
            outage: p(0.1),
            capacity_loss: p(0.1),
            stray: p(0.1),
            clock_jump: p(0.05),
            change: p(0.3),
            invalid: p(0.05),
            crash_mid: p(0.1),
            crash_after: p(0.1),
        }
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.rates;
        write!(
            f,
            "launch_timeout={:.3} launch_dropped={:.3} capacity_refusal={:.3} stop_timeout={:.3} \
             stop_dropped={:.3} observe_region={:.3} observe_all={:.3} visibility_lag_s={:.0} \
             boot_s={:.0} stop_s={:.0} preempt={:.3} outage={:.3} capacity_loss={:.3} \
             stray={:.3} clock_jump={:.3} change={:.3} invalid={:.3} crash_mid={:.3} \
             crash_after={:.3}",
            r.launch_timeout,
            r.launch_dropped,
            r.capacity_refusal,
            r.stop_timeout,
            r.stop_dropped,
            r.observe_region,
            r.observe_all,
            r.visibility_lag_s,
            self.boot_s,
            self.stop_s,
            self.preempt,
            self.outage,
            self.capacity_loss,
            self.stray,
            self.clock_jump,
            self.change,
            self.invalid,
            self.crash_mid,
            self.crash_after
        )
    }
}

/// A seed that broke an invariant, or could not run.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The reconcile it happened at (steps count from 1; the quiet phase follows the
    /// faulty one).
    pub step: usize,
    /// Simulated seconds.
    pub at: f64,
    /// The invariant, in words.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
    /// The world the seed drew.
    pub params: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "SEED={} broke \"{}\" at step {} (t={:.0} s): {}",
            self.seed, self.invariant, self.step, self.at, self.detail
        )?;
        writeln!(f, "  world: {}", self.params)?;
        write!(
            f,
            "  replay: stratus bench dst --seed {} --verbose",
            self.seed
        )
    }
}

impl std::error::Error for Failure {}

/// What a clean seed went through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedStats {
    /// Reconciles run (faulty and quiet).
    pub reconciles: u64,
    /// Restarts from the database.
    pub restarts: u64,
    /// Launches the driver accepted.
    pub launches: u64,
    /// Instances lost (preemptions, outages, capacity losses, write-offs).
    pub losses: u64,
    /// Stray instances stopped.
    pub orphans_stopped: u64,
    /// Observations of parts that failed.
    pub observe_failures: u64,
}

impl SeedStats {
    /// Add another seed's.
    pub fn add(&mut self, o: &SeedStats) {
        self.reconciles += o.reconciles;
        self.restarts += o.restarts;
        self.launches += o.launches;
        self.losses += o.losses;
        self.orphans_stopped += o.orphans_stopped;
        self.observe_failures += o.observe_failures;
    }
}

/// The world as the service's host loop sees it: the faulty driver, shared with the
/// harness (which injects the world's own faults into it and reads the truth from it).
struct Handle(Arc<Mutex<FaultyDriver>>);

impl Driver for Handle {
    fn launch(&mut self, now: Time, req: &LaunchRequest) -> Result<(), DriverError> {
        lock(&self.0).launch(now, req)
    }
    fn stop(&mut self, now: Time, token: &str) -> Result<(), DriverError> {
        lock(&self.0).stop(now, token)
    }
    fn observe(&mut self, now: Time) -> Observation {
        lock(&self.0).observe(now)
    }
    fn capacity(&mut self, now: Time, pool: &str) -> Result<PoolCapacity, DriverError> {
        lock(&self.0).capacity(now, pool)
    }
}

impl HostDriver for Handle {
    fn driver(&mut self) -> &mut dyn Driver {
        self
    }
    fn advance(&mut self, now: Time) {
        lock(&self.0).world.advance(now);
    }
}

/// Seconds between reconciles in the simulation.
pub const TICK_S: f64 = 60.0;

/// The controller's timing in the simulation: short memories, so a run of a hundred
/// reconciles sees outages come and go.
pub fn controller_config() -> ControllerConfig {
    ControllerConfig {
        tick_s: TICK_S,
        replan_s: 600.0,
        react_s: TICK_S,
        min_dwell_s: 300.0,
        probe_s: 300.0,
        capacity_memory_s: 600.0,
        max_launches_per_tick: 100,
        retry_s: TICK_S,
        retry_max_s: 4.0 * TICK_S,
        orphan_grace_s: 300.0,
        write_off_s: None,
    }
}

/// The simulated truth of one instance: when it started, and when it ended (its release,
/// or its loss) or `None` while it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Truth {
    start: f64,
    end: Option<f64>,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

struct Run {
    seed: u64,
    opts: Options,
    params: Params,
    rt: tokio::runtime::Runtime,
    dir: std::path::PathBuf,
    config: Config,
    fleet: Fleet,
    templates: WorkloadSet,
    world: Arc<Mutex<FaultyDriver>>,
    app: Arc<App>,
    events: Rng,
    now: f64,
    step: usize,
    /// Outages and capacity losses in force, with the step they end at.
    outages: BTreeMap<String, usize>,
    squeezed: BTreeMap<String, usize>,
    strays: u64,
    truth: BTreeMap<String, Truth>,
    /// Instances with the prefix that no unit owns: since when the controller has seen
    /// them, and how many reconciles have seen them after the grace period.
    untracked: BTreeMap<String, (f64, u32)>,
    stats: SeedStats,
    prefix: String,
}

/// Run one seed; a clean run's counters, or the first invariant it broke.
pub fn run_seed(seed: u64, opts: &Options) -> Result<SeedStats, Failure> {
    let params = Params::draw(seed);
    let fail = |detail: String| Failure {
        seed,
        step: 0,
        at: 0.0,
        invariant: "the harness could start",
        detail,
        params: params.to_string(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(format!("runtime: {e}")))?;
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!(
        "stratus-dst-{}-{seed}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let fleet: Fleet =
        from_str("dst fleet", FLEET, Format::Yaml).map_err(|e| fail(e.to_string()))?;
    let templates: WorkloadSet =
        from_str("dst workloads", TEMPLATES, Format::Yaml).map_err(|e| fail(e.to_string()))?;
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("an address"),
        db: format!("sqlite://{}/dst.db", dir.display()),
        tick_s: TICK_S,
        boot_s: params.boot_s,
        admin_token: Some("stx_deterministic-simulation-admin".into()),
        driver: DriverChoice::Sim,
        gateway_metrics: None,
        reports: None,
        commitments: None,
        autoscale: None,
    };
    let mut sim = SimProvider::new(&fleet, params.boot_s, params.stop_s);
    // Listed long after they end, so a run never outlives what it must account for.
    sim.retention_s = Some(8.0 * 86_400.0);
    let world = Arc::new(Mutex::new(FaultyDriver::new(
        sim,
        params.rates.clone(),
        Rng::new(seed, "driver"),
    )));
    let app = match start(&rt, &config, &fleet, &world) {
        Ok(a) => a,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(fail(e));
        }
    };
    let prefix = lock(&app.control).controller.token_prefix.clone();
    let mut run = Run {
        seed,
        opts: opts.clone(),
        params,
        rt,
        dir,
        config,
        fleet,
        templates,
        world,
        app,
        events: Rng::new(seed, "events"),
        now: 1_700_000_000.0,
        step: 0,
        outages: BTreeMap::new(),
        squeezed: BTreeMap::new(),
        strays: 0,
        truth: BTreeMap::new(),
        untracked: BTreeMap::new(),
        stats: SeedStats::default(),
        prefix,
    };
    run.mutate();
    let r = run.go();
    run.harvest();
    let _ = std::fs::remove_dir_all(&run.dir);
    r.map(|()| run.stats.clone())
}

/// Start (or restart) the service on the world.
fn start(
    rt: &tokio::runtime::Runtime,
    config: &Config,
    fleet: &Fleet,
    world: &Arc<Mutex<FaultyDriver>>,
) -> Result<Arc<App>, String> {
    let app = rt
        .block_on(app_with_control(
            config,
            controller_config(),
            fleet.clone(),
            Backend::Custom(Box::new(Handle(world.clone()))),
        ))
        .map_err(|e| format!("starting the service: {e}"))?;
    let mut w = lock(world);
    w.halt = app.halt.clone();
    w.crash_after = None;
    Ok(app)
}

impl Run {
    fn failure(&self, invariant: &'static str, detail: String) -> Failure {
        Failure {
            seed: self.seed,
            step: self.step,
            at: self.now,
            invariant,
            detail,
            params: self.params.to_string(),
        }
    }

    #[cfg(feature = "dst-mutation")]
    fn mutate(&mut self) {
        lock(&self.app.control).controller.mutation = self.opts.mutation;
    }

    #[cfg(not(feature = "dst-mutation"))]
    fn mutate(&mut self) {}

    fn say(&self, what: impl FnOnce() -> String) {
        if self.opts.verbose {
            eprintln!(
                "[seed {} step {} t={:.0}] {}",
                self.seed,
                self.step,
                self.now,
                what()
            );
        }
    }

    fn go(&mut self) -> Result<(), Failure> {
        for _ in 0..self.opts.steps {
            self.step += 1;
            let mut dt = TICK_S;
            if self.events.chance(self.params.clock_jump) {
                dt += self.events.range(3600.0, 4.0 * 3600.0);
                self.say(|| format!("the clock jumps {dt:.0} s"));
            }
            self.now += dt;
            self.world_events();
            self.workload_changes()?;
            if self.events.chance(self.params.crash_mid) {
                let k = self.events.below(12) as u32;
                self.say(|| format!("the service will crash after {k} driver calls"));
                lock(&self.world).crash_after = Some(k);
            }
            let ok = self.reconcile()?;
            lock(&self.world).crash_after = None;
            if !ok || self.events.chance(self.params.crash_after) {
                self.restart()?;
                continue;
            }
            self.check()?;
        }
        // Liveness: faults stop, the world heals, and the system must converge.
        {
            let mut w = lock(&self.world);
            w.rates = FaultRates::default();
            let now = Time(self.now);
            for r in std::mem::take(&mut self.outages).into_keys() {
                w.world.set_region_down(now, &r, false);
            }
            for p in std::mem::take(&mut self.squeezed).into_keys() {
                w.world.set_capacity_factor(now, &p, 1.0);
            }
        }
        let mut quiet_since: Option<usize> = None;
        for _ in 0..self.opts.settle_max {
            self.step += 1;
            self.now += TICK_S;
            let before = self.activity();
            if !self.reconcile()? {
                return Err(self.failure(
                    "the service runs without faults",
                    "a reconcile halted with faults off".into(),
                ));
            }
            self.check()?;
            let quiet = self.activity() == before;
            match self.converged() {
                Ok(()) if quiet => {
                    if quiet_since.is_some_and(|s| self.step > s) {
                        self.metering_exact()?;
                        return Ok(());
                    }
                    quiet_since.get_or_insert(self.step);
                }
                _ => quiet_since = None,
            }
        }
        if self.opts.verbose {
            let c = lock(&self.app.control);
            for (key, desired, owned) in c.controller.units() {
                eprintln!(
                    "  unit {key}: wants {:?}; owns {:?}",
                    desired.map(|d| (&d.pool, d.category, d.nodes, d.committed_nodes)),
                    owned
                        .iter()
                        .map(|o| (
                            &o.request.token,
                            &o.request.pool,
                            o.request.nodes,
                            o.phase,
                            o.running
                        ))
                        .collect::<Vec<_>>()
                );
            }
            eprintln!("  unplaced: {:?}", c.controller.unplaced());
        }
        let why = self
            .converged()
            .err()
            .unwrap_or_else(|| "it kept acting".into());
        Err(self.failure(
            "with faults stopped, the system converges to the plan",
            format!(
                "not converged after {} quiet reconciles: {why}",
                self.opts.settle_max
            ),
        ))
    }

    /// Counters that move when the controller acts.
    fn activity(&self) -> (u64, u64, u64, u64, u64, u64, u64) {
        let s = lock(&self.app.control).controller.stats.clone();
        (
            s.launches,
            s.stops,
            s.migrations + s.scales,
            s.launch_retries,
            s.stop_retries,
            s.orphans_stopped,
            s.losses,
        )
    }

    /// One reconcile of the service's host loop; false when the service crashed in it.
    fn reconcile(&mut self) -> Result<bool, Failure> {
        let r = self.rt.block_on(reconcile_at(&self.app, self.now));
        self.stats.reconciles += 1;
        self.record_truth();
        let halted = self.app.halt.load(Ordering::SeqCst);
        if let (true, Ok(actions)) = (self.opts.verbose, &r) {
            for a in actions {
                eprintln!(
                    "[seed {} step {}]   {:?} {} {} {}: {}",
                    self.seed, self.step, a.kind, a.unit, a.pool, a.token, a.reason
                );
            }
        }
        if self.opts.verbose && halted {
            let c = lock(&self.app.control);
            for a in &c.pending.0 {
                eprintln!(
                    "[seed {} step {}]   (lost with the crash) {:?} {} {} {}: {}",
                    self.seed, self.step, a.kind, a.unit, a.pool, a.token, a.reason
                );
            }
        }
        match r {
            Ok(_) if !halted => Ok(true),
            Ok(_) | Err(crate::ReconcileError::Halted) => {
                self.say(|| "the service crashed in the reconcile".into());
                Ok(false)
            }
            Err(e) => Err(self.failure("the service's reconcile completes", e.to_string())),
        }
    }

    /// Add the running controller's counters to the seed's.
    fn harvest(&mut self) {
        let c = lock(&self.app.control);
        let s = &c.controller.stats;
        self.stats.launches += s.launches;
        self.stats.losses += s.losses;
        self.stats.orphans_stopped += s.orphans_stopped;
        self.stats.observe_failures += s.observe_failures;
    }

    fn restart(&mut self) -> Result<(), Failure> {
        self.say(|| "the service restarts from its database".into());
        self.harvest();
        self.stats.restarts += 1;
        let app = start(&self.rt, &self.config, &self.fleet, &self.world)
            .map_err(|e| self.failure("the service restarts from its database", e))?;
        self.app = app;
        self.untracked.clear();
        self.mutate();
        if self.opts.verbose {
            let c = lock(&self.app.control);
            for o in c.controller.owned() {
                eprintln!(
                    "[seed {} step {}]   restored {} {} {:?}",
                    self.seed, self.step, o.request.token, o.request.pool, o.phase
                );
            }
        }
        Ok(())
    }

    /// The world's own faults: preemptions, outages, capacity losses, stray instances.
    fn world_events(&mut self) {
        let now = Time(self.now);
        let step = self.step;
        let mut w = lock(&self.world);
        w.world.advance(now);
        let ended: Vec<String> = self
            .outages
            .iter()
            .filter(|(_, e)| **e <= step)
            .map(|(r, _)| r.clone())
            .collect();
        for r in ended {
            self.outages.remove(&r);
            w.world.set_region_down(now, &r, false);
        }
        let ended: Vec<String> = self
            .squeezed
            .iter()
            .filter(|(_, e)| **e <= step)
            .map(|(p, _)| p.clone())
            .collect();
        for p in ended {
            self.squeezed.remove(&p);
            w.world.set_capacity_factor(now, &p, 1.0);
        }
        let mut said = Vec::new();
        if self.events.chance(self.params.preempt) {
            let spot: Vec<String> = w
                .world
                .instances()
                .filter(|i| {
                    i.request.category == Category::Spot
                        && matches!(
                            i.state,
                            InstanceState::Running | InstanceState::Pending { .. }
                        )
                })
                .map(|i| i.request.token.clone())
                .collect();
            if !spot.is_empty() {
                let t = spot[self.events.below(spot.len())].clone();
                w.world.preempt(now, &t);
                said.push(format!("{t} is preempted"));
            }
        }
        if self.events.chance(self.params.outage) {
            let regions: Vec<String> = w.world.regions().into_iter().collect();
            let r = regions[self.events.below(regions.len())].clone();
            if !self.outages.contains_key(&r) {
                let lost = w.world.set_region_down(now, &r, true);
                self.outages
                    .insert(r.clone(), step + 1 + self.events.below(10));
                said.push(format!("{r} goes down ({} instances lost)", lost.len()));
            }
        }
        if self.events.chance(self.params.capacity_loss) {
            let pools: Vec<String> = w.world.pools().into_iter().map(String::from).collect();
            let p = pools[self.events.below(pools.len())].clone();
            if !self.squeezed.contains_key(&p) {
                let lost = w.world.set_capacity_factor(now, &p, 0.5);
                self.squeezed
                    .insert(p.clone(), step + 1 + self.events.below(10));
                said.push(format!(
                    "{p} loses half its nodes ({} instances lost)",
                    lost.len()
                ));
            }
        }
        if self.events.chance(self.params.stray) {
            self.strays += 1;
            let pools: Vec<String> = w.world.pools().into_iter().map(String::from).collect();
            let pool = pools[self.events.below(pools.len())].clone();
            let region = pool.rsplit_once(':').map(|x| x.0).unwrap_or("").to_string();
            let unit = format!("stray-{}", self.strays);
            let req = LaunchRequest {
                token: format!("{}{unit}~{}", self.prefix, 1_000_000_000_000 + self.strays),
                unit: unit.clone(),
                workload: unit,
                pool,
                region,
                category: Category::OnDemand,
                nodes: 1,
                committed_nodes: 0,
                replicas: 1,
            };
            if w.world.launch(now, &req).is_ok() {
                said.push(format!("a stray instance {} appears", req.token));
            }
        }
        drop(w);
        for s in said {
            self.say(|| s);
        }
    }

    /// Workloads applied, replaced and deleted as the API would, and now and then a stored
    /// spec that no longer validates.
    fn workload_changes(&mut self) -> Result<(), Failure> {
        let mut items = Vec::new();
        let mut deleted = None;
        if self.events.chance(self.params.change) {
            let all = crate::api::workload_items(&self.templates);
            let (name, kind, mut spec) = all[self.events.below(all.len())].clone();
            if self.events.chance(0.25) {
                deleted = Some(name);
            } else {
                // Demand moves, so services are resized.
                if let Some(d) = spec.get_mut("demand").and_then(|d| d.as_array_mut()) {
                    for x in d {
                        let rps = x["rps"].as_f64().unwrap_or(1.0) * self.events.range(0.5, 2.0);
                        x["rps"] = serde_json::json!((rps * 10.0).round() / 10.0);
                    }
                }
                let mut one = WorkloadSet::default();
                match kind.as_str() {
                    "training" => one
                        .training
                        .push(serde_json::from_value(spec.clone()).expect("a template")),
                    "inference" => one
                        .inference
                        .push(serde_json::from_value(spec.clone()).expect("a template")),
                    _ => one
                        .batch
                        .push(serde_json::from_value(spec.clone()).expect("a template")),
                }
                validate_workloads(&one, &self.fleet, "dst", "").map_err(|e| {
                    self.failure("the simulation's workloads validate", e.to_string())
                })?;
                items.push((name, kind, spec));
            }
        }
        if self.events.chance(self.params.invalid) {
            let spec: serde_json::Value = serde_json::from_str(INVALID).expect("json");
            items.push(("svc-bad".to_string(), "inference".to_string(), spec));
        }
        let store = self.app.store.clone();
        let now_ms = (self.now * 1000.0) as i64;
        let r = self.rt.block_on(async {
            if !items.is_empty() {
                store.apply(&items, now_ms).await?;
            }
            if let Some(n) = &deleted {
                store.delete(n).await?;
            }
            Ok::<_, crate::store::StoreError>(())
        });
        r.map_err(|e| self.failure("the store answers", e.to_string()))?;
        if !items.is_empty() || deleted.is_some() {
            self.app.changed.store(true, Ordering::SeqCst);
            let names: Vec<&str> = items.iter().map(|i| i.0.as_str()).collect();
            self.say(|| format!("applied {names:?}, deleted {deleted:?}"));
        }
        Ok(())
    }

    /// Read what really runs.
    fn record_truth(&mut self) {
        let w = lock(&self.world);
        for i in w.world.instances() {
            let end = match i.state {
                InstanceState::Pending { .. } | InstanceState::Running => None,
                InstanceState::Stopping { done_at } => Some(done_at.0),
                InstanceState::Lost(_) => Some(i.since.0),
            };
            self.truth.insert(
                i.request.token.clone(),
                Truth {
                    start: i.launched_at.0,
                    end,
                },
            );
        }
    }

    /// The safety invariants, after every reconcile.
    fn check(&mut self) -> Result<(), Failure> {
        let now = self.now;
        let w = lock(&self.world);
        if let Some(r) = w.log.reused.first() {
            return Err(self.failure("no token is ever reused", r.clone()));
        }
        // Never more instances of a unit alive than make before break allows.
        let mut live: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for i in w.world.instances() {
            if matches!(
                i.state,
                InstanceState::Pending { .. } | InstanceState::Running
            ) {
                live.entry(i.request.unit.as_str())
                    .or_default()
                    .push(i.request.token.as_str());
            }
        }
        for (unit, tokens) in &live {
            let max = UnitKey::parse(unit).map(|k| k.max_live()).unwrap_or(1);
            if tokens.len() > max {
                return Err(self.failure(
                    "never more live instances of a unit than make before break allows",
                    format!(
                        "{unit} has {} live instances (at most {max}): {tokens:?}",
                        tokens.len()
                    ),
                ));
            }
        }
        let c = lock(&self.app.control);
        let owned: BTreeSet<&str> = c
            .controller
            .owned()
            .map(|o| o.request.token.as_str())
            .collect();
        let seen: BTreeSet<&str> = c
            .controller
            .observed()
            .iter()
            .map(|i| i.request.token.as_str())
            .collect();
        // No untracked instance alive past the grace period: the first reconcile that sees
        // it once the grace period is over asks the driver to stop it (and then again until
        // it stops, which convergence checks).
        let grace = controller_config().orphan_grace_s;
        let mut still = BTreeSet::new();
        for tokens in live.values() {
            for t in tokens {
                if !t.starts_with(&self.prefix) || owned.contains(t) {
                    continue;
                }
                still.insert(t.to_string());
                if seen.contains(t) {
                    let e = self.untracked.entry(t.to_string()).or_insert((now, 0));
                    if now >= e.0 + grace - 1e-6 {
                        e.1 += 1;
                    }
                }
            }
        }
        self.untracked.retain(|t, _| still.contains(t));
        for (t, (since, after)) in &self.untracked {
            let asked = w.log.stopped_at.get(t).is_some_and(|at| at.0 >= *since);
            if *after > 0 && !asked {
                return Err(self.failure(
                    "no untracked instance alive past the grace period",
                    format!(
                        "{t}, seen untracked since t={since:.0}, was seen past the grace period \
                         and not asked to stop"
                    ),
                ));
            }
        }
        // Every stored workload is placed or listed as unplaced with a reason.
        let stored = self
            .rt
            .block_on(self.app.store.workloads())
            .map_err(|e| self.failure("the store answers", e.to_string()))?;
        let placed = c.controller.placed_workloads();
        for s in &stored {
            let why = c
                .controller
                .unplaced()
                .get(&s.name)
                .or_else(|| c.invalid.get(&s.name));
            match why {
                Some(r) if r.trim().is_empty() => {
                    return Err(self.failure(
                        "every stored workload is placed or listed as unplaced with a reason",
                        format!("{} is unplaced without a reason", s.name),
                    ))
                }
                Some(_) => {}
                None if placed.contains(&s.name) => {}
                None => {
                    return Err(self.failure(
                        "every stored workload is placed or listed as unplaced with a reason",
                        format!("{} is neither placed nor listed", s.name),
                    ))
                }
            }
        }
        // Spend metered equals what the driver ran: never more, and exactly what the last
        // observation showed.
        let usage: BTreeMap<String, (f64, f64)> = c
            .meter
            .usage()
            .into_iter()
            .map(|u| (u.token, (u.start_s, u.end_s)))
            .collect();
        let (seen_at, last) = &w.log.last_observation;
        let shown: BTreeMap<&str, f64> = last
            .iter()
            .map(|i| {
                let end = match i.state {
                    InstanceState::Pending { .. } | InstanceState::Running => seen_at.0,
                    InstanceState::Stopping { done_at } => done_at.0,
                    InstanceState::Lost(_) => i.since.0,
                };
                (i.request.token.as_str(), end.max(i.launched_at.0))
            })
            .collect();
        for (token, (start, end)) in &usage {
            let Some(t) = self.truth.get(token) else {
                return Err(self.failure(
                    "spend metered equals what the driver ran",
                    format!("{token} is billed but never ran"),
                ));
            };
            let true_end = t.end.unwrap_or(now);
            let exact = shown.get(token.as_str());
            if (start - t.start).abs() > 1e-6
                || *end > true_end + 1e-6
                || exact.is_some_and(|x| (end - x).abs() > 1e-6)
            {
                return Err(self.failure(
                    "spend metered equals what the driver ran",
                    format!(
                        "{token} billed {start:.0}..{end:.0}, ran {:.0}..{true_end:.0}",
                        t.start
                    ),
                ));
            }
        }
        Ok(())
    }

    /// With faults stopped: nothing pending, every planned unit running once as planned,
    /// nothing else alive.
    fn converged(&self) -> Result<(), String> {
        let c = lock(&self.app.control);
        let pending = c.controller.adoption_pending();
        if !pending.is_empty() {
            return Err(format!("adoption waits for {pending:?}"));
        }
        if let Some((t, _)) = c.controller.orphans().next() {
            return Err(format!("orphan {t} not yet stopped"));
        }
        let mut running = BTreeSet::new();
        for (key, desired, owned) in c.controller.units() {
            for o in owned {
                match o.phase {
                    Phase::Live if o.running => {}
                    Phase::Stopping { confirmed: true } => continue,
                    p => return Err(format!("{} of {key} is {p:?}", o.request.token)),
                }
                running.insert(o.request.token.clone());
            }
            let live: Vec<_> = owned.iter().filter(|o| o.phase == Phase::Live).collect();
            match desired {
                Some(d) if live.len() != 1 || !d.matches(&live[0].request) => {
                    let w = lock(&self.world);
                    let there: Vec<String> = w
                        .world
                        .instances()
                        .filter(|i| i.request.pool == d.pool)
                        .map(|i| {
                            format!(
                                "{} {:?} {}/{} {:?}",
                                i.request.token,
                                i.request.category,
                                i.request.committed_nodes,
                                i.request.nodes,
                                i.state
                            )
                        })
                        .collect();
                    return Err(format!(
                        "{key} runs {} instances, not one as planned ({} {:?} {} nodes); \
                         owns {:?}; the pool has {there:?}",
                        live.len(),
                        d.pool,
                        d.category,
                        d.nodes,
                        owned
                            .iter()
                            .map(|o| (&o.request.token, &o.request.pool, o.request.nodes, o.phase))
                            .collect::<Vec<_>>()
                    ));
                }
                None if !live.is_empty() => {
                    return Err(format!("{key} is not planned but runs {}", live.len()))
                }
                _ => {}
            }
        }
        let w = lock(&self.world);
        let alive: BTreeSet<String> = w
            .world
            .instances()
            .filter(|i| {
                matches!(
                    i.state,
                    InstanceState::Pending { .. } | InstanceState::Running
                )
            })
            .map(|i| i.request.token.clone())
            .collect();
        if alive != running {
            return Err(format!(
                "the world runs {:?} but the controller owns {:?}",
                alive.difference(&running).collect::<Vec<_>>(),
                running.difference(&alive).collect::<Vec<_>>()
            ));
        }
        Ok(())
    }

    /// At the end: every instance that ever ran is billed exactly as it ran.
    fn metering_exact(&self) -> Result<(), Failure> {
        let c = lock(&self.app.control);
        let usage: BTreeMap<String, (f64, f64)> = c
            .meter
            .usage()
            .into_iter()
            .map(|u| (u.token, (u.start_s, u.end_s)))
            .collect();
        for (token, t) in &self.truth {
            let true_end = t.end.unwrap_or(self.now);
            if true_end <= t.start {
                continue;
            }
            match usage.get(token) {
                Some((s, e)) if (s - t.start).abs() <= 1e-6 && (e - true_end).abs() <= 1e-6 => {}
                got => {
                    return Err(self.failure(
                        "spend metered equals what the driver ran",
                        format!(
                            "at the end, {token} ran {:.0}..{true_end:.0} but is billed {got:?}",
                            t.start
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Run `seeds` on `threads` threads; `progress` is called after each seed. Returns the
/// totals of the clean seeds and every failure, in seed order.
pub fn run_seeds(
    seeds: std::ops::Range<u64>,
    threads: usize,
    opts: &Options,
    progress: &(dyn Fn(u64, &Result<SeedStats, Failure>) + Sync),
) -> (SeedStats, Vec<Failure>) {
    let next = AtomicU64::new(seeds.start);
    let out = Mutex::new((SeedStats::default(), Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    break;
                }
                let r = run_seed(seed, opts);
                progress(seed, &r);
                let mut o = lock(&out);
                match r {
                    Ok(st) => o.0.add(&st),
                    Err(f) => o.1.push(f),
                }
            });
        }
    });
    let (stats, mut failures) = out.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort_by_key(|f| f.seed);
    (stats, failures)
}
