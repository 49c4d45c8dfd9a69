//! The control plane's core: the [`Driver`] trait every provider back end implements, the
//! in-process simulated provider, and the [`Controller`] that reconciles a plan with what the
//! drivers observe. Pure of clocks: time is passed in, so the simulator runs this exact code.
#![warn(missing_docs)]

pub mod autoscale;
#[cfg(feature = "aws")]
pub mod aws;
pub mod controller;
pub mod driver;
pub mod fault;
pub mod k8s;
pub mod local;
pub mod simprovider;
pub mod slurm;
pub mod strategy;
pub mod unit;

#[cfg(feature = "dst-mutation")]
pub use controller::Mutation;
pub use controller::{
    Action, ActionKind, Controller, ControllerConfig, ControllerStats, Desired, Journal,
    MemoryJournal, Owned, Phase,
};
pub use driver::{
    Driver, DriverError, Instance, InstanceState, LaunchRequest, LossCause, Observation,
    PoolCapacity, Time, Unobserved,
};
pub use local::LocalDriver;
pub use simprovider::SimProvider;
pub use slurm::SlurmDriver;
pub use strategy::Strategy;
pub use unit::UnitKey;
