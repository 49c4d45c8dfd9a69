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
    /// Where an inference instance serves requests (`http://host:port`, one per replica
    /// process where the driver runs them apart; the simulated providers give one synthetic
    /// `sim://` address), once the driver knows them. Gateways route to them through the
    /// control plane's endpoint list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
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

impl PoolCapacity {
    /// The nodes a launch of `nodes` nodes bought as `category`, `committed` of them from the
    /// pool's commitment, takes from each bucket: spot from spot; otherwise the committed
    /// nodes (never more than `nodes`) from the commitment and the rest on demand. The one
    /// place this split is written.
    pub fn split(category: Category, nodes: u32, committed: u32) -> PoolCapacity {
        match category {
            Category::Spot => PoolCapacity {
                spot: nodes,
                ..PoolCapacity::default()
            },
            _ => {
                let committed = committed.min(nodes);
                PoolCapacity {
                    committed,
                    on_demand: nodes - committed,
                    spot: 0,
                }
            }
        }
    }

    /// What `req` takes from its pool (see [`PoolCapacity::split`]).
    pub fn of(req: &LaunchRequest) -> PoolCapacity {
        PoolCapacity::split(req.category, req.nodes, req.committed_nodes)
    }

    /// Whether `self` fits in `free`, bucket by bucket.
    pub fn fits_in(&self, free: &PoolCapacity) -> bool {
        self.committed <= free.committed
            && self.on_demand <= free.on_demand
            && self.spot <= free.spot
    }

    /// Bucket-wise sum, saturating.
    pub fn plus(self, o: PoolCapacity) -> PoolCapacity {
        PoolCapacity {
            committed: self.committed.saturating_add(o.committed),
            on_demand: self.on_demand.saturating_add(o.on_demand),
            spot: self.spot.saturating_add(o.spot),
        }
    }

    /// Bucket-wise difference, saturating at zero.
    pub fn minus(self, o: PoolCapacity) -> PoolCapacity {
        PoolCapacity {
            committed: self.committed.saturating_sub(o.committed),
            on_demand: self.on_demand.saturating_sub(o.on_demand),
            spot: self.spot.saturating_sub(o.spot),
        }
    }

    /// Bucket-wise minimum.
    pub fn min(self, o: PoolCapacity) -> PoolCapacity {
        PoolCapacity {
            committed: self.committed.min(o.committed),
            on_demand: self.on_demand.min(o.on_demand),
            spot: self.spot.min(o.spot),
        }
    }

    /// A pool's whole capacity as a fleet file gives it.
    pub fn of_pool(pool: &stratus_model::Pool) -> PoolCapacity {
        let committed = pool.committed.as_ref().map(|c| c.nodes).unwrap_or(0);
        PoolCapacity {
            committed,
            on_demand: pool.nodes.saturating_sub(committed),
            spot: pool.spot_nodes,
        }
    }
}

/// A driver call that did not do what was asked. Every variant says whether the call may
/// still have taken effect ([`DriverError::definitive`]): the controller keeps a launch's
/// token, and retries with it, until the driver definitively refuses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DriverError {
    /// The pool has fewer free nodes than asked for (the provider's InsufficientCapacity).
    /// Nothing was started.
    Capacity {
        /// Pool id.
        pool: String,
        /// Nodes asked for.
        asked: u32,
        /// What is actually free.
        free: PoolCapacity,
    },
    /// The region answered that it takes no launches now (an outage it reports). Nothing was
    /// started; the controller avoids the region until it probes it again.
    Down {
        /// Region id (`provider:region`).
        region: String,
        /// What the provider said.
        reason: String,
    },
    /// The call got no clear answer (a timeout, a connection reset, a 5xx): it may or may
    /// not have taken effect. Launches are retried with the same token, stops until the
    /// instance is seen stopping or gone.
    Unreachable {
        /// Region id (`provider:region`), or a provider or cluster name.
        region: String,
        /// What failed.
        reason: String,
    },
    /// The provider refused the request itself (an invalid instance type, a quota it
    /// enforces on the request). Nothing was started.
    Refused {
        /// Region id (`provider:region`).
        region: String,
        /// What the provider said.
        reason: String,
    },
    /// No such pool at this provider. Nothing was started.
    UnknownPool(String),
    /// No instance with this token (an answer to `stop`).
    UnknownToken(String),
}

impl DriverError {
    /// Whether the driver says for certain that the call changed nothing. Only then may a
    /// launch's token be dropped: after an ambiguous error the instance may exist.
    pub fn definitive(&self) -> bool {
        !matches!(self, DriverError::Unreachable { .. })
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Capacity { pool, asked, free } => write!(
                f,
                "insufficient capacity in {pool}: asked {asked} nodes, free committed {} / on-demand {} / spot {}",
                free.committed, free.on_demand, free.spot
            ),
            DriverError::Down { region, reason } => write!(f, "region {region} is down: {reason}"),
            DriverError::Unreachable { region, reason } => {
                write!(f, "{region} did not answer clearly: {reason}")
            }
            DriverError::Refused { region, reason } => write!(f, "{region} refused: {reason}"),
            DriverError::UnknownPool(p) => write!(f, "unknown pool {p}"),
            DriverError::UnknownToken(t) => write!(f, "unknown instance token {t}"),
        }
    }
}

impl std::error::Error for DriverError {}

/// A part of a driver's world that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unobserved {
    /// What could not be read: a region id (`provider:region`), a provider or cluster name
    /// (every region of it), or the empty string (everything).
    pub scope: String,
    /// Why.
    pub error: DriverError,
}

/// Whether `scope` (see [`Unobserved::scope`]) covers `id`, a region id or a pool id.
pub fn scope_covers(scope: &str, id: &str) -> bool {
    scope.is_empty()
        || id == scope
        || (id.len() > scope.len() && id.starts_with(scope) && id.as_bytes()[scope.len()] == b':')
}

/// What a driver saw: every instance of the parts it could read, and the parts it could
/// not. An instance missing from a part that could not be read is not gone; it is unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Instances not yet forgotten, in token order.
    pub instances: Vec<Instance>,
    /// Parts that could not be read.
    pub unobserved: Vec<Unobserved>,
}

impl Observation {
    /// Everything could be read.
    pub fn complete(instances: Vec<Instance>) -> Observation {
        Observation {
            instances,
            unobserved: Vec::new(),
        }
    }

    /// Whether the region or pool `id` could not be read.
    pub fn unobserved(&self, id: &str) -> bool {
        self.unobserved.iter().any(|u| scope_covers(&u.scope, id))
    }

    /// Whether every part could be read.
    pub fn is_complete(&self) -> bool {
        self.unobserved.is_empty()
    }
}

/// A provider back end. Four verbs, each idempotent: `launch` with a token already seen
/// returns the existing instance's outcome (drivers look the token up before anything else,
/// capacity included); `stop` of a stopped instance is a no-op.
pub trait Driver {
    /// Start `req.nodes` nodes of `req.pool`.
    fn launch(&mut self, now: Time, req: &LaunchRequest) -> Result<(), DriverError>;
    /// Stop the instance launched with `token` (after checkpointing, for jobs).
    fn stop(&mut self, now: Time, token: &str) -> Result<(), DriverError>;
    /// Every instance not yet forgotten, and the parts of the world that could not be read.
    fn observe(&mut self, now: Time) -> Observation;
    /// Free capacity of `pool` now.
    fn capacity(&mut self, now: Time, pool: &str) -> Result<PoolCapacity, DriverError>;
}
