//! Scenario files: what to simulate (fleet, workloads, traces, faults, horizon, policies,
//! seed), and loading everything they name into memory before the clock starts, so a bad
//! input fails fast with its file, line and field.

use crate::trace::{self, PodJob, Request};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use stratus_control::{ControllerConfig, Strategy};
use stratus_model::parse::{self, InputError};
use stratus_model::workload::{Batch, Training};
use stratus_model::{Accelerator, Fleet, WorkloadSet};

fn one() -> f64 {
    1.0
}
fn seed_default() -> u64 {
    1
}
fn default_policies() -> Vec<PolicyName> {
    vec![
        PolicyName::Stratus,
        PolicyName::CheapestFirst,
        PolicyName::SingleProvider,
        PolicyName::RoundRobin,
    ]
}

/// A scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name, shown in reports.
    pub name: String,
    /// What the scenario shows, one paragraph.
    #[serde(default)]
    pub description: String,
    /// Seed of every random draw (user locations, preemptions); same seed, same output.
    #[serde(default = "seed_default")]
    pub seed: u64,
    /// Simulated hours.
    pub horizon_hours: f64,
    /// `builtin` or a fleet file (relative to the scenario file).
    #[serde(default = "builtin")]
    pub fleet: String,
    /// `demo` (the built-in demo set), `none`, or a workload file (relative to the scenario).
    #[serde(default = "demo")]
    pub workloads: String,
    /// Multiplies every inference service's declared demand (and so its replicas and traffic).
    #[serde(default = "one")]
    pub demand_scale: f64,
    /// Real traces that drive demand and carbon.
    #[serde(default)]
    pub traces: Traces,
    /// Faults injected into the simulated providers.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Policies compared, each run on the same traffic and faults.
    #[serde(default = "default_policies")]
    pub policies: Vec<PolicyName>,
    /// The provider of the single-provider policy (default: the one with the most chips).
    #[serde(default)]
    pub single_provider: Option<String>,
    /// Controller timing (the production defaults unless set).
    #[serde(default)]
    pub controller: ControllerConfig,
    /// Boot and shutdown delays of simulated instances.
    #[serde(default)]
    pub provider: ProviderModel,
    /// The token-based serving model.
    #[serde(default)]
    pub serving: ServingModel,
    /// Traffic-driven sizing (policy `stratus_traffic`).
    #[serde(default)]
    pub autoscale: AutoscaleModel,
}

fn builtin() -> String {
    "builtin".into()
}
fn demo() -> String {
    "demo".into()
}

/// Policy names in scenario files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    /// The stratus planner.
    Stratus,
    /// SkyPilot-like cheapest-first with failover.
    CheapestFirst,
    /// Everything on one cloud.
    SingleProvider,
    /// Round-robin across providers.
    RoundRobin,
    /// The stratus planner, services sized for their declared demand only (what a static
    /// workload file gives, blind to the day/night shape).
    StratusDeclared,
    /// The stratus planner, services sized from the traffic they receive, by the control
    /// plane's estimator (`stratus serve --autoscale`).
    StratusTraffic,
}

/// How a policy sizes inference services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    /// The declared mean times the rate profile's peak over the next tick and boot: the
    /// day/night shape known in advance (the other policies' sizing).
    Forecast,
    /// The declared demand as written.
    Declared,
    /// The traffic seen so far, through [`stratus_control::autoscale::Autoscaler`].
    Traffic,
}

/// Traffic-driven sizing's tunables in a scenario (`stratus_traffic`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleModel {
    /// Time constant of the rate's moving average, seconds.
    #[serde(default = "window_default")]
    pub window_s: f64,
    /// Fraction of the replicas' rated throughput the measured rate may use.
    #[serde(default = "utilization_default")]
    pub target_utilization: f64,
    /// Seconds a smaller size must hold before replicas are removed.
    #[serde(default = "scale_down_default")]
    pub scale_down_after_s: f64,
}

