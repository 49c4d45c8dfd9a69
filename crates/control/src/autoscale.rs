//! Traffic-driven sizing: the demand a service's replicas are planned for, estimated from the
//! requests a gateway actually saw instead of the demand its workload file declares.
//!
//! [`Autoscaler::observe`] takes the gateway's cumulative request counters per (model, user
//! location) and keeps a smoothed rate per pair (an exponentially weighted moving average with
//! time constant `window_s`, so it is the same however often it is fed). [`Autoscaler::size`]
//! turns the rates into each service's demand: per declared location, the rate divided by the
//! target utilisation, in whole replicas of the service's slowest replica shape, clamped to
//! `min_replicas`/`max_replicas`. Scaling up takes effect at once; scaling down only after the
//! lower size has held for `scale_down_after_s` (hysteresis and a cool-down, so a dip does not
//! stop replicas that the next burst needs).
//!
//! The declared demand is the prior. A service no traffic has been seen for keeps it; once a
//! gateway reports its model, the average starts from it (read as the capacity wanted: a rate
//! of declared × target utilisation, so the first observation changes no size) and forgets it
//! with the same time constant as it learns the traffic. A burst in the first short interval
//! therefore moves the estimate by its share of the window, not as if it were the steady rate.
//!
//! Pure and deterministic (time is passed in): the service's loop feeds it the gateway's
//! counters, and the simulator can feed it its request traces.

use std::collections::BTreeMap;
use stratus_model::{Demand, RequestsPerSec, WorkloadSet};

use crate::driver::Time;

/// Tunables of traffic-driven sizing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoscaleConfig {
    /// Time constant of the rate's moving average, seconds.
    pub window_s: f64,
    /// Fraction of the replicas' rated throughput the estimated rate may use; the rest is
    /// headroom for bursts and queueing before the latency SLO breaks.
    pub target_utilization: f64,
    /// Seconds a smaller size must hold before replicas are removed.
    pub scale_down_after_s: f64,
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        AutoscaleConfig {
            window_s: 30.0,
            target_utilization: 0.7,
            scale_down_after_s: 120.0,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Series {
    last_count: u64,
    last_t: f64,
    /// Requests per second, smoothed from 0 at the first observation (the prior is added
    /// per service location in [`Autoscaler::size`]: the average is linear in its start).
    rate: f64,
}

#[derive(Debug, Clone, Copy)]
struct Applied {
    /// Replicas of the slowest shape the service is sized for.
    replicas: u32,
    /// Since when a smaller size has been asked for.
    lower_since: Option<f64>,
    /// The estimated rate it was last sized at, requests per second.
    rate: f64,
}

/// The estimator and the sizes it applied, per service and location.
#[derive(Debug, Clone, Default)]
pub struct Autoscaler {
    cfg: AutoscaleConfig,
    /// (model, location) → rate.
    series: BTreeMap<(String, String), Series>,
    /// Model → when a gateway first reported it (the prior's weight decays from then).
    since: BTreeMap<String, f64>,
    /// (service, location) → applied size.
    applied: BTreeMap<(String, String), Applied>,
}

/// One service location's size, for status pages.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sized {
    /// Service.
    pub service: String,
    /// Declared user location.
    pub location: String,
    /// Estimated requests per second from there (the traffic's average, with what is left
    /// of the declared prior).
    pub rate_rps: f64,
    /// Replicas (of the slowest shape) it is sized for.
    pub replicas: u32,
    /// The demand the planner is given, rps.
    pub demand_rps: f64,
}

impl Autoscaler {
    /// An estimator with no traffic seen.
    pub fn new(cfg: AutoscaleConfig) -> Autoscaler {
        Autoscaler {
            cfg,
            ..Autoscaler::default()
        }
    }

    /// Feed cumulative request counts per (model, user location) read at `now`. A counter
    /// that went down (the gateway restarted) starts again from zero.
    pub fn observe(&mut self, now: Time, counts: &BTreeMap<(String, String), u64>) {
        for (key, &count) in counts {
            self.since.entry(key.0.clone()).or_insert(now.0);
            let s = self.series.entry(key.clone()).or_insert(Series {
                last_count: count,
                last_t: now.0,
                rate: 0.0,
            });
            let dt = now.0 - s.last_t;
            if dt <= 0.0 {
                continue;
            }
            let delta = if count >= s.last_count {
                count - s.last_count
            } else {
                count
            };
            let instant = delta as f64 / dt;
            let alpha = 1.0 - (-dt / self.cfg.window_s.max(1e-9)).exp();
            s.rate += alpha * (instant - s.rate);
            s.last_count = count;
            s.last_t = now.0;
        }
    }

