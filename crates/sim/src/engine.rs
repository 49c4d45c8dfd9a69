//! The discrete-event engine. One run = one policy: the production [`Controller`] drives the
//! in-process [`SimProvider`] under a simulated clock while request traces, job arrivals and
//! faults play out. Control events (ticks, boots, faults, job ends) sit in a binary heap;
//! requests, which are most events, stream from the traces in time order and are served
//! inline, so a run costs a few hundred nanoseconds per request.

use crate::metrics::{Conservation, Histogram, Hourly, PolicyMetrics, Totals};
use crate::scenario::{Fault, JobSpec, Loaded, Sizing};
use crate::trace::PROFILE_WINDOW_S;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use stratus_control::{Controller, InstanceState, LossCause, SimProvider, Strategy, Time};
use stratus_model::fleet::{region_id, LatencyTable};
use stratus_model::{Accelerator, WorkloadSet};
use stratus_plan::Category;

/// SplitMix64: tiny, fast, and reproducible across platforms.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` and a named stream, so draws of one kind never shift another's.
    pub fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone)]
enum Event {
    Tick,
    Transition,
    JobArrival(usize),
    JobFinish(usize, u64),
    JobDeadline(usize),
    FaultStart(usize),
    FaultEnd(usize),
    Preempt(String),
    Hour(usize),
    End,
}

#[derive(Debug, Clone)]
struct Ev {
    t: f64,
    seq: u64,
    ev: Event,
}

impl PartialEq for Ev {
    fn eq(&self, o: &Self) -> bool {
        self.t.to_bits() == o.t.to_bits() && self.seq == o.seq
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ev {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.t.total_cmp(&o.t).then(self.seq.cmp(&o.seq))
    }
}

/// Facts about one pool the engine needs per event.
#[derive(Debug, Clone)]
struct PoolInfo {
    provider: usize,
    region: String,
    lat: usize,
    accelerator: Accelerator,
    chips_per_node: u32,
    /// Facility watts of the accelerators of one node at TDP (× PUE).
    chip_watts_per_node: f64,
    /// Facility watts of one node's host (× PUE), drawn whatever the chips do.
    host_watts_per_node: f64,
    on_demand: f64,
    spot: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum JobStatus {
    Waiting,
    Active,
    Finished(f64),
    Failed,
}

#[derive(Debug, Clone)]
struct Job {
    arrival: f64,
    work: f64,
    progress: f64,
    rate: f64,
    last: f64,
    run_start: f64,
    ckpt_s: f64,
    token: Option<String>,
    version: u64,
    status: JobStatus,
    deadline: Option<f64>,
}

/// Replicas of one service in one region (one instance), as a min-heap of slot free times.
#[derive(Debug, Clone)]
struct Group {
    token: String,
    lat: usize,
    slots: BinaryHeap<Reverse<u64>>,
    secs_per_work: f64,
    prefill_s_per_token: f64,
}

/// Time warp for a rate profile: the trace plays in "virtual" seconds at the mean rate; real
/// time runs faster through busy windows and slower through quiet ones.
#[derive(Debug, Clone)]
struct Warp {
    mult: Vec<f64>,
    /// Virtual seconds elapsed at the start of each window.
    cum: Vec<f64>,
}

impl Warp {
    fn new(profile: &[f64], horizon: f64) -> Warp {
        let n = (horizon / PROFILE_WINDOW_S).ceil() as usize + 2;
        let mult: Vec<f64> = (0..n)
            .map(|k| profile[k % profile.len()].max(0.0))
            .collect();
        let mut cum = Vec::with_capacity(n + 1);
        let mut acc = 0.0;
        cum.push(0.0);
        for m in &mult {
            acc += m * PROFILE_WINDOW_S;
            cum.push(acc);
        }
        Warp { mult, cum }
    }

    /// Real time of virtual time `tau` (infinite past the end).
    #[inline]
    fn real(&self, tau: f64) -> f64 {
        let k = self.cum.partition_point(|&c| c <= tau);
        if k == 0 || k >= self.cum.len() {
            return if k == 0 { 0.0 } else { f64::INFINITY };
        }
        let k = k - 1;
        k as f64 * PROFILE_WINDOW_S + (tau - self.cum[k]) / self.mult[k]
    }

