//! Plain data for stratus: the fleet (providers → regions → pools), accelerator profiles,
//! workloads, units, and the parsing and validation of the files that hold them.
//!
//! Architecture invariant: this crate does no I/O except reading the file it is asked to parse,
//! reads no clock, and knows nothing of planning.

#![warn(missing_docs)]

pub mod accelerator;
pub mod fleet;
pub mod name;
pub mod parse;
pub mod units;
pub mod workload;

pub use accelerator::{Accelerator, Arch, Profile};
pub use fleet::{Committed, Fleet, LatencyPair, LatencyTable, Pool, Provider, Region};
pub use parse::{Format, InputError};
pub use units::*;
pub use workload::{Batch, Demand, GangScope, Inference, ReplicaSpec, Training, WorkloadSet};
