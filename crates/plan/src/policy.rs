//! Planning policies: which algorithm, and the weights of the objective's terms.

use serde::{Deserialize, Serialize};
use stratus_model::UsdPerTonne;

/// Which placement algorithm to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Global placement of all workloads at once (exact MILP when small, otherwise a plan
    /// guided by a transportation relaxation), with a lower bound.
    Stratus,
    /// One workload at a time in arrival order, each to its cheapest feasible option,
    /// falling over to the next cheapest when full (what SkyPilot's optimizer does per task).
    CheapestFirst,
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stratus" => Ok(Algorithm::Stratus),
            "cheapest-first" => Ok(Algorithm::CheapestFirst),
            _ => Err(format!(
                "unknown policy {s:?} (known: stratus, cheapest-first)"
            )),
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Algorithm::Stratus => "stratus",
            Algorithm::CheapestFirst => "cheapest-first",
        })
    }
}

/// Weights and limits of one planning run. All money terms are $/h so they add up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Carbon shadow price. The default, $85/t, is about the 2024–25 EU ETS price.
    pub carbon_price: UsdPerTonne,
    /// Latency term: dollars per hour per (ms of RTT × 1,000 req/s) served; steers inference
    /// towards nearer regions among those within the SLO.
    pub latency_usd_per_ms_krps_hour: f64,
    /// Hours over which a migration's one-off cost (lost progress since the last checkpoint,
    /// plus restart) is spread when compared with hourly savings.
    pub migration_amortization_hours: f64,
    /// Restart overhead of a migrated job, hours.
    pub restart_hours: f64,
    /// Extra effective cost of spot capacity for training (expected work lost to preemption),
    /// as a fraction of its price.
    pub spot_training_overhead: f64,
    /// Extra cost per chip-hour when a training job runs away from its data region (staging,
    /// egress).
    pub remote_data_usd_per_chip_hour: f64,
    /// Average accelerator power as a share of TDP, for energy and carbon: node draw is
    /// chips × TDP × utilisation + host, times PUE.
    pub utilisation: f64,
    /// Accelerator power as a share of TDP counted against regional power caps: chips × TDP
    /// × this + host, times PUE. 1 (the default) provisions for every chip at TDP at once;
    /// operators who cap GPU power (`nvidia-smi -pl`) or rely on training's duty cycle set it
    /// lower and fit more nodes under the same cap.
    pub power_cap_utilisation: f64,
    /// Largest problem (candidate pairs) solved exactly by MILP…
    pub exact_max_candidates: usize,
    /// …and most units: branch and bound time grows fast with contended units, so larger
    /// problems go to the transportation heuristic, which reports its gap to a Lagrangian bound.
    pub exact_max_units: usize,
    /// Subgradient steps refining the Lagrangian dual from the transportation prices (at
    /// least this many; small problems take up to eight times as many, by size).
    pub dual_iterations: usize,
    /// Candidates kept per unit (the cheapest); the rest are summarised so the lower bound
    /// stays valid.
    pub max_candidates_per_unit: usize,
    /// Work the search may spend re-optimising parts of the plan exactly, in simplex
    /// iterations and branch-and-bound nodes (0: none); the chains of moves that make room
    /// for work left out may each examine as many candidates, before and after it. Counted,
    /// never timed, so the same input and budget give the same plan.
    pub budget: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            algorithm: Algorithm::Stratus,
            carbon_price: UsdPerTonne(85.0),
            latency_usd_per_ms_krps_hour: 0.01,
            migration_amortization_hours: 24.0,
            restart_hours: 0.25,
            spot_training_overhead: 0.15,
            remote_data_usd_per_chip_hour: 0.05,
            utilisation: 0.8,
            power_cap_utilisation: 1.0,
            exact_max_candidates: 2000,
            exact_max_units: 12,
            dual_iterations: 20,
            max_candidates_per_unit: 256,
            budget: 200_000,
        }
    }
}

impl Policy {
    /// The default policy with another algorithm.
    pub fn with_algorithm(algorithm: Algorithm) -> Policy {
        Policy {
            algorithm,
            ..Policy::default()
        }
    }
}