    /// The highest multiplier over real times [from, to].
    fn peak(&self, from: f64, to: f64) -> f64 {
        let a = (from / PROFILE_WINDOW_S) as usize;
        let b = ((to / PROFILE_WINDOW_S) as usize).min(self.mult.len() - 1);
        self.mult[a.min(b)..=b].iter().copied().fold(0.0, f64::max)
    }
}

#[derive(Debug, Clone)]
struct Service {
    warp: Option<Warp>,
    slo_ms: f64,
    loc_lat: Vec<usize>,
    loc_cum: Vec<f64>,
    groups: Vec<Group>,
    /// Per location: (group, rtt ms), nearest first.
    order: Vec<Vec<(usize, f64)>>,
    signature: Vec<String>,
    trace: usize,
    dilation: f64,
    span: f64,
    idx: usize,
    base: f64,
    mean_work: f64,
    rng: Rng,
}

/// Run `strategy` on the loaded scenario. `progress` is told the simulated share done each
/// simulated hour.
pub fn run(ld: &Loaded, strategy: Strategy, progress: &(dyn Fn(f64) + Sync)) -> PolicyMetrics {
    run_sized(ld, strategy, Sizing::Forecast, progress)
}

/// [`run`] with services sized as `sizing` says.
pub fn run_sized(
    ld: &Loaded,
    strategy: Strategy,
    sizing: Sizing,
    progress: &(dyn Fn(f64) + Sync),
) -> PolicyMetrics {
    let mut e = Engine::new(ld, strategy, sizing);
    e.run(progress);
    e.finish()
}

struct Engine<'a> {
    ld: &'a Loaded,
    policy_name: String,
    sizing: Sizing,
    /// Traffic-driven sizing's estimator, fed `requests_seen`.
    autoscaler: stratus_control::autoscale::Autoscaler,
    /// Per service and declared location: requests arrived (what a gateway would count).
    requests_seen: Vec<Vec<u64>>,
    driver: SimProvider,
    ctl: Controller,
    lat: LatencyTable,
    heap: BinaryHeap<Reverse<Ev>>,
    seq: u64,
    now: f64,
    horizon: f64,
    next_tick: f64,
    next_transition: Option<f64>,
    pools: HashMap<String, PoolInfo>,
    providers: Vec<String>,
    provider_chips: Vec<f64>,
    committed_fee_per_h: Vec<f64>,
    committed_nodes_total: f64,
    jobs: Vec<Job>,
    job_of: HashMap<String, usize>,
    running_jobs: BTreeSet<usize>,
    services: Vec<Service>,
    service_of: HashMap<String, usize>,
    stream_heap: BinaryHeap<Reverse<(u64, usize)>>,
    preempt_rate: Vec<(String, f64)>,
    preempt_scheduled: BTreeSet<String>,
    preempt_rng: Rng,
    carbon_regions: Vec<(usize, usize, Vec<f64>)>,
    carbon_of: HashMap<String, usize>,
    // Rates since the last change.
    last_int: f64,
    cost_rate: Vec<[f64; 2]>,
    power_w: Vec<(String, f64)>,
    committed_in_use: f64,
    chips_running: Vec<f64>,
    goodput_rate: f64,
    // Accumulators.
    hourly: Hourly,
    totals: Totals,
    lost: BTreeMap<String, f64>,
    latency: Histogram,
    ttft: Histogram,
    jct: Histogram,
    dropped: BTreeMap<String, u64>,
    queued_requests: u64,
    events: u64,
    /// Wall time spent in the controller (planning), for `stratus bench sim` only; never in
    /// the metrics, which must not depend on the machine.
    control_wall: std::time::Duration,
    /// What every instance was billed for, for the ledger.
    meter: stratus_ledger::Meter,
}

impl<'a> Engine<'a> {
    fn new(ld: &'a Loaded, strategy: Strategy, sizing: Sizing) -> Engine<'a> {
        let sc = &ld.scenario;
        let fleet = &ld.fleet;
        let lat = LatencyTable::new(fleet);
        let mut pools = HashMap::new();
        let providers: Vec<String> = fleet.providers.iter().map(|p| p.name.clone()).collect();
        let mut provider_chips = vec![0.0; providers.len()];
        let mut committed_fee_per_h = vec![0.0; providers.len()];
        let mut committed_nodes_total = 0.0;
        for (pi, p) in fleet.providers.iter().enumerate() {
            for r in &p.regions {
                let rid = region_id(&p.name, &r.name);
                for pool in &r.pools {
                    provider_chips[pi] +=
                        ((pool.nodes + pool.spot_nodes) * pool.chips_per_node) as f64;
                    if let Some(c) = &pool.committed {
                        committed_fee_per_h[pi] += c.nodes as f64 * c.rate_per_node_hour.0;
                        committed_nodes_total += c.nodes as f64;
                    }
                    pools.insert(
                        pool.id.clone(),
                        PoolInfo {
                            provider: pi,
                            region: rid.clone(),
                            lat: lat.index_of(&rid).expect("every region is in the table"),
                            accelerator: pool.accelerator,
                            chips_per_node: pool.chips_per_node,
                            chip_watts_per_node: pool.chips_per_node as f64
                                * pool.accelerator.profile().tdp_watts
                                * r.pue,
                            host_watts_per_node: pool.host_watts_per_node.0 * r.pue,
                            on_demand: pool.on_demand_per_node_hour.0,
                            spot: pool.spot_per_node_hour.map(|s| s.0).unwrap_or(0.0),
                        },
                    );
                }
            }
        }
        let policy_name = match sizing {
            Sizing::Forecast => strategy.name(),
            Sizing::Declared => format!("{}-declared", strategy.name()),
            Sizing::Traffic => format!("{}-traffic", strategy.name()),
        };
        let ctl = Controller::new(fleet.clone(), strategy, sc.controller.clone());
        let driver = SimProvider::new(fleet, sc.provider.launch_s, sc.provider.stop_s);
        let horizon = sc.horizon_hours * 3600.0;
        let hours = sc.horizon_hours.ceil() as usize;

        let jobs: Vec<Job> = ld
            .jobs
            .iter()
            .map(|j| {
                let (work, ckpt, deadline) = match &j.spec {
                    JobSpec::Training(t) => (
                        t.work_chip_hours.0,
                        t.checkpoint_minutes * 60.0,
                        t.deadline_hours,
                    ),
                    JobSpec::Batch(b) => (b.work_chip_hours.0, 1800.0, b.deadline_hours),
                };
                Job {
                    arrival: j.arrival_s,
                    work,
                    progress: 0.0,
                    rate: 0.0,
                    last: j.arrival_s,
                    run_start: 0.0,
                    ckpt_s: ckpt.max(60.0),
                    token: None,
                    version: 0,
                    status: JobStatus::Waiting,
                    deadline: deadline.map(|d| j.arrival_s + d * 3600.0),
                }
            })
            .collect();
        let job_of = ld
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.spec.name().to_string(), i))
            .collect();