fn window_default() -> f64 {
    stratus_control::autoscale::AutoscaleConfig::default().window_s
}
fn utilization_default() -> f64 {
    stratus_control::autoscale::AutoscaleConfig::default().target_utilization
}
fn scale_down_default() -> f64 {
    stratus_control::autoscale::AutoscaleConfig::default().scale_down_after_s
}

impl Default for AutoscaleModel {
    fn default() -> Self {
        AutoscaleModel {
            window_s: window_default(),
            target_utilization: utilization_default(),
            scale_down_after_s: scale_down_default(),
        }
    }
}

impl AutoscaleModel {
    /// As the estimator takes it.
    pub fn config(&self) -> stratus_control::autoscale::AutoscaleConfig {
        stratus_control::autoscale::AutoscaleConfig {
            window_s: self.window_s,
            target_utilization: self.target_utilization,
            scale_down_after_s: self.scale_down_after_s,
        }
    }
}

/// Trace inputs; file paths are relative to the data directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traces {
    /// LLM request traces driving inference services.
    #[serde(default)]
    pub inference: Vec<InferenceTrace>,
    /// GPU cluster job traces driving training and batch jobs.
    #[serde(default)]
    pub jobs: Vec<JobTrace>,
    /// Hourly grid carbon series.
    #[serde(default)]
    pub carbon: Vec<CarbonTrace>,
    /// Real clusters added to the fleet as owned sites, shaped by their node lists.
    #[serde(default)]
    pub clusters: Vec<ClusterTrace>,
}

fn owned_pue() -> f64 {
    1.2
}
fn owned_host_watts() -> f64 {
    500.0
}

/// A cluster node list (Alibaba GPU 2023 `openb_node_list_*.csv`) as an owned site: one region
/// of a new provider, one pool per (GPU model, GPUs per node), all of it already paid for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTrace {
    /// The node list.
    pub file: String,
    /// Provider name of the site (must not clash with the fleet's).
    pub provider: String,
    /// Region name of the site.
    pub region: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Jurisdictions (country code first).
    #[serde(default)]
    pub jurisdictions: Vec<String>,
    /// Grid carbon intensity, g/kWh.
    pub carbon_g_per_kwh: f64,
    /// Power usage effectiveness.
    #[serde(default = "owned_pue")]
    pub pue: f64,
    /// Facility power cap, MW.
    pub power_cap_mw: f64,
    /// Amortised cost per node-hour, paid used or not.
    #[serde(default)]
    pub owned_per_node_hour: f64,
    /// Host watts per node beyond the GPUs.
    #[serde(default = "owned_host_watts")]
    pub host_watts_per_node: f64,
    /// Trace GPU model → accelerator (the trace's `G1`–`G3` are undisclosed; models left out
    /// are skipped and counted).
    pub models: BTreeMap<String, Accelerator>,
}

/// One LLM request trace and the services it drives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceTrace {
    /// `.csv` (Azure LLM 2023) or `.jsonl` (Mooncake).
    pub file: String,
    /// Services driven by it; empty = every service no other trace names.
    #[serde(default)]
    pub services: Vec<String>,
    /// A ServeGen rate-series directory (relative to the data directory) whose day/night
    /// shape modulates the arrival rate around the declared mean; none: a constant rate.
    #[serde(default)]
    pub rate_profile: Option<String>,
    /// Hour of the rate profile at which the simulation starts.
    #[serde(default)]
    pub profile_start_hour: f64,
}

fn eight() -> u32 {
    8
}
fn max_jobs_default() -> usize {
    2000
}
fn max_hours_default() -> f64 {
    48.0
}

