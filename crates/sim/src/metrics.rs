//! What a run measures, per policy, in total and per simulated hour. `metrics.json` is exactly
//! [`Metrics`]; it holds no wall-clock figure, so the same seed gives the same bytes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Scenario name.
    pub scenario: String,
    /// Seed used.
    pub seed: u64,
    /// Simulated hours.
    pub horizon_hours: f64,
    /// Notes on inputs (trace files, scaling), for the report.
    pub inputs: Vec<String>,
    /// One entry per policy, in scenario order.
    pub policies: Vec<PolicyMetrics>,
}

/// One policy's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyMetrics {
    /// Policy name.
    pub policy: String,
    /// Totals over the horizon.
    pub totals: Totals,
    /// Per-hour series.
    pub hourly: Hourly,
    /// Conservation of requests and jobs, checked at the end.
    pub conservation: Conservation,
    /// Every instance's billed stretch (seconds from the start), for the ledger; written as
    /// `usage-<policy>.jsonl`, not into `metrics.json`.
    #[serde(skip)]
    pub usage: Vec<stratus_ledger::Usage>,
}

/// Totals over the horizon.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Billed dollars: on-demand and spot use plus the commitments' fees.
    pub cost_usd: f64,
    /// Dollars per provider.
    pub cost_by_provider: BTreeMap<String, f64>,
    /// Dollars per pricing category (`committed` is the fee, paid used or not).
    pub cost_by_category: BTreeMap<String, f64>,
    /// Committed node-hours used / available.
    pub commitment_utilisation: f64,
    /// Requests that arrived.
    pub requests: u64,
    /// Served (started before the horizon).
    pub served: u64,
    /// Served within the latency SLO (RTT + queueing ≤ the service's SLO).
    pub within_slo: u64,
    /// within_slo / requests.
    pub slo_attainment: f64,
    /// Dropped requests by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Latency (RTT + queueing) percentiles of served requests, ms.
    pub latency_ms: Percentiles,
    /// Time to first token (latency + prefill) percentiles, ms.
    pub ttft_ms: Percentiles,
    /// Training and batch progress made, H100-equivalent chip-hours.
    pub goodput_chip_hours: f64,
    /// Progress lost since the last checkpoint, by cause.
    pub lost_chip_hours: BTreeMap<String, f64>,
    /// Job completion time (finish − arrival) of finished jobs, hours.
    pub jct_hours: Percentiles,
    /// Facility energy, MWh.
    pub energy_mwh: f64,
    /// Location-based emissions, tCO2e.
    pub tco2e: f64,
    /// Controller counters.
    pub controller: stratus_control::ControllerStats,
}

/// Mean and tail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Per-hour series (index = hour from the start).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hourly {
    /// Billed dollars in the hour.
    pub cost_usd: Vec<f64>,
    /// Requests arrived.
    pub requests: Vec<u64>,
    /// Served within SLO / arrived (1 when none arrived).
    pub slo_attainment: Vec<f64>,
    /// Requests dropped (any reason).
    pub dropped: Vec<u64>,
    /// Emissions, tCO2e.
    pub tco2e: Vec<f64>,
    /// Energy, MWh.
    pub energy_mwh: Vec<f64>,
    /// Mean chips running per provider / the provider's chips.
    pub utilisation_by_provider: BTreeMap<String, Vec<f64>>,
    /// Committed node-hours used in the hour.
    pub committed_node_hours_used: Vec<f64>,
    /// Committed node-hours available in the hour.
    pub committed_node_hours_available: Vec<f64>,
    /// Training/batch progress, H100-equivalent chip-hours.
    pub goodput_chip_hours: Vec<f64>,
}

/// Every request and job accounted for exactly once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conservation {
    /// Requests arrived.
    pub requests: u64,
    /// Served.
    pub served: u64,
    /// Dropped with a reason.
    pub dropped: u64,
    /// Queued at the horizon (would start after it).
    pub queued: u64,
    /// Jobs arrived.
    pub jobs: u64,
    /// Finished.
    pub finished: u64,
    /// Running at the horizon.
    pub running: u64,
    /// Waiting at the horizon.
    pub queued_jobs: u64,
    /// Failed, by reason.
    pub failed: BTreeMap<String, u64>,
}

impl Conservation {
    /// Whether every request and job is in exactly one bucket.
    pub fn holds(&self) -> bool {
        self.requests == self.served + self.dropped + self.queued
            && self.jobs
                == self.finished
                    + self.running
                    + self.queued_jobs
                    + self.failed.values().sum::<u64>()
    }
}

/// A latency histogram with 1 % relative resolution, deterministic and bounded in memory.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

const BASE: f64 = 1.01;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; 2400],
            count: 0,
            sum: 0.0,
        }
    }
}

impl Histogram {
    /// Record one value (≥ 0).
    #[inline]
    pub fn add(&mut self, v: f64) {
        let b = if v <= 1.0 {
            0
        } else {
            ((v.ln() / BASE.ln()) as usize + 1).min(self.buckets.len() - 1)
        };
        self.buckets[b] += 1;
        self.count += 1;
        self.sum += v;
    }

    /// Mean, median and p99 (bucket upper edges).
    pub fn percentiles(&self) -> Percentiles {
        if self.count == 0 {
            return Percentiles::default();
        }
        let q = |p: f64| {
            let target = (p * self.count as f64).ceil().max(1.0) as u64;
            let mut acc = 0;
            for (i, &c) in self.buckets.iter().enumerate() {
                acc += c;
                if acc >= target {
                    return if i == 0 { 1.0 } else { BASE.powi(i as i32) };
                }
            }
            BASE.powi(self.buckets.len() as i32)
        };
        Percentiles {
            count: self.count,
            mean: self.sum / self.count as f64,
            p50: q(0.5),
            p99: q(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_within_one_percent() {
        let mut h = Histogram::default();
        for i in 1..=1000 {
            h.add(i as f64);
        }
        let p = h.percentiles();
        assert_eq!(p.count, 1000);
        assert!((p.mean - 500.5).abs() < 1e-9);
        assert!((p.p50 - 500.0).abs() / 500.0 < 0.011, "{p:?}");
        assert!((p.p99 - 990.0).abs() / 990.0 < 0.011, "{p:?}");
    }
}