        let mut services = Vec::new();
        let mut service_of = HashMap::new();
        let mut stream_heap = BinaryHeap::new();
        for (si, s) in ld.services.inference.iter().enumerate() {
            let ti = ld.service_trace[si];
            let reqs = &ld.request_traces[ti].1;
            let n = reqs.len() as f64;
            let last = reqs.last().map(|r| r.t_s).unwrap_or(0.0);
            let span = if n > 1.0 { last * n / (n - 1.0) } else { 1.0 }.max(1e-3);
            let trace_rate = n / span;
            let declared: f64 = s.demand.iter().map(|d| d.rps.0).sum();
            let sv = &sc.serving;
            let mean_work = reqs
                .iter()
                .map(|r| r.output_tokens as f64 + sv.prefill_weight * r.input_tokens as f64)
                .sum::<f64>()
                / n.max(1.0);
            let mut cum = 0.0;
            let loc_cum = s
                .demand
                .iter()
                .map(|d| {
                    cum += d.rps.0;
                    cum
                })
                .collect();
            let loc_lat = s
                .demand
                .iter()
                .map(|d| lat.index_of(&d.from).unwrap_or(0))
                .collect::<Vec<_>>();
            let warp = ld.profiles[ti].as_ref().map(|p| Warp::new(p, horizon));
            let svc = Service {
                warp,
                slo_ms: s.latency_slo_ms.0,
                order: vec![Vec::new(); loc_lat.len()],
                loc_lat,
                loc_cum,
                groups: Vec::new(),
                signature: Vec::new(),
                trace: ti,
                dilation: declared / trace_rate,
                span,
                idx: 0,
                base: 0.0,
                mean_work: mean_work.max(1e-9),
                rng: Rng::new(sc.seed, 1000 + si as u64),
            };
            if declared > 0.0 && !reqs.is_empty() {
                let v0 = reqs[0].t_s / svc.dilation;
                let t0 = svc.warp.as_ref().map_or(v0, |w| w.real(v0));
                stream_heap.push(Reverse((t0.to_bits(), si)));
            }
            service_of.insert(s.name.clone(), si);
            services.push(svc);
        }

        let mut carbon_regions = Vec::new();
        let mut carbon_of = HashMap::new();
        for (pi, p) in fleet.providers.iter().enumerate() {
            for (ri, r) in p.regions.iter().enumerate() {
                let rid = region_id(&p.name, &r.name);
                let series = ld
                    .carbon
                    .get(&rid)
                    .cloned()
                    .unwrap_or_else(|| vec![r.carbon_g_per_kwh.0]);
                carbon_of.insert(rid, carbon_regions.len());
                carbon_regions.push((pi, ri, series));
            }
        }
        let preempt_rate = sc
            .faults
            .iter()
            .filter_map(|f| match f {
                Fault::SpotPreemption {
                    pools,
                    per_node_hour,
                } => Some((pools.clone(), *per_node_hour)),
                _ => None,
            })
            .collect();

        let mut hourly = Hourly {
            cost_usd: vec![0.0; hours],
            requests: vec![0; hours],
            dropped: vec![0; hours],
            slo_attainment: vec![0.0; hours],
            tco2e: vec![0.0; hours],
            energy_mwh: vec![0.0; hours],
            committed_node_hours_used: vec![0.0; hours],
            committed_node_hours_available: vec![0.0; hours],
            goodput_chip_hours: vec![0.0; hours],
            ..Default::default()
        };
        for p in &providers {
            hourly
                .utilisation_by_provider
                .insert(p.clone(), vec![0.0; hours]);
        }
        let np = providers.len();
        let mut e = Engine {
            ld,
            policy_name,
            sizing,
            autoscaler: stratus_control::autoscale::Autoscaler::new(sc.autoscale.config()),
            requests_seen: ld
                .services
                .inference
                .iter()
                .map(|s| vec![0; s.demand.len()])
                .collect(),
            driver,
            ctl,
            lat,
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0.0,
            horizon,
            next_tick: f64::INFINITY,
            next_transition: None,
            pools,
            providers,
            provider_chips,
            committed_fee_per_h,
            committed_nodes_total,
            jobs,
            job_of,
            running_jobs: BTreeSet::new(),
            services,
            service_of,
            stream_heap,
            preempt_rate,
            preempt_scheduled: BTreeSet::new(),
            preempt_rng: Rng::new(sc.seed, 7),
            carbon_regions,
            carbon_of,
            last_int: 0.0,
            cost_rate: vec![[0.0; 2]; np],
            power_w: Vec::new(),
            committed_in_use: 0.0,
            chips_running: vec![0.0; np],
            goodput_rate: 0.0,
            hourly,
            totals: Totals::default(),
            lost: BTreeMap::new(),
            latency: Histogram::default(),
            ttft: Histogram::default(),
            jct: Histogram::default(),
            dropped: BTreeMap::new(),
            queued_requests: 0,
            events: 0,
            control_wall: std::time::Duration::ZERO,
            meter: stratus_ledger::Meter::new(),
        };
        for (i, j) in ld.jobs.iter().enumerate() {
            if j.arrival_s < horizon {
                e.push(j.arrival_s, Event::JobArrival(i));
            }
        }
        for (i, f) in sc.faults.iter().enumerate() {
            let (start, dur) = match f {
                Fault::Outage {
                    start_hour,
                    duration_hours,
                    ..
                } => (*start_hour, Some(*duration_hours)),
                Fault::CapacityLoss {
                    start_hour,
                    duration_hours,
                    ..
                } => (*start_hour, *duration_hours),
                Fault::PriceChange { start_hour, .. } => (*start_hour, None),
                Fault::SpotPreemption { .. } => continue,
            };
            e.push(start * 3600.0, Event::FaultStart(i));
            if let Some(d) = dur {
                e.push((start + d) * 3600.0, Event::FaultEnd(i));
            }
        }
        for h in 1..hours {
            e.push(h as f64 * 3600.0, Event::Hour(h));
        }
        e.push(horizon, Event::End);
        e.schedule_tick(0.0);
        e
    }

