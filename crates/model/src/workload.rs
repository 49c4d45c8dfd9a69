//! Workloads: training jobs, inference services and deferrable batch jobs.
//!
//! A workload file has three optional top-level lists, `training`, `inference` and `batch`.
//! Every struct denies unknown fields, so a misspelt key is an error with its line, never a
//! silently ignored setting.

use crate::accelerator::{Accelerator, Arch};
use crate::units::{ChipHours, Millis, RequestsPerSec, UsdPerHour};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A set of workloads to plan together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSet {
    /// Gang-scheduled training jobs.
    #[serde(default)]
    pub training: Vec<Training>,
    /// Inference services.
    #[serde(default)]
    pub inference: Vec<Inference>,
    /// Deferrable batch jobs.
    #[serde(default)]
    pub batch: Vec<Batch>,
}

/// Where a gang must sit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GangScope {
    /// All chips in one interconnect domain of one pool (the default: synchronous training
    /// across domains loses too much to the network).
    #[default]
    OneDomain,
    /// All chips in one region (one pool), domains may be crossed.
    OneRegion,
}

fn default_priority_training() -> u32 {
    100
}
fn default_priority_inference() -> u32 {
    200
}
fn default_priority_batch() -> u32 {
    10
}
fn default_one() -> u32 {
    1
}
fn default_true() -> bool {
    true
}

/// A training job: one gang of `chips` chips, placed whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// Unique name among all workloads.
    pub name: String,
    /// Higher is more important; decides who is left out when capacity is short.
    #[serde(default = "default_priority_training")]
    pub priority: u32,
    /// Gang size in chips.
    pub chips: u32,
    /// Accelerators the job can run on; each needs an image for its architecture.
    pub accelerators: Vec<Accelerator>,
    /// One container image per architecture.
    pub images: BTreeMap<Arch, String>,
    /// Co-location constraint.
    #[serde(default)]
    pub scope: GangScope,
    /// Remaining work, in H100-equivalent chip-hours.
    pub work_chip_hours: ChipHours,
    /// Checkpoint interval; a migration loses half of it on average.
    #[serde(default = "default_checkpoint")]
    pub checkpoint_minutes: f64,
    /// Must finish within this many hours of the plan's time, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_hours: Option<f64>,
    /// Region (`provider:region`) holding the training data, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_region: Option<String>,
    /// Allowed jurisdictions (any of), e.g. `[EU]`; empty = anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub residency: Vec<String>,
    /// Whether spot capacity may be used.
    #[serde(default)]
    pub spot: bool,
}

fn default_checkpoint() -> f64 {
    60.0
}

/// Throughput and size of one replica on one accelerator model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaSpec {
    /// Chips one replica occupies.
    pub chips: u32,
    /// Requests per second one replica serves within its latency budget.
    pub rps: RequestsPerSec,
}

/// Demand from one user location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demand {
    /// Region id (`provider:region`) the users are nearest to.
    pub from: String,
    /// Peak request rate.
    pub rps: RequestsPerSec,
}

/// An inference service: replicas placed so each user location is served within its SLO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inference {
    /// Unique name among all workloads.
    pub name: String,
    /// Model served (for reports and the gateway).
    pub model: String,
    /// Higher is more important.
    #[serde(default = "default_priority_inference")]
    pub priority: u32,
    /// Replica size and throughput per accelerator model it can run on.
    pub replica: BTreeMap<Accelerator, ReplicaSpec>,
    /// One container image per architecture.
    pub images: BTreeMap<Arch, String>,
    /// Demand per user location.
    pub demand: Vec<Demand>,
    /// Network RTT budget from a user location to the serving region.
    pub latency_slo_ms: Millis,
    /// Replicas must span at least this many providers.
    #[serde(default = "default_one")]
    pub min_providers: u32,
    /// Replicas must span at least this many regions.
    #[serde(default = "default_one")]
    pub min_regions: u32,
    /// Whether spot capacity may be used.
    #[serde(default)]
    pub spot: bool,
    /// Allowed jurisdictions (any of); empty = anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub residency: Vec<String>,
    /// Fewest replicas per user location when the control plane sizes the service from the
    /// traffic it sees (declared demand is sized as declared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    /// Most replicas per user location when sized from traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
}

/// A deferrable batch job (evaluation sweeps, data processing, offline inference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Unique name among all workloads.
    pub name: String,
    /// Higher is more important.
    #[serde(default = "default_priority_batch")]
    pub priority: u32,
    /// Chips, placed together in one pool.
    pub chips: u32,
    /// Accelerators allowed.
    pub accelerators: Vec<Accelerator>,
    /// One container image per architecture.
    pub images: BTreeMap<Arch, String>,
    /// Work in H100-equivalent chip-hours.
    pub work_chip_hours: ChipHours,
    /// Must finish within this many hours, if set; until then it may wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_hours: Option<f64>,
    /// Highest acceptable price per chip-hour; above it the job waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_usd_per_chip_hour: Option<UsdPerHour>,
    /// Whether spot capacity may be used (default yes: batch work is restartable).
    #[serde(default = "default_true")]
    pub spot: bool,
    /// Allowed jurisdictions (any of); empty = anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub residency: Vec<String>,
}

impl WorkloadSet {
    /// Total number of workloads.
    pub fn len(&self) -> usize {
        self.training.len() + self.inference.len() + self.batch.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Append another set.
    pub fn extend(&mut self, other: WorkloadSet) {
        self.training.extend(other.training);
        self.inference.extend(other.inference);
        self.batch.extend(other.batch);
    }
}

/// Whether a region's jurisdictions satisfy a residency rule (any-of; empty rule = anywhere).
pub fn residency_allows(rule: &[String], jurisdictions: &[String]) -> bool {
    rule.is_empty()
        || rule
            .iter()
            .any(|r| jurisdictions.iter().any(|j| j.eq_ignore_ascii_case(r)))
}