/// One GPU cluster job trace (Alibaba GPU v2023 pod list).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTrace {
    /// The pod list.
    pub file: String,
    /// Accelerators the jobs may use (the trace's own GPU models are a decade old).
    pub accelerators: Vec<Accelerator>,
    /// Simulated seconds per trace second of arrival time (compresses the 149-day trace).
    #[serde(default = "one")]
    pub time_scale: f64,
    /// Chips per trace GPU (a trace GPU stands for a node of today's chips by default).
    #[serde(default = "eight")]
    pub chips_per_gpu: u32,
    /// Jobs taken at most, in arrival order.
    #[serde(default = "max_jobs_default")]
    pub max_jobs: usize,
    /// Job durations are capped at this many hours.
    #[serde(default = "max_hours_default")]
    pub max_hours: f64,
}

fn year_default() -> i32 {
    2020
}

/// An hourly carbon series and the regions on its grid.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarbonTrace {
    /// The series (lets-wait-awhile format).
    pub file: String,
    /// Jurisdiction code of the grid (`FR`, `GB`, `DE`): every region listing it follows the
    /// series.
    pub jurisdiction: String,
    /// Calendar year taken from the series.
    #[serde(default = "year_default")]
    pub year: i32,
    /// Day of the year at which the simulation starts (0 = 1 January).
    #[serde(default)]
    pub start_day: u32,
}

/// A fault. Times in hours from the start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// A region or a whole provider goes dark.
    Outage {
        /// Whole provider.
        #[serde(default)]
        provider: Option<String>,
        /// One region (`provider:region`).
        #[serde(default)]
        region: Option<String>,
        /// Start, hours.
        start_hour: f64,
        /// Length, hours.
        duration_hours: f64,
    },
    /// A pool keeps only part of its nodes.
    CapacityLoss {
        /// Pool id.
        pool: String,
        /// Share of the nodes lost (0–1).
        fraction: f64,
        /// Start, hours.
        start_hour: f64,
        /// Length, hours (forever if absent).
        #[serde(default)]
        duration_hours: Option<f64>,
    },
    /// Spot instances are reclaimed at a rate.
    SpotPreemption {
        /// Pool id prefix (`aws:`, `gcp:us-central1`, `*` for all).
        pools: String,
        /// Preemptions per node-hour.
        per_node_hour: f64,
    },
    /// Prices change.
    PriceChange {
        /// Provider (all its pools).
        #[serde(default)]
        provider: Option<String>,
        /// Or one pool.
        #[serde(default)]
        pool: Option<String>,
        /// Multiplier on on-demand and spot prices.
        factor: f64,
        /// When, hours.
        start_hour: f64,
    },
}

fn launch_default() -> f64 {
    300.0
}
fn stop_default() -> f64 {
    60.0
}

/// How simulated instances behave.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderModel {
    /// Seconds from launch to running.
    #[serde(default = "launch_default")]
    pub launch_s: f64,
    /// Seconds from stop to released.
    #[serde(default = "stop_default")]
    pub stop_s: f64,
}

impl Default for ProviderModel {
    fn default() -> Self {
        ProviderModel {
            launch_s: launch_default(),
            stop_s: stop_default(),
        }
    }
}

/// The token-based serving model (README, "Simulator").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingModel {
    /// Concurrent sequences per replica (continuous batching slots).
    #[serde(default = "slots_default")]
    pub slots_per_replica: u32,
    /// Work of one prompt token relative to one generated token.
    #[serde(default = "prefill_weight_default")]
    pub prefill_weight: f64,
    /// Prompt tokens per second of prefill on an H100-class replica, for time to first token.
    #[serde(default = "prefill_rate_default")]
    pub prefill_tokens_per_s: f64,
    /// Requests that would wait longer than this are dropped as overloaded.
    #[serde(default = "max_queue_default")]
    pub max_queue_s: f64,
    /// Nearest regions (by RTT) considered per request.
    #[serde(default = "nearest_default")]
    pub nearest_regions: usize,
}

fn slots_default() -> u32 {
    16
}
fn prefill_weight_default() -> f64 {
    1.0 / 16.0
}
fn prefill_rate_default() -> f64 {
    10_000.0
}
fn max_queue_default() -> f64 {
    30.0
}
fn nearest_default() -> usize {
    4
}

