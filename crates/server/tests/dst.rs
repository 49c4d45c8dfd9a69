//! Deterministic simulation tests of the control plane (see `stratus_server::dst`): the
//! service's host loop, its store on SQLite and the real controller against a faulty
//! simulated provider, seed by seed. `STRATUS_DST_SEEDS=N` runs more seeds;
//! `STRATUS_DST_SEED=S` replays one, printing every step.

use stratus_server::dst::{run_seed, run_seeds, Options};

/// Seeds `.ci/run` checks (the test command runs them all).
const CI_SEEDS: u64 = 1000;

fn seeds() -> u64 {
    std::env::var("STRATUS_DST_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_SEEDS)
}

#[test]
fn every_seed_keeps_the_invariants_and_converges() {
    if let Some(seed) = std::env::var("STRATUS_DST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let opts = Options {
            verbose: true,
            ..Options::default()
        };
        if let Err(f) = run_seed(seed, &opts) {
            panic!("{f}");
        }
        return;
    }
    let n = seeds();
    let (stats, failures) = run_seeds(0..n, 2, &Options::default(), &|_, _| {});
    if let Some(f) = failures.first() {
        panic!(
            "{} of {n} seeds failed; the first:\n{f}\n(reproduce with STRATUS_DST_SEED={} cargo test -p stratus-server --test dst)",
            failures.len(),
            f.seed
        );
    }
    // The faults really happened.
    assert!(stats.restarts > n / 10, "{stats:?}");
    assert!(stats.observe_failures > n, "{stats:?}");
    assert!(stats.orphans_stopped > 0, "{stats:?}");
    assert!(stats.losses > n / 10, "{stats:?}");
}

/// Seeds found failing by longer `stratus bench dst` runs, kept so the failure stays fixed.
#[test]
fn seeds_that_failed_in_long_runs_stay_clean() {
    // 58464: a confirmed stop's nodes, still held by the provider while the instance stops
    // (886 s in this world), were planned as free; the launch there failed, and two units
    // swapped one pool at every re-plan without ever settling.
    for seed in [58464] {
        if let Err(f) = run_seed(seed, &Options::default()) {
            panic!("{f}");
        }
    }
}

/// A controller that drops a launch's token after a timeout and retries with a new one (the
/// defect issue 15 found) is caught within the seeds `.ci/run` checks, by the invariant it
/// breaks first: a unit with more live instances than it may have.
#[cfg(feature = "dst-mutation")]
#[test]
fn a_controller_that_retries_with_a_new_token_is_caught() {
    let f = caught(stratus_control::Mutation::NewTokenOnRetry);
    assert!(f.invariant.contains("live instances of a unit"), "{f}");
}

/// A controller that reads a failed observation as "nothing runs there" (the other defect
/// issue 15 found) is caught too.
#[cfg(feature = "dst-mutation")]
#[test]
fn a_controller_that_reads_a_failed_observation_as_empty_is_caught() {
    caught(stratus_control::Mutation::FailedObserveIsEmpty);
}

/// The first seed that catches `m`, within the seeds `.ci/run` checks.
#[cfg(feature = "dst-mutation")]
fn caught(m: stratus_control::Mutation) -> stratus_server::dst::Failure {
    let opts = Options {
        mutation: Some(m),
        ..Options::default()
    };
    for seed in 0..CI_SEEDS {
        if let Err(f) = run_seed(seed, &opts) {
            eprintln!("{m:?} caught at seed {seed}:\n{f}");
            return f;
        }
    }
    panic!("{m:?} went unnoticed in {CI_SEEDS} seeds");
}