    fn push(&mut self, t: f64, ev: Event) {
        self.seq += 1;
        self.heap.push(Reverse(Ev {
            t,
            seq: self.seq,
            ev,
        }));
    }

    fn schedule_tick(&mut self, t: f64) {
        if t < self.next_tick {
            self.next_tick = t;
            self.push(t, Event::Tick);
        }
    }

    fn run(&mut self, progress: &(dyn Fn(f64) + Sync)) {
        self.set_carbon_hour(0);
        loop {
            let te = self
                .heap
                .peek()
                .map(|Reverse(e)| e.t)
                .unwrap_or(f64::INFINITY);
            if let Some(&Reverse((tb, si))) = self.stream_heap.peek() {
                let tr = f64::from_bits(tb);
                if tr < te && tr < self.horizon {
                    self.request(tr, si);
                    continue;
                }
            }
            let Some(Reverse(ev)) = self.heap.pop() else {
                break;
            };
            self.events += 1;
            self.integrate(ev.t.min(self.horizon));
            self.now = ev.t;
            match ev.ev {
                Event::End => break,
                Event::Tick => {
                    if ev.t != self.next_tick {
                        continue;
                    }
                    self.tick();
                }
                Event::Transition => {
                    if self.next_transition != Some(ev.t) {
                        continue;
                    }
                    self.next_transition = None;
                    self.driver.advance(Time(self.now));
                    self.sync();
                }
                Event::JobArrival(i) => {
                    self.jobs[i].status = JobStatus::Active;
                    if let Some(d) = self.jobs[i].deadline {
                        self.push(d, Event::JobDeadline(i));
                    }
                    // Arrivals are admitted at the next reconcile (at most one tick away).
                }
                Event::JobFinish(i, v) => {
                    let j = &mut self.jobs[i];
                    if j.version == v && j.status == JobStatus::Active {
                        j.progress = j.work;
                        j.status = JobStatus::Finished(self.now);
                        j.rate = 0.0;
                        self.jct.add((self.now - j.arrival) / 3600.0);
                        self.running_jobs.remove(&i);
                        self.recompute_rates();
                        let t = self.now + self.ctl.config.react_s;
                        self.schedule_tick(t);
                    }
                }
                Event::JobDeadline(i) => {
                    if self.jobs[i].status == JobStatus::Active {
                        self.settle(i);
                        let j = &mut self.jobs[i];
                        j.status = JobStatus::Failed;
                        j.rate = 0.0;
                        j.version += 1;
                        self.running_jobs.remove(&i);
                        self.recompute_rates();
                        let t = self.now + self.ctl.config.react_s;
                        self.schedule_tick(t);
                    }
                }
                Event::FaultStart(i) => self.fault(i, true),
                Event::FaultEnd(i) => self.fault(i, false),
                Event::Preempt(tok) => {
                    self.preempt_scheduled.remove(&tok);
                    if self.driver.preempt(Time(self.now), &tok) {
                        self.sync();
                        let t = self.now + self.ctl.config.react_s;
                        self.schedule_tick(t);
                    }
                }
                Event::Hour(h) => {
                    self.set_carbon_hour(h);
                    progress(self.now / self.horizon);
                }
            }
        }
        self.integrate(self.horizon);
        self.now = self.horizon;
        progress(1.0);
    }