impl Default for ServingModel {
    fn default() -> Self {
        ServingModel {
            slots_per_replica: slots_default(),
            prefill_weight: prefill_weight_default(),
            prefill_tokens_per_s: prefill_rate_default(),
            max_queue_s: max_queue_default(),
            nearest_regions: nearest_default(),
        }
    }
}

/// A job with its arrival time.
#[derive(Debug, Clone)]
pub enum JobSpec {
    /// A training gang.
    Training(Training),
    /// A deferrable batch job.
    Batch(Batch),
}

impl JobSpec {
    /// Workload name.
    pub fn name(&self) -> &str {
        match self {
            JobSpec::Training(t) => &t.name,
            JobSpec::Batch(b) => &b.name,
        }
    }
}

/// A job and when it arrives.
#[derive(Debug, Clone)]
pub struct ArrivingJob {
    /// Seconds from the start.
    pub arrival_s: f64,
    /// The workload.
    pub spec: JobSpec,
}

/// Everything a run needs, loaded and checked.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The scenario as written.
    pub scenario: Scenario,
    /// The fleet.
    pub fleet: Fleet,
    /// Inference services (demand already scaled).
    pub services: WorkloadSet,
    /// Jobs in arrival order.
    pub jobs: Vec<ArrivingJob>,
    /// Per service index: the request trace driving it.
    pub service_trace: Vec<usize>,
    /// Loaded request traces.
    pub request_traces: Vec<(String, Vec<Request>)>,
    /// Per request trace: its rate profile (mean 1, 600-s windows from the simulation start).
    pub profiles: Vec<Option<Vec<f64>>>,
    /// Region id → hourly intensity series starting at the simulation start.
    pub carbon: BTreeMap<String, Vec<f64>>,
    /// Strategies in scenario order.
    pub strategies: Vec<Strategy>,
    /// How each strategy sizes inference services (same order).
    pub sizings: Vec<Sizing>,
    /// GPU pods skipped from job traces (no deletion time or no duration).
    pub skipped_pods: usize,
    /// Cluster nodes left out for lack of a model mapping.
    pub skipped_nodes: usize,
}

/// An error reading a file the scenario names: one without a line of its own (the file is
/// missing, unreadable, empty) is reported at the scenario's line that names it.
fn named(e: InputError, file: &str, text: &str, field: &str, needle: &str) -> InputError {
    if e.line.is_some() {
        return e;
    }
    InputError {
        file: file.into(),
        line: (!needle.is_empty())
            .then(|| parse::find_line(text, needle, 0))
            .flatten()
            .or_else(|| parse::locate(text, field)),
        field: Some(field.into()),
        reason: format!("{}: {}", e.file, e.reason),
    }
}

/// An error about `field`, at the line that writes it.
fn bad(file: &str, text: &str, field: &str, reason: impl Into<String>) -> InputError {
    InputError {
        file: file.into(),
        line: parse::locate(text, field),
        field: Some(field.into()),
        reason: reason.into(),
    }
}

/// Read and check a scenario file; every file it names is loaded now.
pub fn load(path: &Path, data_dir: &Path) -> Result<Loaded, InputError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| InputError {
        file: file.clone(),
        line: None,
        field: None,
        reason: format!("cannot read: {e}"),
    })?;
    let sc: Scenario = parse::from_str(&file, &text, parse::Format::from_path(&file))?;
    let base = path.parent().unwrap_or(Path::new("."));
    resolve(sc, &file, &text, base, data_dir)
}

