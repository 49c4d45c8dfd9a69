//! `stratus bench plan`: stratus against the cheapest-first baseline on generated workload
//! sets, both measured in the same run, reported as ratios (the machine may be shared).

use crate::present::thousands;
use anyhow::Result;
use std::time::Instant;
use stratus_catalog::scenario;
use stratus_plan::{Algorithm, Policy};

/// Run the planning benchmark for each size.
pub fn plan(sizes: &[usize], seed: u64, dual_iterations: Option<usize>) -> Result<()> {
    let fleet = stratus_catalog::builtin();
    println!(
        "stratus bench plan: built-in fleet ({} pools), seed {seed}; times are wall clock, best of 3",
        fleet.pool_count()
    );
    println!(
        "{:>7} {:>7} {:>6} {:>11} {:>11} {:>12} {:>10} {:>12} {:>12} {:>10} {:>9} {:>9}",
        "works",
        "units",
        "pools",
        "stratus ms",
        "baseline ms",
        "cost ratio",
        "$ ratio",
        "objective",
        "bound",
        "gap",
        "unplaced",
        "base unpl"
    );
    for &n in sizes {
        let w = scenario::generated(fleet, n, seed)?;
        let time = |policy: &Policy| {
            let mut best = f64::INFINITY;
            let mut out = None;
            for _ in 0..3 {
                let t = Instant::now();
                let p = stratus_plan::plan(fleet, &w, policy, None);
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
                out = Some(p);
            }
            (best, out.expect("ran at least once"))
        };
        let mut policy = Policy::default();
        if let Some(n) = dual_iterations {
            policy.dual_iterations = n;
        }
        let (ts, s) = time(&policy);
        let (tb, b) = time(&Policy::with_algorithm(Algorithm::CheapestFirst));
        println!(
            "{:>7} {:>7} {:>6} {:>11.0} {:>11.0} {:>12.4} {:>10.4} {:>12} {:>12} {:>9.3}% {:>9} {:>9}",
            thousands(n as u64),
            thousands(s.summary.units_total as u64),
            fleet.pool_count(),
            ts,
            tb,
            s.objective_per_hour / b.objective_per_hour,
            s.cost_per_hour / b.cost_per_hour,
            thousands(s.objective_per_hour.round() as u64),
            thousands(s.lower_bound_per_hour.max(0.0).round() as u64),
            s.gap * 100.0,
            s.unplaced.len(),
            b.unplaced.len(),
        );
    }
    println!("cost ratio = stratus objective / baseline objective ($/h incl. carbon, latency and the penalty of unplaced work);");
    println!("$ ratio = marginal dollars per hour of placed work; objective and bound in $/h; gap = (objective - bound) / bound.");
    Ok(())
}
