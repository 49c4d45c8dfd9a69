//! `stratus`: argument parsing and presentation only; every decision is made in the library
//! crates.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad input (a file, a flag value).

mod bench;
mod capacity;
mod carbon;
mod client;
mod demo_serve;
mod dst;
mod gateway;
mod ledger;
mod present;
mod sim;

use anyhow::{Context, Result};

/// mimalloc: the gateway allocates per request, and glibc's allocator cost it about a tenth
/// of its throughput in `stratus bench gateway`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand, ValueEnum};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use stratus_model::{parse, Fleet, InputError, UsdPerTonne, WorkloadSet};
use stratus_plan::{Algorithm, Policy};

/// `stratus plan --time-limit`: the clock the planner itself never reads.
struct Deadline(Instant);

impl stratus_plan::Interrupt for Deadline {
    fn stop(&self) -> bool {
        Instant::now() >= self.0
    }

    fn time_left(&self) -> Option<Duration> {
        Some(self.0.saturating_duration_since(Instant::now()))
    }
}

/// What `stratus --help` opens with: what stratus is (the package description is the crate's
/// own, internal one).
const ABOUT: &str = "stratus: a multi-cloud control plane for AI compute. It places training \
jobs, inference services and batch work across clouds and regions at once (cost, latency, \
carbon, power, commitments), runs the plan on simulated providers, local processes, Slurm or \
EC2, serves inference through its gateway, and bills what ran.";

const LONG_ABOUT: &str = "stratus: a multi-cloud control plane for AI compute.

It places training jobs, inference services and batch work across clouds and regions at once \
(cost, latency, carbon, power caps, commitments), explains every placement, runs the plan on \
simulated providers, local processes, Slurm or EC2 without ever launching a unit twice, serves \
inference through an OpenAI-compatible gateway, and bills what ran as FOCUS rows.

Start with `stratus demo`, then `stratus plan --workloads FILE`, `stratus serve` and \
`stratus sim run SCENARIO --out DIR`. Exit codes: 0 success, 1 failure, 2 bad input.";