/// Check a parsed scenario and load what it names (`base` resolves fleet and workload paths,
/// `data_dir` trace paths).
pub fn resolve(
    sc: Scenario,
    file: &str,
    text: &str,
    base: &Path,
    data_dir: &Path,
) -> Result<Loaded, InputError> {
    let at = |field: &str, needle: &str, reason: String| InputError {
        file: file.into(),
        line: (!needle.is_empty())
            .then(|| parse::find_line(text, needle, 0))
            .flatten()
            .or_else(|| parse::locate(text, field)),
        field: Some(field.into()),
        reason,
    };
    if !(sc.horizon_hours > 0.0 && sc.horizon_hours <= 24.0 * 366.0) {
        return Err(at(
            "horizon_hours",
            "horizon_hours",
            format!("must be in (0, 8784] hours, got {}", sc.horizon_hours),
        ));
    }
    if !(sc.demand_scale > 0.0 && sc.demand_scale.is_finite()) {
        return Err(at(
            "demand_scale",
            "demand_scale",
            "must be a positive number".into(),
        ));
    }
    let mut fleet = if sc.fleet == "builtin" {
        stratus_catalog::builtin().clone()
    } else {
        parse::load_fleet(&base.join(&sc.fleet))
            .map_err(|e| named(e, file, text, "fleet", &sc.fleet))?
    };
    let mut skipped_nodes = 0;
    for (ci, c) in sc.traces.clusters.iter().enumerate() {
        let field = format!("traces.clusters[{ci}]");
        if fleet.providers.iter().any(|p| p.name == c.provider) {
            return Err(at(
                &format!("{field}.provider"),
                &c.provider,
                format!("provider `{}` is already in the fleet", c.provider),
            ));
        }
        let numbers = [
            c.carbon_g_per_kwh,
            c.power_cap_mw,
            c.owned_per_node_hour,
            c.host_watts_per_node,
        ];
        if numbers.iter().any(|x| !(positive(*x) || *x == 0.0))
            || c.pue < 1.0
            || !(-90.0..=90.0).contains(&c.lat)
            || !(-180.0..=180.0).contains(&c.lon)
        {
            return Err(at(
                &field,
                &c.file,
                "carbon, power cap, prices and watts must be >= 0, pue >= 1, lat/lon in range"
                    .into(),
            ));
        }
        let classes = trace::load_node_list(&data_dir.join(&c.file))
            .map_err(|e| named(e, file, text, &format!("{field}.file"), &c.file))?;
        let mut pools = Vec::new();
        for k in classes {
            let Some(&acc) = c.models.get(&k.model) else {
                skipped_nodes += k.count as usize;
                continue;
            };
            let kind = format!("{}x{}", k.model, k.gpus);
            pools.push(stratus_model::fleet::Pool {
                id: format!("{}:{}:{kind}", c.provider, c.region),
                instance_type: kind,
                accelerator: acc,
                chips_per_node: k.gpus,
                nodes: k.count,
                on_demand_per_node_hour: stratus_model::units::UsdPerHour(c.owned_per_node_hour),
                spot_per_node_hour: None,
                spot_nodes: 0,
                committed: Some(stratus_model::fleet::Committed {
                    name: format!("{}-owned", c.provider),
                    nodes: k.count,
                    rate_per_node_hour: stratus_model::units::UsdPerHour(c.owned_per_node_hour),
                    marginal_per_node_hour: stratus_model::units::UsdPerHour(0.0),
                }),
                domain_chips: k.gpus,
                host_watts_per_node: stratus_model::units::Watts(c.host_watts_per_node),
            });
        }
        if pools.is_empty() {
            return Err(at(
                &format!("{field}.models"),
                "models",
                "no node of the list has a mapped model".into(),
            ));
        }
        fleet.providers.push(stratus_model::fleet::Provider {
            name: c.provider.clone(),
            regions: vec![stratus_model::fleet::Region {
                name: c.region.clone(),
                location: format!("cluster from {}", c.file),
                jurisdictions: c.jurisdictions.clone(),
                lat: c.lat,
                lon: c.lon,
                carbon_g_per_kwh: stratus_model::units::GramsPerKwh(c.carbon_g_per_kwh),
                carbon_hourly: None,
                pue: c.pue,
                power_cap_mw: stratus_model::units::Megawatts(c.power_cap_mw),
                pools,
            }],
        });
    }
    let mut workloads = match sc.workloads.as_str() {
        "demo" => stratus_catalog::scenario::demo_workloads(&fleet)?,
        "none" => WorkloadSet::default(),
        p => parse::load_workloads(&base.join(p), &fleet)
            .map_err(|e| named(e, file, text, "workloads", p))?,
    };
    for s in &mut workloads.inference {
        for d in &mut s.demand {
            d.rps.0 *= sc.demand_scale;
        }
    }
    let mut jobs: Vec<ArrivingJob> = workloads
        .training
        .drain(..)
        .map(|t| ArrivingJob {
            arrival_s: 0.0,
            spec: JobSpec::Training(t),
        })
        .chain(workloads.batch.drain(..).map(|b| ArrivingJob {
            arrival_s: 0.0,
            spec: JobSpec::Batch(b),
        }))
        .collect();
    let services = workloads;

    // Request traces → services.
    let mut request_traces = Vec::new();
    let mut profiles = Vec::new();
    let mut service_trace = vec![usize::MAX; services.inference.len()];
    for (ti, t) in sc.traces.inference.iter().enumerate() {
        let reqs = trace::load_llm_trace(&data_dir.join(&t.file)).map_err(|e| {
            named(
                e,
                file,
                text,
                &format!("traces.inference[{ti}].file"),
                &t.file,
            )
        })?;
        for name in &t.services {
            match services.inference.iter().position(|s| &s.name == name) {
                Some(i) => service_trace[i] = ti,
                None => {
                    return Err(at(
                        &format!("traces.inference[{ti}].services"),
                        name,
                        format!("no inference service named `{name}` in the workloads"),
                    ))
                }
            }
        }
        request_traces.push((t.file.clone(), reqs));
        profiles.push(match &t.rate_profile {
            None => None,
            Some(dir) => {
                let p = trace::load_rate_profile(&data_dir.join(dir)).map_err(|e| {
                    named(
                        e,
                        file,
                        text,
                        &format!("traces.inference[{ti}].rate_profile"),
                        dir,
                    )
                })?;
                if !(positive(t.profile_start_hour) || t.profile_start_hour == 0.0) {
                    return Err(at(
                        &format!("traces.inference[{ti}].profile_start_hour"),
                        "profile_start_hour",
                        "must be >= 0".into(),
                    ));
                }
                let start =
                    (t.profile_start_hour * 3600.0 / trace::PROFILE_WINDOW_S) as usize % p.len();
                Some(
                    p[start..]
                        .iter()
                        .chain(p[..start].iter())
                        .copied()
                        .collect(),
                )
            }
        });
    }
    if !services.inference.is_empty() {
        if request_traces.is_empty() {
            return Err(bad(
                file,
                text,
                "traces.inference",
                "the workloads have inference services but no request trace drives them",
            ));
        }
        let default = sc
            .traces
            .inference
            .iter()
            .position(|t| t.services.is_empty())
            .unwrap_or(0);
        for t in &mut service_trace {
            if *t == usize::MAX {
                *t = default;
            }
        }
    }

    // Job traces.
    let mut skipped_pods = 0;
    for (ji, jt) in sc.traces.jobs.iter().enumerate() {
        if jt.accelerators.is_empty() {
            return Err(at(
                &format!("traces.jobs[{ji}].accelerators"),
                "accelerators",
                "list at least one accelerator".into(),
            ));
        }
        if !positive(jt.time_scale) || jt.chips_per_gpu == 0 || !positive(jt.max_hours) {
            return Err(at(
                &format!("traces.jobs[{ji}]"),
                &jt.file,
                "time_scale, chips_per_gpu and max_hours must be positive".into(),
            ));
        }
        let (pods, skipped) = trace::load_pod_list(&data_dir.join(&jt.file))
            .map_err(|e| named(e, file, text, &format!("traces.jobs[{ji}].file"), &jt.file))?;
        skipped_pods += skipped;
        let horizon_s = sc.horizon_hours * 3600.0;
        jobs.extend(
            pods.iter()
                .filter(|p| p.arrival_s * jt.time_scale < horizon_s)
                .take(jt.max_jobs)
                .map(|p| pod_job(p, jt)),
        );
    }
    jobs.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));

    // Carbon series → regions.
    let mut carbon = BTreeMap::new();
    for (ci, ct) in sc.traces.carbon.iter().enumerate() {
        let series = trace::load_carbon_series(&data_dir.join(&ct.file), ct.year).map_err(|e| {
            named(
                e,
                file,
                text,
                &format!("traces.carbon[{ci}].file"),
                &ct.file,
            )
        })?;
        let start = (ct.start_day as usize * 24).min(series.len());
        let shifted: Vec<f64> = series[start..]
            .iter()
            .chain(series[..start].iter())
            .copied()
            .collect();
        let mut n = 0;
        for (p, r) in fleet.regions() {
            if r.jurisdictions
                .iter()
                .any(|j| j.eq_ignore_ascii_case(&ct.jurisdiction))
            {
                carbon.insert(
                    stratus_model::fleet::region_id(&p.name, &r.name),
                    shifted.clone(),
                );
                n += 1;
            }
        }
        if n == 0 {
            return Err(at(
                &format!("traces.carbon[{ci}].jurisdiction"),
                &ct.jurisdiction,
                format!("no region of the fleet lies in `{}`", ct.jurisdiction),
            ));
        }
    }

    // Policies.
    let single = match &sc.single_provider {
        Some(p) => {
            if !fleet.providers.iter().any(|x| &x.name == p) {
                return Err(at(
                    "single_provider",
                    "single_provider",
                    format!("no provider `{p}` in the fleet"),
                ));
            }
            p.clone()
        }
        None => fleet
            .providers
            .iter()
            .max_by_key(|p| {
                p.regions
                    .iter()
                    .flat_map(|r| &r.pools)
                    .map(|x| x.nodes as u64 * x.chips_per_node as u64)
                    .sum::<u64>()
            })
            .map(|p| p.name.clone())
            .unwrap_or_default(),
    };
    let strategies = sc
        .policies
        .iter()
        .map(|p| match p {
            PolicyName::Stratus | PolicyName::StratusDeclared | PolicyName::StratusTraffic => {
                Strategy::Stratus
            }
            PolicyName::CheapestFirst => Strategy::CheapestFirst,
            PolicyName::SingleProvider => Strategy::SingleProvider(single.clone()),
            PolicyName::RoundRobin => Strategy::RoundRobin,
        })
        .collect();
    let sizings = sc
        .policies
        .iter()
        .map(|p| match p {
            PolicyName::StratusDeclared => Sizing::Declared,
            PolicyName::StratusTraffic => Sizing::Traffic,
            _ => Sizing::Forecast,
        })
        .collect();
    let a = sc.autoscale;
    if !(a.window_s > 0.0 && a.window_s.is_finite()) {
        return Err(bad(
            file,
            text,
            "autoscale.window_s",
            "must be a positive number of seconds",
        ));
    }
    if !(a.target_utilization > 0.0 && a.target_utilization <= 1.0) {
        return Err(bad(
            file,
            text,
            "autoscale.target_utilization",
            "must be in (0, 1]",
        ));
    }
    if !(a.scale_down_after_s >= 0.0 && a.scale_down_after_s.is_finite()) {
        return Err(bad(
            file,
            text,
            "autoscale.scale_down_after_s",
            "must be a non-negative number of seconds",
        ));
    }
    for (fi, f) in sc.faults.iter().enumerate() {
        check_fault(f, fi, &fleet).map_err(|r| bad(file, text, &format!("faults[{fi}]"), r))?;
    }
    Ok(Loaded {
        scenario: sc,
        fleet,
        services,
        jobs,
        service_trace,
        request_traces,
        profiles,
        carbon,
        strategies,
        sizings,
        skipped_pods,
        skipped_nodes,
    })
}

