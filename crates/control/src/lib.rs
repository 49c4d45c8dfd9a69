//! The control plane's core: the [`Driver`] trait every provider back end implements, the
//! in-process simulated provider, and the [`Controller`] that reconciles a plan with what the
//! drivers observe. Pure of clocks: time is passed in, so the simulator runs this exact code.
#![warn(missing_docs)]

#[cfg(feature = "aws")]
pub mod aws;
pub mod controller;
pub mod driver;
pub mod k8s;
pub mod local;
pub mod simprovider;
pub mod slurm;

pub use controller::{Action, ActionKind, Controller, ControllerConfig, ControllerStats, Strategy};
pub use driver::{
    Driver, DriverError, Instance, InstanceState, LaunchRequest, LossCause, PoolCapacity, Time,
};
pub use local::LocalDriver;
pub use simprovider::SimProvider;
pub use slurm::SlurmDriver;
