//! `cargo bench -p stratus-plan`: the planner against the cheapest-first baseline on generated
//! workload sets over the built-in fleet, both timed in the same run and reported as ratios
//! (the machine may be shared; absolute times are indicative only). `stratus bench plan`
//! prints the same comparison with cost ratios and gaps.

use std::time::Instant;
use stratus_catalog::{builtin, scenario};
use stratus_plan::{plan, Algorithm, Policy};

fn best_of(n: usize, f: &mut dyn FnMut()) -> f64 {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let fleet = builtin();
    println!(
        "{:>7} {:>11} {:>12} {:>15} {:>8}",
        "works", "stratus ms", "baseline ms", "time ratio s/b", "gap"
    );
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this as a smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &[100, 1000, 10000] } else { &[100] };
    for &n in sizes {
        let w = scenario::generated(fleet, n, 1).expect("generated set validates");
        let mut gap = 0.0;
        let ts = best_of(3, &mut || {
            gap = plan(fleet, &w, &Policy::default(), None).gap
        });
        let base = Policy::with_algorithm(Algorithm::CheapestFirst);
        let tb = best_of(3, &mut || {
            plan(fleet, &w, &base, None);
        });
        println!(
            "{n:>7} {ts:>11.1} {tb:>12.1} {:>15.2} {:>7.3}%",
            ts / tb,
            gap * 100.0
        );
    }
}