/// A finite number above zero (NaN is not).
fn positive(x: f64) -> bool {
    x > 0.0 && x.is_finite()
}

fn check_fault(f: &Fault, _i: usize, fleet: &Fleet) -> Result<(), String> {
    let provider_ok = |p: &str| fleet.providers.iter().any(|x| x.name == p);
    let region_ok = |r: &str| {
        fleet
            .regions()
            .any(|(p, x)| stratus_model::fleet::region_id(&p.name, &x.name) == r)
    };
    let pool_ok = |id: &str| fleet.pools().any(|(_, _, p)| p.id == id);
    match f {
        Fault::Outage {
            provider,
            region,
            start_hour,
            duration_hours,
        } => {
            match (provider, region) {
                (Some(p), None) if provider_ok(p) => {}
                (None, Some(r)) if region_ok(r) => {}
                (Some(p), None) => return Err(format!("no provider `{p}` in the fleet")),
                (None, Some(r)) => return Err(format!("no region `{r}` in the fleet")),
                _ => return Err("an outage names exactly one of `provider` or `region`".into()),
            }
            if *start_hour < 0.0 || *duration_hours <= 0.0 {
                return Err("start_hour must be >= 0 and duration_hours > 0".into());
            }
        }
        Fault::CapacityLoss { pool, fraction, .. } => {
            if !pool_ok(pool) {
                return Err(format!("no pool `{pool}` in the fleet"));
            }
            if !(0.0..=1.0).contains(fraction) {
                return Err(format!("fraction must be in [0, 1], got {fraction}"));
            }
        }
        Fault::SpotPreemption { per_node_hour, .. } => {
            if !(positive(*per_node_hour) || *per_node_hour == 0.0) {
                return Err("per_node_hour must be >= 0".into());
            }
        }
        Fault::PriceChange {
            provider,
            pool,
            factor,
            ..
        } => {
            if !positive(*factor) {
                return Err("factor must be > 0".into());
            }
            match (provider, pool) {
                (Some(p), None) if provider_ok(p) => {}
                (None, Some(x)) if pool_ok(x) => {}
                _ => return Err("a price change names one existing `provider` or `pool`".into()),
            }
        }
    }
    Ok(())
}