    /// The traffic's smoothed rate from (model, location), without the prior; `None` before
    /// a gateway reported the pair.
    pub fn rate(&self, model: &str, location: &str) -> Option<f64> {
        self.series
            .get(&(model.to_string(), location.to_string()))
            .map(|s| s.rate)
    }

    /// `workloads` with each service's demand sized from its traffic, and whether any size
    /// changed since the last call (the caller re-plans then). `nearest(from, declared)` says
    /// which of a service's declared locations traffic from `from` counts towards (traffic
    /// from a location the service does not declare is served from the nearest that it does).
    pub fn size(
        &mut self,
        now: Time,
        workloads: &WorkloadSet,
        nearest: &dyn Fn(&str, &[&str]) -> usize,
    ) -> (WorkloadSet, bool) {
        let mut out = workloads.clone();
        let mut changed = false;
        for s in &mut out.inference {
            let Some(&since) = self.since.get(&s.model) else {
                continue;
            };
            let declared: Vec<&str> = s.demand.iter().map(|d| d.from.as_str()).collect();
            let util = self.cfg.target_utilization.clamp(0.05, 1.0);
            let prior = (-(now.0 - since).max(0.0) / self.cfg.window_s.max(1e-9)).exp();
            let mut rates: Vec<f64> = s.demand.iter().map(|d| d.rps.0 * util * prior).collect();
            for ((model, from), series) in &self.series {
                if *model != s.model || declared.is_empty() {
                    continue;
                }
                let i = declared
                    .iter()
                    .position(|d| d == from)
                    .unwrap_or_else(|| nearest(from, &declared).min(declared.len() - 1));
                rates[i] += series.rate;
            }
            let slowest = s
                .replica
                .values()
                .map(|r| r.rps.0)
                .fold(f64::INFINITY, f64::min);
            let fastest = s.replica.values().map(|r| r.rps.0).fold(0.0, f64::max);
            if !(slowest.is_finite() && slowest > 0.0) {
                continue;
            }
            let mut demand = Vec::with_capacity(declared.len());
            for (d, rate) in s.demand.iter().zip(&rates) {
                let want = rate / util;
                // A rate that converges on a boundary from above must not hold one more
                // replica for ever.
                let mut n = (want / slowest - 1e-6).ceil().max(1.0).min(u32::MAX as f64) as u32;
                n = n.max(s.min_replicas.unwrap_or(1));
                if let Some(hi) = s.max_replicas {
                    n = n.min(hi);
                }
                let key = (s.name.clone(), d.from.clone());
                let a = self.applied.entry(key).or_insert_with(|| {
                    changed = true;
                    Applied {
                        replicas: n,
                        lower_since: None,
                        rate: *rate,
                    }
                });
                a.rate = *rate;
                if n > a.replicas {
                    a.replicas = n;
                    a.lower_since = None;
                    changed = true;
                } else if n < a.replicas {
                    let since = *a.lower_since.get_or_insert(now.0);
                    if now.0 - since >= self.cfg.scale_down_after_s {
                        a.replicas = n;
                        a.lower_since = None;
                        changed = true;
                    }
                } else {
                    a.lower_since = None;
                }
                // Planned at this rate, the slowest shape needs exactly `replicas` replicas and
                // any faster one no more; `min_replicas` holds for the fastest too, unless the
                // two bounds cannot both hold for every shape (then the maximum wins).
                let mut rps = f64::from(a.replicas) * slowest;
                if let Some(lo) = s.min_replicas {
                    let floor = f64::from(lo) * fastest;
                    if s.max_replicas
                        .is_none_or(|hi| floor <= f64::from(hi) * slowest)
                    {
                        rps = rps.max(floor);
                    }
                }
                demand.push(Demand {
                    from: d.from.clone(),
                    rps: RequestsPerSec(rps),
                });
            }
            s.demand = demand;
        }
        (out, changed)
    }

