//! The driver trait: the four verbs every provider back end implements, and the types they
//! exchange. Drivers are idempotent on the client token, so a retried or replayed launch never
//! starts a second copy.

use serde::{Deserialize, Serialize};
use std::fmt;
use stratus_plan::Category;

/// Seconds since the start of the run. The controller never reads a clock: the harness passes
/// the time in (a simulated clock in the simulator and tests, the wall clock in production).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct Time(pub f64);

impl Time {
    /// Hours since the start, for reports.
    pub fn hours(self) -> f64 {
        self.0 / 3600.0
    }
    /// This time plus `s` seconds.
    pub fn plus(self, s: f64) -> Time {
        Time(self.0 + s)
    }
}

/// What the controller asks a driver to start: `nodes` of `pool`, bought as `category`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchRequest {
    /// Client token: the idempotency key. The same token never launches twice.
    pub token: String,
    /// Unit key from the plan (`workload`, or `service@location#k`).
    pub unit: String,
    /// Workload name.
    pub workload: String,
    /// Pool id (`provider:region:instance-type`).
    pub pool: String,
    /// Region id (`provider:region`).
    pub region: String,
    /// How the nodes are bought.
    pub category: Category,
    /// Nodes in total.
    pub nodes: u32,
    /// Of which drawn from the pool's commitment.
    pub committed_nodes: u32,
    /// Inference replicas carried by these nodes (1 for jobs).
    pub replicas: u32,
}

/// Why an instance ended without being asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossCause {
    /// Spot capacity reclaimed by the provider.
    Preempted,
    /// The region or provider went dark.
    Outage,
    /// The pool lost capacity and this instance was among the evicted.
    CapacityLoss,
}

/// Lifecycle of one launched instance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Accepted and booting; billed but not yet useful.
    Pending {
        /// When it will be running.
        ready_at: Time,
    },
    /// Up and doing work.
    Running,
    /// Asked to stop; billed until `done_at`.
    Stopping {
        /// When the nodes are released.
        done_at: Time,
    },
    /// Gone without being asked to.
    Lost(LossCause),
}

/// One instance as a driver reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// What was asked for.
    pub request: LaunchRequest,
    /// Where it is in its lifecycle.
    pub state: InstanceState,
    /// When the launch was accepted.
    pub launched_at: Time,
    /// When it last changed state.
    pub since: Time,
}

/// Free capacity of one pool, nodes per bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PoolCapacity {
    /// Committed nodes free.
    pub committed: u32,
    /// On-demand nodes free.
    pub on_demand: u32,
    /// Spot nodes free.
    pub spot: u32,
}

/// A driver call that did not do what was asked; the controller re-plans around it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DriverError {
    /// The pool has fewer free nodes than asked for (the provider's InsufficientCapacity).
    Capacity {
        /// Pool id.
        pool: String,
        /// Nodes asked for.
        asked: u32,
        /// What is actually free.
        free: PoolCapacity,
    },
    /// The region's API does not answer.
    Unreachable {
        /// Region id (`provider:region`): the controller avoids it until probed again.
        region: String,
        /// What failed.
        reason: String,
    },
    /// No such pool at this provider.
    UnknownPool(String),
    /// No instance with this token.
    UnknownToken(String),
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Capacity { pool, asked, free } => write!(
                f,
                "insufficient capacity in {pool}: asked {asked} nodes, free committed {} / on-demand {} / spot {}",
                free.committed, free.on_demand, free.spot
            ),
            DriverError::Unreachable { region, reason } => {
                write!(f, "region {region} unreachable: {reason}")
            }
            DriverError::UnknownPool(p) => write!(f, "unknown pool {p}"),
            DriverError::UnknownToken(t) => write!(f, "unknown instance token {t}"),
        }
    }
}

impl std::error::Error for DriverError {}

/// A provider back end. Four verbs, each idempotent: `launch` with a token already seen
/// returns the existing instance's outcome; `stop` of a stopped instance is a no-op.
pub trait Driver {
    /// Start `req.nodes` nodes of `req.pool`.
    fn launch(&mut self, now: Time, req: &LaunchRequest) -> Result<(), DriverError>;
    /// Stop the instance launched with `token` (after checkpointing, for jobs).
    fn stop(&mut self, now: Time, token: &str) -> Result<(), DriverError>;
    /// Every instance not yet fully stopped, in token order.
    fn observe(&mut self, now: Time) -> Vec<Instance>;
    /// Free capacity of `pool` now.
    fn capacity(&mut self, now: Time, pool: &str) -> Result<PoolCapacity, DriverError>;
}