    /// The controller's reconcile, with the active workloads.
    fn tick(&mut self) {
        let mut w = WorkloadSet {
            inference: self.ld.services.inference.clone(),
            ..Default::default()
        };
        match self.sizing {
            // Services on a rate profile are sized for the busiest window until the next
            // reconcile has had time to act (tick + boot).
            Sizing::Forecast => {
                let ahead = self.now + self.ctl.config.tick_s + self.driver.launch_delay_s;
                for (s, svc) in w.inference.iter_mut().zip(&self.services) {
                    if let Some(warp) = &svc.warp {
                        let m = warp.peak(self.now, ahead);
                        for d in &mut s.demand {
                            d.rps.0 *= m;
                        }
                    }
                }
            }
            Sizing::Declared => {}
            // What a gateway in front of the replicas counted, per model and location, into
            // the control plane's estimator.
            Sizing::Traffic => {
                let mut counts = BTreeMap::new();
                for (s, seen) in w.inference.iter().zip(&self.requests_seen) {
                    for (d, n) in s.demand.iter().zip(seen) {
                        *counts.entry((s.model.clone(), d.from.clone())).or_insert(0) += *n;
                    }
                }
                self.autoscaler.observe(Time(self.now), &counts);
                let (sized, changed) = self.autoscaler.size(Time(self.now), &w, &|_, _| 0);
                if changed {
                    self.ctl.mark_dirty();
                }
                w.inference = sized.inference;
            }
        }
        for i in self.running_jobs.clone() {
            self.settle(i);
        }
        for (i, j) in self.jobs.iter().enumerate() {
            if j.status != JobStatus::Active {
                continue;
            }
            let remaining = (j.work - j.progress).max(1e-3);
            match &self.ld.jobs[i].spec {
                JobSpec::Training(t) => {
                    let mut t = t.clone();
                    t.work_chip_hours.0 = remaining;
                    w.training.push(t);
                }
                JobSpec::Batch(b) => {
                    let mut b = b.clone();
                    b.work_chip_hours.0 = remaining;
                    w.batch.push(b);
                }
            }
        }
        // The run starts from the first plan already deployed: a fleet that boots from
        // nothing would charge every policy the same empty first minutes.
        let boot = self.driver.launch_delay_s;
        if self.now == 0.0 {
            self.driver.launch_delay_s = 0.0;
        }
        let wall = std::time::Instant::now();
        self.ctl.tick(Time(self.now), &w, &mut self.driver);
        self.control_wall += wall.elapsed();
        self.driver.launch_delay_s = boot;
        self.driver.advance(Time(self.now));
        self.driver.reap_lost();
        self.sync();
        self.next_tick = f64::INFINITY;
        let t = self.now + self.ctl.config.tick_s;
        self.schedule_tick(t);
    }

    fn fault(&mut self, i: usize, start: bool) {
        let now = Time(self.now);
        match self.ld.scenario.faults[i].clone() {
            Fault::Outage {
                provider, region, ..
            } => {
                let regions: Vec<String> = match (&provider, &region) {
                    (Some(p), _) => self
                        .ld
                        .fleet
                        .providers
                        .iter()
                        .filter(|x| &x.name == p)
                        .flat_map(|x| x.regions.iter().map(|r| region_id(&x.name, &r.name)))
                        .collect(),
                    (None, Some(r)) => vec![r.clone()],
                    _ => vec![],
                };
                for r in regions {
                    self.driver.set_region_down(now, &r, start);
                }
            }
            Fault::CapacityLoss { pool, fraction, .. } => {
                let f = if start { 1.0 - fraction } else { 1.0 };
                self.driver.set_capacity_factor(now, &pool, f);
            }
            Fault::PriceChange {
                provider,
                pool,
                factor,
                ..
            } => {
                let hit = |pid: &str, prov: &str| {
                    pool.as_deref() == Some(pid) || provider.as_deref() == Some(prov)
                };
                for (id, info) in self.pools.iter_mut() {
                    if hit(id, &self.providers[info.provider]) {
                        info.on_demand *= factor;
                        info.spot *= factor;
                    }
                }
                for p in &mut self.ctl.fleet_mut().providers {
                    for r in &mut p.regions {
                        for x in &mut r.pools {
                            if hit(&x.id, &p.name) {
                                x.on_demand_per_node_hour.0 *= factor;
                                if let Some(s) = x.spot_per_node_hour.as_mut() {
                                    s.0 *= factor;
                                }
                            }
                        }
                    }
                }
                self.ctl.mark_dirty();
            }
            Fault::SpotPreemption { .. } => {}
        }
        self.sync();
        let t = self.now + self.ctl.config.react_s;
        self.schedule_tick(t);
    }

    fn set_carbon_hour(&mut self, h: usize) {
        let fleet = self.ctl.fleet_mut();
        for (pi, ri, s) in &self.carbon_regions {
            if s.len() > 1 {
                fleet.providers[*pi].regions[*ri].carbon_g_per_kwh.0 = s[h % s.len()];
            }
        }
    }

    /// Bring job progress up to now.
    fn settle(&mut self, i: usize) {
        let now = self.now;
        let j = &mut self.jobs[i];
        j.progress = (j.progress + j.rate * (now - j.last)).min(j.work);
        j.last = now;
    }

