//! The planner against the exact reference on seeded contended sets (sizes 20–300, 15–60
//! pools, a third with inference services): every plan keeps every rule, its objective is the
//! rules' objective, and `bound ≤ optimum ≤ stratus` wherever HiGHS proves the optimum.
//!
//! Needs the HiGHS binary (`STRATUS_HIGHS`, `highs` on the PATH, or `pip install highsbox`);
//! `.ci/run` installs it. `STRATUS_REFERENCE_SETS` sets how many sets run (default 220);
//! `STRATUS_REFERENCE_SEEDS=72,27` replays those seeds only; `STRATUS_REFERENCE_DIFF=1` prints,
//! unit by unit, where stratus's plan and the optimum differ; `STRATUS_REFERENCE_WORKERS=1`
//! runs one set at a time (two by default), so the planner's times are measured alone.

use std::path::{Path, PathBuf};
use stratus_catalog::contended::{contended, Contention};
use stratus_catalog::scenario::Rng;
use stratus_plan::{plan, Plan, Policy, PreviousPlan};
use stratus_reference::{check, differences, find_highs, solve, Model, SolveOptions, Status};

fn highs() -> Option<PathBuf> {
    match find_highs() {
        Ok(p) => Some(p),
        Err(e) if std::env::var_os("STRATUS_HIGHS").is_some() => panic!("{e}"),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// The set for a seed: its size, pools and mix drawn from the seed too.
fn set_for(seed: u64) -> (Contention, stratus_catalog::contended::ContendedSet) {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9) ^ 0x5EED);
    let c = Contention {
        workloads: 20 + r.below(281) as usize,
        pools: Some(15 + r.below(46) as usize),
        ratio: None,
        services: seed.is_multiple_of(3),
    };
    let set = contended(stratus_catalog::builtin(), &c, seed).expect("a valid set");
    (c, set)
}

/// One set's outcome.
struct Outcome {
    seed: u64,
    optimal: bool,
    ratio: f64,
    /// Wall-clock seconds stratus took (printed, never asserted: the machine is shared).
    planned_s: f64,
    line: String,
}

fn run(seed: u64, highs: &Path) -> Outcome {
    let (c, set) = set_for(seed);
    let policy = Policy::default();
    let started = std::time::Instant::now();
    let p = plan(&set.fleet, &set.workloads, &policy, None);
    let planned_s = started.elapsed().as_secs_f64();
    let m = Model::new(&set.fleet, &set.workloads, &policy, None);
    let ck = check(&set.fleet, &set.workloads, &policy, None, &m, &p);
    let replay = format!(
        "seed {seed} ({} workloads, {} pools, capacity/demand {:.2}{})",
        c.workloads,
        c.pools.unwrap_or(0),
        set.ratio,
        if c.services { ", services" } else { "" }
    );
    assert!(
        ck.violations.is_empty(),
        "{replay}: the plan breaks rules:\n{}",
        ck.violations.join("\n")
    );
    let s = solve(
        &m,
        &SolveOptions {
            relax: false,
            aggregate: true,
            time_limit_s: 60.0,
            highs: highs.to_path_buf(),
        },
    )
    .unwrap_or_else(|e| panic!("{replay}: {e}"));
    let tol = |x: f64| 1e-6 * x.abs().max(1.0);
    let (obj, bound) = (p.objective_per_hour, p.lower_bound_per_hour);
    // Valid with or without a proof: HiGHS's incumbent is at least the optimum, its dual bound
    // at most.
    assert!(
        bound <= s.objective + tol(s.objective),
        "{replay}: bound {bound} above a feasible plan's objective {}",
        s.objective
    );
    assert!(
        s.dual_bound <= obj + tol(obj),
        "{replay}: objective {obj} below the proven bound {}",
        s.dual_bound
    );
    let optimal = s.status == Status::Optimal;
    if std::env::var_os("STRATUS_REFERENCE_DIFF").is_some() && s.choice.len() == m.items.len() {
        eprintln!("{}", differences(&m, &s.choice, &p, &replay));
    }
    if seed.is_multiple_of(4) && s.choice.len() == m.items.len() {
        stays_unless_moving_pays(&set, &m, &s.choice, &p, &replay);
    }
    Outcome {
        seed,
        optimal,
        ratio: obj / s.objective,
        planned_s,
        line: format!(
            "{replay}: stratus/optimum {:.4}, bound/optimum {:.4}, stratus {planned_s:.2} s, HiGHS {:.1} s {:?}",
            obj / s.objective,
            bound / s.objective,
            s.seconds,
            s.status
        ),
    }
}