    /// Every service location sized from traffic so far.
    pub fn sized(&self, workloads: &WorkloadSet) -> Vec<Sized> {
        let mut out = Vec::new();
        for s in &workloads.inference {
            let slowest = s
                .replica
                .values()
                .map(|r| r.rps.0)
                .fold(f64::INFINITY, f64::min);
            for d in &s.demand {
                let Some(a) = self.applied.get(&(s.name.clone(), d.from.clone())) else {
                    continue;
                };
                out.push(Sized {
                    service: s.name.clone(),
                    location: d.from.clone(),
                    rate_rps: a.rate,
                    replicas: a.replicas,
                    demand_rps: f64::from(a.replicas) * slowest,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(min: Option<u32>, max: Option<u32>) -> WorkloadSet {
        let mut w: WorkloadSet = serde_json::from_value(serde_json::json!({
            "inference": [{
                "name": "chat", "model": "m",
                "replica": {"L4": {"chips": 1, "rps": 2.0}, "H100": {"chips": 1, "rps": 8.0}},
                "images": {"cuda": "img"},
                "demand": [{"from": "aws:us-east-1", "rps": 100.0}, {"from": "aws:us-west-2", "rps": 4.0}],
                "latency_slo_ms": 100
            }]
        }))
        .unwrap();
        w.inference[0].min_replicas = min;
        w.inference[0].max_replicas = max;
        w
    }

    fn counts(east: u64, west: u64) -> BTreeMap<(String, String), u64> {
        [
            (("m".to_string(), "aws:us-east-1".to_string()), east),
            (("m".to_string(), "aws:us-west-2".to_string()), west),
        ]
        .into_iter()
        .collect()
    }

    fn first(_: &str, _: &[&str]) -> usize {
        0
    }

    fn replicas(w: &WorkloadSet, slowest: f64) -> Vec<u32> {
        w.inference[0]
            .demand
            .iter()
            .map(|d| (d.rps.0 / slowest).ceil() as u32)
            .collect()
    }

    #[test]
    fn declared_demand_is_the_prior_until_traffic_is_seen() {
        let w = service(None, None);
        let mut a = Autoscaler::new(AutoscaleConfig::default());
        let (out, changed) = a.size(Time(0.0), &w, &first);
        assert_eq!(out, w);
        assert!(!changed);
        // One observation gives no rate yet.
        a.observe(Time(0.0), &counts(0, 0));
        assert_eq!(a.size(Time(0.0), &w, &first).0, w);
    }

    #[test]
    fn a_burst_in_the_first_interval_moves_the_estimate_by_its_share_of_the_window() {
        // Declared 4 rps in the west at 2 rps per replica; a 30 s window.
        let w = service(None, None);
        let mut a = Autoscaler::new(AutoscaleConfig {
            window_s: 30.0,
            target_utilization: 0.5,
            scale_down_after_s: 60.0,
        });
        a.observe(Time(0.0), &counts(0, 0));
        // 10 requests within the first 0.2 s from the west: 50 rps for an instant.
        a.observe(Time(0.2), &counts(0, 10));
        let (out, _) = a.size(Time(0.2), &w, &first);
        // Prior 4 rps (a rate of 2 at 50 %) ≈ 1.99 plus 50 rps × (1 − e^(−0.2/30)) ≈ 0.33: 3
        // replicas (declared: 2), not the 50 that 50 rps would size.
        assert_eq!(replicas(&out, 2.0)[1], 3);
        let sized = a.sized(&w);
        let kept = (-0.2f64 / 30.0).exp();
        assert!((sized[1].rate_rps - (2.0 * kept + 50.0 * (1.0 - kept))).abs() < 1e-9);
    }

    #[test]
    fn the_prior_fades_into_the_traffic_with_the_window() {
        // Declared 100 rps in the east; the traffic is 10 rps. After one window the estimate
        // is a third prior, two thirds traffic; after ten, the traffic's.
        let w = service(None, None);
        let mut a = Autoscaler::new(AutoscaleConfig {
            window_s: 10.0,
            target_utilization: 1.0,
            scale_down_after_s: 0.0,
        });
        let mut at = |t: u64| {
            for s in 0..=t {
                a.observe(Time(s as f64), &counts(10 * s, 0));
            }
            a.size(Time(t as f64), &w, &first);
            a.sized(&w)[0].rate_rps
        };
        let e = (-1.0f64).exp();
        assert!((at(10) - (100.0 * e + 10.0 * (1.0 - e))).abs() < 1e-6);
        let mut a2 = Autoscaler::new(AutoscaleConfig {
            window_s: 10.0,
            target_utilization: 1.0,
            scale_down_after_s: 0.0,
        });
        for s in 0..=100u64 {
            a2.observe(Time(s as f64), &counts(10 * s, 0));
        }
        a2.size(Time(100.0), &w, &first);
        assert!((a2.sized(&w)[0].rate_rps - 10.0).abs() < 0.01);
    }

    #[test]
    fn a_steady_rate_sizes_replicas_with_headroom_and_doubling_scales_up_at_once() {
        let w = service(None, None);
        let cfg = AutoscaleConfig {
            window_s: 10.0,
            target_utilization: 0.5,
            scale_down_after_s: 60.0,
        };
        let mut a = Autoscaler::new(cfg);
        // 10 rps from the east, 1 rps from the west, for 20 time constants (the declared
        // prior, 100 rps, is forgotten).
        for t in 0..=200 {
            a.observe(Time(t as f64), &counts(10 * t, t));
        }
        let (out, changed) = a.size(Time(200.0), &w, &first);
        assert!(changed);
        // 10 rps at 50 % of 2 rps per replica: 10 replicas; 1 rps: 1.
        assert_eq!(replicas(&out, 2.0), [10, 1]);
        assert!((a.rate("m", "aws:us-east-1").unwrap() - 10.0).abs() < 1e-6);
        // Doubled: sized up within a few time constants, without waiting for a cool-down.
        let mut n = 2000;
        let mut t = 200;
        let up = loop {
            t += 1;
            n += 20;
            a.observe(Time(t as f64), &counts(n, t));
            let (out, _) = a.size(Time(t as f64), &w, &first);
            if replicas(&out, 2.0)[0] >= 19 {
                break t - 200;
            }
            assert!(t < 400, "never scaled up");
        };
        assert!(up <= 40, "scaled up after {up} s");
    }

    #[test]
    fn scaling_down_waits_for_the_cool_down_and_a_dip_does_not_flap() {
        let w = service(None, None);
        let cfg = AutoscaleConfig {
            window_s: 5.0,
            target_utilization: 1.0,
            scale_down_after_s: 30.0,
        };
        let mut a = Autoscaler::new(cfg);
        let mut n = 0;
        // 20 rps from the start: the declared 100 rps fades in a few windows, and the size
        // comes down to 10 in cool-down steps; from `o` on it holds.
        let o = 150;
        for t in 0..=o {
            n += 20;
            a.observe(Time(t as f64), &counts(n, 0));
            a.size(Time(t as f64), &w, &first);
        }
        assert_eq!(replicas(&a.size(Time(o as f64), &w, &first).0, 2.0)[0], 10);
        // A 10-second dip to 4 rps: nothing is removed.
        for t in o + 1..=o + 10 {
            n += 4;
            a.observe(Time(t as f64), &counts(n, 0));
            let (out, _) = a.size(Time(t as f64), &w, &first);
            assert_eq!(replicas(&out, 2.0)[0], 10, "at {t}");
        }
        for t in o + 11..=o + 20 {
            n += 20;
            a.observe(Time(t as f64), &counts(n, 0));
            a.size(Time(t as f64), &w, &first);
        }
        // Halved for good: removed only once the smaller size held for 30 s.
        let mut down_at = None;
        for t in o + 21..=o + 140 {
            n += 10;
            a.observe(Time(t as f64), &counts(n, 0));
            let (out, _) = a.size(Time(t as f64), &w, &first);
            if replicas(&out, 2.0)[0] < 10 && down_at.is_none() {
                down_at = Some(t);
            }
        }
        let down_at = down_at.expect("scaled down");
        assert!(down_at >= o + 21 + 30, "scaled down at {down_at}");
        assert_eq!(
            replicas(&a.size(Time((o + 140) as f64), &w, &first).0, 2.0)[0],
            5
        );
    }

    #[test]
    fn bounds_hold_for_every_replica_shape() {
        let w = service(Some(2), Some(10));
        let mut a = Autoscaler::new(AutoscaleConfig::default());
        for t in 0..=100 {
            a.observe(Time(t as f64), &counts(1000 * t, 0));
        }
        let (out, _) = a.size(Time(100.0), &w, &first);
        for d in &out.inference[0].demand {
            for spec in [2.0, 8.0] {
                let n = (d.rps.0 / spec).ceil() as u32;
                assert!(
                    (2..=10).contains(&n),
                    "{} rps on a {spec}-rps shape: {n}",
                    d.rps.0
                );
            }
        }
    }

    #[test]
    fn traffic_from_an_undeclared_location_counts_towards_the_nearest_declared_one() {
        let w = service(None, None);
        let mut a = Autoscaler::new(AutoscaleConfig {
            window_s: 1.0,
            target_utilization: 1.0,
            scale_down_after_s: 0.0,
        });
        let key = ("m".to_string(), "gcp:us-west1".to_string());
        for t in 0..=20u64 {
            let c: BTreeMap<_, _> = [(key.clone(), 8 * t)].into_iter().collect();
            a.observe(Time(t as f64), &c);
        }
        let west = |_: &str, d: &[&str]| d.iter().position(|x| *x == "aws:us-west-2").unwrap();
        let (out, _) = a.size(Time(20.0), &w, &west);
        assert_eq!(replicas(&out, 2.0), [1, 4]);
    }

    #[test]
    fn a_gateway_restart_does_not_read_as_negative_traffic() {
        let w = service(None, None);
        let mut a = Autoscaler::new(AutoscaleConfig::default());
        a.observe(Time(0.0), &counts(5000, 0));
        a.observe(Time(1.0), &counts(5010, 0));
        a.observe(Time(2.0), &counts(10, 0));
        assert!(a.rate("m", "aws:us-east-1").unwrap() >= 0.0);
        let (out, _) = a.size(Time(2.0), &w, &first);
        assert!(out.inference[0].demand.iter().all(|d| d.rps.0 > 0.0));
    }
}
