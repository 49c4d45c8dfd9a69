//! `stratus bench plan`: stratus against the cheapest-first baseline on generated workload
//! sets, both measured in the same run, reported as ratios (the machine may be shared).

use crate::present::thousands;
use anyhow::Result;
use std::time::Instant;
use stratus_catalog::scenario;
use stratus_plan::{Algorithm, Policy};

/// Run the planning benchmark for each size.
pub fn plan(
    sizes: &[usize],
    seed: u64,
    dual_iterations: Option<usize>,
    budget: Option<u64>,
) -> Result<()> {
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
        if let Some(b) = budget {
            policy.budget = b;
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

/// Options of `stratus bench plan --contended`.
pub struct Contended {
    /// Workload counts; up to 300, sets take 15–60 sampled pools, above it the whole fleet.
    pub sizes: Vec<usize>,
    /// Sets per size.
    pub sets: u64,
    /// First seed.
    pub seed: u64,
    /// Solve each set with the exact reference (HiGHS) too.
    pub reference: bool,
    /// The reference's time limit per set, seconds.
    pub time_limit_s: f64,
    /// The largest set solved as the exact MILP; larger ones get the LP relaxation only.
    pub exact_up_to: usize,
    /// Print, unit by unit, where stratus's plan and the reference's differ.
    pub diff: bool,
    /// The planner's work budget (the default when `None`).
    pub budget: Option<u64>,
    /// The planner's wall-clock safety net, seconds (0: none).
    pub plan_time_limit_s: f64,
}

/// Contended sets: stratus against cheapest-first and, with `reference`, the exact optimum
/// (or HiGHS's best and its dual bound when the time limit stops it) and the LP relaxation,
/// all in one run. Every stratus plan is checked against every rule by the reference's own
/// checker.
pub fn contended(o: &Contended) -> Result<()> {
    use stratus_catalog::contended::{contended, Contention};
    use stratus_reference::{check, differences, find_highs, solve, Model, SolveOptions, Status};
    let base = stratus_catalog::builtin();
    let highs = if o.reference {
        Some(find_highs().map_err(|e| anyhow::anyhow!("--reference needs HiGHS: {e}"))?)
    } else {
        None
    };
    println!(
        "stratus bench plan --contended: seeds {}..{}, reference {}; times are wall clock",
        o.seed,
        o.seed + o.sets,
        if o.reference {
            "HiGHS (exact MILP from the documented model)"
        } else {
            "off"
        }
    );
    println!(
        "{:>6} {:>5} {:>5} {:>5} | {:>9} {:>8} {:>8} | {:>9} {:>9} {:>9} {:>9} | {:>7} {:>9} | {:>5} | bound by",
        "works", "pools", "cap/d", "seed", "stratus s", "base s", "ref s", "st/opt", "base/opt",
        "bound/opt", "lp/opt", "placed", "opt plcd", "rules"
    );
    let mut worst: Option<(f64, u64, usize)> = None;
    let mut within = (0usize, 0usize);
    let mut stopped: Vec<String> = Vec::new();
    for &n in &o.sizes {
        for k in 0..o.sets {
            let seed = o.seed + k;
            let mut r = scenario::Rng(seed * 7919 + n as u64);
            let pools = (n <= 300).then(|| 15 + r.below(46) as usize);
            let c = Contention {
                workloads: n,
                pools,
                ratio: None,
                services: seed.is_multiple_of(3),
            };
            let set = contended(base, &c, seed)?;
            let mut policy = Policy::default();
            if let Some(b) = o.budget {
                policy.budget = b;
            }
            let t = Instant::now();
            let s = if o.plan_time_limit_s > 0.0 {
                let deadline =
                    crate::Deadline(t + std::time::Duration::from_secs_f64(o.plan_time_limit_s));
                stratus_plan::plan_until(&set.fleet, &set.workloads, &policy, None, &deadline)
            } else {
                stratus_plan::plan(&set.fleet, &set.workloads, &policy, None)
            };
            let ts = t.elapsed().as_secs_f64();
            let stop_mark = if s.stopped_early { "!" } else { " " };
            let t = Instant::now();
            let b = stratus_plan::plan(
                &set.fleet,
                &set.workloads,
                &Policy::with_algorithm(Algorithm::CheapestFirst),
                None,
            );
            let tb = t.elapsed().as_secs_f64();
            let m = Model::new(&set.fleet, &set.workloads, &policy, None);
            let ck = check(&set.fleet, &set.workloads, &policy, None, &m, &s);
            let rules = if ck.violations.is_empty() {
                "ok".to_string()
            } else {
                format!("{} broken", ck.violations.len())
            };
            let mut diff: Option<String> = None;
            let dash = || format!("{:>9}", "-");
            let (mut tr, mut st, mut bo, mut bb, mut lpr, mut oplaced) =
                (dash(), dash(), dash(), dash(), dash(), dash());
            if let Some(h) = &highs {
                let opt = SolveOptions {
                    relax: false,
                    aggregate: n > 300,
                    time_limit_s: o.time_limit_s,
                    highs: h.clone(),
                };
                let lp = solve(
                    &m,
                    &SolveOptions {
                        relax: true,
                        ..opt.clone()
                    },
                )
                .ok();
                // Above 300 workloads the exact MILP rarely closes in time: the LP alone.
                let x = if n <= o.exact_up_to {
                    solve(&m, &opt).ok()
                } else {
                    None
                };
                if let Some(x) = x
                    .as_ref()
                    .filter(|x| o.diff && x.choice.len() == m.items.len())
                {
                    let title = format!(
                        "{} workloads seed {seed}, against HiGHS's {}",
                        thousands(n as u64),
                        if x.status == Status::Optimal {
                            "optimum"
                        } else {
                            "best plan"
                        }
                    );
                    diff = Some(differences(&m, &x.choice, &s, &title));
                }
                if let Some(lp) = &lp {
                    tr = format!("{:>8.1}", lp.seconds);
                }
                match &x {
                    Some(x) if x.status == Status::Optimal => {
                        let ratio = s.objective_per_hour / x.objective;
                        tr = format!("{:>8.1}", x.seconds);
                        st = format!("{ratio:>9.4}");
                        bo = format!("{:>9.4}", b.objective_per_hour / x.objective);
                        bb = format!("{:>9.4}", s.lower_bound_per_hour / x.objective);
                        if let Some(lp) = &lp {
                            lpr = format!("{:>9.4}", lp.objective / x.objective);
                        }
                        let placed = x
                            .choice
                            .iter()
                            .zip(&m.items)
                            .filter(|(c, it)| c.is_some() && !it.excluded)
                            .count();
                        oplaced = format!("{placed:>9}");
                        within.1 += 1;
                        if ratio <= 1.01 {
                            within.0 += 1;
                        }
                        if worst.is_none_or(|w| ratio > w.0) {
                            worst = Some((ratio, seed, n));
                        }
                    }
                    Some(x) => {
                        tr = format!("{:>7.0}*", x.seconds);
                        st = format!("<{:>8.4}", s.objective_per_hour / x.dual_bound);
                        bb = format!("<{:>8.4}", s.lower_bound_per_hour / x.dual_bound);
                        if let Some(lp) = &lp {
                            lpr = format!("<{:>8.4}", lp.objective / x.dual_bound);
                        }
                        stopped.push(format!(
                            "  {} workloads seed {seed}: HiGHS stopped at {:.0} s with a plan of {:.0} $/h \
                             ({:.4}x stratus's) and a dual bound of {:.0} $/h ({:.4}x the LP relaxation)",
                            thousands(n as u64),
                            x.seconds,
                            x.objective,
                            x.objective / s.objective_per_hour,
                            x.dual_bound,
                            lp.as_ref().map_or(f64::NAN, |lp| x.dual_bound / lp.objective),
                        ));
                    }
                    None => {
                        // No optimum: ratios to the LP relaxation instead (marked ~).
                        if let Some(lp) = &lp {
                            st = format!("~{:>8.4}", s.objective_per_hour / lp.objective);
                            bo = format!("~{:>8.4}", b.objective_per_hour / lp.objective);
                            bb = format!("~{:>8.4}", s.lower_bound_per_hour / lp.objective);
                            lpr = format!("{:>9.4}", 1.0);
                        }
                    }
                }
            }
            println!(
                "{:>6} {:>5} {:>5.2} {:>5} | {:>8.3}{stop_mark} {:>8.3} {tr:>8} | {st} {bo} {bb} {lpr} | {:>7} {oplaced} | {:>5} | {}",
                thousands(n as u64),
                set.fleet.pool_count(),
                set.ratio,
                seed,
                ts,
                tb,
                s.placements.len(),
                rules,
                s.lower_bound_by
            );
            if let Some(d) = diff {
                print!("{d}");
            }
        }
    }
    println!("cap/d = capacity / demand; x/opt = objective over the exact optimum's ($/h incl. the penalty of work left out);");
    println!("~ = over the LP relaxation (no optimum computed), < = over HiGHS's dual bound when its time limit stopped it (* s).");
    if o.plan_time_limit_s > 0.0 {
        println!(
            "! = stratus stopped by --plan-time-limit {} s before its budget ran out.",
            o.plan_time_limit_s
        );
    }
    for line in &stopped {
        println!("{line}");
    }
    if let Some((r, seed, n)) = worst {
        println!(
            "stratus within 1 % of the optimum on {} of {} sets solved to optimality; worst {:.4} (seed {seed}, {n} workloads)",
            within.0, within.1, r
        );
    }
    Ok(())
}