/// Re-planning with a plan in force (the controller does it every hour) never ends worse than
/// staying put, counting migration charges: neither from HiGHS's plan nor from stratus's own.
/// Each re-plan keeps every rule, with its objective recomputed under the same charges.
fn stays_unless_moving_pays(
    set: &stratus_catalog::contended::ContendedSet,
    m: &Model,
    optimum: &[Option<usize>],
    own: &Plan,
    replay: &str,
) {
    let policy = Policy::default();
    let mut from_optimum = PreviousPlan::default();
    for (item, o) in m.items.iter().zip(optimum) {
        if let Some(o) = o {
            let opt = &item.options[*o];
            from_optimum
                .placements
                .insert(item.key.clone(), (opt.pool.clone(), opt.category));
        }
    }
    let in_force = [
        ("HiGHS's plan", from_optimum, m.objective(optimum)),
        (
            "its own plan",
            PreviousPlan::from(own),
            own.objective_per_hour,
        ),
    ];
    for (what, previous, staying) in in_force {
        let again = plan(&set.fleet, &set.workloads, &policy, Some(&previous));
        let mp = Model::new(&set.fleet, &set.workloads, &policy, Some(&previous));
        let ck = check(
            &set.fleet,
            &set.workloads,
            &policy,
            Some(&previous),
            &mp,
            &again,
        );
        assert!(
            ck.violations.is_empty(),
            "{replay}, re-planned from {what}: the plan breaks rules:\n{}",
            ck.violations.join("\n")
        );
        let moved = again
            .placements
            .iter()
            .filter(|x| previous.placements.get(&x.unit) != Some(&(x.pool.clone(), x.category)))
            .count();
        assert!(
            again.objective_per_hour <= staying + 1e-6 * staying.abs().max(1.0),
            "{replay}: re-planned from {what} ({staying:.2} $/h to stay), it moved {moved} units \
             to a plan of {:.2} $/h",
            again.objective_per_hour
        );
    }
}

#[test]
fn stratus_lies_between_its_bound_and_the_exact_optimum() {
    let Some(highs) = highs() else { return };
    let n: u64 = std::env::var("STRATUS_REFERENCE_SETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(220);
    let seeds: Vec<u64> = match std::env::var("STRATUS_REFERENCE_SEEDS") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("STRATUS_REFERENCE_SEEDS: seeds, comma separated")
            })
            .collect(),
        Err(_) => (0..n).collect(),
    };
    // Two workers (HiGHS runs on one thread each), seeds interleaved; one with
    // `STRATUS_REFERENCE_WORKERS=1`, so that the planner's times are its own on two cores.
    let workers: usize = match std::env::var("STRATUS_REFERENCE_WORKERS") {
        Ok(w) => w
            .parse()
            .ok()
            .filter(|&w| w >= 1)
            .expect("STRATUS_REFERENCE_WORKERS: a count of at least 1"),
        Err(_) => 2,
    };
    let outcomes: Vec<Outcome> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..workers)
            .map(|w| {
                let (highs, seeds) = (&highs, &seeds);
                sc.spawn(move || {
                    seeds
                        .iter()
                        .skip(w)
                        .step_by(workers)
                        .map(|&s| run(s, highs))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    });
    let proven: Vec<&Outcome> = outcomes.iter().filter(|o| o.optimal).collect();
    let worst = proven
        .iter()
        .max_by(|a, b| a.ratio.total_cmp(&b.ratio).then(b.seed.cmp(&a.seed)))
        .expect("some set solved");
    let within = proven.iter().filter(|o| o.ratio <= 1.01).count();
    for o in proven.iter().filter(|o| o.ratio > 1.01) {
        eprintln!("above 1 %: {}", o.line);
    }
    let slow = outcomes.iter().filter(|o| o.planned_s > 1.0).count();
    let slowest = outcomes.iter().map(|o| o.planned_s).fold(0.0f64, f64::max);
    eprintln!(
        "{} sets, {} solved to optimality; stratus within 1 % of the optimum on {within}; worst: {}",
        outcomes.len(),
        proven.len(),
        worst.line
    );
    eprintln!("stratus took over 1 s on {slow} sets; slowest {slowest:.2} s (wall clock)");
    assert!(
        proven.len() * 10 >= outcomes.len() * 9,
        "HiGHS proved too few optima"
    );
}