    /// Re-read the driver after any change: job run states, serving tables, rates, and the
    /// next boot/stop transition.
    fn sync(&mut self) {
        let now = self.now;
        // Jobs: which instance (if any) each job runs on now.
        let mut runs: HashMap<usize, (String, f64)> = HashMap::new();
        let mut spot_new: Vec<(String, String, u32)> = Vec::new();
        for inst in self.driver.instances() {
            if inst.state != InstanceState::Running {
                continue;
            }
            let info = &self.pools[&inst.request.pool];
            if let Some(&ji) = self.job_of.get(&inst.request.workload) {
                if self.jobs[ji].status == JobStatus::Active {
                    let chips = match &self.ld.jobs[ji].spec {
                        JobSpec::Training(t) => t.chips,
                        JobSpec::Batch(b) => b.chips,
                    } as f64;
                    let rate = chips * info.accelerator.profile().rel_training / 3600.0;
                    runs.insert(ji, (inst.request.token.clone(), rate));
                }
            }
            if inst.request.category == Category::Spot
                && !self.preempt_scheduled.contains(&inst.request.token)
            {
                spot_new.push((
                    inst.request.token.clone(),
                    inst.request.pool.clone(),
                    inst.request.nodes,
                ));
            }
        }
        let candidates: BTreeSet<usize> = self
            .running_jobs
            .iter()
            .copied()
            .chain(runs.keys().copied())
            .collect();
        for ji in candidates {
            let now_run = runs.get(&ji).cloned();
            let same = match (&self.jobs[ji].token, &now_run) {
                (Some(a), Some((b, _))) => a == b,
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            self.settle(ji);
            // It stopped running on its old instance: lost, or stopped with a checkpoint.
            if let Some(old) = self.jobs[ji].token.take() {
                if let Some(i) = self.driver.instance(&old) {
                    if let InstanceState::Lost(c) = i.state {
                        let j = &mut self.jobs[ji];
                        let since = (now - j.run_start) % j.ckpt_s;
                        let lost = (j.rate * since).min(j.progress);
                        j.progress -= lost;
                        *self.lost.entry(cause_name(c).into()).or_default() += lost;
                    }
                }
            }
            let j = &mut self.jobs[ji];
            j.version += 1;
            match now_run {
                Some((tok, rate)) => {
                    j.token = Some(tok);
                    j.rate = rate;
                    j.run_start = now;
                    let finish = now + (j.work - j.progress) / rate.max(1e-12);
                    let v = j.version;
                    self.running_jobs.insert(ji);
                    self.push(finish, Event::JobFinish(ji, v));
                }
                None => {
                    j.rate = 0.0;
                    self.running_jobs.remove(&ji);
                }
            }
        }
        // Spot preemption clocks for newly running spot instances.
        for (tok, pool, nodes) in spot_new {
            let rate: f64 = self
                .preempt_rate
                .iter()
                .filter(|(p, _)| p == "*" || pool.starts_with(p.as_str()))
                .map(|(_, r)| r)
                .sum();
            self.preempt_scheduled.insert(tok.clone());
            if rate > 0.0 {
                let u = self.preempt_rng.next_f64().max(1e-12);
                let dt = -u.ln() / (rate * nodes as f64) * 3600.0;
                self.push(now + dt, Event::Preempt(tok));
            }
        }
        self.rebuild_serving();
        // The meter reads the driver only here, after every change to it: a job finishing
        // or missing its deadline changes rates but no instance.
        self.meter
            .observe(stratus_control::Time(self.now), self.driver.instances());
        self.recompute_rates();
        let nt = self.driver.next_transition().map(|t| t.0);
        if nt != self.next_transition {
            self.next_transition = nt;
            if let Some(t) = nt {
                self.push(t, Event::Transition);
            }
        }
    }

    /// Serving tables for services whose running replicas changed; queues carry over.
    fn rebuild_serving(&mut self) {
        let mut by_service: Vec<Vec<(String, String, u32)>> = vec![Vec::new(); self.services.len()];
        for inst in self.driver.instances() {
            if inst.state != InstanceState::Running {
                continue;
            }
            if let Some(&si) = self.service_of.get(&inst.request.workload) {
                by_service[si].push((
                    inst.request.token.clone(),
                    inst.request.pool.clone(),
                    inst.request.replicas,
                ));
            }
        }
        let sv = &self.ld.scenario.serving;
        for (si, list) in by_service.into_iter().enumerate() {
            let sig: Vec<String> = list.iter().map(|x| x.0.clone()).collect();
            if sig == self.services[si].signature {
                continue;
            }
            let spec = &self.ld.services.inference[si];
            let mut old: HashMap<String, Group> = self.services[si]
                .groups
                .drain(..)
                .map(|g| (g.token.clone(), g))
                .collect();
            let mut groups = Vec::new();
            for (tok, pool, replicas) in list {
                if let Some(g) = old.remove(&tok) {
                    groups.push(g);
                    continue;
                }
                let info = &self.pools[&pool];
                let rps = spec
                    .replica
                    .get(&info.accelerator)
                    .map(|r| r.rps.0)
                    .unwrap_or(1.0)
                    .max(1e-6);
                let slots = (replicas.max(1) * sv.slots_per_replica.max(1)) as usize;
                let rel = info.accelerator.profile().rel_inference.max(1e-3);
                groups.push(Group {
                    token: tok,
                    lat: info.lat,
                    slots: (0..slots).map(|_| Reverse(0f64.to_bits())).collect(),
                    secs_per_work: sv.slots_per_replica.max(1) as f64
                        / rps
                        / self.services[si].mean_work,
                    prefill_s_per_token: 1.0 / (sv.prefill_tokens_per_s * rel),
                });
            }
            let s = &mut self.services[si];
            s.order = s
                .loc_lat
                .iter()
                .map(|&l| {
                    let mut v: Vec<(usize, f64)> = groups
                        .iter()
                        .enumerate()
                        .map(|(gi, g)| (gi, self.lat.rtt(l, g.lat).0))
                        .collect();
                    v.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                    v
                })
                .collect();
            s.groups = groups;
            s.signature = sig;
        }
    }

    fn recompute_rates(&mut self) {
        let np = self.providers.len();
        self.cost_rate = vec![[0.0; 2]; np];
        self.chips_running = vec![0.0; np];
        self.committed_in_use = 0.0;
        let mut power: BTreeMap<String, f64> = BTreeMap::new();
        let util = self.ctl.policy.utilisation;
        for inst in self.driver.instances() {
            let billed = matches!(
                inst.state,
                InstanceState::Pending { .. }
                    | InstanceState::Running
                    | InstanceState::Stopping { .. }
            );
            if !billed {
                continue;
            }
            let r = &inst.request;
            let info = &self.pools[&r.pool];
            let take = stratus_control::PoolCapacity::of(r);
            self.cost_rate[info.provider][1] += take.spot as f64 * info.spot;
            self.cost_rate[info.provider][0] += take.on_demand as f64 * info.on_demand;
            if !matches!(inst.state, InstanceState::Stopping { .. }) {
                self.committed_in_use += take.committed as f64;
            }
            if inst.state == InstanceState::Running {
                *power.entry(info.region.clone()).or_default() +=
                    r.nodes as f64 * (info.chip_watts_per_node * util + info.host_watts_per_node);
                self.chips_running[info.provider] += (r.nodes * info.chips_per_node) as f64;
            }
        }
        self.power_w = power.into_iter().collect();
        self.goodput_rate = self.running_jobs.iter().map(|&i| self.jobs[i].rate).sum();
    }

    /// Accumulate rates from the last change to `t`, split at hour boundaries.
    fn integrate(&mut self, t: f64) {
        while self.last_int < t {
            let h = (self.last_int / 3600.0) as usize;
            if h >= self.hourly.cost_usd.len() {
                break;
            }
            let end = t.min((h + 1) as f64 * 3600.0);
            let dt = end - self.last_int;
            let dh = dt / 3600.0;
            let mut cost = 0.0;
            for (pi, r) in self.cost_rate.iter().enumerate() {
                let c = (r[0] + r[1] + self.committed_fee_per_h[pi]) * dh;
                cost += c;
                *self
                    .totals
                    .cost_by_provider
                    .entry(self.providers[pi].clone())
                    .or_default() += c;
                *self
                    .totals
                    .cost_by_category
                    .entry("on-demand".into())
                    .or_default() += r[0] * dh;
                *self
                    .totals
                    .cost_by_category
                    .entry("spot".into())
                    .or_default() += r[1] * dh;
                *self
                    .totals
                    .cost_by_category
                    .entry("committed".into())
                    .or_default() += self.committed_fee_per_h[pi] * dh;
                let u = self
                    .hourly
                    .utilisation_by_provider
                    .get_mut(&self.providers[pi]);
                if let Some(u) = u {
                    u[h] += self.chips_running[pi] / self.provider_chips[pi].max(1.0) * dh;
                }
            }
            self.hourly.cost_usd[h] += cost;
            let mut kwh = 0.0;
            let mut grams = 0.0;
            for (rid, w) in &self.power_w {
                let e = w / 1000.0 * dh;
                kwh += e;
                let ci = &self.carbon_regions[self.carbon_of[rid]].2;
                grams += e * ci[h % ci.len()];
            }
            self.hourly.energy_mwh[h] += kwh / 1000.0;
            self.hourly.tco2e[h] += grams / 1e6;
            self.hourly.committed_node_hours_used[h] += self.committed_in_use * dh;
            self.hourly.committed_node_hours_available[h] += self.committed_nodes_total * dh;
            self.hourly.goodput_chip_hours[h] += self.goodput_rate * dt;
            self.last_int = end;
        }
    }

    /// One request: route to the best of the nearest serving regions, queue, account.
    #[inline]
    fn request(&mut self, t: f64, si: usize) {
        self.events += 1;
        let horizon = self.horizon;
        let sv = &self.ld.scenario.serving;
        let reqs = &self.ld.request_traces[self.services[si].trace].1;
        let s = &mut self.services[si];
        let r = reqs[s.idx];
        // Advance this service's stream: the trace loops, time-dilated to the declared rate.
        s.idx += 1;
        if s.idx == reqs.len() {
            s.idx = 0;
            s.base += s.span / s.dilation;
        }
        let virt = s.base + reqs[s.idx].t_s / s.dilation;
        let next = s.warp.as_ref().map_or(virt, |w| w.real(virt));
        self.stream_heap.pop();
        self.stream_heap.push(Reverse((next.to_bits(), si)));

        let h = (t / 3600.0) as usize;
        self.hourly.requests[h] += 1;
        self.totals.requests += 1;
        let u = s.rng.next_f64() * s.loc_cum.last().copied().unwrap_or(0.0);
        let loc = s
            .loc_cum
            .partition_point(|&c| c <= u)
            .min(s.loc_cum.len() - 1);
        self.requests_seen[si][loc] += 1;
        let order = &s.order[loc];
        if order.is_empty() {
            *self.dropped.entry("no replica running".into()).or_default() += 1;
            self.hourly.dropped[h] += 1;
            return;
        }
        let mut best = (usize::MAX, f64::INFINITY, 0.0);
        for &(g, rtt) in order.iter().take(sv.nearest_regions.max(1)) {
            let free = f64::from_bits(s.groups[g].slots.peek().expect("slots").0);
            let wait = (free - t).max(0.0);
            let lat = rtt + wait * 1000.0;
            if lat < best.1 {
                best = (g, lat, wait);
            }
        }
        let (g, lat, wait) = best;
        if wait > sv.max_queue_s {
            *self
                .dropped
                .entry("overloaded (queue > max_queue_s)".into())
                .or_default() += 1;
            self.hourly.dropped[h] += 1;
            return;
        }
        let start = t + wait;
        if start >= horizon {
            self.queued_requests += 1;
            return;
        }
        let grp = &mut s.groups[g];
        let work = r.output_tokens as f64 + sv.prefill_weight * r.input_tokens as f64;
        let done = start + work * grp.secs_per_work;
        grp.slots.pop();
        grp.slots.push(Reverse(done.to_bits()));
        self.totals.served += 1;
        if lat <= s.slo_ms {
            self.totals.within_slo += 1;
            self.hourly.slo_attainment[h] += 1.0;
        }
        self.latency.add(lat);
        self.ttft
            .add(lat + r.input_tokens as f64 * grp.prefill_s_per_token * 1000.0);
    }

    fn finish(mut self) -> PolicyMetrics {
        let end = self.horizon;
        self.meter
            .observe(stratus_control::Time(end), self.driver.instances());
        let usage: Vec<stratus_ledger::Usage> = self
            .meter
            .usage()
            .into_iter()
            .filter(|u| u.start_s < end)
            .map(|mut u| {
                u.end_s = u.end_s.min(end);
                u
            })
            .collect();
        for &i in self.running_jobs.clone().iter() {
            self.settle(i);
        }
        let mut c = Conservation {
            requests: self.totals.requests,
            served: self.totals.served,
            dropped: self.dropped.values().sum(),
            queued: self.queued_requests,
            ..Default::default()
        };
        let mut goodput = 0.0;
        for (i, j) in self.jobs.iter().enumerate() {
            goodput += j.progress;
            match j.status {
                JobStatus::Waiting => continue,
                JobStatus::Finished(_) => c.finished += 1,
                JobStatus::Failed => *c.failed.entry("deadline missed".into()).or_default() += 1,
                JobStatus::Active if self.running_jobs.contains(&i) => c.running += 1,
                JobStatus::Active => c.queued_jobs += 1,
            }
            c.jobs += 1;
        }
        let mut t = self.totals;
        t.cost_usd = self.hourly.cost_usd.iter().sum();
        t.commitment_utilisation = self.hourly.committed_node_hours_used.iter().sum::<f64>()
            / self
                .hourly
                .committed_node_hours_available
                .iter()
                .sum::<f64>()
                .max(1e-9);
        t.slo_attainment = t.within_slo as f64 / (t.requests.max(1)) as f64;
        t.dropped = self.dropped;
        t.latency_ms = self.latency.percentiles();
        t.ttft_ms = self.ttft.percentiles();
        t.goodput_chip_hours = goodput;
        t.lost_chip_hours = self.lost;
        t.jct_hours = self.jct.percentiles();
        t.energy_mwh = self.hourly.energy_mwh.iter().sum();
        t.tco2e = self.hourly.tco2e.iter().sum();
        t.controller = self.ctl.stats.clone();
        let mut hourly = self.hourly;
        for (h, s) in hourly.slo_attainment.iter_mut().enumerate() {
            let n = hourly.requests[h];
            *s = if n == 0 { 1.0 } else { *s / n as f64 };
        }
        PolicyMetrics {
            usage,
            policy: self.policy_name,
            totals: t,
            hourly,
            conservation: c,
        }
    }
}

fn cause_name(c: LossCause) -> &'static str {
    match c {
        LossCause::Preempted => "preemption",
        LossCause::Outage => "outage",
        LossCause::CapacityLoss => "capacity loss",
    }
}

/// What `stratus bench sim` measures of one run.
#[derive(Debug, Clone)]
pub struct RunCost {
    /// Events processed (requests plus control events).
    pub events: u64,
    /// Wall time of the whole run.
    pub wall: std::time::Duration,
    /// Of which in the controller (planning and reconciling).
    pub control: std::time::Duration,
}

/// Run one policy and measure it, for the benchmark.
pub fn run_measured(ld: &Loaded, strategy: Strategy) -> (PolicyMetrics, RunCost) {
    run_measured_sized(ld, strategy, Sizing::Forecast)
}

/// [`run_measured`] with services sized as `sizing` says.
pub fn run_measured_sized(
    ld: &Loaded,
    strategy: Strategy,
    sizing: Sizing,
) -> (PolicyMetrics, RunCost) {
    let t = std::time::Instant::now();
    let mut e = Engine::new(ld, strategy, sizing);
    e.run(&|_| {});
    let (events, control) = (e.events, e.control_wall);
    let m = e.finish();
    (
        m,
        RunCost {
            events,
            wall: t.elapsed(),
            control,
        },
    )
}