#[derive(Parser)]
#[command(name = "stratus", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process: a large variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Plan a realistic workload set (frontier training, fine-tunes, world-wide inference) on
    /// the built-in fleet and print a summary.
    Demo {
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutFormat::Table)]
        format: OutFormat,
        /// Instead of printing: run the control plane with the dashboard on the demo (see
        /// `stratus demo --serve --help`) until interrupted.
        #[arg(long)]
        serve: bool,
        /// Address the dashboard listens on, with `--serve`.
        #[arg(long, default_value = "127.0.0.1:8470")]
        listen: std::net::SocketAddr,
        /// Seconds before the simulated outage, with `--serve`.
        #[arg(long, default_value_t = 90.0)]
        outage_after: f64,
        /// Seconds the outage lasts, with `--serve`.
        #[arg(long, default_value_t = 180.0)]
        outage_for: f64,
    },
    /// Plan a workload file on a fleet.
    Plan {
        /// Fleet file (YAML, TOML or JSON); the built-in fleet when omitted.
        #[arg(long)]
        fleet: Option<PathBuf>,
        /// Workload file (YAML, TOML or JSON).
        #[arg(long)]
        workloads: PathBuf,
        /// Placement policy: `stratus` or `cheapest-first`.
        #[arg(long, default_value = "stratus")]
        policy: String,
        /// Carbon shadow price, $/tCO2e.
        #[arg(long)]
        carbon_price: Option<f64>,
        /// A previous plan (JSON from `--format json`): moving a unit away from where it runs
        /// is charged its migration cost, so small savings do not cause churn.
        #[arg(long)]
        previous: Option<PathBuf>,
        /// Work budget of the search (simplex iterations, nodes and sub-problem variables;
        /// 0: no neighbourhood search). Deterministic: the same input and budget give the
        /// same plan, byte for byte.
        #[arg(long)]
        budget: Option<u64>,
        /// Wall-clock safety net, seconds (0: none): past it the search stops and the best
        /// plan so far is printed, every rule kept, with `stopped_early` in the JSON and a
        /// warning on stderr. The budget, not this, is what normally bounds the search.
        #[arg(long, default_value_t = 60.0)]
        time_limit: f64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutFormat::Table)]
        format: OutFormat,
    },
    /// Inspect the fleet catalog.
    Fleet {
        #[command(subcommand)]
        cmd: FleetCmd,
    },
    /// Build fleet files from public data.
    Catalog {
        #[command(subcommand)]
        cmd: CatalogCmd,
    },
    /// Long-range capacity: a facility-power ramp turned into systems, sites, energy,
    /// emissions and money, and the first constraint that breaks.
    Capacity {
        #[command(subcommand)]
        cmd: CapacityCmd,
    },
    /// Carbon-aware shifting of deferrable batch jobs on real hourly grid intensity.
    Carbon {
        #[command(subcommand)]
        cmd: CarbonCmd,
    },
    /// Simulate a scenario: real traces and faults against the fleet, every policy compared.
    Sim {
        #[command(subcommand)]
        cmd: SimCmd,
    },
    /// Run the control plane: HTTP API, persistence and the reconcile loop.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8470")]
        listen: std::net::SocketAddr,
        /// Database: `sqlite://FILE` (created if missing) or `postgres://…`.
        #[arg(long, default_value = "sqlite://stratus.db")]
        db: String,
        /// A file holding an admin API token, stored (hashed) at start. Also read from
        /// STRATUS_ADMIN_TOKEN.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Seconds between reconciles.
        #[arg(long, default_value_t = 10.0)]
        tick: f64,
        /// Seconds the simulated providers take to boot an instance.
        #[arg(long, default_value_t = 5.0)]
        boot: f64,
        /// Provider back end: `sim` (simulated providers in-process), `local` (processes),
        /// `slurm` (Slurm clusters, see --slurm-cluster), or `aws` (EC2 through the AWS SDK;
        /// built with `--features aws`; credentials from AWS_ACCESS_KEY_ID and
        /// AWS_SECRET_ACCESS_KEY).
        #[arg(long, default_value = "sim")]
        driver: String,
        /// A Slurm cluster standing for a provider of the fleet, `PROVIDER=/path/slurm.conf`
        /// (repeat for each; `--driver slurm`).
        #[arg(long)]
        slurm_cluster: Vec<String>,
        /// EC2 endpoint override (e.g. a moto server on 127.0.0.1).
        #[arg(long)]
        aws_endpoint: Option<String>,
        /// AMI every EC2 instance boots.
        #[arg(long, default_value = "ami-760aaa0f")]
        aws_image: String,
        /// State directory of the local driver.
        #[arg(long, default_value = "stratus-local")]
        state_dir: PathBuf,
        /// `sh -c` script each local instance runs (default: a counter that checkpoints its
        /// progress into $STRATUS_WORKDIR/progress and resumes from it).
        #[arg(long)]
        job: Option<String>,
        /// `sh -c` template each local inference replica runs, `{port}` standing for the port
        /// the driver gives it (e.g. `stratus mock-replica --listen 127.0.0.1:{port}`); the
        /// replica is advertised to gateways once it answers `GET /health`. Without it,
        /// replicas run the job script and serve nothing.
        #[arg(long)]
        replica_command: Option<String>,
        /// Fleet file (default: the built-in fleet).
        #[arg(long)]
        fleet: Option<PathBuf>,
        /// A stratus gateway's metrics URL (`http://ADDR/metrics`) for the dashboard's
        /// inference page and traffic-driven sizing.
        #[arg(long)]
        gateway_metrics: Option<String>,
        /// Size inference services from the requests the gateway sees per model and user
        /// location (`--gateway-metrics`), not their declared demand (the prior until traffic
        /// is seen).
        #[arg(long, requires = "gateway_metrics")]
        autoscale: bool,
        /// Seconds: time constant of the request rate's moving average.
        #[arg(long, default_value_t = 30.0)]
        autoscale_window: f64,
        /// Fraction of the replicas' rated throughput the measured rate may use.
        #[arg(long, default_value_t = 0.7)]
        target_utilization: f64,
        /// Seconds a smaller size must hold before replicas are removed.
        #[arg(long, default_value_t = 120.0)]
        scale_down_after: f64,
        /// Directory of `stratus sim run` outputs for the dashboard's simulations page.
        #[arg(long)]
        reports: Option<PathBuf>,
        /// Commitments file the ledger bills against (default: the fleet's reservations).
        #[arg(long)]
        commitments: Option<PathBuf>,
    },
    /// Send a workload file to the server (create or replace, all or none).
    Apply {
        /// Workload file (YAML or JSON).
        #[arg(short, long)]
        file: PathBuf,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Read from the server: workloads, the current plan, plan history, or the actions log.
    Get {
        /// What to get.
        #[arg(value_enum)]
        what: client::What,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// The server's counters, instances and current plan.
    Status {
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// List, create and revoke the server's API tokens (admins).
    Tokens {
        #[command(subcommand)]
        cmd: client::TokensCmd,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Run the inference gateway: an OpenAI-compatible streaming proxy over the replicas in
    /// its configuration file.
    Gateway {
        /// Configuration file (YAML, TOML or JSON); optional with --control-plane.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A stratus control plane (`http://host:port`) whose inference endpoints the gateway
        /// follows: replicas it launches receive traffic once healthy, draining ones none.
        #[arg(long, requires = "token_file")]
        control_plane: Option<String>,
        /// File holding a viewer token of the control plane (with --control-plane).
        #[arg(long, requires = "control_plane")]
        token_file: Option<PathBuf>,
        /// Listen address (overrides the file's `listen`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Fleet whose latency table gives user-to-region RTTs (default: the built-in fleet).
        #[arg(long)]
        fleet: Option<PathBuf>,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Run a fault-injecting OpenAI-compatible mock replica (for tests, demos and benchmarks).
    MockReplica {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: std::net::SocketAddr,
        /// Model name it serves.
        #[arg(long, default_value = "tiny")]
        model: String,
        /// Milliseconds before the first token.
        #[arg(long, default_value_t = 0)]
        ttft_ms: u64,
        /// Milliseconds between tokens.
        #[arg(long, default_value_t = 0)]
        itl_ms: u64,
        /// Tokens per answer.
        #[arg(long, default_value_t = 8)]
        tokens: u32,
        /// Probability of a 500 answer.
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Probability of cutting a stream half-way.
        #[arg(long, default_value_t = 0.0)]
        disconnect_rate: f64,
        /// Seed of the fault draws.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Completions served at once; more wait in a queue its `/metrics` reports (0: no
        /// limit). With `--ttft-ms`, a replica of finite capacity.
        #[arg(long, default_value_t = 0)]
        slots: u32,
    },
    /// Spend as FOCUS 1.2 rows, commitments' burn-down and forecast, commitment-aware planning.
    Ledger {
        #[command(subcommand)]
        cmd: LedgerCmd,
    },
    /// Benchmarks that print ratios against baselines measured in the same run.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
}

#[derive(Subcommand)]
enum FleetCmd {
    /// Show pools as a table, or the complete fleet as JSON/YAML in the schema `--fleet` reads.
    Show {
        /// Fleet file; the built-in fleet when omitted.
        #[arg(long)]
        fleet: Option<PathBuf>,
        /// Only pools of this accelerator.
        #[arg(long)]
        accelerator: Option<String>,
        /// Only this provider.
        #[arg(long)]
        provider: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = FleetFormat::Table)]
        format: FleetFormat,
    },
}

#[derive(Subcommand)]
enum LedgerCmd {
    /// Write the ledger as FOCUS 1.2 CSV.
    Export {
        #[command(flatten)]
        inputs: ledger::Inputs,
        /// Output format (FOCUS 1.2 CSV).
        #[arg(long, value_enum, default_value_t = LedgerFormat::FocusCsv)]
        format: LedgerFormat,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Commitments' burn-down, utilisation, coverage, unused cost and forecast.
    Report {
        #[command(flatten)]
        inputs: ledger::Inputs,
        /// Also write the burn-down plot (SVG) here.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Check a FOCUS CSV file against FOCUS 1.2's column rules.
    Check {
        /// The CSV file.
        file: PathBuf,
    },
    /// Show how commitments steer the planner: reservations attract work, minimums are drawn.
    Steer(ledger::SteerArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LedgerFormat {
    /// FOCUS 1.2 CSV.
    FocusCsv,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    /// Tables.
    Table,
    /// The report as JSON.
    Json,
}

#[derive(Subcommand)]
enum CarbonCmd {
    /// Move batch jobs in time and space within their deadlines; report tCO2e saved and cost.
    Shift(carbon::ShiftArgs),
}

#[derive(Subcommand)]
enum CapacityCmd {
    /// Plan a build-out year by year.
    Plan(capacity::PlanArgs),
}

#[derive(Subcommand)]
enum CatalogCmd {
    /// Import the public catalogs, carbon and latency data into a fleet file.
    Build {
        /// The data directory (`../shared/data`).
        #[arg(long)]
        data: PathBuf,
        /// Output fleet file (JSON).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum SimCmd {
    /// Run a scenario file; writes metrics.json, report.md and SVG plots into --out.
    Run {
        /// Scenario file (YAML).
        scenario: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// The data directory with the traces (default: STRATUS_DATA or ../shared/data).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Print the policies of a finished run side by side (reads DIR/metrics.json).
    Compare {
        /// Output directory of `stratus sim run`, or a metrics.json file.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Generated workload sets on the built-in fleet: stratus vs cheapest-first.
    Plan {
        /// Workload counts to run.
        #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1000, 10000])]
        sizes: Vec<usize>,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Minimum iterations of the Lagrangian dual (more: tighter bound, longer run).
        #[arg(long)]
        dual_iterations: Option<usize>,
        /// Contended sets instead (capacity 0.4–2× demand; up to 300 workloads on 15–60
        /// sampled pools, above on the whole fleet): stratus vs cheapest-first vs the exact
        /// reference. Sizes default to 50,150,300,1000.
        #[arg(long)]
        contended: bool,
        /// With `--contended`: solve each set exactly with HiGHS (up to 300 workloads; the LP
        /// relaxation above) from `STRATUS_HIGHS`, `highs` on PATH or Python's `highsbox`.
        #[arg(long)]
        reference: bool,
        /// With `--contended`: sets per size.
        #[arg(long, default_value_t = 5)]
        sets: u64,
        /// With `--reference`: HiGHS's time limit per set, seconds.
        #[arg(long, default_value_t = 120.0)]
        time_limit: f64,
        /// With `--reference`: the largest set solved as the exact MILP (larger ones get the LP
        /// relaxation only). Above 300 the MILP rarely closes; its best plan and dual bound at
        /// the time limit still say how much of the distance to the LP is the LP's own.
        #[arg(long, default_value_t = 300)]
        exact_up_to: usize,
        /// With `--reference`: print, unit by unit, where stratus's plan and HiGHS's (the
        /// optimum, or its best when the time limit stopped it) differ, largest first.
        #[arg(long)]
        diff: bool,
        /// The planner's work budget (see `stratus plan --budget`).
        #[arg(long)]
        budget: Option<u64>,
        /// With `--contended`: the planner's wall-clock safety net per set, seconds (see
        /// `stratus plan --time-limit`; 0, the default: none). Sets it stopped are marked `!`.
        #[arg(long, default_value_t = 0.0)]
        plan_time_limit: f64,
    },
    /// Gateway overhead: one mock replica reached directly, through stratus and through nginx
    /// (`proxy_buffering off`), by the same load generator at fixed rates, then at full speed.
    Gateway {
        /// Fixed request rates (requests/s) of the open-loop runs.
        #[arg(long, value_delimiter = ',', default_values_t = [1000.0f64, 5000.0])]
        rates: Vec<f64>,
        /// Seconds per run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Connections the load generator uses.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// nginx binary.
        #[arg(long, default_value = "/usr/sbin/nginx")]
        nginx: PathBuf,
        /// Requests with distinct prompt prefixes sent through stratus afterwards, with its
        /// resident memory before and after (0: skip).
        #[arg(long, default_value_t = 200_000)]
        prefixes: u64,
        /// Worker threads of stratus and worker processes of nginx (the same for both).
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Deterministic simulation tests of the control plane: the service's reconcile loop,
    /// its database and the controller against a faulty simulated provider, seed by seed;
    /// prints seeds per second, and the seed and replay command of any failure.
    Dst(dst::Args),
    /// Simulator throughput: events per second on one core, and the wall time of a whole
    /// scenario (every policy, two threads).
    Sim {
        /// Scenario file; the shipped 7-day benchmark scenario when omitted.
        scenario: Option<PathBuf>,
        /// The data directory with the traces.
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OutFormat {
    Table,
    Json,
    /// Kubernetes manifests (JobSet, LeaderWorkerSet, Job) pinned to the planned pools.
    K8s,
}

#[derive(Clone, Copy, ValueEnum)]
enum FleetFormat {
    Table,
    Json,
    Yaml,
}

impl Cmd {
    /// Whether the command serves clients until stopped (or runs servers in-process, as the
    /// gateway benchmark does). A client that hangs up must never end it.
    fn serves(&self) -> bool {
        matches!(
            self,
            Cmd::Serve { .. }
                | Cmd::Gateway { .. }
                | Cmd::MockReplica { .. }
                | Cmd::Demo { serve: true, .. }
                | Cmd::Bench {
                    cmd: BenchCmd::Gateway { .. }
                }
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A command that prints ends quietly when its reader goes away (`stratus … | head`), like
    // other Unix filters, instead of panicking on a broken pipe. Servers keep Rust's default,
    // SIGPIPE ignored: with the default disposition a client that hung up while a response
    // was written (with writev, which cannot ask not to be signalled) killed the process.
    #[cfg(unix)]
    if !cli.cmd.serves() {
        // SAFETY: setting the disposition of SIGPIPE before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let bad_input = e.chain().any(|c| {
                c.downcast_ref::<InputError>().is_some()
                    || c.downcast_ref::<stratus_catalog::CatalogError>().is_some()
            });
            eprint!("stratus: {e}");
            for cause in e.chain().skip(1) {
                eprint!(": {cause}");
            }
            eprintln!();
            if bad_input {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// A bad command-line value: an [`InputError`] naming the flag (so the exit code is 2).
pub(crate) fn bad_flag(flag: &str, reason: impl Into<String>) -> anyhow::Error {
    InputError {
        file: flag.into(),
        line: None,
        field: None,
        reason: reason.into(),
    }
    .into()
}

/// The fleet a command works on: a file, or the built-in one (borrowed, not copied).
fn load_fleet(path: Option<&Path>) -> Result<Cow<'static, Fleet>> {
    match path {
        Some(p) => Ok(Cow::Owned(parse::load_fleet(p).context("reading fleet")?)),
        None => Ok(Cow::Borrowed(stratus_catalog::builtin())),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Demo {
            serve: true,
            listen,
            outage_after,
            outage_for,
            ..
        } => demo_serve::run(listen, outage_after, outage_for)?,
        Cmd::Demo { format, .. } => {
            let fleet = stratus_catalog::builtin();
            let workloads = stratus_catalog::scenario::demo_workloads(fleet)?;
            let started = std::time::Instant::now();
            let plan = stratus_plan::plan(fleet, &workloads, &Policy::default(), None);
            let took = started.elapsed();
            let base = stratus_plan::plan(
                fleet,
                &workloads,
                &Policy::with_algorithm(Algorithm::CheapestFirst),
                None,
            );
            match format {
                OutFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
                OutFormat::K8s => print!(
                    "{}",
                    stratus_control::k8s::to_yaml(&stratus_control::k8s::manifests(
                        fleet, &workloads, &plan
                    ))
                ),
                OutFormat::Table => present::demo(fleet, &workloads, &plan, &base, took),
            }
        }
        Cmd::Plan {
            fleet,
            workloads,
            policy,
            carbon_price,
            previous,
            budget,
            time_limit,
            format,
        } => {
            if !(time_limit.is_finite() && time_limit >= 0.0) {
                return Err(bad_flag(
                    "--time-limit",
                    format!("must be a non-negative number of seconds, got {time_limit}"),
                ));
            }
            let fleet = load_fleet(fleet.as_deref())?;
            let w: WorkloadSet =
                parse::load_workloads(&workloads, &fleet).context("reading workloads")?;
            let algorithm: Algorithm = policy
                .parse()
                .map_err(|e: String| bad_flag("--policy", e))?;
            let mut pol = Policy::with_algorithm(algorithm);
            if let Some(c) = carbon_price {
                if !(c.is_finite() && c >= 0.0) {
                    return Err(bad_flag(
                        "--carbon-price",
                        format!("must be a non-negative number of $/tCO2e, got {c}"),
                    ));
                }
                pol.carbon_price = UsdPerTonne(c);
            }
            if let Some(b) = budget {
                pol.budget = b;
            }
            let prev = match previous {
                Some(path) => {
                    let (p, _): (stratus_plan::Plan, String) =
                        parse::read_file(&path).context("reading the previous plan")?;
                    Some(stratus_plan::PreviousPlan::from(&p))
                }
                None => None,
            };
            let plan = if time_limit > 0.0 {
                let deadline = Deadline(Instant::now() + Duration::from_secs_f64(time_limit));
                stratus_plan::plan_until(&fleet, &w, &pol, prev.as_ref(), &deadline)
            } else {
                stratus_plan::plan(&fleet, &w, &pol, prev.as_ref())
            };
            if plan.stopped_early {
                eprintln!(
                    "warning: --time-limit {time_limit} s reached; this is the best plan found \
                     by then (every rule kept), not the one the budget would give"
                );
            }
            match format {
                OutFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
                OutFormat::K8s => print!(
                    "{}",
                    stratus_control::k8s::to_yaml(&stratus_control::k8s::manifests(
                        &fleet, &w, &plan
                    ))
                ),
                OutFormat::Table => present::plan(&plan),
            }
        }
        Cmd::Fleet {
            cmd:
                FleetCmd::Show {
                    fleet,
                    accelerator,
                    provider,
                    format,
                },
        } => {
            let mut fleet = load_fleet(fleet.as_deref())?.into_owned();
            if let Some(a) = &accelerator {
                let acc: stratus_model::Accelerator = a
                    .parse()
                    .map_err(|e| bad_flag("--accelerator", format!("{e}")))?;
                for p in &mut fleet.providers {
                    for r in &mut p.regions {
                        r.pools.retain(|pl| pl.accelerator == acc);
                    }
                    p.regions.retain(|r| !r.pools.is_empty());
                }
            }
            if let Some(pv) = &provider {
                fleet.providers.retain(|p| &p.name == pv);
            }
            if accelerator.is_some() || provider.is_some() {
                let kept: std::collections::HashSet<String> = fleet
                    .regions()
                    .map(|(p, r)| format!("{}:{}", p.name, r.name))
                    .collect();
                fleet
                    .latency
                    .retain(|l| kept.contains(&l.a) && kept.contains(&l.b));
            }
            match format {
                FleetFormat::Json => println!("{}", serde_json::to_string_pretty(&fleet)?),
                FleetFormat::Yaml => {
                    print!("{}", parse::to_yaml(&fleet)?)
                }
                FleetFormat::Table => present::fleet(&fleet),
            }
        }
        Cmd::Capacity {
            cmd: CapacityCmd::Plan(args),
        } => capacity::plan(&args)?,
        Cmd::Carbon {
            cmd: CarbonCmd::Shift(args),
        } => carbon::run(&args)?,
        Cmd::Ledger { cmd } => match cmd {
            LedgerCmd::Export {
                inputs,
                format: LedgerFormat::FocusCsv,
                out,
            } => ledger::export(&inputs, out.as_deref())?,
            LedgerCmd::Report {
                inputs,
                plot,
                format,
            } => ledger::report(
                &inputs,
                plot.as_deref(),
                matches!(format, ReportFormat::Json),
            )?,
            LedgerCmd::Check { file } => ledger::check(&file)?,
            LedgerCmd::Steer(args) => ledger::steer_cmd(&args)?,
        },
        Cmd::Catalog {
            cmd: CatalogCmd::Build { data, out },
        } => {
            let (fleet, report) = stratus_catalog::build(&data)?;
            for l in &report.lines {
                eprintln!("{l}");
            }
            std::fs::write(&out, stratus_catalog::to_json(&fleet))
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "wrote {} ({} providers, {} regions, {} pools)",
                out.display(),
                fleet.providers.len(),
                fleet.regions().count(),
                fleet.pool_count()
            );
        }
        Cmd::Serve {
            listen,
            db,
            admin_token_file,
            tick,
            boot,
            driver,
            slurm_cluster,
            aws_endpoint,
            aws_image,
            state_dir,
            job,
            replica_command,
            fleet,
            gateway_metrics,
            autoscale,
            autoscale_window,
            target_utilization,
            scale_down_after,
            reports,
            commitments,
        } => {
            let fleet = load_fleet(fleet.as_deref())?.into_owned();
            let _ = (&aws_endpoint, &aws_image);
            let driver = match driver.as_str() {
                #[cfg(feature = "aws")]
                "aws" => {
                    let env = |k: &str| std::env::var(k).unwrap_or_default();
                    stratus_server::DriverChoice::Aws(stratus_control::aws::AwsConfig::new(
                        aws_endpoint,
                        env("AWS_ACCESS_KEY_ID"),
                        env("AWS_SECRET_ACCESS_KEY"),
                        aws_image,
                        fleet
                            .providers
                            .iter()
                            .filter(|p| p.name == "aws")
                            .flat_map(|p| p.regions.iter().map(|r| r.name.clone()))
                            .collect(),
                    ))
                }
                "sim" => stratus_server::DriverChoice::Sim,
                "slurm" => {
                    let mut clusters = std::collections::BTreeMap::new();
                    for c in &slurm_cluster {
                        let Some((p, conf)) = c.split_once('=') else {
                            return Err(bad_flag(
                                "--slurm-cluster",
                                format!("`{c}`: expected PROVIDER=/path/to/slurm.conf"),
                            ));
                        };
                        if !fleet.providers.iter().any(|x| x.name == p) {
                            return Err(bad_flag(
                                "--slurm-cluster",
                                format!("no provider `{p}` in the fleet"),
                            ));
                        }
                        clusters.insert(p.to_string(), PathBuf::from(conf));
                    }
                    if clusters.is_empty() {
                        return Err(bad_flag(
                            "--slurm-cluster",
                            "--driver slurm needs at least one --slurm-cluster",
                        ));
                    }
                    stratus_server::DriverChoice::Slurm {
                        clusters,
                        work: state_dir.clone(),
                        job: job
                            .clone()
                            .unwrap_or_else(|| stratus_control::slurm::DEFAULT_JOB.to_string()),
                    }
                }
                "local" => stratus_server::DriverChoice::Local {
                    dir: state_dir,
                    job: job.unwrap_or_else(|| stratus_control::local::DEFAULT_JOB.to_string()),
                    replica_command,
                },
                other => {
                    return Err(bad_flag(
                        "--driver",
                        format!(
                            "`{other}` is not a driver (sim, local, slurm{})",
                            if cfg!(feature = "aws") {
                                ", aws"
                            } else {
                                "; aws needs a build with --features aws"
                            }
                        ),
                    ))
                }
            };
            let admin_token = match admin_token_file {
                Some(f) => {
                    let (name, text) = stratus_model::parse::read_text(&f)?;
                    let t = text.trim().to_string();
                    stratus_server::auth::check_token_value(&t).map_err(|reason| InputError {
                        file: name,
                        line: None,
                        field: None,
                        reason,
                    })?;
                    Some(t)
                }
                None => match std::env::var("STRATUS_ADMIN_TOKEN") {
                    Ok(t) if !t.trim().is_empty() => {
                        stratus_server::auth::check_token_value(&t)
                            .map_err(|reason| bad_flag("STRATUS_ADMIN_TOKEN", reason))?;
                        Some(t.trim().to_string())
                    }
                    _ => None,
                },
            };
            let config = stratus_server::Config {
                listen,
                db,
                tick_s: tick,
                boot_s: boot,
                admin_token,
                driver,
                gateway_metrics,
                reports,
                commitments: commitments
                    .map(|f| stratus_model::parse::read_text(&f))
                    .transpose()?,
                autoscale: autoscale.then_some(stratus_control::autoscale::AutoscaleConfig {
                    window_s: autoscale_window,
                    target_utilization,
                    scale_down_after_s: scale_down_after,
                }),
            };
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(stratus_server::serve(config, fleet))?;
        }
        Cmd::Gateway {
            config,
            control_plane,
            token_file,
            listen,
            fleet,
            threads,
        } => {
            let fleet = load_fleet(fleet.as_deref())?;
            let cp = control_plane.map(|url| stratus_gateway::config::ControlPlaneConfig {
                url,
                token_file: token_file
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                watch_s: 20,
            });
            if config.is_none() && cp.is_none() {
                return Err(bad_flag(
                    "--config",
                    "give a configuration file, or --control-plane and --token-file",
                ));
            }
            let mut cfg = stratus_gateway::Config::load_with(config.as_deref(), cp)?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            gateway::run(cfg, &fleet, threads)?;
        }
        Cmd::MockReplica {
            listen,
            model,
            ttft_ms,
            itl_ms,
            tokens,
            error_rate,
            disconnect_rate,
            seed,
            slots,
        } => {
            let faults = stratus_testkit::mock::Faults {
                ttft_ms,
                itl_ms,
                tokens,
                error_rate,
                disconnect_rate,
                slots,
                ..Default::default()
            };
            gateway::mock(listen, &model, faults, seed)?;
        }
        Cmd::Bench {
            cmd:
                BenchCmd::Gateway {
                    rates,
                    seconds,
                    connections,
                    nginx,
                    prefixes,
                    workers,
                },
        } => gateway::bench(&gateway::BenchArgs {
            rates,
            seconds,
            connections,
            nginx,
            prefixes,
            workers,
        })?,
        Cmd::Apply { file, server } => client::apply(&server, &file)?,
        Cmd::Get { what, server } => client::get(&server, what)?,
        Cmd::Status { server } => client::status(&server)?,
        Cmd::Tokens { cmd, server } => client::tokens(&server, &cmd)?,
        Cmd::Sim {
            cmd:
                SimCmd::Run {
                    scenario,
                    out,
                    seed,
                    data,
                },
        } => sim::run(&scenario, &out, seed, data.as_deref())?,
        Cmd::Sim {
            cmd: SimCmd::Compare { dir },
        } => sim::compare(&dir)?,
        Cmd::Bench {
            cmd: BenchCmd::Sim { scenario, data },
        } => sim::bench(scenario.as_deref(), data.as_deref())?,
        Cmd::Bench {
            cmd: BenchCmd::Dst(args),
        } => dst::run(&args)?,
        Cmd::Bench {
            cmd:
                BenchCmd::Plan {
                    sizes,
                    seed,
                    dual_iterations,
                    contended,
                    reference,
                    sets,
                    time_limit,
                    exact_up_to,
                    diff,
                    budget,
                    plan_time_limit,
                },
        } => {
            if !(plan_time_limit.is_finite() && plan_time_limit >= 0.0) {
                return Err(bad_flag(
                    "--plan-time-limit",
                    format!("must be a non-negative number of seconds, got {plan_time_limit}"),
                ));
            }
            if contended {
                let default = [100usize, 1000, 10000];
                let sizes = if sizes == default {
                    vec![50, 150, 300, 1000]
                } else {
                    sizes
                };
                bench::contended(&bench::Contended {
                    sizes,
                    sets,
                    seed,
                    reference,
                    time_limit_s: time_limit,
                    exact_up_to,
                    diff,
                    budget,
                    plan_time_limit_s: plan_time_limit,
                })?
            } else {
                bench::plan(&sizes, seed, dual_iterations, budget)?
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Servers keep SIGPIPE ignored; printing commands end on a closed pipe (issue 15, item 8).
    #[test]
    fn only_servers_ignore_a_closed_pipe() {
        let serves = |args: &[&str]| {
            let mut v = vec!["stratus"];
            v.extend_from_slice(args);
            Cli::try_parse_from(v).unwrap().cmd.serves()
        };
        assert!(serves(&["serve"]));
        assert!(serves(&["gateway", "--config", "g.yaml"]));
        assert!(serves(&["mock-replica"]));
        assert!(serves(&["demo", "--serve"]));
        assert!(serves(&["bench", "gateway"]));
        assert!(!serves(&["demo"]));
        assert!(!serves(&["fleet", "show"]));
        assert!(!serves(&["plan", "--workloads", "w.yaml"]));
    }
}
