//! Where the planner's time goes on a generated workload set: compiling the candidates
//! against solving, best of three runs each.
//!
//! `cargo run --release -p stratus-plan --example phases -- 10000 [contended]`

use std::time::{Duration, Instant};
use stratus_catalog::scenario;
use stratus_plan::{problem, Policy};

fn best_of_3<T>(mut f: impl FnMut() -> T) -> (T, Duration) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..3 {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        out = Some(v);
    }
    (out.expect("three runs"), best)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("workload count"))
        .unwrap_or(10_000);
    let contended = std::env::args().nth(2).is_some_and(|a| a == "contended");
    let base = stratus_catalog::builtin();
    let set;
    let (fleet, w) = if contended {
        let c = stratus_catalog::contended::Contention {
            workloads: n,
            pools: None,
            ratio: None,
            services: true,
        };
        set = stratus_catalog::contended::contended(base, &c, 1).expect("contended set");
        (&set.fleet, set.workloads.clone())
    } else {
        (
            base,
            scenario::generated(base, n, 1).expect("generated workloads"),
        )
    };
    let policy = Policy::default();
    let (p, compile) = best_of_3(|| problem::compile(fleet, &w, &policy, None));
    let (s, solve) = best_of_3(|| stratus_plan::solve_problem(&p, &policy));
    let cands: usize = p.units.iter().map(|u| u.cands.len()).sum();
    let services = p.units.iter().filter(|u| u.group.is_some()).count();
    println!(
        "{n} workloads: {} units ({services} of services), {} offers, {cands} candidate pairs",
        p.units.len(),
        p.offers.len()
    );
    println!(
        "compile {:.0} ms, solve {:.0} ms ({}): objective {:.0}, bound {:.0}, gap {:.2} %",
        compile.as_secs_f64() * 1e3,
        solve.as_secs_f64() * 1e3,
        s.method,
        s.objective,
        s.lower_bound,
        (s.objective / s.lower_bound - 1.0) * 100.0
    );
}
