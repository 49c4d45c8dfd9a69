//! `stratus bench dst`: the deterministic simulation tests of the control plane
//! (`stratus_server::dst`), for as many seeds as asked, with seeds per second.

use anyhow::Result;
use std::io::IsTerminal;
use std::time::Instant;
use stratus_server::dst::{run_seed, run_seeds, Options};

/// What to run.
#[derive(clap::Args)]
pub struct Args {
    /// Seeds to run, from --start.
    #[arg(long, default_value_t = 1000)]
    pub seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Replay one seed, printing every step (overrides --seeds and --start).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print every step (with --seed).
    #[arg(long)]
    pub verbose: bool,
    /// Threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Reconciles with faults per seed.
    #[arg(long, default_value_t = Options::default().steps)]
    pub steps: usize,
}

/// Run the seeds; an error (exit code 1) names the first that failed.
pub fn run(a: &Args) -> Result<()> {
    let opts = Options {
        steps: a.steps,
        verbose: a.verbose || a.seed.is_some(),
        ..Options::default()
    };
    if let Some(seed) = a.seed {
        let started = Instant::now();
        let st = run_seed(seed, &opts).map_err(|f| anyhow::anyhow!("{f}"))?;
        println!(
            "seed {seed}: clean in {:.2} s ({} reconciles, {} restarts, {} launches, {} losses)",
            started.elapsed().as_secs_f64(),
            st.reconciles,
            st.restarts,
            st.launches,
            st.losses
        );
        return Ok(());
    }
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let bar = crate::sim::progress_bar();
    let done = std::sync::atomic::AtomicU64::new(0);
    let total = a.seeds.max(1);
    let started = Instant::now();
    let (stats, failures) = run_seeds(a.start..a.start + a.seeds, threads, &opts, &|_, _| {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        bar(n as f64 / total as f64);
    });
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds ({}..{}) on {threads} threads in {secs:.1} s: {:.1} seeds/s; {} clean, {} failed",
        a.seeds,
        a.start,
        a.start + a.seeds,
        a.seeds as f64 / secs.max(1e-9),
        a.seeds - failures.len() as u64,
        failures.len()
    );
    println!(
        "  {} reconciles, {} restarts from the database, {} launches, {} losses, {} stray instances stopped, {} failed observations",
        stats.reconciles,
        stats.restarts,
        stats.launches,
        stats.losses,
        stats.orphans_stopped,
        stats.observe_failures
    );
    if let Some(f) = failures.first() {
        for f in failures.iter().skip(1).take(9) {
            eprintln!("also failed: seed {} ({})", f.seed, f.invariant);
        }
        anyhow::bail!("{f}");
    }
    Ok(())
}