/// A pod from the trace as a job: BE pods are deferrable spot batch jobs, the rest training
/// gangs; work is the pod's GPU-hours at today's chips, in H100-equivalent chip-hours.
fn pod_job(p: &PodJob, jt: &JobTrace) -> ArrivingJob {
    let chips = p.gpus.max(1) * jt.chips_per_gpu;
    let hours = (p.duration_s / 3600.0).min(jt.max_hours);
    let images = jt
        .accelerators
        .iter()
        .map(|a| (a.arch(), format!("trace/{:?}", a.arch()).to_lowercase()))
        .collect();
    let name = format!("pod-{}", p.name);
    let work = stratus_model::units::ChipHours(chips as f64 * hours);
    let spec = if p.qos.eq_ignore_ascii_case("BE") {
        JobSpec::Batch(Batch {
            name,
            priority: 10,
            chips,
            accelerators: jt.accelerators.clone(),
            images,
            work_chip_hours: work,
            deadline_hours: None,
            max_usd_per_chip_hour: None,
            spot: true,
            residency: vec![],
        })
    } else {
        JobSpec::Training(Training {
            name,
            priority: 100,
            chips,
            accelerators: jt.accelerators.clone(),
            images,
            scope: Default::default(),
            work_chip_hours: work,
            checkpoint_minutes: 30.0,
            deadline_hours: None,
            data_region: None,
            residency: vec![],
            spot: false,
        })
    };
    ArrivingJob {
        arrival_s: p.arrival_s * jt.time_scale,
        spec,
    }
}
