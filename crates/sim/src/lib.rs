//! The simulator: replays real traces and faults against a fleet under a simulated clock,
//! running the production controller and planner, and compares policies.
//!
//! [`scenario`] loads and checks everything a run needs; [`engine`] runs one policy;
//! [`simulate`] runs every policy of a scenario (on two threads; each run is single-threaded
//! and deterministic, so the output does not depend on scheduling); [`report`] writes
//! `metrics.json`, `report.md` and the plots.
#![warn(missing_docs)]

pub mod engine;
pub mod metrics;
pub mod report;
pub mod scenario;
pub mod svg;
pub mod trace;

use metrics::{Metrics, PolicyMetrics};
use scenario::Loaded;
use std::sync::atomic::{AtomicU64, Ordering};

/// Run every policy of the scenario. `progress` receives the share of all runs done (0–1).
pub fn simulate(ld: &Loaded, progress: &(dyn Fn(f64) + Sync)) -> Metrics {
    let n = ld.strategies.len().max(1);
    // Progress of each run in millionths, summed for the caller.
    let done: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let report = |i: usize, f: f64| {
        done[i].store((f * 1e6) as u64, Ordering::Relaxed);
        let total: u64 = done.iter().map(|d| d.load(Ordering::Relaxed)).sum();
        progress(total as f64 / 1e6 / n as f64);
    };
    let mut results: Vec<Option<PolicyMetrics>> = vec![None; ld.strategies.len()];
    // Two workers take runs in turn; each result lands in its scenario slot.
    let next = AtomicU64::new(0);
    std::thread::scope(|sc| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                sc.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= ld.strategies.len() {
                            break;
                        }
                        let m =
                            engine::run_sized(ld, ld.strategies[i].clone(), ld.sizings[i], &|f| {
                                report(i, f)
                            });
                        out.push((i, m));
                    }
                    out
                })
            })
            .collect();
        for w in workers {
            for (i, m) in w.join().expect("simulation worker") {
                results[i] = Some(m);
            }
        }
    });
    Metrics {
        scenario: ld.scenario.name.clone(),
        seed: ld.scenario.seed,
        horizon_hours: ld.scenario.horizon_hours,
        inputs: inputs(ld),
        policies: results
            .into_iter()
            .map(|m| m.expect("every run finished"))
            .collect(),
    }
}

/// Plain-language notes on what drove the run.
fn inputs(ld: &Loaded) -> Vec<String> {
    let mut v = Vec::new();
    for (i, s) in ld.services.inference.iter().enumerate() {
        let (file, reqs) = &ld.request_traces[ld.service_trace[i]];
        let declared: f64 = s.demand.iter().map(|d| d.rps.0).sum();
        let n = reqs.len() as f64;
        let span = reqs.last().map(|r| r.t_s).unwrap_or(0.0).max(1e-3);
        let shape = match &ld.scenario.traces.inference[ld.service_trace[i]].rate_profile {
            Some(p) => format!(" on average, shaped by the day/night profile of {p}"),
            None => String::new(),
        };
        v.push(format!(
            "service {}: {} ({} requests, {:.2} req/s) time-scaled to {:.2} req/s{shape}, over {} user locations",
            s.name,
            file,
            reqs.len(),
            n / span,
            declared,
            s.demand.len()
        ));
    }
    let traced = ld
        .jobs
        .iter()
        .filter(|j| j.spec.name().starts_with("pod-"))
        .count();
    v.push(format!(
        "{} jobs ({} from job traces; {} trace pods skipped for lacking an end time)",
        ld.jobs.len(),
        traced,
        ld.skipped_pods
    ));
    for c in &ld.scenario.traces.clusters {
        let (nodes, pools) = ld
            .fleet
            .providers
            .iter()
            .filter(|p| p.name == c.provider)
            .flat_map(|p| p.regions.iter().flat_map(|r| &r.pools))
            .fold((0, 0), |(n, k), p| (n + p.nodes, k + 1));
        v.push(format!(
            "cluster {}:{} shaped by {}: {nodes} GPU nodes in {pools} pools, owned ({} nodes of unmapped models left out)",
            c.provider, c.region, c.file, ld.skipped_nodes
        ));
    }
    for (r, s) in &ld.carbon {
        if s.len() > 1 {
            v.push(format!(
                "region {r}: hourly carbon series ({} hours)",
                s.len()
            ));
        }
    }
    v
}
